"""Convolution layers: Conv1d, Conv2d, ConvTranspose2d (PyTorch's names, arguments,
attributes, weight layouts and default initialisation).

Arguments are validated once, in ``__init__``, by ``kernels._common.conv_geometry``; the
resulting record is what ``forward`` hands to the op and the kernels."""
from __future__ import annotations

import dataclasses
import math

from kernels._common import bad_argument, conv_geometry

from ...tensor import cat
from .. import functional as F
from .. import init
from .module import Module, _param

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    """Shared by the convolution layers: validation, parameters, init and repr.

    weight: (out_channels, in_channels / groups, *kernel_size), or for a transposed
    convolution (in_channels, out_channels / groups, *kernel_size), as PyTorch; both
    initialised U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = weight.shape[1] * prod(k).
    """

    _ndim = 2
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", output_padding=None):
        super().__init__()
        op = type(self).__name__
        geometry = conv_geometry(kernel_size, stride, padding, dilation, groups,
                                 ndim=self._ndim, op=op, output_padding=output_padding)
        geometry.check_channels(in_channels, out_channels)
        if padding_mode not in _PADDING_MODES:
            raise bad_argument(op, "padding_mode", padding_mode, f"one of {_PADDING_MODES}")
        if self._transposed and padding_mode != "zeros":
            raise bad_argument(op, "padding_mode", padding_mode, "'zeros' (PyTorch supports "
                               "only zero padding for transposed convolutions)")
        self.geometry = geometry
        # with another padding mode the input is padded first and the conv pads nothing
        self._conv_geometry = geometry if padding_mode == "zeros" else dataclasses.replace(
            geometry, padding=(0,) * self._ndim, padding_extra=(0,) * self._ndim)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = geometry.kernel_size, geometry.stride
        self.padding = padding if isinstance(padding, str) else geometry.padding
        self.dilation, self.groups = geometry.dilation, geometry.groups
        self.output_padding = geometry.output_padding
        self.padding_mode, self.transposed = padding_mode, self._transposed
        rows = (in_channels, out_channels // groups) if self._transposed else (
            out_channels, in_channels // groups)
        self.weight = _param(*rows, *geometry.kernel_size)
        self.bias = _param(out_channels) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * math.prod(self.kernel_size)
            bound = 1 / math.sqrt(fan_in) if fan_in else 0
            init.uniform_(self.bias, -bound, bound)

    def _check_input(self, x):
        nd = self._ndim
        dims = "L" if nd == 1 else "H, W"
        if x.ndim not in (nd + 1, nd + 2) or x.shape[-nd - 1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}({self.in_channels}, {self.out_channels}): "
                             f"input of shape {tuple(x.shape)}, expected (N, "
                             f"{self.in_channels}, {dims}) or ({self.in_channels}, {dims})")

    def extra_repr(self):
        nd = self._ndim
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * nd:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * nd:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class _Conv(_ConvNd):
    def forward(self, input):
        self._check_input(input)
        if self.padding_mode != "zeros":
            input = _pad_non_zero(input, self.geometry, self.padding_mode)
        return F.conv(input, self.weight, self.bias, self._conv_geometry)


class Conv1d(_Conv):
    """1-D cross-correlation over (N, C, L), weight (out, in / groups, K); see Conv2d."""

    _ndim = 1

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode)


class Conv2d(_Conv):
    """2-D cross-correlation, weight (out, in / groups, KH, KW); stride, padding (ints,
    'same' or 'valid'), dilation, groups and padding_mode ('zeros', 'reflect', 'replicate',
    'circular') as PyTorch; PyTorch's init."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode)


class ConvTranspose2d(_ConvNd):
    """The transposed 2-D convolution (the input gradient of Conv2d): weight
    (in, out / groups, KH, KW); OH = (H - 1)*stride - 2*padding + dilation*(KH - 1) +
    output_padding + 1. ``forward(input, output_size=None)``: an explicit output size
    picks the output_padding, as in PyTorch."""

    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, output_padding)

    def forward(self, input, output_size=None):
        self._check_input(input)
        geometry = self.geometry
        if output_size is not None:
            geometry = _output_padding_for(geometry, input.shape[-2:], output_size)
        return F.conv_transpose(input, self.weight, self.bias, geometry)


def _output_padding_for(geometry, size, output_size):
    """The geometry whose output_padding gives ``output_size`` (its last two entries)."""
    op = geometry.op
    want = tuple(output_size)[-2:]
    least = tuple((n - 1) * s - 2 * p + e for n, s, p, e in
                  zip(size, geometry.stride, geometry.padding, geometry.effective_kernel))
    extra = tuple(w - m for w, m in zip(want, least))
    if len(want) != 2 or any(not 0 <= e < max(s, d) for e, s, d in
                             zip(extra, geometry.stride, geometry.dilation)):
        top = tuple(m + max(s, d) - 1 for m, s, d in
                    zip(least, geometry.stride, geometry.dilation))
        raise bad_argument(op, "output_size", output_size,
                           f"between {least} and {top} for an input of size {tuple(size)}")
    return dataclasses.replace(geometry, output_padding=extra)


def _pad_non_zero(x, geometry, mode):
    """x padded along each spatial axis by the geometry's (low, high) padding, with
    PyTorch's 'reflect' (mirror without the edge), 'replicate' (repeat the edge) or
    'circular' (wrap around) rule -- slices and cat, so the gradient comes for free."""
    nd = geometry.ndim
    for i, (lo, hi) in enumerate(zip(geometry.padding, geometry.pad_high)):
        axis = x.ndim - nd + i
        n = x.shape[axis]

        def part(a, b):
            return x[(slice(None),) * axis + (slice(a, b),)]

        if mode == "reflect" and max(lo, hi) >= n:
            raise bad_argument(geometry.op, "padding", geometry.padding,
                               f"smaller than the input size {n} for padding_mode='reflect'")
        if mode == "circular" and max(lo, hi) > n:
            raise bad_argument(geometry.op, "padding", geometry.padding,
                               f"at most the input size {n} for padding_mode='circular'")
        if mode == "reflect":
            left = [part(1, lo + 1).flip(axis)] if lo else []
            right = [part(n - 1 - hi, n - 1).flip(axis)] if hi else []
        elif mode == "replicate":
            left, right = [part(0, 1)] * lo, [part(n - 1, n)] * hi
        else:  # circular
            left = [part(n - lo, n)] if lo else []
            right = [part(0, hi)] if hi else []
        if left or right:
            x = cat(left + [x] + right, dim=axis)
    return x
