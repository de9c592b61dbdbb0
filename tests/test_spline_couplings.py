"""The spline coupling option end to end, and the one source of its settings.

The bijections' math is tested in ``test_bijections.py`` and the stacked
module with both bijections in ``test_transforms.py``; here the estimators,
the search, the detector and persistence run with ``coupling="spline"``.
"""

import copy
import dataclasses
import inspect
import pickle

import numpy as np
import pytest
import torch

from skflowsearch import CouplingFlow, FlowOutlierDetector, StructureSearchFlow
from skflowsearch._bijections import BIJECTIONS, Affine, RationalQuadraticSpline
from skflowsearch._training import TrainingConfig

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

TINY = dict(n_layers=2, hidden_layer_sizes=(8,), max_epochs=8, random_state=0, n_components=1)
SEARCH = dict(population_size=2, n_offspring=2, n_generations=1, n_finalists=1, n_race_seeds=1)


@pytest.fixture(scope="module")
def X():
    rng = np.random.RandomState(0)
    t = rng.uniform(-2, 2, 300)
    return np.c_[t, t**2 + 0.2 * rng.normal(size=300), rng.standard_t(3, size=300)]


@pytest.fixture(scope="module")
def spline_flow(X):
    return CouplingFlow(coupling="spline", n_bins=6, tail_bound=4.0, **TINY).fit(X)


def test_the_fitted_flow_is_a_spline_flow_of_the_given_settings(spline_flow, X):
    assert spline_flow.flow_.bijection == RationalQuadraticSpline(n_bins=6, tail_bound=4.0)
    affine = CouplingFlow(coupling="affine", **TINY).fit(X)
    assert affine.flow_.bijection == Affine(max_log_scale=3.0)
    # The conditioner writes 3 n_bins - 1 = 17 numbers per transformed feature, not 2.
    assert spline_flow.n_parameters_ > affine.n_parameters_
    assert spline_flow.n_parameters_ == int(spline_flow.flow_.n_live_parameters()[0])


def test_untrained_spline_flow_is_its_start(X):
    # max_epochs=1 with a learning rate of ~0 leaves the flow where it started;
    # the validation score of epoch 0 is that of the start alone.
    for coupling in ("affine", "spline"):
        flow = CouplingFlow(coupling=coupling, learning_rate=1e-300, **{**TINY, "max_epochs": 1},
                            base_distribution="normal", normalization="standard").fit(X)
        Z = flow._flow_input(X, 0.0)
        start = -0.5 * (Z**2).sum(1) - 0.5 * X.shape[1] * np.log(2 * np.pi) + flow.input_log_det_
        np.testing.assert_allclose(flow.score_samples(X), start, rtol=1e-12)


def test_spline_flow_scores_samples_and_inverts(spline_flow, X):
    scores = spline_flow.score_samples(X)
    assert scores.dtype == np.float64 and np.isfinite(scores).all()
    samples = spline_flow.sample(50, random_state=1)
    np.testing.assert_array_equal(samples, spline_flow.sample(50, random_state=1))
    assert np.isfinite(spline_flow.score_samples(samples)).all()
    np.testing.assert_allclose(spline_flow.inverse_transform(spline_flow.transform(X)), X, atol=1e-8)


def test_spline_flow_pickles_and_scores_the_same(spline_flow, X):
    loaded = pickle.loads(pickle.dumps(spline_flow))
    assert loaded.flow_.bijection == spline_flow.flow_.bijection
    np.testing.assert_array_equal(loaded.score_samples(X), spline_flow.score_samples(X))


def test_a_flow_pickled_before_the_bijection_was_pluggable_loads_as_affine(X):
    flow = CouplingFlow(coupling="affine", max_log_scale=2.5, **TINY).fit(X)
    old = copy.deepcopy(flow)
    del old.flow_.__dict__["bijection"]  # what such a module held instead
    old.flow_.max_log_scale = 2.5
    loaded = pickle.loads(pickle.dumps(old))
    assert loaded.flow_.bijection == Affine(max_log_scale=2.5)
    np.testing.assert_array_equal(loaded.score_samples(X), flow.score_samples(X))


