"""tinygrad_k.data's DataLoader, samplers and dataset combinators against torch.utils.data:
the same arguments, structure, lengths and errors; worker processes giving the same
batches as the main process, re-raising a worker's error and leaving no process behind."""
import collections
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import data as D

torch = pytest.importorskip("torch")
tud = torch.utils.data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- helpers -----------------------------------------------------------------------------------
def _tree(x):
    """A batch as plain Python/NumPy structure with type tags, for torch/ours comparison."""
    if isinstance(x, torch.Tensor):
        return ("T", str(x.dtype).replace("torch.", ""), x.numpy().tolist())
    if isinstance(x, tk.Tensor):
        return ("T", str(x.dtype), x.numpy().tolist())
    if isinstance(x, dict):
        return {k: _tree(v) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return (type(x).__name__, [_tree(v) for v in x])
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [_tree(v) for v in x])
    return x


Point = collections.namedtuple("Point", "x y")


class Samples(D.Dataset):
    """Per-sample dataset (no get_batch) whose sample is built by ``make(i)``."""

    def __init__(self, n, make):
        self.n, self.make = n, make

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.make(i)


def _rich(i):
    return {"img": np.full((2, 2), i, np.float32), "label": i, "w": 0.5 * i,
            "name": f"s{i}", "flag": i % 2 == 0, "pair": (i, np.int32(i)),
            "pt": Point(i, float(i)), "lst": [i, i + 1]}


def _make_square(i):
    return np.full(3, i, np.float32), i


class Failing(D.Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, i):
        if i == 13:
            raise ValueError(f"bad sample {i}")
        return np.float32(i)


class Slow(D.Dataset):
    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        time.sleep(0.05)
        return np.float32(i)


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] in ("Z", "X")  # a zombie is dead
    except FileNotFoundError:
        return True


