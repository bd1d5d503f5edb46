"""Where one training step's time goes: kernels versus framework, ours and PyTorch's.

    python -m benchmarks --profile lenet5 [--batch 64] [--device cpu]

Each side runs in a process of its own at its own settings (as in ``benchmarks.run``).

**Ours** is instrumented from the outside, nothing in the engine changes: the public
functions of the backend's kernel module, the backend's fused helpers, every
``Function`` subclass's ``forward``/``backward``, ``Function.apply`` and the four phases
of the step (forward + loss, zero_grad, backward, optimizer step) are wrapped by a
stack-based timer that charges every moment to exactly one category (exclusive time):

| category | what it is |
|---|---|
| kernels (kernels.<impl>) | our compiled kernels and the BLAS calls they make |
| fused helpers (backend) | bias+ReLU, ReLU mask, softmax-xent, SGD/Adam updates |
| op bodies (NumPy + Python) | the rest of Function.forward/backward: NumPy array ops |
| Function.apply | unwrapping, device checks, Context and Tensor creation (graph building) |
| model / Tensor Python (forward) | Module.__call__, Tensor methods: the forward phase's rest |
| autograd engine (backward) | topological sort, gradient accumulation, unbroadcast |
| optimizer Python | the optimizer's loop around the fused update |
| zero_grad | dropping the .grad of every parameter |

The timer itself costs about 0.3 us per region; the uninstrumented step time is reported
beside the instrumented one. Allocation: the bytes NumPy allocated in one step
(tracemalloc, a separate untimed step) and the Tensors and graph nodes created.

The categories say which layer costs; ``cProfile`` over the same steps, uninstrumented,
says which function: the Python functions (and the compiled ones they call, CuPy's and
NumPy's methods among them) with the most own time per step. On a GPU, where the step is
host-bound, that table is the list of what to cut; cProfile's own cost inflates every
row about alike, so read it as shares.

**PyTorch** is measured with ``torch.profiler`` (CPU activities): self time of the ATen
operators (its kernels and dispatcher), of the autograd engine's nodes, and the
remainder of the wall time (Python: nn.Module calls, the optimizer's Python, the
profiler's own cost).
"""
from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np

STEPS = 10


