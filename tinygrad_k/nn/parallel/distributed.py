"""``DistributedDataParallel``: the same model on every rank, gradients averaged in buckets
that are reduced while backward is still running (torch.nn.parallel's design, on MPI/NCCL).

At wrap time every rank checks that all ranks hold the same parameters (names, shapes,
dtypes, in the same order) and copies rank 0's parameters and buffers. Parameters are
grouped, in reverse registration order (roughly the order backward produces their
gradients), into buckets of at most ``bucket_cap_mb`` (the first one at most 1 MiB, as
torch). A post-accumulate-grad hook on each parameter counts it ready; when a bucket's last gradient
arrives, its gradients are packed into one flat buffer and a non-blocking all-reduce
(``MPI_Iallreduce`` / an NCCL call on a side stream) starts, while backward goes on with
the layers below. When every bucket is launched, the reductions are waited for and each
``.grad`` becomes the average over ranks: ``g = (1/W) sum_r g_r``.

So with loss = mean over the local batch of B/W samples on each of W ranks, every rank
ends with the gradient of the mean over the global batch of B samples: W ranks at B/W take
the same optimizer steps as one process at B (up to float32 summation order).
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from ... import distributed as dist
from ...autograd import is_grad_enabled
from ...tensor import Tensor
from .. import Module

__all__ = ["DistributedDataParallel"]

_FIRST_BUCKET_BYTES = 1024 * 1024  # torch's dist._DEFAULT_FIRST_BUCKET_BYTES


class _Bucket:
    def __init__(self, index, params, xp):
        self.index, self.params = index, params          # [(position, name, Parameter)]
        sizes = [p._array.size for _, _, p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.buffer = xp.zeros(self.offsets[-1], dtype=params[0][2].dtype)
        self.ready = 0
        self.work = None


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training over the default process group.

    torch's signature: ``DistributedDataParallel(module, device_ids=None,
    output_device=None, dim=0, broadcast_buffers=True, process_group=None,
    bucket_cap_mb=None, find_unused_parameters=False, check_reduction=False,
    gradient_as_bucket_view=False, static_graph=False)``.

    * ``forward`` calls ``module``; with ``broadcast_buffers`` rank 0's buffers (BatchNorm
      running statistics) are copied to every rank first. BatchNorm's batch statistics stay
      per rank (each normalises with its own B/W samples), as torch without SyncBatchNorm.
    * ``no_sync()``: backward passes inside only accumulate local gradients; the first
      backward after it reduces the accumulated sum (gradient accumulation).
    * ``find_unused_parameters=True``: after forward, parameters the output does not depend
      on count as ready with a zero gradient; a parameter no rank used keeps ``grad=None``.
      Without it, a parameter that gets no gradient stalls its bucket, and the next forward
      raises torch's "Expected to have finished reduction" error naming it.
    * ``comm_stats``: seconds spent launching and waiting for the reductions, and bytes
      reduced, since the last ``reset_comm_stats()`` (for the benchmarks).
    """

    def __init__(self, module, device_ids=None, output_device=None, dim=0,
                 broadcast_buffers=True, process_group=None, bucket_cap_mb=None,
                 find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False):
        super().__init__()
        if not dist.is_initialized():
            raise ValueError("DistributedDataParallel: Default process group has not been "
                             "initialized, please make sure to call init_process_group.")
        if process_group is not None:
            raise ValueError("DistributedDataParallel: only the default group "
                             "(process_group=None) exists in tinygrad_k")
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: expected an nn.Module, got "
                            f"{type(module).__name__}")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.require_backward_grad_sync = True
        self.device_ids, self.output_device, self.dim = device_ids, output_device, dim
        self.bucket_bytes_cap = int((25 if bucket_cap_mb is None else bucket_cap_mb) * 2 ** 20)
        self._backend = dist._backend("DistributedDataParallel")
        self.world_size = self._backend.size
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise RuntimeError("DistributedDataParallel is not needed when a module doesn't "
                               "have any parameter that requires a gradient.")
        self._named = named
        self._verify_same_model(named)
        self._sync_module_states()
        self._buckets = self._build_buckets(named)
        self._where = {}
        for b in self._buckets:
            for slot, (_, _, p) in enumerate(b.params):
                self._where[id(p)] = (b, slot)
        self._hooks = [p.register_post_accumulate_grad_hook(self._on_grad_ready)
                       for _, p in named]
        self._armed = False           # this backward must reduce (set by forward)
        self._started = False         # a gradient of this backward has arrived
        self._seen = set()
        self._unused = set()
        self.reset_comm_stats()

    # -- wrap time ---------------------------------------------------------------------------
    def _verify_same_model(self, named):
        mine = [(n, tuple(p.shape), str(p.dtype)) for n, p in named]
        everyone = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        ref = everyone[0]
        for r, theirs in enumerate(everyone):
            if theirs == ref:
                continue
            if len(theirs) != len(ref):
                detail = (f"rank {r} has {len(theirs)} parameters that require grad, rank 0 "
                          f"has {len(ref)}")
            else:
                i = next(k for k, (a, b) in enumerate(zip(theirs, ref)) if a != b)
                detail = (f"parameter #{i}: rank {r} has {theirs[i][0]} {theirs[i][1]} "
                          f"{theirs[i][2]}, rank 0 has {ref[i][0]} {ref[i][1]} {ref[i][2]}")
            raise RuntimeError("DistributedDataParallel: DDP expects the same model on every "
                               f"rank (same parameters, shapes and order), but {detail}")

    def _sync_module_states(self):
        if self.world_size == 1:
            return
        tensors = [p for _, p in self.module.named_parameters()] + \
            [b for _, b in self.module.named_buffers()]
        for t in tensors:
            dist.broadcast(t, src=0)

    def _build_buckets(self, named):
        xp = named[0][1].backend.xp
        order = list(enumerate(named))[::-1]
        # the first bucket (the last layers, whose gradients come first) is small so its
        # reduction starts early; min() lets a small bucket_cap_mb split tiny models too
        buckets, current, size = [], [], 0
        cap = min(_FIRST_BUCKET_BYTES, self.bucket_bytes_cap)
        for pos, (name, p) in order:
            nbytes = p._array.size * p._array.itemsize
            if current and (size + nbytes > cap or p.dtype != current[0][2].dtype):
                buckets.append(_Bucket(len(buckets), current, xp))
                current, size, cap = [], 0, self.bucket_bytes_cap
            current.append((pos, name, p))
            size += nbytes
        if current:
            buckets.append(_Bucket(len(buckets), current, xp))
        return buckets

    # -- forward ---------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        self._pre_forward()
        out = self.module(*args, **kwargs)
        self._post_forward(out)
        return out

    def _pre_forward(self):
        """Before the wrapped module's forward: check the previous backward finished its
        reduction; copy rank 0's buffers to every rank (``broadcast_buffers``)."""
        if self._armed and self._started:
            missing = [n for n, p in self._named if id(p) not in self._seen
                       and id(p) not in self._unused]
            self._armed = False
            raise RuntimeError(
                "Expected to have finished reduction in the prior iteration before starting a "
                "new one. This error indicates that your module has parameters that were not "
                "used in producing loss. You can enable unused parameter detection by passing "
                "the keyword argument `find_unused_parameters=True` to "
                "`tinygrad_k.nn.parallel.DistributedDataParallel`, and by making sure all "
                "`forward` function outputs participate in calculating loss. Parameters which "
                f"did not receive grad on rank {self._backend.rank}: {', '.join(missing)}")
        if self.broadcast_buffers and self.world_size > 1:
            for _, b in self.module.named_buffers():
                dist.broadcast(b, src=0)

    def _post_forward(self, out):
        """After it: arm the reduction of the coming backward (unless grad is off or inside
        ``no_sync``); with ``find_unused_parameters``, parameters ``out`` does not depend on
        are ready at once. The trainer calls these two around its own forward, so its model
        (checkpoints, evaluation) stays the plain module."""
        self._armed = is_grad_enabled() and self.require_backward_grad_sync
        self._started = False
        self._seen, self._unused = set(), set()
        for b in self._buckets:
            b.ready, b.work = 0, None
        if self._armed and self.find_unused_parameters:
            reachable = _reachable_leaves(out)
            for _, p in self._named:
                if id(p) not in reachable:
                    self._unused.add(id(p))
                    self._mark_ready(p, have_grad=False)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes in this context accumulate local gradients without reducing."""
        prev = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = prev

    # -- backward --------------------------------------------------------------------------
    def _on_grad_ready(self, p):
        if not self._armed or id(p) in self._seen:
            return
        self._started = True
        self._seen.add(id(p))
        self._unused.discard(id(p))
        self._mark_ready(p, have_grad=True)

    def _mark_ready(self, p, have_grad):
        bucket, _ = self._where[id(p)]
        bucket.ready += 1
        for b in self._buckets:  # MPI progresses only inside MPI calls: give it a turn
            if b.work is not None:
                b.work.is_completed()
        if bucket.ready == len(bucket.params):
            self._launch(bucket)
            if all(b.work is not None for b in self._buckets):
                self._finalize()

    def _launch(self, bucket):
        t0 = time.perf_counter()
        buf = bucket.buffer
        for slot, (_, _, p) in enumerate(bucket.params):
            a, z = bucket.offsets[slot], bucket.offsets[slot + 1]
            if p.grad is None or id(p) in self._unused and id(p) not in self._seen:
                buf[a:z] = 0
            else:
                buf[a:z] = p.grad._array.reshape(-1)
        bucket.work = self._backend.allreduce(buf, "sum")
        self.comm_stats["launch_s"] += time.perf_counter() - t0
        self.comm_stats["bytes"] += buf.size * buf.itemsize
        self.comm_stats["buckets"] += 1

    def _finalize(self):
        t0 = time.perf_counter()
        for b in self._buckets:
            b.work.wait()
        self.comm_stats["wait_s"] += time.perf_counter() - t0
        used_anywhere = None
        if self.find_unused_parameters:
            used = np.array([0 if id(p) in self._unused else 1 for _, p in self._named],
                            dtype=np.int32)
            self._backend_mpi().allreduce(used, "max").wait()
            used_anywhere = {id(p): bool(u) for (_, p), u in zip(self._named, used)}
        scale = 1.0 / self.world_size
        for b in self._buckets:
            for slot, (_, _, p) in enumerate(b.params):
                if used_anywhere is not None and not used_anywhere[id(p)]:
                    continue  # no rank used it: its grad stays as it was (None), as torch
                avg = b.buffer[b.offsets[slot]:b.offsets[slot + 1]].reshape(p.shape) * scale
                avg = avg.astype(p.dtype, copy=False)
                if p.grad is None:
                    p.grad = Tensor._wrap(avg, p.backend, False)
                else:
                    p.grad._array[...] = avg
        self._armed = False
        self._started = False
        self.comm_stats["steps"] += 1

    def _backend_mpi(self):
        return getattr(self._backend, "mpi", self._backend)

    def reset_comm_stats(self):
        self.comm_stats = {"launch_s": 0.0, "wait_s": 0.0, "bytes": 0, "buckets": 0,
                           "steps": 0}

    @property
    def bucket_sizes(self):
        """The number of parameters in each bucket, in launch order."""
        return [len(b.params) for b in self._buckets]

    def extra_repr(self):
        return (f"world_size={self.world_size}, buckets={len(self._buckets)}, "
                f"find_unused_parameters={self.find_unused_parameters}")


def _reachable_leaves(out):
    """ids of the leaf Tensors the outputs ``out`` (any nesting) depend on."""
    stack, seen, leaves = [], set(), set()

    def collect(x):
        if isinstance(x, Tensor):
            stack.append(x)
        elif isinstance(x, (list, tuple)):
            for v in x:
                collect(v)
        elif isinstance(x, dict):
            for v in x.values():
                collect(v)

    collect(out)
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t._ctx is None:
            leaves.add(id(t))
        else:
            stack.extend(t._ctx.parents)
    return leaves
