"""Command line interface: ``skflowsearch {search,score,sample,transform}``.

``search`` fits :class:`~skflowsearch.StructureSearchFlow` (and, with
``--compare``, a :class:`~skflowsearch.CouplingFlow` with alternating masks)
to a CSV file or a bundled dataset and saves the searched model with joblib;
its estimator options take their defaults and help from the estimators;
``score`` writes the log-density of every row of a CSV file under a saved
model; ``sample`` draws rows from a saved model; ``transform`` writes the
latent rows of a CSV file.

CSV files hold numeric columns. Their delimiter (comma, semicolon, tab or
blanks), decimal mark, comments, encoding and header row are guessed from
their first rows unless given (``--delimiter``, ``--decimal``, ``--comment``,
``--encoding``, ``--header/--no-header``); ``--missing`` names the cells that
are missing entries (NaN). Well-formed files are parsed by numpy in one
pass. Bad input ends the command with one ``error: ...`` line on stderr and
exit status 2. The estimators' errors and warnings reach the user
with their parameters spelled as options (``--no-whiten`` for
``whiten=False``) and, for a fit, with the rows they count named.
"""

import argparse
import codecs
import csv
import io
import math
import os
import re
import sys
import time
import warnings
from collections import Counter
from typing import NamedTuple

__all__ = ["main"]

_DEFAULT_MODEL = "skflowsearch-model.joblib"
_DEFAULT_DATASET = "breast_cancer"
# Warning emitted by scikit-learn when a model fitted on named columns scores
# an unnamed array; the CLI checks the names itself.
_FEATURE_NAMES_WARNING = "X does not have valid feature names"


class CLIError(Exception):
    """A user-facing error: printed as one ``error:`` line, exit status 2."""


# --- reading and writing CSV -------------------------------------------------------

# The delimiters a file is tried with, in the order that breaks ties; " " stands
# for runs of blanks (spaces and tabs).
_DELIMITERS = ("\t", ";", ",", " ")
_DELIMITER_NAMES = {"\t": "tab", " ": "whitespace"}
# The format of a file is guessed from this many of its first rows.
_SNIFF_ROWS = 20
# Cells that usually stand for a missing entry (lower case): an error names
# --missing for them.
_MISSING_LOOKING = frozenset({"na", "n/a", "nan", "null", "none", "missing", "?", "-", "#n/a"})
# A number written with a decimal comma.
_DECIMAL_COMMA = re.compile(r"[+-]?(?:\d+,\d*|,\d+)(?:[eE][+-]?\d+)?")


class _Layout(NamedTuple):
    """How a CSV file is written: given by options or guessed from its first rows."""

    delimiter: str  # one character; " " for runs of blanks
    decimal: str  # "." or ","
    comment: str  # "" for none
    names: list[str] | None  # the header row, or None
    header_line: int  # the header's line number, 0 without a header
    body_start: int  # offset of the text below the header, 0 without a header
    missing: "_Missing" = None  # the cells read as missing entries; None for none


class _Missing(NamedTuple):
    """The cells of ``--missing``: texts matched as written, numbers by value."""

    texts: frozenset
    values: tuple  # finite floats

    @classmethod
    def of(cls, tokens):
        """``tokens`` (str) split into texts and numbers; "nan" and "inf" stay texts."""
        texts, values = set(), []
        for token in tokens:
            token = token.strip()
            try:
                value = float(token)
            except ValueError:
                value = math.nan
            if math.isfinite(value):
                values.append(value)
            else:
                texts.add(token)
        return cls(frozenset(texts), tuple(sorted(set(values))))

    def __contains__(self, cell):
        if cell in self.texts:
            return True
        try:
            return float(cell) in self.values
        except ValueError:
            return False


def _note(message):
    print(f"note: {message}", file=sys.stderr, flush=True)


def _delimiter_name(delimiter):
    return _DELIMITER_NAMES.get(delimiter, repr(delimiter))


def _to_float(cell, decimal):
    """``float(cell)``, with ``decimal`` as the decimal mark (a point is read either way)."""
    return float(cell.replace(",", ".") if decimal == "," else cell)


def _is_number(cell, decimal="."):
    try:
        _to_float(cell, decimal)
    except ValueError:
        return False
    return True


