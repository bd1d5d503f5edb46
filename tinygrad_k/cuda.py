"""``torch.cuda``: availability, device count and seeding of the ``cuda`` device.

``cuda`` is a real GPU with CuPy, or Numba's simulator when ``NUMBA_ENABLE_CUDASIM=1``.
There is one device (index 0). Streams, events, AMP and memory statistics are not
supported: the error says so.
"""
from __future__ import annotations

from .backend import cuda_available, get_backend
from .random import manual_seed as _manual_seed

__all__ = ["is_available", "device_count", "current_device", "manual_seed",
           "manual_seed_all", "synchronize", "empty_cache", "get_device_name"]


def is_available() -> bool:
    return cuda_available()


def device_count() -> int:
    return 1 if cuda_available() else 0


def current_device() -> int:
    _require("current_device")
    return 0


def get_device_name(device=None) -> str:
    _require("get_device_name")
    b = get_backend("cuda")
    return "Numba CUDA simulator" if b.is_simulator else "CUDA GPU (CuPy)"


def manual_seed(seed):
    """Seed the GPU's draws; as in torch, ``tinygrad_k.manual_seed`` already does it."""
    _manual_seed(seed)


manual_seed_all = manual_seed


def synchronize(device=None):
    """Wait for the GPU's queued work (nothing to wait for without one)."""
    if cuda_available():
        get_backend("cuda").synchronize()


def empty_cache():
    """Accepted; memory is CuPy's pool, which frees blocks as it needs to."""


def _require(op):
    if not cuda_available():
        raise RuntimeError(f"cuda.{op}: no CUDA device is available (no GPU with CuPy, and "
                           "NUMBA_ENABLE_CUDASIM is not set)")


def _unsupported(name, alternative):
    def fn(*args, **kwargs):
        raise NotImplementedError(f"cuda.{name} is not supported by tinygrad_k on purpose; "
                                  f"{alternative}")
    fn.__name__ = name
    return fn


Stream = _unsupported("Stream", "work runs on the default stream; there are no user streams")
Event = _unsupported("Event", "time GPU work with cuda.synchronize() and time.perf_counter()")
stream = _unsupported("stream", "work runs on the default stream; there are no user streams")
max_memory_allocated = _unsupported("max_memory_allocated", "use cupy's memory pool "
                                    "(cupy.get_default_memory_pool().used_bytes())")
memory_allocated = max_memory_allocated


class _AmpUnsupported:
    def __getattr__(self, name):
        raise NotImplementedError("cuda.amp is not supported by tinygrad_k on purpose: there "
                                  "is no float16; train in float32")


amp = _AmpUnsupported()
