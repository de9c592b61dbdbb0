"""Training a population of flows: independence, divergence, early stopping."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from skflowsearch import _training
from skflowsearch._bijections import Affine, RationalQuadraticSpline
from skflowsearch._training import (
    TrainingConfig,
    TrainingResult,
    _clip_grad_norm_per_member,
    fit_flows,
    mean_log_prob,
    train_flows,
)

CPU = torch.device("cpu")
SEEDS = [11, 22, 33]
MASKS = np.array(
    [
        [[1, 0, 0], [0, 1, 1], [1, 1, 0]],
        [[0, 1, 0], [1, 0, 1], [0, 0, 1]],
        [[1, 0, 1], [0, 1, 0], [1, 0, 0]],
    ],
    dtype=bool,
)
CONFIG = TrainingConfig(
    hidden_layer_sizes=(8,),
    max_epochs=15,
    batch_size=32,
    learning_rate=3e-2,
    n_iter_no_change=2,
)



def _data():
    rng = np.random.default_rng(0)
    n = 200
    t = rng.uniform(-2, 2, n)
    X = np.c_[t, t**2 + 0.3 * rng.normal(size=n), np.sin(2 * t) + 0.2 * rng.normal(size=n)]
    X = (X - X.mean(0)) / X.std(0)
    return X[:160], X[160:]


X_TRAIN, X_VAL = _data()


def config_kwargs(config=CONFIG, **overrides):
    """Keyword arguments of train_flows: ``config`` with ``overrides`` of its fields."""
    return dict(config=replace(config, **overrides), batch_seed=5, device=CPU)


def new_stack(masks=MASKS, seeds=SEEDS, config=CONFIG):
    return config.build(masks, seeds)


@pytest.fixture(scope="module")
def population():
    return fit_flows(MASKS, X_TRAIN, X_VAL, seeds=SEEDS, batch_seed=5, config=CONFIG, device=CPU)


@pytest.fixture(scope="module")
def alone():
    return [
        fit_flows(MASKS[i][None], X_TRAIN, X_VAL, seeds=[s], batch_seed=5, config=CONFIG, device=CPU)
        for i, s in enumerate(SEEDS)
    ]


def assert_member_equal(result, member, single, rtol=1e-4):
    """Member ``member`` of ``result`` has the results of the 1-member ``single``."""
    np.testing.assert_allclose(
        result.best_validation_score[member], single.best_validation_score[0], rtol=rtol
    )
    assert result.best_epoch[member] == single.best_epoch[0]
    assert result.n_epochs[member] == single.n_epochs[0]
    assert result.diverged[member] == single.diverged[0]
    n = single.n_epochs[0]
    np.testing.assert_allclose(result.train_loss[:n, member], single.train_loss[:n, 0], rtol=rtol)
    np.testing.assert_allclose(
        result.validation_score[: n + 1, member], single.validation_score[: n + 1, 0], rtol=rtol
    )
    state = result.module.member_state(slice(member, member + 1))
    for name, tensor in single.module.state_dict().items():
        if tensor.dim() == 0:
            continue
        np.testing.assert_allclose(
            state[name].numpy(), tensor.numpy(), rtol=rtol, atol=rtol * float(tensor.abs().max()),
            err_msg=name,
        )


@pytest.mark.parametrize("bijection", [Affine(), RationalQuadraticSpline(n_bins=5)], ids=["affine", "spline"])
@pytest.mark.parametrize(
    "n_train, n_val, hidden, batch_size",
    [(160, 40, (8,), 32), (37, 13, (5,), 16), (50, 7, (7, 3), 64), (61, 29, (6,), 61)],
)
def test_members_match_training_alone_for_any_shape(n_train, n_val, hidden, batch_size, bijection):
    # Row counts and widths that are not multiples of any SIMD width. Bit
    # equality is not guaranteed there (a reduction or a kernel's tail may
    # round differently with the stack's size), float-tolerance equality is;
    # groups never depend on n_jobs, so search results do not either.
    rng = np.random.default_rng(n_train)
    X = rng.normal(size=(n_train + n_val, 3)) @ rng.normal(size=(3, 3))
    config = TrainingConfig(hidden_layer_sizes=hidden, max_epochs=6, batch_size=batch_size,
                            learning_rate=3e-2, n_iter_no_change=50, bijection=bijection)
    kwargs = dict(batch_seed=1, config=config, device=CPU)
    together = fit_flows(MASKS, X[:n_train], X[n_train:], seeds=SEEDS, **kwargs)
    for member, seed in enumerate(SEEDS):
        single = fit_flows(MASKS[member][None], X[:n_train], X[n_train:], seeds=[seed], **kwargs)
        assert_member_equal(together, member, single)


def test_result_shapes_and_types(population):
    assert isinstance(population, TrainingResult)
    n = population.n_epochs.max()
    assert population.train_loss.shape == (n, 3)
    assert population.validation_score.shape == (n + 1, 3)
    for name in ("best_validation_score", "best_epoch", "n_epochs", "diverged"):
        assert getattr(population, name).shape == (3,)
    assert population.diverged.dtype == bool and not population.diverged.any()
    assert population.seconds > 0
    assert population.module.masks.device.type == "cpu"
    assert not population.module.training
    # training improved every member over its initial (Gaussian) score
    assert np.all(population.best_validation_score > population.validation_score[0])
    assert np.all(population.best_epoch > 0)
    # the members stopped early, at different epochs (what the tests below rely on)
    assert len(set(population.n_epochs)) > 1
    assert population.n_epochs.min() < CONFIG.max_epochs


def test_population_equals_members_trained_alone(population, alone):
    for member, single in enumerate(alone):
        assert_member_equal(population, member, single)


def test_rows_after_a_member_stops_are_nan(population):
    # early stopping leaves NaN in the rows after each member's last epoch
    for member in range(3):
        n = population.n_epochs[member]
        assert np.isfinite(population.train_loss[:n, member]).all()
        assert np.isfinite(population.validation_score[: n + 1, member]).all()
        assert np.isnan(population.train_loss[n:, member]).all()
        assert np.isnan(population.validation_score[n + 1 :, member]).all()
        # a member stops n_iter_no_change epochs after its best one, or at max_epochs
        assert n == min(population.best_epoch[member] + CONFIG.n_iter_no_change, CONFIG.max_epochs)


def test_early_stopping_restores_the_best_epoch(population):
    scores = population.validation_score
    for member in range(3):
        best = population.best_validation_score[member]
        # improvements smaller than tol are not taken, so best >= max - tol
        assert best >= np.nanmax(scores[:, member]) - CONFIG.tol
        assert best == scores[population.best_epoch[member], member]
    # the restored weights score exactly the best validation score
    with torch.no_grad():
        restored = mean_log_prob(population.module, torch.tensor(X_VAL, dtype=torch.float32))
    np.testing.assert_allclose(restored.numpy(), population.best_validation_score, rtol=1e-6)


def test_best_score_is_the_max_with_zero_tol():
    config = TrainingConfig(
        hidden_layer_sizes=(8,), max_epochs=6, batch_size=32, learning_rate=3e-2,
        n_iter_no_change=6, tol=0.0,
    )
    result = fit_flows(MASKS, X_TRAIN, X_VAL, seeds=SEEDS, batch_seed=1, config=config, device=CPU)
    np.testing.assert_array_equal(
        result.best_validation_score, np.nanmax(result.validation_score, axis=0)
    )
    np.testing.assert_array_equal(
        result.best_epoch, np.nanargmax(result.validation_score, axis=0)
    )


def test_training_is_deterministic(population):
    again = fit_flows(MASKS, X_TRAIN, X_VAL, seeds=SEEDS, batch_seed=5, config=CONFIG, device=CPU)
    np.testing.assert_array_equal(again.train_loss, population.train_loss)
    np.testing.assert_array_equal(again.validation_score, population.validation_score)
    np.testing.assert_array_equal(again.best_epoch, population.best_epoch)
    for (name, a), b in zip(again.module.state_dict().items(), population.module.state_dict().values()):
        assert torch.equal(a, b), name


def test_other_seeds_give_other_results(population):
    other = fit_flows(MASKS, X_TRAIN, X_VAL, seeds=SEEDS, batch_seed=6, config=CONFIG, device=CPU)
    assert not np.array_equal(other.train_loss[:2], population.train_loss[:2])
    other = fit_flows(MASKS, X_TRAIN, X_VAL, seeds=[1, 2, 3], batch_seed=5, config=CONFIG, device=CPU)
    assert not np.array_equal(other.train_loss[:2], population.train_loss[:2])


def test_plateau_stops_after_n_iter_no_change():
    # a learning rate too small to ever improve by tol: a plateau from epoch 0
    config = TrainingConfig(
        hidden_layer_sizes=(8,), max_epochs=50, batch_size=32, learning_rate=1e-12,
        n_iter_no_change=3, tol=1e-4,
    )
    result = fit_flows(MASKS, X_TRAIN, X_VAL, seeds=SEEDS, batch_seed=0, config=config, device=CPU)
    np.testing.assert_array_equal(result.n_epochs, [3, 3, 3])
    np.testing.assert_array_equal(result.best_epoch, [0, 0, 0])
    assert result.train_loss.shape == (3, 3)
    assert result.validation_score.shape == (4, 3)
    np.testing.assert_array_equal(result.best_validation_score, result.validation_score[0])


def test_epoch_callback_sees_every_epoch(population):
    calls = []
    fit_flows(
        MASKS, X_TRAIN, X_VAL, seeds=SEEDS, batch_seed=5, config=CONFIG, device=CPU,
        epoch_callback=lambda epoch, loss, score: calls.append((epoch, loss.copy(), score.copy())),
    )
    assert [c[0] for c in calls] == list(range(1, population.n_epochs.max() + 1))
    for epoch, loss, score in calls:
        assert loss.shape == score.shape == (3,)
        np.testing.assert_array_equal(loss, population.train_loss[epoch - 1])
        np.testing.assert_array_equal(score, population.validation_score[epoch])


# --- divergence ---------------------------------------------------------------------


def sabotage_callback(module, member, at_epoch):
    """Set every parameter of ``member`` to NaN after epoch ``at_epoch``."""

    def callback(epoch, loss, score):
        if epoch == at_epoch:
            with torch.no_grad():
                for parameter in module.parameters():
                    parameter[member] = torch.nan

    return callback


def test_member_diverging_mid_training_is_isolated():
    config = CONFIG.with_max_epochs(6)
    kwargs = config_kwargs(config, n_iter_no_change=10)
    clean = train_flows(new_stack(config=config), X_TRAIN, X_VAL, **kwargs)
    module = new_stack(config=config)
    broken = train_flows(
        module, X_TRAIN, X_VAL, epoch_callback=sabotage_callback(module, 1, at_epoch=3), **kwargs
    )
    np.testing.assert_array_equal(broken.diverged, [False, True, False])
    # the NaN weights are used in epoch 4, which is the member's last
    assert broken.n_epochs[1] == 4
    assert np.isnan(broken.train_loss[3, 1]) and np.isnan(broken.validation_score[4, 1])
    assert np.isnan(broken.train_loss[4:, 1]).all()
    # its best score is the one from before the divergence, and finite
    assert np.isfinite(broken.best_validation_score[1])
    assert broken.best_epoch[1] <= 3
    np.testing.assert_array_equal(broken.validation_score[:4, 1], clean.validation_score[:4, 1])
    assert broken.best_validation_score[1] == broken.validation_score[broken.best_epoch[1], 1]
    assert broken.best_validation_score[1] >= np.max(broken.validation_score[:4, 1]) - config.tol
    # ... and its restored weights are the finite best ones
    for tensor in broken.module.parameters():
        assert torch.isfinite(tensor[1]).all()
    with torch.no_grad():
        score = mean_log_prob(broken.module, torch.tensor(X_VAL, dtype=torch.float32))
    np.testing.assert_allclose(score[1].item(), broken.best_validation_score[1], rtol=1e-6)
    # the other members did not notice; from epoch 5 on they train in a stack
    # of two (the diverged member is dropped), which rounds in the last bits
    for member in (0, 2):
        np.testing.assert_array_equal(broken.train_loss[:4, member], clean.train_loss[:4, member])
        np.testing.assert_allclose(broken.train_loss[:, member], clean.train_loss[:, member], rtol=1e-5)
        np.testing.assert_allclose(
            broken.validation_score[:, member], clean.validation_score[:, member], rtol=1e-5
        )
        np.testing.assert_allclose(
            broken.best_validation_score[member], clean.best_validation_score[member], rtol=1e-5
        )
        for a, b in zip(broken.module.parameters(), clean.module.parameters()):
            torch.testing.assert_close(a[member], b[member], rtol=1e-4, atol=1e-5)


def test_member_nan_from_the_start_is_diverged(alone):
    module = new_stack()
    with torch.no_grad():
        for parameter in module.weights.parameters():
            parameter[0] = torch.inf
        for parameter in module.biases.parameters():
            parameter[0] = -torch.inf
    result = train_flows(module, X_TRAIN, X_VAL, **config_kwargs())
    assert result.diverged[0]
    assert result.best_validation_score[0] == -np.inf
    assert result.n_epochs[0] == 0 and result.best_epoch[0] == 0
    assert np.isnan(result.train_loss[:, 0]).all()
    for member in (1, 2):
        assert_member_equal(result, member, alone[member])


def test_all_members_diverged_stops_at_once():
    module = new_stack()
    with torch.no_grad():
        module.weights[0].fill_(torch.nan)
    result = train_flows(module, X_TRAIN, X_VAL, **config_kwargs())
    assert result.diverged.all()
    assert result.train_loss.shape == (0, 3)
    assert result.validation_score.shape == (1, 3)
    np.testing.assert_array_equal(result.n_epochs, [0, 0, 0])


# --- helpers ------------------------------------------------------------------------


def test_clip_grad_norm_per_member():
    a = torch.zeros(3, 4, requires_grad=True)
    b = torch.zeros(3, 2, 2, requires_grad=True)
    a.grad = torch.tensor([[3.0, 0, 0, 0], [0.1, 0, 0, 0], [30.0, 0, 0, 0]])
    b.grad = torch.zeros(3, 2, 2)
    b.grad[:, 0, 0] = torch.tensor([4.0, 0.0, 40.0])
    _clip_grad_norm_per_member([a.grad, b.grad], 1.0)
    norms = (a.grad.pow(2).sum(1) + b.grad.pow(2).flatten(1).sum(1)).sqrt()
    np.testing.assert_allclose(norms.numpy(), [1.0, 0.1, 1.0], rtol=1e-5)
    # direction is kept
    np.testing.assert_allclose(a.grad[0, 0] / b.grad[0, 0, 0], 0.75, rtol=1e-6)


def test_mean_log_prob_chunks(monkeypatch):
    module = new_stack()
    X = torch.tensor(X_VAL, dtype=torch.float32)
    with torch.no_grad():
        full = mean_log_prob(module, X)
        monkeypatch.setattr(_training, "ROW_CHUNK", 7)
        chunked = mean_log_prob(module, X)
        expected = module.log_prob(X).mean(1)
    assert full.shape == (3,)
    torch.testing.assert_close(full, expected)
    torch.testing.assert_close(chunked, expected)


def test_training_config():
    config = TrainingConfig()
    assert config.with_max_epochs(7).max_epochs == 7
    assert config.with_max_epochs(7).hidden_layer_sizes == config.hidden_layer_sizes
    assert config.max_epochs == 200
    with pytest.raises(AttributeError):
        config.max_epochs = 3


def test_batch_size_larger_than_training_set():
    config = TrainingConfig(hidden_layer_sizes=(4,), max_epochs=2, batch_size=10_000)
    result = fit_flows(MASKS[:1], X_TRAIN, X_VAL, seeds=[0], batch_seed=0, config=config, device=CPU)
    assert result.n_epochs[0] == 2
    assert np.isfinite(result.train_loss).all()
