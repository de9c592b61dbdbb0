"""``StructureSearchFlow``: a coupling flow whose structure is found by evolution."""

import math
import numbers
import os
from dataclasses import replace
from functools import partial

import joblib

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import BaseFlow, draw_seeds
from ._evolution import mu_plus_lambda
from ._genome import Genome, crossover, hidden_sizes, initial_genomes, mutate
from ._search import CandidateTrainer, mean_scores, resolve_group_size

# The fitness budget never goes below this many optimizer steps.
_MIN_FITNESS_STEPS = 30

_PICK_RULES = ("best", "smallest")


class StructureSearchFlow(BaseFlow):
    """Coupling flow whose masks, depth and width are searched by a (mu+lambda) evolution.

    A genome is a candidate flow: its ``(n_layers, n_features)`` masks, which
    of its ``n_layers`` coupling layers are on (an inactive layer is the
    identity) and the width of its conditioners (a fraction of
    ``hidden_layer_sizes`` from ``width_choices``). The search runs in four
    steps, on rows of their own:

    1. *Rows*: the rows given to ``fit`` lose a ``validation_fraction`` that
       early-stops every training (the split of :class:`CouplingFlow`); of
       the rest, a ``selection_fraction`` becomes *selection rows*, which
       never train or early-stop the evolution's candidates: half of them
       rank those candidates, the other half are race rows. The others
       train the candidates (the search's normalizer is fitted on those
       alone).
    2. *Incumbent first*: the alternating masks (``CouplingFlow()``'s) train
       with the full budget in each fold of the race (``n_race_folds``)
       under each race seed. The steps they needed to
       reach their best validation score set the fitness budget
       (``fitness_steps_``).
    3. *Evolution*: the initial population holds the
       alternating masks, data-driven masks (features split so that each
       half depends on the other, by rank correlation), permuted
       alternating masks, random halves, smaller variants and random
       genomes. Each generation makes ``n_offspring`` children by crossover
       or mutation (never a copy of a parent or of an evaluated genome).
       All candidates start from the same weights and see the same
       minibatches (common random numbers), so their comparison is paired.
       A batch of children trains as one stacked model by successive
       halving: every child gets ``1 / halving_factor`` of the fitness
       budget, the best ``1 / halving_factor`` of the batch all of it;
       finished children leave the stack. The fitness is the mean
       log-likelihood of the ranking rows. The best ``population_size`` of
       parents and children survive.
    4. *Final race*: ``n_finalists`` genomes of the likelihood-size Pareto
       front (the fittest, then the fittest at most half the incumbent's
       size) train as the incumbent did, in each fold under every race
       seed, and are compared row by row, paired, with the alternating
       masks on the rows their fold left out: with the default three
       folds, every row that did not rank them judges. A challenger
       replaces the alternating masks only when it wins by more than
       ``race_margin`` paired standard errors
       (``pick="best"``); with ``pick="smallest"``, the smallest entry
       within one standard error of that winner is taken.

    The winner is then trained on all rows but the validation ones, exactly
    as :class:`CouplingFlow` trains (same split and seeds): when the
    alternating masks win, the result *is* ``CouplingFlow(random_state=...)``
    with the same settings, so the default search does not end below it
    unless a challenger beat it on rows it was not trained on.

    Parameters
    ----------
    n_layers : int, default=8
        Most coupling layers of a candidate (the alternating incumbent uses all).
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Hidden widths of each coupling layer's tanh MLP at full width.
    population_size : int, default=8
        Genomes kept each generation (mu).
    n_offspring : int, default=8
        Children made each generation (lambda).
    n_generations : int, default=2
        Generations after the initial one.
    crossover_proba : float, default=0.3
        Probability that a child is a crossover of two parents (each layer
        and the width from one of them); otherwise it is a mutation of one
        parent: bit flips or a swap in the masks of the active layers, a
        layer switched on or off, or a step to a neighbouring width.
    mutation_rate : float or "auto", default="auto"
        Per-bit flip probability of the bit-flip mutation (one bit is always
        flipped). ``"auto"`` is one over the number of mask bits of the
        active layers: one or two flips, a step rather than a restart.
    width_choices : tuple of float, default=(0.25, 0.5, 1.0)
        Conditioner widths a genome can take, as fractions in (0, 1] of
        ``hidden_layer_sizes``; the full width (1.0, the alternating
        incumbent's) is always one of them.
    fitness_budget : float, default=1.0
        Optimizer steps of a fully evaluated candidate, as a fraction of the
        steps the alternating incumbent needed to reach its best validation
        score (at least 30 steps). Shorter runs rank candidates worse: Kendall's
        tau between fitness and held-out score was higher at 1.0 than at 0.3 on
        three of four benchmark tables (``benchmarks/README.md``, section 6).
    halving_factor : int, default=3
        Successive halving inside a batch of candidates: all get
        ``1 / halving_factor`` of the fitness budget, the best
        ``1 / halving_factor`` of them the rest. 1 trains all fully.
    selection_fraction : float, default=0.3
        Fraction of the non-validation rows that train no candidate of the
        evolution: one half ranks the candidates, the other half are race
        rows (which judge the race alone when ``n_race_folds=1``).
    n_finalists : int, default=2
        Genomes of the evolution that race the alternating masks at the full
        budget.
    n_race_folds : int, default=3
        Cross-fitting of the race. With k > 1 folds, the rows that did not
        rank the finalists (the candidates' training rows and the race
        rows) are cut in k parts; each entry trains k times, on the other
        parts and the ranking rows, and scores the part left out, so that
        every one of those rows judges the race (about 85% of the training
        rows at the default ``selection_fraction``, instead of 15%). With
        1, the entries train on the candidates' training rows and only the
        race rows judge.
    n_race_seeds : int, default=1
        Weight and minibatch seeds each race entry is trained with in each
        fold; its score per row is the mean over them.
    race_margin : float, default=2.0
        Paired standard errors by which a challenger must beat the
        alternating masks on the rows that judge the race to replace them. A "win" carried
        by a single row (one heavy-tailed row makes the mean difference about
        one standard error, whatever its size) never clears 2.
    pick : {"best", "smallest"}, default="best"
        Final pick rule of the race: the best entry that beats the alternating
        masks by ``race_margin`` standard errors (else the alternating
        masks), or the smallest entry within one standard error of that one.
    size_penalty : float, default=0.0
        Nats subtracted from a candidate's fitness (and race score) per
        effective parameter.
    patience : int or None, default=None
        Stop the evolution when the best fitness has not improved for this
        many generations.
    max_time : float or None, default=None
        Stop the evolution after the generation during which this many
        seconds passed (the incumbent, the race and the final training
        come on top).
    n_candidates_per_batch : int or "auto", default="auto"
        Most candidates trained together as one stacked model (one joblib
        task); a generation is cut into the fewest batches of near-equal
        size. The batches do not depend on ``n_jobs``, nor does the result;
        they change the result a little (successive halving runs inside a
        batch). ``"auto"`` is 4 on the CPU, so the default generation of 8
        keeps two workers busy, and 16 when every device is a CUDA device:
        a step of a small stacked model on a GPU is bound by kernel
        launches, so 16 candidates should cost about what 4 do (an estimate,
        not yet measured; ``benchmarks/bench_gpu.py`` measures it). It
        depends on the device type only, not on the number of devices: with
        several GPUs, give at most ``n_offspring / len(device)`` to keep
        them all busy.
    callback : callable or None, default=None
        ``callback(record, population, fitness)`` after every generation,
        with ``record`` a row of ``search_history_``; returning True stops
        the evolution (the race still runs).
    checkpoint : str, path-like or None, default=None
        File where the search state (the incumbent's runs, population,
        fitness cache, history and random generator state) is written after
        the incumbent and after every generation, atomically. A ``fit`` with
        the same data, parameters, device, package version and checkpoint
        resumes after the last completed generation and ends with the same
        result as an uninterrupted run; a checkpoint of another search
        raises ``ValueError``. If ``fit`` is interrupted (Ctrl-C), it raises
        ``KeyboardInterrupt`` and the estimator is left unfitted. Resuming
        needs an int ``random_state``. A checkpoint belongs to one search:
        do not give one path to the fits of a cross-validation. The race's
        settings (``pick``, ``race_margin``, ``n_finalists``) and
        ``n_estimators`` are not part of it: fitting again with other values
        reuses the incumbent and the evolution, and only runs the race and
        the final training again.
    whiten, normalization, base_distribution, n_components, covariance_type, discrete_features, \
dependent_features, coupling, \
n_bins, tail_bound, actnorm, max_log_scale, max_epochs, batch_size, learning_rate, weight_decay, \
validation_fraction, n_iter_no_change
        As in :class:`CouplingFlow`; they apply to every training of the
        search (the fitness runs stop earlier, at their budget).
    n_estimators : int, default=1
        As in :class:`CouplingFlow`, the final model is an ensemble of this
        many flows, here of the race's structures: the pick, then the other
        entries that trained, by race score, in turn (with more members than
        entries a structure comes again, from other initial weights). The
        members are trained and scored as one stacked model, each at its own
        depth and width; ``race_`` says how many members each entry has. The
        candidates of the search are single flows.
    n_jobs : int or None, default=None
        Parallel training tasks, as in scikit-learn (None means 1 unless in a
        ``joblib.parallel_config`` context; -1 means all cores). Runs under
        any joblib backend, e.g. dask or ray. With several CUDA devices, one
        thread per device trains that device's batches. Inside a worker of
        an enclosing joblib ``Parallel`` (e.g. ``GridSearchCV(n_jobs=2)``)
        the batches are trained one after the other instead, with a
        :class:`UserWarning`; the result is the same.
    device : str or list of str, default="cpu"
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``, or a list of
        devices over which candidate batches are spread round-robin. The
        final flow lives on the first.
    random_state : int, RandomState instance or None, default=None
        Seeds the splits, the evolution, every candidate and the final flow.
        The result does not depend on ``n_jobs``.
    verbose : int, default=0
        1 shows a progress bar over generations (tqdm, if installed, else a
        line per generation); 2 also prints the final training's epochs.

    Attributes
    ----------
    masks_ : ndarray of shape (n_active_layers, n_features), dtype=bool
        The masks of the final flow (its active layers); of an ensemble, the
        pick's.
    hidden_layer_sizes_ : tuple of int
        Hidden widths of the final flow's conditioners; of an ensemble, the
        pick's.
    best_score_ : float
        Race score of the winner: mean log-likelihood of the rows that
        judged the race, each scored by the runs that did not train on it
        (original space, mean over race seeds, minus the size penalty).
    race_ : list of dict
        One record per race entry (``entry``, ``n_layers``,
        ``hidden_layer_sizes``, ``n_parameters``, ``score``,
        ``difference`` and ``standard_error`` against the alternating masks,
        ``chosen``, and ``n_members``, its flows in the final model);
        ``pandas.DataFrame(race_)`` makes a table of it.
    search_history_ : list of dict
        One record per generation (``generation``, ``n_evaluations``,
        ``n_failed``, ``best``, ``mean``, ``std``, ``worst``, ``seconds``).
    evaluated_masks_ : ndarray of shape (n_evaluations, n_layers, n_features)
        Every genome of the evolution, in order: its masks (inactive layers
        included) ...
    evaluated_layers_ : ndarray of shape (n_evaluations, n_layers), dtype=bool
        ... which layers are on ...
    evaluated_hidden_layer_sizes_ : ndarray of shape (n_evaluations, n_hidden_layers)
        ... its conditioners' hidden widths ...
    evaluated_n_parameters_ : ndarray of shape (n_evaluations,)
        ... its effective parameter count ...
    evaluated_scores_ : ndarray of shape (n_evaluations,)
        ... and its fitness; ``-inf`` marks a candidate that diverged, NaN
        one that could not be trained (a lost worker, out of memory).
    fitness_steps_ : int
        The fitness budget in optimizer steps.
    n_generations_ : int
        Generations run after the initial one.
    flow_, mean_, scale_, input_matrix_, input_log_det_, normalization_, \
whiten_, base_df_, n_components_, n_estimators_, discrete_features_, dequantization_offsets_, dependent_features_, \
dependent_model_, missing_proposal_, loss_curve_, \
validation_scores_, best_validation_score_, best_epoch_, n_epochs_, \
n_parameters_, device_, n_features_in_, feature_names_in_
        Of the final flow, as in :class:`CouplingFlow`. Every candidate of
        the search starts from the same normalization and base.

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
    ...                              n_generations=2, max_epochs=20,
    ...                              random_state=0).fit(X)
    >>> search.masks_.shape[1]
    4
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
        n_offspring=8,
        n_generations=2,
        crossover_proba=0.3,
        mutation_rate="auto",
        width_choices=(0.25, 0.5, 1.0),
        fitness_budget=1.0,
        halving_factor=3,
        selection_fraction=0.3,
        n_finalists=2,
        n_race_folds=3,
        n_race_seeds=1,
        race_margin=2.0,
        pick="best",
        size_penalty=0.0,
        patience=None,
        max_time=None,
        n_candidates_per_batch="auto",
        callback=None,
        checkpoint=None,
        whiten="auto",
        normalization="auto",
        base_distribution="auto",
        n_components="auto",
        covariance_type="full",
        discrete_features="auto",
        dependent_features="model",
        coupling="spline",
        n_bins=8,
        tail_bound=5.0,
        actnorm=True,
        max_log_scale=3.0,
        max_epochs=200,
        batch_size=128,
        learning_rate=1e-3,
        weight_decay=1e-5,
        validation_fraction=0.1,
        n_iter_no_change=20,
        n_estimators=1,
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
        self.mutation_rate = mutation_rate
        self.width_choices = width_choices
        self.fitness_budget = fitness_budget
        self.halving_factor = halving_factor
        self.selection_fraction = selection_fraction
        self.n_finalists = n_finalists
        self.n_race_folds = n_race_folds
        self.n_race_seeds = n_race_seeds
        self.race_margin = race_margin
        self.pick = pick
        self.size_penalty = size_penalty
        self.patience = patience
        self.max_time = max_time
        self.n_candidates_per_batch = n_candidates_per_batch
        self.callback = callback
        self.checkpoint = checkpoint
        self.whiten = whiten
        self.normalization = normalization
        self.base_distribution = base_distribution
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.discrete_features = discrete_features
        self.dependent_features = dependent_features
        self.coupling = coupling
        self.n_bins = n_bins
        self.tail_bound = tail_bound
        self.actnorm = actnorm
        self.max_log_scale = max_log_scale
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.n_estimators = n_estimators
        self.n_jobs = n_jobs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # --- validation ----------------------------------------------------------------

    _parameter_constraints = {
        **BaseFlow._parameter_constraints,
        "population_size": [Interval(Integral, 1, None, closed="left")],
        "n_offspring": [Interval(Integral, 1, None, closed="left")],
        "n_generations": [Interval(Integral, 0, None, closed="left")],
        "crossover_proba": [Interval(Real, 0, 1, closed="both")],
        "mutation_rate": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="both")],
        "width_choices": ["array-like"],
        "fitness_budget": [Interval(Real, 0, None, closed="neither")],
        "halving_factor": [Interval(Integral, 1, None, closed="left")],
        "selection_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_finalists": [Interval(Integral, 0, None, closed="left")],
        "n_race_folds": [Interval(Integral, 1, None, closed="left")],
        "n_race_seeds": [Interval(Integral, 1, None, closed="left")],
        "race_margin": [Interval(Real, 0, None, closed="left")],
        "pick": [StrOptions(set(_PICK_RULES))],
        "size_penalty": [Interval(Real, 0, None, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "max_time": [Interval(Real, 0, None, closed="both"), None],  # inf: no limit
        "n_candidates_per_batch": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "callback": [callable, None],
        "checkpoint": [str, os.PathLike, None],
        "n_jobs": [Interval(Integral, None, None, closed="neither"), None],
    }

    def _check_params(self):
        super()._check_params()
        choices = self.width_choices
        if (not isinstance(choices, (tuple, list)) or not choices
                or not all(isinstance(c, numbers.Real) and not isinstance(c, bool) and 0 < c <= 1
                           for c in choices)):
            raise ValueError(f"width_choices must be a non-empty tuple of numbers in (0, 1]; got {choices!r}.")
        if self.n_jobs == 0:
            raise ValueError("n_jobs == 0 has no meaning; use None, a positive int or -1.")
        if self.checkpoint is not None:
            if not os.fspath(self.checkpoint):
                raise ValueError(f"checkpoint must be None or a file path; got {self.checkpoint!r}.")
            directory = os.path.dirname(os.path.abspath(self.checkpoint))
            if not os.path.isdir(directory):
                raise ValueError(
                    f"the directory of checkpoint={os.fspath(self.checkpoint)!r} does not exist."
                )

    def _split_selection(self, X_train, rng):
        """``(X_fit, X_rank, X_race)``: rows that train candidates, rank them, and judge the race.

        The selection rows are split in halves: the evolution ranks on the
        first, the race on the second, so that the race is not judged on
        the rows its finalists were chosen for.
        """
        n = X_train.shape[0]
        n_select = max(2, int(round(self.selection_fraction * n)))
        if n - n_select < 2:
            raise ValueError(
                f"the search trains its candidates on {n - n_select} rows ({n} training rows minus "
                f"{n_select} selection rows, selection_fraction={self.selection_fraction}); it needs "
                "2 rows. Pass more rows, or a smaller selection_fraction or validation_fraction."
            )
        order = rng.permutation(n)
        n_rank = n_select // 2
        return X_train[order[n_select:]], X_train[order[:n_rank]], X_train[order[n_rank:n_select]]

    # --- the search ----------------------------------------------------------------

    def _choose_structure(self, X_train, X_val, start, rng, devices):
        if X_train.shape[1] < 2:
            derived = np.flatnonzero(self.dependent_features_).tolist()
            raise ValueError(
                f"{type(self).__name__}: column(s) {derived} of X are linear functions of the "
                f"others (see dependent_features_), which leaves {X_train.shape[1]} column for the "
                "flow: there are no masks to search. Use CouplingFlow for such a table."
            )
        (seed,) = draw_seeds(rng, 1)
        search_rng = np.random.default_rng(seed)
        X_fit, X_rank, X_race = self._split_selection(X_train, search_rng)
        try:
            normalizer = start.fit_normalizer(X_fit)
        except ValueError as exc:
            raise ValueError(
                f"on the {len(X_fit)} rows that train the search's candidates (the training rows "
                f"less the selection rows): {exc}"
            ) from exc
        Z_fit, Z_val, Z_rank, Z_race = map(normalizer, (X_fit, X_val, X_rank, X_race))
        log_det = normalizer.log_det
        n_race_runs = self.n_race_folds * self.n_race_seeds
        seeds = [int(s) for s in search_rng.integers(0, 2**62, size=2 * (1 + n_race_runs))]
        fitness_seeds, race_seeds = [tuple(seeds[:2])], list(zip(seeds[2::2], seeds[3::2]))
        race_folds = self._race_folds(Z_fit, Z_rank, Z_race, race_seeds)
        evolution_rng = np.random.default_rng(search_rng.integers(2**63))

        widths = _width_choices(self.width_choices)
        # The base is the start's: a mixture stays the one fitted in the space
        # of all training rows (the candidates' normalizer differs from it by
        # the selection rows only, and ActNorm absorbs that).
        config = replace(self._training_config(), base_df=start.df, base_mixture=start.mixture)
        trainer = CandidateTrainer(
            Z_fit, Z_val, config=config, width_choices=widths, devices=devices,
            n_jobs=self.n_jobs, group_size=resolve_group_size(self.n_candidates_per_batch, devices),
        )
        population = initial_genomes(X_fit, self.n_layers, len(widths), self.population_size,
                                     evolution_rng)
        incumbents = population[:1]  # the alternating masks
        fingerprint = self._search_fingerprint(Z_fit, Z_val, Z_rank, Z_race, seed, [str(d) for d in devices],
                                               group_size=trainer.group_size)
        saved = _load_checkpoint(self.checkpoint, fingerprint) or {}
        incumbent_runs = saved.get("incumbents")
        if incumbent_runs is None:
            incumbent_runs = trainer.cross_fit(incumbents, race_folds)
        save = None
        if self.checkpoint is not None:
            save = partial(_save_checkpoint, self.checkpoint, fingerprint, incumbent_runs)
            if "incumbents" not in saved:
                save(None)
        self.fitness_steps_ = self._fitness_steps(incumbent_runs)

        def penalty(genomes):
            return self.size_penalty * np.array([trainer.n_parameters(g) for g in genomes])

        def evaluate(genomes):
            trained = trainer.train(genomes, fitness_seeds, Z_rank,
                                    budget={"max_steps": self.fitness_steps_}, rungs=self._rungs)
            return mean_scores(trained, log_det)[0] - penalty(genomes)

        progress = _Progress(self.n_generations + 1, self.verbose, self.callback)
        try:
            _, _, history, evaluations = mu_plus_lambda(
                population, evaluate,
                mu=self.population_size, n_offspring=self.n_offspring, cxpb=self.crossover_proba,
                n_generations=self.n_generations, mate=crossover,
                mutate=partial(_mutate, rate=self.mutation_rate, n_widths=len(widths)),
                rng=evolution_rng, key=Genome.key, patience=self.patience, max_time=self.max_time,
                callback=progress, state=saved.get("evolution"), checkpoint=save,
            )
        finally:
            progress.close()

        finalists = self._finalists(evaluations, incumbents, trainer)
        rows = incumbent_runs.selection_log_prob
        if finalists:
            finalist_runs = trainer.cross_fit(finalists, race_folds)
            runs = [incumbent_runs, finalist_runs]
            rows = np.concatenate([r.selection_log_prob for r in runs], axis=1)
            bad = np.concatenate([r.diverged | r.failed for r in runs], axis=1).any(axis=0)
        else:
            bad = (incumbent_runs.diverged | incumbent_runs.failed).any(axis=0)
        entries = incumbents + finalists
        names = ["alternating"] + [f"finalist {i + 1}" for i in range(len(finalists))]
        ranked = self._race(entries, rows, bad, penalty(entries), log_det, names, trainer)

        self.search_history_ = history
        self.evaluated_masks_ = np.stack([g.masks for g, _ in evaluations])
        self.evaluated_layers_ = np.stack([g.active for g, _ in evaluations])
        self.evaluated_hidden_layer_sizes_ = np.array(
            [hidden_sizes(config.hidden_layer_sizes, widths, g.width) for g, _ in evaluations]
        )
        self.evaluated_n_parameters_ = np.array([trainer.n_parameters(g) for g, _ in evaluations])
        self.evaluated_scores_ = np.array([score for _, score in evaluations], dtype=float)
        self.n_generations_ = len(history) - 1
        return [(g.real_masks(), hidden_sizes(config.hidden_layer_sizes, widths, g.width)) for g in ranked]

    def _race_folds(self, Z_fit, Z_rank, Z_race, seeds):
        """The race's folds ``(Z_train, Z_score, seeds)`` (see ``n_race_folds``).

        ``seeds`` holds ``n_race_seeds`` pairs per fold. The normalizer stays
        the one fitted on ``Z_fit``: a fixed affine map shared by every entry,
        so it cannot favour one of them.
        """
        if self.n_race_folds == 1:
            return [(Z_fit, Z_race, seeds)]
        judged = np.concatenate([Z_race, Z_fit])  # both in the split's random order
        k = min(self.n_race_folds, len(judged))
        parts = [judged[i::k] for i in range(k)]
        per_fold = self.n_race_seeds
        return [
            (np.concatenate([Z_rank] + parts[:i] + parts[i + 1:]), parts[i],
             seeds[i * per_fold:(i + 1) * per_fold])
            for i in range(k)
        ]

    def _finalists(self, evaluations, incumbents, trainer):
        """Up to ``n_finalists`` genomes of the likelihood-size Pareto front, for the race.

        The fittest genome, then the fittest of those at most half the size
        of the alternating masks (so that the race always weighs a smaller
        model), then the rest of the front and the next fittest genomes.
        """
        known = {g.key() for g in incumbents}
        candidates = {}
        for genome, score in evaluations:
            if np.isfinite(score) and genome.key() not in known:
                candidates[genome.key()] = (genome, score)
        ranked = sorted(candidates.values(), key=lambda item: -item[1])  # stable: first seen wins ties
        sizes = [trainer.n_parameters(g) for g, _ in ranked]
        front, smallest = [], np.inf
        for i, size in enumerate(sizes):  # by falling fitness: on the front when smaller than all fitter
            if size < smallest:
                front.append(i)
                smallest = size
        half = trainer.n_parameters(incumbents[0]) / 2
        order = front[:1] + [i for i in front if sizes[i] <= half][:1] + front + list(range(len(ranked)))
        chosen = list(dict.fromkeys(order))[: self.n_finalists]
        return [ranked[i][0] for i in chosen]

    def _fitness_steps(self, incumbent_runs):
        """The fitness budget: a fraction of the steps alternating masks took to their best.

        At least ``_MIN_FITNESS_STEPS``, unless the incumbent's whole run was shorter.
        """
        ok = ~(incumbent_runs.failed[:, 0] | incumbent_runs.diverged[:, 0])
        if not ok.any():
            return _MIN_FITNESS_STEPS
        best = float(np.mean(incumbent_runs.best_steps[ok, 0]))
        floor = min(_MIN_FITNESS_STEPS, float(np.mean(incumbent_runs.n_steps[ok, 0])))
        return max(1, int(math.ceil(max(floor, self.fitness_budget * best))))

    def _rungs(self, n_members):
        """Successive halving inside a batch: everyone gets a share, the best go on."""
        if self.halving_factor <= 1 or n_members <= 1:
            return ()
        keep = max(1, -(-n_members // self.halving_factor))
        return ((max(1, self.fitness_steps_ // self.halving_factor), keep),)

    def _race(self, entries, rows, bad, penalty, offset, names, trainer):
        """Rank the entries on the race rows; fills ``race_`` and ``best_score_``.

        Returns the entries that trained: the pick first, then the others by
        race score (the members of an ensemble, in turn).
        """
        per_row = rows.mean(axis=0)  # (n_entries, n_select), mean over race seeds
        per_row = per_row - penalty[:, None]
        per_row[bad] = -np.inf
        if bad[0]:
            # The reference itself failed: compare with the first entry that trained.
            reference = int(np.flatnonzero(~bad)[0]) if (~bad).any() else 0
        else:
            reference = 0
        difference, error = _paired(per_row, per_row[reference])
        qualified = (difference > self.race_margin * error) | (np.arange(len(entries)) == reference)
        qualified &= ~bad
        if not qualified.any():
            raise ValueError(
                "every run of the search diverged (NaN or inf loss or validation score) or "
                "failed" + (f" (first errors: {trainer.errors[:3]})" if trainer.errors else "")
                + ". Try a lower learning_rate or max_log_scale."
            )
        best = int(np.argmax(np.where(qualified, difference, -np.inf)))
        chosen = best
        if self.pick == "smallest":
            against_best, error_best = _paired(per_row, per_row[best])
            close = ~bad & (against_best >= -error_best)
            sizes = np.array([trainer.n_parameters(g) for g in entries])
            chosen = int(np.flatnonzero(close)[np.argmin(sizes[close])])
        scores = per_row.mean(axis=1) + offset
        self.best_score_ = float(scores[chosen])
        order = [chosen] + [int(i) for i in np.argsort(-scores, kind="stable") if i != chosen and not bad[i]]
        n_members = np.bincount([order[i % len(order)] for i in range(self.n_estimators)],
                                minlength=len(entries))
        self.race_ = [
            {
                "entry": name,
                "n_layers": g.n_active,
                "hidden_layer_sizes": hidden_sizes(trainer.config.hidden_layer_sizes,
                                                   trainer.width_choices, g.width),
                "n_parameters": int(trainer.n_parameters(g)),
                "score": float(score),
                "difference": float(d),
                "standard_error": float(e),
                "chosen": i == chosen,
                "n_members": int(n_members[i]),
            }
            for i, (name, g, score, d, e) in enumerate(zip(names, entries, scores, difference, error))
        ]
        return [entries[i] for i in order]

    def _search_fingerprint(self, *data, group_size=None):
        """Hash of everything the search result depends on, to match checkpoints.

        ``data`` holds the rows, the seed and the resolved devices;
        ``group_size``, the resolved ``n_candidates_per_batch``, replaces the
        parameter (``"auto"`` and the number it stands for are one search).
        """
        from . import __version__

        # The race's own settings are left out: a finished search can be raced
        # again from its checkpoint with another pick rule, margin, field or
        # ensemble size.
        ignored = {"n_jobs", "verbose", "callback", "checkpoint", "max_time",
                   "pick", "race_margin", "n_finalists", "n_estimators"}
        params = {k: v for k, v in self.get_params().items() if k not in ignored}
        if group_size is not None:
            params["n_candidates_per_batch"] = group_size
        return joblib.hash((data, __version__, sorted(params.items(), key=str)))


def _width_choices(width_choices):
    """The width fractions, narrowest first, with the full width (the incumbent's) among them."""
    return tuple(sorted({float(w) for w in width_choices} | {1.0}))


def _mutate(genome, rng, *, rate, n_widths):
    if rate == "auto":
        rate = 1.0 / genome.real_masks().size
    return mutate(genome, rng, rate=rate, n_widths=n_widths)


def _paired(per_row, reference):
    """Mean paired difference of each entry to ``reference`` over rows, and its standard error."""
    with np.errstate(invalid="ignore"):
        difference = per_row - reference
        mean = difference.mean(axis=1)
        n = per_row.shape[1]
        # One row has no spread to measure: nothing can clear a margin on it.
        error = difference.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.full(len(per_row), np.inf)
    mean = np.where(np.isfinite(mean), mean, -np.inf)
    return mean, np.where(np.isfinite(error), error, np.inf)


_CHECKPOINT_FORMAT = 2


def _load_checkpoint(path, fingerprint):
    """The saved search state (a dict), or None when there is no checkpoint yet."""
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


def _save_checkpoint(path, fingerprint, incumbents, evolution):
    """Write the state to ``path`` atomically: a crash leaves the old file or the new one.

    ``incumbents`` are the incumbents' runs, ``evolution`` the
    :class:`~skflowsearch._evolution.SearchState` (None before generation 0).
    """
    temporary = f"{os.fspath(path)}.{os.getpid()}.tmp"
    state = {"incumbents": incumbents, "evolution": evolution}
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
