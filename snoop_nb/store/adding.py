"""Adding to a collection: files embedded here, or vectors computed anywhere else.

Each batch is made durable in two steps, under the writer lock: its vectors are appended and
fsync'ed, then its catalog rows (with the new row count) are committed in one transaction. The
catalog is the truth: vector rows past its count are the trace of a run killed in between and
are cut off by the next writer. So a run killed at any moment and run again ends with every file
catalogued exactly once.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import UsageError
from snoop_nb.store.catalog import ITEM_COLUMNS, readable
from snoop_nb.store.lock import writer_lock
from snoop_nb.store.vectors import unit_rows

if TYPE_CHECKING:
    from snoop_nb.embed.base import Embedder
    from snoop_nb.store.catalog import Catalog
    from snoop_nb.store.upkeep import IndexKeeper
    from snoop_nb.store.vectors import VectorStore

#: Save the HNSW index at least this often (seconds) during a long run.
INDEX_SAVE_EVERY = 300.0
#: Keys of :meth:`Adder.add_vectors` metadata that fill catalog columns, not ``meta``.
COLUMN_KEYS = ("kind", "video", "t_start", "t_end", "size", "digest", "width", "height")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class AddReport:
    """What one :meth:`Collection.add` run did. ``retried`` counts the files that had failed
    before and were tried again (those that failed again are among ``errors`` too)."""

    discovered: int = 0
    skipped: int = 0
    added: int = 0
    replaced: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    retried: int = 0

    def __str__(self) -> str:
        return (
            f"{self.added} added, {self.replaced} replaced, {self.skipped} unchanged, "
            f"{self.retried} retried, {len(self.errors)} bad files, in {self.seconds:.1f} s"
        )


def _record(row: int, key: bytes, uri: str, now: float, **values: Any) -> tuple:
    """One items row, in the order of :data:`ITEM_COLUMNS`."""
    values.update(id=row, path=key, uri=uri, added=now)
    values.setdefault("kind", "image")
    return tuple(values.get(c) for c in ITEM_COLUMNS)


class Adder:
    """Writes new items into a catalog and its vector store, and keeps the index up to date."""

    def __init__(self, root: Path, catalog: Catalog, store: VectorStore, keeper: IndexKeeper):
        self.root = root
        self.catalog = catalog
        self.store = store
        self.keeper = keeper

    # --- files ---------------------------------------------------------------------------
    def add_files(
        self,
        paths: Iterable[str | os.PathLike],
        embedder: Callable[[], Embedder],
        *,
        batch_size: int = 32,
        workers: int | None = None,
        progress: bool | None = None,
        meta: Callable[[Path], dict[str, Any]] | None = None,
        update_index: bool = True,
        max_pixels: int | None = None,
    ) -> AddReport:
        """See :meth:`snoop_nb.collection.Collection.add`."""
        from snoop_nb.embed.pipeline import embed_stream
        from snoop_nb.media import discover_images

        start = time.monotonic()
        report = AddReport()
        extra = {} if max_pixels is None else {"max_pixels": int(max_pixels)}
        with writer_lock(self.root):
            self.store.trim(self.catalog.rows())
            todo, stats, old = self._plan(discover_images(paths), report)
            batches: Iterable = ()
            if todo:  # nothing new: no model to load
                batches = embed_stream(
                    embedder(),
                    todo,
                    batch_size=batch_size,
                    workers=workers,
                    progress=progress,
                    **extra,
                )
            last_save = time.monotonic()
            with self.store.open_for_append() as vec_file:
                for batch in batches:
                    self._commit_batch(vec_file, todo, stats, batch, old, meta, report)
                    if update_index and time.monotonic() - last_save > INDEX_SAVE_EVERY:
                        self.keeper.sync(save=True)
                        last_save = time.monotonic()
            if update_index:
                self.keeper.sync(save=True)
        report.seconds = time.monotonic() - start
        return report

    def _plan(
        self, found: Iterator[Path], report: AddReport
    ) -> tuple[list[Path], list[tuple[int | None, int | None]], dict[bytes, tuple[int, str]]]:
        """Which discovered files need embedding, their (size, mtime) before reading, and the
        item (id, status) each one replaces. Stats taken before reading mean that a file changed
        while it is being embedded is caught as changed by the next run. A file that failed
        before is tried again whatever its stats (a decoder or a limit may have changed)."""
        known = self.catalog.known()
        todo: list[Path] = []
        stats: list[tuple[int | None, int | None]] = []
        old: dict[bytes, tuple[int, str]] = {}
        seen: set[bytes] = set()
        for p in found:
            p = Path(os.path.abspath(p))
            key = os.fsencode(p)
            if key in seen:
                continue
            seen.add(key)
            report.discovered += 1
            try:
                st = p.stat()
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                size = mtime = None
            hit = known.get(key)
            if hit is not None:
                item_id, was_size, was_mtime, status = hit
                if status == "error":
                    report.retried += 1
                elif was_size == size and was_mtime == mtime:
                    report.skipped += 1
                    continue
                old[key] = (item_id, status)
            todo.append(p)
            stats.append((size, mtime))
        return todo, stats, old

    def _commit_batch(self, vec_file, todo, stats, batch, old, meta, report) -> None:
        """Append one batch's vectors durably, then catalogue it in one transaction. A file
        that fails again keeps its row (its error is updated): a new row would only add a
        zero vector per run."""
        entries = sorted(
            [
                (i, "ok", info, vec)
                for i, info, vec in zip(batch.indices, batch.infos, batch.vectors, strict=True)
            ]
            + [(i, "error", err, None) for i, err in batch.errors],
            key=lambda e: e[0],
        )
        if not entries:
            return
        now = time.time()
        updated, fresh = [], []
        for e in entries:
            i, status, what, _ = e
            key = os.fsencode(todo[i])
            prior = old.get(key)
            if status == "error":
                report.errors.append((readable(todo[i]), what.reason))
                if prior is not None and prior[1] == "error":
                    size, mtime = stats[i]
                    updated.append((what.reason, size, mtime, now, prior[0]))
                    continue
            fresh.append(e)
        first = self.catalog.rows()
        block = np.zeros((len(fresh), self.store.dim), np.float16)
        records, deleted = [], []
        for row, (i, status, what, vec) in enumerate(fresh):
            path = todo[i]
            key = os.fsencode(path)
            size, mtime = stats[i]
            values: dict[str, Any] = {"size": size, "mtime_ns": mtime, "status": status}
            if status == "ok":
                block[row] = vec
                item_meta = meta(path) if meta is not None else None
                values.update(
                    digest=what.digest,
                    width=what.width,
                    height=what.height,
                    meta=json.dumps(item_meta) if item_meta else None,
                )
            else:
                values["error"] = what.reason
            records.append(_record(first + row, key, readable(path), now, **values))
            prior = old.get(key)
            if prior is not None:
                deleted.append(prior[0])
                if prior[1] == "ok":
                    report.replaced += 1
        if len(fresh):
            self.store.append(vec_file, block)
        self.catalog.commit(records, rows=first + len(fresh), deleted=deleted, updated=updated)
        report.added += sum(1 for e in entries if e[1] == "ok")

    # --- vectors computed elsewhere --------------------------------------------------------
    def add_vectors(
        self,
        uris: Sequence[str | bytes | os.PathLike],
        vectors: Any,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        *,
        update_index: bool = True,
    ) -> np.ndarray:
        """See :meth:`snoop_nb.collection.Collection.add_vectors`."""
        keys = [_uri_key(u) for u in uris]
        n = len(keys)
        try:
            block = unit_rows(vectors, self.store.dim) if n else np.zeros((0, self.store.dim))
        except ValueError as e:
            raise UsageError(f"add_vectors: {e}") from None
        if len(block) != n:
            raise UsageError(f"add_vectors: {n} uris but {len(block)} vectors")
        if len(set(keys)) != n:
            dup = next(k for k in keys if keys.count(k) > 1)
            raise UsageError(f"add_vectors: {readable(dup)} is given twice")
        if metadata is not None and len(metadata) != n:
            raise UsageError(f"add_vectors: {n} uris but {len(metadata)} metadata entries")
        metas = list(metadata) if metadata is not None else [None] * n
        with writer_lock(self.root):
            self.store.trim(self.catalog.rows())
            known = self.catalog.known()
            first = self.catalog.rows()
            now = time.time()
            records, deleted = [], []
            for row, (key, m) in enumerate(zip(keys, metas, strict=True)):
                values = dict(m or {})
                columns = {c: values.pop(c) for c in COLUMN_KEYS if c in values}
                columns["meta"] = json.dumps(values) if values else None
                records.append(
                    _record(first + row, key, readable(key), now, status="ok", **columns)
                )
                if key in known:
                    deleted.append(known[key][0])
            if n:
                with self.store.open_for_append() as f:
                    self.store.append(f, block)
                self.catalog.commit(records, rows=first + n, deleted=deleted)
            if update_index:
                self.keeper.sync(save=True)
        return np.arange(first, first + n, dtype=np.int64)


def _uri_key(uri: str | bytes | os.PathLike) -> bytes:
    """The catalog's path bytes for a uri: URLs as given, file paths made absolute."""
    if isinstance(uri, bytes):
        return uri if uri.startswith(b"/") or b"://" in uri else os.fsencode(os.path.abspath(uri))
    text = os.fspath(uri)
    if isinstance(text, bytes):
        return _uri_key(text)
    if _URL.match(text):
        return text.encode("utf-8", "surrogateescape")
    return os.fsencode(os.path.abspath(text))
