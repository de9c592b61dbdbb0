"""What every flow estimator of the package shares: input validation, the
normalizing map, training one final flow, scoring, sampling and persistence.

Subclasses decide only the structure of the final flow (``_choose_structure``:
its masks and hidden layer sizes).
"""

import copy
import math
import numbers
import warnings
from numbers import Integral, Real
from dataclasses import replace

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, DensityMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._device import resolve_device, resolve_devices
from ._bijections import BIJECTIONS
from ._masks import check_hidden_layer_sizes
from ._preprocessing import (
    BASE_DISTRIBUTIONS,
    COVARIANCE_TYPES,
    DEPENDENT_WIDTH,
    NORMALIZATIONS,
    LinearResidual,
    best_mixture,
    choose_start,
    mixture_start,
    dependent_columns,
    warn_if_few_rows,
)
from . import _training
from ._missing import MarginalProposal, log_marginal
from ._training import TrainingConfig, fit_flows

_SEED_HIGH = 2**63 - 1

# A row with discrete columns scores the mean log-density over this many
# dequantization offsets (a Latin hypercube of the unit cell).
N_DEQUANTIZATION_OFFSETS = 8

# A continuous column with at most this many distinct values has point masses:
# fit warns.
FEW_DISTINCT_VALUES = 10

# A continuous column with more distinct values, one of which holds at least
# this share of the rows (a zero-inflated amount, a code for a missing value),
# has a point mass there too: fit warns.
POINT_MASS_SHARE = 0.25


def validate_params(estimator):
    """Check ``estimator``'s parameters against its ``_parameter_constraints``.

    As scikit-learn's own estimators do, and in addition: a bool is refused
    where a number is expected (``Integral`` and ``Real`` accept it, but
    ``n_layers=True`` is surely a mistake).
    """
    estimator._validate_params()
    params = estimator.get_params(deep=False)
    for name, constraints in estimator._parameter_constraints.items():
        value = params.get(name)
        numeric = any(isinstance(c, Interval) for c in constraints)
        if isinstance(value, (bool, np.bool_)) and numeric and "boolean" not in constraints:
            raise TypeError(f"{name} must be a number, not a bool; got {value!r}.")


def draw_seeds(rng, n):
    """``n`` integer seeds from a numpy RandomState, for torch generators."""
    return [int(s) for s in rng.randint(0, 2**62, size=n, dtype=np.int64)]


