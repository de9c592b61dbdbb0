import numpy as np
import pytest
from sklearn.datasets import load_digits

from skflowsearch.datasets import DATASETS, load_dataset

EXPECTED_SHAPES = {
    "breast_cancer": (569, 30),
    "iris": (150, 4),
    "wine": (178, 13),
    "diabetes": (442, 10),
    "digits": (1797, 61),
}


def test_dataset_names():
    assert isinstance(DATASETS, tuple)
    assert set(DATASETS) == set(EXPECTED_SHAPES)


@pytest.mark.parametrize("name", sorted(EXPECTED_SHAPES))
def test_load_dataset_array(name):
    X = load_dataset(name)
    assert isinstance(X, np.ndarray)
    assert X.dtype == np.float64
    assert X.shape == EXPECTED_SHAPES[name]
    assert np.all(np.isfinite(X))
    assert np.all(np.ptp(X, axis=0) > 0), "constant column left in"


@pytest.mark.parametrize("name", ["breast_cancer", "iris", "wine", "diabetes"])
def test_continuous_datasets_ignore_random_state(name):
    np.testing.assert_array_equal(
        load_dataset(name, random_state=0), load_dataset(name, random_state=1)
    )


def test_diabetes_is_unscaled():
    X = load_dataset("diabetes")
    # The first column is the age in years on the original scale.
    assert 15 <= X[:, 0].min() and X[:, 0].max() <= 90


def test_digits_dequantized():
    raw = load_digits().data
    raw = raw[:, np.ptp(raw, axis=0) > 0]
    X = load_dataset("digits", random_state=0)
    assert X.shape == raw.shape
    np.testing.assert_array_equal(np.floor(X), raw)
    noise = X - raw
    assert noise.min() >= 0.0 and noise.max() < 1.0
    # The noise is spread over [0, 1), not a constant offset.
    assert noise.std() > 0.2
    # No two values coincide once dequantized (the data have a density).
    assert np.unique(X).size == X.size


def test_digits_random_state():
    a = load_dataset("digits", random_state=0)
    b = load_dataset("digits", random_state=0)
    c = load_dataset("digits", random_state=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(np.floor(a), np.floor(c))


def test_returned_array_is_a_fresh_copy():
    X = load_dataset("iris")
    X[:] = 0.0
    assert np.ptp(load_dataset("iris"), axis=0).min() > 0


@pytest.mark.parametrize("name", ["mnist", "Iris", "", None, 3])
def test_unknown_dataset(name):
    with pytest.raises(ValueError, match="valid names are") as excinfo:
        load_dataset(name)
    for valid in DATASETS:
        assert valid in str(excinfo.value)
