"""torch's top-level namespace (generated from one table), devices, dtypes, cuda /
accelerator / backends, Generator objects and the random functions, each against torch."""
import numpy as np
import pytest
import torch

import tinygrad_k as tk
from tinygrad_k import torch_namespace as TN


def both(arr, **kw):
    return tk.tensor(arr, **kw), torch.tensor(arr, **kw)


def close(ours, theirs, rtol=1e-6, atol=1e-6):
    if isinstance(theirs, tuple):
        for a, b in zip(ours, theirs):
            close(a, b, rtol, atol)
        return
    if isinstance(theirs, torch.Tensor):
        assert ours.shape == tuple(theirs.shape)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=rtol, atol=atol)
    else:
        assert ours == pytest.approx(theirs)


def test_every_generated_name_is_a_torch_top_level_function():
    for name in list(TN.FUNCTIONS) + ["einsum", "multinomial", "bernoulli", "normal",
                                      "randperm", "is_tensor", "numel", "allclose", "equal",
                                      "manual_seed", "Generator", "device", "Size"]:
        assert hasattr(torch, name), name
        assert callable(getattr(tk, name)), name


UNARY = ["abs", "absolute", "exp", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "sin",
         "cos", "tanh", "sigmoid", "relu", "neg", "negative", "reciprocal", "square", "sign",
         "isnan", "flatten", "squeeze", "t", "clone", "detach", "numel", "sum", "mean", "max",
         "min", "argmax", "argmin", "amax", "std", "var", "norm"]


@pytest.mark.parametrize("name", UNARY)
def test_unary_functions_match_torch(name):
    x = np.random.default_rng(0).uniform(0.3, 2.0, (3, 1, 4)).astype(np.float32)
    if name == "t":
        x = x[:, 0]
    a, b = both(x)
    close(getattr(tk, name)(a), getattr(torch, name)(b), rtol=1e-5)


CALLS = [
    ("sum", (1,), {"keepdim": True}), ("sum", (), {"axis": 0}), ("sum", (), {"dim": (0, 2)}),
    ("mean", (), {"axis": 2, "keepdims": True}), ("max", (1,), {}), ("min", (), {"dim": 2}),
    ("argmax", (), {"dim": 2, "keepdim": True}), ("cumsum", (), {"dim": 2}),
    ("softmax", (2,), {}), ("log_softmax", (), {"dim": 0}), ("transpose", (0, 2), {}),
    ("permute", ((2, 0, 1),), {}), ("reshape", ((4, -1),), {}), ("unsqueeze", (1,), {}),
    ("flatten", (1,), {}), ("clamp", (), {"min": 0.5, "max": 1.0}), ("clip", (0.5,), {}),
    ("pow", (2,), {}), ("add", (1.5,), {}), ("mul", (2,), {}), ("div", (4,), {}),
    ("sub", (1,), {"alpha": 3}), ("topk", (2,), {"dim": 2}),
    ("topk", (2,), {"largest": False}), ("sort", (), {"dim": 0, "descending": True}),
    ("argsort", (), {"dim": 2}), ("flip", ((0, 2),), {}), ("chunk", (2, 2), {}),
    ("unbind", (0,), {}), ("gt", (1.0,), {}), ("tril", (), {}), ("std", (2,), {}),
]


@pytest.mark.parametrize("name,args,kwargs", CALLS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CALLS)])
def test_functions_with_arguments_match_torch(name, args, kwargs):
    x = np.random.default_rng(1).uniform(0.1, 2.0, (3, 2, 4)).astype(np.float32)
    if name == "tril":
        x = x[0]
    a, b = both(x)
    ours, theirs = getattr(tk, name)(a, *args, **kwargs), getattr(torch, name)(b, *args, **kwargs)
    if isinstance(theirs, (tuple, list)):
        assert len(ours) == len(theirs)
        for o, t in zip(ours, theirs):
            close(o, t, 1e-5)
    else:
        close(ours, theirs, 1e-5)
    # the same keywords on the method
    if name not in ("add", "sub", "mul", "div", "pow", "clip", "gt"):
        close(getattr(a, name)(*args, **kwargs)[0] if isinstance(theirs, tuple) else
              getattr(a, name)(*args, **kwargs), theirs[0] if isinstance(theirs, tuple)
              else theirs, 1e-5)


