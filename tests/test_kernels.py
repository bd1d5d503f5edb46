"""The kernel suite, table-driven: every implementation (kernels.cpu, kernels.cuda -- under
Numba's simulator without a GPU) and every VERSION of each primitive is checked against
kernels.reference on hypothesis-drawn cases (tests/strategies.py); the reference itself is
checked against PyTorch in float64. Arrays the kernels allocate start as NaN, so an
element a kernel never writes fails the comparison."""
import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels import reference
from kernels._common import conv_geometry, pool_geometry
from test_gemm_ladder import SMALL as LADDER_TILES
from strategies import (DTYPES, LAYOUTS, SEEDS, TOL, TOL4, avg_options, conv_case,
                        matmul_case, pool_case, rand, rel)

cuda_mod = kernels.get("cuda")
from numba import config  # noqa: E402

SIM = bool(config.ENABLE_CUDASIM)
if SIM:
    xp = np
else:  # pragma: no cover - a real GPU
    import cupy as xp

IMPLS = ("cpu", "cuda")
# the simulator runs every CUDA thread as a Python thread: tiny shapes, few examples
LIMITS = {"cpu": dict(max_size=13, max_batch=3, max_channels=4),
          "cuda": dict(max_size=6, max_batch=2, max_channels=3, max_kernel=3)}
EXAMPLES = {"cpu": 20, "cuda": 6 if SIM else 30}
SMALL_TILES = [(8, 8, 4, 2, 2), (4, 8, 2, 1, 2), (8, 4, 3, 2, 1)]


def versions(primitive):
    """pytest params (impl, version) for every version of ``primitive``."""
    return [pytest.param(impl, v, id=f"{impl}-{v}") for impl in IMPLS
            for v in kernels.get(impl).VERSIONS[primitive]]


def run(impl, strategy, check):
    """Run ``check`` on ``strategy``'s cases with the implementation's example budget."""
    settings(max_examples=EXAMPLES[impl], deadline=None)(given(strategy)(check))()


def dev(impl, a):
    return xp.asarray(a) if impl == "cuda" else a


def draws(impl):
    """(dtype, layout) strategies: the CPU takes any float dtype and layout; the CUDA
    kernels get contiguous float32 (what the framework hands them)."""
    if impl == "cuda":
        return st.just(np.float32), st.just("contiguous")
    return DTYPES, LAYOUTS


def tol(impl, dtype, version=None):
    """The relative L2 error allowed: CUDA's float32 sums in another order; Winograd's
    F(4x4, 3x3) rounds through factors up to 8 and 1/24 (float32 about 1e-6 to 4e-6 on
    ResNet's layers, against 3e-7 for F(2x2) and im2col)."""
    if impl == "cuda":
        return 1e-5
    return TOL4[dtype] if version == "winograd4" else TOL[dtype]


@pytest.fixture(autouse=True)
def poisoned_empty(monkeypatch):
    """Every array a kernel allocates with empty() starts as NaN (or -7 for integers); the
    GEMM ladder runs with tiny tiles (as in tests/test_gemm_ladder.py), and the tiles go
    back to production after each test."""
    import kernels.cuda_gemm as ladder

    saved = {k: dict(v) for k, v in ladder.CONFIG.items()}
    for rung, params in LADDER_TILES.items():
        ladder.configure(rung, **params)
    real_empty = xp.empty

    def empty(shape, dtype=float, **kw):
        out = real_empty(shape, dtype=dtype, **kw)
        if np.dtype(dtype).kind == "f":
            out.fill(np.nan)
        elif np.dtype(dtype).kind == "i":
            out.fill(-7)
        return out

    monkeypatch.setattr(xp, "empty", empty)
    yield
    cuda_mod.set_tile(*cuda_mod.DEFAULT_TILE)
    for rung, params in saved.items():
        ladder.configure(rung, **params)


def small_tile(impl, data):
    if impl == "cuda":
        cuda_mod.set_tile(*data.draw(st.sampled_from(SMALL_TILES)))


# -- convolution --------------------------------------------------------------------------------
def _conv_check(impl, version, which, **case_limits):
    fn = kernels.get(impl).VERSIONS[which][version]
    dtypes, layouts = draws(impl)

    @st.composite
    def cases(draw):
        return (draw(conv_case(**LIMITS[impl], **case_limits)), draw(dtypes), draw(layouts),
                draw(SEEDS))

    def check(data):
        small_tile(impl, data)
        case, dtype, layout, seed = data.draw(cases())
        xs, ws, args = case["x_shape"], case["w_shape"], case["args"]
        rng = np.random.default_rng(seed)
        x, w = rand(rng, xs, dtype, layout), rand(rng, ws, dtype)
        y_ref = reference.conv2d_forward(x, w, *args)
        dy = rand(rng, y_ref.shape, dtype, layout)
        if which == "conv2d_forward":
            got, want = fn(dev(impl, x), dev(impl, w), *args), y_ref
        elif which == "conv2d_backward_input":
            got = fn(dev(impl, dy), dev(impl, w), xs, *args)
            want = reference.conv2d_backward_input(dy, w, xs, *args)
        else:
            got = fn(dev(impl, dy), dev(impl, x), ws, *args)
            want = reference.conv2d_backward_weight(dy, x, ws, *args)
        assert got.shape == want.shape and got.dtype == dtype
        assert rel(got, want) < tol(impl, dtype, version)

    return check


@pytest.mark.parametrize("impl,version", versions("conv2d_forward"))
def test_conv2d_forward(impl, version):
    run(impl, st.data(), _conv_check(impl, version, "conv2d_forward"))


@pytest.mark.parametrize("impl,version", versions("conv2d_backward_input"))
def test_conv2d_backward_input(impl, version):
    run(impl, st.data(), _conv_check(impl, version, "conv2d_backward_input"))


@pytest.mark.parametrize("impl,version", versions("conv2d_backward_weight"))
def test_conv2d_backward_weight(impl, version):
    run(impl, st.data(), _conv_check(impl, version, "conv2d_backward_weight"))


@pytest.mark.parametrize("which", ["conv2d_forward", "conv2d_backward_input",
                                   "conv2d_backward_weight"])
def test_cpu_direct_conv_at_stride_one(which):
    """The direct (im2col-free) CPU kernels take stride 1 only (elsewhere "direct" falls
    back to im2col), so the table-driven tests above reach them a third of the time:
    here every case has stride 1, with groups, dilation, padding and 'same'."""
    run("cpu", st.data(), _conv_check("cpu", "direct", which, max_stride=1))


# -- pooling ----------------------------------------------------------------------------------------
def _pool_strategy(impl, version):
    if impl == "cpu" and version == "specialised":
        # one compile per window: draw from the windows the default path specialises
        return pool_case(windows=kernels.get("cpu")._FIXED_POOLS, **LIMITS[impl])
    return pool_case(**LIMITS[impl])


def _pool_check(impl, version, which):
    fn = kernels.get(impl).VERSIONS[which][version]
    dtypes, layouts = draws(impl)

    def check(data):
        case = data.draw(_pool_strategy(impl, version))
        dtype, layout = data.draw(dtypes), data.draw(layouts)
        rng = np.random.default_rng(data.draw(SEEDS))
        xs = case.pop("x_shape")
        x = rand(rng, xs, dtype, layout)
        if which.startswith("max"):
            y_ref, arg_ref = reference.maxpool2d_forward(x, **case)
            dy = rand(rng, y_ref.shape, dtype)
            if which == "maxpool2d_forward":
                y, arg = fn(dev(impl, x), **case)
                np.testing.assert_array_equal(np.asarray(y if SIM or impl == "cpu" else y.get()),
                                              y_ref)
                np.testing.assert_array_equal(arg if SIM or impl == "cpu" else arg.get(), arg_ref)
                assert arg.dtype == np.int64
                return
            # with the window, as the op calls it (kernels.cuda then gathers), and without
            got = fn(dev(impl, dy), dev(impl, arg_ref), xs, **case)
            want = reference.maxpool2d_backward(dy, arg_ref, xs)
            assert rel(fn(dev(impl, dy), dev(impl, arg_ref), xs), want) < tol(impl, dtype)
        else:
            opts = data.draw(avg_options())
            case.pop("dilation")
            y_ref = reference.avgpool2d_forward(x, **case, **opts)
            if which == "avgpool2d_forward":
                got, want = fn(dev(impl, x), **case, **opts), y_ref
            else:
                dy = rand(rng, y_ref.shape, dtype)
                got = fn(dev(impl, dy), xs, **case, **opts)
                want = reference.avgpool2d_backward(dy, xs, **case, **opts)
        assert got.shape == want.shape
        assert rel(got, want) < tol(impl, dtype)

    return check


@pytest.mark.parametrize("impl,version", versions("maxpool2d_forward"))
def test_maxpool2d_forward(impl, version):
    run(impl, st.data(), _pool_check(impl, version, "maxpool2d_forward"))


@pytest.mark.parametrize("impl,version", versions("maxpool2d_backward"))
def test_maxpool2d_backward(impl, version):
    run(impl, st.data(), _pool_check(impl, version, "maxpool2d_backward"))


@pytest.mark.parametrize("impl,version", versions("avgpool2d_forward"))
def test_avgpool2d_forward(impl, version):
    run(impl, st.data(), _pool_check(impl, version, "avgpool2d_forward"))


@pytest.mark.parametrize("impl,version", versions("avgpool2d_backward"))
def test_avgpool2d_backward(impl, version):
    run(impl, st.data(), _pool_check(impl, version, "avgpool2d_backward"))


def test_avgpool_divisors_are_made_once_per_window_size_and_device(monkeypatch):
    """kernels.cuda keeps the average pool's 1/divisor array (an upload a call otherwise):
    the same window and size reuse it, another divisor rule or size gets its own, and
    only _INVERSE_DIVISORS_KEPT are kept."""
    monkeypatch.setattr(cuda_mod, "_inverse_divisors", {})
    monkeypatch.setattr(cuda_mod, "_INVERSE_DIVISORS_KEPT", 3)
    geo = pool_geometry(3, 2, 1, op="avg_pool2d")
    over = pool_geometry(3, 2, 1, op="avg_pool2d", divisor_override=5)
    first = cuda_mod._avg_inverse_divisor(geo, (7, 6), xp)
    assert cuda_mod._avg_inverse_divisor(geo, (7, 6), xp) is first
    other = cuda_mod._avg_inverse_divisor(over, (7, 6), xp)
    assert other is not first and np.all(np.asarray(other) == 0.2)
    assert np.asarray(first)[0, 0] == 1 / 9  # count_include_pad: the padded window
    cuda_mod._avg_inverse_divisor(geo, (5, 6), xp)
    cuda_mod._avg_inverse_divisor(geo, (9, 6), xp)  # the fourth: the first one goes
    assert len(cuda_mod._inverse_divisors) == 3
    assert cuda_mod._avg_inverse_divisor(geo, (7, 6), xp) is not first


