"""Built-in real datasets that work offline, from scikit-learn's bundled files.

scikit-learn ships these files inside its package, so nothing is downloaded.
It is an optional dependency (``pip install lepton-kernels[data]``) imported
only when a loader is called.
"""
from __future__ import annotations

import numpy as np

__all__ = ["load_digits", "load_diabetes", "load_breast_cancer"]


def _sklearn_datasets(what: str):
    try:
        from sklearn import datasets
    except ImportError as exc:
        raise ImportError(
            f"{what} reads the copy of the data set bundled with scikit-learn, which is not "
            "installed: pip install lepton-kernels[data]"
        ) from exc
    return datasets


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """UCI handwritten digits: 1,797 grey 8x8 images of the digits 0-9.

    Returns
    -------
    images : float32 (1797, 1, 8, 8), NCHW, pixel values scaled from 0..16 to [0, 1]
    labels : int64 (1797,), values 0..9
    """
    bunch = _sklearn_datasets("load_digits").load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    return np.ascontiguousarray(images), np.asarray(bunch.target, dtype=np.int64)


def load_diabetes(scaled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Diabetes regression set: 442 patients, 10 baseline features, disease progression target.

    Parameters
    ----------
    scaled : bool, default True
        As in scikit-learn: features mean-centred and scaled by
        ``std * sqrt(n_samples)``; False gives the raw values.

    Returns
    -------
    x : float32 (442, 10)
    y : float32 (442,), quantitative measure of progression one year later (25..346)
    """
    bunch = _sklearn_datasets("load_diabetes").load_diabetes(scaled=scaled)
    return np.asarray(bunch.data, dtype=np.float32), np.asarray(bunch.target, dtype=np.float32)


def load_breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """Wisconsin diagnostic breast cancer set: 569 samples, 30 features, binary target.

    Returns
    -------
    x : float32 (569, 30), unscaled features (standardise before training)
    y : int64 (569,), 0 = malignant, 1 = benign (scikit-learn's coding)
    """
    bunch = _sklearn_datasets("load_breast_cancer").load_breast_cancer()
    return np.asarray(bunch.data, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64)
