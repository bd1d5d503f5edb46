"""Neural-network building blocks with PyTorch's names: modules, losses, ``init``,
``functional``."""
from . import functional, init, utils
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layers
from .module import Module, ModuleDict, ModuleList, Parameter, ParameterList, Sequential

__all__ = ["Module", "ModuleDict", "ModuleList", "Parameter", "ParameterList", "Sequential",
           "functional", "init", "utils"] + list(_layers)
