"""The fixed affine map from the original feature space to the flow's input.

``z = (x - mean) @ matrix`` with ``matrix = diag(1 / scale)``, optionally
followed by ZCA whitening with the training covariance. The flow models
``z``; densities in the original space add ``log|det matrix|``.
"""

import numpy as np

# Ridge added to the correlation matrix before whitening: keeps nearly
# collinear features from being blown up by tiny eigenvalues.
_WHITEN_RIDGE = 1e-4

# Below this, the smallest eigenvalue of the correlation matrix is rounding
# noise: some combination of the columns is constant.
_MIN_CORRELATION_EIGENVALUE = 1e-10

# A column whose standard deviation is at most this fraction of its largest
# magnitude varies only at the rounding level of its values (about 100 ulps):
# it is treated as constant. The test is relative, so that columns on any scale
# (1e-12 as well as 1e12) are accepted as long as they really vary.
_MIN_RELATIVE_SPREAD = 100 * np.finfo(np.float64).eps


def _check_linearly_independent(eigenvalues, eigenvectors):
    """Raise if a combination of the columns is constant (a zero eigenvalue of their correlation).

    The data then lie on a hyperplane, where the whitened density would be a
    spike of height set by the ridge alone.
    """
    if eigenvalues[0] > _MIN_CORRELATION_EIGENVALUE:
        return
    direction = np.abs(eigenvectors[:, 0])
    columns = np.flatnonzero(direction > 0.1 * direction.max())
    raise ValueError(
        f"the columns of X are linearly dependent: a combination of columns {columns.tolist()} "
        "is constant (e.g. a copy or multiple of another column, or one-hot columns that sum "
        "to 1). Drop one of them."
    )


def fit_affine_normalizer(X, whiten):
    """Fit the map on training rows ``X``.

    Returns
    -------
    mean : ndarray of shape (n_features,)
    scale : ndarray of shape (n_features,)
    matrix : ndarray of shape (n_features, n_features)
    log_det : float
        ``log|det matrix|``, added to the flow's log-density.

    Raises
    ------
    ValueError
        If a column is constant, or (with ``whiten``) a combination of columns
        is: the data have no density.
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
            f"column(s) {constant.tolist()} of X are constant; a density over them is "
            "degenerate. Drop them (e.g. with sklearn.feature_selection.VarianceThreshold)."
        )
    mean = X_unit.mean(axis=0) * unit
    scale = relative_scale * unit
    with np.errstate(over="ignore", divide="ignore"):
        inverse_scale = 1.0 / scale
    too_small = np.flatnonzero(~np.isfinite(inverse_scale))
    if too_small.size:
        raise ValueError(
            f"column(s) {too_small.tolist()} of X have a standard deviation too small to "
            "standardize in float64 (below ~1e-308); rescale them."
        )
    matrix = np.diag(inverse_scale)
    # From the factors, not from the product: slogdet of a matrix whose
    # columns differ in scale by ~1e300 loses nats to underflow.
    log_det = -np.sum(np.log(scale))
    if whiten:
        # The correlation does not depend on the columns' scales.
        eigenvalues, eigenvectors = np.linalg.eigh(np.corrcoef(X_unit, rowvar=False))
        _check_linearly_independent(eigenvalues, eigenvectors)
        eigenvalues = eigenvalues + _WHITEN_RIDGE
        matrix = matrix @ (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
        log_det -= 0.5 * np.sum(np.log(eigenvalues))
    return mean, scale, matrix, float(log_det)
