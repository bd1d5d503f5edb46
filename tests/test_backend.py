"""The backend is the one place that knows the device (issue 10, item 3)."""
import pathlib
import re

import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import backend as B

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_cuda_under_the_simulator_is_its_own_class():
    cuda = B.get_backend("cuda")  # conftest sets NUMBA_ENABLE_CUDASIM=1
    assert type(cuda) is B.CUDASimBackend and cuda.is_simulator and cuda.xp is np
    assert type(B.get_backend("cpu")) is B.CPUBackend
    assert cuda.kernels.__name__ == "kernels.cuda"


def test_scatter_add_accumulates_repeated_indices():
    for name in ("cpu", "cuda"):
        b = B.get_backend(name)
        target = np.zeros(3)
        b.scatter_add_(target, np.array([0, 2, 0, 0]), np.array([1.0, 2.0, 3.0, 4.0]))
        np.testing.assert_array_equal(target, [8.0, 0.0, 2.0])


def test_random_draws_follow_the_seed_on_every_simulated_device():
    rng = np.random.default_rng(0)
    a = B.get_backend("cpu").random_normal((4,), np.float32, rng)
    b = B.get_backend("cuda").random_normal((4,), np.float32, np.random.default_rng(0))
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    u = B.get_backend("cpu").random_uniform((1000,), np.float64, rng, -2.0, 3.0)
    assert u.min() >= -2.0 and u.max() < 3.0
    i = B.get_backend("cpu").random_integers(0, 5, (100,), rng)
    assert i.dtype == np.int64 and i.min() >= 0 and i.max() < 5


def test_to_device_copies_and_its_gradient_comes_back():
    x = tk.randn(3, requires_grad=True)
    y = x.to("cuda")
    assert y.device == "cuda" and not np.shares_memory(y._array, x._array)
    (y * 2).sum().backward()
    assert x.grad.device == "cpu"
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])


def test_no_device_tests_outside_the_backend():
    """Functions, Tensor and io never ask which array library they run on."""
    pattern = re.compile(r"xp\.__name__|import cupy|xp is (not )?np")
    for path in ["tinygrad_k/ops", "tinygrad_k/tensor.py", "tinygrad_k/io.py",
                 "tinygrad_k/random.py", "tinygrad_k/optim"]:
        p = ROOT / path
        for f in ([p] if p.is_file() else sorted(p.rglob("*.py"))):
            assert not pattern.search(f.read_text()), f"{f} tests the device itself"


def test_cuda_cross_entropy_counts_on_the_device_and_reports_bad_targets_at_the_next_read():
    """On the GPU the loss neither waits for the device to count its rows nor to check its
    targets (the simulator behaves the same): the mean over the rows that count is a
    device value and equals the cpu one (ignored rows too, all ignored -> NaN, as
    PyTorch); a target outside [0, C) makes the loss and its row's gradient NaN at once
    and raises IndexError at the next read from the device, after which the device is
    usable again."""
    import tinygrad_k as tk
    import tinygrad_k.nn.functional as F

    rng = np.random.default_rng(0)
    z0 = rng.standard_normal((5, 4)).astype(np.float32)
    for t in ([0, 3, 1, 2, 2], [0, -100, 1, -100, 3], [-100] * 5):
        for reduction in ("mean", "sum", "none"):
            got, want = [], []
            for device, out in (("cuda", got), ("cpu", want)):
                z = tk.tensor(z0, device=device, requires_grad=True)
                loss = F.cross_entropy(z, tk.tensor(t, device=device), reduction=reduction,
                                       label_smoothing=0.1 if reduction == "sum" else 0.0)
                loss.sum().backward()
                out += [loss.numpy(), z.grad.numpy()]
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7, equal_nan=True)
    cuda = B.get_backend("cuda")
    z = tk.tensor(z0, device="cuda", requires_grad=True)
    loss = F.cross_entropy(z, tk.tensor([0, 4, 1, 2, 2], device="cuda"))  # no error yet
    loss.backward()
    assert len(cuda._pending_checks) == 1
    with pytest.raises(IndexError, match="target 4 is out of range for 4 classes"):
        loss.item()
    assert not cuda._pending_checks
    grad = z.grad.numpy()
    assert np.isnan(grad[1]).all() and np.isfinite(grad[[0, 2, 3, 4]]).all()
    F.cross_entropy(z, tk.tensor([0, 1, 1, -5, 2], device="cuda"))
    with pytest.raises(IndexError, match="target -5 is out of range"):
        tk.cuda.synchronize()
    assert F.cross_entropy(z, tk.tensor([0, 1, 1, 3, 2], device="cuda")).item() > 0


def test_deferred_checks_are_made_once_too_many_are_pending(monkeypatch):
    cuda = B.get_backend("cuda")
    monkeypatch.setattr(cuda, "MAX_PENDING_CHECKS", 3)
    seen = []
    cuda.defer_check(np.bool_(False), lambda: seen.append("a"))
    cuda.defer_check(np.bool_(True), lambda: seen.append("b"))
    assert seen == [] and len(cuda._pending_checks) == 2
    cuda.defer_check(np.bool_(True), lambda: seen.append("c"))
    assert seen == ["b", "c"] and cuda._pending_checks == []
