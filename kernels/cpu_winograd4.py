"""Winograd F(4x4, 3x3) convolution on the CPU: 3x3, stride 1, undilated, ungrouped.

The larger sibling of kernels.cpu_winograd's F(2x2, 3x3), with the same layout, threads
and GEMMs (read that module first). Each 4x4 block of outputs comes from a 6x6 block of
inputs with 36 products instead of 144, 4x fewer multiplications than the direct sum
(F(2x2, 3x3): 2.25x). The price is larger transforms (36 positions, 36 GEMMs) and
larger rounding error: the matrices hold 4, 5, 8 and 1/24 where F(2x2)'s hold 1 and 1/2
(float32 results land 1e-6 to 4e-6 from the float64 reference on ResNet's layers,
relative L2, against 2e-7 to 5e-7; the tests allow 2e-5, tests/strategies.TOL4).

The math (Lavin & Gray 2015, interpolation points 0, 1, -1, 2, -2 and infinity). For a
6x6 input tile d and a 3x3 filter g, the 4x4 output tile of their correlation is

    Y = A^T [ (G g G^T) .* (B^T d B) ] A

    B^T = [[4,  0, -5,  0, 1, 0],    G = [[ 1/4,     0,    0],   A^T = [[1, 1,  1, 1,  1, 0],
           [0, -4, -4,  1, 1, 0],         [-1/6,  -1/6, -1/6],          [0, 1, -1, 2, -2, 0],
           [0,  4, -4, -1, 1, 0],         [-1/6,   1/6, -1/6],          [0, 1,  1, 4,  4, 0],
           [0, -2, -1,  2, 1, 0],         [1/24,  1/12,  1/6],          [0, 1, -1, 8, -8, 1]]
           [0,  2, -1, -2, 1, 0],         [1/24, -1/12,  1/6],
           [0,  4,  0, -5, 0, 1]]         [   0,     0,    1]]

and, as there, the sum over input channels becomes one GEMM per position xi of the 6x6
transformed tiles: M[xi] (O, P) = U[xi] (O, C) @ V[xi] (C, P). Output tile (ti, tj)
covers y[4ti : 4ti+4, 4tj : 4tj+4] and reads the padded input at rows 4ti - ph ..
4ti - ph + 5.

The input gradient is the correlation of dy, padded by 2 - p, with the flipped,
transposed filters; the filter gradient is the dual algorithm: with the bilinear form
above, sum_(i,j) f[i, j] Y[i, j] = <G^T [(A f A^T) .* (B^T d B)] G, g>, so per 4x4 tile
f of dy and the 6x6 tile d of x under it,

    dW += G^T [ (A f A^T) .* (B^T d B) ] G,

summed over tiles as 36 GEMMs E[xi] (O, P) @ V[xi]^T (P, C), G^T . G once at the end.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._cpu_blas import NO_TRANS, TRANS, gemm
from .cpu_winograd import _u, plan

POSITIONS = 36  # (m + 2)**2 for m = 4 outputs a tile side

# The transforms' integer factors as float32: exact in either precision, and a Python int
# times a float32 would be computed in float64 (NumPy's promotion), at half the lanes.
# G's fractions (1/6, 1/24) stay float64: the filter transforms are small.
_2, _4, _5, _8 = np.float32(2), np.float32(4), np.float32(5), np.float32(8)
_R6, _R12, _R24 = 1 / 6, 1 / 12, 1 / 24


@njit(cache=True, inline="always")
def _bt(d0, d1, d2, d3, d4, d5):
    """B^T (d0, ..., d5): the input transform of one column (or row) of a tile."""
    a, b = d4 - _4 * d2, d3 - _4 * d1
    c, e = d4 - d2, _2 * (d3 - d1)
    return _4 * d0 - _5 * d2 + d4, a + b, a - b, c + e, c - e, _4 * d1 - _5 * d3 + d5


@njit(cache=True, inline="always")
def _at(m0, m1, m2, m3, m4, m5):
    """A^T (m0, ..., m5): four outputs from six transformed values."""
    p, q = m1 + m2, m1 - m2
    r, s = m3 + m4, m3 - m4
    return m0 + p + r, q + _2 * s, p + _4 * r, q + _8 * s + m5


@njit(cache=True, inline="always")
def _a(f0, f1, f2, f3):
    """A (f0, f1, f2, f3): a column of dy's tile in the transformed domain (6 values)."""
    p, q = f0 + f2, f1 + f3
    r, s = f0 + _4 * f2, _2 * f1 + _8 * f3
    return f0, p + q, p - q, r + s, r - s, f3


