"""Hand-written kernels for tinygrad_k, a standalone package (NumPy, Numba, CuPy only).

Every implementation module exposes the same primitives (NCHW activations, OIHW weights):

| primitive | computes |
|---|---|
| `matmul(a, b, trans_a=False, trans_b=False)` | op(a) @ op(b), 2-D or equal-batch 3-D |
| `conv2d_forward(x, w, stride, padding)` | cross-correlation y (N,O,OH,OW) |
| `conv2d_backward_input(dy, w, x_shape, stride, padding)` | dL/dx |
| `conv2d_backward_weight(dy, x, w_shape, stride, padding)` | dL/dw |
| `maxpool2d_forward(x, kernel, stride, padding)` | `(y, argmax)`, argmax = flat h*W+w |
| `maxpool2d_backward(dy, argmax, x_shape)` | scatter-add of dy at argmax |
| `avgpool2d_forward(x, kernel, stride, padding)` | window means (zero padding counted) |
| `avgpool2d_backward(dy, x_shape, kernel, stride, padding)` | dL/dx |

Implementations: `reference` (plain NumPy, the ground truth), `cpu` (Numba + BLAS),
`cuda` (Numba CUDA kernels on CuPy arrays, or the Numba simulator on NumPy arrays).
"""
import importlib

IMPLEMENTATIONS = ("reference", "cpu", "cuda")


def get(name):
    """The implementation module ``kernels.<name>`` (imported on first use)."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown kernel implementation {name!r}: expected one of "
                         f"{IMPLEMENTATIONS}")
    return importlib.import_module(f"{__name__}.{name}")
