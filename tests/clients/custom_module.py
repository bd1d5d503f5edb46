"""A custom nn.Module with ModuleList, ParameterList, a buffer and nested Sequential;
parameter naming, state_dict keys, apply(), train/eval and requires_grad_ freezing."""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(x + F.gelu(self.lin(x)))


class Model(nn.Module):
    def __init__(self, dim=6, depth=3):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim) for _ in range(depth)])
        self.scales = nn.ParameterList([nn.Parameter(torch.ones(dim) * (i + 1)) for i in range(depth)])
        self.register_buffer("offset", torch.linspace(0, 1, dim))
        self.head = nn.Sequential(nn.Linear(dim, 4), nn.ReLU(), nn.Linear(4, 1))

    def forward(self, x):
        for block, scale in zip(self.blocks, self.scales):
            x = block(x) * scale
        return self.head(x + self.offset).squeeze(-1)


def init_weights(m):
    if isinstance(m, nn.Linear):
        with torch.no_grad():
            m.weight.copy_(torch.sin(torch.arange(m.weight.numel()).float()).view_as(m.weight) * 0.3)
            nn.init.zeros_(m.bias)


def main():
    out = {}
    model = Model()
    model.apply(init_weights)
    out["names"] = [n for n, _ in model.named_parameters()]
    out["state_keys"] = list(model.state_dict().keys())
    out["n_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out["n_modules"] = len(list(model.modules()))
    out["n_buffers"] = len(list(model.buffers()))
    x = torch.cos(torch.arange(30).float()).view(5, 6)
    y = torch.linspace(-1, 1, 5)
    for p in model.blocks[0].parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.5)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out["losses"] = losses
    out["frozen_has_no_grad"] = int(model.blocks[0].lin.weight.grad is None)
    model.eval()
    out["training_flags"] = [int(model.training), int(model.blocks[1].training)]
    with torch.no_grad():
        out["eval_out"] = model(x).tolist()
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
