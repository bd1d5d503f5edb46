"""Adadelta, Adamax, NAdam and RAdam with PyTorch's update rules, defaults and state names.

Each step works on the raw arrays (``p._array``, ``p.grad._array``) in place, in the
parameter's dtype, with the scalars formed in double on the host as PyTorch does. ``g``
below is the gradient plus ``weight_decay * p`` (L2), ``t`` the step count.
"""
from __future__ import annotations

import math

from ..autograd import enable_grad
from .optimizer import Optimizer

__all__ = ["Adadelta", "Adamax", "NAdam", "RAdam"]


def _check(name, lr, eps, weight_decay, betas=None, **more):
    if lr < 0 or eps < 0 or weight_decay < 0:
        raise ValueError(f"{name}: invalid lr {lr}, eps {eps} or weight_decay {weight_decay} "
                         "(each must be >= 0)")
    if betas is not None and not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
        raise ValueError(f"{name}: invalid betas {tuple(betas)} (each must be in [0, 1))")
    for k, (v, lo, hi) in more.items():
        if not lo <= v <= hi:
            raise ValueError(f"{name}: invalid {k} {v} (expected in [{lo}, {hi}])")


def _grad(g, p, maximize=False):
    grad = -p.grad._array if maximize else p.grad._array
    if g["weight_decay"] and not g.get("decoupled_weight_decay", False):
        grad = grad + g["weight_decay"] * p._array
    return grad


def _adam_moments(g, p, s, **extra_state):
    """The start that NAdam and RAdam share: state on the first step (step, ``extra_state``,
    exp_avg m, exp_avg_sq v, in torch's order), t += 1, the decoupled decay
    p *= 1 - lr * wd when asked, then m = b1 m + (1 - b1) g and v = b2 v + (1 - b2) g^2 in
    place. Returns (xp, g, m, v)."""
    xp = p.backend.xp
    if not s:
        s["step"] = 0
        s.update(extra_state)
        s["exp_avg"] = xp.zeros_like(p._array)
        s["exp_avg_sq"] = xp.zeros_like(p._array)
    s["step"] += 1
    b1, b2 = g["betas"]
    if g["weight_decay"] and g["decoupled_weight_decay"]:
        p._array *= 1 - g["lr"] * g["weight_decay"]
    grad = _grad(g, p, g["maximize"])
    m, v = s["exp_avg"], s["exp_avg_sq"]
    m += (grad - m) * (1 - b1)
    v *= b2
    v += (1 - b2) * grad * grad
    return xp, grad, m, v


class Adadelta(Optimizer):
    """v = rho v + (1 - rho) g^2;  delta = sqrt(u + eps) / sqrt(v + eps) * g;
    u = rho u + (1 - rho) delta^2;  p -= lr * delta.   (state: square_avg v, acc_delta u)"""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *,
                 maximize=False):
        _check("Adadelta", lr, eps, weight_decay, rho=(rho, 0.0, 1.0))
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize))

    def step(self, closure=None):
        loss = _run(closure)
        for g, p, s in self._params_with_grad():
            xp = p.backend.xp
            if not s:
                s["step"] = 0
                s["square_avg"] = xp.zeros_like(p._array)
                s["acc_delta"] = xp.zeros_like(p._array)
            s["step"] += 1
            grad = _grad(g, p, g["maximize"])
            rho, eps = g["rho"], g["eps"]
            v, u = s["square_avg"], s["acc_delta"]
            v *= rho
            v += (1 - rho) * grad * grad
            delta = xp.sqrt(u + eps) / xp.sqrt(v + eps) * grad
            u *= rho
            u += (1 - rho) * delta * delta
            p._array -= g["lr"] * delta
        return loss


