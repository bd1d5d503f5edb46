"""One process, simulator off, for every test that compiles the Numba CUDA kernels to PTX.

Three checks need the real CUDA compiler (NVVM) on every kernel: that each compiles for
sm_90 and float32 kernels compute in float32 (tests/test_kernels_ptx.py), that each
production kernel's PTX takes exactly the parameters the driver launch packs
(tests/test_cuda_launch.py), and the sm_90 resource table (benchmarks.resources, checked in
tests/test_gemm_ladder.py). Run separately they compiled the same kernels three times,
three minutes of a 2-core CI machine; here their scripts run one after the other in one
subprocess whose ``numba.cuda.compile_ptx`` remembers what it compiled (same Python
function, signature and options -> the same PTX), so each kernel is compiled once.

``run_parts(out_dir)`` runs them once per test session (``nvvm_parts`` in conftest.py);
``part_output(parts, name)`` gives a part's stdout, fails the calling test with the part's
traceback, or skips it where NVVM, NVRTC or ptxas is missing.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RUNNER = r'''
import json, sys, traceback
import numpy as np
# as under NumPy >= 2.5, which removed row_stack (the PTX part checks that importing
# kernels.cuda puts it back before numba-cuda's first compile needs it)
vars(np).pop("row_stack", None)
from numba import cuda

compile_ptx, memo = cuda.compile_ptx, {}


def remembered(fn, sig, **options):
    key = (fn, tuple(sig), tuple(sorted(options.items())))
    if key not in memo:
        memo[key] = compile_ptx(fn, sig, **options)
    return memo[key]


cuda.compile_ptx = remembered
# each part's output ends in a line "@@ok NAME", or its traceback and "@@fail NAME"
for name, code in json.loads(sys.argv[1]):
    try:
        exec(compile(code, name, "exec"), {"__name__": "__nvvm_part__"})
        print(f"@@ok {name}", flush=True)
    except BaseException:
        print(traceback.format_exc() + f"@@fail {name}", flush=True)
'''

_MISSING = ("DynamicLibNotFound", "NvvmSupportError", "libnvvm", "NVVM", "no ptxas",
            "No module named 'cuda")


def _parts(out_dir):
    from test_cuda_launch import SCRIPT as LAUNCH
    from test_kernels_ptx import SCRIPT as PTX

    resources = ("from benchmarks import resources\n"
                 f"assert resources.main(['--out', {str(out_dir)!r}]) == 0\n")
    # PTX first: it checks that importing kernels.cuda restores np.row_stack (RUNNER)
    return [("ptx", PTX), ("launch", LAUNCH), ("resources", resources)]


def run_parts(out_dir):
    """{part name: (ok, its output)} of one subprocess running every part, and
    "_out_dir": the folder of the resources part's files."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(_parts(out_dir))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out, lines = {}, []
    for line in proc.stdout.splitlines():
        if line.startswith(("@@ok ", "@@fail ")):
            status, name = line.split(" ", 1)
            out[name] = (status == "@@ok", "\n".join(lines))
            lines = []
        else:
            lines.append(line)
    if proc.returncode or len(out) != len(_parts(out_dir)):
        out["_process"] = (False, f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    out["_out_dir"] = str(out_dir)  # where the resources part wrote its table
    return out


def part_output(parts, name):
    """The stdout of part ``name``; skips where a CUDA compiler is missing, fails with the
    part's traceback otherwise."""
    if name not in parts:
        raise AssertionError(f"the NVVM subprocess never ran part {name!r}: "
                             f"{parts.get('_process', (False, ''))[1]}")
    ok, text = parts[name]
    if not ok and any(m in text for m in _MISSING):
        pytest.skip(f"no NVVM/NVRTC/ptxas to compile CUDA kernels here: "
                    f"{text.strip().splitlines()[-1][:200]}")
    assert ok, text[-3000:]
    return text
