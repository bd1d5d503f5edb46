"""Rung 6 of the GEMM ladder: rung 5's schedule written in CUDA C (a CuPy RawModule).

Why a sixth rung. Rung 5 (kernels/cuda_gemm.py, the production ``matmul`` on large
products) ran at 0.70x cuBLAS FP32 on an H100 at 4096^3 (3.96 vs 2.75 ms;
benchmarks/results/2026-11-26-NVIDIA-H100-session3). Its SASS shows why Numba cannot
take it further: the K-loop's inner part is already 64 FFMA + 4 LDS.128 per rank-1
step, but every K-tile also issues 8 scalar global loads (LDG.E, 32 bits each: Numba has
no 128-bit vector load), 8 scalar shared stores, and about 60 instructions of 64-bit
index arithmetic and bounds checks -- 1.43 instructions per FMA in all. CUDA C expresses
the missing pieces directly: ``float4`` global loads and shared stores, 32-bit tile
indices with pointer increments, and ``__launch_bounds__(256, 2)`` so that ptxas keeps
the kernel at <= 128 registers (two blocks, 16 warps, per SM).

Schedule (C[g] = op(A[g]) @ op(B[g]), float32, FP32 FMA accumulation):
  * a block of 256 threads computes a 128 x 128 tile of C, K in tiles of 8;
  * per K-tile each thread fetches one 4-vector of A and one of B along the operand's
    contiguous axis (``float4`` when the row length is a multiple of 4 and the base
    16-byte aligned, four bounds-checked scalars otherwise; zeros outside), and stores
    them into shared memory k-major, As[k][m] and Bs[k][n]. A 4-vector along K goes to
    four k-rows (transposing stores); rows are padded to 132 floats so that those 32
    stores of a warp hit 32 different banks;
  * two shared stages: the next K-tile is fetched into registers before the current one
    is multiplied, stored into the other stage after it: one barrier per K-tile;
  * warp tiling: warp (wm, wn) of a 4 x 2 grid owns 32 x 64 of C; lane (lm, ln) of a
    4 x 8 grid owns rows tr + {0..3, 16..19} and columns tc + {0..3, 32..35}, so each
    rank-1 step reads its 8 + 8 operands as four ``float4`` (LDS.128), conflict-free,
    and each row of C is written as 128-byte coalesced ``float4`` stores.

Operands are C-contiguous as stored: A (batch, M, K), or (batch, K, M) when trans_a;
B (batch, K, N), or (batch, N, K) when trans_b; transposes are read in place.

Without a GPU the tests compile ``SOURCE`` for sm_90 with NVRTC (and read its registers
and spills with ptxas) and run the same source as host C++ -- a block's 256 threads as
std::threads with a barrier -- against NumPy (tests/test_kernels_sgemm_src.py).
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["SOURCE", "KERNELS", "BM", "BN", "BK", "THREADS", "LD", "matmul", "vec_ok"]

BM, BN, BK = 128, 128, 8
THREADS = 256
LD = BM + 4  # a padded k-row of a shared tile, in floats (16-byte aligned: 528 bytes)

SOURCE = r"""
#define TK_BM 128
#define TK_BN 128
#define TK_BK 8
#define TK_LD 132

// p[0:4], the 4-vector at column c of a row of Cn floats, zeros outside the matrix
// (row_ok false, or columns past Cn); c is a multiple of 4. With vec (Cn % 4 == 0 and a
// 16-byte aligned base) an in-range 4-vector is whole and aligned: one 128-bit load.
__device__ __forceinline__ float4 tk_load4(const float* __restrict__ p, bool row_ok, int c,
                                           int Cn, int vec) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (row_ok && c < Cn) {
        if (vec) {
            v = *reinterpret_cast<const float4*>(p);
        } else {
            v.x = p[0];
            if (c + 1 < Cn) v.y = p[1];
            if (c + 2 < Cn) v.z = p[2];
            if (c + 3 < Cn) v.w = p[3];
        }
    }
    return v;
}

