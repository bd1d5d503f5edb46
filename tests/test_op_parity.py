"""Forward values and gradients of every op against PyTorch (CPU), in float32:
relative error of outputs and gradients far under 1e-3 (we ask < 1e-5)."""
import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k.nn import functional as F
from tinygrad_k.ops import nn as _Ops

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.parity
TF = torch.nn.functional


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def inputs(seed, *specs):
    """(ours, torch) leaf pairs from (shape, kind) specs."""
    rng = np.random.default_rng(seed)
    ours, theirs = [], []
    for shape, kind in specs:
        if kind == "positive":
            a = rng.uniform(0.5, 2.0, shape)
        elif kind == "away":
            a = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 1.5, shape)
        else:
            a = rng.standard_normal(shape)
        a = a.astype(np.float32)
        ours.append(tk.tensor(a, requires_grad=True))
        theirs.append(torch.tensor(a, requires_grad=True))
    return ours, theirs


def compare(ours_fn, torch_fn, specs, seed=0, tol=1e-5):
    ours, theirs = inputs(seed, *specs)
    y, ty = ours_fn(*ours), torch_fn(*theirs)
    assert y.shape == tuple(ty.shape), (y.shape, tuple(ty.shape))
    assert y.dtype == np.float32
    assert rel(y.numpy(), ty.detach().numpy()) < tol
    g = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(np.float32)
    y.backward(tk.tensor(g))
    ty.backward(torch.tensor(g))
    for a, ta in zip(ours, theirs):
        if ta.grad is None:
            continue
        assert a.grad is not None
        assert rel(a.grad.numpy(), ta.grad.numpy()) < tol


def put(a, v, index):
    """z = a with z[index] = v, written the same way in both libraries (SetItem)."""
    z = a * 1
    z[index] = v
    return z


