"""The fast CPU path: Numba loops for data movement, BLAS (through NumPy) for the products.

Convolution with stride 1 and a short contraction (small channel counts) runs direct
Numba kernels (see _direct_conv); the rest is lowered to GEMMs (im2col), by default
inside our own parallel loop with a single-threaded BLAS GEMM per block of samples
("blocked", see _blocked_forward), else as below:

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
  v5  (this) TBB instead of workqueue (2 us a parallel launch, not 100-150); freed
      buffers kept in glibc's heap (no page faults on fresh activations, see
      _keep_freed_memory); direct stride-1 kernels without im2col for short
      contractions (see _direct_conv): 0.30/-/0.54 and 0.83/0.85/0.77. LeNet-5 training
      step at batch 64: 19.9 ms (v4) -> 7.5 ms; PyTorch alone on the same machine 7-10.
  v6  (this) convolutions that the direct kernels do not take are lowered and multiplied
      inside one parallel loop: each thread im2cols a block of samples into its own
      buffer and calls a single-threaded BLAS GEMM on it (kernels._cpu_blas), so only
      one thread pool runs; im2col with unsigned indices (copy speed). ResNet-18 step at
      batch 64: 3.05 s -> 2.04 s (PyTorch alone 1.8-2.2 s); 2-D products from 2^22
      multiply-adds are split over the same threads.
  v7  (this) products up to 2^18 multiply-adds skip the BLAS thread switch (OpenBLAS
      keeps them on one thread anyway) and Numba's thread count is switched through the
      threading layer's C functions (num_threads / set_num_threads below): with the
      framework's own trimming (autograd, cross-entropy) the MLP step at batch 64 went
      from ~2.0 to ~1.4 ms.
  v8  (this) 3x3 stride-1 convolutions with many channels run Winograd's F(2x2, 3x3)
      (kernels.cpu_winograd: 2.25x fewer multiplications; all three passes), inside the
      same one-pool scheme as v6. On a 2-core Xeon, where PyTorch's oneDNN convolutions
      run faster than MKL's own GEMM and so beat any im2col, the ResNet-18 step's
      convolution kernels went from 1.77 s to 0.94 s (instrumented profile, batch 64).
      Where the GEMM is MKL's, the two gradients of small stride-1 convolutions take the
      blocked lowering instead of the direct kernels (_GRADIENTS_BLOCKED): LeNet-5 step
      -12% at batch 64, -16% at 256.
  v9  (this) on planes of 16 or more 4x4 tiles, Winograd's F(4x4, 3x3)
      (kernels.cpu_winograd4: 4x fewer multiplications, 36 GEMMs): ResNet's 64@32 and
      128@16 layers 25-35% faster a pass than with F(2x2); the ResNet-18 step at batch
      64 -8% (one process alternating the two, 8 pairs), 1.01x -> 1.08x PyTorch.
All kernels are compiled with ``cache=True`` so the JIT cost is paid once per machine.
"""
from __future__ import annotations

import functools
import math
import os
import threading

import numba
import numpy as np
from numba import njit, prange


def _load_tbb():
    """Make TBB loadable by Numba. The ``tbb`` wheel puts ``libtbb.so.12`` in the
    environment's ``lib/``, which the dynamic loader does not search, so Numba's TBB
    layer fails to load from a venv; loading the library once by path (RTLD_GLOBAL)
    lets Numba's extension bind to it by soname. Returns True when TBB is usable."""
    import ctypes
    import glob
    import sys

    names = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}
    name = names.get(sys.platform)
    if name is None:
        return False
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        for path in glob.glob(os.path.join(prefix, "lib*", name)) + glob.glob(
                os.path.join(prefix, "Library", "bin", name)):
            try:
                ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
            except OSError:
                continue
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401  (needs libtbb at import)
        from numba.np.ufunc.parallel import _check_tbb_version_compatible

        # an old libtbb would only be refused at the first parallel launch, too late
        # to fall back; ask now (Numba raises ImportError for a too-old TBB)
        _check_tbb_version_compatible()
    except (ImportError, OSError):
        return False
    return True


def _choose_threading_layer():
    """Pick the thread pool our parallel loops run on, unless the user chose one.

    Measured on the 2-core dev machine (an empty ``prange`` launch; LeNet-5 conv1
    forward at batch 64):
    * TBB: 2 us a launch; conv1 1.0 ms. Its workers spin briefly, then yield and sleep,
      so they do not fight OpenBLAS's threads. Our choice when the ``tbb`` package is
      installed (it is a dependency on x86-64 Linux).
    * workqueue (plain pthreads that sleep when idle): 100-150 us a launch -- a
      condition-variable wake-up per parallel loop, a tax of a millisecond and more on
      every LeNet-5 step; conv1 2.1 ms. The fallback.
    * OpenMP, Numba's own default: 3 us a launch, but its threads spin after every loop
      and steal the cores OpenBLAS needs next (a LeNet-5 step took 52 ms instead of 20).
      OMP_WAIT_POLICY=passive fixes that but costs 75 us a launch, and it is a
      process-wide variable that also changes every other OpenMP user (PyTorch) and
      every child process, so we do not set it.
    Numba's config is read by Numba alone, at its first parallel launch."""
    if "NUMBA_THREADING_LAYER" in os.environ or numba.config.THREADING_LAYER != "default":
        return f"user's choice ({numba.config.THREADING_LAYER})"
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", False):  # a parallel loop already ran
        return "already launched by another user of Numba"
    numba.config.THREADING_LAYER = "tbb" if _load_tbb() else "workqueue"
    return f"{numba.config.THREADING_LAYER} (set by kernels.cpu)"


# what kernels.cpu did to its own process's thread pools (reported by the benchmarks)
THREAD_POLICY = _choose_threading_layer()

# glibc's malloc, as we set it: buffers up to this size come from the heap, and the heap
# keeps up to _KEEP_FREED_BYTES of freed memory instead of giving it back to the kernel
_HEAP_MAX_BLOCK = 64 * 2 ** 20
_KEEP_FREED_BYTES = 256 * 2 ** 20


