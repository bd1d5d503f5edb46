"""PyTorch twins of ``tinygrad_k.models`` (same layers, same shapes) for the baselines.

Only used by the benchmarks and parity checks; imports torch lazily.
"""
from __future__ import annotations


def build_torch(name, in_shape=(1, 28, 28), num_classes=10):
    import torch.nn as tnn

    c, side = in_shape[0], in_shape[-1]
    if name in ("lenet", "lenet5"):
        pad = 2 if name == "lenet5" else 0
        return tnn.Sequential(
            tnn.Conv2d(c, 6, 5, padding=pad), tnn.ReLU(), tnn.MaxPool2d(2, 2),
            tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2, 2), tnn.Flatten(),
            tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
            tnn.Linear(84, num_classes))
    if name == "mlp":
        n = c * side * in_shape[1]
        return tnn.Sequential(tnn.Flatten(), tnn.Linear(n, 256), tnn.ReLU(), tnn.Linear(256, 128),
                              tnn.ReLU(), tnn.Linear(128, num_classes))
    if name == "resnet18":
        return _resnet18(c, num_classes)
    raise ValueError(f"no torch twin for model {name!r}")


def _resnet18(in_channels, num_classes, width=64):
    import torch.nn as tnn

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.shortcut = tnn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                               tnn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.bn1(self.conv1(x)).relu()
            out = self.bn2(self.conv2(out))
            return (out + self.shortcut(x)).relu()

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(width)
            layers, cin = [], width
            for mult, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
                layers.append(tnn.Sequential(Block(cin, width * mult, stride),
                                             Block(width * mult, width * mult, 1)))
                cin = width * mult
            self.layers = tnn.Sequential(*layers)
            self.pool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(cin, num_classes)

        def forward(self, x):
            out = self.layers(self.bn1(self.conv1(x)).relu())
            return self.fc(self.pool(out).flatten(1))

    return Net()
