import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from skflowsearch import _operators as ops

fast = settings(deadline=None, max_examples=60)

seeds = st.integers(0, 2**32 - 1)
shapes = st.tuples(st.integers(1, 10), st.integers(2, 12))


@st.composite
def bool_arrays(draw, shape=None):
    return draw(hnp.arrays(np.bool_, shape if shape is not None else draw(shapes)))


@st.composite
def valid_genomes(draw, shape=None):
    shape = shape if shape is not None else draw(shapes)
    return ops.random_genome(*shape, np.random.default_rng(draw(seeds)))


def thinned_pair(shape, seed):
    """A valid genome and a copy with some conditioning bits cleared.

    ``b``'s transformed set contains ``a``'s in every layer, so every
    layer-wise mix of the two is valid and needs no repair.
    """
    r = np.random.default_rng(seed)
    a = ops.random_genome(*shape, r)
    b = a & (r.random(shape) < 0.5)
    empty = ~b.any(axis=1)
    b[empty] = a[empty]
    return a, b


@st.composite
def parent_pairs(draw):
    shape = draw(shapes)
    if draw(st.booleans()):
        return thinned_pair(shape, draw(seeds))
    return draw(valid_genomes(shape)), draw(valid_genomes(shape))


def rng(seed):
    return np.random.default_rng(seed)


def brute_force_valid(genome):
    """Invariants spelled out independently of ``is_valid``."""
    n_layers, n_features = genome.shape
    for row in genome:
        if True not in row or False not in row:
            return False
    if n_layers >= 2:
        return all(False in genome[:, f] for f in range(n_features))
    return True


MUTATIONS = {
    "bitflip": lambda g, r: ops.bitflip_mutation(g, r, 0.1),
    "bitflip_rate0": lambda g, r: ops.bitflip_mutation(g, r, 0.0),
    "bitflip_rate1": lambda g, r: ops.bitflip_mutation(g, r, 1.0),
    "swap": ops.swap_mutation,
    "reorder": ops.reorder_mutation,
    "mutate": lambda g, r: ops.mutate(g, r, 0.2),
}
CROSSOVERS = {
    "uniform": ops.uniform_crossover,
    "one_point": ops.one_point_crossover,
    "crossover": ops.crossover,
}


# --------------------------------------------------------------- validity


def test_is_valid_examples():
    assert ops.is_valid(np.array([[True, False]]))
    assert ops.is_valid(np.array([[True, False, False]]))  # one layer: no coverage rule
    assert not ops.is_valid(np.array([[True, True]]))
    assert not ops.is_valid(np.array([[False, False]]))
    assert ops.is_valid(np.array([[True, False], [False, True]]))
    assert not ops.is_valid(np.array([[True, False], [True, False]]))  # feature 0 never transformed


@fast
@given(bool_arrays())
def test_is_valid_matches_definition(genome):
    assert ops.is_valid(genome) == brute_force_valid(genome)


# ----------------------------------------------------------------- repair


@fast
@given(bool_arrays(), seeds)
def test_repair_makes_valid_without_touching_input(genome, seed):
    before = genome.copy()
    out = ops.repair(genome, rng(seed))
    assert brute_force_valid(out)
    assert out.shape == genome.shape and out.dtype == np.bool_
    assert out is not genome
    np.testing.assert_array_equal(genome, before)


@fast
@given(valid_genomes(), seeds)
def test_repair_is_identity_on_valid(genome, seed):
    np.testing.assert_array_equal(ops.repair(genome, rng(seed)), genome)


@fast
@given(bool_arrays(), seeds)
def test_repair_identity_on_valid_raw_arrays(genome, seed):
    out = ops.repair(genome, rng(seed))
    if brute_force_valid(genome):
        np.testing.assert_array_equal(out, genome)
    # At most one change per layer, then at most two per feature.
    assert (out != genome).sum() <= genome.shape[0] + 2 * genome.shape[1]


