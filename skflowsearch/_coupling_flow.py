"""``CouplingFlow``: a coupling flow with fixed masks."""

import numpy as np
from sklearn.utils._param_validation import StrOptions

from ._base import BaseFlow
from ._masks import MASK_GENERATORS, check_hidden_layer_sizes, make_masks


class CouplingFlow(BaseFlow):
    """Coupling normalizing flow (neural spline or RealNVP) with fixed masks.

    The data are standardized (and, by default, whitened) with statistics of
    the training data; a stack of masked coupling layers (rational-quadratic
    spline or affine) then maps them
    to the base distribution, a standard normal or a heavy-tailed Student t.
    The untrained flow (the normalization and the base, chosen on the
    validation rows) is never below the maximum-likelihood Gaussian there,
    and early stopping leaves it only when validation agrees. ``transform``
    maps rows to standard normal latent rows, ``inverse_transform`` maps
    them back, so the flow is also a joint Gaussianizing transformer.
    ``score_samples`` returns exact log-densities in the original feature
    space.

    Parameters
    ----------
    masks : {"alternating", "random"} or array-like of shape (n_layers, n_features), default="alternating"
        Which features each coupling layer conditions on (True) and which it
        transforms (False). ``"alternating"`` conditions on the first half of
        the features, then the second, in turn; ``"random"`` on a random half
        per layer (seeded by ``random_state``). An array gives the masks
        explicitly, and then ``n_layers`` is ignored; every row needs at least
        one True and one False. Where columns are derived
        (``dependent_features_``), the flow models the others: the array's
        entries for derived columns are dropped (or the array may cover the
        modeled columns only).
    n_layers : int, default=8
        Number of coupling layers for the built-in masks.
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Hidden widths of the tanh MLP that outputs the parameters of each
        layer's transform.
    whiten : bool or "auto", default="auto"
        Decorrelate the standardized features (ZCA) before the flow, so that
        the untrained flow is a full-covariance Gaussian and training models
        only what a Gaussian misses. The correlation is shrunk toward the
        identity (Ledoit-Wolf), which keeps wide tables (few rows per
        feature) well conditioned; ``fit`` warns when there are fewer than 10
        training rows per feature. Whitening mixes the columns, though, and
        the couplings' elementwise maps then no longer act along them: a
        column's hard edge (a bounded or dequantized column) or its clusters
        become oblique. ``"auto"`` trains the final flow from the whitened
        starts and from the best start without whitening, and keeps the
        better on the validation rows (the structure is chosen on the
        whitened start). Densities stay in the original space either way.
    normalization : {"auto", "standard", "robust"}, default="auto"
        How columns are centred and scaled: ``"standard"`` by mean and
        standard deviation; ``"robust"`` by median and interquartile range,
        with the whitening correlation taken on rows clipped at 3 robust
        standard deviations, so that a few extreme training rows (say 1-10%
        contamination) do not set the scale of all the others. ``"auto"``
        takes the one whose untrained flow scores higher on the validation
        rows.
    base_distribution : {"auto", "normal", "student_t", "gaussian_mixture"}, default="auto"
        The base: a standard normal, a product of Student t with 1, 2, 4,
        8, 16 or 32 degrees of freedom (scaled to the normal's quartiles) for
        heavy-tailed data, or a Gaussian mixture fitted by EM on the
        normalized training rows, for data made of clusters (classes,
        regimes) that a flow from one Gaussian must tear apart. The mixture
        is fixed while the flow trains, and every layer starts as the
        identity, so the untrained model *is* the mixture and early stopping
        leaves it only when validation agrees. ``"auto"`` chooses the normal
        or t base on the validation rows, like ``normalization``, and also
        trains from the best mixture when it beats that start untrained,
        keeping the better after training; ``"student_t"`` chooses the
        degrees, ``"gaussian_mixture"`` the components (one component being
        the normal).
    n_components : int or "auto", default="auto"
        Components of a Gaussian-mixture base, as in
        :class:`~sklearn.mixture.GaussianMixture`; ``"auto"`` tries 2, 3, 4,
        5, 6 and 8 (and the diagonal regularizations 1e-6 and 1e-2),
        choosing on the validation rows. 1 leaves mixtures out.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Covariances of the mixture's components, as in
        :class:`~sklearn.mixture.GaussianMixture`.
    discrete_features : "auto", bool or array-like, default="auto"
        Columns that hold integers (counts, flags, ratings, years). A
        continuous density on such point masses grows without bound, so they
        are dequantized: uniform noise on ``[0, 1)`` is added to their values
        during training, and a row is scored by its mean log-density over 8
        fixed points of its unit cell. The score is then an estimate of a
        lower bound (Jensen's inequality) of the log-probability of the
        discrete values times the density of the others; samples and
        ``inverse_transform`` round these columns down to integers.
        ``"auto"``: every column whose training values are all integers;
        ``True``/``False``: all/none; or a bool mask or column indices. A
        column given as discrete must hold integers. ``fit`` warns about
        non-integer columns with at most 10 distinct values, or with one
        value in at least a quarter of the rows (a zero-inflated amount, a
        code for missing entries): point masses a continuous density spikes
        on.
    dependent_features : {"model", "raise"}, default="model"
        What to do with columns that are exact linear functions of others
        (a difference or sum of two columns, a copy in other units): the rows
        then lie on a hyperplane, where no density exists. ``"model"``
        takes one column of each such dependence as derived, models it as a
        Gaussian of width 0.001 standard deviations around its least-squares
        prediction from the other columns, and fits the flow to those; rows
        off the training rows' hyperplane then score very low (right for
        outlier detection), and ``fit`` warns, naming the columns.
        ``"raise"`` raises ``ValueError`` instead.
    coupling : {"spline", "affine"}, default="spline"
        The map each coupling applies to its transformed features, given the
        conditioning ones: ``"spline"`` is a monotone rational-quadratic
        spline of ``n_bins`` bins over an interval of half-width
        ``tail_bound`` around 0, and the identity outside it (Durkan et al.,
        2019, "Neural Spline Flows"); ``"affine"`` scales and shifts
        (RealNVP). Splines are far more flexible per layer, with
        ``(3 n_bins - 1) / 2`` times the conditioner's output weights; on
        the package's benchmark they scored higher held out on 5 of 9 real
        tables (by 0.4 to 12 nats per row) and lower on the two smallest
        clinical ones (by 0.5 and 2.6), at 2 to 4 times the training time
        (see the user guide).
    n_bins : int, default=8
        Bins of each spline (``coupling="spline"`` only).
    tail_bound : float, default=5.0
        Half-width of the splines' interval, in units of the normalized
        features (``coupling="spline"`` only).
    actnorm : bool, default=True
        Learned per-feature affine layers before every coupling (starting as
        the identity, like the couplings).
    max_log_scale : float, default=3.0
        Soft bound on each affine coupling's log-scale (``coupling="affine"``
        only).
    max_epochs : int, default=200
        Maximum number of passes over the training rows. Every minibatch of a
        pass has ``batch_size`` rows: the remainder of the shuffled rows (fewer
        than ``batch_size``) is left out of that pass.
        When the final training runs all of them (early stopping did not
        end it: the validation score was still improving), ``fit`` warns
        with scikit-learn's ``ConvergenceWarning``, as ``MLPClassifier``
        does.
    batch_size : int, default=128
        Minibatch size (capped at the number of training rows).
    learning_rate : float, default=1e-3
        AdamW step size. Before each step the gradient is rescaled to a
        global norm of at most 5.
    weight_decay : float, default=1e-5
        AdamW decoupled weight decay.
    validation_fraction : float, default=0.1
        Fraction of the rows given to ``fit`` held out to early-stop on.
    n_iter_no_change : int, default=20
        Stop when the validation log-likelihood has not improved by more than
        1e-4 nats for this many epochs; the weights of the best epoch are
        restored.
    n_estimators : int, default=1
        Flows in the final model: more than one makes it an ensemble, the
        equal-weight mixture of flows trained from different initial weights
        (same start, masks and minibatches), trained side by side as one
        stack (at the cost of about one flow per member on the CPU) and
        scored as the mixture on the validation rows when the start is
        chosen. ``score_samples`` is the log of the mean of the members'
        densities, ``sample`` draws each row from a member drawn uniformly;
        an ensemble has no single latent space, so ``transform`` and
        ``inverse_transform`` need ``n_estimators=1``.
    device : {"cpu", "cuda", "cuda:N", "auto"}, default="cpu"
        Where to train and score. ``"auto"`` uses CUDA when available. On the
        CPU, training uses one torch thread: these small networks gain little
        from more, and several fits (``GridSearchCV(n_jobs=...)``, the
        search's ``n_jobs``) then share the cores without oversubscribing.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split, random masks, weights and minibatches.
    verbose : int, default=0
        Print one line per training epoch when >= 1.

    Attributes
    ----------
    masks_ : ndarray of shape (n_layers, n_features), dtype=bool
        The masks of the fitted flow.
    hidden_layer_sizes_ : tuple of int
        Hidden widths of the fitted flow's conditioners.
    flow_ : torch.nn.Module
        The fitted flow (a one-member ``CouplingFlowStack`` in float64) acting on
        the normalized features ``(X - mean_) @ input_matrix_``.
    mean_ : ndarray of shape (n_features,)
        Per-feature location of the training rows, their mean or median (see
        `normalization_`; the validation rows excluded: the normalizer never
        sees them).
    scale_ : ndarray of shape (n_features,)
        Per-feature scale of the training rows: standard deviation, or
        interquartile range over 1.349.
    normalization_ : {"standard", "robust"}
        The normalization chosen (see ``normalization``).
    whiten_ : bool
        Whether the final flow's start is whitened (see ``whiten``).
    base_df_ : float
        Degrees of freedom of the base distribution; ``inf`` for the standard
        normal or a Gaussian mixture.
    n_components_ : int
        Components of the base: 1 unless it is a Gaussian mixture, whose
        weights, means and covariances (in the normalized space) are
        ``flow_.base.mixture()``.
    discrete_features_ : ndarray of shape (n_features,), dtype=bool
        The dequantized columns.
    dequantization_offsets_ : ndarray of shape (n_offsets, n_features)
        Points of the unit cell at which discrete columns are scored (zero on
        the other columns; one row of zeros when no column is discrete).
    dependent_features_ : ndarray of shape (n_features,), dtype=bool
        The derived columns (see ``dependent_features``); the flow, its
        ``masks_`` and the normalization (``mean_``, ``scale_``,
        ``input_matrix_``) cover the others.
    dependent_model_ : object or None
        The derived columns' Gaussian given the others (intercept, coef,
        scale), None when there are none.
    missing_proposal_ : object
        Mean and covariance of the complete fit rows, whose conditionals
        propose the missing entries (NaN) that ``score_samples``
        marginalizes.
    input_matrix_ : ndarray of shape (n_features, n_features)
        Linear part of the normalizing map: ``diag(1 / scale_)``, times the
        whitening matrix when ``whiten=True``.
    input_log_det_ : float
        ``log|det input_matrix_|``, added to the flow's log-density.
    loss_curve_ : ndarray of shape (`n_epochs_`,)
        Mean training negative log-likelihood per epoch (normalized space).
    validation_scores_ : ndarray of shape (`n_epochs_` + 1,)
        Mean validation log-likelihood (original space) before training and
        after each epoch.
    best_validation_score_ : float
        Validation log-likelihood of the restored weights, in float64 as
        ``score_samples`` computes it (of the ensemble,
        with ``n_estimators > 1``; the per-epoch attributes ``loss_curve_``,
        ``validation_scores_``, ``best_epoch_`` and ``n_epochs_`` are of its
        first member).
    best_epoch_ : int
        Epoch whose weights were restored (0 = the untrained flow: the
        normalization and the base).
    n_epochs_ : int
        Number of epochs run.
    n_parameters_ : int
        Parameters that can change the density (weights attached to masked
        inputs and outputs excluded), counted by the fitted flow (summed over
        the members of an ensemble).
    n_estimators_ : int
        Flows in the fitted model (``flow_`` holds them as the members of
        one stack).
    device_ : str
        Device the flow lives on.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during ``fit``, when ``X`` has string column names.

    See Also
    --------
    StructureSearchFlow : Searches the masks with an evolutionary algorithm.
    sklearn.mixture.GaussianMixture : Classical density estimator.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skflowsearch import CouplingFlow
    >>> X = load_iris().data
    >>> flow = CouplingFlow(n_layers=4, hidden_layer_sizes=(16,), max_epochs=20,
    ...                     random_state=0).fit(X)
    >>> flow.score_samples(X[:3]).shape
    (3,)
    >>> flow.sample(5, random_state=0).shape
    (5, 4)
    >>> flow.transform(X[:3]).shape
    (3, 4)
    """

    def __init__(
        self,
        masks="alternating",
        n_layers=8,
        hidden_layer_sizes=(64, 64),
        *,
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
        device="cpu",
        random_state=None,
        verbose=0,
    ):
        self.masks = masks
        self.n_layers = n_layers
        self.hidden_layer_sizes = hidden_layer_sizes
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
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    _parameter_constraints = {
        **BaseFlow._parameter_constraints,
        "masks": [StrOptions(set(MASK_GENERATORS)), "array-like"],
    }

    def _check_params(self):
        super()._check_params()
        if isinstance(self.device, (list, tuple)):
            raise ValueError(
                f"CouplingFlow trains one flow on one device; device must be a string, got "
                f"{self.device!r} (lists of devices are for StructureSearchFlow)."
            )

    def _choose_structure(self, X_train, X_val, start, rng, devices):
        spec = self.masks
        derived = np.flatnonzero(self.dependent_features_).tolist()
        if derived and not isinstance(spec, str):
            spec = np.asarray(spec)
            if spec.ndim == 2 and spec.shape[1] == self.n_features_in_:
                spec = spec[:, ~self.dependent_features_]
        try:
            masks = make_masks(spec, self.n_layers, X_train.shape[1], rng)
        except ValueError as exc:
            if not derived or isinstance(spec, str):
                raise
            raise ValueError(
                f"{exc} Column(s) {derived} of X are derived (linear functions of the others, "
                f"see dependent_features_): the masks act on the other {X_train.shape[1]} "
                f"columns; an array of width {self.n_features_in_} has its derived columns dropped."
            ) from exc
        return [(masks, check_hidden_layer_sizes(self.hidden_layer_sizes))]
