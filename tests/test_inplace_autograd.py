"""In-place ops, version counters, .data/detach, tensor indexing and autograd introspection,
each against PyTorch (issue 11, items 1, 2, 5, 6)."""
import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import autograd

torch = pytest.importorskip("torch")


def both(a):
    a = np.asarray(a, np.float32)
    return tk.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def error_of(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the text is what is compared
        return type(e).__name__, str(e)
    return None


def head(err):
    """The part of torch's message we match word for word (before its hint)."""
    return (err[0], err[1].split(" Hint:")[0]) if err else err


RNG = np.random.default_rng(0)
A = RNG.standard_normal((3, 4)).astype(np.float32)


# -- version counters ---------------------------------------------------------------------
def test_modifying_a_saved_tensor_raises_torchs_error():
    def x_plus_5(lib):
        def run():
            a = (tk if lib == "tk" else torch).tensor(A, requires_grad=True)
            x = a * 2
            y = x * x
            x += 5
            y.sum().backward()
        return run

    ours, theirs = error_of(x_plus_5("tk")), error_of(x_plus_5("torch"))
    assert theirs is not None and head(ours) == head(theirs)
    assert "is at version 1; expected version 0 instead" in ours[1]
    assert "which is output 0 of Add," in ours[1]


def test_zeroing_a_saved_output_raises():
    def h_zero(lib):
        m = tk if lib == "tk" else torch

        def run():
            a = m.tensor(A, requires_grad=True)
            h = a.tanh()
            y = h.sum() * 1
            z = (h * 3).sum()
            h.zero_()
            (y + z).backward()
        return run

    ours, theirs = error_of(h_zero("tk")), error_of(h_zero("torch"))
    assert ours[0] == "RuntimeError" and "modified by an inplace operation" in ours[1]
    assert theirs[0] == "RuntimeError"
    assert "[torch.FloatTensor [3, 4]]" in ours[1]


def test_leaf_saved_then_changed_under_no_grad():
    def run(m):
        w = m.tensor(A[0], requires_grad=True)
        y = (w * w).sum()
        with m.no_grad():
            w.add_(1)
        y.backward()
    assert head(error_of(lambda: run(tk))) == head(error_of(lambda: run(torch)))


def test_versions_count_like_torch():
    for m in (tk, torch):
        a = m.zeros(3)
        v = a[1:]
        v.add_(1)
        d = a.data
        d.add_(1)           # .data: not tracked
        e = a.detach()
        e.mul_(2)           # detach(): tracked
        a += 1
        assert (a._version, v._version, d._version, e._version) == (3, 3, 1, 3), m
        np.testing.assert_allclose(np.asarray(a.tolist()), [3, 5, 5])


def test_inplace_on_non_leaf_rebases_grad_fn_and_gradients_match():
    outs = []
    for m in (tk, torch):
        a = m.tensor(A, requires_grad=True)
        b = m.tensor(A[0] + 1, requires_grad=True)
        x = a * 2
        x.add_(b, alpha=3)
        x.mul_(b)
        x.sub_(1).div_(2)
        x.clamp_(-1.0, 2.0)
        x[0] = b * 0.5
        x.masked_fill_(a.detach() > 1.0, 0.25)
        x.sigmoid_()
        assert x.grad_fn.name() == "SigmoidBackward0"
        x.sum().backward()
        outs.append((x.detach().numpy().copy(), a.grad.numpy(), b.grad.numpy()))
    for o, t in zip(*outs):
        np.testing.assert_allclose(o, t, rtol=1e-5, atol=1e-6)


def test_inplace_ops_values_match_torch_without_grad():
    ops = [("add_", (2.0,)), ("sub_", (0.5,)), ("mul_", (3.0,)), ("div_", (4.0,)),
           ("pow_", (2,)), ("clamp_", (-0.5, 0.5)), ("clamp_min_", (0.1,)),
           ("clamp_max_", (0.2,)), ("neg_", ()), ("exp_", ()), ("abs_", ()), ("relu_", ()),
           ("sigmoid_", ()), ("tanh_", ()), ("sin_", ()), ("cos_", ()), ("zero_", ()),
           ("fill_", (7.0,))]
    for name, args in ops:
        ours, theirs = tk.tensor(A), torch.tensor(A)
        r = getattr(ours, name)(*args)
        getattr(theirs, name)(*args)
        assert r is ours and ours._version == theirs._version == 1, name
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, err_msg=name)
    pos = np.abs(A) + 0.5
    for name in ("sqrt_", "log_"):
        ours, theirs = tk.tensor(pos), torch.tensor(pos)
        getattr(ours, name)()
        getattr(theirs, name)()
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
    ours, theirs = tk.tensor(A), torch.tensor(A)
    ours.copy_(tk.tensor(A[0]))
    theirs.copy_(torch.tensor(A[0]))
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_dtype_and_shape_errors_of_inplace_ops():
    ours = error_of(lambda: tk.tensor([1, 2]).add_(1.5))
    theirs = error_of(lambda: torch.tensor([1, 2]).add_(1.5))
    assert ours[0] == theirs[0] == "RuntimeError"
    assert "result type Float can't be cast to the desired output type Long" in ours[1]
    assert error_of(lambda: tk.zeros(3).add_(tk.zeros(2, 3)))[0] == "RuntimeError"


