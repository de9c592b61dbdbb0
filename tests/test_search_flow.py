"""``StructureSearchFlow``: estimator API, search bookkeeping, the race and behaviour."""

import copy
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.estimator_checks import parametrize_with_checks

import skflowsearch._search as search_module
from skflowsearch import CouplingFlow, StructureSearchFlow
from skflowsearch._genome import Genome, hidden_sizes, is_valid
from skflowsearch._masks import alternating_masks
from skflowsearch._preprocessing import choose_start, fit_normalizer
from skflowsearch._training import fit_flows
from skflowsearch.datasets import load_dataset

from _counting import hand_count

HISTORY_KEYS = {"generation", "n_evaluations", "n_failed", "best", "mean", "std", "worst", "seconds"}
RACE_KEYS = {"entry", "n_layers", "hidden_layer_sizes", "n_parameters", "score", "difference",
             "standard_error", "chosen", "n_members"}

# Tiny budgets: every fit below takes about half a second on one core.
TINY = dict(
    # The search settings the tests below were written against, pinned so that
    # retuning the defaults does not move them.
    selection_fraction=0.2,
    fitness_budget=0.3,
    n_components=1,  # the mixture base has its own tests
    n_layers=3,
    hidden_layer_sizes=(8,),
    population_size=4,
    n_offspring=4,
    n_generations=1,
    max_epochs=5,
    batch_size=32,
    n_candidates_per_batch=2,  # several training tasks per generation
    patience=None,
    random_state=0,
)


def tiny(**kwargs):
    return StructureSearchFlow(**{**TINY, **kwargs})


@pytest.fixture(scope="module")
def X():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(160, 4))
    X[:, 1] += X[:, 0] ** 2  # a non-Gaussian dependence the couplings can learn
    X[:, 3] = 0.5 * X[:, 2] + 0.3 * np.sin(2 * X[:, 0]) + 0.2 * X[:, 3]
    return X


@pytest.fixture(scope="module")
def search(X):
    return tiny().fit(X)


def _validation_rows(n_samples, validation_fraction, random_state):
    """The rows ``BaseFlow._fit`` holds out for early stopping (its first draw)."""
    order = check_random_state(random_state).permutation(n_samples)
    return order[: max(1, int(round(validation_fraction * n_samples)))]


def _chosen(est):
    (chosen,) = [r for r in est.race_ if r["chosen"]]
    return chosen


def _mutable_fit_flows(change):
    """``fit_flows`` for the search's candidate trainings, with ``change(result, kwargs)`` applied."""

    def patched(masks, *args, **kwargs):
        result = fit_flows(masks, *args, **kwargs)
        change(result, kwargs)
        return result

    return patched


def _in_evolution(kwargs):
    # The evolution's trainings have a step budget; incumbents and finalists do not.
    return kwargs.get("max_steps") is not None


# --- scikit-learn API ---------------------------------------------------------------


@parametrize_with_checks([
    StructureSearchFlow(n_layers=2, hidden_layer_sizes=(8,), population_size=2, n_offspring=2,
                        n_generations=1, max_epochs=5, random_state=0)
])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_clone_and_get_params():
    est = tiny(mutation_rate=0.25, width_choices=(0.5, 1.0), pick="smallest", race_margin=2.0,
               n_finalists=1, n_race_seeds=1, halving_factor=2, fitness_budget=0.5,
               selection_fraction=0.3, callback=None)
    cloned = clone(est)
    assert cloned.get_params() == est.get_params()
    assert not hasattr(cloned, "masks_")
    est.set_params(n_generations=0, pick="best")
    assert est.get_params()["n_generations"] == 0 and cloned.n_generations == TINY["n_generations"]
    assert cloned.pick == "smallest"


def test_defaults_of_the_new_design():
    params = StructureSearchFlow().get_params()
    assert params["validation_fraction"] == CouplingFlow().validation_fraction == 0.1
    assert params["mutation_rate"] == "auto"
    assert params["pick"] == "best" and params["race_margin"] == 2.0
    assert params["n_race_folds"] == 3 and params["n_race_seeds"] == 1
    for removed in ("fitness_epochs", "mutation_proba", "refit"):
        assert removed not in params
        with pytest.raises(TypeError, match=removed):
            StructureSearchFlow(**{removed: 1})


