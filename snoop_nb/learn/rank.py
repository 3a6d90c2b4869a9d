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
#: Corpora up to this many float16 values (rows x dim; 6,553 rows of 1280) are scored with
#: numpy, larger ones with PyTorch's float16 kernel (see :func:`score_matrix`).
NUMPY_MAX_VALUES = 1 << 23
#: Rows converted to float32 at a time by the numpy path (10 MB of float32 at 1280-d).
_NUMPY_BLOCK = 2048


def score_matrix(
    vectors: np.ndarray, weights: np.ndarray, bias: float = 0.0, *, device: str = "auto"
) -> np.ndarray:
    """``vectors @ weights + bias`` over float16 rows, as float32, to float16 precision.

    No float32 copy of the corpus is ever made. Up to :data:`NUMPY_MAX_VALUES` values the rows
    are converted to float32 a block at a time and multiplied by numpy (2 quiet cores: ~1.7 ms
    per 1,000 rows of 1280, the conversion dominating, so at most ~11 ms); above it, PyTorch's
    float16 matrix-vector kernel reads the (memory-mapped) rows directly with float32
    accumulation, ~25x faster (100,000 rows: 7 ms against 175 ms). PyTorch is imported only
    then: it costs a process ~280 MB of private memory, too much for each of a class's
    dashboard kernels on a small collection. Exact float32 scores of the best candidates come
    from :func:`rescore`.

    ``device``: ``"auto"`` runs that kernel on a CUDA GPU when one is there and the rows fit
    in its free memory with a margin (:func:`snoop_nb.index.exact.vector_device`), where they
    stay between calls (a growing collection sends only its new rows); ``"cpu"`` never uses a
    GPU; ``"cuda"`` always does (even below the threshold). Every device gives the CPU's scores
    to float16 rounding.
    """
    rows = np.asarray(vectors)
    if rows.dtype != np.float16:
        rows = rows.astype(np.float16)
    elif isinstance(vectors, np.memmap):
        rows = vectors  # a map keeps its file's name: a GPU then holds it once, and grows it
    if len(rows) == 0:
        return np.zeros(0, np.float32)
    if device in ("auto", "cpu") and rows.size <= NUMPY_MAX_VALUES:
        return _score_numpy(rows, weights, bias)
    from snoop_nb.index.exact import vector_device

    return _score_torch(rows, weights, bias, vector_device(device, rows.nbytes))


def _score_numpy(rows: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    w = np.ascontiguousarray(weights, dtype=np.float32).reshape(-1)
    # torch's kernel multiplies by float16 weights: so do we, for the same ranking
    w = w.astype(np.float16).astype(np.float32)
    out = np.empty(len(rows), np.float32)
    block = np.empty((min(_NUMPY_BLOCK, len(rows)), rows.shape[1]), np.float32)
    for i in range(0, len(rows), _NUMPY_BLOCK):
        part = block[: len(rows[i : i + _NUMPY_BLOCK])]
        np.copyto(part, rows[i : i + _NUMPY_BLOCK])
        np.dot(part, w, out=out[i : i + len(part)])
    out += np.float32(bias)
    return out


def _score_torch(
    rows: np.ndarray, weights: np.ndarray, bias: float, device: str = "cpu"
) -> np.ndarray:
    """The float16 kernel on ``device``: the rows in place on the CPU, held on a GPU."""
    import torch

    from snoop_nb.index.exact import RESIDENT

    m = RESIDENT.get(rows, device)
    w = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32).reshape(-1))
    with torch.inference_mode():
        out = (m @ w.to(m.device, torch.float16)).float().cpu().numpy()
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
