"""A TF32 tensor-core GEMM (CuPy RawKernel, ``mma.sync.aligned.m16n8k8`` TF32 -> FP32).

Used by ``kernels.cuda.matmul`` for float32 on a real GPU **only when the user allows
TF32** -- ``tinygrad_k.backends.cuda.matmul.allow_tf32 = True`` (default False, as
``torch.backends.cuda.matmul.allow_tf32``): TF32 keeps 10 mantissa bits of each operand
(relative error ~1e-3 per product), FP32 accumulation.

Two kernels, one fragment layout:

``tk_gemm_tf32_pipe`` (``PIPE_SOURCE``, ``pipe_source(PipeConfig)``), taken where K and N
are multiples of 4 and the operands 16-byte aligned (every float4 of a row is either inside
the matrix or outside). At its default schedule (``PIPE_CONFIG``):
  * a block of 4 warps computes a 128 x 128 tile of C, K in steps of 32; the A (128 x 32)
    and B (32 x 128) tiles of the next two steps are in flight while one is computed
    (3 stages in 105 KiB of dynamic shared memory, ``cp.async`` 16-byte copies straight
    from global to shared memory, zero-filled past the matrix's edges, one
    ``__syncthreads`` a step); two blocks an SM;
  * warp (wm, wn) of the 2 x 2 warp grid owns a 64 x 64 sub-tile = 4 x 8 mma tiles of
    16 x 8: 128 accumulators a lane; per k-step of 8 it reads 16 A and 16 B fragment
    registers for 32 ``mma.sync`` -- 4 KiB of shared memory for 32 x 1024 FMAs (a 64 x 32
    sub-tile reads 1.5 times as much per FMA);
  * a lane's fragment reads are one base pointer plus constants (LDS with immediate
    offsets), rows padded (A by 4, B by 8 floats) so that they hit 32 different banks;
    the copies' sources are 32-bit offsets, unsigned (no sign extension); the rounding
    is ``cvt.rn.tf32.f32``, one F2FP instruction on sm_90 (``cvt.rna`` is emulated with
    two): on sm_90, about 4.4 SASS instructions a ``mma.sync`` in the main loop, where the
    first draft of this kernel issued 7.3 and ran at 37% of cuBLAS TF32;
  * blocks walk the tiles of C down groups of ``PIPE_GROUP`` tile rows, so that the blocks
    resident at once share their A and B panels in L2.
On an H100 at 4096^3 (benchmarks/results/2026-11-27-NVIDIA-H100-session9-tf32): 0.85 ms,
161 TFLOP/s, 45% of cuBLAS TF32, 3.8x the first version below. ``PIPE_CANDIDATES`` are
other schedules, timed beside it by benchmarks.gpu_parts's ladder part: larger tiles, 8
warps, and ``prefetch`` (the next k-step's fragments read during this one's products,
across the step's barrier, in two register sets). The eleventh session timed them all:
0.79-0.95 ms, the best with ``ldmatrix`` and prefetch (47%), none near wgmma's 0.51-0.53.

``tk_gemm_tf32`` (``SOURCE``), any shapes (its loads are scalar where a row is not
4-aligned or the operand not 16-byte aligned), the first version (12% of cuBLAS TF32 on
an H100, as fast as the FP32 GEMM):
  * a block of 4 warps computes a 64 x 64 tile of C, K in steps of 16: A (64 x 16) and
    B (16 x 64) tiles staged in shared memory through registers, no overlap of loads and
    math; warps own 32 x 32 sub-tiles = 2 x 4 mma tiles;
  * it rounds with ``cvt.rna.tf32.f32`` (ties away from zero).

Both read each lane's fragments from shared memory, round them to TF32 and issue
``mma.sync``. kernels/cuda_wgmma.py computes the same product on sm_90's warpgroup
instruction (``wgmma.mma_async``, its operands read by the tensor cores straight from
shared memory) and is the default there (DEFAULT_CONFIG: 70-73% of cuBLAS TF32 at
4096^3 on an H100); ``matmul`` runs it for a ``WgmmaConfig`` as ``config``.

The fragment layout (which lane holds which element) is data here -- ``A_FRAG``,
``B_FRAG``, ``C_FRAG``, expressions in g = lane / 4 and t = lane % 4 -- pasted into the
CUDA source and evaluated by ``emulate``, a NumPy model of the kernel that runs the MMA
with the PTX ISA's own fragment definition (``isa_*``, written independently, from the
"Matrix Fragments for mma.m16n8k8" tables). The tests check, without a GPU, that the two
agree and that the emulated kernel computes A @ B; and they compile the source for sm_90
with NVRTC. The pipelined kernel's source also runs as host C++
(tests/test_kernels_tf32_src.py): its primitives (``tk_cp16``, ``tk_cp_commit``,
``tk_cp_wait``, ``tk_mma_tf32``, ``to_tf32``) are replaced there by C++ models, the MMA
from the ISA's tables, the copies landing either at once or only at their wait.
"""
from __future__ import annotations

import collections
import functools
import math
import sys

import numpy as np

from . import cuda_wgmma

__all__ = ["SOURCE", "PIPE_SOURCE", "matmul", "tf32_allowed", "emulate", "round_tf32", "BM",
           "BN", "BK", "PIPE_BM", "PIPE_BN", "PIPE_BK", "PIPE_STAGES", "PIPE_SMEM_BYTES",
           "pipelined"]

