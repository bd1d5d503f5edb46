"""Reference kernels: plain NumPy, float64-capable, written to be read.

These are the ground truth every other implementation is tested against. Convolution and
pooling loop over the KH x KW kernel offsets and vectorise over everything else, so each
line is one term of the defining sum:

    conv:     y[n,o,i,j] = sum_{c,p,q} xpad[n, c, i*sh + p, j*sw + q] * w[o,c,p,q]
    max pool: y[n,c,i,j] = max_{p,q}   xpad[n, c, i*sh + p, j*sw + q]
    avg pool: y[n,c,i,j] = 1/(KH*KW) sum_{p,q} xpad[n, c, i*sh + p, j*sw + q]
"""
from __future__ import annotations

import numpy as np

from ._common import check_float, check_matmul, conv2d_out_shape, pool2d_out_shape

__all__ = ["matmul", "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight",
           "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward"]


def matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b), op = transpose of the last two axes when asked."""
    check_matmul(a, b, trans_a, trans_b)
    a = np.swapaxes(a, -1, -2) if trans_a else a
    b = np.swapaxes(b, -1, -2) if trans_b else b
    return np.matmul(a, b)


def _window(xpad, p, q, oh, ow, sh, sw):
    """The (N, C, OH, OW) view of xpad[:, :, i*sh + p, j*sw + q] over all i, j."""
    return xpad[:, :, p:p + sh * (oh - 1) + 1:sh, q:q + sw * (ow - 1) + 1:sw]


def _pad(x, ph, pw, value=0.0):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def conv2d_forward(x, w, stride=1, padding=0):
    """y (N,O,OH,OW) = cross-correlation of x (N,C,H,W) with w (O,C,KH,KW)."""
    check_float("conv2d_forward", x, w)
    (sh, sw), (ph, pw), (n, o, oh, ow) = conv2d_out_shape(x.shape, w.shape, stride, padding)
    xpad = _pad(x, ph, pw)
    y = np.zeros((n, o, oh, ow), dtype=x.dtype)
    for p in range(w.shape[2]):
        for q in range(w.shape[3]):
            y += np.einsum("nchw,oc->nohw", _window(xpad, p, q, oh, ow, sh, sw), w[:, :, p, q])
    return y


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0):
    """dx[n,c,h,w] = sum over (o,i,j,p,q) with i*sh+p-ph = h, j*sw+q-pw = w of dy[n,o,i,j] w[o,c,p,q]."""
    check_float("conv2d_backward_input", dy, w)
    (sh, sw), (ph, pw), out = conv2d_out_shape(x_shape, w.shape, stride, padding,
                                               "conv2d_backward_input")
    _check_dy("conv2d_backward_input", dy, out)
    n, c, h, wd = x_shape
    oh, ow = out[2:]
    dxpad = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=dy.dtype)
    for p in range(w.shape[2]):
        for q in range(w.shape[3]):
            _window(dxpad, p, q, oh, ow, sh, sw)[...] += np.einsum("nohw,oc->nchw", dy,
                                                                   w[:, :, p, q])
    return dxpad[:, :, ph:ph + h, pw:pw + wd]


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0):
    """dw[o,c,p,q] = sum_{n,i,j} dy[n,o,i,j] * xpad[n, c, i*sh + p, j*sw + q]."""
    check_float("conv2d_backward_weight", dy, x)
    (sh, sw), (ph, pw), out = conv2d_out_shape(x.shape, w_shape, stride, padding,
                                               "conv2d_backward_weight")
    _check_dy("conv2d_backward_weight", dy, out)
    oh, ow = out[2:]
    xpad = _pad(x, ph, pw)
    dw = np.zeros(w_shape, dtype=x.dtype)
    for p in range(w_shape[2]):
        for q in range(w_shape[3]):
            dw[:, :, p, q] = np.einsum("nohw,nchw->oc", dy, _window(xpad, p, q, oh, ow, sh, sw))
    return dw


def maxpool2d_forward(x, kernel, stride=None, padding=0):
    """-> y (N,C,OH,OW) and argmax (int64, flat index h*W + w into the unpadded plane).

    Padding is -inf so it never wins; the first maximum (in p, q order) wins ties; a NaN
    in a window wins (the result is NaN, as in PyTorch)."""
    check_float("maxpool2d_forward", x)
    (kh, kw), (sh, sw), (ph, pw), (n, c, oh, ow) = pool2d_out_shape(
        x.shape, kernel, stride, padding, "maxpool2d_forward")
    H, W = x.shape[2:]
    xpad = _pad(x, ph, pw, -np.inf)
    y = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    arg = np.zeros((n, c, oh, ow), dtype=np.int64)
    rows = np.arange(oh)[:, None] * sh - ph
    cols = np.arange(ow)[None, :] * sw - pw
    for p in range(kh):
        for q in range(kw):
            v = _window(xpad, p, q, oh, ow, sh, sw)
            better = (v > y) | (np.isnan(v) & ~np.isnan(y))
            y = np.where(better, v, y)
            arg = np.where(better, (rows + p) * W + (cols + q), arg)
    return y, arg


def maxpool2d_backward(dy, argmax, x_shape):
    """dx[n,c,h,w] = sum of dy[n,c,i,j] over the windows whose argmax is h*W + w."""
    n, c, h, w = x_shape
    if dy.shape != argmax.shape or dy.shape[:2] != (n, c):
        raise ValueError(f"maxpool2d_backward: dy {tuple(dy.shape)} and argmax "
                         f"{tuple(argmax.shape)} do not match x {tuple(x_shape)}")
    dx = np.zeros((n, c, h * w), dtype=dy.dtype)
    nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    np.add.at(dx, (nn[:, :, None], cc[:, :, None], argmax.reshape(n, c, -1)),
              dy.reshape(n, c, -1))
    return dx.reshape(x_shape)


def avgpool2d_forward(x, kernel, stride=None, padding=0):
    """y = window sums of the zero-padded x divided by KH*KW (count_include_pad=True)."""
    check_float("avgpool2d_forward", x)
    (kh, kw), (sh, sw), (ph, pw), (n, c, oh, ow) = pool2d_out_shape(
        x.shape, kernel, stride, padding, "avgpool2d_forward")
    xpad = _pad(x, ph, pw)
    y = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            y += _window(xpad, p, q, oh, ow, sh, sw)
    return y / x.dtype.type(kh * kw)


def avgpool2d_backward(dy, x_shape, kernel, stride=None, padding=0):
    """dx[n,c,h,w] = sum over windows containing (h, w) of dy[n,c,i,j] / (KH*KW)."""
    check_float("avgpool2d_backward", dy)
    (kh, kw), (sh, sw), (ph, pw), out = pool2d_out_shape(
        x_shape, kernel, stride, padding, "avgpool2d_backward")
    _check_dy("avgpool2d_backward", dy, out)
    n, c, h, w = x_shape
    oh, ow = out[2:]
    dxpad = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dy.dtype)
    g = dy / dy.dtype.type(kh * kw)
    for p in range(kh):
        for q in range(kw):
            _window(dxpad, p, q, oh, ow, sh, sw)[...] += g
    return dxpad[:, :, ph:ph + h, pw:pw + w]


def _check_dy(op, dy, out_shape):
    if tuple(dy.shape) != tuple(out_shape):
        raise ValueError(f"{op}: dy has shape {tuple(dy.shape)}, expected {tuple(out_shape)}")
