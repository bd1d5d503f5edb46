"""The CIFAR-10 tutorial's convnet and training loop, on small local arrays."""
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim

classes = ('plane', 'car', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)  # flatten all dimensions except batch
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


def deterministic_init(model):
    # the same weights under every framework: the numbers below can then be compared
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            values = torch.sin(torch.arange(p.numel(), dtype=torch.float32) * 0.731 + i)
            p.copy_(values.reshape(p.shape) / math.sqrt(fan_in))


def main():
    n = 16
    images = torch.sin(torch.arange(n * 3 * 32 * 32, dtype=torch.float32) * 0.013).reshape(n, 3, 32, 32)
    images = (images + 0.1 * torch.cos(torch.arange(n, dtype=torch.float32)).view(n, 1, 1, 1))
    labels = torch.arange(n) % 10
    trainset = torch.utils.data.TensorDataset(images, labels)
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=4, shuffle=False)

    net = Net()
    deterministic_init(net)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    losses = []
    for epoch in range(2):  # loop over the dataset multiple times
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            inputs, labels_b = data
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels_b)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        losses.append(running_loss / len(trainloader))

    correct = 0
    total = 0
    names = []
    with torch.no_grad():
        for data in trainloader:
            images_b, labels_b = data
            outputs = net(images_b)
            _, predicted = torch.max(outputs.data, 1)
            total += labels_b.size(0)
            correct += (predicted == labels_b).sum().item()
            names.append(classes[labels_b[0]])
    print('GroundTruth: ', ' '.join(f'{n:5s}' for n in names))
    print(f'Accuracy of the network on the {total} train images: {100 * correct // total} %')
    print("RESULT " + json.dumps({"losses": losses, "correct": correct, "total": total,
                                  "names": names}))


if __name__ == "__main__":
    main()
