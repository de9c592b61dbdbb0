"""Every public estimator against a matrix of awkward inputs.

Each case either raises a clear error (type and message checked) or gives a
correct answer: finite scores of the right shape. The models are tiny and
train for at most 3 epochs; only the input handling is under test. The table
in ``docs/input_validation.rst`` lists the same cases.
"""

import re
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from skflowsearch import CouplingFlow, StructureSearchFlow

try:
    from skflowsearch import FlowOutlierDetector
except ImportError:  # pragma: no cover - written in parallel
    FlowOutlierDetector = None

pd = pytest.importorskip("pandas")
sp = pytest.importorskip("scipy.sparse")

N_SAMPLES, N_FEATURES = 40, 3


def _coupling_flow():
    return CouplingFlow(n_layers=2, hidden_layer_sizes=(4,), max_epochs=3, random_state=0)


def _search_flow():
    return StructureSearchFlow(
        n_layers=2, hidden_layer_sizes=(4,), population_size=2, n_offspring=2,
        n_generations=1, max_epochs=3, random_state=0,
    )


def _outlier_detector():
    return FlowOutlierDetector(_coupling_flow(), contamination=0.1)


ESTIMATORS = [
    pytest.param(_coupling_flow, id="CouplingFlow"),
    pytest.param(_search_flow, id="StructureSearchFlow"),
    pytest.param(
        _outlier_detector,
        id="FlowOutlierDetector",
        marks=pytest.mark.skipif(FlowOutlierDetector is None, reason="not importable"),
    ),
]


def _base():
    return np.random.RandomState(0).normal(size=(N_SAMPLES, N_FEATURES))


def _with(value):
    def make():
        X = _base()
        X[3, 1] = value
        return X
    return make


def _nan_column():
    X = _base()
    X[:, 1] = np.nan
    return X


def _nan_in_every_row():
    X = _base()
    X[np.arange(N_SAMPLES), np.arange(N_SAMPLES) % N_FEATURES] = np.nan
    return X


def _constant_column():
    X = _base()
    X[:, 1] = 5.0
    return X


def _rounding_noise_column():
    """0.1 perturbed by at most 30 ulps: constant up to rounding."""
    X = _base()
    X[:, 1] = 0.1 + np.random.RandomState(1).randint(-30, 31, N_SAMPLES) * np.spacing(0.1)
    return X


def _subnormal_column():
    X = _base()
    X[:, 2] *= 1e-310
    return X


def _duplicate_rows():
    return np.repeat(_base()[:10], 4, axis=0)


def _integers():
    return np.random.RandomState(0).randint(0, 20, size=(N_SAMPLES, N_FEATURES))


def _wide():
    return np.random.RandomState(0).normal(size=(6, 10))


def _dataframe():
    return pd.DataFrame(_base(), columns=["a", "b", "c"])


def _error(exc, pattern):
    return ("error", exc, pattern)


OK = ("ok", None, None)


def _warns(category, pattern):
    """Fits and answers, with a warning."""
    return ("warn", category, pattern)


_FEW_ROWS = r"training rows for \d+ features \(fewer than 10 per feature\)"

