"""Samplers: which dataset indices a ``DataLoader`` reads, in which order (torch.utils.data's).

A sampler is an iterable of indices (``BatchSampler``: of lists of indices) with a length.
Randomness comes from ``generator=`` (a ``tinygrad_k`` / NumPy generator) or, when it is
``None``, from one draw of the framework's global generator per pass, so that
``tinygrad_k.manual_seed(s)`` makes every pass reproducible, as ``torch.manual_seed`` does.

Samplers that know their whole order up front also offer ``_order() -> int64 array``; the
``BatchSampler`` then cuts batches as array slices (the DataLoader's fast path) instead of
a Python loop over every index.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler",
           "WeightedRandomSampler", "BatchSampler", "DistributedSampler", "epoch_permutation"]


def _numpy_rng(generator, who):
    """A ``numpy.random.Generator`` for one pass of a sampler.

    ``None``: a fresh generator seeded by one draw of the framework's global generator
    (torch draws a 64-bit seed from its default generator the same way). A NumPy
    ``Generator`` is used as is (its state advances, as a torch ``Generator``'s would); a
    framework ``Generator`` is used through the NumPy generator it wraps.
    """
    if generator is None:
        from .. import random as _random

        return np.random.default_rng(int(_random.generator().integers(0, 2 ** 63 - 1)))
    if isinstance(generator, np.random.Generator):
        return generator
    for attr in ("_rng", "rng", "_generator", "numpy_generator"):
        inner = getattr(generator, attr, None)
        inner = inner() if callable(inner) and not isinstance(inner, np.random.Generator) \
            else inner
        if isinstance(inner, np.random.Generator):
            return inner
    raise TypeError(f"{who}: generator must be a tinygrad_k.Generator or a "
                    f"numpy.random.Generator, got {type(generator).__name__}")


def epoch_permutation(n, seed, epoch):
    """The permutation of ``range(n)`` for (``seed``, ``epoch``): a function of those two only.

    Shared by the DataLoader's seeded shuffle and ``DistributedSampler``, so that one process
    at batch B and W ranks at batch B/W see the same samples in every global step.
    """
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


class Sampler:
    """Base class: subclasses define ``__iter__`` (indices) and usually ``__len__``."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __iter__")

    def _order(self):  # the whole pass as an int64 array, or None when not known up front
        return None


