"""Ensembles of flows (n_estimators): the mixture of members, trained as one stack."""

import pickle

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from skflowsearch import CouplingFlow, FlowOutlierDetector, StructureSearchFlow
from skflowsearch.cli import main

SMALL = dict(n_layers=2, hidden_layer_sizes=(8,), max_epochs=4, n_iter_no_change=4, n_components=1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    return np.column_stack([x, x**2 + 0.3 * rng.normal(size=400), rng.normal(size=400)])


@pytest.fixture(scope="module")
def ensemble(data):
    return CouplingFlow(**SMALL, n_estimators=3, random_state=0).fit(data)


def test_the_ensemble_is_the_mean_of_its_members_densities(data, ensemble):
    assert ensemble.n_estimators_ == 3 and ensemble.flow_.n_members == 3
    Z = torch.from_numpy(ensemble._normalize(data))
    with torch.no_grad():
        members = ensemble.flow_.log_prob(Z).numpy() + ensemble.input_log_det_
    expected = logsumexp(members, axis=0) - np.log(3)
    np.testing.assert_allclose(ensemble.score_samples(data), expected, rtol=1e-12)
    # the members differ (different initial weights), so the mixture is not one of them
    assert np.abs(members[0] - members[1]).max() > 1e-3
    assert ensemble.n_parameters_ == 3 * CouplingFlow(**SMALL, random_state=0).fit(data).n_parameters_


def test_one_member_is_the_single_flow_exactly(data):
    single = CouplingFlow(**SMALL, random_state=0).fit(data)
    again = CouplingFlow(**SMALL, n_estimators=1, random_state=0).fit(data)
    np.testing.assert_array_equal(single.score_samples(data), again.score_samples(data))
    assert single.n_estimators_ == 1


def test_the_first_member_is_the_single_flow(data):
    # Member 0 starts from the single flow's seed and sees the same minibatches
    # (one fixed start, so both train once from it).
    fixed = dict(SMALL, whiten=True, normalization="standard", base_distribution="normal")
    single = CouplingFlow(**fixed, random_state=0).fit(data)
    ensemble = CouplingFlow(**fixed, n_estimators=3, random_state=0).fit(data)
    Z = torch.from_numpy(single._normalize(data))
    with torch.no_grad():
        first = ensemble.flow_.log_prob(Z)[0].numpy() + ensemble.input_log_det_
    np.testing.assert_allclose(first, single.score_samples(data), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ensemble.validation_scores_, single.validation_scores_, rtol=1e-5)


def test_samples_come_from_the_members(data, ensemble):
    samples = ensemble.sample(2000, random_state=0)
    np.testing.assert_array_equal(samples, ensemble.sample(2000, random_state=0))
    assert samples.shape == (2000, 3) and np.all(np.isfinite(samples))
    # the samples score like the data under the ensemble
    assert abs(ensemble.score(samples) - ensemble.score(data)) < 0.5


def test_transform_needs_one_flow(data, ensemble):
    with pytest.raises(ValueError, match="n_estimators=1"):
        ensemble.transform(data[:3])
    with pytest.raises(ValueError, match="n_estimators=1"):
        ensemble.inverse_transform(data[:3])


def test_pickle_and_outlier_detector(data, ensemble):
    loaded = pickle.loads(pickle.dumps(ensemble))
    np.testing.assert_array_equal(loaded.score_samples(data), ensemble.score_samples(data))
    detector = FlowOutlierDetector(CouplingFlow(**SMALL, n_estimators=2, random_state=0),
                                   contamination=0.05).fit(data)
    far = np.array([[8.0, -5.0, 0.0], [0.0, 40.0, 9.0]])
    assert np.all(detector.predict(far) == -1)


def _members(search):
    """(masks of the active layers, hidden widths, live parameters) of each member of a fitted search."""
    flow = search.flow_
    masks = flow.masks.bool().numpy()
    active = (np.ones(masks.shape[:2], dtype=bool) if flow.layer_gates is None
              else flow.layer_gates.view(flow.n_members, flow.n_layers).numpy() > 0)
    widths = [tuple(search.hidden_layer_sizes_)] * flow.n_members if flow.unit_gates_0 is None else [
        tuple(int(getattr(flow, f"unit_gates_{i}")[m, 0].sum()) for i in range(flow.n_hidden))
        for m in range(flow.n_members)]
    return [(masks[m][active[m]], widths[m], int(n)) for m, n in enumerate(flow.n_live_parameters())]


def test_search_ensemble_holds_the_race_entries(data):
    # A margin nobody clears and three race entries of other sizes: the ensemble
    # is the alternating masks (the pick), then the finalists by race score.
    search = StructureSearchFlow(**SMALL, population_size=4, n_offspring=4, n_generations=1, n_finalists=2,
                                 n_race_seeds=1, race_margin=1e9, width_choices=(0.5, 1.0), n_estimators=4,
                                 random_state=0).fit(data)
    race = search.race_
    assert race[0]["chosen"] and len(race) == 3
    assert search.n_estimators_ == 4 and search.flow_.n_members == 4
    by_score = [0] + sorted(range(1, len(race)), key=lambda i: -race[i]["score"])
    order = [by_score[i % len(by_score)] for i in range(4)]  # in turn: the pick comes again
    assert [r["n_members"] for r in race] == [order.count(i) for i in range(len(race))]
    members = _members(search)
    np.testing.assert_array_equal(members[0][0], search.masks_)
    assert members[0][1] == search.hidden_layer_sizes_
    for (masks, widths, n_live), i in zip(members, order):
        # Each member is its entry, counted at its real depth and width.
        assert masks.shape[0] == race[i]["n_layers"] and widths == tuple(race[i]["hidden_layer_sizes"])
        assert n_live == race[i]["n_parameters"]
    assert len({(m.tobytes(), w) for m, w, _ in members}) > 1  # not one structure repeated
    assert search.n_parameters_ == sum(r["n_parameters"] * r["n_members"] for r in race)
    # Scored as the mean of the members' densities; pickles; samples.
    Z = torch.from_numpy(search._normalize(data))
    with torch.no_grad():
        per_member = search.flow_.log_prob(Z).numpy() + search.input_log_det_
    np.testing.assert_allclose(search.score_samples(data), logsumexp(per_member, axis=0) - np.log(4),
                               rtol=1e-12)
    again = pickle.loads(pickle.dumps(search))
    np.testing.assert_array_equal(again.score_samples(data), search.score_samples(data))
    assert np.isfinite(search.sample(50, random_state=0)).all()


def test_search_ensemble_of_one_structure_is_built_at_its_size(data):
    search = StructureSearchFlow(**SMALL, population_size=2, n_offspring=2, n_generations=1, n_finalists=0,
                                 n_race_seeds=1, n_estimators=2, random_state=0).fit(data)
    assert [r["n_members"] for r in search.race_] == [2]
    assert search.flow_.layer_gates is None and search.flow_.unit_gates_0 is None
    masks = search.flow_.masks.bool().numpy()
    np.testing.assert_array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(masks[0], search.masks_)


def test_same_random_state_same_ensemble(data, ensemble):
    again = CouplingFlow(**SMALL, n_estimators=3, random_state=0).fit(data)
    np.testing.assert_array_equal(again.score_samples(data), ensemble.score_samples(data))


@pytest.mark.parametrize("value", [0, 1.5, True])
def test_bad_n_estimators(data, value):
    with pytest.raises((ValueError, TypeError), match="n_estimators"):
        CouplingFlow(**SMALL, n_estimators=value).fit(data)


def test_cli_n_estimators(capsys):
    assert main(["search", "--n-estimators", "0", "--quiet"]) == 2
    assert "--n-estimators" in capsys.readouterr().err