BM, BN, BK = 64, 64, 16
WARPS_M, WARPS_N = 2, 2
MI, NI = 2, 4            # mma tiles per warp along M (16 rows) and N (8 columns)
PAD_A, PAD_B = 4, 8
THREADS = 32 * WARPS_M * WARPS_N

# fragment element i of a lane -> (row, col) inside the mma tile; g = lane / 4, t = lane % 4
A_FRAG = [("g", "t"), ("g + 8", "t"), ("g", "t + 4"), ("g + 8", "t + 4")]          # A 16 x 8 (m, k)
B_FRAG = [("t", "g"), ("t + 4", "g")]                                                # B 8 x 8 (k, n)
C_FRAG = [("g", "2 * t"), ("g", "2 * t + 1"), ("g + 8", "2 * t"), ("g + 8", "2 * t + 1")]  # C 16 x 8


def _source():
    a_loads = "\n".join(
        f"        a[mi][{i}] = to_tf32(As[wm * {MI * 16} + mi * 16 + {r}][kk + {c}]);"
        for i, (r, c) in enumerate(A_FRAG))
    b_loads = "\n".join(
        f"        b[ni][{i}] = to_tf32(Bs[kk + {r}][wn * {NI * 8} + ni * 8 + {c}]);"
        for i, (r, c) in enumerate(B_FRAG))
    stores = "\n".join(
        f"      {{ long long r = row0 + wm * {MI * 16} + mi * 16 + {r}, "
        f"c = col0 + wn * {NI * 8} + ni * 8 + {c};\n"
        f"        if (r < M && c < N) Cg[r * N + c] = acc[mi][ni][{i}]; }}"
        for i, (r, c) in enumerate(C_FRAG))
    return f"""
__device__ __forceinline__ unsigned to_tf32(float x) {{
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}}

extern "C" __global__ void __launch_bounds__({THREADS})
tk_gemm_tf32(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
             int M, int N, int K) {{
  __shared__ __align__(16) float As[{BM}][{BK + PAD_A}];
  __shared__ __align__(16) float Bs[{BK}][{BN + PAD_B}];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wm = warp / {WARPS_N}, wn = warp % {WARPS_N};
  const long long row0 = (long long)blockIdx.y * {BM}, col0 = (long long)blockIdx.x * {BN};
  const float* Ag = A + (long long)blockIdx.z * M * K;
  const float* Bg = B + (long long)blockIdx.z * K * N;
  float* Cg = C + (long long)blockIdx.z * M * N;
  // float4 loads where rows are 4-aligned and the operand 16-byte aligned (a view of a
  // buffer may start anywhere)
  const bool vecA = (K & 3) == 0 && (reinterpret_cast<unsigned long long>(Ag) & 15) == 0;
  const bool vecB = (N & 3) == 0 && (reinterpret_cast<unsigned long long>(Bg) & 15) == 0;
  float acc[{MI}][{NI}][4];
  for (int mi = 0; mi < {MI}; ++mi)
    for (int ni = 0; ni < {NI}; ++ni)
      for (int i = 0; i < 4; ++i) acc[mi][ni][i] = 0.f;
  for (int k0 = 0; k0 < K; k0 += {BK}) {{
    // A tile: {BM} x {BK} = {BM * BK // 4} float4, {BM * BK // 4 // THREADS} per thread
    for (int v = tid; v < {BM * BK // 4}; v += {THREADS}) {{
      const int r = v / {BK // 4}, c = (v % {BK // 4}) * 4;
      const long long gr = row0 + r; const int gc = k0 + c;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      if (gr < M) {{
        if (vecA && gc + 3 < K)
          x = __ldg(reinterpret_cast<const float4*>(Ag + gr * K + gc));
        else {{
          if (gc < K) x.x = Ag[gr * K + gc];
          if (gc + 1 < K) x.y = Ag[gr * K + gc + 1];
          if (gc + 2 < K) x.z = Ag[gr * K + gc + 2];
          if (gc + 3 < K) x.w = Ag[gr * K + gc + 3];
        }}
      }}
      As[r][c] = x.x; As[r][c + 1] = x.y; As[r][c + 2] = x.z; As[r][c + 3] = x.w;
    }}
    // B tile: {BK} x {BN} = {BK * BN // 4} float4
    for (int v = tid; v < {BK * BN // 4}; v += {THREADS}) {{
      const int r = v / {BN // 4}, c = (v % {BN // 4}) * 4;
      const int gr = k0 + r; const long long gc = col0 + c;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      if (gr < K) {{
        if (vecB && gc + 3 < N)
          x = __ldg(reinterpret_cast<const float4*>(Bg + (long long)gr * N + gc));
        else {{
          if (gc < N) x.x = Bg[(long long)gr * N + gc];
          if (gc + 1 < N) x.y = Bg[(long long)gr * N + gc + 1];
          if (gc + 2 < N) x.z = Bg[(long long)gr * N + gc + 2];
          if (gc + 3 < N) x.w = Bg[(long long)gr * N + gc + 3];
        }}
      }}
      *reinterpret_cast<float4*>(&Bs[r][c]) = x;
    }}
    __syncthreads();
    for (int kk = 0; kk < {BK}; kk += 8) {{
      unsigned a[{MI}][4], b[{NI}][2];
      for (int mi = 0; mi < {MI}; ++mi) {{
{a_loads}
      }}
      for (int ni = 0; ni < {NI}; ++ni) {{
{b_loads}
      }}
      for (int mi = 0; mi < {MI}; ++mi)
        for (int ni = 0; ni < {NI}; ++ni)
          asm volatile(
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
            "{{%0, %1, %2, %3}}, {{%4, %5, %6, %7}}, {{%8, %9}}, {{%0, %1, %2, %3}};"
            : "+f"(acc[mi][ni][0]), "+f"(acc[mi][ni][1]), "+f"(acc[mi][ni][2]), "+f"(acc[mi][ni][3])
            : "r"(a[mi][0]), "r"(a[mi][1]), "r"(a[mi][2]), "r"(a[mi][3]), "r"(b[ni][0]), "r"(b[ni][1]));
    }}
    __syncthreads();
  }}
  for (int mi = 0; mi < {MI}; ++mi)
    for (int ni = 0; ni < {NI}; ++ni) {{
{stores}
    }}
}}
"""


