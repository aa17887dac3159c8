"""What the fuzz targets share: a byte reader that turns a fuzzer's input into choices (so a
corpus file replays the same calls without atheris), the allowed-exception rule, and the
atheris entry point.

Each target module defines ``check(data: bytes) -> None`` that runs one input and lets any
finding escape as an exception (the documented ValueError / TypeError are swallowed there),
plus ``ALLOWED``. ``python tests/fuzz/fuzz_X.py [libFuzzer flags] [corpus dirs]`` fuzzes it.
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


class Bytes:
    """Consumes a byte string front to back; past the end every read gives zeros, so every
    input (even empty) decodes to some call."""

    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.pos = 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk + bytes(n - len(chunk))

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def below(self, n: int) -> int:
        return self.u8() % n if n <= 256 else self.u32() % n

    def pick(self, seq):
        return seq[self.below(len(seq))]

    def flag(self) -> bool:
        return bool(self.u8() & 1)

    def rest(self) -> bytes:
        chunk = self.data[self.pos:]
        self.pos = len(self.data)
        return chunk


#: Integers that break geometry and size arithmetic (signs, 32/64-bit edges, beyond int64).
INTERESTING_INTS = (0, 1, 2, 3, 4, 5, 7, -1, -2, 2**15, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1,
                    2**63, 2**64, 2**70, -2**31, -2**63)
INTERESTING_FLOATS = (0.0, 1.0, -1.0, 0.5, 1e-3, 1e30, -1e30, 1e-45, float("inf"), float("-inf"),
                      float("nan"), 2.0**64)
DTYPES = (np.float32, np.float64, np.float16, np.int8, np.uint8, np.int32, np.int64, np.uint64, np.bool_,
          np.complex64)


def small_int(b: Bytes) -> int:
    """Mostly a small geometry value, sometimes an edge from INTERESTING_INTS."""
    v = b.u8()
    return INTERESTING_INTS[v % len(INTERESTING_INTS)] if v >= 200 else v % 6


#: Geometry numbers: either small or absurd (past 32 bits), never "large but valid" (2**15
#: padding on a 5x6 image is a legitimate 1 GB output that only costs time to compute).
GEOMETRY_INTS = tuple(v for v in INTERESTING_INTS if abs(v) < 2**8 or abs(v) >= 2**31)


def geometry_int(b: Bytes) -> int:
    v = b.u8()
    return GEOMETRY_INTS[v % len(GEOMETRY_INTS)] if v >= 200 else v % 6


def values(b: Bytes, count: int, dtype) -> np.ndarray:
    """`count` values of `dtype` from the input's bytes (NaN, inf and extremes included)."""
    dtype = np.dtype(dtype)
    raw = b.take(count * dtype.itemsize)
    if dtype == np.bool_:  # only 0 and 1 are valid bools; other bytes make NumPy's comparisons lie
        return np.frombuffer(raw, np.uint8) != 0
    out = np.frombuffer(raw, dtype).copy()
    if dtype.kind == "f" and b.flag():  # keep magnitudes sane most of the time
        out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=-1.0)
        np.clip(out, -1e3, 1e3, out=out)
    return out


def layout(b: Bytes, arr: np.ndarray) -> np.ndarray:
    """The same values in another memory layout: reversed strides, a strided view into a larger
    buffer, a stride-0 broadcast (when possible), a byte-misaligned copy, Fortran order or
    read-only."""
    kind = b.below(7)
    if kind == 0 or arr.ndim == 0:
        return arr
    if kind == 1:  # negative strides along every axis
        base = arr[(slice(None, None, -1),) * arr.ndim].copy()
        return base[(slice(None, None, -1),) * arr.ndim]
    if kind == 2:  # every other element of a buffer twice as large
        big = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1],), arr.dtype)
        big[..., ::2] = arr
        return big[..., ::2]
    if kind == 3:  # stride 0 along axes whose values are all equal to the first slice
        first = arr[(slice(0, 1),) + (slice(None),) * (arr.ndim - 1)] if arr.shape[0] else arr
        return np.broadcast_to(first, arr.shape)
    if kind == 4:  # misaligned by one byte
        buf = np.zeros(arr.nbytes + 1, np.uint8)
        view = buf[1:].view(arr.dtype).reshape(arr.shape) if arr.dtype.itemsize else arr
        view[...] = arr
        return view
    if kind == 5:
        return np.asfortranarray(arr)
    ro = arr.copy()
    ro.flags.writeable = False
    return ro


def random_array(b: Bytes, max_ndim: int = 5) -> np.ndarray:
    ndim = b.below(max_ndim + 1)
    shape = tuple(b.below(7) for _ in range(ndim))
    dtype = b.pick(DTYPES)
    count = int(np.prod(shape))
    arr = values(b, count, dtype).reshape(shape)
    return layout(b, arr)


def fuzz_main(check, argv=None) -> None:
    """atheris entry: instruments the Python code already imported (lepton_kernels and NumPy's
    Python layers) for coverage feedback and runs ``check`` on every input."""
    import atheris

    argv = list(sys.argv if argv is None else argv)
    atheris.instrument_all()  # works through any import hook (an editable install's included)
    atheris.Setup(argv, check)
    atheris.Fuzz()


def instrumented_import():
    """lepton_kernels (fuzz_main instruments it with the rest of the loaded code)."""
    import lepton_kernels

    return lepton_kernels
