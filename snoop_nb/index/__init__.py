"""Vector indexes behind one small interface: HNSW (hnswlib) and exact search."""

from snoop_nb.index.base import Index
from snoop_nb.index.exact import ExactIndex
from snoop_nb.index.hnsw import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M, HNSWIndex
from snoop_nb.index.projected import ProjectedIndex

__all__ = [
    "DEFAULT_EF",
    "DEFAULT_EF_CONSTRUCTION",
    "DEFAULT_M",
    "ExactIndex",
    "HNSWIndex",
    "Index",
    "ProjectedIndex",
]
