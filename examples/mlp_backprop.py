"""Backprop through a 3-layer MLP, one step at a time.

    z1 = x W1^T + b1    h1 = relu(z1)        x (N, D), W1 (H1, D)
    z2 = h1 W2^T + b2   h2 = relu(z2)        W2 (H2, H1)
    z3 = h2 W3^T + b3   L = mean_n CE(z3_n, t_n)   W3 (C, H2)

Three sources of the same gradients are compared:
  1. autograd (``loss.backward(trace=True)``: prints the backward trace, keeps the
     intermediate gradients because we call ``retain_grad()`` on z1..z3, h1, h2);
  2. the chain rule written out below in plain NumPy (docs/backprop.md derives each line);
  3. ``tinygrad_k.gradcheck``: central finite differences on every parameter.

Shapes are tiny so that finite differences are instant; everything is float64 so the
comparison is to ~1e-12, not to float32 round-off. Run:  python examples/mlp_backprop.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # a clone
import tinygrad_k as tk  # noqa: E402
import tinygrad_k.nn.functional as F  # noqa: E402

N, D, H1, H2, C = 8, 6, 5, 4, 3
rng = np.random.default_rng(0)


def param(*shape):
    bound = 1.0 / np.sqrt(shape[-1])
    return tk.tensor(rng.uniform(-bound, bound, shape), dtype=tk.float64, requires_grad=True)


W1, b1 = param(H1, D), param(H1)
W2, b2 = param(H2, H1), param(H2)
W3, b3 = param(C, H2), param(C)
x = tk.tensor(rng.standard_normal((N, D)), dtype=tk.float64)
t = tk.tensor(rng.integers(0, C, N))
params = {"W1": W1, "b1": b1, "W2": W2, "b2": b2, "W3": W3, "b3": b3}


def forward(W1, b1, W2, b2, W3, b3, keep=False):
    z1 = F.linear(x, W1, b1)
    h1 = z1.relu()
    z2 = F.linear(h1, W2, b2)
    h2 = z2.relu()
    z3 = F.linear(h2, W3, b3)
    loss = F.cross_entropy(z3, t)
    if keep:
        for v in (z1, h1, z2, h2, z3):
            v.retain_grad()
        return loss, dict(z1=z1, h1=h1, z2=z2, h2=h2, z3=z3)
    return loss


# -- 1. autograd --------------------------------------------------------------------------
loss, acts = forward(*params.values(), keep=True)
print(f"loss = {loss.item():.6f}\n")
print("backward trace (execution order: the loss first, the first layer last):")
records = loss.backward(trace=True)
assert [r["op"] for r in records] == ["CrossEntropy", "Linear", "ReLU", "Linear", "ReLU",
                                      "Linear"]

# -- 2. the chain rule by hand ------------------------------------------------------------
X = x.numpy()
a = {k: v.numpy() for k, v in acts.items()}
P = {k: v.numpy() for k, v in params.items()}
if np.abs(a["z1"]).min() < 1e-6 or np.abs(a["z2"]).min() < 1e-6:
    sys.exit("a pre-activation sits on the relu kink; pick another seed")

p = np.exp(a["z3"] - a["z3"].max(1, keepdims=True))
p /= p.sum(1, keepdims=True)                      # softmax(z3)
onehot = np.eye(C)[t.numpy()]
hand = {}
hand["z3"] = (p - onehot) / N                     # d mean CE / d logits
hand["W3"] = hand["z3"].T @ a["h2"]               # dW = G^T h
hand["b3"] = hand["z3"].sum(0)                    # db = sum_n G
hand["h2"] = hand["z3"] @ P["W3"]                 # dh = G W
hand["z2"] = hand["h2"] * (a["z2"] > 0)           # relu': 1 where z > 0
hand["W2"] = hand["z2"].T @ a["h1"]
hand["b2"] = hand["z2"].sum(0)
hand["h1"] = hand["z2"] @ P["W2"]
hand["z1"] = hand["h1"] * (a["z1"] > 0)
hand["W1"] = hand["z1"].T @ X
hand["b1"] = hand["z1"].sum(0)

print("\nevery intermediate gradient, hand-derived vs autograd:")
print(f"{'gradient':<10} {'shape':<8} {'|hand|':>10} {'max |hand - autograd|':>23}")
worst = 0.0
for name in ["z3", "W3", "b3", "h2", "z2", "W2", "b2", "h1", "z1", "W1", "b1"]:
    auto = (acts[name] if name in acts else params[name]).grad.numpy()
    err = float(np.abs(hand[name] - auto).max())
    worst = max(worst, err)
    print(f"dL/d{name:<6} {str(hand[name].shape):<8} {np.linalg.norm(hand[name]):>10.4e} "
          f"{err:>23.2e}")
if worst > 1e-12:
    sys.exit(f"hand-derived and autograd gradients differ by {worst:.2e}")

# -- 3. finite differences ------------------------------------------------------------------
ok = tk.gradcheck(lambda *ps: forward(*ps), tuple(params.values()), eps=1e-6, atol=1e-7,
                  rtol=1e-5)
print(f"\ngradcheck (central differences on all {sum(v.numel() for v in params.values())} "
      f"parameters): {'passed' if ok else 'FAILED'}")
print("all three agree")
