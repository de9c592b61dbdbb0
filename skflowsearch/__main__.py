"""``python -m skflowsearch``: the command line of :mod:`skflowsearch.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
