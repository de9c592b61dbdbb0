"""The ``CouplingFlow`` estimator: scikit-learn API, density, validation, persistence."""

import io
import pickle
import re
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_moons
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from skflowsearch import CouplingFlow
from sklearn.utils import check_random_state

from skflowsearch._base import draw_seeds
from skflowsearch._bases import ProductBase
from skflowsearch._transforms import base_log_prob, base_sample, student_t_scale
from scipy import stats
from skflowsearch.datasets import load_dataset

from _counting import hand_count

# One Gaussian component: the mixture base has its own tests (test_mixture_base.py).
SMALL = dict(n_layers=2, hidden_layer_sizes=(8,), max_epochs=5, random_state=0, n_components=1)



@parametrize_with_checks([CouplingFlow(**SMALL), CouplingFlow(**SMALL, coupling="spline")])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def blobs(n=200, n_features=3, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n_features, n_features))
    return rng.normal(size=(n, n_features)) @ A + 10 * rng.normal(size=n_features)


@pytest.fixture(scope="module")
def X():
    return blobs()


@pytest.fixture(scope="module")
def fitted(X):
    return CouplingFlow(**SMALL).fit(X)


# --- the density ------------------------------------------------------------------


def test_density_integrates_to_one():
    X, _ = make_moons(400, noise=0.1, random_state=0)
    flow = CouplingFlow(
        n_layers=4, hidden_layer_sizes=(16,), max_epochs=15, batch_size=32,
        learning_rate=1e-2, random_state=0, n_components=1,
    ).fit(X)
    assert flow.best_epoch_ > 0  # a trained, non-Gaussian density
    lo, hi = X.min(0) - 3 * X.std(0), X.max(0) + 3 * X.std(0)
    gx, gy = np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300)
    xx, yy = np.meshgrid(gx, gy, indexing="ij")
    density = np.exp(flow.score_samples(np.c_[xx.ravel(), yy.ravel()])).reshape(xx.shape)
    integral = np.trapezoid(np.trapezoid(density, gy, axis=1), gx)
    assert abs(integral - 1) < 0.02


def test_beats_a_gaussian_on_breast_cancer():
    # Margins over 4 splits x 3 seeds of this budget ranged 1.7 to 9.9 nats.
    X = load_dataset("breast_cancer")
    X_train, X_test = train_test_split(X, test_size=0.3, random_state=0)
    gaussian = GaussianMixture(1, covariance_type="full", random_state=0).fit(X_train)
    flow = CouplingFlow(
        n_layers=4, hidden_layer_sizes=(32,), max_epochs=20, batch_size=32,
        learning_rate=1e-2, whiten=False, random_state=0,
    ).fit(X_train)
    margin = flow.score(X_test) - gaussian.score(X_test)
    assert margin > 1.0, margin


def test_untrained_flow_is_the_fitted_gaussian(X):
    # With one epoch at a vanishing learning rate the flow is the ActNorm-
    # standardized whitened Gaussian: its density is a Gaussian's.
    flow = CouplingFlow(
        n_layers=2, hidden_layer_sizes=(4,), max_epochs=1, learning_rate=1e-12,
        validation_fraction=0.5, random_state=0, n_components=1,
    ).fit(X)
    assert flow.best_epoch_ == 0
    rows = blobs(50, seed=1)
    scores = flow.score_samples(rows)
    # a Gaussian log-density is a quadratic form: check it on a line
    direction = rows[1] - rows[0]
    t = np.linspace(-3, 3, 7)
    line = flow.score_samples(rows[0] + t[:, None] * direction)
    np.testing.assert_allclose(np.diff(line, 3), 0, atol=1e-8)
    assert np.isfinite(scores).all()


# --- score, sample, determinism -----------------------------------------------------


def test_score_is_mean_of_score_samples(fitted, X):
    score = fitted.score(X)
    assert type(score) is float
    assert score == pytest.approx(np.mean(fitted.score_samples(X)), rel=1e-12)
    assert fitted.score_samples(X).shape == (X.shape[0],)
    # rows are scored independently of the batch they come in
    np.testing.assert_allclose(fitted.score_samples(X[:5]), fitted.score_samples(X)[:5], rtol=1e-12)


def test_same_random_state_same_model(fitted, X):
    again = CouplingFlow(**SMALL).fit(X)
    np.testing.assert_array_equal(again.score_samples(X), fitted.score_samples(X))
    other = CouplingFlow(**{**SMALL, "random_state": 1}).fit(X)
    assert not np.array_equal(other.score_samples(X), fitted.score_samples(X))


