"""Classical density-estimation baselines tuned on a validation split.

The functions here operate on whatever space they are given; standardizing
the data (e.g. with a :class:`~sklearn.preprocessing.StandardScaler` fitted
on the training split) is the caller's job. Scores are mean log-likelihoods
per sample, in nats, in that space.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity
from sklearn.utils import check_array

__all__ = [
    "gaussian_baseline",
    "tuned_gaussian_mixture",
    "tuned_kernel_density",
    "zuko_available",
    "fit_zuko_nsf",
    "DEFAULT_BANDWIDTHS",
]

#: Default bandwidth grid of :func:`tuned_kernel_density`.
DEFAULT_BANDWIDTHS = np.logspace(-1.5, 0.5, 25)


def _check_pair(X_train, X_val):
    X_train = check_array(X_train, dtype=np.float64)
    X_val = check_array(X_val, dtype=np.float64)
    if X_train.shape[1] != X_val.shape[1]:
        raise ValueError(
            f"X_train has {X_train.shape[1]} features but X_val has "
            f"{X_val.shape[1]}."
        )
    return X_train, X_val


def _mean_loglik(estimator, X):
    return float(np.mean(estimator.score_samples(X)))


def gaussian_baseline(X_train, *, reg_covar=1e-6):
    """Fit a single full-covariance Gaussian.

    Parameters
    ----------
    X_train : array-like of shape (n_samples, n_features)
        Training data.
    reg_covar : float, default=1e-6
        Non-negative regularization added to the diagonal of the covariance.

    Returns
    -------
    estimator : GaussianMixture
        A fitted ``GaussianMixture(n_components=1, covariance_type="full")``.
    """
    X_train = check_array(X_train, dtype=np.float64)
    return GaussianMixture(
        n_components=1, covariance_type="full", reg_covar=reg_covar
    ).fit(X_train)


def tuned_gaussian_mixture(
    X_train,
    X_val,
    n_components=(1, 2, 3, 4, 5, 6, 8),
    covariance_types=("full",),
    random_state=0,
    *,
    reg_covars=(1e-6, 1e-4, 1e-2),
    n_init=2,
    return_results=False,
):
    """Gaussian mixture with hyper-parameters chosen on a validation split.

    Every combination of ``n_components``, ``covariance_types`` and
    ``reg_covars`` is fitted on ``X_train`` and scored by its mean
    log-likelihood on ``X_val``; the best fitted model is returned (ties go to
    the first candidate in grid order, i.e. the simpler model). Candidates
    that cannot be fitted (more components than samples, or a numerically
    singular covariance) are skipped.

    Parameters
    ----------
    X_train : array-like of shape (n_samples, n_features)
        Data the candidates are fitted on.
    X_val : array-like of shape (n_val_samples, n_features)
        Data the candidates are scored on.
    n_components : sequence of int, default=(1, 2, 3, 4, 5, 6, 8)
        Numbers of mixture components to try.
    covariance_types : sequence of str, default=("full",)
        Covariance types to try (see :class:`~sklearn.mixture.GaussianMixture`).
    random_state : int, RandomState instance or None, default=0
        Seed of the mixture initializations.
    reg_covars : sequence of float, default=(1e-6, 1e-4, 1e-2)
        Diagonal covariance regularizations to try.
    n_init : int, default=2
        Number of initializations per candidate.
    return_results : bool, default=False
        If True, also return the list of ``dict`` records (parameters and
        ``val_score``) of every candidate.

    Returns
    -------
    estimator : GaussianMixture
        The best candidate, fitted on ``X_train``.
    results : list of dict
        Only if ``return_results`` is True.
    """
    X_train, X_val = _check_pair(X_train, X_val)
    best, best_score, results = None, -np.inf, []
    for covariance_type in covariance_types:
        for k in n_components:
            for reg_covar in reg_covars:
                params = dict(
                    n_components=int(k),
                    covariance_type=covariance_type,
                    reg_covar=float(reg_covar),
                )
                score = -np.inf
                if k <= X_train.shape[0]:
                    model = GaussianMixture(
                        **params, n_init=n_init, random_state=random_state
                    )
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", ConvergenceWarning)
                            model.fit(X_train)
                        score = _mean_loglik(model, X_val)
                    except (ValueError, np.linalg.LinAlgError):
                        score = -np.inf
                    if not np.isfinite(score):
                        score = -np.inf
                    elif score > best_score:
                        best, best_score = model, score
                results.append({**params, "val_score": score})
    if best is None:
        raise ValueError("No Gaussian mixture candidate could be fitted.")
    return (best, results) if return_results else best


def tuned_kernel_density(
    X_train,
    X_val,
    bandwidths=DEFAULT_BANDWIDTHS,
    *,
    kernel="gaussian",
    return_results=False,
):
    """Kernel density estimate with the bandwidth chosen on a validation split.

    Parameters
    ----------
    X_train : array-like of shape (n_samples, n_features)
        Data the estimates are fitted on.
    X_val : array-like of shape (n_val_samples, n_features)
        Data the estimates are scored on (mean log-likelihood).
    bandwidths : sequence of float, default=np.logspace(-1.5, 0.5, 25)
        Bandwidths to try. Ties go to the first one in the sequence.
    kernel : str, default="gaussian"
        Kernel of :class:`~sklearn.neighbors.KernelDensity`.
    return_results : bool, default=False
        If True, also return the list of ``dict`` records (``bandwidth`` and
        ``val_score``) of every candidate.

    Returns
    -------
    estimator : KernelDensity
        The best candidate, fitted on ``X_train``.
    results : list of dict
        Only if ``return_results`` is True.
    """
    X_train, X_val = _check_pair(X_train, X_val)
    bandwidths = np.asarray(bandwidths, dtype=np.float64).ravel()
    if bandwidths.size == 0 or np.any(bandwidths <= 0):
        raise ValueError("bandwidths must be a non-empty sequence of positive floats.")
    best, best_score, results = None, -np.inf, []
    for bandwidth in bandwidths:
        model = KernelDensity(bandwidth=float(bandwidth), kernel=kernel).fit(X_train)
        score = _mean_loglik(model, X_val)
        if not np.isfinite(score):
            score = -np.inf
        elif score > best_score:
            best, best_score = model, score
        results.append({"bandwidth": float(bandwidth), "val_score": score})
    if best is None:
        raise ValueError("No kernel density candidate gave a finite validation score.")
    return (best, results) if return_results else best


def zuko_available():
    """Whether the optional ``zuko`` package (a benchmark-only dependency) imports."""
    try:
        import zuko.flows  # noqa: F401
    except ImportError:
        return False
    return True


class ZukoFlow:
    """A trained zuko flow in float64 with the scoring API of the other baselines.

    Attributes
    ----------
    flow : zuko.flows.Flow
        The restored (best validation) model, converted to float64.
    n_parameters : int
        Number of scalars in its parameters.
    best_epoch : int
        Epoch of the restored weights (0: the initial ones).
    n_epochs : int
        Epochs trained before the early stop.
    """

    def __init__(self, flow, n_parameters, best_epoch, n_epochs):
        self.flow = flow
        self.n_parameters = int(n_parameters)
        self.best_epoch = int(best_epoch)
        self.n_epochs = int(n_epochs)

    def score_samples(self, X, chunk=4096):
        """Log-likelihood of every row of ``X`` (nats), in float64."""
        import torch

        X = torch.as_tensor(check_array(X, dtype=np.float64))
        with torch.no_grad():
            distribution = self.flow()
            return np.concatenate([distribution.log_prob(X[i : i + chunk]).numpy()
                                   for i in range(0, X.shape[0], chunk)])

    def score(self, X):
        """Mean log-likelihood per row of ``X``."""
        return float(np.mean(self.score_samples(X)))


def fit_zuko_nsf(
    X_train,
    X_val,
    *,
    n_layers,
    hidden_layer_sizes,
    max_epochs,
    n_iter_no_change,
    random_state,
    batch_size=128,
    learning_rate=1e-3,
):
    """zuko's rational-quadratic spline coupling flow, early-stopped on a validation split.

    The model is ``zuko.flows.NSF(d, transforms=n_layers, passes=2,
    hidden_features=hidden_layer_sizes)``: ``passes=2`` makes every
    transform a coupling over two halves of the features (zuko's defaults:
    8 bins on ``[-5, 5]``, identity outside, ReLU MLPs, the feature order
    reversed from one transform to the next, standard normal base).

    Training: ``torch.manual_seed(random_state)`` before the model is built,
    float32, Adam (``learning_rate``), minibatches of ``batch_size`` rows of
    ``X_train`` in an order drawn from a generator seeded with
    ``random_state`` (the last incomplete batch dropped, as the package's
    engine does), the mean log-likelihood of ``X_val`` after every epoch; it
    stops once that has not improved for ``n_iter_no_change`` epochs or after
    ``max_epochs``, and the weights of the best validation epoch (possibly
    the initial ones) are restored. A non-finite training loss stops it.
    The restored model is converted to float64 for scoring.

    ``zuko`` is imported here: it is a benchmark-only dependency
    (:func:`zuko_available`).

    Returns
    -------
    ZukoFlow
        With ``score(X)`` (mean log-likelihood), ``score_samples(X)``,
        ``n_parameters`` and ``best_epoch``.
    """
    import copy

    import torch
    import zuko

    X_train, X_val = _check_pair(X_train, X_val)
    torch.manual_seed(int(random_state))
    flow = zuko.flows.NSF(X_train.shape[1], transforms=int(n_layers), passes=2,
                          hidden_features=tuple(hidden_layer_sizes))
    flow = flow.float()
    train = torch.as_tensor(X_train, dtype=torch.float32)
    val = torch.as_tensor(X_val, dtype=torch.float32)
    n_train = train.shape[0]
    batch_size = min(int(batch_size), n_train)
    optimizer = torch.optim.Adam(flow.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(int(random_state))

    def val_score():
        flow.eval()
        with torch.no_grad():
            score = float(flow().log_prob(val).mean())
        return score if np.isfinite(score) else -np.inf

    best_score, best_epoch, n_epochs = val_score(), 0, 0
    best_state = copy.deepcopy(flow.state_dict())
    for epoch in range(1, int(max_epochs) + 1):
        flow.train()
        order = torch.randperm(n_train, generator=generator)
        finite = True
        for begin in range(0, n_train - batch_size + 1, batch_size):
            loss = -flow().log_prob(train[order[begin : begin + batch_size]]).mean()
            if not torch.isfinite(loss):
                finite = False
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        n_epochs = epoch
        if not finite:
            break
        score = val_score()
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(flow.state_dict())
        if epoch - best_epoch >= int(n_iter_no_change):
            break
    flow.load_state_dict(best_state)
    flow.eval()
    n_parameters = sum(p.numel() for p in flow.parameters())
    return ZukoFlow(flow.double(), n_parameters, best_epoch, n_epochs)
