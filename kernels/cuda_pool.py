"""Max-pooling in CUDA C (CuPy RawModules): the forward pass with its argmax, and the
input gradient gathered per cell of stride-many input elements.

Why CUDA C. Pooling moves bytes: a 3x3/2 window reads about 4 inputs per output and
writes 12 bytes (the value and an int64 argmax), so on an H100 it should run at the
speed of a copy. The Numba kernels (kernels.cuda._pool_kernels) issue about 400 SASS
instructions per output at 3x3/2 on sm_90 (256 at 2x2/2): Numba widens every index to 64
bits, splits the flat index into (n, c, h, w) with three run-time divisions, and
addresses each tap through the array's shape and strides. At 400 instructions a thread
the forward pass is bound by instruction issue, not by memory (132 SMs x 4 warp
instructions a cycle at about 1.7 GHz is ~29 T thread-instructions/s: ~70 G outputs/s,
against the ~120 G/s that 3.35 TB/s allows at 28 bytes an output). These kernels' forward
passes issued 214 (3x3/2) and 115 (2x2/2) instructions an output when measured below, 160
and 94 since (all taps loaded, then compared without branches; benchmarks.resources).

Measured on an H100 (results/2026-11-26-NVIDIA-H100-session5-after/pool.md, batches
large enough for the GPU's time to show): the forward pass at 81-89% of a copy of the
same bytes; the gradient, a cell a thread with scalar stores, at 62-69% (one element a
thread: 29-38% at the smaller 3x3/2 case); with float2 stores 87% at 2x2/2 and 71% at
3x3/2 (results/2026-11-26-NVIDIA-H100-session5-float2), where the kernel issued 268
instructions a cell, 18 of them loads (a dy load per window and element, each after its
compare) and 24 branches.

Since then (results/2026-11-27-NVIDIA-H100-session9/pool.md): in the gradient, each
window of a cell is loaded once, argmax and dy together, without branches; of the argmax
only its low word; a window row's loads are constant offsets from one pointer. On the path
a thread takes (read off the SASS; the resource table counts every store variant), 3x3/2
issues about 134 instructions a cell, 2x2/2 about 85, and the gradient runs at the copy's
speed: at batch 512, 3x3/2, 99% of the copy (one call and 20 back to back); LeNet's
pool1 at batch 8192, 97%. A thread may also own two or four cells side by side (fewer
instructions a cell: 87 for two at 3x3/2), timed beside it by
benchmarks.gpu_parts's pool part: 97% and 89% at 3x3/2, 92% and 72% at 2x2/2, so
backward_cells keeps one. Once issue no longer binds, the extra threads of one cell a
thread hide more memory latency than the shared window columns save.

Here a thread owns one output (forward) or one, two or four cells of SH x SW input
elements side by side (backward: the windows each element of a cell can belong to are
known at compile time, so a warp does not split on the parity of its elements' rows and
columns), and works in 32-bit integers throughout:

* the window (kernel, stride, padding, dilation) is a template constant, so the taps
  unroll and the stride's division and remainder are a multiply and a shift;
* the flat index is split into (plane, row, column) with two divisions by run-time
  sizes done as a multiply and a shift by numbers the host computes once
  (``kernels._common.magic``): plane = n*C + c needs no further split, since each plane
  is contiguous;
* the offsets of a plane and of a tap are 32-bit (``fits`` requires both tensors to have
  fewer than 2**31 elements; kernels.cuda keeps the larger ones on the Numba kernels).

Semantics are the Numba kernels' and kernels.reference's: only taps inside the input
compete, the first maximum in row-major window order wins, a NaN wins and stays, a window
with no tap inside the input gives -inf and argmax -1; argmax is the flat index h*W + w
within the plane, int64 (PyTorch's). The backward pass adds dy of every window whose
argmax is the element, in window order.

Without a GPU, tests/test_kernels_pool_src.py compiles the source for sm_90 with NVRTC
(registers and spills from ptxas) and runs it as host C++ against kernels.reference.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ._common import as_pool_geometry, check_float, check_maxpool_backward, geometry_memo, magic

__all__ = ["SOURCE", "ENTRY", "CELLS", "PASSES", "THREADS", "SCALARS", "entry", "fits",
           "forward_args", "backward_cells", "backward_args", "launcher", "forward_plan",
           "run_forward", "backward_plan", "run_backward", "maxpool2d_forward",
           "maxpool2d_backward"]

THREADS = 256

SOURCE = r"""
// The compiler would otherwise rebuild a row's pointer from the kernel's parameters at
// each predicated load (a constant-bank load and a 64-bit add each): an empty asm makes
// the pointer opaque, so the loads of its row are constant offsets from one register.
#ifdef __CUDA_ARCH__
#define TK_PIN(p) asm("" : "+l"(p))
#else
#define TK_PIN(p) ((void)0)
#endif

