"""Launch a Numba CUDA kernel through the driver, without numba-cuda's work per call.

numba-cuda's ``kernel[grid, block](*args)`` types every argument on every call, wraps
each CuPy array as a device array (a DLPack or CUDA-array-interface export) and builds
a list of ctypes values. On an H200 that is 93 us of host time per launch of the GEMM
kernel with three CuPy arrays, against 19 us for a whole cuBLAS matmul through CuPy
(benchmarks/results/2026-11-26-NVIDIA-H200/launch.md); a LeNet-5 training step launches
about 18 kernels, and its GPU step was 3x slower than PyTorch's, nearly all host time.

``DirectLauncher(kernel, grid, block)(*args)`` does the same launch with less:

* the kernel is compiled once per argument signature, by ``numba.cuda.compile_ptx`` (the
  NVVM pipeline ``kernel[...]`` runs), and its PTX loaded as a module through CuPy;
* each call packs the arguments into one buffer handed to ``cuLaunchKernel`` (its
  ``extra`` argument, CU_LAUNCH_PARAM_BUFFER_POINTER), laid out as numba's kernel ABI
  expects -- numba-cuda's ``_Kernel._prepare_args`` flattens them the same way:

  - an array: meminfo (0), parent (0), nitems, itemsize, data pointer, shape[0..nd),
    strides[0..nd) in bytes -- the fields of numba's array data model, in order;
  - an int: int64; a float: float64; a tuple of ints: its elements as int64s; a tuple
    of arrays: each array's fields in turn, as its flat 1-D view (no view is made).

  Every field is 8 bytes wide, so the buffer has no padding. tests/test_cuda_launch.py
  checks against every production kernel's PTX that the entry's parameters are exactly
  what the packing writes (count and width), and the buffer protocol with a stand-in
  driver;
* the launch goes to CuPy's current stream (numba-cuda's default, stream 0, is the same
  legacy default stream unless a user picks another CuPy stream; then this is the one
  the surrounding CuPy work runs on).

``TINYGRAD_K_CUDA_LAUNCH=numba`` switches back to numba-cuda's own launch (read when a
launcher is made), to compare or to rule this module out.

Two ways to repeat a launch cheaper still, for kernels.cuda's launch plans (an op called
again with the shapes of an earlier call): ``DirectLauncher.bind(*args)`` describes once
and returns a ``BoundLaunch`` that writes only the new arrays' addresses into the packed
values; ``RawBound`` does the same for a CuPy RawKernel's function (the CUDA C kernels),
its scalars packed once in C's parameter layout.
"""
from __future__ import annotations

import ctypes
import os
import re
import struct
import threading

import numpy as np

__all__ = ["DirectLauncher", "BoundLaunch", "RawBound", "c_contiguous", "cap_registers",
           "describe", "numba_signature", "param_format",
           "ptx_params", "use_direct_launch"]

# cuda.h: CU_LAUNCH_PARAM_END, CU_LAUNCH_PARAM_BUFFER_POINTER, CU_LAUNCH_PARAM_BUFFER_SIZE
_PARAM_END, _PARAM_BUFFER_POINTER, _PARAM_BUFFER_SIZE = 0, 1, 2


def use_direct_launch():
    """False where TINYGRAD_K_CUDA_LAUNCH=numba asks for numba-cuda's own launch."""
    choice = os.environ.get("TINYGRAD_K_CUDA_LAUNCH", "direct").strip().lower()
    if choice not in ("direct", "numba"):
        raise ValueError(f"TINYGRAD_K_CUDA_LAUNCH={choice!r}: expected 'direct' or 'numba'")
    return choice == "direct"


# classes seen to be arrays (they have strides and are no NumPy scalar) -> whether they
# keep their contiguity as plain attributes, as CuPy's ndarray does (_c_contiguous,
# _f_contiguous): its ``flags`` builds a Flags object on every read, three per array and
# launch before (a 30-array optimizer step reads them 30 times)
_ARRAY_TYPES = {}


def _is_array(a, t):
    if t in _ARRAY_TYPES:
        return True
    if hasattr(a, "strides") and not isinstance(a, np.generic):  # NumPy scalars have strides
        _ARRAY_TYPES[t] = hasattr(a, "_c_contiguous") and hasattr(a, "_f_contiguous")
        return True
    return False


def _contiguity(a, t):
    """(C-contiguous, F-contiguous) of an array of a class _is_array has seen."""
    if _ARRAY_TYPES[t]:
        return a._c_contiguous, a._f_contiguous
    flags = a.flags
    return flags.c_contiguous, flags.f_contiguous


