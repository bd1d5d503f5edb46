"""tinygrad_k.data: idx / CIFAR-10 readers on files the tests write, the DataLoader's order
and batching, transforms against their formulas, subsets, generated data, and the real
Fashion-MNIST when it is installed."""
import gzip
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_k as tk
from tinygrad_k import data as D

FMNIST = "/usr/share/datasets/fashion-mnist"
IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


# -- helpers that write dataset files ------------------------------------------------------
def idx_bytes(arr):
    arr = np.asarray(arr)
    dt = arr.dtype if arr.dtype.itemsize == 1 else arr.dtype.newbyteorder(">")
    head = bytes([0, 0, IDX_CODES[np.dtype(dt)], arr.ndim]) + struct.pack(f">{arr.ndim}I",
                                                                           *arr.shape)
    return head + arr.astype(dt).tobytes()


def write_idx(path, arr, gz=False):
    raw = idx_bytes(arr)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        with open(path, "wb") as f:
            f.write(raw)
    return path


def write_mnist(folder, n_train=12, n_test=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        ext = ".gz" if gz else ""
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{ext}"), imgs, gz)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{ext}"), labels, gz)
        out[prefix] = (imgs, labels)
    return out


def write_cifar(folder, per_file=3, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        imgs = rng.integers(0, 256, (per_file, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, per_file, dtype=np.uint8)
        rec = np.concatenate([labels[:, None], imgs.reshape(per_file, -1)], axis=1)
        rec.tofile(os.path.join(folder, name))
        out[name] = (imgs, labels)
    return out


@pytest.fixture
def no_data_env(monkeypatch):
    """Keep the user's data environment variables out of root resolution."""
    monkeypatch.delenv("TINYGRAD_K_DATA", raising=False)
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)


# -- idx ------------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
       dtype=st.sampled_from([np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"]),
       gz=st.booleans(), seed=st.integers(0, 2**16))
def test_read_idx_roundtrip(tmp_path_factory, shape, dtype, gz, seed):
    rng = np.random.default_rng(seed)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    path = str(tmp_path_factory.mktemp("idx") / ("a.idx" + (".gz" if gz else "")))
    write_idx(path, arr, gz)
    got = D.read_idx(path)
    assert got.shape == arr.shape
    np.testing.assert_array_equal(got.astype(np.float64), arr.astype(np.float64))


def test_read_idx_truncated_raw(tmp_path):
    path = write_idx(str(tmp_path / "x-idx3-ubyte"), np.zeros((4, 5, 6), np.uint8))
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[:-7])
    with pytest.raises(ValueError) as e:
        D.read_idx(path)
    msg = str(e.value)
    assert path in msg and "truncated" in msg and "(4, 5, 6)" in msg and "113" in msg


def test_read_idx_truncated_gzip(tmp_path):
    path = write_idx(str(tmp_path / "x-idx3-ubyte.gz"),
                     np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8),
                     gz=True)
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        D.read_idx(path)


