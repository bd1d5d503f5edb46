"""The client suite: everyday PyTorch scripts (tests/clients/*.py), each run twice in a
fresh process, once with the real torch and once with ``torch`` aliased to tinygrad_k by
module name only (``python -m tinygrad_k.torch_alias``); their numbers must agree.

Each script prints one line ``RESULT <json>``. Every entry is compared (numbers to a
float32 tolerance, everything else exactly), except entries whose name starts with "_":
those come from a framework's own random stream (dropout, a Generator's draws) and are
only required to be present, of the same structure, and finite.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = sorted(p for p in (ROOT / "tests" / "clients").glob("*.py") if not p.name.startswith("_"))
RTOL, ATOL = 2e-3, 1e-5


def start_client(script, aliased):
    cmd = [sys.executable, "-m", "tinygrad_k.torch_alias", str(script)] if aliased else \
        [sys.executable, str(script)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # a client on a machine without a GPU: no CUDA simulator (torch sees no GPU either)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def result_of(script, proc, aliased):
    """The script's RESULT dict, or a test failure with its stderr."""
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    who = "tinygrad_k (aliased as torch)" if aliased else "torch"
    if proc.returncode != 0:
        pytest.fail(f"{script.name} under {who} exited with {proc.returncode}:\n"
                    f"{stderr[-4000:]}")
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"{script.name} under {who} printed no RESULT line:\n{stdout[-2000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def compare(want, got, path, compare_values=True):
    """Recursively compare; returns a list of mismatch descriptions."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(want) != set(got):
            keys = sorted(got) if isinstance(got, dict) else got
            return [f"{path}: keys {sorted(want)} vs {keys!r}"]
        out = []
        for k in want:
            out += compare(want[k], got[k], f"{path}.{k}",
                           compare_values and not str(k).startswith("_"))
        return out
    if isinstance(want, list):
        if not isinstance(got, list) or len(want) != len(got):
            return [f"{path}: {want!r} vs {got!r} (length)"]
        return [m for i, (a, b) in enumerate(zip(want, got))
                for m in compare(a, b, f"{path}[{i}]", compare_values)]
    if isinstance(want, bool) or not isinstance(want, (int, float)):
        return [] if (want == got or not compare_values) else [f"{path}: {want!r} vs {got!r}"]
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return [f"{path}: {want!r} vs {got!r} (type)"]
    if not compare_values:
        finite = math.isfinite(got) or not math.isfinite(want)
        return [] if finite else [f"{path}: {got} not finite"]
    if isinstance(want, int) and not isinstance(got, int):
        return [f"{path}: {want!r} vs {got!r} (int vs float)"]
    if not math.isclose(want, got, rel_tol=RTOL, abs_tol=ATOL):
        return [f"{path}: torch {want!r} vs tinygrad_k {got!r}"]
    return []


# Scripts that still need a piece of issue 11 another engineer is landing: marked, with
# the missing feature, never skipped (they run, and show as XPASS once it lands).
WAITING_FOR = {
}


def _param(p):
    marks = [pytest.mark.xfail(reason=WAITING_FOR[p.stem], strict=False)] \
        if p.stem in WAITING_FOR else []
    return pytest.param(p, id=p.stem, marks=marks)


@pytest.mark.parametrize("script", [_param(p) for p in CLIENTS])
def test_client_script_matches_torch(script):
    # both at once: the two processes overlap their start-up (imports, JIT caches)
    procs = start_client(script, aliased=False), start_client(script, aliased=True)
    want = result_of(script, procs[0], aliased=False)
    got = result_of(script, procs[1], aliased=True)
    mismatches = compare(want, got, script.stem)
    assert not mismatches, "\n".join(mismatches[:20])


def test_there_are_enough_clients():
    assert len(CLIENTS) >= 12, [p.name for p in CLIENTS]


def test_compare_reports_differences():
    assert compare({"a": [1.0, 2]}, {"a": [1.0 + 1e-6, 2]}, "r") == []
    assert compare({"a": [1.0]}, {"a": [1.1]}, "r")
    assert compare({"_r": [1.0]}, {"_r": [5.0]}, "r") == []
    assert compare({"_r": [1.0]}, {"_r": [float("nan")]}, "r")
    assert compare({"a": 1}, {"b": 1}, "r")
    assert compare({"n": "x"}, {"n": "y"}, "r")
