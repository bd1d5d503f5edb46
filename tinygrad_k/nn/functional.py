"""``tinygrad_k.nn.functional``: the functional API, as ``torch.nn.functional``.

Each function validates its arguments and calls one Function from ``tinygrad_k.ops``
(or a few, for the composites). Argument names and order follow PyTorch, including the
deprecated ``size_average``/``reduce`` slots of the losses, so that a positional call
written for torch binds the same way here (``nll_loss(input, target, weight=None,
size_average=None, ignore_index=-100, reduce=None, reduction="mean")``, ...).
"""
from __future__ import annotations

import numpy as np

from kernels._common import conv_geometry, int_tuple, pool_geometry

from ..ops import elementwise as E
from ..ops import linalg as L
from ..ops import loss as _L
from ..ops import movement as M
from ..ops import nn as N
from ..ops import norm as _N
from ..random import uniform as _uniform
from ..tensor import Tensor, stack

__all__ = ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "softplus", "softmax",
           "log_softmax", "linear", "conv1d", "conv2d", "conv_transpose2d", "max_pool1d",
           "max_pool2d", "avg_pool1d", "avg_pool2d", "dropout",
           "cross_entropy", "bias_relu", "pad", "nll_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "mse_loss", "l1_loss", "batch_norm",
           "layer_norm", "embedding", "adaptive_avg_pool2d", "one_hot", "dropout1d",
           "dropout2d", "group_norm", "normalize", "interpolate",
           "scaled_dot_product_attention", "bilinear"]


def relu(x):
    return x.relu()


def leaky_relu(x, negative_slope=0.01):
    return x.leaky_relu(negative_slope)


def sigmoid(x):
    return x.sigmoid()


def tanh(x):
    return x.tanh()


def gelu(x, approximate="none"):
    return x.gelu(approximate)


def silu(x):
    """x * sigmoid(x) (swish)."""
    return x * x.sigmoid()


def softplus(x, beta=1.0, threshold=20.0):
    """ln(1 + e^(beta x)) / beta, and x itself where beta x > threshold (as PyTorch)."""
    return E.Softplus.apply(x, float(beta), float(threshold))


def softmax(x, dim=-1):
    return x.softmax(dim)


def log_softmax(x, dim=-1):
    return x.log_softmax(dim)


_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def pad(input, pad, mode="constant", value=None):
    """Pad the last len(pad) // 2 dimensions; ``pad`` lists (before, after) pairs starting
    from the LAST dimension, as PyTorch.

    ``constant`` fills with ``value`` (0 when None). ``reflect`` mirrors without repeating
    the edge (pads < the dimension's size), ``replicate`` repeats the edge, ``circular``
    wraps around (pads <= the size); these three pad at most the last 3 dimensions of a
    (C, *) or (N, C, *) input, and each is one ``ops.movement.Resample`` node per padded
    dimension (its backward scatter-adds the gradient of every copy onto its source).
    """
    if mode not in _PAD_MODES:
        raise NotImplementedError(f"pad: mode {mode!r} is not supported; expected one of "
                                  f"{', '.join(_PAD_MODES)}")
    pad = tuple(int(p) for p in pad)
    if mode == "constant":
        return input.pad(pad, 0.0 if value is None else value)
    if value is not None and value != 0:
        raise ValueError(f"pad: padding mode {mode!r} doesn't take in value argument")
    k = len(pad) // 2
    if len(pad) % 2 or not 1 <= k <= 3:
        raise ValueError(f"pad: mode {mode!r} pads 1 to 3 dimensions, got pad {pad}")
    if input.ndim not in (k + 1, k + 2):
        raise NotImplementedError(
            f"pad: mode {mode!r} with {len(pad)} pad values expects a {k + 1}-D or {k + 2}-D "
            f"input ((C, *) or (N, C, *)), got shape {input.shape}")
    out = input
    for i in range(k):
        axis = input.ndim - 1 - i
        lo, hi = pad[2 * i], pad[2 * i + 1]
        n = input.shape[axis]
        if lo < 0 or hi < 0:
            raise ValueError(f"pad: mode {mode!r} needs non-negative pads, got {pad}")
        if (mode == "reflect" and max(lo, hi) >= n) or (mode == "circular" and max(lo, hi) > n):
            rel = "<" if mode == "reflect" else "<="
            raise ValueError(f"pad: mode {mode!r} needs padding {rel} the input size, but got "
                             f"padding ({lo}, {hi}) for dimension {axis} of size {n} "
                             f"(input {input.shape})")
        if lo == hi == 0:
            continue
        j = np.arange(-lo, n + hi)
        if mode == "replicate":
            j = np.clip(j, 0, n - 1)
        elif mode == "reflect":
            j = np.abs(j)
            j = (n - 1) - np.abs((n - 1) - j)
        else:
            j = j % n
        out = M.Resample.apply(out, axis, input.backend.asarray(j[None]))
    return out


