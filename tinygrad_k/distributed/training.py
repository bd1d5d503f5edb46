"""What ``python -m tinygrad_k train`` does differently under an MPI launcher.

    mpiexec -n 2 python -m tinygrad_k train --model lenet5        # detected from the launcher
    python -m tinygrad_k train --model lenet5 --distributed       # or asked for (world of 1+)

* ``--batch-size`` is the GLOBAL batch B: each of the W ranks trains on B/W samples per step
  (B must be divisible by W); the learning rate is the one for batch B. W ranks then take
  the same steps as one process at batch B (the samples of global step j are positions
  [jB, (j+1)B) of the epoch's (seed, epoch) permutation, split between the ranks by
  ``DistributedSampler``; the last global batch of an epoch is padded with repeated samples
  when the ranks' shares would be unequal, as torch's sampler does).
* The model is wrapped by ``DistributedDataParallel`` through the trainer's phase callbacks
  ("data": before forward, "forward": after it), so the trainer's model, its checkpoints and
  its evaluation stay those of the plain module: a distributed checkpoint resumes or
  evaluates in one process and the other way round.
* Only rank 0 prints, writes checkpoints, metrics and plots; every rank pins its BLAS and
  Numba threads to its share of the cores (``pin_threads``).
* Any rank that fails prints the error and aborts every rank.
"""
from __future__ import annotations

import os
import sys

from . import (destroy_process_group, get_rank, get_world_size, init_process_group,
               is_initialized, launcher_world_size, pin_threads)

__all__ = ["DistributedTraining", "wanted"]


def wanted(args):
    """True when the run is distributed: ``--distributed`` or an MPI launcher's world > 1."""
    return bool(getattr(args, "distributed", False)) or launcher_world_size() > 1


class DistributedTraining:
    """The distributed side of one CLI training run (a trainer callback)."""

    def __init__(self, device="cpu", threads=None):
        if not is_initialized():
            init_process_group("nccl" if str(device).startswith("cuda") else "mpi")
        self.rank, self.world_size = get_rank(), get_world_size()
        self.threads = pin_threads(threads)
        self.ddp = None
        self._stdout = None
        self._before = (0.0, 0)

    @property
    def is_main(self):
        return self.rank == 0

    def quiet_unless_main(self):
        """Ranks other than 0 print nothing to stdout (errors still go to stderr)."""
        if not self.is_main and self._stdout is None:
            self._stdout = sys.stdout
            sys.stdout = open(os.devnull, "w")

    def per_rank_batch(self, global_batch):
        if global_batch % self.world_size:
            raise ValueError(f"--batch-size {global_batch} is the global batch and must be "
                             f"divisible by the {self.world_size} ranks (each trains on "
                             "batch_size / world_size samples per step)")
        return global_batch // self.world_size

    def loader(self, train_set, global_batch, seed):
        """This rank's loader: ``DistributedSampler`` share, batch B/W."""
        from ..data import DataLoader, DistributedSampler

        sampler = DistributedSampler(train_set, self.world_size, self.rank, shuffle=True,
                                     seed=seed)
        return DataLoader(train_set, batch_size=self.per_rank_batch(global_batch),
                          sampler=sampler)

    def wrap(self, model, **ddp_kwargs):
        """Wrap ``model`` in DistributedDataParallel (rank 0's weights everywhere)."""
        from ..nn.parallel import DistributedDataParallel

        self.ddp = DistributedDataParallel(model, **ddp_kwargs)
        return self.ddp

    def on_phase(self, phase, state):
        if self.ddp is None:
            return
        if phase == "data":
            self._before = (state.loss_sum, state.seen)
            self.ddp._pre_forward()
        elif phase == "forward":
            self.ddp._post_forward(state.output)
        elif phase == "batch_end" and self.world_size > 1:
            # the step loss and the epoch's sums become the global batch's, as in one
            # process; kept global at every batch so a checkpoint (written by rank 0, read
            # by every rank on --resume) holds the whole run's figures
            loss0, seen0 = self._before
            n = state.seen - seen0
            total, count = self._sum(state.history["step_loss"][-1] * n, n)
            state.history["step_loss"][-1] = total / max(count, 1)
            state.loss_sum, state.seen = loss0 + total, seen0 + int(round(count))

    def _sum(self, *values):
        import numpy as np

        from . import _backend

        buf = np.array(values, dtype=np.float64)
        _backend().allreduce(buf, "sum").wait()
        return [float(v) for v in buf]

    def fail(self, exc):
        """A rank's error ends every rank: print it, then MPI_Abort."""
        from . import _backend

        sys.stderr.write(f"error on rank {self.rank} of {self.world_size}: {exc}; aborting "
                         "every rank\n")
        sys.stderr.flush()
        if self.world_size > 1:
            from ._backends import grace_before_abort

            grace_before_abort()
            _backend().abort(2)

    def close(self):
        if self._stdout is not None:
            sys.stdout.close()
            sys.stdout, self._stdout = self._stdout, None
        if is_initialized():
            destroy_process_group()
