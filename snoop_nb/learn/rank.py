"""Scoring the whole corpus with a linear class: exactly in chunks, or through the HNSW index.

Vectors are L2-normalised, so ``w.x + b`` ranks like the cosine similarity between ``x`` and
``w/|w|``: the top of a class is an HNSW query with that direction, re-scored exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from snoop_nb.collection import Collection

#: Rows converted from float16 and scored per step: bounds memory whatever the corpus size.
CHUNK = 32768


def score_matrix(vectors: np.ndarray, weights: np.ndarray, bias: float = 0.0) -> np.ndarray:
    """``vectors @ weights + bias`` over float16 rows, in float32 chunks."""
    w = np.asarray(weights, np.float32).reshape(-1)
    out = np.empty(len(vectors), np.float32)
    buf = np.empty((min(CHUNK, len(vectors)), len(w)), np.float32)
    for start in range(0, len(vectors), CHUNK):
        block = vectors[start : start + CHUNK]
        tmp = buf[: len(block)]
        tmp[...] = block  # float16 -> float32 into a reused buffer
        np.dot(tmp, w, out=out[start : start + len(block)])
    out += np.float32(bias)
    return out


def exact_scores(
    col: Collection, weights: np.ndarray, bias: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Ids of every live item and their scores (exact)."""
    ids = col.ok_ids()
    vectors = col.vectors
    scores = score_matrix(vectors, weights, bias)
    return ids, scores[ids]


def top_exact(col: Collection, weights, bias: float, k: int, exclude: np.ndarray | None = None):
    """The ``k`` best live items by exact scoring (ids, scores), best first."""
    ids, scores = exact_scores(col, weights, bias)
    if exclude is not None and len(exclude):
        keep = ~np.isin(ids, exclude)
        ids, scores = ids[keep], scores[keep]
    k = min(k, len(ids))
    if k == 0:
        return ids[:0], scores[:0]
    part = np.argpartition(-scores, k - 1)[:k]
    order = part[np.argsort(-scores[part], kind="stable")]
    return ids[order], scores[order]


def top_hnsw(
    col: Collection,
    weights,
    bias: float,
    k: int,
    exclude: np.ndarray | None = None,
    *,
    candidates: int | None = None,
):
    """The ``k`` best items found through the HNSW index with ``w/|w|``, re-scored exactly."""
    w = np.asarray(weights, np.float32).reshape(-1)
    norm = float(np.linalg.norm(w))
    n_exclude = 0 if exclude is None else len(exclude)
    want = candidates or max(4 * k, 200) + n_exclude
    index = col.index
    old_ef = getattr(index, "ef", None)
    if old_ef is not None and old_ef < want:
        index.ef = want
    try:
        cand, _ = index.search((w / (norm or 1.0))[None, :], want)
    finally:
        if old_ef is not None:
            index.ef = old_ef
    cand = cand[0][cand[0] >= 0]
    if exclude is not None and len(exclude):
        cand = cand[~np.isin(cand, exclude)]
    scores = col.vectors_of(cand) @ w + np.float32(bias)
    order = np.argsort(-scores, kind="stable")[:k]
    return cand[order], scores[order]
