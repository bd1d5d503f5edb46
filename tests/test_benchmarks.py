"""The benchmark command runs and writes well-formed results (never judged on timings)."""
import json

import pytest

pytest.importorskip("matplotlib")


def test_quick_cpu_run_writes_wellformed_json(tmp_path, capsys):
    from benchmarks.cli import main

    assert main(["--device", "cpu", "--suite", "all", "--quick", "--repeats", "2",
                 "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert {"machine", "rows"} <= set(data)
    assert data["machine"]["device"] == "cpu" and data["machine"]["peaks"]["copy_gbps"] > 0
    groups = {r["group"] for r in data["rows"]}
    assert {"matmul", "conv2d forward", "conv2d backward_input", "conv2d backward_weight",
            "maxpool2d forward", "maxpool2d backward", "train step"} <= groups
    for row in data["rows"]:
        assert row["times_s"]["ours"] > 0
        assert all(v > 0 for v in row["ratios"].values())
        lo, hi = row["spread_s"]["ours"]
        assert lo <= row["times_s"]["ours"] <= hi
    # each side ran in its own process and says with which thread settings
    settings = data["machine"]["settings"]
    assert settings["ours"]["numba_threading_layer"] == _expected_layer()
    assert "torch_threads" in settings["torch"]
    assert data["machine"]["errors"] == []
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n| ") >= len(data["rows"])
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "train step" in capsys.readouterr().out


def test_cuda_without_gpu_is_a_clear_error(capsys):
    from benchmarks.cli import main

    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy present: --device cuda may work here")
    except ImportError:
        pass
    assert main(["--device", "cuda", "--quick"]) == 2
    assert "CUDA GPU" in capsys.readouterr().err


def test_children_get_no_thread_pool_settings(monkeypatch):
    """The parent's OMP_WAIT_POLICY (or any pool variable) must not reach the sides."""
    from benchmarks import run

    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    seen = {}

    def fake_run(cmd, env, **kw):
        seen.update(env)
        raise run.subprocess.TimeoutExpired(cmd, 0)

    monkeypatch.setattr(run.subprocess, "run", fake_run)
    assert "error" in run.run_child({"kind": "train"})
    assert "OMP_WAIT_POLICY" not in seen
    run.run_child({"kind": "train"}, keep_env=True)
    assert seen["OMP_WAIT_POLICY"] == "passive"


def test_importing_our_cpu_kernels_leaves_openmp_alone():
    """kernels.cpu must not set process-wide OpenMP variables (they would change any
    other library's pool in the same process, PyTorch's included)."""
    import subprocess
    import sys

    code = ("import os, numpy as np, kernels.cpu as k; "
            "k.conv2d_forward(np.ones((2, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32)); "
            "import numba; print(os.environ.get('OMP_WAIT_POLICY'), numba.threading_layer())")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["None", _expected_layer()]


def _expected_layer():
    """TBB where the tbb wheel is installed (a dependency on x86-64 Linux), else
    workqueue -- never OpenMP, whose spinning pool fights BLAS."""
    from importlib import metadata

    try:
        metadata.version("tbb")
    except metadata.PackageNotFoundError:
        return "workqueue"
    return "tbb"


def test_profile_splits_a_step_into_kernel_and_framework_time(tmp_path):
    from benchmarks.cli import main

    assert main(["--profile", "mlp", "--batch", "8", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "profile-mlp-8.json").read_text())
    ours = next(r for r in res if r["side"] == "ours")
    assert {"kernels", "Function.apply", "autograd engine (backward)",
            "optimizer Python"} <= set(ours["categories_s"])
    # 3 linear layers: 3 forward GEMMs, 2 backward each but none for the input's gradient
    assert ours["calls_per_step"]["kernels"] == 8
    assert ours["alloc"]["graph_nodes"] > 0
    funcs = ours["functions"]
    assert 0 < len(funcs) <= 30 and all(f["calls"] > 0 and f["own_s"] >= 0 for f in funcs)
    assert [f["own_s"] for f in funcs] == sorted((f["own_s"] for f in funcs), reverse=True)
    assert any(f["function"].startswith(("tinygrad_k/", "kernels/")) for f in funcs), funcs
    torch_side = [r for r in res if r["side"] == "torch"]
    if torch_side:
        assert torch_side[0]["categories_s"]["ATen operators (kernels + dispatch)"] > 0
    md = (tmp_path / "profile-mlp-8.md").read_text()
    assert "where the time goes" in md and "| function | calls | own us |" in md


def test_without_tbb_our_kernels_fall_back_to_workqueue():
    """Where TBB cannot load, kernels.cpu picks workqueue (never OpenMP) and still works."""
    import os
    import subprocess
    import sys

    code = ("import sys; sys.modules['numba.np.ufunc.tbbpool'] = None; "
            "import numpy as np, kernels.cpu as k; "
            "y = k.conv2d_forward(np.ones((2, 1, 5, 5), np.float32), np.ones((1, 1, 3, 3), np.float32)); "
            "import numba; print(numba.threading_layer(), float(y.sum()))")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["workqueue", str(2 * 9 * 9.0)]


class _FakeTaker:
    """A stand-in for run._TurnTaker: records the order of turns, answers at once."""

    log = []

    def __init__(self, job, keep_env):
        self.side = job["side"]
        self.proc = self
        self.killed = False

    def kill(self):
        self.killed = True

    def ready(self):
        return {"ours": 0.5, "torch": 0.25}[self.side]

    def turn(self, warmup, repeats, budget_s):
        self.log.append(self.side)
        assert warmup == 1 and repeats == 3
        return [0.002, 0.001, 0.003] if self.side == "ours" else [0.004, 0.004]

    def close(self):
        return {"settings": {"side": self.side}, "loadavg": [0.0, 0.1]}


def test_training_steps_take_turns_in_lockstep(monkeypatch):
    """Each session starts one process a side; the sides alternate who goes first; the
    per-turn medians line up turn by turn, so _row's per-turn ratios pair like with like."""
    from benchmarks import run

    monkeypatch.setattr(run, "_TurnTaker", _FakeTaker)
    _FakeTaker.log = []
    job = {"kind": "train", "device": "cpu", "model": "mlp", "batch": 8, "repeats": 3}
    res = run.run_train_sessions(job, ["ours", "torch"], sessions=2, turns=3)
    assert _FakeTaker.log == ["ours", "torch", "torch", "ours", "ours", "torch"] * 2
    key = "train step|mlp batch 8"
    assert res["times"][key] == {"ours": [0.002] * 6, "torch eager": [0.004] * 6}
    assert res["first_step_s"] == {"ours": [0.5, 0.5], "torch": [0.25, 0.25]}
    assert res["settings"] == {"ours": {"side": "ours"}, "torch": {"side": "torch"}}
    assert res["errors"] == [] and res["work"][key] == {"images": 8}
    row = run._row(key, res["times"][key], res["work"][key], {}, None)
    assert row["ratios"]["torch eager"] == 2.0 and row["ratio_range"]["torch eager"] == [2, 2]


def test_a_failing_or_hanging_side_costs_its_session_only(monkeypatch):
    import threading

    from benchmarks import run

    class Failing(_FakeTaker):
        def turn(self, warmup, repeats, budget_s):
            if self.side == "torch":
                raise RuntimeError("the child ended before BENCH_TURN")
            return super().turn(warmup, repeats, budget_s)

    monkeypatch.setattr(run, "_TurnTaker", Failing)
    job = {"kind": "train", "device": "cpu", "model": "mlp", "batch": 8, "repeats": 3}
    res = run.run_train_sessions(job, ["ours", "torch"], sessions=1, turns=2)
    # ours had a turn, torch none: no unpaired turn is kept
    assert res["times"]["train step|mlp batch 8"] == {"ours": [], "torch eager": []}
    assert res["errors"] == ["train mlp 8: the child ended before BENCH_TURN"]

    released = threading.Event()

    class Hanging(_FakeTaker):
        def kill(self):  # the watchdog's kill ends the wait below, as a dead child would
            released.set()

        def turn(self, warmup, repeats, budget_s):
            if not released.wait(10):
                raise AssertionError("the watchdog did not stop the session")
            raise RuntimeError("the child ended before BENCH_TURN")

    monkeypatch.setattr(run, "_TurnTaker", Hanging)
    res = run.run_train_sessions(job, ["ours", "torch"], sessions=1, turns=2, timeout=0.2)
    assert res["errors"] == ["train mlp 8: timed out after 0.2 s"]


def test_a_real_child_that_fails_is_reported_not_waited_for():
    """A training child that dies before its first step (an unknown model): the session
    reports the child's own error line, and the run goes on."""
    from benchmarks import run

    job = {"kind": "train", "device": "cpu", "model": "no_such_model", "batch": 8,
           "repeats": 1}
    res = run.run_train_sessions(job, ["ours"], sessions=1, turns=1, timeout=120)
    assert len(res["errors"]) == 1 and "BENCH_READY" in res["errors"][0]
    assert "no_such_model" in res["errors"][0]
