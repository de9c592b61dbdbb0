"""A suite with known answers: synthetic tables whose true density is known (issue 16).

Run from the repository root::

    python benchmarks/bench_truth.py [--quick] [--tables NAME|GROUP ...] [--n-seeds 5]
                                     [--max-epochs N] [--search] [--output FILE.md]

Every table is drawn from a seed (``numpy.random.default_rng([seed, crc32(key)])``):
``n`` training rows and separate fresh test rows from the same distribution.
The *truth* is the mean true log-density of the test rows, computed exactly
with ``scipy.stats`` on those rows, so every model's gap to it (truth - model,
nats per row, >= 0 up to the Monte Carlo noise of the test rows; Gibbs'
inequality) is paired row by row. Everything lives in the raw generated space
(the flows normalize internally and include the log-Jacobian).

Tables (``--tables`` takes names or the group names in brackets):

* [wide] ``wide-R``: a d-dimensional Gaussian (d = 50, 20 with ``--quick``),
  n = R * d training rows for R in 1.5, 3, 5, 10, 20; covariance
  ``Q diag(lambda) Q^T`` with a random orthogonal ``Q`` and a spectrum decaying
  geometrically from 3 to 0.03 (condition number 100), random mean;
* [mixture] ``mixture-2d``, ``mixture-8d``: 3 well-separated Gaussians (means on
  an equilateral triangle of radius 5 in a random plane, pairwise distance 8.7;
  random covariances with eigenvalues in [0.3, 1.5]; weights 0.5, 0.3, 0.2),
  n = 2000;
* [heavy] ``t3-3d``: multivariate t, 3 degrees of freedom, correlated shape;
  ``cauchy-3d``: 3 independent standard Cauchy columns; n = 2000;
* [contam] ``contam-1%``, ``contam-5%``, ``contam-10%``: a correlated 3-D
  Gaussian, n = 1500, with that fraction of the training rows replaced by
  outliers uniform in a box of +-50 sd around the mean; ``contam-1e6``: one
  row replaced by ``[1e6, -1e6, 1e6]``. The test rows are clean, the truth is
  the Gaussian's. The same clean training rows (same seed) also give the
  *clean fit*. For ROC AUC the CouplingFlow is fitted as
  ``FlowOutlierDetector(CouplingFlow(...))`` (its ``estimator_`` is the flow
  scored for the density tables, so one fit serves both) on the contaminated
  and on the clean rows, and ranks the clean test rows plus ``n_test // 10``
  outliers drawn the same way (for ``contam-1e6``: rows of +-1e6 with random
  signs) by ``-score_samples``. Issue 16's criterion: at 5% contamination the
  held-out log-likelihood within 0.5 nats/row of the clean fit, the AUC within
  0.01 of the clean fit's;
* [discrete] ``discrete``: 2 correlated normal columns, a Bernoulli(0.4) and a
  Poisson(0.3) column independent of them; n = 2000. The truth is
  log-pdf + log-pmf: a log-*probability* for the discrete part. A continuous
  density is comparable only if the discrete columns are dequantized (uniform
  noise on the integer grid), and then its score is at most the truth; a
  density with spikes on the integers can score arbitrarily above it.

Models: ``CouplingFlow(random_state=seed)`` with the package defaults
(``--max-epochs`` caps the epochs; ``--quick`` caps them at 30), with
``--search`` also ``StructureSearchFlow(random_state=seed, n_jobs=--n-jobs)``
(defaults; the quick search budget of ``bench_quality.py`` with ``--quick``),
the single maximum-likelihood Gaussian (``baselines.gaussian_baseline``:
``GaussianMixture(n_components=1, covariance_type="full")``) fitted the way
the flow is, on the flow's training rows (its validation rows left out: on
wide tables the 10% fewer rows alone cost the Gaussian ~0.07 nats/row), and the tuned
GMM of ``baselines.tuned_gaussian_mixture`` (full and diagonal covariances,
the components and ``reg_covar`` grid chosen on an inner 80/20 split of the
training rows, then refitted with the chosen setting on all training rows).
Every model sees the same training rows; the flows hold out their own
early-stopping rows from them.

Output: mean over ``--n-seeds`` seeds (0, 1, ...) of the held-out scores and
the truth, each model's gap to the truth and CouplingFlow - Gaussian with a
bootstrap 95% interval over seeds (``bench_search.bootstrap_interval``; one
seed: the value alone), the distinct warnings the flows raised (category and
first 80 characters), notes ("above truth (point masses?)" when a model
scores more than 0.1 nats/row above the truth, errors, non-finite scores) and
"silent failure?": a flow whose difference to the single Gaussian has its
whole interval below 0 and that raised no warning on that table. A flow that
raises an exception is reported, not fatal. BLAS/OpenMP and torch run one
thread (``--threads``), as in ``bench_quality.py``.
"""