def linear(x, weight, bias=None):
    """y = x W^T + b; x (..., in), W (out, in), b (out,)."""
    if weight._backend is not x._backend or (bias is not None
                                             and bias._backend is not x._backend):
        _same_device("linear", x, weight, bias)
    if x.dtype != weight.dtype:
        raise TypeError(f"linear: input dtype {x.dtype} and weight dtype {weight.dtype} differ")
    return L.Linear.apply(x, weight, bias)


def bias_relu(x, bias):
    """relu(x + b) with b (C,) along axis 1, fused into one kernel on the GPU."""
    if bias.ndim != 1 or x.ndim < 2 or x.shape[1] != bias.shape[0]:
        raise ValueError(f"bias_relu: bias of shape {bias.shape} does not match axis 1 of "
                         f"input {x.shape}")
    return E.BiasReLU.apply(x, bias)


def _spatial_input(x, nd, op):
    """PyTorch takes (C, *spatial) as one unbatched sample: -> ((N, C, *spatial), unbatched)."""
    if x.ndim == nd + 1:
        return x.unsqueeze(0), True
    if x.ndim != nd + 2:
        dims = ", ".join("LHW"[-nd:] if nd == 1 else "HW")
        raise ValueError(f"{op}: expected an input (N, C, {dims}) or (C, {dims}), got shape "
                         f"{tuple(x.shape)}")
    return x, False


def _kernel_size_of(weight, nd, op):
    if weight.ndim != nd + 2:
        raise ValueError(f"{op}: expected a {nd + 2}-D weight, got shape {tuple(weight.shape)}")
    return tuple(weight.shape[2:])


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D cross-correlation: input (N, C, L), weight (O, C/groups, K); conv2d on (N, C, 1, L)."""
    geometry = conv_geometry(_kernel_size_of(weight, 1, "conv1d"), stride, padding, dilation,
                             groups, ndim=1, op="conv1d")
    return conv(input, weight, bias, geometry)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, NCHW input, OIHW weight (O, C/groups, KH, KW); padding may be
    'same' or 'valid' (see ``ops.nn.Conv2d`` for the math)."""
    geometry = conv_geometry(_kernel_size_of(weight, 2, "conv2d"), stride, padding, dilation,
                             groups, op="conv2d")
    return conv(input, weight, bias, geometry)


def conv(input, weight, bias, geometry):
    """A convolution with an already validated ``kernels._common.ConvGeometry`` (what the
    Conv modules call, having validated their arguments once in ``__init__``)."""
    op, nd = geometry.op, geometry.ndim
    _same_device(op, input, weight, bias)
    x, unbatched = _spatial_input(input, nd, op)
    geometry.output_shape(x.shape, weight.shape)
    if nd == 1:
        y = N.Conv2d.apply(x.unsqueeze(2), weight.unsqueeze(2), bias, geometry.as_2d())
        y = y.squeeze(2)
    else:
        y = N.Conv2d.apply(x, weight, bias, geometry)
    return y.squeeze(0) if unbatched else y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """Transposed 2-D convolution (the input gradient of conv2d): input (N, Cin, H, W),
    weight (Cin, Cout/groups, KH, KW) -> (N, Cout, OH, OW),
    OH = (H - 1)*stride - 2*padding + dilation*(KH - 1) + output_padding + 1."""
    geometry = conv_geometry(_kernel_size_of(weight, 2, "conv_transpose2d"), stride, padding,
                             dilation, groups, op="conv_transpose2d",
                             output_padding=output_padding)
    return conv_transpose(input, weight, bias, geometry)


