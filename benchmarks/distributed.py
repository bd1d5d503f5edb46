"""Data-parallel training on the CPU: throughput at 1 and W ranks, and the time per step
spent in communication.

    python -m benchmarks.distributed                      # 1 and 2 ranks, LeNet-5, ~1 minute
    python -m benchmarks.distributed --ranks 1 2 4 --batch 128 --steps 40

Each world size runs in its own ``mpiexec -n W`` job (a framework-level comparison: each
side in its own processes). Every job trains LeNet-5 on Fashion-MNIST-shaped data (random
1x28x28 images, 10 classes: the data do not change the time) with SGD-momentum at the same
GLOBAL batch B, each rank on B/W samples, wrapped in ``DistributedDataParallel``, after
``--warmup`` steps. Each side runs at its own best settings: one process uses every core
(its BLAS and Numba thread pools as they come); W ranks each pin their pools to
cores / W threads, as the CLI does. One process is also run pinned to one thread: on a
loaded machine its multi-threaded pools can be much slower than one thread, which is the
oversubscription that pinning avoids.

Figures per world size (medians over the timed steps, rank 0's clock after a barrier; the
world sizes' jobs take turns ``--repeats`` times and the median job is reported):
* images/s = B / step time;
* comm (ms/step): time inside the reductions that backward could not hide: packing the
  buckets and launching ``MPI_Iallreduce`` plus waiting for the last ones at the end of
  backward (``DistributedDataParallel.comm_stats``). It includes waiting for the slowest
  rank to reach the reduction, so on a busy machine it measures mostly load imbalance;
  the next column is the transport alone;
* allreduce (ms): one blocking ``MPI_Allreduce`` of all the gradients (LeNet-5: 61,706
  float32, 241 KiB), timed alone: the cost without any overlap.

Results go to ``benchmarks/results/<date>-cpu/distributed.{md,json}``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.exists(here):
        return here
    import shutil

    found = shutil.which("mpiexec")
    if found is None:
        raise SystemExit("benchmarks.distributed: no mpiexec; pip install -e '.[mpi]'")
    return found


# -- one rank ---------------------------------------------------------------------------------
def worker(args):
    import numpy as np

    import tinygrad_k as tk
    import tinygrad_k.distributed as dist
    import tinygrad_k.nn.functional as F
    from tinygrad_k import optim
    from tinygrad_k.models import build
    from tinygrad_k.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("mpi", timeout=600)
    rank, world = dist.get_rank(), dist.get_world_size()
    threads = dist.pin_threads(args.threads) if (world > 1 or args.threads) else None
    B = args.batch
    if B % world:
        raise SystemExit(f"--batch {B} must be divisible by {world} ranks")
    b = B // world
    tk.manual_seed(0)
    model = build("lenet5", (1, 28, 28), 10)
    ddp = DDP(model, bucket_cap_mb=args.bucket_cap_mb)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(rank)
    xs = rng.random((args.warmup + args.steps, b, 1, 28, 28), dtype=np.float32)
    ys = rng.integers(0, 10, (args.warmup + args.steps, b))

    def step(i):
        opt.zero_grad()
        F.cross_entropy(ddp(tk.tensor(xs[i])), tk.tensor(ys[i])).backward()
        opt.step()

    for i in range(args.warmup):
        step(i)
    ddp.reset_comm_stats()
    times, comm = [], []
    for i in range(args.warmup, args.warmup + args.steps):
        dist.barrier()
        before = ddp.comm_stats["launch_s"] + ddp.comm_stats["wait_s"]
        t0 = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - t0)
        comm.append(ddp.comm_stats["launch_s"] + ddp.comm_stats["wait_s"] - before)
    # the same gradients reduced in one blocking call, nothing to overlap with
    n = sum(p._array.size for p in model.parameters())
    buf = np.ones(n, np.float32)
    comm_mpi = dist._backend().comm
    from mpi4py import MPI

    ar = []
    for _ in range(args.steps):
        comm_mpi.Barrier()
        t0 = time.perf_counter()
        comm_mpi.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        ar.append(time.perf_counter() - t0)
    med = statistics.median
    if rank == 0:
        print("RESULT " + json.dumps({
            "world_size": world, "global_batch": B, "per_rank_batch": b,
            "threads_per_rank": threads, "step_ms": med(times) * 1e3,
            "images_per_s": B / med(times), "comm_ms": med(comm) * 1e3,
            "allreduce_ms": med(ar) * 1e3, "grad_floats": n,
            "buckets": ddp.bucket_sizes, "steps": args.steps}), flush=True)
    dist.destroy_process_group()


# -- the driver ---------------------------------------------------------------------------------
def run_world(world, args, threads=None):
    cmd = [_mpiexec(), "-n", str(world), sys.executable, "-m", "benchmarks.distributed",
           "--worker", "--batch", str(args.batch), "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--bucket-cap-mb", str(args.bucket_cap_mb)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def table(rows):
    # speed-up against the faster single-process configuration
    base = max((r["images_per_s"] for r in rows if r["world_size"] == 1),
               default=rows[0]["images_per_s"])
    out = ["| ranks | batch per rank | threads per rank | step (ms) | images/s | speed-up | "
           "comm + wait for other ranks (ms/step) | blocking allreduce (ms) | buckets |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['world_size']} | {r['per_rank_batch']} | "
                   f"{r['threads_per_rank'] or 'all'} | {r['step_ms']:.1f} | "
                   f"{r['images_per_s']:.0f} | {r['images_per_s'] / base:.2f} | "
                   f"{r['comm_ms']:.2f} | {r['allreduce_ms']:.2f} | {len(r['buckets'])} |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.distributed",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=128, help="global batch (default 128)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--bucket-cap-mb", type=float, default=0.1,
                   help="DDP bucket size (default 0.1 MiB: LeNet-5's 241 KiB of gradients in "
                        "3 buckets, so reductions start during backward)")
    p.add_argument("--repeats", type=int, default=3,
                   help="jobs per world size, interleaved; the median job is reported")
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    # the world sizes take turns (1, 2, 1, 2, ...) so that a change in the machine's load
    # hits all of them; each keeps its median run
    # one process runs twice: with every core's threads (its default) and with one thread
    # (what a rank gets): on a busy machine a multi-threaded pool can lose to one thread
    configs = [(w, None) for w in args.ranks]
    if 1 in args.ranks:
        configs.insert(args.ranks.index(1) + 1, (1, 1))
    runs = {c: [] for c in configs}
    for _ in range(args.repeats):
        for c in configs:
            runs[c].append(run_world(c[0], args, c[1]))
    rows = []
    for c in configs:
        ordered = sorted(runs[c], key=lambda r: r["step_ms"])
        row = dict(ordered[len(ordered) // 2])
        row["step_ms_runs"] = [r["step_ms"] for r in runs[c]]
        rows.append(row)
    md = table(rows)
    print(md)
    out = args.out or os.path.join(HERE, "results", f"{_dt.date.today().isoformat()}-cpu")
    os.makedirs(out, exist_ok=True)
    info = {"date": _dt.datetime.now().isoformat(timespec="seconds"),
            "machine": platform.platform(), "cpu": platform.processor(),
            "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average": os.getloadavg(),
            "model": "lenet5", "args": {k: v for k, v in vars(args).items() if k != "worker"}}
    with open(os.path.join(out, "distributed.json"), "w") as f:
        json.dump({"info": info, "rows": rows}, f, indent=1)
    with open(os.path.join(out, "distributed.md"), "w") as f:
        f.write(f"# Data-parallel LeNet-5 on the CPU ({info['date']}, {info['cores']} cores)\n\n"
                f"`python -m benchmarks.distributed --ranks {' '.join(map(str, args.ranks))} "
                f"--batch {args.batch} --steps {args.steps}`: global batch {args.batch}, "
                f"medians over the timed steps, median of {args.repeats} interleaved jobs per "
                f"world size; load average at the end {os.getloadavg()[0]:.1f} (other "
                "processes on the machine make these figures noisy).\n\n" + md + "\n")
    print(f"written to {out}/distributed.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
