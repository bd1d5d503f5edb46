"""Recurrent layers: RNN, LSTM and GRU (multi-layer, bidirectional, batch_first)."""
from __future__ import annotations

import math

from ...tensor import Tensor, cat, stack, zeros
from .. import functional as F
from .. import init
from .module import Module, _param

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]


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


# -- single steps ---------------------------------------------------------------------------
class _CellBase(Module):
    """One step of a recurrent layer: input (N, I) or (I,), state (N, H) or (H,) (zeros
    when omitted). Parameters weight_ih (G*H, I), weight_hh (G*H, H), bias_ih, bias_hh
    (G*H,), all ~ U(-1/sqrt(H), 1/sqrt(H)) -- PyTorch's names and init. The step itself
    is the ``_cell`` of the matching multi-step layer."""

    gates = 1
    layer = None

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        g = self.gates * hidden_size
        self.weight_ih = _param(g, input_size)
        self.weight_hh = _param(g, hidden_size)
        if bias:
            self.bias_ih, self.bias_hh = _param(g), _param(g)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _check(self, x, states):
        name = type(self).__name__
        if not isinstance(x, Tensor) or x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input of shape {getattr(x, 'shape', None)}, expected "
                             f"(N, {self.input_size}) or ({self.input_size},)")
        want = x.shape[:-1] + (self.hidden_size,)
        out = []
        for s in states:
            if s is None:
                s = zeros(*want, dtype=x.dtype, device=x.device)
            elif s.shape != want:
                raise ValueError(f"{name}: hidden state of shape {s.shape}, expected {want}")
            out.append(s.unsqueeze(0) if x.ndim == 1 else s)
        return (x.unsqueeze(0) if x.ndim == 1 else x), out

    def _step(self, x, state):
        xp = F.linear(x, self.weight_ih, self.bias_ih)
        return type(self).layer._cell(self, xp, state, self.weight_hh, self.bias_hh)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s


class RNNCell(_CellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu)."""

    layer = RNN

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNNCell: unknown nonlinearity {nonlinearity!r}; expected 'tanh' "
                             "or 'relu'")
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        x, (h,) = self._check(input, (hx,))
        h = self._step(x, h)
        return h.squeeze(0) if input.ndim == 1 else h


class LSTMCell(_CellBase):
    """One LSTM step (gates [i, f, g, o]); ``forward(x, (h, c))`` returns (h', c')."""

    gates = 4
    layer = LSTM

    def forward(self, input, hx=None):
        if hx is not None and not (isinstance(hx, tuple) and len(hx) == 2):
            raise TypeError("LSTMCell: hx must be a tuple (h, c)")
        x, (h, c) = self._check(input, (None, None) if hx is None else hx)
        h, c = self._step(x, (h, c))
        return (h.squeeze(0), c.squeeze(0)) if input.ndim == 1 else (h, c)


class GRUCell(_CellBase):
    """One GRU step (gates [r, z, n])."""

    gates = 3
    layer = GRU

    def forward(self, input, hx=None):
        x, (h,) = self._check(input, (hx,))
        h = self._step(x, h)
        return h.squeeze(0) if input.ndim == 1 else h
