"""One command that measures tinygrad_k side by side with its baselines.

    python -m benchmarks --device cpu --suite all            # kernels + training steps
    python -m benchmarks --device cuda --suite kernels
    python -m benchmarks --quick                             # a few small cases
    python -m benchmarks --profile lenet5                    # where one step's time goes

**Each side runs in a process of its own, at its own settings.** One child process runs
our side (tinygrad_k's kernels, plus the baselines that share our process:
kernels.reference, and NumPy, whose matmul runs on OpenBLAS's threads beside our TBB
ones -- see benchmarks/README.md), another runs
PyTorch at its defaults (its own thread count and OpenMP wait policy; on a GPU TF32 off).
The kernel children alternate -- ours, torch, ours, torch, ... (``--pairs`` rounds) --
so slow phases of a shared machine hit both sides alike. Within a child every case is
warmed up and timed ``--repeats`` times (median). Reported: the median over the rounds of
each side's per-round median, the spread (min-max over rounds) and ratio = baseline /
ours (> 1: ours is faster), with the per-round ratios' range.

A training step is timed in lockstep (run_train_sessions): per ``--pairs`` round a fresh
process for each side, which then take ``--turns`` turns each, one after the other, a
turn being an untimed step and up to ``--repeats`` timed ones. The 2-core VMs here have
slow phases of seconds (a LeNet-5 step at batch 64 took 4.9 ms in one process and 7.3
in the next, PyTorch's likewise), longer than a turn but shorter than a process's life:
one process a side per round put a whole phase on one side (ratios of 0.77x and 1.77x
for the same code within an hour); turns of a few hundred milliseconds share each phase
between the sides (per-turn ratios within about +-10%). Each process's first step (JIT
cache load, first allocations) is timed as well.

The children's environment is stripped of the thread-pool variables (OMP_*, GOMP_*,
MKL_/OPENBLAS_NUM_THREADS, NUMBA_THREADING_LAYER/NUM_THREADS, glibc's MALLOC_*_,
TINYGRAD_K_MALLOC and TINYGRAD_K_BLAS) unless ``--keep-env``:
each library gets the settings it would have for a new user. The settings each side
actually ran with are recorded in the results.

Outputs, under ``--out`` (default benchmarks/results/<date>-<device>): ``results.md``
(the table also printed to stdout), ``results.json`` (machine info, settings, every
timing) and ``results.png`` (ratio per case).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# variables that choose a thread pool's size or waiting: removed from the children's
# environment so every library runs at its own defaults
POOL_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_DYNAMIC",
            "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
            "NUMBA_THREADING_LAYER", "NUMBA_NUM_THREADS", "KMP_BLOCKTIME",
            "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
            "MALLOC_ARENA_MAX", "TINYGRAD_K_MALLOC", "TINYGRAD_K_BLAS")


# -- timing ------------------------------------------------------------------------------
class Timer:
    """Times a zero-argument callable: wall clock on the cpu; on cuda, events of the
    side's own library (CuPy for ours, torch.cuda for PyTorch) after a synchronisation."""

    def __init__(self, device, side="ours"):
        self.device, self.side = device, side
        self._cp = self._torch = None
        if device == "cuda":
            if side == "torch":
                import torch

                self._torch = torch
            else:
                import cupy

                self._cp = cupy

    def sync(self):
        if self._cp is not None:
            self._cp.cuda.runtime.deviceSynchronize()
        if self._torch is not None:
            self._torch.cuda.synchronize()

    def __call__(self, fn):
        if self._cp is not None:
            self.sync()
            start, stop = self._cp.cuda.Event(), self._cp.cuda.Event()
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            return self._cp.cuda.get_elapsed_time(start, stop) / 1e3
        if self._torch is not None:
            self.sync()
            start = self._torch.cuda.Event(enable_timing=True)
            stop = self._torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            return start.elapsed_time(stop) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def time_interleaved(fns, timer, warmup=1, repeats=5, budget_s=None):
    """Per implementation: the list of seconds per call, calling them round-robin after
    ``warmup`` rounds. ``budget_s``: stop adding repeats once the rounds have taken this
    long (at least 3 rounds)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    timer.sync()
    times = {k: [] for k in fns}
    t_start = time.perf_counter()
    for r in range(repeats):
        for k, fn in fns.items():
            times[k].append(timer(fn))
        if budget_s is not None and r >= 2 and time.perf_counter() - t_start > budget_s:
            break
    return times


# -- machine facts and settings ------------------------------------------------------------
def machine_info(device):
    info = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "device": device,
            "python": platform.python_version(), "platform": platform.platform(),
            "cpu": _cpu_name(), "cores": os.cpu_count(), "numpy": np.__version__}
    for mod in ("numba", "torch", "cupy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = None
    if device == "cuda":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return info


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _env_pools():
    return {k: os.environ[k] for k in POOL_ENV if k in os.environ}


def side_settings(side, device):
    """The thread settings this process actually runs with (call after the first step)."""
    s = {"env": _env_pools() or "none set"}
    if side == "torch":
        import torch

        s["torch_threads"] = torch.get_num_threads()
        s["torch_interop_threads"] = torch.get_num_interop_threads()
        s["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "libgomp default (spin, then sleep)")
        if device == "cuda":
            s["tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
            s["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
        return s
    try:
        import numba

        s["numba_threading_layer"] = numba.threading_layer()
        s["numba_threads"] = numba.get_num_threads()
    except Exception:  # no parallel kernel ran (e.g. only the GPU was used)
        pass
    try:
        from threadpoolctl import threadpool_info

        s["blas"] = [f"{i['internal_api']} {i['num_threads']} threads"
                     for i in threadpool_info() if i["user_api"] == "blas"]
    except ImportError:
        pass
    try:
        import kernels.cpu as kc

        s["gemm"] = kc._cpu_blas.GEMM_NAME
        s["policy"] = kc.THREAD_POLICY
        s["malloc"] = kc.MALLOC_POLICY
    except Exception:
        pass
    return s


def measure_peaks(device, quick):
    """Achievable peaks: GFLOP/s of a large float32 matrix product and GB/s of a large copy
    (bytes read + written), through NumPy (cpu) or CuPy (cuda)."""
    n = 1024 if (quick and device == "cpu") else (2048 if device == "cpu" else 8192)
    m_bytes = (64 if quick else 256) * 2 ** 20
    timer = Timer(device)
    xp = np
    if device == "cuda":
        import cupy as xp
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    t = statistics.median(time_interleaved({"mm": lambda: a @ a}, timer, 1, 3)["mm"])
    src = xp.ones(m_bytes // 4, dtype=np.float32)
    dst = xp.empty_like(src)
    tc = statistics.median(time_interleaved({"cp": lambda: xp.copyto(dst, src)}, timer, 1, 5)["cp"])
    return {"matmul_gflops": 2 * n ** 3 / t / 1e9, "matmul_n": n,
            "copy_gbps": 2 * src.nbytes / tc / 1e9, "copy_bytes": int(src.nbytes)}


# -- kernel cases ---------------------------------------------------------------------------
MATMUL_SQUARE = (256, 512, 1024, 2048, 4096)
MATMUL_MODEL = {  # (M, K, N) that the seed models run at batch 64
    "mlp fc1 64x784x256": (64, 784, 256),
    "lenet fc1 64x400x120": (64, 400, 120),
    "resnet18 fc 64x512x10": (64, 512, 10),
}
CONV_SHAPES = {  # name: (x shape, w shape, stride, padding)
    "lenet5 conv1": ((64, 1, 28, 28), (6, 1, 5, 5), 1, 2),
    "lenet5 conv2": ((64, 6, 14, 14), (16, 6, 5, 5), 1, 0),
    "cifar-lenet conv1": ((64, 3, 32, 32), (6, 3, 5, 5), 1, 0),
    "resnet18 stem": ((64, 3, 32, 32), (64, 3, 3, 3), 1, 1),
    "resnet18 64@32": ((64, 64, 32, 32), (64, 64, 3, 3), 1, 1),
    "resnet18 128@16 s2": ((64, 64, 32, 32), (128, 64, 3, 3), 2, 1),
    "resnet18 128@16": ((64, 128, 16, 16), (128, 128, 3, 3), 1, 1),
    "resnet18 256@8": ((64, 256, 8, 8), (256, 256, 3, 3), 1, 1),
    "resnet18 512@4": ((64, 512, 4, 4), (512, 512, 3, 3), 1, 1),
}
POOL_SHAPES = {
    "lenet5 pool1": ((64, 6, 28, 28), 2, 2, 0),
    "lenet5 pool2": ((64, 16, 10, 10), 2, 2, 0),
    "resnet-ish 64@32 3x3 s2 p1": ((64, 64, 32, 32), 3, 2, 1),
}
QUICK = {"matmul": (256, 512), "model_mm": ("lenet fc1 64x400x120",),
         "conv": ("lenet5 conv1", "lenet5 conv2", "resnet18 128@16"),
         "pool": ("lenet5 pool1", "resnet-ish 64@32 3x3 s2 p1")}


def _out_side(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def _torch(device):
    """PyTorch at its defaults (threads untouched); on a GPU TF32 off and cuDNN autotuning
    on, as a user comparing FP32 speed would set it."""
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda":
        if not torch.cuda.is_available():
            return None
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    return torch


def kernel_cases(device, quick, side):
    """Yield (group, name, work dict, {impl: fn}) for one side: "ours" (kernels.cpu or
    kernels.cuda, kernels.reference on small cases, NumPy / cuBLAS through CuPy) or
    "torch". Both sides draw the same arrays in the same order. Work: flops or bytes."""
    import kernels

    xp = np
    if device == "cuda":
        import cupy as xp
    rng = np.random.default_rng(0)
    if side == "ours":
        mods = {"ours": kernels.get("cuda" if device == "cuda" else "cpu")}
        if device == "cpu":
            mods["reference"] = kernels.get("reference")
        torch = None
    else:
        mods = {}
        torch = _torch(device)
        if torch is None:
            return
        import torch.nn.functional as tf
    tdev = "cuda" if device == "cuda" else "cpu"

    def arr(shape):
        return xp.asarray(rng.standard_normal(shape, dtype=np.float32))

    def tt(a):
        return torch.as_tensor(a, device=tdev)

    sizes = QUICK["matmul"] if quick else (MATMUL_SQUARE if device == "cuda" else MATMUL_SQUARE[:4])
    mm_cases = [(f"square {n}", (n, n, n)) for n in sizes]
    mm_cases += [(k, v) for k, v in MATMUL_MODEL.items() if not quick or k in QUICK["model_mm"]]
    for name, (m, k, n) in mm_cases:
        a, b = arr((m, k)), arr((k, n))
        fns = {key: (lambda mod=mod: mod.matmul(a, b)) for key, mod in mods.items()
               if key == "ours" or n <= 512}
        if side == "ours":
            fns["numpy" if device == "cpu" else "cublas (cupy)"] = lambda: a @ b
        else:
            ta, tb = tt(a), tt(b)
            fns["torch"] = lambda: ta @ tb
        yield "matmul", name, {"flops": 2 * m * n * k}, fns

    for name, (xs, ws, s, p) in CONV_SHAPES.items():
        if quick and name not in QUICK["conv"]:
            continue
        x, w = arr(xs), arr(ws)
        oh, ow = _out_side(xs[2], ws[2], s, p), _out_side(xs[3], ws[3], s, p)
        dy = arr((xs[0], ws[0], oh, ow))
        ref_ok = xs[1] * ws[0] <= 64 * 64
        flops = 2 * xs[0] * ws[0] * oh * ow * xs[1] * ws[2] * ws[3]
        if side == "torch":
            tx, tw, tdy = tt(x), tt(w), tt(dy)
        for op in ("forward", "backward_input", "backward_weight"):
            fns = {}
            for key, mod in mods.items():
                if key != "ours" and not ref_ok:
                    continue
                if op == "forward":
                    fns[key] = lambda mod=mod: mod.conv2d_forward(x, w, s, p)
                elif op == "backward_input":
                    fns[key] = lambda mod=mod: mod.conv2d_backward_input(dy, w, xs, s, p)
                else:
                    fns[key] = lambda mod=mod: mod.conv2d_backward_weight(dy, x, ws, s, p)
            if side == "torch":
                if op == "forward":
                    fns["torch"] = lambda: tf.conv2d(tx, tw, None, s, p)
                elif op == "backward_input":
                    fns["torch"] = lambda: torch.nn.grad.conv2d_input(xs, tw, tdy, s, p)
                else:
                    fns["torch"] = lambda: torch.nn.grad.conv2d_weight(tx, ws, tdy, s, p)
            yield f"conv2d {op}", name, {"flops": flops}, fns

    for name, (xs, k, s, p) in POOL_SHAPES.items():
        if quick and name not in QUICK["pool"]:
            continue
        x = arr(xs)
        out = xs[:2] + (_out_side(xs[2], k, s, p), _out_side(xs[3], k, s, p))
        dy = arr(out)
        y_bytes = int(np.prod(out)) * 4
        fwd_bytes = x.nbytes + y_bytes + 2 * y_bytes  # int64 indices written
        bwd_bytes = x.nbytes + dy.nbytes + 2 * y_bytes
        if side == "ours":
            _, idx = mods["ours"].maxpool2d_forward(x, k, s, p)
            fwd = {key: (lambda mod=mod: mod.maxpool2d_forward(x, k, s, p)) for key, mod in mods.items()}
            # with the window, as the framework calls it (kernels.cuda then gathers per input)
            bwd = {key: (lambda mod=mod: mod.maxpool2d_backward(dy, idx, xs, k, s, p))
                   for key, mod in mods.items()}
            afwd = {key: (lambda mod=mod: mod.avgpool2d_forward(x, k, s, p)) for key, mod in mods.items()}
            abwd = {key: (lambda mod=mod: mod.avgpool2d_backward(dy, xs, k, s, p))
                    for key, mod in mods.items()}
        else:
            tx, tdy = tt(x), tt(dy)
            _, tidx = tf.max_pool2d(tx, k, s, p, return_indices=True)
            fwd = {"torch": lambda: tf.max_pool2d(tx, k, s, p, return_indices=True)}
            bwd = {"torch": lambda: tf.max_unpool2d(tdy, tidx, k, s, p, output_size=xs[2:])}
            afwd = {"torch": lambda: tf.avg_pool2d(tx, k, s, p)}
            abwd = {"torch": lambda: torch.ops.aten.avg_pool2d_backward(
                tdy, tx, [k, k], [s, s], [p, p], False, True, None)}
        yield "maxpool2d forward", name, {"bytes": fwd_bytes}, fwd
        yield "maxpool2d backward", name, {"bytes": bwd_bytes}, bwd
        yield "avgpool2d forward", name, {"bytes": x.nbytes + y_bytes}, afwd
        yield "avgpool2d backward", name, {"bytes": x.nbytes + dy.nbytes}, abwd


# -- training cases ------------------------------------------------------------------------
TRAIN_MODELS = {"mlp": (1, 28, 28), "lenet5": (1, 28, 28), "lenet": (3, 32, 32),
                "resnet18": (3, 32, 32)}


def make_train_step(impl, model_name, device, x_np, y_np):
    """A zero-argument callable doing one full training step (forward, cross-entropy,
    backward, SGD-momentum update) and returning the loss: ``impl`` "ours" (tinygrad_k)
    or "torch" (PyTorch eager, TF32 off on a GPU). Both frameworks spell the step alike."""
    parts = make_train_parts(impl, model_name, device, x_np, y_np)
    model, opt, loss_fn, x, y = parts

    def step():
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step


def make_train_parts(impl, model_name, device, x_np, y_np):
    """(model, optimizer, loss function, x, y) of the benchmark step for one framework."""
    shape = TRAIN_MODELS[model_name]
    if impl == "ours":
        import tinygrad_k as tk
        from tinygrad_k import nn, optim
        from tinygrad_k.models import build

        tk.manual_seed(0)
        model = build(model_name, shape, 10).to(device)
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        x, y = tk.tensor(x_np).to(device), tk.tensor(y_np).to(device)
    else:
        from benchmarks.torch_models import build_torch

        torch = _torch(device)
        torch.manual_seed(0)
        tdev = "cuda" if device == "cuda" else "cpu"
        model = build_torch(model_name, shape, 10).to(tdev)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        x, y = torch.as_tensor(x_np, device=tdev), torch.as_tensor(y_np, device=tdev)
    return model, opt, loss_fn, x, y


def _train_batch(model_name, batch, rng):
    x_np = rng.standard_normal((batch,) + TRAIN_MODELS[model_name], dtype=np.float32)
    return x_np, rng.integers(0, 10, batch)


def train_combos(device, quick, models=None):
    if quick:
        return [("lenet5", 64)]
    combos = [(m, b) for m in (models or TRAIN_MODELS) for b in (64, 256)]
    if device == "cpu":
        combos = [c for c in combos if c != ("resnet18", 256)]
    return combos


# -- the children ---------------------------------------------------------------------------
def child_kernels(side, device, quick, repeats):
    """Every kernel case of one side: {"group|case": {impl: [seconds, ...]}}, work."""
    timer = Timer(device, side)
    out, work = {}, {}
    for group, name, w, fns in kernel_cases(device, quick, side):
        key = f"{group}|{name}"
        out[key] = time_interleaved(fns, timer, warmup=1, repeats=repeats, budget_s=5.0)
        work[key] = w
    return {"times": out, "work": work}


def child_train(side, device, model_name, batch, repeats):
    """One fresh process, one training case: the first step (JIT cache, first
    allocations) then ``repeats`` timed steps after 2 warm-up steps."""
    x_np, y_np = _train_batch(model_name, int(batch), np.random.default_rng(0))
    step = make_train_step("ours" if side == "ours" else "torch", model_name, device, x_np, y_np)
    timer = Timer(device, side)
    first = timer(lambda: step().item())
    label = "ours" if side == "ours" else "torch eager"
    times = time_interleaved({label: lambda: step().item()}, timer, warmup=2, repeats=repeats,
                             budget_s=30.0)
    return {"times": {f"train step|{model_name} batch {batch}": times},
            "work": {f"train step|{model_name} batch {batch}": {"images": int(batch)}},
            "first_step_s": first}


def _train_session(argv):
    """Entry point of a training-step child that takes turns (run_train_sessions): builds
    the step, times the first one, prints ``BENCH_READY {...}``, then for each line
    ``{"warmup": w, "repeats": n, "budget_s": b}`` on stdin runs w untimed steps and up
    to n timed ones (at least one; no new one once b seconds have gone) and prints
    ``BENCH_TURN [seconds, ...]``; at the end of stdin, ``BENCH_JSON`` with its settings."""
    job = json.loads(argv[0])
    load0 = os.getloadavg()
    x_np, y_np = _train_batch(job["model"], int(job["batch"]), np.random.default_rng(0))
    side = job["side"]
    step = make_train_step("ours" if side == "ours" else "torch", job["model"], job["device"],
                           x_np, y_np)
    timer = Timer(job["device"], side)
    first = timer(lambda: step().item())
    print("BENCH_READY " + json.dumps({"first_step_s": first}), flush=True)
    for line in sys.stdin:
        turn = json.loads(line)
        for _ in range(turn["warmup"]):
            step().item()
        timer.sync()
        times, t0 = [], time.perf_counter()
        for _ in range(turn["repeats"]):
            times.append(timer(lambda: step().item()))
            if time.perf_counter() - t0 > turn["budget_s"]:
                break
        print("BENCH_TURN " + json.dumps(times), flush=True)
    report_child({}, job, load0)


def _child(argv):
    """Entry point of a child process: runs one job and prints one JSON line."""
    job = json.loads(argv[0])
    load0 = os.getloadavg()
    if job["kind"] == "kernels":
        res = child_kernels(job["side"], job["device"], job["quick"], job["repeats"])
    else:
        res = child_train(job["side"], job["device"], job["model"], job["batch"], job["repeats"])
    report_child(res, job, load0)


def report_child(res, job, load0):
    """A child's last act: its settings and load average added, one JSON line printed."""
    res["settings"] = side_settings(job["side"], job["device"])
    res["loadavg"] = [load0[0], os.getloadavg()[0]]
    print("BENCH_JSON " + json.dumps(res))


