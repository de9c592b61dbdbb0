"""The Gaussian-mixture base: its math, the untrained model is the mixture, and the estimators."""

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.mixture import GaussianMixture

from skflowsearch import CouplingFlow, FlowOutlierDetector, StructureSearchFlow
from skflowsearch._bases import GaussianMixtureBase, Mixture, ProductBase, fit_mixture
from skflowsearch._nn import CouplingFlowStack
from skflowsearch._preprocessing import best_mixture, choose_start, mixture_start
from skflowsearch._training import TrainingConfig

SMALL = dict(n_layers=2, hidden_layer_sizes=(8,), max_epochs=3, n_iter_no_change=3)


def random_mixture(seed, n_components, n_features, spread=3.0):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(n_components))
    means = spread * rng.normal(size=(n_components, n_features))
    factors = rng.normal(size=(n_components, n_features, n_features)) / math.sqrt(n_features)
    covariances = factors @ np.swapaxes(factors, -1, -2) + 0.2 * np.eye(n_features)
    return Mixture(weights, means, covariances)


def clusters(n=600, seed=0):
    """Three well separated 2-D clusters: a mixture, which one Gaussian fits badly."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-6.0, 0.0], [0.0, 5.0], [6.0, -1.0]])
    labels = rng.integers(0, 3, size=n)
    return centres[labels] + rng.normal(scale=[0.7, 0.4], size=(n, 2))


def sklearn_mixture(mixture):
    """A fitted-looking GaussianMixture with ``mixture``'s parameters."""
    model = GaussianMixture(n_components=mixture.n_components, covariance_type="full")
    model.weights_, model.means_, model.covariances_ = mixture.weights, mixture.means, mixture.covariances
    model.precisions_cholesky_ = np.linalg.cholesky(np.linalg.inv(mixture.covariances))
    return model


# --- the base's math ------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 4), d=st.integers(1, 4))
def test_log_prob_is_the_mixture_density(seed, k, d):
    mixture = random_mixture(seed, k, d)
    z = np.random.default_rng(seed + 1).normal(scale=4.0, size=(30, d))
    expected = np.log(sum(w * stats.multivariate_normal(m, c).pdf(z).reshape(-1)
                          for w, m, c in zip(mixture.weights, mixture.means, mixture.covariances)))
    base = GaussianMixtureBase(mixture).double()
    np.testing.assert_allclose(base.log_prob(torch.from_numpy(z)).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(mixture.log_prob(z), sklearn_mixture(mixture).score_samples(z), rtol=1e-10)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 4), d=st.integers(1, 4))
def test_rosenblatt_transform_round_trips(seed, k, d):
    base = GaussianMixtureBase(random_mixture(seed, k, d)).double()
    rng = np.random.default_rng(seed + 2)
    z = np.vstack([base.sample((40, d), torch.Generator().manual_seed(seed), torch.float64).numpy(),
                   rng.normal(scale=10.0, size=(10, d))])  # and rows far out
    u = base.to_normal(z)
    assert np.all(np.isfinite(u))
    back = base.from_normal(u)
    np.testing.assert_allclose(base.to_normal(back), u, rtol=1e-7, atol=1e-7)
    # Where the density is tiny (between far components) the map is flat and
    # z is ill-determined by u; elsewhere it comes back.
    dense = base.log_prob(torch.from_numpy(z)).numpy() > -10.0
    np.testing.assert_allclose(back[dense], z[dense], rtol=1e-7, atol=1e-7)
    # and the other way round, up to |u| = 8 (probabilities of 1e-15)
    u = rng.uniform(-8.0, 8.0, size=(30, d))
    np.testing.assert_allclose(base.to_normal(base.from_normal(u)), u, rtol=1e-6, atol=1e-6)


def test_rosenblatt_transform_maps_the_mixture_to_a_standard_normal():
    base = GaussianMixtureBase(random_mixture(3, 3, 3)).double()
    draws = base.sample((20000, 3), torch.Generator().manual_seed(0), torch.float64).numpy()
    u = base.to_normal(draws)
    for j in range(3):
        assert stats.kstest(u[:, j], "norm").statistic < 0.015
    assert np.abs(np.corrcoef(u, rowvar=False) - np.eye(3)).max() < 0.03


def test_one_component_rosenblatt_is_cholesky_whitening():
    mixture = random_mixture(4, 1, 3)
    z = np.random.default_rng(0).normal(size=(20, 3))
    expected = np.linalg.solve(np.linalg.cholesky(mixture.covariances[0]), (z - mixture.means[0]).T).T
    np.testing.assert_allclose(GaussianMixtureBase(mixture).double().to_normal(z), expected, rtol=1e-9, atol=1e-12)


