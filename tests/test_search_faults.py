"""The search across workers and devices: lost worker processes, device assignment."""

import os
import signal
import warnings

import numpy as np
import pytest
import torch

from skflowsearch._operators import random_genome
from skflowsearch._search import PopulationEvaluator, _train_group
from skflowsearch._training import TrainingConfig


def _kill_first_call(marker, *args):
    """Task that kills its own worker process the first time it runs anywhere."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL)  # atomic: only one caller wins
    except FileExistsError:
        return _train_group(*args)
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_always(*args):
    os.kill(os.getpid(), signal.SIGKILL)


def _evaluator(train_group, n_jobs=2):
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((60, 3))
    return PopulationEvaluator(
        Z[:48], Z[48:],
        config=TrainingConfig(hidden_layer_sizes=(4,), max_epochs=2),
        search_seed=1, batch_seed=2, devices=[torch.device("cpu")], n_jobs=n_jobs,
        group_size=1, size_penalty=0.0, score_offset=0.0, train_group=train_group,
    )


def _genomes(n):
    rng = np.random.default_rng(3)
    return [random_genome(2, 3, rng) for _ in range(n)]


def test_a_killed_worker_is_retried_and_gives_the_same_fitness(tmp_path):
    from functools import partial

    genomes = _genomes(4)
    expected = _evaluator(_train_group, n_jobs=1)(genomes)
    evaluator = _evaluator(partial(_kill_first_call, str(tmp_path / "killed")))
    with pytest.warns(RuntimeWarning, match="worker was lost"):
        fitness = evaluator(genomes)
    assert (tmp_path / "killed").exists()  # a worker really died
    np.testing.assert_array_equal(fitness, expected)
    assert len(evaluator.errors) == 1


def test_a_task_that_always_kills_its_worker_is_marked_failed():
    evaluator = _evaluator(_kill_always)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitness = evaluator(_genomes(1))
    assert fitness.tolist() == [-np.inf]
    messages = [str(w.message) for w in caught]
    assert any("worker was lost" in m for m in messages)
    assert sum("worker lost twice" in m for m in messages) == 1


# --- devices ------------------------------------------------------------------------


def test_candidate_batches_go_to_the_devices_round_robin():
    seen = []

    def record_device(masks, Z_train, Z_val, seeds, batch_seed, config, device):
        seen.append(device)
        n = len(masks)
        return np.zeros(n), np.zeros(n, dtype=bool), None

    evaluator = _evaluator(record_device, n_jobs=1)
    evaluator.devices = ["gpu-a", "gpu-b", "gpu-c"]  # sentinels: only the assignment is checked
    evaluator(_genomes(7))  # group_size=1: seven batches
    assert seen == ["gpu-a", "gpu-b", "gpu-c", "gpu-a", "gpu-b", "gpu-c", "gpu-a"]


def test_a_device_list_gives_the_single_device_result():
    from skflowsearch import StructureSearchFlow

    X = np.random.RandomState(0).standard_normal((80, 3))
    params = dict(n_layers=2, hidden_layer_sizes=(8,), population_size=2, n_offspring=2,
                  n_generations=1, fitness_epochs=2, max_epochs=3, n_candidates_per_batch=1,
                  random_state=0)
    one = StructureSearchFlow(device="cpu", **params).fit(X)
    several = StructureSearchFlow(device=["cpu", "cpu"], **params).fit(X)
    np.testing.assert_array_equal(one.evaluated_scores_, several.evaluated_scores_)
    np.testing.assert_array_equal(one.score_samples(X), several.score_samples(X))
