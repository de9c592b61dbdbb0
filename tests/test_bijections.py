"""Property tests of the elementwise bijections a coupling layer is handed."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from skflowsearch import CouplingFlow
from skflowsearch._bijections import BIJECTIONS, Affine, RationalQuadraticSpline, make_bijection

fast = settings(max_examples=60, deadline=None)
seeds = st.integers(0, 2**31 - 1)
SPLINE = RationalQuadraticSpline(n_bins=5, tail_bound=3.0)
ALL = [Affine(), SPLINE]


def random_params(bijection, shape, seed, scale):
    """Parameters of shape ``shape[:-1] + (n_params, shape[-1])``, normal with std ``scale``."""
    generator = torch.Generator().manual_seed(seed)
    size = (*shape[:-1], bijection.n_params, shape[-1])
    return scale * torch.randn(size, generator=generator, dtype=torch.float64)


def spline_knots(spline, params):
    """The input and output knots of every element, shape (..., n_features, n_bins + 1)."""
    theta = params.movedim(-2, -1)
    K = spline.n_bins
    return (spline._knots(theta[..., :K], spline.min_bin_width, spline.tail_bound),
            spline._knots(theta[..., K : 2 * K], spline.min_bin_height, spline.tail_bound))


def points(spline, params, seed):
    """Inside the interval, on every knot, on its ends, and in both tails."""
    x_knots, _ = spline_knots(spline, params)
    n_rows = params.shape[0]
    generator = torch.Generator().manual_seed(seed)
    bound = spline.tail_bound
    inside = (2 * torch.rand((n_rows, params.shape[-1]), generator=generator, dtype=torch.float64) - 1) * bound
    # Row r sits on knot r % (n_bins + 1) of its own spline.
    on_knots = x_knots[torch.arange(n_rows), :, torch.arange(n_rows) % (spline.n_bins + 1)]
    tails = torch.tensor([bound * 1.5, -bound * 40.0], dtype=torch.float64)
    tails = tails[torch.arange(n_rows) % 2].unsqueeze(-1).expand(n_rows, params.shape[-1])
    return torch.cat([inside, on_knots, tails]), torch.cat([params] * 3)


@pytest.mark.parametrize("bijection", ALL, ids=["affine", "spline"])
def test_zero_parameters_are_the_identity(bijection):
    x = torch.linspace(-10, 10, 401, dtype=torch.float64).view(-1, 1).expand(-1, 3)
    params = torch.zeros(x.shape[0], bijection.n_params, 3, dtype=torch.float64)
    for direction in (bijection.forward, bijection.inverse):
        y, log_det = direction(x, params)
        torch.testing.assert_close(y, x, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(log_det, torch.zeros_like(x), rtol=0, atol=1e-14)


@fast
@given(seeds, st.floats(0.1, 3.0), st.integers(1, 4))
def test_spline_inverse_of_forward_everywhere(seed, scale, n_features):
    params = random_params(SPLINE, (12, n_features), seed, scale)
    x, params = points(SPLINE, params, seed)
    y, log_det = SPLINE.forward(x, params)
    x_back, inverse_log_det = SPLINE.inverse(y, params)
    torch.testing.assert_close(x_back, x, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=1e-5, atol=1e-8)
    # and the other way round, from points of the output side
    y2 = (2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 1) * 3.5
    forward_again, _ = SPLINE.forward(SPLINE.inverse(y2, params)[0], params)
    torch.testing.assert_close(forward_again, y2, rtol=1e-5, atol=1e-8)


@fast
@given(seeds, st.floats(0.1, 3.0))
def test_spline_knots_map_to_knots_and_the_ends_are_fixed(seed, scale):
    params = random_params(SPLINE, (6, 2), seed, scale)
    x_knots, y_knots = spline_knots(SPLINE, params)
    for k in range(SPLINE.n_bins + 1):
        y, _ = SPLINE.forward(x_knots[..., k], params)
        torch.testing.assert_close(y, y_knots[..., k], rtol=1e-10, atol=1e-10)
    assert torch.all(x_knots[..., 0] == -3.0) and torch.all(x_knots[..., -1] == 3.0)
    assert torch.all(torch.diff(x_knots, dim=-1) > 0) and torch.all(torch.diff(y_knots, dim=-1) > 0)


@fast
@given(seeds, st.floats(0.1, 3.0), st.sampled_from(ALL))
def test_log_det_is_the_log_derivative_from_autograd(seed, scale, bijection):
    # The spline's test points (tails, knots, inside), with the bijection's own parameters.
    x, _ = points(SPLINE, random_params(SPLINE, (4, 3), seed, scale), seed)
    params = random_params(bijection, tuple(x.shape), seed + 1, scale)
    _, log_det = bijection.forward(x, params)
    for row in range(x.shape[0]):
        jacobian = torch.autograd.functional.jacobian(lambda v: bijection.forward(v, params[row])[0], x[row])
        # Elementwise: the Jacobian is diagonal.
        torch.testing.assert_close(jacobian, torch.diag(torch.diagonal(jacobian)), rtol=0, atol=0)
        torch.testing.assert_close(log_det[row], torch.log(torch.diagonal(jacobian)), rtol=1e-7, atol=1e-9)


@fast
@given(seeds, st.floats(0.1, 5.0), st.sampled_from(ALL))
def test_monotone_increasing_in_each_feature(seed, scale, bijection):
    x = torch.linspace(-12, 12, 2001, dtype=torch.float64).view(-1, 1).expand(-1, 2)
    params = random_params(bijection, (1, 2), seed, scale).expand(x.shape[0], -1, -1)
    y, log_det = bijection.forward(x, params)
    assert torch.all(torch.diff(y, dim=0) > 0)
    assert torch.all(torch.isfinite(log_det))


def test_spline_is_the_identity_in_the_tails_and_continuous_at_the_ends():
    params = random_params(SPLINE, (1, 1), 3, 2.0)
    x = torch.tensor([[-100.0], [-3.0 - 1e-9], [-3.0], [3.0], [3.0 + 1e-9], [100.0]], dtype=torch.float64)
    y, log_det = SPLINE.forward(x, params.expand(x.shape[0], -1, -1))
    torch.testing.assert_close(y, x, rtol=0, atol=1e-8)
    # the derivative is 1 at both ends, so the log-derivative is 0 on either side of them
    torch.testing.assert_close(log_det, torch.zeros_like(x), rtol=0, atol=1e-6)


def test_make_bijection_takes_the_options_that_are_its_fields():
    assert set(BIJECTIONS) == {"affine", "spline"}
    options = dict(n_bins=4, tail_bound=2.0, max_log_scale=1.5, learning_rate=0.1)
    assert make_bijection("spline", **options) == RationalQuadraticSpline(n_bins=4, tail_bound=2.0)
    assert make_bijection("affine", **options) == Affine(max_log_scale=1.5)
    assert RationalQuadraticSpline(n_bins=4).n_params == 11 and Affine().n_params == 2


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_two_dimensional_spline_flow_density_integrates_to_one():
    rng = np.random.RandomState(0)
    angle = rng.uniform(0, np.pi, 600)
    X = np.c_[np.cos(angle), np.sin(angle)] + 0.15 * rng.normal(size=(600, 2))
    flow = CouplingFlow(coupling="spline", n_layers=4, hidden_layer_sizes=(16,), max_epochs=30,
                        n_iter_no_change=30, base_distribution="normal", random_state=0).fit(X)
    assert flow.best_epoch_ > 0  # trained away from the Gaussian start
    grid = np.linspace(-4, 4, 401)
    xx, yy = np.meshgrid(grid, grid)
    density = np.exp(flow.score_samples(np.c_[xx.ravel(), yy.ravel()]))
    total = density.sum() * (grid[1] - grid[0]) ** 2
    assert total == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("bijection", ALL, ids=["affine", "spline"])
def test_exact_at_zero_is_what_the_bijection_does(bijection):
    # Where a bijection claims an exact identity at zero, the coupling layer
    # relies on it to pass the conditioning features through.
    x = torch.randn(500, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    params = torch.zeros(500, bijection.n_params, 4, dtype=torch.float64)
    for direction in (bijection.forward, bijection.inverse):
        y, log_det = direction(x, params)
        exact = bool(torch.equal(y, x) and torch.all(log_det == 0))
        if bijection.exact_at_zero:
            assert exact