@njit(cache=True, inline="always")
def _g(a, b, e):
    """G (a, b, e): a filter column's six transformed values (in float64)."""
    a, b, e = np.float64(a), np.float64(b), np.float64(e)
    h, k = a + e, a * _R24 + e * _R6
    return a * 0.25, -(h + b) * _R6, (b - h) * _R6, k + b * _R12, k - b * _R12, e


@njit(cache=True, inline="always")
def _gt(s0, s1, s2, s3, s4, s5):
    """G^T (s0, ..., s5): three filter values from six (in float64)."""
    s0, s5 = np.float64(s0), np.float64(s5)
    p, q = np.float64(s1) + np.float64(s2), np.float64(s3) + np.float64(s4)
    d, f = np.float64(s2) - np.float64(s1), np.float64(s3) - np.float64(s4)
    return s0 * 0.25 - p * _R6 + q * _R24, d * _R6 + f * _R12, (q - p) * _R6 + s5


@njit(parallel=True, cache=True)
def weight_transform(w, u):
    """u[xi, o, c] = (G w[o, c] G^T)[xi], xi = 6*i + j; w (O, C, 3, 3) C-contiguous,
    u (36, O, C): G times each of g's three columns, then each of the six rows of G g
    times G^T (in float64)."""
    o_, c_ = w.shape[0], w.shape[1]
    for o in prange(o_):
        g = w[o].reshape(c_ * 9)
        for c in range(c_):
            k = 9 * c
            a0, a1, a2, a3, a4, a5 = _g(g[_u(k)], g[_u(k + 3)], g[_u(k + 6)])
            b0, b1, b2, b3, b4, b5 = _g(g[_u(k + 1)], g[_u(k + 4)], g[_u(k + 7)])
            e0, e1, e2, e3, e4, e5 = _g(g[_u(k + 2)], g[_u(k + 5)], g[_u(k + 8)])
            j = _u(c)
            _put6(u, 0, o, j, _g(a0, b0, e0))
            _put6(u, 6, o, j, _g(a1, b1, e1))
            _put6(u, 12, o, j, _g(a2, b2, e2))
            _put6(u, 18, o, j, _g(a3, b3, e3))
            _put6(u, 24, o, j, _g(a4, b4, e4))
            _put6(u, 30, o, j, _g(a5, b5, e5))


@njit(cache=True, inline="always")
def _put6(u, xi, o, c, vals):
    """u[xi + j, o, c] = vals[j] for j < 6."""
    u[xi, o, c], u[xi + 1, o, c], u[xi + 2, o, c] = vals[0], vals[1], vals[2]
    u[xi + 3, o, c], u[xi + 4, o, c], u[xi + 5, o, c] = vals[3], vals[4], vals[5]


