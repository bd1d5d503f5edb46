"""Hypothesis strategies and array helpers shared by every kernel test (one place, as
minitorch keeps them): convolution and pooling geometries that always give a non-empty
output, GEMM shapes, dtypes and memory layouts.

Each strategy takes size limits so the same cases run at full size on the CPU and at
tiny sizes under the CUDA simulator (every simulated thread is a Python thread)."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

TOL = {np.float32: 2e-6, np.float64: 1e-12}
# Winograd's F(4x4, 3x3) (kernels.cpu_winograd4): its transforms' larger factors cost
# float32 about a decimal digit
TOL4 = {np.float32: 2e-5, np.float64: 1e-12}
DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = st.sampled_from(["contiguous", "transposed", "strided"])
SEEDS = st.integers(0, 2 ** 31)
PRIMES = st.sampled_from([1, 2, 3, 5, 7, 13, 17, 31])


def rel(a, b):
    """Relative L2 error of a against b (b the reference); NaN in a fails loudly."""
    a = np.asarray(a if isinstance(a, np.ndarray) else a.get(), np.float64)
    b = np.asarray(b, np.float64)
    assert not np.isnan(a).any() or np.isnan(b).any(), "an output element was never written"
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def rand(rng, shape, dtype, layout="contiguous"):
    """An array of ``shape``: contiguous, a transposed view or a strided slice."""
    if layout == "transposed" and len(shape) >= 2:
        base = rng.standard_normal(shape[::-1]).astype(dtype)
        return base.transpose(tuple(range(len(shape)))[::-1])
    if layout == "strided":
        base = rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)
        return base[..., ::2]
    return rng.standard_normal(shape).astype(dtype)


def _size(draw, eff, pad, max_size, ceil_room=0):
    """An input length with a non-empty output: size + 2*pad >= effective kernel."""
    return draw(st.integers(max(1, eff - 2 * pad), max(max_size, eff - 2 * pad)))


@st.composite
def conv_case(draw, max_size=13, max_batch=3, max_channels=4, max_kernel=5, extended=True,
              max_stride=3):
    """-> dict(x_shape, w_shape, args) with args = (stride, padding, dilation, groups) as
    the kernels take them. ``extended``: also dilation, groups, 'same'/'valid' padding
    and an empty batch."""
    k = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    s = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    d, g, p = (1, 1), 1, (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    n = draw(st.integers(1, max_batch))
    if extended:
        d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        g = draw(st.integers(1, 3))
        mode = draw(st.sampled_from(["ints", "ints", "ints", "same", "valid"]))
        if mode == "same":
            s, p = (1, 1), "same"
        elif mode == "valid":
            p = "valid"
        n = draw(st.integers(0 if draw(st.booleans()) else 1, max_batch))
    cg = draw(st.integers(1, max(1, max_channels // g)))
    og = draw(st.integers(1, max(1, max_channels // g)))
    pads = (0, 0) if isinstance(p, str) else p
    eff = tuple(dd * (kk - 1) + 1 for kk, dd in zip(k, d))
    if p == "same":
        h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    else:
        h, w = (_size(draw, e, pp, max_size) for e, pp in zip(eff, pads))
    return dict(x_shape=(n, cg * g, h, w), w_shape=(og * g, cg) + k, args=(s, p, d, g))


@st.composite
def pool_case(draw, max_size=13, max_batch=3, max_channels=4, max_kernel=5, extended=True,
              windows=None):
    """-> dict(x_shape, kernel, stride, padding, dilation, ceil_mode); padding at most
    half the kernel (PyTorch's bound). ``windows``: draw (kh, kw, sh, sw, ph, pw) from
    this list instead (dilation 1), for kernels compiled per window."""
    if windows is not None:
        kh, kw, sh, sw, ph, pw = draw(st.sampled_from(sorted(windows)))
        k, s, p, d = (kh, kw), (sh, sw), (ph, pw), (1, 1)
    else:
        k = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
        s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
        d = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if extended else (1, 1)
    ceil = draw(st.booleans()) if extended else False
    n = draw(st.integers(0 if extended and draw(st.booleans()) else 1, max_batch))
    c = draw(st.integers(1, max_channels))
    eff = tuple(dd * (kk - 1) + 1 for kk, dd in zip(k, d))
    h, w = (_size(draw, e, pp, max_size) for e, pp in zip(eff, p))
    return dict(x_shape=(n, c, h, w), kernel=k, stride=s, padding=p, dilation=d,
                ceil_mode=ceil)


@st.composite
def avg_options(draw):
    """count_include_pad and divisor_override of average pooling."""
    return dict(count_include_pad=draw(st.booleans()),
                divisor_override=draw(st.sampled_from([None, None, 1, 3])))


@st.composite
def matmul_case(draw, dims=PRIMES, max_batch=3):
    """-> (m, k, n, trans_a, trans_b, batch); batch 0 means 2-D operands."""
    return (draw(dims), draw(dims), draw(dims), draw(st.booleans()), draw(st.booleans()),
            draw(st.integers(0, max_batch)))
