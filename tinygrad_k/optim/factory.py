"""Optimizers and learning-rate schedules by name, as the training CLI chooses them.

    opt = make_optimizer("sgd", model.parameters(), lr=0.02, momentum=0.9)
    sched, per_batch = make_scheduler("onecycle", opt, lr=0.02, epochs=3, steps_per_epoch=938)
"""
from __future__ import annotations

from . import lr_scheduler
from .optimizer import SGD, Adagrad, Adam, AdamW, RMSprop

__all__ = ["OPTIMIZERS", "SCHEDULERS", "make_optimizer", "make_scheduler"]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULERS = ("none", "cosine", "step", "onecycle")


def make_optimizer(name, params, lr, momentum=0.9, weight_decay=0.0):
    """Optimizer ``name`` (one of ``OPTIMIZERS``) over ``params``. ``momentum`` is SGD's;
    AdamW's weight decay defaults to 1e-2 (PyTorch's) when ``weight_decay`` is 0."""
    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(params, lr=lr, weight_decay=weight_decay or 1e-2)
    if name == "rmsprop":
        return RMSprop(params, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return Adagrad(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")


def make_scheduler(name, opt, lr, epochs, steps_per_epoch):
    """-> (scheduler or None, whether it steps every batch).

    "none": constant lr; "cosine": cosine annealing over ``epochs`` (stepped per epoch);
    "step": x0.1 every ``epochs // 3`` epochs; "onecycle": one cycle up to ``lr`` and down
    over ``epochs * steps_per_epoch`` batches (stepped per batch)."""
    if name == "none":
        return None, False
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(opt, T_max=epochs), False
    if name == "step":
        return lr_scheduler.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1), False
    if name == "onecycle":
        return lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs,
                                       steps_per_epoch=steps_per_epoch), True
    raise ValueError(f"unknown scheduler {name!r}: expected one of {', '.join(SCHEDULERS)}")
