"""Checkpoints without pickle: ``save(obj, f)`` / ``load(f)``, as ``torch.save`` /
``torch.load``.

    tk.save({"epoch": e, "model": model.state_dict(), "optim": opt.state_dict()}, path)
    ck = tk.load(path)                      # the same structure back
    model.load_state_dict(ck["model"]); opt.load_state_dict(ck["optim"])

``obj`` is any nesting (up to ``MAX_DEPTH`` levels) of dicts (str or int keys), lists,
tuples, Tensors, NumPy arrays, numbers, strings, booleans and None -- a ``state_dict``,
an optimizer's, or a whole training state. Whole objects (a Module, an optimizer) are
not stored: tinygrad_k never pickles, so save their ``state_dict()`` and rebuild them.
``f`` is a path or a binary file object (``io.BytesIO``).

File format: an ``.npz`` (zip) archive holding one ``.npy`` per Tensor/array (``a0``,
``a1``, ...) and ``__meta__``, a UTF-8 JSON document with the structure that points at
them (a Tensor's node records its device and ``requires_grad``). Nothing in the file is
ever executed: arrays are read by a strict reader of our own (no ``allow_pickle``, no
object dtypes) and the structure by ``json``.

A path ending in ``.safetensors`` selects the safetensors format instead (written and
read with NumPy alone): 8-byte little-endian header length, a JSON header
``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``, then the raw
little-endian bytes. A flat ``{str: Tensor}`` dict (a model ``state_dict``) keeps its
keys as tensor names, so other safetensors readers (PyTorch, HF) see proper names; the
nesting is stored as JSON in ``__metadata__``. ``load`` also reads foreign safetensors
files (no tinygrad_k metadata) as a flat ``{name: Tensor}`` dict. Unlike npz (zip CRCs),
safetensors carries no checksum: damaged headers are caught, flipped data bytes are not.

Reading is strict and bounded: every size a file claims (array shapes, header lengths,
zip entry sizes, data offsets) is checked against the bytes actually there before
anything is allocated, safetensors tensors must tile the data exactly (no overlaps, no
holes, nothing past the end), JSON nesting and header sizes are capped. A damaged,
truncated or foreign file raises ValueError naming the file.

Writing (to a path) is atomic: a temporary file ``.<name>.<pid>.<random>.tmp`` in the same
folder, created with the process umask, fsync'ed, then renamed over the target, so a
crash or ``kill -9`` never leaves a half-written checkpoint; the next save into that
folder removes temporary files left by dead processes.
"""
from __future__ import annotations

import io as _io
import json
import math
import os
import secrets
import zipfile
import zlib

import numpy as np

from .tensor import Tensor

__all__ = ["save", "load", "read_npy"]

FORMAT = "tinygrad_k-checkpoint-1"
MAX_DEPTH = 100                 # nesting of a saved structure
_MAX_JSON_DEPTH = 4 * MAX_DEPTH + 8  # each level of the structure is <= 4 JSON levels
_ST_MAX_HEADER = 100 << 20      # the safetensors reference implementation's limit
_MAX_META = 100 << 20           # our JSON structure document
_MAX_NPY_HEADER = 1 << 16
_MAX_ENTRIES = 1 << 20
_MAX_NDIM = 64
_MAX_DIM = 1 << 40
_DEFLATE_RATIO = 1100           # deflate cannot expand more than ~1032x

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
              "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


# -- writing ---------------------------------------------------------------------------------
def _encode(obj, arrays, depth=0):
    if depth > MAX_DEPTH:
        raise ValueError(f"save: the structure is nested deeper than {MAX_DEPTH} levels "
                         "(or contains itself)")
    if isinstance(obj, Tensor):
        arrays.append(obj.numpy())
        return {"__tensor__": f"a{len(arrays) - 1}", "requires_grad": bool(obj.requires_grad),
                "device": obj.device}
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("save: object arrays cannot be stored without pickle")
        arrays.append(obj)
        return {"__ndarray__": f"a{len(arrays) - 1}"}
    if hasattr(obj, "__cuda_array_interface__") and hasattr(obj, "get"):  # a raw CuPy array
        arrays.append(obj.get())
        return {"__ndarray__": f"a{len(arrays) - 1}"}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"save: dict keys must be str or int, got {type(k).__name__}")
            items.append([k, _encode(v, arrays, depth + 1)])
        return {"__dict__": items}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__":
                [_encode(v, arrays, depth + 1) for v in obj]}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "state_dict"):
        raise TypeError(f"save: cannot store a whole {type(obj).__name__}: tinygrad_k never "
                        "pickles objects; save its state_dict() and load it into a new "
                        f"{type(obj).__name__} with load_state_dict()")
    raise TypeError(f"save: cannot store a {type(obj).__name__} (expected Tensors, arrays, "
                    "numbers, strings, booleans, None, lists, tuples and dicts)")


