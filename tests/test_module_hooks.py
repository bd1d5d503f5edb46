"""Module hooks against PyTorch's on the same model (weights copied from torch): which
hooks fire, in which order, with which tensors; replacements returned by hooks change
the forward and the gradients as in PyTorch; handles remove hooks."""
import warnings

import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import nn
from tinygrad_k.nn.modules import module as tk_module

torch = pytest.importorskip("torch")
tnn = torch.nn


def _np(t):
    if t is None:
        return None
    return t.detach().numpy() if isinstance(t, torch.Tensor) else t.numpy()


class Gate:
    """A two-input module, y = lin(x) * sigmoid(z), built for either framework."""

    @staticmethod
    def make(lib):
        base = lib.Module

        class _Gate(base):
            def __init__(self):
                super().__init__()
                self.lin = lib.Linear(3, 3)

            def forward(self, x, z):
                return self.lin(x) * z.sigmoid()

        return _Gate()


def models(seed=0):
    """(ours, theirs): Linear -> Tanh -> Gate(x, z) -> Linear with equal weights."""
    torch.manual_seed(seed)
    theirs = tnn.ModuleDict({"fc1": tnn.Linear(4, 3), "act": tnn.Tanh(),
                             "gate": Gate.make(tnn), "fc2": tnn.Linear(3, 2)})
    ours = nn.ModuleDict({"fc1": nn.Linear(4, 3), "act": nn.Tanh(), "gate": Gate.make(nn),
                          "fc2": nn.Linear(3, 2)})
    ours.load_state_dict({k: tk.tensor(v.detach().numpy()) for k, v in
                          theirs.state_dict().items()})
    return ours, theirs


def run(model, lib, x, z, x_grad):
    t = (lambda a: torch.tensor(a, requires_grad=x_grad)) if lib is torch else (
        lambda a: tk.tensor(a, requires_grad=x_grad))
    xs, zs = t(x), (torch.tensor(z, requires_grad=True) if lib is torch
                    else tk.tensor(z, requires_grad=True))
    h = model["act"](model["fc1"](xs))
    y = model["fc2"](model["gate"](h, zs))
    g = np.arange(y.numel(), dtype=np.float32).reshape(tuple(y.shape)) / 10 - 0.2
    y.backward(torch.tensor(g) if lib is torch else tk.tensor(g))
    return xs, zs, y


def record(model, events):
    handles = []
    for name, m in model.named_modules():
        if not name:
            continue
        handles.append(m.register_forward_pre_hook(
            lambda mod, args, name=name: events.append(
                ("pre", name, [tuple(a.shape) for a in args]))))
        handles.append(m.register_forward_hook(
            lambda mod, args, out, name=name: events.append(("fwd", name, _np(out)))))
        handles.append(m.register_full_backward_pre_hook(
            lambda mod, gout, name=name: events.append(
                ("bwd_pre", name, [_np(g) for g in gout]))))
        handles.append(m.register_full_backward_hook(
            lambda mod, gin, gout, name=name: events.append(
                ("bwd", name, [_np(g) for g in gin], [_np(g) for g in gout]))))
    return handles


