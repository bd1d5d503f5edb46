"""The two transports behind ``tinygrad_k.distributed``: MPI (mpi4py) and NCCL (CuPy).

Both expose the same small protocol on raw arrays, each call non-blocking and answered by
a ``Work``: ``allreduce(buf, op)`` (in place), ``bcast(buf, root)`` (in place),
``allgather(buf) -> array (W, *buf.shape)``, ``reduce_scatter(buf (W*n,), op) -> (n,)``,
``barrier()``. No message passing of our own: MPI moves host arrays, NCCL device arrays.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

_MPI_HINT = ("tinygrad_k.distributed needs mpi4py and an MPI library: "
             "pip install -e '.[mpi]' (brings mpi4py and the mpich wheel, whose mpiexec "
             "launches the ranks)")


def import_mpi():
    """``mpi4py.MPI`` (importing it initialises MPI), or a clear error saying how to get it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError(f"{_MPI_HINT} ({exc})") from exc
    return MPI


def launcher_world_size():
    """The world size an MPI launcher announced in the environment (1 when not launched).

    Read without importing mpi4py, so a plain ``python -m tinygrad_k train`` never starts
    MPI: MPICH/Hydra set PMI_SIZE, Open MPI OMPI_COMM_WORLD_SIZE, PMIx launchers PMIX_SIZE
    (Slurm's srun SLURM_NTASKS under --mpi).
    """
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE"):
        v = os.environ.get(var)
        if v and v.isdigit():
            return int(v)
    return 1


class Work:
    """A collective in flight (torch's ``Work``): ``wait()`` blocks until it completed
    (``timeout`` seconds at most, then RuntimeError), ``is_completed()`` polls it.
    ``finish`` runs once after completion (unpacking results into the caller's Tensors)."""

    def __init__(self, test, name, timeout, finish=None, rank=0):
        self._test, self._finish, self._name = test, finish, name
        self._timeout, self._rank, self._done = timeout, rank, False

    def is_completed(self):
        if not self._done and self._test():
            self._complete()
        return self._done

    def _complete(self):
        self._done = True
        if self._finish is not None:
            finish, self._finish = self._finish, None
            finish()

    def wait(self, timeout=None):
        if self._done:
            return True
        limit = self._timeout if timeout is None else _seconds(timeout)
        start, pause = time.monotonic(), 0.0
        while not self._test():
            if limit is not None and time.monotonic() - start > limit:
                raise RuntimeError(
                    f"tinygrad_k.distributed: {self._name} on rank {self._rank} timed out "
                    f"after {limit:.1f} s (another rank did not join the collective: it may "
                    "have failed or be running different code)")
            # back off from a busy poll to 1 ms sleeps: the other rank may share this core
            pause = min(1e-3, pause * 2 + 1e-5)
            time.sleep(pause)
        self._complete()
        return True

    def result(self):
        self.wait()
        return None


def _seconds(t):
    return t.total_seconds() if hasattr(t, "total_seconds") else float(t)


class MPIBackend:
    """Collectives on host (NumPy) arrays over an mpi4py communicator."""

    name = "mpi"

    def __init__(self, timeout):
        MPI = import_mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()  # our own context: user MPI traffic cannot mix in
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = timeout
        self._ops = {"sum": MPI.SUM, "avg": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN,
                     "product": MPI.PROD}

    def _work(self, req, name, finish=None):
        return Work(req.Test, name, self.timeout, finish, self.rank)

    def allreduce(self, buf, op):
        req = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self._ops[op])
        finish = (lambda: np.divide(buf, self.size, out=buf, casting="unsafe")) \
            if op == "avg" else None
        return self._work(req, "all_reduce", finish)

    def bcast(self, buf, root):
        return self._work(self.comm.Ibcast(buf, root=root), "broadcast")

    def allgather(self, buf):
        out = np.empty((self.size,) + buf.shape, dtype=buf.dtype)
        work = self._work(self.comm.Iallgather(buf, out), "all_gather")
        return out, work

    def reduce_scatter(self, buf, op):
        n = buf.size // self.size
        out = np.empty(n, dtype=buf.dtype)
        req = self.comm.Ireduce_scatter_block(buf, out, op=self._ops[op])
        finish = (lambda: np.divide(out, self.size, out=out, casting="unsafe")) \
            if op == "avg" else None
        return out, self._work(req, "reduce_scatter", finish)

    def barrier(self):
        return self._work(self.comm.Ibarrier(), "barrier")

    def allgather_object(self, obj):
        return self.comm.allgather(obj)

    def abort(self, code=1):
        self.MPI.COMM_WORLD.Abort(code)

    def destroy(self):
        self.comm.Free()