@fast
@given(bool_arrays(), seeds)
def test_repair_is_deterministic(genome, seed):
    np.testing.assert_array_equal(ops.repair(genome, rng(seed)), ops.repair(genome, rng(seed)))


@pytest.mark.parametrize("fill", [False, True])
def test_repair_single_bad_layer_changes_one_bit(fill):
    genome = np.full((1, 5), fill)
    out = ops.repair(genome, rng(0))
    assert (out != genome).sum() == 1 and ops.is_valid(out)


def test_repair_uncovered_feature_flips_one_bit():
    genome = np.array([[True, True, False], [True, False, True]])  # feature 0 never transformed
    out = ops.repair(genome, rng(0))
    assert ops.is_valid(out)
    assert (out != genome).sum() == 1 and not out[:, 0].all()


def test_repair_picks_the_layer_at_random():
    genome = np.array([[True, True, False, False], [True, False, True, False],
                       [True, False, False, True], [True, True, False, False]])
    layers = set()
    for seed in range(30):
        out = ops.repair(genome, rng(seed))
        assert ops.is_valid(out) and (out != genome).sum() == 1
        layers.add(int(np.flatnonzero(~out[:, 0])[0]))
    assert len(layers) >= 3


def test_repair_swaps_when_feature_is_only_true_everywhere():
    genome = np.array([[True, False, False], [True, False, False]])
    out = ops.repair(genome, rng(0))
    assert ops.is_valid(out)
    assert (out != genome).sum() == 2
    np.testing.assert_array_equal(out.sum(axis=1), [1, 1])


# ------------------------------------------------------------ random_genome


@fast
@given(shapes, seeds)
def test_random_genome_valid_and_deterministic(shape, seed):
    genome = ops.random_genome(*shape, rng(seed))
    assert genome.shape == shape and genome.dtype == np.bool_
    assert brute_force_valid(genome)
    np.testing.assert_array_equal(genome, ops.random_genome(*shape, rng(seed)))


def test_random_genome_varies_with_seed():
    genomes = {ops.genome_key(ops.random_genome(4, 6, rng(s))) for s in range(20)}
    assert len(genomes) > 10


# -------------------------------------------------------------- mutations


@pytest.mark.parametrize("name", MUTATIONS)
@fast
@given(genome=valid_genomes(), seed=seeds)
def test_mutation_valid_pure_deterministic(name, genome, seed):
    mutation = MUTATIONS[name]
    before = genome.copy()
    child = mutation(genome, rng(seed))
    assert child.shape == genome.shape and child.dtype == np.bool_
    assert brute_force_valid(child)
    assert child is not genome
    np.testing.assert_array_equal(genome, before)
    np.testing.assert_array_equal(child, mutation(genome, rng(seed)))


@fast
@given(valid_genomes(), seeds)
def test_reorder_preserves_rows(genome, seed):
    child = ops.reorder_mutation(genome, rng(seed))
    assert sorted(map(tuple, child.tolist())) == sorted(map(tuple, genome.tolist()))
    n_moved = int((child != genome).any(axis=1).sum())
    assert n_moved in (0, 2)


def test_reorder_single_layer_is_identity():
    genome = np.array([[True, False, True]])
    np.testing.assert_array_equal(ops.reorder_mutation(genome, rng(0)), genome)


def test_reorder_swaps_distinct_layers():
    genome = np.eye(4, dtype=bool)  # all rows distinct
    for seed in range(20):
        assert (ops.reorder_mutation(genome, rng(seed)) != genome).any(axis=1).sum() == 2


@fast
@given(valid_genomes(shape=(1, 7)), seeds)
def test_swap_single_layer_exchanges_one_pair(genome, seed):
    child = ops.swap_mutation(genome, rng(seed))
    assert (child != genome).sum() == 2
    assert child.sum() == genome.sum()


