"""Command line interface: ``skflowsearch {search,score,sample,transform}``.

``search`` fits :class:`~skflowsearch.StructureSearchFlow` (and, with
``--compare``, a :class:`~skflowsearch.CouplingFlow` with alternating masks)
to a CSV file or a bundled dataset and saves the searched model with joblib;
its estimator options take their defaults and help from the estimators;
``score`` writes the log-density of every row of a CSV file under a saved
model; ``sample`` draws rows from a saved model; ``transform`` writes the
latent rows of a CSV file.

CSV files are read with the standard library: comma-separated numeric
columns, with an optional header row (recognised when the first row holds a
value that is not a number). Bad input ends the command with one
``error: ...`` line on stderr and exit status 2.
"""

import argparse
import csv
import io
import math
import os
import sys
import time
import warnings

__all__ = ["main"]

_DEFAULT_MODEL = "skflowsearch-model.joblib"
_DEFAULT_DATASET = "breast_cancer"
# Warning emitted by scikit-learn when a model fitted on named columns scores
# an unnamed array; the CLI checks the names itself.
_FEATURE_NAMES_WARNING = "X does not have valid feature names"


class CLIError(Exception):
    """A user-facing error: printed as one ``error:`` line, exit status 2."""


# --- reading and writing CSV -------------------------------------------------------


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv(path):
    """Read a numeric CSV file.

    Well-formed files are parsed by numpy in one vectorized pass; when that
    fails, the file is read again cell by cell to say where and why.

    Parameters
    ----------
    path : str
        File name.

    Returns
    -------
    X : ndarray of shape (n_rows, n_columns), dtype float64
    names : list of str or None
        The header, when the first row holds a non-empty value that is not a
        number; else None.

    Raises
    ------
    CLIError
        If the file cannot be read, is empty, has rows of different widths,
        or holds an empty, non-numeric, NaN or infinite value.
    """
    import numpy as np

    text = _read_text(path)
    first_line, _, _ = text.lstrip("\ufeff").lstrip("\r\n").partition("\n")
    first = [cell.strip() for cell in next(csv.reader([first_line]), [])]
    names = None
    if any(cell and not _is_number(cell) for cell in first):
        names = [cell or f"x{j}" for j, cell in enumerate(first)]
    if '"' not in text:  # no quoting: numpy's parser reads exactly what csv would
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data": handled below
                X = np.loadtxt(io.StringIO(text.lstrip("\ufeff")), delimiter=",", dtype=np.float64,
                               skiprows=int(names is not None) + _leading_blank_lines(text),
                               ndmin=2, comments=None)
        except ValueError:
            X = None
        if X is not None and X.size and np.isfinite(X).all() and (names is None or
                                                                   X.shape[1] == len(names)):
            return X, names
    return _read_csv_cells(path, text)


