"""Training candidate structures for the search: grouped, parallel, fault-tolerant.

Candidates (:class:`~skflowsearch._genome.Genome`) are trained in groups as
one population-stacked model (see :mod:`skflowsearch._nn`): a group holds
members of different depth and width at the size of the widest, with the
rest masked out. joblib spreads the groups over worker processes and
devices; workers receive masks and data, never live modules, and send back
the log-density of every selection row under each member.

Every candidate of one training call starts from the same weight seed and
sees the same minibatches (common random numbers), so candidates are
compared paired, and a result depends only on the genomes and the seeds:
not on ``n_jobs``, nor on worker order (the groups are cut the same way
whatever ``n_jobs`` is).
"""

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.parallel import Parallel, delayed

from ._genome import hidden_sizes, n_parameters
from ._training import fit_flows

# Errors of our own code or of its use: they propagate instead of being taken
# for a lost worker or a failed candidate.
_PROGRAMMING_ERRORS = (
    TypeError, ValueError, AttributeError, IndexError, KeyError, NameError,
    AssertionError, NotImplementedError, ZeroDivisionError,
)


@dataclass
class GroupOutput:
    """What a worker sends back for a group of candidates (numpy only)."""

    selection_log_prob: np.ndarray  # (n_members, n_select)
    diverged: np.ndarray  # (n_members,)
    n_steps: np.ndarray  # (n_members,)
    best_steps: np.ndarray  # (n_members,), steps of the restored weights
    error: str = None  # set when the group could not be trained (transient)


