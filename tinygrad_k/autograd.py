"""Reverse-mode automatic differentiation, written out by hand.

Every differentiable op is a :class:`Function` subclass with ``forward(ctx, ...)`` and
``backward(ctx, grad)`` side by side. ``Function.apply`` unwraps Tensor arguments to raw
arrays, runs ``forward`` and, when gradients are wanted, records a :class:`Context` node on
the output. ``Tensor.backward`` walks those nodes in reverse topological order
(:func:`run_backward`), calling each ``backward`` once with the summed gradient of its
output, and accumulates into the ``.grad`` of leaf tensors as PyTorch does.

Broadcasting is undone in one place, :func:`unbroadcast`: a ``backward`` may return a
gradient in the broadcast (output) shape; the engine sums it back to the input's shape.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from .backward_trace import active_trace

__all__ = ["Function", "Context", "no_grad", "enable_grad", "set_grad_enabled",
           "inference_mode", "is_grad_enabled", "unbroadcast",
           "run_backward", "register_tensor_type"]

_state = threading.local()

# The Tensor class, handed over once by tensor.py when it is defined: the graph machinery
# below wraps arrays into Tensors but never imports the module that defines them.
_Tensor = None


def register_tensor_type(cls):
    """Called once by ``tinygrad_k.tensor``: the class Function.apply wraps outputs in."""
    global _Tensor
    _Tensor = cls
    return cls


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


def _set_grad_enabled(flag: bool) -> bool:
    prev = is_grad_enabled()
    _state.grad_enabled = flag
    return prev


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._prev = []

    def __enter__(self):
        self._prev.append(_set_grad_enabled(self.enabled))
        return self

    def __exit__(self, *exc):
        _set_grad_enabled(self._prev.pop())
        return False


def no_grad():
    """Context manager / decorator: ops inside record no graph (like ``torch.no_grad``)."""
    return _GradMode(False)


def enable_grad():
    """Context manager / decorator that turns graph recording back on."""
    return _GradMode(True)


def set_grad_enabled(mode):
    """Context manager / decorator that sets graph recording to ``mode`` (as torch)."""
    return _GradMode(bool(mode))


def inference_mode(mode=True):
    """As ``no_grad`` (there are no version counters to skip here): torch's name."""
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


class Context:
    """One node of the graph: the Function that ran, its Tensor inputs and saved values."""

    __slots__ = ("fn", "parents", "needs_input_grad", "backend", "saved_tensors", "freed",
                 "__dict__")

    def __init__(self, fn, parents, backend):
        self.fn = fn
        self.parents = parents
        self.needs_input_grad = tuple(p.requires_grad for p in parents)
        self.backend = backend
        self.saved_tensors = ()
        self.freed = False

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
        self.__dict__.clear()
        self.freed = True


class Function:
    """Base class of every differentiable op.

    Subclasses define::

        @staticmethod
        def forward(ctx, *args, **kwargs) -> array      # args: raw arrays for Tensor inputs
        @staticmethod
        def backward(ctx, grad) -> array | tuple        # one gradient (or None) per Tensor input

    and are called through ``apply``. Non-Tensor arguments (ints, tuples, ...) pass through
    unchanged and get no gradient.
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        Tensor = _Tensor
        tensors = [a for a in args if isinstance(a, Tensor)]
        if not tensors:
            raise TypeError(f"{cls.__name__}: expected at least one Tensor argument")
        backend = tensors[0].backend
        for t in tensors[1:]:
            if t.backend is not backend:
                devices = ", ".join(f"{tuple(x.shape)} on {x.device}" for x in tensors)
                raise RuntimeError(
                    f"{cls.__name__}: expected all tensors on the same device, got {devices}; "
                    "move them with .to(device) first")
        raw = [a._array if isinstance(a, Tensor) else a for a in args]
        requires_grad = is_grad_enabled() and any(t.requires_grad for t in tensors)
        ctx = Context(cls, tuple(tensors), backend)
        out = cls.forward(ctx, *raw, **kwargs)
        if isinstance(out, np.generic):  # NumPy reductions return scalars, not 0-d arrays
            out = np.asarray(out)
        result = Tensor._wrap(out, backend, requires_grad)
        if requires_grad:
            result._ctx = ctx
        return result


def _topological_order(root):
    """Nodes reachable from ``root`` (Tensors with a ``_ctx``), each after all its consumers.

    Iterative depth-first search with an explicit stack, so a 10,000-op chain does not
    hit Python's recursion limit.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        ctx = node._ctx
        if ctx is not None:
            for parent in ctx.parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    order.reverse()  # consumers before producers
    return order


