"""Real data sets read from their original binary files (never pickle), and a generated one.

* Fashion-MNIST / MNIST: the four idx files (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``), raw or gzip-compressed.
* CIFAR-10: the *binary version* (``data_batch_1.bin`` ... ``data_batch_5.bin``,
  ``test_batch.bin``; records of 1 label byte + 3072 pixel bytes, channel-major).
* ``SyntheticImages``: class templates plus shifts and noise; learnable, for tests and
  for machines without the real data.

Where the files are looked for (first match wins):
1. the ``root`` argument (only there, when given);
2. ``$FASHION_MNIST_DIR`` (Fashion-MNIST only);
3. ``$TINYGRAD_K_DATA/<name>`` then ``$TINYGRAD_K_DATA`` itself, with ``<name>`` one of
   ``fashion-mnist``, ``mnist``, ``cifar10`` (also ``cifar-10-batches-bin``);
4. ``/usr/share/datasets/<name>`` (Debian: ``apt-get install dataset-fashion-mnist``).
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from .dataset import ArrayDataset, SeriesWindows, Subset, class_subset

__all__ = ["read_idx", "FashionMNIST", "MNIST", "CIFAR10", "SyntheticImages", "load_dataset",
           "candidate_roots", "default_root", "DATASET_NAMES", "FASHION_CLASSES",
           "CIFAR_CLASSES", "BINARY_PAIR", "NORMALIZE", "read_series_csv", "make_series",
           "make_data"]

DATASET_NAMES = ("fashion-mnist", "mnist", "cifar10", "synthetic")
SYSTEM_DIR = "/usr/share/datasets"
FMNIST_DEBIAN = os.path.join(SYSTEM_DIR, "fashion-mnist")

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck")
# binary_cnn's default pair: Pullover vs Coat, a hard pair (measured 91% after 3 epochs).
# T-shirt/top vs Shirt (--classes 0 6) is the hardest pair of the set: 88% after 8 epochs.
BINARY_PAIR = (2, 4)
# per-channel mean/std of the training sets (inputs scaled to [0, 1] first)
NORMALIZE = {"fashion-mnist": ((0.2860,), (0.3530,)), "mnist": ((0.1307,), (0.3081,)),
             "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))}

# idx type codes (third magic byte) -> element dtype; multi-byte types are big-endian
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}
_IDX_FILES = ("train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
              "and t10k-labels-idx1-ubyte (raw or .gz)")
HOW_TO_GET = {
    "fashion-mnist": "install the Debian package (apt-get install dataset-fashion-mnist; it puts "
                     f"the files in {FMNIST_DEBIAN}), or download them from "
                     "https://github.com/zalandoresearch/fashion-mnist and pass their folder "
                     "as root=... (CLI: --data-dir) or set FASHION_MNIST_DIR. Expected files: "
                     + _IDX_FILES,
    "mnist": "download the four MNIST idx files and pass their folder as root=... (CLI: "
             "--data-dir) or put them in $TINYGRAD_K_DATA/mnist. Expected files: " + _IDX_FILES,
    "cifar10": "download the CIFAR-10 *binary version* (cifar-10-binary.tar.gz from "
               "https://www.cs.toronto.edu/~kriz/cifar.html), unpack it and pass the folder "
               "holding data_batch_1.bin ... data_batch_5.bin and test_batch.bin as root=... "
               "(CLI: --data-dir) or put it in $TINYGRAD_K_DATA/cifar10. The Python (pickle) "
               "version is not read.",
}


# -- idx files -------------------------------------------------------------------------
def read_idx(path, expect_ndim=None):
    """Read an idx file (raw, or gzip-compressed when the name ends in ``.gz``).

    Format: magic = two zero bytes, a type code (0x08 = uint8, ...), the number of
    dimensions d; then d big-endian uint32 sizes; then the data, row-major. The data
    size must match the header exactly: a truncated (or padded) file raises ValueError
    naming the file, the expected and the actual byte count. Returns a (read-only)
    NumPy array of the header's shape.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"read_idx: {path} does not exist")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # bad/truncated gzip stream
        raise ValueError(f"read_idx: cannot read {path} ({exc}): the file is truncated or "
                         "corrupted; download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"read_idx: {path} is not an idx file: magic number "
                         f"0x{raw[:4].hex()} (expected 0x0000TTDD: two zero bytes, a type code "
                         f"in {sorted(hex(k) for k in _IDX_DTYPES)}, the number of dimensions)")
    ndim = raw[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise ValueError(f"read_idx: {path} holds a {ndim}-dimensional array, expected "
                         f"{expect_ndim} dimensions (wrong file?)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: {path} is truncated inside its header ({len(raw)} bytes, "
                         f"a {ndim}-dimensional idx header needs {header})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - header
    if have != need:
        what = "truncated" if have < need else "longer than its header says"
        raise ValueError(f"read_idx: {path} is {what}: the header gives shape {dims} of "
                         f"{dtype} ({need} data bytes), the file holds {have}; download it again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


# -- where the files are ------------------------------------------------------------------
_SUBDIRS = {"fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST"),
            "mnist": ("mnist", "MNIST"),
            "cifar10": ("cifar10", "cifar-10-batches-bin", "cifar-10")}


def candidate_roots(name, root=None):
    """The folders searched for dataset ``name``, in order (see the module docstring)."""
    if root is not None:
        return [os.fspath(root)]
    env = os.environ
    out = []
    if name == "fashion-mnist" and env.get("FASHION_MNIST_DIR"):
        out.append(env["FASHION_MNIST_DIR"])
    if env.get("TINYGRAD_K_DATA"):
        base = env["TINYGRAD_K_DATA"]
        out += [os.path.join(base, s) for s in _SUBDIRS[name]] + [base]
    out.append(os.path.join(SYSTEM_DIR, name))
    return out


def default_root(name):
    """The first existing folder among ``candidate_roots(name)`` (or the last candidate)."""
    cands = candidate_roots(name)
    return next((c for c in cands if os.path.isdir(c)), cands[-1])


def _find_file(folder, stems):
    for stem in stems:
        for cand in (stem + ".gz", stem):
            p = os.path.join(folder, cand)
            if os.path.isfile(p):
                return p
    return None


def _locate(name, root, needed, who):
    """-> (folder, {key: path}) for the first candidate folder holding every needed file.

    ``needed``: {key: [alternative file stems]}.
    """
    tried = []
    for folder in candidate_roots(name, root):
        found = {k: _find_file(folder, stems) for k, stems in needed.items()}
        if all(found.values()):
            return folder, found
        missing = [stems[0] for k, stems in needed.items() if not found[k]]
        why = "no such folder" if not os.path.isdir(folder) else "missing " + ", ".join(missing)
        tried.append(f"{folder} ({why})")
    raise FileNotFoundError(f"{who}: dataset files not found. Looked in: " + "; ".join(tried)
                            + f". To get them: {HOW_TO_GET[name]}")


# -- MNIST-format datasets ----------------------------------------------------------------
class MNIST(ArrayDataset):
    """MNIST from its idx files: 60,000 train / 10,000 test grey 28x28 images, 10 classes.

    Samples: image float32 (1, 28, 28) in [0, 1] (then ``transform``), label int64.
    ``images`` stays uint8 (N, 1, 28, 28) in memory; ``labels`` int64 (N,).
    """

    name = "mnist"
    classes = tuple(str(i) for i in range(10))

    def __init__(self, root=None, train=True, transform=None):
        prefix = "train" if train else "t10k"
        who = type(self).__name__
        needed = {"images": [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"],
                  "labels": [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"]}
        folder, paths = _locate(self.name, root, needed, who)
        images = read_idx(paths["images"], 3)
        labels = read_idx(paths["labels"], 1)
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise ValueError(f"{who}: expected uint8 idx files, got images {images.dtype} "
                             f"({paths['images']}), labels {labels.dtype} ({paths['labels']})")
        if len(images) != len(labels):
            raise ValueError(f"{who}: {paths['images']} holds {len(images)} images but "
                             f"{paths['labels']} holds {len(labels)} labels")
        if len(labels) and labels.max() >= len(self.classes):
            raise ValueError(f"{who}: {paths['labels']} holds label {labels.max()}, expected "
                             f"0..{len(self.classes) - 1}")
        super().__init__(images[:, None, :, :], labels, transform)
        self.root, self.train = folder, train


class FashionMNIST(MNIST):
    """Fashion-MNIST (Zalando): MNIST's format and sizes, 10 clothing classes."""

    name = "fashion-mnist"
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")


# -- CIFAR-10 -----------------------------------------------------------------------------
class CIFAR10(ArrayDataset):
    """CIFAR-10, binary version: 50,000 train / 10,000 test colour 3x32x32 images.

    Each ``.bin`` file is a sequence of 3073-byte records: the label (0..9), then 1024
    red, 1024 green and 1024 blue bytes, each plane row-major: exactly NCHW.
    """

    name = "cifar10"
    RECORD = 1 + 3 * 32 * 32
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
               "ship", "truck")

    def __init__(self, root=None, train=True, transform=None):
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
        needed = {n: [n] for n in names}
        # the tarball unpacks into cifar-10-batches-bin/: accept root pointing above it
        if root is not None and not os.path.isfile(os.path.join(root, names[0])) and \
                os.path.isdir(os.path.join(root, "cifar-10-batches-bin")):
            root = os.path.join(root, "cifar-10-batches-bin")
        folder, paths = _locate(self.name, root, needed, "CIFAR10")
        images, labels = [], []
        for n in names:
            p = paths[n]
            if p.endswith(".gz"):
                with gzip.open(p, "rb") as f:
                    raw = np.frombuffer(f.read(), dtype=np.uint8)
            else:
                raw = np.fromfile(p, dtype=np.uint8)
            if raw.size == 0 or raw.size % self.RECORD:
                raise ValueError(f"CIFAR10: {p} holds {raw.size} bytes, not a whole number of "
                                 f"{self.RECORD}-byte records (1 label byte + 3x32x32 pixels): "
                                 "truncated, or not the CIFAR-10 binary version (the real "
                                 "files hold 10000 records = 30730000 bytes)")
            rec = raw.reshape(-1, self.RECORD)
            lab = rec[:, 0]
            if lab.max() > 9:
                raise ValueError(f"CIFAR10: {p} holds label {lab.max()}, expected 0..9 (is it "
                                 "CIFAR-100, whose records have 2 label bytes?)")
            labels.append(lab.astype(np.int64))
            images.append(rec[:, 1:].reshape(-1, 3, 32, 32))
        super().__init__(np.concatenate(images), np.concatenate(labels), transform)
        self.root, self.train = folder, train


# -- generated data -----------------------------------------------------------------------
class SyntheticImages(ArrayDataset):
    """``n`` generated uint8 images of ``num_classes`` classes, reproducible from ``seed``.

    Class k has a fixed smooth random template (a coarse (H/4, W/4) random grid, upsampled
    4x); a sample is its template rolled by up to 2 pixels in each direction, plus
    Gaussian noise (std ``noise``), clipped to [0, 1] and stored as uint8. The train and
    test splits (``train=``) share the templates and differ in shifts and noise, so a
    small model learns it (1-nearest-neighbour scores ~100% at 12x12 and 28x28). Used
    where the real data is absent.
    """

    name = "synthetic"

    def __init__(self, n=2000, shape=(1, 28, 28), num_classes=10, seed=0, train=True,
                 transform=None, noise=0.25):
        if n < 1 or num_classes < 2 or len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"SyntheticImages: expected n >= 1, num_classes >= 2 and shape "
                             f"(C, H, W), got n={n}, num_classes={num_classes}, shape={shape}")
        c, h, w = (int(s) for s in shape)
        tmpl_rng = np.random.default_rng([seed, 0])
        coarse = tmpl_rng.random((num_classes, c, -(-h // 4), -(-w // 4)))
        templates = coarse.repeat(4, axis=2).repeat(4, axis=3)[:, :, :h, :w]
        rng = np.random.default_rng([seed, 1 if train else 2])
        labels = rng.integers(0, num_classes, n)
        sy, sx = rng.integers(-2, 3, n), rng.integers(-2, 3, n)
        # a per-sample np.roll as one gather: out[.., i, j] = t[.., (i - sy) % h, (j - sx) % w]
        rows = (np.arange(h)[None, :] - sy[:, None]) % h
        cols = (np.arange(w)[None, :] - sx[:, None]) % w
        imgs = templates[labels[:, None, None, None], np.arange(c)[None, :, None, None],
                         rows[:, None, :, None], cols[:, None, None, :]]
        imgs = imgs + noise * rng.standard_normal(imgs.shape)
        images = np.round(np.clip(imgs, 0.0, 1.0) * 255).astype(np.uint8)
        super().__init__(images, labels, transform)
        self.classes = tuple(str(i) for i in range(num_classes))
        self.train = train


# -- factory --------------------------------------------------------------------------------
def load_dataset(name, root=None, train=True, transform=None, **kwargs):
    """A dataset by name: "fashion-mnist", "mnist", "cifar10" or "synthetic".

    "synthetic" gives ``SyntheticImages`` shaped like Fashion-MNIST (1x28x28, 10 classes;
    4000 train / 1000 test samples unless ``n=`` is passed in ``kwargs``).
    """
    key = str(name).lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}.get(key, key)
    if key == "fashion-mnist":
        return FashionMNIST(root, train, transform)
    if key == "mnist":
        return MNIST(root, train, transform)
    if key == "cifar10":
        return CIFAR10(root, train, transform)
    if key == "synthetic":
        kwargs.setdefault("n", 4000 if train else 1000)
        return SyntheticImages(train=train, transform=transform, **kwargs)
    raise ValueError(f"load_dataset: unknown dataset {name!r}; expected one of "
                     f"{', '.join(DATASET_NAMES)}")


# -- the training CLI's data factory ----------------------------------------------------------
def read_series_csv(path, min_values=20):
    """The series in column 1 of a CSV file, as float64, refusing anything doubtful.

    An optional header row (a first row whose first cell is not a number) names the
    columns. Every row must have as many cells as the first; every cell of column 1 must
    be a finite number. Other columns are read for their shape only. Errors name the
    file, the line and the column: nothing is skipped, nothing is guessed."""
    import csv
    import math

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [(n, row) for n, row in _csv_rows(csv.reader(f))]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from None
    while rows and not rows[-1][1]:  # trailing blank lines
        rows.pop()
    if not rows:
        raise ValueError(f"{path}: empty CSV file; expected a column of numbers")

    def number(cell):
        try:
            v = float(cell.strip())
        except ValueError:
            return None
        return v if math.isfinite(v) else None

    first_line, first = rows[0]
    if first and number(first[0]) is None and first[0].strip().lower() not in (
            "nan", "inf", "-inf", "+inf", "infinity", "-infinity", ""):
        rows = rows[1:]  # a header
    width = len(first)
    values = []
    for line, row in rows:
        if not row:
            raise ValueError(f"{path}: line {line}: empty row (expected {width} columns)")
        if len(row) != width:
            raise ValueError(f"{path}: line {line}: {len(row)} columns, expected {width} "
                             f"(as on line {first_line})")
        v = number(row[0])
        if v is None:
            what = "a missing value" if not row[0].strip() else f"{row[0]!r} is not a finite number"
            raise ValueError(f"{path}: line {line}, column 1: {what}")
        values.append(v)
    if len(values) < min_values:
        raise ValueError(f"{path}: {len(values)} values in column 1; expected at least "
                         f"{min_values}")
    return np.asarray(values, dtype=np.float64)


def _csv_rows(reader):
    """(line number where the row starts, row) for each row of a csv.reader."""
    line = 1
    for row in reader:
        yield line, row
        line = reader.line_num + 1


def make_series(name, n=2000, seed=0):
    """A reproducible series (sum of two sines + noise), or column 1 of a CSV file
    (``read_series_csv``) standardised to mean 0 and standard deviation 1."""
    if name == "sine":
        rng = np.random.default_rng(seed)
        t = np.arange(n, dtype=np.float64)
        s = np.sin(2 * np.pi * t / 50) + 0.5 * np.sin(2 * np.pi * t / 23)
        return (s + 0.05 * rng.standard_normal(n)).astype(np.float32)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"rnn_regressor: series {name!r} is neither 'sine' nor a CSV "
                                "file")
    values = read_series_csv(name)
    return ((values - values.mean()) / (values.std() + 1e-12)).astype(np.float32)


def _limit(ds, n):
    if n is None or n >= len(ds):
        return ds
    return Subset(ds, np.arange(n))


def make_data(dataset, data_dir, limit_train=None, limit_test=None, augment=False, seed=0,
              window=20, classes=None):
    """The train and test sets of the training CLI by name.

    ``dataset``: "fashion-mnist", "fashion-mnist-binary" (two classes, ``classes`` or
    ``BINARY_PAIR``, relabelled 0/1), "mnist", "cifar10", "synthetic" (1x28x28),
    "synthetic-rgb" (3x32x32), "sine" or a CSV file (windows of ``window`` values), "words"
    or a .txt file (words as character sequences, ``text.make_words_data``).
    Images are normalised with the training set's per-channel mean/std (``NORMALIZE``);
    ``augment`` adds random crops (padding 4) and flips to the training set.

    -> train_set, test_set, input shape, number of classes, class names (or None).
    """
    from .text import is_words_dataset, make_words_data
    from .transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip

    if is_words_dataset(dataset):   # character-level language models (data/text.py)
        return make_words_data(dataset, data_dir, limit_train, limit_test, seed)
    if dataset == "sine" or dataset.endswith(".csv"):
        s = make_series(dataset, seed=seed)
        cut = int(len(s) * 0.8)
        train, test = SeriesWindows(s[:cut], window), SeriesWindows(s[cut - window:], window)
        return _limit(train, limit_train), _limit(test, limit_test), (window, 1), 1, None
    base = "fashion-mnist" if dataset == "fashion-mnist-binary" else dataset
    if base == "synthetic-rgb":  # CIFAR-shaped generated data for lenet/resnet18 without CIFAR
        train = load_dataset("synthetic", train=True, shape=(3, 32, 32))
        test = load_dataset("synthetic", train=False, shape=(3, 32, 32))
    else:
        train = load_dataset(base, root=data_dir, train=True)
        test = load_dataset(base, root=data_dir, train=False)
    names = FASHION_CLASSES if base == "fashion-mnist" else (
        CIFAR_CLASSES if base == "cifar10" else None)
    if dataset == "fashion-mnist-binary":
        a, b = classes or BINARY_PAIR
        train, test = class_subset(train, (a, b)), class_subset(test, (a, b))
        names = (FASHION_CLASSES[a], FASHION_CLASSES[b])
    mean, std = NORMALIZE.get(base, ((0.5,), (0.5,)))
    test_tf = Normalize(mean, std)
    train_tf = test_tf
    if augment:
        train_tf = Compose([RandomCrop(train[0][0].shape[-1], padding=4),
                            RandomHorizontalFlip(), test_tf])
    train.transform, test.transform = train_tf, test_tf
    in_shape = tuple(train[0][0].shape)
    num_classes = len(names) if names else int(_num_classes(train))
    return _limit(train, limit_train), _limit(test, limit_test), in_shape, num_classes, names


def _num_classes(ds):
    labels = getattr(ds, "labels", None)
    return int(np.max(labels)) + 1 if labels is not None else 10
