"""Parallel scaling of the structure search: ``n_jobs=1`` vs ``n_jobs=2``.

Run from the repository root::

    python benchmarks/bench_parallel.py [--quick]

Fits ``StructureSearchFlow`` on breast cancer (StandardScaler fitted on the
whole table; the estimator holds out its own validation rows) with the same
``random_state`` and a modest budget -- 2 generations after the initial one,
population 8, 16 offspring, the default ``fitness_budget``,
``n_candidates_per_batch=8``, ``max_epochs=50`` -- once with ``n_jobs=1``
and once with ``n_jobs=2``, interleaved, ``--repeats`` times. The joblib
(loky) workers are started, and both settings run once on a tiny budget,
before timing. The table gives median wall times, split into the evolution
(the generations' own timers in ``search_history_``) and the rest: the
incumbent's and the finalists' full-budget trainings of the race, which use
the workers too, and the final training of the winner, which is one flow and
does not. It checks that both fits found the same structure, fitness and
race (the search's result must not depend on ``n_jobs``).

The main process runs torch and numpy's BLAS on ``--threads`` threads (1 by
default; ``fit_flows`` pins every CPU training, search tasks and final
training alike, to one torch thread whatever this is). On the shared 2-core
machine of benchmarks/README.md two BLAS/OpenMP threads per process made
numerical work many times slower under load.

``--nested`` times a search nested in a grid search instead:
``GridSearchCV(StructureSearchFlow(n_jobs=inner), {"n_layers": [3, 4]}, cv=2,
n_jobs=outer)`` on a small synthetic table (400 x 6) for ``inner/outer`` =
1/1, 2/2 and 1/2, interleaved. Each fit of the grid search runs in a loky
worker when ``outer=2``; there the search trains its candidates one after the
other (with a warning) whatever its ``n_jobs``, so 2/2 should cost what 1/2
costs. The cross-validation scores of all three must be equal.
"""

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from benchmarks._common import interleaved, machine_line, markdown_table, median, spread  # noqa: E402
from skflowsearch import StructureSearchFlow  # noqa: E402
from skflowsearch.datasets import load_dataset  # noqa: E402


def budget(quick):
    if quick:
        return dict(n_layers=4, hidden_layer_sizes=(16,), population_size=4, n_offspring=8,
                    n_generations=1, n_candidates_per_batch=4, max_epochs=3)
    return dict(n_layers=8, hidden_layer_sizes=(64, 64), population_size=8, n_offspring=16,
                n_generations=2, n_candidates_per_batch=8, max_epochs=50)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads of the main process (default 1)")
    parser.add_argument("--nested", action="store_true",
                        help="time GridSearchCV(n_jobs=outer) over StructureSearchFlow(n_jobs=inner)")
    args = parser.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with threadpool_limits(args.threads):
            return run_nested(args) if args.nested else run(args)
    finally:
        torch.set_num_threads(previous)


