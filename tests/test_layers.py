"""nn modules and losses against PyTorch: load torch's weights through state_dict, same
input -> same output and same parameter gradients (float32); Module bookkeeping."""
import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import nn

torch = pytest.importorskip("torch")
tnn = torch.nn


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def copy_weights(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def run_pair(ours, theirs, x_np, out_index=None):
    """Forward + backward of sum(out * g) in both; returns the outputs."""
    x, tx = tk.tensor(x_np, requires_grad=True), torch.tensor(x_np, requires_grad=True)
    y, ty = ours(x), theirs(tx)
    if out_index is not None:
        y, ty = y[out_index] if isinstance(y, tuple) else y, ty[out_index]
    g = np.random.default_rng(7).standard_normal(y.shape).astype(np.float32)
    (y * tk.tensor(g)).sum().backward()
    (ty * torch.tensor(g)).sum().backward()
    assert rel(y.numpy(), ty.detach().numpy()) < 1e-5
    assert rel(x.grad.numpy(), tx.grad.numpy()) < 1e-5
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert rel(p.grad.numpy(), theirs_params[name].grad.numpy()) < 1e-5, name
    return y, ty


rng = np.random.default_rng(0)
LAYERS = {
    "linear": (lambda: nn.Linear(5, 3), lambda: tnn.Linear(5, 3), (4, 5)),
    "conv": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1),
             lambda: tnn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 7)),
    "conv_nobias": (lambda: nn.Conv2d(2, 3, (3, 1), bias=False),
                    lambda: tnn.Conv2d(2, 3, (3, 1), bias=False), (2, 2, 5, 5)),
    "maxpool": (lambda: nn.MaxPool2d(2), lambda: tnn.MaxPool2d(2), (2, 3, 6, 5)),
    "avgpool": (lambda: nn.AvgPool2d(3, 2, 1), lambda: tnn.AvgPool2d(3, 2, 1), (2, 3, 6, 5)),
    "adaptive": (lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda: tnn.AdaptiveAvgPool2d((2, 3)),
                 (2, 3, 5, 7)),
    "adaptive1": (lambda: nn.AdaptiveAvgPool2d(1), lambda: tnn.AdaptiveAvgPool2d(1),
                  (2, 3, 4, 4)),
    "bn2d": (lambda: nn.BatchNorm2d(3), lambda: tnn.BatchNorm2d(3), (4, 3, 5, 5)),
    "bn1d": (lambda: nn.BatchNorm1d(6), lambda: tnn.BatchNorm1d(6), (8, 6)),
    "layernorm": (lambda: nn.LayerNorm((4, 5)), lambda: tnn.LayerNorm((4, 5)), (3, 4, 5)),
    "flatten": (lambda: nn.Flatten(), lambda: tnn.Flatten(), (2, 3, 4)),
    "relu": (lambda: nn.ReLU(), lambda: tnn.ReLU(), (3, 4)),
    "sigmoid": (lambda: nn.Sigmoid(), lambda: tnn.Sigmoid(), (3, 4)),
    "tanh": (lambda: nn.Tanh(), lambda: tnn.Tanh(), (3, 4)),
    "gelu": (lambda: nn.GELU(), lambda: tnn.GELU(), (3, 4)),
    "softmax": (lambda: nn.Softmax(1), lambda: tnn.Softmax(1), (3, 4)),
    "sequential": (lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)),
                   lambda: tnn.Sequential(tnn.Linear(4, 6), tnn.ReLU(), tnn.Linear(6, 2)),
                   (5, 4)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_matches_pytorch(name):
    make_ours, make_theirs, shape = LAYERS[name]
    ours, theirs = make_ours(), make_theirs()
    copy_weights(ours, theirs)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    run_pair(ours, theirs, x)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_recurrent_layers_match_pytorch(kind, batch_first):
    ours = getattr(nn, kind)(3, 5, num_layers=2, batch_first=batch_first)
    theirs = getattr(tnn, kind)(3, 5, num_layers=2, batch_first=batch_first)
    assert [k for k, _ in ours.named_parameters()] == [k for k, _ in theirs.named_parameters()]
    copy_weights(ours, theirs)
    x = np.random.default_rng(2).standard_normal((4, 6, 3)).astype(np.float32)
    run_pair(ours, theirs, x, out_index=0)
    out, state = ours(tk.tensor(x))
    tout, tstate = theirs(torch.tensor(x))
    if kind == "LSTM":
        for a, b in zip(state, tstate):
            assert rel(a.numpy(), b.detach().numpy()) < 1e-5
    else:
        assert rel(state.numpy(), tstate.detach().numpy()) < 1e-5