def test_random_fills_bump_the_version():
    t = tk.zeros(1000)
    t.normal_(2.0, 0.5)
    assert t._version == 1 and abs(float(t.mean()) - 2.0) < 0.1
    t.uniform_(-1, 1)
    assert t._version == 2 and float(t.min()) >= -1 and float(t.max()) < 1


# -- leaves ---------------------------------------------------------------------------
def test_leaf_errors_match_torch():
    for make in (lambda m: m.tensor(A, requires_grad=True),):
        for op in (lambda w: w.add_(1), lambda w: w.__iadd__(1), lambda w: w.zero_(),
                   lambda w: w.__setitem__(0, 1.0), lambda w: w[0].add_(1)):
            ours = error_of(lambda: op(make(tk)))
            theirs = error_of(lambda: op(make(torch)))
            assert ours == theirs, (ours, theirs)


def test_no_grad_updates_parameters_in_place():
    for m in (tk, torch):
        w = m.tensor(A, requires_grad=True)
        ref = w
        (w * w).sum().backward()
        with m.no_grad():
            w -= 0.1 * w.grad
            w.add_(1)
        assert w is ref and w.is_leaf and w.requires_grad and w._version == 2
    np.testing.assert_allclose(w.detach().numpy(), A - 0.2 * A + 1, rtol=1e-6)


def test_data_idioms_update_the_parameter():
    w = tk.tensor(A, requires_grad=True)
    (w * w).sum().backward()
    w.data += -0.1 * w.grad
    w.data.sub_(0.1 * w.grad)
    np.testing.assert_allclose(w.detach().numpy(), A - 0.4 * A, rtol=1e-6)
    d = w.data
    assert isinstance(d, tk.Tensor) and not d.requires_grad and d.grad_fn is None
    assert np.shares_memory(d.numpy(), w.numpy())
    w.data = tk.ones(2)
    assert w.shape == (2,) and w.requires_grad


# -- views ----------------------------------------------------------------------------
def test_views_share_storage_like_torch():
    for m in (tk, torch):
        x = m.zeros(2, 3)
        x.view(6)[1] = 1
        x.reshape(3, 2)[2].fill_(2)
        x.t()[0, 1] = 3
        x[1][2] = 4
        x.unsqueeze(0)[0, 0, 0] = 5
        x[:, 1:].mul_(10)
        assert x.tolist() == [[5.0, 10.0, 0.0], [3.0, 20.0, 40.0]], m


# -- indexing ---------------------------------------------------------------------------
def test_zero_d_integer_tensors_are_python_indices():
    classes = ["a", "b", "c"]
    assert classes[tk.tensor(2)] == "c" and [1, 2][tk.tensor([1])] == 2
    assert range(10)[tk.tensor(3, dtype=tk.int32)] == 3
    ours = error_of(lambda: [1, 2][tk.tensor(1.0)])
    theirs = error_of(lambda: [1, 2][torch.tensor(1.0)])
    assert ours == theirs


def test_tensor_indexing_get_and_set_with_gradients():
    idx = np.array([2, 0, 2])
    outs = []
    for m in (tk, torch):
        a = m.tensor(A, requires_grad=True)
        mask = a.detach() > 0
        y = a[mask].sum() * 2 + (a[m.tensor(idx)] ** 2).sum()
        z = a * 1
        z[mask] = 0.0
        z[m.tensor([1])] = a[0] * 3
        (y + z.sum()).backward()
        with m.no_grad():
            b = m.tensor(A)
            b[b > 0] = 0
            b[m.tensor([0, 2])] = m.tensor(A[1])
        outs.append((a.grad.numpy().copy(), z.detach().numpy().copy(), b.numpy().copy()))
    for o, t in zip(*outs):
        np.testing.assert_allclose(o, t, rtol=1e-6)


def test_setitem_bumps_version_and_is_refused_after_saving():
    def run(m):
        a = m.tensor(A, requires_grad=True)
        x = a.exp()
        y = x * x
        x[0] = 0
        y.sum().backward()
    ours, theirs = error_of(lambda: run(tk)), error_of(lambda: run(torch))
    assert ours[0] == theirs[0] == "RuntimeError"
    assert "modified by an inplace operation" in ours[1] and "CopySlices" in ours[1]