def test_functions_of_several_tensors_and_out():
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    a, b = both(x)
    close(tk.matmul(a, a.T), torch.matmul(b, b.T))
    close(tk.cat([a, a], axis=1), torch.cat([b, b], axis=1))
    close(tk.concat([a, a]), torch.concat([b, b]))
    close(tk.where(a > 0.5, a, tk.zeros_like(a)), torch.where(b > 0.5, b, torch.zeros_like(b)))
    close(tk.maximum(a, a.flip(0)), torch.maximum(b, b.flip(0)))
    close(tk.einsum("ij,kj->ik", a, a), torch.einsum("ij,kj->ik", b, b), 1e-5)
    close(tk.einsum("ii", tk.eye(3)) if False else tk.einsum("ij->", a), torch.einsum("ij->", b))
    out, tout = tk.zeros(3, 3), torch.zeros(3, 3)
    r = tk.matmul(a, a.T, out=out)
    torch.matmul(b, b.T, out=tout)
    assert r is out
    close(out, tout)
    o = tk.empty(3, 4)
    tk.mul(a, a, out=o)
    close(o, b * b)
    with pytest.raises(RuntimeError, match="out="):
        tk.mul(tk.ones(2, requires_grad=True), 2, out=tk.zeros(2))
    with pytest.raises(TypeError, match="must be a Tensor"):
        tk.tanh(0.5)
    with pytest.raises(TypeError, match="both 'dim' and its alias 'axis'"):
        a.sum(dim=0, axis=1)
    with pytest.raises(ValueError, match="repeats a subscript"):
        tk.einsum("ii->i", a[:, :3])


def test_predicates_and_comparisons():
    a, b = both(np.array([1.0, 2.0, 3.0], np.float32))
    assert tk.is_tensor(a) and not tk.is_tensor(a.numpy()) and torch.is_tensor(b)
    assert tk.numel(tk.zeros(2, 3, 4)) == torch.numel(torch.zeros(2, 3, 4)) == 24
    assert tk.allclose(a, a + 1e-7) and not tk.allclose(a, a + 1e-3)
    assert tk.equal(a, a.clone()) and not tk.equal(a, a[:2]) and not tk.equal(a, a * 2)
    assert tk.is_floating_point(a) and not tk.is_floating_point(tk.arange(3))
    np.testing.assert_array_equal(tk.isclose(a, a + 1e-3, atol=1e-2).numpy(), [True] * 3)


def test_tensor_methods_scripts_use():
    x = np.arange(6, dtype=np.float32).reshape(2, 3) + 1
    a, b = both(x)
    assert a.view_as(tk.zeros(3, 2)).shape == (3, 2)
    for name, args in (("new_ones", (2, 2)), ("new_zeros", ((3,),)), ("new_empty", (1, 2))):
        o, t = getattr(a, name)(*args), getattr(b, name)(*args)
        assert o.shape == tuple(t.shape) and o.dtype == np.float32
    assert a.new_full((2,), 7).tolist() == b.new_full((2,), 7).tolist()
    assert a.new_tensor([1, 2]).dtype == np.float32
    assert tk.arange(3).new_tensor([1.5]).dtype == np.int64
    assert a.new_zeros(2, dtype=tk.int64).dtype == np.int64
    assert a.nelement() == b.nelement() == 6
    close(a.log10(), b.log10())
    close(a.log2(), b.log2())
    close(a.index_select(1, tk.tensor([2, 0])), b.index_select(1, torch.tensor([2, 0])))
    assert a.is_floating_point() and a.element_size() == 4
    with pytest.raises(TypeError, match="not supported by tinygrad_k on purpose"):
        a.half()
    with pytest.raises(RuntimeError, match="topk: k"):
        a.topk(4)