# (id, make X, expected outcome of fit)
FIT_CASES = [
    ("nan", _with(np.nan), _warns(UserWarning, r"1 of the 40 rows of X have missing entries \(NaN, in "
                                   r"column\(s\) \[1\]\); the flow is fitted on the 39 complete rows")),
    ("nan-column", _nan_column, _error(ValueError, r"column\(s\) \[1\] of X hold only missing values \(NaN\)")),
    ("nan-in-every-row", _nan_in_every_row,
     _error(ValueError, r"is fitted on the complete rows, and at least 2 are needed")),
    ("inf", _with(np.inf), _error(ValueError, r"Input X contains infinity")),
    ("-inf", _with(-np.inf), _error(ValueError, r"Input X contains infinity")),
    ("empty", lambda: np.empty((0, N_FEATURES)), _error(ValueError, r"Found array with 0 sample\(s\)")),
    ("0-features", lambda: np.empty((N_SAMPLES, 0)), _error(ValueError, r"Found array with 0 feature\(s\)")),
    ("1-sample", lambda: _base()[:1], _error(ValueError, r"Found array with 1 sample\(s\) .* minimum of 2")),
    ("2-samples", lambda: _base()[:2], _error(ValueError, r"n_samples = 2 is too few")),
    ("1-feature", lambda: _base()[:, :1], _error(ValueError, r"needs at least 2 features")),
    ("constant-column", _constant_column, _error(ValueError, r"column\(s\) \[1\] of X are constant")),
    ("collinear-columns", lambda: np.c_[_base()[:, :2], 2.0 * _base()[:, 0] - 1.0],
     _warns(UserWarning, r"the columns of X are linearly dependent: column 2 is a linear function of columns \[0\]\.")),
    ("rounding-noise-column", _rounding_noise_column, _error(ValueError, r"column\(s\) \[1\] of X are constant")),
    ("subnormal-column", _subnormal_column, _error(ValueError, r"column\(s\) \[2\] of X have a standard deviation too small")),
    ("1d", lambda: _base()[:, 0], _error(ValueError, r"Expected 2D array, got 1D array")),
    ("complex", lambda: _base() + 1j, _error(ValueError, r"Complex data not supported")),
    ("sparse", lambda: sp.csr_matrix(_base()), _error(TypeError, r"Sparse data was passed for X, but dense data is required")),
    ("strings", lambda: np.full((N_SAMPLES, N_FEATURES), "a", dtype=object), _error(ValueError, r"could not convert string to float")),
    ("3-samples", lambda: _base()[:3], _warns(UserWarning, "2 " + _FEW_ROWS)),
    ("4-samples", lambda: _base()[:4], _warns(UserWarning, "3 " + _FEW_ROWS)),
    ("5-samples", lambda: _base()[:5], _warns(UserWarning, "4 " + _FEW_ROWS)),
    ("wide-6x10", _wide, _warns(UserWarning, "5 " + _FEW_ROWS)),
    ("duplicate-rows", _duplicate_rows, OK),
    ("huge-1e12", lambda: _base() * 1e12, OK),
    ("huge-offset-1e12", lambda: _base() + 1e12, OK),
    ("huge-offset-1e13", lambda: _base() + 1e13, OK),
    ("huge-1e200", lambda: _base() * 1e200, OK),
    ("tiny-1e-12", lambda: _base() * 1e-12, OK),
    ("tiny-1e-200", lambda: _base() * 1e-200, OK),
    ("int", _integers, OK),
    ("bool", lambda: _base() > 0, OK),
    ("float32", lambda: _base().astype(np.float32), OK),
    ("list", lambda: _base().tolist(), OK),
    ("dataframe", _dataframe, OK),
]

# Where the search differs: it also splits selection rows off the training
# rows, and its candidates train on the rest, which must be at least 2.
SEARCH_FIT_CASES = {
    case: _error(ValueError, rf"the search trains its candidates on {n - 2} rows \({n} training rows minus "
                             r"2 selection rows, selection_fraction=0\.3\); it needs 2 rows\. Pass more "
                             r"rows, or a smaller selection_fraction or validation_fraction\.")
    for case, n in [("3-samples", 2), ("4-samples", 3)]
}


def _expected(make_estimator, case_id, expected):
    if make_estimator is _search_flow:
        return SEARCH_FIT_CASES.get(case_id, expected)
    return expected


