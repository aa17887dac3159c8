"""load_image_folder on real PNG and JPEG files written by Pillow (torchvision ImageFolder layout)."""
from __future__ import annotations

import struct
import sys
import zlib

import numpy as np
import pytest

from lepton_kernels import data as D

Image = pytest.importorskip("PIL.Image")


def _save(path, pixels: np.ndarray, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if pixels.ndim == 2 else "RGB"
    Image.fromarray(pixels, mode).save(path, format=fmt)
    return path


def _rgb(seed, h=6, w=5):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_classes_sorted_labels_and_exact_png_pixels(tmp_path):
    layout = [("dog", "b.png"), ("dog", "a.png"), ("cat", "z.png"), ("bird", "x.png"), ("bird", "sub/y.png"),
              ("bird", "sub-2/w.png")]
    pixels = {key: _rgb(seed) for seed, key in enumerate(layout)}
    for (cls, name), image in pixels.items():
        _save(tmp_path / cls / name, image)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")  # ignored: not an image extension
    (tmp_path / "cat" / "._z.png").write_bytes(b"\0\5\26\7")  # macOS metadata beside an image: skipped
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden folder: not a class
    (tmp_path / "README.md").write_text("files at the root are not classes")
    x, y, classes = D.load_image_folder(tmp_path)
    assert classes == ["bird", "cat", "dog"]  # sorted, as torchvision.datasets.ImageFolder
    # folders in sorted path order ("./sub" before "./sub-2"), files sorted within each folder
    order = [("bird", "x.png"), ("bird", "sub/y.png"), ("bird", "sub-2/w.png"), ("cat", "z.png"),
             ("dog", "a.png"), ("dog", "b.png")]
    assert x.dtype == np.float32 and x.shape == (6, 3, 6, 5) and y.dtype == np.int64
    assert y.tolist() == [0, 0, 0, 1, 2, 2]
    for i, key in enumerate(order):
        expected = pixels[key].transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        np.testing.assert_array_equal(x[i], expected)


def test_matches_torchvision_image_folder_order(tmp_path):
    datasets = pytest.importorskip("torchvision.datasets")
    for cls in ("b", "A", "a"):
        for name in ("2.png", "10.png", "1.jpg"):
            _save(tmp_path / cls / name, _rgb(len(cls + name)))
    ours = D.load_image_folder(tmp_path)
    theirs = datasets.ImageFolder(str(tmp_path))
    assert ours[2] == theirs.classes
    assert ours[1].tolist() == [label for _, label in theirs.samples]


def test_grayscale_jpeg_and_resize(tmp_path):
    for cls in ("a", "b"):
        for i in range(3):
            _save(tmp_path / cls / f"{i}.jpg", _rgb(i, 16, 12), "JPEG")
    x, y, classes = D.load_image_folder(tmp_path, grayscale=True)
    assert x.shape == (6, 1, 16, 12) and 0.0 <= x.min() and x.max() <= 1.0
    with Image.open(tmp_path / "a" / "0.jpg") as im:
        expected = np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255.0)
    np.testing.assert_array_equal(x[0, 0], expected)
    small, _, _ = D.load_image_folder(tmp_path, size=(8, 4))
    assert small.shape == (6, 3, 8, 4)
    assert D.load_image_folder(tmp_path, size=7)[0].shape == (6, 3, 7, 7)


def test_palette_and_alpha_images_become_rgb(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    (tmp_path / "a").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a" / "rgba.png")
    Image.fromarray(_rgb(1, 4, 4)).convert("P").save(tmp_path / "a" / "pal.png")
    x, _, _ = D.load_image_folder(tmp_path)
    assert x.shape == (2, 3, 4, 4)
    assert np.all(x[1, 0] == 1.0) and np.all(x[1, 1:] == 0.0)  # sorted: pal.png, rgba.png


def test_mixed_sizes_name_two_files(tmp_path):
    _save(tmp_path / "a" / "small.png", _rgb(0, 4, 4))
    _save(tmp_path / "b" / "big.png", _rgb(0, 5, 6))
    with pytest.raises(ValueError, match="differ in size") as info:
        D.load_image_folder(tmp_path)
    message = str(info.value)
    assert "small.png is 4x4" in message and "big.png is 6x5" in message
    assert D.load_image_folder(tmp_path, size=(5, 5))[0].shape == (2, 3, 5, 5)


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    _save(tmp_path / "a" / "ok.png", _rgb(0))
    (tmp_path / "a" / "junk.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match="junk.png: not a readable image"):
        D.load_image_folder(tmp_path)
    (tmp_path / "a" / "junk.png").unlink()
    whole = _save(tmp_path / "a" / "cut.png", _rgb(1)).read_bytes()
    (tmp_path / "a" / "cut.png").write_bytes(whole[: len(whole) // 2])  # header intact, pixels cut
    with pytest.raises(ValueError, match="cut.png: corrupt image data"):
        D.load_image_folder(tmp_path)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.mark.parametrize("side", [10_000, 60_000])  # over Pillow's warning bound, over its error bound
def test_decompression_bomb_header_is_refused_before_decoding(tmp_path, side):
    # a PNG (per the PNG spec: signature, IHDR, IDAT, IEND) declaring side x side RGB pixels in a few bytes
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "bomb.png").write_bytes(png)
    with pytest.raises(ValueError, match=r"bomb.png: more than PIL.Image.MAX_IMAGE_PIXELS"):
        D.load_image_folder(tmp_path, size=8)


def test_empty_folders_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        D.load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class subfolders"):
        D.load_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no images"):
        D.load_image_folder(tmp_path)
    for size in (0, (3,), (2, -1), "8", 2.5, True):
        with pytest.raises(ValueError, match="size"):
            D.load_image_folder(tmp_path, size=size)


def test_output_beyond_the_memory_bound_is_refused_before_decoding(tmp_path, monkeypatch):
    from lepton_kernels.data import images

    for i in range(3):
        _save(tmp_path / "a" / f"{i}.png", _rgb(i, 8, 8))
    monkeypatch.setattr(images, "MAX_OUTPUT_BYTES", 3 * 3 * 8 * 8 * 4 - 1)
    with pytest.raises(ValueError, match="byte limit"):
        D.load_image_folder(tmp_path)


def test_missing_pillow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"lepton-kernels\[image\]"):
        D.load_image_folder(tmp_path)
