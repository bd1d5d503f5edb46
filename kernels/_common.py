"""Argument handling shared by every kernel implementation (reference, cpu, cuda).

All shape checks live here so the implementations agree on what is valid and on the
error messages: each names the primitive, the shapes and what was expected.
"""
from __future__ import annotations

import numpy as np

__all__ = ["pair", "check_float", "conv2d_out_shape", "pool2d_out_shape", "check_matmul"]


def pair(v, name="argument", op="kernel"):
    """int or 2-sequence of ints -> (h, w)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v), int(v)
    try:
        h, w = v
    except (TypeError, ValueError):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}") from None
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in (h, w)):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    return int(h), int(w)


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


def conv2d_out_shape(x_shape, w_shape, stride, padding, op="conv2d_forward"):
    """Validate a convolution and return ((sh, sw), (ph, pw), (N, O, OH, OW))."""
    sh, sw = pair(stride, "stride", op)
    ph, pw = pair(padding, "padding", op)
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"{op}: expected x (N,C,H,W) and w (O,C,KH,KW), got shapes "
                         f"{tuple(x_shape)} and {tuple(w_shape)}")
    n, c, h, w = x_shape
    o, cw, kh, kw = w_shape
    if c != cw:
        raise ValueError(f"{op}: x {tuple(x_shape)} has {c} channels but w {tuple(w_shape)} "
                         f"expects {cw}")
    if sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"{op}: stride {(sh, sw)} must be >= 1 and padding {(ph, pw)} >= 0")
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    if min(n, c, o, kh, kw) < 1 or oh < 1 or ow < 1:
        raise ValueError(f"{op}: x {tuple(x_shape)} with kernel {(kh, kw)}, stride {(sh, sw)}, "
                         f"padding {(ph, pw)} gives an empty output ({oh}x{ow})")
    return (sh, sw), (ph, pw), (n, o, oh, ow)


def pool2d_out_shape(x_shape, kernel, stride, padding, op="pool2d"):
    """Validate a pooling window and return ((kh, kw), (sh, sw), (ph, pw), (N, C, OH, OW)).
    ``stride=None`` means stride = kernel (PyTorch's default)."""
    kh, kw = pair(kernel, "kernel", op)
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride", op)
    ph, pw = pair(padding, "padding", op)
    if len(x_shape) != 4:
        raise ValueError(f"{op}: expected x (N,C,H,W), got shape {tuple(x_shape)}")
    if kh < 1 or kw < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"{op}: kernel {(kh, kw)} and stride {(sh, sw)} must be >= 1 and "
                         f"padding {(ph, pw)} >= 0")
    if ph > kh // 2 or pw > kw // 2:
        raise ValueError(f"{op}: padding {(ph, pw)} must be at most half the kernel {(kh, kw)}")
    n, c, h, w = x_shape
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"{op}: x {tuple(x_shape)} is smaller than the kernel {(kh, kw)} "
                         f"with padding {(ph, pw)}")
    return (kh, kw), (sh, sw), (ph, pw), (n, c, oh, ow)
