"""skflowsearch: scikit-learn estimators for normalizing flows on tabular data,
with an evolutionary search over the coupling masks."""

from ._coupling_flow import CouplingFlow
from ._outlier import FlowOutlierDetector
from ._search_flow import StructureSearchFlow

__version__ = "0.1.0.dev0"

__all__ = ["CouplingFlow", "FlowOutlierDetector", "StructureSearchFlow", "__version__"]