def test_sample(fitted, X):
    samples = fitted.sample(3000, random_state=0)
    assert samples.shape == (3000, X.shape[1])
    np.testing.assert_array_equal(samples, fitted.sample(3000, random_state=0))
    assert not np.array_equal(samples, fitted.sample(3000, random_state=1))
    # in the original space, on the data's scale
    np.testing.assert_allclose(samples.mean(0), X.mean(0), atol=0.2 * X.std(0).max())
    np.testing.assert_allclose(samples.std(0), X.std(0), rtol=0.2)
    assert fitted.sample(random_state=0).shape == (1, X.shape[1])
    # exactly the inverse of the scoring map applied to the base noise
    (seed,) = draw_seeds(np.random.RandomState(0), 1)
    noise = base_sample((1, 3000, X.shape[1]), fitted.base_df_, torch.Generator().manual_seed(seed),
                        torch.float64)
    with torch.no_grad():
        z, _ = fitted.flow_(torch.from_numpy(fitted._flow_input(samples, 0.0)))
    np.testing.assert_allclose(z.numpy(), noise.numpy(), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.corrcoef(samples.T), np.corrcoef(X.T), atol=0.1)
    with pytest.raises(ValueError):
        fitted.sample(0)
    for bad in (2.0, True, "3"):
        with pytest.raises(TypeError, match="n_samples"):
            fitted.sample(bad)
    assert fitted.sample(np.int64(2)).shape == (2, X.shape[1])


# --- masks --------------------------------------------------------------------------


def test_alternating_masks(X):
    flow = CouplingFlow(**{**SMALL, "n_layers": 3}).fit(X)
    expected = np.array([[True, True, False], [False, False, True], [True, True, False]])
    np.testing.assert_array_equal(flow.masks_, expected)
    assert flow.masks_.dtype == bool


def test_random_masks_are_seeded(X):
    a = CouplingFlow(**{**SMALL, "masks": "random", "n_layers": 6}).fit(X)
    b = CouplingFlow(**{**SMALL, "masks": "random", "n_layers": 6}).fit(X)
    np.testing.assert_array_equal(a.masks_, b.masks_)
    assert a.masks_.shape == (6, 3)
    np.testing.assert_array_equal(a.masks_.sum(1), 1)  # n_features // 2 conditioning
    others = [CouplingFlow(**{**SMALL, "masks": "random", "n_layers": 6, "random_state": s}).fit(X).masks_ for s in (1, 2)]
    assert any(not np.array_equal(m, a.masks_) for m in others)


def test_explicit_masks_used_verbatim(X):
    masks = np.array([[False, True, False], [True, False, True], [True, True, False]])
    flow = CouplingFlow(**{**SMALL, "masks": masks, "n_layers": 99}).fit(X)
    np.testing.assert_array_equal(flow.masks_, masks)
    assert flow.masks_ is not masks
    np.testing.assert_array_equal(flow.flow_.masks[0].numpy(), masks)
    # 0/1 integers are accepted as booleans
    as_int = CouplingFlow(**{**SMALL, "masks": masks.astype(int)}).fit(X)
    np.testing.assert_array_equal(as_int.masks_, masks)
    np.testing.assert_array_equal(as_int.score_samples(X), flow.score_samples(X))


@pytest.mark.parametrize(
    "masks, message",
    [
        (np.ones((2, 4), dtype=bool), "shape"),
        (np.ones(3, dtype=bool), "shape"),
        (np.zeros((0, 3), dtype=bool), "shape"),
        (np.array([[True, False, False], [True, True, True]]), "at least one conditioning"),
        (np.array([[True, False, False], [False, False, False]]), "at least one conditioning"),
        (np.array([[1, 0, 2]]), "boolean"),
        (np.array([[0.5, 0, 1]]), "boolean"),
        ("checkerboard", "'masks' parameter of CouplingFlow must be a str among"),
    ],
)
def test_bad_masks(X, masks, message):
    with pytest.raises(ValueError, match=message):
        CouplingFlow(**{**SMALL, "masks": masks}).fit(X)


