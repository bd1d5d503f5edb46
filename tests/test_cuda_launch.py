"""kernels._cuda_launch: the driver launch of Numba CUDA kernels, checked without a GPU.

* the packing of arguments against numba's own types (``numba.typeof``) and against the
  parameter list of every production kernel's PTX (sm_90, compiled with the simulator
  off, in a subprocess): same count, all 64-bit;
* the parameter buffer handed to the driver, read back through a stand-in CuPy driver.
The GPU tests (pytest -m gpu) run every kernel through this launcher against the
references."""
import ctypes
import struct
import sys
import types as pytypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import _cuda_launch as L


def _ptr(a):
    return a.ctypes.data


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.data())
def test_describe_matches_numba_typeof_and_the_array_data_model(shape, data):
    import numba

    base = np.zeros(tuple(s * 2 for s in shape),
                    dtype=data.draw(st.sampled_from([np.float32, np.float64, np.int64])))
    # C-contiguous, sliced (strided, "A"), transposed ("F" or "A")
    view = data.draw(st.sampled_from(["c", "slice", "T"]))
    a = base[tuple(slice(0, s) for s in shape)]
    if view == "c":
        a = np.ascontiguousarray(a)
    elif view == "T":
        a = np.ascontiguousarray(a).T
    n, t = data.draw(st.integers(-2 ** 40, 2 ** 40)), (3, 1, 4, 1, 5, 9, 2, 6)
    key, vals = L.describe((a, n, t, 2.5, np.int32(-4), np.float32(0.5)), _ptr)
    want = (numba.typeof(a), numba.int64, numba.types.UniTuple(numba.int64, 8), numba.float64,
            numba.int64, numba.float64)
    assert L.numba_signature(key) == want
    assert vals == [0, 0, a.size, a.itemsize, a.ctypes.data, *a.shape, *a.strides, n, *t, 2.5,
                    -4, 0.5]
    assert struct.unpack(L.param_format(key), struct.pack(L.param_format(key), *vals)) == \
        tuple(vals)


def test_describe_refuses_what_it_cannot_pack():
    for bad in (True, np.bool_(False), "x", (1.5, 2), (True, 2), None):
        with pytest.raises(TypeError, match="kernels.cuda launch"):
            L.describe((bad,), _ptr)


def test_a_tuple_of_arrays_is_packed_as_flat_views():
    """A tuple of C-contiguous arrays (the multi-tensor optimizer step) packs each as its
    flat 1-D view, numba's UniTuple(Array(dtype, 1, "C"), n), without making the views."""
    from numba import types

    a, b = np.zeros((2, 3), np.float32), np.zeros(5, np.float32)
    key, vals = L.describe(((a, b), (1, 2)), _ptr)
    assert key == (("flat", 2, np.dtype(np.float32)), ("tuple", 2))
    assert vals == [0, 0, 6, 4, _ptr(a), 6, 4, 0, 0, 5, 4, _ptr(b), 5, 4, 1, 2]
    assert L.numba_signature(key)[0] == types.UniTuple(types.Array(types.float32, 1, "C"), 2)
    assert len(L.param_format(key)) - 1 == len(vals)
    for bad in ((a, a.T), (a, np.zeros(3, np.float64))):
        with pytest.raises(TypeError, match="C-contiguous arrays of one dtype"):
            L.describe((bad,), _ptr)


class _CupyLikeArray:
    """An array class that keeps its contiguity as attributes, as CuPy's ndarray does; its
    ``flags`` (a Flags object built per read, in CuPy) must not be read."""

    def __init__(self, a):
        self.dtype, self.ndim, self.size, self.itemsize = a.dtype, a.ndim, a.size, a.itemsize
        self.shape, self.strides, self.ptr = a.shape, a.strides, a.ctypes.data
        self._c_contiguous, self._f_contiguous = a.flags.c_contiguous, a.flags.f_contiguous

    @property
    def flags(self):
        raise AssertionError("describe read flags")


def test_describe_reads_cupy_contiguity_from_its_attributes():
    c = np.zeros((2, 3), np.float32)
    for a, layout in ((c, "C"), (c.T, "F"), (np.zeros((4, 4), np.float32)[:, :2], "A")):
        key, vals = L.describe((_CupyLikeArray(a),), lambda x: x.ptr)
        assert key == ((np.dtype(np.float32), 2, layout),) and vals[4] == a.ctypes.data
    key, _ = L.describe(((_CupyLikeArray(c), _CupyLikeArray(c)),), lambda x: x.ptr)
    assert key == (("flat", 2, np.dtype(np.float32)),)
    with pytest.raises(TypeError, match="C-contiguous arrays of one dtype"):
        L.describe(((_CupyLikeArray(c), _CupyLikeArray(c.T)),), lambda x: x.ptr)


