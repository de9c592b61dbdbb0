"""CUDA: the estimators on a GPU, and the device logic of the search.

The tests marked ``cuda`` run only where CUDA is available (``pytest
tests/test_gpu.py`` on a GPU machine; ``benchmarks/bench_gpu.py`` runs them
too). The others check, on any machine, the logic that decides how the
search uses devices: the ``"auto"`` group size and one thread per CUDA
device, with fake devices and a fake ``train_group`` that never touches CUDA.
"""

import pickle
import threading
import warnings
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch
from joblib import parallel_config
from joblib.parallel import LokyBackend, ThreadingBackend

import skflowsearch._base as base_module
import skflowsearch._search as search_module
import skflowsearch._search_flow as search_flow_module
from skflowsearch import CouplingFlow, FlowOutlierDetector, StructureSearchFlow
from skflowsearch._genome import Genome
from skflowsearch._masks import alternating_masks
from skflowsearch._operators import random_genome
from skflowsearch._search import (
    AUTO_GROUP_SIZE,
    CandidateTrainer,
    GroupOutput,
    device_threads,
    resolve_group_size,
)
from skflowsearch._training import TrainingConfig, fit_flows

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")

CPU, CUDA0, CUDA1 = torch.device("cpu"), torch.device("cuda:0"), torch.device("cuda:1")


def _data(n=240, n_features=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, n_features))
    X[:, 1] += 0.5 * X[:, 0] ** 2  # something for the couplings to learn
    return X


X = _data()
FLOW = dict(n_layers=4, hidden_layer_sizes=(16,), max_epochs=8, batch_size=32, learning_rate=1e-2,
            random_state=0)
SEARCH = dict(n_layers=3, hidden_layer_sizes=(8,), population_size=4, n_offspring=4, n_generations=1,
              max_epochs=5, batch_size=32, learning_rate=1e-2, random_state=0)


