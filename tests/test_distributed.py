"""tinygrad_k.distributed under a real MPI launcher (``mpiexec -n 2``, mpich from PyPI): the
collectives' results on every rank, their errors, the abort of every rank when one fails,
timeouts instead of hangs; DistributedDataParallel's exactness against one process.

Each case writes a small script and runs it with ``mpiexec -n W``; a rank reports by
appending JSON lines to its own file (the ranks' stdout is interleaved by the launcher)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("mpi4py")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


# Open MPI's mpiexec refuses to start as root unless told twice (the GPU image runs tests as
# root and its mpiexec is Open MPI's); mpich ignores both names.
_LAUNCHER_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}

pytestmark = pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec (pip install mpich)")

HEADER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import tinygrad_k as tk
    import tinygrad_k.distributed as dist

    def report(rank=None, **kw):
        rank = dist.get_rank() if rank is None else rank
        with open(os.path.join(os.environ["TK_REPORT_DIR"], f"{rank}.jsonl"), "a") as f:
            f.write(json.dumps(dict(rank=rank, **kw)) + "\\n")
""")


def run_mpi(tmp_path, body, n=2, timeout=120, check=True, args=()):
    script = tmp_path / "rank_script.py"
    script.write_text(HEADER + textwrap.dedent(body))
    reports_dir = tmp_path / "reports"
    reports_dir.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", TK_REPORT_DIR=str(reports_dir),
               **_LAUNCHER_ENV)
    proc = subprocess.run([_mpiexec(), "-n", str(n), sys.executable, str(script), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"mpiexec failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    reports = {}
    for path in sorted(reports_dir.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            reports.setdefault(rec["rank"], []).append(rec)
    return proc, reports


def test_collectives_on_two_ranks(tmp_path):
    _, rep = run_mpi(tmp_path, """
        dist.init_process_group("mpi", timeout=60)
        r, w = dist.get_rank(), dist.get_world_size()
        out = {"w": w, "backend": dist.get_backend(), "init": dist.is_initialized()}
        for name in ("SUM", "AVG", "MAX", "MIN"):
            t = tk.tensor([[1.0, -2.0], [3.0, 4.0]]) * (r + 1)
            work = dist.all_reduce(t, op=getattr(dist.ReduceOp, name), async_op=(r == 0))
            if work is not None:
                assert work.wait() and work.is_completed()
            out[name] = t.numpy().tolist()
        ti = tk.tensor([r + 1, 10]).long()
        dist.all_reduce(ti)
        out["int"] = ti.numpy().tolist()
        nc = tk.tensor(np.arange(6.0).reshape(2, 3) * (r + 1)).transpose(0, 1)
        dist.all_reduce(nc)                        # a non-contiguous view: written back
        out["noncontig"] = nc.numpy().tolist()
        b = tk.tensor([float(r + 5)] * 3)
        dist.broadcast(b, src=1)
        out["bcast"] = b.numpy().tolist()
        lst = [tk.zeros(2) for _ in range(w)]
        dist.all_gather(lst, tk.tensor([r, r + 0.5]))
        out["gather"] = [x.numpy().tolist() for x in lst]
        big = tk.zeros(4)
        dist.all_gather_into_tensor(big, tk.tensor([r, r + 0.5]))
        out["gather_t"] = big.numpy().tolist()
        rs = tk.zeros(2)
        dist.reduce_scatter(rs, [tk.tensor([1.0, 2.0]) * (r + 1), tk.tensor([3.0, 4.0]) * (r + 1)])
        out["rs"] = rs.numpy().tolist()
        rst = tk.zeros(2)
        dist.reduce_scatter_tensor(rst, tk.tensor([1.0, 2.0, 3.0, 4.0]) * (r + 1),
                                   op=dist.ReduceOp.AVG)
        out["rs_t"] = rst.numpy().tolist()
        objs = [None, None]
        dist.all_gather_object(objs, {"rank": r})
        out["objs"] = objs
        errors = []
        for call in (lambda: dist.all_gather([tk.zeros(2)], tk.zeros(2)),
                     lambda: dist.broadcast(tk.zeros(1), src=2),
                     lambda: dist.all_reduce(tk.zeros(1), op="sum"),
                     lambda: dist.init_process_group("mpi"),
                     lambda: dist.get_rank(group=object())):
            try:
                call()
            except (ValueError, RuntimeError) as exc:
                errors.append(type(exc).__name__ + ": " + str(exc))
        out["errors"] = errors
        dist.barrier()
        dist.destroy_process_group()
        out["after"] = dist.is_initialized()
        report(rank=r, **out)
    """)
    assert sorted(rep) == [0, 1]
    base = np.array([[1.0, -2.0], [3.0, 4.0]])
    for r in (0, 1):
        o = rep[r][0]
        assert o["w"] == 2 and o["backend"] == "mpi" and o["init"] and not o["after"]
        np.testing.assert_allclose(o["SUM"], base * 3)
        np.testing.assert_allclose(o["AVG"], base * 1.5)
        np.testing.assert_allclose(o["MAX"], np.maximum(base, base * 2))
        np.testing.assert_allclose(o["MIN"], np.minimum(base, base * 2))
        assert o["int"] == [3, 20]
        np.testing.assert_allclose(o["noncontig"], (np.arange(6.0).reshape(2, 3) * 3).T)
        assert o["bcast"] == [6.0] * 3
        assert o["gather"] == [[0, 0.5], [1, 1.5]] and o["gather_t"] == [0, 0.5, 1, 1.5]
        assert o["rs"] == ([3.0, 6.0] if r == 0 else [9.0, 12.0])
        assert o["rs_t"] == ([1.5, 3.0] if r == 0 else [4.5, 6.0])
        assert o["objs"] == [{"rank": 0}, {"rank": 1}]
        msgs = "\n".join(o["errors"])
        assert "world_size=2" in msgs and "src=2" in msgs and "ReduceOp" in msgs
        assert "initialize the default process group twice" in msgs
        assert "only the default group" in msgs


def test_not_initialized_and_bad_backend_errors():
    import tinygrad_k as tk
    import tinygrad_k.distributed as dist

    assert not dist.is_initialized() and dist.is_mpi_available()
    with pytest.raises(ValueError, match="has not been initialized"):
        dist.get_rank()
    with pytest.raises(ValueError, match="has not been initialized"):
        dist.all_reduce(tk.zeros(2))
    with pytest.raises(ValueError, match="'gloo' is not available.*backend='mpi'"):
        dist.init_process_group("gloo")
    with pytest.raises(ValueError, match="invalid backend"):
        dist.init_process_group("tcp")


def test_nccl_backend_without_gpu_says_what_is_missing(tmp_path):
    """The NCCL path imports and fails clearly where there is no CuPy/GPU (world of 1)."""
    _, rep = run_mpi(tmp_path, """
        try:
            dist.init_process_group("nccl", timeout=30)
            report(rank=0, ok=True, size=dist.get_world_size())
        except RuntimeError as exc:
            report(rank=0, ok=False, msg=str(exc))
    """, n=1)
    o = rep[0][0]
    if o["ok"]:
        assert o["size"] == 1
    else:
        assert "nccl" in o["msg"] and ("CuPy" in o["msg"] or "CUDA device" in o["msg"])


def test_a_failing_rank_aborts_every_rank(tmp_path):
    proc, _ = run_mpi(tmp_path, """
        dist.init_process_group("mpi", timeout=300)
        if dist.get_rank() == 1:
            raise ValueError("rank one broke")
        dist.all_reduce(tk.ones(3))          # rank 0 would wait here forever
        print("rank 0 got past the collective", flush=True)
    """, check=False, timeout=60)
    assert proc.returncode != 0
    assert "rank 1 of 2 failed with ValueError: rank one broke; aborting every rank" in \
        proc.stderr
    assert "got past" not in proc.stdout


def test_a_missing_rank_times_out(tmp_path):
    proc, _ = run_mpi(tmp_path, """
        import time
        dist.init_process_group("mpi", timeout=2)
        if dist.get_rank() == 0:
            dist.all_reduce(tk.ones(3))
        else:
            time.sleep(30)
    """, check=False, timeout=60)
    assert proc.returncode != 0
    assert "all_reduce on rank 0 timed out after 2.0 s" in proc.stderr


# -- DistributedDataParallel ------------------------------------------------------------------
DDP_BODY = """
    from tinygrad_k import nn, optim
    from tinygrad_k.nn.parallel import DistributedDataParallel as DDP
    import tinygrad_k.nn.functional as F

    dist.init_process_group("mpi", timeout=60)
    r, W = dist.get_rank(), dist.get_world_size()

    class Net(nn.Module):                        # conv + pool + linear, no BatchNorm
        def __init__(self, extra=False):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc1 = nn.Linear(4 * 4 * 4, 16)
            self.fc2 = nn.Linear(16, 3)
            if extra:
                self.unused = nn.Linear(2, 2)
        def forward(self, x):
            h = F.max_pool2d(self.conv(x).relu(), 2)
            return self.fc2(self.fc1(h.reshape(h.shape[0], -1)).tanh())

    def make(seed, **kw):
        tk.manual_seed(seed)
        return Net(**kw)

    def weights(m):
        return {n: p.numpy().astype(float).tolist() for n, p in m.named_parameters()}

    rng = np.random.default_rng(0)
    B, K = 8, 4
    X = rng.standard_normal((K * B, 1, 8, 8)).astype(np.float32)
    Y = rng.integers(0, 3, K * B)
    mine = slice(r * (B // W), (r + 1) * (B // W))

    # 1. k SGD steps: W ranks at B/W (DDP) vs one process at B; init differs per rank
    model = DDP(make(100 + r), bucket_cap_mb=0.001)      # tiny buckets: several in flight
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for k in range(K):
        xb, yb = X[k * B:(k + 1) * B][mine], Y[k * B:(k + 1) * B][mine]
        opt.zero_grad()
        F.cross_entropy(model(tk.tensor(xb)), tk.tensor(yb)).backward()
        opt.step()
    out = {"ddp": weights(model.module), "buckets": model.bucket_sizes,
           "stats": model.comm_stats}
    if r == 0:
        ref = make(100)
        ropt = optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
        for k in range(K):
            ropt.zero_grad()
            F.cross_entropy(ref(tk.tensor(X[k * B:(k + 1) * B])),
                            tk.tensor(Y[k * B:(k + 1) * B])).backward()
            ropt.step()
        out["single"] = weights(ref)

    # 2. no_sync: two micro-batches accumulated locally, reduced once == one big step
    acc = DDP(make(7))
    with acc.no_sync():
        F.cross_entropy(acc(tk.tensor(X[:B][mine])), tk.tensor(Y[:B][mine])).backward()
    local_after_no_sync = acc.module.fc2.weight.grad.numpy().copy()
    F.cross_entropy(acc(tk.tensor(X[B:2 * B][mine])), tk.tensor(Y[B:2 * B][mine])).backward()
    out["acc"] = {n: p.grad.numpy().astype(float).tolist()
                  for n, p in acc.module.named_parameters()}
    out["local_after_no_sync"] = local_after_no_sync.astype(float).tolist()

    # 3. unused parameters: an error at the next forward without find_unused_parameters,
    #    grad None (unused everywhere) with it
    un = DDP(make(3, extra=True))
    F.cross_entropy(un(tk.tensor(X[:2])), tk.tensor(Y[:2])).backward()
    try:
        un(tk.tensor(X[:2]))
        out["unused_error"] = None
    except RuntimeError as exc:
        out["unused_error"] = str(exc)
    fu = DDP(make(3, extra=True), find_unused_parameters=True)
    for _ in range(2):
        fu.module.zero_grad()
        F.cross_entropy(fu(tk.tensor(X[:2])), tk.tensor(Y[:2])).backward()
    out["fu_unused_grad"] = fu.module.unused.weight.grad is None
    out["fu_fc2"] = fu.module.fc2.weight.grad.numpy().astype(float).tolist()

    # 4. BatchNorm: batch statistics per rank; broadcast_buffers gives rank 0's running
    #    statistics to every rank at each forward
    bn = DDP(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)))
    xs = tk.tensor(rng.standard_normal((4, 4)).astype(np.float32) + 5 * r)
    bn(xs).sum().backward()
    out["bn_after_1"] = bn.module[1].running_mean.numpy().astype(float).tolist()
    bn(xs)
    out["bn_after_2"] = bn.module[1].running_mean.numpy().astype(float).tolist()
    report(**out)

    # 5. ranks that disagree on the model
    try:
        DDP(nn.Linear(3, 2 + r))
    except RuntimeError as exc:
        report(mismatch=str(exc))
"""


def test_ddp_two_ranks_equal_one_process(tmp_path):
    _, rep = run_mpi(tmp_path, DDP_BODY, timeout=300)
    r0, r1 = rep[0][0], rep[1][0]
    # the same weights on both ranks, bit for bit (same averaged gradient, same update)
    assert r0["ddp"] == r1["ddp"]
    assert len(r0["buckets"]) > 1 and r0["stats"]["steps"] == 4
    # and the same as one process at the global batch, up to float32 summation order
    for name, w in r0["single"].items():
        np.testing.assert_allclose(r0["ddp"][name], w, rtol=1e-4, atol=2e-6, err_msg=name)
    assert r0["acc"] == r1["acc"]
    # after no_sync the gradient was only local; the synced step averaged the local sums
    assert r0["local_after_no_sync"] != r1["local_after_no_sync"]
    assert "Expected to have finished reduction in the prior iteration" in r0["unused_error"]
    assert "unused.weight" in r0["unused_error"] and "find_unused_parameters=True" in \
        r0["unused_error"]
    assert r0["fu_unused_grad"] and r1["fu_unused_grad"] and r0["fu_fc2"] == r1["fu_fc2"]
    # per-rank batch statistics: the running means differ after one step; the next forward
    # starts from rank 0's buffers on every rank (then adds its own batch)
    assert r0["bn_after_1"] != r1["bn_after_1"]
    # (momentum 0.1 from zeros: after one step running_mean_r = 0.1 * batch_mean_r)
    m0, m1 = np.array(r0["bn_after_1"]), np.array(r1["bn_after_1"])
    np.testing.assert_allclose(r0["bn_after_2"], 0.9 * m0 + m0, rtol=1e-5)
    np.testing.assert_allclose(r1["bn_after_2"], 0.9 * m0 + m1, rtol=1e-5)
    for r in (0, 1):
        msg = rep[r][1]["mismatch"]
        assert "DDP expects the same model on every rank" in msg and "rank 1 has" in msg


# -- the CLI under the launcher -----------------------------------------------------------------
def _cli(tmp_path, out, *extra, n=None, timeout=300):
    cmd = [sys.executable, "-m", "tinygrad_k", "train", "--model", "lenet5", "--limit-train",
           "64", "--limit-test", "32", "--batch-size", "16", "--scheduler", "none",
           "--no-progress", "--no-plot", "--out", str(tmp_path / out), *extra]
    if n is not None:
        cmd = [_mpiexec(), "-n", str(n)] + cmd
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", **_LAUNCHER_ENV)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _weights(path):
    import tinygrad_k as tk

    ck = tk.load(str(path / "checkpoint.npz"))
    return {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v)
            for k, v in ck["model"].items()}


@pytest.mark.slow
def test_cli_two_ranks_match_one_process_and_resume(tmp_path):
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("Fashion-MNIST not installed")
    _cli(tmp_path, "single", "--epochs", "2")
    two = _cli(tmp_path, "two", "--epochs", "2", n=2)
    # only rank 0 prints; the global batch is split 8 + 8
    assert two.stdout.count("epoch 1/2:") == 1 and "over 2 ranks (8 per rank)" in two.stdout
    single, dist2 = _weights(tmp_path / "single"), _weights(tmp_path / "two")
    for k in single:
        np.testing.assert_allclose(dist2[k], single[k], rtol=1e-4, atol=1e-6, err_msg=k)
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    ref = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert metrics["config"]["world_size"] == 2 and metrics["config"]["batch_size"] == 16
    for key in ("step_loss", "train_loss", "test_loss"):   # global figures, not rank 0's
        np.testing.assert_allclose(metrics["history"][key], ref["history"][key], rtol=1e-4,
                                   err_msg=key)
    # --resume under the launcher continues to the same weights as the straight run
    _cli(tmp_path, "resumed", "--epochs", "1", n=2)
    _cli(tmp_path, "resumed", "--epochs", "2", "--resume",
         str(tmp_path / "resumed" / "checkpoint.npz"), n=2)
    resumed = _weights(tmp_path / "resumed")
    for k in dist2:
        np.testing.assert_array_equal(resumed[k], dist2[k], err_msg=k)
    with pytest.raises(AssertionError, match="must be divisible by the 2 ranks"):
        _cli(tmp_path, "odd", "--epochs", "1", "--batch-size", "15", n=2, timeout=120)


def test_post_accumulate_hooks_fire_during_backward():
    """A leaf's hook runs as soon as its gradient is complete, before the layers below run
    their backward: what lets DDP's bucket reductions overlap the rest of backward."""
    import tinygrad_k as tk
    from tinygrad_k import nn

    tk.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 6), nn.Tanh(),
                          nn.Linear(6, 2))
    events = []
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda t, name=name: events.append(name))
    handle = model[0].bias.register_post_accumulate_grad_hook(lambda t: events.append("x"))
    handle.remove()
    records = []

    class Log(list):
        def append(self, rec):
            events.append(("op", rec["op"], rec["input_shapes"]))
            super().append(rec)

    model(tk.randn(3, 4)).sum().backward(trace=Log(records))
    names = [e for e in events if isinstance(e, str)]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters()) and "x" not in events
    first_layer_op = next(i for i, e in enumerate(events)
                          if isinstance(e, tuple) and (5, 4) in map(tuple, e[2]))
    assert events.index("4.weight") < first_layer_op < events.index("0.weight")
    with pytest.raises(RuntimeError, match="non-leaf"):
        (model[0].weight * 2).register_post_accumulate_grad_hook(print)