def test_bad_mask_message_names_the_layers(X):
    masks = np.array([[True, False, False], [True, True, True], [False, False, False]])
    with pytest.raises(ValueError, match=re.escape("without conditioning features: [2]")):
        CouplingFlow(**{**SMALL, "masks": masks}).fit(X)
    with pytest.raises(ValueError, match=re.escape("without transformed features: [1]")):
        CouplingFlow(**{**SMALL, "masks": masks}).fit(X)


# --- input validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    "make_X, message",
    [
        (lambda X: np.c_[X[:, :1], np.full(len(X), np.nan), X[:, 1:]], re.escape("column(s) [1] of X hold only missing")),
        (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 4, np.inf, X), "infinity"),
        (lambda X: X[:, 0], "2D array"),
        (lambda X: X[:, :1], re.escape("1 feature(s)")),
        (lambda X: X[:2], "too few"),
        (lambda X: np.c_[X, np.full(len(X), 3.0)], "constant"),
    ],
    ids=["nan-column", "inf", "1d", "one-feature", "two-rows", "constant-column"],
)
def test_bad_fit_input(X, make_X, message):
    with pytest.raises(ValueError, match=message):
        CouplingFlow(**SMALL).fit(make_X(X))


def test_wrong_n_features_at_score_time(fitted, X):
    with pytest.raises(ValueError, match="3 features"):
        fitted.score_samples(X[:, :2])
    with pytest.raises(ValueError, match="infinity"):
        fitted.score_samples(np.where(np.eye(len(X), 3, dtype=bool), np.inf, X))


def test_not_fitted(X):
    flow = CouplingFlow(**SMALL)
    for method in (flow.score_samples, flow.score):
        with pytest.raises(NotFittedError):
            method(X)
    with pytest.raises(NotFittedError):
        flow.sample(3)


@pytest.mark.parametrize(
    "param, value",
    [
        ("n_layers", 0),
        ("hidden_layer_sizes", ()),
        ("hidden_layer_sizes", (8, 0)),
        ("max_epochs", 0),
        ("learning_rate", 0.0),
        ("validation_fraction", 1.0),
        ("n_iter_no_change", 0),
        ("max_log_scale", -1.0),
        ("batch_size", 0),
    ],
)
def test_bad_hyper_parameters(X, param, value):
    with pytest.raises(ValueError):
        CouplingFlow(**{**SMALL, param: value}).fit(X)


# --- meta-estimators, persistence --------------------------------------------------------


def test_clone(fitted):
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "flow_")


@pytest.mark.parametrize("dumper", ["pickle", "joblib"])
def test_persistence_roundtrip(fitted, X, dumper):
    buffer = io.BytesIO()
    if dumper == "pickle":
        buffer.write(pickle.dumps(fitted))
    else:
        joblib.dump(fitted, buffer)
    buffer.seek(0)
    loaded = pickle.loads(buffer.read()) if dumper == "pickle" else joblib.load(buffer)
    np.testing.assert_array_equal(loaded.score_samples(X), fitted.score_samples(X))
    np.testing.assert_array_equal(loaded.sample(5, random_state=3), fitted.sample(5, random_state=3))
    assert loaded.device_ == "cpu"


def test_getstate_holds_a_cpu_flow(fitted):
    state = fitted.__getstate__()
    assert state["flow_"].masks.device.type == "cpu"
    assert state["flow_"].masks.dtype == torch.float64


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="needs a machine without CUDA (tests/test_gpu.py runs on CUDA)")
def test_unpickling_a_cuda_model_without_cuda_falls_back_to_cpu(X):
    flow = CouplingFlow(**SMALL).fit(X)
    expected = flow.score_samples(X)
    flow.device_ = "cuda"  # as if it had been fitted on a GPU
    data = pickle.dumps(flow)
    with pytest.warns(UserWarning, match="not available"):
        loaded = pickle.loads(data)
    assert loaded.device_ == "cpu"
    assert loaded.flow_.masks.device.type == "cpu"
    np.testing.assert_array_equal(loaded.score_samples(X), expected)


def test_in_a_pipeline(X):
    pipe = make_pipeline(StandardScaler(), CouplingFlow(**SMALL)).fit(X)
    scores = pipe.score_samples(X)
    assert scores.shape == (len(X),) and np.isfinite(scores).all()
    assert pipe.score(X) == pytest.approx(scores.mean())
    # the scaler's Jacobian is not in the pipeline's scores: they are densities of
    # the scaled data, which the flow alone reproduces on scaled input
    scaled = StandardScaler().fit_transform(X)
    alone = CouplingFlow(**SMALL).fit(scaled)
    np.testing.assert_allclose(scores, alone.score_samples(scaled), rtol=1e-9)


