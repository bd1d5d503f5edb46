"""The CUDA C GEMMs of kernels/cuda_sgemm.py (rung 6 of the GEMM ladder and the implicit-GEMM
convolutions on its schedule) checked without a GPU.

CuPy kernels cannot run in Numba's simulator, so here the kernel's source is

* compiled by NVRTC for sm_90 (what CuPy does on a GPU) and its registers and spills read
  from ptxas: the schedule needs <= 128 registers for two blocks per SM and no spills;
* compiled as host C++ with g++ -- a block's 256 threads are std::threads, __shared__
  arrays statics shared by them, __syncthreads() a std::barrier -- and run on NumPy
  arrays, block by block, against a float64 product, by hypothesis: edge tiles in M, N
  and K, every transpose pair, batches, and operands whose rows are not 4-vector aligned
  (the scalar load path); the convolutions against kernels.reference, forward and input
  gradient, over windows with strides, padding, dilation and groups.

On a GPU, tests/test_kernels_gpu.py runs the kernel itself through CuPy.
"""
import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.cuda_sgemm as S

HOST_SHIMS = r"""
#include <barrier>
#include <cmath>
#include <cstddef>
#include <thread>
#include <vector>
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
struct tk_dim3 { unsigned int x, y, z; };
static tk_dim3 blockIdx, blockDim, gridDim;
static thread_local tk_dim3 threadIdx;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
static std::barrier<>* tk_barrier;
static void __syncthreads() { tk_barrier->arrive_and_wait(); }
"""

BLOCK_LOOP = r"""
    blockDim = {256, 1, 1};
    gridDim = {gx, gy, gz};
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x) {
                blockIdx = {x, y, z};
                std::barrier<> bar(256);
                tk_barrier = &bar;
                std::vector<std::thread> ts;
                for (unsigned th = 0; th < 256; ++th)
                    ts.emplace_back([=] {
                        threadIdx = {th, 0, 0};
                        CALL;
                    });
                for (auto& t : ts) t.join();
            }
"""


def launcher(fn, n_ints, entries):
    """C++ ``fn(which, gx, gy, gz, A, B, C, ints)``: runs kernel entry ``entries[which]``
    (each taking three float arrays and n_ints ints, as every entry point of
    kernels/cuda_sgemm.py does) over the grid, block by block, a block's 256 threads as
    std::threads."""
    call = f"{fn}_entries[which](A, B, C, " + ", ".join(f"a[{i}]" for i in range(n_ints)) + ")"
    return (f"typedef void (*{fn}_entry)(const float*, const float*, float*{', int' * n_ints});\n"
            f"static const {fn}_entry {fn}_entries[] = {{{', '.join(entries)}}};\n"
            f'extern "C" void {fn}(int which, unsigned gx, unsigned gy, unsigned gz, '
            "const float* A, const float* B, float* C, const int* a) {"
            + BLOCK_LOOP.replace("CALL", call) + "}\n")


def run_launcher(lib_fn, which, grid, arrays, ints):
    """Call a ``launcher`` with NumPy arrays (C-contiguous) and a sequence of ints."""
    args = np.array(ints, np.int32)
    ptr = ctypes.c_void_p
    lib_fn(which, *grid, *(ptr(a.ctypes.data) for a in arrays), ptr(args.ctypes.data))


