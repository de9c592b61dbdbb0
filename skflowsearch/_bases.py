"""Base distributions of the flows: where the last layer's output is scored.

Each base is a small :class:`torch.nn.Module` (so that ``.double()`` and
``.to(device)`` move its tensors with the flow) with

* ``log_prob(z)``: the log-density summed over the last dimension;
* ``sample(shape, generator, dtype)``: draws on the CPU from ``generator``
  (samples do not depend on the device);
* ``to_normal(Z)`` / ``from_normal(U)``: a bijection (numpy, float64) between
  the base and a standard normal of the same dimension, which the estimators'
  ``transform`` and ``inverse_transform`` apply after the flow.

:class:`ProductBase` is the standard normal or a product of Student t;
:class:`GaussianMixtureBase` a mixture of Gaussians, fitted by
:func:`fit_mixture` on the normalized training rows, so that an untrained flow
(every layer the identity) *is* that mixture.
"""

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import log_ndtr, ndtr, ndtri, ndtri_exp, stdtr, stdtrit
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import nn

from ._transforms import base_log_prob, base_sample, student_t_scale

_LOG_2PI = math.log(2.0 * math.pi)

# Bisection steps of GaussianMixtureBase.from_normal: the bracket (the
# components' quantiles) shrinks by 2**-80, below float64 resolution.
_BISECTION_STEPS = 80

# Rows of one pass of the Rosenblatt transform (its work arrays are rows x components x features).
_ROW_CHUNK = 2048


class ProductBase(nn.Module):
    """Independent features, each a standard normal (``df=inf``) or a scaled Student t.

    See :func:`~skflowsearch._transforms.base_log_prob`; it holds no tensors.
    """

    def __init__(self, df=math.inf):
        super().__init__()
        self.df = float(df)

    n_components = 1

    def log_prob(self, z):
        return base_log_prob(z, self.df)

    def sample(self, shape, generator, dtype):
        return base_sample(shape, self.df, generator, dtype)

    def to_normal(self, Z):
        """Each column through the t's distribution function, then the normal's quantile."""
        if math.isinf(self.df):
            return Z
        t = Z / student_t_scale(self.df)
        # Through the lower tail on both sides, by symmetry: precise far out.
        with np.errstate(divide="ignore"):
            return np.where(t > 0, -ndtri(stdtr(self.df, -t)), ndtri(stdtr(self.df, t)))

    def from_normal(self, U):
        if math.isinf(self.df):
            return U
        with np.errstate(divide="ignore"):
            t = np.where(U > 0, -stdtrit(self.df, ndtr(-U)), stdtrit(self.df, ndtr(U)))
        return student_t_scale(self.df) * t

    def extra_repr(self):
        return f"df={self.df:g}"


