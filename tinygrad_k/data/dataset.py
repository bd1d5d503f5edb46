"""Map-style datasets: ``Dataset``, ``TensorDataset``, ``ArrayDataset``, ``Subset``.

A dataset is ``len(ds)`` plus ``ds[i] -> (x, y)`` with NumPy values. A dataset may also
offer ``get_batch(indices) -> (X, Y)``: the samples at ``indices`` stacked along a new
first axis, computed with one fancy-index over whole arrays. The ``DataLoader`` uses it
when present, because a Python loop over 60,000 samples costs seconds per epoch, while
one ``images[idx]`` per batch costs microseconds.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Dataset", "TensorDataset", "ArrayDataset", "Subset", "SeriesWindows", "fetch_batch",
           "labels_of", "class_subset", "random_split"]


class Dataset:
    """Map-style dataset: ``len(ds)`` and ``ds[i] -> (x, y)`` (PyTorch's protocol).

    Subclasses may add ``get_batch(indices) -> tuple of arrays`` for vectorised batching.
    """

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")

    def __getitem__(self, i):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")


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


def random_split(dataset, lengths, seed=0):
    """Split ``dataset`` into non-overlapping ``Subset``s of the given lengths (which must sum
    to ``len(dataset)``), by a permutation drawn from ``numpy.random.default_rng(seed)``."""
    lengths = [int(n) for n in lengths]
    if any(n < 0 for n in lengths) or sum(lengths) != len(dataset):
        raise ValueError(f"random_split: lengths {lengths} must be >= 0 and sum to the "
                         f"dataset's length {len(dataset)}")
    perm = np.random.default_rng(seed).permutation(len(dataset))
    cuts = np.cumsum([0] + lengths)
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