def flipped(w):
    """wt (C, O, 3, 3) = w[o, c, 2-p, 2-q]: the filters of the input gradient."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


@njit(cache=True)
def _input_tiles(x, n0, nb, ph, pw, th, tw, pad, rows, v, ld):
    """v[xi, c*ld + b*T + ti*tw + tj] = (B^T d B)[xi] for the 6x6 input tile d at
    (4*ti - ph, 4*tj - pw) of sample n0 + b (zeros outside x); T = th*tw, b < nb.
    As kernels.cpu_winograd._input_tiles: each plane into the zero-bordered ``pad``
    ((4*th + 2) * (4*tw + 2) floats), then per row of tiles B^T's six row combinations
    over whole padded rows (``rows``, 6 * (4*tw + 2)), then B's six column combinations
    over the row's tiles."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    per = th * tw
    hp, wp = 4 * th + 2, 4 * tw + 2
    zero = pad.dtype.type(0)
    for k in range(hp * wp):
        pad[_u(k)] = zero
    r0, r1, r2 = rows[0:wp], rows[wp:2 * wp], rows[2 * wp:3 * wp]
    r3, r4, r5 = rows[3 * wp:4 * wp], rows[4 * wp:5 * wp], rows[5 * wp:6 * wp]
    i0, i1 = max(0, -ph), min(h_, hp - ph)
    j0, j1 = max(0, -pw), min(w_, wp - pw)
    xf = x.reshape(x.size)  # (flat indices: a view per plane and row costs as much as
    for c in range(c_):     # copying a 4x4 plane)
        for b in range(nb):
            plane = ((n0 + b) * c_ + c) * h_ * w_
            for i in range(i0, i1):
                src, dst = plane + i * w_, (i + ph) * wp + pw
                for j in range(j0, j1):
                    pad[_u(dst + j)] = xf[_u(src + j)]
            for ti in range(th):
                base = 4 * ti * wp
                for j in range(wp):
                    k = _u(j)
                    r0[k], r1[k], r2[k], r3[k], r4[k], r5[k] = _bt(
                        pad[_u(base + j)], pad[_u(base + wp + j)],
                        pad[_u(base + 2 * wp + j)], pad[_u(base + 3 * wp + j)],
                        pad[_u(base + 4 * wp + j)], pad[_u(base + 5 * wp + j)])
                col = c * ld + b * per + ti * tw
                _columns(r0, v, 0, col, tw)
                _columns(r1, v, 6, col, tw)
                _columns(r2, v, 12, col, tw)
                _columns(r3, v, 18, col, tw)
                _columns(r4, v, 24, col, tw)
                _columns(r5, v, 30, col, tw)


@njit(cache=True, inline="always")
def _columns(r, v, xi, col, tw):
    """v[xi + j, col + tj] = (row r's tile tj (r[4tj : 4tj+6]) times B)[j], j < 6. (v is
    indexed in two dimensions: a view per row, 36 of them per row of tiles, cost more
    than the transform at ResNet's small planes.)"""
    for tj in range(tw):
        q = 4 * tj
        _row6(v, xi, _u(col + tj), _bt(r[_u(q)], r[_u(q + 1)], r[_u(q + 2)], r[_u(q + 3)],
                                       r[_u(q + 4)], r[_u(q + 5)]))


@njit(cache=True)
def _output_tiles(m, ld, n0, nb, th, tw, y):
    """y[n0 + b, o, 4ti + a, 4tj + e] = (A^T M[:, col] A)[a, e],
    col = o*ld + b*T + ti*tw + tj (outputs past y's edge dropped)."""
    o_, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    per = th * tw
    for o in range(o_):
        for b in range(nb):
            plane = y[n0 + b, o]
            for ti in range(th):
                col = o * ld + b * per + ti * tw
                rows = min(4, oh - 4 * ti)
                for tj in range(tw):
                    k = _u(col + tj)
                    # s = A^T M (4x6), a column j at a time; then each row of s times A
                    s00, s10, s20, s30 = _at(m[0, k], m[6, k], m[12, k], m[18, k], m[24, k],
                                             m[30, k])
                    s01, s11, s21, s31 = _at(m[1, k], m[7, k], m[13, k], m[19, k], m[25, k],
                                             m[31, k])
                    s02, s12, s22, s32 = _at(m[2, k], m[8, k], m[14, k], m[20, k], m[26, k],
                                             m[32, k])
                    s03, s13, s23, s33 = _at(m[3, k], m[9, k], m[15, k], m[21, k], m[27, k],
                                             m[33, k])
                    s04, s14, s24, s34 = _at(m[4, k], m[10, k], m[16, k], m[22, k], m[28, k],
                                             m[34, k])
                    s05, s15, s25, s35 = _at(m[5, k], m[11, k], m[17, k], m[23, k], m[29, k],
                                             m[35, k])
                    cols = min(4, ow - 4 * tj)
                    _put(plane, 4 * ti, 4 * tj, cols, _at(s00, s01, s02, s03, s04, s05))
                    if rows > 1:
                        _put(plane, 4 * ti + 1, 4 * tj, cols, _at(s10, s11, s12, s13, s14, s15))
                    if rows > 2:
                        _put(plane, 4 * ti + 2, 4 * tj, cols, _at(s20, s21, s22, s23, s24, s25))
                    if rows > 3:
                        _put(plane, 4 * ti + 3, 4 * tj, cols, _at(s30, s31, s32, s33, s34, s35))


