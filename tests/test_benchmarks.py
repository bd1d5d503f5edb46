"""The benchmark command runs and writes well-formed results (never judged on timings)."""
import json

import pytest

pytest.importorskip("matplotlib")


def test_quick_cpu_run_writes_wellformed_json(tmp_path, capsys):
    from benchmarks.run import main

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
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n| ") >= len(data["rows"])
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "train step" in capsys.readouterr().out


def test_cuda_without_gpu_is_a_clear_error(capsys):
    from benchmarks.run import main

    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy present: --device cuda may work here")
    except ImportError:
        pass
    assert main(["--device", "cuda", "--quick"]) == 2
    assert "CUDA GPU" in capsys.readouterr().err
