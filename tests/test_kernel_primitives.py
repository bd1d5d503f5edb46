"""kernels.cpu against kernels.reference (and the reference against PyTorch) on
hypothesis-drawn shapes: odd sizes, batch 1, channels 1, strides 1-3, padding 0-2,
kernels 1-5, non-contiguous inputs, float32 and float64."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels import cpu, reference

TOL = {np.float32: 2e-6, np.float64: 1e-12}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def rand(rng, shape, dtype, layout):
    """An array of ``shape``: contiguous, a transposed view or a strided slice."""
    if layout == "transposed" and len(shape) >= 2:
        base = rng.standard_normal(shape[::-1]).astype(dtype)
        return base.transpose(tuple(range(len(shape)))[::-1])
    if layout == "strided":
        base = rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)
        return base[..., ::2]
    return rng.standard_normal(shape).astype(dtype)


@st.composite
def conv_case(draw):
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    h = draw(st.integers(max(1, k[0] - 2 * p[0]), 13))
    w = draw(st.integers(max(1, k[1] - 2 * p[1]), 13))
    return (n, c, h, w), (o, c) + k, s, p


@st.composite
def pool_case(draw):
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    h = draw(st.integers(max(1, k[0] - 2 * p[0]), 13))
    w = draw(st.integers(max(1, k[1] - 2 * p[1]), 13))
    return (n, c, h, w), k, s, p


DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = st.sampled_from(["contiguous", "transposed", "strided"])


@settings(max_examples=40, deadline=None)
@given(conv_case(), DTYPES, LAYOUTS, st.integers(0, 2 ** 31))
def test_conv2d_cpu_matches_reference(case, dtype, layout, seed):
    xs, ws, s, p = case
    rng = np.random.default_rng(seed)
    x, w = rand(rng, xs, dtype, layout), rand(rng, ws, dtype, "contiguous")
    y = cpu.conv2d_forward(x, w, s, p)
    y_ref = reference.conv2d_forward(x, w, s, p)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert rel(y, y_ref) < TOL[dtype]
    dy = rand(rng, y.shape, dtype, layout)
    assert rel(cpu.conv2d_backward_input(dy, w, xs, s, p),
               reference.conv2d_backward_input(dy, w, xs, s, p)) < TOL[dtype]
    assert rel(cpu.conv2d_backward_weight(dy, x, ws, s, p),
               reference.conv2d_backward_weight(dy, x, ws, s, p)) < TOL[dtype]


def test_cpu_conv_results_never_alias_the_reused_workspace():
    """kernels.cpu reuses one scratch buffer across calls; what it returns must be fresh."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, 2, 3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    y1 = cpu.conv2d_forward(x1, w, 1, 1)
    y1_copy = y1.copy()
    dx1 = cpu.conv2d_backward_input(y1, w, x1.shape, 1, 1)
    dx1_copy = dx1.copy()
    dw1 = cpu.conv2d_backward_weight(y1, x1, w.shape, 1, 1)
    dw1_copy = dw1.copy()
    cpu.conv2d_forward(x2, w, 1, 1)
    cpu.conv2d_backward_input(y1 * 2, w, x1.shape, 1, 1)
    cpu.conv2d_backward_weight(y1 * 3, x2, w.shape, 1, 1)
    np.testing.assert_array_equal(y1, y1_copy)
    np.testing.assert_array_equal(dx1, dx1_copy)
    np.testing.assert_array_equal(dw1, dw1_copy)
    assert rel(y1, reference.conv2d_forward(x1, w, 1, 1)) < 1e-12


@pytest.mark.parametrize("lowering", ["fold batch", "batched", "per sample"])
@settings(max_examples=10, deadline=None)
@given(case=conv_case(), seed=st.integers(0, 2 ** 31))
def test_conv2d_backward_weight_every_lowering(lowering, case, seed):
    """kernels.cpu picks one of three lowerings of dW by size; force each in turn."""
    xs, ws, s, p = case
    rng = np.random.default_rng(seed)
    x, w = rand(rng, xs, np.float64, "contiguous"), rand(rng, ws, np.float64, "contiguous")
    dy = rand(rng, reference.conv2d_forward(x, w, s, p).shape, np.float64, "strided")
    limits = {"fold batch": (10 ** 9, 10 ** 9), "batched": (0, 10 ** 9), "per sample": (0, 0)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu, "_FOLD_BATCH_BELOW_L", limits[lowering][0])
        mp.setattr(cpu, "_BATCHED_DW_BYTES", limits[lowering][1])
        got = cpu.conv2d_backward_weight(dy, x, ws, s, p)
    assert rel(got, reference.conv2d_backward_weight(dy, x, ws, s, p)) < 1e-12


@settings(max_examples=40, deadline=None)
@given(pool_case(), DTYPES, LAYOUTS, st.integers(0, 2 ** 31))
def test_pooling_cpu_matches_reference(case, dtype, layout, seed):
    xs, k, s, p = case
    rng = np.random.default_rng(seed)
    x = rand(rng, xs, dtype, layout)
    y, arg = cpu.maxpool2d_forward(x, k, s, p)
    y_ref, arg_ref = reference.maxpool2d_forward(x, k, s, p)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    assert arg.dtype == np.int64
    dy = rand(rng, y.shape, dtype, "contiguous")
    assert rel(cpu.maxpool2d_backward(dy, arg, xs), reference.maxpool2d_backward(dy, arg, xs)) \
        < TOL[dtype]
    assert rel(cpu.avgpool2d_forward(x, k, s, p), reference.avgpool2d_forward(x, k, s, p)) \
        < TOL[dtype]
    assert rel(cpu.avgpool2d_backward(dy, xs, k, s, p),
               reference.avgpool2d_backward(dy, xs, k, s, p)) < TOL[dtype]


