"""darkcfg: run, summarise and train Darknet .cfg networks on a CPU with NumPy and Numba."""
from __future__ import annotations

from .errors import CfgError, DarkcfgError, DataError, WeightsError
from .graph import Graph, build_graph, load_graph

__version__ = "0.1.0"
__all__ = ["CfgError", "DarkcfgError", "DataError", "Graph", "WeightsError", "__version__",
           "build_graph", "load", "load_graph"]


def load(cfg, weights=None, *, batch: int = 1, dialect: str | None = None,
         strict: bool = True, **sizes):
    """Build a runnable network from a cfg (and optionally .weights)."""
    from .network import Network  # imports the Numba kernels
    return Network.load(cfg, weights, batch=batch, dialect=dialect, strict=strict, **sizes)
