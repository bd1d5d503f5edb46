"""The training loop behind ``python -m tinygrad_k train``, in small pieces.

    state = TrainState(model, opt, sched, per_batch, loader, test_set, task="classify",
                       epochs=3, ckpt_path="runs/x/checkpoint.npz")
    fit(state)                      # epochs -> train_epoch -> train_step; evaluate; save

* ``train_step(state, x, y)``: one batch (forward, backward, optimizer and per-batch
  scheduler step), then the batch is counted (``state.step``, ``state.history``).
* ``train_epoch(state)``: the remaining batches of ``state.epoch`` from ``state.step``,
  then the per-epoch scheduler step.
* ``evaluate(model, dataset, task)``: mean loss and accuracy on a dataset.
* ``end_epoch(state)``: evaluate the epoch and append its metrics to ``state.history``.
* ``save_checkpoint(state)`` / ``restore_checkpoint(state, ck)``: the whole run state.

Phase boundaries (callbacks)
----------------------------
``state.callbacks`` is a list of objects with ``on_phase(name, state)`` (or plain
functions ``f(name, state)``). The loop calls each one right AFTER the named phase:

=============  ===========================================================================
name           what has just happened (what ``state`` holds)
=============  ===========================================================================
"data"         a batch was fetched: ``state.x``, ``state.y``
"forward"      the loss was computed: ``state.output``, ``state.loss``
"backward"     gradients are in ``p.grad``
"step"         the optimizer stepped
"sched_step"   the scheduler stepped (per batch for per-batch schedules, else once per
               epoch after the last batch)
"batch_end"    the batch is counted (``state.step``, history, epoch sums): a consistent
               point
"epoch_end"    all batches of ``state.epoch`` are done (per-epoch scheduler step too)
"eval_batch"   one batch of the end-of-epoch evaluation
"eval"         the epoch was evaluated; its metrics are the last entries of history
"save"         a checkpoint was written to ``state.ckpt_path``
=============  ===========================================================================

Tests inject faults there (raise, or send a signal), ``--diagnostics`` reads gradients
at "backward", distributed training reduces them there. A callback ends the run
cleanly with ``state.request_stop()``: the loop stops at the next consistent point and
writes a checkpoint, as on Ctrl-C.

Interruptions
-------------
``fit`` turns SIGINT and SIGTERM into ``request_stop``: the batch in flight finishes (an
evaluation in flight is abandoned), a checkpoint of that consistent point is written and
``fit`` returns 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM). A second
signal aborts at once (KeyboardInterrupt) except inside an optimizer update or a
checkpoint write, which it lets finish first. A KeyboardInterrupt that does arrive in the
middle of a batch (raised by a callback, or an abort) is handled by what it interrupted:
before the optimizer step the batch is rolled back (module buffers such as BatchNorm
statistics and the RNG return to the batch start) and a checkpoint is written; inside
the update (after ``optimizer.step`` began, before the batch is counted) nothing is
written and the previous checkpoint stays the last consistent state.

Exact resume: the checkpoint holds the model, the optimizer and scheduler state, the
framework's RNG state, the metrics so far, the sums of the current epoch (loss, samples,
time) and the position: epoch, batches done, and whether the epoch's training (with its
per-epoch scheduler step) is complete and only its evaluation is owed. The loader's
order depends only on (seed, epoch), so a resumed run replays the remaining batches in
the same order with the same random state and reaches bit-identical weights and metrics.
"""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from . import random as R
from .autograd import is_grad_enabled, no_grad, restore_grad_mode
from .data import DataLoader
from .io import save
from .models import loss_and_score, targets_for

__all__ = ["PHASES", "StopTraining", "TrainState", "new_history", "train_step", "train_epoch", "evaluate",
           "end_epoch", "CHECKPOINT_KEYS", "checkpoint_dict", "save_checkpoint", "restore_checkpoint", "fit",
           "write_metrics"]

PHASES = ("data", "forward", "backward", "step", "sched_step", "batch_end", "epoch_end",
          "eval_batch", "eval", "save")


class StopTraining(Exception):
    """Raised inside the loop at a consistent point once a stop was requested."""


def new_history():
    """Per-step losses, and per-epoch train/test loss, test accuracy, throughput."""
    return {"epoch": [], "train_loss": [], "test_loss": [], "test_accuracy": [],
            "step_loss": [], "images_per_s": []}


