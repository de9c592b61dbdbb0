"""Generation throughput: candidates trained per second, batched vs one by one.

Run from the repository root::

    python benchmarks/bench_generation.py [--quick] [--datasets ...] [--profile] [--micro] [--ceiling]

One "generation" is ``--n-genomes`` (16) random valid masks
(``skflowsearch._operators.random_genome``, 8 layers) made genomes with
every layer on and the full width (``skflowsearch._genome.Genome.full``), on
a real table (StandardScaler fitted on an 80% train split, 20% validation;
breast cancer by default), each trained for a fixed budget (20 epochs;
``n_iter_no_change`` larger than that, so every candidate trains the full
budget and none leaves its stack early), hidden (64, 64), batch 128, by
``skflowsearch._search.CandidateTrainer.train`` with one seed pair: as in
the search, all candidates start from the same weights and see the same
minibatches. The fitness is the mean log-likelihood of the validation rows
(which also serve as the selection rows here). Variants:

* ``one by one``: ``group_size=1, n_jobs=1``, one candidate per model, one
  after the other (the baseline of every ratio);
* ``group_size=8`` and ``16``, ``n_jobs=1``: 8 or 16 candidates stacked into
  one model;
* (full run only) ``one by one, n_jobs=2``: single-candidate models spread
  over two worker processes, and ``group_size=8, n_jobs=2``: the generation
  as two stacked groups of 8 in two worker processes (what
  ``StructureSearchFlow(n_jobs=2)`` does with its default
  ``n_candidates_per_batch=8``).

Every variant runs ``--repeats`` times, interleaved; the table gives medians
of wall time and of this process's CPU time (each training task runs torch
on one thread, so for ``n_jobs=1`` the CPU time is the work done and is far
less sensitive than wall time to other processes on a shared machine; it
does not count the worker processes of ``n_jobs=2``). The fitness values of
every variant are compared with the one-by-one ones.

``--ceiling`` estimates what any grouping can reach on this machine: it
trains the same 32 genomes one by one and in groups of 4, 8, 16 and 32 on
one core, fits the CPU time per candidate as ``t(P) = a + b / P`` (``a``: the
work every candidate brings whatever its group, its matrix products,
elementwise kernels and optimizer update; ``b``: the per-step cost a group
shares) and prints ``t(1) / a``, the speed-up of an infinitely large group on
one core as the fit extrapolates it, and twice that for two cores with
perfect scaling.

``--profile`` prints the torch profiler's top operators for a group of 16
and for one candidate; ``--micro`` only times float32 ``tanh``, ``sigmoid``
(the package evaluates its tanh hidden units through sigmoid, see
``CouplingFlowStack._per_layer``) and ``exp`` on one (16, 128, 64) tensor.
"""

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks._common import (  # noqa: E402
    interleaved,
    machine_line,
    markdown_table,
    median,
    spread,
    standardized_split,
    torch_threads,
)
from skflowsearch._genome import Genome  # noqa: E402
from skflowsearch._operators import random_genome  # noqa: E402
from skflowsearch._search import CandidateTrainer, mean_scores  # noqa: E402
from skflowsearch._training import TrainingConfig  # noqa: E402

INIT_SEED, BATCH_SEED = 0, 1
# One width choice: every genome has the full hidden_layer_sizes.
WIDTH_CHOICES = (1.0,)


def make_genomes(n_genomes, n_layers, n_features, seed=0):
    rng = np.random.default_rng(seed)
    return [Genome.full(random_genome(n_layers, n_features, rng), len(WIDTH_CHOICES))
            for _ in range(n_genomes)]


def make_evaluator(Z_train, Z_val, config, group_size, n_jobs):
    """``evaluate(genomes) -> fitness``: one full-budget training of each, in groups of ``group_size``."""
    trainer = CandidateTrainer(
        Z_train, Z_val, config=config, width_choices=WIDTH_CHOICES,
        devices=[torch.device("cpu")], n_jobs=n_jobs, group_size=group_size,
    )

    def evaluate(genomes):
        trained = trainer.train(genomes, [(INIT_SEED, BATCH_SEED)], Z_val)
        return mean_scores(trained)[0]

    return evaluate


BASE = "one by one"


