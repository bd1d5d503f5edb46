"""Reverse-mode automatic differentiation, written out by hand.

Every differentiable op is a :class:`Function` subclass with ``forward(ctx, ...)`` and
``backward(ctx, grad)`` side by side. ``Function.apply`` unwraps Tensor arguments to raw
arrays, runs ``forward`` and, when gradients are wanted, records a :class:`Context` node
(the tensor's ``grad_fn``) on the output. A node points at the nodes of its inputs
(``next_functions``: the input's ``grad_fn``, an :class:`AccumulateGrad` for a leaf that
requires grad, None otherwise), captured when the op ran, so an in-place op that later
gives a tensor a new ``grad_fn`` does not rewire earlier consumers. ``Tensor.backward``
walks the nodes in reverse topological order (:func:`run_backward`), calling each
``backward`` once with the summed gradient of its output, and accumulates into the
``.grad`` of leaf tensors as PyTorch does.

Version counters: views share their base's counter, every in-place op bumps it, and a node
records the version of each input or output array it saves; backward refuses a node whose
saved tensor changed since, with PyTorch's error.

Functions defined outside ``tinygrad_k`` follow ``torch.autograd.Function``: ``forward``
and ``backward`` receive and return Tensors, with ``ctx.save_for_backward`` /
``ctx.saved_tensors`` / ``ctx.needs_input_grad`` / ``ctx.mark_dirty``.

Broadcasting is undone in one place, :func:`unbroadcast`: a ``backward`` may return a
gradient in the broadcast (output) shape; the engine sums it back to the input's shape.
"""
from __future__ import annotations

import contextlib
import re
import sys
import threading
import weakref

import numpy as np

from .backward_trace import active_trace

__all__ = ["Function", "Context", "FunctionCtx", "AccumulateGrad", "VersionCounter", "grad",
           "no_grad", "enable_grad", "set_grad_enabled", "inference_mode", "is_grad_enabled",
           "unbroadcast", "run_backward", "register_tensor_type", "tensor_type",
           "RemovableHandle"]

_state = threading.local()

# The Tensor class, handed over once by tensor.py when it is defined: the graph machinery
# below wraps arrays into Tensors but never imports the module that defines them.
_Tensor = None


def register_tensor_type(cls):
    """Called once by ``tinygrad_k.tensor``: the class Function.apply wraps outputs in."""
    global _Tensor
    _Tensor = cls
    return cls


def tensor_type():
    """The Tensor class (registered by ``tinygrad_k.tensor``), for the modules below it
    (random's Generator states) that hand back Tensors without importing tensor.py."""
    return _Tensor


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


def restore_grad_mode(flag: bool):
    """Set the grad mode with one store, no context: for ``finally`` blocks that must
    undo a ``no_grad`` an asynchronous exception cut short."""
    _state.grad_enabled = flag


