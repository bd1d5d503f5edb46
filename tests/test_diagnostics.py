"""Training diagnostics (tinygrad_k.diagnostics): the hooks they stand on fire with the
tensors PyTorch's hooks see on the same model, the recorded statistics are the ones
computed from those tensors, recording never changes training, memory stays bounded, and
the CLI writes the JSON and the plots."""
import json
import math

import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import cli, nn, optim
from tinygrad_k.diagnostics import Diagnostics

torch = pytest.importorskip("torch")


def _pair(seed=0):
    """The same MLP in tinygrad_k and in PyTorch (float64, same weights)."""
    tk.manual_seed(seed)
    ours = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 3)).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                                 torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 8), torch.nn.Sigmoid(),
                                 torch.nn.Linear(8, 3)).double()
    with torch.no_grad():
        for (n, p), (m, q) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert n == m
            q.copy_(torch.tensor(p.numpy()))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((10, 6)) * 2
    y = rng.integers(0, 3, 10)
    return ours, theirs, x, y


def _torch_record(theirs, x, y):
    """Every module's input, output, output gradient (tensor hook) and the full backward
    hook's grad_input / grad_output, from PyTorch."""
    rec = {}

    def fwd(name):
        def hook(module, args, output):
            rec[name] = {"in": args[0].detach().numpy(), "out": output.detach().numpy()}
            output.register_hook(lambda g: rec[name].__setitem__("grad", g.numpy()))
        return hook

    def bwd(name):
        def hook(module, grad_input, grad_output):
            rec[name]["grad_input"] = [None if g is None else g.numpy() for g in grad_input]
            rec[name]["grad_output"] = [g.numpy() for g in grad_output]
        return hook

    handles = []
    for name, m in theirs.named_children():
        handles.append(m.register_forward_hook(fwd(name)))
        handles.append(m.register_full_backward_hook(bwd(name)))
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(theirs(xt), torch.tensor(y)).backward()
    for h in handles:
        h.remove()
    return rec


def test_hooks_fire_with_the_tensors_pytorch_sees():
    ours, theirs, x, y = _pair()
    want = _torch_record(theirs, x, y)
    got, calls = {}, []

    def fwd(name):
        def hook(module, args, output):
            calls.append(("forward", name))
            assert module is ours[int(name)]
            got[name] = {"in": args[0].numpy(), "out": output.numpy(),
                         "shape": tuple(output.shape)}
            output.register_hook(lambda g: got[name].__setitem__("grad", g.numpy()))
        return hook

    def bwd(name):
        def hook(module, grad_input, grad_output):
            calls.append(("backward", name))
            got[name]["grad_input"] = [None if g is None else g.numpy() for g in grad_input]
            got[name]["grad_output"] = [g.numpy() for g in grad_output]
        return hook

    handles = []
    for name, m in ours.named_children():
        handles.append(m.register_forward_hook(fwd(name)))
        handles.append(m.register_full_backward_hook(bwd(name)))
    xt = tk.tensor(x, requires_grad=True)
    nn.functional.cross_entropy(ours(xt), tk.tensor(y)).backward()
    assert [c for c in calls if c[0] == "forward"] == [("forward", str(i)) for i in range(7)]
    for name in want:
        w, g = want[name], got[name]
        assert g["shape"] == w["out"].shape, name
        for key in ("in", "out"):
            np.testing.assert_allclose(g[key], w[key], rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name} {key}")
    # backward hooks run from the last layer to the first, as in PyTorch
    assert [c for c in calls if c[0] == "backward"] == [("backward", str(i))
                                                        for i in reversed(range(7))]
    for name in want:
        w, g = want[name], got[name]
        for mine, theirs_ in ((g["grad"], w["grad"]), (g["grad_output"][0], w["grad"]),
                              (g["grad_output"][0], w["grad_output"][0]),
                              (g["grad_input"][0], w["grad_input"][0])):
            np.testing.assert_allclose(mine, theirs_, rtol=1e-10, atol=1e-12, err_msg=name)
    for h in handles:
        h.remove()
    calls.clear()
    nn.functional.cross_entropy(ours(xt), tk.tensor(y)).backward()
    assert calls == []   # removed handles fire no more


def test_recorded_statistics_are_those_of_the_hooked_tensors():
    ours, theirs, x, y = _pair(1)
    want = _torch_record(theirs, x, y)
    diag = Diagnostics(ours, every=1, bins=10).attach()
    opt = optim.SGD(ours.parameters(), lr=0.1)
    before = {n: p.numpy().copy() for n, p in ours.named_parameters()}
    diag.begin_step(0)
    loss = nn.functional.cross_entropy(ours(tk.tensor(x)), tk.tensor(y))
    opt.zero_grad()
    loss.backward()
    diag.optimizer_step(opt)
    assert [n for n, _ in diag.layers] == [str(i) for i in range(7)]
    rec = diag.records[0]
    assert rec["step"] == 0
    for name, w in want.items():
        r = rec["layers"][name]
        out = w["out"]
        assert r["shape"] == list(out.shape)
        assert r["mean"] == pytest.approx(out.mean(), rel=1e-9, abs=1e-12)
        assert r["std"] == pytest.approx(out.std(), rel=1e-9)
        assert sum(r["hist"]) == out.size and len(r["hist"]) == 10
        assert r["grad"]["std"] == pytest.approx(w["grad"].std(), rel=1e-9)
        assert r["grad"]["mean"] == pytest.approx(w["grad"].mean(), rel=1e-9, abs=1e-15)
    assert rec["layers"]["1"]["kind"] == "tanh"
    assert rec["layers"]["1"]["saturated"] == pytest.approx((abs(want["1"]["out"]) > 0.97).mean())
    s = want["5"]["out"]
    assert rec["layers"]["5"]["saturated"] == pytest.approx(((s < 0.03) | (s > 0.97)).mean())
    r = want["3"]["out"]
    assert rec["layers"]["3"]["dead"] == pytest.approx((r <= 0).all(0).mean())
    assert rec["layers"]["3"]["zero"] == pytest.approx((r <= 0).mean())
    # the update of SGD is -lr * grad: its std over the parameter's std
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        upd = 0.1 * q.grad.numpy()
        expect = math.log10(upd.std() / before[name].std())
        assert rec["params"][name]["update_log10"] == pytest.approx(expect, rel=1e-6), name
        assert rec["params"][name]["grad_std"] == pytest.approx(q.grad.numpy().std(), rel=1e-9)
    # hooks are gone between recording steps, and evaluation passes are not recorded
    diag.begin_step(1)
    with tk.no_grad():
        ours(tk.tensor(x))
    diag.after_update()
    assert len(diag.records) == 1
    assert "tanh" in diag.summary() and "log10(update std / data std)" in diag.summary()


