"""Structure genomes (masks, depth, width) and their operators: ``skflowsearch._genome``."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from skflowsearch import _operators as ops
from skflowsearch._genome import (
    Genome,
    crossover,
    dependence_masks,
    hidden_sizes,
    initial_genomes,
    is_valid,
    mutate,
    n_parameters,
    repair,
)
from skflowsearch._masks import alternating_masks
from skflowsearch._bijections import Affine, RationalQuadraticSpline
from skflowsearch._training import TrainingConfig

from _counting import hand_count

fast = settings(deadline=None, max_examples=60)

seeds = st.integers(0, 2**32 - 1)
shapes = st.tuples(st.integers(1, 6), st.integers(2, 8))
WIDTHS = (0.25, 0.5, 1.0)


def rng(seed):
    return np.random.default_rng(seed)


@st.composite
def raw_genomes(draw, shape=None, n_widths=3):
    """Any genome, valid or not: arbitrary mask bits and on/off genes."""
    shape = shape if shape is not None else draw(shapes)
    masks = draw(hnp.arrays(np.bool_, shape))
    active = draw(hnp.arrays(np.bool_, shape[0]))
    return Genome(masks, active, draw(st.integers(0, n_widths - 1)))


@st.composite
def valid_genomes(draw, shape=None, n_widths=3):
    shape = shape if shape is not None else draw(shapes)
    r = rng(draw(seeds))
    masks = ops.random_genome(*shape, r)
    active = r.random(shape[0]) < 0.7
    if not active.any():
        active[r.integers(shape[0])] = True
    genome = ops.repair(masks[active], r)
    masks[active] = genome
    return Genome(masks, active, int(r.integers(n_widths)))


@st.composite
def genome_pairs(draw, n_widths=3):
    shape = draw(shapes)
    return draw(valid_genomes(shape, n_widths)), draw(valid_genomes(shape, n_widths))


def brute_force_valid(genome):
    """The validity rules, spelled out independently of ``is_valid``."""
    masks, active = genome.masks, genome.active
    if masks.dtype != np.bool_ or active.dtype != np.bool_ or masks.ndim != 2:
        return False
    n_layers, n_features = masks.shape
    if active.shape != (n_layers,) or not isinstance(genome.width, (int, np.integer)):
        return False
    for row in masks:  # every row, inactive ones too, can be switched on as it is
        if True not in list(row) or False not in list(row):
            return False
    on = [layer for layer in range(n_layers) if active[layer]]
    if not on:
        return False
    if len(on) >= 2:
        for feature in range(n_features):
            if all(masks[layer, feature] for layer in on):  # never transformed
                return False
    return True


def same_genome(a, b):
    return (np.array_equal(a.masks, b.masks) and np.array_equal(a.active, b.active)
            and a.width == b.width)


def copy_of(genome):
    return Genome(genome.masks.copy(), genome.active.copy(), genome.width)


# ------------------------------------------------------------------ validity


def test_brute_force_checker_examples():
    ok = Genome(np.array([[True, False], [False, True]]), np.array([True, True]), 0)
    assert brute_force_valid(ok) and is_valid(ok)
    covered_by_inactive = Genome(np.array([[True, False], [True, False], [False, True]]),
                                 np.array([True, True, False]), 0)
    assert not brute_force_valid(covered_by_inactive) and not is_valid(covered_by_inactive)
    bad_inactive_row = Genome(np.array([[True, False], [True, True]]), np.array([True, False]), 0)
    assert not brute_force_valid(bad_inactive_row) and not is_valid(bad_inactive_row)
    nothing_on = Genome(np.array([[True, False]]), np.array([False]), 0)
    assert not brute_force_valid(nothing_on) and not is_valid(nothing_on)
    # One active layer: its conditioning features are never transformed, allowed.
    single = Genome(np.array([[True, False], [True, False]]), np.array([False, True]), 2)
    assert brute_force_valid(single) and is_valid(single)


@fast
@given(raw_genomes())
def test_is_valid_matches_brute_force(genome):
    assert is_valid(genome) == brute_force_valid(genome)


# -------------------------------------------------------------------- repair


@fast
@given(raw_genomes(), seeds)
def test_repair_returns_a_valid_genome_and_leaves_its_input_alone(genome, seed):
    before = copy_of(genome)
    out = repair(genome, rng(seed))
    assert brute_force_valid(out)
    assert out.masks.shape == genome.masks.shape and out.width == genome.width
    assert same_genome(genome, before)
    # Repair never switches a layer off, and switches one on only when none is.
    assert (out.active >= genome.active).all()
    assert out.active.sum() == max(1, genome.active.sum())


@fast
@given(valid_genomes(), seeds)
def test_repair_is_the_identity_on_valid_genomes(genome, seed):
    assert same_genome(repair(genome, rng(seed)), genome)


# ---------------------------------------------------------------------- key


@fast
@given(valid_genomes(), seeds)
def test_key_ignores_the_masks_of_inactive_layers(genome, seed):
    r = rng(seed)
    masks = genome.masks.copy()
    for layer in np.flatnonzero(~genome.active):
        masks[layer] = ops.random_genome(1, masks.shape[1], r)[0]
    other = Genome(masks, genome.active.copy(), genome.width)
    assert other.key() == genome.key()
    np.testing.assert_array_equal(other.real_masks(), genome.real_masks())


@fast
@given(valid_genomes())
def test_key_distinguishes_width(genome):
    wider = Genome(genome.masks, genome.active, genome.width + 1)
    assert wider.key() != genome.key()
    assert len({Genome(genome.masks, genome.active, w).key() for w in range(4)}) == 4


@fast
@given(valid_genomes(), st.data())
def test_key_distinguishes_depth(genome, data):
    layer = data.draw(st.integers(0, genome.active.size - 1))
    active = genome.active.copy()
    active[layer] = not active[layer]
    if active.any():
        assert Genome(genome.masks, active, genome.width).key() != genome.key()


@fast
@given(genome_pairs())
def test_key_equal_exactly_for_same_real_structure(pair):
    a, b = pair
    # Where the inactive layers sit does not matter: only the active masks, in order.
    same = (a.masks.shape == b.masks.shape and a.width == b.width
            and np.array_equal(a.real_masks(), b.real_masks()))
    assert (a.key() == b.key()) == same
    hash(a.key())


def test_key_ignores_where_the_inactive_layers_sit():
    # One active layer with the same mask, first in one genome and second in the other.
    a = Genome(np.array([[False, True, False], [True, False, False], [False, False, True]]),
               np.array([True, False, False]), 0)
    b = Genome(np.array([[False, False, True], [False, True, False], [False, True, False]]),
               np.array([False, True, False]), 0)
    assert a.key() == b.key()
    assert a.key() != Genome(a.masks, a.active, 1).key()


def test_key_depends_on_shape():
    # Same packed bits in another shape must not collide.
    a = Genome(np.array([[True, False, True, False]] * 2), np.ones(2, dtype=bool), 0)
    b = Genome(np.array([[True, False]] * 4), np.ones(4, dtype=bool), 0)
    assert a.key() != b.key()


def test_full_genome():
    masks = alternating_masks(3, 4)
    genome = Genome.full(masks, 3)
    assert genome.n_active == 3 and genome.width == 2 and is_valid(genome)
    np.testing.assert_array_equal(genome.real_masks(), masks)


# -------------------------------------------------------------------- mutate


@pytest.mark.parametrize("n_widths", [1, 3])
@fast
@given(data=st.data(), seed=seeds)
def test_mutate_valid_pure_deterministic(n_widths, data, seed):
    genome = data.draw(valid_genomes(n_widths=n_widths))
    before = copy_of(genome)
    child = mutate(genome, rng(seed), rate=0.2, n_widths=n_widths)
    assert brute_force_valid(child)
    assert child.masks.shape == genome.masks.shape
    assert 0 <= child.width < n_widths
    assert same_genome(genome, before)
    assert same_genome(child, mutate(genome, rng(seed), rate=0.2, n_widths=n_widths))


@fast
@given(valid_genomes(), seeds)
def test_mutate_is_one_small_step(genome, seed):
    child = mutate(genome, rng(seed), rate=1.0 / genome.real_masks().size, n_widths=3)
    changed = [not np.array_equal(child.masks[genome.active & child.active],
                                  genome.masks[genome.active & child.active]),
               not np.array_equal(child.active, genome.active),
               child.width != genome.width]
    assert abs(child.width - genome.width) <= 1
    if changed[2]:  # a width step touches nothing else
        assert not changed[0] and not changed[1]
    # Layers off in parent and child keep their masks (for a later switch-on).
    off = ~genome.active & ~child.active
    np.testing.assert_array_equal(child.masks[off], genome.masks[off])
    # At most one layer switched.
    assert (child.active != genome.active).sum() <= 1


def test_mutate_uses_every_move():
    r = rng(0)
    genome = Genome(ops.random_genome(4, 5, r), np.array([True, True, False, True]), 1)
    moves = set()
    for _ in range(300):
        child = mutate(genome, r, rate=0.05, n_widths=3)
        if child.width != genome.width:
            moves.add("width")
        elif not np.array_equal(child.active, genome.active):
            moves.add("layer")
        elif not np.array_equal(child.masks, genome.masks):
            moves.add("masks")
    assert moves == {"width", "layer", "masks"}


@pytest.mark.parametrize("n_layers, n_features, n_widths",
                         [(3, 4, 3), (4, 6, 3), (8, 4, 3), (3, 5, 1), (1, 6, 1), (6, 8, 2)])
def test_mutate_nearly_always_changes_the_genome(n_layers, n_features, n_widths):
    # A child equal to its parent is wasted work (the search redraws it), so
    # this must be rare for genomes that are not tiny.
    r = rng(n_layers * 100 + n_features)
    n_same, n_trials = 0, 300
    for _ in range(n_trials):
        masks = ops.random_genome(n_layers, n_features, r)
        active = r.random(n_layers) < 0.7
        parent = repair(Genome(masks, active, int(r.integers(n_widths))), r)
        child = mutate(parent, r, rate=1.0 / parent.real_masks().size, n_widths=n_widths)
        n_same += child.key() == parent.key()
    assert n_same <= 0.02 * n_trials


def test_mutate_keeps_one_layer_on():
    genome = Genome(alternating_masks(3, 4), np.array([False, True, False]), 0)
    r = rng(1)
    for _ in range(100):
        child = mutate(genome, r, rate=0.1, n_widths=1)
        assert child.n_active >= 1 and brute_force_valid(child)


# ----------------------------------------------------------------- crossover


@fast
@given(genome_pairs(), seeds)
def test_crossover_valid_pure_and_from_the_parents(pair, seed):
    a, b = pair
    before_a, before_b = copy_of(a), copy_of(b)
    child = crossover(a, b, rng(seed))
    assert brute_force_valid(child)
    assert same_genome(a, before_a) and same_genome(b, before_b)
    assert same_genome(child, crossover(a, b, rng(seed)))
    assert child.width in (a.width, b.width)
    # Every on/off gene comes from a parent, but for one repair may switch on.
    from_parent = (child.active == a.active) | (child.active == b.active)
    assert (~from_parent).sum() <= 1
    # Repair never touches a valid row of an inactive layer.
    for layer in np.flatnonzero(~child.active):
        assert (np.array_equal(child.masks[layer], a.masks[layer])
                or np.array_equal(child.masks[layer], b.masks[layer]))


@fast
@given(valid_genomes(), seeds)
def test_crossover_with_itself_is_the_identity(genome, seed):
    assert same_genome(crossover(genome, copy_of(genome), rng(seed)), genome)


# ---------------------------------------------------------- dependence_masks


def _paired_columns(n_rows, order, seed, noise=0.1):
    """Columns a, a + noise, b, b + noise (then ``order``); returns X and the pairs."""
    r = rng(seed)
    a, b = r.standard_normal(n_rows), r.standard_normal(n_rows)
    columns = [a, a + noise * r.standard_normal(n_rows), b, b + noise * r.standard_normal(n_rows)]
    X = np.column_stack([columns[i] for i in order])
    where = {c: int(np.flatnonzero(np.asarray(order) == c)[0]) for c in range(4)}
    return X, [(where[0], where[1]), (where[2], where[3])]


@fast
@given(st.permutations(range(4)), seeds, st.integers(1, 5))
def test_dependence_masks_split_dependent_features(order, seed, n_layers):
    X, pairs = _paired_columns(200, order, seed)
    stacks = dependence_masks(X, n_layers, rng(seed))
    assert 1 <= len(stacks) <= 2
    # The first (best) split puts each strongly dependent pair on both sides.
    side = stacks[0][0]
    for i, j in pairs:
        assert side[i] != side[j]
    for stack in stacks:
        assert stack.shape == (n_layers, 4) and stack.dtype == np.bool_
        assert ops.is_valid(stack)
        for layer in range(n_layers):  # a balanced split and its complement, in turn
            expected = stack[0] if layer % 2 == 0 else ~stack[0]
            np.testing.assert_array_equal(stack[layer], expected)
        assert stack[0].sum() == 2


def test_dependence_masks_differ_from_alternating_when_neighbours_depend():
    # Alternating masks put columns 0 and 1 on the same side: exactly the
    # pair that should condition each other here.
    X, _ = _paired_columns(300, [0, 1, 2, 3], 0)
    alternating = alternating_masks(2, 4)
    for stack in dependence_masks(X, 2, rng(0)):
        assert not np.array_equal(stack, alternating)
        assert stack[0, 0] != stack[0, 1] and stack[0, 2] != stack[0, 3]


def test_dependence_masks_odd_and_degenerate_inputs():
    r = rng(3)
    assert dependence_masks(r.standard_normal((20, 1)), 3, r) == []
    (two,) = dependence_masks(r.standard_normal((20, 2)), 3, r)
    assert ops.is_valid(two)
    X = r.standard_normal((50, 5))
    X[:, 2] = 1.0  # constant column: no correlation defined
    stacks = dependence_masks(X, 4, r)
    assert stacks and all(ops.is_valid(s) and s[0].sum() == 3 for s in stacks)
    keys = {min(s[0].tobytes(), (~s[0]).tobytes()) for s in stacks}
    assert len(keys) == len(stacks)  # no partition twice


# ---------------------------------------------------------- initial_genomes


@fast
@given(shapes, st.integers(1, 3), st.integers(1, 12), seeds)
def test_initial_genomes_valid_alternating_first(shape, n_widths, size, seed):
    n_layers, n_features = shape
    X = rng(seed).standard_normal((30, n_features))
    genomes = initial_genomes(X, n_layers, n_widths, size, rng(seed))
    assert 1 <= len(genomes) <= size
    assert all(brute_force_valid(g) and g.width < n_widths for g in genomes)
    assert all(g.masks.shape == shape for g in genomes)
    keys = [g.key() for g in genomes]
    assert genomes[0].key() == Genome.full(alternating_masks(n_layers, n_features), n_widths).key()
    again = initial_genomes(X, n_layers, n_widths, size, rng(seed))
    assert [g.key() for g in again] == keys


def test_initial_genomes_cover_depth_and_width():
    X = rng(0).standard_normal((40, 4))
    genomes = initial_genomes(X, 4, 3, 8, rng(0))
    assert any(g.n_active < 4 for g in genomes)  # the half-depth guess
    assert any(g.width == 0 for g in genomes)  # the narrowest guess
    assert any(g.width == 2 and g.n_active == 4 for g in genomes)


def test_initial_genomes_are_mostly_distinct():
    X = rng(0).standard_normal((40, 5))
    for seed in range(10):
        keys = [g.key() for g in initial_genomes(X, 4, 3, 8, rng(seed))]
        assert len(set(keys)) == len(keys)


def test_initial_genomes_are_distinct_after_repair():
    X = rng(0).standard_normal((30, 2))
    keys = [g.key() for g in initial_genomes(X, 2, 1, 3, rng(0))]
    assert len(set(keys)) == len(keys)


def test_initial_genomes_fill_the_population_when_possible():
    X = rng(0).standard_normal((40, 4))
    lengths = [len(initial_genomes(X, 8, 3, 8, rng(seed))) for seed in range(20)]
    assert lengths == [8] * 20


# --------------------------------------------------- hidden_sizes / n_parameters


def test_hidden_sizes():
    assert hidden_sizes((64, 64), WIDTHS, 2) == (64, 64)
    assert hidden_sizes((64, 32), WIDTHS, 0) == (16, 8)
    assert hidden_sizes((8,), WIDTHS, 1) == (4,)
    assert hidden_sizes((3,), WIDTHS, 0) == (1,)  # never zero units


def _live_parameters(module, seed, n_features):
    """Parameters whose gradient is not zero: those that shape the density.

    An independent count: random weights (the output layer too, else
    everything upstream of it has no gradient), small enough that every bin
    of a spline keeps some of the rows, and rows spread over the splines'
    interval.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    x = 8.0 * torch.rand(2000, n_features, generator=generator, dtype=torch.float64) - 4.0
    module.log_prob(x).sum().backward()
    # Dead weights get rounding noise only (a masked unit's weights cancel in the pass).
    largest = max(float(p.grad.abs().max()) for p in module.parameters())
    return sum(int((p.grad.abs() > 1e-9 * largest).sum()) for p in module.parameters())


