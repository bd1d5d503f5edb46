"""The backend is the one place that knows the device (issue 10, item 3)."""
import pathlib
import re

import numpy as np

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
