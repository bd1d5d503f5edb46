"""Layers, activations, recurrent cells and losses, with PyTorch's names, shapes,
parameter names and default initialisation (so PyTorch state dicts load into them)."""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..ops import norm as N
from ..tensor import Tensor, stack, zeros
from . import init
from .module import Module, Parameter

__all__ = ["Identity", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Dropout", "Flatten", "Embedding",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "GELU", "RNN",
           "LSTM", "GRU", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss",
           "MSELoss", "L1Loss"]


def _param(*shape):
    return Parameter(zeros(*shape))


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class Identity(Module):
    def forward(self, x):
        return x


class Linear(Module):
    """y = x W^T + b; W (out, in) ~ U(-1/sqrt(in), 1/sqrt(in)), b likewise (PyTorch's init)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _param(out_features, in_features)
        self.bias = _param(out_features) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}): input of "
                             f"shape {x.shape}, expected last dimension {self.in_features}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Conv2d(Module):
    """2-D cross-correlation, weight (out, in, KH, KW); PyTorch's init."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (_pair(kernel_size), _pair(stride),
                                                       _pair(padding))
        self.weight = _param(out_channels, in_channels, *self.kernel_size)
        self.bias = _param(out_channels) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d({self.in_channels}, {self.out_channels}): input of shape "
                             f"{x.shape}, expected (N, {self.in_channels}, H, W)")
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Average pool to a fixed output size (OH, OW); bins as in PyTorch:
    rows floor(i*H/OH) .. ceil((i+1)*H/OH)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = _pair(output_size)

    def forward(self, x):
        return adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