def host_library(tmp_path_factory, name, source):
    """``source`` after the host shims, compiled by g++ into a loaded library; skips
    where there is no C++ compiler."""
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to run the CUDA kernels on the CPU")
    d = tmp_path_factory.mktemp(name)
    (d / f"{name}.cpp").write_text(HOST_SHIMS + source)
    # (float4 reads of float arrays: the CUDA idiom, outside C++'s aliasing rules)
    proc = subprocess.run([cxx, "-O1", "-fno-strict-aliasing", "-std=c++20", "-pthread",
                           "-shared", "-fPIC", "-o", str(d / f"{name}.so"),
                           str(d / f"{name}.cpp")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ctypes.CDLL(str(d / f"{name}.so"))


def ptxas_registers(source, name, arch="sm_90", log=None):
    """[registers of each entry] of ``source`` compiled by NVRTC and ptxas for ``arch``,
    after checking that none spills; skips where NVRTC or ptxas is missing. ``log``: a
    list that gets ptxas's report."""
    try:
        from benchmarks.resources import nvrtc_ptx, ptxas_path
        ptx = nvrtc_ptx(source, name, arch.replace("sm_", "compute_"))
    except ImportError as e:
        pytest.skip(f"NVRTC not available here: {e}"[:200])
    ptxas = ptxas_path()
    if ptxas is None:
        pytest.skip("no ptxas here (nvidia-cuda-nvcc wheel)")
    proc = subprocess.run([ptxas, f"-arch={arch}", "-v", "-o", "/dev/null", "-"], input=ptx,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if log is not None:
        log.append(proc.stderr)
    regs = [int(r) for r in re.findall(r"Used (\d+) registers", proc.stderr)]
    assert proc.stderr.count(" 0 bytes spill stores, 0 bytes spill loads") == len(regs), \
        proc.stderr
    return regs


ORDER = [(False, False), (False, True), (True, False), (True, True)]


# the entries the host library indexes: the four general ones, then their exact twins
ENTRIES = [S.KERNELS[k] for k in ORDER] + [S.KERNELS[k] + "_exact" for k in ORDER]


def test_the_entry_points_are_the_ones_the_host_calls():
    assert [S.KERNELS[k] for k in ORDER] == ["tk_sgemm_nn", "tk_sgemm_nt", "tk_sgemm_tn",
                                             "tk_sgemm_tt"]
    assert S.BM == S.BN == 128 and S.BK == 8 and S.THREADS == 256
    for name in ENTRIES:
        assert f"TK_SGEMM_ENTRY({name}," in S.SOURCE


def test_the_exact_entry_only_for_whole_tiles_and_aligned_rows():
    assert S.matmul_entry(4096, 4096, 4096, False, False, 1, 1, 1) == "tk_sgemm_nn_exact"
    assert S.matmul_entry(256, 128, 8, True, True, 1, 1, 1) == "tk_sgemm_tt_exact"
    for m, n, k, flags in ((4096, 4000, 4096, (1, 1, 1)), (100, 128, 8, (1, 1, 1)),
                           (128, 128, 12, (1, 1, 1)), (128, 128, 8, (1, 0, 1)),
                           (128, 128, 8, (1, 1, 0))):
        assert S.matmul_entry(m, n, k, False, True, *flags) == "tk_sgemm_nt"


# -- NVRTC + ptxas: the source compiles for sm_90 within its register budget -----------------
def test_compiles_for_sm90_without_spills_in_128_registers():
    regs = ptxas_registers(S.SOURCE, "tk_sgemm.cu")
    assert len(regs) == 8 and max(regs) <= 128


# -- host C++: the kernel computes the product ------------------------------------------------
@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return host_library(tmp_path_factory, "tk_sgemm", S.SOURCE + launcher(
        "tk_launch", 6, ENTRIES))


def stored(rng, shape, misalign):
    """A float32 C-contiguous array of this shape; with misalign its base is 4 bytes past
    a 16-byte boundary (the kernel must then take its scalar loads)."""
    size = int(np.prod(shape))
    buf = np.empty(size + 8, np.float32)
    start = (-buf.ctypes.data % 16) // 4 + (1 if misalign else 0)
    out = buf[start:start + size].reshape(shape)
    out[...] = rng.standard_normal(shape)
    return out


def run_host(lib, A, B, m, n, k, trans_a, trans_b):
    """C = op(A[g]) @ op(B[g]) through the host-compiled kernel, as kernels.cuda_sgemm
    launches it on a GPU (grid, vec flags); C starts as NaN so unwritten cells show."""
    batch = A.shape[0]
    C = np.full((batch, m, n), np.nan, np.float32)
    grid = (-(-n // S.BN), -(-m // S.BM), batch)
    va = S.vec_ok(m if trans_a else k, A.ctypes.data)
    vb = S.vec_ok(k if trans_b else n, B.ctypes.data)
    vc = S.vec_ok(n, C.ctypes.data)
    entry = S.matmul_entry(m, n, k, trans_a, trans_b, va, vb, vc)  # (as on a GPU)
    run_launcher(lib.tk_launch, ENTRIES.index(entry), grid, (A, B, C), (m, n, k, va, vb, vc))
    return C, (va, vb, vc)


def reference(A, B, trans_a, trans_b):
    a = np.asarray(A, np.float64)
    b = np.asarray(B, np.float64)
    return (a.swapaxes(1, 2) if trans_a else a) @ (b.swapaxes(1, 2) if trans_b else b)


def check(lib, rng, batch, m, n, k, trans_a, trans_b, misalign=False):
    A = stored(rng, (batch, k, m) if trans_a else (batch, m, k), misalign)
    B = stored(rng, (batch, n, k) if trans_b else (batch, k, n), misalign)
    C, flags = run_host(lib, A, B, m, n, k, trans_a, trans_b)
    ref = reference(A, B, trans_a, trans_b)
    assert not np.isnan(C).any()
    err = np.linalg.norm(C - ref) / max(np.linalg.norm(ref), 1e-30)
    assert err < 1e-6, (batch, m, n, k, trans_a, trans_b, flags, err)
    return flags


SIDE = st.integers(1, 280)


@pytest.mark.parametrize("trans_a,trans_b", ORDER)
@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 2), m=SIDE, n=SIDE, k=st.integers(1, 40), misalign=st.booleans(),
       seed=st.integers(0, 2 ** 31))
def test_host_kernel_matches_the_float64_product(lib, trans_a, trans_b, batch, m, n, k,
                                                 misalign, seed):
    check(lib, np.random.default_rng(seed), batch, m, n, k, trans_a, trans_b, misalign)


def test_host_kernel_takes_both_load_paths_and_long_k(lib):
    rng = np.random.default_rng(0)
    # every size a multiple of 4 and aligned bases: all-128-bit loads and stores, several
    # K-tiles through both shared stages, a partial tile in every direction
    assert check(lib, rng, 1, 132, 136, 100, False, False) == (1, 1, 1)
    assert check(lib, rng, 1, 132, 136, 100, True, True) == (1, 1, 1)
    # the same sizes at a misaligned base: the scalar path (C stays aligned)
    assert check(lib, rng, 1, 132, 136, 100, False, True, misalign=True) == (0, 0, 1)
    # whole tiles: the exact entries, every transpose pair, K over several K-tiles (and
    # the same sizes misaligned: the general ones)
    for ta, tb in ORDER:
        assert S.matmul_entry(256, 128, 24, ta, tb, 1, 1, 1).endswith("_exact")
        assert check(lib, rng, 2, 256, 128, 24, ta, tb) == (1, 1, 1)
    assert check(lib, rng, 1, 128, 256, 16, False, False, misalign=True) == (0, 0, 1)
    # K = 0: no K-tile at all, C is zeros
    A, B = np.zeros((1, 5, 0), np.float32), np.zeros((1, 0, 7), np.float32)
    C, _ = run_host(lib, A, B, 5, 7, 0, False, False)
    np.testing.assert_array_equal(C, np.zeros((1, 5, 7), np.float32))


def test_vec_ok_needs_whole_aligned_rows():
    assert S.vec_ok(8, 256) == 1
    assert S.vec_ok(6, 256) == 0  # rows of 6 floats: the second row starts misaligned
    assert S.vec_ok(8, 260) == 0  # base 4 bytes past a 16-byte boundary


# -- the convolutions ---------------------------------------------------------------------------
# windows (KH, KW, SH, SW, PH, PW, DH, DW) compiled into the host library
WINDOWS = [(3, 3, 1, 1, 1, 1, 1, 1), (3, 3, 2, 2, 1, 1, 1, 1), (5, 5, 1, 1, 2, 2, 1, 1),
           (1, 1, 2, 2, 0, 0, 1, 1), (3, 2, 2, 1, 1, 0, 2, 1)]

def conv_entries():
    """[(window, dgrad, bm)] in the order the conv launcher indexes, the entries' names
    and their source."""
    order, names, src = [], [], []
    for window in WINDOWS:
        for dgrad in (False, True):
            for bm in (64, 128):
                name, entry = S.conv_entry(window, dgrad, bm)
                order.append((window, dgrad, bm))
                names.append(name)
                src.append(entry)
    return order, names, "".join(src)


@pytest.fixture(scope="module")
def conv_lib(tmp_path_factory):
    _, names, entries = conv_entries()
    return host_library(tmp_path_factory, "tk_conv", S.CORE_SOURCE + S.CONV_SOURCE + entries
                        + launcher("tk_conv_launch", 13, names))


def test_conv_entries_compile_for_sm90_without_spills():
    regs = ptxas_registers(S.CORE_SOURCE + S.CONV_SOURCE + conv_entries()[2], "tk_conv.cu")
    assert len(regs) == 4 * len(WINDOWS) and max(regs) <= 128


def run_conv(lib, dgrad, x_shape, w, S_arr, geo, bm=None, split=1, kchunk=None):
    """The host-compiled kernel's result, launched as kernels.cuda_sgemm launches it (bm
    None: its choice of tile rows); with split-K (``split`` chunks of ``kchunk`` taps) the
    partial products added up by cuda_sgemm.sum_partials."""
    order = conv_entries()[0]
    window = geo.kernel_size + geo.stride + geo.padding + geo.dilation
    A = S.conv_weights(w, geo, dgrad, np)
    plan = S.conv_plan(dgrad, x_shape, w.shape, geo)
    M, N, K, SC, SA, SB, GA, GB, OC = plan
    Y = np.full((x_shape[0], OC, GA * GB), np.nan, np.float32)
    g = geo.groups
    out = Y if split == 1 else np.full((g * split, M, N), np.nan, np.float32)
    grid, ints, bm = S.conv_args(plan, g, A.ctypes.data, out.ctypes.data, bm, split, kchunk)
    run_launcher(lib.tk_conv_launch, order.index((window, dgrad, bm)), grid,
                 (A, np.ascontiguousarray(S_arr), out), ints)
    if split > 1:
        S.sum_partials(out.reshape(g, split, M, N), Y)
    return Y.reshape(x_shape[0], OC, GA, GB)


def chunks(K, split):
    """(split, kchunk) for about ``split`` chunks of K, each a multiple of 8 and non-empty."""
    kchunk = max(8, -(-(-(-K // split)) // 8) * 8)
    return -(-K // kchunk), kchunk


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: "x".join(map(str, w)))
@settings(max_examples=4, deadline=None)
@given(n=st.integers(1, 2), cg=st.integers(1, 5), og=st.integers(1, 9), groups=st.integers(1, 2),
       h=st.integers(1, 12), wd=st.integers(1, 12), bm=st.sampled_from([64, 128]),
       split=st.integers(1, 3), seed=st.integers(0, 2 ** 31))
def test_host_conv_matches_the_reference(conv_lib, window, n, cg, og, groups, h, wd, bm, split,
                                         seed):
    from hypothesis import assume

    from kernels import reference as R
    from kernels._common import conv_geometry

    kh, kw, sh, sw, ph, pw, dh, dw = window
    assume((h + 2 * ph - (kh - 1) * dh - 1) >= 0 and (wd + 2 * pw - (kw - 1) * dw - 1) >= 0)
    geo = conv_geometry((kh, kw), (sh, sw), (ph, pw), (dh, dw), groups)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cg * groups, h, wd)).astype(np.float32)
    w = rng.standard_normal((og * groups, cg, kh, kw)).astype(np.float32)
    args = ((sh, sw), (ph, pw), (dh, dw), groups)
    y_ref = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), *args)
    split_f, kchunk_f = chunks(cg * kh * kw, split)  # split-K over the taps (1: none)
    y = run_conv(conv_lib, False, x.shape, w, x, geo, bm, split_f, kchunk_f)
    assert y.shape == y_ref.shape and not np.isnan(y).any()
    assert np.linalg.norm(y - y_ref) <= 1e-5 * max(np.linalg.norm(y_ref), 1e-30)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    dx_ref = R.conv2d_backward_input(dy.astype(np.float64), w.astype(np.float64), x.shape,
                                     *args)
    split_d, kchunk_d = chunks(og * kh * kw, split)
    dx = run_conv(conv_lib, True, x.shape, w, dy, geo, bm, split_d, kchunk_d)
    assert dx.shape == x.shape and not np.isnan(dx).any()
    assert np.linalg.norm(dx - dx_ref) <= 1e-5 * max(np.linalg.norm(dx_ref), 1e-30)


def test_host_conv_spans_several_tiles(conv_lib):
    """More than 128 output channels and pixels (two tiles each way, three at 64 rows),
    K over several K-tiles, L a multiple of 4 (the float4 stores) and not (the scalar
    ones), at both tile heights."""
    from kernels import reference as R
    from kernels._common import conv_geometry

    rng = np.random.default_rng(1)
    for (h, wd), bm in (((12, 12), 128), ((9, 15), 128), ((12, 12), 64), ((9, 15), 64)):
        geo = conv_geometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
        x = rng.standard_normal((2, 70, h, wd)).astype(np.float32)
        w = rng.standard_normal((130, 70, 3, 3)).astype(np.float32)  # dx: 70 rows
        y = run_conv(conv_lib, False, x.shape, w, x, geo, bm)
        y_ref = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), 1, 1)
        assert np.linalg.norm(y - y_ref) <= 1e-5 * np.linalg.norm(y_ref)
        dy = rng.standard_normal(y_ref.shape).astype(np.float32)
        dx = run_conv(conv_lib, True, x.shape, w, dy, geo, bm)
        dx_ref = R.conv2d_backward_input(dy.astype(np.float64), w.astype(np.float64), x.shape,
                                         1, 1)
        assert np.linalg.norm(dx - dx_ref) <= 1e-5 * np.linalg.norm(dx_ref)


def test_host_conv_split_k_vector_loads_and_many_tiles(conv_lib):
    """Split-K over several tiles each way: K = 72 x 9 taps (rows of A in 4-vectors) in
    chunks of 216 (equal) and of 208 (the last one shorter), the partial products stored
    plain as 4-vectors (N a multiple of 4) or as scalars (N odd); the input gradient
    likewise over 72 x 9; and an odd K (70 x 9: the scalar loads) in chunks of 64."""
    from kernels import reference as R
    from kernels._common import conv_geometry

    rng = np.random.default_rng(3)
    geo = conv_geometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    for c, (h, wd), split, kchunk, bm in ((72, (12, 12), 3, 216, 128), (72, (9, 15), 4, 208, 64),
                                          (70, (12, 12), 10, 64, 128)):
        x = rng.standard_normal((2, c, h, wd)).astype(np.float32)
        w = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
        A = S.conv_weights(w, geo, False, np)
        plan = S.conv_plan(False, x.shape, w.shape, geo)
        _, ints, _ = S.conv_args(plan, 1, A.ctypes.data, 0, bm, split, kchunk)
        assert ints[3:7] == (kchunk, split, int(c % 4 == 0), int(2 * h * wd % 4 == 0))
        y = run_conv(conv_lib, False, x.shape, w, x, geo, bm, split, kchunk)
        y_ref = R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), 1, 1)
        assert np.linalg.norm(y - y_ref) <= 1e-5 * np.linalg.norm(y_ref)
        dy = rng.standard_normal(y_ref.shape).astype(np.float32)
        dx = run_conv(conv_lib, True, x.shape, w, dy, geo, bm, split, kchunk)
        dx_ref = R.conv2d_backward_input(dy.astype(np.float64), w.astype(np.float64), x.shape,
                                         1, 1)
        assert np.linalg.norm(dx - dx_ref) <= 1e-5 * np.linalg.norm(dx_ref)


