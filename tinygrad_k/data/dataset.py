"""Map-style datasets: ``Dataset``, ``TensorDataset``, ``ArrayDataset``, ``Subset``.

A dataset is ``len(ds)`` plus ``ds[i] -> (x, y)`` with NumPy values. A dataset may also
offer ``get_batch(indices) -> (X, Y)``: the samples at ``indices`` stacked along a new
first axis, computed with one fancy-index over whole arrays. The ``DataLoader`` uses it
when present, because a Python loop over 60,000 samples costs seconds per epoch, while
one ``images[idx]`` per batch costs microseconds.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Dataset", "TensorDataset", "ArrayDataset", "Subset", "ConcatDataset", "SeriesWindows",
           "fetch_batch", "labels_of", "class_subset", "random_split"]


class Dataset:
    """Map-style dataset: ``len(ds)`` and ``ds[i] -> (x, y)`` (PyTorch's protocol).

    Subclasses may add ``get_batch(indices) -> tuple of arrays`` for vectorised batching.
    """

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def __getitem__(self, i):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __add__(self, other):
        return ConcatDataset([self, other])


def _as_numpy(a, who):
    if hasattr(a, "numpy") and not isinstance(a, np.ndarray):
        return a.numpy()  # a tinygrad_k (or torch) Tensor: the data stays NumPy
    arr = np.asarray(a)
    if arr.ndim == 0:
        raise ValueError(f"{who}: expected arrays with a sample axis, got a scalar")
    return arr


class TensorDataset(Dataset):
    """Samples are rows of equally long arrays or Tensors: ``ds[i] = (a[i], b[i], ...)``.

    Tensors are converted to NumPy once, here; the loader makes Tensors per batch.
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset: needs at least one array")
        self.arrays = [_as_numpy(a, "TensorDataset") for a in arrays]
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) != 1:
            raise ValueError(f"TensorDataset: arrays must have the same first dimension, got "
                             f"shapes {[a.shape for a in self.arrays]}")

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, i):
        return tuple(a[i] for a in self.arrays)

    def get_batch(self, idx):
        return tuple(a[idx] for a in self.arrays)


class ArrayDataset(Dataset):
    """Images ``(N, C, H, W)`` (uint8 or float) and integer labels ``(N,)`` in memory.

    A sample is ``(image, label)``: the image as float32 ``(C, H, W)``, uint8 scaled to
    [0, 1] (x / 255), then ``transform`` if set. ``get_batch`` does the same on a whole
    batch ``(B, C, H, W)``, so every transform must accept both layouts (those in
    ``tinygrad_k.data.transforms`` do).
    """

    def __init__(self, images, labels, transform=None):
        images = np.asarray(images)
        labels = np.asarray(labels)
        name = type(self).__name__
        if images.ndim != 4:
            raise ValueError(f"{name}: expected images of shape (N, C, H, W), got {images.shape}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"{name}: expected integer labels of shape (N,), got "
                             f"{labels.dtype} {labels.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def _prep(self, x):
        if x.dtype == np.uint8:
            x = x.astype(np.float32) * np.float32(1.0 / 255.0)
        else:
            x = x.astype(np.float32, copy=False)
        return self.transform(x) if self.transform is not None else x

    def __getitem__(self, i):
        return self._prep(self.images[i]), self.labels[i]

    def get_batch(self, idx):
        return self._prep(self.images[idx]), self.labels[idx]

    @property
    def num_classes(self):
        return int(self.labels.max()) + 1 if len(self.labels) else 0


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices`` (in that order).

    ``label_map`` (optional, an int array): labels ``y`` of the base dataset become
    ``label_map[y]``; ``class_subset`` uses it to relabel the chosen classes 0..k-1.
    ``transform`` reads and writes the base dataset's transform.
    """

    def __init__(self, dataset, indices, label_map=None):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(dataset)
        if self.indices.size and (self.indices.min() < -n or self.indices.max() >= n):
            raise IndexError(f"Subset: indices span [{self.indices.min()}, "
                             f"{self.indices.max()}], out of range for a dataset of {n}")
        self.indices = self.indices % max(n, 1)
        self.label_map = None if label_map is None else np.asarray(label_map, dtype=np.int64)

    def __len__(self):
        return len(self.indices)

    def _map(self, y):
        return y if self.label_map is None else self.label_map[np.asarray(y)]

    def __getitem__(self, i):
        x, y, *rest = self.dataset[int(self.indices[i])]
        return (x, self._map(y), *rest)

    def get_batch(self, idx):
        x, y, *rest = fetch_batch(self.dataset, self.indices[np.asarray(idx, dtype=np.int64)])
        return (x, self._map(y), *rest)

    @property
    def labels(self):
        base = labels_of(self.dataset)
        return self._map(base[self.indices])

    @property
    def transform(self):
        return getattr(self.dataset, "transform", None)

    @transform.setter
    def transform(self, t):
        self.dataset.transform = t


def fetch_batch(dataset, idx):
    """The samples ``idx`` of ``dataset`` as a tuple of stacked arrays.

    Vectorised through ``dataset.get_batch`` when the dataset has it; otherwise one
    ``dataset[i]`` per sample, stacked.
    """
    idx = np.asarray(idx, dtype=np.int64)
    if hasattr(dataset, "get_batch"):
        return tuple(dataset.get_batch(idx))
    if idx.size == 0:
        raise ValueError(f"fetch_batch: empty batch from {type(dataset).__name__}")
    items = [dataset[int(i)] for i in idx]
    if not isinstance(items[0], (tuple, list)):
        items = [(it,) for it in items]
    return tuple(np.stack([np.asarray(it[k]) for it in items]) for k in range(len(items[0])))


def labels_of(dataset):
    """All labels of ``dataset`` as an int64 array (its ``labels`` attribute when it has one,
    else read sample by sample)."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [dataset[i][1] for i in range(len(dataset))]
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels_of: expected integer class labels (N,) from "
                         f"{type(dataset).__name__}, got {labels.dtype} {labels.shape}")
    return labels.astype(np.int64, copy=False)