import argparse
import os
import sys
import time
import warnings
import zlib
from collections import Counter

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from benchmarks._common import machine_line, markdown_table  # noqa: E402
from benchmarks.baselines import gaussian_baseline, tuned_gaussian_mixture  # noqa: E402
from benchmarks.bench_quality import budgets  # noqa: E402 (the quick search budget)
from benchmarks.bench_search import bootstrap_interval  # noqa: E402

WIDE_RATIOS = (1.5, 3, 5, 10, 20)
CONTAMINATION = {"contam-1%": 0.01, "contam-5%": 0.05, "contam-10%": 0.10, "contam-1e6": None}
GROUPS = {
    "wide": [f"wide-{r:g}" for r in WIDE_RATIOS],
    "mixture": ["mixture-2d", "mixture-8d"],
    "heavy": ["t3-3d", "cauchy-3d"],
    "contam": list(CONTAMINATION),
    "discrete": ["discrete"],
}
TABLES = [name for names in GROUPS.values() for name in names]
LABELS = {"flow": "CouplingFlow", "search": "StructureSearchFlow", "gaussian": "Gaussian (ML)",
          "gmm": "tuned GMM"}
FLOWS = ("flow", "search")
ABOVE_TRUTH = 0.1  # nats/row a model may score above the truth before it is flagged
QUICK_MAX_EPOCHS = 30


# --- the tables ---------------------------------------------------------------------------


