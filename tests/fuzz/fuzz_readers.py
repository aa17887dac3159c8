"""Fuzz target: every data reader on arbitrary file contents.

The first byte picks the reader (IDX, CSV, gzipped CSV, CIFAR-10 binary, CIFAR-10 python
pickle, image folder) and a few more bytes its options; the rest is the file. Documented
outcomes: arrays, or ``ValueError`` (the readers name the file and the problem). Anything else
(UnicodeDecodeError is a ValueError and allowed; IndexError, RecursionError, MemoryError,
pickle errors that escape, a crash) is a finding; so is a read that takes long or allocates far
more than the file (libFuzzer's -timeout and -rss_limit_mb in .ci/fuzz).

    python tests/fuzz/fuzz_readers.py -max_total_time=30 tests/fuzz/corpus/fuzz_readers
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzzlib import Bytes, fuzz_main, instrumented_import  # noqa: E402

lk = instrumented_import()

ALLOWED = (ValueError,)
_DIR = Path(tempfile.mkdtemp(prefix="lk-fuzz-readers-"))
READERS = ("idx", "csv", "csv.gz", "cifar_binary", "cifar_python", "image_folder")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".txt")
CSV_LABELS = (-1, 0, None, "label", 1, 99)
CSV_HEADERS = ("auto", True, False)
CSV_DELIMITERS = (",", ";", "\t")
CSV_SHAPES = (None, (1, 2, 2), (3,), (1, 28, 28))
IMAGE_SIZES = (None, 4, (3, 5))


def _file(name: str, payload: bytes) -> Path:
    path = _DIR / name
    path.write_bytes(payload)
    return path


def _csv(b: Bytes, name: str):
    label = b.pick(CSV_LABELS)
    header = b.pick(CSV_HEADERS)
    delimiter = b.pick(CSV_DELIMITERS)
    shape = b.pick(CSV_SHAPES)
    return lk.data.read_csv(_file(name, b.rest()), label_column=label, header=header, delimiter=delimiter,
                            shape=shape)


def _image_folder(b: Bytes):
    """Up to three files (lengths from the input) in one or two class folders."""
    load = getattr(lk.data, "load_image_folder", None)
    if load is None:  # the reader is not in this version yet
        return None
    root = _DIR / "folder"
    shutil.rmtree(root, ignore_errors=True)
    size = b.pick(IMAGE_SIZES)
    grayscale = b.flag()
    for i in range(1 + b.below(3)):
        cls = root / f"class{b.below(2)}"
        cls.mkdir(parents=True, exist_ok=True)
        suffix = b.pick(IMAGE_SUFFIXES)
        length = b.u32() % 4096
        (cls / f"img{i}{suffix}").write_bytes(b.take(length))
    return load(root, size=size, grayscale=grayscale)


def _read(b: Bytes, kind: str):
    if kind == "idx":
        return lk.data.read_idx(_file("data.idx", b.rest()))
    if kind == "csv":
        return _csv(b, "data.csv")
    if kind == "csv.gz":
        import gzip

        sub = Bytes(b.take(4) + gzip.compress(b.rest(), mtime=0))  # 4 option bytes, then the text
        return _csv(sub, "data.csv.gz")
    if kind == "cifar_binary":
        return lk.data.read_cifar10_binary(_file("data_batch_1.bin", b.rest()))
    if kind == "cifar_python":
        return lk.data.read_cifar10_python(_file("data_batch_1", b.rest()))
    return _image_folder(b)


def check(data: bytes) -> None:
    b = Bytes(data)
    try:
        _read(b, READERS[b.below(len(READERS))])
    except ALLOWED:
        pass


if __name__ == "__main__":
    fuzz_main(check)
