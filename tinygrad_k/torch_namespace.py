"""torch's top-level namespace, generated: ``tinygrad_k.tanh(x)``, ``tinygrad_k.sum(x,
dim=1)``, ``tinygrad_k.device("cuda:0")``, ``tinygrad_k.float`` ...

``FUNCTIONS`` is the one table: each torch function whose op we support, mapped to the
Tensor method or function that implements it. ``make_function`` turns an entry into the
top-level function, adding what torch's free functions take beyond the method: an ``out=``
tensor, numpy's ``axis=``/``keepdims=`` spellings, ``alpha=`` for add/sub. ``__init__``
exports ``NAMESPACE``. Also here: dtype names, ``device``, ``accelerator``, ``Size``,
default dtype/device, the random functions of ``torch`` (``multinomial``, ``normal`` ...),
and the names torch has that we do not support on purpose (their errors say so).
"""
from __future__ import annotations

import numbers

import numpy as np

from . import random as _random
from .backend import cuda_available, get_backend, normalize_device
from .ops.einsum import Einsum
from .tensor import (_DEFAULTS, Tensor, bmm, cat, matmul, mm, split, stack, tensor, to_dtype,
                     where)
from .tensor_methods import UnsupportedDtype, rename_numpy_kwargs

# -- the table ----------------------------------------------------------------------------
# "name" = the Tensor method of the same name; "name:method" = another method; functions of
# several tensors (cat, where, ...) are real functions of tensor.py and are listed below.
_METHODS = """
    abs absolute exp log log2 log10 log1p sqrt rsqrt sin cos tanh sigmoid relu neg negative
    reciprocal square sign isnan
    add sub subtract mul multiply div divide true_divide pow maximum minimum
    eq ne lt le gt ge greater less greater_equal less_equal
    sum mean max min amax amin argmax argmin var std logsumexp norm cumsum any all
    topk sort argsort
    flatten reshape squeeze unsqueeze transpose swapaxes swapdims permute t flip tril triu
    unbind chunk gather masked_fill index_select
    clamp clip softmax log_softmax detach clone numel dot
    floor ceil trunc round frac floor_divide remainder fmod
    expm1 exp2 sinh cosh lerp outer ger narrow select roll masked_select diag trace
    isinf isfinite logical_not logical_and logical_or logical_xor nonzero count_nonzero
    bincount unique multinomial bernoulli
"""
FUNCTIONS = {name: name for name in _METHODS.split()}
FUNCTIONS.update({"matmul": matmul, "mm": mm, "bmm": bmm, "cat": cat, "concat": cat,
                  "concatenate": cat, "stack": stack, "split": split, "where": where})
# these accept an alpha multiplying the second operand (torch.add(a, b, alpha=2) = a + 2 b)
_ALPHA = {"add", "sub", "subtract"}


def _as_input(name, value):
    if isinstance(value, Tensor):
        return value
    raise TypeError(f"{name}(): argument 'input' must be a Tensor, not {type(value).__name__}")


def _write_out(name, result, out):
    """torch's ``out=``: the result is copied into ``out`` (same shape), outside the graph."""
    if out is None:
        return result
    if not isinstance(out, Tensor):
        raise TypeError(f"{name}(): out must be a Tensor, got {type(out).__name__}")
    if result.requires_grad:
        raise RuntimeError(f"{name}(): functions with out=... arguments don't support "
                           "automatic differentiation, but one of the arguments requires grad")
    if out.shape != result.shape:
        raise RuntimeError(f"{name}(): out has shape {out.shape} but the result has shape "
                           f"{result.shape}; tinygrad_k does not resize out= tensors")
    out.copy_(result)
    return out


