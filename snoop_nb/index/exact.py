"""Exact (brute-force) search: the reference, and the right tool for small collections."""

from __future__ import annotations

import threading

import numpy as np

from snoop_nb.index.base import Index, as_ids, as_queries, as_vectors, clip_scores, last_of_each


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions and values of the ``k`` largest entries of each row, best first."""
    n = scores.shape[1]
    k = min(k, n)
    if k == 0:
        return np.zeros((scores.shape[0], 0), np.int64), np.zeros((scores.shape[0], 0), np.float32)
    part = (
        np.argpartition(-scores, k - 1, axis=1)[:, :k]
        if k < n
        else np.tile(np.arange(n), (scores.shape[0], 1))
    )
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


class ExactIndex(Index):
    """Scores every live vector: float32 dot products over float16 rows, in chunks.

    >>> idx = ExactIndex(dim=4)
    >>> idx.add([7], [[1, 0, 0, 0]])
    >>> idx.search([[1, 0, 0, 0]], k=1)[0].tolist()
    [[7]]
    """

    kind = "exact"

    def __init__(self, dim: int, *, chunk: int = 65536, cache_bytes: int = 512 << 20):
        self.dim = dim
        self.chunk = chunk
        self.cache_bytes = cache_bytes
        self._ids = np.zeros(0, np.int64)
        self._vecs = np.zeros((0, dim), np.float16)
        self._f32: np.ndarray | None = None  # float32 copy of _vecs, made on the first search
        self._lock = threading.RLock()

    @classmethod
    def from_arrays(cls, ids, vectors) -> ExactIndex:
        """An index over existing arrays (a memory-mapped matrix is used in place, not copied)."""
        idx = cls(np.asarray(vectors).shape[1])
        idx._ids = as_ids(ids)
        idx._vecs = vectors if isinstance(vectors, np.memmap) else np.asarray(vectors, np.float16)
        if len(idx._ids) != len(idx._vecs):
            raise ValueError("ids and vectors differ in length")
        if len(np.unique(idx._ids)) != len(idx._ids):
            raise ValueError("duplicate ids")
        return idx

    def _blocks(self):
        """(start, float32 block) over the live vectors. Converting float16 costs 10x the dot
        products, so a matrix up to ``cache_bytes`` as float32 is converted once and kept."""
        n = len(self._ids)
        if self._f32 is None and n * self.dim * 4 <= self.cache_bytes:
            self._f32 = np.asarray(self._vecs, dtype=np.float32)
        for start in range(0, n, self.chunk):
            if self._f32 is not None:
                yield start, self._f32[start : start + self.chunk]
            else:
                yield start, np.asarray(self._vecs[start : start + self.chunk], dtype=np.float32)

    def add(self, ids, vectors) -> None:
        ids = as_ids(ids)
        vecs = as_vectors(vectors, len(ids), self.dim)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs = (vecs / np.where(norms == 0, 1, norms)).astype(np.float16)
        with self._lock:
            keep = ~np.isin(self._ids, ids)
            pick = last_of_each(ids)
            self._ids = np.concatenate([self._ids[keep], ids[pick]])
            self._vecs = np.concatenate([np.asarray(self._vecs[keep]), vecs[pick]])
            self._f32 = None

    def remove(self, ids) -> None:
        with self._lock:
            keep = ~np.isin(self._ids, as_ids(ids))
            self._ids = self._ids[keep]
            self._vecs = np.asarray(self._vecs[keep])
            self._f32 = None

    def ids(self) -> np.ndarray:
        return np.sort(self._ids)

    def __len__(self) -> int:
        return int(self._ids.size)

    def scores(self, queries) -> np.ndarray:
        """Cosine similarity of each query with every live vector, (Q, N) float32."""
        q = as_queries(queries, self.dim)
        with self._lock:
            out = np.empty((q.shape[0], len(self._ids)), np.float32)
            for start, block in self._blocks():
                out[:, start : start + len(block)] = q @ block.T
        return clip_scores(out)

    def search(
        self, queries, k: int = 10, *, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self._search(queries, k)

    def _search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_queries(queries, self.dim)
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        q = q / np.where(norms == 0, 1, norms)
        nq = q.shape[0]
        best_pos = np.zeros((nq, 0), np.int64)
        best_val = np.zeros((nq, 0), np.float32)
        for start, block in self._blocks():
            pos, vals = top_k(q @ block.T, k)
            merged_pos = np.concatenate([best_pos, pos + start], axis=1)
            merged_val = np.concatenate([best_val, vals], axis=1)
            keep, best_val = top_k(merged_val, k)
            best_pos = np.take_along_axis(merged_pos, keep, axis=1)
        ids = self._ids[best_pos]
        if best_pos.shape[1] < k:
            pad = k - best_pos.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            best_val = np.pad(best_val, ((0, 0), (0, pad)), constant_values=-np.inf)
        return ids.astype(np.int64), clip_scores(best_val)
