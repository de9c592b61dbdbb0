"""Rows with missing entries (NaN): their marginal density, by importance sampling.

A flow gives the density of complete rows. The density of a row's observed
entries is the integral of that density over its missing entries,

    p(x_obs) = integral p(x_obs, x_mis) d x_mis,

which no coupling flow has in closed form. :func:`log_marginal` estimates it
by importance sampling: each row's missing entries are drawn from a
multivariate Student t (``PROPOSAL_DF`` degrees of freedom) centred on the
conditional mean of a Gaussian fitted to complete rows, with that Gaussian's
conditional covariance, and

    log p(x_obs) ~ log mean_k p(x_obs, x_k) / q(x_k | x_obs).

The t's heavier tails keep the weights bounded where the flow's conditional
is wider than the Gaussian's. The draws are common random numbers: every row
and every call uses the same standard-normal and chi-square draws, so a row
scores the same whatever batch it comes in. The estimate is consistent; its
logarithm is biased low by about half the weights' relative variance over
``n_samples``, which grows with the number of missing entries.
"""

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import gammaln, logsumexp
from scipy.stats import qmc

# Degrees of freedom of the Student t proposal.
PROPOSAL_DF = 4.0
# Draws per row with missing entries.
N_MARGINAL_SAMPLES = 256
# Completed rows scored at once (rows x draws).
_BLOCK = 8192
# The common random numbers' seed.
_SEED = 0


@dataclass(frozen=True, eq=False)
class MarginalProposal:
    """A Gaussian of complete rows (``mean``, ``covariance``) whose conditionals propose missing entries."""

    mean: np.ndarray
    covariance: np.ndarray

    @classmethod
    def fit(cls, X, relative_floor):
        """The mean and covariance of the complete rows ``X``.

        Each column's variance is raised by ``relative_floor`` times itself
        (at least 1e-12), so that the covariance stays invertible where
        columns are exact linear functions of others; the conditional width
        of such a column is then about ``sqrt(relative_floor)`` standard
        deviations.
        """
        mean = X.mean(axis=0)
        covariance = np.atleast_2d(np.cov(X, rowvar=False))
        floor = np.maximum(relative_floor * np.diag(covariance), 1e-12)
        return cls(mean, covariance + np.diag(floor))

    def conditional(self, missing, X_observed):
        """Conditional means (one row per row of ``X_observed``) and covariance's Cholesky factor of the ``missing`` columns."""
        observed = ~missing
        S_oo = self.covariance[np.ix_(observed, observed)]
        S_mo = self.covariance[np.ix_(missing, observed)]
        gain = np.linalg.solve(S_oo, S_mo.T).T if observed.any() else np.zeros((missing.sum(), 0))
        means = self.mean[missing] + (X_observed - self.mean[observed]) @ gain.T
        covariance = self.covariance[np.ix_(missing, missing)] - gain @ S_mo.T
        return means, np.linalg.cholesky((covariance + covariance.T) / 2)


def _common_draws(n_samples, n_features):
    """Draws ``(n_samples, n_features)`` whose first ``p`` columns are ``p``-variate standard t draws, for every ``p``."""
    # A scrambled Sobol sequence: lower variance than random draws in few dimensions.
    uniform = qmc.Sobol(n_features + 1, scramble=True, seed=_SEED).random(n_samples)
    normal = stats.norm.ppf(uniform[:, 1:])
    scale = np.sqrt(stats.chi2.ppf(uniform[:, 0], PROPOSAL_DF) / PROPOSAL_DF)
    return normal / scale[:, None]


def _log_t_standard(z):
    """Log-density of the standard multivariate t (``PROPOSAL_DF``) at the rows of ``z``."""
    p, nu = z.shape[1], PROPOSAL_DF
    return (gammaln((nu + p) / 2) - gammaln(nu / 2) - p / 2 * np.log(nu * np.pi)
            - (nu + p) / 2 * np.log1p(np.einsum("ij,ij->i", z, z) / nu))


def log_marginal(log_density, X, proposal, n_samples=N_MARGINAL_SAMPLES):
    """Estimated log marginal density of the rows of ``X`` that hold NaN, over their NaN entries.

    Parameters
    ----------
    log_density : callable
        Complete rows ``(m, n_features)`` -> their log-densities ``(m,)``.
    X : ndarray of shape (n_rows, n_features)
        Rows with at least one NaN each.
    proposal : MarginalProposal
    n_samples : int

    Returns
    -------
    ndarray of shape (n_rows,)
        A row whose every entry is missing scores 0 (a density integrates
        to 1).
    """
    missing_entries = np.isnan(X)
    out = np.zeros(X.shape[0])
    draws = _common_draws(n_samples, X.shape[1])
    patterns, which = np.unique(missing_entries, axis=0, return_inverse=True)
    for index, missing in enumerate(patterns):
        rows = np.flatnonzero(which.ravel() == index)
        if missing.all():
            continue
        means, cholesky = proposal.conditional(missing, X[np.ix_(rows, ~missing)])
        z = draws[:, : missing.sum()]
        # log q of each draw, the same for every row of the pattern.
        log_q = _log_t_standard(z) - np.log(np.diag(cholesky)).sum()
        steps = z @ cholesky.T
        per_block = max(1, _BLOCK // n_samples)
        for start in range(0, rows.size, per_block):
            block = rows[start : start + per_block]
            completed = np.repeat(X[block], n_samples, axis=0)
            completed[:, missing] = (means[start : start + block.size, None, :] + steps[None]).reshape(-1, missing.sum())
            log_weights = log_density(completed).reshape(block.size, n_samples) - log_q
            out[block] = logsumexp(log_weights, axis=1) - np.log(n_samples)
    return out
