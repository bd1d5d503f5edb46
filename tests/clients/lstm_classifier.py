"""An LSTM reading images row by row (the MNIST RNN example), on local arrays."""
import json
import math

import torch
import torch.nn as nn

sequence_length = 6
input_size = 5
hidden_size = 16
num_layers = 2
num_classes = 4
batch_size = 8
learning_rate = 0.01


class RNN(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers, num_classes):
        super(RNN, self).__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        # Set initial hidden and cell states
        h0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(x.device)
        c0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(x.device)
        out, _ = self.lstm(x, (h0, c0))  # out: (batch_size, seq_length, hidden_size)
        out = self.fc(out[:, -1, :])
        return out


def main():
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    n = 32
    images = torch.sin(torch.arange(n * sequence_length * input_size).float() * 0.21)
    images = images.reshape(n, sequence_length, input_size)
    labels = (torch.arange(n) * 3) % num_classes
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels),
                                         batch_size=batch_size, shuffle=False)

    model = RNN(input_size, hidden_size, num_layers, num_classes).to(device)
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            p.copy_(torch.cos(torch.arange(p.numel()).float() * 0.53 + i).view_as(p)
                    / math.sqrt(hidden_size))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)

    losses = []
    total_step = len(loader)
    for epoch in range(3):
        for i, (images_b, labels_b) in enumerate(loader):
            images_b = images_b.reshape(-1, sequence_length, input_size).to(device)
            labels_b = labels_b.to(device)
            outputs = model(images_b)
            loss = criterion(outputs, labels_b)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if (i + 1) % total_step == 0:
                print('Epoch [{}/{}], Step [{}/{}], Loss: {:.4f}'.format(
                    epoch + 1, 3, i + 1, total_step, loss.item()))

    model.eval()
    with torch.no_grad():
        correct = 0
        total = 0
        for images_b, labels_b in loader:
            outputs = model(images_b)
            _, predicted = torch.max(outputs.data, 1)
            total += labels_b.size(0)
            correct += (predicted == labels_b).sum().item()
    print("RESULT " + json.dumps({"losses": losses, "correct": correct, "total": total}))


if __name__ == "__main__":
    main()
