"""The one small interface every vector index implements.

Vectors are L2-normalised rows; scores are cosine similarities in [-1, 1] (higher is closer).
Ids are non-negative integers chosen by the caller (a collection uses its item ids). ``search``
pads rows with id ``-1`` and score ``-inf`` when fewer than ``k`` items are live. Every index is
safe to use from several threads: its methods hold the index's own lock.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np


def as_ids(ids) -> np.ndarray:
    """Ids as a 1-d int64 array; negative ids are refused."""
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    if arr.size and arr.min() < 0:
        raise ValueError("index ids must be non-negative integers")
    return arr


def as_queries(queries, dim: int) -> np.ndarray:
    """Queries as a 2-d float32 array of ``dim`` columns."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have {dim} columns, got shape {q.shape}")
    return q


def as_vectors(vectors, n: int, dim: int) -> np.ndarray:
    """``n`` vectors as an ``(n, dim)`` float32 array (a 1-d vector is one row); refuses any
    other shape, even one with as many numbers (reshaping it would mix up rows silently)."""
    v = np.asarray(vectors, dtype=np.float32)
    if n == 0 and v.size == 0:
        return v.reshape(0, dim)
    if v.ndim == 1:
        v = v[None, :]
    if v.shape != (n, dim):
        raise ValueError(f"expected {n} vectors of {dim} columns, got shape {v.shape}")
    return v


def clip_scores(scores: np.ndarray) -> np.ndarray:
    """Cosine scores held to [-1, 1]: float16 rows are unit length only to about 1e-3, so the
    score of an item with itself may come out a little above 1. Padding (``-inf``) is kept."""
    return np.where(np.isneginf(scores), scores, np.clip(scores, -1.0, 1.0)).astype(np.float32)


def last_of_each(ids: np.ndarray) -> np.ndarray:
    """Positions of the last occurrence of each id, in order: where an id repeats, the last wins."""
    _, last = np.unique(ids[::-1], return_index=True)
    return np.sort(len(ids) - 1 - last)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``.

    A reader (or a process killed mid-write) sees the old file or the new one, never half of one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Index(ABC):
    """A set of (id, vector) pairs answering k-nearest-neighbour queries by cosine similarity."""

    dim: int
    kind: str
    #: True when ``load`` found the index's files out of step (a crash between two of its
    #: writes) and repaired the index in memory: saving it puts the repair on disk.
    repaired_on_load: bool = False

    @abstractmethod
    def add(self, ids, vectors) -> None:
        """Add vectors under ``ids``; an id already present is replaced."""

    @abstractmethod
    def remove(self, ids) -> None:
        """Remove ``ids``; unknown or already removed ids are ignored."""

    @abstractmethod
    def search(
        self, queries, k: int = 10, *, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest live items of each query: ``(ids int64 (Q, k), scores float32 (Q, k))``.

        ``ef`` is this search's breadth in an approximate index (its ``ef`` by default; an
        exact index ignores it). It applies to this call only, so threads searching at once
        with different breadths do not disturb each other.
        """

    @abstractmethod
    def ids(self) -> np.ndarray:
        """The live ids, sorted."""

    def __len__(self) -> int:
        return int(self.ids().size)

    def __contains__(self, item_id: object) -> bool:
        return bool(np.isin(int(item_id), self.ids()))  # type: ignore[call-overload]
