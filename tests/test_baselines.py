import numpy as np
import pytest
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KernelDensity
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from benchmarks.baselines import (
    DEFAULT_BANDWIDTHS,
    gaussian_baseline,
    tuned_gaussian_mixture,
    tuned_kernel_density,
)
from skflowsearch.datasets import load_dataset


@pytest.fixture(scope="module")
def breast_cancer_split():
    X = load_dataset("breast_cancer")
    X_train, X_val = train_test_split(X, test_size=0.2, random_state=0)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_val)


def test_gaussian_baseline(breast_cancer_split):
    X_train, X_val = breast_cancer_split
    gauss = gaussian_baseline(X_train)
    assert isinstance(gauss, GaussianMixture)
    check_is_fitted(gauss)
    assert gauss.n_components == 1 and gauss.covariance_type == "full"
    np.testing.assert_allclose(gauss.means_[0], X_train.mean(axis=0), atol=1e-10)
    assert np.isfinite(gauss.score(X_val))


def test_tuned_gaussian_mixture_beats_single_gaussian(breast_cancer_split):
    X_train, X_val = breast_cancer_split
    gmm, results = tuned_gaussian_mixture(X_train, X_val, return_results=True)
    assert isinstance(gmm, GaussianMixture)
    check_is_fitted(gmm)
    assert gmm.n_components in (1, 2, 3, 4, 5, 6, 8)
    assert gmm.covariance_type == "full"
    assert gmm.reg_covar in (1e-6, 1e-4, 1e-2)
    assert len(results) == 7 * 3
    best = max(r["val_score"] for r in results)
    assert gmm.score(X_val) == pytest.approx(best)
    assert gmm.score(X_val) >= gaussian_baseline(X_train).score(X_val) - 1e-9


def test_tuned_gaussian_mixture_is_deterministic(breast_cancer_split):
    X_train, X_val = breast_cancer_split
    a = tuned_gaussian_mixture(X_train, X_val, n_components=(2,), random_state=3)
    b = tuned_gaussian_mixture(X_train, X_val, n_components=(2,), random_state=3)
    assert a.get_params() == b.get_params()
    np.testing.assert_allclose(a.means_, b.means_)


def test_tuned_gaussian_mixture_skips_impossible_candidates():
    rng = np.random.RandomState(0)
    X_train, X_val = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    gmm = tuned_gaussian_mixture(X_train, X_val, n_components=(1, 8))
    assert gmm.n_components == 1


def test_tuned_kernel_density(breast_cancer_split):
    X_train, X_val = breast_cancer_split
    kde, results = tuned_kernel_density(X_train, X_val, return_results=True)
    assert isinstance(kde, KernelDensity)
    check_is_fitted(kde)
    assert DEFAULT_BANDWIDTHS.min() <= kde.bandwidth <= DEFAULT_BANDWIDTHS.max()
    assert np.any(np.isclose(kde.bandwidth, DEFAULT_BANDWIDTHS, rtol=0, atol=1e-12))
    assert len(results) == len(DEFAULT_BANDWIDTHS)
    best = max(r["val_score"] for r in results)
    assert np.mean(kde.score_samples(X_val)) == pytest.approx(best)


def test_tuned_kernel_density_custom_grid(breast_cancer_split):
    X_train, X_val = breast_cancer_split
    grid = [0.5, 1.0, 2.0]
    kde = tuned_kernel_density(X_train, X_val, bandwidths=grid)
    assert kde.bandwidth in grid


def test_baselines_reject_mismatched_features():
    rng = np.random.RandomState(0)
    with pytest.raises(ValueError):
        tuned_kernel_density(rng.normal(size=(20, 3)), rng.normal(size=(5, 2)))
    with pytest.raises(ValueError):
        tuned_gaussian_mixture(rng.normal(size=(20, 3)), rng.normal(size=(5, 2)))
    with pytest.raises(ValueError):
        tuned_kernel_density(rng.normal(size=(20, 3)), rng.normal(size=(5, 3)), bandwidths=[])
