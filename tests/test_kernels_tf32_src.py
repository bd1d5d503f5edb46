"""The pipelined TF32 tensor-core GEMM of kernels/cuda_tf32.py checked without a GPU.

As for the CUDA C GEMMs (tests/test_kernels_sgemm_src.py), its source is

* compiled by NVRTC for sm_90 and read by ptxas: no spills, registers within the launch
  bounds (2 blocks an SM where the stages fit);
* compiled as host C++ and run on NumPy arrays by hypothesis, a block's threads as
  std::threads, with C++ models of its primitives written here from the PTX ISA, not
  from the kernel's own fragment tables:
  - ``tk_mma_tf32``: a warp's 32 threads post their fragments, meet at a barrier, and
    each computes its four elements of D = A B + C with A (16 x 8), B (8 x 8) and C
    (16 x 8) read back through the ISA's "Matrix Fragments for mma.m16n8k8" layout;
  - ``tk_cp16`` / ``tk_cp_commit`` / ``tk_cp_wait<N>``: a copy that reads outside the
    operands fails the test; each thread queues its copies in groups, and they land
    either when issued (a read of a stage that is still being copied into then sees new
    data) or only when a wait lets them (a read before the wait then sees stale data):
    both orders must give the product;
  - ``tk_ldsm_x4`` (ldmatrix.x4): the warp posts its row addresses, meets at a barrier,
    and each lane reads its words from the rows the ISA assigns it;
  - ``to_tf32``: round to nearest, ties to even, 10 mantissa bits (cvt.rn).
  The product is compared with the float64 product of the TF32-rounded operands: edge
  tiles in M, N and K, K = 0, batches, grouped block orders with partial groups, and
  every schedule of PIPE_CANDIDATES.

On a GPU, tests/test_kernels_gpu.py runs the kernel itself through CuPy.
"""
import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels.cuda_tf32 as T
from test_kernels_sgemm_src import HOST_SHIMS, host_library, ptxas_registers