def test_pickle_round_trip(search, X):
    restored = pickle.loads(pickle.dumps(search))
    assert np.array_equal(restored.score_samples(X), search.score_samples(X))
    assert np.array_equal(restored.masks_, search.masks_)
    assert restored.race_ == search.race_
    assert restored.hidden_layer_sizes_ == search.hidden_layer_sizes_
    assert np.array_equal(restored.sample(5, random_state=1), search.sample(5, random_state=1))
    # A clone of a fitted search is unfitted but has the same parameters.
    assert clone(search).get_params() == search.get_params()


# --- reproducibility ----------------------------------------------------------------


def _assert_same_search(a, b, X):
    assert np.array_equal(a.masks_, b.masks_)
    assert a.hidden_layer_sizes_ == b.hidden_layer_sizes_
    assert np.array_equal(a.evaluated_masks_, b.evaluated_masks_)
    assert np.array_equal(a.evaluated_layers_, b.evaluated_layers_)
    assert np.array_equal(a.evaluated_n_parameters_, b.evaluated_n_parameters_)
    assert np.array_equal(a.evaluated_scores_, b.evaluated_scores_)
    assert a.race_ == b.race_
    assert a.fitness_steps_ == b.fitness_steps_
    assert a.best_score_ == b.best_score_
    assert np.array_equal(a.score_samples(X), b.score_samples(X))


def test_same_random_state_gives_same_result_for_any_n_jobs(search, X):
    _assert_same_search(tiny(n_jobs=1).fit(X), search, X)
    _assert_same_search(tiny(n_jobs=2).fit(X), search, X)


def test_other_random_state_gives_another_search(search, X):
    other = tiny(random_state=1).fit(X)
    assert not np.array_equal(other.evaluated_scores_, search.evaluated_scores_[: len(other.evaluated_scores_)])
    assert not np.array_equal(other.score_samples(X), search.score_samples(X))


# --- the search record --------------------------------------------------------------


def test_search_history(search):
    pd = pytest.importorskip("pandas")
    history = search.search_history_
    assert search.n_generations_ == TINY["n_generations"]  # patience=None: all generations run
    assert len(history) == search.n_generations_ + 1
    assert all(set(record) == HISTORY_KEYS for record in history)
    frame = pd.DataFrame(history)
    assert list(frame["generation"]) == list(range(len(history)))
    # Elitism: the best fitness never decreases.
    assert frame["best"].is_monotonic_increasing
    assert (frame["worst"] <= frame["mean"] + 1e-9).all() and (frame["mean"] <= frame["best"] + 1e-9).all()
    assert frame["n_evaluations"].sum() == len(search.evaluated_masks_)
    assert frame["n_failed"].sum() == np.sum(~np.isfinite(search.evaluated_scores_)) == 0
    # The best ever evaluated genome survives to the last generation.
    assert history[-1]["best"] == search.evaluated_scores_.max()


def test_evaluated_arrays_are_consistent(search, X):
    masks, layers = search.evaluated_masks_, search.evaluated_layers_
    hidden = search.evaluated_hidden_layer_sizes_
    n_params, scores = search.evaluated_n_parameters_, search.evaluated_scores_
    n = len(masks)
    assert n > 0
    assert masks.dtype == bool and masks.shape == (n, TINY["n_layers"], X.shape[1])
    assert layers.dtype == bool and layers.shape == (n, TINY["n_layers"])
    assert hidden.shape == (n, len(TINY["hidden_layer_sizes"]))
    assert n_params.shape == (n,) and scores.shape == (n,)
    widths = search.width_choices
    choices = [hidden_sizes(TINY["hidden_layer_sizes"], widths, w) for w in range(len(widths))]
    keys = set()
    for m, active, sizes, count in zip(masks, layers, hidden, n_params):
        # Each genome has one of the widths, and its parameter count is the one of its active layers.
        assert tuple(sizes) in choices
        assert count == hand_count(m[active], tuple(sizes), n_params=search.flow_.bijection.n_params)
        genome = Genome(m, active, choices.index(tuple(sizes)))
        assert is_valid(genome)
        keys.add(genome.key())
    # No genome was trained twice (nothing failed transiently here).
    assert len(keys) == n


