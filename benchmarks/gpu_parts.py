"""The GPU measurements of benchmarks/gpu_check.sh, one part per command, each writing
its own files under ``--out`` so that a failing part never loses the others' results.

    python -m benchmarks.gpu_parts ladder  --out DIR [--n 4096]  [--deadline S]
    python -m benchmarks.gpu_parts tf32    --out DIR               [--deadline S]
    python -m benchmarks.gpu_parts conv    --out DIR               [--deadline S]
    python -m benchmarks.gpu_parts pool    --out DIR               [--deadline S]
    python -m benchmarks.gpu_parts train   --out DIR [--batch 256] [--deadline S]
    python -m benchmarks.gpu_parts sweep   --out DIR [--n 4096]    [--deadline S]
    python -m benchmarks.gpu_parts launch  --out DIR

A part starts no new case (rung, layer, round, tile) after ``--deadline`` seconds and
rewrites its table after every case, so one stopped at gpu_check.sh's limit keeps what
it measured.

* ladder: every rung of kernels.cuda.LADDER at n^3 float32, rung 6 (CUDA C, the
  candidate for the wide products) and our TF32 kernels (mma.sync at each schedule of
  kernels.cuda_tf32.PIPE_CANDIDATES; sm_90's wgmma at each of
  kernels.cuda_wgmma.WGMMA_CANDIDATES, prep pass included, and its kernel alone), as a
  percentage of cuBLAS (CuPy) FP32 and TF32 at the same size, each checked against
  cuBLAS FP32 (relative Frobenius error; TF32: should be < 1e-3).
* tf32: TF32 products at the sizes a model meets (TF32_SHAPES, x @ w.T with w.T a view),
  ours (the default, mma.sync, wgmma at 128 x 128) vs cuBLAS TF32: GPU time and time a
  call back to back (host included).
* conv: ResNet-18 CIFAR conv layers and LeNet-5's (batch 64) forward, input and weight
  gradient, ours vs cuDNN through PyTorch (TF32 off, benchmark mode); a strided layer's
  input gradient also by the implicit GEMM (its default is the dense GEMM and gather,
  col2im); each pass by the default ("auto": the CUDA C kernels of kernels/cuda_sgemm.py
  for GEMMs of 64 rows or more, the direct kernel of kernels/cuda_direct.py for at most 16
  result channels where it applies, the Numba 64x64 ones between), by each GEMM forced
  (kernels.cuda.CONV_KERNELS, split-K as in production) and by the default with split-K
  off; then forward + backward per layer against cuDNN's three.
* pool: max-pool forward/backward in GB/s vs a device-to-device copy of the same bytes,
  one call at a time and 20 back to back (host time overlapped with the GPU's), by the
  default (kernels.cuda), the Numba kernels and the CUDA C ones (kernels/cuda_pool.py;
  its backward also with a cell a thread and with two, whichever is the default),
  at benchmarks.run's batches and at batches large enough for the GPU's time to show
  (POOL_LARGE).
* train: LeNet-5 training step at batch 256, ours vs PyTorch eager, each in its own
  process (benchmarks.run's children); ours also with CANDIDATE_KERNELS
  (TINYGRAD_K_CUDA_KERNELS), the question being whether the defaults' last change paid.
* launch: the host's cost of one GEMM launch (64^3) through kernels.cuda.matmul and with
  the arguments passed as CuPy arrays, stream-less CAI views or numba device arrays, next
  to an empty kernel, CuPy's cuBLAS and torch.mm: what a small training step pays per op.
* sweep: the production GEMM (kernels.cuda) at every tile of kernels.cuda.TILE_CANDIDATES:
  matmul at n^3 as a percentage of cuBLAS FP32, conv forward and weight gradient on
  ResNet-18's first and last 3x3 layers, registers per thread from the compiled kernel;
  the data for choosing DEFAULT_TILE (or a tile per problem size).

Timings: CUDA events, warm-up, median of repeats; ratios in one run.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

import numpy as np


def _events_time(fn, repeats=10, warmup=2):
    import cupy

    for _ in range(warmup):
        fn()
    cupy.cuda.runtime.deviceSynchronize()
    ts = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        ts.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(ts)


def _write(out, name, rows, lines, echo=True):
    """{name}.json (rows) and {name}.md (lines) under out. The parts call it after every
    row, so that a part stopped at its time limit keeps what it had measured."""
    os.makedirs(out, exist_ok=True)
    for ext, text in (("json", json.dumps(rows, indent=1)), ("md", "\n".join(lines) + "\n")):
        path = os.path.join(out, f"{name}.{ext}")
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    if echo:
        print("\n".join(lines), flush=True)


def part_ladder(out, n=4096, deadline_s=150.0):
    """Every rung and the TF32 kernel at n^3 vs cuBLAS; rungs not started within
    deadline_s seconds are listed as skipped."""
    import cupy

    import kernels.cuda as K
    import kernels.cuda_sgemm as S
    import kernels.cuda_tf32 as T
    import kernels.cuda_wgmma as W

    rng = np.random.default_rng(0)
    a = cupy.asarray(rng.standard_normal((n, n), dtype=np.float32))
    b = cupy.asarray(rng.standard_normal((n, n), dtype=np.float32))
    ref = a @ b
    t_fp32 = _events_time(lambda: a @ b)
    rows = [{"impl": "cuBLAS FP32 (CuPy)", "s": t_fp32}]
    mode = cupy.cuda.cublas.getMathMode(cupy.cuda.device.get_cublas_handle())
    try:
        # CuPy 14 no longer exports the cublasMath_t names; 3 is CUBLAS_TF32_TENSOR_OP_MATH
        # in cublas_api.h (CUDA 11 and later)
        tf32 = getattr(cupy.cuda.cublas, "CUBLAS_TF32_TENSOR_OP_MATH", 3)
        cupy.cuda.cublas.setMathMode(cupy.cuda.device.get_cublas_handle(), tf32)
        t_tf32 = _events_time(lambda: a @ b)
        # (its error says how cuBLAS feeds FP32 to the tensor cores: on these Gaussian
        # operands about 2.9e-4 where they are rounded to nearest, 7.7e-4 where truncated)
        err = float(cupy.linalg.norm(a @ b - ref) / cupy.linalg.norm(ref))
        rows.append({"impl": "cuBLAS TF32 (CuPy)", "s": t_tf32, "rel_err_vs_fp32": err})
    except Exception as e:  # noqa: BLE001 - report and go on
        t_tf32 = None
        rows.append({"impl": "cuBLAS TF32 (CuPy)", "error": repr(e)[:300]})
    finally:
        cupy.cuda.cublas.setMathMode(cupy.cuda.device.get_cublas_handle(), mode)
    start = time.perf_counter()
    impls = dict(K.LADDER)
    # what the framework runs: rung 3, or rung 5 at WIDE_TILE for a product this large
    impls["production (kernels.cuda.matmul)"] = K.matmul
    # rung 6 (CUDA C), the candidate for the wide products (kernels.cuda.WIDE_KERNELS)
    impls["vec4_cuda_c (rung 6, CUDA C)"] = S.matmul
    # what the framework runs with TF32 allowed: on sm_90, wgmma at W.WGMMA_CONFIG
    impls["tf32 (ours, kernels.cuda_tf32.matmul)"] = T.matmul
    impls["tf32 mma.sync (ours)"] = functools.partial(T.matmul, config=T.PIPE_CONFIG)
    impls["tf32 mma.sync, first version (64x64, unpipelined)"] = \
        lambda x, y: T.matmul(x, y, pipeline=False)
    for cfg in T.PIPE_CANDIDATES:  # the pipelined kernel's other schedules
        if cfg != T.PIPE_CONFIG:
            impls[f"tf32 mma.sync, {tf32_schedule_name(cfg)}"] = \
                functools.partial(T.matmul, config=cfg)
    for group in (1, 4):  # its block order (the default walks T.PIPE_GROUP tile rows)
        impls[f"tf32 mma.sync, blocks in groups of {group} tile rows"] = \
            functools.partial(T.matmul, config=T.PIPE_CONFIG, group=group)
    # sm_90's wgmma (kernels.cuda_wgmma): prep pass (B transposed, both rounded) + kernel
    for cfg in W.WGMMA_CANDIDATES:
        impls[f"tf32 wgmma, {wgmma_schedule_name(cfg)}"] = _on_sm90(W.matmul, config=cfg)
    # its kernel alone: B^T given, nothing rounded (no prep pass runs)
    bt = cupy.ascontiguousarray(b.T)
    impls["tf32 wgmma kernel alone (B^T given, not rounded)"] = _on_sm90(
        lambda x, _: W.matmul(x, bt, trans_b=True, config=W.WGMMA_CONFIG._replace(round=False)))
    for name, fn in impls.items():
        if time.perf_counter() - start > deadline_s:
            rows.append({"impl": name, "error": "skipped: part deadline"})
            continue
        try:
            c = fn(a, b)
            err = float(cupy.linalg.norm(c - ref) / cupy.linalg.norm(ref))
            reps = 3 if name == "naive" else 10
            t = _events_time(lambda: fn(a, b), repeats=reps, warmup=1)
            rows.append({"impl": name, "s": t, "rel_err_vs_fp32": err})
        except Exception as e:  # noqa: BLE001
            rows.append({"impl": name, "error": repr(e)[:300]})
        _write(out, "ladder", rows, ladder_markdown(rows, n, t_fp32, t_tf32), echo=False)
    lines = ladder_markdown(rows, n, t_fp32, t_tf32)
    _write(out, "ladder", rows, lines)


# (name, m, k, n, trans_b): products a model meets, x @ w.T in a Linear layer
TF32_SHAPES = (("LeNet-5 fc1, batch 256", 256, 400, 120, True),
               ("Linear 784 -> 512, batch 256", 256, 784, 512, True),
               ("Linear 1024 -> 1024, batch 8192", 8192, 1024, 1024, True),
               ("Linear 4096 -> 4096, batch 4096", 4096, 4096, 4096, True),
               ("square 1024", 1024, 1024, 1024, False),
               ("square 2048", 2048, 2048, 2048, False),
               ("square 8192", 8192, 8192, 8192, False))


def part_tf32(out, shapes=TF32_SHAPES, deadline_s=60.0):
    """TF32 products at the sizes a model meets (TF32_SHAPES), x @ w.T given as the view
    w.T as the framework does: cuBLAS TF32 (CuPy) beside ours -- kernels.cuda_tf32.matmul
    as the framework calls it (DEFAULT_CONFIG), the mma.sync kernel at PIPE_CONFIG and the
    wgmma kernel at two 128 x 128 schedules (more blocks for a small product than the
    default's 128 x 256). Per row: the GPU's time (events) and the time a call takes back
    to back (host included: what a small product costs a training step)."""
    import cupy

    import kernels.cuda_tf32 as T
    import kernels.cuda_wgmma as W

    impls = {"ours (kernels.cuda_tf32.matmul)": T.matmul,
             "mma.sync, " + tf32_schedule_name(T.PIPE_CONFIG):
                 functools.partial(T.matmul, config=T.PIPE_CONFIG)}
    for cfg in (W.WgmmaConfig(128, 128, 4, 1), W.WgmmaConfig(128, 128, 3, 0)):
        impls[f"wgmma, {wgmma_schedule_name(cfg)}"] = _on_sm90(T.matmul, config=cfg)
    rows, start = [], time.perf_counter()
    handle = cupy.cuda.device.get_cublas_handle()
    mode = cupy.cuda.cublas.getMathMode(handle)
    rng = np.random.default_rng(0)

    def back_to_back(fn, calls=20):
        fn()
        cupy.cuda.runtime.deviceSynchronize()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        cupy.cuda.runtime.deviceSynchronize()
        return (time.perf_counter() - t) / calls

    for name, m, k, n, tb in shapes:
        if time.perf_counter() - start > deadline_s:
            rows.append({"shape": name, "impl": "all", "error": "skipped: part deadline"})
            continue
        x = cupy.asarray(rng.standard_normal((m, k), dtype=np.float32))
        w = cupy.asarray(rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32))
        y = w.T if tb else w                      # (a view, as MatMul.forward passes it)
        ref = x @ y
        norm = float(cupy.linalg.norm(ref))
        try:
            cupy.cuda.cublas.setMathMode(handle, getattr(cupy.cuda.cublas,
                                                         "CUBLAS_TF32_TENSOR_OP_MATH", 3))
            blas = {"impl": "cuBLAS TF32 (CuPy)", "s": _events_time(lambda: x @ y),
                    "s_back_to_back": back_to_back(lambda: x @ y)}
        finally:
            cupy.cuda.cublas.setMathMode(handle, mode)
        rows.append({"shape": name, "mkn": [m, k, n], **blas})
        for impl, fn in impls.items():
            try:
                err = float(cupy.linalg.norm(fn(x, y) - ref)) / norm
                rows.append({"shape": name, "mkn": [m, k, n], "impl": impl,
                             "s": _events_time(lambda: fn(x, y)),
                             "s_back_to_back": back_to_back(lambda: fn(x, y)),
                             "rel_err_vs_fp32": err})
            except Exception as e:  # noqa: BLE001 - report and go on
                rows.append({"shape": name, "mkn": [m, k, n], "impl": impl,
                             "error": repr(e)[:300]})
        _write(out, "tf32", rows, tf32_markdown(rows), echo=False)
    _write(out, "tf32", rows, tf32_markdown(rows))
    return 1 if any("error" in r for r in rows) else 0


def tf32_markdown(rows):
    """part_tf32's table: each implementation's times beside cuBLAS TF32's on its shape."""
    lines = ["## TF32 products at model sizes (x @ w.T: w.T a view)", "",
             "| shape | M x K x N | implementation | GPU ms | % cuBLAS TF32 | back to back ms "
             "| % cuBLAS TF32 | rel. error vs FP32 |", "|---|---|---|---:|---:|---:|---:|---:|"]
    blas = {}
    for r in rows:
        mkn = " x ".join(map(str, r.get("mkn", [])))
        if "error" in r:
            lines.append(f"| {r['shape']} | {mkn} | {r['impl']} | failed: {r['error']} "
                         "| | | | |")
            continue
        if r["impl"].startswith("cuBLAS"):
            blas[r["shape"]] = r
        b = blas.get(r["shape"], r)
        err = f"{r['rel_err_vs_fp32']:.1e}" if "rel_err_vs_fp32" in r else ""
        lines.append(f"| {r['shape']} | {mkn} | {r['impl']} | {r['s'] * 1e3:.3f} "
                     f"| {100 * b['s'] / r['s']:.0f}% | {r['s_back_to_back'] * 1e3:.3f} "
                     f"| {100 * b['s_back_to_back'] / r['s_back_to_back']:.0f}% | {err} |")
    return lines


def _on_sm90(fn, **kw):
    """fn(x, y, **kw), refused (a row's error) where the GPU has no wgmma: elsewhere
    kernels.cuda_wgmma would quietly run the mma.sync kernels under this row's name."""
    import kernels.cuda_wgmma as W

    def run(x, y):
        if not W.supported():
            raise RuntimeError("wgmma needs compute capability 9.0")
        return fn(x, y, **kw)
    return run


def wgmma_schedule_name(cfg):
    """'128x128, 4 stages, depth 1' for a kernels.cuda_wgmma.WgmmaConfig."""
    return (f"{cfg.bm}x{cfg.bn}, {cfg.stages} stages, depth {cfg.depth}"
            + ("" if cfg.round else ", operands not rounded"))


def tf32_schedule_name(cfg):
    """'128x128x32, 3 stages, 2x2 warps' for a kernels.cuda_tf32.PipeConfig."""
    return (f"{cfg.bm}x{cfg.bn}x{cfg.bk}, {cfg.stages} stages, {cfg.warps_m}x{cfg.warps_n} "
            "warps" + ("" if cfg.prefetch else ", no fragment prefetch")
            + (", ldmatrix" if cfg.ldmatrix else ""))


def ladder_markdown(rows, n, t_fp32, t_tf32):
    """The ladder's table from its rows ({impl, s, rel_err_vs_fp32} or {impl, error})."""
    flops = 2.0 * n ** 3
    lines = [f"## GEMM ladder, {n}^3 float32", "", "| implementation | ms | TFLOP/s | % cuBLAS FP32 "
             "| % cuBLAS TF32 | rel. error vs cuBLAS FP32 |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['impl']} | failed: {r['error']} | | | | |")
            continue
        pct = f"{100 * t_fp32 / r['s']:.0f}%"
        pct_tf = f"{100 * t_tf32 / r['s']:.0f}%" if t_tf32 else "-"
        err = f"{r['rel_err_vs_fp32']:.1e}" if "rel_err_vs_fp32" in r else ""
        lines.append(f"| {r['impl']} | {r['s'] * 1e3:.2f} | {flops / r['s'] / 1e12:.2f} | {pct} "
                     f"| {pct_tf} | {err} |")
    return lines


def part_conv(out, deadline_s=float("inf")):
    """ResNet-18's CIFAR layers and LeNet-5's, each pass ours vs cuDNN; layers not started
    within deadline_s seconds are listed as skipped."""
    import cupy
    import torch
    import torch.nn.functional as tf

    import kernels.cuda as K
    import kernels.cuda_sgemm as S
    from benchmarks.run import CONV_SHAPES

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    rng = np.random.default_rng(0)
    rows, lines = [], ["## Convolution vs cuDNN (PyTorch, TF32 off), float32", "",
                       "| layer | pass | ours (ms) | cuDNN (ms) | ratio cuDNN/ours |",
                       "|---|---|---:|---:|---:|"]

    def ttime(fn, repeats=10):
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        ts = []
        for _ in range(repeats):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            ts.append(s.elapsed_time(e) / 1e3)
        return statistics.median(ts)

    start = time.perf_counter()
    for name, (xs, ws, s, p) in CONV_SHAPES.items():
        if not name.startswith(("resnet18", "lenet5")):
            continue
        if time.perf_counter() - start > deadline_s:
            rows.append({"layer": name, "error": "skipped: part deadline"})
            lines.append(f"| {name} | skipped: part deadline | | | |")
            continue
        try:
            x = cupy.asarray(rng.standard_normal(xs, dtype=np.float32))
            w = cupy.asarray(rng.standard_normal(ws, dtype=np.float32))
            y = K.conv2d_forward(x, w, s, p)
            dy = cupy.asarray(rng.standard_normal(y.shape, dtype=np.float32))
            tx, tw, tdy = (torch.as_tensor(v, device="cuda") for v in (x, w, dy))
            cases = {
                "forward": (lambda: K.conv2d_forward(x, w, s, p), lambda: tf.conv2d(tx, tw, None, s, p)),
                "input grad": (lambda: K.conv2d_backward_input(dy, w, xs, s, p),
                               lambda: torch.nn.grad.conv2d_input(xs, tw, tdy, s, p)),
                # a strided layer's default is the dense GEMM and gather (col2im); the
                # implicit GEMM it replaced, for comparison
                **({} if s == 1 else {"input grad (implicit GEMM)": (
                    lambda: K.VERSIONS["conv2d_backward_input"]["implicit_gemm"](
                        dy, w, xs, s, p),
                    lambda: torch.nn.grad.conv2d_input(xs, tw, tdy, s, p))}),
                "weight grad": (lambda: K.conv2d_backward_weight(dy, x, ws, s, p),
                                lambda: torch.nn.grad.conv2d_weight(tx, ws, tdy, s, p)),
            }
            # each pass on each kernel family by itself (kernels.cuda.CONV_KERNELS; the
            # default "auto" picks one per pass by the GEMM's rows), split-K as in production
            for family, label in (("implicit_gemm_64", "Numba 64x64"),
                                  ("cuda_c_128", "CUDA C 128x128")):
                for op in ("forward", "input grad", "weight grad"):
                    ours, theirs = cases[op]
                    cases[f"{op} ({label})"] = (
                        lambda ours=ours, family=family: _with_conv_kernel(K, family, ours), theirs)
            for op, (ours, theirs) in cases.items():
                to, tt = _events_time(ours), ttime(theirs)
                rows.append({"layer": name, "pass": op, "ours_s": to, "cudnn_s": tt})
                lines.append(f"| {name} | {op} | {to * 1e3:.3f} | {tt * 1e3:.3f} | {tt / to:.2f}x |")
                if op in ("forward", "input grad", "weight grad"):  # what split-K buys
                    to = _events_time(lambda: _without_split_k(K, ours))
                    rows.append({"layer": name, "pass": f"{op} (split-K off)", "ours_s": to,
                                 "cudnn_s": tt})
                    lines.append(f"| {name} | {op} (split-K off) | {to * 1e3:.3f} | "
                                 f"{tt * 1e3:.3f} | {tt / to:.2f}x |")
        except Exception as e:  # noqa: BLE001
            rows.append({"layer": name, "error": repr(e)[:300]})
            lines.append(f"| {name} | failed: {repr(e)[:200]} | | | |")
        _write(out, "conv", rows, lines, echo=False)
    _write(out, "conv", rows, lines + conv_totals(rows))


def conv_totals(rows):
    """Markdown lines: per layer, the default forward pass + input gradient + weight
    gradient against cuDNN's three (issue 13's target: >= 0.5x), and the same without the
    input gradient where a network never needs it (the stem: its input is the image)."""
    passes = ("forward", "input grad", "weight grad")
    by_layer = {}
    for r in rows:
        if r.get("pass") in passes:
            by_layer.setdefault(r["layer"], {})[r["pass"]] = (r["ours_s"], r["cudnn_s"])
    lines = ["", "Forward + backward per layer (the default kernels, ms):", "",
             "| layer | ours | cuDNN | ratio cuDNN/ours |", "|---|---:|---:|---:|"]
    for layer, got in by_layer.items():
        if len(got) != 3:
            continue
        ours, theirs = (sum(got[p][i] for p in passes) for i in (0, 1))
        lines.append(f"| {layer} | {ours * 1e3:.3f} | {theirs * 1e3:.3f} | {theirs / ours:.2f}x |")
        if "stem" in layer or layer == "lenet5 conv1":
            ours -= got["input grad"][0]
            theirs -= got["input grad"][1]
            lines.append(f"| {layer} without its input gradient | {ours * 1e3:.3f} | "
                         f"{theirs * 1e3:.3f} | {theirs / ours:.2f}x |")
    return lines


def _with_conv_kernel(K, name, fn):
    """fn() with kernels.cuda's convolutions on kernel ``name`` (CONV_KERNELS)."""
    before = K._conv_kernel[0]
    K.set_conv_kernel(name)
    try:
        return fn()
    finally:
        K.set_conv_kernel(before)


def _without_plans(K, fn):
    """fn() with kernels.cuda keeping no launch plan (each call checks, chooses and
    describes its launch, as a first call does)."""
    saved = K._keep_plan
    K._keep_plan = lambda *args: None
    K._plans.clear()
    try:
        return fn()
    finally:
        K._keep_plan = saved


def _without_split_k(K, fn):
    """fn() with kernels.cuda's split-K switched off (no grid counts as too small)."""
    saved, K._SPLIT_BLOCKS_PER_SM = K._SPLIT_BLOCKS_PER_SM, 0
    try:
        return fn()
    finally:
        K._SPLIT_BLOCKS_PER_SM = saved


_BACK_TO_BACK = 20


def _repeat(fn, times=_BACK_TO_BACK):
    for _ in range(times):
        fn()


def _with_pool_kernel(K, name, fn):
    """fn, run with kernels.cuda's max-pool kernels set to ``name`` (restored after)."""
    def run():
        before = K._pool_kernel[0]
        K.set_pool_kernel(name)
        try:
            return fn()
        finally:
            K.set_pool_kernel(before)
    return run


def _planned_pool_backward(P, x_shape, y_shape, geo, cells, dy, idx):
    """kernels.cuda_pool's backward with ``cells`` cells a thread, planned at the first
    call (where a failure costs its own row of the table)."""
    plan = []

    def run():
        if not plan:
            plan.append(P.backward_plan(x_shape, y_shape, geo, cells=cells))
        return P.run_backward(plan[0], dy, idx)
    return run


# max-pool at batches whose passes take the GPU longer than the host's launch (tens of
# microseconds): at benchmarks.run's batches a pass and the copy it is compared with
# both take about what the host needs per call, so those rows measure the host
POOL_LARGE = {"lenet5 pool1, batch 8192": ((8192, 6, 28, 28), 2, 2, 0),
              "resnet-ish 64@32 3x3 s2 p1, batch 512": ((512, 64, 32, 32), 3, 2, 1)}


def part_pool(out, deadline_s=float("inf")):
    """Max-pool forward and backward vs a copy of the same bytes: "forward"/"backward" as
    the framework calls them (kernels.cuda, its default kernels), then each kernel family
    by itself, at benchmarks.run's shapes and at POOL_LARGE's; cases not started within
    deadline_s seconds are listed as skipped."""
    import cupy

    import kernels.cuda as K
    import kernels.cuda_pool as P
    from benchmarks.run import POOL_SHAPES, _out_side
    from kernels._common import pool_geometry

    rng = np.random.default_rng(0)
    rows, lines = [], ["## Max-pool vs copy bandwidth, float32", "",
                       "One call between two events (the host's work before the launch "
                       f"included), and the mean of {_BACK_TO_BACK} calls back to back (the "
                       "launches queue while the GPU works: closer to the kernel's own time "
                       "where the host keeps up).", "",
                       "| case | pass | ms | GB/s | copy of the same bytes GB/s | % of copy "
                       f"| ms, {_BACK_TO_BACK} back to back | GB/s | copy GB/s | % of copy |",
                       "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    start = time.perf_counter()
    for name, (xs, k, s, p) in {**POOL_SHAPES, **POOL_LARGE}.items():
        if time.perf_counter() - start > deadline_s:
            rows.append({"case": name, "error": "skipped: part deadline"})
            lines.append(f"| {name} | skipped: part deadline | | | | |")
            continue
        try:
            x = cupy.asarray(rng.standard_normal(xs, dtype=np.float32))
            out_shape = xs[:2] + (_out_side(xs[2], k, s, p), _out_side(xs[3], k, s, p))
            y, idx = K.maxpool2d_forward(x, k, s, p)
            geo = pool_geometry(k, s, p)
            dy = cupy.asarray(rng.standard_normal(out_shape, dtype=np.float32))
            ybytes = int(np.prod(out_shape)) * 4
            passes = {"forward": (lambda: K.maxpool2d_forward(x, k, s, p), x.nbytes + 3 * ybytes),
                      "backward": (lambda: K.maxpool2d_backward(dy, idx, xs, k, s, p),
                                   x.nbytes + 3 * ybytes),
                      # each family of kernels.cuda.POOL_KERNELS by itself: the CUDA C
                      # kernels called directly, the Numba ones through kernels.cuda
                      "forward (CUDA C)": (lambda: P.maxpool2d_forward(x, k, s, p),
                                           x.nbytes + 3 * ybytes),
                      "backward (CUDA C)": (lambda: P.maxpool2d_backward(dy, idx, xs, k, s, p),
                                            x.nbytes + 3 * ybytes),
                      # its backward entry points by themselves (P.backward_cells picks one: 1)
                      "backward (CUDA C, a cell a thread)": (
                          _planned_pool_backward(P, xs, out_shape, geo, 1, dy, idx),
                          x.nbytes + 3 * ybytes),
                      "backward (CUDA C, two cells a thread)": (
                          _planned_pool_backward(P, xs, out_shape, geo, 2, dy, idx),
                          x.nbytes + 3 * ybytes),
                      "backward (CUDA C, four cells a thread)": (
                          _planned_pool_backward(P, xs, out_shape, geo, 4, dy, idx),
                          x.nbytes + 3 * ybytes),
                      "forward (Numba)": (_with_pool_kernel(K, "numba", lambda: K.maxpool2d_forward(
                          x, k, s, p)), x.nbytes + 3 * ybytes),
                      "backward (Numba)": (_with_pool_kernel(K, "numba", lambda: K.maxpool2d_backward(
                          dy, idx, xs, k, s, p)), x.nbytes + 3 * ybytes)}
            for op, (fn, nbytes) in passes.items():
                try:  # (a failing candidate costs its own row only)
                    src = cupy.empty(nbytes // 8, dtype=np.float32)  # read + write = nbytes
                    dst = cupy.empty_like(src)
                    t = _events_time(fn)
                    tc = _events_time(lambda: cupy.copyto(dst, src))
                    tb = _events_time(lambda: _repeat(fn)) / _BACK_TO_BACK
                    tcb = _events_time(lambda: _repeat(lambda: cupy.copyto(dst, src))) \
                        / _BACK_TO_BACK
                except Exception as e:  # noqa: BLE001
                    rows.append({"case": name, "pass": op, "error": repr(e)[:300]})
                    lines.append(f"| {name} | {op}: failed: {repr(e)[:200]} | | | | |")
                    continue
                rows.append({"case": name, "pass": op, "s": t, "bytes": nbytes, "copy_s": tc,
                             "back_to_back_s": tb, "copy_back_to_back_s": tcb})
                lines.append(f"| {name} | {op} | {t * 1e3:.3f} | {nbytes / t / 1e9:.0f} | "
                             f"{nbytes / tc / 1e9:.0f} | {100 * tc / t:.0f}% | {tb * 1e3:.3f} | "
                             f"{nbytes / tb / 1e9:.0f} | {nbytes / tcb / 1e9:.0f} | "
                             f"{100 * tcb / tb:.0f}% |")
        except Exception as e:  # noqa: BLE001
            rows.append({"case": name, "error": repr(e)[:300]})
            lines.append(f"| {name} | failed: {repr(e)[:200]} | | | | |")
        _write(out, "pool", rows, lines, echo=False)
    _write(out, "pool", rows, lines)


# the third side of the train part: ours with other kernels (kernels.cuda's
# TINYGRAD_K_CUDA_KERNELS), so that one run says whether a change of the defaults pays.
# Now: the convolutions on the Numba GEMM alone, LeNet-5's default before the direct
# kernel (kernels/cuda_direct.py) took its forward passes and conv2's input gradient.
# (Session 4 and 5 had every CUDA C candidate here: 1.30x against the defaults' 1.44x.)
CANDIDATE_SIDE = "ours, GEMM convolutions only"
CANDIDATE_KERNELS = "conv=implicit_gemm_64"


def part_train(out, batch=256, pairs=3, deadline_s=float("inf")):
    """LeNet-5's training step, ours (default kernels, then CANDIDATE_KERNELS) and
    PyTorch's, alternating in processes of their own (benchmarks.run's children), up to
    ``pairs`` rounds; no round starts that the time the last one took would carry past
    deadline_s. Non-zero if a child of the defaults or of PyTorch failed (the candidates'
    failures are reported in the table)."""
    from benchmarks.run import _have_torch, run_child

    rows, sides = [], ["ours", CANDIDATE_SIDE] + (["torch"] if _have_torch() else [])
    start, last = time.perf_counter(), 0.0
    for _ in range(pairs):
        t0 = time.perf_counter()
        if t0 - start + last > deadline_s:
            break
        for side in sides:
            left = deadline_s - (time.perf_counter() - start)
            extra = ({"TINYGRAD_K_CUDA_KERNELS": CANDIDATE_KERNELS}
                     if side == CANDIDATE_SIDE else None)
            res = run_child({"kind": "train", "device": "cuda", "model": "lenet5", "batch": batch,
                             "repeats": 20, "side": "ours" if side == CANDIDATE_SIDE else side},
                            timeout=max(10, min(240, left)), env_extra=extra)
            res["side"] = side
            rows.append(res)
        last = time.perf_counter() - t0
        _write(out, "train", rows, train_markdown(rows, sides, batch), echo=False)
        if all("error" in r for r in rows):
            break  # nothing runs: the same error again would only cost the part's minutes
    _write(out, "train", rows, train_markdown(rows, sides, batch))
    return 1 if not rows or any("error" in r for r in rows if r["side"] != CANDIDATE_SIDE) else 0


def train_markdown(rows, sides, batch):
    """The training-step summary from the children's rows ({side, times} or {side, error})."""
    med = {}
    for side in sides:
        # each child reports {case: {label: [seconds, ...]}} for its one case
        ts = [statistics.median(next(iter(next(iter(r["times"].values())).values())))
              for r in rows if r["side"] == side and "times" in r]
        med[side] = statistics.median(ts) if ts else None
    rounds = max((sum(r["side"] == side for r in rows) for side in sides), default=0)
    lines = [f"## LeNet-5 training step, batch {batch}, cuda (each side its own process, "
             f"{rounds} rounds)", ""]
    for side in sides:
        lines.append(f"* {side}: " + (f"{med[side] * 1e3:.3f} ms" if med[side] else "failed"))
    if med.get("ours") and med.get("torch"):
        lines.append(f"* ratio torch/ours: {med['torch'] / med['ours']:.2f}x")
    if med.get(CANDIDATE_SIDE) and med.get("torch"):
        lines.append(f"* ratio torch/ours with {CANDIDATE_KERNELS}: "
                     f"{med['torch'] / med[CANDIDATE_SIDE]:.2f}x")
    lines += [f"* failed ({r['side']}): {r['error']}" for r in rows if "error" in r]
    return lines


def launch_rows(cases, sync, calls=2000, warmup=50):
    """Host time per call of each case in ``cases`` ({name: fn}): ``calls`` calls back to
    back and one ``sync()``, divided by ``calls``. With work as small as these cases', the
    GPU waits for the host, so this is the host's cost of one launch: rows of {case,
    us_per_call} or {case, error}."""
    rows = []
    for name, fn in cases.items():
        try:
            for _ in range(warmup):
                fn()
            sync()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            sync()
            rows.append({"case": name, "us_per_call": (time.perf_counter() - t0) / calls * 1e6})
        except Exception as e:  # noqa: BLE001 - report and go on
            rows.append({"case": name, "error": repr(e)[:300]})
    return rows


class _StreamlessView:
    """A CuPy array seen only through the CUDA array interface, with no stream in it.
    numba-cuda then types and passes it from that dict alone: no DLPack export, and no
    host synchronisation on the array's stream (which CAI v3 asks of a consumer given a
    stream). Correct where producer and kernel share the legacy default stream, as CuPy's
    null stream and numba-cuda's stream 0 do. Here only to be timed against the others."""

    __slots__ = ("__cuda_array_interface__", "base")

    def __init__(self, a):
        desc = dict(a.__cuda_array_interface__)
        desc.pop("stream", None)
        self.__cuda_array_interface__ = desc
        self.base = a  # the memory stays alive while the view does


def part_launch(out, n=64):
    """The host's cost of one launch (launch_rows) of the production GEMM on n^3 float32:
    through kernels.cuda.matmul, through the driver launch (kernels._cuda_launch) and
    through numba-cuda's with the arrays passed four ways, next to an empty kernel, CuPy's
    cuBLAS matmul, rung 6 (CUDA C, CuPy's launch; n must be <= 128 for its one-block row)
    and torch.mm; and split-K's sum, a Linear's CuPy bias calls and a max-pool call
    through each kernel family."""
    import cupy
    from numba import cuda

    import kernels.cuda as K
    import kernels.cuda_sgemm as S

    rng = np.random.default_rng(0)
    a = cupy.asarray(rng.standard_normal((1, n, n), dtype=np.float32))
    b = cupy.asarray(rng.standard_normal((1, n, n), dtype=np.float32))
    c = cupy.empty_like(a)
    from kernels import _cuda_launch

    i32 = np.int32
    sgemm_fn = S._function(S.KERNELS[(False, False)])

    kern, nthreads = K._gemm_kernel(*K._tile, K._PLAIN, K._PLAIN, K._OUT_PLAIN, "float32")
    bm, bn = K._tile[0], K._tile[1]
    grid = (-(-n // bn), -(-n // bm), 1)
    launch = kern[grid, nthreads]  # numba-cuda's own launch, configured once
    direct = _cuda_launch.DirectLauncher(kern, grid, nthreads)
    args = ((0,) * 8, 1, -(-n // K._tile[2]) * K._tile[2])  # geo, split, K chunk: no split
    da, db, dc = (cuda.as_cuda_array(v, sync=False) for v in (a, b, c))

    @cuda.jit
    def empty():
        pass

    from kernels._common import check_float, check_matmul

    a2, b2 = a[0], b[0]
    P, O = K._PLAIN, K._OUT_PLAIN
    cases = {
        "empty numba kernel, no arguments": lambda: empty[1, 32](),
        # after its first call a product of these shapes replays its launch plan
        "kernels.cuda.matmul (its launch plan: allocation, launch)": lambda: K.matmul(a2, b2),
        "kernels.cuda.matmul without plans (checks, output allocation, launch)": lambda:
            _without_plans(K, lambda: K.matmul(a2, b2)),
        # where matmul's time goes beyond the bare launch
        "- its checks (check_matmul, check_float)": lambda: (
            check_matmul(a2, b2, False, False), check_float("matmul", a2, b2)),
        "- its output allocation (cupy.empty)": lambda: cupy.empty((1, n, n), np.float32),
        "- a 2-D operand as a batch of one (a2[None], twice a call)": lambda: a2[None],
        "- its _launch_gemm (split-K choice, launcher lookup, launch)": lambda: K._launch_gemm(
            P, P, O, a, b, c, n, n, n, 1, (0,) * 8, a.dtype),
        "GEMM kernel, driver launch (kernels._cuda_launch, the default)": lambda: direct(
            a, b, c, n, n, n, *args),
        "GEMM kernel, numba launch, CuPy arrays (TINYGRAD_K_CUDA_LAUNCH=numba)": lambda: launch(
            a, b, c, n, n, n, *args),
        "GEMM kernel, CuPy arrays as stream-less CAI views": lambda: launch(
            _StreamlessView(a), _StreamlessView(b), _StreamlessView(c), n, n, n, *args),
        "GEMM kernel, numba device arrays made per call": lambda: launch(
            *(cuda.as_cuda_array(v, sync=False) for v in (a, b, c)), n, n, n, *args),
        "GEMM kernel, numba device arrays made once": lambda: launch(da, db, dc, n, n, n, *args),
        "cuBLAS through CuPy (a @ b)": lambda: a2 @ b2,
        # rung 6's CUDA C kernel through CuPy's RawModule launch: if it costs the host much
        # less than kernels.cuda.matmul, small products (LeNet's) belong on it too
        "rung 6 CUDA C matmul (kernels.cuda_sgemm.matmul, CuPy launch)": lambda: S.matmul(
            a2, b2),
        "- its kernel launch alone (CuPy RawModule function)": lambda: sgemm_fn(
            (1, 1, 1), (S.THREADS,), (a, b, c, i32(n), i32(n), i32(n), i32(1), i32(1), i32(1))),
    }
    # the other host costs of a small training step: Linear's bias (y += b, g.sum(0): CuPy
    # elementwise and reduction calls, candidates for a GEMM epilogue) and a max-pool call
    # through each kernel family (LeNet's second pool at batch 256)
    import kernels.cuda_pool as CP

    bias = cupy.asarray(rng.standard_normal(n, dtype=np.float32))
    px = cupy.asarray(rng.standard_normal((256, 16, 10, 10), dtype=np.float32))
    pcopy = cupy.empty_like(px)
    from kernels._common import pool_geometry

    pgeo = pool_geometry(2)
    # split-K's sum of the partial products (LeNet's first weight gradient: 6 x 25, 30
    # chunks): one launch of our kernel against the CuPy reduction it replaced
    parts = cupy.asarray(rng.standard_normal((1, 30, 6, 25), dtype=np.float32))
    summed = cupy.empty((1, 6, 25), dtype=np.float32)
    ksum = K._splitk_sum_kernel("float32")
    cases.update({
        "split-K sum, our kernel (kernels.cuda._splitk_sum_kernel)": lambda: K._launch(
            ksum, summed.size)(parts, summed),
        "split-K sum, CuPy reduction (sum(axis=1, out=...), before)": lambda: cupy.sum(
            parts, axis=1, out=summed),
        "Linear's bias add (CuPy elementwise c += b, before)": lambda: c.__iadd__(bias),
        "Linear's bias add, our kernel (kernels.cuda.add_channel_bias_)": lambda:
            K.add_channel_bias_(a2, bias),
        "Linear's bias gradient (CuPy reduction g.sum(axis=0), before)": lambda: a2.sum(axis=0),
        "Linear's bias gradient, our kernel (kernels.cuda.channel_sum)": lambda:
            K.channel_sum(a2),
        "max-pool 2x2 forward, kernels.cuda (its default kernel)": lambda: K.maxpool2d_forward(
            px, 2, 2),
        # as the framework calls it: the layer's geometry, which keeps the launch planned
        "max-pool 2x2 forward, kernels.cuda with a layer's geometry": lambda:
            K.maxpool2d_forward(px, pgeo),
        "- a copy of its input (cupy.copyto, for scale)": lambda: cupy.copyto(pcopy, px),
        "max-pool 2x2 forward, Numba kernel (kernels.cuda)": _with_pool_kernel(
            K, "numba", lambda: K.maxpool2d_forward(px, 2, 2)),
        "max-pool 2x2 forward, CUDA C kernel (kernels.cuda_pool, planned driver launch)": lambda:
            CP.maxpool2d_forward(px, 2, 2),
    })
    try:
        import torch

        ta, tb = torch.as_tensor(a2, device="cuda"), torch.as_tensor(b2, device="cuda")
        cases["torch.mm (same process, for scale)"] = lambda: torch.mm(ta, tb)
    except Exception:  # noqa: BLE001 - torch is only the scale
        pass
    rows = launch_rows(cases, cupy.cuda.runtime.deviceSynchronize)
    err = float(cupy.abs(K.matmul(a2, b2) - a2 @ b2).max())
    lines = [f"## Host cost of one launch, GEMM {n}^3 float32 (calls back to back, one sync)",
             "", "| case | us per call |", "|---|---:|"]
    lines += [f"| {r['case']} | " + (f"{r['us_per_call']:.1f}" if "error" not in r
                                     else f"failed: {r['error']}") + " |" for r in rows]
    lines.append(f"\nmax |ours - cuBLAS| at this size: {err:.1e}")
    _write(out, "launch", rows, lines)
    return 1 if any("error" in r for r in rows) else 0


SWEEP_CONVS = ("resnet18 64@32", "resnet18 512@4")


def sweep_rows(K, xp, timer, n, tiles, convs, deadline_s, on_row=None):
    """Time kernels.cuda's GEMM at each tile: rows of {tile, a_pad, matmul_s, rel_err,
    registers, '<conv> forward_s', '<conv> weight grad_s', conv_rel_err} or {tile, error}.
    A sixth number sets the shared A tile's padding (kernels.cuda._A_PAD), a seventh
    double buffering (kernels.cuda._DOUBLE_BUFFER), an eighth the warp layout
    (kernels.cuda._WARP_LAYOUT: None or (warp, ln)), a ninth the register cap
    (kernels.cuda._MAX_REGISTERS); without them, the module's settings.
    These rows time the 64x64-family kernel (the wide kernel off). An entry that is a dict
    is a configuration of the wide kernel (keys of kernels.cuda.WIDE_TILE, the rest as
    WIDE_TILE): its row {wide, matmul_s, rel_err, registers} times the matmul only (the
    convolutions do not use it). ``timer(fn)`` -> seconds;
    ``convs`` maps a name to (x shape, w shape, stride, padding); ``on_row(rows)`` is called
    after every tile. The tile in force before is restored. Runs under the simulator as
    well (tests, tiny sizes)."""
    from kernels import _cuda_launch

    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    b = xp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    ref = a @ b
    data = {}
    for name, (xs, ws, s, p) in convs.items():
        x = xp.asarray(rng.standard_normal(xs, dtype=np.float32))
        w = xp.asarray(rng.standard_normal(ws, dtype=np.float32))
        data[name] = (x, w, s, p, K.conv2d_forward(x, w, s, p))
    saved, saved_pad, saved_db = tuple(K._tile), K._A_PAD, K._DOUBLE_BUFFER
    saved_warp, saved_cap = K._WARP_LAYOUT, K._MAX_REGISTERS
    saved_wide, saved_wide_min = dict(K._wide_tile), K._WIDE_BLOCKS_PER_SM
    rows, start = [], time.perf_counter()
    try:
        for entry in tiles:
            if isinstance(entry, dict):
                rows.append(_wide_row(K, xp, timer, a, b, ref, entry, saved_wide, start,
                                      deadline_s))
                K._wide_tile.clear()
                K._wide_tile.update(saved_wide)
                if on_row is not None:
                    on_row(rows)
                continue
            K._WIDE_BLOCKS_PER_SM = None
            tile = tuple(entry[:5])
            pad = entry[5] if len(entry) > 5 else saved_pad
            dbuf = bool(entry[6]) if len(entry) > 6 else saved_db
            warp = entry[7] if len(entry) > 7 else saved_warp
            cap = entry[8] if len(entry) > 8 else saved_cap
            head = {"tile": list(tile), "a_pad": pad, "double_buffer": dbuf,
                    "warp_layout": list(warp) if warp else None, "max_registers": cap}
            if time.perf_counter() - start > deadline_s:
                rows.append({**head, "error": "skipped: part deadline"})
                continue
            try:
                K.set_tile(*tile)
                K._A_PAD, K._DOUBLE_BUFFER = pad, dbuf
                K._WARP_LAYOUT, K._MAX_REGISTERS = warp, cap
                c = K.matmul(a, b)
                row = {**head, "matmul_s": timer(lambda: K.matmul(a, b)),
                       "rel_err": float(xp.linalg.norm(c - ref) / xp.linalg.norm(ref))}
                kern = K._gemm_kernel(*tile, K._PLAIN, K._PLAIN, K._OUT_PLAIN, "float32")[0]
                if not K._simulating():  # {signature: registers} over what was compiled
                    row["registers"] = _registers(_cuda_launch, kern)
                errs = [0.0]
                for name, (x, w, s, p, y) in data.items():
                    # against the result at the tile in force before (kernels.cuda's
                    # hypothesis tests check that one against the reference)
                    yt = K.conv2d_forward(x, w, s, p)
                    errs.append(float(xp.linalg.norm(yt - y) / xp.linalg.norm(y)))
                    row[f"{name} forward_s"] = timer(lambda: K.conv2d_forward(x, w, s, p))
                    row[f"{name} weight grad_s"] = timer(
                        lambda: K.conv2d_backward_weight(y, x, w.shape, s, p))
                row["conv_rel_err"] = max(errs)
                rows.append(row)
            except Exception as e:  # noqa: BLE001 - report and go on
                rows.append({**head, "error": repr(e)[:300]})
            if on_row is not None:
                on_row(rows)
    finally:
        K.set_tile(*saved)
        K._A_PAD, K._DOUBLE_BUFFER = saved_pad, saved_db
        K._WARP_LAYOUT, K._MAX_REGISTERS = saved_warp, saved_cap
        K._wide_tile.clear()
        K._wide_tile.update(saved_wide)
        K._WIDE_BLOCKS_PER_SM = saved_wide_min
    return rows


def _registers(launch_module, kernel):
    """The register count of a sweep row, or the reason there is none (never a failed row:
    its timings stand without it)."""
    try:
        return launch_module.registers(kernel)
    except Exception as e:  # noqa: BLE001
        return f"unknown: {repr(e)[:80]}"


def _wide_row(K, xp, timer, a, b, ref, params, base, start, deadline_s):
    """One sweep row for the wide kernel at configuration base + params (sweep_rows)."""
    from kernels import _cuda_launch

    head = {"wide": {**base, **params}}
    if time.perf_counter() - start > deadline_s:
        return {**head, "error": "skipped: part deadline"}
    try:
        K.set_wide_tile(**params)
        K._WIDE_BLOCKS_PER_SM = 0  # every product on the wide kernel
        c = K.matmul(a, b)
        row = {**head, "matmul_s": timer(lambda: K.matmul(a, b)),
               "rel_err": float(xp.linalg.norm(c - ref) / xp.linalg.norm(ref))}
        if not K._simulating():
            row["registers"] = _registers(
                _cuda_launch, K._ladder.dbuf_kernel_for(K._wide_tile, False, False, "float32"))
        return row
    except Exception as e:  # noqa: BLE001 - report and go on
        return {**head, "error": repr(e)[:300]}


def sweep_markdown(rows, n, t_blas, convs):
    """The sweep's table: one line per tile (sweep_rows), timings against cuBLAS's t_blas."""
    flops = 2.0 * n ** 3
    heads = [f"{c} {p}" for c in convs for p in ("forward", "weight grad")]
    lines = [f"## Production GEMM tiles (kernels.cuda.TILE_CANDIDATES), float32; cuBLAS FP32 "
             f"{n}^3: {t_blas * 1e3:.2f} ms", "",
             "| tile BM,BN,BK,TM,TN (A pad, buffering) | registers | matmul ms | TFLOP/s | "
             "% cuBLAS | rel. err (matmul; conv vs default tile) | "
             + " | ".join(f"{h} ms" for h in heads) + " |",
             "|---|---:|---:|---:|---:|---:|" + "---:|" * len(heads)]
    for r in rows:
        if "wide" in r:  # the wide kernel: a matmul time only
            w = r["wide"]
            tile = (f"wide {w['bm']},{w['bn']},{w['bk']},{w['tm']},{w['tn']} (unroll "
                    f"{w['unroll']}, group {w['group']}, warp {w['warp'] // w['ln']}x{w['ln']}, "
                    f"A pad {w['pad']})")
        else:
            tile = ",".join(map(str, r["tile"]))
            if "a_pad" in r:
                warp = r.get("warp_layout")
                tile += (f" ({r['a_pad']}, {'double' if r.get('double_buffer') else 'single'}"
                         + (f", warp {warp[0] // warp[1]}x{warp[1]}" if warp else "")
                         + (f", <= {r['max_registers']} regs" if r.get("max_registers") else "")
                         + ")")
        if "error" in r:
            lines.append(f"| {tile} | failed: {r['error']} |" + " |" * (4 + len(heads)))
            continue
        t = r["matmul_s"]
        conv_err = f"{r['conv_rel_err']:.1e}" if "conv_rel_err" in r else "-"
        cells = [f"{r[h + '_s'] * 1e3:.3f}" if h + "_s" in r else "-" for h in heads]
        lines.append(f"| {tile} | {r.get('registers', '?')} | {t * 1e3:.2f} | "
                     f"{flops / t / 1e12:.2f} | {100 * t_blas / t:.0f}% | {r['rel_err']:.1e}; "
                     f"{conv_err} | " + " | ".join(cells) + " |")
    return lines


def part_sweep(out, n=4096, deadline_s=50.0):
    import cupy

    import kernels.cuda as K
    import kernels.cuda_sgemm as S
    from benchmarks.run import CONV_SHAPES

    convs = {name: CONV_SHAPES[name] for name in SWEEP_CONVS}
    a = cupy.asarray(np.ones((n, n), np.float32))
    t_blas = _events_time(lambda: a @ a)
    head = [{"impl": "cuBLAS FP32 (CuPy)", "s": t_blas}]

    def save(rows, echo=False):
        _write(out, "sweep", head + rows, sweep_markdown(rows, n, t_blas, convs), echo=echo)

    # the first tile (the default) five times: as it runs, with the shared A tile
    # unpadded, double-buffered, its threads laid out by warp (8 x 4 lanes per warp), and
    # with at most 64 registers (4 blocks per multiprocessor instead of 3);
    # then the wide kernel's candidates, then the other
    # tiles (timed on the first GPU run: the part's deadline may skip them)
    first, *rest = K.TILE_CANDIDATES
    default = (*first, K._A_PAD, K._DOUBLE_BUFFER)
    tiles = [first, (*first, 0), (*first, K._A_PAD, True), (*default, K.WARP_CANDIDATE),
             (*default, None, K.MAX_REGISTERS_CANDIDATE), *K.WIDE_CANDIDATES, *rest]
    rows = sweep_rows(K, cupy, lambda fn: _events_time(fn, repeats=5, warmup=1), n,
                      tiles, convs, deadline_s, on_row=save)
    save(rows, echo=True)
    return 1 if any("error" in r for r in rows) else 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_parts")
    p.add_argument("part", choices=["ladder", "tf32", "conv", "pool", "train", "launch",
                                    "sweep"])
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--deadline", type=float, default=None, metavar="S",
                   help="start no new case after S seconds (gpu_check.sh: 4/5 of the part's limit)")
    a = p.parse_args(argv)
    if a.deadline is not None and a.deadline <= 0:
        p.error(f"--deadline must be > 0 seconds, got {a.deadline}")
    dl = {} if a.deadline is None else {"deadline_s": a.deadline}
    if a.part == "ladder":
        part_ladder(a.out, a.n, **dl)
    elif a.part == "tf32":
        return part_tf32(a.out, **dl)
    elif a.part == "conv":
        part_conv(a.out, **dl)
    elif a.part == "pool":
        part_pool(a.out, **dl)
    elif a.part == "sweep":
        return part_sweep(a.out, a.n, **dl)
    elif a.part == "launch":
        return part_launch(a.out)
    else:
        return part_train(a.out, a.batch, **dl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