@dataclass(frozen=True, eq=False)
class Mixture:
    """A fitted Gaussian mixture as plain data: ``weights`` (K,), ``means`` (K, d), ``covariances`` (K, d, d).

    Picklable and device-free, so it travels in a
    :class:`~skflowsearch._training.TrainingConfig` to joblib workers.
    ``covariance_type`` is how it was fitted (the covariances are stored full).
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    covariance_type: str = "full"

    @property
    def n_components(self):
        return self.weights.shape[0]

    def mapped(self, matrix, shift):
        """The same mixture after ``z -> z @ matrix + shift`` (the density of the image, exactly)."""
        return Mixture(self.weights, self.means @ matrix + shift,
                       np.swapaxes(matrix, 0, 1) @ self.covariances @ matrix, self.covariance_type)

    def log_prob(self, Z):
        """Log-density of rows ``Z`` (numpy, float64)."""
        with torch.no_grad():
            return GaussianMixtureBase(self).double().log_prob(torch.from_numpy(np.ascontiguousarray(Z))).numpy()


class GaussianMixtureBase(nn.Module):
    """A mixture of ``K`` full-covariance Gaussians (from a :class:`Mixture`).

    The tensors are buffers: the base is fixed while the flow trains (all
    members of a stack share it, and no gradient mixes them).
    """

    def __init__(self, mixture):
        super().__init__()
        self._mixture = mixture
        for name, value in self._exact_buffers().items():
            self.register_buffer(name, value.to(torch.get_default_dtype()))

    def _exact_buffers(self):
        """The buffers in float64, from the mixture's own arrays."""
        covariances = np.asarray(self._mixture.covariances, dtype=np.float64)
        scale_tril = np.linalg.cholesky(covariances)
        eye = np.broadcast_to(np.eye(covariances.shape[-1]), covariances.shape)
        # (z - mean) @ precision_factor are the component's standard normal coordinates.
        precision_factor = np.swapaxes(np.linalg.solve(scale_tril, eye), -1, -2)
        means = np.asarray(self._mixture.means, dtype=np.float64)
        arrays = {
            "log_weights": np.log(self._mixture.weights),
            "means": means,
            "scale_tril": scale_tril,
            "precision_factor": precision_factor,
            "shifted_means": np.einsum("kd,kde->ke", means, precision_factor),
            "log_norm": -np.log(np.diagonal(scale_tril, axis1=-2, axis2=-1)).sum(-1),
        }
        return {name: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)) for name, a in arrays.items()}

    def _apply(self, fn, *args, **kwargs):
        # Trained in float32, stored in float64: a conversion to float64 takes
        # the exact values again, so the stored base is the fitted mixture.
        super()._apply(fn, *args, **kwargs)
        if self.means.dtype == torch.float64:
            for name, value in self._exact_buffers().items():
                setattr(self, name, value.to(self.means.device))
        return self

    @property
    def covariance_type(self):
        return self._mixture.covariance_type

    @property
    def n_components(self):
        return self._mixture.n_components

    def mixture(self):
        """The :class:`Mixture` this base holds."""
        return self._mixture

    def _standardized(self, z):
        """Every component's standard normal coordinates of ``z``, shape (..., K, d)."""
        return torch.einsum("...d,kde->...ke", z, self.precision_factor) - self.shifted_means

    def log_prob(self, z):
        e = self._standardized(z)
        per_component = self.log_weights + self.log_norm - 0.5 * (e * e).sum(-1)
        return torch.logsumexp(per_component, dim=-1) - 0.5 * z.shape[-1] * _LOG_2PI

    def sample(self, shape, generator, dtype):
        """A component per draw, then its Gaussian: ``mean + scale_tril @ noise``."""
        *batch, n_features = shape
        n = math.prod(batch)
        weights = torch.from_numpy(np.asarray(self._mixture.weights, dtype=np.float64))
        components = torch.multinomial(weights, n, replacement=True, generator=generator)
        noise = torch.randn((n, n_features), generator=generator, dtype=torch.float64)
        means, scale_tril = (torch.from_numpy(self._exact(name)) for name in ("means", "scale_tril"))
        draws = torch.empty((n, n_features), dtype=torch.float64)
        for k in range(self.n_components):  # per component: no (n, d, d) gather
            drawn = components == k
            draws[drawn] = means[k] + noise[drawn] @ scale_tril[k].T
        return draws.to(dtype).reshape(shape)

    def _exact(self, name):
        """A buffer's float64 value, as a numpy array, from the mixture itself."""
        return self._exact_buffers()[name].numpy()

    # --- the Rosenblatt transform ---------------------------------------------------

    def _conditional_terms(self, Z):
        """Component coordinates ``e`` (n, K, d) and log-weights of each column given the previous ones.

        Under component ``k`` the column ``j`` given columns ``< j`` is normal
        with standardized value ``e[:, k, j]``; the mixture's conditional is
        the mixture of those with weights proportional to ``pi_k`` times the
        density of columns ``< j`` under ``k``.
        """
        with torch.no_grad():
            e = self._standardized(torch.from_numpy(np.ascontiguousarray(Z)).to(self.means)).cpu().double().numpy()
        return e, self._prefix_log_weights(e)

    def _prefix_log_weights(self, e):
        log_diag = np.log(np.diagonal(self._exact("scale_tril"), axis1=-2, axis2=-1))
        per_column = -0.5 * e * e - 0.5 * _LOG_2PI - log_diag  # (n, K, d)
        prefix = np.cumsum(per_column, axis=-1) - per_column  # columns < j
        log_weights = self._exact("log_weights")[:, None] + prefix
        return log_weights - _logsumexp(log_weights, axis=1)[:, None]

    def to_normal(self, Z):
        """The Rosenblatt transform: column ``j`` through its distribution function given columns ``< j``.

        A bijection of the mixture onto the standard normal; each column's
        probability and its complement are kept in log space, so that rows
        far in either tail map to finite normal values. Rows go in chunks:
        the work arrays are (rows, components, features).
        """
        return _in_row_chunks(self._to_normal, Z)

    def from_normal(self, U):
        """The inverse of :meth:`to_normal`, column by column by bisection."""
        return _in_row_chunks(self._from_normal, np.asarray(U, dtype=np.float64))

    def _to_normal(self, Z):
        e, log_weights = self._conditional_terms(Z)
        return _normal_quantile(_logsumexp(log_weights + log_ndtr(e), axis=1),
                                _logsumexp(log_weights + log_ndtr(-e), axis=1))

    def _from_normal(self, U):
        means, scale_tril, log_pi = (self._exact(name) for name in ("means", "scale_tril", "log_weights"))
        n, d = U.shape
        e = np.zeros((n, means.shape[0], d))
        Z = np.empty((n, d))
        log_diag = np.log(np.diagonal(scale_tril, axis1=-2, axis2=-1))
        prefix = np.broadcast_to(log_pi, (n, log_pi.shape[0])).copy()
        log_lower, log_upper = log_ndtr(U), log_ndtr(-U)
        for j in range(d):
            log_weights = prefix - _logsumexp(prefix, axis=1)[:, None]
            # Under component k, column j is normal with this mean and sd.
            centre = means[:, j] + np.einsum("nki,ki->nk", e[:, :, :j], scale_tril[:, j, :j])
            sd = scale_tril[:, j, j]
            # The root lies between the components' quantiles of the same level.
            quantiles = centre + sd * U[:, j, None]
            low, high = quantiles.min(axis=1), quantiles.max(axis=1)
            lower_tail = U[:, j] <= 0
            for _ in range(_BISECTION_STEPS):
                middle = 0.5 * (low + high)
                standardized = (middle[:, None] - centre) / sd
                # Compare in the tail the level lies in: F(middle) < level?
                below = np.where(
                    lower_tail,
                    _logsumexp(log_weights + log_ndtr(standardized), axis=1) < log_lower[:, j],
                    _logsumexp(log_weights + log_ndtr(-standardized), axis=1) > log_upper[:, j],
                )
                low, high = np.where(below, middle, low), np.where(below, high, middle)
            Z[:, j] = 0.5 * (low + high)
            e[:, :, j] = (Z[:, j, None] - centre) / sd
            prefix = prefix - 0.5 * e[:, :, j] ** 2 - 0.5 * _LOG_2PI - log_diag[:, j]
        return Z

    def extra_repr(self):
        return f"n_components={self.n_components}, covariance_type={self.covariance_type!r}"


