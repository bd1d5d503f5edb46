"""``torch.utils``: ``tinygrad_k.utils.data`` is ``tinygrad_k.data`` (Dataset,
DataLoader, samplers), at the place PyTorch scripts import it from."""
import sys

from .. import data

# `import tinygrad_k.utils.data` (what `import torch.utils.data` becomes) finds it here
sys.modules[__name__ + ".data"] = data

__all__ = ["data"]
