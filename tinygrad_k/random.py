"""Random numbers: ``Generator`` objects as torch's, one default generator, and the draws.

Every draw comes from a ``Generator`` (a NumPy ``PCG64`` stream): the one passed as
``generator=``, else ``default_generator``, which ``manual_seed`` seeds (it also seeds
CuPy, which makes the GPU's own draws for ``randn``/``rand``/dropout on ``cuda`` tensors
drawn without a generator). A draw with an explicit generator is made on the host and
placed on the device, so a seeded Generator gives the same numbers on every device.

The streams are tinygrad_k's own: the same seed gives different numbers than PyTorch's
Mersenne Twister (reproducible run to run, not across frameworks).
"""
from __future__ import annotations

import json

import numpy as np

from .autograd import tensor_type
from .backend import normalize_device, seed_devices

__all__ = ["Generator", "default_generator", "manual_seed", "seed", "initial_seed",
           "get_rng_state", "set_rng_state"]


class Generator:
    """A random stream with torch's ``Generator`` API.

    ``Generator(device="cpu")``; ``manual_seed(s)`` (returns the generator, so
    ``g = Generator().manual_seed(42)`` works), ``seed()`` (a fresh non-deterministic
    seed, returned), ``initial_seed()``, ``get_state()`` / ``set_state(t)`` (a uint8
    Tensor holding the stream's state, as in torch).
    """

    def __init__(self, device="cpu"):
        self.device = normalize_device(device)
        self._initial_seed = int(np.random.SeedSequence().entropy % (2 ** 63))
        self._rng = np.random.default_rng(self._initial_seed)

    def manual_seed(self, seed):
        seed = int(seed)
        if seed < 0:  # torch folds negative seeds into the unsigned 64-bit range
            seed += 2 ** 64
        if not 0 <= seed < 2 ** 64:
            raise RuntimeError(f"Generator.manual_seed: seed {seed} is outside "
                               f"[-2**63, 2**64)")
        self._initial_seed = seed
        self._rng = np.random.default_rng(seed)
        return self

    def seed(self):
        s = int(np.random.SeedSequence().entropy % (2 ** 63))
        self.manual_seed(s)
        return s

    def initial_seed(self):
        return self._initial_seed

    def get_state(self):
        """The stream's state as a uint8 Tensor (the bytes of its JSON description)."""
        raw = json.dumps({"seed": self._initial_seed, "state": self._rng.bit_generator.state})
        return tensor_type()(np.frombuffer(raw.encode(), dtype=np.uint8).copy())

    def set_state(self, new_state):
        arr = np.asarray(new_state.numpy() if hasattr(new_state, "numpy") else new_state)
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise TypeError(f"Generator.set_state: expected a 1-D uint8 Tensor from "
                            f"get_state(), got dtype {arr.dtype} and shape {arr.shape}")
        try:
            saved = json.loads(arr.tobytes().decode())
            rng = np.random.default_rng()
            rng.bit_generator.state = saved["state"]
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeError("Generator.set_state: the tensor is not a state from "
                               f"tinygrad_k's Generator.get_state() ({e}); states of "
                               "PyTorch's generator cannot be loaded") from None
        self._initial_seed, self._rng = int(saved["seed"]), rng
        return self

    @property
    def numpy_generator(self) -> np.random.Generator:
        """The NumPy generator that makes this stream's draws."""
        return self._rng

    def __repr__(self):
        return f"<tinygrad_k.Generator device={self.device} initial_seed={self._initial_seed}>"


default_generator = Generator()


def manual_seed(seed):
    """Seed the default generator (and CuPy's, for GPU draws), as ``torch.manual_seed``;
    returns the default generator."""
    default_generator.manual_seed(seed)
    seed_devices(default_generator.initial_seed() % (2 ** 32))
    return default_generator


def seed():
    """Seed the default generator non-deterministically; returns the seed."""
    s = default_generator.seed()
    manual_seed(s)
    return s


def initial_seed():
    return default_generator.initial_seed()


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(new_state):
    default_generator.set_state(new_state)


def generator() -> np.random.Generator:
    """The NumPy generator behind the default stream (parameter init, transforms)."""
    return default_generator._rng


def get_state():
    """The default stream's state as a JSON-able dict (checkpoints store it to resume)."""
    return default_generator._rng.bit_generator.state


def set_state(state):
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    default_generator._rng = rng


def _rng(gen) -> np.random.Generator:
    if gen is None:
        return default_generator._rng
    if not isinstance(gen, Generator):
        raise TypeError(f"generator must be a tinygrad_k.Generator, got {type(gen).__name__}")
    return gen._rng


def _on_device(arr, backend):
    return backend.asarray(arr)


# Draws from the default stream are the backend's (the GPU makes its own with CuPy); a
# draw from an explicit Generator is made on the host and placed on the device, so the
# Generator's numbers are the same on every device.
def normal(shape, dtype, backend, generator=None):
    """Standard normal draws of ``shape`` as a ``backend`` array (behind randn, normal_)."""
    if generator is None:
        return backend.random_normal(shape, dtype, default_generator._rng)
    return _on_device(_rng(generator).standard_normal(shape, dtype=np.float64).astype(
        dtype, copy=False), backend)


def uniform(shape, dtype, backend, low=0.0, high=1.0, generator=None):
    if generator is None:
        return backend.random_uniform(shape, dtype, default_generator._rng, low, high)
    return _on_device(_rng(generator).uniform(low, high, shape).astype(dtype, copy=False),
                      backend)


def integers(low, high, shape, backend, generator=None):
    if high <= low:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} "
                           f">= to={high}")
    return backend.random_integers(low, high, shape, _rng(generator))


# -- array-level draws behind torch.multinomial / bernoulli / randperm ------------------
def multinomial(probs, num_samples, replacement, generator=None):
    """(rows, num_samples) int64 category indices drawn from the rows of the float64
    host array ``probs`` (rows, n) of non-negative weights (checked by the caller)."""
    rng = _rng(generator)
    if not replacement:
        # as torch: the num_samples largest p / E, E ~ Exp(1), i.e. draws in order without
        # putting any back; zero-weight categories come last, once the others are used up
        keys = probs / rng.exponential(size=probs.shape)
        return np.argsort(-keys, axis=1, kind="stable")[:, :num_samples].astype(np.int64)
    sums = probs.sum(axis=1)
    out = np.empty((probs.shape[0], num_samples), dtype=np.int64)
    for r, (p, s) in enumerate(zip(probs, sums)):
        out[r] = rng.choice(probs.shape[1], size=num_samples, replace=True, p=p / s)
    return out


def bernoulli(probs, dtype, backend, generator=None):
    """0/1 draws, 1 with probability ``probs`` (a host array), as ``dtype`` on ``backend``."""
    return _on_device((_rng(generator).random(probs.shape) < probs).astype(dtype), backend)


def permutation(n, dtype, backend, generator=None):
    return _on_device(_rng(generator).permutation(n).astype(dtype), backend)
