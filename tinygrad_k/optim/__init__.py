"""Optimizers (SGD, Adam, AdamW, Adagrad, RMSprop) and ``lr_scheduler``, as in PyTorch."""
from . import lr_scheduler
from .optimizer import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "lr_scheduler"]
