"""Safe model files: ``save`` / ``load`` state dicts in the safetensors format.

A model file is a plain safetensors file (8-byte little-endian header length,
a JSON header, then the raw little-endian tensor bytes). Its ``__metadata__``
holds only strings:

``format``        ``"lepton_kernels"``
``format_version`` ``"1"``
``version``       the lepton_kernels version that wrote the file
``architecture``  JSON of the architecture description (``"null"`` if none)
``names``         JSON list of the tensor names in the state dict's order
``sha256``        SHA-256 of the tensor data, see :func:`state_dict_sha256`
plus any user ``metadata`` (keys must not clash with the ones above).

Loading never runs code from the file: no pickle, no imports, no ``eval``.
The header length and the JSON header are parsed and validated here before
the bytes are handed to the ``safetensors`` package, and any problem is a
``ValueError`` that names the file and what is wrong with it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "save",
    "load",
    "state_dict_sha256",
    "ModelFileError",
    "MAX_HEADER_BYTES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

FORMAT_NAME = "lepton_kernels"
FORMAT_VERSION = "1"
#: Largest JSON header :func:`load` accepts (the safetensors package uses the same).
MAX_HEADER_BYTES = 100 * 1024 * 1024
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


def state_dict_sha256(tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of a state dict's tensor data, independent of dict order.

    For each name in sorted order the digest takes a JSON record
    ``[name, dtype_code, shape]`` (dtype codes as in safetensors: ``"F32"``...)
    followed by a NUL byte, the byte count as 8 little-endian bytes, and the
    tensor's little-endian C-order bytes.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        native = arr.dtype.newbyteorder("=") if arr.dtype.byteorder not in ("=", "|") else arr.dtype
        code = _DTYPE_TO_CODE.get(native)
        if code is None:
            raise TypeError(f"state_dict_sha256: {name!r} has unsupported dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=native.newbyteorder("<"))
        record = json.dumps([name, code, list(arr.shape)], separators=(",", ":"))
        h.update(record.encode("utf-8") + b"\0")
        h.update(struct.pack("<Q", arr.nbytes))
        h.update(arr.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def _build_metadata(tensors, architecture, metadata) -> dict[str, str]:
    try:
        arch_json = json.dumps(architecture, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"save: architecture must be JSON-serialisable: {exc}") from exc
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "version": _library_version(),
        "architecture": arch_json,
        "names": json.dumps(list(tensors)),
        "sha256": state_dict_sha256(tensors),
    }
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"save: metadata keys and values must be str; got {key!r}: {type(value).__name__}")
        if key in _RESERVED_KEYS:
            raise ValueError(f"save: metadata key {key!r} is reserved (reserved: {', '.join(_RESERVED_KEYS)})")
        meta[key] = value
    return meta


def _write_atomic(path: Path, payload: bytes) -> None:
    """Write to a temp file beside ``path``, fsync, then rename over ``path``."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
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
    :func:`state_dict_sha256` of the tensors, checked by :func:`load`.
    """
    stn = _require_safetensors()
    tensors, architecture = _extract(obj, architecture)
    meta = _build_metadata(tensors, architecture, metadata)
    try:
        payload = stn.save(tensors, metadata=meta)
    except Exception as exc:  # SafetensorError is a bare Exception subclass
        raise ValueError(f"save: safetensors could not serialise the state dict: {exc}") from exc
    path = Path(os.fspath(path))
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


def _parse_header(path, raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(path, f"header is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text.lstrip().startswith("{"):
        raise _fail(path, "header is not a JSON object (not a safetensors file, or corrupted)")
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except ValueError as exc:
        raise _fail(path, f"header is not valid JSON: {exc}") from None
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


def _read_metadata(path, header: dict, specs) -> dict[str, str]:
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _fail(path, "missing or invalid __metadata__ (not a lepton_kernels model file)")
    if meta.get("format") != FORMAT_NAME:
        raise _fail(path, f"metadata format is {meta.get('format')!r}, expected {FORMAT_NAME!r} "
                          "(not a lepton_kernels model file)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise _fail(path, f"unsupported format_version {meta.get('format_version')!r} "
                          f"(this lepton_kernels reads {FORMAT_VERSION!r})")
    digest = meta.get("sha256", "")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise _fail(path, "metadata has no valid sha256 checksum")
    try:
        names = json.loads(meta.get("names", ""))
    except ValueError:
        names = None
    if not isinstance(names, list) or sorted(names) != sorted(specs) or len(set(names)) != len(names):
        raise _fail(path, "metadata 'names' does not match the tensors in the header")
    return meta


def load(path: str | os.PathLike, *, max_header_bytes: int = MAX_HEADER_BYTES
         ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load a model file written by :func:`save`; never runs code from the file.

    Parameters
    ----------
    path : str or os.PathLike
        The model file.
    max_header_bytes : int
        Largest JSON header accepted (default 100 MiB).

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
        Missing, empty, truncated or random file; a pickle/zip/npy file; a
        header length over ``max_header_bytes`` or past the end of the file;
        invalid JSON; bad dtypes/shapes/offsets; not a lepton_kernels file;
        checksum mismatch (corrupted tensor data). A missing file raises
        ``ModelFileNotFoundError``, both a ``FileNotFoundError`` and a
        ``ValueError``.
    """
    stn = _require_safetensors()
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ModelFileNotFoundError(2, "model file not found", path) from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, not a model file") from None
    with f:
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
        header = _parse_header(path, header_raw)
        data_size = size - 8 - header_len
        specs = _validate_entries(path, header, data_size)
        meta = _read_metadata(path, header, specs)
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
    actual = state_dict_sha256(tensors)
    if actual != meta["sha256"]:
        raise _fail(path, f"checksum mismatch: the tensor data is corrupted (stored sha256 "
                          f"{meta['sha256'][:16]}..., computed {actual[:16]}...)")
    try:
        architecture = json.loads(meta["architecture"]) if "architecture" in meta else None
    except ValueError:
        raise _fail(path, "metadata 'architecture' is not valid JSON") from None
    names = json.loads(meta["names"])
    state_dict = {}
    for name in names:
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
