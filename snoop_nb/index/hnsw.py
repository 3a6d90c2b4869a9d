"""Approximate search with hnswlib's HNSW graphs (cosine space)."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import numpy as np

from snoop_nb.index.base import (
    Index,
    as_ids,
    as_queries,
    as_vectors,
    atomic_write,
    clip_scores,
    last_of_each,
)

#: Defaults measured by benchmarks/index.py: recall@10 >= 0.95 on real embeddings, and on 1M
#: synthetic ones (1280-d): ef=64 gave 0.947 there (0.965 with ProjectedIndex), ef=128 0.977, at
#: about 1 ms a query on one core.
DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_EF = 128


class HNSWIndex(Index):
    """hnswlib behind the :class:`Index` interface.

    ``M`` and ``ef_construction`` shape the graph (memory and build time against recall);
    ``ef`` is the default search breadth, and ``search(..., ef=)`` sets it for one call.
    hnswlib's breadth is one setting per graph, so each search sets it and queries under the
    index's lock (hnswlib spreads a batch of queries over its own threads). Removal marks
    items deleted (hnswlib skips them in results); adding a removed id again brings it back
    with its new vector. The index grows as needed.

    >>> idx = HNSWIndex(dim=4)
    >>> idx.add([3, 5], [[1, 0, 0, 0], [0, 1, 0, 0]])
    >>> idx.search([[0.9, 0.1, 0, 0]], k=1)[0].tolist()
    [[3]]
    """

    kind = "hnsw"

    def __init__(
        self,
        dim: int,
        *,
        M: int = DEFAULT_M,
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef: int = DEFAULT_EF,
        threads: int = -1,
        capacity: int = 1024,
    ):
        import hnswlib

        self.dim = dim
        self.M = M
        self.ef_construction = ef_construction
        self._ef = ef
        self.threads = threads
        self._index = hnswlib.Index(space="cosine", dim=dim)
        self._index.init_index(max_elements=max(capacity, 1), ef_construction=ef_construction, M=M)
        self._index.set_ef(ef)
        self._index.set_num_threads(threads if threads > 0 else _cpu_count())
        self._labels: set[int] = set()
        self._deleted: set[int] = set()
        self._lock = threading.RLock()

    # --- parameters ---------------------------------------------------------------------
    @property
    def ef(self) -> int:
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        self._ef = int(value)  # each search sets hnswlib's breadth itself, under the lock

    # --- Index interface ----------------------------------------------------------------
    def add(self, ids, vectors) -> None:
        ids = as_ids(ids)
        if ids.size == 0:
            return
        vecs = as_vectors(vectors, len(ids), self.dim)
        pick = last_of_each(ids)  # hnswlib's threads would apply repeats in any order
        if len(pick) < len(ids):
            ids, vecs = ids[pick], vecs[pick]
        with self._lock:
            need = self._index.get_current_count() + int(ids.size)
            if need > self._index.get_max_elements():
                self._index.resize_index(max(need, 2 * self._index.get_max_elements()))
            for i in ids.tolist():
                if i in self._deleted:
                    self._index.unmark_deleted(i)  # then add_items updates its vector
                    self._deleted.discard(i)
            self._index.add_items(vecs, ids, num_threads=self._threads())
            self._labels.update(ids.tolist())

    def remove(self, ids) -> None:
        with self._lock:
            for i in as_ids(ids).tolist():
                if i in self._labels and i not in self._deleted:
                    self._index.mark_deleted(i)
                    self._deleted.add(i)

    def ids(self) -> np.ndarray:
        with self._lock:
            return np.array(sorted(self._labels - self._deleted), dtype=np.int64)

    def __len__(self) -> int:
        return len(self._labels) - len(self._deleted)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._labels and item_id not in self._deleted

    def search(
        self, queries, k: int = 10, *, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = as_queries(queries, self.dim)
        ids = np.full((q.shape[0], k), -1, np.int64)
        scores = np.full((q.shape[0], k), -np.inf, np.float32)
        with self._lock:
            live = len(self)
            kk = min(k, live)
            if kk == 0 or q.shape[0] == 0:
                return ids, scores
            # hnswlib cannot return k results when ef < k or deleted items crowd the graph;
            # widen ef for this query and try again rather than fail.
            width = max(int(ef) if ef is not None else self._ef, kk)
            while True:
                self._index.set_ef(width)
                try:
                    labels, dist = self._index.knn_query(q, k=kk, num_threads=self._threads())
                    break
                except RuntimeError:
                    if width >= live + len(self._deleted):
                        raise
                    width = min(2 * width, live + len(self._deleted))
        ids[:, :kk] = labels.astype(np.int64)
        scores[:, :kk] = clip_scores(1.0 - dist)
        return ids, scores

    def get_vectors(self, ids) -> np.ndarray:
        """The stored (normalised) vectors of ``ids``."""
        with self._lock:
            items = self._index.get_items(as_ids(ids), return_type="numpy")
        return np.asarray(items, np.float32)

    # --- persistence --------------------------------------------------------------------
    def save(self, path: str | Path, *, extra: dict | None = None) -> None:
        """Write the index to ``path`` atomically (a sidecar ``.json`` holds the deleted ids and
        ``extra``; it is written first, so it never lags the graph file)."""
        path = Path(path)
        with self._lock:
            meta = {
                **(extra or {}),
                "dim": self.dim,
                "M": self.M,
                "ef_construction": self.ef_construction,
                "ef": self._ef,
                "deleted": sorted(self._deleted),
            }
            atomic_write(
                path.with_name(path.name + ".json"),
                lambda t: Path(t).write_text(json.dumps(meta)),
            )
            atomic_write(path, self._index.save_index)

    @classmethod
    def load(cls, path: str | Path, *, threads: int = -1) -> HNSWIndex:
        """Read an index saved by :meth:`save`."""
        import hnswlib

        path = Path(path)
        meta = json.loads(path.with_name(path.name + ".json").read_text())
        self = cls.__new__(cls)
        self.dim = int(meta["dim"])
        self.M = int(meta["M"])
        self.ef_construction = int(meta["ef_construction"])
        self._ef = int(meta["ef"])
        self.threads = threads
        self._lock = threading.RLock()
        self._index = hnswlib.Index(space="cosine", dim=self.dim)
        self._index.load_index(str(path))
        self._index.set_ef(self._ef)
        self._index.set_num_threads(self._threads())
        self._labels = set(map(int, self._index.get_ids_list()))
        # The sidecar is written first, so it may name deletions the graph does not hold
        # yet (a crash in between): keep only those, then mark them (idempotent).
        self._deleted = set()
        for i in meta.get("deleted", []):
            if i in self._labels:
                with contextlib.suppress(RuntimeError):  # already marked in the file
                    self._index.mark_deleted(i)
                self._deleted.add(i)
        return self

    def _threads(self) -> int:
        return self.threads if self.threads > 0 else _cpu_count()


def _cpu_count() -> int:
    import os

    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