def _no_pickle(pickle_module, who):
    if pickle_module is not None:
        raise ValueError(f"{who}: tinygrad_k never pickles, so pickle_module is not "
                         "supported; leave it out (the file is npz or safetensors + JSON)")


def save(obj, f, pickle_module=None, pickle_protocol=None,
         _use_new_zipfile_serialization=True, _disable_byteorder_record=False):
    """Write ``obj`` to ``f`` (a path: atomically, temp file + fsync + rename; or a binary
    file object). Returns the path (None for a file object). ``pickle_protocol`` and
    the underscore arguments are accepted for ``torch.save`` compatibility and ignored."""
    _no_pickle(pickle_module, "save")
    arrays = []
    root = _encode(obj, arrays)
    names = [f"a{i}" for i in range(len(arrays))]
    name = f if isinstance(f, (str, os.PathLike)) else getattr(f, "name", "")
    safetensors = isinstance(name, (str, os.PathLike)) and \
        os.fspath(name).endswith(".safetensors")
    if safetensors and isinstance(obj, dict) and "__metadata__" not in obj and all(
            isinstance(k, str) and isinstance(n, dict) and
            ("__tensor__" in n or "__ndarray__" in n) for k, n in root["__dict__"]):
        # flat state dict: name the tensors by their keys
        names = [k for k, _ in root["__dict__"]]
        for k, n in root["__dict__"]:
            n["__tensor__" if "__tensor__" in n else "__ndarray__"] = k
    meta = {"format": FORMAT, "root": root}

    def write(fh):
        if safetensors:
            _write_safetensors(fh, dict(zip(names, arrays)), meta)
        else:
            payload = dict(zip(names, arrays))
            payload["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
            np.savez(fh, **payload)

    if not isinstance(f, (str, os.PathLike)):
        if not hasattr(f, "write"):
            raise TypeError(f"save: expected a path or a binary file object, got "
                            f"{type(f).__name__}")
        write(f)
        return None
    return _atomic_write(os.fspath(f), write)


_in_flight = set()  # this process's temp files being written (other threads may save)


def _atomic_write(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    _remove_stale_temps(folder, base)
    tmp = os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as for any new file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    _in_flight.add(tmp)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        _in_flight.discard(tmp)
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def _remove_stale_temps(folder, base):
    """Temp files for ``base`` whose writer is gone (killed mid-save)."""
    prefix = f".{base}."
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        parts = entry[len(prefix):-4].split(".")
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        full = os.path.join(folder, entry)
        pid = int(parts[0])
        if full in _in_flight or (pid != os.getpid() and _pid_alive(pid)):
            continue
        try:
            os.unlink(full)
        except OSError:
            pass


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


# -- reading ---------------------------------------------------------------------------------
def load(f, map_location=None, pickle_module=None, *, weights_only=None, mmap=None,
         **pickle_load_args):
    """Read what ``save`` wrote, from a path or a binary file object.

    ``map_location`` (as ``torch.load``): None puts each Tensor back on the device it was
    saved from; a device (``"cpu"``, ``"cuda"``, ``"cuda:0"``, or an object whose str is
    one) puts them all there; a dict maps saved device names to new ones
    (``{"cuda": "cpu"}``); a callable ``fn(tensor, saved_device)`` gets each Tensor (on
    cpu) and returns the Tensor to use. ``weights_only`` and ``mmap`` are accepted and
    change nothing: nothing is ever unpickled, so every load is weights-only.

    A missing, truncated, corrupted or foreign file raises (FileNotFoundError or
    ValueError) with the path and what was expected; nothing in the file is executed."""
    _no_pickle(pickle_module, "load")
    if isinstance(f, (str, os.PathLike)):
        path = os.fspath(f)
        if not os.path.exists(path):
            raise FileNotFoundError(f"load: no checkpoint at {path}")
        if os.path.isdir(path):
            raise ValueError(f"load: {path} is a folder, not a checkpoint file")
        if path.endswith(".safetensors"):
            with open(path, "rb") as fh:
                meta, arrays = _read_safetensors(fh, path)
        else:
            with open(path, "rb") as fh:
                meta, arrays = _read_any(fh, path)
    elif hasattr(f, "read"):
        path = getattr(f, "name", None) or f"<{type(f).__name__}>"
        fh = f if hasattr(f, "seek") and _seekable(f) else _io.BytesIO(f.read())
        if str(path).endswith(".safetensors"):
            meta, arrays = _read_safetensors(fh, path)
        else:
            meta, arrays = _read_any(fh, path)
    else:
        raise TypeError(f"load: expected a path or a binary file object, got "
                        f"{type(f).__name__}")
    if "root" not in meta:
        raise ValueError(f"load: {path} has no 'root' entry in its metadata")
    try:
        return _decode(meta["root"], arrays, map_location, path)
    except (TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"load: {path} has malformed metadata ({exc!r}); expected the "
                         f"structure written by tinygrad_k.save") from None


def _seekable(f):
    try:
        return f.seekable()
    except (AttributeError, ValueError, OSError):
        return False


def _size(fh):
    pos = fh.tell()
    end = fh.seek(0, os.SEEK_END)
    fh.seek(pos)
    return end


def _read_any(fh, path):
    """npz by default; a safetensors stream is recognised by its header (file objects)."""
    head = fh.read(8)
    fh.seek(0)
    if head[:2] == b"PK" or not head:
        return _read_npz(fh, path)
    if head[:1] == b"\x80":
        raise _npz_error(path, "it is a Python pickle (a PyTorch .pt file?); tinygrad_k never "
                               "unpickles: convert it with PyTorch, e.g. safetensors.torch."
                               "save_file(state_dict, 'model.safetensors'), and load that")
    n = int.from_bytes(head, "little") if len(head) == 8 else 0
    if 0 < n <= _ST_MAX_HEADER and fh.read(9)[8:9] == b"{":
        fh.seek(0)
        return _read_safetensors(fh, path)
    fh.seek(0)
    return _read_npz(fh, path)


def _npz_error(path, why):
    return ValueError(f"load: {path} is not a readable tinygrad_k checkpoint (expected an "
                      f".npz archive written by tinygrad_k.save, format {FORMAT}): {why}")


def _json(raw, what):
    """Parse JSON with bounded nesting (RecursionError never escapes)."""
    try:
        doc = json.loads(raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw)
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what} is not JSON ({exc})") from None
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_JSON_DEPTH:
            raise ValueError(f"{what} is nested deeper than {_MAX_JSON_DEPTH} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return doc


def _read_npz(fh, path):
    try:
        size = _size(fh)
        with zipfile.ZipFile(fh) as z:
            infos = z.infolist()
            if len(infos) > _MAX_ENTRIES:
                raise ValueError(f"{len(infos)} entries")
            by_name = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"entry {info.filename!r} is not an .npy array")
                if info.compress_size > size or (
                        info.compress_type == zipfile.ZIP_STORED
                        and info.file_size != info.compress_size) or \
                        info.file_size > _DEFLATE_RATIO * info.compress_size + 4096:
                    raise ValueError(f"entry {info.filename!r} claims {info.file_size} bytes "
                                     f"from {info.compress_size} stored in a {size}-byte file")
                by_name[info.filename[:-4]] = info
            if "__meta__" not in by_name:
                raise ValueError("no __meta__ entry")
            if by_name["__meta__"].file_size > _MAX_META:
                raise ValueError(f"__meta__ of {by_name['__meta__'].file_size} bytes exceeds "
                                 f"{_MAX_META}")
            meta_arr = _read_npy(z, by_name["__meta__"])
            if meta_arr.dtype != np.uint8 or meta_arr.ndim != 1:
                raise ValueError(f"__meta__ is {meta_arr.dtype} {meta_arr.shape}, expected "
                                 "uint8 bytes")
            meta = _json(meta_arr.tobytes(), "__meta__")
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(
                    f"format {meta.get('format') if isinstance(meta, dict) else '?'}")
            arrays = {k: _read_npy(z, info) for k, info in by_name.items() if k != "__meta__"}
    except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError, SyntaxError,
            zlib.error, MemoryError, NotImplementedError, RuntimeError) as exc:
        # SyntaxError: a damaged .npy header (NumPy parses it with ast.literal_eval)
        raise _npz_error(path, exc) from None
    return meta, arrays


