"""CUDA kernels written with Numba, on CuPy device arrays (or NumPy under the simulator).

One tiled GEMM kernel does the heavy lifting for matmul and for convolution (implicit
GEMM: the im2col matrix is never built, its elements are gathered from x while a tile is
loaded into shared memory):

    block tile BM x BN of C, K walked in steps of BK;
    each of the (BM/TM)*(BN/TN) threads keeps a TM x TN register tile of C;
    per step: the block stages A[BM, BK] (stored transposed, As[BK][BM]) and B[BK, BN]
    in shared memory, then every thread does BK rank-1 updates of its register tile.

What the operands are is decided at compile time (``_gemm_kernel`` is a factory cached
per configuration):

    matmul            A = a or a^T, B = b or b^T, C = out              (batch on grid z)
    conv forward      A = W (O, C*KH*KW), B = im2col(x) (C*KH*KW, N*OH*OW), C -> y NCHW
    conv d-weight     A = dy as (O, N*OH*OW), B = im2col(x)^T, C = dW (O, C*KH*KW)
    conv d-input      A = W^T per group (C, O*KH*KW), B = dy gathered per dx pixel and tap
                      (zero off the stride grid), C -> dx NCHW

Split-K: when a GEMM would launch fewer than two blocks per multiprocessor -- ResNet's
first weight gradient: 9 blocks of 64x64 for dW (64, 576) over K = 64*32*32; its last
layer's forward and input gradient: 128 -- K is cut into chunks, one block per chunk and
tile, writing partial products to a plain workspace that one sum reduces (in a fixed
order: no atomics), and for an NCHW output one strided copy puts in place.

The direct input-gradient kernel (one thread per dx element, summing the kernel taps
whose output position is on the stride grid, no atomics) stays runnable by name.
Pooling is one thread per output (forward, avg backward) or per input (max backward
through the recorded argmax, which a window scan finds per input element).

Production tiles: BM = BN = 64, BK = 8, TM = TN = 4 (256 threads). Tests under the
simulator also run small configurations (8x8 tiles, 2x2 per thread) so that every
bounds check is exercised on problems that are not multiples of the tile. Large matmuls
(a grid of 128x128 blocks that still fills the GPU) run on the GEMM ladder's rung 5
instead, the "wide kernel" (WIDE_TILE, kernels/cuda_gemm.py).

Version notes (instr/FMA: SASS instructions per FFMA over one K-tile, from ptxas and
nvdisasm for sm_90 -- benchmarks/resources.py; GPU timings: benchmarks/results/, the
first from an H200 on 2026-11-26):
  v1  correctness-first, validated under NUMBA_ENABLE_CUDASIM on hypothesis-drawn shapes.
      instr/FMA 8.9 (matmul), 11.3 (conv forward), 15.0 (conv weight gradient), 124
      registers: Numba's signed subscripts (a negative-index fix-up each), signed 64-bit
      divisions by run-time window sizes, a K-step loop LLVM would not unroll, and bare
      0.0 literals that made loads (and the pooling / conv input-gradient sums) float64.
  v2  unsigned subscripts, 32-bit unsigned divisions, the window baked into the
      im2col loader, a fully unrolled K-step reading 128-bit LDS, accumulators and zeros
      in the array's dtype, the im2col column split hoisted out of the K loop, divisions
      by the run-time output sizes as a multiply and a shift: instr/FMA 1.8 / 2.3 / 2.8,
      72-80 registers (occupancy 38%).
      The input gradient moved from the direct kernel (~50 instructions per FMA: two
      global loads and their index arithmetic per tap and channel) to the GEMM (2.3 at
      stride 1; 2.9 at stride 2, where 3 of 4 products are with zeros).
      Measured on an H200 (2026-11-26): matmul 4096^3 in 7.86 ms, 0.35x cuBLAS FP32; the
      ResNet-18 convolutions 0.12x-0.46x cuDNN; split-K takes the stem's weight gradient
      from 10.36 to 0.30 ms.
  v3  the shared A tile's k-rows padded by 4 floats (_A_PAD): its transposing
      stores were an 8-way bank conflict at BK = 8 (every kk * 64 + r in bank r mod 32),
      now none; registers and instr/FMA unchanged. A double-buffered variant
      (_DOUBLE_BUFFER, off): two shared stages, the next K-tile fetched into registers
      during the current one's FMAs, two K-tiles per trip so that every shared offset is
      a constant; same instr/FMA, 72 registers, twice the shared memory. Neither is timed
      yet: the GPU sweep runs the default tile as it is, unpadded and double-buffered.
  v4  (this) large matmuls on the wide kernel: the ladder's rung 5 (128x128 block tile,
      8x8 per thread, warp-tiled, double-buffered), which took 4096^3 in 4.04 ms where
      the 64x64 kernel took 7.86 (0.67x vs 0.35x cuBLAS), now reading transposed operands
      in place; used where its grid holds two blocks per multiprocessor (_use_wide). Its
      unrolling and block order are swept on the next GPU run (WIDE_CANDIDATES). The
      64x64 kernel can lay its threads out by warp (_WARP_LAYOUT, off until the sweep
      times it): 2 shared-memory wavefronts per K-step and warp instead of 3, the same
      registers and instr/FMA; and cap its registers (_MAX_REGISTERS, off): at 64 the
      matmul kernel is spill-free with 4 blocks per multiprocessor instead of 3.
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np
from numba import cuda  # a module global: the simulator swaps it for its fake inside kernels
from numba import int64, uint32, uint64

from . import _cuda_runtime as _runtime
from . import _cuda_launch
from . import cuda_gemm as _ladder  # the GEMM ladder; its rung 5 is the wide kernel
from . import cuda_sgemm  # rung 6: rung 5 in CUDA C (CuPy; imports CuPy at first use)
from . import cuda_pool  # max-pooling in CUDA C (CuPy at first use)
from . import cuda_direct  # direct convolution for few result channels (CuPy at first use)
from . import cuda_tf32  # (imports CuPy only when its kernel is first used)
from ._common import (GRID_YZ_MAX, as_conv_geometry, as_pool_geometry, check_dy, check_float,
                      check_matmul, check_maxpool_backward, dtype_name, gemm_slices,
                      geometry_memo)
from ._common import magic as _magic  # (x // d as a multiply and a shift; shared with cuda_pool)
from ._cuda_launch import c_contiguous  # (a.flags.c_contiguous without CuPy's Flags object)

__all__ = ["matmul", "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight",
           "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
           "DEFAULT_TILE", "TILE_CANDIDATES", "set_tile", "WIDE_TILE", "set_wide_tile",
           "WIDE_KERNELS", "set_wide_kernel", "CONV_KERNELS", "set_conv_kernel",
           "POOL_KERNELS", "set_pool_kernel", "sgd_update_multi", "adam_update_multi",
           "VERSIONS"]

DEFAULT_TILE = (64, 64, 8, 4, 4)  # BM, BN, BK, TM, TN
_tile = list(DEFAULT_TILE)
# tiles the first GPU run times against DEFAULT_TILE (benchmarks.gpu_parts sweep); all
# spill-free on sm_90 (ptxas, float32) in all four operand modes: registers 47-236,
# instr/FMA 1.5-2.5 for matmul, 1.8-5.6 for the convolutions.
# Expected: large tiles win on large products, small ones fill the 132 SMs on ResNet's
# late layers (4x4 pixels); the sweep decides.
TILE_CANDIDATES = (DEFAULT_TILE, (64, 64, 16, 4, 4), (128, 64, 8, 8, 4), (64, 128, 8, 4, 8),
                   (128, 128, 8, 8, 8), (128, 128, 16, 8, 8), (32, 64, 8, 2, 4),
                   (32, 32, 8, 2, 2))

# operand modes of the GEMM kernel
_PLAIN, _PLAIN_T, _IM2COL, _IM2COL_T, _DY_ONL, _DY_TAPS = range(6)
_OUT_PLAIN, _OUT_NCHW = range(2)


def set_tile(bm, bn, bk, tm, tn):
    """Choose the GEMM tile (tests use small ones). BM % TM == BN % TN == 0 and the
    thread count (BM/TM)*(BN/TN) must cover the BM*BK and BK*BN shared loads evenly."""
    if bm % tm or bn % tn:
        raise ValueError(f"set_tile: BM {bm} must be a multiple of TM {tm}, BN {bn} of TN {tn}")
    _tile[:] = [bm, bn, bk, tm, tn]


# the simulator switch, its shared-array fix and the array module of an argument live in
# kernels/_cuda_runtime.py, shared with the GEMM ladder (kernels/cuda_gemm.py)
_simulating = _runtime.simulating
_xp = _runtime.xp_of


# -- the GEMM kernel factory -----------------------------------------------------------------
# Operand loaders, one small device function per mode. The factory picks them in Python,
# so each compiled kernel contains only the code (and array ranks) of its own modes.
# geo = (L, OW, KG, OG, mL, pL, mOW, pOW) gives a convolution's run-time sizes (zeros for
# matmul): L = OH*OW, per group KG = C/G*KH*KW im2col rows and OG output channels, and the
# (multiplier, shift) that divide by L and by OW (_magic); a grouped convolution runs one
# GEMM per group on grid z (g). Window, stride, padding and dilation are compile-time
# constants of the im2col loader (``conv`` of the factory).
#
# Index arithmetic is what decides this kernel's speed once the products are in registers
# (ptxas + nvdisasm on sm_90, one K-tile of the 64x64x8 / 4x4 tile: 128 FFMA in ~1,100
# instructions before, ~240 after). Numba indexes with signed int64 and adds a negative-
# index fix-up (a compare and a select) per subscript; an unsigned subscript (_U) has none,
# and every index here is known to be >= 0. Divisions by the window (compile-time
# constants) run on 32-bit unsigned values (_u32), where they become a multiply and a
# shift; divisions by the run-time output sizes L and OW, in every load of a convolution,
# are a multiply and a shift by numbers the host computes once (_magic, as CUTLASS's
# FastDivmod). _conv_args checks that the sizes fit in 31 bits.
_U = uint64
_u32 = uint32


@cuda.jit(device=True, inline=True)
def _div(x, m, p):
    """x // d for 0 <= x < 2**31 with (m, p) = _magic(d): one 32x32 -> 64-bit multiply."""
    return (_U(x) * _U(m)) >> _U(p)


def _float_type(dtype_name):
    """The Numba scalar type of a kernel's float dtype: accumulators and zeros are made in
    it, since a bare Python float (0.0, -inf) is a float64 and turns float32 arithmetic
    into float64 (half rate on an H100, 1/64 on most other GPUs) plus conversions."""
    from numba import float32, float64

    return float64 if dtype_name == "float64" else float32


@cuda.jit(device=True, inline=True)
def _a_plain(A, g, row, k, geo):
    return A[g, _U(row), _U(k)]


@cuda.jit(device=True, inline=True)
def _a_trans(A, g, row, k, geo):
    return A[g, _U(k), _U(row)]


@cuda.jit(device=True, inline=True)
def _a_dy(A, g, row, k, geo):
    """A[o, n*L + l] = dy[n, g*OG + o, l] (dy viewed as (N, O, L))."""
    n = _div(k, geo[4], geo[5])
    return A[n, _U(g * geo[3] + row), _U(k) - n * _U(geo[0])]


# B is read in two steps: per column, once before the K loop, ``col_b`` returns what the
# loads of that column share (three ints: c0, c1, c2); per K-step ``load_b`` uses them.
# For the im2col forward that hoists the split of the column into (n, i, j), two
# divisions by run-time sizes, out of the loop.
@cuda.jit(device=True, inline=True)
def _col_plain(B, g, col, geo):
    return col, 0, 0


@cuda.jit(device=True, inline=True)
def _b_plain(B, g, k, c0, c1, c2, geo):
    return B[g, _U(k), _U(c0)]


@cuda.jit(device=True, inline=True)
def _b_trans(B, g, k, c0, c1, c2, geo):
    return B[g, _U(c0), _U(k)]