def single_flip_valid(genome):
    """Bits whose lone flip keeps ``genome`` valid, by brute force."""
    out = np.zeros(genome.shape, dtype=bool)
    for idx in np.ndindex(genome.shape):
        flipped = genome.copy()
        flipped[idx] = not flipped[idx]
        out[idx] = brute_force_valid(flipped)
    return out


@fast
@given(valid_genomes(), seeds)
def test_bitflip_rate_zero_flips_exactly_one_safe_bit(genome, seed):
    child = ops.bitflip_mutation(genome, rng(seed), 0.0)
    safe = single_flip_valid(genome)
    if safe.any():
        diff = child != genome
        assert diff.sum() == 1 and safe[diff].all()


@fast
@given(valid_genomes(), seeds, st.floats(0.0, 1.0))
def test_bitflip_child_differs(genome, seed, rate):
    # Redraws make a repeat of the parent vanishingly unlikely for these sizes.
    if genome.size >= 6:
        assert not np.array_equal(ops.bitflip_mutation(genome, rng(seed), rate), genome)


def test_bitflip_rate_one_flips_many_bits():
    genome = ops.random_genome(6, 8, rng(0))
    child = ops.bitflip_mutation(genome, rng(1), 1.0)
    assert (child != genome).sum() > genome.size // 2


# ------------------------------------------------------------- crossovers


@pytest.mark.parametrize("name", CROSSOVERS)
@fast
@given(pair=parent_pairs(), seed=seeds)
def test_crossover_valid_pure_deterministic(name, pair, seed):
    cross = CROSSOVERS[name]
    a, b = pair
    a0, b0 = a.copy(), b.copy()
    child = cross(a, b, rng(seed))
    assert child.shape == a.shape and child.dtype == np.bool_
    assert brute_force_valid(child)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)
    np.testing.assert_array_equal(child, cross(a, b, rng(seed)))


def every_mix_valid(a, b):
    """True when any layer-wise mix of valid ``a`` and ``b`` is valid."""
    return a.shape[0] == 1 or bool((~a & ~b).any(axis=0).all())


@fast
@given(parent_pairs(), seeds)
def test_uniform_crossover_takes_layers_from_parents(pair, seed):
    a, b = pair
    child = ops.uniform_crossover(a, b, rng(seed))
    from_parent = (child == a).all(axis=1) | (child == b).all(axis=1)
    if every_mix_valid(a, b):
        assert from_parent.all()
    # Repair only touches never-transformed features, so most rows survive.
    assert from_parent.sum() >= child.shape[0] - child.shape[1]


@fast
@given(parent_pairs(), seeds)
def test_one_point_crossover_is_a_prefix_suffix_mix(pair, seed):
    a, b = pair
    child = ops.one_point_crossover(a, b, rng(seed))
    n_layers = a.shape[0]
    if not every_mix_valid(a, b):
        return
    if n_layers == 1:
        assert np.array_equal(child, a) or np.array_equal(child, b)
    else:
        cuts = [c for c in range(1, n_layers)
                if np.array_equal(child, np.concatenate([a[:c], b[c:]]))]
        assert cuts


def test_every_mix_condition_is_exercised():
    # Guard that the conditional assertions above are not vacuous.
    pairs = [thinned_pair((6, 8), seed) for seed in range(20)]
    assert all(ops.is_valid(b) and every_mix_valid(a, b) for a, b in pairs)
    assert sum(not np.array_equal(a, b) for a, b in pairs) >= 15


def test_one_point_cut_never_copies_a_parent():
    a = np.array([[True, False]] * 3 + [[False, True]] * 3)
    b = np.array([[False, True]] * 3 + [[True, False]] * 3)
    seen = set()
    for seed in range(50):
        child = ops.one_point_crossover(a, b, rng(seed))
        assert ops.is_valid(child)
        assert not np.array_equal(child, a) and not np.array_equal(child, b)
        seen.add(ops.genome_key(child))
    assert len(seen) > 1