class NCCLBackend:
    """Collectives on CuPy arrays through ``cupy.cuda.nccl``: rank 0's NCCL unique id is
    broadcast over MPI (the launcher gives rank and size), then every collective is one
    NCCL call on a stream of our own; ``Work.wait`` waits for an event recorded after it.
    Host-side bookkeeping (object gathers, abort) stays on the MPI backend."""

    name = "nccl"

    def __init__(self, timeout):
        self.mpi = MPIBackend(timeout)
        self.rank, self.size, self.timeout = self.mpi.rank, self.mpi.size, timeout
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as exc:
            raise RuntimeError("init_process_group(backend='nccl') needs CuPy with NCCL: "
                               "pip install -e '.[cuda,mpi]' on a machine with a GPU "
                               f"({exc})") from exc
        self.cp, self.nccl = cupy, nccl
        ndev = cupy.cuda.runtime.getDeviceCount()
        if ndev == 0:
            raise RuntimeError("init_process_group(backend='nccl'): no CUDA device visible")
        local = int(os.environ.get("MPI_LOCALRANKID", os.environ.get(
            "OMPI_COMM_WORLD_LOCAL_RANK", self.rank)))
        cupy.cuda.Device(local % ndev).use()  # one GPU per rank on each host
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.mpi.comm.bcast(uid, root=0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._ops = {"sum": nccl.NCCL_SUM, "avg": nccl.NCCL_SUM, "max": nccl.NCCL_MAX,
                     "min": nccl.NCCL_MIN, "product": nccl.NCCL_PROD}

    def _dtype(self, arr):
        n = self.nccl
        table = {np.dtype(np.float32): n.NCCL_FLOAT32, np.dtype(np.float64): n.NCCL_FLOAT64,
                 np.dtype(np.float16): n.NCCL_FLOAT16, np.dtype(np.int32): n.NCCL_INT32,
                 np.dtype(np.int64): n.NCCL_INT64, np.dtype(np.uint8): n.NCCL_UINT8,
                 np.dtype(np.int8): n.NCCL_INT8}
        if arr.dtype not in table:
            raise TypeError(f"nccl backend: unsupported dtype {arr.dtype}")
        return table[arr.dtype]

    def _check(self, arr, who):
        if not isinstance(arr, self.cp.ndarray):
            raise RuntimeError(f"{who}: the nccl backend takes CUDA tensors, got a tensor on "
                               "cpu (move it with .to('cuda') or use backend='mpi')")

    def _enqueue(self, name, launch, finish=None):
        # the collective must see the work already queued on the current stream
        self.stream.wait_event(self.cp.cuda.get_current_stream().record())
        launch(self.stream.ptr)
        event = self.stream.record()
        return Work(lambda: event.done, name, self.timeout, finish, self.rank)

    def allreduce(self, buf, op):
        self._check(buf, "all_reduce")
        finish = (lambda: buf.__itruediv__(self.size)) if op == "avg" else None
        return self._enqueue("all_reduce", lambda s: self.comm.allReduce(
            buf.data.ptr, buf.data.ptr, buf.size, self._dtype(buf), self._ops[op], s), finish)

    def bcast(self, buf, root):
        self._check(buf, "broadcast")
        return self._enqueue("broadcast", lambda s: self.comm.bcast(
            buf.data.ptr, buf.size, self._dtype(buf), root, s))

    def allgather(self, buf):
        self._check(buf, "all_gather")
        out = self.cp.empty((self.size,) + buf.shape, dtype=buf.dtype)
        return out, self._enqueue("all_gather", lambda s: self.comm.allGather(
            buf.data.ptr, out.data.ptr, buf.size, self._dtype(buf), s))

    def reduce_scatter(self, buf, op):
        self._check(buf, "reduce_scatter")
        n = buf.size // self.size
        out = self.cp.empty(n, dtype=buf.dtype)
        finish = (lambda: out.__itruediv__(self.size)) if op == "avg" else None
        return out, self._enqueue("reduce_scatter", lambda s: self.comm.reduceScatter(
            buf.data.ptr, out.data.ptr, n, self._dtype(buf), self._ops[op], s), finish)

    def barrier(self):
        self.cp.cuda.get_current_stream().synchronize()
        return self.mpi.barrier()

    def allgather_object(self, obj):
        return self.mpi.allgather_object(obj)

    def abort(self, code=1):
        try:
            self.comm.abort()
        finally:
            self.mpi.abort(code)

    def destroy(self):
        self.stream.synchronize()
        self.comm.destroy()
        self.mpi.destroy()


def grace_before_abort(seconds=0.25):
    """Give the launcher time to forward what this rank just wrote. MPI_Abort has it kill
    every rank at once, and a line written just before could be lost on the way (seen
    once in a loaded test run: mpiexec exited 2 with an empty stderr)."""
    time.sleep(seconds)


def install_abort_hook(backend):
    """An uncaught exception on any rank aborts every rank (MPI_Abort) after printing which
    rank failed and why, instead of leaving the others blocked in a collective forever."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        previous(exc_type, exc, tb)
        if issubclass(exc_type, KeyboardInterrupt) and backend.size == 1:
            return
        sys.stderr.write(f"tinygrad_k.distributed: rank {backend.rank} of {backend.size} "
                         f"failed with {exc_type.__name__}: {exc}; aborting every rank\n")
        sys.stderr.flush()
        grace_before_abort()
        backend.abort(1)

    sys.excepthook = hook
    return previous