def test_conv_args_refuses_chunks_that_do_not_cut_k():
    plan = S.conv_plan(False, (1, 4, 6, 6), (8, 4, 3, 3), _geo3())
    # K = 36: short of K, not a multiple of 8, no chunk, an empty last chunk
    for split, kchunk in ((2, 16), (4, 8), (3, 12), (0, 8), (6, 8), (2, 0)):
        with pytest.raises(ValueError, match="does not cut K = 36"):
            S.conv_args(plan, 1, 0, 0, None, split, kchunk)
    assert S.conv_args(plan, 1, 0, 0, None, 3, 16)[1][3:5] == (16, 3)  # 16 + 16 + 4


def _geo3():
    from kernels._common import conv_geometry

    return conv_geometry((3, 3), (1, 1), (1, 1), (1, 1), 1)


# -- the weight gradient ------------------------------------------------------------------------
WGRAD_ORDER = [(w, bm) for w in WINDOWS for bm in (64, 128)]


def wgrad_entries():
    entries = [S.conv_wgrad_entry(w, bm) for w, bm in WGRAD_ORDER]
    return [name for name, _ in entries], "".join(e for _, e in entries)


@pytest.fixture(scope="module")
def wgrad_lib(tmp_path_factory):
    names, entries = wgrad_entries()
    return host_library(tmp_path_factory, "tk_wgrad", S.CORE_SOURCE + S.CONV_WGRAD_SOURCE
                        + entries + launcher("tk_wgrad_launch", 13, names))


