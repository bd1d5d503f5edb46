"""Loss modules (each calls the function of the same name in ``nn.functional``)."""
from __future__ import annotations

import numpy as np

from ...tensor import Tensor
from .. import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "MSELoss", "L1Loss"]


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean', 'sum' or "
                             f"'none', got {reduction!r}")
        self.reduction = reduction


def _buffer_or_none(module, name, value):
    if value is None:
        module.register_buffer(name, None)
    else:
        module.register_buffer(name, value if isinstance(value, Tensor)
                               else Tensor(np.asarray(value, dtype=np.float32)))


class CrossEntropyLoss(_Loss):
    """Log-softmax + NLL over logits (N, C) (or (N, C, d1, ...)) and integer targets;
    one fused node without class weights (``functional.cross_entropy``)."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got "
                             f"{label_smoothing}")
        _buffer_or_none(self, "weight", weight)
        self.label_smoothing, self.ignore_index = label_smoothing, ignore_index

    def forward(self, input, target):
        if self.weight is None:
            return F.cross_entropy(input, target, ignore_index=self.ignore_index,
                                   reduction=self.reduction,
                                   label_smoothing=self.label_smoothing)
        return F.weighted_cross_entropy(input, target, self.weight, self.ignore_index,
                                         self.reduction, self.label_smoothing)


class NLLLoss(_Loss):
    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        _buffer_or_none(self, "weight", weight)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class BCELoss(_Loss):
    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        _buffer_or_none(self, "weight", weight)

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        _buffer_or_none(self, "weight", weight)
        _buffer_or_none(self, "pos_weight", pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight,
                                                   reduction=self.reduction,
                                                   pos_weight=self.pos_weight)


class MSELoss(_Loss):
    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)