# -- matmul -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl,version", versions("matmul"))
def test_matmul(impl, version):
    fn = kernels.get(impl).VERSIONS["matmul"][version]
    dims = st.sampled_from([1, 2, 3, 5, 7, 11]) if impl == "cuda" else None

    def check(data):
        small_tile(impl, data)
        m, k, n, ta, tb, batch = data.draw(matmul_case() if dims is None else matmul_case(dims))
        dtype = data.draw(draws(impl)[0])
        rng = np.random.default_rng(data.draw(SEEDS))
        lead = (batch,) if batch else ()
        a = rng.standard_normal(lead + ((k, m) if ta else (m, k))).astype(dtype)
        b = rng.standard_normal(lead + ((n, k) if tb else (k, n))).astype(dtype)
        out = fn(dev(impl, a), dev(impl, b), ta, tb)
        assert out.shape == lead + (m, n) and out.dtype == dtype
        assert rel(out, reference.matmul(a, b, ta, tb)) < tol(impl, dtype)

    run(impl, st.data(), check)


def test_cuda_matmul_production_tile_on_one_block():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((13, 17)).astype(np.float32)
    b = rng.standard_normal((17, 7)).astype(np.float32)
    assert rel(cuda_mod.matmul(dev("cuda", a), dev("cuda", b)), a.astype(np.float64) @ b) < 1e-5


def test_cuda_matmul_past_the_grid_limit_runs_in_slices():
    """With CUDA's 65535-block limit in y and z shrunk to 2, products of more row blocks or
    batches run in slices (of a transposed a too), empty ones launch nothing,
    and every result matches the reference."""
    def check(data):
        cuda_mod.set_tile(4, 8, 2, 1, 2)  # 4 rows per block: 8 rows per slice
        m, k, n = data.draw(st.integers(0, 19)), data.draw(st.integers(0, 6)), data.draw(st.integers(0, 9))
        batch, ta, tb = data.draw(st.sampled_from([None, 0, 1, 3, 5])), data.draw(st.booleans()), data.draw(st.booleans())
        rng = np.random.default_rng(data.draw(SEEDS))
        lead = () if batch is None else (batch,)
        a = rng.standard_normal(lead + ((k, m) if ta else (m, k))).astype(np.float32)
        b = rng.standard_normal(lead + ((n, k) if tb else (k, n))).astype(np.float32)
        saved, cuda_mod._GRID_YZ_MAX = cuda_mod._GRID_YZ_MAX, 2
        try:
            out = cuda_mod.matmul(dev("cuda", a), dev("cuda", b), ta, tb)
        finally:
            cuda_mod._GRID_YZ_MAX = saved
        assert out.shape == lead + (m, n)
        np.testing.assert_allclose(np.asarray(out, np.float64), reference.matmul(a, b, ta, tb),
                                   rtol=1e-5, atol=1e-5)

    run("cuda", st.data(), check)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 40), st.integers(0, 90), st.integers(1, 8), st.integers(1, 5))
