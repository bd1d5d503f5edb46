"""Pooling layers (PyTorch's names, arguments and attributes). Arguments are validated
once, in ``__init__``, by ``kernels._common.pool_geometry``; ``forward`` hands that
record to the op and the kernels."""
from __future__ import annotations

from kernels._common import int_tuple, pool_geometry

from .. import functional as F
from .module import Module

__all__ = ["MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool2d"]


class _MaxPoolNd(Module):
    _ndim = 2

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.geometry = pool_geometry(kernel_size, stride, padding, dilation, ceil_mode,
                                      ndim=self._ndim, op=type(self).__name__)
        # PyTorch keeps the arguments as given (an int stays an int)
        self.kernel_size, self.padding, self.dilation = kernel_size, padding, dilation
        self.stride = kernel_size if stride is None else stride
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, input):
        return F.max_pool(input, self.geometry, self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """Max over windows of (N, C, L); stride defaults to kernel_size (as PyTorch)."""

    _ndim = 1


class MaxPool2d(_MaxPoolNd):
    """Max over (dilated) kernel windows; stride defaults to kernel_size (as PyTorch)."""


class _AvgPoolNd(Module):
    _ndim = 2

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.geometry = pool_geometry(kernel_size, stride, padding, 1, ceil_mode,
                                      ndim=self._ndim, op=type(self).__name__,
                                      count_include_pad=count_include_pad,
                                      divisor_override=divisor_override)
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = kernel_size if stride is None else stride
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):
        return F.avg_pool(input, self.geometry)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """Mean over windows of (N, C, L) (PyTorch's divisor rules, as AvgPool2d)."""

    _ndim = 1

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)


class AvgPool2d(_AvgPoolNd):
    """Mean over kernel windows; zero padding counted unless count_include_pad=False;
    ceil_mode and divisor_override as PyTorch."""


class AdaptiveAvgPool2d(Module):
    """Average pool to a fixed output size (OH, OW); bins as in PyTorch:
    rows floor(i*H/OH) .. ceil((i+1)*H/OH)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = int_tuple(output_size, 2, "output_size", "AdaptiveAvgPool2d", 1)

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"
