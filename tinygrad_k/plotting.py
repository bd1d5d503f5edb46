"""Training curves as a PNG: batch loss (raw and smoothed), epoch train/test loss, test
accuracy (or test MSE for regression). Needs matplotlib (the ``plot`` extra)."""
from __future__ import annotations

import os

import numpy as np

__all__ = ["plot_curves"]


def plot_curves(out_dir, history, title):
    """``history`` (the trainer's: step_loss, epoch, train_loss, test_loss, test_accuracy)
    -> ``out_dir/curves.png``, written atomically. Returns its path, or None without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    steps = np.arange(1, len(history["step_loss"]) + 1)
    losses = np.asarray(history["step_loss"], dtype=np.float64)
    axes[0].plot(steps, losses, lw=0.4, alpha=0.3, color="tab:blue", label="batch loss")
    k = max(1, len(losses) // 100)
    if len(losses) > 2 * k:  # running mean: the trend under the batch-to-batch noise
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        axes[0].plot(steps[k - 1:], smooth, lw=1.2, color="tab:blue",
                     label=f"batch loss, mean of {k}")
    if history["epoch"]:
        per_epoch = len(steps) / len(history["epoch"])
        ex = np.array(history["epoch"]) * per_epoch
        axes[0].plot(ex, history["train_loss"], "o-", color="tab:orange",
                     label="train loss (epoch)")
        axes[0].plot(ex, history["test_loss"], "s-", color="tab:green", label="test loss")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss")
    axes[0].set_yscale("log")
    axes[0].legend()
    accs = [a for a in history["test_accuracy"] if a is not None]
    if accs:
        axes[1].plot(history["epoch"][:len(accs)], accs, "o-")
        axes[1].set_ylabel("test accuracy")
    else:
        axes[1].plot(history["epoch"], history["test_loss"], "o-")
        axes[1].set_ylabel("test MSE")
    axes[1].set_xlabel("epoch")
    axes[1].xaxis.get_major_locator().set_params(integer=True)
    axes[1].grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(out_dir, "curves.png")
    fig.savefig(path + ".tmp.png", dpi=100)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
    return path
