"""The CUDA C GEMMs (CuPy RawModules): rung 6 of the GEMM ladder -- rung 5's schedule
written in CUDA C -- and the implicit-GEMM convolutions on the same schedule.

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

The schedule is one template, ``tk_gemm_core``, over an operand policy: ``TkMatmul`` (the
matmul), ``TkConv`` (the forward pass and input gradient of a convolution: B gathered from
the image, C written in NCHW order; see CONV_SOURCE) and ``TkConvW`` (its weight gradient).
The three convolution passes split K where the grid is small (partial products summed
after: ``summed``, CuPy's reduction here, kernels.cuda's own kernel when it calls). A
convolution GEMM of at most 64 rows runs on a 64 x 128 tile (4 x 8 results a thread), the
rest on 128 x 128. kernels.cuda runs the wide float32 products on the matmul, and the
convolutions of 64 rows or more on these (``set_wide_kernel`` / ``set_conv_kernel``);
measured on an H100 in benchmarks/results/2026-11-26-NVIDIA-H100-session4/.

Without a GPU the tests compile the sources for sm_90 with NVRTC (and read their registers
and spills with ptxas) and run the same source as host C++ -- a block's 256 threads as
std::threads with a barrier -- against NumPy (tests/test_kernels_sgemm_src.py).
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["SOURCE", "CORE_SOURCE", "MATMUL_SOURCE", "CONV_SOURCE", "CONV_WGRAD_SOURCE",
           "KERNELS", "BM", "BN", "BK", "THREADS", "LD", "matmul", "matmul_entry", "vec_ok",
           "conv_entry", "conv_wgrad_entry", "conv_bm", "conv_plan", "conv_weights", "conv_args",
           "wgrad_plan", "wgrad_aligned", "conv_fits", "sum_partials", "conv_function",
           "wgrad_function", "conv2d_forward",
           "conv2d_backward_input", "conv2d_backward_weight"]

BM, BN, BK = 128, 128, 8
THREADS = 256
LD = BM + 4  # a padded k-row of a shared tile, in floats (16-byte aligned: 528 bytes)

CORE_SOURCE = r"""
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

// p[0:4] = v, the 4-vector at column c of a row of Cn floats, the columns past Cn left
// alone; vec as for tk_load4.
__device__ __forceinline__ void tk_store4(float* __restrict__ p, int c, int Cn, int vec,
                                          float4 v) {
    if (vec) {
        *reinterpret_cast<float4*>(p) = v;
    } else {
        p[0] = v.x;
        if (c + 1 < Cn) p[1] = v.y;
        if (c + 2 < Cn) p[2] = v.z;
        if (c + 3 < Cn) p[3] = v.w;
    }
}

// A thread's 4-vector of a W x 8 operand tile (W = 128 or 64 rows of M or N, 8 of K): along
// K, it is tile row tid/2, k (tid%2)*4; along M or N, k-row tid/(W/4), column
// (tid%(W/4))*4. Threads from 2*W on have none (W = 64: half the block loads A).
template <bool ALONG_K, int W = 128> __device__ __forceinline__ int tk_tile_p(int tid) {
    return ALONG_K ? (tid >> 1) : tid / (W / 4);
}
template <bool ALONG_K, int W = 128> __device__ __forceinline__ int tk_tile_q(int tid) {
    return ALONG_K ? (tid & 1) * 4 : (tid % (W / 4)) * 4;
}

// The schedule, for one BM x 128 tile of C and an operand policy Op, which provides
//   Op::BM                        128 (8 x 8 results a thread) or 64 (4 x 8: layers of 64
//                                 channels fill the tile)
//   Op::A_ALONG_K, Op::B_ALONG_K  the axis of the thread's 4-vectors (see tk_tile_p/q)
//   float4 load_a(k0), load_b(k0) this thread's 4-vectors of the K-tile at k0 (zeros
//                                 outside), called for k0 = 0, 8, 16, ... in order
//   void store(r, c, float4 v)    C[r][c..c+3] of the tile (row r, 4 columns from c)
template <class Op>
__device__ __forceinline__ void tk_gemm_core(Op& op, const int K) {
    __shared__ __align__(16) float As[2][TK_BK][TK_LD];
    __shared__ __align__(16) float Bs[2][TK_BK][TK_LD];
    constexpr int BM = Op::BM, TM = BM / 16;  // rows of the tile, and a thread's
    const int tid = threadIdx.x;
    const int a_p = tk_tile_p<Op::A_ALONG_K, BM>(tid), a_q = tk_tile_q<Op::A_ALONG_K, BM>(tid);
    const int b_p = tk_tile_p<Op::B_ALONG_K>(tid), b_q = tk_tile_q<Op::B_ALONG_K>(tid);
    const bool a_active = tid < 2 * BM;

    // warp (wm, wn) = (w / 2, w % 2) owns BM/4 x 64, lane (lm, ln) = (lane / 8, lane % 8)
    // rows tr + {0..3} (and tr + {16..19} at BM = 128), columns tc + {0..3, 32..35}
    const int w = tid >> 5, lane = tid & 31;
    const int tr = (w >> 1) * (BM / 4) + (lane >> 3) * 4;
    const int tc = (w & 1) * 64 + (lane & 7) * 4;

    float acc[TM][8];
#pragma unroll
    for (int i = 0; i < TM; ++i)
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
            if (a_active) va = op.load_a((t + 1) * TK_BK);
            vb = op.load_b((t + 1) * TK_BK);
        }
        if (t >= 0) {
#pragma unroll
            for (int kk = 0; kk < TK_BK; ++kk) {
                const float4 a0 = *reinterpret_cast<const float4*>(&As[cur][kk][tr]);
                const float4 a1 = TM == 8
                    ? *reinterpret_cast<const float4*>(&As[cur][kk][tr + 16]) : a0;
                const float4 b0 = *reinterpret_cast<const float4*>(&Bs[cur][kk][tc]);
                const float4 b1 = *reinterpret_cast<const float4*>(&Bs[cur][kk][tc + 32]);
                const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
                const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
                for (int i = 0; i < TM; ++i)
#pragma unroll
                    for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            }
        }
        if (more) {
            // the other stage was last read in step t - 1, before that step's barrier
            const int nxt = cur ^ 1;
            if (!a_active) {
            } else if (Op::A_ALONG_K) {  // four k-rows (transposing stores, spread by the padding)
                As[nxt][a_q][a_p] = va.x; As[nxt][a_q + 1][a_p] = va.y;
                As[nxt][a_q + 2][a_p] = va.z; As[nxt][a_q + 3][a_p] = va.w;
            } else {
                *reinterpret_cast<float4*>(&As[nxt][a_p][a_q]) = va;
            }
            if (Op::B_ALONG_K) {
                Bs[nxt][b_q][b_p] = vb.x; Bs[nxt][b_q + 1][b_p] = vb.y;
                Bs[nxt][b_q + 2][b_p] = vb.z; Bs[nxt][b_q + 3][b_p] = vb.w;
            } else {
                *reinterpret_cast<float4*>(&Bs[nxt][b_p][b_q]) = vb;
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h)
            op.store(tr + (i & 3) + (i >> 2) * 16, tc + h * 32,
                     make_float4(acc[i][4 * h], acc[i][4 * h + 1], acc[i][4 * h + 2],
                                 acc[i][4 * h + 3]));
}

