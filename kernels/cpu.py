"""The fast CPU path: Numba loops for data movement, BLAS (through NumPy) for the products.

Convolution is lowered to a batched GEMM (im2col):

    cols[n, (c,p,q), (i,j)] = xpad[n, c, i*sh + p, j*sw + q]       (Numba, parallel over n)
    y[n]   = W2 (O, C*KH*KW) @ cols[n]                              (BLAS, batched)
    dW2    = sum_n dy[n] (O, L) @ cols[n]^T                         (BLAS, no transposed copy;
             or, for small L, one GEMM over (O, N*L) x (N*L, K))
    dx     = col2im(W2^T @ dy[n])                                   (BLAS + Numba scatter-add)

Pooling is a direct Numba loop over (n, c) planes in parallel; max pooling records the
flat argmax so its backward is a scatter-add.

Version notes (kept because they mattered; 2-core dev machine, LeNet-5 conv1/conv2 at
batch 64, forward/backward-input/backward-weight in ms; PyTorch CPU alone: 0.3/1.6/0.3
and 0.2/0.5/0.5):
  v1  one GEMM over the whole batch, cols (C*KH*KW, N*OH*OW), plus a Numba reorder of
      the (O, N*L) product into NCHW: 11.8/8.6/11.4 -- OpenBLAS's and Numba's OpenMP
      threads busy-waited against each other on 2 cores.
  v2  OMP_WAIT_POLICY=passive and one BLAS thread for small GEMMs: 0.65/0.64/0.87 and
      0.76/0.77/0.88; ResNet 128@16 layer 48/45/50 (PyTorch 26/22/30).
  v3  (this) per-sample layout cols (N, C*KH*KW, L) and a batched GEMM that writes NCHW
      directly (no reorder pass): 0.43/0.40/0.72 and 0.55/0.55/0.61; ResNet layer 38/42/39.
  v4  the same kernels on Numba's workqueue threading layer (sleeping pthreads) instead
      of OpenMP with a process-wide OMP_WAIT_POLICY=passive, which also changed the pool
      of any other OpenMP user in the process (PyTorch) -- see _choose_threading_layer.
All kernels are compiled with ``cache=True`` so the JIT cost is paid once per machine.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading

import numba
import numpy as np
from numba import njit, prange


def _choose_threading_layer():
    """Run our parallel loops on Numba's ``workqueue`` layer (plain pthreads that sleep
    when idle) unless the user chose a layer. Numba's default, OpenMP, keeps its threads
    spinning after every parallel loop, stealing the cores BLAS needs next (a LeNet-5
    conv took 11 ms instead of 1.4 on 2 cores). We used to set OMP_WAIT_POLICY=passive
    here, but that environment variable is process-wide: it also slowed or sped up
    every other OpenMP user in the process (PyTorch shares the same libgomp), and every
    child process. Numba's config is read by Numba alone, at its first parallel launch;
    Numba parallel kernels hold the GIL, so workqueue's one-caller-at-a-time rule holds."""
    if "NUMBA_THREADING_LAYER" in os.environ or numba.config.THREADING_LAYER != "default":
        return f"user's choice ({numba.config.THREADING_LAYER})"
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", False):  # a parallel loop already ran
        return "already launched by another user of Numba"
    numba.config.THREADING_LAYER = "workqueue"
    return "workqueue (set by kernels.cpu)"


# what kernels.cpu did to its own process's thread pools (reported by the benchmarks)
THREAD_POLICY = _choose_threading_layer()

from ._common import (as_conv_geometry, as_pool_geometry, check_dy, check_float,
                      check_matmul, check_maxpool_backward)

__all__ = ["matmul", "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight",
           "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
           "VERSIONS"]

_COLS_BUDGET_BYTES = 32 * 2 ** 20
# conv2d_backward_weight: the output size L = OH*OW below which the batch is folded into
# one GEMM, and the largest (chunk, O, K) intermediate of the batched form (see there)
_FOLD_BATCH_BELOW_L = 256
_BATCHED_DW_BYTES = _COLS_BUDGET_BYTES // 4
# Below this many multiply-adds a GEMM runs on one BLAS thread. OpenBLAS worker threads
# busy-wait after a product and Numba's parallel loops busy-wait after theirs; on a small
# machine the two pools then fight for the cores: a LeNet-5 conv took 11 ms instead of
# 1.4 ms (2-core dev machine). Large products keep all BLAS threads: there the extra
# threads pay for themselves.
_SMALL_GEMM_MACS = 2 ** 26


