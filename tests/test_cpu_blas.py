"""kernels._cpu_blas: BLAS's GEMM called from Numba code, against NumPy, on random shapes,
transposes, strides (lda > the row length) and both dtypes; and the convolution path that
uses it stands aside where it is missing."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

import kernels.cpu as cpu
from kernels import _cpu_blas as B

pytestmark = pytest.mark.skipif(not B.AVAILABLE, reason="NumPy's BLAS is not an ILP64 OpenBLAS")


@njit(cache=True)
def _call(itemsize, ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    B.gemm(itemsize, ta, tb, m, n, k, a.ctypes.data, lda, b.ctypes.data, ldb, beta,
           c.ctypes.data, ldc)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([np.float32, np.float64]), st.integers(0, 9), st.integers(0, 9),
       st.integers(0, 9), st.booleans(), st.booleans(), st.integers(0, 3),
       st.sampled_from([0.0, 1.0]), st.integers(0, 2 ** 31))
def test_gemm_matches_numpy(dtype, m, n, k, ta, tb, pad, beta, seed):
    rng = np.random.default_rng(seed)
    a_shape = (k, m) if ta else (m, k)
    b_shape = (n, k) if tb else (k, n)
    # row strides longer than the rows: the leading dimensions are passed through
    a = rng.standard_normal((a_shape[0], a_shape[1] + pad)).astype(dtype)
    b = rng.standard_normal((b_shape[0], b_shape[1] + pad)).astype(dtype)
    c = rng.standard_normal((m, n + pad)).astype(dtype)
    op = lambda x, t: x.T if t else x  # noqa: E731
    want = (op(a[:, :a_shape[1]], ta).astype(np.float64) @ op(b[:, :b_shape[1]], tb)
            + beta * c[:, :n])
    pad_before = c[:, n:].copy()
    with B.one_thread():
        _call(np.dtype(dtype).itemsize, B.TRANS if ta else B.NO_TRANS,
              B.TRANS if tb else B.NO_TRANS, m, n, k, a, a.shape[1], b, b.shape[1], beta, c,
              c.shape[1])
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert np.allclose(c[:, :n], want, rtol=tol, atol=tol * max(1, k))
    np.testing.assert_array_equal(c[:, n:], pad_before)  # nothing past each row


def test_one_thread_restores_the_thread_count():
    from threadpoolctl import threadpool_info

    def count():
        return [i["num_threads"] for i in threadpool_info() if i["filepath"] == B.LIBRARY]

    before = count()
    with B.one_thread():
        assert count() == [1]
    assert count() == before


def test_without_blas_the_convolution_keeps_the_numpy_path(monkeypatch):
    """Where no callable BLAS was found, "auto" and even "blocked" take im2col + NumPy,
    with the same result."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((40, 3, 3, 3)).astype(np.float32)  # > _DIRECT_MAX_OUT: not direct
    want = cpu.VERSIONS["conv2d_forward"]["blocked"](x, w, 2, 1)
    monkeypatch.setattr(B, "AVAILABLE", False)
    assert not cpu._use_blocked("blocked", 4) and not cpu._use_blocked("auto", 4)
    got = cpu.conv2d_forward(x, w, 2, 1)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([np.float32, np.float64]), st.integers(1, 40), st.integers(0, 40),
       st.integers(1, 40), st.sampled_from(["c", "t", "strided"]),
       st.sampled_from(["c", "t", "strided"]), st.integers(0, 2 ** 31))
def test_split_matmul_matches_numpy(dtype, m, k, n, la, lb, seed):
    """kernels.cpu's split GEMM (called directly: matmul routes only large products to
    it) on operands as they arrive: contiguous, transposed views, strided views."""
    rng = np.random.default_rng(seed)

    def operand(rows, cols, layout):
        if layout == "t":
            return rng.standard_normal((cols, rows)).astype(dtype).T
        if layout == "strided":
            return rng.standard_normal((rows, 2 * cols)).astype(dtype)[:, ::2]
        return rng.standard_normal((rows, cols)).astype(dtype)

    a, b = operand(m, k, la), operand(k, n, lb)
    got = cpu._threaded_matmul(a, b)
    want = a.astype(np.float64) @ b
    assert got.shape == (m, n) and got.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert np.allclose(got, want, rtol=tol, atol=tol * max(1, k))