@pytest.mark.parametrize("make_estimator", ESTIMATORS)
@pytest.mark.parametrize(
    "case_id, make_X, expected", [pytest.param(i, m, e, id=i) for i, m, e in FIT_CASES]
)
def test_fit_input(make_estimator, case_id, make_X, expected):
    estimator = make_estimator()
    X = make_X()
    kind, exc, pattern = _expected(make_estimator, case_id, expected)
    if kind == "error":
        with pytest.raises(exc, match=pattern):
            estimator.fit(X)
        return

    with warnings.catch_warnings(record=True) as caught:
        # A tiny model on odd data may stop early or warn about divergence;
        # what matters here is the answer, checked below.
        warnings.simplefilter("always")
        estimator.fit(X)
    if kind == "warn":
        assert any(issubclass(w.category, exc) and re.search(pattern, str(w.message)) for w in caught), (
            [str(w.message) for w in caught]
        )
    n_samples, n_features = np.shape(X)
    assert estimator.n_features_in_ == n_features
    scores = estimator.score_samples(X)
    assert scores.shape == (n_samples,)
    assert scores.dtype == np.float64
    assert np.all(np.isfinite(scores))
    if hasattr(estimator, "sample"):
        draws = estimator.sample(7, random_state=0)
        assert draws.shape == (7, n_features)
        assert np.all(np.isfinite(draws))
    if hasattr(estimator, "predict"):
        assert set(np.unique(estimator.predict(X))) <= {-1, 1}
    if isinstance(X, pd.DataFrame):
        np.testing.assert_array_equal(estimator.feature_names_in_, ["a", "b", "c"])
    else:
        assert not hasattr(estimator, "feature_names_in_")


@pytest.mark.parametrize("make_estimator", ESTIMATORS)
@pytest.mark.parametrize("make_X", [_wide, lambda: _base()[:3]], ids=["wide-6x10", "3-samples"])
def test_fewer_rows_than_features_fit_without_whitening(make_estimator, make_X):
    estimator = make_estimator()
    estimator.set_params(**{k: False for k in estimator.get_params() if k.endswith("whiten")})
    X = make_X()
    if make_estimator is _search_flow and len(X) == 3:
        # 2 training rows, both taken as selection rows: nothing left to train on.
        with pytest.raises(ValueError, match=r"the search trains its candidates on 0 rows \(2 training rows "
                                             r"minus 2 selection rows.*it needs 2 rows\. Pass more rows"):
            estimator.fit(X)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scores = estimator.fit(X).score_samples(X)
    assert scores.shape == (X.shape[0],) and np.all(np.isfinite(scores))


@pytest.mark.parametrize("factor", [1e-12, 1e12, 1e200])
def test_rescaled_input_shifts_log_density_by_log_jacobian(factor):
    """The normalizer standardizes: scaling X by c fits the same flow, with
    log-densities lower by ``n_features * log(c)``."""
    X = _base()
    reference = _coupling_flow().fit(X).score_samples(X)
    scaled = _coupling_flow().fit(X * factor).score_samples(X * factor)
    np.testing.assert_allclose(scaled + N_FEATURES * np.log(factor), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("factors", [(1e170, 1e-170), (1e-300, 1e300), (1e150, 1.0)])
def test_columns_rescaled_apart_shift_log_density_by_log_jacobian(factors):
    """Columns scaled by factors far apart (a product of scales under 1e-320):
    the whitening map's log-determinant is still exact."""
    X = _base()
    reference = _coupling_flow().fit(X).score_samples(X)
    c = np.ones(N_FEATURES)
    c[: len(factors)] = factors
    scaled = _coupling_flow().fit(X * c).score_samples(X * c)
    np.testing.assert_allclose(scaled + np.sum(np.log(c)), reference, rtol=0, atol=1e-6)


@pytest.fixture(scope="module", params=[p.values[0] for p in ESTIMATORS], ids=[p.id for p in ESTIMATORS])
def fitted(request):
    if request.param is _outlier_detector and FlowOutlierDetector is None:
        pytest.skip("FlowOutlierDetector not importable")
    return request.param().fit(_base())


def _nan_rows():
    X = _base()[:5]
    X[0, 0] = np.nan
    return X


def _inf_rows():
    X = _base()[:5]
    X[0, 0] = np.inf
    return X


# (id, make X, expected outcome of score_samples on an estimator fitted on 3 features)
SCORE_CASES = [
    ("wrong-width", lambda: _base()[:, :2], _error(ValueError, r"X has 2 features, but \w+ is expecting 3 features as input")),
    ("1d", lambda: _base()[0], _error(ValueError, r"Expected 2D array, got 1D array")),
    ("nan", _nan_rows, OK),  # a marginal density over the missing entry
    ("inf", _inf_rows, _error(ValueError, r"Input X contains infinity")),
    ("empty", lambda: np.empty((0, N_FEATURES)), _error(ValueError, r"Found array with 0 sample\(s\)")),
    ("complex", lambda: _base() + 1j, _error(ValueError, r"Complex data not supported")),
    ("sparse", lambda: sp.csr_matrix(_base()), _error(TypeError, r"Sparse data was passed for X, but dense data is required")),
    ("1-row", lambda: _base()[:1], OK),
    ("int", _integers, OK),
    ("float32", lambda: _base().astype(np.float32), OK),
    ("list", lambda: _base().tolist(), OK),
]


@pytest.mark.parametrize(
    "make_X, expected", [pytest.param(m, e, id=i) for i, m, e in SCORE_CASES]
)
def test_score_input(fitted, make_X, expected):
    X = make_X()
    kind, exc, pattern = expected
    if kind == "error":
        with pytest.raises(exc, match=pattern):
            fitted.score_samples(X)
        if hasattr(fitted, "predict"):
            with pytest.raises(exc, match=pattern):
                fitted.predict(X)
        return
    scores = fitted.score_samples(X)
    assert scores.shape == (len(X),)
    assert np.all(np.isfinite(scores))
    # Same rows, same scores, whatever the container and dtype (float32 rounds).
    expected_scores = fitted.score_samples(np.asarray(X, dtype=np.float32).astype(np.float64))
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)


