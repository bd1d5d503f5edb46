"""A TF32 tensor-core GEMM (CuPy RawKernel, ``mma.sync.aligned.m16n8k8`` TF32 -> FP32).

Used by ``kernels.cuda.matmul`` for float32 on a real GPU **only when the user allows
TF32** -- ``tinygrad_k.backends.cuda.matmul.allow_tf32 = True`` (default False, as
``torch.backends.cuda.matmul.allow_tf32``): TF32 keeps 10 mantissa bits of each operand
(relative error ~1e-3 per product), FP32 accumulation.

Schedule: a block of 4 warps computes a 64 x 64 tile of C, K in steps of 16:
  * A (64 x 16) and B (16 x 64) tiles are staged in shared memory with float4 (128-bit)
    loads where the row length allows (K % 4 == 0 for A, N % 4 == 0 for B), zero-filled
    at the edges; rows are padded (A by 4, B by 8 floats) so the fragment reads below hit
    32 different banks;
  * warp (wm, wn) of the 2 x 2 warp grid owns a 32 x 32 sub-tile = 2 x 4 mma tiles of
    16 x 8, i.e. 8 accumulator fragments of 4 floats per lane;
  * per k-step of 8, each lane reads its A and B fragments from shared memory, rounds
    them to TF32 (``cvt.rna.tf32.f32``) and issues 8 ``mma.sync``.

The fragment layout (which lane holds which element) is data here -- ``A_FRAG``,
``B_FRAG``, ``C_FRAG``, expressions in g = lane / 4 and t = lane % 4 -- pasted into the
CUDA source and evaluated by ``emulate``, a NumPy model of the kernel that runs the MMA
with the PTX ISA's own fragment definition (``isa_*``, written independently, from the
"Matrix Fragments for mma.m16n8k8" tables). The tests check, without a GPU, that the two
agree and that the emulated kernel computes A @ B; and they compile the source for sm_90
with NVRTC.
"""
from __future__ import annotations

import functools
import math
import sys

import numpy as np

__all__ = ["SOURCE", "matmul", "tf32_allowed", "emulate", "round_tf32", "BM", "BN", "BK"]

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
  const bool vecA = (K & 3) == 0, vecB = (N & 3) == 0;
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
        if (vecA && gc + 3 < K) x = *reinterpret_cast<const float4*>(Ag + gr * K + gc);
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
        if (vecB && gc + 3 < N) x = *reinterpret_cast<const float4*>(Bg + (long long)gr * N + gc);
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


def tf32_allowed():
    """``tinygrad_k.backends.cuda.matmul.allow_tf32`` when that module is loaded, else False.
    (Read through sys.modules: the kernels package does not import the framework.)"""
    mod = sys.modules.get("tinygrad_k.backends.cuda")
    return bool(mod is not None and getattr(mod.matmul, "allow_tf32", False))


@functools.lru_cache(maxsize=None)
def _kernel():
    import cupy

    return cupy.RawKernel(SOURCE, "tk_gemm_tf32", options=("--std=c++14",))


def matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) for float32 CuPy arrays (2-D or equal-batch 3-D) on TF32 tensor cores."""
    import cupy

    from ._common import check_matmul, gemm_slices

    m, k, n = check_matmul(a, b, trans_a, trans_b)
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise TypeError(f"matmul_tf32: float32 operands expected, got {a.dtype} and {b.dtype}")
    A = a[None] if a.ndim == 2 else a
    B = b[None] if b.ndim == 2 else b
    A = cupy.ascontiguousarray(A.swapaxes(-1, -2) if trans_a else A)
    B = cupy.ascontiguousarray(B.swapaxes(-1, -2) if trans_b else B)
    C = cupy.empty((A.shape[0], m, n), dtype=np.float32)
    slices = gemm_slices(A.shape[0], m, BM)
    if len(slices) == 1:
        grid = (math.ceil(n / BN), math.ceil(m / BM), A.shape[0])
        if grid[0]:  # (n == 0: nothing to write, and CUDA refuses an empty grid)
            _kernel()(grid, (THREADS,), (A, B, C, np.int32(m), np.int32(n), np.int32(k)))
    else:  # past CUDA's 65535 blocks in y or z: slices, as in kernels.cuda.matmul
        for b0, b1, r0, r1 in slices:
            C[b0:b1, r0:r1] = matmul(A[b0:b1, r0:r1], B[b0:b1])
    return C[0] if a.ndim == 2 else C


# -- a NumPy model of the kernel, for checking its layout math without a GPU ------------------------
def round_tf32(x):
    """cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest, ties away from zero."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


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
