"""Winograd F(2x2, 3x3) convolution on the CPU: 3x3, stride 1, undilated, ungrouped.

Why: on a 2-core Xeon, PyTorch's oneDNN runs ResNet's deep 3x3 layers (256@8, 512@4)
at about 200 GFLOP/s, faster than MKL's own SGEMM (about 150 on the same shapes), so
im2col + GEMM, bounded by the GEMM, cannot catch it. Winograd's minimal filtering does
the same convolution with 2.25x fewer multiplications: each 2x2 block of outputs comes
from a 4x4 block of inputs with 16 products instead of 36.

The math (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).
For a 4x4 input tile d and a 3x3 filter g, the 2x2 output tile of their correlation is

    Y = A^T [ (G g G^T) .* (B^T d B) ] A

    B^T = [[1, 0, -1,  0],      G = [[1,    0,   0],      A^T = [[1, 1,  1,  0],
           [0, 1,  1,  0],           [1/2,  1/2, 1/2],           [0, 1, -1, -1]]
           [0, -1, 1,  0],           [1/2, -1/2, 1/2],
           [0, 1,  0, -1]]           [0,    0,   1]]

With the 16 positions xi of the 4x4 transformed tiles, the sum over input channels c
becomes 16 matrix products, one per position:

    U[xi] (O, C)  = (G w[o, c] G^T)[xi]                    (weight transform)
    V[xi] (C, P)  = (B^T d[c, tile] B)[xi]                  (input transform; P tiles)
    M[xi] (O, P)  = U[xi] @ V[xi]                           (16 GEMMs)
    y[o, tile]    = A^T M[:, o, tile] A                     (output transform)

Output tile (ti, tj) covers y[2ti : 2ti+2, 2tj : 2tj+2] and reads the padded input at
rows 2ti - ph .. 2ti - ph + 3 (zeros outside x). The transforms use only additions and
halvings; float32 results land about 2e-7 (relative L2) from the float64 reference on
random data, as the direct sum does (tested).

The gradient with respect to the input of a stride-1 convolution is itself one
(``backward_input``): a correlation of dy, padded by 2 - p, with the flipped filters
transposed, wt[c, o, p, q] = w[o, c, 2-p, 2-q].

Layout and threads as in kernels.cpu's blocked lowering: each thread of our one pool
takes a share of the samples, a block of them at a time; it transforms the block into
its own 16 matrices V[xi] (C, cols), runs the 16 products on a single-threaded BLAS GEMM
into its own M[xi] (O, cols), and writes the block's outputs (see ``plan`` for the
layout). The caller holds kernels._cpu_blas.one_thread(), as for the blocked lowering.

"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._cpu_blas import NO_TRANS, TRANS, gemm

# columns (tiles of a block of samples) a GEMM should get at least, and the most bytes
# a thread's V and M buffers may take together
_MIN_COLUMNS = 256
_MAX_BYTES = 8 * 2 ** 20


@njit(cache=True, inline="always")
def _u(i):
    """An index Numba need not wrap around (known to be >= 0): with signed indices its
    negative-index check keeps LLVM from vectorising the loops below."""
    return np.uint64(i)


@njit(parallel=True, cache=True)
def weight_transform(w, u):
    """u[xi, o, c] = (G w[o, c] G^T)[xi], xi = 4*i + j; w (O, C, 3, 3) C-contiguous,
    u (16, O, C). Row i of G g is, from g's rows g0, g1, g2: g0, (g0 + g1 + g2)/2,
    (g0 - g1 + g2)/2 or g2; and a row (a, b, e) times G^T is a, (a + b + e)/2,
    (a - b + e)/2, e. One row i at a time over all c: four output streams, not sixteen
    (5x faster, 512x512 filters)."""
    o_, c_ = w.shape[0], w.shape[1]
    for o in prange(o_):
        g = w[o].reshape(c_ * 9)
        for i in range(4):
            r0, r1, r2, r3 = u[4 * i, o], u[4 * i + 1, o], u[4 * i + 2, o], u[4 * i + 3, o]
            for c in range(c_):
                k = 9 * c
                a, b, e = _gg(g, k, i), _gg(g, k + 1, i), _gg(g, k + 2, i)
                j = _u(c)
                r0[j] = a
                r1[j] = 0.5 * (a + b + e)
                r2[j] = 0.5 * (a - b + e)
                r3[j] = e


@njit(cache=True, inline="always")
def _gg(g, k, i):
    """(G g)[i, q], g's column q starting at flat index k: g[k], g[k + 3], g[k + 6]."""
    a, b, e = g[_u(k)], g[_u(k + 3)], g[_u(k + 6)]
    if i == 0:
        return a
    if i == 3:
        return e
    if i == 1:
        return 0.5 * (a + b + e)
    return 0.5 * (a - b + e)


