"""x @ W.T through tinygrad_k on the GPU with TF32 allowed: error vs float64, time a call
(run from the source tree: PYTHONPATH=. python3 <this file>)."""
import time, numpy as np, tinygrad_k as tk
import cupy
tk.backends.cuda.matmul.allow_tf32 = True
rng = np.random.default_rng(0)
for (m, k, n) in [(4096, 4096, 4096), (256, 784, 120), (1000, 998, 1002)]:
    a = rng.standard_normal((m, k)).astype(np.float32); w = rng.standard_normal((n, k)).astype(np.float32)
    x = tk.tensor(a, device="cuda", requires_grad=True); W = tk.tensor(w, device="cuda", requires_grad=True)
    y = x @ W.T; y.sum().backward()
    ref = a.astype(np.float64) @ w.T.astype(np.float64)
    e = np.linalg.norm(y.cpu().numpy() - ref) / np.linalg.norm(ref)
    gx = np.ones((m, n)) @ w.astype(np.float64)
    eg = np.linalg.norm(x.grad.cpu().numpy() - gx) / np.linalg.norm(gx)
    cupy.cuda.Device().synchronize(); t = time.perf_counter()
    for _ in range(10): y = x @ W.T
    cupy.cuda.Device().synchronize(); dt = (time.perf_counter() - t) / 10
    print(f"tinygrad_k x @ W.T, TF32 allowed, {m}x{k}x{n}: rel err {e:.1e}, grad x {eg:.1e}, {dt*1e3:.3f} ms")
