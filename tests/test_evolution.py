import functools
import time

import numpy as np
import pytest

from skflowsearch import _operators as ops
from skflowsearch._evolution import MAX_REDRAWS, mu_plus_lambda

SHAPE = (6, 8)
TARGET = ops.random_genome(*SHAPE, np.random.default_rng(2024))
RECORD_KEYS = ["generation", "n_evaluations", "n_failed", "best", "mean", "std", "worst",
               "seconds"]


def hamming_fitness(genomes):
    return np.array([-float((g != TARGET).sum()) for g in genomes])


class Recorder:
    """Wrap a fitness function, remembering every batch it is called with."""

    def __init__(self, fitness):
        self.fitness = fitness
        self.batches = []

    def __call__(self, genomes):
        self.batches.append([ops.genome_key(g) for g in genomes])
        return self.fitness(genomes)


def run(evaluate=hamming_fitness, seed=0, n_init=20, **kwargs):
    rng = np.random.default_rng(seed)
    population = [ops.random_genome(*SHAPE, rng) for _ in range(n_init)]
    params = dict(mu=20, n_offspring=40, cxpb=0.4, n_generations=30,
                  mate=ops.crossover,
                  mutate=functools.partial(ops.mutate, rate=1 / TARGET.size), rng=rng)
    params.update(kwargs)
    return mu_plus_lambda(population, evaluate, **params)


def stop_at_optimum(record, population, fitness):
    return record["best"] == 0


def test_target_is_valid():
    assert ops.is_valid(TARGET)


def test_finds_hidden_target():
    population, fitness, logbook, _ = run(n_generations=100, callback=stop_at_optimum)
    assert fitness[0] == 0
    np.testing.assert_array_equal(population[0], TARGET)
    assert logbook[-1]["best"] == 0 and len(logbook) <= 101
    assert logbook[0]["best"] < 0  # the search, not the initial draw, found it


def test_returns_and_logbook_shape():
    population, fitness, logbook, evaluations = run(n_generations=5)
    assert len(population) == 20 and fitness.shape == (20,)
    assert all(ops.is_valid(g) for g in population)
    assert list(fitness) == sorted(fitness, reverse=True)  # best first
    np.testing.assert_array_equal(fitness, hamming_fitness(population))
    assert [r["generation"] for r in logbook] == list(range(6))
    assert all(list(r) == RECORD_KEYS for r in logbook)
    assert logbook[0]["n_evaluations"] == 20
    assert sum(r["n_evaluations"] for r in logbook) == len(evaluations)
    for genome, value in evaluations:
        assert value == hamming_fitness([genome])[0]
    last = logbook[-1]
    assert last["best"] == fitness.max() and last["worst"] == fitness.min()
    assert last["mean"] == pytest.approx(fitness.mean())
    assert last["std"] == pytest.approx(fitness.std())


def test_elitism():
    bests = []

    def callback(record, population, fitness):
        np.testing.assert_array_equal(fitness, hamming_fitness(population))
        bests.append(fitness.max())

    _, _, logbook, _ = run(n_generations=25, cxpb=0.2, callback=callback)
    best = [r["best"] for r in logbook]
    assert best == bests
    assert all(b1 >= b0 for b0, b1 in zip(best, best[1:]))
    assert best[-1] > best[0]


def test_evaluate_never_sees_a_genome_twice():
    evaluate = Recorder(hamming_fitness)
    run(evaluate, n_generations=30, cxpb=0.5)  # crossovers of similar parents repeat often
    keys = [k for batch in evaluate.batches for k in batch]
    assert all(evaluate.batches)  # never an empty call
    assert len(keys) == len(set(keys))
    assert len(evaluate.batches) <= 31


