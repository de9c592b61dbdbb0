"""Plots of fitted flow estimators: search history, masks and samples.

matplotlib is an optional dependency (the ``plot`` extra,
``pip install "skflowsearch[plot]"``); it is imported only when a function of
this module is called.
"""

import os

import numpy as np

__all__ = ["plot_search_history", "plot_masks", "plot_samples", "save_search_plots"]


def _import_pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "skflowsearch.plotting needs matplotlib. Install it with "
            "'pip install \"skflowsearch[plot]\"' (or 'pip install matplotlib')."
        ) from exc
    return plt


def _new_axes(ax):
    if ax is None:
        plt = _import_pyplot()
        _, ax = plt.subplots()
    else:
        _import_pyplot()
    return ax


def plot_search_history(estimator, ax=None):
    """Plot the best and mean fitness per generation of a structure search.

    The fitness of a candidate is its mean log-likelihood of the search's
    ranking rows after its fitness training (``fitness_steps_`` optimizer steps at
    most, fewer for the losers of successive halving), minus the size
    penalty; see :class:`~skflowsearch.StructureSearchFlow`.

    Parameters
    ----------
    estimator : StructureSearchFlow
        A fitted estimator with a ``search_history_`` attribute.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw on; a new figure is created when None.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes, with two lines (best and mean fitness) and a shaded band of
        one standard deviation around the mean.

    Raises
    ------
    ValueError
        If ``estimator`` has no (or an empty) ``search_history_``.
    """
    history = getattr(estimator, "search_history_", None)
    if not history:
        raise ValueError(
            "plot_search_history needs a fitted estimator with a non-empty "
            f"search_history_ attribute; {type(estimator).__name__} has none."
        )
    ax = _new_axes(ax)
    generation = np.array([record["generation"] for record in history], dtype=float)
    best = np.array([record["best"] for record in history], dtype=float)
    mean = np.array([record["mean"] for record in history], dtype=float)
    std = np.array([record["std"] for record in history], dtype=float)
    mean_line, = ax.plot(generation, mean, marker="o", label="mean of population")
    ax.fill_between(
        generation, mean - std, mean + std, color=mean_line.get_color(), alpha=0.2,
        label="mean \u00b1 std",
    )
    ax.plot(generation, best, marker="o", label="best")
    ax.set_xlabel("generation")
    # The search ranks candidates on rows of its own (never the validation
    # rows of early stopping), after the fitness training.
    if getattr(estimator, "size_penalty", 0):
        ax.set_ylabel("fitness (ranking-row log-likelihood\n- size penalty, nats)")
    else:
        ax.set_ylabel("fitness (ranking-row log-likelihood, nats)")
    ax.set_title("Structure search")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower right")
    return ax


def _as_masks(masks):
    if hasattr(masks, "masks_"):
        masks = masks.masks_
    elif hasattr(masks, "get_params") and not isinstance(masks, np.ndarray):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(
            f"{type(masks).__name__} has no masks_ attribute; fit it first or pass "
            "an array of shape (n_layers, n_features)."
        )
    masks = np.asarray(masks)
    if masks.ndim != 2 or masks.shape[0] < 1 or masks.shape[1] < 1:
        raise ValueError(
            f"masks must be a 2-D array of shape (n_layers, n_features); got shape {masks.shape}."
        )
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must be boolean (or 0/1) arrays.")
        masks = masks.astype(bool)
    return masks


def plot_masks(masks, ax=None, feature_names=None):
    """Show coupling masks as a layer-by-feature heat map.

    Parameters
    ----------
    masks : array-like of shape (n_layers, n_features) or fitted estimator
        Boolean masks, True where a layer conditions on a feature and False
        where it transforms it. A fitted flow estimator is accepted too, and
        its ``masks_`` are shown.
    ax : matplotlib.axes.Axes, default=None
        Axes to draw on; a new figure is created when None.
    feature_names : sequence of str, default=None
        Tick labels of the feature axis. By default the estimator's
        ``feature_names_in_`` when it has them, else feature indices.

    Returns
    -------
    ax : matplotlib.axes.Axes
        The axes, holding one image and a legend with the labels
        "conditioning" and "transformed".

    Raises
    ------
    ValueError
        If the masks are not a 2-D boolean (or 0/1) array, or
        ``feature_names`` does not have one name per feature.
    sklearn.exceptions.NotFittedError
        If ``masks`` is an estimator that is not fitted.
    """
    if feature_names is None and hasattr(masks, "feature_names_in_"):
        feature_names = list(masks.feature_names_in_)
    masks = _as_masks(masks)
    n_layers, n_features = masks.shape
    if feature_names is not None:
        feature_names = [str(name) for name in feature_names]
        if len(feature_names) != n_features:
            raise ValueError(
                f"feature_names has {len(feature_names)} names but the masks have "
                f"{n_features} features."
            )
    ax = _new_axes(ax)
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    colors = ("#f2a541", "#3a6ea5")  # transformed (False), conditioning (True)
    ax.imshow(
        masks.astype(int), cmap=ListedColormap(colors), vmin=0, vmax=1,
        aspect="auto", interpolation="nearest",
    )
    ax.set_xlabel("feature")
    ax.set_ylabel("coupling layer")
    ax.set_yticks(np.arange(n_layers))
    if feature_names is not None:
        ax.set_xticks(np.arange(n_features))
        ax.set_xticklabels(feature_names, rotation=90)
    elif n_features <= 30:
        ax.set_xticks(np.arange(n_features))
    ax.set_title("Coupling masks")
    ax.legend(
        handles=[
            Patch(facecolor=colors[1], label="conditioning"),
            Patch(facecolor=colors[0], label="transformed"),
        ],
        loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
    )
    return ax


