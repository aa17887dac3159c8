"""Readers for data files a user already has: MNIST IDX, CIFAR-10, CSV.

Every reader checks sizes and magic numbers against the payload and raises a
``ValueError`` that names the file and the problem (truncated, oversized,
wrong format) instead of returning garbage. Images are NCHW: uint8 from the
single-batch CIFAR readers, float32 in [0, 1] from ``load_mnist`` and
``load_cifar10``; labels are int64.

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

Work and memory are bounded by what a genuine file could need, not by what
a file asks for: gzip is decompressed in pieces and stopped once the output
passes the size an IDX header declares or the most a CIFAR-10 batch can hold
(the whole 60,000-image set); a pickle is scanned before it is unpickled and
refused if it references a container twice (a memo-reuse "billion laughs"
would expand as a tree when hashed or materialized), nests deeper than 50,
or holds more opcodes than its size allows; arrays may not hold more bytes
than the file. Only regular files are read (a FIFO would block).
"""
from __future__ import annotations

import csv
import gzip
import io as _io
import math
import numbers
import os
import pickle
import pickletools
import stat
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


_GUNZIP_CHUNK = 1 << 20
#: Bytes of decompressed output handed to a reader's ``declared_size`` (an IDX header is at most 1,024).
_HEAD_BYTES = 4 + 4 * 255


def _read_regular_file(path: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``.

    A FIFO or device would block or never end, so only regular files are
    read; the size is checked before reading, and ``read()`` then sizes its
    buffer by the file instead of by the limit.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise _fail(path, "not a regular file (a directory, FIFO or device cannot be read as data)")
    if info.st_size > max_bytes:
        raise _fail(path, f"file is larger than the {max_bytes}-byte limit")
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) > max_bytes:  # grew after the stat
        raise _fail(path, f"file is larger than the {max_bytes}-byte limit")
    return raw


def _read_payload(path, max_bytes: int = MAX_FILE_BYTES, declared_size=None) -> bytes | bytearray:
    """The file's bytes, gunzipped (into a bytearray, not copied again) when it starts with the gzip
    magic 1f 8b.

    Decompression streams in 1 MiB pieces and stops as soon as the output
    passes ``max_bytes`` or the size ``declared_size(prefix)`` derives from the
    first bytes (None until it has seen enough), so a gzip bomb costs at most
    what a genuine file of that type could.
    """
    path = os.fspath(path)
    raw = _read_regular_file(path, max_bytes)
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    out, limit, what = bytearray(), max_bytes, f"the {max_bytes}-byte limit"
    try:
        with gzip.GzipFile(fileobj=_io.BytesIO(raw)) as g:
            while chunk := g.read(min(_GUNZIP_CHUNK, limit + 1 - len(out))):
                out += chunk
                if declared_size is not None and limit == max_bytes:
                    declared = declared_size(bytes(out[:_HEAD_BYTES]))
                    if declared is not None and declared < limit:
                        limit, what = declared, f"the {declared} bytes its header declares"
                if len(out) > limit:
                    raise _fail(path, f"decompressed data is larger than {what} (gzip bomb or wrong file)")
    except (OSError, EOFError, zlib.error) as exc:
        raise _fail(path, f"corrupt or truncated gzip data ({exc})") from None
    return out


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


def _idx_declared_size(head: bytes) -> int | None:
    """Total file size an IDX header declares (None while the header is incomplete or invalid)."""
    if len(head) < 4 or head[0] or head[1] or head[2] not in _IDX_DTYPES:
        return None
    header = 4 + 4 * head[3]
    if len(head) < header:
        return None
    shape = np.frombuffer(head, dtype=">u4", count=head[3], offset=4).astype(object)
    return header + math.prod(shape) * _IDX_DTYPES[head[2]].itemsize


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
    data = _read_payload(path, declared_size=_idx_declared_size)
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
#: The whole CIFAR-10 set (60,000 images) in one file is the most a batch file can hold; python
#: batches get 256 bytes per image on top for the label and file name entries.
_CIFAR_MAX_IMAGES = 60_000
_CIFAR_BINARY_MAX_BYTES = _CIFAR_MAX_IMAGES * _CIFAR_RECORD
_CIFAR_PYTHON_MAX_BYTES = _CIFAR_MAX_IMAGES * (3072 + 256)


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
    data = _read_payload(path, _CIFAR_BINARY_MAX_BYTES)
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


