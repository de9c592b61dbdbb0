"""The (mu + lambda) evolutionary loop over coupling-mask genomes.

The loop knows nothing about flows: fitness comes from ``evaluate`` and new
genomes from the ``mate`` and ``mutate`` callables (by default those of
:mod:`skflowsearch._operators`). Fitness is cached by
:func:`~skflowsearch._operators.genome_key`, so no genome is evaluated twice.
"""

import numbers
import time
from dataclasses import dataclass

import numpy as np

from ._operators import genome_key

__all__ = ["SearchState", "mu_plus_lambda"]


@dataclass
class SearchState:
    """Everything the loop needs to go on after ``generation``; picklable.

    ``rng_state`` is the generator's ``bit_generator.state``, ``seconds`` the
    search time spent so far and ``done`` whether a stopping rule has fired.
    """

    generation: int
    parents: list
    fitness: np.ndarray
    cache: dict
    evaluations: list
    logbook: list
    stall: int
    rng_state: dict
    seconds: float
    done: bool


def mu_plus_lambda(population, evaluate, *, mu, n_offspring, cxpb, mutpb, n_generations,
                   mate, mutate, rng, patience=None, max_time=None, callback=None,
                   state=None, checkpoint=None):
    """Run a (mu + lambda) search maximising ``evaluate``.

    Generation 0 evaluates ``population`` and keeps its best ``mu``. Each next
    generation makes ``n_offspring`` children (crossover of two distinct
    random parents with probability ``cxpb``, mutation of a random parent with
    probability ``mutpb``, else a copy), evaluates the new ones and keeps the
    best ``mu`` of parents and children. An offspring tying a parent ranks
    before it, and a genome is selected at most once unless fewer than ``mu``
    distinct genomes exist. The best fitness therefore never decreases.

    Parameters
    ----------
    population : list of ndarray of bool
        Initial valid genomes, at least one; may be more or fewer than ``mu``.
    evaluate : callable
        ``evaluate(genomes) -> ndarray`` of float fitness, one per genome,
        higher is better. Called at most once per generation, only with
        genomes never evaluated before, deduplicated, never with an empty
        list. Non-finite values (``-inf`` for a failed candidate, but also
        ``nan`` or ``+inf``) are stored as ``-inf``.
    mu : int
        Number of genomes kept each generation.
    n_offspring : int
        Children made each generation (lambda).
    cxpb, mutpb : float
        Probabilities of crossover and mutation, ``cxpb + mutpb <= 1``. With
        a single parent, crossover falls back to mutation.
    n_generations : int
        Generations after generation 0.
    mate : callable
        ``mate(a, b, rng) -> genome``.
    mutate : callable
        ``mutate(genome, rng) -> genome``.
    rng : numpy.random.Generator
        The only source of randomness; equal seeds give equal runs.
    patience : int, optional
        Stop after this many consecutive generations without a strict
        improvement of the best fitness.
    max_time : float, optional
        Stop after the generation during which this many seconds passed.
    callback : callable, optional
        ``callback(record, population, fitness)`` after each generation;
        returning ``True`` stops the search. It must not modify its arguments.
    state : SearchState, optional
        Resume from this state (as passed to ``checkpoint``) instead of
        starting from ``population``; ``rng`` is reset to the saved state, so
        the run ends exactly as an uninterrupted one would.
    checkpoint : callable, optional
        ``checkpoint(state)`` with a :class:`SearchState` after each
        generation. The state shares containers with the running loop, so
        serialize it right away rather than keeping it.

    Returns
    -------
    population : list of ndarray of bool
        The final selected genomes, best first.
    fitness : ndarray of float
        Their fitness.
    logbook : list of dict
        One record per generation, with keys ``generation``,
        ``n_evaluations``, ``n_failed``, ``best``, ``mean``, ``std``,
        ``worst`` and ``seconds``; mean and std are over finite fitness.
    evaluations : list of tuple
        ``(genome, fitness)`` for every evaluated genome, in order.
    """
    _check_params(population, mu, n_offspring, cxpb, mutpb, n_generations, rng,
                  patience, max_time)
    if state is None:
        state = SearchState(generation=-1, parents=list(population), fitness=np.empty(0),
                            cache={}, evaluations=[], logbook=[], stall=0,
                            rng_state=rng.bit_generator.state, seconds=0.0, done=False)
    else:
        rng.bit_generator.state = state.rng_state
    parents, fitness, cache = state.parents, state.fitness, state.cache
    evaluations, logbook, stall = state.evaluations, state.logbook, state.stall
    start = time.perf_counter() - state.seconds
    for generation in range(state.generation + 1, 0 if state.done else n_generations + 1):
        tic = time.perf_counter()
        if generation == 0:
            offspring = []
        else:
            offspring = _vary(parents, n_offspring, cxpb, mutpb, mate, mutate, rng)
        n_new, n_failed = _evaluate_new(offspring + parents, evaluate, cache, evaluations)
        candidates = offspring + parents  # offspring first: they win ties
        scores = np.array([cache[genome_key(g)] for g in candidates])
        parents, fitness = _select(candidates, scores, mu)
        record = _record(generation, n_new, n_failed, fitness, time.perf_counter() - tic)
        stall = stall + 1 if logbook and record["best"] <= logbook[-1]["best"] else 0
        logbook.append(record)
        # The callback runs every generation, also the one a stopping rule ends.
        asked_to_stop = callback is not None and bool(callback(record, list(parents), fitness.copy()))
        done = (asked_to_stop
                or (patience is not None and stall >= patience)
                or (max_time is not None and time.perf_counter() - start >= max_time))
        if checkpoint is not None:
            checkpoint(SearchState(generation, parents, fitness, cache, evaluations, logbook,
                                   stall, rng.bit_generator.state,
                                   time.perf_counter() - start, done))
        if done:
            break
    return parents, fitness, logbook, evaluations


