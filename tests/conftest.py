"""Shared test setup.

* Without a real GPU the Numba CUDA simulator is switched on *before* anything imports
  numba, so the ``cuda`` device and ``kernels.cuda`` run (slowly) on the CPU.
* Hypothesis: ``deadline=None`` everywhere (Numba compiles on first call); the ``ci``
  profile (selected when CI is set) is derandomized so CI runs are repeatable.
"""
import os


def _has_real_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


if not _has_real_gpu():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("dev", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
