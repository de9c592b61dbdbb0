"""The start of every flow: the fixed affine map from the original feature
space to the flow's input, and the base distribution.

``z = (x - location) @ matrix`` with ``matrix = diag(1 / scale)``, optionally
followed by ZCA whitening with a shrunk correlation matrix. The flow models
``z``; densities in the original space add ``log|det matrix|``. An untrained
flow is this map followed by its base (a standard normal or a product of
Student t), and :func:`choose_start` picks both on validation rows.
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.covariance import ledoit_wolf_shrinkage

from ._bases import fit_mixture
from ._transforms import base_log_prob

# Ridge added to the (shrunk) correlation matrix before whitening: keeps
# nearly collinear features from being blown up by tiny eigenvalues.
_WHITEN_RIDGE = 1e-4

# Below this, the smallest eigenvalue of the correlation matrix is rounding
# noise: some combination of the columns is constant.
_MIN_CORRELATION_EIGENVALUE = 1e-10

# A column whose standard deviation is at most this fraction of its largest
# magnitude varies only at the rounding level of its values (about 100 ulps):
# it is treated as constant. The test is relative, so that columns on any scale
# (1e-12 as well as 1e12) are accepted as long as they really vary.
_MIN_RELATIVE_SPREAD = 100 * np.finfo(np.float64).eps

# The robust map's correlation is that of the robustly standardized rows
# clipped to +-_WINSOR (in robust standard deviations): a few extreme rows
# then weigh like rows at 3 sd.
_WINSOR = 3.0

# Rows beyond this many robust standard deviations in some column are left
# out of the test for linearly dependent columns (an exact dependence holds on
# every subset of rows, and far outliers would otherwise hide it).
_DEPENDENCE_INLIER = 10.0

# The values of the estimators' normalization and base_distribution.
NORMALIZATIONS = ("auto", "standard", "robust")
BASE_DISTRIBUTIONS = ("auto", "normal", "student_t", "gaussian_mixture")
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

# Components a Gaussian-mixture start tries with n_components="auto", the
# regularizations added to the diagonal of its covariances (the standardized
# columns have unit variance) and the EM initializations of each fit (the best
# on the training rows is kept): the components and initializations of the
# tuned GaussianMixture the benchmarks compare with, and the ends of its
# regularization grid.
MIXTURE_COMPONENTS = (2, 3, 4, 5, 6, 8)
MIXTURE_REG_COVARS = (1e-6, 1e-2)
MIXTURE_N_INIT = 2

# Degrees of freedom of the heavy-tailed bases a start may choose
# (1 or even: see _transforms.base_sample).
STUDENT_T_DF = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)

# Multiples of the Ledoit-Wolf shrinkage a start may choose: the formula is
# optimal for a well-conditioned truth and over-shrinks an ill-conditioned one
# (on a 50-D Gaussian of condition number 100, a quarter of it scored
# 0.3-1.5 nats/row higher held out at 5-20 rows per feature).
SHRINKAGE_FACTORS = (0.0, 0.25, 0.5, 1.0)

# Fewer training rows per feature than this: fit warns that the density is
# estimated from few rows.
FEW_ROWS_PER_FEATURE = 10

# 0.75 quantile of the standard normal: IQR / (2 * this) estimates its sd.
_NORMAL_QUARTILE = 0.6744897501960817


@dataclass(frozen=True, eq=False)
class Normalizer:
    """``z = (x - mean) @ matrix``; ``log_det = log|det matrix|``."""

    mean: np.ndarray
    scale: np.ndarray
    matrix: np.ndarray
    log_det: float

    def __call__(self, X):
        # Rows near the float64 limit can overflow here; they score -inf.
        with np.errstate(over="ignore", invalid="ignore"):
            return (X - self.mean) @ self.matrix


@dataclass(frozen=True)
class Start:
    """What an untrained flow is: a normalization and a base distribution.

    ``robust`` selects the median / interquartile-range map with a winsorized
    correlation (:func:`fit_normalizer`); ``whiten`` decorrelates the
    columns after scaling them; ``shrinkage_factor`` scales the
    Ledoit-Wolf shrinkage of the whitening correlation; ``df`` is the base's
    degrees of freedom, ``inf`` for the standard normal; ``mixture`` (a
    :class:`~skflowsearch._bases.Mixture` in the normalized space) makes the
    base that Gaussian mixture instead.
    """

    robust: bool
    df: float
    shrinkage_factor: float = 1.0
    whiten: bool = True
    mixture: object = None

    def fit_normalizer(self, X):
        """This start's normalizer, fitted on rows ``X`` (other rows than it was chosen on).

        Unshrunk whitening needs more rows than features: with fewer, the
        smallest shrinkage of ``SHRINKAGE_FACTORS`` is used instead.
        """
        factor = self.shrinkage_factor
        if factor == 0 and X.shape[0] <= X.shape[1]:
            factor = min(f for f in SHRINKAGE_FACTORS if f > 0)
        return fit_normalizer(X, whiten=self.whiten, robust=self.robust, shrinkage_factor=factor)

    @property
    def normalization(self):
        return "robust" if self.robust else "standard"

def fit_normalizer(X, *, whiten, robust=False, shrinkage_factor=1.0):
    """Fit the map on training rows ``X``.

    ``robust=False`` takes the mean and standard deviation of each column;
    ``robust=True`` the median and the interquartile range (scaled to a
    normal's standard deviation; the standard deviation where the quartiles
    coincide), so that a few extreme rows do not set the scale of all the
    others. Whitening uses the correlation of the standardized rows
    (``robust``: clipped to +-3), shrunk toward the identity by
    ``shrinkage_factor`` times the Ledoit-Wolf shrinkage: well conditioned
    also when rows are not many times the features.

    Returns
    -------
    Normalizer

    Raises
    ------
    ValueError
        If a column is constant, or (with ``whiten`` and more rows than
        features) a combination of columns is: the data have no density.
    """
    return _normalizer(*_standardize(X, robust=robust, whiten=whiten), shrinkage_factor=shrinkage_factor)


def _standardize(X, *, robust, whiten):
    """``(mean, scale, correlation, shrinkage)`` of the rows ``X``.

    The location and scale of each column; with ``whiten``, the eigenvalues
    and eigenvectors of the correlation of the standardized rows
    (``robust``: clipped) and its Ledoit-Wolf shrinkage, else None and 0.
    """
    # Statistics are taken on each column divided by its largest magnitude and
    # scaled back: squaring values beyond ~1e154 (or below ~1e-154) directly
    # would overflow (underflow) and make the map inf or NaN.
    peak = np.max(np.abs(X), axis=0)
    unit = np.where(peak > 0, peak, 1.0)
    X_unit = X / unit
    relative_scale = X_unit.std(axis=0)
    constant = np.flatnonzero(relative_scale <= _MIN_RELATIVE_SPREAD)
    if constant.size:
        raise ValueError(
            f"column(s) {constant.tolist()} of X are constant on the {X.shape[0]} rows the "
            "normalization is fitted on (the training rows: a column with a few other values can "
            "be constant there); a density over them is degenerate. Drop them (e.g. with "
            "sklearn.feature_selection.VarianceThreshold)."
        )
    if robust:
        lower, location, upper = np.percentile(X_unit, [25, 50, 75], axis=0)
        spread = (upper - lower) / (2 * _NORMAL_QUARTILE)
        relative_scale = np.where(spread > _MIN_RELATIVE_SPREAD, spread, relative_scale)
    else:
        location = X_unit.mean(axis=0)
    scale = relative_scale * unit
    with np.errstate(over="ignore", divide="ignore"):
        too_small = np.flatnonzero(~np.isfinite(1.0 / scale))
    if too_small.size:
        raise ValueError(
            f"column(s) {too_small.tolist()} of X have a standard deviation too small to "
            "standardize in float64 (below ~1e-308); rescale them."
        )
    if not whiten:
        return location * unit, scale, None, 0.0
    Z = (X_unit - location) / relative_scale
    _check_linearly_independent(Z)
    if robust:
        Z = np.clip(Z, -_WINSOR, _WINSOR)
    Z = (Z - Z.mean(axis=0)) / Z.std(axis=0)
    correlation = np.linalg.eigh(Z.T @ Z / Z.shape[0])
    return location * unit, scale, correlation, ledoit_wolf_shrinkage(Z, assume_centered=True)


def _normalizer(mean, scale, correlation, ledoit_wolf, *, shrinkage_factor):
    """The :class:`Normalizer` of :func:`_standardize`'s statistics (whitened if ``correlation``)."""
    matrix = np.diag(1.0 / scale)
    # From the factors, not from the product: slogdet of a matrix whose
    # columns differ in scale by ~1e300 loses nats to underflow.
    log_det = -np.sum(np.log(scale))
    if correlation is not None:
        # Shrinking toward the identity keeps the eigenvectors.
        shrinkage = shrinkage_factor * ledoit_wolf
        eigenvalues, eigenvectors = correlation
        eigenvalues = (1.0 - shrinkage) * eigenvalues + shrinkage + _WHITEN_RIDGE
        matrix = matrix @ (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
        log_det -= 0.5 * np.sum(np.log(eigenvalues))
    return Normalizer(mean, scale, matrix, float(log_det))


def _check_linearly_independent(Z):
    """Raise if a combination of the standardized columns ``Z`` is constant.

    The data then lie on a hyperplane, where a whitened density would be a
    spike. See :func:`dependent_columns` for the test.
    """
    found = _dependences(Z, first_only=True)
    if found:
        columns, _ = found[0]
        raise ValueError(
            f"the columns of X are linearly dependent: a combination of columns {columns} "
            "is constant (e.g. a copy or multiple of another column, or one-hot columns that sum "
            "to 1). Drop one of them."
        )


def dependent_columns(X):
    """The exact linear dependences among the columns of ``X``, one derived column each.

    Returns a list of ``(columns, derived)``: the columns of a constant linear
    combination and the one of them taken as derived (the last with a large
    coefficient), such that the columns left when every derived one is
    dropped are linearly independent. Empty when there is none.

    The test is on the correlation of the standardized rows, leaving out
    rows beyond 10 robust standard deviations in some column (an exact
    dependence holds on the others too, and far outliers would hide it);
    with no more rows than columns nothing can be told apart from chance,
    and nothing is reported. A column that is constant on the rows left
    (zero, say, but for a few far values) takes no part.
    """
    Z, varying = _robust_units(X)
    found = _dependences(Z)
    return [([int(varying[i]) for i in columns], int(varying[derived])) for columns, derived in found]


def _robust_units(X):
    """``(Z, varying)``: the columns of ``X`` that vary, robustly standardized, and their indices."""
    peak = np.max(np.abs(X), axis=0)
    X_unit = X / np.where(peak > 0, peak, 1.0)
    # Constant columns are left to the normalizer, which rejects them.
    varying = np.flatnonzero(X_unit.std(axis=0) > _MIN_RELATIVE_SPREAD)
    X_unit = X_unit[:, varying]
    lower, upper = np.percentile(X_unit, [25, 75], axis=0)
    spread = (upper - lower) / (2 * _NORMAL_QUARTILE)
    spread = np.where(spread > _MIN_RELATIVE_SPREAD, spread, X_unit.std(axis=0))
    return (X_unit - np.median(X_unit, axis=0)) / spread, varying


def _dependence_rows(Z):
    """Bool mask of the rows of standardized ``Z`` that the dependence test reads."""
    inliers = (np.abs(Z) <= _DEPENDENCE_INLIER).all(axis=1)
    if inliers.sum() <= Z.shape[1]:
        return np.ones(Z.shape[0], dtype=bool)
    return inliers


def _dependences(Z, *, first_only=False):
    """:func:`dependent_columns` on robustly standardized columns ``Z``."""
    inliers = Z[_dependence_rows(Z)]
    if inliers.shape[0] <= Z.shape[1]:
        return []
    # A column constant on these rows (its other values all far out) has no
    # correlation with the others: it takes no part in a dependence.
    found, kept = [], [int(j) for j in np.flatnonzero(np.ptp(inliers, axis=0) > 0)]
    while len(kept) > 1:
        eigenvalues, eigenvectors = np.linalg.eigh(np.corrcoef(inliers[:, kept], rowvar=False))
        if eigenvalues[0] > _MIN_CORRELATION_EIGENVALUE:
            break
        direction = np.abs(eigenvectors[:, 0])
        involved = [kept[i] for i in np.flatnonzero(direction > 0.1 * direction.max())]
        found.append((involved, involved[-1]))
        kept.remove(involved[-1])
        if first_only:
            break
    return found


# Width of the Gaussian a derived column gets around its linear prediction, in
# units of the column's standard deviation (LinearResidual).
DEPENDENT_WIDTH = 1e-3
# LinearResidual.fit: at most this many least-squares fits, each on the rows
# the previous one left within 10 robust standard deviations (median absolute
# deviation times _MAD_TO_SD) of the hyperplane; residuals below _ROUND_OFF
# times the derived column's standard deviation count as on it.
_RELATION_REFITS = 4
_MAD_TO_SD = 1.4826
_ROUND_OFF = 1e-9


@dataclass(frozen=True, eq=False)
class LinearResidual:
    """Derived columns given the others: ``x_D = intercept + x_K @ coef + scale * e``, ``e ~ N(0, I)``.

    ``derived`` is the bool mask of the columns ``D``; ``K`` are the others.
    The model is fitted by least squares on the training rows that hold the
    relation: those the dependence test reads (see :func:`dependent_columns`),
    less the rows whose residual is beyond 10 robust standard deviations of
    the residuals (a mistyped total, say), refitted until they settle.
    ``scale`` is ``DEPENDENT_WIDTH`` times each derived column's standard
    deviation on those rows: rows on the hyperplane score a high, finite
    density there, rows off it a very low one.
    """

    derived: np.ndarray
    intercept: np.ndarray
    coef: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X, derived):
        design = np.c_[np.ones(X.shape[0]), X[:, ~derived]]
        target = X[:, derived]
        rows = _dependence_rows(_robust_units(X)[0])
        for refit in range(_RELATION_REFITS):
            solution, *_ = np.linalg.lstsq(design[rows], target[rows], rcond=None)
            residual = target - design @ solution
            centre = np.median(residual[rows], axis=0)
            spread = _MAD_TO_SD * np.median(np.abs(residual[rows] - centre), axis=0)
            # Round-off is on the hyperplane, whatever the spread of the residuals.
            spread = np.maximum(spread, _ROUND_OFF * target[rows].std(axis=0))
            holds = (np.abs(residual - centre) <= _DEPENDENCE_INLIER * spread).all(axis=1)
            if holds.sum() <= design.shape[1] or (holds == rows).all() or refit == _RELATION_REFITS - 1:
                break  # rows: those of the last fit
            rows = holds
        width = DEPENDENT_WIDTH * target[rows].std(axis=0)
        return cls(derived.copy(), solution[0], solution[1:], width)

    def to_normal(self, X):
        """Standardized residuals of the derived columns of ``X``, shape (n, n_derived)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return (X[:, self.derived] - self.intercept - X[:, ~self.derived] @ self.coef) / self.scale

    def from_normal(self, X_kept, Z):
        """The derived columns of rows whose other columns are ``X_kept``, from residuals ``Z``."""
        return self.intercept + X_kept @ self.coef + Z * self.scale

    def log_prob(self, X):
        """Log-density of the derived columns of ``X`` given the others, per row."""
        Z = self.to_normal(X)
        log_prob = -0.5 * (Z * Z).sum(axis=1) - Z.shape[1] * 0.5 * math.log(2.0 * math.pi)
        return np.where(np.isfinite(log_prob), log_prob, -np.inf) - np.sum(np.log(self.scale))


def best_mixture(X_train, X_val, *, n_components="auto", covariance_type="full", seed=0):
    """The Gaussian mixture with the highest validation log-likelihood, or None.

    Fitted by EM (seeded by ``seed``, ``MIXTURE_N_INIT`` initializations) on
    the standardized training rows with ``n_components`` components
    (``"auto"``: each of ``MIXTURE_COMPONENTS``) and each regularization of
    ``MIXTURE_REG_COVARS``. Returns ``(score,
    mixture, normalizer)``: the mean validation log-likelihood in the
    original space, the mixture in the space of ``normalizer`` (the
    standardization it was fitted after). A mixture of full covariances is a
    density of the original rows whatever linear map it is fitted after, so
    one fit serves every start (see :func:`choose_start`).
    """
    normalizer = fit_normalizer(X_train, whiten=False)
    Z_train, Z_val = normalizer(X_train), normalizer(X_val)
    best = None
    for k in MIXTURE_COMPONENTS if n_components == "auto" else (n_components,):
        if k < 2:  # one component is the Gaussian start
            continue
        for reg_covar in MIXTURE_REG_COVARS:
            mixture = fit_mixture(Z_train, k, covariance_type, reg_covar, seed, n_init=MIXTURE_N_INIT)
            if mixture is None:
                continue
            score = float(np.mean(mixture.log_prob(Z_val))) + normalizer.log_det
            if np.isfinite(score) and (best is None or score > best[0]):
                best = (score, mixture, normalizer)
    return best


def choose_start(X_train, X_val, *, whiten, normalization="auto", base_distribution="auto"):
    """The start whose untrained flow has the highest mean log-likelihood on ``X_val``.

    Candidates: the standard and/or the robust normalization (``"auto"``: both),
    whitened with each shrinkage of ``SHRINKAGE_FACTORS`` (no shrinkage only
    with more rows than features), each with the standard normal base and/or
    the Student t bases of ``STUDENT_T_DF`` degrees of freedom (a mixture
    base is a candidate of its own: see :func:`best_mixture`). Under the
    defaults the maximum-likelihood Gaussian (standard map, no shrinkage,
    normal base) is a candidate whenever it exists, so the chosen start is
    never below it on the validation rows.

    Returns
    -------
    best : (Start, Normalizer, float)
        The chosen start, its normalizer fitted on ``X_train``, and its
        validation score.
    gaussian : (Start, Normalizer, float) or None
        The best of the candidates with the standard map and the normal base
        (the shrunk Gaussians), None when those are not candidates.
    """
    robust_choices = {"auto": (False, True), "standard": (False,), "robust": (True,)}[normalization]
    df_choices = {
        "auto": (math.inf, *STUDENT_T_DF), "normal": (math.inf,), "student_t": STUDENT_T_DF,
        "gaussian_mixture": (math.inf,),
    }[base_distribution]
    factors = [f for f in SHRINKAGE_FACTORS if f > 0 or X_train.shape[0] > X_train.shape[1]]
    best = gaussian = None
    for robust in robust_choices:
        standardized = _standardize(X_train, robust=robust, whiten=whiten)
        for factor in factors if whiten else (1.0,):
            normalizer = _normalizer(*standardized, shrinkage_factor=factor)
            Z_val = torch.from_numpy(np.ascontiguousarray(normalizer(X_val)))
            for df in df_choices:
                score = float(base_log_prob(Z_val, df).mean()) + normalizer.log_det
                score = score if np.isfinite(score) else -np.inf
                entry = (Start(robust, df, factor, whiten), normalizer, score)
                if best is None or score > best[2]:
                    best = entry
                if not robust and math.isinf(df) and (gaussian is None or score > gaussian[2]):
                    gaussian = entry
    return best, gaussian


def mixture_start(mixture, host):
    """The start of the Gaussian-mixture base ``mixture`` (from :func:`best_mixture`) on ``host``'s map.

    ``host`` is a ``(Start, Normalizer, score)`` of :func:`choose_start`;
    the result is one too, the mixture mapped into the host's normalized
    space (the same density of the original rows).
    """
    score, fitted, source = mixture
    start, normalizer, _ = host
    # x = z_s S^-1 + m_s and z_t = (x - m_t) T, so z_t = z_s (S^-1 T) + (m_s - m_t) T.
    matrix = np.linalg.solve(source.matrix, normalizer.matrix)
    mapped = fitted.mapped(matrix, (source.mean - normalizer.mean) @ normalizer.matrix)
    return Start(start.robust, math.inf, start.shrinkage_factor, start.whiten, mapped), normalizer, score


def warn_if_few_rows(n_train, n_features, estimator_name, whiten):
    """Warn when the density is estimated from few training rows per feature."""
    if n_train < FEW_ROWS_PER_FEATURE * n_features:
        shrunk = ("The correlation is shrunk toward the identity (Ledoit-Wolf) to keep the "
                  "whitening well conditioned, but expect" if whiten else "Expect")
        warnings.warn(
            f"{estimator_name}: {n_train} training rows for {n_features} features (fewer than "
            f"{FEW_ROWS_PER_FEATURE} per feature). {shrunk} held-out log-likelihoods clearly "
            "below the validation score.",
            UserWarning,
        )
