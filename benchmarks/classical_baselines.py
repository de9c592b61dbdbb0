"""Held-out log-likelihood of classical density baselines on bundled datasets.

Run from the repository root::

    python benchmarks/classical_baselines.py [--datasets iris wine ...]

Tables come from ``datasets_extra.load_table`` (point-mass and linearly
dependent columns dropped). Protocol, per dataset: ``train_test_split(X, test_size=0.2, random_state=0)``,
then the train part is split again 80/20 into train/validation
(``random_state=0``); a ``StandardScaler`` is fitted on the (inner) train
split and applied to all three parts. Hyper-parameters are chosen on the
validation split; the table reports the mean test log-likelihood per sample
(nats, in the standardized space; higher is better) and the choices.
"""

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from benchmarks.baselines import (  # noqa: E402
    gaussian_baseline,
    tuned_gaussian_mixture,
    tuned_kernel_density,
)
from benchmarks.datasets_extra import load_table  # noqa: E402
from skflowsearch.datasets import DATASETS  # noqa: E402


def split_standardize(X, random_state=0):
    """Return standardized ``(X_train, X_val, X_test)`` per the protocol."""
    X_rest, X_test = train_test_split(X, test_size=0.2, random_state=random_state)
    X_train, X_val = train_test_split(X_rest, test_size=0.2, random_state=random_state)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_val), scaler.transform(X_test)


def evaluate(name, random_state=0):
    X = load_table(name, random_state=random_state)
    X_train, X_val, X_test = split_standardize(X, random_state=random_state)
    t0 = time.perf_counter()
    gauss = gaussian_baseline(X_train)
    gmm = tuned_gaussian_mixture(X_train, X_val, random_state=random_state)
    kde = tuned_kernel_density(X_train, X_val)
    elapsed = time.perf_counter() - t0
    return {
        "dataset": name,
        "shape": f"{X.shape[0]}x{X.shape[1]}",
        "n_train/val/test": f"{len(X_train)}/{len(X_val)}/{len(X_test)}",
        "gaussian": gauss.score(X_test),
        "gmm": gmm.score(X_test),
        "gmm_params": f"k={gmm.n_components}, reg={gmm.reg_covar:g}",
        "kde": float(np.mean(kde.score_samples(X_test))),
        "kde_bandwidth": f"{kde.bandwidth:.4g}",
        "seconds": elapsed,
    }


def markdown_table(rows):
    header = (
        "| dataset | n x d | train/val/test | Gaussian | tuned GMM | GMM choice "
        "| tuned KDE | KDE bandwidth | fit s |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['shape']} | {r['n_train/val/test']} "
            f"| {r['gaussian']:.3f} | {r['gmm']:.3f} | {r['gmm_params']} "
            f"| {r['kde']:.3f} | {r['kde_bandwidth']} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--random-state", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [evaluate(name, args.random_state) for name in args.datasets]
    print("Mean test log-likelihood per sample (nats, standardized space; higher is better)\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