#: Deepest nesting of containers a CIFAR pickle may use (a real batch nests 3 deep).
_MAX_NESTING = 50
_CONTAINER_TYPES = {"list", "tuple", "dict", "set", "frozenset"}
_LENGTH_BYTES = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False), pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
                 pickletools.TAKEN_FROM_ARGUMENT4U: (4, False), pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}


def _opcode_table() -> dict:
    """Per opcode byte: (name, argument descriptor, role, operands below the mark or on the stack,
    whether it pops down to a mark, and what it pushes: "mark", True for a container, False else)."""
    roles = {"GET": "get", "BINGET": "get", "LONG_BINGET": "get", "DUP": "dup", "PUT": "put",
             "BINPUT": "put", "LONG_BINPUT": "put", "MEMOIZE": "put", "MARK": "mark", "APPEND": "grow",
             "APPENDS": "grow", "SETITEM": "grow", "SETITEMS": "grow", "ADDITEMS": "grow"}
    table = {}
    for op in pickletools.opcodes:
        before = op.stack_before
        uses_mark = pickletools.markobject in before
        below = before.index(pickletools.markobject) if uses_mark else len(before)
        pushes = tuple("mark" if obj is pickletools.markobject else obj.name in _CONTAINER_TYPES
                       for obj in op.stack_after)
        table[op.code.encode("latin-1")[0]] = (op.name, op.arg, roles.get(op.name), below, uses_mark, pushes)
    return table


_OPCODES = _opcode_table()


def _skip_argument(data: bytes, pos: int, name: str, arg) -> tuple[int, int | None]:
    """Position after the opcode's argument, and its value when it is a memo index."""
    if arg is None:
        return pos, None
    if arg.n >= 0:
        end = pos + arg.n
        value = int.from_bytes(data[pos:end], "little") if name.endswith(("GET", "PUT")) else None
    elif arg.n == pickletools.UP_TO_NEWLINE:
        end = data.index(b"\n", pos) + 1
        if arg.name == "stringnl_noescape_pair":  # GLOBAL / INST: module and name on two lines
            end = data.index(b"\n", end) + 1
        value = int(data[pos:end]) if name in ("GET", "PUT") else None
    else:
        width, signed = _LENGTH_BYTES[arg.n]
        length = int.from_bytes(data[pos:pos + width], "little", signed=signed)
        end, value = pos + width + max(length, 0), None
    if end > len(data):
        raise _Refused("truncated pickle")
    return end, value


def _scan_pickle(data: bytes) -> None:
    """Refuse a pickle whose object graph could cost more than its size, before unpickling it.

    The unpickler builds shared references for free, but hashing a dict key
    or materializing the result walks them as a tree, which grows
    exponentially with the file (a 400-byte memo-reuse pickle ran for
    minutes). A CIFAR batch repeats only globals, dtypes and strings, so a
    memo GET or DUP of a container is refused; every later walk is then
    bounded by the opcode count, itself bounded here by the file size, and
    nesting is capped so no walk recurses deeply. The stack is simulated
    with one int per object: 0 for a non-container, else its nesting depth.
    """
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[int, int] = {}
    max_ops = 100_000 + len(data) // 256  # a genuine batch has about 4 opcodes per 3,072-byte image
    pos = 0
    for _ in range(max_ops):
        if pos >= len(data):
            raise _Refused("truncated pickle (no STOP opcode)")
        entry = _OPCODES.get(data[pos])
        if entry is None:
            raise _Refused(f"unknown pickle opcode 0x{data[pos]:02x} at byte {pos}")
        name, arg, role, below, uses_mark, pushes = entry
        try:
            pos, value = _skip_argument(data, pos + 1, name, arg)
        except ValueError:  # no newline, or a memo index that is not a number
            raise _Refused(f"malformed {name} argument") from None
        if name == "STOP":
            return
        _scan_step(stack, marks, memo, name, role, value, below, uses_mark, pushes)
    raise _Refused(f"more than {max_ops} pickle opcodes for {len(data)} bytes")


