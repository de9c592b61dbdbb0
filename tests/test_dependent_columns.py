"""Columns that are exact linear functions of others (dependent_features)."""

import pickle
import warnings

import numpy as np
import pytest

from skflowsearch import CouplingFlow, FlowOutlierDetector, StructureSearchFlow
from skflowsearch._preprocessing import DEPENDENT_WIDTH, LinearResidual, dependent_columns

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

TINY = dict(n_layers=2, hidden_layer_sizes=(8,), max_epochs=10, random_state=0, n_components=1)


def table(n=400, seed=0):
    """Four independent-ish columns, their difference (column 4) and a unit change (column 5)."""
    rng = np.random.RandomState(seed)
    A = rng.normal(size=(n, 4)) @ rng.normal(size=(4, 4)) + 5.0
    return np.c_[A, A[:, 0] - A[:, 1], 2.54 * A[:, 2] + 1.0]


@pytest.fixture(scope="module")
def fitted():
    X = table()
    with pytest.warns(UserWarning, match=r"column 4 is a linear function of columns \[0, 1\]; column 5 is a linear function of columns \[2\]\. Each"):
        flow = CouplingFlow(**TINY).fit(X)
    return flow, X


def test_dependences_are_found_one_derived_column_each():
    X = table()
    found = dependent_columns(X)
    assert sorted(d for _, d in found) == [4, 5]
    assert dependent_columns(X[:, :4]) == []
    # A copy, and far outliers that would hide the dependence.
    Y = np.c_[X[:, :3], X[:, 1]]
    Y[:3, 3] += 1e6
    assert [d for _, d in dependent_columns(Y)] == [3]


def test_the_flow_models_the_other_columns(fitted):
    flow, X = fitted
    np.testing.assert_array_equal(flow.dependent_features_, [False] * 4 + [True] * 2)
    assert flow.masks_.shape[1] == 4 and flow.mean_.shape == (4,) and flow.input_matrix_.shape == (4, 4)
    assert flow.transform(X).shape == X.shape


def test_the_density_is_the_flow_times_the_narrow_gaussian(fitted):
    flow, X = fitted
    # The same fit on the other columns alone: same split, seeds and start.
    alone = CouplingFlow(**TINY).fit(X[:, :4])
    # The derived columns' Gaussian, by hand: least squares on the training rows.
    train = np.sort(np.random.RandomState(0).permutation(len(X))[flow._n_validation(len(X)):])
    design = np.c_[np.ones(len(train)), X[train, :4]]
    coef, *_ = np.linalg.lstsq(design, X[train, 4:], rcond=None)
    width = DEPENDENT_WIDTH * X[train, 4:].std(axis=0)
    residual = (X[:, 4:] - np.c_[np.ones(len(X)), X[:, :4]] @ coef) / width
    expected = alone.score_samples(X[:, :4]) + (-0.5 * residual**2 - np.log(np.sqrt(2 * np.pi) * width)).sum(1)
    np.testing.assert_allclose(flow.score_samples(X), expected, rtol=1e-8, atol=1e-6)
    assert flow.best_validation_score_ > alone.best_validation_score_


def test_rows_off_the_hyperplane_score_very_low_and_are_outliers(fitted):
    flow, X = fitted
    off = X[:20].copy()
    off[:, 4] += 0.1 * X[:, 4].std()
    assert np.all(flow.score_samples(off) < flow.score_samples(X[:20]) - 1000)
    detector = FlowOutlierDetector(CouplingFlow(**TINY), contamination=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        detector.fit(X)
    assert np.all(detector.predict(off) == -1)
    assert (detector.predict(X) == 1).mean() >= 0.9


def test_samples_and_the_inverse_keep_the_dependence(fitted):
    flow, X = fitted
    samples = flow.sample(200, random_state=0)
    np.testing.assert_array_equal(samples, flow.sample(200, random_state=0))
    scale = X[:, 4].std()
    assert np.abs(samples[:, 4] - (samples[:, 0] - samples[:, 1])).max() < 5 * DEPENDENT_WIDTH * scale
    assert np.abs(samples[:, 4] - (samples[:, 0] - samples[:, 1])).std() > 0.1 * DEPENDENT_WIDTH * scale
    np.testing.assert_allclose(flow.inverse_transform(flow.transform(X)), X, rtol=1e-9, atol=1e-9)


def test_raise_refuses_dependent_columns():
    with pytest.raises(ValueError, match=r"linearly dependent: column 4 is a linear function of columns \[0, 1\]; column 5 is a linear function of columns \[2\] \(a copy"):
        CouplingFlow(dependent_features="raise", **TINY).fit(table())
    with pytest.raises(ValueError, match=r"'dependent_features' parameter of CouplingFlow must be a str among"):
        CouplingFlow(dependent_features="drop", **TINY).fit(table())


def test_pickles_and_old_pickles_load(fitted):
    flow, X = fitted
    loaded = pickle.loads(pickle.dumps(flow))
    np.testing.assert_array_equal(loaded.score_samples(X), flow.score_samples(X))
    plain = CouplingFlow(**TINY).fit(X[:, :4])
    state = plain.__getstate__()
    del state["dependent_features_"], state["dependent_model_"]
    old = CouplingFlow.__new__(CouplingFlow)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.score_samples(X[:, :4]), plain.score_samples(X[:, :4]))
    assert not old.dependent_features_.any() and old.sample(2, random_state=0).shape == (2, 4)