def c_contiguous(a):
    """``a.flags.c_contiguous`` of an array, CuPy's read without building its Flags."""
    t = type(a)
    if t in _ARRAY_TYPES or _is_array(a, t):
        return _contiguity(a, t)[0]
    return a.flags.c_contiguous


def describe(args, pointer):
    """(signature key, flat values) of kernel arguments, in numba's kernel ABI order.

    ``pointer(array)`` -> the array's device address. The key names each argument's
    numba type: ``"i8"`` (int), ``"f8"`` (float), ``("tuple", n)`` (n ints),
    ``("flat", n, dtype)`` (n C-contiguous arrays, each as its flat 1-D view) or
    ``(dtype, ndim, layout)`` for an array (dtype a NumPy dtype), layout "C", "F" or "A"
    as numba reads it from the array's flags. Runs on every launch, so the common cases
    go first and cheaply: an exact-type test for Python ints, the array classes already
    seen (no ``hasattr`` per array; CuPy's contiguity read as attributes, not ``flags``),
    the dtype object itself in the key (its ``.str`` builds a string on every read);
    ``isinstance`` only for NumPy scalars."""
    key, vals = [], []
    for a in args:
        t = type(a)
        if t is int:
            key.append("i8")
            vals.append(a)
        elif _is_array(a, t):
            c_order, f_order = _contiguity(a, t)
            layout = "C" if c_order else "F" if f_order else "A"
            key.append((a.dtype, a.ndim, layout))
            vals += (0, 0, a.size, a.itemsize, pointer(a))
            vals += a.shape
            vals += a.strides
        elif t is tuple and a and _is_array(a[0], type(a[0])):
            # a tuple of C-contiguous arrays of one dtype, each passed as its flat 1-D view
            # (numba's UniTuple(Array(dtype, 1, "C"), n)) without making the views
            dt = a[0].dtype
            for x in a:
                tx = type(x)
                if not (_is_array(x, tx) and x.dtype == dt and _contiguity(x, tx)[0]):
                    raise TypeError("kernels.cuda launch: a tuple of arrays must hold "
                                    f"C-contiguous arrays of one dtype ({dt}), got {x!r:.80}")
                n, size = x.size, x.itemsize
                vals += (0, 0, n, size, pointer(x), n, size)
            key.append(("flat", len(a), dt))
        elif t is tuple:
            for v in a:
                if type(v) is not int and not (isinstance(v, np.integer)
                                               and not isinstance(v, np.bool_)):
                    raise TypeError(f"kernels.cuda launch: tuple argument {a!r}: only "
                                    "tuples of ints are supported")
            key.append(("tuple", len(a)))
            vals += a
        elif isinstance(a, (bool, np.bool_)):
            raise TypeError("kernels.cuda launch: a bool kernel argument is not supported "
                            "(pass an int)")
        elif isinstance(a, (int, np.integer)):
            key.append("i8")
            vals.append(int(a))
        elif isinstance(a, (float, np.floating)):
            key.append("f8")
            vals.append(float(a))
        else:
            raise TypeError(f"kernels.cuda launch: unsupported kernel argument of type "
                            f"{t.__name__} (expected an array, int, float or tuple of ints)")
    return tuple(key), vals


def numba_signature(key):
    """The numba argument types of a ``describe`` key."""
    from numba import float64, from_dtype, int64, types

    sig = []
    for k in key:
        if k == "i8":
            sig.append(int64)
        elif k == "f8":
            sig.append(float64)
        elif k[0] == "tuple":
            sig.append(types.UniTuple(int64, k[1]))
        elif k[0] == "flat":
            sig.append(types.UniTuple(types.Array(from_dtype(np.dtype(k[2])), 1, "C"), k[1]))
        else:
            dtype, ndim, layout = k
            sig.append(types.Array(from_dtype(np.dtype(dtype)), ndim, layout))
    return tuple(sig)


def param_format(key):
    """The struct format of the packed parameter buffer of a ``describe`` key."""
    parts = ["<"]
    for k in key:
        if k == "i8":
            parts.append("q")
        elif k == "f8":
            parts.append("d")
        elif k[0] == "tuple":
            parts.append("q" * k[1])
        elif k[0] == "flat":
            parts.append("QQqqQqq" * k[1])
        else:  # meminfo, parent, nitems, itemsize, data; shape; strides
            parts.append("QQqqQ" + "q" * (2 * k[1]))
    return "".join(parts)


_ENTRY = re.compile(r"\.entry\s+([\w$]+)\s*\((.*?)\)", re.S)
_PARAM = re.compile(r"\.param\s+\.([a-z])(\d+)\s")


