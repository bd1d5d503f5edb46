"""``Embedding``: a lookup table of learnable rows."""
from __future__ import annotations

from .. import functional as F
from .. import init
from .module import Module, _param

__all__ = ["Embedding"]


class Embedding(Module):
    """y = W[idx]; W (num_embeddings, dim) ~ N(0, 1) (PyTorch's init), the row
    ``padding_idx`` (if given) zero and never updated. dW is a scatter-add of dy."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__()
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} out of range for "
                                 f"{num_embeddings} embeddings")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        self.weight = _param(num_embeddings, embedding_dim)
        self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight._array[self.padding_idx] = 0
            self.weight._bump_version()

    def forward(self, idx):
        return F.embedding(idx, self.weight, self.padding_idx)

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"
