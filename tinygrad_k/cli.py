"""``python -m tinygrad_k``: train, evaluate and predict with the seed models.

    python -m tinygrad_k train --model lenet5 --epochs 3            # Fashion-MNIST, cpu
    python -m tinygrad_k train --resume runs/lenet5/checkpoint.npz  # continue a run exactly
    python -m tinygrad_k eval --checkpoint runs/lenet5/checkpoint.npz
    python -m tinygrad_k predict --checkpoint runs/lenet5/checkpoint.npz --index 0 1 2
    python -m tinygrad_k train --model char_transformer --dataset words
    python -m tinygrad_k sample --checkpoint runs/char_transformer/checkpoint.npz --num 10

A run directory (``--out``) receives ``checkpoint.npz`` (after every epoch, and on Ctrl-C
or SIGTERM), ``metrics.json`` and ``curves.png``.

Every mistake in the command line or in the files it names (a value out of bounds, a
model that cannot read the dataset, a missing or foreign checkpoint, a malformed CSV) is
one line on stderr and exit status 2, never a traceback. An interrupted run exits with
128 + the signal number (130 for Ctrl-C, 143 for SIGTERM) after writing its checkpoint;
a failure to write (a full disk) is one line and exit status 1.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading

__all__ = ["main", "build_parser", "train", "evaluate_checkpoint", "predict", "sample", "UsageError"]


class UsageError(ValueError):
    """A mistake in the command line or in a file it names: one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_flag(lo, hi):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer in [{lo}, {hi}], got {v}")
        return v
    return parse


def _float_flag(lo, hi, lo_open=False, hi_open=False):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(v) and (lo < v if lo_open else lo <= v) and (
            v < hi if hi_open else v <= hi)
        if not ok:
            rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be a finite number in {rng}, got {text}")
        return v
    return parse


RESUME_HELP = """\
resuming (--resume CHECKPOINT):
  The run continues exactly where the checkpoint was written, with the settings
  recorded in it: flags left out are taken from the checkpoint. These may change on
  resume: --device, --data-dir, --out (default: the checkpoint's folder), --no-progress,
  --no-plot, and --epochs may grow (not with the onecycle schedule, which is planned for
  its number of epochs; the cosine and step schedules continue from their saved state).
  Every other flag (--model --dataset --classes --batch-size --lr --optimizer --momentum
  --weight-decay --scheduler --seed --limit-train --limit-test) must match the
  checkpoint: a contradicting value is refused, naming the flag and both values.

interruptions:
  Ctrl-C (SIGINT) or SIGTERM finishes the batch in flight, writes a checkpoint and exits
  with 130 / 143; a second signal aborts at once, keeping the last checkpoint written.
"""

# the flags that define a run's results: recorded in the checkpoint, checked on resume
RUN_FLAGS = (("model", "--model"), ("dataset", "--dataset"), ("classes", "--classes"),
             ("batch_size", "--batch-size"), ("lr", "--lr"), ("optimizer", "--optimizer"),
             ("momentum", "--momentum"), ("weight_decay", "--weight-decay"),
             ("scheduler", "--scheduler"), ("seed", "--seed"),
             ("limit_train", "--limit-train"), ("limit_test", "--limit-test"))
IMAGE_DATASETS = ("fashion-mnist", "fashion-mnist-binary", "mnist", "cifar10", "synthetic",
                  "synthetic-rgb")