class Adamax(Optimizer):
    """m = b1 m + (1 - b1) g;  u = max(b2 u, |g| + eps);  p -= lr / (1 - b1^t) * m / u.
    (state: exp_avg m, exp_inf u)"""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *,
                 maximize=False):
        _check("Adamax", lr, eps, weight_decay, betas)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, maximize=maximize))

    def step(self, closure=None):
        loss = _run(closure)
        for g, p, s in self._params_with_grad():
            xp = p.backend.xp
            if not s:
                s["step"] = 0
                s["exp_avg"] = xp.zeros_like(p._array)
                s["exp_inf"] = xp.zeros_like(p._array)
            s["step"] += 1
            grad = _grad(g, p, g["maximize"])
            b1, b2 = g["betas"]
            m, u = s["exp_avg"], s["exp_inf"]
            m += (grad - m) * (1 - b1)  # torch's lerp
            xp.maximum(u * b2, xp.abs(grad) + g["eps"], out=u)
            clr = g["lr"] / (1 - b1 ** s["step"])
            p._array -= clr * m / u
        return loss


class NAdam(Optimizer):
    """Adam with Nesterov momentum (Dozat), momentum schedule
    mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay)), prod_t = mu_1 ... mu_t:
        m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,  d = sqrt(v / (1 - b2^t)) + eps,
        p -= lr (1 - mu_t) / (1 - prod_t) * g / d + lr mu_{t+1} / (1 - prod_t mu_{t+1}) * m / d.
    ``decoupled_weight_decay``: p *= 1 - lr * wd instead of the L2 term (NAdamW).
    (state: step, mu_product, exp_avg m, exp_avg_sq v)"""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, maximize=False):
        _check("NAdam", lr, eps, weight_decay, betas,
               momentum_decay=(momentum_decay, 0.0, math.inf))
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize))

    def step(self, closure=None):
        loss = _run(closure)
        for g, p, s in self._params_with_grad():
            xp, grad, m, v = _adam_moments(g, p, s, mu_product=1.0)
            t, lr, (b1, b2) = s["step"], g["lr"], g["betas"]
            mu = b1 * (1.0 - 0.5 * 0.96 ** (t * g["momentum_decay"]))
            mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * g["momentum_decay"]))
            s["mu_product"] *= mu
            denom = xp.sqrt(v / (1 - b2 ** t)) + g["eps"]
            p._array -= (lr * (1 - mu) / (1 - s["mu_product"])) * grad / denom
            p._array -= (lr * mu_next / (1 - s["mu_product"] * mu_next)) * m / denom
        return loss


class RAdam(Optimizer):
    """Adam with the variance of the adaptive rate rectified (Liu et al.):
    rho_inf = 2 / (1 - b2) - 1,  rho_t = rho_inf - 2 t b2^t / (1 - b2^t);  m_hat = m / (1 - b1^t);
    if rho_t > 5:  p -= lr * m_hat * r_t * sqrt(1 - b2^t) / (sqrt(v) + eps),
                   r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t));
    else (early steps, variance not yet tractable):  p -= lr * m_hat.
    (state: step, exp_avg m, exp_avg_sq v)"""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, *, maximize=False):
        _check("RAdam", lr, eps, weight_decay, betas)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize))

    def step(self, closure=None):
        loss = _run(closure)
        for g, p, s in self._params_with_grad():
            xp, grad, m, v = _adam_moments(g, p, s)
            t, lr, (b1, b2) = s["step"], g["lr"], g["betas"]
            bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
            m_hat = m / bc1
            rho_inf = 2 / (1 - b2) - 1
            rho_t = rho_inf - 2 * t * (b2 ** t) / bc2
            if rho_t > 5.0:
                rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                                 / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                adaptive = math.sqrt(bc2) / (xp.sqrt(v) + g["eps"])
                p._array -= m_hat * lr * adaptive * rect
            else:
                p._array -= m_hat * lr
        return loss


def _run(closure):
    """torch's ``step(closure)``: re-evaluate the loss (with gradients) first."""
    if closure is None:
        return None
    with enable_grad():
        return closure()
