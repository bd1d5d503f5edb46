"""The Tensor: an array on a device, plus what autograd needs (grad, requires_grad, node).

Every differentiable method is a thin call into a Function from ``tinygrad_k.ops``; the
math lives there, forward and backward side by side.
"""
from __future__ import annotations

import collections
import math
import numbers
import weakref

import numpy as np

from . import random as _random
from .autograd import (Context, Function, RemovableHandle, _initial_grad, is_grad_enabled,
                       register_tensor_type, run_backward, torch_type_name, version_counter)
from .autograd import _accumulate as _accumulate_grad
from .autograd import _graph_entry
from .backend import Backend, get_backend, normalize_device
from .backward_trace import print_trace
from .ops import elementwise as E
from .ops import linalg as L
from .ops import movement as M
from .ops import nn as N
from .ops import reduce as R
from .tensor_methods import TorchMethods, UnsupportedDtype, add_numpy_aliases

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)
int32 = np.dtype(np.int32)
bool_ = np.dtype(np.bool_)
uint8 = np.dtype(np.uint8)

# torch.set_default_dtype / set_default_device: what factories and Python data get when
# no dtype / device is given
_DEFAULTS = {"dtype": float32, "device": "cpu"}

_DTYPE_NAMES = {"float32": float32, "float": float32, "float64": float64, "double": float64,
                "int64": int64, "long": int64, "int32": int32, "int": int32, "bool": bool_,
                "uint8": uint8}


# what x.max(dim) / x.min(dim) return, as torch.return_types.max / .min
MaxResult = collections.namedtuple("max", ["values", "indices"])
MinResult = collections.namedtuple("min", ["values", "indices"])


