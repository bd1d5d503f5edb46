"""Layers, activations, recurrent cells and losses, with PyTorch's names, shapes,
parameter names and default initialisation (so PyTorch state dicts load into them)."""
from __future__ import annotations

import math

import numpy as np

from . import functional as F
from ..tensor import Tensor, cat, stack, zeros
from . import init
from .module import Module, Parameter

__all__ = ["Identity", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "BatchNorm1d", "BatchNorm2d", "LayerNorm", "Dropout", "Flatten", "Embedding",
           "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "GELU", "RNN",
           "LSTM", "GRU", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss",
           "MSELoss", "L1Loss", "SiLU", "Softplus", "Unflatten"]


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
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        return s + ("" if self.bias is not None else ", bias=False")


class MaxPool2d(Module):
    """Max over kernel windows; stride defaults to kernel_size (as PyTorch)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = kernel_size if stride is None else stride

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    """Mean over kernel windows, zero padding counted (count_include_pad=True)."""

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Average pool to a fixed output size (OH, OW); bins as in PyTorch:
    rows floor(i*H/OH) .. ceil((i+1)*H/OH)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = _pair(output_size)

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class _BatchNorm(Module):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta over all axes but the channel axis.

    Training uses batch statistics (biased variance) and updates the running estimates
    r <- (1 - momentum) r + momentum * batch (unbiased variance), as PyTorch
    (``momentum=None``: cumulative average, factor 1 / num_batches_tracked); eval uses
    the running estimates. ``affine=False``: no weight/bias (None, not in state_dict);
    ``track_running_stats=False``: batch statistics in eval too, no buffers.
    Forward is one fused Function either way (``ops.norm``).
    """

    _ndims = (2, 4)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(zeros(num_features) + 1.0)
            self.bias = Parameter(zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features))
            self.register_buffer("running_var", zeros(num_features) + 1.0)
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, dtype=np.int64)))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean._array[...] = 0
            self.running_var._array[...] = 1
            self.num_batches_tracked._array[...] = 0

    def forward(self, x):
        if x.ndim not in self._ndims or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): input of shape "
                             f"{x.shape}, expected {' or '.join(f'{d}-D' for d in self._ndims)} "
                             f"with {self.num_features} channels on axis 1")
        factor = 0.0 if self.momentum is None else self.momentum
        update = self.training and self.track_running_stats
        if update and self.momentum is None:
            factor = 1.0 / (int(self.num_batches_tracked.item()) + 1)
        use_batch = self.training or self.running_mean is None
        keep = not self.training or self.track_running_stats
        y = F.batch_norm(x, self.running_mean if keep else None,
                          self.running_var if keep else None, self.weight, self.bias,
                          use_batch, factor, self.eps)
        if update:
            self.num_batches_tracked._array += 1
        return y

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L)."""
    _ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W)."""
    _ndims = (4,)


