"""``DataLoader``: batches of a dataset as Tensors, in a reproducible order.

Batches are formed in NumPy (one ``get_batch`` fancy-index when the dataset offers it)
and become Tensors only at the end, on the loader's device: the one-way flow of
DESIGN.md (data, numpy -> ``Tensor.to(device)`` -> model).
"""
from __future__ import annotations

import numpy as np

from .dataset import Dataset, Subset, TensorDataset, fetch_batch

# Dataset, Subset, TensorDataset are re-exported here for `from tinygrad_k.data.loader import`
__all__ = ["DataLoader", "Dataset", "Subset", "TensorDataset", "collate"]


def collate(arrays, device="cpu"):
    """Stacked NumPy fields -> Tensors on ``device``.

    Floating fields become float32 (the framework's default dtype), integer fields int64
    (class labels, as ``cross_entropy`` expects), bool stays bool.
    """
    from ..tensor import Tensor  # lazy: `tinygrad_k.data` is importable without the engine

    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind == "f":
            a = a.astype(np.float32, copy=False)
        elif a.dtype.kind in "iu":
            a = a.astype(np.int64, copy=False)
        elif a.dtype.kind != "b":
            raise TypeError(f"DataLoader: cannot batch a field of dtype {a.dtype} "
                            "(expected float, integer or bool arrays)")
        out.append(Tensor(np.ascontiguousarray(a), device=device))
    return tuple(out)


class DataLoader:
    """Iterate ``dataset`` in batches of ``batch_size`` as ``(x, y)`` Tensors.

    * ``shuffle``: a fresh permutation every epoch, drawn from
      ``numpy.random.default_rng([seed, epoch])``. The order of epoch ``e`` depends only
      on (seed, e), so a resumed run replays the same batches: call ``set_epoch(e)``
      before iterating (as with PyTorch's DistributedSampler) and ``iter_from(b)`` to
      start inside an epoch. Without ``set_epoch``, each new ``for`` over the loader
      moves to the next epoch by itself. ``seed=None`` means seed 0.
    * ``drop_last``: drop the final batch when it is smaller than ``batch_size``.
    * ``device``: where the batches' Tensors live ("cpu" or "cuda").

    ``len(loader)`` is the number of batches per epoch. Fields are converted by
    ``collate`` (float -> float32, integer -> int64).
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None,
                 device="cpu"):
        if not hasattr(dataset, "__len__") or not (hasattr(dataset, "__getitem__")
                                                   or hasattr(dataset, "get_batch")):
            raise TypeError(f"DataLoader: expected a map-style dataset (len and [i]), got "
                            f"{type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be an int >= 1, got {batch_size!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last, self.device = bool(shuffle), bool(drop_last), device
        self.seed = 0 if seed is None else int(seed)
        self.epoch = 0
        self._auto_epoch = True

    def set_epoch(self, epoch):
        """Use epoch ``epoch``'s order for the next iteration (and stop auto-advancing)."""
        if int(epoch) < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        self._auto_epoch = False

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch=None):
        """The sample indices of epoch ``epoch`` (default: the current one), in order."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        e = self.epoch if epoch is None else int(epoch)
        return np.random.default_rng([self.seed, e]).permutation(n)

    def batch_indices(self, epoch=None):
        """The index array of every batch of an epoch (a list of ``len(self)`` arrays)."""
        order = self.order(epoch)
        b = self.batch_size
        return [order[i * b:(i + 1) * b] for i in range(len(self))]

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, start_batch):
        """Iterate the current epoch from batch ``start_batch`` (to resume mid-epoch)."""
        if not 0 <= int(start_batch) <= len(self):
            raise ValueError(f"DataLoader.iter_from: start_batch must be in [0, {len(self)}], "
                             f"got {start_batch}")
        batches = self.batch_indices()
        if self._auto_epoch:
            self.epoch += 1
        return self._generate(batches[int(start_batch):])

    def _generate(self, batches):
        for idx in batches:
            yield collate(fetch_batch(self.dataset, idx), self.device)

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, seed={self.seed}, device={self.device!r})")
