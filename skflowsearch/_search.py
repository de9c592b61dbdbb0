"""Training candidate structures for the search: grouped, parallel, fault-tolerant.

Candidates (:class:`~skflowsearch._genome.Genome`) are trained in groups as
one population-stacked model (see :mod:`skflowsearch._nn`): a group holds
members of different depth and width at the size of the widest, with the
rest masked out. joblib spreads the groups over worker processes and
devices; workers receive masks and data, never live modules, and send back
the log-density of every selection row under each member. With several CUDA
devices, one thread per device runs that device's groups (one CUDA context
per device, in this process); inside a worker of an enclosing joblib
``Parallel`` (``GridSearchCV(n_jobs=2)`` around the search) the groups run
one after the other.

Every candidate of one training call starts from the same weight seed and
sees the same minibatches (common random numbers), so candidates are
compared paired, and a result depends only on the genomes and the seeds:
not on ``n_jobs``, nor on worker order (the groups are cut the same way
whatever ``n_jobs`` is).
"""

import gc
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from joblib import effective_n_jobs
from joblib.parallel import LokyBackend, MultiprocessingBackend, ThreadingBackend, get_active_backend
from sklearn.utils.parallel import Parallel, delayed

from ._genome import hidden_sizes, n_parameters
from ._training import fit_flows

# Errors of our own code or of its use: they propagate instead of being taken
# for a lost worker or a failed candidate.
_PROGRAMMING_ERRORS = (
    TypeError, ValueError, AttributeError, IndexError, KeyError, NameError,
    AssertionError, NotImplementedError, ZeroDivisionError,
)

# Candidates per stacked group for ``n_candidates_per_batch="auto"``, by device
# type. On the CPU, 4 cuts the default generation of 8 children into one task
# per core of a two-core machine. On a GPU a step of a small stacked model is
# bound by kernel launches, not arithmetic, so 16 members cost about what 4
# do (an estimate, not a measurement: benchmarks/bench_gpu.py measures it),
# and the out-of-memory halving covers a group that does not fit.
AUTO_GROUP_SIZE = {"cpu": 4, "cuda": 16}

# joblib's backends that run tasks on this machine: with several CUDA devices
# the groups then go to one thread per device. Any other backend (dask, ray)
# runs the tasks as they come.
_LOCAL_BACKENDS = (LokyBackend, MultiprocessingBackend, ThreadingBackend)


def resolve_group_size(group_size, devices):
    """Candidates per stacked group: ``group_size``, or ``AUTO_GROUP_SIZE`` for ``"auto"``.

    ``"auto"`` takes the CUDA size when every device of ``devices`` (a list
    of :class:`torch.device`) is a CUDA device, else the CPU size. It depends
    on the device type only, never on ``n_jobs`` or on the number of devices.
    """
    if isinstance(group_size, str):  # "auto"; the estimator checks the spelling
        kind = "cuda" if all(d.type == "cuda" for d in devices) else "cpu"
        return AUTO_GROUP_SIZE[kind]
    return int(group_size)


def in_joblib_worker():
    """Whether this code runs in a task of an enclosing joblib ``Parallel``.

    joblib runs every task of a ``Parallel`` call, in a loky worker process
    as in a thread, under the backend's *nested* backend (threads at the
    first level, sequential below), whose ``nesting_level`` is at least 1;
    at top level the active backend, the default one or one set with
    :func:`joblib.parallel_config`, is at level 0. Dask's nested backend has
    no level (None): a search inside a dask task keeps using the cluster.
    """
    backend, _ = get_active_backend()
    return (getattr(backend, "nesting_level", None) or 0) > 0


