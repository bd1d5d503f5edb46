"""Real-GPU tests (``pytest -m gpu``): kernels.cuda at larger sizes and every fused CuPy
kernel against a NumPy formula. Skipped, visibly, without CuPy and a CUDA device."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.gpu

try:
    import cupy as cp

    HAVE_GPU = cp.cuda.runtime.getDeviceCount() > 0
except Exception:  # ImportError or no device
    HAVE_GPU = False

if not HAVE_GPU:
    pytest.skip("needs CuPy and a CUDA GPU (run on a GPU machine: pytest -m gpu)",
                allow_module_level=True)

from kernels import cuda as K  # noqa: E402
from kernels import cuda_fused as F  # noqa: E402
from kernels import reference as R  # noqa: E402
from kernels._common import pool_geometry  # noqa: E402


def rel(a, b):
    a = cp.asnumpy(a).astype(np.float64)
    assert not np.isnan(a).any()
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


rng = np.random.default_rng(0)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (127, 253, 61), (512, 512, 512),
                                   (1000, 997, 1013)])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_matmul_large(m, k, n, ta, tb):
    for _ in range(2):  # (the second call replays the first one's launch plan)
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
        assert rel(K.matmul(cp.asarray(a), cp.asarray(b), ta, tb), want) < 1e-5


@pytest.mark.parametrize("m,k,n,batch", [(1, 4, 4, 1), (127, 252, 60, 1), (512, 512, 512, 1),
                                         (1000, 996, 1012, 2), (300, 0, 8, 1),
                                         # the general kernel: K or N not 4-aligned
                                         (127, 253, 61, 1), (70, 9, 66, 2)])
def test_tf32_matmul_on_tensor_cores(m, k, n, batch):
    """Both TF32 kernels (kernels.cuda_tf32) against the float64 product of the operands:
    TF32's 10-bit mantissas give ~1e-3 (the issue's bound); against the product of the
    TF32-rounded operands only the float32 accumulation differs."""
    import kernels.cuda_tf32 as T
    import kernels.cuda_wgmma as W

    a = rng.standard_normal((batch, m, k)).astype(np.float32)
    b = rng.standard_normal((batch, k, n)).astype(np.float32)
    exact = a.astype(np.float64) @ b
    for pipeline in (True, False):
        # (the wgmma and pipelined kernels round ties to even, the general one away from zero)
        even = pipeline and (T.pipelined(m, k, n) or (W.supported() and W.usable(m, k, n)))
        rounded = T.round_tf32(a, even).astype(np.float64) @ T.round_tf32(b, even)
        c = T.matmul(cp.asarray(a), cp.asarray(b), pipeline=pipeline)
        if k == 0:
            np.testing.assert_array_equal(cp.asnumpy(c), 0)
            continue
        assert rel(c, exact) < 1e-3, pipeline
        assert rel(c, rounded) < 1e-5, pipeline
    # a view that starts 4 bytes into its buffer: the general kernel, as 16-byte copies
    # could not read it
    flat = cp.asarray(np.concatenate([[0], a.ravel()]).astype(np.float32))
    c = T.matmul(flat[1:].reshape(a.shape), cp.asarray(b))
    if k:
        assert rel(c, exact) < 1e-3


def test_tf32_every_pipelined_schedule():
    """Each schedule the ladder part times (kernels.cuda_tf32.PIPE_CANDIDATES), edge tiles
    in M, N and K, a batch of 2."""
    import kernels.cuda_tf32 as T

    a = rng.standard_normal((2, 300, 292)).astype(np.float32)
    b = rng.standard_normal((2, 292, 268)).astype(np.float32)
    rounded = T.round_tf32(a, True).astype(np.float64) @ T.round_tf32(b, True)
    for cfg in T.PIPE_CANDIDATES:
        assert rel(T.matmul(cp.asarray(a), cp.asarray(b), config=cfg), rounded) < 1e-5, cfg
    for group in (1, 2, 4):  # partial groups of tile rows (3 tile rows here)
        assert rel(T.matmul(cp.asarray(a), cp.asarray(b), config=T.PIPE_CONFIG, group=group),
                   rounded) < 1e-5


def _tf32_truncated(x):
    return (x.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float64)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_tf32_wgmma_every_schedule(ta, tb):
    """The wgmma kernel (kernels.cuda_wgmma) on sm_90 at each schedule the ladder part
    times (for the transposes, which only change the prep pass, the default rounded and
    not): edge tiles in M, N (even, not 4-aligned) and K, a batch of 2; rounded operands
    against the float64 product of the nearest-even TF32 ones; unrounded ones against that
    of the truncated ones (the tensor cores are taken to drop the 13 low bits; the rounded
    product is accepted too, the kernel being the same either way); all within the
    issue's 1e-3 of the exact product. Elsewhere than sm_90 the mma.sync kernels run
    (checked too)."""
    import kernels.cuda_tf32 as T
    import kernels.cuda_wgmma as W

    m, k, n = 300, 292, 266
    a = rng.standard_normal((2, k, m) if ta else (2, m, k)).astype(np.float32)
    b = rng.standard_normal((2, n, k) if tb else (2, k, n)).astype(np.float32)
    a_ = a.transpose(0, 2, 1) if ta else a
    b_ = b.transpose(0, 2, 1) if tb else b
    exact = a_.astype(np.float64) @ b_
    rounded = T.round_tf32(a_, True).astype(np.float64) @ T.round_tf32(b_, True)
    truncated = _tf32_truncated(a_) @ _tf32_truncated(b_)
    if not W.supported():
        c = W.matmul(cp.asarray(a), cp.asarray(b), ta, tb)  # (falls back to mma.sync)
        assert rel(c, exact) < 1e-3
        pytest.skip("wgmma needs compute capability 9.0; the fallback was checked")
    if not (ta or tb):  # (first: where the layouts disagree, which elements went where)
        report = W.probe()
        assert not report, "wgmma layout probe:\n" + "\n".join(report)
    # (every schedule once; the transposes, which only change the prep pass, on two)
    for cfg in (W.WGMMA_CANDIDATES if not (ta or tb)
                else (W.WGMMA_CONFIG, W.WGMMA_CONFIG._replace(round=False))):
        c = W.matmul(cp.asarray(a), cp.asarray(b), ta, tb, config=cfg)
        if cfg.round:
            assert rel(c, rounded) < 1e-5, cfg
        else:
            assert min(rel(c, truncated), rel(c, rounded)) < 1e-4, cfg
        assert rel(c, exact) < 1e-3, cfg
    # through kernels.cuda_tf32.matmul's config, K = 0, K inside one step, 2-D operands
    c = T.matmul(cp.asarray(a[0]), cp.asarray(b[0]), ta, tb, config=W.WGMMA_CONFIG, group=1)
    assert rel(c, rounded[0]) < 1e-5
    np.testing.assert_array_equal(
        cp.asnumpy(W.matmul(cp.ones((5, 0), np.float32), cp.ones((0, 6), np.float32))), 0)
    x = rng.standard_normal((70, 12)).astype(np.float32)
    y = rng.standard_normal((12, 34)).astype(np.float32)
    assert rel(W.matmul(cp.asarray(x), cp.asarray(y)),
               T.round_tf32(x, True).astype(np.float64) @ T.round_tf32(y, True)) < 1e-5


@pytest.mark.parametrize("xs,ws,s,p", [((8, 64, 32, 32), (64, 64, 3, 3), 1, 1),
                                       ((8, 64, 32, 32), (128, 64, 3, 3), 2, 1),
                                       ((16, 3, 32, 32), (6, 3, 5, 5), 1, 0),
                                       # the direct kernel's: LeNet's conv2, a stem
                                       ((8, 6, 14, 14), (16, 6, 5, 5), 1, 0),
                                       ((8, 3, 32, 32), (64, 3, 3, 3), 1, 1),
                                       # ResNet's 512@4 at batch 8: 2 blocks, split-K 9 ways
                                       ((8, 256, 4, 4), (256, 256, 3, 3), 1, 1),
                                       ((5, 7, 13, 11), (3, 7, 4, 2), (3, 2), (2, 1))])
def test_conv_large(xs, ws, s, p):
    # the default route twice on new data: the second call replays the first one's plan
    for _ in range(2):
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        x64, w64 = x.astype(np.float64), w.astype(np.float64)
        y = K.conv2d_forward(cp.asarray(x), cp.asarray(w), s, p)
        assert rel(y, R.conv2d_forward(x64, w64, s, p)) < 1e-5
        dy = rng.standard_normal(y.shape).astype(np.float32)
        assert rel(K.conv2d_backward_input(cp.asarray(dy), cp.asarray(w), xs, s, p),
                   R.conv2d_backward_input(dy.astype(np.float64), w64, xs, s, p)) < 1e-5
        assert rel(K.conv2d_backward_weight(cp.asarray(dy), cp.asarray(x), ws, s, p),
                   R.conv2d_backward_weight(dy.astype(np.float64), x64, ws, s, p)) < 1e-5
    dy = rng.standard_normal(y.shape).astype(np.float32)
    want_dx = R.conv2d_backward_input(dy.astype(np.float64), w64, xs, s, p)
    for version in K.VERSIONS["conv2d_backward_input"].values():  # the GEMM, the direct one
        assert rel(version(cp.asarray(dy), cp.asarray(w), xs, s, p), want_dx) < 1e-5
    assert rel(K.conv2d_backward_weight(cp.asarray(dy), cp.asarray(x), ws, s, p),
               R.conv2d_backward_weight(dy.astype(np.float64), x64, ws, s, p)) < 1e-5
    # the CUDA C candidate (kernels/cuda_sgemm.py), directly and through set_conv_kernel
    from kernels import cuda_sgemm as S

    assert rel(S.conv2d_forward(cp.asarray(x), cp.asarray(w), s, p), R.conv2d_forward(
        x64, w64, s, p)) < 1e-5
    assert rel(S.conv2d_backward_input(cp.asarray(dy), cp.asarray(w), xs, s, p), want_dx) < 1e-5
    want_dw = R.conv2d_backward_weight(dy.astype(np.float64), x64, ws, s, p)
    assert rel(S.conv2d_backward_weight(cp.asarray(dy), cp.asarray(x), ws, s, p), want_dw) < 1e-5
    before = K._conv_kernel[0]
    try:
        for name in K.CONV_KERNELS:  # (split-K on most of these passes: small grids, long K)
            K.set_conv_kernel(name)
            assert rel(K.conv2d_forward(cp.asarray(x), cp.asarray(w), s, p),
                       R.conv2d_forward(x64, w64, s, p)) < 1e-5
            assert rel(K.conv2d_backward_input(cp.asarray(dy), cp.asarray(w), xs, s, p),
                       want_dx) < 1e-5
            assert rel(K.conv2d_backward_weight(cp.asarray(dy), cp.asarray(x), ws, s, p),
                       want_dw) < 1e-5
    finally:
        K.set_conv_kernel(before)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 3), cg=st.integers(1, 40), og=st.integers(1, 150), groups=st.integers(1, 2),
       h=st.integers(1, 20), wd=st.integers(1, 20),
       # (kernel, stride, padding, dilation): few windows, each one NVRTC compile per pass
       window=st.sampled_from([(3, 1, 1, 1), (3, 2, 1, 1), (5, 1, 0, 1), (3, 1, 2, 2)]),
       seed=st.integers(0, 2 ** 31))
def test_cuda_c_convolutions_match_the_reference(n, cg, og, groups, h, wd, window, seed):
    from hypothesis import assume

    from kernels import cuda_sgemm as S

    k, stride, pad, dil = window
    assume(h + 2 * pad - dil * (k - 1) - 1 >= 0 and wd + 2 * pad - dil * (k - 1) - 1 >= 0)
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, cg * groups, h, wd)).astype(np.float32)
    w = r.standard_normal((og * groups, cg, k, k)).astype(np.float32)
    args = (stride, pad, dil, groups)
    want = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), *args)
    assert rel(S.conv2d_forward(cp.asarray(x), cp.asarray(w), *args), want) < 1e-5
    dy = r.standard_normal(want.shape).astype(np.float32)
    want_dx = R.conv2d_backward_input(dy.astype(np.float64), w.astype(np.float64), x.shape, *args)
    assert rel(S.conv2d_backward_input(cp.asarray(dy), cp.asarray(w), x.shape, *args),
               want_dx) < 1e-5
    # split-K over the taps (about three chunks), the chunks added by CuPy (cuda_sgemm's
    # default) and by kernels.cuda's sum kernel
    for summed in (S.sum_partials, K._splitk_sum):
        assert rel(S.conv2d_forward(cp.asarray(x), cp.asarray(w), *args, **_thirds(cg * k * k),
                                    summed=summed), want) < 1e-5
        assert rel(S.conv2d_backward_input(cp.asarray(dy), cp.asarray(w), x.shape, *args,
                                           **_thirds(og * k * k), summed=summed), want_dx) < 1e-5
    want_dw = R.conv2d_backward_weight(dy.astype(np.float64), x.astype(np.float64), w.shape,
                                       *args)
    K_ = want.shape[0] * want.shape[2] * want.shape[3]
    for parts in (1, 3):  # whole K, and three chunks (or as many as K allows)
        got = S.conv2d_backward_weight(cp.asarray(dy), cp.asarray(x), w.shape, *args,
                                       **_thirds(K_, parts))
        assert rel(got, want_dw) < 1e-5


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 40), rows=st.integers(1, 16),
       h=st.integers(1, 20), wd=st.integers(1, 20), dgrad=st.booleans(),
       # (kernel, stride, padding, dilation): each one NVRTC compile per R
       window=st.sampled_from([(3, 1, 1, 1), (5, 1, 2, 1), (5, 2, 0, 1), (3, 1, 2, 2),
                               (1, 1, 0, 1)]),
       seed=st.integers(0, 2 ** 31))
def test_direct_convolutions_match_the_reference(n, c, rows, h, wd, dgrad, window, seed):
    """kernels/cuda_direct.py: the forward pass of ``rows`` output channels, or the
    stride-1 input gradient of ``rows`` input channels, twice (a new plan each call)."""
    from hypothesis import assume

    from kernels import cuda_direct as D
    from kernels._common import conv_geometry

    k, stride, pad, dil = window
    if dgrad:
        stride = 1
    assume(h + 2 * pad - dil * (k - 1) - 1 >= 0 and wd + 2 * pad - dil * (k - 1) - 1 >= 0)
    geo = conv_geometry(k, stride, pad, dil)
    assume(c * k * k * D.rows_padded(rows) * 4 <= D.SMEM_MAX)  # (the block's weights)
    r = np.random.default_rng(seed)
    if dgrad:
        xs, ws = (n, rows, h, wd), (c, rows, k, k)
        w = r.standard_normal(ws).astype(np.float32)
        dy = r.standard_normal(geo.output_shape(xs, ws)).astype(np.float32)
        want = R.conv2d_backward_input(dy.astype(np.float64), w.astype(np.float64), xs, geo)
        got = D.conv2d_backward_input(cp.asarray(dy), cp.asarray(w), xs, geo)
    else:
        x = r.standard_normal((n, c, h, wd)).astype(np.float32)
        w = r.standard_normal((rows, c, k, k)).astype(np.float32)
        want = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), geo)
        got = D.conv2d_forward(cp.asarray(x), cp.asarray(w), geo)
    assert got.shape == want.shape and rel(got, want) < 1e-5


def _thirds(k, parts=3):
    """split-K arguments cutting k into about ``parts`` chunks of a multiple of 8."""
    kchunk = max(8, -(-(-(-k // parts)) // 8) * 8)
    return {"split": -(-k // kchunk), "kchunk": kchunk}


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_pool_large(k, s, p):
    for _ in range(2):  # (the second call replays the plan the first one kept)
        x = rng.standard_normal((8, 32, 33, 31)).astype(np.float32)
        y, arg = K.maxpool2d_forward(cp.asarray(x), k, s, p)
        y_ref, arg_ref = R.maxpool2d_forward(x, k, s, p)
        np.testing.assert_array_equal(cp.asnumpy(y), y_ref)
        np.testing.assert_array_equal(cp.asnumpy(arg), arg_ref)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        want = R.maxpool2d_backward(dy.astype(np.float64), arg_ref, x.shape)
        assert rel(K.maxpool2d_backward(cp.asarray(dy), arg, x.shape), want) < 1e-6
        assert rel(K.maxpool2d_backward(cp.asarray(dy), arg, x.shape, k, s, p), want) < 1e-6
    assert rel(K.avgpool2d_forward(cp.asarray(x), k, s, p), R.avgpool2d_forward(x, k, s, p)) \
        < 1e-6


@pytest.mark.parametrize("shape", [(256, 120), (64, 16, 10, 10), (3, 5, 7)])
def test_relu_and_channel_bias_kernels(shape):
    """kernels.cuda.relu / relu_backward / add_channel_bias_ / channel_sum (one launch
    each, kept as plans: every call twice) against NumPy, and through a Linear + ReLU."""
    for _ in range(2):
        x = rng.standard_normal(shape).astype(np.float32)
        b = rng.standard_normal(shape[1]).astype(np.float32)
        axes = (0,) + tuple(range(2, len(shape)))
        bshape = (1, -1) + (1,) * (len(shape) - 2)
        y = K.add_channel_bias_(cp.asarray(x), cp.asarray(b))
        assert rel(y, x.astype(np.float64) + b.reshape(bshape)) < 1e-6
        r = K.relu(y)
        want = np.maximum(cp.asnumpy(y), 0)
        np.testing.assert_array_equal(cp.asnumpy(r), want)
        dy = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(cp.asnumpy(K.relu_backward(cp.asarray(dy), r)),
                                      np.where(want <= 0, np.float32(0), dy))
        assert rel(K.channel_sum(cp.asarray(dy)), dy.astype(np.float64).sum(axis=axes)) < 1e-5
    import tinygrad_k as tk

    lin = tk.nn.Linear(7, 5)
    xs = rng.standard_normal((9, 7)).astype(np.float32)
    grads = []
    for dev in ("cpu", "cuda"):
        layer = lin.to(dev)
        xt = tk.tensor(xs, device=dev, requires_grad=True)
        layer(xt).relu().sum().backward()
        grads.append([t.grad.numpy() for t in (xt, layer.weight, layer.bias)])
        layer.zero_grad()
    for got, want in zip(*grads[::-1]):
        assert rel(got, want) < 1e-5


@pytest.mark.parametrize("xs,ws,args", [((8, 64, 32, 32), (64, 1, 3, 3), (1, 1, 1, 64)),
                                         ((4, 32, 30, 29), (48, 8, 3, 3), (2, 2, (2, 3), 4)),
                                         ((4, 16, 17, 19), (16, 16, 4, 3), (1, "same", 2, 1))])
def test_conv_grouped_dilated_large(xs, ws, args):
    """Depthwise, grouped + dilated, and 'same' with an even kernel (asymmetric padding)."""
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y = K.conv2d_forward(cp.asarray(x), cp.asarray(w), *args)
    assert rel(y, R.conv2d_forward(x64, w64, *args)) < 1e-5
    dy = rng.standard_normal(y.shape).astype(np.float32)
    assert rel(K.conv2d_backward_input(cp.asarray(dy), cp.asarray(w), xs, *args),
               R.conv2d_backward_input(dy.astype(np.float64), w64, xs, *args)) < 1e-5
    assert rel(K.conv2d_backward_weight(cp.asarray(dy), cp.asarray(x), ws, *args),
               R.conv2d_backward_weight(dy.astype(np.float64), x64, ws, *args)) < 1e-5


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 40), h=st.integers(3, 40), wd=st.integers(3, 40),
       # (kernel, stride, padding, dilation, ceil_mode): few windows, one NVRTC compile each
       window=st.sampled_from([(2, 2, 0, 1, False), (3, 2, 1, 1, False), (3, 2, 1, 2, True),
                               (3, 1, 1, 1, False)]),
       ties=st.booleans(), seed=st.integers(0, 2 ** 31))
def test_cuda_c_maxpool_matches_the_reference(n, c, h, wd, window, ties, seed):
    """kernels/cuda_pool.py directly and through set_pool_kernel: exact values and argmax
    (ties: the first maximum), the gathered gradient within float32 rounding."""
    from hypothesis import assume

    from kernels import cuda_pool as P

    k, s, p, d, ceil = window
    assume(min(h, wd) + 2 * p >= d * (k - 1) + 1)
    r = np.random.default_rng(seed)
    x = (r.integers(-2, 3, (n, c, h, wd)) if ties else r.standard_normal((n, c, h, wd)))
    x = x.astype(np.float32)
    y_ref, arg_ref = R.maxpool2d_forward(x, k, s, p, d, ceil)
    dy = r.standard_normal(y_ref.shape).astype(np.float32)
    want = R.maxpool2d_backward(dy.astype(np.float64), arg_ref, x.shape)
    before = K._pool_kernel[0]
    for route in ("direct", "cuda_c", "numba"):
        mod = P if route == "direct" else K
        try:
            if route != "direct":
                K.set_pool_kernel(route)
            y, arg = mod.maxpool2d_forward(cp.asarray(x), k, s, p, d, ceil)
            np.testing.assert_array_equal(cp.asnumpy(y), y_ref)
            np.testing.assert_array_equal(cp.asnumpy(arg), arg_ref)
            dx = mod.maxpool2d_backward(cp.asarray(dy), arg, x.shape, k, s, p, d, ceil)
            assert rel(dx, want) < 1e-6
        finally:
            K.set_pool_kernel(before)
    geo = pool_geometry(k, s, p, d, ceil)
    for cells in P.CELLS:  # every backward entry point, whichever backward_cells picks
        dx = P.run_backward(P.backward_plan(x.shape, y_ref.shape, geo, cells=cells),
                            cp.asarray(dy), cp.asarray(arg_ref))
        assert rel(dx, want) < 1e-6, cells


def test_pool_options_large():
    x = rng.standard_normal((8, 16, 33, 31)).astype(np.float32)
    y, arg = K.maxpool2d_forward(cp.asarray(x), 3, 2, 1, 2, True)
    y_ref, arg_ref = R.maxpool2d_forward(x, 3, 2, 1, 2, True)
    np.testing.assert_array_equal(cp.asnumpy(y), y_ref)
    np.testing.assert_array_equal(cp.asnumpy(arg), arg_ref)
    opts = dict(ceil_mode=True, count_include_pad=False)
    assert rel(K.avgpool2d_forward(cp.asarray(x), 3, 2, 1, **opts),
               R.avgpool2d_forward(x.astype(np.float64), 3, 2, 1, **opts)) < 1e-6


def test_avgpool_launch_plans_replay():
    """kernels.cuda.avgpool2d_forward / _backward keep a launch plan per shape on the
    geometry: the second call of each replays it on new data (and output), a strided
    input takes no plan; each against the float64 reference."""
    from kernels._common import pool_geometry

    geo = pool_geometry(3, 2, 1, ceil_mode=True, op="avg_pool2d", count_include_pad=False)
    opts = dict(ceil_mode=True, count_include_pad=False)
    for _ in range(2):
        x = rng.standard_normal((4, 6, 13, 11)).astype(np.float32)
        y = K.avgpool2d_forward(cp.asarray(x), geo)
        assert rel(y, R.avgpool2d_forward(x.astype(np.float64), 3, 2, 1, **opts)) < 1e-6
        dy = rng.standard_normal(y.shape).astype(np.float32)
        assert rel(K.avgpool2d_backward(cp.asarray(dy), x.shape, geo),
                   R.avgpool2d_backward(dy.astype(np.float64), x.shape, 3, 2, 1, **opts)) < 1e-6
    plans = geo.__dict__.get("_cuda_plans", {})
    assert [k[0] for k in plans if k[0] == "avg_fwd" and k[1] == x.shape] == ["avg_fwd"]
    assert [k[0] for k in plans if k[0] == "avg_bwd" and k[-1] == x.shape] == ["avg_bwd"]
    xs = cp.asarray(rng.standard_normal((4, 6, 13, 22)).astype(np.float32))[..., ::2]
    assert rel(K.avgpool2d_forward(xs, geo),
               R.avgpool2d_forward(cp.asnumpy(xs).astype(np.float64), 3, 2, 1, **opts)) < 1e-6
    assert not [k for k in geo.__dict__.get("_cuda_plans", {}) if k[1:3] == (xs.shape, xs.strides)]


def test_fused_bias_relu_and_relu_backward():
    x = rng.standard_normal((4, 5, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    want = np.maximum(x + b[None, :, None, None], 0)
    np.testing.assert_allclose(cp.asnumpy(F.bias_relu(cp.asarray(x), cp.asarray(b))), want,
                               rtol=1e-6)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(cp.asnumpy(F.relu_backward(cp.asarray(dy), cp.asarray(want))),
                                  dy * (want > 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_softmax_cross_entropy(dtype):
    z = (rng.standard_normal((37, 10)) * 5).astype(dtype)
    t = rng.integers(0, 10, 37)
    loss, probs = F.softmax_xent_forward(cp.asarray(z), cp.asarray(t))
    m = z.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(1))
    np.testing.assert_allclose(cp.asnumpy(loss), lse - z[np.arange(37), t], rtol=1e-5)
    p = np.exp(z - lse[:, None])
    np.testing.assert_allclose(cp.asnumpy(probs), p, rtol=1e-5, atol=1e-7)
    dl = rng.standard_normal(37).astype(dtype)
    onehot = np.eye(10)[t]
    np.testing.assert_allclose(cp.asnumpy(F.softmax_xent_backward(probs, cp.asarray(t),
                                                                  cp.asarray(dl))),
                               dl[:, None] * (p - onehot), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nesterov,first", [(False, True), (False, False), (True, False)])
def test_fused_sgd(nesterov, first):
    p, g, buf = (rng.standard_normal(100).astype(np.float32) for _ in range(3))
    lr, mom, damp, wd = 0.1, 0.9, 0.0, 0.01
    d = g + wd * p
    nb = d if first else mom * buf + (1 - damp) * d
    step = d + mom * nb if nesterov else nb
    want_p = p - lr * step
    cp_p, cp_buf = cp.asarray(p), cp.asarray(buf)
    F.sgd_update_(cp_p, cp.asarray(g), cp_buf, lr, mom, damp, wd, nesterov, first)
    np.testing.assert_allclose(cp.asnumpy(cp_p), want_p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cp.asnumpy(cp_buf), nb, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("momentum,nesterov,first", [(0.9, False, True), (0.9, True, False),
                                                      (0.0, False, False)])
def test_sgd_over_many_tensors_in_one_launch(momentum, nesterov, first):
    """kernels.cuda.sgd_update_multi through the driver launch (tuples of arrays packed as
    flat views) against the fused per-tensor kernel: 20 tensors (two launches), one empty,
    one spanning several blocks."""
    shapes = [(6, 1, 5, 5), (6,), (0,), (5000,), (120, 400)] + [(7, 3)] * 15
    ps = [rng.standard_normal(sh).astype(np.float32) for sh in shapes]
    gs = [rng.standard_normal(sh).astype(np.float32) for sh in shapes]
    bs = [rng.standard_normal(sh).astype(np.float32) for sh in shapes]
    multi = [cp.asarray(a) for a in ps], [cp.asarray(a) for a in bs]
    single = [cp.asarray(a) for a in ps], [cp.asarray(a) for a in bs]
    K.sgd_update_multi(multi[0], [cp.asarray(g) for g in gs], multi[1] if momentum else None,
                       0.1, momentum, 0.0, 0.01, nesterov, first)
    for p, g, b in zip(single[0], gs, single[1]):
        F.sgd_update_(p, cp.asarray(g), b, 0.1, momentum, 0.0, 0.01, nesterov, first)
    for got, want in zip(multi[0] + multi[1], single[0] + single[1]):
        np.testing.assert_allclose(cp.asnumpy(got), cp.asnumpy(want), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_adam_over_many_tensors_in_one_launch(wd, decoupled):
    """kernels.cuda.adam_update_multi through the driver launch against the fused
    per-tensor kernel: 20 tensors (two launches), one empty, one over several blocks."""
    shapes = [(6, 1, 5, 5), (6,), (0,), (5000,), (120, 400)] + [(7, 3)] * 15
    arrays = [[rng.standard_normal(sh).astype(np.float32) for sh in shapes] for _ in "pgm"]
    arrays.append([rng.random(sh).astype(np.float32) for sh in shapes])
    multi = [[cp.asarray(a) for a in arrs] for arrs in arrays]
    single = [[cp.asarray(a) for a in arrs] for arrs in arrays]
    K.adam_update_multi(*multi, 1e-3, 0.9, 0.999, 1e-8, wd, 3, decoupled)
    for p, g, m, v in zip(*single):
        F.adam_update_(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, wd, 3, decoupled)
    for k in (0, 2, 3):  # params, m, v
        for got, want in zip(multi[k], single[k]):
            np.testing.assert_allclose(cp.asnumpy(got), cp.asnumpy(want), rtol=1e-5,
                                       atol=1e-7)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, True), (False, True)])
def test_matmul_on_the_wide_kernel(ta, tb):
    m, k, n = 2100, 515, 2050  # 17 x 17 blocks of 128x128: the wide kernel, edge tiles
    assert K._use_wide(m, n, 1)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
    assert rel(K.matmul(cp.asarray(a), cp.asarray(b), ta, tb), want) < 1e-5


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 3), m=st.integers(1, 700), n=st.integers(1, 700),
       k=st.integers(0, 300), ta=st.booleans(), tb=st.booleans(), offset=st.integers(0, 1),
       seed=st.integers(0, 2 ** 31))
def test_rung6_cuda_c_matches_float64(batch, m, n, k, ta, tb, offset, seed):
    from kernels import cuda_sgemm as S

    r = np.random.default_rng(seed)
    a = r.standard_normal((batch,) + ((k, m) if ta else (m, k))).astype(np.float32)
    b = r.standard_normal((batch,) + ((n, k) if tb else (k, n))).astype(np.float32)
    want = (a.swapaxes(1, 2) if ta else a).astype(np.float64) @ (b.swapaxes(1, 2) if tb else b)
    # offset 1: operands 4 bytes past an aligned base, the kernel's scalar load path
    da = cp.empty(a.size + 1, np.float32)[offset:offset + a.size].reshape(a.shape)
    db = cp.empty(b.size + 1, np.float32)[offset:offset + b.size].reshape(b.shape)
    da[...] = cp.asarray(a)
    db[...] = cp.asarray(b)
    for got, ref in ((S.matmul(da, db, ta, tb), want), (S.matmul(da[0], db[0], ta, tb), want[0])):
        assert got.shape == ref.shape
        if k == 0:  # no K-tile: zeros
            assert not cp.asnumpy(got).any()
        else:
            assert rel(got, ref) < 1e-5


@pytest.mark.parametrize("shape", [(2100, 515, 2050), (2048, 520, 2176)],
                         ids=["edge tiles", "whole tiles (exact entry)"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, True), (False, True), (True, False)])
def test_matmul_on_the_wide_kernel_in_cuda_c(ta, tb, shape):
    m, k, n = shape
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
    before = K._wide_kernel[0]
    try:
        for name in K.WIDE_KERNELS:  # rung 6 (the default) and rung 5
            K.set_wide_kernel(name)
            assert rel(K.matmul(cp.asarray(a), cp.asarray(b), ta, tb), want) < 1e-5, name
    finally:
        K.set_wide_kernel(before)


def test_cross_entropy_bad_target_raises_at_the_next_read():
    import tinygrad_k as tk
    import tinygrad_k.nn.functional as TF

    z = tk.randn(4, 3, device="cuda")
    loss = TF.cross_entropy(z, tk.tensor([0, 3, 1, 2], device="cuda"))  # no wait here
    with pytest.raises(IndexError, match="target 3 is out of range for 3 classes"):
        loss.item()
    assert np.isfinite(TF.cross_entropy(z, tk.tensor([0, 2, 1, 2], device="cuda")).item())


@settings(max_examples=25, deadline=None, derandomize=True)
@given(dtype=st.sampled_from([np.float32, np.float64]), n=st.integers(0, 600),
       c=st.integers(1, 12), p_ignore=st.sampled_from([0.0, 0.3, 1.0]),
       reduction=st.sampled_from(["mean", "sum", "none"]),
       smoothing=st.sampled_from([0.0, 0.1]), seed=st.integers(0, 2 ** 31))
def test_cross_entropy_on_the_gpu_matches_the_cpu(dtype, n, c, p_ignore, reduction,
                                                  smoothing, seed):
    """F.cross_entropy on cuda (the fused rows + sums + mean + backward kernels of
    kernels.cuda_fused, no host wait) against the cpu backend: loss and gradient, rows
    ignored, none counted, more rows than the sum kernel's threads."""
    import tinygrad_k as tk
    import tinygrad_k.nn.functional as TF

    r = np.random.default_rng(seed)
    z = (r.standard_normal((n, c)) * 5).astype(dtype)
    t = r.integers(0, c, n)
    t[r.random(n) < p_ignore] = -100
    out = {}
    for device in ("cpu", "cuda"):
        zt = tk.tensor(z, device=device, requires_grad=True)
        loss = TF.cross_entropy(zt, tk.tensor(t, device=device), reduction=reduction,
                                label_smoothing=smoothing)
        (loss.sum() if reduction == "none" else loss).backward()
        out[device] = (loss.numpy().astype(np.float64), zt.grad.numpy().astype(np.float64))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for got, want in zip(out["cuda"], out["cpu"]):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("decoupled", [False, True])
