"""Training candidate structures: ``CandidateTrainer``, ``_train_group``, ``mean_scores``,
and the step budget and successive-halving rungs of ``train_flows`` they rely on."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

import skflowsearch._search as search_module
from skflowsearch import _operators as ops
from skflowsearch._genome import Genome, hidden_sizes, n_parameters
from skflowsearch._masks import alternating_masks
from skflowsearch._nn import CouplingFlowStack
from skflowsearch._search import CandidateTrainer, GroupOutput, Trained, _train_group, mean_scores
from skflowsearch._training import TrainingConfig, fit_flows, steps_per_epoch, train_flows

N_LAYERS, N_FEATURES = 3, 4
WIDTHS = (0.5, 1.0)
# 40 training rows in batches of 8: 5 steps per epoch, 20 in all.
CONFIG = TrainingConfig(hidden_layer_sizes=(8,), max_epochs=4, batch_size=8, learning_rate=1e-2,
                        n_iter_no_change=10)
SEEDS = [(11, 12), (13, 14)]
CPU = torch.device("cpu")


def _data():
    rng = np.random.RandomState(0)
    Z = rng.normal(size=(60, N_FEATURES))
    Z[:, 1] += Z[:, 0] ** 2  # something for the couplings to learn
    # ... and a scale for the ActNorm layers to learn: the untrained flow is
    # the standard normal, beaten within the first epochs.
    Z = 2.0 * (Z - Z.mean(axis=0)) / Z.std(axis=0)
    return Z[:40], Z[40:50], Z[50:]


Z_TRAIN, Z_VAL, Z_SELECT = _data()


def _genomes():
    rng = np.random.default_rng(0)
    alternating = alternating_masks(N_LAYERS, N_FEATURES)
    genomes = [Genome.full(alternating, len(WIDTHS)),
               Genome(alternating, np.array([True, True, False]), 1),
               Genome(alternating, np.ones(N_LAYERS, dtype=bool), 0)]
    while len(genomes) < 5:
        masks = ops.random_genome(N_LAYERS, N_FEATURES, rng)
        genomes.append(Genome(masks, np.ones(N_LAYERS, dtype=bool), int(rng.integers(2))))
    assert len({g.key() for g in genomes}) == len(genomes)
    return genomes


GENOMES = _genomes()


def make_trainer(**kwargs):
    params = dict(config=CONFIG, width_choices=WIDTHS, devices=[CPU], n_jobs=1, group_size=8)
    params.update(kwargs)
    return CandidateTrainer(Z_TRAIN, Z_VAL, **params)


def train(trainer, genomes=GENOMES, seeds=SEEDS, **kwargs):
    return trainer.train(genomes, seeds, Z_SELECT, **kwargs)


@pytest.fixture(scope="module")
def reference():
    """All genomes in one group, one process, both seed pairs."""
    return train(make_trainer())


def assert_same_result(a, b, exact=True):
    compare = (np.testing.assert_array_equal if exact
               else lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6))
    compare(a.selection_log_prob, b.selection_log_prob)
    for field in ("diverged", "failed", "n_steps", "best_steps"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


# --- shapes and common random numbers ----------------------------------------------


def test_train_returns_seed_by_genome_arrays(reference):
    n_seeds, n_genomes = len(SEEDS), len(GENOMES)
    assert reference.selection_log_prob.shape == (n_seeds, n_genomes, len(Z_SELECT))
    assert reference.selection_log_prob.dtype == np.float64
    for field in ("diverged", "failed", "n_steps", "best_steps"):
        assert getattr(reference, field).shape == (n_seeds, n_genomes), field
    assert np.isfinite(reference.selection_log_prob).all()
    assert not reference.diverged.any() and not reference.failed.any()
    per_epoch = steps_per_epoch(len(Z_TRAIN), CONFIG.batch_size)
    assert per_epoch == 5
    assert (reference.n_steps == CONFIG.max_epochs * per_epoch).all()
    assert (reference.best_steps <= reference.n_steps).all()
    assert (reference.best_steps % per_epoch == 0).all()
    assert (reference.best_steps > 0).any()  # the candidates did learn something
    # The candidates really differ.
    scores = mean_scores(reference)
    assert len(np.unique(np.round(scores[0], 6))) == len(GENOMES)


def test_identical_genomes_in_one_call_get_identical_rows():
    # Common random numbers: every genome of a seed pair starts from the same
    # weights and sees the same minibatches, so two copies agree exactly.
    # (To float rounding: a member's reductions may round differently at
    # another position of the stack.)
    twin = Genome(GENOMES[3].masks.copy(), GENOMES[3].active.copy(), GENOMES[3].width)
    trained = train(make_trainer(), [GENOMES[3], GENOMES[1], twin])
    rows = trained.selection_log_prob
    np.testing.assert_allclose(rows[:, 0], rows[:, 2], rtol=1e-7, atol=0)
    np.testing.assert_array_equal(trained.best_steps[:, 0], trained.best_steps[:, 2])
    # ... while another seed pair gives other rows, by far more than rounding.
    assert np.abs(rows[0, 0] - rows[1, 0]).max() > 1e-3
    assert np.abs(rows[0, 0] - rows[0, 1]).max() > 1e-3


def test_a_genome_trains_as_alone_with_the_call_seed(reference):
    # A row of the trainer is the flow fit_flows trains for that genome from
    # the seed pair of the call (not from a seed of its own).
    k = 1
    genome = GENOMES[k]
    for s, (seed, batch_seed) in enumerate(SEEDS):
        alone = fit_flows(
            genome.masks[None], Z_TRAIN, Z_VAL, seeds=[seed], batch_seed=batch_seed, config=CONFIG,
            device=CPU, layer_active=genome.active[None],
            hidden_widths=[hidden_sizes(CONFIG.hidden_layer_sizes, WIDTHS, genome.width)],
            X_select=Z_SELECT,
        )
        np.testing.assert_allclose(reference.selection_log_prob[s, k], alone.selection_log_prob[0],
                                   rtol=1e-5, atol=1e-6)
        assert reference.n_steps[s, k] == alone.n_steps[0]


@pytest.mark.parametrize("group_size", [1, 2, 3])
def test_group_size_does_not_change_results(reference, group_size):
    # Members never mix; only float rounding differs between stack sizes.
    assert_same_result(train(make_trainer(group_size=group_size)), reference, exact=False)


def test_order_of_genomes_does_not_change_results(reference):
    order = [4, 2, 0, 3, 1]
    trained = train(make_trainer(), [GENOMES[i] for i in order])
    expected = Trained(*(getattr(reference, f.name)[:, order]
                         for f in dataclasses.fields(Trained)))
    assert_same_result(trained, expected, exact=False)


def test_results_do_not_depend_on_n_jobs():
    # The groups are cut the same way and every task uses one torch thread,
    # so two worker processes give exactly the in-process result.
    one = train(make_trainer(n_jobs=1, group_size=2))
    two = train(make_trainer(n_jobs=2, group_size=2))
    assert_same_result(two, one, exact=True)


def test_trainer_restores_torch_threads():
    before = torch.get_num_threads()
    train(make_trainer(), GENOMES[:1], SEEDS[:1])
    assert torch.get_num_threads() == before


def test_trainer_counts_effective_parameters():
    trainer = make_trainer()
    for genome in GENOMES:
        assert trainer.n_parameters(genome) == n_parameters(genome, CONFIG, WIDTHS)
    assert len({trainer.n_parameters(g) for g in GENOMES[:3]}) == 3  # depth and width count


# --- budget and successive halving -----------------------------------------------------


@pytest.mark.parametrize("max_steps, expected", [(1, 5), (5, 5), (7, 10), (100, 20)])
def test_max_steps_limits_the_steps(max_steps, expected):
    # Training stops after the epoch in which the budget is reached.
    trained = train(make_trainer(), seeds=SEEDS[:1], budget={"max_steps": max_steps})
    assert (trained.n_steps == expected).all()
    assert (trained.best_steps <= expected).all()


def _stack(n_members, seeds=None, same_masks=False):
    rng = np.random.default_rng(5)
    if same_masks:
        masks = np.stack([alternating_masks(N_LAYERS, N_FEATURES)] * n_members)
    else:
        masks = np.stack([ops.random_genome(N_LAYERS, N_FEATURES, rng) for _ in range(n_members)])
    seeds = list(range(n_members)) if seeds is None else seeds
    return CouplingFlowStack(torch.as_tensor(masks), (8,), seeds)


def _train_stack(module, *, n_iter_no_change=100, tol=1e-4, **kwargs):
    config = TrainingConfig(hidden_layer_sizes=(8,), max_epochs=6, batch_size=8, learning_rate=1e-2,
                            weight_decay=0.0, n_iter_no_change=n_iter_no_change, tol=tol)
    params = dict(config=config, batch_seed=3, device=CPU, X_select=Z_SELECT)
    params.update(kwargs)
    return train_flows(module, Z_TRAIN, Z_VAL, **params)


@pytest.mark.parametrize("rung_steps, n_keep", [(5, 2), (10, 1), (12, 3)])
def test_a_rung_keeps_exactly_n_keep_members(rung_steps, n_keep):
    result = _train_stack(_stack(6), rungs=[(rung_steps, n_keep)])
    rung_epoch = -(-rung_steps // 5)
    past = result.n_steps > rung_epoch * 5
    assert past.sum() == n_keep
    assert (result.n_steps[past] == 30).all()  # the survivors train to the end
    assert (result.n_steps[~past] == rung_epoch * 5).all()
    assert np.isfinite(result.selection_log_prob).all()


def test_successive_rungs_and_the_step_budget():
    result = _train_stack(_stack(6), rungs=[(15, 2), (5, 4)], max_steps=22)
    assert sorted(result.n_steps.tolist()) == [5, 5, 15, 15, 25, 25]


def test_rung_keeps_the_best_on_the_selection_rows():
    # Members that are identical tie: the lower indices are kept.
    result = _train_stack(_stack(4, seeds=[7] * 4, same_masks=True), rungs=[(5, 2)])
    np.testing.assert_array_equal(result.n_steps, [30, 30, 5, 5])
    # Otherwise the best at the rung go on: the members stopped at the rung
    # are the ones a rung-free run ranks last there.
    at_rung = _train_stack(_stack(6), max_steps=5, n_iter_no_change=1000, tol=-np.inf)
    with_rung = _train_stack(_stack(6), rungs=[(5, 3)], tol=-np.inf)
    # tol=-inf: every epoch "improves", so the restored weights are the last
    # ones and selection_log_prob after 5 steps is what the rung ranked.
    ranking = np.argsort(-at_rung.selection_log_prob.mean(axis=1), kind="stable")
    np.testing.assert_array_equal(np.sort(np.flatnonzero(with_rung.n_steps > 5)),
                                  np.sort(ranking[:3]))


def test_trainer_rungs_apply_inside_each_group():
    # rungs(n_members) -> rungs; with groups of 3 and 2, each keeps one.
    sizes = []

    def rungs(n_members):
        sizes.append(n_members)
        return ((5, 1),)

    trained = train(make_trainer(group_size=3), seeds=SEEDS[:1], rungs=rungs)
    assert sorted(sizes) == [2, 3]
    past = trained.n_steps[0] > 5
    assert past[:3].sum() == 1 and past[3:].sum() == 1
    assert (trained.n_steps[0][~past] == 5).all() and (trained.n_steps[0][past] == 20).all()


# --- failures ---------------------------------------------------------------------------


def test_divergence_is_not_a_failure():
    config = dataclasses.replace(CONFIG, learning_rate=1e6, max_grad_norm=1e12)
    trainer = make_trainer(config=config)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "could not be trained" warning
        trained = train(trainer, seeds=SEEDS[:1])
    assert trained.diverged.all() and not trained.failed.any()
    assert (mean_scores(trained) == -np.inf).all()
    assert trainer.errors == []


def test_a_diverging_genome_does_not_disturb_the_others(reference, monkeypatch):
    # A real blow-up of one genome (an absurd learning rate for its group):
    # it is marked diverged, not failed, and the others train as before.
    target = 3

    def wrapper(masks, *args, config, **kwargs):
        if any(np.array_equal(m, GENOMES[target].masks) for m in masks):
            config = dataclasses.replace(config, learning_rate=1e6, max_grad_norm=1e12)
        return fit_flows(masks, *args, config=config, **kwargs)

    monkeypatch.setattr(search_module, "fit_flows", wrapper)
    trainer = make_trainer(group_size=1)
    trained = train(trainer)
    assert trained.diverged[:, target].all() and not trained.failed.any()
    others = np.arange(len(GENOMES)) != target
    assert not trained.diverged[:, others].any()
    scores = mean_scores(trained)
    assert (scores[:, target] == -np.inf).all()
    np.testing.assert_allclose(scores[:, others], mean_scores(reference)[:, others], rtol=1e-6)
    assert trainer.errors == []


def _group_sizes(structure, Z_train, Z_val, Z_select, seeds, batch_seed, config, device, budget):
    """A train_group that reports the size of its group as every member's n_steps."""
    n = len(structure[0])
    return GroupOutput(np.zeros((n, len(Z_select))), np.zeros(n, dtype=bool),
                       np.full(n, n), np.zeros(n, dtype=int))


