"""Tensor methods torch scripts use that are compositions of other Tensor methods
(``view_as``, ``new_zeros``, ``log10``, ``topk``, ``sort`` ...), kept apart from the core
in ``tensor.py``: ``Tensor`` inherits them from ``TorchMethods``. Also the numpy-style
keyword aliases torch accepts (``axis=`` for ``dim=``, ``keepdims=`` for ``keepdim=``).

Nothing here has its own backward: values picked by ``topk``/``sort`` are a ``gather``
(gradient to the picked elements), the logarithms are ``log`` scaled.
"""
from __future__ import annotations

import collections
import functools
import math

import numpy as np

from . import random as _random
from .backend import get_backend
from .ops.movement import Cat

# what torch.topk / torch.sort return (torch.return_types.topk / .sort)
TopK = collections.namedtuple("topk", ["values", "indices"])
Sort = collections.namedtuple("sort", ["values", "indices"])

# The methods (and the torch.* functions made from them) that take numpy's spellings.
NUMPY_ALIASED = ("sum", "mean", "max", "min", "amax", "amin", "argmax", "argmin", "var",
                 "std", "logsumexp", "norm", "cumsum", "softmax", "log_softmax", "squeeze",
                 "unsqueeze", "topk", "sort", "argsort", "any", "all", "flip", "chunk",
                 "split", "unbind", "gather", "index_select")
_ALIASES = {"axis": "dim", "keepdims": "keepdim"}

UNSUPPORTED_DTYPES = {
    "float16": "float16 (half) is not supported by tinygrad_k on purpose: the kernels are "
               "float32/float64 only; use float32 (mixed precision and autocast are not "
               "available either)",
    "bfloat16": "bfloat16 is not supported by tinygrad_k on purpose: the kernels are "
                "float32/float64 only; use float32",
    "complex64": "complex dtypes are not supported by tinygrad_k; use two float32 tensors",
    "complex128": "complex dtypes are not supported by tinygrad_k; use two float64 tensors",
}


class UnsupportedDtype:
    """A dtype name torch has and we do not support on purpose: any use of it as a dtype
    (``x.to(half)``, ``zeros(2, dtype=half)``) raises a TypeError that says so."""

    def __init__(self, name):
        self.name = name

    @property
    def dtype(self):  # NumPy asks for this when the object is used as a dtype
        raise TypeError(UNSUPPORTED_DTYPES[self.name])

    @property
    def itemsize(self):
        raise TypeError(UNSUPPORTED_DTYPES[self.name])

    def __repr__(self):
        return f"tinygrad_k.{self.name} (not supported)"


def _raw(v):
    return v._array if hasattr(v, "_array") else v


def rename_numpy_kwargs(op, kwargs):
    """``kwargs`` with ``axis``/``keepdims`` spelled ``dim``/``keepdim``."""
    if not kwargs or not ("axis" in kwargs or "keepdims" in kwargs):
        return kwargs
    out = {}
    for k, v in kwargs.items():
        name = _ALIASES.get(k, k)
        if name in out:
            raise TypeError(f"{op}: got both '{name}' and its alias '{k}'")
        out[name] = v
    return out


def accept_numpy_kwargs(method):
    """Wrap a Tensor method so it also takes ``axis=`` / ``keepdims=``."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return method(self, *args, **rename_numpy_kwargs(method.__name__, kwargs))
    return wrapper


def add_numpy_aliases(cls):
    """Called once on Tensor: its NUMPY_ALIASED methods also take numpy's keywords."""
    for name in NUMPY_ALIASED:
        setattr(cls, name, accept_numpy_kwargs(getattr(cls, name)))
    return cls


