"""StructureSearchFlow(checkpoint=...): resume, mismatch and interruption."""

import os

import joblib
import numpy as np
import pytest

from skflowsearch import StructureSearchFlow


def _tiny(**params):
    defaults = dict(n_layers=3, hidden_layer_sizes=(8,), population_size=3, n_offspring=3,
                    n_generations=4, fitness_epochs=3, max_epochs=5, patience=None,
                    random_state=0)
    defaults.update(params)
    return StructureSearchFlow(**defaults)


@pytest.fixture(scope="module")
def X():
    rng = np.random.RandomState(0)
    return rng.standard_normal((80, 4)) @ rng.standard_normal((4, 4))


@pytest.fixture(scope="module")
def uninterrupted(X):
    return _tiny().fit(X)


class _Stop(Exception):
    pass


def _stop_at(generation):
    def callback(record, population, fitness):
        if record["generation"] == generation:
            raise _Stop
    return callback


def test_interrupted_search_resumes_to_the_uninterrupted_result(X, uninterrupted, tmp_path):
    path = tmp_path / "search.ckpt"
    search = _tiny(checkpoint=path, callback=_stop_at(2))
    with pytest.raises(_Stop):
        search.fit(X)
    # Interrupted: nothing half-fitted is left behind, the checkpoint is intact.
    assert not hasattr(search, "mean_") and not hasattr(search, "masks_")
    state = joblib.load(path)["state"]
    # The callback runs before the checkpoint of its generation is written.
    assert state.generation == 1
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))

    resumed = search.set_params(callback=None).fit(X)
    np.testing.assert_array_equal(resumed.masks_, uninterrupted.masks_)
    np.testing.assert_array_equal(resumed.evaluated_scores_, uninterrupted.evaluated_scores_)
    assert [r["best"] for r in resumed.search_history_] == [
        r["best"] for r in uninterrupted.search_history_
    ]
    np.testing.assert_array_equal(resumed.score_samples(X), uninterrupted.score_samples(X))


def test_a_finished_checkpoint_is_reused_without_new_evaluations(X, tmp_path):
    path = tmp_path / "search.ckpt"
    first = _tiny(checkpoint=path).fit(X)
    mtime = os.path.getmtime(path)
    second = _tiny(checkpoint=path).fit(X)
    assert os.path.getmtime(path) == mtime  # no generation was run again
    np.testing.assert_array_equal(first.masks_, second.masks_)


def test_checkpoint_of_another_search_is_rejected(X, tmp_path):
    path = tmp_path / "search.ckpt"
    _tiny(checkpoint=path, n_generations=1).fit(X)
    with pytest.raises(ValueError, match="other data, parameters or random_state"):
        _tiny(checkpoint=path, n_generations=1, mutation_rate=0.3).fit(X)
    with pytest.raises(ValueError, match="other data"):
        _tiny(checkpoint=path, n_generations=1).fit(X + 1.0)


def test_a_file_that_is_not_a_checkpoint_is_rejected(X, tmp_path):
    path = tmp_path / "other.joblib"
    joblib.dump([1, 2, 3], path)
    with pytest.raises(ValueError, match="not a StructureSearchFlow checkpoint"):
        _tiny(checkpoint=path).fit(X)


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
