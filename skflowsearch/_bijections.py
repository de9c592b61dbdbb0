"""Elementwise bijections a coupling layer is handed.

A coupling layer's conditioner outputs, for every transformed feature of a
row, ``n_params`` numbers; the bijection turns them into a monotone map of
that feature. Bijections hold hyper-parameters only (no learned state), so
they are frozen dataclasses that pickle with the flow.

Each one implements:

``n_params``
    Numbers per transformed feature that the conditioner outputs.
``forward(x, params)`` and ``inverse(y, params)``
    ``x`` of shape ``(..., n_features)``, ``params`` of shape
    ``(..., n_params, n_features)``; they return the mapped tensor and the
    elementwise log-derivative, both of ``x``'s shape (the inverse returns
    the log-derivative of the inverse map).

``exact_at_zero``
    Whether zero parameters give the identity exactly, not only up to
    rounding; where not, the coupling layer passes its conditioning
    features through itself (``torch.where``, a few percent of a step).

All parameters zero must give the identity map (up to rounding), so that an
untrained flow, whose conditioners' output layers start at zero, is exactly
its base distribution. A third bijection is one more class here and one more
entry in :data:`BIJECTIONS`.
"""

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ._transforms import affine_forward, affine_inverse, soft_clamp


@dataclass(frozen=True)
class Affine:
    """``y = x exp(s) + t`` (RealNVP), with the log-scale ``s`` soft-clamped.

    Parameters
    ----------
    max_log_scale : float, default=3.0
        Bound of the soft clamp ``s = b tanh(raw / b)``.
    """

    max_log_scale: float = 3.0

    n_params = 2
    exact_at_zero = True  # x exp(0) + 0 is x, and the log-scale 0

    def _split(self, params):
        return soft_clamp(params[..., 0, :], self.max_log_scale), params[..., 1, :]

    def forward(self, x, params):
        log_scale, shift = self._split(params)
        return affine_forward(x, log_scale, shift)[0], log_scale

    def inverse(self, y, params):
        log_scale, shift = self._split(params)
        return affine_inverse(y, log_scale, shift)[0], -log_scale