@njit(parallel=True, cache=True)
def weight_transform_flipped(w, u):
    """u[xi, c, o] = (G wt[c, o] G^T)[xi] for the flipped, transposed filters of the
    input gradient, wt[c, o, p, q] = w[o, c, 2-p, 2-q]; w (O, C, 3, 3), u (16, C, O).
    G's rows 1 and 2 are symmetric and rows 0 and 3 swap under the flip, so this is
    u[(i, j), c, o] = U[(s(i), s(j)), o, c] with s swapping 0 and 3."""
    o_, c_ = w.shape[0], w.shape[1]
    wf = w.reshape(o_ * c_ * 9)
    for c in prange(c_):
        for i in range(4):
            si = 3 - i if i == 0 or i == 3 else i
            r0, r1, r2, r3 = u[4 * i, c], u[4 * i + 1, c], u[4 * i + 2, c], u[4 * i + 3, c]
            for o in range(o_):
                k = 9 * (o * c_ + c)
                a, b, e = _gg(wf, k, si), _gg(wf, k + 1, si), _gg(wf, k + 2, si)
                j = _u(o)
                # row s(i) of U times G^T, its columns in the order s(0), 1, 2, s(3)
                r0[j] = e
                r1[j] = 0.5 * (a + b + e)
                r2[j] = 0.5 * (a - b + e)
                r3[j] = a


@njit(cache=True)
def _input_tiles(x, n0, nb, ph, pw, th, tw, pad, rows, v, ld):
    """v[xi, c*ld + b*T + ti*tw + tj] = (B^T d B)[xi] for the 4x4 input tile d at
    (2*ti - ph, 2*tj - pw) of sample n0 + b (zeros outside x); T = th*tw, b < nb.

    Each plane is first copied into ``pad`` ((2*th + 2) * (2*tw + 2) floats, zeros
    around), so no load needs a bounds test; then per row of tiles B^T's four row
    combinations go over whole padded rows (``rows``, 4 * (2*tw + 2)), and B's four
    column combinations over the row's tiles, contiguous stores into v's rows."""
    c_, h_, w_ = x.shape[1], x.shape[2], x.shape[3]
    per = th * tw
    hp, wp = 2 * th + 2, 2 * tw + 2
    zero = pad.dtype.type(0)
    for k in range(hp * wp):
        pad[_u(k)] = zero
    r0, r1, r2, r3 = rows[0:wp], rows[wp:2 * wp], rows[2 * wp:3 * wp], rows[3 * wp:4 * wp]
    # the input rows and columns that land inside pad (the rest is padding or past the
    # last tile, never read)
    i0, i1 = max(0, -ph), min(h_, hp - ph)
    j0, j1 = max(0, -pw), min(w_, wp - pw)
    for c in range(c_):
        for b in range(nb):
            plane = x[n0 + b, c]
            for i in range(i0, i1):
                src, dst = plane[i], (i + ph) * wp + pw
                for j in range(j0, j1):
                    pad[_u(dst + j)] = src[_u(j)]
            for ti in range(th):
                base = 2 * ti * wp
                for j in range(wp):
                    d0 = pad[_u(base + j)]
                    d1 = pad[_u(base + wp + j)]
                    d2 = pad[_u(base + 2 * wp + j)]
                    d3 = pad[_u(base + 3 * wp + j)]
                    r0[_u(j)] = d0 - d2
                    r1[_u(j)] = d1 + d2
                    r2[_u(j)] = d2 - d1
                    r3[_u(j)] = d1 - d3
                col = c * ld + b * per + ti * tw
                _columns(r0, v[0], v[1], v[2], v[3], col, tw)
                _columns(r1, v[4], v[5], v[6], v[7], col, tw)
                _columns(r2, v[8], v[9], v[10], v[11], col, tw)
                _columns(r3, v[12], v[13], v[14], v[15], col, tw)


