"""``Module`` and ``Parameter``: PyTorch's bookkeeping for layers, written small."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ...backend import get_backend, normalize_device
from ...tensor import Tensor, zeros
from ._hooks import BackwardHook, RemovableHandle

__all__ = ["Parameter", "Module", "register_module_forward_pre_hook",
           "register_module_forward_hook", "register_module_full_backward_pre_hook",
           "register_module_full_backward_hook"]

# hooks every Module runs, before its own (torch.nn.modules.module's globals)
_global_forward_pre_hooks = OrderedDict()
_global_forward_hooks = OrderedDict()
_global_forward_hooks_always_called = OrderedDict()
_global_backward_pre_hooks = OrderedDict()
_global_backward_hooks = OrderedDict()


def register_module_forward_pre_hook(hook):
    """``hook(module, args)`` before every Module's forward (and before its own pre-hooks);
    may return replacement args. Returns a handle with ``remove()``."""
    handle = RemovableHandle(_global_forward_pre_hooks)
    _global_forward_pre_hooks[handle.id] = hook
    return handle


def register_module_forward_hook(hook, *, always_call=False):
    """``hook(module, args, output)`` after every Module's forward (before its own forward
    hooks); may return a replacement output. Returns a handle with ``remove()``."""
    handle = RemovableHandle(_global_forward_hooks, _global_forward_hooks_always_called)
    _global_forward_hooks[handle.id] = hook
    if always_call:
        _global_forward_hooks_always_called[handle.id] = True
    return handle


def register_module_full_backward_pre_hook(hook):
    """``hook(module, grad_output)`` for every Module, before its own backward pre-hooks."""
    handle = RemovableHandle(_global_backward_pre_hooks)
    _global_backward_pre_hooks[handle.id] = hook
    return handle


def register_module_full_backward_hook(hook):
    """``hook(module, grad_input, grad_output)`` for every Module, before its own."""
    handle = RemovableHandle(_global_backward_hooks)
    _global_backward_hooks[handle.id] = hook
    return handle


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable parameter (requires_grad=True)."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            arr, device = data._array, data.device
        else:
            arr, device = np.asarray(data, dtype=np.float32), "cpu"
        super().__init__(arr, device=device)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of every layer and model.

    Assigning a Parameter, Module or (with ``register_buffer``) a Tensor to an attribute
    registers it; ``parameters()``, ``state_dict()``, ``to()``, ``train()``/``eval()``
    then walk the tree, as in PyTorch.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        for name in ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                     "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                     "_backward_pre_hooks", "_backward_hooks"):
            object.__setattr__(self, name, OrderedDict())

    # -- registration --------------------------------------------------------------
    def __setattr__(self, name, value):
        """PyTorch's rules: a Parameter or Module registers under ``name``; a name already
        registered as a parameter (module) accepts only a Parameter (Module) or None; a
        buffer name accepts a Tensor or None; anything else is a plain attribute."""
        d = self.__dict__
        if "_parameters" not in d:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before "
                               "assigning attributes")
        params, buffers, modules = d["_parameters"], d["_buffers"], d["_modules"]
        kind = type(self).__name__
        if isinstance(value, Parameter):
            # replacing keeps the entry's place (and so the order of parameters and
            # state_dict keys), as in PyTorch
            self._forget(name, keep=params)
            params[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"{kind}: cannot assign {type(value).__name__} as parameter "
                                f"'{name}' (Parameter or None expected)")
            params[name] = None
        elif isinstance(value, Module):
            self._forget(name, keep=modules)
            modules[name] = value
        elif name in modules:
            if value is not None:
                raise TypeError(f"{kind}: cannot assign {type(value).__name__} as child "
                                f"module '{name}' (Module or None expected)")
            modules[name] = None
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"{kind}: cannot assign {type(value).__name__} as buffer "
                                f"'{name}' (Tensor or None expected)")
            buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name, keep):
        d = self.__dict__
        for store in (d["_parameters"], d["_buffers"], d["_modules"]):
            if store is not keep:
                store.pop(name, None)
        d.pop(name, None)

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def _check_name(self, what, name):
        if not isinstance(name, str):
            raise TypeError(f"{type(self).__name__}: {what} name must be a str, got "
                            f"{type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"{type(self).__name__}: {what} name {name!r} must be non-empty "
                           "and contain no '.'")
        d = self.__dict__
        if name in d and name not in d["_parameters"] and name not in d["_buffers"] \
                and name not in d["_modules"]:
            raise KeyError(f"{type(self).__name__}: attribute '{name}' already exists")

    def register_buffer(self, name, tensor, persistent=True):
        """A non-learnable Tensor (or None) moved by ``to()`` and, when ``persistent``,
        saved in ``state_dict`` (e.g. BatchNorm's running statistics)."""
        self._check_name("buffer", name)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"{type(self).__name__}: buffer '{name}' must be a Tensor or None, "
                            f"got {type(tensor).__name__}")
        self._forget(name, keep=self._buffers)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def register_parameter(self, name, param):
        """Register a Parameter (or None: the name exists, holds no parameter)."""
        self._check_name("parameter", name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"{type(self).__name__}: cannot register {type(param).__name__} "
                            f"as parameter '{name}' (Parameter or None expected)")
        self._forget(name, keep=self._parameters)
        self._parameters[name] = param

    def add_module(self, name, module):
        self._check_name("module", name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}: {type(module).__name__} is not a Module "
                            f"(child '{name}')")
        self._forget(name, keep=self._modules)
        self._modules[name] = module

    register_module = add_module

    def get_submodule(self, target):
        """The sub-module at a dotted path ("features.0"); "" is the module itself."""
        mod = self
        for part in target.split(".") if target else []:
            if part not in mod._modules or mod._modules[part] is None:
                raise AttributeError(f"{type(mod).__name__} has no submodule '{part}' "
                                     f"(looking up '{target}')")
            mod = mod._modules[part]
        return mod

    # -- the forward -------------------------------------------------------------------
    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        if not (self._forward_pre_hooks or self._forward_hooks or self._backward_hooks
                or self._backward_pre_hooks or _global_forward_pre_hooks
                or _global_forward_hooks or _global_backward_hooks
                or _global_backward_pre_hooks):
            return self.forward(*args, **kwargs)
        return self._call_with_hooks(args, kwargs)

    def _call_with_hooks(self, args, kwargs):
        """PyTorch's order: forward pre-hooks (global, then the module's), the inputs
        wired for backward hooks, forward, forward hooks (global, then the module's), the
        outputs wired for backward hooks."""
        for hook_id, hook in (*_global_forward_pre_hooks.items(),
                              *self._forward_pre_hooks.items()):
            if hook_id in self._forward_pre_hooks_with_kwargs:
                res = hook(self, args, kwargs)
                if res is not None:
                    if not (isinstance(res, tuple) and len(res) == 2):
                        raise RuntimeError("forward pre-hook must return None or a tuple of "
                                           f"(new_args, new_kwargs), but got {res}.")
                    args, kwargs = res
            else:
                res = hook(self, args)
                if res is not None:
                    args = res if isinstance(res, tuple) else (res,)
        bw_hook = None
        full = [*_global_backward_hooks.values(), *self._backward_hooks.values()]
        pre = [*_global_backward_pre_hooks.values(), *self._backward_pre_hooks.values()]
        if full or pre:
            bw_hook = BackwardHook(self, full, pre)
            args = bw_hook.setup_input_hook(args)
        called = set()
        try:
            result = self.forward(*args, **kwargs)
            for hook_id, hook in (*_global_forward_hooks.items(), *self._forward_hooks.items()):
                called.add(hook_id)
                if hook_id in self._forward_hooks_with_kwargs:
                    res = hook(self, args, kwargs, result)
                else:
                    res = hook(self, args, result)
                if res is not None:
                    result = res
        except Exception:
            # hooks registered with always_call=True run even when forward raised
            for hook_id, hook in (*_global_forward_hooks.items(), *self._forward_hooks.items()):
                always = (_global_forward_hooks_always_called.get(hook_id)
                          or self._forward_hooks_always_called.get(hook_id))
                if always and hook_id not in called:
                    try:
                        if hook_id in self._forward_hooks_with_kwargs:
                            hook(self, args, kwargs, None)
                        else:
                            hook(self, args, None)
                    except Exception:  # the forward's error is the one to report
                        pass
            raise
        if bw_hook is not None:
            result = bw_hook.setup_output_hook(result)
        return result

    # -- hooks, as PyTorch ------------------------------------------------------------
    def _add_hook(self, hooks, hook, prepend, *flags):
        handle = RemovableHandle(hooks, *(d for d, on in flags))
        hooks[handle.id] = hook
        for d, on in flags:
            if on:
                d[handle.id] = True
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """``hook(module, args)`` runs before ``forward``; a value it returns replaces
        ``args`` (a non-tuple is wrapped in one). ``with_kwargs=True``: ``hook(module,
        args, kwargs)`` returning None or ``(args, kwargs)``. ``prepend``: run before the
        hooks already registered. Returns a handle with ``remove()``."""
        return self._add_hook(self._forward_pre_hooks, hook, prepend,
                              (self._forward_pre_hooks_with_kwargs, with_kwargs))

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False,
                              always_call=False):
        """``hook(module, args, output)`` runs after ``forward``; a value it returns
        replaces the output. ``with_kwargs=True``: ``hook(module, args, kwargs, output)``.
        ``always_call``: also run (with output None) when forward raises."""
        return self._add_hook(self._forward_hooks, hook, prepend,
                              (self._forward_hooks_with_kwargs, with_kwargs),
                              (self._forward_hooks_always_called, always_call))

    def register_full_backward_pre_hook(self, hook, *, prepend=False):
        """``hook(module, grad_output)`` runs when the gradients of the module's outputs
        are computed, before those of its inputs; a tuple it returns replaces
        ``grad_output`` (one entry per output, None for non-Tensor outputs)."""
        return self._add_hook(self._backward_pre_hooks, hook, prepend)

    def register_full_backward_hook(self, hook, *, prepend=False):
        """``hook(module, grad_input, grad_output)`` runs when the gradients of the
        module's inputs are computed: tuples with one entry per positional input (None for
        a non-Tensor or one that needs no grad) and per output. A tuple it returns
        replaces ``grad_input``. When no input requires grad it runs as soon as the
        output gradients are known, with ``grad_input`` all None (as PyTorch). Built on
        tensor hooks (see ``_hooks.BackwardHook``); the module's inputs and outputs must
        not be modified in place inside forward."""
        return self._add_hook(self._backward_hooks, hook, prepend)

    # -- walking the tree ---------------------------------------------------------------
    def named_modules(self, prefix=""):
        # depth-first pre-order, as PyTorch: a module, then each child's whole subtree
        stack = [(prefix, self)]
        seen = set()
        while stack:
            name, mod = stack.pop()
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            yield name, mod
            children = [(f"{name}.{child_name}" if name else child_name, child)
                        for child_name, child in mod._modules.items() if child is not None]
            stack.extend(reversed(children))

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix="", recurse=True):
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_name, mod in mods:
            for name, p in mod._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True, _persistent_only=False):
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_name, mod in mods:
            for name, b in mod._buffers.items():
                if b is None or (_persistent_only and name in mod._non_persistent):
                    continue
                yield (f"{mod_name}.{name}" if mod_name else name), b

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        """Call ``fn`` on every sub-module, children before their parent (as PyTorch),
        e.g. ``model.apply(init_weights)``."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # -- modes -----------------------------------------------------------------------------
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError(f"train: mode must be a bool, got {mode!r}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad._array[...] = 0

    # -- devices -------------------------------------------------------------------------
    def to(self, device=None, dtype=None):
        """Move (and/or cast) every parameter and buffer in place. Parameter objects keep
        their identity, so an optimizer built before ``to()`` still updates them."""
        backend = get_backend(normalize_device(device)) if device is not None else None
        if dtype is not None and np.dtype(dtype).kind != "f":
            raise TypeError(f"Module.to: dtype must be floating point, got {np.dtype(dtype)}")

        def move(t):
            arr = t._array
            if backend is not None and t.backend is not backend:
                arr = backend.asarray(t.backend.to_numpy(arr))
                t._backend = backend
            if dtype is not None and arr.dtype.kind == "f":  # integer buffers stay integers
                arr = arr.astype(dtype)
            t._array = arr

        for t in list(self.parameters()) + list(self.buffers()):
            move(t)
            if t.grad is not None:  # the gradient follows its parameter, as in PyTorch
                move(t.grad)
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self, keep_vars=False):
        """Ordered name -> Tensor: module by module (parent first), each module's
        parameters then its persistent buffers, in PyTorch's order (detached and sharing
        memory; the Parameters themselves with ``keep_vars=True``)."""
        out = OrderedDict()
        for mod_name, mod in self.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            for name, p in mod._parameters.items():
                if p is not None:
                    out[prefix + name] = p if keep_vars else p.detach()
            for name, b in mod._buffers.items():
                if b is not None and name not in mod._non_persistent:
                    out[prefix + name] = b if keep_vars else b.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into the parameters and buffers of the same names.

        ``strict``: missing or unexpected keys raise. A shape mismatch always raises.
        Values may be Tensors or NumPy arrays (e.g. from a PyTorch model's ``.numpy()``).
        """
        own = dict(self.named_parameters())
        own.update(dict(self.named_buffers(_persistent_only=True)))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict for {type(self).__name__}: missing keys "
                           f"{missing}, unexpected keys {unexpected}")
        errors = []
        for k, t in own.items():
            if k not in state_dict:
                continue
            v = state_dict[k]
            arr = v.numpy() if isinstance(v, Tensor) else np.asarray(v)
            if tuple(arr.shape) != t.shape:
                errors.append(f"{k}: checkpoint shape {tuple(arr.shape)}, model shape {t.shape}")
                continue
            # in place, as torch's param.copy_(): views and optimizers keep the same storage
            t._array[...] = t.backend.asarray(np.asarray(arr, dtype=t.dtype))
            t._bump_version()
        if errors:
            raise ValueError(f"load_state_dict for {type(self).__name__}: size mismatch: "
                             + "; ".join(errors))
        return {"missing_keys": missing, "unexpected_keys": unexpected}

    # -- printing --------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        # PyTorch's layout: extra_repr alone on one line, or its lines and then one
        # "(name): child" per child, indented by two spaces
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        lines += [f"({name}): " + repr(m).replace("\n", "\n  ")
                  for name, m in self._modules.items()]
        head = f"{type(self).__name__}("
        if len(lines) <= 1 and not self._modules:
            return head + "".join(lines) + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _param(*shape):
    """A zero Parameter of ``shape``, for a layer's reset_parameters to fill."""
    return Parameter(zeros(*shape))
