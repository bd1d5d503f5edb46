"""gradcheck (float64 central differences) of every Function on hypothesis-drawn shapes,
including size-1 broadcast dimensions and non-contiguous (transposed / strided) inputs.
Inputs are kept off kinks: |x| >= 0.2 where relu/abs/clamp bend, distinct values where
max/min pick, positive values under log/sqrt/pow."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_k as tk
from tinygrad_k.nn import functional as F
from tinygrad_k.backend import get_backend
from tinygrad_k.ops import nn as N

CPU = get_backend("cpu")
SET = settings(max_examples=12, deadline=None)
pytestmark = pytest.mark.gradcheck


def leaf(arr):
    """A float64 leaf that keeps ``arr``'s memory layout (so views stay non-contiguous)."""
    return tk.Tensor._wrap(arr, CPU, True)


def make(rng, shape, layout="contiguous", kind="normal"):
    if kind == "away":  # |x| in [0.2, 1.5]: off the kink at 0
        draw = lambda s: rng.choice([-1.0, 1.0], s) * rng.uniform(0.2, 1.5, s)  # noqa: E731
    elif kind == "positive":
        draw = lambda s: rng.uniform(0.5, 2.0, s)  # noqa: E731
    elif kind == "distinct":  # pairwise gaps >= 0.05: no near-ties for max/min
        def draw(s):
            n = int(np.prod(s))
            return (rng.permutation(n) * 0.05 + rng.uniform(0, 0.01, n)).reshape(s)
    else:
        draw = lambda s: rng.standard_normal(s)  # noqa: E731
    if layout == "transposed" and len(shape) >= 2:
        return np.ascontiguousarray(draw(shape[::-1])).transpose(
            tuple(range(len(shape)))[::-1])
    if layout == "strided" and len(shape) >= 1:
        big = draw(shape[:-1] + (2 * shape[-1],))
        return big[..., ::2]
    return np.asarray(draw(shape), dtype=np.float64)


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
layouts = st.sampled_from(["contiguous", "transposed", "strided"])
seeds = st.integers(0, 2 ** 31)


@st.composite
def broadcast_pair(draw):
    """(shape_a, shape_b) that broadcast: b drops leading dims and/or has 1s."""
    a = draw(shapes)
    b = list(a[draw(st.integers(0, len(a) - 1)):])
    for i in range(len(b)):
        if draw(st.booleans()):
            b[i] = 1
    if draw(st.booleans()):
        return tuple(b), a
    return a, tuple(b)


def check(fn, *arrays):
    assert tk.gradcheck(fn, tuple(leaf(a) for a in arrays))


