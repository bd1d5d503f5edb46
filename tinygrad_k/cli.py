"""``python -m tinygrad_k``: train, evaluate and predict with the seed models.

    python -m tinygrad_k train --model lenet5 --epochs 3            # Fashion-MNIST, cpu
    python -m tinygrad_k train --model lenet5 --resume runs/lenet5/checkpoint.npz
    python -m tinygrad_k eval --checkpoint runs/lenet5/checkpoint.npz
    python -m tinygrad_k predict --checkpoint runs/lenet5/checkpoint.npz --index 0 1 2

A run directory (``--out``) receives ``checkpoint.npz`` (after every epoch, and on Ctrl-C),
``metrics.json`` and ``curves.png``.
"""
from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main", "build_parser", "train", "evaluate_checkpoint", "predict"]


def build_parser():
    from .models import SPECS

    p = argparse.ArgumentParser(prog="python -m tinygrad_k",
                                description="Train, evaluate and use tinygrad_k's seed models.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model, writing checkpoint, metrics and plot")
    t.add_argument("--model", default="lenet5", choices=sorted(SPECS))
    t.add_argument("--dataset", default=None,
                   help="fashion-mnist, fashion-mnist-binary, mnist, cifar10, synthetic (1x28x28), "
                        "synthetic-rgb (3x32x32), sine or a CSV file (rnn_regressor); "
                        "default: the model's own")
    t.add_argument("--data-dir", default=None, help="folder with the dataset files")
    t.add_argument("--classes", type=int, nargs=2, default=None, metavar=("NEG", "POS"),
                   help="the two classes of fashion-mnist-binary (binary_cnn; default 2 4: "
                        "Pullover vs Coat)")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--optimizer", default=None, choices=["sgd", "adam", "adamw", "rmsprop",
                                                          "adagrad"])
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--scheduler", default=None, choices=["none", "cosine", "step", "onecycle"],
                   help="learning-rate schedule (default: the model's own)")
    t.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="run directory (default runs/<model>)")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue a run from its checkpoint exactly")
    t.add_argument("--limit-train", type=int, default=None, help="use only N training samples")
    t.add_argument("--limit-test", type=int, default=None, help="use only N test samples")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--no-plot", action="store_true", help="skip the PNG plot")

    e = sub.add_parser("eval", help="test accuracy / loss of a checkpoint")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data-dir", default=None)
    e.add_argument("--device", default="cpu")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--limit-test", type=int, default=None)
    e.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("predict", help="class probabilities for test images or a .npy file")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--index", type=int, nargs="*", default=[0],
                   help="test-set indices to predict (default 0)")
    r.add_argument("--input", default=None,
                   help=".npy file with images (N,C,H,W), (N,H,W) or (H,W), values 0-255 or 0-1")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--device", default="cpu")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return train(args)
        if args.command == "eval":
            return evaluate_checkpoint(args)
        return predict(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


# -- the commands ----------------------------------------------------------------------------
def train(args):
    from . import random as R
    from .data import DataLoader, make_data
    from .io import load
    from .models import SPECS, build
    from .optim.factory import make_optimizer, make_scheduler
    from .trainer import TrainState, fit, restore_checkpoint, write_metrics

    spec = SPECS[args.model]
    dataset = args.dataset or spec.dataset
    if args.model == "binary_cnn" and dataset == "fashion-mnist":
        dataset = "fashion-mnist-binary"
    epochs = args.epochs if args.epochs is not None else spec.epochs
    batch_size = args.batch_size or spec.batch_size
    lr = args.lr if args.lr is not None else spec.lr
    opt_name = args.optimizer or spec.optimizer
    sched_name = args.scheduler or spec.scheduler
    out_dir = args.out or os.path.join("runs", args.model)
    os.makedirs(out_dir, exist_ok=True)
    ckpt_path = os.path.join(out_dir, "checkpoint.npz")

    R.manual_seed(args.seed)
    train_set, test_set, in_shape, num_classes, names = make_data(
        dataset, args.data_dir, args.limit_train, args.limit_test, spec.augment, args.seed,
        classes=args.classes)
    model = build(args.model, in_shape, num_classes).to(args.device)
    opt = make_optimizer(opt_name, model.parameters(), lr, args.momentum, args.weight_decay)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, seed=args.seed)
    sched, per_batch = make_scheduler(sched_name, opt, lr, epochs, len(loader))
    config = {"model": args.model, "dataset": dataset, "in_shape": list(in_shape),
              "num_classes": num_classes, "task": spec.task, "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "optimizer": opt_name, "seed": args.seed,
              "scheduler": sched_name, "class_names": list(names) if names else None,
              "limit_train": args.limit_train, "limit_test": args.limit_test,
              "classes": list(args.classes) if args.classes else None}
    state = TrainState(model, opt, sched, per_batch, loader, test_set, task=spec.task,
                       epochs=epochs, device=args.device, ckpt_path=ckpt_path, config=config,
                       progress=not args.no_progress)
    if args.resume:
        ck = load(args.resume)
        if ck.get("config", {}).get("model") != args.model:
            raise ValueError(f"--resume {args.resume}: checkpoint is for model "
                             f"{ck.get('config', {}).get('model')!r}, not {args.model!r}")
        planned = ck["config"].get("epochs")
        if per_batch and planned != epochs:
            raise ValueError(f"--resume {args.resume}: its {sched_name} schedule was planned for "
                             f"{planned} epochs; resume with --epochs {planned} (or train "
                             "with another --scheduler to extend a run)")
        restore_checkpoint(state, ck)
        print(f"resumed from {args.resume} at epoch {state.epoch + 1}, batch {state.step}")

    print(f"training {args.model} on {dataset} ({len(train_set)} train / {len(test_set)} "
          f"test samples) for {epochs} epochs on {args.device}, {opt_name} lr={lr}, "
          f"batch {batch_size}")
    rc = fit(state)
    if rc:
        return rc
    history = state.history
    metrics_path = write_metrics(out_dir, config, history)
    print(f"checkpoint: {ckpt_path}\nmetrics:    {metrics_path}")
    if not args.no_plot:
        from .plotting import plot_curves

        png = plot_curves(out_dir, history, args.model)
        print(f"plot:       {png}" if png else "plot:       skipped (pip install matplotlib)")
    if history["test_accuracy"] and history["test_accuracy"][-1] is not None:
        print(f"final test accuracy: {history['test_accuracy'][-1]:.4f}")
    return 0


def _restore(checkpoint_path, device, data_dir=None, limit_test=None):
    from .data import make_data
    from .io import load
    from .models import build

    ck = load(checkpoint_path)
    cfg = ck.get("config") if isinstance(ck, dict) else None
    if not cfg:
        raise ValueError(f"{checkpoint_path}: not a training checkpoint (no 'config' entry)")
    model = build(cfg["model"], tuple(cfg["in_shape"]), cfg["num_classes"]).to(device)
    model.load_state_dict(ck["model"])
    model.eval()
    _, test_set, _, _, _ = make_data(cfg["dataset"], data_dir, 1, limit_test,
                                     seed=cfg.get("seed", 0), classes=cfg.get("classes"))
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
    names = cfg.get("class_names")
    if args.input:
        x = np.load(args.input, allow_pickle=False).astype(np.float32)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