def run(args):
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    params = budget(args.quick)
    X = StandardScaler().fit_transform(load_dataset("breast_cancer"))

    def fit(n_jobs, params=params):
        return StructureSearchFlow(**params, n_jobs=n_jobs, random_state=args.random_state).fit(X)

    # Warm-up, untimed: start the loky workers, import skflowsearch and torch in
    # them, and run torch's first-call initialisation in every process.
    for n_jobs in (1, 2):
        fit(n_jobs, budget(quick=True))

    wall, _, fits = interleaved({1: lambda: fit(1), 2: lambda: fit(2)}, repeats, warmup=False)
    rows = []
    for n_jobs in (1, 2):
        search = fits[n_jobs].search_history_
        search_s = sum(r["seconds"] for r in search)
        total = wall[n_jobs][-1]
        rows.append([
            n_jobs, f"{median(wall[n_jobs]):.2f}", spread(wall[n_jobs]),
            f"{search_s:.2f}", f"{total - search_s:.2f}",
            sum(r["n_evaluations"] for r in search),
            f"{median(wall[1]) / median(wall[n_jobs]):.2f}x",
        ])
    same_masks = bool(np.array_equal(fits[1].masks_, fits[2].masks_))
    same_widths = fits[1].hidden_layer_sizes_ == fits[2].hidden_layer_sizes_
    same_scores = bool(np.array_equal(fits[1].evaluated_scores_, fits[2].evaluated_scores_))
    same_race = fits[1].race_ == fits[2].race_
    print("## Parallel scaling: StructureSearchFlow.fit, n_jobs=1 vs n_jobs=2\n")
    print(f"breast cancer {X.shape[0]}x{X.shape[1]}, random_state={args.random_state}, "
          f"{', '.join(f'{k}={v}' for k, v in params.items())}; {repeats} interleaved repeats, "
          "median wall time. Search / final split is from the last repeat.")
    print(machine_line() + "\n")
    print(markdown_table(
        ["n_jobs", "wall s (median)", "wall min-max", "evolution s (last)",
         "race + final training s (last)",
         "candidates trained", "speed-up vs n_jobs=1"],
        rows,
    ))
    print("\nper generation (last repeat), seconds, n_jobs=1 vs 2: "
          + ", ".join(f"gen {a['generation']}: {a['seconds']:.2f} vs {b['seconds']:.2f} "
                      f"({a['n_evaluations']} new)"
                      for a, b in zip(fits[1].search_history_, fits[2].search_history_)))
    print(f"\nmasks_ equal: {same_masks}; hidden_layer_sizes_ equal: {same_widths}; "
          f"evaluated fitness equal: {same_scores}; "
          f"race_ equal: {same_race}; "
          f"best_score_ {fits[1].best_score_:.4f} vs {fits[2].best_score_:.4f}")
    print(f"wall-time ratio n_jobs=1 / n_jobs=2: {median(wall[1]) / median(wall[2]):.2f}")
    return 0


NESTED_SETTINGS = ((1, 1), (2, 2), (1, 2))  # (inner n_jobs, outer n_jobs)


def nested_budget(quick):
    if quick:
        return dict(n_layers=3, hidden_layer_sizes=(8,), population_size=4, n_offspring=4,
                    n_generations=1, n_candidates_per_batch=2, max_epochs=3, batch_size=32)
    return dict(n_layers=4, hidden_layer_sizes=(32, 32), population_size=4, n_offspring=8,
                n_generations=1, n_candidates_per_batch=2, max_epochs=20, batch_size=32)


def run_nested(args):
    import warnings

    from sklearn.model_selection import GridSearchCV

    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    params = nested_budget(args.quick)
    rng = np.random.RandomState(args.random_state)
    X = rng.standard_normal((400, 6))
    X[:, 1] += X[:, 0] ** 2
    grid = {"n_layers": [3, 4]}

    def grid_search(inner, outer, params=params):
        search = StructureSearchFlow(**params, n_jobs=inner, random_state=args.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning of the small budget
            return GridSearchCV(search, grid, cv=2, n_jobs=outer).fit(X)

    for inner, outer in NESTED_SETTINGS:  # warm-up: loky workers, torch imports
        grid_search(inner, outer, nested_budget(quick=True))
    variants = {f"{inner}/{outer}": (lambda i=inner, o=outer: grid_search(i, o))
                for inner, outer in NESTED_SETTINGS}
    wall, _, fits = interleaved(variants, repeats, warmup=False)
    base = median(wall["1/1"])
    rows = [[name, f"{median(wall[name]):.2f}", spread(wall[name]), f"{base / median(wall[name]):.2f}x"]
            for name in variants]
    scores = {name: fits[name].cv_results_["mean_test_score"] for name in variants}
    same = all(np.array_equal(scores[name], scores["1/1"]) for name in variants)
    print("## Nested parallelism: GridSearchCV(StructureSearchFlow(n_jobs=inner), n_jobs=outer)\n")
    print(f"synthetic {X.shape[0]}x{X.shape[1]}, grid {grid}, cv=2 (4 fits + the refit), "
          f"{', '.join(f'{k}={v}' for k, v in params.items())}; {repeats} interleaved repeats, "
          "median wall time.")
    print(machine_line() + "\n")
    print(markdown_table(["inner/outer n_jobs", "wall s (median)", "wall min-max", "speed-up vs 1/1"], rows))
    print(f"\nmean_test_score equal in all settings: {same} ({scores['1/1']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
