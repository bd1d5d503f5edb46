"""benchmarks/gpu_check.sh's control logic, with a stand-in interpreter: a GPU is lent for
minutes, so the script must keep to its budget, go on past a failing part, pass each part
its deadline and leave an archive of whatever was measured."""
import os
import stat
import subprocess
import tarfile
import textwrap
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"

# every call the script makes goes through $PYTHON; this one answers by the arguments
STUB = textwrap.dedent("""\
    #!/usr/bin/env bash
    case "$*" in
      "-c "*) exit 1 ;;                          # GPU name, library versions: none here
      *benchmarks.resources*) echo "resources"; exit "${STUB_RESOURCES_RC:-0}" ;;
      *"-m pytest"*) echo "3 passed"; exit 0 ;;
      *"gpu_parts ladder"*) echo "$*"; exec sleep "${STUB_LADDER_SLEEP:-0}" ;;
      *"gpu_parts conv"*) echo "conv broke" >&2; exit 3 ;;
      *) echo "$*"; exit 0 ;;
    esac
""")


def run_check(tmp_path, **env):
    stub = tmp_path / "python-stub"
    stub.write_text(STUB)
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "results" / "2026-01-01-stub"
    full = dict(os.environ, PYTHON=str(stub), GPU_CHECK_OUT=str(out),
                GPU_CHECK_ARCHIVE=str(tmp_path / "gpu_check.tar.gz"), **env)
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=full,
                          timeout=120)
    lines = (out / "parts.txt").read_text().splitlines()
    assert " gpu_check on unknown-gpu, budget " in lines[0]  # each run's header
    return proc, out, {line.split()[1].rstrip(":"): line for line in lines[1:]}


def test_a_failing_part_stops_nothing_and_the_archive_holds_every_log(tmp_path):
    proc, out, parts = run_check(tmp_path)
    assert proc.returncode != 0                       # conv failed (and env: no nvidia-smi)
    assert set(parts) == {"env", "resources", "pytest-gpu", "ladder", "tf32", "conv", "pool",
                          "train", "launch", "sweep", "profile", "kernels"}
    assert "exit 3" in parts["conv"] and "exit 0" in parts["pool"]
    assert "failed parts: env conv" in proc.stdout
    # each measuring part is told 4/5 of its limit (pool: 20 s)
    assert (out / "pool.log").read_text().split()[-2:] == ["--deadline", "16"]
    with tarfile.open(tmp_path / "gpu_check.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"2026-01-01-stub/parts.txt", "2026-01-01-stub/conv.log",
            "2026-01-01-stub/kernels.log", "2026-01-01-stub/resources.log"} <= names


def test_a_failing_background_part_is_reported_and_a_rerun_appends(tmp_path):
    proc, out, parts = run_check(tmp_path, GPU_CHECK_PARTS="resources pool",
                                 STUB_RESOURCES_RC="4")
    assert set(parts) == {"resources", "pool"} and "exit 4" in parts["resources"]
    assert proc.returncode != 0 and "failed parts: resources" in proc.stdout
    proc, out, parts = run_check(tmp_path, GPU_CHECK_PARTS="pool")
    assert proc.returncode == 0 and "failed parts: none" in proc.stdout
    text = (out / "parts.txt").read_text()
    assert text.count(" gpu_check on ") == 2 and text.count("== pool: exit 0") == 2


def test_the_budget_cuts_a_slow_part_short_and_skips_the_rest(tmp_path):
    proc, out, parts = run_check(tmp_path, GPU_CHECK_BUDGET="12", STUB_LADDER_SLEEP="60",
                                 GPU_CHECK_PARTS="pytest-gpu ladder conv sweep")
    assert set(parts) == {"pytest-gpu", "ladder", "conv", "sweep"}
    assert "exit 124" in parts["ladder"]              # killed at what was left of 12 s
    assert "skipped, budget spent" in parts["conv"] and "skipped" in parts["sweep"]
    assert proc.returncode != 0
    assert not (out / "env.log").exists() and not (out / "resources.log").exists()
    assert (tmp_path / "gpu_check.tar.gz").exists()


