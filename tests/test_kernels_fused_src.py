"""The fused CuPy kernels of kernels.cuda_fused, checked without a GPU.

CuPy kernels cannot run in Numba's simulator, so CI would otherwise never touch them.
Their CUDA C++ bodies are plain data (``ELEMENTWISE``, ``XENT_*_SRC``); here each
one is wrapped the way CuPy wraps it -- non-raw inputs are the i-th element (const),
outputs are references to the i-th element, raw arguments are whole arrays, ``i`` is the
element index -- and

* compiled by NVRTC for sm_90 (what CuPy does on a GPU), catching type and syntax
  errors, skipped visibly where NVRTC is missing;
* compiled as host C++ with g++ and run on NumPy arrays, so the *math* of every body
  is compared with the framework's NumPy implementation (CPUBackend's fused helpers,
  themselves tested against PyTorch), skipped visibly where there is no C++ compiler.

On a real GPU, tests/test_kernels_gpu.py runs the kernels themselves through CuPy.
"""
import ctypes
import functools
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import cuda_fused as F
from tinygrad_k.backend import CPUBackend

C_TYPES = {"T": "T", "int64": "long long", "bool": "bool", "float32": "float",
           "float64": "double"}


def parse(params):
    """'T x, raw T b' -> [(raw, ctype, name), ...] (CuPy's parameter syntax)."""
    out = []
    for p in params.split(","):
        words = p.split()
        raw = words[0] == "raw"
        ctype, name = words[-2], words[-1]
        out.append((raw, C_TYPES[ctype], name))
    return out


def wrap(name, device):
    """One ElementwiseKernel as a C++ function over n elements, every argument an array
    (CuPy broadcasts scalars to the element shape; so do the callers here)."""
    in_params, out_params, body = F.ELEMENTWISE[name]
    ins, outs = parse(in_params), parse(out_params)
    args = [f"const {t}* _{n}" for _, t, n in ins] + [f"{t}* _{n}" for _, t, n in outs]
    loads = [f"const {t}* {n} = _{n};" if raw else f"const {t} {n} = _{n}[i];"
             for raw, t, n in ins]
    loads += [f"{t}& {n} = _{n}[i];" for _, t, n in outs]
    head = f'extern "C" {"__global__ " if device else ""}void tk_{name}(long long n, ' \
        + ", ".join(args) + ")"
    if device:
        loop = "long long i = blockDim.x * (long long)blockIdx.x + threadIdx.x; if (i < n)"
    else:
        loop = "for (long long i = 0; i < n; ++i)"
    return f"{head} {{\n  {loop} {{\n    " + "\n    ".join(loads) + f"\n    {body};\n  }}\n}}\n"


def source(ctype, device):
    """Every fused kernel for one element type, as CUDA (device) or host C++."""
    parts = [f"typedef {ctype} T;"]
    if not device:
        # host shims for what the CUDA source takes from the runtime
        # one block's threads run as std::threads: __shared__ arrays are statics shared by
        # them, __syncthreads() a barrier, threadIdx each thread's own
        parts += ["#include <cmath>", "#include <barrier>", "#include <thread>",
                  "#include <vector>",
                  "using std::sqrt; using std::exp; using std::log; using std::nan;",
                  "struct tk_dim3 { unsigned int x; };",
                  "static tk_dim3 blockIdx, blockDim; static thread_local tk_dim3 threadIdx;",
                  "#define __global__", "#define __shared__ static",
                  "static std::barrier<>* tk_barrier;",
                  "static void __syncthreads() { tk_barrier->arrive_and_wait(); }"]
    parts += [wrap(name, device) for name in F.ELEMENTWISE]
    parts += [src.replace("{T}", ctype) for src in (F.XENT_FORWARD_SRC, F.XENT_ROWS_SRC,
                                                      F.XENT_SUM_SRC)]
    if not device:
        parts.append(
            f'extern "C" void launch_xent(long long grid, long long block, const {ctype}* z,'
            f" const long long* t, {ctype}* loss, {ctype}* probs, long long N, long long C)"
            " { blockDim.x = block; for (long long b = 0; b < grid; ++b)"
            " for (long long th = 0; th < block; ++th) { blockIdx.x = b; threadIdx.x = th;"
            f" tk_xent_fwd_{ctype}(z, t, loss, probs, N, C); }} }}")
        parts.append(
            f'extern "C" void launch_xent_rows(long long grid, long long block, '
            f"const {ctype}* z, const long long* t, {ctype}* loss, {ctype}* probs, "
            f"long long* safe, {ctype}* weight, long long N, long long C, long long ignore)"
            " { blockDim.x = block; for (long long b = 0; b < grid; ++b)"
            " for (long long th = 0; th < block; ++th) { blockIdx.x = b; threadIdx.x = th;"
            f" tk_xent_rows_{ctype}(z, t, loss, probs, safe, weight, N, C, ignore); }} }}")
        parts.append(
            f'extern "C" void launch_xent_sum(long long block, const {ctype}* loss, '
            f"const {ctype}* weight, long long N, {ctype}* total, long long* count, "
            "bool* bad) { std::barrier<> bar(block); tk_barrier = &bar; blockDim.x = block;"
            " blockIdx.x = 0; std::vector<std::thread> ts;"
            " for (long long th = 0; th < block; ++th) ts.emplace_back([=] {"
            f" threadIdx.x = th; tk_xent_sum_{ctype}(loss, weight, N, total, count, bad); }});"
            " for (auto& t : ts) t.join(); }")
    return "\n".join(parts)