def test_dtype_names():
    pairs = {"float": torch.float, "float32": torch.float32, "float64": torch.float64,
             "double": torch.double, "long": torch.long, "int64": torch.int64,
             "int": torch.int, "int32": torch.int32, "bool": torch.bool, "uint8": torch.uint8,
             "int16": torch.int16, "int8": torch.int8, "short": torch.short}
    for name, theirs in pairs.items():
        ours = getattr(tk, name)
        assert tk.zeros(2, dtype=ours).numpy().dtype == torch.zeros(2, dtype=theirs).numpy().dtype
    assert tk.tensor([1, 2]).dtype == tk.long and tk.tensor([1.0]).dtype == tk.float
    assert tk.tensor([True]).dtype == tk.bool and tk.float is tk.float32
    assert isinstance(tk.float32, tk.dtype)
    for name in ("half", "float16", "bfloat16", "complex64"):
        with pytest.raises(TypeError, match="not supported"):
            tk.zeros(2, dtype=getattr(tk, name))
        with pytest.raises(TypeError, match="not supported"):
            tk.ones(2).to(getattr(tk, name))
    assert tk.get_default_dtype() == tk.float32 and torch.get_default_dtype() == torch.float32
    tk.set_default_dtype(tk.float64)
    try:
        assert tk.zeros(2).dtype == tk.float64 and tk.tensor([1.5]).dtype == tk.float64
        assert tk.randn(2).dtype == tk.float64 and tk.tensor([1]).dtype == tk.int64
    finally:
        tk.set_default_dtype(tk.float32)
    with pytest.raises(TypeError, match="only floating point"):
        tk.set_default_dtype(tk.int64)
    assert tk.full((2,), 3).dtype == torch.full((2,), 3).numpy().dtype
    assert tk.full((2,), True).dtype == np.bool_ and tk.full((2,), 1.5).dtype == np.float32


def test_device_objects():
    for spec in (("cpu",), ("cuda",), ("cuda:0",), ("cuda", 0)):
        ours, theirs = tk.device(*spec), torch.device(*spec)
        assert (ours.type, ours.index, str(ours)) == (theirs.type, theirs.index, str(theirs))
        assert repr(ours) == repr(theirs)
    assert tk.device("cpu") == "cpu" and "cpu" == tk.device("cpu")
    assert tk.device("cuda") != "cpu" and tk.device("cuda:0") != tk.device("cuda")
    assert tk.ones(2).to(tk.device("cpu")).device == tk.device("cpu")
    assert tk.zeros(2, device=tk.device("cpu")).device == "cpu"
    assert len({tk.device("cpu"), tk.device("cpu")}) == 1
    with pytest.raises(RuntimeError, match="'mps' is not supported"):
        tk.device("mps")
    with pytest.raises(RuntimeError, match="one device of each type"):
        tk.device("cuda:1")
    tk.set_default_device("cpu")
    assert tk.get_default_device() == str(torch.get_default_device()) == "cpu"


def test_cuda_accelerator_and_backends_flags(monkeypatch):
    assert tk.cuda.is_available() == tk.cuda_available()
    assert tk.cuda.device_count() == int(tk.cuda_available())
    assert tk.accelerator.is_available() == tk.cuda.is_available()
    acc = tk.accelerator.current_accelerator()
    assert (acc is None) == (not tk.cuda.is_available())
    tk.cuda.manual_seed(3)
    tk.cuda.manual_seed_all(3)
    with pytest.raises(NotImplementedError, match="streams"):
        tk.cuda.Stream()
    with pytest.raises(NotImplementedError, match="float16"):
        tk.cuda.amp.GradScaler()
    for flag in ("deterministic", "benchmark", "enabled"):
        assert isinstance(getattr(tk.backends.cudnn, flag), bool)
    assert tk.backends.cuda.matmul.allow_tf32 is torch.backends.cuda.matmul.allow_tf32 is False
    monkeypatch.setattr(tk.backends.cuda.matmul, "allow_tf32", True)
    import tinygrad_k.backends.cudnn as cudnn  # import torch.backends.cudnn as cudnn
    cudnn.benchmark = True
    assert tk.backends.cudnn.benchmark is True
    cudnn.benchmark = False
    assert tk.backends.mps.is_available() is False
    with pytest.raises(NotImplementedError, match="sparse"):
        tk.sparse_coo_tensor([[0]], [1.0])
    with pytest.raises(NotImplementedError, match="float16"):
        tk.autocast("cuda")