def test_initial_population_starts_with_alternating_masks(search, X):
    alternating = alternating_masks(TINY["n_layers"], X.shape[1])
    assert np.array_equal(search.evaluated_masks_[0], alternating)
    assert search.evaluated_layers_[0].all()
    assert search.evaluated_n_parameters_[0] == hand_count(alternating, TINY["hidden_layer_sizes"],
                                                           n_params=search.flow_.bijection.n_params)


def test_fitness_budget(search):
    assert isinstance(search.fitness_steps_, int) and search.fitness_steps_ >= 1


def _check_race(est, X):
    race = est.race_
    assert all(set(record) == RACE_KEYS for record in race)
    names = [r["entry"] for r in race]
    # The incumbents first (the alternating masks at their head), then the finalists.
    n_incumbents = sum(not name.startswith("finalist") for name in names)
    assert names[0] == "alternating" and len(set(names)) == len(names)
    assert names[n_incumbents:] == [f"finalist {i + 1}" for i in range(len(race) - n_incumbents)]
    assert len(race) - n_incumbents <= est.n_finalists
    assert sum(r["chosen"] for r in race) == 1
    alternating = race[0]
    assert alternating["n_layers"] == est.n_layers
    assert alternating["difference"] == 0.0 and alternating["standard_error"] == 0.0
    for r in race:
        # difference is the paired mean difference to the alternating masks.
        assert r["score"] - alternating["score"] == pytest.approx(r["difference"], abs=1e-9)
        assert r["standard_error"] >= 0
    # The fitted search is the chosen record.
    chosen = _chosen(est)
    assert est.masks_.shape == (chosen["n_layers"], X.shape[1])
    assert est.flow_.n_layers == est.masks_.shape[0]
    assert est.hidden_layer_sizes_ == tuple(chosen["hidden_layer_sizes"])
    assert est.n_parameters_ == chosen["n_parameters"]
    assert est.n_parameters_ == hand_count(est.masks_, est.hidden_layer_sizes_, est.actnorm,
                                           est.flow_.bijection.n_params)
    assert est.best_score_ == chosen["score"]
    if est.pick == "best":
        # The best of the alternating masks and the challengers that beat them by the margin.
        qualified = [r for r in race if r is alternating
                     or r["difference"] > est.race_margin * r["standard_error"]]
        assert chosen["difference"] == max(r["difference"] for r in qualified)
        assert any(r is chosen for r in qualified)
    return chosen


def test_race_records_match_the_fitted_search(search, X):
    _check_race(search, X)
    assert search.race_[0]["hidden_layer_sizes"] == TINY["hidden_layer_sizes"]
    assert search.race_[0]["n_parameters"] == hand_count(
        alternating_masks(TINY["n_layers"], X.shape[1]), TINY["hidden_layer_sizes"],
        n_params=search.flow_.bijection.n_params)


def test_pick_smallest_never_picks_a_larger_model(X):
    for random_state in (1, 4):
        best = tiny(random_state=random_state, race_margin=1.0).fit(X)
        smallest = tiny(random_state=random_state, race_margin=1.0, pick="smallest").fit(X)
        _check_race(best, X)
        _check_race(smallest, X)
        # The pick rule changes nothing but the pick (and so the one member, of a single flow).
        picked = ("chosen", "n_members")
        assert [{k: v for k, v in r.items() if k not in picked} for r in best.race_] == \
            [{k: v for k, v in r.items() if k not in picked} for r in smallest.race_]
        assert [r["n_members"] for r in smallest.race_] == [int(r["chosen"]) for r in smallest.race_]
        assert smallest.n_parameters_ <= best.n_parameters_
        if _chosen(smallest)["entry"] == _chosen(best)["entry"]:
            np.testing.assert_array_equal(smallest.score_samples(X), best.score_samples(X))



class _Sized:
    """A stand-in genome for the race: only its size matters there."""

    def __init__(self, n_parameters):
        self.size, self.n_active, self.width = n_parameters, 1, 0