def test_samples_follow_the_mixture():
    mixture = random_mixture(5, 3, 2)
    base = GaussianMixtureBase(mixture).double()
    draws = base.sample((40000, 2), torch.Generator().manual_seed(1), torch.float64).numpy()
    reference = sklearn_mixture(mixture).sample(40000)[0]
    np.testing.assert_allclose(draws.mean(0), reference.mean(0), atol=0.08)
    np.testing.assert_allclose(np.cov(draws, rowvar=False), np.cov(reference, rowvar=False), rtol=0.05, atol=0.1)
    again = base.sample((40000, 2), torch.Generator().manual_seed(1), torch.float64).numpy()
    np.testing.assert_array_equal(draws, again)


def test_stored_in_float64_the_base_is_the_fitted_mixture_exactly():
    # The stack trains in float32; converting it to float64 must not keep float32-rounded values.
    mixture = random_mixture(6, 2, 3)
    base = GaussianMixtureBase(mixture)
    assert base.means.dtype == torch.get_default_dtype()
    base = base.double()
    np.testing.assert_array_equal(base.means.numpy(), mixture.means)
    np.testing.assert_array_equal(np.exp(base.log_weights.numpy()), mixture.weights)


def test_fit_mixture_converts_every_covariance_type():
    Z = clusters(300)
    for covariance_type in ("full", "tied", "diag", "spherical"):
        mixture = fit_mixture(Z, 3, covariance_type, 1e-6, seed=0)
        model = GaussianMixture(3, covariance_type=covariance_type, reg_covar=1e-6, random_state=0).fit(Z)
        np.testing.assert_allclose(mixture.log_prob(Z), model.score_samples(Z), rtol=1e-9)
        assert mixture.covariances.shape == (3, 2, 2)
    assert fit_mixture(Z[:2], 3, "full", 1e-6, seed=0) is None  # more components than rows


# --- the stack and the engine ---------------------------------------------------------


def test_an_untrained_stack_is_its_mixture_and_members_share_it():
    mixture = random_mixture(7, 3, 4)
    masks = np.array([[[1, 1, 0, 0], [0, 0, 1, 1]], [[1, 0, 1, 0], [0, 1, 0, 1]]], dtype=bool)
    module = CouplingFlowStack(torch.as_tensor(masks), (4,), [1, 2], base_mixture=mixture).double()
    x = torch.from_numpy(np.random.default_rng(0).normal(scale=3.0, size=(25, 4)))
    with torch.no_grad():
        log_prob = module.log_prob(x)
    expected = torch.from_numpy(mixture.log_prob(x.numpy()))
    torch.testing.assert_close(log_prob, expected.expand(2, -1), rtol=1e-12, atol=0)
    # A member's state keeps the whole base.
    alone = CouplingFlowStack(torch.as_tensor(masks[1:]), (4,), [0], base_mixture=mixture).double()
    alone.load_state_dict(module.member_state(torch.tensor([1])))
    torch.testing.assert_close(alone.log_prob(x)[0], log_prob[1], rtol=1e-12, atol=0)
    assert module.base_df == math.inf and module.base.n_components == 3


def test_training_leaves_the_base_fixed_and_members_independent():
    from skflowsearch._training import train_flows

    mixture = random_mixture(8, 2, 4, spread=1.0)
    X = torch.from_numpy(GaussianMixtureBase(mixture).sample((300, 4), torch.Generator().manual_seed(0),
                                                             torch.float64).numpy()).float()
    masks = np.array([[[1, 1, 0, 0], [0, 0, 1, 1]], [[1, 0, 1, 0], [0, 1, 0, 1]]], dtype=bool)
    config = TrainingConfig(hidden_layer_sizes=(8,), base_mixture=mixture, max_epochs=3)
    both = train_flows(config.build(masks, [1, 2]), X[:240], X[240:], config=config, batch_seed=0, device="cpu")
    alone = train_flows(config.build(masks[1:], [2]), X[:240], X[240:], config=config, batch_seed=0, device="cpu")
    np.testing.assert_allclose(both.validation_score[:, 1], alone.validation_score[:, 0], rtol=1e-5)
    np.testing.assert_array_equal(both.module.base.double().means.numpy(), mixture.means)