def make_function(name, target):
    """The top-level ``torch.<name>`` for a table entry (a method name or a function)."""
    if isinstance(target, str):
        method = getattr(Tensor, target)

        def fn(input, *args, out=None, **kwargs):
            kwargs = rename_numpy_kwargs(name, kwargs)
            if name in _ALPHA and "alpha" in kwargs:
                alpha = kwargs.pop("alpha")
                args = (args[0] * alpha,) + args[1:] if args else args
                if "other" in kwargs:
                    kwargs["other"] = kwargs["other"] * alpha
            return _write_out(name, method(_as_input(name, input), *args, **kwargs), out)

        fn.__doc__ = f"``torch.{name}(input, ...)``: ``input.{target}(...)``.\n\n" + (
            method.__doc__ or "")
    else:
        def fn(*args, out=None, **kwargs):
            return _write_out(name, target(*args, **rename_numpy_kwargs(name, kwargs)), out)

        fn.__doc__ = target.__doc__
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = "tinygrad_k"
    return fn


# -- dtypes ------------------------------------------------------------------------------
DTYPES = {"float32": np.dtype(np.float32), "float": np.dtype(np.float32),
          "float64": np.dtype(np.float64), "double": np.dtype(np.float64),
          "int64": np.dtype(np.int64), "long": np.dtype(np.int64),
          "int32": np.dtype(np.int32), "int": np.dtype(np.int32),
          "int16": np.dtype(np.int16), "short": np.dtype(np.int16),
          "int8": np.dtype(np.int8), "uint8": np.dtype(np.uint8),
          "bool": np.dtype(np.bool_)}
for _name, _key in (("float16", "float16"), ("half", "float16"), ("bfloat16", "bfloat16"),
                    ("complex64", "complex64"), ("cfloat", "complex64"),
                    ("complex128", "complex128"), ("cdouble", "complex128")):
    DTYPES[_name] = UnsupportedDtype(_key)

dtype = np.dtype  # isinstance(x.dtype, torch.dtype) holds


def get_default_dtype():
    """The dtype of float factories and Python floats (float32 unless changed)."""
    return _DEFAULTS["dtype"]


def set_default_dtype(d):
    """Make ``d`` (float32 or float64) what float factories and Python floats give."""
    d = to_dtype(d)
    if d not in (np.float32, np.float64):
        raise TypeError(f"set_default_dtype: only floating point types are allowed as the "
                        f"default type (float32 or float64), got {d}")
    _DEFAULTS["dtype"] = d


# -- devices -------------------------------------------------------------------------------
class device(str):
    """``torch.device``: ``device("cuda:0")``, ``device("cuda", 0)``, ``device("cpu")``.

    A str subclass, so anything that takes a device name takes it, and it equals its
    name (``device("cpu") == "cpu"``). ``.type`` is "cpu" or "cuda", ``.index`` the
    device number or None.
    """

    def __new__(cls, type, index=None):
        if isinstance(type, device):
            return type
        text = str(type)
        kind, _, num = text.partition(":")
        if num:
            if index is not None:
                raise RuntimeError(f"device: type {text!r} already has an index; got index "
                                   f"{index} too")
            if not num.isdigit():
                raise RuntimeError(f"device: invalid device string {text!r}")
            index = int(num)
        if kind not in ("cpu", "cuda"):
            raise RuntimeError(f"device: {kind!r} is not supported: tinygrad_k has the devices "
                               "'cpu' and 'cuda' (mps, xpu, meta ... are not available)")
        if index is not None and (int(index) < 0 or (kind == "cuda" and int(index) > 0)):
            raise RuntimeError(f"device: {kind}:{index} does not exist; tinygrad_k uses one "
                               f"device of each type (index 0)")
        self = super().__new__(cls, kind if index is None else f"{kind}:{int(index)}")
        self.type, self.index = kind, None if index is None else int(index)
        return self

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except RuntimeError:
                return False
            return (self.type, self.index) == (other.type, other.index)
        return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = str.__hash__

    def __repr__(self):
        extra = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{extra})"


def set_default_device(d):
    """Where factories (zeros, randn, tensor ...) put tensors when no device is given."""
    _DEFAULTS["device"] = normalize_device(device(d) if d is not None else "cpu")


def get_default_device():
    return device(_DEFAULTS["device"])


