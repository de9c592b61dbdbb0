"""Fitness of coupling-mask genomes: short training runs, grouped and parallel.

The fitness of a genome is the validation mean log-likelihood of a flow with
those masks after a short training budget, minus an optional size penalty.
It is a pure function of the genome and the search seed: a genome's weight
seed is derived from its bits, and every candidate sees the same minibatch
order. Results therefore do not depend on ``n_jobs`` or on worker order, and
(to float rounding; bit for bit for most shapes) not on which
other candidates share its group.

Genomes are trained in groups as one population-stacked model (see
:mod:`skflowsearch._nn`); joblib spreads the groups over worker processes and
devices, and workers receive masks and data, never live modules.
"""

import warnings

import numpy as np
from sklearn.utils.parallel import Parallel, delayed

from ._masks import effective_n_parameters
from ._training import fit_flows


def genome_seed(search_seed, genome):
    """Weight-initialisation seed of ``genome``, fixed for a search."""
    genome = np.asarray(genome, dtype=bool)
    words = [int(search_seed) % 2**32, *genome.shape, *np.packbits(genome).tolist()]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> 1)


def _train_group(masks, Z_train, Z_val, seeds, batch_seed, config, device):
    """Train one group of candidates; runs in a joblib worker.

    Returns plain numpy data: the best validation score and divergence flag of
    each member, or an error message when training raised.
    """
    try:
        result = fit_flows(
            masks, Z_train, Z_val, seeds=seeds, batch_seed=batch_seed, config=config, device=device
        )
    except (RuntimeError, ValueError, MemoryError) as exc:  # e.g. CUDA out of memory
        n = len(masks)
        return np.full(n, -np.inf), np.ones(n, dtype=bool), f"{type(exc).__name__}: {exc}"
    return result.best_validation_score, result.diverged, None


class PopulationEvaluator:
    """The ``evaluate`` callable handed to :func:`~skflowsearch._evolution.mu_plus_lambda`.

    Parameters
    ----------
    Z_train, Z_val : ndarray
        Training and validation rows in the flow's input space.
    config : TrainingConfig
        With the fitness budget as ``max_epochs``.
    search_seed, batch_seed : int
    devices : list of torch.device
        Groups are assigned to them round-robin.
    n_jobs : int or None
        As in scikit-learn; an enclosing ``joblib.parallel_config`` (dask,
        ray, ...) is respected.
    group_size : int
        At most this many candidates are trained together as one stacked
        model; a generation is cut into the fewest such groups, of near-equal
        size. The groups never depend on ``n_jobs``: a member's results can
        differ in the last bits with the size of its stack (on some hardware
        a kernel rounds the tail of a tensor differently), and the search must
        give the same result whatever ``n_jobs`` is.
    size_penalty : float
        Subtracted from the fitness per effective parameter.
    score_offset : float
        Added to every finite fitness (the normalizer's log-determinant, so
        fitness is a log-likelihood in the original feature space).
    train_group : callable, default=_train_group
        The task run for each group; it must catch training errors itself.
        Anything a parallel call raises is taken for a lost worker (a killed
        process, a dead dask worker): those groups are run again one by one,
        and a group that fails again gets the worst fitness.

    Attributes
    ----------
    errors : list of str
        Every training error and lost worker seen, in order.
    """

    def __init__(self, Z_train, Z_val, *, config, search_seed, batch_seed, devices, n_jobs,
                 group_size, size_penalty, score_offset, train_group=_train_group):
        self.Z_train = Z_train
        self.Z_val = Z_val
        self.config = config
        self.search_seed = search_seed
        self.batch_seed = batch_seed
        self.devices = devices
        self.n_jobs = n_jobs
        self.group_size = group_size
        self.size_penalty = size_penalty
        self.score_offset = score_offset
        self.train_group = train_group
        self.errors = []

    def __call__(self, genomes):
        genomes = np.stack([np.asarray(g, dtype=bool) for g in genomes])
        groups = self._groups(genomes)
        tasks = [
            delayed(self.train_group)(
                group,
                self.Z_train,
                self.Z_val,
                [genome_seed(self.search_seed, g) for g in group],
                self.batch_seed,
                self.config,
                self.devices[i % len(self.devices)],
            )
            for i, group in enumerate(groups)
        ]
        try:
            outputs = Parallel(n_jobs=self.n_jobs)(tasks)
        except Exception as exc:  # a lost worker: training errors never get here
            self._warn(f"a worker was lost ({type(exc).__name__}: {exc}); retrying its tasks one by one")
            outputs = [self._retry(task, len(group)) for task, group in zip(tasks, groups)]
        scores = np.concatenate([scores for scores, _, _ in outputs])
        diverged = np.concatenate([diverged for _, diverged, _ in outputs])
        for _, _, error in outputs:
            if error is not None:
                self._warn(f"a group of candidates failed and gets the worst fitness: {error}")
        penalty = self.size_penalty * effective_n_parameters(
            genomes, self.config.hidden_layer_sizes, self.config.actnorm
        )
        fitness = scores + self.score_offset - penalty
        return np.where(diverged | ~np.isfinite(fitness), -np.inf, fitness)

    def _groups(self, genomes):
        return np.array_split(genomes, -(-len(genomes) // self.group_size))

    def _retry(self, task, n_candidates):
        try:
            return Parallel(n_jobs=self.n_jobs)([task])[0]
        except Exception as exc:
            error = f"worker lost twice ({type(exc).__name__}: {exc})"
            return np.full(n_candidates, -np.inf), np.ones(n_candidates, dtype=bool), error

    def _warn(self, message):
        self.errors.append(message)
        warnings.warn(message, RuntimeWarning)