# -- grad_fn and hooks -----------------------------------------------------------------
def test_grad_fn_names_and_next_functions():
    for m in (tk, torch):
        a = m.tensor(A, requires_grad=True)
        c = m.tensor(A)
        x = a * c
        names = [x.grad_fn.name(), (a @ a.t()).grad_fn.name(), a.sum().grad_fn.name(),
                 a.mean().grad_fn.name(), a.relu().grad_fn.name(), (a / 2).grad_fn.name(),
                 a.exp().grad_fn.name(), a.permute(1, 0).grad_fn.name(),
                 a.view(12).grad_fn.name(), a.log_softmax(1).grad_fn.name(),
                 a.expand(2, 3, 4).grad_fn.name(), a.tanh().grad_fn.name(),
                 a.sigmoid().grad_fn.name(), a[m.tensor([0])].grad_fn.name()]
        (acc, _), (none, _) = x.grad_fn.next_functions
        assert acc.name() == "torch::autograd::AccumulateGrad" and acc.variable is a
        assert none is None
        (mul, _), = x.sum().grad_fn.next_functions
        assert mul is x.grad_fn
        if m is tk:
            ours = names
        else:
            assert ours == names


def test_hooks_and_retain_grad_like_torch():
    outs = []
    for m in (tk, torch):
        a = m.tensor(A, requires_grad=True)
        seen = []
        h = a * 2
        h.retain_grad()
        h.register_hook(lambda g: seen.append(g.sum().item()))
        a.register_hook(lambda g: g * 10)
        handle = h.register_hook(lambda g: g * 0)
        handle.remove()
        node_seen = []
        h.grad_fn.register_hook(lambda gi, go: node_seen.append(len(gi)))
        (h * h).sum().backward()
        outs.append((a.grad.numpy().copy(), h.grad.numpy().copy(), seen, node_seen))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-6)
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-6)
    assert outs[0][2] == pytest.approx(outs[1][2], rel=1e-5) and outs[0][3] == outs[1][3]


def test_autograd_grad_like_torch():
    res = []
    for m in (tk, torch):
        a = m.tensor(A, requires_grad=True)
        b = m.tensor(A[0], requires_grad=True)
        u = m.tensor(A[1], requires_grad=True)
        h = a * b
        y = (h.tanh() * 3).sum()
        ga, gh = m.autograd.grad(y, [a, h], retain_graph=True)
        gb, gu = m.autograd.grad([y], (b, u), allow_unused=True, retain_graph=True)
        gv, = m.autograd.grad(h, b, grad_outputs=m.ones(3, 4), retain_graph=True)
        assert a.grad is None and b.grad is None and gu is None
        res.append([t.numpy().copy() for t in (ga, gh, gb, gv)])
    for o, t in zip(*res):
        np.testing.assert_allclose(o, t, rtol=1e-5)
    a = tk.tensor(A, requires_grad=True)
    y = a.sum()
    with pytest.raises(RuntimeError, match="appears to not have been used"):
        autograd.grad(y, tk.tensor(A, requires_grad=True))
    with pytest.raises(NotImplementedError, match="differ from torch on purpose"):
        autograd.grad(y, a, create_graph=True)


def test_backward_inputs_accumulates_only_there():
    a, b = tk.tensor(A, requires_grad=True), tk.tensor(A, requires_grad=True)
    (a * b).sum().backward(inputs=[a])
    assert b.grad is None
    np.testing.assert_allclose(a.grad.numpy(), A)


# -- custom autograd.Function (the PyTorch tutorial, unchanged) ---------------------------
def _legendre(m):
    class LegendrePolynomial3(m.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return 0.5 * (5 * input ** 3 - 3 * input)

        @staticmethod
        def backward(ctx, grad_output):
            input, = ctx.saved_tensors
            return grad_output * 1.5 * (5 * input ** 2 - 1)

    class MyReLU(m.autograd.Function):
        @staticmethod
        def forward(ctx, input, slope):
            ctx.save_for_backward(input)
            ctx.slope = slope
            return input.clamp(min=0) * slope

        @staticmethod
        def backward(ctx, grad_output):
            input, = ctx.saved_tensors
            assert ctx.needs_input_grad == (True, False)
            grad_input = grad_output.clone()
            grad_input[input < 0] = 0
            return grad_input * ctx.slope, None

    return LegendrePolynomial3, MyReLU


def test_custom_function_from_the_pytorch_tutorial():
    res = []
    for m in (tk, torch):
        P3, MyReLU = _legendre(m)
        x = m.tensor(A, requires_grad=True)
        y = MyReLU.apply(P3.apply(x), 2.0)
        assert y.grad_fn.name() == "MyReLUBackward"
        y.sum().backward()
        res.append((y.detach().numpy().copy(), x.grad.numpy().copy()))
    for o, t in zip(*res):
        np.testing.assert_allclose(o, t, rtol=1e-5)
    P3, _ = _legendre(tk)
    x = tk.tensor(A, requires_grad=True)
    z = x * 1
    y = P3.apply(z)
    z.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
