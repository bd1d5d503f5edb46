"""The study material stays true: every example runs, every code block of
docs/backprop.md runs (in order, in one namespace), and every link points at a real file
and, for `Name` links to Python files, at a real class or function of that name."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "backprop.md"

# example -> lines its output must contain (the example itself exits non-zero on a mismatch)
EXAMPLES = {
    "mlp_backprop.py": ["backward trace", "dL/dW1", "gradcheck (central differences on all "
                        "74 parameters): passed", "all three agree"],
    "conv_grad_three_ways.py": ["Conv2d.backward runs on kernels.cpu", "dL/dx", "dL/dw",
                                "all three agree"],
    "deep_tanh_diagnostics.py": ["saturated tanh units", "first layer / last layer",
                                 "what the plots say"],
    "vanishing_gradients.py": ["<-- VANISHING", "|dL/dW| first layer / last layer",
                               "DOT text of the small MLP's graph"],
}


def test_every_example_is_run_here():
    assert sorted(p.name for p in (ROOT / "examples").glob("*.py")) == sorted(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs(name, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for needle in EXAMPLES[name]:
        assert needle in proc.stdout, f"{name}: {needle!r} not in its output:\n{proc.stdout}"
    if name == "deep_tanh_diagnostics.py":
        for kind in ("bad_init", "kaiming", "batchnorm"):
            for f in ("diagnostics.json", "diag_activations.png", "diag_saturation.png"):
                assert (tmp_path / kind / f).is_file(), (kind, f)
    if name == "vanishing_gradients.py":
        dot = (tmp_path / "mlp_graph.dot").read_text()
        assert dot.startswith("digraph") and "0.weight" in dot


def _blocks(text):
    """(line number, code) of each ```python block."""
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S)]


def test_backprop_md_code_blocks_run(capsys):
    blocks = _blocks(DOC.read_text())
    assert len(blocks) >= 10
    namespace = {"__name__": "backprop_md"}
    for line, code in blocks:
        try:
            exec(compile(code, f"{DOC}:block@{line}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"docs/backprop.md, code block at line {line} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
    assert "VANISHING" in capsys.readouterr().out  # the last block prints a marked trace


def test_backprop_md_covers_every_op_family():
    text = DOC.read_text()
    for heading in ["Matrix product", "broadcasting", "cross-entropy", "Convolution",
                    "pooling", "Batch normalisation", "LSTM cell", "Layer normalisation",
                    "Attention"]:
        assert re.search(rf"^## .*{heading}", text, re.M | re.I), heading


def test_backprop_md_links_point_to_real_code():
    text = DOC.read_text()
    links = re.findall(r"\[([^\]]+)\]\(([^)#\s]+)\)", text)
    assert len(links) >= 20
    checked = 0
    for label, target in links:
        if "://" in target:
            continue
        path = (DOC.parent / target).resolve()
        assert path.is_file(), f"docs/backprop.md links to {target}, which does not exist"
        name = re.fullmatch(r"`([A-Za-z_][A-Za-z0-9_]*)`", label)
        if name and path.suffix == ".py":
            src = path.read_text()
            assert re.search(rf"^\s*(class|def) {name.group(1)}\b", src, re.M), \
                f"docs/backprop.md: {label} links to {target}, which defines no such class"
            checked += 1
    assert checked >= 20