def ptx_params(ptx):
    """(entry name, [bit width of each parameter]) of the one kernel entry in ``ptx``."""
    entries = _ENTRY.findall(ptx)
    if len(entries) != 1:
        raise ValueError(f"kernels.cuda launch: expected one .entry in the PTX, found "
                         f"{len(entries)}")
    name, params = entries[0]
    return name, [int(bits) for _, bits in _PARAM.findall(params)]


def cap_registers(ptx, n):
    """``ptx`` with a ``.maxnreg n`` directive on its kernel entry (ptxas then allocates at
    most n registers per thread, as with -maxrregcount); unchanged for n None."""
    if n is None:
        return ptx
    entry = _ENTRY.search(ptx)
    if entry is None or ".maxnreg" in ptx:
        raise ValueError("kernels.cuda launch: cannot cap the registers of this PTX "
                         "(no .entry, or a .maxnreg already)")
    return f"{ptx[:entry.end()]}\n.maxnreg {int(n)}\n{ptx[entry.end():]}"


def _device_cc():
    import cupy

    cc = cupy.cuda.Device().compute_capability  # e.g. "90"
    return int(cc[:-1]), int(cc[-1])


class _Loaded:
    """One kernel compiled for one signature and loaded, with its parameter buffer."""

    def __init__(self, dispatcher, key):
        import cupy
        from numba import cuda

        options = {k: dispatcher.targetoptions[k] for k in ("fastmath", "lineinfo", "debug")
                   if k in dispatcher.targetoptions}
        ptx, _ = cuda.compile_ptx(dispatcher.py_func, numba_signature(key), cc=_device_cc(),
                                  **options)
        # numba hands cuda.jit(max_registers=n) to its linker; here the JIT that loads the
        # PTX reads it from the entry's .maxnreg directive
        ptx = cap_registers(ptx, dispatcher.targetoptions.get("max_registers"))
        self.name, widths = ptx_params(ptx)
        self.struct = struct.Struct(param_format(key))
        if widths != [64] * (len(self.struct.format) - 1):
            raise RuntimeError(f"kernels.cuda launch: {self.name} takes parameters of "
                               f"{widths} bits; the packing of {key} writes "
                               f"{self.struct.format!r}")
        self.module = cupy.cuda.function.Module()
        self.module.load(ptx.encode())
        self.function = self.module.get_function(self.name)
        self._launch_kernel = cupy.cuda.driver.launchKernel
        self._stream = cupy.cuda.get_current_stream
        self.buffer, self.size, self.extra = _param_buffer(self.struct.size)
        # the driver copies the parameters when it queues the launch, but CuPy's wrapper
        # lets go of the GIL around that call: one launch at a time per buffer
        self.lock = threading.Lock()

    def num_regs(self):
        """Registers per thread of the loaded function (the driver's attribute)."""
        import cupy

        drv = cupy.cuda.driver
        return drv.funcGetAttribute(getattr(drv, "CU_FUNC_ATTRIBUTE_NUM_REGS", 4),
                                    self.function.ptr)

    def launch(self, grid, block, vals):
        with self.lock:
            self.struct.pack_into(self.buffer, 0, *vals)
            self._launch_kernel(self.function.ptr, grid[0], grid[1], grid[2], block[0],
                                block[1], block[2], 0, self._stream().ptr, 0,
                                ctypes.addressof(self.extra))


def _param_buffer(size):
    """(buffer, its size, the ``extra`` array pointing at both) for cuLaunchKernel."""
    buffer = ctypes.create_string_buffer(max(8, size))
    size = ctypes.c_size_t(size)
    extra = (ctypes.c_void_p * 5)(_PARAM_BUFFER_POINTER, ctypes.addressof(buffer),
                                  _PARAM_BUFFER_SIZE, ctypes.addressof(size), _PARAM_END)
    return buffer, size, extra


