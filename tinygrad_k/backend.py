"""Device backends: the one place that knows which array library and kernels a device uses.

A backend owns

* ``xp``      -- the array module (``numpy`` on cpu, ``cupy`` on a real GPU; ``numpy``
                 again for the cuda device under Numba's CUDA simulator),
* ``kernels`` -- the module with the performance primitives of DESIGN.md
                 (``kernels.cpu`` or ``kernels.cuda``),
* a handful of fused helpers (``bias_relu``, ``relu_backward``, ``softmax_xent_*``,
  ``sgd_update_``, ``adam_update_``) that Functions and optimizers call without ever
  asking which device they are on. The cpu versions are NumPy compositions; on a real
  GPU they are the hand-written CuPy kernels of ``kernels.cuda_fused``.

``get_backend("cpu")`` / ``get_backend("cuda")`` return cached singletons.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import math
import os

import numpy as np

__all__ = ["Backend", "get_backend", "cuda_available", "normalize_device"]


def _simulator_enabled() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _cupy_gpu():
    """Return the cupy module when a real CUDA GPU is usable, else None."""
    try:
        import cupy  # noqa: WPS433 (optional dependency)

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # ImportError, CUDARuntimeError: no usable GPU
        return None
    return None


def cuda_available() -> bool:
    """True when the ``cuda`` device can run: a real GPU with CuPy, or the Numba simulator."""
    return _cupy_gpu() is not None or _simulator_enabled()


def normalize_device(device) -> str:
    """Map ``"cpu"``, ``"cuda"``, ``"cuda:0"`` or a Backend to ``"cpu"``/``"cuda"``."""
    if isinstance(device, Backend):
        return device.name
    if device is None:
        return "cpu"
    name = str(device)
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name == "cuda:0" or name == "gpu":
        return "cuda"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


class Backend:
    """What a device is: array module, kernels, and fused helpers.

    Subclasses override the fused helpers where the device has a faster way.
    """

    name = "?"
    is_simulator = False

    def __init__(self, xp, kernels_module):
        self.xp = xp
        self.kernels = kernels_module

    def __repr__(self):
        return f"<Backend {self.name}{' (simulator)' if self.is_simulator else ''}>"

    # -- moving data ---------------------------------------------------------
    def asarray(self, data, dtype=None):
        """Array of this device from anything array-like (numpy, cupy, lists)."""
        if hasattr(data, "__cuda_array_interface__") and self.xp is np:
            data = data.get()
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, arr) -> np.ndarray:
        if isinstance(arr, (np.ndarray, np.generic)):
            return np.asarray(arr)
        return arr.get()

    def quiet(self):
        """Context manager silencing divide/invalid floating-point warnings: NaN and inf
        propagate as in NumPy and PyTorch instead of printing (CuPy never warns)."""
        if self.xp is np:
            return np.errstate(divide="ignore", invalid="ignore")
        return contextlib.nullcontext()

    # -- special functions NumPy lacks ---------------------------------------
    def erf(self, x):
        return _erf_numpy(x)

    # -- fused helpers (NumPy compositions; the GPU overrides them) ----------
    def bias_relu(self, x, b):
        """relu(x + b), b (C,) broadcast along axis 1 of x ((N,C) or (N,C,H,W))."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return self.xp.maximum(x + b.reshape(shape), 0)

    def relu_backward(self, dy, y):
        """dx = dy * [y > 0]."""
        return dy * (y > 0)

    def softmax_xent_forward(self, logits, target):
        """loss_n = logsumexp(z_n) - z_n[t_n], probs = softmax(z). logits (N,C), target (N,)."""
        xp = self.xp
        m = logits.max(axis=1, keepdims=True)
        e = xp.exp(logits - m)
        s = e.sum(axis=1, keepdims=True)
        probs = e / s
        lse = (m + xp.log(s))[:, 0]
        loss = lse - logits[xp.arange(logits.shape[0]), target]
        return loss, probs

    def softmax_xent_backward(self, probs, target, dloss):
        """dz = dloss[:, None] * (softmax(z) - onehot(t))."""
        g = probs.copy()
        g[self.xp.arange(probs.shape[0]), target] -= 1
        g *= dloss[:, None]
        return g

    def sgd_update_(self, param, grad, buf, lr, momentum, dampening, weight_decay,
                    nesterov, first_step):
        """PyTorch SGD, in place on ``param`` (and ``buf`` when momentum != 0).

        g = grad + wd * p;  buf = g (first step) or momentum * buf + (1 - dampening) * g;
        g = g + momentum * buf (nesterov) or buf;  p -= lr * g.
        """
        g = grad + weight_decay * param if weight_decay else grad
        if momentum:
            if first_step:
                buf[...] = g
            else:
                buf *= momentum
                buf += (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        param -= lr * g

    def adam_update_(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step,
                     decoupled):
        """PyTorch Adam (decoupled=False) / AdamW (decoupled=True), in place.

        Adam:  g = grad + wd * p.   AdamW: p *= 1 - lr * wd.
        m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
        p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).
        """
        xp = self.xp
        if weight_decay:
            if decoupled:
                param *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * param
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        bc1 = 1 - beta1 ** step
        bc2 = 1 - beta2 ** step
        denom = xp.sqrt(v / bc2) + eps
        param -= (lr / bc1) * m / denom


class CPUBackend(Backend):
    name = "cpu"

    def __init__(self):
        super().__init__(np, importlib.import_module("kernels.cpu"))


class CUDABackend(Backend):
    """The cuda device: CuPy storage + ``kernels.cuda`` on a GPU; NumPy + simulator otherwise."""

    name = "cuda"

    def __init__(self):
        cupy = _cupy_gpu()
        if cupy is None and not _simulator_enabled():
            raise RuntimeError(
                "device 'cuda' is not available: no CUDA GPU usable through CuPy "
                "(pip install 'tinygrad_k[cuda]') and NUMBA_ENABLE_CUDASIM is not set"
            )
        self.is_simulator = cupy is None
        super().__init__(np if cupy is None else cupy, importlib.import_module("kernels.cuda"))
        self._fused = None
        if cupy is not None:
            self._fused = importlib.import_module("kernels.cuda_fused")

    def erf(self, x):
        if self.is_simulator:
            return _erf_numpy(x)
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)

    def bias_relu(self, x, b):
        if self._fused is None:
            return super().bias_relu(x, b)
        return self._fused.bias_relu(x, b)

    def relu_backward(self, dy, y):
        if self._fused is None:
            return super().relu_backward(dy, y)
        return self._fused.relu_backward(dy, y)

    def softmax_xent_forward(self, logits, target):
        if self._fused is None:
            return super().softmax_xent_forward(logits, target)
        return self._fused.softmax_xent_forward(logits, target)

    def softmax_xent_backward(self, probs, target, dloss):
        if self._fused is None:
            return super().softmax_xent_backward(probs, target, dloss)
        return self._fused.softmax_xent_backward(probs, target, dloss)

    def sgd_update_(self, *args, **kwargs):
        if self._fused is None:
            return super().sgd_update_(*args, **kwargs)
        return self._fused.sgd_update_(*args, **kwargs)

    def adam_update_(self, *args, **kwargs):
        if self._fused is None:
            return super().adam_update_(*args, **kwargs)
        return self._fused.adam_update_(*args, **kwargs)


_erf_ufunc = None


def _erf_numpy(x):
    """Elementwise erf for NumPy arrays (NumPy has none): math.erf compiled by Numba."""
    global _erf_ufunc
    if _erf_ufunc is None:
        from numba import vectorize

        @vectorize(["float32(float32)", "float64(float64)"], cache=True)
        def erf(v):
            return math.erf(v)

        _erf_ufunc = erf
    return _erf_ufunc(x)


_BACKENDS: dict[str, Backend] = {}


def get_backend(device) -> Backend:
    """The (cached) backend of ``device`` ("cpu" or "cuda")."""
    name = normalize_device(device)
    backend = _BACKENDS.get(name)
    if backend is None:
        backend = CPUBackend() if name == "cpu" else CUDABackend()
        _BACKENDS[name] = backend
    return backend