def test_duplicate_initial_population():
    evaluate = Recorder(hamming_fitness)
    genome = ops.random_genome(*SHAPE, np.random.default_rng(5))
    population, fitness, logbook, evaluations = mu_plus_lambda(
        [genome, genome.copy(), genome.copy()], evaluate, mu=3, n_offspring=4, cxpb=0.0,
        n_generations=2, mate=ops.crossover,
        mutate=functools.partial(ops.mutate, rate=0.1), rng=np.random.default_rng(0))
    # The copies are evaluated once; every later evaluation is of a new child.
    assert evaluate.batches[0] == [ops.genome_key(genome)]
    assert [r["n_evaluations"] for r in logbook] == [1, 4, 4]
    keys = [k for batch in evaluate.batches for k in batch]
    assert len(keys) == len(set(keys)) == len(evaluations) == 9
    assert len(population) == 3


def test_fewer_than_mu_distinct_genomes_keeps_repeats():
    # Nothing new can be made (mutation only ever returns the parent): the
    # children are redrawn, then dropped, and the repeats fill the population.
    genome = ops.random_genome(*SHAPE, np.random.default_rng(5))
    calls = []

    def copy_mutation(g, rng):
        calls.append(1)
        return g.copy()

    population, fitness, logbook, evaluations = mu_plus_lambda(
        [genome, genome.copy()], hamming_fitness, mu=3, n_offspring=4, cxpb=0.0,
        n_generations=2, mate=ops.crossover, mutate=copy_mutation, rng=np.random.default_rng(0))
    assert [r["n_evaluations"] for r in logbook] == [1, 0, 0]
    assert len(evaluations) == 1 and len(population) == 2
    assert all(ops.genome_key(g) == ops.genome_key(genome) for g in population)
    assert len(calls) == 2 * 4 * MAX_REDRAWS  # every child redrawn MAX_REDRAWS times


def test_initial_population_larger_than_mu():
    rng = np.random.default_rng(3)
    population = [ops.random_genome(*SHAPE, rng) for _ in range(30)]
    top = np.sort(hamming_fitness(population))[::-1][:10]
    kept, fitness, logbook, _ = mu_plus_lambda(
        population, hamming_fitness, mu=10, n_offspring=5, cxpb=0.5,
        n_generations=0, mate=ops.crossover,
        mutate=functools.partial(ops.mutate, rate=0.1), rng=rng)
    assert len(kept) == 10 and len(logbook) == 1
    np.testing.assert_array_equal(fitness, top)


def test_offspring_win_ties_on_plateau():
    seen = {}

    def flat(genomes):
        return np.zeros(len(genomes))

    def callback(record, population, fitness):
        seen[record["generation"]] = {ops.genome_key(g) for g in population}

    _, _, logbook, evaluations = run(flat, n_init=5, mu=5, n_offspring=20, cxpb=0.0,
                                     n_generations=1, callback=callback)
    assert logbook[1]["n_evaluations"] >= 5
    new = {ops.genome_key(g) for g, _ in evaluations[5:]}
    assert seen[1] <= new and not seen[1] & seen[0]


def test_failed_candidates_never_win():
    def fragile(genomes):
        fitness = hamming_fitness(genomes)
        fitness[[bool(g[0, 0]) for g in genomes]] = -np.inf
        fitness[[bool(g[1, 1]) and not g[0, 0] for g in genomes]] = np.nan
        return fitness

    population, fitness, logbook, evaluations = run(fragile, n_generations=15)
    assert sum(r["n_failed"] for r in logbook) > 0
    assert sum(r["n_failed"] for r in logbook) == sum(not np.isfinite(f) for _, f in evaluations)
    for genome, value in evaluations:  # diverged ones are -inf, the others their fitness
        expected = fragile([genome])[0]
        if np.isfinite(expected):
            assert value == expected
        elif expected == -np.inf:
            assert value == -np.inf
    assert all(np.isfinite(r["best"]) and np.isfinite(r["mean"]) for r in logbook)
    assert np.isfinite(fitness[0]) and not population[0][0, 0]