@dataclass
class TrainState:
    """Everything the loop reads and changes. ``(epoch, step)`` is the position: ``step``
    batches of epoch ``epoch`` (0-based) are done; ``loss_sum``/``seen``/``train_time``
    accumulate over the batches of the current epoch."""

    model: object
    optimizer: object
    scheduler: object
    sched_per_batch: bool
    loader: DataLoader
    test_set: object
    task: str = "classify"
    epochs: int = 1
    device: str = "cpu"
    ckpt_path: str | None = None
    config: dict = field(default_factory=dict)
    history: dict = field(default_factory=new_history)
    callbacks: list = field(default_factory=list)
    progress: bool = False
    eval_batch_size: int = 256
    epoch: int = 0
    step: int = 0
    epoch_trained: bool = False   # all batches of `epoch` done; its evaluation is owed
    loss_sum: float = 0.0
    seen: int = 0
    train_time: float = 0.0
    # set while a batch is in flight
    x: object = None
    y: object = None
    output: object = None
    loss: object = None
    stop_reason: str | None = None
    stop_signal: int | None = None

    def __post_init__(self):
        self.loss_fn, self.score = loss_and_score(self.task)
        # the RNG state at the last consistent point (a batch boundary)
        self.rng_state = R.get_state()
        self.in_update = False    # between optimizer.step() and the batch being counted
        self.saving = False
        self.finishing = False
        self._buffers_at_batch_start = None
        self._saved_at = None

    def request_stop(self, reason="stop requested"):
        """End the run at the next consistent point, with a checkpoint."""
        if self.stop_reason is None:
            self.stop_reason = reason

    @property
    def position(self):
        return (self.epoch, self.step, self.epoch_trained, len(self.history["step_loss"]))

    def next_epoch(self):
        """Bookkeeping after an epoch's metrics are recorded: move to the next epoch."""
        self.epoch, self.step, self.epoch_trained = self.epoch + 1, 0, False
        self.loss_sum, self.seen, self.train_time = 0.0, 0, 0.0
        self.rng_state = R.get_state()


def emit(state, phase):
    for cb in state.callbacks:
        (cb.on_phase if hasattr(cb, "on_phase") else cb)(phase, state)


def _bar(iterable, total, desc, disable):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency; degrade quietly if removed
        return iterable
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False,
                dynamic_ncols=True, mininterval=0.5)


def _check_stop(state):
    if state.stop_reason:
        # from here the run only saves and leaves: a second signal while the exception
        # unwinds must not turn into a KeyboardInterrupt that escapes fit
        state.finishing = True
        raise StopTraining(state.stop_reason)


def train_step(state, x, y):
    """One batch: loss = loss_fn(model(x), y); backward; optimizer step; per-batch
    scheduler step; then count it. Returns the batch's loss as a float."""
    # forward changes module buffers (BatchNorm statistics): keep them to roll back to
    state._buffers_at_batch_start = [(b, b._array.copy()) for _, b in
                                     state.model.named_buffers()]
    state.x, state.y = x, y
    emit(state, "data")
    state.output = state.model(x)
    state.loss = state.loss_fn(state.output, targets_for(y, state.task))
    emit(state, "forward")
    state.optimizer.zero_grad()
    state.loss.backward()
    emit(state, "backward")
    state.in_update = True
    state.optimizer.step()
    emit(state, "step")
    if state.scheduler is not None and state.sched_per_batch:
        state.scheduler.step()
        emit(state, "sched_step")
    lv = state.loss.item()
    state.step += 1
    state.rng_state = R.get_state()
    state.history["step_loss"].append(lv)
    if not math.isfinite(lv):
        raise RuntimeError(f"loss became {lv} at epoch {state.epoch + 1}, batch {state.step}; "
                           "lower --lr")
    state.seen += len(y)
    state.loss_sum += lv * len(y)
    state.x = state.y = state.output = state.loss = None
    state.in_update, state._buffers_at_batch_start = False, None
    emit(state, "batch_end")
    return lv