def _keep_freed_memory():
    """Let glibc's malloc reuse freed activation-sized buffers instead of unmapping them.

    Out of the box glibc serves blocks over 128 KiB (a threshold it raises as big blocks
    are freed) with fresh mmaps and trims the heap top back to the kernel, so nearly every
    training step's activations and gradients start as fresh pages, and each first touch
    is a page fault: 2-4 us a 4 KiB page on the dev VM, 0.6 ms to touch a fresh 1 MiB
    array. In a LeNet-5 step at batch 64 that was a third of the time (12-13 ms -> 8.4
    ms with this). A fixed mmap threshold of 64 MiB and a trim threshold of 256 MiB keep
    those buffers in the process. This is process-wide but only changes when memory goes
    back to the system; set TINYGRAD_K_MALLOC=system (or glibc's own MALLOC_*_ variables)
    to keep glibc's defaults."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return "system (not Linux)"
    if os.environ.get("TINYGRAD_K_MALLOC", "") == "system":
        return "system (TINYGRAD_K_MALLOC=system)"
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return "system (the user's MALLOC_* variables)"
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
        ok = (libc.mallopt(m_mmap_threshold, _HEAP_MAX_BLOCK) == 1
              and libc.mallopt(m_trim_threshold, _KEEP_FREED_BYTES) == 1)
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return "system (no glibc mallopt)"
    if not ok:
        return "system (mallopt refused)"
    return (f"glibc heap up to {_HEAP_MAX_BLOCK >> 20} MiB blocks, keeps "
            f"{_KEEP_FREED_BYTES >> 20} MiB freed (set by kernels.cpu)")


MALLOC_POLICY = _keep_freed_memory()

from . import _cpu_blas, cpu_winograd, cpu_winograd4
from ._cpu_blas import NO_TRANS, TRANS, gemm
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
_SMALL_GEMM_MACS = 2 ** 25


def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it BLAS keeps its default thread count
        return None
    # (the sequential MKL that _cpu_blas may have loaded for its GEMM has no threads)
    ours = _cpu_blas.GEMM_LIBRARY if _cpu_blas.GEMM_LIBRARY != _cpu_blas.LIBRARY else None
    libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"
            and not (ours and os.path.realpath(lib.filepath) == os.path.realpath(ours))]
    return libs or None


_BLAS = _blas_controller()


_THREAD_COUNT = None


def _thread_count_functions():
    """(get, set) of Numba's thread count for the calling thread. numba.get/set_num_threads
    start the pool's check under a multiprocessing lock on every call (4 us a switch on the
    dev VM, a dozen switches a small training step); once the pool runs, the threading
    layer's own two C functions, which Numba keeps after starting it, do the same in
    under 1 us. Where they are not found (another Numba), Numba's public pair."""
    global _THREAD_COUNT
    if _THREAD_COUNT is None:
        from numba.np.ufunc import parallel as _parallel

        pair = (numba.get_num_threads, numba.set_num_threads)
        try:
            _parallel._launch_threads()
            get, put = _parallel._get_num_threads, _parallel._set_num_threads
            if callable(get) and callable(put) and get() == numba.get_num_threads():
                pair = (get, put)
        except Exception:  # noqa: BLE001 - a private API: anything wrong means "not there"
            pass
        _THREAD_COUNT = pair
    return _THREAD_COUNT


def num_threads():
    """Numba's thread count for the calling thread (numba.get_num_threads, cheaply)."""
    return _thread_count_functions()[0]()


def set_num_threads(n):
    """numba.set_num_threads(n) for the calling thread, cheaply (1 <= n <= the pool)."""
    _thread_count_functions()[1](n)


# OpenBLAS itself runs a GEMM of at most this many multiply-adds on the calling thread,
# whatever its thread count (interface/gemm.c: SMP_THRESHOLD_MIN 65536 times
# GEMM_MULTITHREAD_THRESHOLD 4), so such products skip the thread switch: it and the
# context managers cost 10 us, more than a 64x128x10 product.
_BLAS_SERIAL_MACS = 65536 * 4
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _set_blas_threads(threads):
    for lib, n in zip(_BLAS, threads):
        lib.set_num_threads(n)


def _one_thread_matmul(a, b):
    """a @ b with the BLAS on one thread (see _SMALL_GEMM_MACS)."""
    if _cpu_blas.AVAILABLE and _BLAS_IS_OURS:  # one BLAS, switched in 1 us
        with _cpu_blas.one_thread():
            return np.matmul(a, b)
    saved = [lib.num_threads for lib in _BLAS]
    _set_blas_threads([1] * len(saved))
    try:
        return np.matmul(a, b)
    finally:
        _set_blas_threads(saved)


_BLAS_IS_OURS = _BLAS is not None and [lib.filepath for lib in _BLAS] == [_cpu_blas.LIBRARY]


def matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) through BLAS, for two 2-D or two equal-batch 3-D float arrays of one
    dtype. Transposed operands are passed as transposed views, which BLAS reads with its
    own transpose flag: no copy is made. 2-D products of at least _SPLIT_GEMM_MACS
    multiply-adds run on our own thread pool, a single-threaded GEMM per band of the
    output (see _split_gemm); the rest through NumPy, on one BLAS thread below
    _SMALL_GEMM_MACS."""
    m, k, n = check_matmul(a, b, trans_a, trans_b)
    if a.dtype != b.dtype or a.dtype not in _FLOATS:
        check_float("matmul", a, b)
    a = a.swapaxes(-1, -2) if trans_a else a
    b = b.swapaxes(-1, -2) if trans_b else b
    macs = m * k * n * (a.shape[0] if a.ndim == 3 else 1)
    if macs <= _BLAS_SERIAL_MACS or _BLAS is None:
        return np.matmul(a, b)
    if a.ndim == 2 and macs >= _SPLIT_GEMM_MACS and _cpu_blas.AVAILABLE:
        return _threaded_matmul(a, b)
    if macs >= _SMALL_GEMM_MACS:
        return np.matmul(a, b)
    return _one_thread_matmul(a, b)


# Products from this many multiply-adds are split over our threads; smaller ones go to
# NumPy on one BLAS thread (as before: NumPy also picks gemv/dot for skinny shapes). A
# split must wake a pool thread, tens of microseconds once it has gone to sleep (2 cores:
# 64x256x128, 2^21 multiply-adds, 61 us on one thread, 74 split in two; 64x784x256
# 333 -> 261 us).
_SPLIT_GEMM_MACS = 2 ** 22


@njit(parallel=True, cache=True)
def _split_gemm(ta, tb, m, n, k, a, lda, b, ldb, c, parts, by_rows):
    """c (m, n) = op(A) @ op(B), A and B given as C-contiguous arrays read with the
    transpose flags, as ``parts`` single-threaded GEMMs in parallel, each on a band of
    c's rows (by_rows) or columns; band edges fall on multiples of 8 so each slice starts
    on a vector boundary. (Arrays, not addresses, cross the call: Numba types an array
    argument faster than Python makes ``.ctypes.data``.)"""
    size = m if by_rows else n
    sz = c.itemsize
    for t in prange(parts):
        lo = min(size, (t * size // parts + 7) // 8 * 8) if t else 0
        hi = size if t == parts - 1 else min(size, ((t + 1) * size // parts + 7) // 8 * 8)
        if hi <= lo:
            continue
        if by_rows:
            a_off = lo * lda if ta == NO_TRANS else lo
            gemm(sz, ta, tb, hi - lo, n, k, a.ctypes.data + a_off * sz, lda, b.ctypes.data,
                 ldb, 0.0, c.ctypes.data + lo * n * sz, n)
        else:
            b_off = lo if tb == NO_TRANS else lo * ldb
            gemm(sz, ta, tb, m, hi - lo, k, a.ctypes.data, lda, b.ctypes.data + b_off * sz,
                 ldb, 0.0, c.ctypes.data + lo * sz, n)


def _blas_operand(a):
    """(C-contiguous array, transpose flag, leading dimension) for a 2-D operand: a
    C-contiguous array as it is, an F-contiguous one (a transposed view) as its
    transpose read with BLAS's transpose flag, anything else copied."""
    if a.flags.c_contiguous:
        return a, NO_TRANS, max(1, a.shape[1])
    if a.flags.f_contiguous:
        return a.T, TRANS, max(1, a.shape[0])
    a = np.ascontiguousarray(a)
    return a, NO_TRANS, max(1, a.shape[1])