"""

MATMUL_SOURCE = r"""
// C[g] = op(A[g]) @ op(B[g]); TA: A stored (K, M), TB: B stored (N, K); C (M, N).
// grid (ceil(N/128), ceil(M/128), batch). EXACT: M and N multiples of 128, K of 8, every
// row 4-vector aligned (the host checks): no bounds test and no scalar path, each load
// and store one 128-bit access (1.18 instead of 1.28 SASS instructions per FMA in the
// K-loop on sm_90, the NN entry)
template <bool TA, bool TB, bool EXACT>
struct TkMatmul {
    static constexpr int BM = TK_BM;
    static constexpr bool A_ALONG_K = !TA, B_ALONG_K = TB;
    const float* pa;
    const float* pb;
    float* C;
    size_t step_a, step_b;
    int M, N, K, row0, col0, a_p, a_q, b_p, b_q, vec_a, vec_b, vec_c;
    bool a_row_ok, b_row_ok;  // the fixed index of this thread's A / B vector in range

    __device__ __forceinline__ TkMatmul(const float* A, const float* B, float* C_, int M_,
                                        int N_, int K_, int va, int vb, int vc)
        : M(M_), N(N_), K(K_), vec_a(va), vec_b(vb), vec_c(vc) {
        const int tid = threadIdx.x;
        const size_t g = blockIdx.z;
        A += g * (size_t)M * (size_t)K;
        B += g * (size_t)K * (size_t)N;
        C = C_ + g * (size_t)M * (size_t)N;
        row0 = blockIdx.y * TK_BM;
        col0 = blockIdx.x * TK_BN;
        a_p = tk_tile_p<A_ALONG_K>(tid); a_q = tk_tile_q<A_ALONG_K>(tid);
        b_p = tk_tile_p<B_ALONG_K>(tid); b_q = tk_tile_q<B_ALONG_K>(tid);
        // each 4-vector's address moves by a fixed step per K-tile
        pa = TA ? A + (size_t)a_p * M + row0 + a_q : A + (size_t)(row0 + a_p) * K + a_q;
        pb = TB ? B + (size_t)(col0 + b_p) * K + b_q : B + (size_t)b_p * N + col0 + b_q;
        step_a = TA ? (size_t)TK_BK * M : TK_BK;
        step_b = TB ? TK_BK : (size_t)TK_BK * N;
        a_row_ok = row0 + a_p < M;
        b_row_ok = col0 + b_p < N;
    }
    __device__ __forceinline__ float4 load_a(int k0) {
        const float4 v = EXACT ? *reinterpret_cast<const float4*>(pa)
                       : TA ? tk_load4(pa, k0 + a_p < K, row0 + a_q, M, vec_a)
                            : tk_load4(pa, a_row_ok, k0 + a_q, K, vec_a);
        pa += step_a;
        return v;
    }
    __device__ __forceinline__ float4 load_b(int k0) {
        const float4 v = EXACT ? *reinterpret_cast<const float4*>(pb)
                       : TB ? tk_load4(pb, b_row_ok, k0 + b_q, K, vec_b)
                            : tk_load4(pb, k0 + b_p < K, col0 + b_q, N, vec_b);
        pb += step_b;
        return v;
    }
    __device__ __forceinline__ void store(int r, int c, float4 v) {
        r += row0;
        c += col0;
        if (EXACT) *reinterpret_cast<float4*>(C + (size_t)r * (size_t)N + c) = v;
        else if (r < M && c < N) tk_store4(C + (size_t)r * (size_t)N + c, c, N, vec_c, v);
    }
};

