"""Safe model files: ``save`` / ``load`` state dicts in the safetensors format.

A model file is a plain safetensors file (8-byte little-endian header length,
a JSON header, then the raw little-endian tensor bytes). Its ``__metadata__``
holds only strings:

``format``        ``"lepton_kernels"``
``format_version`` ``"2"``
``version``       the lepton_kernels version that wrote the file
``architecture``  JSON of the architecture description (``"null"`` if none)
``names``         JSON list of the tensor names in the state dict's order
``sha256``        SHA-256 of the whole file's content: every other metadata entry
                  and every tensor's name, dtype, shape and bytes, see
                  :func:`model_file_sha256`
plus any user ``metadata`` (keys must not clash with the ones above).

Loading never runs code from the file: no pickle, no imports, no ``eval``.
The header length and the JSON header are parsed and validated here before
the bytes are handed to the ``safetensors`` package, and any problem is a
``ValueError`` that names the file and what is wrong with it. A recorded
architecture of a model that ``lepton_kernels.load`` would build must imply
exactly the tensors in the file, so no file can make the loader allocate more
than the file itself holds.

Format version 1 (lepton_kernels before issue 15) checksummed the tensor data
only, so a damaged architecture went unnoticed; such files are refused unless
``load(..., legacy=True)`` is asked for, and can be re-saved as version 2.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
import stat
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

try:  # POSIX: a save holds an flock on its temporary file while it writes it
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = [
    "save",
    "load",
    "state_dict_sha256",
    "model_file_sha256",
    "ModelFileError",
    "MAX_HEADER_BYTES",
    "MAX_JSON_DEPTH",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

FORMAT_NAME = "lepton_kernels"
FORMAT_VERSION = "2"
#: Format whose checksum covered the tensor data only; read only with ``load(..., legacy=True)``.
LEGACY_FORMAT_VERSION = "1"
#: Largest JSON header :func:`load` accepts (the safetensors package uses the same).
MAX_HEADER_BYTES = 100 * 1024 * 1024
#: Deepest nesting of arrays/objects accepted in the header and in the architecture JSON
#: (real files need 4; the bound keeps json's recursive parser far from the recursion limit).
MAX_JSON_DEPTH = 64
_RESERVED_KEYS = ("format", "format_version", "version", "architecture", "names", "sha256")

# safetensors dtype code <-> numpy dtype (only those numpy can represent natively)
_DTYPE_TO_CODE = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "U8",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint16): "U16",
    np.dtype(np.int16): "I16",
    np.dtype(np.uint32): "U32",
    np.dtype(np.int32): "I32",
    np.dtype(np.uint64): "U64",
    np.dtype(np.int64): "I64",
    np.dtype(np.float16): "F16",
    np.dtype(np.float32): "F32",
    np.dtype(np.float64): "F64",
}
_CODE_TO_DTYPE = {code: dt for dt, code in _DTYPE_TO_CODE.items()}


class ModelFileError(ValueError):
    """A model file is missing, corrupt, or not a lepton_kernels safetensors file."""


class ModelFileNotFoundError(FileNotFoundError, ModelFileError):
    """The model file does not exist (both a ``FileNotFoundError`` and a ``ValueError``)."""


def _require_safetensors():
    try:
        import safetensors.numpy as stn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "lepton_kernels model files need the 'safetensors' package: "
            "pip install lepton-kernels[io]"
        ) from exc
    return stn


def _library_version() -> str:
    import lepton_kernels

    return str(getattr(lepton_kernels, "__version__", "unknown"))


# --------------------------------------------------------------------------- save


def _to_numpy(name: str, value: Any) -> np.ndarray:
    """Host, C-contiguous, little-endian copy-if-needed of one state-dict value."""
    if not isinstance(value, np.ndarray):
        inner = getattr(value, "data", None)  # an autograd Tensor wraps .data
        if inner is not None and hasattr(inner, "shape") and not isinstance(value, memoryview):
            value = inner
        if hasattr(value, "get") and hasattr(value, "device"):  # CuPy array -> host
            value = value.get()
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"save: state_dict[{name!r}] cannot be converted to a numpy array: {exc}") from exc
    native = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in ("=", "|") else arr.dtype
    if native not in _DTYPE_TO_CODE:
        raise TypeError(
            f"save: state_dict[{name!r}] has dtype {arr.dtype}; expected one of "
            f"{', '.join(sorted(str(d) for d in _DTYPE_TO_CODE))}"
        )
    little = native.newbyteorder("<")
    if arr.dtype != little or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=little)
    return arr


def _extract(obj: Any, architecture: Any) -> tuple[dict[str, np.ndarray], Any]:
    """(state dict of numpy arrays, architecture) from a mapping or a model."""
    if not isinstance(obj, Mapping) and callable(getattr(obj, "state_dict", None)):
        if architecture is None:
            config = getattr(obj, "config", None)
            if callable(config):
                architecture = config()
            else:
                architecture = getattr(obj, "architecture", None)
                if callable(architecture):
                    architecture = architecture()
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise TypeError(
            "save: expected a state dict (mapping of str to arrays) or an object with "
            f"state_dict(); got {type(obj).__name__}"
        )
    tensors: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"save: state dict keys must be non-empty str; got {name!r}")
        if name == "__metadata__":
            raise ValueError("save: '__metadata__' is reserved by the safetensors format and cannot be a tensor name")
        tensors[name] = _to_numpy(name, value)
    return tensors, architecture


def _hash_tensors(h, tensors: Mapping[str, np.ndarray], caller: str) -> None:
    """Feed each tensor (sorted by name) to ``h``: ``[name, dtype_code, shape]`` JSON, NUL,
    the byte count as 8 little-endian bytes, then the little-endian C-order bytes."""
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        native = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in ("=", "|") else arr.dtype
        code = _DTYPE_TO_CODE.get(native)
        if code is None:
            raise TypeError(f"{caller}: {name!r} has unsupported dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=native.newbyteorder("<"))
        record = json.dumps([name, code, list(arr.shape)], separators=(",", ":"))
        h.update(record.encode("utf-8") + b"\0")
        h.update(struct.pack("<Q", arr.nbytes))
        h.update(arr.reshape(-1).view(np.uint8).data)


def state_dict_sha256(tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of a state dict's tensor data, independent of dict order.

    For each name in sorted order the digest takes a JSON record
    ``[name, dtype_code, shape]`` (dtype codes as in safetensors: ``"F32"``...)
    followed by a NUL byte, the byte count as 8 little-endian bytes, and the
    tensor's little-endian C-order bytes. This was the whole checksum of format
    version 1; version 2 files use :func:`model_file_sha256`.
    """
    h = hashlib.sha256()
    _hash_tensors(h, tensors, "state_dict_sha256")
    return h.hexdigest()