// x // d for 0 <= x < 2**31, with (m, p) = kernels._common.magic(d)
__device__ __forceinline__ unsigned tk_div(unsigned x, unsigned m, unsigned p) {
    return (unsigned)(((unsigned long long)x * m) >> p);
}

// y[plane, i, j] = max over the window's taps inside the input; arg = its h*W + w.
// A tap (p, q) is x[plane, h0 + p*DH, w0 + q*DW]: one pinned row pointer per p, and the q
// taps at constant offsets from it; (unsigned)hh >= H tests hh < 0 and hh >= H at once.
// All taps are loaded first (those outside not), then compared in window order, without
// branches: the loads do not wait for the compares.
template <int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW>
__device__ __forceinline__ void tk_maxpool_fwd(
        const float* __restrict__ x, float* __restrict__ y, long long* __restrict__ arg,
        unsigned total, int H, int W, int OH, int OW, unsigned m_l, unsigned p_l,
        unsigned m_ow, unsigned p_ow) {
    unsigned idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    unsigned plane = tk_div(idx, m_l, p_l);
    unsigned r = idx - plane * (unsigned)(OH * OW);
    int i = (int)tk_div(r, m_ow, p_ow);
    int j = (int)r - i * OW;
    const int h0 = i * SH - PH, w0 = j * SW - PW;
    const float* __restrict__ xp = x + plane * (unsigned)(H * W);
    bool cin[KW];
#pragma unroll
    for (int q = 0; q < KW; ++q) cin[q] = (unsigned)(w0 + q * DW) < (unsigned)W;
    float v[KH][KW];
    bool in[KH][KW];
#pragma unroll
    for (int p = 0; p < KH; ++p) {
        const bool rin = (unsigned)(h0 + p * DH) < (unsigned)H;
        const float* __restrict__ xr = xp + (h0 + p * DH) * W + w0;  // tap (p, 0)
        TK_PIN(xr);
#pragma unroll
        for (int q = 0; q < KW; ++q) {
            in[p][q] = rin & cin[q];
            v[p][q] = in[p][q] ? __ldg(xr + q * DW) : 0.f;
        }
    }
    float best = __int_as_float(0xff800000);  // -inf (NVRTC has no INFINITY macro)
    int besti = -1;
#pragma unroll
    for (int p = 0; p < KH; ++p) {
#pragma unroll
        for (int q = 0; q < KW; ++q) {
            // the first tap inside wins, then a larger value or a NaN; a NaN stays
            // (!(a <= b): a > b, or either a NaN)
            const bool take = in[p][q] & (best == best) & (!(v[p][q] <= best) | (besti < 0));
            best = take ? v[p][q] : best;
            besti = take ? (h0 + p * DH) * W + w0 + q * DW : besti;
        }
    }
    y[idx] = best;
    arg[idx] = besti;
}

// The window rows (or columns) the elements of a cell can belong to, relative to the
// cell's row a: t / S for every r < S and tap p with S dividing t = r + P - p*D. lo and hi
// bound them (C++14 constexpr loops: compile-time constants).
template <int K, int S, int P, int D>
struct tk_cell_windows {
    __host__ __device__ static constexpr int lo() {
        int m = 1 << 30;
        for (int r = 0; r < S; ++r)
            for (int p = 0; p < K; ++p)
                if ((r + P - p * D) % S == 0 && (r + P - p * D) / S < m) m = (r + P - p * D) / S;
        return m;
    }
    __host__ __device__ static constexpr int hi() {
        int m = -(1 << 30);
        for (int r = 0; r < S; ++r)
            for (int p = 0; p < K; ++p)
                if ((r + P - p * D) % S == 0 && (r + P - p * D) / S > m) m = (r + P - p * D) / S;
        return m;
    }
};