def _in_row_chunks(function, X):
    """``function`` on chunks of ``_ROW_CHUNK`` rows of ``X``, stacked."""
    if X.shape[0] <= _ROW_CHUNK:
        return function(X)
    return np.concatenate([function(X[i : i + _ROW_CHUNK]) for i in range(0, X.shape[0], _ROW_CHUNK)])


def make_base(df=math.inf, mixture=None):
    """The base module: the mixture when given, else the product of ``df``."""
    return ProductBase(df) if mixture is None else GaussianMixtureBase(mixture)


def fit_mixture(Z, n_components, covariance_type, reg_covar, seed, n_init=1):
    """A :class:`Mixture` fitted on rows ``Z`` by EM (scikit-learn's ``GaussianMixture``).

    Of ``n_init`` initializations, the one with the best likelihood bound on ``Z`` is kept.

    Returns None when it cannot be fitted (more components than rows, or a
    numerically singular covariance).
    """
    if n_components > Z.shape[0]:
        return None
    model = GaussianMixture(n_components=n_components, covariance_type=covariance_type, reg_covar=reg_covar,
                            n_init=n_init, random_state=seed % 2**32)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(Z)
    except (ValueError, np.linalg.LinAlgError):
        return None
    covariances = _full_covariances(model, Z.shape[1])
    if not np.all(np.linalg.eigvalsh(covariances) > 0):
        return None
    return Mixture(model.weights_.copy(), model.means_.copy(), covariances, covariance_type)


def _full_covariances(model, n_features):
    """``GaussianMixture.covariances_`` as (K, d, d), whatever its ``covariance_type``."""
    covariances, k = model.covariances_, model.n_components
    if model.covariance_type == "full":
        return covariances.copy()
    if model.covariance_type == "tied":
        return np.broadcast_to(covariances, (k, n_features, n_features)).copy()
    if model.covariance_type == "diag":
        return covariances[:, :, None] * np.eye(n_features)
    return covariances[:, None, None] * np.eye(n_features)  # spherical


def _logsumexp(a, axis):
    peak = np.max(a, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(peak, axis=axis) + np.log(np.sum(np.exp(a - peak), axis=axis))


def _normal_quantile(log_lower, log_upper):
    """The standard normal quantile of a level given by its log and its complement's log."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(log_lower < log_upper, ndtri_exp(log_lower), -ndtri_exp(log_upper))
