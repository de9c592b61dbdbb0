"""``StructureSearchFlow``: a coupling flow whose masks are found by evolution."""

import numbers
import os
from functools import partial

import joblib
import numpy as np
from sklearn.utils import check_scalar

from ._base import BaseFlow, draw_seeds
from ._evolution import mu_plus_lambda
from ._masks import alternating_masks, random_masks
from ._operators import crossover, genome_key, mutate, random_genome, repair
from ._search import PopulationEvaluator, genome_seed


class StructureSearchFlow(BaseFlow):
    """Affine coupling flow whose masks are searched by a (mu+lambda) evolution.

    A genome is the flow's stack of masks, an ``(n_layers, n_features)``
    boolean array. Its fitness is the validation log-likelihood of a flow with
    those masks after ``fitness_epochs`` epochs (minus ``size_penalty`` per
    effective parameter). The initial population holds the alternating masks
    and random halves, the structures the search replaces, so with elitism the
    search never ends below them on its own fitness; the rest are random
    genomes. Each generation makes ``n_offspring`` children by crossover or
    mutation, trains the new ones as population-stacked models, in parallel
    with joblib, and keeps the best ``population_size`` of parents and
    children. Finally the best masks are trained with the full budget.

    Every genome keeps these invariants: each layer conditions on at least one
    feature and transforms at least one, and (for ``n_layers >= 2``) every
    feature is transformed in some layer.

    Parameters
    ----------
    n_layers : int, default=8
        Number of coupling layers of every candidate.
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Hidden widths of each coupling layer's tanh MLP.
    population_size : int, default=8
        Genomes kept each generation (mu).
    n_offspring : int, default=16
        Children made each generation (lambda).
    n_generations : int, default=10
        Generations after the initial one.
    crossover_proba : float, default=0.3
        Probability that a child is a crossover of two parents (uniform per
        layer or one-point over layers).
    mutation_proba : float, default=0.6
        Probability that a child is a mutation of one parent (bit flips, a
        swap of a conditioning and a transformed feature, or a layer swap).
        Otherwise a child copies a parent. ``crossover_proba +
        mutation_proba`` must not exceed 1.
    mutation_rate : float, default=0.1
        Per-bit flip probability of the bit-flip mutation.
    fitness_epochs : int, default=30
        Training epochs of each candidate (early stopping applies too).
    size_penalty : float, default=0.0
        Nats subtracted from a candidate's fitness per effective parameter,
        to trade likelihood for smaller models.
    patience : int or None, default=5
        Stop when the best fitness has not improved for this many
        generations.
    max_time : float or None, default=None
        Stop after the generation during which this many seconds passed.
    refit : bool, default=True
        Train the best masks for up to ``max_epochs`` after the search. The
        final training starts from the best candidate's initial weights and
        minibatch order, so it continues the run that earned its fitness:
        its validation score is at least ``best_score_`` (plus the size
        penalty). If False, the final flow is the best candidate exactly as
        it was trained for its fitness.
    n_candidates_per_batch : int, default=8
        Most candidates trained together as one stacked model (one joblib
        task); each generation is cut into the fewest batches of near-equal
        size (a generation of 10 as 5 + 5). Batches are the unit of
        parallelism: with ``n_jobs=2``, a generation that fits in one batch
        runs on one worker, so use ``n_candidates_per_batch=4`` for
        ``population_size=8`` to keep two workers busy from the start. The
        batches do not depend on ``n_jobs``, nor does the result.
    callback : callable or None, default=None
        ``callback(record, population, fitness)`` after every generation,
        with ``record`` a row of ``search_history_``; returning True stops
        the search.
    checkpoint : str, path-like or None, default=None
        File where the search state (population, fitness cache, history and
        random generator state) is written after every generation, atomically
        (a temporary file renamed over the old one). A ``fit`` with the same
        data, parameters and checkpoint resumes after the last completed
        generation and ends with the same result as an uninterrupted run; a
        checkpoint of another search raises ``ValueError``. If ``fit`` is
        interrupted (Ctrl-C), it raises ``KeyboardInterrupt``, the estimator
        is left unfitted and the checkpoint holds the last completed
        generation. Resuming needs an int ``random_state`` (None draws new
        seeds, hence another search). A search that ended (its generations
        done, or stopped by ``patience``, ``max_time`` or the callback) is not
        continued: fitting again returns its result; delete the file to
        search again. A checkpoint belongs to one search: do not give one
        path to the several fits of a cross-validation or grid search.
    whiten, actnorm, max_log_scale, max_epochs, batch_size, learning_rate, \
weight_decay, n_iter_no_change
        As in :class:`CouplingFlow`.
    validation_fraction : float, default=0.2
        Fraction of the rows held out for early stopping and for measuring
        every candidate's fitness. Larger than :class:`CouplingFlow`'s
        default: the search picks the best of many candidates on this split,
        and on a small one the pick is mostly noise (on breast cancer, 10%
        gave a validation score 8 nats above the held-out one).
    n_jobs : int or None, default=None
        Parallel training tasks, as in scikit-learn (None means 1 unless in a
        ``joblib.parallel_config`` context; -1 means all cores). Runs under
        any joblib backend, e.g. dask or ray.
    device : str or list of str, default="cpu"
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``, or a list of
        devices over which candidate batches are spread round-robin. The
        final flow lives on the first.
    random_state : int, RandomState instance or None, default=None
        Seeds the split, the evolution, every candidate and the final flow.
        The result does not depend on ``n_jobs``.
    verbose : int, default=0
        1 shows a progress bar over generations (tqdm, if installed, else a
        line per generation); 2 also prints the final training's epochs.

    Attributes
    ----------
    masks_ : ndarray of shape (n_layers, n_features), dtype=bool
        The best masks found.
    best_score_ : float
        Fitness of ``masks_`` during the search (validation log-likelihood
        in the original space, minus the size penalty).
    population_ : ndarray of shape (n_population, n_layers, n_features)
        The final population, best first: ``population_size`` distinct
        genomes, unless the search met fewer (with few features and layers),
        when there can be fewer rows, or repeated genomes.
    population_scores_ : ndarray of shape (n_population,)
        Its fitness.
    search_history_ : list of dict
        One record per generation (``generation``, ``n_evaluations``,
        ``n_failed``, ``best``, ``mean``, ``std``, ``worst``, ``seconds``);
        ``pandas.DataFrame(search_history_)`` makes a table of it.
    evaluated_masks_ : ndarray of shape (n_evaluations, n_layers, n_features)
        Every genome trained during the search, in order.
    evaluated_scores_ : ndarray of shape (n_evaluations,)
        Their fitness; ``-inf`` marks a candidate that diverged or failed.
    n_generations_ : int
        Generations run after the initial one.
    flow_, mean_, scale_, input_matrix_, input_log_det_, loss_curve_, \
validation_scores_, best_validation_score_, best_epoch_, n_epochs_, \
n_parameters_, device_, n_features_in_, feature_names_in_
        Of the final flow, as in :class:`CouplingFlow`.

    See Also
    --------
    CouplingFlow : The same flow with fixed masks.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skflowsearch import StructureSearchFlow
    >>> X = load_iris().data
    >>> search = StructureSearchFlow(n_layers=4, hidden_layer_sizes=(16,),
    ...                              population_size=4, n_offspring=4,
    ...                              n_generations=2, fitness_epochs=5,
    ...                              max_epochs=20, random_state=0).fit(X)
    >>> search.masks_.shape
    (4, 4)
    >>> len(search.search_history_)
    3
    """

    _epoch_verbose_level = 2

    def __init__(
        self,
        n_layers=8,
        hidden_layer_sizes=(64, 64),
        *,
        population_size=8,
        n_offspring=16,
        n_generations=10,
        crossover_proba=0.3,
        mutation_proba=0.6,
        mutation_rate=0.1,
        fitness_epochs=30,
        size_penalty=0.0,
        patience=5,
        max_time=None,
        refit=True,
        n_candidates_per_batch=8,
        callback=None,
        checkpoint=None,
        whiten=True,
        actnorm=True,
        max_log_scale=3.0,
        max_epochs=200,
        batch_size=128,
        learning_rate=1e-3,
        weight_decay=1e-5,
        validation_fraction=0.2,
        n_iter_no_change=20,
        n_jobs=None,
        device="cpu",
        random_state=None,
        verbose=0,
    ):
        self.n_layers = n_layers
        self.hidden_layer_sizes = hidden_layer_sizes
        self.population_size = population_size
        self.n_offspring = n_offspring
        self.n_generations = n_generations
        self.crossover_proba = crossover_proba
        self.mutation_proba = mutation_proba
        self.mutation_rate = mutation_rate
        self.fitness_epochs = fitness_epochs
        self.size_penalty = size_penalty
        self.patience = patience
        self.max_time = max_time
        self.refit = refit
        self.n_candidates_per_batch = n_candidates_per_batch
        self.callback = callback
        self.checkpoint = checkpoint
        self.whiten = whiten
        self.actnorm = actnorm
        self.max_log_scale = max_log_scale
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.n_jobs = n_jobs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self):
        super()._check_params()
        check_scalar(self.population_size, "population_size", numbers.Integral, min_val=1)
        check_scalar(self.n_offspring, "n_offspring", numbers.Integral, min_val=1)
        check_scalar(self.n_generations, "n_generations", numbers.Integral, min_val=0)
        check_scalar(self.crossover_proba, "crossover_proba", numbers.Real, min_val=0, max_val=1)
        check_scalar(self.mutation_proba, "mutation_proba", numbers.Real, min_val=0, max_val=1)
        if self.crossover_proba + self.mutation_proba > 1:
            raise ValueError(
                "crossover_proba + mutation_proba must not exceed 1; got "
                f"{self.crossover_proba} + {self.mutation_proba}."
            )
        check_scalar(self.mutation_rate, "mutation_rate", numbers.Real, min_val=0, max_val=1)
        check_scalar(self.fitness_epochs, "fitness_epochs", numbers.Integral, min_val=1)
        check_scalar(self.size_penalty, "size_penalty", numbers.Real, min_val=0)
        if self.patience is not None:
            check_scalar(self.patience, "patience", numbers.Integral, min_val=1)
        if self.max_time is not None:
            check_scalar(self.max_time, "max_time", numbers.Real, min_val=0)
        check_scalar(self.n_candidates_per_batch, "n_candidates_per_batch", numbers.Integral, min_val=1)
        if self.n_jobs is not None:
            check_scalar(self.n_jobs, "n_jobs", numbers.Integral)
            if self.n_jobs == 0:
                raise ValueError("n_jobs == 0 has no meaning; use None, a positive int or -1.")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable or None; got {self.callback!r}.")
        if self.checkpoint is not None:
            directory = os.path.dirname(os.path.abspath(self.checkpoint))
            if not os.path.isdir(directory):
                raise ValueError(
                    f"the directory of checkpoint={os.fspath(self.checkpoint)!r} does not exist."
                )

    def _initial_population(self, n_features, rng):
        """Alternating masks, random halves and random genomes, without duplicates."""
        n_layers = self.n_layers
        population = [alternating_masks(n_layers, n_features)]
        if n_layers >= 2:
            population.append(~population[0])
        n_random_halves = max(1, (self.population_size - len(population)) // 2)
        halves = np.random.RandomState(rng.integers(2**32))
        population += [
            repair(random_masks(n_layers, n_features, halves), rng) for _ in range(n_random_halves)
        ]
        while len(population) < self.population_size:
            population.append(random_genome(n_layers, n_features, rng))
        unique = {genome_key(g): g for g in population}
        return list(unique.values())

    def _choose_masks(self, Z_train, Z_val, rng, devices):
        search_seed, batch_seed, evolution_seed = draw_seeds(rng, 3)
        self._search_seeds = (search_seed, batch_seed)
        evolution_rng = np.random.default_rng(evolution_seed)
        evaluator = PopulationEvaluator(
            Z_train,
            Z_val,
            config=self._training_config(max_epochs=self.fitness_epochs),
            search_seed=search_seed,
            batch_seed=batch_seed,
            devices=devices,
            n_jobs=self.n_jobs,
            group_size=self.n_candidates_per_batch,
            size_penalty=self.size_penalty,
            score_offset=self.input_log_det_,
        )
        fingerprint = self._search_fingerprint(Z_train, Z_val, search_seed, batch_seed, evolution_seed)
        progress = _Progress(self.n_generations + 1, self.verbose, self.callback)
        try:
            population, fitness, history, evaluations = mu_plus_lambda(
                self._initial_population(Z_train.shape[1], evolution_rng),
                evaluator,
                mu=self.population_size,
                n_offspring=self.n_offspring,
                cxpb=self.crossover_proba,
                mutpb=self.mutation_proba,
                n_generations=self.n_generations,
                mate=crossover,
                mutate=partial(mutate, rate=self.mutation_rate),
                rng=evolution_rng,
                patience=self.patience,
                max_time=self.max_time,
                callback=progress,
                state=_load_checkpoint(self.checkpoint, fingerprint),
                checkpoint=self.checkpoint and partial(_save_checkpoint, self.checkpoint, fingerprint),
            )
        finally:
            progress.close()
        if not np.isfinite(fitness[0]):
            errors = f" (first errors: {evaluator.errors[:3]})" if evaluator.errors else ""
            raise ValueError(
                "every candidate of the search diverged (NaN or inf loss or validation "
                f"score) or failed{errors}. Try a lower learning_rate or max_log_scale."
            )
        self.population_ = np.stack(population)
        self.population_scores_ = np.asarray(fitness, dtype=float)
        self.search_history_ = history
        self.evaluated_masks_ = np.stack([genome for genome, _ in evaluations])
        self.evaluated_scores_ = np.array([score for _, score in evaluations], dtype=float)
        self.best_score_ = float(fitness[0])
        self.n_generations_ = len(history) - 1
        return self.population_[0]

    def _search_fingerprint(self, Z_train, Z_val, *seeds):
        """Hash of everything the search result depends on, to match checkpoints."""
        ignored = {"n_jobs", "device", "verbose", "callback", "checkpoint", "max_time"}
        params = {k: v for k, v in self.get_params().items() if k not in ignored}
        return joblib.hash((Z_train, Z_val, seeds, sorted(params.items(), key=str)))

    def _final_training_plan(self, masks, rng):
        # The best candidate's own weight seed and minibatch order: the final
        # training replays its fitness run and, with refit, goes on from it.
        search_seed, batch_seed = self._search_seeds
        max_epochs = self.max_epochs if self.refit else self.fitness_epochs
        return self._training_config(max_epochs=max_epochs), genome_seed(search_seed, masks), batch_seed


_CHECKPOINT_FORMAT = 1


def _load_checkpoint(path, fingerprint):
    """The saved :class:`SearchState`, or None when there is no checkpoint yet."""
    if path is None or not os.path.exists(path):
        return None
    try:
        saved = joblib.load(path)
    except Exception as exc:  # truncated or foreign file: zlib, pickle, EOF errors...
        raise ValueError(
            f"{os.fspath(path)!r} is not a StructureSearchFlow checkpoint "
            f"(cannot read it: {type(exc).__name__}: {exc})."
        ) from exc
    if not isinstance(saved, dict) or saved.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{os.fspath(path)!r} is not a StructureSearchFlow checkpoint.")
    if saved["fingerprint"] != fingerprint:
        raise ValueError(
            f"the checkpoint {os.fspath(path)!r} was written by a search with other data, "
            "parameters or random_state; delete it or choose another path."
        )
    return saved["state"]


def _save_checkpoint(path, fingerprint, state):
    """Write ``state`` to ``path`` atomically: a crash leaves the old file or the new one."""
    temporary = f"{os.fspath(path)}.{os.getpid()}.tmp"
    joblib.dump({"format": _CHECKPOINT_FORMAT, "fingerprint": fingerprint, "state": state}, temporary)
    os.replace(temporary, path)


class _Progress:
    """Per-generation callback: a progress bar (or lines), then the user's callback."""

    def __init__(self, total, verbose, user_callback):
        self.user_callback = user_callback
        self.bar = None
        self.verbose = verbose
        if verbose >= 1:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc="structure search", unit="gen")

    def __call__(self, record, population, fitness):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(best=f"{record['best']:.3f}", failed=record["n_failed"])
        elif self.verbose >= 1:
            print(
                f"[StructureSearchFlow] generation {record['generation']:3d}  best "
                f"{record['best']:.4f}  mean {record['mean']:.4f}  evaluated "
                f"{record['n_evaluations']}  failed {record['n_failed']}  "
                f"{record['seconds']:.1f}s"
            )
        if self.user_callback is not None:
            return bool(self.user_callback(record, population, fitness))
        return False

    def close(self):
        if self.bar is not None:
            self.bar.close()
