"""GPU checks: the CUDA tests, no host-device sync in a training step, candidates/s CPU vs GPU.

Run from the repository root on a machine with CUDA::

    python benchmarks/bench_gpu.py [--quick] [--no-tests]

On a machine without CUDA it prints so and exits 0. Otherwise, in a few
minutes:

1. *Tests*: ``python -m pytest -q tests/test_gpu.py``, whose CUDA tests are
   skipped elsewhere (the estimators fitted on the GPU, their CPU copies,
   out-of-memory splitting, several GPUs if there are).
2. *Syncs*: a stack of 16 candidates (8 layers, hidden (64, 64), batch 128)
   takes optimizer steps on the GPU under
   ``torch.cuda.set_sync_debug_mode("error")``: any operation of a step that
   waits for the device (``.item()``, ``nonzero``, a blocking copy) raises.
   ``train_flows`` syncs on purpose once per epoch (early stopping, the
   loss curves), so the step checked is the one its minibatch loop calls
   (``skflowsearch._training.optimizer_step``); the syncs of whole epochs are then counted with the mode at ``"warn"``.
3. *Throughput*: one generation of 64 random genomes (as in
   ``bench_generation.py``: breast cancer, 8 layers, hidden (64, 64), batch
   128, 20 epochs each, no early stop) trained by
   ``skflowsearch._search.CandidateTrainer``: on the CPU with ``n_jobs=-1``
   and the CPU's ``"auto"`` group size, and on the GPU with ``n_jobs=1`` and
   groups of 4, 16 (the GPU's ``"auto"``), 32 and 64. The table gives
   candidates per second (medians of interleaved repeats) and the largest
   difference of fitness (validation log-likelihood) to the CPU's.

The exit status is 1 if the tests fail or a step syncs.
"""

import argparse
import os
import subprocess
import sys
import traceback
import warnings

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
)
from benchmarks.bench_generation import make_genomes  # noqa: E402
from skflowsearch._search import AUTO_GROUP_SIZE, CandidateTrainer, mean_scores  # noqa: E402
from skflowsearch._training import TrainingConfig, fit_flows, optimizer_step  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INIT_SEED, BATCH_SEED = 0, 1
WIDTH_CHOICES = (1.0,)  # as in bench_generation: every genome at full width
GPU_GROUP_SIZES = (4, AUTO_GROUP_SIZE["cuda"], 32, 64)


def run_tests():
    """``pytest tests/test_gpu.py`` in a child process; True if it passed."""
    print("## CUDA tests: pytest tests/test_gpu.py\n")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    lines = (completed.stdout + completed.stderr).strip().splitlines()
    print("```")
    print("\n".join(lines[-25:]))
    print("```\n")
    return completed.returncode == 0


