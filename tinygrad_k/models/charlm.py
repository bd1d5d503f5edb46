"""Character-level language models: the study path from bigram counts to a transformer.

Every model reads a batch of character indices ``idx`` (N, T) and returns next-character
logits (N, T, V): position t sees ``idx[:, :t+1]`` only (causal), so one pass scores every
character of a word (see ``tinygrad_k.data.text``). The loss is the mean cross-entropy in
nats over the characters to predict; a model that knows nothing scores log(27) = 3.30.

| name               | what it is                                                        |
|--------------------|-------------------------------------------------------------------|
| `bigram`           | a (V, V) table of logits: the next character depends on this one  |
| `char_mlp`         | Bengio et al. 2003: embed the last `context` characters, concat, tanh MLP |
| `char_transformer` | GPT-style: token + position embeddings, pre-LayerNorm blocks of causal multi-head self-attention and a GELU MLP, residuals, optional weight tying |

``sample(model, num, seed, temperature)`` draws new words.
"""
from __future__ import annotations

import math

import numpy as np

from .. import nn
from ..autograd import no_grad
from ..data.text import IGNORE, VOCAB, decode
from ..nn import functional as F
from ..nn import init
from ..tensor import Tensor, tensor

__all__ = ["Bigram", "CharMLP", "CausalSelfAttention", "TransformerBlock", "CharTransformer",
           "LMLoss", "CHAR_MODELS", "build_char_model", "sample"]


class Bigram(nn.Module):
    """logits[n, t] = W[idx[n, t]]: W (V, V), row i the log-odds of what follows char i.

    Trained by gradient descent from W = 0 (the uniform guess), or set in closed form by
    :meth:`fit_counts` (the maximum-likelihood table with add-``smoothing`` counts), which is
    the baseline every other model must beat.
    """

    def __init__(self, vocab_size=len(VOCAB), block_size=None):
        super().__init__()
        self.vocab_size, self.block_size = vocab_size, block_size
        self.table = nn.Embedding(vocab_size, vocab_size)
        init.zeros_(self.table.weight)

    def forward(self, idx):
        return self.table(idx)

    def fit_counts(self, x, y, smoothing=1.0):
        """W[i, j] = log((count(i -> j) + s) / sum_j (count(i -> j) + s)) from arrays of
        inputs x and targets y (targets < 0 are ignored). Returns self."""
        x, y = np.asarray(x).ravel(), np.asarray(y).ravel()
        keep = y >= 0
        V = self.vocab_size
        counts = np.full((V, V), float(smoothing))
        np.add.at(counts, (x[keep], y[keep]), 1.0)
        logp = np.log(counts / counts.sum(1, keepdims=True))
        with no_grad():   # in place, as torch's copy_ on a parameter under no_grad
            self.table.weight.copy_(logp.astype(np.float32))
        return self

    def extra_repr(self):
        return f"vocab_size={self.vocab_size}"


