"""The search across workers and devices: lost worker processes, out of memory,
transient failures inside a whole search, device assignment, a search nested
in another joblib Parallel."""

import os
import signal
import threading
import warnings
import weakref
from functools import partial

import numpy as np
import pytest
import torch
from sklearn.utils.parallel import Parallel, delayed

import skflowsearch._search as search_module
import skflowsearch._search_flow as search_flow_module
from skflowsearch import CouplingFlow, StructureSearchFlow
from skflowsearch._genome import Genome
from skflowsearch._masks import alternating_masks
from skflowsearch._operators import random_genome
from skflowsearch._search import CandidateTrainer, GroupOutput, _train_group, mean_scores
from skflowsearch._training import TrainingConfig, fit_flows


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


def _trainer(train_group, n_jobs=2, group_size=1, devices=(torch.device("cpu"),)):
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((60, 3))
    trainer = CandidateTrainer(
        Z[:40], Z[40:50], config=TrainingConfig(hidden_layer_sizes=(4,), max_epochs=2, batch_size=10),
        width_choices=(0.5, 1.0), devices=list(devices), n_jobs=n_jobs, group_size=group_size,
        train_group=train_group,
    )
    return trainer, Z[50:]


def _genomes(n=1):
    genomes = [Genome(alternating_masks(2, 3), np.array([True, True]), 1)]
    rng = np.random.default_rng(0)
    while len(genomes) < n:
        genomes.append(Genome(random_genome(2, 3, rng), np.array([True, True]), 1))
    return genomes


def test_a_killed_worker_is_retried_and_gives_the_same_result(tmp_path):
    # One task: every retried task may land on a new worker that must import
    # torch first (seconds); retrying several tasks is covered in test_search.py.
    genomes = _genomes()
    reference, Z_select = _trainer(_train_group, n_jobs=1)
    expected = reference.train(genomes, [(1, 2)], Z_select)
    trainer, _ = _trainer(partial(_kill_first_call, str(tmp_path / "killed")))
    with pytest.warns(RuntimeWarning, match="worker was lost"):
        trained = trainer.train(genomes, [(1, 2)], Z_select)
    assert (tmp_path / "killed").exists()  # a worker really died
    np.testing.assert_array_equal(trained.selection_log_prob, expected.selection_log_prob)
    assert not trained.failed.any()
    assert len(trainer.errors) == 1


def test_a_task_that_always_kills_its_worker_is_marked_failed():
    trainer, Z_select = _trainer(_kill_always)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained = trainer.train(_genomes(), [(1, 2)], Z_select)
    assert trained.failed.tolist() == [[True]]
    assert np.isnan(trained.selection_log_prob).all()
    assert not trained.diverged.any()  # a failure, not a divergence: it may be retried
    messages = [str(w.message) for w in caught]
    assert any("worker was lost" in m for m in messages)
    assert sum("worker lost twice" in m for m in messages) == 1


# --- out of memory -------------------------------------------------------------------


class _Allocation:
    """Stands for the tensors of a training attempt; a weak reference tells when it is freed."""


def test_cuda_out_of_memory_frees_the_attempt_empties_the_cache_and_splits(monkeypatch):
    # On the CPU: the "CUDA" device only reaches the fake fit_flows (which
    # trains on the CPU) and _free_memory; torch.cuda.empty_cache is recorded.
    genomes = _genomes(3)
    events, attempts = [], []

    def out_of_memory_for_groups(masks, *args, device, **kwargs):
        events.append(f"fit {len(masks)}")
        if len(masks) > 1:
            allocation = _Allocation()  # held by this frame, as tensors would be
            attempts.append(weakref.ref(allocation))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return fit_flows(masks, *args, device="cpu", **kwargs)

    def empty_cache():
        events.append("empty_cache")
        # The failed attempt is already freed: there is something to give back.
        assert all(ref() is None for ref in attempts)

    monkeypatch.setattr(search_module, "fit_flows", out_of_memory_for_groups)
    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    trainer, Z_select = _trainer(_train_group, n_jobs=1, group_size=3, devices=[torch.device("cuda")])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # nothing failed
        trained = trainer.train(genomes, [(1, 2)], Z_select)
    assert events == ["fit 3", "empty_cache", "fit 1", "fit 2", "empty_cache", "fit 1", "fit 1"]
    assert not trained.failed.any() and trainer.errors == []
    monkeypatch.setattr(search_module, "fit_flows", fit_flows)
    reference, _ = _trainer(_train_group, n_jobs=1, group_size=1)
    np.testing.assert_allclose(trained.selection_log_prob,
                               reference.train(genomes, [(1, 2)], Z_select).selection_log_prob,
                               rtol=1e-5, atol=1e-6)


