"""The vector store: ``vectors.f16``, float16 rows appended and memory-mapped; row i = item id i.

Rows are only ever appended (and fsync'ed before the catalog vouches for them), so a committed
row never changes: readers may map the file while a writer appends to it, and a map taken
earlier serves every row it holds.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from snoop_nb.errors import CollectionError

VECTORS_NAME = "vectors.f16"


def unit_rows(vectors, dim: int) -> np.ndarray:
    """``vectors`` checked (shape ``(n, dim)``, finite, not zero) and scaled to unit length, as
    float16 rows; raises ValueError naming the first bad row."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1 and v.size == dim:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != dim:
        raise ValueError(f"expected vectors of {dim} columns, got shape {v.shape}")
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
        raise ValueError(f"vector {int(np.argmax(bad))} holds NaN or infinite values")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"vector {int(np.argmax(norms[:, 0] == 0))} is all zeros")
    return (v / norms).astype(np.float16)


def _advise_random(mapped: np.memmap) -> None:
    """Tell the kernel this map is read at random (no read-ahead); a no-op where unsupported."""
    raw = getattr(mapped, "_mmap", None)
    if raw is not None and hasattr(mmap, "MADV_RANDOM"):
        with contextlib.suppress(OSError):  # advice only
            raw.madvise(mmap.MADV_RANDOM)


class VectorStore:
    """``vectors.f16`` of one collection: ``dim`` float16 columns, row i = item id i.

    ``count()`` says how many rows are committed (the catalog's count): rows past it are an
    interrupted run's and are never read.
    """

    def __init__(self, path: Path, dim: int, count: Callable[[], int]):
        self.path = Path(path)
        self.dim = int(dim)
        self.count = count
        self._map: tuple[tuple[int, int, int], np.ndarray] | None = None
        self._random: tuple[int, np.ndarray] | None = None  # the random-access map (rows)

    def view(self, n: int | None = None) -> np.ndarray:
        """The first ``n`` rows (the committed ones by default) as a read-only memory map."""
        if n is None:
            n = self.count()
        if n == 0:
            return np.zeros((0, self.dim), np.float16)
        st = self.path.stat() if self.path.exists() else None
        have = st.st_size if st else 0
        if have < n * self.dim * 2:
            raise CollectionError(
                f"{self.path} holds {have // (2 * self.dim)} rows but the catalog has {n}: "
                "the collection is damaged (was vectors.f16 replaced?); re-index it"
            )
        # One map per (rows, file): a new map faults every page in again on its first scan
        # (about 15 ms per 100k rows), so it is kept while the catalog and the file stay put.
        key = (n, st.st_ino, st.st_dev)
        held = self._map
        if held is None or held[0] != key:
            held = self._map = (
                key,
                np.memmap(self.path, np.float16, mode="r", shape=(n, self.dim)),
            )
        return held[1]

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """float16 rows by number: the store the indexes re-score from, and what labels and
        candidates are read through. The map at hand serves every row it holds; a new one is
        taken only for rows past it (this keeps the catalog out of each search).

        This map is advised random access (``MADV_RANDOM``): the kernel then reads the pages a
        row lies on and not the 128 kB of read-ahead each would bring, which in a file larger
        than memory (10M items: 25.6 GB) made 1,000 scattered rows take 150-500 ms instead of
        15 ms. Whole-file scans go through :meth:`view`, whose map keeps the read-ahead.
        """
        held = self._random
        if held is None or (rows.size and int(rows.max()) >= len(held[1])):
            n = len(self.view())
            mapped = np.memmap(self.path, np.float16, mode="r", shape=(n, self.dim)) if n else None
            if mapped is None:
                return np.zeros((0, self.dim), np.float16)[rows]
            _advise_random(mapped)
            held = self._random = (n, mapped)
        return held[1][rows]

    def append(self, f: BinaryIO, block: np.ndarray) -> None:
        """Append float16 rows to the open file ``f`` and make them durable (fsync)."""
        block = np.ascontiguousarray(block, np.float16)
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"expected rows of {self.dim} columns, got shape {block.shape}")
        f.write(block.tobytes())
        f.flush()
        os.fsync(f.fileno())

    def open_for_append(self) -> BinaryIO:
        return open(self.path, "ab")

    def trim(self, n: int) -> None:
        """Cut rows past ``n`` (an interrupted batch's); an error if there are fewer than ``n``."""
        want = n * self.dim * 2
        have = self.path.stat().st_size if self.path.exists() else 0
        if have > want:
            os.truncate(self.path, want)
        elif have < want:
            raise CollectionError(
                f"{self.path} is shorter than the catalog says ({have} < {want} bytes): "
                "the collection is damaged; re-index it into a new directory"
            )