def run(args, dataset):
    """Time one generation on ``dataset``; returns ``{variant: (candidates/s, speed-up)}``."""
    Z_train, Z_val = standardized_split(dataset)
    genomes = make_genomes(args.n_genomes, args.n_layers, Z_train.shape[1])
    config = TrainingConfig(
        hidden_layer_sizes=(64, 64), max_epochs=args.epochs, batch_size=128,
        n_iter_no_change=10 * args.epochs + 10,
    )
    settings = {BASE: (1, 1), "group_size=8": (8, 1), "group_size=16": (16, 1)}
    if args.n_jobs_2:
        settings.update({"one by one, n_jobs=2": (1, 2), "group_size=8, n_jobs=2": (8, 2)})
    variants = {
        name: (lambda e=make_evaluator(Z_train, Z_val, config, g, j): e(genomes))
        for name, (g, j) in settings.items()
    }
    wall, cpu, results = interleaved(variants, args.repeats)
    n = len(genomes)
    rows, summary = [], {}
    for name, (group_size, n_jobs) in settings.items():
        w, c = median(wall[name]), median(cpu[name])
        cpu_cells = [f"{c:.3f}", f"{n / c:.1f}", f"{median(cpu[BASE]) / c:.2f}x"]
        if n_jobs > 1:
            cpu_cells = ["n/a (workers)", "n/a", "n/a"]
        speed_up = median(wall[BASE]) / w
        summary[name] = (n / w, speed_up)
        rows.append([name, f"{w:.3f}", spread(wall[name]), f"{n / w:.1f}", f"{speed_up:.2f}x",
                     *cpu_cells])
    print(f"## Generation throughput: {n} random genomes, {dataset} ({Z_train.shape[0]} train / "
          f"{Z_val.shape[0]} val rows, {Z_train.shape[1]} features)\n")
    print(f"{args.n_layers} coupling layers, hidden (64, 64), batch 128, {args.epochs} epochs each "
          f"(no early stop), {args.repeats} interleaved repeats, medians. Each training task runs "
          "torch on 1 thread (fit_flows pins CPU training to 1 thread).")
    print(machine_line() + "\n")
    print(markdown_table(
        ["variant", "wall s", "wall min-max", "candidates/s (wall)", "speed-up (wall)",
         "CPU s", "candidates/s (CPU)", "speed-up (CPU)"],
        rows,
    ))
    print("\nFitness agreement with one by one (validation log-likelihood, nats):\n")
    agreement = []
    for name in variants:
        diff = np.abs(np.asarray(results[name]) - np.asarray(results[BASE]))
        agreement.append([name, f"{np.max(diff):.3g}", bool(np.all(np.isfinite(results[name])))])
    print(markdown_table(["variant", "max abs diff vs one by one", "all finite"], agreement))
    print(f"\nfitness (one by one): mean {np.mean(results[BASE]):.3f}, "
          f"min {np.min(results[BASE]):.3f}, max {np.max(results[BASE]):.3f}\n")
    return Z_train.shape, summary


