"""Direct convolution in CUDA C (CuPy RawModules) for results of few channels: LeNet's
forward passes (6 and 16 output channels) and the input gradients of layers with few
input channels (LeNet's conv2, 6; a ResNet stem's, 3).

Why. The implicit GEMMs (kernels.cuda, kernels/cuda_sgemm.py) give a block a tile of 64
or 128 result channels: with 3 of them, 61 of 64 rows of every tile are zeros, and the
stem's input gradient ran at 0.18x cuDNN on an H100 (results/2026-11-26-NVIDIA-H100-
session5/conv.md: 0.33 ms against 0.061). Here a thread owns one pixel of the result and
all its R channels (R = the channels rounded up to 4, 8 or 16), so no row is wasted past
the rounding:

    y[n, r, i, j] = sum over c, p, q of
                    ws[c, p, q, r] * x[n, c, i*SH - PH + p*DH, j*SW - PW + q*DW]

with taps outside x read as 0. The block first copies the weights into shared memory as
ws[c, p, q, r], r fastest, zero past the real channels, so each tap is one global load
(neighbouring threads read neighbouring pixels: coalesced, and cached across taps) and
R/4 128-bit shared loads that every thread of a warp reads at the same address (a
broadcast), for R FMAs.

* Forward: x is the input, ws[c, p, q, r] = w[r, c, p, q].
* Input gradient of a stride-1 convolution: the same sum with x = dy, r = the input
  channel and the window turned around,

      dx[n, r, h, v] = sum over o, p, q of w[o, r, p, q] * dy[n, o, h + PH - p*DH, v + PW - q*DW]
                     = sum over o, p', q' of ws[o, p', q', r] * dy[n, o, h - PH' + p'*DH, ...]

  with p' = KH-1-p, ws[o, p', q', r] = w[o, r, KH-1-p', KW-1-q'] and padding
  PH' = DH*(KH-1) - PH (FLIP in the source: the copy into shared memory does the turn,
  so no transposed weights are made per call). Strided input gradients stay on the GEMM
  paths, where only one tap in SH*SW would be non-zero here.

One group only; the weights of a block must fit in 48 KiB of shared memory (C*KH*KW*R
floats). ``fits`` says why not where they do not. Offsets are 32-bit: fewer than 2**31
elements in each tensor.

Measured on an H100 (results/2026-11-26-NVIDIA-H100-session5-after/direct-vs-gemm.md and
conv.md): LeNet-5's passes at batch 256 1.9-8.5x faster than on the Numba 64x64 GEMM
(conv2's input gradient 37 against 152 us, 20 calls back to back), the stem's input
gradient 0.086 ms against 0.365 (cuDNN 0.058).

Without a GPU, tests/test_kernels_direct_src.py compiles the source for sm_90 with NVRTC
(registers and spills from ptxas) and runs it as host C++ against kernels.reference.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ._common import check_float, magic

__all__ = ["SOURCE", "THREADS", "MAX_ROWS", "SMEM_MAX", "SCALARS", "entry", "rows_padded",
           "fits", "launch_args", "plan", "run", "conv2d_forward", "conv2d_backward_input"]

THREADS = 128
MAX_ROWS = 16           # result channels a thread keeps (R): more go to the GEMMs
SMEM_MAX = 48 * 1024    # bytes of weights a block copies (the default dynamic limit)

SOURCE = r"""
// (the host C++ of the tests declares the block's weights its own way)
#ifndef TK_DYNAMIC_SHARED
#define TK_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

// x // d for 0 <= x < 2**31, with (m, p) = kernels._common.magic(d)
__device__ __forceinline__ unsigned tk_div(unsigned x, unsigned m, unsigned p) {
    return (unsigned)(((unsigned long long)x * m) >> p);
}