def test_ptx_params_reads_the_entry():
    ptx = """.visible .entry _Z3k(\n\t.param .u64 _Z3k_param_0,\n\t.param .u64 _Z3k_param_1,
    \t.param .f64 _Z3k_param_2\n)\n{\n\tret;\n}"""
    assert L.ptx_params(ptx) == ("_Z3k", [64, 64, 64])
    with pytest.raises(ValueError, match="one .entry"):
        L.ptx_params(ptx + ptx)


SCRIPT = r'''
import numpy as np
import kernels.cuda as K
from kernels import _cuda_launch as L
from numba import cuda, types

def sample(t):
    if isinstance(t, types.Array):
        return np.zeros((2,) * t.ndim, dtype=np.dtype(str(t.dtype)))
    if isinstance(t, types.UniTuple):  # of ints, or of arrays (passed as flat views)
        return tuple(sample(t.dtype) for _ in range(t.count))
    return 0.0 if isinstance(t, types.Float) else 0

checked = 0
for dtype in ("float32", "float64"):
    # (the sweep's candidate variants take the same arguments as their production kernel)
    for name, fn, sig, _ in K.kernels_for_ptx(dtype, with_candidates=False):
        args = [sample(t) for t in sig]
        variants = [args]
        if name.startswith("gemm matmul, transposed"):  # operands read in place: strided views
            variants.append([args[0].transpose(0, 2, 1), args[1][:, ::2], *args[2:]])
        for v in variants:
            key, vals = L.describe(v, lambda a: a.ctypes.data)
            if v is args:
                assert L.numba_signature(key) == tuple(sig), (name, key, sig)
            ptx, _ = cuda.compile_ptx(fn, L.numba_signature(key), cc=(9, 0))
            entry, widths = L.ptx_params(ptx)
            assert widths == [64] * len(vals), (name, key, widths, len(vals))
            assert len(L.param_format(key)) - 1 == len(vals), (name, key)
            checked += 1
print("checked", checked)
'''


def test_every_production_kernels_ptx_takes_exactly_the_packed_parameters(nvvm_parts):
    # (run with the other NVVM checks, each kernel compiled once: tests/nvvm_session.py)
    from nvvm_session import part_output

    assert int(part_output(nvvm_parts, "launch").split()[-1]) >= 20


class _FakeCupyArray:
    """What the launcher reads of a CuPy array, over a NumPy one."""

    def __init__(self, a):
        self.a = a
        self.flags, self.dtype, self.ndim, self.size = a.flags, a.dtype, a.ndim, a.size
        self.itemsize, self.shape, self.strides = a.itemsize, a.shape, a.strides
        self.data = pytypes.SimpleNamespace(ptr=a.ctypes.data)


def _fake_cupy(launches):
    class Module:
        def load(self, ptx):
            self.ptx = ptx

        def get_function(self, name):
            return pytypes.SimpleNamespace(ptr=0xF00, name=name)

    def launch_kernel(f, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
        words = (ctypes.c_void_p * 5).from_address(extra)
        assert words[0] == 1 and words[2] == 2 and words[4] is None  # pointer, size, end
        size = ctypes.c_size_t.from_address(words[3]).value
        launches.append(dict(f=f, grid=(gx, gy, gz), block=(bx, by, bz), smem=smem,
                             stream=stream, params=params,
                             buffer=ctypes.string_at(words[1], size)))

    cuda = pytypes.SimpleNamespace(
        function=pytypes.SimpleNamespace(Module=Module),
        driver=pytypes.SimpleNamespace(  # every function of the fake has 77 registers
            launchKernel=launch_kernel, CU_FUNC_ATTRIBUTE_NUM_REGS=4,
            funcGetAttribute=lambda attr, f: 77 if (attr, f) == (4, 0xF00) else 0),
        get_current_stream=lambda: pytypes.SimpleNamespace(ptr=0x5EAD),
        Device=lambda: pytypes.SimpleNamespace(compute_capability="90"))
    return pytypes.SimpleNamespace(cuda=cuda)


class _FakeKernel:
    """A cuda.jit dispatcher as the launcher sees it (hashable, like the real one)."""
    targetoptions = {}

    @staticmethod
    def py_func(*args):
        pass


def _fake_ptx(nparams, name="_Zk"):
    params = ",\n".join(f"\t.param .u64 {name}_param_{i}" for i in range(nparams))
    return f".visible .entry {name}(\n{params}\n)\n{{\n\tret;\n}}\n"


def test_direct_launcher_hands_the_driver_the_packed_buffer(monkeypatch):
    from numba import cuda

    launches, compiled = [], []
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(launches))

    def compile_ptx(fn, sig, cc, **options):
        compiled.append((fn, sig, cc))
        key, vals = L.describe(args, _ptr)
        return _fake_ptx(len(vals)), None

    monkeypatch.setattr(cuda, "compile_ptx", compile_ptx, raising=False)
    monkeypatch.setattr(L, "_loaded", {})
    kernel = _FakeKernel()
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    y = np.zeros((4, 3), dtype=np.float64).T
    args = (x, y, 7, (1, 2, 3, 4, 5, 6, 7, 8), -3)
    launcher = L.DirectLauncher(kernel, (5, 6), 128)
    fake = (_FakeCupyArray(x), _FakeCupyArray(y), *args[2:])
    launcher(*fake)
    launcher(*fake)  # the second call reuses the loaded kernel
    assert len(compiled) == 1 and compiled[0][2] == (9, 0)
    assert len(launches) == 2
    got = launches[0]
    assert (got["f"], got["grid"], got["block"], got["smem"], got["stream"], got["params"]) \
        == (0xF00, (5, 6, 1), (128, 1, 1), 0, 0x5EAD, 0)
    want = [0, 0, 24, 4, x.ctypes.data, 2, 3, 4, 48, 16, 4,
            0, 0, 12, 8, y.ctypes.data, 3, 4, 8, 24, 7, 1, 2, 3, 4, 5, 6, 7, 8, -3]
    assert list(struct.unpack("<" + "q" * len(want), got["buffer"])) == want