def _scan_step(stack, marks, memo, name, role, value, below, uses_mark, pushes) -> None:
    if role == "mark":
        marks.append(len(stack))
        return
    if role in ("get", "dup", "put"):
        floor = marks[-1] if marks else 0
        if role == "get":
            depth = memo.get(value)
        else:
            depth = stack[-1] if len(stack) > floor else None
        if depth is None:
            raise _Refused(f"malformed pickle: {name} of nothing")
        if role == "put":
            memo[len(memo) if name == "MEMOIZE" else value] = depth
        elif depth:
            raise _Refused("a container is referenced twice (shared references are not allowed)")
        else:
            stack.append(depth)
        return
    items: list[int] = []
    if uses_mark:
        if not marks:
            raise _Refused(f"malformed pickle: {name} without a mark")
        at = marks.pop()
        items = stack[at:]
        del stack[at:]
    floor = marks[-1] if marks else 0
    if len(stack) - below < floor:
        raise _Refused(f"malformed pickle: stack underflow at {name}")
    operands = stack[len(stack) - below:]
    del stack[len(stack) - below:]
    items += operands if role != "grow" else operands[1:]
    depth = 1 + max(items, default=0)
    if role == "grow":  # the container stays; its depth takes the new items into account
        depth = max(operands[0], depth)
    if depth > _MAX_NESTING:
        raise _Refused(f"containers nested more than {_MAX_NESTING} deep")
    for container in pushes:
        if container == "mark":
            marks.append(len(stack))
        else:
            stack.append(depth if container else 0)


def _raw_array(raw, dtype: np.dtype, shape, fortran: bool, budget: list[int]) -> np.ndarray:
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    if not isinstance(raw, (bytes, bytearray)):
        raise _Refused("array data is not a raw byte buffer")
    need = math.prod(shape) * dtype.itemsize
    if len(raw) != need:
        raise _Refused(f"array data is {len(raw)} bytes, shape {shape} {dtype} needs {need}")
    budget[0] -= need
    if budget[0] < 0:  # one buffer referenced by many arrays would multiply memory
        raise _Refused("arrays hold more bytes than the file (a buffer is shared between arrays)")
    arr = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return np.array(arr, dtype=dtype.newbyteorder("="), order="C")


def _materialize(obj, budget: list[int], depth: int = 0):
    """Replace stand-ins by real arrays, recursively through dicts/lists/tuples.

    ``budget`` holds the array bytes still allowed (the file's size at the start).
    """
    if depth > _MAX_NESTING:
        raise _Refused("nesting too deep")
    if isinstance(obj, _ArrayStub):
        if obj.args and obj.args[0] == "frombuffer":
            _, buf, dtype, shape, order = obj.args
            return _raw_array(buf, _real_dtype(dtype), _shape(shape), _text(order) == "F", budget)
        state = obj.state
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("malformed ndarray state")
        shape, dtype, fortran, raw = state[-4:]
        return _raw_array(raw, _real_dtype(dtype), _shape(shape), bool(fortran), budget)
    if isinstance(obj, _ScalarStub):
        dtype, raw = obj.args
        return _raw_array(raw, _real_dtype(dtype), (), False, budget)[()]
    if isinstance(obj, dict):
        return {_materialize(k, budget, depth + 1): _materialize(v, budget, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialize(v, budget, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialize(v, budget, depth + 1) for v in obj)
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, bytearray)):
        return obj
    raise _Refused(f"unexpected object of type {type(obj).__name__}")


def _safe_unpickle(path, data: bytes):
    try:
        _scan_pickle(data)
        obj = _RestrictedUnpickler(_io.BytesIO(data), encoding="bytes").load()
        return _materialize(obj, [len(data)])
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
    batch = _safe_unpickle(path, _read_payload(path, _CIFAR_PYTHON_MAX_BYTES))
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


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _representable(values: np.ndarray) -> bool:
    """Every value finite in float32, the dtype features are returned in (1e39 would become inf)."""
    return bool(np.all(np.abs(values) <= _FLOAT32_MAX))


def _parse_rows(path, rows: list[list[str]], line_numbers: list[int], columns: list[str],
                allow_nonfinite: bool) -> np.ndarray:
    """float64 matrix of string rows; errors give the line and column."""
    try:
        values = np.array(rows, dtype=str).astype(np.float64)
    except ValueError:
        values = None
    if values is None or (not allow_nonfinite and not _representable(values)):
        for row, line in zip(rows, line_numbers):
            for j, text in enumerate(row):
                try:
                    v = float(text)
                except ValueError:
                    shown = repr(text) if text.strip() else "empty value"
                    raise _fail(path, f"line {line}, column {columns[j]}: {shown} is not a number") from None
                if not allow_nonfinite and not abs(v) <= _FLOAT32_MAX:
                    raise _fail(path, f"line {line}, column {columns[j]}: non-finite value {text!r} (or "
                                      "beyond float32's range)")
        values = np.array([[float(t) for t in row] for row in rows], dtype=np.float64)
    return values


