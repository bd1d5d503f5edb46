"""The training loop behind ``python -m tinygrad_k train`` (and ``eval`` / ``predict``).

Exact resume: the checkpoint holds the model, the optimizer (and scheduler) state, the
framework's RNG state, the metrics so far and where in the run it was written (epoch, and
the batch within the epoch for a Ctrl-C checkpoint). The loader's order depends only on
(seed, epoch), so a resumed run replays the remaining batches in the same order with the
same random state and reaches the same weights as an uninterrupted run.
"""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from . import data as D
from . import nn, optim
from . import random as R
from .io import load, save
from .models import SPECS, build
from .tensor import tensor

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck")
# binary_cnn's default pair: Pullover vs Coat, a hard pair (measured 91% after 3 epochs).
# T-shirt/top vs Shirt (--classes 0 6) is the hardest pair of the set: 88% after 8 epochs.
BINARY_PAIR = (2, 4)
# per-channel mean/std of the training sets (inputs scaled to [0, 1] first)
NORMALIZE = {"fashion-mnist": ((0.2860,), (0.3530,)), "mnist": ((0.1307,), (0.3081,)),
             "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))}


# -- data -----------------------------------------------------------------------------
class SeriesWindows(D.Dataset):
    """Sliding windows of a 1-D series: x = s[i : i+T] as (T, 1), y = s[i+T] as (1,)."""

    def __init__(self, series, window):
        self.series = np.asarray(series, dtype=np.float32)
        self.window = window
        if len(self.series) <= window:
            raise ValueError(f"series of length {len(self.series)} is too short for windows "
                             f"of {window}")

    def __len__(self):
        return len(self.series) - self.window

    def __getitem__(self, i):
        return self.get_batch(np.array([i]))[0][0], self.get_batch(np.array([i]))[1][0]

    def get_batch(self, idx):
        idx = np.asarray(idx)
        offs = idx[:, None] + np.arange(self.window)[None, :]
        return self.series[offs][..., None], self.series[idx + self.window][:, None]


def make_series(name, n=2000, seed=0):
    """A reproducible series (sum of two sines + noise), or a CSV's first numeric column."""
    if name == "sine":
        rng = np.random.default_rng(seed)
        t = np.arange(n, dtype=np.float64)
        s = np.sin(2 * np.pi * t / 50) + 0.5 * np.sin(2 * np.pi * t / 23)
        return (s + 0.05 * rng.standard_normal(n)).astype(np.float32)
    if not os.path.exists(name):
        raise FileNotFoundError(f"rnn_regressor: series {name!r} is neither 'sine' nor a CSV "
                                "file")
    values = np.genfromtxt(name, delimiter=",", dtype=np.float64)
    values = values[:, 0] if values.ndim == 2 else values
    values = values[np.isfinite(values)]
    if values.size < 20:
        raise ValueError(f"{name}: expected a CSV with a numeric column of at least 20 values")
    return ((values - values.mean()) / (values.std() + 1e-12)).astype(np.float32)


def make_data(dataset, data_dir, limit_train=None, limit_test=None, augment=False, seed=0,
              window=20, classes=None):
    """-> train_set, test_set, input shape, number of classes, class names."""
    if dataset == "sine" or dataset.endswith(".csv"):
        s = make_series(dataset, seed=seed)
        cut = int(len(s) * 0.8)
        train, test = SeriesWindows(s[:cut], window), SeriesWindows(s[cut - window:], window)
        return _limit(train, limit_train), _limit(test, limit_test), (window, 1), 1, None
    base = "fashion-mnist" if dataset == "fashion-mnist-binary" else dataset
    if base == "synthetic-rgb":  # CIFAR-shaped generated data for lenet/resnet18 without CIFAR
        train = D.load_dataset("synthetic", train=True, shape=(3, 32, 32))
        test = D.load_dataset("synthetic", train=False, shape=(3, 32, 32))
    else:
        train = D.load_dataset(base, root=data_dir, train=True)
        test = D.load_dataset(base, root=data_dir, train=False)
    names = FASHION_CLASSES if base == "fashion-mnist" else (
        CIFAR_CLASSES if base == "cifar10" else None)
    if dataset == "fashion-mnist-binary":
        a, b = classes or BINARY_PAIR
        train, test = D.class_subset(train, (a, b)), D.class_subset(test, (a, b))
        names = (FASHION_CLASSES[a], FASHION_CLASSES[b])
    mean, std = NORMALIZE.get(base, ((0.5,), (0.5,)))
    test_tf = D.Normalize(mean, std)
    train_tf = test_tf
    if augment:
        train_tf = D.Compose([D.RandomCrop(train[0][0].shape[-1], padding=4),
                              D.RandomHorizontalFlip(), test_tf])
    train.transform, test.transform = train_tf, test_tf
    in_shape = tuple(train[0][0].shape)
    num_classes = len(names) if names else int(_num_classes(train))
    return _limit(train, limit_train), _limit(test, limit_test), in_shape, num_classes, names


def _num_classes(ds):
    labels = getattr(ds, "labels", None)
    return int(np.max(labels)) + 1 if labels is not None else 10


def _limit(ds, n):
    if n is None or n >= len(ds):
        return ds
    return D.Subset(ds, np.arange(n))


# -- model / optimizer ------------------------------------------------------------------
def make_optimizer(name, params, lr, momentum=0.9, weight_decay=0.0):
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=weight_decay or 1e-2)
    if name == "rmsprop":
        return optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def make_scheduler(name, opt, lr, epochs, steps_per_epoch):
    """-> (scheduler or None, whether it steps every batch)."""
    if name == "none":
        return None, False
    if name == "cosine":
        return optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs), False
    if name == "step":
        return optim.lr_scheduler.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1), False
    return optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs,
                                         steps_per_epoch=steps_per_epoch), True


