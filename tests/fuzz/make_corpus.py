"""Writes the seed corpora under tests/fuzz/corpus/<target>/: small valid inputs, so the fuzzers
start from calls that reach the kernels and files that pass the first checks.

The reader seeds are written byte for byte as the published formats define them (IDX: big-endian
magic 0x00000803 / 0x00000801 and dimension sizes; CIFAR-10 binary: 1 label byte + 3072 pixel
bytes per record; CIFAR-10 python: a protocol-2 pickle of {b"data": uint8 (N, 3072),
b"labels": [...]}), not with the project's readers. Regression inputs found by fuzzing live
beside the seeds as crash-<what>; this script never deletes them.

    python tests/fuzz/make_corpus.py
"""
from __future__ import annotations

import io
import pickle
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402

import fuzz_binding  # noqa: E402
import fuzz_readers  # noqa: E402
from fuzzlib import CORPUS  # noqa: E402

import lepton_kernels as lk  # noqa: E402


def _write(target: str, name: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def binding_seeds() -> dict[str, bytes]:
    seeds = {}
    for i, name in enumerate(fuzz_binding.CASE_NAMES):
        n_arrays = len(fuzz_binding.CASES[name].arrays)
        # mode 0 (layout): the first input in the layouts 1 (reversed), 3 (stride 0) and 4 (misaligned)
        for kind in (1, 3, 4):
            seeds[f"layout-{name}-{kind}"] = bytes([0, i, 0, kind])
        seeds[f"layout-{name}-last"] = bytes([0, i, n_arrays - 1, 2])
    for j, name in enumerate(fuzz_binding.BINDINGS):
        # mode 3: each argument as its kind decodes: arrays float32 (1, 2, 3, 3), ints 1, floats 1e-3
        args = b"".join(_binding_arg_seed(kind) for kind in fuzz_binding._argument_kinds(
            getattr(fuzz_binding._lepton_cpu, name)))
        seeds[f"binding-{name}"] = bytes([3, j]) + args
    for op in range(5):  # mode 2: each geometry call on the default input, stride 2, padding 1
        seeds[f"geometry-{op}"] = bytes([2, 0, 2, 1, 1, op, 2, 0, 1, 2, 0])
    # mode 1: the first case's first input replaced by a float32 (3, 3) array
    seeds["random-input"] = bytes([1, 0, 0, 2, 3, 3, 0]) + _float32_bytes(9) + bytes([1, 0])
    return seeds


def _float32_bytes(count: int) -> bytes:
    return np.linspace(-1, 1, count, dtype=np.float32).tobytes()


def _binding_arg_seed(kind: str) -> bytes:
    """The bytes fuzz_binding._binding_arg decodes to a plain argument of this kind."""
    from fuzzlib import INTERESTING_FLOATS

    if kind == "int":
        return bytes([1])
    if kind == "float":
        return bytes([INTERESTING_FLOATS.index(1e-3)])
    if kind == "bool":
        return bytes([0])
    if kind == "packed":  # a (2, 3) int8 matrix and a 0-d zero point
        return bytes([2, 2, 3, 3]) + bytes(range(6)) + bytes([0, 0, 0, 3]) + bytes(1) + bytes([0])
    return bytes([1, 4, 1, 2, 3, 3, 0]) + _float32_bytes(18) + bytes([1, 0])


def load_seeds() -> dict[str, bytes]:
    import tempfile

    seeds = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = {"logistic": lk.models.LogisticRegression(4, 3, seed=0),
                  "linear": lk.models.LinearRegression(3, 1, seed=0)}
        for name, model in models.items():
            path = Path(tmp) / f"{name}.safetensors"
            lk.save(model, path)
            seeds[name] = path.read_bytes()
        path = Path(tmp) / "state.safetensors"
        lk.save({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(2, np.float64)}, path,
                metadata={"note": "seed"})
        seeds["state_dict"] = path.read_bytes()
    return seeds


def _idx(type_code: int, array: np.ndarray) -> bytes:
    """IDX: 0x00 0x00, type code, ndim; each dimension as big-endian uint32; big-endian data."""
    be = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[type_code]
    head = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return head + np.asarray(array, be).tobytes()


def _cifar_python_batch(pixels: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR-10 python batch as published: a pickle (protocol 2, as cPickle wrote it) of a dict
    with bytes keys; data is uint8 (N, 3072), labels a list of ints."""
    return pickle.dumps({b"batch_label": b"training batch 1 of 5", b"labels": labels, b"data": pixels,
                         b"filenames": [b"seed_%d.png" % i for i in range(len(labels))]}, protocol=2)


def _png(mode: str, size: tuple[int, int], fmt: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, size, color=7 if mode == "L" else (7, 80, 200)).save(out, format=fmt)
    return out.getvalue()


def reader_seeds() -> dict[str, bytes]:
    kind = {name: bytes([i]) for i, name in enumerate(fuzz_readers.READERS)}
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 4, 4), dtype=np.uint8)
    seeds = {
        "idx-images": kind["idx"] + _idx(0x08, images),
        "idx-labels": kind["idx"] + _idx(0x08, np.array([3, 9], np.uint8)),
        "idx-float": kind["idx"] + _idx(0x0D, np.linspace(-1, 1, 6).reshape(2, 3)),
        "idx-int32": kind["idx"] + _idx(0x0C, np.array([[1, -2], [3, 4]])),
        "cifar-binary": kind["cifar_binary"] + bytes([6]) + rng.integers(0, 256, 3072, np.uint8).tobytes(),
        "cifar-python": kind["cifar_python"] + _cifar_python_batch(
            rng.integers(0, 256, (1, 3072), np.uint8), [4]),
    }
    csv_options = bytes([fuzz_readers.CSV_LABELS.index(-1), fuzz_readers.CSV_HEADERS.index("auto"),
                         fuzz_readers.CSV_DELIMITERS.index(","), fuzz_readers.CSV_SHAPES.index(None)])
    text = b"a,b,label\n0.5,1,0\n-2,3e-1,1\n"
    seeds["csv"] = kind["csv"] + csv_options + text
    seeds["csv-gz"] = kind["csv.gz"] + csv_options + text
    image_csv = bytes([0, 2, 0, fuzz_readers.CSV_SHAPES.index((1, 2, 2))])  # label first, no header
    seeds["csv-image"] = kind["csv"] + image_csv + b"1,0,255,128,7\n0,1,2,3,4\n"
    seeds["csv-semicolon"] = kind["csv"] + bytes([0, 0, 1, 0]) + b"x;y\n1;2\n3;4\n"
    for name, (mode, fmt, suffix) in {"folder-png": ("RGB", "PNG", ".png"), "folder-gray-png": ("L", "PNG", ".png"),
                                      "folder-jpeg": ("RGB", "JPEG", ".jpg")}.items():
        img = _png(mode, (3, 2), fmt)
        one = bytes([fuzz_readers.IMAGE_SUFFIXES.index(suffix)]) + struct.pack("<I", len(img)) + img
        # size None, colour, two images: class0/img0 and class1/img1
        seeds[name] = (kind["image_folder"] + bytes([0, 0, 1]) + bytes([0]) + one + bytes([1]) + one)
    return seeds


def main() -> None:
    for target, seeds in (("fuzz_binding", binding_seeds()), ("fuzz_load", load_seeds()),
                          ("fuzz_readers", reader_seeds())):
        for name, data in seeds.items():
            _write(target, f"seed-{name}", data)
        print(f"{target}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")


if __name__ == "__main__":
    main()