def _train(with_diag, steps=12):
    tk.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 4))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    diag = Diagnostics(model, every=3).attach() if with_diag else None
    losses = []
    for step in range(steps):
        x, y = rng.standard_normal((16, 5)).astype(np.float32), rng.integers(0, 4, 16)
        if diag:
            diag.begin_step(step)
        loss = nn.functional.cross_entropy(model(tk.tensor(x)), tk.tensor(y))
        opt.zero_grad()
        loss.backward()
        if diag:
            diag.optimizer_step(opt)
        else:
            opt.step()
        losses.append(loss.item())
    return model, losses, diag


def test_diagnostics_on_and_off_train_identically():
    a, la, _ = _train(False)
    b, lb, diag = _train(True)
    assert la == lb
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    assert [r["step"] for r in diag.records] == [0, 3, 6, 9]


def test_memory_is_bounded():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    diag = Diagnostics(model, every=1, max_records=4, bins=7, sample_size=50).attach()
    opt = optim.SGD(model.parameters(), lr=0.1)
    for step in range(20):
        diag.begin_step(step)
        model(tk.randn(300, 4)).sum().backward()
        diag.optimizer_step(opt)
    assert len(diag.records) <= 4 and diag.every >= 8
    steps = [r["step"] for r in diag.records]
    assert steps == sorted(steps) and steps[0] == 0
    for r in diag.records:
        for layer in r["layers"].values():   # the histogram of at most sample_size values
            assert len(layer["hist"]) == 7 and sum(layer["hist"]) <= 50


def test_save_writes_json_and_one_png_per_kind(tmp_path):
    pytest.importorskip("matplotlib")
    _, _, diag = _train(True)
    paths = diag.save(tmp_path)
    names = sorted(p.rsplit("/", 1)[1] for p in paths)
    assert names == ["diag_activations.png", "diag_gradients.png", "diag_saturation.png",
                     "diag_updates.png", "diagnostics.json"]
    for p in paths:
        if p.endswith(".png"):
            assert open(p, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "diagnostics.json").read_text())
    assert [layer["kind"] for layer in data["layers"]] == ["other", "tanh", "other", "relu",
                                                           "other"]
    assert len(data["records"]) == 4 and data["every"] == 3


def test_bad_arguments():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(ValueError, match="no module named \\['nope'\\]"):
        Diagnostics(model, layers=["nope"])
    with pytest.raises(ValueError, match="every must be >= 1"):
        Diagnostics(model, every=0)
    with pytest.raises(TypeError, match="expected an nn.Module"):
        Diagnostics(lambda x: x)
    assert [n for n, _ in Diagnostics(model, layers=[nn.ReLU]).layers] == ["1"]


def test_cli_diagnostics_writes_files_and_changes_nothing(tmp_path, capsys):
    words = tmp_path / "w.txt"
    rng = np.random.default_rng(0)
    words.write_text("\n".join("".join(rng.choice(list("abcdefgh"), rng.integers(2, 7)))
                               for _ in range(300)))
    base = ["train", "--model", "char_mlp", "--dataset", str(words), "--epochs", "1",
            "--batch-size", "32", "--no-progress"]
    assert cli.main(base + ["--out", str(tmp_path / "off"), "--no-plot"]) == 0
    assert cli.main(base + ["--out", str(tmp_path / "on"), "--diagnostics",
                            "--diag-every", "3"]) == 0
    out = capsys.readouterr().out
    assert "diagnostics at step" in out and "diagnostics.json" in out
    on = tmp_path / "on"
    data = json.loads((on / "diagnostics.json").read_text())
    assert [r["step"] for r in data["records"]] == [0, 3, 6]     # 9 batches of 32 (270 words)
    assert {layer["name"] for layer in data["layers"]} == {"emb", "fc1", "act", "fc2"}
    for png in ("diag_activations.png", "diag_gradients.png", "diag_saturation.png",
                "diag_updates.png"):
        assert (on / png).read_bytes()[:4] == b"\x89PNG"
    a = tk.load(str(tmp_path / "off" / "checkpoint.npz"))
    b = tk.load(str(on / "checkpoint.npz"))
    for k, v in a["model"].items():
        np.testing.assert_array_equal(v.numpy(), b["model"][k].numpy(), err_msg=k)
    assert a["history"]["step_loss"] == b["history"]["step_loss"]
