"""Resource table of every CUDA kernel for sm_90 (H100), built without a GPU.

    python -m benchmarks.resources [--out DIR]       # writes DIR/resources.md and .json

Each Numba kernel is compiled to PTX by ``numba.cuda.compile_ptx`` (NVVM, simulator off)
and the CuPy kernels by NVRTC; then ``ptxas -arch=sm_90 -v`` (sm_90a for the wgmma
kernel, from the PTX's own target; ptxas is in the
nvidia-cuda-nvcc wheel of the test extra) reports registers per thread, spill bytes,
static shared memory and barriers. Theoretical occupancy follows from those and the
launch's threads per block with the sm_90 limits (65536 registers, 64 warps, 32 blocks
and 228 KiB shared memory per SM, 1 KiB reserved per block, registers allocated per warp
in units of 256). ``v4 loads``: 128-bit global loads in the PTX.

For the GEMMs, ``nvdisasm`` (the nvidia-cuda-nvdisasm wheel of the test extra) turns the
cubin into SASS and ``instr/FMA`` counts the instructions the K-loop issues per FFMA, for
one K-tile of the production tile (see k_loop_cost): the FMAs are the work, everything
else (index arithmetic, shared and global loads, branches) is overhead that competes for
the same issue slots. A GEMM whose operands sit in registers needs a little over 1.

Production kernels must not spill (tests/test_gemm_ladder.py checks it), and their
instr/FMA must stay under the bounds that test sets.
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


def nvdisasm_path():
    import importlib.util

    for pkg in ("nvidia.cu13", "nvidia.cuda_nvdisasm"):
        try:
            spec = importlib.util.find_spec(pkg)
        except ModuleNotFoundError:
            spec = None
        for loc in (spec.submodule_search_locations if spec else []) or []:
            p = os.path.join(loc, "bin", "nvdisasm")
            if os.path.exists(p):
                return p
    from shutil import which

    return which("nvdisasm")


def sass_instructions(cubin_path, nvdisasm):
    """[(address, instruction text)] of a cubin, branch targets resolved to addresses."""
    txt = subprocess.run([nvdisasm, "-c", cubin_path], capture_output=True, text=True,
                         check=True).stdout
    ins, labels, pending = [], {}, []
    for line in txt.splitlines():
        m = re.match(r"\s*(\.L_x_\d+):", line)
        if m:
            pending.append(m.group(1))
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            addr = int(m.group(1), 16)
            for name in pending:
                labels[name] = addr
            pending = []
            ins.append((addr, m.group(2)))
    out = []
    for addr, text in ins:
        m = re.search(r"`\((\.L_x_\d+)\)", text)
        if m:
            text = text.replace(m.group(0), hex(labels.get(m.group(1), 0)))
        out.append((addr, text))
    return out


def k_loop_cost(instructions, fma_per_tile):
    """Instructions issued per FFMA over one K-tile of a GEMM, from its SASS.

    Loops are the spans closed by a backward branch. The FMA loop H is the smallest loop
    holding FFMAs. If it holds a whole K-tile's FFMAs (``fma_per_tile``, per thread), the
    cost is |H| / FFMA(H); otherwise H runs fma_per_tile / FFMA(H) times inside the
    smallest loop E around it, and the cost is (|E| - |H| + |H| * trips) / fma_per_tile.
    None when there is no FMA loop."""
    loops = []
    for addr, text in instructions:
        m = re.search(r"BRA\s+0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            lo = int(m.group(1), 16)
            body = [t for a, t in instructions if lo <= a <= addr]
            loops.append((lo, addr, len(body), sum("FFMA" in t for t in body)))
    fma = [lp for lp in loops if lp[3]]
    if not fma:
        return None
    h = min(fma, key=lambda lp: lp[2])
    if h[3] >= fma_per_tile:
        return h[2] / h[3]
    around = [lp for lp in loops if lp[0] <= h[0] and lp[1] >= h[1] and lp != h]
    if not around:
        return h[2] / h[3]
    e = min(around, key=lambda lp: lp[2])
    trips = fma_per_tile / h[3]
    return (e[2] - h[2] + h[2] * trips) / fma_per_tile


def ptxas_info(ptx, ptxas, fma_per_tile=None):
    """ptxas -v's figures for one PTX module; with nvdisasm also ``sass`` (the SASS
    instructions of its one kernel, NOP padding left out; None for a module of several
    entries) and, for a GEMM (fma_per_tile), ``instr_per_fma`` (k_loop_cost)."""
    cost = sass = None
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        cubin = os.path.join(d, "k.cubin")
        with open(src, "w") as f:
            f.write(ptx)
        # (the PTX's own target: sm_90, or sm_90a for the wgmma kernel)
        target = re.search(r"^\.target\s+(sm_\w+)", ptx, re.M)
        arch = target.group(1) if target else "sm_90"
        proc = subprocess.run([ptxas, f"-arch={arch}", "-v", src, "-o", cubin],
                              capture_output=True, text=True)
        nvdisasm = nvdisasm_path()
        if not proc.returncode and nvdisasm:
            instructions = sass_instructions(cubin, nvdisasm)
            if len(re.findall(r"\.entry\s", ptx)) == 1:
                sass = sum(not text.startswith("NOP") for _, text in instructions)
            if fma_per_tile:
                cost = k_loop_cost(instructions, fma_per_tile)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    txt = proc.stderr + proc.stdout

    def num(pat):
        m = re.search(pat, txt)
        return int(m.group(1)) if m else 0

    return {"registers": num(r"Used (\d+) registers"), "spill_stores": num(r"(\d+) bytes spill stores"),
            "spill_loads": num(r"(\d+) bytes spill loads"), "smem": num(r"(\d+) bytes smem"),
            "stack": num(r"(\d+) bytes stack frame"), "instr_per_fma": cost, "sass": sass}


def fma_per_tile(name):
    """FFMAs one thread issues per K-tile of a GEMM kernel at its production configuration
    (None for the other kernels)."""
    import kernels.cuda as K
    import kernels.cuda_gemm as G

    if not name.startswith("gemm") or "TF32" in name:  # (tensor cores: no FFMAs to count)
        return None
    if name.endswith("(ladder)"):
        rung = name[len("gemm "):-len(" (ladder)")]
        c = G.DEFAULT_CONFIG[rung]
        if rung == "naive":
            return 1
        if rung == "smem_tiled":
            return c["tile"]
        return c["tm"] * c["tn"] * c["bk"]
    if "rung 6" in name:
        from kernels import cuda_sgemm as S

        return (32 if "64x128" in name else 64) * S.BK  # 4 x 8 or 8 x 8 per thread
    if name.startswith("gemm wide"):
        c = K.WIDE_TILE
        return c["tm"] * c["tn"] * c["bk"]
    bm, bn, bk, tm, tn = K.DEFAULT_TILE
    return tm * tn * bk


def numba_kernels():
    """(name, ptx, threads per block, production?) of every Numba CUDA kernel, float32."""
    from numba import cuda

    import kernels.cuda as K
    import kernels.cuda_gemm as G

    out = []

    from kernels._cuda_launch import cap_registers

    def add(name, fn, sig, threads, production):
        ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
        ptx = cap_registers(ptx, K.max_registers_of(fn))  # as the driver launch loads it
        out.append((name, ptx, threads, production))

    production = {name for name, *_ in K.kernels_for_ptx(with_candidates=False)}
    for name, fn, sig, threads in K.kernels_for_ptx():
        add(name, fn, sig, threads, name in production)
    for name, fn, sig, threads in G.kernels_for_ptx():
        add(name + " (ladder)", fn, sig, threads, False)
    return out


def nvrtc_ptx(source, name="k.cu", arch="compute_90"):
    """PTX of ``source`` by NVRTC (``arch``: compute_90a for sm_90's wgmma)."""
    from cuda.bindings import nvrtc

    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    (err,) = nvrtc.nvrtcCompileProgram(prog, 2, [f"--gpu-architecture={arch}".encode(),
                                                 b"--std=c++14"])
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
    import kernels.cuda_direct as Dc
    import kernels.cuda_pool as P
    import kernels.cuda_sgemm as S
    import kernels.cuda_tf32 as T
    import kernels.cuda_wgmma as W

    ptxas = ptxas_path()
    if ptxas is None:
        raise RuntimeError("no ptxas (pip install nvidia-cuda-nvcc-cu12)")
    items = numba_kernels()
    items.append(("gemm TF32 mma.sync m16n8k8, first version (64x64; CuPy RawKernel)",
                  nvrtc_ptx(T.SOURCE), T.THREADS, False))
    # (its stages are dynamic shared memory: counted in smem and occupancy)
    items.append(("gemm TF32 mma.sync m16n8k8, pipelined (128x128, 3 cp.async stages; CuPy "
                  "RawKernel)", nvrtc_ptx(T.PIPE_SOURCE), T.PIPE_THREADS, True,
                  T.PIPE_SMEM_BYTES))
    wc = W.WGMMA_CONFIG
    items.append((f"gemm TF32 wgmma m64n{wc.bn}k8, sm_90a ({wc.bm}x{wc.bn}, {wc.stages} cp.async "
                  "stages; CuPy RawModule)", nvrtc_ptx(W.source(), "w.cu", "compute_90a"),
                  wc.threads, False, wc.smem_bytes))
    items.append(("TF32 prep: transpose and round (32x32 tiles; CuPy RawModule)",
                  nvrtc_ptx(W.PREP_SOURCE, "p.cu", "compute_90a"), 256, False))
    # rung 6's NN entry, general (bounds-checked tiles, scalar fallbacks) and exact (whole
    # aligned tiles: 4096^3 takes it), each compiled alone so that its K-loop is read
    core = S.SOURCE[:S.SOURCE.index("\nTK_SGEMM_ENTRY(") + 1]  # (after the #define)
    for entry, what in (("tk_sgemm_nn", "any sizes"), ("tk_sgemm_nn_exact", "whole tiles")):
        line = next(ln for ln in S.SOURCE.splitlines() if ln.startswith(f"TK_SGEMM_ENTRY({entry},"))
        items.append((f"gemm wide matmul in CUDA C (rung 6, {what}; CuPy RawModule)",
                      nvrtc_ptx(core + line + "\n"), S.THREADS, False))
    for bm in (128, 64):
        for dgrad, what in ((False, "forward"), (True, "input gradient")):
            _, entry = S.conv_entry((3, 3, 1, 1, 1, 1, 1, 1), dgrad, bm)
            items.append((f"gemm conv {what} in CUDA C (3x3; {bm}x128, rung 6 schedule)",
                          nvrtc_ptx(S.CORE_SOURCE + S.CONV_SOURCE + entry), S.THREADS, False))
        _, entry = S.conv_wgrad_entry((3, 3, 1, 1, 1, 1, 1, 1), bm)
        items.append((f"gemm conv weight gradient in CUDA C (3x3; {bm}x128, rung 6 schedule)",
                      nvrtc_ptx(S.CORE_SOURCE + S.CONV_WGRAD_SOURCE + entry), S.THREADS, False))
    for window, what in (((2, 2, 2, 2, 0, 0, 1, 1), "2x2/2"), ((3, 3, 2, 2, 1, 1, 1, 1), "3x3/2 pad 1")):
        for pas, label in (("fwd", "forward"), ("bwd1", "backward (gather, a cell a thread)"),
                           ("bwd2", "backward (gather, two cells a thread)"),
                           ("bwd4", "backward (gather, four cells a thread)")):
            items.append((f"max-pool {label} in CUDA C ({what}; CuPy RawModule)",
                          nvrtc_ptx(P.SOURCE + P.entry(window, (pas,))[1]), P.THREADS, False))
    # the direct convolution (its weights in dynamic shared memory, C*KH*KW*R floats, not
    # in the smem column): LeNet-5's conv2 forward, its input gradient, a stem's
    for key, what in (((16, 5, 5, False), "forward, 16 channels, 5x5 (LeNet conv2)"),
                      ((8, 5, 5, True), "input gradient, 6 channels, 5x5 (LeNet conv2)"),
                      ((4, 3, 3, True), "input gradient, 3 channels, 3x3 (ResNet stem)")):
        items.append((f"conv direct {what} in CUDA C (CuPy RawModule)",
                      nvrtc_ptx(Dc.SOURCE + Dc.entry(*key)[1]), Dc.THREADS, True))
    rows = []
    for name, ptx, threads, production, *dynamic in items:
        info = ptxas_info(ptx, ptxas, fma_per_tile(name))
        info["smem"] += sum(dynamic)
        occ, limit = occupancy(info["registers"], info["smem"], threads)
        rows.append(dict(info, kernel=name, threads=threads, production=production,
                         occupancy=occ, limited_by=limit,
                         v4_loads=len(re.findall(r"ld\.global(?:\.nc)?\.v4", ptx)),
                         params=len(re.findall(r"\.param\s", ptx.split(")")[0]))))
    return rows


def _cost(row):
    if row.get("instr_per_fma") is not None:
        return f"{row['instr_per_fma']:.2f}"
    return "?" if row["kernel"].startswith("gemm") and "TF32" not in row["kernel"] else "-"


def to_markdown(rows):
    lines = ["## CUDA kernels on sm_90 (ptxas -v; float32; no GPU needed)", "",
             "| kernel | threads/block | registers | spill st/ld (B) | stack (B) | smem (B) | "
             "occupancy | limited by | v4 loads | param words | SASS instr | instr/FMA |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['threads']} | {r['registers']} | "
                     f"{r['spill_stores']}/{r['spill_loads']} | {r['stack']} | {r['smem']} | "
                     f"{100 * r['occupancy']:.0f}% | {r['limited_by']} | {r['v4_loads']} | "
                     f"{r['params']} | {r.get('sass') or '-'} | {_cost(r)} |")
    lines += ["", "param words: PTX kernel parameters (a Numba array argument expands to "
              "several: meminfo, parent, size, itemsize, data, shape and strides), the host "
              "cost of a numba-cuda launch grows with them. SASS instr: the kernel's instructions "
              "(nvdisasm, NOP padding left out; '-' for a module of several kernels): for the "
              "one-output-a-thread kernels (pooling) about what a thread issues. instr/FMA: SASS instructions the "
              "K-loop issues per FFMA over one K-tile (nvdisasm; '-' for the other kernels, "
              "'?' without nvdisasm)."]
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
