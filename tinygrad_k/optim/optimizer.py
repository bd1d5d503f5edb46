"""Optimizers with PyTorch's update rules, param groups and state_dict format.

Each ``step()`` updates ``p.data`` in place through the device backend
(``backend.sgd_update_many_`` / ``adam_update_many_``: fused Numba passes on cpu; on the
GPU one launch for all of a group's parameters, as PyTorch's foreach path).
"""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "RMSprop"]


class Optimizer:
    """Holds ``param_groups`` (list of dicts with "params" and hyperparameters) and
    ``state`` (per-parameter dict of arrays and numbers)."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Tensors or "
                            "dicts, got a Tensor (wrap it in a list)")
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        self.param_groups = []
        self.state = {}
        for g in (params if isinstance(params[0], dict) else [{"params": params}]):
            self.add_param_group(g)

    def add_param_group(self, param_group):
        """Add a group (a dict with "params" and any hyperparameters; the others take the
        optimizer's defaults), e.g. to train layers unfrozen later, as torch's."""
        if not isinstance(param_group, dict):
            raise TypeError(f"{type(self).__name__}.add_param_group: expected a dict, got "
                            f"{type(param_group).__name__}")
        g = dict(param_group)
        params = g.get("params")
        g["params"] = [params] if isinstance(params, Tensor) else list(params or [])
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if len({id(p) for p in g["params"]}) != len(g["params"]):
            raise ValueError(f"{type(self).__name__}: a parameter appears twice in a group")
        for p in g["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: expected Tensors, got "
                                f"{type(p).__name__}")
            if not p.requires_grad:
                raise ValueError(f"{type(self).__name__}: a parameter of shape {p.shape} "
                                 "does not require grad")
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: some parameters appear in more than "
                                 "one parameter group")
            seen.add(id(p))
        for k, v in self.defaults.items():
            g.setdefault(k, v)
        self.param_groups.append(g)

    def zero_grad(self, set_to_none=True):
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad._array[...] = 0

    def _params_with_grad(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    if p.grad.shape != p.shape:
                        raise RuntimeError(f"{type(self).__name__}: gradient of shape "
                                           f"{p.grad.shape} for a parameter of shape {p.shape}")
                    yield g, p, self.state.setdefault(id(p), {})
                    # step() changed p in place: bump its version, as torch's optimizers do
                    # (a graph that saved p before the step then refuses to backward)
                    p._bump_version()

    def step(self):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- state dicts in PyTorch's layout ------------------------------------------------
    def state_dict(self):
        """{"state": {index: {name: array or number}}, "param_groups": [{..., "params":
        [index, ...]}]}, parameters numbered in order across groups."""
        index, groups, state = {}, [], {}
        for g in self.param_groups:
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        for g in self.param_groups:
            for p in g["params"]:
                s = self.state.get(id(p))
                if s:
                    state[index[id(p)]] = {k: (Tensor._wrap(v, p.backend, False)
                                               if hasattr(v, "shape") and not
                                               isinstance(v, (int, float)) else v)
                                           for k, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved parameter groups "
                             f"({[len(g['params']) for g in groups]} parameters) do not match "
                             f"this optimizer's ({[len(g['params']) for g in self.param_groups]})")
        by_index = {}
        for saved, g in zip(groups, self.param_groups):
            for k, v in saved.items():
                if k != "params":
                    g[k] = v
            for i, p in zip(saved["params"], g["params"]):
                by_index[int(i)] = p
        self.state = {}
        for i, s in state_dict["state"].items():
            p = by_index[int(i)]
            entry = {}
            for k, v in s.items():
                if isinstance(v, Tensor) or isinstance(v, np.ndarray):
                    arr = v.numpy() if isinstance(v, Tensor) else v
                    if arr.ndim == 0 and k == "step":
                        entry[k] = int(arr)
                        continue
                    if arr.shape != p.shape:
                        raise ValueError(f"{type(self).__name__}.load_state_dict: state '{k}' "
                                         f"of shape {arr.shape} for a parameter of shape "
                                         f"{p.shape}")
                    entry[k] = p.backend.asarray(np.array(arr, dtype=p.dtype))
                else:
                    entry[k] = v
            self.state[id(p)] = entry


class SGD(Optimizer):
    """p -= lr * g', g' = grad + wd * p, with momentum buffer b = mu * b + (1 - dampening) g'
    (b = g' on the first step) and g' = b (or g' + mu * b with nesterov)."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr {lr}, momentum {momentum} and weight_decay "
                             f"{weight_decay} must be >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def step(self):
        # the parameters of one group, device and first-step state are updated together
        # (backend.sgd_update_many_: one launch for all of them on a GPU, as PyTorch's
        # foreach path does)
        batches = {}
        for g, p, s in self._params_with_grad():
            first = "momentum_buffer" not in s
            if g["momentum"] and first:
                s["momentum_buffer"] = p.backend.xp.zeros_like(p._array)
            ps, gs, bs = batches.setdefault((id(g), p.backend, first), (g, [], [], []))[1:]
            ps.append(p._array)
            gs.append(p.grad._array)
            bs.append(s.get("momentum_buffer"))
        for (_, backend, first), (g, ps, gs, bs) in batches.items():
            backend.sgd_update_many_(ps, gs, bs if g["momentum"] else None, g["lr"],
                                     g["momentum"], g["dampening"], g["weight_decay"],
                                     g["nesterov"], first)


class Adam(Optimizer):
    """m = b1 m + (1-b1) g,  v = b2 v + (1-b2) g^2,
    p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps); weight decay added to g.
    amsgrad: v in the denominator is replaced by its running maximum."""

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and
                                                        0 <= betas[1] < 1):
            raise ValueError(f"{type(self).__name__}: invalid lr {lr}, betas {betas}, eps "
                             f"{eps} or weight_decay {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=bool(amsgrad)))

    def step(self):
        # one backend call per group, device and step count (one launch on a GPU)
        batches = {}
        for g, p, s in self._params_with_grad():
            xp = p.backend.xp
            if not s:
                s["step"] = 0
                s["exp_avg"] = xp.zeros_like(p._array)
                s["exp_avg_sq"] = xp.zeros_like(p._array)
                if g["amsgrad"]:
                    s["max_exp_avg_sq"] = xp.zeros_like(p._array)
            s["step"] += 1
            lists = batches.setdefault((id(g), p.backend, s["step"]), (g, [], [], [], [], []))
            for out, a in zip(lists[1:], (p._array, p.grad._array, s["exp_avg"],
                                          s["exp_avg_sq"], s.get("max_exp_avg_sq"))):
                out.append(a)
        for (_, backend, step), (g, ps, gs, ms, vs, maxes) in batches.items():
            b1, b2 = g["betas"]
            backend.adam_update_many_(ps, gs, ms, vs, g["lr"], b1, b2, g["eps"],
                                      g["weight_decay"], step, self._decoupled,
                                      maxes if g["amsgrad"] else None)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * wd before the Adam step."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class Adagrad(Optimizer):
    """sum += g^2;  p -= lr_t * g / (sqrt(sum) + eps),  lr_t = lr / (1 + (t-1) lr_decay)."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps))

    def step(self):
        for g, p, s in self._params_with_grad():
            xp = p.backend.xp
            if not s:
                s["step"] = 0
                s["sum"] = xp.full_like(p._array, g["initial_accumulator_value"])
            s["step"] += 1
            grad = p.grad._array
            if g["weight_decay"]:
                grad = grad + g["weight_decay"] * p._array
            clr = g["lr"] / (1 + (s["step"] - 1) * g["lr_decay"])
            s["sum"] += grad * grad
            p._array -= clr * grad / (xp.sqrt(s["sum"]) + g["eps"])


class RMSprop(Optimizer):
    """v = alpha v + (1 - alpha) g^2;  p -= lr * g / (sqrt(v) + eps)  (with optional
    momentum buffer and centering, as PyTorch)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def step(self):
        for g, p, s in self._params_with_grad():
            xp = p.backend.xp
            if not s:
                s["step"] = 0
                s["square_avg"] = xp.zeros_like(p._array)
                if g["momentum"] > 0:
                    s["momentum_buffer"] = xp.zeros_like(p._array)
                if g["centered"]:
                    s["grad_avg"] = xp.zeros_like(p._array)
            s["step"] += 1
            grad = p.grad._array
            if g["weight_decay"]:
                grad = grad + g["weight_decay"] * p._array
            a = g["alpha"]
            sq = s["square_avg"]
            sq *= a
            sq += (1 - a) * grad * grad
            if g["centered"]:
                ga = s["grad_avg"]
                ga *= a
                ga += (1 - a) * grad
                avg = xp.sqrt(sq - ga * ga) + g["eps"]
            else:
                avg = xp.sqrt(sq) + g["eps"]
            if g["momentum"] > 0:
                buf = s["momentum_buffer"]
                buf *= g["momentum"]
                buf += grad / avg
                p._array -= g["lr"] * buf
            else:
                p._array -= g["lr"] * grad / avg
