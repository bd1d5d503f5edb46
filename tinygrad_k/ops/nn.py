"""Neural-network Functions: convolution, pooling, softmax family, dropout, cross-entropy.

Convolution and pooling call the backend's kernel primitives (``ctx.kernels``), so the
same Function runs the Numba CPU kernels or the Numba CUDA kernels.
"""
from __future__ import annotations

from ..autograd import Function


class Conv2d(Function):
    """Cross-correlation (what every framework calls conv2d), NCHW / OIHW, with stride s,
    zero padding, dilation d and G groups (channel blocks; output block g sees input
    block g only, c' is c's index inside its block; w is (O, C/G, KH, KW)):

        y[n,o,i,j] = b[o] + sum_{c in group(o),p,q} x_pad[n, c, i*sh + p*dh, j*sw + q*dw] * w[o,c',p,q]

    Gradients (the two "transposed" correlations, ``kernels.conv2d_backward_*``):
        dx_pad[n,c,i*sh+p*dh, j*sw+q*dw] += g[n,o,i,j] * w[o,c',p,q]   (then crop the padding)
        dw[o,c',p,q] = sum_{n,i,j} g[n,o,i,j] * x_pad[n,c,i*sh+p*dh, j*sw+q*dw]
        db[o]        = sum_{n,i,j} g[n,o,i,j]
    ``geometry`` is the ``kernels._common.ConvGeometry`` (validated once by the caller);
    the same record goes to every kernel.
    """

    @staticmethod
    def forward(ctx, x, w, b, geometry):
        geometry.output_shape(x.shape, w.shape)
        _check_bias_dtype(geometry.op, x, w, b, w.shape[0])
        y = ctx.kernels.conv2d_forward(x, w, geometry)
        if b is not None:
            ctx.backend.add_channel_bias_(y, b)
        ctx.save_for_backward(x, w)
        ctx.geometry, ctx.has_bias = geometry, b is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        k = ctx.kernels
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = k.conv2d_backward_input(g, w, x.shape, ctx.geometry)
        if ctx.needs_input_grad[1]:
            dw = k.conv2d_backward_weight(g, x, w.shape, ctx.geometry)
        if not ctx.has_bias:
            return dx, dw
        return dx, dw, ctx.backend.channel_sum(g)


class ConvTranspose2d(Function):
    """The transposed convolution: the input gradient of the Conv2d with the same geometry,
    applied to x as if x were that conv's output gradient. x (N, Cin, H, W), weight
    (Cin, Cout/G, KH, KW) (PyTorch's layout: the conv's (O, C/G, KH, KW) with O = Cin):

        y[n,c,i*sh+p*dh-ph, j*sw+q*dw-pw] += x[n,o,i,j] * w[o,c',p,q]   (+ b[c])
        OH = (H - 1)*sh - 2*ph + dh*(KH - 1) + output_padding_h + 1

    y = conv2d_backward_input(x, w, y.shape), so by the adjoint identities
        dx = conv2d_forward(g, w)                (the conv is the transpose's transpose)
        dw = conv2d_backward_weight(x, g, w.shape)  (x plays dy, g plays the conv input)
        db[c] = sum_{n,i,j} g[n,c,i,j]
    When output_padding makes the conv of y longer than H (possible only with dilation),
    x is zero-extended to that length and dx is cropped back.
    """

    @staticmethod
    def forward(ctx, x, w, b, geometry):
        op = geometry.op
        if x.ndim != 4 or w.ndim != 4:
            raise ValueError(f"{op}: expected input (N, Cin, H, W) and weight "
                             f"(Cin, Cout/groups, KH, KW), got {tuple(x.shape)} and "
                             f"{tuple(w.shape)}")
        if x.shape[1] != w.shape[0]:
            raise ValueError(f"{op}: input {tuple(x.shape)} has {x.shape[1]} channels but "
                             f"weight {tuple(w.shape)} expects {w.shape[0]}")
        cout = w.shape[1] * geometry.groups
        _check_bias_dtype(op, x, w, b, cout)
        size = transposed_out_size(geometry, x.shape[2:])
        y_shape = (x.shape[0], cout) + size
        xe = _zero_extend(ctx.xp, x, geometry.out_size(size))
        y = ctx.kernels.conv2d_backward_input(xe, w, y_shape, geometry)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        ctx.save_for_backward(xe, w)
        ctx.geometry, ctx.has_bias, ctx.x_size = geometry, b is not None, x.shape[2:]
        return y

    @staticmethod
    def backward(ctx, g):
        xe, w = ctx.saved_tensors
        k = ctx.kernels
        dx = dw = None
        if ctx.needs_input_grad[0]:
            h, wd = ctx.x_size
            dx = k.conv2d_forward(g, w, ctx.geometry)[:, :, :h, :wd]
        if ctx.needs_input_grad[1]:
            dw = k.conv2d_backward_weight(xe, g, w.shape, ctx.geometry)
        if not ctx.has_bias:
            return dx, dw
        return dx, dw, ctx.backend.channel_sum(g)