SOURCE = _source()

# -- the pipelined kernel ----------------------------------------------------------------------
class PipeConfig(collections.namedtuple("PipeConfig",
                                        "bm bn bk stages warps_m warps_n prefetch ldmatrix",
                                        defaults=(True, False))):
    """A schedule of tk_gemm_tf32_pipe: a block computes a bm x bn tile of C, K in steps of
    bk, ``stages`` steps' tiles in shared memory, warps_m x warps_n warps each owning a
    (bm / warps_m) x (bn / warps_n) sub-tile of mi x ni mma tiles. ``prefetch``: each
    k-step of 8 reads the fragments of the next one (across the step's barrier) while its
    own mma.sync run, so that the tensor cores never wait on a barrier or shared memory;
    False: a step's barrier, then its copies, then its fragments and products.
    ``ldmatrix``: A's fragments of an mma tile in one ``ldmatrix.x4`` (its four 8 x 4
    float matrices read as 8 x 8 b16 ones: lane l gets row l / 4, word l % 4 of each,
    which is A_FRAG's layout) instead of four 32-bit loads. (B's fragments would need B
    transposed in shared memory, which a 16-byte copy of its rows cannot give.)"""

    @property
    def threads(self):
        return 32 * self.warps_m * self.warps_n

    @property
    def mi(self):
        return self.bm // self.warps_m // 16

    @property
    def ni(self):
        return self.bn // self.warps_n // 8

    @property
    def lda(self):   # (padded: fragment reads of a warp hit 32 banks)
        return self.bk + PAD_A

    @property
    def ldb(self):
        return self.bn + PAD_B

    @property
    def smem_floats(self):
        return self.stages * (self.bm * self.lda + self.bk * self.ldb)

    @property
    def smem_bytes(self):
        return 4 * self.smem_floats

    @property
    def blocks_per_sm(self):
        """2 where two blocks' stages fit the 228 KiB of an sm_90 SM (1 KiB each reserved)."""
        return 2 if 2 * (self.smem_bytes + 1024) <= 228 * 1024 else 1

    def check(self):
        if not (self.bm % (16 * self.warps_m) == 0 and self.bn % (8 * self.warps_n) == 0
                and self.bk % 8 == 0 and self.stages >= 2
                and self.threads % (self.bk // 4) == 0 and self.threads % (self.bn // 4) == 0
                and self.bm * self.bk // 4 % self.threads == 0
                and self.bm * self.bk // 4 // self.threads <= 32  # (a bit each in a_rows)
                and self.bk * self.bn // 4 % self.threads == 0
                and self.smem_bytes + 1024 <= 228 * 1024):
            raise ValueError(f"matmul_tf32: schedule {self} does not tile")
        return self


# the mma.sync default: 0.85 ms at 4096^3 on an H100, 45% of cuBLAS TF32 (0.38 ms), where the
# first version took 3.21 (benchmarks/results/2026-11-27-NVIDIA-H100-session9-tf32)
PIPE_CONFIG = PipeConfig(128, 128, 32, 3, 2, 2, prefetch=False).check()
# the schedules benchmarks.gpu_parts's ladder part times beside the default (H100, 4096^3,
# the same run: 128x256 0.86 ms, 256x128 0.90, 8 warps of 64 x 32 0.94, all without the
# fragment prefetch and ldmatrix; eleventh session, all of them: benchmarks/results/
# 2026-11-27-NVIDIA-H100-session11*/ladder.md, ldmatrix + prefetch 0.79-0.81 the best)
PIPE_CANDIDATES = (PIPE_CONFIG,
                   PipeConfig(128, 128, 32, 3, 2, 2),
                   PipeConfig(128, 128, 32, 3, 2, 2, prefetch=False, ldmatrix=True),
                   PipeConfig(128, 128, 32, 3, 2, 2, prefetch=True, ldmatrix=True),
                   PipeConfig(128, 128, 16, 4, 2, 2),          # shorter steps, 4 stages
                   PipeConfig(128, 256, 32, 3, 2, 4),          # 8 warps (1 block an SM)
                   PipeConfig(128, 256, 32, 3, 2, 4, False),
                   PipeConfig(256, 128, 32, 3, 4, 2),
                   # 8 warps of 64 x 32, 2 blocks an SM (at 128 registers: no prefetch)
                   PipeConfig(128, 128, 32, 3, 2, 4, False))
PIPE_BM, PIPE_BN, PIPE_BK, PIPE_STAGES = PIPE_CONFIG[:4]
PIPE_THREADS, PIPE_SMEM_FLOATS, PIPE_SMEM_BYTES = (PIPE_CONFIG.threads, PIPE_CONFIG.smem_floats,
                                                   PIPE_CONFIG.smem_bytes)
PIPE_GROUP = 8                   # tile rows a group of consecutive blocks walks down
# the schedule matmul runs unless told: sm_90's wgmma at kernels.cuda_wgmma.WGMMA_CONFIG
# (elsewhere, and for shapes it cannot take, the mma.sync kernel at PIPE_CONFIG). H100,
# 4096^3, prep pass included: 0.53 ms, 70% of cuBLAS TF32 (0.37), mma.sync 0.88 in the same
# run (benchmarks/results/2026-11-27-NVIDIA-H100-session11/ladder.md)
DEFAULT_CONFIG = cuda_wgmma.WGMMA_CONFIG

# the primitives, as PTX; tests/test_kernels_tf32_src.py defines TK_HOST and its own.
# Shared memory is addressed two ways: fragments through generic pointers (LDS with
# immediate offsets), copies through 32-bit shared-window addresses (tk_saddr).
PIPE_PRIMITIVES = r"""
#ifndef TK_HOST
// round to TF32, nearest even (one F2FP on sm_90; cvt.rna is emulated, 2 instructions)
__device__ __forceinline__ unsigned to_tf32(float x) {
  unsigned r;
  asm("cvt.rn.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}
typedef unsigned tk_saddr;
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
// wait until at most N of this thread's committed groups are still in flight
template <int N> __device__ __forceinline__ void tk_cp_wait() {
  asm volatile("cp.async.wait_group %0;" :: "n"(N));
}
__device__ __forceinline__ void tk_mma_tf32(float* d, const unsigned* a, const unsigned* b) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// four 8 x 8 b16 matrices (here 8 x 4 floats): lane l passes the address of row l % 8 of
// matrix l / 8 and gets word l % 4 of row l / 4 of matrix j in d[j]
__device__ __forceinline__ void tk_ldsm_x4(unsigned* d, tk_saddr row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(row));
}
#define TK_SMEM extern __shared__ __align__(16) float tk_smem[]
#endif
"""


def _split(expr, var):
    """'g + 8' -> 8 for var 'g': the fragment expressions are a lane variable plus a
    constant (checked), so that a lane's reads are one base pointer plus immediates."""
    def at(lane):
        return eval(expr, {}, {"g": lane // 4, "t": lane % 4})  # noqa: S307 (our constants)

    const = at(0)
    assert all(at(lane) == (lane // 4 if var == "g" else lane % 4) + const
               for lane in range(32)), (expr, var)
    return const


# tk_tf32_load of step `next` into stage ns (a macro: it reads the kernel's locals)
_LOOP_MACROS = r"""
#define TK_TF32_FILL(next, ns)                                                              \
  if ((next) < steps)                                                                       \
    tk_tf32_load(sa + (ns) * TK_A_STAGE_BYTES, sb + (ns) * TK_B_STAGE_BYTES, Ag, Bg,        \
                 a_off + (next) * TK_BK, b_off + (next) * TK_BK * N, a_rs, b_rs, a_rows,    \
                 (next) * TK_BK + ac < K, b_col, K - (next) * TK_BK - br);                  \
  tk_cp_commit();
"""


def _frags(c, a_loads, b_loads, A, B, indent):
    """Code reading the fragments of k-step kk of the stage at af, bf into arrays A, B."""
    pad = " " * indent
    body = (f"#pragma unroll\n{pad}for (int ni = 0; ni < {c.ni}; ++ni) {{\n"
            + b_loads.replace("B[", f"{B}[") + f"\n{pad}}}\n"
            f"#pragma unroll\n{pad}for (int mi = 0; mi < {c.mi}; ++mi) {{\n"
            + a_loads.replace("A[", f"{A}[") + f"\n{pad}}}\n")
    return body


def _mmas(c, A, B):
    return (f"#pragma unroll\n      for (int mi = 0; mi < {c.mi}; ++mi)\n#pragma unroll\n"
            f"        for (int ni = 0; ni < {c.ni}; ++ni) "
            f"tk_mma_tf32(acc[mi][ni], {A}[mi], {B}[ni]);\n")


def _plain_loop(c, a_loads, b_loads):
    """A step: wait and barrier, the copies of step + stages - 1, then the step's
    fragments and products k-step by k-step."""
    return f"""  int cs = 0, ns = {c.stages - 1};  // the stages computed and filled in this step
  for (int step = 0; step < steps; ++step) {{
    tk_cp_wait<{c.stages - 2}>();
    // every thread's copies of this step have landed, and every warp is done with the
    // stage the copies below overwrite (the one computed in the step before)
    __syncthreads();
    TK_TF32_FILL(step + {c.stages - 1}, ns)
    const float* af = af0 + cs * {c.bm * c.lda};
    const float* bf = bf0 + cs * {c.bk * c.ldb};
    const tk_saddr am = am0 + cs * {4 * c.bm * c.lda};
#pragma unroll
    for (int kk = 0; kk < {c.bk}; kk += 8) {{
      unsigned fa[{c.mi}][4], fb[{c.ni}][2];
{_frags(c, a_loads, b_loads, "fa", "fb", 6)}{_mmas(c, "fa", "fb")}    }}
    cs = cs == {c.stages - 1} ? 0 : cs + 1;
    ns = ns == {c.stages - 1} ? 0 : ns + 1;
  }}
"""


def _prefetching_loop(c, a_loads, b_loads):
    """Fragments in two register sets: k-step kk's products run while kk + 1's fragments
    are read; before the last k-step of a step, the wait and barrier for the next step
    (whose first fragments are then read during that last k-step's products); after the
    first k-step's reads, the copies of step + stages - 1 into the stage the step before
    computed (read by every warp before that barrier)."""
    ks = c.bk // 8
    return f"""  unsigned fa[2][{c.mi}][4], fb[2][{c.ni}][2];
  int cs = 0, ns = {c.stages - 1};  // the stages computed and filled in this step
  tk_cp_wait<{c.stages - 2}>();
  __syncthreads();
  {{
    const float* af = af0;
    const float* bf = bf0;
    const tk_saddr am = am0;
    const int kk = 0;
{_frags(c, a_loads, b_loads, "fa[0]", "fb[0]", 4)}  }}
  for (int step = 0; step < steps; ++step) {{
#pragma unroll
    for (int k8 = 0; k8 < {ks}; ++k8) {{
      if (k8 == {ks - 1}) {{
        // the next step's copies have landed; every warp has read this stage's fragments
        tk_cp_wait<{c.stages - 2}>();
        __syncthreads();
        cs = cs == {c.stages - 1} ? 0 : cs + 1;
      }}
      {{  // the next k-step's fragments (past the last step: unused)
        const float* af = af0 + cs * {c.bm * c.lda};
        const float* bf = bf0 + cs * {c.bk * c.ldb};
        const tk_saddr am = am0 + cs * {4 * c.bm * c.lda};
        const int kk = (k8 + 1) % {ks} * 8;
{_frags(c, a_loads, b_loads, "fa[(k8 + 1) % 2]", "fb[(k8 + 1) % 2]", 8)}      }}
      if (k8 == 0) {{
        TK_TF32_FILL(step + {c.stages - 1}, ns)
        ns = ns == {c.stages - 1} ? 0 : ns + 1;
      }}
{_mmas(c, "fa[k8 % 2]", "fb[k8 % 2]")}    }}
  }}
"""


def pipe_source(cfg=None):
    """The CUDA source of tk_gemm_tf32_pipe for a PipeConfig (PIPE_CONFIG by default)."""
    c = (cfg or PIPE_CONFIG).check()
    # A fragment i: A[g + ra][t + ca]; B fragment i: B[t + rb][g + cb]
    a_off = [_split(r, "g") * c.lda + _split(col, "t") for r, col in A_FRAG]
    b_off = [_split(r, "t") * c.ldb + _split(col, "g") for r, col in B_FRAG]
    # (A, B: the fragment arrays; af, bf: the stage's; kk: the k-step's first column / row)
    a_loads = "\n".join(f"        A[mi][{i}] = to_tf32(af[mi * {16 * c.lda} + kk + {o}]);"
                        for i, o in enumerate(a_off))
    # ldmatrix.x4: matrix j is A_FRAG[j]'s 8 x 4 block (rows + rj, columns + cj)
    ldsm = [(_split(r, "g"), _split(col, "t")) for r, col in A_FRAG]
    assert ldsm == [(8 * (j & 1), 4 * (j >> 1)) for j in range(4)], ldsm
    if c.ldmatrix:
        a_loads = (f"        {{ unsigned r[4];\n"
                   f"          tk_ldsm_x4(r, am + (mi * {16 * c.lda} + kk) * 4);\n"
                   + "".join(f"          A[mi][{j}] = to_tf32(__uint_as_float(r[{j}]));\n"
                             for j in range(4)) + "        }")
    b_loads = "\n".join(f"        B[ni][{i}] = to_tf32(bf[kk * {c.ldb} + ni * 8 + {o}]);"
                        for i, o in enumerate(b_off))
    # C_FRAG's elements 0, 1 and 2, 3 are column pairs (2t, 2t + 1): one float2 each
    (r0, c0), (r1, c1), (r2, c2), (r3, c3) = C_FRAG
    assert (r0, r2) == (r1, r3) and c1 == f"{c0} + 1" and c3 == f"{c2} + 1" and c0 == c2
    stores = "\n".join(
        f"      {{ const int r = row0 + wm * {c.mi * 16} + mi * 16 + {r}, "
        f"c = col0 + wn * {c.ni * 8} + ni * 8 + {col};\n"
        f"        if (r < M && c < N)\n"
        f"          *reinterpret_cast<float2*>(Cg + (long long)r * N + c) =\n"
        f"              make_float2(acc[mi][ni][{i}], acc[mi][ni][{i + 1}]); }}"
        for i, (r, col) in ((0, C_FRAG[0]), (2, C_FRAG[2])))
    a_chunks, b_chunks = c.bm * c.bk // 4 // c.threads, c.bk * c.bn // 4 // c.threads
    loop = (_prefetching_loop if c.prefetch else _plain_loop)(c, a_loads, b_loads)
    a_step, b_step = c.threads // (c.bk // 4), c.threads // (c.bn // 4)
    a_stage, b_stage = c.bm * c.lda, c.bk * c.ldb
    return PIPE_PRIMITIVES + _LOOP_MACROS + f"""
// one stage, float4 by float4: this thread copies A's rows ar + {a_step} i (i < {a_chunks})
// at column ac of the step, from A0 + a_off + i a_rs (a_off: the first, at the step's
// column), and B's rows br + {b_step} i (i < {b_chunks}) at column bc, from
// B0 + b_off + i b_rs; into sa, sb (shared-window addresses of its first float4s).
// a_rows bit i: A's row inside the matrix; a_in: the column; b_col: B's column; b_left:
// B's rows left, from the first. A float4 outside the matrix is zero-filled; its source
// is the matrix's first float (a valid address, not read). (Unsigned 32-bit offsets: a
// select and one wide multiply-add a copy, no sign extension.)
__device__ __forceinline__ void tk_tf32_load(tk_saddr sa, tk_saddr sb, const float* A0,
                                             const float* B0, int a_off, int b_off, int a_rs,
                                             int b_rs, unsigned a_rows, bool a_in, bool b_col,
                                             int b_left) {{
#pragma unroll
  for (int i = 0; i < {a_chunks}; ++i) {{
    const bool in = a_in && ((a_rows >> i) & 1u);
    tk_cp16(sa + i * {4 * a_step * c.lda}, A0 + (in ? unsigned(a_off + i * a_rs) : 0u),
            in ? 16 : 0);
  }}
#pragma unroll
  for (int i = 0; i < {b_chunks}; ++i) {{
    const bool in = b_col && i * {b_step} < b_left;
    tk_cp16(sb + i * {4 * b_step * c.ldb}, B0 + (in ? unsigned(b_off + i * b_rs) : 0u),
            in ? 16 : 0);
  }}
}}

#define TK_BK {c.bk}
#define TK_A_STAGE_BYTES {4 * a_stage}
#define TK_B_STAGE_BYTES {4 * b_stage}

// C = A @ B for row-major A (M x K), B (K x N), C (M x N), batch blockIdx.y; needs
// K % 4 == N % 4 == 0, 16-byte aligned A and B, (M + {c.bm}) * K and (K + {c.bk}) * N
// below 2**31. blockIdx.x walks the tiles of C down groups of `group` tile rows (tiles_n
// tiles a row). Schedule {tuple(c)} (bm, bn, bk, stages, warps_m, warps_n).
extern "C" __global__ void __launch_bounds__({c.threads}, {c.blocks_per_sm})
tk_gemm_tf32_pipe(const float* __restrict__ A, const float* __restrict__ B,
                  float* __restrict__ C, int M, int N, int K, int tiles_n, int group) {{
  TK_SMEM;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wm = warp / {c.warps_n}, wn = warp % {c.warps_n};
  const int tiles_m = (M + {c.bm - 1}) / {c.bm};
  const int per_group = group * tiles_n, first = (int)blockIdx.x / per_group * group;
  const int rows_here = min(tiles_m - first, group), in_group = (int)blockIdx.x % per_group;
  const int row0 = (first + in_group % rows_here) * {c.bm};
  const int col0 = in_group / rows_here * {c.bn};
  const float* Ag = A + (long long)blockIdx.y * M * K;
  const float* Bg = B + (long long)blockIdx.y * K * N;
  float* Cg = C + (long long)blockIdx.y * M * N;
  // this thread's copies (tk_tf32_load)
  const int ar = tid / {c.bk // 4}, ac = tid % {c.bk // 4} * 4;
  const int br = tid / {c.bn // 4}, bc = tid % {c.bn // 4} * 4;
  const int a_off = (row0 + ar) * K + ac, b_off = br * N + col0 + bc;
  const int a_rs = {a_step} * K, b_rs = {b_step} * N;
  const tk_saddr sa = tk_shared_address(tk_smem) + 4 * (ar * {c.lda} + ac);
  const tk_saddr sb = tk_shared_address(tk_smem) + 4 * ({c.stages * a_stage} + br * {c.ldb} + bc);
  const bool b_col = col0 + bc < N;
  unsigned a_rows = 0;
#pragma unroll
  for (int i = 0; i < {a_chunks}; ++i) a_rows |= (unsigned)(row0 + ar + i * {a_step} < M) << i;
  // this lane's fragments: A[g + .][t + .] of its warp's rows, B[t + .][g + .] of its columns
  const float* const af0 = tk_smem + (wm * {c.mi * 16} + g) * {c.lda} + t;
  // (ldmatrix: this lane's row of its matrix, lane / 8, of each mma tile's A)
  const tk_saddr am0 = tk_shared_address(tk_smem)
      + 4 * ((wm * {c.mi * 16} + (lane & 7) + 8 * ((lane >> 3) & 1)) * {c.lda} + 4 * (lane >> 4));
  const float* const bf0 = tk_smem + {c.stages * a_stage} + t * {c.ldb} + wn * {c.ni * 8} + g;
  float acc[{c.mi}][{c.ni}][4];
#pragma unroll
  for (int mi = 0; mi < {c.mi}; ++mi)
#pragma unroll
    for (int ni = 0; ni < {c.ni}; ++ni)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mi][ni][i] = 0.f;
  const int steps = (K + {c.bk - 1}) / {c.bk};
  // the first {c.stages - 1} steps in flight; a group committed per step, empty or not, so
  // that "all but the newest {c.stages - 2}" is always the step about to be computed
#pragma unroll
  for (int s = 0; s < {c.stages - 1}; ++s) {{
    TK_TF32_FILL(s, s)
  }}
{loop}#pragma unroll
  for (int mi = 0; mi < {c.mi}; ++mi)
#pragma unroll
    for (int ni = 0; ni < {c.ni}; ++ni) {{
{stores}
    }}
}}
"""


PIPE_SOURCE = pipe_source()


def tf32_allowed():
    """``tinygrad_k.backends.cuda.matmul.allow_tf32`` when that module is loaded, else False.
    (Read through sys.modules: the kernels package does not import the framework.)"""
    mod = sys.modules.get("tinygrad_k.backends.cuda")
    return bool(mod is not None and getattr(mod.matmul, "allow_tf32", False))


@functools.lru_cache(maxsize=None)
def _kernel():
    import cupy

    return cupy.RawKernel(SOURCE, "tk_gemm_tf32", options=("--std=c++14",))


@functools.lru_cache(maxsize=None)
def _pipe_kernel(cfg=PIPE_CONFIG):
    import cupy

    k = cupy.RawKernel(pipe_source(cfg), "tk_gemm_tf32_pipe", options=("--std=c++14",))
    k.max_dynamic_shared_size_bytes = cfg.smem_bytes  # (past the 48 KiB a launch gets unasked)
    return k


def pipelined(m, k, n, cfg=None):
    """Whether an (m, k) @ (k, n) product may take tk_gemm_tf32_pipe (schedule ``cfg``,
    PIPE_CONFIG by default): its 16-byte copies need K and N multiples of 4 (and 16-byte
    aligned operands, which matmul checks), its 32-bit offsets (M + bm) * K and
    (K + bk) * N below 2**31."""
    c = cfg or PIPE_CONFIG
    return (k % 4 == 0 and n % 4 == 0 and (m + c.bm) * k < 2 ** 31
            and (k + c.bk) * n < 2 ** 31)


def matmul(a, b, trans_a=False, trans_b=False, pipeline=True, config=None, group=PIPE_GROUP):
    """op(a) @ op(b) for float32 CuPy arrays (2-D or equal-batch 3-D) on TF32 tensor cores:
    (M, K) @ (K, N) -> (M, N), batch by batch, on the schedule ``config`` (DEFAULT_CONFIG
    unless told), its blocks walking ``group`` tile rows at a time:
    - a ``kernels.cuda_wgmma.WgmmaConfig`` (the default): sm_90's wgmma kernel, which hands
      devices and shapes it cannot take to the mma.sync kernel at PIPE_CONFIG;
    - a ``PipeConfig``: the pipelined mma.sync kernel where ``pipelined`` allows and the
      operands are 16-byte aligned, else the general one;
    - ``pipeline=False``: the general kernel, whatever the default."""
    from ._common import check_matmul, gemm_slices

    config = config or (DEFAULT_CONFIG if pipeline else PIPE_CONFIG)
    if isinstance(config, cuda_wgmma.WgmmaConfig):  # (sm_90's wgmma)
        return cuda_wgmma.matmul(a, b, trans_a, trans_b, config=config, group=group)
    m, k, n = check_matmul(a, b, trans_a, trans_b)
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise TypeError(f"matmul_tf32: float32 operands expected, got {a.dtype} and {b.dtype}")
    cfg = config.check()
    if not (isinstance(group, (int, np.integer)) and group >= 1):
        raise ValueError(f"matmul_tf32: group must be a positive int, got {group!r}")
    import cupy
    A = a[None] if a.ndim == 2 else a
    B = b[None] if b.ndim == 2 else b
    A = cupy.ascontiguousarray(A.swapaxes(-1, -2) if trans_a else A)
    B = cupy.ascontiguousarray(B.swapaxes(-1, -2) if trans_b else B)
    C = cupy.empty((A.shape[0], m, n), dtype=np.float32)
    if not C.size:
        return C[0] if a.ndim == 2 else C  # (CUDA refuses an empty grid)
    if pipeline and pipelined(m, k, n, cfg):
        kernel = _pipe_kernel(cfg)
        if A.data.ptr % 16 == 0 and B.data.ptr % 16 == 0:  # (a view may start anywhere)
            tiles_n = math.ceil(n / cfg.bn)
            for b0, b1, _, _ in gemm_slices(A.shape[0], 1, 1):  # (batches of 65535)
                kernel((math.ceil(m / cfg.bm) * tiles_n, b1 - b0), (cfg.threads,),
                       (A[b0:b1], B[b0:b1], C[b0:b1], np.int32(m), np.int32(n), np.int32(k),
                        np.int32(tiles_n), np.int32(group)),
                       shared_mem=cfg.smem_bytes)
            return C[0] if a.ndim == 2 else C
    slices = gemm_slices(A.shape[0], m, BM)
    if len(slices) == 1:
        grid = (math.ceil(n / BN), math.ceil(m / BM), A.shape[0])
        _kernel()(grid, (THREADS,), (A, B, C, np.int32(m), np.int32(n), np.int32(k)))
    else:  # past CUDA's 65535 blocks in y or z: slices, as in kernels.cuda.matmul
        for b0, b1, r0, r1 in slices:
            C[b0:b1, r0:r1] = matmul(A[b0:b1, r0:r1], B[b0:b1], pipeline=pipeline,
                                     config=cfg)
    return C[0] if a.ndim == 2 else C


# -- a NumPy model of the kernel, for checking its layout math without a GPU ------------------------
def round_tf32(x, even=False):
    """TF32 of float32 values: 10 mantissa bits, to nearest; ties away from zero
    (cvt.rna, the general kernel) or, with ``even``, to even (cvt.rn, the pipelined one)."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    half = np.uint32(0xFFF) + ((bits >> np.uint32(13)) & np.uint32(1)) if even \
        else np.uint32(0x1000)
    return ((bits + half) & np.uint32(0xFFFFE000)).view(np.float32)


def isa_a(lane, i):
    """PTX ISA, mma.m16n8k8 .tf32, fragment A (16 x 8, row): (row, col) of a_i."""
    return lane // 4 + 8 * (i % 2), lane % 4 + 4 * (i // 2)


def isa_b(lane, i):
    """fragment B (8 x 8, col): (row k, col n) of b_i."""
    return lane % 4 + 4 * i, lane // 4


def isa_c(lane, i):
    """accumulators C/D (16 x 8, f32): (row, col) of c_i."""
    return lane // 4 + 8 * (i // 2), 2 * (lane % 4) + i % 2


def _mma(a_frags, b_frags, c_frags):
    """One warp's mma.sync as the ISA defines it: a_frags (32, 4), b_frags (32, 2),
    c_frags (32, 4) per lane -> d_frags (32, 4)."""
    A, B, C = np.zeros((16, 8)), np.zeros((8, 8)), np.zeros((16, 8))
    for lane in range(32):
        for i in range(4):
            A[isa_a(lane, i)] = a_frags[lane, i]
            C[isa_c(lane, i)] = c_frags[lane, i]
        for i in range(2):
            B[isa_b(lane, i)] = b_frags[lane, i]
    D = A @ B + C
    return np.array([[D[isa_c(lane, i)] for i in range(4)] for lane in range(32)])


def _frag_index(expr, lane):
    return eval(expr, {}, {"g": lane // 4, "t": lane % 4})  # noqa: S307 (our own constants)


def emulate(a, b):
    """The kernel's computation in NumPy, block by block and lane by lane, with the
    fragment index expressions of the CUDA source and the ISA's MMA: a (M, K), b (K, N)
    float32 -> (M, N) float32. Slow; for small shapes."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    M, K = a.shape
    N = b.shape[1]
    C = np.full((M, N), np.nan, dtype=np.float32)
    lanes = range(32)
    for by in range(math.ceil(M / BM)):
        for bx in range(math.ceil(N / BN)):
            row0, col0 = by * BM, bx * BN
            acc = np.zeros((WARPS_M * WARPS_N, MI, NI, 32, 4))
            for k0 in range(0, K, BK):
                As = np.zeros((BM, BK + PAD_A), np.float32)
                Bs = np.zeros((BK, BN + PAD_B), np.float32)
                blk = a[row0:row0 + BM, k0:k0 + BK]
                As[:blk.shape[0], :blk.shape[1]] = blk
                blk = b[k0:k0 + BK, col0:col0 + BN]
                Bs[:blk.shape[0], :blk.shape[1]] = blk
                for warp in range(WARPS_M * WARPS_N):
                    wm, wn = warp // WARPS_N, warp % WARPS_N
                    for kk in range(0, BK, 8):
                        for mi in range(MI):
                            af = np.array([[As[wm * MI * 16 + mi * 16 + _frag_index(r, ln),
                                               kk + _frag_index(c, ln)] for r, c in A_FRAG]
                                           for ln in lanes])
                            for ni in range(NI):
                                bf = np.array([[Bs[kk + _frag_index(r, ln),
                                                   wn * NI * 8 + ni * 8 + _frag_index(c, ln)]
                                                for r, c in B_FRAG] for ln in lanes])
                                acc[warp, mi, ni] = _mma(round_tf32(af), round_tf32(bf),
                                                         acc[warp, mi, ni])
            for warp in range(WARPS_M * WARPS_N):
                wm, wn = warp // WARPS_N, warp % WARPS_N
                for mi in range(MI):
                    for ni in range(NI):
                        for ln in lanes:
                            for i, (r, c) in enumerate(C_FRAG):
                                rr = row0 + wm * MI * 16 + mi * 16 + _frag_index(r, ln)
                                cc = col0 + wn * NI * 8 + ni * 8 + _frag_index(c, ln)
                                if rr < M and cc < N:
                                    C[rr, cc] = acc[warp, mi, ni, ln, i]
    return C
