"""Small tabular datasets for examples, tests and benchmarks.

All datasets are bundled with scikit-learn, so nothing is downloaded.
"""

import numpy as np
from sklearn import datasets as _sk_datasets
from sklearn.utils import check_random_state

__all__ = ["DATASETS", "load_dataset"]

#: Names accepted by :func:`load_dataset`.
DATASETS = ("breast_cancer", "iris", "wine", "diabetes", "digits")

_LOADERS = {
    "breast_cancer": lambda: _sk_datasets.load_breast_cancer().data,
    "iris": lambda: _sk_datasets.load_iris().data,
    "wine": lambda: _sk_datasets.load_wine().data,
    "diabetes": lambda: _sk_datasets.load_diabetes(scaled=False).data,
    "digits": lambda: _sk_datasets.load_digits().data,
}

# Datasets whose features are integers and are dequantized with uniform noise.
_INTEGER_DATASETS = frozenset({"digits"})


def _drop_constant_columns(X):
    """Return ``X`` without the columns that take a single value."""
    if X.shape[0] == 0:
        return X
    keep = np.ptp(X, axis=0) > 0
    return X[:, keep]


def load_dataset(name, *, random_state=0):
    """Load a bundled tabular dataset as a dense float64 feature matrix.

    Only the features are returned (targets are discarded): the datasets are
    meant for density estimation. Columns that are constant in the data are
    removed.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`:

        - ``"breast_cancer"``: 569 samples, 30 features.
        - ``"iris"``: 150 samples, 4 features.
        - ``"wine"``: 178 samples, 13 features.
        - ``"diabetes"``: 442 samples, 10 features, on their original
          (unscaled) scale.
        - ``"digits"``: 1797 samples, the 8x8 integer pixel intensities
          (0--16) without the constant pixels (61 features), dequantized by
          adding independent uniform noise on ``[0, 1)`` so that the data have
          a continuous density.

    random_state : int, RandomState instance or None, default=0
        Seeds the dequantization noise of integer-valued datasets
        (``"digits"``). Ignored for the other datasets.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), dtype float64
        The feature matrix.

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`DATASETS`.

    Examples
    --------
    >>> from skflowsearch.datasets import load_dataset
    >>> load_dataset("iris").shape
    (150, 4)
    """
    if not isinstance(name, str) or name not in _LOADERS:
        raise ValueError(
            f"Unknown dataset {name!r}; valid names are: {', '.join(DATASETS)}."
        )
    X = np.array(_LOADERS[name](), dtype=np.float64, copy=True)
    X = _drop_constant_columns(X)
    if name in _INTEGER_DATASETS:
        rng = check_random_state(random_state)
        noisy = X + rng.uniform(0.0, 1.0, size=X.shape)
        # Guard against rounding up to the next integer in floating point.
        X = np.minimum(noisy, np.nextafter(X + 1.0, -np.inf))
    return np.ascontiguousarray(X, dtype=np.float64)
