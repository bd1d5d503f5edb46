"""See vanishing gradients in the backward trace, and draw the graph.

Two 10-layer MLPs on one batch of Fashion-MNIST (28x28 images, 10 classes):
  * sigmoid activations: sigmoid'(a) <= 1/4, so every layer shrinks the gradient by
    roughly |W| / 4 and the first layers receive almost nothing;
  * relu activations with He (kaiming) initialisation, Var(W) = 2 / fan_in, chosen so the
    gradient norm stays about the same from layer to layer.

For each, one ``backward(trace=...)`` gives one line per node; ``viz.format_trace`` marks
the norms below 1e-7 as VANISHING, and ``viz.format_grad_norms`` lists |dL/dW| per layer.
Finally the graph of a small model goes to DOT text (and SVG when Graphviz is installed).
Uses random images when Fashion-MNIST is not installed.
Run:  python examples/vanishing_gradients.py [output_dir]
"""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # a clone
import tinygrad_k as tk  # noqa: E402
from tinygrad_k import nn, viz  # noqa: E402
from tinygrad_k.data.datasets import read_idx  # noqa: E402

DEPTH, WIDTH, BATCH = 10, 64, 32


def one_batch():
    folder = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
    images = os.path.join(folder, "t10k-images-idx3-ubyte.gz")
    labels = os.path.join(folder, "t10k-labels-idx1-ubyte.gz")
    if os.path.isfile(images) and os.path.isfile(labels):
        x = read_idx(images)[:BATCH].reshape(BATCH, -1).astype(np.float32) / 255.0
        y = read_idx(labels)[:BATCH].astype(np.int64)
        print(f"data: the first {BATCH} Fashion-MNIST test images")
    else:
        rng = np.random.default_rng(0)
        x = rng.random((BATCH, 784), dtype=np.float32)
        y = rng.integers(0, 10, BATCH)
        print(f"data: {BATCH} random images (Fashion-MNIST not found in {folder})")
    return tk.tensor((x - 0.2860) / 0.3530), tk.tensor(y)   # dataset mean / std


def mlp(act, he_init):
    layers, width = [], 784
    for _ in range(DEPTH - 1):
        lin = nn.Linear(width, WIDTH)
        if he_init:
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
        layers += [lin, act()]
        width = WIDTH
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def first_last(model):
    rows = [r for r in viz.grad_norms(model.named_parameters()) if r[0].endswith("weight")]
    return rows[0][2], rows[-1][2]


x, y = one_batch()
results = {}
for title, act, he in [("sigmoid, default init", nn.Sigmoid, False),
                       ("relu, He init", nn.ReLU, True)]:
    tk.manual_seed(0)
    model = mlp(act, he)
    loss = nn.functional.cross_entropy(model(x), y)
    records = []
    loss.backward(trace=records)
    print(f"\n=== {DEPTH} layers, {title}: loss {loss.item():.4f} ===")
    print(viz.format_trace(records))
    print()
    print(viz.format_grad_norms(model.named_parameters()))
    first, last = first_last(model)
    results[title] = first / last
    print(f"|dL/dW| first layer / last layer = {first / last:.2e}")

assert results["sigmoid, default init"] < 1e-3, results   # vanished
assert results["relu, He init"] > 1e-2, results           # did not

# -- the graph of a small model --------------------------------------------------------------
out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="tinygrad_k_viz_")
os.makedirs(out_dir, exist_ok=True)
tk.manual_seed(0)
small = nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
loss = nn.functional.cross_entropy(small(x), y)
dot_path = viz.draw(loss, os.path.join(out_dir, "mlp_graph.dot"), small.named_parameters())
print(f"\nDOT text of the small MLP's graph: {dot_path}")
try:
    svg = viz.draw(loss, os.path.join(out_dir, "mlp_graph.svg"), small.named_parameters())
    print(f"SVG: {svg}")
except RuntimeError as e:   # Graphviz not installed: say so, the DOT file is still there
    print(f"no SVG: {e}")