def build_parser():
    from .models import SPECS
    from .optim.factory import OPTIMIZERS, SCHEDULERS

    p = _Parser(prog="python -m tinygrad_k",
                description="Train, evaluate and use tinygrad_k's seed models.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model, writing checkpoint, metrics and plot",
                       epilog=RESUME_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--model", default=None, choices=sorted(SPECS),
                   help="default lenet5 (on --resume: the checkpoint's)")
    t.add_argument("--dataset", default=None,
                   help="fashion-mnist, fashion-mnist-binary, mnist, cifar10, synthetic (1x28x28), "
                        "synthetic-rgb (3x32x32), sine or a CSV file whose column 1 is the "
                        "series (rnn_regressor), words or a .txt file (bigram, char_mlp, "
                        "char_transformer); default: the model's own")
    t.add_argument("--data-dir", default=None, help="folder with the dataset files")
    t.add_argument("--classes", type=_int_flag(0, 9), nargs=2, default=None,
                   metavar=("NEG", "POS"),
                   help="the two classes of fashion-mnist-binary (binary_cnn; default 2 4: "
                        "Pullover vs Coat)")
    t.add_argument("--epochs", type=_int_flag(1, 100_000), default=None)
    t.add_argument("--batch-size", type=_int_flag(1, 1 << 20), default=None)
    t.add_argument("--lr", type=_float_flag(0, 1000, lo_open=True), default=None)
    t.add_argument("--optimizer", default=None, choices=list(OPTIMIZERS))
    t.add_argument("--momentum", type=_float_flag(0, 1, hi_open=True), default=None,
                   help="SGD momentum in [0, 1) (default 0.9)")
    t.add_argument("--weight-decay", type=_float_flag(0, 1000), default=None,
                   help="default 0")
    t.add_argument("--scheduler", default=None, choices=list(SCHEDULERS),
                   help="learning-rate schedule (default: the model's own)")
    t.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    t.add_argument("--seed", type=_int_flag(0, 2**32 - 1), default=None, help="default 0")
    t.add_argument("--out", default=None, help="run directory (default runs/<model>)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue a run from its checkpoint exactly (see below)")
    t.add_argument("--limit-train", type=_int_flag(1, 2**31), default=None,
                   help="use only the first N training samples")
    t.add_argument("--limit-test", type=_int_flag(1, 2**31), default=None,
                   help="use only the first N test samples")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    t.add_argument("--diagnostics", action="store_true",
                   help="record per-layer activation / gradient statistics and update ratios "
                        "(diagnostics.json and diag_*.png in the run folder); the training "
                        "itself is unchanged")
    t.add_argument("--diag-every", type=_int_flag(1, 10**9), default=50, metavar="N",
                   help="with --diagnostics: record one step in N (default 50)")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over the ranks of an MPI launcher (detected by itself "
                        "under mpiexec); --batch-size is then the global batch")

    e = sub.add_parser("eval", help="test accuracy / loss of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data-dir", default=None)
    e.add_argument("--device", default="cpu")
    e.add_argument("--batch-size", type=_int_flag(1, 1 << 20), default=256)
    e.add_argument("--limit-test", type=_int_flag(1, 2**31), default=None)
    e.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("predict", help="class probabilities for test images or a .npy file")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--index", type=_int_flag(0, 2**31), nargs="*", default=[0],
                   help="test-set indices to predict (default 0)")
    r.add_argument("--input", default=None,
                   help=".npy file with images (N,C,H,W), (N,H,W) or (H,W), values 0-255 or 0-1")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--device", default="cpu")

    s = sub.add_parser("sample", help="new words from a character-level language model "
                                      "(bigram, char_mlp, char_transformer) checkpoint")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--num", type=_int_flag(1, 1_000_000), default=10,
                   help="how many words (default 10)")
    s.add_argument("--seed", type=_int_flag(0, 2**63 - 1), default=0)
    s.add_argument("--temperature", type=_float_flag(0, 1000, lo_open=True), default=1.0,
                   help="< 1: more typical words, > 1: more surprising ones (default 1)")
    s.add_argument("--max-len", type=_int_flag(1, 10_000), default=None,
                   help="cut words at this length")
    s.add_argument("--device", default="cpu")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    caught = {}

    def on_sigterm(signum, frame):  # outside the training loop: as Ctrl-C
        caught["signal"] = signum
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        if args.command == "train":
            from .distributed import training as dtrain

            if dtrain.wanted(args):
                return _train_distributed(args, dtrain)
            return train(args)
        if args.command == "eval":
            return evaluate_checkpoint(args)
        if args.command == "sample":
            return sample(args)
        return predict(args)
    except KeyboardInterrupt:
        # a signal outside the training loop (setup, metrics, plot): every checkpoint on
        # disk is complete, so say so instead of printing a traceback
        signum = caught.get("signal", signal.SIGINT)
        print(f"\ninterrupted ({signal.Signals(signum).name}); checkpoints already written "
              "are complete (--resume one to continue or to rewrite the metrics and plot)",
              file=sys.stderr)
        return 128 + int(signum)
    except (ValueError, RuntimeError, FileNotFoundError, NotADirectoryError,
            IsADirectoryError, PermissionError) as exc:
        _one_line(exc)
        return 2
    except OSError as exc:  # a full disk, an I/O error: not the user's mistake
        _one_line(exc)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _one_line(exc):
    msg = " ".join(str(exc).split()) or type(exc).__name__
    print(f"error: {msg}", file=sys.stderr)