@functools.lru_cache(maxsize=None)
def _im2col_loader(mode, dtype_name, kh, kw, sh, sw, ph, pw, dh, dw):
    """(col_b, load_b) of a convolution's implicit GEMM, with the window, stride, padding
    and dilation baked in (divisions by constants are a multiply and a shift):

        im2col(x)[r = (ch, p, q), c = (n, i, j)] = xpad[n, ch, i*SH + p*DH, j*SW + q*DW]

    read as B[k, col] = im2col[g*KG + k, col] (forward: the column is the output pixel
    (n, i, j), hoisted as (n, i*SH - PH, j*SW - PW)) or im2col[g*KG + col, k] (weight
    gradient: the column is the tap (ch, p, q), hoisted as (ch, p*DH - PH, q*DW - PW));
    for the input gradient (_DY_TAPS) B gathers dy for dx's pixels (below)."""
    zero = _float_type(dtype_name)(0.0)

    @cuda.jit(device=True, inline=True)
    def split(c, geo):  # c = (n, i, j) of an (N, L = rows * geo[1]) matrix -> n, i, j
        n = _div(c, geo[4], geo[5])
        rem = _U(c) - n * _U(geo[0])
        i = _div(rem, geo[6], geo[7])
        return int64(n), int64(i), int64(rem - i * _U(geo[1]))

    @cuda.jit(device=True, inline=True)
    def pixel(c, geo):  # c = (n, i, j) -> n, i*SH - PH, j*SW - PW
        n, i, j = split(c, geo)
        return n, i * sh - ph, j * sw - pw

    @cuda.jit(device=True, inline=True)
    def tap(r):  # r = (ch, p, q) -> ch, p*DH, q*DW
        ru = _u32(r)
        rk = ru // kw
        return int64(rk // kh), int64(rk % kh) * dh, int64(ru % kw) * dw

    @cuda.jit(device=True, inline=True)
    def read(x, n, ch, h, w):
        if h < 0 or h >= x.shape[2] or w < 0 or w >= x.shape[3]:
            return zero
        return x[_U(n), _U(ch), _U(h), _U(w)]

    if mode == _DY_TAPS:
        # the input gradient: B[(o, p, q), (n, h, w)] = dy[n, g*OG + o, i, j] where
        # h + PH - p*DH = i*SH and w + PW - q*DW = j*SW fall on dy's grid, else 0; the
        # column is dx's pixel (n, h, w) (L = H*W, the row length W), hoisted as
        # (n, h + PH, w + PW)
        @cuda.jit(device=True, inline=True)
        def col_b(B, g, col, geo):
            n, h, w = split(col, geo)
            return n, h + ph, w + pw

        @cuda.jit(device=True, inline=True)
        def load_b(B, g, k, c0, c1, c2, geo):
            o, ph_, pw_ = tap(g * geo[2] + k)   # geo[2] = OG*KH*KW: o is dy's channel
            y = c1 - ph_
            x = c2 - pw_
            if y < 0 or x < 0:
                return zero
            yu = _U(y)
            xu = _U(x)
            if yu % sh or xu % sw:
                return zero
            i = yu // sh
            j = xu // sw
            if i >= B.shape[2] or j >= B.shape[3]:
                return zero
            return B[_U(c0), _U(o), _U(i), _U(j)]
        return col_b, load_b

    if mode == _IM2COL:
        @cuda.jit(device=True, inline=True)
        def col_b(B, g, col, geo):
            return pixel(col, geo)

        @cuda.jit(device=True, inline=True)
        def load_b(B, g, k, c0, c1, c2, geo):
            ch, ph_, pw_ = tap(g * geo[2] + k)
            return read(B, c0, ch, c1 + ph_, c2 + pw_)
    else:
        @cuda.jit(device=True, inline=True)
        def col_b(B, g, col, geo):
            ch, ph_, pw_ = tap(g * geo[2] + col)
            return ch, ph_ - ph, pw_ - pw

        @cuda.jit(device=True, inline=True)
        def load_b(B, g, k, c0, c1, c2, geo):
            n, h0, w0 = pixel(k, geo)
            return read(B, n, c0, h0 + ph + c1, w0 + pw + c2)
    return col_b, load_b


@cuda.jit(device=True, inline=True)
def _c_plain(C, g, r, c, v, geo):
    C[g, _U(r), _U(c)] = v


@cuda.jit(device=True, inline=True)
def _c_nchw(C, g, r, c, v, geo):
    """C[o, n*L + l] -> y[n, g*OG + o, l]."""
    n = _div(c, geo[4], geo[5])
    C[n, _U(g * geo[3] + r), _U(c) - n * _U(geo[0])] = v


_LOAD_A = {_PLAIN: _a_plain, _PLAIN_T: _a_trans, _DY_ONL: _a_dy}
_LOAD_B = {_PLAIN: _b_plain, _PLAIN_T: _b_trans}  # the im2col modes: _im2col_loader
_STORE_C = {_OUT_PLAIN: _c_plain, _OUT_NCHW: _c_nchw}


def _gemm_kernel(bm, bn, bk, tm, tn, mode_a, mode_b, mode_c, dtype_name, conv=None):
    """A tiled GEMM kernel for one tile configuration, operand modes and (for the im2col
    modes) convolution window ``conv`` = (KH, KW, SH, SW, PH, PW, DH, DW), compiled once.
    (lru_cache keys a call by how its arguments were passed: every call goes through here
    so that ``conv`` left out and ``conv=None`` find the same kernel, the one launched.)"""
    return _gemm_kernel_for(bm, bn, bk, tm, tn, mode_a, mode_b, mode_c, dtype_name, conv,
                            _A_PAD, _DOUBLE_BUFFER, _WARP_LAYOUT, _MAX_REGISTERS)


# module globals so that the GPU sweep can time each layout beside the default:
# floats of padding per k-row of the shared A tile (see _gemm_kernel_for), and two shared
# stages with the next K-tile fetched into registers during the current one's FMAs (off
# until a GPU run says it pays: it costs registers and twice the shared memory)
_A_PAD = 4
_DOUBLE_BUFFER = False
# how the threads of a block map onto its register tiles: None, row-major (thread t owns
# row t // (BN/TN), column t % (BN/TN) of tiles; a warp spans 2 x 16 tiles at 64x64/4x4),
# or (warp, ln), by warp as the ladder's rung 5 does (a warp spans (warp/ln) x ln tiles).
# Per K-step a warp's shared reads then touch 8 A and 4 B 16-byte vectors (2 wavefronts)
# instead of 2 and 16 (3): a third less shared-memory traffic, which at 4x4 per thread is
# close to the FMAs' own rate. Off until the GPU sweep times it (tests use (4, 2))
_WARP_LAYOUT = None
WARP_CANDIDATE = (32, 4)  # the layout the sweep and the resource table try (8 x 4 lanes)
# a register cap for the GEMM kernels (ptxas's maxrregcount; None: ptxas's choice). At 64
# the 64x64 matmul kernels compile spill-free with the same instr/FMA and 4 blocks of 256
# threads fit a multiprocessor instead of 3 (occupancy 38% -> 50%); the convolutions then
# spill 8-64 bytes. (Launch bounds asking for 4 blocks did worse: NVVM recompiled the
# convolution to 2.9 instructions per FMA.) Off until the GPU sweep times it
_MAX_REGISTERS = None
MAX_REGISTERS_CANDIDATE = 64
_REGISTER_CAPS = {}  # py_func -> its cap, for compile_ptx callers (the resource table)


def max_registers_of(py_func):
    """The register cap of one of this module's kernels (by its Python function), or None:
    a compile_ptx caller adds it with kernels._cuda_launch.cap_registers."""
    return _REGISTER_CAPS.get(py_func)


def _warp_layout_fits(tile, warp_layout):
    """Whether warps of warp_layout = (warp, ln) threads, ln along N, tile the
    (BM/TM) x (BN/TN) threads of ``tile`` exactly."""
    bm, bn, bk, tm, tn = tile
    warp, ln = warp_layout
    rows, cols = bm // tm, bn // tn
    return (warp % ln == 0 and (rows * cols) % warp == 0 and cols % ln == 0
            and rows % (warp // ln) == 0)


@functools.lru_cache(maxsize=None)
def _gemm_kernel_for(bm, bn, bk, tm, tn, mode_a, mode_b, mode_c, dtype_name, conv, a_pad,
                     double_buffer, warp_layout=None, max_registers=None):
    acc_t = _float_type(dtype_name)
    nthreads = (bm // tm) * (bn // tn)
    threads_n = bn // tn
    warped = warp_layout is not None  # (a bool: numba types a tuple's truth by a call)
    warp, ln = warp_layout or (1, 1)
    lm, warps_n = warp // ln, threads_n // ln
    if warped and not _warp_layout_fits((bm, bn, bk, tm, tn), warp_layout):
        raise ValueError(f"kernels.cuda: the warp layout {warp_layout} (warp, lanes along N) "
                         f"does not tile the {bm // tm} x {threads_n} threads of tile "
                         f"{(bm, bn, bk, tm, tn)}")
    # each thread stages la elements of the A tile and lb of the B tile per K-step; when
    # the tile is not a multiple of the thread count (small test tiles) the last round is
    # partial and guarded (exact_* is a constant, so the guard compiles away otherwise)
    size_a, size_b = bm * bk, bk * bn
    la, lb = -(-size_a // nthreads), -(-size_b // nthreads)
    exact_a, exact_b = size_a % nthreads == 0, size_b % nthreads == 0
    # the A tile is stored transposed, row kk at kk * stride_a. The 32 staging threads of
    # a warp write BK k-rows of 32/BK tile rows r: at a stride of BM (64 or 128) every
    # kk * BM + r falls in bank r mod 32, a BK-way conflict on every store (8-way at
    # BK = 8). 4 floats of padding put k-row kk 4*kk banks further: conflict-free at
    # BK = 8, 2-way at 16; the TM reads stay 16-byte aligned
    stride_a = bm + a_pad
    shared_a = bk * stride_a  # (a constant: cuda.shared.array takes no expression)
    load_a, store_c = _LOAD_A[mode_a], _STORE_C[mode_c]
    splittable = mode_c == _OUT_PLAIN  # split-K sums partial products of plain outputs
    col_b, load_b = ((_col_plain, _LOAD_B[mode_b]) if conv is None
                     else _im2col_loader(mode_b, dtype_name, *conv))

    stages = 2 if double_buffer else 1
    shared_a_all, shared_b_all = stages * shared_a, stages * size_b  # (constants, as above)

    @cuda.jit(device=True, inline=True)
    def fetch(A, B, g, k0, row0, col0, tid, M, N, K, cols, geo, pa, pb):
        # this thread's elements of the K-tile at k0 into registers, out-of-range ones as
        # 0, so that edge tiles need no special case
        for i in range(la):
            s = tid + i * nthreads
            if exact_a or s < size_a:
                r = row0 + s // bk
                kk = k0 + s % bk
                v = acc_t(0.0)  # (a bare 0.0 is a float64: every load would convert)
                if r < M and kk < K:
                    v = load_a(A, g, r, kk, geo)
                pa[i] = v
        for i in range(lb):
            s = tid + i * nthreads
            if exact_b or s < size_b:
                kk = k0 + s // bn
                c = col0 + s % bn
                v = acc_t(0.0)
                if kk < K and c < N:
                    v = load_b(B, g, kk, cols[i, 0], cols[i, 1], cols[i, 2], geo)
                pb[i] = v

    @cuda.jit(device=True, inline=True)
    def stage(As, Bs, st, tid, pa, pb):
        # the fetched elements into shared stage st (A transposed)
        for i in range(la):
            s = tid + i * nthreads
            if exact_a or s < size_a:
                As[_U(st * shared_a + (s % bk) * stride_a + s // bk)] = pa[i]
        for i in range(lb):
            s = tid + i * nthreads
            if exact_b or s < size_b:
                Bs[_U(st * size_b + s)] = pb[i]

    @cuda.jit(device=True, inline=True)
    def multiply(As, Bs, st, a0, b0, ra, rb, acc):
        # BK rank-1 updates of the register tile from shared stage st; a while loop (not
        # range) lets LLVM unroll the K-step fully
        kk = 0
        while kk < bk:
            for a in range(tm):
                ra[a] = As[_U(st * shared_a + kk * stride_a + a0 + a)]
            for b in range(tn):
                rb[b] = Bs[_U(st * size_b + kk * bn + b0 + b)]
            for a in range(tm):
                for b in range(tn):
                    acc[a, b] += ra[a] * rb[b]
            kk += 1

    @cuda.jit(device=True, inline=True)
    def step(A, B, As, Bs, g, k0, kend, row0, col0, tid, M, N, K, cols, geo, pa, pb, a0, b0,
             ra, rb, acc, st):
        # one double-buffered K-step on the tile at k0, held in stage st: the next K-tile
        # is fetched into registers first (its loads' latency hides behind this tile's
        # FMAs) and staged after them into the other stage, last read before the previous
        # step's barrier. Returns whether there was a next K-tile.
        more = k0 + bk < kend
        if more:
            fetch(A, B, g, k0 + bk, row0, col0, tid, M, N, K, cols, geo, pa, pb)
        multiply(As, Bs, st, a0, b0, ra, rb, acc)
        if more:
            stage(As, Bs, 1 - st, tid, pa, pb)
        cuda.syncthreads()
        return more

    # (the simulator's cuda.jit takes no register cap; it changes no result)
    options = ({} if max_registers is None or _simulating()
               else {"max_registers": max_registers})

    @cuda.jit(**options)
    def kernel(A, B, C, M, N, K, geo, split, kchunk):
        # grid z = batch (or group) x split: block z sums K in [s*kchunk, (s+1)*kchunk) of
        # batch g into C[z] (split-K, when the grid would be too small to fill the GPU;
        # with split = 1, z = g and one block walks all of K)
        z = cuda.blockIdx.z
        g, kbeg, kend = z, 0, K
        if splittable:  # (a constant: NCHW outputs never split, and skip the arithmetic)
            g = z // _u32(split)
            kbeg = (z - g * split) * kchunk
            kend = min(K, kbeg + kchunk)
        # both tiles k-major and flat: As[kk*stride_a + m] (A stored transposed),
        # Bs[kk*BN + n]; a thread's TM (TN) consecutive values then sit side by side, one
        # 128-bit LDS. Double-buffered: two such stages, As[stage * shared_a + ...]
        As = cuda.shared.array(shared_a_all, dtype=acc_t)
        Bs = cuda.shared.array(shared_b_all, dtype=acc_t)
        acc = cuda.local.array((tm, tn), dtype=acc_t)
        ra = cuda.local.array(tm, dtype=acc_t)
        rb = cuda.local.array(tn, dtype=acc_t)
        pa = cuda.local.array(la, dtype=acc_t)  # double-buffered: this thread's share of
        pb = cuda.local.array(lb, dtype=acc_t)  # the next K-tile
        tid = cuda.threadIdx.x
        if warped:  # (a constant) warp (wm, wn), lane (lane // ln, lane % ln)
            w, lane = tid // warp, tid % warp
            a0 = ((w // warps_n) * lm + lane // ln) * tm
            b0 = ((w % warps_n) * ln + lane % ln) * tn
        else:
            a0 = (tid // threads_n) * tm
            b0 = (tid % threads_n) * tn
        row0 = cuda.blockIdx.y * bm
        col0 = cuda.blockIdx.x * bn
        for a in range(tm):
            for b in range(tn):
                acc[a, b] = 0.0
        # the B columns this thread stages do not change with the K-step: split them once
        cols = cuda.local.array((lb, 3), int64)
        for i in range(lb):
            c0, c1, c2 = col_b(B, g, col0 + (tid + i * nthreads) % bn, geo)
            cols[i, 0] = c0
            cols[i, 1] = c1
            cols[i, 2] = c2
        if double_buffer:  # (a constant)
            fetch(A, B, g, kbeg, row0, col0, tid, M, N, K, cols, geo, pa, pb)
            stage(As, Bs, 0, tid, pa, pb)
            cuda.syncthreads()
            # two K-tiles per trip, stage 0 then stage 1, so that every shared offset is a
            # constant (a stage index in a variable cost 0.3 instructions per FMA)
            k0 = kbeg
            while step(A, B, As, Bs, g, k0, kend, row0, col0, tid, M, N, K, cols, geo,
                       pa, pb, a0, b0, ra, rb, acc, 0):
                k0 += bk
                if not step(A, B, As, Bs, g, k0, kend, row0, col0, tid, M, N, K, cols, geo,
                            pa, pb, a0, b0, ra, rb, acc, 1):
                    break
                k0 += bk
        else:
            # one stage, each load written straight to shared memory: the same code as
            # before the double-buffered variant existed. Not fetch + stage (which holds a
            # whole share of the tile in registers first): that compiled the convolutions
            # to 96 registers instead of 80, occupancy 38% -> 25% (benchmarks.resources)
            for k0 in range(kbeg, kend, bk):
                for i in range(la):
                    s = tid + i * nthreads
                    if exact_a or s < size_a:
                        r = row0 + s // bk
                        kk = k0 + s % bk
                        v = acc_t(0.0)
                        if r < M and kk < K:
                            v = load_a(A, g, r, kk, geo)
                        As[_U((s % bk) * stride_a + s // bk)] = v
                for i in range(lb):
                    s = tid + i * nthreads
                    if exact_b or s < size_b:
                        kk = k0 + s // bn
                        c = col0 + s % bn
                        v = acc_t(0.0)
                        if kk < K and c < N:
                            v = load_b(B, g, kk, cols[i, 0], cols[i, 1], cols[i, 2], geo)
                        Bs[_U(s)] = v
                cuda.syncthreads()
                kk = 0
                while kk < bk:
                    for a in range(tm):
                        ra[a] = As[_U(kk * stride_a + a0 + a)]
                    for b in range(tn):
                        rb[b] = Bs[_U(kk * bn + b0 + b)]
                    for a in range(tm):
                        for b in range(tn):
                            acc[a, b] += ra[a] * rb[b]
                    kk += 1
                cuda.syncthreads()
        for a in range(tm):
            r = row0 + a0 + a
            if r < M:
                for b in range(tn):
                    c = col0 + b0 + b
                    if c < N:
                        store_c(C, z, r, c, acc[a, b], geo)

    if options:
        _REGISTER_CAPS[kernel.py_func] = max_registers
    return kernel, nthreads


_GRID_YZ_MAX = GRID_YZ_MAX  # a module global so that the tests can shrink it
# split-K: a GEMM whose grid has fewer blocks than _SPLIT_BLOCKS_PER_SM per multiprocessor
# (ResNet's early weight gradients: 9 blocks of 64x64 for dW (64, 576) over K = 65536)
# cuts K into chunks of at least _SPLIT_MIN_K, one block per chunk, and sums the partial
# products after; module globals so that the tests can make toy sizes split
_SPLIT_BLOCKS_PER_SM = 2
_SPLIT_MIN_K = 256


@functools.lru_cache(maxsize=1)
def _sm_count():
    if _simulating():
        return 132  # an H100's; the simulator has no multiprocessors to count
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


def _split_k(blocks, K, batch, bk, sms):
    """-> (split, kchunk): the number of K-chunks for a GEMM of ``blocks`` blocks per batch
    entry on a GPU of ``sms`` multiprocessors, and their length (a multiple of bk; every
    chunk non-empty). (1, K rounded up to bk) when the grid fills the GPU already or K is
    too short to share."""
    target = _SPLIT_BLOCKS_PER_SM * sms
    whole = -(-max(K, 1) // bk) * bk
    if blocks * batch >= target or K < 2 * _SPLIT_MIN_K:
        return 1, whole
    split = min(-(-target // (blocks * batch)), K // _SPLIT_MIN_K, _GRID_YZ_MAX // batch)
    kchunk = -(-(-(-K // split)) // bk) * bk
    return -(-K // kchunk), kchunk


def _launch_gemm(mode_a, mode_b, mode_c, A, B, C, M, N, K, batch, geo, dtype, conv=None):
    """C = the product of A and B per batch entry (modes: _gemm_kernel's), split-K where
    the grid is small. Returns ``replay(A, B, C)``, which repeats exactly these launches
    on other arrays of the same dtypes, shapes and strides (launch plans, below), or None
    where a launch did not go through the driver (the simulator, numba's own launch)."""
    if M == 0 or N == 0 or batch == 0:
        return _NOTHING  # C has no element to write (and CUDA refuses a grid with no blocks)
    bm, bn, bk, tm, tn = _tile
    kernel, nthreads = _gemm_kernel(bm, bn, bk, tm, tn, mode_a, mode_b, mode_c,
                                    dtype_name(dtype), conv)
    gx, gy = math.ceil(N / bn), math.ceil(M / bm)
    if gy > _GRID_YZ_MAX or batch > _GRID_YZ_MAX:  # matmul slices before it gets here
        raise ValueError(f"kernels.cuda: a GEMM of {M} rows x {N} columns in {batch} batches "
                         f"or groups needs a grid of {(gx, gy, batch)} blocks at tile {bm}x{bn}; "
                         f"CUDA allows at most {_GRID_YZ_MAX} in y (rows) and z (batches)")
    split, kchunk = _split_k(gx * gy, K, batch, bk, _sm_count())
    if split > 1 and mode_c != _OUT_PLAIN:
        # the partial products go to a plain workspace, written by the plain-output kernel
        # (the NCHW-output kernels compile without the split arithmetic)
        kernel, nthreads = _gemm_kernel(bm, bn, bk, tm, tn, mode_a, mode_b, _OUT_PLAIN,
                                        dtype_name(dtype), conv)
    grid = (gx, gy, batch * split)
    launch = kernel[grid, nthreads] if _simulating() else _launch_config(kernel, grid, nthreads)
    if split == 1:
        launch(A, B, C, M, N, K, geo, 1, kchunk)
        return _bind(launch, A, B, C, M, N, K, geo, 1, kchunk)
    # (every caller's C is a fresh contiguous array: the reshapes below are views of it)
    xp = _xp(C)
    partial = xp.empty((batch, split, M, N), dtype=C.dtype)
    launch(A, B, partial.reshape(batch * split, M, N), M, N, K, geo, split, kchunk)
    # plain: C is (batch, M, N), one image; NCHW: C is (n, batch*M, L) and column c of
    # group g's product is (image, l) = divmod(c, L)
    n = 1 if mode_c == _OUT_PLAIN else C.shape[0]
    out = C.reshape(n, batch * M, N // n)
    if not out.size:
        return None
    summer = _launch(_splitk_sum_kernel(dtype_name(dtype)), out.size)
    summer(partial, out)
    gemm = _bind(launch, A, B, partial.reshape(batch * split, M, N), M, N, K, geo, split,
                 kchunk)
    total = _bind(summer, partial, out)
    if gemm is None or total is None:
        return None

    def replay(A, B, C):
        partial = xp.empty((batch, split, M, N), dtype=C.dtype)
        gemm(A, B, partial)
        total(partial, C)

    return replay


@functools.lru_cache(maxsize=None)
def _splitk_sum_kernel(dtype_name):
    """C[img, g*M + m, l] = sum_s P[g, s, m, img*L + l]: split-K's partial products summed
    (in chunk order) and stored plain (one image, L = N) or NCHW (L = OH*OW), one thread
    per element of C. One launch with two arrays through the driver launch, where CuPy's
    reduction (its host side: type and axis resolution, a reduction plan) and, for the
    NCHW store, a transposed copy made two calls. Host time a call on an H100 (LeNet's
    first weight gradient, results/2026-11-26-NVIDIA-H100-session4*/launch.md): 13.9 /
    7.9 us against CuPy's 29.6 / 17.5."""
    acc_t = _float_type(dtype_name)

    @cuda.jit
    def kernel(P, C):
        idx = cuda.grid(1)
        if idx >= C.size:
            return
        split, m_ = _u32(P.shape[1]), _u32(P.shape[2])
        rows, l_ = _u32(C.shape[1]), _u32(C.shape[2])
        i = _u32(idx)
        t = i // l_
        lcol = i - t * l_
        img = t // rows
        r = t - img * rows
        g = r // m_
        m = r - g * m_
        col = img * l_ + lcol
        acc = acc_t(0.0)
        for s in range(split):
            acc += P[_U(g), _U(s), _U(m), _U(col)]
        C[_U(img), _U(r), _U(lcol)] = acc

    return kernel


# -- launch plans ----------------------------------------------------------------------------
# A training step calls each op with the same shapes at every step, and a small step is
# bound by the host's work: on an H100 kernels.cuda.matmul cost 26.3 us a call at 64^3, of
# which its launch 9.9 (results/2026-11-26-NVIDIA-H100-session4-after/launch.md); the rest
# is checks, choices (kernel, tile, split-K) and describing the arguments, the same at
# every step. So the first call of an op on given shapes, strides and dtypes does all of
# it and keeps what it launched as a replay (_launch_gemm's, over BoundLaunch); a later call
# with the same (and the same module settings: _settings) allocates its output and
# replays, reading only the arrays' addresses. Where a launch did not go through the
# driver (the simulator, TINYGRAD_K_CUDA_LAUNCH=numba) nothing is kept. A plan is made
# only where the op hands its inputs to the kernel as they are (C-contiguous); the key
# holds their strides, so a later input with the key's strides is contiguous too.
_plans = {}
_PLANS_KEPT = 512  # emptied when full: shapes that vary without end cannot grow it


def _NOTHING(*arrays):
    """The replay of a launch that had nothing to compute (an empty product)."""


def _bind(launch, *args):
    """``launch`` kept ready to repeat on other arrays (_cuda_launch.BoundLaunch), or None
    where it is not a driver launch."""
    if isinstance(launch, _cuda_launch.DirectLauncher):
        return launch.bind(*args)
    return None


def _settings():
    """The module settings a launch plan depends on besides its operands (tests and the
    GPU benchmarks change them in place)."""
    return (tuple(_tile), _A_PAD, _DOUBLE_BUFFER, _WARP_LAYOUT, _MAX_REGISTERS, _GRID_YZ_MAX,
            _SPLIT_BLOCKS_PER_SM, _SPLIT_MIN_K, _WIDE_BLOCKS_PER_SM, _wide_tile["bm"],
            _wide_tile["bn"], _wide_kernel[0], _conv_kernel[0], _CONV_C_MIN_ROWS,
            _DIRECT_MAX_ROWS, cuda_tf32.tf32_allowed())


def _keep_plan(plans, key, replay, shape, dtype, xp, pick):
    """Keep in ``plans`` under ``key``: allocate ``shape`` of ``dtype``, then ``replay``
    the launches on the kernel's inputs, ``pick(*the op's inputs)``, and the new output.
    A None replay keeps nothing."""
    if replay is None:
        return
    empty = xp.empty

    def plan(*inputs):
        out = empty(shape, dtype=dtype)
        replay(*pick(*inputs), out)
        return out

    _keep(plans, key, plan)


def _keep(plans, key, plan):
    if len(plans) >= _PLANS_KEPT:
        plans.clear()
    plans[key] = plan


def _same(*arrays):
    return arrays


def _swapped(a, b):
    return b, a


# -- matmul ----------------------------------------------------------------------------------
# Large products run on the wide kernel: the GEMM ladder's rung 5 (kernels/cuda_gemm.py) at
# a 128x128 block tile, 8x8 per thread, warp-tiled, double-buffered, transposes read in
# place. On an H200 (2026-11-26) it took 4096^3 in 4.04 ms, the 64x64 kernel above in
# 7.86 (cuBLAS 2.72). It has 4x fewer blocks than the 64x64 tile, so it is used only where
# its grid still holds _WIDE_BLOCKS_PER_SM blocks per multiprocessor (2 fit at 126
# registers); smaller products, and those split-K helps, stay on the 64x64 kernel.
WIDE_TILE = {"bm": 128, "bn": 128, "bk": 8, "tm": 8, "tn": 8, "pad": 4, "warp": 32, "ln": 4,
             "unroll": 1, "group": 1}
_wide_tile = dict(WIDE_TILE)  # tests set small ones (set_wide_tile)
# what the GPU sweep times beside WIDE_TILE (changes to it): unrolling the K-step 2 or 4
# rank-1 updates per trip (instr/FMA 1.43 -> 1.40 / 1.37 on sm_90, 124 -> 127 registers),
# grouped block order for L2 reuse of the operand panels (group 8: 8 block rows per column),
# other warp shapes (ln lanes along N: 4x8 and 16x2 instead of 8x4) and no A padding.
# H100, 2026-11-26 (benchmarks/results/2026-11-26-NVIDIA-H100-session3/sweep.md): none
# beat WIDE_TILE (3.94 ms at 4096^3, 68% of cuBLAS FP32; unrolling 4.07-4.28, group 8
# 4.00, warp 4x8 4.63, 16x2 3.98, no pad 3.97)
WIDE_CANDIDATES = ({}, {"unroll": 2}, {"unroll": 4}, {"group": 8}, {"unroll": 4, "group": 8},
                   {"unroll": 2, "group": 8}, {"ln": 8}, {"ln": 2}, {"pad": 0})
_WIDE_BLOCKS_PER_SM = 2       # None: never the wide kernel (the GPU sweep compares)
# which kernel runs the wide products in float32: rung 5 (Numba, measured above) or rung 6
# (kernels/cuda_sgemm.py: the same schedule in CUDA C with 128-bit global loads and 32-bit
# tile indices; 1.26 instead of 1.43 SASS instructions per FMA in the K-loop on sm_90, both
# at <= 128 registers). Measured on an H100 (2026-11-26, benchmarks/results/2026-11-26-
# NVIDIA-H100-session4/ladder.md), 4096^3: rung 6 3.62 ms (74% of cuBLAS FP32), rung 5
# 3.96 ms (68%): rung 6 is the default. float64 always takes rung 5. Since then rung 6 has
# an exact twin for whole aligned tiles (no bounds tests: 1.18 instead of 1.28 SASS
# instructions per FMA for NN, which 4096^3 takes), not yet timed on a GPU.
WIDE_KERNELS = ("double_buffered_warp", "vec4_cuda_c")
_wide_kernel = ["vec4_cuda_c"]


def set_wide_tile(**params):
    """Change the wide kernel's configuration (keys of WIDE_TILE; tests use small ones),
    validated here: BM*BK == BK*BN == 4 * threads, a warp layout that tiles the threads."""
    unknown = set(params) - set(WIDE_TILE)
    if unknown:
        raise ValueError(f"set_wide_tile: no parameter(s) {sorted(unknown)}; expected some of "
                         f"{sorted(WIDE_TILE)}")
    _ladder.check_dbuf_config("set_wide_tile", {**_wide_tile, **params})
    _wide_tile.update(params)


def set_wide_kernel(name):
    """Choose the kernel of the wide float32 products: one of WIDE_KERNELS."""
    if name not in WIDE_KERNELS:
        raise ValueError(f"set_wide_kernel: unknown kernel {name!r}; expected one of "
                         f"{list(WIDE_KERNELS)}")
    _wide_kernel[0] = name


def _use_wide(m, n, nb):
    """Whether an (nb, m, n) product runs on the wide kernel (see WIDE_TILE)."""
    if _WIDE_BLOCKS_PER_SM is None:
        return False
    gy = -(-m // _wide_tile["bm"])
    blocks = -(-n // _wide_tile["bn"]) * gy * nb
    return blocks >= _WIDE_BLOCKS_PER_SM * _sm_count() and gy <= _GRID_YZ_MAX and \
        nb <= _GRID_YZ_MAX


def matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) for 2-D or equal-batch 3-D arrays; transposes are read in place.
    Large products run on the wide kernel (WIDE_TILE), the others on the 64x64 one."""
    return _matmul(a, b, trans_a, trans_b, wide=True)


def matmul_regblock2d(a, b, trans_a=False, trans_b=False):
    """matmul on the 64x64 register-blocked kernel at every size (the ladder's rung 3)."""
    return _matmul(a, b, trans_a, trans_b, wide=False)


def _matmul(a, b, trans_a, trans_b, wide):
    key = ("matmul", a.shape, a.strides, a.dtype, b.shape, b.strides, b.dtype, trans_a, trans_b,
           wide, _settings())
    plan = _plans.get(key)
    if plan is not None:
        return plan(a, b)
    m, k, n = check_matmul(a, b, trans_a, trans_b)
    check_float("matmul", a, b)
    xp = _xp(a)
    if a.dtype == np.float32 and b.dtype == np.float32 and not _simulating():
        if cuda_tf32.tf32_allowed():  # the user opted in (backends.cuda.matmul.allow_tf32)
            return cuda_tf32.matmul(a, b, trans_a, trans_b)
    squeeze = a.ndim == 2
    A = a[None] if squeeze else a
    B = b[None] if squeeze else b
    # a 2-D product is returned as the array that owns its memory, not as C[0]: the
    # autograd engine hands an owned gradient to .grad as it is and copies a view (a copy
    # per weight and step, measured on an H100: benchmarks/results/2026-11-26-NVIDIA-H100-
    # session4/profile-lenet5-256.md)
    nb = A.shape[0]
    wide = wide and _use_wide(m, n, nb)
    if (wide and _wide_kernel[0] == "vec4_cuda_c" and a.dtype == np.float32
            and b.dtype == np.float32 and not _simulating()):  # (no CuPy kernel in the simulator)
        return cuda_sgemm.matmul(a, b, trans_a, trans_b)
    out = xp.empty((m, n) if squeeze else (nb, m, n), dtype=a.dtype)
    C = out[None] if squeeze else out
    if wide:
        _ladder.launch_dbuf("matmul", A, B, C, m, n, k, trans_a, trans_b, _wide_tile,
                            None if _simulating() else _launch_config)
        return out
    modes = (_PLAIN_T if trans_a else _PLAIN, _PLAIN_T if trans_b else _PLAIN, _OUT_PLAIN)
    if m <= _GRID_YZ_MAX * _tile[0] and nb <= _GRID_YZ_MAX:
        replay = _launch_gemm(*modes, A, B, C, m, n, k, nb, (0,) * 8, a.dtype)
        _keep_plan(_plans, key, replay, out.shape, out.dtype, xp, _same)  # (a, b: A's, B's data)
        return out
    # past the grid's 65535 row blocks or batches (a Linear over millions of rows, a bmm
    # over a huge batch) the product runs in slices, each copied to a contiguous array
    # (the kernels are compiled for those; these copies are small beside the product)
    for b0, b1, r0, r1 in gemm_slices(nb, m, _tile[0], _GRID_YZ_MAX):
        Ab = xp.ascontiguousarray(A[b0:b1, :, r0:r1] if trans_a else A[b0:b1, r0:r1])
        Cb = xp.empty((b1 - b0, r1 - r0, n), dtype=a.dtype)
        _launch_gemm(*modes, Ab, B[b0:b1], Cb, r1 - r0, n, k, b1 - b0, (0,) * 8, a.dtype)
        C[b0:b1, r0:r1] = Cb
    return out


# -- convolution ------------------------------------------------------------------------------
def _conv_args(op, geo, n, c, oh, ow, kg, og):
    """(run-time sizes, compile-time window) of a ConvGeometry for the GEMM factory: geo =
    (L, OW, KG, OG, mL, pL, mOW, pOW) and conv = (KH, KW, SH, SW, PH, PW, DH, DW). The
    loaders split indices with 32-bit divisions (_magic: below 2**31), so the im2col
    matrix's row and column counts must fit."""
    if n * oh * ow >= 2 ** 31 or c * geo.kernel_size[0] * geo.kernel_size[1] >= 2 ** 31:
        raise ValueError(f"{op}: the implicit GEMM's im2col matrix ({c} channels x "
                         f"{geo.kernel_size} window, {n} x {oh} x {ow} outputs) has a side of "
                         "2**31 or more, which its 32-bit indices cannot address")
    return ((oh * ow, ow, kg, og) + _magic(max(1, oh * ow)) + _magic(max(1, ow)),
            geo.kernel_size + geo.stride + geo.padding + geo.dilation)


# Which kernels run the float32 convolutions (forward, input and weight gradients): the
# 64x64 implicit GEMM above (Numba; measured: 0.29-0.52x cuDNN forward on an H100) or
# kernels/cuda_sgemm.py's CUDA C implicit GEMM on the 128x128 schedule of GEMM rung 6
# (1.38-1.40 instead of 2.30 SASS instructions per FMA in the K-loop on sm_90, the weight
# gradient 1.62 instead of 2.85; split-K on every pass by the same _split_k rule; <= 128
# registers, no spills; a 64x128 tile for GEMMs of at most 64 rows).
#
# Measured on an H100 (2026-11-26, results/2026-11-26-NVIDIA-H100-session4/conv.md), the
# CUDA C passes beat the Numba ones on every ResNet-18 layer (GEMMs of 64 to 512 rows)
# except 512@4 and 256@8, where the CUDA C forward pass and input gradient ran without
# split-K on 32 and 64 blocks for 132 SMs (they split now); they lost LeNet-5's step
# (train.md: 3.17 against 2.23 ms), whose GEMMs have 6 and 16 rows: a 64-row tile is
# mostly zeros there and the Numba kernel's 64x64 tile wastes less. So "auto" (the
# default) takes the CUDA C kernel for a GEMM of at least _CONV_C_MIN_ROWS rows (output
# channels for the forward pass and weight gradient, input channels for the input
# gradient, per group) and the Numba one below; the other two names force one family.
#
# Below the GEMMs, "auto" gives the forward pass of at most _DIRECT_MAX_ROWS output
# channels, and the stride-1 input gradient of at most that many input channels, to the
# direct kernel of kernels/cuda_direct.py (one group; a thread per result pixel and all
# its channels): the 64-row tiles were mostly zeros there (the ResNet stem's input
# gradient, 3 rows: 0.18x cuDNN, results/2026-11-26-NVIDIA-H100-session5/conv.md), and
# the input gradient made a transposed copy of the weights per call.
CONV_KERNELS = ("auto", "implicit_gemm_64", "cuda_c_128")
_conv_kernel = ["auto"]
_CONV_C_MIN_ROWS = 64
_DIRECT_MAX_ROWS = cuda_direct.MAX_ROWS  # (a module global: 0 turns the direct kernel off)


def set_conv_kernel(name):
    """Choose the kernel of the float32 convolutions (forward pass, input and weight
    gradients): one of CONV_KERNELS."""
    if name not in CONV_KERNELS:
        raise ValueError(f"set_conv_kernel: unknown kernel {name!r}; expected one of "
                         f"{list(CONV_KERNELS)}")
    _conv_kernel[0] = name


def _conv_c(op, arrays, x_shape, y_shape, geo, rows):
    """Whether this convolution, a GEMM of ``rows`` rows per group, goes to the CUDA C
    kernel (set_conv_kernel; "auto": at least _CONV_C_MIN_ROWS rows)."""
    choice = _conv_kernel[0]
    return ((choice == "cuda_c_128" or (choice == "auto" and rows >= _CONV_C_MIN_ROWS))
            and not _simulating() and all(a.dtype == np.float32 for a in arrays)
            and cuda_sgemm.conv_fits(op, x_shape, y_shape, geo) is None)


def _conv_direct(op, src, w, out_shape, geo, dgrad):
    """Whether this pass (src: x, or dy for the input gradient; out_shape: y's or dx's)
    goes to the direct kernel: "auto", float32, at most _DIRECT_MAX_ROWS result channels
    and what cuda_direct.fits takes (one group, stride 1 for the input gradient)."""
    return (_conv_kernel[0] == "auto" and out_shape[1] <= _DIRECT_MAX_ROWS
            and not _simulating() and src.dtype == np.float32 and w.dtype == np.float32
            and cuda_direct.fits(op, src.shape, w.shape, out_shape, geo, dgrad) is None)


def _direct_pass(src, w, out_shape, geo, dgrad, key):
    """The direct kernel's pass; with contiguous operands its launch plan is kept under
    ``key`` (the pass then costs one allocation and the launch)."""
    xp = _xp(src)
    srcc, wc = xp.ascontiguousarray(src), xp.ascontiguousarray(w)
    planned = cuda_direct.plan(srcc.shape, wc.shape, tuple(out_shape), geo, dgrad)
    out = cuda_direct.run(planned, srcc, wc)
    if srcc is src and wc is w and _direct_launches():
        _keep(geometry_memo(geo, "_cuda_plans"), key,
              lambda src, w: cuda_direct.run(planned, src, w))
    return out


def _splitk_sum(P, C):
    """cuda_sgemm's ``summed``: split-K's partial products P (G, split, M, NB*L) added up
    into C (NB, G*M, L) by _splitk_sum_kernel, one launch."""
    if C.size:
        _launch(_splitk_sum_kernel(dtype_name(C.dtype)), C.size)(P, C)


def _conv_c_split(m, n_, k, groups):
    """(split, kchunk) of a CUDA C convolution GEMM of m x n_ over k per group: _split_k's
    rule for its grid of blocks (64 or 128 rows: cuda_sgemm.conv_bm)."""
    blocks = -(-m // cuda_sgemm.conv_bm(m)) * -(-n_ // cuda_sgemm.BN)
    return _split_k(blocks, k, groups, cuda_sgemm.BK, _sm_count())


def _conv_c_forward(x, w, geo, dgrad_shape=None, key=None):
    """The forward pass (x, w) or, with dgrad_shape (x's shape), the input gradient
    (x = dy) on the CUDA C kernel, split-K as _conv_c_split decides; with ``key`` (the
    default route's) its launch plan is kept (_keep_conv_c_plan)."""
    dgrad = dgrad_shape is not None
    plan = cuda_sgemm.conv_plan(dgrad, dgrad_shape if dgrad else x.shape, w.shape, geo)
    split, kchunk = _conv_c_split(plan[0], plan[1], plan[2], geo.groups)
    if dgrad:
        out = cuda_sgemm.conv2d_backward_input(x, w, dgrad_shape, geo, split=split,
                                               kchunk=kchunk, summed=_splitk_sum)
    else:
        out = cuda_sgemm.conv2d_forward(x, w, geo, split=split, kchunk=kchunk,
                                        summed=_splitk_sum)
    if key is not None:
        _keep_conv_c_plan(geo, key, dgrad, plan, split, kchunk, x, w, out)
    return out


def _conv_c_weight(dy, x, w_shape, geo, out, key=None):
    """The weight gradient on the CUDA C kernel, K (the pixels) split as _conv_c_split
    decides; with ``key`` its launch plan is kept (_keep_wgrad_c_plan)."""
    g = geo.groups
    m, n_ = out[1] // g, w_shape[1] * w_shape[2] * w_shape[3]
    split, kchunk = _conv_c_split(m, n_, out[0] * out[2] * out[3], g)
    dw = cuda_sgemm.conv2d_backward_weight(dy, x, w_shape, geo, split=split, kchunk=kchunk,
                                           summed=_splitk_sum)
    if key is not None:
        _keep_wgrad_c_plan(geo, key, dy, x, w_shape, split, kchunk, dw)
    return dw


# The CUDA C passes' launch plans: the kernel through _cuda_launch.RawBound (its 13 ints
# packed once), split-K's sum as a bound launch, fresh outputs (and partial products) a
# call. The ints hold vector flags worked out for 16-byte aligned operands (what CuPy's
# allocations are); the operand a plan reads in 4-vectors is checked at every replay, and
# a misaligned one takes the full path (the plan answers None).
def _direct_launches():
    return _cuda_launch.use_direct_launch() and not _simulating()


def _splitk_sum_bound(xp, p_shape, out3):
    """split-K's sum (_splitk_sum) of partial products of p_shape into out3, bound."""
    return _bind(_launch(_splitk_sum_kernel(dtype_name(out3.dtype)), out3.size),
                 xp.empty(p_shape, dtype=out3.dtype), out3)


def _keep_conv_c_plan(geo, key, dgrad, plan, split, kchunk, src, w, out):
    """Keep the replay of the CUDA C forward pass or input gradient that made ``out``
    (src: x or dy, read as it is: contiguous)."""
    S = cuda_sgemm
    if not (_direct_launches() and c_contiguous(src) and c_contiguous(w)):
        return
    g, (M, N) = geo.groups, plan[:2]
    grid, ints, bm = S.conv_args(plan, g, 0, 0, None, split, kchunk)  # (0: aligned)
    if not all(grid):
        return
    xp = _xp(out)
    conv = _cuda_launch.RawBound(S.conv_function(geo, dgrad, bm).kernel.ptr, grid,
                                 (S.THREADS,), 3, "i" * len(ints), ints)
    shape, p_shape, vec_a = out.shape, (g, split, M, N), ints[5]
    total = None
    if split > 1:
        total = _splitk_sum_bound(xp, p_shape, out.reshape(shape[0], shape[1], -1))
        if total is None:
            return

    def run(src, w):
        A = S.conv_weights(w, geo, True, xp) if dgrad else w  # (forward: w as stored)
        if vec_a and A.data.ptr % 16:
            return None
        y = xp.empty(shape, dtype=np.float32)
        if total is None:
            conv(A, src, y)
        else:
            P = xp.empty(p_shape, dtype=np.float32)
            conv(A, src, P)
            total(P, y)
        return y

    _keep(geometry_memo(geo, "_cuda_plans"), key, run)


def _keep_wgrad_c_plan(geo, key, dy, x, w_shape, split, kchunk, dw):
    """Keep the replay of the CUDA C weight gradient that made ``dw``."""
    S = cuda_sgemm
    if not (_direct_launches() and c_contiguous(dy) and c_contiguous(x)):
        return
    grid, ints, p_shape, bm = S.wgrad_plan(x.shape, dy.shape, w_shape, geo, split, kchunk)
    ints = S.wgrad_aligned(ints, 0, 0)  # (aligned dy and P)
    if not all(grid) or dy.shape[0] == 0:
        return
    xp = _xp(dw)
    conv = _cuda_launch.RawBound(S.wgrad_function(geo, bm).kernel.ptr, grid, (S.THREADS,), 3,
                                 "i" * len(ints), ints)
    g, vec_a = geo.groups, ints[5]
    parts = (g, p_shape[0] // g, p_shape[1], p_shape[2])
    total = None
    if parts[1] > 1:
        total = _splitk_sum_bound(xp, parts, dw.reshape(1, w_shape[0], p_shape[2]))
        if total is None:
            return

    def run(dy, x):
        if vec_a and dy.data.ptr % 16:
            return None
        if total is None:  # (dW's memory itself, in its shape: see cuda_sgemm)
            dw = xp.empty(w_shape, dtype=np.float32)
            conv(dy, x, dw)
            return dw
        P = xp.empty(p_shape, dtype=np.float32)
        conv(dy, x, P)
        out = xp.empty(w_shape, dtype=np.float32)
        total(P, out)
        return out

    _keep(geometry_memo(geo, "_cuda_plans"), key, run)


def _conv_key(kind, a, b, shape=()):
    """A convolution pass's plan key: its two arrays' shapes, strides and dtypes, the shape
    argument (x's or w's, for the gradients) and the module settings."""
    return (kind, a.shape, a.strides, a.dtype, b.shape, b.strides, b.dtype,
            shape if type(shape) is tuple else tuple(shape), _settings())


def _geo_plan(geo, key):
    """The plan kept on the geometry under ``key`` (geometry_memo(geo, "_cuda_plans"))."""
    plans = geo.__dict__.get("_cuda_plans")
    return None if plans is None else plans.get(key)


def conv2d_forward(x, w, stride=1, padding=0, dilation=1, groups=1):
    """Implicit GEMM per group g: y[n, g*OG + o, l] = sum_k W2[g, o, k] * im2col(x)[g*KG + k, n*L + l]."""
    geo = as_conv_geometry(stride, padding, dilation, groups, w.shape, "conv2d_forward")
    key = _conv_key("fwd", x, w)
    plan = _geo_plan(geo, key)
    y = None if plan is None else plan(x, w)
    if y is not None:
        return y
    check_float("conv2d_forward", x, w)
    n, o, oh, ow = geo.output_shape(x.shape, w.shape, "conv2d_forward")
    if _conv_direct("conv2d_forward", x, w, (n, o, oh, ow), geo, False):
        return _direct_pass(x, w, (n, o, oh, ow), geo, False, key)
    if _conv_c("conv2d_forward", (x, w), x.shape, (n, o, oh, ow), geo, o // geo.groups):
        return _conv_c_forward(x, w, geo, key=key)
    xp = _xp(x)
    g = geo.groups
    kg, L = w.shape[1] * w.shape[2] * w.shape[3], oh * ow
    y = xp.empty((n, o, L), dtype=x.dtype)
    if n:
        wc, xc = xp.ascontiguousarray(w), xp.ascontiguousarray(x)
        sizes, conv = _conv_args("conv2d_forward", geo, n, x.shape[1], oh, ow, kg, o // g)
        replay = _launch_gemm(_PLAIN, _IM2COL, _OUT_NCHW, wc.reshape(g, o // g, kg), xc, y,
                              o // g, n * L, kg, g, sizes, x.dtype, conv)
        if wc is w and xc is x:  # (the kernel reads the inputs as they are)
            _keep_plan(geometry_memo(geo, "_cuda_plans"), key, replay, (n, o, oh, ow), y.dtype,
                       xp, _swapped)
    return y.reshape(n, o, oh, ow)


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1):
    """dW2[g, o, k] = sum_{n,l} dy[n, g*OG + o, l] * im2col(x)[g*KG + k, n*L + l] (implicit
    GEMM per group)."""
    geo = as_conv_geometry(stride, padding, dilation, groups, w_shape, "conv2d_backward_weight")
    key = _conv_key("wgrad", dy, x, w_shape)
    plan = _geo_plan(geo, key)
    dw = None if plan is None else plan(dy, x)
    if dw is not None:
        return dw
    check_float("conv2d_backward_weight", dy, x)
    out = geo.output_shape(x.shape, w_shape, "conv2d_backward_weight")
    check_dy("conv2d_backward_weight", dy, out)
    if _conv_c("conv2d_backward_weight", (dy, x), x.shape, out, geo, out[1] // geo.groups):
        return _conv_c_weight(dy, x, w_shape, geo, out, key)
    xp = _xp(x)
    n, o, oh, ow = out
    g = geo.groups
    kg, L = w_shape[1] * w_shape[2] * w_shape[3], oh * ow
    dw = xp.empty(tuple(w_shape), dtype=x.dtype)  # (owning its memory: see _matmul)
    sizes, conv = _conv_args("conv2d_backward_weight", geo, n, x.shape[1], oh, ow, kg, o // g)
    dyc, xc = xp.ascontiguousarray(dy), xp.ascontiguousarray(x)
    replay = _launch_gemm(_DY_ONL, _IM2COL_T, _OUT_PLAIN, dyc.reshape(n, o, L), xc,
                          dw.reshape(g, o // g, kg), o // g, kg, n * L, g, sizes, x.dtype, conv)
    if dyc is dy and xc is x:
        _keep_plan(geometry_memo(geo, "_cuda_plans"), key, replay, dw.shape, dw.dtype, xp,
                   _same)
    return dw


@cuda.jit(device=True, inline=True)
def _nchw(idx, shape):
    """Flat index -> (n, c, h, w) of an NCHW array of ``shape`` (one thread per element),
    in 32-bit unsigned divisions (a signed 64-bit one is a called subroutine; _launch
    checks the element count fits)."""
    i = _u32(idx)
    w_ = _u32(shape[3])
    h_ = _u32(shape[2])
    c_ = _u32(shape[1])
    t = i // w_
    x = i - t * w_
    u = t // h_
    y = t - u * h_
    n = u // c_
    return int64(n), int64(u - n * c_), int64(y), int64(x)


@cuda.jit(device=True, inline=True)
def _tap_output(x, p, stride, pad, dil, size):
    """The output index i whose window puts tap p on input index x (i*stride + p*dil - pad
    == x), or -1 where there is none in [0, size): the input gradient's gathers. With the
    window's numbers compile-time constants of the caller, the division is a multiply."""
    t = x + pad - p * dil
    if t < 0 or t % stride != 0:
        return -1
    i = t // stride
    return i if i < size else -1


@functools.lru_cache(maxsize=None)
def _conv_dx_kernel(sh, sw, ph, pw, dh, dw, dtype_name="float32"):
    """The input-gradient kernel for one stride/padding/dilation and dtype, baked in as
    compile-time constants: it is launched with its three arrays only (see _launch)."""
    acc_t = _float_type(dtype_name)

    @cuda.jit
    def kernel(dy, w, dx):
        idx = cuda.grid(1)
        if idx >= dx.size:
            return
        n, ch, x_h, x_w = _nchw(idx, dx.shape)
        o_, cg, kh, kw = w.shape
        og = int64(_u32(o_) // (_u32(dx.shape[1]) // _u32(cg)))  # (32-bit: see _nchw)
        grp = int64(_u32(ch) // _u32(cg))
        oh, ow = dy.shape[2], dy.shape[3]
        acc = acc_t(0.0)
        for p in range(kh):
            i = _tap_output(x_h, p, sh, ph, dh, oh)
            if i < 0:
                continue
            for q in range(kw):
                j = _tap_output(x_w, q, sw, pw, dw, ow)
                if j < 0:
                    continue
                for o in range(grp * og, grp * og + og):
                    acc += dy[n, o, i, j] * w[o, ch - grp * cg, p, q]
        dx[n, ch, x_h, x_w] = acc

    return kernel


def _conv_dx_checked(dy, w, x_shape, stride, padding, dilation, groups):
    check_float("conv2d_backward_input", dy, w)
    geo = as_conv_geometry(stride, padding, dilation, groups, w.shape, "conv2d_backward_input")
    out = geo.output_shape(x_shape, w.shape, "conv2d_backward_input")
    check_dy("conv2d_backward_input", dy, out)
    return geo


def _conv_dx_direct(dy, w, x_shape, geo):
    xp = _xp(dy)
    dx = xp.empty(tuple(x_shape), dtype=dy.dtype)
    _launch(_conv_dx_kernel(*geo.stride, *geo.padding, *geo.dilation, dtype_name(dy.dtype)),
            dx.size)(
        xp.ascontiguousarray(dy), xp.ascontiguousarray(w), dx)
    return dx


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1):
    """dx[n,c,h,w] = sum over o in c's group and taps (p, q) with h + ph - p*dh = i*sh,
    w + pw - q*dw = j*sw of dy[n,o,i,j] w[o,c',p,q].

    An implicit GEMM per group g, as the forward pass (about 2.3 instructions per FMA on
    sm_90, against ~50 for the direct kernel's two loads and index arithmetic per FMA):

        dx2[g, c, (n,h,w)] = sum_(o,p,q) Wt[g, c, (o,p,q)] * D[g, (o,p,q), (n,h,w)],
        Wt[g, c, (o,p,q)] = W[g*Og + o, c, p, q],
        D[g, (o,p,q), (n,h,w)] = dy[n, g*Og + o, i, j] where (i, j) exists, else 0.

    With stride S only 1/S^2 of D is not zero, products the GEMM would still make: a
    strided convolution of one group goes to _conv_dx_col2im instead (a dense GEMM with
    1/S^2 of the FMAs, then a gather). Both, and the direct kernel (one thread per dx
    element), are runnable by name: ``VERSIONS["conv2d_backward_input"]``.
    A stride-1 gradient of at most _DIRECT_MAX_ROWS input channels and one group goes to
    kernels/cuda_direct.py (a thread per dx pixel and all its channels), as "auto" says."""
    geo = as_conv_geometry(stride, padding, dilation, groups, w.shape, "conv2d_backward_input")
    key = _conv_key("dgrad", dy, w, x_shape)
    plan = _geo_plan(geo, key)
    dx = None if plan is None else plan(dy, w)
    if dx is not None:
        return dx
    geo = _conv_dx_checked(dy, w, x_shape, geo, None, None, None)
    if _conv_direct("conv2d_backward_input", dy, w, tuple(x_shape), geo, True):
        return _direct_pass(dy, w, tuple(x_shape), geo, True, key)
    if geo.groups == 1 and geo.stride != (1, 1):
        return _conv_dx_col2im(dy, w, x_shape, geo)
    return _conv_dx_implicit(dy, w, x_shape, geo, key)


def _conv_dx_implicit(dy, w, x_shape, geo, key=None):
    """The input gradient as the implicit GEMM of conv2d_backward_input's docstring (on the
    CUDA C kernel where set_conv_kernel asks); with ``key`` (the default route's) its
    launch plan is kept."""
    if _conv_c("conv2d_backward_input", (dy, w), tuple(x_shape), dy.shape, geo, w.shape[1]):
        return _conv_c_forward(dy, w, geo, tuple(x_shape), key)
    xp = _xp(dy)
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    g = geo.groups
    dx = xp.empty((n, c, h * wd), dtype=dy.dtype)
    if n:
        kg = (o // g) * kh * kw

        def transposed(w):  # Wt[g, c, (o, p, q)] = w[g*OG + o, c, p, q], contiguous
            return xp.ascontiguousarray(w.reshape(g, o // g, cg, kh * kw).transpose(
                0, 2, 1, 3)).reshape(g, cg, kg)

        sizes, conv = _conv_args("conv2d_backward_input", geo, n, o, h, wd, kg, cg)
        dyc = xp.ascontiguousarray(dy)
        replay = _launch_gemm(_PLAIN, _DY_TAPS, _OUT_NCHW, transposed(w), dyc, dx, cg,
                              n * h * wd, kg, g, sizes, dy.dtype, conv)
        if key is not None and dyc is dy:
            _keep_plan(geometry_memo(geo, "_cuda_plans"), key, replay, tuple(x_shape), dx.dtype,
                       xp, lambda dy, w: (transposed(w), dy))
    return dx.reshape(tuple(x_shape))


def _conv2d_backward_input_direct(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1):
    """conv2d_backward_input, always the direct kernel."""
    return _conv_dx_direct(dy, w, x_shape,
                           _conv_dx_checked(dy, w, x_shape, stride, padding, dilation, groups))


def _conv2d_backward_input_implicit(dy, w, x_shape, stride=1, padding=0, dilation=1,
                                    groups=1):
    """conv2d_backward_input, always the implicit GEMM (strided ones too)."""
    return _conv_dx_implicit(dy, w, x_shape,
                             _conv_dx_checked(dy, w, x_shape, stride, padding, dilation, groups))


def _conv2d_backward_input_col2im(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1):
    """conv2d_backward_input, always the dense GEMM and gather (unstrided ones too)."""
    return _conv_dx_col2im(dy, w, x_shape,
                           _conv_dx_checked(dy, w, x_shape, stride, padding, dilation, groups))


def _conv_dx_col2im(dy, w, x_shape, geo):
    """The input gradient as a dense GEMM per group and a gather (Caffe's col2im, gathered):

        cols[g, (c, p, q), (n, i, j)] = sum_o W[g*Og + o, c, p, q] * dy[n, g*Og + o, i, j]
        dx[n, g*Cg + c, h, w] = sum of cols[g, (c, p, q), (n, i, j)] over the taps (p, q)
                                with i*SH + p*DH - PH = h and j*SW + q*DW - PW = w.

    The GEMM makes C*KH*KW x N*OH*OW x O products, against C x N*H*W x O*KH*KW for the
    implicit GEMM: 1/(SH*SW) of them, since the implicit one multiplies every tap of
    every dx pixel and only those on dy's stride grid are not zero (at ResNet's stride 2,
    a quarter). It costs a transposed copy of dy, (O, N*OH*OW), and the cols buffer,
    C*KH*KW x N*OH*OW floats, written once and read once by the gather; each dx element
    reads at most KH*KW of them."""
    xp = _xp(dy)
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    g = geo.groups
    oh, ow = dy.shape[2], dy.shape[3]
    dx = xp.empty(tuple(x_shape), dtype=dy.dtype)
    if dx.size == 0:
        return dx
    if n * oh * ow == 0 or o == 0:
        dx[...] = 0
        return dx
    dy = xp.ascontiguousarray(dy).reshape(n, o, oh * ow)
    wt = xp.ascontiguousarray(w).reshape(g, o // g, cg * kh * kw)
    gather = _col2im_kernel(*geo.kernel_size, *geo.stride, *geo.padding, *geo.dilation,
                            dtype_name(dy.dtype))
    # images per pass: cols stays under _COL2IM_BYTES (an ImageNet-sized batch would
    # otherwise ask for gigabytes)
    per = max(1, _COL2IM_BYTES // (c * kh * kw * oh * ow * dy.itemsize))
    for b0 in range(0, n, per):
        b1 = min(n, b0 + per)
        dyt = xp.ascontiguousarray(dy[b0:b1].transpose(1, 0, 2)).reshape(
            g, o // g, (b1 - b0) * oh * ow)
        cols = matmul(wt, dyt, trans_a=True)
        _launch(gather, (b1 - b0) * c * h * wd)(cols.reshape(c * kh * kw, b1 - b0, oh, ow),
                                                dx[b0:b1])
    return dx


_COL2IM_BYTES = 1 << 28  # the largest cols buffer of _conv_dx_col2im (256 MiB)


@functools.lru_cache(maxsize=None)
def _col2im_kernel(kh, kw, sh, sw, ph, pw, dh, dw, dtype_name="float32"):
    """The gather of _conv_dx_col2im for one window, baked in as compile-time constants
    (the launch passes its two arrays only): one thread per dx element (n, ch, h, w) adds
    cols[(ch*KH + p)*KW + q, n, i, j] over its taps on dy's stride grid, as the direct
    kernel finds them."""
    acc_t = _float_type(dtype_name)

    @cuda.jit
    def kernel(cols, dx):
        idx = cuda.grid(1)
        if idx >= dx.size:
            return
        n, ch, x_h, x_w = _nchw(idx, dx.shape)
        oh, ow = cols.shape[2], cols.shape[3]
        acc = acc_t(0.0)
        for p in range(kh):
            i = _tap_output(x_h, p, sh, ph, dh, oh)
            if i < 0:
                continue
            for q in range(kw):
                j = _tap_output(x_w, q, sw, pw, dw, ow)
                if j < 0:
                    continue
                acc += cols[_U((ch * kh + p) * kw + q), _U(n), _U(i), _U(j)]
        dx[_U(n), _U(ch), _U(x_h), _U(x_w)] = acc

    return kernel


# -- pooling ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _pool_kernels(kh, kw, sh, sw, ph, pw, dh=1, dw=1, dtype_name="float32"):
    """(max_fwd, max_bwd, avg_fwd, avg_bwd) for one window (kernel, stride, padding,
    dilation) and dtype, baked in as compile-time constants: each launch passes arrays
    only, and the divisions by the stride become divisions by constants."""
    acc_t = _float_type(dtype_name)
    lowest = acc_t(-math.inf)

    @cuda.jit
    def max_fwd(x, y, arg):
        idx = cuda.grid(1)
        if idx >= y.size:
            return
        n, c, i, j = _nchw(idx, y.shape)
        h_, w_ = x.shape[2], x.shape[3]
        best = lowest
        besti = -1
        for p in range(kh):
            hh = i * sh + p * dh - ph
            if hh < 0 or hh >= h_:
                continue
            for q in range(kw):
                ww = j * sw + q * dw - pw
                if ww < 0 or ww >= w_:
                    continue
                v = x[_U(n), _U(c), _U(hh), _U(ww)]
                if besti >= 0 and best != best:
                    continue  # a NaN already won
                if v != v or v > best or besti < 0:
                    best = v
                    besti = hh * w_ + ww
        y[_U(n), _U(c), _U(i), _U(j)] = best
        arg[_U(n), _U(c), _U(i), _U(j)] = besti

    @cuda.jit
    def max_bwd(dy, arg, dx):
        # one thread per input element: gather the windows that chose it (no atomics)
        idx = cuda.grid(1)
        if idx >= dx.size:
            return
        n, c, xh, xw = _nchw(idx, dx.shape)
        w_ = dx.shape[3]
        oh, ow = dy.shape[2], dy.shape[3]
        me = xh * w_ + xw
        acc = acc_t(0.0)
        for p in range(kh):
            t = xh + ph - p * dh
            if t < 0 or t % sh != 0 or t // sh >= oh:
                continue
            i = t // sh
            for q in range(kw):
                u = xw + pw - q * dw
                if u < 0 or u % sw != 0 or u // sw >= ow:
                    continue
                j = u // sw
                if arg[_U(n), _U(c), _U(i), _U(j)] == me:
                    acc += dy[_U(n), _U(c), _U(i), _U(j)]
        dx[_U(n), _U(c), _U(xh), _U(xw)] = acc

    @cuda.jit
    def avg_fwd(x, y, inv):
        idx = cuda.grid(1)
        if idx >= y.size:
            return
        n, c, i, j = _nchw(idx, y.shape)
        h_, w_ = x.shape[2], x.shape[3]
        s = acc_t(0.0)
        for p in range(kh):
            hh = i * sh + p - ph
            if hh < 0 or hh >= h_:
                continue
            for q in range(kw):
                ww = j * sw + q - pw
                if ww >= 0 and ww < w_:
                    s += x[n, c, hh, ww]
        y[n, c, i, j] = s * acc_t(inv[i, j])

    @cuda.jit
    def avg_bwd(dy, dx, inv):
        idx = cuda.grid(1)
        if idx >= dx.size:
            return
        n, c, xh, xw = _nchw(idx, dx.shape)
        oh, ow = dy.shape[2], dy.shape[3]
        acc = acc_t(0.0)
        for p in range(kh):
            t = xh + ph - p
            if t < 0 or t % sh != 0 or t // sh >= oh:
                continue
            for q in range(kw):
                u = xw + pw - q
                if u < 0 or u % sw != 0 or u // sw >= ow:
                    continue
                acc += dy[n, c, t // sh, u // sw] * acc_t(inv[t // sh, u // sw])
        dx[n, c, xh, xw] = acc

    return max_fwd, max_bwd, avg_fwd, avg_bwd


def _blocks(total, threads=128):
    return max(1, math.ceil(total / threads)), threads


@functools.lru_cache(maxsize=4096)
def _launch_config(kernel, blocks, threads):
    """The launcher of ``kernel`` on a GPU: through the driver (kernels._cuda_launch, a
    few us of host time), or numba-cuda's own ``kernel[blocks, threads]`` (about 90 us
    with three CuPy arrays) where TINYGRAD_K_CUDA_LAUNCH=numba or there is no driver
    (Numba's simulator)."""
    if _cuda_launch.use_direct_launch() and not _runtime.simulating():
        return _cuda_launch.DirectLauncher(kernel, blocks, threads)
    return kernel[blocks, threads]


def _launch(kernel, total, threads=128):
    """``kernel[blocks, threads]`` for ``total`` threads, the launcher (_launch_config)
    cached per (kernel, grid): a small training step makes dozens of launches. Not
    under the simulator, whose ``kernel[...]`` reconfigures and returns the kernel
    itself (a cached one would launch with the last grid set)."""
    if total >= 2 ** 32:  # the kernels split flat indices in 32-bit arithmetic (_nchw)
        raise ValueError(f"kernels.cuda: {total} elements in one pooling or convolution "
                         "input-gradient launch; at most 2**32 - 1 are supported")
    if _runtime.simulating():
        return kernel[_blocks(total, threads)]
    return _launch_config(kernel, *_blocks(total, threads))


# Which kernels run float32 max-pooling (forward and the gather backward): the Numba ones
# above (measured on an H100: 18-42% of the bandwidth of a copy of the same bytes, one call
# between events, host time included), or kernels/cuda_pool.py's CUDA C ones: 32-bit index
# arithmetic, the window's taps at constant offsets. SASS instructions on sm_90 at 2x2/2
# (benchmarks.resources): 94 an output forward and about 85 a cell of four elements
# backward (one cell a thread, kernels.cuda_pool.backward_cells), against 256 an output
# and 311 an element here. Measured on an H100 (2026-11-26, results/2026-11-26-NVIDIA-H100-
# session4/pool.md), one call between events: CUDA C 41-51% of the copy bandwidth, Numba
# 17-45%; at ResNet's 3x3/2 backward 0.063 against 0.092 ms. Since then, at batches large
# enough for the GPU's time to show (results/2026-11-27-NVIDIA-H100-session9/pool.md): the
# CUDA C forward 88-99% of the copy, the gradient 97-99%, Numba's 56-84% and 17-19%. The
# CUDA C ones are the default.
POOL_KERNELS = ("numba", "cuda_c")
_pool_kernel = ["cuda_c"]


def set_pool_kernel(name):
    """Choose the kernels of float32 max-pooling (forward and backward): one of POOL_KERNELS."""
    if name not in POOL_KERNELS:
        raise ValueError(f"set_pool_kernel: unknown kernel {name!r}; expected one of "
                         f"{list(POOL_KERNELS)}")
    _pool_kernel[0] = name


def _pool_c(x_shape, y_shape, *arrays):
    """Whether this max-pool goes to the CUDA C kernels (set_pool_kernel)."""
    return (_pool_kernel[0] == "cuda_c" and not _simulating()
            and all(a.dtype == np.float32 for a in arrays) and cuda_pool.fits(x_shape, y_shape))


# A training step pools the same shapes through the same geometry (the layer's) at every
# step, and max-pooling is bound by the host's work at small sizes (results/2026-11-26-
# NVIDIA-H100-session4/launch.md: 22.5 us a CUDA C forward call against 10.1 for its bare
# launch, and more through this module's checks). So the checks and the launch arguments
# are worked out once per (shape, dtype, kernel choice) and kept on the geometry
# (_common.geometry_memo): a call that finds its plan allocates and launches.
def maxpool2d_forward(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    """-> y, argmax (int64 flat h*W + w); only taps inside the input compete, first max
    wins, NaN propagates."""
    geo = as_pool_geometry(kernel, stride, padding, dilation, ceil_mode, "maxpool2d_forward")
    key = (x.shape, x.dtype, _pool_kernel[0], _simulating())
    plans = geo.__dict__.get("_cuda_maxpool_fwd")
    plan = None if plans is None else plans.get(key)
    if plan is None:
        plan = geometry_memo(geo, "_cuda_maxpool_fwd")[key] = _maxpool_fwd_plan(x, geo)
    c_plan, out, kern = plan
    if c_plan is not None:
        return cuda_pool.run_forward(c_plan, x)
    xp = _xp(x)
    y = xp.empty(out, dtype=x.dtype)
    arg = xp.empty(out, dtype=np.int64)
    _launch(kern, y.size)(xp.ascontiguousarray(x), y, arg)
    return y, arg


def _maxpool_fwd_plan(x, geo):
    """(the CUDA C plan or None, y's shape, the Numba kernel or None), after the checks."""
    check_float("maxpool2d_forward", x)
    out = geo.output_shape(x.shape, "maxpool2d_forward")
    if _pool_c(x.shape, out, x):
        return cuda_pool.forward_plan(x.shape, geo), out, None
    return None, out, _pool_kernels(*geo.kernel_size, *geo.stride, *geo.padding,
                                    *geo.dilation, dtype_name(x.dtype))[0]


def maxpool2d_backward(dy, argmax, x_shape, kernel=None, stride=None, padding=0, dilation=1,
                       ceil_mode=False):
    """dx[n,c,h,w] = sum of dy over the windows whose argmax is h*W + w.

    With the window (a PoolGeometry or kernel/stride/...; what the op passes) one thread
    per input element gathers from the windows that can contain it (all threads busy, no
    atomics); without it one thread per (n, c) plane scatters its outputs in order. Both
    are runnable by name: ``VERSIONS["maxpool2d_backward"]``. With the window, the checks
    and the launch are planned once per shape, as maxpool2d_forward's."""
    if kernel is None:
        check_maxpool_backward(dy, argmax, x_shape, None, None, 0, 1, False)
        return _maxpool_bwd_scatter(dy, argmax, x_shape, _xp(dy))
    geo = as_pool_geometry(kernel, stride, padding, dilation, ceil_mode, "maxpool2d_backward")
    key = (dy.shape, argmax.shape, x_shape if type(x_shape) is tuple else tuple(x_shape),
           dy.dtype, argmax.dtype, _pool_kernel[0], _simulating())
    plans = geo.__dict__.get("_cuda_maxpool_bwd")
    plan = None if plans is None else plans.get(key)
    if plan is None:
        check_maxpool_backward(dy, argmax, x_shape, geo, None, 0, 1, False)
        plan = geometry_memo(geo, "_cuda_maxpool_bwd")[key] = _maxpool_bwd_plan(
            dy, argmax, tuple(x_shape), geo)
    c_plan, kern = plan
    if c_plan is not None:
        return cuda_pool.run_backward(c_plan, dy, argmax)
    xp = _xp(dy)
    dx = xp.empty(key[2], dtype=dy.dtype)
    _launch(kern, dx.size)(xp.ascontiguousarray(dy), xp.ascontiguousarray(argmax), dx)
    return dx


def _maxpool_bwd_plan(dy, argmax, x_shape, geo):
    """(the CUDA C plan or None, the Numba gather kernel or None) of a checked backward."""
    if _pool_c(x_shape, dy.shape, dy) and argmax.dtype == np.int64:
        return cuda_pool.backward_plan(x_shape, dy.shape, geo), None
    return None, _pool_kernels(*geo.kernel_size, *geo.stride, *geo.padding, *geo.dilation,
                               dtype_name(dy.dtype))[1]


def _maxpool_backward_scatter(dy, argmax, x_shape, kernel=None, stride=None, padding=0,
                              dilation=1, ceil_mode=False):
    """maxpool2d_backward, always the per-plane scatter (the window only checks dy)."""
    check_maxpool_backward(dy, argmax, x_shape, kernel, stride, padding, dilation, ceil_mode)
    return _maxpool_bwd_scatter(dy, argmax, x_shape, _xp(dy))


@functools.lru_cache(maxsize=None)
def _scatter_kernel():

    @cuda.jit
    def scatter(dy, arg, dx):
        # one thread per (n, c) plane, walking its outputs in order: no write conflicts
        plane = cuda.grid(1)
        n_, c_ = dy.shape[0], dy.shape[1]
        if plane >= n_ * c_:
            return
        n = plane // c_
        c = plane % c_
        for i in range(dy.shape[2]):
            for j in range(dy.shape[3]):
                a = arg[n, c, i, j]
                if a >= 0:  # -1: a window with no tap inside the input, no gradient
                    dx[n, c, a] += dy[n, c, i, j]

    return scatter


def _maxpool_bwd_scatter(dy, argmax, x_shape, xp):
    n, c, h, w = x_shape
    dx = xp.zeros((n, c, h * w), dtype=dy.dtype)
    _launch(_scatter_kernel(), n * c, 64)(xp.ascontiguousarray(dy),
                                           xp.ascontiguousarray(argmax), dx)
    return dx.reshape(tuple(x_shape))


_inverse_divisors = {}  # (geometry, input size, device) -> the read-only array, a few kept
_INVERSE_DIVISORS_KEPT = 64


def _avg_inverse_divisor(geo, size, xp):
    """(OH, OW) float64 1/divisor on the device (PyTorch's clipped window sizes, or
    divisor_override): a multiply per output instead of a division. Made once per window,
    input size and device, as the upload is a host-to-device copy (on an H100 an average
    pool of LeNet's first layer took 131 us a call with it, the max pool 43 us); the
    kernels only read it."""
    key = (geo, tuple(size), None if xp is np else xp.cuda.get_device_id())
    inv = _inverse_divisors.get(key)
    if inv is None:
        rows, cols = geo.divisors(size)
        div = rows[:, None] * cols[None, :]
        if geo.divisor_override is not None:
            div[...] = geo.divisor_override
        inv = xp.asarray(1.0 / div)
        if len(_inverse_divisors) >= _INVERSE_DIVISORS_KEPT:
            _inverse_divisors.pop(next(iter(_inverse_divisors)))  # the oldest
        _inverse_divisors[key] = inv
    return inv


# Average pooling is host-bound at every size in the kernels suite (an H100, 2026-11-27:
# about 67 us a call, 0.38-0.41x PyTorch), a third of it describing the three arrays to
# the driver (_cuda_launch.describe). As max-pooling's, a call plans once per (shape,
# strides, dtype) on the geometry: the checks, the output shape, the divisor table and the
# launch bound to them (_bind); a later call allocates and replays, reading addresses only.
def avgpool2d_forward(x, kernel, stride=None, padding=0, ceil_mode=False,
                      count_include_pad=True, divisor_override=None):
    """y[n,c,i,j] = window sum of the zero-padded x / div[i,j] (PyTorch's divisor rules)."""
    geo = as_pool_geometry(kernel, stride, padding, 1, ceil_mode, "avgpool2d_forward",
                           count_include_pad=count_include_pad,
                           divisor_override=divisor_override)
    key = ("avg_fwd", x.shape, x.strides, x.dtype)
    plan = _geo_plan(geo, key)
    if plan is not None:
        return plan(x)
    check_float("avgpool2d_forward", x)
    out = geo.output_shape(x.shape, "avgpool2d_forward")
    xp = _xp(x)
    y = xp.empty(out, dtype=x.dtype)
    kern = _pool_kernels(*geo.kernel_size, *geo.stride, *geo.padding, 1, 1,
                         dtype_name(x.dtype))[2]
    xc, inv = xp.ascontiguousarray(x), _avg_inverse_divisor(geo, x.shape[2:], xp)
    launch = _launch(kern, y.size)
    launch(xc, y, inv)
    if xc is x:  # (the kernel reads x as it is)
        _keep_avg_plan(geo, key, _bind(launch, x, y, inv), out, x.dtype, xp, inv)
    return y


def avgpool2d_backward(dy, x_shape, kernel, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True, divisor_override=None):
    """dx[n,c,h,w] = sum over the windows containing (h, w) of dy[n,c,i,j] / div[i,j]."""
    geo = as_pool_geometry(kernel, stride, padding, 1, ceil_mode, "avgpool2d_backward",
                           count_include_pad=count_include_pad,
                           divisor_override=divisor_override)
    x_shape = x_shape if type(x_shape) is tuple else tuple(x_shape)
    key = ("avg_bwd", dy.shape, dy.strides, dy.dtype, x_shape)
    plan = _geo_plan(geo, key)
    if plan is not None:
        return plan(dy)
    check_float("avgpool2d_backward", dy)
    out = geo.output_shape(x_shape, "avgpool2d_backward")
    check_dy("avgpool2d_backward", dy, out)
    xp = _xp(dy)
    dx = xp.empty(x_shape, dtype=dy.dtype)
    kern = _pool_kernels(*geo.kernel_size, *geo.stride, *geo.padding, 1, 1,
                         dtype_name(dy.dtype))[3]
    dyc, inv = xp.ascontiguousarray(dy), _avg_inverse_divisor(geo, x_shape[2:], xp)
    launch = _launch(kern, dx.size)
    launch(dyc, dx, inv)
    if dyc is dy:
        _keep_avg_plan(geo, key, _bind(launch, dy, dx, inv), x_shape, dy.dtype, xp, inv)
    return dx


def _keep_avg_plan(geo, key, bound, shape, dtype, xp, inv):
    """Keep on the geometry: allocate ``shape``, replay ``bound`` (a launch bound to
    (input, output, divisor table)) on the new input and output, the same table."""
    if bound is None:  # (not a driver launch: the simulator, or numba-cuda's own)
        return
    empty = xp.empty

    def plan(src):
        out = empty(shape, dtype=dtype)
        if out.size:
            bound(src, out, inv)
        return out

    _keep(geometry_memo(geo, "_cuda_plans"), key, plan)


# -- a channel bias and its gradient ------------------------------------------------------------
# A layer's bias, y[n, c, ...] += b[c], and its gradient, db[c] = sum of g over every axis
# but 1, once per layer and step. As CuPy calls they cost the host 11.2 us (elementwise,
# broadcast) and 19.4 us (a reduction: its type and axis resolution, a reduction plan)
# a call on an H100 (results/2026-11-26-NVIDIA-H100-session4-after/launch.md), where a
# driver launch of a two-array kernel cost 7.9 (split-K's sum); LeNet-5 makes five of each
# a step. These are that launch.
_SUM_THREADS = 256  # a channel's block (a power of two: the tree reduction)


@functools.lru_cache(maxsize=None)
def _bias_add_kernel(dtype_name):
    """y (flat, (N, C, L) in order) += b[c], one thread per element: c = (i // L) % C."""

    @cuda.jit
    def kernel(y, b, L):
        idx = cuda.grid(1)
        if idx >= y.size:
            return
        i = _u32(idx)
        y[_U(i)] += b[_U((i // _u32(L)) % _u32(b.size))]

    return kernel


@functools.lru_cache(maxsize=None)
def _channel_sum_kernel(dtype_name, threads):
    """out[c] = sum over n, l of g[(n*C + c)*L + l] (g flat), block c: each thread adds
    every threads-th element of the channel's N*L, then a tree in shared memory; in g's
    dtype, as CuPy's and PyTorch's reductions do (float32 kernels compute in float32:
    tests/test_kernels_ptx.py)."""
    acc_t = _float_type(dtype_name)

    @cuda.jit
    def kernel(g, out, L):
        c = _u32(cuda.blockIdx.x)
        t = _u32(cuda.threadIdx.x)
        c_, l_ = _u32(out.size), _u32(L)
        acc = acc_t(0.0)
        for j in range(t, _u32(g.size) // c_, threads):
            n = _u32(j) // l_
            acc += g[_U((n * c_ + c) * l_ + (_u32(j) - n * l_))]
        part = cuda.shared.array(threads, acc_t)
        part[t] = acc
        cuda.syncthreads()
        s = threads // 2
        while s > 0:
            if t < s:
                part[t] += part[t + s]
            cuda.syncthreads()
            s //= 2
        if t == 0:
            out[c] = part[0]

    return kernel


def _channel_view(a):
    """(a flat, C, L) of a C-contiguous array (N, C, ...) with fewer than 2**32 elements
    (the kernels' 32-bit indices), or None where the kernels do not take it."""
    if a.ndim < 2 or not c_contiguous(a) or a.dtype not in _BIAS_DTYPES \
            or a.size >= 2 ** 32:
        return None
    return a.reshape(-1), a.shape[1], a.size // max(1, a.shape[0] * a.shape[1])


_BIAS_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def add_channel_bias_(y, b):
    """y += b along axis 1 (y (N, C, ...), b (C,) of y's dtype), in place; returns y. One
    launch for a C-contiguous float y and a contiguous b (kept as a launch plan); anything
    else by broadcasting."""
    key = ("bias", y.shape, y.strides, y.dtype, b.shape, b.strides, b.dtype)
    bound = _plans.get(key)
    if bound is not None:
        bound(y, b)
        return y
    view = _channel_view(y)
    if view is None or b.dtype != y.dtype or b.shape != (y.shape[1],) or not c_contiguous(b):
        y += b.reshape((1, -1) + (1,) * (y.ndim - 2))
        return y
    flat, _, L = view
    if flat.size:
        launch = _launch(_bias_add_kernel(dtype_name(y.dtype)), flat.size)
        launch(flat, b, L)
        bound = _bind(launch, flat, b, L)
        if bound is not None:  # (in place: the plan is the bound launch itself)
            _keep(_plans, key, bound)
    return y


def channel_sum(g):
    """g (N, C, ...) summed over every axis but 1 -> (C,) in g's dtype (a bias gradient),
    one block a channel (kept as a launch plan); a reduction of the array module for what
    the kernel does not take."""
    key = ("channel_sum", g.shape, g.strides, g.dtype)
    plan = _plans.get(key)
    if plan is not None:
        return plan(g)
    view = _channel_view(g)
    xp = _xp(g)
    if view is None:
        return g.sum(axis=(0,) + tuple(range(2, g.ndim)))
    flat, c, L = view
    out = xp.empty(c, dtype=g.dtype)
    if c == 0:
        return out
    if flat.size == 0:
        out[...] = 0
        return out
    kernel = _channel_sum_kernel(dtype_name(g.dtype), _SUM_THREADS)
    launch = kernel[c, _SUM_THREADS] if _simulating() else _launch_config(kernel, c, _SUM_THREADS)
    launch(flat, out, L)
    _keep_plan(_plans, key, _bind(launch, flat, out, L), out.shape, out.dtype, xp, _same)
    return out


# -- ReLU ----------------------------------------------------------------------------------------
# max(x, 0) and its gradient, once per activation and step. As CuPy calls (a ufunc with a
# Python scalar, an ElementwiseKernel) they were among the largest own times of the GPU
# LeNet-5 step's profile on an H100 (about 45 and 30 us a call under cProfile, CuPy's work
# before the launch: type resolution, dimension merging, indexer structs; results/2026-11-
# 26-NVIDIA-H100-session4-after/profile-lenet5-256.md). Here each is one driver launch
# over the flat arrays, kept as a launch plan per shape: a replay reads two or three
# addresses and launches.
@functools.lru_cache(maxsize=None)
def _relu_kernels(dtype_name):
    """(forward y = max(x, 0), NaN kept and -0.0 -> 0.0 as NumPy's maximum; backward dx = 0
    where y <= 0 else dy, PyTorch's threshold_backward), over flat arrays."""
    zero = _float_type(dtype_name)(0.0)

    @cuda.jit
    def forward(x, y):
        i = cuda.grid(1)
        if i < y.size:
            v = x[i]
            y[i] = v if v > zero or v != v else zero

    @cuda.jit
    def backward(dy, y, dx):
        i = cuda.grid(1)
        if i < dx.size:
            dx[i] = zero if y[i] <= zero else dy[i]

    return forward, backward


def _flat_ok(*arrays):
    """Whether the flat kernels take these: one float dtype and shape, C-contiguous, fewer
    than 2**32 elements."""
    a = arrays[0]
    return (a.dtype in _BIAS_DTYPES and a.size < 2 ** 32
            and all(b.dtype == a.dtype and b.shape == a.shape and c_contiguous(b)
                    for b in arrays))


def relu(x):
    """max(x, 0) elementwise, NaN kept (NumPy's maximum: -0.0 gives 0.0); one launch for a
    C-contiguous float array, the array module's maximum otherwise."""
    key = ("relu", x.shape, x.strides, x.dtype)
    plan = _plans.get(key)
    if plan is not None:
        return plan(x)
    xp = _xp(x)
    if not _flat_ok(x):
        return xp.maximum(x, 0)
    y = xp.empty(x.shape, dtype=x.dtype)
    if y.size:
        launch = _launch(_relu_kernels(dtype_name(x.dtype))[0], y.size)
        flat = (x.reshape(-1), y.reshape(-1))
        launch(*flat)
        _keep_plan(_plans, key, _bind(launch, *flat), x.shape, x.dtype, xp, _same)
    return y


def relu_backward(dy, y):
    """dx = 0 where y <= 0, else dy (PyTorch's threshold_backward: a NaN or inf gradient
    at an inactive unit gives 0); one launch for C-contiguous float arrays of one dtype and
    shape, the array module's ``where`` otherwise."""
    key = ("relu_backward", dy.shape, dy.strides, dy.dtype, y.shape, y.strides, y.dtype)
    plan = _plans.get(key)
    if plan is not None:
        return plan(dy, y)
    xp = _xp(dy)
    if not _flat_ok(dy, y):
        return xp.where(y <= 0, xp.zeros((), dtype=dy.dtype), dy)
    dx = xp.empty(dy.shape, dtype=dy.dtype)
    if dx.size:
        launch = _launch(_relu_kernels(dtype_name(dy.dtype))[1], dx.size)
        flat = (dy.reshape(-1), y.reshape(-1), dx.reshape(-1))
        launch(*flat)
        _keep_plan(_plans, key, _bind(launch, *flat), dx.shape, dx.dtype, xp, _same)
    return dx


# -- the optimizer steps: every parameter in one launch ----------------------------------------
# Each kernel takes tuples of flat tensors (param, grad, state...), and block b of a launch
# works on elements [(b - starts[i]) * CHUNK, +CHUNK) of tensor i, starts[i] <= b <
# starts[i+1]. One launch per _MULTI_MAX tensors (fewer where the descriptors, 7 words per
# array, would pass the 4 KB of kernel parameters) instead of one per tensor: PyTorch's
# foreach path does the same.
_MULTI_THREADS = 256
_MULTI_CHUNK = 8 * _MULTI_THREADS  # elements of one tensor per block
_MULTI_MAX = 16


@cuda.jit(device=True, inline=True)
def _tensor_of_block(starts, n, b):
    """The i with starts[i] <= b < starts[i + 1] (an empty tensor owns no block)."""
    i = 0
    while i + 1 < n and starts[i + 1] <= b:
        i += 1
    return i


@functools.lru_cache(maxsize=None)
def _sgd_multi_kernel(dtype_name, with_momentum, nesterov):
    """PyTorch's SGD step: d = g + wd p; with momentum buf = d (first step) or
    mom buf + (1 - dampening) d, and d = d + mom buf (nesterov) or buf; p -= lr d --
    kernels.cuda_fused's "sgd" body, the scalars rounded once to the parameters' dtype."""
    ft = _float_type(dtype_name)

    @cuda.jit
    def kernel(P, G, Bf, starts, lr, mom, omd, wd, first):
        b = cuda.blockIdx.x
        i = _tensor_of_block(starts, len(P), b)
        p, g, buf = P[i], G[i], Bf[i]
        lr_, mom_, omd_, wd_ = ft(lr), ft(mom), ft(omd), ft(wd)
        e = (b - starts[i]) * _MULTI_CHUNK + cuda.threadIdx.x
        end = min(e - cuda.threadIdx.x + _MULTI_CHUNK, p.shape[0])
        while e < end:
            d = g[e] + wd_ * p[e]
            if with_momentum:
                v = d if first else mom_ * buf[e] + omd_ * d
                buf[e] = v
                d = d + mom_ * v if nesterov else v
            p[e] = p[e] - lr_ * d
            e += _MULTI_THREADS

    return kernel


@functools.lru_cache(maxsize=None)
def _adam_multi_kernel(dtype_name, decay):
    """PyTorch's Adam / AdamW step -- kernels.cuda_fused's "adam" body: weight decay
    (decay 1: g += wd p; 2, decoupled: p *= 1 - lr wd; 0: none), m = b1 m + (1 - b1) g,
    v = b2 v + (1 - b2) g^2, p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps),
    the scalars formed on the host and rounded once to the parameters' dtype."""
    ft = _float_type(dtype_name)

    @cuda.jit
    def kernel(P, G, M, V, starts, b1, omb1, b2, omb2, eps, wd, step_size, bc2, shrink):
        b = cuda.blockIdx.x
        i = _tensor_of_block(starts, len(P), b)
        p, g, m, v = P[i], G[i], M[i], V[i]
        b1_, omb1_, b2_, omb2_, eps_ = ft(b1), ft(omb1), ft(b2), ft(omb2), ft(eps)
        wd_, step_, bc2_, shrink_ = ft(wd), ft(step_size), ft(bc2), ft(shrink)
        e = (b - starts[i]) * _MULTI_CHUNK + cuda.threadIdx.x
        end = min(e - cuda.threadIdx.x + _MULTI_CHUNK, p.shape[0])
        while e < end:
            gg = g[e]
            if decay == 2:
                p[e] = p[e] * shrink_
            elif decay == 1:
                gg = gg + wd_ * p[e]
            mm = b1_ * m[e] + omb1_ * gg
            vv = b2_ * v[e] + omb2_ * gg * gg
            m[e] = mm
            v[e] = vv
            p[e] = p[e] - step_ * mm / (math.sqrt(vv / bc2_) + eps_)
            e += _MULTI_THREADS

    return kernel


def _check_multi(op, params, others):
    """params and each list of ``others`` (grads, states): equally long, C-contiguous
    arrays of params[i]'s shape and one float dtype."""
    n = len(params)
    if any(len(o) != n for o in others):
        raise ValueError(f"{op}: {n} params need {len(others)} lists of {n} arrays (grads, "
                         f"states), got {[len(o) for o in others]}")
    if not n:
        return
    dt = params[0].dtype
    check_float(op, params[0])
    for arrays in (params, *others):  # (plain loops: this runs every optimizer step)
        for i, (p, x) in enumerate(zip(params, arrays)):
            if x.dtype != dt or x.shape != p.shape or not c_contiguous(x):
                arrays = [p] + [o[i] for o in others]
                raise ValueError(f"{op}: tensor {i}: arrays of shapes "
                                 f"{[x.shape for x in arrays]} and dtypes "
                                 f"{[str(x.dtype) for x in arrays]}; expected C-contiguous "
                                 f"arrays of one shape and the dtype {dt}")


def _multi_launch(kernel, tensors, scalars):
    """kernel over tensors = [params, grads, states...] (lists of arrays), _MULTI_MAX
    tensors (or fewer, see above) per launch: kernel(*tuples, starts, *scalars)."""
    per_launch = min(_MULTI_MAX, 440 // (7 * len(tensors) + 1))
    for c in range(0, len(tensors[0]), per_launch):
        parts = [list(t[c:c + per_launch]) for t in tensors]
        starts = [0]
        for p in parts[0]:
            starts.append(starts[-1] + -(-p.size // _MULTI_CHUNK))
        if starts[-1] == 0:
            continue
        if _simulating():  # numba's own launch: real 1-D views (the driver launch packs them)
            args = [tuple(a.reshape(-1) for a in part) for part in parts]
            kernel[starts[-1], _MULTI_THREADS](*args, tuple(starts), *scalars)
        else:
            _launch_config(kernel, starts[-1], _MULTI_THREADS)(
                *(tuple(part) for part in parts), tuple(starts), *scalars)


def sgd_update_multi(params, grads, bufs, lr, momentum, dampening, weight_decay, nesterov,
                     first_step):
    """PyTorch's SGD step on every tensor of ``params`` at once, in place on params (and
    bufs): params, grads, bufs: sequences of C-contiguous arrays of one float dtype,
    grads[i] (and bufs[i]) of params[i]'s shape; bufs may be None when momentum is 0."""
    if momentum and bufs is None:
        raise ValueError("sgd_update_multi: momentum needs the momentum buffers, got None")
    tensors = [params, grads] + ([bufs] if momentum else [])
    _check_multi("sgd_update_multi", params, tensors[1:])
    if not len(params):
        return
    kernel = _sgd_multi_kernel(dtype_name(params[0].dtype), bool(momentum), bool(nesterov))
    if not momentum:
        tensors.append(params)  # (a stand-in: the kernel reads no buffer)
    _multi_launch(kernel, tensors, (float(lr), float(momentum), float(1 - dampening),
                                    float(weight_decay), int(bool(first_step))))


def adam_update_multi(params, grads, ms, vs, lr, beta1, beta2, eps, weight_decay, step,
                      decoupled):
    """PyTorch's Adam (AdamW when decoupled) step t = ``step`` on every tensor at once, in
    place on params, ms and vs (C-contiguous arrays of one float dtype, each of its
    param's shape)."""
    _check_multi("adam_update_multi", params, [grads, ms, vs])
    if not len(params):
        return
    decay = 0 if not weight_decay else 2 if decoupled else 1
    kernel = _adam_multi_kernel(dtype_name(params[0].dtype), decay)
    _multi_launch(kernel, [params, grads, ms, vs],
                  (float(beta1), float(1 - beta1), float(beta2), float(1 - beta2), float(eps),
                   float(weight_decay), float(lr / (1 - beta1 ** step)),
                   float(1 - beta2 ** step), float(1 - lr * weight_decay)))


# primitive -> version name -> function with the primitive's signature ("default" is what
# the backend calls). The GEMM tile is a module setting (``set_tile``), not a version.
VERSIONS = {name: {"default": globals()[name]} for name in __all__
            if name not in ("DEFAULT_TILE", "TILE_CANDIDATES", "set_tile", "WIDE_TILE",
                            "set_wide_tile", "WIDE_KERNELS", "set_wide_kernel",
                            "CONV_KERNELS", "set_conv_kernel", "POOL_KERNELS",
                            "set_pool_kernel", "VERSIONS", "sgd_update_multi", "adam_update_multi")}
VERSIONS["maxpool2d_backward"]["scatter"] = _maxpool_backward_scatter
VERSIONS["conv2d_backward_input"]["direct"] = _conv2d_backward_input_direct
VERSIONS["conv2d_backward_input"]["implicit_gemm"] = _conv2d_backward_input_implicit
VERSIONS["conv2d_backward_input"]["col2im"] = _conv2d_backward_input_col2im

def kernels_for_ptx(dtype_name="float32", tile=DEFAULT_TILE, with_candidates=True):
    """(name, python function, Numba signature, threads per block) of every production
    kernel of this module, for PTX compilation (tests/test_kernels_ptx.py) and the
    resource table (benchmarks/resources.py): the one place that knows their signatures.
    With candidates: also the GEMM variants the GPU sweep times (double-buffered, warp
    layout, register cap), at the end."""
    from numba import float64, int64, types

    ft = getattr(types, dtype_name)
    geo = types.UniTuple(int64, 8)
    a3, a4 = types.Array(ft, 3, "C"), types.Array(ft, 4, "C")
    i4, d2 = types.Array(int64, 4, "C"), types.Array(float64, 2, "C")
    out = []
    # the convolutions at ResNet's 3x3 window, stride 1, padding 1
    r3 = (3, 3, 1, 1, 1, 1, 1, 1)
    gemms = {"gemm matmul (regblock2d)": (_PLAIN, _PLAIN, _OUT_PLAIN, a3, a3, None),
             "gemm matmul, transposed operands": (_PLAIN_T, _PLAIN_T, _OUT_PLAIN, a3, a3, None),
             "gemm conv forward (implicit im2col, 3x3)": (_PLAIN, _IM2COL, _OUT_NCHW, a3, a4, r3),
             "gemm conv weight gradient (3x3)": (_DY_ONL, _IM2COL_T, _OUT_PLAIN, a3, a4, r3),
             "gemm conv input gradient (3x3)": (_PLAIN, _DY_TAPS, _OUT_NCHW, a3, a4, r3),
             # split-K writes the convolutions' partial products with the plain store
             "gemm conv forward, split-K partials (3x3)": (_PLAIN, _IM2COL, _OUT_PLAIN, a3, a4, r3),
             "gemm conv input gradient, split-K partials (3x3)": (_PLAIN, _DY_TAPS, _OUT_PLAIN,
                                                                  a3, a4, r3)}
    sig = (a3, a3, a3, int64, int64, int64, geo, int64, int64)
    for name, (ma, mb, mc, A, B, conv) in gemms.items():
        kern, nthreads = _gemm_kernel(*tile, ma, mb, mc, dtype_name, conv)
        out.append((name, kern.py_func, (A, B) + sig[2:], nthreads))
    # the wide kernel (the ladder's rung 5 at WIDE_TILE) that runs large matmuls
    c = WIDE_TILE
    wide_threads = _ladder.check_dbuf_config("kernels_for_ptx", c)
    for name, ta, tb in (("gemm wide matmul (rung 5, 128x128)", False, False),
                         ("gemm wide matmul, transposed operands", True, True)):
        kern = _ladder.dbuf_kernel_for(c, ta, tb, dtype_name)
        out.append((name, kern.py_func, (a3, a3, a3, int64, int64, int64), wide_threads))
    # the window-specialised kernels at the geometries of the seed models: the direct
    # input gradient (a version by name) at ResNet's strided 3x3, LeNet's 2x2 pools
    out.append(("conv input gradient (direct; 3x3, stride 2, pad 1)",
                _conv_dx_kernel(2, 2, 1, 1, 1, 1, dtype_name).py_func, (a4, a4, a4), 128))
    # the gather of the strided input gradient (_conv_dx_col2im), at ResNet's stride 2
    out.append(("conv input gradient gather (col2im; 3x3, stride 2, pad 1)",
                _col2im_kernel(3, 3, 2, 2, 1, 1, 1, 1, dtype_name).py_func,
                (a4, a4), 128))
    # split-K's sum of the partial products (plain or NCHW store)
    out.append(("gemm split-K sum", _splitk_sum_kernel(dtype_name).py_func, (a4, a3), 128))
    # a layer's channel bias and its gradient, ReLU and its gradient
    a1 = types.Array(ft, 1, "C")
    relu_fwd, relu_bwd = _relu_kernels(dtype_name)
    out.append(("relu forward", relu_fwd.py_func, (a1, a1), 128))
    out.append(("relu backward", relu_bwd.py_func, (a1, a1, a1), 128))
    out.append(("channel bias add", _bias_add_kernel(dtype_name).py_func, (a1, a1, int64), 128))
    out.append(("channel sum (bias gradient)",
                _channel_sum_kernel(dtype_name, _SUM_THREADS).py_func, (a1, a1, int64),
                _SUM_THREADS))
    # the optimizer step over 3 tensors (SGD with momentum)
    flat3 = types.UniTuple(types.Array(ft, 1, "C"), 3)
    out.append(("sgd step over 3 tensors (momentum)",
                _sgd_multi_kernel(dtype_name, True, False).py_func,
                (flat3, flat3, flat3, types.UniTuple(int64, 4), float64, float64, float64,
                 float64, int64), _MULTI_THREADS))
    out.append(("adam step over 3 tensors (decoupled weight decay)",
                _adam_multi_kernel(dtype_name, 2).py_func,
                (flat3,) * 4 + (types.UniTuple(int64, 4),) + (float64,) * 9, _MULTI_THREADS))
    mf, mb, af, ab = _pool_kernels(2, 2, 2, 2, 0, 0, 1, 1, dtype_name)
    out += [("maxpool forward (2x2, stride 2)", mf.py_func, (a4, a4, i4), 128),
            ("maxpool backward (gather, 2x2, stride 2)", mb.py_func, (a4, i4, a4), 128),
            ("avgpool forward (2x2, stride 2)", af.py_func, (a4, a4, d2), 128),
            ("avgpool backward (2x2, stride 2)", ab.py_func, (a4, a4, d2), 128),
            ("maxpool backward (scatter per plane)", _scatter_kernel().py_func, (a4, i4, a3),
             64)]
    if with_candidates:
        # the GEMM variants the GPU sweep times beside production's settings: (name prefix,
        # kernels, _gemm_kernel_for's a_pad, double_buffer, warp_layout, max_registers)
        mm, fwd, dw = ("gemm matmul (regblock2d)", "gemm conv forward (implicit im2col, 3x3)",
                       "gemm conv weight gradient (3x3)")
        cap = MAX_REGISTERS_CANDIDATE
        variants = [("gemm double-buffered ", (mm, fwd), (_A_PAD, True, None, None)),
                    (f"gemm {cap}-register ", (mm, fwd, dw), (_A_PAD, False, None, cap))]
        if _warp_layout_fits(tile, WARP_CANDIDATE):
            variants.append(("gemm warp-layout ", (mm, fwd, dw),
                             (_A_PAD, False, WARP_CANDIDATE, None)))
        candidates = []
        for prefix, names, layout in variants:
            for name in names:
                ma, mb, mc, A, B, conv = gemms[name]
                kern, nthreads = _gemm_kernel_for(*tile, ma, mb, mc, dtype_name, conv, *layout)
                candidates.append((name.replace("gemm ", prefix, 1), kern.py_func,
                                   (A, B) + sig[2:], nthreads))
        out += candidates
    return out


# the GEMM ladder, in the order of the optimisation path: kernels/cuda_gemm.py's rungs
# around this module's 64x64 kernel (rung 3); all of them are matmul versions. The
# production matmul (VERSIONS["matmul"]["default"]) is rung 3 or, on large products, rung 5
LADDER = {
    "naive": _ladder.matmul_naive,
    "smem_tiled": _ladder.matmul_smem_tiled,
    "regblock2d": matmul_regblock2d,
    "vec4_transposed_a": _ladder.matmul_vec4_transposed_a,
    "double_buffered_warp": _ladder.matmul_double_buffered_warp,
}
VERSIONS["matmul"].update(LADDER)


# TINYGRAD_K_CUDA_KERNELS="conv=cuda_c_128,pool=cuda_c,wide=vec4_cuda_c" (any of the three)
# picks the kernel families at import, as set_conv_kernel / set_pool_kernel /
# set_wide_kernel do: for a process one cannot edit, such as a benchmark's child.
_KERNEL_SETTERS = {"conv": set_conv_kernel, "pool": set_pool_kernel, "wide": set_wide_kernel}


def kernels_from_env(spec):
    """Apply a TINYGRAD_K_CUDA_KERNELS value: comma-separated family=kernel pairs."""
    for item in filter(None, (part.strip() for part in spec.split(","))):
        family, sep, name = (t.strip() for t in item.partition("="))
        if not sep or family not in _KERNEL_SETTERS:
            raise ValueError(f"TINYGRAD_K_CUDA_KERNELS={spec!r}: expected comma-separated "
                             f"family=kernel pairs, family one of {list(_KERNEL_SETTERS)}; "
                             f"got {item!r}")
        _KERNEL_SETTERS[family](name)


kernels_from_env(os.environ.get("TINYGRAD_K_CUDA_KERNELS", ""))
