"""kernels.cpu_fused against NumPy (and PyTorch's NaN rules) on random shapes, dtypes,
layouts and values, special values included."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.cpu_fused as F
from tinygrad_k.backend import Backend

numpy_backend = Backend(np, None)  # the NumPy compositions every device starts from

DTYPES = st.sampled_from([np.float32, np.float64])


@pytest.fixture(autouse=True, scope="module", params=["serial", "parallel"])
def launch(request):
    """Every test twice: small arrays run on the calling thread (F._SERIAL_BELOW), so the
    parallel launch is forced once by lowering that threshold to 0."""
    saved = F._SERIAL_BELOW
    F._SERIAL_BELOW = saved if request.param == "serial" else 0
    yield request.param
    F._SERIAL_BELOW = saved


@st.composite
def arrays(draw, min_dims=1):
    """(array, dtype): random shape (a 0-sample batch too), values with NaN/inf/+-0 mixed
    in, and sometimes a transposed (non-contiguous) layout."""
    dtype = draw(DTYPES)
    ndim = draw(st.integers(min_dims, 4))
    shape = tuple(draw(st.integers(0 if i == 0 else 1, 5)) for i in range(ndim))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31)))
    a = rng.standard_normal(shape).astype(dtype)
    if a.size and draw(st.booleans()):
        specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype)
        mask = rng.random(shape) < 0.2
        a[mask] = rng.choice(specials, mask.sum())
    if ndim >= 2 and draw(st.booleans()):
        a = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    return a, dtype


def same(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)  # NaN == NaN here, -0.0 == 0.0


@settings(max_examples=40, deadline=None)
@given(arrays(), st.integers(0, 2 ** 31))
def test_relu_and_relu_backward(case, seed):
    x, dtype = case
    y = F.relu(x)
    same(y, np.maximum(x, 0))
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal(x.shape).astype(dtype)
    dy[rng.random(x.shape) < 0.1] = np.nan
    same(F.relu_backward(dy, y), numpy_backend.relu_backward(dy, y))
    # PyTorch's threshold_backward: 0 wherever y <= 0 (even for a NaN gradient), dy
    # elsewhere (a NaN output passes its gradient on)
    want = np.where(y <= 0, 0, dy).astype(dtype)
    same(F.relu_backward(dy, y), want)


@settings(max_examples=40, deadline=None)
@given(arrays(min_dims=2))
def test_channel_bias_ops(case):
    x, dtype = case
    b = np.random.default_rng(x.size).standard_normal(x.shape[1]).astype(dtype)
    same(F.bias_relu(x, b), numpy_backend.bias_relu(x, b))
    y = np.array(x)  # contiguous copy: add_channel_bias_ works in place
    got = F.add_channel_bias_(y, b)
    assert got is y
    same(y, numpy_backend.add_channel_bias_(np.array(x), b))
    g = np.where(np.isfinite(x), x, 1.5).astype(dtype)  # sums: finite values, any layout
    got, want = F.channel_sum(g), numpy_backend.channel_sum(g.astype(np.float64))
    assert got.shape == want.shape and got.dtype == dtype
    assert np.allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                       atol=1e-5 * max(1.0, np.abs(g).sum()))


def test_add_channel_bias_on_a_view_writes_through():
    base = np.zeros((3, 4, 5), np.float32)
    view = base[:, :, ::2]  # not contiguous: the NumPy fallback, still in place
    F.add_channel_bias_(view, np.arange(4, dtype=np.float32))
    assert (base[:, 2, ::2] == 2).all() and (base[:, :, 1::2] == 0).all()


@pytest.mark.parametrize("name", F.__all__)
def test_cpu_backend_routes_to_the_fused_kernels(name):
    from tinygrad_k.backend import CPUBackend

    backend = CPUBackend()
    assert getattr(backend, name).__func__ is not getattr(Backend, name)


def _rel(got, want, scale=None):
    """||got - want|| / (||want|| + ||scale||), NaNs (which must agree) left out; scale
    is the size of the terms summed into want, where they cancel."""
    keep = ~(np.isnan(got) & np.isnan(want))
    assert (np.isnan(got) == np.isnan(want)).all()
    num = np.linalg.norm((got.astype(np.float64) - want)[keep])
    den = np.linalg.norm(want[keep]) + (0 if scale is None else np.linalg.norm(scale[keep]))
    return num / max(den, 1e-30)


@settings(max_examples=60, deadline=None)
@given(DTYPES, st.lists(st.integers(1, 6), min_size=2, max_size=4), st.integers(0, 2 ** 31),
       st.booleans(), st.booleans(), st.sampled_from([0.0, 3.0, -50.0]), st.booleans())
def test_batch_norm_forward_and_backward(dtype, shape, seed, affine_g, affine_b, offset,
                                         with_nan):
    """Against the NumPy composition in float64, with a channel offset (so a one-pass
    variance would cancel), a strided layout, gamma/beta present or None, and a NaN
    that must spread over its channel only."""
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    if np.prod(shape) // shape[1] < 2:
        shape = (shape[0] + 1,) + shape[1:]
    c = shape[1]
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 3, (1, c) + (1,) * (len(shape) - 2))
         + offset).astype(dtype)
    if len(shape) >= 3 and rng.random() < 0.5:  # a non-contiguous input
        x = np.ascontiguousarray(np.swapaxes(x, -1, 0)).swapaxes(-1, 0)
    if with_nan:
        x[(0,) * len(shape)] = np.nan
    gamma = rng.uniform(0.5, 2, c).astype(dtype) if affine_g else None
    beta = rng.standard_normal(c).astype(dtype) if affine_b else None
    g = rng.standard_normal(shape).astype(dtype)
    f64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    tol = 1e-5 if dtype == np.float32 else 1e-10  # sums of 5e1-sized terms

    got = F.batch_norm_forward(x, gamma, beta, 1e-5)
    want = numpy_backend.batch_norm_forward(f64(x), f64(gamma), f64(beta), 1e-5)
    assert got[0].dtype == dtype and all(a.dtype == np.float64 for a in got[1:])
    for a, b in zip(got, want):
        assert a.shape == b.shape
        assert _rel(a, b) < (tol if a.dtype == dtype else 1e-10)
    y, mean, var, rstd = got
    if with_nan:  # channel 0 only
        assert np.isnan(y[:, 0]).all() and not np.isnan(np.delete(y, 0, axis=1)).any()

    got = F.batch_norm_backward(g, x, mean, rstd, gamma)
    want = numpy_backend.batch_norm_backward(f64(g), f64(x), want[1], want[3], f64(gamma))
    # dx = rstd*gamma * (g - mean(g) - xhat * mean(g*xhat)): its terms can cancel (m = 2
    # leaves 1e-3 of them), so its error is measured against their size
    k1 = rstd * (1 if gamma is None else gamma)
    scale = np.abs(g) * k1.reshape((1, -1) + (1,) * (len(shape) - 2))
    for a, b, sc in zip(got, want, (scale, None, None)):
        assert a.shape == b.shape and a.dtype == dtype
        assert _rel(a, b, sc) < tol


@settings(max_examples=40, deadline=None)
@given(DTYPES, st.integers(1, 300), st.integers(0, 2 ** 31), st.sampled_from([0.0, 0.9]),
       st.sampled_from([0.0, 0.1]), st.sampled_from([0.0, 1e-2]), st.booleans(),
       st.booleans())
def test_sgd_update_is_the_numpy_composition_bit_for_bit(dtype, n, seed, momentum,
                                                          dampening, wd, nesterov, first):
    """Same roundings as the NumPy composition (scalars in the array's dtype, no FMA), so
    switching the backend's update changes no training run."""
    if nesterov and (momentum == 0 or dampening):
        nesterov = False
    rng = np.random.default_rng(seed)
    p, g, buf = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    p2, buf2 = p.copy(), buf.copy()
    args = (0.05, momentum, dampening, wd, nesterov, first)
    F.sgd_update_(p, g, buf if momentum else None, *args)
    numpy_backend.sgd_update_(p2, g, buf2 if momentum else None, *args)
    np.testing.assert_array_equal(p, p2)
    np.testing.assert_array_equal(buf, buf2)


@settings(max_examples=60, deadline=None)
@given(DTYPES, st.integers(0, 300), st.integers(1, 40), st.integers(0, 2 ** 31),
       st.booleans(), st.booleans(), st.sampled_from([None, -100, 0]))
def test_softmax_cross_entropy_forward_and_backward(dtype, n, c, seed, specials, strided,
                                                    ignore):
    """Against the float64 NumPy composition: large logits (stability), NaN and +-inf
    mixed in (a NaN row gives NaN loss and probabilities, as in NumPy), strided logits,
    ignored rows (loss 0, left out of the count and the sum)."""
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n, c + 3 * strided)) * 30).astype(dtype)[:, :c]
    if specials and z.size:
        mask = rng.random(z.shape) < 0.1
        z[mask] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype), mask.sum())
    t = rng.integers(0, c, n)
    ignore_index = -100 if ignore is None else ignore
    if ignore is not None and n:
        t[rng.random(n) < 0.3] = ignore
    with np.errstate(all="ignore"):
        loss, probs, safe, valid, count, total = F.cross_entropy_forward(z, t, ignore_index)
        want = numpy_backend.cross_entropy_forward(z.astype(np.float64), t, ignore_index)
    assert loss.dtype == probs.dtype == dtype and probs.shape == (n, c) and loss.shape == (n,)
    np.testing.assert_array_equal(safe, want[2])
    assert (valid is None) == (want[3] is None) and count == want[4]
    if valid is not None:
        np.testing.assert_array_equal(valid, want[3])
    tol = 1e-5 if dtype == np.float32 else 1e-12

    def close(got, want):  # non-finite values in the same places, the rest to tol
        got, want = np.asarray(got, np.float64).ravel(), np.asarray(want).ravel()
        finite = np.isfinite(want)
        np.testing.assert_array_equal(got[~finite], want[~finite])
        return not finite.any() or _rel(got[finite], want[finite]) < tol

    if n:
        assert close(loss, want[0]) and close(probs, want[1]) and close(total, want[5])
    dloss = rng.standard_normal(n).astype(dtype)
    p = np.nan_to_num(want[1]).astype(dtype)
    dz = F.softmax_xent_backward(p, safe, dloss)
    want_dz = numpy_backend.softmax_xent_backward(p.astype(np.float64), safe,
                                                  dloss.astype(np.float64))
    assert dz.dtype == dtype and dz.shape == (n, c)
    if n:
        assert _rel(dz, want_dz) < tol


@pytest.mark.parametrize("target", [[0, 3], [-1, 0], [1, -100, 7]])
def test_cross_entropy_names_a_target_out_of_range(target):
    z = np.zeros((len(target), 3), np.float32)
    t = np.array(target)
    for backend in (numpy_backend, F):
        with pytest.raises(IndexError, match=r"cross_entropy: target (3|-1|7) is out of range "
                                             r"for 3 classes"):
            backend.cross_entropy_forward(z, t, -100)