# -- the run's configuration -------------------------------------------------------------
def _norm(key, value):
    if key == "classes" and value is not None:
        return [int(c) for c in value]
    return value


def _show(value):
    return " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def resolve_config(args, saved=None, resume_path=None):
    """The run's settings: flags given, else the checkpoint's (``saved``, on resume), else
    the model's defaults. On resume a given flag must match the checkpoint."""
    from .data.datasets import BINARY_PAIR
    from .models import SPECS

    saved = saved or {}
    given = {k: _norm(k, getattr(args, k)) for k, _ in RUN_FLAGS}
    model = given["model"] or saved.get("model") or "lenet5"
    spec = SPECS[model]
    if given["dataset"] is not None and model == "binary_cnn" \
            and given["dataset"] == "fashion-mnist":
        given["dataset"] = "fashion-mnist-binary"
    defaults = {"model": model, "dataset": spec.dataset, "classes": None,
                "batch_size": spec.batch_size, "lr": spec.lr, "optimizer": spec.optimizer,
                "momentum": 0.9, "weight_decay": 0.0, "scheduler": spec.scheduler, "seed": 0,
                "limit_train": None, "limit_test": None}
    cfg = {}
    for key, flag in RUN_FLAGS:
        if key in saved:
            if given[key] is not None and given[key] != _norm(key, saved[key]):
                raise UsageError(f"--resume {resume_path}: {flag} {_show(given[key])} "
                                 f"contradicts the checkpoint's {flag} {_show(saved[key])}")
            cfg[key] = _norm(key, saved[key])
        else:
            cfg[key] = given[key] if given[key] is not None else defaults[key]
    if cfg["model"] == "binary_cnn" and cfg["dataset"] == "fashion-mnist":
        cfg["dataset"] = "fashion-mnist-binary"
    epochs = args.epochs
    if "epochs" in saved:
        planned = int(saved["epochs"])
        if epochs is not None and epochs != planned:
            if cfg["scheduler"] == "onecycle":
                raise UsageError(f"--resume {resume_path}: --epochs {epochs} contradicts the "
                                 f"checkpoint's --epochs {planned}: its onecycle schedule is "
                                 "planned for its epochs (train with another --scheduler to "
                                 "extend a run)")
            if epochs < planned:
                raise UsageError(f"--resume {resume_path}: --epochs {epochs} contradicts the "
                                 f"checkpoint's --epochs {planned} (it may only grow)")
        epochs = epochs or planned
    cfg["epochs"] = epochs if epochs is not None else spec.epochs
    cfg["task"] = spec.task

    from .data.text import is_words_dataset

    ds = cfg["dataset"]
    series = ds == "sine" or ds.lower().endswith(".csv")
    words = is_words_dataset(ds)
    if not series and not words and ds not in IMAGE_DATASETS:
        raise UsageError(f"--dataset {ds}: unknown; expected one of "
                         f"{', '.join(IMAGE_DATASETS)}, sine or a .csv file, words or a "
                         ".txt file")
    want = {"regress": "a series (--dataset sine or a .csv file)",
            "binary": "fashion-mnist-binary", "classify": "an image dataset",
            "lm": "words (--dataset words or a .txt file)"}[spec.task]
    if (spec.task == "regress") != series or (spec.task == "lm") != words or (
            spec.task == "binary" and ds != "fashion-mnist-binary"):
        raise UsageError(f"--model {model} cannot train on --dataset {ds}: it needs {want}")
    if ds == "fashion-mnist-binary":
        cfg["classes"] = cfg["classes"] or list(BINARY_PAIR)
        if cfg["classes"][0] == cfg["classes"][1]:
            raise UsageError(f"--classes {_show(cfg['classes'])}: expected two different "
                             "classes")
    elif cfg["classes"] is not None:
        raise UsageError(f"--classes applies only to --dataset fashion-mnist-binary, not {ds}")
    return cfg


