"""One command that measures tinygrad_k side by side with its baselines.

    python -m benchmarks --device cpu --suite all            # kernels + training steps
    python -m benchmarks --device cuda --suite kernels
    python -m benchmarks --quick                             # < 2 minutes on a laptop CPU

Every case runs ours and every available baseline in the same process, interleaved
(ours, baseline 1, baseline 2, ours, ...), after warm-up, and reports the median of the
repeats. GPU timings use CUDA events recorded after a synchronisation.

Baselines: kernels.reference and NumPy (cpu), PyTorch (cpu and cuda, TF32 off), CuPy /
cuBLAS (cuda). Figures: time, GFLOP/s or GB/s, percent of the machine's peak (a large
matrix product and a large copy, measured once per run) and ratio = baseline time / our
time (> 1: we are faster).

Outputs, under ``--out`` (default benchmarks/results/<date>-<device>): ``results.md``
(the table also printed to stdout), ``results.json`` (machine info and every timing) and
``results.png`` (ratio per case).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time

# Every OpenMP pool in the process (Numba's, PyTorch's) must wait passively: a spinning
# pool steals the cores from the other library's next call and both slow down several-fold
# on a small machine. Set before anything loads an OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


# -- timing ------------------------------------------------------------------------------
class Timer:
    """Times a zero-argument callable on one device (wall clock on cpu, CUDA events on cuda)."""

    def __init__(self, device):
        self.device = device
        self._cp = None
        if device == "cuda":
            import cupy

            self._cp = cupy

    def sync(self):
        if self._cp is not None:
            self._cp.cuda.runtime.deviceSynchronize()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()
            except ImportError:
                pass

    def __call__(self, fn):
        if self._cp is None:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        self.sync()
        start, stop = self._cp.cuda.Event(), self._cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        self.sync()  # torch kernels run on torch's stream: wait for them too
        return self._cp.cuda.get_elapsed_time(start, stop) / 1e3


def time_interleaved(fns, timer, warmup=1, repeats=5, budget_s=None):
    """Median seconds per implementation, calling them round-robin after ``warmup`` rounds.

    ``budget_s``: stop adding repeats once a round has taken this long (slow references).
    """
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
    return {k: statistics.median(v) for k, v in times.items()}


# -- machine facts ------------------------------------------------------------------------
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


def measure_peaks(device, timer, quick):
    """Achievable peaks: GFLOP/s of a large float32 matrix product and GB/s of a large copy
    (bytes read + written)."""
    n = 1024 if (quick and device == "cpu") else (2048 if device == "cpu" else 8192)
    m_bytes = (64 if quick else 256) * 2 ** 20
    if device == "cuda":
        import cupy as xp
    else:
        xp = np
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    t = time_interleaved({"mm": lambda: a @ a}, timer, warmup=1, repeats=3)["mm"]
    src = xp.ones(m_bytes // 4, dtype=np.float32)
    dst = xp.empty_like(src)
    tc = time_interleaved({"cp": lambda: xp.copyto(dst, src)}, timer, warmup=1, repeats=5)["cp"]
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


def _impls(device):
    """name -> kernel module, ours first."""
    import kernels

    if device == "cuda":
        return {"ours": kernels.get("cuda")}
    return {"ours": kernels.get("cpu"), "reference": kernels.get("reference")}


def _torch(device):
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
    else:
        torch.set_num_threads(os.cpu_count() or 1)
    return torch


def kernel_cases(device, quick):
    """Yield (group, name, work dict, {impl: fn}). Work: flops and/or bytes."""
    xp = np
    if device == "cuda":
        import cupy as xp
    rng = np.random.default_rng(0)
    mods = _impls(device)
    torch = _torch(device)
    tdev = "cuda" if device == "cuda" else "cpu"

    def arr(shape):
        return xp.asarray(rng.standard_normal(shape, dtype=np.float32))

    def tt(a):
        return torch.as_tensor(a, device=tdev) if device == "cpu" else torch.as_tensor(a, device=tdev)

    sizes = QUICK["matmul"] if quick else (MATMUL_SQUARE if device == "cuda" else MATMUL_SQUARE[:4])
    mm_cases = [(f"square {n}", (n, n, n)) for n in sizes]
    mm_cases += [(k, v) for k, v in MATMUL_MODEL.items() if not quick or k in QUICK["model_mm"]]
    for name, (m, k, n) in mm_cases:
        a, b = arr((m, k)), arr((k, n))
        fns = {key: (lambda mod=mod: mod.matmul(a, b)) for key, mod in mods.items()
               if key == "ours" or n <= 512}
        if device == "cpu":
            fns["numpy"] = lambda: a @ b
        else:
            fns["cublas (cupy)"] = lambda: a @ b
        if torch is not None:
            ta, tb = tt(a), tt(b)
            fns["torch"] = lambda: ta @ tb
        yield "matmul", name, {"flops": 2 * m * n * k}, fns

    for name, (xs, ws, s, p) in CONV_SHAPES.items():
        if quick and name not in QUICK["conv"]:
            continue
        x, w = arr(xs), arr(ws)
        ref_ok = xs[1] * ws[0] <= 64 * 64 and device == "cpu"
        y = mods["ours"].conv2d_forward(x, w, s, p)
        dy = arr(y.shape)
        oh, ow = y.shape[2:]
        flops = 2 * xs[0] * ws[0] * oh * ow * xs[1] * ws[2] * ws[3]
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
            if torch is not None:
                import torch.nn.functional as tf

                tx, tw, tdy = tt(x), tt(w), tt(dy)
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
        y, idx = mods["ours"].maxpool2d_forward(x, k, s, p)
        dy = arr(y.shape)
        fwd_bytes = x.nbytes + y.nbytes
        bwd_bytes = x.nbytes + dy.nbytes + idx.nbytes
        tx = tdy = None
        if torch is not None:
            import torch.nn.functional as tf

            tx = tt(x).requires_grad_(False)
            tdy = tt(dy)
            _, tidx = tf.max_pool2d(tx, k, s, p, return_indices=True)
        fwd = {key: (lambda mod=mod: mod.maxpool2d_forward(x, k, s, p)) for key, mod in mods.items()}
        bwd = {key: (lambda mod=mod: mod.maxpool2d_backward(dy, idx, xs)) for key, mod in mods.items()}
        afwd = {key: (lambda mod=mod: mod.avgpool2d_forward(x, k, s, p)) for key, mod in mods.items()}
        abwd = {key: (lambda mod=mod: mod.avgpool2d_backward(dy, xs, k, s, p)) for key, mod in mods.items()}
        if torch is not None:
            fwd["torch"] = lambda: tf.max_pool2d(tx, k, s, p, return_indices=True)
            bwd["torch"] = lambda: tf.max_unpool2d(tdy, tidx, k, s, p, output_size=xs[2:])
            afwd["torch"] = lambda: tf.avg_pool2d(tx, k, s, p)
            abwd["torch"] = lambda: torch.ops.aten.avg_pool2d_backward(
                tdy, tx, [k, k], [s, s], [p, p], False, True, None)
        yield "maxpool2d forward", name, {"bytes": fwd_bytes}, fwd
        yield "maxpool2d backward", name, {"bytes": bwd_bytes}, bwd
        yield "avgpool2d forward", name, {"bytes": x.nbytes + y.nbytes}, afwd
        yield "avgpool2d backward", name, {"bytes": x.nbytes + dy.nbytes}, abwd


# -- training cases ------------------------------------------------------------------------
TRAIN_MODELS = {"lenet5": (1, 28, 28), "lenet": (3, 32, 32), "resnet18": (3, 32, 32)}


def make_train_step(impl, model_name, device, x_np, y_np):
    """A zero-argument callable doing one full training step (forward, cross-entropy,
    backward, SGD-momentum update) and returning the loss: ``impl`` "ours" (tinygrad_k)
    or "torch" (PyTorch eager, TF32 off on a GPU). Both frameworks spell the step alike."""
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
        tdev = "cuda" if device == "cuda" else "cpu"
        model = build_torch(model_name, shape, 10).to(tdev)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        x, y = torch.as_tensor(x_np, device=tdev), torch.as_tensor(y_np, device=tdev)

    def step():
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step


def _train_batch(model_name, batch, rng):
    x_np = rng.standard_normal((batch,) + TRAIN_MODELS[model_name], dtype=np.float32)
    return x_np, rng.integers(0, 10, batch)


def _first_step_child(impl, model_name, batch, device):
    """Run in a fresh process by ``first_step_seconds``: build, then time one step."""
    x_np, y_np = _train_batch(model_name, int(batch), np.random.default_rng(0))
    step = make_train_step(impl, model_name, device, x_np, y_np)
    t0 = time.perf_counter()
    step().item()
    print("FIRST_STEP_S", time.perf_counter() - t0)


def first_step_seconds(impl, model_name, batch, device):
    """Seconds of the first training step in a fresh process (imports and model building
    excluded; JIT compilation or loading Numba's on-disk cache, first allocations and
    CUDA context set-up included) -- in this process the kernel suite has warmed
    everything up. None when the subprocess fails."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(HERE)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    code = ("import sys; from benchmarks.run import _first_step_child; "
            "_first_step_child(*sys.argv[1:])")
    try:
        proc = subprocess.run([sys.executable, "-c", code, impl, model_name, str(batch), device],
                              capture_output=True, text=True, timeout=600, env=env)
    except subprocess.TimeoutExpired:
        return None
    for line in proc.stdout.splitlines():
        if line.startswith("FIRST_STEP_S"):
            return float(line.split()[1])
    return None


