"""One conv layer's gradients, computed three ways.

    y[n,o,i,j] = b[o] + sum_{c,p,q} x_pad[n, c, i*sh + p, j*sw + q] * w[o,c,p,q]
    L = sum_{n,o,i,j} y[n,o,i,j] * v[n,o,i,j]        (v: a fixed random cotangent, so
                                                      dL/dy = v)

  1. ours: tinygrad_k autograd on the cpu device -> ``Conv2d.backward`` -> the Numba/BLAS
     kernels ``kernels.cpu.conv2d_backward_input`` / ``conv2d_backward_weight``;
  2. the reference: ``kernels.reference`` (plain NumPy, one line per term of the sum);
  3. finite differences: (L(theta + eps) - L(theta - eps)) / (2 eps) for every single
     element of x, w and b.

Stride 2 and padding 1 so that the index arithmetic (i*sh + p - ph) is exercised.
Run:  python examples/conv_grad_three_ways.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # a clone
import kernels.reference as ref  # noqa: E402
import tinygrad_k as tk  # noqa: E402
import tinygrad_k.nn.functional as F  # noqa: E402

N, C, H, W, O, K = 2, 3, 7, 6, 4, 3
stride, padding = 2, 1
rng = np.random.default_rng(0)
x0 = rng.standard_normal((N, C, H, W))
w0 = rng.standard_normal((O, C, K, K))
b0 = rng.standard_normal(O)
OH, OW = (H + 2 * padding - K) // stride + 1, (W + 2 * padding - K) // stride + 1
v = rng.standard_normal((N, O, OH, OW))

# -- 1. ours: autograd through Conv2d, which calls the backend's kernels ---------------------
x = tk.tensor(x0, requires_grad=True)
w = tk.tensor(w0, requires_grad=True)
b = tk.tensor(b0, requires_grad=True)
y = F.conv2d(x, w, b, stride=stride, padding=padding)
print(f"x {x.shape}, w {w.shape}, stride {stride}, padding {padding} -> y {y.shape}")
print(f"Conv2d.backward runs on {x.backend.kernels.__name__}")
(y * tk.tensor(v)).sum().backward()
ours = {"x": x.grad.numpy(), "w": w.grad.numpy(), "b": b.grad.numpy()}

# -- 2. the NumPy reference kernels ----------------------------------------------------------
reference = {"x": ref.conv2d_backward_input(v, w0, x0.shape, stride, padding),
             "w": ref.conv2d_backward_weight(v, x0, w0.shape, stride, padding),
             "b": v.sum(axis=(0, 2, 3))}


# -- 3. central finite differences -----------------------------------------------------------
def loss(xa, wa, ba):
    y = ref.conv2d_forward(xa, wa, stride, padding) + ba.reshape(1, -1, 1, 1)
    return float((y * v).sum())


def numeric_grad(which, eps=1e-6):
    arrays = {"x": x0.copy(), "w": w0.copy(), "b": b0.copy()}
    a = arrays[which]
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        plus = loss(**{k + "a": val for k, val in arrays.items()})
        a[idx] = old - eps
        minus = loss(**{k + "a": val for k, val in arrays.items()})
        a[idx] = old
        g[idx] = (plus - minus) / (2 * eps)
    return g


numeric = {k: numeric_grad(k) for k in ("x", "w", "b")}


def rel(a, r):
    return float(np.linalg.norm(a - r) / np.linalg.norm(r))


print(f"\n{'grad':<6} {'shape':<14} {'|ref|':>9}  {'ours vs ref':>11}  {'ours vs FD':>10}  "
      f"{'ref vs FD':>9}   (relative errors ||a-b||/||b||)")
worst = 0.0
for k in ("x", "w", "b"):
    errs = rel(ours[k], reference[k]), rel(ours[k], numeric[k]), rel(reference[k], numeric[k])
    worst = max(worst, *errs)
    print(f"dL/d{k:<2} {str(ours[k].shape):<14} {np.linalg.norm(reference[k]):>9.3f}  "
          f"{errs[0]:>11.1e}  {errs[1]:>10.1e}  {errs[2]:>9.1e}")
# finite differences of a linear function are exact up to round-off (~1e-10 here)
if worst > 1e-7:
    sys.exit(f"the three gradients disagree: worst relative error {worst:.1e}")
print("all three agree")