def test_score_before_fit_raises():
    for make in (_coupling_flow, _search_flow) + ((_outlier_detector,) if FlowOutlierDetector else ()):
        with pytest.raises(NotFittedError, match="is not fitted yet"):
            make().score_samples(_base())


@pytest.mark.parametrize("make_estimator", ESTIMATORS)
def test_feature_names(make_estimator):
    """Column names are checked as everywhere in scikit-learn."""
    df = _dataframe()
    estimator = make_estimator().fit(df)
    np.testing.assert_array_equal(estimator.feature_names_in_, ["a", "b", "c"])
    name = type(estimator).__name__

    with pytest.raises(ValueError, match=r"Feature names unseen at fit time:\n- z"):
        estimator.score_samples(df.rename(columns={"a": "z"}))
    with pytest.raises(ValueError, match=r"Feature names must be in the same order"):
        estimator.score_samples(df[["b", "a", "c"]])
    with pytest.warns(UserWarning, match=re.escape(f"X does not have valid feature names, but {name} was fitted with feature names")):
        unnamed = estimator.score_samples(df.to_numpy())
    np.testing.assert_array_equal(estimator.score_samples(df), unnamed)

    plain = make_estimator().fit(df.to_numpy())
    with pytest.warns(UserWarning, match=re.escape(f"X has feature names, but {name} was fitted without feature names")):
        plain.score_samples(df)


@pytest.mark.parametrize("make_estimator", ESTIMATORS)
@pytest.mark.parametrize("n_rows", [0, 1])
def test_too_few_rows_message_names_the_estimator(make_estimator, n_rows):
    # docs/input_validation.rst: "... a minimum of 2 is required by <Estimator>."
    estimator = make_estimator()
    with pytest.raises(ValueError, match=rf"minimum of 2 is required by {type(estimator).__name__}\."):
        estimator.fit(_base()[:n_rows])


def test_rows_at_the_float64_limit_score_minus_inf_without_warning(fitted):
    normal = _base()[:2]
    X = np.vstack([[1e308, 1e308, -1e308], [1.7e308, 0.0, 0.0], normal])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = fitted.score_samples(X)
    assert np.all(scores[:2] == -np.inf)
    # The other rows score as alone (to the last bits: a batch of 4 and one of
    # 2 may take different BLAS kernels).
    np.testing.assert_allclose(scores[2:], fitted.score_samples(normal), rtol=1e-13, atol=0)