def test_train_part_starts_no_round_past_its_deadline_and_keeps_each_round(tmp_path, monkeypatch):
    import json
    import time

    import benchmarks.run as run
    from benchmarks import gpu_parts

    calls = []

    def child(job, timeout, env_extra=None):
        calls.append((job["side"], timeout, env_extra))
        time.sleep(0.15)
        t = {"ours": 0.010, "torch": 0.012}[job["side"]]
        if env_extra:  # the candidate kernels: ours, a child of its own with the variable
            t = 0.008
        return {"times": {"lenet5": {"step": [t, t, t]}}}

    monkeypatch.setattr(run, "run_child", child)
    monkeypatch.setattr(run, "_have_torch", lambda: True)
    # a round takes ~0.45 s: the second would end past 0.6 s, so it never starts
    assert gpu_parts.part_train(str(tmp_path), batch=8, pairs=3, deadline_s=0.6) == 0
    assert [(side, extra) for side, _, extra in calls] == [
        ("ours", None), ("ours", {"TINYGRAD_K_CUDA_KERNELS": gpu_parts.CANDIDATE_KERNELS}),
        ("torch", None)]
    assert [t for _, t, _ in calls] == [10, 10, 10]  # what is left of the deadline, >= 10 s
    text = (tmp_path / "train.md").read_text()
    assert "1 rounds" in text and "ratio torch/ours: 1.20x" in text, text
    assert "ratio torch/ours with conv=implicit_gemm_64: 1.50x" in text, text
    assert len(json.loads((tmp_path / "train.json").read_text())) == 3


def test_train_part_reports_a_failing_candidate_without_failing(tmp_path, monkeypatch):
    import benchmarks.run as run
    from benchmarks import gpu_parts

    def child(job, timeout, env_extra=None):
        if env_extra:
            return {"error": ["RuntimeError: NVRTC said no"]}
        return {"times": {"lenet5": {"step": [0.01]}}}

    monkeypatch.setattr(run, "run_child", child)
    monkeypatch.setattr(run, "_have_torch", lambda: True)
    assert gpu_parts.part_train(str(tmp_path), batch=8, pairs=1) == 0
    text = (tmp_path / "train.md").read_text()
    assert "* ours, GEMM convolutions only: failed" in text
    assert "failed (ours, GEMM convolutions only): ['RuntimeError: NVRTC said no']" in text


def test_launch_rows_time_each_case_and_report_a_failing_one():
    from benchmarks.gpu_parts import launch_rows

    calls, syncs = {"ok": 0}, []

    def ok():
        calls["ok"] += 1

    def broken():
        raise RuntimeError("no such kernel")

    rows = launch_rows({"ok": ok, "broken": broken}, lambda: syncs.append(1), calls=30, warmup=5)
    assert calls["ok"] == 35 and len(syncs) == 2       # warm-up, sync, timed calls, sync
    assert rows[0]["case"] == "ok" and rows[0]["us_per_call"] > 0
    assert rows[1] == {"case": "broken", "error": "RuntimeError('no such kernel')"}


def test_streamless_view_hides_the_stream_and_keeps_the_array_alive():
    from benchmarks.gpu_parts import _StreamlessView

    class Device:  # what CuPy exports on its null stream: the legacy default stream, 1
        __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (4096, False),
                                    "strides": None, "version": 3, "stream": 1}

    a = Device()
    v = _StreamlessView(a)
    assert "stream" not in v.__cuda_array_interface__ and v.base is a
    assert {k: x for k, x in a.__cuda_array_interface__.items() if k != "stream"} \
        == v.__cuda_array_interface__
    assert a.__cuda_array_interface__["stream"] == 1   # the array's own dict is untouched


def _fake_cupy():
    """Just enough of CuPy over NumPy for the GPU parts' own code to run under the Numba
    simulator: arrays, events timed by the host clock, cuBLAS's math-mode calls. No
    RawKernel, so the TF32 row of the ladder reports a failure, as a broken kernel would."""
    import time
    import types

    import numpy as np

    cp = types.ModuleType("cupy")
    for name in ("asarray", "ascontiguousarray", "empty", "empty_like", "ones", "abs", "copyto",
                 "linalg"):
        setattr(cp, name, getattr(np, name))

    class Event:
        def record(self):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    cp.cuda = types.SimpleNamespace(
        Event=Event, get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3,
        runtime=types.SimpleNamespace(deviceSynchronize=lambda: None),
        cublas=types.SimpleNamespace(getMathMode=lambda h: 0, setMathMode=lambda h, m: None,
                                     CUBLAS_TF32_TENSOR_OP_MATH=3),
        device=types.SimpleNamespace(get_cublas_handle=lambda: 0))
    return cp