#define TK_SGEMM_ENTRY(name, ta, tb, exact)                                              \
extern "C" __global__ void __launch_bounds__(256, 2)                                     \
name(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,    \
     int M, int N, int K, int vec_a, int vec_b, int vec_c) {                             \
    TkMatmul<ta, tb, exact> op(A, B, C, M, N, K, vec_a, vec_b, vec_c);                   \
    tk_gemm_core(op, K);                                                                 \
}
TK_SGEMM_ENTRY(tk_sgemm_nn, false, false, false)
TK_SGEMM_ENTRY(tk_sgemm_nt, false, true, false)
TK_SGEMM_ENTRY(tk_sgemm_tn, true, false, false)
TK_SGEMM_ENTRY(tk_sgemm_tt, true, true, false)
TK_SGEMM_ENTRY(tk_sgemm_nn_exact, false, false, true)
TK_SGEMM_ENTRY(tk_sgemm_nt_exact, false, true, true)
TK_SGEMM_ENTRY(tk_sgemm_tn_exact, true, false, true)
TK_SGEMM_ENTRY(tk_sgemm_tt_exact, true, true, true)
"""

SOURCE = CORE_SOURCE + MATMUL_SOURCE  # the matmul module (rung 6)

# -- implicit-GEMM convolutions on the same schedule --------------------------------------
# Per group g (grid z), as kernels.cuda's Numba convolutions:
#   forward:        y[n, g*OG + o, (i, j)]  = sum_(c,p,q) W[g, o, (c,p,q)] * x-gather
#   input gradient: dx[n, g*CG + c, (h, w)] = sum_(o,p,q) Wt[g, c, (o,p,q)] * dy-gather
# A (the weights, (G, M, K) contiguous) is read like matmul's A; B gathers from the source
# S (x, or dy) for the output pixel of each column: forward S[n, g*CG + c, i*SH - PH + p*DH,
# j*SW - PW + q*DW]; input gradient S[n, g*OG + o, (h + PH - p*DH) / SH, (w + PW - q*DW) / SW]
# where the divisions are exact; zero outside S. A thread's B vector is 4 columns (output
# pixels) at one k-row (tap): each column's image offset and first row/column are worked
# out once per block, before the K-loop, into shared memory (row and column packed in 16
# bits each); per K-tile the tap (c, p, q) is split by compile-time constants. C is written
# straight into the NCHW output, 4 pixels a float4 store where rows of L pixels allow.
# Split-K (grid z = g * split + s, as the weight gradient's): where the grid has too few
# blocks to fill the GPU (ResNet's 512@4: 32 blocks of 128 x 128 for 132 SMs), block z
# multiplies only taps [s*kchunk, s*kchunk + kchunk) and writes its partial product plain,
# P[z] (M x N), for the host to add up; split 1 writes Y as above.
CONV_SOURCE = r"""
template <int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, bool DGRAD, int BM_>
struct TkConv {
    static constexpr int BM = BM_;
    static constexpr bool A_ALONG_K = true, B_ALONG_K = false;
    const float* pa;   // the weights, this thread's row, moving along K
    const float* S;    // the source, at this group's first channel
    float* Y;          // the output (NB, OC, L) at this group's first channel, or P[z]
    const int* cols;   // [2][128] in shared memory: each column's image offset in S and
                       // first (row << 16 | column & 0xffff) of S it reads
    // K is the end of this block's taps (kbeg + its chunk); a_k and b_k are the first
    // tap of this thread's A and B vectors (kbeg + the offset in the K-tile)
    int M, N, K, Kc, row0, col0, a_k, b_k, b_q, vec_a, vec_c, SA, SB, SAB, L, OCL;
    bool a_row_ok, plain;