def test_search_with_dependent_columns():
    X = table(300)
    with pytest.warns(UserWarning, match="the columns of X are linearly dependent"):
        search = StructureSearchFlow(population_size=2, n_offspring=2, n_generations=1, n_finalists=1,
                                     n_race_seeds=1, **TINY).fit(X)
    assert search.evaluated_masks_.shape[2] == 4 and search.masks_.shape[1] == 4
    assert np.isfinite(search.score(X))


def test_a_column_constant_but_for_a_far_value_takes_no_part():
    # Zero but for one far value (a rare refund): constant on the rows the
    # test reads, it has no correlation; a copy of another column is still found.
    rng = np.random.RandomState(0)
    X = np.c_[rng.normal(size=(200, 2)), np.zeros(200)]
    X[17, 2] = 2.5
    assert dependent_columns(X) == []
    assert [d for _, d in dependent_columns(np.c_[X, 2.0 * X[:, 0]])] == [3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        flow = CouplingFlow(**TINY).fit(X)  # row 17 is among the training rows (random_state=0)
    assert np.isfinite(flow.score_samples(X[:20])).all()


def test_the_relation_is_fitted_on_the_rows_that_hold_it():
    # total = a + b, mistyped on 1% of the rows (far off); on another 1% a is
    # far out (beyond the rows the dependence test reads) but the total right.
    rng = np.random.RandomState(0)
    A = rng.normal(size=(400, 2))
    A[4:8, 0] = 30.0
    X = np.c_[A, A.sum(axis=1)]
    X[:4, 2] += 50.0
    derived = np.array([False, False, True])
    model = LinearResidual.fit(X, derived)
    np.testing.assert_allclose(model.coef[:, 0], [1.0, 1.0], atol=1e-10)
    np.testing.assert_allclose(model.intercept, [0.0], atol=1e-10)
    # Its width is that of the rows that hold the relation, the far ones included.
    np.testing.assert_allclose(model.scale, DEPENDENT_WIDTH * X[4:, 2].std(), rtol=1e-12)
    np.testing.assert_allclose(model.log_prob(X[4:]), LinearResidual.fit(X[4:], derived).log_prob(X[4:]),
                               rtol=1e-6)
    assert np.all(model.log_prob(X[:4]) < model.log_prob(X[4:]).min() - 1000)
    with pytest.warns(UserWarning, match=r"column 2 is a linear function of columns \[0, 1\]"):
        flow = CouplingFlow(**TINY).fit(X)
    assert np.median(flow.score_samples(X[8:])) > -10.0


def test_array_masks_may_cover_every_column_or_the_modeled_ones():
    X = table(200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        modeled = CouplingFlow(masks=[[1, 1, 0, 0], [0, 0, 1, 1]], **TINY).fit(X)
        full = CouplingFlow(masks=[[1, 1, 0, 0, 1, 0], [0, 0, 1, 1, 0, 1]], **TINY).fit(X)
        np.testing.assert_array_equal(full.masks_, modeled.masks_)
        np.testing.assert_array_equal(full.score_samples(X), modeled.score_samples(X))
        with pytest.raises(ValueError, match=r"Column\(s\) \[4, 5\] of X are derived .* the masks act on the other 4 columns"):
            CouplingFlow(masks=[[1, 0, 0], [0, 1, 1]], **TINY).fit(X)


def test_search_refuses_a_table_left_with_one_modeled_column():
    x = np.random.RandomState(0).normal(size=200)
    X = np.c_[x, 3.0 * x + 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert np.isfinite(CouplingFlow(**TINY).fit(X).score(X))
        with pytest.raises(ValueError, match=r"column\(s\) \[1\] of X are linear functions .* no masks to search"):
            StructureSearchFlow(population_size=2, n_offspring=2, n_generations=1, **TINY).fit(X)
