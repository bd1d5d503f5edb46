"""Winograd F(2x2, 3x3) and F(4x4, 3x3) on the CPU (kernels.cpu_winograd and
kernels.cpu_winograd4), against kernels.reference.

The table-driven suite (test_kernels.py) runs the "winograd" versions too, but draws a
3x3, stride-1, undilated, ungrouped case only now and then; here every case is one, with
odd and even sizes (a last tile that hangs over the edge), paddings 0 to 2 and 'same',
an empty batch, every dtype and memory layout, and blocks of samples cut small so that a
thread runs several blocks and a short last one. Buffers the kernels allocate start as
NaN (``poisoned_empty``), so a value a kernel never writes shows."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.cpu as cpu
import kernels.cpu_winograd as wino
import kernels.cpu_winograd4 as wino4
from kernels import _cpu_blas, reference
from strategies import DTYPES, LAYOUTS, SEEDS, TOL, TOL4, rand, rel

pytestmark = pytest.mark.skipif(not _cpu_blas.AVAILABLE,
                                reason="Winograd's products need BLAS callable from Numba")

WHICH = ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight")
# version name -> (module, tolerance)
VERSION = {"winograd": (wino, TOL), "winograd4": (wino4, TOL4)}


@pytest.fixture(scope="module")
def compiled():
    """Each kernel compiled for both dtypes before np.empty is poisoned: Numba's own
    np.zeros is written with np.empty, which a kernel binds when it compiles."""
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((2, 2, 5, 5)).astype(dtype)
        w = rng.standard_normal((2, 2, 3, 3)).astype(dtype)
        with _cpu_blas.one_thread():
            for mod in (wino, wino4):
                y = mod.forward(x, w, 1, 1, 2)
                mod.backward_input(y, w, x.shape, 1, 1, 2)
                mod.backward_weight(y, x, 1, 1, 2)


@pytest.fixture
def poisoned_empty(compiled, monkeypatch):
    real_empty = np.empty

    def empty(shape, dtype=float, **kw):
        out = real_empty(shape, dtype=dtype, **kw)
        if np.dtype(dtype).kind == "f":
            out.fill(np.nan)
        return out

    monkeypatch.setattr(np, "empty", empty)


@st.composite
def winograd_case(draw):
    """(x_shape, w_shape, padding) of a 3x3 stride-1 convolution with a non-empty output."""
    same = draw(st.integers(0, 4)) == 0
    pad = "same" if same else (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    ph, pw = (1, 1) if same else pad
    h = draw(st.integers(max(1, 3 - 2 * ph), 13))
    w = draw(st.integers(max(1, 3 - 2 * pw), 13))
    n = draw(st.integers(0, 5))
    c, o = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    return (n, c, h, w), (o, c, 3, 3), pad


@pytest.mark.usefixtures("poisoned_empty")
@pytest.mark.parametrize("version", VERSION)
@pytest.mark.parametrize("which", WHICH)
@settings(max_examples=40, deadline=None)
@given(case=winograd_case(), dtype=DTYPES, layout=LAYOUTS, seed=SEEDS,
       columns=st.sampled_from([1, 5, 256]))
def test_winograd_matches_reference(which, version, case, dtype, layout, seed, columns):
    with pytest.MonkeyPatch.context() as mp:
        # 1 and 5: several blocks a thread (cpu_winograd4 plans with cpu_winograd.plan)
        mp.setattr(wino, "_MIN_COLUMNS", columns)
        _check(which, case, dtype, layout, seed, version)


def _check(which, case, dtype, layout, seed, version):
    xs, ws, pad = case
    rng = np.random.default_rng(seed)
    x, w = rand(rng, xs, dtype, layout), rand(rng, ws, dtype)
    y = reference.conv2d_forward(x, w, 1, pad)
    dy = rand(rng, y.shape, dtype, layout)
    fn = cpu.VERSIONS[which][version]
    if which == "conv2d_forward":
        got, want = fn(x, w, 1, pad), y
    elif which == "conv2d_backward_input":
        got, want = fn(dy, w, xs, 1, pad), reference.conv2d_backward_input(dy, w, xs, 1, pad)
    else:
        got, want = fn(dy, x, ws, 1, pad), reference.conv2d_backward_weight(dy, x, ws, 1, pad)
    assert got.shape == want.shape and got.dtype == dtype
    assert rel(got, want) < VERSION[version][1][dtype]


@pytest.mark.usefixtures("poisoned_empty")
@settings(max_examples=10, deadline=None)
@given(c=st.integers(1, 5), o=st.integers(1, 5), seed=SEEDS, dtype=DTYPES)
def test_weight_transforms(c, o, seed, dtype):
    """U = G g G^T per filter, and the flipped, transposed filters' U of the input
    gradient, against the matrices themselves."""
    g_mat = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
    w = np.random.default_rng(seed).standard_normal((o, c, 3, 3)).astype(dtype)
    u = np.zeros((16, o, c), dtype)
    wino.weight_transform(w, u)
    want = np.einsum("ip,ocpq,jq->ijoc", g_mat, w.astype(np.float64), g_mat)
    assert rel(u, want.reshape(16, o, c)) < TOL[dtype]
    ut = np.zeros((16, c, o), dtype)
    wino.weight_transform_flipped(w, ut)
    wt = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).astype(np.float64)
    want = np.einsum("ip,ocpq,jq->ijoc", g_mat, wt, g_mat)
    assert rel(ut, want.reshape(16, c, o)) < TOL[dtype]


@pytest.mark.usefixtures("poisoned_empty")
@settings(max_examples=10, deadline=None)
@given(c=st.integers(1, 5), o=st.integers(1, 5), seed=SEEDS, dtype=DTYPES)
def test_weight_transform_4x4(c, o, seed, dtype):
    """F(4x4, 3x3)'s U = G g G^T against its G, into a skewed buffer as the passes use,
    and the input gradient's filters: w flipped in both taps and transposed."""
    g_mat = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
    w = np.random.default_rng(seed).standard_normal((o, c, 3, 3)).astype(dtype)
    u = wino4.skewed((36,), o, c, dtype)
    wino4.weight_transform(w, u)
    want = np.einsum("ip,ocpq,jq->ijoc", g_mat, w.astype(np.float64), g_mat)
    assert rel(u, want.reshape(36, o, c)) < TOL[dtype]
    wt = wino4.flipped(w)
    assert wt.shape == (c, o, 3, 3) and wt.flags.c_contiguous
    assert np.array_equal(wt[:, :, 0, 2], w[:, :, 2, 0].T)


