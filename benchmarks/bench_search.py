"""Does the structure search pay for itself? Paired, equal-compute comparison on real tables.

Run from the repository root::

    python benchmarks/bench_search.py [--datasets NAME ...] [--splits 10] [--baselines]
                                      [--ensemble K] [--results FILE.jsonl] [--quick]

Protocol, per table and split ``s`` (the one of ``bench_quality.py``):
``split_standardize(load_table(name, s), random_state=s)`` gives train /
validation / test rows standardized on the train rows. The test rows are
scored once per model and never choose anything.

* ``CouplingFlow()`` and ``StructureSearchFlow(n_jobs=2)`` with their
  defaults (``random_state=s``) are fitted on train + validation rows (they
  hold out their own early-stopping rows, and the search its selection rows).
  Their fit wall times are measured side by side in the same run.
* Equal-compute baselines (``--baselines``), each with the compute of a few
  fits, chosen on the *validation* rows and then refitted on train +
  validation rows with the chosen setting, as the search refits its winner:

  - ``best of 4 seeds``: ``CouplingFlow(random_state=k)``, k = 4 seeds;
  - ``random search``: alternating masks and 3 random-mask flows;
  - ``grid``: ``n_layers`` in (4, 8) x ``hidden_layer_sizes`` in
    ((32, 32), (64, 64)).

  Candidates are fitted on the train rows only, so the choice is made on
  rows they never saw.
* Ensembles (``--ensemble K``): ``n_estimators=K`` of the same search (its
  race's structures, from the checkpoint of the evolution) against
  ``CouplingFlow(masks=search.masks_, n_estimators=K)`` of the searched
  structure's widths (K seeds of it), same ``random_state``.

The summary gives, per table, the mean paired difference (nats per row,
higher is better) with a bootstrap 95% interval over splits, the median
``n_parameters_`` of each model and the median ratio of the search's fit
time to one ``CouplingFlow()`` fit. Every (table, split) result is appended
to a JSON-lines file; a rerun skips what the file already holds, so a long
run can be resumed and extended (``--splits``) and only summarized
(``--summary-only``).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from sklearn.base import clone  # noqa: E402

from benchmarks._common import bootstrap_interval, machine_line, markdown_table  # noqa: E402
from benchmarks.classical_baselines import split_standardize  # noqa: E402
from benchmarks.datasets_extra import KEEL_DATASETS, keel_available, load_table  # noqa: E402
from skflowsearch.datasets import DATASETS  # noqa: E402

BASELINES = ("best of 4 seeds", "random search", "grid")


def _fit(estimator, X):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        estimator.fit(X)
    return estimator, time.perf_counter() - start


def _choose_and_refit(make, settings, X_train, X_val, X_fit):
    """Fit ``make(setting)`` on ``X_train`` for each setting, keep the best on ``X_val``, refit on ``X_fit``."""
    scores = [_fit(make(setting), X_train)[0].score(X_val) for setting in settings]
    best = settings[int(np.nanargmax(scores))]
    model, _ = _fit(make(best), X_fit)
    return model


def run_split(name, split, quick, baselines, search_params=None, ensemble=None):
    from skflowsearch import CouplingFlow, StructureSearchFlow

    X_train, X_val, X_test = split_standardize(load_table(name, split), random_state=split)
    X_fit = np.vstack([X_train, X_val])
    small = dict(max_epochs=5, n_layers=2, hidden_layer_sizes=(8,)) if quick else {}
    search_small = dict(population_size=2, n_offspring=2, n_generations=1) if quick else {}
    search_small.update(search_params or {})
    record = {"dataset": name, "split": split, "shape": list(X_fit.shape)}

    flow, flow_seconds = _fit(CouplingFlow(random_state=split, **small), X_fit)
    checkpoint = os.path.join(tempfile.mkdtemp(), "search.joblib")
    search, search_seconds = _fit(
        StructureSearchFlow(random_state=split, n_jobs=2, checkpoint=checkpoint, **small, **search_small),
        X_fit,
    )
    # The other pick rule, from the same evolution (the checkpoint): only the race and the final
    # training run again.
    smallest, _ = _fit(clone(search).set_params(pick="smallest"), X_fit)
    if ensemble:
        # An ensemble of the race's structures (same evolution, from the checkpoint), and one of
        # as many seeds of the searched structure: a CouplingFlow with its masks and widths.
        race_ensemble, race_seconds = _fit(clone(search).set_params(n_estimators=ensemble), X_fit)
        seed_ensemble, seed_seconds = _fit(CouplingFlow(
            masks=search.masks_, n_layers=search.masks_.shape[0], hidden_layer_sizes=search.hidden_layer_sizes_,
            n_estimators=ensemble, random_state=split, **{k: v for k, v in small.items() if k == "max_epochs"}),
            X_fit)
        for label, model, seconds in (("race ensemble", race_ensemble, race_seconds),
                                      ("seed ensemble", seed_ensemble, seed_seconds)):
            record[label] = {"test": model.score(X_test), "n_parameters": int(model.n_parameters_),
                             "seconds": seconds, "n_estimators": ensemble}
    shutil.rmtree(os.path.dirname(checkpoint))
    record["flow"] = {"test": flow.score(X_test), "n_parameters": int(flow.n_parameters_),
                      "seconds": flow_seconds, "best_epoch": int(flow.best_epoch_)}
    record["search"] = {
        "test": search.score(X_test), "n_parameters": int(search.n_parameters_),
        "seconds": search_seconds, "winner": next(r["entry"] for r in search.race_ if r["chosen"]),
        "n_layers": int(search.masks_.shape[0]), "hidden": list(search.hidden_layer_sizes_),
        "fitness_steps": int(search.fitness_steps_),
        # Both final flows train on the same rows and early-stop on the same
        # validation rows: the epoch at which the searched one first reaches
        # the alternating flow's best validation score (None: never).
        "epochs_to_match": _first_epoch_at(search.validation_scores_, flow.best_validation_score_),
        # Differences and standard errors of the race: other margins can be replayed from them.
        "race": [{key: r[key] for key in ("entry", "score", "difference", "standard_error", "chosen")}
                 for r in search.race_],
    }
    record["search smallest"] = {"test": smallest.score(X_test), "n_parameters": int(smallest.n_parameters_)}
    if baselines:
        def seeds(k):
            return CouplingFlow(random_state=1000 * split + k, **small)

        def masks(k):
            kind = "alternating" if k == 0 else "random"
            return CouplingFlow(masks=kind, random_state=1000 * split + k, **small)

        def grid(setting):
            n_layers, hidden = setting
            params = dict(small, n_layers=n_layers, hidden_layer_sizes=hidden)
            return CouplingFlow(random_state=split, **params)

        grid_settings = [(2, (8,)), (1, (8,))] if quick else [
            (4, (32, 32)), (4, (64, 64)), (8, (32, 32)), (8, (64, 64))]
        for label, make, settings in (("best of 4 seeds", seeds, [0, 1, 2, 3]),
                                      ("random search", masks, [0, 1, 2, 3]),
                                      ("grid", grid, grid_settings)):
            model = _choose_and_refit(make, settings, X_train, X_val, X_fit)
            record[label] = {"test": model.score(X_test), "n_parameters": int(model.n_parameters_)}
    return record


def _first_epoch_at(curve, target):
    reached = np.flatnonzero(np.asarray(curve) >= target)
    return int(reached[0]) if reached.size else None


def _warm_up():
    """Start the joblib workers and page torch in, so that the first timing is not an outlier."""
    from skflowsearch import StructureSearchFlow

    X = np.random.default_rng(0).normal(size=(60, 3))
    _fit(StructureSearchFlow(n_layers=2, hidden_layer_sizes=(4,), population_size=2, n_offspring=2,
                             n_generations=1, max_epochs=2, n_jobs=2, random_state=0), X)


def _pm(values):
    low, high = bootstrap_interval(values)
    return f"{np.mean(values):+.3f} [{low:+.3f}, {high:+.3f}]"


def summarize(records):
    by_table = {}
    for record in records:
        by_table.setdefault(record["dataset"], []).append(record)
    rows, size_rows = [], []
    for name, recs in by_table.items():
        recs = sorted(recs, key=lambda r: r["split"])
        flow = np.array([r["flow"]["test"] for r in recs])
        search = np.array([r["search"]["test"] for r in recs])
        row = [name, "x".join(map(str, recs[0]["shape"])), len(recs), _pm(search - flow)]
        have = [r for r in recs if "search smallest" in r]
        row.append(_pm([r["search smallest"]["test"] - r["flow"]["test"] for r in have]) if have else "-")
        for label in BASELINES:
            have = [r for r in recs if label in r]
            if have:
                diff = [r["search"]["test"] - r[label]["test"] for r in have]
                row.append(_pm(diff))
            else:
                row.append("-")
        ratio = np.median([r["search"]["seconds"] / r["flow"]["seconds"] for r in recs])
        row += [f"{np.mean(search):.3f}", f"{np.mean(flow):.3f}", f"{ratio:.1f}x"]
        rows.append(row)
        flow_size = np.median([r["flow"]["n_parameters"] for r in recs])
        search_size = np.median([r["search"]["n_parameters"] for r in recs])
        smallest_size = np.median([r["search smallest"]["n_parameters"] for r in recs
                                   if "search smallest" in r] or [np.nan])
        winners = {}
        for r in recs:
            winners[r["search"]["winner"]] = winners.get(r["search"]["winner"], 0) + 1
        matched = [r["search"].get("epochs_to_match") for r in recs if "best_epoch" in r["flow"]]
        reached = [m for m in matched if m is not None]
        flow_epochs = np.median([r["flow"]["best_epoch"] for r in recs if "best_epoch" in r["flow"]]
                                or [np.nan])
        size_rows.append([name, f"{flow_size:,.0f}", f"{search_size:,.0f}",
                          f"{search_size / flow_size:.2f}", f"{smallest_size / flow_size:.2f}",
                          ", ".join(f"{k} {v}" for k, v in sorted(winners.items())),
                          f"{flow_epochs:.0f}",
                          f"{np.median(reached):.0f} ({len(reached)}/{len(matched)})" if reached else "-"])
    header = ["dataset", "n x d (fit rows)", "splits", "search - CouplingFlow()",
              'pick="smallest" - CouplingFlow()']
    header += [f"search - {label}" for label in BASELINES]
    header += ["search mean", "CouplingFlow() mean", "search time / flow time (median)"]
    print("## Held-out log-likelihood, paired over splits: mean difference [bootstrap 95% CI], "
          "nats/row\n")
    print(markdown_table(header, rows))
    print("\n## Size of the final flows (median n_parameters_), race winners, convergence\n")
    print("Convergence: epochs the CouplingFlow() needed to its best validation score, and the epochs "
          "the searched flow (same rows, same validation rows) needed to reach that score "
          "(median over the splits where it did, and in how many splits it did).\n")
    print(markdown_table(["dataset", "CouplingFlow()", "search", "search / flow",
                          'pick="smallest" / flow', "race winners",
                          "flow epochs to best", "search epochs to flow's best"], size_rows))
    ensemble_rows = []
    for name, recs in by_table.items():
        have = sorted((r for r in recs if "race ensemble" in r), key=lambda r: r["split"])
        if not have:
            continue
        race, seeds, single = ([r[label]["test"] for r in have] for label in ("race ensemble", "seed ensemble", "search"))
        ensemble_rows.append([
            name, len(have), have[0]["race ensemble"]["n_estimators"],
            _pm(np.subtract(race, seeds)), _pm(np.subtract(race, single)), _pm(np.subtract(seeds, single)),
            f"{np.median([r['race ensemble']['n_parameters'] for r in have]):,.0f} / "
            f"{np.median([r['seed ensemble']['n_parameters'] for r in have]):,.0f}",
        ])
    if ensemble_rows:
        print("\n## Ensembles (--ensemble K): of the race's structures, and of K seeds of the searched one\n")
        print(markdown_table(["dataset", "splits", "K", "race ensemble - seed ensemble",
                              "race ensemble - search", "seed ensemble - search",
                              "median n_parameters_ (race / seeds)"], ensemble_rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--first-split", type=int, default=0)
    parser.add_argument("--baselines", action="store_true", help="also fit the equal-compute baselines")
    parser.add_argument("--results", default="bench_search_results.jsonl",
                        help="JSON-lines file the results are appended to (and read from)")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke test")
    parser.add_argument("--search-params", type=json.loads, default={},
                        help='StructureSearchFlow settings other than the defaults, as JSON, '
                             'e.g. \'{"fitness_budget": 1.0}\'')
    parser.add_argument("--ensemble", type=int, default=None, metavar="K",
                        help="also fit ensembles of K flows: of the race's structures and of K seeds of "
                             "the searched structure")
    args = parser.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    if args.datasets is None:
        args.datasets = list(DATASETS) + (list(KEEL_DATASETS) if keel_available() else [])
    records = []
    if os.path.exists(args.results):
        with open(args.results) as handle:
            records = [json.loads(line) for line in handle if line.strip()]
    done = {(r["dataset"], r["split"], bool(r.get("quick"))) for r in records
            if (all(label in r for label in BASELINES) or not args.baselines)
            and ("race ensemble" in r or not args.ensemble)}
    torch.set_num_threads(1)
    if not args.summary_only:
        print(machine_line(), file=sys.stderr)
        with threadpool_limits(1):
            _warm_up()
            for name in args.datasets:
                for split in range(args.first_split, args.first_split + args.splits):
                    if (name, split, args.quick) in done:
                        continue
                    record = run_split(name, split, args.quick, args.baselines, args.search_params,
                                       args.ensemble)
                    record["search_params"] = args.search_params
                    record["quick"] = args.quick
                    records = [r for r in records if (r["dataset"], r["split"], bool(r.get("quick")))
                               != (name, split, args.quick)] + [record]
                    with open(args.results, "a") as handle:
                        handle.write(json.dumps(record) + "\n")
                    print(f"[bench_search] {name} split {split}: search {record['search']['test']:.3f} "
                          f"flow {record['flow']['test']:.3f} ({record['search']['seconds']:.1f}s vs "
                          f"{record['flow']['seconds']:.1f}s, winner {record['search']['winner']})",
                          file=sys.stderr, flush=True)
    wanted = [r for r in records if r["dataset"] in args.datasets and bool(r.get("quick")) == args.quick]
    # The last record of each (table, split) wins.
    latest = {(r["dataset"], r["split"]): r for r in wanted}
    summarize(list(latest.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
