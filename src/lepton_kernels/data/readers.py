"""Readers for data files a user already has: MNIST IDX, CIFAR-10, CSV.

Every reader checks sizes and magic numbers against the payload and raises a
``ValueError`` that names the file and the problem (truncated, oversized,
wrong format) instead of returning garbage. Image outputs are NCHW float32 in
[0, 1]; labels are int64.

CIFAR-10 python batches are pickles. Unpickling can run arbitrary code, so
they are read with a restricted unpickler that resolves no real global at all:
the only names a file may refer to are numpy's array/dtype/scalar
reconstruction functions (``numpy[._]core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``, ``numpy[._]core.multiarray.scalar``,
``numpy[._]core.numeric._frombuffer``) and ``_codecs.encode`` with latin-1,
and each resolves to an inert local stand-in that just records its arguments.
The recorded data is then turned into arrays here, accepting only plain
numeric dtypes and raw buffers of exactly the declared size. Any other global
(``os.system``, ``builtins.eval``, ...) is refused before anything runs.
The binary version of CIFAR-10 needs none of this and is preferred.
"""
from __future__ import annotations

import csv
import gzip
import io as _io
import math
import os
import pickle
import warnings
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "read_idx",
    "load_mnist",
    "read_cifar10_binary",
    "read_cifar10_python",
    "load_cifar10",
    "read_csv",
]

#: Largest decompressed/raw size a reader accepts (guards against gzip bombs).
MAX_FILE_BYTES = 4 * 1024**3

_GZIP_MAGIC = b"\x1f\x8b"


def _fail(path, problem: str) -> ValueError:
    return ValueError(f"{os.fspath(path)}: {problem}")


def _read_payload(path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic 1f 8b."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise _fail(path, f"file is larger than the {max_bytes}-byte limit")
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        with gzip.GzipFile(fileobj=_io.BytesIO(raw)) as g:
            data = g.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise _fail(path, f"corrupt or truncated gzip data ({exc})") from None
    if len(data) > max_bytes:
        raise _fail(path, f"decompressed data is larger than the {max_bytes}-byte limit")
    return data


# --------------------------------------------------------------------------- IDX / MNIST

# IDX type code -> big-endian numpy dtype
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST / Fashion-MNIST format), plain or gzipped.

    Layout: magic ``00 00 TT DD`` (TT the type code, 0x08 = uint8 ... 0x0E =
    float64; DD the number of dimensions), DD big-endian uint32 sizes, then
    the data in C order. Gzip is detected by the magic bytes 1f 8b, not the
    file name.

    Returns
    -------
    numpy.ndarray
        Writable array of the declared shape in native byte order (uint8 for
        MNIST).

    Raises
    ------
    ValueError
        Wrong magic number or type code, zero dimensions, or a payload that
        is shorter (truncated) or longer than the declared sizes.
    """
    data = _read_payload(path)
    if len(data) < 4:
        raise _fail(path, f"only {len(data)} bytes; too short for an IDX header (truncated or empty)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise _fail(path, f"bad IDX magic number 0x{data[:4].hex()} (expected 0x0000TTDD with type "
                          "code TT in 08,09,0b,0c,0d,0e); not an IDX file")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    if ndim == 0:
        raise _fail(path, "IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _fail(path, f"truncated IDX header: {ndim} dimensions need {header} bytes, file has {len(data)}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise _fail(path, f"truncated: shape {shape} needs {expected} bytes of data, found {got}")
    if got > expected:
        raise _fail(path, f"{got - expected} unexpected bytes after the data for shape {shape} "
                          "(wrong file or corrupted header)")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))  # a writable, native-order copy


def _find_file(directory: Path, names: list[str]) -> Path:
    for name in names:
        for candidate in (directory / name, directory / (name + ".gz")):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{directory}: none of {', '.join(names)} (or .gz) found")


def load_mnist(directory: str | os.PathLike, kind: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST from the usual IDX files in ``directory``.

    Looks for ``{kind}-images-idx3-ubyte`` and ``{kind}-labels-idx1-ubyte``
    (or the ``{kind}-images.idx3-ubyte`` spelling), each optionally ``.gz``.

    Parameters
    ----------
    directory : path
    kind : {"train", "t10k"} ("test" is accepted for "t10k")

    Returns
    -------
    images : float32 (N, 1, H, W) in [0, 1] (H = W = 28 for MNIST)
    labels : int64 (N,)
    """
    if kind == "test":
        kind = "t10k"
    if kind not in ("train", "t10k"):
        raise ValueError(f"load_mnist: kind must be 'train' or 't10k'; got {kind!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"load_mnist: {directory} is not a directory")
    img_path = _find_file(directory, [f"{kind}-images-idx3-ubyte", f"{kind}-images.idx3-ubyte"])
    lbl_path = _find_file(directory, [f"{kind}-labels-idx1-ubyte", f"{kind}-labels.idx1-ubyte"])
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise _fail(img_path, f"expected uint8 images of shape (N, H, W); got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise _fail(lbl_path, f"expected uint8 labels of shape (N,); got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"load_mnist: {img_path} has {len(images)} images but {lbl_path} has "
                         f"{len(labels)} labels")
    x = images.astype(np.float32)[:, None] / np.float32(255.0)
    return x, labels.astype(np.int64)


# --------------------------------------------------------------------------- CIFAR-10

_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_CLASSES = 10


def _check_labels(path, labels: np.ndarray) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= _CIFAR_CLASSES))
    if bad.size:
        raise _fail(path, f"label {int(labels[bad[0]])} of record {int(bad[0])} is not in 0..9 "
                          "(not a CIFAR-10 file, or corrupted)")


