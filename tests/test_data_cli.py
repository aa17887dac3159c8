"""`train` / `eval` / `quantize` end to end on data files in their published formats.

MNIST IDX files are written byte for byte as http://yann.lecun.com/exdb/mnist/
describes them (big-endian header 00 00 08 ndim, uint32 sizes, then the bytes),
under the standard file names; CSV files as text, gzipped or not; image folders
as real PNG files.
"""
from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest

from lepton_kernels import io
from lepton_kernels.cli import main

N_TRAIN, N_TEST = 300, 100


def _digit_images(n, side, seed):
    """Learnable stand-ins for digits: class c is a bright horizontal bar at row 2c, on noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, (n, side, side), dtype=np.uint8)
    rows = (labels * (side - 2)) // 10
    for i, r in enumerate(rows):
        images[i, r:r + 2, 1:side - 1] = 200 + rng.integers(0, 56)
    return images, labels.astype(np.uint8)


def _idx(arr: np.ndarray) -> bytes:
    """An IDX file: magic 0x00000800 + ndim, each size as a big-endian uint32, then the uint8 data."""
    header = bytes([0x00, 0x00, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes(order="C")


def _write_mnist(folder, gz):
    for kind, n, seed in (("train", N_TRAIN, 0), ("t10k", N_TEST, 1)):
        images, labels = _digit_images(n, 28, seed)
        files = {f"{kind}-images-idx3-ubyte": _idx(images), f"{kind}-labels-idx1-ubyte": _idx(labels)}
        raw_images = files[f"{kind}-images-idx3-ubyte"]
        assert raw_images[:4] == b"\x00\x00\x08\x03" and int.from_bytes(raw_images[4:8], "big") == n
        assert files[f"{kind}-labels-idx1-ubyte"][:4] == b"\x00\x00\x08\x01"  # magic 2049
        for name, raw in files.items():
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)


def _run(tmp_path, *args):
    metrics = tmp_path / "metrics.json"
    status = main([*args, "--metrics-json", str(metrics)])
    return status, (json.loads(metrics.read_text()) if status == 0 else None)


def _train_eval_quantize(tmp_path, model, dataset, *options, recorded=()):
    """train --save, then eval and quantize on the saved file; returns the three metric dicts."""
    saved, qsaved = tmp_path / "model.lk", tmp_path / "model-int8.lk"
    status, trained = _run(tmp_path, "train", "--no-progress", "--model", model, "--dataset", dataset,
                           "--epochs", "1", "--batch-size", "8", "--lr", "3e-3", "--save", str(saved), *options)
    assert status == 0
    status, evaluated = _run(tmp_path, "eval", str(saved), "--dataset", dataset, *recorded)
    assert status == 0
    assert evaluated["test_accuracy"] == pytest.approx(trained["test_accuracy"])
    status, quantized = _run(tmp_path, "quantize", str(saved), "--dataset", dataset, "--out", str(qsaved),
                             "--bench-seconds", "0", "--batch-size", "32", *recorded)
    assert status == 0 and qsaved.is_file()
    assert quantized["fp32_accuracy"] == pytest.approx(100 * trained["test_accuracy"])
    return trained, evaluated, quantized


@pytest.mark.parametrize("gz", [False, True])
def test_lenet5_trains_on_real_mnist_idx_files(tmp_path, capsys, gz):
    folder = tmp_path / "mnist"
    folder.mkdir()
    _write_mnist(folder, gz)
    trained, _, _ = _train_eval_quantize(tmp_path, "lenet5", f"mnist:{folder}")
    out = capsys.readouterr().out
    assert f"lenet5 on mnist: {N_TRAIN} train / {N_TEST} test samples" in out
    assert trained["test_accuracy"] > 0.2  # well above chance after one epoch on 300 images


def _write_pixel_csv(path, side, gz):
    images, labels = _digit_images(N_TRAIN, side, 2)
    header = "label," + ",".join(f"pixel{i}" for i in range(side * side))
    rows = [",".join(map(str, [lab, *img.reshape(-1)])) for lab, img in zip(labels, images)]
    text = "\n".join([header, *rows]) + "\n"
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return images, labels


def test_pixel_csv_feeds_a_cnn_and_eval_uses_the_recorded_options(tmp_path):
    csv_file = tmp_path / "data.csv.gz"  # label first, then 784 pixels, as MNIST CSV exports have it
    _write_pixel_csv(csv_file, 28, gz=True)
    dataset = f"csv:{csv_file}"
    trained, _, _ = _train_eval_quantize(tmp_path, "lenet5", dataset, "--input-shape", "1,28,28",
                                         "--pixel-scale", "255", "--label-column", "label")
    assert trained["test_accuracy"] > 0.2
    for saved in ("model.lk", "model-int8.lk"):
        meta = io.load(tmp_path / saved)[1]["metadata"]
        assert meta["input_shape"] == "1,28,28" and float(meta["pixel_scale"]) == 255.0
        assert meta["label_column"] == "label"
    # the quantized file carries the options too, so eval needs none
    assert main(["eval", str(tmp_path / "model-int8.lk"), "--dataset", dataset]) == 0


def test_pixel_csv_without_input_shape_does_not_fit_a_cnn(tmp_path, capsys):
    csv_file = tmp_path / "data.csv"
    _write_pixel_csv(csv_file, 28, gz=False)
    assert main(["train", "--no-progress", "--model", "lenet5", "--dataset", f"csv:{csv_file}",
                 "--label-column", "0"]) == 2
    assert "expects inputs of shape (1, 28, 28)" in capsys.readouterr().err


def test_image_folder_trains_the_digits_cnn(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    images, labels = _digit_images(200, 16, 3)
    for i, (img, lab) in enumerate(zip(images, labels)):
        folder = tmp_path / "images" / f"class{lab}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.repeat(img[..., None], 3, axis=2), "RGB").save(folder / f"{i:04d}.png")
    dataset = f"folder:{tmp_path / 'images'}"
    _train_eval_quantize(tmp_path, "digits-cnn", dataset, "--input-shape", "1,8,8")
    assert io.load(tmp_path / "model.lk")[1]["metadata"]["input_shape"] == "1,8,8"


@pytest.mark.parametrize("args, words", [
    (["--dataset", "digits", "--pixel-scale", "255"], "--pixel-scale applies to csv"),
    (["--dataset", "digits", "--input-shape", "1,8,8"], "--input-shape applies to csv:FILE and folder:DIR"),
    (["--dataset", "folder:{tmp}", "--label-column", "0"], "--label-column applies to csv"),
    (["--dataset", "csv:{csv}", "--label-column", "1.5"], "has no column '1.5'"),
    (["--dataset", "csv:{csv}", "--label-column", "17"], "out of range"),
    (["--dataset", "csv:{csv}", "--pixel-scale", "0"], "--pixel-scale must be a finite number > 0"),
    (["--dataset", "csv:{csv}", "--pixel-scale", "nan"], "--pixel-scale must be a finite number > 0"),
    (["--dataset", "csv:{csv}", "--input-shape", "1,5,5"], "needs 25 feature columns"),
    (["--dataset", "csv:{csv}", "--input-shape", "1,28"], "C,H,W"),
    (["--dataset", "csv:{csv}", "--input-shape", "1,x,4"], "C,H,W"),
    (["--dataset", "folder:{tmp}/none"], "not a directory"),
])
def test_bad_data_options_exit_2(tmp_path, capsys, args, words):
    csv_file = tmp_path / "d.csv"
    _write_pixel_csv(csv_file, 4, gz=False)
    args = [a.format(csv=csv_file, tmp=tmp_path) for a in args]
    assert main(["train", "--no-progress", "--model", "logistic", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
