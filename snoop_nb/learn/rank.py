"""Scoring the whole corpus with a linear class: exactly in chunks, or through the HNSW index.

Vectors are L2-normalised, so ``w.x + b`` ranks like the cosine similarity between ``x`` and
``w/|w|``: the top of a class is an HNSW query with that direction, re-scored exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from snoop_nb.collection import Collection

#: Candidates re-scored exactly (float32) on top of ``k``, after the float16 pass.
RESCORE_MARGIN = 64


def score_matrix(vectors: np.ndarray, weights: np.ndarray, bias: float = 0.0) -> np.ndarray:
    """``vectors @ weights + bias`` over float16 rows, as float32, to float16 precision.

    The product runs in torch's float16 matrix-vector kernel straight from the (memory-mapped)
    rows, with float32 accumulation: no float32 copy of the corpus is ever made. numpy would
    convert every row to float32 first, ten times slower. Exact float32 scores of the best
    candidates come from :func:`rescore`.
    """
    import warnings

    import torch

    rows = np.asarray(vectors)
    if rows.dtype != np.float16:
        rows = rows.astype(np.float16)
    if len(rows) == 0:
        return np.zeros(0, np.float32)
    with warnings.catch_warnings():  # a read-only memory map is only ever read here
        warnings.simplefilter("ignore", UserWarning)
        m = torch.from_numpy(rows)
    w = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32)).to(torch.float16)
    out = (m @ w).float().numpy()
    out += np.float32(bias)
    return out


def rescore(col: Collection, ids: np.ndarray, weights, bias: float) -> np.ndarray:
    """Exact float32 scores of ``ids``."""
    return col.vectors_of(ids) @ np.asarray(weights, np.float32) + np.float32(bias)


def exact_scores(
    col: Collection, weights: np.ndarray, bias: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Ids of every live item and their scores (exact)."""
    ids = col.ok_ids()
    vectors = col.vectors
    scores = score_matrix(vectors, weights, bias)
    return ids, scores[ids]


def top_exact(col: Collection, weights, bias: float, k: int, exclude: np.ndarray | None = None):
    """The ``k`` best live items by exact scoring (ids, float32 scores), best first."""
    ids, scores = exact_scores(col, weights, bias)
    if exclude is not None and len(exclude):
        keep = ~np.isin(ids, exclude)
        ids, scores = ids[keep], scores[keep]
    n = min(k + RESCORE_MARGIN, len(ids))
    if n == 0:
        return ids[:0], scores[:0]
    cand = ids[np.argpartition(-scores, n - 1)[:n]] if n < len(ids) else ids
    exact = rescore(col, cand, weights, bias)
    order = np.argsort(-exact, kind="stable")[:k]
    return cand[order], exact[order]


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
    # the search widens its breadth to ``want`` for this call only (safe beside other threads)
    cand, _ = col.index.search((w / (norm or 1.0))[None, :], want)
    cand = cand[0][cand[0] >= 0]
    if exclude is not None and len(exclude):
        cand = cand[~np.isin(cand, exclude)]
    scores = rescore(col, cand, w, bias)
    order = np.argsort(-scores, kind="stable")[:k]
    return cand[order], scores[order]