def _read_text(path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return handle.read()
    except FileNotFoundError:
        raise CLIError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise CLIError(f"data file is a directory: {path}") from None
    except UnicodeDecodeError:
        raise CLIError(f"{path} is not a text CSV file") from None
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None


def _leading_blank_lines(text):
    count = 0
    for line in text.lstrip("\ufeff").splitlines():
        if line.strip():
            break
        count += 1
    return count


def _read_csv_cells(path, text):
    """The cell-by-cell reader: slow, but it names the line, column and value at fault."""
    import numpy as np

    try:
        reader = csv.reader(io.StringIO(text))
        lines = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            lines.append((reader.line_num, [cell.strip() for cell in row]))
    except csv.Error as exc:
        raise CLIError(f"{path} is not a valid CSV file: {exc}") from None
    if not lines:
        raise CLIError(f"{path} holds no data")

    names = None
    first = lines[0][1]
    if any(cell and not _is_number(cell) for cell in first):
        names = [cell or f"x{j}" for j, cell in enumerate(first)]
        lines = lines[1:]
        if not lines:
            raise CLIError(f"{path} has a header but no data rows")
    n_columns = len(first)
    X = np.empty((len(lines), n_columns))
    for i, (line_number, row) in enumerate(lines):
        if len(row) != n_columns:
            raise CLIError(
                f"{path}, line {line_number}: {len(row)} fields, expected {n_columns}"
            )
        for j, cell in enumerate(row):
            column = f"column {j + 1}" + (f" ({names[j]!r})" if names else "")
            if not cell:
                raise CLIError(f"{path}, line {line_number}, {column}: empty cell")
            try:
                value = float(cell)
            except ValueError:
                hint = " (one column found: is the file comma-separated?)" if n_columns == 1 else ""
                raise CLIError(
                    f"{path}, line {line_number}, {column}: non-numeric value {cell!r}{hint}"
                ) from None
            if not math.isfinite(value):
                raise CLIError(
                    f"{path}, line {line_number}, {column}: {cell!r} is not a finite number"
                )
            X[i, j] = value
    return X, names


def _open_output(path):
    if path is None or path == "-":
        return _NoClose(sys.stdout)
    try:
        return open(path, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None


class _NoClose:
    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self.stream

    def __exit__(self, *exc_info):
        self.stream.flush()
        return False


def _write_csv(path, header, columns):
    """Write equally long ``columns`` under ``header``.

    Float columns are written at full precision (17 significant digits, which
    read back to the same float64), integer columns as integers.
    """
    import numpy as np

    formats = ["%d" if column.dtype.kind in "iub" else "%.17g" for column in columns]
    table = np.column_stack([np.asarray(column, dtype=np.float64) for column in columns])
    with _open_output(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        np.savetxt(handle, table, fmt=formats, delimiter=",")


def _with_names(X, names):
    """A DataFrame with ``names`` as columns if pandas is installed, else ``X``."""
    if names is None:
        return X
    try:
        import pandas as pd
    except ImportError:
        return X
    return pd.DataFrame(X, columns=names)


# --- models ----------------------------------------------------------------------


def _load_model(path):
    import joblib
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    from ._base import BaseFlow
    from ._outlier import FlowOutlierDetector

    if not os.path.isfile(path):
        raise CLIError(f"model file not found: {path}")
    try:
        model = joblib.load(path)
    except Exception as exc:  # arbitrary bytes can make unpickling raise anything
        raise CLIError(
            f"cannot load {path}: not a model saved by skflowsearch "
            f"({type(exc).__name__})"
        ) from None
    if not isinstance(model, (BaseFlow, FlowOutlierDetector)):
        raise CLIError(
            f"{path} holds a {type(model).__name__} object, not a skflowsearch estimator"
        )
    try:
        check_is_fitted(model)
    except NotFittedError:
        raise CLIError(f"the model in {path} is not fitted") from None
    return model


def _check_columns(model, X, names, data_path):
    expected = model.n_features_in_
    if X.shape[1] != expected:
        raise CLIError(
            f"{data_path} has {X.shape[1]} columns but the model expects {expected}"
        )
    model_names = getattr(model, "feature_names_in_", None)
    if names is not None and model_names is not None and list(names) != list(model_names):
        raise CLIError(
            f"the columns of {data_path} ({', '.join(names)}) do not match the "
            f"model's features ({', '.join(map(str, model_names))})"
        )


def _score_samples(model, X):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FEATURE_NAMES_WARNING, category=UserWarning)
        return model.score_samples(X)


# --- commands ----------------------------------------------------------------------


def _say(args, *message):
    if not args.quiet:
        print(*message, flush=True)


def _format_score(value):
    return "n/a" if value is None else f"{value:.3f}"


def _run_search(args):
    import joblib
    import numpy as np
    from sklearn.model_selection import train_test_split

    from . import CouplingFlow, StructureSearchFlow
    from .datasets import load_dataset

    if not 0 <= args.test_fraction < 1:
        raise CLIError(f"--test-fraction must be in [0, 1); got {args.test_fraction}")
    _check_output_directory(args.output)
    if args.data is not None:
        X, names = read_csv(args.data)
        source = args.data
    else:
        X, names = load_dataset(args.dataset), None
        source = f"bundled dataset {args.dataset!r}"

    if args.test_fraction > 0:
        rows = np.arange(X.shape[0])
        try:
            train_rows, test_rows = train_test_split(
                rows, test_size=args.test_fraction, random_state=args.random_state
            )
        except ValueError as exc:
            raise CLIError(f"cannot hold out --test-fraction {args.test_fraction}: {exc}") from None
        X_train, X_test = X[np.sort(train_rows)], X[np.sort(test_rows)]
    else:
        X_train, X_test = X, None
    _say(
        args,
        f"{source}: {X.shape[1]} features, {X_train.shape[0]} training rows, "
        f"{0 if X_test is None else X_test.shape[0]} held-out rows",
    )

    settings = {name: getattr(args, name) for name in _SEARCH_OPTIONS}
    settings["hidden_layer_sizes"] = tuple(settings["hidden_layer_sizes"])
    search = StructureSearchFlow(
        **settings, device=args.device, random_state=args.random_state, verbose=0 if args.quiet else 1,
    )
    models = [("searched", search)]
    if args.compare:
        models.append(("alternating", CouplingFlow(
            masks="alternating",
            **{name: settings[name] for name in _SHARED_OPTIONS},
            device=args.device,
            random_state=args.random_state,
        )))
    train = _with_names(X_train, names)
    test = None if X_test is None else _with_names(X_test, names)

    results = []
    for label, estimator in models:
        _say(args, f"fitting the {label} flow ...")
        start = time.perf_counter()
        estimator.fit(train)
        seconds = time.perf_counter() - start
        held_out = None if test is None else estimator.score(test)
        results.append((label, held_out, estimator.n_parameters_, seconds))

    print()
    print("| model | held-out mean log-likelihood | parameters | fit time (s) |")
    print("|:--|--:|--:|--:|")
    for label, held_out, n_parameters, seconds in results:
        print(f"| {label} | {_format_score(held_out)} | {n_parameters} | {seconds:.1f} |")
    print()

    try:
        joblib.dump(search, args.output)
    except OSError as exc:
        raise CLIError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"saved the searched model to {args.output}")

    if args.plots is not None:
        _save_plots(search, train, args.plots)
    return 0


def _check_output_directory(path):
    """Fail before a search, not after it, when ``path`` cannot be written as a file."""
    if os.path.isdir(path):
        raise CLIError(f"cannot write {path}: it is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"cannot write {path}: directory {directory} does not exist")


def _save_plots(estimator, X, directory):
    try:
        from .plotting import save_search_plots
    except ImportError as exc:
        print(f"plots skipped: plotting is unavailable ({exc})")
        return
    try:
        save_search_plots(estimator, X, directory)
    except ImportError as exc:  # e.g. matplotlib missing
        print(f"plots skipped: plotting is unavailable ({exc})")
        return
    print(f"saved plots to {directory}")


def _run_score(args):
    import numpy as np

    from ._outlier import FlowOutlierDetector

    if args.contamination is not None and not 0 < args.contamination <= 0.5:
        raise CLIError(f"--contamination must be in (0, 0.5]; got {args.contamination}")
    model = _load_model(args.model)
    X, names = read_csv(args.data)
    _check_columns(model, X, names, args.data)
    scores = np.asarray(_score_samples(model, X), dtype=float)
    header, columns = ["log_density"], [scores]
    if args.contamination is not None:
        # The scored rows' own quantile: a saved flow does not keep its
        # training scores.
        offset = np.percentile(scores, 100.0 * args.contamination)
        header.append("outlier")
        columns.append(np.where(scores < offset, -1, 1))
    elif isinstance(model, FlowOutlierDetector):
        header.append("outlier")
        columns.append(np.where(scores < model.offset_, -1, 1))
    _write_csv(args.output, header, columns)
    return 0


def _run_sample(args):
    from ._outlier import FlowOutlierDetector

    if args.n < 1:
        raise CLIError(f"-n must be at least 1; got {args.n}")
    model = _load_model(args.model)
    density = model.estimator_ if isinstance(model, FlowOutlierDetector) else model
    if not callable(getattr(density, "sample", None)):
        raise CLIError(f"the model in {args.model} cannot draw samples")
    samples = density.sample(args.n, random_state=args.random_state)
    names = getattr(model, "feature_names_in_", None)
    header = [str(name) for name in names] if names is not None else [
        f"x{j}" for j in range(samples.shape[1])
    ]
    _write_csv(args.output, header, list(samples.T))
    return 0


def _run_transform(args):
    from ._outlier import FlowOutlierDetector

    model = _load_model(args.model)
    flow = model.estimator_ if isinstance(model, FlowOutlierDetector) else model
    if not callable(getattr(flow, "transform", None)):
        raise CLIError(f"the model in {args.model} has no latent space (no transform)")
    X, names = read_csv(args.data)
    _check_columns(model, X, names, args.data)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FEATURE_NAMES_WARNING, category=UserWarning)
        latent = flow.transform(X)
    header = [str(name) for name in flow.get_feature_names_out()]
    _write_csv(args.output, header, list(latent.T))
    return 0


# --- argument parsing --------------------------------------------------------------

# StructureSearchFlow parameters offered as options of ``search``; their
# defaults and help come from the estimator itself.
_SEARCH_OPTIONS = (
    "n_layers", "hidden_layer_sizes", "population_size", "n_offspring", "n_generations",
    "fitness_budget", "max_epochs", "size_penalty", "pick", "race_margin", "whiten", "n_jobs",
)
# The ones the --compare CouplingFlow shares.
_SHARED_OPTIONS = ("n_layers", "hidden_layer_sizes", "max_epochs", "whiten")


def _parameter_help(estimator_class, name):
    """First sentence of parameter ``name`` in the numpydoc of ``estimator_class``.

    Sphinx markup is dropped: inline literals and roles keep only their text.
    """
    import inspect
    import re

    doc = inspect.getdoc(estimator_class) or ""
    match = re.search(rf"^{name}(?: : [^\n]*)?\n((?:    [^\n]*\n?)+)", doc, flags=re.MULTILINE)
    if match is None:
        return ""
    text = " ".join(line.strip() for line in match.group(1).splitlines())
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    return first.replace("%", "%%")


def _finite_float(text):
    """argparse type: a finite float (the estimators do not all reject NaN or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _add_estimator_option(parser, name):
    """An option for StructureSearchFlow parameter ``name``, with its default and help."""
    from . import CouplingFlow, StructureSearchFlow
    from ._search_flow import _PICK_RULES

    default = StructureSearchFlow().get_params()[name]
    flag = "--" + name.replace("_", "-")
    # Parameters shared with CouplingFlow are documented there.
    help_text = _parameter_help(StructureSearchFlow, name) or _parameter_help(CouplingFlow, name)
    if name == "hidden_layer_sizes":
        parser.add_argument("--hidden", dest=name, type=int, nargs="+", default=list(default),
                            metavar="WIDTH", help=help_text)
    elif isinstance(default, bool):
        action = parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                     default=default, help=help_text)
        # Python 3.10 appends its own "(default: True)"; the formatter names the flag instead.
        action.help = help_text
    elif name == "n_jobs":
        parser.add_argument(flag, dest=name, type=int, default=None,
                            help="parallel training tasks (-1: all cores; default: 1)")
    elif name == "pick":
        parser.add_argument(flag, dest=name, choices=_PICK_RULES, default=default, help=help_text)
    else:
        kind = _finite_float if isinstance(default, float) else type(default)
        parser.add_argument(flag, dest=name, type=kind, default=default, help=help_text)


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show ``(default: ...)`` only where there is a default worth reading.

    Not for flags, nor for options whose default None means "absent" (their
    help says what happens then); a ``--x/--no-x`` pair names the default one.
    """

    def _get_help_string(self, action):
        if isinstance(action, argparse.BooleanOptionalAction) and isinstance(action.default, bool):
            # "(default: --whiten)" rather than "(default: True)".
            positive = next(flag for flag in action.option_strings if not flag.startswith("--no-"))
            chosen = positive if action.default else "--no-" + positive[2:]
            return f"{action.help} (default: {chosen})"
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def _build_parser():
    from .datasets import DATASETS

    parser = argparse.ArgumentParser(
        prog="skflowsearch",
        description=(
            "Normalizing flows for tabular data with an evolutionary search over "
            "their coupling masks."
        ),
        epilog="Model files are joblib pickles: load only files you trust.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    search = commands.add_parser(
        "search",
        help="search coupling masks on a CSV file (or a bundled dataset) and save the model",
        description=(
            "Fit StructureSearchFlow (and, with --compare, a CouplingFlow with "
            "alternating masks); print the held-out mean log-likelihood, "
            "parameter count and fit time, and save the searched model. The "
            "estimator options take the estimator's defaults."
        ),
        formatter_class=_DefaultsHelpFormatter,
    )
    search.add_argument(
        "data", nargs="?", metavar="DATA.csv",
        help="numeric CSV file, optionally with a header row (default: the bundled dataset)",
    )
    search.add_argument("--dataset", choices=DATASETS, default=_DEFAULT_DATASET,
                        help="bundled dataset used when no DATA.csv is given")
    search.add_argument("--output", "-o", default=_DEFAULT_MODEL, help="where to save the searched model")
    for name in _SEARCH_OPTIONS:
        _add_estimator_option(search, name)
    search.add_argument("--compare", action="store_true",
                        help="also fit a CouplingFlow with alternating masks and the same settings, "
                             "and print both (doubles the work or more)")
    search.add_argument("--device", default="cpu", help='"cpu", "cuda", "cuda:N" or "auto"')
    search.add_argument("--random-state", type=int, default=0, help="seed of the split and of the fits")
    search.add_argument("--test-fraction", type=float, default=0.2, help="fraction of rows held out")
    search.add_argument("--quiet", "-q", action="store_true", help="no progress bar or status lines")
    search.add_argument("--plots", metavar="DIR", default=None,
                        help="also save diagnostic plots to DIR (needs matplotlib)")
    search.set_defaults(run=_run_search)

    score = commands.add_parser(
        "score",
        help="write the log-density of every row of a CSV file",
        description=(
            "Write one log-density (nats, column log_density) per row of DATA.csv "
            "under a saved model. With --contamination, an outlier column marks "
            "with -1 the rows below that quantile of the scored rows' own "
            "log-densities (a saved flow does not keep its training scores) and "
            "the others with +1; a saved FlowOutlierDetector without "
            "--contamination uses its own threshold."
        ),
    )
    _add_model_data_output(score)
    score.add_argument("--contamination", type=float, default=None, metavar="C",
                       help="fraction in (0, 0.5] of rows to flag as outliers")
    score.set_defaults(run=_run_score)

    sample = commands.add_parser(
        "sample",
        help="draw rows from a saved model",
        description="Write N rows drawn from a saved model as CSV, with a header row.",
    )
    sample.add_argument("model", metavar="MODEL", help="model file saved by 'skflowsearch search'")
    sample.add_argument("-n", type=int, required=True, metavar="N", help="number of rows")
    sample.add_argument("--random-state", type=int, default=None, help="seed of the samples")
    sample.add_argument("--output", "-o", default=None, help="output CSV file (default: stdout)")
    sample.set_defaults(run=_run_sample)

    transform = commands.add_parser(
        "transform",
        help="write the latent rows of a CSV file under a saved model",
        description=(
            "Write the latent rows (the flow's standard normal space, see the "
            "estimators' transform) of every row of DATA.csv under a saved model, "
            "as CSV with a header row."
        ),
    )
    _add_model_data_output(transform)
    transform.set_defaults(run=_run_transform)
    return parser


def _add_model_data_output(parser):
    """The MODEL and DATA.csv arguments and the --output option of ``score`` and ``transform``."""
    parser.add_argument("model", metavar="MODEL", help="model file saved by 'skflowsearch search'")
    parser.add_argument("data", metavar="DATA.csv", help="numeric CSV file with the model's columns")
    parser.add_argument("--output", "-o", default=None, help="output CSV file (default: stdout)")


def main(argv=None):
    """Run the ``skflowsearch`` command line.

    Parameters
    ----------
    argv : list of str or None, default=None
        Arguments without the program name; None means ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success, 2 on bad arguments or bad input files, 130 when
        interrupted, 1 when the reader of the output went away (a broken
        pipe, e.g. ``| head``).
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return args.run(args)
    except BrokenPipeError:
        # The reader of stdout went away (e.g. ``| head``): stop quietly, and
        # keep the interpreter from failing again when it flushes stdout.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except (ValueError, TypeError) as exc:
        # Rejected parameters or data, e.g. a single feature or too few rows.
        message = " ".join(str(exc).split())
        print(f"error: {message}", file=sys.stderr)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 2