def run_wgrad(lib, x, dy, w_shape, geo, split=1, kchunk=None, bm=None):
    window = geo.kernel_size + geo.stride + geo.padding + geo.dilation
    x, dy = np.ascontiguousarray(x), np.ascontiguousarray(dy)
    grid, ints, p_shape, bm = S.wgrad_plan(x.shape, dy.shape, w_shape, geo, split, kchunk, bm)
    P = np.full(p_shape, np.nan, np.float32)
    ints = S.wgrad_aligned(ints, dy.ctypes.data, P.ctypes.data)
    run_launcher(lib.tk_wgrad_launch, WGRAD_ORDER.index((window, bm)), grid, (dy, x, P), ints)
    g = geo.groups
    return P.reshape(g, -1, p_shape[1], p_shape[2]).sum(axis=1).reshape(w_shape), ints


def test_wgrad_entries_compile_for_sm90_without_spills():
    regs = ptxas_registers(S.CORE_SOURCE + S.CONV_WGRAD_SOURCE + wgrad_entries()[1],
                           "tk_wgrad.cu")
    assert len(regs) == len(WGRAD_ORDER) and max(regs) <= 128


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: "x".join(map(str, w)))
@settings(max_examples=4, deadline=None)
@given(n=st.integers(1, 3), cg=st.integers(1, 5), og=st.integers(1, 9), groups=st.integers(1, 2),
       h=st.integers(1, 12), wd=st.integers(1, 12), split=st.integers(1, 3),
       bm=st.sampled_from([64, 128]), seed=st.integers(0, 2 ** 31))