def test_in_grid_search(X):
    search = GridSearchCV(CouplingFlow(**SMALL), {"n_layers": [2, 4]}, cv=3).fit(X)
    assert np.isfinite(search.best_score_)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_params_["n_layers"] in (2, 4)
    assert search.best_estimator_.masks_.shape[0] == search.best_params_["n_layers"]


def test_dataframe_input_sets_feature_names(X):
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    flow = CouplingFlow(**SMALL).fit(frame)
    np.testing.assert_array_equal(flow.feature_names_in_, ["a", "b", "c"])
    assert flow.n_features_in_ == 3
    np.testing.assert_allclose(flow.score_samples(frame), CouplingFlow(**SMALL).fit(X).score_samples(X))
    with pytest.warns(UserWarning, match="feature names"):
        flow.score_samples(X)


def test_float32_and_int_input(X):
    reference = CouplingFlow(**SMALL).fit(X.astype(np.float32))
    assert np.isfinite(reference.score_samples(X.astype(np.float32))).all()
    as_int = np.round(X * 10).astype(np.int64)
    flow = CouplingFlow(**SMALL).fit(as_int)
    np.testing.assert_array_equal(
        flow.score_samples(as_int), CouplingFlow(**SMALL).fit(as_int.astype(float)).score_samples(as_int)
    )


# --- training behaviour ---------------------------------------------------------------


@pytest.mark.parametrize("learning_rate, must_diverge", [(1e6, True), (10.0, False)])
def test_divergence_guard(X, learning_rate, must_diverge):
    flow = CouplingFlow(**{**SMALL, "learning_rate": learning_rate})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            flow.fit(X)
        except ValueError as exc:  # allowed: diverged before any finite score
            assert "diverged" in str(exc)
            return
    assert all(np.isfinite(flow.score_samples(X)))
    assert np.isfinite(flow.score(X)) and np.isfinite(flow.best_validation_score_)
    diverged = [w for w in caught if issubclass(w.category, RuntimeWarning) and "diverged" in str(w.message)]
    if must_diverge:
        assert diverged, "an absurd learning rate should diverge and warn"
    if diverged:
        assert flow.best_epoch_ < flow.n_epochs_
    assert np.isfinite(flow.sample(10, random_state=0)).all()


def test_verbose_prints_epochs(X, capsys):
    flow = CouplingFlow(**{**SMALL, "verbose": 1}).fit(X)
    out = capsys.readouterr().out
    # One block per final training (the chosen whitened start, the whitened
    # Gaussian one when that differs, and the best one without whitening);
    # the kept flow's block has one line per epoch.
    blocks = re.split(r"^\[CouplingFlow\] training from ", out, flags=re.M)[1:]
    assert 2 <= len(blocks) <= 3 and blocks[0].startswith("the ") and "(whitened)" in blocks[0]
    assert "(not whitened)" in blocks[-1]
    base = "a normal base" if np.isinf(flow.base_df_) else f"a Student t base (df={flow.base_df_:g})"
    whitened = "whitened" if flow.whiten_ else "not whitened"
    kept, = (b for b in blocks if b.startswith(f"the {flow.normalization_} normalization ({whitened}) with {base}"))
    lines = [line for line in kept.splitlines() if "epoch" in line]
    assert len(lines) == flow.n_epochs_
    assert lines[0].startswith("[CouplingFlow] epoch    1")
    # Both printed scores are in the original space, like validation_scores_.
    fields = lines[-1].split()
    assert fields[-2] == "validation"
    assert float(fields[-1]) == pytest.approx(flow.validation_scores_[-1], abs=1e-3)
    assert fields[-4] == "train"
    assert float(fields[-3]) == pytest.approx(flow.input_log_det_ - flow.loss_curve_[-1], abs=1e-3)
    CouplingFlow(**SMALL).fit(X)
    assert capsys.readouterr().out == ""