def _training_checkpoint(ck, path, flag):
    from .models import SPECS
    from .trainer import CHECKPOINT_KEYS

    cfg = ck.get("config") if isinstance(ck, dict) else None
    if not isinstance(cfg, dict) or cfg.get("model") not in SPECS:
        raise UsageError(f"{flag} {path}: not a checkpoint of `python -m tinygrad_k train` "
                         "(no run configuration in it)")
    missing = [k for k in CHECKPOINT_KEYS if k not in ck
               and k not in ("epoch_trained", "epoch_sums")]
    if flag == "--resume" and missing:
        raise UsageError(f"{flag} {path}: not a complete training checkpoint (no "
                         f"{', '.join(missing)})")
    return cfg


def _check_fits(model, cfg, test_set, device):
    """One test sample through the model (eval mode, no gradients, no random draws): a
    model that cannot read the dataset fails here with one line, not mid-run."""
    from .autograd import no_grad
    from .data import fetch_batch
    from .tensor import tensor

    import numpy as np

    x = np.asarray(fetch_batch(test_set, np.arange(1))[0])
    if cfg["task"] == "lm":   # character indices in, logits per position out
        x, want = tensor(x), (1, x.shape[1], cfg["num_classes"])
    else:
        x = tensor(x.astype(np.float32))
        want = (1, 1) if cfg["task"] in ("binary", "regress") else (1, cfg["num_classes"])
    model.eval()
    try:
        with no_grad():
            out = model(x.to(device))
        if tuple(out.shape) != want:
            raise ValueError(f"output shape {tuple(out.shape)}, expected {want}")
    except (ValueError, RuntimeError, IndexError, TypeError) as exc:
        raise UsageError(f"--model {cfg['model']} cannot take --dataset {cfg['dataset']} "
                         f"inputs of shape {tuple(cfg['in_shape'])}: {exc}") from None
    finally:
        model.train()


