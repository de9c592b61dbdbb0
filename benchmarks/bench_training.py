"""Training throughput of one flow: ``fit_flows`` (P=1) vs a hand-written PyTorch loop.

Run from the repository root::

    python benchmarks/bench_training.py [--quick] [--profile] [--no-threads] [--no-zuko]

For each dataset (StandardScaler fitted on an 80% train split, 20%
validation) one flow with alternating masks, 8 coupling layers, hidden
(64, 64), batch 128, is trained for ``--epochs`` epochs by

* ``fit_flows``: ``skflowsearch._training.fit_flows`` with one member
  (``n_iter_no_change`` > epochs, so no early stop; it still scores the
  validation split after every epoch and keeps the best weights, as it
  always does);
* ``hand loop``: the plain PyTorch loop of ``benchmarks/_handloop.py``
  (``nn.Linear``/``nn.Tanh`` conditioners, ActNorm, soft clamp, AdamW,
  ``clip_grad_norm_``), started from the same weights and minibatch order,
  no validation;
* ``hand loop + val``: the same plus one validation pass per epoch (what
  early stopping needs).

Variants run ``--repeats`` times, interleaved; throughput is training rows
processed per second (full batches x batch size x epochs / time), from the
median wall time and the median CPU time of this process (``fit_flows`` runs
torch on one thread; the hand loop on ``--threads``, 1 by default). The
train-loss curves of ``fit_flows`` and the hand loop are compared epoch by
epoch to show both compute the same thing.

A second table sets the engine beside zuko (a benchmark-only dependency;
skipped with a message when it is not installed, or with ``--no-zuko``):
seconds per training epoch of the engine's stack trained by ``train_flows``
(``TrainingConfig(hidden_layer_sizes=HIDDEN, bijection=...)``, ``config.build``,
one member, AdamW, gradient clipping, a validation pass after every epoch,
best weights kept; no early stop) against a plain Adam loop over zuko's
flow of the same depth and widths on the same rows, same batch size (the last
incomplete batch dropped in both) and number of epochs, with the same one
validation pass per epoch:

* spline: the engine's ``RationalQuadraticSpline()`` stack (8 bins on
  [-5, 5], alternating masks, ActNorm) vs ``zuko.flows.NSF(d,
  transforms=n_layers, passes=2, hidden_features=HIDDEN)`` (8 bins on
  [-5, 5], ReLU MLPs, no ActNorm);
* affine: the engine's ``Affine()`` stack vs ``zuko.flows.RealNVP(d,
  transforms=n_layers, hidden_features=HIDDEN)`` (checkered masks, ReLU MLPs,
  no ActNorm), when zuko has it.

Both run on one torch thread; each repeat builds a fresh model (untimed) and
times its training, repeats interleaved (A B, B A, ...) after one untimed
warm-up each; the table gives the median seconds per epoch and the ratio
engine / zuko (below 1: the engine is faster), from wall and from CPU time.

A last table times the training loop under ``fit_flows``
(``train_flows``) with 1 and 2 torch threads (``fit_flows`` pins CPU
training to one thread). ``--profile`` prints the torch profiler's top
operators of both implementations and the share of
the validation passes.
"""

import argparse
import copy
import os
import sys
import time

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
from benchmarks._handloop import HandFlow, hand_train  # noqa: E402
from skflowsearch._bijections import Affine, RationalQuadraticSpline  # noqa: E402
from skflowsearch._masks import alternating_masks  # noqa: E402
from skflowsearch._training import (  # noqa: E402
    CPU_THREADS,
    TrainingConfig,
    fit_flows,
    mean_log_prob,
    train_flows,
)

INIT_SEED, BATCH_SEED = 0, 0
HIDDEN = (64, 64)
BATCH_SIZE = 128


def setup(name, n_layers, epochs):
    Z_train, Z_val = standardized_split(name)
    masks = alternating_masks(n_layers, Z_train.shape[1])
    config = TrainingConfig(hidden_layer_sizes=HIDDEN, max_epochs=epochs, batch_size=BATCH_SIZE,
                            n_iter_no_change=10 * epochs + 10)
    stack = config.build(masks[None], [INIT_SEED])
    hand_init = HandFlow.from_stack(stack)  # same initial weights as fit_flows' module
    return Z_train, Z_val, masks, config, hand_init


