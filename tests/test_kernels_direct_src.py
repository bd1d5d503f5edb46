"""The direct convolution of kernels/cuda_direct.py checked without a GPU.

As for the CUDA C GEMMs (tests/test_kernels_sgemm_src.py), the kernel source is

* compiled by NVRTC for sm_90 and read by ptxas: no spills;
* compiled as host C++ (a block's threads are std::threads, its shared weights a static
  array, __syncthreads() a barrier) and run on NumPy arrays against kernels.reference by
  hypothesis: forward passes and stride-1 input gradients over windows with strides,
  padding ('same' with even windows too), dilation, channel counts that fill R or not,
  and pixel counts that leave a block partly idle.

On a GPU, tests/test_kernels_gpu.py runs the kernel through CuPy and kernels.cuda.
"""
import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.cuda_direct as D
import kernels.reference as R
from kernels._common import conv_geometry
from test_kernels_sgemm_src import HOST_SHIMS, host_library, ptxas_registers

# (R, KH, KW, FLIP) entries the host library holds
ENTRIES = [(r, kh, kw, flip) for r in (4, 8, 16) for kh, kw in ((1, 1), (3, 3), (5, 5), (2, 3))
           for flip in (False, True)]

PRELUDE = (
    "template <class T> static inline T __ldg(const T* p) { return *p; }\n"
    # the block's weights: a static array the block's threads share (at most SMEM_MAX)
    f"#define TK_DYNAMIC_SHARED(type, name) static type name[{D.SMEM_MAX // 16}]\n")


def _host_launcher():
    """C++ ``direct(which, blocks, src, w, out, ints)``: entry ``which`` of ENTRIES over
    ``blocks`` blocks of THREADS std::threads each."""
    names = [D.entry(*e)[0] for e in ENTRIES]
    ints = ", ".join(f"(int)a[{i}]" for i in range(1, 13))
    call = (f"entries[which](src, w, out, a[0], {ints}, a[13], a[14], a[15], a[16])")
    return (
        "typedef void (*entry_t)(const float*, const float*, float*, unsigned"
        + ", int" * 12 + ", unsigned" * 4 + ");\n"
        f"static const entry_t entries[] = {{{', '.join(names)}}};\n"
        'extern "C" void direct(int which, unsigned blocks, const float* src, const float* w, '
        "float* out, const unsigned* a) {\n"
        f"    blockDim = {{{D.THREADS}, 1, 1}};\n"
        "    gridDim = {blocks, 1, 1};\n"
        "    for (unsigned b = 0; b < blocks; ++b) {\n"
        "        blockIdx = {b, 0, 0};\n"
        f"        std::barrier<> bar({D.THREADS});\n"
        "        tk_barrier = &bar;\n"
        "        std::vector<std::thread> ts;\n"
        f"        for (unsigned th = 0; th < {D.THREADS}; ++th)\n"
        "            ts.emplace_back([=] { threadIdx = {th, 0, 0}; " + call + "; });\n"
        "        for (auto& t : ts) t.join();\n"
        "    }\n"
        "}\n")


def _source():
    return D.SOURCE + "".join(D.entry(*e)[1] for e in ENTRIES)


@pytest.fixture(scope="module")
def host_direct(tmp_path_factory):
    return host_library(tmp_path_factory, "tk_direct",
                        PRELUDE + _source() + _host_launcher()).direct


def _run(direct, src, w, out, geo, dgrad):
    key, (grid,), _, smem, ints = D.launch_args(src.shape, w.shape, out.shape, geo, dgrad)
    assert smem <= D.SMEM_MAX
    a = np.array([int(v) & 0xFFFFFFFF for v in ints], np.uint32)
    ptr = ctypes.c_void_p
    direct(ENTRIES.index(key), ctypes.c_uint(grid), *(ptr(v.ctypes.data) for v in (src, w, out)),
           ptr(a.ctypes.data))


