"""tinygrad_k.distributed under a real MPI launcher (``mpiexec -n 2``, mpich from PyPI): the
collectives' results on every rank, their errors, the abort of every rank when one fails,
timeouts instead of hangs; DistributedDataParallel's exactness against one process.

Each case writes a small script and runs it with ``mpiexec -n W``; a rank reports by
printing one JSON line tagged with its rank."""
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


pytestmark = pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec (pip install mpich)")

HEADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tinygrad_k as tk
    import tinygrad_k.distributed as dist

    def report(**kw):
        print("REPORT", json.dumps(dict(rank=dist.get_rank(), **kw)), flush=True)
""")


def run_mpi(tmp_path, body, n=2, timeout=120, check=True, args=()):
    script = tmp_path / "rank_script.py"
    script.write_text(HEADER + textwrap.dedent(body))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.run([_mpiexec(), "-n", str(n), sys.executable, str(script), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"mpiexec failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    reports = {}
    for line in proc.stdout.splitlines():
        if line.startswith("REPORT "):
            rec = json.loads(line[len("REPORT "):])
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
        print("REPORT", json.dumps(dict(rank=r, **out)), flush=True)
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
            print("REPORT", json.dumps(dict(rank=0, ok=True, size=dist.get_world_size())))
        except RuntimeError as exc:
            print("REPORT", json.dumps(dict(rank=0, ok=False, msg=str(exc))))
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
