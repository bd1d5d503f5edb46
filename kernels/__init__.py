"""Hand-written kernels for tinygrad_k, a standalone package (NumPy, Numba, CuPy only).

Every implementation module exposes the same primitives (NCHW activations, OIHW weights):

| primitive | computes |
|---|---|
| `matmul(a, b, trans_a=False, trans_b=False)` | op(a) @ op(b), 2-D or equal-batch 3-D |
| `conv2d_forward(x, w, stride, padding, dilation=1, groups=1)` | cross-correlation y (N,O,OH,OW) |
| `conv2d_backward_input(dy, w, x_shape, stride, padding, dilation=1, groups=1)` | dL/dx (= conv_transpose2d) |
| `conv2d_backward_weight(dy, x, w_shape, stride, padding, dilation=1, groups=1)` | dL/dw |
| `maxpool2d_forward(x, kernel, stride, padding, dilation=1, ceil_mode=False)` | `(y, argmax)`, argmax = flat h*W+w |
| `maxpool2d_backward(dy, argmax, x_shape)` | scatter-add of dy at argmax |
| `avgpool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)` | window means |
| `avgpool2d_backward(dy, x_shape, kernel, stride, padding, ...)` | dL/dx |

Convolution and pooling arguments are validated once by ``kernels._common.conv_geometry`` /
``pool_geometry``; every primitive accepts that record in place of ``stride`` (conv) or
``kernel`` (pooling), or plain ints for standalone use.

Implementations: `reference` (plain NumPy, the ground truth), `cpu` (Numba + BLAS),
`cuda` (Numba CUDA kernels on CuPy arrays, or the Numba simulator on NumPy arrays). Each
lists its kernel versions by name in ``VERSIONS`` (primitive -> version -> function with
the primitive's signature; "default" is what the framework calls): ``get(impl, primitive,
version)`` returns one.
"""
import importlib

IMPLEMENTATIONS = ("reference", "cpu", "cuda")


def get(name, primitive=None, version=None):
    """The implementation module ``kernels.<name>`` (imported on first use); with
    ``primitive``, that primitive's function, and with ``version`` too, the named version of
    it from the module's ``VERSIONS`` table (e.g. ``get("cpu", "conv2d_backward_weight",
    "fold_batch")``)."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown kernel implementation {name!r}: expected one of "
                         f"{IMPLEMENTATIONS}")
    module = importlib.import_module(f"{__name__}.{name}")
    if primitive is None:
        return module
    table = module.VERSIONS.get(primitive)
    if table is None:
        raise ValueError(f"kernels.{name} has no primitive {primitive!r}: expected one of "
                         f"{sorted(module.VERSIONS)}")
    if version is None:
        return getattr(module, primitive)
    if version not in table:
        raise ValueError(f"kernels.{name} has no version {version!r} of {primitive}: expected "
                         f"one of {sorted(table)}")
    return table[version]
