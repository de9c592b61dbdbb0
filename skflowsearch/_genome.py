"""Structure genomes of the search: masks, depth and width of a coupling flow.

A :class:`Genome` describes one candidate flow of at most ``n_layers``
coupling layers:

* ``masks``, an ``(n_layers, n_features)`` bool array (True = conditioning
  feature), as in :mod:`skflowsearch._operators`;
* ``active``, an ``(n_layers,)`` bool array: an inactive layer is the
  identity, so the flow has ``active.sum()`` layers;
* ``width``, an index into the search's width choices, which scale every
  hidden layer of the conditioners.

A genome is *valid* when every mask row has a conditioning and a
transformed feature, at least one layer is active, and (with two or more
active layers) every feature is transformed by some active layer. Masks of
inactive layers are kept (a later mutation may switch the layer back on) but
do not take part in the genome's identity (:meth:`Genome.key`).

The operators are pure functions of genomes and a
:class:`numpy.random.Generator` that return valid genomes; the mask-level
work is delegated to :mod:`skflowsearch._operators`.
"""

from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import spearmanr

from . import _operators as ops
from ._masks import alternating_masks, random_masks

__all__ = [
    "Genome",
    "crossover",
    "dependence_masks",
    "hidden_sizes",
    "mutate",
    "n_parameters",
    "repair",
]

@dataclass(frozen=True, eq=False)
class Genome:
    """One candidate structure; see the module docstring."""

    masks: np.ndarray
    active: np.ndarray
    width: int

    @classmethod
    def full(cls, masks, n_widths):
        """All layers active, at the widest width."""
        masks = np.asarray(masks, dtype=bool)
        return cls(masks, np.ones(masks.shape[0], dtype=bool), n_widths - 1)

    @property
    def n_active(self):
        return int(self.active.sum())

    def real_masks(self):
        """The masks of the active layers, in order: the flow this genome builds."""
        return self.masks[self.active]

    def key(self):
        """Hashable identity: equal exactly for genomes that build the same flow.

        The flow is made of the active layers' masks, in order, and the width;
        where the inactive layers sit, and their masks, do not matter.
        """
        real = self.real_masks()
        return (
            np.asarray([*self.masks.shape, real.shape[0], int(self.width)], dtype=np.int64).tobytes()
            + np.packbits(real, axis=None).tobytes()
        )


def hidden_sizes(hidden_layer_sizes, width_choices, width):
    """Hidden widths of a genome's conditioners: each size times its width choice."""
    scale = width_choices[width]
    return tuple(max(1, int(round(h * scale))) for h in hidden_layer_sizes)


def n_parameters(genome, config, width_choices):
    """Live parameters of the flow ``genome`` builds with ``config`` (a ``TrainingConfig``).

    Counted by the flow itself (``CouplingFlowStack.n_live_parameters``),
    built at the genome's real depth and width.
    """
    hidden = hidden_sizes(config.hidden_layer_sizes, width_choices, genome.width)
    real = replace(config, hidden_layer_sizes=hidden)
    return int(real.build(genome.real_masks()[None], [0]).n_live_parameters()[0])


def is_valid(genome):
    rows_ok = bool(genome.masks.any(axis=1).all() and (~genome.masks).any(axis=1).all())
    return rows_ok and genome.n_active >= 1 and ops.is_valid(genome.real_masks())


def repair(genome, rng):
    """A valid genome close to ``genome``: rows fixed, one layer on at least, features covered."""
    masks = genome.masks.copy()
    for row in masks:
        if not row.any():
            row[rng.integers(row.size)] = True
        elif row.all():
            row[rng.integers(row.size)] = False
    active = genome.active.copy()
    if not active.any():
        active[rng.integers(active.size)] = True
    masks[active] = ops.repair(masks[active], rng)
    return Genome(masks, active, int(genome.width))


def mutate(genome, rng, *, rate, n_widths):
    """One small step: a mask change (bit flips or a swap), a layer switched, or the width moved.

    ``rate`` is the per-bit flip probability of the bit-flip mutation (one
    bit is always flipped); a layer switch keeps one layer active at least,
    and a width step moves to a neighbouring width choice.
    """
    moves = ["bits", "swap"] + (["layer"] if genome.active.size > 1 else [])
    moves += ["width"] if n_widths > 1 else []
    move = moves[rng.integers(len(moves))]
    masks, active, width = genome.masks.copy(), genome.active.copy(), int(genome.width)
    rows = np.flatnonzero(active)
    if move == "bits":
        masks[rows] = ops.bitflip_mutation(masks[rows], rng, rate)
    elif move == "swap":
        masks[rows] = ops.swap_mutation(masks[rows], rng)
    elif move == "layer":
        layer = rng.integers(active.size)
        if active[layer] and rows.size == 1:  # the only active layer: switch another one on
            layer = rng.choice(np.flatnonzero(~active))
        active[layer] = not active[layer]
    elif width == 0 or (width < n_widths - 1 and rng.random() < 0.5):
        width += 1
    else:
        width -= 1
    return repair(Genome(masks, active, width), rng)