def profile(args, row_limit=15):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    Z_train, Z_val = standardized_split("breast_cancer")
    genomes = make_genomes(16, args.n_layers, Z_train.shape[1])
    config = TrainingConfig(max_epochs=args.epochs, n_iter_no_change=10 * args.epochs + 10)
    rows = []
    for group_size, subset in ((16, genomes), (8, genomes[:8]), (1, genomes[:1])):
        evaluator = make_evaluator(Z_train, Z_val, config, group_size, 1)
        evaluator(subset)  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            evaluator(subset)
        averages = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in averages) / 1e3 / len(subset)
        matmul = sum(e.self_cpu_time_total for e in averages
                     if e.key in ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm"))
        matmul = matmul / 1e3 / len(subset)
        rows.append([group_size, f"{total:.1f}", f"{matmul:.1f}", f"{total - matmul:.1f}",
                     f"{total / matmul:.2f}"])
        print(f"\n### torch.profiler, group_size={group_size} ({len(subset)} candidate(s)), "
              f"top {row_limit} operators by self CPU time\n")
        print("```")
        print(averages.table(sort_by="self_cpu_time_total", row_limit=row_limit,
                             max_name_column_width=48))
        print("```")
    print("\n### Where a candidate's time goes (profiled, self CPU ms per candidate)\n")
    print(markdown_table(["group_size", "all operators", "matrix products", "everything else",
                          "all / matrix products"], rows))


CEILING_GROUPS = (1, 4, 8, 16, 32)


def ceiling(args, dataset):
    """Fit ``t(P) = a + b / P`` to the CPU time per candidate of groups of P; print ``t(1) / a``."""
    Z_train, Z_val = standardized_split(dataset)
    genomes = make_genomes(max(CEILING_GROUPS), args.n_layers, Z_train.shape[1])
    config = TrainingConfig(
        hidden_layer_sizes=(64, 64), max_epochs=args.epochs, batch_size=128,
        n_iter_no_change=10 * args.epochs + 10,
    )
    variants = {
        group: (lambda e=make_evaluator(Z_train, Z_val, config, group, 1): e(genomes))
        for group in CEILING_GROUPS
    }
    _, cpu, results = interleaved(variants, args.repeats)
    per_candidate = np.array([median(cpu[group]) / len(genomes) for group in CEILING_GROUPS])
    # Least squares in (a, b) of t(P) = a + b / P, weighting every group size alike.
    design = np.column_stack([np.ones(len(CEILING_GROUPS)), 1.0 / np.array(CEILING_GROUPS)])
    (a, b), *_ = np.linalg.lstsq(design, per_candidate, rcond=None)
    base = per_candidate[0]
    rows = [[group, f"{t * 1e3:.1f}", f"{(a + b / group) * 1e3:.1f}", f"{base / t:.2f}x"]
            for group, t in zip(CEILING_GROUPS, per_candidate)]
    agree = max(float(np.max(np.abs(np.asarray(results[g]) - np.asarray(results[1]))))
                for g in CEILING_GROUPS)
    print(f"## Speed-up against group size: {len(genomes)} random genomes, {dataset} "
          f"({Z_train.shape[0]} train rows, {Z_train.shape[1]} features), one core\n")
    print(f"{args.n_layers} coupling layers, hidden (64, 64), batch 128, {args.epochs} epochs, "
          f"{args.repeats} interleaved repeats, medians of CPU time (n_jobs=1, 1 torch thread).")
    print(machine_line() + "\n")
    print(markdown_table(["group size P", "CPU ms per candidate", "fit a + b/P", "speed-up vs P=1"],
                         rows))
    asymptote = base / a if a > 0 else float("nan")  # a <= 0: too noisy to fit
    print(f"\nfit: a = {a * 1e3:.1f} ms per candidate whatever the group, b = {b * 1e3:.1f} ms "
          f"shared by a group; asymptote t(1)/a = {asymptote:.2f}x on one core, "
          f"{2 * asymptote:.2f}x on two (perfect scaling of two workers). "
          f"Fitness max abs diff vs P=1: {agree:.3g}\n")
    return {"P=8": base / per_candidate[CEILING_GROUPS.index(8)],
            "P=32": base / per_candidate[-1], "asymptote": asymptote}


def elementwise_micro(repeats=7, calls=100):
    """Float32 elementwise kernels on one (16, 128, 64) tensor, one thread."""
    x = torch.randn(16, 128, 64)
    ops = {
        "torch.tanh(x)": torch.tanh,
        "torch.sigmoid(x)": torch.sigmoid,
        "2 * sigmoid(2 x) - 1": lambda t: torch.sigmoid(2.0 * t).mul_(2.0).sub_(1.0),
        "torch.exp(x)": torch.exp,
        "x * x": lambda t: t * t,
    }

    def loop(op):
        for _ in range(calls):
            op(x)

    with torch_threads(1):
        wall, _, _ = interleaved({k: (lambda op=op: loop(op)) for k, op in ops.items()}, repeats)
    print(f"\n### Elementwise kernels, float32 tensor of shape {tuple(x.shape)}, 1 thread, "
          f"{repeats} interleaved repeats of {calls} calls\n")
    rows = []
    for name in ops:
        per_call = median(wall[name]) / calls
        rows.append([name, f"{per_call * 1e6:.1f}", f"{per_call / x.numel() * 1e9:.2f}",
                     f"{per_call / (median(wall['torch.tanh(x)']) / calls):.2f}"])
    print(markdown_table(["op", "us per call", "ns per element", "time / tanh"], rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-genomes", type=int, default=16)
    parser.add_argument("--n-layers", type=int, default=8)
    parser.add_argument("--no-n-jobs-2", dest="n_jobs_2", action="store_false", default=None,
                        help="skip the group_size=8, n_jobs=2 variant")
    parser.add_argument("--datasets", nargs="+", default=["breast_cancer"],
                        help="bundled tables to time one generation on (load_dataset names)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--ceiling", action="store_true",
                        help="only fit t(P) = a + b/P over group sizes 1..32 and print t(1)/a")
    parser.add_argument("--micro", action="store_true",
                        help="only time tanh/sigmoid/exp kernels (the batched profile's hot spots)")
    args = parser.parse_args(argv)
    if args.micro:
        elementwise_micro()
        return 0
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.epochs is None:
        args.epochs = 2 if args.quick else 20
    if args.n_jobs_2 is None:
        args.n_jobs_2 = not args.quick
    if args.ceiling:
        speed_ups = {dataset: ceiling(args, dataset) for dataset in args.datasets}
        if len(speed_ups) > 1:
            print("## Summary: speed-up of grouping over one by one, one core (CPU time)\n")
            print(markdown_table(
                ["dataset", "group of 8", "group of 32", "fitted asymptote t(1)/a",
                 "asymptote x 2 cores"],
                [[d, *(f"{v[k]:.2f}x" for k in ("P=8", "P=32", "asymptote")),
                  f"{2 * v['asymptote']:.2f}x"] for d, v in speed_ups.items()],
            ))
        return 0
    summaries = {dataset: run(args, dataset) for dataset in args.datasets}
    if len(summaries) > 1:
        names = list(next(iter(summaries.values()))[1])
        print("## Summary: speed-up over one by one (wall), candidates/s in brackets\n")
        rows = [
            [dataset, f"{shape[0]}x{shape[1]}",
             *(f"{summary[name][1]:.2f}x ({summary[name][0]:.1f})" for name in names)]
            for dataset, (shape, summary) in summaries.items()
        ]
        print(markdown_table(["dataset", "train rows x features", *names], rows))
    if args.profile:
        profile(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
