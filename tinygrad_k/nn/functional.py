"""``tinygrad_k.nn.functional``: the functional API (as ``torch.nn.functional``)."""
from ..functional import *  # noqa: F401,F403
from ..functional import __all__ as _core
from .layers import (adaptive_avg_pool2d, binary_cross_entropy,  # noqa: F401
                     binary_cross_entropy_with_logits, l1_loss, mse_loss, nll_loss)

__all__ = list(_core) + ["adaptive_avg_pool2d", "binary_cross_entropy",
                         "binary_cross_entropy_with_logits", "l1_loss", "mse_loss", "nll_loss"]