class _GradMode(contextlib.ContextDecorator):
    """Sets the grad mode for a block and puts the previous one back.

    Ordered for exceptions raised asynchronously (a signal handler's KeyboardInterrupt
    lands where Python checks for signals: entering a Python function, after a C call):
    ``__enter__`` changes the mode in its last statement, ``__exit__`` restores it in its
    first, a plain store. (``_prev.append(set(...))`` let a Ctrl-C between the two calls
    leave a trainer's no_grad on for good.) One window no Python code can close remains:
    an interrupt on entering ``__exit__``; code that must survive it restores the mode in
    a ``finally`` (``restore_grad_mode``), as the trainer does."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._prev = []

    def __enter__(self):
        self._prev.append(is_grad_enabled())
        _state.grad_enabled = self.enabled
        return self

    def __exit__(self, *exc):
        _state.grad_enabled = self._prev[-1]
        self._prev.pop()
        return False


def no_grad():
    """Context manager / decorator: ops inside record no graph (like ``torch.no_grad``)."""
    return _GradMode(False)


def enable_grad():
    """Context manager / decorator that turns graph recording back on."""
    return _GradMode(True)


class set_grad_enabled(_GradMode):
    """Sets graph recording to ``mode`` as PyTorch's does: at once when called (so a
    plain ``set_grad_enabled(False)`` statement switches recording off), restoring the
    previous mode at the end of a ``with`` block; used as a decorator it changes nothing
    until the decorated function runs."""

    def __init__(self, mode):
        super().__init__(bool(mode))
        self._before = is_grad_enabled()
        self._fresh = True  # the mode is already set for the with right after this
        _state.grad_enabled = self.enabled

    def __enter__(self):
        if self._fresh:
            self._fresh = False
            self._prev.append(self._before)
            return self
        return super().__enter__()

    def __call__(self, func):
        _state.grad_enabled = self._before  # a decorator: undo the change made above
        self._fresh = False
        return super().__call__(func)


def inference_mode(mode=True):
    """As ``no_grad`` (torch's name; in-place ops still bump version counters here)."""
    return _GradMode(not mode)


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the adjoint of NumPy broadcasting.

    Broadcasting prepends size-1 axes and stretches size-1 axes; the gradient of a
    stretched axis is the sum over it:  dL/dx[i] = sum_{j broadcast from i} dL/dy[j].
    """
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        raise RuntimeError(f"unbroadcast: gradient of shape {grad.shape} cannot reduce to {shape}")
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, (g, s) in enumerate(zip(grad.shape, shape)) if s == 1 and g != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    if grad.shape != shape:
        raise RuntimeError(f"unbroadcast: gradient of shape {grad.shape} does not match {shape}")
    return grad


class VersionCounter:
    """How many in-place changes a storage has seen; shared by a tensor, its views and its
    ``detach()`` (not by ``.data``), as PyTorch's version counter."""

    __slots__ = ("version",)

    def __init__(self):
        self.version = 0


def version_counter(t):
    """The counter of tensor ``t``, created on first need (most tensors never need one)."""
    vc = t._vc
    if vc is None:
        vc = t._vc = VersionCounter()
    return vc


class RemovableHandle:
    """What ``register_hook`` returns: ``handle.remove()`` unregisters the hook."""

    __slots__ = ("_hooks", "_fn")

    def __init__(self, hooks, fn):
        self._hooks, self._fn = hooks, fn

    def remove(self):
        if self._fn in self._hooks:
            self._hooks.remove(self._fn)


_TORCH_TYPES = {"float32": "Float", "float64": "Double", "int64": "Long", "int32": "Int",
                "bool": "Bool", "uint8": "Byte", "float16": "Half"}


def torch_type_name(dtype, device="cpu"):
    """PyTorch's legacy type name of a dtype: float32 -> 'torch.FloatTensor'."""
    prefix = "torch." if device == "cpu" else "torch.cuda."
    return f"{prefix}{_TORCH_TYPES.get(str(dtype), str(dtype))}Tensor"


class Context:
    """One node of the graph (a tensor's ``grad_fn``): the Function that ran, its Tensor
    inputs (``parents``), the nodes of those inputs (``next``: a Context, a leaf Tensor
    that requires grad, or None) and the values saved for backward.

    As in PyTorch: ``name()``, ``next_functions`` (pairs ``(node, 0)``, an
    ``AccumulateGrad`` for a leaf), ``register_hook(fn(grad_inputs, grad_outputs))`` and
    ``register_prehook(fn(grad_outputs))``.
    """

    __slots__ = ("fn", "parents", "next", "_nig", "backend", "saved_tensors", "freed",
                 "_versions", "_extras", "__dict__", "__weakref__")

    def __init__(self, fn, parents, backend):
        self.fn = fn
        self.parents = parents
        self.backend = backend
        self.saved_tensors = ()
        self.freed = False
        self.next = self._nig = self._versions = self._extras = None

    @property
    def needs_input_grad(self):
        """One bool per Tensor input: does it require grad (computed on first use)."""
        nig = self._nig
        if nig is None:
            nig = self._nig = tuple(p.requires_grad for p in self.parents)
        return nig

    @needs_input_grad.setter
    def needs_input_grad(self, value):
        self._nig = value

    def _hooks(self):
        """The node's hooks and retained tensor, made on first need (most nodes have none)."""
        ex = self._extras
        if ex is None:
            ex = self._extras = _NodeExtras()
        return ex

    @property
    def xp(self):
        return self.backend.xp

    @property
    def kernels(self):
        return self.backend.kernels

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays

    def free(self):
        """Drop saved values (what ``retain_graph=False`` does after backward)."""
        self.saved_tensors = ()
        self._versions = None
        self.__dict__.clear()
        self.freed = True

    # -- PyTorch's Node interface -------------------------------------------------
    def name(self):
        return self.fn._node_name

    @property
    def next_functions(self):
        return tuple((_node_of(e), 0) for e in (self.next or ()))

    @property
    def metadata(self):
        return self.__dict__

    def register_hook(self, fn):
        """``fn(grad_inputs, grad_outputs)`` runs after this node's backward (tuples of
        Tensors or None); a tuple it returns replaces ``grad_inputs``."""
        hooks = self._hooks().post
        hooks.append(fn)
        return RemovableHandle(hooks, fn)

    def register_prehook(self, fn):
        """``fn(grad_outputs)`` runs before this node's backward; a tuple it returns
        replaces ``grad_outputs``."""
        hooks = self._hooks().pre
        hooks.append(fn)
        return RemovableHandle(hooks, fn)

    def __repr__(self):
        return f"<{self.name()} object at {hex(id(self))}>"

    def _record_versions(self, out_array, out_vc):
        """Remember the version of every saved array that is an input's or the output's
        own array, so backward can refuse one changed in place since."""
        records = []
        for a in self.saved_tensors:
            if a is None:
                continue
            if a is out_array:
                records.append((out_vc, out_vc.version, None, a))
                continue
            for p in self.parents:
                if p._array is a:
                    vc = version_counter(p)
                    records.append((vc, vc.version, p, a))
                    break
        self._versions = records or None

    def _check_versions(self):
        for vc, expected, t, a in self._versions:
            if vc.version != expected:
                raise_modified(a, t, self, vc.version, expected)


class _NodeExtras:
    """Hooks of a node: ``tensor`` (Tensor.register_hook on its output), ``pre``, ``post``
    (the node's own), and ``retained``, a weak reference to the output that
    ``retain_grad()`` asked to keep its gradient."""

    __slots__ = ("tensor", "pre", "post", "retained")

    def __init__(self):
        self.tensor, self.pre, self.post, self.retained = [], [], [], None


def raise_modified(array, tensor, node, version, expected):
    """PyTorch's error for a saved tensor changed in place after it was saved."""
    device = tensor.device if tensor is not None else node.backend.name
    what = f"[{torch_type_name(array.dtype, device)} {list(array.shape)}]"
    owner = node if tensor is None else tensor._ctx
    if owner is not None:
        what += f", which is output 0 of {re.sub(r'Backward[0-9]*$', '', owner.name())},"
    raise RuntimeError(
        "one of the variables needed for gradient computation has been modified by an "
        f"inplace operation: {what} is at version {version}; expected version {expected} "
        "instead. Hint: the tensor was changed in place after an operation saved it for "
        "backward; clone it before changing it (x = x.clone()) or use the out-of-place op "
        "(there is no anomaly detection here: we differ from torch on purpose).")


class AccumulateGrad:
    """The node of a leaf that requires grad: backward adds its gradient into
    ``variable.grad`` (PyTorch's ``torch::autograd::AccumulateGrad``)."""

    __slots__ = ("variable", "__weakref__")

    def __init__(self, variable):
        self.variable = variable

    def name(self):
        return "torch::autograd::AccumulateGrad"

    next_functions = ()

    def __repr__(self):
        return f"<AccumulateGrad object at {hex(id(self))}>"


def _node_of(entry):
    """The Node for an entry of ``Context.next``: the Context, a leaf's (cached)
    AccumulateGrad, or None."""
    if entry is None or isinstance(entry, Context):
        return entry
    acc = entry._acc
    if acc is None:
        acc = entry._acc = AccumulateGrad(entry)
    return acc


def _graph_entry(t):
    """What a consumer of ``t`` points at: t's node, t itself (a leaf needing grad), None."""
    ctx = t._ctx
    if ctx is not None:
        return ctx
    return t if t.requires_grad else None


class Function:
    """Base class of every differentiable op.

    Subclasses define::

        @staticmethod
        def forward(ctx, *args, **kwargs) -> array      # args: raw arrays for Tensor inputs
        @staticmethod
        def backward(ctx, grad) -> array | tuple        # one gradient (or None) per Tensor input

    and are called through ``apply``. Non-Tensor arguments (ints, tuples, ...) pass through
    unchanged and get no gradient. ``node_name`` is the ``grad_fn.name()`` PyTorch shows
    for the op (default: class name + "Backward0"); ``is_view = True`` marks ops whose
    output may be a view of the first input (it then shares its storage's version counter).

    Subclasses defined outside ``tinygrad_k`` are PyTorch custom Functions: ``forward``
    and ``backward`` receive Tensors, and ``backward`` returns one gradient per ``forward``
    argument (None for non-Tensors).
    """

    node_name = None
    is_view = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_tensor_io" not in cls.__dict__:
            cls._tensor_io = not cls.__module__.startswith("tinygrad_k.")
        # torch names built-in nodes "MulBackward0" and custom ones "MyFnBackward"
        cls._node_name = cls.__dict__.get("node_name") or (
            cls.__name__ + ("Backward" if cls._tensor_io else "Backward0"))

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        if cls._tensor_io:
            return _apply_custom(cls, args, kwargs)
        Tensor = _Tensor
        tensors, raw, backend, requires_grad = [], [], None, False
        for a in args:  # one pass: this runs for every op of every step
            if isinstance(a, Tensor):
                if backend is None:
                    backend = a._backend
                elif a._backend is not backend:
                    _raise_devices(cls, args)
                requires_grad = requires_grad or a.requires_grad
                tensors.append(a)
                raw.append(a._array)
            else:
                raw.append(a)
        if backend is None:
            raise TypeError(f"{cls.__name__}: expected at least one Tensor argument")
        requires_grad = requires_grad and is_grad_enabled()
        ctx = Context(cls, tuple(tensors), backend)
        out = cls.forward(ctx, *raw, **kwargs)
        if isinstance(out, np.generic):  # NumPy reductions return scalars, not 0-d arrays
            out = np.asarray(out)
        result = Tensor._wrap(out, backend, requires_grad)
        if cls.is_view:
            _share_if_view(result, tensors[0])
        if requires_grad:
            ctx.next = tuple(map(_graph_entry, tensors))
            result._ctx = ctx
            if ctx.saved_tensors:
                ctx._record_versions(out, version_counter(result))
        return result


def _raise_devices(cls, args):
    devices = ", ".join(f"{tuple(x.shape)} on {x.device}" for x in args
                        if isinstance(x, _Tensor))
    raise RuntimeError(f"{cls.__name__}: expected all tensors on the same device, got "
                       f"{devices}; move them with .to(device) first")


def _share_if_view(result, src):
    """Give ``result`` its input's storage identity when its array is a view of it."""
    out, a = result._array, src._array
    root = a.base if a.base is not None else a
    if out is a or out.base is root:
        result._vc = version_counter(src)
        result._base = src._base if src._base is not None else src


# -- PyTorch-style custom Functions ------------------------------------------------------
class FunctionCtx(Context):
    """The ``ctx`` of a custom (PyTorch-style) Function: tensors in, tensors out."""

    __slots__ = ("_saved", "_dirty", "_non_diff", "materialize_grads", "_nargs", "_tensor_pos")

    def save_for_backward(self, *tensors):
        Tensor = _Tensor
        for t in tensors:
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"save_for_backward can only save tensors or None, got "
                                f"{type(t).__name__}")
        self._saved = tuple(None if t is None else (t, version_counter(t),
                                                    version_counter(t).version)
                            for t in tensors)

    @property
    def saved_tensors(self):
        if self.freed:
            raise RuntimeError(
                "Trying to backward through the graph a second time (or directly access "
                "saved tensors after they have already been freed). Saved intermediate values "
                "of the graph are freed when you call .backward() or autograd.grad(). Specify "
                "retain_graph=True if you need to backward through the graph a second time or "
                "if you need to access saved tensors after calling backward.")
        out = []
        for rec in getattr(self, "_saved", ()):
            if rec is None:
                out.append(None)
                continue
            t, vc, expected = rec
            if vc.version != expected:
                raise_modified(t._array, t if t._ctx is not self else None, self, vc.version,
                               expected)
            out.append(t)
        return tuple(out)

    @saved_tensors.setter
    def saved_tensors(self, value):  # Context.__init__ / free() reset it
        if not value:
            self._saved = ()

    def mark_dirty(self, *tensors):
        self._dirty = tensors

    def mark_non_differentiable(self, *tensors):
        self._non_diff = tensors

    def set_materialize_grads(self, value):
        self.materialize_grads = bool(value)