// TA: A stored (K, M); TB: B stored (N, K). grid (ceil(N/128), ceil(M/128), batch).
template <bool TA, bool TB>
__device__ __forceinline__ void tk_sgemm(const float* __restrict__ A,
                                         const float* __restrict__ B,
                                         float* __restrict__ C, int M, int N, int K,
                                         int vec_a, int vec_b, int vec_c) {
    __shared__ __align__(16) float As[2][TK_BK][TK_LD];
    __shared__ __align__(16) float Bs[2][TK_BK][TK_LD];
    const int tid = threadIdx.x;
    const size_t g = blockIdx.z;
    A += g * (size_t)M * (size_t)K;
    B += g * (size_t)K * (size_t)N;
    C += g * (size_t)M * (size_t)N;
    const int row0 = blockIdx.y * TK_BM, col0 = blockIdx.x * TK_BN;

    // this thread's 4-vector of each tile as stored: along K (tile row tid/2, k (tid%2)*4)
    // or along M / N (k-row tid/32, column (tid%32)*4). Its address moves by a fixed step
    // per K-tile; one of its two indices is fixed, so is that index's range check
    const int a_p = TA ? (tid >> 5) : (tid >> 1), a_q = TA ? (tid & 31) * 4 : (tid & 1) * 4;
    const int b_p = TB ? (tid >> 1) : (tid >> 5), b_q = TB ? (tid & 1) * 4 : (tid & 31) * 4;
    const float* pa = TA ? A + (size_t)a_p * M + row0 + a_q : A + (size_t)(row0 + a_p) * K + a_q;
    const float* pb = TB ? B + (size_t)(col0 + b_p) * K + b_q : B + (size_t)b_p * N + col0 + b_q;
    const size_t step_a = TA ? (size_t)TK_BK * M : TK_BK;
    const size_t step_b = TB ? TK_BK : (size_t)TK_BK * N;
    const bool a_row_ok = row0 + a_p < M, b_row_ok = col0 + b_p < N;  // (K along the row)

    // warp (wm, wn) = (w / 2, w % 2), lane (lm, ln) = (lane / 8, lane % 8)
    const int w = tid >> 5, lane = tid & 31;
    const int tr = (w >> 1) * 32 + (lane >> 3) * 4;
    const int tc = (w & 1) * 64 + (lane & 7) * 4;

    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

    float4 va, vb;
    const int ntiles = (K + TK_BK - 1) / TK_BK;
    for (int t = -1; t < ntiles; ++t) {
        // t = -1 only fills stage 0; then tile t is multiplied from stage t % 2 while
        // tile t + 1 travels from global memory into registers, then into the other stage
        const int cur = t & 1;
        const bool more = t + 1 < ntiles;
        if (more) {
            const int k0 = (t + 1) * TK_BK;
            va = TA ? tk_load4(pa, k0 + a_p < K, row0 + a_q, M, vec_a)
                    : tk_load4(pa, a_row_ok, k0 + a_q, K, vec_a);
            vb = TB ? tk_load4(pb, b_row_ok, k0 + b_q, K, vec_b)
                    : tk_load4(pb, k0 + b_p < K, col0 + b_q, N, vec_b);
            pa += step_a;
            pb += step_b;
        }
        if (t >= 0) {
#pragma unroll
            for (int kk = 0; kk < TK_BK; ++kk) {
                const float4 a0 = *reinterpret_cast<const float4*>(&As[cur][kk][tr]);
                const float4 a1 = *reinterpret_cast<const float4*>(&As[cur][kk][tr + 16]);
                const float4 b0 = *reinterpret_cast<const float4*>(&Bs[cur][kk][tc]);
                const float4 b1 = *reinterpret_cast<const float4*>(&Bs[cur][kk][tc + 32]);
                const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
                const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
                for (int i = 0; i < 8; ++i)
#pragma unroll
                    for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            }
        }
        if (more) {
            // the other stage was last read in step t - 1, before that step's barrier
            const int nxt = cur ^ 1;
            if (TA) {
                *reinterpret_cast<float4*>(&As[nxt][a_p][a_q]) = va;
            } else {
                As[nxt][a_q][a_p] = va.x; As[nxt][a_q + 1][a_p] = va.y;
                As[nxt][a_q + 2][a_p] = va.z; As[nxt][a_q + 3][a_p] = va.w;
            }
            if (TB) {
                Bs[nxt][b_q][b_p] = vb.x; Bs[nxt][b_q + 1][b_p] = vb.y;
                Bs[nxt][b_q + 2][b_p] = vb.z; Bs[nxt][b_q + 3][b_p] = vb.w;
            } else {
                *reinterpret_cast<float4*>(&Bs[nxt][b_p][b_q]) = vb;
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int r = row0 + tr + (i & 3) + (i >> 2) * 16;
        if (r >= M) continue;
        float* crow = C + (size_t)r * (size_t)N;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int c = col0 + tc + h * 32;
            const float4 v = make_float4(acc[i][4 * h], acc[i][4 * h + 1], acc[i][4 * h + 2],
                                         acc[i][4 * h + 3]);
            if (c >= N) continue;
            if (vec_c) {
                *reinterpret_cast<float4*>(crow + c) = v;
            } else {
                crow[c] = v.x;
                if (c + 1 < N) crow[c + 1] = v.y;
                if (c + 2 < N) crow[c + 2] = v.z;
                if (c + 3 < N) crow[c + 3] = v.w;
            }
        }
    }
}

#define TK_SGEMM_ENTRY(name, ta, tb)                                                     \
extern "C" __global__ void __launch_bounds__(256, 2)                                     \
name(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,    \
     int M, int N, int K, int vec_a, int vec_b, int vec_c) {                             \
    tk_sgemm<ta, tb>(A, B, C, M, N, K, vec_a, vec_b, vec_c);                             \
}
TK_SGEMM_ENTRY(tk_sgemm_nn, false, false)
TK_SGEMM_ENTRY(tk_sgemm_nt, false, true)
TK_SGEMM_ENTRY(tk_sgemm_tn, true, false)
TK_SGEMM_ENTRY(tk_sgemm_tt, true, true)
"""

# (trans_a, trans_b) -> the entry point in SOURCE
KERNELS = {(False, False): "tk_sgemm_nn", (False, True): "tk_sgemm_nt",
           (True, False): "tk_sgemm_tn", (True, True): "tk_sgemm_tt"}

# a tile's indices run up to a side + 127 in 32-bit ints
_SIDE_MAX = 2 ** 31 - 256


@functools.lru_cache(maxsize=None)
def _function(name):
    import cupy

    return cupy.RawModule(code=SOURCE, options=("--std=c++14",)).get_function(name)


def vec_ok(row_length, pointer):
    """Whether 4-vectors of a row-major matrix with this row length, starting at this
    address, can be read whole: rows of a multiple of 4 floats, a 16-byte aligned base."""
    return int(row_length % 4 == 0 and pointer % 16 == 0)


def matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) for float32 CuPy arrays, 2-D or equal-batch 3-D; a transposed
    operand is the array as stored (trans_a: a is (K, M)), read in place."""
    import cupy

    from ._common import check_matmul, gemm_slices

    m, k, n = check_matmul(a, b, trans_a, trans_b)
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise TypeError(f"matmul_vec4_cuda_c: float32 operands expected, got {a.dtype} and "
                        f"{b.dtype}")
    if max(m, n, k) > _SIDE_MAX:
        raise ValueError(f"matmul_vec4_cuda_c: sizes M={m}, N={n}, K={k}; its 32-bit tile "
                         f"indices allow at most {_SIDE_MAX} on each side")
    A = cupy.ascontiguousarray(a[None] if a.ndim == 2 else a)
    B = cupy.ascontiguousarray(b[None] if b.ndim == 2 else b)
    C = cupy.empty((A.shape[0], m, n), dtype=np.float32)
    slices = gemm_slices(A.shape[0], m, BM)
    if len(slices) > 1:  # past CUDA's 65535 blocks in y or z: slices, as kernels.cuda.matmul
        for b0, b1, r0, r1 in slices:
            Ab = A[b0:b1, :, r0:r1] if trans_a else A[b0:b1, r0:r1]
            C[b0:b1, r0:r1] = matmul(Ab, B[b0:b1], trans_a, trans_b)
        return C[0] if a.ndim == 2 else C
    grid = (math.ceil(n / BN), math.ceil(m / BM), A.shape[0])
    if grid[0] and grid[1] and grid[2]:  # (CUDA refuses an empty grid; K = 0 gives zeros)
        fn = _function(KERNELS[(bool(trans_a), bool(trans_b))])
        vec_a = vec_ok(m if trans_a else k, A.data.ptr)
        vec_b = vec_ok(k if trans_b else n, B.data.ptr)
        vec_c = vec_ok(n, C.data.ptr)
        fn(grid, (THREADS,), (A, B, C, np.int32(m), np.int32(n), np.int32(k),
                              np.int32(vec_a), np.int32(vec_b), np.int32(vec_c)))
    return C[0] if a.ndim == 2 else C
