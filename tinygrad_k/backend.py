"""Device backends: the one place that knows which array library and kernels a device uses.

A backend owns

* ``xp``      -- the array module (``numpy`` on cpu, ``cupy`` on a real GPU; ``numpy``
                 again for the cuda device under Numba's CUDA simulator),
* ``kernels`` -- the module with the performance primitives of DESIGN.md
                 (``kernels.cpu`` or ``kernels.cuda``),
* what array libraries spell differently (``erf``, ``scatter_add_``, random draws,
  ``copy_from`` another device, ``quiet`` floating-point warnings),
* a handful of fused helpers (``relu``, ``bias_relu``, ``relu_backward``,
  ``add_channel_bias_``, ``channel_sum``, ``cross_entropy_forward``,
  ``softmax_xent_*``,
  ``sgd_update_``, ``adam_update_``) that Functions and optimizers call without ever
  asking which device they are on. The base versions are NumPy compositions; on a real
  GPU they are the hand-written CuPy kernels of ``kernels.cuda_fused``.

Three classes: ``CPUBackend``; ``CUDABackend`` (a real GPU: CuPy + fused kernels) and
``CUDASimBackend`` (no GPU, NUMBA_ENABLE_CUDASIM=1: NumPy storage + the CUDA kernels
under Numba's simulator). ``get_backend("cpu")`` / ``get_backend("cuda")`` return cached
singletons.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import math
import os

import numpy as np

__all__ = ["Backend", "CPUBackend", "CUDABackend", "CUDASimBackend", "get_backend",
           "cuda_available", "normalize_device", "seed_devices"]


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
    """What a device is: array module, kernels, and the helpers Functions, optimizers and
    Tensor methods call instead of asking which device they run on.

    The methods here are NumPy-style compositions written against ``self.xp``; a device
    with a faster way (the real GPU's fused kernels) overrides them.
    """

    name = "?"
    is_simulator = False
    # a device that runs asynchronously to the host: checks of its results are kept until
    # the host next reads from it (defer_check), not made by waiting for it at once
    defers_checks = False
    # pending checks past this many are made at once (each holds its arrays alive)
    MAX_PENDING_CHECKS = 64

    def __init__(self, xp, kernels_module):
        self._pending_checks = []
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

    def synchronize(self):
        """Wait until the device's queued work is done (host devices have none), then
        make the checks deferred until then."""
        self.run_deferred_checks()

    def to_numpy(self, arr) -> np.ndarray:
        if self._pending_checks:
            self.run_deferred_checks()
        if isinstance(arr, (np.ndarray, np.generic)):
            return np.asarray(arr)
        return arr.get()

    def defer_check(self, failed, raise_error):
        """Check later, without waiting for the device now: ``failed`` is a device 0-d bool
        array, and ``raise_error()`` raises the error it stands for. The checks run at
        the host's next read from this device (to_numpy: .item(), .numpy(), printing) or
        synchronize(), the way PyTorch reports a device-side assert at the next
        synchronisation."""
        self._pending_checks.append((failed, raise_error))
        if len(self._pending_checks) >= self.MAX_PENDING_CHECKS:
            self.run_deferred_checks()

    def run_deferred_checks(self):
        """Make the pending checks (one transfer for all of them); raise the first failure."""
        pending, self._pending_checks = self._pending_checks, []
        if not pending:
            return
        if len(pending) == 1:  # (a training step's one check: no stacking launch on a GPU)
            failed = [bool(pending[0][0])]
        else:
            failed = self.xp.stack([f for f, _ in pending]).tolist()
        for bad, (_, raise_error) in zip(failed, pending):
            if bad:
                raise_error()

    def copy_from(self, arr, source):
        """A fresh array of this device holding the values of ``arr`` (an array of the
        ``source`` backend). Always a copy: under the simulator both devices hold NumPy
        arrays, and a cpu tensor and its cuda copy stay independent, as on a real GPU."""
        return self.xp.array(source.to_numpy(arr), copy=True)

    def quiet(self):
        """Context manager silencing divide/invalid floating-point warnings: NaN and inf
        propagate as in NumPy and PyTorch instead of printing."""
        return np.errstate(divide="ignore", invalid="ignore")

    # -- what NumPy spells differently from CuPy, or lacks -------------------
    def erf(self, x):
        """Elementwise error function."""
        return _erf_numpy(x)

    def scatter_add_(self, target, index, values):
        """target[index] += values, in place, with repeated indices accumulating (unlike
        ``target[index] += values``, which keeps one of the repeats)."""
        self.xp.add.at(target, index, values)

    # -- random draws --------------------------------------------------------
    # ``rng`` is the NumPy generator of the draw (tinygrad_k.random's default one or a
    # user Generator's); values are drawn in float64 and rounded once to ``dtype``, so a
    # seed gives the same float32 values on the cpu and the simulated cuda device.
    def random_normal(self, shape, dtype, rng):
        """Standard normal draws of ``shape``."""
        return self.asarray(rng.standard_normal(shape, dtype=np.float64).astype(dtype,
                                                                                copy=False))

    def random_uniform(self, shape, dtype, rng, low=0.0, high=1.0):
        """Uniform draws on [low, high)."""
        return self.asarray(rng.uniform(low, high, shape).astype(dtype, copy=False))

    def random_integers(self, low, high, shape, rng, dtype=np.int64):
        """Integers uniform on [low, high)."""
        return self.asarray(rng.integers(low, high, shape).astype(dtype, copy=False))

    # -- fused helpers (compositions here; the real GPU fuses them) ----------
    def bias_relu(self, x, b):
        """relu(x + b), b (C,) broadcast along axis 1 of x ((N,C) or (N,C,H,W))."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return self.xp.maximum(x + b.reshape(shape), 0)

    def relu(self, x):
        """max(x, 0), NaN kept."""
        return self.xp.maximum(x, 0)

    def relu_backward(self, dy, y):
        """dx = 0 where y <= 0, else dy: PyTorch's threshold_backward (a NaN or inf
        gradient at an inactive unit gives 0, not NaN as dy * [y > 0] would)."""
        return self.xp.where(y <= 0, self.xp.zeros((), dtype=dy.dtype), dy)

    def add_channel_bias_(self, y, b):
        """y += b along axis 1 (y (N, C, ...), b (C,)), in place; returns y."""
        y += b.reshape((1, -1) + (1,) * (y.ndim - 2))
        return y

    def channel_sum(self, g):
        """g (N, C, ...) summed over every axis but 1: the gradient of a channel bias."""
        return g.sum(axis=(0,) + tuple(range(2, g.ndim)))

    def batch_norm_forward(self, x, gamma, beta, eps):
        """Training-mode batch normalisation over every axis but 1 of x ((N, C) or
        (N, C, ...)); gamma, beta (C,) or None. Returns y = gamma * xhat + beta with
        xhat = (x - mean) * rstd, and the batch mean, the biased variance and
        rstd = 1 / sqrt(var + eps), each (C,)."""
        xp = self.xp
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mu = x.mean(axis=axes, keepdims=True)
        d = x - mu
        var = (d * d).mean(axis=axes, keepdims=True)
        rstd = 1.0 / xp.sqrt(var + eps)
        y = d * rstd
        if gamma is not None:
            y *= gamma.reshape(shape)
        if beta is not None:
            y += beta.reshape(shape)
        return y, mu.reshape(-1), var.reshape(-1), rstd.reshape(-1)

    def batch_norm_backward(self, g, x, mean, rstd, gamma):
        """Gradients of batch_norm_forward for upstream g: with m the elements per
        channel and sums over every axis but 1,
        dbeta = sum g, dgamma = sum g * xhat,
        dx = rstd * gamma / m * (m * g - dbeta - xhat * dgamma). Returns dx, dgamma, dbeta."""
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        m = x.size // x.shape[1]
        r = rstd.reshape(shape)
        xhat = (x - mean.reshape(shape)) * r
        dbeta = g.sum(axis=axes, keepdims=True)
        dgamma = (g * xhat).sum(axis=axes, keepdims=True)
        scale = r / m if gamma is None else r * gamma.reshape(shape) / m
        dx = scale * (m * g - dbeta - xhat * dgamma)
        return dx, dgamma.reshape(-1), dbeta.reshape(-1)

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

    def cross_entropy_forward(self, logits, target, ignore_index):
        """Softmax cross-entropy per row with PyTorch's ignore_index: logits (N, C),
        integer targets (N,). Returns loss (N,) (0 where the target is ignore_index),
        probs = softmax(z), the targets with ignored rows set to class 0, a bool mask of
        the rows that count (None when all do), their number and the sum of the losses.
        Raises IndexError for a counted target outside [0, C) (on a device that
        defers_checks: later, see _cross_entropy_deferred)."""
        xp = self.xp
        c = logits.shape[1]
        valid = target != ignore_index
        bad = valid & ((target < 0) | (target >= c))
        if self.defers_checks:
            return self._cross_entropy_deferred(logits, target, valid, bad, ignore_index)
        # one device -> host copy for both numbers (on a GPU each is a synchronisation)
        count, n_bad = xp.stack((valid.sum(), bad.sum())).tolist()
        if n_bad:
            self._target_out_of_range(target, c, ignore_index)
        if count == valid.shape[0]:
            loss, probs = self.softmax_xent_forward(logits, target)
            return loss, probs, target, None, count, loss.sum()
        safe = xp.where(valid, target, 0)
        loss, probs = self.softmax_xent_forward(logits, safe)
        loss = xp.where(valid, loss, loss.dtype.type(0))
        return loss, probs, safe, valid, count, loss.sum()

    @staticmethod
    def _target_out_of_range(target, c, ignore_index):
        """Raise cross_entropy's IndexError for the first counted target outside [0, C)."""
        bad = (target != ignore_index) & ((target < 0) | (target >= c))
        raise IndexError(f"cross_entropy: target {int(target[bad].ravel()[0])} is out of "
                         f"range for {c} classes (expected 0 <= target < {c})")

    def _cross_entropy_deferred(self, logits, target, valid, bad, ignore_index):
        """cross_entropy_forward on a device that runs apart from the host, without waiting
        for it: the count of rows that count is a device 0-d array, the row mask a float
        weight (1 counts, 0 ignored), and a target outside [0, C) makes its row's weight
        and loss NaN -- so the loss and the gradients say so at once -- and raises
        IndexError at the host's next read from the device (defer_check)."""
        xp = self.xp
        safe = xp.where(valid & ~bad, target, 0)
        loss, probs = self.softmax_xent_forward(logits, safe)
        nan = loss.dtype.type(float("nan"))
        weight = xp.where(bad, nan, valid.astype(loss.dtype))
        loss = xp.where(bad, nan, xp.where(valid, loss, loss.dtype.type(0)))
        self._defer_target_check(bad.any(), target, logits.shape[1], ignore_index)
        return loss, probs, safe, weight, valid.sum(), loss.sum()

    def _defer_target_check(self, failed, target, c, ignore_index):
        self.defer_check(failed, lambda: self._target_out_of_range(target, c, ignore_index))

    def cross_entropy_mean(self, total, count, dtype):
        """The "mean" reduction of cross_entropy_forward's sum over its count of rows, as
        a 0-d array of ``dtype``; NaN when no row counts (PyTorch's 0 / 0). ``count`` is
        a host int or (defers_checks) a device 0-d array."""
        xp = self.xp
        if isinstance(count, int):  # counted on the host
            return xp.asarray(total / count if count else float("nan"), dtype=dtype)
        # a device 0-d array: a GPU backend counts without stopping the host
        return xp.where(count > 0, total / xp.maximum(count, 1), float("nan")).astype(dtype)

    def cross_entropy_dloss(self, n, dtype, valid, g, count, reduction):
        """The upstream gradient of each of the n rows of a cross-entropy loss (dtype):
        g itself ("none", g (N,)), or one value g (a 0-d array) / count ("mean") or g
        ("sum"); times the row mask or weight ``valid`` (None: every row counts)."""
        xp = self.xp
        if reduction == "none":
            dloss = g if valid is None else g * valid
        else:
            count = max(count, 1) if isinstance(count, int) else xp.maximum(count, 1)
            scale = g if reduction == "sum" else g / count
            dloss = xp.empty(n, dtype=dtype)
            dloss[...] = scale
            if valid is not None:
                dloss *= valid
        return dloss.astype(dtype, copy=False)

    def cross_entropy_backward(self, probs, target, valid, g, count, reduction):
        """dz of cross_entropy_forward without label smoothing: dloss[:, None] * (softmax(z)
        - onehot(t)), dloss from cross_entropy_dloss."""
        dloss = self.cross_entropy_dloss(probs.shape[0], probs.dtype, valid, g, count,
                                         reduction)
        return self.softmax_xent_backward(probs, target, dloss)

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

    def sgd_update_many_(self, params, grads, bufs, lr, momentum, dampening, weight_decay,
                         nesterov, first_step):
        """sgd_update_ on every (params[i], grads[i], bufs[i]) with the same settings (bufs
        None without momentum). Here one at a time; the GPU does them in one launch."""
        for i, (p, g) in enumerate(zip(params, grads)):
            self.sgd_update_(p, g, bufs[i] if bufs is not None else None, lr, momentum,
                             dampening, weight_decay, nesterov, first_step)

    def adam_update_(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step,
                     decoupled, max_v=None):
        """PyTorch Adam (decoupled=False) / AdamW (decoupled=True), in place.

        Adam:  g = grad + wd * p.   AdamW: p *= 1 - lr * wd.
        m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
        p -= lr / (1 - b1^t) * m / (sqrt(v' / (1 - b2^t)) + eps),
        v' = v, or with AMSGrad (``max_v`` given) max_v = max(max_v, v) and v' = max_v.
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
        if max_v is not None:
            xp.maximum(max_v, v, out=max_v)
            v = max_v
        bc1 = 1 - beta1 ** step
        bc2 = 1 - beta2 ** step
        denom = xp.sqrt(v / bc2) + eps
        param -= (lr / bc1) * m / denom

    def adam_update_many_(self, params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay,
                          step, decoupled, max_vs=None):
        """adam_update_ on every tensor with the same settings and step (max_vs: AMSGrad's
        running maxima, or None). Here one at a time; the GPU does them in one launch."""
        for i, (p, g, m, v) in enumerate(zip(params, grads, ms, vs)):
            self.adam_update_(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step,
                              decoupled, None if max_vs is None else max_vs[i])


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class CPUBackend(Backend):
    """The cpu device: NumPy arrays and the Numba CPU kernels (``kernels.cpu``)."""

    name = "cpu"

    def __init__(self):
        super().__init__(np, importlib.import_module("kernels.cpu"))
        self._fused = importlib.import_module("kernels.cpu_fused")

    # one parallel Numba pass each instead of NumPy's single-threaded temporaries
    def relu(self, x):
        return self._fused.relu(x)

    def relu_backward(self, dy, y):
        return self._fused.relu_backward(dy, y)

    def bias_relu(self, x, b):
        return self._fused.bias_relu(x, b)

    # a Linear's (N, C) bias and its gradient stay NumPy's broadcast add and sum (what the
    # CPU step was measured with); the fused kernels take the convolutions' (N, C, H, W)
    def add_channel_bias_(self, y, b):
        if y.ndim == 2:
            y += b
            return y
        return self._fused.add_channel_bias_(y, b)

    def channel_sum(self, g):
        if g.ndim == 2:
            return g.sum(axis=0)
        return self._fused.channel_sum(g)

    def batch_norm_forward(self, x, gamma, beta, eps):
        return self._fused.batch_norm_forward(x, gamma, beta, eps)

    def sgd_update_(self, param, grad, buf, *args):
        dt, shape = param.dtype, param.shape
        if (dt in _FLOATS and param.flags.c_contiguous and grad.flags.c_contiguous
                and grad.dtype == dt and grad.shape == shape
                and (buf is None or (buf.flags.c_contiguous and buf.dtype == dt
                                     and buf.shape == shape))):
            return self._fused.sgd_update_(param, grad, buf, *args)
        return super().sgd_update_(param, grad, buf, *args)

    def batch_norm_backward(self, g, x, mean, rstd, gamma):
        return self._fused.batch_norm_backward(g, x, mean, rstd, gamma)

    def cross_entropy_forward(self, logits, target, ignore_index):
        if logits.dtype not in _FLOATS:
            return super().cross_entropy_forward(logits, target, ignore_index)
        return self._fused.cross_entropy_forward(logits, target, ignore_index)

    def softmax_xent_backward(self, probs, target, dloss):
        if probs.dtype not in _FLOATS:
            return super().softmax_xent_backward(probs, target, dloss)
        return self._fused.softmax_xent_backward(probs, target, dloss)


class CUDASimBackend(Backend):
    """The cuda device without a GPU: NumPy storage and the Numba CUDA kernels
    (``kernels.cuda``) run by Numba's simulator (NUMBA_ENABLE_CUDASIM=1). Everything
    else is the NumPy composition of the base class."""

    name = "cuda"
    is_simulator = True
    defers_checks = True  # as the GPU does, so that the tests see its behaviour

    def __init__(self):
        super().__init__(np, importlib.import_module("kernels.cuda"))


class CUDABackend(Backend):
    """The cuda device on a real GPU: CuPy storage, the Numba CUDA kernels and the fused
    CuPy kernels of ``kernels.cuda_fused``."""

    name = "cuda"
    defers_checks = True  # no synchronisation in the middle of a training step

    def __init__(self, cupy):
        super().__init__(cupy, importlib.import_module("kernels.cuda"))
        self._fused = importlib.import_module("kernels.cuda_fused")
        import cupyx
        import cupyx.scipy.special

        self._cupyx = cupyx

    def copy_from(self, arr, source):
        return self.xp.asarray(source.to_numpy(arr))  # host -> device is always a copy

    def quiet(self):
        return contextlib.nullcontext()  # CuPy never warns about NaN/inf

    def synchronize(self):
        self.xp.cuda.Device().synchronize()
        self.run_deferred_checks()

    def erf(self, x):
        return self._cupyx.scipy.special.erf(x)

    def scatter_add_(self, target, index, values):
        self._cupyx.scatter_add(target, index, values)

    # the GPU draws from CuPy's own generator (seeded by tinygrad_k.manual_seed), as
    # PyTorch's CUDA generator is separate from its CPU one; ``rng`` seeds nothing here
    def random_normal(self, shape, dtype, rng):
        return self.xp.random.standard_normal(shape, dtype=dtype)

    def random_uniform(self, shape, dtype, rng, low=0.0, high=1.0):
        return self.xp.random.uniform(low, high, shape).astype(dtype, copy=False)

    def bias_relu(self, x, b):
        return self._fused.bias_relu(x, b)

    # one driver launch each (kernels.cuda, kept as launch plans) instead of a CuPy ufunc,
    # elementwise kernel or reduction: the host's work per call is what a small step costs
    def relu(self, x):
        return self.kernels.relu(x)

    def relu_backward(self, dy, y):
        return self.kernels.relu_backward(dy, y)

    def add_channel_bias_(self, y, b):
        return self.kernels.add_channel_bias_(y, b)

    def channel_sum(self, g):
        return self.kernels.channel_sum(g)

    def softmax_xent_forward(self, logits, target):
        return self._fused.softmax_xent_forward(logits, target)

    def cross_entropy_forward(self, logits, target, ignore_index):
        if logits.dtype not in _FLOATS or logits.shape[1] == 0:
            return super().cross_entropy_forward(logits, target, ignore_index)
        loss, probs, safe, weight, count, total, bad = self._fused.cross_entropy_forward(
            logits, target, ignore_index)
        self._defer_target_check(bad, target, logits.shape[1], ignore_index)
        return loss, probs, safe, weight, count, total

    def cross_entropy_mean(self, total, count, dtype):
        if (isinstance(count, int) or total.dtype != dtype or dtype not in _FLOATS
                or count.dtype != self.xp.int64):
            return super().cross_entropy_mean(total, count, dtype)
        return self._fused.cross_entropy_mean(total, count)

    def cross_entropy_backward(self, probs, target, valid, g, count, reduction):
        xp = self.xp
        if (reduction == "none" or probs.dtype not in _FLOATS or isinstance(count, int)
                or not isinstance(g, xp.ndarray) or g.shape != () or g.dtype != probs.dtype
                or (valid is not None and valid.dtype != probs.dtype)):
            return super().cross_entropy_backward(probs, target, valid, g, count, reduction)
        return self._fused.cross_entropy_backward(
            probs, target, valid, g, count if reduction == "mean" else None)

    def softmax_xent_backward(self, probs, target, dloss):
        return self._fused.softmax_xent_backward(probs, target, dloss)

    def sgd_update_(self, *args):
        self._fused.sgd_update_(*args)

    def sgd_update_many_(self, params, grads, bufs, lr, momentum, dampening, weight_decay,
                         nesterov, first_step):
        # one launch for the C-contiguous float tensors of one dtype (kernels.cuda); any
        # other (a strided gradient, a second dtype) one fused kernel at a time
        args = (lr, momentum, dampening, weight_decay, nesterov, first_step)
        dt = params[0].dtype if params else None
        contiguous = self.kernels.c_contiguous
        batch, rest = [], []
        for i, (p, g) in enumerate(zip(params, grads)):
            b = bufs[i] if bufs is not None else None
            ok = (dt in _FLOATS and p.dtype == dt and g.dtype == dt and contiguous(p)
                  and contiguous(g) and (b is None or contiguous(b)))
            (batch if ok else rest).append((p, g, b))
        if batch:
            ps, gs, bs = zip(*batch)
            self.kernels.sgd_update_multi(ps, gs, bs if bufs is not None else None, *args)
        for p, g, b in rest:
            self.sgd_update_(p, g, b, *args)

    def adam_update_many_(self, params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay,
                          step, decoupled, max_vs=None):
        # as sgd_update_many_; AMSGrad (no fused kernel) through the composition
        args = (lr, beta1, beta2, eps, weight_decay, step, decoupled)
        dt = params[0].dtype if params else None
        batch, rest = [], []
        contiguous = self.kernels.c_contiguous
        for i, arrays in enumerate(zip(params, grads, ms, vs)):
            ok = max_vs is None and dt in _FLOATS and all(
                a.dtype == dt and contiguous(a) for a in arrays)
            (batch if ok else rest).append((i, arrays))
        if batch:
            self.kernels.adam_update_multi(*map(list, zip(*(a for _, a in batch))), *args)
        for i, (p, g, m, v) in rest:
            self.adam_update_(p, g, m, v, *args, None if max_vs is None else max_vs[i])

    def adam_update_(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step,
                     decoupled, max_v=None):
        if max_v is not None:  # AMSGrad (rare) has no fused kernel: the composition
            return super().adam_update_(param, grad, m, v, lr, beta1, beta2, eps,
                                        weight_decay, step, decoupled, max_v)
        self._fused.adam_update_(param, grad, m, v, lr, beta1, beta2, eps, weight_decay,
                                 step, decoupled)


def seed_devices(seed: int):
    """Seed the generators that live on devices (CuPy's, when a real GPU is used)."""
    cupy = _cupy_gpu()
    if cupy is not None:
        cupy.random.seed(seed)


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


def _cuda_backend() -> Backend:
    cupy = _cupy_gpu()
    if cupy is not None:
        return CUDABackend(cupy)
    if _simulator_enabled():
        return CUDASimBackend()
    raise RuntimeError(
        "device 'cuda' is not available: no CUDA GPU usable through CuPy "
        "(pip install 'tinygrad_k[cuda]') and NUMBA_ENABLE_CUDASIM is not set")


_BACKENDS: dict[str, Backend] = {}


def get_backend(device) -> Backend:
    """The (cached) backend of ``device`` ("cpu" or "cuda")."""
    name = normalize_device(device)
    backend = _BACKENDS.get(name)
    if backend is None:
        backend = CPUBackend() if name == "cpu" else _cuda_backend()
        _BACKENDS[name] = backend
    return backend