def test_fitted_attributes(fitted, X):
    assert fitted.n_epochs_ == len(fitted.loss_curve_) == 5
    assert len(fitted.validation_scores_) == fitted.n_epochs_ + 1
    assert np.isfinite(fitted.loss_curve_).all() and np.isfinite(fitted.validation_scores_).all()
    assert fitted.best_validation_score_ == pytest.approx(
        fitted.validation_scores_[fitted.best_epoch_], rel=1e-5
    )
    assert fitted.best_validation_score_ >= np.max(fitted.validation_scores_) - 1e-3
    assert 0 <= fitted.best_epoch_ <= fitted.n_epochs_
    assert isinstance(fitted.n_parameters_, int) and fitted.n_parameters_ > 0
    assert fitted.device_ == "cpu"
    assert fitted.n_features_in_ == 3
    assert fitted.hidden_layer_sizes_ == SMALL["hidden_layer_sizes"]
    train = _training_rows(len(X), fitted.validation_fraction, SMALL["random_state"])
    np.testing.assert_allclose(fitted.mean_, X[train].mean(0))
    np.testing.assert_allclose(fitted.scale_, X[train].std(0))
    assert fitted.input_log_det_ == pytest.approx(np.linalg.slogdet(fitted.input_matrix_)[1])
    # early stopping restored the best weights: scoring the same validation rows
    # is not possible from outside, but the flow is in float64 and eval mode
    assert fitted.flow_.masks.dtype == torch.float64 and not fitted.flow_.training


def test_n_parameters_hand_count(X):
    masks_a = np.array([[True, False, False], [False, True, True]])
    masks_b = np.array([[True, True, False], [False, True, True]])
    # per coupling: c*h (inputs) + h (hidden bias) + 2*t*(h + 1) (log-scale and
    # shift outputs of the t transformed features); ActNorm: 2 * L * D
    h = 4
    hand_a = (1 * h + h + 2 * 2 * (h + 1)) + (2 * h + h + 2 * 1 * (h + 1)) + 2 * 2 * 3
    hand_b = (2 * h + h + 2 * 1 * (h + 1)) + (2 * h + h + 2 * 1 * (h + 1)) + 2 * 2 * 3
    assert (hand_a, hand_b) == (62, 56)
    kwargs = dict(hidden_layer_sizes=(h,), max_epochs=1, random_state=0, coupling="affine")
    a = CouplingFlow(masks=masks_a, **kwargs).fit(X)
    b = CouplingFlow(masks=masks_b, **kwargs).fit(X)
    assert (a.n_parameters_, b.n_parameters_) == (hand_a, hand_b)
    # conditioning on one more feature costs h inputs but frees 2*(h+1) outputs
    assert b.n_parameters_ < a.n_parameters_
    no_actnorm = CouplingFlow(masks=masks_a, actnorm=False, **kwargs).fit(X)
    assert no_actnorm.n_parameters_ == hand_a - 12
    # two hidden layers: + h*h2 + h2 per coupling, outputs from h2
    assert hand_count(masks_a, (4, 3)) == (4 + 4 + 15 + 16) + (8 + 4 + 15 + 8) + 12


@pytest.mark.parametrize("hidden", [(4,), (5, 3)])
def test_n_parameters_counts_the_live_parameters(X, hidden):
    # Parameters whose gradient of the log-likelihood is not identically zero.
    masks = np.array([[True, False, False], [False, True, True], [True, False, True]])
    # Affine: every output weight then gets a gradient from any rows (a spline's
    # derivative at a knot only from rows in its two bins; see test_genome).
    flow = CouplingFlow(masks=masks, hidden_layer_sizes=hidden, max_epochs=2, random_state=0,
                        coupling="affine").fit(X)
    module = flow.flow_
    with torch.no_grad():
        for parameter in module.parameters():  # make every live weight matter
            parameter.add_(0.1 * torch.randn(parameter.shape, dtype=parameter.dtype,
                                             generator=torch.Generator().manual_seed(0)))
    module.zero_grad()
    Z = torch.from_numpy(flow._flow_input(X[:50], 0.0))
    module.log_prob(Z).sum().backward()
    live = sum(int((p.grad != 0).sum()) for p in module.parameters())
    assert live == flow.n_parameters_


# --- devices --------------------------------------------------------------------------


def test_device_auto(X):
    flow = CouplingFlow(**{**SMALL, "device": "auto"}).fit(X)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert flow.device_.startswith(expected)
    assert np.isfinite(flow.score(X))


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="needs a machine without CUDA (tests/test_gpu.py runs on CUDA)")
def test_cuda_without_cuda(X):
    with pytest.raises(ValueError, match="CUDA is not available"):
        CouplingFlow(**{**SMALL, "device": "cuda"}).fit(X)


