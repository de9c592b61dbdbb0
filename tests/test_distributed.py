"""The structure search on a real dask cluster gives the single-process result.

A ``LocalCluster`` of two single-threaded worker processes, listening on the
loopback interface only, runs the candidate batches through
``joblib.parallel_config(backend="dask")``. The batches are cut the same way
whatever the backend, and every candidate's weight and minibatch seeds come
from the search seed alone (common random numbers), so the result must be
identical to ``n_jobs=1``.
"""

import re
import warnings

import numpy as np
import pytest

distributed = pytest.importorskip("dask.distributed")
joblib = pytest.importorskip("joblib")

from skflowsearch import StructureSearchFlow  # noqa: E402

SEARCH_PARAMS = dict(
    n_components=1,
    n_layers=3,
    hidden_layer_sizes=(8,),
    population_size=4,
    n_offspring=4,
    n_generations=1,
    max_epochs=5,
    batch_size=32,
    n_candidates_per_batch=2,  # several joblib tasks per generation
    random_state=0,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 4))
    X[:, 1] += 0.5 * X[:, 0] ** 2  # something for the coupling layers to learn
    return X


@pytest.fixture(scope="module")
def dask_client(request):
    """Two worker processes with one thread each, on 127.0.0.1 only."""
    with warnings.catch_warnings():
        # e.g. "Port 8787 is already in use" style notices; nothing is served here.
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=True,
        )
    client = distributed.Client(cluster, set_as_default=True)

    def close():
        client.close()
        cluster.close()

    request.addfinalizer(close)
    return client


@pytest.fixture(scope="module")
def reference(data):
    return StructureSearchFlow(**SEARCH_PARAMS, n_jobs=1).fit(data)


def test_cluster_listens_on_loopback_only(dask_client):
    info = dask_client.scheduler_info()
    addresses = [info["address"], *info["workers"]]
    assert len(info["workers"]) == 2
    for address in addresses:
        assert address.startswith("tcp://127.0.0.1:"), address


def test_dask_backend_matches_single_process(dask_client, data, reference):
    with distributed.get_task_stream(dask_client) as stream:
        with joblib.parallel_config(backend="dask"):
            search = StructureSearchFlow(**SEARCH_PARAMS).fit(data)

    # The candidate batches really ran on the cluster: the incumbent's and
    # the finalists' runs (one batch per race fold and seed each) and the evolution's.
    per_batch = SEARCH_PARAMS["n_candidates_per_batch"]
    n_race_runs = reference.n_race_folds * reference.n_race_seeds
    n_finalists = sum(r["entry"].startswith("finalist") for r in reference.race_)
    n_incumbents = len(reference.race_) - n_finalists
    n_batches = (
        n_race_runs * -(-n_incumbents // per_batch)
        + sum(-(-r["n_evaluations"] // per_batch) for r in reference.search_history_)
        + (n_race_runs * -(-n_finalists // per_batch) if n_finalists else 0)
    )
    assert n_batches >= 4
    # joblib may group calls into one dask task ("batch_of_<func>_<n>_calls").
    calls = [re.search(r"_train_group_(\d+)_calls", task["key"]) for task in stream.data]
    assert all(calls), [task["key"] for task in stream.data]
    assert sum(int(c.group(1)) for c in calls) == n_batches
    assert {task["worker"] for task in stream.data} <= set(dask_client.scheduler_info()["workers"])

    np.testing.assert_array_equal(search.masks_, reference.masks_)
    np.testing.assert_array_equal(search.evaluated_masks_, reference.evaluated_masks_)
    np.testing.assert_array_equal(search.evaluated_scores_, reference.evaluated_scores_)
    np.testing.assert_array_equal(search.evaluated_layers_, reference.evaluated_layers_)
    assert search.race_ == reference.race_
    assert search.hidden_layer_sizes_ == reference.hidden_layer_sizes_
    assert search.best_score_ == reference.best_score_
    np.testing.assert_array_equal(search.score_samples(data), reference.score_samples(data))
    assert np.all(np.isfinite(search.evaluated_scores_))


def test_dask_backend_with_n_jobs_matches(dask_client, data, reference):
    # An explicit n_jobs inside the dask context changes nothing either, and
    # the dask backend is not taken for a worker of an enclosing Parallel.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with joblib.parallel_config(backend="dask"):
            search = StructureSearchFlow(**SEARCH_PARAMS, n_jobs=2).fit(data)
    assert not [w for w in caught if "inside a worker of another joblib" in str(w.message)]
    np.testing.assert_array_equal(search.masks_, reference.masks_)
    np.testing.assert_array_equal(search.evaluated_scores_, reference.evaluated_scores_)
    assert search.race_ == reference.race_
    np.testing.assert_array_equal(search.score_samples(data), reference.score_samples(data))