class _SizeTrainer:
    config = StructureSearchFlow()._training_config()
    width_choices = (1.0,)

    def n_parameters(self, genome):
        return genome.size


@pytest.mark.parametrize(
    "pick, margin, expected",
    [
        ("best", 2.0, 1),       # entry 1 wins by ~10 standard errors, entry 2 by ~1
        ("best", 50.0, 0),      # nobody clears the margin: the alternating masks stay
        ("smallest", 2.0, 2),   # entry 2 is within one standard error of entry 1, and smaller
        ("smallest", 50.0, 3),  # entry 3 ties the alternating masks and is the smallest
    ],
)
def test_race_pick_rules(pick, margin, expected):
    rng = np.random.default_rng(0)
    base = rng.normal(size=400)
    noise = lambda: 0.1 * rng.normal(size=400)  # noqa: E731
    per_entry = np.stack([base, base + 0.05 + noise(), base + 0.049 + noise(), base + noise()])
    rows = per_entry[None]  # one race seed
    entries = [_Sized(100), _Sized(100), _Sized(50), _Sized(10)]
    est = StructureSearchFlow(pick=pick, race_margin=margin)
    ranked = est._race(entries, rows, np.zeros(4, dtype=bool), np.zeros(4), 0.0,
                       ["alternating", "a", "b", "c"], _SizeTrainer())
    assert ranked[0] is entries[expected]
    assert [r["chosen"] for r in est.race_] == [i == expected for i in range(4)]
    assert [r["n_members"] for r in est.race_] == [i == expected for i in range(4)]
    # Then the others by race score (an ensemble's members, in turn).
    rest = [r["score"] for r, g in zip(est.race_, entries) if g is not entries[expected]]
    assert len(ranked) == 4
    assert [est.race_[entries.index(g)]["score"] for g in ranked[1:]] == sorted(rest, reverse=True)
    assert est.best_score_ == pytest.approx(per_entry[expected].mean())


