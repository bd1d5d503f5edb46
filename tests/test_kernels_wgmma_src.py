"""The wgmma TF32 GEMM of kernels/cuda_wgmma.py checked without a GPU.

As for the mma.sync kernel (tests/test_kernels_tf32_src.py), its source is

* compiled by NVRTC for sm_90a and read by ptxas: no spills, registers within the launch
  bounds, and no "wgmma serialized" report (ptxas falls back to waiting after every wgmma
  where the accumulators are touched while one is in flight);
* compiled as host C++ and run on NumPy arrays by hypothesis, a block's threads as
  std::threads, with models of its primitives written here from the PTX ISA:
  - ``tk_wgmma``: the warpgroup's m64nNk8 product, the operands read from shared memory
    through the descriptors as the ISA defines them (start address, stride byte offset,
    128-byte swizzle mode applied to the address bits: bits 4-6 ^= bits 7-9, K-major
    rows of 128 bytes, 8-row groups a stride apart), the low 13 bits of each FP32 word
    ignored, the accumulators in the ISA's layout for .m64nNk8 with .f32 (register i of
    lane l of warp w: row 16 w + l / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (l % 4) + i % 2);
    it reads shared memory either when issued or only at the ``wgmma.wait_group`` that
    lets it finish;
  - ``tk_cp16`` / ``tk_cp_commit`` / ``tk_cp_wait``: copies land when issued or only at
    their wait, and none may read outside the operands;
  - the shared window starts 1024-aligned and the kernel's dynamic shared memory 48 bytes
    into it, so that the kernel's own alignment to the swizzle period is exercised.
  The orders: copies early with wgmma late (a stage overwritten while a wgmma still reads
  it shows), copies late with wgmma early (a wgmma issued before its data landed shows),
  both late.
* the prep pass (``tk_tf32_prep``: transpose and round to TF32) runs as host C++ too.

On a GPU, tests/test_kernels_gpu.py runs the kernels themselves.
"""
import ctypes
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.cuda_tf32 as T
import kernels.cuda_wgmma as W
from test_kernels_sgemm_src import host_library, ptxas_registers