MODELS = r"""
#include <atomic>
#include <cstring>
#include <deque>
#define TK_HOST
using std::min;
struct alignas(8) float2 { float x, y; };
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline float tk_f(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline unsigned to_tf32(float x) {  // cvt.rn: nearest, ties to even
    unsigned u; std::memcpy(&u, &x, 4);
    if ((u & 0x7F800000u) == 0x7F800000u) return u & 0xFFFFE000u;  // (inf; no NaN here)
    return (u + 0xFFFu + ((u >> 13) & 1u)) & 0xFFFFE000u;
}

// cp.async: a thread's copies, in groups; TK_LAND_EARLY lands each at once. A shared
// address is a pointer here (a 32-bit shared-window address on the GPU).
typedef char* tk_saddr;
static tk_saddr tk_shared_address(const float* p) { return (char*)p; }
struct tk_copy { float* dst; const float* src; int bytes; };
static thread_local std::vector<tk_copy> tk_open;
static thread_local std::deque<std::vector<tk_copy>> tk_groups;
static void tk_land(const tk_copy& c) {
    std::memset(c.dst, 0, 16);
    std::memcpy(c.dst, c.src, c.bytes);
}
// the operands' extents (set by run): a copy that reads outside them is counted
static const float* tk_extent[2][2];
static std::atomic<int> tk_outside{0};
static void tk_cp16(tk_saddr dst, const float* src, int bytes) {
    if (bytes) {
        bool inside = false;
        for (auto& e : tk_extent) inside |= src >= e[0] && src + bytes / 4 <= e[1];
        if (!inside) ++tk_outside;
    }
    if (TK_LAND_EARLY) tk_land({(float*)dst, src, bytes});
    else tk_open.push_back({(float*)dst, src, bytes});
}
static void tk_cp_commit() { tk_groups.push_back(tk_open); tk_open.clear(); }
template <int N> static void tk_cp_wait() {
    while (tk_groups.size() > (size_t)N) {
        for (const tk_copy& c : tk_groups.front()) tk_land(c);
        tk_groups.pop_front();
    }
}

static inline float __uint_as_float(unsigned u) { return tk_f(u); }

// ldmatrix.m8n8.x4.b16, 32-bit words: lane l posts the address of row l % 8 of matrix
// l / 8; it gets word l % 4 of row l / 4 of matrix j
static std::barrier<>* tk_warp_barrier[32];
static tk_saddr tk_rows[32][32];
static void tk_ldsm_x4(unsigned* d, tk_saddr row) {
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    tk_rows[w][l] = row;
    tk_warp_barrier[w]->arrive_and_wait();
    for (int j = 0; j < 4; ++j) std::memcpy(&d[j], tk_rows[w][8 * j + l / 4] + 4 * (l % 4), 4);
    tk_warp_barrier[w]->arrive_and_wait();  // (the rows read before the next post)
}

// mma.sync.m16n8k8 .tf32: the fragments of each lane, as the PTX ISA lays them out
static unsigned tk_fa[32][32][4], tk_fb[32][32][2];
static void tk_mma_tf32(float* d, const unsigned* a, const unsigned* b) {
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    for (int i = 0; i < 4; ++i) tk_fa[w][l][i] = a[i];
    for (int i = 0; i < 2; ++i) tk_fb[w][l][i] = b[i];
    tk_warp_barrier[w]->arrive_and_wait();
    float out[4];
    for (int i = 0; i < 4; ++i) {
        const int row = l / 4 + 8 * (i / 2), col = 2 * (l % 4) + i % 2;  // c_i
        double s = d[i];
        for (int k = 0; k < 8; ++k) {
            // A (row, k): lane row % 8 * 4 + k % 4, a_{row / 8 + 2 (k / 4)};
            // B (k, col): lane col * 4 + k % 4, b_{k / 4}
            const float x = tk_f(tk_fa[w][row % 8 * 4 + k % 4][row / 8 + 2 * (k / 4)]);
            const float y = tk_f(tk_fb[w][col * 4 + k % 4][k / 4]);
            s += (double)x * y;
        }
        out[i] = (float)s;
    }
    tk_warp_barrier[w]->arrive_and_wait();  // (the fragments read before the next post)
    for (int i = 0; i < 4; ++i) d[i] = out[i];
}
"""


def _launcher(cfg):
    threads = cfg.threads
    return (f"static float tk_smem_host[{cfg.smem_floats}] __attribute__((aligned(16)));\n"
            "#define TK_SMEM float* const tk_smem = tk_smem_host\n"
            + T.pipe_source(cfg) +
            'extern "C" int run(unsigned gx, unsigned gy, const float* A, const float* B, '
            "float* C, const int* a) {\n"
            "    // (batch gy of M x K and K x N)\n"
            "    tk_extent[0][0] = A; tk_extent[0][1] = A + (long)gy * a[0] * a[2];\n"
            "    tk_extent[1][0] = B; tk_extent[1][1] = B + (long)gy * a[2] * a[1];\n"
            "    tk_outside = 0;\n"
            f"    blockDim = {{{threads}, 1, 1}};\n"
            "    gridDim = {gx, gy, 1};\n"
            "    for (unsigned y = 0; y < gy; ++y)\n"
            "        for (unsigned x = 0; x < gx; ++x) {\n"
            "            blockIdx = {x, y, 0};\n"
            "            // poison: a read of shared memory no copy wrote shows as NaN\n"
            f"            for (int i = 0; i < {cfg.smem_floats}; ++i) "
            "tk_smem_host[i] = __builtin_nanf(\"\");\n"
            f"            std::barrier<> bar({threads});\n"
            "            tk_barrier = &bar;\n"
            "            std::deque<std::barrier<>> warps;\n"
            f"            for (int w = 0; w < {threads // 32}; ++w) "
            "tk_warp_barrier[w] = &warps.emplace_back(32);\n"
            "            std::vector<std::thread> ts;\n"
            f"            for (unsigned th = 0; th < {threads}; ++th)\n"
            "                ts.emplace_back([=] {\n"
            "                    threadIdx = {th, 0, 0};\n"
            "                    tk_gemm_tf32_pipe(A, B, C, a[0], a[1], a[2], a[3], a[4]);\n"
            "                });\n"
            "            for (auto& t : ts) t.join();\n"
            "        }\n"
            "    return tk_outside;\n"
            "}\n")


