"""skflowsearch: scikit-learn estimators for normalizing flows on tabular data,
with an evolutionary search over the coupling masks."""

from ._coupling_flow import CouplingFlow

__version__ = "0.1.0.dev0"

__all__ = ["CouplingFlow", "__version__"]