def model_file_sha256(metadata: Mapping[str, str], tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) stored as ``sha256`` in a format version 2 model file.

    It covers everything a loader interprets: the ASCII tag
    ``lepton_kernels model file 2``, a NUL byte, the metadata without its
    ``sha256`` entry as canonical JSON (keys sorted, no spaces, ASCII escapes)
    and a NUL byte, followed by the tensor records of :func:`state_dict_sha256`.
    The data offsets and the JSON layout are not hashed: they only place
    bytes, and any placement that parses gives back the same named tensors.
    """
    fields = {k: v for k, v in metadata.items() if k != "sha256"}
    h = hashlib.sha256(f"{FORMAT_NAME} model file {FORMAT_VERSION}\0".encode("ascii"))
    h.update(json.dumps(fields, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode("ascii"))
    h.update(b"\0")
    _hash_tensors(h, tensors, "model_file_sha256")
    return h.hexdigest()


def _build_metadata(tensors, architecture, metadata) -> dict[str, str]:
    try:
        arch_json = json.dumps(architecture, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"save: architecture must be JSON-serialisable: {exc}") from exc
    except RecursionError:
        arch_json = None
    if arch_json is None or _json_depth(arch_json.encode("utf-8")) > MAX_JSON_DEPTH:
        raise ValueError(f"save: architecture nests more than {MAX_JSON_DEPTH} levels deep (load refuses that)")
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "version": _library_version(),
        "architecture": arch_json,
        "names": json.dumps(list(tensors)),
    }
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"save: metadata keys and values must be str; got {key!r}: {type(value).__name__}")
        if key in _RESERVED_KEYS:
            raise ValueError(f"save: metadata key {key!r} is reserved (reserved: {', '.join(_RESERVED_KEYS)})")
        meta[key] = value
    meta["sha256"] = model_file_sha256(meta, tensors)
    return meta


# Stale temporary files. A save killed between mkstemp and the rename (SIGKILL, power loss)
# leaves its ".<name>.XXXXXXXX.tmp" behind; the next save of the same target removes those.
# An age threshold cannot tell a killed save from a slow one (a large model on a network
# disk), so each save instead holds an exclusive flock on its temporary file while writing:
# the kernel drops the lock when the process dies, and a temporary file whose lock can be
# taken belongs to nobody alive. Without fcntl (Windows) stale files are left alone.


def _temporary_pattern(path: Path) -> re.Pattern:
    # exactly what tempfile.mkstemp(prefix=".<name>.", suffix=".tmp") creates: 8 characters
    # from a-z, 0-9 and "_", so no other file of the user's is ever matched
    return re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")


def _remove_if_abandoned(name: str) -> None:
    """Unlink the temporary file ``name`` if no live process holds its lock."""
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return  # gone already, or not ours to read
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            return
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError: a live save is writing it
        current = os.lstat(name)
        if (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            os.unlink(name)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temporaries(path: Path) -> None:
    if fcntl is None:  # pragma: no cover - Windows
        return
    pattern = _temporary_pattern(path)
    try:
        with os.scandir(path.parent) as entries:
            names = [entry.path for entry in entries if pattern.fullmatch(entry.name)]
    except OSError:
        return  # the write itself reports an unusable directory
    for name in names:
        _remove_if_abandoned(name)


def _locked_temporary(path: Path) -> tuple[int, str]:
    """mkstemp beside ``path`` and flock it; retried if a cleaner removed it before the lock."""
    for _ in range(100):  # each retry needs another save's clean-up to win a race: a handful at most
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        if fcntl is None:  # pragma: no cover - Windows
            return fd, tmp
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a file system without locks: no clean-up can take this file either
                return fd, tmp
            opened, current = os.fstat(fd), os.lstat(tmp)
            if (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
                return fd, tmp
        except FileNotFoundError:
            pass  # another save's cleanup took the lock first and unlinked it: make a new one
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise OSError(f"save: temporary files in {path.parent} keep disappearing before they can be locked")


def _write_atomic(path: Path, payload: bytes) -> None:
    """Write to a locked temp file beside ``path``, fsync, then rename over ``path``."""
    directory = path.parent
    _remove_stale_temporaries(path)
    fd, tmp = _locked_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:  # closing it after the rename releases the lock
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give a normal file's mode
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX); best effort elsewhere
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def save(obj: Any, path: str | os.PathLike, *, architecture: Any = None,
         metadata: Mapping[str, str] | None = None) -> Path:
    """Save a state dict (or a model) to ``path`` as a safetensors model file.

    Parameters
    ----------
    obj : mapping of str to array, or object with ``state_dict()``
        The tensors to save. Values may be NumPy arrays, CuPy arrays (copied to
        host) or objects with an array ``.data`` (autograd tensors). A model
        object contributes its architecture via ``config()`` or an
        ``architecture`` attribute unless ``architecture`` is given.
    path : str or os.PathLike
        Destination. The file is written to a temporary file in the same
        directory, fsynced, then renamed over ``path`` with ``os.replace``, so
        a crash mid-save leaves either the old file or the new one, never a
        half-written one.
    architecture : JSON-serialisable, optional
        Description needed to rebuild the model; stored as JSON.
    metadata : mapping of str to str, optional
        Extra string metadata; keys listed in ``io._RESERVED_KEYS`` are refused.

    Returns
    -------
    pathlib.Path
        The path written.

    Notes
    -----
    Supported dtypes: bool, (u)int8/16/32/64, float16/32/64. Data is stored
    little-endian and C-contiguous. The metadata's ``sha256`` is
    :func:`model_file_sha256` of the other metadata and the tensors, checked by
    :func:`load`. Temporary files that earlier saves of the same ``path`` left
    when they were killed are removed first (POSIX; never one a live save holds).
    """
    stn = _require_safetensors()
    tensors, architecture = _extract(obj, architecture)
    meta = _build_metadata(tensors, architecture, metadata)
    path = Path(os.fspath(path))
    problem = _architecture_problem(architecture, {name: arr.shape for name, arr in tensors.items()})
    if problem:  # lepton_kernels.load would refuse the file
        raise ValueError(f"save: {path}: {problem}")
    try:
        payload = stn.save(tensors, metadata=meta)
    except Exception as exc:  # SafetensorError is a bare Exception subclass
        raise ValueError(f"save: safetensors could not serialise the state dict: {exc}") from exc
    _write_atomic(path, payload)
    return path


# --------------------------------------------------------------------------- load


def _fail(path, problem: str) -> ModelFileError:
    return ModelFileError(f"{os.fspath(path)}: {problem}")


def _sniff(path, head: bytes) -> None:
    """Name well-known non-safetensors formats instead of a vague header error."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise _fail(path, "this is a pickle file; lepton_kernels never unpickles model files "
                          "(pickle can run arbitrary code). Save models with lepton_kernels.save")
    if head.startswith(b"PK\x03\x04"):
        raise _fail(path, "this is a zip archive (e.g. a torch.save checkpoint, which contains "
                          "pickle); only safetensors model files are loaded")
    if head.startswith(b"\x1f\x8b"):
        raise _fail(path, "this is a gzip file, not a safetensors model file")
    if head.startswith(b"\x93NUMPY"):
        raise _fail(path, "this is a .npy file, not a safetensors model file")


