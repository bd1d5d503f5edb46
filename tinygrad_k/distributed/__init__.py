"""Data-parallel communication with torch.distributed's names, on MPI (mpi4py) or NCCL (CuPy).

Launch one process per rank with an MPI launcher and initialise once::

    mpiexec -n 2 python train.py            # train.py:
    import tinygrad_k.distributed as dist
    dist.init_process_group("mpi")          # rank and size come from the launcher
    dist.all_reduce(t, op=dist.ReduceOp.AVG)

``backend="nccl"`` moves CuPy (cuda) tensors with NCCL; its unique id is broadcast over MPI.
Collectives work in place on Tensors (``all_reduce``, ``broadcast``) or into given Tensors
(``all_gather``, ``reduce_scatter``); ``async_op=True`` returns a ``Work`` to ``wait()`` on.
Every wait is bounded by ``init_process_group(timeout=...)`` (default 30 minutes, as
torch), and an uncaught exception on any rank aborts all ranks with a message naming the
rank, so a failure never leaves the others blocked. Only the default group exists.
"""
from __future__ import annotations

import datetime
import os

import numpy as np

from ._backends import NCCLBackend, MPIBackend, Work, install_abort_hook, launcher_world_size

__all__ = ["ReduceOp", "Work", "init_process_group", "destroy_process_group", "is_initialized",
           "is_available", "is_mpi_available", "is_nccl_available", "get_rank",
           "get_world_size", "get_backend", "barrier", "all_reduce", "broadcast", "all_gather",
           "all_gather_into_tensor", "reduce_scatter", "reduce_scatter_tensor",
           "all_gather_object", "launcher_world_size", "pin_threads", "group", "GroupMember"]

_default_timeout = datetime.timedelta(minutes=30)
_state = {"backend": None, "hook": None}


class ReduceOp:
    """Reductions for ``all_reduce`` / ``reduce_scatter`` (torch's ``ReduceOp``)."""

    class _Op:
        def __init__(self, name):
            self.name = name

        def __repr__(self):
            return f"<ReduceOp.{self.name.upper()}>"

    SUM, AVG, PRODUCT, MAX, MIN = (_Op("sum"), _Op("avg"), _Op("product"), _Op("max"),
                                   _Op("min"))


class GroupMember:
    """``group.WORLD``: the default (and only) group."""
    WORLD = None


group = GroupMember


# -- setup ---------------------------------------------------------------------------------------
def is_available():
    """True: the package is importable (the transports are checked at init)."""
    return True


def is_mpi_available():
    try:
        import mpi4py  # noqa: F401  (not mpi4py.MPI: that would initialise MPI)
    except ImportError:
        return False
    return True


def is_nccl_available():
    try:
        from cupy.cuda import nccl  # noqa: F401
    except Exception:  # no CuPy, or CuPy built without NCCL
        return False
    return True


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1,
                       store=None, group_name="", pg_options=None, device_id=None):
    """Join the default process group (torch's signature).

    ``backend``: "mpi" (default; CPU tensors, any number of machines) or "nccl" (CUDA
    tensors). Rank and world size come from the MPI launcher (``mpiexec -n W``); a plain
    ``python`` run is a world of one. ``world_size``/``rank``, when given, must match the
    launcher's. ``timeout`` (seconds or a ``timedelta``) bounds every wait on a collective.
    ``init_method``/``store`` are accepted and unused: MPI's launcher is the rendezvous.
    """
    if _state["backend"] is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    name = "mpi" if backend is None else str(backend).lower()
    if name == "gloo":
        raise ValueError("init_process_group: backend 'gloo' is not available in tinygrad_k; "
                         "use backend='mpi' for CPU tensors (launched with mpiexec)")
    if name not in ("mpi", "nccl"):
        raise ValueError(f"init_process_group: invalid backend {backend!r}; expected 'mpi' "
                         "(CPU) or 'nccl' (CUDA)")
    seconds = (_default_timeout if timeout is None else
               timeout if isinstance(timeout, datetime.timedelta) else
               datetime.timedelta(seconds=float(timeout))).total_seconds()
    impl = (MPIBackend if name == "mpi" else NCCLBackend)(seconds)
    for what, given, actual in (("world_size", world_size, impl.size), ("rank", rank,
                                                                          impl.rank)):
        if given is not None and int(given) >= 0 and int(given) != actual:
            raise ValueError(f"init_process_group: {what}={given} but the MPI launcher "
                             f"started this process with {what} {actual}")
    _state["backend"] = impl
    if impl.size > 1:
        _state["hook"] = install_abort_hook(impl)
    return None