def _check_params(population, mu, n_offspring, cxpb, mutpb, n_generations, rng,
                  patience, max_time):
    """Raise ``ValueError`` (``TypeError`` for ``rng``) on bad loop settings."""
    if len(population) == 0:
        raise ValueError("population must hold at least one genome.")
    for name, value, low in (("mu", mu, 1), ("n_offspring", n_offspring, 1),
                             ("n_generations", n_generations, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    for name, value in (("cxpb", cxpb), ("mutpb", mutpb)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
    if cxpb + mutpb > 1.0 + 1e-12:
        raise ValueError(f"cxpb + mutpb must be <= 1, got {cxpb} + {mutpb}.")
    if patience is not None and (isinstance(patience, bool)
                                 or not isinstance(patience, numbers.Integral) or patience < 1):
        raise ValueError(f"patience must be None or an integer >= 1, got {patience!r}.")
    if max_time is not None and not max_time >= 0:
        raise ValueError(f"max_time must be None or >= 0, got {max_time!r}.")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}.")


def _vary(parents, n_offspring, cxpb, mutpb, mate, mutate, rng):
    """Make ``n_offspring`` children by crossover, mutation or copy."""
    children = []
    for _ in range(n_offspring):
        u = rng.random()
        if u < cxpb and len(parents) >= 2:
            i, j = rng.choice(len(parents), size=2, replace=False)
            children.append(mate(parents[i], parents[j], rng))
        elif u < cxpb + mutpb:
            children.append(mutate(parents[rng.integers(len(parents))], rng))
        else:
            children.append(parents[rng.integers(len(parents))].copy())
    return children


def _evaluate_new(genomes, evaluate, cache, evaluations):
    """Evaluate the uncached genomes once each; return ``(n_new, n_failed)``."""
    new = {}
    for genome in genomes:
        key = genome_key(genome)
        if key not in cache and key not in new:
            new[key] = genome
    if not new:
        return 0, 0
    values = np.asarray(evaluate(list(new.values())), dtype=float)
    if values.shape != (len(new),):
        raise ValueError(f"evaluate returned shape {values.shape} for {len(new)} genomes.")
    failed = ~np.isfinite(values)
    values = np.where(failed, -np.inf, values)
    for (key, genome), value in zip(new.items(), values):
        cache[key] = float(value)
        evaluations.append((genome, float(value)))
    return len(new), int(failed.sum())


def _select(candidates, scores, mu):
    """Best ``mu`` by fitness (stable, so earlier candidates win ties), unique first."""
    order = np.argsort(-scores, kind="stable")
    seen, chosen, repeats = set(), [], []
    for i in order:
        key = genome_key(candidates[i])
        (repeats if key in seen else chosen).append(i)
        seen.add(key)
    chosen = sorted((chosen + repeats)[:mu], key=lambda i: -scores[i])  # stable: keeps ties
    return [candidates[i] for i in chosen], scores[chosen]


def _record(generation, n_new, n_failed, fitness, seconds):
    """One logbook row; mean and std are over the finite fitness values."""
    finite = fitness[np.isfinite(fitness)]
    return {
        "generation": generation,
        "n_evaluations": n_new,
        "n_failed": n_failed,
        "best": float(fitness.max()),
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std()) if finite.size else float("nan"),
        "worst": float(fitness.min()),
        "seconds": seconds,
    }