@njit(cache=True, inline="always")
def _columns(r, v0, v1, v2, v3, col, tw):
    """(v0, v1, v2, v3)[col + tj] = row r's tile tj (r[2tj : 2tj+4]) times B."""
    for tj in range(tw):
        a, b = r[_u(2 * tj)], r[_u(2 * tj + 1)]
        e, f = r[_u(2 * tj + 2)], r[_u(2 * tj + 3)]
        v0[_u(col + tj)] = a - e
        v1[_u(col + tj)] = b + e
        v2[_u(col + tj)] = e - b
        v3[_u(col + tj)] = b - f


@njit(cache=True)
def _output_tiles(m, ld, n0, nb, th, tw, y):
    """y[n0 + b, o, 2ti + a, 2tj + e] = (A^T M[:, col] A)[a, e], col = o*ld + b*T + ti*tw + tj
    (outputs past y's edge, for odd sizes, are dropped)."""
    o_, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    per = th * tw
    full = ow // 2  # tiles of a row whose both columns lie inside y
    m0, m1, m2, m3, m4, m5, m6, m7 = m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]
    m8, m9, m10, m11, m12, m13, m14, m15 = (m[8], m[9], m[10], m[11], m[12], m[13], m[14],
                                            m[15])
    for o in range(o_):
        for b in range(nb):
            plane = y[n0 + b, o]
            for ti in range(th):
                top = plane[2 * ti]
                two = 2 * ti + 1 < oh
                bottom = plane[2 * ti + 1] if two else top
                col = o * ld + b * per + ti * tw
                for tj in range(tw):
                    k = _u(col + tj)
                    # s = A^T M (2x4), then s A (2x2)
                    s00 = m0[k] + m4[k] + m8[k]
                    s01 = m1[k] + m5[k] + m9[k]
                    s02 = m2[k] + m6[k] + m10[k]
                    s03 = m3[k] + m7[k] + m11[k]
                    s10 = m4[k] - m8[k] - m12[k]
                    s11 = m5[k] - m9[k] - m13[k]
                    s12 = m6[k] - m10[k] - m14[k]
                    s13 = m7[k] - m11[k] - m15[k]
                    j, j1 = _u(2 * tj), _u(2 * tj + 1)
                    if tj < full:
                        top[j] = s00 + s01 + s02
                        top[j1] = s01 - s02 - s03
                        if two:
                            bottom[j] = s10 + s11 + s12
                            bottom[j1] = s11 - s12 - s13
                    else:  # the last tile of an odd row: its left column only
                        top[j] = s00 + s01 + s02
                        if two:
                            bottom[j] = s10 + s11 + s12


@njit(parallel=True, cache=True)
def _forward(x, u, ph, pw, th, tw, nb, ld, v_all, m_all, pads, y):
    """y (N, O, OH, OW) from x (N, C, H, W) and the transformed filters u (16, O, C);
    thread t takes samples [t*N/nt, (t+1)*N/nt), nb at a time, with its own
    v_all[t] (16, >= C*ld), m_all[t] (16, >= O*ld), ld >= nb*T, and pads[t] (see plan)."""
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
            for k in range(16):
                gemm(sz, NO_TRANS, NO_TRANS, o_, b * per, c_, u[k].ctypes.data, c_,
                     v[k].ctypes.data, ld, 0.0, m[k].ctypes.data, ld)
            _output_tiles(m, ld, s, b, th, tw, y)