def test_no_child_copies_a_parent_or_an_evaluated_genome():
    # Mutation returns its parent half of the time and crossover of similar
    # parents often repeats one: those children are redrawn, so every
    # generation still brings n_offspring genomes never seen before.
    def lazy_mutation(genome, rng):
        if rng.random() < 0.5:
            return genome.copy()
        return ops.mutate(genome, rng, rate=1 / TARGET.size)

    parents_of = {}

    def callback(record, population, fitness):
        parents_of[record["generation"] + 1] = {ops.genome_key(g) for g in population}

    evaluate = Recorder(hamming_fitness)
    _, _, logbook, evaluations = run(evaluate, n_init=6, mu=6, n_offspring=8, cxpb=0.5,
                                     n_generations=8, mutate=lazy_mutation, callback=callback)
    assert [r["n_evaluations"] for r in logbook] == [6] + [8] * 8
    seen = set(evaluate.batches[0])
    for generation, batch in enumerate(evaluate.batches[1:], start=1):
        assert not set(batch) & parents_of[generation]
        assert not set(batch) & seen
        assert len(set(batch)) == len(batch)
        seen |= set(batch)


def test_children_that_cannot_be_new_are_dropped():
    # Mutation only ever makes one genome: it is evaluated once, then every
    # child equal to it is redrawn MAX_REDRAWS times and dropped.
    rng = np.random.default_rng(4)
    start, only_child = (ops.random_genome(*SHAPE, rng) for _ in range(2))
    calls = []

    def one_child(genome, rng):
        calls.append(1)
        return only_child.copy()

    evaluate = Recorder(hamming_fitness)
    _, _, logbook, evaluations = mu_plus_lambda(
        [start], evaluate, mu=2, n_offspring=3, cxpb=0.0, n_generations=2, mate=ops.crossover,
        mutate=one_child, rng=np.random.default_rng(0))
    assert [r["n_evaluations"] for r in logbook] == [1, 1, 0]
    assert evaluate.batches == [[ops.genome_key(start)], [ops.genome_key(only_child)]]
    # Generation 1: the first child is new, the other two are redrawn to the end;
    # generation 2: all three are.
    assert len(calls) == 1 + 2 * MAX_REDRAWS + 3 * MAX_REDRAWS


@pytest.mark.parametrize("first_value", [np.nan, -np.inf, np.inf])
def test_transient_failure_is_not_cached_divergence_is(first_value):
    # Genome A fails the first time it is evaluated; afterwards it scores 0,
    # the best possible. Mutation always proposes A again.
    rng = np.random.default_rng(2)
    a, b = (ops.random_genome(*SHAPE, rng) for _ in range(2))
    key_a = ops.genome_key(a)
    seen = []

    def flaky(genomes):
        values = hamming_fitness(genomes) - 1.0  # all below 0
        for i, g in enumerate(genomes):
            if ops.genome_key(g) == key_a:
                values[i] = first_value if key_a not in seen else 0.0
                seen.append(key_a)
        return values

    fitness_seen = []
    population, fitness, logbook, evaluations = mu_plus_lambda(
        [a, b], flaky, mu=1, n_offspring=3, cxpb=0.0, n_generations=2, mate=ops.crossover,
        mutate=lambda g, r: a.copy(), rng=np.random.default_rng(0),
        callback=lambda record, population, fitness: fitness_seen.append(fitness[0]))
    assert logbook[0]["n_failed"] == 1
    # Generation 0: A ranks last, B survives.
    assert fitness_seen[0] == hamming_fitness([b])[0] - 1.0
    if np.isnan(first_value):
        # Not cached: A comes back as a child, is evaluated again and wins.
        assert seen == [key_a, key_a]
        assert [r["n_evaluations"] for r in logbook] == [2, 1, 0]
        assert fitness[0] == 0.0 and ops.genome_key(population[0]) == key_a
    else:
        # Cached as -inf: A is never evaluated again, B stays the best.
        assert seen == [key_a]
        assert [r["n_evaluations"] for r in logbook] == [2, 0, 0]
        assert fitness[0] == hamming_fitness([b])[0] - 1.0
        assert [v for g, v in evaluations if ops.genome_key(g) == key_a] == [-np.inf]


