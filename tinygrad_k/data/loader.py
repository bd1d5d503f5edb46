"""``DataLoader``: batches of a dataset as Tensors, with torch.utils.data's signature.

Batches are formed in NumPy and become Tensors only at the end (DESIGN.md's one-way flow).
Fast path: when the dataset offers ``get_batch(indices)`` and the collate function is the
default, a batch is one fancy-index over whole arrays (microseconds) instead of a Python
loop over samples; both paths give the same batch.

``num_workers > 0`` runs real worker processes (``multiprocessing``): the main process
hands batch ``k`` to worker ``k % num_workers`` and yields the results in sampler order
(a reorder buffer), so the batches are the same as with ``num_workers=0``. A worker's
exception is re-raised in the main process, naming the worker; workers are stopped when
the iterator ends, fails, is garbage-collected or the main process is interrupted, and a
worker whose parent died exits by itself.
"""
from __future__ import annotations

import collections.abc
import copy
import itertools
import multiprocessing as mp
import os
import queue
import random as _pyrandom
import traceback
import warnings
from dataclasses import dataclass

import numpy as np

from .dataset import Dataset, Subset, TensorDataset, fetch_batch
from .sampler import (BatchSampler, RandomSampler, SequentialSampler, _SeededShuffleSampler,
                      _numpy_rng)

# Dataset, Subset, TensorDataset are re-exported here for `from tinygrad_k.data.loader import`
__all__ = ["DataLoader", "Dataset", "Subset", "TensorDataset", "collate", "default_collate",
           "default_convert", "get_worker_info", "WorkerInfo"]

_STATUS_CHECK_S = 1.0  # how often a waiting side checks that the other one is alive


