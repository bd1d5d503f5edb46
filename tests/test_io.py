"""Checkpoints: tinygrad_k.save / tinygrad_k.load round trips, atomic writes, refusal of
corrupted, foreign and pickle-bearing files."""
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import nn, optim


def _model():
    tk.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


def test_nested_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    obj = {
        "t32": tk.tensor(rng.standard_normal((3, 4)).astype(np.float32)),
        "t64": tk.tensor(rng.standard_normal(5), dtype=tk.float64),
        "ti": tk.tensor(np.arange(6, dtype=np.int64).reshape(2, 3)),
        "arr": rng.standard_normal((2, 2)).astype(np.float32),
        "scalar_arr": np.array(3.5),
        "nested": {"list": [1, 2.5, "x", None, True, [np.arange(3)]], "tuple": (1, "a"),
                   7: "int key"},
        "epoch": 3, "lr": 1e-3, "name": "run-1", "np_scalar": np.float32(2.0),
    }
    path = tk.save(obj, tmp_path / "ck.npz")
    back = tk.load(path)
    assert set(back) == set(obj)
    for k in ("t32", "t64", "ti"):
        assert isinstance(back[k], tk.Tensor) and back[k].device == "cpu"
        assert back[k].dtype == obj[k].dtype and back[k].shape == obj[k].shape
        np.testing.assert_array_equal(back[k].numpy(), obj[k].numpy())
    assert isinstance(back["arr"], np.ndarray)
    np.testing.assert_array_equal(back["arr"], obj["arr"])
    assert back["scalar_arr"].shape == () and back["scalar_arr"] == 3.5
    assert back["nested"][7] == "int key"
    assert back["nested"]["list"][:5] == [1, 2.5, "x", None, True]
    np.testing.assert_array_equal(back["nested"]["list"][5][0], np.arange(3))
    assert back["nested"]["tuple"] == (1, "a")
    assert (back["epoch"], back["lr"], back["name"], back["np_scalar"]) == (3, 1e-3, "run-1",
                                                                             2.0)


def test_requires_grad_is_kept(tmp_path):
    t = tk.tensor(np.ones(3, np.float32), requires_grad=True)
    tk.save([t, t.detach()], tmp_path / "g.npz")
    a, b = tk.load(tmp_path / "g.npz")
    assert a.requires_grad and not b.requires_grad


def test_full_training_state_resumes_exactly(tmp_path):
    """model + optimizer + epoch saved mid-run; the resumed run reproduces the losses of
    the uninterrupted one bit for bit."""
    rng = np.random.default_rng(1)
    xs = [tk.tensor(rng.standard_normal((8, 4)).astype(np.float32)) for _ in range(6)]
    ys = [tk.tensor(rng.integers(0, 3, 8)) for _ in range(6)]

    def train(model, opt, batches):
        losses = []
        for x, y in batches:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    m1 = _model()
    o1 = optim.Adam(m1.parameters(), lr=1e-2)
    full = train(m1, o1, list(zip(xs, ys)))

    m2 = _model()
    o2 = optim.Adam(m2.parameters(), lr=1e-2)
    train(m2, o2, list(zip(xs, ys))[:3])
    tk.save({"model": m2.state_dict(), "optimizer": o2.state_dict(), "epoch": 3},
            tmp_path / "state.npz")

    ck = tk.load(tmp_path / "state.npz")
    m3 = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    m3.load_state_dict(ck["model"])
    o3 = optim.Adam(m3.parameters(), lr=1e-2)
    o3.load_state_dict(ck["optimizer"])
    assert ck["epoch"] == 3
    assert train(m3, o3, list(zip(xs, ys))[3:]) == full[3:]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "ck.npz"
    tk.save({"a": np.arange(3)}, path)
    with pytest.raises(TypeError, match="cannot store"):
        tk.save({"a": object()}, path)
    # the failed save left neither a temp file nor a damaged checkpoint behind
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]
    np.testing.assert_array_equal(tk.load(path)["a"], np.arange(3))