BINARY = {
    "add": (lambda a, b: a + b, "normal", "normal"),
    "sub": (lambda a, b: a - b, "normal", "normal"),
    "mul": (lambda a, b: a * b, "normal", "normal"),
    "div": (lambda a, b: a / b, "normal", "away"),
    "pow": (lambda a, b: a ** b, "positive", "normal"),
    "maximum": (lambda a, b: a.maximum(b), "distinct", "normal"),
    "minimum": (lambda a, b: a.minimum(b), "distinct", "normal"),
    "where": (lambda a, b: tk.where(a > 0.6, a, b), "distinct", "normal"),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@SET
@given(pair=broadcast_pair(), layout=layouts, seed=seeds)
def test_binary_ops(name, pair, layout, seed):
    fn, ka, kb = BINARY[name]
    rng = np.random.default_rng(seed)
    a = make(rng, pair[0], layout, ka)
    b = make(rng, pair[1], "contiguous", kb)
    if name in ("maximum", "minimum"):  # keep a and b apart too
        b = a.mean() + 0.013 + make(rng, pair[1], "contiguous", "distinct") * 1.7
    check(fn, a, b)


UNARY = {
    "neg": (lambda a: -a, "normal"),
    "exp": (lambda a: a.exp(), "normal"),
    "log": (lambda a: a.log(), "positive"),
    "sqrt": (lambda a: a.sqrt(), "positive"),
    "abs": (lambda a: a.abs(), "away"),
    "pow_scalar": (lambda a: a ** 3 + a.abs() ** 0.5 + a ** 0, "away"),
    "rpow_scalar": (lambda a: 2.0 ** a, "normal"),
    "clamp": (lambda a: a.clamp(-0.1, 0.1) + a.clamp(min=0.05), "away"),
    "relu": (lambda a: a.relu(), "away"),
    "leaky_relu": (lambda a: a.leaky_relu(0.1), "away"),
    "sigmoid": (lambda a: a.sigmoid(), "normal"),
    "tanh": (lambda a: a.tanh(), "normal"),
    "gelu": (lambda a: a.gelu(), "normal"),
    "gelu_tanh": (lambda a: a.gelu("tanh"), "normal"),
    "cast": (lambda a: a.to(dtype=tk.float32).to(dtype=tk.float64) * a, "normal"),
    "softmax": (lambda a: a.softmax(-1), "normal"),
    "log_softmax": (lambda a: a.log_softmax(0), "normal"),
    "sin": (lambda a: a.sin(), "normal"),
    "cos": (lambda a: a.cos(), "normal"),
    "log1p": (lambda a: a.log1p(), "positive"),
    # both regimes: beta * a crosses the threshold 1.5 for some inputs
    "softplus": (lambda a: F.softplus(a, beta=2.0, threshold=1.5) + F.softplus(a * 30), "away"),
    "silu": (lambda a: F.silu(a), "normal"),
    "masked_fill": (lambda a: a.masked_fill(a.detach() > 0.5, -2.0), "away"),
    "norm": (lambda a: a.norm() + a.norm(p=1), "away"),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@SET
@given(shape=shapes, layout=layouts, seed=seeds)
def test_unary_ops(name, shape, layout, seed):
    fn, kind = UNARY[name]
    if name == "cast":  # float32 round trip: check only that the gradient flows back
        x = leaf(make(np.random.default_rng(seed), shape, layout))
        fn(x).sum().backward()
        assert x.grad is not None and x.grad.dtype == np.float64
        return
    check(fn, make(np.random.default_rng(seed), shape, layout, kind))


REDUCTIONS = {
    "sum": (lambda a, d, k: a.sum(d, k), "normal"),
    "mean": (lambda a, d, k: a.mean(d, k), "normal"),
    "amax": (lambda a, d, k: a.amax(d, k), "distinct"),
    "amin": (lambda a, d, k: a.amin(d, k), "distinct"),
    # max/min with a dim give (values, indices); the values select one element each
    "max": (lambda a, d, k: a.max(d, k) if d is None else a.max(d, k).values, "distinct"),
    "min": (lambda a, d, k: a.min(d, k) if d is None else a.min(d, k).values, "distinct"),
    "var": (lambda a, d, k: a.var(d, k), "normal"),
    "std": (lambda a, d, k: a.std(d, k, correction=0), "distinct"),
    "logsumexp": (lambda a, d, k: a.logsumexp(d, k), "normal"),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@SET
@given(shape=shapes, layout=layouts, keepdim=st.booleans(), data=st.data())
def test_reductions(name, shape, layout, keepdim, data):
    fn, kind = REDUCTIONS[name]
    dim = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1)))
    if name == "var" and dim is not None and shape[dim] == 1:
        dim = None  # a single element has no unbiased variance (NaN, as in PyTorch)
    if name in ("var", "std") and dim is None and int(np.prod(shape)) == 1:
        return
    if name == "std" and dim is not None and shape[dim] == 1:
        dim = None  # std of one element is 0: its gradient is infinite, as in PyTorch
        if int(np.prod(shape)) == 1:
            return
    a = make(np.random.default_rng(data.draw(seeds)), shape, layout, kind)
    check(lambda t: fn(t, dim, keepdim), a)


@SET
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), layout=layouts,
       data=st.data())
def test_gather(shape, layout, data):
    """torch.gather; indices drawn with repeats, so the scatter-add must accumulate."""
    rng = np.random.default_rng(data.draw(seeds))
    a = make(rng, shape, layout)
    d = data.draw(st.integers(0, len(shape) - 1))
    ishape = tuple(data.draw(st.integers(1, 4)) if k == d else data.draw(st.integers(1, n))
                   for k, n in enumerate(shape))
    idx = tk.tensor(rng.integers(0, shape[d], ishape))
    check(lambda t: t.gather(d, idx), a)


def _put(x, v, index):
    """x with [index] = v, as a graph (SetItem) on a copy so the leaf stays untouched."""
    z = x * 1
    z[index] = v
    return z


@SET
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=3).map(tuple), layout=layouts,
       seed=seeds)