def test_a_candidate_out_of_cuda_memory_fails_and_is_never_scored_minus_inf(monkeypatch):
    def no_memory(masks, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(search_module, "fit_flows", no_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    trainer, Z_select = _trainer(_train_group, n_jobs=1, group_size=2, devices=[torch.device("cuda")])
    with pytest.warns(RuntimeWarning, match="could not be trained.*OutOfMemoryError"):
        trained = trainer.train(_genomes(2), [(1, 2)], Z_select)
    assert trained.failed.all() and not trained.diverged.any()
    assert np.isnan(mean_scores(trained)).all()  # NaN: retried when it comes back, not -inf


# --- transient failures inside a whole search ----------------------------------------


X = np.random.RandomState(0).standard_normal((60, 3)) @ np.array(
    [[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]])
SEARCH = dict(n_layers=3, hidden_layer_sizes=(8,), population_size=6, n_offspring=4,
              n_generations=2, max_epochs=5, batch_size=8, learning_rate=2e-2,
              n_candidates_per_batch=1, n_components=1, random_state=0)


def _failing_trainer(monkeypatch, fails):
    """Make the search's trainer lose the worker of every group ``fails(structure, budget)`` names."""
    calls = []

    def train_group(structure, Z_train, Z_val, Z_select, seeds, batch_seed, config, device, budget):
        failed = bool(fails(structure, budget))
        calls.append((len(structure[0]), dict(budget), failed))
        if failed:
            raise OSError("worker lost (simulated)")
        return _train_group(structure, Z_train, Z_val, Z_select, seeds, batch_seed, config,
                            device, budget)

    monkeypatch.setattr(search_flow_module, "CandidateTrainer",
                        partial(CandidateTrainer, train_group=train_group))
    return calls


def _fit_quietly(search):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return search.fit(X)


@pytest.fixture(scope="module")
def shallow_candidates_fail():
    """A search in which every candidate with a layer switched off fails transiently."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        calls = _failing_trainer(monkeypatch, lambda structure, budget: not structure[1].all())
        search = _fit_quietly(StructureSearchFlow(**SEARCH))
    return search, calls


def test_a_search_with_transient_failures_finishes(shallow_candidates_fail):
    search, calls = shallow_candidates_fail
    assert any(failed for _, _, failed in calls)  # failures did happen
    history = search.search_history_
    assert len(history) == SEARCH["n_generations"] + 1
    assert sum(r["n_failed"] for r in history) > 0
    assert all(np.isfinite(r["best"]) for r in history)
    shallow = ~search.evaluated_layers_.all(axis=1)
    assert shallow.any() and (~shallow).any()
    assert not np.isfinite(search.evaluated_scores_[shallow]).any()
    assert np.isfinite(search.evaluated_scores_[~shallow]).all()
    # A candidate that failed is never a finalist; the alternating masks stay the reference.
    entries = {r["entry"]: r for r in search.race_}
    assert "alternating" in entries
    assert entries["alternating"]["difference"] == 0.0
    assert np.isfinite(entries["alternating"]["score"])
    assert all(r["n_layers"] == SEARCH["n_layers"] for r in search.race_)
    assert sum(r["chosen"] for r in search.race_) == 1
    assert search.masks_.shape == (SEARCH["n_layers"], X.shape[1])
    assert np.isfinite(search.score_samples(X)).all()


def test_transient_failures_show_as_nan_in_evaluated_scores(shallow_candidates_fail):
    search, _ = shallow_candidates_fail
    shallow = ~search.evaluated_layers_.all(axis=1)
    assert np.isnan(search.evaluated_scores_[shallow]).all()


def test_a_search_whose_every_fitness_run_fails_ends_with_the_alternating_flow(monkeypatch):
    # Only the fitness runs (the ones with a step budget) fail: the evolution
    # learns nothing, no finalist qualifies, and the search keeps the
    # alternating incumbent: exactly CouplingFlow with the same settings.
    calls = _failing_trainer(monkeypatch, lambda structure, budget: "max_steps" in budget)
    search = _fit_quietly(StructureSearchFlow(**SEARCH))
    history = search.search_history_
    assert all(r["n_failed"] == r["n_evaluations"] for r in history)
    # Not cached: the failed parents are evaluated again with each generation's children.
    mu, n_offspring = SEARCH["population_size"], SEARCH["n_offspring"]
    n_parents = min(mu, history[0]["n_evaluations"])
    assert [r["n_evaluations"] for r in history[1:]] == (
        [n_offspring + n_parents] + [n_offspring + mu] * (SEARCH["n_generations"] - 1))
    assert [r["entry"] for r in search.race_] == ["alternating"]
    assert search.race_[0]["chosen"]
    flow_params = {k: SEARCH[k] for k in ("n_layers", "hidden_layer_sizes", "max_epochs",
                                          "batch_size", "learning_rate", "random_state")}
    flow = CouplingFlow(masks="alternating", **flow_params).fit(X)
    np.testing.assert_array_equal(search.masks_, flow.masks_)
    np.testing.assert_array_equal(search.score_samples(X), flow.score_samples(X))
    assert any(failed for _, _, failed in calls) and not all(failed for _, _, failed in calls)


def test_a_search_whose_every_run_fails_raises(monkeypatch):
    _failing_trainer(monkeypatch, lambda structure, budget: True)
    with pytest.raises(ValueError, match="every run of the search diverged .* or failed.*worker lost"):
        _fit_quietly(StructureSearchFlow(**SEARCH))


def test_a_device_list_gives_the_single_device_result():
    params = dict(SEARCH, n_generations=1, population_size=3, n_offspring=2)
    one = StructureSearchFlow(device="cpu", **params).fit(X)
    several = StructureSearchFlow(device=["cpu", "cpu"], **params).fit(X)
    np.testing.assert_array_equal(one.evaluated_scores_, several.evaluated_scores_)
    np.testing.assert_array_equal(one.score_samples(X), several.score_samples(X))


# --- a search inside a worker of another joblib Parallel ------------------------------


NESTED = dict(SEARCH, n_generations=1, population_size=4, n_offspring=4, n_candidates_per_batch=2)


def _fit_and_report(n_jobs):
    """Fit in whatever worker this runs in; the result, the warnings and the process."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search = StructureSearchFlow(**NESTED, n_jobs=n_jobs).fit(X)
    nested = [str(w.message) for w in caught if "inside a worker of another joblib" in str(w.message)]
    return search.evaluated_scores_, search.masks_, search.score_samples(X), nested, os.getpid()


@pytest.fixture(scope="module")
def alone():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StructureSearchFlow(**NESTED, n_jobs=1).fit(X)


def test_a_search_in_a_loky_worker_trains_sequentially_with_one_warning(alone):
    # As in GridSearchCV(StructureSearchFlow(n_jobs=2), n_jobs=2).
    reports = Parallel(n_jobs=2)(delayed(_fit_and_report)(n_jobs) for n_jobs in (2, 1))
    for n_jobs, (scores, masks, log_density, nested, pid) in zip((2, 1), reports):
        assert pid != os.getpid()  # it ran in a worker process
        np.testing.assert_array_equal(scores, alone.evaluated_scores_)
        np.testing.assert_array_equal(masks, alone.masks_)
        np.testing.assert_array_equal(log_density, alone.score_samples(X))
        assert len(nested) == (1 if n_jobs == 2 else 0), nested
    assert "n_jobs=2" in reports[0][3][0] and "set n_jobs=1" in reports[0][3][0]


def _train_recording_threads():
    """In a thread of an outer Parallel: train with n_jobs=2; the threads the groups ran in."""
    seen = set()

    def recording(*args):
        seen.add(threading.get_ident())
        n = len(args[0][0])
        return GroupOutput(np.zeros((n, len(args[3]))), np.zeros(n, dtype=bool),
                           np.zeros(n, dtype=int), np.zeros(n, dtype=int))

    trainer, Z_select = _trainer(recording, n_jobs=2, group_size=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(_genomes(4), [(1, 2)], Z_select)
        trainer.train(_genomes(4), [(3, 4)], Z_select)
    return threading.get_ident(), seen, [str(w.message) for w in caught]


def test_a_search_in_a_thread_of_another_parallel_trains_in_that_thread():
    (caller, seen, messages), = Parallel(n_jobs=2, backend="threading")(
        [delayed(_train_recording_threads)()])
    assert caller != threading.get_ident()  # a worker thread of the outer Parallel
    # Without the fallback, joblib would run the groups in threads of its own.
    assert seen == {caller}
    assert sum("inside a worker of another joblib Parallel" in m for m in messages) == 1  # once