// dx[plane, h, w] = sum of dy over the windows containing (h, w) whose argmax is h*W + w.
// A thread owns NB cells side by side, each of SH x SW input elements: rows a*SH + rh,
// columns (b + k)*SW + rw for k < NB. Window row i holds tap p at input row
// i*SH - PH + p*DH, so element row a*SH + rh is tap p of window row a + (rh + PH - p*DH)/SH
// exactly where SH divides rh + PH - p*DH: with rh and p unrolled that test and quotient
// are compile-time constants, and the threads of a warp take the same branches (a thread
// per element would split on the row's parity).
// The windows of the cells (rows a + lo .. a + hi, columns b + lo .. b + NB - 1 + hi: 2 x 2
// for one cell at 3x3/2, 2 x 3 for two, whose middle column both cells read) are loaded
// once each, argmax and dy side by side and unconditionally (a window outside the output
// reads as argmax -1, dy 0), then each element adds the dy of its windows whose argmax it
// is: no load waits for a compare, and no branch splits the warp. Of an int64 argmax only
// the low word is read (little-endian; h*W + w < 2**31, and -1 stays -1): a 32-bit compare
// and half the registers, the same sectors from memory. A window row is one pointer, its
// columns constant offsets from it.
template <int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int NB>
__device__ __forceinline__ void tk_maxpool_bwd(
        const float* __restrict__ dy, const long long* __restrict__ arg, float* __restrict__ dx,
        unsigned total, int H, int W, int OH, int OW, unsigned m_cells, unsigned p_cells,
        unsigned m_cw, unsigned p_cw) {
    typedef tk_cell_windows<KH, SH, PH, DH> rows;
    typedef tk_cell_windows<KW, SW, PW, DW> cols;
    constexpr int R0 = rows::lo(), NR = rows::hi() - rows::lo() + 1;
    constexpr int C0 = cols::lo(), NC = cols::hi() - cols::lo() + NB;
    constexpr int L = NB * SW;  // a thread's elements in each of its rows
    unsigned idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const int CH = (H + SH - 1) / SH, CT = (W + L - 1) / L;  // a plane's rows of threads
    unsigned plane = tk_div(idx, m_cells, p_cells);
    const int r = (int)(idx - plane * (unsigned)(CH * CT));
    const int a = (int)tk_div((unsigned)r, m_cw, p_cw);
    const int b = (r - a * CT) * NB;  // the first cell's column
    const unsigned base = plane * (unsigned)(OH * OW);
    const int* __restrict__ ap = reinterpret_cast<const int*>(arg + base);
    const float* __restrict__ dyp = dy + base;
    float* __restrict__ dxp = dx + plane * (unsigned)(H * W);
    int wa[NR][NC];
    float wd[NR][NC];
    bool cin[NC];
#pragma unroll
    for (int ci = 0; ci < NC; ++ci) cin[ci] = (unsigned)(b + C0 + ci) < (unsigned)OW;
#pragma unroll
    for (int ri = 0; ri < NR; ++ri) {
        const int i = a + R0 + ri;
        const bool rin = (unsigned)i < (unsigned)OH;
        const int o = i * OW + b + C0;  // window (i, b + C0), read only where inside
        const int* __restrict__ arow = ap + 2 * o;
        const float* __restrict__ drow = dyp + o;
        TK_PIN(arow);
        TK_PIN(drow);
#pragma unroll
        for (int ci = 0; ci < NC; ++ci) {
            const bool in = rin & cin[ci];
            wa[ri][ci] = in ? __ldg(arow + 2 * ci) : -1;
            wd[ri][ci] = in ? __ldg(drow + ci) : 0.f;
        }
    }
    float v[SH][L];  // the gradients of the thread's rows (past the input's edge: not stored)
#pragma unroll
    for (int rh = 0; rh < SH; ++rh) {
#pragma unroll
        for (int e = 0; e < L; ++e) {
            const int k = e / SW, rw = e % SW;
            const int me = (a * SH + rh) * W + b * SW + e;
            float acc = 0.f;
#pragma unroll
            for (int p = 0; p < KH; ++p) {
                const int t = rh + PH - p * DH;  // (constants once unrolled)
                if (t % SH != 0) continue;
#pragma unroll
                for (int q = 0; q < KW; ++q) {
                    const int u = rw + PW - q * DW;
                    if (u % SW != 0) continue;
                    const int ri = t / SH - R0, ci = u / SW - C0 + k;
                    acc += wa[ri][ci] == me ? wd[ri][ci] : 0.f;
                }
            }
            v[rh][e] = acc;
        }
    }
    // The rows out, in the widest stores the row allows: with L and W multiples of 4 (of 2)
    // every group of 4 (2) that starts inside the row ends inside it and is 16-byte (8-byte)
    // aligned (H*W, xh*W and b*SW are multiples; CuPy's allocations 256-byte aligned), so a
    // warp's stores cover whole sectors instead of every other float twice over.
    const int left = W - b * SW;  // the elements of a row from the thread's first on
#pragma unroll
    for (int rh = 0; rh < SH; ++rh) {
        const int xh = a * SH + rh;
        if (xh >= H) continue;
        float* __restrict__ row = dxp + xh * W + b * SW;
        if (L % 4 == 0 && (W & 3) == 0) {
#pragma unroll
            for (int e = 0; e < L; e += 4)
                if (e < left)
                    *reinterpret_cast<float4*>(row + e) =
                        make_float4(v[rh][e], v[rh][e + 1], v[rh][e + 2], v[rh][e + 3]);
        } else if (L % 2 == 0 && (W & 1) == 0) {
#pragma unroll
            for (int e = 0; e < L; e += 2)
                if (e < left)
                    *reinterpret_cast<float2*>(row + e) = make_float2(v[rh][e], v[rh][e + 1]);
        } else {
#pragma unroll
            for (int e = 0; e < L; ++e)
                if (e < left) row[e] = v[rh][e];
        }
    }
}
"""

ENTRY = {"fwd": r"""
extern "C" __global__ void __launch_bounds__(256)
{name}_fwd(const float* __restrict__ x, float* __restrict__ y, long long* __restrict__ arg,
           unsigned total, int H, int W, int OH, int OW, unsigned m_l, unsigned p_l,
           unsigned m_ow, unsigned p_ow) {{
    tk_maxpool_fwd<{window}>(x, y, arg, total, H, W, OH, OW, m_l, p_l, m_ow, p_ow);
}}
""", "bwd": r"""
extern "C" __global__ void __launch_bounds__(256)
{name}_bwd{cells}(const float* __restrict__ dy, const long long* __restrict__ arg,
           float* __restrict__ dx, unsigned total, int H, int W, int OH, int OW,
           unsigned m_cells, unsigned p_cells, unsigned m_cw, unsigned p_cw) {{
    tk_maxpool_bwd<{window}, {cells}>(dy, arg, dx, total, H, W, OH, OW, m_cells, p_cells,
                                      m_cw, p_cw);
}}
"""}

# The backward's entry points: a thread per cell ("bwd1"), per two ("bwd2") or four
# ("bwd4") cells side by side; backward_cells chooses.
CELLS = (1, 2, 4)
PASSES = ("fwd",) + tuple(f"bwd{c}" for c in CELLS)


def entry(window, passes=PASSES):
    """(name, CUDA source of the entry points ``name_fwd``, ``name_bwd1``, ``name_bwd2``
    and ``name_bwd4``, or of those in ``passes``) for one window (KH, KW, SH, SW, PH, PW,
    DH, DW); ``bwdN`` is the backward with N cells a thread."""
    name = "tk_maxpool_" + "_".join(str(int(v)) for v in window)
    consts = ", ".join(str(int(v)) for v in window)
    return name, "".join(ENTRY[p[:3]].format(name=name, window=consts, cells=p[3:])
                         for p in passes)


def _window(geo):
    return geo.kernel_size + geo.stride + geo.padding + geo.dilation


@functools.lru_cache(maxsize=None)
def _module(window):
    import cupy

    return cupy.RawModule(code=SOURCE + entry(window)[1], options=("--std=c++14",))


def _function(window, pass_):
    """The entry point ``pass_`` (one of PASSES) of ``window``'s module."""
    return _module(window).get_function(entry(window, ())[0] + "_" + pass_)


