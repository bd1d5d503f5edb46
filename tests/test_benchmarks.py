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