def test_dispatchers_use_every_operator():
    genome = np.eye(4, dtype=bool)
    kinds = set()
    for seed in range(60):
        child = ops.mutate(genome, rng(seed), 0.0)
        rows_kept = sorted(map(tuple, child.tolist())) == sorted(map(tuple, genome.tolist()))
        n_diff = int((child != genome).sum())
        kinds.add("reorder" if rows_kept else ("bitflip" if n_diff == 1 else "swap"))
    assert kinds == {"reorder", "bitflip", "swap"}
    a, b = thinned_pair((6, 8), 0)
    assert (a != b).any(axis=1).all()  # every layer tells its parent
    cuts = [np.concatenate([a[:c], b[c:]]) for c in range(1, 6)]
    n_prefix = sum(any(np.array_equal(ops.crossover(a, b, rng(s)), c) for c in cuts)
                   for s in range(60))
    # Uniform crossover alone gives such a child with probability 5/64.
    assert 15 <= n_prefix < 60


# ------------------------------------------------------------- genome_key


@fast
@given(bool_arrays(), bool_arrays())
def test_genome_key_identifies_genomes(g, h):
    same = g.shape == h.shape and np.array_equal(g, h)
    assert (ops.genome_key(g) == ops.genome_key(h)) == same
    assert ops.genome_key(g) == ops.genome_key(g.copy(order="F"))


def test_genome_key_distinguishes_shapes_with_equal_bits():
    g = np.array([[True, False, True, False, True, False, True, False]])
    assert ops.genome_key(g) != ops.genome_key(g.reshape(2, 4))
    assert isinstance(ops.genome_key(g), bytes)
    assert hash(ops.genome_key(g)) == hash(ops.genome_key(g.copy()))


# ------------------------------------------------------- argument checking

GOOD = np.array([[True, False], [False, True]])


@pytest.mark.parametrize("bad, match", [
    (np.array([True, False]), "2-D"),
    (np.zeros((2, 2, 2), dtype=bool), "2-D"),
    (np.array([[1, 0], [0, 1]]), "dtype bool"),
    (np.array([[True], [False]]), "n_features >= 2"),
    (np.zeros((0, 3), dtype=bool), "at least one layer"),
    ([[True, False]], "numpy array"),
])
def test_bad_genomes_raise(bad, match):
    for call in (ops.is_valid, ops.genome_key,
                 lambda g: ops.repair(g, rng(0)),
                 lambda g: ops.bitflip_mutation(g, rng(0), 0.5),
                 lambda g: ops.swap_mutation(g, rng(0)),
                 lambda g: ops.reorder_mutation(g, rng(0)),
                 lambda g: ops.mutate(g, rng(0), 0.5),
                 lambda g: ops.uniform_crossover(g, g, rng(0)),
                 lambda g: ops.one_point_crossover(g, g, rng(0)),
                 lambda g: ops.crossover(g, g, rng(0))):
        with pytest.raises(ValueError, match=match):
            call(bad)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_bad_rate_raises(rate):
    with pytest.raises(ValueError, match="rate"):
        ops.bitflip_mutation(GOOD, rng(0), rate)
    with pytest.raises(ValueError, match="rate"):
        ops.mutate(GOOD, rng(0), rate)


def test_mismatched_parents_raise():
    other = np.array([[True, False, False], [False, True, True]])
    for cross in CROSSOVERS.values():
        with pytest.raises(ValueError, match="same shape"):
            cross(GOOD, other, rng(0))


@pytest.mark.parametrize("n_layers, n_features", [(0, 3), (2, 1), (2.0, 3), (True, 3)])
def test_random_genome_bad_shape_raises(n_layers, n_features):
    with pytest.raises(ValueError):
        ops.random_genome(n_layers, n_features, rng(0))


def test_non_generator_rng_raises():
    with pytest.raises(TypeError, match="Generator"):
        ops.repair(GOOD, 0)
    with pytest.raises(TypeError, match="Generator"):
        ops.random_genome(2, 3, np.random.RandomState(0))