def test_host_wgrad_matches_the_reference(wgrad_lib, window, n, cg, og, groups, h, wd, split,
                                          bm, seed):
    from hypothesis import assume

    from kernels import reference as R
    from kernels._common import conv_geometry

    kh, kw, sh, sw, ph, pw, dh, dw = window
    assume((h + 2 * ph - (kh - 1) * dh - 1) >= 0 and (wd + 2 * pw - (kw - 1) * dw - 1) >= 0)
    geo = conv_geometry((kh, kw), (sh, sw), (ph, pw), (dh, dw), groups)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cg * groups, h, wd)).astype(np.float32)
    w_shape = (og * groups, cg, kh, kw)
    out = geo.output_shape(x.shape, w_shape)
    dy = rng.standard_normal(out).astype(np.float32)
    split, kchunk = chunks(out[0] * out[2] * out[3], split)  # chunks of 8k pixels
    dw_, _ = run_wgrad(wgrad_lib, x, dy, w_shape, geo, split, kchunk, bm)
    ref = R.conv2d_backward_weight(dy.astype(np.float64), x.astype(np.float64), w_shape,
                                   (sh, sw), (ph, pw), (dh, dw), groups)
    assert not np.isnan(dw_).any()
    assert np.linalg.norm(dw_ - ref) <= 1e-5 * max(np.linalg.norm(ref), 1e-30)