def loss_and_score(task):
    """-> loss module, function(output, target) -> number of correct predictions."""
    if task == "classify":
        return nn.CrossEntropyLoss(), lambda out, y: int((out.argmax(1) == y).numpy().sum())
    if task == "binary":
        return nn.BCELoss(), lambda out, y: int(((out.numpy() > 0.5) == (y.numpy() > 0.5)).sum())
    return nn.MSELoss(), None


def _targets(y, task):
    return y.float().reshape(-1, 1) if task == "binary" else y


# -- loops -------------------------------------------------------------------------------
def _bar(iterable, total, desc, disable):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency; degrade quietly if removed
        return iterable
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False,
                dynamic_ncols=True, mininterval=0.5)


def evaluate(model, dataset, task, device="cpu", batch_size=256, progress=False):
    """Mean loss and accuracy (None for regression) of ``model`` over ``dataset``."""
    loss_fn, score = loss_and_score(task)
    loader = D.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    model.eval()
    total_loss, correct, n = 0.0, 0, 0
    from .autograd import no_grad

    with no_grad():
        for x, y in _bar(loader, len(loader), "eval", not progress):
            x, y = x.to(device), y.to(device)
            out = model(x)
            t = _targets(y, task)
            total_loss += loss_fn(out, t).item() * len(y)
            if score is not None:
                correct += score(out, t)
            n += len(y)
    model.train()
    return total_loss / max(n, 1), (correct / n if score is not None and n else None)