# --- hyper-parameters --------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")

# (params, exception, message) for StructureSearchFlow: each is rejected by
# fit before anything trains.
SEARCH_PARAM_CASES = [
    (dict(population_size=0), ValueError, r"'population_size' parameter of StructureSearchFlow must be"),
    (dict(population_size=2.5), TypeError, r"'population_size' parameter of StructureSearchFlow must be"),
    (dict(n_offspring=0), ValueError, r"'n_offspring' parameter of StructureSearchFlow must be"),
    (dict(n_generations=-1), ValueError, r"'n_generations' parameter of StructureSearchFlow must be"),
    (dict(crossover_proba=1.5), ValueError, r"'crossover_proba' parameter of StructureSearchFlow must be"),
    (dict(crossover_proba=-0.1), ValueError, r"'crossover_proba' parameter of StructureSearchFlow must be"),
    (dict(mutation_rate=1.5), ValueError, r"'mutation_rate' parameter of StructureSearchFlow must be"),
    (dict(mutation_rate=-0.1), ValueError, r"'mutation_rate' parameter of StructureSearchFlow must be"),
    (dict(mutation_rate="fast"), ValueError, r"'mutation_rate' parameter of StructureSearchFlow must be"),
    (dict(mutation_rate=None), TypeError, r"'mutation_rate' parameter of StructureSearchFlow must be"),
    (dict(width_choices=()), ValueError, r"width_choices must be a non-empty tuple of numbers in \(0, 1\]; got \(\)"),
    (dict(width_choices=[]), ValueError, r"width_choices must be a non-empty tuple"),
    (dict(width_choices=(0.0, 1.0)), ValueError, r"width_choices must be a non-empty tuple"),
    (dict(width_choices=(0.5, 1.5)), ValueError, r"width_choices must be a non-empty tuple"),
    (dict(width_choices=(-0.5,)), ValueError, r"width_choices must be a non-empty tuple"),
    (dict(width_choices=(NAN,)), ValueError, r"width_choices must be a non-empty tuple"),
    (dict(width_choices=(True,)), ValueError, r"width_choices must be a non-empty tuple"),
    (dict(width_choices=("0.5",)), ValueError, r"width_choices must be a non-empty tuple"),
    (dict(width_choices=0.5), ValueError, r"'width_choices' parameter of StructureSearchFlow must be"),
    (dict(width_choices=np.array([0.5, 1.0])), ValueError, r"width_choices must be a non-empty tuple"),
    (dict(fitness_budget=0), ValueError, r"'fitness_budget' parameter of StructureSearchFlow must be"),
    (dict(fitness_budget=-0.3), ValueError, r"'fitness_budget' parameter of StructureSearchFlow must be"),
    (dict(fitness_budget="all"), TypeError, r"'fitness_budget' parameter of StructureSearchFlow must be"),
    (dict(halving_factor=0), ValueError, r"'halving_factor' parameter of StructureSearchFlow must be"),
    (dict(halving_factor=1.5), TypeError, r"'halving_factor' parameter of StructureSearchFlow must be"),
    (dict(selection_fraction=0), ValueError, r"'selection_fraction' parameter of StructureSearchFlow must be"),
    (dict(selection_fraction=1), ValueError, r"'selection_fraction' parameter of StructureSearchFlow must be"),
    (dict(selection_fraction=1.5), ValueError, r"'selection_fraction' parameter of StructureSearchFlow must be"),
    (dict(selection_fraction=None), TypeError, r"'selection_fraction' parameter of StructureSearchFlow must be"),
    (dict(n_finalists=-1), ValueError, r"'n_finalists' parameter of StructureSearchFlow must be"),
    (dict(n_finalists=1.0), TypeError, r"'n_finalists' parameter of StructureSearchFlow must be"),
    (dict(n_race_folds=0), ValueError, r"'n_race_folds' parameter of StructureSearchFlow must be"),
    (dict(n_race_folds=3.0), TypeError, r"'n_race_folds' parameter of StructureSearchFlow must be"),
    (dict(n_race_seeds=0), ValueError, r"'n_race_seeds' parameter of StructureSearchFlow must be"),
    (dict(n_race_seeds=2.0), TypeError, r"'n_race_seeds' parameter of StructureSearchFlow must be"),
    (dict(race_margin=-1.0), ValueError, r"'race_margin' parameter of StructureSearchFlow must be"),
    (dict(race_margin="1"), TypeError, r"'race_margin' parameter of StructureSearchFlow must be"),
    (dict(pick="worst"), ValueError, r"'pick' parameter of StructureSearchFlow must be"),
    (dict(pick="Best"), ValueError, r"'pick' parameter of StructureSearchFlow must be"),
    (dict(pick=None), ValueError, r"'pick' parameter of StructureSearchFlow must be"),
    (dict(size_penalty=-1.0), ValueError, r"'size_penalty' parameter of StructureSearchFlow must be"),
    (dict(patience=0), ValueError, r"'patience' parameter of StructureSearchFlow must be"),
    (dict(patience=1.5), TypeError, r"'patience' parameter of StructureSearchFlow must be"),
    (dict(max_time=-1.0), ValueError, r"'max_time' parameter of StructureSearchFlow must be"),
    (dict(n_candidates_per_batch=0), ValueError, r"'n_candidates_per_batch' parameter of StructureSearchFlow must be"),
    (dict(callback="x"), TypeError, r"'callback' parameter of StructureSearchFlow must be"),
    (dict(checkpoint=""), ValueError, r"checkpoint must be None or a file path; got ''"),
    (dict(checkpoint=3), ValueError, r"'checkpoint' parameter of StructureSearchFlow must be"),
    (dict(checkpoint="/no-such-directory-skflowsearch/search.joblib"), ValueError,
     r"the directory of checkpoint='/no-such-directory-skflowsearch/search\.joblib' does not exist"),
    (dict(n_layers=0), ValueError, r"'n_layers' parameter of StructureSearchFlow must be"),
    (dict(hidden_layer_sizes=()), ValueError, r"hidden_layer_sizes"),
    (dict(validation_fraction=1.0), ValueError, r"'validation_fraction' parameter of StructureSearchFlow must be"),
    (dict(device="tpu"), ValueError, r"device"),
    (dict(n_jobs=0), ValueError, r"n_jobs == 0 has no meaning"),
]