def adaptive_avg_pool2d(x, output_size):
    oh, ow = _pair(output_size)
    h, w = x.shape[2:]
    if (oh, ow) == (1, 1):
        return x.mean(dim=(2, 3), keepdim=True)
    if h % oh == 0 and w % ow == 0:
        return F.avg_pool2d(x, (h // oh, w // ow))
    rows = []
    for i in range(oh):
        r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        cols = [x[:, :, r0:r1, (j * w) // ow:-(-((j + 1) * w) // ow)].mean(dim=(2, 3))
                for j in range(ow)]
        rows.append(stack(cols, dim=-1))
    return stack(rows, dim=-2)


class _BatchNorm(Module):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta over all axes but the channel axis.

    Training uses batch statistics (biased variance) and updates the running estimates
    r <- (1 - momentum) r + momentum * batch (unbiased variance), as PyTorch; eval uses
    the running estimates."""

    _ndims = (2, 4)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(zeros(num_features) + 1.0)
        self.bias = Parameter(zeros(num_features))
        if not affine:
            self.weight.requires_grad_(False)
            self.bias.requires_grad_(False)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features))
            self.register_buffer("running_var", zeros(num_features) + 1.0)
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, dtype=np.int64)))

    def forward(self, x):
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): input of shape "
                             f"{x.shape}, expected {self._ndims} dims with {self.num_features} "
                             "channels on axis 1")
        if self.training or not self.track_running_stats:
            if x.size(0) * (int(np.prod(x.shape[2:])) if x.ndim > 2 else 1) <= 1:
                raise ValueError(f"{type(self).__name__}: expected more than 1 value per "
                                 f"channel when training, got input of shape {x.shape}")
            stats = {}
            y = N.BatchNormTrain.apply(x, self.weight, self.bias, self.eps, stats)
            if self.training and self.track_running_stats:
                m = self.momentum
                rm, rv = self.running_mean.data, self.running_var.data
                rm *= 1 - m
                rm += m * stats["mean"].astype(rm.dtype)
                rv *= 1 - m
                rv += m * stats["var"].astype(rv.dtype)
                self.num_batches_tracked.data += 1
            return y
        shape = (1, -1) + (1,) * (x.ndim - 2)
        scale = self.weight / (self.running_var + self.eps).sqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(shape) + shift.reshape(shape)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    _ndims = (2,)


class BatchNorm2d(_BatchNorm):
    _ndims = (4,)


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` axes, then gamma * xhat + beta."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(
            normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.weight = Parameter(zeros(*shape) + 1.0)
        self.bias = Parameter(zeros(*shape))
        if not elementwise_affine:
            self.weight.requires_grad_(False)
            self.bias.requires_grad_(False)

    def forward(self, x):
        k = len(self.normalized_shape)
        if x.shape[-k:] != self.normalized_shape:
            raise ValueError(f"LayerNorm{self.normalized_shape}: input of shape {x.shape} "
                             f"does not end with {self.normalized_shape}")
        return N.LayerNorm.apply(x, self.weight, self.bias, self.eps)


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)


class Embedding(Module):
    """y = W[idx]; W (num_embeddings, dim) ~ N(0, 1). dW is a scatter-add of dy."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = _param(num_embeddings, embedding_dim)
        init.normal_(self.weight)

    def forward(self, idx):
        if not isinstance(idx, Tensor):
            idx = Tensor(np.asarray(idx), device=self.weight.device)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"Embedding: indices must be integers, got dtype {idx.dtype}")
        if idx.numel() and (int(idx.data.min()) < 0 or int(idx.data.max()) >= self.num_embeddings):
            raise IndexError(f"Embedding({self.num_embeddings}, {self.embedding_dim}): index "
                             f"out of range [0, {self.num_embeddings})")
        return self.weight[idx]


class _Act(Module):
    fn = None

    def forward(self, x):
        return type(self).fn(x)


class ReLU(_Act):
    fn = staticmethod(F.relu)


class Sigmoid(_Act):
    fn = staticmethod(F.sigmoid)


class Tanh(_Act):
    fn = staticmethod(F.tanh)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return x.leaky_relu(self.negative_slope)


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return x.gelu(self.approximate)


class Softmax(Module):
    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.softmax(self.dim)


class LogSoftmax(Softmax):
    def forward(self, x):
        return x.log_softmax(self.dim)


# -- recurrent layers ----------------------------------------------------------------------
class _RNNBase(Module):
    """Multi-layer recurrent layer over x (T, N, I) or (N, T, I) with batch_first.

    Parameters per layer l: weight_ih_l{l} (G*H, I_l), weight_hh_l{l} (G*H, H),
    bias_ih_l{l}, bias_hh_l{l} (G*H,), G gates, all ~ U(-1/sqrt(H), 1/sqrt(H)) (PyTorch).
    The input projection x W_ih^T + b_ih is one product over all time steps; only
    h W_hh^T runs step by step.
    """

    gates = 1

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.use_bias = batch_first, bias
        g = self.gates * hidden_size
        for layer in range(num_layers):
            i = input_size if layer == 0 else hidden_size
            setattr(self, f"weight_ih_l{layer}", _param(g, i))
            setattr(self, f"weight_hh_l{layer}", _param(g, hidden_size))
            if bias:
                setattr(self, f"bias_ih_l{layer}", _param(g))
                setattr(self, f"bias_hh_l{layer}", _param(g))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _weights(self, layer):
        get = self.__getattr__
        b_ih = get(f"bias_ih_l{layer}") if self.use_bias else None
        b_hh = get(f"bias_hh_l{layer}") if self.use_bias else None
        return get(f"weight_ih_l{layer}"), get(f"weight_hh_l{layer}"), b_ih, b_hh

    def _check(self, x):
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            order = "(N, T, I)" if self.batch_first else "(T, N, I)"
            raise ValueError(f"{type(self).__name__}: input of shape {x.shape}, expected "
                             f"{order} with I = {self.input_size}")

    def _initial(self, x, h0, name):
        n = x.shape[0] if self.batch_first else x.shape[1]
        want = (self.num_layers, n, self.hidden_size)
        if h0 is None:
            return [zeros(n, self.hidden_size, dtype=x.dtype, device=x.device)] * self.num_layers
        if h0.shape != want:
            raise ValueError(f"{type(self).__name__}: {name} of shape {h0.shape}, expected {want}")
        return [h0[i] for i in range(self.num_layers)]

    def forward(self, x, hx=None):
        self._check(x)
        seq = x.transpose(0, 1) if self.batch_first else x  # (T, N, I)
        state = self._init_state(seq if not self.batch_first else x, hx)
        finals = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._weights(layer)
            proj = F.linear(seq, w_ih, b_ih)  # (T, N, G*H)
            s = state[layer]
            outs = []
            for t in range(seq.shape[0]):
                s = self._cell(proj[t], s, w_hh, b_hh)
                outs.append(s[0] if isinstance(s, tuple) else s)
            finals.append(s)
            seq = stack(outs, 0)
        out = seq.transpose(0, 1) if self.batch_first else seq
        return out, self._pack(finals)

    def _init_state(self, x, hx):
        return self._initial(x, hx, "h0")

    def _pack(self, finals):
        return stack(finals, 0)


class RNN(_RNNBase):
    """h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first)
        self.nonlinearity = nonlinearity

    def _cell(self, xp, h, w_hh, b_hh):
        a = xp + F.linear(h, w_hh, b_hh)
        return a.tanh() if self.nonlinearity == "tanh" else a.relu()


class LSTM(_RNNBase):
    """Gates [i, f, g, o] = x W_ih^T + b_ih + h W_hh^T + b_hh (PyTorch's order);
    i, f, o = sigmoid, g = tanh;  c_t = f c_{t-1} + i g,  h_t = o tanh(c_t).
    Returns output, (h_n, c_n)."""

    gates = 4

    def _init_state(self, x, hx):
        h0, c0 = (None, None) if hx is None else hx
        hs = self._initial(x, h0, "h0")
        cs = self._initial(x, c0, "c0")
        return list(zip(hs, cs))

    def _cell(self, xp, state, w_hh, b_hh):
        h, c = state
        z = xp + F.linear(h, w_hh, b_hh)
        H = self.hidden_size
        i, f, g, o = z[:, :H].sigmoid(), z[:, H:2 * H].sigmoid(), z[:, 2 * H:3 * H].tanh(), \
            z[:, 3 * H:].sigmoid()
        c = f * c + i * g
        return o * c.tanh(), c

    def _pack(self, finals):
        return stack([h for h, _ in finals], 0), stack([c for _, c in finals], 0)


class GRU(_RNNBase):
    """r = sigmoid(W_ir x + b_ir + W_hr h + b_hr), z likewise,
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h_t = (1 - z) n + z h_{t-1}."""

    gates = 3

    def _cell(self, xp, h, w_hh, b_hh):
        hh = F.linear(h, w_hh, b_hh)
        H = self.hidden_size
        r = (xp[:, :H] + hh[:, :H]).sigmoid()
        z = (xp[:, H:2 * H] + hh[:, H:2 * H]).sigmoid()
        n = (xp[:, 2 * H:] + r * hh[:, 2 * H:]).tanh()
        return (1 - z) * n + z * h


# -- losses ---------------------------------------------------------------------------------
def _reduce(loss, reduction, op):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _same_shape(op, a, b):
    if a.shape != b.shape:
        raise ValueError(f"{op}: input of shape {a.shape} and target of shape {b.shape} must "
                         "match")
    if b.dtype.kind != "f":
        raise TypeError(f"{op}: target must be floating point, got dtype {b.dtype}")


def nll_loss(logp, target, reduction="mean", ignore_index=-100):
    """loss_n = -logp[n, t_n]; logp (N, C) log-probabilities, target (N,) integers."""
    if target.dtype.kind not in "iu":
        raise TypeError(f"nll_loss: target must hold integer class indices, got dtype "
                        f"{target.dtype}")
    if logp.ndim != 2 or target.shape != (logp.shape[0],):
        raise ValueError(f"nll_loss: expected input (N, C) and target (N,), got {logp.shape} "
                         f"and {target.shape}")
    c = logp.shape[1]
    t = target.data
    valid = t != ignore_index
    if valid.any() and (t[valid].min() < 0 or t[valid].max() >= c):
        raise IndexError(f"nll_loss: target out of range for {c} classes (expected 0 <= "
                         f"target < {c})")
    xp = logp.backend.xp
    safe = xp.where(valid, t, 0)
    picked = logp[Tensor._wrap(xp.arange(len(t)), logp.backend, False),
                  Tensor._wrap(safe, logp.backend, False)]
    mask = Tensor._wrap(valid.astype(logp.dtype), logp.backend, False)
    loss = -picked * mask
    if reduction == "mean":
        return loss.sum() / max(int(valid.sum()), 1)
    return _reduce(loss, reduction, "nll_loss")


def binary_cross_entropy(p, y, reduction="mean"):
    """loss = -(y log p + (1 - y) log(1 - p)), logs clamped at -100 like PyTorch."""
    _same_shape("binary_cross_entropy", p, y)
    pd = p.data
    if pd.size and (float(pd.min()) < 0 or float(pd.max()) > 1):
        raise ValueError("binary_cross_entropy: input must be probabilities in [0, 1]; use "
                         "BCEWithLogitsLoss for logits")
    loss = -(y * p.log().clamp(min=-100) + (1 - y) * (1 - p).log().clamp(min=-100))
    return _reduce(loss, reduction, "binary_cross_entropy")


def binary_cross_entropy_with_logits(z, y, reduction="mean"):
    """loss = max(z, 0) - z y + log(1 + e^{-|z|}): the stable form of BCE(sigmoid(z), y)."""
    _same_shape("binary_cross_entropy_with_logits", z, y)
    loss = z.relu() - z * y + ((-z.abs()).exp() + 1).log()
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def mse_loss(a, b, reduction="mean"):
    _same_shape("mse_loss", a, b)
    d = a - b
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(a, b, reduction="mean"):
    _same_shape("l1_loss", a, b)
    return _reduce((a - b).abs(), reduction, "l1_loss")


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean', 'sum' or "
                             f"'none', got {reduction!r}")
        self.reduction = reduction


class CrossEntropyLoss(_Loss):
    """Fused log-softmax + NLL over logits (N, C) and integer targets (N,)."""

    def __init__(self, reduction="mean", label_smoothing=0.0, ignore_index=-100):
        super().__init__(reduction)
        self.label_smoothing, self.ignore_index = label_smoothing, ignore_index

    def forward(self, logits, target):
        return F.cross_entropy(logits, target, self.reduction, self.label_smoothing,
                               self.ignore_index)


class NLLLoss(_Loss):
    def __init__(self, reduction="mean", ignore_index=-100):
        super().__init__(reduction)
        self.ignore_index = ignore_index

    def forward(self, logp, target):
        return nll_loss(logp, target, self.reduction, self.ignore_index)


class BCELoss(_Loss):
    def forward(self, p, y):
        return binary_cross_entropy(p, y, self.reduction)


class BCEWithLogitsLoss(_Loss):
    def forward(self, z, y):
        return binary_cross_entropy_with_logits(z, y, self.reduction)


class MSELoss(_Loss):
    def forward(self, a, b):
        return mse_loss(a, b, self.reduction)


class L1Loss(_Loss):
    def forward(self, a, b):
        return l1_loss(a, b, self.reduction)


