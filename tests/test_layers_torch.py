"""Layers of issue 11 against their torch.nn twins with the weights copied from torch:
forward values, input and parameter gradients, state_dict keys, repr, errors.
(The primitives under them -- GroupNorm, Resample for pad/interpolate -- are gradchecked
and compared op by op in test_op_gradients.py and test_op_parity.py.)"""
import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import nn
from tinygrad_k.nn import functional as F

torch = pytest.importorskip("torch")
tnn = torch.nn


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-6) if b.size else 0.0


def twins(ours_cls, torch_cls, *args, **kwargs):
    torch.manual_seed(0)
    theirs = torch_cls(*args, **kwargs)
    ours = ours_cls(*args, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: tk.tensor(v.detach().numpy()) for k, v in
                          theirs.state_dict().items()})
    assert repr(ours) == repr(theirs).replace("NonDynamicallyQuantizableLinear", "Linear")
    return ours, theirs


def run_both(ours, theirs, arrays, call=lambda m, *xs: m(*xs), reduce=None):
    """Forward both, backward a fixed function of the outputs; compare all gradients."""
    xo = [tk.tensor(a, requires_grad=a.dtype.kind == "f") if isinstance(a, np.ndarray) else a
          for a in arrays]
    xt = [torch.tensor(a, requires_grad=a.dtype.kind == "f") if isinstance(a, np.ndarray)
          else a for a in arrays]
    yo, yt = call(ours, *xo), call(theirs, *xt)
    flat_o = [y for y in (yo if isinstance(yo, tuple) else (yo,)) if y is not None]
    flat_t = [y for y in (yt if isinstance(yt, tuple) else (yt,)) if y is not None]
    lo = lt = 0
    cot = np.random.default_rng(1)
    for a, b in zip(flat_o, flat_t):
        assert a.shape == tuple(b.shape)
        assert rel(a.numpy(), b.detach().numpy()) < 1e-5
        g = cot.standard_normal(a.shape).astype(np.float32)  # L = sum(y * g) + sum(y^2)
        lo = lo + (a * tk.tensor(g)).sum() + (a * a).sum()
        lt = lt + (b * torch.tensor(g)).sum() + (b * b).sum()
    lo.backward()
    lt.backward()
    for a, b in zip(xo, xt):
        if isinstance(b, torch.Tensor) and b.grad is not None:
            assert rel(a.grad.numpy(), b.grad.numpy()) < 1e-5
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        assert rel(p.grad.numpy(), tp.grad.numpy()) < 1e-5, name
    return yo, yt


R = np.random.default_rng(0)


def arr(*shape):
    return R.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("kwargs", [{}, {"batch_first": True}, {"kdim": 3, "vdim": 5},
                                    {"bias": False}])
@pytest.mark.parametrize("masks", ["none", "key_padding", "float_attn", "bool_both"])
def test_multihead_attention(kwargs, masks):
    ours, theirs = twins(nn.MultiheadAttention, tnn.MultiheadAttention, 8, 2, **kwargs)
    bf = kwargs.get("batch_first", False)
    lead = (lambda L: (3, L)) if bf else (lambda L: (L, 3))
    q = arr(*lead(4), 8)
    k, v = arr(*lead(5), kwargs.get("kdim", 8)), arr(*lead(5), kwargs.get("vdim", 8))
    kpm = np.zeros((3, 5), bool)
    kpm[1, 3:] = True
    m = {"none": {}, "key_padding": {"key_padding_mask": kpm},
         "float_attn": {"attn_mask": arr(4, 5)},
         "bool_both": {"attn_mask": np.triu(np.ones((4, 5), bool), 1),
                       "key_padding_mask": kpm}}[masks]
    for avg in (True, False):
        def call(mod, q_, k_, v_, avg=avg):
            lib = torch if isinstance(mod, torch.nn.Module) else tk
            return mod(q_, k_, v_, average_attn_weights=avg,
                       **{name: lib.tensor(x) for name, x in m.items()})
        yo, _ = run_both(ours, theirs, [q, k, v], call)
        assert yo[1].shape == ((3, 4, 5) if avg else (3, 2, 4, 5))
        ours.zero_grad()
        theirs.zero_grad()


def test_multihead_attention_unbatched_no_weights_and_errors():
    ours, theirs = twins(nn.MultiheadAttention, tnn.MultiheadAttention, 6, 3)
    x = arr(4, 6)
    run_both(ours, theirs, [x, x, x])
    out, w = ours(tk.tensor(x), tk.tensor(x), tk.tensor(x), need_weights=False)
    assert out.shape == (4, 6) and w is None
    with pytest.raises(ValueError, match="divisible by num_heads"):
        nn.MultiheadAttention(6, 4)
    with pytest.raises(RuntimeError, match="Need attn_mask"):
        ours(tk.tensor(x), tk.tensor(x), tk.tensor(x), is_causal=True)


