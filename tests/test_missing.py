"""Rows with missing entries (NaN): fitted on the complete rows, scored by their marginal density."""

import itertools
import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture

from skflowsearch import CouplingFlow, FlowOutlierDetector
from skflowsearch._missing import MarginalProposal, log_marginal
from skflowsearch._outlier import _on_complete_scale

SMALL = dict(n_layers=2, hidden_layer_sizes=(16,), max_epochs=30, random_state=0)


def _curved(n, seed=0, n_features=2):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, n_features))
    X[:, 1] += np.sin(2 * X[:, 0])
    return X


@pytest.fixture(scope="module")
def flow():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CouplingFlow(**SMALL).fit(_curved(400))


# --- the marginal ------------------------------------------------------------------


class _Mixture:
    """A 3-D two-component Gaussian mixture, whose marginals are known."""

    weights = np.array([0.3, 0.7])
    means = np.array([[-1.0, 0.5, 2.0], [1.0, -0.5, 0.0]])
    covariances = np.array([[[1.0, 0.6, 0.2], [0.6, 1.0, -0.3], [0.2, -0.3, 0.8]],
                            [[0.5, -0.2, 0.1], [-0.2, 1.5, 0.4], [0.1, 0.4, 1.0]]])

    def log_density(self, X, columns=slice(None)):
        return logsumexp([np.log(w) + multivariate_normal(m[columns], c[columns][:, columns]).logpdf(X)
                          for w, m, c in zip(self.weights, self.means, self.covariances)], axis=0)

    def sample(self, n, rng):
        component = rng.choice(2, size=n, p=self.weights)
        return np.array([rng.multivariate_normal(self.means[k], self.covariances[k]) for k in component])


@pytest.mark.parametrize("missing", [m for m in itertools.product([False, True], repeat=3) if any(m) and not all(m)])
def test_the_marginal_of_a_mixture_is_estimated_to_a_tenth(missing):
    missing = np.array(missing)
    mixture = _Mixture()
    rng = np.random.RandomState(0)
    proposal = MarginalProposal.fit(mixture.sample(2000, rng), relative_floor=1e-6)
    X = mixture.sample(20, rng)
    exact = mixture.log_density(X[:, ~missing], np.flatnonzero(~missing))
    X[:, missing] = np.nan
    estimate = log_marginal(mixture.log_density, X, proposal)
    np.testing.assert_allclose(estimate, exact, atol=0.1)
    assert np.mean(np.abs(estimate - exact)) < 0.03
    # Consistent: more draws, closer.
    np.testing.assert_allclose(log_marginal(mixture.log_density, X, proposal, n_samples=1024), exact, atol=0.03)


def test_a_row_whose_every_entry_is_missing_has_marginal_one():
    proposal = MarginalProposal.fit(np.random.RandomState(0).normal(size=(50, 3)), relative_floor=1e-6)
    np.testing.assert_array_equal(log_marginal(_Mixture().log_density, np.full((2, 3), np.nan), proposal), 0.0)


def test_the_flow_marginal_matches_numerical_integration(flow):
    grid = np.linspace(-10, 10, 8001)
    for missing in (0, 1):
        rows = _curved(6, seed=1)
        observed = rows[:, 1 - missing].copy()
        rows[:, missing] = np.nan
        estimate = flow.score_samples(rows)
        for value, score in zip(observed, estimate):
            completed = np.empty((grid.size, 2))
            completed[:, missing], completed[:, 1 - missing] = grid, value
            exact = np.log(np.trapezoid(np.exp(flow.score_samples(completed)), grid))
            assert abs(score - exact) < 0.03, (missing, value, score, exact)


def test_a_row_scores_the_same_in_any_batch(flow):
    X = _curved(12, seed=2)
    X[::2, 0] = np.nan
    X[1::4, 1] = np.nan
    X[3, :] = np.nan
    together = flow.score_samples(X)
    alone = np.array([flow.score_samples(row[None])[0] for row in X])
    np.testing.assert_allclose(together, alone, rtol=1e-12, atol=0)
    assert together[3] == 0.0
    assert np.all(np.isfinite(together))


# --- fit, transform, persistence ---------------------------------------------------


def test_fit_leaves_out_the_rows_with_missing_entries():
    X = _curved(200, seed=3, n_features=3)
    X_missing = X.copy()
    X_missing[[4, 9, 50], [0, 2, 2]] = np.nan
    with pytest.warns(UserWarning, match=r"3 of the 200 rows of X have missing entries \(NaN, in column\(s\) "
                                         r"\[0, 2\]\); the flow is fitted on the 197 complete rows"):
        fitted = CouplingFlow(**SMALL).fit(X_missing)
    complete = np.delete(X, [4, 9, 50], axis=0)
    reference = CouplingFlow(**SMALL).fit(complete)
    np.testing.assert_array_equal(fitted.score_samples(complete), reference.score_samples(complete))
    np.testing.assert_allclose(fitted.missing_proposal_.mean, complete.mean(axis=0))