# Non-finite numbers and bools: the parameter constraints refuse NaN and inf
# (outside every interval here but max_time's, where inf means no limit), and
# validate_params refuses bools where a number is expected (an Integral to
# Python); the estimators reject them before anything trains.
SEARCH_NON_FINITE = [
    (dict(fitness_budget=NAN), "fitness_budget"),
    (dict(fitness_budget=INF), "fitness_budget"),
    (dict(selection_fraction=NAN), "selection_fraction"),
    (dict(race_margin=NAN), "race_margin"),
    (dict(race_margin=INF), "race_margin"),
    (dict(size_penalty=NAN), "size_penalty"),
    (dict(mutation_rate=NAN), "mutation_rate"),
    (dict(crossover_proba=NAN), "crossover_proba"),
    (dict(max_time=NAN), "max_time"),
    (dict(population_size=True), "population_size"),
    (dict(n_jobs=True), "n_jobs"),
]
# The same for parameters both flows share.
SHARED_NON_FINITE = [
    (dict(validation_fraction=NAN), "validation_fraction"),
    (dict(max_log_scale=NAN), "max_log_scale"),
    (dict(learning_rate=INF), "learning_rate"),
    (dict(max_epochs=True), "max_epochs"),
]


@pytest.fixture
def no_training(monkeypatch):
    """Any training (candidates or final flow) fails the test: checks must come first."""
    import skflowsearch._base as base_module
    import skflowsearch._search as search_module

    def trained(*args, **kwargs):
        pytest.fail("a flow was trained before the parameters were checked")

    monkeypatch.setattr(base_module, "fit_flows", trained)
    monkeypatch.setattr(search_module, "fit_flows", trained)