@njit(cache=True, inline="always")
def _put(plane, i, j, cols, row):
    """plane[i, j : j + cols] = row[:cols] (cols <= 4: the last tile of a row may be cut)."""
    out = plane[i]
    if cols == 4:
        out[_u(j)], out[_u(j + 1)], out[_u(j + 2)], out[_u(j + 3)] = row
    else:
        for e in range(cols):
            out[_u(j + e)] = row[e]


@njit(cache=True, inline="always")
def _scratch(buf, th, tw):
    """A thread's zero-bordered plane and its six transformed rows, out of buf."""
    size = (4 * th + 2) * (4 * tw + 2)
    return buf[:size], buf[size:size + 6 * (4 * tw + 2)]


@njit(parallel=True, cache=True)
def _forward(x, u, ph, pw, th, tw, nb, ld, v_all, m_all, pads, y):
    """y (N, O, OH, OW) from x (N, C, H, W) and the transformed filters u (36, O, C);
    thread t takes samples [t*N/nt, (t+1)*N/nt), nb at a time, with its own
    v_all[t] (36, >= C*ld), m_all[t] (36, >= O*ld) and pads[t] (see plan)."""
    n_, o_, c_ = x.shape[0], u.shape[1], u.shape[2]
    per, sz = th * tw, x.itemsize
    nt = v_all.shape[0]
    for t in prange(nt):
        v, m = v_all[t], m_all[t]
        pad, rows = _scratch(pads[t], th, tw)
        lo, hi = t * n_ // nt, (t + 1) * n_ // nt
        for s in range(lo, hi, nb):
            b = min(nb, hi - s)
            _input_tiles(x, s, b, ph, pw, th, tw, pad, rows, v, ld)
            for k in range(POSITIONS):
                gemm(sz, NO_TRANS, NO_TRANS, o_, b * per, c_, u[k].ctypes.data, c_,
                     v[k].ctypes.data, ld, 0.0, m[k].ctypes.data, ld)
            _output_tiles(m, ld, s, b, th, tw, y)


@njit(cache=True)
def _gradient_tiles(dy, n0, nb, th, tw, pad, e, ld):
    """e[xi, o*ld + b*T + ti*tw + tj] = (A f A^T)[xi] for the 4x4 tile f of dy at
    (4ti, 4tj) of sample n0 + b (zeros past dy's edge). ``pad`` holds (4*th) * (4*tw)
    floats."""
    o_, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    per, wp = th * tw, 4 * tw
    zero = pad.dtype.type(0)
    for k in range(4 * th * wp):
        pad[_u(k)] = zero
    for o in range(o_):
        for b in range(nb):
            plane = dy[n0 + b, o]
            for i in range(oh):
                src, dst = plane[i], i * wp
                for j in range(ow):
                    pad[_u(dst + j)] = src[_u(j)]
            for ti in range(th):
                top, col = 4 * ti * wp, o * ld + b * per + ti * tw
                for tj in range(tw):
                    q = top + 4 * tj
                    # A f (6x4), a column of f at a time
                    t00, t10, t20, t30, t40, t50 = _a(pad[_u(q)], pad[_u(q + wp)],
                                                      pad[_u(q + 2 * wp)], pad[_u(q + 3 * wp)])
                    t01, t11, t21, t31, t41, t51 = _a(pad[_u(q + 1)], pad[_u(q + 1 + wp)],
                                                      pad[_u(q + 1 + 2 * wp)],
                                                      pad[_u(q + 1 + 3 * wp)])
                    t02, t12, t22, t32, t42, t52 = _a(pad[_u(q + 2)], pad[_u(q + 2 + wp)],
                                                      pad[_u(q + 2 + 2 * wp)],
                                                      pad[_u(q + 2 + 3 * wp)])
                    t03, t13, t23, t33, t43, t53 = _a(pad[_u(q + 3)], pad[_u(q + 3 + wp)],
                                                      pad[_u(q + 3 + 2 * wp)],
                                                      pad[_u(q + 3 + 3 * wp)])
                    k = _u(col + tj)
                    _row6(e, 0, k, _a(t00, t01, t02, t03))  # each row of A f times A^T
                    _row6(e, 6, k, _a(t10, t11, t12, t13))
                    _row6(e, 12, k, _a(t20, t21, t22, t23))
                    _row6(e, 18, k, _a(t30, t31, t32, t33))
                    _row6(e, 24, k, _a(t40, t41, t42, t43))
                    _row6(e, 30, k, _a(t50, t51, t52, t53))