def conv_transpose(input, weight, bias, geometry):
    """conv_transpose2d with an already validated geometry (what ConvTranspose2d calls)."""
    op = geometry.op
    _same_device(op, input, weight, bias)
    x, unbatched = _spatial_input(input, 2, op)
    y = N.ConvTranspose2d.apply(x, weight, bias, geometry)
    return y.squeeze(0) if unbatched else y


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over windows of (N, C, L); indices are positions along L."""
    geometry = pool_geometry(kernel_size, stride, padding, dilation, ceil_mode, ndim=1,
                             op="max_pool1d")
    return max_pool(input, geometry, return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over (dilated) KHxKW windows (stride defaults to kernel_size, -inf padding);
    ``return_indices``: also the flat h*W + w position of each maximum (int64)."""
    geometry = pool_geometry(kernel_size, stride, padding, dilation, ceil_mode,
                             op="max_pool2d")
    return max_pool(input, geometry, return_indices)


def max_pool(input, geometry, return_indices=False):
    """Max pooling with an already validated ``kernels._common.PoolGeometry``."""
    nd = geometry.ndim
    x, unbatched = _spatial_input(input, nd, geometry.op)
    geometry.output_shape(x.shape)
    if nd == 1:
        x = x.unsqueeze(2)
    indices = [] if return_indices else None
    y = N.MaxPool2d.apply(x, geometry.as_2d(), indices)
    if nd == 1:
        y = y.squeeze(2)
    if unbatched:
        y = y.squeeze(0)
    if not return_indices:
        return y
    idx = indices[0]
    idx = idx[:, :, 0] if nd == 1 else idx
    idx = idx[0] if unbatched else idx
    return y, Tensor._wrap(idx, input._backend, False)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """Mean over windows of (N, C, L) (PyTorch's divisor rules, as avg_pool2d)."""
    geometry = pool_geometry(kernel_size, stride, padding, 1, ceil_mode, ndim=1,
                             op="avg_pool1d", count_include_pad=count_include_pad)
    return avg_pool(input, geometry)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Mean over KHxKW windows: zero padding counted unless count_include_pad=False;
    ceil_mode windows are clipped to the padded input; divisor_override replaces the
    window size (PyTorch's rules)."""
    geometry = pool_geometry(kernel_size, stride, padding, 1, ceil_mode, op="avg_pool2d",
                             count_include_pad=count_include_pad,
                             divisor_override=divisor_override)
    return avg_pool(input, geometry)


def avg_pool(input, geometry):
    """Average pooling with an already validated ``kernels._common.PoolGeometry``."""
    nd = geometry.ndim
    x, unbatched = _spatial_input(input, nd, geometry.op)
    geometry.output_shape(x.shape)
    y = N.AvgPool2d.apply(x.unsqueeze(2) if nd == 1 else x, geometry.as_2d())
    y = y.squeeze(2) if nd == 1 else y
    return y.squeeze(0) if unbatched else y


def dropout(x, p=0.5, training=True):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    u = _uniform(x.shape, x.dtype, x.backend)
    return N.Dropout.apply(x, p, u)


def _legacy_reduction(size_average, reduce, reduction):
    """PyTorch's deprecated ``size_average``/``reduce`` pair mapped to ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    if reduce is not None and not reduce:
        return "none"
    return "sum" if size_average is not None and not size_average else "mean"


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0):
    """Log-softmax + NLL, torch.nn.functional.cross_entropy's signature and argument order.

    input (N, C) logits (or (N, C, d1, ...)), target (N,) or (N, d1, ...) integer class
    indices; ``weight`` (C,) class weights. Without weights it is one fused node."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if weight is not None:
        return weighted_cross_entropy(input, target, weight, ignore_index, reduction,
                                      label_smoothing)
    return _cross_entropy(input, target, reduction, label_smoothing, ignore_index)


def _cross_entropy(input, target, reduction, label_smoothing, ignore_index):
    """The fused, unweighted cross-entropy node (``cross_entropy`` without ``weight``)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got "
                         f"{reduction!r}")
    if not isinstance(target, Tensor):
        target = Tensor(target, device=input.device)
    if target.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices (int64), got "
                        f"dtype {target.dtype}; for probabilities use a soft-target loss")
    if input.ndim < 2:
        raise ValueError(f"cross_entropy: input must be (N, C) logits, got shape {input.shape}")
    if input.ndim > 2:  # (N, C, d...) -> (N*d..., C)
        c = input.shape[1]
        perm = (0,) + tuple(range(2, input.ndim)) + (1,)
        flat = input.permute(*perm).reshape(-1, c)
        expected = (input.shape[0],) + input.shape[2:]
        if target.shape != expected:
            raise ValueError(f"cross_entropy: target shape {target.shape}, expected {expected} "
                             f"for input {input.shape}")
        out = _cross_entropy(flat, target.reshape(-1), reduction, label_smoothing, ignore_index)
        return out.reshape(expected) if reduction == "none" else out
    if target.shape != (input.shape[0],):
        raise ValueError(f"cross_entropy: input {input.shape} needs target of shape "
                         f"({input.shape[0]},), got {target.shape}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if target._backend is not input._backend:
        _same_device("cross_entropy", input, target)
    return N.CrossEntropy.apply(input, target, reduction, float(label_smoothing), ignore_index)


def _same_device(op, *tensors):
    ts = [t for t in tensors if t is not None]
    devices = {t.device for t in ts}
    if len(devices) > 1:
        desc = ", ".join(f"{t.shape} on {t.device}" for t in ts)
        raise RuntimeError(f"{op}: expected all tensors on the same device, got {desc}")


_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op, reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _reduce(loss, reduction, op):
    _check_reduction(op, reduction)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _as_tensor(v, like):
    if not isinstance(v, Tensor):
        return Tensor(np.asarray(v), dtype=like.dtype, device=like.device)
    return v if v.dtype == like.dtype else v.to(dtype=like.dtype)


def _same_shape(op, a, b):
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{op}: input and target must be Tensors, got {type(a).__name__} and "
                        f"{type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{op}: input of shape {a.shape} and target of shape {b.shape} must "
                         "match")
    if a.dtype.kind != "f" or b.dtype.kind != "f":
        raise TypeError(f"{op}: input and target must be floating point, got dtypes {a.dtype} "
                        f"and {b.dtype}")
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: input dtype {a.dtype} and target dtype {b.dtype} differ")
    _same_device(op, a, b)


def _class_target(op, input, target):
    """Validate integer class targets for input (N, C) or (N, C, d1, ...); returns the
    input as (M, C), the target as a raw (M,) array and the 'none' output shape."""
    if not isinstance(target, Tensor):
        target = Tensor(np.asarray(target), device=input.device)
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices (int64), got dtype "
                        f"{target.dtype}")
    if input.ndim < 2:
        raise ValueError(f"{op}: expected input (N, C) or (N, C, d1, ...), got shape "
                         f"{input.shape}")
    expected = (input.shape[0],) + input.shape[2:]
    if target.shape != expected:
        raise ValueError(f"{op}: input of shape {input.shape} needs target of shape "
                         f"{expected}, got {target.shape}")
    _same_device(op, input, target)
    c = input.shape[1]
    if input.ndim > 2:  # (N, C, d...) -> (N*d..., C)
        perm = (0,) + tuple(range(2, input.ndim)) + (1,)
        input = input.permute(*perm).reshape(-1, c)
    return input, target._array.reshape(-1), expected


def _class_weight(op, weight, input):
    if weight is None:
        return None
    w = weight._array if isinstance(weight, Tensor) else input.backend.asarray(np.asarray(weight))
    if w.shape != (input.shape[1],):
        raise ValueError(f"{op}: weight must have shape ({input.shape[1]},) (one per class), "
                         f"got {tuple(w.shape)}")
    return w.astype(input.dtype, copy=False)


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood of log-probabilities.

    input (N, C) (or (N, C, d1, ...)), target (N,) (or (N, d1, ...)) integer classes,
    optional class weights w (C,):  l_n = -w[t_n] * input[n, t_n]  (0 where t_n ==
    ignore_index). 'mean' divides by sum_n w[t_n] over the kept n, as PyTorch.
    Gradient: d l_n / d input[n, c] = -w[t_n] if c == t_n else 0 (a scatter).
    """
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_reduction("nll_loss", reduction)
    flat, t, out_shape = _class_target("nll_loss", input, target)
    c = flat.shape[1]
    xp = flat.backend.xp
    valid = t != ignore_index
    if bool(valid.any()) and (int(t[valid].min()) < 0 or int(t[valid].max()) >= c):
        raise IndexError(f"nll_loss: target out of range for {c} classes (expected 0 <= "
                         f"target < {c}, or ignore_index={ignore_index})")
    w = _class_weight("nll_loss", weight, flat)
    safe = xp.where(valid, t, 0)
    coef = valid.astype(flat.dtype)
    if w is not None:
        coef = coef * w[safe]
    picked = flat[Tensor._wrap(xp.arange(len(t)), flat.backend, False),
                  Tensor._wrap(safe, flat.backend, False)]
    loss = -picked * Tensor._wrap(coef, flat.backend, False)
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):  # all ignored: NaN, as PyTorch
            return loss.sum() / float(coef.sum())
    if reduction == "sum":
        return loss.sum()
    return loss.reshape(out_shape)