def test_outlier_detector_around_a_spline_flow(X):
    rng = np.random.RandomState(1)
    outliers = rng.uniform(-30, 30, size=(10, 3))
    detector = FlowOutlierDetector(CouplingFlow(coupling="spline", **TINY), contamination=0.05).fit(X)
    assert detector.estimator_.flow_.bijection == RationalQuadraticSpline()
    assert (detector.predict(outliers) == -1).mean() >= 0.9


def test_search_trains_spline_candidates(X):
    search = StructureSearchFlow(coupling="spline", n_bins=4, **TINY, **SEARCH).fit(X)
    assert search.flow_.bijection == RationalQuadraticSpline(n_bins=4)
    assert np.isfinite(search.evaluated_scores_).all()
    # Every recorded size is a spline flow's, so larger than the affine flow of those sizes.
    affine = StructureSearchFlow(coupling="affine", **TINY, **SEARCH).fit(X)
    assert search.evaluated_n_parameters_[0] > affine.evaluated_n_parameters_[0]
    assert np.isfinite(search.score(X))


@pytest.mark.parametrize("bad, message", [
    (dict(coupling="cubic"), "'coupling' parameter of CouplingFlow must be a str among"),
    (dict(n_bins=1), "'n_bins' parameter of CouplingFlow must be an int in the range"),
    (dict(n_bins=4.0), "'n_bins' parameter of CouplingFlow must be an int"),
    (dict(n_bins=True), "'n_bins' parameter of CouplingFlow must be an int .* Got True"),
    (dict(tail_bound=0.0), "'tail_bound' parameter of CouplingFlow must be a float in the range"),
    (dict(tail_bound=float("inf")), "'tail_bound' parameter"),
])
def test_bad_spline_settings_raise_before_training(X, bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        CouplingFlow(**{**TINY, **bad}).fit(X)


# --- one source of truth -----------------------------------------------------------


def _defaults(cls):
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self"}


@pytest.mark.parametrize("estimator", [CouplingFlow, StructureSearchFlow])
def test_engine_settings_are_estimator_parameters_with_the_same_defaults(estimator):
    defaults = _defaults(estimator)
    # Settings the estimators choose themselves (the base) or fix (tol, clipping).
    internal = {"base_df", "base_mixture", "bijection", "tol", "max_grad_norm"}
    for field in dataclasses.fields(TrainingConfig):
        if field.name not in internal:
            assert defaults[field.name] == field.default, field.name
    for cls in BIJECTIONS.values():
        for field in dataclasses.fields(cls):
            if not field.name.startswith("min_"):  # floors, fixed
                assert defaults[field.name] == field.default, field.name
    assert estimator._parameter_constraints["coupling"][0].options == set(BIJECTIONS)
    # Every parameter is validated declaratively.
    assert set(defaults) <= set(estimator._parameter_constraints)


def test_training_config_is_built_from_the_parameters():
    flow = CouplingFlow(coupling="spline", n_bins=5, tail_bound=2.0, max_epochs=7, batch_size=32,
                        learning_rate=0.01, weight_decay=0.0, n_iter_no_change=3, actnorm=False,
                        hidden_layer_sizes=16)
    config = flow._training_config()
    assert config == TrainingConfig(hidden_layer_sizes=(16,), bijection=RationalQuadraticSpline(5, 2.0),
                                    actnorm=False, max_epochs=7, batch_size=32, learning_rate=0.01,
                                    weight_decay=0.0, n_iter_no_change=3)
    module = config.build(np.array([[[True, False]]]), [0])
    assert module.bijection == RationalQuadraticSpline(5, 2.0) and module.n_hidden == 1
    assert isinstance(module.weights[-1], torch.nn.Parameter)
    assert module.weights[-1].shape[-1] == 2 * RationalQuadraticSpline(5).n_params
