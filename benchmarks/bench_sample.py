"""Peak memory of ``sample(n)``: it runs in chunks, so memory is that of the output.

Run from the repository root::

    python benchmarks/bench_sample.py [--sizes 1000000 10000000] [--quick]

For each ``n``, a subprocess fits a small ``CouplingFlow`` (4 layers, hidden
(32,)) on iris (4 features), reads its resident set size (``VmRSS``), resets
the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``), calls
``sample(n)`` and reads ``VmHWM``: the peak during the call. The output
itself is ``n x 4`` float64, ``32 n`` bytes; what the call adds beyond it is
the chunk's activations (``skflowsearch._training.ROW_CHUNK`` rows at a
time). Linux only (``/proc``).
"""

import argparse
import json
import os
import subprocess
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import machine_line, markdown_table  # noqa: E402

_CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from sklearn.datasets import load_iris
from skflowsearch import CouplingFlow

def status(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0

flow = CouplingFlow(n_layers=4, hidden_layer_sizes=(32,), max_epochs=5, random_state=0).fit(load_iris().data)
flow.sample(1000, random_state=0)  # warm-up
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
start = time.perf_counter()
rows = flow.sample(int(sys.argv[1]), random_state=0)
seconds = time.perf_counter() - start
print(json.dumps(dict(before=before, peak=status("VmHWM"), output=rows.nbytes / 2**20, seconds=seconds)))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1_000_000, 10_000_000])
    parser.add_argument("--quick", action="store_true", help="n = 100 000 only")
    args = parser.parse_args(argv)
    sizes = [100_000] if args.quick else args.sizes
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", _CHILD, str(n)], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append([f"{n:,}", f"{r['output']:.0f}", f"{r['peak'] - r['before']:.0f}",
                     f"{r['peak'] - r['before'] - r['output']:.0f}", f"{r['seconds']:.1f}"])
    print(machine_line() + "\n")
    print(markdown_table(["n", "output MB", "peak RSS added by sample(n) MB",
                          "beyond the output MB", "seconds"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