def test_ladder_pool_and_sweep_parts_run_their_own_code_end_to_end(tmp_path, monkeypatch):
    """The parts' Python -- every rung / case / tile called, checked, timed, tabulated --
    under the simulator at toy sizes, so that the GPU's minutes are not spent on a slip
    in it. (conv needs PyTorch on CUDA; train and launch have their own tests above.)"""
    import json
    import sys
    import time

    import benchmarks.run as run
    from benchmarks import gpu_parts

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())

    def once(fn, repeats=1, warmup=0):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    monkeypatch.setattr(gpu_parts, "_events_time", once)
    gpu_parts.part_ladder(str(tmp_path), n=12)
    rows = {r["impl"]: r for r in json.loads((tmp_path / "ladder.json").read_text())}
    for rung in ("naive", "smem_tiled", "regblock2d", "vec4_transposed_a",
                 "double_buffered_warp", "production (kernels.cuda.matmul)"):
        assert rows[rung]["rel_err_vs_fp32"] < 1e-5 and rows[rung]["s"] > 0, rows[rung]
    assert "RawKernel" in rows["tf32 mma.sync (ours)"]["error"]
    assert "RawKernel" in rows["tf32 mma.sync, first version (64x64, unpipelined)"]["error"]
    assert "RawKernel" in rows["tf32 mma.sync, 128x128x32, 3 stages, 2x2 warps"]["error"]
    assert "| regblock2d |" in (tmp_path / "ladder.md").read_text()

    assert gpu_parts.part_tf32(str(tmp_path), shapes=(("toy", 6, 8, 4, True),)) == 1
    rows = json.loads((tmp_path / "tf32.json").read_text())
    assert rows[0]["impl"] == "cuBLAS TF32 (CuPy)" and rows[0]["s"] > 0, rows[0]
    assert rows[0]["s_back_to_back"] > 0 and len(rows) == 5
    # ours need CuPy's device and kernels: each row reports its failure, as a broken one would
    assert all("error" in r for r in rows[1:]), rows
    assert "| toy | 6 x 8 x 4 | cuBLAS TF32 (CuPy) |" in (tmp_path / "tf32.md").read_text()

    monkeypatch.setattr(run, "POOL_SHAPES", {"toy": ((1, 2, 5, 5), 3, 2, 1)})
    monkeypatch.setattr(gpu_parts, "POOL_LARGE", {"toy, batch 2": ((2, 1, 4, 4), 2, 2, 0)})
    gpu_parts.part_pool(str(tmp_path))
    rows = json.loads((tmp_path / "pool.json").read_text())
    passes = ("forward", "backward", "forward (CUDA C)", "backward (CUDA C)",
              "backward (CUDA C, a cell a thread)", "backward (CUDA C, two cells a thread)",
              "backward (CUDA C, four cells a thread)", "forward (Numba)", "backward (Numba)")
    assert [(r["case"], r["pass"]) for r in rows] == [
        (case, p) for case in ("toy", "toy, batch 2") for p in passes]
    rows = rows[:len(passes)]
    # the CUDA C kernels need CuPy's RawModule: each of their passes reports the failure
    # in its own row; the framework's rows (the simulator runs Numba) and the Numba ones run
    numba_rows, c_rows = rows[:2] + rows[7:], rows[2:7]
    assert all("RawModule" in r["error"] for r in c_rows), c_rows
    assert all(r["s"] > 0 and r["bytes"] == 4 * (50 + 3 * 18) for r in numba_rows), rows
    assert all(r["back_to_back_s"] > 0 and r["copy_back_to_back_s"] > 0 for r in numba_rows)
    assert "20 back to back" in (tmp_path / "pool.md").read_text()

    import kernels.cuda as K

    monkeypatch.setattr(run, "CONV_SHAPES", {"toy": ((1, 2, 4, 4), (3, 2, 3, 3), 1, 1)})
    monkeypatch.setattr(gpu_parts, "SWEEP_CONVS", ("toy",))
    monkeypatch.setattr(K, "TILE_CANDIDATES", ((8, 8, 4, 2, 2), (4, 8, 2, 1, 2)))
    monkeypatch.setattr(K, "_wide_tile", dict(K.WIDE_TILE, bm=16, bn=16, bk=4, tm=4, tn=4,
                                              pad=1, warp=4, ln=2))
    monkeypatch.setattr(K, "WIDE_CANDIDATES", ({}, {"unroll": 4, "group": 2}))
    monkeypatch.setattr(K, "WARP_CANDIDATE", (4, 2))  # a warp layout for 16 threads
    assert gpu_parts.part_sweep(str(tmp_path), n=9) == 0
    rows = json.loads((tmp_path / "sweep.json").read_text())
    assert rows[0]["impl"] == "cuBLAS FP32 (CuPy)"
    tiles = [r for r in rows[1:] if "tile" in r]
    assert [(r["tile"], r["a_pad"], r["double_buffer"]) for r in tiles] == [
        ([8, 8, 4, 2, 2], 4, False), ([8, 8, 4, 2, 2], 0, False), ([8, 8, 4, 2, 2], 4, True),
        ([8, 8, 4, 2, 2], 4, False), ([8, 8, 4, 2, 2], 4, False), ([4, 8, 2, 1, 2], 4, False)]
    assert [r["warp_layout"] for r in tiles] == [None, None, None, [4, 2], None, None]
    assert [r["max_registers"] for r in tiles] == [None, None, None, None, 64, None]
    assert all(r["rel_err"] < 1e-5 and r["conv_rel_err"] < 1e-5 for r in tiles), rows
    wide = [r for r in rows[1:] if "wide" in r]
    assert [(r["wide"]["unroll"], r["wide"]["group"]) for r in wide] == [(1, 1), (4, 2)]
    assert all(r["rel_err"] < 1e-5 for r in wide), wide
    table = (tmp_path / "sweep.md").read_text()
    assert "| 8,8,4,2,2 (0, single) |" in table and "| 8,8,4,2,2 (4, double) |" in table
    assert "| 8,8,4,2,2 (4, single, warp 2x2) |" in table
    assert "| 8,8,4,2,2 (4, single, <= 64 regs) |" in table
    assert K._MAX_REGISTERS is None
    assert "| wide 16,16,4,4,4 (unroll 4, group 2, warp 2x2, A pad 1) |" in table
    assert tuple(K._tile) == K.DEFAULT_TILE and (K._A_PAD, K._DOUBLE_BUFFER) == (4, False)
    assert K._WARP_LAYOUT is None


