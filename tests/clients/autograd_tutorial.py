"""The autograd tutorials: a custom autograd.Function (LegendrePolynomial3) fitted to
sin(x) with manual updates, gradients of a vector output, torch.autograd.grad."""
import json
import math

import torch


class LegendrePolynomial3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return 0.5 * (5 * input ** 3 - 3 * input)

    @staticmethod
    def backward(ctx, grad_output):
        input, = ctx.saved_tensors
        return grad_output * 1.5 * (5 * input ** 2 - 1)


def legendre_fit():
    dtype = torch.float
    device = torch.device("cpu")
    x = torch.linspace(-math.pi, math.pi, 2000, device=device, dtype=dtype)
    y = torch.sin(x)
    a = torch.full((), 0.0, device=device, dtype=dtype, requires_grad=True)
    b = torch.full((), -1.0, device=device, dtype=dtype, requires_grad=True)
    c = torch.full((), 0.0, device=device, dtype=dtype, requires_grad=True)
    d = torch.full((), 0.3, device=device, dtype=dtype, requires_grad=True)
    learning_rate = 5e-6
    losses = []
    for t in range(300):
        P3 = LegendrePolynomial3.apply
        y_pred = a + b * P3(c + d * x)
        loss = (y_pred - y).pow(2).sum()
        if t % 100 == 99:
            print(t, loss.item())
            losses.append(loss.item())
        loss.backward()
        with torch.no_grad():
            a -= learning_rate * a.grad
            b -= learning_rate * b.grad
            c -= learning_rate * c.grad
            d -= learning_rate * d.grad
            a.grad = None
            b.grad = None
            c.grad = None
            d.grad = None
    print(f'Result: y = {a.item()} + {b.item()} * P3({c.item()} + {d.item()} x)')
    return losses, [a.item(), b.item(), c.item(), d.item()]


def blitz_autograd():
    a = torch.tensor([2., 3.], requires_grad=True)
    b = torch.tensor([6., 4.], requires_grad=True)
    Q = 3 * a ** 3 - b ** 2
    external_grad = torch.tensor([1., 1.])
    Q.backward(gradient=external_grad)
    checks = [bool((9 * a ** 2 == a.grad).all()), bool((-2 * b == b.grad).all())]

    x = torch.ones(5)  # input tensor
    y = torch.zeros(3)  # expected output
    w = torch.linspace(-1, 1, 15).reshape(5, 3).requires_grad_()
    bb = torch.linspace(0, 0.5, 3).requires_grad_()
    z = torch.matmul(x, w) + bb
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    loss.backward()
    with torch.no_grad():
        z2 = torch.matmul(x, w) + bb
    z_det = z.detach()
    checks += [z.requires_grad, not z2.requires_grad, not z_det.requires_grad,
               z.grad_fn is not None, loss.grad_fn is not None]
    return checks, loss.item(), w.grad.sum().item(), bb.grad.tolist()


def functional_grad():
    x = torch.linspace(-1, 1, 7, requires_grad=True)
    y = (x.sin() * x).sum()
    (gx,) = torch.autograd.grad(y, x, create_graph=False)
    return gx.tolist()


def main():
    losses, coeffs = legendre_fit()
    checks, loss, wsum, bgrad = blitz_autograd()
    print("RESULT " + json.dumps({"legendre_losses": losses, "coeffs": coeffs,
                                  "checks": [int(c) for c in checks], "bce": loss,
                                  "w_grad_sum": wsum, "b_grad": bgrad,
                                  "autograd_grad": functional_grad()}))


if __name__ == "__main__":
    main()