def _quiet_fit(estimator, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the tiny budgets
        return estimator.fit(X)


# --- the "auto" group size (any machine) ----------------------------------------------


@pytest.mark.parametrize("devices, expected", [
    ([CPU], AUTO_GROUP_SIZE["cpu"]),
    ([CUDA0], AUTO_GROUP_SIZE["cuda"]),
    ([torch.device("cuda")], AUTO_GROUP_SIZE["cuda"]),
    ([CUDA0, CUDA1], AUTO_GROUP_SIZE["cuda"]),  # not divided by the number of devices
    ([CPU, CUDA0], AUTO_GROUP_SIZE["cpu"]),  # a CPU among the devices: the CPU size
])
def test_auto_group_size_follows_the_device_type(devices, expected):
    assert resolve_group_size("auto", devices) == expected
    assert resolve_group_size(3, devices) == 3


class _Stop(Exception):
    pass


def _record_group_size(monkeypatch):
    """Make the search's trainer record its group size and stop the fit there."""
    sizes = []

    def trainer(*args, group_size, **kwargs):
        sizes.append(group_size)
        raise _Stop

    monkeypatch.setattr(search_flow_module, "CandidateTrainer", trainer)
    return sizes


@pytest.mark.parametrize("device, resolved, expected", [
    ("cpu", [CPU], 4), ("cuda", [torch.device("cuda")], 16), (["cuda:0", "cuda:1"], [CUDA0, CUDA1], 16),
])
def test_the_search_trains_with_the_auto_group_size_of_its_devices(monkeypatch, device, resolved,
                                                                     expected):
    sizes = _record_group_size(monkeypatch)
    # The devices as resolve_devices would give them on a machine with two GPUs.
    monkeypatch.setattr(base_module, "resolve_devices", lambda d: list(resolved))
    with pytest.raises(_Stop):
        StructureSearchFlow(**SEARCH, device=device).fit(X)
    with pytest.raises(_Stop):
        StructureSearchFlow(**SEARCH, device=device, n_candidates_per_batch=3).fit(X)
    assert sizes == [expected, 3]


@pytest.mark.parametrize("value, error, match", [
    ("big", ValueError, r"'n_candidates_per_batch' parameter of StructureSearchFlow must be a str among \{'auto'\} or an int"),
    ("AUTO", ValueError, r"'n_candidates_per_batch' parameter of StructureSearchFlow must be a str among \{'auto'\}"),
    (0, ValueError, r"'n_candidates_per_batch' parameter .* must be .* an int in the range \[1, inf\)"),
    (2.5, TypeError, "n_candidates_per_batch"),
    (True, TypeError, "n_candidates_per_batch"),
])
def test_bad_group_size_raises(value, error, match):
    with pytest.raises(error, match=match):
        StructureSearchFlow(**SEARCH, n_candidates_per_batch=value).fit(X)


def test_the_checkpoint_fingerprint_holds_the_resolved_group_size():
    data = (np.arange(6.0).reshape(3, 2), 7)
    auto = StructureSearchFlow(**SEARCH)._search_fingerprint(*data, group_size=4)
    four = StructureSearchFlow(**SEARCH, n_candidates_per_batch=4)._search_fingerprint(*data, group_size=4)
    assert auto == four
    assert StructureSearchFlow(**SEARCH)._search_fingerprint(*data, group_size=16) != auto


def test_a_checkpoint_of_the_cpu_auto_size_resumes_with_that_number(tmp_path):
    path = tmp_path / "search.ckpt"
    params = dict(SEARCH, n_offspring=6)  # two batches of 3, or one of 6
    first = _quiet_fit(StructureSearchFlow(**params, n_candidates_per_batch=4, checkpoint=path), X)
    resumed = _quiet_fit(StructureSearchFlow(**params, checkpoint=path), X)  # "auto": 4 on the CPU
    np.testing.assert_array_equal(resumed.evaluated_scores_, first.evaluated_scores_)
    with pytest.raises(ValueError, match="other data, parameters or random_state"):
        StructureSearchFlow(**params, n_candidates_per_batch=6, checkpoint=path).fit(X)


# --- one thread per CUDA device (any machine: fake devices) -----------------------------


@pytest.mark.parametrize("devices, n_jobs, backend, expected", [
    ([CPU], 2, LokyBackend(), 0),
    ([CPU, CPU], 2, LokyBackend(), 0),  # CPU workers stay processes
    ([CUDA0], 4, LokyBackend(), 0),  # one device: as before
    ([CUDA0, CUDA1], 1, LokyBackend(), 0),  # n_jobs=1: one after the other
    ([CUDA0, CUDA1], 2, LokyBackend(), 2),
    ([CUDA0, CUDA1], 8, LokyBackend(), 2),  # never two threads on a device
    ([CUDA0, CUDA1, torch.device("cuda:2")], 2, LokyBackend(), 2),
    ([CUDA0, CUDA0, CUDA1], 3, ThreadingBackend(), 3),  # a device listed twice gets two
    ([CPU, CUDA0], 2, LokyBackend(), 0),
    ([CUDA0, CUDA1], 2, object(), 0),  # dask, ray: the backend places the tasks
])
def test_device_threads(devices, n_jobs, backend, expected):
    assert device_threads(devices, n_jobs, backend) == expected


CONFIG = TrainingConfig(hidden_layer_sizes=(8,), max_epochs=3, batch_size=8, learning_rate=1e-2)
N_LAYERS, N_FEATURES = 3, 4


def _genomes(n, seed=0):
    rng = np.random.default_rng(seed)
    genomes = [Genome.full(alternating_masks(N_LAYERS, N_FEATURES), 1)]
    while len(genomes) < n:
        genomes.append(Genome.full(random_genome(N_LAYERS, N_FEATURES, rng), 1))
    return genomes


def _trainer(devices, n_jobs, group_size, train_group=search_module._train_group, config=CONFIG):
    Z = _data(80, N_FEATURES, seed=1)
    return CandidateTrainer(Z[:50], Z[50:65], config=config, width_choices=(1.0,), devices=devices,
                            n_jobs=n_jobs, group_size=group_size, train_group=train_group)


Z_SELECT = _data(80, N_FEATURES, seed=1)[65:]
SEEDS = [(1, 2), (3, 4)]


class FakeGroups:
    """A ``train_group`` that records where each group ran and answers from its arguments alone.

    The first group of each device waits at a barrier for the first group of
    the other: it passes only if the two devices train at the same time.
    """

    def __init__(self, n_devices, barrier=True):
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(n_devices, timeout=20) if barrier else None
        self.calls = []  # (thread, device, group key)
        self.running = Counter()
        self.most_at_once = Counter()
        self.started = set()

    def __call__(self, structure, Z_train, Z_val, Z_select, seeds, batch_seed, config, device, budget):
        key = (structure[0].tobytes(), int(seeds[0]))
        with self.lock:
            self.calls.append((threading.get_ident(), str(device), key))
            self.running[str(device)] += 1
            self.most_at_once[str(device)] = max(self.most_at_once[str(device)], self.running[str(device)])
            first = str(device) not in self.started
            self.started.add(str(device))
        try:
            if first and self.barrier is not None:
                self.barrier.wait()
            n = len(structure[0])
            rows = np.add.outer(structure[0].sum(axis=(1, 2)) + seeds + batch_seed, np.arange(len(Z_select)))
            return GroupOutput(rows.astype(float), np.zeros(n, dtype=bool), np.full(n, batch_seed),
                               np.zeros(n, dtype=int))
        finally:
            with self.lock:
                self.running[str(device)] -= 1


def test_several_cuda_devices_get_one_thread_each():
    genomes = _genomes(6)
    fake = FakeGroups(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no lost worker (a broken barrier), nothing else
        trained = _trainer([CUDA0, CUDA1], n_jobs=2, group_size=2, train_group=fake).train(
            genomes, SEEDS, Z_SELECT)
    threads = defaultdict(set)
    for thread, device, _ in fake.calls:
        threads[thread].add(device)
    assert len(threads) == 2 and threading.get_ident() not in threads
    assert sorted(d for devices in threads.values() for d in devices) == ["cuda:0", "cuda:1"]
    assert fake.most_at_once == {"cuda:0": 1, "cuda:1": 1}

    # The same groups on the same devices, and the same result, as one after the other.
    sequential = FakeGroups(2, barrier=False)
    expected = _trainer([CUDA0, CUDA1], n_jobs=1, group_size=2, train_group=sequential).train(
        genomes, SEEDS, Z_SELECT)
    assert sorted(c[1:] for c in fake.calls) == sorted(c[1:] for c in sequential.calls)
    assert [c[1] for c in sequential.calls] == ["cuda:0", "cuda:1"] * 3  # round-robin by index
    for field in ("selection_log_prob", "diverged", "failed", "n_steps", "best_steps"):
        np.testing.assert_array_equal(getattr(trained, field), getattr(expected, field))


def test_one_cuda_device_or_the_cpu_does_not_use_device_threads(monkeypatch):
    def no_device_threads(*args):
        pytest.fail("device threads used")

    monkeypatch.setattr(search_module, "_per_device", no_device_threads)
    for devices in ([CUDA0], [CPU, CPU]):
        fake, sequential = FakeGroups(1, barrier=False), FakeGroups(1, barrier=False)
        # Threads rather than loky: the fake's records stay in this process.
        with parallel_config(backend="threading"):
            trained = _trainer(devices, n_jobs=2, group_size=2, train_group=fake).train(
                _genomes(4), SEEDS, Z_SELECT)
        _trainer(devices, n_jobs=1, group_size=2, train_group=sequential).train(_genomes(4), SEEDS, Z_SELECT)
        assert [c[1] for c in sequential.calls] == [str(devices[i % len(devices)]) for i in range(4)]
        assert sorted(c[1:] for c in fake.calls) == sorted(c[1:] for c in sequential.calls)
        assert not trained.failed.any()


class FailOnce:
    """A fake ``train_group`` whose first call raises ``exc``."""

    def __init__(self, exc):
        self.exc, self.fake, self.n_calls = exc, FakeGroups(2, barrier=False), 0
        self.lock = threading.Lock()

    def __call__(self, *args):
        with self.lock:
            self.n_calls += 1
            first = self.n_calls == 1
        if first:
            raise self.exc
        return self.fake(*args)


def test_a_cuda_error_in_a_device_thread_is_retried():
    flaky = FailOnce(RuntimeError("CUDA error: an illegal memory access was encountered (simulated)"))
    trainer = _trainer([CUDA0, CUDA1], n_jobs=2, group_size=2, train_group=flaky)
    with pytest.warns(RuntimeWarning, match="worker was lost.*CUDA error"):
        trained = trainer.train(_genomes(4), SEEDS, Z_SELECT)
    expected = _trainer([CUDA0, CUDA1], n_jobs=1, group_size=2,
                        train_group=FakeGroups(2, barrier=False)).train(_genomes(4), SEEDS, Z_SELECT)
    np.testing.assert_array_equal(trained.selection_log_prob, expected.selection_log_prob)
    assert not trained.failed.any() and len(trainer.errors) == 1
    # The retries ran in this thread, one by one.
    assert {c[0] for c in flaky.fake.calls[-4:]} == {threading.get_ident()}


def test_a_programming_error_in_a_device_thread_propagates():
    flaky = FailOnce(ValueError("a bug in the task"))
    trainer = _trainer([CUDA0, CUDA1], n_jobs=2, group_size=2, train_group=flaky)
    with pytest.raises(ValueError, match="a bug in the task"):
        trainer.train(_genomes(4), SEEDS, Z_SELECT)
    assert trainer.errors == []


# --- on a GPU --------------------------------------------------------------------------


def _cpu_copy(estimator):
    """The fitted ``estimator`` rebuilt on the CPU from its pickled state."""
    state = dict(estimator.__getstate__())  # it may be the estimator's own __dict__
    state["device_"] = "cpu"
    copy = type(estimator).__new__(type(estimator))
    copy.__setstate__(state)
    assert copy.flow_.masks.device.type == "cpu"
    return copy


def _check_on_cuda_and_like_its_cpu_copy(estimator):
    assert estimator.device_.startswith("cuda")
    assert all(p.device.type == "cuda" for p in estimator.flow_.parameters())
    scores = estimator.score_samples(X)
    assert scores.dtype == np.float64 and np.isfinite(scores).all()
    on_cpu = _cpu_copy(estimator)
    # __getstate__ copies the flow to the CPU; the estimator's own flow stays on the GPU.
    assert next(estimator.flow_.parameters()).device.type == "cuda"
    # float64 on both devices: only the order of the sums differs.
    np.testing.assert_allclose(on_cpu.score_samples(X), scores, rtol=1e-9, atol=1e-9)

    loaded = pickle.loads(pickle.dumps(estimator))
    assert loaded.device_ == estimator.device_
    assert next(loaded.flow_.parameters()).device.type == "cuda"
    assert next(estimator.flow_.parameters()).device.type == "cuda"
    np.testing.assert_allclose(loaded.score_samples(X), scores, rtol=1e-12, atol=1e-12)

    samples = estimator.sample(64, random_state=0)
    assert samples.shape == (64, X.shape[1]) and np.isfinite(samples).all()
    # The base noise is drawn on the CPU: the same seed, the same points.
    np.testing.assert_allclose(on_cpu.sample(64, random_state=0), samples, rtol=1e-8, atol=1e-8)

    Z = estimator.transform(X)
    np.testing.assert_allclose(on_cpu.transform(X), Z, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(estimator.inverse_transform(Z), X, atol=1e-8)


@cuda
@pytest.mark.parametrize("coupling", ["affine", "spline"])
def test_coupling_flow_on_cuda(coupling):
    flow = _quiet_fit(CouplingFlow(**FLOW, coupling=coupling, device="cuda"), X)
    _check_on_cuda_and_like_its_cpu_copy(flow)
    # Trained on the GPU in float32, it lands near the CPU fit of the same seed.
    on_cpu = _quiet_fit(CouplingFlow(**FLOW, coupling=coupling, device="cpu"), X)
    assert abs(on_cpu.score(X) - flow.score(X)) < 0.2


@cuda
def test_structure_search_on_cuda(monkeypatch):
    sizes = []

    class Recording(CandidateTrainer):
        def __init__(self, *args, **kwargs):
            sizes.append(kwargs["group_size"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(search_flow_module, "CandidateTrainer", Recording)
    search = _quiet_fit(StructureSearchFlow(**SEARCH, device="cuda"), X)
    assert sizes == [AUTO_GROUP_SIZE["cuda"]]
    assert np.isfinite(search.evaluated_scores_).any()
    assert search.__sklearn_tags__().non_deterministic
    _check_on_cuda_and_like_its_cpu_copy(search)


@cuda
def test_outlier_detector_on_cuda():
    X_out = np.vstack([X, [[8.0, -8.0, 8.0, -8.0]]])
    detector = _quiet_fit(FlowOutlierDetector(CouplingFlow(**FLOW, device="cuda"), contamination=0.05),
                          X_out)
    assert detector.estimator_.device_.startswith("cuda")
    labels = detector.predict(X_out)
    assert set(labels) == {-1, 1} and labels[-1] == -1
    np.testing.assert_allclose(detector.decision_function(X_out),
                               detector.estimator_.score_samples(X_out) - detector.offset_)
    loaded = pickle.loads(pickle.dumps(detector))
    np.testing.assert_array_equal(loaded.predict(X_out), labels)


@cuda
def test_stacked_candidates_on_cuda_train_as_they_would_alone():
    genomes = _genomes(6)
    stacked = _trainer([CUDA0], 1, group_size=6).train(genomes, SEEDS, Z_SELECT)
    alone = _trainer([CUDA0], 1, group_size=1).train(genomes, SEEDS, Z_SELECT)
    assert not stacked.failed.any() and not stacked.diverged.any()
    # Loose: a CUDA kernel may round differently with the size of the stack.
    np.testing.assert_allclose(stacked.selection_log_prob, alone.selection_log_prob, rtol=1e-4, atol=1e-4)
    on_cpu = _trainer([CPU], 1, group_size=6).train(genomes, SEEDS, Z_SELECT)
    np.testing.assert_allclose(stacked.selection_log_prob, on_cpu.selection_log_prob, rtol=1e-3, atol=1e-3)


@cuda
def test_a_group_out_of_cuda_memory_is_split_after_its_memory_is_freed(monkeypatch):
    device = torch.device("cuda")
    genomes = _genomes(4)
    reference = _trainer([device], 1, group_size=4).train(genomes, SEEDS[:1], Z_SELECT)
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated(device)
    seen = []

    def small_memory(masks, *args, **kwargs):
        seen.append((len(masks), torch.cuda.memory_allocated(device) - baseline))
        if len(masks) > 1:
            held = torch.empty(64 * 2**20, device=device)  # 256 MiB the failed attempt holds
            torch.empty(2**50, device=device)  # a real CUDA out-of-memory error
            del held
        return fit_flows(masks, *args, **kwargs)

    monkeypatch.setattr(search_module, "fit_flows", small_memory)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no candidate failed
        trained = _trainer([device], 1, group_size=4).train(genomes, SEEDS[:1], Z_SELECT)
    assert [n for n, _ in seen] == [4, 2, 1, 1, 2, 1, 1]
    # Every retry started with the failed attempt's 256 MiB given back.
    assert max(extra for _, extra in seen) < 2**20
    assert not trained.failed.any()
    np.testing.assert_allclose(trained.selection_log_prob, reference.selection_log_prob,
                               rtol=1e-4, atol=1e-4)


@cuda
def test_a_candidate_that_never_fits_on_the_gpu_fails_transiently(monkeypatch):
    def no_memory(masks, *args, device, **kwargs):
        torch.empty(2**50, device=device)

    monkeypatch.setattr(search_module, "fit_flows", no_memory)
    trainer = _trainer([torch.device("cuda")], 1, group_size=2)
    with pytest.warns(RuntimeWarning, match="OutOfMemoryError"):
        trained = trainer.train(_genomes(2), SEEDS[:1], Z_SELECT)
    assert trained.failed.all() and not trained.diverged.any()
    assert np.isnan(search_module.mean_scores(trained)).all()  # NaN, never -inf


@two_gpus
def test_two_gpus_give_the_sequential_result_with_one_thread_each(monkeypatch):
    genomes = _genomes(8)
    threads = defaultdict(set)
    lock = threading.Lock()

    def recording(*args):
        with lock:
            threads[threading.get_ident()].add(str(args[7]))
        return search_module._train_group(*args)

    parallel = _trainer([CUDA0, CUDA1], 2, group_size=2, train_group=recording).train(
        genomes, SEEDS, Z_SELECT)
    sequential = _trainer([CUDA0, CUDA1], 1, group_size=2).train(genomes, SEEDS, Z_SELECT)
    assert all(len(devices) == 1 for devices in threads.values())
    assert {d for devices in threads.values() for d in devices} == {"cuda:0", "cuda:1"}
    # The same groups on the same devices: equal up to CUDA's own run-to-run rounding.
    np.testing.assert_allclose(parallel.selection_log_prob, sequential.selection_log_prob,
                               rtol=1e-6, atol=1e-6)


@two_gpus
def test_a_search_over_two_gpus():
    search = _quiet_fit(StructureSearchFlow(**dict(SEARCH, n_offspring=8), n_candidates_per_batch=2,
                                            device=["cuda:0", "cuda:1"], n_jobs=2), X)
    assert search.device_ == "cuda:0"
    assert np.isfinite(search.evaluated_scores_).any()
    _check_on_cuda_and_like_its_cpu_copy(search)