def _leaves_early(order):
    """``order`` with each leaf moved to just after its last consumer.

    A leaf's gradient is complete once every node that uses it has run its backward; the
    depth-first order puts all leaves at the very end. Accumulating each one as soon as it
    is complete lets post-accumulate-grad hooks (DistributedDataParallel's bucket
    reductions) start while the rest of backward runs. Leaves have no inputs, so the order
    stays topological and every gradient is the same.
    """
    last, leaves = {}, []
    for i, node in enumerate(order):
        ctx = node._ctx
        if ctx is None:
            leaves.append(node)
            continue
        for parent in ctx.parents:
            if parent._ctx is None:
                last[id(parent)] = i
    if not leaves:
        return order
    after = {}
    for leaf in leaves:
        after.setdefault(last.get(id(leaf), -1), []).append(leaf)
    out = list(after.get(-1, ()))  # the root itself, when it is a leaf
    for i, node in enumerate(order):
        if node._ctx is not None:
            out.append(node)
            out.extend(after.get(i, ()))
    return out


def run_backward(root, grad, retain_graph=False, trace=None):
    """Propagate ``grad`` (array, shape of root) back through the graph of ``root``.

    For each node in reverse topological order: g_out is the sum of the gradients of all
    its consumers; ``fn.backward(ctx, g_out)`` gives one gradient per input; inputs that are
    leaves accumulate into ``.grad``.

    ``trace``: None, or a list to which one dict per executed node is appended (op name,
    input/output shapes, gradient norms) in execution order. When None, the list of an
    active ``tinygrad_k.viz.trace()`` context (if any) is used.
    """
    Tensor = _Tensor
    if trace is None:
        trace = active_trace()

    grads = {id(root): grad}
    for node in _leaves_early(_topological_order(root)):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        ctx = node._ctx
        if ctx is None or node._retains_grad:
            if node.grad is None:
                node.grad = Tensor._wrap(g.copy(), node.backend, False)  # no aliasing between .grads
            else:
                node.grad = Tensor._wrap(node.grad._array + g, node.backend, False)
        if ctx is None:
            # torch's post-accumulate-grad hooks: the leaf's .grad is final for this backward
            # (DistributedDataParallel launches its bucket reductions from here)
            for hook in tuple(getattr(node, "_post_accumulate_grad_hooks", None) or ()):
                hook(node)
            continue
        if ctx.freed:
            raise RuntimeError(
                f"{ctx.fn.__name__}.backward: trying to backward through the graph a second time "
                "(its saved values were freed); call .backward(retain_graph=True) the first time")
        with no_grad():
            in_grads = ctx.fn.backward(ctx, g)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        if len(in_grads) != len(ctx.parents):
            raise RuntimeError(f"{ctx.fn.__name__}.backward returned {len(in_grads)} gradients, "
                               f"expected {len(ctx.parents)}")
        if trace is not None:
            xp = ctx.backend.xp
            trace.append({
                "op": ctx.fn.__name__,
                "input_shapes": [tuple(p.shape) for p in ctx.parents],
                "output_shape": tuple(node.shape),
                "grad_output_norm": float(xp.linalg.norm(g.ravel())) if g.size else 0.0,
                "grad_input_norms": [None if ig is None else
                                     (float(xp.linalg.norm(ig.ravel())) if ig.size else 0.0)
                                     for ig in in_grads],
            })
        for parent, pg in zip(ctx.parents, in_grads):
            if pg is None or not parent.requires_grad:
                continue
            if isinstance(pg, np.generic):  # arithmetic on 0-d arrays yields NumPy scalars
                pg = np.asarray(pg)
            pg = unbroadcast(pg, parent.shape)
            if pg.dtype != parent.dtype:
                pg = pg.astype(parent.dtype)
            key = id(parent)
            prev = grads.get(key)
            grads[key] = pg if prev is None else prev + pg
        if not retain_graph:
            ctx.free()
