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
import sys

__all__ = ["main", "build_parser"]


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
    from . import trainer

    try:
        if args.command == "train":
            return trainer.train(args)
        if args.command == "eval":
            return trainer.evaluate_checkpoint(args)
        return trainer.predict(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