def _name(cfg):
    return ("x".join(map(str, cfg[:6])) + ("-prefetch" if cfg.prefetch else "")
            + ("-ldmatrix" if cfg.ldmatrix else ""))


def _library(tmp_path_factory, cfg, early):
    src = f"#define TK_LAND_EARLY {early}\n" + MODELS + _launcher(cfg)
    name = "tf32_pipe_" + "_".join(map(str, map(int, cfg))) + f"_{early}"
    return host_library(tmp_path_factory, name, src).run


@pytest.fixture(scope="module", params=[0, 1], ids=["copies-land-at-wait", "copies-land-early"])
def host_tf32(request, tmp_path_factory):
    """The default schedule, host-compiled, with either landing order of the copies."""
    return _library(tmp_path_factory, T.PIPE_CONFIG, request.param)


def _run(fn, a, b, group, cfg=T.PIPE_CONFIG):
    """C of the host-compiled kernel for a (batch, M, K) @ (batch, K, N), blocks walking
    groups of ``group`` tile rows; C starts as NaN, so an element no thread wrote shows,
    and no copy may read outside A and B."""
    batch, m, k = a.shape
    n = b.shape[2]
    c = np.full((batch, m, n), np.nan, np.float32)
    tiles_n = -(-n // cfg.bn)
    ints = np.array([m, n, k, tiles_n, group], np.int32)
    ptr = ctypes.c_void_p
    outside = fn(ctypes.c_uint(-(-m // cfg.bm) * tiles_n), ctypes.c_uint(batch),
                 *(ptr(x.ctypes.data) for x in (a, b, c)), ptr(ints.ctypes.data))
    assert outside == 0, f"{outside} copies read outside A and B"
    return c


def _check(c, a, b):
    """c against the float64 product of the TF32-rounded operands (only the float32
    accumulation differs) and against the exact product (TF32's ~1e-3)."""
    want = np.matmul(T.round_tf32(a, even=True).astype(np.float64),
                     T.round_tf32(b, even=True).astype(np.float64))
    assert not np.isnan(c).any()
    scale = max(np.linalg.norm(want), 1e-30)
    assert np.linalg.norm(c - want) / scale < 1e-6
    exact = np.matmul(a.astype(np.float64), b)
    assert np.linalg.norm(c - exact) / max(np.linalg.norm(exact), 1e-30) < 2e-3


@settings(max_examples=6, deadline=None)
@given(m=st.integers(1, 2 * T.PIPE_BM + 3), k4=st.integers(0, 27),
       n4=st.integers(1, T.PIPE_BN // 4 + 9), batch=st.integers(1, 2), group=st.integers(1, 3),
       seed=st.integers(0, 2 ** 16))
def test_pipelined_tf32_kernel_as_host_cpp(host_tf32, m, k4, n4, batch, group, seed):
    """Edge tiles in M and N, K from 0 to past three steps (the stages wrap), partial
    groups of tile rows."""
    k, n = 4 * k4, 4 * n4
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((batch, m, k)).astype(np.float32)
    b = rng.standard_normal((batch, k, n)).astype(np.float32)
    c = _run(host_tf32, a, b, group)
    if k == 0:
        np.testing.assert_array_equal(c, 0)
    else:
        _check(c, a, b)


def test_pipelined_tf32_kernel_walks_every_tile_once(host_tf32):
    """Three tile rows by two tile columns, groups of 2: the second group has one row (a
    partial group), and every tile of C is written, by the right block."""
    rng = np.random.default_rng(1)
    m, k, n = 3 * T.PIPE_BM - 5, 5 * T.PIPE_BK + 4, 2 * T.PIPE_BN - 4
    a = rng.standard_normal((1, m, k)).astype(np.float32)
    b = rng.standard_normal((1, k, n)).astype(np.float32)
    _check(_run(host_tf32, a, b, 2), a, b)


@pytest.mark.parametrize("cfg", [c for c in T.PIPE_CANDIDATES if c != T.PIPE_CONFIG],
                         ids=lambda c: _name(c))
def test_every_candidate_schedule_as_host_cpp(tmp_path_factory, cfg):
    """The schedules the ladder part times beside the default: edge tiles in M, N and K
    (K past two steps and not a multiple of bk, K inside one step, K = 0), copies landing
    at their wait."""
    rng = np.random.default_rng(cfg.bm + cfg.bn + cfg.bk)
    fn = _library(tmp_path_factory, cfg, 0)
    # two tile rows, K past two steps; then one block with K inside one step, and K = 0
    for m, k, n in ((cfg.bm + 9, 2 * cfg.bk + 12, cfg.bn - 4), (5, cfg.bk // 2 + 4, 8),
                    (3, 0, 4)):
        a = rng.standard_normal((1, m, k)).astype(np.float32)
        b = rng.standard_normal((1, k, n)).astype(np.float32)
        c = _run(fn, a, b, 1, cfg)
        if k:
            _check(c, a, b)
        else:
            np.testing.assert_array_equal(c, 0)


@pytest.mark.parametrize("cfg", T.PIPE_CANDIDATES, ids=lambda c: _name(c))
def test_pipelined_tf32_kernel_compiles_for_sm90_without_spills(cfg):
    (regs,) = ptxas_registers(T.pipe_source(cfg), "tk_tf32_pipe.cu")
    # __launch_bounds__(threads, blocks_per_sm): 128 threads at 2 blocks allow 255
    # registers, 256 at 2 blocks 128; the default schedule needs about 200
    assert regs <= min(255, 65536 // (cfg.threads * cfg.blocks_per_sm))
    from benchmarks.resources import nvrtc_ptx
    ptx = nvrtc_ptx(T.pipe_source(cfg), "tk_tf32_pipe.cu")
    body = ptx[ptx.index(".entry tk_gemm_tf32_pipe"):]
    assert body.count("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32") \
        == cfg.mi * cfg.ni * cfg.bk // 8  # the k-step's products, unrolled
    assert body.count("cp.async.cg.shared.global") \
        == cfg.stages * (cfg.bm + cfg.bn) * cfg.bk // 4 // cfg.threads
    assert f"cp.async.wait_group {cfg.stages - 2};" in body
    assert "cvt.rn.tf32.f32" in body and "cvt.rna" not in body  # (one F2FP on sm_90)


def test_pipelined_is_chosen_only_for_aligned_rows():
    assert T.pipelined(4096, 4096, 4096)
    assert not T.pipelined(8, 6, 8) and not T.pipelined(8, 8, 6)
    assert not T.pipelined(2 ** 20, 2 ** 11, 4)  # (M + BM) * K past 2**31
    assert T.PIPE_SMEM_BYTES == 4 * T.PIPE_STAGES * (
        T.PIPE_BM * (T.PIPE_BK + T.PAD_A) + T.PIPE_BK * (T.PIPE_BN + T.PAD_B)) <= 113 * 1024
    with pytest.raises(ValueError, match=r"matmul_tf32: schedule .* does not tile"):
        T.PipeConfig(128, 128, 12, 3, 2, 2).check()
    a = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"matmul_tf32: group must be a positive int, got 0"):
        T.matmul(a, a, group=0)  # (checked before any CuPy call)