def test_successive_halving_drops_members_and_keeps_the_shared_base():
    from skflowsearch._training import train_flows

    # More members than components: the base's tensors must not be indexed by member.
    mixture = random_mixture(9, 2, 4, spread=1.0)
    X = torch.from_numpy(GaussianMixtureBase(mixture).sample((300, 4), torch.Generator().manual_seed(1),
                                                             torch.float64).numpy()).float()
    masks = np.array([[[1, 1, 0, 0], [0, 0, 1, 1]], [[1, 0, 1, 0], [0, 1, 0, 1]],
                      [[0, 1, 1, 0], [1, 0, 0, 1]], [[1, 1, 1, 0], [0, 0, 0, 1]]], dtype=bool)
    config = TrainingConfig(hidden_layer_sizes=(8,), base_mixture=mixture, max_epochs=4, n_iter_no_change=10,
                            batch_size=240)
    result = train_flows(config.build(masks, [1, 2, 3, 4]), X[:240], X[240:], config=config, batch_seed=0,
                         device="cpu", rungs=[(1, 2)])
    assert sorted(result.n_epochs.tolist()) == [1, 1, 4, 4]
    assert result.module.n_members == 4
    np.testing.assert_array_equal(result.module.base.double().means.numpy(), mixture.means)


def test_a_stack_pickled_before_the_base_was_a_module_loads():
    masks = torch.tensor([[[True, False], [False, True]]])
    module = CouplingFlowStack(masks, (4,), [0], base_df=4.0).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    expected = module.log_prob(x)
    for old_df in (4.0, None):  # with a base_df attribute, or older, with none (a normal)
        state = dict(module.__dict__)
        state["_modules"] = {k: v for k, v in state["_modules"].items() if k != "base"}
        if old_df is not None:
            state["base_df"] = old_df
        old = CouplingFlowStack.__new__(CouplingFlowStack)
        old.__setstate__(state)
        assert isinstance(old.base, ProductBase)
        if old_df is None:
            assert old.base_df == math.inf
        else:
            torch.testing.assert_close(old.log_prob(x), expected, rtol=0, atol=0)


# --- the estimators -------------------------------------------------------------------


def untrained_copy(estimator):
    """``estimator`` with its flow's layers reset to the identity (the untrained model)."""
    flow = estimator.flow_
    untrained = CouplingFlowStack(flow.masks.bool(), estimator.hidden_layer_sizes_, [0],
                                  bijection=flow.bijection, base_mixture=flow.base.mixture()).double()
    copy = pickle.loads(pickle.dumps(estimator))
    copy.flow_ = untrained
    return copy


def mixture_in_original_space(estimator):
    """The base mixture mapped back through the normalizer: ``x = z M^-1 + mean``."""
    mixture = estimator.flow_.base.mixture()
    inverse = np.linalg.inv(estimator.input_matrix_)
    covariances = np.swapaxes(inverse, 0, 1) @ mixture.covariances @ inverse
    return sklearn_mixture(Mixture(mixture.weights, mixture.means @ inverse + estimator.mean_, covariances))


@pytest.mark.parametrize("coupling", ["spline", "affine"])
def test_the_untrained_model_is_the_mixture(coupling):
    X = clusters()
    flow = CouplingFlow(**SMALL, coupling=coupling, base_distribution="gaussian_mixture", n_components=3,
                        whiten=True, random_state=0).fit(X)
    assert flow.n_components_ == 3
    untrained = untrained_copy(flow)
    np.testing.assert_allclose(untrained.score_samples(X), mixture_in_original_space(flow).score_samples(X),
                               rtol=1e-9)
    # and early stopping leaves the mixture only when validation agrees
    # (float32 epoch scores against the float64 best: to rounding)
    assert flow.best_validation_score_ >= flow.validation_scores_[0] - 1e-4


def test_auto_picks_a_mixture_on_clusters_and_is_not_below_it_on_validation():
    X = clusters(900, seed=1)
    X_test = clusters(900, seed=2)
    flow = CouplingFlow(**SMALL, random_state=0).fit(X)
    gaussian = CouplingFlow(**SMALL, n_components=1, random_state=0).fit(X)
    assert flow.n_components_ >= 3
    assert gaussian.n_components_ == 1
    # one Gaussian tears badly; the mixture start is nats ahead after the same training
    assert flow.score(X_test) > gaussian.score(X_test) + 0.5
    assert flow.best_validation_score_ >= flow.validation_scores_[0] - 1e-4
    tuned = max((GaussianMixture(k, random_state=0).fit(X) for k in (2, 3, 4)), key=lambda m: m.score(X))
    assert flow.score(X_test) > tuned.score(X_test) - 0.1


