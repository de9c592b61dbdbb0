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
    args = parser.parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with threadpool_limits(args.threads):
            return run(args)
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


if __name__ == "__main__":
    sys.exit(main())