@njit(cache=True, inline="always")
def _row6(e, xi, k, vals):
    """e[xi + j, k] = vals[j] for j < 6."""
    e[xi, k], e[xi + 1, k], e[xi + 2, k] = vals[0], vals[1], vals[2]
    e[xi + 3, k], e[xi + 4, k], e[xi + 5, k] = vals[3], vals[4], vals[5]


@njit(parallel=True, cache=True)
def _backward_weight(x, dy, ph, pw, th, tw, nb, ld, v_all, e_all, pads, part):
    """part[t] (36, O, C) = sum over thread t's samples and tiles of E[xi] @ V[xi]^T:
    the transformed filter gradient, before G^T . G."""
    n_, c_, o_ = x.shape[0], x.shape[1], dy.shape[1]
    per, sz = th * tw, x.itemsize
    nt = v_all.shape[0]
    for t in prange(nt):
        v, e, acc = v_all[t], e_all[t], part[t]
        pad, rows = _scratch(pads[t], th, tw)
        lo, hi = t * n_ // nt, (t + 1) * n_ // nt
        for s in range(lo, hi, nb):
            b = min(nb, hi - s)
            _input_tiles(x, s, b, ph, pw, th, tw, pad, rows, v, ld)
            _gradient_tiles(dy, s, b, th, tw, pad, e, ld)
            for k in range(POSITIONS):
                gemm(sz, NO_TRANS, TRANS, o_, c_, b * per, e[k].ctypes.data, ld,
                     v[k].ctypes.data, ld, 1.0, acc[k].ctypes.data, c_)


@njit(parallel=True, cache=True)
def _filter_gradient(s, dw):
    """dw[o, c] (3x3) = G^T S G, S[i, j] = s[6i + j, o, c]."""
    o_, c_ = s.shape[1], s.shape[2]
    for o in prange(o_):
        g = dw[o].reshape(c_ * 9)
        for c in range(c_):
            k = _u(c)
            # r = G^T S (3x6), a column j of S at a time
            r00, r10, r20 = _gt(s[0, o, k], s[6, o, k], s[12, o, k], s[18, o, k], s[24, o, k],
                                s[30, o, k])
            r01, r11, r21 = _gt(s[1, o, k], s[7, o, k], s[13, o, k], s[19, o, k], s[25, o, k],
                                s[31, o, k])
            r02, r12, r22 = _gt(s[2, o, k], s[8, o, k], s[14, o, k], s[20, o, k], s[26, o, k],
                                s[32, o, k])
            r03, r13, r23 = _gt(s[3, o, k], s[9, o, k], s[15, o, k], s[21, o, k], s[27, o, k],
                                s[33, o, k])
            r04, r14, r24 = _gt(s[4, o, k], s[10, o, k], s[16, o, k], s[22, o, k], s[28, o, k],
                                s[34, o, k])
            r05, r15, r25 = _gt(s[5, o, k], s[11, o, k], s[17, o, k], s[23, o, k], s[29, o, k],
                                s[35, o, k])
            q = _u(9 * c)
            g[q], g[q + 1], g[q + 2] = _gt(r00, r01, r02, r03, r04, r05)
            g[q + 3], g[q + 4], g[q + 5] = _gt(r10, r11, r12, r13, r14, r15)
            g[q + 6], g[q + 7], g[q + 8] = _gt(r20, r21, r22, r23, r24, r25)


