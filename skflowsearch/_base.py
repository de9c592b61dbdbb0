"""What every flow estimator of the package shares: input validation, the
normalizing map, training one final flow, scoring, sampling and persistence.

Subclasses decide only the structure of the final flow (``_choose_structure``:
its masks and hidden layer sizes).
"""

import copy
import numbers
import warnings
from dataclasses import replace

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, DensityMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils.validation import check_is_fitted, validate_data

from ._device import resolve_device, resolve_devices
from ._masks import check_hidden_layer_sizes, effective_n_parameters
from ._preprocessing import fit_affine_normalizer
from . import _training
from ._training import TrainingConfig, fit_flows

_SEED_HIGH = 2**63 - 1


def check_real(value, name, **bounds):
    """``check_scalar`` for a real parameter that must also be finite (it lets NaN and inf pass)."""
    check_scalar(value, name, numbers.Real, **bounds)
    if isinstance(value, bool) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}.")


def check_integer(value, name, **bounds):
    """``check_scalar`` for an integer parameter, rejecting bools (an Integral, but surely a mistake)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int; got {value!r}.")
    check_scalar(value, name, numbers.Integral, **bounds)


def draw_seeds(rng, n):
    """``n`` integer seeds from a numpy RandomState, for torch generators."""
    return [int(s) for s in rng.randint(0, 2**62, size=n, dtype=np.int64)]


class BaseFlow(DensityMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class of the flow density estimators. Not for direct use."""

    # --- validation ----------------------------------------------------------------

    def _check_params(self):
        check_integer(self.n_layers, "n_layers", min_val=1)
        check_hidden_layer_sizes(self.hidden_layer_sizes)
        check_integer(self.max_epochs, "max_epochs", min_val=1)
        check_integer(self.batch_size, "batch_size", min_val=1)
        check_real(self.learning_rate, "learning_rate", min_val=0, include_boundaries="neither")
        check_real(self.weight_decay, "weight_decay", min_val=0)
        check_real(
            self.validation_fraction, "validation_fraction", min_val=0, max_val=1,
            include_boundaries="neither",
        )
        check_integer(self.n_iter_no_change, "n_iter_no_change", min_val=1)
        check_real(self.max_log_scale, "max_log_scale", min_val=0, include_boundaries="neither")

    def _training_config(self):
        return TrainingConfig(
            hidden_layer_sizes=check_hidden_layer_sizes(self.hidden_layer_sizes),
            actnorm=bool(self.actnorm),
            max_log_scale=float(self.max_log_scale),
            max_epochs=int(self.max_epochs),
            batch_size=int(self.batch_size),
            learning_rate=float(self.learning_rate),
            weight_decay=float(self.weight_decay),
            n_iter_no_change=int(self.n_iter_no_change),
        )

    def _validate_fit_data(self, X):
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2, ensure_min_features=1)
        n_samples, n_features = X.shape
        if n_features < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 features for a coupling layer to "
                f"split them; got {n_features} feature(s). For one feature use e.g. "
                "sklearn.neighbors.KernelDensity."
            )
        n_val = self._n_validation(n_samples)
        n_train = n_samples - n_val
        if n_train < 2:
            raise ValueError(
                f"n_samples = {n_samples} is too few: with validation_fraction="
                f"{self.validation_fraction} at least 2 rows must remain for training "
                f"and 1 for validation."
            )
        if self.whiten and n_train <= n_features:
            # The sample correlation is singular: whitening would blow the
            # directions the training rows do not span up by ~1/sqrt(ridge).
            raise ValueError(
                f"whiten=True needs more training rows than features; got {n_train} training "
                f"rows (n_samples = {n_samples} minus {n_val} for validation) for {n_features} "
                "features. Pass whiten=False, or more rows."
            )
        return X

    def _n_validation(self, n_samples):
        return max(1, int(round(self.validation_fraction * n_samples)))

    # --- fitting ---------------------------------------------------------------------

    def fit(self, X, y=None):
        """Fit the flow to ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; a ``validation_fraction`` of its rows is held out
            for early stopping.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        try:
            return self._fit(X)
        except BaseException:
            # Failed or interrupted (Ctrl-C): leave no half-fitted state behind.
            for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
                delattr(self, name)
            raise

    def _fit(self, X):
        self._check_params()
        X = self._validate_fit_data(X)
        rng = check_random_state(self.random_state)
        devices = resolve_devices(self.device)

        order = rng.permutation(X.shape[0])
        n_val = self._n_validation(X.shape[0])
        X_train, X_val = X[order[n_val:]], X[order[:n_val]]
        # Drawn before the structure is chosen: a search whose winner is the
        # default structure ends with exactly the CouplingFlow of its random_state.
        init_seed, batch_seed = draw_seeds(rng, 2)
        masks, hidden_layer_sizes = self._choose_structure(X_train, X_val, rng, devices)

        # Fitted on the training rows only: the validation rows stay unseen.
        self.mean_, self.scale_, self.input_matrix_, self.input_log_det_ = fit_affine_normalizer(
            X_train, whiten=self.whiten
        )
        config = replace(self._training_config(), hidden_layer_sizes=hidden_layer_sizes)
        result = fit_flows(
            masks[None],
            self._normalize(X_train),
            self._normalize(X_val),
            seeds=[init_seed],
            batch_seed=batch_seed,
            config=config,
            device=devices[0],
            epoch_callback=self._print_epoch if self.verbose >= self._epoch_verbose_level else None,
        )
        self._store_result(masks, hidden_layer_sizes, result, devices[0])
        return self

    def _normalize(self, X):
        return (X - self.mean_) @ self.input_matrix_

    # The verbose level from which the final training prints one line per epoch.
    _epoch_verbose_level = 1

    def _choose_structure(self, X_train, X_val, rng, devices):
        """``(masks, hidden_layer_sizes)`` of the final flow, from the raw training rows.

        ``masks`` is an (n_layers, n_features) bool array.
        """
        raise NotImplementedError

    def _print_epoch(self, epoch, train_loss, validation_score):
        # Both in the original feature space, like score(): the training loss
        # is a negative log-likelihood of the normalized features.
        print(
            f"[{type(self).__name__}] epoch {epoch:4d}  mean log-likelihood: "
            f"train {self.input_log_det_ - train_loss[0]:.4f}  "
            f"validation {validation_score[0] + self.input_log_det_:.4f}"
        )

    def _store_result(self, masks, hidden_layer_sizes, result, device):
        if result.diverged[0]:
            if not np.isfinite(result.best_validation_score[0]):
                raise ValueError(
                    "training diverged before reaching a finite validation log-likelihood; "
                    "check the data for extreme values or lower learning_rate."
                )
            warnings.warn(
                f"training diverged (NaN/inf loss) after {result.n_epochs[0]} epochs; the "
                f"weights of epoch {result.best_epoch[0]} were restored. Consider a lower "
                "learning_rate or max_log_scale.",
                RuntimeWarning,
            )
        elif result.n_epochs[0] >= self.max_epochs:
            # Early stopping did not end the training: the validation score was
            # still improving within the last n_iter_no_change epochs.
            warnings.warn(
                f"{type(self).__name__}: the final training reached max_epochs={self.max_epochs} "
                f"while the validation log-likelihood was still improving (best at epoch "
                f"{result.best_epoch[0]}); the flow may be undertrained. Consider a larger "
                "max_epochs.",
                ConvergenceWarning,
            )
        self.masks_ = np.asarray(masks, dtype=bool)
        self.hidden_layer_sizes_ = tuple(hidden_layer_sizes)
        # Kept in float64: a row scores the same to ~1e-15 whatever batch it is in.
        self.flow_ = result.module.double().to(device)
        self.device_ = str(device)
        self.loss_curve_ = result.train_loss[: result.n_epochs[0], 0].astype(np.float64)
        self.validation_scores_ = (
            result.validation_score[: result.n_epochs[0] + 1, 0].astype(np.float64)
            + self.input_log_det_
        )
        self.best_validation_score_ = float(np.float64(result.best_validation_score[0]) + self.input_log_det_)
        self.n_epochs_ = int(result.n_epochs[0])
        self.best_epoch_ = int(result.best_epoch[0])
        self.n_parameters_ = effective_n_parameters(self.masks_, self.hidden_layer_sizes_, self.actnorm)

    # --- inference -----------------------------------------------------------------

    def _flow_input(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        # Rows near the float64 limit can overflow here; they score -inf.
        with np.errstate(over="ignore", invalid="ignore"):
            return self._normalize(X)

    def score_samples(self, X):
        """Log-density of each row of ``X`` in the original feature space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            In nats, including the log-Jacobian of the internal normalization.
        """
        Z = self._flow_input(X)
        finite = np.isfinite(Z).all(axis=1)
        out = np.full(finite.shape[0], -np.inf)
        out[finite] = self._in_chunks(lambda rows: self.flow_.log_prob(rows)[0], Z[finite])
        return out + self.input_log_det_

    def score(self, X, y=None):
        """Mean log-likelihood of ``X`` (nats per row); higher is better.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        score : float
        """
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples=1, random_state=None):
        """Draw samples from the fitted density.

        Parameters
        ----------
        n_samples : int, default=1
        random_state : int, RandomState instance or None, default=None
            Seeds the base noise; the same seed gives the same samples.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            Samples in the original feature space.
        """
        check_is_fitted(self)
        if isinstance(n_samples, bool):  # an Integral, but surely a mistake
            raise TypeError(f"n_samples must be an int; got {n_samples!r}.")
        check_scalar(n_samples, "n_samples", numbers.Integral, min_val=1)
        (seed,) = draw_seeds(check_random_state(random_state), 1)
        generator = torch.Generator().manual_seed(seed)
        out = np.empty((int(n_samples), self.n_features_in_))
        with torch.no_grad():
            # In chunks, like score_samples: memory stays that of the output.
            for start in range(0, out.shape[0], _training.ROW_CHUNK):
                n = min(_training.ROW_CHUNK, out.shape[0] - start)
                out[start : start + n] = self._denormalize(self.flow_.sample(n, generator)[0].cpu().numpy())
        return out

    def transform(self, X):
        """Map rows to the flow's latent space, where the fitted density is a standard normal.

        The rows are normalized (``(X - mean_) @ input_matrix_``) and passed
        through every layer of the flow: the result is a joint
        Gaussianization of the features, where ``QuantileTransformer`` or
        ``PowerTransformer`` act column by column.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        Z : ndarray of shape (n_samples, n_features)
            Latent rows (float64); ``inverse_transform`` maps them back.
        """
        Z = self._flow_input(X)
        return self._in_chunks(lambda rows: self.flow_(rows)[0][0], Z, Z.shape[1:])

    def inverse_transform(self, X):
        """Map latent rows back to the original feature space (the inverse of ``transform``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Latent rows, e.g. from ``transform`` or standard normal draws.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        Z = validate_data(self, X, reset=False, dtype=np.float64)
        return self._denormalize(self._in_chunks(lambda rows: self.flow_.inverse(rows)[0][0], Z, Z.shape[1:]))

    def _in_chunks(self, function, Z, per_row_shape=()):
        """``function`` (torch rows -> a result per row) on the rows of ``Z``, chunk by chunk.

        Writes into one preallocated array, so memory stays that of the output.
        """
        device = self.flow_.masks.device
        out = np.empty((Z.shape[0], *per_row_shape))
        with torch.no_grad():
            for start in range(0, Z.shape[0], _training.ROW_CHUNK):
                chunk = torch.from_numpy(np.ascontiguousarray(Z[start : start + _training.ROW_CHUNK]))
                out[start : start + chunk.shape[0]] = function(chunk.to(device)).cpu().numpy()
        return out

    def _denormalize(self, Z):
        return np.linalg.solve(self.input_matrix_.T, Z.T).T + self.mean_

    @property
    def _n_features_out(self):
        return self.n_features_in_

    # --- persistence ---------------------------------------------------------------

    def __getstate__(self):
        state = super().__getstate__()
        flow = state.get("flow_")
        if flow is not None and flow.masks.device.type != "cpu":
            state["flow_"] = copy.deepcopy(flow).cpu()
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        flow = state.get("flow_")
        if flow is not None and getattr(self, "device_", "cpu") != "cpu":
            try:
                self.flow_ = flow.to(resolve_device(self.device_))
            except ValueError:
                warnings.warn(
                    f"this estimator was fitted on {self.device_}, which is not available; "
                    "it computes on the CPU.",
                    UserWarning,
                )
                self.device_ = "cpu"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # CUDA kernels may reduce in a different order from run to run.
        tags.non_deterministic = any(d.type == "cuda" for d in _safe_devices(self.device))
        return tags


def _safe_devices(device):
    try:
        return resolve_devices(device)
    except ValueError:
        return []