@st.composite
def direct_cases(draw):
    dgrad = draw(st.booleans())
    kh, kw = draw(st.sampled_from(sorted({(e[1], e[2]) for e in ENTRIES})))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (1, 1) if dgrad else (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    if not dgrad and stride == (1, 1) and draw(st.booleans()):
        padding = "same"
    else:
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    geo = conv_geometry((kh, kw), stride, padding, dil)
    eff = geo.effective_kernel
    lo = [max(1, e - 2 * p) for e, p in zip(eff, geo.padding)]
    h, w = draw(st.integers(lo[0], lo[0] + 9)), draw(st.integers(lo[1], lo[1] + 9))
    n = draw(st.integers(1, 3))
    rows = draw(st.sampled_from([1, 3, 4, 6, 8, 11, 16]))   # result channels (R: 4, 8, 16)
    other = draw(st.integers(1, 5))                          # the source's channels
    c, o = (rows, other) if dgrad else (other, rows)
    return dgrad, geo, (n, c, h, w), (o, c, kh, kw), draw(st.integers(0, 2 ** 32 - 1))


@settings(deadline=None, max_examples=40)
@given(direct_cases())
def test_direct_convolution_matches_the_reference(host_direct, case):
    dgrad, geo, x_shape, w_shape, seed = case
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(w_shape).astype(np.float32)
    y_shape = geo.output_shape(x_shape, w_shape)
    if dgrad:
        dy = rng.standard_normal(y_shape).astype(np.float32)
        assert D.fits("t", dy.shape, w_shape, x_shape, geo, True) is None
        ref = R.conv2d_backward_input(dy.astype(np.float64), w.astype(np.float64), x_shape,
                                      geo)
        out = np.full(x_shape, 7.0, np.float32)
        _run(host_direct, dy, w, out, geo, True)
    else:
        x = rng.standard_normal(x_shape).astype(np.float32)
        assert D.fits("t", x_shape, w_shape, y_shape, geo, False) is None
        ref = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), geo)
        out = np.full(y_shape, 7.0, np.float32)
        _run(host_direct, x, w, out, geo, False)
    err = np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30)
    assert err < 1e-5, (err, case)


def test_direct_convolution_compiles_for_sm90_without_spills():
    regs = ptxas_registers(_source(), "tk_direct.cu")
    assert len(regs) == len(ENTRIES)
    assert max(regs) <= 64, regs  # 128-thread blocks: at most 64 keeps full occupancy


def test_direct_convolution_says_what_it_cannot_take():
    geo = conv_geometry((3, 3), 1, 1)
    x, w = (2, 3, 8, 8), (17, 3, 3, 3)
    assert "at most 16" in D.fits("op", x, w, (2, 17, 8, 8), geo, False)
    assert "groups=2" in D.fits("op", (2, 4, 8, 8), (4, 2, 3, 3), (2, 4, 8, 8),
                                conv_geometry((3, 3), 1, 1, groups=2), False)
    assert "stride 1" in D.fits("op", (2, 4, 4, 4), (4, 3, 3, 3), (2, 3, 8, 8),
                                conv_geometry((3, 3), 2, 1), True)
    assert "shared memory" in D.fits("op", (1, 400, 8, 8), (16, 400, 3, 3), (1, 16, 8, 8),
                                     geo, False)
    assert D.fits("op", x, (16, 3, 3, 3), (2, 16, 8, 8), geo, False) is None