def device_threads(devices, n_jobs, backend):
    """Threads that run the groups, one device each; 0 to hand the tasks to ``backend``.

    With several devices, all CUDA, ``n_jobs > 1`` and a backend of this
    machine, each device's groups are run in order by one thread of this
    process: a device trains one group at a time, never idles while another
    holds two, and has one CUDA context (worker processes would open one
    each). ``n_jobs`` beyond the number of devices adds nothing then.
    Otherwise (one device, the CPU, ``n_jobs=1``, dask or ray) the tasks go
    to the backend as they are.

    Parameters
    ----------
    devices : list of torch.device
    n_jobs : int
        The effective number of parallel tasks (``joblib.effective_n_jobs``).
    backend : joblib backend
        The active one (``joblib.parallel.get_active_backend()[0]``).
    """
    if n_jobs <= 1 or len(devices) < 2 or not isinstance(backend, _LOCAL_BACKENDS):
        return 0
    if not all(torch.device(d).type == "cuda" for d in devices):
        return 0
    return min(n_jobs, len(devices))


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

    Out of memory, the group is split in halves and each half trained alone,
    once the failed attempt's tensors are freed (and the CUDA cache
    emptied); a single candidate that does not fit comes back with
    ``error`` set (a transient failure, never a diverged candidate).
    """
    masks, active, widths = structure
    try:
        result = fit_flows(
            masks, Z_train, Z_val, seeds=seeds, batch_seed=batch_seed, config=config, device=device,
            layer_active=active, hidden_widths=widths, X_select=Z_select, **budget,
        )
    except (MemoryError, torch.cuda.OutOfMemoryError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        per_epoch = result.n_steps // np.maximum(result.n_epochs, 1)
        return GroupOutput(result.selection_log_prob, result.diverged, result.n_steps,
                           result.best_epoch * per_epoch)
    # Past the except block, the exception and its traceback are gone, and
    # with them the frames that held the failed attempt's module, optimizer
    # and activations: only now can their memory go back.
    _free_memory(device)
    n = len(masks)
    if n == 1:
        return GroupOutput(np.full((1, len(Z_select)), np.nan), np.zeros(1, dtype=bool),
                           np.zeros(1, dtype=int), np.zeros(1, dtype=int), error)
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


def _free_memory(device):
    """Collect what an out-of-memory attempt left (reference cycles) and empty the CUDA cache."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


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
        Group ``i`` of a call trains on ``devices[i % len(devices)]``
        (round-robin by the group's index, whoever runs it). With several
        CUDA devices and ``n_jobs > 1``, one thread per device runs its
        groups (:func:`device_threads`); a device listed twice gets two.
    n_jobs : int or None
        As in scikit-learn; an enclosing ``joblib.parallel_config`` (dask,
        ray, ...) is respected. Inside a task of an enclosing joblib
        ``Parallel`` (e.g. ``GridSearchCV(n_jobs=2)`` around the search)
        the groups are trained one after the other, with one
        :class:`UserWarning`: the outer workers already keep the cores busy,
        and nested workers would only compete for them.
    group_size : int
        At most this many candidates are trained together as one stacked
        model; a call's genomes are cut into the fewest such groups, of
        near-equal size, never depending on ``n_jobs`` (see
        :func:`resolve_group_size` for the estimator's ``"auto"``).
    train_group : callable, default=_train_group
        The task run for each group. Anything a parallel call raises other
        than an error of the code itself (``TypeError``, ``ValueError``, ...)
        is taken for a lost worker (a killed process, a dead dask worker, a
        CUDA error in a device thread): then every group of the call is run
        again one by one (also those that had finished: a parallel call
        returns all or nothing), and a group lost again is marked failed
        (transient), never cached as a bad candidate.

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
        self._warned_nested = False

    def n_parameters(self, genome):
        return n_parameters(genome, self.config, self.width_choices)

    def train(self, genomes, seeds, Z_select, *, config=None, budget=None, rungs=None):
        """Train every genome once for each ``(weight seed, minibatch seed)`` of ``seeds``.

        All genomes of one seed pair start from the same weights and see the
        same minibatches. The selection rows ``Z_select`` rank them (at the
        rungs) and are scored row by row. ``budget`` holds the ``max_steps`` of
        :func:`train_flows`; ``rungs`` is a function ``n_members -> rungs``
        for successive halving inside each group. Returns a :class:`Trained`
        whose arrays have a leading seed dimension.
        """
        return self.cross_fit(genomes, [(self.Z_train, Z_select, seeds)], config=config,
                              budget=budget, rungs=rungs)

    def cross_fit(self, genomes, folds, *, config=None, budget=None, rungs=None):
        """:meth:`train` on each fold ``(Z_train, Z_select, seeds)`` of ``folds``, in one parallel call.

        Fold ``k`` trains on its own ``Z_train`` (early-stopping on the
        trainer's ``Z_val``) under each of its seed pairs, and scores its own
        ``Z_select``. Every fold has as many seed pairs; the result's rows are
        the folds' rows side by side, its flags true where any fold's were,
        its step counts the mean over folds.
        """
        config = self.config if config is None else config
        groups = np.array_split(np.arange(len(genomes)), -(-len(genomes) // self.group_size))
        tasks, sizes = [], []
        for Z_train, Z_select, seeds in folds:
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
                    tasks.append((
                        structure, Z_train, self.Z_val, Z_select,
                        np.full(len(members), seed), batch_seed, config, device, group_budget,
                    ))
                    sizes.append(len(members))
        outputs = self._run(tasks, sizes)
        for output in outputs:
            if output.error is not None:
                self._warn(f"candidates could not be trained and are retried later: {output.error}")

        per_fold = len(outputs) // len(folds)

        def gather(field):  # (n_folds, n_seeds, n_genomes, ...) for one-dimensional fields
            return [
                np.concatenate([getattr(o, field) for o in outputs[k * per_fold:(k + 1) * per_fold]])
                .reshape(len(seeds), len(genomes), *getattr(outputs[k * per_fold], field).shape[1:])
                for k, (_, _, seeds) in enumerate(folds)
            ]

        rows = np.concatenate(gather("selection_log_prob"), axis=-1)
        if len(folds) == 1:
            n_steps, best_steps = gather("n_steps")[0], gather("best_steps")[0]
        else:
            n_steps, best_steps = (np.mean(gather(f), axis=0) for f in ("n_steps", "best_steps"))
        return Trained(rows, np.any(gather("diverged"), axis=0), np.isnan(rows).any(axis=-1),
                       n_steps, best_steps)

    def _run(self, tasks, sizes):
        """The output of ``train_group(*args)`` for every ``args`` of ``tasks``, in order.

        Task ``i`` carries device ``devices[i % len(devices)]``. If the
        parallel call loses a worker, every task is run again one by one.
        """
        n_jobs = self._n_jobs()
        n_threads = device_threads(self.devices, effective_n_jobs(n_jobs), get_active_backend()[0])
        try:
            if n_threads:
                return _per_device(self.train_group, tasks, len(self.devices), n_threads)
            return Parallel(n_jobs=n_jobs)(delayed(self.train_group)(*args) for args in tasks)
        except _PROGRAMMING_ERRORS:
            raise
        except Exception as exc:  # a lost worker
            self._warn(f"a worker was lost ({type(exc).__name__}: {exc}); retrying its tasks one by one")
        # Device threads share this process: nothing is gained by retrying in others.
        retry_n_jobs = 1 if n_threads else n_jobs
        return [self._retry(args, size, retry_n_jobs) for args, size in zip(tasks, sizes)]

    def _n_jobs(self):
        """``n_jobs``, or 1 inside a task of an enclosing joblib ``Parallel`` (warned once)."""
        if self.n_jobs == 1 or not in_joblib_worker() or effective_n_jobs(self.n_jobs) <= 1:
            return self.n_jobs
        if not self._warned_nested:
            self._warned_nested = True
            warnings.warn(
                "the structure search runs inside a worker of another joblib Parallel (e.g. "
                "GridSearchCV(n_jobs=...)): it trains its candidates one after the other there "
                f"instead of with n_jobs={self.n_jobs}, which would only compete with the outer "
                "workers for the cores. The result is the same; set n_jobs=1 on the search to "
                "silence this warning.",
                UserWarning,
            )
        return 1

    def _retry(self, args, n_candidates, n_jobs):
        try:
            return Parallel(n_jobs=n_jobs)([delayed(self.train_group)(*args)])[0]
        except _PROGRAMMING_ERRORS:
            raise
        except Exception as exc:
            n_select = len(args[3])  # the task's selection rows
            return GroupOutput(np.full((n_candidates, n_select), np.nan),
                               np.zeros(n_candidates, dtype=bool), np.zeros(n_candidates, dtype=int),
                               np.zeros(n_candidates, dtype=int),
                               f"worker lost twice ({type(exc).__name__}: {exc})")

    def _warn(self, message):
        self.errors.append(message)
        warnings.warn(message, RuntimeWarning)


def _per_device(train_group, tasks, n_devices, n_threads):
    """Run ``train_group(*args)`` for every ``args`` of ``tasks`` in ``n_threads`` threads.

    Task ``i`` is on device ``i % n_devices``; a device's tasks form one lane,
    run in order by one thread, so no two threads share a device. Returns
    the outputs in the order of ``tasks``.
    """
    lanes = [tasks[k::n_devices] for k in range(n_devices)]
    done = Parallel(n_jobs=n_threads, backend="threading")(
        delayed(_run_lane)(train_group, lane) for lane in lanes
    )
    outputs = [None] * len(tasks)
    for k, lane_outputs in enumerate(done):
        outputs[k::n_devices] = lane_outputs
    return outputs


def _run_lane(train_group, lane):
    return [train_group(*args) for args in lane]


def mean_scores(trained, offset=0.0):
    """Mean selection log-likelihood of each genome: ``-inf`` if it diverged, NaN if it failed."""
    with np.errstate(invalid="ignore"):
        scores = trained.selection_log_prob.mean(axis=-1) + offset
    scores = np.where(trained.diverged | ~np.isfinite(scores), -np.inf, scores)
    return np.where(trained.failed, np.nan, scores)