def test_movement_ops(shape, layout, seed):
    rng = np.random.default_rng(seed)
    a = make(rng, shape, layout)
    n = len(shape)
    perm = tuple(rng.permutation(n))
    idx = rng.integers(0, shape[0], 5)  # repeated integer indices accumulate
    check(lambda t: t.reshape(-1).reshape(shape[::-1]), a)
    check(lambda t: t.permute(*perm).transpose(0, -1), a)
    check(lambda t: t.unsqueeze(0).expand(3, *shape).squeeze(), a)
    check(lambda t: t[idx], a)
    check(lambda t: t[..., ::2][:1], a)
    check(lambda t: t[t.detach() > 0.3] if (a > 0.3).any() else t.sum(), a)
    check(lambda t: t.pad((1, 2, 0, 1), value=0.5), a)
    check(lambda x, y: _put(x, y[:1] * 2, slice(0, 1)), a, make(rng, shape, "contiguous"))
    check(lambda x: _put(x, 0.5, tk.tensor(a > 0.3)), a)
    check(lambda x, y: _put(x, y[0], tk.tensor([shape[0] - 1])), a,
          make(rng, shape, "contiguous"))
    check(lambda t: t.flatten(), a)
    b = make(rng, shape, "contiguous")
    check(lambda x, y: tk.cat([x, y, x], dim=-1), a, b)
    check(lambda x, y: tk.stack([x, y], dim=1), a, b)
    check(lambda x: tk.split(x, 1, dim=0)[0] * 2 + tk.split(x, 1, dim=0)[-1], a)
    check(lambda t: t.flip(0, -1) * t.unbind(0)[0], a)
    check(lambda t: t.cumsum(-1) + t.cumsum(0), a)
    if n >= 2:
        check(lambda t: t.tril() + t.triu(1) * 3 + t.tril(-1).triu(-1), a)


@SET
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2),
       st.integers(0, 2), layouts, seeds)
def test_matmul_shapes_like_torch(m, k, n, batch_a, batch_b, layout, seed):
    rng = np.random.default_rng(seed)
    lead_a = (2,) * batch_a
    lead_b = ((1, 2) if batch_b == 2 else (2,) * batch_b)
    a = make(rng, lead_a + (m, k), layout)
    b = make(rng, lead_b + (k, n), "contiguous")
    check(lambda x, y: x @ y, a, b)
    check(lambda x, y: x @ y, make(rng, (k,)), b)             # 1-D @ N-D
    check(lambda x, y: x @ y, a, make(rng, (k,)))             # N-D @ 1-D
    w, bias = make(rng, (n, k)), make(rng, (n,))
    check(lambda x, w_, b_: F.linear(x, w_, b_), a, w, bias)


@SET
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(3, 7),
       st.integers(1, 3), st.integers(1, 2), st.integers(0, 1), layouts, seeds)
def test_conv2d(n, c, o, size, k, stride, pad, layout, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (n, c, size, size), layout)
    w, b = make(rng, (o, c, k, k)), make(rng, (o,))
    check(lambda x_, w_, b_: F.conv2d(x_, w_, b_, stride, pad), x, w, b)


@SET
@given(st.integers(1, 2), st.integers(1, 2), st.integers(1, 2), st.integers(1, 2),
       st.integers(1, 3), st.integers(1, 2), st.sampled_from([0, 1, "same", "valid"]), layouts,
       seeds)
def test_conv_dilated_grouped_and_1d(n, cg, og, groups, k, dilation, pad, layout, seed):
    """Conv2d with dilation, groups and 'same'/'valid' padding; Conv1d (Conv2d on H = 1)."""
    rng = np.random.default_rng(seed)
    size = dilation * (k - 1) + 2
    x = make(rng, (n, cg * groups, size, size + 1), layout)
    w, b = make(rng, (og * groups, cg, k, k)), make(rng, (og * groups,))
    check(lambda x_, w_, b_: F.conv2d(x_, w_, b_, 1, pad, dilation, groups), x, w, b)
    x1, w1 = make(rng, (n, cg * groups, size + 2), layout), make(rng, (og * groups, cg, k))
    check(lambda x_, w_: F.conv1d(x_, w_, None, 1, pad, dilation, groups), x1, w1)


@SET
@given(st.integers(1, 2), st.integers(1, 2), st.integers(1, 2), st.integers(1, 2),
       st.integers(1, 3), st.integers(1, 2), st.integers(1, 2), st.integers(0, 1), layouts,
       seeds)
def test_conv_transpose2d(n, cg, og, groups, k, stride, dilation, pad, layout, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (n, cg * groups, 3, 4), layout)
    w, b = make(rng, (cg * groups, og, k, k)), make(rng, (og * groups,))
    out_pad = (seed % max(stride, dilation), 0)
    check(lambda x_, w_, b_: F.conv_transpose2d(x_, w_, b_, stride, pad, out_pad, groups,
                                                dilation), x, w, b)


