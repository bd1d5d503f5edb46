"""Training diagnostics: what each layer's activations, gradients and updates do over time.

The statistics that tell a healthy network from a sick one, recorded per layer at an
interval, on forward hooks and tensor hooks (PyTorch's names):

* activations (each layer's output): mean, std, a fixed-size histogram; for tanh and
  sigmoid layers the fraction of saturated units (|tanh| > 0.97, sigmoid outside
  [0.03, 0.97]: their local gradient is below 0.06 and they barely learn), for ReLU layers
  the fraction of dead units (a unit that is 0 for every sample of the batch gets no
  gradient at all);
* gradients of each layer's output (``Tensor.register_hook``): mean, std, histogram;
* per parameter, log10(std(update) / std(data)): how much one optimizer step changes the
  weights relative to their size. Around -3 is healthy; far below, the layer learns too
  slowly; far above, the step is too large.

From Python::

    diag = Diagnostics(model, every=10).attach()
    for step, (x, y) in enumerate(loader):
        diag.begin_step(step)             # hooks are live on recording steps only
        loss = loss_fn(model(x), y)
        opt.zero_grad(); loss.backward()
        diag.optimizer_step(opt)          # = before_update(); opt.step(); after_update()
    diag.save("runs/x")                   # diagnostics.json + one PNG per kind
    diag.detach()

From the CLI: ``python -m tinygrad_k train ... --diagnostics [--diag-every N]`` (the
object is a training-loop callback: ``on_phase("data" | "backward" | "step", state)``).

Cost and memory: off (not attached, or between recording steps) no hook is registered,
so the model runs exactly as without diagnostics; the recorded numbers never feed back
into training. Histograms have a fixed number of bins and are computed on at most
``sample_size`` values per tensor; at most ``max_records`` recording steps are kept
(past that, every other one is dropped and the interval doubles).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from . import nn
from .autograd import is_grad_enabled

__all__ = ["Diagnostics", "SATURATION"]

SATURATION = 0.97   # |tanh| above this (sigmoid outside [0.03, 0.97]) counts as saturated

_KINDS = ((nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid"), (nn.ReLU, "relu"))
# containers and shape-only modules: their output is another layer's, nothing to learn
_SKIP = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Flatten, nn.Identity, nn.Dropout)


def _kind(module):
    for cls, name in _KINDS:
        if isinstance(module, cls):
            return name
    return "other"


def _host(a):
    """A NumPy view/copy of a NumPy or CuPy array."""
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _array(t):
    return t._array


class Diagnostics:
    """Per-layer activation, gradient and update statistics of ``model`` during training.

    ``every``: record one step in ``every`` (step 0 included). ``layers``: the modules to
    watch, as names (``model.named_modules()``) or module classes; default: every leaf
    module except shape-only ones (Flatten, Identity, Dropout). ``bins``: histogram bins.
    ``sample_size``: at most this many values of a tensor go into its histogram (an even
    stride through it). ``max_records``: bound on the recording steps kept.
    """

    def __init__(self, model, every=100, layers=None, bins=40, sample_size=65536,
                 max_records=200, saturation=SATURATION):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Diagnostics: expected an nn.Module, got {type(model).__name__}")
        if int(every) < 1:
            raise ValueError(f"Diagnostics: every must be >= 1, got {every}")
        if int(bins) < 2 or int(max_records) < 2:
            raise ValueError(f"Diagnostics: bins and max_records must be >= 2, got {bins}, "
                             f"{max_records}")
        self.model, self.every, self.bins = model, int(every), int(bins)
        self.sample_size, self.max_records = int(sample_size), int(max_records)
        self.saturation = float(saturation)
        self.layers = self._select(layers)
        self.params = [(n, p) for n, p in model.named_parameters()]
        self.records = []
        self.attached = False
        self._handles = []
        self._current = None
        self._seen = set()
        self._snapshot = None
        self._step = 0

    def _select(self, layers):
        named = [(n, m) for n, m in self.model.named_modules() if n]
        if layers is None:
            chosen = [(n, m) for n, m in named
                      if not any(True for _ in m.children()) and not isinstance(m, _SKIP)]
        else:
            layers = list(layers) if isinstance(layers, (list, tuple)) else [layers]
            names = {x for x in layers if isinstance(x, str)}
            types = tuple(x for x in layers if isinstance(x, type))
            chosen = [(n, m) for n, m in named if n in names or (types and isinstance(m, types))]
            missing = names - {n for n, _ in named}
            if missing:
                raise ValueError(f"Diagnostics: no module named {sorted(missing)} in the model; "
                                 f"its modules are {[n for n, _ in named]}")
        if not chosen:
            raise ValueError("Diagnostics: no layer to watch (the model has no leaf modules "
                             "or none matched `layers`)")
        return chosen

    # -- switching on and off ----------------------------------------------------------
    def attach(self):
        """Start watching (hooks are registered at each recording step). Returns self."""
        self.attached = True
        return self

    def detach(self):
        """Stop watching and remove every hook; the records stay."""
        self._remove_hooks()
        self.attached = False
        self._current = None
        return self

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.detach()
        return False

    def _remove_hooks(self):
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- the step protocol -------------------------------------------------------------
    def is_recording_step(self, step):
        return step % self.every == 0

    def begin_step(self, step=None):
        """Call before the forward pass of training step ``step`` (default: one past the
        previous). On a recording step the forward hooks go live."""
        self._step = self._step if step is None else int(step)
        self._remove_hooks()
        self._current = None
        if self.attached and self.is_recording_step(self._step):
            self._current = {"step": self._step, "layers": {}, "params": {}}
            self._seen = set()
            for name, module in self.layers:
                self._handles.append(module.register_forward_hook(self._forward_hook(name)))
        self._step += 1

    def before_update(self):
        """Call after backward, before ``optimizer.step()``: keeps a copy of the parameters
        (recording steps only) and records the gradient:data ratio of each."""
        if self._current is None:
            return
        self._snapshot = {}
        for name, p in self.params:
            a = _array(p)
            self._snapshot[name] = a.copy()
            rec = {"data_std": float(a.std()) if a.size > 1 else 0.0}
            if p.grad is not None:
                g = _array(p.grad)
                rec["grad_std"] = float(g.std()) if g.size > 1 else 0.0
                rec["grad_mean"] = float(g.mean())
            self._current["params"][name] = rec

    def after_update(self):
        """Call after ``optimizer.step()``: log10(std(update) / std(data)) per parameter;
        closes the step's record and removes the hooks."""
        cur, snap = self._current, self._snapshot
        self._remove_hooks()
        self._current, self._snapshot = None, None
        if cur is None:
            return
        if snap is not None:
            for name, p in self.params:
                old = snap[name]
                rec = cur["params"].setdefault(name, {})
                d = float((_array(p) - old).std()) if old.size > 1 else 0.0
                s = float(old.std()) if old.size > 1 else 0.0
                rec["update_std"] = d
                rec["update_log10"] = math.log10(d / s) if d > 0 and s > 0 else None
        if cur["layers"] or cur["params"]:   # a step with no training forward: nothing
            self._append(cur)

    def optimizer_step(self, optimizer):
        """``before_update(); optimizer.step(); after_update()``."""
        self.before_update()
        optimizer.step()
        self.after_update()

    def on_phase(self, phase, state):
        """Training-loop callback (``trainer.TrainState.callbacks``): the step index is the
        number of batches trained so far in the run, so records line up across resumes."""
        if phase == "data":
            self.begin_step(len(state.history.get("step_loss", ())))
        elif phase == "backward":
            self.before_update()
        elif phase == "step":
            self.after_update()

    def _append(self, rec):
        self.records.append(rec)
        if len(self.records) > self.max_records:   # bounded: thin out, record less often
            self.records = self.records[::2]
            self.every *= 2

    # -- the hooks ------------------------------------------------------------------------
    def _forward_hook(self, name):
        def hook(module, args, output):
            cur = self._current
            if cur is None or name in self._seen or not is_grad_enabled():
                return None   # evaluation passes and repeated calls are not recorded
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not hasattr(out, "_array"):
                return None
            self._seen.add(name)
            rec = self._stats(_array(out), _kind(module))
            rec["shape"] = list(out.shape)
            cur["layers"][name] = rec
            if out.requires_grad:
                self._handles.append(out.register_hook(self._grad_hook(cur, name)))
            return None
        return hook

    def _grad_hook(self, cur, name):
        def hook(grad):
            g = _array(grad)
            st = self._stats(g, "other")
            cur["layers"][name]["grad"] = {"mean": st["mean"], "std": st["std"],
                                           "hist": st["hist"], "range": st["range"]}
            return None
        return hook

    def _stats(self, a, kind):
        """mean, std, histogram of array ``a`` (and saturated / dead fractions)."""
        rec = {"kind": kind, "mean": float(a.mean()) if a.size else 0.0,
               "std": float(a.std()) if a.size > 1 else 0.0}
        flat = a.reshape(-1)
        if flat.size > self.sample_size:
            flat = flat[::-(-flat.size // self.sample_size)]
        v = _host(flat).astype(np.float64)
        v = v[np.isfinite(v)]
        if kind == "tanh":
            lo, hi = -1.0, 1.0
        elif kind == "sigmoid":
            lo, hi = 0.0, 1.0
        elif v.size:
            lo, hi = float(v.min()), float(v.max())
            if hi <= lo:
                lo, hi = lo - 0.5, hi + 0.5
        else:
            lo, hi = -1.0, 1.0
        counts, _ = np.histogram(v, bins=self.bins, range=(lo, hi))
        rec["hist"] = counts.tolist()
        rec["range"] = [lo, hi]
        s = self.saturation
        if kind == "tanh":
            rec["saturated"] = float((abs(a) > s).mean())
        elif kind == "sigmoid":
            rec["saturated"] = float(((a < 1 - s) | (a > s)).mean())
        elif kind == "relu":
            # a unit is one feature: axis 1 of an (N, C, ...) conv map, the last axis else
            if a.ndim == 4:
                units = a.transpose(1, 0, 2, 3).reshape(a.shape[1], -1)
            else:
                units = a.reshape(-1, a.shape[-1] if a.ndim > 1 else 1).T
            rec["dead"] = float((units <= 0).all(axis=1).mean()) if units.size else 0.0
            rec["zero"] = float((a <= 0).mean())
        return rec

    # -- results --------------------------------------------------------------------------
    def to_dict(self):
        return {"every": self.every, "bins": self.bins, "saturation": self.saturation,
                "layers": [{"name": n, "type": type(m).__name__, "kind": _kind(m)}
                           for n, m in self.layers],
                "params": [{"name": n, "shape": list(p.shape)} for n, p in self.params],
                "records": self.records}

    def series(self, key, sub=None):
        """{layer: (steps, values)} of an activation statistic ``key`` ("mean", "std",
        "saturated", "dead"), or of the gradient's with ``sub="grad"``."""
        out = {}
        for name, _ in self.layers:
            steps, vals = [], []
            for r in self.records:
                rec = r["layers"].get(name)
                if rec is not None and sub is not None:
                    rec = rec.get(sub)
                if rec is not None and rec.get(key) is not None:
                    steps.append(r["step"])
                    vals.append(rec[key])
            if steps:
                out[name] = (steps, vals)
        return out

    def param_series(self, key="update_log10"):
        out = {}
        for name, _ in self.params:
            pts = [(r["step"], r["params"][name][key]) for r in self.records
                   if r["params"].get(name, {}).get(key) is not None]
            if pts:
                out[name] = tuple(map(list, zip(*pts)))
        return out

    def summary(self):
        """One line per layer from the last record: activation mean/std, saturated or dead
        fraction, gradient std; then the last update ratios."""
        if not self.records:
            return "diagnostics: nothing recorded yet"
        last = self.records[-1]
        lines = [f"diagnostics at step {last['step']}:",
                 f"  {'layer':<28} {'kind':<8} {'mean':>9} {'std':>9} {'sat/dead':>9} "
                 f"{'grad std':>10}"]
        for name, _ in self.layers:
            r = last["layers"].get(name)
            if r is None:
                continue
            frac = r.get("saturated", r.get("dead"))
            g = r.get("grad", {}).get("std")
            lines.append(f"  {name:<28} {r['kind']:<8} {r['mean']:>9.4f} {r['std']:>9.4f} "
                         f"{'' if frac is None else f'{frac:.1%}':>9} "
                         f"{'' if g is None else f'{g:.3e}':>10}")
        ups = [(n, r.get("update_log10")) for n, r in last["params"].items()]
        ups = [f"{n} {u:+.2f}" for n, u in ups if u is not None]
        if ups:
            lines.append("  log10(update std / data std): " + ", ".join(ups))
        return "\n".join(lines)

    def save(self, out_dir, plots=True):
        """Write ``out_dir/diagnostics.json`` and (``plots``, with matplotlib) the PNGs;
        returns the list of paths written."""
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "diagnostics.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.to_dict(), f)
        os.replace(path + ".tmp", path)
        paths = [path]
        if plots:
            paths += self.plot(out_dir)
        return paths

    def plot(self, out_dir):
        """One PNG per kind, layers as lines: activations, gradients (histograms of the last
        record, std over steps), saturation (saturated / dead fractions over steps) and
        updates (log10 update:data ratio per parameter over steps, -3 marked)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return []
        if not self.records:
            return []
        paths = []

        def finish(fig, name):
            fig.tight_layout()
            p = os.path.join(out_dir, name)
            fig.savefig(p + ".tmp.png", dpi=90)
            plt.close(fig)
            os.replace(p + ".tmp.png", p)
            paths.append(p)

        colors = plt.get_cmap("viridis")
        n_layers = max(1, len(self.layers))
        for sub, fname, title in ((None, "diag_activations.png", "activations"),
                                  ("grad", "diag_gradients.png", "gradients of layer outputs")):
            fig, (a0, a1) = plt.subplots(1, 2, figsize=(13, 4.8))
            last = self.records[-1]
            for k, (name, _) in enumerate(self.layers):
                r = last["layers"].get(name)
                if r is not None and sub is not None:
                    r = r.get(sub)
                if r is None:
                    continue
                counts = np.asarray(r["hist"], dtype=np.float64)
                lo, hi = r["range"]
                edges = np.linspace(lo, hi, len(counts) + 1)
                centres = (edges[:-1] + edges[1:]) / 2
                density = counts / max(counts.sum(), 1) / (edges[1] - edges[0])
                extra = ""
                if sub is None and r.get("saturated") is not None:
                    extra = f", sat {r['saturated']:.0%}"
                elif sub is None and r.get("dead") is not None:
                    extra = f", dead {r['dead']:.0%}"
                a0.plot(centres, density, color=colors(k / n_layers), lw=1.2,
                        label=f"{name}: mean {r['mean']:+.2g} std {r['std']:.2g}{extra}")
            a0.set_title(f"{title}: histograms at step {last['step']}")
            a0.set_xlabel("value")
            a0.set_ylabel("density")
            if sub == "grad":
                a0.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
            a0.legend(fontsize=7)
            for k, (name, (steps, vals)) in enumerate(self.series("std", sub).items()):
                a1.plot(steps, vals, color=colors(self._index(name) / n_layers), label=name)
            a1.set_yscale("log")
            a1.set_title(f"{title}: std per layer over training")
            a1.set_xlabel("step")
            a1.legend(fontsize=7)
            finish(fig, fname)

        sat = {**{f"{n} (saturated)": v for n, v in self.series("saturated").items()},
               **{f"{n} (dead)": v for n, v in self.series("dead").items()}}
        if sat:
            fig, ax = plt.subplots(figsize=(8, 4.5))
            for k, (name, (steps, vals)) in enumerate(sat.items()):
                ax.plot(steps, [100 * v for v in vals], label=name,
                        color=colors(k / max(1, len(sat))))
            ax.set_title(f"saturated units (|tanh| > {self.saturation}, sigmoid outside "
                         f"[{1 - self.saturation:.2f}, {self.saturation}]) and dead ReLUs")
            ax.set_xlabel("step")
            ax.set_ylabel("% of units")
            ax.legend(fontsize=7)
            finish(fig, "diag_saturation.png")

        ups = self.param_series("update_log10")
        if ups:
            fig, ax = plt.subplots(figsize=(11, 4.8))
            for k, (name, (steps, vals)) in enumerate(ups.items()):
                ax.plot(steps, vals, label=name, color=colors(k / max(1, len(ups))),
                        lw=1.5 if name.endswith("weight") else 0.8)
            ax.axhline(-3, color="k", ls="--", lw=1, label="1e-3 (healthy)")
            ax.set_title("log10(std of the update / std of the parameter)")
            ax.set_xlabel("step")
            ax.legend(fontsize=7, ncol=1 + len(ups) // 16, loc="upper left",
                      bbox_to_anchor=(1.01, 1.0))
            finish(fig, "diag_updates.png")
        return paths

    def _index(self, name):
        for k, (n, _) in enumerate(self.layers):
            if n == name:
                return k
        return 0