def read_csv(path, *, delimiter=None, decimal=None, comment="#", encoding=None, header=None,
             missing=()):
    """Read a numeric CSV file.

    What is not given is guessed from the first rows. Well-formed files are
    parsed by numpy in one vectorized pass; when that fails, the file is read
    again cell by cell to say where and why.

    Parameters
    ----------
    path : str
        File name.
    delimiter : str or None, default=None
        The field delimiter, one character; ``" "`` means runs of blanks.
        None tries tab, ``";"``, ``","`` and blanks, in this order, and takes
        the first that splits the first rows into the same number (at least
        2) of fields, numbers below the first row; if none does, the one
        that splits most of them alike.
    decimal : {".", ","} or None, default=None
        The decimal mark (with ``","``, numbers written with a point are
        read too). None means ``","`` when the delimiter is not a comma and
        the first rows hold numbers written with a comma and none written
        with a point, else ``"."``.
    comment : str, default="#"
        From this text to the end of a line, a line is ignored; ``""``
        means no comments.
    encoding : str or None, default=None
        The text encoding. None reads UTF-8 (with or without a byte order
        mark), UTF-16 when the file starts with its byte order mark, and
        otherwise Latin-1, with a note on stderr.
    header : bool or None, default=None
        Whether the first row is a header. None means a header when one of
        its cells is not a number (nor in ``missing``).
    missing : sequence of str, default=()
        The cells read as missing entries (NaN), e.g. ``("", "NA")``. A
        token that is a finite number, e.g. ``"-999"``, marks the cells of
        that value in every column (``-999.0`` too); others match the
        stripped cell as written. By default no cell is missing.

    Returns
    -------
    X : ndarray of shape (n_rows, n_columns), dtype float64
    names : list of str or None
        The header (an empty name is ``x{index}``), or None.

    Raises
    ------
    CLIError
        If the file cannot be read or decoded, is empty, has rows of
        different widths, or holds an empty, non-numeric, NaN or infinite
        value that is not in ``missing``.
    """
    text = _read_text(path, encoding)
    layout = _layout(text, path, delimiter=delimiter, decimal=decimal, comment=comment,
                     header=header, missing=missing)
    X = _load_fast(text, layout)
    if X is None:
        return _read_csv_cells(path, text, layout)
    if layout.missing is not None and layout.missing.values:
        import numpy as np

        X[np.isin(X, layout.missing.values)] = np.nan
    return X, layout.names