def variants_for(Z_train, Z_val, masks, config, hand_init):
    cpu = torch.device("cpu")
    epochs = config.max_epochs
    variants = {
        "fit_flows (P=1)": lambda: fit_flows(masks[None], Z_train, Z_val, seeds=[INIT_SEED],
                                             batch_seed=BATCH_SEED, config=config, device=cpu),
        "hand loop": lambda: hand_train(copy.deepcopy(hand_init), Z_train, epochs=epochs,
                                        batch_size=BATCH_SIZE, batch_seed=BATCH_SEED),
        "hand loop + val": lambda: hand_train(copy.deepcopy(hand_init), Z_train, Z_val,
                                              epochs=epochs, batch_size=BATCH_SIZE,
                                              batch_seed=BATCH_SEED),
    }
    return variants


def _train_loss(result):
    if isinstance(result, tuple):  # hand_train
        return np.asarray(result[0])
    return np.asarray(result.train_loss[:, 0], dtype=float)


def run_dataset(name, args):
    Z_train, Z_val, masks, config, hand_init = setup(name, args.n_layers, args.epochs)
    variants = variants_for(Z_train, Z_val, masks, config, hand_init)
    wall, cpu, results = interleaved(variants, args.repeats)
    batch = min(BATCH_SIZE, len(Z_train))
    n_rows = (len(Z_train) // batch) * batch * args.epochs
    ours, hand = "fit_flows (P=1)", "hand loop"
    rows = []
    for label in variants:
        w, c = median(wall[label]), median(cpu[label])
        rows.append([
            label, f"{w:.3f}", spread(wall[label]), f"{n_rows / w:,.0f}",
            f"{median(wall[hand]) / w:.2f}", f"{c:.3f}", f"{n_rows / c:,.0f}",
            f"{median(cpu[hand]) / c:.2f}",
        ])
    print(f"\n### {name}: {len(Z_train)} train rows ({len(Z_train) // batch} batches of {batch}) "
          f"/ {len(Z_val)} val rows, {Z_train.shape[1]} features, {args.epochs} epochs\n")
    print(markdown_table(
        ["variant", "wall s", "wall min-max", "rows/s (wall)", "throughput / hand loop (wall)",
         "CPU s", "rows/s (CPU)", "throughput / hand loop (CPU)"],
        rows,
    ))
    diff = np.max(np.abs(_train_loss(results[ours]) - _train_loss(results[hand])))
    print(f"\nmax |train loss fit_flows - hand loop| over {args.epochs} epochs: {diff:.3g} nats "
          f"(final train NLL {_train_loss(results[ours])[-1]:.4f})")
    ratio_wall = median(wall[ours]) / median(wall[hand])
    ratio_cpu = median(cpu[ours]) / median(cpu[hand])
    print(f"time fit_flows / hand loop: {ratio_wall:.3f} (wall), {ratio_cpu:.3f} (CPU) -- goal <= 1.10")
    return {"dataset": name, "wall_ratio": ratio_wall, "cpu_ratio": ratio_cpu, "loss_diff": diff}


def run_threads(args):
    """The training loop (``train_flows``) with 1 vs 2 torch threads.

    ``fit_flows`` pins CPU training to ``skflowsearch._training.CPU_THREADS``
    threads; this calls the loop underneath it directly to show what the
    thread count costs on this machine.
    """
    epochs = 1 if args.quick else 5
    repeats = 1 if args.quick else 5
    Z_train, Z_val, masks, config, _ = setup("breast_cancer", args.n_layers, epochs)

    def fit(n_threads):
        module = config.build(masks[None], [INIT_SEED])
        with torch_threads(n_threads):
            return train_flows(module, Z_train, Z_val, config=config, batch_seed=BATCH_SEED,
                               device=torch.device("cpu"))

    wall, cpu, _ = interleaved({1: lambda: fit(1), 2: lambda: fit(2)}, repeats)
    print(f"\n### train_flows (P=1) with 1 vs 2 torch threads, breast_cancer, {epochs} epochs, "
          f"{repeats} interleaved repeats\n")
    print(f"(fit_flows itself pins CPU training to {CPU_THREADS} thread(s); this calls the loop "
          f"under it directly)\n")
    print(markdown_table(
        ["torch threads", "wall s (median)", "wall min-max", "CPU s (median)", "wall / 1 thread"],
        [[n, f"{median(wall[n]):.3f}", spread(wall[n]), f"{median(cpu[n]):.3f}",
          f"{median(wall[n]) / median(wall[1]):.2f}"] for n in (1, 2)],
    ))


def zuko_train(flow, Z_train, Z_val, *, epochs, batch_size=BATCH_SIZE, learning_rate=1e-3,
               batch_seed=BATCH_SEED):
    """A plain Adam loop over a zuko flow; returns the per-epoch mean train NLL.

    Minibatches from ``torch.randperm`` with a seeded generator, the last
    incomplete batch dropped, and the mean validation log-likelihood after
    every epoch (``train_flows`` computes it too).
    """
    X_train = torch.as_tensor(Z_train, dtype=torch.float32)
    X_val = torch.as_tensor(Z_val, dtype=torch.float32)
    n_train = X_train.shape[0]
    batch_size = min(batch_size, n_train)
    optimizer = torch.optim.Adam(flow.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(batch_seed)
    losses = []
    for _ in range(epochs):
        flow.train()
        order = torch.randperm(n_train, generator=generator)
        total = torch.zeros(())
        for begin in range(0, n_train - batch_size + 1, batch_size):
            loss = -flow().log_prob(X_train[order[begin : begin + batch_size]]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        losses.append(float(total) / (n_train // batch_size))
        flow.eval()
        with torch.no_grad():
            flow().log_prob(X_val).mean()
    return np.array(losses)


def time_training(variants, repeats):
    """Time ``train(build())`` of every ``(build, train)`` variant, building untimed.

    One untimed warm-up each, then ``repeats`` interleaved rounds (A B, B A,
    ...). Returns ``(wall, cpu, results)`` as :func:`benchmarks._common.interleaved`.
    """
    names = list(variants)
    results = {name: variants[name][1](variants[name][0]()) for name in names}
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            build, train = variants[name]
            module = build()
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = train(module)
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return wall, cpu, results


def zuko_pairs(n_layers):
    """``[(coupling, engine bijection, zuko constructor(d))]`` of the zuko comparison."""
    import zuko

    def nsf(d):
        return zuko.flows.NSF(d, transforms=n_layers, passes=2, hidden_features=HIDDEN)

    pairs = [("spline", RationalQuadraticSpline(), nsf, "NSF(passes=2)")]
    if hasattr(zuko.flows, "RealNVP"):
        def real_nvp(d):
            return zuko.flows.RealNVP(d, transforms=n_layers, hidden_features=HIDDEN)

        pairs.append(("affine", Affine(), real_nvp, "RealNVP"))
    return pairs, zuko.__version__


def run_zuko(args):
    """Seconds per training epoch: the engine's spline / affine stack vs zuko's NSF / RealNVP."""
    from benchmarks.baselines import zuko_available

    if not zuko_available():
        print("\nzuko is not installed: skipping the engine vs zuko comparison (a benchmark-only "
              "dependency; pip install zuko)")
        return []
    pairs, version = zuko_pairs(args.n_layers)
    cpu_device = torch.device("cpu")
    rows, summary = [], []
    for name in args.datasets:
        Z_train, Z_val = standardized_split(name)
        masks = alternating_masks(args.n_layers, Z_train.shape[1])
        d = Z_train.shape[1]
        for coupling, bijection, make_zuko, zuko_name in pairs:
            config = TrainingConfig(hidden_layer_sizes=HIDDEN, bijection=bijection,
                                    max_epochs=args.epochs, batch_size=BATCH_SIZE,
                                    n_iter_no_change=10 * args.epochs + 10)

            def build_zuko(make_zuko=make_zuko):
                torch.manual_seed(INIT_SEED)
                return make_zuko(d)

            def train_engine(module, config=config):
                with torch_threads(1):
                    result = train_flows(module, Z_train, Z_val, config=config,
                                         batch_seed=BATCH_SEED, device=cpu_device)
                return np.asarray(result.train_loss[:, 0], dtype=float)

            def train_zuko(flow):
                with torch_threads(1):
                    return zuko_train(flow, Z_train, Z_val, epochs=args.epochs)

            engine, other = f"engine {coupling}", f"zuko {zuko_name}"
            variants = {
                engine: (lambda config=config: config.build(masks[None], [INIT_SEED]), train_engine),
                other: (build_zuko, train_zuko),
            }
            wall, cpu, results = time_training(variants, args.repeats)
            n_params = {engine: sum(p.numel() for p in config.build(masks[None], [INIT_SEED]).parameters()),
                        other: sum(p.numel() for p in build_zuko().parameters())}
            per_epoch = {k: median(wall[k]) / args.epochs for k in variants}
            cpu_epoch = {k: median(cpu[k]) / args.epochs for k in variants}
            ratio, ratio_cpu = per_epoch[engine] / per_epoch[other], cpu_epoch[engine] / cpu_epoch[other]
            rows.append([
                name, coupling, f"{per_epoch[engine]:.4f}", f"{per_epoch[other]:.4f}", f"{ratio:.2f}",
                f"{cpu_epoch[engine]:.4f}", f"{cpu_epoch[other]:.4f}", f"{ratio_cpu:.2f}",
                f"{n_params[engine]:,}", f"{n_params[other]:,}",
                f"{results[engine][-1]:.3f}", f"{results[other][-1]:.3f}",
            ])
            summary.append({"dataset": name, "coupling": coupling, "wall_ratio": ratio,
                            "cpu_ratio": ratio_cpu})
    print(f"\n### Seconds per training epoch: the engine (train_flows) vs zuko {version}, "
          f"{args.n_layers} couplings, hidden {HIDDEN}, batch {BATCH_SIZE}, {args.epochs} epochs, "
          f"one torch thread, {args.repeats} interleaved repeats, medians\n")
    if "affine" not in {p[0] for p in pairs}:
        print(f"(zuko {version} has no RealNVP: the affine pair is skipped)\n")
    print("engine: AdamW, gradient clipping, ActNorm, tanh conditioners, best weights kept; zuko: "
          "plain Adam, ReLU conditioners, no ActNorm. Both score the validation rows after every "
          "epoch. engine / zuko < 1: the engine is faster. The engine's parameters are those "
          "it stores, the masked-out conditioner entries included.\n")
    print(markdown_table(
        ["dataset", "coupling", "engine s/epoch (wall)", "zuko s/epoch (wall)", "engine / zuko (wall)",
         "engine s/epoch (CPU)", "zuko s/epoch (CPU)", "engine / zuko (CPU)", "engine parameters",
         "zuko parameters", "engine final train NLL", "zuko final train NLL"],
        rows,
    ))
    return summary


def profile(name, args, row_limit=15):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    Z_train, Z_val, masks, config, hand_init = setup(name, args.n_layers, args.epochs)
    variants = variants_for(Z_train, Z_val, masks, config, hand_init)
    for label in ("fit_flows (P=1)", "hand loop"):
        variants[label]()  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            variants[label]()
        print(f"\n### torch.profiler, {label}, {name}, top {row_limit} operators by self CPU time\n")
        print("```")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit,
                                        max_name_column_width=48))
        print("```")
    # Share of the per-epoch validation passes in fit_flows: time them alone.
    result = variants["fit_flows (P=1)"]()
    X_val = torch.as_tensor(Z_val, dtype=torch.float32)
    start = time.process_time()
    with torch.no_grad():
        for _ in range(args.epochs + 1):
            mean_log_prob(result.module, X_val)
    val_cpu = time.process_time() - start
    start = time.process_time()
    variants["fit_flows (P=1)"]()
    fit_cpu = time.process_time() - start
    print(f"\nvalidation passes alone ({args.epochs + 1} x {len(Z_val)} rows): {val_cpu:.3f} CPU s "
          f"= {100 * val_cpu / fit_cpu:.1f}% of one fit_flows run ({fit_cpu:.3f} CPU s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-layers", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-threads", action="store_true",
                        help="skip the 1 vs 2 torch threads comparison")
    parser.add_argument("--no-zuko", action="store_true",
                        help="skip the seconds-per-epoch comparison with zuko's NSF and RealNVP")
    args = parser.parse_args(argv)
    if args.datasets is None:
        args.datasets = ["breast_cancer"] if args.quick else ["breast_cancer", "digits"]
    if args.repeats is None:
        args.repeats = 1 if args.quick else 7
    if args.epochs is None:
        args.epochs = 2 if args.quick else 20
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        print("## Training throughput of one flow: fit_flows (P=1) vs a hand-written loop\n")
        print(f"alternating masks, {args.n_layers} coupling layers, hidden {HIDDEN}, batch "
              f"{BATCH_SIZE}, {args.repeats} interleaved repeats, medians. "
              "'throughput / hand loop' > 1 means faster than the hand loop.")
        print(machine_line())
        summary = [run_dataset(name, args) for name in args.datasets]
        print("\n### Summary: time fit_flows / time hand loop (goal: <= 1.10)\n")
        print(markdown_table(
            ["dataset", "wall ratio", "CPU ratio", "max train-loss diff"],
            [[s["dataset"], f"{s['wall_ratio']:.3f}", f"{s['cpu_ratio']:.3f}",
              f"{s['loss_diff']:.2g}"] for s in summary],
        ))
        if not args.no_zuko:
            run_zuko(args)
        if not args.no_threads:
            run_threads(args)
        if args.profile:
            profile(args.datasets[-1], args)
    finally:
        torch.set_num_threads(previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