class LayerNorm(Module):
    """Normalise over the trailing ``normalized_shape`` axes, then gamma * xhat + beta
    (gamma = 1, beta = 0 initially; ``elementwise_affine=False``: neither, ``bias=False``:
    no beta -- as PyTorch)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(
            normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(zeros(*shape) + 1.0)
        else:
            self.register_parameter("weight", None)
        if elementwise_affine and bias:
            self.bias = Parameter(zeros(*shape))
        else:
            self.register_parameter("bias", None)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


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

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Embedding(Module):
    """y = W[idx]; W (num_embeddings, dim) ~ N(0, 1) (PyTorch's init), the row
    ``padding_idx`` (if given) zero and never updated. dW is a scatter-add of dy."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None):
        super().__init__()
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} out of range for "
                                 f"{num_embeddings} embeddings")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        self.weight = _param(num_embeddings, embedding_dim)
        self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight._array[self.padding_idx] = 0

    def forward(self, idx):
        return F.embedding(idx, self.weight, self.padding_idx)

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


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

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return x.gelu(self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softmax(Module):
    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.softmax(self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x):
        return x.log_softmax(self.dim)


# -- recurrent layers ----------------------------------------------------------------------
class _RNNBase(Module):
    """Multi-layer (optionally bidirectional) recurrent layer over x (T, N, I), or
    (N, T, I) with batch_first, or unbatched (T, I).

    Parameters per layer l and direction (suffix "" or "_reverse"): weight_ih_l{l} (G*H, I_l),
    weight_hh_l{l} (G*H, H), bias_ih_l{l}, bias_hh_l{l} (G*H,), G gates, I_l = I for l = 0
    else D*H; all ~ U(-1/sqrt(H), 1/sqrt(H)) -- PyTorch's names, order and init, so its
    state dicts load. The input projection x W_ih^T + b_ih is one product over all time
    steps; only h W_hh^T runs step by step. The reverse direction reads time backwards;
    its outputs are concatenated after the forward ones. ``dropout`` applies to the
    outputs of every layer but the last, in training mode.
    """

    gates = 1

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False):
        super().__init__()
        name = type(self).__name__
        if hidden_size <= 0 or num_layers <= 0 or input_size <= 0:
            raise ValueError(f"{name}: input_size, hidden_size and num_layers must be "
                             f"positive, got {input_size}, {hidden_size}, {num_layers}")
        if not 0 <= dropout <= 1:
            raise ValueError(f"{name}: dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.bias, self.dropout = batch_first, bias, float(dropout)
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        g = self.gates * hidden_size
        for layer in range(num_layers):
            i = input_size if layer == 0 else hidden_size * self.num_directions
            for sfx in self._suffixes():
                setattr(self, f"weight_ih_l{layer}{sfx}", _param(g, i))
                setattr(self, f"weight_hh_l{layer}{sfx}", _param(g, hidden_size))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{sfx}", _param(g))
                    setattr(self, f"bias_hh_l{layer}{sfx}", _param(g))
        self.reset_parameters()

    def _suffixes(self):
        return ("", "_reverse")[:self.num_directions]

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _weights(self, layer, sfx):
        get = self.__getattr__
        b_ih = get(f"bias_ih_l{layer}{sfx}") if self.bias else None
        b_hh = get(f"bias_hh_l{layer}{sfx}") if self.bias else None
        return get(f"weight_ih_l{layer}{sfx}"), get(f"weight_hh_l{layer}{sfx}"), b_ih, b_hh

    def _initial(self, x, h0, n, name):
        want = (self.num_layers * self.num_directions, n, self.hidden_size)
        if h0 is None:
            return [zeros(n, self.hidden_size, dtype=x.dtype, device=x.device)] * want[0]
        if not isinstance(h0, Tensor) or h0.shape != want:
            got = h0.shape if isinstance(h0, Tensor) else type(h0).__name__
            raise ValueError(f"{type(self).__name__}: {name} of shape {got}, expected {want} "
                             "(num_layers * num_directions, N, hidden_size)")
        if h0.dtype != x.dtype or h0.device != x.device:
            raise TypeError(f"{type(self).__name__}: {name} is {h0.dtype} on {h0.device}, "
                            f"input is {x.dtype} on {x.device}")
        return [h0[i] for i in range(want[0])]

    def forward(self, x, hx=None):
        name = type(self).__name__
        if not isinstance(x, Tensor) or x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            order = "(N, T, I)" if self.batch_first else "(T, N, I)"
            raise ValueError(f"{name}: input of shape {getattr(x, 'shape', None)}, expected "
                             f"{order} or (T, I) with I = {self.input_size}")
        batched = x.ndim == 3
        if not batched:  # (T, I): a batch of one, squeezed again at the end
            x = x.unsqueeze(0 if self.batch_first else 1)
            hx = self._map_state(hx, lambda t: t.unsqueeze(1))
        seq = x.transpose(0, 1) if self.batch_first else x  # (T, N, I)
        steps, n = seq.shape[0], seq.shape[1]
        if steps == 0:
            raise ValueError(f"{name}: input has no time steps (shape {x.shape})")
        state = self._init_state(seq, hx, n)
        finals = []
        for layer in range(self.num_layers):
            outs_dir = []
            for d, sfx in enumerate(self._suffixes()):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, sfx)
                proj = F.linear(seq, w_ih, b_ih)  # (T, N, G*H)
                s = state[layer * self.num_directions + d]
                outs = [None] * steps
                for t in (range(steps) if d == 0 else range(steps - 1, -1, -1)):
                    s = self._cell(proj[t], s, w_hh, b_hh)
                    outs[t] = s[0] if isinstance(s, tuple) else s
                finals.append(s)
                outs_dir.append(stack(outs, 0))
            seq = outs_dir[0] if len(outs_dir) == 1 else cat(outs_dir, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                seq = F.dropout(seq, self.dropout, True)
        out = seq.transpose(0, 1) if self.batch_first else seq
        h = self._pack(finals)
        if not batched:
            out = out.squeeze(0 if self.batch_first else 1)
            h = self._map_state(h, lambda t: t.squeeze(1))
        return out, h

    @staticmethod
    def _map_state(h, fn):
        if h is None:
            return None
        return tuple(fn(t) for t in h) if isinstance(h, tuple) else fn(h)

    def _init_state(self, x, hx, n):
        return self._initial(x, hx, n, "h0")

    def _pack(self, finals):
        return stack(finals, 0)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(_RNNBase):
    """h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu).
    Returns output (T, N, D*H) and h_n (num_layers*D, N, H)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional)
        self.nonlinearity = nonlinearity

    def _cell(self, xp, h, w_hh, b_hh):
        a = xp + F.linear(h, w_hh, b_hh)
        return a.tanh() if self.nonlinearity == "tanh" else a.relu()


class LSTM(_RNNBase):
    """Gates [i, f, g, o] = x W_ih^T + b_ih + h W_hh^T + b_hh (PyTorch's order);
    i, f, o = sigmoid, g = tanh;  c_t = f c_{t-1} + i g,  h_t = o tanh(c_t).
    ``forward(x, (h0, c0))`` returns output, (h_n, c_n)."""

    gates = 4

    def _init_state(self, x, hx, n):
        if hx is not None and not (isinstance(hx, tuple) and len(hx) == 2):
            raise TypeError("LSTM: hx must be a tuple (h0, c0)")
        h0, c0 = (None, None) if hx is None else hx
        hs = self._initial(x, h0, n, "h0")
        cs = self._initial(x, c0, n, "c0")
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
    """Gates [r, z, n] (PyTorch's order):  r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),
    z likewise,  n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h_t = (1 - z) n + z h_{t-1}."""

    gates = 3

    def _cell(self, xp, h, w_hh, b_hh):
        hh = F.linear(h, w_hh, b_hh)
        H = self.hidden_size
        r = (xp[:, :H] + hh[:, :H]).sigmoid()
        z = (xp[:, H:2 * H] + hh[:, H:2 * H]).sigmoid()
        n = (xp[:, 2 * H:] + r * hh[:, 2 * H:]).tanh()
        return (1 - z) * n + z * h


# -- losses ---------------------------------------------------------------------------------
class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean', 'sum' or "
                             f"'none', got {reduction!r}")
        self.reduction = reduction


def _buffer_or_none(module, name, value):
    if value is None:
        module.register_buffer(name, None)
    else:
        module.register_buffer(name, value if isinstance(value, Tensor)
                               else Tensor(np.asarray(value, dtype=np.float32)))


class CrossEntropyLoss(_Loss):
    """Log-softmax + NLL over logits (N, C) (or (N, C, d1, ...)) and integer targets;
    one fused node without class weights (``functional.cross_entropy``)."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got "
                             f"{label_smoothing}")
        _buffer_or_none(self, "weight", weight)
        self.label_smoothing, self.ignore_index = label_smoothing, ignore_index

    def forward(self, input, target):
        if self.weight is None:
            return F.cross_entropy(input, target, self.reduction, self.label_smoothing,
                                   self.ignore_index)
        return F.weighted_cross_entropy(input, target, self.weight, self.ignore_index,
                                         self.reduction, self.label_smoothing)


class NLLLoss(_Loss):
    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        _buffer_or_none(self, "weight", weight)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class BCELoss(_Loss):
    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        _buffer_or_none(self, "weight", weight)

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, self.reduction)


class BCEWithLogitsLoss(_Loss):
    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        _buffer_or_none(self, "weight", weight)
        _buffer_or_none(self, "pos_weight", pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, self.reduction,
                                                   self.pos_weight)


class MSELoss(_Loss):
    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    def forward(self, input, target):
        return F.l1_loss(input, target, self.reduction)


class SiLU(Module):
    def forward(self, x):
        return F.silu(x)


class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, x):
        return F.softplus(x, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Unflatten(Module):
    """Split dimension ``dim`` into ``unflattened_size`` (the inverse of Flatten)."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, x):
        d = self.dim % x.ndim
        return x.reshape(x.shape[:d] + self.unflattened_size + x.shape[d + 1:])

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