class BaseFlow(DensityMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class of the flow density estimators. Not for direct use."""

    # --- validation ----------------------------------------------------------------

    # The parameters every flow estimator shares; subclasses add theirs.
    _parameter_constraints = {
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [Interval(Integral, 1, None, closed="left"), "array-like"],
        "whiten": ["boolean", StrOptions({"auto"})],
        "normalization": [StrOptions(set(NORMALIZATIONS))],
        "base_distribution": [StrOptions(set(BASE_DISTRIBUTIONS))],
        "n_components": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "discrete_features": [StrOptions({"auto"}), "boolean", "array-like"],
        "dependent_features": [StrOptions({"model", "raise"})],
        "coupling": [StrOptions(set(BIJECTIONS))],
        "n_bins": [Interval(Integral, 2, None, closed="left")],
        "tail_bound": [Interval(Real, 0, None, closed="neither")],
        "actnorm": ["boolean"],
        "max_log_scale": [Interval(Real, 0, None, closed="neither")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "device": [str, list, tuple],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def _check_params(self):
        validate_params(self)
        check_hidden_layer_sizes(self.hidden_layer_sizes)

    def _training_config(self):
        """The engine's settings: the parameters of the same names, in one object."""
        return TrainingConfig.from_params(
            self.get_params(deep=False), hidden_layer_sizes=check_hidden_layer_sizes(self.hidden_layer_sizes)
        )

    def _validate_fit_data(self, X):
        _check_numeric_columns(X)
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", ensure_min_samples=2,
                          ensure_min_features=1)
        n_features = X.shape[1]
        if n_features < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 features for a coupling layer to "
                f"split them; got {n_features} feature(s). For one feature use e.g. "
                "sklearn.neighbors.KernelDensity."
            )
        X = self._complete_rows(X)
        n_samples = X.shape[0]
        n_val = self._n_validation(n_samples)
        n_train = n_samples - n_val
        if n_train < 2:
            raise ValueError(
                f"n_samples = {n_samples} is too few: with validation_fraction="
                f"{self.validation_fraction} at least 2 rows must remain for training "
                f"and 1 for validation."
            )
        return X

    def _complete_rows(self, X):
        """The rows of ``X`` without missing entries (NaN), which the flow is fitted on; warns when rows go."""
        missing = np.isnan(X)
        if not missing.any():
            return X
        empty = np.flatnonzero(missing.all(axis=0))
        if empty.size:
            raise ValueError(f"column(s) {empty.tolist()} of X hold only missing values (NaN); drop them.")
        complete = ~missing.any(axis=1)
        n_complete = int(complete.sum())
        described = (f"{X.shape[0] - n_complete} of the {X.shape[0]} rows of X have missing entries (NaN, "
                     f"in column(s) {np.flatnonzero(missing.any(axis=0)).tolist()})")
        if n_complete < 2:
            raise ValueError(
                f"{described}: {type(self).__name__} is fitted on the complete rows, and at least 2 "
                "are needed. Impute the missing entries (sklearn.impute) or drop the columns that "
                "hold most of them."
            )
        warnings.warn(
            f"{type(self).__name__}: {described}; the flow is fitted on the {n_complete} complete "
            "rows. score_samples scores a row with missing entries by its marginal density over "
            "them, estimated by importance sampling.",
            UserWarning,
        )
        return X[complete]

    def _dequantize_fit_rows(self, X, X_train, X_val, rng):
        """Set ``discrete_features_`` and ``dequantization_offsets_``; dequantize the fit rows.

        A discrete column's values are moved by uniform noise on ``[0, 1)``, so
        that they fill their unit cells with a density, instead of point
        masses whose density grows without bound during training.
        """
        self.discrete_features_ = self._discrete_columns(X)
        columns = np.flatnonzero(self.discrete_features_)
        self.dequantization_offsets_ = np.zeros((1, X.shape[1]))
        if not columns.size:
            return X_train, X_val
        noise = np.random.default_rng(draw_seeds(rng, 1)[0])
        X_train, X_val = X_train.copy(), X_val.copy()
        X_train[:, columns] += noise.random((X_train.shape[0], columns.size))
        X_val[:, columns] += noise.random((X_val.shape[0], columns.size))
        # A Latin hypercube of cell centres: each column's offsets are
        # (i + 1/2) / N in a random order.
        n = N_DEQUANTIZATION_OFFSETS
        offsets = np.zeros((n, X.shape[1]))
        offsets[:, columns] = (np.argsort(noise.random((n, columns.size)), axis=0) + 0.5) / n
        self.dequantization_offsets_ = offsets
        return X_train, X_val

    def _fit_dependent_columns(self, X_train, X_val):
        """Set ``dependent_features_`` and ``dependent_model_``; return the fit rows' other columns.

        A column that is an exact linear function of others (a difference,
        a sum, a unit conversion) puts the rows on a hyperplane, where no
        density exists. With ``dependent_features="model"`` one column of each
        dependence is modeled as a narrow Gaussian around its least-squares
        prediction from the others, and the flow models the others.
        """
        found = dependent_columns(X_train)
        derived = np.zeros(X_train.shape[1], dtype=bool)
        derived[[column for _, column in found]] = True
        self.dependent_features_ = derived
        self.dependent_model_ = None
        # Added to the flow's validation scores, to report them in the original space.
        self._validation_offset = 0.0
        if not found:
            return X_train, X_val
        model = LinearResidual.fit(X_train, derived)
        kept = np.flatnonzero(~derived)
        # The columns each derived one depends on: its non-negligible coefficients.
        weight = np.abs(model.coef) * X_train[:, kept].std(axis=0)[:, None]
        relations = [(j, kept[weight[:, i] > 1e-6 * weight[:, i].max()].tolist())
                     for i, j in enumerate(np.flatnonzero(derived))]
        described = "; ".join(f"column {j} is a linear function of columns {on}" for j, on in relations)
        if self.dependent_features == "raise":
            raise ValueError(
                f"the columns of X are linearly dependent: {described} (a copy, a sum or a "
                "difference of columns, a change of units). Drop them, or pass "
                "dependent_features='model'."
            )
        warnings.warn(
            f"{type(self).__name__}: the columns of X are linearly dependent: {described}. Each "
            f"derived column is modeled as a Gaussian of width {DEPENDENT_WIDTH:g} standard "
            "deviations around its least-squares prediction from the others, which the flow "
            "models; rows off that hyperplane score very low. Pass dependent_features='raise' to "
            "refuse such data.",
            UserWarning,
        )
        self.dependent_model_ = model
        self._validation_offset = float(np.mean(self.dependent_model_.log_prob(X_val)))
        return X_train[:, ~derived], X_val[:, ~derived]

    def _discrete_columns(self, X):
        """Bool mask of the columns to dequantize, from ``discrete_features``."""
        integer = (X == np.round(X)).all(axis=0)
        requested = self.discrete_features
        if isinstance(requested, str):
            if requested != "auto":
                raise ValueError(
                    "discrete_features must be 'auto', a bool, a bool mask or integer column "
                    f"indices; got {requested!r}."
                )
            discrete = integer
        elif isinstance(requested, (bool, np.bool_)):
            discrete = np.full(X.shape[1], bool(requested))
        else:
            discrete = _column_mask(requested, X.shape[1])
        not_integer = np.flatnonzero(discrete & ~integer)
        if not_integer.size:
            raise ValueError(
                f"discrete_features: column(s) {not_integer.tolist()} hold non-integer values; "
                "discrete columns must be integer-valued (multiply a grid such as 0.5 steps "
                "to integers first)."
            )
        # Columns not dequantized: (column, distinct values, most frequent value, its share).
        repeats = [(int(j), *_most_frequent(X[:, j])) for j in np.flatnonzero(~discrete)]
        few = [j for j, n_distinct, _, _ in repeats if n_distinct <= FEW_DISTINCT_VALUES]
        spikes = [(j, value, share) for j, n_distinct, value, share in repeats
                  if n_distinct > FEW_DISTINCT_VALUES and share >= POINT_MASS_SHARE]
        if few and X.shape[0] > 2 * FEW_DISTINCT_VALUES:
            warnings.warn(
                f"{type(self).__name__}: column(s) {few} take at most {FEW_DISTINCT_VALUES} "
                "distinct non-integer values: a continuous density puts point masses there and "
                "its log-likelihood grows without bound. Map them to integers to have them "
                "dequantized (see discrete_features).",
                UserWarning,
            )
        if spikes and X.shape[0] > 2 * FEW_DISTINCT_VALUES:
            described = "; ".join(f"column {j}: {value:g} in {share:.1%} of the rows"
                                  for j, value, share in spikes)
            warnings.warn(
                f"{type(self).__name__}: continuous column(s) repeat one value in many rows "
                f"({described}): a continuous density puts a point mass there and its "
                "log-likelihood grows without bound, so such rows score high. If the value "
                "codes a missing entry, replace it by NaN (see the user guide on missing entries); "
                "if the column is discrete, have it "
                "dequantized (integer values, see discrete_features).",
                UserWarning,
            )
        # A constant column stays as it is, for the normalizer to reject.
        return discrete & (X.max(axis=0) > X.min(axis=0))

    def _n_validation(self, n_samples):
        return max(1, int(round(self.validation_fraction * n_samples)))

    # --- fitting ---------------------------------------------------------------------

    def fit(self, X, y=None):
        """Fit the flow to ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; a ``validation_fraction`` of its rows is held out
            for early stopping. Rows with missing entries (NaN) are left out,
            with a warning.
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
        # Proposes the missing entries of the rows score_samples is given.
        self.missing_proposal_ = MarginalProposal.fit(X, relative_floor=DEPENDENT_WIDTH**2)
        rng = check_random_state(self.random_state)
        devices = resolve_devices(self.device)

        order = rng.permutation(X.shape[0])
        n_val = self._n_validation(X.shape[0])
        X_train, X_val = X[order[n_val:]], X[order[:n_val]]
        # Drawn before the structure is chosen: a search whose winner is the
        # default structure ends with exactly the CouplingFlow of its random_state.
        init_seed, batch_seed = draw_seeds(rng, 2)
        X_train, X_val = self._dequantize_fit_rows(X, X_train, X_val, rng)
        # The flow models the columns that are not linear functions of others.
        X_train, X_val = self._fit_dependent_columns(X_train, X_val)
        whitened = self.whiten is not False
        warn_if_few_rows(X_train.shape[0], X_train.shape[1], type(self).__name__, whitened)
        # Fitted on the training rows only: the validation rows stay unseen.
        options = dict(normalization=self.normalization, base_distribution=self.base_distribution)
        start, gaussian = choose_start(X_train, X_val, whiten=whitened, **options)
        # A start that scores higher untrained need not train better: when the
        # chosen one is not the Gaussian start, the final flow is trained from
        # both; with whiten="auto" also from the best start without
        # whitening (elementwise maps act on the original axes, where bounded
        # or clustered columns keep their edges); and from a Gaussian-mixture
        # base when it beats the chosen start untrained (on the unwhitened
        # map with whiten="auto": its components carry the correlations).
        # The better on the validation rows is kept.
        finals = [start]
        if gaussian is not None and gaussian[0] != start[0]:
            finals.append(gaussian)
        if self.whiten == "auto":
            finals.append(choose_start(X_train, X_val, whiten=False, **options)[0])
        structure_start = start
        if self.base_distribution in ("auto", "gaussian_mixture") and self.n_components != 1:
            mixture = best_mixture(X_train, X_val, n_components=self.n_components,
                                   covariance_type=self.covariance_type, seed=init_seed)
            if mixture is not None and (self.base_distribution == "gaussian_mixture" or mixture[0] > start[2]):
                finals.append(mixture_start(mixture, finals[-1] if self.whiten == "auto" else start))
                if self.base_distribution == "gaussian_mixture":
                    # Asked for: the search's candidates share the mixture base too.
                    structure_start = finals[-1]
        structures = self._choose_structure(X_train, X_val, structure_start[0], rng, devices)
        masks, hidden_layer_sizes = structures[0]

        # With n_estimators > 1 each final is an ensemble of flows from as many
        # initial weights (of the structures in turn), trained as one stack,
        # and scored as the ensemble.
        members, ensemble_sizes, depth_and_width = _ensemble(structures, self.n_estimators)
        seeds = [init_seed, *draw_seeds(np.random.RandomState(init_seed % 2**32), self.n_estimators - 1)]
        best = None
        for candidate, candidate_normalizer, _ in finals:
            self._set_start(candidate, candidate_normalizer)
            if self.verbose >= self._epoch_verbose_level:
                print(f"[{type(self).__name__}] training from {_describe(candidate)}")
            config = replace(self._training_config(), base_df=candidate.df, base_mixture=candidate.mixture,
                             hidden_layer_sizes=ensemble_sizes)
            Z_val = self._normalize(X_val)
            result = fit_flows(
                members,
                self._normalize(X_train),
                Z_val,
                seeds=seeds,
                batch_seed=batch_seed,
                config=config,
                device=devices[0],
                epoch_callback=self._print_epoch if self.verbose >= self._epoch_verbose_level else None,
                X_select=Z_val,
                **depth_and_width,
            )
            # In float64, of the restored weights, as score_samples will compute it.
            members_val = torch.from_numpy(result.selection_log_prob)
            score = float(ensemble_log_prob(members_val).mean()) + candidate_normalizer.log_det
            if best is None or score > best[0]:
                best = (score, candidate, candidate_normalizer, result)
        score, start, normalizer, result = best
        self._set_start(start, normalizer)
        self._store_result(masks, hidden_layer_sizes, result, devices[0])
        self.best_validation_score_ = score + self._validation_offset
        return self

    def _set_start(self, start, normalizer):
        self.normalization_, self.base_df_, self.whiten_ = start.normalization, start.df, start.whiten
        self.n_components_ = 1 if start.mixture is None else start.mixture.n_components
        self.mean_, self.scale_ = normalizer.mean, normalizer.scale
        self.input_matrix_, self.input_log_det_ = normalizer.matrix, normalizer.log_det

    def _normalize(self, X):
        return (X - self.mean_) @ self.input_matrix_

    # The verbose level from which the final training prints one line per epoch.
    _epoch_verbose_level = 1

    def _choose_structure(self, X_train, X_val, start, rng, devices):
        """Structures ``(masks, hidden_layer_sizes)`` of the final flow, best first, from the raw training rows.

        ``start`` (:class:`~skflowsearch._preprocessing.Start`) is the
        normalization and base distribution every flow of the fit starts from.
        Each ``masks`` is an (n_layers, n_features) bool array. The final flow
        is the first; an ensemble (``n_estimators``) takes them in turn.
        """
        raise NotImplementedError

    def _print_epoch(self, epoch, train_loss, validation_score):
        # Both in the original feature space, like score(): the training loss
        # is a negative log-likelihood of the normalized features.
        print(
            f"[{type(self).__name__}] epoch {epoch:4d}  mean log-likelihood: "
            f"train {self.input_log_det_ - train_loss[0]:.4f}  "
            f"validation {validation_score[0] + self.input_log_det_ + self._validation_offset:.4f}"
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
        elif (result.n_epochs[0] >= self.max_epochs
              and result.best_epoch[0] > max(0, result.n_epochs[0] - self.n_iter_no_change)):
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
        self.n_estimators_ = int(self.flow_.n_members)
        self.device_ = str(device)
        self.loss_curve_ = result.train_loss[: result.n_epochs[0], 0].astype(np.float64)
        self.validation_scores_ = (
            result.validation_score[: result.n_epochs[0] + 1, 0].astype(np.float64)
            + self.input_log_det_ + self._validation_offset
        )
        self.n_epochs_ = int(result.n_epochs[0])
        self.best_epoch_ = int(result.best_epoch[0])
        self.n_parameters_ = int(self.flow_.n_live_parameters().sum())

    # --- inference -----------------------------------------------------------------

    def _validated(self, X):
        """Rows to score or transform: float64, the fit's features; NaN marks a missing entry."""
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")

    def _flow_input(self, X, offset):
        """Validated rows ``X``, moved by ``offset`` on the discrete columns, in the flow's input space.

        The flow reads the columns that are not derived (``dependent_features_``).
        """
        # Rows near the float64 limit can overflow here; they score -inf.
        with np.errstate(over="ignore", invalid="ignore"):
            return self._normalize((X + offset * self.discrete_features_)[:, ~self.dependent_features_])

    def _with_derived(self, X_modeled, Z_derived):
        """Full rows from the flow's columns and the standardized residuals of the derived ones."""
        if self.dependent_model_ is None:
            return X_modeled
        X = np.empty((X_modeled.shape[0], self.n_features_in_))
        X[:, ~self.dependent_features_] = X_modeled
        X[:, self.dependent_features_] = self.dependent_model_.from_normal(X_modeled, Z_derived)
        return X

    def score_samples(self, X):
        """Log-density of each row of ``X`` in the original feature space.

        On discrete columns (``discrete_features_``) a row's score is the mean
        log-density over ``dequantization_offsets_`` of its unit cell: an
        estimate of a lower bound of the log-probability of the row's values
        of those columns (times the density of the others).

        A row with missing entries (NaN) scores its marginal density: the
        integral of the density over its missing entries, estimated by
        importance sampling (draws from a Student t around the conditional of
        a Gaussian fitted to the complete training rows). It is a density of
        fewer features, so it is not on the scale of complete rows' scores
        (``FlowOutlierDetector`` ranks such rows on that scale).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            May hold NaN for missing entries.

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            In nats, including the log-Jacobian of the internal normalization.
        """
        X = self._validated(X)
        missing = np.isnan(X).any(axis=1)
        if not missing.any():
            return self._score_complete(X)
        if self.missing_proposal_ is None:
            raise ValueError(
                "X has missing entries (NaN); this estimator was pickled before missing entries "
                "were scored. Refit it to score such rows."
            )
        out = np.empty(X.shape[0])
        out[~missing] = self._score_complete(X[~missing])
        out[missing] = log_marginal(self._score_complete, X[missing], self.missing_proposal_)
        return out

    def _score_complete(self, X):
        """``score_samples`` of validated rows without missing entries."""
        Z_centre = self._flow_input(X, 0.0)
        total = 0.0
        for offset in self.dequantization_offsets_:
            # The map is affine: moving the rows moves their image by offset @ M.
            Z = Z_centre + (offset * self.discrete_features_)[~self.dependent_features_] @ self.input_matrix_
            finite = np.isfinite(Z).all(axis=1)
            out = np.full(finite.shape[0], -np.inf)
            out[finite] = self._in_chunks(lambda rows: ensemble_log_prob(self.flow_.log_prob(rows)), Z[finite])
            # Finite rows near the float64 limit can overflow inside the flow (inf - inf).
            total = total + np.where(np.isnan(out), -np.inf, out)
        total = total / len(self.dequantization_offsets_) + self.input_log_det_
        if self.dependent_model_ is not None:
            total = total + self.dependent_model_.log_prob(X)
        return total

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
                X_modeled = self._denormalize(self._sample_flow(n, generator).cpu().numpy())
                residuals = torch.randn((n, int(self.dependent_features_.sum())), generator=generator,
                                        dtype=torch.float64).numpy()
                out[start : start + n] = self._with_derived(X_modeled, residuals)
        return out

    def transform(self, X):
        """Map rows to a latent space where the fitted density is a standard normal.

        The rows are normalized (``(X - mean_) @ input_matrix_``) and passed
        through every layer of the flow; with a Student t base (``base_df_``
        finite) each latent column is then mapped to a standard normal through
        the t's distribution function, and with a Gaussian-mixture base
        (``n_components_ > 1``) through the mixture's Rosenblatt transform
        (each column through its distribution function given the previous
        ones). The result is a joint Gaussianization
        of the features, where ``QuantileTransformer`` or ``PowerTransformer``
        act column by column. Discrete columns enter at the centre of their
        unit cell; a derived column (``dependent_features_``) gives its
        standardized residual from its linear prediction.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        Z : ndarray of shape (n_samples, n_features)
            Latent rows (float64); ``inverse_transform`` maps them back. A row
            with missing entries (NaN) has no latent image, as the flow mixes
            its columns: it gives a row of NaN.
        """
        X = self._validated(X)
        self._check_one_flow("transform")
        missing = np.isnan(X).any(axis=1)
        if missing.any():
            out = np.full(X.shape, np.nan)
            if not missing.all():
                out[~missing] = self.transform(X[~missing])
            return out
        # The centre of a discrete value's unit cell, which inverse_transform
        # rounds back.
        Z = self._flow_input(X, 0.5)
        latent = self.flow_.base.to_normal(self._in_chunks(lambda rows: self.flow_(rows)[0][0], Z, Z.shape[1:]))
        if self.dependent_model_ is None:
            return latent
        out = np.empty_like(X)
        out[:, ~self.dependent_features_] = latent
        out[:, self.dependent_features_] = self.dependent_model_.to_normal(X)
        return out

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
        # Latent rows: their columns are not the fit's features, so names are not checked.
        check_is_fitted(self)
        latent = check_array(X, dtype=np.float64)
        if latent.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {latent.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        self._check_one_flow("inverse_transform")
        Z = self.flow_.base.from_normal(latent[:, ~self.dependent_features_])
        X_modeled = self._denormalize(
            self._in_chunks(lambda rows: self.flow_.inverse(rows)[0][0], Z, Z.shape[1:])
        )
        return self._with_derived(X_modeled, latent[:, self.dependent_features_])

    def _sample_flow(self, n, generator):
        """``n`` draws of the flow's input space; of an ensemble, each from a member drawn uniformly."""
        if self.flow_.n_members == 1:
            return self.flow_.sample(n, generator)[0]
        member = torch.randint(self.flow_.n_members, (n,), generator=generator)
        draws = self.flow_.sample(n, generator)
        return draws[member.to(draws.device), torch.arange(n, device=draws.device)]

    def _check_one_flow(self, method):
        if self.flow_.n_members > 1:
            raise ValueError(
                f"{method} maps rows through one flow; this {type(self).__name__} is an ensemble "
                f"of {self.flow_.n_members} flows (n_estimators={self.n_estimators}), whose mixture "
                "has no single latent space. Fit with n_estimators=1 to use it as a transformer."
            )

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
        """Rows of the flow's input space back in its columns; discrete columns rounded down.

        A dequantized value lies in ``[k, k + 1)`` for the integer ``k`` it came from.
        """
        X = np.linalg.solve(self.input_matrix_.T, Z.T).T + self.mean_
        discrete = self.discrete_features_[~self.dependent_features_]
        X[:, discrete] = np.floor(X[:, discrete])
        return X

    @property
    def _n_features_out(self):
        return self.n_features_in_

    # --- persistence ---------------------------------------------------------------

    def __getstate__(self):
        # A copy: object.__getstate__ returns the instance's own __dict__,
        # whose flow_ must stay on its device.
        state = dict(super().__getstate__())
        flow = state.get("flow_")
        if flow is not None and flow.masks.device.type != "cpu":
            state["flow_"] = copy.deepcopy(flow).cpu()
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        flow = state.get("flow_")
        if flow is not None and "base_df_" not in state:
            self._upgrade_from_before_the_chosen_start()
        if flow is not None and "n_estimators_" not in state:
            self.n_estimators_ = 1  # pickled before ensembles
        if flow is not None and "n_components_" not in state:
            self.n_components_ = 1  # pickled before mixture bases: none has one
        if flow is not None and "dependent_features_" not in state:
            # Pickled before derived columns were modeled: it had none.
            self.dependent_features_ = np.zeros(self.n_features_in_, dtype=bool)
            self.dependent_model_ = None
        if flow is not None and "missing_proposal_" not in state:
            self.missing_proposal_ = None  # pickled before rows with missing entries were scored
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

    def _upgrade_from_before_the_chosen_start(self):
        """A model pickled before the start was chosen: a normal base, no discrete columns."""
        self.normalization_, self.base_df_ = "standard", math.inf
        self.whiten_ = bool(self.whiten)
        self.discrete_features_ = np.zeros(self.n_features_in_, dtype=bool)
        self.dequantization_offsets_ = np.zeros((1, self.n_features_in_))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # CUDA kernels may reduce in a different order from run to run.
        tags.non_deterministic = any(d.type == "cuda" for d in _safe_devices(self.device))
        # fit leaves out rows with missing entries; score_samples marginalizes them.
        tags.input_tags.allow_nan = True
        return tags


def _ensemble(structures, n_estimators):
    """One stack of ``n_estimators`` members of ``structures``, taken in turn.

    Returns the members' masks ``(n_estimators, n_layers, n_features)``, the
    stack's hidden sizes and the keyword arguments of :func:`fit_flows` that
    give each member its depth and width (none when all members have the
    first structure: the stack is then built at its real size).
    """
    chosen = [structures[i % len(structures)] for i in range(n_estimators)]
    first_masks, first_sizes = chosen[0]
    if all(np.array_equal(m, first_masks) and tuple(h) == tuple(first_sizes) for m, h in chosen):
        return np.repeat(np.asarray(first_masks)[None], n_estimators, axis=0), tuple(first_sizes), {}
    n_layers = max(m.shape[0] for m, _ in chosen)
    # The active layers first; the others are the identity (their masks are any valid ones).
    masks = np.broadcast_to(first_masks[0], (n_estimators, n_layers, first_masks.shape[1])).copy()
    active = np.zeros((n_estimators, n_layers), dtype=bool)
    for i, (member_masks, _) in enumerate(chosen):
        masks[i, : member_masks.shape[0]] = member_masks
        active[i, : member_masks.shape[0]] = True
    widths = np.array([tuple(h) for _, h in chosen])
    sizes = tuple(int(w) for w in widths.max(axis=0))
    return masks, sizes, {"layer_active": torch.as_tensor(active), "hidden_widths": torch.as_tensor(widths)}


def ensemble_log_prob(log_prob):
    """Log-density of the equal-weight mixture of members, from their log-densities (n_members, n_rows) Tensor.

    Exactly the member's log-density for one member.
    """
    if log_prob.shape[0] == 1:
        return log_prob[0]
    return torch.logsumexp(log_prob, dim=0) - math.log(log_prob.shape[0])


def _describe(start):
    """The start in words, for verbose output."""
    if start.mixture is not None:
        base = f"a Gaussian-mixture base ({start.mixture.n_components} components)"
    elif np.isinf(start.df):
        base = "a normal base"
    else:
        base = f"a Student t base (df={start.df:g})"
    whitened = "whitened" if start.whiten else "not whitened"
    return f"the {start.normalization} normalization ({whitened}) with {base}"


def _most_frequent(column):
    """Distinct values of ``column``, its most frequent value and that value's share of the rows."""
    values, counts = np.unique(column, return_counts=True)
    top = int(np.argmax(counts))
    return values.size, float(values[top]), counts[top] / column.size


def _column_mask(columns, n_features):
    """Bool mask of shape (n_features,) from a bool mask or integer indices."""
    columns = np.asarray(columns)
    if columns.dtype == bool:
        if columns.shape != (n_features,):
            raise ValueError(
                f"discrete_features as a bool mask must have shape ({n_features},); "
                f"got {columns.shape}."
            )
        return columns.copy()
    if columns.ndim != 1 or (columns.size and not np.issubdtype(columns.dtype, np.integer)):
        raise ValueError(
            "discrete_features must be 'auto', a bool, a bool mask or integer column indices; "
            f"got {columns!r}."
        )
    if columns.size and (columns.min() < -n_features or columns.max() >= n_features):
        raise ValueError(f"discrete_features: indices must be in [0, {n_features}); got {columns.tolist()}.")
    mask = np.zeros(n_features, dtype=bool)
    mask[columns] = True
    return mask


def _check_numeric_columns(X):
    """Name the non-numeric columns of a DataFrame, which validate_data would not."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(dtypes, "items"):
        return
    import pandas as pd  # X is a DataFrame

    def numeric(column):
        # Object columns that hold numbers convert, as validate_data would.
        if pd.api.types.is_datetime64_any_dtype(column) or pd.api.types.is_timedelta64_dtype(column):
            return False  # to_numeric would read them as nanoseconds
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            return True
        converted = pd.to_numeric(column, errors="coerce")
        return bool((converted.notna() | column.isna()).all())

    bad = [str(name) for name, column in X.items() if not numeric(column)]
    if bad:
        raise ValueError(
            f"X has non-numeric column(s) {bad}: flows model numeric features only. Encode or "
            "drop them (e.g. with sklearn.compose.ColumnTransformer)."
        )


def _safe_devices(device):
    try:
        return resolve_devices(device)
    except ValueError:
        return []
