"""The training loop's pieces, its phase callbacks, and exact resume after an
interruption at any phase (tinygrad_k.trainer)."""
import os
import signal
import threading
import time

import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import data, nn, trainer
from tinygrad_k import random as R
from tinygrad_k.optim.factory import make_optimizer, make_scheduler


class NoisyData(data.Dataset):
    """Batches that draw from the framework RNG while being fetched (as augmentations do)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def get_batch(self, idx):
        noise = R.generator().standard_normal(self.x[idx].shape).astype(np.float32)
        return self.x[idx] + 0.1 * noise, self.y[idx]


def _state(tmp_path, epochs=2, sched="onecycle", callbacks=(), optimizer="sgd"):
    """A small run with everything that can go wrong on resume: BatchNorm buffers,
    dropout and data-time random draws, momentum, a per-batch or per-epoch schedule,
    an uneven last batch."""
    tk.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((46, 1, 4, 4)).astype(np.float32)
    y = (x.reshape(46, -1).sum(1) > 0).astype(np.int64)
    train = NoisyData(x[:30], y[:30])
    test = data.TensorDataset(x[30:], y[30:])
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Dropout(0.2), nn.Linear(8, 2))
    opt = make_optimizer(optimizer, model.parameters(), 0.1)
    loader = data.DataLoader(train, batch_size=8, shuffle=True, seed=0)
    sc, per_batch = make_scheduler(sched, opt, 0.1, epochs, len(loader))
    os.makedirs(tmp_path, exist_ok=True)
    return trainer.TrainState(model, opt, sc, per_batch, loader, test, epochs=epochs,
                              ckpt_path=str(tmp_path / "ck.npz"), callbacks=list(callbacks),
                              eval_batch_size=4)


def _finish(tmp_path, sched, max_runs=10, **kw):
    """Resume from whatever checkpoint is on disk (or start again) until the run ends."""
    for _ in range(max_runs):
        st = _state(tmp_path, sched=sched, **kw)
        if os.path.exists(st.ckpt_path):
            trainer.restore_checkpoint(st, tk.load(st.ckpt_path))
        if trainer.fit(st) == 0:
            return st
    raise AssertionError("the run did not finish")


def _same_run(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k].numpy(), sb[k].numpy(), err_msg=k)
    oa, ob = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert oa["param_groups"] == ob["param_groups"]
    for i in oa["state"]:
        for k, v in oa["state"][i].items():
            np.testing.assert_array_equal(np.asarray(v.numpy() if hasattr(v, "numpy") else v),
                                          np.asarray(ob["state"][i][k].numpy() if hasattr(
                                              ob["state"][i][k], "numpy") else ob["state"][i][k]))
    for k in a.history:
        if k != "images_per_s":  # timing
            assert a.history[k] == b.history[k], k
    assert all(v is not None and v > 0 for v in b.history["images_per_s"])
    assert a.rng_state == b.rng_state


def test_phases_are_called_in_the_documented_order(tmp_path):
    seen = []
    state = _state(tmp_path, epochs=1, callbacks=[lambda name, st: seen.append(name)])
    assert trainer.fit(state) == 0
    batch = ["data", "forward", "backward", "step", "sched_step", "batch_end"]
    assert seen == batch * 4 + ["epoch_end"] + ["eval_batch"] * 4 + ["eval", "save"]
    assert set(seen) == set(trainer.PHASES)
    assert len(state.history["step_loss"]) == 4 and state.history["epoch"] == [1]


def test_callback_objects_see_the_batch(tmp_path):
    class Grads:
        def __init__(self):
            self.norms = []

        def on_phase(self, name, st):
            if name == "forward":
                assert st.x.shape[1:] == (1, 4, 4) and st.loss.shape == ()
            if name == "backward":
                self.norms.append(sum(float((p.grad.numpy() ** 2).sum())
                                      for p in st.model.parameters()))

    g = Grads()
    assert trainer.fit(_state(tmp_path, epochs=1, callbacks=[g])) == 0
    assert len(g.norms) == 4 and all(n > 0 for n in g.norms)


def test_request_stop_checkpoints_and_resume_is_exact(tmp_path):
    ref = _state(tmp_path / "ref")
    assert trainer.fit(ref) == 0

    def stop_after_5(name, st):
        if name == "batch_end" and st.epoch * 4 + st.step == 5:
            st.request_stop("test")

    st = _state(tmp_path / "run", callbacks=[stop_after_5])
    assert trainer.fit(st) == 130
    ck = tk.load(st.ckpt_path)
    assert (ck["epoch"], ck["step"]) == (1, 1)
    _same_run(ref, _finish(tmp_path / "run", "onecycle"))


class FaultAt:
    """At the n-th time phase ``phase`` is reached: send ``signal`` to this process (it
    lands right there: Python runs the handler before the next bytecode) or raise
    KeyboardInterrupt."""

    def __init__(self, phase, n, how):
        self.phase, self.n, self.how, self.count, self.fired = phase, n, how, 0, False

    def __call__(self, name, st):
        if name != self.phase or self.fired:
            return
        self.count += 1
        if self.count < self.n:
            return
        self.fired = True
        if self.how == "raise":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM if self.how == "sigterm" else signal.SIGINT)
        if self.how == "double":  # a second Ctrl-C right after the first
            os.kill(os.getpid(), signal.SIGINT)


# the n-th occurrence of each phase that falls in the second epoch (4 batches per epoch,
# 4 eval batches; per-epoch schedules step once per epoch)
SECOND_EPOCH = {"data": 6, "forward": 6, "backward": 6, "step": 6, "sched_step": 6,
                "batch_end": 8, "epoch_end": 2, "eval_batch": 6, "eval": 2, "save": 1}


@pytest.mark.parametrize("sched", ["onecycle", "cosine"])
@pytest.mark.parametrize("how", ["sigint", "sigterm", "raise", "double"])
def test_interrupt_at_every_phase_then_resume_is_exact(tmp_path, sched, how):
    """Interrupt at every phase boundary in turn (first epoch and second epoch), resume
    from what is on disk until done: bit-identical weights, optimizer state, RNG state
    and metrics (timing aside) to the uninterrupted run."""
    ref = _state(tmp_path / "ref", sched=sched)
    assert trainer.fit(ref) == 0
    for phase in trainer.PHASES:
        for n in (1, SECOND_EPOCH[phase] if sched == "onecycle" or phase != "sched_step"
                  else 2):
            d = tmp_path / f"{phase}-{n}"
            fault = FaultAt(phase, n, how)
            st = _state(d, sched=sched, callbacks=[fault])
            rc = trainer.fit(st)
            assert fault.fired, (phase, n)
            want = 143 if how == "sigterm" else 130
            assert rc == want, (phase, n, rc)
            if how in ("sigint", "sigterm"):  # a signal always leaves a checkpoint
                ck = tk.load(st.ckpt_path)
                assert ck["epoch"] * 10 + ck["step"] >= 0
            _same_run(ref, _finish(d, sched))


def test_second_signal_during_the_save_leaves_a_loadable_checkpoint(tmp_path, monkeypatch):
    ref = _state(tmp_path / "ref")
    assert trainer.fit(ref) == 0
    real_save = trainer.save
    calls = {"n": 0}

    def save_with_signals(obj, path):
        calls["n"] += 1
        if calls["n"] == 1:  # the end-of-epoch-1 save: two Ctrl-C while it writes
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(obj, path)

    monkeypatch.setattr(trainer, "save", save_with_signals)
    st = _state(tmp_path / "run")
    assert trainer.fit(st) == 130
    monkeypatch.setattr(trainer, "save", real_save)
    ck = tk.load(st.ckpt_path)
    assert (ck["epoch"], ck["step"]) == (1, 0)
    _same_run(ref, _finish(tmp_path / "run", "onecycle"))


def test_signal_handlers_are_restored(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert trainer.fit(_state(tmp_path, epochs=1)) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_no_keyboard_interrupt_escapes_once_the_run_is_leaving(tmp_path):
    """A second signal aborts the loop, but not the way out: once a stop was raised, the
    run ended, or a second signal already aborted, further signals are ignored (each of
    these once let a KeyboardInterrupt escape fit and kill the caller)."""
    st = _state(tmp_path, epochs=1)
    handler = trainer._Signals(st)
    handler._handle(signal.SIGTERM, None)  # first: a stop request only
    assert st.stop_reason == "SIGTERM" and not st.finishing
    with pytest.raises(trainer.StopTraining):
        trainer._check_stop(st)
    handler._handle(signal.SIGINT, None)  # while StopTraining unwinds: ignored

    st = _state(tmp_path / "b", epochs=1)
    handler = trainer._Signals(st)
    handler._handle(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        handler._handle(signal.SIGINT, None)  # second, mid-loop: aborts
    handler._handle(signal.SIGTERM, None)  # third, during the clean-up: ignored

    st = _state(tmp_path / "c", epochs=1)
    assert trainer.fit(st) == 0
    handler = trainer._Signals(st)
    handler._handle(signal.SIGINT, None)
    handler._handle(signal.SIGINT, None)  # after the last epoch: nothing to stop


@pytest.mark.slow
def test_real_signals_at_random_moments(tmp_path):
    """Many runs, each hit by SIGINT or SIGTERM (sometimes two in a row) from another
    thread at a random moment; every run is resumed from its checkpoint until it ends,
    and ends exactly as the uninterrupted run."""
    ref = _state(tmp_path / "ref", epochs=3)
    assert trainer.fit(ref) == 0  # also loads the kernels, so the next run times a run
    t0 = time.perf_counter()
    assert trainer.fit(_state(tmp_path / "warm", epochs=3)) == 0
    span = time.perf_counter() - t0
    rng = np.random.default_rng(1234)
    late = []  # signals that land after fit restored the handlers: must not kill pytest
    previous = {s: signal.signal(s, lambda num, frame: late.append(num))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        interrupted = _random_signal_trials(tmp_path, ref, span, rng)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    assert interrupted >= 20


def _random_signal_trials(tmp_path, ref, span, rng):
    interrupted = 0
    for trial in range(40):
        d = tmp_path / f"t{trial}"
        for _ in range(20):
            st = _state(d, epochs=3)
            if os.path.exists(st.ckpt_path):
                trainer.restore_checkpoint(st, tk.load(st.ckpt_path))
            delay = rng.uniform(0, span)
            sigs = [signal.SIGINT if rng.random() < 0.5 else signal.SIGTERM]
            if rng.random() < 0.3:
                sigs.append(signal.SIGINT)
            done = threading.Event()

            def shoot(delay=delay, sigs=sigs, done=done):
                if not done.wait(delay):
                    for s in sigs:
                        signal.pthread_kill(threading.main_thread().ident, s)

            th = threading.Thread(target=shoot)
            th.start()
            try:
                rc = trainer.fit(st)
            finally:  # even if fit raised, no signal may outlive the handlers
                done.set()
                th.join()
            if rc == 0:
                break
            interrupted += 1
        else:
            raise AssertionError(f"trial {trial} never finished")
        st = _state(d, epochs=3)
        trainer.restore_checkpoint(st, tk.load(st.ckpt_path))
        assert trainer.fit(st) == 0  # already complete: nothing to do
        _same_run(ref, st)
    return interrupted


def test_an_interrupt_inside_no_grad_never_leaves_it_on(tmp_path):
    """A KeyboardInterrupt raised wherever Python checks for signals inside no_grad's
    enter or exit -- on entering a Python function, after a C call returns -- while the
    trainer evaluates leaves the grad mode on (a profile hook raises it at each such point
    in turn). The bare context manager closes every window but its own __exit__'s entry;
    evaluate's finally closes that one."""
    import sys

    from tinygrad_k import autograd

    st = _state(tmp_path, epochs=1)

    def in_target(frame, target):
        return frame.f_code.co_name == target or (
            frame.f_back is not None and frame.f_back.f_code.co_name == target
            and frame.f_code.co_filename == autograd.__file__)

    for target in ("__enter__", "__exit__"):
        hits = 0
        for nth in range(1, 12):
            count = [0]

            def hook(frame, event, arg, target=target, nth=nth):
                if event in ("call", "c_return") and in_target(frame, target):
                    count[0] += 1
                    if count[0] == nth:
                        raise KeyboardInterrupt

            assert autograd.is_grad_enabled()
            sys.setprofile(hook)
            try:
                trainer.evaluate(st.model, st.test_set, st.task)
            except KeyboardInterrupt:
                hits += 1
            finally:
                sys.setprofile(None)
            assert autograd.is_grad_enabled(), (target, nth)
            assert st.model.training
        assert hits >= 2, target  # the hook really interrupted the method