@pytest.mark.parametrize(
    "params, exc, pattern",
    [pytest.param(p, e, m, id=",".join(f"{k}={v!r}" for k, v in p.items())) for p, e, m in SEARCH_PARAM_CASES],
)
def test_bad_search_parameter_raises_before_training(no_training, params, exc, pattern):
    estimator = _search_flow().set_params(**params)
    with pytest.raises(exc, match=pattern):
        estimator.fit(_base())
    assert not hasattr(estimator, "n_features_in_")


def _non_finite_cases(cases, estimators):
    return [
        pytest.param(make, p, name, id=f"{make.__name__.strip('_')}-{name}={next(iter(p.values()))!r}")
        for p, name in cases
        for make in estimators
    ]


@pytest.mark.parametrize(
    "make_estimator, params, name",
    _non_finite_cases(SEARCH_NON_FINITE, [_search_flow])
    + _non_finite_cases(SHARED_NON_FINITE, [_coupling_flow, _search_flow]),
)
def test_non_finite_or_bool_parameter_raises_before_training(no_training, make_estimator, params, name):
    estimator = make_estimator().set_params(**params)
    with pytest.raises((ValueError, TypeError), match=name):
        estimator.fit(_base())


# Edge values that are valid: the search runs and gives finite scores.
SEARCH_EDGE_PARAMS = [
    dict(mutation_rate="auto"),
    dict(mutation_rate=0.0),
    dict(mutation_rate=1.0),
    dict(width_choices=(1.0,)),
    dict(width_choices=[0.5, 1.0]),
    dict(fitness_budget=1e-6),
    dict(fitness_budget=5.0),
    dict(halving_factor=1),
    dict(halving_factor=10),
    dict(selection_fraction=0.01),
    dict(n_finalists=0),
    dict(n_race_seeds=1),
    dict(n_race_folds=1),
    dict(n_race_folds=50),
    dict(race_margin=0.0),
    dict(race_margin=1e9),
    dict(pick="smallest"),
    dict(crossover_proba=0.0),
    dict(crossover_proba=1.0),
    dict(n_generations=0),
    dict(population_size=1, n_offspring=1),
]


def _edge_param(p):
    if isinstance(p, dict):
        p = pytest.param(p)
    return pytest.param(*p.values, marks=p.marks, id=",".join(f"{k}={v!r}" for k, v in p.values[0].items()))


@pytest.mark.parametrize("params", [_edge_param(p) for p in SEARCH_EDGE_PARAMS])
def test_edge_search_parameters_fit(params):
    X = _base()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either,
        warnings.simplefilter("ignore", ConvergenceWarning)  # but the one a 3-epoch budget deserves
        estimator = _search_flow().set_params(**params).fit(X)
    scores = estimator.score_samples(X)
    assert scores.shape == (N_SAMPLES,) and np.all(np.isfinite(scores))
    assert sum(r["chosen"] for r in estimator.race_) == 1
    if params.get("n_finalists") == 0:
        assert not any(r["entry"].startswith("finalist") for r in estimator.race_)
    if params.get("width_choices") == (1.0,):
        assert estimator.hidden_layer_sizes_ == (4,)
        assert all(r["hidden_layer_sizes"] == (4,) for r in estimator.race_)


@pytest.mark.parametrize("removed", ["fitness_epochs", "mutation_proba", "refit"])
def test_removed_search_parameters_are_rejected(removed):
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{removed}'"):
        StructureSearchFlow(**{removed: 1})
    with pytest.raises(ValueError, match=rf"Invalid parameter '{removed}'"):
        _search_flow().set_params(**{removed: 1})


def test_max_time_rejects_a_bool(no_training):
    with pytest.raises(TypeError, match="max_time"):
        _search_flow().set_params(max_time=True).fit(_base())