def test_a_bound_launch_repeats_the_launch_on_other_arrays(monkeypatch):
    """bind() describes once; the bound launch then packs exactly what a full call on the
    new arrays would, reading only their addresses (kernels.cuda's launch plans)."""
    from numba import cuda

    launches = []
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(launches))
    monkeypatch.setattr(cuda, "compile_ptx", lambda fn, sig, cc, **o: (
        _fake_ptx(len(L.describe(args, _ptr)[1])), None), raising=False)
    monkeypatch.setattr(L, "_loaded", {})
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    y = np.zeros((4, 3), dtype=np.float64).T
    args = (x, 7, (1, 2, 3), y, -3)
    launcher = L.DirectLauncher(_FakeKernel(), 5, 64)
    bound = launcher.bind(_FakeCupyArray(x), *args[1:3], _FakeCupyArray(y), -3)
    x2, y2 = x + 1, np.ones((4, 3), dtype=np.float64).T
    launcher(_FakeCupyArray(x2), 7, (1, 2, 3), _FakeCupyArray(y2), -3)  # the full call
    bound(_FakeCupyArray(x2), pytypes.SimpleNamespace(data=pytypes.SimpleNamespace(
        ptr=y2.ctypes.data)))  # (only .data.ptr is read)
    assert launches[0] == launches[1] and len(L._loaded) == 1
    assert struct.unpack_from("<q", launches[1]["buffer"], 8 * 4)[0] == x2.ctypes.data
    with pytest.raises(TypeError, match="takes 2 arrays, got 1"):
        bound(_FakeCupyArray(x2))
    with pytest.raises(TypeError, match="tuple of arrays cannot be bound"):
        launcher.bind((_FakeCupyArray(x2), _FakeCupyArray(x2)))


def test_direct_launcher_refuses_a_kernel_whose_parameters_differ(monkeypatch):
    from numba import cuda

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy([]))
    monkeypatch.setattr(cuda, "compile_ptx", lambda fn, sig, cc, **o: (_fake_ptx(3), None),
                        raising=False)
    monkeypatch.setattr(L, "_loaded", {})
    kernel = _FakeKernel()
    with pytest.raises(RuntimeError, match="takes parameters of"):
        L.DirectLauncher(kernel, 1, 32)(_FakeCupyArray(np.zeros(4, np.float32)), 1)