PRIMES = st.sampled_from([1, 2, 3, 5, 7, 13, 17, 31])


@settings(max_examples=40, deadline=None)
@given(PRIMES, PRIMES, PRIMES, st.booleans(), st.booleans(), st.integers(0, 3), DTYPES,
       st.integers(0, 2 ** 31))
def test_matmul_cpu_matches_reference(m, k, n, ta, tb, batch, dtype, seed):
    rng = np.random.default_rng(seed)
    lead = (batch,) if batch else ()
    a = rng.standard_normal(lead + ((k, m) if ta else (m, k))).astype(dtype)
    b = rng.standard_normal(lead + ((n, k) if tb else (k, n))).astype(dtype)
    out = cpu.matmul(a, b, trans_a=ta, trans_b=tb)
    assert out.shape == lead + (m, n) and out.dtype == dtype
    assert rel(out, reference.matmul(a, b, ta, tb)) < TOL[dtype]
    a64 = np.swapaxes(a, -1, -2) if ta else a
    b64 = np.swapaxes(b, -1, -2) if tb else b
    assert rel(reference.matmul(a, b, ta, tb), a64.astype(np.float64) @ b64) < TOL[dtype]


@settings(max_examples=25, deadline=None)
@given(conv_case(), pool_case(), st.integers(0, 2 ** 31))
def test_reference_matches_pytorch(ccase, pcase, seed):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    xs, ws, s, p = ccase
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    tx, tw = torch.tensor(x), torch.tensor(w)
    y = reference.conv2d_forward(x, w, s, p)
    assert rel(y, F.conv2d(tx, tw, stride=s, padding=p).numpy()) < 1e-12
    dy = rng.standard_normal(y.shape)
    tdy = torch.tensor(dy)
    assert rel(reference.conv2d_backward_input(dy, w, xs, s, p),
               torch.nn.grad.conv2d_input(xs, tw, tdy, s, p).numpy()) < 1e-12
    assert rel(reference.conv2d_backward_weight(dy, x, ws, s, p),
               torch.nn.grad.conv2d_weight(tx, ws, tdy, s, p).numpy()) < 1e-12

    xs, k, s, p = pcase
    x = rng.standard_normal(xs)
    tx = torch.tensor(x, requires_grad=True)
    ty, tidx = F.max_pool2d(tx, k, s, p, return_indices=True)
    y, arg = reference.maxpool2d_forward(x, k, s, p)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(arg, tidx.numpy())
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    assert rel(reference.maxpool2d_backward(g, arg, xs), tx.grad.numpy()) < 1e-12
    tx.grad = None
    ta = F.avg_pool2d(tx, k, s, p)
    assert rel(reference.avgpool2d_forward(x, k, s, p), ta.detach().numpy()) < 1e-12
    ta.backward(torch.tensor(g))
    assert rel(reference.avgpool2d_backward(g, xs, k, s, p), tx.grad.numpy()) < 1e-12


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (2, 1, 1), (3, 3, 0)])
@pytest.mark.parametrize("nan", [False, True])
def test_max_pool_cpu_fast_path_and_general_kernel_agree(k, s, p, nan):
    """kernels.cpu has a compile-time-specialised max-pool for common windows without
    NaN and a general kernel for the rest; both must give the reference's values and
    argmax."""
    rng = np.random.default_rng(k * 10 + s)
    x = rng.standard_normal((3, 4, 11, 9)).astype(np.float32)
    x[:, :, ::3, ::2] = 0.5  # ties inside windows
    if nan:  # routes the call to the general kernel
        x[1, 2, 4, 4] = x[2, 0, 0, 1] = np.nan
    y, arg = cpu.maxpool2d_forward(x, k, s, p)
    y_ref, arg_ref = reference.maxpool2d_forward(x, k, s, p)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    assert (k, k, s, s, p, p) in cpu._FIXED_POOLS  # the case really exercises the fast path


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_max_pool_nan_and_ties(impl):
    mod = kernels.get(impl)
    x = np.array([[[[1.0, 1.0], [np.nan, 0.0]]]], dtype=np.float32)
    y, arg = mod.maxpool2d_forward(x, 2, 2, 0)
    assert np.isnan(y[0, 0, 0, 0]) and arg[0, 0, 0, 0] == 2  # NaN propagates, like torch
    x = np.ones((1, 1, 2, 2), dtype=np.float32)
    y, arg = mod.maxpool2d_forward(x, 2, 2, 0)
    assert arg[0, 0, 0, 0] == 0  # first maximum wins a tie


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_bad_arguments_name_the_primitive_and_shapes(impl):
    mod = kernels.get(impl)
    x = np.zeros((1, 3, 8, 8), np.float32)
    w = np.zeros((2, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"conv2d_forward.*\(1, 3, 8, 8\).*4"):
        mod.conv2d_forward(x, w, 1, 0)
    with pytest.raises(ValueError, match="matmul.*inner sizes"):
        mod.matmul(np.zeros((3, 4), np.float32), np.zeros((5, 6), np.float32))
    with pytest.raises(ValueError, match="padding"):
        mod.maxpool2d_forward(x, 2, 2, 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        mod.conv2d_forward(x.astype(np.int32), w.astype(np.int32)[:, :3], 1, 0)
    with pytest.raises(ValueError, match="empty output"):
        mod.conv2d_forward(np.zeros((1, 3, 2, 2), np.float32), w[:, :3], 1, 0)


def test_implementations_are_listed_and_loadable():
    assert kernels.IMPLEMENTATIONS == ("reference", "cpu", "cuda")
    assert kernels.get("cpu") is cpu
    with pytest.raises(ValueError, match="unknown kernel implementation"):
        kernels.get("opencl")
