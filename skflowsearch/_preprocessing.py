"""The fixed affine map from the original feature space to the flow's input.

``z = (x - mean) @ matrix`` with ``matrix = diag(1 / scale)``, optionally
followed by ZCA whitening with the training covariance. The flow models
``z``; densities in the original space add ``log|det matrix|``.
"""

import numpy as np

# Ridge added to the correlation matrix before whitening: keeps nearly
# collinear features from being blown up by tiny eigenvalues.
_WHITEN_RIDGE = 1e-4


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
        If a column is constant: it has no density.
    """
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    constant = np.flatnonzero(scale <= 1e-12 * np.maximum(1.0, np.abs(mean)))
    if constant.size:
        raise ValueError(
            f"column(s) {constant.tolist()} of X are constant; a density over them is "
            "degenerate. Drop them (e.g. with sklearn.feature_selection.VarianceThreshold)."
        )
    matrix = np.diag(1.0 / scale)
    if whiten:
        correlation = np.corrcoef(X, rowvar=False) + _WHITEN_RIDGE * np.eye(X.shape[1])
        eigenvalues, eigenvectors = np.linalg.eigh(correlation)
        matrix = matrix @ (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T
    _, log_det = np.linalg.slogdet(matrix)
    return mean, scale, matrix, float(log_det)