@pytest.mark.parametrize("device", ["tpu", "gpu", 3, [], ["cpu"], ("cpu", "cpu")])
def test_unknown_device(X, device):
    with pytest.raises(ValueError, match="device"):
        CouplingFlow(**{**SMALL, "device": device}).fit(X)


# --- the normalizer -------------------------------------------------------------------


def _training_rows(n_samples, validation_fraction, random_state):
    """The rows ``fit`` trains on: all but the validation rows of its first permutation."""
    order = check_random_state(random_state).permutation(n_samples)
    n_val = max(1, int(round(validation_fraction * n_samples)))
    return np.sort(order[n_val:])


def _location_and_scale(X, normalization):
    if normalization == "standard":
        return X.mean(0), X.std(0)
    lower, median, upper = np.percentile(X, [25, 50, 75], axis=0)
    return median, (upper - lower) / 1.3489795003921634


@pytest.mark.parametrize("whiten", [True, False])
@pytest.mark.parametrize("normalization", ["standard", "robust"])
@pytest.mark.parametrize("validation_fraction, random_state", [(0.1, 0), (0.3, 7)])
def test_normalizer_is_fitted_on_the_training_rows_only(X, whiten, normalization, validation_fraction,
                                                        random_state):
    params = {**SMALL, "whiten": whiten, "normalization": normalization,
              "validation_fraction": validation_fraction, "random_state": random_state}
    flow = CouplingFlow(**params).fit(X)
    assert flow.normalization_ == normalization
    train = _training_rows(len(X), validation_fraction, random_state)
    assert len(train) == len(X) - max(1, round(validation_fraction * len(X)))
    location, scale = _location_and_scale(X[train], normalization)
    np.testing.assert_allclose(flow.mean_, location, rtol=1e-12)
    np.testing.assert_allclose(flow.scale_, scale, rtol=1e-12)
    assert not np.allclose(flow.mean_, _location_and_scale(X, normalization)[0], rtol=1e-6, atol=0)
    if not whiten:
        np.testing.assert_allclose(flow.input_matrix_, np.diag(1 / scale), rtol=1e-12)
    # Changing the validation rows does not move the normalizer (it changes
    # only what early stopping, and the choice of the start, see).
    validation = np.setdiff1d(np.arange(len(X)), train)
    shifted = X.copy()
    shifted[validation] += 100.0
    other = CouplingFlow(**params).fit(shifted)
    np.testing.assert_array_equal(other.mean_, flow.mean_)
    np.testing.assert_array_equal(other.input_matrix_, flow.input_matrix_)
    assert other.input_log_det_ == flow.input_log_det_


# --- the flow as a transformer -------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_transformer():
    X = np.random.RandomState(3).normal(size=(120, 3)) @ np.array([[1.0, 0.6, 0.0], [0.0, 1.0, 0.3], [0, 0, 1.0]])
    X[:, 2] += X[:, 0] ** 2
    return CouplingFlow(**SMALL).fit(X), X


def test_transform_is_the_flow_map_and_inverse_transform_inverts_it(fitted_transformer):
    flow, X = fitted_transformer
    Z = flow.transform(X)
    assert Z.shape == X.shape and Z.dtype == np.float64
    np.testing.assert_allclose(flow.inverse_transform(Z), X, rtol=1e-10, atol=1e-10)
    # The density is the base density of the flow's latent rows times the
    # Jacobian, and transform maps those rows to normals through the base's
    # distribution function (the identity for a normal base).
    with torch.no_grad():
        latent, log_det = flow.flow_(torch.from_numpy(flow._flow_input(X, 0.0)))
    latent = latent[0].numpy()
    law = stats.norm() if np.isinf(flow.base_df_) else stats.t(flow.base_df_, scale=student_t_scale(flow.base_df_))
    np.testing.assert_allclose(Z, stats.norm.ppf(law.cdf(latent)), rtol=1e-8, atol=1e-8)
    base = base_log_prob(torch.from_numpy(latent), flow.base_df_).numpy()
    np.testing.assert_allclose(flow.score_samples(X), base + log_det[0].numpy() + flow.input_log_det_,
                               rtol=1e-10)


