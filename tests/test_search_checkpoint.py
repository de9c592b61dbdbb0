"""StructureSearchFlow(checkpoint=...): resume, mismatch and interruption."""

import os

import joblib
import numpy as np
import pytest
import torch

import skflowsearch
import skflowsearch._base as base_module
from skflowsearch import StructureSearchFlow
from skflowsearch._evolution import SearchState
from skflowsearch._search import CandidateTrainer, Trained


def _tiny(**params):
    defaults = dict(n_layers=3, hidden_layer_sizes=(8,), population_size=3, n_offspring=3,
                    n_generations=4, max_epochs=5, batch_size=16, learning_rate=1e-2,
                    patience=None, random_state=0)
    defaults.update(params)
    return StructureSearchFlow(**defaults)


@pytest.fixture(scope="module")
def X():
    rng = np.random.RandomState(0)
    return rng.standard_normal((80, 4)) @ rng.standard_normal((4, 4))


@pytest.fixture(scope="module")
def uninterrupted(X):
    return _tiny().fit(X)


@pytest.fixture
def train_calls(monkeypatch):
    """Every training call of the test (``CandidateTrainer.cross_fit``, which ``train`` calls):
    (n_genomes, n_folds, has a step budget)."""
    calls = []
    original = CandidateTrainer.cross_fit

    def cross_fit(self, genomes, folds, *args, budget=None, **kwargs):
        calls.append((len(genomes), len(folds), bool(budget)))
        return original(self, genomes, folds, *args, budget=budget, **kwargs)

    monkeypatch.setattr(CandidateTrainer, "cross_fit", cross_fit)
    return calls


class _Stop(Exception):
    pass


def _stop_at(generation):
    def callback(record, population, fitness):
        if record["generation"] == generation:
            raise _Stop
    return callback


@pytest.mark.parametrize("stop_at", [0, 2])
def test_interrupted_search_resumes_to_the_uninterrupted_result(X, uninterrupted, tmp_path,
                                                                stop_at, train_calls):
    path = tmp_path / "search.ckpt"
    search = _tiny(checkpoint=path, callback=_stop_at(stop_at))
    with pytest.raises(_Stop):
        search.fit(X)
    # Interrupted: nothing half-fitted is left behind, the checkpoint is intact.
    assert not hasattr(search, "mean_") and not hasattr(search, "masks_")
    saved = joblib.load(path)
    assert saved["format"] == 2
    state = saved["state"]
    assert set(state) == {"incumbents", "evolution"}
    assert isinstance(state["incumbents"], Trained)
    # The callback runs before the checkpoint of its generation is written; the
    # incumbent's runs are saved before generation 0.
    if stop_at == 0:
        assert state["evolution"] is None
    else:
        assert isinstance(state["evolution"], SearchState)
        assert state["evolution"].generation == stop_at - 1
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))

    del train_calls[:]
    resumed = search.set_params(callback=None).fit(X)
    # The incumbent is not trained again: every full-budget run is the race's.
    assert sum(not budgeted for _, _, budgeted in train_calls) == 1
    np.testing.assert_array_equal(resumed.masks_, uninterrupted.masks_)
    assert resumed.hidden_layer_sizes_ == uninterrupted.hidden_layer_sizes_
    np.testing.assert_array_equal(resumed.evaluated_masks_, uninterrupted.evaluated_masks_)
    np.testing.assert_array_equal(resumed.evaluated_layers_, uninterrupted.evaluated_layers_)
    np.testing.assert_array_equal(resumed.evaluated_scores_, uninterrupted.evaluated_scores_)
    assert [r["best"] for r in resumed.search_history_] == [
        r["best"] for r in uninterrupted.search_history_
    ]
    assert resumed.fitness_steps_ == uninterrupted.fitness_steps_
    assert resumed.race_ == uninterrupted.race_
    np.testing.assert_array_equal(resumed.score_samples(X), uninterrupted.score_samples(X))


def test_a_finished_checkpoint_is_reused_without_new_evaluations(X, tmp_path, train_calls):
    path = tmp_path / "search.ckpt"
    first = _tiny(checkpoint=path).fit(X)
    assert any(budgeted for _, _, budgeted in train_calls)  # the evolution trained candidates
    mtime = os.path.getmtime(path)
    del train_calls[:]
    second = _tiny(checkpoint=path).fit(X)
    assert os.path.getmtime(path) == mtime  # no generation was run again
    assert not any(budgeted for _, _, budgeted in train_calls)  # no fitness run
    assert len(train_calls) <= 1  # at most the finalists' race
    np.testing.assert_array_equal(first.masks_, second.masks_)
    np.testing.assert_array_equal(first.evaluated_scores_, second.evaluated_scores_)
    assert first.race_ == second.race_


def test_checkpoint_of_another_search_is_rejected(X, tmp_path):
    path = tmp_path / "search.ckpt"
    _tiny(checkpoint=path, n_generations=1).fit(X)
    with pytest.raises(ValueError, match="other data, parameters or random_state"):
        _tiny(checkpoint=path, n_generations=1, mutation_rate=0.3).fit(X)
    with pytest.raises(ValueError, match="other data"):
        _tiny(checkpoint=path, n_generations=1, width_choices=(0.5, 1.0)).fit(X)
    with pytest.raises(ValueError, match="other data"):
        _tiny(checkpoint=path, n_generations=1).fit(X + 1.0)
    with pytest.raises(ValueError, match="other data"):
        _tiny(checkpoint=path, n_generations=1, random_state=1).fit(X)


