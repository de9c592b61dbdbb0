"""The (mu + lambda) evolutionary loop over coupling-mask genomes.

The loop knows nothing about flows: fitness comes from ``evaluate``, new
genomes from the ``mate`` and ``mutate`` callables and their identity from
``key``. Fitness is cached by key, so no genome is evaluated twice, and no
child repeats its parent or an evaluated genome (it is redrawn).
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


def mu_plus_lambda(population, evaluate, *, mu, n_offspring, cxpb, n_generations,
                   mate, mutate, rng, key=genome_key, patience=None, max_time=None,
                   callback=None, state=None, checkpoint=None):
    """Run a (mu + lambda) search maximising ``evaluate``.

    Generation 0 evaluates ``population`` and keeps its best ``mu``. Each next
    generation makes up to ``n_offspring`` children (crossover of two distinct
    random parents with probability ``cxpb``, else mutation of a random
    parent; a child equal to a parent, to another child or to an evaluated
    genome is redrawn, at most ``MAX_REDRAWS`` times, then dropped), evaluates
    them and keeps the best ``mu`` of parents and children. An offspring tying
    a parent ranks before it, and a genome is selected at most once unless
    fewer than ``mu`` distinct genomes exist. The best fitness therefore never
    decreases.

    Parameters
    ----------
    population : list of ndarray of bool
        Initial valid genomes, at least one; may be more or fewer than ``mu``.
    evaluate : callable
        ``evaluate(genomes) -> ndarray`` of float fitness, one per genome,
        higher is better. Called at most once per generation, only with
        genomes never evaluated before, deduplicated, never with an empty
        list. ``nan`` marks a candidate whose evaluation failed for a
        transient reason (a lost worker, out of memory): it ranks last in its
        generation and is not cached, so it may be evaluated again later.
        Other non-finite values (``-inf`` for a diverged candidate, ``+inf``)
        are cached as ``-inf``.
    mu : int
        Number of genomes kept each generation.
    n_offspring : int
        Children made each generation (lambda).
    cxpb : float
        Probability that a child is a crossover (else a mutation). With a
        single parent, crossover falls back to mutation.
    n_generations : int
        Generations after generation 0.
    mate : callable
        ``mate(a, b, rng) -> genome``.
    mutate : callable
        ``mutate(genome, rng) -> genome``.
    rng : numpy.random.Generator
        The only source of randomness; equal seeds give equal runs.
    key : callable, default=genome_key
        ``key(genome) -> hashable``, equal for genomes that are the same
        candidate.
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
        ``(genome, fitness)`` for every evaluation, in order (``nan`` for a
        transient failure, which may be followed by a later evaluation of
        the same genome).
    """
    _check_params(population, mu, n_offspring, cxpb, n_generations, rng, patience, max_time)
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
            offspring = _vary(parents, n_offspring, cxpb, mate, mutate, rng, key, cache)
        n_new, n_failed, _ = _evaluate_new(offspring + parents, evaluate, cache, evaluations, key)
        candidates = offspring + parents  # offspring first: they win ties
        scores = np.array([cache.get(key(g), -np.inf) for g in candidates])
        parents, fitness = _select(candidates, scores, mu, key)
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


def _check_params(population, mu, n_offspring, cxpb, n_generations, rng, patience, max_time):
    """Raise ``ValueError`` (``TypeError`` for ``rng``) on bad loop settings."""
    if len(population) == 0:
        raise ValueError("population must hold at least one genome.")
    for name, value, low in (("mu", mu, 1), ("n_offspring", n_offspring, 1),
                             ("n_generations", n_generations, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    if not 0.0 <= cxpb <= 1.0:
        raise ValueError(f"cxpb must be in [0, 1], got {cxpb!r}.")
    if patience is not None and (isinstance(patience, bool)
                                 or not isinstance(patience, numbers.Integral) or patience < 1):
        raise ValueError(f"patience must be None or an integer >= 1, got {patience!r}.")
    if max_time is not None and not max_time >= 0:
        raise ValueError(f"max_time must be None or >= 0, got {max_time!r}.")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}.")


MAX_REDRAWS = 20


def _vary(parents, n_offspring, cxpb, mate, mutate, rng, key, cache):
    """Up to ``n_offspring`` new children by crossover or mutation, none seen before."""
    seen = set(cache) | {key(p) for p in parents}
    children = []
    for _ in range(n_offspring):
        for _ in range(MAX_REDRAWS):
            if rng.random() < cxpb and len(parents) >= 2:
                i, j = rng.choice(len(parents), size=2, replace=False)
                child = mate(parents[i], parents[j], rng)
            else:
                child = mutate(parents[rng.integers(len(parents))], rng)
            if key(child) not in seen:
                seen.add(key(child))
                children.append(child)
                break
    return children


def _evaluate_new(genomes, evaluate, cache, evaluations, key):
    """Evaluate the uncached genomes once each; return ``(n_new, n_failed, n_transient)``.

    Transient failures (``nan``) are not cached.
    """
    new = {}
    for genome in genomes:
        k = key(genome)
        if k not in cache and k not in new:
            new[k] = genome
    if not new:
        return 0, 0, 0
    values = np.asarray(evaluate(list(new.values())), dtype=float)
    if values.shape != (len(new),):
        raise ValueError(f"evaluate returned shape {values.shape} for {len(new)} genomes.")
    transient = np.isnan(values)
    values = np.where(np.isfinite(values) | transient, values, -np.inf)
    for (k, genome), value, lost in zip(new.items(), values, transient):
        evaluations.append((genome, float(value)))  # NaN stays NaN here: it was not evaluated
        if not lost:
            cache[k] = float(value)
    return len(new), int(np.sum(~np.isfinite(values))), int(transient.sum())


def _select(candidates, scores, mu, key):
    """Best ``mu`` by fitness (stable, so earlier candidates win ties), unique first."""
    order = np.argsort(-scores, kind="stable")
    seen, chosen, repeats = set(), [], []
    for i in order:
        k = key(candidates[i])
        (repeats if k in seen else chosen).append(i)
        seen.add(k)
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
