"""Hand-written training loops that update parameters in place: p.data -= lr * p.grad,
with torch.no_grad(): p -= lr * p.grad, p.data.add_(...), grad.zero_(), and the errors
torch raises for in-place misuse."""
import json

import torch


def data():
    x = torch.linspace(-1, 1, 20).view(20, 1)
    X = torch.cat([x, x ** 2, torch.sin(3 * x)], dim=1)
    y = X @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.3
    return X, y


def loop_data_sub():
    X, y = data()
    w = torch.zeros(3, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    lr = 0.1
    for _ in range(50):
        loss = ((X @ w + b - y) ** 2).mean()
        loss.backward()
        w.data -= lr * w.grad
        b.data -= lr * b.grad
        w.grad.zero_()
        b.grad.data.zero_()
    return loss.item(), w.view(-1).tolist(), b.item()


def loop_no_grad():
    X, y = data()
    w = torch.zeros(3, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    lr = 0.1
    for _ in range(50):
        loss = ((X @ w + b - y) ** 2).mean()
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
            w.grad.zero_()
            b.grad = None
    return loss.item(), w.view(-1).tolist(), b.item(), int(w.is_leaf and w.requires_grad)


def loop_add_():
    X, y = data()
    model = torch.nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.fill_(0.0)
    lr = 0.1
    for _ in range(50):
        loss = torch.nn.functional.mse_loss(model(X), y)
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
    return loss.item(), model.weight.view(-1).tolist(), model.bias.item()


def errors():
    flags = []
    w = torch.ones(3, requires_grad=True)
    try:
        w += 1  # in-place on a leaf that requires grad
        flags.append(0)
    except RuntimeError:
        flags.append(1)
    a = torch.ones(3, requires_grad=True)
    h = a * 2
    z = h.sigmoid()  # saves its output for backward
    z.mul_(3)  # ... which this changes
    try:
        z.sum().backward()
        flags.append(0)
    except RuntimeError as e:
        flags.append(int("modified by an inplace operation" in str(e)))
    x = torch.ones(2, 2)
    y = x.view(4)
    y[0] = 5.0
    flags.append(int(x[0, 0].item() == 5.0))  # views share storage
    d = x.detach()
    d.mul_(2)
    flags.append(int(x[1, 1].item() == 2.0))  # so does detach()
    return flags


def main():
    r1, r2, r3 = loop_data_sub(), loop_no_grad(), loop_add_()
    print("RESULT " + json.dumps({"data_sub": r1, "no_grad": r2, "add_": r3,
                                  "errors": errors()}))


if __name__ == "__main__":
    main()