def run_child(job, keep_env=False, timeout=900, entry="benchmarks.run:_child", env_extra=None):
    """Run one job in a fresh interpreter through ``entry`` ("module:function", called with
    the job as JSON in argv), with ``env_extra`` added to its environment; its JSON
    result, or {"error": ...}."""
    env = _child_env(keep_env, env_extra)
    module, function = entry.split(":")
    code = f"import sys; from {module} import {function}; {function}(sys.argv[1:])"
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(job)], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-5:]}


def _child_env(keep_env, env_extra=None):
    env = dict(os.environ)
    if not keep_env:
        for k in POOL_ENV:
            env.pop(k, None)
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


class _TurnTaker:
    """One child process of _train_session: ``ready()`` -> its first step's seconds,
    ``turn(...)`` -> a turn's step times, ``close()`` -> its final JSON (settings)."""

    def __init__(self, job, keep_env):
        import tempfile

        code = "import sys; from benchmarks.run import _train_session; _train_session(sys.argv[1:])"
        self.err = tempfile.TemporaryFile("w+")  # (a pipe could fill up and stall the child)
        self.proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(job)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True, env=_child_env(keep_env),
                                     cwd=ROOT)

    def _read(self, tag):
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
        self.proc.wait()
        self.err.seek(0)
        err = self.err.read().strip().splitlines()[-5:]
        raise RuntimeError(f"the child ended before {tag} (exit status "
                           f"{self.proc.returncode}): {err}")

    def ready(self):
        return self._read("BENCH_READY")["first_step_s"]

    def turn(self, warmup, repeats, budget_s):
        self.proc.stdin.write(json.dumps({"warmup": warmup, "repeats": repeats,
                                          "budget_s": budget_s}) + "\n")
        self.proc.stdin.flush()
        return self._read("BENCH_TURN")

    def close(self):
        self.proc.stdin.close()
        try:
            return self._read("BENCH_JSON")
        finally:
            self.proc.wait()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.err.close()


