"""Maximum-likelihood training of a :class:`~skflowsearch._nn.CouplingFlowStack`.

One loop trains a single flow or a whole population: all members see the same
minibatches, their mean negative log-likelihoods are summed, gradients are
clipped per member, and every member has its own early stopping, best-weights
restore and divergence guard. Nothing in the loop mixes members, so a member's
result does not depend on the others it was trained with (up to floating-point
rounding).
"""

import copy
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch

from ._bijections import Affine, make_bijection
from ._nn import CouplingFlowStack

# Rows evaluated at once wherever a flow scores or maps many rows (validation,
# score_samples, transform, sample): bounds the memory of the activations.
ROW_CHUNK = 16384

# Torch threads of one training run on the CPU. The flows are small MLPs on
# minibatches of ~100 rows: a second thread buys little, and two threads per
# process on busy cores made fits up to 20x slower. Parallelism comes from
# running several fits at once (n_jobs). One thread also makes results the
# same whatever n_jobs is.
CPU_THREADS = 1


@contextmanager
def torch_threads(n_threads):
    """Run the block with ``n_threads`` torch threads, then restore the setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class TrainingConfig:
    """Architecture and optimisation settings shared by every flow of a fit.

    Plain picklable data, so it travels to joblib workers with the masks.
    The estimators build it from their parameters of the same names
    (:meth:`from_params`); the engine reads nothing else.
    """

    hidden_layer_sizes: tuple = (64, 64)
    base_df: float = math.inf  # the base distribution; inf: standard normal
    base_mixture: object = None  # or a Gaussian-mixture base, see skflowsearch._bases.Mixture
    bijection: object = Affine()  # of the couplings, see skflowsearch._bijections
    actnorm: bool = True
    max_epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    n_iter_no_change: int = 20
    tol: float = 1e-4
    max_grad_norm: float = 5.0

    def with_max_epochs(self, max_epochs):
        return replace(self, max_epochs=int(max_epochs))

    @classmethod
    def from_params(cls, params, **overrides):
        """The config of an estimator's ``get_params()``: every field of the same name.

        ``bijection`` is made from ``params["coupling"]`` and the options
        that are its fields (see :func:`~skflowsearch._bijections.make_bijection`).
        """
        values = {name: params[name] for name in cls.__dataclass_fields__ if name in params}
        if "coupling" in params:
            values["bijection"] = make_bijection(params["coupling"], **params)
        return cls(**{**values, **overrides})

    def build(self, masks, seeds, *, layer_active=None, hidden_widths=None):
        """A :class:`CouplingFlowStack` of this architecture for ``masks``."""
        return CouplingFlowStack(
            torch.as_tensor(np.asarray(masks, dtype=bool)),
            self.hidden_layer_sizes,
            seeds,
            bijection=self.bijection,
            actnorm=self.actnorm,
            base_df=self.base_df,
            base_mixture=self.base_mixture,
            layer_active=layer_active,
            hidden_widths=hidden_widths,
        )


@dataclass
class TrainingResult:
    """Outcome of :func:`train_flows`, one entry per member.

    Attributes
    ----------
    module : CouplingFlowStack
        On the CPU, holding each member's best weights.
    train_loss : ndarray of shape (n_epochs, n_members)
        Mean training negative log-likelihood (nats) of each epoch; NaN for
        epochs after a member stopped.
    validation_score : ndarray of shape (n_epochs + 1, n_members)
        Mean validation log-likelihood before training (row 0) and after each
        epoch; NaN after a member stopped.
    best_validation_score : ndarray of shape (n_members,)
    best_epoch : ndarray of shape (n_members,)
        Epoch of the restored weights (0 = the initial ones).
    n_epochs : ndarray of shape (n_members,)
        Epochs each member was trained for.
    n_steps : ndarray of shape (n_members,)
        Optimizer steps each member was trained for.
    diverged : ndarray of shape (n_members,)
        True where the training loss or validation score became NaN or inf.
    selection_log_prob : ndarray of shape (n_members, n_select) or None
        Log-density (float64) of every selection row under each member's
        restored weights, when selection rows were given.
    seconds : float
        Wall time of the training loop.
    """

    module: CouplingFlowStack
    train_loss: np.ndarray
    validation_score: np.ndarray
    best_validation_score: np.ndarray
    best_epoch: np.ndarray
    n_epochs: np.ndarray
    n_steps: np.ndarray
    diverged: np.ndarray
    selection_log_prob: object
    seconds: float


def mean_log_prob(module, X):
    """Mean log-likelihood of rows ``X`` under each member, shape (n_members,)."""
    return log_prob_rows(module, X).mean(dim=1)


def log_prob_rows(module, X):
    """Log-density of every row of ``X`` under each member, shape (n_members, n_rows)."""
    return torch.cat(
        [module.log_prob(X[start : start + ROW_CHUNK]) for start in range(0, X.shape[0], ROW_CHUNK)],
        dim=1,
    )


def optimizer_step(module, optimizer, parameters, batch, max_grad_norm):
    """One step on a minibatch: each member's mean negative log-likelihood, clipped per member.

    Returns the members' losses, detached (no host-device sync: on a GPU the
    step only queues kernels).
    """
    loss = -module.log_prob(batch).mean(dim=1)
    optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()
    _clip_grad_norm_per_member([p.grad for p in parameters], max_grad_norm)
    optimizer.step()
    return loss.detach()


def _clip_grad_norm_per_member(grads, max_norm):
    """Scale each member's gradient so its global norm is at most ``max_norm``.

    ``grads`` are the gradients of the parameters, each with the member index
    as its leading dimension.
    """
    # (n_members, n_tensors): every reduction runs along a member's own row, so
    # a member's norm does not depend on how many members share the stack.
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads], dim=1)
    scale = (max_norm / (torch.linalg.vector_norm(norms, dim=1) + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, [scale.view(-1, *([1] * (g.dim() - 1))) for g in grads])


def fit_flows(masks, X_train, X_val, *, seeds, batch_seed, config, device, epoch_callback=None,
              layer_active=None, hidden_widths=None, **budget):
    """Build a :class:`CouplingFlowStack` for ``masks`` and train it.

    Parameters
    ----------
    masks : ndarray of shape (n_members, n_layers, n_features)
    X_train, X_val : ndarray
        Rows in the flow's (normalized) input space.
    seeds : sequence of int
        One weight-initialisation seed per member.
    batch_seed : int
    config : TrainingConfig
    device : torch.device
        On the CPU, training runs with ``CPU_THREADS`` torch threads.
    epoch_callback : callable, optional
        See :func:`train_flows`.
    layer_active, hidden_widths : array-like, optional
        Depth and width of each member, see :class:`CouplingFlowStack`.
    **budget
        ``X_select``, ``max_steps`` and ``rungs`` of :func:`train_flows`.

    Returns
    -------
    TrainingResult
    """
    module = config.build(masks, seeds, layer_active=layer_active, hidden_widths=hidden_widths)
    kwargs = dict(config=config, batch_seed=batch_seed, device=device, epoch_callback=epoch_callback,
                  **budget)
    if torch.device(device).type == "cpu":
        with torch_threads(CPU_THREADS):
            return train_flows(module, X_train, X_val, **kwargs)
    return train_flows(module, X_train, X_val, **kwargs)


def steps_per_epoch(n_train, batch_size):
    """Optimizer steps in one pass over ``n_train`` rows (the last short batch is dropped)."""
    return n_train // min(int(batch_size), n_train)


def train_flows(
    module,
    X_train,
    X_val,
    *,
    config,
    batch_seed,
    device,
    epoch_callback=None,
    X_select=None,
    max_steps=None,
    rungs=(),
):
    """Train every member of ``module`` on the same minibatches.

    Members that stop (early stopping, divergence, the step budget or a rung)
    are dropped from the stack, so the others train at the cost of the
    smaller stack; their restored weights are kept.

    Parameters
    ----------
    module : CouplingFlowStack
        Moved to ``device`` and trained in place.
    X_train, X_val : ndarray of shape (n, n_features)
        Training rows and the validation rows used for early stopping.
    config : TrainingConfig
        Its optimisation settings: ``max_epochs``, ``batch_size``, AdamW's
        ``learning_rate`` and ``weight_decay``, ``max_grad_norm``, and early
        stopping (a member stops once its validation score has not improved
        by more than ``tol`` for ``n_iter_no_change`` epochs). Its
        architecture is the module's.
    batch_seed : int
        Seeds the minibatch order (shared by all members).
    device : torch.device
    epoch_callback : callable, optional
        Called as ``epoch_callback(epoch, train_loss, validation_score)`` with
        numpy arrays of shape (n_members,) after each epoch.
    X_select : ndarray of shape (n_select, n_features), optional
        Selection rows: they rank the members at the ``rungs`` and are scored
        row by row under the restored weights (``selection_log_prob``). They
        never early-stop.
    max_steps : int, optional
        Stop every member after the epoch in which it reached this many
        optimizer steps.
    rungs : sequence of (int, int)
        Successive halving: ``(steps, n_keep)`` keeps, after the epoch in
        which the members reached ``steps`` optimizer steps, only the
        ``n_keep`` best of those still training (by mean log-likelihood of
        ``X_select``, else of ``X_val``; ties go to the lower index).

    Returns
    -------
    TrainingResult
    """
    start_time = time.perf_counter()
    dtype = module.masks.dtype
    module.to(device)
    X_train = torch.tensor(np.asarray(X_train), dtype=dtype, device=device)
    X_val = torch.tensor(np.asarray(X_val), dtype=dtype, device=device)
    X_rank = X_val if X_select is None else torch.tensor(np.asarray(X_select), dtype=dtype, device=device)
    n_train, n_members = X_train.shape[0], module.n_members
    batch_size = min(int(config.batch_size), n_train)
    max_epochs, tol, n_iter_no_change = config.max_epochs, config.tol, config.n_iter_no_change
    per_epoch = steps_per_epoch(n_train, batch_size)
    if max_steps is not None:
        max_epochs = min(int(max_epochs), -(-int(max_steps) // per_epoch))
    rungs = sorted((-(-int(steps) // per_epoch), int(keep)) for steps, keep in rungs)

    parameters = list(module.parameters())
    # One fused kernel for all parameters instead of about ten per parameter.
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay,
                                  fused=True)
    generator = torch.Generator().manual_seed(int(batch_seed))

    with torch.no_grad():
        best_score = mean_log_prob(module, X_val)
    best_state = {k: v.clone() for k, v in module.member_tensors().items()}
    active = torch.isfinite(best_score)
    diverged = ~active
    best_score = torch.where(active, best_score, torch.full_like(best_score, -torch.inf))
    best_epoch = torch.zeros(n_members, dtype=torch.long, device=device)
    n_epochs = torch.zeros(n_members, dtype=torch.long, device=device)
    train_losses, val_scores = [], [best_score.cpu().numpy()]
    members = torch.arange(n_members, device=device)  # the members still in the stack

    for epoch in range(1, max_epochs + 1):
        if not bool(active.any()):
            break
        if not bool(active[members].all()):
            keep = torch.nonzero(active[members]).flatten()
            optimizer = _keep_members(module, optimizer, keep)
            parameters = list(module.parameters())
            members = members[keep]
        module.train()
        order = torch.randperm(n_train, generator=generator).to(device)
        epoch_loss = torch.zeros(len(members), dtype=dtype, device=device)
        for begin in range(0, n_train - batch_size + 1, batch_size):
            # Drop the last incomplete batch: every step has the same size.
            batch = X_train[order[begin : begin + batch_size]]
            epoch_loss += optimizer_step(module, optimizer, parameters, batch, config.max_grad_norm)
        epoch_loss /= per_epoch
        module.eval()
        with torch.no_grad():
            member_score = mean_log_prob(module, X_val)
        nan = torch.full((n_members,), torch.nan, dtype=dtype, device=device)
        score, loss_all = nan.clone(), nan.clone()
        score[members], loss_all[members] = member_score, epoch_loss

        blew_up = active & ~(torch.isfinite(loss_all) & torch.isfinite(score))
        diverged |= blew_up
        n_epochs += active.long()
        was_active = active.clone()
        active &= ~blew_up
        improved = active & (score > best_score + tol)
        if bool(improved.any()):
            rows = torch.nonzero(improved[members]).flatten()
            for name, tensor in module.member_tensors().items():
                best_state[name][members[rows]] = tensor[rows]
            best_score = torch.where(improved, score, best_score)
            best_epoch = torch.where(improved, torch.full_like(best_epoch, epoch), best_epoch)
        active &= (epoch - best_epoch) < n_iter_no_change
        while rungs and rungs[0][0] <= epoch:
            _, n_keep = rungs.pop(0)
            active &= _best_of(module, X_rank, members, active, n_keep)

        train_losses.append(torch.where(was_active, loss_all, nan).cpu().numpy())
        val_scores.append(torch.where(was_active, score, nan).cpu().numpy())
        if epoch_callback is not None:
            epoch_callback(epoch, train_losses[-1], val_scores[-1])

    module.assign_state(best_state)
    module.to("cpu").eval()
    selection = None
    if X_select is not None:
        with torch.no_grad():
            scorer = copy.deepcopy(module).double()
            selection = log_prob_rows(scorer, torch.as_tensor(np.asarray(X_select), dtype=torch.float64)).numpy()
    return TrainingResult(
        module=module,
        train_loss=np.array(train_losses).reshape(-1, n_members),
        validation_score=np.array(val_scores),
        best_validation_score=best_score.cpu().numpy(),
        best_epoch=best_epoch.cpu().numpy(),
        n_epochs=n_epochs.cpu().numpy(),
        n_steps=n_epochs.cpu().numpy() * per_epoch,
        diverged=diverged.cpu().numpy(),
        selection_log_prob=selection,
        seconds=time.perf_counter() - start_time,
    )


@torch.no_grad()
def _best_of(module, X, members, active, n_keep):
    """Mask (over all members) that keeps the ``n_keep`` best active members on ``X``."""
    keep = torch.ones_like(active)
    rows = torch.nonzero(active[members]).flatten()
    if len(rows) <= n_keep:
        return keep
    module.eval()
    score = mean_log_prob(module, X)[rows]
    score = torch.where(torch.isfinite(score), score, torch.full_like(score, -torch.inf))
    order = torch.sort(-score, stable=True).indices  # stable: ties go to the lower index
    keep[members[rows[order[n_keep:]]]] = False
    return keep


def _keep_members(module, optimizer, keep):
    """Shrink the stack to the members ``keep``; returns the optimizer for the new parameters.

    The AdamW moments of the kept members carry over, so their training goes
    on exactly as in the larger stack.
    """
    old = list(module.parameters())
    module.assign_state({name: t[keep] for name, t in module.member_tensors().items()})
    group = optimizer.param_groups[0]
    new_optimizer = torch.optim.AdamW(
        module.parameters(), lr=group["lr"], weight_decay=group["weight_decay"], fused=group["fused"]
    )
    for before, after in zip(old, module.parameters()):
        state = optimizer.state.get(before)
        if state:
            new_optimizer.state[after] = {
                name: value if name == "step" else value[keep] for name, value in state.items()
            }
    return new_optimizer