// y[n, r, i, j] = sum_{c,p,q} ws[c, p, q, r] * x[n, c, i*SH - PH + p*DH, j*SW - PW + q*DW]
// for r < RR (the real channels; R >= RR is the padded count a thread accumulates).
// w is (RR, C, KH, KW) (forward) or, FLIP, (C, RR, KH, KW) read turned around.
template <int R, int KH, int KW, bool FLIP>
__device__ __forceinline__ void tk_conv_direct(
        const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
        unsigned total, int C, int H, int W, int RR, int OH, int OW, int SH, int SW,
        int PH, int PW, int DH, int DW, unsigned m_l, unsigned p_l, unsigned m_ow,
        unsigned p_ow) {
    TK_DYNAMIC_SHARED(float4, tk_ws4);
    float* ws = reinterpret_cast<float*>(tk_ws4);
    const int taps = KH * KW;
    const int nw = C * taps * R;
    for (int e = threadIdx.x; e < nw; e += blockDim.x) {
        const int r = e % R, k = e / R;          // k = (c*KH + p)*KW + q
        const int c = k / taps, t = k - c * taps;
        float v = 0.f;
        if (r < RR)
            v = FLIP ? __ldg(w + (c * RR + r) * taps + (taps - 1 - t))
                     : __ldg(w + (r * C + c) * taps + t);
        ws[e] = v;
    }
    __syncthreads();
    const unsigned idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const unsigned n = tk_div(idx, m_l, p_l);
    const int l = (int)(idx - n * (unsigned)(OH * OW));
    const int i = (int)tk_div((unsigned)l, m_ow, p_ow);
    const int j = l - i * OW;
    const int h0 = i * SH - PH, w0 = j * SW - PW;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.f;
    const float* __restrict__ xn = x + n * (unsigned)(C * H * W);
    for (int c = 0; c < C; ++c) {
        const float* __restrict__ xc = xn + c * (H * W);
        const float4* __restrict__ wc = tk_ws4 + c * (taps * R / 4);
#pragma unroll
        for (int p = 0; p < KH; ++p) {
            const int hh = h0 + p * DH;
            if ((unsigned)hh >= (unsigned)H) continue;
#pragma unroll
            for (int q = 0; q < KW; ++q) {
                const int vv = w0 + q * DW;
                if ((unsigned)vv >= (unsigned)W) continue;
                const float v = __ldg(xc + hh * W + vv);
#pragma unroll
                for (int r4 = 0; r4 < R / 4; ++r4) {
                    const float4 wv = wc[(p * KW + q) * (R / 4) + r4];
                    acc[4 * r4 + 0] += v * wv.x;
                    acc[4 * r4 + 1] += v * wv.y;
                    acc[4 * r4 + 2] += v * wv.z;
                    acc[4 * r4 + 3] += v * wv.w;
                }
            }
        }
    }
    float* __restrict__ yn = y + n * (unsigned)(RR * OH * OW) + l;
#pragma unroll
    for (int r = 0; r < R; ++r)
        if (r < RR) yn[r * (OH * OW)] = acc[r];
}
"""

ENTRY = r"""
extern "C" __global__ void __launch_bounds__({threads})
{name}(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y,
       unsigned total, int C, int H, int W, int RR, int OH, int OW, int SH, int SW, int PH,
       int PW, int DH, int DW, unsigned m_l, unsigned p_l, unsigned m_ow, unsigned p_ow) {{
    tk_conv_direct<{r}, {kh}, {kw}, {flip}>(x, w, y, total, C, H, W, RR, OH, OW, SH, SW, PH,
                                          PW, DH, DW, m_l, p_l, m_ow, p_ow);
}}
"""

# the entry's parameters after its three pointers: total, then C H W RR OH OW SH SW PH PW
# DH DW, then the two (multiplier, shift) pairs
SCALARS = "I" + "i" * 12 + "IIII"


def rows_padded(rows):
    """R, the channels a thread accumulates for ``rows`` real ones: 4, 8 or 16."""
    return 4 if rows <= 4 else 8 if rows <= 8 else 16


def entry(r, kh, kw, flip):
    """(name, CUDA source of the entry point) for R = r channels, a kh x kw window and
    the forward (flip False) or turned-around (input gradient) weights."""
    name = f"tk_conv_direct_{r}_{kh}_{kw}_{'t' if flip else 'f'}"
    return name, ENTRY.format(name=name, threads=THREADS, r=r, kh=kh, kw=kw,
                              flip="true" if flip else "false")


@functools.lru_cache(maxsize=None)
def _function(r, kh, kw, flip):
    import cupy

    name, code = entry(r, kh, kw, flip)
    return cupy.RawModule(code=SOURCE + code, options=("--std=c++14",)).get_function(name)


def fits(op, src_shape, w_shape, out_shape, geo, dgrad):
    """None if the direct kernel takes this pass, else why not. src is x (forward) or dy
    (input gradient); out is y or dx."""
    rows = out_shape[1]
    taps = w_shape[2] * w_shape[3]
    if geo.groups != 1:
        return f"{op}: the direct convolution takes one group, got groups={geo.groups}"
    if rows > MAX_ROWS:
        return f"{op}: the direct convolution takes at most {MAX_ROWS} result channels, got {rows}"
    if dgrad and tuple(geo.stride) != (1, 1):
        return f"{op}: the direct input gradient takes stride 1, got {tuple(geo.stride)}"
    if src_shape[1] * taps * rows_padded(rows) * 4 > SMEM_MAX:
        return (f"{op}: the direct convolution's weights ({src_shape[1]} x {taps} taps x "
                f"{rows_padded(rows)}) pass {SMEM_MAX} bytes of shared memory")
    if max(math.prod(src_shape), math.prod(out_shape)) >= 2 ** 31:
        return f"{op}: the direct convolution needs fewer than 2**31 elements per tensor"
    return None


def launch_args(src_shape, w_shape, out_shape, geo, dgrad):
    """(entry key (R, KH, KW, FLIP), grid, block, shared bytes, ints) of one launch: a
    thread per pixel of the result (N * OH * OW), src (N, C, H, W) read through the window
    of ``geo`` (for the input gradient: stride 1, padding DH*(KH-1) - PH)."""
    n, c, h, w = src_shape
    rr, oh, ow = out_shape[1], out_shape[2], out_shape[3]
    kh, kw = w_shape[2], w_shape[3]
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    if dgrad:
        sh, sw, ph, pw = 1, 1, dh * (kh - 1) - ph, dw * (kw - 1) - pw
    r = rows_padded(rr)
    total = n * oh * ow
    m_l, p_l = magic(max(1, oh * ow))
    m_ow, p_ow = magic(max(1, ow))
    ints = (np.uint32(total), *(np.int32(v) for v in (c, h, w, rr, oh, ow, sh, sw, ph, pw,
                                                      dh, dw)),
            np.uint32(m_l), np.uint32(p_l), np.uint32(m_ow), np.uint32(p_ow))
    grid = (max(1, -(-total // THREADS)),)
    return (r, kh, kw, dgrad), grid, (THREADS,), c * kh * kw * r * 4, ints


def plan(src_shape, w_shape, out_shape, geo, dgrad):
    """A pass's launch, kept by kernels.cuda per shape: (out_shape, ``launch(src, w, out)``
    through the driver (_cuda_launch.RawBound, the ints packed once), or None where the
    result is empty)."""
    from ._cuda_launch import RawBound

    if not math.prod(out_shape):
        return tuple(out_shape), None
    key, grid, block, smem, ints = launch_args(src_shape, w_shape, out_shape, geo, dgrad)
    return tuple(out_shape), RawBound(_function(*key).kernel.ptr, grid, block, 3, SCALARS,
                                      ints, shared_mem=smem)


def run(planned, src, w):
    """-> the result of ``plan``'s pass on src and w (float32, contiguous, the planned
    shapes)."""
    import cupy

    out_shape, launch = planned
    out = cupy.empty(out_shape, dtype=np.float32)
    if launch is not None:
        launch(src, w, out)
    return out


def _checked(op, src, w, out_shape, geo, dgrad):
    check_float(op, src, w)
    if src.dtype != np.float32 or w.dtype != np.float32:
        raise TypeError(f"{op}: float32 arrays expected, got {src.dtype} and {w.dtype}")
    why = fits(op, src.shape, w.shape, out_shape, geo, dgrad)
    if why is not None:
        raise ValueError(why)


def conv2d_forward(x, w, geo):
    """y (N, O, OH, OW) of float32 CuPy arrays x (N, C, H, W), w (O, C, KH, KW), O <= 16,
    one group (kernels._common.ConvGeometry)."""
    import cupy

    op = "conv2d_forward_direct"
    out = geo.output_shape(x.shape, w.shape, op)
    _checked(op, x, w, out, geo, False)
    x, w = cupy.ascontiguousarray(x), cupy.ascontiguousarray(w)
    return run(plan(x.shape, w.shape, out, geo, False), x, w)


def conv2d_backward_input(dy, w, x_shape, geo):
    """dx (x_shape) of float32 CuPy arrays dy (N, O, OH, OW), w (O, C, KH, KW), C <= 16,
    stride 1, one group."""
    import cupy

    op = "conv2d_backward_input_direct"
    x_shape = tuple(x_shape)
    out = geo.output_shape(x_shape, w.shape, op)
    if tuple(dy.shape) != out:
        raise ValueError(f"{op}: dy has shape {tuple(dy.shape)}, expected {out}")
    _checked(op, dy, w, x_shape, geo, True)
    dy, w = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(w)
    return run(plan(dy.shape, w.shape, x_shape, geo, True), dy, w)