# a fresh interpreter with TINYGRAD_K_BLAS set: the GEMM library is chosen at import.
# It prints the choice, then checks the GEMM (through the split product and a blocked
# convolution, both calling gemm() from Numba code) against NumPy in float64.
_CHOICE_CHECK = r"""
import numpy as np
import kernels.cpu as cpu
from kernels import _cpu_blas as B
rng = np.random.default_rng(0)
a, b = rng.standard_normal((70, 300)), rng.standard_normal((300, 90))
for dt in (np.float32, np.float64):
    got = cpu._threaded_matmul(a.astype(dt), b.astype(dt))
    assert np.abs(got - a @ b).max() < (1e-3 if dt == np.float32 else 1e-10)
x = rng.standard_normal((4, 3, 9, 9)).astype(np.float32)
w = rng.standard_normal((40, 3, 3, 3)).astype(np.float32)
got = cpu.VERSIONS["conv2d_forward"]["blocked"](x, w, 2, 1)
import kernels.reference as R
assert np.abs(got - R.conv2d_forward(x.astype(np.float64), w.astype(np.float64), 2, 1)).max() < 1e-4
print("GEMM", B.GEMM_NAME, B.GEMM_LIBRARY)
"""


def _with_blas(choice):
    import os
    import subprocess
    import sys

    env = dict(os.environ, TINYGRAD_K_BLAS=choice)
    return subprocess.run([sys.executable, "-c", _CHOICE_CHECK], capture_output=True,
                          text=True, env=env, timeout=300)


def _mkl_installed():
    import os
    import sys

    return any(os.path.exists(os.path.join(sys.prefix, "lib", f"libmkl_rt.so.{v}"))
               for v in (2, 3))


def test_tinygrad_k_blas_openblas_keeps_numpys_openblas():
    proc = _with_blas("openblas")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "GEMM openblas (one thread a call)" in proc.stdout
    assert "openblas" in proc.stdout.split()[-1]


def test_tinygrad_k_blas_mkl_uses_mkl_or_says_it_is_missing():
    """With the mkl wheel (the mkl extra) the GEMM is MKL's, sequential, and matches
    NumPy; without it, asking for MKL is a clear error naming the variable and the fix."""
    proc = _with_blas("mkl")
    if _mkl_installed():
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "GEMM mkl (sequential)" in proc.stdout and "libmkl_rt" in proc.stdout
    else:
        assert proc.returncode != 0
        assert "TINYGRAD_K_BLAS=mkl" in proc.stderr and "tinygrad_k[mkl]" in proc.stderr


def test_tinygrad_k_blas_refuses_an_unknown_library():
    proc = _with_blas("atlas")
    assert proc.returncode != 0
    assert "TINYGRAD_K_BLAS: expected one of auto, mkl, openblas, got 'atlas'" in proc.stderr


def test_the_default_takes_mkl_on_intel_where_installed():
    """auto: MKL exactly on an Intel CPU with the wheel installed; OpenBLAS elsewhere."""
    proc = _with_blas("auto")
    assert proc.returncode == 0, proc.stderr[-2000:]
    intel = B._cpu_vendor() == "GenuineIntel"
    want = "mkl (sequential)" if intel and _mkl_installed() else "openblas (one thread a call)"
    assert f"GEMM {want}" in proc.stdout


@pytest.mark.parametrize("mkl", [True, False])
def test_gradients_of_small_convolutions_follow_the_gemm(mkl, monkeypatch):
    """On "auto", stride-1 convolutions with few taps take the direct kernels, except for
    the two gradients where the GEMM is MKL's: those take the blocked lowering (faster
    there, see kernels.cpu._GRADIENTS_BLOCKED), where every thread gets a sample."""
    monkeypatch.setattr(cpu, "_GRADIENTS_BLOCKED", mkl)
    monkeypatch.setattr(cpu, "num_threads", lambda: 2)
    calls = []
    for name in ("_direct_forward", "_direct_backward_input", "_direct_backward_weight",
                 "_blocked_forward", "_blocked_backward_input", "_blocked_backward_weight"):
        real = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    rng = np.random.default_rng(0)
    from kernels import reference
    for n in (4, 1):  # with one sample a thread would idle: direct, whatever the GEMM
        calls.clear()
        x = rng.standard_normal((n, 6, 9, 9)).astype(np.float32)
        w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
        y = cpu.conv2d_forward(x, w, 1, 0)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = cpu.conv2d_backward_input(dy, w, x.shape, 1, 0)
        dw = cpu.conv2d_backward_weight(dy, x, w.shape, 1, 0)
        grads = "blocked" if mkl and n > 1 else "direct"
        assert calls == ["_direct_forward", f"_{grads}_backward_input",
                         f"_{grads}_backward_weight"]
        for got, want in ((y, reference.conv2d_forward(x, w, 1, 0)),
                          (dx, reference.conv2d_backward_input(dy, w, x.shape, 1, 0)),
                          (dw, reference.conv2d_backward_weight(dy, x, w.shape, 1, 0))):
            assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