# -- the commands ----------------------------------------------------------------------------
def _train_distributed(args, dtrain):
    dt = dtrain.DistributedTraining(args.device)
    dt.quiet_unless_main()
    try:
        return train(args, dt)
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        dt.fail(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        dt.close()


def train(args, dist_run=None):
    """The ``train`` command; ``dist_run`` (a ``distributed.training.DistributedTraining``)
    makes it one rank of a data-parallel run."""
    from . import random as R
    from .data import DataLoader, make_data
    from .io import load
    from .models import build
    from .optim.factory import make_optimizer, make_scheduler
    from .trainer import TrainState, fit, restore_checkpoint, write_metrics

    ck = None
    if args.resume:
        ck = load(args.resume, map_location="cpu")
        saved = _training_checkpoint(ck, args.resume, "--resume")
        cfg = resolve_config(args, saved, args.resume)
    else:
        cfg = resolve_config(args)
    out_dir = args.out or (os.path.dirname(os.path.abspath(args.resume)) if args.resume
                           else os.path.join("runs", cfg["model"]))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"--out {out_dir}: is a file, expected a folder for the run")
    main_rank = dist_run is None or dist_run.is_main
    try:
        if main_rank:
            os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out_dir}: cannot create the run folder ({exc.strerror})") \
            from None
    # only rank 0 writes the checkpoint (the trainer skips saving without a path)
    ckpt_path = os.path.join(out_dir, "checkpoint.npz") if main_rank else None

    R.manual_seed(cfg["seed"])
    train_set, test_set, in_shape, num_classes, names = make_data(
        cfg["dataset"], args.data_dir, cfg["limit_train"], cfg["limit_test"],
        _spec(cfg).augment, cfg["seed"], classes=cfg["classes"])
    cfg.update(in_shape=list(in_shape), num_classes=num_classes,
               class_names=list(names) if names else None)
    try:
        model = build(cfg["model"], in_shape, num_classes).to(args.device)
    except ValueError as exc:
        raise UsageError(f"--model {cfg['model']} cannot take --dataset {cfg['dataset']}: "
                         f"{exc}") from None
    _check_fits(model, cfg, test_set, args.device)
    if dist_run is not None:
        dist_run.wrap(model)  # rank 0's initial weights on every rank
    opt = make_optimizer(cfg["optimizer"], model.parameters(), cfg["lr"], cfg["momentum"],
                         cfg["weight_decay"])
    if dist_run is not None:
        loader = dist_run.loader(train_set, cfg["batch_size"], cfg["seed"])
    else:
        loader = DataLoader(train_set, batch_size=cfg["batch_size"], shuffle=True,
                            seed=cfg["seed"])
    sched, per_batch = make_scheduler(cfg["scheduler"], opt, cfg["lr"], cfg["epochs"],
                                      len(loader))
    config = {k: cfg[k] for k in ("model", "dataset", "in_shape", "num_classes", "task",
                                  "epochs", "batch_size", "lr", "optimizer", "momentum",
                                  "weight_decay", "seed", "scheduler", "class_names",
                                  "limit_train", "limit_test", "classes")}
    if dist_run is not None:
        config["world_size"] = dist_run.world_size
    state = TrainState(model, opt, sched, per_batch, loader, test_set, task=cfg["task"],
                       epochs=cfg["epochs"], device=args.device, ckpt_path=ckpt_path,
                       config=config, progress=not args.no_progress and main_rank)
    if dist_run is not None:
        state.callbacks.append(dist_run)
    diag = None
    if getattr(args, "diagnostics", False) and main_rank:
        from .diagnostics import Diagnostics   # after dist_run: it sees averaged gradients

        diag = Diagnostics(model, every=args.diag_every).attach()
        state.callbacks.append(diag)
    if ck is not None:
        try:
            restore_checkpoint(state, ck)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:
            raise UsageError(f"--resume {args.resume}: cannot restore the run from it "
                             f"({type(exc).__name__}: {exc})") from None
        print(f"resumed from {args.resume} at epoch {state.epoch + 1}, batch {state.step}")

    ranks = "" if dist_run is None else \
        f" over {dist_run.world_size} ranks ({cfg['batch_size'] // dist_run.world_size} per rank)"
    print(f"training {cfg['model']} on {cfg['dataset']} ({len(train_set)} train / "
          f"{len(test_set)} test samples) for {cfg['epochs']} epochs on {args.device}, "
          f"{cfg['optimizer']} lr={cfg['lr']}, batch {cfg['batch_size']}{ranks}")
    rc = fit(state)
    if diag is not None:   # also after an interruption: what was recorded so far
        diag.detach()
        paths = diag.save(out_dir, plots=not args.no_plot)
        print(diag.summary())
        print("diagnostics: " + ", ".join(paths))
    if rc or not main_rank:
        return rc
    history = state.history
    metrics_path = write_metrics(out_dir, config, history)
    print(f"checkpoint: {ckpt_path}\nmetrics:    {metrics_path}")
    if not args.no_plot:
        from .plotting import plot_curves

        png = plot_curves(out_dir, history, cfg["model"])
        print(f"plot:       {png}" if png else "plot:       skipped (pip install matplotlib)")
    if history["test_accuracy"] and history["test_accuracy"][-1] is not None:
        print(f"final test accuracy: {history['test_accuracy'][-1]:.4f}")
    return 0


def _spec(cfg):
    from .models import SPECS

    return SPECS[cfg["model"]]


def _restore(checkpoint_path, device, data_dir=None, limit_test=None):
    from .data import make_data
    from .io import load
    from .models import build

    ck = load(checkpoint_path, map_location="cpu")
    cfg = _training_checkpoint(ck, checkpoint_path, "--checkpoint")
    try:
        model = build(cfg["model"], tuple(int(d) for d in cfg["in_shape"]),
                      int(cfg["num_classes"])).to(device)
        model.load_state_dict(ck["model"])
        task, dataset = str(cfg["task"]), str(cfg["dataset"])
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:
        raise UsageError(f"--checkpoint {checkpoint_path}: cannot rebuild its model "
                         f"({type(exc).__name__}: {exc})") from None
    model.eval()
    _, test_set, _, _, _ = make_data(dataset, data_dir, 1, limit_test,
                                     seed=cfg.get("seed", 0), classes=cfg.get("classes"))
    cfg = dict(cfg, task=task, dataset=dataset)
    return model, cfg, test_set