def _no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


_BRACKET_STEP = np.zeros(256, np.int8)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1
_CHUNK = 1 << 20


def _json_depth(raw: bytes) -> int:
    """Deepest array/object nesting of JSON text, in time and memory linear in its length.

    Inside strings a backslash escapes the next byte, so once the escaped backslashes and
    then the escaped quotes are dropped, every quote left opens or closes a string, and
    the brackets outside strings are those at an even quote count. NumPy takes both
    running sums chunk by chunk (a regex or a Python loop takes seconds per megabyte of
    hostile input).
    """
    codes = np.frombuffer(raw.replace(b"\\\\", b"").replace(b'\\"', b""), np.uint8)
    depth = deepest = in_string = 0
    for begin in range(0, len(codes), _CHUNK):
        chunk = codes[begin:begin + _CHUNK]
        inside = (np.cumsum(chunk == ord('"'), dtype=np.int32) + in_string) & 1
        running = np.cumsum(np.where(inside == 0, _BRACKET_STEP[chunk], np.int8(0)), dtype=np.int32)
        deepest = max(deepest, depth + int(running.max()))
        depth, in_string = depth + int(running[-1]), int(inside[-1])
    return deepest


def _loads_bounded(path, raw: bytes, what: str, **options):
    """json.loads with the nesting bounded first, so RecursionError never escapes."""
    depth = _json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise _fail(path, f"{what} nests {depth} levels deep (at most {MAX_JSON_DEPTH} allowed)")
    try:
        return json.loads(raw.decode("utf-8"), **options)
    except RecursionError:  # a lowered recursion limit; the depth bound makes it unreachable otherwise
        raise _fail(path, f"{what} is nested too deeply to parse") from None
    except ValueError as exc:  # JSONDecodeError and the duplicate-key check
        raise _fail(path, f"{what} is not valid JSON: {exc}") from None