def test_num_threads():
    n = tk.get_num_threads()
    tk.set_num_threads(1)
    try:
        assert tk.get_num_threads() == 1
        assert (tk.ones(8, 8) @ tk.ones(8, 8)).sum().item() == 512
    finally:
        tk.set_num_threads(n)
    with pytest.raises(ValueError, match="set_num_threads"):
        tk.set_num_threads(0)


def test_size_and_misc():
    s = tk.Size([2, 3])
    assert s == (2, 3) and s.numel() == torch.Size([2, 3]).numel() == 6
    assert repr(s) == repr(torch.Size([2, 3])).replace("torch.", "")
    net = object()
    assert tk.compile(net) is net
    from tinygrad_k.utils.data import DataLoader
    assert DataLoader is tk.data.DataLoader and tk.utils.data is tk.data
    arr = np.ones(3, np.float32)
    t = tk.as_tensor(arr)
    arr[0] = 5
    assert t[0].item() == 5


# -- randomness --------------------------------------------------------------------------
def test_generator_api_and_reproducibility():
    g = tk.Generator().manual_seed(2147483647)
    assert isinstance(g, tk.Generator) and g.initial_seed() == 2147483647
    first = [tk.randn(3, 4, generator=g), tk.rand(5, generator=g),
             tk.randint(0, 10, (6,), generator=g), tk.randperm(7, generator=g),
             tk.multinomial(tk.tensor([0.2, 0.8]), 5, True, generator=g)]
    g.manual_seed(2147483647)
    again = [tk.randn(3, 4, generator=g), tk.rand(5, generator=g),
             tk.randint(0, 10, (6,), generator=g), tk.randperm(7, generator=g),
             tk.multinomial(tk.tensor([0.2, 0.8]), 5, True, generator=g)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert sorted(first[3].tolist()) == list(range(7)) and first[3].dtype == tk.int64
    assert first[2].dtype == tk.int64 and 0 <= first[2].min().item() <= first[2].max().item() < 10
    # state round trip, as torch: get_state is a uint8 tensor
    state = g.get_state()
    assert state.dtype == tk.uint8 and state.ndim == 1
    x = tk.randn(4, generator=g)
    g.set_state(state)
    np.testing.assert_array_equal(tk.randn(4, generator=g).numpy(), x.numpy())
    with pytest.raises(RuntimeError, match="not a state"):
        g.set_state(tk.tensor(np.zeros(3, np.uint8)))
    s = g.seed()
    assert g.initial_seed() == s
    # a generator's stream is independent of the default one
    tk.manual_seed(0)
    h = tk.Generator().manual_seed(1)
    a0 = tk.randn(3)
    tk.randn(3, generator=h)
    tk.manual_seed(0)
    np.testing.assert_array_equal(tk.randn(3).numpy(), a0.numpy())


def test_default_generator_and_rng_state():
    assert tk.manual_seed(5) is tk.default_generator and tk.initial_seed() == 5
    state = tk.get_rng_state()
    a = tk.rand(3)
    tk.set_rng_state(state)
    np.testing.assert_array_equal(tk.rand(3).numpy(), a.numpy())
    tk.manual_seed(5)
    np.testing.assert_array_equal(tk.rand(3).numpy(), a.numpy())


def test_generator_on_in_place_draws_normal_and_bernoulli():
    g = tk.Generator().manual_seed(7)
    x = tk.empty(1000).normal_(2.0, 0.5, generator=g)
    u = tk.empty(1000).uniform_(-1, 1, generator=g)
    assert abs(x.mean().item() - 2.0) < 0.1 and abs(x.std().item() - 0.5) < 0.05
    assert -1 <= u.min().item() and u.max().item() < 1
    n = tk.normal(tk.zeros(500) + 3.0, tk.ones(500) * 0.1, generator=g)
    assert n.shape == (500,) and abs(n.mean().item() - 3.0) < 0.05
    assert tk.normal(1.0, 2.0, (2, 3), generator=g).shape == (2, 3)
    assert tk.normal(tk.zeros(4), 1.0).shape == tuple(torch.normal(torch.zeros(4), 1.0).shape)
    p = tk.full((4000,), 0.25)
    bern = tk.bernoulli(p, generator=g)
    assert bern.dtype == tk.float32 and set(np.unique(bern.numpy())) <= {0.0, 1.0}
    assert abs(bern.mean().item() - 0.25) < 0.03
    with pytest.raises(RuntimeError, match="std >= 0"):
        tk.normal(0.0, -1.0, (2,))


def test_multinomial_matches_torch_semantics():
    g = tk.Generator().manual_seed(0)
    probs = tk.tensor([[0.1, 0.0, 0.6, 0.3], [1.0, 1.0, 1.0, 1.0]])
    draws = tk.multinomial(probs, 20000, replacement=True, generator=g)
    assert draws.shape == tuple(torch.multinomial(torch.tensor(probs.numpy()), 20000, True).shape)
    assert draws.dtype == tk.int64
    freq = np.bincount(draws.numpy()[0], minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.1, 0.0, 0.6, 0.3], atol=0.015)
    np.testing.assert_allclose(np.bincount(draws.numpy()[1], minlength=4) / 20000, [0.25] * 4,
                               atol=0.015)
    method = tk.tensor([[0.0, 1.0], [1.0, 0.0]]).multinomial(3, True, generator=g)
    assert method.tolist() == [[1, 1, 1], [0, 0, 0]]
    assert tk.full((3,), 1.0).bernoulli(generator=g).tolist() == [1.0, 1.0, 1.0]
    no_repl = tk.multinomial(tk.tensor([1.0, 2.0, 3.0, 4.0]), 4, generator=g)
    assert sorted(no_repl.tolist()) == [0, 1, 2, 3] and no_repl.shape == (4,)
    one = tk.multinomial(tk.tensor([0.0, 1.0]), num_samples=1, generator=g)
    assert one.item() == 1
    # without replacement, zero-weight categories come after every other one (as torch)
    for _ in range(5):
        assert tk.multinomial(tk.tensor([0.0, 1.0, 0.0, 2.0]), 3, generator=g).tolist()[:2] \
            in ([1, 3], [3, 1])
    bad = [((tk.tensor([0.5, 0.5]), 3), "n_sample > prob_dist"),
           ((tk.tensor([0.0, 0.0]), 1), "sum of probabilities"),
           ((tk.tensor([-0.1, 1.0]), 1), "element < 0")]
    for (p, n), msg in bad:
        with pytest.raises(RuntimeError, match=msg):
            tk.multinomial(p, n)
        with pytest.raises(RuntimeError):
            torch.multinomial(torch.tensor(p.numpy()), n)