def train(args):
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
    loader = D.DataLoader(train_set, batch_size=batch_size, shuffle=True, seed=args.seed)
    sched, per_batch = make_scheduler(sched_name, opt, lr, epochs, len(loader))
    loss_fn, score = loss_and_score(spec.task)
    config = {"model": args.model, "dataset": dataset, "in_shape": list(in_shape),
              "num_classes": num_classes, "task": spec.task, "epochs": epochs,
              "batch_size": batch_size, "lr": lr, "optimizer": opt_name, "seed": args.seed,
              "scheduler": sched_name, "class_names": list(names) if names else None,
              "limit_train": args.limit_train, "limit_test": args.limit_test,
              "classes": list(args.classes) if args.classes else None}
    history = {"epoch": [], "train_loss": [], "test_loss": [], "test_accuracy": [],
               "step_loss": [], "images_per_s": []}
    start_epoch, start_step = 0, 0

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
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if sched is not None and ck.get("scheduler") is not None:
            sched.load_state_dict(ck["scheduler"])
        R.set_state(ck["rng"])
        history = ck["history"]
        start_epoch, start_step = int(ck["epoch"]), int(ck["step"])
        print(f"resumed from {args.resume} at epoch {start_epoch + 1}, batch {start_step}")

    def checkpoint(epoch, step, rng):
        save({"model": model.state_dict(), "optimizer": opt.state_dict(),
              "scheduler": sched.state_dict() if sched is not None else None,
              "rng": rng, "history": history, "epoch": epoch, "step": step,
              "config": config}, ckpt_path)

    print(f"training {args.model} on {dataset} ({len(train_set)} train / {len(test_set)} "
          f"test samples) for {epochs} epochs on {args.device}, {opt_name} lr={lr}, "
          f"batch {batch_size}")
    # ``done`` counts the finished batches of the current epoch and ``rng_state`` is the
    # random state before the batch in flight, so a Ctrl-C checkpoint resumes exactly.
    epoch, done, rng_state = start_epoch, start_step, R.get_state()
    try:
        for epoch in range(start_epoch, epochs):
            loader.set_epoch(epoch)
            model.train()
            done = start_step if epoch == start_epoch else 0
            t0, seen, run_loss = time.perf_counter(), 0, 0.0
            bar = _bar(loader.iter_from(done), len(loader) - done,
                       f"epoch {epoch + 1}/{epochs}", args.no_progress)
            rng_state = R.get_state()
            for x, y in bar:
                x, y = x.to(args.device), y.to(args.device)
                loss = loss_fn(model(x), _targets(y, spec.task))
                opt.zero_grad()
                loss.backward()
                opt.step()
                if sched is not None and per_batch:
                    sched.step()
                done += 1
                rng_state = R.get_state()
                lv = loss.item()
                history["step_loss"].append(lv)
                if not math.isfinite(lv):
                    raise RuntimeError(f"loss became {lv} at epoch {epoch + 1}, batch {done}; "
                                       "lower --lr")
                seen += len(y)
                run_loss += lv * len(y)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(refresh=False, loss=f"{lv:.4f}",
                                    img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            elapsed = time.perf_counter() - t0
            if sched is not None and not per_batch:
                sched.step()
            test_loss, test_acc = evaluate(model, test_set, spec.task, args.device)
            history["epoch"].append(epoch + 1)
            history["train_loss"].append(run_loss / max(seen, 1))
            history["test_loss"].append(test_loss)
            history["test_accuracy"].append(test_acc)
            history["images_per_s"].append(seen / elapsed if elapsed > 0 else None)
            acc = f"test accuracy {test_acc:.4f}" if test_acc is not None else ""
            print(f"epoch {epoch + 1}/{epochs}: train loss {history['train_loss'][-1]:.4f}  "
                  f"test loss {test_loss:.4f}  {acc}  ({seen / max(elapsed, 1e-9):.0f} "
                  "samples/s)", flush=True)
            rng_state = R.get_state()
            checkpoint(epoch + 1, 0, rng_state)
            done = 0
    except KeyboardInterrupt:
        if done >= len(loader):  # stopped during evaluation: redo only the evaluation
            done = len(loader)
        checkpoint(epoch, done, rng_state)
        print(f"\ninterrupted: checkpoint written to {ckpt_path}; continue with "
              f"--resume {ckpt_path}")
        return 130
    metrics_path = write_metrics(out_dir, config, history)
    print(f"checkpoint: {ckpt_path}\nmetrics:    {metrics_path}")
    if not args.no_plot:
        png = plot_curves(out_dir, history, args.model)
        print(f"plot:       {png}" if png else "plot:       skipped (pip install matplotlib)")
    if history["test_accuracy"] and history["test_accuracy"][-1] is not None:
        print(f"final test accuracy: {history['test_accuracy'][-1]:.4f}")
    return 0


def write_metrics(out_dir, config, history):
    path = os.path.join(out_dir, "metrics.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"config": config, "history": history}, f, indent=1)
    os.replace(tmp, path)
    return path


def plot_curves(out_dir, history, title):
    """Loss per step and per epoch, test accuracy per epoch -> curves.png (None without
    matplotlib)."""
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


def _restore(checkpoint_path, device, data_dir=None, limit_test=None):
    ck = load(checkpoint_path)
    cfg = ck.get("config")
    if not cfg:
        raise ValueError(f"{checkpoint_path}: not a training checkpoint (no 'config' entry)")
    model = build(cfg["model"], tuple(cfg["in_shape"]), cfg["num_classes"]).to(device)
    model.load_state_dict(ck["model"])
    model.eval()
    _, test_set, _, _, _ = make_data(cfg["dataset"], data_dir, 1, limit_test,
                                     seed=cfg.get("seed", 0), classes=cfg.get("classes"))
    return model, cfg, test_set


def evaluate_checkpoint(args):
    model, cfg, test_set = _restore(args.checkpoint, args.device, args.data_dir, args.limit_test)
    loss, acc = evaluate(model, test_set, cfg["task"], args.device, args.batch_size,
                         progress=not args.no_progress)
    msg = f"{cfg['model']} on {cfg['dataset']} ({len(test_set)} test samples): loss {loss:.4f}"
    print(msg + (f"  accuracy {acc:.4f}" if acc is not None else ""))
    return 0


def predict(args):
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
    from .autograd import no_grad

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
        true = "" if labels[k] is None else f"  true: {names[int(labels[k])] if names else int(labels[k])}"
        print(f"sample {k}: {name} (p={p[c]:.3f}){true}")
    return 0


