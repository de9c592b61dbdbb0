"""Coupling masks: built-in generators and validation.

A mask set is plain data: an ``(n_layers, n_features)`` boolean array whose
row ``l`` marks the features layer ``l`` conditions on (True, passed through)
and the ones it transforms (False).
"""

import numbers

import numpy as np

MASK_GENERATORS = ("alternating", "random")


def alternating_masks(n_layers, n_features):
    """RealNVP-style masks: the first half conditions, then the second, in turn.

    For an odd number of features the first half is the larger one.
    """
    first = np.arange(n_features) < (n_features + 1) // 2
    return np.stack([first if layer % 2 == 0 else ~first for layer in range(n_layers)])


def random_masks(n_layers, n_features, rng):
    """A random half of the features conditions in each layer (seeded by ``rng``)."""
    n_condition = n_features // 2
    masks = np.zeros((n_layers, n_features), dtype=bool)
    for layer in range(n_layers):
        masks[layer, rng.choice(n_features, size=n_condition, replace=False)] = True
    return masks


def check_masks(masks, n_features):
    """Validate a user-supplied mask array and return it as a bool ndarray.

    Raises
    ------
    ValueError
        If ``masks`` is not 2-D with ``n_features`` columns, holds values other
        than 0/1, or has a layer that conditions on no feature or transforms
        no feature.
    """
    masks = np.asarray(masks)
    if masks.ndim != 2 or masks.shape[0] < 1 or masks.shape[1] != n_features:
        raise ValueError(
            f"masks must have shape (n_layers, n_features) = (L, {n_features}) "
            f"with L >= 1; got shape {masks.shape}."
        )
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must be boolean (or 0/1) arrays.")
        masks = masks.astype(bool)
    no_condition = np.flatnonzero(~masks.any(axis=1))
    no_transform = np.flatnonzero(masks.all(axis=1))
    if no_condition.size or no_transform.size:
        raise ValueError(
            "every mask layer needs at least one conditioning (True) and one "
            f"transformed (False) feature; layers without conditioning features: "
            f"{no_condition.tolist()}, layers without transformed features: "
            f"{no_transform.tolist()}."
        )
    return masks.copy()


def make_masks(spec, n_layers, n_features, rng):
    """Turn the ``masks`` hyper-parameter into a validated mask array."""
    if isinstance(spec, str):
        if spec == "alternating":
            return alternating_masks(n_layers, n_features)
        if spec == "random":
            return random_masks(n_layers, n_features, rng)
        raise ValueError(
            f"masks must be one of {MASK_GENERATORS} or an array of shape "
            f"(n_layers, n_features); got {spec!r}."
        )
    return check_masks(spec, n_features)


def check_hidden_layer_sizes(hidden_layer_sizes):
    """Return ``hidden_layer_sizes`` as a non-empty tuple of positive ints."""
    if isinstance(hidden_layer_sizes, numbers.Integral):
        hidden_layer_sizes = (hidden_layer_sizes,)
    sizes = tuple(hidden_layer_sizes)
    if not sizes or not all(
        isinstance(h, numbers.Integral) and not isinstance(h, bool) and h > 0 for h in sizes
    ):
        raise ValueError(
            f"hidden_layer_sizes must be a non-empty tuple of positive ints; got {hidden_layer_sizes!r}."
        )
    return tuple(int(h) for h in sizes)