MODELS = r"""
#include <atomic>
#include <cstring>
#include <deque>
#define TK_HOST
using std::min;
struct alignas(8) float2 { float x, y; };
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline float tk_f(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned tk_u(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
static inline float tk_round_tf32(float x) {  // cvt.rn.tf32.f32: nearest, ties to even
    const unsigned u = tk_u(x);
    if ((u & 0x7F800000u) == 0x7F800000u) return tk_f(u & 0xFFFFE000u);  // (inf; no NaN here)
    return tk_f((u + 0xFFFu + ((u >> 13) & 1u)) & 0xFFFFE000u);
}
#define TK_SMEM float* const tk_smem = (float*)(tk_window + 48)

// the block's shared window (1024-aligned); a shared address is an offset into it
static char* tk_window;
static size_t tk_window_bytes;
typedef unsigned tk_saddr;
static tk_saddr tk_shared_address(const float* p) { return (tk_saddr)((const char*)p - tk_window); }
static std::atomic<int> tk_bad{0};   // reads outside the operands or the window, bad descriptors

// cp.async: a thread's copies, in groups; TK_CP_EARLY lands each at once
struct tk_copy { tk_saddr dst; const float* src; int bytes; };
static thread_local std::vector<tk_copy> tk_open;
static thread_local std::deque<std::vector<tk_copy>> tk_groups;
static const float* tk_extent[2][2];
static void tk_land(const tk_copy& c) {
    if (c.dst % 16 || c.dst + 16 > tk_window_bytes) { ++tk_bad; return; }
    std::memset(tk_window + c.dst, 0, 16);
    std::memcpy(tk_window + c.dst, c.src, c.bytes);
}
static void tk_cp16(tk_saddr dst, const float* src, int bytes) {
    if (bytes) {
        bool inside = false;
        for (auto& e : tk_extent) inside |= src >= e[0] && src + bytes / 4 <= e[1];
        if (!inside) ++tk_bad;
    }
    if (TK_CP_EARLY) tk_land({dst, src, bytes});
    else tk_open.push_back({dst, src, bytes});
}
static void tk_cp_commit() { tk_groups.push_back(tk_open); tk_open.clear(); }
template <int N> static void tk_cp_wait() {
    while (tk_groups.size() > (size_t)N) {
        for (const tk_copy& c : tk_groups.front()) tk_land(c);
        tk_groups.pop_front();
    }
}
static void tk_fence_async() {}
static void tk_reg_fence(float&) {}
static void tk_wg_fence() {}

// wgmma.mma_async.m64n{TK_WG_N}k8.f32.tf32.tf32, both operands K-major in shared memory
static float tk_operand(unsigned long long desc, int r, int k) {
    const unsigned start = (unsigned)(desc & 0x3FFF) << 4;          // bits 0-13, >> 4
    const unsigned sbo = (unsigned)((desc >> 32) & 0x3FFF) << 4;   // bits 32-45, >> 4
    if ((desc >> 62) != 1 || ((desc >> 49) & 7) != 0) ++tk_bad;   // 128-byte swizzle, base 0
    // 8-row groups sbo apart, rows of one group 128 bytes apart (the swizzle width), then
    // the 128-byte swizzle of the address: its 16-byte chunk (bits 4-6) ^= bits 7-9
    unsigned addr = start + (r / 8) * sbo + (r % 8) * 128 + 4 * k;
    addr ^= ((addr >> 7) & 7u) << 4;
    if (addr + 4 > tk_window_bytes) { ++tk_bad; return 0.f; }
    float x;
    std::memcpy(&x, tk_window + addr, 4);
    return tk_f(tk_u(x) & 0xFFFFE000u);  // TF32: the low 13 bits ignored
}
struct tk_wg_op { float* d; unsigned long long da, db; };
static void tk_wg_run(const tk_wg_op& op) {
    const int t = threadIdx.x % 128, w = t / 32, l = t % 32;
    for (int i = 0; i < TK_WG_N / 2; ++i) {
        const int row = 16 * w + l / 4 + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * (l % 4) + i % 2;
        double s = op.d[i];
        for (int k = 0; k < 8; ++k) s += (double)tk_operand(op.da, row, k) * tk_operand(op.db, col, k);
        op.d[i] = (float)s;
    }
}
static thread_local std::vector<tk_wg_op> tk_wg_open;
static thread_local std::deque<std::vector<tk_wg_op>> tk_wg_groups;
static void tk_wgmma(float* d, unsigned long long da, unsigned long long db) {
    if (TK_WG_EARLY) tk_wg_run({d, da, db});
    else tk_wg_open.push_back({d, da, db});
}
static void tk_wg_commit() { tk_wg_groups.push_back(tk_wg_open); tk_wg_open.clear(); }
template <int N> static void tk_wg_wait() {
    if (!tk_wg_open.empty()) ++tk_bad;  // (an uncommitted wgmma is never waited for)
    while (tk_wg_groups.size() > (size_t)N) {
        for (const tk_wg_op& op : tk_wg_groups.front()) tk_wg_run(op);
        tk_wg_groups.pop_front();
    }
}
"""

ORDERS = {"copies-early-wgmma-late": (1, 0), "copies-late-wgmma-early": (0, 1),
          "both-late": (0, 0)}