@pytest.mark.parametrize("cls,kwargs", [("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}),
                                        ("LSTMCell", {}), ("GRUCell", {}),
                                        ("GRUCell", {"bias": False})])
@pytest.mark.parametrize("batched", [True, False])
def test_recurrent_cells(cls, kwargs, batched):
    ours, theirs = twins(getattr(nn, cls), getattr(tnn, cls), 3, 4, **kwargs)
    lead = (2,) if batched else ()
    x, h, c = arr(*lead, 3), arr(*lead, 4), arr(*lead, 4)
    run_both(ours, theirs, [x])  # zero initial state
    ours.zero_grad()
    theirs.zero_grad()
    if cls == "LSTMCell":
        run_both(ours, theirs, [x, h, c], lambda m, x_, h_, c_: m(x_, (h_, c_)))
    else:
        run_both(ours, theirs, [x, h])


def test_cells_step_like_the_layers():
    """An LSTMCell run over time reproduces LSTM with the same weights."""
    torch.manual_seed(1)
    layer, cell = nn.LSTM(3, 4), nn.LSTMCell(3, 4)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x = tk.tensor(arr(5, 2, 3))
    out, (h, c) = layer(x)
    hc = None
    for t in range(5):
        hc = cell(x[t], hc)
    np.testing.assert_allclose(hc[0].numpy(), h[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hc[1].numpy(), c[0].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"bias": False}])
def test_group_norm_module(kwargs):
    try:
        tnn.GroupNorm(2, 6, **kwargs)
    except TypeError:
        pytest.skip("this torch's GroupNorm has no bias argument")
    ours, theirs = twins(nn.GroupNorm, tnn.GroupNorm, 2, 6, **kwargs)
    run_both(ours, theirs, [arr(3, 6, 4, 2)])
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="divisible by num_groups"):
        F.group_norm(tk.tensor(arr(2, 6, 3)), 4)


def test_bilinear_and_linear_with_empty_batches():
    ours, theirs = twins(nn.Bilinear, tnn.Bilinear, 3, 4, 5)
    run_both(ours, theirs, [arr(6, 3), arr(6, 4)])
    for n in (0,):
        y = ours(tk.zeros(n, 3, requires_grad=True), tk.zeros(n, 4))
        assert y.shape == (0, 5)
        lin = nn.Linear(3, 2)
        x = tk.zeros(0, 3, requires_grad=True)
        lin(x).sum().backward()
        assert x.grad.shape == (0, 3) and np.all(lin.weight.grad.numpy() == 0)
        assert lin(tk.zeros(2, 0, 3)).shape == (2, 0, 2)


@pytest.mark.parametrize("cls,shape", [("Dropout2d", (40, 50, 3, 2)), ("Dropout2d", (50, 3, 2)),
                                       ("Dropout1d", (40, 50, 3)), ("Dropout1d", (50, 3))])
def test_channel_dropout_zeroes_whole_channels(cls, shape):
    tk.manual_seed(0)
    m = getattr(nn, cls)(0.3)
    x = tk.ones(*shape, requires_grad=True)
    y = m(x)
    lead = len(shape) - (2 if cls == "Dropout2d" else 1)
    per_channel = y.numpy().reshape(shape[:lead] + (-1,))
    assert np.all(per_channel.min(-1) == per_channel.max(-1))  # whole channels kept or not
    kept = per_channel[per_channel != 0]
    np.testing.assert_allclose(kept, 1 / 0.7, rtol=1e-6)
    assert abs((per_channel[..., 0] == 0).mean() - 0.3) < 0.1
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), y.numpy())  # the gradient is the mask
    m.eval()
    assert m(x) is x
    with pytest.raises(ValueError, match=cls.lower()):
        getattr(F, cls.lower())(tk.ones(2, 3, 4, 5, 6), 0.5)


def test_pad_and_interpolate_errors_like_torch():
    x = tk.tensor(arr(1, 2, 3, 4))
    with pytest.raises(ValueError, match="padding < the input size"):
        F.pad(x[0], (4, 0), mode="reflect")
    with pytest.raises(NotImplementedError, match="expects a 2-D or 3-D input"):
        F.pad(x, (1, 1), mode="reflect")  # as torch: 2 pad values need a 2-D or 3-D input
    with pytest.raises(NotImplementedError, match="mode 'wrap'"):
        F.pad(x, (1, 1), mode="wrap")
    with pytest.raises(ValueError, match="align_corners option can only be set"):
        F.interpolate(x, scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match="only one of size or scale_factor"):
        F.interpolate(x, size=3, scale_factor=2)
    with pytest.raises(NotImplementedError, match="'bilinear' needs a 4-D"):
        F.interpolate(tk.tensor(arr(1, 2, 3)), size=3, mode="bilinear")
    np.testing.assert_allclose(F.pad(x, (1, 2), value=3.0).numpy(),
                               torch.nn.functional.pad(torch.tensor(x.numpy()), (1, 2),
                                                       value=3.0).numpy())