# -- NVRTC: the sources compile for the GPU ------------------------------------------------
@pytest.mark.parametrize("ctype", ["float", "double"])
def test_fused_kernels_compile_with_nvrtc(ctype):
    try:
        from cuda.bindings import nvrtc
        err, prog = nvrtc.nvrtcCreateProgram(source(ctype, True).encode(), b"tk_fused.cu",
                                             0, [], [])
    except Exception as e:  # no cuda-bindings or no libnvrtc
        pytest.skip(f"NVRTC not available here: {type(e).__name__}: {e}"[:200])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
    (err,) = nvrtc.nvrtcCompileProgram(prog, 1, [b"--gpu-architecture=compute_90"])
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = bytearray(size)  # not bytes: a 1-byte bytes object is CPython's shared singleton
    nvrtc.nvrtcGetProgramLog(prog, log)
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, bytes(log).decode(errors="replace")


# -- host C++: the math matches NumPy ------------------------------------------------------
@functools.lru_cache(maxsize=None)
def host_lib(ctype, tmpdir):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        return None
    src = f"{tmpdir}/tk_fused_{ctype}.cpp"
    lib = f"{tmpdir}/tk_fused_{ctype}.so"
    with open(src, "w") as f:
        f.write(source(ctype, False))
    proc = subprocess.run([cxx, "-O1", "-std=c++20", "-pthread", "-shared", "-fPIC", "-o",
                           lib, src],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ctypes.CDLL(lib)


@pytest.fixture(scope="module")
def lib_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fused"))


def call(lib, name, n, *arrays):
    """Run tk_<name> over n elements; every array is contiguous and n elements long
    (raw arguments excepted)."""
    ptrs = [ctypes.c_void_p(a.ctypes.data) for a in arrays]
    getattr(lib, f"tk_{name}")(ctypes.c_longlong(n), *ptrs)


def full(v, n, dtype):
    return np.full(n, v, dtype=dtype)


DT = st.sampled_from([np.float32, np.float64])
CTYPE = {np.float32: "float", np.float64: "double"}
TOL = {np.float32: 1e-6, np.float64: 1e-13}


def lib_for(dtype, lib_dir):
    lib = host_lib(CTYPE[dtype], lib_dir)
    if lib is None:
        pytest.skip("no C++ compiler to run the CUDA kernel bodies on the CPU")
    return lib


def rel(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30)


cpu = CPUBackend()


@settings(max_examples=15, deadline=None)
@given(dtype=DT, n=st.integers(1, 5), c=st.integers(1, 7), hw=st.integers(1, 4),
       seed=st.integers(0, 2 ** 31))
def test_bias_relu_and_relu_backward(lib_dir, dtype, n, c, hw, seed):
    lib = lib_for(dtype, lib_dir)
    rng = np.random.default_rng(seed)
    shape = (n, c) if hw == 1 else (n, c, hw, hw + 1)
    x = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    size, plane = x.size, x.size // (n * c)
    y = np.full(shape, np.nan, dtype)
    call(lib, "bias_relu", size, x, b, full(c, size, np.int64), full(plane, size, np.int64), y)
    np.testing.assert_array_equal(y, cpu.bias_relu(x, b))
    dy = rng.standard_normal(shape).astype(dtype)
    dx = np.full(shape, np.nan, dtype)
    call(lib, "relu_backward", size, dy, y, dx)
    np.testing.assert_array_equal(dx, cpu.relu_backward(dy, y))


@settings(max_examples=15, deadline=None)
@given(dtype=DT, n=st.integers(1, 300), c=st.integers(1, 12), seed=st.integers(0, 2 ** 31))
def test_softmax_cross_entropy_forward_and_backward(lib_dir, dtype, n, c, seed):
    lib = lib_for(dtype, lib_dir)
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n, c)) * 30).astype(dtype)  # large logits: stability matters
    t = rng.integers(0, c, n).astype(np.int64)
    loss, probs = np.full(n, np.nan, dtype), np.full((n, c), np.nan, dtype)
    block = 128  # as softmax_xent_forward launches it
    ptr = [ctypes.c_void_p(a.ctypes.data) for a in (z, t, loss, probs)]
    lib.launch_xent(ctypes.c_longlong((n + block - 1) // block), ctypes.c_longlong(block),
                    *ptr, ctypes.c_longlong(n), ctypes.c_longlong(c))
    want_loss, want_probs = cpu.softmax_xent_forward(z.astype(np.float64), t)
    assert rel(loss, want_loss) < TOL[dtype] and rel(probs, want_probs) < TOL[dtype]
    dloss = rng.standard_normal(n).astype(dtype)
    dz = np.full((n, c), np.nan, dtype)
    call(lib, "xent_backward", n * c, probs, t, dloss, full(c, n * c, np.int64), dz)
    assert rel(dz, cpu.softmax_xent_backward(probs.astype(np.float64), t,
                                             dloss.astype(np.float64))) < TOL[dtype]


def ptrs(*arrays):
    return [ctypes.c_void_p(a.ctypes.data) for a in arrays]


@settings(max_examples=20, deadline=None)
@given(dtype=DT, n=st.integers(0, 700), c=st.integers(1, 12), ignore=st.sampled_from([-100, 2]),
       p_ignore=st.sampled_from([0.0, 0.3, 1.0]), n_bad=st.integers(0, 2),
       seed=st.integers(0, 2 ** 31))
def test_cross_entropy_rows_sums_mean_and_backward(lib_dir, dtype, n, c, ignore, p_ignore,
                                                   n_bad, seed):
    """The GPU's deferred cross-entropy (CUDABackend.cross_entropy_forward / _mean /
    _backward) against the NumPy composition it replaces (Backend._cross_entropy_deferred,
    cross_entropy_mean, cross_entropy_backward): ignored rows, out-of-range targets (NaN
    rows and the flag), no rows at all, more rows than the sum's 256 threads."""
    lib = lib_for(dtype, lib_dir)
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n, c)) * 30).astype(dtype)
    t = rng.integers(0, c, n).astype(np.int64)
    t[rng.random(n) < p_ignore] = ignore
    bad_rows = rng.permutation(n)[:n_bad]
    t[bad_rows] = rng.choice([-3, c, c + 5], size=len(bad_rows))
    t[bad_rows[t[bad_rows] == ignore]] = c + 7  # out of range, not ignored
    loss, weight = np.full(n, -1.0, dtype), np.full(n, -1.0, dtype)
    probs, safe = np.full((n, c), -1.0, dtype), np.full(n, -9, np.int64)
    lib.launch_xent_rows(ctypes.c_longlong((n + 127) // 128), ctypes.c_longlong(128),
                         *ptrs(z, t, loss, probs, safe, weight), ctypes.c_longlong(n),
                         ctypes.c_longlong(c), ctypes.c_longlong(ignore))
    total, count, bad = np.zeros((), dtype), np.zeros((), np.int64), np.ones((), np.bool_)
    lib.launch_xent_sum(ctypes.c_longlong(F.XENT_SUM_THREADS), *ptrs(loss, weight),
                        ctypes.c_longlong(n), *ptrs(total, count, bad))
    valid = t != ignore
    is_bad = valid & ((t < 0) | (t >= c))
    checks = []
    ref = CPUBackend()
    ref.defers_checks = True  # the NumPy composition of the deferred path
    ref.defer_check = lambda failed, raise_error: checks.append(bool(failed))
    want = ref._cross_entropy_deferred(z.astype(np.float64), t, valid, is_bad, ignore)
    w_loss, w_probs, w_safe, w_weight, w_count, w_total = want
    np.testing.assert_array_equal(safe, w_safe)
    np.testing.assert_array_equal(weight, w_weight.astype(dtype))
    np.testing.assert_allclose(loss, w_loss, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 100)
    if n:
        assert rel(probs, w_probs) < TOL[dtype]
    assert int(count) == int(w_count) and bool(bad) == checks[0] == bool(len(bad_rows))
    if len(bad_rows):
        assert np.isnan(total)
    else:
        np.testing.assert_allclose(total, w_total, rtol=TOL[dtype] * 10,
                                   atol=TOL[dtype] * 100)
    mean = np.full((), -1.0, dtype)
    call(lib, "xent_mean", 1, total, count, mean)
    want_mean = ref.cross_entropy_mean(w_total, w_count, np.dtype(np.float64))
    np.testing.assert_allclose(mean, want_mean, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 100)
    if not n:
        return
    g = np.asarray(rng.standard_normal(), dtype)
    for reduction, counted in (("mean", True), ("sum", False)):
        dz = np.full((n, c), np.nan, dtype)
        call(lib, "xent_backward_scaled", n * c, probs, safe, g, count, weight,
             full(c, n * c, np.int64), full(counted, n * c, np.bool_),
             full(True, n * c, np.bool_), dz)
        want_dz = ref.cross_entropy_backward(probs.astype(np.float64), safe,
                                             weight.astype(np.float64),
                                             g.astype(np.float64), int(count), reduction)
        np.testing.assert_allclose(dz, want_dz, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    dz = np.full((n, c), np.nan, dtype)  # unweighted (every row counts), a "sum" loss
    call(lib, "xent_backward_scaled", n * c, probs, safe, g, count, probs,
         full(c, n * c, np.int64), full(False, n * c, np.bool_), full(False, n * c, np.bool_),
         dz)
    want_dz = ref.softmax_xent_backward(probs.astype(np.float64), safe,
                                        np.full(n, float(g)))
    np.testing.assert_allclose(dz, want_dz, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


@settings(max_examples=25, deadline=None)
@given(dtype=DT, momentum=st.sampled_from([0.0, 0.9]), dampening=st.sampled_from([0.0, 0.3]),
       weight_decay=st.sampled_from([0.0, 1e-2]), nesterov=st.booleans(),
       steps=st.integers(1, 4), seed=st.integers(0, 2 ** 31))
def test_sgd_update(lib_dir, dtype, momentum, dampening, weight_decay, nesterov, steps, seed):
    lib = lib_for(dtype, lib_dir)
    rng = np.random.default_rng(seed)
    size, lr = 37, 0.05
    p = rng.standard_normal(size).astype(dtype)
    buf = np.zeros(size, dtype)
    p_ref, buf_ref = p.astype(np.float64), np.zeros(size)
    for step in range(steps):
        g = rng.standard_normal(size).astype(dtype)
        scalars = [full(v, size, dtype) for v in (lr, momentum, 1 - dampening, weight_decay)]
        call(lib, "sgd", size, g, *scalars, full(nesterov, size, np.bool_),
             full(step == 0, size, np.bool_), p, buf)
        cpu.sgd_update_(p_ref, g.astype(np.float64), buf_ref, lr, momentum, dampening,
                        weight_decay, nesterov, step == 0)
    assert rel(p, p_ref) < 10 * TOL[dtype]
    if momentum:
        assert rel(buf, buf_ref) < 10 * TOL[dtype]


@settings(max_examples=25, deadline=None)
@given(dtype=DT, weight_decay=st.sampled_from([0.0, 1e-2]), decoupled=st.booleans(),
       steps=st.integers(1, 4), seed=st.integers(0, 2 ** 31))
def test_adam_update(lib_dir, dtype, weight_decay, decoupled, steps, seed):
    lib = lib_for(dtype, lib_dir)
    rng = np.random.default_rng(seed)
    size, lr, b1, b2, eps = 41, 1e-2, 0.9, 0.999, 1e-8
    p = rng.standard_normal(size).astype(dtype)
    m, v = np.zeros(size, dtype), np.zeros(size, dtype)
    p_ref, m_ref, v_ref = p.astype(np.float64), np.zeros(size), np.zeros(size)
    for step in range(1, steps + 1):
        g = rng.standard_normal(size).astype(dtype)
        # the host-side scalars exactly as adam_update_ forms them
        scalars = [full(x, size, dtype) for x in (b1, 1 - b1, b2, 1 - b2, eps, weight_decay,
                                                   lr / (1 - b1 ** step), 1 - b2 ** step,
                                                   1 - lr * weight_decay)]
        call(lib, "adam", size, g, *scalars, full(decoupled, size, np.bool_), p, m, v)
        cpu.adam_update_(p_ref, g.astype(np.float64), m_ref, v_ref, lr, b1, b2, eps,
                         weight_decay, step, decoupled)
    for got, want in ((p, p_ref), (m, m_ref), (v, v_ref)):
        assert rel(got, want) < 10 * TOL[dtype]


def test_every_fused_kernel_is_exercised_here():
    """A kernel added to ELEMENTWISE must get a test above."""
    assert set(F.ELEMENTWISE) == {"bias_relu", "relu_backward", "xent_backward", "xent_mean",
                                  "xent_backward_scaled", "sgd", "adam"}