def test_fused_adam(decoupled):
    p, g = (rng.standard_normal(100).astype(np.float32) for _ in range(2))
    m, v = rng.standard_normal(100).astype(np.float32), rng.random(100).astype(np.float32)
    lr, b1, b2, eps, wd, step = 1e-3, 0.9, 0.999, 1e-8, 0.1, 3
    pp, gg = p.copy(), g.copy()
    if decoupled:
        pp = pp * (1 - lr * wd)
    else:
        gg = g + wd * p
    mm = b1 * m + (1 - b1) * gg
    vv = b2 * v + (1 - b2) * gg * gg
    want = pp - lr / (1 - b1 ** step) * mm / (np.sqrt(vv / (1 - b2 ** step)) + eps)
    cp_p, cp_m, cp_v = cp.asarray(p), cp.asarray(m), cp.asarray(v)
    F.adam_update_(cp_p, cp.asarray(g), cp_m, cp_v, lr, b1, b2, eps, wd, step, decoupled)
    np.testing.assert_allclose(cp.asnumpy(cp_p), want, rtol=1e-5, atol=1e-7)
    # b1*m + (1-b1)*g cancels in places: an fma on the GPU differs from NumPy's two
    # roundings by a few ulps of the terms, not of the (smaller) result
    np.testing.assert_allclose(cp.asnumpy(cp_m), mm, rtol=1e-6, atol=1e-7)


def test_training_step_on_the_gpu_matches_cpu():
    import tinygrad_k as tk
    from tinygrad_k import nn, optim
    from tinygrad_k.models import build

    tk.manual_seed(0)
    x = tk.randn(16, 1, 28, 28)
    y = tk.tensor(np.arange(16) % 10)
    losses = {}
    for device in ("cpu", "cuda"):
        tk.manual_seed(0)
        model = build("lenet5").to(device)
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        out = []
        for _ in range(3):
            loss = nn.CrossEntropyLoss()(model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        losses[device] = out
    np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-4)