def to_dtype(dtype):
    """numpy dtype from a dtype, a numpy scalar type or a name like "float32"."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype not in _DTYPE_NAMES:
            raise TypeError(f"unknown dtype {dtype!r}: expected one of {sorted(_DTYPE_NAMES)}")
        return _DTYPE_NAMES[dtype]
    return np.dtype(dtype)


def _default_dtype(arr_dtype):
    """PyTorch's inference: Python floats -> the default dtype (float32 unless
    ``set_default_dtype``), ints -> int64, bools -> bool."""
    if arr_dtype.kind == "f":
        return _DEFAULTS["dtype"] if arr_dtype == np.float64 else arr_dtype
    if arr_dtype.kind in "iu":
        return int64 if arr_dtype.kind == "i" or arr_dtype.itemsize >= 8 else arr_dtype
    return arr_dtype


@register_tensor_type
class Tensor(TorchMethods):
    """An n-dimensional array with reverse-mode autograd.

    Attributes: ``_array`` (the numpy/cupy array), ``grad`` (Tensor or None),
    ``requires_grad``, ``grad_fn`` (the node that made it), ``device`` ("cpu"/"cuda").
    ``.grad`` accumulates across ``backward`` calls, as in PyTorch: zero it
    (``opt.zero_grad()`` or ``t.grad = None``) between steps.

    Storage: views (reshape, transpose, basic slicing, expand, detach) share the array
    memory and the version counter of their base; every in-place method bumps it
    (``_version``), and backward refuses a saved tensor changed since it was saved. Code
    that writes into ``_array`` directly calls ``_bump_version()`` afterwards.
    """

    __slots__ = ("_array", "grad", "requires_grad", "_ctx", "_backend", "_retains_grad", "name",
                 "_vc", "_base", "_hooks", "_acc", "_post_accumulate_grad_hooks", "__weakref__")
    __array_priority__ = 1000  # numpy scalars defer to our reflected operators

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        backend = get_backend(device if device is not None else
                              (data.device if isinstance(data, Tensor) else _DEFAULTS["device"]))
        if isinstance(data, Tensor):
            data = data._array
        dtype = to_dtype(dtype)
        if dtype is None:
            arr = backend.asarray(data)
            if not hasattr(data, "dtype"):  # Python lists/scalars follow PyTorch's defaults
                arr = arr.astype(_default_dtype(arr.dtype), copy=False)
        else:
            arr = backend.asarray(data, dtype=dtype)
        if arr.dtype == np.float16 or arr.dtype.kind not in "fiub":
            raise TypeError(f"Tensor: unsupported dtype {arr.dtype}; use float32, float64, "
                            "int64, int32, uint8 or bool")
        self._array = arr
        self.grad = None
        self._ctx = None
        self._backend = backend
        self._retains_grad = False
        self.name = None
        self._vc = self._base = self._hooks = self._acc = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, arr, backend: Backend, requires_grad: bool):
        """A Tensor around an existing array of ``backend`` (no copy, no checks)."""
        t = cls.__new__(cls)
        t._array, t.grad, t._ctx, t._backend = arr, None, None, backend
        t.requires_grad, t._retains_grad, t.name = requires_grad, False, None
        t._vc = t._base = t._hooks = t._acc = None
        return t

    # -- basic properties -----------------------------------------------------
    @property
    def data(self):
        """A Tensor on the same storage, outside the graph (requires_grad=False, no
        grad_fn), as torch's ``.data``: its in-place changes change this tensor, and, as in
        torch, are NOT seen by the version counter (``detach()`` is the tracked way)."""
        return Tensor._wrap(self._array, self._backend, False)

    @data.setter
    def data(self, value):
        """``t.data = other`` makes ``t`` use ``other``'s storage (shape and dtype too)."""
        if not isinstance(value, Tensor):
            raise TypeError(f"data: expected a Tensor, got {type(value).__name__}; wrap "
                            "arrays with tinygrad_k.tensor(...)")
        if value._backend is not self._backend:
            raise RuntimeError(f"data: cannot assign a tensor on {value.device} to a tensor on "
                               f"{self.device}; move it with .to() first")
        self._array = value._array

    @property
    def _version(self):
        """How many in-place changes this tensor's storage has seen (torch's ``_version``)."""
        return 0 if self._vc is None else self._vc.version

    def _bump_version(self):
        """Record an in-place change of ``_array`` (what every in-place method does; call
        it after writing into ``_array`` directly)."""
        vc = self._vc
        if vc is None:
            vc = self._vc = version_counter(self)
        vc.version += 1

    @property
    def shape(self):
        return tuple(self._array.shape)

    @property
    def dtype(self):
        return self._array.dtype

    @property
    def device(self) -> str:
        return self._backend.name

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def ndim(self):
        return self._array.ndim

    def dim(self):
        return self._array.ndim

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return int(self._array.size)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def grad_fn(self):
        """The node that made this tensor (None for a leaf): ``name()``, ``next_functions``,
        ``register_hook``, as torch's."""
        return self._ctx

    @property
    def retains_grad(self):
        return self._retains_grad and self._ctx is not None

    @property
    def _is_view(self):
        return self._base is not None

    def __repr__(self):
        extra = ""
        if self.device != "cpu":
            extra += f", device='{self.device}'"
        if self._ctx is not None:
            extra += f", grad_fn=<{self._ctx.name()}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        body = np.array2string(self.numpy(), separator=", ", precision=4, threshold=50)
        return f"tensor({body}, dtype={self.dtype}{extra})"

    # -- conversion -----------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (a copy from the GPU; shares memory on cpu)."""
        return self._backend.to_numpy(self._array)

    def tolist(self):
        return self.numpy().tolist()

    def item(self):
        if self._array.size != 1:
            raise ValueError(f"item(): only one-element tensors can be converted to a Python "
                             f"scalar, got shape {self.shape}")
        return self.numpy().reshape(()).item()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self._array.size != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} is "
                               "ambiguous; use .any() or .all()")
        return bool(self.item())

    def __array__(self, dtype=None, copy=None):
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)

    def to(self, device=None, dtype=None):
        """Copy to ``device`` and/or cast to ``dtype``; differentiable (like PyTorch)."""
        if isinstance(device, (np.dtype, type, UnsupportedDtype)) or (
                isinstance(device, str) and device in _DTYPE_NAMES):
            device, dtype = None, device
        out = self
        if device is not None and normalize_device(device) != self.device:
            out = ToDevice.apply(out, get_backend(device))
        if dtype is not None and to_dtype(dtype) != out.dtype:
            dtype = to_dtype(dtype)
            if dtype.kind == "f" and out.dtype.kind == "f":
                out = E.Cast.apply(out, dtype)
            else:
                out = Tensor._wrap(out._array.astype(dtype), out.backend, False)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(dtype=float32)

    def double(self):
        return self.to(dtype=float64)

    def long(self):
        return self.to(dtype=int64)

    def int(self):
        return self.to(dtype=int32)

    def bool(self):
        return self.to(dtype=bool_)

    def type_as(self, other):
        return self.to(dtype=other.dtype)

    def type(self, dtype):
        return self.to(dtype=dtype)

    def detach(self):
        """The same storage cut from the graph (requires_grad=False, no grad_fn); it shares
        the version counter, so changing it in place is seen by backward, as in torch."""
        t = Tensor._wrap(self._array, self._backend, False)
        t._vc = version_counter(self)
        return t

    def detach_(self):
        """Cut this tensor from the graph in place: it becomes a leaf without grad."""
        if self._base is not None and self._ctx is not None:
            raise RuntimeError("Can't detach views in-place. Use detach() instead.")
        self._ctx = None
        self.requires_grad = False
        return self

    def clone(self):
        return self * 1 if self.requires_grad else Tensor._wrap(self._array.copy(),
                                                                 self._backend, False)

    def contiguous(self):
        return self

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.dtype.kind != "f":
            raise RuntimeError(f"requires_grad_: only floating-point tensors can require "
                               f"gradients, got dtype {self.dtype}")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor; use .detach()")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor during backward (for inspection); a
        no-op on a leaf, which keeps its gradient anyway."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self._ctx is not None:
            self._retains_grad = True
            self._ctx._hooks().retained = weakref.ref(self)
        return self  # torch returns None; returning self lets `h = (x * 2).retain_grad()`

    def register_hook(self, hook):
        """``hook(grad) -> Tensor or None`` runs when this tensor's gradient is computed;
        a Tensor it returns replaces the gradient. Returns a handle with ``remove()``."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require "
                               "gradient")
        if self._ctx is not None:
            hooks = self._ctx._hooks().tensor
        else:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        hooks.append(hook)
        return RemovableHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` each time backward has accumulated this leaf's ``.grad``
        (torch's name). Returns a handle whose ``remove()`` unregisters it."""
        if self._ctx is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf "
                               "tensors")
        if not callable(hook):
            raise TypeError(f"register_post_accumulate_grad_hook: hook must be callable, got "
                            f"{type(hook).__name__}")
        hooks = getattr(self, "_post_accumulate_grad_hooks", None)  # unset slot: no hooks yet
        if hooks is None:
            hooks = self._post_accumulate_grad_hooks = []
        hooks.append(hook)
        return RemovableHandle(hooks, hook)

    # -- autograd -----------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None, *,
                 trace=False):
        """Accumulate d(self)/d(leaf) * gradient into every leaf's ``.grad``.

        ``gradient`` may be omitted only for a one-element tensor (it is then 1).
        ``retain_graph=True`` keeps saved values so backward can run again. ``inputs``:
        accumulate only into these tensors' ``.grad`` (leaves or not).
        ``trace=True`` prints one line per node in execution order (op, shapes, gradient
        norms) and returns the records; ``trace=<list>`` appends the records to that list.
        """
        if create_graph:
            raise NotImplementedError(
                "backward(create_graph=True): double backward is not supported; we differ "
                "from torch on purpose (each backward is hand-written array code that records "
                "no graph). Check second derivatives numerically, e.g. with "
                "tinygrad_k.gradcheck.")
        if not self.requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have "
                               "a grad_fn (did you forget requires_grad=True, or run under "
                               "no_grad()?)")
        g = _initial_grad(self, gradient, "backward")
        records = trace if isinstance(trace, list) else ([] if trace else None)
        if inputs is None:
            run_backward(self, g, retain_graph=bool(retain_graph), trace=records)
        else:
            inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
            got = run_backward([self], [g], retain_graph=bool(retain_graph), trace=records,
                               inputs=inputs, accumulate=False)
            for t, tg in zip(inputs, got):
                if tg is not None:
                    _accumulate_grad(t, tg)
        if trace is True:
            print_trace(records)
            return records
        return None

    # -- helpers to turn operands into Tensors -------------------------------------
    def _operand(self, other, op):
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (numbers.Number, np.generic)):
            dtype = self.dtype
            if self.dtype.kind in "iub" and isinstance(other, float):
                dtype = float32
            return Tensor._wrap(self._backend.xp.asarray(other, dtype=dtype), self._backend,
                                False)
        if isinstance(other, (list, tuple, np.ndarray)):
            return Tensor(other, device=self.device)
        raise TypeError(f"{op}: unsupported operand type {type(other).__name__} for Tensor")

    def _binary(self, fn, other, op, reverse=False):
        other = self._operand(other, op)
        _check_broadcast(self.shape, other.shape, op)
        a, b = (other, self) if reverse else (self, other)
        return fn.apply(a, b)

    # -- arithmetic operators -------------------------------------------------------
    def add(self, other):
        return self._binary(E.Add, other, "add")

    def sub(self, other):
        return self._binary(E.Sub, other, "sub")

    def mul(self, other):
        return self._binary(E.Mul, other, "mul")

    def div(self, other):
        return self._binary(E.Div, other, "div")

    __add__ = add
    __sub__ = sub
    __mul__ = mul
    __truediv__ = div

    def __radd__(self, other):
        return self._binary(E.Add, other, "add", reverse=True)

    def __rsub__(self, other):
        return self._binary(E.Sub, other, "sub", reverse=True)

    def __rmul__(self, other):
        return self._binary(E.Mul, other, "mul", reverse=True)

    def __rtruediv__(self, other):
        return self._binary(E.Div, other, "div", reverse=True)

    def __neg__(self):
        return E.Neg.apply(self)

    def neg(self):
        return E.Neg.apply(self)

    def pow(self, exponent):
        if isinstance(exponent, (numbers.Number, np.generic)) and not isinstance(exponent, bool):
            return E.PowScalar.apply(self, exponent)
        return self._binary(E.Pow, exponent, "pow")

    __pow__ = pow

    def __rpow__(self, base):
        if isinstance(base, (numbers.Number, np.generic)):
            return E.RPowScalar.apply(self, float(base))
        return self._operand(base, "pow").pow(self)

    def mm(self, other):
        """2-D matrix product (torch.mm): both operands must be 2-D."""
        return mm(self, other)

    def bmm(self, other):
        """Batched product of (B, N, M) and (B, M, P) (torch.bmm)."""
        return bmm(self, other)

    def matmul(self, other):
        other = self._operand(other, "matmul")
        if self.dtype != other.dtype:
            raise TypeError(f"matmul: dtypes differ ({self.dtype} and {other.dtype}) for shapes "
                            f"{self.shape} and {other.shape}; cast one with .to(dtype)")
        return L.MatMul.apply(self, other)

    __matmul__ = matmul

    def __rmatmul__(self, other):
        return self._operand(other, "matmul").matmul(self)

    # -- in-place ops -----------------------------------------------------------------
    # Each mutates this tensor's storage (and so its views) and bumps the version counter.
    # Without a graph to record (no_grad, or nothing requires grad) the arithmetic ones run
    # as one ufunc with out=; with one, the op runs out of place on a copy of the old
    # value (the node's saved input) and the result is written back, the tensor taking the
    # op's node as its grad_fn, as PyTorch rebases it.
    def _inplace(self, op, compute, operands=()):
        """Write ``compute(old_self)`` (a Tensor of self's shape) into self."""
        if is_grad_enabled() and (self.requires_grad or any(
                isinstance(o, Tensor) and o.requires_grad for o in operands)):
            self._check_inplace_autograd(op)
            prev = Tensor._wrap(self._array.copy(), self._backend, self.requires_grad)
            prev._ctx = self._ctx
            out = compute(prev)
            self._write(out._array, op)
            retained = self._retains_grad and self._ctx is not None
            self._ctx, self.requires_grad = out._ctx, out.requires_grad
            if retained and out._ctx is not None:
                out._ctx._hooks().retained = weakref.ref(self)
        else:
            self._write(compute(self)._array, op)
        self._bump_version()
        return self

    def _replaced_by(self, value):
        """``value`` broadcast to self's shape, as a graph node whose gradient to self is
        zero (what fill_/copy_/normal_ record): where(False, self, value)."""
        keep = Tensor._wrap(self._backend.xp.zeros(self.shape, dtype=bool), self._backend, False)
        return where(keep, self, value)

    def _check_inplace_autograd(self, op):
        if self.requires_grad and self._ctx is None:
            raise RuntimeError("a leaf Variable that requires grad is being used in an "
                               "in-place operation.")
        base = self._base
        if base is not None:
            if base.requires_grad and base._ctx is None:
                raise RuntimeError("a view of a leaf Variable that requires grad is being "
                                   "used in an in-place operation.")
            raise NotImplementedError(
                f"{op}: an in-place op on a view, recorded for autograd, is not supported; we "
                "differ from torch on purpose (torch rewrites the base's graph). Change the "
                "base instead (base[index] = value), or build a new tensor (torch.where, cat)")

    def _write(self, arr, op):
        if tuple(arr.shape) != self.shape:
            raise RuntimeError(f"{op}: output with shape {list(self.shape)} doesn't match the "
                               f"broadcast shape {list(arr.shape)}")
        if arr.dtype != self.dtype and not np.can_cast(arr.dtype, self.dtype, "same_kind"):
            raise RuntimeError(f"{op}: result type {_type_word(arr.dtype)} can't be cast to the "
                               f"desired output type {_type_word(self.dtype)}")
        self._array[...] = arr

    def _arith_(self, op, ufunc, fn, other, alpha=None):
        """add_/sub_/mul_/div_: one ufunc with out= when no graph is recorded."""
        if alpha is not None and alpha != 1:
            other = self._operand(other, op) * alpha
        if not (is_grad_enabled() and (self.requires_grad or (
                isinstance(other, Tensor) and other.requires_grad))):
            o = other._array if isinstance(other, Tensor) else other
            if isinstance(other, Tensor) and other._backend is not self._backend:
                raise RuntimeError(f"{op}: expected all tensors on the same device, got "
                                   f"{self.device} and {other.device}")
            xp = self._backend.xp
            res = (float32 if isinstance(o, float) and self.dtype.kind in "iub"
                   else xp.result_type(self._array, o))
            if res != self.dtype and not np.can_cast(res, self.dtype, "same_kind"):
                raise RuntimeError(f"{op}: result type {_type_word(res)} can't be cast to the "
                                   f"desired output type {_type_word(self.dtype)}")
            try:
                getattr(xp, ufunc)(self._array, o, out=self._array)
            except ValueError:
                raise RuntimeError(f"{op}: output with shape {list(self.shape)} doesn't match "
                                   f"the broadcast shape of {list(self.shape)} and "
                                   f"{list(np.shape(o))}") from None
            self._bump_version()
            return self
        return self._inplace(op, lambda t: fn(t, other), (other,))

    def add_(self, other, alpha=1):
        """self += alpha * other, in place."""
        return self._arith_("add_", "add", Tensor.add, other, alpha)

    def sub_(self, other, alpha=1):
        """self -= alpha * other, in place."""
        return self._arith_("sub_", "subtract", Tensor.sub, other, alpha)

    def mul_(self, other):
        """self *= other, in place."""
        return self._arith_("mul_", "multiply", Tensor.mul, other)

    def div_(self, other):
        """self /= other (true division), in place."""
        return self._arith_("div_", "true_divide", Tensor.div, other)

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def pow_(self, exponent):
        return self._inplace("pow_", lambda t: t.pow(exponent), (exponent,))

    def addcmul_(self, tensor1, tensor2, value=1):
        """self += value * tensor1 * tensor2, in place."""
        return self._inplace("addcmul_", lambda t: t + value * tensor1 * tensor2,
                             (tensor1, tensor2))

    def addcdiv_(self, tensor1, tensor2, value=1):
        """self += value * tensor1 / tensor2, in place."""
        return self._inplace("addcdiv_", lambda t: t + value * tensor1 / tensor2,
                             (tensor1, tensor2))

    def lerp_(self, end, weight):
        """self += weight * (end - self), in place."""
        return self._inplace("lerp_", lambda t: t + weight * (end - t), (end, weight))

    def clamp_(self, min=None, max=None):
        return self._inplace("clamp_", lambda t: t.clamp(min, max))

    clip_ = clamp_

    def clamp_min_(self, min):
        return self._inplace("clamp_min_", lambda t: t.clamp(min=min))

    def clamp_max_(self, max):
        return self._inplace("clamp_max_", lambda t: t.clamp(max=max))

    def masked_fill_(self, mask, value):
        """Write ``value`` where the boolean ``mask`` (broadcast to self) is True."""
        return self._inplace("masked_fill_", lambda t: t.masked_fill(mask, value), (value,))

    def zero_(self):
        return self.fill_(0)

    def fill_(self, value):
        """Every element set to ``value`` (a number or a one-element tensor)."""
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got "
                                   f"tensor with {value.ndim} dimensions")
            return self._inplace("fill_", lambda t: t._replaced_by(value.reshape(())), (value,))
        if is_grad_enabled() and self.requires_grad:
            return self._inplace("fill_", lambda t: t._replaced_by(value))
        self._array[...] = value
        self._bump_version()
        return self

    def copy_(self, src):
        """Copy ``src``'s values (broadcast to self's shape, cast to self's dtype) in."""
        if isinstance(src, Tensor):
            if is_grad_enabled() and (self.requires_grad or src.requires_grad):
                return self._inplace("copy_", lambda t: t._replaced_by(
                    src.to(self.device, self.dtype)), (src,))
            arr = (src._array if src._backend is self._backend else
                   self._backend.copy_from(src._array, src._backend))
        else:
            arr = src
        self._array[...] = self._backend.asarray(arr, dtype=self.dtype)
        self._bump_version()
        return self

    def _fill_random(self, op, draw):
        if is_grad_enabled() and self.requires_grad and self._ctx is None:
            raise RuntimeError("a leaf Variable that requires grad is being used in an "
                               "in-place operation.")
        if self._ctx is not None and is_grad_enabled():
            return self._inplace(op, lambda t: t._replaced_by(
                Tensor._wrap(draw(), self._backend, False)))
        self._array[...] = draw()
        self._bump_version()
        return self

    def uniform_(self, a=0.0, b=1.0, *, generator=None):
        """Fill with draws uniform on [a, b)."""
        return self._fill_random("uniform_", lambda: _random.uniform(
            self.shape, self.dtype, self._backend, a, b, **_gen(generator)))

    def normal_(self, mean=0.0, std=1.0, *, generator=None):
        """Fill with draws from N(mean, std^2)."""
        return self._fill_random("normal_", lambda: _random.normal(
            self.shape, self.dtype, self._backend, **_gen(generator)) * std + mean)

    def neg_(self):
        return self._inplace("neg_", Tensor.neg)

    def exp_(self):
        return self._inplace("exp_", Tensor.exp)

    def log_(self):
        return self._inplace("log_", Tensor.log)

    def sqrt_(self):
        return self._inplace("sqrt_", Tensor.sqrt)

    def abs_(self):
        return self._inplace("abs_", Tensor.abs)

    def relu_(self):
        return self._inplace("relu_", Tensor.relu)

    def sigmoid_(self):
        return self._inplace("sigmoid_", Tensor.sigmoid)

    def tanh_(self):
        return self._inplace("tanh_", Tensor.tanh)

    def sin_(self):
        return self._inplace("sin_", Tensor.sin)

    def cos_(self):
        return self._inplace("cos_", Tensor.cos)

    def reciprocal_(self):
        return self._inplace("reciprocal_", Tensor.reciprocal)

    def square_(self):
        return self._inplace("square_", Tensor.square)

    def __index__(self):
        """A one-element integer tensor as a Python index (``classes[label]``)."""
        if self.dtype.kind not in "iub" or self._array.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to "
                            "an index")
        return int(self._array.reshape(()).item())

    # comparisons: no gradient, bool results
    def _compare(self, other, fn):
        o = other._array if isinstance(other, Tensor) else other
        return Tensor._wrap(fn(self._array, o), self._backend, False)

    def __eq__(self, other):
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other):
        return self._compare(other, lambda a, b: a != b)

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__
    __hash__ = object.__hash__

    def __invert__(self):
        return Tensor._wrap(~self._array, self._backend, False)

    def __and__(self, other):
        return self._compare(other, lambda a, b: a & b)

    def __or__(self, other):
        return self._compare(other, lambda a, b: a | b)

    def any(self):
        return Tensor._wrap(self._array.any(), self._backend, False)

    def all(self):
        return Tensor._wrap(self._array.all(), self._backend, False)

    def isnan(self):
        return Tensor._wrap(self._backend.xp.isnan(self._array), self._backend, False)

    # -- elementwise math -------------------------------------------------------------
    def exp(self):
        return E.Exp.apply(self)

    def log(self):
        return E.Log.apply(self)

    def sqrt(self):
        return E.Sqrt.apply(self)

    def rsqrt(self):
        return self.sqrt().reciprocal()

    def reciprocal(self):
        return 1.0 / self

    def abs(self):
        return E.Abs.apply(self)

    __abs__ = abs

    def square(self):
        return self * self

    def sign(self):
        return Tensor._wrap(self._backend.xp.sign(self._array), self._backend, False)

    def maximum(self, other):
        return self._binary(E.Maximum, other, "maximum")

    def minimum(self, other):
        return self._binary(E.Minimum, other, "minimum")

    def clamp(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        return E.Clamp.apply(self, min, max)

    clip = clamp

    def relu(self):
        return E.ReLU.apply(self)

    def leaky_relu(self, negative_slope=0.01):
        return E.LeakyReLU.apply(self, negative_slope)

    def sigmoid(self):
        return E.Sigmoid.apply(self)

    def sin(self):
        return E.Sin.apply(self)

    def cos(self):
        return E.Cos.apply(self)

    def log1p(self):
        return E.Log1p.apply(self)

    def tanh(self):
        return E.Tanh.apply(self)

    def gelu(self, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        return E.GELU.apply(self, approximate)

    def softmax(self, dim=-1):
        return N.Softmax.apply(self, _one_dim(dim, self.ndim, "softmax"))

    def log_softmax(self, dim=-1):
        return N.LogSoftmax.apply(self, _one_dim(dim, self.ndim, "log_softmax"))

    # -- reductions ---------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False):
        return R.Sum.apply(self, R.normalize_dims(dim, self.ndim, "sum"), keepdim)

    def mean(self, dim=None, keepdim=False):
        if self.dtype.kind != "f":
            raise TypeError(f"mean: expected a floating-point tensor, got dtype {self.dtype}")
        return R.Mean.apply(self, R.normalize_dims(dim, self.ndim, "mean"), keepdim)

    def max(self, dim=None, keepdim=False):
        """As ``torch.max``: ``x.max()`` is the maximum of all elements (gradient shared
        evenly by tied maxima); ``x.max(dim)`` is a named tuple ``(values, indices)``
        whose values pass their gradient to the selected (first) maximum only;
        ``x.max(other)`` is ``maximum``. ``amax`` reduces over several dims, values only."""
        return self._max_min(dim, keepdim, True)

    def min(self, dim=None, keepdim=False):
        """As ``torch.min``; see ``max``."""
        return self._max_min(dim, keepdim, False)

    def _max_min(self, dim, keepdim, is_max):
        op = "max" if is_max else "min"
        if isinstance(dim, Tensor):
            return self.maximum(dim) if is_max else self.minimum(dim)
        if dim is None:
            return R.MaxMin.apply(self, R.normalize_dims(None, self.ndim, op), keepdim, is_max)
        d = _one_dim(dim, self.ndim, op)
        indices = (self.argmax if is_max else self.argmin)(d, keepdim=True)
        values = self.gather(d, indices)
        if not keepdim:
            values, indices = values.squeeze(d), indices.squeeze(d)
        return (MaxResult if is_max else MinResult)(values, indices)

    def amax(self, dim=None, keepdim=False):
        """Maximum over ``dim`` (an int, a tuple, or None for all); tied maxima share the
        gradient evenly (as ``torch.amax``)."""
        return R.MaxMin.apply(self, R.normalize_dims(dim, self.ndim, "amax"), keepdim, True)

    def amin(self, dim=None, keepdim=False):
        return R.MaxMin.apply(self, R.normalize_dims(dim, self.ndim, "amin"), keepdim, False)

    def var(self, dim=None, keepdim=False, correction=1, unbiased=None):
        """Variance with Bessel's correction by default (``correction=1``), like PyTorch."""
        if unbiased is not None:
            correction = 1 if unbiased else 0
        return R.Var.apply(self, R.normalize_dims(dim, self.ndim, "var"), keepdim, correction)

    def std(self, dim=None, keepdim=False, correction=1, unbiased=None):
        return self.var(dim, keepdim, correction, unbiased).sqrt()

    def logsumexp(self, dim=None, keepdim=False):
        return R.LogSumExp.apply(self, R.normalize_dims(dim, self.ndim, "logsumexp"), keepdim)

    def argmax(self, dim=None, keepdim=False):
        return self._arg(self._array.argmax, dim, keepdim, "argmax")

    def argmin(self, dim=None, keepdim=False):
        return self._arg(self._array.argmin, dim, keepdim, "argmin")

    def _arg(self, fn, dim, keepdim, op):
        if dim is None:
            out = fn()
            if keepdim:
                out = out.reshape((1,) * self.ndim)
        else:
            d = _one_dim(dim, self.ndim, op)
            out = fn(axis=d)
            if keepdim:
                out = self._backend.xp.expand_dims(out, d)
        return Tensor._wrap(self._backend.xp.asarray(out, dtype=np.int64), self._backend, False)

    # -- movement -----------------------------------------------------------------------
    def reshape(self, *shape):
        shape = _shape_arg(shape)
        shape = _infer_shape(shape, self._array.size, self.shape, "reshape")
        if shape == self.shape:
            return self
        return M.Reshape.apply(self, shape)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        s = _one_dim(start_dim, self.ndim, "flatten")
        e = _one_dim(end_dim, self.ndim, "flatten")
        if s > e:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        shape = self.shape
        new = shape[:s] + (math.prod(shape[s:e + 1]),) + shape[e + 1:]
        # the sizes multiply out by construction: straight to the node, as reshape ends
        return self if new == shape else M.Reshape.apply(self, new)

    def permute(self, *dims):
        dims = _shape_arg(dims)
        if sorted(_one_dim(d, self.ndim, "permute") for d in dims) != list(range(self.ndim)):
            raise ValueError(f"permute: dims {dims} is not a permutation of the "
                             f"{self.ndim} axes of shape {self.shape}")
        return M.Permute.apply(self, tuple(d % self.ndim for d in dims))

    def transpose(self, dim0=-2, dim1=-1):
        if self.ndim < 2:
            return self
        perm = list(range(self.ndim))
        a, b = _one_dim(dim0, self.ndim, "transpose"), _one_dim(dim1, self.ndim, "transpose")
        perm[a], perm[b] = perm[b], perm[a]
        return M.Permute.apply(self, tuple(perm))

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t(): expects a tensor with <= 2 dimensions, got {self.shape}")
        return self.transpose(0, 1) if self.ndim == 2 else self

    def squeeze(self, dim=None):
        if dim is None:
            shape = tuple(s for s in self.shape if s != 1)
        else:
            dims = {_one_dim(d, self.ndim, "squeeze")
                    for d in ((dim,) if isinstance(dim, int) else dim)}
            shape = tuple(s for i, s in enumerate(self.shape) if not (i in dims and s == 1))
        return self.reshape(shape)

    def unsqueeze(self, dim):
        d = _one_dim(dim, self.ndim + 1, "unsqueeze")
        shape = list(self.shape)
        shape.insert(d, 1)
        return self.reshape(tuple(shape))

    def expand(self, *shape):
        shape = _shape_arg(shape)
        if len(shape) < self.ndim:
            raise ValueError(f"expand: target shape {shape} has fewer dimensions than "
                             f"the tensor's {self.shape}")
        src = (1,) * (len(shape) - self.ndim) + self.shape
        out = []
        for want, have in zip(shape, src):
            want = have if want == -1 else want
            if have != 1 and have != want:
                raise ValueError(f"expand: cannot expand shape {self.shape} to {shape}")
            out.append(want)
        out = tuple(out)
        return self if out == self.shape else M.Expand.apply(self, out)

    def expand_as(self, other):
        return self.expand(other.shape)

    def broadcast_to(self, shape):
        return self.expand(shape)

    def repeat(self, *sizes):
        sizes = _shape_arg(sizes)
        t = self.reshape((1,) * (len(sizes) - self.ndim) + self.shape)
        # repeat = insert an axis before each, expand it, merge: reuses Expand/Reshape grads
        inter, final = [], []
        for r, s in zip(sizes, t.shape):
            inter += [r, s]
            final.append(r * s)
        t = t.reshape(tuple(x for s in t.shape for x in (1, s)))
        return t.expand(tuple(inter)).reshape(tuple(final))

    def __getitem__(self, index):
        index = _index_arg(index, self)
        return M.GetItem.apply(self, index)

    def masked_fill(self, mask, value):
        """``value`` where the boolean ``mask`` (broadcast to self) is True, self elsewhere;
        the gradient flows only where the mask is False."""
        if not isinstance(mask, Tensor) or mask.dtype != bool_:
            raise TypeError(f"masked_fill: mask must be a bool Tensor, got "
                            f"{getattr(mask, 'dtype', type(mask).__name__)}")
        fill = value if isinstance(value, Tensor) else full((), value, dtype=self.dtype,
                                                             device=self.device)
        return where(mask, fill, self)

    def flip(self, *dims):
        """Reverse the order of elements along ``dims`` (a view-like slice, as torch.flip)."""
        dims = _shape_arg(dims)
        index = [slice(None)] * self.ndim
        for d in dims:
            index[_one_dim(d, self.ndim, "flip")] = slice(None, None, -1)
        return M.GetItem.apply(self, tuple(index))

    def unbind(self, dim=0):
        """The slices along ``dim`` as a tuple of tensors (as torch.unbind)."""
        d = _one_dim(dim, self.ndim, "unbind")
        return tuple(self[(slice(None),) * d + (i,)] for i in range(self.shape[d]))

    def tril(self, diagonal=0):
        """Lower triangle of the last two dims (elements with col - row <= diagonal)."""
        return self._triangle(diagonal, True)

    def triu(self, diagonal=0):
        """Upper triangle of the last two dims (elements with col - row >= diagonal)."""
        return self._triangle(diagonal, False)

    def _triangle(self, diagonal, lower):
        if self.ndim < 2:
            raise ValueError(f"{'tril' if lower else 'triu'}: expected at least 2 dimensions, "
                             f"got shape {self.shape}")
        xp = self._backend.xp
        rows, cols = self.shape[-2:]
        keep = (xp.tril if lower else xp.triu)(xp.ones((rows, cols), dtype=bool), diagonal)
        return where(Tensor._wrap(keep, self._backend, False), self,
                     full((), 0, dtype=self.dtype, device=self.device))

    def cumsum(self, dim):
        """y_i = sum_{j <= i} a_j along ``dim``; the gradient is the reversed cumulative sum."""
        return R.Cumsum.apply(self, _one_dim(dim, self.ndim, "cumsum"))

    def norm(self, p=2, dim=None, keepdim=False):
        """The p-norm (p = 2 or 1, "fro" = 2) over ``dim`` (all elements when None)."""
        if p == "fro":
            p = 2
        if p == 2:
            return R.Norm2.apply(self, R.normalize_dims(dim, self.ndim, "norm"), keepdim)
        if p == 1:
            return self.abs().sum(dim, keepdim)
        raise ValueError(f"norm: p={p!r} is not supported, expected 2, 'fro' or 1")

    def gather(self, dim, index):
        """As ``torch.gather``: out[i, j, k] = self[index[i, j, k], j, k] for dim 0 (and so
        on). ``index`` is an int64 tensor with self's number of dimensions and sizes no
        larger than self's outside ``dim``. An integer-array ``__getitem__`` underneath,
        so the gradient is its scatter-add (repeated indices accumulate)."""
        d = _one_dim(dim, self.ndim, "gather")
        if not isinstance(index, Tensor) or index.dtype.kind not in "iu":
            raise TypeError(f"gather: index must be an integer Tensor, got "
                            f"{getattr(index, 'dtype', type(index).__name__)}")
        if index.device != self.device:
            raise RuntimeError(f"gather: index on {index.device} for a tensor on {self.device}")
        if index.ndim != self.ndim or any(
                i > s for k, (i, s) in enumerate(zip(index.shape, self.shape)) if k != d):
            raise ValueError(f"gather: index of shape {index.shape} does not fit input of shape "
                             f"{self.shape} along dim {d} (same number of dimensions, sizes no "
                             f"larger outside dim)")
        idx = index._array
        if idx.size and (int(idx.min()) < -self.shape[d] or int(idx.max()) >= self.shape[d]):
            raise IndexError(f"gather: index values span [{int(idx.min())}, {int(idx.max())}], "
                             f"out of range for size {self.shape[d]} of dim {d}")
        xp = self._backend.xp
        mesh = tuple(idx if k == d else xp.arange(n).reshape((-1,) + (1,) * (idx.ndim - k - 1))
                     for k, n in enumerate(idx.shape))
        return M.GetItem.apply(self, mesh)

    def __setitem__(self, index, value):
        """``self[index] = value`` in place (basic, integer-tensor and boolean-mask
        indices; ``value`` broadcast to the indexed shape). Recorded for autograd like any
        in-place op: the gradient of ``value`` is the indexed part of the output's."""
        idx = _index_arg(index, self)
        if not isinstance(value, Tensor) and not isinstance(value, (numbers.Number, np.generic)):
            value = Tensor(value, dtype=self.dtype, device=self.device)
        if is_grad_enabled() and (self.requires_grad or (isinstance(value, Tensor)
                                                         and value.requires_grad)):
            if isinstance(value, Tensor) and value.dtype != self.dtype:
                value = value.to(dtype=self.dtype)
            if self.requires_grad and self._ctx is None:  # torch assigns through a view
                raise RuntimeError("a view of a leaf Variable that requires grad is being used "
                                   "in an in-place operation.")
            self._inplace("__setitem__", lambda t: M.SetItem.apply(t, value, idx), (value,))
            return
        v = value._array if isinstance(value, Tensor) else value
        self._array[idx] = v
        self._bump_version()

    def pad(self, pad, value=0.0):
        """torch.nn.functional.pad (constant mode): ``pad`` lists (before, after) pairs
        starting from the LAST dimension."""
        if len(pad) % 2 or len(pad) // 2 > self.ndim:
            raise ValueError(f"pad: expected an even number of sizes, at most 2 per dimension "
                             f"of shape {self.shape}, got {tuple(pad)}")
        if any(p < 0 for p in pad):
            raise ValueError(f"pad: negative padding {tuple(pad)} is not supported")
        width = [(0, 0)] * self.ndim
        for i in range(len(pad) // 2):
            width[self.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
        return M.Pad.apply(self, tuple(width), value)

    def split(self, split_size_or_sections, dim=0):
        return split(self, split_size_or_sections, dim)

    def chunk(self, chunks, dim=0):
        d = _one_dim(dim, self.ndim, "chunk")
        size = -(-self.shape[d] // chunks)
        return split(self, size, d)

    # -- linear algebra and nn helpers --------------------------------------------------
    def dot(self, other):
        return self.matmul(other)


add_numpy_aliases(Tensor)


# ---------------------------------------------------------------------------------------
class ToDevice(Function):
    """y = x copied to another device.   dx = g copied back."""

    @staticmethod
    def forward(ctx, x, target):
        ctx.target = target
        return target.copy_from(x, ctx.backend)

    @staticmethod
    def backward(ctx, g):
        return ctx.backend.copy_from(g, ctx.target)

    @classmethod
    def apply(cls, x, target):
        # the output lives on another backend than the input: Function.apply assumes one
        ctx = Context(cls, (x,), x.backend)
        requires_grad = x.requires_grad and is_grad_enabled()
        result = Tensor._wrap(cls.forward(ctx, x._array, target), target, requires_grad)
        if requires_grad:
            ctx.next = (_graph_entry(x),)
            result._ctx = ctx
        return result


# -- argument helpers ---------------------------------------------------------------
def _type_word(dtype):
    """torch's word for a dtype in cast errors: float32 -> 'Float'."""
    return torch_type_name(dtype)[len("torch."):-len("Tensor")]


def _gen(generator):
    """The keyword that hands a ``generator=`` to tinygrad_k.random (when one is given)."""
    return {} if generator is None else {"generator": generator}


def _check_broadcast(a, b, op):
    for x, y in zip(reversed(a), reversed(b)):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"{op}: shapes {a} and {b} cannot be broadcast together "
                             f"(expected equal sizes or 1 in each trailing dimension)")


def _one_dim(dim, ndim, op):
    n = max(ndim, 1)
    if not isinstance(dim, (int, np.integer)) or not -n <= dim < n:
        raise IndexError(f"{op}: dim {dim} out of range for a tensor of {ndim} dimensions")
    return int(dim) % n


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def _infer_shape(shape, size, old, op):
    if shape.count(-1) > 1:
        raise ValueError(f"{op}: only one dimension can be -1, got {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or size % known:
            raise ValueError(f"{op}: cannot reshape tensor of shape {old} ({size} elements) "
                             f"into {shape}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    if math.prod(shape) != size:
        raise ValueError(f"{op}: cannot reshape tensor of shape {old} ({size} elements) "
                         f"into {shape}")
    return shape


def _index_arg(index, t):
    """Turn Tensor / list indices into arrays of the tensor's device."""
    def conv(i):
        if isinstance(i, Tensor):
            if i.device != t.device:
                raise RuntimeError(f"__getitem__: index on {i.device} for a tensor on {t.device}")
            return i._array
        if isinstance(i, (list, np.ndarray)):
            return t.backend.asarray(i)
        return i
    if isinstance(index, tuple):
        return tuple(conv(i) for i in index)
    return conv(index)


# -- functions that make or combine tensors --------------------------------------------
def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new Tensor holding a copy of ``data`` (PyTorch's dtype inference for Python data)."""
    if isinstance(data, Tensor):
        data = data._array
    out = Tensor(data, dtype=dtype, device=device, requires_grad=False)
    if isinstance(data, np.ndarray) and out._array is data:
        out._array = data.copy()
    if requires_grad:
        out.requires_grad_(True)
    return out


def _make(arr, device, requires_grad):
    t = Tensor._wrap(arr, get_backend(device), False)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _size(shape):
    return _shape_arg(shape)


def _factory_args(dtype, device, default=None):
    """(numpy dtype, backend) of a factory call: a missing dtype is ``default`` (the
    default float dtype when None), a missing device the default device."""
    dtype = to_dtype(dtype) if dtype is not None else (default or _DEFAULTS["dtype"])
    return dtype, get_backend(_DEFAULTS["device"] if device is None else device)


def zeros(*shape, dtype=None, device=None, requires_grad=False):
    dtype, b = _factory_args(dtype, device)
    return _make(b.xp.zeros(_size(shape), dtype=dtype), b, requires_grad)


def ones(*shape, dtype=None, device=None, requires_grad=False):
    dtype, b = _factory_args(dtype, device)
    return _make(b.xp.ones(_size(shape), dtype=dtype), b, requires_grad)


def full(shape, fill_value, dtype=None, device=None, requires_grad=False):
    """``shape`` filled with ``fill_value``; the dtype follows the value (bool, int64, or
    the default float dtype) unless given, as torch.full."""
    kind = (np.bool_ if isinstance(fill_value, (bool, np.bool_)) else
            int64 if isinstance(fill_value, (int, np.integer)) else None)
    dtype, b = _factory_args(dtype, device, kind and np.dtype(kind))
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return _make(b.xp.full(shape, fill_value, dtype=dtype), b, requires_grad)


def randn(*shape, generator=None, dtype=None, device=None, requires_grad=False):
    """Standard normal draws of ``shape`` from ``generator`` (default: the default one)."""
    dtype, b = _factory_args(dtype, device)
    return _make(_random.normal(_size(shape), dtype, b, generator=generator), b, requires_grad)


def rand(*shape, generator=None, dtype=None, device=None, requires_grad=False):
    """Uniform draws in [0, 1) of ``shape`` from ``generator``."""
    dtype, b = _factory_args(dtype, device)
    return _make(_random.uniform(_size(shape), dtype, b, generator=generator), b,
                 requires_grad)


def randint(low=0, high=None, size=None, *, generator=None, dtype=None, device=None,
            requires_grad=False):
    """Integers in [low, high) of ``size`` (``randint(high, size)`` too), int64 by default."""
    if size is None:  # randint(high, size)
        low, high, size = 0, low, high
    if high is None or size is None:
        raise TypeError("randint: expected (low, high, size) or (high, size)")
    dtype, b = _factory_args(dtype, device, int64)
    size = (size,) if isinstance(size, int) else tuple(size)
    arr = _random.integers(int(low), int(high), size, b, generator=generator)
    return _make(arr.astype(dtype, copy=False), b, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    floats = any(isinstance(v, float) for v in (start, end, step))
    dtype, b = _factory_args(dtype, device, None if floats else int64)
    return _make(b.xp.arange(start, end, step, dtype=dtype), b, requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    dtype, b = _factory_args(dtype, device)
    return _make(b.xp.linspace(start, end, steps, dtype=dtype), b, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    dtype, b = _factory_args(dtype, device)
    return _make(b.xp.eye(n, m, dtype=dtype), b, requires_grad)


def _like(fn):
    def like(t, dtype=None, device=None, requires_grad=False):
        return fn(*t.shape, dtype=t.dtype if dtype is None else dtype,
                  device=t.device if device is None else device, requires_grad=requires_grad)
    like.__name__ = fn.__name__ + "_like"
    like.__doc__ = f"``{fn.__name__}`` with the shape (and by default dtype, device) of ``t``."
    return like


zeros_like = _like(zeros)
ones_like = _like(ones)
randn_like = _like(randn)
rand_like = _like(rand)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=t.dtype if dtype is None else dtype,
                device=t.device if device is None else device, requires_grad=requires_grad)


def cat(tensors, dim=0):
    """Concatenate along an existing axis ``dim``; all other sizes must match."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    ref = tensors[0]
    d = _one_dim(dim, ref.ndim, "cat")
    for t in tensors[1:]:
        if t.ndim != ref.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, ref.shape))
                                     if i != d):
            raise ValueError(f"cat: shapes {[x.shape for x in tensors]} differ outside dim {d}")
        if t.dtype != ref.dtype:
            raise TypeError(f"cat: dtypes differ: {[str(x.dtype) for x in tensors]}")
    return M.Cat.apply(d, *tensors)


def stack(tensors, dim=0):
    """Join along a new axis ``dim``; all shapes must be equal."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack: expected tensors of equal shape, got {[t.shape for t in tensors]}")
    d = _one_dim(dim, tensors[0].ndim + 1, "stack")
    return cat([t.unsqueeze(d) for t in tensors], d)


def split(t, split_size_or_sections, dim=0):
    """Pieces of ``t`` along ``dim``: equal pieces of ``split_size`` (the last may be
    smaller) or the given list of sizes. Each piece is a differentiable slice."""
    d = _one_dim(dim, t.ndim, "split")
    n = t.shape[d]
    if isinstance(split_size_or_sections, int):
        if split_size_or_sections <= 0:
            raise ValueError(f"split: split_size must be positive, got {split_size_or_sections}")
        sizes = [min(split_size_or_sections, n - s) for s in range(0, n, split_size_or_sections)]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sections {sizes} do not sum to dim {d} size {n} of "
                             f"shape {t.shape}")
    out, start = [], 0
    for s in sizes:
        index = (slice(None),) * d + (slice(start, start + s),)
        out.append(t[index])
        start += s
    return tuple(out)


def where(condition, x, y):
    """Elementwise ``x if condition else y`` with broadcasting; gradient flows to x and y."""
    ref = x if isinstance(x, Tensor) else y if isinstance(y, Tensor) else condition
    if not isinstance(ref, Tensor):
        raise TypeError("where: expected at least one Tensor argument")
    cond = condition if isinstance(condition, Tensor) else Tensor(condition, device=ref.device)
    x = ref._operand(x, "where")
    y = ref._operand(y, "where")
    if cond.dtype != np.bool_:
        cond = Tensor._wrap(cond._array.astype(bool), cond.backend, False)
    return E.Where.apply(cond, x, y)


def maximum(a, b):
    return a.maximum(b)


def minimum(a, b):
    return a.minimum(b)


def matmul(a, b):
    return a.matmul(b)


def mm(a, b):
    """2-D matrix product; unlike matmul it accepts nothing else (as torch.mm)."""
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"mm: expected two 2-D tensors, got shapes {a.shape} and {b.shape}")
    return a.matmul(b)


def bmm(a, b):
    """(B, N, M) @ (B, M, P) -> (B, N, P), no broadcasting (as torch.bmm)."""
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
        raise ValueError(f"bmm: expected (B, N, M) and (B, M, P) with the same B, got shapes "
                         f"{a.shape} and {b.shape}")
    return a.matmul(b)


def from_numpy(array):
    """A cpu Tensor over ``array`` (shared memory, no copy, dtype kept, as torch.from_numpy)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array, dtype=array.dtype, device="cpu")


def empty(*shape, dtype=None, device=None, requires_grad=False):
    """Uninitialised storage of ``shape`` (its values are whatever memory held)."""
    dtype, b = _factory_args(dtype, device)
    return _make(b.xp.empty(_size(shape), dtype=dtype), b, requires_grad)