@SET
@given(st.integers(1, 2), st.integers(1, 3), st.integers(2, 7), st.integers(1, 3),
       st.integers(1, 3), layouts, seeds)
def test_pooling(n, c, size, k, stride, layout, seed):
    k = min(k, size)
    pad = k // 2 if seed % 2 else 0
    x = make(np.random.default_rng(seed), (n, c, size, size), layout, "distinct")
    check(lambda t: F.max_pool2d(t, k, stride, pad), x)
    check(lambda t: F.avg_pool2d(t, k, stride, pad), x)
    # dilation, ceil_mode, the other divisor rules, and the 1-D forms
    check(lambda t: F.max_pool2d(t, k, stride, pad, 1 + seed % 2, True), x)
    check(lambda t: F.avg_pool2d(t, k, stride, pad, True, False, None), x)
    check(lambda t: F.avg_pool2d(t, k, stride, pad, False, True, 3), x)
    check(lambda t: F.max_pool1d(t[:, :, 0], k, stride, pad, 1, True), x)
    check(lambda t: F.avg_pool1d(t[:, :, 0], k, stride, pad, True, False), x)


@SET
@given(st.integers(1, 5), st.integers(2, 5), st.floats(0.0, 0.3), st.sampled_from(
    ["mean", "sum", "none"]), seeds)
def test_cross_entropy_and_bias_relu(n, c, smoothing, reduction, seed):
    rng = np.random.default_rng(seed)
    z = make(rng, (n, c))
    t = tk.tensor(rng.integers(0, c, n))
    check(lambda z_: F.cross_entropy(z_, t, reduction=reduction, label_smoothing=smoothing), z)
    x, b = make(rng, (n, c, 2, 2), "transposed", "away"), make(rng, (c,)) * 0.01
    check(lambda x_, b_: F.bias_relu(x_, b_), x, b)


@SET
@given(st.integers(2, 4), st.integers(1, 3), st.sampled_from([(), (3, 2)]), seeds)
def test_norms(n, c, spatial, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (n, c) + spatial)
    check(_batch_norm, x, make(rng, (c,)), make(rng, (c,)))
    ln_shape = x.shape[-1:]
    check(lambda x_, g, b: _layer_norm(x_, g, b), x, make(rng, ln_shape), make(rng, ln_shape))


def _batch_norm(x, g, b):
    from tinygrad_k.ops.norm import BatchNormTrain

    return BatchNormTrain.apply(x, g, b, 1e-5, {})


def _layer_norm(x, g, b):
    from tinygrad_k.ops.norm import LayerNorm

    return LayerNorm.apply(x, g, b, 1e-5)


def test_dropout_gradient_is_the_mask():
    x = leaf(np.random.default_rng(0).standard_normal((50, 40)))
    u = np.random.default_rng(1).random((50, 40))
    y = N.Dropout.apply(x, 0.3, u)
    y.sum().backward()
    mask = (u >= 0.3) / 0.7
    np.testing.assert_allclose(x.grad.numpy(), mask)
    np.testing.assert_allclose(y.numpy(), x.numpy() * mask)
    assert tk.gradcheck(lambda t: N.Dropout.apply(t, 0.3, u) * t, (x,))


@SET
@given(st.integers(1, 4), st.integers(1, 4), st.sampled_from(["mean", "sum", "none"]), seeds)
def test_binary_cross_entropy(n, c, reduction, seed):
    rng = np.random.default_rng(seed)
    y, w = tk.tensor(rng.uniform(0, 1, (n, c))), tk.tensor(rng.uniform(0.5, 1.5, (n, c)))
    pw = tk.tensor(rng.uniform(0.5, 2.0, (c,)))
    check(lambda z: F.binary_cross_entropy(z.sigmoid(), y, w, reduction=reduction),
          make(rng, (n, c)))
    check(lambda z: F.binary_cross_entropy_with_logits(z * 3, y, w, reduction=reduction,
                                                        pos_weight=pw),
          make(rng, (n, c), "transposed"))


