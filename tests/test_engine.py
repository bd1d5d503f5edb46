"""The backward engine and the API edge: accumulation, retain_graph, freed graphs,
non-scalar outputs, no_grad, deep graphs, devices, dtypes and error messages."""
import sys

import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k.nn import functional as F


def test_grad_accumulates_like_pytorch():
    x = tk.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 + 3, 4 + 3])
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2, 4])


def test_diamond_graph_sums_both_paths():
    x = tk.tensor(3.0, requires_grad=True)
    a = x * 2
    y = a * a + a  # dy/dx = (2a + 1) * 2 = 26
    y.backward()
    assert x.grad.item() == pytest.approx(26.0)


def test_retain_graph_and_freed_graph_error():
    x = tk.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * (np.exp([1, 2]) * (1 + np.array([1, 2]))),
                               rtol=1e-6)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_non_scalar_needs_a_gradient():
    x = tk.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"scalar.*\(3,\)"):
        (x * 2).backward()
    (x * 2).backward(tk.ones(3))
    np.testing.assert_allclose(x.grad.numpy(), 2.0)
    with pytest.raises(RuntimeError, match="does not match"):
        (x * 2).backward(tk.ones(4))


def test_no_grad_records_nothing():
    x = tk.randn(3, requires_grad=True)
    with tk.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()

    @tk.no_grad()
    def f(t):
        return t * 3

    assert not f(x).requires_grad
    assert (x * 3).requires_grad