def _read_npy(z, info):
    """One .npy entry of a zip archive (see ``_read_npy_from``)."""
    with z.open(info) as f:
        return _read_npy_from(f, info.file_size, info.filename)


def _read_npy_from(f, total, label):
    """An .npy stream of ``total`` bytes: its header's shape and dtype must account for
    exactly the bytes it holds, checked before the array is allocated."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(
            f, max_header_size=_MAX_NPY_HEADER)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(
            f, max_header_size=_MAX_NPY_HEADER)
    else:
        raise ValueError(f"{label}: .npy version {version} is not read")
    if dtype.hasobject:
        raise ValueError(f"{label}: object arrays (pickle) are not read")
    if len(shape) > _MAX_NDIM or any(not isinstance(d, int) or not 0 <= d <= _MAX_DIM
                                     for d in shape):
        raise ValueError(f"{label}: bad shape {shape}")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    held = total - f.tell()
    if nbytes != held:
        raise ValueError(f"{label}: header claims shape {shape} {dtype} ({nbytes} bytes) but "
                         f"the file holds {held} bytes")
    arr = np.empty(count, dtype=dtype)
    if nbytes:
        view = memoryview(arr).cast("B")
        got = 0
        while got < nbytes:
            n = f.readinto(view[got:])
            if not n:
                raise ValueError(f"{label}: truncated after {got} of {nbytes} bytes")
            got += n
    f.read(1)  # reach the end of a zip entry: its CRC is checked here
    return arr.reshape(shape, order="F" if fortran else "C")


def read_npy(path):
    """A plain ``.npy`` file, read strictly: no pickle, and a header whose shape does not
    match the file's size is refused (ValueError naming the file) before allocating."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return _read_npy_from(f, os.fstat(f.fileno()).st_size, "array")
    except (ValueError, EOFError, SyntaxError, MemoryError) as exc:
        raise ValueError(f"{path} is not a readable .npy array: {exc}") from None


