"""Host and GPU time of each launch of the TF32 paths and of a whole call (PYTHONPATH=.)."""
import time, math, cupy, numpy as np
import kernels.cuda_tf32 as T, kernels.cuda_wgmma as W
def host(f, n=500):
    f(); cupy.cuda.runtime.deviceSynchronize(); t = time.perf_counter()
    for _ in range(n): f()
    t1 = time.perf_counter(); cupy.cuda.runtime.deviceSynchronize(); t2 = time.perf_counter()
    return (t1 - t) / n * 1e6, (t2 - t) / n * 1e6
def gpu(f, n=50):
    f(); s, e = cupy.cuda.Event(), cupy.cuda.Event(); cupy.cuda.runtime.deviceSynchronize()
    s.record()
    for _ in range(n): f()
    e.record(); e.synchronize(); return cupy.cuda.get_elapsed_time(s, e) / n * 1e3
for (m, k, n) in [(256, 400, 120), (1024, 1024, 1024)]:
    cfg = W.WGMMA_CONFIG
    A = cupy.random.standard_normal((1, m, k), dtype=np.float32); Bt = cupy.random.standard_normal((1, n, k), dtype=np.float32)
    C = cupy.empty((1, m, n), np.float32)
    fn = W._function(W.source(cfg), "tk_gemm_tf32_wgmma", cfg.smem_bytes)
    tiles_n = math.ceil(n / cfg.bn)
    args = (A, Bt, C, np.int32(m), np.int32(n), np.int32(k), np.int32(tiles_n), np.int32(8))
    g = (math.ceil(m / cfg.bm) * tiles_n, 1)
    wg = lambda: fn(g, (cfg.threads,), args, shared_mem=cfg.smem_bytes)
    pf = W._function(W.PREP_SOURCE, "tk_tf32_prep")
    O = cupy.empty((1, k, m), np.float32)
    pr = lambda: pf((math.ceil(k / 32), math.ceil(m / 32), 1), (32, 8), (A, O, np.int32(m), np.int32(k), np.int32(1), np.int32(1)))
    B = cupy.random.standard_normal((k, n), dtype=np.float32); A2 = A[0]
    pk = T._pipe_kernel(T.PIPE_CONFIG); pc = T.PIPE_CONFIG
    C3 = C
    pipe = lambda: pk((math.ceil(m / pc.bm) * math.ceil(n / pc.bn), 1), (pc.threads,), (A, B[None], C3, np.int32(m), np.int32(n), np.int32(k), np.int32(math.ceil(n / pc.bn)), np.int32(8)), shared_mem=pc.smem_bytes)
    for name, f in [("wgmma kernel launch", wg), ("prep launch", pr), ("mma.sync kernel launch", pipe),
                    ("cupy.empty", lambda: cupy.empty((1, m, n), np.float32)),
                    ("W.matmul", lambda: W.matmul(A2, B)), ("T.matmul mma.sync", lambda: T.matmul(A2, B, config=T.PIPE_CONFIG))]:
        h, hs = host(f)
        print(f"{m}x{k}x{n} {name}: host {h:.1f} us/call, with sync {hs:.1f}, GPU events {gpu(f):.1f} us")