def run_train_sessions(job, sides, sessions, turns, keep_env=False, budget_s=2.0,
                       timeout=900):
    """A training-step case timed in lockstep: ``sessions`` times, a fresh process per
    side (its own settings, as run_child), the sides then take ``turns`` turns each,
    one after the other (ours, torch, torch, ours, ...: each goes first in half of
    them), a turn being one untimed step (the other side's threads may still be winding
    down) and up to job["repeats"] timed ones within ``budget_s``. A shared machine's
    slow phases (seconds long, on the 2-core VMs here) then fall on both sides' turns
    alike. -> {"times": {key: {impl: [per-turn median, ...]}} (the sides' lists
    aligned turn by turn), "work", "first_step_s": {side: [per session]}, "settings",
    "loadavg": [...], "errors": [...]}. A session still running after ``timeout`` seconds
    is stopped (its children killed) and reported as an error."""
    import threading

    key = f"train step|{job['model']} batch {job['batch']}"
    label = {"ours": "ours", "torch": "torch eager"}
    out = {"times": {key: {label[s]: [] for s in sides}},
           "work": {key: {"images": int(job["batch"])}},
           "first_step_s": {s: [] for s in sides}, "settings": {}, "loadavg": [], "errors": []}
    for _ in range(sessions):
        load0 = os.getloadavg()[0]
        takers = {s: _TurnTaker(dict(job, side=s), keep_env) for s in sides}
        expired = []
        watchdog = threading.Timer(timeout, lambda: expired.append(True) or [
            t.proc.kill() for t in takers.values()])
        watchdog.start()
        try:
            for s, t in takers.items():
                out["first_step_s"][s].append(t.ready())
            for i in range(turns):
                order = sides if i % 2 == 0 else sides[::-1]
                got = {s: takers[s].turn(1, job["repeats"], budget_s) for s in order}
                for s in sides:
                    out["times"][key][label[s]].append(statistics.median(got[s]))
            for s, t in takers.items():
                res = t.close()
                out["settings"].setdefault(s, res["settings"])
                out["loadavg"].append([load0, res["loadavg"][1]])
        except (RuntimeError, OSError, ValueError) as e:
            why = f"timed out after {timeout} s" if expired else str(e)
            out["errors"].append(f"train {job['model']} {job['batch']}: {why}")
        finally:
            watchdog.cancel()
            for t in takers.values():
                t.kill()
    # a session that failed part-way may leave one side a turn ahead: keep whole pairs
    n = min(len(v) for v in out["times"][key].values())
    for v in out["times"][key].values():
        del v[n:]
    return out


