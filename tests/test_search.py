"""Fitness evaluation of mask genomes: ``genome_seed`` and ``PopulationEvaluator``."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

import skflowsearch._search as search_module
from skflowsearch._masks import alternating_masks, effective_n_parameters
from skflowsearch._operators import genome_key, random_genome
from skflowsearch._search import PopulationEvaluator, genome_seed
from skflowsearch._training import TrainingConfig, fit_flows

N_LAYERS, N_FEATURES = 3, 4
CONFIG = TrainingConfig(hidden_layer_sizes=(8,), max_epochs=3, batch_size=32, n_iter_no_change=5)


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    Z = rng.normal(size=(160, N_FEATURES))
    Z[:, 1] += Z[:, 0] ** 2  # something for the couplings to learn
    return Z[:128], Z[128:]


@pytest.fixture(scope="module")
def genomes():
    rng = np.random.default_rng(0)
    unique = {}
    unique[genome_key(alternating_masks(N_LAYERS, N_FEATURES))] = alternating_masks(N_LAYERS, N_FEATURES)
    while len(unique) < 6:
        g = random_genome(N_LAYERS, N_FEATURES, rng)
        unique[genome_key(g)] = g
    return list(unique.values())


def make_evaluator(data, **kwargs):
    params = dict(
        config=CONFIG,
        search_seed=1,
        batch_seed=2,
        devices=[torch.device("cpu")],
        n_jobs=1,
        group_size=8,
        size_penalty=0.0,
        score_offset=0.0,
    )
    params.update(kwargs)
    return PopulationEvaluator(*data, **params)


@pytest.fixture(scope="module")
def reference(data, genomes):
    """Fitness of all genomes evaluated as one group, in one process."""
    fitness = make_evaluator(data)(genomes)
    assert fitness.shape == (len(genomes),)
    assert np.isfinite(fitness).all()
    return fitness


# --- genome_seed ------------------------------------------------------------------


def test_genome_seed_is_deterministic_and_in_range(genomes):
    for g in genomes:
        seed = genome_seed(123, g)
        assert isinstance(seed, int)
        assert 0 <= seed < 2**63  # a valid torch.manual_seed argument
        assert genome_seed(123, g.copy()) == seed
        # Only the bits matter, not the dtype or memory layout.
        assert genome_seed(123, g.astype(np.int64)) == seed
        assert genome_seed(123, np.asfortranarray(g)) == seed


def test_genome_seed_differs_between_genomes_and_search_seeds(genomes):
    seeds = [genome_seed(7, g) for g in genomes]
    assert len(set(seeds)) == len(genomes)
    for g in genomes:
        assert len({genome_seed(s, g) for s in range(10)}) == 10


def test_genome_seed_depends_on_shape():
    # Same packed bits, different shape: must not collide.
    a = np.zeros((2, 4), dtype=bool)
    a[:, 0] = True
    b = a.reshape(4, 2)
    assert np.array_equal(np.packbits(a), np.packbits(b))
    assert genome_seed(0, a) != genome_seed(0, b)


# --- determinism of the fitness -----------------------------------------------------


def test_fitness_alone_equals_fitness_in_group(data, genomes, reference):
    # Exact equality: members of a stacked model never mix and every member
    # sees the same minibatches, so a genome's fitness does not depend on the
    # genomes it was trained with.
    alone = np.array([make_evaluator(data)([g])[0] for g in genomes])
    assert np.array_equal(alone, reference), np.abs(alone - reference).max()
    # Order within the group does not matter either.
    perm = np.arange(len(genomes))[::-1]
    reversed_fitness = make_evaluator(data)([genomes[i] for i in perm])
    assert np.array_equal(reversed_fitness, reference[perm])


@pytest.mark.parametrize("group_size", [1, 2, 4])
def test_group_size_does_not_change_fitness(data, genomes, reference, group_size):
    fitness = make_evaluator(data, group_size=group_size)(genomes)
    assert np.array_equal(fitness, reference), np.abs(fitness - reference).max()


def test_fitness_independent_of_n_jobs(data, genomes, reference):
    # Two worker processes (loky), three groups; each task uses one torch
    # thread, so the float reductions are the same as in-process: exact.
    fitness = make_evaluator(data, n_jobs=2, group_size=2)(genomes)
    assert np.array_equal(fitness, reference), np.abs(fitness - reference).max()


def test_fitness_depends_on_search_seed(data, genomes, reference):
    # The weight seeds come from the search seed: another seed gives other
    # (still finite) fitness values.
    other = make_evaluator(data, search_seed=2)(genomes)
    assert np.isfinite(other).all()
    assert not np.array_equal(other, reference)


def test_fitness_is_mean_validation_log_likelihood(data, genomes, reference):
    # The fitness is the best validation score of a genome trained with its
    # genome_seed and the shared batch seed, plus the offset.
    Z_train, Z_val = data
    g = genomes[2]
    result = fit_flows(g[None], Z_train, Z_val, seeds=[genome_seed(1, g)], batch_seed=2,
                       config=CONFIG, device=torch.device("cpu"))
    assert reference[2] == result.best_validation_score[0]
    shifted = make_evaluator(data, score_offset=10.5)(genomes)
    np.testing.assert_allclose(shifted, reference + 10.5, rtol=0, atol=1e-12)


def test_evaluator_restores_torch_threads(data, genomes):
    before = torch.get_num_threads()
    make_evaluator(data)(genomes[:1])
    assert torch.get_num_threads() == before


# --- size penalty -------------------------------------------------------------------


def test_size_penalty_subtracts_penalty_times_effective_parameters(data, genomes, reference):
    penalty = 1e-3
    fitness = make_evaluator(data, size_penalty=penalty)(genomes)
    n_params = effective_n_parameters(np.stack(genomes), CONFIG.hidden_layer_sizes, CONFIG.actnorm)
    assert len(set(n_params.tolist())) > 1  # the penalty is not a constant shift
    assert np.array_equal(fitness, reference - penalty * n_params)
    assert (fitness < reference).all()
    # The penalty follows the architecture config (actnorm counts too).
    config = dataclasses.replace(CONFIG, actnorm=False)
    plain = make_evaluator(data, config=config)(genomes)
    penalised = make_evaluator(data, config=config, size_penalty=penalty)(genomes)
    n_plain = effective_n_parameters(np.stack(genomes), CONFIG.hidden_layer_sizes, False)
    assert (n_plain < n_params).all()
    assert np.array_equal(penalised, plain - penalty * n_plain)


# --- failures -----------------------------------------------------------------------


def _diverge_member(target_key, how):
    """A ``fit_flows`` wrapper that spoils the result of one genome."""

    def wrapper(masks, *args, **kwargs):
        result = fit_flows(masks, *args, **kwargs)
        for k, g in enumerate(masks):
            if genome_key(np.asarray(g)) == target_key:
                if how == "flag":
                    result.diverged[k] = True
                else:
                    result.best_validation_score[k] = how
        return result

    return wrapper


@pytest.mark.parametrize(
    "n_genomes, group_size, sizes",
    [(16, 8, [8, 8]), (8, 8, [8]), (10, 8, [5, 5]), (17, 8, [6, 6, 5]), (3, 1, [1, 1, 1])],
)
@pytest.mark.parametrize("n_jobs", [1, 2, 4])
def test_generation_is_split_evenly_whatever_n_jobs(data, n_genomes, group_size, sizes, n_jobs):
    evaluator = make_evaluator(data, group_size=group_size, n_jobs=n_jobs)
    genomes = np.zeros((n_genomes, 2, 3), dtype=bool)
    genomes[:, :, 0] = True
    assert [len(g) for g in evaluator._groups(genomes)] == sizes


@pytest.mark.parametrize("how", ["flag", np.nan, np.inf, -np.inf])
def test_spoiled_member_gets_minus_inf(data, genomes, reference, monkeypatch, how):
    target = 3
    monkeypatch.setattr(search_module, "fit_flows", _diverge_member(genome_key(genomes[target]), how))
    evaluator = make_evaluator(data, group_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a divergence is not a training error
        fitness = evaluator(genomes)
    assert fitness[target] == -np.inf
    others = np.delete(np.arange(len(genomes)), target)
    assert np.array_equal(fitness[others], reference[others])
    assert evaluator.errors == []


def test_genuine_divergence_gets_minus_inf(data, genomes, reference, monkeypatch):
    # A real blow-up: the group holding one genome trains with an absurd
    # learning rate (group_size=1, so it is alone in its group).
    target = 1
    target_key = genome_key(genomes[target])

    def wrapper(masks, *args, config, **kwargs):
        if any(genome_key(np.asarray(g)) == target_key for g in masks):
            config = dataclasses.replace(config, learning_rate=1e6, max_grad_norm=1e12)
        return fit_flows(masks, *args, config=config, **kwargs)

    monkeypatch.setattr(search_module, "fit_flows", wrapper)
    evaluator = make_evaluator(data, group_size=1)
    fitness = evaluator(genomes)
    assert fitness[target] == -np.inf
    assert evaluator.errors == []  # diverged, did not raise
    others = np.delete(np.arange(len(genomes)), target)
    assert np.array_equal(fitness[others], reference[others])


def test_huge_learning_rate_diverges_without_error(data, genomes):
    config = dataclasses.replace(CONFIG, learning_rate=1e6, max_grad_norm=1e12)
    evaluator = make_evaluator(data, config=config)
    fitness = evaluator(genomes)
    assert (fitness == -np.inf).all()
    assert evaluator.errors == []


def test_raising_group_gets_minus_inf_and_a_warning(data, genomes, reference, monkeypatch):
    target_key = genome_key(genomes[4])

    def wrapper(masks, *args, **kwargs):
        if any(genome_key(np.asarray(g)) == target_key for g in masks):
            raise RuntimeError("CUDA out of memory (simulated)")
        return fit_flows(masks, *args, **kwargs)

    monkeypatch.setattr(search_module, "fit_flows", wrapper)
    evaluator = make_evaluator(data, group_size=2)  # groups {0,1}, {2,3}, {4,5}
    with pytest.warns(RuntimeWarning, match="simulated"):
        fitness = evaluator(genomes)
    assert np.array_equal(fitness[4:], [-np.inf, -np.inf])
    assert np.array_equal(fitness[:4], reference[:4])
    assert len(evaluator.errors) == 1
    assert "RuntimeError: CUDA out of memory (simulated)" in evaluator.errors[0]
    # Errors accumulate over calls.
    with pytest.warns(RuntimeWarning):
        evaluator(genomes[4:])
    assert len(evaluator.errors) == 2


def test_non_training_exception_is_retried_then_fails(data, genomes, monkeypatch):
    # _train_group catches training errors only; anything else escaping a task
    # is taken for a lost worker: the groups are retried one by one and a group
    # failing again gets -inf (it never crashes the search).
    calls = []

    def wrapper(masks, *args, **kwargs):
        calls.append(len(masks))
        raise KeyError("not a training error")

    monkeypatch.setattr(search_module, "fit_flows", wrapper)
    evaluator = make_evaluator(data, group_size=4)  # two groups
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitness = evaluator(genomes)
    assert (fitness == -np.inf).all()
    assert calls[-2:] == [3, 3]  # the retries, one per group
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert sum("worker was lost" in m for m in messages) == 1
    assert sum("worker lost twice" in m for m in messages) == 2
    assert len(evaluator.errors) == 3