def _launcher(cfg):
    window = cfg.smem_bytes + 48
    return (f"alignas(1024) static char tk_window_host[{window}];\n"
            + W.source(cfg) +
            'extern "C" int run(unsigned gx, unsigned gy, const float* A, const float* Bt, '
            "float* C, const int* a) {\n"
            "    tk_window = tk_window_host;\n"
            f"    tk_window_bytes = {window};\n"
            "    tk_extent[0][0] = A; tk_extent[0][1] = A + (long)gy * a[0] * a[2];\n"
            "    tk_extent[1][0] = Bt; tk_extent[1][1] = Bt + (long)gy * a[1] * a[2];\n"
            "    tk_bad = 0;\n"
            f"    blockDim = {{{cfg.threads}, 1, 1}};\n"
            "    gridDim = {gx, gy, 1};\n"
            "    for (unsigned y = 0; y < gy; ++y)\n"
            "        for (unsigned x = 0; x < gx; ++x) {\n"
            "            blockIdx = {x, y, 0};\n"
            "            // poison: a read of shared memory no copy wrote shows as NaN\n"
            f"            for (int i = 0; i < {window // 4}; ++i) "
            "((float*)tk_window_host)[i] = __builtin_nanf(\"\");\n"
            f"            std::barrier<> bar({cfg.threads});\n"
            "            tk_barrier = &bar;\n"
            "            std::vector<std::thread> ts;\n"
            f"            for (unsigned th = 0; th < {cfg.threads}; ++th)\n"
            "                ts.emplace_back([=] {\n"
            "                    threadIdx = {th, 0, 0};\n"
            "                    tk_gemm_tf32_wgmma(A, Bt, C, a[0], a[1], a[2], a[3], a[4]);\n"
            "                });\n"
            "            for (auto& t : ts) t.join();\n"
            "        }\n"
            "    return tk_bad;\n"
            "}\n")


def _library(tmp_path_factory, cfg, order):
    cp_early, wg_early = ORDERS[order]
    src = (f"#define TK_CP_EARLY {cp_early}\n#define TK_WG_EARLY {wg_early}\n"
           f"#define TK_WG_N {cfg.bn}\n" + MODELS + _launcher(cfg))
    name = "wgmma_" + "_".join(map(str, map(int, cfg))) + f"_{cp_early}{wg_early}"
    return host_library(tmp_path_factory, name, src).run


@pytest.fixture(scope="module", params=list(ORDERS))
def host_wgmma(request, tmp_path_factory):
    """The default schedule, host-compiled, in each order of copies and wgmma reads."""
    return _library(tmp_path_factory, W.WGMMA_CONFIG, request.param)


