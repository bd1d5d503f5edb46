"""Dropout layers."""
from __future__ import annotations

from .. import functional as F
from .module import Module

__all__ = ["Dropout", "Dropout1d", "Dropout2d"]


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Dropout1d(Dropout):
    """Zero whole channels of (N, C, L) or (C, L) with probability p in training, scale
    the rest by 1 / (1 - p)."""

    def forward(self, x):
        return F.dropout1d(x, self.p, self.training)


class Dropout2d(Dropout):
    """Zero whole channels of (N, C, H, W) or (C, H, W) with probability p in training,
    scale the rest by 1 / (1 - p)."""

    def forward(self, x):
        return F.dropout2d(x, self.p, self.training)