class RawBound:
    """A CUDA C kernel's launch (a CuPy RawKernel's function) kept ready to repeat: grid,
    block and the scalar arguments packed once into the driver's parameter buffer;
    ``bound(*arrays)`` writes the arrays' device addresses -- the kernel's first
    ``n_arrays`` parameters, 64-bit pointers -- and launches on CuPy's current stream,
    without CuPy's per-call handling of each argument (an object per pointer and scalar).
    ``scalar_format``: struct codes of the parameters after the pointers ("I" unsigned,
    "i" int, ...); the buffer has C's layout (each parameter at its own alignment: the
    struct module's native "@"), which the tests check against the entry's PTX.
    ``shared_mem``: bytes of dynamic shared memory a block gets."""

    __slots__ = ("function", "grid", "block", "arrays", "buffer", "size", "extra", "lock",
                 "shared_mem", "_launch_kernel", "_stream")

    def __init__(self, function_ptr, grid, block, n_arrays, scalar_format, scalars,
                 shared_mem=0):
        import cupy

        layout = struct.Struct("@" + "Q" * n_arrays + scalar_format)
        self.function, self.grid, self.block = function_ptr, _dim3(grid), _dim3(block)
        self.arrays = struct.Struct("@" + "Q" * n_arrays)
        self.buffer, self.size, self.extra = _param_buffer(layout.size)
        layout.pack_into(self.buffer, 0, *(0,) * n_arrays, *scalars)
        self.lock = threading.Lock()
        self.shared_mem = int(shared_mem)
        self._launch_kernel = cupy.cuda.driver.launchKernel
        self._stream = cupy.cuda.get_current_stream

    def __call__(self, *arrays):
        (gx, gy, gz), (bx, by, bz) = self.grid, self.block
        with self.lock:
            self.arrays.pack_into(self.buffer, 0, *[a.data.ptr for a in arrays])
            self._launch_kernel(self.function, gx, gy, gz, bx, by, bz, self.shared_mem,
                                self._stream().ptr, 0, ctypes.addressof(self.extra))


_loaded = {}
_loaded_lock = threading.Lock()


def _dim3(d):
    d = tuple(d) if isinstance(d, tuple) else (d,)
    return tuple(int(v) for v in d) + (1,) * (3 - len(d))


def _pointer(a):
    return a.data.ptr


def registers(dispatcher):
    """The most registers per thread of ``dispatcher``'s kernels loaded so far, through this
    module or through numba's own launch (its ``get_regs_per_thread``); None if neither
    has loaded one yet."""
    with _loaded_lock:
        ours = [ld.num_regs() for (k, _), ld in _loaded.items() if k is dispatcher]
    theirs = dispatcher.get_regs_per_thread()
    theirs = list(theirs.values()) if isinstance(theirs, dict) else [theirs]
    return max(ours + [r for r in theirs if r is not None], default=None)


class DirectLauncher:
    """``kernel[grid, block]`` of a Numba CUDA kernel (a ``cuda.jit`` dispatcher), launched
    through the driver (module docstring). Arguments: CuPy arrays, ints, floats, tuples
    of ints."""

    __slots__ = ("kernel", "grid", "block")

    def __init__(self, kernel, grid, block):
        self.kernel, self.grid, self.block = kernel, _dim3(grid), _dim3(block)

    def __call__(self, *args):
        key, vals = describe(args, _pointer)
        self._load(key).launch(self.grid, self.block, vals)

    def _load(self, key):
        loaded = _loaded.get((self.kernel, key))
        if loaded is None:
            with _loaded_lock:
                loaded = _loaded.get((self.kernel, key))
                if loaded is None:
                    loaded = _loaded[(self.kernel, key)] = _Loaded(self.kernel, key)
        return loaded

    def bind(self, *args):
        """This launch of these arguments kept ready to repeat (a BoundLaunch)."""
        return BoundLaunch(self, args)


class BoundLaunch:
    """A launch whose arguments were described once: ``bound(*arrays)`` launches the same
    kernel, grid and scalars again on other arrays -- one per array argument of ``bind``,
    in order, each of the same dtype, shape and strides as the one it replaces -- and reads
    only their device addresses. What the caller vouches for: kernels.cuda keeps one per
    (op, shapes, strides, dtypes, settings) and passes arrays it has just made or checked
    to match (its launch plans); describe's per-array reads are what it saves."""

    __slots__ = ("loaded", "grid", "block", "vals", "slots")

    def __init__(self, launcher, args):
        key, vals = describe(args, _pointer)
        slots, at = [], 0  # where each array's data pointer sits among the values
        for k in key:
            if k in ("i8", "f8"):
                at += 1
            elif k[0] == "tuple":
                at += k[1]
            elif k[0] == "flat":
                raise TypeError("kernels.cuda launch: a tuple of arrays cannot be bound")
            else:  # meminfo, parent, nitems, itemsize, data; shape; strides
                slots.append(at + 4)
                at += 5 + 2 * k[1]
        self.slots = tuple(slots)
        self.loaded = launcher._load(key)
        self.grid, self.block, self.vals = launcher.grid, launcher.block, vals

    def __call__(self, *arrays):
        if len(arrays) != len(self.slots):
            raise TypeError(f"kernels.cuda launch: this bound launch takes "
                            f"{len(self.slots)} arrays, got {len(arrays)}")
        vals = self.vals.copy()  # (another thread may be launching it too)
        for at, a in zip(self.slots, arrays):
            vals[at] = a.data.ptr
        self.loaded.launch(self.grid, self.block, vals)
