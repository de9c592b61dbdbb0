"""Genetic operators on coupling-mask genomes.

A genome is an ``(n_layers, n_features)`` boolean array; row ``l`` is the mask
of coupling layer ``l``, ``True`` for a conditioning feature (passed through
and fed to the conditioner) and ``False`` for a transformed feature.

A genome is *valid* when

1. every layer has at least one ``True`` and at least one ``False`` (so
   ``n_features >= 2``), and
2. if ``n_layers >= 2``, every feature is ``False`` (transformed) in at least
   one layer. With a single layer this is impossible, since the conditioning
   features of that layer are never transformed, so it is not required.

Every function here is pure: it takes genome(s) and a
:class:`numpy.random.Generator`, never modifies its inputs and returns a new
array. Mutations and crossovers return a valid genome for valid inputs,
calling :func:`repair` where an operation may break an invariant.
"""

import numbers

import numpy as np

__all__ = [
    "is_valid",
    "repair",
    "random_genome",
    "bitflip_mutation",
    "swap_mutation",
    "reorder_mutation",
    "uniform_crossover",
    "one_point_crossover",
    "mutate",
    "crossover",
    "genome_key",
]

# Bit-flip mutation redraws a child that repair turned back into its parent at
# most this many times; tiny genomes have few valid neighbours.
_MAX_BITFLIP_TRIES = 16


def _check_genome(genome, name="genome"):
    """Raise ``ValueError`` unless ``genome`` is a 2-D bool array, >= 2 columns."""
    if not isinstance(genome, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(genome).__name__}.")
    if genome.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_layers, n_features), got shape {genome.shape}.")
    if genome.dtype != np.bool_:
        raise ValueError(f"{name} must have dtype bool, got {genome.dtype}.")
    if genome.shape[0] < 1:
        raise ValueError(f"{name} must have at least one layer, got shape {genome.shape}.")
    if genome.shape[1] < 2:
        raise ValueError(f"{name} must have n_features >= 2, got shape {genome.shape}.")


def _check_pair(a, b):
    _check_genome(a, "a")
    _check_genome(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"Parents must have the same shape, got {a.shape} and {b.shape}.")


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}.")


def _check_rate(rate):
    if (
        isinstance(rate, bool)
        or not isinstance(rate, numbers.Real)
        or not 0.0 <= float(rate) <= 1.0
    ):
        raise ValueError(f"rate must be a real number in [0, 1], got {rate!r}.")


def is_valid(genome):
    """Whether ``genome`` satisfies both mask invariants.

    Parameters
    ----------
    genome : ndarray of bool, shape (n_layers, n_features)

    Returns
    -------
    valid : bool
        ``True`` when every layer has a conditioning and a transformed feature
        and, if ``n_layers >= 2``, every feature is transformed somewhere.
    """
    _check_genome(genome)
    layers_ok = bool(genome.any(axis=1).all() and (~genome).any(axis=1).all())
    if genome.shape[0] == 1:
        return layers_ok
    return layers_ok and bool((~genome).any(axis=0).all())


def repair(genome, rng):
    """Return a valid genome obtained from ``genome`` with few changes.

    A layer without ``True`` gets one random feature set ``True``; a layer
    without ``False`` gets one random feature set ``False``. Then, if
    ``n_layers >= 2``, each feature that is never transformed is set ``False``
    in a random layer that has at least two ``True``; when it is the only
    ``True`` of every layer it is instead swapped, in a random layer, with a
    random other feature. A valid genome is returned unchanged (as a copy).

    Parameters
    ----------
    genome : ndarray of bool, shape (n_layers, n_features)
    rng : numpy.random.Generator

    Returns
    -------
    repaired : ndarray of bool, shape (n_layers, n_features)
    """
    _check_genome(genome)
    _check_rng(rng)
    out = genome.copy()
    n_layers, n_features = out.shape
    for row in out:
        if not row.any():
            row[rng.integers(n_features)] = True
        elif row.all():
            row[rng.integers(n_features)] = False
    if n_layers == 1:
        return out
    # One pass suffices: setting a True to False never un-covers a feature and
    # is only done in a layer with >= 2 Trues, so layers stay valid. A swap
    # covers ``f`` and sets ``g`` True in one layer only; ``g`` was False in
    # every layer (``f`` was each layer's only True), so with n_layers >= 2 it
    # stays covered, and the layer keeps exactly one True.
    for f in range(n_features):
        if not out[:, f].all():
            continue
        roomy = np.flatnonzero(out.sum(axis=1) >= 2)
        if roomy.size:
            out[rng.choice(roomy), f] = False
        else:
            layer = rng.integers(n_layers)
            g = rng.choice(np.delete(np.arange(n_features), f))
            out[layer, f], out[layer, g] = False, True
    return out