# -- collation -------------------------------------------------------------------------------
def _np_collate(batch):
    """``default_collate`` with NumPy leaves: every leaf that becomes a Tensor is an ndarray.

    Runs in the workers (NumPy pickles cheaply); ``_to_tensors`` turns the leaves into
    Tensors in the main process.
    """
    elem = batch[0]
    if hasattr(elem, "_array") and hasattr(elem, "numpy"):  # a tinygrad_k Tensor
        return np.stack([b.numpy() for b in batch])
    if isinstance(elem, np.ndarray) or (isinstance(elem, np.generic) and
                                        not isinstance(elem, (np.str_, np.bytes_))):
        arr = np.asarray(elem)
        if arr.dtype.kind not in "fiub":
            raise TypeError("default_collate: batch must contain tensors, numpy arrays, "
                            "numbers, dicts or lists; found numpy dtype "
                            f"{arr.dtype}")
        return np.stack([np.asarray(b) for b in batch]) if isinstance(elem, np.ndarray) \
            else np.asarray(batch)
    if isinstance(elem, bool):
        return np.asarray(batch, dtype=bool)
    if isinstance(elem, int):
        return np.asarray(batch, dtype=np.int64)
    if isinstance(elem, float):
        return np.asarray(batch, dtype=np.float64)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        try:
            clone = copy.copy(elem)
            clone.update({k: _np_collate([d[k] for d in batch]) for k in elem})
            return clone
        except TypeError:  # a mapping that cannot be copied or updated
            return {k: _np_collate([d[k] for d in batch]) for k in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(_np_collate(s) for s in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        if any(len(b) != len(elem) for b in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        transposed = list(zip(*batch))
        if isinstance(elem, tuple):
            return [_np_collate(s) for s in transposed]
        try:
            if isinstance(elem, collections.abc.MutableSequence):
                clone = copy.copy(elem)
                for i, s in enumerate(transposed):
                    clone[i] = _np_collate(s)
                return clone
            return type(elem)([_np_collate(s) for s in transposed])
        except TypeError:
            return [_np_collate(s) for s in transposed]
    raise TypeError("default_collate: batch must contain tensors, numpy arrays, numbers, "
                    f"dicts or lists; found {type(elem)}")


def _np_convert(data):
    """``default_convert`` with NumPy leaves (no new batch axis)."""
    if hasattr(data, "_array") and hasattr(data, "numpy"):
        return data.numpy()
    if isinstance(data, np.generic) and not isinstance(data, (np.str_, np.bytes_)):
        return np.asarray(data)
    if isinstance(data, collections.abc.Mapping):
        out = {k: _np_convert(v) for k, v in data.items()}
        try:
            clone = copy.copy(data)
            clone.update(out)
            return clone
        except TypeError:
            return out
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(_np_convert(d) for d in data))
    if isinstance(data, tuple):
        return [_np_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        try:
            return type(data)([_np_convert(d) for d in data])
        except TypeError:
            return [_np_convert(d) for d in data]
    return data


def _to_tensors(data, device="cpu"):
    """Every numeric ndarray leaf of ``data`` -> a Tensor on ``device`` (dtype kept)."""
    from ..tensor import Tensor  # lazy: `tinygrad_k.data` is importable without the engine

    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "fiub":
            return data
        # (np.ascontiguousarray would turn a 0-d sample into shape (1,))
        return Tensor(data if data.flags.c_contiguous else data.copy(), device=device)
    if isinstance(data, collections.abc.Mapping):
        out = {k: _to_tensors(v, device) for k, v in data.items()}
        if type(data) is dict:
            return out
        try:
            clone = copy.copy(data)
            clone.update(out)
            return clone
        except TypeError:
            return out
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(_to_tensors(d, device) for d in data))
    if isinstance(data, list):
        return [_to_tensors(d, device) for d in data]
    if isinstance(data, tuple):
        return tuple(_to_tensors(d, device) for d in data)
    return data


def default_collate(batch):
    """A list of samples -> one batch, as ``torch.utils.data.default_collate``.

    Tensors and NumPy arrays are stacked along a new first axis (dtype kept); Python ints
    become an int64 Tensor, floats float64, bools bool; strings stay a list; a dict (any
    mapping) of samples becomes a dict of batches, a namedtuple a namedtuple, and tuples and
    lists a list of batches (one per position; samples must have equal lengths).
    """
    return _to_tensors(_np_collate(batch))


def default_convert(data):
    """One sample as is, with NumPy arrays and numbers turned into Tensors (the collate of
    ``batch_size=None``, as ``torch.utils.data.default_convert``)."""
    return _to_tensors(_np_convert(data))


def _numeric_fields(arrays):
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind not in "fiub":
            raise TypeError("default_collate: batch must contain tensors, numpy arrays, "
                            f"numbers, dicts or lists; found numpy dtype {a.dtype}")
        out.append(a)
    return out


def collate(arrays, device="cpu"):
    """Stacked NumPy fields (a tuple, as ``fetch_batch`` returns) -> a list of Tensors on
    ``device``, dtype kept (the fast path's result equals ``default_collate``'s)."""
    return _to_tensors(_numeric_fields(arrays), device)


# -- worker side -------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerInfo:
    """What ``get_worker_info()`` returns inside a worker (None in the main process)."""
    id: int
    num_workers: int
    seed: int
    dataset: object


_worker_info = None


def get_worker_info():
    """This worker's ``WorkerInfo`` (id, num_workers, seed, dataset), or None outside one."""
    return _worker_info


class _ExceptionWrapper:
    """An exception raised in a worker, carried to the main process with its traceback."""

    def __init__(self, exc, where):
        self.exc_type = type(exc)
        self.exc_msg = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.where = where

    def reraise(self):
        msg = f"Caught {self.exc_type.__name__} {self.where}.\nOriginal {self.exc_msg}"
        try:
            exc = self.exc_type(msg)
        except Exception:  # the type needs other constructor arguments
            exc = None
        # KeyError would repr-quote the whole traceback: torch avoids it too
        if not isinstance(exc, BaseException) or issubclass(self.exc_type, KeyError):
            raise RuntimeError(msg)
        raise exc


def _seed_worker(seed):
    _pyrandom.seed(seed)
    np.random.seed(seed % 2 ** 32)
    from .. import random as _random

    _random.manual_seed(seed)


def _fetch(dataset, indices, auto_collation, collate_fn, fast):
    """One batch (or, without auto collation, one sample) of ``dataset``, collated with NumPy
    leaves when the collate is the default (``fast``: vectorised ``get_batch``)."""
    if fast:
        return _numeric_fields(fetch_batch(dataset, indices))
    if auto_collation:
        data = [dataset[int(i)] for i in indices]
    else:
        data = dataset[int(indices)]
    if collate_fn is None:
        return _np_collate(data) if auto_collation else _np_convert(data)
    return collate_fn(data)


def _worker_loop(dataset, index_queue, result_queue, auto_collation, collate_fn, fast,
                 seed, worker_init_fn, worker_id, num_workers, parent_pid):
    global _worker_info
    try:
        _seed_worker(seed)
        _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
        init_error = None
        if worker_init_fn is not None:
            try:
                worker_init_fn(worker_id)
            except Exception as exc:  # reported with the first batch this worker owes
                init_error = _ExceptionWrapper(exc, f"in DataLoader worker process {worker_id}")
        while True:
            try:
                task = index_queue.get(timeout=_STATUS_CHECK_S)
            except queue.Empty:
                if os.getppid() != parent_pid:  # the main process died: do not linger
                    return
                continue
            if task is None:
                return
            gen, send_idx, indices = task
            if init_error is not None:
                data = init_error
            else:
                try:
                    data = _fetch(dataset, indices, auto_collation, collate_fn, fast)
                except Exception as exc:
                    data = _ExceptionWrapper(exc, f"in DataLoader worker process {worker_id}")
            result_queue.put((gen, send_idx, data))
            del data
    except KeyboardInterrupt:  # the main process handles Ctrl-C and stops the workers
        pass
    finally:
        # let the queue's feeder thread flush, but never block exit on a dead reader
        result_queue.cancel_join_thread()


def _reduce_tensor(t):
    return _rebuild_tensor, (t.numpy(), t.requires_grad)


def _rebuild_tensor(arr, requires_grad):
    from ..tensor import Tensor

    return Tensor(arr, requires_grad=requires_grad)


_registered = []


def _register_tensor_pickling():
    """Tensors returned by a custom ``collate_fn`` in a worker travel as NumPy arrays."""
    if _registered:
        return
    from multiprocessing.reduction import ForkingPickler

    from ..tensor import Tensor

    ForkingPickler.register(Tensor, _reduce_tensor)
    _registered.append(True)


# -- the loader ----------------------------------------------------------------------------------
class DataLoader:
    """Iterate ``dataset`` in batches, as ``torch.utils.data.DataLoader``.

    ``DataLoader(dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
    num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
    worker_init_fn=None, multiprocessing_context=None, generator=None, *,
    prefetch_factor=None, persistent_workers=False)`` with torch's meanings and errors.

    * order: ``sampler`` (indices) or ``batch_sampler`` (lists of indices); by default
      ``RandomSampler(generator=generator)`` when ``shuffle`` else ``SequentialSampler``.
      ``batch_size=None`` turns batching off (each sample goes through ``default_convert``).
    * ``num_workers``: worker processes, each seeded ``base_seed + worker_id`` (Python,
      NumPy and the framework's generator; ``get_worker_info()`` tells it); ``timeout``
      seconds per batch (0: no limit); ``prefetch_factor`` batches in flight per worker
      (default 2); ``persistent_workers`` keeps them across epochs.
    * ``pin_memory``: accepted; there is no pinned host memory to use without a GPU (a
      warning says so, as torch's does).

    Extensions (keyword only): ``seed=`` makes ``shuffle`` a function of (seed, epoch) only
    (``epoch_permutation``): ``set_epoch(e)`` replays epoch ``e`` and ``iter_from(b)``
    starts it at batch ``b`` (the trainer's exact resume); without ``set_epoch`` each pass
    moves on to the next epoch. ``device=``: where the batches' Tensors live.
    """

    _locked = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset",
               "persistent_workers")

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False, timeout=0,
                 worker_init_fn=None, multiprocessing_context=None, generator=None, *,
                 prefetch_factor=None, persistent_workers=False, seed=None, device="cpu"):
        if not hasattr(dataset, "__len__") or not (hasattr(dataset, "__getitem__")
                                                   or hasattr(dataset, "get_batch")):
            raise TypeError(f"DataLoader: expected a map-style dataset (len and [i]), got "
                            f"{type(dataset).__name__}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to "
                             "disable multiprocessing.")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("prefetch_factor option could only be specified in multiprocessing."
                             "let num_workers > 0 to enable multiprocessing, otherwise set "
                             "prefetch_factor to None.")
        if num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        elif prefetch_factor is not None and prefetch_factor < 0:
            raise ValueError("prefetch_factor option should be non-negative")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, "
                                 "shuffle, sampler, and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None:
            if drop_last:
                raise ValueError("batch_size=None option disables auto-batching and is "
                                 "mutually exclusive with drop_last")
        elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError("batch_size should be a positive integer value, but got "
                             f"batch_size={batch_size!r}")
        if sampler is None:
            if shuffle and seed is not None:
                sampler = _SeededShuffleSampler(dataset, seed)
            elif shuffle:
                sampler = RandomSampler(dataset, generator=generator)
            else:
                sampler = SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, int(batch_size), bool(drop_last))
        self.multiprocessing_context = self._check_context(multiprocessing_context, num_workers)
        if pin_memory:
            warnings.warn("'pin_memory' argument is set as true but no accelerator is found, "
                          "then device pinned memory won't be used.", stacklevel=2)
        self.dataset = dataset
        self.batch_size = None if batch_size is None else int(batch_size)
        self.drop_last = bool(drop_last)
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.num_workers, self.prefetch_factor = num_workers, prefetch_factor
        self.collate_fn, self.pin_memory, self.timeout = collate_fn, bool(pin_memory), timeout
        self.worker_init_fn, self.generator = worker_init_fn, generator
        self.persistent_workers = bool(persistent_workers)
        self.seed, self.device = seed, device
        self.epoch = 0
        self._iterator = None
        self.__initialized = True

    def __setattr__(self, name, value):
        if getattr(self, "_DataLoader__initialized", False) and name in self._locked:
            raise ValueError(f"{name} attribute should not be set after "
                             f"{type(self).__name__} is initialized")
        super().__setattr__(name, value)

    @staticmethod
    def _check_context(ctx, num_workers):
        if ctx is None:
            return None
        if num_workers == 0:
            raise ValueError("multiprocessing_context can only be used with multi-process "
                             f"loading (num_workers > 0), but got num_workers={num_workers}")
        if isinstance(ctx, str):
            methods = mp.get_all_start_methods()
            if ctx not in methods:
                raise ValueError("multiprocessing_context option should specify a valid start "
                                 f"method in {methods!r}, but got "
                                 f"multiprocessing_context={ctx!r}")
            return mp.get_context(ctx)
        if not isinstance(ctx, mp.context.BaseContext):
            raise TypeError("multiprocessing_context option should be a valid context object "
                            "or a string specifying the start method, but got "
                            f"multiprocessing_context={ctx}")
        return ctx

    @property
    def _auto_collation(self):
        return self.batch_sampler is not None

    @property
    def _index_sampler(self):
        return self.batch_sampler if self._auto_collation else self.sampler

    def __len__(self):
        return len(self._index_sampler)

    # -- epochs and resume (extensions) ------------------------------------------------------
    def set_epoch(self, epoch):
        """Use epoch ``epoch``'s order for the next pass: forwarded to a sampler that has
        ``set_epoch`` (the seeded shuffle, ``DistributedSampler``)."""
        if int(epoch) < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(int(epoch))

    def order(self, epoch=None):
        """The sample indices of an epoch (default: the current one) in order, for samplers
        that know it up front."""
        s = self.sampler
        if epoch is not None and hasattr(s, "set_epoch"):
            keep = s.epoch
            s.epoch = int(epoch)
            try:
                return s._order()
            finally:
                s.epoch = keep
        order = s._order() if hasattr(s, "_order") else None
        if order is None:
            raise TypeError(f"DataLoader.order: {type(s).__name__} does not know its order "
                            "up front")
        return order

    def batch_indices(self, epoch=None):
        """The index array of every batch of an epoch (a list of ``len(self)`` arrays)."""
        order, b = self.order(epoch), self.batch_size
        return [order[i * b:(i + 1) * b] for i in range(len(self))]

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, start_batch):
        """Iterate the current epoch from batch ``start_batch`` (to resume mid-epoch)."""
        if not 0 <= int(start_batch) <= len(self):
            raise ValueError(f"DataLoader.iter_from: start_batch must be in [0, {len(self)}], "
                             f"got {start_batch}")
        tasks = self._tasks(int(start_batch))
        if self.num_workers == 0:
            return _SingleProcessIter(self, tasks)
        if self.persistent_workers:
            if self._iterator is None or self._iterator._shutdown:
                self._iterator = _MultiProcessIter(self)
            self._iterator._reset(tasks)
            return self._iterator
        it = _MultiProcessIter(self)
        it._reset(tasks)
        return it

    def _tasks(self, start):
        if self._auto_collation:
            bs = self.batch_sampler
            src = bs._batches() if isinstance(bs, BatchSampler) else iter(bs)
        else:
            src = iter(self.sampler)
        return itertools.islice(src, start, None)

    @property
    def _fast(self):
        return (self.collate_fn is None and self._auto_collation
                and hasattr(self.dataset, "get_batch"))

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, "
                f"batch_size={self.batch_size}, sampler={type(self.sampler).__name__}, "
                f"num_workers={self.num_workers}, drop_last={self.drop_last}, "
                f"device={self.device!r})")


