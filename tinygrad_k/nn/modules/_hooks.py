"""Module hook plumbing, as ``torch.utils.hooks``: the handle every ``register_*_hook``
returns, and ``BackwardHook``, which turns tensor hooks into a module's full backward
(pre-)hooks.

How the backward hooks see a module's gradients: the module's Tensor inputs that require
grad go through one identity node before ``forward`` (so the gradient reaching that node
is exactly the gradient of the module's inputs, even when an input is used elsewhere
too, e.g. by a residual connection), and its top-level Tensor outputs through another
after it. Several tensors share one node: they are flattened and concatenated, then
sliced back, so the node's gradient is complete only when every one of them has its
gradient, and the hook fires once with all of them, as in PyTorch. A tensor hook on the
output node runs the backward pre-hooks (and, when no input requires grad, the full
backward hooks); one on the input node runs the full backward hooks.
"""
from __future__ import annotations

import itertools

from ...autograd import is_grad_enabled, no_grad
from ...ops import movement as M
from ...tensor import Tensor, cat, zeros

_ids = itertools.count()


class RemovableHandle:
    """Returned by ``register_*_hook``: ``remove()`` unregisters the hook (also on leaving a
    ``with`` block), as ``torch.utils.hooks.RemovableHandle``."""

    def __init__(self, *hook_dicts):
        self.id = next(_ids)
        self._dicts = hook_dicts

    def remove(self):
        for d in self._dicts:
            d.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class _Pack:
    """The identity node a group of tensors goes through: ``node`` is the one Tensor
    whose gradient holds all of theirs, ``outs`` the tensors to use in their place;
    ``arrived[i]`` records whether tensor i received a gradient at all (a tensor the
    loss does not depend on gets None, not zeros)."""

    def __init__(self, tensors):
        self.shapes = [t.shape for t in tensors]
        self.sizes = [t.numel() for t in tensors]
        self.arrived = [False] * len(tensors)
        if len(tensors) == 1:  # one view node, no copy
            self.node = M.Reshape.apply(tensors[0], tensors[0].shape)
            self.outs = [self.node]
            self.outs[0].register_hook(self._arrival(0))
            return
        kinds = {(t.dtype, t.device) for t in tensors}
        if len(kinds) > 1:
            raise NotImplementedError(
                f"full backward hooks: the module's tensors that require grad differ in dtype "
                f"or device ({sorted(map(str, kinds))}); hooks need them alike")
        self.node = cat([t.reshape(-1) for t in tensors], 0)
        self.outs, start = [], 0
        for i, (shape, n) in enumerate(zip(self.shapes, self.sizes)):
            out = M.Reshape.apply(self.node[start:start + n], shape)
            out.register_hook(self._arrival(i))
            self.outs.append(out)
            start += n

    def _arrival(self, i):
        def hook(grad):
            self.arrived[i] = True
        return hook

    def split(self, grad):
        """The node's gradient -> one gradient (or None) per tensor."""
        if len(self.shapes) == 1:
            return (grad,)
        out, start = [], 0
        for shape, n, arrived in zip(self.shapes, self.sizes, self.arrived):
            out.append(grad[start:start + n].reshape(shape) if arrived else None)
            start += n
        return tuple(out)

    def join(self, grads, like):
        """One gradient per tensor (None: zero) -> the node's gradient."""
        parts = [g if g is not None else zeros(*shape, dtype=like.dtype, device=like.device)
                 for g, shape in zip(grads, self.shapes)]
        if len(parts) == 1:
            return parts[0]
        return cat([p.reshape(-1) for p in parts], 0)


class BackwardHook:
    """Wires one call of a module to its full backward hooks ``hook(module, grad_input,
    grad_output)`` and backward pre-hooks ``hook(module, grad_output)`` (PyTorch's
    ``torch.utils.hooks.BackwardHook``): ``setup_input_hook(args)`` before forward,
    ``setup_output_hook(result)`` after it (and after the forward hooks)."""

    def __init__(self, module, user_hooks, user_pre_hooks):
        self.module, self.user_hooks, self.user_pre_hooks = module, user_hooks, user_pre_hooks
        self.grad_outputs = None
        self.n_inputs = self.n_outputs = -1
        self.input_index = self.output_index = None

    @staticmethod
    def _pack_with_none(index, values, size):
        res = [None] * size
        for i, v in zip(index, values):
            res[i] = v
        return tuple(res)

    @staticmethod
    def _wrap(args):
        """(new args, Tensor positions, _Pack) -- or (args, None, None) when no Tensor
        argument requires grad (or grad mode is off)."""
        index = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        grad_index = [i for i in index if args[i].requires_grad]
        if not grad_index or not is_grad_enabled():
            return args, None, None
        pack = _Pack([args[i] for i in grad_index])
        new = list(args)
        for i, t in zip(grad_index, pack.outs):
            new[i] = t
        pack.index = grad_index
        return tuple(new), index, pack

    def setup_input_hook(self, args):
        new, index, pack = self._wrap(tuple(args))
        self.n_inputs = len(args)
        if pack is None:
            return args
        self.input_index = index

        def hook(grad):
            if self.grad_outputs is None:  # the gradient did not come through the outputs
                return None
            grads = pack.split(grad)
            res = self._pack_with_none(pack.index, grads, self.n_inputs)
            changed = False
            for user_hook in self.user_hooks:
                out = user_hook(self.module, res, self.grad_outputs)
                if out is None:
                    continue
                if not isinstance(out, tuple) or len(out) != len(res):
                    raise RuntimeError("Backward hook returned an invalid number of grad_input, "
                                       f"got {len(out) if isinstance(out, tuple) else out!r}, "
                                       f"but expected {len(res)}")
                res, changed = out, True
            self.grad_outputs = None
            if changed:
                with no_grad():
                    return pack.join([res[i] for i in pack.index], grad)
            return None

        pack.node.register_hook(hook)
        return new

    def setup_output_hook(self, result):
        is_tuple = isinstance(result, tuple)
        outs = result if is_tuple else (result,)
        new, _, pack = self._wrap(outs)
        self.n_outputs = len(outs)
        if pack is None:
            return result
        self.output_index = pack.index

        def hook(grad):
            grads = pack.split(grad)
            self.grad_outputs = self._pack_with_none(pack.index, grads, self.n_outputs)
            changed = False
            for pre_hook in self.user_pre_hooks:
                out = pre_hook(self.module, self.grad_outputs)
                if out is None:
                    continue
                if not isinstance(out, tuple) or len(out) != self.n_outputs:
                    raise RuntimeError("Backward pre hook returned an invalid number of "
                                       f"grad_output, got {len(out) if isinstance(out, tuple) else out!r}, "
                                       f"but expected {self.n_outputs}")
                self.grad_outputs, changed = out, True
            grad_outputs = self.grad_outputs
            if self.input_index is None:  # no input requires grad: fire now, as PyTorch
                grad_inputs = (None,) * self.n_inputs
                for user_hook in self.user_hooks:
                    res = user_hook(self.module, grad_inputs, self.grad_outputs)
                    if res is not None and not (isinstance(res, tuple)
                                                and all(r is None for r in res)):
                        raise RuntimeError("Backward hook for Modules where no input requires "
                                           "gradient should always return None or None for all "
                                           "gradients.")
                self.grad_outputs = None
            if changed:
                with no_grad():
                    return pack.join([grad_outputs[i] for i in pack.index], grad)
            return None

        pack.node.register_hook(hook)
        return new if is_tuple else new[0]
