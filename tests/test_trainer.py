"""The training loop's pieces and its phase callbacks (tinygrad_k.trainer)."""
import numpy as np

import tinygrad_k as tk
from tinygrad_k import data, nn, trainer
from tinygrad_k.optim.factory import make_optimizer, make_scheduler


def _state(tmp_path, epochs=2, sched="onecycle", callbacks=()):
    tk.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 1, 4, 4)).astype(np.float32)
    y = (x.reshape(40, -1).sum(1) > 0).astype(np.int64)
    train = data.TensorDataset(x[:32], y[:32])
    test = data.TensorDataset(x[32:], y[32:])
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(8, 2))
    opt = make_optimizer("sgd", model.parameters(), 0.1)
    loader = data.DataLoader(train, batch_size=8, shuffle=True, seed=0)
    sc, per_batch = make_scheduler(sched, opt, 0.1, epochs, len(loader))
    return trainer.TrainState(model, opt, sc, per_batch, loader, test, epochs=epochs,
                              ckpt_path=str(tmp_path / "ck.npz"), callbacks=list(callbacks),
                              eval_batch_size=4)


def test_phases_are_called_in_the_documented_order(tmp_path):
    seen = []
    state = _state(tmp_path, epochs=1, callbacks=[lambda name, st: seen.append(name)])
    assert trainer.fit(state) == 0
    batch = ["data", "forward", "backward", "step", "sched_step", "batch_end"]
    assert seen == batch * 4 + ["epoch_end"] + ["eval_batch"] * 2 + ["eval", "save"]
    assert set(seen) == set(trainer.PHASES)
    assert len(state.history["step_loss"]) == 4 and state.history["epoch"] == [1]


def test_callback_objects_see_the_batch(tmp_path):
    class Grads:
        def __init__(self):
            self.norms = []

        def on_phase(self, name, st):
            if name == "forward":
                assert st.x.shape == (8, 1, 4, 4) and st.loss.shape == ()
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
    st2 = _state(tmp_path / "run")
    trainer.restore_checkpoint(st2, ck)
    assert trainer.fit(st2) == 0
    for a, b in zip(ref.model.parameters(), st2.model.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert ref.history["step_loss"] == st2.history["step_loss"]