def train_epoch(state):
    """The batches of epoch ``state.epoch`` from batch ``state.step`` on, then the
    per-epoch scheduler step."""
    loader = state.loader
    loader.set_epoch(state.epoch)
    state.model.train()
    t0 = time.perf_counter()
    bar = _bar(loader.iter_from(state.step), len(loader) - state.step,
               f"epoch {state.epoch + 1}/{state.epochs}", not state.progress)
    for x, y in bar:
        lv = train_step(state, x.to(state.device), y.to(state.device))
        state.train_time += time.perf_counter() - t0
        t0 = time.perf_counter()
        _check_stop(state)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(refresh=False, loss=f"{lv:.4f}",
                            img_s=f"{state.seen / max(state.train_time, 1e-9):.0f}")
    # the per-epoch scheduler step and the flag change together: a signal waits
    state.in_update = True
    if state.scheduler is not None and not state.sched_per_batch:
        state.scheduler.step()
    state.epoch_trained, state.in_update = True, False
    if state.scheduler is not None and not state.sched_per_batch:
        emit(state, "sched_step")
    emit(state, "epoch_end")


def evaluate(model, dataset, task, device="cpu", batch_size=256, progress=False,
             on_batch=None):
    """Mean loss and accuracy (None for regression) of ``model`` over ``dataset``, in eval
    mode and without gradients. ``on_batch()`` is called after each batch."""
    loss_fn, score = loss_and_score(task)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    grad_mode = is_grad_enabled()
    try:
        with no_grad():
            for x, y in _bar(loader, len(loader), "eval", not progress):
                x, y = x.to(device), y.to(device)
                out = model(x)
                t = targets_for(y, task)
                # weight of a batch: its samples, or what the loss averages over (the
                # characters of a language model) so the mean is exact over the dataset
                w = loss_fn.batch_weight(t) if hasattr(loss_fn, "batch_weight") else len(y)
                total_loss += loss_fn(out, t).item() * w
                if score is not None:
                    correct += score(out, t)
                n += w
                if on_batch is not None:
                    on_batch()
    finally:
        # a KeyboardInterrupt from a signal handler can land as no_grad's __exit__ is
        # entered, before it restores anything: put the grad mode back here too
        restore_grad_mode(grad_mode)
        model.train()
    return total_loss / max(n, 1), (correct / n if score is not None and n else None)


def end_epoch(state):
    """Evaluate epoch ``state.epoch`` on the test set and append its metrics."""
    def on_batch():
        emit(state, "eval_batch")
        _check_stop(state)

    test_loss, test_acc = evaluate(state.model, state.test_set, state.task, state.device,
                                   state.eval_batch_size, on_batch=on_batch)
    h = state.history
    h["epoch"].append(state.epoch + 1)
    h["train_loss"].append(state.loss_sum / max(state.seen, 1))
    h["test_loss"].append(test_loss)
    h["test_accuracy"].append(test_acc)
    h["images_per_s"].append(state.seen / state.train_time if state.train_time > 0 else None)
    state.next_epoch()
    emit(state, "eval")
    return test_loss, test_acc


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "rng", "history", "epoch", "step",
                   "epoch_trained", "epoch_sums", "config")


def checkpoint_dict(state):
    """The run state at its last consistent point as a ``tinygrad_k.save``-able dict."""
    sched = state.scheduler
    return {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "rng": state.rng_state, "history": state.history, "epoch": state.epoch,
            "step": state.step, "epoch_trained": state.epoch_trained,
            "epoch_sums": {"loss_sum": state.loss_sum, "seen": state.seen,
                           "train_time": state.train_time},
            "config": state.config}


def save_checkpoint(state, path=None):
    """Write the checkpoint (atomically: the previous one stays until the new one is
    complete). Signals arriving meanwhile wait until it is written. Without a path (the
    ranks other than 0 of a distributed run) nothing is written."""
    path = path or state.ckpt_path
    if path is None:
        emit(state, "save")
        return None
    state.saving = True
    try:
        path = save(checkpoint_dict(state), path)
        state._saved_at = state.position
    finally:
        state.saving = False
    emit(state, "save")
    return path


