"""kernels.cuda vs kernels.reference. Without a GPU this runs the same Numba kernels in the
CUDA simulator (tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1), so shapes stay tiny; the
outputs are poisoned with NaN before every launch so an unwritten element fails."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_k as tk
from kernels import reference

cuda_mod = pytest.importorskip("kernels.cuda")
from numba import config  # noqa: E402

SIM = bool(config.ENABLE_CUDASIM)
if not SIM:
    try:
        import cupy as xp  # noqa: F401
    except ImportError:  # pragma: no cover
        pytest.skip("no CUDA simulator and no CuPy", allow_module_level=True)
else:
    xp = np

SMALL_TILES = [(8, 8, 4, 2, 2), (4, 8, 2, 1, 2), (8, 4, 3, 2, 1)]
SET = settings(max_examples=15 if SIM else 40, deadline=None)


@pytest.fixture(autouse=True)
def poisoned_empty(monkeypatch):
    """Every array the kernels allocate starts as NaN (unwritten elements show up) and the
    GEMM tile goes back to production after each test."""
    real_empty = xp.empty

    def empty(shape, dtype=float, **kw):
        out = real_empty(shape, dtype=dtype, **kw)
        if np.dtype(dtype).kind == "f":
            out.fill(np.nan)
        elif np.dtype(dtype).kind == "i":
            out.fill(-7)
        return out

    monkeypatch.setattr(xp, "empty", empty)
    yield
    cuda_mod.set_tile(*cuda_mod.DEFAULT_TILE)


def on_device(a):
    return xp.asarray(a)


def host(a):
    return a if isinstance(a, np.ndarray) else a.get()


def rel(a, b):
    a, b = host(a).astype(np.float64), np.asarray(b, np.float64)
    assert not np.isnan(a).any(), "an output element was never written"
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


dims = st.sampled_from([1, 2, 3, 5, 7, 11])


@SET
@given(dims, dims, dims, st.booleans(), st.booleans(), st.sampled_from(SMALL_TILES),
       st.integers(0, 2), st.integers(0, 2 ** 31))
def test_matmul(m, k, n, ta, tb, tile, batch, seed):
    cuda_mod.set_tile(*tile)
    rng = np.random.default_rng(seed)
    lead = (batch,) if batch else ()
    a = rng.standard_normal(lead + ((k, m) if ta else (m, k))).astype(np.float32)
    b = rng.standard_normal(lead + ((n, k) if tb else (k, n))).astype(np.float32)
    out = cuda_mod.matmul(on_device(a), on_device(b), ta, tb)
    assert out.shape == lead + (m, n)
    assert rel(out, reference.matmul(a, b, ta, tb)) < 1e-5


def test_matmul_production_tile_on_one_block():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((13, 17)).astype(np.float32)
    b = rng.standard_normal((17, 7)).astype(np.float32)
    assert rel(cuda_mod.matmul(on_device(a), on_device(b)), a.astype(np.float64) @ b) < 1e-5


@st.composite
def conv_case(draw):
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = draw(st.integers(max(1, k[0] - 2 * p[0]), 7))
    w = draw(st.integers(max(1, k[1] - 2 * p[1]), 7))
    return (n, c, h, w), (o, c) + k, s, p


@SET
@given(conv_case(), st.sampled_from(SMALL_TILES), st.integers(0, 2 ** 31))
def test_conv2d(case, tile, seed):
    cuda_mod.set_tile(*tile)
    xs, ws, s, p = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    y = cuda_mod.conv2d_forward(on_device(x), on_device(w), s, p)
    assert rel(y, reference.conv2d_forward(x, w, s, p)) < 1e-5
    dy = rng.standard_normal(y.shape).astype(np.float32)
    assert rel(cuda_mod.conv2d_backward_input(on_device(dy), on_device(w), xs, s, p),
               reference.conv2d_backward_input(dy, w, xs, s, p)) < 1e-5
    assert rel(cuda_mod.conv2d_backward_weight(on_device(dy), on_device(x), ws, s, p),
               reference.conv2d_backward_weight(dy, x, ws, s, p)) < 1e-5


@SET
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 7), st.integers(1, 7),
       st.integers(1, 4), st.integers(1, 3), st.integers(0, 2 ** 31))
def test_pooling(n, c, h, w, k, s, seed):
    k = min(k, h, w)
    p = (seed % 2) * (k // 2)
    xs = (n, c, h, w)
    x = np.random.default_rng(seed).standard_normal(xs).astype(np.float32)
    y, arg = cuda_mod.maxpool2d_forward(on_device(x), k, s, p)
    y_ref, arg_ref = reference.maxpool2d_forward(x, k, s, p)
    np.testing.assert_array_equal(host(y), y_ref)
    np.testing.assert_array_equal(host(arg), arg_ref)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(np.float32)
    want = reference.maxpool2d_backward(dy, arg_ref, xs)
    assert rel(cuda_mod.maxpool2d_backward(on_device(dy), arg, xs), want) < 1e-6
    assert rel(cuda_mod.maxpool2d_backward(on_device(dy), arg, xs, k, s, p), want) < 1e-6
    assert rel(cuda_mod.avgpool2d_forward(on_device(x), k, s, p),
               reference.avgpool2d_forward(x, k, s, p)) < 1e-6
    assert rel(cuda_mod.avgpool2d_backward(on_device(dy), xs, k, s, p),
               reference.avgpool2d_backward(dy, xs, k, s, p)) < 1e-6


def test_errors_name_the_primitive():
    x = on_device(np.zeros((1, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match=r"conv2d_forward.*3 channels"):
        cuda_mod.conv2d_forward(x, on_device(np.zeros((2, 4, 3, 3), np.float32)))
    with pytest.raises(ValueError, match="matmul"):
        cuda_mod.matmul(on_device(np.zeros((2, 3), np.float32)),
                        on_device(np.zeros((4, 2), np.float32)))
    with pytest.raises(ValueError, match="set_tile"):
        cuda_mod.set_tile(8, 8, 4, 3, 2)


def test_framework_dispatches_to_the_cuda_kernels(monkeypatch):
    """A small CNN trained one step on "cuda" gives the cpu step's loss and gradients, and
    conv/pool/matmul really went through kernels.cuda."""
    from tinygrad_k import nn

    cuda_mod.set_tile(8, 8, 4, 2, 2)
    calls = []
    for name in ("conv2d_forward", "conv2d_backward_weight", "maxpool2d_forward", "matmul"):
        real = getattr(cuda_mod, name)
        monkeypatch.setattr(cuda_mod, name,
                            lambda *a, _r=real, _n=name, **k: (calls.append(_n), _r(*a, **k))[1])
    tk.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(2 * 3 * 3, 3))
    x, y = tk.randn(2, 1, 6, 6), tk.tensor([0, 2])
    loss = nn.CrossEntropyLoss()(model(x), y)
    loss.backward()
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    model.to("cuda")
    assert model[0].weight.device == "cuda"
    loss_gpu = nn.CrossEntropyLoss()(model(x.to("cuda")), y.to("cuda"))
    loss_gpu.backward()
    assert loss_gpu.device == "cuda"
    assert abs(loss_gpu.item() - loss.item()) < 1e-5
    for g, p in zip(grads, model.parameters()):
        assert rel(p.grad.numpy(), g) < 1e-5
    assert {"conv2d_forward", "conv2d_backward_weight", "maxpool2d_forward",
            "matmul"} <= set(calls)
    model.cpu()
    assert model[0].weight.device == "cpu"


@pytest.mark.skipif(not SIM, reason="a workaround for Numba's CUDA simulator")
def test_simulator_shared_arrays_are_one_per_line_under_contention(monkeypatch):
    """kernels.cuda makes the simulator's shared-array creation atomic: 64 threads that
    reach the same cuda.shared.array line together must all get the same array."""
    import threading
    import time

    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    # a slow allocation widens the race window from microseconds to a millisecond: with
    # numba's unlocked version nearly every thread then creates its own array
    real_empty = np.empty

    def slow_empty(*args, **kwargs):
        time.sleep(1e-3)
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(np, "empty", slow_empty)
    shared = FakeCUDAShared(0)
    start = threading.Barrier(64)
    got = []

    def thread():
        start.wait()
        got.append(shared.array((8, 8), np.float32))

    threads = [threading.Thread(target=thread) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 64 and all(a is got[0] for a in got)