@pytest.mark.parametrize("n_genomes, group_size, sizes",
                         [(16, 8, [8, 8]), (8, 8, [8]), (10, 8, [5, 5]), (17, 8, [6, 6, 5]),
                          (3, 1, [1, 1, 1])])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_groups_are_cut_evenly_whatever_n_jobs(n_genomes, group_size, sizes, n_jobs):
    genomes = [GENOMES[i % len(GENOMES)] for i in range(n_genomes)]
    trainer = make_trainer(train_group=_group_sizes, group_size=group_size, n_jobs=n_jobs)
    trained = train(trainer, genomes, seeds=SEEDS)
    expected = np.repeat(sizes, sizes)
    for s in range(len(SEEDS)):
        np.testing.assert_array_equal(trained.n_steps[s], expected)


class FlakyGroup:
    """A ``train_group`` that raises ``exc`` on its first ``n_failures`` calls
    for groups holding the masks of ``genome`` (all groups if None)."""

    def __init__(self, exc, n_failures=1, genome=None):
        self.exc, self.n_failures, self.genome = exc, n_failures, genome
        self.calls = []

    def __call__(self, structure, *args):
        hit = self.genome is None or any(np.array_equal(m, self.genome.masks)
                                         for m in structure[0])
        self.calls.append(hit)
        if hit and sum(self.calls) <= self.n_failures:
            raise self.exc
        return _train_group(structure, *args)