def test_inverse_transform_of_normal_draws_are_samples(fitted_transformer):
    flow, X = fitted_transformer
    rows = flow.inverse_transform(np.random.RandomState(0).normal(size=(7, 3)))
    assert rows.shape == (7, 3) and np.isfinite(rows).all()
    np.testing.assert_allclose(flow.transform(rows), np.random.RandomState(0).normal(size=(7, 3)),
                               rtol=1e-9, atol=1e-9)


def test_fit_transform_feature_names_and_pandas_output(fitted_transformer):
    pd = pytest.importorskip("pandas")
    flow, X = fitted_transformer
    np.testing.assert_array_equal(clone(flow).fit_transform(X), flow.transform(X))
    assert list(flow.get_feature_names_out()) == ["couplingflow0", "couplingflow1", "couplingflow2"]
    frame = clone(flow).set_output(transform="pandas").fit(pd.DataFrame(X, columns=list("abc")))
    out = frame.transform(pd.DataFrame(X, columns=list("abc")))
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list(frame.get_feature_names_out())
    np.testing.assert_array_equal(out.to_numpy(), flow.transform(X))


def test_transform_checks_the_width_and_fitting(fitted_transformer):
    flow, X = fitted_transformer
    with pytest.raises(ValueError, match="3 features"):
        flow.transform(X[:, :2])
    with pytest.raises(ValueError, match="3 features"):
        flow.inverse_transform(X[:, :2])
    with pytest.raises(NotFittedError):
        CouplingFlow().transform(X)


def test_sample_runs_in_chunks_of_the_shared_row_chunk(fitted_transformer, monkeypatch):
    from skflowsearch import _training

    flow, _ = fitted_transformer
    monkeypatch.setattr(_training, "ROW_CHUNK", 7)
    rows = flow.sample(20, random_state=0)
    assert rows.shape == (20, 3)
    np.testing.assert_array_equal(flow.sample(20, random_state=0), rows)
    # The base noise is drawn chunk by chunk (7, 7, 6) from one generator: the
    # latent rows of the samples are exactly that noise.
    generator = torch.Generator().manual_seed(draw_seeds(check_random_state(0), 1)[0])
    noise = torch.cat([base_sample((1, n, 3), flow.base_df_, generator, torch.float64)[0] for n in (7, 7, 6)])
    np.testing.assert_allclose(flow.transform(rows), ProductBase(flow.base_df_).to_normal(noise.numpy()),
                               rtol=1e-9, atol=1e-9)


def test_convergence_warning_when_max_epochs_ends_the_training():
    X = np.random.RandomState(0).normal(size=(200, 3))
    X[:, 2] += X[:, 0] ** 2
    # From the Gaussian start (n_components=1): the one that trains on for all 30 epochs here (a
    # mixture start is chosen under "auto" and early stopping ends its training).
    with pytest.warns(ConvergenceWarning, match="max_epochs=30"):
        flow = CouplingFlow(n_layers=2, hidden_layer_sizes=(8,), max_epochs=30, learning_rate=1e-2,
                            n_components=1, random_state=0).fit(X)
    assert flow.n_epochs_ == 30 and flow.best_epoch_ > 30 - flow.n_iter_no_change
    # max_epochs ended it, but nothing beat the untrained flow: not "still improving".
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        flow = CouplingFlow(n_layers=2, hidden_layer_sizes=(8,), max_epochs=2, random_state=0).fit(X)
    assert flow.n_epochs_ == 2 and flow.best_epoch_ == 0
    # Early stopping ended it (patience 1 on a flow that stops improving): no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        flow = CouplingFlow(n_layers=2, hidden_layer_sizes=(8,), max_epochs=200, n_iter_no_change=1,
                            learning_rate=0.05, random_state=0).fit(X)
    assert flow.n_epochs_ < 200


def test_inverse_transform_reads_latent_rows_without_the_fit_feature_names(fitted_transformer):
    # The latent columns are not the fit's features: a pandas round trip and
    # a plain array both work, without a feature-name warning (as PCA's).
    pd = pytest.importorskip("pandas")
    flow, X = fitted_transformer
    frame = clone(flow).set_output(transform="pandas").fit(pd.DataFrame(X, columns=list("abc")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        back = frame.inverse_transform(frame.transform(pd.DataFrame(X[:5], columns=list("abc"))))
        np.testing.assert_allclose(back, X[:5], rtol=1e-10, atol=1e-10)
        np.testing.assert_array_equal(frame.inverse_transform(np.zeros((1, 3))), flow.inverse_transform(np.zeros((1, 3))))
