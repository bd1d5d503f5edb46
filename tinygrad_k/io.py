"""Checkpoints without pickle: ``save(obj, path)`` / ``load(path)``.

``obj`` is any nesting of dicts (str or int keys), lists, tuples, Tensors, NumPy arrays,
numbers, strings, booleans and None -- a ``state_dict``, or a whole training state
``{"model": ..., "optimizer": ..., "epoch": 3}``.

File format: an ``.npz`` (zip) archive holding one array per Tensor/array (``a0``,
``a1``, ...) and ``__meta__``, a UTF-8 JSON document with the structure that points at
them. Loading uses ``numpy.load(allow_pickle=False)`` and ``json``: nothing in the file
is ever executed. Writing goes to a temporary file in the same folder, is fsync'ed and
then renamed over the target, so a crash never leaves a half-written checkpoint.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

from .tensor import Tensor

__all__ = ["save", "load"]

FORMAT = "tinygrad_k-checkpoint-1"


def _encode(obj, arrays):
    if isinstance(obj, Tensor):
        arrays.append(obj.numpy())
        return {"__tensor__": f"a{len(arrays) - 1}", "requires_grad": bool(obj.requires_grad)}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("save: object arrays cannot be stored without pickle")
        arrays.append(obj)
        return {"__ndarray__": f"a{len(arrays) - 1}"}
    if hasattr(obj, "__cuda_array_interface__"):  # a raw CuPy array
        arrays.append(obj.get())
        return {"__ndarray__": f"a{len(arrays) - 1}"}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"save: dict keys must be str or int, got {type(k).__name__}")
            items.append([k, _encode(v, arrays)])
        return {"__dict__": items}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__":
                [_encode(v, arrays) for v in obj]}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"save: cannot store a {type(obj).__name__} (expected Tensors, arrays, "
                    "numbers, strings, lists, tuples and dicts)")


def save(obj, path):
    """Write ``obj`` to ``path`` atomically (temp file + fsync + rename)."""
    path = os.fspath(path)
    arrays = []
    meta = {"format": FORMAT, "root": _encode(obj, arrays)}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            payload = {f"a{i}": a for i, a in enumerate(arrays)}
            payload["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def load(path, map_location=None):
    """Read a checkpoint written by ``save``. Tensors come back on ``map_location``
    (default cpu). A missing, truncated, corrupted or foreign file raises with the path
    and what was expected; nothing in the file is executed."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "__meta__" not in z.files:
                raise ValueError("no __meta__ entry")
            meta = json.loads(bytes(z["__meta__"]).decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format') if isinstance(meta, dict) else '?'}")
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError, SyntaxError,
            UnicodeDecodeError, json.JSONDecodeError, zlib.error) as exc:
        # SyntaxError: a damaged .npy header (NumPy parses it with ast.literal_eval)
        raise ValueError(f"load: {path} is not a readable tinygrad_k checkpoint (expected an "
                         f".npz archive written by tinygrad_k.save, format {FORMAT}): "
                         f"{exc}") from None
    if "root" not in meta:
        raise ValueError(f"load: {path} has no 'root' entry in its metadata")
    try:
        return _decode(meta["root"], arrays, map_location or "cpu", path)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"load: {path} has malformed metadata ({exc!r}); expected the "
                         f"structure written by tinygrad_k.save") from None


def _decode(node, arrays, device, path):
    if isinstance(node, dict):
        if "__tensor__" in node or "__ndarray__" in node:
            key = node.get("__tensor__", node.get("__ndarray__"))
            if key not in arrays:
                raise ValueError(f"load: {path} refers to a missing array {key!r}")
            arr = arrays[key]
            if "__ndarray__" in node:
                return arr
            t = Tensor(arr, device=device)
            if node.get("requires_grad"):
                t.requires_grad_(True)
            return t
        if "__dict__" in node:
            return {k: _decode(v, arrays, device, path) for k, v in node["__dict__"]}
        if "__list__" in node:
            return [_decode(v, arrays, device, path) for v in node["__list__"]]
        if "__tuple__" in node:
            return tuple(_decode(v, arrays, device, path) for v in node["__tuple__"])
        raise ValueError(f"load: {path} has an unknown entry {sorted(node)}")
    return node