class _Accelerator:
    """``torch.accelerator``: the one accelerator tinygrad_k has is ``cuda``."""

    @staticmethod
    def is_available():
        return cuda_available()

    @staticmethod
    def current_accelerator(check_available=False):
        return device("cuda") if cuda_available() else None

    @staticmethod
    def device_count():
        return 1 if cuda_available() else 0

    @staticmethod
    def current_device_index():
        return 0 if cuda_available() else -1

    @staticmethod
    def synchronize(device=None):
        from . import cuda

        cuda.synchronize()


accelerator = _Accelerator()


class Size(tuple):
    """``torch.Size``: a tuple of ints."""

    def __new__(cls, sizes=()):
        return super().__new__(cls, (int(s) for s in sizes))

    def numel(self):
        return int(np.prod(self, dtype=np.int64))

    def __repr__(self):
        return f"Size({list(self)})"


# -- small functions ----------------------------------------------------------------------
def is_tensor(obj):
    return isinstance(obj, Tensor)


def is_floating_point(input):
    return _as_input("is_floating_point", input).dtype.kind == "f"


def numel(input):
    return _as_input("numel", input).numel()


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|input - other| <= atol + rtol * |other| everywhere (broadcasting), as a bool."""
    return bool(np.allclose(_as_input("allclose", input).numpy(), _host(other), rtol, atol,
                            equal_nan))


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    return tensor(np.isclose(_as_input("isclose", input).numpy(), _host(other), rtol, atol,
                             equal_nan), device=input.device)


def equal(input, other):
    """True when both have the same shape and the same elements."""
    a, b = _as_input("equal", input), _as_input("equal", other)
    return a.shape == b.shape and bool(np.array_equal(a.numpy(), b.numpy()))


def _host(v):
    return v.numpy() if isinstance(v, Tensor) else np.asarray(v)


def einsum(equation, *operands):
    """``torch.einsum``: e.g. ``einsum("bij,bjk->bik", a, b)``; operands may also be one
    list. Differentiable (see ``ops.einsum.Einsum``). Repeated subscripts within one
    operand (diagonals) are not supported."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not operands or not all(isinstance(o, Tensor) for o in operands):
        raise TypeError("einsum(): expected the equation followed by Tensors, got "
                        f"{[type(o).__name__ for o in operands]}")
    if len({o.dtype for o in operands}) > 1:
        raise TypeError(f"einsum(): operands have different dtypes "
                        f"{[str(o.dtype) for o in operands]}; cast them with .to(dtype)")
    return Einsum.apply(equation, *operands)


def as_tensor(data, dtype=None, device=None):
    """``data`` as a Tensor, sharing memory when it already is one (or a cpu array) of
    the requested dtype and device."""
    if isinstance(data, Tensor):
        return data.to(device=device, dtype=dtype)
    if isinstance(data, np.ndarray) and device in (None, "cpu") and (
            dtype is None or to_dtype(dtype) == data.dtype):
        return Tensor(data, dtype=data.dtype)
    return tensor(data, dtype=dtype, device=device)


def _compile(model=None, **kwargs):
    """``torch.compile``: returns the model unchanged. tinygrad_k has no graph compiler on
    purpose (its kernels are hand-written); the model runs eagerly as before."""
    if model is None:
        return lambda m: m
    return model


def set_num_threads(n):
    """Threads of the CPU kernels (Numba's parallel loops), as torch.set_num_threads."""
    import numba  # heavy: loaded when asked, as the CPU kernels load it

    if not 1 <= int(n) <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"set_num_threads: expected 1 <= n <= "
                         f"{numba.config.NUMBA_NUM_THREADS} (the threads Numba started), "
                         f"got {n}")
    numba.set_num_threads(int(n))


def get_num_threads():
    import numba

    return int(numba.get_num_threads())


