"""Helpers shared by the benchmark scripts: timing, tables, data splits.

Timings on a shared machine drift with the load of other processes, so every
comparison here runs its variants interleaved, alternating the order from one
repeat to the next (A B C, C B A, A B C, ...), and reports medians and ratios
of medians.
"""

import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skflowsearch._training import torch_threads  # noqa: F401 (re-exported for the scripts)
from skflowsearch.datasets import load_dataset


def interleaved(variants, repeats, *, warmup=True):
    """Time every callable of ``variants`` ``repeats`` times, interleaved.

    Parameters
    ----------
    variants : dict of name -> callable
        Each callable runs one measured unit and returns anything.
    repeats : int
    warmup : bool
        Run every variant once, untimed, first (lazy imports, allocator,
        joblib worker start-up).

    Returns
    -------
    wall : dict of name -> list of float
        Wall-clock seconds of each repeat.
    cpu : dict of name -> list of float
        CPU seconds of this process (all its threads, not its child
        processes) of each repeat. For single-threaded work this is much less
        sensitive than wall time to other processes competing for the cores.
    results : dict of name -> object
        The last return value of each variant.
    """
    names = list(variants)
    results = {}
    if warmup:
        for name in names:
            results[name] = variants[name]()
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = variants[name]()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return wall, cpu, results


def median(values):
    return float(statistics.median(values))


def spread(values):
    """``min-max`` of a list of seconds, for the tables."""
    return f"{min(values):.3f}-{max(values):.3f}"


def markdown_table(headers, rows):
    """A GitHub markdown table from a header list and rows of cells."""
    lines = [
        "| " + " | ".join(str(h) for h in headers) + " |",
        "|" + "---|" * len(headers),
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def machine_line():
    """One line describing where the numbers come from."""
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return (
        f"machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
        f"python {sys.version.split()[0]}, load average (1/5/15 min) {load}"
    )


def standardized_split(name, test_size=0.2, random_state=0):
    """``(X_train, X_val)`` of a bundled dataset, standardized on the train part."""
    X = load_dataset(name, random_state=random_state)
    X_train, X_val = train_test_split(X, test_size=test_size, random_state=random_state)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_val)


def bootstrap_interval(values, n_boot=10000, seed=0):
    """95% percentile-bootstrap interval of the mean of ``values`` (e.g. paired differences)."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def format_paired(differences, digits=3):
    """``mean [low, high]`` of paired differences with their bootstrap 95% interval."""
    low, high = bootstrap_interval(differences)
    return f"{np.mean(differences):+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def format_pm(values, digits=2):
    values = np.asarray(values, dtype=float)
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"