def _tiles(size):
    return -(-size // 4)


def skewed(lead, rows, cols, dtype, zero=False):
    """A (*lead, rows, cols) array of zeros (or uninitialised) whose (rows, cols) matrices
    are each C-contiguous but lie 64 bytes further apart than their size: the filter
    transforms write, and the filter gradient's G^T . G reads, all 36 side by side, and
    at ResNet's sizes (a multiple of 4 KiB apart) 36 streams fall into one L1 set (the
    512x512 transform took 19 ms, 4 with the skew)."""
    dtype = np.dtype(dtype)
    size, skew = rows * cols, max(1, 64 // dtype.itemsize)
    buf = (np.zeros if zero else np.empty)((*lead, size + skew), dtype=dtype)
    return buf[..., :size].reshape(*lead, rows, cols)


def forward(x, w, ph, pw, nt):
    """y (N, O, H + 2ph - 2, W + 2pw - 2) = the correlation of x (N, C, H, W) with
    w (O, C, 3, 3), zero padding (ph, pw), stride 1: through F(4x4, 3x3). The caller
    holds kernels._cpu_blas.one_thread()."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    oh, ow = h + 2 * ph - 2, wd + 2 * pw - 2
    th, tw = _tiles(oh), _tiles(ow)
    u = skewed((POSITIONS,), o, c, x.dtype)
    weight_transform(np.ascontiguousarray(w), u)
    nt = max(1, min(nt, n))
    nb, ld, v_all, m_all, pads = plan(n, c, o, th, tw, nt, x.dtype, 4)
    y = np.empty((n, o, oh, ow), dtype=x.dtype)
    _forward(np.ascontiguousarray(x), u, ph, pw, th, tw, nb, ld, v_all, m_all, pads, y)
    return y


def backward_input(dy, w, x_shape, ph, pw, nt):
    """dx (N, C, H, W) of the 3x3, stride-1 convolution with padding (ph, pw) <= 2: the
    correlation of dy padded by (2 - ph, 2 - pw) with the flipped, transposed filters,
    through F(4x4, 3x3). The caller holds one_thread()."""
    n, o = dy.shape[:2]
    c, h, wd = x_shape[1:]
    th, tw = _tiles(h), _tiles(wd)
    u = skewed((POSITIONS,), c, o, dy.dtype)
    weight_transform(flipped(w), u)
    nt = max(1, min(nt, n))
    nb, ld, v_all, m_all, pads = plan(n, o, c, th, tw, nt, dy.dtype, 4)
    dx = np.empty((n, c, h, wd), dtype=dy.dtype)
    _forward(np.ascontiguousarray(dy), u, 2 - ph, 2 - pw, th, tw, nb, ld, v_all, m_all,
             pads, dx)
    return dx


def backward_weight(dy, x, ph, pw, nt):
    """dW (O, C, 3, 3) of the 3x3, stride-1 convolution with padding (ph, pw), through
    the dual algorithm F(3x3, 4x4) (see the module's docstring). The caller holds
    one_thread()."""
    n, o, oh, ow = dy.shape
    c = x.shape[1]
    th, tw = _tiles(oh), _tiles(ow)
    nt = max(1, min(nt, n))
    nb, ld, v_all, e_all, pads = plan(n, c, o, th, tw, nt, x.dtype, 4)
    part = skewed((nt, POSITIONS), o, c, x.dtype, zero=True)
    _backward_weight(np.ascontiguousarray(x), np.ascontiguousarray(dy), ph, pw, th, tw,
                     nb, ld, v_all, e_all, pads, part)
    for t in range(1, nt):
        part[0] += part[t]
    dw = np.empty((o, c, 3, 3), dtype=x.dtype)
    _filter_gradient(part[0], dw)
    return dw