@njit(cache=True)
def _gradient_tiles(dy, n0, nb, th, tw, pad, e, ld):
    """e[xi, o*ld + b*T + ti*tw + tj] = (A f A^T)[xi] for the 2x2 tile f of dy at (2ti, 2tj)
    of sample n0 + b (zeros past dy's edge), A = A^T's transpose (4x2): a row (a, b)
    times A^T is a, a + b, a - b, -b. ``pad`` holds (2*th) * (2*tw) floats."""
    o_, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    per, wp = th * tw, 2 * tw
    zero = pad.dtype.type(0)
    for k in range(2 * th * wp):
        pad[_u(k)] = zero
    e0, e1, e2, e3, e4, e5, e6, e7 = e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]
    e8, e9, e10, e11, e12, e13, e14, e15 = (e[8], e[9], e[10], e[11], e[12], e[13], e[14],
                                            e[15])
    for o in range(o_):
        for b in range(nb):
            plane = dy[n0 + b, o]
            for i in range(oh):
                src, dst = plane[i], i * wp
                for j in range(ow):
                    pad[_u(dst + j)] = src[_u(j)]
            for ti in range(th):
                top, col = 2 * ti * wp, o * ld + b * per + ti * tw
                for tj in range(tw):
                    q = top + 2 * tj
                    a, f = pad[_u(q)], pad[_u(q + 1)]
                    g, h = pad[_u(q + wp)], pad[_u(q + wp + 1)]
                    # A f: rows (a, f), (a+g, f+h), (a-g, f-h), (-g, -h); then each times A^T
                    k = _u(col + tj)
                    e0[k], e1[k], e2[k], e3[k] = a, a + f, a - f, -f
                    p0, p1 = a + g, f + h
                    e4[k], e5[k], e6[k], e7[k] = p0, p0 + p1, p0 - p1, -p1
                    m0, m1 = a - g, f - h
                    e8[k], e9[k], e10[k], e11[k] = m0, m0 + m1, m0 - m1, -m1
                    e12[k], e13[k], e14[k], e15[k] = -g, -g - h, h - g, h


@njit(parallel=True, cache=True)
def _backward_weight(x, dy, ph, pw, th, tw, nb, ld, v_all, e_all, pads, part):
    """part[t] (16, O, C) = sum over thread t's samples and tiles of E[xi] @ V[xi]^T,
    E from dy's tiles (_gradient_tiles), V from x's (_input_tiles): the transformed
    filter gradient, before G^T . G."""
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
            for k in range(16):
                gemm(sz, NO_TRANS, TRANS, o_, c_, b * per, e[k].ctypes.data, ld,
                     v[k].ctypes.data, ld, 1.0, acc[k].ctypes.data, c_)


@njit(parallel=True, cache=True)
def _filter_gradient(s, dw):
    """dw[o, c] (3x3) = G^T S G, S[i, j] = s[4i + j, o, c]. G^T's rows combine four
    values (a, b, e, f) into a + (b + e)/2, (b - e)/2, (b + e)/2 + f."""
    o_, c_ = s.shape[1], s.shape[2]
    for o in prange(o_):
        g = dw[o].reshape(c_ * 9)
        for c in range(c_):
            k = _u(c)
            # r = G^T S (3x4), column j from S's column j
            r00, r10, r20 = _gt(s[0, o, k], s[4, o, k], s[8, o, k], s[12, o, k])
            r01, r11, r21 = _gt(s[1, o, k], s[5, o, k], s[9, o, k], s[13, o, k])
            r02, r12, r22 = _gt(s[2, o, k], s[6, o, k], s[10, o, k], s[14, o, k])
            r03, r13, r23 = _gt(s[3, o, k], s[7, o, k], s[11, o, k], s[15, o, k])
            q = 9 * c
            g[_u(q)], g[_u(q + 1)], g[_u(q + 2)] = _gt(r00, r01, r02, r03)
            g[_u(q + 3)], g[_u(q + 4)], g[_u(q + 5)] = _gt(r10, r11, r12, r13)
            g[_u(q + 6)], g[_u(q + 7)], g[_u(q + 8)] = _gt(r20, r21, r22, r23)


@njit(cache=True, inline="always")
def _gt(a, b, e, f):
    """G^T (a, b, e, f): a + (b + e)/2, (b - e)/2, (b + e)/2 + f."""
    h, d = 0.5 * (b + e), 0.5 * (b - e)
    return a + h, d, h + f


@njit(cache=True, inline="always")
def _scratch(buf, th, tw):
    """A thread's zero-bordered plane and its four transformed rows, out of buf."""
    size = (2 * th + 2) * (2 * tw + 2)
    return buf[:size], buf[size:size + 4 * (2 * tw + 2)]