def test_skewed_matrices():
    """skewed's matrices are C-contiguous (the GEMMs' operands) and not a multiple of
    4 KiB apart; zero=True gives zeros."""
    for lead, zero in (((36,), False), ((2, 36), True)):
        a = wino4.skewed(lead, 64, 64, np.float32, zero=zero)
        assert a.shape == (*lead, 64, 64) and a[(0,) * len(lead)].flags.c_contiguous
        assert a.strides[-3] % 4096 != 0 and a.strides[-3] >= 64 * 64 * 4
        if zero:
            assert not a.any()


def test_plan_skews_the_sixteen_matrices():
    """The 16 transformed matrices of a thread must not sit a multiple of 4 KiB apart
    (the L1 conflict that made the dy transform 4x slower, see plan)."""
    for m_, positions, tiles in ((2, 16, 256), (4, 36, 64)):
        nb, ld, v, m, pads = wino.plan(64, 64, 64, 32 // m_, 32 // m_, 2, np.float32, m_)
        assert ld == nb * tiles and v.shape[:2] == (2, positions) == m.shape[:2]
        for buf, rows in ((v, 64), (m, 64)):
            assert buf.shape[2] >= rows * ld
            assert buf.strides[1] % 4096 != 0
        # a zero-bordered plane of (32 + 2)^2 and m + 2 transformed rows of 34
        assert pads.shape == (2, 34 * 34 + (m_ + 2) * 34)


@pytest.mark.parametrize("shape,taken", [
    ((4, 64, 8, 8), True),      # ResNet's 3x3 layers
    ((4, 3, 8, 8), False),      # ResNet's stem: 3 input channels, Winograd loses
    ((1, 64, 8, 8), False),     # fewer samples than threads: one thread would work
])
def test_auto_takes_winograd_where_it_pays(shape, taken, monkeypatch):
    """"auto" routes to cpu_winograd for many channels and enough samples only."""
    monkeypatch.setattr(cpu, "num_threads", lambda: 2)
    calls = []
    for name in ("forward", "backward_input", "backward_weight"):
        real = getattr(wino, name)
        monkeypatch.setattr(wino, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((64, shape[1], 3, 3)).astype(np.float32)
    y = cpu.conv2d_forward(x, w, 1, 1)
    cpu.conv2d_backward_input(y, w, x.shape, 1, 1)
    cpu.conv2d_backward_weight(y, x, w.shape, 1, 1)
    assert calls == (["forward", "backward_input", "backward_weight"] if taken else [])
    assert rel(y, reference.conv2d_forward(x, w, 1, 1)) < TOL[np.float32]


@pytest.mark.parametrize("plane,f4", [(16, True), (13, True), (12, False), (8, False)])
def test_auto_takes_4x4_tiles_on_large_planes(plane, f4, monkeypatch):
    """"auto" runs F(4x4, 3x3) where a pass's output plane holds 16 tiles of 4x4 or more
    (ResNet's 64@32 and 128@16 layers), F(2x2, 3x3) on smaller planes (256@8, 512@4)."""
    monkeypatch.setattr(cpu, "num_threads", lambda: 2)
    calls = []
    for mod in (wino, wino4):
        for name in ("forward", "backward_input", "backward_weight"):
            real = getattr(mod, name)
            monkeypatch.setattr(mod, name, lambda *a, _r=real, _m=mod: calls.append(_m) or _r(*a))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 48, plane, plane)).astype(np.float32)
    w = rng.standard_normal((48, 48, 3, 3)).astype(np.float32)  # (C*O >= 24 (C + O))
    y = cpu.conv2d_forward(x, w, 1, 1)
    cpu.conv2d_backward_input(y, w, x.shape, 1, 1)
    cpu.conv2d_backward_weight(y, x, w.shape, 1, 1)
    assert calls == [wino4 if f4 else wino] * 3
    assert rel(y, reference.conv2d_forward(x, w, 1, 1)) < TOL4[np.float32]


@pytest.mark.parametrize("version", VERSION)
@pytest.mark.parametrize("kwargs", [dict(stride=2), dict(dilation=2), dict(groups=2),
                                    dict(padding=3)])
def test_winograd_version_elsewhere_runs_auto(kwargs, version):
    """Asked for where it does not apply, "winograd" or "winograd4" computes what "auto"
    does."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 9, 9))
    w = rng.standard_normal((4, 4 // kwargs.get("groups", 1), 3, 3))
    args = dict(stride=1, padding=1, dilation=1, groups=1) | kwargs
    got = cpu.VERSIONS["conv2d_forward"][version](x, w, **args)
    assert rel(got, reference.conv2d_forward(x, w, *args.values())) < TOL[np.float64]
