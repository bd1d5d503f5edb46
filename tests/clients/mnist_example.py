"""The classic MNIST convnet example (Adadelta + StepLR), scaled to 12x12 local images."""
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(1024, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def train(model, device, train_loader, optimizer, epoch):
    model.train()
    losses = []
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()
    test_loss /= len(test_loader.dataset)
    return test_loss, correct


def main():
    use_cuda = torch.cuda.is_available()
    torch.manual_seed(1)
    device = torch.device("cuda" if use_cuda else "cpu")
    train_kwargs = {'batch_size': 8}
    test_kwargs = {'batch_size': 16}

    n = 32
    x = torch.cos(torch.arange(n * 144, dtype=torch.float32) * 0.05).reshape(n, 1, 12, 12)
    y = (torch.arange(n) * 7) % 10
    x = (x - 0.1307) / 0.3081
    dataset1 = torch.utils.data.TensorDataset(x[:24], y[:24])
    dataset2 = torch.utils.data.TensorDataset(x[24:], y[24:])
    train_loader = torch.utils.data.DataLoader(dataset1, **train_kwargs)
    test_loader = torch.utils.data.DataLoader(dataset2, **test_kwargs)

    model = Net().to(device)
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            p.copy_(torch.sin(torch.arange(p.numel()) * 0.37 + i).view(p.shape) / math.sqrt(fan_in))
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)

    initial_test = test(model, device, test_loader)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    lrs, train_losses, tests = [], [], []
    for epoch in range(1, 4):
        lrs.append(optimizer.param_groups[0]['lr'])
        train_losses += train(model, device, train_loader, optimizer, epoch)
        tests.append(test(model, device, test_loader))
        scheduler.step()
    lrs.append(scheduler.get_last_lr()[0])
    print("RESULT " + json.dumps({
        "initial_test_loss": initial_test[0], "initial_correct": initial_test[1], "lrs": lrs,
        # dropout draws differ between frameworks: these are checked, not compared
        "_train_losses": train_losses, "_test_losses": [t[0] for t in tests]}))


if __name__ == '__main__':
    main()
