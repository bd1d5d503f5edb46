"""What kernels.cuda and its GEMM ladder (kernels.cuda_gemm) share about the CUDA runtime.

* ``simulating()`` -- whether Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) is on;
* ``xp_of(arr)`` -- the array module of a kernel argument: CuPy on a GPU, NumPy under the
  simulator;
* on import under the simulator, a fix for a race in its shared arrays (below);
* on import, ``np.row_stack`` back where numba-cuda 0.30 looks for it (below).

A module of its own so that kernels.cuda can import the ladder and the ladder needs
nothing from kernels.cuda (no import circle).
"""
from __future__ import annotations

import numpy as np
from numba import config as _numba_config

__all__ = ["simulating", "xp_of"]


def simulating():
    return bool(_numba_config.ENABLE_CUDASIM)  # (called on every launch: no import here)


def _make_simulator_shared_arrays_atomic():
    """Work around a race in Numba's CUDA simulator (numba-cuda 0.30).

    The simulator runs a block's threads as Python threads and gives them one shared
    array per ``cuda.shared.array`` source line, created by whichever thread gets there
    first -- with an unlocked "look up, else create and insert". Two threads can both
    miss and each create an array; the loser then stages its part of the tile into an
    array nobody else reads, and reads garbage back. Seen as sporadic NaN in the GEMM
    tests (the suite poisons fresh arrays with NaN). Same lookup, under a lock."""
    import sys
    import threading
    import traceback

    from numba.cuda import types
    from numba.cuda.np import numpy_support
    from numba.cuda.simulator import kernelapi

    shared = kernelapi.FakeCUDAShared
    if getattr(shared, "_tinygrad_k_atomic", False):
        return
    lock = threading.Lock()
    original = shared.array

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:  # unaffected paths: numba's own code
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = traceback.extract_stack(sys._getframe(1), limit=1)[-1][0:2]  # file, line
        with lock:
            res = self._allocations.get(caller)
            if res is None:
                res = self._allocations[caller] = np.empty(shape, dtype)
        return res

    shared.array = array
    shared._tinygrad_k_atomic = True


def _restore_numpy_row_stack():
    """Let numba-cuda 0.30 compile a kernel under NumPy >= 2.5.

    NumPy 2.5 removed ``np.row_stack`` (deprecated since 2.0 as an alias of
    ``np.vstack``), and numba-cuda 0.30.4 registers an overload for it in a module it
    imports on its first kernel compile (numba/cuda/np/arrayobj.py). Every compile then
    fails with AttributeError -- seen on the GPU image (numpy 2.5.2). Putting the alias
    back is what that line needs; it is the same function, so nothing else changes."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


_restore_numpy_row_stack()
if simulating():
    _make_simulator_shared_arrays_atomic()


def xp_of(arr):
    """The array module of ``arr``: CuPy on a GPU, NumPy under the simulator."""
    if isinstance(arr, np.ndarray):
        if not simulating():
            raise RuntimeError("kernels.cuda: got a NumPy array but no CUDA simulator is "
                               "active (set NUMBA_ENABLE_CUDASIM=1) -- pass CuPy arrays on a GPU")
        return np
    import cupy

    return cupy
