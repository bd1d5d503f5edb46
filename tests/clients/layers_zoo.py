"""A small model zoo in everyday style: a 1-D convnet with GroupNorm, self-attention
(MultiheadAttention, batch_first), a GRUCell loop, an upsampling decoder
(ConvTranspose2d, F.interpolate), F.pad and F.normalize; a few Adam steps."""
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class AudioNet(nn.Module):
    def __init__(self, channels=8, classes=3):
        super().__init__()
        self.conv = nn.Conv1d(2, channels, kernel_size=3, padding=1)
        self.norm = nn.GroupNorm(2, channels)
        self.attn = nn.MultiheadAttention(channels, num_heads=2, batch_first=True)
        self.cell = nn.GRUCell(channels, channels)
        self.head = nn.Linear(channels, classes)

    def forward(self, x):                       # x: (batch, 2, time)
        h = F.relu(self.norm(self.conv(x)))     # (batch, channels, time)
        h = h.transpose(1, 2)                   # (batch, time, channels)
        a, weights = self.attn(h, h, h)
        state = torch.zeros(x.size(0), h.size(-1))
        for t in range(a.size(1)):
            state = self.cell(a[:, t], state)
        return self.head(F.normalize(state, dim=-1)), weights


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 2, kernel_size=3, stride=2, padding=1, output_padding=1)

    def forward(self, z):
        y = self.up(z)                                          # (N, 2, 8, 8)
        y = F.interpolate(y, scale_factor=2, mode="nearest")   # (N, 2, 16, 16)
        y = F.pad(y, (1, 1, 2, 0))
        return F.interpolate(y, size=(9, 9), mode="bilinear", align_corners=False)


def deterministic_init(model):
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            p.copy_(torch.sin(torch.arange(p.numel(), dtype=torch.float32) * 0.61 + i).view_as(p)
                    / math.sqrt(fan_in))


def main():
    out = {}
    net, dec = AudioNet(), Decoder()
    deterministic_init(net)
    deterministic_init(dec)
    x = torch.sin(torch.arange(4 * 2 * 6, dtype=torch.float32) * 0.3).view(4, 2, 6)
    y = torch.tensor([0, 2, 1, 2])
    z = torch.cos(torch.arange(2 * 4 * 4 * 4, dtype=torch.float32) * 0.2).view(2, 4, 4, 4)
    target = torch.linspace(-1, 1, 2 * 2 * 9 * 9).view(2, 2, 9, 9)
    opt = torch.optim.Adam(list(net.parameters()) + list(dec.parameters()), lr=1e-2)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        logits, weights = net(x)
        loss = F.cross_entropy(logits, y) + F.mse_loss(dec(z), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out["losses"] = losses
    out["attn_weights_shape"] = list(weights.shape)
    out["attn_rows_sum_to_one"] = int(torch.allclose(weights.sum(-1), torch.ones(4, 6), atol=1e-5))
    out["grad_norms"] = [p.grad.norm().item() for p in net.parameters()]
    out["decoder_shape"] = list(dec(z).shape)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