def test_rounding_remainder_and_floor_division_match_torch():
    x = np.array([-3.5, -2.5, -0.4, 0.5, 1.5, 2.7, 7.0], np.float32)
    a, b = both(x)
    for name in ("floor", "ceil", "trunc", "round", "frac"):
        close(getattr(tk, name)(a), getattr(torch, name)(b))
    for other in (2, -2.5):
        close(a % other, b % other)
        close(a // other, b // other)
        close(tk.fmod(a, other), torch.fmod(b, other))
        close(tk.remainder(a, other), torch.remainder(b, other))
    ia, ib = both(np.array([-7, -3, 0, 4, 9]))
    for other in (3, -4):
        assert (ia % other).tolist() == (ib % other).tolist()
        assert (ia // other).tolist() == (ib // other).tolist()
        assert (ia % other).dtype == tk.int64
    assert (7 % tk.tensor([3, 4])).tolist() == [1, 3]
    # gradients as torch: d(a % b)/da = 1, d/db = -floor(a / b)
    pa = tk.tensor(x, requires_grad=True)
    pb = tk.tensor(np.full(7, 2.5, np.float32), requires_grad=True)
    ta = torch.tensor(x, requires_grad=True)
    tb = torch.tensor(np.full(7, 2.5, np.float32), requires_grad=True)
    (pa % pb).sum().backward()
    (ta % tb).sum().backward()
    close(pa.grad, ta.grad)
    close(pb.grad, tb.grad)


def test_more_compositions_match_torch_with_gradients():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1.5, 1.5, (3, 4)).astype(np.float32)
    v = rng.uniform(-1, 1, 4).astype(np.float32)
    cases = {
        "expm1": lambda L, a, b: L.expm1(a), "exp2": lambda L, a, b: L.exp2(a),
        "sinh": lambda L, a, b: L.sinh(a), "cosh": lambda L, a, b: L.cosh(a),
        "lerp": lambda L, a, b: L.lerp(a, b.expand(3, 4), 0.3),
        "outer": lambda L, a, b: L.outer(a[0], b), "narrow": lambda L, a, b: L.narrow(a, 1, 1, 2),
        "select": lambda L, a, b: L.select(a, 0, -1), "roll": lambda L, a, b: L.roll(a, 1, 1),
        "roll2": lambda L, a, b: L.roll(a, (2, -1), (0, 1)),
        "roll_flat": lambda L, a, b: L.roll(a, 5),
        "masked_select": lambda L, a, b: L.masked_select(a, a.detach() > 0),
        "diag1": lambda L, a, b: L.diag(b, 1), "diag2": lambda L, a, b: L.diag(a, -1),
        "diag0": lambda L, a, b: L.diag(b), "trace": lambda L, a, b: L.trace(a),
    }
    for name, f in cases.items():
        a, ta = tk.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        b, tb = tk.tensor(v, requires_grad=True), torch.tensor(v, requires_grad=True)
        ours, theirs = f(tk, a, b), f(torch, ta, tb)
        close(ours, theirs.detach(), 1e-5)
        w = np.linspace(-1, 1, theirs.numel()).reshape(tuple(theirs.shape)).astype(np.float32)
        (ours * tk.tensor(w)).sum().backward()
        (theirs * torch.tensor(w)).sum().backward()
        for o, t in ((a, ta), (b, tb)):
            if t.grad is not None:
                close(o.grad, t.grad, 1e-5)
            else:
                assert o.grad is None or not o.grad.numpy().any(), name


def test_tests_and_integer_results_match_torch():
    x = np.array([[0.0, np.inf, -1.0], [np.nan, 2.0, 0.0]], np.float32)
    a, b = both(x)
    for name in ("isinf", "isfinite", "isnan", "logical_not", "nonzero", "count_nonzero"):
        assert getattr(tk, name)(a).tolist() == getattr(torch, name)(b).tolist(), name
    m, tm = both(np.array([True, False, True]))
    n, tn = both(np.array([True, True, False]))
    for name in ("logical_and", "logical_or", "logical_xor"):
        assert getattr(tk, name)(m, n).tolist() == getattr(torch, name)(tm, tn).tolist()
    assert [t.tolist() for t in tk.nonzero(a, as_tuple=True)] == \
        [t.tolist() for t in torch.nonzero(b, as_tuple=True)]
    i, ti = both(np.array([3, 1, 3, 0, 1, 3]))
    assert tk.bincount(i).tolist() == torch.bincount(ti).tolist()
    assert tk.bincount(i, minlength=6).tolist() == torch.bincount(ti, minlength=6).tolist()
    ours = tk.unique(i, return_inverse=True, return_counts=True)
    theirs = torch.unique(ti, return_inverse=True, return_counts=True)
    assert [t.tolist() for t in ours] == [t.tolist() for t in theirs]


def test_torch_alias_maps_module_names_only(tmp_path):
    """``python -m tinygrad_k.torch_alias`` (fresh process): torch.X.Y is tinygrad_k.X.Y,
    the same module objects, their own __spec__ kept; refused once real torch is in."""
    import subprocess
    import sys
    script = tmp_path / "client.py"
    script.write_text(
        "import sys\n"
        "import torch, torch.nn as nn, torch.nn.functional as F, tinygrad_k\n"
        "import torch.backends.cudnn as cudnn\n"
        "from torch.utils.data import DataLoader\n"
        "from torch.optim.lr_scheduler import StepLR\n"
        "assert torch is tinygrad_k and nn is tinygrad_k.nn and F is tinygrad_k.nn.functional\n"
        "assert DataLoader is tinygrad_k.data.DataLoader and cudnn is tinygrad_k.backends.cudnn\n"
        "assert torch.nn.__spec__.name == 'tinygrad_k.nn'\n"
        "assert sys.argv[1:] == ['--flag', 'x']\n"
        "print('ok', __name__)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    run = subprocess.run([sys.executable, "-m", "tinygrad_k.torch_alias", str(script), "--flag",
                          "x"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok __main__"
    from tinygrad_k import torch_alias
    with pytest.raises(RuntimeError, match="already imported"):
        torch_alias.install()  # this test process imported the real torch
