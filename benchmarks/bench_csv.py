"""Reading and writing CSV files with the command line's reader: vectorized vs cell by cell.

Run from the repository root::

    python benchmarks/bench_csv.py [--rows 1000000] [--columns 20]

Writes a numeric CSV file of ``--rows`` x ``--columns`` standard normal
values with a header row (with the CLI's writer, ``cli._write_csv``), then
reads it with ``cli.read_csv`` (numpy's parser in one pass) and with the
cell-by-cell reader the CLI falls back to for error messages
(``cli._read_csv_cells``), checks that both give the same array, and prints
the wall times.
"""

import argparse
import os
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks._common import machine_line, markdown_table  # noqa: E402
from skflowsearch import cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="10 000 rows")
    args = parser.parse_args(argv)
    rows = 10_000 if args.quick else args.rows
    X = np.random.default_rng(0).normal(size=(rows, args.columns))
    header = [f"x{j}" for j in range(args.columns)]
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "table.csv")
        start = time.perf_counter()
        cli._write_csv(path, header, list(X.T))
        write_seconds = time.perf_counter() - start
        size_mb = os.path.getsize(path) / 1e6
        start = time.perf_counter()
        fast, names = cli.read_csv(path)
        fast_seconds = time.perf_counter() - start
        start = time.perf_counter()
        slow, slow_names = cli._read_csv_cells(path, cli._read_text(path))
        slow_seconds = time.perf_counter() - start
    assert names == slow_names == header
    assert np.array_equal(fast, X) and np.array_equal(slow, X), "the values must read back exactly"
    print(machine_line() + "\n")
    print(f"{rows} x {args.columns} values, {size_mb:.0f} MB; both readers return the written "
          "float64 values exactly\n")
    print(markdown_table(["step", "seconds"], [
        ["write (cli._write_csv, numpy.savetxt, 17 significant digits)", f"{write_seconds:.1f}"],
        ["read (cli.read_csv, numpy.loadtxt)", f"{fast_seconds:.1f}"],
        ["read cell by cell (the error-reporting reader)", f"{slow_seconds:.1f}"],
    ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