def _have_torch():
    try:
        import importlib.util

        return importlib.util.find_spec("torch") is not None
    except Exception:
        return False


# -- running and reporting -----------------------------------------------------------------------
def run(device="cpu", suite="all", quick=False, out=None, repeats=None, pairs=None,
        models=None, keep_env=False, log=print, turns=None):
    info = machine_info(device)
    info["peaks"] = peaks = measure_peaks(device, quick)
    info["loadavg_start"] = list(os.getloadavg())
    reps = repeats or (3 if quick else 7)
    pairs = pairs or (1 if quick else 3)
    turns = turns or (2 if quick else 6)
    sides = ["ours"] + (["torch"] if _have_torch() else [])
    log(f"# tinygrad_k benchmarks: {device}, suite {suite}{' (quick)' if quick else ''}, "
        f"{pairs} round(s) of {' / '.join(sides)} in separate processes")
    log(f"machine: {info.get('gpu') or info['cpu']}, {info['cores']} cores, load average "
        f"{info['loadavg_start'][0]:.1f}; peaks: {peaks['matmul_gflops']:.0f} GFLOP/s "
        f"(float32 {peaks['matmul_n']}^3 product), {peaks['copy_gbps']:.1f} GB/s (copy)")
    jobs = []
    if suite in ("kernels", "all"):
        jobs.append({"kind": "kernels", "device": device, "quick": quick, "repeats": reps})
    if suite in ("train", "all"):
        for m, b in train_combos(device, quick, models):
            jobs.append({"kind": "train", "device": device, "model": m, "batch": b,
                         "repeats": reps})
    # samples[key][impl] = [per-round median, ...]; first[key][side] = [s, ...]
    samples, work, first, settings, errors, loads = {}, {}, {}, {}, [], []
    for job in jobs:
        if job["kind"] == "train":
            res = run_train_sessions(job, sides, pairs, turns, keep_env)
            for e in res["errors"]:
                errors.append(e)
                log(f"  ! {e}")
            for side, st in res["settings"].items():
                settings.setdefault(side, st)
            loads.extend(res["loadavg"])
            work.update(res["work"])
            for key, per_impl in res["times"].items():
                for impl, ts in per_impl.items():
                    if ts:
                        samples.setdefault(key, {})[impl] = ts
                first.setdefault(key, {}).update({s: v for s, v in res["first_step_s"].items()
                                                  if v})
        for rnd in range(pairs if job["kind"] != "train" else 0):
            for side in sides:
                res = run_child(dict(job, side=side), keep_env)
                label = f"{job['kind']} {job.get('model', '')} {job.get('batch', '')} {side}"
                if "error" in res:
                    errors.append(f"{label}: {res['error']}")
                    log(f"  ! {label}: {res['error']}")
                    continue
                settings.setdefault(side, res["settings"])
                loads.append(res["loadavg"])
                work.update(res["work"])
                for key, per_impl in res["times"].items():
                    for impl, ts in per_impl.items():
                        samples.setdefault(key, {}).setdefault(impl, []).append(
                            statistics.median(ts))
                if "first_step_s" in res:
                    key = next(iter(res["times"]))
                    first.setdefault(key, {}).setdefault(side, []).append(res["first_step_s"])
        if job["kind"] == "train":
            key = f"train step|{job['model']} batch {job['batch']}"
            if "ours" in samples.get(key, {}):
                row = _row(key, samples[key], work[key], peaks, first.get(key))
                log(_fmt_row(row))
    rows = [_row(k, v, work[k], peaks, first.get(k)) for k, v in samples.items() if "ours" in v]
    if suite in ("kernels", "all"):
        for r in rows:
            if r["group"] != "train step":
                log(_fmt_row(r))
    info["loadavg_end"] = list(os.getloadavg())
    info["settings"] = settings
    info["pairs"], info["repeats"], info["turns"] = pairs, reps, turns
    info["child_loadavg"] = loads
    info["errors"] = errors
    out = out or os.path.join(HERE, "results",
                              f"{_dt.date.today().isoformat()}-{device}{'-quick' if quick else ''}")
    os.makedirs(out, exist_ok=True)
    md = to_markdown(info, rows)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"machine": info, "rows": rows}, f, indent=1)
    png = plot(rows, os.path.join(out, "results.png"))
    log("")
    log(md)
    log(f"written: {out}/results.md, results.json" + (", results.png" if png else ""))
    return {"machine": info, "rows": rows, "out": out}


