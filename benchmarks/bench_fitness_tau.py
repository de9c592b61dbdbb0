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

With ``--race`` it asks the same of the final race instead::

    python benchmarks/bench_fitness_tau.py --race --datasets iris wine --splits 0 1 2 3 4 5 6 7 8 9

Every entry of the race (the alternating masks and the finalists) is trained
as the final flow would be and scored on the test rows. A race has only
``n_finalists + 1`` entries, too few for a tau per split, so the table pools
the splits: Kendall's tau between each finalist's race ``difference``
(against the alternating masks, on the rows that judged the race) and the
same difference on the test rows; how often the two have the same sign; on
how many splits the race's pick is the entry that is best on the test rows;
the pick's test score minus the alternating masks' (the search against
``CouplingFlow()``, as in ``bench_search.py``); and the regret, the test score of that best entry minus the pick's, with
its bootstrap 95% interval.
"""

import argparse
import os
import sys
import warnings

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from benchmarks._common import format_paired, machine_line, markdown_table  # noqa: E402
from benchmarks.classical_baselines import split_standardize  # noqa: E402
from benchmarks.datasets_extra import load_table  # noqa: E402


# Search settings of the run (--budget etc. override the defaults); FLOW_PARAMS
# apply to the search and to every flow trained fully (``--quick`` shrinks both).
SEARCH_PARAMS = {}
FLOW_PARAMS = {}


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


def full_flow(masks, hidden_layer_sizes, split):
    """A genome trained as the search's final flow would be (``n_layers`` follows ``masks``)."""
    from skflowsearch import CouplingFlow

    params = {**FLOW_PARAMS, "masks": masks, "hidden_layer_sizes": tuple(hidden_layer_sizes)}
    return CouplingFlow(random_state=split, **params)


def run(name, split, n_genomes):
    from skflowsearch import StructureSearchFlow

    X_train, X_val, X_test = split_standardize(load_table(name, split), random_state=split)
    X_fit = np.vstack([X_train, X_val])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        search = StructureSearchFlow(random_state=split, n_jobs=2, **FLOW_PARAMS, **SEARCH_PARAMS).fit(X_fit)
        evaluated = sorted(genomes_of(search), key=lambda g: g[2])
        picks = np.unique(np.linspace(0, len(evaluated) - 1, n_genomes).round().astype(int))
        fitness, held_out = [], []
        for i in picks:
            masks, hidden, score = evaluated[i]
            flow = full_flow(masks, hidden, split).fit(X_fit)
            fitness.append(score)
            held_out.append(flow.score(X_test))
    return kendalltau(fitness, held_out).statistic, len(picks)


def race_structures(search):
    """``(masks, hidden_layer_sizes)`` of every entry of ``search.race_`` that trained, in its order.

    The search trains its entries in the order ``_choose_structure`` returns
    them (the pick, then the others by race score); a subclass keeps that
    list, and it is put back in the order of ``race_``.
    """
    ranked = search.ranked_structures_
    chosen = next(i for i, r in enumerate(search.race_) if r["chosen"])
    scores = np.array([r["score"] for r in search.race_])
    order = [chosen] + [int(i) for i in np.argsort(-scores, kind="stable")
                        if i != chosen and np.isfinite(scores[i])]
    by_entry = dict(zip(order, ranked))
    return [by_entry.get(i) for i in range(len(search.race_))]


def run_race(name, split):
    """Per race entry: its race difference against the alternating masks, its test score, chosen."""
    from skflowsearch import StructureSearchFlow

    class RecordingSearch(StructureSearchFlow):
        def _choose_structure(self, *args, **kwargs):
            self.ranked_structures_ = super()._choose_structure(*args, **kwargs)
            return self.ranked_structures_

    X_train, X_val, X_test = split_standardize(load_table(name, split), random_state=split)
    X_fit = np.vstack([X_train, X_val])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        search = RecordingSearch(random_state=split, n_jobs=2, **FLOW_PARAMS, **SEARCH_PARAMS).fit(X_fit)
        entries = []
        for record, structure in zip(search.race_, race_structures(search)):
            test = np.nan
            if structure is not None:
                masks, hidden = structure
                flow = full_flow(masks, hidden, split)
                test = flow.fit(X_fit).score(X_test)
            entries.append({"difference": record["difference"], "standard_error": record["standard_error"],
                            "test": test, "chosen": record["chosen"]})
    # The pick, trained by CouplingFlow with the same seed, is the search's own final flow.
    pick = next(e for e in entries if e["chosen"])
    if not np.isclose(pick["test"], search.score(X_test), rtol=0, atol=1e-6):
        raise AssertionError(f"the pick's refit scores {pick['test']}, the search {search.score(X_test)}")
    return entries


def summarize_race(name, per_split):
    """One table row: pooled tau, sign agreement, pick = test-best, the pick's gain, regret."""
    race_d, test_d, gains, regrets, hits = [], [], [], [], 0
    for entries in per_split:
        tests = np.array([e["test"] for e in entries])
        reference = tests[0]  # the alternating masks are the race's first entry
        for e in entries[1:]:
            if np.isfinite(e["test"]) and np.isfinite(e["difference"]):
                race_d.append(e["difference"])
                test_d.append(e["test"] - reference)
        chosen = next(i for i, e in enumerate(entries) if e["chosen"])
        best = int(np.nanargmax(tests))
        hits += best == chosen
        gains.append(tests[chosen] - reference)
        regrets.append(tests[best] - tests[chosen])
    race_d, test_d = np.array(race_d), np.array(test_d)
    return [name, len(per_split), len(race_d), f"{kendalltau(race_d, test_d).statistic:.2f}",
            f"{np.mean(np.sign(race_d) == np.sign(test_d)):.2f}", f"{hits} / {len(per_split)}",
            format_paired(gains), format_paired(regrets)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["iris", "diabetes", "breast_cancer", "digits"])
    parser.add_argument("--splits", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--genomes", type=int, default=8)
    parser.add_argument("--fitness-budget", type=float, default=None,
                        help="StructureSearchFlow(fitness_budget=...) instead of the default")
    parser.add_argument("--halving-factor", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, for a smoke test")
    parser.add_argument("--race", action="store_true",
                        help="rank the race's entries against the test rows instead of the evolution's genomes")
    args = parser.parse_args(argv)
    for name in ("fitness_budget", "halving_factor"):
        if getattr(args, name) is not None:
            SEARCH_PARAMS[name] = getattr(args, name)
    if args.quick:
        FLOW_PARAMS.update(max_epochs=5, n_layers=2, hidden_layer_sizes=(8,))
        SEARCH_PARAMS.update(population_size=2, n_offspring=2, n_generations=1)
    import torch

    torch.set_num_threads(1)
    if args.race:
        rows = []
        for name in args.datasets:
            per_split = []
            for split in args.splits:
                per_split.append(run_race(name, split))
                print(f"[bench_fitness_tau] {name} split {split}: {per_split[-1]}", file=sys.stderr, flush=True)
            rows.append(summarize_race(name, per_split))
        print(machine_line() + "\n")
        print(markdown_table(["dataset", "splits", "finalists", "Kendall tau (race vs test difference)",
                              "same sign", "pick is test-best", "pick - alternating (test)",
                              "regret (test best - pick)"], rows))
        return 0
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
