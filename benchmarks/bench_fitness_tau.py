"""How well does the search's fitness predict the final model? Kendall tau on real tables.

Run from the repository root::

    python benchmarks/bench_fitness_tau.py [--datasets NAME ...] [--splits 0 1] [--genomes 8]

Per table and split (``split_standardize``, as in ``bench_quality.py``), a
default ``StructureSearchFlow(n_jobs=2)`` is fitted on train + validation
rows. Of the genomes it evaluated (finite fitness), ``--genomes`` are taken
at evenly spaced ranks of their fitness; each is trained as the final flow
would be, ``CouplingFlow(masks=its active masks, hidden_layer_sizes=its
widths)`` on the same rows with the full budget, and scored on the test
rows. The table gives Kendall's tau between the fitness and that held-out
score (1: the fitness orders the genomes as the test rows do).

The same script runs against an older checkout of the package (put it first
on ``PYTHONPATH``): a search without ``evaluated_layers_`` has full-depth,
full-width genomes, which is how the figures "before" in
``benchmarks/README.md`` were made.
"""

import argparse
import os
import sys
import warnings

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from benchmarks._common import machine_line, markdown_table  # noqa: E402
from benchmarks.classical_baselines import split_standardize  # noqa: E402
from benchmarks.datasets_extra import load_table  # noqa: E402


# Search settings of the run (--budget etc. override the defaults).
SEARCH_PARAMS = {}


def genomes_of(search):
    """``(masks, hidden_layer_sizes, fitness)`` of every evaluated genome with finite fitness."""
    scores = np.asarray(search.evaluated_scores_, dtype=float)
    out = []
    for i, score in enumerate(scores):
        if not np.isfinite(score):
            continue
        masks = search.evaluated_masks_[i]
        hidden = tuple(search.hidden_layer_sizes)
        if hasattr(search, "evaluated_layers_"):
            masks = masks[search.evaluated_layers_[i]]
            hidden = tuple(int(h) for h in search.evaluated_hidden_layer_sizes_[i])
        out.append((masks, hidden, score))
    return out


def run(name, split, n_genomes):
    from skflowsearch import CouplingFlow, StructureSearchFlow

    X_train, X_val, X_test = split_standardize(load_table(name, split), random_state=split)
    X_fit = np.vstack([X_train, X_val])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        search = StructureSearchFlow(random_state=split, n_jobs=2, **SEARCH_PARAMS).fit(X_fit)
        evaluated = sorted(genomes_of(search), key=lambda g: g[2])
        picks = np.unique(np.linspace(0, len(evaluated) - 1, n_genomes).round().astype(int))
        fitness, held_out = [], []
        for i in picks:
            masks, hidden, score = evaluated[i]
            flow = CouplingFlow(masks=masks, hidden_layer_sizes=hidden, random_state=split).fit(X_fit)
            fitness.append(score)
            held_out.append(flow.score(X_test))
    return kendalltau(fitness, held_out).statistic, len(picks)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["iris", "diabetes", "breast_cancer", "digits"])
    parser.add_argument("--splits", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--genomes", type=int, default=8)
    parser.add_argument("--fitness-budget", type=float, default=None,
                        help="StructureSearchFlow(fitness_budget=...) instead of the default")
    parser.add_argument("--halving-factor", type=int, default=None)
    args = parser.parse_args(argv)
    for name in ("fitness_budget", "halving_factor"):
        if getattr(args, name) is not None:
            SEARCH_PARAMS[name] = getattr(args, name)
    import torch

    torch.set_num_threads(1)
    rows = []
    for name in args.datasets:
        taus = []
        for split in args.splits:
            tau, n = run(name, split, args.genomes)
            taus.append(tau)
            print(f"[bench_fitness_tau] {name} split {split}: tau {tau:.2f} over {n} genomes",
                  file=sys.stderr, flush=True)
        rows.append([name, " / ".join(f"{t:.2f}" for t in taus), f"{np.nanmean(taus):.2f}"])
    print(machine_line() + "\n")
    print(markdown_table(["dataset", "Kendall tau per split", "mean"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
