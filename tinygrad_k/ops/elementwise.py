"""Elementwise Functions: y = f(a) or y = f(a, b) with NumPy broadcasting.

Each backward returns the gradient in the broadcast output shape; the engine's
``unbroadcast`` sums it back to each input's shape.
"""
from __future__ import annotations

import math

from ..autograd import Function

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Add(Function):
    """y = a + b.   da = g, db = g."""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    """y = a - b.   da = g, db = -g."""

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, -g


class Mul(Function):
    """y = a * b.   da = g * b, db = g * a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return (g * b if ctx.needs_input_grad[0] else None,
                g * a if ctx.needs_input_grad[1] else None)


class Div(Function):
    """y = a / b.   da = g / b, db = -g * a / b^2."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return (g / b if ctx.needs_input_grad[0] else None,
                -g * a / (b * b) if ctx.needs_input_grad[1] else None)


class Neg(Function):
    """y = -a.   da = -g."""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Pow(Function):
    """y = a ** b (both tensors).   da = g * b * a^(b-1),  db = g * y * log(a).

    db uses log(a), defined for a > 0; like PyTorch it is NaN where a < 0.
    """

    node_name = "PowBackward1"

    @staticmethod
    def forward(ctx, a, b):
        y = a ** b
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved_tensors
        xp = ctx.xp
        da = g * b * a ** (b - 1) if ctx.needs_input_grad[0] else None
        db = None
        if ctx.needs_input_grad[1]:
            with ctx.backend.quiet():
                db = g * y * xp.log(a)
        return da, db


class PowScalar(Function):
    """y = a ** p for a Python number p.   da = g * p * a^(p-1)."""

    node_name = "PowBackward0"

    @staticmethod
    def forward(ctx, a, p):
        ctx.p = p
        ctx.save_for_backward(a)
        return a ** p

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        p = ctx.p
        if p == 0:
            return g * 0
        return g * p * a ** (p - 1)


class RPowScalar(Function):
    """y = c ** a for a Python number c > 0.   da = g * y * log(c)."""

    node_name = "PowBackward2"

    @staticmethod
    def forward(ctx, a, c):
        y = ctx.xp.asarray(c, dtype=a.dtype) ** a
        ctx.logc = math.log(c) if c > 0 else float("nan")
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y * ctx.logc