def read_cifar10_binary(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch (``data_batch_1.bin`` ... ``test_batch.bin``).

    Each 3,073-byte record is a label byte then 3,072 pixel bytes: the 1024
    red, 1024 green and 1024 blue values of a 32x32 image in row-major order.

    Returns
    -------
    images : uint8 (N, 3, 32, 32)
    labels : int64 (N,)
    """
    data = _read_payload(path)
    if not data:
        raise _fail(path, "file is empty")
    if len(data) % _CIFAR_RECORD:
        raise _fail(path, f"size {len(data)} is not a multiple of the {_CIFAR_RECORD}-byte CIFAR-10 "
                          f"record ({len(data) // _CIFAR_RECORD} whole records and "
                          f"{len(data) % _CIFAR_RECORD} extra bytes: truncated or not CIFAR-10)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    _check_labels(path, labels)
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


class _Refused(pickle.UnpicklingError):
    pass


class _DtypeStub:
    __slots__ = ("args", "state")

    def __init__(self, *args):
        self.args, self.state = args, None

    def __setstate__(self, state):
        self.state = state


class _ArrayStub:
    __slots__ = ("args", "state")

    def __init__(self, *args):
        self.args, self.state = args, None

    def __setstate__(self, state):
        self.state = state


class _ScalarStub:
    __slots__ = ("args",)

    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        raise _Refused("numpy scalar with extra state")


_NDARRAY = ("numpy.ndarray",)  # a sentinel; tuples cannot be mutated by BUILD


def _reconstruct(subtype, shape, typecode):
    if subtype is not _NDARRAY:
        raise _Refused("_reconstruct of something other than numpy.ndarray")
    return _ArrayStub("reconstruct")


def _frombuffer(buf, dtype, shape, order):
    return _ArrayStub("frombuffer", buf, dtype, shape, order)


def _scalar(dtype, raw=None):
    return _ScalarStub(dtype, raw)


def _codecs_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1"):
        raise _Refused("_codecs.encode other than latin-1 text")
    return text.encode("latin-1")


def _make_dtype(*args):
    return _DtypeStub(*args)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _make_dtype,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _codecs_encode,
}

_PLAIN_KINDS = {"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        stub = _ALLOWED_GLOBALS.get((module, name))
        if stub is None:
            raise _Refused(f"refused to load global {module}.{name} (only numpy array data is allowed)")
        return stub

    def persistent_load(self, pid):
        raise _Refused("persistent ids are not allowed")


def _text(x) -> str:
    if isinstance(x, bytes):
        return x.decode("ascii")
    if isinstance(x, str):
        return x
    raise _Refused(f"expected a string in dtype data; got {type(x).__name__}")


def _real_dtype(stub) -> np.dtype:
    if not isinstance(stub, _DtypeStub) or not stub.args:
        raise _Refused("array dtype is not a numpy dtype")
    spec = _text(stub.args[0])
    if spec not in _PLAIN_KINDS:
        raise _Refused(f"dtype {spec!r} is not a plain numeric dtype")
    order = "|"
    state = stub.state
    if state is not None:
        if not isinstance(state, tuple) or len(state) < 2:
            raise _Refused("malformed dtype state")
        order = _text(state[1])
        if any(s is not None for s in state[2:5]):
            raise _Refused("structured/subarray dtypes are not allowed")
        if order not in ("<", ">", "|", "="):
            raise _Refused(f"bad byte order {order!r}")
    dt = np.dtype(spec)
    return dt.newbyteorder(order) if order in ("<", ">") and dt.itemsize > 1 else dt


def _shape(shape) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                               for s in shape):
        raise _Refused(f"bad array shape {shape!r}")
    return shape


def _raw_array(raw, dtype: np.dtype, shape, fortran: bool) -> np.ndarray:
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    if not isinstance(raw, (bytes, bytearray)):
        raise _Refused("array data is not a raw byte buffer")
    need = math.prod(shape) * dtype.itemsize
    if len(raw) != need:
        raise _Refused(f"array data is {len(raw)} bytes, shape {shape} {dtype} needs {need}")
    arr = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return np.array(arr, dtype=dtype.newbyteorder("="), order="C")


def _materialize(obj, depth: int = 0):
    """Replace stand-ins by real arrays, recursively through dicts/lists/tuples."""
    if depth > 50:
        raise _Refused("nesting too deep")
    if isinstance(obj, _ArrayStub):
        if obj.args and obj.args[0] == "frombuffer":
            _, buf, dtype, shape, order = obj.args
            return _raw_array(buf, _real_dtype(dtype), _shape(shape), _text(order) == "F")
        state = obj.state
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("malformed ndarray state")
        shape, dtype, fortran, raw = state[-4:]
        return _raw_array(raw, _real_dtype(dtype), _shape(shape), bool(fortran))
    if isinstance(obj, _ScalarStub):
        dtype, raw = obj.args
        return _raw_array(raw, _real_dtype(dtype), (), False)[()]
    if isinstance(obj, dict):
        return {_materialize(k, depth + 1): _materialize(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialize(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v, depth + 1) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, bytearray)):
        return obj
    raise _Refused(f"unexpected object of type {type(obj).__name__}")


def _safe_unpickle(path, data: bytes):
    try:
        obj = _RestrictedUnpickler(_io.BytesIO(data), encoding="bytes").load()
        return _materialize(obj)
    except Exception as exc:  # any failure of an untrusted pickle is a bad file
        raise _fail(path, f"not a readable CIFAR-10 python batch: {exc}") from None


def read_cifar10_python(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch (``data_batch_1`` ... ``test_batch``) safely.

    The file is a pickle of ``{b"data": uint8 (N, 3072), b"labels": [N ints], ...}``.
    It is read with a restricted unpickler that refuses every global except
    inert stand-ins for numpy's array reconstruction (see the module
    docstring), so a malicious file raises ``ValueError`` and runs nothing.

    Returns
    -------
    images : uint8 (N, 3, 32, 32)
    labels : int64 (N,)
    """
    batch = _safe_unpickle(path, _read_payload(path))
    if not isinstance(batch, dict):
        raise _fail(path, f"expected a dict, got {type(batch).__name__}")
    batch = {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise _fail(path, f"missing 'data' or 'labels' (keys: {sorted(map(str, batch))})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _fail(path, f"'data' must be uint8 of shape (N, 3072); got {got}")
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise _fail(path, "'labels' is not a list of integers") from None
    if labels.shape != (len(data),):
        raise _fail(path, f"{len(data)} images but labels of shape {labels.shape}")
    _check_labels(path, labels)
    return data.reshape(-1, 3, 32, 32).copy(), labels


def load_cifar10(directory: str | os.PathLike, train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load CIFAR-10 from an extracted binary or python archive.

    ``directory`` is ``cifar-10-batches-bin`` / ``cifar-10-batches-py`` or
    the folder that contains either. Binary batches (``data_batch_1.bin`` ...
    ``data_batch_5.bin``, ``test_batch.bin``) are preferred; python batches
    (same names without ``.bin``) are read with the restricted unpickler of
    :func:`read_cifar10_python`. All five training batches must be present.

    Returns
    -------
    images : float32 (N, 3, 32, 32) in [0, 1]
    labels : int64 (N,)
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"load_cifar10: {root} is not a directory")
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    for folder in (root, root / "cifar-10-batches-bin", root / "cifar-10-batches-py"):
        for suffix, reader in ((".bin", read_cifar10_binary), ("", read_cifar10_python)):
            paths = [folder / (n + suffix) for n in names]
            present = [p for p in paths if p.is_file()]
            if not present:
                continue
            missing = [p.name for p in paths if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"load_cifar10: {folder} lacks {', '.join(missing)}")
            parts = [reader(p) for p in paths]
            images = np.concatenate([p[0] for p in parts]).astype(np.float32) / np.float32(255.0)
            return images, np.concatenate([p[1] for p in parts])
    raise FileNotFoundError(
        f"load_cifar10: no CIFAR-10 batches ({names[0]}.bin or {names[0]}) in {root} or its "
        "cifar-10-batches-bin / cifar-10-batches-py subfolder (extract the .tar.gz first)")


# --------------------------------------------------------------------------- CSV


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_rows(path, rows: list[list[str]], line_numbers: list[int], columns: list[str],
                allow_nonfinite: bool) -> np.ndarray:
    """float64 matrix of string rows; errors give the line and column."""
    try:
        values = np.array(rows, dtype=str).astype(np.float64)
    except ValueError:
        values = None
    if values is None or (not allow_nonfinite and not np.all(np.isfinite(values))):
        for row, line in zip(rows, line_numbers):
            for j, text in enumerate(row):
                try:
                    v = float(text)
                except ValueError:
                    shown = repr(text) if text.strip() else "empty value"
                    raise _fail(path, f"line {line}, column {columns[j]}: {shown} is not a number") from None
                if not allow_nonfinite and not math.isfinite(v):
                    raise _fail(path, f"line {line}, column {columns[j]}: non-finite value {text!r}")
        values = np.array([[float(t) for t in row] for row in rows], dtype=np.float64)
    return values


def _csv_header(path, delimiter: str, header) -> tuple[list[str], int | None]:
    """Column names and the header's line number (None when there is no header row)."""
    with open(path, "r", newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            first = next((row for row in reader if any(field.strip() for field in row)), None)
        except csv.Error as exc:
            raise _fail(path, f"line {reader.line_num}: {exc}") from None
        line = reader.line_num
    if first is None:
        raise _fail(path, "file has no rows")
    if header == "auto":
        header = not all(_is_number(field) for field in first)
    if header:
        return [field.strip() for field in first], line
    return [str(j) for j in range(len(first))], None


def _label_index(path, label_column, names: list[str], has_header: bool) -> int | None:
    width = len(names)
    if label_column is None:
        return None
    if isinstance(label_column, str):
        if not has_header:
            raise ValueError(f"read_csv: label_column={label_column!r} is a name but {path} has no header")
        if label_column not in names:
            raise ValueError(f"read_csv: {path} has no column {label_column!r} (columns: {names})")
        return names.index(label_column)
    if not -width <= label_column < width:
        raise ValueError(f"read_csv: label_column={label_column} is out of range for {width} columns")
    return label_column % width


def _fast_csv(path, delimiter: str, skip: int, width: int, allow_nonfinite: bool) -> np.ndarray | None:
    """numpy's C parser; None whenever anything is off, so the slow path can explain it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, comments=None,
                                skiprows=skip, ndmin=2, encoding="utf-8-sig", quotechar='"')
    except Exception:
        return None
    if values.shape[0] == 0 or values.shape[1] != width:
        return None
    if not allow_nonfinite and not np.all(np.isfinite(values)):
        return None
    return values


def _slow_csv(path, delimiter: str, header_line: int | None, names: list[str],
              allow_nonfinite: bool) -> np.ndarray:
    with open(path, "r", newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            records = [(reader.line_num, row) for row in reader if any(field.strip() for field in row)]
        except csv.Error as exc:
            raise _fail(path, f"line {reader.line_num}: {exc}") from None
    if header_line is not None:
        records = [(line, row) for line, row in records if line > header_line]
    if not records:
        raise _fail(path, "file has a header but no data rows")
    width = len(names)
    for line, row in records:
        if len(row) != width:
            raise _fail(path, f"line {line} has {len(row)} fields, expected {width}")
    columns = [repr(n) if header_line is not None else str(j + 1) for j, n in enumerate(names)]
    chunk = 8192
    parts = []
    for start in range(0, len(records), chunk):
        block = records[start:start + chunk]
        parts.append(_parse_rows(path, [r for _, r in block], [ln for ln, _ in block], columns,
                                 allow_nonfinite))
    return np.concatenate(parts)


def read_csv(path: str | os.PathLike, label_column: int | str | None = -1, header: bool | str = "auto",
             delimiter: str = ",", allow_nonfinite: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a numeric CSV file into features and labels.

    Parameters
    ----------
    path : path
    label_column : int, str or None, default -1
        Index (negative counts from the end) or header name of the label
        column; None returns every column as features and ``labels=None``.
    header : bool or "auto"
        Whether the first row holds column names; "auto" says yes when any
        field of the first row is not a number.
    delimiter : str, default ","
    allow_nonfinite : bool, default False
        Accept ``nan``/``inf`` values (refused by default, as they silently
        spoil training).

    Returns
    -------
    features : float32 (N, n_columns - 1)
    labels : int64 (N,) when every label is a whole number, else float32; or None

    Raises
    ------
    ValueError
        Ragged rows, non-numeric or empty fields (with line number and
        column), an unknown label column, or no data rows.
    """
    path = os.fspath(path)
    names, header_line = _csv_header(path, delimiter, header)
    label_index = _label_index(path, label_column, names, header_line is not None)
    values = _fast_csv(path, delimiter, header_line or 0, len(names), allow_nonfinite)
    if values is None:  # slow path: precise errors with line numbers, or float()'s leniency
        values = _slow_csv(path, delimiter, header_line, names, allow_nonfinite)
    if label_index is None:
        return values.astype(np.float32), None
    labels = values[:, label_index]
    features = np.delete(values, label_index, axis=1).astype(np.float32)
    if np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)) and np.all(np.abs(labels) < 2**53):
        return features, labels.astype(np.int64)
    return features, labels.astype(np.float32)