def test_unsupported_values_raise(tmp_path):
    with pytest.raises(TypeError, match="keys"):
        tk.save({(1, 2): 3}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="pickle"):
        tk.save({"o": np.array([object()], dtype=object)}, tmp_path / "x.npz")
    assert not os.listdir(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        tk.load(tmp_path / "nope.npz")


def _good(tmp_path):
    path = tmp_path / "ck.npz"
    tk.save({"model": _model().state_dict(), "epoch": 1}, path)
    return path, path.read_bytes()


@pytest.mark.parametrize("cut", [0, 10, 100, -30])
def test_truncated_file_is_refused(tmp_path, cut):
    path, raw = _good(tmp_path)
    path.write_bytes(raw[:cut] if cut >= 0 else raw[:len(raw) + cut])
    with pytest.raises(ValueError, match="not a readable tinygrad_k checkpoint") as e:
        tk.load(path)
    assert str(path) in str(e.value)


def test_flipped_bytes_are_refused(tmp_path):
    path, raw = _good(tmp_path)
    rng = np.random.default_rng(0)
    for trial in range(20):
        bad = bytearray(raw)
        for i in rng.choice(len(raw), size=4, replace=False):
            bad[i] ^= 0xFF
        path.write_bytes(bytes(bad))
        # zip CRCs catch damaged array bytes, so every flip must be caught
        with pytest.raises(ValueError, match=str(path).replace("\\", "\\\\")):
            tk.load(path)


def test_pickle_bearing_files_are_refused(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    # an npz whose array is an object array (pickled), plus a valid-looking __meta__
    npz = tmp_path / "evil.npz"
    meta = np.frombuffer(b'{"format": "tinygrad_k-checkpoint-1", "root": {"__ndarray__": '
                         b'"a0"}}', dtype=np.uint8)
    np.savez(npz, a0=np.array([Evil()], dtype=object), __meta__=meta)
    with pytest.raises(ValueError, match="not a readable"):
        tk.load(npz)
    # a bare pickle file
    pk = tmp_path / "evil.pt"
    pk.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ValueError, match="not a readable"):
        tk.load(pk)
    assert not marker.exists()


def test_foreign_npz_and_bad_metadata_are_refused(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.arange(3))
    with pytest.raises(ValueError, match="expected"):
        tk.load(plain)
    cases = {
        "wrong_format": b'{"format": "other", "root": 1}',
        "not_json": b"{not json",
        "no_root": b'{"format": "tinygrad_k-checkpoint-1"}',
        "missing_array": b'{"format": "tinygrad_k-checkpoint-1", "root": {"__tensor__": "a9"}}',
        "unknown_node": b'{"format": "tinygrad_k-checkpoint-1", "root": {"__code__": 1}}',
        "bad_dict": b'{"format": "tinygrad_k-checkpoint-1", "root": {"__dict__": [1]}}',
    }
    for name, meta in cases.items():
        p = tmp_path / f"{name}.npz"
        np.savez(p, __meta__=np.frombuffer(meta, dtype=np.uint8))
        with pytest.raises(ValueError, match=name):
            tk.load(p)


def test_not_a_zip(tmp_path):
    p = tmp_path / "text.npz"
    p.write_text("hello")
    with pytest.raises(ValueError, match="text.npz"):
        tk.load(p)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "not an array")
    p.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="text.npz"):
        tk.load(p)


# -- safetensors -----------------------------------------------------------------------
def _st_file(path, header, data):
    hb = json.dumps(header).encode()
    path.write_bytes(len(hb).to_bytes(8, "little") + hb + data)


def test_safetensors_nested_round_trip(tmp_path):
    m = _model()
    o = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    for p in m.parameters():
        p.grad = tk.ones_like(p)
    o.step()
    obj = {"model": m.state_dict(), "optimizer": o.state_dict(), "epoch": 2,
           "mask": np.array([True, False]), "ids": np.arange(4, dtype=np.int32)}
    back = tk.load(tk.save(obj, tmp_path / "ck.safetensors"))
    assert back["epoch"] == 2 and back["optimizer"]["param_groups"][0]["momentum"] == 0.9
    for k, v in obj["model"].items():
        np.testing.assert_array_equal(back["model"][k].numpy(), v.numpy())
    buf = back["optimizer"]["state"][0]["momentum_buffer"]
    np.testing.assert_array_equal(buf.numpy(), obj["optimizer"]["state"][0]
                                  ["momentum_buffer"].numpy())
    assert back["mask"].dtype == np.bool_ and back["ids"].dtype == np.int32
    np.testing.assert_array_equal(back["ids"], np.arange(4))