def evaluate_checkpoint(args):
    from .trainer import evaluate

    model, cfg, test_set = _restore(args.checkpoint, args.device, args.data_dir, args.limit_test)
    loss, acc = evaluate(model, test_set, cfg["task"], args.device, args.batch_size,
                         progress=not args.no_progress)
    msg = f"{cfg['model']} on {cfg['dataset']} ({len(test_set)} test samples): loss {loss:.4f}"
    print(msg + (f"  accuracy {acc:.4f}" if acc is not None else ""))
    return 0


def predict(args):
    import numpy as np

    from .autograd import no_grad
    from .data.datasets import NORMALIZE
    from .tensor import tensor

    model, cfg, test_set = _restore(args.checkpoint, args.device, args.data_dir)
    if cfg["task"] == "lm":
        raise ValueError(f"predict: {args.checkpoint} is a language model ({cfg['model']}); "
                         "generate words with `python -m tinygrad_k sample --checkpoint ...`")
    names = cfg.get("class_names")
    if args.input:
        from .io import read_npy

        x = read_npy(args.input)
        if x.dtype.kind not in "biuf" or x.size == 0:
            raise UsageError(f"--input {args.input}: holds {x.dtype} {x.shape}, expected "
                             "numbers")
        x = x.astype(np.float32)
        want = tuple(cfg["in_shape"])
        x = x.reshape((-1,) + want) if x.size % int(np.prod(want)) == 0 else x
        if x.shape[1:] != want:
            raise ValueError(f"predict: {args.input} holds shape {x.shape}, expected "
                             f"(N,) + {want}")
        if x.max() > 1.5:
            x = x / 255.0
        mean, std = NORMALIZE.get(cfg["dataset"].replace("-binary", ""), ((0.5,), (0.5,)))
        x = (x - np.array(mean, np.float32).reshape(-1, 1, 1)) / np.array(
            std, np.float32).reshape(-1, 1, 1)
        xs, labels = tensor(x), [None] * len(x)
    else:
        for i in args.index:
            if not 0 <= i < len(test_set):
                raise ValueError(f"predict: index {i} out of range for {len(test_set)} test "
                                 "samples")
        items = [test_set[i] for i in args.index]
        xs = tensor(np.stack([np.asarray(a) for a, _ in items]))
        labels = [b for _, b in items]
    with no_grad():
        out = model(xs.to(args.device))
    if cfg["task"] == "classify":
        probs = out.softmax(1).numpy()
    elif cfg["task"] == "binary":
        p1 = out.numpy()[:, 0]
        probs = np.stack([1 - p1, p1], axis=1)
    else:
        for k, v in enumerate(out.numpy()[:, 0]):
            print(f"sample {k}: predicted next value {v:.4f}"
                  + (f" (true {float(np.asarray(labels[k]).ravel()[0]):.4f})"
                     if labels[k] is not None else ""))
        return 0
    for k, p in enumerate(probs):
        c = int(p.argmax())
        name = names[c] if names else str(c)
        true = "" if labels[k] is None else \
            f"  true: {names[int(labels[k])] if names else int(labels[k])}"
        print(f"sample {k}: {name} (p={p[c]:.3f}){true}")
    return 0


def sample(args):
    """Print ``--num`` words drawn from a language-model checkpoint (no dataset needed)."""
    from .io import load
    from .models import build
    from .models.charlm import sample as draw

    ck = load(args.checkpoint, map_location="cpu")
    cfg = _training_checkpoint(ck, args.checkpoint, "--checkpoint")
    if cfg.get("task") != "lm":
        raise UsageError(f"--checkpoint {args.checkpoint}: holds a {cfg.get('model')} model; "
                         "sample needs a language model (bigram, char_mlp or "
                         "char_transformer trained on words)")
    try:
        model = build(cfg["model"], tuple(int(d) for d in cfg["in_shape"]),
                      int(cfg["num_classes"])).to(args.device)
        model.load_state_dict(ck["model"])
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:
        raise UsageError(f"--checkpoint {args.checkpoint}: cannot rebuild its model "
                         f"({type(exc).__name__}: {exc})") from None
    for word in draw(model, args.num, args.seed, args.temperature, args.max_len, args.device):
        print(word)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