def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it BLAS keeps its default thread count
        return None
    libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    return libs or None


_BLAS = _blas_controller()


@contextlib.contextmanager
def _blas_threads_for(macs):
    if _BLAS is None or macs >= _SMALL_GEMM_MACS:
        yield
        return
    saved = [lib.num_threads for lib in _BLAS]
    for lib in _BLAS:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(_BLAS, saved):
            lib.set_num_threads(n)


def _gemm(a, b):
    """a @ b for 2-D (or equal-batch 3-D) operands, with the BLAS thread policy above."""
    batch = max(a.shape[0] if a.ndim == 3 else 1, b.shape[0] if b.ndim == 3 else 1)
    macs = a.shape[-2] * a.shape[-1] * b.shape[-1] * batch
    with _blas_threads_for(macs):
        return np.matmul(a, b)


def matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) through BLAS. Transposed operands are passed as transposed views,
    which BLAS reads with its own transpose flag: no copy is made."""
    check_matmul(a, b, trans_a, trans_b)
    check_float("matmul", a, b)
    a = np.swapaxes(a, -1, -2) if trans_a else a
    b = np.swapaxes(b, -1, -2) if trans_b else b
    return _gemm(a, b)


# -- im2col / col2im ------------------------------------------------------------------------
def _make_im2col(k_major):
    """im2col in one of two layouts, ``k_major`` a compile-time constant (a closure
    variable), so each compiled kernel has a single store and stays vectorised; a
    strided view of one layout written by the other's kernel ran 1.7x slower."""

    @njit(parallel=True, cache=True)
    def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols):
        n_, c_, h_, w_ = x.shape
        for n in prange(n_):
            for c in range(c_):
                for p in range(kh):
                    for q in range(kw):
                        row = (c * kh + p) * kw + q
                        for i in range(oh):
                            hh = i * sh + p * dh - ph
                            inside = hh >= 0 and hh < h_
                            for j in range(ow):
                                ww = j * sw + q * dw - pw
                                v = x[n, c, hh, ww] if inside and ww >= 0 and ww < w_ else 0.0
                                if k_major:
                                    cols[row, n, i * ow + j] = v
                                else:
                                    cols[n, row, i * ow + j] = v

    return im2col


# cols[n, (c*kh + p)*kw + q, i*ow + j] = xpad[n, c, i*sh + p*dh, j*sw + q*dw]
_im2col = _make_im2col(False)
# the same in the (K, N, L) layout, where (K, N*L) is a plain reshape (weight gradient)
_im2col_kn = _make_im2col(True)


@njit(parallel=True, cache=True)
def _col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx):
    """dx[n, c, i*sh + p*dh - ph, j*sw + q*dw - pw] += cols[n, (c*kh + p)*kw + q, i*ow + j]
    (each sample n writes only its own plane, so samples run in parallel safely)."""
    n_, c_, h_, w_ = dx.shape
    for n in prange(n_):
        for c in range(c_):
            for p in range(kh):
                for q in range(kw):
                    row = (c * kh + p) * kw + q
                    for i in range(oh):
                        hh = i * sh + p * dh - ph
                        if hh < 0 or hh >= h_:
                            continue
                        base = i * ow
                        for j in range(ow):
                            ww = j * sw + q * dw - pw
                            if ww >= 0 and ww < w_:
                                dx[n, c, hh, ww] += cols[n, row, base + j]


_WORKSPACE = threading.local()