class CharMLP(nn.Module):
    """Bengio et al. (2003), makemore part 2: for each position t, the embeddings of the
    last ``context`` characters idx[t-context+1 .. t] (the boundary '.' before the start)
    are concatenated, (N, T, context*n_embd), then  h = tanh(W1 e + b1),  logits = W2 h + b2.
    """

    def __init__(self, vocab_size=len(VOCAB), block_size=None, context=3, n_embd=16,
                 hidden=200):
        super().__init__()
        self.vocab_size, self.block_size, self.context = vocab_size, block_size, context
        self.emb = nn.Embedding(vocab_size, n_embd)
        self.fc1 = nn.Linear(context * n_embd, hidden)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(hidden, vocab_size)
        # a small last layer: the first loss is near log(V), not far above it
        bound = 0.1 / math.sqrt(hidden)
        init.uniform_(self.fc2.weight, -bound, bound)
        init.zeros_(self.fc2.bias)

    def windows(self, idx):
        """(N, T) -> (N, T, context) integer windows, left-padded with the boundary 0."""
        a = idx._array if isinstance(idx, Tensor) else np.asarray(idx)
        xp = idx.backend.xp if isinstance(idx, Tensor) else np
        N, T = a.shape
        padded = xp.concatenate([xp.zeros((N, self.context - 1), dtype=a.dtype), a], axis=1)
        win = xp.stack([padded[:, k:k + T] for k in range(self.context)], axis=-1)
        return Tensor._wrap(win, idx.backend, False) if isinstance(idx, Tensor) else tensor(win)

    def forward(self, idx):
        N, T = idx.shape
        e = self.emb(self.windows(idx)).reshape(N, T, -1)
        return self.fc2(self.act(self.fc1(e)))

    def extra_repr(self):
        return f"context={self.context}"


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, x (N, T, C) -> (N, T, C), from our ops only.

    With h heads of size d = C / h:  [q k v] = x W_qkv + b  (three (N, h, T, d) tensors),
        S = q k^T / sqrt(d)             (N, h, T, T)   matmul 1
        S[..., i, j] = -inf  for j > i  (causal mask: position i sees positions <= i)
        P = softmax(S, dim=-1)
        O = P v                         (N, h, T, d)   matmul 2
        y = concat_heads(O) W_o + b_o                  matmul 3 (the output projection)
    The backward pass is the chain rule through those ops (docs/backprop.md, "Attention").
    """

    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"CausalSelfAttention: n_embd {n_embd} is not divisible by "
                             f"n_head {n_head}")
        self.n_embd, self.n_head, self.block_size = n_embd, n_head, block_size
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self._masks = {}

    def _mask(self, T, x):
        key = (T, x.device)
        if key not in self._masks:   # True above the diagonal: the future, masked out
            self._masks[key] = tensor(np.triu(np.ones((T, T), dtype=bool), 1)).to(x.device)
        return self._masks[key]

    def forward(self, x):
        N, T, C = x.shape
        h, d = self.n_head, C // self.n_head
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.reshape(N, T, h, d).transpose(1, 2)
        k = k.reshape(N, T, h, d).transpose(1, 2)
        v = v.reshape(N, T, h, d).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d))
        att = att.masked_fill(self._mask(T, x), float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(N, T, C)
        return self.proj(y)

    def extra_repr(self):
        return f"n_embd={self.n_embd}, n_head={self.n_head}"


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block:  x = x + attn(ln1(x));  x = x + W2 gelu(W1 ln2(x))."""

    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(),
                                 nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """idx (N, T) -> logits (N, T, V): x = tok_emb[idx] + pos_emb[t], ``n_layer`` blocks,
    a final LayerNorm and a linear head. ``tie_weights``: the head's weight is the token
    embedding (V, C), one Parameter used twice (its gradient is the sum of both uses).
    Weights start N(0, 0.02), the residual projections N(0, 0.02 / sqrt(2 n_layer)) (GPT-2).
    """

    def __init__(self, vocab_size=len(VOCAB), block_size=32, n_embd=64, n_head=4, n_layer=2,
                 tie_weights=False):
        super().__init__()
        if block_size is None:
            raise ValueError("CharTransformer: block_size (the longest sequence) is required")
        self.vocab_size, self.block_size = vocab_size, block_size
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[TransformerBlock(n_embd, n_head, block_size)
                                      for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.tie_weights = tie_weights
        for name, p in self.named_parameters():
            if name.endswith("bias") or ".ln" in name or name.startswith("ln_"):
                continue
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("attn.proj.weight",
                                                                 "mlp.2.weight")) else 0.02
            init.normal_(p, 0.0, std)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                init.zeros_(p)
        if tie_weights:
            self.head.weight = self.tok_emb.weight

    def forward(self, idx):
        N, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"CharTransformer: sequence of length {T} is longer than "
                             f"block_size {self.block_size}")
        pos = tensor(np.arange(T, dtype=np.int64)).to(idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        return self.head(self.ln_f(self.blocks(x)))

    def extra_repr(self):
        return f"block_size={self.block_size}, tie_weights={self.tie_weights}"


CHAR_MODELS = {"bigram": Bigram, "char_mlp": CharMLP, "char_transformer": CharTransformer}


def build_char_model(name, block_size, vocab_size=len(VOCAB), **kwargs):
    """One of CHAR_MODELS for sequences of at most ``block_size`` characters."""
    if name not in CHAR_MODELS:
        raise ValueError(f"unknown character model {name!r}: expected one of "
                         f"{sorted(CHAR_MODELS)}")
    return CHAR_MODELS[name](vocab_size=vocab_size, block_size=block_size, **kwargs)


class LMLoss(nn.Module):
    """Mean next-character cross-entropy in nats: logits (N, T, V) (or (N, V)), targets
    (N, T) (or (N,)), positions whose target is IGNORE (-1, padding) left out.

    ``batch_weight(targets)`` is the number of characters scored, so that a mean over
    batches weighted by it is the exact loss per character of a whole dataset.
    """

    def forward(self, logits, targets):
        V = logits.shape[-1]
        return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE)

    @staticmethod
    def batch_weight(targets):
        return int((targets.numpy() != IGNORE).sum())


def sample(model, num=10, seed=0, temperature=1.0, max_len=None, device="cpu"):
    """Draw ``num`` words: start from the boundary '.', repeatedly sample the next character
    from softmax(logits / temperature) until '.' (or ``max_len`` characters).

    ``temperature`` < 1 sharpens the distribution (more typical words), > 1 flattens it.
    Reproducible: the draws come from NumPy's generator seeded with ``seed``.
    """
    if not temperature > 0:
        raise ValueError(f"sample: temperature must be > 0, got {temperature}")
    if num < 1:
        raise ValueError(f"sample: num must be >= 1, got {num}")
    limit = model.block_size - 1 if getattr(model, "block_size", None) else 30
    max_len = limit if max_len is None else min(int(max_len), limit)
    rng = np.random.default_rng(seed)
    idx = np.zeros((num, 1), dtype=np.int64)
    done = np.zeros(num, dtype=bool)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for _ in range(max_len):
                logits = model(tensor(idx).to(device)).numpy()[:, -1, :].astype(np.float64)
                z = logits / temperature
                p = np.exp(z - z.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                nxt = (p.cumsum(1) > rng.random((num, 1))).argmax(1)
                nxt[done] = 0
                idx = np.concatenate([idx, nxt[:, None]], axis=1)
                done |= nxt == 0
                if done.all():
                    break
    finally:
        model.train(was_training)
    return [decode(row[1:]).split(".")[0] for row in idx]