def random_genome(n_layers, n_features, rng):
    """Draw Bernoulli(0.5) mask bits and repair them.

    Parameters
    ----------
    n_layers : int, >= 1
    n_features : int, >= 2
    rng : numpy.random.Generator

    Returns
    -------
    genome : ndarray of bool, shape (n_layers, n_features)
        A valid genome.
    """
    for name, value, low in (("n_layers", n_layers, 1), ("n_features", n_features, 2)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    _check_rng(rng)
    return repair(rng.random((int(n_layers), int(n_features))) < 0.5, rng)


def _safe_flips(genome):
    """Bits whose flip alone keeps a valid ``genome`` valid."""
    n_true = genome.sum(axis=1, keepdims=True)
    n_false = genome.shape[1] - n_true
    safe = np.where(genome, n_true >= 2, n_false >= 2)
    if genome.shape[0] >= 2:
        # Turning the only False of a column True would un-cover that feature.
        safe &= genome | ((~genome).sum(axis=0, keepdims=True) >= 2)
    return safe


def bitflip_mutation(genome, rng, rate):
    """Flip each bit with probability ``rate``, flipping at least one, then repair.

    When no bit is drawn, one bit is forced, chosen among those whose flip
    keeps the genome valid if any exist. If repair turns the child back into
    its parent, the mutation is redrawn (a bounded number of times), so the
    child differs from its parent whenever that is reasonably possible.

    Parameters
    ----------
    genome : ndarray of bool, shape (n_layers, n_features)
        A valid genome.
    rng : numpy.random.Generator
    rate : float in [0, 1]
        Per-bit flip probability.

    Returns
    -------
    child : ndarray of bool, shape (n_layers, n_features)
    """
    _check_genome(genome)
    _check_rng(rng)
    _check_rate(rate)
    safe = _safe_flips(genome).ravel()
    for _ in range(_MAX_BITFLIP_TRIES):
        flips = rng.random(genome.shape) < rate
        if not flips.any():
            candidates = np.flatnonzero(safe) if safe.any() else np.arange(genome.size)
            flips.flat[rng.choice(candidates)] = True
        child = repair(genome ^ flips, rng)
        if not np.array_equal(child, genome):
            break
    return child


def swap_mutation(genome, rng):
    """In one random layer exchange a conditioning and a transformed feature.

    Parameters
    ----------
    genome : ndarray of bool, shape (n_layers, n_features)
        A valid genome.
    rng : numpy.random.Generator

    Returns
    -------
    child : ndarray of bool, shape (n_layers, n_features)
        Repaired, since the newly conditioning feature may lose its only
        transformed layer.
    """
    _check_genome(genome)
    _check_rng(rng)
    child = genome.copy()
    row = child[rng.integers(child.shape[0])]
    conditioning, transformed = np.flatnonzero(row), np.flatnonzero(~row)
    if conditioning.size and transformed.size:
        f, g = rng.choice(conditioning), rng.choice(transformed)
        row[f], row[g] = False, True
    return repair(child, rng)


def reorder_mutation(genome, rng):
    """Swap two distinct random layers (identity when ``n_layers == 1``).

    Parameters
    ----------
    genome : ndarray of bool, shape (n_layers, n_features)
    rng : numpy.random.Generator

    Returns
    -------
    child : ndarray of bool, shape (n_layers, n_features)
        Same rows as ``genome`` in another order, so valid when it is.
    """
    _check_genome(genome)
    _check_rng(rng)
    child = genome.copy()
    if child.shape[0] >= 2:
        i, j = rng.choice(child.shape[0], size=2, replace=False)
        child[[i, j]] = child[[j, i]]
    return child


def uniform_crossover(a, b, rng):
    """Take each layer from ``a`` or ``b`` with probability 1/2, then repair.

    Parameters
    ----------
    a, b : ndarray of bool, shape (n_layers, n_features)
        Valid parents of the same shape.
    rng : numpy.random.Generator

    Returns
    -------
    child : ndarray of bool, shape (n_layers, n_features)
    """
    _check_pair(a, b)
    _check_rng(rng)
    from_a = rng.random(a.shape[0]) < 0.5
    return repair(np.where(from_a[:, None], a, b), rng)


def one_point_crossover(a, b, rng):
    """Layers ``a[:c]`` then ``b[c:]`` for a random cut ``c``, then repair.

    The cut is drawn uniformly from ``1 .. n_layers - 1``; with a single layer
    this falls back to :func:`uniform_crossover`.

    Parameters
    ----------
    a, b : ndarray of bool, shape (n_layers, n_features)
        Valid parents of the same shape.
    rng : numpy.random.Generator

    Returns
    -------
    child : ndarray of bool, shape (n_layers, n_features)
    """
    _check_pair(a, b)
    _check_rng(rng)
    if a.shape[0] == 1:
        return uniform_crossover(a, b, rng)
    cut = rng.integers(1, a.shape[0])
    return repair(np.concatenate([a[:cut], b[cut:]]), rng)


def mutate(genome, rng, rate):
    """Apply a bit-flip, swap or reorder mutation, chosen uniformly.

    Parameters
    ----------
    genome : ndarray of bool, shape (n_layers, n_features)
        A valid genome.
    rng : numpy.random.Generator
    rate : float in [0, 1]
        Per-bit probability used by :func:`bitflip_mutation`.

    Returns
    -------
    child : ndarray of bool, shape (n_layers, n_features)
    """
    _check_rate(rate)
    _check_rng(rng)
    choice = rng.integers(3)
    if choice == 0:
        return bitflip_mutation(genome, rng, rate)
    if choice == 1:
        return swap_mutation(genome, rng)
    return reorder_mutation(genome, rng)


def crossover(a, b, rng):
    """Apply a uniform or a one-point crossover, chosen uniformly.

    Parameters
    ----------
    a, b : ndarray of bool, shape (n_layers, n_features)
        Valid parents of the same shape.
    rng : numpy.random.Generator

    Returns
    -------
    child : ndarray of bool, shape (n_layers, n_features)
    """
    _check_rng(rng)
    if rng.integers(2) == 0:
        return uniform_crossover(a, b, rng)
    return one_point_crossover(a, b, rng)


def genome_key(genome):
    """Hashable key identifying a genome, for fitness caching.

    Parameters
    ----------
    genome : ndarray of bool, shape (n_layers, n_features)

    Returns
    -------
    key : bytes
        The shape followed by the packed bits; equal exactly for equal
        genomes.
    """
    _check_genome(genome)
    shape = np.asarray(genome.shape, dtype=np.int64).tobytes()
    return shape + np.packbits(genome, axis=None).tobytes()