N = "normal"
CASES = {
    "add": (lambda a, b: a + b, lambda a, b: a + b, [((3, 4), N), ((4,), N)]),
    "sub": (lambda a, b: a - b, lambda a, b: a - b, [((3, 1), N), ((1, 4), N)]),
    "mul": (lambda a, b: a * b, lambda a, b: a * b, [((2, 3, 4), N), ((3, 1), N)]),
    "div": (lambda a, b: a / b, lambda a, b: a / b, [((3, 4), N), ((3, 4), "away")]),
    "neg": (lambda a: -a, lambda a: -a, [((5,), N)]),
    "pow": (lambda a, b: a ** b, lambda a, b: a ** b, [((3, 4), "positive"), ((4,), N)]),
    "pow_scalar": (lambda a: a ** 3, lambda a: a ** 3, [((3, 4), N)]),
    "rpow": (lambda a: 2.0 ** a, lambda a: 2.0 ** a, [((3, 4), N)]),
    "exp": (lambda a: a.exp(), torch.exp, [((3, 4), N)]),
    "log": (lambda a: a.log(), torch.log, [((3, 4), "positive")]),
    "sqrt": (lambda a: a.sqrt(), torch.sqrt, [((3, 4), "positive")]),
    "abs": (lambda a: a.abs(), torch.abs, [((3, 4), "away")]),
    "maximum": (lambda a, b: a.maximum(b), torch.maximum, [((3, 4), N), ((3, 4), N)]),
    "minimum": (lambda a, b: a.minimum(b), torch.minimum, [((3, 4), N), ((3, 4), N)]),
    "clamp": (lambda a: a.clamp(-0.5, 0.5), lambda a: a.clamp(-0.5, 0.5), [((4, 5), "away")]),
    "where": (lambda a, b: tk.where(a > 0, a, b), lambda a, b: torch.where(a > 0, a, b),
              [((3, 4), "away"), ((3, 4), N)]),
    "relu": (lambda a: a.relu(), torch.relu, [((3, 4), "away")]),
    "leaky_relu": (lambda a: a.leaky_relu(0.2), lambda a: TF.leaky_relu(a, 0.2),
                   [((3, 4), "away")]),
    "sigmoid": (lambda a: a.sigmoid(), torch.sigmoid, [((3, 4), N)]),
    "tanh": (lambda a: a.tanh(), torch.tanh, [((3, 4), N)]),
    "gelu": (lambda a: a.gelu(), TF.gelu, [((3, 4), N)]),
    "gelu_tanh": (lambda a: a.gelu("tanh"), lambda a: TF.gelu(a, approximate="tanh"),
                  [((3, 4), N)]),
    "sum": (lambda a: a.sum(1, keepdim=True), lambda a: a.sum(1, keepdim=True), [((3, 4, 2), N)]),
    "mean": (lambda a: a.mean((0, 2)), lambda a: a.mean((0, 2)), [((3, 4, 2), N)]),
    "amax": (lambda a: a.amax((0, 2)), lambda a: a.amax((0, 2)), [((3, 4, 2), N)]),
    "amin": (lambda a: a.amin(), lambda a: a.amin(), [((3, 4), N)]),
    "max": (lambda a: a.max(), lambda a: a.max(), [((3, 4), N)]),
    "max_dim": (lambda a: a.max(1).values, lambda a: a.max(1).values, [((3, 4), N)]),
    "sin_cos": (lambda a: a.sin() * a.cos(), lambda a: a.sin() * a.cos(), [((3, 4), N)]),
    "log1p": (lambda a: a.log1p(), torch.log1p, [((3, 4), "positive")]),
    "softplus": (lambda a: F.softplus(a * 8, beta=0.5, threshold=3.0),
                 lambda a: TF.softplus(a * 8, beta=0.5, threshold=3.0), [((4, 5), N)]),
    "silu": (lambda a: F.silu(a), TF.silu, [((3, 4), N)]),
    "cumsum": (lambda a: a.cumsum(1), lambda a: a.cumsum(1), [((3, 4, 2), N)]),
    "flip": (lambda a: a.flip(0, 2), lambda a: a.flip((0, 2)), [((3, 4, 2), N)]),
    "tril_triu": (lambda a: a.tril(1) + a.triu(-1), lambda a: a.tril(1) + a.triu(-1),
                  [((2, 3, 4), N)]),
    "masked_fill": (lambda a: a.masked_fill(a.detach() > 0.3, 1.5),
                    lambda a: a.masked_fill(a.detach() > 0.3, 1.5), [((3, 4), N)]),
    "norm": (lambda a: a.norm(dim=1), lambda a: a.norm(dim=1), [((3, 4), N)]),
    "min_dim": (lambda a: a.min(0, keepdim=True).values,
                lambda a: a.min(0, keepdim=True).values, [((3, 4), N)]),
    "var": (lambda a: a.var(0), lambda a: a.var(0), [((5, 3), N)]),
    "std": (lambda a: a.std(1, keepdim=True), lambda a: a.std(1, keepdim=True), [((3, 5), N)]),
    "logsumexp": (lambda a: a.logsumexp(1), lambda a: a.logsumexp(1), [((3, 5), N)]),
    "reshape": (lambda a: a.reshape(4, -1), lambda a: a.reshape(4, -1), [((2, 3, 4), N)]),
    "flatten": (lambda a: a.flatten(1), lambda a: a.flatten(1), [((2, 3, 4), N)]),
    "permute": (lambda a: a.permute(2, 0, 1), lambda a: a.permute(2, 0, 1), [((2, 3, 4), N)]),
    "transpose": (lambda a: a.transpose(0, 2), lambda a: a.transpose(0, 2), [((2, 3, 4), N)]),
    "squeeze": (lambda a: a.unsqueeze(1).squeeze(), lambda a: a.unsqueeze(1).squeeze(),
                [((2, 1, 4), N)]),
    "expand": (lambda a: a.expand(3, 2, 4), lambda a: a.expand(3, 2, 4), [((2, 1), N)]),
    "getitem_basic": (lambda a: a[1:, ::2, None], lambda a: a[1:, ::2, None], [((3, 5), N)]),
    "getitem_int": (lambda a: a[[0, 2, 2, 1]], lambda a: a[[0, 2, 2, 1]], [((3, 5), N)]),
    "setitem": (lambda a, b: put(a, b * 2, (slice(None), 1)),
                lambda a, b: put(a, b * 2, (slice(None), 1)), [((3, 5), N), ((3,), N)]),
    "setitem_mask": (lambda a: put(a, 0.5, a.detach() > 0.3),
                     lambda a: put(a, 0.5, a.detach() > 0.3), [((3, 5), N)]),
    "setitem_index": (lambda a, b: put(a, b, tk.tensor([2, 0])),
                      lambda a, b: put(a, b, torch.tensor([2, 0])), [((3, 5), N), ((5,), N)]),
    "pad": (lambda a: a.pad((1, 2, 3, 0)), lambda a: TF.pad(a, (1, 2, 3, 0)), [((2, 3), N)]),
    "cat": (lambda a, b: tk.cat([a, b], 1), lambda a, b: torch.cat([a, b], 1),
            [((2, 3), N), ((2, 4), N)]),
    "stack": (lambda a, b: tk.stack([a, b], 2), lambda a, b: torch.stack([a, b], 2),
              [((2, 3), N), ((2, 3), N)]),
    "split": (lambda a: tk.split(a, 2, 1)[1], lambda a: torch.split(a, 2, 1)[1], [((2, 5), N)]),
    "matmul_2d": (lambda a, b: a @ b, lambda a, b: a @ b, [((3, 4), N), ((4, 5), N)]),
    "matmul_1d": (lambda a, b: a @ b, lambda a, b: a @ b, [((4,), N), ((2, 4, 5), N)]),
    "matmul_batched": (lambda a, b: a @ b, lambda a, b: a @ b,
                       [((2, 1, 3, 4), N), ((3, 4, 5), N)]),
    "linear": (lambda x, w, b: F.linear(x, w, b), TF.linear,
               [((2, 3, 4), N), ((5, 4), N), ((5,), N)]),
    "softmax": (lambda a: a.softmax(1), lambda a: a.softmax(1), [((3, 5), N)]),
    "log_softmax": (lambda a: a.log_softmax(-1), lambda a: a.log_softmax(-1), [((3, 5), N)]),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, 2, 1),
               lambda x, w, b: TF.conv2d(x, w, b, 2, 1),
               [((2, 3, 9, 7), N), ((4, 3, 3, 2), N), ((4,), N)]),
    "max_pool2d": (lambda a: F.max_pool2d(a, 3, 2, 1), lambda a: TF.max_pool2d(a, 3, 2, 1),
                   [((2, 3, 9, 8), N)]),
    "avg_pool2d": (lambda a: F.avg_pool2d(a, 2), lambda a: TF.avg_pool2d(a, 2),
                   [((2, 3, 9, 8), N)]),
    "bias_relu": (lambda x, b: F.bias_relu(x, b), lambda x, b: torch.relu(x + b.view(1, -1, 1, 1)),
                  [((2, 3, 4, 2), "away"), ((3,), N)]),
    "cast": (lambda a: (a.to(dtype=tk.float64) ** 2).to(dtype=tk.float32),
             lambda a: (a.to(torch.float64) ** 2).to(torch.float32), [((3, 4), N)]),
    "to_device": (lambda a: (a.to("cuda") * 2).to("cpu"), lambda a: a * 2, [((3, 4), N)]),
    "dropout": (lambda a: _Ops.Dropout.apply(a, 0.3, _U), lambda a: a * _torch_mask(0.3),
                [((4, 5), N)]),
    "binary_cross_entropy": (
        lambda a: F.binary_cross_entropy(a.sigmoid(), tk.tensor(_Y), tk.tensor(_W)),
        lambda a: TF.binary_cross_entropy(a.sigmoid(), torch.tensor(_Y), torch.tensor(_W)),
        [((4, 5), N)]),
    "bce_with_logits": (
        lambda a: F.binary_cross_entropy_with_logits(a * 3, tk.tensor(_Y), reduction="sum",
                                                     pos_weight=tk.tensor(_W[0])),
        lambda a: TF.binary_cross_entropy_with_logits(a * 3, torch.tensor(_Y), reduction="sum",
                                                      pos_weight=torch.tensor(_W[0])),
        [((4, 5), N)]),
    "batch_norm_train": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                         lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True),
                         [((4, 3, 2, 2), N), ((3,), N), ((3,), N)]),
    "batch_norm_eval": (
        lambda x, w, b: F.batch_norm(x, tk.tensor(_W[0, :3]), tk.tensor(_W[1, :3] + 0.5), w, b),
        lambda x, w, b: TF.batch_norm(x, torch.tensor(_W[0, :3]),
                                      torch.tensor(_W[1, :3] + 0.5), w, b),
        [((4, 3, 5), N), ((3,), N), ((3,), N)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (3, 4), w, b),
                   lambda x, w, b: TF.layer_norm(x, (3, 4), w, b),
                   [((2, 3, 4), N), ((3, 4), N), ((3, 4), N)]),
    "embedding": (lambda w: F.embedding(tk.tensor(_IDX), w, padding_idx=1),
                  lambda w: TF.embedding(torch.tensor(_IDX), w, padding_idx=1), [((5, 3), N)]),
    "conv2d_dilated_grouped": (lambda x, w, b: F.conv2d(x, w, b, (2, 1), (1, 2), (2, 1), 2),
                               lambda x, w, b: TF.conv2d(x, w, b, (2, 1), (1, 2), (2, 1), 2),
                               [((2, 4, 9, 7), N), ((6, 2, 3, 2), N), ((6,), N)]),
    "conv2d_same": (lambda x, w: F.conv2d(x, w, None, 1, "same", (1, 3)),
                    lambda x, w: TF.conv2d(x, w, None, 1, "same", (1, 3)),
                    [((2, 3, 6, 7), N), ((4, 3, 2, 3), N)]),
    "conv1d": (lambda x, w, b: F.conv1d(x, w, b, 2, 1, 2, 3),
               lambda x, w, b: TF.conv1d(x, w, b, 2, 1, 2, 3),
               [((2, 3, 11), N), ((6, 1, 3), N), ((6,), N)]),
    "conv_transpose2d": (lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1, (1, 0), 2, (1, 2)),
                         lambda x, w, b: TF.conv_transpose2d(x, w, b, 2, 1, (1, 0), 2, (1, 2)),
                         [((2, 4, 5, 4), N), ((4, 3, 3, 2), N), ((6,), N)]),
    "max_pool2d_dilated_ceil": (lambda a: F.max_pool2d(a, 3, 2, 1, 2, True),
                                lambda a: TF.max_pool2d(a, 3, 2, 1, 2, True),
                                [((2, 3, 10, 9), N)]),
    "avg_pool2d_ceil_exclude_pad": (lambda a: F.avg_pool2d(a, 3, 2, 1, True, False),
                                    lambda a: TF.avg_pool2d(a, 3, 2, 1, True, False),
                                    [((2, 3, 10, 9), N)]),
    "avg_pool2d_divisor": (lambda a: F.avg_pool2d(a, 2, 1, 1, False, True, 3),
                           lambda a: TF.avg_pool2d(a, 2, 1, 1, False, True, 3),
                           [((2, 3, 5, 4), N)]),
    "max_pool1d": (lambda a: F.max_pool1d(a, 3, 2, 1, 1, True),
                   lambda a: TF.max_pool1d(a, 3, 2, 1, 1, True), [((2, 3, 10), N)]),
    "avg_pool1d": (lambda a: F.avg_pool1d(a, 3, 2, 1, True, False),
                   lambda a: TF.avg_pool1d(a, 3, 2, 1, True, False), [((2, 3, 10), N)]),
    "einsum": (lambda a, b: tk.einsum("bij,jk->bik", a, b) + tk.einsum("...j,kj", a, b.T),
               lambda a, b: torch.einsum("bij,jk->bik", a, b) + torch.einsum("...j,kj", a, b.T),
               [((2, 3, 4), N), ((4, 5), N)]),
    "einsum_reduce": (lambda a, b: tk.einsum("ij,j->", a, b), lambda a, b: torch.einsum(
                      "ij,j->", a, b), [((3, 4), N), ((4,), N)]),
    "topk_sort": (lambda a: tk.topk(a, 2, dim=1).values.sum(1, keepdim=True) *
                  tk.sort(a, 0, True).values[:1],
                  lambda a: torch.topk(a, 2, dim=1).values.sum(1, keepdim=True) *
                  torch.sort(a, 0, True).values[:1],
                  [((3, 4), N)]),
    "log10_log2": (lambda a: a.log10() + tk.log2(a), lambda a: a.log10() + torch.log2(a),
                   [((3, 4), "positive")]),
    "group_norm": (lambda x, w, b: F.group_norm(x, 2, w, b), lambda x, w, b: TF.group_norm(
        x, 2, w, b), [((3, 4, 5), N), ((4,), N), ((4,), N)]),
    "pad_reflect": (lambda a: F.pad(a, (2, 1, 0, 3), mode="reflect"),
                    lambda a: TF.pad(a, (2, 1, 0, 3), mode="reflect"), [((2, 3, 4, 5), N)]),
    "pad_replicate": (lambda a: F.pad(a, (3, 1), mode="replicate"),
                      lambda a: TF.pad(a, (3, 1), mode="replicate"), [((2, 3, 4), N)]),
    "pad_circular": (lambda a: F.pad(a, (1, 2, 2, 0), mode="circular"),
                     lambda a: TF.pad(a, (1, 2, 2, 0), mode="circular"), [((2, 3, 4, 5), N)]),
    "interpolate_nearest": (lambda a: F.interpolate(a, size=(7, 3)),
                            lambda a: TF.interpolate(a, size=(7, 3)), [((2, 3, 4, 5), N)]),
    "interpolate_nearest_scale": (lambda a: F.interpolate(a, scale_factor=1.7),
                                  lambda a: TF.interpolate(a, scale_factor=1.7),
                                  [((2, 3, 4, 5), N)]),
    "interpolate_bilinear": (
        lambda a: F.interpolate(a, size=(7, 3), mode="bilinear", align_corners=False),
        lambda a: TF.interpolate(a, size=(7, 3), mode="bilinear", align_corners=False),
        [((2, 3, 4, 5), N)]),
    "interpolate_bilinear_corners": (
        lambda a: F.interpolate(a, scale_factor=(2, 0.5), mode="bilinear", align_corners=True),
        lambda a: TF.interpolate(a, scale_factor=(2, 0.5), mode="bilinear", align_corners=True),
        [((2, 3, 4, 6), N)]),
    "interpolate_linear": (lambda a: F.interpolate(a, size=9, mode="linear"),
                           lambda a: TF.interpolate(a, size=9, mode="linear"), [((2, 3, 4), N)]),
    "normalize": (lambda a: F.normalize(a, dim=-1), lambda a: TF.normalize(a, dim=-1),
                  [((3, 4), N)]),
    "normalize_p1": (lambda a: F.normalize(a, p=1, dim=0), lambda a: TF.normalize(a, p=1, dim=0),
                     [((3, 4), "away")]),
    "bilinear": (lambda a, b, w, c: F.bilinear(a, b, w, c), TF.bilinear,
                 [((2, 3), N), ((2, 4), N), ((5, 3, 4), N), ((5,), N)]),
    "sdpa": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
             lambda q, k, v: TF.scaled_dot_product_attention(q, k, v),
             [((2, 3, 4, 8), N), ((2, 3, 5, 8), N), ((2, 3, 5, 6), N)]),
    "sdpa_causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                   scale=0.3),
                    lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                    scale=0.3),
                    [((2, 4, 8), N), ((2, 4, 8), N), ((2, 4, 3), N)]),
    "sdpa_masks": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, tk.tensor(_M)) +
                   F.scaled_dot_product_attention(q, k, v, tk.tensor(_W[:4, :3])),
                   lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, torch.tensor(_M)) +
                   TF.scaled_dot_product_attention(q, k, v, torch.tensor(_W[:4, :3])),
                   [((2, 4, 8), N), ((2, 3, 8), N), ((2, 3, 5), N)]),
}

