"""Indexing at scale: the embedding of a run spread over a Dask cluster (``snoop-nb[dask]``).

>>> from snoop_nb.scale import add_distributed
>>> add_distributed(col, ["photos/"], scheduler="local:2")   # doctest: +SKIP
"""

from snoop_nb.scale.cluster import (
    RETRIES,
    SHARD_SIZE,
    ClusterError,
    add_distributed,
    connect,
    parse_scheduler,
    warm_up,
)

__all__ = [
    "RETRIES",
    "SHARD_SIZE",
    "ClusterError",
    "add_distributed",
    "connect",
    "parse_scheduler",
    "warm_up",
]