# -- random functions that exist only at top level --------------------------------------
def normal(mean, std=1.0, size=None, *, generator=None, dtype=None, device=None,
           requires_grad=False, out=None):
    """Normal draws, as ``torch.normal``: ``normal(mean_tensor, std_tensor)`` (broadcast
    shapes), one of them a float, or ``normal(mean, std, size)`` with two floats."""
    ref = mean if isinstance(mean, Tensor) else std if isinstance(std, Tensor) else None
    if ref is None:
        if size is None:
            raise TypeError("normal(): with float mean and std, give size=")
        shape = (size,) if isinstance(size, numbers.Integral) else tuple(size)
        dt = to_dtype(dtype) if dtype is not None else _DEFAULTS["dtype"]
        b = get_backend(_DEFAULTS["device"] if device is None else device)
    else:
        m = mean.numpy() if isinstance(mean, Tensor) else mean
        s = std.numpy() if isinstance(std, Tensor) else std
        shape = np.broadcast_shapes(np.shape(m), np.shape(s))
        dt, b = ref.dtype, ref.backend
    if isinstance(std, Tensor) and (std.numpy() < 0).any() or (
            not isinstance(std, Tensor) and std < 0):
        raise RuntimeError("normal: expected all elements of std >= 0.0")
    z = _random.normal(tuple(shape), dt, b, generator=generator)
    xp = b.xp
    m = mean._array if isinstance(mean, Tensor) else mean
    s = std._array if isinstance(std, Tensor) else std
    out_t = Tensor._wrap(xp.asarray(z * s + m, dtype=dt), b, False)
    if requires_grad:
        out_t.requires_grad_(True)
    return _write_out("normal", out_t, out)


def randperm(n, *, generator=None, dtype=None, device=None, requires_grad=False):
    """A random permutation of 0 .. n-1 (int64 unless ``dtype``), as torch.randperm."""
    if int(n) < 0:
        raise RuntimeError(f"randperm: n must be non-negative, got {n}")
    b = get_backend(_DEFAULTS["device"] if device is None else device)
    arr = _random.permutation(int(n), to_dtype(dtype) if dtype is not None else
                              np.dtype(np.int64), b, generator)
    t = Tensor._wrap(arr, b, False)
    return t.requires_grad_(True) if requires_grad else t


# -- what torch has and we leave out on purpose -----------------------------------------
def _unsupported(name, why):
    def fn(*args, **kwargs):
        raise NotImplementedError(f"{name} is not supported by tinygrad_k on purpose: {why}")
    fn.__name__ = name
    fn.__doc__ = f"Not supported: {why}"
    return fn


UNSUPPORTED = {
    "sparse_coo_tensor": "sparse tensors are not implemented; use a dense tensor",
    "sparse_csr_tensor": "sparse tensors are not implemented; use a dense tensor",
    "autocast": "there is no float16/bfloat16, so no mixed precision; train in float32",
    "complex": "complex tensors are not implemented; keep real and imaginary parts as two "
               "float tensors",
    "vmap": "there is no function transform; loop over the batch or write batched ops",
    "jit": "there is no TorchScript; run the model eagerly (torch.compile is accepted and "
           "returns the model unchanged)",
}


# -- the namespace ------------------------------------------------------------------------
def build_namespace():
    """Every name this module adds to ``tinygrad_k``'s top level."""
    ns = {name: make_function(name, target) for name, target in FUNCTIONS.items()}
    ns.update(DTYPES)
    ns.update({name: _unsupported(name, why) for name, why in UNSUPPORTED.items()})
    ns.update(
        dtype=dtype, device=device, Size=Size, accelerator=accelerator,
        get_default_dtype=get_default_dtype, set_default_dtype=set_default_dtype,
        set_default_device=set_default_device, get_default_device=get_default_device,
        is_tensor=is_tensor, is_floating_point=is_floating_point, numel=numel,
        allclose=allclose, isclose=isclose, equal=equal, einsum=einsum, as_tensor=as_tensor,
        compile=_compile, normal=normal, set_num_threads=set_num_threads,
        get_num_threads=get_num_threads,
        randperm=randperm, Generator=_random.Generator,
        default_generator=_random.default_generator, manual_seed=_random.manual_seed,
        seed=_random.seed, initial_seed=_random.initial_seed,
        get_rng_state=_random.get_rng_state, set_rng_state=_random.set_rng_state)
    return ns


NAMESPACE = build_namespace()
__all__ = sorted(NAMESPACE)
