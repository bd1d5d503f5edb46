"""Neural-network building blocks with PyTorch's names: modules, losses, ``init``,
``functional``."""
from . import functional, init
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layers
from .module import Module, ModuleList, Parameter, Sequential

__all__ = ["Module", "ModuleList", "Parameter", "Sequential", "functional", "init"] + list(_layers)
