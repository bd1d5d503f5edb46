"""Numerical gradient checking: compare autograd with central finite differences.

    dL/dx_i  ~=  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps),   L = sum(f(x) * v)

with a fixed random cotangent v, in float64. Usable by users, not only tests.
"""
from __future__ import annotations

import numpy as np

from .autograd import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """Raised by ``gradcheck`` when analytic and numerical gradients disagree."""


def _outputs(fn, inputs):
    out = fn(*inputs)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, seed=0):
    """Check the gradients of ``fn(*inputs)`` against central differences (like
    ``torch.autograd.gradcheck``).

    ``inputs``: a Tensor or a tuple of Tensors; those with ``requires_grad=True`` are
    checked and must be float64 (float32 finite differences are too coarse). ``fn`` may
    return one Tensor or a tuple of Tensors. Returns True, or raises ``GradcheckError``
    naming the input, the element and both values (or returns False when
    ``raise_exception=False``).
    """
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    inputs = tuple(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {inputs[i].dtype}; use float64 "
                            "(finite differences in float32 are too coarse to compare)")
    rng = np.random.default_rng(seed)

    outs = _outputs(fn, inputs)
    cotangents = [rng.standard_normal(o.shape) for o in outs]

    def scalar_loss():
        with no_grad():
            vals = _outputs(fn, inputs)
        return sum(float((o.numpy().astype(np.float64) * v).sum())
                   for o, v in zip(vals, cotangents) if o.dtype.kind == "f")

    # analytic: one backward of sum(out * v)
    for i in checked:
        inputs[i].grad = None
    total = None
    for o, v in zip(outs, cotangents):
        if not o.requires_grad:
            continue
        term = (o * Tensor(v, dtype=o.dtype, device=o.device)).sum()
        total = term if total is None else total + term
    if total is None:
        raise GradcheckError("gradcheck: no output requires grad (is fn differentiable?)")
    total.backward()
    analytic = {i: (inputs[i].grad.numpy().copy() if inputs[i].grad is not None
                    else np.zeros(inputs[i].shape)) for i in checked}

    for i in checked:
        t = inputs[i]
        arr = t._array  # perturbed in place (also when a strided view): fn sees the same Tensor
        numeric = np.zeros(arr.size)
        for j in range(arr.size):
            idx = np.unravel_index(j, arr.shape)
            old = float(arr[idx])
            arr[idx] = old + eps
            plus = scalar_loss()
            arr[idx] = old - eps
            minus = scalar_loss()
            arr[idx] = old
            numeric[j] = (plus - minus) / (2 * eps)
        t._bump_version()  # changed in place (and restored), as torch's gradcheck records
        a = analytic[i].reshape(-1)
        bad = ~(np.abs(a - numeric) <= atol + rtol * np.abs(numeric))  # NaN counts as bad
        if bad.any():
            j = int(np.argmax(bad))
            msg = (f"gradcheck: gradient of input {i} (shape {t.shape}) differs at flat index "
                   f"{j}: analytic {a[j]:.8g} vs numerical {numeric[j]:.8g} "
                   f"({int(bad.sum())} of {a.size} elements off; atol={atol}, rtol={rtol})")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True