def assert_same_events(ours, theirs):
    assert [e[:2] for e in ours] == [e[:2] for e in theirs]
    for a, b in zip(ours, theirs):
        for va, vb in zip(a[2:], b[2:]):
            if isinstance(va, list) and va and isinstance(va[0], tuple):
                assert va == vb, (a[:2], va, vb)
            elif isinstance(va, list):
                assert len(va) == len(vb), (a[:2], va, vb)
                for x, y in zip(va, vb):
                    assert (x is None) == (y is None), (a[:2], x, y)
                    if x is not None:
                        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
            else:
                np.testing.assert_allclose(va, vb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("x_grad", [False, True])
def test_hooks_fire_like_pytorch(x_grad):
    """Order and values of every hook on every submodule; with x not requiring grad, fc1's
    full backward hook fires with grad_input (None,) when its output gradient is known."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    z = rng.standard_normal((2, 3)).astype(np.float32)
    ours, theirs = models()
    ev_o, ev_t = [], []
    record(ours, ev_o)
    record(theirs, ev_t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns when no input requires grad
        xs_t, zs_t, _ = run(theirs, torch, x, z, x_grad)
    xs_o, zs_o, _ = run(ours, tk, x, z, x_grad)
    assert_same_events(ev_o, ev_t)
    kinds = {(k, n) for k, n, *_ in ev_o}
    assert ("bwd", "gate") in kinds and ("bwd_pre", "fc1") in kinds
    np.testing.assert_allclose(_np(zs_o.grad), _np(zs_t.grad), rtol=1e-5)
    if x_grad:
        np.testing.assert_allclose(_np(xs_o.grad), _np(xs_t.grad), rtol=1e-5)


def _replacing_hooks(model, lib):
    """Hooks that return replacements: double fc1's input, add 1 to act's output, scale
    gate's grad_output by 3 and fc2... grad_input of gate's x by -1."""
    model["fc1"].register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    model["act"].register_forward_hook(lambda m, args, out: out + 1)
    model["gate"].register_full_backward_pre_hook(lambda m, gout: (gout[0] * 3,))
    model["gate"].register_full_backward_hook(lambda m, gin, gout: (-gin[0], gin[1]))


def test_replacements_returned_by_hooks_act_as_in_pytorch():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    z = rng.standard_normal((3, 3)).astype(np.float32)
    ours, theirs = models(1)
    _replacing_hooks(ours, tk)
    _replacing_hooks(theirs, torch)
    xs_o, zs_o, y_o = run(ours, tk, x, z, True)
    xs_t, zs_t, y_t = run(theirs, torch, x, z, True)
    np.testing.assert_allclose(_np(y_o), _np(y_t), rtol=1e-5)
    for a, b in [(xs_o, xs_t), (zs_o, zs_t)] + [
            (p, q) for p, q in zip(ours.parameters(), theirs.parameters())]:
        np.testing.assert_allclose(_np(a.grad), _np(b.grad), rtol=1e-5, atol=1e-6)


def test_tuple_output_and_unused_output_gradient_is_none():
    """An LSTM returns (out, (h, c)): grad_output has None for the nested tuple, as torch."""
    torch.manual_seed(0)
    t_lstm = tnn.LSTM(3, 4)
    o_lstm = nn.LSTM(3, 4)
    o_lstm.load_state_dict({k: tk.tensor(v.detach().numpy())
                            for k, v in t_lstm.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((5, 2, 3)).astype(np.float32)
    seen = {}
    for lib, m, key in ((torch, t_lstm, "t"), (tk, o_lstm, "o")):
        m.register_full_backward_hook(
            lambda mod, gin, gout, key=key: seen.update({key: (gin, gout)}))
        xs = (torch if lib is torch else tk).tensor(x, requires_grad=True)
        out, (h, c) = m(xs)
        out.sum().backward()
    (gin_o, gout_o), (gin_t, gout_t) = seen["o"], seen["t"]
    assert len(gout_o) == len(gout_t) == 2 and gout_o[1] is None and gout_t[1] is None
    np.testing.assert_allclose(_np(gout_o[0]), _np(gout_t[0]))
    np.testing.assert_allclose(_np(gin_o[0]), _np(gin_t[0]), rtol=1e-5, atol=1e-6)


def test_two_outputs_one_unused():
    """Both outputs wired through one node: the unused one's grad_output is None."""
    class Two(nn.Module):
        def forward(self, x):
            return x * 2, x * 3

    class TwoT(tnn.Module):
        def forward(self, x):
            return x * 2, x * 3

    got = {}
    for key, m, lib in (("o", Two(), tk), ("t", TwoT(), torch)):
        m.register_full_backward_hook(lambda mod, gin, gout, key=key: got.update(
            {key: ([_np(g) for g in gin], [_np(g) for g in gout])}))
        x = lib.tensor(np.ones((2, 2), np.float32), requires_grad=True)
        a, b = m(x)
        (a * 5).sum().backward()
    assert got["o"][1][1] is None and got["t"][1][1] is None
    np.testing.assert_allclose(got["o"][1][0], got["t"][1][0])
    np.testing.assert_allclose(got["o"][0][0], got["t"][0][0])


def test_residual_input_used_twice_gets_only_the_module_gradient():
    """x feeds the module and a skip connection: grad_input is the module's share only."""
    lin = nn.Linear(2, 2)
    tlin = tnn.Linear(2, 2)
    lin.load_state_dict({k: tk.tensor(v.detach().numpy()) for k, v in tlin.state_dict().items()})
    got = []
    lin.register_full_backward_hook(lambda m, gin, gout: got.append(_np(gin[0])))
    tlin.register_full_backward_hook(lambda m, gin, gout: got.append(_np(gin[0])))
    for lib, m in ((tk, lin), (torch, tlin)):
        x = lib.tensor(np.array([[1.0, -2.0]], np.float32), requires_grad=True)
        (m(x) + x * 7).sum().backward()
    np.testing.assert_allclose(got[0], got[1], rtol=1e-6)


def test_handles_remove_prepend_kwargs_and_global_hooks():
    m = nn.Linear(2, 2)
    calls = []
    h1 = m.register_forward_hook(lambda mod, a, o: calls.append("first"))
    m.register_forward_hook(lambda mod, a, o: calls.append("prepended"), prepend=True)
    m.register_forward_pre_hook(lambda mod, a, kw: calls.append(("kw", sorted(kw))),
                                with_kwargs=True)
    m(tk.ones(1, 2))
    assert calls == [("kw", []), "prepended", "first"]
    h1.remove()
    calls.clear()
    m(tk.ones(1, 2))
    assert calls == [("kw", []), "prepended"]
    g = tk_module.register_module_forward_hook(lambda mod, a, o: calls.append(type(mod).__name__))
    with g:
        calls.clear()
        m(tk.ones(1, 2))
        assert calls == [("kw", []), "Linear", "prepended"]  # global hooks run first
    calls.clear()
    m(tk.ones(1, 2))
    assert "Linear" not in calls


def test_always_call_forward_hook_runs_when_forward_raises():
    m = nn.Linear(2, 2)
    calls = []
    m.register_forward_hook(lambda mod, a, o: calls.append(o), always_call=True)
    with pytest.raises(ValueError, match="Linear"):
        m(tk.ones(1, 3))
    assert calls == [None]


def test_backward_hook_errors_like_pytorch():
    m = nn.Linear(2, 2)
    m.register_full_backward_hook(lambda mod, gin, gout: (gin[0], gin[0]))
    x = tk.ones(1, 2, requires_grad=True)
    with pytest.raises(RuntimeError, match="invalid number of grad_input"):
        m(x).sum().backward()
    m2 = nn.Linear(2, 2)
    m2.register_full_backward_hook(lambda mod, gin, gout: (tk.ones(1, 2),))
    with pytest.raises(RuntimeError, match="no input requires gradient"):
        m2(tk.ones(1, 2)).sum().backward()


def test_no_hooks_no_extra_graph_nodes():
    """Without backward hooks the graph is the plain one (the hooks cost nothing when off)."""
    m = nn.Linear(2, 2)
    m.register_forward_hook(lambda mod, a, o: None)
    y = m(tk.ones(1, 2, requires_grad=True))
    assert type(y._ctx).__name__ == "Context" and y._ctx.fn.__name__ == "Linear"
