import argparse
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from skflowsearch import CouplingFlow, FlowOutlierDetector, StructureSearchFlow
from skflowsearch.cli import (
    _SEARCH_OPTIONS, _build_parser, _csv_options, _shared_options, _cli_spelling, _read_csv_cells,
    main, read_csv,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Budgets small enough for a search to take about a second.
TINY = [
    "--n-layers", "2", "--hidden", "4", "--n-generations", "1", "--population-size", "2",
    "--n-offspring", "2", "--max-epochs", "3",
]

TABLE_HEADER = "| model | held-out mean log-likelihood | parameters | fit time (s) |"


def _write_csv(path, X, header=None):
    lines = [",".join(header)] if header is not None else []
    lines += [",".join(repr(float(v)) for v in row) for row in X]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    return rng.normal(size=(60, 3)) @ np.array([[1.0, 0.4, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, data):
    """A CSV file with a header and the model ``search`` saved from it."""
    directory = tmp_path_factory.mktemp("fitted")
    csv_path = _write_csv(directory / "data.csv", data, header=["a", "b", "c"])
    model_path = directory / "model.joblib"
    assert main(["search", str(csv_path), "--output", str(model_path), "--quiet", *TINY]) == 0
    return csv_path, model_path


def _read_output(text):
    lines = text.strip().splitlines()
    header = lines[0].split(",")
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    return header, rows


def _assert_error(capsys, status):
    captured = capsys.readouterr()
    assert status == 2
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1, captured.err
    assert err_lines[0].startswith("error: ")
    assert "Traceback" not in captured.err + captured.out
    return err_lines[0]


# --- search ------------------------------------------------------------------------


def _table(out):
    """The rows of the printed result table, as {label: (held-out, parameters, seconds)}."""
    lines = out.splitlines()
    start = lines.index(TABLE_HEADER)
    assert lines[start + 1] == "|:--|--:|--:|--:|"
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        label, held_out, n_parameters, seconds = (c.strip() for c in line.strip("|").split("|"))
        assert label not in rows
        rows[label] = (held_out, int(n_parameters), float(seconds))
    return rows


def _assert_table(out, labels=("searched",)):
    rows = _table(out)
    assert list(rows) == list(labels)
    for held_out, n_parameters, seconds in rows.values():
        assert np.isfinite(float(held_out))
        assert n_parameters > 0
        assert seconds >= 0
    return rows


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_search_csv_with_header(fitted, data, capsys):
    csv_path, model_path = fitted
    model = joblib.load(model_path)
    assert isinstance(model, StructureSearchFlow)
    assert model.n_features_in_ == 3
    assert model.get_params()["n_layers"] == 2
    assert model.get_params()["hidden_layer_sizes"] == (4,)
    assert model.get_params()["whiten"] == "auto"  # the default
    # whiten="auto" chose one; the normalizer is what it says
    assert model.whiten_ == (not np.allclose(model.input_matrix_, np.diag(np.diag(model.input_matrix_))))
    scores = model.score_samples(data)
    assert scores.shape == (60,) and np.all(np.isfinite(scores))
    pytest.importorskip("pandas")
    assert list(model.feature_names_in_) == ["a", "b", "c"]


def test_search_csv_without_header_prints_table(tmp_path, data, capsys):
    csv_path = _write_csv(tmp_path / "data.csv", data)
    model_path = tmp_path / "m.joblib"
    assert main(["search", str(csv_path), "--output", str(model_path), *TINY]) == 0
    out = capsys.readouterr().out
    _assert_table(out)  # only the searched row: the comparison is opt-in
    assert "fitting the searched flow" in out
    # The rows the user gave, then how the split uses them.
    assert f"{csv_path}: 60 rows of 3 features; 48 to fit the flows, 12 held out (--test-fraction 0.2)" in out
    assert "alternating" not in out
    assert f"saved the searched model to {model_path}" in out
    model = joblib.load(model_path)
    assert not hasattr(model, "feature_names_in_")
    assert model.score_samples(data[:4]).shape == (4,)


def test_search_bundled_default(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--quiet", *TINY]) == 0
    out = capsys.readouterr().out
    _assert_table(out)
    assert "fitting" not in out  # --quiet
    model = joblib.load(tmp_path / "skflowsearch-model.joblib")
    assert model.n_features_in_ == 30


def test_search_without_held_out_rows(tmp_path, data, capsys):
    csv_path = _write_csv(tmp_path / "data.csv", data)
    status = main(["search", str(csv_path), "--output", str(tmp_path / "m.joblib"),
                   "--test-fraction", "0", "--quiet", *TINY])
    assert status == 0
    assert "| searched | n/a |" in capsys.readouterr().out


def test_search_plots_calls_plotting_module(tmp_path, data, capsys, monkeypatch):
    calls = []
    fake = types.ModuleType("skflowsearch.plotting")
    fake.save_search_plots = lambda estimator, X, directory: calls.append((estimator, X, directory))
    monkeypatch.setitem(sys.modules, "skflowsearch.plotting", fake)
    csv_path = _write_csv(tmp_path / "data.csv", data)
    plots = str(tmp_path / "plots")
    status = main(["search", str(csv_path), "--output", str(tmp_path / "m.joblib"),
                   "--plots", plots, "--quiet", *TINY])
    assert status == 0
    (estimator, X, directory), = calls
    assert isinstance(estimator, StructureSearchFlow) and directory == plots
    assert np.asarray(X).shape == (48, 3)  # the training rows
    assert f"saved plots to {plots}" in capsys.readouterr().out


def test_search_plots_unavailable(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "skflowsearch.plotting", None)  # import fails
    csv_path = _write_csv(tmp_path / "data.csv", data)
    status = main(["search", str(csv_path), "--output", str(tmp_path / "m.joblib"),
                   "--plots", str(tmp_path / "plots"), "--quiet", *TINY])
    assert status == 0
    out_lines = [line for line in capsys.readouterr().out.splitlines() if "plots skipped" in line]
    assert len(out_lines) == 1


# --- search options: they are the estimator's ------------------------------------------


def _flag(name):
    return "--hidden" if name == "hidden_layer_sizes" else "--" + name.replace("_", "-")


def _help_entries(text):
    """``{flag: help}`` of the options section of an argparse help text (whitespace joined)."""
    entries, current = {}, None
    for line in text.splitlines():
        if re.match(r"^  -", line):
            current = line.split()[0].rstrip(",")
            entries[current] = [line]
        elif current is not None and line.startswith("   "):
            entries[current].append(line)
        else:
            current = None
    return {flag: " ".join(" ".join(lines).split()) for flag, lines in entries.items()}


def _search_help(capsys):
    assert main(["search", "--help"]) == 0
    return _help_entries(capsys.readouterr().out)


def _undecorated_docs():
    """Both estimators' docstrings without Sphinx markup, whitespace joined, in CLI spelling."""
    text = " ".join((StructureSearchFlow.__doc__ or "").split() + (CouplingFlow.__doc__ or "").split())
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return _cli_spelling(re.sub(r"``([^`]+)``", r"\1", text))


def test_search_option_defaults_are_the_estimator_defaults(capsys):
    expected = StructureSearchFlow().get_params()
    parser = _build_parser()
    args = parser.parse_args(["search"])
    subcommands, = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    # Hidden aliases (--no-whiten) excepted.
    actions = {action.dest: action for action in subcommands.choices["search"]._actions
               if action.help != argparse.SUPPRESS}
    entries = _search_help(capsys)
    docs = _undecorated_docs()
    assert {"fitness_budget", "pick", "whiten", "validation_fraction"} <= set(_SEARCH_OPTIONS)
    for name in _SEARCH_OPTIONS:
        value = getattr(args, name)
        if name == "hidden_layer_sizes":
            value = tuple(value)
        assert value == expected[name] and type(value) is type(expected[name]), name
        help_text = entries[_flag(name)]
        default = expected[name]
        if default is None:  # n_jobs: the help says what None means
            assert "(default: None)" not in help_text
        elif isinstance(default, bool):
            flag = _flag(name) if default else "--no-" + _flag(name)[2:]
            assert help_text.endswith(f"(default: {flag})"), help_text
        elif name == "hidden_layer_sizes":
            assert help_text.endswith(f"(default: {list(default)})"), help_text
        else:
            assert help_text.endswith(f"(default: {default})"), help_text
        if name != "n_jobs":
            # The help is the first sentence of the parameter's docstring entry
            # (its parameters spelled as options: "--race-margin" in --pick's).
            sentence = actions[name].help.replace("%%", "%")
            assert sentence.endswith(".") and sentence in docs, (name, sentence)
            assert sentence in help_text


def test_search_option_defaults_follow_the_estimator(monkeypatch, capsys):
    """A default changed in StructureSearchFlow changes the CLI's: they cannot drift."""
    init = StructureSearchFlow.__init__
    monkeypatch.setattr(init, "__kwdefaults__",
                        {**init.__kwdefaults__, "population_size": 5, "pick": "smallest",
                         "whiten": False, "fitness_budget": 0.25})
    args = _build_parser().parse_args(["search"])
    assert (args.population_size, args.pick, args.whiten, args.fitness_budget) == (5, "smallest", False, 0.25)
    entries = _search_help(capsys)
    assert entries["--population-size"].endswith("(default: 5)")
    assert entries["--pick"].endswith("(default: smallest)")
    assert entries["--whiten"].endswith("(default: no)")
    assert entries["--fitness-budget"].endswith("(default: 0.25)")


def test_cli_spelling_leaves_paths_alone():
    message = "fitting on /data/max_epochs/run_1.csv and C:\\n_layers\\x.csv: max_epochs=3 is too few"
    assert _cli_spelling(message) == (
        "fitting on /data/max_epochs/run_1.csv and C:\\n_layers\\x.csv: --max-epochs 3 is too few"
    )
    assert _cli_spelling("see n_layers.") == "see --n-layers."


def test_start_and_discrete_options_reach_both_estimators():
    args = _build_parser().parse_args(["search", "--normalization", "robust", "--base-distribution", "normal",
                                       "--discrete-features", "0,2"])
    assert (args.normalization, args.base_distribution, args.discrete_features) == ("robust", "normal", [0, 2])
    assert {"normalization", "base_distribution", "discrete_features"} <= set(_shared_options())
    for text, value in [("auto", "auto"), ("none", False), ("all", True), ("3", [3])]:
        assert _build_parser().parse_args(["search", "--discrete-features", text]).discrete_features == value


def test_mixture_base_options_reach_both_estimators():
    args = _build_parser().parse_args(["search", "--base-distribution", "gaussian_mixture", "--n-components", "3",
                                       "--covariance-type", "diag"])
    assert (args.base_distribution, args.n_components, args.covariance_type) == ("gaussian_mixture", 3, "diag")
    assert _build_parser().parse_args(["search"]).n_components == "auto"
    assert {"n_components", "covariance_type"} <= set(_shared_options())


@pytest.mark.parametrize("argv", [["--discrete-features", "first"], ["--normalization", "minmax"],
                                  ["--base-distribution", "laplace"], ["--covariance-type", "banded"],
                                  ["--n-components", "0"]])
def test_bad_start_options_are_rejected(capsys, argv):
    assert main(["search", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert argv[0] in err and "Traceback" not in err


@pytest.mark.parametrize("option", ["--fitness-epochs", "--mutation-proba", "--refit"])
def test_removed_options_are_rejected(capsys, option):
    assert main(["search", option, "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and option in err and "Traceback" not in err


def test_pick_must_be_a_rule(capsys):
    assert main(["search", "--pick", "worst", "--quiet"]) == 2
    assert "invalid choice: 'worst'" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--fitness-budget", "inf"), ("--size-penalty", "nan")])
def test_search_rejects_non_finite_numbers(capsys, option, value):
    assert main(["search", option, value, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: not a finite number: '{value}'" in err and "Traceback" not in err


def test_search_options_reach_the_estimator(tmp_path, data, capsys):
    csv_path = _write_csv(tmp_path / "data.csv", data)
    model_path = tmp_path / "m.joblib"
    status = main(["search", str(csv_path), "--output", str(model_path), "--quiet", *TINY,
                   "--no-whiten", "--pick", "smallest", "--fitness-budget", "0.5",
                   "--size-penalty", "0.001", "--n-jobs", "1", "--random-state", "3",
                   "--learning-rate", "0.002", "--max-log-scale", "2.5",
                   "--validation-fraction", "0.2", "--selection-fraction", "0.4"])
    assert status == 0
    _assert_table(capsys.readouterr().out)
    model = joblib.load(model_path)
    params = model.get_params()
    assert params["whiten"] is False
    assert (params["learning_rate"], params["max_log_scale"]) == (0.002, 2.5)
    assert (params["validation_fraction"], params["selection_fraction"]) == (0.2, 0.4)
    assert (params["pick"], params["fitness_budget"], params["size_penalty"]) == ("smallest", 0.5, 0.001)
    assert (params["n_jobs"], params["random_state"], params["max_epochs"]) == (1, 3, 3)
    assert (params["population_size"], params["n_offspring"], params["n_generations"]) == (2, 2, 1)
    # Not whitened: the normalizing map only standardizes.
    np.testing.assert_allclose(model.input_matrix_, np.diag(1.0 / model.scale_))
    assert sum(entry["chosen"] for entry in model.race_) == 1


def _fit_spy(monkeypatch):
    """Record ``(flow, X)`` of every CouplingFlow.fit (the --compare flow)."""
    fits = []
    original_fit = CouplingFlow.fit

    def spy(self, X, y=None):
        fits.append((self, np.asarray(X).copy()))
        return original_fit(self, X, y)

    monkeypatch.setattr(CouplingFlow, "fit", spy)
    return fits


def test_compare_adds_the_alternating_row(tmp_path, data, capsys, monkeypatch):
    fits = _fit_spy(monkeypatch)
    csv_path = _write_csv(tmp_path / "data.csv", data)
    model_path = tmp_path / "m.joblib"
    status = main(["search", str(csv_path), "--output", str(model_path), *TINY,
                   "--compare", "--no-whiten", "--random-state", "1"])
    assert status == 0
    out = capsys.readouterr().out
    rows = _assert_table(out, labels=("searched", "alternating"))
    assert "fitting the searched flow" in out and "fitting the alternating flow" in out

    (flow, X_flow), = fits
    model = joblib.load(model_path)
    assert isinstance(model, StructureSearchFlow)  # the searched model is the one saved
    # The comparison flow: alternating masks, every setting of the search, the same rows.
    assert flow.masks == "alternating"
    assert flow.get_params()["whiten"] is False
    search_params = model.get_params()
    for name, value in flow.get_params().items():
        if name not in ("masks", "verbose"):
            assert value == search_params[name], name
    assert set(_shared_options()) <= set(flow.get_params())
    assert X_flow.shape == (48, 3)  # the training rows, as for the search
    assert rows["alternating"][1] == flow.n_parameters_
    assert rows["searched"][1] == model.n_parameters_
    # The printed scores are those of the held-out rows (the rows neither model saw).
    trained = {tuple(row) for row in X_flow}
    X_test = np.array([row for row in data if tuple(row) not in trained])
    assert X_test.shape == (12, 3)
    assert rows["alternating"][0] == f"{flow.score(X_test):.3f}"
    assert rows["searched"][0] == f"{model.score(X_test):.3f}"


def test_compare_rows_agree_when_the_alternating_masks_win(tmp_path, data, capsys, monkeypatch):
    """A search won by the alternating masks is exactly the CouplingFlow: the two rows agree."""
    fits = _fit_spy(monkeypatch)
    csv_path = _write_csv(tmp_path / "data.csv", data)
    model_path = tmp_path / "m.joblib"
    # A population of one genome (the alternating masks) and no generation: the
    # race has no challenger, so the alternating masks win by construction.
    status = main(["search", str(csv_path), "--output", str(model_path), "--quiet", *TINY,
                   "--population-size", "1", "--n-generations", "0", "--compare"])
    assert status == 0
    rows = _assert_table(capsys.readouterr().out, labels=("searched", "alternating"))
    model = joblib.load(model_path)
    assert [(entry["entry"], entry["chosen"]) for entry in model.race_] == [("alternating", True)]
    (flow, _), = fits
    np.testing.assert_array_equal(model.masks_, flow.masks_)
    np.testing.assert_array_equal(model.score_samples(data), flow.score_samples(data))
    assert rows["searched"][:2] == rows["alternating"][:2]


# --- score and sample ----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_score_writes_one_line_per_row(fitted, data, tmp_path):
    csv_path, model_path = fitted
    out_path = tmp_path / "scores.csv"
    assert main(["score", str(model_path), str(csv_path), "--output", str(out_path)]) == 0
    header, rows = _read_output(out_path.read_text())
    assert header == ["log_density"]
    assert rows.shape == (60, 1)
    expected = joblib.load(model_path).score_samples(data)
    np.testing.assert_allclose(rows[:, 0], expected, rtol=1e-12)


def test_score_to_stdout_headerless_data(fitted, data, tmp_path, capsys):
    _, model_path = fitted
    csv_path = _write_csv(tmp_path / "plain.csv", data[:7])
    assert main(["score", str(model_path), str(csv_path)]) == 0
    header, rows = _read_output(capsys.readouterr().out)
    assert header == ["log_density"] and rows.shape == (7, 1)


def test_score_contamination_adds_outlier_column(fitted, tmp_path):
    csv_path, model_path = fitted
    out_path = tmp_path / "scores.csv"
    status = main(["score", str(model_path), str(csv_path), "--output", str(out_path),
                   "--contamination", "0.1"])
    assert status == 0
    header, rows = _read_output(out_path.read_text())
    assert header == ["log_density", "outlier"]
    assert set(np.unique(rows[:, 1])) == {-1.0, 1.0}
    assert np.sum(rows[:, 1] == -1) == 6
    # The flagged rows are the lowest log-densities.
    assert rows[rows[:, 1] == -1, 0].max() < rows[rows[:, 1] == 1, 0].min()


def test_score_outlier_detector_model(data, tmp_path):
    csv_path = _write_csv(tmp_path / "data.csv", data)
    detector = FlowOutlierDetector(GaussianMixture(random_state=0), contamination=0.2).fit(data)
    model_path = tmp_path / "detector.joblib"
    joblib.dump(detector, model_path)
    out_path = tmp_path / "scores.csv"
    assert main(["score", str(model_path), str(csv_path), "--output", str(out_path)]) == 0
    header, rows = _read_output(out_path.read_text())
    assert header == ["log_density", "outlier"]
    np.testing.assert_array_equal(rows[:, 1], detector.predict(data))


def test_sample_writes_rows(fitted, tmp_path):
    _, model_path = fitted
    out_path = tmp_path / "samples.csv"
    assert main(["sample", str(model_path), "-n", "5", "--random-state", "1",
                 "--output", str(out_path)]) == 0
    header, rows = _read_output(out_path.read_text())
    pandas_installed = hasattr(joblib.load(model_path), "feature_names_in_")
    assert header == (["a", "b", "c"] if pandas_installed else ["x0", "x1", "x2"])
    assert rows.shape == (5, 3) and np.all(np.isfinite(rows))
    # Seeded: the same rows again.
    assert main(["sample", str(model_path), "-n", "5", "--random-state", "1",
                 "--output", str(tmp_path / "again.csv")]) == 0
    np.testing.assert_array_equal(_read_output((tmp_path / "again.csv").read_text())[1], rows)


def test_sample_headerless_model_to_stdout(tmp_path, data, capsys):
    flow = CouplingFlow(n_layers=2, hidden_layer_sizes=(8,), max_epochs=3, random_state=0).fit(data)
    joblib.dump(flow, tmp_path / "flow.joblib")
    assert main(["sample", str(tmp_path / "flow.joblib"), "-n", "5"]) == 0
    header, rows = _read_output(capsys.readouterr().out)
    assert header == ["x0", "x1", "x2"] and rows.shape == (5, 3)


# --- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        ("a,b,c\n1,2,3\n4,oops,6\n", "non-numeric value 'oops'"),
        ("1,2,3\n4,nan,6\n", "not a finite number"),
        ("a,b,c\n1,,3\n4,5,6\n", "empty cell"),
        ("1,2,3\n4,5\n", "2 fields, expected 3"),
        ("", "holds no data"),
        ("a,b,c\n", "no data rows"),
        ("x\n1\n2\n3\n4\n5\n6\n", "1 feature(s)"),
    ],
    ids=["non-numeric", "nan", "empty-cell", "ragged", "empty-file", "header-only", "one-column"],
)
def test_search_bad_data(tmp_path, capsys, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    status = main(["search", str(path), "--output", str(tmp_path / "m.joblib"), "--quiet", *TINY])
    assert message in _assert_error(capsys, status)
    assert not (tmp_path / "m.joblib").exists()


@pytest.mark.parametrize("where, message", [("missing", "does not exist"), ("dir", "is a directory")])
def test_search_output_that_cannot_be_written_fails_before_the_search(
    tmp_path, data, capsys, where, message
):
    csv_path = _write_csv(tmp_path / "data.csv", data)
    (tmp_path / "dir").mkdir()
    output = tmp_path / "dir" if where == "dir" else tmp_path / "no" / "m.joblib"
    status = main(["search", str(csv_path), "--output", str(output), *TINY])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("error: cannot write") and message in captured.err
    assert captured.out == ""  # failed before reading the data, let alone training


def test_search_missing_file(tmp_path, capsys):
    status = main(["search", str(tmp_path / "nope.csv"), "--quiet", *TINY])
    assert "not found" in _assert_error(capsys, status)


def test_search_bad_parameters(tmp_path, data, capsys):
    csv_path = _write_csv(tmp_path / "data.csv", data)
    status = main(["search", str(csv_path), "--output", str(tmp_path / "m.joblib"),
                   "--quiet", *TINY, "--n-layers", "0"])
    # The options' spelling, and no row count for a message that counts none.
    assert _assert_error(capsys, status) == "error: --n-layers must be an int in the range [1, inf). Got 0 instead."
    status = main(["search", str(csv_path), "--output", str(tmp_path / "m.joblib"),
                   "--quiet", *TINY, "--fitness-budget", "0"])
    assert "--fitness-budget" in _assert_error(capsys, status)
    status = main(["search", str(csv_path), "--test-fraction", "1.5", "--quiet", *TINY])
    assert "--test-fraction" in _assert_error(capsys, status)


def test_score_wrong_width(fitted, data, tmp_path, capsys):
    _, model_path = fitted
    csv_path = _write_csv(tmp_path / "narrow.csv", data[:, :2])
    status = main(["score", str(model_path), str(csv_path)])
    assert "2 columns but the model expects 3" in _assert_error(capsys, status)


def test_score_mismatched_column_names(fitted, data, tmp_path, capsys):
    pytest.importorskip("pandas")
    _, model_path = fitted
    csv_path = _write_csv(tmp_path / "renamed.csv", data, header=["a", "b", "z"])
    status = main(["score", str(model_path), str(csv_path)])
    assert "do not match" in _assert_error(capsys, status)


def test_score_missing_data_file(fitted, tmp_path, capsys):
    _, model_path = fitted
    status = main(["score", str(model_path), str(tmp_path / "nope.csv")])
    assert "not found" in _assert_error(capsys, status)


def test_score_bad_contamination(fitted, capsys):
    csv_path, model_path = fitted
    status = main(["score", str(model_path), str(csv_path), "--contamination", "0.9"])
    assert "--contamination must be 'auto' or in (0, 0.5]" in _assert_error(capsys, status)
    assert main(["score", str(model_path), str(csv_path), "--contamination", "some"]) == 2
    assert "argument --contamination: not a number: 'some'" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["missing", "text", "dict", "sklearn-estimator", "unfitted"])
def test_bad_model_file(fitted, tmp_path, capsys, kind):
    csv_path, _ = fitted
    path = tmp_path / "model.joblib"
    if kind == "text":
        path.write_text("this is not a pickle\n")
    elif kind == "dict":
        joblib.dump({"masks": [1, 2]}, path)
    elif kind == "sklearn-estimator":
        joblib.dump(GaussianMixture().fit(np.random.RandomState(0).normal(size=(20, 3))), path)
    elif kind == "unfitted":
        joblib.dump(CouplingFlow(), path)
    for argv in (["score", str(path), str(csv_path)], ["sample", str(path), "-n", "5"]):
        message = _assert_error(capsys, main(argv))
        assert str(path) in message


def test_usage_errors_return_2(capsys):
    assert main(["sample", "model.joblib"]) == 2  # -n missing
    assert main([]) == 2
    assert main(["search", "--n-layers", "many"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_help_in_process(capsys):
    for argv in (["--help"], ["search", "--help"], ["score", "--help"], ["sample", "--help"]):
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "--population-size" in out and "--contamination" in out and "-n N" in out
    # Defaults shown where they mean something, never "(default: None)" or for flags.
    assert "(default: 8)" in out and "default: 1)" in out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_python_dash_m_help():
    result = subprocess.run(
        [sys.executable, "-m", "skflowsearch", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: skflowsearch" in result.stdout
    for command in ("search", "score", "sample"):
        assert command in result.stdout


def test_transform_writes_latent_rows(fitted, tmp_path, data):
    _, model_path = fitted
    csv_path = _write_csv(tmp_path / "data.csv", data)
    out_path = tmp_path / "latent.csv"
    assert main(["transform", str(model_path), str(csv_path), "--output", str(out_path)]) == 0
    header, rows = _read_output(out_path.read_text())
    model = joblib.load(model_path)
    assert header == list(model.get_feature_names_out())
    # The model's own latent rows, at the precision the CSV keeps (repr: exact).
    np.testing.assert_array_equal(rows, model.transform(_with_names_like(model, data)))


def test_transform_rejects_a_model_without_latent_space(tmp_path, data, capsys):
    csv_path = _write_csv(tmp_path / "data.csv", data)
    detector = FlowOutlierDetector(GaussianMixture(random_state=0)).fit(data)
    joblib.dump(detector, tmp_path / "detector.joblib")
    assert main(["transform", str(tmp_path / "detector.joblib"), str(csv_path)]) == 2
    assert "has no latent space" in capsys.readouterr().err


def _with_names_like(model, X):
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return X
    import pandas as pd

    return pd.DataFrame(X, columns=names)


# --- CSV formats ---------------------------------------------------------------------


def _assert_both_readers(path, expected, names, **options):
    """``read_csv`` (numpy's pass) and the cell-by-cell reader agree with ``expected``."""
    X, read_names = read_csv(str(path), **options)
    np.testing.assert_array_equal(X, expected)
    assert read_names == names
    if not options:  # the cell-by-cell reader alone guesses the same layout
        slow, slow_names = _read_csv_cells(str(path), path.read_bytes().decode("utf-8-sig"))
        np.testing.assert_array_equal(slow, expected)
        assert slow_names == names


def _no_cell_reader(monkeypatch):
    """Fail if the slow reader is used: the file must take numpy's one pass."""
    from skflowsearch import cli

    monkeypatch.setattr(cli, "_read_csv_cells", lambda *a, **k: pytest.fail("read cell by cell"))


EXPECTED = np.array([[1.5, 2.25, -0.3], [4.0, 5.5, 6.0]])


@pytest.mark.parametrize(
    "content",
    [
        "a,b,c\n1.5,2.25,-3e-1\n4,5.5,6\n",
        "a;b;c\n1.5;2.25;-3e-1\n4;5.5;6\n",
        "a;b;c\n1,5;2,25;-3e-1\n4;5,5;6\n",  # decimal commas
        "a\tb\tc\n1,5\t2,25\t-0,3\n4\t5,5\t6\n",
        "a\tb\tc\n1.5\t2.25\t-0.3\n4\t5.5\t6\n",
        "  a   b c\n1.5  2.25\t-0.3\n 4 5.5 6\n",  # runs of blanks
        "a, b, c\n1.5, 2.25, -0.3\n4, 5.5, 6\n",
        "# exported 2024\n\n# units: none\na;b;c\n1,5;2,25;-0,3 # first\n# second:\n4;5,5;6\n",
        "a,b,c\r\n1.5,2.25,-0.3\r\n4,5.5,6\r\n",
    ],
    ids=["comma", "semicolon", "semicolon-decimal-comma", "tab-decimal-comma", "tab", "whitespace",
         "comma-space", "comments", "crlf"],
)
def test_read_csv_guesses_the_format(tmp_path, monkeypatch, content):
    path = tmp_path / "table.csv"
    path.write_text(content, newline="")
    _assert_both_readers(path, EXPECTED, ["a", "b", "c"])
    _no_cell_reader(monkeypatch)
    np.testing.assert_array_equal(read_csv(str(path))[0], EXPECTED)


def test_read_csv_given_format(tmp_path):
    path = tmp_path / "pipes.csv"
    path.write_text("% two rows\na|b|c\n1,5|2,25|-0,3\n4|5,5|6\n")
    _assert_both_readers(path, EXPECTED, ["a", "b", "c"], delimiter="|", decimal=",", comment="%")
    # Not guessed: '|' is no candidate; the message says which delimiter was used.
    with pytest.raises(Exception, match=r"line 3: 4 fields, expected 1 \(delimiter ','\)"):
        read_csv(str(path), comment="%")
    pipes = tmp_path / "no-commas.csv"
    pipes.write_text("a|b\n1|2\n")
    with pytest.raises(Exception, match=r"line 2, column 1 \('a\|b'\): non-numeric value '1\|2' "
                                        r"\(one column found with the delimiter ','; choose the "
                                        r"delimiter with --delimiter\)"):
        read_csv(str(pipes))
    with pytest.raises(Exception, match="delimiter and the decimal mark are both ','"):
        read_csv(str(path), delimiter=",", decimal=",")


def test_read_csv_comment_option(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2 # note\n3,4\n")
    _assert_both_readers(path, [[1.0, 2.0], [3.0, 4.0]], ["a", "b"])
    with pytest.raises(Exception, match=r"line 2, column 2 \('b'\): non-numeric value '2 # note'"):
        read_csv(str(path), comment="")


def test_read_csv_header_option(tmp_path):
    path = tmp_path / "years.csv"
    path.write_text("1990,1991,1992\n1.5,2,3\n4,5,6\n")
    X, names = read_csv(str(path))  # guessed: numbers are data
    assert names is None and X.shape == (3, 3)
    X, names = read_csv(str(path), header=True)
    assert names == ["1990", "1991", "1992"]
    np.testing.assert_array_equal(X, [[1.5, 2, 3], [4, 5, 6]])
    named = tmp_path / "named.csv"
    named.write_text("a,b\n1,2\n")
    with pytest.raises(Exception, match=r"named.csv, line 1, column 1: non-numeric value 'a'"):
        read_csv(str(named), header=False)
    assert read_csv(str(named), header=True)[1] == ["a", "b"]


def test_read_csv_encodings(tmp_path, capsys):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("# relevé\ntempérature;pression\n1,5;2\n3;4\n".encode("latin-1"))
    X, names = read_csv(str(latin))
    assert names == ["température", "pression"]
    np.testing.assert_array_equal(X, [[1.5, 2.0], [3.0, 4.0]])
    err = capsys.readouterr().err
    assert err == (f"note: {latin} is not UTF-8 (byte 0xe9 on line 1); read as Latin-1 "
                   "(choose the encoding with --encoding)\n")
    # Named, it is read without a note; as UTF-8 it is an error that says where.
    assert read_csv(str(latin), encoding="latin-1")[1] == names
    assert capsys.readouterr().err == ""
    with pytest.raises(Exception, match=r"not valid utf-8 text \(byte 0xe9 on line 1\)"):
        read_csv(str(latin), encoding="utf-8")
    euro = tmp_path / "euro.csv"
    euro.write_bytes("prix €;n\n1,5;2\n".encode("cp1252"))
    assert read_csv(str(euro), encoding="cp1252")[1] == ["prix €", "n"]
    for encoding in ("utf-8-sig", "utf-16"):  # with a byte order mark
        path = tmp_path / f"{encoding}.csv"
        path.write_text("größe\tn\n1,5\t2\n", encoding=encoding)
        X, names = read_csv(str(path))
        assert names == ["größe", "n"] and X.tolist() == [[1.5, 2.0]]
        assert read_csv(str(path), encoding="utf-8" if encoding == "utf-8-sig" else encoding)[1] == names
    assert capsys.readouterr().err == ""


def test_read_csv_binary_file(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(Exception, match="is not a text CSV file .it holds NUL bytes"):
        read_csv(str(path))


@pytest.mark.parametrize(
    "content, message",
    [
        ("a;b;c\n1;2;3\n4;x;6\n", r"line 3, column 2 \('b'\): non-numeric value 'x'$"),
        ("# c\n\na,b\n1,2\n1,zz\n", r"line 5, column 2 \('b'\): non-numeric value 'zz'$"),
        ("1\t2\n3\t?\n", r"line 2, column 2: non-numeric value '\?' "
                         r"\(a missing entry\? pass --missing \?\)$"),
        ("1\t2\n3\tx\n", r"line 2, column 2: non-numeric value 'x'$"),
        ("a;b\n1;2\n3;\n", r"line 3, column 2 \('b'\): empty cell "
                          r"\(a missing entry\? pass --missing ''\)$"),
        ("a,b\n1,NaN\n", r"line 2, column 2 \('b'\): 'NaN' is not a finite number "
                        r"\(a missing entry\? pass --missing NaN\)$"),
        ("a;b\n1.5;2\n3;2,5\n", r"line 3, column 2 \('b'\): non-numeric value '2,5' "
                                r"\(a decimal comma\? pass --decimal ,\)$"),
        ("1;2;3\n4;5\n", r"line 2: 2 fields, expected 3 \(delimiter ';'\)$"),
        ("a b\n1 inf\n", r"line 2, column 2 \('b'\): 'inf' is not a finite number$"),
    ],
    ids=["semicolon", "comments-count", "tab-no-header", "tab-no-hint", "empty", "nan",
         "mixed-decimals", "ragged", "inf"],
)
def test_read_csv_errors_name_the_line_and_column(fitted, tmp_path, capsys, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(Exception, match=message) as info:
        read_csv(str(path))
    assert str(info.value).startswith(f"{path}, line ")
    # The same message reaches a CLI user.
    _, model_path = fitted
    assert _assert_error(capsys, main(["score", str(model_path), str(path)])) == f"error: {info.value}"


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_score_reads_the_odd_formats(fitted, data, tmp_path, capsys):
    _, model_path = fitted
    model = joblib.load(model_path)
    expected = model.score_samples(_with_names_like(model, data))
    rows = "\n".join(";".join(repr(float(v)).replace(".", ",") for v in row) for row in data)
    latin = tmp_path / "excel.csv"
    latin.write_bytes(f"# mesures à Zürich\na;b;c\n{rows}\n".encode("latin-1"))
    assert main(["score", str(model_path), str(latin)]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("note:") and "Latin-1" in captured.err
    np.testing.assert_allclose(_read_output(captured.out)[1][:, 0], expected, rtol=1e-12)
    # The same file, its format given.
    assert main(["score", str(model_path), str(latin), "--delimiter", ";", "--decimal", ",",
                 "--encoding", "latin-1", "--header", "--comment", "#"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    np.testing.assert_allclose(_read_output(captured.out)[1][:, 0], expected, rtol=1e-12)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--delimiter", "ab", "argument --delimiter: not a delimiter: 'ab'"),
        ("--delimiter", ".", "argument --delimiter: not a delimiter: '.'"),
        ("--encoding", "klingon", "argument --encoding: unknown encoding: 'klingon'"),
        ("--comment", "1", "argument --comment: not a comment marker: '1'"),
        ("--decimal", ";", "argument --decimal: invalid choice: ';'"),
    ],
)
def test_bad_csv_options(capsys, option, value, message):
    assert main(["score", "model.joblib", "data.csv", option, value]) == 2
    assert message in capsys.readouterr().err


def test_csv_option_words():
    parser = _build_parser()
    args = parser.parse_args(["score", "m", "d", "--delimiter", "tab", "--no-header"])
    assert (args.delimiter, args.header, args.decimal, args.comment) == ("\t", False, None, "#")
    assert parser.parse_args(["transform", "m", "d", "--delimiter", "whitespace"]).delimiter == " "
    args = parser.parse_args(["search", "d", "--missing", "-999", "--missing", "", "--missing", "NA"])
    assert _csv_options(args)["missing"] == ("-999", "", "NA")
    assert _csv_options(parser.parse_args(["score", "m", "d"]))["missing"] == ()
    assert parser.parse_args(["search", "--header"]).header is True


# --- messages in the command line's spelling ------------------------------------------


@pytest.mark.parametrize(
    "message, expected",
    [
        ("Pass whiten=False, or more rows.", "Pass --no-whiten, or more rows."),
        ("whiten=True needs more training rows", "--whiten needs more training rows"),
        ("reached max_epochs=3 while improving. Consider a larger max_epochs.",
         "reached --max-epochs 3 while improving. Consider a larger --max-epochs."),
        ("n_layers == 0, must be >= 1.", "--n-layers == 0, must be >= 1."),
        ("a smaller selection_fraction or validation_fraction=0.1.",
         "a smaller --selection-fraction or --validation-fraction 0.1."),
        ("lower learning_rate or max_log_scale", "lower --learning-rate or --max-log-scale"),
        ("hidden_layer_sizes must be", "--hidden must be"),
        ("rows (n_samples = 48 minus 5\n   for validation)", "rows (48 rows minus 5 for validation)"),
        # Plain words and attributes stay.
        ("one flow on one device; pick one", "one flow on one device; pick one"),
        ("masks_ and n_layers_ and hidden_layer_sizes_", "masks_ and n_layers_ and hidden_layer_sizes_"),
    ],
)
def test_cli_spelling(message, expected):
    assert _cli_spelling(message) == expected


def test_search_errors_name_the_rows_and_the_options(tmp_path, data, capsys, monkeypatch):
    """An estimator's error reaches the CLI user in option spelling, its rows explained."""
    csv_path = _write_csv(tmp_path / "data.csv", data)

    def fail(self, X, y=None):
        raise ValueError(f"n_samples = {len(X)} is too few with validation_fraction=0.1. "
                         "Pass whiten=False, or more rows.")

    monkeypatch.setattr(StructureSearchFlow, "fit", fail)
    status = main(["search", str(csv_path), "--output", str(tmp_path / "m.joblib"), "--quiet"])
    assert _assert_error(capsys, status) == (
        f"error: fitting the searched flow on 48 of the 60 rows of {csv_path} (12 held out by "
        "--test-fraction 0.2): 48 rows is too few with --validation-fraction 0.1. "
        "Pass --no-whiten, or more rows."
    )
    status = main(["search", str(csv_path), "--output", str(tmp_path / "m.joblib"), "--quiet",
                   "--test-fraction", "0"])
    assert f"fitting the searched flow on the 60 rows of {csv_path}: 60 rows is too few" in (
        _assert_error(capsys, status))
    # A Python user gets the estimator's own words.
    with pytest.raises(ValueError, match="Pass whiten=False"):
        StructureSearchFlow().fit(data)


def test_search_too_few_rows_after_the_split(tmp_path, data, capsys):
    csv_path = _write_csv(tmp_path / "two.csv", data[:2])
    message = _assert_error(capsys, main(["search", str(csv_path), "--quiet", *TINY]))
    # scikit-learn counts the one row left for fitting; the message says where it comes from.
    assert message.startswith(f"error: fitting the searched flow on 1 of the 2 rows of {csv_path} "
                              "(1 held out by --test-fraction 0.2): ")
    one = _write_csv(tmp_path / "one.csv", data[:1])
    assert _assert_error(capsys, main(["search", str(one), "--quiet", *TINY])) == (
        f"error: --test-fraction 0.2 of the 1 row of {one} leaves no rows to fit the flows on")


def test_warnings_reach_the_user_in_option_spelling(tmp_path, data, capsys, monkeypatch):
    from sklearn.exceptions import ConvergenceWarning

    original_fit = StructureSearchFlow.fit

    def warn_and_fit(self, X, y=None):
        warnings.warn(f"reached max_epochs={self.max_epochs}; consider a larger max_epochs.",
                      ConvergenceWarning)
        warnings.warn(f"{len(X) - 5} training rows for {X.shape[1]} features.", UserWarning)
        return original_fit(self, X, y)

    monkeypatch.setattr(StructureSearchFlow, "fit", warn_and_fit)
    csv_path = _write_csv(tmp_path / "data.csv", data)
    shown = warnings.showwarning
    assert main(["search", str(csv_path), "--output", str(tmp_path / "m.joblib"), "--quiet", *TINY]) == 0
    err_lines = capsys.readouterr().err.splitlines()
    assert "warning: reached --max-epochs 3; consider a larger --max-epochs." in err_lines
    # A warning that counts rows says which rows it counts.
    assert (f"warning: fitting the searched flow on 48 of the 60 rows of {csv_path} (12 held out by "
            "--test-fraction 0.2): 43 training rows for 3 features.") in err_lines
    assert not any("max_epochs" in line or "ConvergenceWarning" in line for line in err_lines)
    assert warnings.showwarning is shown  # restored for Python users


def test_n_jobs_zero_is_a_usage_error(capsys):
    assert main(["search", "--n-jobs", "0"]) == 2
    assert "argument --n-jobs: 0 has no meaning; use a positive number or -1" in capsys.readouterr().err


def test_score_contamination_auto(fitted, data, tmp_path):
    _, model_path = fitted
    far = np.array([[30.0, -30.0, 30.0], [-25.0, 25.0, 40.0]])
    csv_path = _write_csv(tmp_path / "data.csv", np.vstack([data, far]), header=["a", "b", "c"])
    out_path = tmp_path / "scores.csv"
    assert main(["score", str(model_path), str(csv_path), "--output", str(out_path),
                 "--contamination", "auto"]) == 0
    header, rows = _read_output(out_path.read_text())
    assert header == ["log_density", "outlier"]
    scores = rows[:, 0]
    median = np.median(scores)
    offset = median - 3 * 1.4826 * np.median(np.abs(scores - median))
    np.testing.assert_array_equal(rows[:, 1], np.where(scores < offset, -1, 1))
    assert np.all(rows[-2:, 1] == -1)  # the far rows
    assert np.mean(rows[:-2, 1] == -1) < 0.1


# --- missing entries (--missing) -----------------------------------------------------


def _gaps_csv(path, X, header=("a", "b", "c")):
    """``X`` as CSV with a header; NaN written as an empty cell."""
    lines = [",".join(header)] + [
        ",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in X
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_csv_missing_cells(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("a,b,c\n1.5,,-0.3\nNA,5.5,-999\n-999.0,2,3\n")
    X, names = read_csv(str(path), missing=("", "NA", "-999"))
    np.testing.assert_array_equal(X, [[1.5, np.nan, -0.3], [np.nan, 5.5, np.nan], [np.nan, 2, 3]])
    assert names == ["a", "b", "c"]
    # Only the cells named are missing.
    with pytest.raises(Exception, match=r"line 3, column 1 \('a'\): non-numeric value 'NA' "
                                        r"\(a missing entry\? pass --missing NA\)$"):
        read_csv(str(path), missing=("",))


def test_read_csv_missing_code_takes_numpys_pass_and_agrees_with_the_cell_reader(
    tmp_path, monkeypatch
):
    from skflowsearch.cli import _layout

    path = tmp_path / "codes.csv"
    text = "a;b\n1,5;-999\n-999;2,5\n3;4\n"
    path.write_text(text)
    expected = [[1.5, np.nan], [np.nan, 2.5], [3.0, 4.0]]
    slow, names = _read_csv_cells(str(path), text, _layout(text, str(path), missing=("-999",)))
    np.testing.assert_array_equal(slow, expected)
    _no_cell_reader(monkeypatch)
    X, fast_names = read_csv(str(path), missing=("-999",))
    np.testing.assert_array_equal(X, expected)
    assert names == fast_names == ["a", "b"]


def test_missing_cells_count_as_numbers_when_the_format_is_guessed(tmp_path):
    path = tmp_path / "first-row-gap.csv"
    path.write_text("NA;1\n2;3\n")
    X, names = read_csv(str(path), missing=("NA",))  # data, not a header; ';' guessed
    np.testing.assert_array_equal(X, [[np.nan, 1.0], [2.0, 3.0]])
    assert names is None
    assert read_csv(str(path))[1] == ["NA", "1"]  # without --missing, a header


def test_missing_entries_from_the_command_line(tmp_path, data, capsys):
    from sklearn.model_selection import train_test_split

    train_rows, test_rows = train_test_split(np.arange(60), test_size=0.2, random_state=0)
    X = data.copy()
    X[train_rows[:3], [0, 1, 2]] = np.nan
    X[test_rows[:2], [2, 0]] = np.nan
    csv_path = _gaps_csv(tmp_path / "gaps.csv", X)
    model_path = tmp_path / "model.joblib"
    status = main(["search", str(csv_path), "--missing", "", "--output", str(model_path), *TINY])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "the flow is fitted on the 45 complete rows" in captured.err
    assert "2 of the 12 held-out rows have missing entries: the held-out score is the mean " \
           "over the others" in captured.out
    model = joblib.load(model_path)
    complete_test = np.sort(test_rows[2:])
    expected = model.score(_with_names_like(model, data[complete_test]))
    assert float(_table(captured.out)["searched"][0]) == pytest.approx(expected, abs=5e-4)

    # score: a marginal density for each row with missing entries.
    out_path = tmp_path / "scores.csv"
    assert main(["score", str(model_path), str(csv_path), "--missing", "", "-o", str(out_path)]) == 0
    _, rows = _read_output(out_path.read_text())
    assert np.isfinite(rows).all()
    np.testing.assert_allclose(rows[:, 0], model.score_samples(_with_names_like(model, X)),
                               rtol=1e-12)
    # ... which one threshold cannot flag beside complete rows.
    status = main(["score", str(model_path), str(csv_path), "--missing", "", "--contamination", "0.1"])
    assert "5 of the 60 rows of" in _assert_error(capsys, status)

    # transform: no latent coordinate is known for a row with missing entries.
    out_path = tmp_path / "latent.csv"
    assert main(["transform", str(model_path), str(csv_path), "--missing", "", "-o",
                 str(out_path)]) == 0
    _, latent = _read_output(out_path.read_text())
    incomplete = np.isnan(X).any(axis=1)
    assert np.isnan(latent[incomplete]).all() and np.isfinite(latent[~incomplete]).all()
