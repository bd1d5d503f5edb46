"""tinygrad_k: a from-scratch deep-learning engine with hand-written autograd and kernels.

    import tinygrad_k as tk
    x = tk.randn(4, 3, requires_grad=True)
    (x @ x.T).relu().sum().backward()
    x.grad            # d/dx, computed by the Functions in tinygrad_k.ops

Subpackages: ``nn`` (modules, losses, init), ``optim``, ``data``, ``models``, ``viz``.
"""
from .autograd import (Function, enable_grad, inference_mode, is_grad_enabled, no_grad,
                       set_grad_enabled)
from .backend import cuda_available, get_backend
from .gradcheck import GradcheckError, gradcheck
from .random import manual_seed
from .tensor import (Tensor, arange, bmm, bool_, cat, empty, eye, float32, float64, from_numpy,
                     full, full_like, int32, int64, linspace, matmul, maximum, minimum, mm, ones,
                     ones_like, rand, rand_like, randint, randn, randn_like, split, stack, tensor,
                     uint8, where, zeros, zeros_like)

__version__ = "0.1.0"


class _CudaNamespace:
    """``tinygrad_k.cuda.is_available()`` as in PyTorch."""

    @staticmethod
    def is_available() -> bool:
        return cuda_available()


cuda = _CudaNamespace()


def __getattr__(name):
    # heavier subpackages load on first use so `import tinygrad_k` stays fast
    import importlib

    if name in ("nn", "optim", "data", "models", "viz", "io", "distributed"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in ("save", "load"):
        return getattr(importlib.import_module(f"{__name__}.io"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