def test_a_register_cap_reaches_the_loaded_ptx(monkeypatch):
    """cuda.jit(max_registers=n) is a link option in numba; the driver launch loads PTX,
    so the cap goes in as the entry's .maxnreg directive (kernels.cuda._MAX_REGISTERS)."""
    from numba import cuda

    loaded = []
    fake = _fake_cupy([])
    load = fake.cuda.function.Module.load
    monkeypatch.setattr(fake.cuda.function.Module, "load",
                        lambda self, ptx: loaded.append(ptx.decode()) or load(self, ptx))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(cuda, "compile_ptx", lambda fn, sig, cc, **o: (_fake_ptx(8), None),
                        raising=False)
    monkeypatch.setattr(L, "_loaded", {})

    class Capped(_FakeKernel):
        targetoptions = {"max_registers": 64}

    L.DirectLauncher(Capped(), 1, 32)(_FakeCupyArray(np.zeros(4, np.float32)), 1)
    L.DirectLauncher(_FakeKernel(), 1, 32)(_FakeCupyArray(np.zeros(4, np.float32)), 1)
    assert ")\n.maxnreg 64\n" in loaded[0] and ".maxnreg" not in loaded[1]
    assert L.cap_registers(_fake_ptx(2), None) == _fake_ptx(2)
    with pytest.raises(ValueError, match="cannot cap"):
        L.cap_registers(L.cap_registers(_fake_ptx(2), 64), 32)


def test_registers_reads_the_kernels_this_module_loaded(monkeypatch):
    """The sweep's register column: a kernel launched through the driver is not among
    numba's compiled overloads (its get_regs_per_thread is empty), so the count comes from
    the loaded function (the driver's attribute); the most over its loaded signatures."""
    from numba import cuda

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy([]))
    monkeypatch.setattr(cuda, "compile_ptx", lambda fn, sig, cc, **o: (_fake_ptx(8), None),
                        raising=False)
    monkeypatch.setattr(L, "_loaded", {})

    class Numbas(_FakeKernel):
        def __init__(self, regs):
            self.regs = regs

        def get_regs_per_thread(self):
            return self.regs

    kernel, other = Numbas({}), Numbas({"sig": 40})
    assert L.registers(kernel) is None and L.registers(other) == 40
    L.DirectLauncher(kernel, 1, 32)(_FakeCupyArray(np.zeros(4, np.float32)), 1)
    assert L.registers(kernel) == 77 and L.registers(other) == 40
    L._loaded[(other, "another signature")] = pytypes.SimpleNamespace(num_regs=lambda: 96)
    assert L.registers(other) == 96


def test_the_launch_switch(monkeypatch):
    monkeypatch.setenv("TINYGRAD_K_CUDA_LAUNCH", "numba")
    assert not L.use_direct_launch()
    monkeypatch.setenv("TINYGRAD_K_CUDA_LAUNCH", "Direct")
    assert L.use_direct_launch()
    monkeypatch.setenv("TINYGRAD_K_CUDA_LAUNCH", "fast")
    with pytest.raises(ValueError, match="TINYGRAD_K_CUDA_LAUNCH='fast'"):
        L.use_direct_launch()


def test_kernels_cuda_launches_through_the_driver_only_where_there_is_one(monkeypatch):
    import kernels.cuda as K

    kern = K._scatter_kernel()
    make = K._launch_config.__wrapped__  # the launcher cache stays out of it
    assert not isinstance(make(kern, 4, 64), L.DirectLauncher)  # the simulator: no driver
    monkeypatch.setattr(K._runtime, "simulating", lambda: False)
    launcher = make(kern, 4, 64)
    assert isinstance(launcher, L.DirectLauncher)
    assert (launcher.kernel, launcher.grid, launcher.block) == (kern, (4, 1, 1), (64, 1, 1))
    monkeypatch.setenv("TINYGRAD_K_CUDA_LAUNCH", "numba")
    assert not isinstance(make(kern, 4, 64), L.DirectLauncher)


def test_c_contiguous_reads_cupy_attributes_and_numpy_flags():
    c = np.zeros((2, 3), np.float32)
    assert L.c_contiguous(c) and not L.c_contiguous(c.T)
    assert L.c_contiguous(_CupyLikeArray(c)) and not L.c_contiguous(_CupyLikeArray(c.T))


def test_a_raw_bound_launch_packs_addresses_then_scalars_in_c_layout(monkeypatch):
    """RawBound: the scalars packed once at C's alignment (an 8-byte one after a 4-byte one
    is padded), the arrays' addresses written per call, the driver handed the buffer."""
    launches = []
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(launches))
    bound = L.RawBound(0xF00, (3, 2), 256, 2, "Iq", (7, -1))
    a, b = (pytypes.SimpleNamespace(data=pytypes.SimpleNamespace(ptr=p)) for p in (16, 32))
    bound(a, b)
    bound(b, a)
    assert [(x["f"], x["grid"], x["block"], x["stream"]) for x in launches] == \
        [(0xF00, (3, 2, 1), (256, 1, 1), 0x5EAD)] * 2
    assert struct.unpack("<QQI4xq", launches[0]["buffer"]) == (16, 32, 7, -1)
    assert struct.unpack("<QQI4xq", launches[1]["buffer"]) == (32, 16, 7, -1)
    with pytest.raises(struct.error):
        bound(a)
