"""snoop-nb: Jupyter-native visual search and exploration of image collections.

>>> import snoop_nb
>>> col = snoop_nb.open_collection("photos.snoop", create=True)   # doctest: +SKIP
>>> col.add(["~/Pictures"])                                         # doctest: +SKIP
>>> col.search(text="a dog on a beach", k=10)                       # doctest: +SKIP
"""

from snoop_nb.collection import AddReport, Collection, open_collection
from snoop_nb.embed import load_embedder
from snoop_nb.errors import (
    CollectionError,
    EmbedderMismatchError,
    MediaError,
    ModelError,
    SnoopError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "AddReport",
    "Collection",
    "CollectionError",
    "EmbedderMismatchError",
    "MediaError",
    "ModelError",
    "SnoopError",
    "UsageError",
    "__version__",
    "load_embedder",
    "open_collection",
]