# --- the exactness property ----------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(n_layers=2, hidden_layer_sizes=(4, 4), whiten=False, validation_fraction=0.25,
             learning_rate=3e-3, weight_decay=1e-4, n_iter_no_change=2, batch_size=16, random_state=3),
    ],
    ids=["defaults", "other-settings"],
)
def test_alternating_winner_is_exactly_coupling_flow(X, settings):
    # race_margin=1e9: no challenger can qualify, so the alternating masks win.
    search = tiny(**settings, race_margin=1e9, pick="best").fit(X)
    params = search.get_params()
    assert _chosen(search)["entry"] == "alternating"
    shared = ("n_layers", "hidden_layer_sizes", "whiten", "n_components", "max_epochs", "batch_size",
              "learning_rate", "weight_decay", "validation_fraction", "n_iter_no_change", "random_state")
    flow = CouplingFlow(masks="alternating", **{k: params[k] for k in shared}).fit(X)
    np.testing.assert_array_equal(search.masks_, flow.masks_)
    assert search.hidden_layer_sizes_ == flow.hidden_layer_sizes_ == tuple(params["hidden_layer_sizes"])
    np.testing.assert_allclose(search.mean_, flow.mean_, rtol=1e-12)
    np.testing.assert_allclose(search.input_matrix_, flow.input_matrix_, rtol=1e-12)
    assert search.n_epochs_ == flow.n_epochs_ and search.best_epoch_ == flow.best_epoch_
    np.testing.assert_allclose(search.validation_scores_, flow.validation_scores_, rtol=1e-9)
    np.testing.assert_allclose(search.score_samples(X), flow.score_samples(X), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(search.sample(20, random_state=0), flow.sample(20, random_state=0),
                               rtol=1e-9, atol=1e-9)
    assert search.n_parameters_ == flow.n_parameters_


def test_challenger_winner_differs_from_coupling_flow(X):
    # The converse: with race_margin=0 a challenger that is better on the
    # selection rows replaces the alternating masks (random_state=2: measured;
    # its final training leaves the untrained start, which all flows share).
    search = tiny(race_margin=0.0, random_state=2).fit(X)
    chosen = _chosen(search)
    assert chosen["entry"] != "alternating" and chosen["difference"] > 0
    assert search.best_epoch_ > 0
    flow = CouplingFlow(**{k: TINY[k] for k in ("n_layers", "hidden_layer_sizes", "max_epochs",
                                                  "batch_size")}, random_state=2).fit(X)
    assert not np.allclose(search.score_samples(X), flow.score_samples(X))


def test_unsorted_width_choices_keep_the_incumbent_at_full_width(X):
    search = tiny(width_choices=(1.0, 0.5), race_margin=1e9).fit(X)
    assert search.race_[0]["hidden_layer_sizes"] == TINY["hidden_layer_sizes"]
    assert search.hidden_layer_sizes_ == TINY["hidden_layer_sizes"]


# --- the final flow ------------------------------------------------------------------


def test_normalizer_is_fitted_on_the_training_rows(search, X):
    validation = _validation_rows(len(X), search.validation_fraction, TINY["random_state"])
    train = np.setdiff1d(np.arange(len(X)), validation)
    # The final flow starts from the chosen start or from the Gaussian one.
    candidates = choose_start(X[train], X[validation], whiten=search.whiten)
    normalizer, = (n for start, n, _ in candidates
                   if (start.normalization, start.df) == (search.normalization_, search.base_df_))
    # (to rounding: the rows come in another order)
    np.testing.assert_allclose(search.mean_, normalizer.mean, rtol=1e-12)
    np.testing.assert_allclose(search.input_matrix_, normalizer.matrix, rtol=1e-10, atol=1e-12)
    other = fit_normalizer(X, whiten=search.whiten_, robust=search.normalization_ == "robust")
    assert not np.allclose(search.mean_, other.mean, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "settings",
    [(dict(size_penalty=1.0), {(2,), (4,), (8,)}),
     (dict(width_choices=(0.5,), size_penalty=1.0), {(4,), (8,)})],
    ids=["smaller-winner", "half-width-choice"],
)
def test_final_flow_is_built_at_its_real_size(X, settings):
    settings, widths = settings
    # Affine: the gradient count below then reaches every live output weight
    # (a spline's knot derivatives only get rows that fall in their bins).
    est = tiny(**settings, coupling="affine").fit(X)
    chosen = _check_race(est, X)
    # One nat per parameter: a smaller challenger wins by a wide margin.
    assert chosen["n_parameters"] < est.race_[0]["n_parameters"]
    assert est.hidden_layer_sizes_ in widths
    flow = est.flow_
    n_layers, n_features = est.masks_.shape
    assert flow.n_members == 1 and flow.n_layers == n_layers
    sizes = (n_features, *est.hidden_layer_sizes_, est.flow_.bijection.n_params * n_features)
    assert [tuple(w.shape) for w in flow.weights] == [
        (1, n_layers, a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    assert [tuple(b.shape) for b in flow.biases] == [(1, n_layers, 1, b) for b in sizes[1:]]
    np.testing.assert_array_equal(flow.masks[0].numpy().astype(bool), est.masks_)
    # Every parameter counted by n_parameters_ is live, and no other.
    module = copy.deepcopy(flow)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, dtype=parameter.dtype,
                                             generator=torch.Generator().manual_seed(0)))
    module.zero_grad()
    module.log_prob(torch.from_numpy(est._flow_input(X[:50], 0.0))).sum().backward()
    assert sum(int((p.grad != 0).sum()) for p in module.parameters()) == est.n_parameters_


def test_final_flow_attributes(search, X):
    assert search.n_features_in_ == X.shape[1]
    assert search.n_epochs_ <= TINY["max_epochs"]
    assert np.isfinite(search.best_validation_score_)
    scores = search.score_samples(X)
    assert scores.shape == (len(X),) and np.isfinite(scores).all()
    assert search.score(X) == pytest.approx(scores.mean())
    assert search.sample(7, random_state=0).shape == (7, X.shape[1])


def test_size_penalty_is_subtracted_per_parameter(search, X):
    penalty = 1e-3
    penalised = tiny(size_penalty=penalty, n_generations=0).fit(X)
    n0 = search.search_history_[0]["n_evaluations"]
    assert penalised.search_history_[0]["n_evaluations"] == n0
    # Same candidates and trainings in generation 0: the penalty does not change the draws.
    np.testing.assert_array_equal(penalised.evaluated_masks_, search.evaluated_masks_[:n0])
    np.testing.assert_allclose(
        penalised.evaluated_scores_,
        search.evaluated_scores_[:n0] - penalty * search.evaluated_n_parameters_[:n0], rtol=1e-12)
    # The alternating masks race with the same penalty.
    for a, b in zip(penalised.race_[:1], search.race_[:1]):
        assert a["score"] == pytest.approx(b["score"] - penalty * b["n_parameters"], rel=1e-12)


# --- failures during the search ------------------------------------------------------


def test_diverging_candidates_do_not_crash_the_search(X, monkeypatch):
    def diverge(result, kwargs):
        if _in_evolution(kwargs):
            result.diverged[:] = True

    monkeypatch.setattr(search_module, "fit_flows", _mutable_fit_flows(diverge))
    est = tiny(n_jobs=1).fit(X)  # n_jobs=1: the patch is seen in-process
    assert np.all(est.evaluated_scores_ == -np.inf)
    assert [r["n_failed"] for r in est.search_history_] == [r["n_evaluations"] for r in est.search_history_]
    # No finalist with a finite fitness: the incumbents race alone.
    assert not any(r["entry"].startswith("finalist") for r in est.race_)
    _check_race(est, X)
    assert np.isfinite(est.best_score_) and np.isfinite(est.score_samples(X)).all()


def test_every_run_diverging_raises_and_leaves_no_fitted_state(X, monkeypatch):
    def diverge(result, kwargs):
        result.diverged[:] = True

    monkeypatch.setattr(search_module, "fit_flows", _mutable_fit_flows(diverge))
    est = tiny(n_jobs=1)
    with pytest.raises(ValueError, match=r"every run of the search diverged \(NaN or inf loss or "
                                         r"validation score\) or failed\. Try"):
        est.fit(X)
    fitted = [k for k in vars(est) if k.endswith("_") and not k.startswith("__")]
    assert fitted == []


def _evolution_out_of_memory(monkeypatch):
    def fit_or_oom(masks, *args, **kwargs):
        if _in_evolution(kwargs):
            raise MemoryError("out of memory (simulated)")
        return fit_flows(masks, *args, **kwargs)

    monkeypatch.setattr(search_module, "fit_flows", fit_or_oom)


def test_out_of_memory_candidates_warn_and_the_incumbents_race(X, monkeypatch):
    _evolution_out_of_memory(monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"could not be trained.*simulated"):
        est = tiny(n_jobs=1).fit(X)
    assert not np.isfinite(est.evaluated_scores_).any()
    assert not any(r["entry"].startswith("finalist") for r in est.race_)
    assert np.isfinite(est.score_samples(X)).all()


def test_out_of_memory_candidates_score_nan(X, monkeypatch):
    _evolution_out_of_memory(monkeypatch)
    with pytest.warns(RuntimeWarning, match="simulated"):
        est = tiny(n_jobs=1).fit(X)
    assert np.isnan(est.evaluated_scores_).all()


@pytest.mark.parametrize("n_jobs, error", [(0, ValueError), (2.5, TypeError), ("two", TypeError)])
def test_bad_n_jobs_raises_before_training(X, n_jobs, error, monkeypatch):
    # Not taken for a lost worker and retried: checked with the other parameters.
    monkeypatch.setattr(search_module, "fit_flows", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(error, match="n_jobs"):
        tiny(n_jobs=n_jobs).fit(X)


# --- stopping -------------------------------------------------------------------------


def test_patience_stops_when_best_stalls(X, monkeypatch):
    # Every candidate gets the same fitness: the best never strictly improves.
    def constant(result, kwargs):
        if _in_evolution(kwargs):
            result.selection_log_prob[:] = 0.0

    monkeypatch.setattr(search_module, "fit_flows", _mutable_fit_flows(constant))
    est = tiny(n_generations=6, patience=2, n_jobs=1).fit(X)
    assert est.n_generations_ == 2
    assert len(est.search_history_) == 3
    assert len({r["best"] for r in est.search_history_}) == 1


def test_patience_rule_on_real_fitness(X):
    patience = 1
    est = tiny(n_generations=3, patience=patience).fit(X)
    best = [r["best"] for r in est.search_history_]
    stall = 0
    for i in range(1, len(best)):
        stall = stall + 1 if best[i] <= best[i - 1] else 0
        if i < len(best) - 1:
            assert stall < patience  # it did not stop too late
    if est.n_generations_ < 3:
        assert stall >= patience  # it stopped for a reason


def test_max_time_zero_stops_after_first_generation(X):
    est = tiny(n_generations=3, max_time=0).fit(X)
    assert est.n_generations_ == 0
    assert len(est.search_history_) == 1
    assert np.isfinite(est.score_samples(X)).all()


def test_callback_receives_records_and_can_stop(X):
    seen = []

    def callback(record, population, fitness):
        seen.append((dict(record), list(population), np.array(fitness)))
        return record["generation"] == 1

    est = tiny(n_generations=3, callback=callback).fit(X)
    assert est.n_generations_ == 1
    assert len(seen) == 2
    assert [r for r, _, _ in seen] == est.search_history_
    for record, population, fitness in seen:
        assert 1 <= len(population) == len(fitness) <= TINY["population_size"]
        assert all(isinstance(g, Genome) and is_valid(g) for g in population)
        assert np.all(np.diff(fitness) <= 0) and fitness[0] == record["best"]
    # The final population's genomes are among the evaluated ones, with their fitness.
    recorded = {}
    for m, active, score in zip(est.evaluated_masks_, est.evaluated_layers_, est.evaluated_scores_):
        recorded.setdefault((m[active].tobytes(), active.tobytes()), []).append(score)
    _, population, fitness = seen[-1]
    for genome, value in zip(population, fitness):
        assert value in recorded[(genome.real_masks().tobytes(), genome.active.tobytes())]


def test_callback_returning_false_and_generous_max_time_do_not_stop(X):
    count = []
    est = tiny(n_generations=2, max_time=3600.0, callback=lambda *args: count.append(1)).fit(X)
    assert est.n_generations_ == 2 and len(count) == 3


# --- verbosity ------------------------------------------------------------------------


def test_verbose_progress_output(X, capfd):
    tiny(verbose=0).fit(X)
    out, err = capfd.readouterr()
    assert out == "" and err == ""

    pytest.importorskip("tqdm")
    tiny(verbose=1).fit(X)
    out, err = capfd.readouterr()
    assert "structure search" in err  # the tqdm bar
    assert "] epoch" not in out  # epoch lines only from verbose=2


def test_verbose_without_tqdm_prints_lines(X, capfd, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import raises ImportError
    est = tiny(verbose=2).fit(X)
    out, _ = capfd.readouterr()
    lines = out.splitlines()
    generation_lines = [line for line in lines if line.startswith("[StructureSearchFlow] generation")]
    assert len(generation_lines) == TINY["n_generations"] + 1
    # The final training's epochs: one block per start it trains from (the
    # chosen whitened one, the whitened Gaussian one when that differs, and
    # the best one without whitening).
    starts = [i for i, line in enumerate(lines) if line.startswith("[StructureSearchFlow] training from")]
    assert 2 <= len(starts) <= 3  # whitened (chosen, Gaussian) and not whitened
    blocks = [lines[i:j] for i, j in zip(starts, [*starts[1:], len(lines)])]
    epochs = [sum(line.startswith("[StructureSearchFlow] epoch") for line in block) for block in blocks]
    assert est.n_epochs_ in epochs and est.n_epochs_ > 0


# --- composition ----------------------------------------------------------------------


def test_grid_search_cv(X):
    grid = GridSearchCV(
        tiny(max_epochs=3),
        {"n_generations": [0, 1], "pick": ["best", "smallest"]},
        cv=2,
    ).fit(X)
    assert np.isfinite(grid.best_score_)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert grid.best_params_["n_generations"] in (0, 1)
    assert np.isfinite(grid.score(X))
    assert grid.best_estimator_.pick == grid.best_params_["pick"]


def test_pipeline_with_scaler(X):
    pipe = make_pipeline(StandardScaler(), tiny()).fit(X)
    scores = pipe.score_samples(X)
    assert scores.shape == (len(X),) and np.isfinite(scores).all()
    assert np.isfinite(pipe.score(X))
    assert pipe[-1].masks_.shape == (_chosen(pipe[-1])["n_layers"], X.shape[1])


# --- on a real dataset ------------------------------------------------------------------


@pytest.mark.parametrize("random_state", [2, 3])
def test_search_against_alternating_masks_on_breast_cancer(random_state):
    """On a real table, the search ends with CouplingFlow's model, or with a challenger that
    beat it on the race rows by the margin.

    Whether a challenger then also wins on the test rows is a question for the
    paired, many-split benchmark (``benchmarks/bench_search.py``), not for a
    unit test at one seed.
    """
    X = load_dataset("breast_cancer")
    X_train, X_test = train_test_split(X, test_size=0.25, random_state=0)
    common = dict(n_layers=4, hidden_layer_sizes=(16,), max_epochs=20, random_state=random_state)
    searched = StructureSearchFlow(**common, n_generations=1, population_size=4,
                                   n_offspring=4, race_margin=1.0).fit(X_train)
    baseline = CouplingFlow(masks="alternating", **common).fit(X_train)
    chosen = _check_race(searched, X_train)
    if chosen["entry"] == "alternating":
        np.testing.assert_allclose(searched.score_samples(X_test), baseline.score_samples(X_test),
                                   rtol=1e-9, atol=1e-9)
    else:
        assert chosen["difference"] > searched.race_margin * chosen["standard_error"]
        assert not np.allclose(searched.score_samples(X_test), baseline.score_samples(X_test))


def test_one_race_row_cannot_clear_the_margin():
    from skflowsearch._search_flow import _paired

    per_row = np.array([[0.0], [5.0]])
    difference, error = _paired(per_row, per_row[0])
    assert difference[1] == 5.0 and np.isinf(error[1])


def _rows(*arrays):
    return {tuple(row) for a in arrays for row in np.round(a, 12)}


@pytest.mark.parametrize("n_race_folds", [1, 3])
def test_race_is_judged_on_rows_that_did_not_rank_the_finalists(X, n_race_folds, monkeypatch):
    calls = []
    real = search_module.CandidateTrainer.cross_fit

    def spy(self, genomes, folds, **kwargs):
        calls.append((self.Z_train, folds))
        return real(self, genomes, folds, **kwargs)

    monkeypatch.setattr(search_module.CandidateTrainer, "cross_fit", spy)
    search = tiny(n_race_folds=n_race_folds, n_race_seeds=2, n_finalists=1).fit(X)
    fitness = [folds[0] for _, folds in calls if folds[0][2] != calls[0][1][0][2]]
    races = [(Z_fit, folds) for Z_fit, folds in calls if folds[0][2] == calls[0][1][0][2]]
    assert fitness and len(races) == 2  # the incumbent's race runs, then the finalist's
    rank = _rows(fitness[0][1])
    assert all(_rows(Z_select) == rank for _, Z_select, _ in fitness)  # the evolution ranks on them
    (Z_fit, folds), (_, finalist_folds) = races
    assert [f[1].tolist() for f in finalist_folds] == [f[1].tolist() for f in folds]  # paired
    assert len(folds) == n_race_folds
    assert all(len(seeds) == 2 for _, _, seeds in folds)
    judged = [_rows(Z_score) for _, Z_score, _ in folds]
    assert not any(rows & rank for rows in judged)
    assert sum(map(len, judged)) == len(set().union(*judged))  # each judged row once
    if n_race_folds == 1:
        (Z_train, _, _), = folds
        assert _rows(Z_train) == _rows(Z_fit)  # the candidates' own training rows
        assert not judged[0] & _rows(Z_fit)  # and the race rows apart
    else:
        # The folds cut the candidates' training rows and the race rows: each
        # fold trains on all the others, the ranking rows included.
        everything = _rows(folds[0][0]) | judged[0]
        assert set().union(*judged) == everything - rank
        assert _rows(Z_fit) < everything - rank
        for (Z_train, _, _), rows in zip(folds, judged):
            assert _rows(Z_train) == everything - rows
    assert search.race_[0]["entry"] == "alternating"