@SET
@given(st.integers(1, 4), st.integers(1, 3), st.sampled_from([(), (3,), (2, 2)]), seeds)
def test_batch_norm_eval(n, c, spatial, seed):
    rng = np.random.default_rng(seed)
    mean, var = tk.tensor(rng.standard_normal(c)), tk.tensor(rng.uniform(0.5, 2.0, c))
    check(lambda x, g, b: F.batch_norm(x, mean, var, g, b, training=False),
          make(rng, (n, c) + spatial), make(rng, (c,)), make(rng, (c,)))


@SET
@given(st.integers(1, 5), st.integers(1, 3), seeds)
def test_embedding(rows, dim, seed):
    """Indices repeat, so the scatter-add of dW must accumulate. (``padding_idx`` withholds
    its row's gradient on purpose, as PyTorch: not a derivative, so it is checked against
    PyTorch in test_op_parity.py instead.)"""
    rng = np.random.default_rng(seed)
    idx = tk.tensor(rng.integers(0, rows, (2, 4)))
    check(lambda w: F.embedding(idx, w), make(rng, (rows, dim)))


def test_to_device_and_cast():
    """The round trip through the (simulated) cuda device, and a float32 cast: eps 1e-3
    keeps float32 rounding (~1e-7) far below the finite-difference signal."""
    x = leaf(np.random.default_rng(0).standard_normal((3, 4)))
    assert tk.gradcheck(lambda t: (t.to("cuda") * t.to("cuda")).to("cpu"), (x,))
    assert tk.gradcheck(lambda t: t.to(dtype=tk.float32).to(dtype=tk.float64) * t, (x,),
                        eps=1e-3, atol=1e-3)


@SET
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.booleans(), seeds)
def test_einsum_gradients(m, k, n, broadcast, seed):
    """Einsum: products, a letter summed over one operand alone, broadcast ellipsis."""
    rng = np.random.default_rng(seed)
    a = make(rng, (2, m, k), "transposed")
    b = make(rng, (1 if broadcast else 2, k, n), "contiguous")
    c = make(rng, (n,), "contiguous")
    check(lambda x, y: tk.einsum("...ij,...jk->...ik", x, y), a, b)
    check(lambda x, y, z: tk.einsum("bij,bjk,k->i", x, y, z), a, b, c)
    check(lambda x: tk.einsum("bij->j", x) * 1.5, a)


def test_topk_sort_gradients_go_to_the_picked_elements():
    rng = np.random.default_rng(0)
    a = make(rng, (3, 5), "transposed", "distinct")
    check(lambda t: tk.topk(t, 2, dim=1).values.sum(1, keepdim=True)
          * tk.sort(t, 0, descending=True).values[:1], a)
    check(lambda t: t.log10() + t.log2(), make(rng, (3, 4), "contiguous", "positive"))


@SET
@given(st.integers(1, 3), st.sampled_from([(1, 2), (2, 4), (3, 3)]), st.sampled_from(
    [(), (3,), (2, 3)]), st.booleans(), layouts, seeds)
def test_group_norm(n, groups_channels, spatial, affine, layout, seed):
    g, c = groups_channels
    rng = np.random.default_rng(seed)
    x = make(rng, (n, c) + spatial, layout)
    if affine:
        check(lambda x_, w, b: F.group_norm(x_, g, w, b), x, make(rng, (c,)), make(rng, (c,)))
    else:
        check(lambda x_: F.group_norm(x_, g), x)


@SET
@given(st.sampled_from(["reflect", "replicate", "circular"]), st.integers(3, 5),
       st.integers(3, 5), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), layouts,
       seeds)
def test_pad_modes(mode, h, w, p0, p1, p2, layout, seed):
    """Each padded copy adds its gradient to its source (corners get several)."""
    x = make(np.random.default_rng(seed), (2, 2, h, w), layout)
    check(lambda t: F.pad(t, (p0, p1, p2, p0), mode=mode), x)
    check(lambda t: F.pad(t[0], (p1, p2), mode=mode), x)


@SET
@given(st.sampled_from([("nearest", None), ("bilinear", False), ("bilinear", True)]),
       st.integers(1, 4), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), layouts,
       seeds)
def test_interpolate(mode_ac, h, w, oh, ow, layout, seed):
    mode, ac = mode_ac
    x = make(np.random.default_rng(seed), (2, 2, h, w), layout)
    check(lambda t: F.interpolate(t, size=(oh, ow), mode=mode, align_corners=ac), x)
    check(lambda t: F.interpolate(t, scale_factor=1.5, mode=mode, align_corners=ac), x)
    if mode == "bilinear":
        check(lambda t: F.interpolate(t[0], size=oh, mode="linear", align_corners=ac), x)