@settings(deadline=None, max_examples=30)
@given(valid_genomes(), st.lists(st.integers(2, 9), min_size=1, max_size=2), st.booleans(), seeds,
       st.sampled_from([Affine(), RationalQuadraticSpline(n_bins=3)]))
def test_n_parameters_counts_the_live_parameters(genome, hidden, actnorm, seed, bijection):
    hidden = tuple(hidden)
    config = TrainingConfig(hidden_layer_sizes=hidden, actnorm=actnorm, bijection=bijection)
    expected = hand_count(genome.real_masks(), hidden_sizes(hidden, WIDTHS, genome.width), actnorm,
                          bijection.n_params)
    assert n_parameters(genome, config, WIDTHS) == expected
    # The stack with the genome's depth and width gates counts the same, and
    # so does the gradient.
    stacked = config.build(genome.masks[None], [seed % 2**31], layer_active=genome.active[None],
                           hidden_widths=[hidden_sizes(hidden, WIDTHS, genome.width)]).double()
    assert stacked.n_live_parameters()[0] == expected
    assert _live_parameters(stacked, seed % 2**31, genome.masks.shape[1]) == expected


def test_n_parameters_grows_with_depth_and_width():
    masks = alternating_masks(4, 6)
    sizes = [n_parameters(Genome(masks, np.arange(4) < k, w), TrainingConfig(hidden_layer_sizes=(8, 8)), WIDTHS)
             for k in (1, 2, 4) for w in (0, 2)]
    assert sizes[0] < sizes[1] and sizes[0] < sizes[2] < sizes[4]
    assert sizes[1] < sizes[3] < sizes[5]
