"""Save and load a dict checkpoint (epoch, model and optimizer state, loss), resume
training and get the same numbers as an uninterrupted run."""
import json
import os
import tempfile

import torch
import torch.nn as nn
import torch.optim as optim


def make_model():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.cos(torch.arange(p.numel()).float() * (0.4 + i)).view(p.shape) * 0.5)
    return model


def batches():
    x = torch.sin(torch.arange(64).float() * 0.3).view(16, 4)
    y = torch.arange(16) % 2
    return x, y


def train(model, optimizer, steps):
    x, y = batches()
    criterion = nn.CrossEntropyLoss()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
    return loss


def main():
    out = {}
    model = make_model()
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    loss = train(model, optimizer, 5)
    with tempfile.TemporaryDirectory() as d:
        PATH = os.path.join(d, "model.pt")
        torch.save({
            'epoch': 5,
            'model_state_dict': model.state_dict(),
            'optimizer_state_dict': optimizer.state_dict(),
            'loss': loss.item(),
            'history': [1.0, 2.0],
            'name': 'mlp',
        }, PATH)
        torch.save(model.state_dict(), os.path.join(d, "weights.pt"))

        model2 = make_model()
        optimizer2 = optim.Adam(model2.parameters(), lr=0.05)
        checkpoint = torch.load(PATH)
        model2.load_state_dict(checkpoint['model_state_dict'])
        optimizer2.load_state_dict(checkpoint['optimizer_state_dict'])
        epoch = checkpoint['epoch']
        saved_loss = checkpoint['loss']
        model2.train()
        out["restored"] = [epoch, saved_loss, checkpoint['history'], checkpoint['name']]

        model3 = make_model()
        model3.load_state_dict(torch.load(os.path.join(d, "weights.pt")))
        model3.eval()
        x, _ = batches()
        out["weights_only_equal"] = int(torch.equal(model3(x), model(x)))

    continued = train(model, optimizer, 5).item()
    resumed = train(model2, optimizer2, 5).item()
    out["continued"] = continued
    out["resumed"] = resumed
    out["same"] = int(continued == resumed)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
