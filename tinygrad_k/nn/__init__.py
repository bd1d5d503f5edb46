"""Neural-network building blocks with PyTorch's names: modules (``nn.modules``, by
kind), losses, ``init``, ``functional``, ``utils``."""
from . import functional, init, utils
from .modules import *  # noqa: F401,F403
from .modules import __all__ as _modules

__all__ = list(_modules) + ["functional", "init", "utils"]

from . import parallel  # noqa: E402  (after Module: DistributedDataParallel subclasses it)

__all__ += ["parallel"]