    __device__ __forceinline__ TkConv(const float* A, const float* S_, float* Y_, int M_,
                                      int N_, int K_, int kchunk, int split, int va, int vc,
                                      int SC, int SA_, int SB_, int GA, int GB, int OC)
        : M(M_), N(N_), vec_a(va), vec_c(vc), SA(SA_), SB(SB_) {
        // the 128 columns of the tile are the same at every k-row: split once per block,
        // into shared memory (held in registers they pushed the kernel past 128 and spilled)
        __shared__ __align__(16) int col_info[2][TK_BN];
        const int tid = threadIdx.x;
        const int z = blockIdx.z, g = z / split, kbeg = (z - g * split) * kchunk;
        Kc = K_ - kbeg < kchunk ? K_ - kbeg : kchunk;  // this block's taps
        K = kbeg + Kc;
        plain = split > 1;
        SAB = SA * SB;
        L = GA * GB;
        OCL = OC * L;
        S = S_ + (size_t)g * (K_ / (KH * KW)) * SAB;  // K_ = source channels a group x taps
        Y = plain ? Y_ + (size_t)z * M * N : Y_ + (size_t)g * M * L;
        row0 = blockIdx.y * BM;
        col0 = blockIdx.x * TK_BN;
        const int a_p = tk_tile_p<true, BM>(tid);
        a_k = kbeg + tk_tile_q<true, BM>(tid);
        b_k = kbeg + tk_tile_p<false>(tid);
        b_q = tk_tile_q<false>(tid);
        pa = A + (size_t)g * M * K_ + (size_t)(row0 + a_p) * K_ + a_k;
        a_row_ok = row0 + a_p < M;
        if (tid < TK_BN) {
            const int col = col0 + tid;
            int b0 = 0, r0 = -20000, c0 = 0;  // a column past N: every tap reads zero
            if (col < N) {
                const int n = col / L, rem = col - n * L;
                const int a = rem / GB, b = rem - a * GB;
                b0 = n * SC * SAB;
                r0 = DGRAD ? a + PH : a * SH - PH;
                c0 = DGRAD ? b + PW : b * SW - PW;
            }
            col_info[0][tid] = b0;
            col_info[1][tid] = (int)(((unsigned)r0 << 16) | ((unsigned)c0 & 0xffffu));
        }
        cols = &col_info[0][0];
        __syncthreads();
    }
    __device__ __forceinline__ float4 load_a(int k0) {
        // (kbeg is a multiple of 8: a 4-vector inside [kbeg, K) is whole where vec_a says)
        const float4 v = tk_load4(pa, a_row_ok, k0 + a_k, K, vec_a);
        pa += TK_BK;
        return v;
    }
    __device__ __forceinline__ float4 load_b(int k0) {
        float v[4] = {0.f, 0.f, 0.f, 0.f};
        const int k = k0 + b_k;
        if (k < K) {
            const int ch = k / (KH * KW), t = k - ch * (KH * KW);
            const int p = t / KW, q = t - p * KW;
            const float* src = S + (size_t)ch * SAB;
            const int4 bs = *reinterpret_cast<const int4*>(cols + b_q);
            const int4 rc = *reinterpret_cast<const int4*>(cols + TK_BN + b_q);
            const int base[4] = {bs.x, bs.y, bs.z, bs.w}, ab[4] = {rc.x, rc.y, rc.z, rc.w};
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int r0 = ab[j] >> 16, c0 = (int)(short)(ab[j] & 0xffff);
                int sa, sb;
                bool ok;
                if (DGRAD) {  // dx pixel (h, w) <- dy pixel ((h + PH - p*DH) / SH, ...)
                    const int ta = r0 - p * DH, tb = c0 - q * DW;
                    sa = ta / SH;
                    sb = tb / SW;
                    ok = ta >= 0 && tb >= 0 && sa * SH == ta && sb * SW == tb && sa < SA &&
                         sb < SB;
                } else {
                    sa = r0 + p * DH;
                    sb = c0 + q * DW;
                    ok = (unsigned)sa < (unsigned)SA && (unsigned)sb < (unsigned)SB;
                }
                if (ok) v[j] = src[base[j] + sa * SB + sb];
            }
        }
        return make_float4(v[0], v[1], v[2], v[3]);
    }
    __device__ __forceinline__ void store(int r, int c, float4 v) {
        r += row0;
        c += col0;
        if (r >= M || c >= N) return;
        if (plain) {  // a partial product: P[z] row-major (vec_c: N % 4 == 0, aligned)
            tk_store4(Y + (size_t)r * N + c, c, N, vec_c, v);
            return;
        }
        if (vec_c) {  // L % 4 == 0: the 4 pixels are one image's, 16-byte aligned
            const int n = c / L;
            *reinterpret_cast<float4*>(Y + (size_t)n * OCL + (size_t)r * L + (c - n * L)) = v;
            return;
        }
        const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            if (c + j < N) {
                const int n = (c + j) / L;
                Y[(size_t)n * OCL + (size_t)r * L + (c + j - n * L)] = e[j];
            }
        }
    }
};
"""

# The weight gradient, per group g and K-chunk s (grid z = g * split + s):
#   dW[g, o, (c,p,q)] = sum over pixels k = (n, i, j) of dy[n, g*OG + o, (i, j)]
#                       * x[n, g*CG + c, i*SH - PH + p*DH, j*SW - PW + q*DW]
# M = OG, N = CG*KH*KW (taps), K = NB*OH*OW (pixels), both operands read along K: A is
# dy's rows (4 pixels a float4 where rows of L pixels allow), B gathers x for a fixed tap
# per thread. Each thread walks its pixels in steps of 8 and keeps their (n, i, j) as it
# goes (no division in the K-loop). Small grids split K: block z sums its chunk of
# pixels into P[z] (M x N), and the host adds the chunks.
CONV_WGRAD_SOURCE = r"""
template <int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int BM_>
struct TkConvW {
    static constexpr int BM = BM_;
    static constexpr bool A_ALONG_K = true, B_ALONG_K = true;
    const float* dy;   // dy at this group's first channel: (NB, OC, L) image stride OCL
    const float* x;    // x at this group's first channel: (NB, SC, SA, SB)
    float* P;          // this block's (M, N) result
    int M, N, K, kbeg, row0, col0, L, OCL, SA, SB, SCAB, OW, OH, vec_a, vec_c;
    int a_row, a_n, a_l;          // A: this thread's dy row; its first pixel (n, l)
    int b_ok, b_chan, b_poff, b_qoff, b_n, b_i, b_j;  // B: its tap; its first pixel