def test_safetensors_layout_of_a_state_dict(tmp_path):
    """A flat state dict is stored under its own keys, in the layout other readers
    expect: u64 header length, JSON header with dtype/shape/data_offsets, raw LE bytes."""
    sd = _model().state_dict()
    path = tk.save(sd, tmp_path / "m.safetensors")
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    assert set(header) == set(sd) | {"__metadata__"}
    w = header["0.weight"]
    assert w["dtype"] == "F32" and w["shape"] == [6, 4]
    b, e = w["data_offsets"]
    np.testing.assert_array_equal(
        np.frombuffer(raw[8 + n + b:8 + n + e], "<f4").reshape(6, 4), sd["0.weight"].numpy())


def test_safetensors_foreign_file_loads_as_flat_dict(tmp_path):
    a = np.arange(6, dtype="<f8").reshape(2, 3)
    c = np.array([1, -2], dtype="<i8")
    _st_file(tmp_path / "f.safetensors",
             {"w": {"dtype": "F64", "shape": [2, 3], "data_offsets": [0, 48]},
              "c": {"dtype": "I64", "shape": [2], "data_offsets": [48, 64]},
              "__metadata__": {"source": "elsewhere"}}, a.tobytes() + c.tobytes())
    back = tk.load(tmp_path / "f.safetensors")
    assert set(back) == {"w", "c"} and isinstance(back["w"], tk.Tensor)
    np.testing.assert_array_equal(back["w"].numpy(), a)
    np.testing.assert_array_equal(back["c"].numpy(), c)


def test_safetensors_damaged_files_are_refused(tmp_path):
    path = tk.save({"w": tk.tensor(np.ones((3, 3), np.float32))}, tmp_path / "d.safetensors")
    raw = open(path, "rb").read()
    p = tmp_path / "bad.safetensors"
    damaged = {
        "short": raw[:5],
        "truncated": raw[:-4],
        "huge_header_len": (10**12).to_bytes(8, "little") + raw[8:],
        "garbage_header": raw[:8] + b"\xff" * (len(raw) - 8),
        "trailing": raw + b"\0" * 8,
    }
    for name, content in damaged.items():
        p.write_bytes(content)
        with pytest.raises(ValueError, match="not a readable safetensors") as e:
            tk.load(p)
        assert str(p) in str(e.value), name
    for header in ({"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}},
                   {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}},
                   {"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
                   {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}):
        _st_file(p, header, b"\0" * 4)
        with pytest.raises(ValueError, match="not a readable safetensors"):
            tk.load(p)


# -- strict, bounded reading (issue 12) ---------------------------------------------------
@pytest.mark.parametrize("header, data, why", [
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "v": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, 12, "overlaps"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, 8, "hole of 4 bytes"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "v": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}, 12, "hole of 4 bytes"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, 0, "does not fit"),
    ({"w": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 4]}}, 4,
     "does not fit"),
    ({"w": {"dtype": "F32", "shape": [2**62, 0, 2**62], "data_offsets": [0, 0]}}, 0,
     "bad entry"),
    ({"w": {"dtype": "F32", "shape": [2**20, 0], "data_offsets": [0, 0]}}, 0, None),
    ({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}, 4, "bad entry"),
    ({"w": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}, 4, "bad entry"),
    ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 2**70]}}, 4, "does not fit"),
])
def test_safetensors_layout_is_checked(tmp_path, header, data, why):
    p = tmp_path / "x.safetensors"
    _st_file(p, header, b"\0" * data)
    if why is None:  # an empty tensor with huge dims is legal (0 bytes)
        assert tk.load(p)["w"].shape == (2**20, 0)
        return
    with pytest.raises(ValueError, match=why) as e:
        tk.load(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("depth", [600, 100_000])
def test_deep_json_nesting_is_refused(tmp_path, depth):
    p = tmp_path / "deep.safetensors"
    hb = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    p.write_bytes(len(hb).to_bytes(8, "little") + hb)
    with pytest.raises(ValueError, match="nested") as e:
        tk.load(p)
    assert str(p) in str(e.value)
    q = tmp_path / "deep.npz"
    meta = b'{"format": "tinygrad_k-checkpoint-1", "root": ' + b"[" * depth + \
        b"]" * depth + b"}"
    np.savez(q, __meta__=np.frombuffer(meta, dtype=np.uint8))
    with pytest.raises(ValueError, match="nested") as e:
        tk.load(q)
    assert str(q) in str(e.value)


def _npz_with_member(path, name, npy_bytes):
    meta = b'{"format": "tinygrad_k-checkpoint-1", "root": {"__ndarray__": "a0"}}'
    buf = io.BytesIO()
    np.save(buf, np.frombuffer(meta, dtype=np.uint8))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__meta__.npy", buf.getvalue())
        z.writestr(name, npy_bytes)


@pytest.mark.parametrize("shape", [(10**13,), (2**40, 2**40), (3, 3)])
def test_npy_header_claiming_a_huge_array_is_refused_before_allocating(tmp_path, shape):
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<f8", "fortran_order": False,
                                               "shape": shape})
    p = tmp_path / "huge.npz"
    _npz_with_member(p, "a0.npy", hdr.getvalue() + b"\0" * 16)
    with pytest.raises(ValueError, match="header claims|bad shape") as e:
        tk.load(p)
    assert str(p) in str(e.value)
    q = tmp_path / "huge.npy"
    q.write_bytes(hdr.getvalue() + b"\0" * 16)
    with pytest.raises(ValueError, match="header claims|bad shape") as e:
        tk.io.read_npy(q)
    assert str(q) in str(e.value)
    if shape == (3, 3):
        q.write_bytes(hdr.getvalue() + b"\0" * 72)
        assert tk.io.read_npy(q).shape == (3, 3)


