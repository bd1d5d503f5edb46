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