def _read_safetensors(fh, path):
    def bad(why):
        return ValueError(f"load: {path} is not a readable safetensors checkpoint (expected "
                          f"an 8-byte header length, a JSON header and the tensor bytes): "
                          f"{why}")

    size = _size(fh)
    if size < 8:
        raise bad(f"only {size} bytes")
    n = int.from_bytes(fh.read(8), "little")
    if n > min(size - 8, _ST_MAX_HEADER):
        raise bad(f"header length {n} but the file has {size} bytes"
                  + (f" (at most {_ST_MAX_HEADER} allowed)" if n > _ST_MAX_HEADER else ""))
    try:
        header = _json(fh.read(n), "header")
    except ValueError as exc:
        raise bad(exc) from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    data_len = size - 8 - n
    md = header.pop("__metadata__", None) or {}
    entries = []
    for name, info in header.items():
        try:
            dt = np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<")
            shape = info["shape"]
            b, e = info["data_offsets"]
            if not isinstance(shape, list) or len(shape) > _MAX_NDIM or any(
                    type(d) is not int or not 0 <= d <= _MAX_DIM for d in shape) or \
                    type(b) is not int or type(e) is not int:
                raise ValueError(f"shape must be a list of at most {_MAX_NDIM} ints in "
                                 f"[0, {_MAX_DIM}] and offsets ints")
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"bad entry for {name!r}: {info!r} ({exc})") from None
        nbytes = math.prod(shape) * dt.itemsize  # Python ints: no overflow
        if not 0 <= b <= e <= data_len or e - b != nbytes:
            raise bad(f"entry {name!r} (shape {shape}, {info['dtype']}, bytes {b}:{e}) does "
                      f"not fit the {data_len} data bytes")
        entries.append((b, e, name, dt, tuple(shape)))
    entries.sort(key=lambda t: (t[0], t[1]))
    pos = 0
    for b, e, name, _, _ in entries:  # the tensors must tile the data exactly
        if b < pos:
            raise bad(f"entry {name!r} (bytes {b}:{e}) overlaps the previous tensor "
                      f"(ending at {pos})")
        if b > pos:
            raise bad(f"a hole of {b - pos} bytes before entry {name!r} (bytes {b}:{e})")
        pos = e
    if pos != data_len:
        raise bad(f"{data_len - pos} trailing bytes after the last tensor")
    data = fh.read(data_len)
    if len(data) != data_len:
        raise bad(f"truncated: {len(data)} of {data_len} data bytes")
    arrays = {}
    for b, e, name, dt, shape in entries:
        arrays[name] = np.frombuffer(data, dtype=dt, count=(e - b) // dt.itemsize,
                                     offset=b).reshape(shape).astype(dt.newbyteorder("="))
    if not isinstance(md, dict) or md.get("format") != FORMAT:
        # a foreign safetensors file: a flat name -> Tensor dict, in header order
        return {"root": {"__dict__": [[k, {"__tensor__": k}] for k in header]}}, arrays
    try:
        if len(md["structure"]) > _MAX_META:
            raise ValueError(f"{len(md['structure'])} bytes")
        meta = _json(md["structure"], "tinygrad_k metadata")
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"tinygrad_k metadata unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise bad("tinygrad_k metadata is not a JSON object")
    return meta, arrays