def crossover(a, b, rng):
    """Each layer (its mask and on/off gene) from ``a`` or ``b``; the width from either."""
    from_a = rng.random(a.active.size) < 0.5
    masks = np.where(from_a[:, None], a.masks, b.masks)
    active = np.where(from_a, a.active, b.active)
    width = a.width if rng.random() < 0.5 else b.width
    return repair(Genome(masks, active, int(width)), rng)


def dependence_masks(X, n_layers, rng, n_partitions=2):
    """Masks that make dependent features condition each other, from the data.

    The features are split in two halves so that the rank correlation
    *across* the split is large (a max-cut of ``|spearman(X)|``, found by the
    signs of its leading eigenvectors and improved by single moves that keep
    the halves balanced): each half is then transformed given the features
    it depends on most. Layers alternate between a split and its complement.

    Returns
    -------
    list of ndarray of shape (n_layers, n_features)
        One mask stack per partition (fewer when partitions coincide).
    """
    n_features = X.shape[1]
    if n_features < 2:
        return []
    if n_features == 2:
        weights = np.ones((2, 2))
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            weights = np.abs(np.nan_to_num(spearmanr(X).statistic))
    weights = np.array(weights, dtype=float)
    np.fill_diagonal(weights, 0.0)
    # Max-cut: split by the signs of the eigenvectors of the smallest eigenvalues of W.
    _, vectors = np.linalg.eigh(weights)
    stacks, seen = [], set()
    for k in range(min(n_partitions, n_features)):
        side = _balanced_cut(weights, vectors[:, k] >= 0, rng)
        key = min(side.tobytes(), (~side).tobytes())
        if key in seen:
            continue
        seen.add(key)
        stacks.append(np.stack([side if layer % 2 == 0 else ~side for layer in range(n_layers)]))
    return stacks


def _balanced_cut(weights, side, rng):
    """Local search for a balanced cut with large crossing weight, from ``side``."""
    n = side.size
    side = side.copy()
    target = (n + 1) // 2
    # Balance first: move the features that cost the least.
    while side.sum() != target:
        big = side if side.sum() > target else ~side
        cross = weights[:, ~big].sum(axis=1) - weights[:, big].sum(axis=1)
        candidates = np.flatnonzero(big)
        side[candidates[np.argmax(-cross[candidates])]] ^= True
    # Then swaps of one feature of each half while the cut grows.
    for _ in range(4 * n):
        same = np.where(side[:, None] == side[None, :], weights, -weights).sum(axis=1)
        a = np.flatnonzero(side)[np.argmax(same[side])]
        b = np.flatnonzero(~side)[np.argmax(same[~side])]
        gain = same[a] + same[b] + 2 * weights[a, b]
        if gain <= 1e-12:
            break
        side[a], side[b] = False, True
    return side


def initial_genomes(X, n_layers, n_widths, size, rng):
    """The structures the search starts from, best guesses first.

    Alternating masks; data-driven dependence masks; alternating masks at
    half the depth and at the narrowest width (the size axis); alternating
    masks over a random permutation of the features; random halves
    (``CouplingFlow``'s ``masks="random"``); a second dependence split; then
    random genomes. A small ``size`` keeps the first ones.
    """
    n_features = X.shape[1]
    alternating = alternating_masks(n_layers, n_features)
    dependence = [Genome.full(m, n_widths) for m in dependence_masks(X, n_layers, rng)]
    genomes = [Genome.full(alternating, n_widths)] + dependence[:1]
    if n_layers >= 2:
        half = np.arange(n_layers) < max(1, n_layers // 2)
        genomes.append(Genome(alternating, half, n_widths - 1))
    if n_widths > 1:
        genomes.append(Genome(alternating, np.ones(n_layers, dtype=bool), 0))
    genomes.append(Genome.full(alternating[:, rng.permutation(n_features)], n_widths))
    halves = random_masks(n_layers, n_features, np.random.RandomState(rng.integers(2**32)))
    genomes.append(Genome.full(halves, n_widths))
    genomes += dependence[1:]
    unique = {}
    for genome in genomes:
        genome = genome if is_valid(genome) else repair(genome, rng)
        unique.setdefault(genome.key(), genome)
    for _ in range(50 * max(size, 1)):  # few valid genomes exist for tiny shapes
        if len(unique) >= size:
            break
        masks = ops.random_genome(n_layers, n_features, rng)
        active = rng.random(n_layers) < 0.75
        genome = repair(Genome(masks, active, int(rng.integers(n_widths))), rng)
        unique.setdefault(genome.key(), genome)
    return list(unique.values())[: max(size, 1)]