@dataclass(frozen=True)
class RationalQuadraticSpline:
    """Monotone rational-quadratic spline on ``[-tail_bound, tail_bound]`` (Durkan et al., 2019).

    The interval is cut into ``n_bins`` bins of learned widths and heights,
    with learned positive derivatives at the inner knots; the derivative is 1
    at the two outer knots and the map is the identity outside the interval
    (linear tails), so the tails of the base are kept. The inverse solves the
    quadratic of each bin through its numerically stable root.

    Parameters
    ----------
    n_bins : int, default=8
    tail_bound : float, default=5.0
    min_bin_width, min_bin_height, min_derivative : float, default=1e-3
        Floors that keep every bin and slope away from zero.

    Notes
    -----
    Zero parameters give equal bins and unit derivatives: the identity.
    """

    n_bins: int = 8
    tail_bound: float = 5.0
    min_bin_width: float = 1e-3
    min_bin_height: float = 1e-3
    min_derivative: float = 1e-3

    exact_at_zero = False  # the knots of equal bins are sums, rounded

    @property
    def n_params(self):
        return 3 * self.n_bins - 1

    def forward(self, x, params):
        inside, z, knots = self._bins(x, params, inverse=False)
        x_k, w, y_k, h, d0, d1 = knots
        xi = (z - x_k) / w
        s = h / w
        xi1 = xi * (1.0 - xi)
        denominator = s + (d0 + d1 - 2.0 * s) * xi1
        y = y_k + h * (s * xi * xi + d0 * xi1) / denominator
        log_det = self._log_derivative(xi, xi1, s, d0, d1, denominator)
        return torch.where(inside, y, x), torch.where(inside, log_det, torch.zeros_like(log_det))

    def inverse(self, y, params):
        inside, z, knots = self._bins(y, params, inverse=True)
        x_k, w, y_k, h, d0, d1 = knots
        s = h / w
        dy = z - y_k
        curvature = d0 + d1 - 2.0 * s
        a = dy * curvature + h * (s - d0)
        b = h * d0 - dy * curvature
        c = -s * dy
        discriminant = (b * b - 4.0 * a * c).clamp(min=0.0)
        # The root in [0, 1] written without a cancelling subtraction.
        xi = (2.0 * c) / (-b - torch.sqrt(discriminant))
        xi = xi.clamp(0.0, 1.0)
        x = x_k + xi * w
        xi1 = xi * (1.0 - xi)
        denominator = s + curvature * xi1
        log_det = -self._log_derivative(xi, xi1, s, d0, d1, denominator)
        return torch.where(inside, x, y), torch.where(inside, log_det, torch.zeros_like(log_det))

    @staticmethod
    def _log_derivative(xi, xi1, s, d0, d1, denominator):
        one = 1.0 - xi
        numerator = s * s * (d1 * xi * xi + 2.0 * s * xi1 + d0 * one * one)
        return torch.log(numerator) - 2.0 * torch.log(denominator)

    def _bins(self, v, params, *, inverse):
        """Rows inside the interval, ``v`` clamped into it, and each element's bin.

        The bin is searched among the input knots (forward) or the output
        knots (inverse); returns ``(x_k, width, y_k, height, d_k, d_k+1)``.
        """
        bound, K = float(self.tail_bound), int(self.n_bins)
        inside = (v >= -bound) & (v <= bound)
        z = v.clamp(-bound, bound)
        theta = params.movedim(-2, -1)  # (..., n_features, n_params)
        x_knots = self._knots(theta[..., :K], self.min_bin_width, bound)
        y_knots = self._knots(theta[..., K : 2 * K], self.min_bin_height, bound)
        # Inner derivatives; softplus(raw + c) with softplus(c) = 1 - floor, so raw = 0 gives 1.
        shift = math.log(math.expm1(1.0 - self.min_derivative))
        inner = self.min_derivative + F.softplus(theta[..., 2 * K :] + shift)
        edge = torch.ones_like(inner[..., :1])
        derivatives = torch.cat([edge, inner, edge], dim=-1)
        search = y_knots if inverse else x_knots
        lower = (z.unsqueeze(-1) >= search[..., 1:-1]).sum(-1, keepdim=True)
        upper = lower + 1
        x_k, x_next = _take(x_knots, lower), _take(x_knots, upper)
        y_k, y_next = _take(y_knots, lower), _take(y_knots, upper)
        return inside, z, (x_k, x_next - x_k, y_k, y_next - y_k,
                           _take(derivatives, lower), _take(derivatives, upper))

    @staticmethod
    def _knots(raw, floor, bound):
        """``n_bins + 1`` increasing knots from ``-bound`` to ``bound``; equal bins for raw = 0."""
        K = raw.shape[-1]
        widths = floor + (1.0 - floor * K) * torch.softmax(raw, dim=-1)
        # The ends are set, not summed: exactly -bound and bound whatever the rounding.
        inner = torch.cumsum(widths[..., :-1], dim=-1)
        return 2.0 * bound * F.pad(F.pad(inner, (1, 0), value=0.0), (0, 1), value=1.0) - bound


def _take(values, index):
    """``values[..., index]`` per element, for an index tensor of shape (..., 1)."""
    return values.gather(-1, index).squeeze(-1)


BIJECTIONS = {"affine": Affine, "spline": RationalQuadraticSpline}


def make_bijection(name, **options):
    """The bijection ``name`` of :data:`BIJECTIONS`, taking the options that are its fields.

    Options it has no field for are ignored, so an estimator can hand all of
    its parameters.
    """
    cls = BIJECTIONS[name]
    fields = cls.__dataclass_fields__
    return cls(**{key: value for key, value in options.items() if key in fields})
