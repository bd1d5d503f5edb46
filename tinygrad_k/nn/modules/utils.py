"""Argument helpers shared by the conv and pooling modules."""
from __future__ import annotations


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)