def _apply_custom(cls, args, kwargs):
    Tensor = _Tensor
    pos = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
    tensors = tuple(args[i] for i in pos)
    if not tensors:
        raise TypeError(f"{cls.__name__}.apply: expected at least one Tensor argument")
    backend = tensors[0]._backend
    ctx = FunctionCtx(cls, tensors, backend)
    ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
    ctx._dirty, ctx._non_diff, ctx.materialize_grads = (), (), True
    ctx._nargs, ctx._tensor_pos = len(args), pos
    requires_grad = is_grad_enabled() and any(t.requires_grad for t in tensors)
    with no_grad():
        out = cls.forward(ctx, *args, **kwargs)
    if isinstance(out, (tuple, list)):
        raise NotImplementedError(
            f"{cls.__name__}.forward returned {len(out)} outputs: custom Functions with "
            "several outputs are not supported (we differ from torch on purpose: every node "
            "has one output); return one Tensor, or split into one Function per output")
    if not isinstance(out, Tensor):
        raise TypeError(f"{cls.__name__}.forward must return a Tensor, got "
                        f"{type(out).__name__}")
    dirty = any(out is d for d in ctx._dirty)
    if dirty:
        result = out
        if requires_grad and result._ctx is None and result.requires_grad:
            raise RuntimeError("a leaf Variable that requires grad is being used in an "
                               "in-place operation.")
    elif any(out is t for t in tensors) or out._ctx is not None:
        result = _Tensor._wrap(out._array, out._backend, False)
        result._vc = version_counter(out)
    else:
        result = out
    if requires_grad and not any(out is t for t in ctx._non_diff):
        ctx.next = tuple(map(_graph_entry, tensors))
        result._ctx = ctx
        result.requires_grad = True
    return result