def train_cases(device, quick):
    """Yield (group, name, work, {impl: fn}, first_step_times) for full training steps."""
    torch = _torch(device)
    combos = [("lenet5", 64)] if quick else [(m, b) for m in TRAIN_MODELS for b in (64, 256)]
    if device == "cpu" and not quick:
        combos = [c for c in combos if c != ("resnet18", 256)]
    rng = np.random.default_rng(0)
    for model_name, batch in combos:
        x_np, y_np = _train_batch(model_name, batch, rng)
        impls = {"ours": "ours"} if torch is None else {"ours": "ours", "torch eager": "torch"}
        fns, first = {}, {}
        for label, impl in impls.items():
            first[impl] = first_step_seconds(impl, model_name, batch, device)
            fns[label] = make_train_step(impl, model_name, device, x_np, y_np)
        fns["ours"]().item()  # warm-up is the timer's job; this only checks the step runs
        yield "train step", f"{model_name} batch {batch}", {"images": batch}, fns, first


# -- running and reporting -----------------------------------------------------------------------
def run(device="cpu", suite="all", quick=False, out=None, repeats=None, log=print):
    timer = Timer(device)
    info = machine_info(device)
    peaks = measure_peaks(device, timer, quick)
    info["peaks"] = peaks
    log(f"# tinygrad_k benchmarks: {device}, suite {suite}{' (quick)' if quick else ''}")
    log(f"machine: {info.get('gpu') or info['cpu']}, {info['cores']} cores; peaks: "
        f"{peaks['matmul_gflops']:.0f} GFLOP/s (float32 {peaks['matmul_n']}^3 product), "
        f"{peaks['copy_gbps']:.1f} GB/s (copy)")
    reps = repeats or (3 if quick else 7)
    rows = []
    if suite in ("kernels", "all"):
        for group, name, work, fns in kernel_cases(device, quick):
            t = time_interleaved(fns, timer, warmup=1, repeats=reps, budget_s=5.0)
            rows.append(_row(group, name, work, t, peaks))
            log(_fmt_row(rows[-1]))
    if suite in ("train", "all"):
        for group, name, work, fns, first in train_cases(device, quick):
            t = time_interleaved(fns, timer, warmup=1, repeats=reps, budget_s=20.0)
            row = _row(group, name, work, t, peaks)
            row["first_step_s"] = first
            rows.append(row)
            log(_fmt_row(row))
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


