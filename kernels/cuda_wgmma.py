"""A TF32 GEMM on sm_90's warpgroup tensor-core instruction (``wgmma.mma_async``, CuPy).

The mma.sync kernels of kernels/cuda_tf32.py give every warp its fragments through
registers: per k-step of 8 a lane reads 16 A and 16 B words of shared memory, rounds them
and issues 32 ``mma.sync``, some 4.4 instructions a product in all, and reached 45% of
cuBLAS TF32 on an H100. Hopper's ``wgmma.mma_async.sync.aligned.m64nNk8.f32.tf32.tf32``
takes both operands straight from shared memory, described by 64-bit descriptors: one
instruction computes a 64 x N x 8 product for a warpgroup of 4 warps (128 threads) and
accumulates into N / 2 registers a thread, while the threads go on to issue copies. It is
the instruction of Hopper's fastest GEMMs (CUTLASS's sm90 kernels); it needs the
``sm_90a`` target.

Its operands must be *K-major* in shared memory for TF32 (the transposed layouts are for
16-bit types only): A (M x K, row-major) is; B (K x N, row-major) is not. So the product
takes three launches:

1. ``tk_tf32_prep`` writes Bt = round(B^T) (N x K) and, unless A is already usable, a
   rounded copy of A: a 32 x 32 tile a block through shared memory, so that both the
   reads and the writes are whole rows. ``round``: to nearest TF32, ties to even
   (``cvt.rn``) -- the tensor cores read only the TF32 bits of an FP32 word (taken here to
   be truncation; the GPU test accepts either), and on Gaussian operands truncated ones
   give 7.7e-4 relative error against 2.9e-4 rounded (NumPy).
   ``WgmmaConfig.round=False`` skips A's pass where A is aligned and contiguous.
   For x @ W.T (``trans_b``, a linear layer) B is already K-major: a plain rounding copy.
2. ``tk_gemm_tf32_wgmma``: a block of ``bm / 64`` warpgroups computes a bm x bn tile of
   C, K in steps of 32 floats -- one 128-byte row of each operand tile, stored with the
   128-byte swizzle (16-byte chunk j of row r at chunk j ^ (r % 8)) that the descriptors
   name, so that the tensor cores read 8 rows at once from 32 banks. ``stages`` steps of
   tiles in shared memory, ``cp.async`` 16-byte copies (zero-filled past the edges);
   each warpgroup issues ``bk / 8 = 4`` wgmma a step on its 64 rows (descriptors advanced
   32 bytes along the swizzled row, as the hardware applies the swizzle to the address),
   commits them as a group and, with ``depth = 1``, leaves that group running while the
   next step's copies are issued and its barrier passed.
   Order per step: wait for this thread's copies of the step, ``fence.proxy.async``
   (copies are generic-proxy writes, wgmma reads through the async proxy), barrier; then
   the copies of step + stages - 1 - depth into the stage the step ``depth + 1`` before
   read (done: every thread waited for that group before the barrier), then the wgmma.

Tests without a GPU (tests/test_kernels_wgmma_src.py): the source runs as host C++ with
models of wgmma (descriptor decoding, the swizzle applied to the address, the
accumulator layout of the ISA's "Matrix fragments for wgmma .m64nNk8"), of cp.async and
of the prep kernel, with the wgmma reading shared memory either at issue or only at its
wait; NVRTC compiles it for sm_90a and ptxas reports registers, spills and whether it
serializes the wgmma. On a GPU: tests/test_kernels_gpu.py and the ladder part of
benchmarks.gpu_parts (rows "tf32 wgmma, ...").
"""
from __future__ import annotations

import collections
import functools
import math

import numpy as np

__all__ = ["WgmmaConfig", "WGMMA_CONFIG", "WGMMA_CANDIDATES", "source", "PREP_SOURCE",
           "usable", "fold_transpose", "supported", "matmul", "probe", "BK"]

BK = 32                 # floats of K a step: one 128-byte row of each operand tile
ARCH = "sm_90a"         # wgmma needs the architecture-specific target
PREP_TILE = 32          # the prep kernel's tile (PREP_TILE x 8 threads)