def test_embedding_matches_pytorch_and_checks_indices():
    ours, theirs = nn.Embedding(10, 4), tnn.Embedding(10, 4)
    copy_weights(ours, theirs)
    idx = np.array([[1, 3, 3], [9, 0, 1]])
    y, ty = ours(tk.tensor(idx)), theirs(torch.tensor(idx))
    assert rel(y.numpy(), ty.detach().numpy()) == 0
    y.sum().backward()
    ty.sum().backward()
    assert rel(ours.weight.grad.numpy(), theirs.weight.grad.numpy()) == 0
    with pytest.raises(IndexError, match="out of range"):
        ours(tk.tensor([10]))
    with pytest.raises(TypeError, match="integers"):
        ours(tk.tensor([1.0]))


def test_batchnorm_running_stats_and_eval_match_pytorch():
    ours, theirs = nn.BatchNorm2d(3, momentum=0.2), tnn.BatchNorm2d(3, momentum=0.2)
    r = np.random.default_rng(3)
    for _ in range(4):
        x = (r.standard_normal((5, 3, 4, 4)) * 2 + 1).astype(np.float32)
        ours(tk.tensor(x))
        theirs(torch.tensor(x))
    assert rel(ours.running_mean.numpy(), theirs.running_mean.numpy()) < 1e-6
    assert rel(ours.running_var.numpy(), theirs.running_var.numpy()) < 1e-6
    assert int(ours.num_batches_tracked.item()) == 4
    ours.eval()
    theirs.eval()
    x = r.standard_normal((2, 3, 4, 4)).astype(np.float32)
    assert rel(ours(tk.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy()) < 1e-6
    assert set(ours.state_dict()) == set(theirs.state_dict())


LOSSES = {
    "cross_entropy": (lambda r: nn.CrossEntropyLoss(reduction=r),
                      lambda r: tnn.CrossEntropyLoss(reduction=r), "classes"),
    "cross_entropy_smooth": (lambda r: nn.CrossEntropyLoss(reduction=r, label_smoothing=0.2),
                             lambda r: tnn.CrossEntropyLoss(reduction=r, label_smoothing=0.2),
                             "classes"),
    "nll": (lambda r: nn.NLLLoss(reduction=r), lambda r: tnn.NLLLoss(reduction=r), "logp"),
    "bce": (lambda r: nn.BCELoss(reduction=r), lambda r: tnn.BCELoss(reduction=r), "prob"),
    "bce_logits": (lambda r: nn.BCEWithLogitsLoss(reduction=r),
                   lambda r: tnn.BCEWithLogitsLoss(reduction=r), "binary"),
    "mse": (lambda r: nn.MSELoss(reduction=r), lambda r: tnn.MSELoss(reduction=r), "float"),
    "l1": (lambda r: nn.L1Loss(reduction=r), lambda r: tnn.L1Loss(reduction=r), "float"),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_match_pytorch(name, reduction):
    make_ours, make_theirs, kind = LOSSES[name]
    r = np.random.default_rng(4)
    z = r.standard_normal((6, 5)).astype(np.float32)
    if kind in ("classes", "logp"):
        t = r.integers(0, 5, 6)
        if kind == "logp":
            z = z - np.log(np.exp(z).sum(1, keepdims=True))
        t_ours, t_theirs = tk.tensor(t), torch.tensor(t)
    else:
        t = r.random((6, 5)).astype(np.float32)
        if kind == "binary":
            t = (t > 0.5).astype(np.float32)
        if kind == "prob":
            z = 1 / (1 + np.exp(-z))
        t_ours, t_theirs = tk.tensor(t), torch.tensor(t)
    x, tx = tk.tensor(z, requires_grad=True), torch.tensor(z, requires_grad=True)
    y, ty = make_ours(reduction)(x, t_ours), make_theirs(reduction)(tx, t_theirs)
    assert y.shape == tuple(ty.shape)
    assert rel(y.numpy(), ty.detach().numpy()) < 1e-5
    y.sum().backward()
    ty.sum().backward()
    assert rel(x.grad.numpy(), tx.grad.numpy()) < 1e-5


def test_bce_with_logits_is_stable():
    z = tk.tensor([[1000.0, -1000.0]], requires_grad=True)
    loss = nn.BCEWithLogitsLoss()(z, tk.tensor([[0.0, 1.0]]))
    loss.backward()
    assert loss.item() == pytest.approx(1000.0) and np.isfinite(z.grad.numpy()).all()


def test_bad_labels_are_clear():
    z = tk.randn(3, 4)
    with pytest.raises(IndexError, match="out of range for 4 classes"):
        nn.CrossEntropyLoss()(z, tk.tensor([0, 4, 1]))
    with pytest.raises(TypeError, match="int64"):
        nn.CrossEntropyLoss()(z, tk.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(IndexError, match="nll_loss"):
        nn.NLLLoss()(z, tk.tensor([-1, 0, 1]))
    with pytest.raises(ValueError, match="probabilities"):
        nn.BCELoss()(tk.tensor([2.0]), tk.tensor([1.0]))
    with pytest.raises(ValueError, match=r"mse_loss.*\(3, 4\).*\(4,\)"):
        nn.MSELoss()(z, tk.randn(4))
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")


def test_state_dict_round_trip_and_strict_checks():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    sd = m.state_dict()
    # PyTorch's order: module by module, each module's parameters then its buffers
    assert list(sd) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                        "1.running_var", "1.num_batches_tracked", "3.weight", "3.bias"]
    m2 = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    m2.load_state_dict(sd)
    x = tk.randn(2, 1, 4, 4)
    m.eval()
    m2.eval()
    np.testing.assert_array_equal(m(x).numpy(), m2(x).numpy())
    bad = dict(sd)
    bad.pop("3.bias")
    bad["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['3.bias'\].*unexpected keys \['extra'\]"):
        m2.load_state_dict(bad)
    res = m2.load_state_dict(bad, strict=False)
    assert res["missing_keys"] == ["3.bias"]
    wrong = dict(sd)
    wrong["3.weight"] = np.zeros((3, 9), np.float32)
    with pytest.raises(ValueError, match=r"3.weight.*\(3, 9\).*\(3, 8\)"):
        m2.load_state_dict(wrong)


def test_module_bookkeeping():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
            self.head = nn.Linear(4, 2)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return self.head(self.drop(self.body(x)))

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["body.0.weight", "body.0.bias",
                                                      "head.weight", "head.bias"]
    assert len(list(net.children())) == 3 and len(list(net.modules())) == 6
    net.eval()
    assert not net.drop.training and not net.body[0].training
    x = tk.randn(5, 3)
    np.testing.assert_array_equal(net(x).numpy(), net(x).numpy())  # no dropout in eval
    net.train()
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    params_before = list(net.parameters())
    net.to("cpu").double()
    assert list(net.parameters())[0] is params_before[0]  # identity kept
    assert params_before[0].dtype == np.float64
    assert "Linear(in_features=3, out_features=4, bias=True)" in repr(net)


def test_default_init_matches_pytorch_distribution():
    tk.manual_seed(0)
    lin = nn.Linear(400, 300)
    w = lin.weight.numpy()
    bound = 1 / np.sqrt(400)  # kaiming_uniform_(a=sqrt(5)) on fan_in 400
    assert w.min() >= -bound and w.max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.02 * bound
    conv = nn.Conv2d(6, 16, 5)
    assert np.abs(conv.weight.numpy()).max() <= 1 / np.sqrt(150)
    lstm = nn.LSTM(10, 20)
    assert all(np.abs(p.numpy()).max() <= 1 / np.sqrt(20) for p in lstm.parameters())
    tk.manual_seed(0)
    np.testing.assert_array_equal(nn.Linear(400, 300).weight.numpy(), w)  # reproducible
    t = tk.zeros(100, 50)
    nn.init.xavier_uniform_(t)
    assert np.abs(t.numpy()).max() <= np.sqrt(6 / 150)
    nn.init.kaiming_normal_(t, nonlinearity="relu")
    assert abs(t.numpy().std() - np.sqrt(2 / 50)) < 0.01
