"""BLAS's GEMM callable from inside Numba code, on one thread.

Why: im2col + BLAS on a small machine runs two thread pools, ours (Numba's parallel
loops) for the data movement and OpenBLAS's for the product, and each pool's threads
spin for a while after their work, slowing the other's (ResNet 64@32 forward, batch 64,
2 cores: im2col 13 ms + GEMM 33 ms alone, 60 ms one after the other). Calling a
single-threaded GEMM from our own parallel loop removes the second pool: each thread
lowers a block of samples and multiplies it while the block is still in its cache.

The GEMM is NumPy's own OpenBLAS (found through threadpoolctl), entered through its
64-bit-integer CBLAS symbols, ``[scipy_]cblas_{s,d}gemm64_``, which NumPy's PyPI wheels
ship -- or, on Intel CPUs where the ``mkl`` wheel is installed (the ``mkl`` extra, which
scripts/setup.sh adds on such machines), Intel's MKL in its sequential mode, through
``cblas_{s,d}gemm_64``. On a 2-core Xeon with AVX-512 (2026-11-26) MKL multiplied our
shapes 15-40% faster on one thread than OpenBLAS's SkylakeX kernels, and the training
steps ran faster by it: ResNet-18 at batch 64 20%, the MLP at batch 256 18% (the two in
processes taking turns, medians of 6 and 12 turns); LeNet-5, whose convolutions run
direct kernels, the same. ``TINYGRAD_K_BLAS`` chooses: ``auto`` (the default: MKL on an
Intel CPU where it is installed, else OpenBLAS), ``mkl`` (MKL on any CPU; an error where
it is missing) or ``openblas``. The addresses are registered with LLVM under fixed names
and the kernels declare them as external functions, so the compiled kernels stay
cacheable on disk. Where neither is found (another BLAS vendor, an LP64 build),
``AVAILABLE`` is False and callers keep their NumPy path.

Callers must hold ``one_thread()`` while their kernel runs: several of our threads
call the GEMM at once, and each call must not start OpenBLAS's own threads (MKL's
sequential mode starts none).
"""
from __future__ import annotations

import ctypes
import os
import sys

from numba import njit, types

__all__ = ["AVAILABLE", "LIBRARY", "GEMM_LIBRARY", "GEMM_NAME", "gemm", "one_thread",
           "ROW_MAJOR", "NO_TRANS", "TRANS"]

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
_NAMES = ("tinygrad_k_cblas_sgemm64", "tinygrad_k_cblas_dgemm64")


def _find_openblas():
    """(controller, (get, set thread count), sgemm address, dgemm address) of a loaded
    ILP64 OpenBLAS, or None."""
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


BLAS_CHOICES = ("auto", "mkl", "openblas")


def _cpu_vendor():
    """/proc/cpuinfo's vendor_id ("GenuineIntel", "AuthenticAMD", ...), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _find_mkl(choice):
    """(path, sgemm address, dgemm address) of the mkl wheel's libmkl_rt, switched to its
    sequential threading layer, or None (not installed, or already loaded by someone else
    in a threaded layer: then each of our threads would start MKL's)."""
    if choice == "openblas" or (choice == "auto" and _cpu_vendor() != "GenuineIntel"):
        return None
    for d in dict.fromkeys([os.path.join(sys.prefix, "lib"),
                            os.path.join(sys.base_prefix, "lib")]):
        for name in ("libmkl_rt.so.3", "libmkl_rt.so.2"):
            path = os.path.join(d, name)
            if not os.path.exists(path):
                continue
            try:
                dll = ctypes.CDLL(path)
                set_layer = dll.MKL_Set_Threading_Layer
                fns = [getattr(dll, f"cblas_{t}gemm_64") for t in "sd"]
            except (OSError, AttributeError):
                continue
            set_layer.restype, set_layer.argtypes = ctypes.c_int, [ctypes.c_int]
            if set_layer(1) != 1:  # MKL_THREADING_SEQUENTIAL (mkl_service.h)
                continue
            return path, *(ctypes.cast(f, ctypes.c_void_p).value for f in fns)
    if choice == "mkl":
        raise ImportError("TINYGRAD_K_BLAS=mkl: the mkl wheel's libmkl_rt was not found "
                          f"under {sys.prefix}/lib (pip install 'tinygrad_k[mkl]')")
    return None


def _register():
    import numpy  # noqa: F401  (loads NumPy's BLAS, so threadpoolctl can see it)

    choice = os.environ.get("TINYGRAD_K_BLAS", "auto")
    if choice not in BLAS_CHOICES:
        raise ValueError(f"TINYGRAD_K_BLAS: expected one of {', '.join(BLAS_CHOICES)}, "
                         f"got {choice!r}")
    openblas = _find_openblas()
    mkl = _find_mkl(choice)
    if mkl is not None:
        gemm_lib, name, s_addr, d_addr = mkl[0], "mkl (sequential)", mkl[1], mkl[2]
    elif openblas is not None:
        gemm_lib, name = openblas[0].filepath, "openblas (one thread a call)"
        s_addr, d_addr = openblas[2], openblas[3]
    else:
        return None
    import llvmlite.binding as llb

    llb.add_symbol(_NAMES[0], s_addr)
    llb.add_symbol(_NAMES[1], d_addr)
    return (openblas[0].filepath if openblas else None, openblas[1] if openblas else
            (None, None), gemm_lib, name)


_FOUND = _register()
AVAILABLE = _FOUND is not None
# NumPy's OpenBLAS (None where it is not one), and the library gemm() calls
LIBRARY = _FOUND[0] if AVAILABLE else None
GEMM_LIBRARY, GEMM_NAME = (_FOUND[2], _FOUND[3]) if AVAILABLE else (None, None)
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
    alpha = 1.0
    if k == 0:
        # C = beta * C. An operand with no columns may come with a leading dimension of
        # 0, which MKL refuses (it reports it and leaves C as it was; OpenBLAS scales C);
        # BLAS's alpha = 0 case scales C without reading A or B, here given C's own rows
        # (valid memory: an (m, 1) and a (1, n) operand at C's row stride)
        trans_a = trans_b = NO_TRANS
        k, a, lda, b, ldb, alpha = 1, c, ldc, c, ldc, 0.0
    if itemsize == 4:
        _sgemm(ROW_MAJOR, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    else:
        _dgemm(ROW_MAJOR, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


class _OneThread:
    """The context manager ``one_thread()`` returns (a class: a generator-based one costs
    2 us a use, and the small products of a training step use it a dozen times)."""

    __slots__ = ("saved",)

    def __enter__(self):
        self.saved = saved = _get_threads() if _get_threads is not None else 1
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