class WgmmaConfig(collections.namedtuple("WgmmaConfig", "bm bn stages depth round",
                                         defaults=(True,))):
    """A schedule of tk_gemm_tf32_wgmma: a bm x bn tile of C a block, bm / 64 warpgroups
    (each 64 rows, one m64n{bn}k8 wgmma a k-step of 8), ``stages`` K-steps of 32 in
    shared memory, ``depth`` wgmma groups left running across a step's end (0 or 1),
    ``round``: operands rounded to TF32 by the prep pass (else truncated by the tensor
    cores)."""

    @property
    def threads(self):
        return 2 * self.bm                    # (128 a warpgroup of 64 rows)

    @property
    def a_stage_bytes(self):
        return self.bm * 4 * BK

    @property
    def b_stage_bytes(self):
        return self.bn * 4 * BK

    @property
    def smem_bytes(self):
        # (+1024: the dynamic window is aligned up to the swizzle's 1024-byte period)
        return self.stages * (self.a_stage_bytes + self.b_stage_bytes) + 1024

    @property
    def blocks_per_sm(self):
        """2 where two blocks' stages fit the 228 KiB of an sm_90 SM (1 KiB each reserved)."""
        return 2 if 2 * (self.smem_bytes + 1024) <= 228 * 1024 else 1

    @property
    def a_chunks(self):   # 16-byte copies of A a thread a step
        return self.bm * (BK // 4) // self.threads

    @property
    def b_chunks(self):
        return self.bn * (BK // 4) // self.threads

    def check(self):
        if not (self.bm % 64 == 0 and 64 <= self.bm <= 256
                and self.bn % 16 == 0 and 16 <= self.bn <= 256
                and self.depth in (0, 1) and self.stages >= 2 + self.depth
                and self.bn * (BK // 4) % self.threads == 0
                and self.smem_bytes + 1024 <= 228 * 1024):
            raise ValueError(f"matmul_tf32: wgmma schedule {self} does not tile")
        return self


# The schedules benchmarks.gpu_parts's ladder part times ("tf32 wgmma, ..."). H100, 4096^3,
# prep pass included, cuBLAS TF32 0.37 ms (benchmarks/results/2026-11-27-NVIDIA-H100-
# session11): 128x256 4 stages 0.53 ms (unrounded 0.50, kernel alone 0.47), 256x128 0.59,
# 128x128 0.63-0.64, 3 stages 0.67-0.74; a rerun gave 0.51 and 0.52 for the first two.
# The default's tile is the larger one because of L2: a bm x bn tile reads (bm + bn) x 32
# floats a step for 2 bm bn 32 flops, 32 flops a byte at 128 x 128 and 43 at 128 x 256;
# at 50% of cuBLAS TF32 (~180 TFLOP/s) that is 5.6 against 4.2 TB/s out of L2, and the
# mma.sync kernel's 128 x 128 tiles already drew 5 TB/s at 161 TFLOP/s.
WGMMA_CONFIG = WgmmaConfig(128, 256, 4, 1).check()  # 128 accumulators a thread, 1 block an SM
WGMMA_CANDIDATES = (WGMMA_CONFIG,
                    WgmmaConfig(128, 256, 3, 1),
                    WgmmaConfig(256, 128, 4, 1),     # 4 warpgroups
                    WgmmaConfig(256, 128, 3, 1),
                    WgmmaConfig(128, 128, 4, 1),
                    WgmmaConfig(128, 128, 3, 1),     # 2 blocks an SM
                    WgmmaConfig(128, 128, 3, 0),     # 2 blocks, each step's wgmma waited for
                    WgmmaConfig(128, 256, 4, 1, round=False))

PRIMITIVES = r"""
#ifndef TK_HOST
typedef unsigned tk_saddr;   // a shared-window address
__device__ __forceinline__ tk_saddr tk_shared_address(const float* p) {
  unsigned s;
  asm("{ .reg .u64 q; cvta.to.shared.u64 q, %1; cvt.u32.u64 %0, q; }" : "=r"(s) : "l"(p));
  return s;
}
// 16 bytes global -> shared, the last 16 - bytes of them zeros (bytes 0: src not read)
__device__ __forceinline__ void tk_cp16(tk_saddr dst, const float* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void tk_cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void tk_cp_wait() {
  asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
}
// this thread's shared-memory writes ordered before the async proxy's (wgmma's) reads
__device__ __forceinline__ void tk_fence_async() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
__device__ __forceinline__ void tk_wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void tk_wg_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int N> __device__ __forceinline__ void tk_wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" :: "n"(N) : "memory");
}
// (keeps the compiler from moving accumulator reads or writes across a wgmma's flight)
__device__ __forceinline__ void tk_reg_fence(float& x) { asm volatile("" : "+f"(x) :: "memory"); }
__device__ __forceinline__ float tk_round_tf32(float x) {
  unsigned r;
  asm("cvt.rn.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return __uint_as_float(r);
}
#define TK_SMEM extern __shared__ __align__(1024) float tk_smem[]
#endif
// (shared addresses are 32-bit offsets into the block's shared window on both sides: on
// the host, into the array that stands for it)
__device__ __forceinline__ tk_saddr tk_align1024(tk_saddr s) { return (s + 1023u) & ~1023u; }
// a K-major operand tile with the 128-byte swizzle: start address >> 4 (bits 0-13),
// leading byte offset 1 (unused when a row is one swizzle width), stride byte offset
// 1024 >> 4 (8 rows of 128 bytes: the next core-matrix group; bits 32-45), base offset
// 0 (bits 49-51: the tiles are 1024-aligned), swizzle mode 1 = 128 B (bits 62-63)
__device__ __forceinline__ unsigned long long tk_desc(tk_saddr s) {
  return (unsigned long long)((s & 0x3FFFFu) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}
"""


def _wgmma_primitive(bn):
    """tk_wgmma(d, desc_a, desc_b): D (64 x bn, f32, bn / 2 registers a thread) += A B."""
    regs = bn // 2
    outs = ", ".join(f"%{i}" for i in range(regs))
    cons = ", ".join(f'"+f"(d[{i}])' for i in range(regs))
    return f"""
#ifndef TK_HOST
__device__ __forceinline__ void tk_wgmma(float* d, unsigned long long da, unsigned long long db) {{
  asm volatile("{{\\n.reg .pred p;\\nsetp.ne.b32 p, 1, 0;\\n"
               "wgmma.mma_async.sync.aligned.m64n{bn}k8.f32.tf32.tf32 "
               "{{{outs}}}, %{regs}, %{regs + 1}, p, 1, 1;\\n}}\\n"
               : {cons}
               : "l"(da), "l"(db));
}}
#endif
"""


# the prep pass: dst (batch, cols, rows) = round(src (batch, rows, cols))^T, or, with
# transpose 0, dst (batch, rows, cols) = round(src); a 32 x 32 tile a block of 32 x 8
PREP_SOURCE = PRIMITIVES + r"""
extern "C" __global__ void __launch_bounds__(256)
tk_tf32_prep(const float* __restrict__ src, float* __restrict__ dst, int rows, int cols,
             int transpose, int round) {
  __shared__ float tile[32][33];
  const long long plane = (long long)rows * cols;
  const float* s = src + blockIdx.z * plane;
  float* d = dst + blockIdx.z * plane;
  const int r0 = blockIdx.y * 32, c0 = blockIdx.x * 32, tx = threadIdx.x, ty = threadIdx.y;
#pragma unroll
  for (int j = 0; j < 32; j += 8) {
    const int r = r0 + ty + j, c = c0 + tx;
    if (r < rows && c < cols) {
      const float x = s[(long long)r * cols + c];
      tile[ty + j][tx] = round ? tk_round_tf32(x) : x;
    }
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < 32; j += 8) {
    if (transpose) {  // dst row c0 + ty + j, column r0 + tx
      const int c = c0 + ty + j, r = r0 + tx;
      if (c < cols && r < rows) d[(long long)c * rows + r] = tile[tx][ty + j];
    } else {
      const int r = r0 + ty + j, c = c0 + tx;
      if (r < rows && c < cols) d[(long long)r * cols + c] = tile[ty + j][tx];
    }
  }
}
"""


@functools.lru_cache(maxsize=None)  # (matmul asks every call: one string, its hash kept)
def source(cfg=None):
    """The CUDA source of tk_gemm_tf32_wgmma for a WgmmaConfig (WGMMA_CONFIG by default)."""
    c = (cfg or WGMMA_CONFIG).check()
    rows_a_step = c.threads // (BK // 4)      # rows a round of the block's copies covers
    return PRIMITIVES + _wgmma_primitive(c.bn) + f"""
#define TK_STAGES {c.stages}
#define TK_DEPTH {c.depth}
#define TK_A_STAGE {c.a_stage_bytes}
#define TK_B_STAGE {c.b_stage_bytes}
// this thread's 16-byte copies of step `step` into stage `st`: A's rows cr + {rows_a_step} i
// of the tile (i < {c.a_chunks}), Bt's rows cr + {rows_a_step} i (i < {c.b_chunks}), chunk cj of
// the step's 32 floats, stored at chunk cj ^ (row % 8) (row % 8 = cr % 8 for every i)
#define TK_WG_FILL(step, st)                                                                 \\
  if ((step) < steps) {{                                                                     \\
    const bool k_in = (step) * 32 + 4 * cj < K;                                              \\
    const unsigned k_off = (unsigned)(step) * 32u;                                           \\
    _Pragma("unroll") for (int i = 0; i < {c.a_chunks}; ++i) {{                              \\
      const bool in = k_in && ((a_rows >> i) & 1u);                                          \\
      tk_cp16(sa + (st) * TK_A_STAGE + i * {rows_a_step * 128},                              \\
              Ag + (in ? a_off + i * a_rs + k_off : 0u), in ? 16 : 0);                       \\
    }}                                                                                       \\
    _Pragma("unroll") for (int i = 0; i < {c.b_chunks}; ++i) {{                              \\
      const bool in = k_in && ((b_rows >> i) & 1u);                                          \\
      tk_cp16(sb + (st) * TK_B_STAGE + i * {rows_a_step * 128},                              \\
              Bg + (in ? b_off + i * b_rs + k_off : 0u), in ? 16 : 0);                       \\
    }}                                                                                       \\
  }}                                                                                         \\
  tk_cp_commit();

// C = A @ Bt^T for row-major A (M x K), Bt (N x K: B transposed), C (M x N), batch
// blockIdx.y; needs K % 4 == N % 2 == 0, 16-byte aligned A and Bt, (M + {c.bm}) * K and
// (N + {c.bn}) * K below 2**31. blockIdx.x walks the tiles of C down groups of `group`
// tile rows. Schedule {tuple(c)} (bm, bn, stages, depth, round).
extern "C" __global__ void __launch_bounds__({c.threads}, {c.blocks_per_sm})
tk_gemm_tf32_wgmma(const float* __restrict__ A, const float* __restrict__ Bt,
                   float* __restrict__ C, int M, int N, int K, int tiles_n, int group) {{
  TK_SMEM;
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int tiles_m = (M + {c.bm - 1}) / {c.bm};
  const int per_group = group * tiles_n, first = (int)blockIdx.x / per_group * group;
  const int rows_here = min(tiles_m - first, group), in_group = (int)blockIdx.x % per_group;
  const int row0 = (first + in_group % rows_here) * {c.bm};
  const int col0 = in_group / rows_here * {c.bn};
  const float* Ag = A + (long long)blockIdx.y * M * K;
  const float* Bg = Bt + (long long)blockIdx.y * N * K;
  float* Cg = C + (long long)blockIdx.y * M * N;
  // the stages: A's at base, Bt's after them, each a whole number of 1024-byte periods
  const tk_saddr base = tk_align1024(tk_shared_address(tk_smem));
  const int cr = tid >> 3, cj = tid & 7;
  const tk_saddr sa = base + cr * 128 + ((cj ^ (cr & 7)) << 4);
  const tk_saddr sb = sa + TK_STAGES * TK_A_STAGE;
  const unsigned a_off = (unsigned)(row0 + cr) * K + 4 * cj, a_rs = {rows_a_step}u * K;
  const unsigned b_off = (unsigned)(col0 + cr) * K + 4 * cj, b_rs = a_rs;
  unsigned a_rows = 0, b_rows = 0;
#pragma unroll
  for (int i = 0; i < {c.a_chunks}; ++i) a_rows |= (unsigned)(row0 + cr + i * {rows_a_step} < M) << i;
#pragma unroll
  for (int i = 0; i < {c.b_chunks}; ++i) b_rows |= (unsigned)(col0 + cr + i * {rows_a_step} < N) << i;
  float acc[{c.bn // 2}];
#pragma unroll
  for (int i = 0; i < {c.bn // 2}; ++i) acc[i] = 0.f;
  const int steps = (K + 31) / 32;
#pragma unroll
  for (int s = 0; s < TK_STAGES - 1 - TK_DEPTH; ++s) {{
    TK_WG_FILL(s, s)
  }}
  for (int step = 0; step < steps; ++step) {{
    tk_cp_wait<TK_STAGES - 2 - TK_DEPTH>();
    tk_fence_async();
    // every thread's copies of this step are visible to the tensor cores, and every
    // warpgroup's wgmma of step - 1 - depth (reading the stage filled below) is done
    __syncthreads();
    {{
      const int f = step + TK_STAGES - 1 - TK_DEPTH;
      TK_WG_FILL(f, f % TK_STAGES)
    }}
    const int st = step % TK_STAGES;
    const tk_saddr a_st = base + st * TK_A_STAGE + wg * {64 * 128};
    const tk_saddr b_st = base + TK_STAGES * TK_A_STAGE + st * TK_B_STAGE;
#pragma unroll
    for (int i = 0; i < {c.bn // 2}; ++i) tk_reg_fence(acc[i]);
    tk_wg_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) tk_wgmma(acc, tk_desc(a_st + 32 * kk), tk_desc(b_st + 32 * kk));
    tk_wg_commit();
    tk_wg_wait<TK_DEPTH>();
  }}
  tk_wg_wait<0>();
#pragma unroll
  for (int i = 0; i < {c.bn // 2}; ++i) tk_reg_fence(acc[i]);
  // accumulator i: row 16 warp + lane / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (lane % 4)
  // + i % 2 of the warpgroup's 64 x {c.bn}; i, i + 1 (i even) a float2
  const int r_lane = row0 + wg * 64 + warp * 16 + (lane >> 2), c_lane = col0 + 2 * (lane & 3);
#pragma unroll
  for (int i = 0; i < {c.bn // 2}; i += 2) {{
    const int r = r_lane + 8 * ((i >> 1) & 1), col = c_lane + 8 * (i >> 2);
    if (r < M && col < N)
      *reinterpret_cast<float2*>(Cg + (long long)r * N + col) = make_float2(acc[i], acc[i + 1]);
  }}
}}
"""


def usable(m, k, n, cfg=None):
    """Whether an (m, k) @ (k, n) product may take tk_gemm_tf32_wgmma (schedule ``cfg``):
    16-byte copies of rows of K floats (K % 4 == 0), float2 stores (N % 2 == 0), 32-bit
    offsets, and the prep pass's grid (32-row tiles in y: at most 65535 of them)."""
    c = cfg or WGMMA_CONFIG
    return (k % 4 == 0 and n % 2 == 0 and (m + c.bm) * k < 2 ** 31
            and (n + c.bn) * k < 2 ** 31 and max(m, k, n) <= 65535 * PREP_TILE)


def fold_transpose(x, trans):
    """(x, trans) for op(x), where op transposes the last two axes if trans; an x whose
    last two axes are those of a C-contiguous array swapped (a transposed view) comes back
    as that array with trans flipped: the same op(x), read in place."""
    if x.ndim >= 2 and not x.flags.c_contiguous:
        t = x.swapaxes(-1, -2)
        if t.flags.c_contiguous:
            return t, not trans
    return x, trans


def supported():
    """Whether the current CUDA device runs sm_90a code: compute capability 9.0 (H100,
    H200); elsewhere matmul takes the mma.sync kernels."""
    import cupy

    return _capability(cupy.cuda.runtime.getDevice()) == "90"


@functools.lru_cache(maxsize=None)
def _capability(device_id):
    import cupy

    return str(cupy.cuda.Device(device_id).compute_capability)


def compile_cubin(src, name="k.cu"):
    """``src`` compiled by NVRTC for sm_90a, as a cubin (CuPy's own compile names the
    plain sm_90 target, which has no wgmma)."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        prog = nvrtc.createProgram(src, name, (), ())
        try:
            nvrtc.compileProgram(prog, [f"--gpu-architecture={ARCH}", "--std=c++14"])
        except nvrtc.NVRTCError as e:
            raise RuntimeError(f"matmul_tf32: NVRTC for {ARCH}: {e}\n"
                               + nvrtc.getProgramLog(prog)[-3000:]) from None
        return nvrtc.getCUBIN(prog)
    except ImportError:
        from cuda.bindings import nvrtc
        err, prog = nvrtc.nvrtcCreateProgram(src.encode(), name.encode(), 0, [], [])
        (err,) = nvrtc.nvrtcCompileProgram(prog, 2, [f"--gpu-architecture={ARCH}".encode(),
                                                     b"--std=c++14"])
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            _, size = nvrtc.nvrtcGetProgramLogSize(prog)
            log = bytearray(size)
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise RuntimeError(f"matmul_tf32: NVRTC for {ARCH}: " + bytes(log).decode()[-3000:])
        _, size = nvrtc.nvrtcGetCUBINSize(prog)
        cubin = bytearray(size)
        nvrtc.nvrtcGetCUBIN(prog, cubin)
        return bytes(cubin)


def _function(src, name, smem_bytes=0):
    """Kernel ``name`` of ``src`` (sm_90a cubin), loaded on the current device."""
    import cupy

    return _load(src, name, smem_bytes, cupy.cuda.runtime.getDevice())


@functools.lru_cache(maxsize=None)
def _load(src, name, smem_bytes, device_id):
    from cupy.cuda import driver, function

    module = function.Module()
    module.load(compile_cubin(src))
    fn = module.get_function(name)  # (a Function keeps its module loaded)
    if smem_bytes:  # past the 48 KiB a launch gets unasked
        driver.funcSetAttribute(fn.ptr, driver.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                smem_bytes)
    return fn


def _prep(x, batch, transpose, rnd):
    """A contiguous float32 x of ``batch`` (rows, cols) matrices (2-D where batch is 1) ->
    round(x), each matrix transposed (cols, rows) or not: a fresh array (16-byte aligned)."""
    import cupy

    rows, cols = x.shape[-2:]
    out = cupy.empty(x.shape[:-2] + ((cols, rows) if transpose else (rows, cols)), np.float32)
    if x.size:
        fn = _function(PREP_SOURCE, "tk_tf32_prep")
        tail = (np.int32(rows), np.int32(cols), np.int32(transpose), np.int32(rnd))
        grid = (math.ceil(cols / PREP_TILE), math.ceil(rows / PREP_TILE))
        if batch <= 65535:  # (the arrays themselves: a CuPy slice costs microseconds)
            fn(grid + (batch,), (PREP_TILE, 8), (x, out) + tail)
        else:
            for b0 in range(0, batch, 65535):
                b1 = min(batch, b0 + 65535)
                fn(grid + (b1 - b0,), (PREP_TILE, 8), (x[b0:b1], out[b0:b1]) + tail)
    return out


def matmul(a, b, trans_a=False, trans_b=False, config=None, group=8):
    """op(a) @ op(b) for float32 CuPy arrays (2-D or equal-batch 3-D) on sm_90's wgmma,
    schedule ``config`` (WGMMA_CONFIG by default), blocks walking ``group`` tile rows;
    where ``usable`` refuses the shape or the device is not sm_90 (``supported``),
    kernels.cuda_tf32's mma.sync kernels. A 2-D product comes back as the array that owns
    its memory (kernels.cuda.matmul's contract: autograd copies a view it is handed)."""
    from ._common import check_matmul

    m, k, n = check_matmul(a, b, trans_a, trans_b)
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise TypeError(f"matmul_tf32: float32 operands expected, got {a.dtype} and {b.dtype}")
    cfg = (config or WGMMA_CONFIG).check()
    if not (isinstance(group, (int, np.integer)) and group >= 1):
        raise ValueError(f"matmul_tf32: group must be a positive int, got {group!r}")
    # x @ w.T hands over w.T, a view: read as w with trans_b, it needs no copy, and where
    # the operands are rounded anyway no transpose either (the prep pass's copy is its own)
    a, trans_a = fold_transpose(a, trans_a)
    b, trans_b = fold_transpose(b, trans_b)
    if not (usable(m, k, n, cfg) and supported()):
        from . import cuda_tf32
        return cuda_tf32.matmul(a, b, trans_a, trans_b, config=cuda_tf32.PIPE_CONFIG,
                                group=group)
    import cupy
    batch = a.shape[0] if a.ndim == 3 else 1
    # (the kernels take pointers: 2-D operands go as they are, no batch axis added)
    C = cupy.empty(a.shape[:-2] + (m, n), dtype=np.float32)
    if not C.size:
        return C
    A = a if a.flags.c_contiguous else cupy.ascontiguousarray(a)
    B = b if b.flags.c_contiguous else cupy.ascontiguousarray(b)
    if trans_a or cfg.round or A.data.ptr % 16:
        A = _prep(A, batch, trans_a, cfg.round)    # -> (m, k) matrices, K-major
    Bt = B                                         # (n, k) matrices where trans_b
    if not trans_b or cfg.round or B.data.ptr % 16:
        Bt = _prep(B, batch, not trans_b, cfg.round)
    fn = _function(source(cfg), "tk_gemm_tf32_wgmma", cfg.smem_bytes)
    tiles_n = math.ceil(n / cfg.bn)
    tiles = math.ceil(m / cfg.bm) * tiles_n
    tail = (np.int32(m), np.int32(n), np.int32(k), np.int32(tiles_n), np.int32(group))
    if batch <= 65535:
        fn((tiles, batch), (cfg.threads,), (A, Bt, C) + tail, shared_mem=cfg.smem_bytes)
    else:  # (a grid has at most 65535 blocks in y)
        for b0 in range(0, batch, 65535):
            b1 = min(batch, b0 + 65535)
            fn((tiles, b1 - b0), (cfg.threads,), (A[b0:b1], Bt[b0:b1], C[b0:b1]) + tail,
               shared_mem=cfg.smem_bytes)
    return C


def probe(cfg=None, limit=4):
    """On the GPU: whether the tensor cores read the operands and lay out the product where
    this kernel's layouts (swizzle, descriptors, accumulator fragment) say, with one-hot
    operands whose products name their source -> lines describing up to ``limit``
    misplaced elements per probe (empty: every element where it belongs). One block's
    tile (bm x bn, K = 32, one step), small integers (exact in TF32):

    * rows: A[r, kk] = r + 1, B[kk, :] = 1, so that C[r, c] names A's row;
    * columns: A[:, kk] = 1, B[kk, c] = c + 1, so that C[r, c] names B's column;
    * K: A[r, k] = k + 1 (every row), B[kk, :] = 1, so that C names A's k paired with B's kk;
    each for kk in 0, 9 (second 16-byte chunk of the second k-step of 8) and 31."""
    import cupy

    c = cfg or WGMMA_CONFIG
    m, n, k = c.bm, c.bn, BK
    lines = []
    for kk in (0, 9, 31):
        ones_row = np.zeros((k, n), np.float32)
        ones_row[kk] = 1
        cases = []
        a = np.zeros((m, k), np.float32)
        a[:, kk] = np.arange(1, m + 1)
        cases.append(("A row", a, ones_row, np.arange(m)[:, None] + np.zeros((1, n))))
        a = np.zeros((m, k), np.float32)
        a[:, kk] = 1
        b = np.zeros((k, n), np.float32)
        b[kk] = np.arange(1, n + 1)
        cases.append(("B column", a, b, np.zeros((m, 1)) + np.arange(n)[None, :]))
        a = np.tile(np.arange(1, k + 1, dtype=np.float32), (m, 1))
        cases.append(("A k", a, ones_row, np.full((m, n), kk)))
        for what, a, b, want in cases:
            got = np.asarray(cupy.asnumpy(matmul(cupy.asarray(a), cupy.asarray(b), config=c)))
            wrong = np.argwhere(got != want + 1)
            for r, col in wrong[:limit]:
                lines.append(f"k={kk}: C[{r}, {col}] = {got[r, col]:g}: {what} "
                             f"{got[r, col] - 1:g}, expected {want[r, col]:g}")
            if len(wrong) > limit:
                lines.append(f"k={kk}: {what}: {len(wrong)} elements misplaced in all")
    return lines
