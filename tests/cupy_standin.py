"""A stand-in CuPy for running the CUDA C kernels' Python wrappers on the CPU, down to the
driver launch (tests/test_kernels_pool_src.py, tests/test_kernels_direct_src.py).

Arrays are NumPy arrays with CuPy's ``.data.ptr``; ``RawModule`` checks that its code holds
the kernel source and hands out function "pointers"; ``cuda.driver.launchKernel`` reads the
parameter buffer that ``_cuda_launch.RawBound`` packed (pointers, then the scalars at C's
alignment) and calls ``run(name, grid, block, shared_mem, arrays, scalars)``, which runs
the host-compiled kernel.
"""
import ctypes
import struct
import types

import numpy as np


def stand_in_cupy(source, n_arrays, scalar_format, run, options=()):
    """-> (the module, ``dev``: a NumPy array as a device array). ``source``: what every
    RawModule's code must contain; ``options``: what its options must include."""
    functions, arrays = {}, {}

    class Dev(np.ndarray):  # a NumPy array with CuPy's .data.ptr
        @property
        def data(self):
            return types.SimpleNamespace(ptr=self.ctypes.data)

    def dev(a):
        a = a.view(Dev)
        arrays[a.ctypes.data] = a
        return a

    class RawModule:
        def __init__(self, code, options=()):
            assert source in code and all(o in options for o in want_options)
            self.code = code

        def get_function(self, name):
            assert f"{name}(" in self.code
            functions[id(name)] = name
            return types.SimpleNamespace(kernel=types.SimpleNamespace(ptr=id(name)))

    want_options = options
    layout = struct.Struct("@" + "Q" * n_arrays + scalar_format)

    def launch_kernel(f, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
        words = (ctypes.c_void_p * 5).from_address(extra)  # CU_LAUNCH_PARAM_* pairs
        assert ctypes.c_size_t.from_address(words[3]).value == layout.size
        vals = layout.unpack(ctypes.string_at(words[1], layout.size))
        run(functions[f], (gx, gy, gz), (bx, by, bz), smem,
            [arrays[p] for p in vals[:n_arrays]], vals[n_arrays:])

    def ascontiguousarray(a):
        return a if isinstance(a, Dev) and a.flags.c_contiguous else dev(np.ascontiguousarray(a))

    module = types.SimpleNamespace(
        empty=lambda shape, dtype: dev(np.empty(shape, dtype)),
        ascontiguousarray=ascontiguousarray, RawModule=RawModule,
        cuda=types.SimpleNamespace(driver=types.SimpleNamespace(launchKernel=launch_kernel),
                                   get_current_stream=lambda: types.SimpleNamespace(ptr=0)))
    return module, dev