def test_read_idx_bad_magic_and_dims(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match="not an idx file"):
        D.read_idx(str(bad))
    labels = write_idx(str(tmp_path / "l"), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="1-dimensional array, expected 3"):
        D.read_idx(labels, 3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.read_idx(str(tmp_path / "nope"))


# -- MNIST-format datasets ------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_folder(tmp_path, gz, no_data_env):
    written = write_mnist(str(tmp_path), gz=gz)
    for train, prefix in ((True, "train"), (False, "t10k")):
        ds = D.MNIST(str(tmp_path), train=train)
        imgs, labels = written[prefix]
        assert len(ds) == len(labels) and ds.images.shape == (len(labels), 1, 28, 28)
        x, y = ds[3]
        assert x.dtype == np.float32 and x.shape == (1, 28, 28)
        np.testing.assert_allclose(x[0], imgs[3] / 255.0, rtol=1e-6)
        assert y == labels[3]
        xb, yb = ds.get_batch(np.array([4, 0, 4]))
        np.testing.assert_array_equal(yb, labels[[4, 0, 4]].astype(np.int64))
        np.testing.assert_allclose(xb[:, 0], imgs[[4, 0, 4]] / 255.0, rtol=1e-6)


def test_fashion_mnist_root_resolution(tmp_path, monkeypatch, no_data_env):
    a, b = str(tmp_path / "a"), str(tmp_path / "data")
    write_mnist(a, n_train=7, seed=1)
    write_mnist(os.path.join(b, "fashion-mnist"), n_train=9, seed=2)
    monkeypatch.setenv("TINYGRAD_K_DATA", b)
    assert len(D.FashionMNIST()) == 9                     # $TINYGRAD_K_DATA/fashion-mnist
    monkeypatch.setenv("FASHION_MNIST_DIR", a)
    assert len(D.FashionMNIST()) == 7                     # FASHION_MNIST_DIR comes first
    assert len(D.FashionMNIST(root=os.path.join(b, "fashion-mnist"))) == 9  # argument first
    assert D.candidate_roots("fashion-mnist")[-1] == FMNIST


def test_missing_files_message(tmp_path, no_data_env):
    with pytest.raises(FileNotFoundError) as e:
        D.FashionMNIST(root=str(tmp_path / "empty"))
    msg = str(e.value)
    assert "FashionMNIST" in msg and str(tmp_path / "empty") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "FASHION_MNIST_DIR" in msg
    assert "train-images-idx3-ubyte" in msg
    # a folder with the images but not the labels names the missing file
    write_idx(str(tmp_path / "train-images-idx3-ubyte"), np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(FileNotFoundError, match="missing train-labels-idx1-ubyte"):
        D.MNIST(root=str(tmp_path), train=True)


def test_truncated_dataset_file(tmp_path, no_data_env):
    write_mnist(str(tmp_path), gz=False)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte is truncated"):
        D.MNIST(str(tmp_path), train=False)
    write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.zeros(11, np.uint8))
    with pytest.raises(ValueError, match="12 images but .* 11 labels"):
        D.MNIST(str(tmp_path), train=True)


# -- CIFAR-10 -------------------------------------------------------------------------------
def test_cifar10_binary(tmp_path, no_data_env):
    written = write_cifar(str(tmp_path / "cifar-10-batches-bin"))
    train = D.CIFAR10(str(tmp_path), train=True)  # finds the tarball's subfolder
    test = D.load_dataset("cifar10", root=str(tmp_path / "cifar-10-batches-bin"), train=False)
    assert len(train) == 15 and len(test) == 3 and train.images.shape == (15, 3, 32, 32)
    imgs, labels = written["data_batch_2.bin"]
    x, y = train[3 + 1]                      # second record of the second file
    np.testing.assert_allclose(x, imgs[1] / 255.0, rtol=1e-6)
    assert y == labels[1]
    np.testing.assert_array_equal(test.labels, written["test_batch.bin"][1])
    # the red plane comes first in a record: channel 0 is bytes 1..1024
    raw = np.fromfile(str(tmp_path / "cifar-10-batches-bin" / "test_batch.bin"), np.uint8)
    np.testing.assert_array_equal(test.images[0, 0].ravel(), raw[1:1025])


def test_cifar10_errors(tmp_path, no_data_env):
    write_cifar(str(tmp_path))
    p = tmp_path / "data_batch_3.bin"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(ValueError, match="data_batch_3.bin holds 9218 bytes.*3073-byte"):
        D.CIFAR10(str(tmp_path))
    os.remove(tmp_path / "test_batch.bin")
    with pytest.raises(FileNotFoundError, match="test_batch.bin.*binary version"):
        D.CIFAR10(str(tmp_path), train=False)


# -- DataLoader -----------------------------------------------------------------------------
class PerSample(D.Dataset):
    """A dataset without get_batch: the loader's per-sample path."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((2, 3), i, np.float64), i * 10


def _tensor_ds(n):
    return D.TensorDataset(np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
                           np.arange(n))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), bs=st.integers(1, 12), shuffle=st.booleans(),
       drop_last=st.booleans(), seed=st.integers(0, 100))
def test_loader_covers_every_sample_once(n, bs, shuffle, drop_last, seed):
    loader = D.DataLoader(_tensor_ds(n), batch_size=bs, shuffle=shuffle, drop_last=drop_last,
                          seed=seed)
    expected_len = n // bs if drop_last else -(-n // bs)
    assert len(loader) == expected_len
    batches = list(loader)
    assert len(batches) == expected_len
    seen = []
    for x, y in batches:
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.shape == (len(y.numpy()), 3) and len(y.numpy()) <= bs
        np.testing.assert_array_equal(x.numpy()[:, 0], y.numpy())
        seen += y.numpy().tolist()
    if drop_last:
        assert all(len(b[1].numpy()) == bs for b in batches)
        assert len(seen) == (n // bs) * bs and len(set(seen)) == len(seen)
    else:
        assert sorted(seen) == list(range(n))
    if not shuffle:
        assert seen == list(range(len(seen)))


def test_loader_shuffle_reproducible_per_epoch():
    def epoch_labels(loader, epoch):
        loader.set_epoch(epoch)
        return np.concatenate([y.numpy() for _, y in loader])

    a = D.DataLoader(_tensor_ds(50), batch_size=8, shuffle=True, seed=3)
    b = D.DataLoader(_tensor_ds(50), batch_size=8, shuffle=True, seed=3)
    c = D.DataLoader(_tensor_ds(50), batch_size=8, shuffle=True, seed=4)
    e0, e1 = epoch_labels(a, 0), epoch_labels(a, 1)
    np.testing.assert_array_equal(e1, epoch_labels(b, 1))   # same (seed, epoch), any order
    np.testing.assert_array_equal(e0, epoch_labels(b, 0))
    np.testing.assert_array_equal(e0, epoch_labels(a, 0))   # replaying an epoch
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(e0, epoch_labels(c, 0))
    assert not np.array_equal(e0, np.arange(50))
    # the order is a function of (seed, epoch) only, not of the global RNG
    tk.manual_seed(123)
    np.testing.assert_array_equal(e1, epoch_labels(b, 1))


def test_loader_auto_epoch_and_resume():
    ds = _tensor_ds(30)
    auto = D.DataLoader(ds, batch_size=4, shuffle=True, seed=7)
    first = np.concatenate([y.numpy() for _, y in auto])
    second = np.concatenate([y.numpy() for _, y in auto])
    assert not np.array_equal(first, second)                 # a plain loop reshuffles
    fixed = D.DataLoader(ds, batch_size=4, shuffle=True, seed=7)
    fixed.set_epoch(1)
    np.testing.assert_array_equal(second, np.concatenate([y.numpy() for _, y in fixed]))
    # resuming at batch 5 of epoch 1 gives exactly the remaining batches
    tail = [y.numpy() for _, y in fixed.iter_from(5)]
    assert len(tail) == len(fixed) - 5
    np.testing.assert_array_equal(np.concatenate(tail), second[5 * 4:])
    assert list(fixed.iter_from(len(fixed))) == []
    with pytest.raises(ValueError, match="start_batch"):
        fixed.iter_from(len(fixed) + 1)


def test_loader_per_sample_path_matches_vectorised():
    loader = D.DataLoader(PerSample(7), batch_size=3, shuffle=True, seed=0)
    tensor_loader = D.DataLoader(_tensor_ds(7), batch_size=3, shuffle=True, seed=0)
    for (x, y), (_, y2) in zip(loader, tensor_loader):
        # dtypes are kept, as torch's default_collate does (float64 samples: float64 batch)
        assert x.dtype == np.float64 and x.shape == (len(y.numpy()), 2, 3)
        np.testing.assert_array_equal(y.numpy(), 10 * y2.numpy())
        np.testing.assert_array_equal(x.numpy()[:, 0, 0] * 10, y.numpy())


def test_loader_errors():
    ds = _tensor_ds(5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            D.DataLoader(ds, batch_size=bad)
    with pytest.raises(TypeError, match="map-style dataset"):
        D.DataLoader(iter(range(3)))
    with pytest.raises(ValueError, match="same first dimension"):
        D.TensorDataset(np.zeros((3, 2)), np.zeros(4))
    with pytest.raises(TypeError, match="dtype"):
        list(D.DataLoader(D.TensorDataset(np.array(["a", "b"])), batch_size=2))


def test_loader_cuda_device():
    try:
        tk.get_backend("cuda")
    except Exception as exc:  # no cuda backend in this environment
        pytest.skip(f"cuda backend unavailable: {exc}")
    x, y = next(iter(D.DataLoader(_tensor_ds(6), batch_size=4, device="cuda")))
    assert x.device == "cuda" and y.device == "cuda" and x.shape == (4, 3)
    np.testing.assert_array_equal(y.numpy(), np.arange(4))


def test_tensor_dataset_accepts_tensors():
    ds = D.TensorDataset(tk.arange(6).reshape(3, 2).float(), tk.tensor([0, 1, 0]))
    x, y = next(iter(D.DataLoader(ds, batch_size=3)))
    np.testing.assert_array_equal(x.numpy(), np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(y.numpy(), [0, 1, 0])


# -- transforms -----------------------------------------------------------------------------
def test_normalize_math():
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 5, 6)).astype(np.float32)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    out = D.Normalize(mean, std)(x)
    ref = (x.astype(np.float64) - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(D.Normalize(mean, std)(x[2]), ref[2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(D.Normalize(0.5, 0.25)(x), (x - 0.5) / 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="3 mean values for an input with 1 channels"):
        D.Normalize(mean, std)(x[:, :1])
    with pytest.raises(ValueError, match="std must be positive"):
        D.Normalize(0.0, 0.0)
    with pytest.raises(ValueError, match=r"\(C, H, W\) or a batch"):
        D.Normalize(0, 1)(x[0, 0])


def _windows(padded, th, tw):
    h, w = padded.shape[-2:]
    return [padded[..., i:i + th, j:j + tw] for i in range(h - th + 1) for j in range(w - tw + 1)]


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 3), h=st.integers(3, 9), w=st.integers(3, 9),
       pad=st.integers(0, 3), seed=st.integers(0, 1000))
def test_random_crop_is_a_window_of_the_padded_image(n, c, h, w, pad, seed):
    x = np.random.default_rng(seed).random((n, c, h, w)).astype(np.float32)
    th, tw = max(1, h - 1), w
    out = D.RandomCrop((th, tw), padding=pad, generator=seed)(x)
    assert out.shape == (n, c, th, tw)
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    for k in range(n):
        assert any(np.array_equal(out[k], win) for win in _windows(padded[k], th, tw))


def test_random_crop_reproducible_and_varied():
    x = np.random.default_rng(0).random((64, 1, 8, 8)).astype(np.float32)
    crop = D.RandomCrop(8, padding=2)
    tk.manual_seed(5)
    a = crop(x)
    tk.manual_seed(5)
    b = crop(x)
    np.testing.assert_array_equal(a, b)                     # manual_seed makes it repeatable
    assert not np.array_equal(a, crop(x))                   # and draws move on
    assert a.shape == x.shape and not np.array_equal(a, x)
    # padding zeros land in different places: the offsets differ between images
    assert len({tuple(np.flatnonzero(a[k, 0].ravel() == 0)[:3]) for k in range(64)}) > 1
    np.testing.assert_array_equal(D.RandomCrop(8)(x), x)    # full size, no padding: identity
    single = D.RandomCrop(6, padding=1, generator=1)(x[0])
    assert single.shape == (1, 6, 6)
    with pytest.raises(ValueError, match="larger than the padded image"):
        D.RandomCrop(11, padding=1)(x)


def test_random_horizontal_flip():
    x = np.random.default_rng(1).random((40, 2, 3, 5)).astype(np.float32)
    np.testing.assert_array_equal(D.RandomHorizontalFlip(1.0)(x), x[..., ::-1])
    np.testing.assert_array_equal(D.RandomHorizontalFlip(0.0)(x), x)
    out = D.RandomHorizontalFlip(0.5, generator=0)(x)
    flipped = [np.array_equal(out[k], x[k, ..., ::-1]) for k in range(40)]
    kept = [np.array_equal(out[k], x[k]) for k in range(40)]
    assert all(f or k for f, k in zip(flipped, kept)) and 5 < sum(flipped) < 35
    np.testing.assert_array_equal(D.RandomHorizontalFlip(1.0)(x[0]), x[0, ..., ::-1])
    with pytest.raises(ValueError, match="p must be in"):
        D.RandomHorizontalFlip(1.5)


def test_compose_and_batchwise_dataset_transform():
    imgs = np.random.default_rng(2).integers(0, 256, (10, 1, 6, 6), dtype=np.uint8)
    tf = D.Compose([D.ToFloat(), D.Normalize(0.5, 0.5)])
    np.testing.assert_allclose(tf(imgs), (imgs / 255.0 - 0.5) / 0.5, rtol=1e-5, atol=1e-6)
    ds = D.ArrayDataset(imgs, np.arange(10) % 3, transform=D.Normalize(0.5, 0.5))
    xb, yb = ds.get_batch(np.arange(10))
    np.testing.assert_allclose(xb, np.stack([ds[i][0] for i in range(10)]), rtol=1e-6)
    np.testing.assert_array_equal(yb, np.arange(10) % 3)
    with pytest.raises(ValueError, match="integer labels"):
        D.ArrayDataset(imgs, np.zeros(10, np.float32))


# -- subsets ----------------------------------------------------------------------------------
def test_class_subset_relabels():
    imgs = np.arange(12, dtype=np.uint8).reshape(12, 1, 1, 1)
    labels = np.array([0, 6, 3, 6, 0, 1, 6, 9, 0, 2, 6, 5])
    sub = D.class_subset(D.ArrayDataset(imgs, labels), classes=(0, 6))
    keep = np.flatnonzero((labels == 0) | (labels == 6))
    assert len(sub) == len(keep)
    np.testing.assert_array_equal(sub.labels, (labels[keep] == 6).astype(np.int64))
    x, y = sub[1]
    assert y == 1 and x[0, 0, 0] == np.float32(1 / 255)
    xb, yb = sub.get_batch(np.arange(len(sub)))
    np.testing.assert_array_equal(np.round(xb.ravel() * 255), keep)
    np.testing.assert_array_equal(yb, sub.labels)
    # the given order sets the new labels; subsets of subsets compose
    rev = D.class_subset(sub, classes=(1, 0))
    np.testing.assert_array_equal(rev.labels, 1 - sub.labels)
    # transform reaches the base dataset (the trainer sets it after subsetting)
    sub.transform = D.Normalize(0.0, 2.0)
    np.testing.assert_allclose(sub[0][0], imgs[keep[0]] / 255.0 / 2.0)
    with pytest.raises(ValueError, match=r"classes \[7\] do not occur"):
        D.class_subset(D.ArrayDataset(imgs, labels), classes=(0, 7))
    x, y = next(iter(D.DataLoader(sub, batch_size=4)))
    assert x.shape == (4, 1, 1, 1) and y.numpy().tolist() == sub.labels[:4].tolist()


def test_subset_and_random_split():
    ds = _tensor_ds(10)
    sub = D.Subset(ds, [9, 2, -1])
    assert len(sub) == 3 and [int(sub[i][1]) for i in range(3)] == [9, 2, 9]
    with pytest.raises(IndexError, match="out of range"):
        D.Subset(ds, [10])
    parts = D.random_split(ds, [6, 4], seed=1)
    assert all(isinstance(p, D.Subset) for p in parts)
    idx = np.concatenate([p.indices for p in parts])
    assert [len(p) for p in parts] == [6, 4] and sorted(idx.tolist()) == list(range(10))
    np.testing.assert_array_equal(idx, np.concatenate([p.indices for p in
                                                       D.random_split(ds, [6, 4], seed=1)]))
    with pytest.raises(ValueError, match="sum to"):
        D.random_split(ds, [6, 5])


# -- generated data -----------------------------------------------------------------------
def test_synthetic_images_reproducible_and_learnable():
    tr = D.SyntheticImages(600, shape=(1, 12, 12), num_classes=4, seed=3)
    again = D.SyntheticImages(600, shape=(1, 12, 12), num_classes=4, seed=3)
    te = D.SyntheticImages(200, shape=(1, 12, 12), num_classes=4, seed=3, train=False)
    np.testing.assert_array_equal(tr.images, again.images)
    assert tr.images.dtype == np.uint8 and tr.images.shape == (600, 1, 12, 12)
    assert not np.array_equal(tr.images[:200], te.images)
    assert set(np.unique(tr.labels)) == {0, 1, 2, 3}
    # learnable: 1-nearest-neighbour on the train split classifies the test split, and even
    # the nearest class mean (blurred by the shifts) is far above chance (0.25)
    xtr = tr.images.reshape(600, -1).astype(np.float64)
    xte = te.images.reshape(200, -1).astype(np.float64)
    dist = ((xte[:, None, :] - xtr[None]) ** 2).sum(-1)
    assert (tr.labels[dist.argmin(1)] == te.labels).mean() > 0.9
    means = np.stack([xtr[tr.labels == k].mean(0) for k in range(4)])
    pred = ((xte[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == te.labels).mean() > 0.5
    # and not trivially: the noise makes samples of one class differ
    assert len({tr.images[i].tobytes() for i in np.flatnonzero(tr.labels == 0)}) > 1


def test_load_dataset_factory(tmp_path, no_data_env):
    syn = D.load_dataset("synthetic", train=False, n=50)
    assert isinstance(syn, D.SyntheticImages) and len(syn) == 50 and syn[0][0].shape == (1, 28, 28)
    write_mnist(str(tmp_path))
    assert isinstance(D.load_dataset("mnist", root=str(tmp_path)), D.MNIST)
    assert isinstance(D.load_dataset("Fashion_MNIST", root=str(tmp_path)), D.FashionMNIST)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*fashion-mnist"):
        D.load_dataset("imagenet")


# -- the real Fashion-MNIST -------------------------------------------------------------------
@pytest.mark.skipif(not os.path.isfile(os.path.join(FMNIST, "t10k-labels-idx1-ubyte.gz")),
                    reason=f"Fashion-MNIST not installed in {FMNIST} "
                           "(apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist(no_data_env):
    train, test = D.FashionMNIST(train=True), D.FashionMNIST(train=False)
    assert len(train) == 60000 and len(test) == 10000
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == np.uint8
    for ds, per_class in ((train, 6000), (test, 1000)):
        assert ds.labels.min() == 0 and ds.labels.max() == 9
        np.testing.assert_array_equal(np.bincount(ds.labels), [per_class] * 10)
    # the published training-set pixel mean, for inputs scaled to [0, 1]
    assert abs(train.images.mean() / 255.0 - 0.2860) < 1e-3
    pair = D.class_subset(test, (0, 6))
    assert len(pair) == 2000 and np.bincount(pair.labels).tolist() == [1000, 1000]
    x, y = next(iter(D.DataLoader(train, batch_size=32, shuffle=True, seed=0)))
    assert x.shape == (32, 1, 28, 28) and 0.0 <= x.numpy().min() and x.numpy().max() <= 1.0