def _read_text(path, encoding=None):
    """The text of ``path`` in ``encoding``; None: UTF-8, UTF-16 with a BOM, else Latin-1."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise CLIError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise CLIError(f"data file is a directory: {path}") from None
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    if encoding is None:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            encoding = "utf-16"
        elif b"\0" in data:
            raise CLIError(
                f"{path} is not a text CSV file (it holds NUL bytes); if it is text, "
                "name its encoding with --encoding"
            )
        else:
            try:
                return data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                _note(f"{path} is not UTF-8 ({_bad_byte(data, exc)}); read as Latin-1 "
                      "(choose the encoding with --encoding)")
                return data.decode("latin-1")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise CLIError(f"{path} is not valid {encoding} text ({_bad_byte(data, exc)})") from None
    except LookupError:
        raise CLIError(f"unknown encoding: {encoding}") from None
    return text.removeprefix("\ufeff")


def _bad_byte(data, exc):
    line = data.count(b"\n", 0, exc.start) + 1
    return f"byte {data[exc.start]:#04x} on line {line}"


def _lines(text, comment):
    """``(end, line)`` of every line of ``text``, with ``comment`` and what follows it cut.

    ``end`` is the offset just past the line (its newline kept).
    """
    start = 0
    while start < len(text):
        end = text.find("\n", start) + 1 or len(text)
        line = text[start:end]
        if comment and comment in line:
            line = line[:line.index(comment)] + "\n"
        yield end, line
        start = end


def _split_row(line, delimiter):
    if delimiter == " ":
        return line.split()
    return [cell.strip() for cell in next(csv.reader([line], delimiter=delimiter), [])]


def _layout(text, path, *, delimiter=None, decimal=None, comment="#", header=None, missing=()):
    """The :class:`_Layout` of ``text``: what is given, and the rest guessed from its first rows."""
    missing = _Missing.of(missing) if missing else None
    first_rows = []  # (line number, end, line) of the first rows that are not blank
    for number, (end, line) in enumerate(_lines(text, comment), start=1):
        if line.strip():
            first_rows.append((number, end, line))
            if len(first_rows) == _SNIFF_ROWS:
                break
    if not first_rows:
        raise CLIError(f"{path} holds no data")
    lines = [line for _, _, line in first_rows]
    if delimiter is None:
        delimiter = _guess_delimiter(lines, decimal, missing)
    if decimal is None:
        decimal = _guess_decimal(lines, delimiter)
    if delimiter == decimal:
        raise CLIError(f"the delimiter and the decimal mark are both {decimal!r}; "
                       "choose another with --delimiter or --decimal")
    number, end, line = first_rows[0]
    first = _split_row(line, delimiter)
    if header is None:
        header = any(cell and not _is_value(cell, decimal, missing) for cell in first)
    if not header:
        return _Layout(delimiter, decimal, comment, None, 0, 0, missing)
    names = [cell or f"x{j}" for j, cell in enumerate(first)]
    return _Layout(delimiter, decimal, comment, names, number, end, missing)


def _is_value(cell, decimal, missing):
    """Whether ``cell`` is a number or one of the ``missing`` cells (a :class:`_Missing` or None)."""
    return _is_number(cell, decimal) or (missing is not None and cell in missing)


def _guess_delimiter(lines, decimal, missing=None):
    """The delimiter of :data:`_DELIMITERS` that splits ``lines`` best (see :func:`read_csv`)."""

    def fit(delimiter):
        rows = [_split_row(line, delimiter) for line in lines]
        widths = [len(row) for row in rows]
        width, count = Counter(widths).most_common(1)[0]
        if width < 2:
            return False, 0
        mark = decimal or ("." if delimiter == "," else ",")
        numbers = all(_is_value(cell, mark, missing) for row in rows[1:] for cell in row)
        return numbers and count == len(rows), count

    candidates = [delimiter for delimiter in _DELIMITERS if delimiter != decimal]
    best = max(candidates, key=fit)  # the first of equals
    return best if fit(best)[1] else ","


def _guess_decimal(lines, delimiter):
    """``","`` if ``lines`` hold numbers with a decimal comma and none with a point, else ``"."``."""
    if delimiter == ",":
        return "."
    cells = [cell for line in lines for cell in _split_row(line, delimiter)]
    comma = any(_DECIMAL_COMMA.fullmatch(cell) for cell in cells)
    point = any("." in cell and _is_number(cell) for cell in cells)
    return "," if comma and not point else "."


def _load_fast(text, layout):
    """The rows below the header parsed by numpy in one pass, or None to read them cell by cell.

    None when numpy fails (on a missing text cell, too), or reads a NaN, an
    infinity or rows of another width than the header: the cell-by-cell
    reader names them, or reads them as missing entries.
    """
    import numpy as np

    if text.find('"', layout.body_start) >= 0:  # quoted cells: the csv module's rules
        return None
    start, skiprows = layout.body_start, layout.header_line
    if layout.decimal == ",":
        text, start, skiprows = text[start:].replace(",", "."), 0, 0
    # Comments slow numpy down: only when there are some.
    comments = layout.comment if layout.comment and text.find(layout.comment, start) >= 0 else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": handled below
            X = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2, skiprows=skiprows,
                           delimiter=None if layout.delimiter == " " else layout.delimiter,
                           comments=comments)
    except ValueError:
        return None
    if not X.size or not np.isfinite(X).all():
        return None
    if layout.names is not None and X.shape[1] != len(layout.names):
        return None
    return X


def _rows(text, layout):
    """``(line number, cells)`` of the rows of ``text`` that are not blank once comments are cut."""
    lines = (line for _, line in _lines(text, layout.comment))
    if layout.delimiter == " ":
        rows = ((number, line.split()) for number, line in enumerate(lines, start=1))
    else:
        reader = csv.reader(lines, delimiter=layout.delimiter)
        rows = ((reader.line_num, [cell.strip() for cell in row]) for row in reader)
    for number, cells in rows:
        if len(cells) > 1 or (cells and cells[0]):
            yield number, cells


def _read_csv_cells(path, text, layout=None):
    """The cell-by-cell reader: slow, but it names the line, column and value at fault.

    ``layout`` (a :class:`_Layout`) defaults to the one guessed from ``text``.
    """
    import numpy as np

    if layout is None:
        layout = _layout(text, path)
    try:
        rows = list(_rows(text, layout))
    except csv.Error as exc:
        raise CLIError(f"{path} is not a valid CSV file: {exc}") from None
    names = layout.names
    if names is not None:
        rows = rows[1:]
        if not rows:
            raise CLIError(f"{path} has a header but no data rows")
    if not rows:
        raise CLIError(f"{path} holds no data")
    n_columns = len(names) if names is not None else len(rows[0][1])
    X = np.empty((len(rows), n_columns))
    for i, (line_number, row) in enumerate(rows):
        if len(row) != n_columns:
            raise CLIError(
                f"{path}, line {line_number}: {len(row)} fields, expected {n_columns} "
                f"(delimiter {_delimiter_name(layout.delimiter)})"
            )
        for j, cell in enumerate(row):
            X[i, j] = _cell_value(cell, layout, lambda: _bad_cell(
                path, line_number, j, cell, layout, n_columns))
    return X, names


def _cell_value(cell, layout, message):
    """The float of ``cell``: NaN for a missing entry; else a CLIError with ``message()``."""
    missing = layout.missing
    if missing is not None and cell in missing.texts:
        return math.nan
    try:
        value = _to_float(cell, layout.decimal)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise CLIError(message())
    return math.nan if missing is not None and value in missing.values else value


def _bad_cell(path, line_number, j, cell, layout, n_columns):
    """The message for ``cell``, in column ``j`` (from 0), that is not a finite number."""
    where = f"{path}, line {line_number}, column {j + 1}"
    if layout.names is not None:
        where += f" ({layout.names[j]!r})"
    if not cell:
        return f"{where}: empty cell (a missing entry? pass --missing '')"
    missing_hint = f" (a missing entry? pass --missing {cell})" \
        if cell.lower() in _MISSING_LOOKING else ""
    if _is_number(cell, layout.decimal):
        return f"{where}: {cell!r} is not a finite number{missing_hint}"
    if missing_hint:
        hint = missing_hint
    elif n_columns == 1:
        hint = (f" (one column found with the delimiter {_delimiter_name(layout.delimiter)}; "
                "choose the delimiter with --delimiter)")
    elif layout.decimal == "." and _DECIMAL_COMMA.fullmatch(cell):
        hint = " (a decimal comma? pass --decimal ,)"
    else:
        hint = ""
    return f"{where}: non-numeric value {cell!r}{hint}"


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

    from . import CouplingFlow, StructureSearchFlow
    from .datasets import load_dataset

    if not 0 <= args.test_fraction < 1:
        raise CLIError(f"--test-fraction must be in [0, 1); got {args.test_fraction}")
    _check_output_directory(args.output)
    if args.data is not None:
        X, names = read_csv(args.data, **_csv_options(args))
        source = args.data
    else:
        X, names = load_dataset(args.dataset), None
        source = f"bundled dataset {args.dataset!r}"

    X_train, X_test = _hold_out(X, args.test_fraction, args.random_state, source)
    n_test = 0 if X_test is None else X_test.shape[0]
    _say(
        args,
        f"{source}: {X.shape[0]} rows of {X.shape[1]} features; {X_train.shape[0]} to fit "
        f"the flows, {n_test} held out (--test-fraction {args.test_fraction})",
    )
    # The rows the estimators' messages count.
    fit_rows = (f"{X_train.shape[0]} of the {_rows_of(X, source)} ({n_test} held out by "
                f"--test-fraction {args.test_fraction})" if n_test else f"the {_rows_of(X, source)}")

    settings = {name: getattr(args, name) for name in _SEARCH_OPTIONS}
    settings["hidden_layer_sizes"] = tuple(settings["hidden_layer_sizes"])
    search = StructureSearchFlow(
        **settings, device=args.device, random_state=args.random_state, verbose=0 if args.quiet else 1,
    )
    models = [("searched", search)]
    if args.compare:
        models.append(("alternating", CouplingFlow(
            masks="alternating",
            **{name: settings[name] for name in _shared_options()},
            device=args.device,
            random_state=args.random_state,
        )))
    train = _with_names(X_train, names)
    test = None if X_test is None else _complete_held_out(args, X_test, names)

    results = []
    for label, estimator in models:
        _say(args, f"fitting the {label} flow ...")
        start = time.perf_counter()
        _fit(estimator, train, f"fitting the {label} flow on {fit_rows}")
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


def _complete_held_out(args, X_test, names):
    """The held-out rows that are complete (or None): a marginal density of a
    row with missing entries is not on the scale of the others'."""
    import numpy as np

    complete = ~np.isnan(X_test).any(axis=1)
    if not complete.all():
        _say(args, f"{X_test.shape[0] - complete.sum()} of the {X_test.shape[0]} held-out rows "
                   "have missing entries: the held-out score is the mean over the others")
    return _with_names(X_test[complete], names) if complete.any() else None


