"""Activation modules (each calls the function of the same name in ``nn.functional``)."""
from __future__ import annotations

import math

import numpy as np

from ...tensor import Tensor, zeros
from .. import functional as F
from .. import init
from .linear import Linear
from .module import Module, _param

__all__ = ["ReLU", "Sigmoid", "Tanh", "LeakyReLU", "GELU", "Softmax", "LogSoftmax", "SiLU", "Softplus", "MultiheadAttention"]


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


class MultiheadAttention(Module):
    """Multi-head attention, as ``torch.nn.MultiheadAttention``:

        head_i = softmax(q W_qi^T (k W_ki^T)^T / sqrt(d) + mask) (v W_vi^T),  d = E / H
        out = concat(head_1 .. head_H) W_o^T + b_o

    query (L, N, E) (or (N, L, E) with ``batch_first``, or unbatched (L, E)), key (S, N,
    kdim), value (S, N, vdim). Parameters with PyTorch's names and init:
    ``in_proj_weight`` (3E, E) when kdim = vdim = E (else ``q_proj_weight``,
    ``k_proj_weight``, ``v_proj_weight``), ``in_proj_bias`` (3E,), ``out_proj`` (a
    Linear). ``key_padding_mask`` (N, S) and ``attn_mask`` (L, S) or (N*H, L, S): a bool
    True marks a pair that may NOT attend (the opposite of scaled_dot_product_attention's
    bool mask), a float is added to the scores. Returns (output, weights): weights
    averaged over heads (N, L, S) or per head (N, H, L, S), or None without
    ``need_weights``. A composite of matmul, softmax, masked_fill and dropout.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got "
                             f"embed_dim={embed_dim} and num_heads={num_heads} instead")
        if embed_dim % num_heads:
            raise ValueError("embed_dim must be divisible by num_heads")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_bias_kv and add_zero_attn are "
                                      "not supported; pad key/value yourself")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, float(dropout)
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.head_dim, self.batch_first = embed_dim // num_heads, batch_first
        if self._qkv_same_embed_dim:
            self.in_proj_weight = _param(3 * embed_dim, embed_dim)
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = _param(embed_dim, embed_dim)
            self.k_proj_weight = _param(embed_dim, self.kdim)
            self.v_proj_weight = _param(embed_dim, self.vdim)
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = _param(3 * embed_dim)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)
        self._reset_parameters()

    def _reset_parameters(self):
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)

    def _projections(self):
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            w = self.in_proj_weight
            ws = (w[:e], w[e:2 * e], w[2 * e:])
        else:
            ws = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        b = self.in_proj_bias
        bs = (None,) * 3 if b is None else (b[:e], b[e:2 * e], b[2 * e:])
        return ws, bs

    def _mask(self, mask, name, dtype):
        """A bool mask -> -inf where True; a float mask as is (as the scores' dtype)."""
        if mask is None:
            return None
        if not isinstance(mask, Tensor):
            mask = Tensor(np.asarray(mask))
        if mask.dtype != np.bool_ and mask.dtype.kind != "f":
            raise TypeError(f"MultiheadAttention: only bool and floating types of {name} are "
                            f"supported, got {mask.dtype}")
        if mask.dtype == np.bool_:
            return zeros(*mask.shape, dtype=dtype, device=mask.device).masked_fill(
                mask, float("-inf"))
        return mask.to(dtype=dtype)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        name = "MultiheadAttention"
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use "
                               "the Transformer module method `generate_square_subsequent_mask` "
                               "to create this mask.")
        batched = query.ndim == 3
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"{name}: query {query.shape}, key {key.shape}, value {value.shape}: "
                             "expected all 3-D (batched) or all 2-D (unbatched)")
        if not batched:  # (L, E): a batch of one
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:  # (N, L, E) -> (L, N, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        L, N, E = query.shape
        S = key.shape[0]
        H, d = self.num_heads, self.head_dim
        if E != self.embed_dim or key.shape[2] != self.kdim or value.shape[2] != self.vdim:
            raise ValueError(f"{name}: query/key/value last dimensions {E}, {key.shape[2]}, "
                             f"{value.shape[2]}, expected {self.embed_dim}, {self.kdim}, "
                             f"{self.vdim}")
        if key.shape[:2] != value.shape[:2] or key.shape[1] != N:
            raise ValueError(f"{name}: key {key.shape} and value {value.shape} must be "
                             f"(S, N, *) with N = {N}")
        (wq, wk, wv), (bq, bk, bv) = self._projections()
        q = F.linear(query, wq, bq).reshape(L, N * H, d).transpose(0, 1)  # (N*H, L, d)
        k = F.linear(key, wk, bk).reshape(S, N * H, d).transpose(0, 1)
        v = F.linear(value, wv, bv).reshape(S, N * H, d).transpose(0, 1)
        scores = (q * (1.0 / math.sqrt(d))) @ k.transpose(1, 2)  # (N*H, L, S)
        mask = self._mask(attn_mask, "attn_mask", scores.dtype)
        if mask is not None:
            if mask.ndim == 2 and mask.shape != (L, S) or mask.ndim == 3 and mask.shape != (
                    N * H, L, S) or mask.ndim not in (2, 3):
                raise RuntimeError(f"{name}: attn_mask of shape {mask.shape}, expected "
                                   f"{(L, S)} or {(N * H, L, S)}")
            scores = scores + mask
        kpm = self._mask(key_padding_mask, "key_padding_mask", scores.dtype)
        if kpm is not None:
            if kpm.shape != (N, S):
                raise RuntimeError(f"{name}: key_padding_mask of shape {kpm.shape}, expected "
                                   f"{(N, S)}")
            scores = (scores.reshape(N, H, L, S) + kpm.reshape(N, 1, 1, S)).reshape(N * H, L, S)
        weights = scores.softmax(-1)
        if self.dropout > 0.0 and self.training:
            weights = F.dropout(weights, self.dropout, True)
        out = (weights @ v).transpose(0, 1).reshape(L, N, E)  # heads side by side
        out = self.out_proj(out)
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        w = weights.reshape(N, H, L, S)
        if average_attn_weights:
            w = w.mean(1)
        if not batched:
            w = w.squeeze(0)
        return out, w