def test_without_split_k_switches_it_off_and_back():
    import kernels.cuda as K
    from benchmarks.gpu_parts import _without_split_k

    before = K._SPLIT_BLOCKS_PER_SM
    seen = _without_split_k(K, lambda: (K._SPLIT_BLOCKS_PER_SM,
                                        K._split_k(1, 10 ** 6, 1, 8, 132)))
    assert seen == (0, (1, 10 ** 6)) and K._SPLIT_BLOCKS_PER_SM == before
    assert K._split_k(1, 10 ** 6, 1, 8, 132)[0] > 1


def test_the_sweep_asks_for_the_kernel_the_launch_compiled():
    """gpu_parts.sweep reads the registers of ``_gemm_kernel(..., "float32")``; the launch
    asks with ``conv`` passed as None. Both must be one cached kernel (on the H200 the
    sweep found an uncompiled twin with no registers to report)."""
    import kernels.cuda as K

    args = (*K.DEFAULT_TILE, K._PLAIN, K._PLAIN, K._OUT_PLAIN, "float32")
    assert K._gemm_kernel(*args) is K._gemm_kernel(*args, None)
    assert K._gemm_kernel(*args) is K._gemm_kernel(*args, conv=None)



def test_conv_totals_add_the_three_default_passes_per_layer():
    """The conv part's summary: forward + input grad + weight grad of the default rows
    against cuDNN's (the family rows and failed layers left out), and the stem without
    its input gradient."""
    from benchmarks.gpu_parts import conv_totals

    def row(layer, op, ours_ms, cudnn_ms):
        return {"layer": layer, "pass": op, "ours_s": ours_ms / 1e3, "cudnn_s": cudnn_ms / 1e3}

    rows = [row("resnet18 stem", "forward", 0.1, 0.05),
            row("resnet18 stem", "input grad", 0.4, 0.1),
            row("resnet18 stem", "weight grad", 0.2, 0.1),
            row("resnet18 stem", "forward (CUDA C 128x128)", 9.0, 0.05),
            row("resnet18 64@32", "forward", 0.3, 0.15),
            row("resnet18 64@32", "input grad", 0.3, 0.3),
            row("resnet18 64@32", "weight grad", 0.4, 0.3),
            row("resnet18 512@4", "forward", 0.3, 0.2), {"layer": "resnet18 512@4", "error": "x"}]
    lines = conv_totals(rows)
    assert "| resnet18 stem | 0.700 | 0.250 | 0.36x |" in lines
    assert "| resnet18 stem without its input gradient | 0.300 | 0.150 | 0.50x |" in lines
    assert "| resnet18 64@32 | 1.000 | 0.750 | 0.75x |" in lines
    assert not any("512@4" in line for line in lines)  # a pass missing: no total


def test_without_plans_keeps_none_and_restores_the_keeping():
    import kernels.cuda as K
    from benchmarks.gpu_parts import _without_plans

    keep = K._keep_plan
    K._plans["stale"] = None
    seen = _without_plans(K, lambda: (K._keep_plan({}, "k", lambda *a: None, (1,), None, None,
                                                    None), dict(K._plans)))
    assert seen == (None, {}) and K._keep_plan is keep