class _Clock:
    """Exclusive time per category: a region's time minus that of the regions inside it."""

    def __init__(self):
        self.stack = []  # [category, start, child time]
        self.total = {}
        self.count = {}
        self.per_op = {}

    def wrap(self, fn, category, op=None):
        clock = self

        def timed(*args, **kwargs):
            clock.stack.append([category, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                cat, t0, child = clock.stack.pop()
                dt = time.perf_counter() - t0
                clock.total[cat] = clock.total.get(cat, 0.0) + dt - child
                clock.count[cat] = clock.count.get(cat, 0) + 1
                if op is not None:
                    clock.per_op[op] = clock.per_op.get(op, 0.0) + dt
                if clock.stack:
                    clock.stack[-1][2] += dt

        timed.__wrapped__ = fn
        return timed


def _subclasses(cls):
    out, todo = [], [cls]
    while todo:
        c = todo.pop()
        for s in c.__subclasses__():
            out.append(s)
            todo.append(s)
    return out


def _instrument_ours(clock, backend):
    """Wrap kernels, fused helpers, Functions; returns a function that undoes it."""
    from tinygrad_k.autograd import Function

    undo = []
    kmod = backend.kernels
    for name in getattr(kmod, "__all__", []):
        fn = getattr(kmod, name)
        if callable(fn) and not isinstance(fn, type):
            setattr(kmod, name, clock.wrap(fn, "kernels", f"kernel {name}"))
            undo.append(lambda n=name, f=fn: setattr(kmod, n, f))
    for name in ("relu", "relu_backward", "bias_relu", "add_channel_bias_", "channel_sum",
                 "batch_norm_forward", "batch_norm_backward", "cross_entropy_forward",
                 "softmax_xent_forward", "softmax_xent_backward", "sgd_update_",
                 "adam_update_"):
        fn = getattr(backend, name)
        setattr(backend, name, clock.wrap(fn, "fused helpers (backend)", f"fused {name}"))
        undo.append(lambda n=name: delattr(backend, n))
    apply = Function.__dict__["apply"]
    Function.apply = classmethod(clock.wrap(apply.__func__, "Function.apply"))
    undo.append(lambda: setattr(Function, "apply", apply))
    for cls in _subclasses(Function):
        for meth in ("forward", "backward"):
            if meth in cls.__dict__:
                raw = cls.__dict__[meth]
                fn = raw.__func__ if isinstance(raw, staticmethod) else raw
                setattr(cls, meth, staticmethod(clock.wrap(fn, "op bodies (NumPy + Python)",
                                                           f"{cls.__name__}.{meth}")))
                undo.append(lambda c=cls, m=meth, r=raw: setattr(c, m, r))
    return lambda: [u() for u in reversed(undo)]


def profile_ours(model_name, batch, device, steps=STEPS):
    from benchmarks.run import _train_batch, make_train_parts, make_train_step
    from tinygrad_k.backend import get_backend

    x_np, y_np = _train_batch(model_name, batch, np.random.default_rng(0))
    step = make_train_step("ours", model_name, device, x_np, y_np)
    for _ in range(3):
        step().item()
    plain = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step().item()
        plain.append(time.perf_counter() - t0)

    model, opt, loss_fn, x, y = make_train_parts("ours", model_name, device, x_np, y_np)
    clock = _Clock()
    phases = {
        "model / Tensor Python (forward)": clock.wrap(lambda: loss_fn(model(x), y), "model / Tensor Python (forward)"),
        "zero_grad": clock.wrap(opt.zero_grad, "zero_grad"),
        "optimizer Python": clock.wrap(opt.step, "optimizer Python"),
    }
    undo = _instrument_ours(clock, get_backend(device))
    try:
        def istep():
            loss = phases["model / Tensor Python (forward)"]()
            phases["zero_grad"]()
            clock.wrap(loss.backward, "autograd engine (backward)")()
            phases["optimizer Python"]()
            return loss

        for _ in range(3):
            istep().item()
        clock.total.clear(), clock.count.clear(), clock.per_op.clear()
        inst = []
        for _ in range(steps):
            t0 = time.perf_counter()
            istep().item()
            inst.append(time.perf_counter() - t0)
        counts = {k: v / steps for k, v in clock.count.items()}
        cats = {k: v / steps for k, v in clock.total.items()}
        per_op = {k: v / steps for k, v in clock.per_op.items()}
        cats["outside the phases (.item(), loop)"] = max(
            statistics.mean(inst) - sum(cats.values()), 0.0)
    finally:
        undo()
    alloc = _allocations_ours(step)
    return {"side": "ours", "steps": steps, "step_s": statistics.median(plain),
            "instrumented_step_s": statistics.mean(inst), "categories_s": cats,
            "calls_per_step": counts, "top_s": dict(sorted(per_op.items(), key=lambda kv: -kv[1])[:12]),
            "alloc": alloc, "functions": _functions_ours(step, steps)}


def _function_name(key):
    """'kernels/cuda.py:699 _matmul' from a pstats key (file, line, name); builtins and
    compiled methods keep their own text ('{method 'sum' of 'numpy.ndarray' objects}')."""
    path, line, name = key
    if path == "~" or not line:
        return name
    parts = path.replace(os.sep, "/").split("/")
    for root in ("tinygrad_k", "kernels", "benchmarks", "site-packages"):
        if root in parts:  # from the package down (site-packages: the package after it)
            k = parts.index(root)
            parts = parts[k + (root == "site-packages"):]
            break
    else:
        parts = parts[-2:]
    return f"{'/'.join(parts)}:{line} {name}"


def _functions_ours(step, steps, top=30):
    """The ``top`` functions by own time over ``steps`` profiled steps (cProfile):
    [{"function", "calls", "own_s", "cumulative_s"}], per step."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step().item()
    prof.disable()
    stats = pstats.Stats(prof).stats  # key -> (primitive calls, calls, own, cumulative, ...)
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    return [{"function": _function_name(k), "calls": v[1] / steps, "own_s": v[2] / steps,
             "cumulative_s": v[3] / steps} for k, v in rows]


def _allocations_ours(step):
    import tracemalloc

    import tinygrad_k.autograd as ag
    from tinygrad_k.tensor import Tensor

    made = {"tensors": 0, "graph nodes": 0}
    wrap, ctx_init = Tensor.__dict__["_wrap"], ag.Context.__init__

    def counting_wrap(cls, *a, **k):
        made["tensors"] += 1
        return wrap.__func__(cls, *a, **k)

    def counting_ctx(self, *a, **k):
        made["graph nodes"] += 1
        ctx_init(self, *a, **k)

    Tensor._wrap = classmethod(counting_wrap)
    ag.Context.__init__ = counting_ctx
    tracemalloc.start()
    try:
        step().item()
        snap_bytes = sum(s.size for s in tracemalloc.take_snapshot().statistics("filename"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        Tensor._wrap = wrap
        ag.Context.__init__ = ctx_init
    return {"tensors_created": made["tensors"], "graph_nodes": made["graph nodes"],
            "peak_traced_bytes": peak, "live_after_step_bytes": snap_bytes}


def profile_torch(model_name, batch, device, steps=STEPS):
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from benchmarks.run import _train_batch, make_train_parts, make_train_step

    x_np, y_np = _train_batch(model_name, batch, np.random.default_rng(0))
    step = make_train_step("torch", model_name, device, x_np, y_np)
    for _ in range(3):
        step().item()
    plain = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step().item()
        plain.append(time.perf_counter() - t0)
    model, opt, loss_fn, x, y = make_train_parts("torch", model_name, device, x_np, y_np)

    def pstep():
        with record_function("phase: forward"):
            loss = loss_fn(model(x), y)
        with record_function("phase: zero_grad"):
            opt.zero_grad()
        with record_function("phase: backward"):
            loss.backward()
        with record_function("phase: optimizer"):
            opt.step()
        return loss

    for _ in range(3):
        pstep().item()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            pstep().item()
        wall = (time.perf_counter() - t0) / steps
    cats = {"ATen operators (kernels + dispatch)": 0.0, "autograd engine nodes": 0.0,
            "optimizer (torch.optim record)": 0.0}
    per_op = {}
    for ev in prof.key_averages():
        self_s = ev.self_cpu_time_total / 1e6 / steps
        if ev.key.startswith("aten::"):
            cats["ATen operators (kernels + dispatch)"] += self_s
            per_op[ev.key] = per_op.get(ev.key, 0.0) + self_s
        elif ev.key.startswith("autograd::engine"):
            cats["autograd engine nodes"] += self_s
        elif ev.key.startswith("Optimizer."):
            cats["optimizer (torch.optim record)"] += self_s
    cats["Python and the rest (wall - above)"] = max(wall - sum(cats.values()), 0.0)
    return {"side": "torch", "step_s": statistics.median(plain), "instrumented_step_s": wall,
            "categories_s": cats, "settings": {"threads": torch.get_num_threads()},
            "top_s": dict(sorted(per_op.items(), key=lambda kv: -kv[1])[:12])}


def to_markdown(model_name, batch, device, results):
    lines = [f"## One training step of {model_name}, batch {batch}, {device}: where the time goes",
             "", "Each side in its own process at its own settings; per-step means over "
             f"{results[0].get('steps', STEPS)} steps after warm-up (uninstrumented: median). Times in ms; % of the "
             "instrumented step.", ""]
    for r in results:
        if "error" in r:
            lines += [f"### {r.get('side', '?')}: failed", "", f"    {r['error']}", ""]
            continue
        inst = r["instrumented_step_s"]
        lines += [f"### {r['side']}: step {r['step_s'] * 1e3:.2f} ms uninstrumented, "
                  f"{inst * 1e3:.2f} ms instrumented", "", "| category | ms | % |", "|---|---:|---:|"]
        for k, v in sorted(r["categories_s"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {k} | {v * 1e3:.3f} | {100 * v / inst:.0f}% |")
        if "calls_per_step" in r:
            c = r["calls_per_step"]
            lines += ["", "Calls per step: " + ", ".join(f"{k} {v:.0f}" for k, v in c.items())]
        if "alloc" in r:
            a = r["alloc"]
            lines += [f"Allocation per step: {a['tensors_created']} Tensors, {a['graph_nodes']} "
                      f"graph nodes, peak {a['peak_traced_bytes'] / 2 ** 20:.1f} MiB traced by "
                      "tracemalloc (NumPy buffers included)"]
        lines += ["", "Largest items (inclusive ms per step): " + ", ".join(
            f"{k} {v * 1e3:.2f}" for k, v in r["top_s"].items()), ""]
        if r.get("functions"):
            lines += ["Functions by own time per step (cProfile over the same steps, "
                      "uninstrumented; cProfile's cost inflates every row):", "",
                      "| function | calls | own us | cumulative us |", "|---|---:|---:|---:|"]
            lines += [f"| `{f['function']}` | {f['calls']:.0f} | {f['own_s'] * 1e6:.1f} | "
                      f"{f['cumulative_s'] * 1e6:.1f} |" for f in r["functions"]]
            lines.append("")
    return "\n".join(lines) + "\n"


def _child(argv):
    """Entry point of a profile child process (see run.run_child): one JSON line."""
    from benchmarks.run import report_child

    job = json.loads(argv[0])
    load0 = os.getloadavg()
    fn = profile_ours if job["side"] == "ours" else profile_torch
    report_child(fn(job["model"], job["batch"], job["device"], job.get("steps", STEPS)), job,
                 load0)


def main(model_name, batch=64, device="cpu", out=None, keep_env=False, log=print):
    import datetime as _dt

    from benchmarks.run import HERE, _have_torch, run_child

    steps = 3 if model_name == "resnet18" else STEPS  # seconds per step on a small CPU
    results = []
    for side in ["ours"] + (["torch"] if _have_torch() else []):
        res = run_child({"kind": "profile", "side": side, "model": model_name, "batch": batch,
                         "device": device, "steps": steps}, keep_env, timeout=1800,
                        entry="benchmarks.profile:_child")
        res.setdefault("side", side)
        results.append(res)
    md = to_markdown(model_name, batch, device, results)
    out = out or os.path.join(HERE, "results", f"{_dt.date.today().isoformat()}-{device}")
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, f"profile-{model_name}-{batch}")
    with open(base + ".md", "w") as f:
        f.write(md)
    with open(base + ".json", "w") as f:
        json.dump(results, f, indent=1)
    log(md)
    log(f"written: {base}.md, {base}.json")
    return 0 if all("error" not in r for r in results) else 1
