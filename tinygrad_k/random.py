"""The framework's random number state: one seed for NumPy (cpu, simulator) and CuPy (GPU).

``manual_seed(s)`` makes ``randn``/``rand``/dropout/init reproducible on every device.
"""
from __future__ import annotations

import numpy as np

from .backend import seed_devices

_state = {"rng": np.random.default_rng(), "seed": None}


def manual_seed(seed: int):
    """Seed every generator the framework uses (like ``torch.manual_seed``)."""
    seed = int(seed)
    _state["rng"] = np.random.default_rng(seed)
    _state["seed"] = seed
    seed_devices(seed)
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


def normal(shape, dtype, backend):
    return backend.random_normal(shape, dtype, _state["rng"])


def uniform(shape, dtype, backend, low=0.0, high=1.0):
    return backend.random_uniform(shape, dtype, _state["rng"], low, high)


def integers(low, high, shape, backend):
    return backend.random_integers(low, high, shape, _state["rng"])