def test_checkpoint_of_another_device_is_rejected(X, tmp_path):
    path = tmp_path / "search.ckpt"
    _tiny(checkpoint=path, n_generations=1).fit(X)
    with pytest.raises(ValueError, match="other data, parameters or random_state"):
        _tiny(checkpoint=path, n_generations=1, device=["cpu", "cpu"]).fit(X)


def test_checkpoint_of_another_package_version_is_rejected(X, tmp_path, monkeypatch):
    path = tmp_path / "search.ckpt"
    _tiny(checkpoint=path, n_generations=1).fit(X)
    monkeypatch.setattr(skflowsearch, "__version__", skflowsearch.__version__ + ".post1")
    with pytest.raises(ValueError, match="other data, parameters or random_state"):
        _tiny(checkpoint=path, n_generations=1).fit(X)


def test_fingerprint_covers_device_and_version_not_run_settings(monkeypatch):
    data = (np.arange(6.0).reshape(3, 2), 7)
    reference = _tiny()._search_fingerprint(*data)
    assert _tiny()._search_fingerprint(*data) == reference
    for params in (dict(device=["cpu"]), dict(device="auto"), dict(n_generations=5)):
        assert _tiny(**params)._search_fingerprint(*data) != reference, params
    # Settings that do not change the result of a resumed search.
    for params in (dict(n_jobs=2), dict(verbose=1), dict(max_time=10.0),
                   dict(callback=print), dict(checkpoint="elsewhere.ckpt")):
        assert _tiny(**params)._search_fingerprint(*data) == reference, params
    # The race's settings and the ensemble size: only the race and the final training run again.
    for params in (dict(pick="smallest"), dict(race_margin=0.5), dict(n_finalists=1), dict(n_estimators=3)):
        assert _tiny(**params)._search_fingerprint(*data) == reference, params
    monkeypatch.setattr(skflowsearch, "__version__", "999")
    assert _tiny()._search_fingerprint(*data) != reference


def test_resuming_with_run_settings_changed_is_allowed(X, tmp_path):
    path = tmp_path / "search.ckpt"
    first = _tiny(checkpoint=path, n_generations=1).fit(X)
    second = _tiny(checkpoint=path, n_generations=1, max_time=1e6, verbose=0,
                   callback=lambda *args: False).fit(X)
    np.testing.assert_array_equal(first.score_samples(X), second.score_samples(X))


def test_checkpoint_written_on_another_resolved_device_is_rejected(X, tmp_path, monkeypatch):
    path = tmp_path / "search.ckpt"
    _tiny(checkpoint=path, n_generations=1, device="auto").fit(X)
    # Simulate "auto" resolving to another device on another machine.
    monkeypatch.setattr(base_module, "resolve_devices", lambda device: [torch.device("cpu:0")])
    with pytest.raises(ValueError, match="other data, parameters or random_state"):
        _tiny(checkpoint=path, n_generations=1, device="auto").fit(X)


@pytest.mark.parametrize("checkpoint, message", [
    ("", "checkpoint must be None or a file path"),
    (123, "'checkpoint' parameter of StructureSearchFlow must be an instance of 'str'"),
    (b"bytes.ckpt", "'checkpoint' parameter of StructureSearchFlow must be an instance of 'str'"),
])
def test_bad_checkpoint_parameter_raises_in_fit(X, checkpoint, message):
    search = _tiny(checkpoint=checkpoint, callback=_stop_at(0))
    with pytest.raises(ValueError, match=message):
        search.fit(X)


def test_a_file_that_is_not_a_checkpoint_is_rejected(X, tmp_path):
    path = tmp_path / "other.joblib"
    joblib.dump([1, 2, 3], path)
    with pytest.raises(ValueError, match="not a StructureSearchFlow checkpoint"):
        _tiny(checkpoint=path).fit(X)


def test_a_checkpoint_of_the_old_format_is_rejected(X, tmp_path):
    path = tmp_path / "old.ckpt"
    joblib.dump({"format": 1, "fingerprint": "x", "state": None}, path)
    with pytest.raises(ValueError, match="not a StructureSearchFlow checkpoint"):
        _tiny(checkpoint=path, n_generations=1).fit(X)


def test_keyboard_interrupt_leaves_an_unfitted_estimator(X, tmp_path):
    def interrupt(record, population, fitness):
        raise KeyboardInterrupt

    search = _tiny(checkpoint=tmp_path / "c.ckpt", callback=interrupt)
    with pytest.raises(KeyboardInterrupt):
        search.fit(X)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        search.score_samples(X)


@pytest.mark.parametrize("content", [b"xx", b"", joblib.hash(1).encode()])
def test_unreadable_checkpoint_raises_value_error(X, tmp_path, content):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="is not a StructureSearchFlow checkpoint"):
        _tiny(n_generations=1, checkpoint=path).fit(X)


def test_checkpoint_in_a_missing_directory_raises_before_training(X, tmp_path):
    search = _tiny(checkpoint=tmp_path / "missing" / "search.ckpt",
                   callback=_stop_at(0))  # would stop after generation 0 had trained
    with pytest.raises(ValueError, match="does not exist"):
        search.fit(X)