def _workspace(shape, dtype):
    """A scratch array of ``shape`` carved from one per-thread buffer that only grows
    (to at most about _COLS_BUDGET_BYTES). Fresh np.empty buffers this large come from
    mmap and are page-faulted in on every call: that cost ResNet 64@32's forward a
    third of its time (60 vs 42 ms, 2 cores). Valid until the next _workspace call."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = getattr(_WORKSPACE, "buf", None)
    if buf is None or buf.size < size:
        buf = _WORKSPACE.buf = np.empty(size, dtype=np.uint8)
    return buf[:size].view(dtype).reshape(shape)


def _chunks(n, rows, L, itemsize):
    """Batch chunk size so that the (chunk, rows, L) column buffer stays within budget."""
    per_sample = max(rows * L * itemsize, 1)
    step = max(1, min(n, _COLS_BUDGET_BYTES // per_sample))
    return [(s, min(n, s + step)) for s in range(0, n, step)]


def _lowering_args(geo):
    """The im2col/col2im scalar arguments of a geometry: kh, kw, sh, sw, ph, pw, dh, dw."""
    return geo.kernel_size + geo.stride + geo.padding + geo.dilation


def conv2d_forward(x, w, stride=1, padding=0, dilation=1, groups=1):
    """y (N,O,OH,OW) = grouped, dilated cross-correlation of x (N,C,H,W) with
    w (O,C/G,KH,KW): with the im2col rows of group g a contiguous block of Kg = C/G*KH*KW,
    y[n, g] = W2[g] (O/G, Kg) @ cols[n, g] (Kg, OH*OW), one batched GEMM over (n, g)."""
    check_float("conv2d_forward", x, w)
    geo = as_conv_geometry(stride, padding, dilation, groups, w.shape, "conv2d_forward")
    n, o, oh, ow = geo.output_shape(x.shape, w.shape, "conv2d_forward")
    g = geo.groups
    c, kh, kw = w.shape[1] * g, w.shape[2], w.shape[3]
    k, L = c * kh * kw, oh * ow
    x = np.ascontiguousarray(x)
    w2 = np.ascontiguousarray(w).reshape(g, o // g, k // g)
    y = np.empty((n, g, o // g, L), dtype=x.dtype)
    for s, e in _chunks(n, k, L, x.itemsize):
        cols = _workspace((e - s, k, L), x.dtype)
        _im2col(x[s:e], *_lowering_args(geo), oh, ow, cols)
        np.matmul(w2, cols.reshape(e - s, g, k // g, L), out=y[s:e])
    return y.reshape(n, o, oh, ow)


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1):
    """dx = col2im(W2[g]^T @ dy[n, g]): the adjoint of the im2col lowering."""
    check_float("conv2d_backward_input", dy, w)
    geo = as_conv_geometry(stride, padding, dilation, groups, w.shape, "conv2d_backward_input")
    out = geo.output_shape(x_shape, w.shape, "conv2d_backward_input")
    check_dy("conv2d_backward_input", dy, out)
    n, o, oh, ow = out
    g = geo.groups
    c, kh, kw = w.shape[1] * g, w.shape[2], w.shape[3]
    k, L = c * kh * kw, oh * ow
    w2t = np.ascontiguousarray(w).reshape(g, o // g, k // g).transpose(0, 2, 1)
    dy4 = np.ascontiguousarray(dy).reshape(n, g, o // g, L)
    dx = np.zeros(tuple(x_shape), dtype=dy.dtype)
    for s, e in _chunks(n, k, L, dy.itemsize):
        cols = _workspace((e - s, k, L), dy.dtype)
        np.matmul(w2t, dy4[s:e], out=cols.reshape(e - s, g, k // g, L))
        _col2im(cols, *_lowering_args(geo), oh, ow, dx[s:e])
    return dx


_DW_LOWERINGS = ("auto", "fold_batch", "batched", "per_sample")


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1):
    """dW2[g] (O/G, Kg) = sum_n dy[n, g] (O/G, L) @ cols[n, g]^T (L, Kg).

    Lowerings of the same sum, chosen by size (measured, 2 cores, groups=1):
    * L = OH*OW >= 256: per-sample products dy[n] @ cols[n]^T, each contracting over a
      long L -- one batched GEMM and a sum over samples when the (chunk, O, K)
      intermediate is small ("batched"), else accumulated sample by sample
      ("per_sample");
    * L < 256 (deep layers, small images): per-sample contractions are too short for
      BLAS, so the batch is folded into the contraction instead ("fold_batch") -- one
      GEMM dY (O, N*L) @ COLS (N*L, K) with cols laid out (K, N, L) by ``_im2col_kn`` and
      dy transposed to (O, N, L). ResNet 512@4: 40 ms instead of 180; LeNet-5 conv2: 1.05
      instead of 1.26 ms. (For large L the one-GEMM form lost: LeNet-5 conv1 1.4 vs 0.5.)
    Each lowering is also runnable by name: ``VERSIONS["conv2d_backward_weight"]``.
    """
    return _conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups, "auto")


def _conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups, lowering):
    check_float("conv2d_backward_weight", dy, x)
    geo = as_conv_geometry(stride, padding, dilation, groups, w_shape, "conv2d_backward_weight")
    out = geo.output_shape(x.shape, w_shape, "conv2d_backward_weight")
    check_dy("conv2d_backward_weight", dy, out)
    n, o, oh, ow = out
    g = geo.groups
    c, kh, kw = w_shape[1] * g, w_shape[2], w_shape[3]
    k, L = c * kh * kw, oh * ow
    og, kg = o // g, k // g
    x = np.ascontiguousarray(x)
    dy4 = np.ascontiguousarray(dy).reshape(n, g, og, L)
    dw = np.zeros((g, og, kg), dtype=x.dtype)
    for s, e in _chunks(n, k, L, x.itemsize):
        how = lowering
        if how == "auto":
            how = ("fold_batch" if L < _FOLD_BATCH_BELOW_L else
                   "batched" if (e - s) * o * kg * x.itemsize <= _BATCHED_DW_BYTES else
                   "per_sample")
        if how == "fold_batch":
            cols = _workspace((k, e - s, L), x.dtype)
            _im2col_kn(x[s:e], *_lowering_args(geo), oh, ow, cols)
            dyt = np.ascontiguousarray(dy4[s:e].transpose(1, 2, 0, 3)).reshape(
                g, og, (e - s) * L)
            dw += np.matmul(dyt, cols.reshape(g, kg, (e - s) * L).transpose(0, 2, 1))
            continue
        cols = _workspace((e - s, k, L), x.dtype)
        _im2col(x[s:e], *_lowering_args(geo), oh, ow, cols)
        cols_t = cols.reshape(e - s, g, kg, L).transpose(0, 1, 3, 2)
        if how == "batched":
            # one batched GEMM then a sum over samples: fastest for small layers
            dw += np.matmul(dy4[s:e], cols_t).sum(axis=0)
        else:
            # large O*K: a (chunk, O, K) intermediate would cost more than the products;
            # accumulate sample by sample instead
            for i in range(e - s):
                dw += np.matmul(dy4[s + i], cols_t[i])
    return dw.reshape(tuple(w_shape))


# -- pooling -------------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def _maxpool_fwd(x, kh, kw, sh, sw, ph, pw, dh, dw, y, arg):
    """The general case: any padding, dilation, ceil_mode, NaN-aware. Only taps inside
    the image compete (the -inf padding never wins, so it is never read); the first tap
    inside seeds the maximum, so an all -inf window still records a position in it."""
    n_, c_, h_, w_ = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for nc in prange(n_ * c_):
        n = nc // c_
        c = nc % c_
        for i in range(oh):
            for j in range(ow):
                best = -np.inf
                besti = -1
                for p in range(kh):
                    hh = i * sh - ph + p * dh
                    if hh < 0 or hh >= h_:
                        continue
                    for q in range(kw):
                        ww = j * sw - pw + q * dw
                        if ww < 0 or ww >= w_:
                            continue
                        v = x[n, c, hh, ww]
                        # the first maximum wins ties; the first NaN wins and then stays
                        take = (besti < 0) | (v > best) | ((v != v) & (best == best))
                        best = v if take else best
                        besti = hh * w_ + ww if take else besti
                y[n, c, i, j] = best
                arg[n, c, i, j] = besti


# the windows the seed models and common nets use, as (kh, kw, sh, sw, ph, pw); each is
# compiled (~1 s) the first time a machine uses it, then loaded from Numba's disk cache
_FIXED_POOLS = {(k, k, s, s, p, p) for k in (2, 3) for s in (1, 2, 3) for p in (0, 1)}


@functools.lru_cache(maxsize=None)
def _maxpool_fwd_fixed(kh, kw, sh, sw, ph, pw):
    """The common case -- a NaN-free input -- with the window, stride and padding as
    compile-time constants (closure variables are constants to Numba): LLVM unrolls and
    vectorises the window loop. 10x faster than the general kernel on LeNet-5's 2x2
    pools (0.06 vs 0.7 ms at batch 64, 2 cores): there the runtime-sized window loop
    and the NaN test kept it scalar. Windows that overlap the padding take a clipped
    loop; the rest (nearly all) take the unrolled one."""

    # cache=True works for closures: Numba keys the on-disk cache on the closure values
    @njit(parallel=True, cache=True)
    def kernel(x, y, arg):
        nc_, h_, w_ = x.shape
        oh, ow = y.shape[1], y.shape[2]
        for nc in prange(nc_):
            xp, yp, ap = x[nc], y[nc], arg[nc]
            for i in range(oh):
                h0 = i * sh - ph
                for j in range(ow):
                    w0 = j * sw - pw
                    if h0 >= 0 and w0 >= 0 and h0 + kh <= h_ and w0 + kw <= w_:
                        best = xp[h0, w0]
                        besti = h0 * w_ + w0
                        for p in range(kh):
                            for q in range(kw):
                                v = xp[h0 + p, w0 + q]
                                take = v > best  # strict: the first maximum wins ties
                                best = v if take else best
                                besti = (h0 + p) * w_ + w0 + q if take else besti
                    else:  # the window overlaps the -inf padding: clip it
                        ha, hb = max(h0, 0), min(h0 + kh, h_)
                        wa, wb = max(w0, 0), min(w0 + kw, w_)
                        best = xp[ha, wa]
                        besti = ha * w_ + wa
                        for hh in range(ha, hb):
                            for ww in range(wa, wb):
                                v = xp[hh, ww]
                                take = v > best
                                best = v if take else best
                                besti = hh * w_ + ww if take else besti
                    yp[i, j] = best
                    ap[i, j] = besti

    return kernel


def maxpool2d_forward(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    """-> y (N,C,OH,OW), argmax (int64 flat index h*W + w); -inf padding, first max wins,
    a NaN in a window wins (as PyTorch). Common undilated windows on NaN-free input take
    the compile-time-specialised kernel, the rest the general one (both are runnable by
    name: ``VERSIONS["maxpool2d_forward"]``)."""
    return _maxpool2d_forward(x, kernel, stride, padding, dilation, ceil_mode, "auto")


def _maxpool2d_forward(x, kernel, stride, padding, dilation, ceil_mode, version):
    check_float("maxpool2d_forward", x)
    geo = as_pool_geometry(kernel, stride, padding, dilation, ceil_mode, "maxpool2d_forward")
    out = geo.output_shape(x.shape, "maxpool2d_forward")
    y = np.empty(out, dtype=x.dtype)
    arg = np.empty(out, dtype=np.int64)
    n, c, h, w = x.shape
    window = geo.kernel_size + geo.stride + geo.padding
    fixed = geo.dilation == (1, 1) and (window in _FIXED_POOLS or version == "specialised")
    if version != "general" and fixed and not np.isnan(x).any():
        x3 = np.ascontiguousarray(x).reshape(n * c, h, w)
        _maxpool_fwd_fixed(*window)(x3, y.reshape(n * c, *out[2:]),
                                    arg.reshape(n * c, *out[2:]))
    else:
        _maxpool_fwd(x, *window, *geo.dilation, y, arg)
    return y, arg


@njit(parallel=True, cache=True)
def _maxpool_bwd(dy, arg, dx):
    n_, c_ = dy.shape[0], dy.shape[1]
    oh, ow = dy.shape[2], dy.shape[3]
    for nc in prange(n_ * c_):
        n = nc // c_
        c = nc % c_
        for i in range(oh):
            for j in range(ow):
                a = arg[n, c, i, j]
                if a >= 0:  # -1: a window with no tap inside the input, no gradient
                    dx[n, c, a] += dy[n, c, i, j]


def maxpool2d_backward(dy, argmax, x_shape, kernel=None, stride=None, padding=0, dilation=1,
                       ceil_mode=False):
    """dx[n,c,h,w] = sum of dy over the windows whose argmax is h*W + w (a scatter-add, one
    (n, c) plane per thread).

    The window (a PoolGeometry, or kernel/stride/... as in the forward) is optional: the
    argmax already says where each gradient goes; when given, dy is checked against it."""
    check_maxpool_backward(dy, argmax, x_shape, kernel, stride, padding, dilation, ceil_mode)
    n, c, h, w = x_shape
    dx = np.zeros((n, c, h * w), dtype=dy.dtype)
    _maxpool_bwd(dy, argmax.astype(np.int64, copy=False), dx)
    return dx.reshape(tuple(x_shape))


@njit(parallel=True, cache=True)
def _avgpool_fwd(x, kh, kw, sh, sw, ph, pw, inv, y):
    n_, c_, h_, w_ = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for nc in prange(n_ * c_):
        n = nc // c_
        c = nc % c_
        for i in range(oh):
            for j in range(ow):
                s = 0.0
                for p in range(kh):
                    hh = i * sh + p - ph
                    if hh < 0 or hh >= h_:
                        continue
                    for q in range(kw):
                        ww = j * sw + q - pw
                        if ww >= 0 and ww < w_:
                            s += x[n, c, hh, ww]
                y[n, c, i, j] = s * inv[i, j]


@njit(parallel=True, cache=True)
def _avgpool_bwd(dy, kh, kw, sh, sw, ph, pw, inv, dx):
    n_, c_, h_, w_ = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for nc in prange(n_ * c_):
        n = nc // c_
        c = nc % c_
        for i in range(oh):
            for j in range(ow):
                g = dy[n, c, i, j] * inv[i, j]
                for p in range(kh):
                    hh = i * sh + p - ph
                    if hh < 0 or hh >= h_:
                        continue
                    for q in range(kw):
                        ww = j * sw + q - pw
                        if ww >= 0 and ww < w_:
                            dx[n, c, hh, ww] += g


def _avg_inverse_divisor(geo, size):
    """(OH, OW) float64 1/divisor (PyTorch's clipped window sizes, or divisor_override):
    the kernels multiply, as a division per output ran 1.6x slower (LeNet-5's 2x2 pool)."""
    rows, cols = geo.divisors(size)
    if geo.divisor_override is not None:
        return np.full((rows.size, cols.size), 1.0 / geo.divisor_override)
    return 1.0 / (rows[:, None] * cols[None, :])


def avgpool2d_forward(x, kernel, stride=None, padding=0, ceil_mode=False,
                      count_include_pad=True, divisor_override=None):
    """y[n,c,i,j] = window sum of the zero-padded x / div[i,j] (PyTorch's divisor rules)."""
    check_float("avgpool2d_forward", x)
    geo = as_pool_geometry(kernel, stride, padding, 1, ceil_mode, "avgpool2d_forward",
                           count_include_pad=count_include_pad,
                           divisor_override=divisor_override)
    out = geo.output_shape(x.shape, "avgpool2d_forward")
    y = np.empty(out, dtype=x.dtype)
    _avgpool_fwd(x, *geo.kernel_size, *geo.stride, *geo.padding,
                 _avg_inverse_divisor(geo, x.shape[2:]), y)
    return y


def avgpool2d_backward(dy, x_shape, kernel, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True, divisor_override=None):
    """dx[n,c,h,w] = sum over the windows containing (h, w) of dy[n,c,i,j] / div[i,j]."""
    check_float("avgpool2d_backward", dy)
    geo = as_pool_geometry(kernel, stride, padding, 1, ceil_mode, "avgpool2d_backward",
                           count_include_pad=count_include_pad,
                           divisor_override=divisor_override)
    out = geo.output_shape(x_shape, "avgpool2d_backward")
    check_dy("avgpool2d_backward", dy, out)
    dx = np.zeros(tuple(x_shape), dtype=dy.dtype)
    _avgpool_bwd(dy, *geo.kernel_size, *geo.stride, *geo.padding,
                 _avg_inverse_divisor(geo, x_shape[2:]), dx)
    return dx


def _dw_version(lowering):
    def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1):
        return _conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups,
                                       lowering)
    conv2d_backward_weight.__doc__ = f"conv2d_backward_weight, {lowering} lowering."
    return conv2d_backward_weight


def _maxpool_version(version):
    def maxpool2d_forward(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
        return _maxpool2d_forward(x, kernel, stride, padding, dilation, ceil_mode, version)
    maxpool2d_forward.__doc__ = f"maxpool2d_forward, {version} kernel."
    return maxpool2d_forward


# primitive -> version name -> function with the primitive's signature; "default" is the
# function the backend calls (which picks among the others by size where there is a choice)
VERSIONS = {name: {"default": globals()[name]} for name in __all__ if name != "VERSIONS"}
VERSIONS["conv2d_backward_weight"].update({v: _dw_version(v) for v in _DW_LOWERINGS[1:]})
# "specialised" compiles the window into the kernel for any undilated geometry (about a
# second per new window, then Numba's disk cache); "general" never does
VERSIONS["maxpool2d_forward"].update({v: _maxpool_version(v) for v in ("general", "specialised")})
