"""Data for training: batching, splitting, standardisation, built-in sets and file readers.

* :class:`DataLoader` — mini-batches with seeded per-epoch shuffling.
* :func:`train_test_split`, :func:`standardize`, :class:`Standardizer`.
* Built-in offline sets from scikit-learn's bundled files (optional
  dependency, ``pip install lepton-kernels[data]``): :func:`load_digits`,
  :func:`load_diabetes`, :func:`load_breast_cancer`.
* Readers for files a user has: :func:`read_idx` / :func:`load_mnist`,
  :func:`read_cifar10_binary` / :func:`read_cifar10_python` /
  :func:`load_cifar10`, :func:`read_csv`, :func:`load_image_folder` (PNG/JPEG
  class folders through Pillow, ``pip install lepton-kernels[image]``).

The ``load_*`` functions return images as NCHW float32 in [0, 1] (the single-batch
CIFAR readers return the raw uint8 pixels); class labels are int64.
"""
from .datasets import load_breast_cancer, load_diabetes, load_digits
from .images import load_image_folder
from .loader import DataLoader
from .preprocess import Standardizer, standardize, train_test_split
from .readers import (
    load_cifar10,
    load_mnist,
    read_cifar10_binary,
    read_cifar10_python,
    read_csv,
    read_idx,
)

__all__ = [
    "DataLoader",
    "train_test_split",
    "standardize",
    "Standardizer",
    "load_digits",
    "load_diabetes",
    "load_breast_cancer",
    "read_idx",
    "load_mnist",
    "read_cifar10_binary",
    "read_cifar10_python",
    "load_cifar10",
    "read_csv",
    "load_image_folder",
]