def _rows_of(X, source):
    """``"60 rows of data.csv"``: the rows of ``X``, read from ``source``."""
    return f"{X.shape[0]} row{'s' if X.shape[0] != 1 else ''} of {source}"


def _hold_out(X, test_fraction, random_state, source):
    """``(X_train, X_test)``: ``test_fraction`` of the rows of ``X`` held out (None for 0)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    if test_fraction == 0:
        return X, None
    try:
        train_rows, test_rows = train_test_split(
            np.arange(X.shape[0]), test_size=test_fraction, random_state=random_state
        )
    except ValueError:  # with 0 < test_fraction < 1: no row left to fit on
        raise CLIError(
            f"--test-fraction {test_fraction} of the {_rows_of(X, source)} leaves "
            "no rows to fit the flows on"
        ) from None
    return X[np.sort(train_rows)], X[np.sort(test_rows)]


# Words of a message that count rows.
_COUNTS_ROWS = re.compile(r"\bn_samples\b|\brows?\b|\bsamples?\b|\bsample\(s\)")


def _fit(estimator, X, context):
    """Fit ``estimator`` on ``X``; its errors and warnings that count rows start with ``context``.

    The estimator counts the rows it is given, which ``--test-fraction`` has
    thinned: ``context`` (e.g. "fitting the searched flow on 48 of the 60 rows
    of data.csv (12 held out by --test-fraction 0.2)") says which rows these are.
    """

    def in_context(message):
        message = str(message)
        return f"{context}: {message}" if _COUNTS_ROWS.search(message) else message

    def show(message, *args, **kwargs):
        _show_warning(in_context(message), *args, **kwargs)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            estimator.fit(X)
        except ValueError as exc:
            raise ValueError(in_context(exc)) from None


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

    from ._outlier import FlowOutlierDetector, _offset

    contamination = args.contamination
    if contamination not in (None, "auto") and not 0 < contamination <= 0.5:
        raise CLIError(f"--contamination must be 'auto' or in (0, 0.5]; got {contamination}")
    model = _load_model(args.model)
    X, names = read_csv(args.data, **_csv_options(args))
    _check_columns(model, X, names, args.data)
    scores = np.asarray(_score_samples(model, X), dtype=float)
    header, columns = ["log_density"], [scores]
    if contamination is not None and not isinstance(model, FlowOutlierDetector):
        incomplete = np.isnan(X).any(axis=1)
        if incomplete.any():
            raise CLIError(
                f"{incomplete.sum()} of the {X.shape[0]} rows of {args.data} have missing "
                "entries: their log-densities are marginal densities, on another scale than "
                "complete rows', so --contamination cannot flag them by one threshold; score "
                "them without it, or with a FlowOutlierDetector saved from Python, which ranks "
                "them among complete training rows scored with the same entries missing"
            )
    if contamination is not None:
        # The scored rows' own threshold: a saved flow does not keep its
        # training scores.
        offset = _offset(scores, contamination)
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
    X, names = read_csv(args.data, **_csv_options(args))
    _check_columns(model, X, names, args.data)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_FEATURE_NAMES_WARNING, category=UserWarning)
        latent = flow.transform(X)
    header = [str(name) for name in flow.get_feature_names_out()]
    _write_csv(args.output, header, list(latent.T))
    return 0


# --- argument parsing --------------------------------------------------------------

# StructureSearchFlow parameters offered as options of ``search``; their
# defaults, help and choices come from the estimator itself.
_SEARCH_OPTIONS = (
    "n_layers", "hidden_layer_sizes", "population_size", "n_offspring", "n_generations",
    "fitness_budget", "max_epochs", "size_penalty", "pick", "race_margin", "whiten",
    "learning_rate", "max_log_scale", "validation_fraction", "selection_fraction", "n_jobs",
    "normalization", "base_distribution", "discrete_features", "dependent_features", "coupling",
    "n_bins", "tail_bound", "n_components", "covariance_type", "n_estimators",
)


def _shared_options():
    """The options the --compare CouplingFlow shares: those that are its parameters too."""
    from . import CouplingFlow

    return tuple(name for name in _SEARCH_OPTIONS if name in CouplingFlow().get_params())


def _option_flag(name):
    """The option of estimator parameter ``name``: ``--n-layers`` for ``n_layers``."""
    return "--hidden" if name == "hidden_layer_sizes" else "--" + name.replace("_", "-")


def _cli_spelling(message):
    """An estimator's ``message`` with its parameters spelled as this command's options.

    ``whiten=False`` becomes ``--no-whiten``, ``max_epochs=3`` becomes
    ``--max-epochs 3``, a bare ``n_layers`` becomes ``--n-layers`` (bare names
    only with an underscore: ``pick`` or ``device`` may be plain words), and
    ``n_samples = 48`` becomes ``48 rows``. Whitespace is joined into single
    spaces.
    """
    names = sorted((*_SEARCH_OPTIONS, "random_state", "device"), key=len, reverse=True)
    # Not inside a path or a file name (/data/max_epochs/run.csv).
    parameter = re.compile(rf"(?<![\w/\\.-])({'|'.join(names)})\b(?![/\\]|\.\w)(?:\s*=\s*([-+\w.]*\w))?")

    def spell(match):
        name, value = match.groups()
        flag = _option_flag(name)
        if value is None:
            return flag if "_" in name else name
        if value in ("True", "False"):
            return flag if value == "True" else "--no-" + flag[2:]
        return f"{flag} {value}"

    message = " ".join(str(message).split())
    # scikit-learn's parameter validation: "The 'n_layers' parameter of StructureSearchFlow must be".
    message = re.sub(r"\bThe '(\w+)' parameter of \w+ must be", r"\1 must be", message)
    message = parameter.sub(spell, message)
    return re.sub(r"\bn_samples\s*=\s*(\d+)", r"\1 rows", message)


def _parameter_help(estimator_class, name):
    """First sentence of parameter ``name`` in the numpydoc of ``estimator_class``.

    Sphinx markup is dropped: inline literals and roles keep only their text,
    and parameters are spelled as options (see :func:`_cli_spelling`).
    """
    import inspect

    doc = inspect.getdoc(estimator_class) or ""
    match = re.search(rf"^{name}(?: : [^\n]*)?\n((?:    [^\n]*\n?)+)", doc, flags=re.MULTILINE)
    if match is None:
        return ""
    text = " ".join(line.strip() for line in match.group(1).splitlines())
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    return _cli_spelling(first).replace("%", "%%")


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
    from numbers import Integral

    from sklearn.utils._param_validation import Interval, StrOptions

    from . import CouplingFlow, StructureSearchFlow

    default = StructureSearchFlow().get_params()[name]
    constraints = StructureSearchFlow._parameter_constraints.get(name, [])
    flag = _option_flag(name)
    # Parameters shared with CouplingFlow are documented there.
    help_text = _parameter_help(StructureSearchFlow, name) or _parameter_help(CouplingFlow, name)
    if name == "hidden_layer_sizes":
        parser.add_argument(flag, dest=name, type=int, nargs="+", default=list(default),
                            metavar="WIDTH", help=help_text)
    elif (len(constraints) == 2 and "boolean" in constraints
          and any(isinstance(c, StrOptions) for c in constraints)):
        # A bool or a word, e.g. whiten=True/False/"auto": --whiten {yes,no,auto}, and --no-whiten
        # (kept from when it was a bool, out of the help).
        words = sorted(next(c for c in constraints if isinstance(c, StrOptions)).options)
        parser.add_argument(flag, dest=name, type=_bool_or_word, choices=[True, False, *words],
                            metavar="{yes,no," + ",".join(words) + "}", default=default, help=help_text)
        parser.add_argument("--no-" + flag[2:], dest=name, action="store_const", const=False,
                            help=argparse.SUPPRESS)
    elif isinstance(default, bool):
        action = parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                     default=default, help=help_text)
        # Python 3.10 appends its own "(default: True)"; the formatter names the flag instead.
        action.help = help_text
    elif name == "n_jobs":
        parser.add_argument(flag, dest=name, type=_n_jobs, default=None,
                            help="parallel training tasks (-1: all cores; default: 1)")
    elif len(constraints) == 1 and isinstance(constraints[0], StrOptions):
        # The estimator's own options, in a stable order.
        parser.add_argument(flag, dest=name, choices=sorted(constraints[0].options), default=default,
                            help=help_text)
    elif (len(constraints) == 2 and any(isinstance(c, StrOptions) for c in constraints)
          and any(isinstance(c, Interval) and c.type is Integral for c in constraints)):
        # A word or a count, e.g. n_components="auto" or 3.
        words = sorted(next(c for c in constraints if isinstance(c, StrOptions)).options)
        parser.add_argument(flag, dest=name, type=_int_or_word, default=default,
                            metavar="{" + ",".join(words) + ",N}", help=help_text)
    elif name == "discrete_features":
        parser.add_argument(flag, dest=name, type=_discrete_features, default=default,
                            metavar="{auto,none,all,I,J,...}", help=help_text)
    else:
        kind = _finite_float if isinstance(default, float) else type(default)
        parser.add_argument(flag, dest=name, type=kind, default=default, help=help_text)


def _bool_or_word(text):
    """argparse type of a bool-or-word option: ``yes``/``no`` are True/False, other words stay."""
    return {"yes": True, "no": False}.get(text, text)


def _int_or_word(text):
    """argparse type of a count-or-word option: digits are an int, other words stay."""
    try:
        return int(text)
    except ValueError:
        return text


def _discrete_features(text):
    """argparse type of ``--discrete-features``: the estimators' ``discrete_features``."""
    words = {"auto": "auto", "none": False, "all": True}
    if text in words:
        return words[text]
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected auto, none, all or comma-separated column indices; got {text!r}"
        ) from None


