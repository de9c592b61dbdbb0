"""Fitted estimators survive joblib/pickle, across processes and devices."""

import copy
import dataclasses
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from skflowsearch import CouplingFlow, StructureSearchFlow
from skflowsearch._nn import CouplingFlowStack

REPO_ROOT = Path(__file__).resolve().parents[1]

SEARCH_ATTRIBUTES = (
    "masks_", "hidden_layer_sizes_", "best_score_", "race_", "search_history_",
    "evaluated_masks_", "evaluated_layers_", "evaluated_hidden_layer_sizes_", "evaluated_n_parameters_",
    "evaluated_scores_",
    "fitness_steps_", "n_generations_",
    "mean_", "scale_", "input_matrix_", "input_log_det_", "normalization_", "whiten_", "base_df_", "n_components_", "n_estimators_",
    "discrete_features_", "dequantization_offsets_", "dependent_features_", "dependent_model_", "missing_proposal_",
    "loss_curve_",
    "validation_scores_", "best_validation_score_", "best_epoch_", "n_epochs_",
    "n_parameters_", "device_", "n_features_in_",
)


def _data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(150, 4))
    X[:, 1] += X[:, 0] ** 2
    return X


def _coupling_flow():
    return CouplingFlow(n_layers=3, hidden_layer_sizes=(8,), max_epochs=5, random_state=0)


def _search_flow(**params):
    return StructureSearchFlow(
        n_layers=3, hidden_layer_sizes=(8,), population_size=3, n_offspring=3,
        n_generations=1, max_epochs=5, random_state=0, **params,
    )


@pytest.fixture(scope="module")
def fitted_search():
    return _search_flow().fit(_data())


def _assert_same_attribute(name, a, b):
    if isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=name)
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), name
        for field in dataclasses.fields(a):
            _assert_same_attribute(f"{name}.{field.name}", getattr(a, field.name), getattr(b, field.name))
    else:
        assert a == b, name


