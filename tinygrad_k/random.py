"""The framework's random number state: one seed for NumPy (cpu, simulator) and CuPy (GPU).

``manual_seed(s)`` makes ``randn``/``rand``/dropout/init reproducible on every device.
"""
from __future__ import annotations

import numpy as np

_state = {"rng": np.random.default_rng(), "seed": None}


def manual_seed(seed: int):
    """Seed every generator the framework uses (like ``torch.manual_seed``)."""
    seed = int(seed)
    _state["rng"] = np.random.default_rng(seed)
    _state["seed"] = seed
    try:
        import cupy

        cupy.random.seed(seed)
    except Exception:  # no CuPy / no GPU: nothing else to seed
        pass
    return seed


def generator() -> np.random.Generator:
    """The NumPy generator behind cpu randomness (and parameter init on every device)."""
    return _state["rng"]


def get_state():
    """The generator's state as a JSON-able dict (checkpoints store it for exact resume)."""
    return _state["rng"].bit_generator.state


def set_state(state):
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    _state["rng"] = rng


def _on_device(arr, backend):
    return arr if backend.xp is np else backend.asarray(arr)


def normal(shape, dtype, backend):
    if backend.xp is not np:
        return backend.xp.random.standard_normal(shape, dtype=dtype)
    return _state["rng"].standard_normal(shape, dtype=np.float64).astype(dtype, copy=False)


def uniform(shape, dtype, backend, low=0.0, high=1.0):
    if backend.xp is not np:
        return backend.xp.random.uniform(low, high, shape).astype(dtype, copy=False)
    return _state["rng"].uniform(low, high, shape).astype(dtype, copy=False)


def integers(low, high, shape, backend):
    return _on_device(_state["rng"].integers(low, high, shape), backend)