def test_ten_thousand_op_chain_does_not_recurse():
    x = tk.tensor(1.0, dtype=tk.float64, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # the engine must not need the stack
    try:
        y.backward()
    finally:
        sys.setrecursionlimit(limit)
    assert x.grad.item() == pytest.approx(1.0001 ** 10_000)


def test_retain_grad_and_leaf_flags():
    x = tk.randn(2, 2, requires_grad=True)
    h = (x * 2).retain_grad()
    h.relu().sum().backward()
    assert h.grad is not None and x.is_leaf and not h.is_leaf
    assert h.grad_fn.name() == "MulBackward0" and h.grad_fn.fn.__name__ == "Mul"


def test_backward_trace_records_every_node():
    x = tk.randn(4, 3, requires_grad=True)
    w = tk.randn(3, 2, requires_grad=True)
    records = []
    (x @ w).relu().sum().backward(trace=records)
    assert [r["op"] for r in records] == ["Sum", "ReLU", "MatMul"]
    assert records[-1]["input_shapes"] == [(4, 3), (3, 2)]
    assert all(r["grad_output_norm"] >= 0 for r in records)


def test_float32_stays_float32_and_scalars_do_not_upcast():
    x = tk.randn(3, requires_grad=True)
    for y in (x * 2.5, 2.5 * x, x / 3, x ** 2, x - 1, x.exp() + 1e-3, x.mean(), x.softmax()):
        assert y.dtype == np.float32
    y = (x * 2.5).sum()
    y.backward()
    assert x.grad.dtype == np.float32
    assert tk.tensor([1, 2]).dtype == np.int64 and tk.tensor([1.0]).dtype == np.float32
    assert tk.tensor(np.zeros(2)).dtype == np.float64  # NumPy arrays keep their dtype


def test_creation_and_properties():
    tk.manual_seed(3)
    a = tk.randn(2, 3)
    tk.manual_seed(3)
    np.testing.assert_array_equal(a.numpy(), tk.randn(2, 3).numpy())
    assert tk.zeros(2, 3).shape == (2, 3) and tk.ones((4,)).numpy().sum() == 4
    assert tk.arange(5).dtype == np.int64 and tk.arange(0.0, 1.0, 0.25).shape == (4,)
    assert tk.full((2,), 7.0).numpy().tolist() == [7.0, 7.0]
    assert tk.zeros_like(a).shape == a.shape and tk.rand_like(a).dtype == a.dtype
    assert 0 <= tk.rand(100).numpy().min() and tk.rand(100).numpy().max() < 1
    assert a.detach().requires_grad is False and tk.tensor([2.5]).item() == 2.5
    assert a.to(dtype=tk.float64).dtype == np.float64 and a.device == "cpu"
    with pytest.raises(ValueError, match="only one-element"):
        a.item()
    with pytest.raises(RuntimeError, match="floating-point"):
        tk.tensor([1, 2]).requires_grad_()


def test_error_messages_name_op_shapes_and_expectation():
    with pytest.raises(ValueError, match=r"matmul.*\(3, 4\).*\(5, 6\)"):
        tk.randn(3, 4) @ tk.randn(5, 6)
    with pytest.raises(ValueError, match=r"conv2d.*3 channels.*4 input channels"):
        F.conv2d(tk.randn(1, 3, 8, 8), tk.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"add.*\(2, 3\).*\(4,\)"):
        tk.randn(2, 3) + tk.randn(4)
    with pytest.raises(ValueError, match="reshape"):
        tk.randn(2, 3).reshape(4, 2)
    with pytest.raises(TypeError, match="matmul: dtypes differ"):
        tk.randn(2, 2) @ tk.randn(2, 2, dtype=tk.float64)
    with pytest.raises(IndexError, match="dim 3 out of range"):
        tk.randn(2, 3).sum(3)
    with pytest.raises(TypeError, match="cross_entropy.*int64"):
        F.cross_entropy(tk.randn(2, 3), tk.tensor([0.0, 1.0]))
    with pytest.raises(IndexError, match="out of range for 3 classes"):
        F.cross_entropy(tk.randn(2, 3), tk.tensor([0, 3]))


def test_device_mismatch_names_the_op(monkeypatch):
    from tinygrad_k import backend as B

    class OtherDevice(B.CPUBackend):  # a second device without needing a GPU
        name = "cuda"

    monkeypatch.setitem(B._BACKENDS, "cuda", OtherDevice())
    a, b = tk.randn(2, 2), tk.randn(2, 2).to("cuda")
    assert b.device == "cuda"
    with pytest.raises(RuntimeError, match=r"Add: expected all tensors on the same device.*cpu.*cuda"):
        a + b
    with pytest.raises(RuntimeError, match="conv2d.*same device"):
        F.conv2d(tk.randn(1, 1, 4, 4), tk.randn(1, 1, 3, 3).to("cuda"))


def test_nan_and_inf_propagate_like_numpy():
    x = tk.tensor([np.nan, np.inf, -np.inf, 1.0], requires_grad=True)
    with np.errstate(all="ignore"):
        want = np.log(np.array([np.nan, np.inf, -np.inf, 1.0]))
    np.testing.assert_array_equal(x.log().numpy(), want.astype(np.float32))
    y = (x * 2).relu().sum()
    y.backward()
    assert np.isnan(y.item())
    z = F.max_pool2d(tk.tensor(np.array([[[[np.nan, 1.0], [2.0, 3.0]]]], np.float32)), 2)
    assert np.isnan(z.item())
    assert np.isfinite(tk.tensor([1000.0, -1000.0]).sigmoid().numpy()).all()
    assert np.isfinite(tk.tensor([[1000.0, 0.0]]).log_softmax(1).numpy()).all()


def test_a_leaf_takes_its_gradient_without_a_copy_only_when_no_one_else_holds_it(monkeypatch):
    """PyTorch's AccumulateGrad steals a gradient nobody else references; so do we, and
    every other case (a gradient shared by two leaves, one a hook keeps, one the caller
    passed in, a view) gets a copy: no two .grads, and no .grad and user array, alias."""
    from tinygrad_k import autograd

    owned = []
    real = autograd._accumulate

    def spy(t, g, owned_flag=False):
        owned.append(owned_flag)
        return real(t, g, owned_flag)

    monkeypatch.setattr(autograd, "_accumulate", spy)
    rng = np.random.default_rng(0)
    lin = tk.nn.Linear(5, 3)
    x = tk.tensor(rng.standard_normal((4, 5)).astype(np.float32))
    lin(x).relu().sum().backward()
    assert owned == [True, True]  # weight and bias: fresh arrays of the Linear backward

    a = tk.tensor(rng.standard_normal(6), requires_grad=True)
    b = tk.tensor(rng.standard_normal(6), requires_grad=True)
    owned.clear()
    (a + b).sum().backward()  # Add hands one array to both leaves
    assert not np.shares_memory(a.grad.numpy(), b.grad.numpy())
    assert owned.count(True) <= 1

    kept = []
    c = tk.tensor(rng.standard_normal(6), requires_grad=True)
    c.register_hook(lambda g: kept.append(g))
    (c * 2.0).sum().backward()
    assert not np.shares_memory(c.grad.numpy(), kept[0].numpy())
    np.testing.assert_array_equal(c.grad.numpy(), np.full(6, 2.0))

    given = np.ones(6)
    d = tk.tensor(rng.standard_normal(6), requires_grad=True)
    d.backward(tk.tensor(given))
    assert not np.shares_memory(d.grad.numpy(), given)
    given[0] = 5.0
    assert d.grad.numpy()[0] == 1.0
    assert autograd._SOLE_OWNER >= 1
