import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KernelDensity
from sklearn.utils.estimator_checks import parametrize_with_checks

from skflowsearch import CouplingFlow, FlowOutlierDetector, StructureSearchFlow
from skflowsearch._outlier import _offset


def _small_flow(**params):
    return CouplingFlow(n_layers=2, hidden_layer_sizes=(8,), max_epochs=5, random_state=0, **params)


@parametrize_with_checks(
    [
        FlowOutlierDetector(_small_flow()),
        # Unseeded inner flow: the checks seed the detector's random_state,
        # which must reach the flow for repeated fits to agree.
        FlowOutlierDetector(_small_flow().set_params(random_state=None)),
        # The default stays 0.1; "auto" must pass the outlier checks too (both
        # labels on their blobs).
        FlowOutlierDetector(_small_flow(), contamination="auto"),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def gaussian_data():
    rng = np.random.RandomState(0)
    return rng.normal(size=(400, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 2.0]])


@pytest.mark.parametrize("contamination", [0.02, 0.1, 0.25, 0.5])
def test_fraction_of_training_rows_flagged(gaussian_data, contamination):
    detector = FlowOutlierDetector(_small_flow(), contamination=contamination).fit(gaussian_data)
    labels = detector.predict(gaussian_data)
    assert labels.dtype.kind == "i"
    assert set(np.unique(labels)) <= {-1, 1}
    assert np.mean(labels == -1) == pytest.approx(contamination, abs=1.5 / len(gaussian_data))
    np.testing.assert_array_equal(detector.fit_predict(gaussian_data), labels)


def test_decision_function_is_shifted_score(gaussian_data):
    detector = FlowOutlierDetector(_small_flow()).fit(gaussian_data)
    scores = detector.score_samples(gaussian_data)
    np.testing.assert_allclose(detector.decision_function(gaussian_data), scores - detector.offset_)
    # score_samples is the wrapped estimator's.
    np.testing.assert_allclose(scores, detector.estimator_.score_samples(gaussian_data))
    assert detector.offset_ == pytest.approx(np.percentile(scores, 10))
    # A far-away row is an outlier, the centre an inlier.
    np.testing.assert_array_equal(detector.predict([[0.0, 0.0, 0.0], [20.0, -20.0, 20.0]]), [1, -1])


@pytest.mark.parametrize(
    "estimator",
    [GaussianMixture(n_components=2, random_state=0), KernelDensity(bandwidth=0.5)],
    ids=["GaussianMixture", "KernelDensity"],
)
def test_wraps_sklearn_density_estimators(gaussian_data, estimator):
    detector = FlowOutlierDetector(estimator, contamination=0.1).fit(gaussian_data.tolist())
    assert isinstance(detector.estimator_, type(estimator))
    assert detector.estimator_ is not estimator
    np.testing.assert_allclose(
        detector.score_samples(gaussian_data), detector.estimator_.score_samples(gaussian_data)
    )
    assert np.mean(detector.predict(gaussian_data) == -1) == pytest.approx(0.1, abs=0.01)
    assert detector.predict([[30.0, 30.0, 30.0]])[0] == -1


def test_wraps_structure_search_flow(gaussian_data):
    detector = FlowOutlierDetector()
    assert detector.estimator is None
    assert "estimator" in detector.get_params()
    detector.set_params(
        estimator=StructureSearchFlow(
            n_layers=2, hidden_layer_sizes=(8,), population_size=2, n_offspring=2,
            n_generations=1, max_epochs=3, random_state=0,
        )
    ).fit(gaussian_data)
    search = detector.estimator_
    assert isinstance(search, StructureSearchFlow)
    # At most n_layers active layers, over the 3 features; the chosen race entry.
    assert search.masks_.shape[1] == 3 and 1 <= search.masks_.shape[0] <= 2
    (chosen,) = [r for r in search.race_ if r["chosen"]]
    assert chosen["n_layers"] == search.masks_.shape[0]
    np.testing.assert_allclose(detector.score_samples(gaussian_data), search.score_samples(gaussian_data))


def test_default_is_structure_search_flow(monkeypatch, gaussian_data):
    # Without an estimator, fit builds StructureSearchFlow() with its defaults.
    built = []
    original_fit = StructureSearchFlow.fit

    def quick_fit(self, X, y=None):
        built.append(self.get_params())
        return original_fit(
            clone(self).set_params(
                n_layers=2, hidden_layer_sizes=(8,), population_size=2, n_offspring=2,
                n_generations=1, max_epochs=3, random_state=0,
            ),
            X,
        )

    monkeypatch.setattr(StructureSearchFlow, "fit", quick_fit)
    FlowOutlierDetector().fit(gaussian_data)
    FlowOutlierDetector(random_state=7).fit(gaussian_data)
    assert built == [StructureSearchFlow().get_params(),
                     StructureSearchFlow(random_state=7).get_params()]


@pytest.mark.parametrize("random_state, expected", [(None, 0), (5, 5)])
def test_random_state_reaches_the_estimator_unless_none(gaussian_data, random_state, expected):
    detector = FlowOutlierDetector(_small_flow(), random_state=random_state).fit(gaussian_data)
    assert detector.estimator_.random_state == expected
    assert detector.estimator.random_state == 0  # the given estimator is left as it was
    # An estimator without the parameter is wrapped as it is.
    kde = FlowOutlierDetector(KernelDensity(bandwidth=0.5), random_state=random_state)
    assert "random_state" not in kde.fit(gaussian_data).estimator_.get_params()


def test_dataframe_reaches_the_estimator_unconverted(gaussian_data):
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = pd.DataFrame(gaussian_data, columns=["a", "b", "c"])
    by_name = ColumnTransformer([("scale", StandardScaler(), ["a", "b"])], remainder="passthrough")
    detector = FlowOutlierDetector(make_pipeline(by_name, _small_flow())).fit(frame)
    np.testing.assert_array_equal(detector.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_array_equal(detector.estimator_.feature_names_in_, ["a", "b", "c"])
    assert np.isfinite(detector.score_samples(frame)).all()
    assert set(detector.predict(frame)) <= {-1, 1}


def test_non_numeric_column_left_to_a_pipeline_that_drops_it(gaussian_data):
    pd = pytest.importorskip("pandas")
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline

    frame = pd.DataFrame(gaussian_data, columns=["a", "b", "c"])
    frame["label"] = np.where(gaussian_data[:, 0] > 0, "x", "y")
    drop_label = make_column_transformer(("drop", ["label"]), remainder="passthrough")
    detector = FlowOutlierDetector(make_pipeline(drop_label, _small_flow()), random_state=0).fit(frame)
    numeric = FlowOutlierDetector(_small_flow(), random_state=0).fit(frame[["a", "b", "c"]])
    np.testing.assert_allclose(detector.score_samples(frame), numeric.score_samples(frame[["a", "b", "c"]]))
    # Without the pipeline, the flow itself rejects the strings.
    with pytest.raises(ValueError, match=r"X has non-numeric column\(s\) \['label'\]"):
        FlowOutlierDetector(_small_flow()).fit(frame)
    # Missing values are still the detector's to reject (sklearn's message for object arrays).
    frame.loc[0, "a"] = np.nan
    with pytest.raises(ValueError, match="Input contains NaN"):
        detector.fit(frame)


def test_breast_cancer_novelty_detection():
    data = load_breast_cancer()
    X, y = data.data, data.target  # 1 = benign (inliers), 0 = malignant
    benign, malignant = X[y == 1], X[y == 0]
    train, held_out = train_test_split(benign, test_size=0.2, random_state=0)
    detector = FlowOutlierDetector(
        CouplingFlow(n_layers=2, hidden_layer_sizes=(16,), max_epochs=10, random_state=0),
        contamination=0.05,
    ).fit(train)
    X_test = np.vstack([held_out, malignant])
    is_benign = np.r_[np.ones(len(held_out)), np.zeros(len(malignant))]
    auc = roc_auc_score(is_benign, detector.score_samples(X_test))
    assert auc > 0.8
    # Most malignant rows are flagged, most held-out benign rows are not.
    assert np.mean(detector.predict(malignant) == -1) > 0.5
    assert np.mean(detector.predict(held_out) == 1) > 0.5


@pytest.mark.parametrize(
    "contamination", [0, 0.0, -0.1, 0.51, 1.0, "Auto", "", "0.1", float("nan"), None]
)
def test_bad_contamination_raises(gaussian_data, contamination):
    detector = FlowOutlierDetector(GaussianMixture(), contamination=contamination)
    with pytest.raises((ValueError, TypeError), match="contamination"):
        detector.fit(gaussian_data)


@pytest.mark.parametrize("contamination", [0.7, float("nan"), float("inf")])
def test_numeric_bad_contamination_is_value_error(gaussian_data, contamination, monkeypatch):
    # Rejected before the estimator is fitted.
    monkeypatch.setattr(GaussianMixture, "fit", lambda *a, **k: pytest.fail("fitted"))
    with pytest.raises(ValueError, match="contamination"):
        FlowOutlierDetector(GaussianMixture(), contamination=contamination).fit(gaussian_data)


def _hampel_offset(scores):
    median = np.median(scores)
    return median - 3 * 1.4826 * np.median(np.abs(scores - median))


def test_auto_offset_is_median_less_three_scaled_mads(gaussian_data):
    detector = FlowOutlierDetector(_small_flow(), contamination="auto").fit(gaussian_data)
    scores = detector.score_samples(gaussian_data)
    assert detector.offset_ == pytest.approx(_hampel_offset(scores))
    np.testing.assert_array_equal(detector.predict(gaussian_data), np.where(scores < detector.offset_, -1, 1))
    assert FlowOutlierDetector().contamination == 0.1  # "auto" is opt-in


@pytest.mark.parametrize("n_features, expected", [(2, 0.059), (3, 0.040), (10, 0.015)])
def test_auto_flags_few_rows_of_clean_gaussian_data(n_features, expected):
    # Under the true (Gaussian) density, the fraction of the Notes.
    X = np.random.RandomState(1).normal(size=(4000, n_features))
    detector = FlowOutlierDetector(GaussianMixture(random_state=0), contamination="auto").fit(X)
    assert np.mean(detector.predict(X) == -1) == pytest.approx(expected, abs=0.012)


def test_auto_flags_clear_outliers_and_is_not_moved_by_them(gaussian_data):
    # 10% of the rows, scattered far from the others.
    directions = np.random.RandomState(2).normal(size=(40, 3))
    outliers = 15.0 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    X = np.vstack([gaussian_data, outliers])
    auto = FlowOutlierDetector(GaussianMixture(random_state=0), contamination="auto")
    labels = auto.fit(X).predict(X)
    assert np.all(labels[len(gaussian_data):] == -1)
    assert np.mean(labels[:len(gaussian_data)] == -1) < 0.08
    # The rule itself is robust: 10% of very low scores move it by under a nat (the
    # mean less 3 standard deviations would move by several nats).
    clean = clone(auto).fit(gaussian_data)
    scores = clean.score_samples(gaussian_data)
    with_low = np.r_[scores, np.full(40, scores.min() - 50.0)]
    assert abs(_offset(with_low, "auto") - clean.offset_) < 1.0
    assert abs((with_low.mean() - 3 * with_low.std()) - (scores.mean() - 3 * scores.std())) > 5
    # A fixed fraction below the true one misses outliers; "auto" needs none given.
    fixed = FlowOutlierDetector(GaussianMixture(random_state=0), contamination=0.05).fit(X)
    assert np.sum(fixed.predict(X)[len(gaussian_data):] == -1) < len(outliers)


def test_auto_offset_with_tied_or_infinite_scores():
    # More than half the scores tie: the median deviation is 0 and would put
    # the threshold at the median (flagging every lower row); the mean one is used.
    scores = np.r_[np.zeros(60), -np.arange(1.0, 41.0)]
    offset = _offset(scores, "auto")
    assert offset == pytest.approx(-3 * 1.4826 * np.mean(np.abs(scores)))
    assert np.mean(scores < offset) < 0.2
    # -inf scores (rows off the data's support) do not make the threshold NaN.
    with_inf = np.r_[np.random.RandomState(0).normal(size=40), np.full(50, -np.inf)]
    assert np.isfinite(_offset(with_inf, "auto"))
    assert _offset(np.full(5, -np.inf), "auto") == -np.inf


def test_auto_does_not_depend_on_the_units(gaussian_data):
    # Rescaling the features shifts every log-density by one constant: the
    # "auto" threshold moves with it.
    detector = FlowOutlierDetector(GaussianMixture(random_state=0), contamination="auto")
    labels = detector.fit(gaussian_data).predict(gaussian_data)
    scaled = clone(detector).fit(gaussian_data * 1000.0)
    np.testing.assert_array_equal(scaled.predict(gaussian_data * 1000.0), labels)
    assert scaled.offset_ == pytest.approx(detector.offset_ - 3 * np.log(1000.0), abs=1e-6)
    assert 0 < np.sum(labels == -1) < 0.1 * len(labels)


def test_estimator_without_score_samples_raises(gaussian_data):
    from sklearn.cluster import KMeans

    with pytest.raises(TypeError, match="score_samples"):
        FlowOutlierDetector(KMeans(n_clusters=2)).fit(gaussian_data)


def test_unfitted_raises(gaussian_data):
    for method in ("score_samples", "decision_function", "predict"):
        with pytest.raises(NotFittedError):
            getattr(FlowOutlierDetector(_small_flow()), method)(gaussian_data)


def test_wrong_width_raises(gaussian_data):
    detector = FlowOutlierDetector(GaussianMixture(random_state=0)).fit(gaussian_data)
    with pytest.raises(ValueError, match="3 features"):
        detector.predict(gaussian_data[:, :2])


def test_clone_and_pickle(gaussian_data):
    detector = FlowOutlierDetector(_small_flow(), contamination=0.2)
    cloned = clone(detector)
    assert cloned.get_params()["contamination"] == 0.2
    assert cloned.estimator is not detector.estimator
    assert cloned.get_params()["estimator__n_layers"] == 2

    detector.fit(gaussian_data)
    restored = pickle.loads(pickle.dumps(detector))
    np.testing.assert_allclose(
        restored.decision_function(gaussian_data), detector.decision_function(gaussian_data)
    )
    np.testing.assert_array_equal(restored.predict(gaussian_data), detector.predict(gaussian_data))
    assert restored.offset_ == detector.offset_


class _NaNAtTheEdge(KernelDensity):
    """A density that returns NaN for rows with a coordinate beyond 10, as an overflowing model may."""

    def score_samples(self, X):
        X = np.asarray(X, dtype=float)
        return np.where(np.abs(X).max(axis=1) > 10.0, np.nan, super().score_samples(X))


def test_a_nan_score_is_an_outlier(gaussian_data):
    detector = FlowOutlierDetector(_NaNAtTheEdge(bandwidth=0.5)).fit(gaussian_data)
    rows = [[0.0, 0.0, 0.0], [20.0, 0.0, 0.0]]
    assert np.isnan(detector.decision_function(rows)[1])
    np.testing.assert_array_equal(detector.predict(rows), [1, -1])
    # A flow scores rows that overflow inside it -inf, not NaN.
    flow = CouplingFlow(n_layers=2, hidden_layer_sizes=(8,), max_epochs=3, random_state=0)
    flow.fit(np.random.RandomState(0).normal(size=(200, 3)))
    extreme = [[-1e308, 1e308, -1e308], [1e308, 1e308, -1e308]]
    np.testing.assert_array_equal(flow.score_samples(extreme), [-np.inf, -np.inf])


def test_date_and_duration_columns_are_named_non_numeric(gaussian_data):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(gaussian_data[:50], columns=list("abc"))
    frame["when"] = pd.date_range("2026-01-01", periods=50)
    with pytest.raises(ValueError, match=r"X has non-numeric column\(s\) \['when'\]"):
        CouplingFlow().fit(frame)
    frame["when"] = frame["when"] - frame["when"].iloc[0]
    with pytest.raises(ValueError, match=r"X has non-numeric column\(s\) \['when'\]"):
        CouplingFlow().fit(frame)
