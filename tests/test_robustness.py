"""Numerical robustness: heavy tails, discrete columns and points far from the data.

Losses, scores and samples must stay finite (never NaN or inf); log-densities
of points thousands to trillions of standard deviations away must be finite,
very negative and below every in-distribution score.
"""

import warnings

import numpy as np
import pytest

from skflowsearch import CouplingFlow, StructureSearchFlow
from skflowsearch.datasets import load_dataset


def _coupling_flow(**params):
    defaults = dict(n_layers=4, hidden_layer_sizes=(16,), max_epochs=8, batch_size=64, random_state=0)
    return CouplingFlow(**{**defaults, **params})


def _search_flow(**params):
    defaults = dict(
        n_layers=3, hidden_layer_sizes=(8,), population_size=2, n_offspring=2,
        n_generations=1, max_epochs=6, batch_size=64, random_state=0,
    )
    return StructureSearchFlow(**{**defaults, **params})


ESTIMATORS = [
    pytest.param(_coupling_flow, id="CouplingFlow"),
    pytest.param(lambda: _coupling_flow(whiten=False, actnorm=False), id="CouplingFlow-raw"),
    pytest.param(_search_flow, id="StructureSearchFlow"),
]


def _heavy_tailed(n=400):
    """Student-t columns with df=1.5 (infinite variance), one of them skewed."""
    rng = np.random.RandomState(0)
    T = rng.standard_t(1.5, size=(n, 4))
    T[:, 2] = np.abs(T[:, 2]) + 0.3 * T[:, 0]
    return T


def _integer_columns(n=400):
    """Raw integers: counts, a binary column, a 5-level column, and one continuous."""
    rng = np.random.RandomState(1)
    return np.c_[
        rng.poisson(2.0, size=n),
        rng.randint(0, 2, size=n),
        rng.randint(0, 5, size=n),
        rng.normal(size=n),
    ].astype(float)


def _digits(n=400):
    """Dequantized 8x8 digit images (61 non-constant pixels)."""
    return load_dataset("digits")[:n]


def _raw_digits(n=400):
    """The same pixels as raw integers 0..16, dropping columns constant in these rows."""
    X = np.floor(load_dataset("digits")[:n])
    return X[:, np.ptp(X, axis=0) > 0]


def _check_finite_fit(estimator, X):
    assert np.all(np.isfinite(estimator.loss_curve_)), estimator.loss_curve_
    assert np.all(np.isfinite(estimator.validation_scores_)), estimator.validation_scores_
    assert np.isfinite(estimator.best_validation_score_)
    scores = estimator.score_samples(X)
    assert scores.shape == (X.shape[0],)
    assert np.all(np.isfinite(scores))
    draws = estimator.sample(1000, random_state=0)
    assert draws.shape == (1000, X.shape[1])
    assert np.all(np.isfinite(draws))
    return scores


@pytest.mark.parametrize("make_estimator", ESTIMATORS)
@pytest.mark.parametrize(
    "make_X",
    [
        pytest.param(_heavy_tailed, id="student-t-1.5"),
        pytest.param(_integer_columns, id="integer-columns"),
        pytest.param(_digits, id="digits"),
        pytest.param(_raw_digits, id="raw-digits"),
    ],
)
def test_fit_stays_finite(make_estimator, make_X):
    X = make_X()
    estimator = make_estimator()
    with warnings.catch_warnings():
        # A divergence warning (weights restored) is allowed; NaNs are not.
        warnings.simplefilter("ignore", RuntimeWarning)
        estimator.fit(X)
    _check_finite_fit(estimator, X)
    if isinstance(estimator, StructureSearchFlow):
        # No candidate diverged or failed, and the race compared finite scores.
        assert np.all(np.isfinite(estimator.evaluated_scores_))
        assert all(np.isfinite(r["score"]) and np.isfinite(r["difference"]) for r in estimator.race_)
        assert np.isfinite(estimator.best_score_)


def test_heavy_tails_score_extreme_training_rows():
    """The largest training values (|t| in the tens to hundreds) get finite,
    low scores, and the restored weights are no worse on validation than the
    initial Gaussian."""
    X = _heavy_tailed()
    flow = _coupling_flow(max_epochs=20).fit(X)
    scores = flow.score_samples(X)
    extreme = np.argmax(np.abs(X).max(axis=1))
    assert np.isfinite(scores[extreme])
    assert scores[extreme] < np.median(scores)
    assert flow.best_validation_score_ >= flow.validation_scores_[0]


@pytest.fixture(scope="module", params=[p.values[0] for p in ESTIMATORS], ids=[p.id for p in ESTIMATORS])
def fitted_normal(request):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 4)) @ np.array(
        [[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.3, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.1]]
    ) + np.array([10.0, -3.0, 0.0, 1e3])
    X[:, 1] += 0.3 * X[:, 0] ** 2
    return request.param().fit(X), X


def _far_points(X, k):
    """Rows ``k`` standard deviations from the mean: along every feature at
    once, along one feature, in both directions."""
    mean, std = X.mean(axis=0), X.std(axis=0)
    rows = [mean + k * std, mean - k * std]
    for j in range(X.shape[1]):
        for sign in (1, -1):
            row = mean.copy()
            row[j] += sign * k * std[j]
            rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("k", [1e3, 1e6, 1e12])
def test_far_out_points_are_finite_and_very_unlikely(fitted_normal, k):
    estimator, X = fitted_normal
    inside = estimator.score_samples(X)
    far = _far_points(X, k)
    scores = estimator.score_samples(far)
    assert np.all(np.isfinite(scores)), scores
    assert np.all(scores < inside.min()), (scores, inside.min())
    # At least a quadratic-like fall-off: far below -k.
    assert np.all(scores < -k), scores
    # Farther is less likely.
    nearer = estimator.score_samples(_far_points(X, k / 10))
    assert np.all(scores < nearer)


def test_far_out_rows_do_not_affect_other_rows(fitted_normal):
    estimator, X = fitted_normal
    mixed = np.vstack([X[:5], _far_points(X, 1e12), X[5:10]])
    scores = estimator.score_samples(mixed)
    np.testing.assert_allclose(scores[:5], estimator.score_samples(X[:5]), rtol=1e-12)
    np.testing.assert_allclose(scores[-5:], estimator.score_samples(X[5:10]), rtol=1e-12)


def test_samples_are_finite_and_on_the_data_scale(fitted_normal):
    estimator, X = fitted_normal
    draws = estimator.sample(5000, random_state=1)
    assert np.all(np.isfinite(draws))
    # Sampling inverts the normalizer: the draws live where the data live.
    np.testing.assert_allclose(draws.mean(axis=0), X.mean(axis=0), atol=0.5 * X.std(axis=0).max())
    assert np.all(np.isfinite(estimator.score_samples(draws)))


def test_rows_at_the_float64_limit_score_minus_inf_not_nan():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((120, 3)) @ rng.standard_normal((3, 3))
    flow = CouplingFlow(n_layers=2, hidden_layer_sizes=(8,), max_epochs=3, random_state=0).fit(X)
    big = np.finfo(np.float64).max
    scores = flow.score_samples(np.array([[big, big, 0.0], [0.0, 0.0, 0.0]]))
    assert scores[0] == -np.inf
    assert np.isfinite(scores[1])