class TorchMethods:
    """Mixed into Tensor. Only uses Tensor's public methods and ``_wrap``/``_backend``."""

    __slots__ = ()

    # -- shapes and new tensors like this one -------------------------------------------
    def view_as(self, other):
        return self.view(other.shape)

    def reshape_as(self, other):
        return self.reshape(other.shape)

    def nelement(self):
        return self.numel()

    def element_size(self):
        return int(self.dtype.itemsize)

    def is_floating_point(self):
        return self.dtype.kind == "f"

    def _new(self, arr, requires_grad):
        t = type(self)._wrap(arr, self._backend, False)
        return t.requires_grad_(True) if requires_grad else t

    def _new_args(self, size, dtype, device):
        size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) \
            else tuple(size)
        backend = self._backend if device is None else get_backend(device)
        return tuple(int(s) for s in size), (self.dtype if dtype is None else
                                             np.dtype(dtype)), backend

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        """Zeros of ``size`` with this tensor's dtype and device (unless given)."""
        size, dtype, b = self._new_args(size, dtype, device)
        return type(self)._wrap(b.xp.zeros(size, dtype=dtype), b, False).requires_grad_(
            requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        size, dtype, b = self._new_args(size, dtype, device)
        return type(self)._wrap(b.xp.ones(size, dtype=dtype), b, False).requires_grad_(
            requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        size, dtype, b = self._new_args(size, dtype, device)
        return type(self)._wrap(b.xp.empty(size, dtype=dtype), b, False).requires_grad_(
            requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        size, dtype, b = self._new_args((size,), dtype, device)
        return type(self)._wrap(b.xp.full(size, fill_value, dtype=dtype), b,
                                False).requires_grad_(requires_grad)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        """A copy of ``data`` with this tensor's dtype and device (unless given)."""
        data = data.numpy() if isinstance(data, type(self)) else data
        t = type(self)(np.array(data), dtype=self.dtype if dtype is None else dtype,
                       device=self.device if device is None else device)
        return t.requires_grad_(True) if requires_grad else t

    # -- elementwise compositions ----------------------------------------------------
    def log10(self):
        """log(x) / ln 10 (gradient 1 / (x ln 10))."""
        return self.log() * (1.0 / math.log(10.0))

    def log2(self):
        return self.log() * (1.0 / math.log(2.0))

    def subtract(self, other):
        return self.sub(other)

    def multiply(self, other):
        return self.mul(other)

    def divide(self, other):
        return self.div(other)

    true_divide = divide

    def absolute(self):
        return self.abs()

    def negative(self):
        return self.neg()

    def greater(self, other):
        return self.gt(other)

    def less(self, other):
        return self.lt(other)

    def greater_equal(self, other):
        return self.ge(other)

    def less_equal(self, other):
        return self.le(other)

    def swapaxes(self, axis0, axis1):
        return self.transpose(axis0, axis1)

    swapdims = swapaxes

    def index_select(self, dim, index):
        """The slices ``index`` (a 1-D integer tensor) along ``dim``."""
        if index.ndim > 1 or index.dtype.kind not in "iu":
            raise TypeError(f"index_select: index must be a 1-D integer tensor, got dtype "
                            f"{index.dtype} and shape {index.shape}")
        d = dim % max(self.ndim, 1)
        return self[(slice(None),) * d + (index.reshape(-1),)]

    # -- rounding, remainder and floor division -----------------------------------------
    # floor/ceil/round/trunc are piecewise constant: their gradient is zero, so the result
    # is a constant (no graph). remainder = a - floor(a / b) * b with that constant floor
    # gives torch's gradients (1 for a, -floor(a / b) for b).
    def _constant(self, fn):
        return type(self)._wrap(fn(self._array), self._backend, False)

    def floor(self):
        return self._constant(self._backend.xp.floor)

    def ceil(self):
        return self._constant(self._backend.xp.ceil)

    def trunc(self):
        return self._constant(self._backend.xp.trunc)

    def round(self, decimals=0):
        """Half to even, as torch.round."""
        return self._constant(lambda a: self._backend.xp.round(a, decimals))

    def frac(self):
        return self - self.trunc()

    def floor_divide(self, other):
        """floor(self / other) (rounding toward minus infinity, as torch's floor_divide)."""
        other = self._operand(other, "floor_divide")
        if self.dtype.kind in "iu" and other.dtype.kind in "iu":
            return type(self)._wrap(self._backend.xp.floor_divide(self._array, other._array),
                                    self._backend, False)
        return self.div(other).floor()

    def remainder(self, other):
        """self - floor(self / other) * other: the sign of ``other``, as torch.remainder."""
        other = self._operand(other, "remainder")
        if self.dtype.kind in "iu" and other.dtype.kind in "iu":
            return type(self)._wrap(self._backend.xp.remainder(self._array, other._array),
                                    self._backend, False)
        return self - self.div(other).floor() * other

    def fmod(self, other):
        """self - trunc(self / other) * other: the sign of ``self``, as torch.fmod."""
        other = self._operand(other, "fmod")
        if self.dtype.kind in "iu" and other.dtype.kind in "iu":
            return type(self)._wrap(self._backend.xp.fmod(self._array, other._array),
                                    self._backend, False)
        return self - self.div(other).trunc() * other

    __mod__ = remainder
    __floordiv__ = floor_divide

    def __rmod__(self, other):
        return self._operand(other, "remainder").remainder(self)

    def __rfloordiv__(self, other):
        return self._operand(other, "floor_divide").floor_divide(self)

    # -- more compositions of differentiable ops -----------------------------------
    def expm1(self):
        return self.exp() - 1

    def exp2(self):
        return 2.0 ** self

    def sinh(self):
        return (self.exp() - (-self).exp()) * 0.5

    def cosh(self):
        return (self.exp() + (-self).exp()) * 0.5

    def lerp(self, end, weight):
        """self + weight * (end - self)."""
        return self + (end - self) * weight

    def outer(self, vec2):
        """(n,) x (m,) -> (n, m): self_i * vec2_j."""
        if self.ndim != 1 or vec2.ndim != 1:
            raise RuntimeError(f"outer: expected two 1-D tensors, got shapes {self.shape} and "
                               f"{vec2.shape}")
        return self.unsqueeze(1) * vec2.unsqueeze(0)

    ger = outer

    def narrow(self, dim, start, length):
        """The slice [start, start + length) of ``dim`` (a view-like slice)."""
        d = dim % max(self.ndim, 1)
        start = int(start) % self.shape[d] if int(start) < 0 else int(start)
        if start + int(length) > self.shape[d] or length < 0:
            raise IndexError(f"narrow: start ({start}) + length ({length}) exceeds dimension "
                             f"size ({self.shape[d]}) of dim {dim}")
        return self[(slice(None),) * d + (slice(start, start + int(length)),)]

    def select(self, dim, index):
        d = dim % max(self.ndim, 1)
        return self[(slice(None),) * d + (int(index),)]

    def roll(self, shifts, dims=None):
        """Elements shifted by ``shifts`` along ``dims`` (wrapping), as torch.roll; with
        ``dims=None`` the flattened tensor is rolled and reshaped back."""
        if dims is None:
            return self.flatten().roll(shifts, 0).view(self.shape)
        shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if len(shifts) != len(dims):
            raise RuntimeError(f"roll: shifts {shifts} and dims {dims} differ in length")
        out = self
        for s, d in zip(shifts, dims):
            n = out.shape[d]
            s = s % n if n else 0
            if s:
                d = d % out.ndim
                head = out[(slice(None),) * d + (slice(n - s, n),)]
                tail = out[(slice(None),) * d + (slice(0, n - s),)]
                out = Cat.apply(d, head, tail)
        return out

    def masked_select(self, mask):
        """The elements where the bool ``mask`` (broadcast to self) is True, as 1-D."""
        if mask.dtype != np.bool_:
            raise TypeError(f"masked_select: mask must be bool, got {mask.dtype}")
        return self.expand(np.broadcast_shapes(self.shape, mask.shape))[
            mask.expand(np.broadcast_shapes(self.shape, mask.shape))]

    def diag(self, diagonal=0):
        """1-D -> the square matrix with it on the ``diagonal``; 2-D -> that diagonal."""
        xp = self._backend.xp
        if self.ndim == 1:
            n = self.shape[0] + abs(diagonal)
            rows = xp.arange(self.shape[0]) + max(-diagonal, 0)
            cols = xp.arange(self.shape[0]) + max(diagonal, 0)
            out = self.new_zeros(n, n)
            one_hot = type(self)._wrap((xp.arange(n)[:, None] == rows[None, :]).astype(
                self.dtype), self._backend, False)          # (n, k): row of element k
            place = type(self)._wrap((cols[:, None] == xp.arange(n)[None, :]).astype(
                self.dtype), self._backend, False)          # (k, n): column of element k
            return out + (one_hot * self.unsqueeze(0)) @ place
        if self.ndim == 2:
            r = xp.arange(max(0, min(self.shape[0] + min(diagonal, 0),
                                     self.shape[1] - max(diagonal, 0))))
            return self[(type(self)._wrap(r + max(-diagonal, 0), self._backend, False),
                         type(self)._wrap(r + max(diagonal, 0), self._backend, False))]
        raise RuntimeError(f"diag: expected a 1-D or 2-D tensor, got shape {self.shape}")

    def trace(self):
        return self.diag().sum()

    # -- no gradient: tests and integer results ---------------------------------------
    def isinf(self):
        return self._constant(self._backend.xp.isinf)

    def isfinite(self):
        return self._constant(self._backend.xp.isfinite)

    def logical_not(self):
        return self._constant(self._backend.xp.logical_not)

    def logical_and(self, other):
        return self._constant(lambda a: self._backend.xp.logical_and(a, _raw(other)))

    def logical_or(self, other):
        return self._constant(lambda a: self._backend.xp.logical_or(a, _raw(other)))

    def logical_xor(self, other):
        return self._constant(lambda a: self._backend.xp.logical_xor(a, _raw(other)))

    def nonzero(self, as_tuple=False):
        """Indices of the nonzero elements: (count, ndim) int64, or one 1-D tensor per dim."""
        idx = self._backend.xp.nonzero(self._array)
        wrap = type(self)._wrap
        if as_tuple:
            return tuple(wrap(i.astype(np.int64), self._backend, False) for i in idx)
        return wrap(self._backend.xp.stack(idx, axis=1).astype(np.int64), self._backend,
                    False)

    def count_nonzero(self, dim=None):
        return self._constant(lambda a: self._backend.xp.asarray(
            self._backend.xp.count_nonzero(a, axis=dim), dtype=np.int64))

    def bincount(self, weights=None, minlength=0):
        xp = self._backend.xp
        w = None if weights is None else weights._array
        return self._constant(lambda a: xp.bincount(a, w, minlength))

    def unique(self, sorted=True, return_inverse=False, return_counts=False, dim=None):
        """The sorted distinct values (and, if asked, inverse indices and counts)."""
        if dim is not None:
            raise NotImplementedError("unique: dim= is not supported; flatten first")
        xp = self._backend.xp
        vals, inv, counts = xp.unique(self._array, return_inverse=True, return_counts=True)
        wrap = type(self)._wrap
        out = [wrap(vals, self._backend, False)]
        if return_inverse:
            out.append(wrap(inv.reshape(self.shape).astype(np.int64), self._backend, False))
        if return_counts:
            out.append(wrap(counts.astype(np.int64), self._backend, False))
        return out[0] if len(out) == 1 else tuple(out)

    # -- random draws with this tensor as the distribution -----------------------------
    def multinomial(self, num_samples, replacement=False, *, generator=None):
        """Category indices drawn from the rows of self (non-negative weights, need not
        sum to 1), as ``torch.multinomial``: (num_samples,) for 1-D, (rows, num_samples)
        for 2-D, int64. Without replacement each category is drawn at most once (those
        of weight zero only after all the others)."""
        if self.ndim not in (1, 2) or self.dtype.kind != "f":
            raise RuntimeError(f"multinomial: prob_dist must be a 1 or 2 dim float tensor, "
                               f"got shape {self.shape} and dtype {self.dtype}")
        n, num_samples = self.shape[-1], int(num_samples)
        if num_samples <= 0:
            raise RuntimeError(f"multinomial: cannot sample {num_samples} (<= 0) samples")
        if not replacement and num_samples > n:
            raise RuntimeError(f"multinomial: cannot sample n_sample > prob_dist.size(-1) "
                               f"samples without replacement ({num_samples} > {n})")
        probs = np.asarray(self.numpy(), dtype=np.float64).reshape(-1, n)
        if not np.isfinite(probs).all() or (probs < 0).any():
            raise RuntimeError("multinomial: probability tensor contains either inf, nan or "
                               "element < 0")
        if (probs.sum(axis=1) <= 0).any():
            raise RuntimeError("multinomial: invalid multinomial distribution (sum of "
                               "probabilities <= 0)")
        draws = _random.multinomial(probs, num_samples, replacement, generator)
        draws = draws.reshape(self.shape[:-1] + (num_samples,))
        return type(self)._wrap(self._backend.asarray(draws), self._backend, False)

    def bernoulli(self, p=None, *, generator=None):
        """1 with probability self (or ``p``), else 0; self's shape and dtype."""
        probs = np.full(self.shape, p, np.float64) if p is not None else \
            np.asarray(self.numpy(), np.float64)
        if not ((probs >= 0) & (probs <= 1)).all():
            raise RuntimeError("bernoulli: expected all probabilities in [0, 1]")
        return type(self)._wrap(_random.bernoulli(probs, self.dtype, self._backend, generator),
                                self._backend, False)

    # -- sorting ------------------------------------------------------------------------
    def _sort_indices(self, dim, descending, op):
        xp = self._backend.xp
        if self.ndim == 0:
            return xp.zeros((), dtype=np.int64), 0
        if not -self.ndim <= dim < self.ndim:
            raise IndexError(f"{op}: dim {dim} out of range for a tensor of {self.ndim} "
                             "dimensions")
        d = dim % self.ndim
        arr = self._array
        if descending and arr.dtype.kind in "fi":
            idx = xp.argsort(-arr, axis=d, kind="stable")
        elif descending:
            idx = xp.flip(xp.argsort(arr, axis=d, kind="stable"), axis=d)
        else:
            idx = xp.argsort(arr, axis=d, kind="stable")
        return idx.astype(np.int64, copy=False), d

    def argsort(self, dim=-1, descending=False, stable=False):
        """Indices that sort along ``dim`` (ties in their original order)."""
        idx, _ = self._sort_indices(dim, descending, "argsort")
        return type(self)._wrap(idx, self._backend, False)

    def sort(self, dim=-1, descending=False, stable=False):
        """``(values, indices)`` sorted along ``dim``; values are a gather of self (the
        gradient goes back to where each value came from)."""
        idx, d = self._sort_indices(dim, descending, "sort")
        indices = type(self)._wrap(idx, self._backend, False)
        if self.ndim == 0:
            return Sort(self, indices)
        return Sort(self.gather(d, indices), indices)

    def topk(self, k, dim=-1, largest=True, sorted=True):
        """The ``k`` largest (or smallest) ``(values, indices)`` along ``dim``."""
        n = self.shape[dim] if self.ndim else 1
        if not 0 <= int(k) <= n:
            raise RuntimeError(f"topk: k ({k}) out of range for dimension {dim} of size {n} "
                               f"(shape {self.shape})")
        idx, d = self._sort_indices(dim, largest, "topk")
        if self.ndim == 0:
            return TopK(self, type(self)._wrap(idx, self._backend, False))
        idx = idx[(slice(None),) * d + (slice(0, int(k)),)]
        indices = type(self)._wrap(self._backend.xp.ascontiguousarray(idx), self._backend,
                                   False)
        return TopK(self.gather(d, indices), indices)

    # -- what we do not support, said so ----------------------------------------------
    def half(self):
        raise TypeError("Tensor.half(): " + UNSUPPORTED_DTYPES["float16"])

    def bfloat16(self):
        raise TypeError("Tensor.bfloat16(): " + UNSUPPORTED_DTYPES["bfloat16"])

    def to_sparse(self, *args, **kwargs):
        raise NotImplementedError("to_sparse: sparse tensors are not supported by tinygrad_k "
                                  "on purpose; keep dense tensors (and masks for sparsity)")

    def pin_memory(self):
        """Accepted as a no-op: pinned host memory only matters for asynchronous GPU
        copies, which tinygrad_k does not make."""
        return self
