"""The seed models: shapes, parameter counts that match PyTorch's twins, a training step
that lowers the loss, and clear errors for wrong input sizes."""
import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import nn, optim
from tinygrad_k.models import SPECS, build

CASES = {  # name: (input shape, classes)
    "mlp": ((1, 28, 28), 10),
    "lenet": ((3, 32, 32), 10),
    "lenet5": ((1, 28, 28), 10),
    "binary_cnn": ((1, 28, 28), 2),
    "wide_cnn": ((1, 28, 28), 10),
    "resnet18": ((3, 32, 32), 10),
    "rnn_regressor": ((12, 1), 1),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_backward_shapes(name):
    shape, classes = CASES[name]
    tk.manual_seed(0)
    model = build(name, shape, classes)
    x = tk.randn(3, *shape)
    out = model(x)
    want = (3, 1) if name in ("binary_cnn", "rnn_regressor") else (3, classes)
    assert out.shape == want
    out.sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, pname
        assert np.isfinite(p.grad.numpy()).all(), pname


@pytest.mark.parametrize("name", ["mlp", "lenet", "lenet5", "resnet18"])
def test_parameter_count_matches_pytorch_twin(name):
    pytest.importorskip("torch")
    from benchmarks.torch_models import build_torch

    shape, classes = CASES[name]
    ours = sum(p.numel() for p in build(name, shape, classes).parameters())
    theirs = sum(p.numel() for p in build_torch(name, shape, classes).parameters())
    assert ours == theirs


def test_a_few_steps_lower_the_loss():
    tk.manual_seed(0)
    rng = np.random.default_rng(0)
    x = tk.tensor(rng.standard_normal((32, 1, 28, 28)).astype(np.float32))
    y = tk.tensor(rng.integers(0, 10, 32))
    model = build("lenet5")
    opt = optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(30):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_resnet_eval_uses_running_stats():
    tk.manual_seed(0)
    model = build("resnet18", (3, 32, 32), 10, width=8)
    x = tk.randn(4, 3, 32, 32)
    model(x)  # one training-mode pass updates the running statistics
    model.eval()
    with tk.no_grad():
        a, b = model(x[:2]).numpy(), model(x).numpy()[:2]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # eval: no batch dependence


def test_wrong_input_sizes_are_clear():
    with pytest.raises(ValueError, match="lenet5"):
        build("lenet5", (3, 32, 32))
    with pytest.raises(ValueError, match="unknown model"):
        build("vgg")
    model = build("lenet5")
    with pytest.raises(ValueError, match="Conv2d"):
        model(tk.randn(2, 3, 28, 28))


def test_every_model_has_a_spec():
    from tinygrad_k.models.charlm import CHAR_MODELS   # tested in test_charlm.py
    assert set(SPECS) == set(CASES) | set(CHAR_MODELS)