def check_syncs(Z_train, Z_val, genomes, config, device, n_steps):
    """Steps of a stack under sync debug mode "error"; then count the syncs of whole epochs.

    Returns True if no step synced.
    """
    print(f"## Host-device syncs: a stack of {len(genomes)} candidates on {device}\n")
    masks = np.stack([g.masks for g in genomes])
    # A CPU module built exactly as the search builds it.
    module = fit_flows(masks, Z_train, Z_val, seeds=[INIT_SEED] * len(genomes), batch_seed=BATCH_SEED,
                       config=config.with_max_epochs(1), device="cpu").module
    module.to(device).train()
    parameters = list(module.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay,
                                  fused=True)
    X_train = torch.tensor(Z_train, dtype=module.masks.dtype, device=device)
    order = torch.randperm(X_train.shape[0], generator=torch.Generator().manual_seed(0)).to(device)
    batch_size = min(config.batch_size, X_train.shape[0])
    epoch_loss = torch.zeros(len(genomes), dtype=X_train.dtype, device=device)

    def steps(n):
        nonlocal epoch_loss
        for step in range(n):
            begin = (step * batch_size) % (X_train.shape[0] - batch_size + 1)
            batch = X_train[order[begin : begin + batch_size]]
            epoch_loss += optimizer_step(module, optimizer, parameters, batch, config.max_grad_norm)

    steps(2)  # warm-up: the optimizer's state, cuBLAS handles, the caching allocator
    torch.cuda.synchronize(device)
    ok = True
    torch.cuda.set_sync_debug_mode("error")
    try:
        steps(n_steps)
    except RuntimeError as exc:
        ok = False
        print(f"FAIL: a training step synchronizes with the host: {exc}\n")
        print("```")
        print("".join(traceback.format_tb(exc.__traceback__)[-4:]))
        print("```")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize(device)
    if ok:
        print(f"OK: {n_steps} steps ran under set_sync_debug_mode('error') without a sync "
              f"(mean loss {float(epoch_loss.mean()) / (n_steps + 2):.3f}).")

    n_epochs = 3
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit_flows(masks, Z_train, Z_val, seeds=[INIT_SEED] * len(genomes),
                               batch_seed=BATCH_SEED, config=config.with_max_epochs(n_epochs),
                               device=device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    n_syncs = sum("synchroniz" in str(w.message) for w in caught)
    steps_per_epoch = int(result.n_steps.max()) // max(int(result.n_epochs.max()), 1)
    print(f"fit_flows, {n_epochs} epochs of {steps_per_epoch} steps (construction, scoring and "
          f"the copy back included): {n_syncs} syncs, {n_syncs / n_epochs:.1f} per epoch.\n")
    return ok


def throughput(args, Z_train, Z_val, device):
    """Candidates/s of one generation on the CPU and on ``device``; the fitness agreement."""
    genomes = make_genomes(args.n_genomes, args.n_layers, Z_train.shape[1])
    config = TrainingConfig(hidden_layer_sizes=(64, 64), max_epochs=args.epochs, batch_size=128,
                            n_iter_no_change=10 * args.epochs + 10)
    group_sizes = (AUTO_GROUP_SIZE["cuda"],) if args.quick else GPU_GROUP_SIZES

    def evaluator(devices, n_jobs, group_size, config=config):
        trainer = CandidateTrainer(Z_train, Z_val, config=config, width_choices=WIDTH_CHOICES,
                                   devices=devices, n_jobs=n_jobs, group_size=group_size)
        return lambda: mean_scores(trainer.train(genomes, [(INIT_SEED, BATCH_SEED)], Z_val))[0]

    cpu = f"CPU, n_jobs=-1, groups of {AUTO_GROUP_SIZE['cpu']}"
    settings = {cpu: ([torch.device("cpu")], -1, AUTO_GROUP_SIZE["cpu"])}
    settings.update({f"{device}, groups of {g}": ([device], 1, g) for g in group_sizes})
    # Untimed: start the loky workers and CUDA, on a 1-epoch budget.
    for devices, n_jobs, group_size in settings.values():
        evaluator(devices, n_jobs, group_size, config.with_max_epochs(1))()
    variants = {name: evaluator(*setting) for name, setting in settings.items()}
    wall, _, results = interleaved(variants, args.repeats, warmup=False)

    n = len(genomes)
    rows = []
    for name in variants:
        w = median(wall[name])
        diff = np.max(np.abs(np.asarray(results[name]) - np.asarray(results[cpu])))
        rows.append([name, f"{w:.3f}", spread(wall[name]), f"{n / w:.1f}",
                     f"{median(wall[cpu]) / w:.2f}x", f"{diff:.3g}",
                     bool(np.all(np.isfinite(results[name])))])
    print(f"## One generation of {n} candidates, CPU vs {torch.cuda.get_device_name(device)}\n")
    print(f"breast cancer ({Z_train.shape[0]} train / {Z_val.shape[0]} val rows, {Z_train.shape[1]} "
          f"features), {args.n_layers} coupling layers, hidden (64, 64), batch 128, {args.epochs} "
          f"epochs each (no early stop), {args.repeats} interleaved repeats, medians.")
    print(machine_line() + "\n")
    print(markdown_table(["variant", "wall s", "wall min-max", "candidates/s", "speed-up vs CPU",
                          "max abs fitness diff vs CPU", "all finite"], rows))
    print(f"\nfitness on the CPU: mean {np.mean(results[cpu]):.3f}, min {np.min(results[cpu]):.3f}, "
          f"max {np.max(results[cpu]):.3f} (nats per row)\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    parser.add_argument("--no-tests", dest="tests", action="store_false",
                        help="skip pytest tests/test_gpu.py")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--n-genomes", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=8)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: CUDA is not available on this machine (torch "
              f"{torch.__version__}); nothing to check. Run it where a GPU is.")
        return 0
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.epochs is None:
        args.epochs = 2 if args.quick else 20
    device = torch.device("cuda")
    ok = run_tests() if args.tests else True
    Z_train, Z_val = standardized_split("breast_cancer")
    config = TrainingConfig(hidden_layer_sizes=(64, 64), batch_size=128)
    stack = make_genomes(16, args.n_layers, Z_train.shape[1])
    ok &= check_syncs(Z_train, Z_val, stack, config, device, n_steps=3 if args.quick else 10)
    throughput(args, Z_train, Z_val, device)
    print("bench_gpu: " + ("all checks passed" if ok else "FAILED (see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