class Exp(Function):
    """y = e^a.   da = g * y."""

    @staticmethod
    def forward(ctx, a):
        y = ctx.xp.exp(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


class Log(Function):
    """y = ln a.   da = g / a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        with ctx.backend.quiet():
            return ctx.xp.log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g / a


class Sqrt(Function):
    """y = sqrt(a).   da = g / (2 y)."""

    @staticmethod
    def forward(ctx, a):
        with ctx.backend.quiet():
            y = ctx.xp.sqrt(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g / (2 * y)


class Abs(Function):
    """y = |a|.   da = g * sign(a)  (0 at a = 0, like PyTorch)."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.abs(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * ctx.xp.sign(a)


class Maximum(Function):
    """y = max(a, b).   The gradient goes to the larger input; on ties it is split in half
    (as PyTorch does)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.maximum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        wa = (a > b) + 0.5 * (a == b)
        return g * wa, g * (1 - wa)


class Minimum(Function):
    """y = min(a, b).   The gradient goes to the smaller input; ties split in half."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        wa = (a < b) + 0.5 * (a == b)
        return g * wa, g * (1 - wa)


class Clamp(Function):
    """y = min(max(a, lo), hi).   da = g where lo <= a <= hi, else 0 (PyTorch's convention)."""

    node_name = "ClampBackward1"

    @staticmethod
    def forward(ctx, a, lo, hi):
        xp = ctx.xp
        mask = xp.ones(a.shape, dtype=bool)
        y = a
        if lo is not None:
            mask &= a >= lo
            y = xp.maximum(y, xp.asarray(lo, dtype=a.dtype))
        if hi is not None:
            mask &= a <= hi
            y = xp.minimum(y, xp.asarray(hi, dtype=a.dtype))
        ctx.save_for_backward(mask)
        return y if y is not a else a.copy()

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask


class Where(Function):
    """y = cond ? a : b (cond a bool array, no gradient).   da = g*cond, db = g*(1-cond)."""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.cond = cond
        return ctx.xp.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        zero = ctx.xp.zeros((), dtype=g.dtype)
        return (None, ctx.xp.where(ctx.cond, g, zero), ctx.xp.where(ctx.cond, zero, g))


class ReLU(Function):
    """y = max(a, 0).   da = g * [a > 0] (0 where y <= 0, as torch's threshold_backward)."""

    node_name = "ReluBackward0"

    @staticmethod
    def forward(ctx, a):
        y = ctx.backend.relu(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return ctx.backend.relu_backward(g, y)


class BiasReLU(Function):
    """y = relu(x + b) with b (C,) along axis 1 -- one fused pass on the GPU.

    dx = g * [y > 0],  db = sum over all axes but 1 of dx.
    """

    node_name = "ReluBackward0"

    @staticmethod
    def forward(ctx, x, b):
        y = ctx.backend.bias_relu(x, b)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        dx = ctx.backend.relu_backward(g, y)
        axes = (0,) + tuple(range(2, dx.ndim))
        return dx, dx.sum(axis=axes)


class LeakyReLU(Function):
    """y = a if a > 0 else slope * a.   da = g * (1 if a > 0 else slope)."""

    node_name = "LeakyReluBackward0"

    @staticmethod
    def forward(ctx, a, slope):
        ctx.slope = slope
        ctx.save_for_backward(a)
        return ctx.xp.where(a > 0, a, a * slope)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return ctx.xp.where(a > 0, g, g * ctx.slope)


def _softplus(xp, t):
    """log(1 + e^t) without overflow: max(t, 0) + log1p(e^{-|t|})."""
    return xp.maximum(t, 0) + xp.log1p(xp.exp(-xp.abs(t)))


def _sigmoid_from(xp, z, e):
    """sigmoid(z) given e = exp(-|z|), which lies in (0, 1] and never overflows."""
    return xp.where(z >= 0, 1 / (1 + e), e / (1 + e))


class Sin(Function):
    """y = sin a.   da = g * cos a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.sin(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * ctx.xp.cos(a)


class Cos(Function):
    """y = cos a.   da = -g * sin a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.cos(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return -g * ctx.xp.sin(a)


class Log1p(Function):
    """y = ln(1 + a), accurate for small a.   da = g / (1 + a)."""

    node_name = "Log1PBackward0"

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        with ctx.backend.quiet():
            return ctx.xp.log1p(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g / (1 + a)


class Softplus(Function):
    """y = ln(1 + e^(beta a)) / beta, and y = a where beta a > threshold (PyTorch's
    linear regime).   da = g * sigmoid(beta a) there, g in the linear regime.
    Computed with ``_softplus`` (z = beta a): never overflows."""

    @staticmethod
    def forward(ctx, a, beta, threshold):
        xp = ctx.xp
        z = a * beta
        linear = z > threshold
        ctx.save_for_backward(z, linear)
        return xp.where(linear, a, _softplus(xp, z) / beta).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        z, linear = ctx.saved_tensors
        xp = ctx.xp
        sig = _sigmoid_from(xp, z, xp.exp(-xp.abs(z)))
        return g * xp.where(linear, 1, sig).astype(g.dtype, copy=False)


class Sigmoid(Function):
    """y = 1 / (1 + e^-a), computed without overflow.   da = g * y * (1 - y)."""

    @staticmethod
    def forward(ctx, a):
        y = _sigmoid_from(ctx.xp, a, ctx.xp.exp(-ctx.xp.abs(a)))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y * (1 - y)


class Tanh(Function):
    """y = tanh(a).   da = g * (1 - y^2)."""

    @staticmethod
    def forward(ctx, a):
        y = ctx.xp.tanh(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


class GELU(Function):
    """Gaussian error linear unit, as torch.nn.functional.gelu.

    approximate="none":  y = a * Phi(a),  Phi(a) = (1 + erf(a / sqrt 2)) / 2,
                         da = g * (Phi(a) + a * phi(a)),  phi(a) = exp(-a^2/2) / sqrt(2 pi).
    approximate="tanh":  y = a/2 * (1 + tanh(u)),  u = sqrt(2/pi) (a + 0.044715 a^3),
                         da = g * (1/2 (1 + t) + a/2 (1 - t^2) sqrt(2/pi) (1 + 3*0.044715 a^2)).
    """

    node_name = "GeluBackward0"

    @staticmethod
    def forward(ctx, a, approximate):
        xp = ctx.xp
        ctx.approximate = approximate
        if approximate == "tanh":
            t = xp.tanh(_SQRT_2_OVER_PI * (a + 0.044715 * a ** 3))
            ctx.save_for_backward(a, t)
            return 0.5 * a * (1 + t)
        cdf = 0.5 * (1 + ctx.backend.erf(a * _INV_SQRT_2))
        ctx.save_for_backward(a, cdf)
        return a * cdf

    @staticmethod
    def backward(ctx, g):
        xp = ctx.xp
        a, s = ctx.saved_tensors
        if ctx.approximate == "tanh":
            du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * a * a)
            return g * (0.5 * (1 + s) + 0.5 * a * (1 - s * s) * du)
        pdf = _INV_SQRT_2PI * xp.exp(-0.5 * a * a)
        return g * (s + a * pdf)


class Cast(Function):
    """y = a converted to another float dtype.   da = g converted back."""

    node_name = "ToCopyBackward0"

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.src = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.astype(ctx.src)
