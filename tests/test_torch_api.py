"""Smaller pieces of PyTorch's API that users reach for, each against torch itself."""
import numpy as np
import pytest
import torch

import tinygrad_k as tk
from tinygrad_k import nn
from tinygrad_k.nn import functional as F


def test_clip_grad_norm_and_value_match_pytorch():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) * 3 for s in [(3, 4), (5,), (2, 2, 2)]]
    grads = [rng.standard_normal(a.shape).astype(np.float32) * 4 for a in arrays]
    for norm_type, max_norm in ((2.0, 1.0), (1.0, 2.5), (float("inf"), 0.5), (2.0, 1e6)):
        ours = [tk.tensor(a, requires_grad=True) for a in arrays]
        theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
        for p, tp, g in zip(ours, theirs, grads):
            p.grad, tp.grad = tk.tensor(g.copy()), torch.tensor(g.copy())
        total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
        t_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
        assert total.item() == pytest.approx(t_total.item(), rel=1e-5)
        for p, tp in zip(ours, theirs):
            np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-5, atol=1e-7)
    p = tk.tensor(arrays[0], requires_grad=True)
    p.grad = tk.tensor(grads[0].copy())
    nn.utils.clip_grad_value_([p], 0.7)
    np.testing.assert_array_equal(p.grad.numpy(), np.clip(grads[0], -0.7, 0.7))
    p.grad = tk.tensor(np.array([np.inf, 1.0, 0.0, 0.0], np.float32).reshape(2, 2))
    p2 = tk.tensor(np.zeros((2, 2), np.float32), requires_grad=True)
    p2.grad = p.grad
    with pytest.raises(RuntimeError, match="clip_grad_norm_: the total norm"):
        nn.utils.clip_grad_norm_(p2, 1.0, error_if_nonfinite=True)


def test_module_dict_parameter_list_and_new_layers():
    md = nn.ModuleDict({"enc": nn.Linear(3, 4), "act": nn.SiLU()})
    md["dec"] = nn.Linear(4, 2)
    assert list(md.keys()) == ["enc", "act", "dec"] and "act" in md and len(md) == 3
    assert [n for n, _ in md.named_parameters()] == ["enc.weight", "enc.bias", "dec.weight",
                                                     "dec.bias"]
    pl = nn.ParameterList([nn.Parameter(tk.zeros(2)), nn.Parameter(tk.ones(3))])
    assert len(pl) == 2 and [p.shape for p in pl.parameters()] == [(2,), (3,)]
    assert set(pl.state_dict()) == {"0", "1"}
    x = np.random.default_rng(1).standard_normal((2, 6)).astype(np.float32) * 5
    for ours, theirs in ((nn.SiLU(), torch.nn.SiLU()),
                         (nn.Softplus(beta=2, threshold=4), torch.nn.Softplus(beta=2, threshold=4)),
                         (nn.Unflatten(1, (2, 3)), torch.nn.Unflatten(1, (2, 3)))):
        got, want = ours(tk.tensor(x)).numpy(), theirs(torch.tensor(x)).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert "beta=2" in repr(nn.Softplus(beta=2))


def test_one_hot_matches_pytorch_and_checks_range():
    idx = np.array([[0, 3], [2, 1]])
    np.testing.assert_array_equal(F.one_hot(tk.tensor(idx)).numpy(),
                                  torch.nn.functional.one_hot(torch.tensor(idx)).numpy())
    assert F.one_hot(tk.tensor(idx), 6).shape == (2, 2, 6)
    with pytest.raises(ValueError, match="one_hot: indices span"):
        F.one_hot(tk.tensor(idx), 3)
    with pytest.raises(TypeError, match="integer"):
        F.one_hot(tk.tensor([0.5]))