def destroy_process_group(group=None):
    """Leave the default group (after this, ``is_initialized()`` is False)."""
    import sys

    impl = _backend("destroy_process_group")
    _check_group(group, "destroy_process_group")
    if _state["hook"] is not None:
        sys.excepthook = _state["hook"]
        _state["hook"] = None
    _state["backend"] = None
    impl.destroy()


def is_initialized():
    return _state["backend"] is not None


def _backend(who="distributed"):
    impl = _state["backend"]
    if impl is None:
        raise ValueError(f"{who}: Default process group has not been initialized, please make "
                         "sure to call init_process_group.")
    return impl


def _check_group(group, who):
    if group is not None and group is not GroupMember.WORLD:
        raise ValueError(f"{who}: only the default group (group=None) exists in tinygrad_k; "
                         "new_group is not implemented")


def get_rank(group=None):
    _check_group(group, "get_rank")
    return _backend("get_rank").rank


def get_world_size(group=None):
    _check_group(group, "get_world_size")
    return _backend("get_world_size").size


def get_backend(group=None):
    _check_group(group, "get_backend")
    return _backend("get_backend").name


def pin_threads(num_threads=None):
    """Limit this rank's BLAS and Numba thread pools to its share of the host's cores.

    ``num_threads`` defaults to ``max(1, cores // ranks_on_this_host)`` (ranks per host
    from MPI_LOCALNRANKS / OMPI_COMM_WORLD_LOCAL_SIZE, else the world size), so W ranks on
    one machine do not start W times as many threads as there are cores. Returns the
    number used.
    """
    if num_threads is None:
        local = os.environ.get("MPI_LOCALNRANKS") or os.environ.get(
            "OMPI_COMM_WORLD_LOCAL_SIZE")
        ranks_here = int(local) if local else (get_world_size() if is_initialized()
                                               else launcher_world_size())
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
        num_threads = max(1, cores // max(1, ranks_here))
    num_threads = int(num_threads)
    from threadpoolctl import threadpool_limits

    _state["threadpool_limits"] = threadpool_limits(limits=num_threads)  # kept alive
    try:
        import numba

        numba.set_num_threads(min(num_threads, numba.config.NUMBA_NUM_THREADS))
    except Exception:  # numba's threading layer unavailable: BLAS is limited all the same
        pass
    return num_threads


# -- collectives on Tensors ------------------------------------------------------------------------
def _op_name(op, who):
    if isinstance(op, ReduceOp._Op):
        return op.name
    raise ValueError(f"{who}: op must be a ReduceOp (SUM, AVG, PRODUCT, MAX, MIN), got {op!r}")


def _buffer(tensor, who, impl):
    """The tensor's array as a contiguous buffer, and how to copy results back into it."""
    from ..tensor import Tensor

    if not isinstance(tensor, Tensor):
        raise TypeError(f"{who}: expected a tinygrad_k Tensor, got {type(tensor).__name__}")
    if impl.name == "mpi" and tensor.device != "cpu":
        raise RuntimeError(f"{who}: backend 'mpi' takes cpu tensors, got a tensor on "
                           f"{tensor.device} (use backend='nccl' for cuda tensors)")
    arr = tensor._array
    if arr.flags.c_contiguous:
        return arr, lambda: _mark_modified(tensor)

    buf = arr.copy(order="C")

    def write_back():
        tensor._array[...] = buf
        _mark_modified(tensor)

    return buf, write_back


def _mark_modified(tensor):
    # in-place writes must bump the storage version (issue 11) once the core has it
    for name in ("_bump_version", "bump_version", "_increment_version"):
        fn = getattr(tensor, name, None)
        if callable(fn):
            fn()
            return


def _chain(*fns):
    def run():
        for f in fns:
            if f is not None:
                f()
    return run


def _finish(work, after, async_op):
    prev = work._finish
    work._finish = _chain(prev, after)
    if async_op:
        return work
    work.wait()
    return None


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` over all ranks, in place on every rank (AVG: sum / world size)."""
    _check_group(group, "all_reduce")
    impl = _backend("all_reduce")
    buf, done = _buffer(tensor, "all_reduce", impl)
    return _finish(impl.allreduce(buf, _op_name(op, "all_reduce")), done, async_op)


def broadcast(tensor, src, group=None, async_op=False):
    """Copy rank ``src``'s ``tensor`` into ``tensor`` on every rank."""
    _check_group(group, "broadcast")
    impl = _backend("broadcast")
    if not 0 <= int(src) < impl.size:
        raise ValueError(f"broadcast: src={src} is not a rank of a world of {impl.size}")
    buf, done = _buffer(tensor, "broadcast", impl)
    return _finish(impl.bcast(buf, int(src)), done, async_op)


def _check_list(tensors, like, impl, who, what):
    if not isinstance(tensors, (list, tuple)) or len(tensors) != impl.size:
        n = len(tensors) if isinstance(tensors, (list, tuple)) else type(tensors).__name__
        raise ValueError(f"{who}: {what} must be a list of world_size={impl.size} tensors, "
                         f"got {n}")
    for i, t in enumerate(tensors):
        if tuple(t.shape) != tuple(like.shape) or t.dtype != like.dtype:
            raise ValueError(f"{who}: {what}[{i}] is {t.dtype} {tuple(t.shape)}, expected "
                             f"{like.dtype} {tuple(like.shape)} (as the tensor)")


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """``tensor_list[r]`` receives rank r's ``tensor`` (a list of world_size Tensors shaped
    like ``tensor``)."""
    _check_group(group, "all_gather")
    impl = _backend("all_gather")
    _check_list(tensor_list, tensor, impl, "all_gather", "tensor_list")
    buf, _ = _buffer(tensor, "all_gather", impl)
    out, work = impl.allgather(buf)

    def unpack():
        for r, t in enumerate(tensor_list):
            t._array[...] = out[r]
            _mark_modified(t)

    return _finish(work, unpack, async_op)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
    """``output_tensor`` (world_size * n along dim 0) receives every rank's ``input_tensor``."""
    _check_group(group, "all_gather_into_tensor")
    impl = _backend("all_gather_into_tensor")
    expect = (impl.size * input_tensor.shape[0],) + tuple(input_tensor.shape[1:]) \
        if input_tensor.shape else (impl.size,)
    if tuple(output_tensor.shape) not in (expect, (impl.size,) + tuple(input_tensor.shape)):
        raise ValueError(f"all_gather_into_tensor: output_tensor has shape "
                         f"{tuple(output_tensor.shape)}, expected {expect}")
    buf, _ = _buffer(input_tensor, "all_gather_into_tensor", impl)
    out, work = impl.allgather(buf)

    def unpack():
        output_tensor._array[...] = out.reshape(output_tensor.shape)
        _mark_modified(output_tensor)

    return _finish(work, unpack, async_op)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op=False):
    """``output`` on rank r receives the reduction over ranks of their ``input_list[r]``."""
    _check_group(group, "reduce_scatter")
    impl = _backend("reduce_scatter")
    _check_list(input_list, output, impl, "reduce_scatter", "input_list")
    xp = impl.cp if impl.name == "nccl" else np
    flat = xp.concatenate([xp.ascontiguousarray(t._array).reshape(-1) for t in input_list])
    return _reduce_scatter_flat(impl, flat, output, op, async_op, "reduce_scatter")


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False):
    """As ``reduce_scatter`` with the inputs concatenated along dim 0 in ``input``."""
    _check_group(group, "reduce_scatter_tensor")
    impl = _backend("reduce_scatter_tensor")
    if input._array.size != impl.size * output._array.size:
        raise ValueError(f"reduce_scatter_tensor: input has {input._array.size} elements, "
                         f"expected world_size * output.numel() = "
                         f"{impl.size * output._array.size}")
    flat, _ = _buffer(input, "reduce_scatter_tensor", impl)
    return _reduce_scatter_flat(impl, flat.reshape(-1), output, op, async_op,
                                "reduce_scatter_tensor")


def _reduce_scatter_flat(impl, flat, output, op, async_op, who):
    _buffer(output, who, impl)  # device checks
    out, work = impl.reduce_scatter(flat, _op_name(op, who))

    def unpack():
        output._array[...] = out.reshape(output.shape)
        _mark_modified(output)

    return _finish(work, unpack, async_op)


def barrier(group=None, async_op=False, device_ids=None):
    """Wait until every rank reached the barrier."""
    _check_group(group, "barrier")
    return _finish(_backend("barrier").barrier(), None, async_op)


def all_gather_object(object_list, obj, group=None):
    """``object_list[r]`` receives rank r's picklable ``obj``."""
    _check_group(group, "all_gather_object")
    impl = _backend("all_gather_object")
    if len(object_list) != impl.size:
        raise ValueError(f"all_gather_object: object_list must have world_size={impl.size} "
                         f"entries, got {len(object_list)}")
    object_list[:] = impl.allgather_object(obj)
