"""darkcfg: run, summarise and train Darknet .cfg networks on a CPU with NumPy and Numba."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import CfgError, DarkcfgError, DataError, OutputError, WeightsError

if TYPE_CHECKING:
    from .graph import Graph, build_graph, load_graph
    from .network import Network

__version__ = "0.1.0"
__all__ = ["CfgError", "DarkcfgError", "DataError", "Graph", "OutputError", "WeightsError",
           "__version__", "build_graph", "load", "load_graph"]


def __getattr__(name: str):
    # The graph builder (and NumPy behind it) loads on first use, so `darkcfg --help` and
    # a Ctrl-C at start-up meet the CLI's own handling instead of a half-done import.
    if name in ("Graph", "build_graph", "load_graph"):
        from . import graph
        return getattr(graph, name)
    raise AttributeError(f"module 'darkcfg' has no attribute {name!r}")


def load(cfg, weights=None, *, batch: int | None = 1, dialect: str | None = None,
         strict: bool = True, **sizes) -> Network:
    """Build a runnable network from a cfg (and optionally .weights). batch=1 (the
    default) is for inference; batch=None keeps the cfg's batch and subdivisions, which
    `Network.train_step` needs."""
    from .network import Network  # imports the Numba kernels
    return Network.load(cfg, weights, batch=batch, dialect=dialect, strict=strict, **sizes)