def restore_checkpoint(state, ck):
    """Load a checkpoint dict (from ``tinygrad_k.load``) into ``state``."""
    state.model.load_state_dict(ck["model"])
    state.optimizer.load_state_dict(ck["optimizer"])
    if state.scheduler is not None and ck.get("scheduler") is not None:
        state.scheduler.load_state_dict(ck["scheduler"])
    R.set_state(ck["rng"])
    state.rng_state = R.get_state()
    state.history = ck["history"]
    state.epoch, state.step = int(ck["epoch"]), int(ck["step"])
    state.epoch_trained = bool(ck.get("epoch_trained", False))
    sums = ck.get("epoch_sums") or {}
    state.loss_sum = float(sums.get("loss_sum", 0.0))
    state.seen = int(sums.get("seen", 0))
    state.train_time = float(sums.get("train_time", 0.0))
    state._saved_at = state.position


def _log_epoch(state):
    h = state.history
    acc = f"test accuracy {h['test_accuracy'][-1]:.4f}" if h["test_accuracy"][-1] is not None \
        else ""
    ips = h["images_per_s"][-1]
    print(f"epoch {h['epoch'][-1]}/{state.epochs}: train loss {h['train_loss'][-1]:.4f}  "
          f"test loss {h['test_loss'][-1]:.4f}  {acc}  ({ips or 0:.0f} samples/s)", flush=True)


class _Signals:
    """While active (main thread only): SIGINT/SIGTERM request a stop; a second one aborts
    with KeyboardInterrupt unless an update or a checkpoint write is in progress."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, state):
        self.state, self.previous = state, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self.previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)
        return False

    def _handle(self, signum, frame):
        st = self.state
        if st.finishing:  # already writing the final checkpoint and leaving
            return
        if st.stop_reason is None:
            st.stop_signal = signum
            st.request_stop(signal.Signals(signum).name)
        elif not (st.saving or st.in_update):
            st.finishing = True  # a third signal must not interrupt the clean-up
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")


def _roll_back_batch(state):
    """Undo what a batch interrupted before its optimizer step changed."""
    for b, arr in state._buffers_at_batch_start or ():
        b._array[...] = arr
    state._buffers_at_batch_start = None
    R.set_state(state.rng_state)
    state.x = state.y = state.output = state.loss = None


def fit(state, handle_signals=True):
    """Train from the state's position to ``state.epochs``: each epoch trains, evaluates
    and writes a checkpoint. Returns 0, or 128 + signal number (130 on Ctrl-C or a
    KeyboardInterrupt) when interrupted; see the module docstring for what is saved."""
    grad_mode = is_grad_enabled()
    with (_Signals(state) if handle_signals else _Nothing()), _RestoreGradMode(grad_mode):
        try:
            while state.epoch < state.epochs:
                if not state.epoch_trained:
                    train_epoch(state)
                _check_stop(state)
                end_epoch(state)
                _log_epoch(state)
                save_checkpoint(state)
                _check_stop(state)
            state.finishing = True  # done: a signal from here on has nothing to stop
        except StopTraining:
            return _interrupted(state, state.stop_signal or signal.SIGINT)
        except KeyboardInterrupt:
            if state.in_update:
                print(f"\ninterrupted inside an optimizer update: no checkpoint written; "
                      f"{state.ckpt_path} (if present) holds the last consistent state",
                      flush=True)
                return 130
            if state._buffers_at_batch_start is not None:
                _roll_back_batch(state)
            return _interrupted(state, signal.SIGINT)
    return 0


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _RestoreGradMode(_Nothing):
    """On the way out of fit, the grad mode it started with, whatever an interrupted
    ``no_grad`` (a hook's, the evaluation's) left behind."""

    def __init__(self, mode):
        self.mode = mode

    def __exit__(self, *exc):
        restore_grad_mode(self.mode)
        return False


def _interrupted(state, signum):
    state.finishing = True
    if state._saved_at != state.position:
        save_checkpoint(state)
    print(f"\ninterrupted ({signal.Signals(signum).name}): checkpoint written to "
          f"{state.ckpt_path} at epoch {state.epoch + 1}, batch {state.step}; continue with "
          f"--resume {state.ckpt_path}", flush=True)
    return 128 + int(signum)


def write_metrics(out_dir, config, history):
    """``out_dir/metrics.json``: {"config": ..., "history": ...}, written atomically."""
    path = os.path.join(out_dir, "metrics.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"config": config, "history": history}, f, indent=1)
    os.replace(tmp, path)
    return path
