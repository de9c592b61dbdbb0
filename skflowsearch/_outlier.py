"""``FlowOutlierDetector``: novelty detection with any density estimator."""

import warnings
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.utils import _safe_indexing, get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._base import validate_params

__all__ = ["FlowOutlierDetector"]

# contamination="auto": outliers lie more than this many scaled median absolute
# deviations below the median log-density (see FlowOutlierDetector's Notes).
_AUTO_DEVIATIONS = 3.0
# Makes the median absolute deviation of normal values their standard deviation.
_MAD_TO_STD = 1.4826
# Rows with missing entries are ranked against at most this many complete
# training rows (see FlowOutlierDetector's Notes).
N_REFERENCE_ROWS = 256


def _offset(scores, contamination):
    """The outlier threshold on ``scores`` (log-densities) for ``contamination``.

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        Log-densities of the rows that set the threshold.
    contamination : "auto" or float
        A fraction in (0, 0.5], whose percentile of ``scores`` is the
        threshold, or ``"auto"``: the median of the finite ``scores`` less
        ``_AUTO_DEVIATIONS`` scaled median absolute deviations (the mean
        absolute deviation where more than half the scores tie and the
        median one is 0).

    Returns
    -------
    offset : float
        Rows scoring below it are outliers.
    """
    if isinstance(contamination, str):  # "auto"
        finite = scores[np.isfinite(scores)]
        if not finite.size:
            return -np.inf
        median = np.median(finite)
        deviations = np.abs(finite - median)
        spread = np.median(deviations)
        if spread == 0:  # tied scores (e.g. duplicated rows): the median deviation says nothing
            spread = np.mean(deviations)
        return float(median - _AUTO_DEVIATIONS * _MAD_TO_STD * spread)
    return float(np.percentile(scores, 100.0 * contamination))


def _missing_entries(X):
    """Bool array of the NaN entries of a validated array (numbers or objects)."""
    if X.dtype.kind in "fc":
        return np.isnan(X)
    if X.dtype.kind == "O":
        return np.frompyfunc(lambda value: isinstance(value, float) and value != value, 1, 1)(X).astype(bool)
    return np.zeros(X.shape, dtype=bool)


def _on_complete_scale(scores, masked, complete):
    """``scores`` of rows with missing entries, moved to the complete rows' scale by quantile mapping.

    ``masked`` are the reference rows' scores with the same entries missing,
    ``complete`` the same rows' complete scores. A score at the ``q``
    quantile of ``masked`` goes to the ``q`` quantile of ``complete``; beyond
    their ranges the scores keep their distances to the extremes, so the
    order of the rows is kept.
    """
    masked = np.sort(masked[np.isfinite(masked)])
    complete = np.sort(complete[np.isfinite(complete)])
    if not masked.size or not complete.size:
        return scores
    if masked[0] == masked[-1]:  # e.g. every entry missing: the marginal is 1
        return np.where(scores == masked[0], np.median(complete), scores - masked[0] + np.median(complete))
    level = np.interp(scores, masked, np.linspace(0.0, 1.0, masked.size))
    out = np.interp(level, np.linspace(0.0, 1.0, complete.size), complete)
    out = np.where(scores < masked[0], complete[0] - (masked[0] - scores), out)
    return np.where(scores > masked[-1], complete[-1] + (scores - masked[-1]), out)