# constants of the cases above (targets, weights, indices, a dropout draw)
_R = np.random.default_rng(7)
_Y = _R.uniform(0, 1, (4, 5)).astype(np.float32)
_W = _R.uniform(0.5, 1.5, (4, 5)).astype(np.float32)
_IDX = np.array([[0, 1, 4], [4, 4, 2]])
_U = _R.uniform(0, 1, (4, 5)).astype(np.float32)
_M = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=bool)


def _torch_mask(p):
    return torch.tensor((_U >= p) / (1 - p), dtype=torch.float32)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pytorch(name, seed):
    ours, theirs, specs = CASES[name]
    compare(ours, theirs, specs, seed)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_pytorch(reduction, smoothing):
    t = np.array([1, 0, 4, 2, 4])

    def ours(z):
        return F.cross_entropy(z, tk.tensor(t), reduction=reduction, label_smoothing=smoothing)

    def theirs(z):
        return TF.cross_entropy(z, torch.tensor(t), reduction=reduction,
                                label_smoothing=smoothing)

    out_ours, out_theirs = ours(tk.zeros(5, 5)), theirs(torch.zeros(5, 5))
    if reduction != "none":
        assert out_ours.shape == tuple(out_theirs.shape) == ()
    compare(lambda z: ours(z) * 1.0, lambda z: theirs(z) * 1.0, [((5, 5), N)])