def test_host_wgrad_vector_loads_and_many_tiles(wgrad_lib):
    """L a multiple of 4 (float4 rows of dy) and N a multiple of 4 (float4 stores), over
    two tiles of taps and several K-tiles per chunk; and the same with L odd."""
    from kernels import reference as R
    from kernels._common import conv_geometry

    rng = np.random.default_rng(2)
    geo = conv_geometry((3, 3), (1, 1), (1, 1), (1, 1), 1)
    for h, wd, split, kchunk, bm in ((8, 8, 2, 64, None), (7, 9, 1, None, None),
                                     (8, 8, 3, 48, 128), (7, 9, 2, 64, 64)):
        x = rng.standard_normal((2, 16, h, wd)).astype(np.float32)  # N = 144 taps
        w_shape = (70, 16, 3, 3)  # M = 70: two row tiles at 64, one at 128
        dy = rng.standard_normal((2, 70, h, wd)).astype(np.float32)
        dw_, ints = run_wgrad(wgrad_lib, x, dy, w_shape, geo, split, kchunk, bm)
        assert ints[5:7] == ((1, 1) if h == 8 else (0, 1))
        ref = R.conv2d_backward_weight(dy.astype(np.float64), x.astype(np.float64), w_shape,
                                       1, 1)
        assert np.linalg.norm(dw_ - ref) <= 1e-5 * np.linalg.norm(ref)
