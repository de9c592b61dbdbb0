import argparse
import re
import subprocess
import sys
import types
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from skflowsearch import CouplingFlow, FlowOutlierDetector, StructureSearchFlow
from skflowsearch.cli import _SEARCH_OPTIONS, _SHARED_OPTIONS, _build_parser, main

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
    assert model.get_params()["whiten"] is True  # the default
    assert not np.allclose(model.input_matrix_, np.diag(np.diag(model.input_matrix_)))
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
    """Both estimators' docstrings without Sphinx markup, whitespace joined."""
    text = " ".join((StructureSearchFlow.__doc__ or "").split() + (CouplingFlow.__doc__ or "").split())
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return re.sub(r"``([^`]+)``", r"\1", text)


def test_search_option_defaults_are_the_estimator_defaults(capsys):
    expected = StructureSearchFlow().get_params()
    parser = _build_parser()
    args = parser.parse_args(["search"])
    subcommands, = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = {action.dest: action for action in subcommands.choices["search"]._actions}
    entries = _search_help(capsys)
    docs = _undecorated_docs()
    assert {"fitness_budget", "pick", "whiten"} <= set(_SEARCH_OPTIONS)
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
            # The help is the first sentence of the parameter's docstring entry.
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
    assert entries["--whiten"].endswith("(default: --no-whiten)")
    assert entries["--fitness-budget"].endswith("(default: 0.25)")


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
                   "--size-penalty", "0.001", "--n-jobs", "1", "--random-state", "3"])
    assert status == 0
    _assert_table(capsys.readouterr().out)
    model = joblib.load(model_path)
    params = model.get_params()
    assert params["whiten"] is False
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
    assert set(_SHARED_OPTIONS) <= set(flow.get_params())
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
    assert "n_layers" in _assert_error(capsys, status)
    status = main(["search", str(csv_path), "--output", str(tmp_path / "m.joblib"),
                   "--quiet", *TINY, "--fitness-budget", "0"])
    assert "fitness_budget" in _assert_error(capsys, status)
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
    assert "--contamination" in _assert_error(capsys, status)


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
