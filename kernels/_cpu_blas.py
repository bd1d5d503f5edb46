"""BLAS's GEMM callable from inside Numba code, on one thread.

Why: im2col + BLAS on a small machine runs two thread pools, ours (Numba's parallel
loops) for the data movement and OpenBLAS's for the product, and each pool's threads
spin for a while after their work, slowing the other's (ResNet 64@32 forward, batch 64,
2 cores: im2col 13 ms + GEMM 33 ms alone, 60 ms one after the other). Calling a
single-threaded GEMM from our own parallel loop removes the second pool: each thread
lowers a block of samples and multiplies it while the block is still in its cache.

The GEMM is NumPy's own OpenBLAS (found through threadpoolctl), entered through its
64-bit-integer CBLAS symbols, ``[scipy_]cblas_{s,d}gemm64_``, which NumPy's PyPI wheels
ship. The addresses are registered with LLVM under fixed names and the kernels declare
them as external functions, so the compiled kernels stay cacheable on disk. Where no
such BLAS is found (another BLAS vendor, an LP64 build), ``AVAILABLE`` is False and
callers keep their NumPy path.

Callers must hold ``one_thread()`` while their kernel runs: several of our threads
call the GEMM at once, and each call must not start OpenBLAS's own threads.
"""
from __future__ import annotations

import ctypes

from numba import njit, types

__all__ = ["AVAILABLE", "LIBRARY", "gemm", "one_thread", "ROW_MAJOR", "NO_TRANS", "TRANS"]

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
_NAMES = ("tinygrad_k_cblas_sgemm64", "tinygrad_k_cblas_dgemm64")


def _find_openblas():
    """(controller, sgemm address, dgemm address) of a loaded ILP64 OpenBLAS, or None."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api != "blas" or lib.internal_api != "openblas":
            continue
        try:
            dll = ctypes.CDLL(lib.filepath)
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            fns = [getattr(dll, f"{prefix}cblas_{t}gemm64_", None) for t in "sd"]
            get, put = (getattr(dll, f"{prefix}openblas_{v}_num_threads64_", None)
                        for v in ("get", "set"))
            if all(fns) and get and put:
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                return lib, (get, put), *(ctypes.cast(f, ctypes.c_void_p).value for f in fns)
    return None


def _register():
    import numpy  # noqa: F401  (loads NumPy's BLAS, so threadpoolctl can see it)

    found = _find_openblas()
    if found is None:
        return None
    import llvmlite.binding as llb

    lib, threads, s_addr, d_addr = found
    llb.add_symbol(_NAMES[0], s_addr)
    llb.add_symbol(_NAMES[1], d_addr)
    return lib, threads


_FOUND = _register()
AVAILABLE = _FOUND is not None
LIBRARY = _FOUND[0].filepath if AVAILABLE else None
# openblas_get/set_num_threads, called directly: 1 us a switch, not threadpoolctl's 4
_get_threads, _set_threads = _FOUND[1] if AVAILABLE else (None, None)

# void cblas_?gemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
# with 64-bit integers; pointers are passed as addresses (intp), the same in the C ABI
_i32, _i64, _p = types.int32, types.int64, types.intp
_sgemm = types.ExternalFunction(_NAMES[0], types.void(
    _i32, _i32, _i32, _i64, _i64, _i64, types.float32, _p, _i64, _p, _i64, types.float32,
    _p, _i64))
_dgemm = types.ExternalFunction(_NAMES[1], types.void(
    _i32, _i32, _i32, _i64, _i64, _i64, types.float64, _p, _i64, _p, _i64, types.float64,
    _p, _i64))


@njit(cache=True)
def gemm(itemsize, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """C (m, n) = op(A) @ op(B) + beta * C, row-major, on the calling thread. a, b, c are
    addresses (``arr.ctypes.data`` plus an offset in bytes); float32 when ``itemsize``
    is 4, float64 otherwise."""
    if m == 0 or n == 0:
        return
    if itemsize == 4:
        _sgemm(ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)
    else:
        _dgemm(ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)


class _OneThread:
    """The context manager ``one_thread()`` returns (a class: a generator-based one costs
    2 us a use, and the small products of a training step use it a dozen times)."""

    __slots__ = ("saved",)

    def __enter__(self):
        self.saved = saved = _get_threads() if AVAILABLE else 1
        if saved != 1:
            _set_threads(1)
        return self

    def __exit__(self, *exc):
        if self.saved != 1:
            _set_threads(self.saved)
        return False


def one_thread():
    """OpenBLAS on one thread (the calling one) for the duration of a ``with`` block."""
    return _OneThread()
