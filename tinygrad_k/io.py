"""Checkpoints without pickle: ``save(obj, path)`` / ``load(path)``.

``obj`` is any nesting of dicts (str or int keys), lists, tuples, Tensors, NumPy arrays,
numbers, strings, booleans and None -- a ``state_dict``, or a whole training state
``{"model": ..., "optimizer": ..., "epoch": 3}``.

File format: an ``.npz`` (zip) archive holding one array per Tensor/array (``a0``,
``a1``, ...) and ``__meta__``, a UTF-8 JSON document with the structure that points at
them. Loading uses ``numpy.load(allow_pickle=False)`` and ``json``: nothing in the file
is ever executed. Writing goes to a temporary file in the same folder, is fsync'ed and
then renamed over the target, so a crash never leaves a half-written checkpoint.

A path ending in ``.safetensors`` selects the safetensors format instead (written and
read with NumPy alone): 8-byte little-endian header length, a JSON header
``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``, then the raw
little-endian bytes. A flat ``{str: Tensor}`` dict (a model ``state_dict``) keeps its
keys as tensor names, so other safetensors readers (PyTorch, HF) see proper names; the
nesting is stored as JSON in ``__metadata__``. ``load`` also reads foreign safetensors
files (no tinygrad_k metadata) as a flat ``{name: Tensor}`` dict. Unlike npz (zip CRCs),
safetensors carries no checksum: damaged headers are caught, flipped data bytes are not.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
              "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}
_ST_MAX_HEADER = 100 << 20  # the reference implementation's limit

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
    root = _encode(obj, arrays)
    names = [f"a{i}" for i in range(len(arrays))]
    safetensors = path.endswith(".safetensors")
    if safetensors and isinstance(obj, dict) and "__metadata__" not in obj and all(
            isinstance(k, str) and isinstance(n, dict) and len(n) <= 2 and
            ("__tensor__" in n or "__ndarray__" in n) for k, n in root["__dict__"]):
        # flat state dict: name the tensors by their keys
        names = [k for k, _ in root["__dict__"]]
        for k, n in root["__dict__"]:
            n["__tensor__" if "__tensor__" in n else "__ndarray__"] = k
    meta = {"format": FORMAT, "root": root}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1] or ".npz",
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            if safetensors:
                _write_safetensors(f, dict(zip(names, arrays)), meta)
            else:
                payload = dict(zip(names, arrays))
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
    if path.endswith(".safetensors"):
        meta, arrays = _read_safetensors(path)
    else:
        meta, arrays = _read_npz(path)
    if "root" not in meta:
        raise ValueError(f"load: {path} has no 'root' entry in its metadata")
    try:
        return _decode(meta["root"], arrays, map_location or "cpu", path)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"load: {path} has malformed metadata ({exc!r}); expected the "
                         f"structure written by tinygrad_k.save") from None


def _read_npz(path):
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
    return meta, arrays


def _write_safetensors(f, named, meta):
    header, offset, blobs = {}, 0, []
    for name, a in named.items():
        dt = np.dtype(a.dtype).newbyteorder("=") if a.dtype.byteorder == ">" else a.dtype
        if dt not in _ST_NAMES:
            raise TypeError(f"save: dtype {a.dtype} of {name!r} has no safetensors code "
                            f"(supported: {sorted(str(d) for d in _ST_NAMES)})")
        raw = np.ascontiguousarray(a, dtype=dt.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _ST_NAMES[dt], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": FORMAT, "structure": json.dumps(meta)}
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)  # keep the data 8-byte aligned, as the reference writer
    f.write(len(hb).to_bytes(8, "little"))
    f.write(hb)
    for raw in blobs:
        f.write(raw)


def _read_safetensors(path):
    def bad(why):
        return ValueError(f"load: {path} is not a readable safetensors checkpoint (expected "
                          f"an 8-byte header length, a JSON header and the tensor bytes): "
                          f"{why}")

    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise bad(f"only {len(raw)} bytes")
    n = int.from_bytes(raw[:8], "little")
    if n > min(len(raw) - 8, _ST_MAX_HEADER):
        raise bad(f"header length {n} but the file has {len(raw)} bytes")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    data = memoryview(raw)[8 + n:]
    md = header.pop("__metadata__", None) or {}
    arrays, end = {}, 0
    for name, info in header.items():
        try:
            dt = np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<")
            shape = tuple(int(d) for d in info["shape"])
            b, e = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"bad entry for {name!r}: {info!r} ({exc!r})") from None
        if any(d < 0 for d in shape) or not 0 <= b <= e <= len(data) or \
                e - b != int(np.prod(shape)) * dt.itemsize:
            raise bad(f"entry {name!r} (shape {shape}, {info['dtype']}, bytes {b}:{e}) does "
                      f"not fit the {len(data)} data bytes")
        arrays[name] = np.frombuffer(data[b:e], dtype=dt).reshape(shape).astype(
            dt.newbyteorder("="))
        end = max(end, e)
    if end != len(data):
        raise bad(f"{len(data) - end} trailing bytes after the last tensor")
    if not isinstance(md, dict) or md.get("format") != FORMAT:
        # a foreign safetensors file: a flat name -> Tensor dict
        return {"root": {"__dict__": [[k, {"__tensor__": k}] for k in arrays]}}, arrays
    try:
        meta = json.loads(md["structure"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise bad(f"tinygrad_k metadata unreadable ({exc!r})") from None
    if not isinstance(meta, dict):
        raise bad("tinygrad_k metadata is not a JSON object")
    return meta, arrays


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