class SequentialSampler(Sampler):
    """``0, 1, ..., len(data_source) - 1``."""

    def __init__(self, data_source):
        self.data_source = data_source

    def _order(self):
        return np.arange(len(self.data_source), dtype=np.int64)

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """Random order of ``data_source``'s indices; each pass draws a new one.

    Without replacement: ``num_samples // n`` full permutations then the head of one more
    (``num_samples`` defaults to ``n``). With replacement: ``num_samples`` uniform draws.
    """

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        if not isinstance(self.replacement, bool):
            raise TypeError("replacement should be a boolean value, but got "
                            f"replacement={self.replacement}")
        if not isinstance(self.num_samples, int) or isinstance(self.num_samples, bool) \
                or self.num_samples <= 0:
            raise ValueError("num_samples should be a positive integer value, but got "
                             f"num_samples={self.num_samples}")

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def _order(self):
        n, k = len(self.data_source), self.num_samples
        rng = _numpy_rng(self.generator, "RandomSampler")
        if self.replacement:
            return rng.integers(0, n, size=k, dtype=np.int64)
        parts = [rng.permutation(n) for _ in range(k // n)]
        if k % n:
            parts.append(rng.permutation(n)[:k % n])
        return np.concatenate(parts).astype(np.int64, copy=False) if parts else \
            np.zeros(0, np.int64)

    def __iter__(self):
        return iter(self._order().tolist())

    def __len__(self):
        return self.num_samples


class _SeededShuffleSampler(Sampler):
    """The DataLoader's ``seed=`` shuffle: epoch ``e``'s order is ``epoch_permutation(n, seed,
    e)``. Each pass moves to the next epoch by itself until ``set_epoch`` pins one."""

    def __init__(self, data_source, seed):
        self.data_source, self.seed = data_source, int(seed)
        self.epoch, self._auto_epoch = 0, True

    def set_epoch(self, epoch):
        self.epoch, self._auto_epoch = int(epoch), False

    def _order(self, epoch=None):
        return epoch_permutation(len(self.data_source), self.seed,
                                 self.epoch if epoch is None else epoch)

    def _advance(self):
        if self._auto_epoch:
            self.epoch += 1

    def __iter__(self):
        order = self._order()
        self._advance()
        return iter(order.tolist())

    def __len__(self):
        return len(self.data_source)


class SubsetRandomSampler(Sampler):
    """The given ``indices`` in a random order (a new one each pass)."""

    def __init__(self, indices, generator=None):
        self.indices = indices
        self.generator = generator

    def _order(self):
        perm = _numpy_rng(self.generator, "SubsetRandomSampler").permutation(len(self.indices))
        return np.asarray([self.indices[i] for i in perm.tolist()], dtype=np.int64)

    def __iter__(self):
        return iter(self._order().tolist())

    def __len__(self):
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """``num_samples`` indices in ``[0, len(weights))`` drawn with probabilities
    ``weights / sum(weights)`` (weights need not sum to one), as ``torch.multinomial``."""

    def __init__(self, weights, num_samples, replacement=True, generator=None):
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
            raise ValueError("num_samples should be a positive integer value, but got "
                             f"num_samples={num_samples}")
        if not isinstance(replacement, bool):
            raise ValueError("replacement should be a boolean value, but got "
                             f"replacement={replacement}")
        w = weights.numpy() if hasattr(weights, "numpy") and not isinstance(weights, np.ndarray) \
            else weights
        w = np.asarray(w, dtype=np.float64)
        if w.ndim != 1:
            raise ValueError("weights should be a 1d sequence but given weights have shape "
                             f"{tuple(w.shape)}")
        self.weights, self.num_samples = w, num_samples
        self.replacement, self.generator = replacement, generator

    def _order(self):
        w = self.weights
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise RuntimeError("invalid multinomial distribution (encountering probability "
                               "entry < 0, inf or nan)")
        if w.sum() <= 0:
            raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
        if not self.replacement and self.num_samples > np.count_nonzero(w):
            raise RuntimeError("cannot sample n_sample > prob_dist.size(-1) samples without "
                               f"replacement (n_sample={self.num_samples}, "
                               f"{np.count_nonzero(w)} non-zero weights)")
        rng = _numpy_rng(self.generator, "WeightedRandomSampler")
        return rng.choice(len(w), size=self.num_samples, replace=self.replacement,
                          p=w / w.sum()).astype(np.int64)

    def __iter__(self):
        return iter(self._order().tolist())

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Groups ``sampler``'s indices into lists of ``batch_size`` (the last one shorter unless
    ``drop_last``).

        list(BatchSampler(SequentialSampler(range(10)), 3, False))
        # [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    """

    def __init__(self, sampler, batch_size, drop_last):
        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) \
                or batch_size <= 0:
            raise ValueError("batch_size should be a positive integer value, but got "
                             f"batch_size={batch_size}")
        if not isinstance(drop_last, bool):
            raise ValueError("drop_last should be a boolean value, but got "
                             f"drop_last={drop_last}")
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), drop_last

    def _batches(self):
        """The batches as int64 arrays: slices of the sampler's order when it has one."""
        order = self.sampler._order() if hasattr(self.sampler, "_order") else None
        if order is None:
            yield from (np.asarray(b, dtype=np.int64) for b in self._loop())
            return
        if hasattr(self.sampler, "_advance"):
            self.sampler._advance()
        b = self.batch_size
        stop = len(order) // b * b if self.drop_last else len(order)
        for i in range(0, stop, b):
            yield order[i:i + b]

    def _loop(self):
        batch = []
        for idx in self.sampler:
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __iter__(self):
        for b in self._batches():
            yield b.tolist()

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class DistributedSampler(Sampler):
    """This rank's share of ``dataset``, as ``torch.utils.data.DistributedSampler``.

    Every rank builds the same epoch order (``epoch_permutation(n, seed, epoch)`` when
    ``shuffle``; call ``set_epoch(e)`` before each epoch or every epoch repeats the same
    order), makes its length divisible by ``num_replicas`` by repeating the head
    (``drop_last=False``) or cutting the tail (``drop_last=True``), and keeps the
    positions ``rank, rank + num_replicas, ...``. So every rank has ``num_samples`` =
    ``ceil(n / W)`` (or ``floor`` with ``drop_last``) indices and, batched at B/W, the W
    ranks' batch j together hold positions ``[j B, (j + 1) B)`` of the epoch order.
    ``num_replicas`` and ``rank`` default to the process group's.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        if num_replicas is None or rank is None:
            from .. import distributed as dist

            if not dist.is_initialized():
                raise RuntimeError("DistributedSampler: num_replicas/rank not given and the "
                                   "default process group is not initialized (call "
                                   "tinygrad_k.distributed.init_process_group first)")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, int(num_replicas), int(rank)
        self.epoch, self.drop_last, self.shuffle, self.seed = 0, drop_last, shuffle, int(seed)
        n = len(dataset)
        if drop_last and n % self.num_replicas != 0:
            self.num_samples = math.ceil((n - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def _order(self):
        n = len(self.dataset)
        idx = epoch_permutation(n, self.seed, self.epoch) if self.shuffle else \
            np.arange(n, dtype=np.int64)
        if not self.drop_last:
            pad = self.total_size - len(idx)
            if pad > 0:
                idx = np.concatenate([idx, np.resize(idx, pad)])
        else:
            idx = idx[:self.total_size]
        assert len(idx) == self.total_size
        return idx[self.rank:self.total_size:self.num_replicas].astype(np.int64, copy=False)

    def __iter__(self):
        return iter(self._order().tolist())

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """Use epoch ``epoch``'s order (all ranks must set the same epoch)."""
        self.epoch = int(epoch)
