"""Loss-curve parity with PyTorch.

The same model is built in both frameworks, PyTorch's initial weights are loaded into
ours, both see the same fixed batches (seeded NumPy generator, labels from a random
linear teacher so there is something to learn) and take 100 optimizer steps. The
per-step losses must agree within 1e-3 relative: |ours_k - torch_k| / |torch_k|.
"""
import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import nn, optim

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # tiny models: torch's thread pool only contends with Numba's for the few cores
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

STEPS = 100
BATCH = 16
CLASSES = 4


def _batches(in_shape, seed=0):
    """STEPS batches (x float32 (BATCH, *in_shape), y int64 (BATCH,)) with teacher labels:
    10 distinct batches, cycled, so that 100 steps visibly fit them."""
    rng = np.random.default_rng(seed)
    dim = int(np.prod(in_shape))
    teacher = rng.standard_normal((dim, CLASSES))
    out = []
    for _ in range(10):
        x = rng.standard_normal((BATCH, *in_shape)).astype(np.float32)
        y = np.argmax(x.reshape(BATCH, -1) @ teacher, axis=1).astype(np.int64)
        out.append((x, y))
    return [out[k % len(out)] for k in range(STEPS)]


def _mlp():
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(),
                                 torch.nn.Linear(32, 32), torch.nn.Tanh(),
                                 torch.nn.Linear(32, CLASSES))
    ours = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, CLASSES))
    return ours, theirs, (20,)


def _cnn():
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 6, 3),
                                 torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(6 * 2 * 2, CLASSES))
    ours = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 2 * 2, CLASSES))
    return ours, theirs, (1, 8, 8)


OPTIMIZERS = {
    "sgd_momentum": (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
                     lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)),
    "adam": (lambda ps: optim.Adam(ps, lr=1e-2), lambda ps: torch.optim.Adam(ps, lr=1e-2)),
}


@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("make_model", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_loss_curve_matches_pytorch(make_model, opt_name):
    ours, theirs, in_shape = make_model()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k].numpy(), v.numpy())
    make_ours, make_theirs = OPTIMIZERS[opt_name]
    opt, topt = make_ours(ours.parameters()), make_theirs(theirs.parameters())
    lf, tlf = nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()

    ours_losses, torch_losses = [], []
    for x, y in _batches(in_shape):
        loss = lf(ours(tk.tensor(x)), tk.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ours_losses.append(loss.item())

        tloss = tlf(theirs(torch.from_numpy(x)), torch.from_numpy(y))
        topt.zero_grad()
        tloss.backward()
        topt.step()
        torch_losses.append(tloss.item())

    a, b = np.array(ours_losses, np.float64), np.array(torch_losses, np.float64)
    rel = np.abs(a - b) / np.abs(b)
    worst = int(np.argmax(rel))
    assert rel.max() < 1e-3, (f"step {worst}: ours {a[worst]:.6g}, torch {b[worst]:.6g}, "
                              f"rel {rel[worst]:.3g}")
    # the run really trained (otherwise matching curves would prove little)
    assert b[-10:].mean() < 0.8 * b[:10].mean()