def _parse_header(path, raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(path, f"header is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text.lstrip().startswith("{"):
        raise _fail(path, "header is not a JSON object (not a safetensors file, or corrupted)")
    header = _loads_bounded(path, raw, "header", object_pairs_hook=_no_duplicates)
    if not isinstance(header, dict):
        raise _fail(path, "header is not a JSON object")
    return header


def _is_uint(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _validate_entries(path, header: dict, data_size: int) -> dict[str, tuple[np.dtype, tuple]]:
    """Check dtype/shape/offsets of every tensor; offsets must tile the data exactly."""
    specs: dict[str, tuple[np.dtype, tuple]] = {}
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _fail(path, f"tensor {name!r}: header entry must have exactly dtype, shape, data_offsets")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if code not in _CODE_TO_DTYPE:
            raise _fail(path, f"tensor {name!r}: unsupported dtype {code!r}")
        if not isinstance(shape, list) or not all(_is_uint(s) for s in shape):
            raise _fail(path, f"tensor {name!r}: shape must be a list of non-negative ints; got {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(o) for o in offsets)
                or offsets[0] > offsets[1]):
            raise _fail(path, f"tensor {name!r}: invalid data_offsets {offsets!r}")
        dtype = _CODE_TO_DTYPE[code]
        nbytes = math.prod(shape) * dtype.itemsize
        if offsets[1] > data_size:
            raise _fail(path, f"tensor {name!r}: data_offsets {offsets} out of range (data section is "
                              f"{data_size} bytes; file truncated?)")
        if offsets[1] - offsets[0] != nbytes:
            raise _fail(path, f"tensor {name!r}: {offsets[1] - offsets[0]} bytes for shape {shape} "
                              f"{code} (needs {nbytes})")
        specs[name] = (dtype, tuple(shape))
        spans.append((offsets[0], offsets[1], name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            problem = "overlaps another tensor" if begin < position else "leaves a gap before it"
            raise _fail(path, f"tensor {name!r}: data_offsets [{begin}, {end}] {problem}")
        position = end
    if position != data_size:
        raise _fail(path, f"{data_size - position} unexpected bytes after the last tensor's data")
    return specs


def _legacy_refusal(path) -> ModelFileError:
    return _fail(path, (
        f"written in format_version {LEGACY_FORMAT_VERSION!r} by an older lepton_kernels, whose checksum covers "
        "only the tensor data, so a damaged architecture or metadata would go unnoticed. If you trust this file, "
        "re-save it in the current format: state, info = lepton_kernels.io.load(path, legacy=True); "
        "lepton_kernels.save(state, path, architecture=info['architecture'], metadata=info['metadata'])"))


def _read_metadata(path, header: dict, specs, legacy: bool) -> dict[str, str]:
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _fail(path, "missing or invalid __metadata__ (not a lepton_kernels model file)")
    if meta.get("format") != FORMAT_NAME:
        raise _fail(path, f"metadata format is {meta.get('format')!r}, expected {FORMAT_NAME!r} "
                          "(not a lepton_kernels model file)")
    if meta.get("format_version") == LEGACY_FORMAT_VERSION and not legacy:
        raise _legacy_refusal(path)
    if meta.get("format_version") not in (FORMAT_VERSION, LEGACY_FORMAT_VERSION):
        raise _fail(path, f"unsupported format_version {meta.get('format_version')!r} "
                          f"(this lepton_kernels reads {FORMAT_VERSION!r})")
    digest = meta.get("sha256", "")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise _fail(path, "metadata has no valid sha256 checksum")
    names = _loads_bounded(path, meta.get("names", "").encode("utf-8"), "metadata 'names'")
    if not isinstance(names, list) or sorted(names) != sorted(specs) or len(set(names)) != len(names):
        raise _fail(path, "metadata 'names' does not match the tensors in the header")
    return meta


# ------------------------------------------------------------ what an architecture may build
# lepton_kernels.load rebuilds the recorded architecture, allocating its parameters, before it
# copies the file's tensors in. So the tensors a recorded architecture implies are computed here
# from its arguments alone and must be exactly the file's, shape for shape, before anything is
# built: an edited num_classes=10**7 is then refused at once instead of after 20 s and 7 GB.
# tests/test_io.py checks these shapes against the state_dict() of every model in models.MODELS.


def _conv(cin, cout, k, groups=1, bias=True) -> dict[str, tuple]:
    kh, kw = k
    return {"weight": (cout, cin // groups, kh, kw), **({"bias": (cout,)} if bias else {})}


def _fc(fin, fout, bias=True) -> dict[str, tuple]:
    return {"weight": (fout, fin), **({"bias": (fout,)} if bias else {})}


def _layers(by_index: dict[int, dict]) -> dict[str, tuple]:
    """Sequential state-dict names ("<layer index>.<parameter>") of per-layer shapes."""
    return {f"{i}.{name}": shape for i, layer in by_index.items() for name, shape in layer.items()}


#: state-dict shapes of each models.MODELS class from its constructor's size arguments
_MODEL_SHAPES = {
    "LeNet5": lambda num_classes: _layers({
        0: _conv(1, 6, (5, 5)), 3: _conv(6, 16, (5, 5)), 7: _fc(400, 120), 9: _fc(120, 84),
        11: _fc(84, num_classes)}),
    "CifarCNN": lambda num_classes: _layers({
        0: _conv(3, 32, (3, 3)), 3: _conv(32, 64, (3, 3)), 6: _conv(64, 64, (3, 3)), 9: _fc(1024, 64),
        12: _fc(64, num_classes)}),
    "DigitsCNN": lambda num_classes: _layers({
        0: _conv(1, 16, (3, 3)), 2: _conv(16, 32, (3, 3)), 6: _fc(512, 64), 9: _fc(64, num_classes)}),
    "LinearRegression": lambda in_features, out_features: _layers({0: _fc(in_features, out_features)}),
    "LogisticRegression": lambda in_features, num_classes: _layers({0: _fc(in_features, num_classes)}),
}


def _size(value, what: str) -> int:
    if not _is_uint(value):
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _model_shapes(name: str, arguments) -> dict[str, tuple]:
    from .models import MODELS  # noqa: PLC0415 - models sit above io

    if not isinstance(arguments, dict):
        raise ValueError(f"{name} arguments must be a JSON object, got {type(arguments).__name__}")
    try:
        bound = inspect.signature(MODELS[name]).bind(**arguments)
    except TypeError as exc:
        raise ValueError(f"bad arguments for {name}: {exc}") from None
    bound.apply_defaults()
    shapes = _MODEL_SHAPES.get(name)
    if shapes is None:  # a model added to models.MODELS without its entry here; the tests catch it
        raise ValueError(f"no parameter bound is known for {name}, so it is not built from a file")
    sizes = {key: _size(bound.arguments[key], f"{name} argument {key!r}")
             for key in inspect.signature(shapes).parameters}
    return shapes(**sizes)


def _float_layer_shapes(index: int, config) -> dict[str, tuple]:
    """Parameters a quantized model's FloatLayer builds (see quant.modules._float_layer_from_config)."""
    layer = config.get("layer") if isinstance(config.get("layer"), dict) else {}
    kind, what = layer.get("class"), f"layer {index} (FloatLayer {layer.get('class')})"
    bias = layer.get("bias", True)
    if kind == "Linear":
        shapes = _fc(_size(layer.get("in_features"), f"{what} in_features"),
                     _size(layer.get("out_features"), f"{what} out_features"), bias)
    elif kind == "Conv2d":
        k = layer.get("kernel_size")
        k = [k, k] if _is_uint(k) else k
        if not isinstance(k, list) or len(k) != 2:
            raise ValueError(f"{what} kernel_size must be an integer or a pair, got {layer.get('kernel_size')!r}")
        groups = layer.get("groups", 1)
        if not _is_uint(groups) or groups == 0:
            raise ValueError(f"{what} groups must be a positive integer, got {groups!r}")
        shapes = _conv(_size(layer.get("in_channels"), f"{what} in_channels"),
                       _size(layer.get("out_channels"), f"{what} out_channels"),
                       [_size(v, f"{what} kernel_size") for v in k], groups, bias)
    else:
        return {}
    return {f"{index}.layer.{name}": shape for name, shape in shapes.items()}


def _implied_tensors(architecture) -> tuple[dict[str, tuple], bool] | None:
    """(tensor shapes the architecture builds, whether they must be all the tensors), or None
    when lepton_kernels.load never builds anything from it. ValueError for bad arguments."""
    from .models import MODELS  # noqa: PLC0415 - models sit above io

    name = architecture.get("class") if isinstance(architecture, dict) else None
    if name in MODELS:
        return _model_shapes(name, architecture.get("arguments", {})), True
    if name == "QuantizedModel" and isinstance(architecture.get("layers"), list):
        implied = {}  # the quantized layers' own arrays are used as the file holds them
        for i, layer in enumerate(architecture["layers"]):
            if isinstance(layer, dict) and layer.get("class") == "FloatLayer":
                implied.update(_float_layer_shapes(i, layer))
        return implied, False
    return None


def _architecture_problem(architecture, shapes: Mapping[str, tuple]) -> str | None:
    """Why the recorded architecture does not fit tensors of these shapes (None if it does)."""
    try:
        implied = _implied_tensors(architecture)
    except ValueError as exc:
        return f"recorded architecture: {exc}"
    if implied is None:
        return None
    implied, exact = implied
    name = architecture["class"]
    for key, shape in implied.items():
        if shapes.get(key) != tuple(shape):
            got = "no such tensor" if key not in shapes else f"shape {list(shapes[key])}"
            return f"recorded architecture {name} needs tensor {key!r} of shape {list(shape)}, the file has {got}"
    extra = sorted(set(shapes) - set(implied)) if exact else []
    return f"the file holds tensors {extra[:5]} that the recorded architecture {name} does not have" if extra \
        else None


def _open_regular(path: str):
    """Open ``path`` for reading if it is a regular file, without ever blocking on it.

    A FIFO opened for reading waits for a writer, and a device may never end, so the
    type is checked with stat first; O_NONBLOCK guards the window in which the path
    could be swapped for a FIFO, and the opened descriptor is checked again.
    """
    try:
        kind = os.stat(path).st_mode
    except FileNotFoundError:
        raise ModelFileNotFoundError(2, "model file not found", path) from None
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc.strerror}") from None
    if stat.S_ISDIR(kind):
        raise _fail(path, "is a directory, not a model file")
    if not stat.S_ISREG(kind):
        raise _fail(path, "is not a regular file (a FIFO, socket or device); model files are regular files")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise _fail(path, f"cannot be opened: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _fail(path, "is not a regular file (it changed while being opened)")
    return os.fdopen(fd, "rb")


def _read_header(path, f, max_header_bytes: int) -> tuple[bytes, bytes, dict, int]:
    """(8 length bytes, raw JSON header, parsed header, data size) of an opened file."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if size == 0 or not head:
        raise _fail(path, "file is empty")
    if len(head) < 8:
        _sniff(path, head)
        raise _fail(path, f"file is only {len(head)} bytes; too short for a safetensors header")
    (header_len,) = struct.unpack("<Q", head)
    problem = None
    if header_len > max_header_bytes:
        problem = (f"header length {header_len} exceeds the limit of {max_header_bytes} bytes "
                   "(corrupted or not a safetensors file)")
    elif header_len < 2:
        problem = f"header length {header_len} is too small for a JSON header"
    elif 8 + header_len > size:
        problem = (f"header length {header_len} is larger than the rest of the file "
                   f"({size - 8} bytes): truncated or not a safetensors file")
    if problem is not None:
        _sniff(path, head)  # a pickle/zip/... file gets named instead
        raise _fail(path, problem)
    header_raw = f.read(header_len)
    if not header_raw.lstrip()[:1] == b"{":
        _sniff(path, head)
    return head, header_raw, _parse_header(path, header_raw), size - 8 - header_len


def _verify(path, meta: dict, tensors) -> None:
    if meta["format_version"] == LEGACY_FORMAT_VERSION:
        actual, covered = state_dict_sha256(tensors), "tensor data"
    else:
        actual, covered = model_file_sha256(meta, tensors), "file (architecture, metadata or tensor data)"
    if actual != meta["sha256"]:
        raise _fail(path, f"checksum mismatch: the {covered} is corrupted (stored sha256 "
                          f"{meta['sha256'][:16]}..., computed {actual[:16]}...)")


def load(path: str | os.PathLike, *, max_header_bytes: int = MAX_HEADER_BYTES, legacy: bool = False
         ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load a model file written by :func:`save`; never runs code from the file.

    Parameters
    ----------
    path : str or os.PathLike
        The model file; must be a regular file (a FIFO or device is refused, never read).
    max_header_bytes : int
        Largest JSON header accepted (default 100 MiB). Its arrays and objects may
        nest at most :data:`MAX_JSON_DEPTH` levels, as may the architecture's.
    legacy : bool
        Also read format version 1 files, whose checksum covers the tensor data
        only (their architecture and metadata are unprotected). Off by default:
        such files are refused with a message saying how to re-save them.

    Returns
    -------
    state_dict : dict of str to numpy.ndarray
        Writable host arrays in the order they were saved.
    info : dict
        ``format``, ``format_version``, ``version`` (writer's lepton_kernels
        version), ``architecture`` (decoded JSON, or None), ``sha256``, and
        ``metadata`` (the user's extra string metadata).

    Raises
    ------
    ValueError (``ModelFileError``)
        Missing, empty, truncated or random file; not a regular file; a
        pickle/zip/npy file; a header length over ``max_header_bytes`` or past
        the end of the file; invalid or too deeply nested JSON; bad
        dtypes/shapes/offsets; not a lepton_kernels file; a format version 1
        file without ``legacy=True``; a recorded architecture of a model
        ``lepton_kernels.load`` builds whose parameters are not exactly the
        file's tensors (checked before any data is read); checksum mismatch (any
        damaged byte of the header or the data). A missing file raises
        ``ModelFileNotFoundError``, both a ``FileNotFoundError`` and a
        ``ValueError``.
    """
    stn = _require_safetensors()
    path = os.fspath(path)
    with _open_regular(path) as f:
        head, header_raw, header, data_size = _read_header(path, f, max_header_bytes)
        specs = _validate_entries(path, header, data_size)
        meta = _read_metadata(path, header, specs, legacy)
        architecture = _loads_bounded(path, meta.get("architecture", "null").encode("utf-8"),
                                      "metadata 'architecture'")
        problem = _architecture_problem(architecture, {name: shape for name, (_, shape) in specs.items()})
        if problem:
            raise _fail(path, problem)
        data = f.read(data_size)
        if len(data) != data_size or f.read(1):
            raise _fail(path, "file changed size while being read")
    try:
        tensors = stn.load(head + header_raw + data)
    except Exception as exc:  # validated above, so this is unexpected; still never leak SafetensorError
        raise _fail(path, f"safetensors could not read the file: {exc}") from None
    for name, (dtype, shape) in specs.items():
        arr = tensors.get(name)
        if arr is None or arr.dtype.newbyteorder("=") != dtype or arr.shape != shape:
            raise _fail(path, f"tensor {name!r} does not match its header entry")
    _verify(path, meta, tensors)
    state_dict = {}
    for name in json.loads(meta["names"]):
        arr = tensors[name]
        if arr.dtype.byteorder == ">" or not arr.flags.writeable:
            arr = np.array(arr, dtype=arr.dtype.newbyteorder("="))
        state_dict[name] = arr
    info = {
        "format": meta["format"],
        "format_version": meta["format_version"],
        "version": meta.get("version", "unknown"),
        "architecture": architecture,
        "sha256": meta["sha256"],
        "metadata": {k: v for k, v in meta.items() if k not in _RESERVED_KEYS},
    }
    return state_dict, info
