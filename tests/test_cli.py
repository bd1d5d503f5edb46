"""The training CLI end to end: accuracy on real (or generated) data, exact resume,
Ctrl-C checkpoints, eval and predict, clear errors."""
import io
import json
import os
import signal

import numpy as np
import pytest

import tinygrad_k as tk
from tinygrad_k import cli, data

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
HAVE_FMNIST = os.path.exists(FMNIST) or bool(os.environ.get("FASHION_MNIST_DIR"))


def run(argv):
    return cli.main(argv)


def test_end_to_end_accuracy(tmp_path, capsys):
    """Train the MLP on a slice of Fashion-MNIST (or generated images when the Debian
    package is absent) and fail below a stated accuracy: 75% after 2 epochs on 3000
    Fashion-MNIST images (a linear model reaches ~70%), 90% on the generated classes."""
    dataset = "fashion-mnist" if HAVE_FMNIST else "synthetic"
    threshold = 0.75 if HAVE_FMNIST else 0.90
    out = tmp_path / "run"
    rc = run(["train", "--model", "mlp", "--dataset", dataset, "--epochs", "2",
              "--limit-train", "3000", "--limit-test", "1000", "--lr", "0.05",
              "--out", str(out), "--no-progress"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    acc = metrics["history"]["test_accuracy"][-1]
    assert acc >= threshold, f"{dataset}: test accuracy {acc:.3f} < {threshold}"
    assert (out / "checkpoint.npz").exists()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "final test accuracy" in capsys.readouterr().out


def _train(out, epochs, extra=()):
    return run(["train", "--model", "lenet5", "--dataset", "synthetic", "--epochs", str(epochs),
                "--limit-train", "256", "--limit-test", "64", "--batch-size", "32",
                "--out", str(out), "--no-progress", "--no-plot", *extra])


def test_resume_is_exact(tmp_path, capsys):
    """2 epochs straight == 1 epoch, then extended by resuming for a 2nd: same weights,
    same losses (a constant-lr schedule: a one-cycle schedule is planned for its epochs)."""
    const = ["--scheduler", "none"]
    assert _train(tmp_path / "a", 2, const) == 0
    assert _train(tmp_path / "b", 1, const) == 0
    assert _train(tmp_path / "b", 2, const + ["--resume",
                                              str(tmp_path / "b" / "checkpoint.npz")]) == 0
    a = tk.load(str(tmp_path / "a" / "checkpoint.npz"))
    b = tk.load(str(tmp_path / "b" / "checkpoint.npz"))
    for k, v in a["model"].items():
        np.testing.assert_array_equal(v.numpy(), b["model"][k].numpy(), err_msg=k)
    assert a["history"]["step_loss"] == b["history"]["step_loss"]
    # a one-cycle run cannot be stretched: clear error, not a crash mid-run
    assert _train(tmp_path / "c", 1) == 0
    capsys.readouterr()
    assert _train(tmp_path / "c", 2, ["--resume", str(tmp_path / "c" / "checkpoint.npz")]) == 2
    assert "--epochs 1" in capsys.readouterr().err


def test_ctrl_c_writes_checkpoint_and_resume_is_exact(tmp_path, monkeypatch):
    """A Ctrl-C (a real SIGINT) during the 4th optimizer step of epoch 1: the batch
    finishes, a checkpoint is written, exit status 130; resuming from it with no other
    flag finishes with exactly the weights and metrics.json of an uninterrupted run."""
    assert _train(tmp_path / "a", 2) == 0
    calls = {"n": 0}
    real_step = tk.optim.SGD.step

    def interrupted_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, *a, **k)

    monkeypatch.setattr(tk.optim.SGD, "step", interrupted_step)
    assert _train(tmp_path / "b", 2) == 130
    monkeypatch.setattr(tk.optim.SGD, "step", real_step)
    ck = tk.load(str(tmp_path / "b" / "checkpoint.npz"))
    assert ck["epoch"] == 0 and ck["step"] == 4
    assert run(["train", "--resume", str(tmp_path / "b" / "checkpoint.npz"),
                "--no-progress", "--no-plot"]) == 0
    a = tk.load(str(tmp_path / "a" / "checkpoint.npz"))
    b = tk.load(str(tmp_path / "b" / "checkpoint.npz"))
    for k, v in a["model"].items():
        np.testing.assert_array_equal(v.numpy(), b["model"][k].numpy(), err_msg=k)
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    ma["history"].pop("images_per_s"), mb["history"].pop("images_per_s")
    assert ma == mb


def test_eval_and_predict(tmp_path, capsys):
    assert _train(tmp_path, 1) == 0
    ckpt = str(tmp_path / "checkpoint.npz")
    capsys.readouterr()
    assert run(["eval", "--checkpoint", ckpt, "--limit-test", "64", "--no-progress"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert run(["predict", "--checkpoint", ckpt, "--index", "0", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("sample 0:") and "true:" in lines[0]
    x = np.random.default_rng(0).random((2, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert run(["predict", "--checkpoint", ckpt, "--input", str(tmp_path / "x.npy")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_rnn_regressor_learns_the_series(tmp_path):
    out = tmp_path / "rnn"
    assert run(["train", "--model", "rnn_regressor", "--epochs", "3", "--limit-train", "600",
                "--out", str(out), "--no-progress", "--no-plot"]) == 0
    hist = json.loads((out / "metrics.json").read_text())["history"]
    # the series has variance ~0.6; predicting the next value must do far better
    assert hist["test_loss"][-1] < 0.1, hist["test_loss"]


def test_clear_errors(tmp_path, capsys):
    assert run(["eval", "--checkpoint", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert run(["train", "--model", "mlp", "--dataset", "mnist", "--data-dir",
                str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "mnist" in err.lower()


def test_series_windows():
    ds = data.SeriesWindows(np.arange(10, dtype=np.float32), window=3)
    x, y = ds.get_batch(np.array([0, 6]))
    assert x.shape == (2, 3, 1) and y.shape == (2, 1)
    np.testing.assert_array_equal(x[1, :, 0], [6, 7, 8])
    assert y[1, 0] == 9
    with pytest.raises(ValueError, match="too short"):
        data.SeriesWindows(np.arange(3), window=3)


def test_cifar_shaped_models_train_on_generated_rgb(tmp_path):
    """lenet (the CIFAR tutorial net) runs end to end without CIFAR-10 on the disk."""
    out = tmp_path / "lenet"
    assert run(["train", "--model", "lenet", "--dataset", "synthetic-rgb", "--epochs", "1",
                "--limit-train", "512", "--limit-test", "128", "--out", str(out),
                "--no-progress", "--no-plot"]) == 0
    cfg = json.loads((out / "metrics.json").read_text())["config"]
    assert cfg["in_shape"] == [3, 32, 32]


def _rc(argv):
    """Exit status of the CLI, whether it returns or exits (argparse errors)."""
    try:
        return run(argv)
    except SystemExit as exc:
        return exc.code


def _one_line_error(capsys, argv, *needles):
    rc = _rc(argv)
    err = capsys.readouterr().err
    assert rc == 2, (argv, rc, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


SMALL = ["--limit-train", "64", "--limit-test", "32", "--no-progress", "--no-plot"]


@pytest.mark.parametrize("flags, needle", [
    (["--epochs", "0"], "--epochs"), (["--epochs", "-1"], "--epochs"),
    (["--epochs", "x"], "--epochs"), (["--limit-train", "0"], "--limit-train"),
    (["--limit-test", "-3"], "--limit-test"), (["--batch-size", "0"], "--batch-size"),
    (["--lr", "0"], "--lr"), (["--lr", "nan"], "--lr"), (["--lr", "-0.1"], "--lr"),
    (["--momentum", "1"], "--momentum"), (["--weight-decay", "-1"], "--weight-decay"),
    (["--weight-decay", "inf"], "--weight-decay"), (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"), (["--classes", "11", "2"], "--classes"),
    (["--model", "nope"], "--model"), (["--optimizer", "sgdd"], "--optimizer"),
])
def test_numeric_flags_are_bounded(tmp_path, capsys, flags, needle):
    _one_line_error(capsys, ["train", "--dataset", "synthetic", "--out", str(tmp_path / "o"),
                             *SMALL, *flags], needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("model, dataset, extra, needles", [
    ("mlp", "sine", [], ["--model mlp", "sine"]),
    ("rnn_regressor", "synthetic", [], ["--model rnn_regressor", "synthetic"]),
    ("binary_cnn", "mnist", [], ["binary_cnn", "fashion-mnist-binary"]),
    ("lenet", "synthetic", [], ["--model lenet", "synthetic"]),
    ("lenet5", "synthetic-rgb", [], ["--model lenet5", "synthetic-rgb", "(3, 32, 32)"]),
    ("wide_cnn", "imagenet", [], ["--dataset imagenet"]),
    ("mlp", "synthetic", ["--classes", "2", "4"], ["--classes"]),
    ("binary_cnn", "fashion-mnist-binary", ["--classes", "3", "3"], ["--classes 3 3"]),
])
def test_incompatible_model_and_dataset(tmp_path, capsys, model, dataset, extra, needles):
    _one_line_error(capsys, ["train", "--model", model, "--dataset", dataset, "--out",
                             str(tmp_path / "o"), "--epochs", "1", *SMALL, *extra], *needles)


def test_out_and_checkpoint_errors(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    _one_line_error(capsys, ["train", "--dataset", "synthetic", "--out", str(f), *SMALL],
                    str(f), "is a file")
    _one_line_error(capsys, ["train", "--dataset", "synthetic", "--out", str(f / "sub"),
                             *SMALL], "--out")
    _one_line_error(capsys, ["train", "--resume", str(tmp_path / "none.npz")], "none.npz")
    tk.save({"w": tk.ones(3)}, tmp_path / "foreign.npz")
    for argv in (["train", "--resume"], ["eval", "--checkpoint"], ["predict", "--checkpoint"]):
        _one_line_error(capsys, argv + [str(tmp_path / "foreign.npz")], "foreign.npz",
                        "not a checkpoint")
        _one_line_error(capsys, argv + [str(f)], str(f))
    _one_line_error(capsys, ["eval", "--checkpoint", str(f), "--batch-size", "0"],
                    "--batch-size")
    _one_line_error(capsys, ["predict", "--checkpoint", str(f), "--index", "-1"], "--index")


def test_predict_input_errors(tmp_path, capsys):
    assert _train(tmp_path, 1) == 0
    ckpt = str(tmp_path / "checkpoint.npz")
    capsys.readouterr()
    bad = tmp_path / "bad.npy"
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<f8", "fortran_order": False,
                                               "shape": (10**13,)})
    bad.write_bytes(hdr.getvalue() + b"\0" * 8)
    _one_line_error(capsys, ["predict", "--checkpoint", ckpt, "--input", str(bad)], str(bad))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _one_line_error(capsys, ["predict", "--checkpoint", ckpt, "--input",
                             str(tmp_path / "obj.npy")], "obj.npy")
    np.save(tmp_path / "shape.npy", np.zeros((2, 5, 5), np.float32))
    _one_line_error(capsys, ["predict", "--checkpoint", ckpt, "--input",
                             str(tmp_path / "shape.npy")], "shape.npy")
    _one_line_error(capsys, ["predict", "--checkpoint", ckpt, "--input",
                             str(tmp_path / "none.npy")], "none.npy")


def test_resume_refuses_contradicting_flags(tmp_path, capsys):
    assert _train(tmp_path / "a", 1, ["--scheduler", "cosine"]) == 0
    ck = str(tmp_path / "a" / "checkpoint.npz")
    for flags, needle in [(["--seed", "1"], "--seed 1 contradicts the checkpoint's --seed 0"),
                          (["--optimizer", "adam"], "--optimizer adam contradicts the "
                                                    "checkpoint's --optimizer sgd"),
                          (["--dataset", "mnist"], "--dataset mnist contradicts"),
                          (["--model", "mlp"], "--model mlp contradicts the checkpoint's "
                                               "--model lenet5"),
                          (["--limit-train", "128"], "--limit-train 128 contradicts the "
                                                     "checkpoint's --limit-train 256"),
                          (["--lr", "0.5"], "--lr 0.5 contradicts the checkpoint's --lr 0.02"),
                          (["--batch-size", "16"], "--batch-size 16"),
                          (["--momentum", "0.5"], "--momentum 0.5"),
                          (["--scheduler", "none"], "--scheduler none")]:
        _one_line_error(capsys, ["train", "--resume", ck, *flags], needle)
    # flags that may change: --device, --no-progress, --out, a larger --epochs (cosine)
    assert run(["train", "--resume", ck, "--seed", "0", "--model", "lenet5", "--epochs", "2",
                "--out", str(tmp_path / "c"), "--no-progress", "--no-plot"]) == 0
    assert tk.load(str(tmp_path / "c" / "checkpoint.npz"))["epoch"] == 2
    _one_line_error(capsys, ["train", "--resume", str(tmp_path / "c" / "checkpoint.npz"),
                             "--epochs", "1"], "--epochs 1 contradicts", "only grow")


def test_help_says_what_may_change_on_resume(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "may change on" in out and "--device" in out and "must match" in out


def _csv(tmp_path, text):
    p = tmp_path / "series.csv"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text, where", [
    ("v\n" + "1.0\n" * 30 + "abc\n" + "2.0\n" * 5, "line 32, column 1: 'abc'"),
    ("1.0,5\n" * 30 + ",5\n", "line 31, column 1: a missing value"),
    ("1.0,5\n" * 10 + "1.0\n" + "1.0,5\n" * 20, "line 11: 1 columns, expected 2"),
    ("1.0\n" * 10 + "nan\n" + "1.0\n" * 20, "line 11, column 1: 'nan'"),
    ("".join(f"{i}\nx{i}\n" for i in range(30)), "line 2, column 1: 'x0'"),
    ("1.0\n" * 10 + "\n" + "1.0\n" * 20, "line 11: empty row"),
    ("1\n2\n", "2 values"),
])
def test_csv_errors_name_file_line_and_column(tmp_path, capsys, text, where):
    path = _csv(tmp_path, text)
    with pytest.raises(ValueError, match=None) as exc:
        data.read_series_csv(path)
    assert str(exc.value).startswith(path) and where in str(exc.value), str(exc.value)
    _one_line_error(capsys, ["train", "--model", "rnn_regressor", "--dataset", path,
                             "--out", str(tmp_path / "o"), *SMALL], path, where)


def test_csv_series_with_header_trains(tmp_path):
    t = np.arange(300)
    path = _csv(tmp_path, "value,other\n" + "".join(f"{np.sin(i / 7):.5f},{i}\n" for i in t))
    np.testing.assert_allclose(data.read_series_csv(path), np.round(np.sin(t / 7), 5))
    assert run(["train", "--model", "rnn_regressor", "--dataset", path, "--epochs", "1",
                "--out", str(tmp_path / "o"), "--no-progress", "--no-plot"]) == 0


def test_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    import errno

    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 2:  # the first checkpoint (file + folder) is written, then the disk fills
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rc = _rc(["train", "--model", "mlp", "--dataset", "synthetic", "--epochs", "2",
              "--out", str(tmp_path), *SMALL])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "No space left" in err, err
    assert tk.load(str(tmp_path / "checkpoint.npz"))["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]