def test_max_min_with_dim_return_values_and_indices_like_pytorch():
    a = np.array([[1.0, 3.0, 3.0, -2.0], [2.0, 0.0, 2.0, 5.0]])  # ties: first index wins
    for op in ("max", "min"):
        for dim, keepdim in ((0, False), (1, False), (1, True), (-1, True)):
            ours = getattr(tk.tensor(a), op)(dim, keepdim)
            theirs = getattr(torch.tensor(a), op)(dim, keepdim)
            assert type(ours).__name__ == op and ours._fields == ("values", "indices")
            np.testing.assert_array_equal(ours.values.numpy(), theirs.values.numpy())
            np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
    x, t = tk.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    x.max(1).values.sum().backward()  # the whole gradient goes to the selected maximum
    t.max(1).values.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())


def test_gather_matches_pytorch():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 4, 2))
    idx = rng.integers(0, 4, (3, 5, 2))  # repeats: gradients accumulate
    x, t = tk.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    ours, theirs = x.gather(1, tk.tensor(idx)), t.gather(1, torch.tensor(idx))
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy())
    g = rng.standard_normal((3, 5, 2))
    (ours * tk.tensor(g)).sum().backward()
    (theirs * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy())
    with pytest.raises(IndexError, match="gather: index values span"):
        x.gather(1, tk.tensor(np.full((3, 1, 2), 4)))
    with pytest.raises(ValueError, match="gather: index of shape"):
        x.gather(1, tk.tensor(np.zeros((4, 1, 2), np.int64)))
    with pytest.raises(TypeError, match="gather: index must be an integer Tensor"):
        x.gather(1, tk.tensor(np.zeros((3, 1, 2))))


def test_dropout_statistics_and_scaling():
    tk.manual_seed(0)
    x = tk.ones(200, 200)
    y = F.dropout(x, 0.25, training=True).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    assert F.dropout(x, 0.25, training=False) is x
