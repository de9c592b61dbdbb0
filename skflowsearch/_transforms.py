"""Pure invertible maps of a masked affine coupling flow.

Functions here hold no parameters and no state: they take tensors (with any
leading batch dimensions that broadcast) and return tensors plus the
log-absolute-determinant of the Jacobian, per row. The networks that produce
the scale and shift live in :mod:`skflowsearch._nn`.
"""

import torch


def soft_clamp(raw, bound):
    """Squash ``raw`` smoothly into ``(-bound, bound)``.

    ``bound * tanh(raw / bound)`` is the identity near zero and keeps the
    log-scale of a coupling layer bounded, so one step cannot make it explode.
    """
    return bound * torch.tanh(raw / bound)


def affine_coupling_forward(x, mask, log_scale, shift):
    """Apply ``y = m*x + (1-m)*(x*exp(s) + t)``.

    Parameters
    ----------
    x : Tensor of shape (..., n_features)
    mask : Tensor broadcastable to ``x``, 1.0 for conditioning features.
    log_scale, shift : Tensor broadcastable to ``x``
        Outputs of the conditioner; only their transformed entries matter.

    Returns
    -------
    y : Tensor, same shape as ``x``.
    log_det : Tensor of shape ``x.shape[:-1]``.
    """
    free = 1.0 - mask
    log_scale = log_scale * free
    y = x * torch.exp(log_scale) + shift * free
    return y, log_scale.sum(-1)


def affine_coupling_inverse(y, mask, log_scale, shift):
    """Invert :func:`affine_coupling_forward`; returns ``(x, log_det)``.

    ``log_det`` is that of the inverse map (the negated forward one). The
    conditioner must have been evaluated on ``y * mask``, which equals
    ``x * mask`` because conditioning features pass through unchanged.
    """
    free = 1.0 - mask
    log_scale = log_scale * free
    x = (y - shift * free) * torch.exp(-log_scale)
    return x, -log_scale.sum(-1)


def actnorm_forward(x, log_scale, bias):
    """Per-feature affine map ``y = x * exp(log_scale) + bias``."""
    y = x * torch.exp(log_scale) + bias
    return y, log_scale.sum(-1).expand(x.shape[:-1])


def actnorm_inverse(y, log_scale, bias):
    """Invert :func:`actnorm_forward`; returns ``(x, log_det)``."""
    x = (y - bias) * torch.exp(-log_scale)
    return x, (-log_scale.sum(-1)).expand(y.shape[:-1])


def standard_normal_log_prob(z):
    """Log-density of a standard normal, summed over the last dimension."""
    n_features = z.shape[-1]
    return -0.5 * (z * z).sum(-1) - 0.5 * n_features * torch.log(
        torch.tensor(2.0 * torch.pi, dtype=z.dtype, device=z.device)
    )