def plot_samples(estimator, X, features=(0, 1, 2), n_samples=None, random_state=0,
                 feature_names=None):
    """Pair plot of the data against samples drawn from a fitted flow.

    Parameters
    ----------
    estimator : fitted estimator with a ``sample`` method
        E.g. :class:`~skflowsearch.CouplingFlow` or
        :class:`~skflowsearch.StructureSearchFlow`.
    X : array-like of shape (n_rows, n_features)
        Data to compare with (usually held-out rows).
    features : sequence of int, default=(0, 1, 2)
        Column indices to show; indices beyond ``n_features`` are dropped.
    n_samples : int, default=None
        Number of samples drawn; ``len(X)`` by default.
    random_state : int, RandomState instance or None, default=0
        Seeds the sampling.
    feature_names : sequence of str, default=None
        Names of all ``n_features`` columns, for the axis labels. By default
        the estimator's ``feature_names_in_`` when it has them, else
        ``x0``, ``x1``, ...

    Returns
    -------
    fig : matplotlib.figure.Figure
        A figure with a ``len(features)`` by ``len(features)`` grid of axes:
        histograms on the diagonal, scatter plots elsewhere.

    Raises
    ------
    ValueError
        If no valid feature is selected, or ``feature_names`` does not have
        one name per column of ``X``.
    """
    plt = _import_pyplot()
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D; got shape {X.shape}.")
    features = [int(f) for f in np.atleast_1d(features) if -X.shape[1] <= int(f) < X.shape[1]]
    if not features:
        raise ValueError(f"no valid feature index for data with {X.shape[1]} features.")
    if n_samples is None:
        n_samples = X.shape[0]
    samples = np.asarray(estimator.sample(int(n_samples), random_state=random_state))

    names = feature_names
    if names is None:
        names = getattr(estimator, "feature_names_in_", None)
    elif len(names) != X.shape[1]:
        raise ValueError(
            f"feature_names has {len(names)} names but X has {X.shape[1]} columns."
        )
    labels = [str(names[f]) if names is not None else f"x{f}" for f in features]
    k = len(features)
    fig, axes = plt.subplots(k, k, figsize=(2.6 * k, 2.6 * k), squeeze=False)
    data_kw = dict(s=6, alpha=0.5, color="C0", label="data")
    sample_kw = dict(s=6, alpha=0.5, color="C1", label="flow samples")
    for i, fi in enumerate(features):
        for j, fj in enumerate(features):
            ax = axes[i, j]
            if i == j:
                both = np.concatenate([X[:, fi], samples[:, fi]])
                both = both[np.isfinite(both)]
                bins = np.histogram_bin_edges(both, bins=30) if both.size else 30
                ax.hist(X[:, fi], bins=bins, density=True, alpha=0.5, color="C0")
                ax.hist(samples[:, fi], bins=bins, density=True, alpha=0.5, color="C1")
            else:
                ax.scatter(X[:, fj], X[:, fi], **data_kw)
                ax.scatter(samples[:, fj], samples[:, fi], **sample_kw)
            if i == k - 1:
                ax.set_xlabel(labels[j])
            if j == 0:
                ax.set_ylabel(labels[i])
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color="C0", label="data"),
        plt.Line2D([], [], marker="o", linestyle="", color="C1", label="flow samples"),
    ]
    fig.legend(handles=handles, loc="upper right")
    fig.suptitle("Data vs samples from the flow")
    fig.tight_layout(rect=(0, 0, 0.9 if k == 1 else 1, 0.95))
    return fig


def save_search_plots(estimator, X, directory):
    """Write the plots of a fitted estimator as PNG files.

    Parameters
    ----------
    estimator : fitted CouplingFlow or StructureSearchFlow
    X : array-like of shape (n_rows, n_features)
        Data for the sample pair plot.
    directory : str or path-like
        Created if it does not exist.

    Returns
    -------
    paths : list of str
        ``search_history.png`` (only when the estimator has a
        ``search_history_``), ``masks.png`` and ``samples.png``, in that
        order.
    """
    plt = _import_pyplot()
    os.makedirs(directory, exist_ok=True)
    paths = []

    def save(fig, name):
        path = os.path.join(os.fspath(directory), name)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)

    if getattr(estimator, "search_history_", None):
        fig, ax = plt.subplots(figsize=(6, 4))
        plot_search_history(estimator, ax=ax)
        save(fig, "search_history.png")

    masks = _as_masks(estimator)
    n_layers, n_features = masks.shape
    fig, ax = plt.subplots(
        figsize=(min(3 + 0.3 * n_features, 16), min(1.5 + 0.35 * n_layers, 12))
    )
    plot_masks(estimator, ax=ax)
    save(fig, "masks.png")

    save(plot_samples(estimator, X), "samples.png")
    return paths