def test_npz_entry_that_is_not_an_array_or_pickled_is_refused(tmp_path):
    p = tmp_path / "obj.npz"
    buf = io.BytesIO()
    np.save(buf, np.array([1, None], dtype=object), allow_pickle=True)
    _npz_with_member(p, "a0.npy", buf.getvalue())
    with pytest.raises(ValueError, match="object arrays"):
        tk.load(p)


def test_saving_a_cycle_or_a_module_is_refused(tmp_path):
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nested deeper"):
        tk.save(loop, tmp_path / "loop.npz")
    with pytest.raises(TypeError, match="state_dict"):
        tk.save(_model(), tmp_path / "m.npz")
    assert not os.listdir(tmp_path)


# -- atomic writes, umask, stale temp files ---------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        for name in ("ck.npz", "ck.safetensors"):
            path = tk.save({"w": tk.ones(2)}, tmp_path / name)
            assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask, name
    finally:
        os.umask(old)


def test_next_save_removes_stale_temp_files(tmp_path):
    path = tmp_path / "ck.npz"
    dead = tmp_path / ".ck.npz.999999999.0badf00d.tmp"      # pid beyond pid_max: gone
    alive = tmp_path / f".ck.npz.{os.getppid()}.00c0ffee.tmp"  # a live writer's file
    other = tmp_path / ".other.npz.999999999.0badf00d.tmp"   # another checkpoint's
    for p in (dead, alive, other):
        p.write_bytes(b"partial")
    tk.save({"a": 1}, path)
    assert not dead.exists() and alive.exists() and other.exists()
    assert tk.load(path) == {"a": 1}


def test_kill_9_during_save_keeps_the_previous_checkpoint(tmp_path):
    """A writer killed with SIGKILL at random moments while saving: the checkpoint on disk
    always loads (the old or the new one), and the next save cleans up its temp file."""
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "ck.npz"
    script = ("import sys, numpy as np, tinygrad_k as tk\n"
              "i = 0\n"
              "while True:\n"
              "    tk.save({'i': i, 'w': np.full(3_000_000, i, np.float32)}, sys.argv[1])\n"
              "    i += 1\n")
    rng = np.random.default_rng(0)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for trial in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script, str(path)], cwd=root)
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ck = tk.load(path)
        assert (ck["w"] == ck["i"]).all()
    tk.save({"i": -1}, path)
    assert os.listdir(tmp_path) == ["ck.npz"]


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    """A full disk (ENOSPC while writing): the error propagates, the old checkpoint stays,
    no temp file is left."""
    import errno

    path = tk.save({"a": 1}, tmp_path / "ck.npz")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        tk.save({"a": 2}, path)
    monkeypatch.undo()
    assert tk.load(path) == {"a": 1} and os.listdir(tmp_path) == ["ck.npz"]


