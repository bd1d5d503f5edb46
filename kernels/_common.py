"""Argument handling shared by every kernel implementation (reference, cpu, cuda).

Convolution and pooling arguments are validated and normalised HERE and nowhere else:
``conv_geometry`` and ``pool_geometry`` turn PyTorch-style arguments (an int or a tuple
per spatial dimension) into one frozen record of int tuples. A layer builds it once in
``__init__``, the op keeps it on its context, and every kernel implementation reads the
same record (a kernel entry point called with plain ints builds it itself).

Every argument error has one wording, ``"<op>: <argument> must be <bound>, got <value>"``,
raised as TypeError for a wrong type and ValueError for a wrong value. Shape checks name
the primitive, the shapes and what was expected.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["ConvGeometry", "PoolGeometry", "conv_geometry", "pool_geometry",
           "as_conv_geometry", "as_pool_geometry", "int_tuple", "check_dy",
           "check_maxpool_backward", "check_float",
           "check_matmul", "gemm_slices", "GRID_YZ_MAX", "bad_argument"]


def bad_argument(op, arg, value, expected, exc=ValueError):
    """The one wording of an argument error: ``<op>: <arg> must be <expected>, got <value>``."""
    return exc(f"{op}: {arg} must be {expected}, got {value!r}")


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def int_tuple(value, n, arg, op, low):
    """int or n-sequence of ints -> n-tuple of ints, each >= ``low`` (the one place that
    turns PyTorch's "int or tuple" arguments into tuples)."""
    kind = f"an int or a tuple of {n} int{'s' if n > 1 else ''}"
    if _is_int(value):
        t = (int(value),) * n
    else:
        try:
            t = tuple(value)
        except TypeError:
            raise bad_argument(op, arg, value, kind, TypeError) from None
        if len(t) != n or not all(_is_int(v) for v in t):
            raise bad_argument(op, arg, value, kind, TypeError)
        t = tuple(int(v) for v in t)
    if min(t) < low:
        raise bad_argument(op, arg, value, f">= {low}")
    return t


def _out_size(size, pad_total, eff_kernel, stride, ceil_mode=False, pad_low=0):
    """PyTorch's output length: floor((size + pads - eff_kernel) / stride) + 1, or ceil
    with ``ceil_mode`` (then the last window must start inside the input or the low pad)."""
    span = size + pad_total - eff_kernel
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= size + pad_low:
            out -= 1
        return out
    return span // stride + 1 if span >= 0 else 0


_SHAPES_KEPT = 64  # input shapes remembered per geometry


def _remembered_shape(geo, args, compute):
    """compute(*args), remembered on ``geo`` for arguments that are tuples of plain ints:
    a training step checks the same shapes at every layer boundary (the functional API,
    the op, the kernel), about 4 us of Python each. A bad shape raises every time (an
    exception is never remembered)."""
    try:
        key = tuple(None if a is None else a if type(a) is str else tuple(a) for a in args)
        memo = geo.__dict__.get("_shape_memo")
        out = memo.get(key) if memo is not None else None
    except TypeError:  # an argument that is not a sequence: let compute() say what is wrong
        return compute(*args)
    if out is None:
        out = compute(*args)
        if all(type(v) is int for a in key if type(a) is tuple for v in a):
            if memo is None or len(memo) >= _SHAPES_KEPT:
                memo = {}
                object.__setattr__(geo, "_shape_memo", memo)  # (a frozen dataclass)
            memo[key] = out
    return out


def geometry_memo(geo, name):
    """A dict kept on ``geo`` (a frozen geometry record) under ``name``, for what a kernel
    module works out once per input shape (a launch plan); emptied when it holds
    _SHAPES_KEPT entries, so that varying shapes cannot grow it without bound."""
    memo = geo.__dict__.get(name)
    if memo is None or len(memo) >= _SHAPES_KEPT:
        memo = {}
        object.__setattr__(geo, name, memo)  # (a frozen dataclass)
    return memo


@dataclass(frozen=True)
class ConvGeometry:
    """Validated convolution arguments, one int per spatial dimension (ndim of them).

    ``padding`` is the zero padding on each low side and on each high side; for
    ``padding='same'`` with an even effective kernel PyTorch puts one more row/column on
    the high side: that is ``padding_extra`` (0 or 1 per dimension). Kernels only ever
    read the low side explicitly; the high side enters through the output size.
    ``padding_mode`` remembers 'same'/'valid' when given as a string ("" otherwise).
    """

    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    ndim: int = 2
    op: str = "conv2d"
    padding_extra: tuple = ()
    padding_mode: str = ""
    output_padding: tuple = ()

    def __post_init__(self):
        for name in ("padding_extra", "output_padding"):
            if not getattr(self, name):
                object.__setattr__(self, name, (0,) * self.ndim)

    def check_channels(self, in_channels, out_channels, op=None):
        """A layer's channel counts: ints >= 1, both divisible by groups."""
        op = op or self.op
        for arg, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not _is_int(v):
                raise bad_argument(op, arg, v, "an int", TypeError)
            if v < 1:
                raise bad_argument(op, arg, v, ">= 1")
            if v % self.groups:
                raise bad_argument(op, arg, v, f"divisible by groups={self.groups}")

    @property
    def effective_kernel(self):
        """d * (k - 1) + 1: the span of a dilated kernel."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))

    @property
    def pad_high(self):
        return tuple(p + e for p, e in zip(self.padding, self.padding_extra))

    def out_size(self, size):
        """Spatial output size for a spatial input ``size`` (may be <= 0: empty)."""
        return tuple(_out_size(n, p + ph, e, s) for n, p, ph, e, s in
                     zip(size, self.padding, self.pad_high, self.effective_kernel,
                         self.stride))

    def output_shape(self, x_shape, w_shape, op=None):
        """Check x (N, C, *spatial) against w (O, C/groups, *kernel_size) and return the
        output shape (N, O, *out). N may be 0 (an empty batch); the spatial output may not.
        Remembered per geometry (_remembered_shape)."""
        return _remembered_shape(self, (x_shape, w_shape, op), self._output_shape)

    def _output_shape(self, x_shape, w_shape, op=None):
        op = op or self.op
        nd = self.ndim
        x_shape, w_shape = tuple(x_shape), tuple(w_shape)
        names = "HW"[-nd:] if nd <= 2 else "DHW"[-nd:]
        if len(x_shape) != nd + 2 or len(w_shape) != nd + 2:
            raise ValueError(f"{op}: expected input (N, C, {', '.join(names)}) and weight "
                             f"(O, C/groups, {', '.join('K' + c for c in names)}), got shapes "
                             f"{x_shape} and {w_shape}")
        n, c = x_shape[:2]
        o, cg = w_shape[:2]
        g = self.groups
        if c != cg * g:
            expect = f"{cg} input channels" if g == 1 else f"{cg} x groups {g} = {cg * g} input channels"
            raise ValueError(f"{op}: input {x_shape} has {c} channels but weight {w_shape} "
                             f"expects {expect}")
        if o % g:
            raise ValueError(f"{op}: weight {w_shape} has {o} output channels, not divisible "
                             f"by groups {g}")
        if w_shape[2:] != self.kernel_size:
            raise ValueError(f"{op}: weight {w_shape} has kernel {w_shape[2:]}, but the "
                             f"geometry says kernel_size {self.kernel_size}")
        out = self.out_size(x_shape[2:])
        if min(x_shape[2:] + (c, o)) < 1 or min(out) < 1:
            raise ValueError(f"{op}: input {x_shape} with kernel {self.kernel_size}, stride "
                             f"{self.stride}, padding {self.padding}, dilation {self.dilation} "
                             f"gives an empty output {out}")
        return (n, o) + out

    def as_2d(self):
        """A 1-D geometry as the 2-D one of an (N, C, 1, L) input (identity for 2-D)."""
        if self.ndim == 2:
            return self
        if self.ndim != 1:
            raise ValueError(f"{self.op}: as_2d needs a 1-D or 2-D geometry, got {self.ndim}-D")
        return ConvGeometry((1,) + self.kernel_size, (1,) + self.stride, (0,) + self.padding,
                            (1,) + self.dilation, self.groups, 2, self.op,
                            (0,) + self.padding_extra, self.padding_mode,
                            (0,) + self.output_padding)


_GEOMETRIES_KEPT = 256


def _plain(v):
    """An exact-type key of an argument (1, True, 1.0 and [1] all differ: each is checked
    as itself); TypeError for anything else (numpy ints, ...: not remembered)."""
    t = type(v)
    if t is tuple or t is list:
        return t, tuple(_plain(x) for x in v)
    if v is None or t is int or t is str or t is bool or t is float:
        return t, v
    raise TypeError


def _remembered_geometry(build):
    """``build`` (conv_geometry / pool_geometry), its results remembered by their
    arguments: the functional API (F.max_pool2d(x, 2), F.conv2d(x, w, padding=1)) builds
    a geometry on every call, about 12 us of validation; a frozen geometry can be shared.
    Invalid arguments raise every time (an exception is never remembered)."""
    memo = {}

    @functools.wraps(build)
    def remembered(*args, **kwargs):
        try:
            key = (_plain(args), _plain(sorted(kwargs.items())))
        except TypeError:
            return build(*args, **kwargs)
        geo = memo.get(key)
        if geo is None:
            geo = build(*args, **kwargs)
            if len(memo) >= _GEOMETRIES_KEPT:
                memo.clear()
            memo[key] = geo
        return geo

    return remembered


@_remembered_geometry
def conv_geometry(kernel_size, stride=1, padding=0, dilation=1, groups=1, *, ndim=2,
                  op="conv2d", output_padding=None):
    """Validate PyTorch's convolution arguments once -> ConvGeometry.

    kernel_size, stride, dilation: int or ndim-tuple of ints >= 1; padding: ints >= 0, or
    'valid' (no padding) or 'same' (output size = input size; stride must be 1, as in
    PyTorch; an even effective kernel gets the extra row on the high side); groups: int >= 1
    (it must divide both channel counts: ``ConvGeometry.output_shape`` checks that against
    the tensors, ``check_channels`` against a layer's counts). ``output_padding`` (transposed
    convolutions only; None for a plain one): ints >= 0, each smaller than the stride or
    the dilation of its axis, as PyTorch requires."""
    k = int_tuple(kernel_size, ndim, "kernel_size", op, 1)
    s = int_tuple(stride, ndim, "stride", op, 1)
    d = int_tuple(dilation, ndim, "dilation", op, 1)
    if not _is_int(groups):
        raise bad_argument(op, "groups", groups, "an int", TypeError)
    if groups < 1:
        raise bad_argument(op, "groups", groups, ">= 1")
    extra, mode = (0,) * ndim, ""
    if isinstance(padding, str):
        if padding == "valid":
            p, mode = (0,) * ndim, "valid"
        elif padding == "same":
            if any(v != 1 for v in s):
                raise bad_argument(op, "stride", stride, "1 with padding='same' (PyTorch does "
                                   "not support 'same' for strided convolutions)")
            total = tuple(dd * (kk - 1) for kk, dd in zip(k, d))
            p = tuple(t // 2 for t in total)
            extra, mode = tuple(t % 2 for t in total), "same"
        else:
            raise bad_argument(op, "padding", padding, "'same', 'valid' or an int or a tuple "
                               f"of {ndim} ints")
    else:
        p = int_tuple(padding, ndim, "padding", op, 0)
    if output_padding is None:
        op_ = (0,) * ndim
    else:
        if mode:
            raise bad_argument(op, "padding", padding, "an int or a tuple of ints for a "
                               "transposed convolution", TypeError)
        op_ = int_tuple(output_padding, ndim, "output_padding", op, 0)
        if any(o >= max(ss, dd) for o, ss, dd in zip(op_, s, d)):
            raise bad_argument(op, "output_padding", output_padding,
                               f"smaller than stride {s} or dilation {d}")
    return ConvGeometry(k, s, p, d, int(groups), ndim, op, extra, mode, op_)


@dataclass(frozen=True)
class PoolGeometry:
    """Validated pooling arguments (int tuples of length ndim). ``stride`` defaults to the
    kernel (PyTorch). Average pooling also uses ``count_include_pad`` and
    ``divisor_override``; max pooling leaves them at their defaults."""

    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    ceil_mode: bool = False
    ndim: int = 2
    op: str = "max_pool2d"
    count_include_pad: bool = True
    divisor_override: int | None = None

    @property
    def effective_kernel(self):
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))

    def out_size(self, size):
        return tuple(_out_size(n, 2 * p, e, s, self.ceil_mode, p) for n, p, e, s in
                     zip(size, self.padding, self.effective_kernel, self.stride))

    def output_shape(self, x_shape, op=None):
        """Check x (N, C, *spatial) and return (N, C, *out); N may be 0. Remembered per
        geometry (_remembered_shape)."""
        return _remembered_shape(self, (x_shape, op), self._output_shape)

    def _output_shape(self, x_shape, op=None):
        op = op or self.op
        x_shape = tuple(x_shape)
        if len(x_shape) != self.ndim + 2:
            raise ValueError(f"{op}: expected a {self.ndim + 2}-D input (N, C, "
                             f"{', '.join('HW'[-self.ndim:])}), got shape {x_shape}")
        out = self.out_size(x_shape[2:])
        if min(out) < 1:
            raise ValueError(f"{op}: input {x_shape} is smaller than the kernel "
                             f"{self.kernel_size} (dilation {self.dilation}) with padding "
                             f"{self.padding}: the output would be {out}")
        return x_shape[:2] + out

    def divisors(self, size):
        """Per-axis window sizes for average pooling: for each axis a float64 array of
        length out[axis] with the number of taps each window counts (the window clipped
        to the padded input, or to the input itself when count_include_pad is False). The
        divisor of output (i, j) is rows[i] * cols[j], or divisor_override."""
        out = []
        for n, k, s, p, o in zip(size, self.kernel_size, self.stride, self.padding,
                                 self.out_size(size)):
            start = np.arange(o) * s - p
            end = np.minimum(start + k, n + p)
            if not self.count_include_pad:
                start, end = np.maximum(start, 0), np.minimum(end, n)
            out.append((end - start).astype(np.float64))
        return out

    def as_2d(self):
        if self.ndim == 2:
            return self
        return PoolGeometry((1,) + self.kernel_size, (1,) + self.stride, (0,) + self.padding,
                            (1,) + self.dilation, self.ceil_mode, 2, self.op,
                            self.count_include_pad, self.divisor_override)


@_remembered_geometry
def pool_geometry(kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
                  ndim=2, op="max_pool2d", count_include_pad=True, divisor_override=None):
    """Validate PyTorch's pooling arguments once -> PoolGeometry.

    kernel_size, stride (None: the kernel), dilation: ints >= 1; padding: ints >= 0 and at
    most half of kernel_size (PyTorch's bound: a window never lies in the padding alone)."""
    k = int_tuple(kernel_size, ndim, "kernel_size", op, 1)
    s = k if stride is None or _empty(stride) else int_tuple(stride, ndim, "stride", op, 1)
    p = int_tuple(padding, ndim, "padding", op, 0)
    d = int_tuple(dilation, ndim, "dilation", op, 1)
    if any(pp > kk // 2 for pp, kk in zip(p, k)):
        raise bad_argument(op, "padding", padding, f"at most half of kernel_size {k}")
    if divisor_override is not None:
        if not _is_int(divisor_override):
            raise bad_argument(op, "divisor_override", divisor_override, "an int or None",
                               TypeError)
        if divisor_override < 1:
            raise bad_argument(op, "divisor_override", divisor_override, ">= 1")
        divisor_override = int(divisor_override)
    return PoolGeometry(k, s, p, d, bool(ceil_mode), ndim, op, bool(count_include_pad),
                        divisor_override)


def _empty(v):
    """PyTorch accepts stride=[] / () for 'the default'."""
    return isinstance(v, (tuple, list)) and len(v) == 0


def as_conv_geometry(stride, padding, dilation, groups, w_shape, op):
    """A kernel entry point's arguments -> ConvGeometry: ``stride`` may already be one
    (what the ops pass), else the plain ints are validated here (standalone use)."""
    if isinstance(stride, ConvGeometry):
        return stride
    if len(w_shape) != 4:
        raise ValueError(f"{op}: expected a weight (O, C/groups, KH, KW), got shape "
                         f"{tuple(w_shape)}")
    return conv_geometry(tuple(int(v) for v in w_shape[2:]), stride, padding, dilation, groups,
                         op=op)


def as_pool_geometry(kernel, stride, padding, dilation, ceil_mode, op, **avg):
    """Like ``as_conv_geometry`` for pooling: ``kernel`` may already be a PoolGeometry."""
    if isinstance(kernel, PoolGeometry):
        return kernel
    return pool_geometry(kernel, stride, padding, dilation, ceil_mode, op=op, **avg)


def check_maxpool_backward(dy, argmax, x_shape, kernel, stride, padding, dilation, ceil_mode,
                           op="maxpool2d_backward"):
    """dy and argmax of one shape matching x's (N, C); with the window (a PoolGeometry or
    its arguments; optional, ``kernel=None`` leaves it out) also dy against the output
    shape it implies. -> the PoolGeometry, or None."""
    x_shape = tuple(x_shape)
    if tuple(dy.shape) != tuple(argmax.shape) or tuple(dy.shape[:2]) != x_shape[:2]:
        raise ValueError(f"{op}: dy {tuple(dy.shape)} and argmax {tuple(argmax.shape)} do not "
                         f"match x {x_shape}")
    check_float(op, dy)
    if kernel is None:
        return None
    geo = as_pool_geometry(kernel, stride, padding, dilation, ceil_mode, op)
    check_dy(op, dy, geo.output_shape(x_shape, op))
    return geo


def check_dy(op, dy, out_shape):
    """The incoming gradient must have the forward output's shape."""
    if tuple(dy.shape) != tuple(out_shape):
        raise ValueError(f"{op}: dy has shape {tuple(dy.shape)}, expected {tuple(out_shape)}")


def check_float(op, *arrays):
    """All arrays float32 or float64 and of one dtype."""
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.float32, np.float64):
        raise TypeError(f"{op}: expected float32 or float64 arrays of one dtype, got "
                        f"{[str(a.dtype) for a in arrays]}")


def check_matmul(a, b, trans_a, trans_b, op="matmul"):
    """-> (M, K, N) for op(a) @ op(b); a, b 2-D, or 3-D with equal batch."""
    if a.ndim not in (2, 3) or a.ndim != b.ndim:
        raise ValueError(f"{op}: expected two 2-D or two 3-D arrays, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(f"{op}: batch sizes differ: {tuple(a.shape)} and {tuple(b.shape)}")
    m, k = (a.shape[-1], a.shape[-2]) if trans_a else (a.shape[-2], a.shape[-1])
    k2, n = (b.shape[-1], b.shape[-2]) if trans_b else (b.shape[-2], b.shape[-1])
    if k != k2:
        raise ValueError(f"{op}: inner sizes differ: op(a) is ({m}, {k}) from {tuple(a.shape)}"
                         f"{' transposed' if trans_a else ''}, op(b) is ({k2}, {n}) from "
                         f"{tuple(b.shape)}{' transposed' if trans_b else ''}")
    return m, k, n


# a CUDA grid has at most 65535 blocks in y and z (the GEMMs' row blocks and batches)
GRID_YZ_MAX = 65535


def gemm_slices(batch, m, rows_per_block, limit=GRID_YZ_MAX):
    """[(b0, b1, r0, r1)]: the batch and row ranges of a batched (batch, m, n) product
    that each fit a grid of at most ``limit`` blocks in z (batch entries) and in y (row
    blocks of ``rows_per_block`` rows); empty when the product is."""
    rows = limit * rows_per_block
    return [(b0, min(b0 + limit, batch), r0, min(r0 + rows, m))
            for b0 in range(0, batch, limit) for r0 in range(0, m, rows)]


_DTYPE_NAMES = {}


def magic(d):
    """(m, p) with x // d == (x * m) >> p for every 0 <= x < 2**31, for 1 <= d < 2**31.

    p = 31 + ceil(log2 d), m = ceil(2**p / d) < 2**32 (2**31 for d = 1). x*m/2**p exceeds
    x/d by x*(m*d - 2**p)/(d*2**p) < x/2**p <= 1/d, too little to reach the next integer,
    and x * m < 2**63 fits the 64-bit product."""
    if not 1 <= d < 2 ** 31:
        raise ValueError(f"kernels: divisor {d} outside [1, 2**31)")
    p = 31 + (d - 1).bit_length()
    return -(-(1 << p) // d), p


def dtype_name(dtype):
    """``np.dtype(dtype).name``, remembered: NumPy builds that string on every read
    (2.6 us on the dev VM; the Python side of a whole driver launch is about 4)."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = np.dtype(dtype).name
    return name