def transposed_out_size(geometry, size):
    """(H - 1)*s - 2p + d*(k - 1) + output_padding + 1 per axis, checked non-empty."""
    out = tuple((n - 1) * s - 2 * p + e + op for n, s, p, e, op in
                zip(size, geometry.stride, geometry.padding, geometry.effective_kernel,
                    geometry.output_padding))
    if min(out) < 1:
        raise ValueError(f"{geometry.op}: input size {tuple(size)} with kernel "
                         f"{geometry.kernel_size}, stride {geometry.stride}, padding "
                         f"{geometry.padding} gives an empty output {out}")
    return out


def _zero_extend(xp, x, size):
    """x with its spatial axes zero-extended at the high end to ``size`` (or x itself)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    out = xp.zeros(x.shape[:2] + tuple(size), dtype=x.dtype)
    out[:, :, :x.shape[2], :x.shape[3]] = x
    return out


def _check_bias_dtype(op, x, w, b, channels):
    if b is not None and tuple(b.shape) != (channels,):
        raise ValueError(f"{op}: bias of shape {tuple(b.shape)}, expected ({channels},)")
    if x.dtype != w.dtype:
        raise TypeError(f"{op}: input dtype {x.dtype} and weight dtype {w.dtype} differ")


class MaxPool2d(Function):
    """y[n,c,i,j] = max_{p,q} x_pad[n,c,i*sh+p*dh, j*sw+q*dw]   (padding is -inf).

    dx[n,c,h,w] = sum of g[n,c,i,j] over the windows whose maximum sat at (h,w); the
    forward keeps those positions (``argmax``) so backward is one scatter-add.
    ``indices`` (a list or None) receives the argmax array for ``return_indices``.
    """

    @staticmethod
    def forward(ctx, x, geometry, indices=None):
        geometry.output_shape(x.shape)
        y, argmax = ctx.kernels.maxpool2d_forward(x, geometry)
        if indices is not None:
            indices.append(argmax)
        ctx.save_for_backward(argmax)
        ctx.x_shape, ctx.geometry = x.shape, geometry
        return y

    @staticmethod
    def backward(ctx, g):
        (argmax,) = ctx.saved_tensors
        return ctx.kernels.maxpool2d_backward(g, argmax, ctx.x_shape, ctx.geometry)


class AvgPool2d(Function):
    """y[n,c,i,j] = 1/div[i,j] sum_{p,q} x_pad[n,c,i*sh+p, j*sw+q]   (zero padding);
    div is KH*KW, or the window clipped to the padded input (ceil_mode), or to the input
    (count_include_pad=False), or divisor_override, as in PyTorch.

    dx[n,c,h,w] = sum over the windows containing (h,w) of g[n,c,i,j] / div[i,j].
    """

    @staticmethod
    def forward(ctx, x, geometry):
        geometry.output_shape(x.shape)
        ctx.x_shape, ctx.geometry = x.shape, geometry
        return ctx.kernels.avgpool2d_forward(x, geometry)

    @staticmethod
    def backward(ctx, g):
        return ctx.kernels.avgpool2d_backward(g, ctx.x_shape, ctx.geometry)


class Softmax(Function):
    """s = e^(z - max z) / sum e^(z - max z) along ``dim``.

    ds/dz is s_i (delta_ij - s_j), so dz = s * (g - sum(g * s)) along ``dim``.
    """

    @staticmethod
    def forward(ctx, z, dim):
        xp = ctx.xp
        e = xp.exp(z - z.max(axis=dim, keepdims=True))
        s = e / e.sum(axis=dim, keepdims=True)
        ctx.save_for_backward(s)
        ctx.dim = dim
        return s

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return s * (g - (g * s).sum(axis=ctx.dim, keepdims=True))


class LogSoftmax(Function):
    """y = z - logsumexp(z) along ``dim`` (shifted by max z: never overflows).

    dy_i/dz_j = delta_ij - softmax(z)_j, so dz = g - softmax(z) * sum(g).
    """

    @staticmethod
    def forward(ctx, z, dim):
        xp = ctx.xp
        shifted = z - z.max(axis=dim, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g - ctx.xp.exp(y) * g.sum(axis=ctx.dim, keepdims=True)


class Dropout(Function):
    """Inverted dropout: y = x * m / (1 - p), m ~ Bernoulli(1 - p).   dx = g * m / (1 - p)."""

    @staticmethod
    def forward(ctx, x, p, uniform):
        scale = x.dtype.type(1.0 / (1.0 - p))
        mask = (uniform >= p).astype(x.dtype) * scale
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask


class CrossEntropy(Function):
    """Fused log-softmax + negative log-likelihood over classes (axis 1).

    logits z (N, C), integer targets t (N,). With p = softmax(z) and label smoothing e:
        loss_n = (1 - e) * (lse(z_n) - z_n[t_n]) + e * (lse(z_n) - mean_c z_n[c])
        dz_n   = dloss_n * (p_n - (1 - e) * onehot(t_n) - e / C)
    Rows with t_n == ignore_index contribute 0 and are left out of the mean.
    reduction: "mean" (over non-ignored rows), "sum" or "none".
    On a GPU the count of rows and the target check stay on the device (no wait in the
    middle of the step): a target outside [0, C) makes the loss NaN and raises IndexError
    at the next read from the device, as PyTorch's device-side assert does.
    """

    node_name = "NllLossBackward0"

    @staticmethod
    def forward(ctx, z, target, reduction, label_smoothing, ignore_index):
        xp = ctx.xp
        n = z.shape[0]
        loss, probs, safe_t, valid, count, total = ctx.backend.cross_entropy_forward(
            z, target, ignore_index)
        e = label_smoothing
        if e:
            lse = loss + z[xp.arange(n), safe_t]
            loss = (1 - e) * loss + e * (lse - z.mean(axis=1))
            if valid is not None:
                loss = xp.where(valid, loss, loss.dtype.type(0))
            total = loss.sum()
        ctx.save_for_backward(probs, safe_t, valid)
        ctx.reduction, ctx.e, ctx.count = reduction, e, count
        if reduction == "none":
            return loss
        if reduction == "sum":
            return xp.asarray(total, dtype=z.dtype)
        return ctx.backend.cross_entropy_mean(total, count, z.dtype)

    @staticmethod
    def backward(ctx, g):
        probs, t, valid = ctx.saved_tensors
        e = ctx.e
        if not e:
            return ctx.backend.cross_entropy_backward(probs, t, valid, g, ctx.count,
                                                      ctx.reduction), None
        dloss = ctx.backend.cross_entropy_dloss(probs.shape[0], probs.dtype, valid, g,
                                                ctx.count, ctx.reduction)
        dz = ctx.backend.softmax_xent_backward(probs, t, (1 - e) * dloss)
        dz += e * dloss[:, None] * (probs - 1.0 / probs.shape[1])
        return dz, None