def _csv_text(path) -> str:
    """The file's text (gunzipped when compressed); invalid UTF-8 and NUL bytes are refused.

    NUL is refused because numpy's C parser ends a field at it, which would
    silently read ``"12\\x003"`` as 12.
    """
    raw = _read_payload(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _fail(path, f"line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                          f"{exc.start}); not a CSV file?") from None
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise _fail(path, f"line {line}: NUL byte inside a field (binary data, "
                          "not a CSV file)")
    return text


def _csv_rows(text: str, delimiter: str):
    return csv.reader(_io.StringIO(text, newline=""), delimiter=delimiter)


def _csv_header(path, text: str, delimiter: str, header) -> tuple[list[str], int | None]:
    """Column names and the header's line number (None when there is no header row)."""
    reader = _csv_rows(text, delimiter)
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
    return int(label_column) % width


def _check_csv_arguments(label_column, shape) -> tuple[int, ...] | None:
    """Refuse argument types before the file is read; the shape as a tuple of ints."""
    if label_column is not None and not isinstance(label_column, str) and (
            isinstance(label_column, bool) or not isinstance(label_column, numbers.Integral)):
        raise ValueError(f"read_csv: label_column must be an int index, a column name or None; "
                         f"got {label_column!r}")
    if shape is None:
        return None
    try:
        dims = tuple(shape)
    except TypeError:
        dims = ()
    if not dims or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1
                           for d in dims):
        raise ValueError(f"read_csv: shape must be a tuple of positive ints such as (1, 28, 28); got {shape!r}")
    return tuple(int(d) for d in dims)


def _fast_csv(text: str, delimiter: str, skip: int, width: int, allow_nonfinite: bool) -> np.ndarray | None:
    """numpy's C parser; None whenever anything is off, so the slow path can explain it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = np.loadtxt(_io.StringIO(text, newline=""), delimiter=delimiter, dtype=np.float64,
                                comments=None, skiprows=skip, ndmin=2, quotechar='"')
    except Exception:
        return None
    if values.shape[0] == 0 or values.shape[1] != width:
        return None
    if not allow_nonfinite and not _representable(values):
        return None
    return values


def _slow_csv(path, text: str, delimiter: str, header_line: int | None, names: list[str],
              allow_nonfinite: bool) -> np.ndarray:
    reader = _csv_rows(text, delimiter)
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


def _reshape_features(path, features: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    if shape is None:
        return features
    if math.prod(shape) != features.shape[1]:
        raise ValueError(f"read_csv: shape {shape} needs {math.prod(shape)} feature columns; {path} has "
                         f"{features.shape[1]}")
    return features.reshape(len(features), *shape)


def read_csv(path: str | os.PathLike, label_column: int | str | None = -1, header: bool | str = "auto",
             delimiter: str = ",", allow_nonfinite: bool = False,
             shape: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a numeric CSV file, plain or gzipped, into features and labels.

    Gzip is detected by the magic bytes 1f 8b (``data.csv.gz``), not the name.

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
        Accept ``nan``/``inf`` values and values beyond float32's range
        (refused by default, as they silently spoil training).
    shape : tuple of ints, optional
        Per-sample shape of the features, e.g. ``(1, 28, 28)`` for a CSV of
        784 pixel columns to feed a CNN (NCHW); its product must equal the
        number of feature columns. Values are returned as read (no scaling).

    Returns
    -------
    features : float32 (N, n_columns - 1), or (N, *shape)
    labels : int64 (N,) when every label is a whole number, else float32; or None

    Raises
    ------
    ValueError
        Ragged rows, non-numeric or empty fields (with line number and
        column), NUL bytes or invalid UTF-8, an unknown or non-integer label
        column, a shape that does not match the columns, or no data rows.
    """
    shape = _check_csv_arguments(label_column, shape)
    path = os.fspath(path)
    text = _csv_text(path)
    names, header_line = _csv_header(path, text, delimiter, header)
    label_index = _label_index(path, label_column, names, header_line is not None)
    values = _fast_csv(text, delimiter, header_line or 0, len(names), allow_nonfinite)
    if values is None:  # slow path: precise errors with line numbers, or float()'s leniency
        values = _slow_csv(path, text, delimiter, header_line, names, allow_nonfinite)
    with np.errstate(over="ignore"):  # only with allow_nonfinite: values beyond float32 become inf, as documented
        values32 = values.astype(np.float32)
    if label_index is None:
        return _reshape_features(path, values32, shape), None
    labels = values[:, label_index]
    features = _reshape_features(path, np.delete(values32, label_index, axis=1), shape)
    if np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)) and np.all(np.abs(labels) < 2**53):
        return features, labels.astype(np.int64)
    return features, values32[:, label_index].copy()