def fits(x_shape, y_shape):
    """Whether these sizes suit the kernels' 32-bit offsets: fewer than 2**31 elements in
    the input and in the output."""
    return math.prod(x_shape) < 2 ** 31 and math.prod(y_shape) < 2 ** 31


def _grid(total):
    return (max(1, -(-total // THREADS)),), (THREADS,)


@functools.lru_cache(maxsize=1024)
def _launch_args(total, h, w, oh, ow, plane, row):
    """(grid, block, ints) for ``total`` threads whose flat index is split by ``plane``
    and then ``row`` elements; the ints are numpy scalars of the kernel's types (CuPy
    passes a Python int as 64 bits)."""
    m_plane, p_plane = magic(plane)
    m_row, p_row = magic(row)
    return _grid(total) + ((np.uint32(total), np.int32(h), np.int32(w), np.int32(oh),
                            np.int32(ow), np.uint32(m_plane), np.uint32(p_plane),
                            np.uint32(m_row), np.uint32(p_row)),)


def forward_args(x_shape, y_shape):
    """(grid, block, the int arguments after x, y, arg) of a forward launch: a thread per
    output, its index split by OH*OW and OW."""
    (h, w), (oh, ow) = x_shape[2:], y_shape[2:]
    return _launch_args(math.prod(y_shape), h, w, oh, ow, oh * ow, ow)


def backward_cells(window, x_shape):
    """The cells of SH x SW input elements a backward thread owns, side by side: 1.

    Timed on an H100 (results/2026-11-27-NVIDIA-H100-session9/pool.md, % of a copy of
    the same bytes, 20 calls back to back, one / two / four cells a thread): ResNet's
    3x3/2 at batch 512 99/97/89%, LeNet's 2x2/2 at batch 8192 97/92/72%; at the small
    batches all within the noise of each other. Two and four cells issue fewer
    instructions a cell (3x3/2, two: 87 against 134; neighbouring cells share a window
    column) and store float4 rows, but once the instruction issue no longer binds,
    the twice or four times as many threads of one cell a thread keep more loads in
    flight. The others stay entry points (CELLS) for the pool part to time on other
    GPUs; ``window`` and ``x_shape`` are the arguments such a rule would need."""
    return 1


def backward_args(x_shape, y_shape, stride, cells=1):
    """(grid, block, the int arguments after dy, arg, dx) of a backward launch: a thread
    per ``cells`` cells of stride[0] x stride[1] input elements side by side, its index
    split by the threads of a plane, CH*CT, and of a row, CT (CH = ceil(H / SH),
    CT = ceil(W / (SW * cells)))."""
    (h, w), (oh, ow) = x_shape[2:], y_shape[2:]
    ch, ct = -(-h // stride[0]), -(-w // (stride[1] * cells))
    return _launch_args(math.prod(x_shape[:2]) * ch * ct, h, w, oh, ow, ch * ct, ct)


# the parameters of both entry points after their three pointers (ENTRY): total, H, W,
# OH, OW and the two (multiplier, shift) pairs
SCALARS = "IiiiiIIII"


def launcher(fn, grid, block, ints):
    """``launch(a, b, c)`` of an entry point with these int arguments (a plan's): through
    the driver with the ints packed once (_cuda_launch.RawBound), where CuPy's call
    would handle each of the twelve arguments again on every call."""
    from ._cuda_launch import RawBound

    return RawBound(fn.kernel.ptr, grid, block, 3, SCALARS, ints)


def forward_plan(x_shape, geo, op="maxpool2d_forward_cuda_c"):
    """The launch of a forward pass over float32 x of ``x_shape`` (validated here):
    (y's shape, ``launch(x, y, argmax)`` or None where y is empty). kernels.cuda keeps it
    per shape: run_forward then costs two allocations and the launch."""
    x_shape = tuple(x_shape)
    out = geo.output_shape(x_shape, op)
    _check_fits(op, x_shape, out)
    if not math.prod(out):
        return out, None
    return out, launcher(_function(_window(geo), "fwd"), *forward_args(x_shape, out))


def run_forward(plan, x):
    """-> (y, argmax) of forward_plan's pass over x (float32, of the planned shape)."""
    import cupy

    out, launch = plan
    y = cupy.empty(out, dtype=np.float32)
    arg = cupy.empty(out, dtype=np.int64)
    if launch is not None:
        launch(cupy.ascontiguousarray(x), y, arg)
    return y, arg


def backward_plan(x_shape, dy_shape, geo, op="maxpool2d_backward_cuda_c", cells=None):
    """The launch of a backward pass (dy of ``dy_shape``, checked against the window):
    (dx's shape, ``launch(dy, argmax, dx)`` or None where dx is empty). ``cells`` a thread:
    one of CELLS, backward_cells's choice by default."""
    x_shape, dy_shape = tuple(x_shape), tuple(dy_shape)
    if geo.output_shape(x_shape, op) != dy_shape:
        raise ValueError(f"{op}: dy has shape {dy_shape}, expected "
                         f"{geo.output_shape(x_shape, op)}")
    _check_fits(op, x_shape, dy_shape)
    window = _window(geo)
    cells = backward_cells(window, x_shape) if cells is None else cells
    if cells not in CELLS:
        raise ValueError(f"{op}: cells must be one of {CELLS}, got {cells!r}")
    if not math.prod(x_shape):
        return x_shape, None
    return x_shape, launcher(_function(window, f"bwd{cells}"),
                              *backward_args(x_shape, dy_shape, geo.stride, cells))


def run_backward(plan, dy, argmax):
    """-> dx of backward_plan's pass (dy float32, argmax int64, of the planned shape)."""
    import cupy

    x_shape, launch = plan
    dx = cupy.empty(x_shape, dtype=np.float32)
    if launch is not None:
        launch(cupy.ascontiguousarray(dy), cupy.ascontiguousarray(argmax), dx)
    return dx


def _check_fits(op, x_shape, y_shape):
    if not fits(x_shape, y_shape):
        raise ValueError(f"{op}: input {tuple(x_shape)} or output {tuple(y_shape)} has 2**31 "
                         "elements or more, past the kernel's 32-bit offsets")


def _check(op, *arrays):
    check_float(op, *arrays)
    if any(a.dtype != np.float32 for a in arrays):
        raise TypeError(f"{op}: float32 arrays expected, got "
                        f"{', '.join(str(a.dtype) for a in arrays)}")


def maxpool2d_forward(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    """-> y (N, C, OH, OW) float32, argmax (N, C, OH, OW) int64 (h*W + w in the plane), for
    a float32 CuPy array x (N, C, H, W): y = the max over each window's taps inside x."""
    op = "maxpool2d_forward_cuda_c"
    geo = as_pool_geometry(kernel, stride, padding, dilation, ceil_mode, op)
    _check(op, x)
    plans = geometry_memo(geo, "_cuda_c_maxpool_fwd")  # (a plan per shape, as kernels.cuda)
    plan = plans.get(x.shape)
    if plan is None:
        plan = plans[x.shape] = forward_plan(x.shape, geo, op)
    return run_forward(plan, x)


def maxpool2d_backward(dy, argmax, x_shape, kernel=None, stride=None, padding=0, dilation=1,
                       ceil_mode=False):
    """dx (x_shape) float32: dx[n, c, h, w] = sum of dy[n, c, i, j] over the windows (i, j)
    that contain (h, w) and whose argmax is h*W + w."""
    op = "maxpool2d_backward_cuda_c"
    geo = check_maxpool_backward(dy, argmax, x_shape, kernel, stride, padding, dilation,
                                 ceil_mode, op)
    if geo is None:
        raise ValueError(f"{op}: the window (kernel, stride, ...) is required: the kernel "
                         "gathers over the windows that contain each input element")
    if argmax.dtype != np.int64:
        raise TypeError(f"{op}: argmax must be int64 (the forward pass's), got {argmax.dtype}")
    _check(op, dy)
    plans = geometry_memo(geo, "_cuda_c_maxpool_bwd")
    key = (tuple(x_shape), dy.shape)
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = backward_plan(x_shape, dy.shape, geo, op)
    return run_backward(plan, dy, argmax)
