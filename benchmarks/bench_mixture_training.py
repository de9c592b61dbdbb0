"""Should a Gaussian-mixture base train with the flow, or stay the fitted mixture?

Run from the repository root::

    python benchmarks/bench_mixture_training.py [--datasets iris wine diabetes] [--seeds 0 1 2 3 4]
                                                [--quick]

The package keeps the mixture of a Gaussian-mixture start fixed (its tensors
are buffers): the untrained flow *is* the mixture EM fitted, and only the
couplings train. The alternative measured here trains the mixture's weights,
means and precision factors with the couplings, by the same optimizer, from
the same start. It is a patch of this script (``trained_mixture_base``), not
an option of the package.

Protocol, the one of ``bench_quality.py``'s ``flow_spline`` row: per table and
seed, ``split_standardize(load_table(name, seed), random_state=seed)``;
``CouplingFlow(masks="alternating", validation_fraction=0.2, random_state=seed)``
with the benchmark's flow budget, fitted on train + validation rows with the
mixture fixed and with it trained, scored once on the test rows. The table
gives the paired mean difference (nats/row) with a bootstrap 95% interval,
and how often the final flow was a mixture-start one (``n_components_ > 1``).
"""

import argparse
import contextlib
import math
import os
import sys
import time
import warnings

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks._common import bootstrap_interval, machine_line, markdown_table  # noqa: E402
from benchmarks.bench_quality import budgets  # noqa: E402
from benchmarks.classical_baselines import split_standardize  # noqa: E402
from benchmarks.datasets_extra import load_table  # noqa: E402
from skflowsearch import CouplingFlow, _nn  # noqa: E402
from skflowsearch._bases import GaussianMixtureBase  # noqa: E402

_TRAINED = ("log_weights", "means", "precision_factor")


class TrainedMixtureBase(GaussianMixtureBase):
    """A :class:`GaussianMixtureBase` whose weights, means and precision factors are parameters.

    They carry a leading member axis of 1, as the stack's tensors do (its
    per-member gradient clipping and best-epoch restore index that axis), so
    this base is for stacks of one member. ``log_norm`` is ``log|det P|`` of
    each precision factor ``P`` and the weights are a softmax, so any values
    are a valid mixture.
    """

    def __init__(self, mixture):
        super().__init__(mixture)
        for name in _TRAINED:
            value = self._buffers.pop(name)
            self.register_parameter(name, nn.Parameter(value.clone().unsqueeze(0)))

    def _apply(self, fn, *args, **kwargs):  # keep the trained values on .double()
        return nn.Module._apply(self, fn, *args, **kwargs)

    def log_prob(self, z):
        factor, means = self.precision_factor[0], self.means[0]
        e = torch.einsum("...d,kde->...ke", z, factor) - torch.einsum("kd,kde->ke", means, factor)
        per_component = (torch.log_softmax(self.log_weights[0], -1) + torch.linalg.slogdet(factor)[1]
                         - 0.5 * (e * e).sum(-1))
        return torch.logsumexp(per_component, -1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


@contextlib.contextmanager
def trained_mixture_base():
    """Within the block, flows with a Gaussian-mixture start train its parameters too."""
    make_base, member_tensors = _nn.make_base, _nn.CouplingFlowStack.member_tensors

    def trained_make_base(df, mixture):
        return make_base(df, None) if mixture is None else TrainedMixtureBase(mixture)

    def with_base(self):
        tensors = member_tensors(self)
        if isinstance(self.base, TrainedMixtureBase):
            if self.n_members != 1:
                raise ValueError("a trained mixture base is measured for stacks of one member")
            tensors.update({f"base.{name}": getattr(self.base, name) for name in _TRAINED})
        return tensors

    _nn.make_base, _nn.CouplingFlowStack.member_tensors = trained_make_base, with_base
    try:
        yield
    finally:
        _nn.make_base, _nn.CouplingFlowStack.member_tensors = make_base, member_tensors


def fit(name, seed, budget, trained):
    """Test score, n_components_, best epoch and seconds of one fit; the fitted flow."""
    X_train, X_val, X_test = split_standardize(load_table(name, seed), random_state=seed)
    flow = CouplingFlow(masks="alternating", **budget["flow"], validation_fraction=0.2, random_state=seed)
    start = time.perf_counter()
    with warnings.catch_warnings(), (trained_mixture_base() if trained else contextlib.nullcontext()):
        warnings.simplefilter("ignore")
        flow.fit(np.vstack([X_train, X_val]))
    record = {"test": float(flow.score(X_test)), "n_components": int(flow.n_components_),
              "best_epoch": int(flow.best_epoch_), "seconds": time.perf_counter() - start}
    return record, flow


def _pm(values):
    low, high = bootstrap_interval(values)
    return f"{np.mean(values):+.3f} [{low:+.3f}, {high:+.3f}]"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny budget for a smoke test")
    args = parser.parse_args(argv)
    datasets = args.datasets or (["iris"] if args.quick else ["iris", "wine", "diabetes"])
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3, 4])
    budget = budgets(args.quick)

    from threadpoolctl import threadpool_limits

    start, rows = time.perf_counter(), []
    for name in datasets:
        fixed, trained = [], []
        for seed in seeds:
            with threadpool_limits(1):
                fixed.append(fit(name, seed, budget, trained=False)[0])
                trained.append(fit(name, seed, budget, trained=True)[0])
        difference = [t["test"] - f["test"] for f, t in zip(fixed, trained)]
        rows.append([
            name, len(seeds), f"{np.mean([f['test'] for f in fixed]):.3f}",
            f"{np.mean([t['test'] for t in trained]):.3f}", _pm(difference),
            f"{sum(f['n_components'] > 1 for f in fixed)} / {sum(t['n_components'] > 1 for t in trained)}",
            f"{np.median([f['best_epoch'] for f in fixed]):.0f} / {np.median([t['best_epoch'] for t in trained]):.0f}",
            f"{np.mean([f['seconds'] for f in fixed]):.1f} / {np.mean([t['seconds'] for t in trained]):.1f}",
        ])
    print("## A Gaussian-mixture base fixed or trained with the flow (held-out nats/row, paired over seeds)\n")
    print(f"seeds {seeds}; flow: {', '.join(f'{k}={v}' for k, v in budget['flow'].items())}, "
          "validation_fraction=0.2, defaults otherwise.")
    print(machine_line() + "\n")
    print(markdown_table(
        ["dataset", "seeds", "fixed", "trained", "trained - fixed [95% CI]",
         "mixture-start flows kept (fixed / trained)", "median best epoch", "fit seconds"], rows))
    print(f"\ntotal wall time: {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