class FlowOutlierDetector(OutlierMixin, BaseEstimator):
    """Outlier (novelty) detector that thresholds a fitted density.

    The wrapped density estimator is fitted on (mostly normal) training data;
    a row is an outlier when its log-density is below the ``contamination``
    quantile of the training rows' log-densities (with
    ``contamination="auto"``: far below their median). The conventions are
    those of :class:`~sklearn.ensemble.IsolationForest` and
    :class:`~sklearn.neighbors.LocalOutlierFactor` with ``novelty=True``:
    ``score_samples`` is higher for more normal rows, ``decision_function`` is
    negative for outliers and ``predict`` returns +1 for inliers and -1 for
    outliers.

    Parameters
    ----------
    estimator : estimator object or None, default=None
        A density estimator with ``fit`` and ``score_samples`` (log-density,
        higher = more likely), e.g. :class:`~skflowsearch.CouplingFlow`,
        :class:`~skflowsearch.StructureSearchFlow`,
        :class:`~sklearn.mixture.GaussianMixture` or
        :class:`~sklearn.neighbors.KernelDensity`. It is cloned before
        fitting. None means ``StructureSearchFlow()`` with its defaults.
        It receives ``X`` as given (a DataFrame stays a DataFrame, e.g. for
        a pipeline that selects columns by name), once this detector has
        checked its shape and that it holds no inf, nor NaN unless the
        estimator accepts missing entries (its ``allow_nan`` tag, as the
        flows of this package do); converting it to numbers is the
        estimator's job, so a pipeline may drop or encode non-numeric
        columns.
    contamination : "auto" or float, default=0.1
        Expected fraction of outliers in the training data, in (0, 0.5]. It
        sets the threshold ``offset_``: about this fraction of the training
        rows is predicted as outliers. With ``"auto"`` the fraction is not
        fixed: the threshold is three scaled median absolute deviations below
        the median training log-density (see Notes), so clean training data
        has few rows flagged, and clear outliers are flagged however many
        there are, up to half of the rows.
    random_state : int, RandomState instance or None, default=None
        The ``random_state`` of the density estimator: of the default
        ``StructureSearchFlow()``, and of ``estimator`` if it has a
        ``random_state`` parameter (None leaves ``estimator``'s own). Pass an
        int for the same thresholds and predictions on every fit.

    Attributes
    ----------
    estimator_ : estimator object
        The fitted clone of ``estimator``.
    offset_ : float
        The ``100 * contamination`` percentile of the training rows'
        ``score_samples``, or with ``contamination="auto"`` their median less
        three scaled median absolute deviations;
        ``decision_function = score_samples - offset_``.
    reference_rows_ : array-like or None
        Up to 256 complete training rows (``X``'s type), against which rows
        with missing entries are ranked; None when ``estimator`` does not
        accept missing entries or no training row is complete.
    reference_scores_ : ndarray or None
        The wrapped estimator's ``score_samples`` of ``reference_rows_``.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column
        names.

    See Also
    --------
    sklearn.ensemble.IsolationForest : Tree-based outlier detector.
    sklearn.neighbors.LocalOutlierFactor : Local-density outlier detector.
    StructureSearchFlow : The default density estimator.

    Notes
    -----
    The threshold is a quantile of the *training* scores: a flexible density
    that has overfitted its training rows gives them higher log-densities
    than unseen normal rows, so on new data more than ``contamination`` of
    the normal rows may be flagged. Early stopping on a validation split
    (as in the flows of this package) limits this.

    With ``contamination="auto"``, ``offset_ = m - 3 * 1.4826 * median(|s - m|)``
    where ``s`` are the training log-densities and ``m = median(s)``: the
    Hampel identifier applied to ``s``. :class:`~sklearn.ensemble.IsolationForest`
    has a natural fixed ``"auto"`` offset (-0.5) because its score is bounded;
    a log-density has none, since changing the units of a feature shifts every
    log-density by the same constant. The median and the median absolute
    deviation move with that shift, are not moved by outliers making up less
    than half of the rows, and assume nothing of the density or of the number
    of features; 1.4826 makes the deviation a standard deviation for normal
    scores. Log-densities are not normal, though: that of a Gaussian has a
    long lower tail (a scaled chi-squared) which shortens, relative to its
    spread, as the dimension grows. So on Gaussian data under a well-fitted
    density the rule flags about 6% of the rows with 2 features, 4% with 3,
    1.5% with 10 and 0.7% with 30. The default stays ``0.1``, a fixed
    fraction, so that existing code keeps its predictions.

    A row with missing entries (NaN) gets from a flow of this package its
    marginal density over the observed entries: a density of fewer features,
    which is higher than complete rows' densities for no reason but that.
    This detector puts it on the scale of complete rows: the reference rows
    (complete training rows) are scored with the same entries missing, and a
    score at the ``q`` quantile of theirs becomes the ``q`` quantile of their
    complete scores. So a row is as outlying as its observed entries make it,
    among rows with the same entries missing.

    Examples
    --------
    >>> import numpy as np
    >>> from skflowsearch import CouplingFlow, FlowOutlierDetector
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 3))
    >>> detector = FlowOutlierDetector(
    ...     CouplingFlow(n_layers=2, hidden_layer_sizes=(8,), max_epochs=5,
    ...                  random_state=0),
    ...     contamination=0.05,
    ... ).fit(X)
    >>> detector.predict([[0.0, 0.0, 0.0], [8.0, -8.0, 8.0]])
    array([ 1, -1])
    >>> float((detector.predict(X) == -1).mean())
    0.05
    """

    def __init__(self, estimator=None, contamination=0.1, random_state=None):
        self.estimator = estimator
        self.contamination = contamination
        self.random_state = random_state

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "score_samples"]), None],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "random_state": ["random_state"],
    }

    def _check_params(self):
        validate_params(self)

    def _make_estimator(self):
        if self.estimator is None:
            # Imported here: the default is built at fit time, never in __init__.
            from ._search_flow import StructureSearchFlow

            return StructureSearchFlow(random_state=self.random_state)
        estimator = clone(self.estimator)
        if self.random_state is not None and "random_state" in estimator.get_params(deep=False):
            estimator.set_params(random_state=self.random_state)
        return estimator

    def fit(self, X, y=None):
        """Fit the density estimator and set the outlier threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, mostly normal rows.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : object
            The fitted detector.
        """
        self._check_params()
        # Checked here (and n_features_in_, feature_names_in_ set), but the
        # estimator gets X unconverted.
        values = validate_data(self, X, dtype=None, ensure_min_samples=2, ensure_all_finite=self._finite_check())
        self.estimator_ = self._make_estimator().fit(X)
        self.reference_rows_ = self.reference_scores_ = None
        # The reference rows' scores per pattern of missing entries.
        self._masked_reference_scores = {}
        if self._accepts_nan():
            complete = np.flatnonzero(~_missing_entries(values).any(axis=1))
            if complete.size:
                chosen = complete[np.unique(np.linspace(0, complete.size - 1, N_REFERENCE_ROWS).astype(int))]
                # A DataFrame stays one, for the estimator; other array-likes become arrays.
                self.reference_rows_ = _safe_indexing(X if hasattr(X, "iloc") else values, chosen)
                self.reference_scores_ = self._score(self.reference_rows_)
        self.offset_ = _offset(self._scores(X, values), self.contamination)
        return self

    def _accepts_nan(self):
        """Whether the estimator accepts missing entries (its ``allow_nan`` tag)."""
        return get_tags(self).input_tags.allow_nan

    def _finite_check(self):
        """``ensure_all_finite`` for X: NaN passes when the estimator accepts missing entries."""
        return "allow-nan" if self._accepts_nan() else True

    def _scores(self, X, values):
        """The wrapped estimator's scores of ``X``; rows with missing entries on the complete rows' scale."""
        scores = self._score(X)
        if getattr(self, "reference_rows_", None) is None:  # or pickled before missing entries were ranked
            return scores
        missing = _missing_entries(values)
        for pattern in np.unique(missing[missing.any(axis=1)], axis=0):
            rows = (missing == pattern).all(axis=1)
            key = pattern.tobytes()
            if key not in self._masked_reference_scores:
                self._masked_reference_scores[key] = self._score(_with_missing(self.reference_rows_, pattern))
            scores[rows] = _on_complete_scale(scores[rows], self._masked_reference_scores[key], self.reference_scores_)
        return scores

    def _score(self, X):
        with warnings.catch_warnings():
            # validate_data has already warned about X's feature names, once.
            warnings.filterwarnings("ignore", message=".*feature names", category=UserWarning)
            return np.asarray(self.estimator_.score_samples(X), dtype=np.float64)

    def score_samples(self, X):
        """Log-density of each row under the fitted estimator.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            The wrapped estimator's ``score_samples``: higher means more
            normal. Rows with missing entries are put on the complete rows'
            scale (see Notes).
        """
        check_is_fitted(self)
        values = validate_data(self, X, reset=False, dtype=None, ensure_all_finite=self._finite_check())
        return self._scores(X, values)

    def decision_function(self, X):
        """Shifted log-density: negative for outliers, non-negative for inliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        decision : ndarray of shape (n_samples,)
            ``score_samples(X) - offset_``.
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """Predict whether each row is an inlier (+1) or an outlier (-1).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,), dtype=int
            -1 where ``decision_function(X) < 0`` (or NaN, which a wrapped
            estimator may return), else +1.
        """
        decision = self.decision_function(X)
        labels = np.ones(decision.shape[0], dtype=int)
        labels[~(decision >= 0)] = -1
        return labels

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        if self.estimator is None:
            from ._search_flow import StructureSearchFlow

            inner = get_tags(StructureSearchFlow())
        else:
            inner = get_tags(self.estimator)
        tags.non_deterministic = inner.non_deterministic
        # Inputs are validated here as dense arrays, without inf, and
        # without NaN unless the estimator accepts it.
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = inner.input_tags.allow_nan
        return tags


def _with_missing(X, columns):
    """A copy of the rows ``X`` (an array or a DataFrame) with NaN in the bool mask ``columns``."""
    if hasattr(X, "iloc"):
        X = X.astype({name: "float64" for name in X.columns[columns]})
        X.iloc[:, np.flatnonzero(columns)] = np.nan
        return X
    X = np.array(X, dtype=np.float64 if np.asarray(X).dtype.kind in "biuf" else object)
    X[:, columns] = np.nan
    return X