def test_a_failed_parent_is_evaluated_again():
    # A transient failure that survives selection (mu is larger than the
    # population) is evaluated again with the next generation.
    rng = np.random.default_rng(3)
    a, b = (ops.random_genome(*SHAPE, rng) for _ in range(2))
    key_a = ops.genome_key(a)
    evaluate_calls = []

    def flaky(genomes):
        evaluate_calls.append([ops.genome_key(g) for g in genomes])
        values = hamming_fitness(genomes)
        if len(evaluate_calls) == 1:
            values[[ops.genome_key(g) == key_a for g in genomes]] = np.nan
        return values

    population, fitness, logbook, _ = mu_plus_lambda(
        [a, b], flaky, mu=4, n_offspring=1, cxpb=0.0, n_generations=1, mate=ops.crossover,
        mutate=functools.partial(ops.mutate, rate=0.1), rng=np.random.default_rng(0))
    assert key_a in evaluate_calls[1]
    assert logbook[1]["n_failed"] == 0
    assert key_a in {ops.genome_key(g) for g in population}
    assert np.isfinite(fitness).all()


def test_evaluations_record_transient_failures_as_nan():
    rng = np.random.default_rng(2)
    a, b = (ops.random_genome(*SHAPE, rng) for _ in range(2))
    _, _, _, evaluations = mu_plus_lambda(
        [a, b], lambda gs: np.array([np.nan, -np.inf]), mu=2, n_offspring=1, cxpb=0.0,
        n_generations=0, mate=ops.crossover, mutate=functools.partial(ops.mutate, rate=0.1),
        rng=np.random.default_rng(0))
    values = [v for _, v in evaluations]
    assert np.isnan(values[0]) and values[1] == -np.inf


def test_all_failed_does_not_crash():
    _, fitness, logbook, _ = run(lambda gs: np.full(len(gs), -np.inf), n_generations=2)
    assert np.all(fitness == -np.inf)
    assert logbook[-1]["best"] == -np.inf and np.isnan(logbook[-1]["mean"])
    assert logbook[0]["n_failed"] == 20


def test_patience_stops_early():
    _, _, logbook, _ = run(lambda gs: np.zeros(len(gs)), n_generations=50, patience=3)
    assert len(logbook) == 4


def test_patience_resets_on_improvement():
    _, _, logbook, _ = run(n_generations=200, patience=5)
    best = [r["best"] for r in logbook]
    stalls = [0]
    for b0, b1 in zip(best, best[1:]):
        stalls.append(stalls[-1] + 1 if b1 <= b0 else 0)
    assert stalls[-1] == 5 and max(stalls[:-1]) < 5 and len(logbook) < 201
    assert 0 in stalls[1:]  # it did improve, and the counter was reset


def test_max_time_stops_early():
    # A zero budget is spent during generation 0: exactly one record.
    _, _, logbook, _ = run(hamming_fitness, n_generations=10_000, max_time=0)
    assert len(logbook) == 1
    # A budget that outlasts several generations still stops the loop: each
    # generation sleeps, so the elapsed time must pass the budget eventually.
    def slow(genomes):
        time.sleep(0.01)
        return hamming_fitness(genomes)

    _, _, logbook, _ = run(slow, n_generations=10_000, max_time=0.05)
    assert 1 <= len(logbook) < 10_001
    assert sum(r["seconds"] for r in logbook[:-1]) < 0.05


def test_callback_stops_early():
    records = []

    def callback(record, population, fitness):
        records.append(record)
        assert len(population) == len(fitness) == 20
        return record["generation"] == 3

    _, _, logbook, _ = run(n_generations=20, callback=callback)
    assert len(logbook) == 4 and records == logbook


def test_single_parent_falls_back_to_mutation():
    def mate(a, b, rng):
        raise AssertionError("crossover needs two parents")

    population, _, logbook, _ = run(n_init=1, mu=1, n_offspring=5, cxpb=1.0,
                                    n_generations=5, mate=mate)
    assert len(population) == 1 and sum(r["n_evaluations"] for r in logbook[1:]) > 0