def _run(fn, a, bt, group, cfg=W.WGMMA_CONFIG):
    """C of the host-compiled kernel for a (batch, M, K) @ bt (batch, N, K)^T, blocks
    walking groups of ``group`` tile rows; C starts as NaN, so that an element no thread
    wrote shows; no copy may read outside a and bt."""
    batch, m, k = a.shape
    n = bt.shape[1]
    c = np.full((batch, m, n), np.nan, np.float32)
    tiles_n = -(-n // cfg.bn)
    ints = np.array([m, n, k, tiles_n, group], np.int32)
    ptr = ctypes.c_void_p
    a, bt = np.ascontiguousarray(a), np.ascontiguousarray(bt)  # (kept alive for the call)
    bad = fn(ctypes.c_uint(-(-m // cfg.bm) * tiles_n), ctypes.c_uint(batch),
             *(ptr(x.ctypes.data) for x in (a, bt, c)), ptr(ints.ctypes.data))
    assert bad == 0, f"{bad} copies or reads outside the operands, or bad descriptors"
    return c


def _check(c, a, b, rounded=True):
    """c against the float64 product of the operands as the tensor cores see them (TF32,
    rounded to nearest even by the prep pass, or truncated), and against the exact product."""
    if rounded:
        a, b = T.round_tf32(a, even=True), T.round_tf32(b, even=True)
    else:
        a, b = ((x.view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32) for x in (a, b))
    want = np.matmul(a.astype(np.float64), b.astype(np.float64))
    assert not np.isnan(c).any()
    assert np.linalg.norm(c - want) / max(np.linalg.norm(want), 1e-30) < 1e-6


@settings(max_examples=5, deadline=None)
@given(m=st.integers(1, 2 * W.WGMMA_CONFIG.bm + 3), k4=st.integers(0, 40),
       n2=st.integers(1, W.WGMMA_CONFIG.bn // 2 + 9), batch=st.integers(1, 2),
       group=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_wgmma_kernel_as_host_cpp(host_wgmma, m, k4, n2, batch, group, seed):
    """Edge tiles in M and N (N even, not a multiple of 4), K from 0 to past four steps
    (the stages wrap), partial groups of tile rows; operands already TF32 (as the prep
    pass leaves them)."""
    k, n = 4 * k4, 2 * n2
    rng = np.random.default_rng(seed)
    a = T.round_tf32(rng.standard_normal((batch, m, k)).astype(np.float32), even=True)
    b = T.round_tf32(rng.standard_normal((batch, k, n)).astype(np.float32), even=True)
    c = _run(host_wgmma, a, b.transpose(0, 2, 1), group)
    if k == 0:
        np.testing.assert_array_equal(c, 0)
    else:
        _check(c, a, b)


def test_wgmma_kernel_truncates_unrounded_operands(host_wgmma):
    """round=False leaves FP32 operands to the tensor cores, which drop the 13 low bits."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((1, 70, 100)).astype(np.float32)
    b = rng.standard_normal((1, 100, 36)).astype(np.float32)
    _check(_run(host_wgmma, a, b.transpose(0, 2, 1), 1), a, b, rounded=False)


@pytest.mark.parametrize("cfg", [c for c in W.WGMMA_CANDIDATES if c[:4] != W.WGMMA_CONFIG[:4]],
                         ids=lambda c: "x".join(map(str, c[:4])))
def test_every_wgmma_schedule_as_host_cpp(tmp_path_factory, cfg):
    """The schedules the ladder part times: two tile rows, K past the stages and inside
    one step, K = 0; with a wgmma group left running (depth 1), copies early and wgmma
    late, the order that shows a stage refilled too soon; at depth 0 the reverse, which
    shows a wgmma issued before its copies landed (the default runs in every order)."""
    rng = np.random.default_rng(cfg.bm + cfg.bn + cfg.stages)
    order = "copies-early-wgmma-late" if cfg.depth else "copies-late-wgmma-early"
    fn = _library(tmp_path_factory, cfg, order)
    for m, k, n in ((cfg.bm + 9, (cfg.stages + 1) * W.BK + 12, cfg.bn - 2), (5, 20, 8),
                    (3, 0, 4)):
        a = T.round_tf32(rng.standard_normal((1, m, k)).astype(np.float32), even=True)
        b = T.round_tf32(rng.standard_normal((1, k, n)).astype(np.float32), even=True)
        c = _run(fn, a, b.transpose(0, 2, 1), 1, cfg)
        if k:
            _check(c, a, b)
        else:
            np.testing.assert_array_equal(c, 0)


PREP_LAUNCHER = r"""
#define TK_HOST
#include <cstring>
typedef unsigned tk_saddr;
static inline float tk_round_tf32(float x) {
    unsigned u; std::memcpy(&u, &x, 4);
    u = (u + 0xFFFu + ((u >> 13) & 1u)) & 0xFFFFE000u;
    std::memcpy(&x, &u, 4);
    return x;
}
#define TK_SMEM
""" + W.PREP_SOURCE + r"""
extern "C" void run(unsigned gx, unsigned gy, unsigned gz, const float* src, float* dst,
                    int rows, int cols, int transpose, int round) {
    blockDim = {32, 8, 1};
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
                        threadIdx = {th % 32, th / 32, 0};
                        tk_tf32_prep(src, dst, rows, cols, transpose, round);
                    });
                for (auto& t : ts) t.join();
            }
}
"""


@pytest.fixture(scope="module")
def host_prep(tmp_path_factory):
    return host_library(tmp_path_factory, "wgmma_prep", PREP_LAUNCHER).run


@settings(max_examples=8, deadline=None)
@given(rows=st.integers(1, 70), cols=st.integers(1, 70), batch=st.integers(1, 2),
       transpose=st.booleans(), rnd=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_prep_pass_as_host_cpp(host_prep, rows, cols, batch, transpose, rnd, seed):
    """The prep pass against NumPy: the transpose (or copy) of each batch entry, rounded
    to nearest-even TF32 or bit for bit."""
    x = np.random.default_rng(seed).standard_normal((batch, rows, cols)).astype(np.float32)
    out = np.full((batch, cols, rows) if transpose else x.shape, np.nan, np.float32)
    ptr = ctypes.c_void_p
    host_prep(ctypes.c_uint(-(-cols // 32)), ctypes.c_uint(-(-rows // 32)), ctypes.c_uint(batch),
              ptr(x.ctypes.data), ptr(out.ctypes.data), ctypes.c_int(rows), ctypes.c_int(cols),
              ctypes.c_int(transpose), ctypes.c_int(rnd))
    want = T.round_tf32(x, even=True) if rnd else x
    np.testing.assert_array_equal(out, want.transpose(0, 2, 1) if transpose else want)


@pytest.mark.parametrize("cfg", W.WGMMA_CANDIDATES,
                         ids=lambda c: "x".join(map(str, c[:4])) + ("" if c.round else "-unrounded"))
def test_wgmma_kernel_compiles_for_sm90a_without_spills(cfg):
    log = []
    (regs,) = ptxas_registers(W.source(cfg), "tk_wgmma.cu", arch="sm_90a", log=log)
    assert regs <= min(255, 65536 // (cfg.threads * cfg.blocks_per_sm))
    assert "Potential Performance Loss" not in log[0], log[0]  # (wgmma serialized)
    from benchmarks.resources import nvrtc_ptx
    ptx = nvrtc_ptx(W.source(cfg), "tk_wgmma.cu", "compute_90a")
    body = ptx[ptx.index(".entry tk_gemm_tf32_wgmma"):]
    assert body.count(f"wgmma.mma_async.sync.aligned.m64n{cfg.bn}k8.f32.tf32.tf32") == 4
    assert f"wgmma.wait_group.sync.aligned {cfg.depth};" in body
    assert "fence.proxy.async.shared::cta" in body
    ptxas_registers(W.PREP_SOURCE, "tk_prep.cu", arch="sm_90a")


def test_wgmma_schedules_and_shapes_are_checked():
    assert W.usable(4096, 4096, 4096) and W.usable(5, 8, 6)
    assert not W.usable(8, 6, 8) and not W.usable(8, 8, 5)
    assert not W.usable(2 ** 20, 2 ** 11, 4)  # (M + bm) * K past 2**31
    assert W.WgmmaConfig(128, 128, 4, 1).smem_bytes == 4 * 32 * (128 + 128) * 4 + 1024
    for bad in (W.WgmmaConfig(96, 128, 3, 1), W.WgmmaConfig(128, 128, 2, 1),
                W.WgmmaConfig(128, 256, 5, 1), W.WgmmaConfig(128, 100, 3, 1)):
        with pytest.raises(ValueError, match=r"matmul_tf32: wgmma schedule .* does not tile"):
            bad.check()
    a = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"matmul_tf32: group must be a positive int, got 0"):
        W.matmul(a, a, group=0)  # (checked before any CuPy call)


def test_routes_between_the_tf32_kernels(monkeypatch):
    """kernels.cuda_tf32.matmul hands a WgmmaConfig (given, or its DEFAULT_CONFIG) to the
    wgmma kernel; that one hands shapes it cannot take back to the mma.sync kernels,
    naming their schedule (no loop when DEFAULT_CONFIG is a WgmmaConfig)."""
    calls = []
    monkeypatch.setattr(W, "matmul", lambda *a, **kw: calls.append(("wgmma", kw["config"])))
    a = np.ones((8, 8), np.float32)
    T.matmul(a, a, config=W.WGMMA_CANDIDATES[1])
    monkeypatch.setattr(T, "DEFAULT_CONFIG", W.WGMMA_CONFIG)
    T.matmul(a, a)
    assert calls == [("wgmma", W.WGMMA_CANDIDATES[1]), ("wgmma", W.WGMMA_CONFIG)]
    monkeypatch.undo()
    monkeypatch.setattr(T, "DEFAULT_CONFIG", W.WGMMA_CONFIG)
    monkeypatch.setattr(T, "matmul", lambda *a, **kw: calls.append(("mma.sync", kw["config"])))
    W.matmul(np.ones((8, 6), np.float32), np.ones((6, 8), np.float32))  # (K % 4 != 0)
    assert calls[-1] == ("mma.sync", T.PIPE_CONFIG)


def test_the_default_tf32_schedule_is_wgmma_and_pipeline_false_is_not(monkeypatch):
    """DEFAULT_CONFIG is sm_90's wgmma (timed: 70% of cuBLAS TF32 at 4096^3 on an H100
    against mma.sync's 42%); ``pipeline=False`` still asks for the general kernel."""
    assert isinstance(T.DEFAULT_CONFIG, W.WgmmaConfig) and T.DEFAULT_CONFIG == W.WGMMA_CONFIG
    calls = []
    monkeypatch.setattr(W, "matmul", lambda *a, **kw: calls.append(kw["config"]))
    monkeypatch.setattr(T, "_kernel", lambda: lambda grid, block, args: calls.append("general"))
    monkeypatch.setitem(sys.modules, "cupy", _host_cupy())
    a = np.ones((8, 8), np.float32)
    T.matmul(a, a)
    T.matmul(a, a, pipeline=False)
    assert calls == [W.WGMMA_CONFIG, "general"]


def test_fold_transpose():
    """A transposed view of a C-contiguous array is read as that array, flag flipped; a
    contiguous array, a strided slice and a broadcast batch are left alone."""
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t, flag = W.fold_transpose(x.swapaxes(-1, -2), False)
    assert flag is True and t.flags.c_contiguous and np.shares_memory(t, x)
    np.testing.assert_array_equal(np.swapaxes(t, -1, -2), x.swapaxes(-1, -2))
    t, flag = W.fold_transpose(x[0].T, True)
    assert flag is False and t.flags.c_contiguous and (t == x[0]).all()
    for y in (x, x[:, ::2], np.broadcast_to(x[0], (5, 3, 4)).swapaxes(-1, -2)):
        assert W.fold_transpose(y, False)[0] is y


class _HostArray(np.ndarray):
    """A NumPy array that answers ``.data.ptr`` as a CuPy one does."""

    @property
    def data(self):
        return type("Mem", (), {"ptr": self.ctypes.data})()


def _host_cupy():
    """Just enough of CuPy for kernels.cuda_wgmma.matmul's own code, over NumPy."""
    import types

    cp = types.ModuleType("cupy")
    cp.empty = lambda shape, dtype: np.full(shape, np.nan, dtype).view(_HostArray)
    cp.ascontiguousarray = lambda x: np.ascontiguousarray(x).view(_HostArray)
    cp.asarray = lambda x: np.asarray(x).view(_HostArray)
    cp.asnumpy = np.asarray
    return cp


def _host_function(gemm, prep, cfg):
    """A stand-in for kernels.cuda_wgmma._function: the launches of the prep and wgmma
    kernels (schedule ``cfg``) run the host-compiled ones."""
    ptr = ctypes.c_void_p

    def function(src, name, smem_bytes=0):
        if name == "tk_tf32_prep":
            def launch(grid, block, args, shared_mem=0):
                assert block == (32, 8)
                x, out, *ints = args
                prep(*map(ctypes.c_uint, grid), ptr(x.ctypes.data), ptr(out.ctypes.data),
                     *(ctypes.c_int(int(i)) for i in ints))
            return launch
        assert name == "tk_gemm_tf32_wgmma" and src == W.source(cfg)

        def launch(grid, block, args, shared_mem=0):
            assert block == (cfg.threads,) and shared_mem == smem_bytes == cfg.smem_bytes
            a, bt, c, *ints = args
            bad = gemm(*map(ctypes.c_uint, grid), *(ptr(x.ctypes.data) for x in (a, bt, c)),
                       ptr(np.array(ints, np.int32).ctypes.data))
            assert bad == 0
        return launch
    return function


@pytest.fixture(scope="module")
def host_matmul_libraries(tmp_path_factory):
    return (_library(tmp_path_factory, W.WGMMA_CONFIG, "both-late"),
            host_library(tmp_path_factory, "wgmma_prep_e2e", PREP_LAUNCHER).run)


@settings(max_examples=12, deadline=None)
@given(m=st.integers(1, 140), k4=st.integers(0, 20), n2=st.integers(1, 70),
       batch=st.sampled_from([0, 1, 2]), ta=st.booleans(), tb=st.booleans(),
       rnd=st.booleans(), views=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_matmul_end_to_end_on_the_host_kernels(host_matmul_libraries, m, k4, n2, batch, ta,
                                               tb, rnd, views, seed):
    """kernels.cuda_wgmma.matmul's own Python -- which operands the prep pass transposes
    or rounds, the grids, the arguments, 2-D and batched operands, each transpose, operands
    given as transposed views (``views``: read in place, the flag flipped) -- with its
    launches running the host-compiled prep and wgmma kernels (batch 0: 2-D)."""
    gemm, prep = host_matmul_libraries
    k, n = 4 * k4, 2 * n2
    cfg = W.WGMMA_CONFIG._replace(round=rnd)
    rng = np.random.default_rng(seed)
    lead = (batch,) if batch else ()
    a = rng.standard_normal(lead + ((k, m) if ta else (m, k))).astype(np.float32)
    b = rng.standard_normal(lead + ((n, k) if tb else (k, n))).astype(np.float32)
    if views:  # (the same values, as x.T of a C-contiguous x, as in x @ w.T)
        a, b = (np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2) for x in (a, b))
    a, b = a.view(_HostArray), b.view(_HostArray)  # (as CuPy arrays, views kept views)
    with pytest.MonkeyPatch.context() as mp:  # (not the fixture: hypothesis repeats the body)
        mp.setitem(sys.modules, "cupy", _host_cupy())
        mp.setattr(W, "_function", _host_function(gemm, prep, cfg))
        mp.setattr(W, "supported", lambda: True)
        c = np.asarray(W.matmul(a, b, ta, tb, config=cfg, group=2))
    a_ = np.swapaxes(a, -1, -2) if ta else a
    b_ = np.swapaxes(b, -1, -2) if tb else b
    assert c.shape == lead + (m, n)
    if k == 0:
        np.testing.assert_array_equal(c, 0)
    else:
        _check(c, a_, b_, rounded=rnd)


def test_the_gpu_probe_on_the_host_kernels(monkeypatch, tmp_path_factory, host_matmul_libraries):
    """kernels.cuda_wgmma.probe (run first by the GPU test, to name a layout error at first
    contact): nothing to report on the host-compiled kernel; on one whose descriptors step
    16 bytes a k-step, it names the misplaced elements and the k each came from."""
    import sys

    gemm, prep = host_matmul_libraries
    monkeypatch.setitem(sys.modules, "cupy", _host_cupy())
    monkeypatch.setattr(W, "supported", lambda: True)
    monkeypatch.setattr(W, "_function", _host_function(gemm, prep, W.WGMMA_CONFIG))
    assert W.probe() == []
    source = W.source
    for old, new, what in (("tk_desc(a_st + 32 * kk), tk_desc(b_st + 32 * kk)",
                            "tk_desc(a_st + 16 * kk), tk_desc(b_st + 16 * kk)", "A k"),):
        bad = source().replace(old, new)
        assert bad != source()
        lib = host_library(tmp_path_factory, "wgmma_probe_" + what.replace(" ", "_"),
                           "#define TK_CP_EARLY 0\n#define TK_WG_EARLY 0\n"
                           f"#define TK_WG_N {W.WGMMA_CONFIG.bn}\n" + MODELS
                           + _launcher(W.WGMMA_CONFIG).replace(source(), bad)).run
        monkeypatch.setattr(W, "_function", _host_function(lib, prep, W.WGMMA_CONFIG))
        report = W.probe()
        assert report and any(what in line for line in report), report