def _split_by_rows(m, k, n):
    """Whether _threaded_matmul splits an (M, K) @ (K, N) product into bands of rows
    (else of columns): rows, but for a long contraction (K > max(M, N)) with N >= M.

    Measured on an Intel Xeon (AVX-512, OpenBLAS's SkylakeX kernels, 2 threads), ms for
    rows / columns: the MLP's 256x784x256 (x @ W^T) 0.516 / 0.485 and 64x784x256 0.333 /
    0.242; its weight gradients 256x256x784 0.412 / 0.435 and 256x64x784 0.134 / 0.276;
    LeNet-5's 256x120x400 0.108 / 0.162, 256x400x120 0.136 / 0.195. The rule before
    (rows where M >= N) took the slower split in four of these; the MLP step at batch
    256 ran 7% faster with this one and at 64 6% (the two variants in processes
    alternating turn by turn, medians of 16 turns)."""
    return not (k > max(m, n) and n >= m)


def _threaded_matmul(a, b):
    """a (M, K) @ b (K, N) for float operands of one dtype, at least _SPLIT_GEMM_MACS."""
    (m, k), n = a.shape, b.shape[1]
    a, ta, lda = _blas_operand(a)
    b, tb, ldb = _blas_operand(b)
    c = np.empty((m, n), dtype=a.dtype)
    with _cpu_blas.one_thread():
        _split_gemm(ta, tb, m, n, k, a, lda, b, ldb, c, num_threads(), _split_by_rows(m, k, n))
    return c


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


# -- im2col + GEMM inside our own parallel loop ("blocked") --------------------------------
# Each thread takes a contiguous block of samples and, a few samples at a time, lowers
# them into its own column buffer and multiplies with a single-threaded BLAS GEMM
# (kernels._cpu_blas): one thread pool instead of Numba's and OpenBLAS's side by side,
# and the columns are still in the thread's cache when the GEMM reads them. Samples are
# folded nb at a time into the GEMM's long dimension (cols (K, nb*L)) so that deep
# layers with few output pixels still make wide products (L = 16 at ResNet 512@4).
_BLOCK_MIN_COLUMNS = 256  # nb = ceil(this / L) samples per GEMM
_BLOCK_MAX_BYTES = 8 * 2 ** 20  # ... while a thread's column buffer stays under this