def test_gemm_slices_cover_the_product_once_within_the_grid(batch, m, rows_per_block, limit):
    from kernels._common import gemm_slices

    slices = gemm_slices(batch, m, rows_per_block, limit)
    covered = np.zeros((batch, m), int)
    for b0, b1, r0, r1 in slices:
        assert 0 < b1 - b0 <= limit and 0 < -(-(r1 - r0) // rows_per_block) <= limit
        covered[b0:b1, r0:r1] += 1
    assert (covered == 1).all()
    assert len(slices) == (-(-batch // limit)) * (-(-m // (limit * rows_per_block)))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.integers(0, 5000), st.integers(1, 70000), st.sampled_from([1, 8, 16]),
       st.sampled_from([8, 132]))
def test_split_k_chunks_cover_k_once_and_only_small_grids_split(blocks, k, batch, bk, sms):
    split, kchunk = cuda_mod._split_k(blocks, k, batch, bk, sms)
    assert kchunk % bk == 0 and split >= 1
    assert split * kchunk >= k and (split == 1 or (split - 1) * kchunk < k)  # none empty
    if split > 1:
        assert blocks * batch < cuda_mod._SPLIT_BLOCKS_PER_SM * sms
        assert batch * split <= cuda_mod._GRID_YZ_MAX
        assert kchunk >= cuda_mod._SPLIT_MIN_K
    elif blocks * batch < cuda_mod._SPLIT_BLOCKS_PER_SM * sms \
            and k >= 2 * cuda_mod._SPLIT_MIN_K and batch * 2 <= cuda_mod._GRID_YZ_MAX:
        raise AssertionError(f"a small grid with a long K did not split: {split}, {kchunk}")


def test_split_k_on_resnets_first_weight_gradient():
    # dW (64, 576) over K = 64 * 32 * 32 at 64x64 tiles: 9 blocks on 132 multiprocessors
    split, kchunk = cuda_mod._split_k(9, 65536, 1, 8, 132)
    assert split == 30 and kchunk == 2192


GEMMS = ["matmul", "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight"]


@pytest.mark.parametrize("which", GEMMS)
def test_cuda_split_k_matches_the_reference(which, monkeypatch):
    """Every toy GEMM with K >= 2 splits (chunks of one K-step and up): the partial
    products go to a workspace that one kernel (_splitk_sum_kernel) sums into C, in
    NCHW order for the forward pass and the input gradient."""
    monkeypatch.setattr(cuda_mod, "_SPLIT_MIN_K", 1)
    _gemm_matches_the_reference(which)


def test_cuda_split_k_sum_kernel_adds_the_chunks_in_both_layouts():
    """_splitk_sum_kernel: P (groups, split, M, images*L) summed over the chunks into C
    (images, groups*M, L): the plain store (one image, L = N) and the NCHW one."""
    def check(data):
        g, split, m = (data.draw(st.integers(1, 3)) for _ in range(3))
        img, L = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
        dt = data.draw(st.sampled_from([np.float32, np.float64]))
        p = np.random.default_rng(data.draw(SEEDS)).standard_normal(
            (g, split, m, img * L)).astype(dt)
        c = xp.full((img, g * m, L), np.nan, dtype=dt)
        kern = cuda_mod._splitk_sum_kernel(np.dtype(dt).name)
        cuda_mod._launch(kern, c.size)(dev("cuda", p), c)
        want = p.sum(axis=1, dtype=np.float64).reshape(g, m, img, L).transpose(2, 0, 1, 3)
        assert c.dtype == dt
        np.testing.assert_allclose(np.asarray(c if SIM else c.get()),
                                   want.reshape(img, g * m, L), rtol=1e-6, atol=1e-6)
        # the same through the two ``summed`` of cuda_sgemm's convolutions: kernels.cuda's
        # (this kernel) and the standalone CuPy one (here on the array module in use)
        for summed in (cuda_mod._splitk_sum, cuda_mod.cuda_sgemm.sum_partials):
            c2 = xp.full((img, g * m, L), np.nan, dtype=dt)
            summed(dev("cuda", p), c2)
            np.testing.assert_allclose(np.asarray(c2 if SIM else c2.get()),
                                       want.reshape(img, g * m, L), rtol=1e-6, atol=1e-6)

    run("cuda", st.data(), check)


@pytest.mark.parametrize("split", [False, True], ids=["whole-K", "split-K"])
@pytest.mark.parametrize("which", GEMMS)
def test_cuda_double_buffered_gemm_matches_the_reference(which, split, monkeypatch):
    """The double-buffered GEMM (kernels.cuda._DOUBLE_BUFFER, off by default until a GPU
    sweep times it): two shared stages, the next K-tile fetched during the current one's
    FMAs, two K-tiles per trip -- odd and even K-tile counts, edge tiles, and split-K's
    chunks, which start and end inside K."""
    monkeypatch.setattr(cuda_mod, "_DOUBLE_BUFFER", True)
    if split:
        monkeypatch.setattr(cuda_mod, "_SPLIT_MIN_K", 1)
    _gemm_matches_the_reference(which)


@pytest.mark.parametrize("which", GEMMS)
def test_cuda_warp_layout_gemm_matches_the_reference(which, monkeypatch):
    """The GEMM with its threads laid out by warp (kernels.cuda._WARP_LAYOUT, off by
    default until a GPU sweep times it), at the tests' small tiles with a warp of 4
    threads, 2 along N: every operand mode, edge tiles."""
    monkeypatch.setattr(cuda_mod, "_WARP_LAYOUT", (4, 2))
    _gemm_matches_the_reference(which)


def test_cuda_warp_layout_that_does_not_tile_the_threads_says_so(monkeypatch):
    monkeypatch.setattr(cuda_mod, "_WARP_LAYOUT", (4, 3))
    cuda_mod.set_tile(8, 8, 4, 2, 2)
    with pytest.raises(ValueError, match=r"warp layout \(4, 3\) .* 4 x 4 threads"):
        cuda_mod.matmul(dev("cuda", np.ones((3, 3), np.float32)),
                        dev("cuda", np.ones((3, 3), np.float32)))


def _draw_matmul(data, sides, inner, batches):
    """(a, b, trans_a, trans_b, batch dims, m, n): float32 operands of a drawn product,
    each stored as op() reads it (transposed when its flag is set)."""
    m, k, n = data.draw(sides), data.draw(inner), data.draw(sides)
    batch, ta, tb = data.draw(st.sampled_from(batches)), data.draw(st.booleans()), data.draw(st.booleans())
    rng = np.random.default_rng(data.draw(SEEDS))
    lead = () if batch is None else (batch,)
    a = rng.standard_normal(lead + ((k, m) if ta else (m, k))).astype(np.float32)
    b = rng.standard_normal(lead + ((n, k) if tb else (k, n))).astype(np.float32)
    return a, b, ta, tb, lead, m, n


WIDE_SMALL = {"bm": 16, "bn": 16, "bk": 4, "tm": 4, "tn": 4, "pad": 1, "warp": 4, "ln": 2}


def test_cuda_matmul_runs_large_products_on_the_wide_kernel(monkeypatch):
    """The production matmul hands products whose 128x128 grid fills the GPU to the wide
    kernel (the ladder's rung 5, transposes read in place): with a tiny wide tile and the
    threshold at 0 blocks, every product goes there -- edge tiles, K not a multiple of
    BK, batches, all four transpose combinations -- and matches the reference."""
    monkeypatch.setattr(cuda_mod, "_WIDE_BLOCKS_PER_SM", 0)
    monkeypatch.setattr(cuda_mod, "_wide_tile", dict(cuda_mod.WIDE_TILE))
    cuda_mod.set_wide_tile(**WIDE_SMALL)
    calls = []
    launch = cuda_mod._ladder.launch_dbuf
    monkeypatch.setattr(cuda_mod._ladder, "launch_dbuf",
                        lambda *a, **k: calls.append(a[7:9]) or launch(*a, **k))

    def check(data):
        a, b, ta, tb, lead, m, n = _draw_matmul(data, st.integers(1, 35), st.integers(0, 13),
                                                [None, 1, 2])
        del calls[:]
        out = cuda_mod.matmul(dev("cuda", a), dev("cuda", b), ta, tb)
        assert calls == [(ta, tb)]
        assert out.shape == lead + (m, n)
        np.testing.assert_allclose(np.asarray(out, np.float64), reference.matmul(a, b, ta, tb),
                                   rtol=1e-5, atol=1e-5)

    settings(max_examples=12, deadline=None)(given(st.data())(check))()


def test_cuda_matmul_picks_the_wide_kernel_only_for_grids_that_fill_the_gpu(monkeypatch):
    # the simulator counts 132 multiprocessors (an H100's): 264 blocks of 128x128 needed
    assert cuda_mod._sm_count() == 132 and cuda_mod._WIDE_BLOCKS_PER_SM == 2
    assert cuda_mod._use_wide(4096, 4096, 1)            # 1024 blocks
    assert cuda_mod._use_wide(2048, 2048, 2)            # 256 x 2
    assert not cuda_mod._use_wide(2048, 2048, 1)        # 256: the 64x64 kernel's 1024
    assert not cuda_mod._use_wide(256, 120, 1)          # LeNet's layers
    monkeypatch.setattr(cuda_mod, "_GRID_YZ_MAX", 4)
    assert not cuda_mod._use_wide(4096, 4096, 1)        # 32 row blocks > the grid's y
    monkeypatch.setattr(cuda_mod, "_GRID_YZ_MAX", 65535)
    monkeypatch.setattr(cuda_mod, "_WIDE_BLOCKS_PER_SM", None)
    assert not cuda_mod._use_wide(4096, 4096, 1)


def _choose(monkeypatch, family, default, name, bad):
    """set_<family>_kernel(name) from the default (undone after the test), after checking
    that it refuses an unknown kernel by name."""
    setter = getattr(cuda_mod, f"set_{family}_kernel")
    with pytest.raises(ValueError, match=rf"set_{family}_kernel: unknown kernel '{bad}'"):
        setter(bad)
    monkeypatch.setattr(cuda_mod, f"_{family}_kernel", [default])
    setter(name)


def test_set_wide_kernel_routes_float32_wide_products_to_the_cuda_c_rung(monkeypatch):
    """With set_wide_kernel("vec4_cuda_c") a wide float32 product goes to rung 6
    (kernels/cuda_sgemm.py, CuPy) on a GPU; float64, and anything under the simulator
    (where CuPy kernels cannot run), stays on rung 5."""
    _choose(monkeypatch, "wide", "double_buffered_warp", "vec4_cuda_c", "cutlass")
    monkeypatch.setattr(cuda_mod, "_WIDE_BLOCKS_PER_SM", 0)
    calls = []
    monkeypatch.setattr(cuda_mod.cuda_sgemm, "matmul",
                        lambda a, b, ta, tb: calls.append(("rung 6", a.dtype, ta, tb)) or "C")
    monkeypatch.setattr(cuda_mod._ladder, "launch_dbuf",
                        lambda name, A, B, C, *rest, **k: calls.append(("rung 5", C.dtype)))
    a = np.ones((3, 5), np.float32)
    b = np.ones((4, 5), np.float32)
    cuda_mod.matmul(a, b, False, True)          # the simulator: rung 5
    monkeypatch.setattr(cuda_mod, "_simulating", lambda: False)
    assert cuda_mod.matmul(a, b, False, True) == "C"
    cuda_mod.matmul(a.astype(np.float64), b.astype(np.float64), False, True)
    assert calls == [("rung 5", np.float32), ("rung 6", np.float32, False, True),
                     ("rung 5", np.float64)]


def _record_cuda_c_convolutions(monkeypatch, calls):
    """kernels/cuda_sgemm.py's three convolutions replaced by recorders of what they are
    asked: the pass, the geometry or shape, split-K's (split, kchunk), the chunks' sum (no
    launch plan kept over them: the plans have their own test)."""
    monkeypatch.setattr(cuda_mod, "_keep_conv_c_plan", lambda *a: None)
    monkeypatch.setattr(cuda_mod, "_keep_wgrad_c_plan", lambda *a: None)
    # (an H100's count, as under the simulator: the fake device has none, and _sm_count
    # remembers what the first call saw)
    monkeypatch.setattr(cuda_mod, "_sm_count", lambda: 132)
    S = cuda_mod.cuda_sgemm
    monkeypatch.setattr(S, "conv2d_forward", lambda x, w, geo, split, kchunk, summed: calls.append(
        ("fwd", geo.stride, split, kchunk, summed)) or "y")
    monkeypatch.setattr(S, "conv2d_backward_input", lambda dy, w, xs, geo, split, kchunk, summed:
                        calls.append(("dgrad", tuple(xs), split, kchunk, summed)) or "dx")
    monkeypatch.setattr(S, "conv2d_backward_weight", lambda dy, x, ws, geo, split, kchunk, summed:
                        calls.append(("wgrad", ws, split, kchunk, summed)) or "dw")


def test_set_conv_kernel_routes_float32_convolutions_to_the_cuda_c_kernel(monkeypatch):
    """With set_conv_kernel("cuda_c_128") a float32 forward pass, input and weight gradient
    go to kernels/cuda_sgemm.py on a GPU (the geometry validated once, passed on), K split
    by kernels.cuda's split-K rule and the chunks added by its sum kernel; float64, and
    anything under the simulator, stays on the 64x64 implicit GEMM."""
    _choose(monkeypatch, "conv", "implicit_gemm_64", "cuda_c_128", "winograd")
    calls = []
    _record_cuda_c_convolutions(monkeypatch, calls)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((1, 3, 3, 3)).astype(np.float32)
    y = cuda_mod.conv2d_forward(x, w, 1, 0)  # the simulator: the Numba kernel
    assert rel(y, reference.conv2d_forward(x, w, 1, 0)) < 1e-5 and calls == []
    monkeypatch.setattr(cuda_mod, "_simulating", lambda: False)
    assert cuda_mod.conv2d_forward(x, w, 1, 0) == "y"
    assert cuda_mod.conv2d_backward_input(dy, w, x.shape, 1, 0) == "dx"
    ours = cuda_mod._splitk_sum
    # K = 18 and 27 taps, too few to split: one chunk of all K, rounded up to 8
    assert calls == [("fwd", (1, 1), 1, 24, ours), ("dgrad", (1, 2, 5, 5), 1, 32, ours)]
    assert cuda_mod.conv2d_backward_weight(dy, x, w.shape, 1, 0) == "dw"
    assert calls[-1] == ("wgrad", (3, 2, 3, 3), 1, 16, ours)  # 9 pixels: too few to split
    big_dy = np.zeros((64, 3, 32, 32), np.float32)
    cuda_mod.conv2d_backward_weight(big_dy, np.zeros((64, 2, 34, 34), np.float32), w.shape, 1, 0)
    _, _, split, kchunk, _ = calls[-1]
    assert split > 1 and kchunk % 8 == 0 and (split - 1) * kchunk < 64 * 32 * 32 <= split * kchunk
    # ResNet's 512@4 (batch 64): 4 x 8 blocks of 128 x 128 for 132 SMs, K = 4608 taps
    x512, w512 = np.zeros((64, 512, 4, 4), np.float32), np.zeros((512, 512, 3, 3), np.float32)
    cuda_mod.conv2d_forward(x512, w512, 1, 1)
    cuda_mod.conv2d_backward_input(x512, w512, x512.shape, 1, 1)
    for (_, _, split, kchunk, _) in calls[-2:]:
        assert split == 9 and kchunk % 8 == 0 and (split - 1) * kchunk < 4608 <= split * kchunk
    monkeypatch.setattr(cuda_mod, "_launch_gemm", lambda *a: calls.append("numba"))
    cuda_mod.conv2d_forward(x.astype(np.float64), w.astype(np.float64), 1, 0)
    assert calls[-1] == "numba"


def test_auto_conv_kernel_takes_cuda_c_for_gemms_of_64_rows_or_more(monkeypatch):
    """The default, "auto": a float32 convolution pass on a GPU goes to the CUDA C kernel
    where its GEMM has at least 64 rows per group (output channels for the forward pass and
    the weight gradient, input channels for the input gradient), to the direct kernel for
    at most 16 (one group; the input gradient at stride 1), to the Numba one between and
    for the weight gradients of few channels (LeNet-5's 6 and 16)."""
    assert cuda_mod.CONV_KERNELS[0] == "auto" and cuda_mod._CONV_C_MIN_ROWS == 64
    monkeypatch.setattr(cuda_mod, "_conv_kernel", ["auto"])
    monkeypatch.setattr(cuda_mod, "_simulating", lambda: False)
    calls = []
    _record_cuda_c_convolutions(monkeypatch, calls)
    monkeypatch.setattr(cuda_mod, "_launch_gemm", lambda *a: calls.append(("numba", a[5].shape)))
    monkeypatch.setattr(cuda_mod, "_direct_pass", lambda src, w, out, geo, dgrad, key: calls.append(
        ("direct dgrad" if dgrad else "direct fwd",)))
    z = np.zeros
    for o, c, g in ((64, 3, 1), (63, 64, 1), (128, 128, 2), (16, 6, 1)):
        x, w = z((2, c, 6, 6), np.float32), z((o, c // g, 3, 3), np.float32)
        dy = z((2, o, 6, 6), np.float32)
        cuda_mod.conv2d_forward(x, w, 1, 1, 1, g)
        cuda_mod.conv2d_backward_input(dy, w, x.shape, 1, 1, 1, g)
        cuda_mod.conv2d_backward_weight(dy, x, w.shape, 1, 1, 1, g)
    kinds = [c[0] if c[0] != "numba" else "numba" for c in calls]
    assert kinds == ["fwd", "direct dgrad", "wgrad",           # 64 out, 3 in: the stem
                     "numba", "dgrad", "numba",                # 63 out, 64 in
                     "fwd", "dgrad", "wgrad",                  # 64 a group each way
                     "direct fwd", "direct dgrad", "numba"]    # LeNet-5's second convolution


def test_auto_conv_kernel_leaves_to_the_gemms_what_the_direct_kernel_cannot_take(monkeypatch):
    """The direct kernel only under "auto", for float32, at most 16 result channels, one
    group, the input gradient at stride 1, and weights that fit its shared memory."""
    monkeypatch.setattr(cuda_mod, "_conv_kernel", ["auto"])
    monkeypatch.setattr(cuda_mod, "_simulating", lambda: False)
    calls = []
    _record_cuda_c_convolutions(monkeypatch, calls)
    monkeypatch.setattr(cuda_mod, "_launch_gemm", lambda *a: calls.append(("numba",)))
    monkeypatch.setattr(cuda_mod, "_conv_dx_col2im", lambda *a: calls.append(("col2im",)))
    monkeypatch.setattr(cuda_mod, "_direct_pass", lambda *a: calls.append(("direct",)))
    z = np.zeros
    cases = [  # (x, w, stride, groups, dtype) -> forward's route, input gradient's route
        (((2, 6, 8, 8), (16, 6, 3, 3), 1, 1, np.float32), ("direct", "direct")),
        (((2, 6, 8, 8), (17, 6, 3, 3), 1, 1, np.float32), ("numba", "direct")),
        (((2, 17, 8, 8), (16, 17, 3, 3), 1, 1, np.float32), ("direct", "numba")),
        (((2, 6, 8, 8), (16, 6, 3, 3), 2, 1, np.float32), ("direct", "col2im")),
        (((2, 6, 8, 8), (8, 3, 3, 3), 1, 2, np.float32), ("numba", "numba")),
        (((2, 6, 8, 8), (16, 6, 3, 3), 1, 1, np.float64), ("numba", "numba")),
        (((1, 400, 4, 4), (16, 400, 3, 3), 1, 1, np.float32), ("numba", "dgrad")),  # 230 KB
    ]
    for (xs, ws, s, g, dt), want in cases:
        x, w = z(xs, dt), z(ws, dt)
        y_shape = (xs[0], ws[0], (xs[2] + 2 - 3) // s + 1, (xs[3] + 2 - 3) // s + 1)
        cuda_mod.conv2d_forward(x, w, s, 1, 1, g)
        cuda_mod.conv2d_backward_input(z(y_shape, dt), w, xs, s, 1, 1, g)
        assert tuple(c[0] for c in calls[-2:]) == want, (xs, ws, s, g, dt)
    monkeypatch.setattr(cuda_mod, "_conv_kernel", ["implicit_gemm_64"])  # a family forced
    x, w = z((2, 6, 8, 8), np.float32), z((16, 6, 3, 3), np.float32)
    cuda_mod.conv2d_forward(x, w, 1, 1)
    cuda_mod.conv2d_backward_input(z((2, 16, 8, 8), np.float32), w, x.shape, 1, 1)
    assert [c[0] for c in calls[-2:]] == ["numba", "numba"]


def _fresh_plans(monkeypatch, *geos):
    """Each geometry's launch plans start empty and are forgotten after the test:
    geometries are shared (remembered by their arguments), and a plan made over a
    stand-in launch must not outlive the test."""
    for geo in geos:
        for name in ("_cuda_plans", "_cuda_maxpool_fwd", "_cuda_maxpool_bwd"):
            monkeypatch.setitem(geo.__dict__, name, {})


def _record_cuda_c_pooling(monkeypatch, calls):
    """kernels/cuda_pool.py's launches replaced by recorders (its planning runs as on a GPU,
    but for the CuPy functions, which are names here)."""
    P = cuda_mod.cuda_pool
    monkeypatch.setattr(P, "_function", lambda window, pass_: f"{pass_}{window}")
    monkeypatch.setattr(P, "launcher", lambda fn, grid, block, ints: fn)  # (its name)
    monkeypatch.setattr(P, "run_forward", lambda plan, x: calls.append(
        ("fwd", plan[0], plan[1])) or "y")
    monkeypatch.setattr(P, "run_backward", lambda plan, dy, arg: calls.append(
        ("bwd", plan[0], plan[1])) or "dx")


def test_set_pool_kernel_routes_float32_max_pooling_to_the_cuda_c_kernels(monkeypatch):
    """With set_pool_kernel("cuda_c") a float32 max-pool forward and its gather backward go
    to kernels/cuda_pool.py on a GPU (the geometry validated once, passed on); float64, the
    scatter backward (no window given) and anything under the simulator stay on Numba."""
    _choose(monkeypatch, "pool", "numba", "cuda_c", "cudnn")
    calls = []
    _record_cuda_c_pooling(monkeypatch, calls)
    geo = pool_geometry(3, 2, 1)  # (the layer's, as the op passes it)
    _fresh_plans(monkeypatch, geo)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    y, arg = cuda_mod.maxpool2d_forward(x, geo)  # the simulator: the Numba kernel
    y_ref, arg_ref = reference.maxpool2d_forward(x, 3, 2, 1)
    np.testing.assert_array_equal(arg, arg_ref)
    assert calls == []
    monkeypatch.setattr(cuda_mod, "_simulating", lambda: False)
    assert cuda_mod.maxpool2d_forward(x, geo) == "y"
    dy = rng.standard_normal(y.shape).astype(np.float32)
    assert cuda_mod.maxpool2d_backward(dy, arg_ref, x.shape, geo) == "dx"
    window = "(3, 3, 2, 2, 1, 1, 1, 1)"
    # (the backward a cell of 2 x 2 a thread: kernels.cuda_pool.backward_cells)
    assert calls == [("fwd", (2, 3, 3, 3), "fwd" + window), ("bwd", (2, 3, 6, 6), "bwd1" + window)]
    launches = []
    monkeypatch.setattr(cuda_mod, "_launch", lambda *a: (lambda *args: launches.append(a)))
    monkeypatch.setattr(cuda_mod, "_xp", lambda a: np)
    cuda_mod.maxpool2d_forward(x.astype(np.float64), geo)
    cuda_mod.maxpool2d_backward(dy, arg_ref, x.shape)  # no window: the per-plane scatter
    assert len(calls) == 2 and len(launches) == 2
    # too large for it (a shape not planned yet: a plan holds for its shape)
    monkeypatch.setattr(cuda_mod.cuda_pool, "fits", lambda xs, ys: False)
    cuda_mod.maxpool2d_forward(x[:1], geo)
    assert len(calls) == 2 and len(launches) == 3


def test_max_pooling_plans_once_per_shape_and_still_refuses_bad_input(monkeypatch):
    """The layer's geometry keeps a plan per (shape, dtype, kernel choice): a second call
    does not check or plan again; a new shape, dtype or set_pool_kernel does, and bad
    input is refused as on the first call."""
    from kernels import _common

    monkeypatch.setattr(cuda_mod, "_pool_kernel", ["cuda_c"])
    monkeypatch.setattr(cuda_mod, "_simulating", lambda: False)
    calls, planned = [], []
    _record_cuda_c_pooling(monkeypatch, calls)
    for name in ("forward_plan", "backward_plan"):
        real = getattr(cuda_mod.cuda_pool, name)
        monkeypatch.setattr(cuda_mod.cuda_pool, name, lambda *a, real=real, name=name: (
            planned.append(name), real(*a))[1])
    geo = pool_geometry(2)
    _fresh_plans(monkeypatch, geo)
    x = np.zeros((4, 3, 8, 8), np.float32)
    dy, arg = np.zeros((4, 3, 4, 4), np.float32), np.zeros((4, 3, 4, 4), np.int64)
    for _ in range(3):
        cuda_mod.maxpool2d_forward(x, geo)
        cuda_mod.maxpool2d_backward(dy, arg, x.shape, geo)
    assert planned == ["forward_plan", "backward_plan"] and len(calls) == 6
    cuda_mod.maxpool2d_forward(np.zeros((2, 3, 8, 8), np.float32), geo)  # a new batch
    assert planned[-1] == "forward_plan" and calls[-1][1] == (2, 3, 4, 4)
    with pytest.raises(TypeError, match="maxpool2d_forward: expected float32 or float64"):
        cuda_mod.maxpool2d_forward(x.astype(np.int32), geo)
    with pytest.raises(ValueError, match=r"maxpool2d_backward: dy has shape \(4, 3, 3, 4\)"):
        cuda_mod.maxpool2d_backward(dy[:, :, :3], arg[:, :, :3], x.shape, geo)
    with pytest.raises(ValueError, match="do not match x"):
        cuda_mod.maxpool2d_backward(dy, arg[:2], x.shape, geo)
    launches = []
    monkeypatch.setattr(cuda_mod, "_launch", lambda *a: (lambda *args: launches.append(a)))
    monkeypatch.setattr(cuda_mod, "_pool_kernel", ["numba"])  # a new choice: a new plan
    cuda_mod.maxpool2d_forward(x, geo)
    assert len(launches) == 1 and len(calls) == 7
    # the plans are kept on the geometry, at most _SHAPES_KEPT of them
    assert 0 < len(geo.__dict__["_cuda_maxpool_fwd"]) <= _common._SHAPES_KEPT


@settings(deadline=None, max_examples=6 if SIM else 40)
@given(conv_case(max_size=6, max_batch=2, max_channels=3, max_kernel=3, max_stride=3),
       SEEDS)
def test_cuda_strided_input_gradient_as_a_dense_gemm_and_a_gather(case, seed):
    """_conv_dx_col2im (cols = W^T dy per group, then each dx element gathers its taps on
    dy's stride grid) against the reference, over strides, dilation, padding, groups and
    an empty batch; the implicit GEMM's version beside it."""
    rng = np.random.default_rng(seed)
    x_shape, w_shape, args = case["x_shape"], case["w_shape"], case["args"]
    w = rng.standard_normal(w_shape).astype(np.float32)
    out = reference.conv2d_forward(np.zeros(x_shape), w.astype(np.float64), *args).shape
    dy = rng.standard_normal(out).astype(np.float32)
    want = reference.conv2d_backward_input(dy.astype(np.float64), w.astype(np.float64),
                                           x_shape, *args)
    for version in ("col2im", "implicit_gemm"):
        got = cuda_mod.VERSIONS["conv2d_backward_input"][version](
            xp.asarray(dy), xp.asarray(w), x_shape, *args)
        assert got.shape == tuple(x_shape)
        assert rel(got, want) < 1e-5 if np.abs(want).max(initial=0) else not np.any(
            np.asarray(got if SIM else got.get())), (version, case)


@pytest.mark.parametrize("cap_images", [1, 2])
def test_cuda_col2im_input_gradient_in_batch_slices(monkeypatch, cap_images):
    """Where the cols buffer would pass _COL2IM_BYTES, the batch goes in slices (here of 1
    and 2 of 3 images: the last one short), each slice's gather into its part of dx."""
    rng = np.random.default_rng(3)
    x_shape, w_shape, args = (3, 4, 7, 6), (6, 2, 3, 2), ((2, 3), (1, 0), (1, 2), 2)
    w = rng.standard_normal(w_shape).astype(np.float32)
    out = reference.conv2d_forward(np.zeros(x_shape), w.astype(np.float64), *args).shape
    dy = rng.standard_normal(out).astype(np.float32)
    per_image = 4 * 3 * 2 * out[2] * out[3] * 4  # C*KH*KW x OH*OW floats
    monkeypatch.setattr(cuda_mod, "_COL2IM_BYTES", cap_images * per_image + 3)
    got = cuda_mod.VERSIONS["conv2d_backward_input"]["col2im"](xp.asarray(dy), xp.asarray(w),
                                                               x_shape, *args)
    want = reference.conv2d_backward_input(dy.astype(np.float64), w.astype(np.float64),
                                           x_shape, *args)
    assert rel(got, want) < 1e-5


def test_cuda_input_gradient_routes_strided_single_group_convolutions_to_col2im(monkeypatch):
    calls = []
    monkeypatch.setattr(cuda_mod, "_conv_dx_col2im", lambda *a: calls.append("col2im"))
    monkeypatch.setattr(cuda_mod, "_conv_dx_implicit", lambda *a: calls.append("implicit"))
    dy = np.zeros((1, 4, 3, 3), np.float32)
    w = np.zeros((4, 2, 3, 3), np.float32)
    cuda_mod.conv2d_backward_input(dy, w, (1, 2, 6, 6), 2, 1)           # stride 2
    cuda_mod.conv2d_backward_input(dy, w, (1, 2, 5, 5), (1, 2), (0, 1))  # a stride of 2
    cuda_mod.conv2d_backward_input(dy, w, (1, 2, 5, 5), 1, 0)           # stride 1
    w2 = np.zeros((4, 1, 3, 3), np.float32)
    cuda_mod.conv2d_backward_input(dy, w2, (1, 2, 6, 6), 2, 1, 1, 2)     # two groups
    assert calls == ["col2im", "col2im", "implicit", "implicit"]


def test_the_kernel_families_can_be_chosen_from_the_environment(monkeypatch):
    """TINYGRAD_K_CUDA_KERNELS (read at import by kernels_from_env) sets what the three
    set_*_kernel functions set; a bad pair names the variable, a bad kernel its setter."""
    for name, default in (("_conv_kernel", "implicit_gemm_64"), ("_pool_kernel", "numba"),
                          ("_wide_kernel", "double_buffered_warp")):
        monkeypatch.setattr(cuda_mod, name, [default])
    cuda_mod.kernels_from_env("")
    assert (cuda_mod._conv_kernel, cuda_mod._pool_kernel) == (["implicit_gemm_64"], ["numba"])
    cuda_mod.kernels_from_env(" conv=cuda_c_128, pool = cuda_c,wide=vec4_cuda_c,")
    assert (cuda_mod._conv_kernel, cuda_mod._pool_kernel, cuda_mod._wide_kernel) == (
        ["cuda_c_128"], ["cuda_c"], ["vec4_cuda_c"])
    with pytest.raises(ValueError, match=r"TINYGRAD_K_CUDA_KERNELS='gemm=x'.*got 'gemm=x'"):
        cuda_mod.kernels_from_env("gemm=x")
    with pytest.raises(ValueError, match=r"TINYGRAD_K_CUDA_KERNELS='pool'"):
        cuda_mod.kernels_from_env("pool")
    with pytest.raises(ValueError, match=r"set_pool_kernel: unknown kernel 'fast'"):
        cuda_mod.kernels_from_env("pool=fast")


def test_set_wide_tile_rejects_what_its_threads_cannot_load(monkeypatch):
    monkeypatch.setattr(cuda_mod, "_wide_tile", dict(cuda_mod.WIDE_TILE))
    with pytest.raises(ValueError, match=r"set_wide_tile: .*4-vector"):
        cuda_mod.set_wide_tile(bk=16)
    with pytest.raises(ValueError, match=r"set_wide_tile: the warp layout"):
        cuda_mod.set_wide_tile(ln=3)
    with pytest.raises(ValueError, match=r"set_wide_tile: no parameter\(s\) \['tile'\]"):
        cuda_mod.set_wide_tile(tile=1)
    assert cuda_mod._wide_tile == cuda_mod.WIDE_TILE  # nothing changed


def _gemm_matches_the_reference(which):
    if which != "matmul":
        run("cuda", st.data(), _conv_check("cuda", "default", which))
        return

    def check(data):
        small_tile("cuda", data)
        a, b, ta, tb, lead, m, n = _draw_matmul(data, st.integers(1, 9), st.integers(2, 40),
                                                [None, 1, 3])
        out = cuda_mod.matmul(dev("cuda", a), dev("cuda", b), ta, tb)
        assert rel(out, reference.matmul(a, b, ta, tb)) < 1e-5

    run("cuda", st.data(), check)


def _small_multi_launches(monkeypatch):
    """The multi-tensor optimizer kernels at toy sizes: 8 threads, 16 elements per block,
    3 tensors per launch (so that tensors span blocks and lists span launches)."""
    monkeypatch.setattr(cuda_mod, "_MULTI_THREADS", 8)
    monkeypatch.setattr(cuda_mod, "_MULTI_CHUNK", 16)
    monkeypatch.setattr(cuda_mod, "_MULTI_MAX", 3)


def _draw_tensors(data):
    """(dtype, shapes) of 1-7 parameter tensors, empty ones included."""
    n = data.draw(st.integers(1, 7))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    return dtype, [data.draw(st.sampled_from([(0,), (5,), (3, 7), (40,), (2, 1, 3)]))
                   for _ in range(n)]


def _sgd_reference(p, g, buf, lr, momentum, dampening, wd, nesterov, first):
    """PyTorch's SGD step in the parameters' dtype, scalars rounded once (cuda_fused)."""
    t = p.dtype.type
    d = g + t(wd) * p
    if momentum:
        buf = d if first else t(momentum) * buf + t(1 - dampening) * d
        d = d + t(momentum) * buf if nesterov else buf
    return p - t(lr) * d, buf


def test_cuda_sgd_step_over_many_tensors_in_one_launch(monkeypatch):
    """kernels.cuda.sgd_update_multi against the step written out per tensor: any number
    of tensors (past the per-launch limit, shrunk to 3), empty ones, tensors spanning
    several blocks (shrunk to 16 elements), with and without momentum, nesterov, first
    step or not, float32 and float64."""
    _small_multi_launches(monkeypatch)

    def check(data):
        dtype, shapes = _draw_tensors(data)
        momentum = data.draw(st.sampled_from([0.9, 0.0]))
        nesterov = bool(momentum) and data.draw(st.booleans())
        dampening = 0.0 if nesterov else data.draw(st.sampled_from([0.25, 0.0]))
        wd, first = data.draw(st.sampled_from([1e-2, 0.0])), data.draw(st.booleans())
        rng = np.random.default_rng(data.draw(SEEDS))
        ps = [rng.standard_normal(sh).astype(dtype) for sh in shapes]
        gs = [rng.standard_normal(sh).astype(dtype) for sh in shapes]
        bs = [rng.standard_normal(sh).astype(dtype) for sh in shapes] if momentum else None
        want = [_sgd_reference(p, g, bs[i] if momentum else None, 0.1, momentum, dampening,
                               wd, nesterov, first) for i, (p, g) in enumerate(zip(ps, gs))]
        P, G = [dev("cuda", p) for p in ps], [dev("cuda", g) for g in gs]
        B = [dev("cuda", b) for b in bs] if momentum else None
        cuda_mod.sgd_update_multi(P, G, B, 0.1, momentum, dampening, wd, nesterov, first)
        for i, (wp, wb) in enumerate(want):
            np.testing.assert_allclose(np.asarray(P[i]), wp, rtol=1e-6, atol=1e-6)
            if momentum:
                np.testing.assert_allclose(np.asarray(B[i]), wb, rtol=1e-6, atol=1e-6)

    settings(max_examples=20, deadline=None)(given(st.data())(check))()


def _adam_reference(p, g, m, v, lr, b1, b2, eps, wd, step, decoupled):
    """PyTorch's Adam / AdamW step in the parameters' dtype (cuda_fused's scalars)."""
    t = p.dtype.type
    if wd and decoupled:
        p = p * t(1 - lr * wd)
    elif wd:
        g = g + t(wd) * p
    m = t(b1) * m + t(1 - b1) * g
    v = t(b2) * v + t(1 - b2) * g * g
    return p - t(lr / (1 - b1 ** step)) * m / (np.sqrt(v / t(1 - b2 ** step)) + t(eps)), m, v


def test_cuda_adam_step_over_many_tensors_in_one_launch(monkeypatch):
    """kernels.cuda.adam_update_multi against the step written out per tensor: Adam and
    AdamW, with and without weight decay, several launches and blocks per tensor."""
    _small_multi_launches(monkeypatch)

    def check(data):
        dtype, shapes = _draw_tensors(data)
        wd, decoupled = data.draw(st.sampled_from([0.1, 0.0])), data.draw(st.booleans())
        step = data.draw(st.integers(1, 4))
        rng = np.random.default_rng(data.draw(SEEDS))
        ps, gs, ms = ([rng.standard_normal(sh).astype(dtype) for sh in shapes] for _ in "pgm")
        vs = [rng.random(sh).astype(dtype) for sh in shapes]
        want = [_adam_reference(*a, 1e-2, 0.9, 0.999, 1e-8, wd, step, decoupled)
                for a in zip(ps, gs, ms, vs)]
        P, G, M, V = ([dev("cuda", a) for a in arrs] for arrs in (ps, gs, ms, vs))
        cuda_mod.adam_update_multi(P, G, M, V, 1e-2, 0.9, 0.999, 1e-8, wd, step, decoupled)
        for i, w in enumerate(want):
            for got, exp in zip((P[i], M[i], V[i]), w):
                np.testing.assert_allclose(np.asarray(got), exp, rtol=1e-5, atol=1e-6)

    settings(max_examples=12, deadline=None)(given(st.data())(check))()


def test_cuda_multi_tensor_steps_refuse_mismatched_tensors():
    p = dev("cuda", np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"sgd_update_multi: momentum needs the momentum "
                                         r"buffers, got None"):
        cuda_mod.sgd_update_multi([p], [p], None, 0.1, 0.9, 0, 0, False, True)
    with pytest.raises(ValueError, match=r"sgd_update_multi: tensor 0: .*\(3, 2\), \(2, 3\)"):
        cuda_mod.sgd_update_multi([p], [dev("cuda", np.zeros((2, 3), np.float32))], None,
                                  0.1, 0, 0, 0, False, True)
    with pytest.raises(ValueError, match=r"adam_update_multi: 1 params need 3 lists of 1 "
                                         r"arrays .* got \[1, 0, 1\]"):
        cuda_mod.adam_update_multi([p], [p], [], [p], 1e-3, 0.9, 0.999, 1e-8, 0, 1, False)
    with pytest.raises(ValueError, match=r"adam_update_multi: tensor 0: .*float64"):
        cuda_mod.adam_update_multi([p], [p], [p], [dev("cuda", np.zeros((3, 2)))], 1e-3, 0.9,
                                   0.999, 1e-8, 0, 1, False)


def test_cuda_conv_past_the_grid_limit_says_so():
    x = dev("cuda", np.ones((1, 4, 3, 3), np.float32))
    w = dev("cuda", np.ones((4, 2, 1, 1), np.float32))
    saved, cuda_mod._GRID_YZ_MAX = cuda_mod._GRID_YZ_MAX, 1
    try:
        with pytest.raises(ValueError, match=r"in 2 batches or groups .* at most 1 in y"):
            cuda_mod.conv2d_forward(x, w, groups=2)
    finally:
        cuda_mod._GRID_YZ_MAX = saved


def test_cuda_conv_production_tile_grouped_dilated():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
    w = rng.standard_normal((6, 2, 2, 3)).astype(np.float32)
    args = (1, "same", (2, 1), 2)
    assert rel(cuda_mod.conv2d_forward(dev("cuda", x), dev("cuda", w), *args),
               reference.conv2d_forward(x, w, *args)) < 1e-5


# -- the reference against PyTorch (float64) ----------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(conv_case(), SEEDS)
def test_reference_conv_matches_pytorch(case, seed):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    xs, ws, (s, p, d, g) = case["x_shape"], case["w_shape"], case["args"]
    rng = np.random.default_rng(seed)
    tx = torch.tensor(rng.standard_normal(xs), requires_grad=True)
    tw = torch.tensor(rng.standard_normal(ws), requires_grad=True)
    ty = F.conv2d(tx, tw, None, s, p, d, g)
    y = reference.conv2d_forward(tx.detach().numpy(), tw.detach().numpy(), s, p, d, g)
    assert y.shape == tuple(ty.shape)
    assert rel(y, ty.detach().numpy()) < 1e-12
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    assert rel(reference.conv2d_backward_input(dy, tw.detach().numpy(), xs, s, p, d, g),
               tx.grad.numpy()) < 1e-12
    assert rel(reference.conv2d_backward_weight(dy, tx.detach().numpy(), ws, s, p, d, g),
               tw.grad.numpy()) < 1e-12


@settings(max_examples=25, deadline=None)
@given(pool_case(), avg_options(), SEEDS)
def test_reference_pooling_matches_pytorch(case, opts, seed):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    xs = case.pop("x_shape")
    k, s, p, d, ceil = (case[a] for a in ("kernel", "stride", "padding", "dilation",
                                          "ceil_mode"))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs)
    tx = torch.tensor(x, requires_grad=True)
    ty, tidx = F.max_pool2d(tx, k, s, p, d, ceil, return_indices=True)
    y, arg = reference.maxpool2d_forward(x, **case)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    inside = arg >= 0  # PyTorch's index of a window lying wholly in the padding is junk
    np.testing.assert_array_equal(arg[inside], tidx.numpy()[inside])
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    assert rel(reference.maxpool2d_backward(g, arg, xs), tx.grad.numpy()) < 1e-12
    tx.grad = None
    ta = F.avg_pool2d(tx, k, s, p, ceil, **opts)
    assert rel(reference.avgpool2d_forward(x, k, s, p, ceil, **opts), ta.detach().numpy()) < 1e-12
    g = rng.standard_normal(ta.shape)
    ta.backward(torch.tensor(g))
    assert rel(reference.avgpool2d_backward(g, xs, k, s, p, ceil, **opts),
               tx.grad.numpy()) < 1e-12


# -- behaviour every implementation shares -------------------------------------------------------------
ALL = ("reference",) + IMPLS


@pytest.mark.parametrize("impl", ALL)
def test_max_pool_nan_and_ties(impl):
    mod = kernels.get(impl)
    x = np.array([[[[1.0, 1.0], [np.nan, 0.0]]]], dtype=np.float32)
    y, arg = mod.maxpool2d_forward(dev(impl, x), 2, 2, 0)
    assert np.isnan(float(y[0, 0, 0, 0])) and int(arg[0, 0, 0, 0]) == 2  # NaN wins, as torch
    x = np.ones((1, 1, 2, 2), dtype=np.float32)
    y, arg = mod.maxpool2d_forward(dev(impl, x), 2, 2, 0)
    assert int(arg[0, 0, 0, 0]) == 0  # the first maximum wins a tie


@pytest.mark.parametrize("impl", ALL)
def test_empty_batch_gives_pytorchs_shapes(impl):
    """N = 0 flows through every primitive (PyTorch returns (0, C, OH, OW))."""
    mod = kernels.get(impl)
    x = dev(impl, np.zeros((0, 4, 7, 6), np.float32))
    w = dev(impl, np.ones((6, 2, 3, 3), np.float32))
    y = mod.conv2d_forward(x, w, 2, 1, 1, 2)
    assert y.shape == (0, 6, 4, 3)
    assert mod.conv2d_backward_input(y, w, x.shape, 2, 1, 1, 2).shape == x.shape
    dw = mod.conv2d_backward_weight(y, x, w.shape, 2, 1, 1, 2)
    assert dw.shape == w.shape and not np.asarray(dw if impl != "cuda" or SIM else dw.get()).any()
    y, arg = mod.maxpool2d_forward(x, 2)
    assert y.shape == arg.shape == (0, 4, 3, 3)
    assert mod.maxpool2d_backward(y, arg, x.shape).shape == x.shape
    assert mod.avgpool2d_forward(x, 3, 2, 1).shape == (0, 4, 4, 3)
    assert mod.avgpool2d_backward(mod.avgpool2d_forward(x, 3, 2, 1), x.shape, 3, 2, 1).shape \
        == x.shape


@pytest.mark.parametrize("impl", ALL)
def test_kernels_accept_the_geometry_record(impl):
    """What the ops pass: one ConvGeometry / PoolGeometry instead of the plain ints."""
    mod = kernels.get(impl)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    geo = conv_geometry((3, 2), (2, 1), (1, 0), (1, 2), 2)
    assert rel(mod.conv2d_forward(dev(impl, x), dev(impl, w), geo),
               reference.conv2d_forward(x, w, (2, 1), (1, 0), (1, 2), 2)) < 1e-5
    pgeo = pool_geometry(3, 2, 1, 2, True)
    y, _ = mod.maxpool2d_forward(dev(impl, x), pgeo)
    assert rel(y, reference.maxpool2d_forward(x, 3, 2, 1, 2, True)[0]) == 0


def test_remembered_geometries_and_shapes_check_every_call():
    """conv_geometry / pool_geometry remember their results, and a geometry the output
    shapes it computed: a remembered call must give what a fresh one gives, and bad
    arguments or shapes must raise on every call, not only the first."""
    assert pool_geometry(2) is pool_geometry(2)
    assert pool_geometry((2, 2)) == pool_geometry(2) and pool_geometry([2, 2]) == pool_geometry(2)
    assert conv_geometry((3, 3), 1, 1) is conv_geometry((3, 3), 1, 1)
    pool_geometry((2, 1))
    for _ in range(2):  # True == 1 and hash(True) == hash(1): the key must tell them apart
        with pytest.raises(TypeError, match=r"max_pool2d: kernel_size must be an int or a "
                                            r"tuple of 2 ints, got \(2, True\)"):
            pool_geometry((2, True))
        with pytest.raises(ValueError, match=r"conv2d: stride must be >= 1, got 0"):
            conv_geometry(3, 0)
    assert pool_geometry(np.int64(2)) == pool_geometry(2)  # numpy ints: checked, not kept
    geo = conv_geometry((3, 3), 1, 1)
    assert geo.output_shape((2, 4, 8, 8), (5, 4, 3, 3)) == (2, 5, 8, 8)
    assert geo.output_shape([2, 4, 8, 8], (5, 4, 3, 3)) == (2, 5, 8, 8)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"conv2d: input \(2, 3, 8, 8\) has 3 channels"):
            geo.output_shape((2, 3, 8, 8), (5, 4, 3, 3))
        with pytest.raises(ValueError, match=r"max_pool2d: input \(1, 1, 1, 1\) is smaller"):
            pool_geometry(2).output_shape((1, 1, 1, 1))


@pytest.mark.parametrize("impl", ALL)
def test_bad_arguments_name_the_primitive_argument_and_value(impl):
    mod = kernels.get(impl)
    x = dev(impl, np.zeros((1, 3, 8, 8), np.float32))
    w = dev(impl, np.zeros((2, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"conv2d_forward: input \(1, 3, 8, 8\) has 3 "
                                         r"channels but weight \(2, 4, 3, 3\) expects 4"):
        mod.conv2d_forward(x, w, 1, 0)
    with pytest.raises(ValueError, match="matmul.*inner sizes"):
        mod.matmul(dev(impl, np.zeros((3, 4), np.float32)), dev(impl, np.zeros((5, 6), np.float32)))
    with pytest.raises(ValueError, match=r"maxpool2d_forward: padding must be at most half of "
                                         r"kernel_size \(2, 2\), got 2"):
        mod.maxpool2d_forward(x, 2, 2, 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        mod.conv2d_forward(x.astype(np.int32), w.astype(np.int32)[:, :3], 1, 0)
    with pytest.raises(ValueError, match="empty output"):
        mod.conv2d_forward(dev(impl, np.zeros((1, 3, 2, 2), np.float32)), w[:, :3], 1, 0)
    with pytest.raises(TypeError, match=r"conv2d_forward: stride must be an int or a tuple of "
                                        r"2 ints, got 1.5"):
        mod.conv2d_forward(x, w[:, :3], 1.5, 0)
    with pytest.raises(ValueError, match=r"conv2d_forward: dilation must be >= 1, got 0"):
        mod.conv2d_forward(x, w[:, :3], 1, 0, 0)
    with pytest.raises(ValueError, match=r"conv2d_forward: input \(1, 3, 8, 8\) has 3 channels "
                                         r"but weight \(2, 3, 3, 3\) expects 3 x groups 2"):
        mod.conv2d_forward(x, w[:, :3], 1, 0, 1, 2)


def test_implementations_and_versions_are_listed():
    """Each implementation lists every primitive's versions by name; "default" is the
    function the backend calls."""
    assert kernels.IMPLEMENTATIONS == ("reference", "cpu", "cuda")
    with pytest.raises(ValueError, match="unknown kernel implementation"):
        kernels.get("opencl")
    primitives = {"matmul", "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight",
                  "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward",
                  "avgpool2d_backward"}
    for impl in kernels.IMPLEMENTATIONS:
        mod = kernels.get(impl)
        assert primitives <= set(mod.VERSIONS), impl
        for name in primitives:
            assert mod.VERSIONS[name]["default"] is getattr(mod, name)
            assert kernels.get(impl, name) is getattr(mod, name)
            for v, fn in mod.VERSIONS[name].items():
                assert kernels.get(impl, name, v) is fn
    assert {"fold_batch", "batched", "per_sample"} <= set(
        kernels.get("cpu").VERSIONS["conv2d_backward_weight"])
    with pytest.raises(ValueError, match=r"kernels.cpu has no version 'v9' of matmul"):
        kernels.get("cpu", "matmul", "v9")


# -- kernels.cpu specifics ------------------------------------------------------------------------------
def test_cpu_conv_results_never_alias_the_reused_workspace():
    """kernels.cpu reuses one scratch buffer across calls; what it returns must be fresh."""
    cpu = kernels.get("cpu")
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


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (2, 1, 1), (3, 3, 0)])
@pytest.mark.parametrize("nan", [False, True])
def test_cpu_max_pool_fast_path_and_general_kernel_agree(k, s, p, nan):
    """kernels.cpu has a compile-time-specialised max-pool for common windows without
    NaN and a general kernel for the rest; both give the reference's values and argmax."""
    cpu = kernels.get("cpu")
    rng = np.random.default_rng(k * 10 + s)
    x = rng.standard_normal((3, 4, 11, 9)).astype(np.float32)
    x[:, :, ::3, ::2] = 0.5  # ties inside windows
    if nan:  # routes the call to the general kernel
        x[1, 2, 4, 4] = x[2, 0, 0, 1] = np.nan
    y_ref, arg_ref = reference.maxpool2d_forward(x, k, s, p)
    for fn in cpu.VERSIONS["maxpool2d_forward"].values():
        y, arg = fn(x, k, s, p)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(arg, arg_ref)
    assert (k, k, s, s, p, p) in cpu._FIXED_POOLS  # the case really exercises the fast path


# -- kernels.cuda specifics -----------------------------------------------------------------------------
@settings(deadline=None, max_examples=300)
@given(st.integers(1, 2 ** 31 - 1), st.integers(0, 2 ** 31 - 1), st.integers(0, 2 ** 31 - 1))
def test_cuda_division_by_multiply_and_shift_is_exact(d, x, y):
    """The convolution loaders divide by run-time sizes with _magic's (multiplier, shift):
    exact for every dividend below 2**31, near the divisor's multiples too."""
    m, p = cuda_mod._magic(d)
    assert 0 < m < 2 ** 32
    below_next_multiple = min(2 ** 31 - 1, d * (x // d + 1) - 1)
    for v in (x, y % (4 * d) if d < 2 ** 29 else y, d - 1, d, below_next_multiple):
        assert (v * m) >> p == v // d, (d, v)
        assert int((np.uint64(v) * np.uint64(m)) >> np.uint64(p)) == v // d  # the device's types
    with pytest.raises(ValueError, match="divisor"):
        cuda_mod._magic(0)


def test_cuda_set_tile_checks_its_arguments():
    with pytest.raises(ValueError, match="set_tile"):
        cuda_mod.set_tile(8, 8, 4, 3, 2)


@pytest.mark.skipif(not SIM, reason="a workaround for Numba's CUDA simulator")
def test_simulator_shared_arrays_are_one_per_line_under_contention(monkeypatch):
    """kernels._cuda_runtime (imported by kernels.cuda) makes the simulator's shared-array
    creation atomic: 64 threads that reach the same cuda.shared.array line together must
    all get the same array."""
    import threading
    import time

    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    # a slow allocation widens the race window from microseconds to a millisecond: with
    # numba's unlocked version nearly every thread then creates its own array
    real_empty = np.empty

    def slow_empty(*args, **kwargs):
        time.sleep(1e-3)
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(np, "empty", slow_empty)
    shared = FakeCUDAShared(0)
    start = threading.Barrier(64)
    got = []

    def thread():
        start.wait()
        got.append(shared.array((8, 8), np.float32))

    threads = [threading.Thread(target=thread) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 64 and all(a is got[0] for a in got)


def test_framework_dispatches_to_the_cuda_kernels(monkeypatch):
    """A small CNN trained one step on "cuda" gives the cpu step's loss and gradients, and
    conv/pool/matmul really went through kernels.cuda."""
    import tinygrad_k as tk
    from tinygrad_k import nn

    cuda_mod.set_tile(8, 8, 4, 2, 2)
    calls = []
    for name in ("conv2d_forward", "conv2d_backward_weight", "maxpool2d_forward", "matmul"):
        real = getattr(cuda_mod, name)
        monkeypatch.setattr(cuda_mod, name,
                            lambda *a, _r=real, _n=name, **k: (calls.append(_n), _r(*a, **k))[1])
    tk.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(2 * 3 * 3, 3))
    x, y = tk.randn(2, 1, 6, 6), tk.tensor([0, 2])
    loss = nn.CrossEntropyLoss()(model(x), y)
    loss.backward()
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    model.to("cuda")
    assert model[0].weight.device == "cuda"
    loss_gpu = nn.CrossEntropyLoss()(model(x.to("cuda")), y.to("cuda"))
    loss_gpu.backward()
    assert loss_gpu.device == "cuda"
    assert abs(loss_gpu.item() - loss.item()) < 1e-5
    for g, p in zip(grads, model.parameters()):
        assert rel(p.grad.numpy(), g) < 1e-5
    assert {"conv2d_forward", "conv2d_backward_weight", "maxpool2d_forward",
            "matmul"} <= set(calls)
    model.cpu()
    assert model[0].weight.device == "cpu"


def test_the_shared_a_tile_stores_spread_over_the_banks():
    """The production GEMM stages A transposed: thread s of a K-step writes element
    (row s // BK, k s % BK) to As[k * stride + row]. At a stride of BM (64 or 128) a
    warp's 32 stores land in 32 / BK banks; kernels.cuda pads the stride (_A_PAD) so that
    at every candidate tile no bank takes more than 2 of them (1 at BK = 8). A model of the
    addresses, for GPU-free review; the timing is the GPU sweep's."""
    import kernels.cuda as K

    for bm, bn, bk, tm, tn in K.TILE_CANDIDATES:
        nthreads = (bm // tm) * (bn // tn)
        stride = bm + K._A_PAD
        worst = 0
        for i in range(-(-bm * bk // nthreads)):
            for w0 in range(0, nthreads, 32):
                banks = [((s % bk) * stride + s // bk) % 32
                         for s in range(w0 + i * nthreads, w0 + i * nthreads + 32)]
                worst = max(worst, max(banks.count(b) for b in set(banks)))
        assert worst <= (1 if bk == 8 else 2), ((bm, bn, bk, tm, tn), worst)
        assert stride % 4 == 0  # the TM reads of a thread stay 16-byte aligned


# -- launch plans: the second call with the same shapes replays the first one's launches ----
class _SimDirect(cuda_mod._cuda_launch.DirectLauncher):
    """A driver launch stood in by the simulator: a call runs the kernel; a bound launch
    runs it again on the template's scalars and on views of the new arrays' memory with the
    template's shapes and strides -- as the driver would read them from the packed buffer,
    where only the data pointers change."""

    def __call__(self, *args):
        self.kernel[self.grid, self.block](*args)

    def bind(self, *args):
        def bound(*arrays):
            it = iter(arrays)
            new = [_view_at(next(it), a) if isinstance(a, np.ndarray) else a for a in args]
            assert next(it, None) is None  # one new array per array argument
            self.kernel[self.grid, self.block](*new)
            bound.calls += 1

        bound.calls = 0
        _SimDirect.bound.append(bound)
        return bound

    bound = []


def _view_at(new, template):
    """``template``'s shape and strides over ``new``'s memory (what the kernel's ABI reads
    from a bound launch), after checking that they fit in it."""
    span = sum((n - 1) * s for n, s in zip(template.shape, template.strides)) + template.itemsize
    assert new.dtype == template.dtype and (new.size == 0 or span <= new.nbytes)
    return np.lib.stride_tricks.as_strided(new.reshape(-1), template.shape, template.strides)


def _plans_on_the_simulator(monkeypatch):
    """kernels.cuda as on a GPU for its planning (driver launches, plans kept), with every
    launch run by the simulator (_SimDirect); a fresh store of plans."""
    cuda_mod._sm_count()  # (132 under the simulator, remembered before it is "off")
    monkeypatch.setattr(cuda_mod, "_simulating", lambda: False)
    monkeypatch.setattr(cuda_mod, "_launch_config", lambda k, g, t: _SimDirect(k, g, t))
    monkeypatch.setattr(cuda_mod, "_launch", lambda k, total, threads=128: _SimDirect(
        k, *cuda_mod._blocks(total, threads)))
    monkeypatch.setattr(cuda_mod, "_conv_kernel", ["implicit_gemm_64"])
    monkeypatch.setattr(cuda_mod, "_wide_kernel", ["double_buffered_warp"])
    monkeypatch.setattr(cuda_mod, "_plans", {})
    monkeypatch.setattr(_SimDirect, "bound", [])
    small_tile_now(monkeypatch)


def small_tile_now(monkeypatch):
    monkeypatch.setattr(cuda_mod, "_tile", list(SMALL_TILES[0]))


@pytest.mark.skipif(not SIM, reason="the simulator stands in for the driver")
@pytest.mark.parametrize("split", [False, True], ids=["whole-K", "split-K"])
def test_launch_plans_replay_on_new_arrays(monkeypatch, split):
    """matmul and the three convolution passes (the Numba kernels): the first call plans,
    the next ones with the same shapes skip the checks and replay its launches on the new
    arrays -- split-K's two launches and the input gradient's weight transposition too --
    and still match the reference; another shape or a changed setting plans anew."""
    from kernels._common import conv_geometry

    _plans_on_the_simulator(monkeypatch)
    if split:
        monkeypatch.setattr(cuda_mod, "_SPLIT_MIN_K", 1)
    checks = []
    monkeypatch.setattr(cuda_mod, "check_float", lambda op, *a: checks.append(op))
    rng = np.random.default_rng(5)
    geo = conv_geometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    _fresh_plans(monkeypatch, geo)
    for step in range(2):
        a, b = rand(rng, (5, 7), np.float32), rand(rng, (6, 7), np.float32)
        assert rel(cuda_mod.matmul(a, b, False, True), a @ b.T) < 1e-5
        x, w = rand(rng, (1, 3, 4, 4), np.float32), rand(rng, (2, 3, 3, 3), np.float32)
        y = cuda_mod.conv2d_forward(x, w, geo)
        assert rel(y, reference.conv2d_forward(x, w, 1, 1)) < 1e-5
        dy = rand(rng, y.shape, np.float32)
        assert rel(cuda_mod.conv2d_backward_input(dy, w, x.shape, geo),
                   reference.conv2d_backward_input(dy, w, x.shape, 1, 1)) < 1e-5
        assert rel(cuda_mod.conv2d_backward_weight(dy, x, w.shape, geo),
                   reference.conv2d_backward_weight(dy, x, w.shape, 1, 1)) < 1e-5
        if step == 0:
            first = list(checks)
    assert len(first) == 4 and checks == first  # the second step: no checks, no planning
    assert [bound.calls for bound in _SimDirect.bound] == [1] * len(_SimDirect.bound)
    assert len(_SimDirect.bound) == (8 if split else 4)  # (split-K: the GEMM and its sum)
    assert len(cuda_mod._plans) == 1 and len(geo.__dict__["_cuda_plans"]) == 3
    cuda_mod.matmul(rand(rng, (5, 8), np.float32), rand(rng, (8, 2), np.float32))  # new shape
    monkeypatch.setattr(cuda_mod, "_SPLIT_BLOCKS_PER_SM", 0)                        # a setting
    cuda_mod.matmul(a, b, False, True)
    assert len(cuda_mod._plans) == 3 and len(checks) == 6


@pytest.mark.skipif(not SIM, reason="the simulator stands in for the driver")
def test_no_plan_where_the_kernel_did_not_read_the_inputs_as_given(monkeypatch):
    """A non-contiguous convolution input is copied before the launch: that launch is not
    kept (a later input of the same strides would be passed uncopied), nor is a product
    under numba's own launch (no driver launch to repeat)."""
    from kernels._common import conv_geometry

    _plans_on_the_simulator(monkeypatch)
    rng = np.random.default_rng(6)
    geo = conv_geometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    _fresh_plans(monkeypatch, geo)
    x = rand(rng, (2, 5, 4, 3), np.float32).transpose(0, 3, 1, 2)  # (2, 3, 5, 4), strided
    w = rand(rng, (4, 3, 3, 3), np.float32)
    for _ in range(2):
        assert rel(cuda_mod.conv2d_forward(x, w, geo),
                   reference.conv2d_forward(x, w, 1, 1)) < 1e-5
    assert "_cuda_plans" not in geo.__dict__ or not geo.__dict__["_cuda_plans"]
    monkeypatch.setattr(cuda_mod, "_launch_config", lambda k, g, t: k[g, t])
    cuda_mod.matmul(rand(rng, (3, 4), np.float32), rand(rng, (4, 2), np.float32))
    assert cuda_mod._plans == {}


def test_cuda_channel_bias_and_its_gradient_match_numpy(monkeypatch):
    """kernels.cuda.add_channel_bias_ (y += b along axis 1, in place) and channel_sum (the
    bias gradient: g summed over every axis but 1) on (N, C) and (N, C, H, W) arrays of
    both float dtypes, several blocks' worth of elements per channel; empty ones too."""
    monkeypatch.setattr(cuda_mod, "_SUM_THREADS", 8)  # (the simulator: 8 threads a channel)

    def check(data):
        dt = data.draw(st.sampled_from([np.float32, np.float64]))
        n, c = data.draw(st.integers(0, 4)), data.draw(st.integers(1, 5))
        shape = (n, c) + data.draw(st.sampled_from([(), (1, 1), (3, 5), (4, 4)]))
        rng = np.random.default_rng(data.draw(SEEDS))
        y, b = rand(rng, shape, dt), rand(rng, (c,), dt)
        want = y.astype(np.float64) + b.reshape((1, -1) + (1,) * (y.ndim - 2))
        yd = dev("cuda", y)
        assert cuda_mod.add_channel_bias_(yd, dev("cuda", b)) is yd
        assert rel(yd, want) < 1e-6 or want.size == 0
        got = cuda_mod.channel_sum(dev("cuda", y))
        assert got.shape == (c,) and got.dtype == dt
        axes = (0,) + tuple(range(2, y.ndim))
        want, scale = y.astype(np.float64).sum(axis=axes), np.abs(y).sum(axis=axes)
        err = np.abs(np.asarray(got if SIM else got.get()) - want)
        assert (err <= 1e-5 * scale + 1e-30).all()  # (in g's dtype: float32 sums)

    run("cuda", st.data(), check)


def test_cuda_channel_bias_falls_back_where_the_kernels_do_not_apply(monkeypatch):
    """A strided array, a bias of another dtype, an integer array: broadcasting and the
    array module's reduction, with the same results."""
    monkeypatch.setattr(cuda_mod, "_SUM_THREADS", 8)
    launches = []
    monkeypatch.setattr(cuda_mod, "_launch", lambda *a: launches.append(a))
    rng = np.random.default_rng(3)
    y = rand(rng, (3, 4, 5), np.float32).transpose(0, 2, 1)  # (3, 5, 4), not contiguous
    b = rand(rng, (5,), np.float32)
    want = y + b[None, :, None]
    cuda_mod.add_channel_bias_(y, b)
    np.testing.assert_allclose(y, want, rtol=1e-6)
    np.testing.assert_allclose(cuda_mod.channel_sum(y), y.sum(axis=(0, 2)), rtol=1e-5)
    z = rand(rng, (2, 3), np.float32)
    cuda_mod.add_channel_bias_(z, np.ones(3, np.float64))  # (NumPy casts in place)
    i = np.arange(12).reshape(2, 6)
    assert cuda_mod.channel_sum(i).tolist() == i.sum(axis=0).tolist()
    assert launches == []


def test_cuda_relu_and_its_gradient_match_numpy():
    """kernels.cuda.relu (NumPy's maximum(x, 0): NaN kept, -0.0 -> 0.0) and relu_backward
    (0 where y <= 0, else dy: a NaN or inf gradient at an inactive unit gives 0) on
    contiguous float arrays with NaN, infinities and signed zeros; the array module's
    maximum / where for a strided array or mixed dtypes."""
    specials = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, 1e-30, -1e-30], np.float64)

    def check(data):
        dt = data.draw(st.sampled_from([np.float32, np.float64]))
        shape = data.draw(st.sampled_from([(0,), (7,), (3, 5), (2, 3, 4)]))
        rng = np.random.default_rng(data.draw(SEEDS))
        x = rand(rng, shape, dt)
        x.reshape(-1)[: specials.size] = specials[: x.size]
        y = cuda_mod.relu(dev("cuda", x))
        got = np.asarray(y if SIM else y.get())
        np.testing.assert_array_equal(got, np.maximum(x, 0))
        assert not np.signbit(got).any() and got.dtype == dt
        dy = rand(rng, shape, dt)
        dy.reshape(-1)[-3:] = [np.nan, np.inf, -np.inf][: dy.size]
        dx = cuda_mod.relu_backward(dev("cuda", dy), y)
        np.testing.assert_array_equal(np.asarray(dx if SIM else dx.get()),
                                      np.where(got <= 0, dt(0), dy))

    run("cuda", st.data(), check)
    x = np.arange(-6, 6, dtype=np.float32).reshape(3, 4).T  # strided
    np.testing.assert_array_equal(cuda_mod.relu(x), np.maximum(x, 0))
    dy = np.ones((4, 3), np.float64)
    np.testing.assert_array_equal(cuda_mod.relu_backward(dy, x), np.where(x <= 0, 0.0, dy))


@pytest.mark.skipif(not SIM, reason="the simulator stands in for the driver")
def test_relu_and_bias_plans_replay_on_new_arrays(monkeypatch):
    """relu, relu_backward, add_channel_bias_ (in place: its plan is the bound launch) and
    channel_sum: planned on the first call, replayed on new arrays after."""
    _plans_on_the_simulator(monkeypatch)
    monkeypatch.setattr(cuda_mod, "_SUM_THREADS", 8)
    rng = np.random.default_rng(8)
    for _ in range(3):
        x, dy = rand(rng, (4, 5, 3), np.float32), rand(rng, (4, 5, 3), np.float32)
        b = rand(rng, (5,), np.float32)
        want = x + b[None, :, None]
        assert cuda_mod.add_channel_bias_(x, b) is x
        np.testing.assert_allclose(x, want, rtol=1e-6)
        y = cuda_mod.relu(x)
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        np.testing.assert_array_equal(cuda_mod.relu_backward(dy, y), np.where(y <= 0, 0, dy))
        np.testing.assert_allclose(cuda_mod.channel_sum(dy), dy.sum(axis=(0, 2)), rtol=1e-5)
    assert len(cuda_mod._plans) == 4 and [b.calls for b in _SimDirect.bound] == [2] * 4


class _Dev(np.ndarray):
    """A NumPy array with CuPy's ``.data.ptr`` (what the driver launches read)."""

    @property
    def data(self):
        import types

        return types.SimpleNamespace(ptr=self.ctypes.data)


def _fake_cupy_recording(calls):
    """A stand-in CuPy for kernels/cuda_sgemm.py's convolutions: arrays are _Dev, a
    RawModule function call is recorded as ("call", name, grid, block, ints, pointers), a
    driver launch of a packed buffer (RawBound) as ("raw", ...) the same, read back from
    the buffer as three pointers and 13 ints."""
    import ctypes
    import struct
    import types

    names = {}

    def dev(a):
        return a.view(_Dev)

    def function(name):
        def call(grid, block, args):
            ptrs = tuple(a.data.ptr for a in args[:3])
            calls.append(("call", name, tuple(grid), tuple(block),
                          tuple(int(v) for v in args[3:]), ptrs))

        names[id(call)] = name
        call.kernel = types.SimpleNamespace(ptr=id(call))
        return call

    def launch_kernel(f, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
        words = (ctypes.c_void_p * 5).from_address(extra)
        size = ctypes.c_size_t.from_address(words[3]).value
        vals = struct.unpack("@QQQ" + "i" * 13, ctypes.string_at(words[1], size))
        grid = tuple(v for v in (gx, gy, gz))
        calls.append(("raw", names[f], grid[:3], (bx,), vals[3:], vals[:3]))

    return types.SimpleNamespace(
        empty=lambda shape, dtype=np.float32: dev(np.empty(shape, dtype)),
        ascontiguousarray=lambda a: a if a.flags.c_contiguous else dev(np.ascontiguousarray(a)),
        RawModule=lambda code, options: types.SimpleNamespace(get_function=function),
        cuda=types.SimpleNamespace(driver=types.SimpleNamespace(launchKernel=launch_kernel),
                                   get_current_stream=lambda: types.SimpleNamespace(ptr=0)))


@pytest.mark.skipif(not SIM, reason="the simulator stands in for the driver")
@pytest.mark.parametrize("c,o,h,split", [(64, 64, 16, True), (32, 64, 8, False),
                                         (64, 56, 8, False)],
                         ids=["split-K", "forward whole-K", "input grad whole-K"])
def test_cuda_c_convolution_plans_launch_what_the_first_call_launched(monkeypatch, c, o, h, split):
    """The CUDA C passes' plans (RawBound, ints packed once): a replay launches the entry
    point the first call launched, on the same grid and block, with the same ints, on the
    new call's arrays (the weights, the source, a fresh output or partial products that
    split-K's sum then reads); a misaligned weight takes the full path again."""
    import sys

    from kernels._common import conv_geometry

    calls = []
    fake = _fake_cupy_recording(calls)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    S = cuda_mod.cuda_sgemm  # (its compiled functions cached afresh, over the stand-in)
    for name in ("_conv_function", "_wgrad_function"):
        monkeypatch.setattr(S, name, functools.lru_cache(None)(getattr(S, name).__wrapped__))
    _plans_on_the_simulator(monkeypatch)
    monkeypatch.setattr(cuda_mod, "_conv_kernel", ["auto"])
    monkeypatch.setattr(cuda_mod, "_xp", lambda a: fake if isinstance(a, _Dev) else np)
    sums = []  # (split-K's sum: its launches recorded, not run)
    monkeypatch.setattr(_SimDirect, "__call__", lambda self, *args: None)
    monkeypatch.setattr(_SimDirect, "bind", lambda self, *args: lambda P, out: sums.append(
        (P.data.ptr, out)))
    geo = conv_geometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    _fresh_plans(monkeypatch, geo)
    rng = np.random.default_rng(9)
    dev = lambda a: a.view(_Dev)  # noqa: E731
    ops = {"fwd": lambda x, w, dy: cuda_mod.conv2d_forward(x, w, geo),
           "dgrad": lambda x, w, dy: cuda_mod.conv2d_backward_input(dy, w, x.shape, geo),
           "wgrad": lambda x, w, dy: cuda_mod.conv2d_backward_weight(dy, x, w.shape, geo)}
    for name, op in ops.items():
        rows = o if name != "dgrad" else c
        if rows < 64:
            continue  # (the Numba kernels: planned and tested above)
        for step in range(2):
            x, w = dev(rand(rng, (2, c, h, h), np.float32)), dev(rand(rng, (o, c, 3, 3), np.float32))
            dy = dev(rand(rng, (2, o, h, h), np.float32))
            before = len(calls)
            out = op(x, w, dy)
            first, *rest = calls[before:]
            assert first[0] == ("call" if step == 0 else "raw") and not rest
            if step == 0:
                call = first
                continue
            assert first[1:5] == call[1:5]  # entry point, grid, block, ints
            a_ptr, s_ptr, o_ptr = first[5]  # (the input gradient's A: weights transposed)
            a, src = {"fwd": (w, x), "dgrad": (None, dy), "wgrad": (dy, x)}[name]
            assert s_ptr == src.data.ptr and (a is None or a_ptr == a.data.ptr)
            if first[4][4] > 1:  # split: the sum reads what the kernel wrote, into the result
                assert sums[-1][0] == o_ptr and sums[-1][1].data.ptr == out.data.ptr
            else:
                assert o_ptr == out.data.ptr
            assert (first[4][4] > 1) == split
    # a weight 4 bytes off a 16-byte boundary: the plan declines, the full path runs
    if o >= 64:
        buf = np.empty(o * c * 9 + 1, np.float32)[1:].reshape(o, c, 3, 3).view(_Dev)
        x = dev(rand(rng, (2, c, h, h), np.float32))
        before = len(calls)
        cuda_mod.conv2d_forward(x, buf, geo)
        assert calls[before][0] == "call" and calls[before][4][5] == 0  # (vec_a off)