def _row(key, per_impl, work, peaks, first=None):
    """per_impl: {impl: [per-round median seconds]} -> one table row."""
    group, name = key.split("|", 1)
    med = {k: statistics.median(v) for k, v in per_impl.items()}
    ours = med["ours"]
    row = {"group": group, "case": name, "times_s": med,
           "spread_s": {k: [min(v), max(v)] for k, v in per_impl.items()},
           "rounds_s": per_impl, "ratios": {}, "ratio_range": {}}
    for k, v in per_impl.items():
        if k == "ours":
            continue
        row["ratios"][k] = med[k] / ours
        per_round = [b / a for a, b in zip(per_impl["ours"], v)]
        row["ratio_range"][k] = [min(per_round), max(per_round)] if per_round else None
    if "flops" in work:
        row["gflops"] = work["flops"] / ours / 1e9
        row["pct_peak"] = 100 * row["gflops"] / peaks["matmul_gflops"]
    if "bytes" in work:
        row["gbps"] = work["bytes"] / ours / 1e9
        row["pct_peak"] = 100 * row["gbps"] / peaks["copy_gbps"]
    if "images" in work:
        row["images_per_s"] = {k: work["images"] / v for k, v in med.items()}
    if first:
        row["first_step_s"] = {k: statistics.median(v) for k, v in first.items()}
    return row


