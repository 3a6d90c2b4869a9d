"""N index shards behind one index: built in parallel, searched in parallel, top-k merged.

Item ``i`` lives in shard ``i % N``. Adding splits the vectors by shard and adds them to every
shard at once, one thread each (hnswlib and faiss release the GIL, so N shards build on N
cores); a search asks every shard for its own ``k`` best, at once, and keeps the ``k`` best of
their union by score. Every shard's scores are exact cosines (a graph's distances, or an exact
re-score of its candidates), so the merge is exactly what one index over all the items would
return from the same candidates: with exhaustive shards it is exact search.

Each shard is a whole index of the collection's kind (``hnsw``, ``hnsw-pca``, ``pca-sq8``),
saved to its own files (``index.hnsw.<i>`` and its companions); ``index.hnsw.shards.json``,
written last, names the kind and the count. A shard whose files are missing or unreadable
starts empty and is filled again from the vectors by the collection's upkeep.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from snoop_nb.index.base import Index, as_ids, as_queries, as_vectors, atomic_write
from snoop_nb.index.exact import top_k

SHARDS_SUFFIX = ".shards.json"


def shard_path(path: str | Path, i: int) -> Path:
    """Where shard ``i`` of an index saved at ``path`` is saved (its companions beside it)."""
    path = Path(path)
    return path.with_name(f"{path.name}.{i}")


def meta_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SHARDS_SUFFIX)


class ShardedIndex(Index):
    """``shards`` indexes made by ``make(i)``; item ``i`` in shard ``i % len(shards)``.

    >>> from snoop_nb.index import ExactIndex
    >>> idx = ShardedIndex([ExactIndex(2), ExactIndex(2)])
    >>> idx.add([0, 1, 2], [[1, 0], [0, 1], [0.8, 0.6]])
    >>> idx.search([[1, 0]], k=2)[0].tolist()
    [[0, 2]]
    """

    def __init__(self, shards: list[Index]):
        if not shards:
            raise ValueError("a sharded index needs at least one shard")
        kinds = {s.kind for s in shards}
        dims = {s.dim for s in shards}
        if len(kinds) != 1 or len(dims) != 1:
            raise ValueError("the shards of an index must be of one kind and dimension")
        self.shards = list(shards)
        self.kind = kinds.pop()
        self.dim = dims.pop()
        self._pool = ThreadPoolExecutor(len(shards), thread_name_prefix="snoop-shard")
        self._lock = threading.RLock()

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def repaired_on_load(self) -> bool:  # type: ignore[override]
        return any(s.repaired_on_load for s in self.shards)

    @repaired_on_load.setter
    def repaired_on_load(self, value: bool) -> None:
        for s in self.shards:
            s.repaired_on_load = value

    @property
    def ef(self) -> int:
        return int(getattr(self.shards[0], "ef", 0))

    @ef.setter
    def ef(self, value: int) -> None:
        for s in self.shards:
            s.ef = value  # type: ignore[attr-defined]

    def _split(self, ids: np.ndarray) -> list[np.ndarray]:
        which = ids % self.n_shards
        return [np.flatnonzero(which == i) for i in range(self.n_shards)]

    def _each(self, work: Callable[[int], object]) -> list:
        """``work(i)`` for every shard, one thread each; the first error is raised."""
        if self.n_shards == 1:
            return [work(0)]
        return list(self._pool.map(work, range(self.n_shards)))

    def add(self, ids, vectors) -> None:
        ids = as_ids(ids)
        vecs = as_vectors(vectors, len(ids), self.dim)
        parts = self._split(ids)
        with self._lock:
            self._each(
                lambda i: parts[i].size and self.shards[i].add(ids[parts[i]], vecs[parts[i]])
            )

    def remove(self, ids) -> None:
        ids = as_ids(ids)
        parts = self._split(ids)
        with self._lock:
            self._each(lambda i: parts[i].size and self.shards[i].remove(ids[parts[i]]))

    def search(
        self, queries, k: int = 10, *, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = as_queries(queries, self.dim)
        found = self._each(lambda i: self.shards[i].search(q, k, ef=ef))
        ids = np.concatenate([f[0] for f in found], axis=1)
        scores = np.concatenate([f[1] for f in found], axis=1)
        pos, vals = top_k(scores, k)
        out_ids = np.take_along_axis(ids, pos, axis=1)
        out_ids[np.isneginf(vals)] = -1
        return out_ids, vals.astype(np.float32)

    def ids(self) -> np.ndarray:
        return np.sort(np.concatenate([s.ids() for s in self.shards]))

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def __contains__(self, item_id: object) -> bool:
        try:
            i = int(item_id)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False
        return i >= 0 and i in self.shards[i % self.n_shards]

    def approximate_scores(
        self, weights, *, sample: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Live ids (all, or about ``sample`` at random) and their scores from the shards'
        codes (``pca-sq8`` shards only), by id."""
        each = None if sample is None else -(-sample // self.n_shards)
        parts = self._each(
            lambda i: self.shards[i].approximate_scores(weights, sample=each, seed=seed + i)  # type: ignore[attr-defined]
        )
        ids = np.concatenate([p[0] for p in parts])
        scores = np.concatenate([p[1] for p in parts])
        order = np.argsort(ids)
        return ids[order], scores[order]

    @property
    def fitted(self) -> bool:
        return all(getattr(s, "fitted", False) for s in self.shards)

    def error_bound(self, weights, **kw) -> float:
        """The largest of the shards' bounds (``pca-sq8`` only)."""
        return max(self._each(lambda i: self.shards[i].error_bound(weights, **kw)))  # type: ignore[attr-defined]

    # --- persistence --------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Save every shard (in parallel) to its own files, then the shards' sidecar."""
        with self._lock:
            self._each(lambda i: self.shards[i].save(shard_path(path, i)))
            meta = {"kind": self.kind, "dim": self.dim, "shards": self.n_shards}
            atomic_write(meta_path(path), lambda tmp: Path(tmp).write_text(json.dumps(meta)))

    @classmethod
    def load(
        cls,
        path: str | Path,
        shards: int,
        load_one: Callable[[Path], Index | None],
        make_one: Callable[[int], Index],
    ) -> ShardedIndex:
        """The ``shards`` shards saved at ``path``: ``load_one(shard_path)`` reads one (None
        when missing or unreadable: then ``make_one(i)`` makes an empty one, and the index is
        marked repaired, to be filled from the vectors)."""
        loaded: list[Index | None] = [None] * shards

        def read(i: int) -> None:
            loaded[i] = load_one(shard_path(path, i))

        with ThreadPoolExecutor(shards) as pool:
            list(pool.map(read, range(shards)))
        out = []
        repaired = False
        for i, s in enumerate(loaded):
            if s is None:
                s = make_one(i)
                repaired = True
            out.append(s)
        self = cls(out)
        if repaired:
            self.shards[0].repaired_on_load = True
        return self

    def close(self) -> None:
        self._pool.shutdown(wait=False)