    __device__ __forceinline__ TkConvW(const float* dy_, const float* x_, float* P_, int M_,
                                       int N_, int Ktot, int kchunk, int split, int va,
                                       int vc, int OC, int OH_, int OW_, int SC, int SA_,
                                       int SB_)
        : M(M_), N(N_), OW(OW_), OH(OH_), SA(SA_), SB(SB_), vec_a(va), vec_c(vc) {
        const int tid = threadIdx.x;
        const int z = blockIdx.z, g = z / split, s = z - g * split;
        kbeg = s * kchunk;
        K = Ktot - kbeg < kchunk ? Ktot - kbeg : kchunk;  // this block's pixels
        L = OH * OW;
        OCL = OC * L;
        SCAB = SC * SA * SB;
        dy = dy_ + (size_t)g * M * L;
        x = x_ + (size_t)g * (N / (KH * KW)) * SA * SB;
        P = P_ + (size_t)z * M * N;
        row0 = blockIdx.y * BM;
        col0 = blockIdx.x * TK_BN;
        a_row = row0 + tk_tile_p<true, BM>(tid);
        const int ka = kbeg + tk_tile_q<true, BM>(tid);
        a_n = ka / L;
        a_l = ka - a_n * L;
        const int col = col0 + tk_tile_p<true>(tid);
        b_ok = col < N;
        const int c = col / (KH * KW), t = col - c * (KH * KW), p = t / KW, q = t - p * KW;
        b_chan = c * SA * SB;
        b_poff = p * DH - PH;
        b_qoff = q * DW - PW;
        const int kb = kbeg + tk_tile_q<true>(tid);
        b_n = kb / L;
        const int rem = kb - b_n * L;
        b_i = rem / OW;
        b_j = rem - b_i * OW;
    }
    __device__ __forceinline__ float4 load_a(int k0) {
        float v[4] = {0.f, 0.f, 0.f, 0.f};
        const int k = k0 + tk_tile_q<true>(threadIdx.x);  // (within this block's pixels)
        if (a_row < M && k < K) {
            const float* row = dy + (size_t)a_row * L;
            if (vec_a) {  // L % 4 == 0: the 4 pixels are one image's, 16-byte aligned
                const float4 f = *reinterpret_cast<const float4*>(row + (size_t)a_n * OCL + a_l);
                v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
            } else {
                int n = a_n, l = a_l;
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    if (k + e < K) v[e] = row[(size_t)n * OCL + l];
                    if (++l == L) { l = 0; ++n; }
                }
            }
        }
        a_l += TK_BK;  // the next K-tile: 8 pixels on
        while (a_l >= L) { a_l -= L; ++a_n; }
        return make_float4(v[0], v[1], v[2], v[3]);
    }
    __device__ __forceinline__ float4 load_b(int k0) {
        float v[4] = {0.f, 0.f, 0.f, 0.f};
        const int k = k0 + tk_tile_q<true>(threadIdx.x);
        if (b_ok && k < K) {
            int n = b_n, i = b_i, j = b_j;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int h = i * SH + b_poff, w = j * SW + b_qoff;
                if (k + e < K && (unsigned)h < (unsigned)SA && (unsigned)w < (unsigned)SB)
                    v[e] = x[(size_t)n * SCAB + b_chan + h * SB + w];
                if (++j == OW) { j = 0; if (++i == OH) { i = 0; ++n; } }
            }
        }
        b_j += TK_BK;
        while (b_j >= OW) { b_j -= OW; if (++b_i == OH) { b_i = 0; ++b_n; } }
        return make_float4(v[0], v[1], v[2], v[3]);
    }
    __device__ __forceinline__ void store(int r, int c, float4 v) {
        r += row0;
        c += col0;
        if (r < M && c < N) tk_store4(P + (size_t)r * N + c, c, N, vec_c, v);
    }
};
"""

CONV_WGRAD_ENTRY = r"""
extern "C" __global__ void __launch_bounds__(256, {min_blocks})
{name}(const float* __restrict__ dy, const float* __restrict__ x, float* __restrict__ P,
       int M, int N, int K, int kchunk, int split, int vec_a, int vec_c, int OC, int OH,
       int OW, int SC, int SA, int SB) {{
    TkConvW<{kh}, {kw}, {sh}, {sw}, {ph}, {pw}, {dh}, {dw}, {bm}> op(
        dy, x, P, M, N, K, kchunk, split, vec_a, vec_c, OC, OH, OW, SC, SA, SB);
    tk_gemm_core(op, op.K);
}}
"""


def conv_wgrad_entry(window, bm=128):
    """(name, CUDA source) of the weight-gradient entry point for one window, at tile rows bm."""
    name = "tk_conv_wgrad_" + "_".join(str(v) for v in window) + f"_bm{bm}"
    kh, kw, sh, sw, ph, pw, dh, dw = window
    return name, CONV_WGRAD_ENTRY.format(name=name, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw,
                                         dh=dh, dw=dw, bm=bm, min_blocks=_MIN_BLOCKS[bm])


CONV_ENTRY = r"""
extern "C" __global__ void __launch_bounds__(256, {min_blocks})
{name}(const float* __restrict__ A, const float* __restrict__ S, float* __restrict__ Y,
       int M, int N, int K, int kchunk, int split, int vec_a, int vec_c, int SC, int SA,
       int SB, int GA, int GB, int OC) {{
    TkConv<{kh}, {kw}, {sh}, {sw}, {ph}, {pw}, {dh}, {dw}, {dgrad}, {bm}> op(
        A, S, Y, M, N, K, kchunk, split, vec_a, vec_c, SC, SA, SB, GA, GB, OC);
    tk_gemm_core(op, op.Kc);
}}
"""


# blocks per SM each tile height is compiled for (__launch_bounds__): 2 (<= 128 registers).
# 3 at 64 rows (<= 85 registers, 24 warps an SM) spilled 12-20 bytes in ptxas (sm_90): the
# 64-row kernels stay at 2 (95-103 registers, no spill)
_MIN_BLOCKS = {128: 2, 64: 2}


def conv_entry(window, dgrad, bm=128):
    """(name, CUDA source) of the entry point for one window (KH, KW, SH, SW, PH, PW, DH,
    DW) of the forward pass (dgrad False) or the input gradient, at tile rows bm."""
    name = (("tk_conv_dgrad_" if dgrad else "tk_conv_fwd_") + "_".join(str(v) for v in window)
            + f"_bm{bm}")
    kh, kw, sh, sw, ph, pw, dh, dw = window
    return name, CONV_ENTRY.format(name=name, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, dh=dh,
                                   dw=dw, dgrad="true" if dgrad else "false", bm=bm,
                                   min_blocks=_MIN_BLOCKS[bm])


def conv_bm(m):
    """The tile rows for a convolution GEMM of m rows: 64 where m <= 64 (ResNet's first
    stage: a 128-row tile would compute on zeros for half its rows), else 128."""
    return 64 if m <= 64 else 128


# (trans_a, trans_b) -> the entry point in SOURCE; its "_exact" twin takes whole tiles only
KERNELS = {(False, False): "tk_sgemm_nn", (False, True): "tk_sgemm_nt",
           (True, False): "tk_sgemm_tn", (True, True): "tk_sgemm_tt"}


def matmul_entry(m, n, k, trans_a, trans_b, vec_a, vec_b, vec_c):
    """The entry point of a product: the exact one where M and N are multiples of the
    128-wide tile, K of BK and every operand's rows are whole aligned 4-vectors (vec
    flags from vec_ok), so that no tile needs a bounds test; else the general one."""
    name = KERNELS[(bool(trans_a), bool(trans_b))]
    if m % BM == 0 and n % BN == 0 and k % BK == 0 and vec_a and vec_b and vec_c:
        return name + "_exact"
    return name

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
    # a 2-D product is returned as the array that owns its memory (kernels.cuda._matmul)
    out = cupy.empty((m, n) if a.ndim == 2 else (A.shape[0], m, n), dtype=np.float32)
    C = out[None] if a.ndim == 2 else out
    slices = gemm_slices(A.shape[0], m, BM)
    if len(slices) > 1:  # past CUDA's 65535 blocks in y or z: slices, as kernels.cuda.matmul
        for b0, b1, r0, r1 in slices:
            Ab = A[b0:b1, :, r0:r1] if trans_a else A[b0:b1, r0:r1]
            C[b0:b1, r0:r1] = matmul(Ab, B[b0:b1], trans_a, trans_b)
        return out
    grid = (math.ceil(n / BN), math.ceil(m / BM), A.shape[0])
    if grid[0] and grid[1] and grid[2]:  # (CUDA refuses an empty grid; K = 0 gives zeros)
        vec_a = vec_ok(m if trans_a else k, A.data.ptr)
        vec_b = vec_ok(k if trans_b else n, B.data.ptr)
        vec_c = vec_ok(n, C.data.ptr)
        fn = _function(matmul_entry(m, n, k, trans_a, trans_b, vec_a, vec_b, vec_c))
        fn(grid, (THREADS,), (A, B, C, np.int32(m), np.int32(n), np.int32(k),
                              np.int32(vec_a), np.int32(vec_b), np.int32(vec_c)))
    return out


# -- the convolutions -----------------------------------------------------------------------
_CONV_SPAN_MAX = 16384  # packed 16-bit rows / columns of a column's first tap


def conv_function(geo, dgrad, bm):
    """The forward (or input-gradient, dgrad) entry point's CuPy function for this geometry
    and tile rows, compiled once (kernels.cuda's launch plans launch it by its address)."""
    return _conv_function(_window(geo), dgrad, bm)


def wgrad_function(geo, bm):
    """The weight-gradient entry point's CuPy function for this geometry and tile rows."""
    return _wgrad_function(_window(geo), bm)


@functools.lru_cache(maxsize=None)
def _conv_function(window, dgrad, bm):
    import cupy

    name, entry = conv_entry(window, dgrad, bm)
    code = CORE_SOURCE + CONV_SOURCE + entry
    return cupy.RawModule(code=code, options=("--std=c++14",)).get_function(name)


def conv_fits(op, x_shape, y_shape, geo):
    """None if the CUDA C convolution can take these sizes, else why not (its 32-bit
    offsets and the 16-bit packing of a column's first row and column)."""
    kh, kw = geo.kernel_size
    spans = (max(x_shape[2], y_shape[2]) * max(geo.stride) + max(geo.padding),
             max(x_shape[3], y_shape[3]) * max(geo.stride) + max(geo.padding),
             (kh - 1) * geo.dilation[0] + 1, (kw - 1) * geo.dilation[1] + 1)
    if max(spans) >= _CONV_SPAN_MAX:
        return f"{op}: the CUDA C convolution needs image sides and windows under {_CONV_SPAN_MAX}"
    if max(math.prod(x_shape), math.prod(y_shape)) >= 2 ** 31:
        return f"{op}: the CUDA C convolution needs fewer than 2**31 elements per tensor"
    return None


def conv_plan(dgrad, x_shape, w_shape, geo):
    """The implicit GEMM of a convolution, per group: (M, N, K, SC, SA, SB, GA, GB, OC) =
    rows (output channels of the result), columns (N x its pixels), depth (source
    channels of a group x taps), the source's channels and sides, the result's sides and
    channels. The source is x (forward) or dy (input gradient, dgrad)."""
    n, c, h, wd = x_shape
    o, cg, kh, kw = w_shape
    g = geo.groups
    oh, ow = geo.out_size((h, wd))
    if dgrad:
        return cg, n * h * wd, (o // g) * kh * kw, o, oh, ow, h, wd, c
    return o // g, n * oh * ow, cg * kh * kw, c, h, wd, oh, ow, o


def conv_weights(w, geo, dgrad, xp):
    """A of the implicit GEMM, (G, M, K) contiguous: the weights per group, forward as
    stored (o, (c, p, q)); for the input gradient Wt[g, c, (o, p, q)] = w[g*OG + o, c, p, q]."""
    o, cg, kh, kw = w.shape
    g = geo.groups
    if dgrad:
        wt = w.reshape(g, o // g, cg, kh * kw).transpose(0, 2, 1, 3)
        return xp.ascontiguousarray(wt).reshape(g, cg, (o // g) * kh * kw)
    return xp.ascontiguousarray(w).reshape(g, o // g, cg * kh * kw)


def _chunks(op, K, split, kchunk):
    """(split, kchunk) validated: K cut into ``split`` non-empty chunks of ``kchunk`` (a
    multiple of BK) that cover it, the last one possibly shorter; kchunk None: one chunk
    of all of K."""
    if kchunk is None:
        return 1, max(BK, -(-K // BK) * BK)
    if split < 1 or kchunk < BK or kchunk % BK or (split - 1) * kchunk >= max(K, 1) \
            or split * kchunk < K:
        raise ValueError(f"{op}: split {split} x kchunk {kchunk} does not cut K = {K} into "
                         f"non-empty chunks of a multiple of {BK} that cover it")
    return split, kchunk


def conv_args(plan, groups, a_ptr, y_ptr, bm=None, split=1, kchunk=None):
    """(grid, int arguments after A, S, Y, tile rows) of a convolution launch; bm None:
    conv_bm's choice. With ``split`` chunks of ``kchunk`` taps (split-K) Y is the partial
    products P (groups * split, M, N), written plain; else the NCHW output."""
    M, N, K, SC, SA, SB, GA, GB, OC = plan
    split, kchunk = _chunks("conv2d_cuda_c", K, split, kchunk)
    bm = conv_bm(M) if bm is None else bm
    vec_a = vec_ok(K, a_ptr)
    vec_c = vec_ok(N if split > 1 else GA * GB, y_ptr)
    grid = (math.ceil(N / BN), math.ceil(M / bm), groups * split)
    return grid, (M, N, K, kchunk, split, vec_a, vec_c, SC, SA, SB, GA, GB, OC), bm


def sum_partials(P, C):
    """C[img, g*M + m, l] = sum_s P[g, s, m, img*L + l] for split-K's partial products P
    (G, split, M, NB*L) and the result C (NB, G*M, L): NCHW (the forward pass, the input
    gradient) or, with NB = 1, plain (the weight gradient). CuPy's reduction and a
    transposed copy; kernels.cuda passes its one-kernel sum instead."""
    g, split, m, cols = P.shape
    nb, _, L = C.shape
    C[...] = P.sum(axis=1).reshape(g, m, nb, L).transpose(2, 0, 1, 3).reshape(nb, g * m, L)


def _conv_run(geo, dgrad, w, S, Y, x_shape, split=1, kchunk=None, summed=sum_partials):
    """The convolution GEMM into Y (NB, OC, L); with split-K through partial products
    added up by ``summed(P, Y)``."""
    import cupy

    A = conv_weights(w, geo, dgrad, cupy)
    plan = conv_plan(dgrad, x_shape, w.shape, geo)
    M, N, K = plan[:3]
    split = _chunks("conv2d_cuda_c", K, split, kchunk)[0]
    g = geo.groups
    out = cupy.empty((g * split, M, N), dtype=np.float32) if split > 1 else Y
    grid, ints, bm = conv_args(plan, g, A.data.ptr, out.data.ptr, None, split, kchunk)
    if all(grid):
        _conv_function(_window(geo), dgrad, bm)(
            grid, (THREADS,), (A, cupy.ascontiguousarray(S), out)
            + tuple(np.int32(v) for v in ints))
        if split > 1:
            summed(out.reshape(g, split, M, N), Y)


def _check_float32(op, *arrays):
    if any(a.dtype != np.float32 for a in arrays):
        raise TypeError(f"{op}: float32 arrays expected, got "
                        f"{', '.join(str(a.dtype) for a in arrays)}")


def _window(geo):
    return geo.kernel_size + geo.stride + geo.padding + geo.dilation


def conv2d_forward(x, w, stride=1, padding=0, dilation=1, groups=1, split=1, kchunk=None,
                   summed=sum_partials):
    """y = conv2d(x, w) (NCHW, OIHW, float32 CuPy arrays) as an implicit GEMM per group on
    the 128 x 128 schedule: y[n, g*OG + o, l] = sum_k W2[g, o, k] im2col(x)[g*KG + k, n*L + l],
    K (the taps) cut into ``split`` chunks of ``kchunk`` added up by ``summed`` (see
    sum_partials)."""
    import cupy

    from ._common import as_conv_geometry, check_float

    op = "conv2d_forward_cuda_c"
    check_float(op, x, w)
    _check_float32(op, x, w)
    geo = as_conv_geometry(stride, padding, dilation, groups, w.shape, op)
    n, o, oh, ow = geo.output_shape(x.shape, w.shape, op)
    why = conv_fits(op, x.shape, (n, o, oh, ow), geo)
    if why:
        raise ValueError(why)
    y = cupy.empty((n, o, oh * ow), dtype=np.float32)
    if n:
        _conv_run(geo, False, w, x, y, x.shape, split, kchunk, summed)
    return y.reshape(n, o, oh, ow)


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1,
                          split=1, kchunk=None, summed=sum_partials):
    """dx of conv2d (float32 CuPy arrays) as an implicit GEMM per group on the 128 x 128
    schedule: dx[n, g*CG + c, (h, w)] = sum_(o,p,q) Wt[g, c, (o,p,q)] dy-gather (above);
    split-K as conv2d_forward's."""
    import cupy

    from ._common import as_conv_geometry, check_dy, check_float

    op = "conv2d_backward_input_cuda_c"
    check_float(op, dy, w)
    _check_float32(op, dy, w)
    geo = as_conv_geometry(stride, padding, dilation, groups, w.shape, op)
    x_shape = tuple(int(v) for v in x_shape)
    check_dy(op, dy, geo.output_shape(x_shape, w.shape, op))
    why = conv_fits(op, x_shape, dy.shape, geo)
    if why:
        raise ValueError(why)
    n, c, h, wd = x_shape
    dx = cupy.empty((n, c, h * wd), dtype=np.float32)
    if n:
        _conv_run(geo, True, w, dy, dx, x_shape, split, kchunk, summed)
    return dx.reshape(x_shape)


@functools.lru_cache(maxsize=None)
def _wgrad_function(window, bm):
    import cupy

    name, entry = conv_wgrad_entry(window, bm)
    code = CORE_SOURCE + CONV_WGRAD_SOURCE + entry
    return cupy.RawModule(code=code, options=("--std=c++14",)).get_function(name)


def wgrad_plan(x_shape, dy_shape, w_shape, geo, split=1, kchunk=None, bm=None):
    """(grid, int arguments after dy, x, P, P's shape, tile rows) of a weight-gradient
    launch: M = OG rows, N = CG*KH*KW taps, K = NB*OH*OW pixels in ``split`` chunks of
    ``kchunk`` (a multiple of 8; None: all of K in one); bm None: conv_bm's choice."""
    n, c, h, wd = x_shape
    _, o, oh, ow = dy_shape
    g = geo.groups
    M, N, K = o // g, w_shape[1] * w_shape[2] * w_shape[3], n * oh * ow
    split, kchunk = _chunks("conv2d_backward_weight_cuda_c", K, split, kchunk)
    bm = conv_bm(M) if bm is None else bm
    grid = (math.ceil(N / BN), math.ceil(M / bm), g * split)
    return grid, (M, N, K, kchunk, split, int((oh * ow) % 4 == 0), int(N % 4 == 0), o, oh, ow,
                  c, h, wd), (g * split, M, N), bm


def wgrad_aligned(ints, dy_ptr, p_ptr):
    """wgrad_plan's int arguments with its two vector flags (dy's rows, P's rows) kept only
    where the base addresses are 16-byte aligned."""
    return ints[:5] + (int(ints[5] and dy_ptr % 16 == 0), int(ints[6] and p_ptr % 16 == 0)) \
        + ints[7:]


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1,
                           split=1, kchunk=None, summed=sum_partials):
    """dW of conv2d (float32 CuPy arrays) as an implicit GEMM per group on the 128 x 128
    schedule, K (the pixels) cut into ``split`` chunks of ``kchunk`` added up by
    ``summed`` (see sum_partials)."""
    import cupy

    from ._common import as_conv_geometry, check_dy, check_float

    op = "conv2d_backward_weight_cuda_c"
    check_float(op, dy, x)
    _check_float32(op, dy, x)
    w_shape = tuple(int(v) for v in w_shape)
    geo = as_conv_geometry(stride, padding, dilation, groups, w_shape, op)
    out = geo.output_shape(x.shape, w_shape, op)
    check_dy(op, dy, out)
    why = conv_fits(op, x.shape, out, geo)
    if why:
        raise ValueError(why)
    grid, ints, p_shape, bm = wgrad_plan(x.shape, out, w_shape, geo, split, kchunk)
    dy, x = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x)
    g = geo.groups
    if not all(grid) or out[0] == 0:  # no pixel: dW is zero
        return cupy.zeros(w_shape, dtype=np.float32)
    # without split-K the kernel writes dW itself: P (G, M, N) is dW's memory, allocated in
    # dW's shape so that the result owns it (the engine copies a view into .grad)
    P = cupy.empty(w_shape if p_shape[0] == g else p_shape, dtype=np.float32)
    ints = wgrad_aligned(ints, dy.data.ptr, P.data.ptr)
    _wgrad_function(_window(geo), bm)(grid, (THREADS,),
                                      (dy, x, P) + tuple(np.int32(v) for v in ints))
    if p_shape[0] == g:
        return P
    dw = cupy.empty(w_shape, dtype=np.float32)
    summed(P.reshape(g, p_shape[0] // g, p_shape[1], p_shape[2]),
           dw.reshape(1, w_shape[0], p_shape[2]))
    return dw