@pytest.mark.parametrize("exc", [TypeError("bad argument"), ValueError("bad value"),
                                 KeyError("missing"), AttributeError("no such thing")])
def test_programming_errors_propagate_without_retry(exc):
    flaky = FlakyGroup(exc, n_failures=100)
    trainer = make_trainer(train_group=flaky, group_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(type(exc)):
            train(trainer)
    assert len(flaky.calls) == 1  # not retried
    assert trainer.errors == []


def test_programming_error_in_a_worker_process_propagates():
    def broken(*args):
        raise ValueError("a bug in the task")

    with pytest.raises(ValueError, match="a bug in the task"):
        train(make_trainer(train_group=broken, n_jobs=2, group_size=2), seeds=SEEDS[:1])


@pytest.mark.parametrize("exc", [RuntimeError("worker died"), OSError("connection reset"),
                                 EOFError("pipe closed")])
def test_a_lost_worker_is_retried_and_gives_the_same_result(reference, exc):
    flaky = FlakyGroup(exc, n_failures=1)
    trainer = make_trainer(train_group=flaky)
    with pytest.warns(RuntimeWarning, match="worker was lost"):
        trained = train(trainer)
    assert_same_result(trained, reference, exact=True)
    assert len(trainer.errors) == 1 and type(exc).__name__ in trainer.errors[0]
    assert len(flaky.calls) == 1 + len(SEEDS)  # the failed call, then each task once


def test_a_group_lost_twice_comes_back_failed(reference):
    # group_size=2 cuts the genomes into {0, 1}, {2, 3}, {4}; the group of
    # genome 3 always loses its worker.
    flaky = FlakyGroup(OSError("killed"), n_failures=100, genome=GENOMES[3])
    trainer = make_trainer(train_group=flaky, group_size=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained = train(trainer)
    lost = np.array([False, False, True, True, False])
    assert (trained.failed == lost).all()
    assert np.isnan(trained.selection_log_prob[:, lost]).all()
    assert not trained.diverged.any()
    ok = ~lost
    np.testing.assert_allclose(trained.selection_log_prob[:, ok], reference.selection_log_prob[:, ok],
                               rtol=1e-5, atol=1e-6)
    scores = mean_scores(trained)
    assert np.isnan(scores[:, lost]).all() and np.isfinite(scores[:, ok]).all()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert sum("worker was lost" in m for m in messages) == 1
    assert sum("worker lost twice" in m for m in messages) == len(SEEDS)
    assert len(trainer.errors) == 1 + len(SEEDS)


def test_out_of_memory_splits_the_group(reference, monkeypatch):
    calls = []

    def small_memory(masks, *args, **kwargs):
        calls.append(len(masks))
        if len(masks) > 1:
            raise MemoryError("simulated")
        return fit_flows(masks, *args, **kwargs)

    monkeypatch.setattr(search_module, "fit_flows", small_memory)
    trainer = make_trainer(group_size=4)  # groups {0, 1, 2}, {3, 4}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        trained = train(trainer, seeds=SEEDS[:1])
    assert calls == [3, 1, 2, 1, 1, 2, 1, 1]  # halves until one member fits
    assert not trained.failed.any() and trainer.errors == []
    np.testing.assert_allclose(trained.selection_log_prob, reference.selection_log_prob[:1],
                               rtol=1e-5, atol=1e-6)


def test_a_candidate_that_never_fits_in_memory_fails(reference, monkeypatch):
    big = GENOMES[3]

    def no_room_for_big(masks, *args, layer_active, **kwargs):
        if any(np.array_equal(m, big.masks) for m in masks):
            raise MemoryError("simulated")
        return fit_flows(masks, *args, layer_active=layer_active, **kwargs)

    monkeypatch.setattr(search_module, "fit_flows", no_room_for_big)
    trainer = make_trainer(group_size=8)
    with pytest.warns(RuntimeWarning, match="could not be trained"):
        trained = train(trainer, seeds=SEEDS[:1])
    expected = np.arange(len(GENOMES)) == 3
    assert (trained.failed[0] == expected).all()
    assert np.isnan(trained.selection_log_prob[0, 3]).all()
    np.testing.assert_allclose(trained.selection_log_prob[0, ~expected],
                               reference.selection_log_prob[0, ~expected], rtol=1e-5, atol=1e-6)
    assert len(trainer.errors) == 1 and "MemoryError: simulated" in trainer.errors[0]


def test_mean_scores():
    rows = np.array([[[1.0, 3.0], [0.0, 0.0], [5.0, 7.0], [np.inf, 0.0], [np.nan, np.nan]]])
    trained = Trained(rows, diverged=np.array([[False, True, False, False, False]]),
                      failed=np.array([[False, False, False, False, True]]),
                      n_steps=np.zeros((1, 5), dtype=int), best_steps=np.zeros((1, 5), dtype=int))
    scores = mean_scores(trained, offset=0.5)
    assert scores.shape == (1, 5)
    assert scores[0, 0] == 2.5 and scores[0, 2] == 6.5
    assert scores[0, 1] == -np.inf and scores[0, 3] == -np.inf  # diverged, non-finite
    assert np.isnan(scores[0, 4])  # failed: transient


# --- devices -------------------------------------------------------------------------


def test_candidate_groups_go_to_the_devices_round_robin():
    seen = []

    def record_device(structure, Z_train, Z_val, Z_select, seeds, batch_seed, config, device,
                      budget):
        seen.append(device)
        n = len(structure[0])
        return GroupOutput(np.zeros((n, len(Z_select))), np.zeros(n, dtype=bool),
                           np.zeros(n, dtype=int), np.zeros(n, dtype=int))

    trainer = make_trainer(train_group=record_device, group_size=2,
                           devices=["gpu-a", "gpu-b"])  # sentinels: only the assignment is checked
    trained = train(trainer, GENOMES, SEEDS)  # 3 groups x 2 seeds
    assert seen == ["gpu-a", "gpu-b", "gpu-a", "gpu-b", "gpu-a", "gpu-b"]
    assert trained.selection_log_prob.shape == (2, 5, len(Z_SELECT))


def _fold_sizes(structure, Z_train, Z_val, Z_select, seeds, batch_seed, config, device, budget):
    """A train_group whose rows hold the size of the task's training rows (its fold's mark),
    whose n_steps is the seed, and which diverges where the training rows are fewest."""
    n = len(structure[0])
    return GroupOutput(np.full((n, len(Z_select)), float(len(Z_train))),
                       np.full(n, len(Z_train) == 30), np.full(n, seeds[0]), np.zeros(n, dtype=int))


def test_cross_fit_puts_the_folds_rows_side_by_side():
    # Three folds of 40, 35 and 30 training rows scoring 3, 4 and 5 rows,
    # two seed pairs each; group_size=2 cuts the 5 genomes into 3 groups.
    folds = [(Z_TRAIN[:40], Z_SELECT[:3], [(1, 0), (2, 0)]),
             (Z_TRAIN[:35], Z_SELECT[3:7], [(3, 0), (4, 0)]),
             (Z_TRAIN[:30], Z_SELECT[:5], [(5, 0), (6, 0)])]
    trainer = make_trainer(train_group=_fold_sizes, group_size=2, n_jobs=2)
    trained = trainer.cross_fit(GENOMES, folds)
    assert trained.selection_log_prob.shape == (2, len(GENOMES), 12)
    expected = np.repeat([40.0, 35.0, 30.0], [3, 4, 5])
    np.testing.assert_array_equal(trained.selection_log_prob, np.broadcast_to(expected, (2, 5, 12)))
    assert trained.diverged.shape == (2, 5) and trained.diverged.all()  # the third fold diverged
    assert not trained.failed.any()
    np.testing.assert_array_equal(trained.n_steps, np.full((2, 5), [[3.0], [4.0]]))  # seeds' mean

    # train() is one fold on the trainer's own training rows (Z_TRAIN, 40 rows).
    single = trainer.cross_fit(GENOMES, folds[:1])
    alone = trainer.train(GENOMES, folds[0][2], folds[0][1])
    for field in ("selection_log_prob", "diverged", "failed", "n_steps", "best_steps"):
        np.testing.assert_array_equal(getattr(single, field), getattr(alone, field))