def _row(group, name, work, times, peaks):
    ours = times["ours"]
    row = {"group": group, "case": name, "times_s": times, "ratios": {}}
    for k, v in times.items():
        if k != "ours":
            row["ratios"][k] = v / ours
    if "flops" in work:
        row["gflops"] = work["flops"] / ours / 1e9
        row["pct_peak"] = 100 * row["gflops"] / peaks["matmul_gflops"]
    if "bytes" in work:
        row["gbps"] = work["bytes"] / ours / 1e9
        row["pct_peak"] = 100 * row["gbps"] / peaks["copy_gbps"]
    if "images" in work:
        row["images_per_s"] = {k: work["images"] / v for k, v in times.items()}
    return row


def _fmt_row(r):
    ratios = ", ".join(f"{k} {v:.2f}x" for k, v in r["ratios"].items())
    return f"{r['group']:<22} {r['case']:<28} ours {r['times_s']['ours'] * 1e3:9.3f} ms  {ratios}"


def to_markdown(info, rows):
    lines = [f"## {info.get('gpu') or info['cpu']} ({info['device']}), {info['date']}", "",
             f"numpy {info['numpy']}, numba {info.get('numba')}, torch {info.get('torch')}, "
             f"cupy {info.get('cupy')}, {info['cores']} cores. Peaks measured in this run: "
             f"{info['peaks']['matmul_gflops']:.0f} GFLOP/s matmul, "
             f"{info['peaks']['copy_gbps']:.1f} GB/s copy.", "",
             "ratio = baseline time / our time (> 1: ours is faster)", "",
             "| op | case | ours (ms) | throughput | % peak | baselines (ms) | ratios |",
             "|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        thr = ""
        if "gflops" in r:
            thr = f"{r['gflops']:.1f} GFLOP/s"
        elif "gbps" in r:
            thr = f"{r['gbps']:.1f} GB/s"
        elif "images_per_s" in r:
            thr = f"{r['images_per_s']['ours']:.0f} img/s"
        pct = f"{r['pct_peak']:.0f}%" if "pct_peak" in r else ""
        base = ", ".join(f"{k} {v * 1e3:.3f}" for k, v in r["times_s"].items() if k != "ours")
        rat = ", ".join(f"{k} {v:.2f}x" for k, v in r["ratios"].items())
        lines.append(f"| {r['group']} | {r['case']} | {r['times_s']['ours'] * 1e3:.3f} | {thr} "
                     f"| {pct} | {base} | {rat} |")
    firsts = [r for r in rows if "first_step_s" in r]
    if firsts:
        lines += ["", "Time to first training step, each in a fresh process (imports and model "
                  "building excluded; JIT compilation or loading Numba's on-disk cache and "
                  "first allocations included):",
                  "", "| case | ours (s) | torch (s) |", "|---|---:|---:|"]

        def sec(v):
            return "-" if v is None else f"{v:.2f}"

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


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--suite", default="all", choices=["kernels", "train", "all"])
    p.add_argument("--quick", action="store_true", help="few small cases: < 2 minutes on a CPU")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default=None, help="results directory")
    args = p.parse_args(argv)
    if args.device == "cuda":
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            print(f"error: --device cuda needs a CUDA GPU with CuPy ({exc})", file=sys.stderr)
            return 2
    run(args.device, args.suite, args.quick, args.out, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