class _SingleProcessIter:
    def __init__(self, loader, tasks):
        self._loader, self._tasks = loader, tasks
        self._fast, self._auto = loader._fast, loader._auto_collation

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._loader)

    def __next__(self):
        indices = next(self._tasks)
        data = _fetch(self._loader.dataset, indices, self._auto, self._loader.collate_fn,
                      self._fast)
        return _to_tensors(data, self._loader.device) if self._loader.collate_fn is None \
            else data


class _MultiProcessIter:
    """Worker processes fed round-robin; results reordered into sampler order."""

    def __init__(self, loader):
        self._loader = loader
        self._shutdown = True  # until the workers are up
        _register_tensor_pickling()
        ctx = loader.multiprocessing_context or mp.get_context()
        n = loader.num_workers
        # one draw from the loader's generator (or the global one) per worker set, as torch
        self._base_seed = int(_numpy_rng(loader.generator, "DataLoader").integers(0, 2 ** 62))
        self._result_queue = ctx.Queue()
        self._index_queues, self._workers = [], []
        try:
            for wid in range(n):
                iq = ctx.Queue()
                iq.cancel_join_thread()
                w = ctx.Process(target=_worker_loop, daemon=True,
                                args=(loader.dataset, iq, self._result_queue,
                                      loader._auto_collation, loader.collate_fn, loader._fast,
                                      self._base_seed + wid, loader.worker_init_fn, wid, n,
                                      os.getpid()))
                w.start()
                self._index_queues.append(iq)
                self._workers.append(w)
        except BaseException:
            self._shutdown = False
            self._shutdown_workers()
            raise
        self._shutdown = False
        self._gen = 0

    @property
    def worker_pids(self):
        return [w.pid for w in self._workers]

    def _reset(self, tasks):
        self._gen += 1  # results of an earlier, abandoned pass are recognised and dropped
        self._tasks = tasks
        self._send_idx = self._rcvd_idx = 0
        self._outstanding = 0
        self._buffer = {}
        self._exhausted = False
        for _ in range(self._loader.prefetch_factor * len(self._workers)):
            self._put()

    def _put(self):
        if self._exhausted:
            return
        try:
            indices = next(self._tasks)
        except StopIteration:
            self._exhausted = True
            return
        self._index_queues[self._send_idx % len(self._workers)].put(
            (self._gen, self._send_idx, indices))
        self._send_idx += 1
        self._outstanding += 1

    def __iter__(self):
        return self

    def __len__(self):
        return len(self._loader)

    def _get(self):
        timeout = self._loader.timeout
        waited = 0.0
        while True:
            step = _STATUS_CHECK_S if not timeout else min(_STATUS_CHECK_S, timeout - waited)
            try:
                return self._result_queue.get(timeout=step)
            except queue.Empty:
                waited += step
                dead = [w for w in self._workers if not w.is_alive()]
                if dead:
                    pids = ", ".join(str(w.pid) for w in dead)
                    codes = ", ".join(str(w.exitcode) for w in dead)
                    self._shutdown_workers()
                    raise RuntimeError(f"DataLoader worker (pid(s) {pids}) exited unexpectedly "
                                       f"(exit code(s) {codes})") from None
                if timeout and waited >= timeout:
                    self._shutdown_workers()
                    raise RuntimeError(f"DataLoader timed out after {timeout} seconds") from None

    def __next__(self):
        if self._shutdown:
            raise StopIteration
        try:
            while True:
                if self._rcvd_idx in self._buffer:
                    data = self._buffer.pop(self._rcvd_idx)
                    break
                if self._outstanding == 0:
                    if not self._loader.persistent_workers:
                        self._shutdown_workers()
                    raise StopIteration
                gen, idx, data = self._get()
                if gen != self._gen:
                    continue
                self._buffer[idx] = data
            self._rcvd_idx += 1
            self._outstanding -= 1
            if isinstance(data, _ExceptionWrapper):
                self._shutdown_workers()
                data.reraise()
            self._put()
        except (KeyboardInterrupt, SystemExit):
            self._shutdown_workers()
            raise
        loader = self._loader
        return _to_tensors(data, loader.device) if loader.collate_fn is None else data

    def _shutdown_workers(self):
        if self._shutdown:
            return
        self._shutdown = True
        for iq in self._index_queues:
            try:
                iq.put(None)
            except Exception:  # a closed queue: the worker is gone already
                pass
        for w in self._workers:
            w.join(timeout=2 * _STATUS_CHECK_S)
            if w.is_alive():
                w.terminate()
                w.join(timeout=_STATUS_CHECK_S)
        for q in (*self._index_queues, self._result_queue):
            q.cancel_join_thread()
            q.close()

    def __del__(self):
        try:
            self._shutdown_workers()
        except Exception:  # interpreter shutdown: modules may be gone
            pass