_LOAD_AND_SCORE = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import joblib
    import numpy as np

    folder = Path(sys.argv[1])
    X = np.load(folder / "X.npy")
    for name in sys.argv[2:]:
        model = joblib.load(folder / f"{name}.joblib")
        np.save(folder / f"{name}-scores.npy", model.score_samples(X))
        np.save(folder / f"{name}-samples.npy", model.sample(20, random_state=0))
    """
)


def test_joblib_dump_loads_in_fresh_process(fitted_search, tmp_path):
    """One fresh interpreter (``sys.executable``) loads every estimator and
    reproduces its scores and samples bit for bit."""
    X = _data()
    estimators = {"CouplingFlow": _coupling_flow().fit(X), "StructureSearchFlow": fitted_search}
    for name, estimator in estimators.items():
        joblib.dump(estimator, tmp_path / f"{name}.joblib")
    np.save(tmp_path / "X.npy", X)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_SCORE, str(tmp_path), *estimators],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr

    for name, estimator in estimators.items():
        assert np.array_equal(np.load(tmp_path / f"{name}-scores.npy"), estimator.score_samples(X)), name
        assert np.array_equal(
            np.load(tmp_path / f"{name}-samples.npy"), estimator.sample(20, random_state=0)
        ), name


def test_pickle_keeps_search_results(fitted_search):
    X = _data()
    restored = pickle.loads(pickle.dumps(fitted_search))
    # The list covers every fitted attribute (the flow module is compared below).
    fitted = {k for k in vars(fitted_search) if k.endswith("_") and not k.startswith("_")}
    assert fitted - set(SEARCH_ATTRIBUTES) == {"flow_"}
    for name in SEARCH_ATTRIBUTES:
        _assert_same_attribute(name, getattr(fitted_search, name), getattr(restored, name))
    assert restored.search_history_ == fitted_search.search_history_
    assert len(restored.search_history_) == fitted_search.n_generations_ + 1
    assert restored.get_params() == fitted_search.get_params()
    np.testing.assert_array_equal(restored.score_samples(X), fitted_search.score_samples(X))
    # The restored flow is a working module, independent of the original.
    assert restored.flow_ is not fitted_search.flow_
    assert all(
        torch.equal(p, q) for p, q in zip(restored.flow_.parameters(), fitted_search.flow_.parameters())
    )


def test_deepcopy_and_refit_after_unpickling(fitted_search):
    X = _data()
    copied = copy.deepcopy(fitted_search)
    np.testing.assert_array_equal(copied.score_samples(X), fitted_search.score_samples(X))
    # An unpickled estimator can be fitted again and gives the same result.
    refitted = pickle.loads(pickle.dumps(fitted_search)).fit(X)
    np.testing.assert_array_equal(refitted.masks_, fitted_search.masks_)
    np.testing.assert_array_equal(refitted.score_samples(X), fitted_search.score_samples(X))


def test_pickle_with_feature_names_and_pick_smallest():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(_data(), columns=["w", "x", "y", "z"])
    search = _search_flow(pick="smallest", width_choices=(0.5, 1.0)).fit(df)
    restored = pickle.loads(pickle.dumps(search))
    np.testing.assert_array_equal(restored.feature_names_in_, ["w", "x", "y", "z"])
    np.testing.assert_array_equal(restored.score_samples(df), search.score_samples(df))
    assert restored.race_ == search.race_ and restored.hidden_layer_sizes_ == search.hidden_layer_sizes_
    assert restored.get_params() == search.get_params()


@pytest.mark.parametrize("claimed", [
    pytest.param("cuda", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="needs a machine without CUDA (tests/test_gpu.py runs on CUDA)")),
    # Runs on a one-GPU machine too: cuda:1 is not there either.
    pytest.param("cuda:1", marks=pytest.mark.skipif(
        torch.cuda.device_count() > 1, reason="needs a machine without a second CUDA device")),
])
def test_cuda_model_loads_on_cpu_with_warning(claimed, tmp_path):
    X = _data()
    estimator = _coupling_flow().fit(X)
    expected = estimator.score_samples(X)
    estimator.device_ = claimed  # as if it had been fitted on a GPU
    path = tmp_path / "gpu_model.joblib"
    joblib.dump(estimator, path)

    with pytest.warns(UserWarning, match=rf"fitted on {claimed}, which is not available; it computes on the CPU"):
        loaded = joblib.load(path)
    assert loaded.device_ == "cpu"
    assert loaded.flow_.masks.device.type == "cpu"
    np.testing.assert_array_equal(loaded.score_samples(X), expected)
    assert np.all(np.isfinite(loaded.sample(10, random_state=0)))

    with pytest.warns(UserWarning, match="not available"):
        pickle.loads(pickle.dumps(estimator))


def test_a_model_pickled_before_the_chosen_start_still_scores(tmp_path):
    # Such a pickle has no base_df_, discrete_features_ or dequantization_offsets_,
    # and its module no base_df: it was a normal base with no discrete columns.
    X = np.random.RandomState(0).normal(size=(120, 3))
    flow = CouplingFlow(n_layers=2, hidden_layer_sizes=(4,), max_epochs=2, random_state=0,
                        normalization="standard", base_distribution="normal").fit(X)
    expected = flow.score_samples(X)
    state = flow.__getstate__()
    for name in ("normalization_", "base_df_", "discrete_features_", "dequantization_offsets_"):
        del state[name]
    module = dict(state["flow_"].__dict__)
    module["_modules"] = {name: m for name, m in module["_modules"].items() if name != "base"}
    state["flow_"] = CouplingFlowStack.__new__(CouplingFlowStack)
    state["flow_"].__setstate__(module)
    old = CouplingFlow.__new__(CouplingFlow)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.score_samples(X), expected)
    assert old.sample(3, random_state=0).shape == (3, 3)
