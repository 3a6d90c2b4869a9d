"""The parts under a collection, one job each (the :class:`~snoop_nb.collection.Collection`
facade puts them together):

- :mod:`~snoop_nb.store.catalog`: the SQLite catalog (items, state), a connection per thread;
- :mod:`~snoop_nb.store.vectors`: ``vectors.f16``, float16 rows appended, fsync'ed, mapped;
- :mod:`~snoop_nb.store.lock`: the writer lock;
- :mod:`~snoop_nb.store.layout`: the manifest, and creating a collection safely;
- :mod:`~snoop_nb.store.upkeep`: the index, kept current with the catalog (any process's writes);
- :mod:`~snoop_nb.store.adding`: adding files, or vectors computed elsewhere.

These import the index, embedding and media layers, never search, learn or ui.
"""

from snoop_nb.store.adding import Adder, AddReport
from snoop_nb.store.catalog import Catalog, readable
from snoop_nb.store.lock import BusyError, writer_lock
from snoop_nb.store.upkeep import IndexKeeper
from snoop_nb.store.vectors import VectorStore

__all__ = [
    "AddReport",
    "Adder",
    "BusyError",
    "Catalog",
    "IndexKeeper",
    "VectorStore",
    "readable",
    "writer_lock",
]