def plan(n, c, o, th, tw, nt, dtype, m=2):
    """(nb, ld, v_all, m_all, pads): samples per block, the row length of the
    transformed tiles, and each thread's buffers, v_all (nt, P, C*ld + skew) and m_all
    (nt, P, O*ld + skew) -- P = (m + 2)**2 matrices (C, ld) and (O, ld) a thread, 16 for
    F(2x2, 3x3), 36 for F(4x4, 3x3) (kernels.cpu_winograd4) -- and pads (nt, ...), a
    zero-bordered plane and m + 2 rows (allocated here, not in the kernels: an np.empty
    inside compiled code is bound when Numba compiles it).

    The skew of 64 bytes between the matrices matters: the transforms write (or read)
    them all side by side, and at a distance of a multiple of 4 KiB (ResNet's sizes) the
    streams fall into one set of the L1 cache, which has 12 ways (the dy transform of
    64@32 ran 4x slower)."""
    itemsize = np.dtype(dtype).itemsize
    tiles, positions = th * tw, (m + 2) ** 2
    nb = max(1, -(-_MIN_COLUMNS // tiles))
    nb = max(1, min(nb, _MAX_BYTES // max(1, positions * (c + o) * tiles * itemsize),
                    -(-n // nt)))
    ld, skew = nb * tiles, max(1, 64 // itemsize)
    v_all = np.empty((nt, positions, c * ld + skew), dtype=dtype)
    m_all = np.empty((nt, positions, o * ld + skew), dtype=dtype)
    wp = m * tw + 2
    pads = np.empty((nt, (m * th + 2) * wp + (m + 2) * wp), dtype=dtype)
    return nb, ld, v_all, m_all, pads


def forward(x, w, ph, pw, nt):
    """y (N, O, H + 2ph - 2, W + 2pw - 2) = the correlation of x (N, C, H, W) with
    w (O, C, 3, 3), zero padding (ph, pw), stride 1: through F(2x2, 3x3). The caller
    holds kernels._cpu_blas.one_thread() (our threads call the GEMM)."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    oh, ow = h + 2 * ph - 2, wd + 2 * pw - 2
    th, tw = -(-oh // 2), -(-ow // 2)
    u = np.empty((16, o, c), dtype=x.dtype)
    weight_transform(np.ascontiguousarray(w), u)
    nt = max(1, min(nt, n))
    nb, ld, v_all, m_all, pads = plan(n, c, o, th, tw, nt, x.dtype)
    y = np.empty((n, o, oh, ow), dtype=x.dtype)
    _forward(np.ascontiguousarray(x), u, ph, pw, th, tw, nb, ld, v_all, m_all, pads, y)
    return y


def backward_input(dy, w, x_shape, ph, pw, nt):
    """dx (N, C, H, W) of the 3x3, stride-1 convolution with padding (ph, pw) <= 2: the
    correlation of dy padded by (2 - ph, 2 - pw) with the flipped, transposed filters,
    through F(2x2, 3x3). The caller holds one_thread()."""
    n, o, oh, ow = dy.shape
    c, h, wd = x_shape[1:]
    th, tw = -(-h // 2), -(-wd // 2)
    u = np.empty((16, c, o), dtype=dy.dtype)
    weight_transform_flipped(np.ascontiguousarray(w), u)
    nt = max(1, min(nt, n))
    nb, ld, v_all, m_all, pads = plan(n, o, c, th, tw, nt, dy.dtype)
    dx = np.empty((n, c, h, wd), dtype=dy.dtype)
    _forward(np.ascontiguousarray(dy), u, 2 - ph, 2 - pw, th, tw, nb, ld, v_all, m_all,
             pads, dx)
    return dx


def backward_weight(dy, x, ph, pw, nt):
    """dW (O, C, 3, 3) = sum_n sum_(i,j) dy[n, o, i, j] xpad[n, c, i + p, j + q] of the
    3x3, stride-1 convolution with padding (ph, pw), through the dual algorithm
    F(3x3, 2x2): per 2x2 tile of dy and the 4x4 tile of x under it,
    dW += G^T [(A f A^T) .* (B^T d B)] G, summed over tiles as 16 GEMMs.
    The caller holds one_thread()."""
    n, o, oh, ow = dy.shape
    c = x.shape[1]
    th, tw = -(-oh // 2), -(-ow // 2)
    nt = max(1, min(nt, n))
    nb, ld, v_all, e_all, pads = plan(n, c, o, th, tw, nt, x.dtype)
    part = np.zeros((nt, 16, o, c), dtype=x.dtype)
    _backward_weight(np.ascontiguousarray(x), np.ascontiguousarray(dy), ph, pw, th, tw,
                     nb, ld, v_all, e_all, pads, part)
    for t in range(1, nt):
        part[0] += part[t]
    dw = np.empty((o, c, 3, 3), dtype=x.dtype)
    _filter_gradient(part[0], dw)
    return dw
