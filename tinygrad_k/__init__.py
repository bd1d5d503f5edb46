"""tinygrad_k: a from-scratch deep-learning engine with hand-written autograd and kernels.

    import tinygrad_k as tk
    x = tk.randn(4, 3, requires_grad=True)
    (x @ x.T).relu().sum().backward()
    x.grad            # d/dx, computed by the Functions in tinygrad_k.ops

The top level is torch's: ``tk.tanh(x)``, ``tk.sum(x, dim=1)``, ``tk.float``,
``tk.device("cuda")``, ``tk.Generator`` ... (generated in ``torch_namespace``).
Subpackages: ``nn`` (modules, losses, init), ``optim``, ``data`` (also as
``utils.data``), ``models``, ``viz``, ``cuda``, ``backends``.
"""
from .autograd import (Function, enable_grad, inference_mode, is_grad_enabled, no_grad,
                       set_grad_enabled)
from .backend import cuda_available, get_backend
from .gradcheck import GradcheckError, gradcheck
from .random import Generator, manual_seed
from .tensor import (Tensor, arange, bool_, empty, eye, float32, float64, from_numpy, full,
                     full_like, int32, int64, linspace, ones, ones_like, rand, rand_like,
                     randint, randn, randn_like, tensor, uint8, zeros, zeros_like)
from . import cuda
from .torch_namespace import NAMESPACE as _NAMESPACE

__version__ = "0.1.0"

# torch.float, torch.int, torch.bool ... shadow the builtins in this module only: added
# last, after every line above has run
globals().update(_NAMESPACE)


def __getattr__(name):
    # heavier subpackages load on first use so `import tinygrad_k` stays fast
    import importlib

    if name in ("nn", "optim", "data", "models", "viz", "io", "distributed", "utils",
                "backends"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in ("save", "load"):
        return getattr(importlib.import_module(f"{__name__}.io"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