def test_transform_gives_a_nan_row_for_a_row_with_missing_entries(flow):
    X = _curved(5, seed=4)
    latent = flow.transform(X)
    X[1, 0] = np.nan
    with_missing = flow.transform(X)
    assert np.isnan(with_missing[1]).all()
    np.testing.assert_allclose(np.delete(with_missing, 1, axis=0), np.delete(latent, 1, axis=0), rtol=1e-12)
    assert np.isnan(flow.transform(X[1:2])).all()


def test_a_pickle_from_before_missing_entries_says_to_refit(flow):
    state = flow.__getstate__()
    del state["missing_proposal_"]
    old = CouplingFlow.__new__(CouplingFlow)
    old.__setstate__(state)
    rows = _curved(3)
    np.testing.assert_array_equal(old.score_samples(rows), flow.score_samples(rows))
    rows[0, 0] = np.nan
    with pytest.raises(ValueError, match="pickled before missing entries were scored. Refit"):
        old.score_samples(rows)


# --- the outlier detector ----------------------------------------------------------


def _correlated(n, seed):
    rng = np.random.RandomState(seed)
    return rng.normal(size=(n, 3)) @ np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def detector():
    X = _correlated(600, seed=0)
    X[np.random.RandomState(1).uniform(size=600) < 0.2, 2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return FlowOutlierDetector(CouplingFlow(**SMALL), contamination=0.1).fit(X)


def test_rows_with_missing_entries_are_flagged_at_the_contamination_rate(detector):
    fresh = _correlated(2000, seed=2)
    complete_rate = np.mean(detector.predict(fresh) == -1)
    fresh[:, 2] = np.nan
    missing_rate = np.mean(detector.predict(fresh) == -1)
    # Unranked, the 2-D marginal densities sit above the 3-D threshold.
    raw_rate = np.mean(detector.estimator_.score_samples(fresh) < detector.offset_)
    assert 0.05 < complete_rate < 0.17
    assert 0.05 < missing_rate < 0.17
    assert raw_rate < 0.03


def test_the_detector_keeps_the_order_of_rows_with_the_same_entries_missing(detector):
    rows = _correlated(50, seed=3)
    rows[:, 1] = np.nan
    rows[0, 0] = 8.0  # far out on an observed column
    scores = detector.score_samples(rows)
    marginal = detector.estimator_.score_samples(rows)
    np.testing.assert_array_equal(np.argsort(scores), np.argsort(marginal))
    assert detector.predict(rows[:1])[0] == -1


def test_the_detector_takes_a_dataframe_with_missing_entries():
    pd = pytest.importorskip("pandas")
    X = _correlated(300, seed=4)
    X[::7, 1] = np.nan
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = FlowOutlierDetector(CouplingFlow(**SMALL)).fit(frame)
    assert isinstance(fitted.reference_rows_, pd.DataFrame)
    with pytest.warns(UserWarning, match="valid feature names"):
        as_array = fitted.score_samples(frame.to_numpy())
    np.testing.assert_allclose(fitted.score_samples(frame), as_array, rtol=1e-12)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.score_samples(frame), fitted.score_samples(frame))


def test_the_detector_refuses_nan_for_an_estimator_that_does_not_take_it():
    X = _correlated(100, seed=5)
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        FlowOutlierDetector(GaussianMixture()).fit(X)
    fitted = FlowOutlierDetector(GaussianMixture(random_state=0)).fit(X[1:])
    assert fitted.reference_rows_ is None
    with pytest.raises(ValueError, match="Input X contains NaN"):
        fitted.score_samples(X[:2])


# --- the ranking step, as a property -------------------------------------------------

_finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(2, 30), elements=_finite, unique=True),
       arrays(np.float64, st.integers(1, 40), elements=_finite))
def test_the_ranking_step_keeps_the_order_and_maps_quantile_to_quantile(reference, scores):
    complete = np.sort(reference + np.linspace(-3.0, 5.0, reference.size))
    masked = np.sort(reference)
    order = np.argsort(scores, kind="stable")
    mapped = _on_complete_scale(scores, masked, complete)
    assert np.all(np.diff(mapped[order]) >= -1e-9 * (1 + np.abs(mapped[order][1:])))
    # The reference rows' own masked scores land on their complete scores, rank for rank.
    np.testing.assert_allclose(_on_complete_scale(masked, masked, complete), complete, rtol=1e-12, atol=1e-9)