def test_kernels_cuda_runs_the_direct_passes_down_to_the_launch(host_direct, monkeypatch):
    """kernels.cuda.conv2d_forward / conv2d_backward_input on a GPU as "auto" routes them
    (LeNet-5's layers, a stem's input gradient), with a stand-in CuPy whose driver launch
    reads RawBound's parameter buffer as the entry's C parameters (three pointers, then
    SCALARS) and runs the host-compiled kernel: the shared memory asked for, the plan kept
    and replayed on new arrays (no second plan), the results against kernels.reference."""
    import sys

    import kernels.cuda as K
    from cupy_standin import stand_in_cupy

    launched, planned = [], []

    def run(name, grid, block, smem, arrays, ints):
        src, w, out = arrays
        key = next(e for e in ENTRIES if D.entry(*e)[0] == name)
        assert grid[1:] + block == (1, 1, D.THREADS, 1, 1)
        assert smem == ints[1] * w.shape[2] * w.shape[3] * key[0] * 4  # C x taps x R floats
        launched.append(name)
        a = np.array([v & 0xFFFFFFFF for v in ints], np.uint32)
        ptr = ctypes.c_void_p
        host_direct(ENTRIES.index(key), ctypes.c_uint(grid[0]),
                    *(ptr(v.ctypes.data) for v in (src, w, out)), ptr(a.ctypes.data))

    fake, dev = stand_in_cupy(D.SOURCE, 3, D.SCALARS, run)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(K, "_simulating", lambda: False)
    monkeypatch.setattr(K, "_direct_launches", lambda: True)
    monkeypatch.setattr(K, "_xp", lambda a: fake)
    monkeypatch.setattr(K, "_conv_kernel", ["auto"])
    real_plan = D.plan
    monkeypatch.setattr(D, "plan", lambda *a: planned.append(a[-1]) or real_plan(*a))
    D._function.cache_clear()
    rng = np.random.default_rng(7)
    try:
        # (x, w, stride, padding): LeNet-5's two layers (forward; conv2's input gradient
        # too), a stem's input gradient (3 channels)
        for xs, ws, s, p, passes in (((5, 1, 12, 12), (6, 1, 5, 5), 1, 2, ("fwd",)),
                                     ((5, 6, 7, 7), (16, 6, 5, 5), 1, 0, ("fwd", "dgrad")),
                                     ((2, 3, 9, 9), (8, 3, 3, 3), 1, 1, ("dgrad",))):
            geo = conv_geometry(ws[2:], s, p)
            monkeypatch.setitem(geo.__dict__, "_cuda_plans", {})  # (plans over the stand-in)
            w = dev(rng.standard_normal(ws).astype(np.float32))
            y_shape = geo.output_shape(xs, ws)
            for _ in range(2):  # the second call replays the plan on new arrays
                x = dev(rng.standard_normal(xs).astype(np.float32))
                dy = dev(rng.standard_normal(y_shape).astype(np.float32))
                if "fwd" in passes:
                    got = K.conv2d_forward(x, w, geo)
                    want = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), geo)
                    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
                if "dgrad" in passes:
                    got = K.conv2d_backward_input(dy, w, xs, geo)
                    want = R.conv2d_backward_input(dy.astype(np.float64), w.astype(np.float64),
                                                   xs, geo)
                    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
        assert launched == ["tk_conv_direct_8_5_5_f"] * 2 + [
            "tk_conv_direct_16_5_5_f", "tk_conv_direct_8_5_5_t"] * 2 + [
            "tk_conv_direct_4_3_3_t"] * 2
        assert planned == [False, False, True, True]  # once per pass, replayed after
        with pytest.raises(ValueError, match="conv2d_forward_direct: the direct convolution "
                                             "takes at most 16"):
            D.conv2d_forward(dev(np.zeros((1, 1, 4, 4), np.float32)),
                             dev(np.zeros((17, 1, 3, 3), np.float32)), conv_geometry(3))
        with pytest.raises(TypeError, match="conv2d_forward_direct: float32 arrays expected"):
            D.conv2d_forward(np.zeros((1, 1, 4, 4)), np.zeros((2, 1, 3, 3)), conv_geometry(3))
    finally:
        D._function.cache_clear()


def test_the_packed_parameters_are_the_entry_points_ptx_parameters():
    """RawBound packs three 64-bit pointers then SCALARS ("@" layout, 92 bytes): the entry
    point's PTX, compiled by NVRTC for sm_90, takes exactly those parameters."""
    import struct

    from kernels._cuda_launch import ptx_params

    try:
        from benchmarks.resources import nvrtc_ptx
        ptx = nvrtc_ptx(D.SOURCE + D.entry(8, 5, 5, True)[1])
    except ImportError as e:  # pragma: no cover - the test extra installs NVRTC
        pytest.skip(f"NVRTC not available here: {e}"[:200])
    widths = [64] * 3 + [8 * struct.calcsize("@" + c) for c in D.SCALARS]
    assert struct.calcsize("@QQQ" + D.SCALARS) == sum(widths) // 8 == 92
    assert ptx_params(ptx)[1] == widths
