"""Queries over a collection, answered as pandas DataFrames.

Every query returns the same core columns, best first:

``rank`` (1-based), ``id``, ``uri``, ``score`` (cosine similarity, higher is closer), ``kind``,
``width``, ``height``, ``size``, ``video``, ``t_start``, ``t_end``, then one column per
metadata key the items carry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.collection import Collection

#: Below this many items, search is exact by default (it is fast and it is the truth).
EXACT_SEARCH_BELOW = 20_000

CORE_COLUMNS = [
    "rank",
    "id",
    "uri",
    "score",
    "kind",
    "width",
    "height",
    "size",
    "video",
    "t_start",
    "t_end",
]


def query_vector(
    col: Collection,
    *,
    item: int | None = None,
    image: Any = None,
    text: str | None = None,
    vector: Any = None,
) -> np.ndarray:
    """The (dim,) float32 query vector of exactly one of item, image, text or vector."""
    given = [
        name
        for name, v in (("item", item), ("image", image), ("text", text), ("vector", vector))
        if v is not None
    ]
    if len(given) != 1:
        raise UsageError("give exactly one query: item, image, text or vector")
    if item is not None:
        info = col.item(int(item))
        if info["status"] != "ok":
            raise UsageError(f"item {item} has no vector ({info['status']}: {info.get('error')})")
        return col.vectors_of([int(item)])[0]
    if image is not None:
        return col.embedder.encode_image(image).astype(np.float32)
    if text is not None:
        if not str(text).strip():
            raise UsageError("the text query is empty")
        return col.embedder.encode_texts([str(text)])[0].astype(np.float32)
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if v.size != col.dim:
        raise UsageError(f"the query vector has {v.size} values; this collection's have {col.dim}")
    return v


def search(
    col: Collection,
    *,
    item: int | None = None,
    image: Any = None,
    text: str | None = None,
    vector: Any = None,
    k: int = 10,
    exact: bool | None = None,
) -> pd.DataFrame:
    """The ``k`` items nearest to one query (see :meth:`Collection.search`).

    A query by item leaves that item out of its own results.
    """
    if k < 1:
        raise UsageError("k must be at least 1")
    q = query_vector(col, item=item, image=image, text=text, vector=vector)
    n = len(col)
    if exact is None:
        exact = n < EXACT_SEARCH_BELOW
    index = col.exact_index() if exact else col.index
    want = k + (1 if item is not None else 0)
    ids, scores = index.search(q[None, :], want)
    ids, scores = ids[0], scores[0]
    keep = ids >= 0
    if item is not None:
        keep &= ids != int(item)
    return results_frame(col, ids[keep][:k], scores[keep][:k])


def results_frame(col: Collection, ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Ranked ids and scores joined with their catalog rows, in the documented columns."""
    import pandas as pd

    ids = np.asarray(ids, dtype=np.int64)
    cat = col.items(ids.tolist(), status=None).set_index("id")
    df = pd.DataFrame(
        {"rank": np.arange(1, len(ids) + 1), "id": ids, "score": np.asarray(scores, np.float32)}
    )
    df = df.join(cat.drop(columns=["status", "error", "digest"], errors="ignore"), on="id")
    extra = [c for c in df.columns if c not in CORE_COLUMNS]
    return df[[c for c in CORE_COLUMNS if c in df.columns] + extra].reset_index(drop=True)
