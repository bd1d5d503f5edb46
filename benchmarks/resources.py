"""Resource table of every CUDA kernel for sm_90 (H100), built without a GPU.

    python -m benchmarks.resources [--out DIR]       # writes DIR/resources.md and .json

Each Numba kernel is compiled to PTX by ``numba.cuda.compile_ptx`` (NVVM, simulator off)
and the CuPy TF32 kernel by NVRTC; then ``ptxas -arch=sm_90 -v`` (from the
nvidia-cuda-nvcc wheel of the test extra) reports registers per thread, spill bytes,
static shared memory and barriers. Theoretical occupancy follows from those and the
launch's threads per block with the sm_90 limits (65536 registers, 64 warps, 32 blocks
and 228 KiB shared memory per SM, 1 KiB reserved per block, registers allocated per warp
in units of 256). ``v4 loads``: 128-bit global loads in the PTX.

Production kernels must not spill (tests/test_gemm_ladder.py checks it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

SM90 = {"regs": 65536, "warps": 64, "blocks": 32, "smem": 228 * 1024, "smem_reserved": 1024,
        "reg_unit": 256}


def ptxas_path():
    import importlib.util

    spec = importlib.util.find_spec("nvidia.cuda_nvcc")
    for loc in (spec.submodule_search_locations if spec else []) or []:
        p = os.path.join(loc, "bin", "ptxas")
        if os.path.exists(p):
            return p
    from shutil import which

    return which("ptxas")


def occupancy(regs, smem, threads):
    """(fraction of the SM's 64 warps, the limiting resource) for one kernel on sm_90."""
    warps = math.ceil(threads / 32)
    regs_per_warp = math.ceil(max(regs, 1) * 32 / SM90["reg_unit"]) * SM90["reg_unit"]
    limits = {"threads": SM90["warps"] // warps, "blocks": SM90["blocks"],
              "registers": SM90["regs"] // (regs_per_warp * warps),
              "shared memory": SM90["smem"] // (smem + SM90["smem_reserved"])}
    blocks = min(limits.values())
    return blocks * warps / SM90["warps"], min(limits, key=limits.get)


def ptxas_info(ptx, ptxas):
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run([ptxas, "-arch=sm_90", "-v", src, "-o", os.path.join(d, "k.cubin")],
                              capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    txt = proc.stderr + proc.stdout

    def num(pat):
        m = re.search(pat, txt)
        return int(m.group(1)) if m else 0

    return {"registers": num(r"Used (\d+) registers"), "spill_stores": num(r"(\d+) bytes spill stores"),
            "spill_loads": num(r"(\d+) bytes spill loads"), "smem": num(r"(\d+) bytes smem"),
            "stack": num(r"(\d+) bytes stack frame")}


def numba_kernels():
    """(name, ptx, threads per block, production?) of every Numba CUDA kernel, float32."""
    from numba import cuda

    import kernels.cuda as K
    import kernels.cuda_gemm as G

    out = []

    def add(name, fn, sig, threads, production):
        ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
        out.append((name, ptx, threads, production))

    for name, fn, sig, threads in K.kernels_for_ptx():
        add(name, fn, sig, threads, True)
    for name, fn, sig, threads in G.kernels_for_ptx():
        add(name + " (ladder)", fn, sig, threads, False)
    return out


def nvrtc_ptx(source, name="k.cu"):
    from cuda.bindings import nvrtc

    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    (err,) = nvrtc.nvrtcCompileProgram(prog, 2, [b"--gpu-architecture=compute_90", b"--std=c++14"])
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    # a bytearray: NVRTC writes into the buffer, and a 1-byte bytes object is CPython's
    # shared singleton (writing a NUL into b" " * 1 turns every b" " of the process into NUL)
    log = bytearray(size)
    nvrtc.nvrtcGetProgramLog(prog, log)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(bytes(log).decode(errors="replace"))
    _, n = nvrtc.nvrtcGetPTXSize(prog)
    ptx = bytearray(n)
    nvrtc.nvrtcGetPTX(prog, ptx)
    return bytes(ptx).rstrip(b"\0").decode()


def table():
    """Rows (dicts) for every kernel; raises where a compiler is missing."""
    import kernels.cuda_tf32 as T

    ptxas = ptxas_path()
    if ptxas is None:
        raise RuntimeError("no ptxas (pip install nvidia-cuda-nvcc-cu12)")
    items = numba_kernels()
    items.append(("gemm TF32 mma.sync m16n8k8 (CuPy RawKernel)", nvrtc_ptx(T.SOURCE), T.THREADS,
                  True))
    rows = []
    for name, ptx, threads, production in items:
        info = ptxas_info(ptx, ptxas)
        occ, limit = occupancy(info["registers"], info["smem"], threads)
        rows.append(dict(info, kernel=name, threads=threads, production=production,
                         occupancy=occ, limited_by=limit,
                         v4_loads=len(re.findall(r"ld\.global(?:\.nc)?\.v4", ptx)),
                         params=len(re.findall(r"\.param\s", ptx.split(")")[0]))))
    return rows


def to_markdown(rows):
    lines = ["## CUDA kernels on sm_90 (ptxas -v; float32; no GPU needed)", "",
             "| kernel | threads/block | registers | spill st/ld (B) | stack (B) | smem (B) | "
             "occupancy | limited by | v4 loads | param words |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['threads']} | {r['registers']} | "
                     f"{r['spill_stores']}/{r['spill_loads']} | {r['stack']} | {r['smem']} | "
                     f"{100 * r['occupancy']:.0f}% | {r['limited_by']} | {r['v4_loads']} | "
                     f"{r['params']} |")
    lines += ["", "param words: PTX kernel parameters (a Numba array argument expands to "
              "several: meminfo, parent, size, itemsize, data, shape and strides), the host "
              "cost of a numba-cuda launch grows with them."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.resources", description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        # compile_ptx needs the real CUDA target: run again without the simulator
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
        return subprocess.call([sys.executable, "-m", "benchmarks.resources"] + (argv or sys.argv[1:]),
                               env=env)
    rows = table()
    md = to_markdown(rows)
    print(md)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "resources.md"), "w") as f:
            f.write(md)
        with open(os.path.join(args.out, "resources.json"), "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