def _n_jobs(text):
    """argparse type of ``--n-jobs``: an int other than 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value == 0:
        raise argparse.ArgumentTypeError("0 has no meaning; use a positive number or -1")
    return value


def _contamination(text):
    """argparse type of ``--contamination``: ``"auto"`` or a finite float (range checked later)."""
    return "auto" if text == "auto" else _finite_float(text)


# --delimiter: names of the delimiters that are awkward to type.
_DELIMITER_WORDS = {"tab": "\t", "\\t": "\t", "whitespace": " ", "space": " "}


def _delimiter(text):
    """argparse type of ``--delimiter``: one character, or a word of :data:`_DELIMITER_WORDS`."""
    delimiter = _DELIMITER_WORDS.get(text.lower(), text)
    if len(delimiter) != 1 or delimiter.isalnum() or delimiter in '"\r\n.+-':
        raise argparse.ArgumentTypeError(
            f"not a delimiter: {text!r} (one character, 'tab' or 'whitespace')"
        )
    return delimiter


def _comment(text):
    """argparse type of ``--comment``: text without digits, signs, marks or blanks; "" for none."""
    if any(char.isspace() or char.isdigit() or char in '"+-.,' for char in text):
        raise argparse.ArgumentTypeError(f"not a comment marker: {text!r}")
    return text


def _encoding(text):
    """argparse type of ``--encoding``: a codec Python knows."""
    try:
        codecs.lookup(text)
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding: {text!r}") from None
    return text


def _add_csv_options(parser):
    """The options that say how DATA.csv is written; what is not given is guessed."""
    group = parser.add_argument_group(
        "CSV format", "How DATA.csv is written; by default guessed from its first rows."
    )
    group.add_argument(
        "--delimiter", type=_delimiter, default=None, metavar="CHAR",
        help="field delimiter: one character, 'tab' or 'whitespace' (runs of blanks); by "
             "default the first of tab, ';', ',' and whitespace that splits the first rows "
             "into equally many numbers",
    )
    group.add_argument(
        "--decimal", choices=(".", ","), default=None, metavar="MARK",
        help="decimal mark, '.' or ','; by default ',' when the delimiter is not a comma and "
             "the numbers have decimal commas, else '.'",
    )
    group.add_argument("--comment", type=_comment, default="#", metavar="TEXT",
                       help="a line is ignored from this text on ('' for no comments)")
    group.add_argument(
        "--encoding", type=_encoding, default=None,
        help="text encoding, e.g. cp1252; by default UTF-8, UTF-16 if the file starts with "
             "its byte order mark, else Latin-1 (with a note)",
    )
    group.add_argument(
        "--header", action=argparse.BooleanOptionalAction, default=None,
        help="the first row is a header even if it holds numbers (--header), or data "
             "(--no-header); by default a header when one of its cells is not a number",
    )
    group.add_argument(
        "--missing", action="append", default=None, metavar="TEXT",
        help="cells written TEXT are missing entries (NaN), e.g. --missing '' for empty cells "
             "or --missing NA; a number, e.g. --missing -999, marks that value in every "
             "column; repeat for several; by default such cells are errors",
    )


def _csv_options(args):
    """The keyword arguments of :func:`read_csv` set by the options of :func:`_add_csv_options`."""
    names = ("delimiter", "decimal", "comment", "encoding", "header")
    return {name: getattr(args, name) for name in names} | {"missing": tuple(args.missing or ())}


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show ``(default: ...)`` only where there is a default worth reading.

    Not for flags, nor for options whose default None means "absent" (their
    help says what happens then); a ``--x/--no-x`` pair names the default one.
    Lines break at blanks only, never inside "log-density".
    """

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _get_help_string(self, action):
        if isinstance(action, argparse.BooleanOptionalAction) and isinstance(action.default, bool):
            # "(default: --whiten)" rather than "(default: True)".
            positive = next(flag for flag in action.option_strings if not flag.startswith("--no-"))
            chosen = positive if action.default else "--no-" + positive[2:]
            return f"{action.help} (default: {chosen})"
        if action.default is None or action.nargs == 0:
            return action.help
        if isinstance(action.default, bool) and action.choices and True in action.choices:
            return f"{action.help} (default: {'yes' if action.default else 'no'})"
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
    _add_csv_options(search)
    search.set_defaults(run=_run_search)

    score = commands.add_parser(
        "score",
        help="write the log-density of every row of a CSV file",
        description=(
            "Write one log-density (nats, column log_density) per row of DATA.csv "
            "under a saved model. With --contamination, an outlier column marks "
            "with -1 the rows below a threshold of the scored rows' own "
            "log-densities (a saved flow does not keep its training scores) and "
            "the others with +1; a saved FlowOutlierDetector without "
            "--contamination uses its own threshold."
        ),
        formatter_class=_DefaultsHelpFormatter,
    )
    _add_model_data_output(score)
    score.add_argument(
        "--contamination", type=_contamination, default=None, metavar="C",
        help="flag as outliers this fraction in (0, 0.5] of the rows, or with 'auto' the rows "
             "more than 3 scaled median absolute deviations below the median log-density "
             "(as FlowOutlierDetector(contamination='auto'))",
    )
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
        formatter_class=_DefaultsHelpFormatter,
    )
    _add_model_data_output(transform)
    transform.set_defaults(run=_run_transform)
    return parser


def _add_model_data_output(parser):
    """The MODEL and DATA.csv arguments and the --output option of ``score`` and ``transform``."""
    parser.add_argument("model", metavar="MODEL", help="model file saved by 'skflowsearch search'")
    parser.add_argument("data", metavar="DATA.csv", help="numeric CSV file with the model's columns")
    parser.add_argument("--output", "-o", default=None, help="output CSV file (default: stdout)")
    _add_csv_options(parser)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """``warnings.showwarning`` of the command: one ``warning:`` line in its spelling."""
    print(f"warning: {_cli_spelling(message)}", file=sys.stderr, flush=True)


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
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
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
        print(f"error: {_cli_spelling(exc)}", file=sys.stderr)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 2