def test_grad_mode_helpers_conversions_and_constructors():
    x = tk.randn(2, 3, requires_grad=True)
    with tk.set_grad_enabled(False):
        assert not tk.is_grad_enabled() and not (x * 2).requires_grad
    with tk.inference_mode():
        assert not (x * 2).requires_grad
    assert tk.is_grad_enabled() and (x * 2).requires_grad
    assert x.int().dtype == tk.int32 and x.bool().dtype == tk.bool_
    assert x.type_as(tk.zeros(1, dtype="float64")).dtype == tk.float64
    a = np.arange(6.0).reshape(2, 3)
    t = tk.from_numpy(a)
    a[0, 0] = 7  # shares memory, keeps float64, as torch.from_numpy
    assert t.dtype == tk.float64 and t.numpy()[0, 0] == 7
    assert tk.empty(2, 3).shape == (2, 3)
    with pytest.raises(ValueError, match=r"mm: expected two 2-D tensors.*\(3,\)"):
        tk.mm(tk.ones(2, 3), tk.ones(3))
    with pytest.raises(ValueError, match="bmm: expected"):
        tk.bmm(tk.ones(2, 3, 4), tk.ones(3, 4, 5))
    assert tk.bmm(tk.ones(2, 3, 4), tk.ones(2, 4, 5)).shape == (2, 3, 5)
    with pytest.raises(TypeError, match="masked_fill: mask must be a bool Tensor"):
        x.masked_fill(x, 0.0)
    with pytest.raises(ValueError, match="norm: p=3"):
        x.norm(p=3)


def test_norm_of_zero_has_pytorchs_zero_gradient():
    x = tk.tensor(np.zeros((2, 3)), requires_grad=True)
    t = torch.zeros((2, 3), dtype=torch.float64, requires_grad=True)
    (x.norm(dim=1).sum() + x.norm()).backward()
    (t.norm(dim=1).sum() + t.norm()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())
    assert not np.isnan(x.grad.numpy()).any()


LOSSES = ["cross_entropy", "nll_loss", "binary_cross_entropy",
          "binary_cross_entropy_with_logits", "mse_loss", "l1_loss"]


@pytest.mark.parametrize("name", LOSSES)
def test_loss_functions_take_torchs_arguments_in_torchs_order(name):
    """A positional call written for torch (weight third, legacy size_average/reduce) must
    bind the same way here."""
    import inspect

    torch = pytest.importorskip("torch")
    ours = list(inspect.signature(getattr(tk.nn.functional, name)).parameters)
    theirs = list(inspect.signature(getattr(torch.nn.functional, name)).parameters)
    assert ours == theirs[:len(ours)], (ours, theirs)


def test_cross_entropy_weight_positional_and_legacy_reduce_as_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    z, t = rng.standard_normal((5, 3)), rng.integers(0, 3, 5)
    w = np.array([0.5, 1.0, 2.0])
    ours = tk.nn.functional.cross_entropy(tk.tensor(z), tk.tensor(t), tk.tensor(w))
    theirs = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(t), torch.tensor(w))
    assert abs(ours.item() - theirs.item()) < 1e-12
    ours = tk.nn.functional.nll_loss(tk.tensor(z), tk.tensor(t), reduce=False)
    theirs = torch.nn.functional.nll_loss(torch.tensor(z), torch.tensor(t), reduce=False)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)
    ours = tk.nn.functional.mse_loss(tk.tensor(z), tk.tensor(z * 2), size_average=False)
    theirs = torch.nn.functional.mse_loss(torch.tensor(z), torch.tensor(z * 2), size_average=False)
    assert abs(ours.item() - theirs.item()) < 1e-9


def _grad_mode_sequence(lib):
    """is_grad_enabled after each everyday use of set_grad_enabled: as a statement, as a
    with block, as a decorator, nested in no_grad."""
    out = []
    lib.set_grad_enabled(False)
    out.append(lib.is_grad_enabled())
    lib.set_grad_enabled(True)
    out.append(lib.is_grad_enabled())
    with lib.set_grad_enabled(False):
        out.append(lib.is_grad_enabled())
    out.append(lib.is_grad_enabled())

    @lib.set_grad_enabled(False)
    def f():
        return lib.is_grad_enabled()

    out += [lib.is_grad_enabled(), f(), f(), lib.is_grad_enabled()]
    with lib.no_grad():
        with lib.set_grad_enabled(True):
            out.append(lib.is_grad_enabled())
        out.append(lib.is_grad_enabled())
    out.append(lib.is_grad_enabled())
    return out


def test_set_grad_enabled_acts_at_once_as_pytorchs_does():
    """A plain set_grad_enabled(False) statement switches recording off (it used to wait
    for a with block); the with and decorator forms restore as PyTorch's."""
    assert _grad_mode_sequence(tk) == _grad_mode_sequence(torch)
    assert tk.is_grad_enabled()