def test_same_seed_same_run():
    columns = [k for k in RECORD_KEYS if k != "seconds"]
    pop1, fit1, log1, ev1 = run(seed=7, n_generations=10)
    pop2, fit2, log2, ev2 = run(seed=7, n_generations=10)
    assert [[r[k] for k in columns] for r in log1] == [[r[k] for k in columns] for r in log2]
    np.testing.assert_array_equal(fit1, fit2)
    np.testing.assert_array_equal(np.stack(pop1), np.stack(pop2))
    assert [ops.genome_key(g) for g, _ in ev1] == [ops.genome_key(g) for g, _ in ev2]
    _, _, _, ev3 = run(seed=8, n_generations=10)
    assert [ops.genome_key(g) for g, _ in ev1] != [ops.genome_key(g) for g, _ in ev3]


def test_logbook_to_dataframe():
    pd = pytest.importorskip("pandas")
    _, _, logbook, _ = run(n_generations=3)
    frame = pd.DataFrame(logbook)
    assert list(frame.columns) == RECORD_KEYS and len(frame) == 4
    assert frame["best"].is_monotonic_increasing


@pytest.mark.parametrize("kwargs, error", [
    (dict(cxpb=-0.1), "cxpb"),
    (dict(cxpb=1.1), "cxpb"),
    (dict(mu=0), "mu"),
    (dict(n_offspring=0), "n_offspring"),
    (dict(n_generations=-1), "n_generations"),
    (dict(patience=0), "patience"),
    (dict(max_time=-1), "max_time"),
    (dict(n_init=0), "population"),
])
def test_bad_arguments_raise(kwargs, error):
    with pytest.raises(ValueError, match=error):
        run(**kwargs)


def test_bad_rng_raises():
    with pytest.raises(TypeError, match="Generator"):
        run(rng=0)


def test_bad_evaluate_output_raises():
    with pytest.raises(ValueError, match="evaluate returned"):
        run(lambda gs: np.zeros(len(gs) + 1))


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("stop_after", [0, 3, 7])
def test_resume_from_checkpoint_matches_uninterrupted_run(stop_after):
    import pickle

    full_population, full_fitness, full_log, full_evals = run(n_generations=12)

    saved = []

    def checkpoint(state):
        saved.append(pickle.dumps(state))  # serialized at once, as a file would be
        if state.generation == stop_after:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run(n_generations=12, checkpoint=checkpoint)
    state = pickle.loads(saved[-1])
    assert state.generation == stop_after
    before = {ops.genome_key(g) for g, _ in state.evaluations}

    evaluated_after_resume = []

    def counting_fitness(genomes):
        evaluated_after_resume.extend(ops.genome_key(g) for g in genomes)
        return hamming_fitness(genomes)

    # A fresh rng with another seed: resuming must restore the saved rng state.
    population, fitness, log, evals = run(counting_fitness, seed=123, n_generations=12, state=state)
    assert [ops.genome_key(g) for g in population] == [ops.genome_key(g) for g in full_population]
    np.testing.assert_array_equal(fitness, full_fitness)
    assert [r["best"] for r in log] == [r["best"] for r in full_log]
    assert [ops.genome_key(g) for g, _ in evals] == [ops.genome_key(g) for g, _ in full_evals]
    # Nothing evaluated before the interruption was evaluated again.
    assert before.isdisjoint(evaluated_after_resume)


def test_resume_of_a_finished_search_evaluates_nothing():
    saved = []
    run(lambda gs: np.zeros(len(gs)), n_generations=50, patience=2,
        checkpoint=lambda state: saved.append(state))
    final = saved[-1]
    assert final.done

    def must_not_run(genomes):
        raise AssertionError("a finished search must not evaluate again")

    population, _, log, _ = run(must_not_run, n_generations=50, patience=2, state=final)
    assert len(log) == len(final.logbook)


@pytest.mark.parametrize("stop", [dict(patience=2), dict(max_time=0)])
def test_callback_sees_the_generation_a_stopping_rule_ends(stop):
    seen = []
    _, _, logbook, _ = run(lambda gs: np.zeros(len(gs)), n_generations=50,
                           callback=lambda record, *_: seen.append(record["generation"]), **stop)
    assert seen == [r["generation"] for r in logbook]
