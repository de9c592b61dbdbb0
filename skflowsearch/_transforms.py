"""Pure invertible maps of a masked affine coupling flow.

Functions here hold no parameters and no state: they take tensors (with any
leading batch dimensions that broadcast) and return tensors plus the
log-absolute-determinant of the Jacobian, per row. The networks that produce
the scale and shift live in :mod:`skflowsearch._nn`.
"""

import math

import torch


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