def _rng(seed, key):
    """The generator of ``key`` (a table or a family of tables) for ``seed``."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode())])


def _orthogonal(d, rng):
    if d == 1:
        return np.ones((1, 1))
    return stats.ortho_group.rvs(d, random_state=rng)


def _covariance(eigenvalues, rng):
    Q = _orthogonal(len(eigenvalues), rng)
    return (Q * np.asarray(eigenvalues, dtype=float)) @ Q.T


def _gaussian_rows(mean, cov, n, rng):
    return mean + rng.standard_normal((n, len(mean))) @ np.linalg.cholesky(cov).T


def _contam_gaussian(seed, n, n_test):
    """The clean Gaussian of the contamination tables: the same for every fraction of a seed."""
    rng = _rng(seed, "contam")
    d = 3
    mean = rng.normal(size=d)
    cov = _covariance([2.0, 1.0, 0.3], rng)
    return mean, cov, _gaussian_rows(mean, cov, n, rng), _gaussian_rows(mean, cov, n_test, rng)


def make_table(name, seed, quick=False, n_test=None):
    """Draw table ``name`` for ``seed``.

    Returns a dict with ``X_train``, ``X_test``, ``logp_test`` (the true
    log-density, or log-probability for the discrete columns, of every test
    row) and, for the contamination tables, ``X_train_clean`` and
    ``X_outliers`` (test outliers drawn like the training ones).
    """
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; choose from {TABLES} or groups {list(GROUPS)}")
    if n_test is None:
        n_test = 1000 if quick else 2000
    rng = _rng(seed, name)
    table = {}
    if name.startswith("wide-"):
        d = 20 if quick else 50
        n = int(round(float(name.split("-")[1]) * d))
        mean = rng.normal(size=d)
        cov = _covariance(np.geomspace(3.0, 0.03, d), rng)
        X_train, X_test = _gaussian_rows(mean, cov, n, rng), _gaussian_rows(mean, cov, n_test, rng)
        logp = stats.multivariate_normal(mean, cov).logpdf(X_test)
    elif name.startswith("mixture-"):
        d, n = int(name.split("-")[1][:-1]), 2000
        weights = np.array([0.5, 0.3, 0.2])
        plane = _orthogonal(d, rng)[:, :2]
        angles = 2 * np.pi * np.arange(3) / 3
        means = 5.0 * np.column_stack([np.cos(angles), np.sin(angles)]) @ plane.T
        covs = [_covariance(rng.uniform(0.3, 1.5, d), rng) for _ in range(3)]

        def draw(m):
            labels = rng.choice(3, size=m, p=weights)
            X = np.empty((m, d))
            for k in range(3):
                X[labels == k] = _gaussian_rows(means[k], covs[k], int((labels == k).sum()), rng)
            return X

        X_train, X_test = draw(n), draw(n_test)
        logp = logsumexp(
            [np.log(weights[k]) + stats.multivariate_normal(means[k], covs[k]).logpdf(X_test)
             for k in range(3)], axis=0)
    elif name == "t3-3d":
        dist = stats.multivariate_t(loc=np.zeros(3), shape=_covariance([2.0, 1.0, 0.5], rng), df=3)
        X_train, X_test = dist.rvs(size=2000, random_state=rng), dist.rvs(size=n_test, random_state=rng)
        logp = dist.logpdf(X_test)
    elif name == "cauchy-3d":
        X_train, X_test = rng.standard_cauchy((2000, 3)), rng.standard_cauchy((n_test, 3))
        logp = stats.cauchy.logpdf(X_test).sum(axis=1)
    elif name in CONTAMINATION:
        n = 1500
        mean, cov, X_clean, X_test = _contam_gaussian(seed, n, n_test)
        fraction = CONTAMINATION[name]
        sd = np.sqrt(np.diag(cov))
        n_out = max(20, n_test // 10)
        X_train = X_clean.copy()
        # The test outliers depend on the kind only, not the fraction: the clean fit's AUC is
        # computed once per seed and kind and paired with every fraction's.
        kind = "1e6" if fraction is None else "box"
        rng_out = _rng(seed, "contam-test-outliers-" + kind)
        if fraction is None:
            X_train[rng.integers(n)] = [1e6, -1e6, 1e6]
            X_outliers = 1e6 * rng_out.choice([-1.0, 1.0], size=(n_out, 3))
        else:
            rows = rng.choice(n, size=int(round(fraction * n)), replace=False)
            X_train[rows] = mean + rng.uniform(-50, 50, size=(len(rows), 3)) * sd
            X_outliers = mean + rng_out.uniform(-50, 50, size=(n_out, 3)) * sd
        logp = stats.multivariate_normal(mean, cov).logpdf(X_test)
        table.update(X_train_clean=X_clean, X_outliers=X_outliers)
    else:  # discrete
        n = 2000
        mean = rng.normal(size=2)
        scale = rng.uniform(0.5, 2.0, size=2)
        cov = np.array([[1.0, 0.7], [0.7, 1.0]]) * np.outer(scale, scale)

        def draw(m):
            return np.column_stack([_gaussian_rows(mean, cov, m, rng),
                                    rng.binomial(1, 0.4, m), rng.poisson(0.3, m)]).astype(float)

        X_train, X_test = draw(n), draw(n_test)
        logp = (stats.multivariate_normal(mean, cov).logpdf(X_test[:, :2])
                + stats.bernoulli.logpmf(X_test[:, 2], 0.4) + stats.poisson.logpmf(X_test[:, 3], 0.3))
    table.update(X_train=X_train, X_test=X_test, logp_test=logp)
    return table


# --- the models ---------------------------------------------------------------------------


def _gmm_grid(quick):
    grid = dict(covariance_types=("full", "diag"))
    if quick:
        grid.update(n_components=(1, 2, 3, 4), reg_covars=(1e-6, 1e-4, 1e-2), n_init=1)
    return grid


def fit_tuned_gmm(X_train, seed, quick):
    """``tuned_gaussian_mixture`` chosen on an inner 80/20 split, refitted on all of ``X_train``."""
    grid = _gmm_grid(quick)
    inner, val = train_test_split(X_train, test_size=0.2, random_state=seed)
    chosen = tuned_gaussian_mixture(inner, val, random_state=seed, **grid)
    params = dict(n_components=chosen.n_components, covariance_type=chosen.covariance_type,
                  reg_covar=chosen.reg_covar)
    choice = f"k={chosen.n_components} {chosen.covariance_type} reg={chosen.reg_covar:g}"
    try:
        refit = GaussianMixture(**params, n_init=grid.get("n_init", 2), random_state=seed).fit(X_train)
        if np.isfinite(refit.score(X_train)):
            return refit, choice
    except (ValueError, np.linalg.LinAlgError):
        pass
    return chosen, choice + " (inner fit)"


def _make_flow(model, seed, args):
    from skflowsearch import CouplingFlow, StructureSearchFlow

    params = {} if args.max_epochs is None else dict(max_epochs=args.max_epochs)
    if model == "flow":
        return CouplingFlow(random_state=seed, **params)
    search = dict(budgets(True)["search"]) if args.quick else {}
    search["n_jobs"] = args.n_jobs
    return StructureSearchFlow(random_state=seed, **params, **search)


def _auc(scores_inliers, scores_outliers):
    """ROC AUC of ranking by ``-score_samples``; NaN counts as the most normal, -inf as the least."""
    scores = np.concatenate([scores_inliers, scores_outliers])
    scores = np.nan_to_num(np.where(np.isnan(scores), np.inf, scores), posinf=1e300, neginf=-1e300)
    y = np.r_[np.zeros(len(scores_inliers)), np.ones(len(scores_outliers))]
    return float(roc_auc_score(y, -scores))


def run_model(model, X_train, table, seed, args, detector=False):
    """Fit and score one model on ``X_train``.

    Returns a dict: ``score`` (mean test log-likelihood, NaN on error),
    ``n_nonfinite`` (test rows scored NaN/inf), ``warnings`` (list of
    ``(category, first 80 chars)``, flows only), ``error``, ``seconds``,
    ``choice`` (tuned GMM) and, with ``detector``, ``auc``.
    """
    out = dict(score=np.nan, n_nonfinite=0, warnings=[], error=None, choice=None, auc=np.nan)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if model == "gaussian":
                estimator = gaussian_baseline(flow_training_rows(X_train, seed))
            elif model == "gmm":
                estimator, out["choice"] = fit_tuned_gmm(X_train, seed, args.quick)
            elif detector:
                from skflowsearch import FlowOutlierDetector

                estimator = FlowOutlierDetector(_make_flow(model, seed, args)).fit(X_train)
            else:
                estimator = _make_flow(model, seed, args).fit(X_train)
            per_row = np.asarray(estimator.score_samples(table["X_test"]), dtype=float)
            out["score"] = float(np.mean(per_row))
            out["n_nonfinite"] = int((~np.isfinite(per_row)).sum())
            if detector:
                out["auc"] = _auc(per_row, estimator.score_samples(table["X_outliers"]))
                out["detector"], out["test_rows"] = estimator, per_row
        except Exception as exc:  # reported in the table, not fatal
            out["error"] = f"{type(exc).__name__}: {str(exc)[:80]}"
    out["seconds"] = time.perf_counter() - start
    if model in FLOWS:
        out["warnings"] = [(w.category.__name__, str(w.message)[:80]) for w in caught]
    return out


def run_table(name, seed, models, args, clean_cache):
    table = make_table(name, seed, args.quick)
    contaminated = name in CONTAMINATION
    record = {"truth": float(np.mean(table["logp_test"])), "shape": table["X_train"].shape,
              "models": {}, "clean": {}}
    for model in models:
        record["models"][model] = run_model(model, table["X_train"], table, seed, args,
                                            detector=contaminated and model == "flow")
    if contaminated:
        # Same seed: the same clean training and test rows for every fraction (and the same
        # test outliers for every fraction of a kind), so the clean fit is computed once.
        for model in ("flow", "gaussian"):
            if (seed, model) not in clean_cache:
                clean_cache[(seed, model)] = run_model(model, table["X_train_clean"], table, seed, args,
                                                       detector=model == "flow")
            clean = dict(clean_cache[(seed, model)])
            if clean.get("detector") is not None:  # this table's kind of test outliers
                outliers = clean["detector"].score_samples(table["X_outliers"])
                clean["auc"] = _auc(clean["test_rows"], outliers)
            record["clean"][model] = clean
        record["models"]["flow"].pop("detector", None)
    return record


# --- the summary --------------------------------------------------------------------------


def _interval(values):
    """``(mean, low, high)`` over seeds; the interval is NaN when it is undefined."""
    values = np.asarray(values, dtype=float)
    mean = float(np.mean(values))
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return mean, np.nan, np.nan
    low, high = bootstrap_interval(values)
    return mean, low, high


def _fmt_ci(values, digits=3):
    mean, low, high = _interval(values)
    if not np.isfinite(mean):
        return str(mean)
    if np.isnan(low):
        return f"{mean:+.{digits}f}"
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def _fmt(value, digits=3):
    return f"{value:.{digits}f}" if np.isfinite(value) else str(value)


def flow_training_rows(X_train, seed):
    """The rows a flow with ``random_state=seed`` and the default validation_fraction trains on."""
    n = X_train.shape[0]
    order = np.random.RandomState(seed).permutation(n)
    return X_train[order[max(1, int(round(0.1 * n))):]]


def _below_gaussian(diffs):
    """True when the whole interval of flow - Gaussian is below 0 (one seed: the value)."""
    mean, low, high = _interval(diffs)
    if np.isnan(mean):
        return False
    return bool(high < 0) if np.isfinite(high) else bool(mean < 0)


def _within(differences, tolerance):
    """"yes" when the mean over seeds of ``differences`` is at least ``tolerance``."""
    differences = np.asarray(differences, dtype=float)
    if np.isnan(differences).any():
        return "n/a"
    return "yes" if differences.mean() >= tolerance else "no"


def summarize(results, models, args):
    """The markdown report (a list of lines) from ``results[name] = [record per seed]``."""
    flows = [m for m in FLOWS if m in models]
    score_rows, gap_rows, contam_rows, warning_rows = [], [], [], []
    for name, records in results.items():
        n, d = records[0]["shape"]
        truth = np.array([r["truth"] for r in records])
        scores = {m: np.array([r["models"][m]["score"] for r in records]) for m in models}
        choices = Counter(r["models"]["gmm"]["choice"] for r in records if r["models"]["gmm"]["choice"])
        seconds = np.mean([r["models"]["flow"]["seconds"] for r in records])
        score_rows.append([name, f"{n}x{d}", _fmt(truth.mean())] + [_fmt(scores[m].mean()) for m in models]
                          + ["; ".join(f"{c} ({k})" for c, k in choices.most_common()), f"{seconds:.1f}"])

        notes, warned = [], {}
        for m in models:
            errors = [r["models"][m]["error"] for r in records if r["models"][m]["error"]]
            if errors:
                notes.append(f"{LABELS[m]} error in {len(errors)} seed(s): {errors[0]}")
            nonfinite = sum(r["models"][m]["n_nonfinite"] for r in records)
            if nonfinite:
                notes.append(f"{LABELS[m]}: {nonfinite} non-finite test scores")
            ok = ~np.isnan(scores[m])
            if ok.any() and np.mean(scores[m][ok] - truth[ok]) > ABOVE_TRUTH:
                notes.append(f"{LABELS[m]} above truth (point masses?)")
        for m in flows:
            # The clean fits' warnings are listed, but only the fits of this table's rows count
            # for "silent failure?".
            for source, label in (("models", LABELS[m]), ("clean", LABELS[m] + " (clean fit)")):
                counts = Counter()
                for r in records:
                    if m in r[source]:
                        counts.update(set(r[source][m]["warnings"]))
                if source == "models":
                    warned[m] = counts
                for (category, message), count in sorted(counts.items()):
                    warning_rows.append([name, label, category, count, message.replace("|", "/")])

        silent, failed = [], []
        diffs = {m: scores[m] - scores["gaussian"] for m in flows}
        for m in flows:
            if _below_gaussian(diffs[m]) and not warned[m]:
                silent.append(LABELS[m])
            if any(r["models"][m]["error"] for r in records):
                failed.append(LABELS[m])
        gap_rows.append([name, f"{n}x{d}"] + [_fmt_ci(truth - scores[m]) for m in models]
                        + [_fmt_ci(diffs[m]) for m in flows]
                        + ["; ".join(f"{LABELS[m]}: " + ", ".join(f"{c} x{k}" for c, k in Counter(
                            cat for cat, _ in warned[m].elements()).items()) for m in flows if warned[m])
                           or "none",
                           "; ".join(notes) or "-",
                           ("yes: " + ", ".join(silent)) if silent
                           else "no (error: " + ", ".join(failed) + ")" if failed else "no"])

        if name in CONTAMINATION:
            fraction = CONTAMINATION[name]
            flow = scores["flow"]
            flow_clean = np.array([r["clean"]["flow"]["score"] for r in records])
            gauss_clean = np.array([r["clean"]["gaussian"]["score"] for r in records])
            auc = np.array([r["models"]["flow"]["auc"] for r in records])
            auc_clean = np.array([r["clean"]["flow"]["auc"] for r in records])
            delta, delta_auc = flow - flow_clean, auc - auc_clean
            contam_rows.append([
                name, "1 row [1e6, -1e6, 1e6]" if fraction is None else f"{fraction:.0%}",
                _fmt(flow.mean()), _fmt(flow_clean.mean()), _fmt_ci(delta),
                _within(delta, -0.5),
                _fmt_ci(scores["gaussian"] - gauss_clean),
                _fmt(np.mean(auc), 4), _fmt(np.mean(auc_clean), 4), _fmt_ci(delta_auc, 4),
                _within(delta_auc, -0.01),
            ])

    seeds = list(range(args.n_seeds))
    epochs = (f"max_epochs={args.max_epochs}" if args.max_epochs is not None
              else "package default max_epochs")
    lines = ["## Synthetic tables with known densities: held-out mean log-likelihood per row "
             "(nats, raw space; higher is better)", "",
             f"seeds {seeds}; {'--quick; ' if args.quick else ''}flows: defaults, {epochs}"
             f"{'; StructureSearchFlow n_jobs=' + str(args.n_jobs) if 'search' in models else ''}; "
             f"test rows per table {1000 if args.quick else 2000}. Mean over seeds.",
             (getattr(args, "machine", None) or machine_line())
             + f"; BLAS/OpenMP threads limited to {args.threads}", ""]
    lines.append(markdown_table(["table", "n x d (train)", "truth"] + [LABELS[m] for m in models]
                                + ["tuned GMM choice (seeds)", "CouplingFlow fit s"], score_rows))
    lines += ["", "### Gap to the truth (truth - model, nats/row) and flow - single Gaussian: mean "
              "[bootstrap 95% interval over seeds]", "",
              f"notes: 'above truth (point masses?)' when a model's mean score exceeds the truth by "
              f"more than {ABOVE_TRUTH} nats/row. silent failure? = a flow below the single Gaussian "
              "with its whole interval (one seed: its value) and no warning on that table.", ""]
    lines.append(markdown_table(["table", "n x d (train)"] + [f"gap {LABELS[m]}" for m in models]
                                + [f"{LABELS[m]} - Gaussian" for m in flows]
                                + ["flow warnings (category xN: in N seeds)", "notes", "silent failure?"],
                                gap_rows))
    if contam_rows:
        lines += ["", "### Contamination: contaminated fit against the clean fit (same seed, same clean "
                  "test rows)", "",
                  "Issue 16's criterion at 5%: held-out log-likelihood within 0.5 nats/row of the clean "
                  "fit, ROC AUC of FlowOutlierDetector(CouplingFlow()) within 0.01 of the clean fit's "
                  "(the 'within' columns test the mean over seeds).", ""]
        lines.append(markdown_table(
            ["table", "outliers in train", "CouplingFlow contaminated", "CouplingFlow clean",
             "contaminated - clean", "within 0.5?", "Gaussian contaminated - clean",
             "AUC contaminated", "AUC clean", "AUC contaminated - clean", "AUC within 0.01?"],
            contam_rows))
    lines += ["", "### Warnings raised by the flows (distinct messages, first 80 characters)", ""]
    lines.append(markdown_table(["table", "model", "category", "seeds", "message"],
                                warning_rows or [["-", "-", "-", "-", "none"]]))
    return lines


def _selected_tables(requested):
    names = []
    for item in requested:
        for name in GROUPS.get(item, [item]):
            if name not in TABLES:
                raise SystemExit(f"unknown table {item!r}; choose from {TABLES} or groups {list(GROUPS)}")
            if name not in names:
                names.append(name)
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"d=20 wide Gaussians, 2 seeds, max_epochs={QUICK_MAX_EPOCHS}, small GMM grid")
    parser.add_argument("--tables", nargs="+", default=None, metavar="NAME",
                        help=f"tables or groups ({', '.join(GROUPS)}); default all")
    parser.add_argument("--n-seeds", type=int, default=None, help="seeds 0..N-1 (default 5, --quick 2)")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="cap of the flows' max_epochs (default: the package's; "
                             f"--quick {QUICK_MAX_EPOCHS})")
    parser.add_argument("--search", action="store_true", help="also fit StructureSearchFlow (expensive)")
    parser.add_argument("--n-jobs", type=int, default=2, help="StructureSearchFlow n_jobs (default 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS/OpenMP threads of this process (default 1)")
    parser.add_argument("--output", default=None, help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    if args.n_seeds is None:
        args.n_seeds = 2 if args.quick else 5
    if args.max_epochs is None and args.quick:
        args.max_epochs = QUICK_MAX_EPOCHS
    names = _selected_tables(args.tables or TABLES)
    models = ["flow"] + (["search"] if args.search else []) + ["gaussian", "gmm"]

    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    args.machine = machine_line()  # while torch runs args.threads threads
    start = time.perf_counter()
    results, clean_cache = {}, {}
    try:
        with threadpool_limits(args.threads):
            for name in names:
                results[name] = [run_table(name, seed, models, args, clean_cache)
                                 for seed in range(args.n_seeds)]
                print(f"[bench_truth] {name} done ({time.perf_counter() - start:.0f}s elapsed)",
                      file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(previous)
    lines = summarize(results, models, args)
    lines += ["", f"total wall time: {time.perf_counter() - start:.0f}s"]
    text = "\n".join(lines)
    print(text)
    if args.output:
        with open(args.output, "w") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
