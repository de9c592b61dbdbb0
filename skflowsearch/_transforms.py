"""Pure invertible maps of a masked affine coupling flow, and its base distribution.

Functions here hold no parameters and no state: they take tensors (with any
leading batch dimensions that broadcast) and return tensors plus the
log-absolute-determinant of the Jacobian, per row. The networks that produce
the scale and shift live in :mod:`skflowsearch._nn`.
"""

import functools
import math

import torch
from scipy.special import ndtri, stdtrit


def soft_clamp(raw, bound):
    """Squash ``raw`` smoothly into ``(-bound, bound)``.

    ``bound * tanh(raw / bound)`` is the identity near zero and keeps the
    log-scale of a coupling layer bounded, so one step cannot make it explode.
    """
    return bound * torch.tanh(raw / bound)


def affine_forward(x, log_scale, shift):
    """Elementwise affine map ``y = x * exp(log_scale) + shift``.

    Both layers of the flow are this map. In ActNorm, ``log_scale`` and
    ``shift`` are per-feature parameters broadcast over the rows; in a
    coupling layer, they are computed per row from the conditioning features
    and are exactly zero on those features, which therefore pass through
    unchanged (``exp(0) = 1``).

    Parameters
    ----------
    x : Tensor of shape (..., n_features)
    log_scale, shift : Tensor broadcastable to ``x``

    Returns
    -------
    y : Tensor, same shape as ``x``.
    log_det : Tensor of shape ``x.shape[:-1]``.
    """
    y = torch.addcmul(shift, x, torch.exp(log_scale))
    return y, log_scale.sum(-1).expand(y.shape[:-1])


def affine_inverse(y, log_scale, shift):
    """Invert :func:`affine_forward`; returns ``(x, log_det)``.

    ``log_det`` is that of the inverse map (the negated forward one). In a
    coupling layer the conditioner must have been evaluated on the
    conditioning features of ``y``, which equal those of ``x``.
    """
    x = (y - shift) * torch.exp(-log_scale)
    return x, (-log_scale.sum(-1)).expand(x.shape[:-1])


_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z):
    """Log-density of a standard normal, summed over the last dimension.

    The constant is a Python float: no tensor is created on the device (on a
    GPU that would be a host-to-device copy every call).
    """
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * _LOG_2PI


@functools.lru_cache(maxsize=None)
def student_t_scale(df):
    """Scale that gives a Student t of ``df`` degrees of freedom the quartiles of a standard normal.

    A start with a heavy-tailed base then agrees with the Gaussian one in the
    bulk of the data (the rows within the quartiles) and differs in the tails.
    """
    if math.isinf(df):
        return 1.0
    return float(ndtri(0.75) / stdtrit(df, 0.75))


def base_log_prob(z, df):
    """Log-density of the flow's base, summed over the last dimension.

    ``df = inf`` is the standard normal; a finite ``df`` is a product of
    independent Student t distributions with ``df`` degrees of freedom, scaled
    by :func:`student_t_scale`. Every constant is a Python float.
    """
    if math.isinf(df):
        return standard_normal_log_prob(z)
    inverse_width, constant = _student_t_constants(df)
    return -0.5 * (df + 1.0) * torch.log1p(z.square() * inverse_width).sum(-1) + z.shape[-1] * constant


@functools.lru_cache(maxsize=None)
def _student_t_constants(df):
    """``1 / (df scale^2)`` and the log-normalizer of one scaled t feature."""
    scale = student_t_scale(df)
    constant = (
        math.lgamma(0.5 * (df + 1.0)) - math.lgamma(0.5 * df)
        - 0.5 * math.log(df * math.pi) - math.log(scale)
    )
    return 1.0 / (df * scale * scale), constant


def base_sample(shape, df, generator, dtype):
    """Draws from the base of :func:`base_log_prob`, on the CPU from ``generator``.

    A Student t is ``N / sqrt(V / df)`` with ``V`` chi-squared of ``df``
    degrees of freedom, drawn as ``-2 sum log U`` over ``df / 2`` uniforms;
    ``df = 1`` is the Cauchy ``tan(pi (U - 1/2))``. Finite ``df`` must be 1 or
    even (the values the estimators choose among).
    """
    if math.isinf(df):
        return torch.randn(shape, generator=generator, dtype=dtype)
    if df == 1:
        t = torch.tan(math.pi * (torch.rand(shape, generator=generator, dtype=dtype) - 0.5))
    else:
        if df % 2:
            raise ValueError(f"base_sample draws Student t with df = 1 or even; got {df}.")
        normal = torch.randn(shape, generator=generator, dtype=dtype)
        chi2 = torch.zeros(shape, dtype=dtype)
        for _ in range(int(df) // 2):
            # U = 0 gives V = inf and t = 0: every draw is finite.
            chi2 -= 2.0 * torch.log(torch.rand(shape, generator=generator, dtype=dtype))
        t = normal / torch.sqrt(chi2 / df)
    return student_t_scale(df) * t