@njit(cache=True)
def _valid_cols(off, stride, size, out):
    """[j0, j1): the output columns j with 0 <= j*stride + off < size."""
    j0 = 0 if off >= 0 else (-off + stride - 1) // stride
    j1 = 0 if size - 1 - off < 0 else min(out, (size - 1 - off) // stride + 1)
    return j0, max(j0, j1)


@njit(cache=True, inline="always")
def _u(i):
    """An index Numba need not wrap around (it is known to be >= 0)."""
    return np.uint64(i)


@njit(cache=True)
def _im2col_block(x, n0, nb, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols):
    """cols[(c*kh + p)*kw + q, b*L + i*ow + j] = xpad[n0 + b, c, i*sh + p*dh, j*sw + q*dw]
    for b < nb (L = oh*ow; x and cols C-contiguous, rows of cols at least nb*L long).

    Flat index arithmetic throughout, with unsigned indices (_u): a view per row (a
    slice, a reshape) costs more than copying a short row, and a signed index makes
    Numba wrap negative values around, which turns each copy loop into a gather (5x
    slower on a long copy).
    For stride 1 with an output as wide as the input ('same' width) input and column
    rows have one length, so a tap's valid rows are one contiguous span of the input
    plane: one long copy per (tap, sample), then the columns that fall in the padding
    are zeroed (the copy wrapped them in from the neighbouring row)."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    L, hw, ld = oh * ow, h_ * w_, cols.shape[1]
    xf = x.reshape(x.size)
    cf = cols.reshape(cols.size)
    same = sh == 1 and sw == 1 and w_ == ow
    for c in range(c_):
        for p in range(kh):
            for q in range(kw):
                r0 = ((c * kh + p) * kw + q) * ld  # start of this tap's row in cf
                off = q * dw - pw
                j0, j1 = _valid_cols(off, sw, w_, ow)
                for b in range(nb):
                    plane = ((n0 + b) * c_ + c) * hw
                    dst0 = r0 + b * L
                    if same:
                        i_lo = min(oh, max(0, ph - p * dh))
                        i_hi = max(i_lo, min(oh, h_ + ph - p * dh))
                        # cf[k] holds xf[start + k]; output (i, j) is at k = dst0 + i*ow + j
                        start = plane + (p * dh - ph) * w_ + off - dst0
                        lo, hi = dst0 + i_lo * ow, dst0 + i_hi * ow
                        # clip the copy to the plane; what is clipped is padding
                        lo_c = max(lo, plane - start)
                        hi_c = min(hi, plane + hw - start)
                        for k in range(dst0, lo_c):
                            cf[_u(k)] = 0
                        for k in range(lo_c, hi_c):
                            cf[_u(k)] = xf[_u(start + k)]
                        for k in range(max(hi_c, lo_c), dst0 + L):
                            cf[_u(k)] = 0
                        if j0 > 0 or j1 < ow:
                            for i in range(i_lo, i_hi):
                                for j in range(j0):
                                    cf[_u(dst0 + i * ow + j)] = 0
                                for j in range(j1, ow):
                                    cf[_u(dst0 + i * ow + j)] = 0
                        continue
                    for i in range(oh):
                        d = dst0 + i * ow
                        hh = i * sh + p * dh - ph
                        if hh < 0 or hh >= h_:
                            for j in range(ow):
                                cf[_u(d + j)] = 0
                            continue
                        src = plane + hh * w_ + off
                        for j in range(j0):
                            cf[_u(d + j)] = 0
                        if sw == 1:
                            for j in range(j0, j1):
                                cf[_u(d + j)] = xf[_u(src + j)]
                        else:
                            for j in range(j0, j1):
                                cf[_u(d + j)] = xf[_u(src + j * sw)]
                        for j in range(j1, ow):
                            cf[_u(d + j)] = 0


@njit(cache=True)
def _col2im_block(cols, n0, nb, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx):
    """dx[n0 + b, c, i*sh + p*dh - ph, j*sw + q*dw - pw] += cols[(c*kh + p)*kw + q, b*L + i*ow + j]
    (the adjoint of _im2col_block; dx must hold zeros or a partial sum; both
    C-contiguous, flat indices as there)."""
    c_, h_, w_ = dx.shape[1], dx.shape[2], dx.shape[3]
    L, hw, ld = oh * ow, h_ * w_, cols.shape[1]
    xf = dx.reshape(dx.size)
    cf = cols.reshape(cols.size)
    for b in range(nb):
        for c in range(c_):
            plane = ((n0 + b) * c_ + c) * hw
            for p in range(kh):
                for q in range(kw):
                    r0 = ((c * kh + p) * kw + q) * ld + b * L
                    off = q * dw - pw
                    j0, j1 = _valid_cols(off, sw, w_, ow)
                    for i in range(oh):
                        hh = i * sh + p * dh - ph
                        if hh < 0 or hh >= h_:
                            continue
                        d = r0 + i * ow
                        dst = plane + hh * w_ + off
                        if sw == 1:
                            for j in range(j0, j1):
                                xf[_u(dst + j)] += cf[_u(d + j)]
                        else:
                            for j in range(j0, j1):
                                xf[_u(dst + j * sw)] += cf[_u(d + j)]


@njit(cache=True)
def _gather_block(a, n0, nb, out):
    """out[o, b*L + l] = a[n0 + b, o, l]: a block of samples as one (O, nb*L) matrix."""
    L = a.shape[2]
    for b in range(nb):
        for o in range(a.shape[1]):
            out[o, b * L:(b + 1) * L] = a[n0 + b, o]


@njit(cache=True)
def _scatter_block(src, n0, nb, a):
    """a[n0 + b, o, l] = src[o, b*L + l] (the inverse of _gather_block)."""
    L = a.shape[2]
    for b in range(nb):
        for o in range(a.shape[1]):
            a[n0 + b, o] = src[o, b * L:(b + 1) * L]


@njit(cache=True)
def _sample_block(a, s, b, nb, tmp):
    """(address, leading dimension) of samples s..s+b of a (N, O, L) as one (O, b*L)
    matrix: a[s] itself when blocks are single samples, else gathered into tmp."""
    if nb == 1:
        return a.ctypes.data + s * a.shape[1] * a.shape[2] * a.itemsize, a.shape[2]
    _gather_block(a, s, b, tmp)
    return tmp.ctypes.data, tmp.shape[1]


@njit(parallel=True, cache=True)
def _blocked_forward(x, w2, groups, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, nb, cols_all,
                     tmp_all, y):
    """y (N, O, L) = per group W2[g] (O/G, Kg) @ cols (Kg, L) for every sample; w2 (O, Kg).
    Thread t of nt takes samples [t*N/nt, (t+1)*N/nt), nb at a time, with the scratch
    cols_all[t] (K, nb*L) and tmp_all[t] (O, nb*L) that the caller allocates."""
    n_, o_, kg = x.shape[0], w2.shape[0], w2.shape[1]
    og, L, sz = o_ // groups, oh * ow, x.itemsize
    nt = cols_all.shape[0]
    for t in prange(nt):
        cols, tmp = cols_all[t], tmp_all[t]
        for s in range(t * n_ // nt, (t + 1) * n_ // nt, nb):
            b = min(nb, (t + 1) * n_ // nt - s)
            _im2col_block(x, s, b, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols)
            for g in range(groups):
                if nb == 1:
                    out, ldc = y.ctypes.data + ((s * o_ + g * og) * L) * sz, L
                else:
                    out, ldc = tmp.ctypes.data + (g * og * nb * L) * sz, nb * L
                gemm(sz, NO_TRANS, NO_TRANS, og, b * L, kg, w2.ctypes.data + g * og * kg * sz,
                     kg, cols.ctypes.data + g * kg * nb * L * sz, nb * L, 0.0, out, ldc)
            if nb > 1:
                _scatter_block(tmp, s, b, y)


@njit(parallel=True, cache=True)
def _blocked_backward_input(dy, w2, groups, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, nb,
                            cols_all, tmp_all, dx):
    """dx = col2im(W2[g]^T (Kg, O/G) @ dy[n, g] (O/G, L)) per sample; dy (N, O, L)."""
    n_, o_, kg = dy.shape[0], w2.shape[0], w2.shape[1]
    og, L, sz = o_ // groups, oh * ow, dy.itemsize
    nt = cols_all.shape[0]
    for t in prange(nt):
        cols, tmp = cols_all[t], tmp_all[t]
        lo, hi = t * n_ // nt, (t + 1) * n_ // nt
        dx[lo:hi] = 0
        for s in range(lo, hi, nb):
            b = min(nb, hi - s)
            src, ldb = _sample_block(dy, s, b, nb, tmp)
            for g in range(groups):
                gemm(sz, TRANS, NO_TRANS, kg, b * L, og, w2.ctypes.data + g * og * kg * sz, kg,
                     src + g * og * ldb * sz, ldb, 0.0,
                     cols.ctypes.data + g * kg * nb * L * sz, nb * L)
            _col2im_block(cols, s, b, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx)


@njit(parallel=True, cache=True)
def _blocked_backward_weight(dy, x, groups, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, nb,
                             cols_all, tmp_all, part):
    """part[t] (O, Kg) = sum over thread t's samples of dy[n, g] (O/G, L) @ cols[g]^T."""
    n_, o_, kg = dy.shape[0], part.shape[1], part.shape[2]
    og, L, sz = o_ // groups, oh * ow, dy.itemsize
    nt = cols_all.shape[0]
    for t in prange(nt):
        cols, tmp = cols_all[t], tmp_all[t]
        acc = part[t]
        lo, hi = t * n_ // nt, (t + 1) * n_ // nt
        for s in range(lo, hi, nb):
            b = min(nb, hi - s)
            _im2col_block(x, s, b, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols)
            src, lda = _sample_block(dy, s, b, nb, tmp)
            for g in range(groups):
                gemm(sz, NO_TRANS, TRANS, og, kg, b * L, src + g * og * lda * sz, lda,
                     cols.ctypes.data + g * kg * nb * L * sz, nb * L, 1.0,
                     acc.ctypes.data + g * og * kg * sz, kg)


def _blocked_plan(n, k, o, L, dtype):
    """(nb, cols, tmp) for the blocked lowering: samples per GEMM, and each thread's
    column buffer (nt, K, nb*L) and sample-block buffer (nt, O, nb*L; empty for nb = 1)."""
    dtype = np.dtype(dtype)
    nb = max(1, -(-_BLOCK_MIN_COLUMNS // L))
    nb = max(1, min(nb, _BLOCK_MAX_BYTES // max(1, k * L * dtype.itemsize), n))
    nt = max(1, min(num_threads(), n))
    cols = np.empty((nt, k, nb * L), dtype=dtype)
    tmp = np.empty((nt, o if nb > 1 else 0, nb * L), dtype=dtype)
    return nb, cols, tmp


def _use_blocked(version, n):
    """"blocked" wherever BLAS can be called from Numba; on "auto" also only when every
    thread gets a sample (below that, OpenBLAS's own threads split the one product)."""
    if not _cpu_blas.AVAILABLE:
        return False
    return version == "blocked" or (version == "auto" and n >= num_threads())


_WORKSPACE = threading.local()


def _workspace(shape, dtype):
    """A scratch array of ``shape`` carved from one per-thread buffer that only grows
    (to at most about _COLS_BUDGET_BYTES). Fresh np.empty buffers this large come from
    mmap and are page-faulted in on every call: that cost ResNet 64@32's forward a
    third of its time (60 vs 42 ms, 2 cores). Valid until the next _workspace call."""
    size = math.prod(shape) * np.dtype(dtype).itemsize
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
    w (O,C/G,KH,KW). Stride 1 with a short contraction (C/G*KH*KW <= _DIRECT_MAX_TAPS)
    runs the direct kernel, 3x3 stride 1 with many channels Winograd's F(4x4, 3x3) on
    large planes (kernels.cpu_winograd4) or F(2x2, 3x3) (kernels.cpu_winograd), the rest
    im2col + BLAS (each runnable by name: ``VERSIONS["conv2d_forward"]``)."""
    return _conv2d_forward(x, w, stride, padding, dilation, groups, "auto")


def _conv2d_forward(x, w, stride, padding, dilation, groups, version):
    """im2col form: with the rows of group g a contiguous block of Kg = C/G*KH*KW,
    y[n, g] = W2[g] (O/G, Kg) @ cols[n, g] (Kg, OH*OW), one batched GEMM over (n, g)."""
    check_float("conv2d_forward", x, w)
    geo = as_conv_geometry(stride, padding, dilation, groups, w.shape, "conv2d_forward")
    n, o, oh, ow = geo.output_shape(x.shape, w.shape, "conv2d_forward")
    version = _unless_winograd(version, geo, w.shape)
    if _use_direct(version, geo, w.shape):
        return _direct_forward(x, w, geo, np.empty((n, o, oh, ow), dtype=x.dtype))
    if _use_winograd(version, geo, w.shape, n):
        with _cpu_blas.one_thread():
            return _winograd(version, oh, ow).forward(x, w, *geo.padding, num_threads())
    if _use_blocked(version, n):
        kg = math.prod(w.shape[1:])
        nb, cols, tmp = _blocked_plan(n, kg * geo.groups, o, oh * ow, x.dtype)
        y = np.empty((n, o, oh * ow), dtype=x.dtype)
        with _cpu_blas.one_thread():
            _blocked_forward(np.ascontiguousarray(x), np.ascontiguousarray(w).reshape(o, kg),
                             geo.groups, *_lowering_args(geo), oh, ow, nb, cols, tmp, y)
        return y.reshape(n, o, oh, ow)
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


def _use_direct(version, geo, w_shape):
    """The direct kernels when asked for ("direct": wherever the stride is 1) or, on
    "auto", for stride 1 and a short contraction; im2col otherwise."""
    if version == "direct":
        return geo.stride == (1, 1)
    return version == "auto" and _direct_ok(geo, w_shape)


# The direct kernels' bounds (_DIRECT_MAX_TAPS, _DIRECT_MAX_OUT) were measured against
# im2col + OpenBLAS. With MKL's sequential GEMM (Intel CPUs, see _cpu_blas) the blocked
# lowering computes the two gradients faster than the direct kernels; the forward runs
# even. Training steps on a 2-core Xeon, one process alternating the two routings step
# by step (60 pairs): LeNet-5 -16% at batch 256 and -12% at 64 with both gradients
# blocked (input gradient alone -11% / -7%), CIFAR LeNet -7% / -3%.
_GRADIENTS_BLOCKED = (_cpu_blas.GEMM_NAME or "").startswith("mkl")


def _use_direct_gradient(version, geo, w_shape, n):
    """_use_direct for the two gradients: on "auto", blocked instead wherever it runs
    (every thread gets a sample) and the GEMM is MKL's."""
    if version == "auto" and _GRADIENTS_BLOCKED and _use_blocked("auto", n):
        return False
    return _use_direct(version, geo, w_shape)


# "auto" takes Winograd's F(2x2, 3x3) (kernels.cpu_winograd) for 3x3, stride-1,
# undilated, ungrouped convolutions that the direct kernels do not take, where every
# thread gets a sample and C*O >= _WINOGRAD_MIN_CO * (C + O): the transforms cost in
# proportion to C + O per tile, the products it saves to C*O. Measured on a 2-core Xeon,
# batch 64, forward / input gradient / filter gradient in ms, im2col + MKL -> Winograd:
# ResNet 64@32 28/29/33 -> 23/23/29, 128@16 29/30/33 -> 19/20/22, 256@8 29/32/32 ->
# 18/20/23, 512@4 28/42/42 -> 24/27/29; but 3->64@32 (ResNet's stem) 2.5/2.2/3.0 ->
# 8.3/9.4/11.9, 16->64@32 9/11/14 -> 13/14/14, and 32->32@32 the same either way.
_WINOGRAD_MIN_CO = 24
def _winograd_ok(geo, w_shape):
    """Whether cpu_winograd computes this convolution (padding up to 2: the input
    gradient pads dy by 2 - p)."""
    return (_cpu_blas.AVAILABLE and tuple(w_shape[2:]) == (3, 3) and geo.stride == (1, 1)
            and geo.dilation == (1, 1) and geo.groups == 1 and not any(geo.padding_extra)
            and max(geo.padding) <= 2)


def _use_winograd(version, geo, w_shape, n):
    """Winograd when asked for ("winograd", "winograd4": wherever it applies) or on "auto"
    wherever it applies, each thread gets a sample and the channels are many (see above;
    _winograd then picks the tile size)."""
    if not _winograd_ok(geo, w_shape):
        return False
    c, o = w_shape[1], w_shape[0]
    return version in _WINOGRADS or (version == "auto" and n >= num_threads()
                                     and c * o >= _WINOGRAD_MIN_CO * (c + o))


def _unless_winograd(version, geo, w_shape):
    """"winograd" or "winograd4" where Winograd does not apply runs what "auto" would."""
    return "auto" if version in _WINOGRADS and not _winograd_ok(geo, w_shape) else version


# F(4x4, 3x3) (kernels.cpu_winograd4: 4x fewer multiplications, 36 GEMMs) where the plane
# a pass computes holds at least this many of its 4x4 tiles, F(2x2, 3x3) below: with few
# tiles a sample its GEMMs get few columns and its 36 filter-gradient products each
# rewrite the whole (O, C) sum. Measured on a 2-core Xeon, batch 64, forward / input
# gradient / filter gradient in ms, F(2x2) -> F(4x4): ResNet 64@32 16.9/16.8/20.4 ->
# 12.5/12.2/13.5, 128@16 13.1/13.2/14.4 -> 9.5/10.0/10.7; but 256@8 12.7/12.8/13.7 ->
# 11.3/12.4/17.1 and 512@4 15.0/15.9/21.7 -> 19.0/24.7/38.2.
_WINOGRAD4_MIN_TILES = 16
_WINOGRADS = ("winograd", "winograd4")


def _winograd(version, h, w):
    """The Winograd module for a pass whose output plane is h x w: cpu_winograd4 when asked
    for ("winograd4") or on "auto" with at least _WINOGRAD4_MIN_TILES tiles of 4x4,
    cpu_winograd (F(2x2, 3x3)) otherwise."""
    if version == "winograd4" or (version == "auto"
                                  and -(-h // 4) * -(-w // 4) >= _WINOGRAD4_MIN_TILES):
        return cpu_winograd4
    return cpu_winograd


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1):
    """dx (N,C,H,W): the direct kernel's full correlation for stride 1 and short
    contractions, Winograd's (F(4x4) or F(2x2), as the forward pass) for 3x3 stride 1
    with many channels (the same correlation with flipped filters), else
    col2im(W2[g]^T @ dy[n, g]), the adjoint of the im2col lowering."""
    return _conv2d_backward_input(dy, w, x_shape, stride, padding, dilation, groups, "auto")


def _conv2d_backward_input(dy, w, x_shape, stride, padding, dilation, groups, version):
    check_float("conv2d_backward_input", dy, w)
    geo = as_conv_geometry(stride, padding, dilation, groups, w.shape, "conv2d_backward_input")
    out = geo.output_shape(x_shape, w.shape, "conv2d_backward_input")
    check_dy("conv2d_backward_input", dy, out)
    version = _unless_winograd(version, geo, w.shape)
    n, o, oh, ow = out
    if _use_direct_gradient(version, geo, w.shape, n):
        return _direct_backward_input(dy, w, geo, np.empty(tuple(x_shape), dtype=dy.dtype))
    if _use_winograd(version, geo, w.shape, n):
        with _cpu_blas.one_thread():
            return _winograd(version, *x_shape[2:]).backward_input(
                dy, w, tuple(x_shape), *geo.padding, num_threads())
    if _use_blocked(version, n):
        kg = math.prod(w.shape[1:])
        nb, cols, tmp = _blocked_plan(n, kg * geo.groups, o, oh * ow, dy.dtype)
        dx = np.empty(tuple(x_shape), dtype=dy.dtype)
        with _cpu_blas.one_thread():
            _blocked_backward_input(np.ascontiguousarray(dy).reshape(n, o, oh * ow),
                                    np.ascontiguousarray(w).reshape(o, kg), geo.groups,
                                    *_lowering_args(geo), oh, ow, nb, cols, tmp, dx)
        return dx
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


# -- direct convolution (stride 1): no im2col --------------------------------------------
# The "wide output" trick: with the input zero-padded to (Hp, Wp) and flattened, output
# pixel (i, j) of a stride-1 convolution sits at flat position k = i*Wp + j, and tap
# t = (c, p, q) reads the input at k + off[t], off[t] = c*Hp*Wp + p*dh*Wp + q*dw. So
#     y_wide[k] = sum_t w[o, t] * x_flat[k + off[t]]      (k < (OH-1)*Wp + OW)
# is one contiguous, vectorisable loop per tap; the columns j >= OW of each wide row are
# junk and never stored. This removes im2col's (C*KH*KW, OH*OW) buffer per sample, which
# dominated small-channel layers (LeNet-5 conv1 forward, batch 64, 2 cores: 0.56 ms vs
# 1.3 ms with im2col + BLAS). Taps go four at a time so each output element is loaded
# and stored once per four multiply-adds instead of once per one.
_FASTMATH = {"reassoc", "contract"}  # reassociation lets LLVM vectorise the dW reductions
# "auto" takes the direct kernels for stride 1 when the contraction C/G*KH*KW and the
# output channels per group are at most these: there im2col's copy costs more than the
# product, and BLAS gets thin matrices. Past them BLAS's speed wins (measured, 2 cores,
# batch 64: LeNet-5 conv2 (16 outputs, 150 taps) dW 0.79 ms direct vs 1.34 im2col;
# ResNet's first conv (64 outputs, 27 taps) dW 6.6 vs 5.1, its 64->64 3x3 layers: 576 taps)
_DIRECT_MAX_TAPS = 256
_DIRECT_MAX_OUT = 32


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _direct_conv(xf, w2, offs, og, cgs, wp, start, y):
    """y[n, o, i, j] = sum_t w2[o, t] * xf[n, g*cgs + start + off[t] + i*wp + j], g = o // og.

    xf (N, C*Hp*Wp) padded input, flat per sample; w2 (O, T); offs (T,); y (N, O, H', W').
    ``start`` shifts the window (the crop of conv2d_backward_input). Output channels go
    in pairs (of one group), so each input load feeds two multiply-adds."""
    n_, o_ = y.shape[0], y.shape[1]
    oh, ow = y.shape[2], y.shape[3]
    t_ = offs.shape[0]
    t4 = t_ - t_ % 4
    m = (oh - 1) * wp + ow
    groups = o_ // og
    pairs = (og + 1) // 2
    for job in prange(n_ * groups * pairs):
        n = job // (groups * pairs)
        g = job // pairs % groups
        oa = g * og + 2 * (job % pairs)
        ob = oa + 1 if oa + 1 < (g + 1) * og else oa  # odd og: the last one alone
        x = xf[n, g * cgs + start:]
        wa, wb = w2[oa], w2[ob]
        acc_a = np.zeros(m, dtype=y.dtype)
        acc_b = np.zeros(m, dtype=y.dtype)
        for t in range(0, t4, 4):
            a0, a1, a2, a3 = wa[t], wa[t + 1], wa[t + 2], wa[t + 3]
            b0, b1, b2, b3 = wb[t], wb[t + 1], wb[t + 2], wb[t + 3]
            x0, x1 = x[offs[t]:], x[offs[t + 1]:]
            x2, x3 = x[offs[t + 2]:], x[offs[t + 3]:]
            for k in range(m):
                v0, v1, v2, v3 = x0[k], x1[k], x2[k], x3[k]
                acc_a[k] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
                acc_b[k] += b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3
        for t in range(t4, t_):
            a0, b0 = wa[t], wb[t]
            x0 = x[offs[t]:]
            for k in range(m):
                acc_a[k] += a0 * x0[k]
                acc_b[k] += b0 * x0[k]
        ya, yb = y[n, oa], y[n, ob]
        for i in range(oh):
            ra, rb = acc_a[i * wp:], acc_b[i * wp:]
            for j in range(ow):
                ya[i, j] = ra[j]
                yb[i, j] = rb[j]


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _direct_conv_dw(xf, dyw, offs, og, cgs, m, part):
    """part[chunk, o, t] = sum over the chunk's samples n and k < m of
    dyw[n, o, k] * xf[n, g*cgs + off[t] + k]; dyw is dy in the wide layout (zeros in the
    junk columns), samples are dealt round-robin to the chunks, which run in parallel.
    Output channels in pairs and taps in fours: eight sums live in registers."""
    n_, o_ = dyw.shape[0], dyw.shape[1]
    t_ = offs.shape[0]
    t4 = t_ - t_ % 4
    chunks = part.shape[0]
    groups = o_ // og
    for ch in prange(chunks):
        acc = part[ch]
        for n in range(ch, n_, chunks):
            for g in range(groups):
                x = xf[n, g * cgs:]
                for oa in range(g * og, (g + 1) * og, 2):
                    ob = oa + 1 if oa + 1 < (g + 1) * og else oa  # odd og: last alone
                    da, db = dyw[n, oa], dyw[n, ob]
                    aa, ab = acc[oa], acc[ob]
                    for t in range(0, t4, 4):
                        x0, x1 = x[offs[t]:], x[offs[t + 1]:]
                        x2, x3 = x[offs[t + 2]:], x[offs[t + 3]:]
                        s0, s1, s2, s3 = aa[t], aa[t + 1], aa[t + 2], aa[t + 3]
                        r0, r1, r2, r3 = ab[t], ab[t + 1], ab[t + 2], ab[t + 3]
                        for k in range(m):
                            v0, v1, v2, v3 = x0[k], x1[k], x2[k], x3[k]
                            dak, dbk = da[k], db[k]
                            s0 += dak * v0
                            s1 += dak * v1
                            s2 += dak * v2
                            s3 += dak * v3
                            r0 += dbk * v0
                            r1 += dbk * v1
                            r2 += dbk * v2
                            r3 += dbk * v3
                        aa[t], aa[t + 1], aa[t + 2], aa[t + 3] = s0, s1, s2, s3
                        if ob != oa:
                            ab[t], ab[t + 1], ab[t + 2], ab[t + 3] = r0, r1, r2, r3
                    for t in range(t4, t_):
                        x0 = x[offs[t]:]
                        s0, r0 = aa[t], ab[t]
                        for k in range(m):
                            s0 += da[k] * x0[k]
                            r0 += db[k] * x0[k]
                        aa[t] = s0
                        if ob != oa:
                            ab[t] = r0


def _direct_ok(geo, w_shape):
    return (geo.stride == (1, 1) and math.prod(w_shape[1:]) <= _DIRECT_MAX_TAPS
            and w_shape[0] // geo.groups <= _DIRECT_MAX_OUT)


@functools.lru_cache(maxsize=256)
def _tap_offsets(cg, kh, kw, hp, wp, dh, dw):
    """off[(c*kh + p)*kw + q] = c*hp*wp + p*dh*wp + q*dw (int64, the weights' order).
    Cached, so shared: callers only read it (left writeable so that the Numba kernels
    keep one signature). The same few geometries come back every step, and building one
    cost about as much as a batch-1 LeNet convolution."""
    off = (np.arange(cg, dtype=np.int64)[:, None, None] * (hp * wp)
           + np.arange(kh, dtype=np.int64)[None, :, None] * (dh * wp)
           + np.arange(kw, dtype=np.int64)[None, None, :] * dw).reshape(-1)
    return off


def _pad_flat(x, top, bottom, left, right):
    """x (N, C, H, W) zero-padded to (N, C*Hp*Wp), contiguous (no copy when unpadded)."""
    n, c, h, w = x.shape
    if top == bottom == left == right == 0:
        return np.ascontiguousarray(x).reshape(n, c * h * w), h, w
    hp, wp = h + top + bottom, w + left + right
    xp = np.zeros((n, c, hp, wp), dtype=x.dtype)
    xp[:, :, top:top + h, left:left + w] = x
    return xp.reshape(n, c * hp * wp), hp, wp


def _direct_forward(x, w, geo, y):
    """y (N, O, OH, OW) of a stride-1 convolution through ``_direct_conv``."""
    (ph, pw), (eh, ew) = geo.padding, geo.padding_extra
    xf, hp, wp = _pad_flat(x, ph, ph + eh, pw, pw + ew)
    g = geo.groups
    o, cg, kh, kw = w.shape
    offs = _tap_offsets(cg, kh, kw, hp, wp, *geo.dilation)
    w2 = np.ascontiguousarray(w).reshape(o, cg * kh * kw)
    _direct_conv(xf, w2, offs, o // g, cg * hp * wp, wp, 0, y)
    return y


def _direct_backward_input(dy, w, geo, dx):
    """dx = the full correlation of dy with the flipped kernel, cropped by the padding:
    dx_pad[n, c, h, v] = sum_{o,p,q} dy_pad[n, o, h + (KH-1-p)*dh, v + (KW-1-q)*dw] w[o,c,p,q],
    i.e. a stride-1 convolution of dy (padded by the kernel span minus one) with
    wt[c, o, p, q] = w[o, c, KH-1-p, KW-1-q] (per group), then the crop (ph, pw)."""
    o, cg, kh, kw = w.shape
    g = geo.groups
    og = o // g
    (dh, dw), (ph, pw) = geo.dilation, geo.padding
    sh, sw = (kh - 1) * dh, (kw - 1) * dw
    dyf, hq, wq = _pad_flat(dy, sh, sh, sw, sw)
    wt = np.ascontiguousarray(w[:, :, ::-1, ::-1].reshape(g, og, cg, kh, kw)
                              .transpose(0, 2, 1, 3, 4)).reshape(g * cg, og * kh * kw)
    offs = _tap_offsets(og, kh, kw, hq, wq, dh, dw)
    _direct_conv(dyf, wt, offs, cg, og * hq * wq, wq, ph * wq + pw, dx)
    return dx


def _direct_backward_weight(dy, x, w_shape, geo):
    """dW[o, t] = sum_n sum_k dy_wide[n, o, k] x_flat[n, g*cgs + off[t] + k] (see above)."""
    n, o, oh, ow = dy.shape
    _, cg, kh, kw = w_shape
    g = geo.groups
    (ph, pw), (eh, ew) = geo.padding, geo.padding_extra
    xf, hp, wp = _pad_flat(x, ph, ph + eh, pw, pw + ew)
    dyw = np.zeros((n, o, oh, wp), dtype=dy.dtype)
    dyw[..., :ow] = dy
    offs = _tap_offsets(cg, kh, kw, hp, wp, *geo.dilation)
    part = np.zeros((max(1, min(n, num_threads())), o, cg * kh * kw), dtype=x.dtype)
    _direct_conv_dw(xf, dyw.reshape(n, o, oh * wp), offs, o // g, cg * hp * wp,
                    (oh - 1) * wp + ow, part)
    return part.sum(axis=0).reshape(tuple(w_shape))


_DW_LOWERINGS = ("auto", "direct", "winograd", "winograd4", "blocked", "fold_batch",
                 "batched", "per_sample")


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
    * stride 1 and C/G*KH*KW <= _DIRECT_MAX_TAPS: no lowering at all ("direct"), the
      sums run over the wide layout of the direct kernels.
    * 3x3, stride 1, many channels: Winograd's dual F(3x3, 2x2) ("winograd", see
      kernels.cpu_winograd.backward_weight), 16 GEMMs over the tiles, or on planes of
      16 tiles of 4x4 and more F(3x3, 4x4) ("winograd4", kernels.cpu_winograd4), 36.
    Each lowering is also runnable by name: ``VERSIONS["conv2d_backward_weight"]``
    ("direct" falls back to "auto" where the stride is not 1).
    """
    return _conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups, "auto")


def _conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation, groups, lowering):
    check_float("conv2d_backward_weight", dy, x)
    geo = as_conv_geometry(stride, padding, dilation, groups, w_shape, "conv2d_backward_weight")
    out = geo.output_shape(x.shape, w_shape, "conv2d_backward_weight")
    check_dy("conv2d_backward_weight", dy, out)
    lowering = _unless_winograd(lowering, geo, w_shape)
    n, o, oh, ow = out
    if lowering in ("auto", "direct") and _use_direct_gradient(lowering, geo, w_shape, n):
        return _direct_backward_weight(np.ascontiguousarray(dy), x, tuple(w_shape), geo)
    lowering = "auto" if lowering == "direct" else lowering
    if _use_winograd(lowering, geo, w_shape, n):
        with _cpu_blas.one_thread():
            return _winograd(lowering, oh, ow).backward_weight(dy, x, *geo.padding,
                                                              num_threads())
    if _use_blocked(lowering, n):
        kg = math.prod(w_shape[1:])
        nb, cols, tmp = _blocked_plan(n, kg * geo.groups, o, oh * ow, x.dtype)
        part = np.zeros((cols.shape[0], o, kg), dtype=x.dtype)
        with _cpu_blas.one_thread():
            _blocked_backward_weight(np.ascontiguousarray(dy).reshape(n, o, oh * ow),
                                     np.ascontiguousarray(x), geo.groups,
                                     *_lowering_args(geo), oh, ow, nb, cols, tmp, part)
        return (part[0] if len(part) == 1 else part.sum(axis=0)).reshape(tuple(w_shape))
    lowering = "auto" if lowering == "blocked" else lowering
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


def _conv_version(impl, version, input_grad=False):
    if input_grad:
        def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1):
            return impl(dy, w, x_shape, stride, padding, dilation, groups, version)
        fn = conv2d_backward_input
    else:
        def conv2d_forward(x, w, stride=1, padding=0, dilation=1, groups=1):
            return impl(x, w, stride, padding, dilation, groups, version)
        fn = conv2d_forward
    fn.__doc__ = f"{fn.__name__}, {version} kernels."
    return fn


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
# "direct": the im2col-free kernels wherever the stride is 1 (im2col elsewhere);
# "winograd": F(2x2, 3x3) wherever cpu_winograd applies (3x3, stride 1, ...; the
# "auto" choice elsewhere); "winograd4": F(4x4, 3x3) (cpu_winograd4) likewise;
# "blocked": im2col + single-threaded GEMM per thread block (where BLAS is reachable from
# Numba; im2col elsewhere); "im2col": im2col + OpenBLAS's threads, never the others
for _v in ("direct", "winograd", "winograd4", "blocked", "im2col"):
    VERSIONS["conv2d_forward"][_v] = _conv_version(_conv2d_forward, _v)
    VERSIONS["conv2d_backward_input"][_v] = _conv_version(_conv2d_backward_input, _v, True)