def test_sample_transform_and_inverse_with_a_mixture_base():
    X = clusters(600, seed=3)
    flow = CouplingFlow(**SMALL, base_distribution="gaussian_mixture", n_components=3, random_state=0).fit(X)
    Z = flow.transform(X)
    np.testing.assert_allclose(flow.inverse_transform(Z), X, rtol=1e-6, atol=1e-6)
    assert abs(Z.mean()) < 0.2 and abs(Z.std() - 1.0) < 0.2  # Gaussianized, not clustered
    samples = flow.sample(3000, random_state=0)
    assert np.array_equal(samples, flow.sample(3000, random_state=0))
    # the samples sit in the clusters: they score like the data
    assert abs(flow.score(samples) - flow.score(X)) < 0.3
    # and inverse_transform of normal draws samples the model too
    noise = np.random.default_rng(0).normal(size=(3000, 2))
    assert abs(flow.score(flow.inverse_transform(noise)) - flow.score(X)) < 0.3


def test_pickle_outlier_detector_and_search_with_a_mixture_base():
    X = clusters(400, seed=4)
    flow = CouplingFlow(**SMALL, base_distribution="gaussian_mixture", n_components=3, random_state=0).fit(X)
    loaded = pickle.loads(pickle.dumps(flow))
    np.testing.assert_array_equal(loaded.score_samples(X), flow.score_samples(X))
    far = np.array([[0.0, -10.0], [20.0, 20.0]])
    detector = FlowOutlierDetector(CouplingFlow(**SMALL, base_distribution="gaussian_mixture", n_components=3,
                                                random_state=0), contamination=0.01).fit(X)
    assert np.all(detector.predict(far) == -1)
    search = StructureSearchFlow(**SMALL, population_size=2, n_offspring=2, n_generations=1, n_finalists=1,
                                 n_race_seeds=1, base_distribution="gaussian_mixture", n_components=3,
                                 random_state=0).fit(X)
    assert search.n_components_ == 3 and search.flow_.base.n_components == 3


def test_same_random_state_same_mixture():
    X = clusters(400, seed=5)
    a = CouplingFlow(**SMALL, random_state=3).fit(X)
    b = CouplingFlow(**SMALL, random_state=3).fit(X)
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))


def test_best_mixture_beats_one_gaussian_on_clusters_and_keeps_its_density_on_any_map():
    X = clusters(500, seed=6)
    X_train, X_val = X[:400], X[400:]
    gaussian, _ = choose_start(X_train, X_val, whiten=True, base_distribution="normal")
    mixture = best_mixture(X_train, X_val)
    assert mixture[0] > gaussian[2] + 1.0
    # The same density of the original rows on the whitened map it is moved to.
    start, normalizer, score = mixture_start(mixture, gaussian)
    assert start.whiten and start.mixture.n_components == mixture[1].n_components
    moved = float(np.mean(start.mixture.log_prob(normalizer(X_val)))) + normalizer.log_det
    assert moved == pytest.approx(score, rel=1e-10)
    assert best_mixture(X_train, X_val, n_components=1) is None


@pytest.mark.parametrize("name, value", [("n_components", 0), ("n_components", "many"),
                                         ("n_components", 2.5), ("covariance_type", "banded")])
def test_bad_mixture_settings_are_refused(name, value):
    with pytest.raises((ValueError, TypeError), match=name):
        CouplingFlow(**SMALL, **{name: value}).fit(clusters(100))


def test_old_estimator_pickles_have_one_component():
    X = clusters(200, seed=7)
    flow = CouplingFlow(**SMALL, n_components=1, random_state=0).fit(X)
    state = flow.__getstate__()
    del state["n_components_"]
    old = CouplingFlow.__new__(CouplingFlow)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old.__setstate__(state)
    assert old.n_components_ == 1
    np.testing.assert_array_equal(old.score_samples(X), flow.score_samples(X))


def test_rosenblatt_transform_in_chunks_equals_one_pass(monkeypatch):
    from skflowsearch import _bases

    base = GaussianMixtureBase(random_mixture(10, 3, 3)).double()
    z = base.sample((50, 3), torch.Generator().manual_seed(2), torch.float64).numpy()
    u, back = base.to_normal(z), base.from_normal(base.to_normal(z))
    monkeypatch.setattr(_bases, "_ROW_CHUNK", 7)
    # Equal to float64 round-off, not bit for bit: BLAS may pick another
    # kernel (and summation order) for a 7-row block than for 50 rows.
    np.testing.assert_allclose(base.to_normal(z), u, rtol=0, atol=1e-12)
    np.testing.assert_allclose(base.from_normal(u), back, rtol=0, atol=1e-12)
