"""Property tests of the invertible maps and of the population-stacked flow.

Everything runs in float64 with all parameters (the zero-initialised output
layer and the ActNorm layers included) perturbed by seeded noise, so the flow
is far from the identity it starts as.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from skflowsearch._bijections import Affine, RationalQuadraticSpline
from skflowsearch._nn import CouplingFlowStack
from skflowsearch._transforms import (
    affine_forward,
    affine_inverse,
    base_log_prob,
    base_sample,
    soft_clamp,
    standard_normal_log_prob,
    student_t_scale,
)

fast = settings(max_examples=40, deadline=None)

seeds = st.integers(0, 2**31 - 1)
finite = st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False)
# Every stack test runs with both bijections; the spline's interval is
# narrower than the inputs' range, so its identity tails are exercised too.
bijections = st.sampled_from([Affine(), RationalQuadraticSpline(n_bins=4, tail_bound=3.0)])


def repair(masks):
    """Give every layer at least one True and one False (n_features >= 2)."""
    masks = np.array(masks, dtype=bool)
    empty = ~masks.any(axis=-1)
    masks[empty, 0] = True
    full = masks.all(axis=-1)
    masks[full, -1] = False
    return masks


@st.composite
def stacks(draw, max_members=3):
    """A perturbed float64 stack and an input batch for it."""
    n_members = draw(st.integers(1, max_members))
    n_layers = draw(st.integers(1, 4))
    n_features = draw(st.integers(2, 6))
    masks = repair(draw(hnp.arrays(np.bool_, (n_members, n_layers, n_features))))
    hidden = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=2)))
    member_seeds = draw(st.lists(seeds, min_size=n_members, max_size=n_members))
    actnorm = draw(st.booleans())
    module = make_stack(masks, hidden, member_seeds, actnorm, noise_seed=draw(seeds), bijection=draw(bijections))
    batch = draw(st.integers(1, 5))
    x = draw(hnp.arrays(np.float64, (batch, n_features), elements=finite))
    return module, torch.from_numpy(x)


def make_stack(masks, hidden, member_seeds, actnorm=True, noise_seed=0, scale=0.5, bijection=None):
    module = CouplingFlowStack(
        torch.as_tensor(masks), hidden, member_seeds, actnorm=actnorm, bijection=bijection
    ).double()
    perturb(module, noise_seed, scale)
    return module


@torch.no_grad()
def perturb(module, seed, scale=0.5):
    generator = torch.Generator().manual_seed(seed)
    for parameter in module.parameters():
        noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
        parameter.add_(scale * noise)


def test_perturb_makes_the_flow_nontrivial():
    torch.manual_seed(0)
    module = make_stack(repair(np.array([[[True, False, False]] * 2])), (4,), [0])
    x = torch.randn(7, 3, dtype=torch.float64)
    z, log_det = module(x)
    assert not torch.allclose(z[0], x)
    assert log_det.abs().min() > 1e-6
    # and the coupling itself moves the transformed features
    assert module.weights[-1].abs().min() > 0


# --- the whole stack ---------------------------------------------------------------


@fast
@given(stacks())
def test_inverse_of_forward_is_identity(case):
    module, x = case
    with torch.no_grad():
        z, _ = module(x)
        x_back, _ = module.inverse(z)
    assert z.shape == (module.n_members, *x.shape)
    expected = x.expand_as(x_back)
    torch.testing.assert_close(x_back, expected, rtol=1e-5, atol=1e-8)


@fast
@given(stacks())
def test_forward_of_inverse_is_identity(case):
    module, z = case
    with torch.no_grad():
        x, _ = module.inverse(z)
        z_back, _ = module(x)
    torch.testing.assert_close(z_back, z.expand_as(z_back), rtol=1e-5, atol=1e-8)


@fast
@given(stacks())
def test_inverse_log_det_is_negated_forward_log_det(case):
    module, x = case
    with torch.no_grad():
        z, forward_log_det = module(x)
        _, inverse_log_det = module.inverse(z)
    assert forward_log_det.shape == (module.n_members, x.shape[0])
    torch.testing.assert_close(inverse_log_det, -forward_log_det, rtol=1e-7, atol=1e-9)


@fast
@given(stacks())
def test_forward_log_det_is_log_abs_det_jacobian(case):
    module, x = case
    with torch.no_grad():
        _, log_det = module(x)
    for member in range(module.n_members):
        for row in range(x.shape[0]):

            def f(v, member=member):
                return module(v[None])[0][member, 0]

            jacobian = torch.autograd.functional.jacobian(f, x[row])
            _, expected = torch.linalg.slogdet(jacobian)
            torch.testing.assert_close(log_det[member, row], expected, rtol=1e-7, atol=1e-9)


@fast
@given(stacks())
def test_log_prob_is_base_log_prob_plus_log_det(case):
    module, x = case
    with torch.no_grad():
        z, log_det = module(x)
        expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) + log_det
        torch.testing.assert_close(module.log_prob(x), expected)


@fast
@given(stacks(), seeds)
def test_sample_is_inverse_of_base_noise(case, seed):
    module, _ = case
    with torch.no_grad():
        samples = module.sample(4, torch.Generator().manual_seed(seed))
        again = module.sample(4, torch.Generator().manual_seed(seed))
        z = torch.randn(
            module.n_members, 4, module.n_features,
            generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
        )
        expected, _ = module.inverse(z)
    assert samples.shape == (module.n_members, 4, module.n_features)
    assert samples.dtype == torch.float64
    torch.testing.assert_close(samples, again, rtol=0, atol=0)
    torch.testing.assert_close(samples, expected, rtol=0, atol=0)


@pytest.mark.parametrize("bijection", [Affine(), RationalQuadraticSpline()])
def test_conditioning_features_pass_through_each_coupling(bijection):
    # without ActNorm, a one-layer flow leaves its conditioning features untouched
    masks = np.array([[[True, False, True, False]]])
    module = make_stack(masks, (5,), [3], actnorm=False, bijection=bijection)
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z, _ = module(x)
    torch.testing.assert_close(z[0][:, masks[0, 0]], x[:, masks[0, 0]], rtol=0, atol=0)
    assert not torch.allclose(z[0][:, ~masks[0, 0]], x[:, ~masks[0, 0]])


def test_new_stack_is_the_identity():
    masks = repair(np.random.default_rng(0).random((2, 3, 4)) < 0.5)
    module = CouplingFlowStack(torch.as_tensor(masks), (8, 8), [1, 2], actnorm=False).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        z, log_det = module(x)
    torch.testing.assert_close(z, x.expand_as(z), rtol=0, atol=0)
    assert torch.all(log_det == 0)


def test_new_spline_stack_is_the_identity_up_to_rounding():
    masks = repair(np.random.default_rng(0).random((2, 3, 4)) < 0.5)
    module = CouplingFlowStack(torch.as_tensor(masks), (8, 8), [1, 2],
                               bijection=RationalQuadraticSpline()).double()
    # Inside the interval, on its ends, and in the tails.
    x = torch.cat([6 * torch.rand(200, 4, dtype=torch.float64) - 3,
                   torch.tensor([[5.0, -5.0, 7.0, -1e3]], dtype=torch.float64)])
    with torch.no_grad():
        z, log_det = module(x)
        x_back, inverse_log_det = module.inverse(z)
    torch.testing.assert_close(z, x.expand_as(z), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(log_det, torch.zeros_like(log_det), rtol=0, atol=1e-13)
    torch.testing.assert_close(x_back, x.expand_as(z), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(inverse_log_det, torch.zeros_like(log_det), rtol=0, atol=1e-13)


def test_seed_count_must_match_members():
    with pytest.raises(ValueError, match="one seed per member"):
        CouplingFlowStack(torch.ones(2, 1, 3, dtype=torch.bool), (4,), [0])


# --- members are independent -------------------------------------------------------


def single_member(module, masks, hidden, member, actnorm):
    alone = CouplingFlowStack(
        torch.as_tensor(masks[member : member + 1]), hidden, [12345], actnorm=actnorm,
        bijection=module.bijection,
    ).double()
    state = {
        name: tensor if tensor.dim() == 0 else tensor[member : member + 1]
        for name, tensor in module.state_dict().items()
    }
    alone.load_state_dict(state)
    return alone


@fast
@given(
    st.integers(1, 4), st.integers(2, 6), st.booleans(), seeds, seeds,
    hnp.arrays(np.float64, (4, 6), elements=finite), bijections,
)
def test_members_of_a_stack_are_independent(n_layers, n_features, actnorm, mask_seed, noise_seed, x, bijection):
    masks = repair(np.random.default_rng(mask_seed).random((3, n_layers, n_features)) < 0.5)
    hidden = (5, 3)
    module = make_stack(masks, hidden, [7, 8, 9], actnorm, noise_seed, bijection=bijection)
    x = torch.from_numpy(x[:, :n_features].copy())
    with torch.no_grad():
        z, log_det = module(x)
        x_back, inverse_log_det = module.inverse(x)
        log_prob = module.log_prob(x)
        for member in range(3):
            alone = single_member(module, masks, hidden, member, actnorm)
            z1, ld1 = alone(x)
            torch.testing.assert_close(z1[0], z[member], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(ld1[0], log_det[member], rtol=1e-12, atol=1e-12)
            xb1, ild1 = alone.inverse(x)
            torch.testing.assert_close(xb1[0], x_back[member], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(ild1[0], inverse_log_det[member], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(alone.log_prob(x)[0], log_prob[member], rtol=1e-12, atol=1e-12)


def test_member_state_matches_slices():
    masks = repair(np.random.default_rng(1).random((3, 2, 4)) < 0.5)
    module = make_stack(masks, (4,), [1, 2, 3], noise_seed=5)
    state = module.member_state(torch.tensor([2]))
    alone = CouplingFlowStack(torch.as_tensor(masks[2:]), (4,), [0]).double()
    alone.load_state_dict(state)
    x = torch.randn(3, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(alone.log_prob(x)[0], module.log_prob(x)[2], rtol=1e-12, atol=0)


@pytest.mark.parametrize("df", [math.inf, 1.0, 4.0])
def test_an_untrained_stack_is_its_base_distribution(df):
    # Every coupling and ActNorm starts as the identity: the estimators' start
    # (normalizer and base) is exactly the untrained flow.
    masks = repair(np.random.default_rng(2).random((3, 3, 4)) < 0.5)
    x = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    module = CouplingFlowStack(torch.as_tensor(masks), (4,), [1, 2, 3], base_df=df).double()
    z, log_det = module(x)
    torch.testing.assert_close(z, x.expand(3, -1, -1), rtol=0, atol=0)
    torch.testing.assert_close(module.log_prob(x), base_log_prob(x, df).expand(3, -1), rtol=0, atol=0)


@settings(max_examples=15, deadline=None)
@given(st.lists(seeds, min_size=3, max_size=3, unique=True), st.integers(0, 2))
def test_member_init_depends_only_on_its_seed(member_seeds, position):
    rng = np.random.default_rng(member_seeds[0])
    masks3 = repair(rng.random((3, 2, 5)) < 0.5)
    masks1 = repair(rng.random((1, 2, 5)) < 0.5)  # masks do not matter
    hidden = (6, 4)
    stack3 = CouplingFlowStack(torch.as_tensor(masks3), hidden, member_seeds)
    stack1 = CouplingFlowStack(torch.as_tensor(masks1), hidden, [member_seeds[position]])
    for p3, p1 in zip(stack3.parameters(), stack1.parameters()):
        assert torch.equal(p3[position], p1[0])
    # distinct seeds give distinct hidden weights
    others = [i for i in range(3) if i != position]
    for i in others:
        assert not torch.equal(stack3.weights[0][i], stack3.weights[0][position])
    # the output layer starts at zero (identity coupling)
    assert torch.all(stack3.weights[-1] == 0) and torch.all(stack3.biases[-1] == 0)


# --- the pure functions --------------------------------------------------------------


vectors = st.integers(1, 6).flatmap(
    lambda n: st.tuples(
        *(hnp.arrays(np.float64, (3, n), elements=finite) for _ in range(3)),
        hnp.arrays(np.bool_, (n,)),
    )
)


@fast
@given(vectors)
def test_affine_roundtrip_and_log_det(arrays):
    x, log_scale, shift, zero = (torch.from_numpy(a.copy()) for a in arrays)
    # a coupling's log-scale and shift are zero on its conditioning features
    log_scale[:, zero], shift[:, zero] = 0.0, 0.0
    y, log_det = affine_forward(x, log_scale, shift)
    torch.testing.assert_close(y[:, zero], x[:, zero], rtol=0, atol=0)
    torch.testing.assert_close(y, x * torch.exp(log_scale) + shift)
    torch.testing.assert_close(log_det, log_scale.sum(-1))
    x_back, inverse_log_det = affine_inverse(y, log_scale, shift)
    torch.testing.assert_close(x_back, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=0, atol=0)
    # the log-det is that of the Jacobian of the row map
    for row in range(x.shape[0]):
        jacobian = torch.autograd.functional.jacobian(
            lambda v: affine_forward(v, log_scale[row], shift[row])[0], x[row]
        )
        torch.testing.assert_close(log_det[row], torch.linalg.slogdet(jacobian)[1])


@fast
@given(vectors)
def test_affine_with_per_feature_parameters_broadcasts_over_rows(arrays):
    x, log_scale, bias, _ = (torch.from_numpy(a.copy()) for a in arrays)
    log_scale, bias = log_scale[:1], bias[:1]  # one per feature (ActNorm)
    y, log_det = affine_forward(x, log_scale, bias)
    torch.testing.assert_close(y, x * torch.exp(log_scale) + bias)
    assert log_det.shape == (x.shape[0],)
    torch.testing.assert_close(log_det, log_scale.sum().expand(x.shape[0]))
    x_back, inverse_log_det = affine_inverse(y, log_scale, bias)
    torch.testing.assert_close(x_back, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=0, atol=0)


def reference_conditioners(module, x):
    """Each layer's bijection parameters computed the plain way, on inputs ``x``.

    ``x`` is (n_members, batch, n_features), the same input for every layer:
    the MLP reads ``x * mask`` through tanh hidden layers, and its outputs,
    ``n_params`` per feature, are zeroed on the conditioning features.
    """
    out = []
    for layer in range(module.n_layers):
        mask = module.masks[:, layer].unsqueeze(1)
        h = x * mask
        for i, (weight, bias) in enumerate(zip(module.weights, module.biases)):
            h = torch.baddbmm(bias[:, layer], h, weight[:, layer])
            if i < len(module.weights) - 1:
                h = torch.tanh(h)
        params = h.unflatten(-1, (module.bijection.n_params, module.n_features))
        out.append(params * (1 - mask).unsqueeze(-2))
    return out


@fast
@given(stacks())
def test_conditioner_matches_the_plain_masked_tanh_mlp(case):
    # _per_layer folds the masks and tanh's affine parts into the parameters;
    # the conditioner must still be exactly the textbook one.
    module, x = case
    x = module._broadcast(x)
    with torch.no_grad():
        expected = reference_conditioners(module, x)
        for layer, (weights, biases, _, _) in enumerate(module._per_layer()):
            params = module._conditioner(x, weights, biases)
            torch.testing.assert_close(params, expected[layer], rtol=1e-10, atol=1e-12)
            # exactly zero on the conditioning features, which are the only ones read
            conditioning = module.masks[:, layer].bool()[:, None, None, :].expand_as(params)
            assert torch.all(params[conditioning] == 0)
            reads = module.masks[:, layer].bool().unsqueeze(1).expand_as(x)
            noise = torch.where(reads, torch.zeros_like(x), torch.randn_like(x))
            torch.testing.assert_close(module._conditioner(x + noise, weights, biases), params, rtol=0, atol=0)


@fast
@given(stacks())
def test_conditioner_gradients_match_the_plain_mlp(case):
    module, x = case
    x = module._broadcast(x).clone().requires_grad_(True)

    def gradients(compute):
        module.zero_grad()
        x.grad = None
        outputs = compute()
        weights = torch.linspace(-1.0, 1.0, outputs[0].numel(), dtype=x.dtype).view_as(outputs[0])
        total = sum((params * weights).sum() for params in outputs)
        total.backward()
        return [x.grad.clone()] + [p.grad.clone() for p in module.parameters() if p.grad is not None]

    ours = gradients(lambda: [module._conditioner(x, w, b) for w, b, _, _ in module._per_layer()])
    plain = gradients(lambda: reference_conditioners(module, x))
    assert len(ours) == len(plain)
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@fast
@given(
    hnp.arrays(np.float64, st.integers(1, 20), elements=st.floats(-1e6, 1e6, allow_nan=False)),
    st.floats(0.01, 10.0),
)
def test_soft_clamp_bounds(raw, bound):
    raw = torch.from_numpy(raw)
    out = soft_clamp(raw, bound)
    assert torch.all(out.abs() <= bound)
    # monotone, odd, and sign-preserving
    order = torch.argsort(raw)
    assert torch.all(torch.diff(out[order]) >= 0)
    torch.testing.assert_close(soft_clamp(-raw, bound), -out)
    assert torch.all(torch.sign(out) * torch.sign(raw) >= 0)
    assert torch.all(out.abs() <= raw.abs() + 1e-12)


def test_soft_clamp_is_identity_near_zero_and_saturates():
    raw = torch.tensor([1e-4, -1e-4, 0.0], dtype=torch.float64)
    torch.testing.assert_close(soft_clamp(raw, 3.0), raw, rtol=1e-8, atol=0)
    big = soft_clamp(torch.tensor([1e3, -1e3], dtype=torch.float64), 3.0)
    torch.testing.assert_close(big, torch.tensor([3.0, -3.0], dtype=torch.float64))
    # gradient 1 at zero
    x = torch.zeros((), dtype=torch.float64, requires_grad=True)
    soft_clamp(x, 2.0).backward()
    assert x.grad.item() == pytest.approx(1.0)


@fast
@given(
    st.integers(1, 5).flatmap(
        lambda n: hnp.arrays(np.float64, (4, n), elements=st.floats(-30, 30))
    )
)
def test_standard_normal_log_prob(z):
    z = torch.from_numpy(z)
    expected = torch.distributions.Normal(
        torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64)
    ).log_prob(z).sum(-1)
    torch.testing.assert_close(standard_normal_log_prob(z), expected, rtol=1e-12, atol=1e-12)
    assert standard_normal_log_prob(z[:1].float()).dtype == torch.float32


def test_standard_normal_log_prob_at_zero():
    z = torch.zeros(1, 3, dtype=torch.float64)
    assert standard_normal_log_prob(z).item() == pytest.approx(-1.5 * math.log(2 * math.pi))


# --- depth and width inside a stack ---------------------------------------------------


@st.composite
def structured_stacks(draw):
    """A perturbed stack whose members differ in active layers and hidden widths."""
    n_members = draw(st.integers(1, 3))
    n_layers = draw(st.integers(1, 4))
    n_features = draw(st.integers(2, 5))
    hidden = tuple(draw(st.lists(st.integers(2, 6), min_size=1, max_size=2)))
    masks = repair(draw(hnp.arrays(np.bool_, (n_members, n_layers, n_features))))
    active = draw(hnp.arrays(np.bool_, (n_members, n_layers)))
    active[~active.any(axis=1), 0] = True
    widths = np.array([[draw(st.integers(1, h)) for h in hidden] for _ in range(n_members)])
    actnorm = draw(st.booleans())
    module = CouplingFlowStack(
        torch.as_tensor(masks), hidden, list(range(n_members)), actnorm=actnorm,
        layer_active=torch.as_tensor(active), hidden_widths=torch.as_tensor(widths),
        bijection=draw(bijections),
    ).double()
    perturb(module, draw(seeds))
    x = draw(hnp.arrays(np.float64, (draw(st.integers(1, 4)), n_features), elements=finite))
    return module, masks, active, widths, hidden, torch.from_numpy(x)


def real_size_member(module, member, masks, active, widths, hidden):
    """The flow member ``member`` stands for, built at its real depth and width.

    Its parameters are the stack's, restricted to the active layers and the
    live hidden units.
    """
    layers = np.flatnonzero(active[member])
    small = CouplingFlowStack(
        torch.as_tensor(masks[member][layers][None]), tuple(int(w) for w in widths[member]), [0],
        actnorm=module.actnorm, bijection=module.bijection,
    ).double()
    units = [slice(None)] + [slice(0, int(w)) for w in widths[member]] + [slice(None)]
    with torch.no_grad():
        for i, (weight, bias) in enumerate(zip(small.weights, small.biases)):
            rows, columns = units[i], units[i + 1]
            weight.copy_(module.weights[i][member, layers][:, rows, columns][None])
            bias.copy_(module.biases[i][member, layers][..., columns][None])
        if module.actnorm:
            small.actnorm_log_scale.copy_(module.actnorm_log_scale[member, layers][None])
            small.actnorm_bias.copy_(module.actnorm_bias[member, layers][None])
    return small


@fast
@given(structured_stacks())
def test_gated_member_is_the_real_size_flow(case):
    module, masks, active, widths, hidden, x = case
    z, log_det = module(x)
    for member in range(module.n_members):
        small = real_size_member(module, member, masks, active, widths, hidden)
        z_small, log_det_small = small(x)
        torch.testing.assert_close(z[member], z_small[0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(log_det[member], log_det_small[0], rtol=1e-10, atol=1e-10)


@fast
@given(structured_stacks())
def test_gated_stack_inverse_and_log_det(case):
    module, *_, x = case
    z, log_det = module(x)
    x_back, inverse_log_det = module.inverse(z)
    torch.testing.assert_close(x_back, x.expand_as(x_back), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=1e-8, atol=1e-8)
    for member in range(module.n_members):
        jacobian = torch.autograd.functional.jacobian(lambda row: module(row[None])[0][member, 0], x[0])
        expected = torch.linalg.slogdet(jacobian).logabsdet
        torch.testing.assert_close(log_det[member, 0], expected, rtol=1e-8, atol=1e-8)


def test_inactive_layers_leave_the_data_unchanged_whatever_their_parameters():
    masks = np.array([[[True, False, False], [False, True, True]]])
    module = CouplingFlowStack(torch.as_tensor(masks), (4,), [0], layer_active=torch.tensor([[False, False]]))
    x = torch.randn(50, 3) * 3 + 1
    perturb(module, 0)  # parameters are set, but the gates zero them
    z, log_det = module(x)
    torch.testing.assert_close(z[0], x)
    assert torch.all(log_det == 0)


def test_structure_arguments_are_checked():
    masks = torch.ones(2, 3, 4, dtype=torch.bool)
    masks[..., 0] = False
    with pytest.raises(ValueError, match="layer_active"):
        CouplingFlowStack(masks, (4,), [0, 1], layer_active=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"hidden_widths\[:, 0\]"):
        CouplingFlowStack(masks, (4,), [0, 1], hidden_widths=torch.tensor([[5], [1]]))


def test_assign_state_changes_the_member_count():
    masks = repair(np.random.default_rng(0).random((3, 2, 4)) < 0.5)
    module = make_stack(masks, (5,), [0, 1, 2])
    x = torch.randn(6, 4, dtype=torch.float64)
    before = module.log_prob(x)
    keep = torch.tensor([2, 0])
    module.assign_state({k: v[keep] for k, v in module.state_dict().items() if v.dim() > 0})
    assert module.n_members == 2
    torch.testing.assert_close(module.log_prob(x), before[keep])
    module.log_prob(x).sum().backward()  # new leaves: autograd accepts the new shapes
    assert all(p.grad is not None and p.grad.shape[0] == 2 for p in module.parameters())


def test_masked_width_members_start_as_their_real_size_would():
    masks = torch.ones(1, 2, 3, dtype=torch.bool)
    masks[..., 0] = False
    narrow = CouplingFlowStack(masks, (16, 16), [0], hidden_widths=torch.tensor([[4, 4]]))
    full = CouplingFlowStack(masks, (16, 16), [0])
    # nn.Linear's bound 1/sqrt(fan_in) with the live fan-in (4 units), not the stack's 16.
    live = narrow.weights[1][0, :, :4, :4]
    assert 0.25 < live.abs().max() <= 0.5
    assert full.weights[1].abs().max() <= 0.25
    # The first layer reads the features: same fan-in, same draw.
    torch.testing.assert_close(narrow.weights[0], full.weights[0])


# --- the base distribution -------------------------------------------------------------


@pytest.mark.parametrize("df", [1.0, 2.0, 4.0, 32.0])
def test_student_t_base_is_scipys_scaled_t(df):
    from scipy import stats

    z = torch.linspace(-50, 50, 1001, dtype=torch.float64).reshape(-1, 1)
    expected = stats.t(df, scale=student_t_scale(df)).logpdf(z.numpy()[:, 0])
    torch.testing.assert_close(base_log_prob(z, df), torch.from_numpy(expected), rtol=1e-12, atol=1e-12)
    # scaled to the quartiles of a standard normal
    assert stats.t(df, scale=student_t_scale(df)).ppf(0.75) == pytest.approx(stats.norm.ppf(0.75), rel=1e-12)
    # summed over the features
    pair = torch.tensor([[0.3, -2.0]], dtype=torch.float64)
    torch.testing.assert_close(base_log_prob(pair, df), base_log_prob(pair[:, :1], df) + base_log_prob(pair[:, 1:], df))


def test_normal_base_is_the_standard_normal():
    z = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(base_log_prob(z, math.inf), standard_normal_log_prob(z), rtol=0, atol=0)


@pytest.mark.parametrize("df", [math.inf, 1.0, 2.0, 8.0])
def test_base_samples_follow_the_base(df):
    from scipy import stats

    draws = base_sample((2, 20000), df, torch.Generator().manual_seed(0), torch.float64)
    assert draws.shape == (2, 20000) and torch.isfinite(draws).all()
    law = stats.norm() if math.isinf(df) else stats.t(df, scale=student_t_scale(df))
    assert stats.kstest(draws.flatten().numpy(), law.cdf).pvalue > 1e-3
    # seeded: the same generator seed gives the same draws
    again = base_sample((2, 20000), df, torch.Generator().manual_seed(0), torch.float64)
    assert torch.equal(draws, again)


def test_base_sample_rejects_odd_degrees_above_one():
    with pytest.raises(ValueError, match="df = 1 or even"):
        base_sample((3,), 3.0, torch.Generator().manual_seed(0), torch.float64)