# -- torch.save / torch.load compatibility (issue 11) ------------------------------------------
@pytest.mark.parametrize("name, kw", [("SGD", {"lr": 0.1, "momentum": 0.9}),
                                      ("Adam", {"lr": 0.01}), ("AdamW", {"lr": 0.01}),
                                      ("RMSprop", {"lr": 0.01}), ("Adagrad", {"lr": 0.1})])
@pytest.mark.parametrize("ext", ["pt", "safetensors"])
def test_training_state_round_trip_as_in_torch(tmp_path, name, kw, ext):
    """torch.save({'epoch', 'model', 'optim', 'sched'}) / torch.load, then both runs
    continue bit for bit alike."""
    rng = np.random.default_rng(0)
    xs = [tk.tensor(rng.standard_normal((8, 4)).astype(np.float32)) for _ in range(6)]

    def make():
        m = _model()
        o = getattr(optim, name)(m.parameters(), **kw)
        return m, o, optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5)

    def steps(m, o, s, batch):
        for x in batch:
            o.zero_grad()
            (m(x) ** 2).mean().backward()
            o.step()
            s.step()

    m, o, s = make()
    steps(m, o, s, xs[:3])
    path = tmp_path / f"ck.{ext}"
    tk.save({"epoch": 3, "model": m.state_dict(), "optim": o.state_dict(),
             "sched": s.state_dict(), "note": "mid-run", "done": False, "best": None,
             "lrs": [0.1, 0.05]}, path)
    ck = tk.load(path, map_location="cpu", weights_only=True)
    assert (ck["epoch"], ck["note"], ck["done"], ck["best"], ck["lrs"]) == (
        3, "mid-run", False, None, [0.1, 0.05])
    m2, o2, s2 = make()
    m2.load_state_dict(ck["model"])
    o2.load_state_dict(ck["optim"])
    s2.load_state_dict(ck["sched"])
    steps(m, o, s, xs[3:])
    steps(m2, o2, s2, xs[3:])
    for a, b in zip(m.parameters(), m2.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert o.param_groups[0]["lr"] == o2.param_groups[0]["lr"]


def test_file_objects_and_map_location(tmp_path):
    buf = io.BytesIO()
    obj = {"w": tk.ones(2, 3), "n": [1, {"k": tk.zeros(1)}]}
    assert tk.save(obj, buf) is None
    for loc in (None, "cpu", {"cuda": "cpu"}):
        buf.seek(0)
        back = tk.load(buf, map_location=loc, weights_only=False)
        assert back["w"].device == "cpu" and back["n"][1]["k"].shape == (1,)
    seen = []
    buf.seek(0)
    back = tk.load(buf, map_location=lambda t, where: seen.append(where) or t * 2)
    np.testing.assert_array_equal(back["w"].numpy(), np.full((2, 3), 2.0))
    assert seen == ["cpu", "cpu"]
    with open(tmp_path / "f.safetensors", "wb") as f:
        tk.save({"w": tk.ones(2)}, f)
    with open(tmp_path / "f.safetensors", "rb") as f:
        np.testing.assert_array_equal(tk.load(f)["w"].numpy(), np.ones(2))
    with pytest.raises(ValueError, match="never pickles"):
        tk.save(obj, io.BytesIO(), pickle_module=pickle)
    with pytest.raises(ValueError, match="map_location"):
        buf.seek(0)
        tk.load(buf, map_location="tpu")


def test_torch_pickle_checkpoint_is_refused_with_the_way_out(tmp_path):
    p = tmp_path / "model.pt"
    p.write_bytes(pickle.dumps({"w": [1, 2]}, protocol=2))
    with pytest.raises(ValueError, match="never unpickles.*safetensors"):
        tk.load(p)