def class_subset(dataset, classes=(0, 6)):
    """The samples whose label is in ``classes``, relabelled 0..k-1 in the given order.

    ``class_subset(FashionMNIST(), (0, 6))`` keeps T-shirt/top (0) and shirt (6) as labels
    0 and 1: the two-class task of the ``binary_cnn`` model. Returns a ``Subset``.
    """
    classes = [int(c) for c in classes]
    if len(classes) < 1 or len(set(classes)) != len(classes):
        raise ValueError(f"class_subset: expected distinct class ids, got {classes}")
    labels = labels_of(dataset)
    present = set(np.unique(labels).tolist())
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(f"class_subset: classes {missing} do not occur in "
                         f"{type(dataset).__name__} (labels present: {sorted(present)})")
    label_map = np.full(max(max(present), max(classes)) + 1, -1, dtype=np.int64)
    label_map[classes] = np.arange(len(classes))
    keep = np.flatnonzero(np.isin(labels, classes))
    return Subset(dataset, keep, label_map=label_map)


class ConcatDataset(Dataset):
    """The datasets one after another: index ``i`` of the whole reads dataset ``k`` at
    ``i - cumulative_sizes[k - 1]`` (as ``torch.utils.data.ConcatDataset``).

    ``get_batch`` groups a batch's indices by dataset (one ``fetch_batch`` each) and puts the
    rows back in the asked order, so concatenated array datasets keep the fast path.
    """

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if len(self.datasets) == 0:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        for d in self.datasets:
            if not hasattr(d, "__len__"):
                raise TypeError(f"ConcatDataset does not support {type(d).__name__} (a "
                                "dataset without len)")
        self.cumulative_sizes = np.cumsum([len(d) for d in self.datasets]).tolist()

    def __len__(self):
        return self.cumulative_sizes[-1]

    def _locate(self, idx):
        n = len(self)
        if idx < 0:
            if -idx > n:
                raise ValueError("absolute value of index should not exceed dataset length")
            idx += n
        if idx >= n:
            raise IndexError(f"ConcatDataset: index {idx} out of range for length {n}")
        k = int(np.searchsorted(self.cumulative_sizes, idx, side="right"))
        return k, idx - (self.cumulative_sizes[k - 1] if k > 0 else 0)

    def __getitem__(self, idx):
        k, local = self._locate(int(idx))
        return self.datasets[k][local]

    def get_batch(self, idx):
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"ConcatDataset: indices span [{idx.min()}, {idx.max()}], out of "
                             f"range for length {n}")
        idx = idx % n
        which = np.searchsorted(self.cumulative_sizes, idx, side="right")
        starts = np.concatenate([[0], self.cumulative_sizes[:-1]])
        positions, parts = [], []
        for k in np.unique(which).tolist():
            sel = np.flatnonzero(which == k)
            positions.append(sel)
            parts.append(fetch_batch(self.datasets[k], idx[sel] - starts[k]))
        inverse = np.argsort(np.concatenate(positions), kind="stable")
        return tuple(np.concatenate([p[f] for p in parts])[inverse]
                     for f in range(len(parts[0])))


def random_split(dataset, lengths, generator=None, *, seed=None):
    """Split ``dataset`` into non-overlapping ``Subset``s, as ``torch.utils.data.random_split``.

    ``lengths``: sizes summing to ``len(dataset)``, or fractions summing to 1 (each part gets
    ``floor(n * f)``, the remainder is dealt one by one round-robin from the first part).
    The permutation comes from ``generator`` (a framework or NumPy generator; default: the
    global one, so ``manual_seed`` fixes it), or from ``numpy.random.default_rng(seed)``.
    """
    import math
    import warnings

    from .sampler import _numpy_rng

    n = len(dataset)
    lengths = list(lengths)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1 and \
            all(0 <= f <= 1 for f in lengths) and not all(isinstance(f, int) for f in lengths):
        sizes = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
        for i, size in enumerate(sizes):
            if size == 0:
                warnings.warn(f"Length of split at index {i} is 0. This might result in an "
                              "empty dataset.", stacklevel=2)
        lengths = sizes
    if any(int(x) != x or x < 0 for x in lengths) or sum(lengths) != n:
        raise ValueError(f"random_split: sum of input lengths {lengths} does not equal the "
                         f"length of the input dataset ({n}); lengths must be >= 0 and sum "
                         f"to {n}, or be fractions that sum to 1")
    rng = np.random.default_rng(seed) if seed is not None else _numpy_rng(generator,
                                                                          "random_split")
    perm = rng.permutation(n)
    cuts = np.cumsum([0] + [int(x) for x in lengths])
    return [Subset(dataset, perm[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


class SeriesWindows(Dataset):
    """Sliding windows of a 1-D series ``s`` of length L: sample i is
    x = s[i : i+T] as (T, 1), y = s[i+T] as (1,), for i in [0, L - T)."""

    def __init__(self, series, window):
        self.series = np.asarray(series, dtype=np.float32)
        self.window = window
        if len(self.series) <= window:
            raise ValueError(f"series of length {len(self.series)} is too short for windows "
                             f"of {window}")

    def __len__(self):
        return len(self.series) - self.window

    def __getitem__(self, i):
        x, y = self.get_batch(np.array([i]))
        return x[0], y[0]

    def get_batch(self, idx):
        idx = np.asarray(idx)
        offs = idx[:, None] + np.arange(self.window)[None, :]
        return self.series[offs][..., None], self.series[idx + self.window][:, None]