def _placer(map_location, path):
    """-> function(array, saved device) -> Tensor, following torch.load's map_location."""
    from .backend import cuda_available, normalize_device

    def target(saved):
        if map_location is None:
            dev = saved
        elif isinstance(map_location, dict):
            dev = map_location.get(saved, saved)
            if dev == saved and saved == "cuda":
                dev = map_location.get("cuda:0", saved)
        else:
            dev = map_location
        try:
            dev = normalize_device(str(dev))
        except ValueError as exc:
            raise ValueError(f"load: map_location {map_location!r}: {exc}") from None
        if dev == "cuda" and not cuda_available():
            raise RuntimeError(f"load: {path} holds tensors saved on cuda but no CUDA device "
                               "is available; pass map_location='cpu' to load them on the "
                               "cpu")
        return dev

    def place(arr, saved):
        saved = saved if saved in ("cpu", "cuda") else "cpu"
        if callable(map_location) and not isinstance(map_location, (str, dict)):
            t = Tensor(arr, device="cpu")
            out = map_location(t, saved)
            return t if out is None else out
        return Tensor(arr, device=target(saved))

    return place


def _decode(node, arrays, map_location, path):
    place = _placer(map_location, path)

    def walk(node):
        if isinstance(node, dict):
            if "__tensor__" in node or "__ndarray__" in node:
                key = node.get("__tensor__", node.get("__ndarray__"))
                if not isinstance(key, str) or key not in arrays:
                    raise ValueError(f"load: {path} refers to a missing array {key!r}")
                arr = arrays[key]
                if "__ndarray__" in node:
                    return arr
                t = place(arr, node.get("device", "cpu"))
                if node.get("requires_grad") and isinstance(t, Tensor):
                    t.requires_grad_(True)
                return t
            if "__dict__" in node:
                out = {}
                for k, v in node["__dict__"]:
                    if not isinstance(k, (str, int)) or isinstance(k, bool):
                        raise TypeError(f"dict key {k!r}")
                    out[k] = walk(v)
                return out
            if "__list__" in node:
                return [walk(v) for v in node["__list__"]]
            if "__tuple__" in node:
                return tuple(walk(v) for v in node["__tuple__"])
            raise ValueError(f"load: {path} has an unknown entry {sorted(node)}")
        if isinstance(node, list):
            raise TypeError("a bare list node")
        return node

    return walk(node)
