"""Normalisation layers: batch norm and layer norm."""
from __future__ import annotations

import numpy as np

from ...tensor import Tensor, zeros
from .. import functional as F
from .module import Module, Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm"]


class _BatchNorm(Module):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta over all axes but the channel axis.

    Training uses batch statistics (biased variance) and updates the running estimates
    r <- (1 - momentum) r + momentum * batch (unbiased variance), as PyTorch
    (``momentum=None``: cumulative average, factor 1 / num_batches_tracked); eval uses
    the running estimates. ``affine=False``: no weight/bias (None, not in state_dict);
    ``track_running_stats=False``: batch statistics in eval too, no buffers.
    Forward is one fused Function either way (``ops.norm``).
    """

    _ndims = (2, 4)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(zeros(num_features) + 1.0)
            self.bias = Parameter(zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features))
            self.register_buffer("running_var", zeros(num_features) + 1.0)
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, dtype=np.int64)))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def forward(self, x):
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): input of shape "
                             f"{x.shape}, expected {' or '.join(f'{d}-D' for d in self._ndims)} "
                             f"with {self.num_features} channels on axis 1")
        factor = 0.0 if self.momentum is None else self.momentum
        update = self.training and self.track_running_stats
        if update and self.momentum is None:
            factor = 1.0 / (int(self.num_batches_tracked.item()) + 1)
        use_batch = self.training or self.running_mean is None
        keep = not self.training or self.track_running_stats
        y = F.batch_norm(x, self.running_mean if keep else None,
                          self.running_var if keep else None, self.weight, self.bias,
                          use_batch, factor, self.eps)
        if update:
            self.num_batches_tracked.add_(1)
        return y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L)."""
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W)."""
    _ndims = (4,)


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` axes, then gamma * xhat + beta
    (gamma = 1, beta = 0 initially; ``elementwise_affine=False``: neither, ``bias=False``:
    no beta -- as PyTorch)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(
            normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(zeros(*shape) + 1.0)
        else:
            self.register_parameter("weight", None)
        if elementwise_affine and bias:
            self.bias = Parameter(zeros(*shape))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class GroupNorm(Module):
    """Normalise each (sample, group of num_channels / num_groups channels) of (N, C, *),
    then weight[c] * xhat + bias[c] (weight = 1, bias = 0 initially; ``affine=False``:
    neither; ``bias=False``: no bias), as PyTorch."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, *, bias=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = (num_groups, num_channels,
                                                                     eps, affine)
        if affine:
            self.weight = Parameter(zeros(num_channels) + 1.0)
        else:
            self.register_parameter("weight", None)
        if affine and bias:
            self.bias = Parameter(zeros(num_channels))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")
