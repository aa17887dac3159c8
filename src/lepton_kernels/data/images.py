"""An image-folder data set (one subfolder per class), read with Pillow.

The layout is torchvision's ``ImageFolder``: ``root/<class>/**/<image>``,
classes in sorted order numbered from 0. Output images are NCHW float32 in
[0, 1] like :func:`~lepton_kernels.data.load_mnist` and
:func:`~lepton_kernels.data.load_cifar10`; labels are int64.

Pillow is an optional dependency (``pip install lepton-kernels[image]``),
imported only when the loader is called. Every image's size is read from
its header before anything is decoded, so mixed sizes, decompression bombs
and an output beyond :data:`MAX_OUTPUT_BYTES` are refused before any pixel
memory is spent.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["load_image_folder", "IMAGE_EXTENSIONS", "MAX_OUTPUT_BYTES"]

#: File name endings read as images (compared case-insensitively), as torchvision's ImageFolder.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

#: Largest float32 output (all images together) the loader builds.
MAX_OUTPUT_BYTES = 4 * 1024**3


def _pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("load_image_folder reads images with Pillow, which is not installed: "
                          "pip install lepton-kernels[image]") from exc
    return Image


def _target_size(size) -> tuple[int, int] | None:
    """(height, width) from None, an int or a pair of positive ints."""
    if size is None:
        return None
    if isinstance(size, numbers.Integral):
        size = (size, size)
    pair = tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1
                                 for d in pair):
        raise ValueError(f"load_image_folder: size must be None, an int or (height, width) of positive ints; "
                         f"got {size!r}")
    return int(pair[0]), int(pair[1])


def _class_files(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Sorted class names and (file, label) pairs, each class's files in sorted walk order.

    Folders are visited in sorted path order, as torchvision does. Names
    starting with a dot are skipped (torchvision keeps them): they are hidden
    files such as the ``._photo.jpg`` metadata macOS leaves beside images, or
    folders such as ``.ipynb_checkpoints``, not images or classes.
    """
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"load_image_folder: {root} has no class subfolders (expected root/<class>/<image>)")
    samples = []
    for label, name in enumerate(classes):
        walked = []
        for folder, subdirs, files in os.walk(root / name):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            walked.append((folder, files))
        found = [Path(folder) / f for folder, files in sorted(walked) for f in sorted(files)
                 if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise ValueError(f"load_image_folder: class folder {root / name} holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)})")
        samples += [(path, label) for path in found]
    return classes, samples


def _open(Image, path: Path):
    """The lazily opened image; its size is known, its pixels not yet decoded."""
    limit = Image.MAX_IMAGE_PIXELS
    bomb = f"load_image_folder: {path}: more than PIL.Image.MAX_IMAGE_PIXELS={limit} pixels (decompression bomb?)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, naming the file
            image = Image.open(path)
    except Image.DecompressionBombError:
        raise ValueError(bomb) from None
    except Exception as exc:  # any failure on an untrusted file is a bad file
        raise ValueError(f"load_image_folder: {path}: not a readable image ({type(exc).__name__}: {exc})") from None
    if limit is not None and image.width * image.height > limit:
        image.close()
        raise ValueError(bomb)
    return image


def _source_sizes(Image, samples) -> list[tuple[int, int]]:
    """(width, height) of every image from its header alone."""
    sizes = []
    for path, _ in samples:
        with _open(Image, path) as image:
            sizes.append(image.size)
    return sizes


def _output_hw(samples, sizes, size) -> tuple[int, int]:
    if size is not None:
        return size
    first = sizes[0]
    for (path, _), other in zip(samples, sizes):
        if other != first:
            raise ValueError(f"load_image_folder: images differ in size: {samples[0][0]} is {first[0]}x{first[1]}, "
                             f"{path} is {other[0]}x{other[1]} (width x height); pass size=(height, width) "
                             "to resize them")
    return first[1], first[0]


def _decode(Image, path: Path, mode: str, hw: tuple[int, int]) -> np.ndarray:
    with _open(Image, path) as image:
        try:
            image = image.convert(mode)
            if image.size != (hw[1], hw[0]):
                image = image.resize((hw[1], hw[0]), Image.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
        except Exception as exc:  # truncated or corrupt pixel data shows only when decoding
            raise ValueError(f"load_image_folder: {path}: corrupt image data ({type(exc).__name__}: {exc})") from None
    return pixels.reshape(hw[0], hw[1], -1).transpose(2, 0, 1)


def load_image_folder(root: str | os.PathLike, size: int | tuple[int, int] | None = None,
                      grayscale: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load a folder of class subfolders of images (torchvision ``ImageFolder`` layout).

    ``root/<class>/<image>`` (images may sit in nested folders below the
    class folder). Classes are the subfolder names in sorted order, labelled
    0, 1, ...; within a class, files come in sorted order. Files whose names
    end in one of :data:`IMAGE_EXTENSIONS` are read (PNG, JPEG, ...) and
    other files are ignored, as are names starting with a dot. Colour images
    are converted to RGB (alpha dropped, palettes expanded), or to 8-bit
    luminance with ``grayscale=True``. Symbolic links to folders below a
    class folder are not followed (a link loop cannot trap the walk).

    Parameters
    ----------
    root : path
    size : int or (height, width), optional
        Resize every image to this size (bilinear). None requires all
        images to have the same size.
    grayscale : bool, default False
        One channel (Pillow's "L" conversion) instead of three (RGB).

    Returns
    -------
    images : float32 (N, C, H, W) in [0, 1], C = 1 if grayscale else 3
    labels : int64 (N,)
    class_names : list of str, ``class_names[label]`` is the folder name

    Raises
    ------
    ImportError
        Pillow is not installed (``pip install lepton-kernels[image]``).
    FileNotFoundError
        ``root`` is not a directory.
    ValueError
        No class subfolders, a class folder without images, an unreadable
        or corrupt image (naming the file), images of different sizes with
        ``size=None`` (naming two files and their sizes), an image over
        ``PIL.Image.MAX_IMAGE_PIXELS`` pixels, or an output larger than
        :data:`MAX_OUTPUT_BYTES`.
    """
    hw_request = _target_size(size)
    Image = _pillow()
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"load_image_folder: {root} is not a directory")
    classes, samples = _class_files(root)
    hw = _output_hw(samples, _source_sizes(Image, samples), hw_request)
    channels = 1 if grayscale else 3
    nbytes = len(samples) * channels * math.prod(hw) * 4
    if nbytes > MAX_OUTPUT_BYTES:
        raise ValueError(f"load_image_folder: {len(samples)} images of {channels}x{hw[0]}x{hw[1]} need {nbytes} bytes "
                         f"as float32, more than the {MAX_OUTPUT_BYTES}-byte limit (pass a smaller size)")
    images = np.empty((len(samples), channels, *hw), dtype=np.float32)
    for i, (path, _) in enumerate(samples):
        images[i] = _decode(Image, path, "L" if grayscale else "RGB", hw)
    images /= np.float32(255.0)
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return images, labels, classes