def _fmt_row(r):
    ratios = ", ".join(f"{k} {v:.2f}x" for k, v in r["ratios"].items())
    return f"{r['group']:<22} {r['case']:<28} ours {r['times_s']['ours'] * 1e3:9.3f} ms  {ratios}"


def _fmt_settings(s):
    return "; ".join(f"{k} {v}" for k, v in s.items())


def to_markdown(info, rows):
    lo = min([info["loadavg_start"][0]] + [a for pair in info.get("child_loadavg", []) for a in pair])
    hi = max([info["loadavg_start"][0]] + [a for pair in info.get("child_loadavg", []) for a in pair])
    lines = [f"## {info.get('gpu') or info['cpu']} ({info['device']}), {info['date']}", "",
             f"numpy {info['numpy']}, numba {info.get('numba')}, torch {info.get('torch')}, "
             f"cupy {info.get('cupy')}, {info['cores']} cores. Peaks measured in this run: "
             f"{info['peaks']['matmul_gflops']:.0f} GFLOP/s matmul, "
             f"{info['peaks']['copy_gbps']:.1f} GB/s copy. 1-minute load average during the "
             f"run: {lo:.1f} to {hi:.1f}" + (
                 " (above the core count: the machine was shared and times are noisy -- "
                 "compare ratios, and read the spread)." if hi > info["cores"] else
                 " (the benchmark's own processes included; at most the core count)."), "",
             f"Each side in its own process. Kernels: {info['pairs']} alternating round(s) "
             f"(ours, torch, ours, ...), median of {info['repeats']} calls per round; "
             "time = median over rounds [min-max over rounds]. Training steps: "
             f"{info['pairs']} pair(s) of fresh processes, each pair taking "
             f"{info.get('turns', 1)} turns in lockstep (ours, torch, torch, ours, ...; a "
             f"turn: one untimed step, then the median of up to {info['repeats']} timed "
             "ones within 2 s); time = median over turns [min-max over turns]. "
             "ratio = baseline time / our time (> 1: ours is faster) [per-round or "
             "per-turn range].", ""]
    for side, s in info.get("settings", {}).items():
        lines.append(f"* settings, {side}: {_fmt_settings(s)}")
    for e in info.get("errors", []):
        lines.append(f"* failed: {e}")
    lines += ["", "| op | case | ours (ms) | throughput | % peak | baselines (ms) | ratios |",
              "|---|---|---:|---:|---:|---|---|"]

    def ms(r, k):
        lo_, hi_ = r["spread_s"][k]
        return f"{r['times_s'][k] * 1e3:.3f} [{lo_ * 1e3:.3g}-{hi_ * 1e3:.3g}]"

    for r in rows:
        thr = ""
        if "gflops" in r:
            thr = f"{r['gflops']:.1f} GFLOP/s"
        elif "gbps" in r:
            thr = f"{r['gbps']:.1f} GB/s"
        elif "images_per_s" in r:
            thr = f"{r['images_per_s']['ours']:.0f} img/s"
        pct = f"{r['pct_peak']:.0f}%" if "pct_peak" in r else ""
        base = ", ".join(f"{k} {ms(r, k)}" for k in r["times_s"] if k != "ours")
        rat = ", ".join(f"{k} {v:.2f}x" + (f" [{r['ratio_range'][k][0]:.2f}-"
                                           f"{r['ratio_range'][k][1]:.2f}]"
                                           if r["ratio_range"].get(k) else "")
                        for k, v in r["ratios"].items())
        lines.append(f"| {r['group']} | {r['case']} | {ms(r, 'ours')} | {thr} "
                     f"| {pct} | {base} | {rat} |")
    firsts = [r for r in rows if "first_step_s" in r]
    if firsts:
        lines += ["", "Time to first training step, each a fresh process (imports and model "
                  "building excluded; JIT compilation or loading Numba's on-disk cache and "
                  "first allocations included), median over rounds:",
                  "", "| case | ours (s) | torch (s) |", "|---|---:|---:|"]

        def sec(v):
            return "-" if v is None else f"{v:.3f}"

        for r in firsts:
            f = r["first_step_s"]
            lines.append(f"| {r['case']} | {sec(f.get('ours'))} | {sec(f.get('torch'))} |")
    return "\n".join(lines) + "\n"


def plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels, series = [], {}
    for r in rows:
        labels.append(f"{r['group']}: {r['case']}")
        for k, v in r["ratios"].items():
            series.setdefault(k, [np.nan] * len(rows))[len(labels) - 1] = v
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(rows) + 1.5))
    ypos = np.arange(len(rows))
    h = 0.8 / max(len(series), 1)
    for i, (k, vals) in enumerate(series.items()):
        ax.barh(ypos + i * h, vals, height=h, label=f"{k} time / ours")
    ax.axvline(1.0, color="k", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(ypos + 0.4 - h / 2)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ratio (> 1: ours faster)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