def _custom_backward(ctx, g):
    """Call a custom Function's backward with Tensors; one array (or None) per input."""
    Tensor = _Tensor
    grads = ctx.fn.backward(ctx, Tensor._wrap(g, ctx.backend, False))
    if not isinstance(grads, tuple):
        grads = (grads,)
    if len(grads) < ctx._nargs or any(x is not None for x in grads[ctx._nargs:]):
        raise RuntimeError(f"function {ctx.fn._node_name} returned an incorrect number of "
                           f"gradients (expected {ctx._nargs}, got {len(grads)})")
    out = []
    for i in ctx._tensor_pos:
        x = grads[i]
        if x is not None and isinstance(x, Tensor):
            x = x._array
        elif x is not None:
            x = ctx.backend.asarray(x)
        out.append(x)
    return tuple(out)


# -- the backward engine ---------------------------------------------------------------
def _topological_order(starts):
    """Graph entries reachable from ``starts`` (Contexts and leaf Tensors), each after all
    its consumers. Iterative depth-first search with an explicit stack, so a 10,000-op
    chain does not hit Python's recursion limit. (Used to find the part of the graph that
    ``autograd.grad``'s inputs need; backward itself runs in _consumer_counts' order.)"""
    order, visited = [], set()
    stack = [(s, False) for s in reversed(starts)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if isinstance(node, Context) and node.next:
            for e in node.next:
                if e is not None and id(e) not in visited:
                    stack.append((e, False))
    order.reverse()  # consumers before producers
    return order


def _consumer_counts(starts):
    """{id(entry): number of edges into it} for every graph entry reachable from
    ``starts`` through ``Context.next``; an entry is ready to run once that many of its
    consumers have run (Kahn's algorithm, the schedule of PyTorch's engine). Iterative, so
    a 10,000-op chain does not hit Python's recursion limit."""
    counts = {}
    stack = [s for s in starts if isinstance(s, Context)]
    while stack:
        for e in stack.pop().next or ():
            if e is None:
                continue
            k = id(e)
            if k in counts:
                counts[k] += 1
            else:
                counts[k] = 1
                if isinstance(e, Context):
                    stack.append(e)
    return counts


def _wrap_grads(arrays, backend):
    return tuple(None if a is None else _Tensor._wrap(a, backend, False) for a in arrays)


def _unwrap(t, like):
    if t is None:
        return None
    return t._array if isinstance(t, _Tensor) else like


def _sole_owner_refcount():
    a = np.empty(1)
    return sys.getrefcount(a)


# sys.getrefcount of an array held by one local variable only (2 on CPython 3.11: the
# variable and the call's argument), measured the way run_backward asks, so a Python that
# counts differently only turns the shortcut below off
_SOLE_OWNER = _sole_owner_refcount()


def _accumulate(t, g, owned=False):
    """t.grad += g. On first use ``g`` itself becomes the gradient when ``owned`` (no one
    else holds it, and it owns its memory: PyTorch's AccumulateGrad steals such a
    gradient too), a copy otherwise: no aliasing between .grads or with user arrays."""
    if t.grad is None:
        t.grad = _Tensor._wrap(g if owned else g.copy(), t._backend, False)
    else:
        t.grad = _Tensor._wrap(t.grad._array + g, t._backend, False)


def _run_tensor_hooks(hooks, g, backend):
    for h in list(hooks):
        r = h(_Tensor._wrap(g, backend, False))
        if r is not None:
            g = r._array if isinstance(r, _Tensor) else backend.asarray(r)
    return g


def run_backward(roots, grads, retain_graph=False, trace=None, inputs=None,
                 accumulate=True):
    """Propagate ``grads`` (arrays, one per root Tensor) back through the graph.

    Each node runs once all its consumers have (Kahn's order over _consumer_counts; the
    most recently readied node first, so a leaf is accumulated right after its last
    consumer and post-accumulate-grad hooks, DistributedDataParallel's bucket reductions,
    start while the rest of backward runs). g_out is the sum of the gradients of all its
    consumers; ``fn.backward(ctx, g_out)`` gives one gradient per input; leaves accumulate
    into ``.grad`` (``accumulate=False``: nothing is accumulated). As in PyTorch, the
    whole walk, hooks included, records no graph.

    ``inputs``: None, or Tensors whose gradient is wanted; only the part of the graph that
    leads to them runs, and the summed gradient of each is returned (a list, None for an
    input the graph does not reach). ``trace``: None, or a list to which one dict per
    executed node is appended (op name, input/output shapes, gradient norms); when None,
    the list of an active ``backward_trace.trace()`` block (if any) is used.
    """
    if not isinstance(roots, (list, tuple)):
        roots, grads = [roots], [grads]
    if trace is None:
        trace = active_trace()
    starts, buf = [], {}
    for r, g in zip(roots, grads):
        e = _graph_entry(r)
        if e is None:
            continue
        k = id(e)
        if k in buf:
            buf[k] = buf[k] + g
        else:
            starts.append(e)
            buf[k] = g
    counts = _consumer_counts(starts)
    wanted = needed = None
    if inputs is not None:
        wanted = {id(_graph_entry(t)): i for i, t in enumerate(inputs)
                  if _graph_entry(t) is not None}
        needed = _needed(_topological_order(starts), wanted)
    captured = [None] * (len(inputs) if inputs is not None else 0)
    ready = [e for e in reversed(starts) if id(e) not in counts]
    grad_mode = is_grad_enabled()
    _state.grad_enabled = False
    try:
        while ready:
            node = ready.pop()
            g = buf.pop(id(node), None)
            if not isinstance(node, Context):  # a leaf that required grad when used
                # no gradient reached it, it is not on the way to an autograd.grad input,
                # or it stopped requiring grad since (torch's AccumulateGrad skips it)
                if g is None or not node.requires_grad or (needed is not None
                                                           and id(node) not in needed):
                    continue
                if node._hooks:
                    g = _run_tensor_hooks(node._hooks, g, node._backend)
                if wanted is not None and id(node) in wanted:
                    captured[wanted[id(node)]] = g
                elif accumulate:
                    # owned: the engine's reference is the only one (a gradient a
                    # backward made for this leaf alone), so it can become .grad without a
                    # copy (asked before the call: an argument being passed is one more
                    # reference)
                    owned = g.base is None and sys.getrefcount(g) == _SOLE_OWNER
                    _accumulate(node, g, owned)
                    # torch's post-accumulate-grad hooks: the leaf's .grad is final for
                    # this backward (DistributedDataParallel launches its bucket
                    # reductions from here)
                    for hook in tuple(getattr(node, "_post_accumulate_grad_hooks", None)
                                      or ()):
                        hook(node)
                continue
            in_grads = None
            if g is not None and (needed is None or id(node) in needed):
                in_grads = _run_node(node, g, wanted, needed, captured, retain_graph,
                                     accumulate, trace)
            for i, entry in enumerate(node.next or ()):
                if entry is None:
                    continue
                k = id(entry)
                pg = in_grads[i] if in_grads is not None else None
                if pg is not None:
                    prev = buf.get(k)
                    buf[k] = pg if prev is None else prev + pg
                left = counts[k] - 1
                counts[k] = left
                if not left:
                    ready.append(entry)
            # buf holds the only engine reference to each gradient (see owned above)
            in_grads = pg = prev = None
    finally:
        restore_grad_mode(grad_mode)
    return captured


def _run_node(ctx, g, wanted, needed, captured, retain_graph, accumulate, trace):
    """One node's backward: its hooks, its Function's backward for the summed output
    gradient ``g``, the gradients cast to each input's shape (unbroadcast) and dtype; None
    where nothing flows on (or the node only leads to an ``autograd.grad`` input)."""
    ex = ctx._extras
    if ex is not None:
        if ex.tensor:
            g = _run_tensor_hooks(ex.tensor, g, ctx.backend)
        for h in list(ex.pre):
            r = h(_wrap_grads((g,), ctx.backend))
            if r is not None:
                g = _unwrap(r[0], g)
        if ex.retained is not None and accumulate:
            t = ex.retained()
            if t is not None:
                _accumulate(t, g)
    if wanted is not None and id(ctx) in wanted:
        captured[wanted[id(ctx)]] = g
        if not any(e is not None and id(e) in needed for e in ctx.next):
            return None  # nothing wanted lies below: torch does not run this node either
    if ctx.freed:
        raise RuntimeError(
            f"{ctx.fn.__name__}.backward: trying to backward through the graph a second time "
            "(its saved values were freed); call .backward(retain_graph=True) the first time")
    if ctx._versions is not None:
        ctx._check_versions()
    if ctx.fn._tensor_io:
        in_grads = _custom_backward(ctx, g)
    else:
        in_grads = ctx.fn.backward(ctx, g)
    if not isinstance(in_grads, tuple):
        in_grads = (in_grads,)
    parents = ctx.parents
    if len(in_grads) != len(parents):
        raise RuntimeError(f"{ctx.fn.__name__}.backward returned {len(in_grads)} gradients, "
                           f"expected {len(parents)}")
    if ex is not None and ex.post:
        for h in list(ex.post):
            r = h(_wrap_grads(in_grads, ctx.backend), _wrap_grads((g,), ctx.backend))
            if r is not None:
                in_grads = tuple(_unwrap(x, None) for x in r)
    if trace is not None:
        xp = ctx.backend.xp
        trace.append({
            "op": ctx.fn.__name__,
            "input_shapes": [tuple(p.shape) for p in parents],
            "output_shape": tuple(g.shape),
            "grad_output_norm": float(xp.linalg.norm(g.ravel())) if g.size else 0.0,
            "grad_input_norms": [None if ig is None else
                                 (float(xp.linalg.norm(ig.ravel())) if ig.size else 0.0)
                                 for ig in in_grads],
        })
    if not retain_graph:
        ctx.free()
    out = []
    for parent, entry, pg in zip(parents, ctx.next, in_grads):
        if pg is not None and entry is not None:
            if isinstance(pg, np.generic):  # arithmetic on 0-d arrays yields NumPy scalars
                pg = np.asarray(pg)
            a = parent._array
            if pg.shape != a.shape:
                pg = unbroadcast(pg, a.shape)
            if pg.dtype != a.dtype:
                pg = pg.astype(a.dtype)
            out.append(pg)
        else:
            out.append(None)
    return out


def _needed(order, wanted):
    """Ids of the entries of ``order`` from which a wanted entry can be reached."""
    needed = set()
    for node in reversed(order):  # producers first
        k = id(node)
        if k in wanted or (isinstance(node, Context) and node.next and
                           any(e is not None and id(e) in needed for e in node.next)):
            needed.add(k)
    return needed


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """The gradients of ``outputs`` with respect to ``inputs`` (``torch.autograd.grad``),
    returned as a tuple, without touching any ``.grad``.

    ``grad_outputs``: the vector of the vector-Jacobian product, one per output (may be
    omitted for one-element outputs). ``retain_graph`` defaults to ``create_graph``.
    ``allow_unused=True`` returns None for an input the outputs do not depend on
    (``materialize_grads=True``: zeros instead).
    """
    Tensor = _Tensor
    if create_graph:
        raise NotImplementedError(
            "autograd.grad(create_graph=True): double backward is not supported; we differ "
            "from torch on purpose (each backward is hand-written array code that records no "
            "graph). Check second derivatives numerically instead, e.g. with "
            "tinygrad_k.gradcheck on a function that calls autograd.grad.")
    if is_grads_batched:
        raise NotImplementedError("autograd.grad(is_grads_batched=True) is not supported; "
                                  "we differ from torch on purpose: loop over the vectors")
    single_out = isinstance(outputs, Tensor)
    outputs = [outputs] if single_out else list(outputs)
    single_in = isinstance(inputs, Tensor)
    inputs = [inputs] if single_in else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    grad_outputs = list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise RuntimeError(f"grad requires one grad_output per output: got "
                           f"{len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    if materialize_grads and allow_unused is False:
        raise ValueError("Expected allow_unused to be True or not passed when "
                         "materialize_grads=True, but got: allow_unused=False.")
    if allow_unused is None:
        allow_unused = materialize_grads
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"One of the differentiated Tensors (input {i}) does not "
                               "require grad")
    grads = []
    for i, (o, go) in enumerate(zip(outputs, grad_outputs)):
        if not o.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not "
                               "have a grad_fn")
        grads.append(_initial_grad(o, go, "grad"))
    got = run_backward(outputs, grads, retain_graph=bool(retain_graph), inputs=inputs,
                       accumulate=False)
    result = []
    for t, g in zip(inputs, got):
        if g is None:
            if not allow_unused:
                raise RuntimeError("One of the differentiated Tensors appears to not have been "
                                   "used in the graph. Set allow_unused=True if this is the "
                                   "desired behavior.")
            if materialize_grads:
                g = t._backend.xp.zeros(t.shape, dtype=t.dtype)
        result.append(None if g is None else Tensor._wrap(g, t._backend, False))
    return tuple(result)


def _initial_grad(t, gradient, op):
    """The gradient that starts backward at ``t``: ones for a one-element tensor."""
    if gradient is None:
        if t._array.size != 1:
            raise RuntimeError(f"{op}: grad can be implicitly created only for scalar "
                               f"outputs; got shape {t.shape}, pass a gradient")
        return t._backend.xp.ones(t._array.shape, dtype=t.dtype)
    g = gradient._array if isinstance(gradient, _Tensor) else t._backend.asarray(gradient)
    if tuple(g.shape) != t.shape:
        raise RuntimeError(f"{op}: gradient of shape {tuple(g.shape)} does not match the "
                           f"tensor's shape {t.shape}")
    return g.astype(t.dtype, copy=False)