def _wait_gone(pids, seconds=10.0):
    end = time.time() + seconds
    while time.time() < end and not all(_gone(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if not _gone(p)]


# -- collate --------------------------------------------------------------------------------
def test_default_collate_matches_torch():
    batch = [_rich(i) for i in range(3)]
    ours, ref = D.default_collate(batch), tud.default_collate(batch)
    assert _tree(ours) == _tree(ref)
    for b in ([1, 2, 3], [1.5, 2.0], [True, False], ["a", "b"], [(1, "x"), (2, "y")],
              [np.arange(3), np.arange(3)], [np.float32(1), np.float32(2)],
              [tk.tensor([1.0, 2.0]), tk.tensor([3.0, 4.0])]):
        tb = [torch.tensor(x.numpy()) if isinstance(x, tk.Tensor) else x for x in b]
        assert _tree(D.default_collate(b)) == _tree(tud.default_collate(tb)), b
    assert _tree(D.default_convert(_rich(2))) == _tree(tud.default_convert(_rich(2)))


def test_default_collate_errors_as_torch():
    with pytest.raises(RuntimeError, match="equal size"):
        D.default_collate([[1, 2], [1]])
    with pytest.raises(TypeError, match="default_collate: batch must contain"):
        D.default_collate([object(), object()])
    with pytest.raises(TypeError, match="dtype"):
        D.default_collate([np.array(["a"]), np.array(["b"])])


def test_loader_batches_match_torch_loader():
    ds = Samples(7, _rich)
    for kw in ({"batch_size": 3}, {"batch_size": 3, "drop_last": True}, {"batch_size": None}):
        ours = [_tree(b) for b in D.DataLoader(ds, **kw)]
        ref = [_tree(b) for b in tud.DataLoader(ds, **kw)]
        assert ours == ref, kw
        assert len(D.DataLoader(ds, **kw)) == len(tud.DataLoader(ds, **kw))


def test_fast_path_equals_per_sample_path():
    x = np.random.default_rng(0).random((11, 2, 3))
    y = np.arange(11)
    arr = D.TensorDataset(x, y)
    per = Samples(11, lambda i: (x[i], y[i]))
    for kw in ({"batch_size": 4}, {"batch_size": 4, "drop_last": True}):
        a = [_tree(b) for b in D.DataLoader(arr, **kw)]
        assert a == [_tree(b) for b in D.DataLoader(per, **kw)]
        assert a == [_tree(b) for b in tud.DataLoader(per, **kw)]


# -- samplers --------------------------------------------------------------------------------
def test_samplers_structure_as_torch():
    src = list(range(10))
    assert list(D.SequentialSampler(src)) == list(tud.SequentialSampler(src))
    for kw in ({}, {"num_samples": 25}, {"num_samples": 4}, {"replacement": True,
                                                              "num_samples": 30}):
        ours = list(D.RandomSampler(src, **kw))
        ref = list(tud.RandomSampler(src, **kw))
        assert len(ours) == len(ref) == len(D.RandomSampler(src, **kw))
        assert all(isinstance(i, int) and 0 <= i < 10 for i in ours)
        if not kw.get("replacement"):
            # full permutations first, then the head of one more (torch's construction)
            k = len(ours)
            for s in range(0, k - k % 10, 10):
                assert sorted(ours[s:s + 10]) == src
            assert len(set(ours[k - k % 10:])) == k % 10
    sub = [3, 7, 9, 11]
    assert sorted(D.SubsetRandomSampler(sub)) == sorted(tud.SubsetRandomSampler(sub)) == sub
    w = [0.0, 1.0, 0.0, 3.0]
    draws = list(D.WeightedRandomSampler(w, 200))
    assert len(draws) == 200 and set(draws) <= {1, 3} and draws.count(3) > draws.count(1)
    assert sorted(D.WeightedRandomSampler(w, 2, replacement=False)) == [1, 3]
    for bs, dl in ((3, False), (3, True), (5, False), (20, True)):
        ours = list(D.BatchSampler(D.SequentialSampler(src), bs, dl))
        assert ours == list(tud.BatchSampler(tud.SequentialSampler(src), bs, dl))
        assert len(D.BatchSampler(src, bs, dl)) == len(tud.BatchSampler(src, bs, dl))
    # a plain iterable sampler goes through the loop path
    assert list(D.BatchSampler(range(5), 2, False)) == [[0, 1], [2, 3], [4]]


def test_sampler_determinism_and_generator():
    src = range(50)
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    a, b = list(D.RandomSampler(src, generator=g1)), list(D.RandomSampler(src, generator=g2))
    assert a == b and a != list(src)
    assert list(D.RandomSampler(src, generator=g1)) != a      # the generator's state advances
    tk.manual_seed(3)
    c = list(D.RandomSampler(src))
    d = list(D.RandomSampler(src))
    tk.manual_seed(3)
    assert list(D.RandomSampler(src)) == c and c != d         # global seed, as torch
    tk.manual_seed(3)
    e = list(D.WeightedRandomSampler([1, 2, 3], 20))
    tk.manual_seed(3)
    assert list(D.WeightedRandomSampler([1, 2, 3], 20)) == e


def test_sampler_errors_as_torch():
    cases = [
        (lambda m: m.RandomSampler(range(3), replacement=1), TypeError, "replacement"),
        (lambda m: m.RandomSampler(range(3), num_samples=0), ValueError, "num_samples"),
        (lambda m: m.WeightedRandomSampler([1, 2], 0), ValueError, "num_samples"),
        (lambda m: m.WeightedRandomSampler([1, 2], 2, replacement=0), ValueError,
         "replacement"),
        (lambda m: m.WeightedRandomSampler([[1, 2]], 2), ValueError, "1d"),
        (lambda m: m.BatchSampler(range(3), 0, False), ValueError, "batch_size"),
        (lambda m: m.BatchSampler(range(3), True, False), ValueError, "batch_size"),
        (lambda m: m.BatchSampler(range(3), 2, 1), ValueError, "drop_last"),
        (lambda m: m.DistributedSampler(range(3), num_replicas=2, rank=2), ValueError,
         "Invalid rank"),
    ]
    for make, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            make(tud)
        with pytest.raises(exc, match=msg):
            make(D)
    with pytest.raises(RuntimeError, match="without replacement"):
        list(D.WeightedRandomSampler([0, 1, 1], 3, replacement=False))


@pytest.mark.parametrize("n,w,drop", [(10, 3, False), (10, 3, True), (9, 3, False),
                                      (2, 4, False), (11, 2, True)])
def test_distributed_sampler_as_torch(n, w, drop):
    for shuffle in (False, True):
        ours = [list(D.DistributedSampler(range(n), w, r, shuffle=shuffle, drop_last=drop))
                for r in range(w)]
        ref = [list(tud.DistributedSampler(range(n), w, r, shuffle=shuffle, drop_last=drop))
               for r in range(w)]
        assert [len(o) for o in ours] == [len(r) for r in ref] == \
            [len(D.DistributedSampler(range(n), w, r, drop_last=drop)) for r in range(w)]
        if not shuffle:
            assert ours == ref
        flat = sorted(sum(ours, []))
        assert (set(flat) == set(range(n))) if not drop else len(set(flat)) == len(flat)
    s = D.DistributedSampler(range(n), w, 0, seed=1)
    e0 = list(s)
    assert list(s) == e0
    s.set_epoch(1)
    assert (list(s) != e0) or n < 3
    with pytest.raises(RuntimeError, match="not initialized"):
        D.DistributedSampler(range(3))


def test_distributed_sampler_ranks_cover_global_batches():
    """W ranks at batch B/W hold, in batch j, exactly positions [jB, (j+1)B) of the seeded
    single-process order: the basis of the DDP exactness test."""
    n, B, W = 37, 8, 2
    single = D.DataLoader(D.TensorDataset(np.arange(n)), batch_size=B, shuffle=True, seed=4,
                          drop_last=True)
    single.set_epoch(2)
    ranks = []
    for r in range(W):
        s = D.DistributedSampler(range(n), W, r, shuffle=True, seed=4, drop_last=True)
        s.set_epoch(2)
        ranks.append(list(D.BatchSampler(s, B // W, True)))
    for j, (y,) in enumerate(single):
        assert sorted(y.numpy().tolist()) == sorted(ranks[0][j] + ranks[1][j])


# -- the loader's arguments --------------------------------------------------------------------
def test_loader_argument_errors_as_torch():
    ds = list(range(10))
    bs = tud.BatchSampler(tud.SequentialSampler(ds), 2, False)
    cases = [
        dict(batch_sampler=bs, batch_size=2), dict(batch_sampler=bs, shuffle=True),
        dict(batch_sampler=bs, sampler=tud.SequentialSampler(ds)),
        dict(batch_sampler=bs, drop_last=True), dict(sampler=[0, 1], shuffle=True),
        dict(batch_size=None, drop_last=True), dict(num_workers=-1), dict(timeout=-1),
        dict(prefetch_factor=2), dict(persistent_workers=True),
        dict(multiprocessing_context="fork"), dict(num_workers=1, multiprocessing_context="x"),
    ]
    for kw in cases:
        with pytest.raises(ValueError) as ref:
            tud.DataLoader(ds, **kw)
        with pytest.raises(ValueError) as ours:
            D.DataLoader(ds, **kw)
        first = lambda e: str(e.value).split(",")[0].split("[")[0]  # noqa: E731
        assert first(ours) == first(ref), kw
    loader = D.DataLoader(ds, batch_size=2)
    with pytest.raises(ValueError, match="batch_size attribute should not be set"):
        loader.batch_size = 3
    with pytest.warns(UserWarning, match="pin_memory"):
        D.DataLoader(ds, pin_memory=True)


def test_loader_with_sampler_and_batch_sampler():
    ds = Samples(10, _make_square)
    idx = [9, 0, 4]
    got = [b[1].numpy().tolist() for b in D.DataLoader(ds, batch_size=2, sampler=idx)]
    assert got == [[9, 0], [4]]
    got = [b[1].numpy().tolist() for b in D.DataLoader(ds, batch_sampler=[[1, 2], [7]])]
    assert got == [[1, 2], [7]]
    loader = D.DataLoader(ds, batch_size=3, shuffle=True, generator=np.random.default_rng(1))
    assert isinstance(loader.sampler, D.RandomSampler) and len(loader) == 4
    assert sorted(sum((b[1].numpy().tolist() for b in loader), [])) == list(range(10))
    coll = D.DataLoader(ds, batch_size=4, collate_fn=lambda b: [s[1] for s in b])
    assert list(coll) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


# -- worker processes ---------------------------------------------------------------------------
def _seed_echo(i):
    info = D.get_worker_info()
    return np.int64(-1 if info is None else info.id)


@pytest.mark.parametrize("kind", ["fast", "per_sample", "custom_collate", "no_batch"])
def test_workers_give_the_same_batches(kind):
    x = np.arange(46, dtype=np.float32).reshape(23, 2)
    if kind == "fast":
        ds, kw = D.TensorDataset(x, np.arange(23)), {"batch_size": 4}
    elif kind == "per_sample":
        ds, kw = Samples(23, _rich), {"batch_size": 4, "drop_last": True}
    elif kind == "custom_collate":
        ds, kw = Samples(23, _make_square), {"batch_size": 5, "collate_fn": _sum_collate}
    else:
        ds, kw = Samples(23, _make_square), {"batch_size": None}
    ref = [_tree(b) for b in D.DataLoader(ds, shuffle=True, seed=2, **kw)]
    for workers in (1, 3):
        loader = D.DataLoader(ds, shuffle=True, seed=2, num_workers=workers, **kw)
        assert [_tree(b) for b in loader] == ref
        assert len(loader) == len(ref)


def _sum_collate(batch):
    return tk.tensor(np.stack([s[0] for s in batch]).sum(0)), [s[1] for s in batch]


def test_workers_seeded_and_informed():
    seeds = []

    ds = Samples(12, _seed_echo)
    out = [b.numpy().tolist() for b in D.DataLoader(ds, batch_size=3, num_workers=2,
                                                    worker_init_fn=seeds.append)]
    assert out == [[0] * 3, [1] * 3, [0] * 3, [1] * 3]      # batch k goes to worker k % 2
    assert [b.numpy().tolist() for b in D.DataLoader(ds, batch_size=3)] == [[-1] * 3] * 4


def test_persistent_workers_reuse_processes():
    ds = Samples(9, _make_square)
    loader = D.DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True,
                          shuffle=True, seed=0)
    it = iter(loader)
    pids = it.worker_pids
    e0 = [b[1].numpy().tolist() for b in it]
    it2 = iter(loader)
    next(it2)                                   # abandon an epoch in the middle
    e2 = [b[1].numpy().tolist() for b in iter(loader)]
    assert it2 is it and loader._iterator.worker_pids == pids
    assert sorted(sum(e0, [])) == sorted(sum(e2, [])) == list(range(9)) and e0 != e2
    loader._iterator._shutdown_workers()
    assert _wait_gone(pids) == []


def test_worker_error_reraised_with_worker_id_and_no_orphans():
    loader = D.DataLoader(Failing(), batch_size=2, num_workers=2)
    it = iter(loader)
    pids = it.worker_pids
    got = []
    with pytest.raises(ValueError, match=r"(?s)Caught ValueError in DataLoader worker "
                                         r"process 0.*bad sample 13"):
        for b in it:
            got.append(b.numpy().tolist())
    assert got == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]   # in order up to it
    assert _wait_gone(pids) == []
    with pytest.raises(ValueError, match="bad sample 13"):  # the same error without workers
        list(D.DataLoader(Failing(), batch_size=2))


def test_worker_init_fn_error_reraised():
    with pytest.raises(ZeroDivisionError, match="worker process"):
        list(D.DataLoader(Samples(4, _make_square), batch_size=2, num_workers=1,
                          worker_init_fn=lambda wid: 1 / 0))


def test_garbage_collected_iterator_stops_its_workers():
    it = iter(D.DataLoader(Slow(), batch_size=2, num_workers=2))
    next(it)
    pids = it.worker_pids
    del it
    gc.collect()
    assert _wait_gone(pids) == []


def test_timeout_raises_and_stops_workers():
    it = iter(D.DataLoader(Slow(), batch_size=40, num_workers=1, timeout=0.3))
    pids = it.worker_pids
    with pytest.raises(RuntimeError, match="timed out after 0.3 seconds"):
        next(it)
    assert _wait_gone(pids) == []


_SCRIPT = textwrap.dedent("""
    import faulthandler, os, signal, sys, time
    # SIGUSR1 prints every thread's stack (the workers inherit it through fork): what the
    # test shows if this process or a worker does not exit
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Ctrl-C as in a terminal: a suite started in the background by a non-interactive
    # shell inherits SIGINT ignored, and Python keeps an inherited SIG_IGN (then the
    # signal below did nothing and the loader ran on: both fresh-clone runs of 2026-11-26)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import numpy as np
    sys.path.insert(0, {root!r})
    from tinygrad_k import data as D

    class Slow(D.Dataset):
        def __len__(self):
            return 10_000
        def __getitem__(self, i):
            time.sleep(0.05)
            return np.float32(i)

    it = iter(D.DataLoader(Slow(), batch_size=2, num_workers=2))
    next(it)
    print(" ".join(map(str, it.worker_pids)), flush=True)
    if sys.argv[1] == "die":
        os.kill(os.getpid(), 9)               # no cleanup at all: workers must notice
    for _ in it:
        pass
""")


def _stacks_and_kill(proc, pids):
    """Each live process's thread stacks (faulthandler, SIGUSR1) on proc's stderr, then
    every one killed; proc's (stdout, stderr)."""
    for pid in [proc.pid] + pids:  # one at a time: they share one stderr
        if not _gone(pid):
            os.kill(pid, signal.SIGUSR1)
            time.sleep(0.5)
    for pid in [proc.pid] + pids:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
    return proc.communicate(timeout=10)


@pytest.mark.parametrize("how", ["sigint", "die"])
def test_ctrl_c_or_killed_parent_leaves_no_workers(tmp_path, how):
    script = tmp_path / "loader_child.py"
    script.write_text(_SCRIPT.format(root=ROOT))
    proc = subprocess.Popen([sys.executable, str(script), how], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    if how == "sigint":
        proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        _, err = _stacks_and_kill(proc, pids)
        pytest.fail(f"the loader process ({proc.pid}) or its workers {pids} did not exit "
                    f"60 s after {how}; poll: {proc.poll()}; their stacks:\n{err[-12000:]}")
    if how == "sigint":
        assert "KeyboardInterrupt" in err and proc.returncode != 0
    assert _wait_gone(pids) == [], f"orphaned DataLoader workers: {pids}"


# -- datasets ----------------------------------------------------------------------------------
def test_concat_dataset_as_torch():
    a, b = Samples(3, _make_square), D.TensorDataset(np.full((4, 3), 7, np.float32),
                                                     np.arange(10, 14))
    ours, ref = D.ConcatDataset([a, b]), tud.ConcatDataset([a, b])
    assert len(ours) == len(ref) == 7 and ours.cumulative_sizes == ref.cumulative_sizes
    for i in range(-7, 7):
        (xo, yo), (xr, yr) = ours[i], ref[i]
        np.testing.assert_array_equal(xo, xr)
        assert xo.dtype == xr.dtype and yo == yr
    with pytest.raises(ValueError, match="absolute value of index"):
        ours[-8]
    with pytest.raises(ValueError, match="empty"):
        D.ConcatDataset([])
    sum_ds = a + b
    assert isinstance(sum_ds, D.ConcatDataset) and len(sum_ds) == 7
    # the vectorised get_batch puts rows back in the asked order
    loader = D.DataLoader(ours, batch_size=7, sampler=[6, 0, 3, 2, 5])
    x, y = next(iter(loader))
    assert y.numpy().tolist() == [13, 0, 10, 2, 12]


def test_random_split_lengths_fractions_generator():
    ds = list(range(10))
    for lengths in ([3, 7], [0.3, 0.7], [0.25, 0.25, 0.5], [1 / 3] * 3):
        ours = [len(s) for s in D.random_split(ds, lengths)]
        ref = [len(s) for s in tud.random_split(ds, lengths)]
        assert ours == ref, lengths
    parts = D.random_split(ds, [0.5, 0.5], generator=np.random.default_rng(0))
    again = D.random_split(ds, [0.5, 0.5], generator=np.random.default_rng(0))
    assert [list(p.indices) for p in parts] == [list(p.indices) for p in again]
    assert sorted(np.concatenate([p.indices for p in parts]).tolist()) == ds
    tk.manual_seed(1)
    g1 = [list(p.indices) for p in D.random_split(ds, [5, 5])]
    tk.manual_seed(1)
    assert g1 == [list(p.indices) for p in D.random_split(ds, [5, 5])]
    for bad in ([3, 3], [0.5, 0.6], [3, 8]):
        with pytest.raises(ValueError):
            tud.random_split(ds, bad)
        with pytest.raises(ValueError, match="lengths"):
            D.random_split(ds, bad)
