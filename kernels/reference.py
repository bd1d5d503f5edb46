"""Reference kernels: plain NumPy, float64-capable, written to be read.

These are the ground truth every other implementation is tested against. Convolution and
pooling loop over the KH x KW kernel taps and vectorise over everything else, so each
line is one term of the defining sum (s stride, d dilation, xpad the padded input):

    conv:     y[n,o,i,j] = sum_{c in group(o),p,q} xpad[n, c, i*sh + p*dh, j*sw + q*dw] * w[o,c',p,q]
    max pool: y[n,c,i,j] = max_{p,q}   xpad[n, c, i*sh + p*dh, j*sw + q*dw]
    avg pool: y[n,c,i,j] = 1/div[i,j] sum_{p,q} xpad[n, c, i*sh + p, j*sw + q]

With ``groups`` G the channels split into G blocks; output block g sees input block g only
(c' is the channel's index inside its block). Every primitive accepts the geometry record
of ``kernels._common`` in place of its stride / kernel argument, or plain ints.
"""
from __future__ import annotations

import numpy as np

from ._common import (as_conv_geometry, as_pool_geometry, check_dy, check_float, check_matmul,
                      check_maxpool_backward)

__all__ = ["matmul", "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight",
           "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
           "VERSIONS"]


def matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b), op = transpose of the last two axes when asked."""
    check_matmul(a, b, trans_a, trans_b)
    a = np.swapaxes(a, -1, -2) if trans_a else a
    b = np.swapaxes(b, -1, -2) if trans_b else b
    return np.matmul(a, b)


def _window(xpad, p, q, oh, ow, sh, sw):
    """The (N, C, OH, OW) view of xpad[:, :, i*sh + p, j*sw + q] over all i, j."""
    return xpad[:, :, p:p + sh * (oh - 1) + 1:sh, q:q + sw * (ow - 1) + 1:sw]


def _padded(x, geo, out, value=0.0):
    """x padded by geo.padding on the low sides and, on the high sides, by as much as the
    last window reaches (the nominal padding, 'same''s extra row, or ceil_mode's overhang)."""
    lo = geo.padding
    hi = [max(0, (o - 1) * s + e - n - p) for o, s, e, n, p in
          zip(out, geo.stride, geo.effective_kernel, x.shape[2:], lo)]
    return np.pad(x, ((0, 0), (0, 0), (lo[0], hi[0]), (lo[1], hi[1])), constant_values=value)


def _crop(xpad, geo, size):
    return xpad[:, :, geo.padding[0]:geo.padding[0] + size[0],
                geo.padding[1]:geo.padding[1] + size[1]]


def conv2d_forward(x, w, stride=1, padding=0, dilation=1, groups=1):
    """y (N,O,OH,OW) = grouped, dilated cross-correlation of x (N,C,H,W) with
    w (O,C/groups,KH,KW)."""
    check_float("conv2d_forward", x, w)
    geo = as_conv_geometry(stride, padding, dilation, groups, w.shape, "conv2d_forward")
    n, o, oh, ow = geo.output_shape(x.shape, w.shape, "conv2d_forward")
    (sh, sw), (dh, dw), g = geo.stride, geo.dilation, geo.groups
    cg = w.shape[1]
    xpad = _padded(x, geo, (oh, ow))
    y = np.zeros((n, g, o // g, oh, ow), dtype=x.dtype)
    for p in range(w.shape[2]):
        for q in range(w.shape[3]):
            win = _window(xpad, p * dh, q * dw, oh, ow, sh, sw).reshape(n, g, cg, oh, ow)
            y += np.einsum("ngchw,goc->ngohw", win, w[:, :, p, q].reshape(g, o // g, w.shape[1]))
    return y.reshape(n, o, oh, ow)


def conv2d_backward_input(dy, w, x_shape, stride=1, padding=0, dilation=1, groups=1):
    """dx[n,c,h,w] = sum over (o in group(c), i, j, p, q) with i*sh + p*dh - ph = h and
    j*sw + q*dw - pw = w of dy[n,o,i,j] * w[o,c',p,q]."""
    check_float("conv2d_backward_input", dy, w)
    geo = as_conv_geometry(stride, padding, dilation, groups, w.shape, "conv2d_backward_input")
    out = geo.output_shape(x_shape, w.shape, "conv2d_backward_input")
    check_dy("conv2d_backward_input", dy, out)
    n, o, oh, ow = out
    c = x_shape[1]
    (sh, sw), (dh, dw), g = geo.stride, geo.dilation, geo.groups
    dxpad = _padded(np.zeros(tuple(x_shape), dtype=dy.dtype), geo, (oh, ow))
    dyg = dy.reshape(n, g, o // g, oh, ow)
    for p in range(w.shape[2]):
        for q in range(w.shape[3]):
            _window(dxpad, p * dh, q * dw, oh, ow, sh, sw)[...] += np.einsum(
                "ngohw,goc->ngchw", dyg, w[:, :, p, q].reshape(g, o // g, w.shape[1])).reshape(
                    n, c, oh, ow)
    return np.ascontiguousarray(_crop(dxpad, geo, x_shape[2:]))


def conv2d_backward_weight(dy, x, w_shape, stride=1, padding=0, dilation=1, groups=1):
    """dw[o,c',p,q] = sum_{n,i,j} dy[n,o,i,j] * xpad[n, c, i*sh + p*dh, j*sw + q*dw]
    (c the input channel c' of o's group)."""
    check_float("conv2d_backward_weight", dy, x)
    geo = as_conv_geometry(stride, padding, dilation, groups, w_shape, "conv2d_backward_weight")
    out = geo.output_shape(x.shape, w_shape, "conv2d_backward_weight")
    check_dy("conv2d_backward_weight", dy, out)
    n, o, oh, ow = out
    (sh, sw), (dh, dw), g = geo.stride, geo.dilation, geo.groups
    cg = w_shape[1]
    xpad = _padded(x, geo, (oh, ow))
    dyg = dy.reshape(n, g, o // g, oh, ow)
    dw_ = np.zeros(tuple(w_shape), dtype=x.dtype)
    for p in range(w_shape[2]):
        for q in range(w_shape[3]):
            win = _window(xpad, p * dh, q * dw, oh, ow, sh, sw).reshape(n, g, cg, oh, ow)
            dw_[:, :, p, q] = np.einsum("ngohw,ngchw->goc", dyg, win).reshape(o, -1)
    return dw_


def maxpool2d_forward(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    """-> y (N,C,OH,OW) and argmax (int64, flat index h*W + w into the unpadded plane).

    Only taps inside the input compete; the first maximum (in p, q order) wins ties; a NaN
    in a window wins (the result is NaN, as in PyTorch)."""
    check_float("maxpool2d_forward", x)
    geo = as_pool_geometry(kernel, stride, padding, dilation, ceil_mode, "maxpool2d_forward")
    n, c, oh, ow = geo.output_shape(x.shape, "maxpool2d_forward")
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel_size, geo.stride, geo.dilation
    H, W = x.shape[2:]
    xpad = _padded(x, geo, (oh, ow), -np.inf)
    y = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    arg = np.full((n, c, oh, ow), -1, dtype=np.int64)
    rows = np.arange(oh)[:, None] * sh - geo.padding[0]
    cols = np.arange(ow)[None, :] * sw - geo.padding[1]
    for p in range(kh):
        for q in range(kw):
            v = _window(xpad, p * dh, q * dw, oh, ow, sh, sw)
            r, s = rows + p * dh, cols + q * dw
            inside = (r >= 0) & (r < H) & (s >= 0) & (s < W)
            better = inside & ((v > y) | (np.isnan(v) & ~np.isnan(y)) | (arg < 0))
            y = np.where(better, v, y)
            arg = np.where(better, r * W + s, arg)
    return y, arg


def maxpool2d_backward(dy, argmax, x_shape, kernel=None, stride=None, padding=0, dilation=1,
                       ceil_mode=False):
    """dx[n,c,h,w] = sum of dy[n,c,i,j] over the windows whose argmax is h*W + w.

    The window (a PoolGeometry, or kernel/stride/... as in the forward) is optional: the
    argmax already says where each gradient goes; when given, dy is checked against it."""
    check_maxpool_backward(dy, argmax, x_shape, kernel, stride, padding, dilation, ceil_mode)
    n, c, h, w = tuple(x_shape)
    # a window with no tap inside the input (possible with dilation) has argmax -1 and
    # passes no gradient, as in PyTorch: send it to a spare slot that is dropped
    dx = np.zeros((n, c, h * w + 1), dtype=dy.dtype)
    nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    arg = np.where(argmax < 0, h * w, argmax).reshape(n, c, dy[0, 0].size if n * c else 0)
    np.add.at(dx, (nn[:, :, None], cc[:, :, None], arg), dy.reshape(arg.shape))
    return dx[:, :, :h * w].reshape(x_shape)


def _avg_divisor(geo, size, dtype):
    """(OH, OW) divisors: PyTorch's window size (see PoolGeometry.divisors) or the override."""
    if geo.divisor_override is not None:
        return dtype.type(geo.divisor_override)
    rows, cols = geo.divisors(size)
    return (rows[:, None] * cols[None, :]).astype(dtype)


def avgpool2d_forward(x, kernel, stride=None, padding=0, ceil_mode=False,
                      count_include_pad=True, divisor_override=None):
    """y[n,c,i,j] = window sum of the zero-padded x / div[i,j] (PyTorch's divisor rules)."""
    check_float("avgpool2d_forward", x)
    geo = as_pool_geometry(kernel, stride, padding, 1, ceil_mode, "avgpool2d_forward",
                           count_include_pad=count_include_pad,
                           divisor_override=divisor_override)
    n, c, oh, ow = geo.output_shape(x.shape, "avgpool2d_forward")
    (kh, kw), (sh, sw) = geo.kernel_size, geo.stride
    xpad = _padded(x, geo, (oh, ow))
    y = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for p in range(kh):
        for q in range(kw):
            y += _window(xpad, p, q, oh, ow, sh, sw)
    return y / _avg_divisor(geo, x.shape[2:], x.dtype)


def avgpool2d_backward(dy, x_shape, kernel, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True, divisor_override=None):
    """dx[n,c,h,w] = sum over the windows containing (h, w) of dy[n,c,i,j] / div[i,j]."""
    check_float("avgpool2d_backward", dy)
    geo = as_pool_geometry(kernel, stride, padding, 1, ceil_mode, "avgpool2d_backward",
                           count_include_pad=count_include_pad,
                           divisor_override=divisor_override)
    out = geo.output_shape(x_shape, "avgpool2d_backward")
    check_dy("avgpool2d_backward", dy, out)
    oh, ow = out[2:]
    (kh, kw), (sh, sw) = geo.kernel_size, geo.stride
    dxpad = _padded(np.zeros(tuple(x_shape), dtype=dy.dtype), geo, (oh, ow))
    g = dy / _avg_divisor(geo, x_shape[2:], dy.dtype)
    for p in range(kh):
        for q in range(kw):
            _window(dxpad, p, q, oh, ow, sh, sw)[...] += g
    return np.ascontiguousarray(_crop(dxpad, geo, x_shape[2:]))


# primitive -> version name -> function (one version each: the reference is the definition)
VERSIONS = {name: {"default": globals()[name]} for name in __all__ if name != "VERSIONS"}
