"""The NCCL path on a real GPU (``pytest -m gpu``): init_process_group("nccl") with the unique
id broadcast over MPI, every collective on CUDA tensors, and DistributedDataParallel on a
cuda model, in a world of one rank (one GPU still runs every NCCL call). Skipped, visibly,
without CuPy, NCCL and a CUDA device."""
import pytest

pytestmark = pytest.mark.gpu

try:
    import cupy as cp
    from cupy.cuda import nccl  # noqa: F401

    HAVE_GPU = cp.cuda.runtime.getDeviceCount() > 0
except Exception:  # ImportError, CuPy without NCCL, or no device
    HAVE_GPU = False

if not HAVE_GPU:
    pytest.skip("needs CuPy with NCCL and a CUDA GPU (run on a GPU machine: pytest -m gpu)",
                allow_module_level=True)

from test_distributed import _mpiexec, run_mpi  # noqa: E402

if _mpiexec() is None:  # the GPU image may have mpi4py without a launcher
    pytest.skip("needs mpiexec next to the interpreter or on PATH (pip install mpich)",
                allow_module_level=True)


def test_nccl_collectives_and_ddp_on_one_gpu(tmp_path):
    _, rep = run_mpi(tmp_path, """
        from tinygrad_k import nn, optim
        from tinygrad_k.nn.parallel import DistributedDataParallel as DDP
        import tinygrad_k.nn.functional as F
        dist.init_process_group("nccl", timeout=120)
        out = {"backend": dist.get_backend(), "w": dist.get_world_size()}
        t = tk.tensor([1.0, 2.0, 3.0], device="cuda")
        work = dist.all_reduce(t, op=dist.ReduceOp.AVG, async_op=True)
        work.wait()
        out["avg"] = t.numpy().tolist()
        dist.broadcast(t, src=0)
        lst = [tk.zeros(3, device="cuda")]
        dist.all_gather(lst, t)
        out["gather"] = lst[0].numpy().tolist()
        rs = tk.zeros(3, device="cuda")
        dist.reduce_scatter(rs, [t])
        out["rs"] = rs.numpy().tolist()
        try:
            dist.all_reduce(tk.ones(2))
        except RuntimeError as exc:
            out["cpu_error"] = str(exc)
        tk.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).to("cuda")
        ref = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).to("cuda")
        ref.load_state_dict(model.state_dict())
        ddp = DDP(model)
        x = tk.tensor(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32),
                      device="cuda")
        y = tk.tensor([0, 1, 2, 0], device="cuda")
        F.cross_entropy(ddp(x), y).backward()
        F.cross_entropy(ref(x), y).backward()
        out["grad_diff"] = max(float(np.abs(a.grad.numpy() - b.grad.numpy()).max())
                               for a, b in zip(model.parameters(), ref.parameters()))
        out["steps"] = ddp.comm_stats["steps"]
        dist.destroy_process_group()
        report(rank=0, **out)
    """, n=1)
    o = rep[0][0]
    assert o["backend"] == "nccl" and o["w"] == 1
    assert o["avg"] == [1.0, 2.0, 3.0] and o["gather"] == [1.0, 2.0, 3.0]
    assert o["rs"] == [1.0, 2.0, 3.0]
    assert "takes CUDA tensors" in o["cpu_error"]
    assert o["grad_diff"] < 1e-6 and o["steps"] == 1
