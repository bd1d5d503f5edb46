"""Compile every Numba CUDA kernel for a real GPU (PTX for sm_90, the H100) without one.

The simulator runs kernels as Python, so it never type-checks them the way the CUDA
compiler does; this test does, in a subprocess with the simulator off that the other NVVM
checks share (tests/nvvm_session.py: each kernel compiled once). It needs NVVM and
NVRTC (the test extra installs nvidia-cuda-nvcc-cu12 / nvidia-cuda-nvrtc-cu12) and is
skipped, visibly, where they are missing."""
import pytest

SCRIPT = r'''
import re
import numpy as np
# as under NumPy >= 2.5, which removed row_stack: numba-cuda 0.30 wants it on its first
# compile, and importing kernels.cuda must put it back (the GPU image has numpy 2.5.2)
vars(np).pop("row_stack", None)
from numba import cuda
import kernels.cuda as K
import kernels.cuda_gemm as G
f64_math = re.compile(r"\b(?:add|sub|mul|fma|div|neg|min|max|setp)(?:\.[a-z]+)*\.f64\b")
for dtype in ("float32", "float64"):
    for tile in (K.DEFAULT_TILE, (8, 8, 4, 2, 2)):
        # the sweep's candidate variants (same code, other layouts) and the ladder once
        first = dtype == "float32" and tile == K.DEFAULT_TILE
        kernels = K.kernels_for_ptx(dtype, tile, with_candidates=first)
        if first:
            kernels += G.kernels_for_ptx()
        for name, fn, sig, _ in kernels:
            if tile == K.DEFAULT_TILE or name.startswith("gemm"):  # the rest has no tile
                ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
                # a bare Python float in a kernel is a float64: float32 kernels must not
                # compute in it (half rate on an H100, 1/64 on most other GPUs)
                if dtype == "float32":
                    assert not f64_math.findall(ptx), (name, f64_math.findall(ptx)[:5])
print("compiled")
'''


def test_every_cuda_kernel_compiles_to_ptx_and_float32_ones_compute_in_float32(nvvm_parts):
    # (run with the other NVVM checks, each kernel compiled once: tests/nvvm_session.py)
    from nvvm_session import part_output

    assert "compiled" in part_output(nvvm_parts, "ptx")


def test_conv_and_pool_kernels_launch_with_arrays_only():
    """Issue 13 item 4: numba-cuda's host cost per launch grows with its arguments, so the
    window/stride/padding of the pooling and conv input-gradient kernels are compile-time
    constants and every launch passes arrays only; the configured launcher is cached."""
    from numba import types

    import kernels.cuda as K

    for name, fn, sig, _ in K.kernels_for_ptx():
        if name.startswith(("conv", "maxpool", "avgpool")):
            assert all(isinstance(t, types.Array) for t in sig), name
            assert fn.__code__.co_argcount == len(sig), name
    with pytest.raises(ValueError, match="2\\*\\*32"):  # flat indices are split in 32 bits
        K._launch(K._pool_kernels(2, 2, 2, 2, 0, 0)[0], 2 ** 32)
    if not K._runtime.simulating():  # the simulator's kernel[...] returns the kernel
        kernel = K._pool_kernels(2, 2, 2, 2, 0, 0)[0]
        assert K._launch(kernel, 1000) is K._launch(kernel, 1000)
        assert K._launch(kernel, 1000) is not K._launch(kernel, 100000)