def weighted_cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0):
    """Cross-entropy with class weights w (C,), PyTorch's definition: with
    logp = log_softmax(input) and smoothing e,

        l_n = (1 - e) * (-w[t_n] logp[n, t_n]) + e / C * sum_c (-w_c logp[n, c])

    'mean' divides by sum_n w[t_n]. Without weights use ``cross_entropy`` (one fused node).
    """
    if weight is None:
        return _cross_entropy(input, target, reduction, label_smoothing, ignore_index)
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got "
                         f"{label_smoothing}")
    flat, t, out_shape = _class_target("cross_entropy", input, target)
    logp = flat.log_softmax(1)
    nll = nll_loss(logp, Tensor._wrap(t, flat.backend, False), weight,
                   ignore_index=ignore_index, reduction="none")
    if label_smoothing == 0.0:
        loss = nll
    else:
        w = _class_weight("cross_entropy", weight, flat)
        keep = (t != ignore_index).astype(flat.dtype)
        smooth = -(logp * Tensor._wrap(w, flat.backend, False)).sum(1) \
            * Tensor._wrap(keep, flat.backend, False)
        loss = nll * (1 - label_smoothing) + smooth * (label_smoothing / flat.shape[1])
    if reduction == "mean":
        xp = flat.backend.xp
        valid = t != ignore_index
        total = float((_class_weight("cross_entropy", weight, flat)[xp.where(valid, t, 0)]
                       * valid).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            return loss.sum() / total
    if reduction == "sum":
        return loss.sum()
    return loss.reshape(out_shape)


def _apply_weight(loss, weight):
    return loss if weight is None else loss * _as_tensor(weight, loss)


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """l = -w (y log p + (1 - y) log(1 - p)), logs clamped at -100 and the gradient
    (p - y) / max(p (1 - p), 1e-12) as PyTorch (finite at p = 0 and 1). p in [0, 1]."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    op = "binary_cross_entropy"
    _check_reduction(op, reduction)
    _same_shape(op, input, target)
    pd = input._array
    if pd.size and not bool(((pd >= 0) & (pd <= 1)).all()):
        raise ValueError(f"{op}: input must be probabilities in [0, 1] (got values in "
                         f"[{float(pd.min())}, {float(pd.max())}]); for logits use "
                         "binary_cross_entropy_with_logits / BCEWithLogitsLoss")
    loss = _L.BinaryCrossEntropy.apply(input, target)
    return _reduce(_apply_weight(loss, weight), reduction, op)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None,
                                     reduce=None, reduction="mean", pos_weight=None):
    """BCE of sigmoid(z) in the stable form (1 - y) z + (1 + (w_p - 1) y) softplus(-z),
    one node with gradient sigmoid(z) (w_p y + 1 - y) - w_p y. ``pos_weight`` w_p
    broadcasts over the last axis (one per class); ``weight`` scales each element."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    op = "binary_cross_entropy_with_logits"
    _check_reduction(op, reduction)
    _same_shape(op, input, target)
    pw = None
    if pos_weight is not None:
        pw = (pos_weight._array if isinstance(pos_weight, Tensor)
              else input.backend.asarray(np.asarray(pos_weight)))
        pw = pw.astype(input.dtype, copy=False)
        try:
            np.broadcast_shapes(tuple(pw.shape), input.shape)
        except ValueError:
            raise ValueError(f"{op}: pos_weight of shape {tuple(pw.shape)} does not broadcast "
                             f"to input {input.shape}") from None
    loss = _L.BinaryCrossEntropyWithLogits.apply(input, target, pw)
    return _reduce(_apply_weight(loss, weight), reduction, op)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """l = (x - y)^2 elementwise."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _same_shape("mse_loss", input, target)
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """l = |x - y| elementwise (subgradient 0 at x == y, as PyTorch's sign)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _same_shape("l1_loss", input, target)
    return _reduce((input - target).abs(), reduction, "l1_loss")


def _check_affine(op, x, weight, bias, shape):
    for name, p in (("weight", weight), ("bias", bias)):
        if p is None:
            continue
        if p.shape != shape:
            raise ValueError(f"{op}: {name} of shape {p.shape}, expected {shape} for input "
                             f"{x.shape}")
        if p.dtype != x.dtype:
            raise TypeError(f"{op}: input dtype {x.dtype} and {name} dtype {p.dtype} differ")
    _same_device(op, x, weight, bias)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over every axis but 1 (input (N, C), (N, C, L) or (N, C, H, W)).

    training: batch statistics (one fused node, see ``ops.norm.BatchNormTrain``); when
    running_mean/var are given they are updated in place,
    r <- (1 - momentum) r + momentum * batch_stat (unbiased variance), as PyTorch.
    Otherwise the running statistics are used (``ops.norm.BatchNormEval``).
    """
    op = "batch_norm"
    if input.ndim < 2:
        raise ValueError(f"{op}: expected input (N, C, ...), got shape {input.shape}")
    c = input.shape[1]
    _check_affine(op, input, weight, bias, (c,))
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is not None and r.shape != (c,):
            raise ValueError(f"{op}: {name} of shape {r.shape}, expected ({c},)")
    if training:
        if input.size(0) * (int(np.prod(input.shape[2:])) if input.ndim > 2 else 1) <= 1:
            raise ValueError(f"{op}: expected more than 1 value per channel when training, "
                             f"got input of shape {input.shape}")
        stats = {}
        y = _N.BatchNormTrain.apply(input, weight, bias, eps, stats)
        for r, s in ((running_mean, "mean"), (running_var, "var")):
            if r is not None:
                r._array *= 1 - momentum
                r._array += momentum * stats[s].astype(r.dtype, copy=False)
                r._bump_version()
        return y
    if running_mean is None or running_var is None:
        raise ValueError(f"{op}: running_mean and running_var are required when not training")
    _same_device(op, input, running_mean, running_var)
    dt = input.dtype
    return _N.BatchNormEval.apply(input, weight, bias, running_mean._array.astype(dt, copy=False),
                                  running_var._array.astype(dt, copy=False), eps)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing ``normalized_shape`` axes (biased variance), then
    weight * xhat + bias; one fused node (``ops.norm.LayerNorm``)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or input.shape[input.ndim - k:] != shape or input.ndim < k:
        raise ValueError(f"layer_norm: input of shape {input.shape} does not end with "
                         f"normalized_shape {shape}")
    _check_affine("layer_norm", input, weight, bias, shape)
    return _N.LayerNorm.apply(input, weight, bias, eps, k)


def embedding(input, weight, padding_idx=None):
    """Row lookup weight[input]: input integer indices of any shape, weight (num, dim)
    -> input.shape + (dim,). The gradient is a scatter-add into the used rows; the row
    ``padding_idx`` gets none."""
    if not isinstance(input, Tensor):
        input = Tensor(np.asarray(input), device=weight.device)
    if input.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers (int64), got dtype {input.dtype}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, dim), got {weight.shape}")
    _same_device("embedding", input, weight)
    num = weight.shape[0]
    idx = input._array
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num):
        raise IndexError(f"embedding: index out of range [0, {num}) (got indices in "
                         f"[{int(idx.min())}, {int(idx.max())}]) for weight {weight.shape}")
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise ValueError(f"embedding: padding_idx {padding_idx} out of range for {num} rows")
        padding_idx %= num
    return _N.Embedding.apply(weight, idx, padding_idx)


def adaptive_avg_pool2d(input, output_size):
    """Average pool (N, C, H, W) to (N, C, OH, OW); output cell (i, j) averages rows
    floor(i H / OH) .. ceil((i + 1) H / OH) - 1 and the same for columns (PyTorch's bins).
    Equal bins use one avg_pool2d node; uneven ones are sliced and averaged."""
    oh, ow = int_tuple(output_size, 2, "output_size", "adaptive_avg_pool2d", 1)
    if input.ndim != 4:
        raise ValueError(f"adaptive_avg_pool2d: expected input (N, C, H, W), got {input.shape}")
    h, w = input.shape[2:]
    if (oh, ow) == (1, 1):
        return input.mean(dim=(2, 3), keepdim=True)
    if h % oh == 0 and w % ow == 0:
        return avg_pool2d(input, (h // oh, w // ow))
    rows = []
    for i in range(oh):
        r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        cols = [input[:, :, r0:r1, (j * w) // ow:-(-((j + 1) * w) // ow)].mean(dim=(2, 3))
                for j in range(ow)]
        rows.append(stack(cols, dim=-1))
    return stack(rows, dim=-2)


def one_hot(tensor, num_classes=-1):
    """int64 (..., num_classes) with a 1 at each index (num_classes -1: max index + 1)."""
    if tensor.dtype.kind not in "iu":
        raise TypeError(f"one_hot: expected an integer tensor, got {tensor.dtype}")
    idx = tensor._array
    n = int(idx.max()) + 1 if num_classes == -1 and idx.size else num_classes
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"one_hot: indices span [{int(idx.min())}, {int(idx.max())}], "
                         f"expected 0..{n - 1} for num_classes={n}")
    xp = tensor._backend.xp
    out = (idx[..., None] == xp.arange(n)).astype("int64")
    return Tensor._wrap(out, tensor._backend, False)


# -- layers of issue 11: channel dropout, group norm, interpolation, attention ----------
def _channel_dropout(op, input, p, training, batched_ndim):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")
    if input.ndim not in (batched_ndim - 1, batched_ndim):
        raise ValueError(f"{op}: expected {batched_ndim - 1}-D or {batched_ndim}-D input, "
                         f"got shape {input.shape}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    lead = input.ndim - (batched_ndim - 2)  # (N, C) or (C,)
    shape = input.shape[:lead] + (1,) * (input.ndim - lead)
    # one draw per channel; the Dropout node broadcasts it over the channel's elements
    return N.Dropout.apply(input, p, _uniform(shape, input.dtype, input.backend))


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, L) or (C, L) with probability p, scale the rest by
    1 / (1 - p)."""
    return _channel_dropout("dropout1d", input, p, training, 3)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, H, W) or (C, H, W) with probability p, scale the rest
    by 1 / (1 - p)."""
    return _channel_dropout("dropout2d", input, p, training, 4)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise each (sample, group of C / num_groups channels) of x (N, C, *), then
    weight[c] * xhat + bias[c]; one node (``ops.norm.GroupNorm``)."""
    if input.ndim < 2:
        raise ValueError(f"group_norm: expected input (N, C, *), got shape {input.shape}")
    c = input.shape[1]
    if num_groups <= 0 or c % num_groups:
        raise ValueError(f"group_norm: expected number of channels in input to be divisible by "
                         f"num_groups, but got input of shape {input.shape} and "
                         f"num_groups={num_groups}")
    _check_affine("group_norm", input, weight, bias, (c,))
    return _N.GroupNorm.apply(input, weight, bias, int(num_groups), float(eps))


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """x / max(||x||_p over dim, eps), as PyTorch (p 1 or 2)."""
    return input / input.norm(p, dim, keepdim=True).clamp(min=eps)


_INTERP_DIMS = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _source_index(n_in, n_out, scale, mode, align_corners):
    """(idx (K, O), weights (K, O) or None) of one axis, PyTorch's source coordinates."""
    dst = np.arange(n_out, dtype=np.float64)
    if mode == "nearest":
        ratio = n_in / n_out if scale is None else 1.0 / scale
        return np.minimum(np.floor(dst * ratio).astype(np.int64), n_in - 1)[None], None
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        ratio = n_in / n_out if scale is None else 1.0 / scale
        src = np.maximum((dst + 0.5) * ratio - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = src - i0
    return np.stack([i0, i1]), np.stack([1.0 - lam, lam])


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dimensions of (N, C, *) (1 to 3 of them), as PyTorch.

    ``nearest``: output o reads input floor(o * in / out) (floor(o / scale_factor) when a
    scale factor is given); ``linear``/``bilinear``/``trilinear``: each axis mixes its two
    neighbours of the source coordinate (o + 0.5) * in / out - 0.5 (clamped at 0), or
    o * (in - 1) / (out - 1) with ``align_corners=True``. One ``ops.movement.Resample``
    node per resized axis: a sparse linear map whose backward is its transpose.
    """
    op = "interpolate"
    if mode not in ("nearest",) + tuple(_INTERP_DIMS):
        raise NotImplementedError(f"{op}: mode {mode!r} is not supported; expected 'nearest', "
                                  "'linear', 'bilinear' or 'trilinear'")
    if antialias:
        raise NotImplementedError(f"{op}: antialias=True is not supported")
    k = input.ndim - 2
    if not 1 <= k <= 3:
        raise ValueError(f"{op}: expected a 3-D, 4-D or 5-D input (N, C, *), got shape "
                         f"{input.shape}")
    if mode in _INTERP_DIMS and _INTERP_DIMS[mode] != k:
        raise NotImplementedError(f"{op}: mode {mode!r} needs a {_INTERP_DIMS[mode] + 2}-D "
                                  f"input, got {input.ndim}-D (shape {input.shape})")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op}: only one of size or scale_factor should be defined")
    spatial = input.shape[2:]
    if size is not None:
        sizes = (size,) * k if isinstance(size, int) else tuple(size)
        if len(sizes) != k:
            raise ValueError(f"{op}: size {size} must have {k} entries for input {input.shape}")
        scales = (None,) * k
    else:
        scales = ((scale_factor,) * k if isinstance(scale_factor, (int, float))
                  else tuple(scale_factor))
        if len(scales) != k:
            raise ValueError(f"{op}: scale_factor {scale_factor} must have {k} entries for "
                             f"input {input.shape}")
        sizes = tuple(int(np.floor(n * s)) for n, s in zip(spatial, scales))
        if recompute_scale_factor:
            scales = (None,) * k
    if min(sizes) <= 0:
        raise ValueError(f"{op}: output size {sizes} must be positive (input {input.shape})")
    out = input
    for i, (n_in, n_out, scale) in enumerate(zip(spatial, sizes, scales)):
        if n_in == n_out and (scale is None or scale == 1.0):
            continue
        idx, w = _source_index(n_in, n_out, scale, mode, bool(align_corners))
        xp_w = None if w is None else input.backend.asarray(w)
        out = M.Resample.apply(out, 2 + i, input.backend.asarray(idx), xp_w)
    return out


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None):
    """softmax(q k^T * scale + mask) v over (..., L, E), (..., S, E), (..., S, Ev) ->
    (..., L, Ev); scale 1 / sqrt(E) by default. A bool ``attn_mask`` (L, S) (broadcast)
    marks the pairs that TAKE PART (False: -inf); a float one is added to the scores.
    ``is_causal``: query i attends to keys 0..i (no attn_mask with it). A composite of
    matmul, masked_fill, softmax and dropout (each a Function with its own backward)."""
    op = "scaled_dot_product_attention"
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"{op}: query {query.shape}, key {key.shape} and value "
                         f"{value.shape} do not fit (..., L, E), (..., S, E), (..., S, Ev)")
    if is_causal and attn_mask is not None:
        raise ValueError(f"{op}: explicit attn_mask should not be set when is_causal=True")
    L, S = query.shape[-2], key.shape[-2]
    scale = 1.0 / float(np.sqrt(query.shape[-1])) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * scale
    if is_causal:
        attn_mask = Tensor(np.tril(np.ones((L, S), dtype=bool)), device=query.device)
    if attn_mask is not None:
        if attn_mask.dtype == np.bool_:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    weights = scores.softmax(-1)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p, True)
    return weights @ value


def bilinear(input1, input2, weight, bias=None):
    """y[..., o] = sum_ij x1[..., i] W[o, i, j] x2[..., j] + b[o]; x1 (..., in1),
    x2 (..., in2), W (out, in1, in2). Composite: one matmul against W laid out as
    (in1, out * in2), a product with x2 and a sum."""
    op = "bilinear"
    if weight.ndim != 3 or input1.shape[-1] != weight.shape[1] \
            or input2.shape[-1] != weight.shape[2] or input1.shape[:-1] != input2.shape[:-1]:
        raise ValueError(f"{op}: input1 {input1.shape}, input2 {input2.shape} and weight "
                         f"{weight.shape} do not fit (..., in1), (..., in2), (out, in1, in2)")
    out, in1, in2 = weight.shape
    lead = input1.shape[:-1]
    w = weight.permute(1, 0, 2).reshape(in1, out * in2)
    t = (input1.reshape(-1, in1) @ w).reshape(-1, out, in2)
    y = (t * input2.reshape(-1, 1, in2)).sum(-1).reshape(lead + (out,))
    return y if bias is None else y + bias
