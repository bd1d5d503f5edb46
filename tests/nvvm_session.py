"""One process, simulator off, for every test that compiles the Numba CUDA kernels to PTX.

Three checks need the real CUDA compiler (NVVM) on every kernel: that each compiles for
sm_90 and float32 kernels compute in float32 (tests/test_kernels_ptx.py), that each
production kernel's PTX takes exactly the parameters the driver launch packs
(tests/test_cuda_launch.py), and the sm_90 resource table (benchmarks.resources, checked in
tests/test_gemm_ladder.py). Run separately they compiled the same kernels three times,
three minutes of a 2-core CI machine; here their scripts run one after the other in one
subprocess whose ``numba.cuda.compile_ptx`` remembers what it compiled (same Python
function, signature and options -> the same PTX), so each kernel is compiled once.

conftest.py starts the subprocess (``Session``) as soon as collection shows a test that
needs it, and moves those tests to the end of the run: it compiles on the second core
while the rest of the suite runs (about 100 s of a 2-core machine). ``nvvm_parts`` waits
for it; ``part_output(parts, name)`` gives a part's stdout, fails the calling test with the part's
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
import json, os, sys, traceback
# running beside the suite: the suite's processes come first (some of its tests wait on
# subprocesses with timeouts), the compiles take the CPU they leave
os.nice(10)
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


class Session:
    """The NVVM subprocess, started in the background when this is made, so that it
    compiles on the second core while the rest of the suite runs; ``result()`` waits for
    it, ``close()`` kills it if it still runs."""

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0", PYTHONPATH=str(ROOT))
        # files, not pipes: nobody reads a pipe while the suite runs, and a full one would
        # stop the subprocess
        self._stdout = open(self.out_dir / "stdout.txt", "w+")
        self._stderr = open(self.out_dir / "stderr.txt", "w+")
        self.proc = subprocess.Popen([sys.executable, "-c", RUNNER,
                                      json.dumps(_parts(self.out_dir))],
                                     cwd=ROOT, env=env, stdout=self._stdout,
                                     stderr=self._stderr, text=True)
        self._result = None

    def result(self, timeout=900):
        """{part name: (ok, its output)}, and "_out_dir": the folder of the resources
        part's files."""
        if self._result is None:
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = f"killed after {timeout} s"
            self._result = _read(self._stdout, self._stderr, code, self.out_dir)
        return self._result

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stdout.close()
        self._stderr.close()


def _read(stdout, stderr, code, out_dir):
    stdout.seek(0)
    stderr.seek(0)
    out, lines = {}, []
    for line in stdout.read().splitlines():
        if line.startswith(("@@ok ", "@@fail ")):
            status, name = line.split(" ", 1)
            out[name] = (status == "@@ok", "\n".join(lines))
            lines = []
        else:
            lines.append(line)
    if code or len(out) != len(_parts(out_dir)):
        out["_process"] = (False, f"exit {code}\n{stderr.read()[-3000:]}")
    out["_out_dir"] = str(out_dir)  # where the resources part wrote its table
    return out


def run_parts(out_dir):
    """``Session(out_dir).result()``: the parts run in the foreground."""
    session = Session(out_dir)
    try:
        return session.result()
    finally:
        session.close()


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
