"""Image transforms on float NumPy arrays: one image ``(C, H, W)`` or a batch ``(N, C, H, W)``.

Every transform takes both layouts, so ``ArrayDataset.get_batch`` transforms a whole
batch at once (a batch gets one independent random draw per image).

Random transforms draw from ``generator`` when one is given (a ``numpy.random.Generator``
or an int seed), else from the framework's generator (``tinygrad_k.random.generator()``),
so ``tinygrad_k.manual_seed`` and a checkpoint's saved RNG state make them reproducible.
"""
from __future__ import annotations

import numpy as np

from kernels._common import int_tuple

__all__ = ["Compose", "ToFloat", "Normalize", "RandomCrop", "RandomHorizontalFlip"]


def _check_image(x, who):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{who}: expected a NumPy array (C, H, W) or (N, C, H, W), got "
                        f"{type(x).__name__}")
    if x.ndim not in (3, 4):
        raise ValueError(f"{who}: expected an image (C, H, W) or a batch (N, C, H, W), got "
                         f"shape {x.shape}")
    return x if x.ndim == 4 else x[None]


class _Random:
    """Base of the random transforms: where their random numbers come from."""

    def __init__(self, generator=None):
        if generator is None or isinstance(generator, np.random.Generator):
            self._rng = generator
        else:
            self._rng = np.random.default_rng(generator)

    def rng(self):
        if self._rng is not None:
            return self._rng
        from .. import random as _random  # lazy: keep this module NumPy-only at import

        return _random.generator()


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable")

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self):
        return f"Compose({self.transforms!r})"


class ToFloat:
    """uint8 in [0, 255] -> float32 in [0, 1]; float input is cast to float32 unchanged."""

    def __call__(self, x):
        _check_image(np.asarray(x), "ToFloat")
        x = np.asarray(x)
        if x.dtype == np.uint8:
            return x.astype(np.float32) * np.float32(1.0 / 255.0)
        return x.astype(np.float32, copy=False)


class Normalize:
    """Per channel: ``out[..., c, :, :] = (x[..., c, :, :] - mean[c]) / std[c]``.

    ``mean``/``std``: one value for every channel, or one per channel (like torchvision).
    """

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float32))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float32))
        if self.mean.ndim != 1 or self.std.ndim != 1:
            raise ValueError(f"Normalize: mean and std must be scalars or 1-D, got {mean}, {std}")
        if not (self.std > 0).all():
            raise ValueError(f"Normalize: std must be positive, got {std}")

    def __call__(self, x):
        _check_image(x, "Normalize")
        c = x.shape[-3]
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v.size not in (1, c):
                raise ValueError(f"Normalize: {v.size} {name} values for an input with {c} "
                                 f"channels (shape {x.shape}); expected 1 or {c}")
        return ((x - self.mean.reshape(-1, 1, 1)) / self.std.reshape(-1, 1, 1)).astype(
            np.float32, copy=False)

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomCrop(_Random):
    """Zero-pad each side by ``padding``, then cut a ``size`` window at a random offset
    (one offset per image; torchvision's RandomCrop with ``padding``, constant fill 0).

    ``size``: int or (h, w); ``padding``: int or (ph, pw).
    """

    def __init__(self, size, padding=0, generator=None):
        super().__init__(generator)
        self.size = int_tuple(size, 2, "size", "RandomCrop", 1)
        self.padding = int_tuple(padding, 2, "padding", "RandomCrop", 0)

    def __call__(self, x):
        xb = _check_image(x, "RandomCrop")
        ph, pw = self.padding
        if ph or pw:
            xb = np.pad(xb, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        n, c, h, w = xb.shape
        th, tw = self.size
        if th > h or tw > w:
            raise ValueError(f"RandomCrop: crop size {self.size} is larger than the padded "
                             f"image {(h, w)} (input shape {x.shape}, padding {self.padding})")
        rng = self.rng()
        top = rng.integers(0, h - th + 1, n)
        left = rng.integers(0, w - tw + 1, n)
        # one gather for the whole batch: out[n, c, i, j] = xb[n, c, top[n]+i, left[n]+j]
        rows = top[:, None, None, None] + np.arange(th)[None, None, :, None]
        cols = left[:, None, None, None] + np.arange(tw)[None, None, None, :]
        out = xb[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]
        return out if x.ndim == 4 else out[0]

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip(_Random):
    """Mirror each image left-right (last axis) with probability ``p``."""

    def __init__(self, p=0.5, generator=None):
        super().__init__(generator)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x):
        xb = _check_image(x, "RandomHorizontalFlip")
        flip = self.rng().random(len(xb)) < self.p
        out = xb.copy()
        out[flip] = xb[flip][..., ::-1]
        return out if x.ndim == 4 else out[0]

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"