def _train_group(structure, Z_train, Z_val, Z_select, seeds, batch_seed, config, device, budget):
    """Train one group of candidates; runs in a joblib worker.

    Out of memory, the group is split in halves and each half trained alone;
    a single candidate that does not fit comes back with ``error`` set.
    """
    masks, active, widths = structure
    try:
        result = fit_flows(
            masks, Z_train, Z_val, seeds=seeds, batch_seed=batch_seed, config=config, device=device,
            layer_active=active, hidden_widths=widths, X_select=Z_select, **budget,
        )
    except (MemoryError, torch.cuda.OutOfMemoryError) as exc:
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
        n = len(masks)
        if n == 1:
            return GroupOutput(np.full((1, len(Z_select)), np.nan), np.zeros(1, dtype=bool),
                               np.zeros(1, dtype=int), np.zeros(1, dtype=int),
                               f"{type(exc).__name__}: {exc}")
        halves = [slice(0, n // 2), slice(n // 2, n)]
        parts = [
            _train_group(tuple(a[h] for a in structure), Z_train, Z_val, Z_select, seeds[h],
                         batch_seed, config, device, _halved_budget(budget, n, h.stop - h.start))
            for h in halves
        ]
        return GroupOutput(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in
              ("selection_log_prob", "diverged", "n_steps", "best_steps")),
            error="; ".join(p.error for p in parts if p.error) or None,
        )
    per_epoch = result.n_steps // np.maximum(result.n_epochs, 1)
    return GroupOutput(result.selection_log_prob, result.diverged, result.n_steps,
                       result.best_epoch * per_epoch)


def _halved_budget(budget, n, part):
    """``budget`` for ``part`` of a group of ``n``: each rung keeps its share of the members."""
    budget = dict(budget)
    if budget.get("rungs"):
        budget["rungs"] = tuple((steps, max(1, -(-keep * part // n))) for steps, keep in budget["rungs"])
    return budget


@dataclass
class Trained:
    """Results of one :meth:`CandidateTrainer.train` call, shape (n_seeds, n_genomes, ...)."""

    selection_log_prob: np.ndarray  # (n_seeds, n_genomes, n_select); NaN where training failed
    diverged: np.ndarray
    failed: np.ndarray  # transient failures (lost worker, out of memory)
    n_steps: np.ndarray
    best_steps: np.ndarray


class CandidateTrainer:
    """Trains genomes on the search's rows and scores them on its selection rows.

    Parameters
    ----------
    Z_train, Z_val : ndarray
        Training and early-stopping rows in the flow's input space.
    config : TrainingConfig
        Of the widest candidate (``hidden_layer_sizes`` at full width).
    width_choices : tuple of float
        Fractions of ``config.hidden_layer_sizes``, indexed by ``Genome.width``.
    devices : list of torch.device
        Groups are assigned to them round-robin.
    n_jobs : int or None
        As in scikit-learn; an enclosing ``joblib.parallel_config`` (dask,
        ray, ...) is respected.
    group_size : int
        At most this many candidates are trained together as one stacked
        model; a call's genomes are cut into the fewest such groups, of
        near-equal size, never depending on ``n_jobs``.
    train_group : callable, default=_train_group
        The task run for each group. Anything a parallel call raises other
        than an error of the code itself (``TypeError``, ``ValueError``, ...)
        is taken for a lost worker (a killed process, a dead dask worker):
        then every group of the call is run again one by one (also those
        that had finished: a parallel call returns all or nothing), and a
        group lost again is marked failed (transient), never cached as a bad
        candidate.

    Attributes
    ----------
    errors : list of str
        Every transient failure seen, in order.
    """

    def __init__(self, Z_train, Z_val, *, config, width_choices, devices, n_jobs,
                 group_size, train_group=_train_group):
        self.Z_train = Z_train
        self.Z_val = Z_val
        self.config = config
        self.width_choices = tuple(width_choices)
        self.devices = devices
        self.n_jobs = n_jobs
        self.group_size = group_size
        self.train_group = train_group
        self.errors = []

    def n_parameters(self, genome):
        return n_parameters(genome, self.config.hidden_layer_sizes, self.width_choices, self.config.actnorm)

    def train(self, genomes, seeds, Z_select, *, config=None, budget=None, rungs=None):
        """Train every genome once for each ``(weight seed, minibatch seed)`` of ``seeds``.

        All genomes of one seed pair start from the same weights and see the
        same minibatches. The selection rows ``Z_select`` rank them (at the
        rungs) and are scored row by row. ``budget`` holds the ``max_steps`` of
        :func:`train_flows`; ``rungs`` is a function ``n_members -> rungs``
        for successive halving inside each group. Returns a :class:`Trained`
        whose arrays have a leading seed dimension.
        """
        config = self.config if config is None else config
        groups = np.array_split(np.arange(len(genomes)), -(-len(genomes) // self.group_size))
        tasks, sizes = [], []
        for seed, batch_seed in seeds:
            for group in groups:
                members = [genomes[j] for j in group]
                structure = (
                    np.stack([g.masks for g in members]),
                    np.stack([g.active for g in members]),
                    np.array([hidden_sizes(config.hidden_layer_sizes, self.width_choices, g.width)
                              for g in members]),
                )
                group_budget = dict(budget or {})
                if rungs is not None:
                    group_budget["rungs"] = rungs(len(members))
                device = self.devices[len(tasks) % len(self.devices)]
                tasks.append(delayed(self.train_group)(
                    structure, self.Z_train, self.Z_val, Z_select,
                    np.full(len(members), seed), batch_seed, config, device, group_budget,
                ))
                sizes.append(len(members))
        try:
            outputs = Parallel(n_jobs=self.n_jobs)(tasks)
        except _PROGRAMMING_ERRORS:
            raise
        except Exception as exc:  # a lost worker
            self._warn(f"a worker was lost ({type(exc).__name__}: {exc}); retrying its tasks one by one")
            outputs = [self._retry(task, size, len(Z_select)) for task, size in zip(tasks, sizes)]
        for output in outputs:
            if output.error is not None:
                self._warn(f"candidates could not be trained and are retried later: {output.error}")

        def gather(field):
            values = np.concatenate([getattr(o, field) for o in outputs])
            return values.reshape(len(seeds), len(genomes), *values.shape[1:])

        rows = gather("selection_log_prob")
        return Trained(rows, gather("diverged"), np.isnan(rows).any(axis=-1), gather("n_steps"),
                       gather("best_steps"))

    def _retry(self, task, n_candidates, n_select):
        try:
            return Parallel(n_jobs=self.n_jobs)([task])[0]
        except _PROGRAMMING_ERRORS:
            raise
        except Exception as exc:
            return GroupOutput(np.full((n_candidates, n_select), np.nan),
                               np.zeros(n_candidates, dtype=bool), np.zeros(n_candidates, dtype=int),
                               np.zeros(n_candidates, dtype=int),
                               f"worker lost twice ({type(exc).__name__}: {exc})")

    def _warn(self, message):
        self.errors.append(message)
        warnings.warn(message, RuntimeWarning)


def mean_scores(trained, offset=0.0):
    """Mean selection log-likelihood of each genome: ``-inf`` if it diverged, NaN if it failed."""
    with np.errstate(invalid="ignore"):
        scores = trained.selection_log_prob.mean(axis=-1) + offset
    scores = np.where(trained.diverged | ~np.isfinite(scores), -np.inf, scores)
    return np.where(trained.failed, np.nan, scores)
