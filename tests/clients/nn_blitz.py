"""The "Neural Networks" blitz tutorial: LeNet, parameters, grad_fn, manual and optim SGD."""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim


class Net(nn.Module):

    def __init__(self):
        super(Net, self).__init__()
        # 1 input image channel, 6 output channels, 5x5 square convolution kernel
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        # an affine operation: y = Wx + b
        self.fc1 = nn.Linear(16 * 5 * 5, 120)  # 5*5 from image dimension
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, input):
        c1 = F.relu(self.conv1(input))
        s2 = F.max_pool2d(c1, (2, 2))
        c3 = F.relu(self.conv2(s2))
        s4 = F.max_pool2d(c3, 2)
        s4 = torch.flatten(s4, 1)
        f5 = F.relu(self.fc1(s4))
        f6 = F.relu(self.fc2(f5))
        output = self.fc3(f6)
        return output


def main():
    out = {}
    net = Net()
    print(net)
    params = list(net.parameters())
    out["n_params"] = len(params)
    out["conv1_weight_size"] = list(params[0].size())
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(torch.sin(torch.arange(p.numel(), dtype=torch.float32) * (0.1 + i)).view(p.shape) * 0.2)

    input = torch.cos(torch.arange(32 * 32, dtype=torch.float32) * 0.3).view(1, 1, 32, 32)
    out_ = net(input)
    out["out"] = out_.tolist()
    net.zero_grad()
    out_.backward(torch.linspace(-1, 1, 10).view(1, 10))
    out["fc3_bias_grad"] = net.fc3.bias.grad.tolist()

    output = net(input)
    target = torch.arange(10, dtype=torch.float32) / 10  # a dummy target, for example
    target = target.view(1, -1)  # make it the same shape as output
    criterion = nn.MSELoss()
    loss = criterion(output, target)
    out["loss"] = loss.item()
    fn = loss.grad_fn
    out["grad_fn_chain"] = [fn is not None, fn.next_functions[0][0] is not None]

    net.zero_grad()  # zeroes the gradient buffers of all parameters
    out["conv1_bias_grad_before"] = net.conv1.bias.grad is None or bool((net.conv1.bias.grad == 0).all())
    loss.backward()
    out["conv1_bias_grad_after"] = net.conv1.bias.grad.tolist()

    learning_rate = 0.01
    for f in net.parameters():
        f.data.sub_(f.grad.data * learning_rate)
    out["loss_after_manual_step"] = criterion(net(input), target).item()

    optimizer = optim.SGD(net.parameters(), lr=0.01)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()  # zero the gradient buffers
        output = net(input)
        loss = criterion(output, target)
        loss.backward()
        optimizer.step()  # Does the update
        losses.append(loss.item())
    out["optim_losses"] = losses
    out["grad_fn_chain"] = [int(b) for b in out["grad_fn_chain"]]
    out["conv1_bias_grad_before"] = int(out["conv1_bias_grad_before"])
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
