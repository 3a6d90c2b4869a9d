"""A collection on disk: catalog, vectors and index of a set of pictures.

One directory, self-describing and safe to copy::

    manifest.json    format version, embedder (id, name, weights digest), dimension, metric,
                     index kind and parameters
    catalog.sqlite   items (id, uri, kind, size, digest, status, error, metadata...), WAL mode
    vectors.f16      L2-normalised float16 rows; row i is item id i
    index.hnsw       hnswlib graph (+ index.hnsw.json: deleted ids, projection id)
    index.hnsw.npz   "hnsw-pca" only: the PCA projection and the indexed ids (no vectors)

The manifest's ``index.kind`` names the index. ``hnsw-pca``, the default above 256 dimensions,
is a graph over a PCA projection of the vectors (``project_dim``, fitted once ``min_fit`` items
are in; search is exact until then) whose candidates are re-scored from ``vectors.f16``, so
the vectors are stored once. ``hnsw``, the default at 256 dimensions or fewer and the kind of
collections made before ``hnsw-pca``, is a graph over the full vectors. Every index file is
written to a temp file and renamed, and a graph is never paired with a projection it was not
built with.

Adding is incremental and resumable. Each batch is made durable in two steps: its vectors are
appended and fsync'ed, then its catalog rows (with the new row count) are committed in one
transaction. The catalog is the truth: vector rows past its count are the trace of a run killed
in between and are cut off; an index that lags the catalog (killed before it was saved, or
between two of its files) is brought up to date from the vectors. So a run killed at any moment
and run again ends with every file catalogued exactly once and an index that matches the
catalog.

>>> col = open_collection("photos.snoop", create=True)   # doctest: +SKIP
>>> col.add(["~/Pictures"])                                # doctest: +SKIP
>>> col.search(text="a red car", k=5)                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import CollectionError, EmbedderMismatchError, UsageError
from snoop_nb.index.base import atomic_write

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.embed.base import Embedder
    from snoop_nb.index import Index

FORMAT = "snoop-nb collection"
FORMAT_VERSION = 1
#: Below this many items, search is exact by default (it is fast and it is the truth).
EXACT_SEARCH_BELOW = 20_000
#: Save the HNSW index at least this often (seconds) during a long run.
INDEX_SAVE_EVERY = 300.0
#: New collections of more dimensions than this get an ``hnsw-pca`` index (``hnsw`` otherwise).
PROJECT_ABOVE_DIM = 256
INDEX_KINDS = ("hnsw", "hnsw-pca")

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id       INTEGER PRIMARY KEY,
    path     BLOB NOT NULL,           -- the file's exact path bytes (os.fsencode)
    uri      TEXT NOT NULL,           -- the same path, readable (undecodable bytes escaped)
    kind     TEXT NOT NULL DEFAULT 'image',
    video    TEXT,
    t_start  REAL,
    t_end    REAL,
    size     INTEGER,
    mtime_ns INTEGER,
    digest   TEXT,
    width    INTEGER,
    height   INTEGER,
    status   TEXT NOT NULL CHECK (status IN ('ok', 'error', 'deleted')),
    error    TEXT,
    meta     TEXT,                    -- JSON object: user metadata (e.g. folder labels)
    added    REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS items_live_path ON items(path) WHERE status != 'deleted';
CREATE INDEX IF NOT EXISTS items_status ON items(status);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def readable(path: str | os.PathLike) -> str:
    """A path as text that SQLite, JSON and terminals accept (undecodable bytes as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass
class AddReport:
    """What one :meth:`Collection.add` run did."""

    discovered: int = 0
    skipped: int = 0
    added: int = 0
    replaced: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"{self.added} added, {self.replaced} replaced, {self.skipped} unchanged, "
            f"{len(self.errors)} bad files, in {self.seconds:.1f} s"
        )


class Collection:
    """A searchable set of pictures stored in one directory.

    Open one with :func:`open_collection`. The embedder is loaded on first use (adding,
    searching by image or text), so opening a collection to read its catalog is instant.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], embedder: Embedder | None = None):
        self.root = root
        self.manifest = manifest
        self._embedder = embedder
        self._index: Index | None = None
        self._ok_ids: tuple[str, np.ndarray] | None = None
        self._vectors: tuple[tuple[int, int, int], np.ndarray] | None = None
        self._exact: tuple[str, Index] | None = None
        self._kb = None
        self._db = _connect(root / "catalog.sqlite")

    # --- basic facts --------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def embedder_id(self) -> str:
        return str(self.manifest["embedder"]["id"])

    @property
    def embedder(self) -> Embedder:
        """The collection's embedder, loaded on first use from the manifest."""
        if self._embedder is None:
            from snoop_nb.embed import load_embedder

            spec = self.manifest["embedder"]
            emb = load_embedder(spec.get("name"), spec.get("pretrained"), device="auto")
            _check_same_embedder(self.root, self.manifest, emb)
            self._embedder = emb
        return self._embedder

    def __len__(self) -> int:
        return int(self.ok_ids().size)

    def is_live(self, ids) -> np.ndarray:
        """A boolean mask: which of ``ids`` are live items (binary search in the cached ids)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        live = self.ok_ids()
        if live.size == 0:
            return np.zeros(ids.size, bool)
        pos = np.minimum(np.searchsorted(live, ids), live.size - 1)
        return live[pos] == ids

    def __repr__(self) -> str:
        return f"<Collection {self.root} items={len(self)} embedder={self.embedder_id}>"

    def close(self) -> None:
        if self._kb is not None:
            self._kb.close()
        self._db.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- vectors ------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Vector rows the catalog vouches for (rows past it are an interrupted run's)."""
        row = self._db.execute("SELECT value FROM state WHERE key = 'rows'").fetchone()
        return int(row[0]) if row else 0

    @property
    def vectors(self) -> np.ndarray:
        """All vector rows as a read-only float16 memory map (row i = item id i)."""
        n = self.rows
        path = self.root / "vectors.f16"
        if n == 0:
            return np.zeros((0, self.dim), np.float16)
        st = path.stat() if path.exists() else None
        have = st.st_size if st else 0
        if have < n * self.dim * 2:
            raise CollectionError(
                f"{path} holds {have // (2 * self.dim)} rows but the catalog has {n}: "
                "the collection is damaged (was vectors.f16 replaced?); re-index it"
            )
        # One map per (rows, file): a new map faults every page in again on its first scan
        # (about 15 ms per 100k rows), so it is kept while the catalog and the file stay put.
        key = (n, st.st_ino, st.st_dev)
        if self._vectors is None or self._vectors[0] != key:
            mm = np.memmap(path, dtype=np.float16, mode="r", shape=(n, self.dim))
            self._vectors = (key, mm)
        return self._vectors[1]

    def _vector_rows(self, rows: np.ndarray) -> np.ndarray:
        """float16 rows by number: the store the ``hnsw-pca`` index re-scores from. Rows never
        change once committed, so the memory map at hand serves every row it holds; a new one
        is taken only for rows past it (this keeps the catalog out of each search)."""
        held = self._vectors
        if held is None or (rows.size and int(rows.max()) >= len(held[1])):
            return self.vectors[rows]
        return held[1][rows]

    def vectors_of(self, ids: Iterable[int]) -> np.ndarray:
        """The vectors of ``ids`` as float32 rows."""
        ids = np.asarray(list(ids), dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.rows):
            raise UsageError(
                f"no item with id {int(ids.max() if ids.max() >= self.rows else ids.min())}"
            )
        return np.asarray(self.vectors[ids], dtype=np.float32)

    # --- catalog queries ----------------------------------------------------------------
    def ok_ids(self) -> np.ndarray:
        """Ids of the items that have a vector, sorted (cached until the items change)."""
        gen = self._generation()
        if self._ok_ids is None or self._ok_ids[0] != gen:
            rows = self._db.execute(
                "SELECT id FROM items WHERE status = 'ok' ORDER BY id"
            ).fetchall()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            ids.flags.writeable = False
            self._ok_ids = (gen, ids)
        return self._ok_ids[1]

    def _generation(self) -> str:
        """Changes whenever items are added, replaced or removed (by any process)."""
        row = self._db.execute("SELECT value FROM state WHERE key = 'generation'").fetchone()
        return row[0] if row else "0"

    def _bump_generation(self) -> None:
        """Inside a write transaction: mark the items as changed."""
        self._db.execute(
            "INSERT INTO state (key, value) VALUES ('generation', '1') ON CONFLICT(key) "
            "DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
        )

    @property
    def kb(self):
        """The knowledge base (users, classes, labels, models) kept in this catalog."""
        if self._kb is None:
            from snoop_nb.kb import KnowledgeBase

            self._kb = KnowledgeBase(self.root / "catalog.sqlite")
        return self._kb

    def session(self, user: str, class_name: str, **options: Any):
        """A relevance-feedback session on ``user``'s class ``class_name`` (created if new).

        >>> s = col.session("alice", "lighthouses")   # doctest: +SKIP
        """
        from snoop_nb.learn import FeedbackSession

        return FeedbackSession(self, user, class_name, **options)

    def items(self, ids: Iterable[int] | None = None, *, status: str | None = "ok") -> pd.DataFrame:
        """The catalog as a DataFrame: one row per item, metadata keys as extra columns."""
        import pandas as pd

        cols = (
            "id, uri, kind, video, t_start, t_end, size, width, height, digest, status, error, meta"
        )
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if ids is not None:
            id_list = [int(i) for i in ids]
            where.append("id IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(id_list))
        sql = f"SELECT {cols} FROM items" + (" WHERE " + " AND ".join(where) if where else "")
        df = pd.read_sql_query(sql + " ORDER BY id", self._db, params=args)
        return _expand_meta(df)

    def item(self, item_id: int) -> dict[str, Any]:
        """One item's catalog row as a dict (raises UsageError for an unknown id)."""
        df = self.items([item_id], status=None)
        if df.empty:
            raise UsageError(f"no item with id {item_id}")
        return df.iloc[0].to_dict()

    def paths(self, ids: Iterable[int]) -> dict[int, Path]:
        """The source file of each known item, by id (the exact path, undecodable bytes kept)."""
        id_list = [int(i) for i in ids]
        rows = self._db.execute(
            "SELECT id, path FROM items WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(id_list),),
        ).fetchall()
        return {int(i): Path(os.fsdecode(bytes(p))) for i, p in rows}

    def errors(self) -> list[dict[str, str]]:
        """The files that could not be read: ``[{"uri": ..., "reason": ...}]``."""
        rows = self._db.execute(
            "SELECT uri, error FROM items WHERE status = 'error' ORDER BY id"
        ).fetchall()
        return [{"uri": u, "reason": e} for u, e in rows]

    def info(self) -> dict[str, Any]:
        """A summary: counts, errors, model, dimension, index (what ``snoop info`` prints)."""
        emb = self.manifest["embedder"]
        files = [self.root / name for name in ("index.hnsw", "index.hnsw.npz")]
        return {
            "path": str(self.root),
            "items": len(self),
            "errors": self.errors(),
            "model": emb.get("name"),
            "embedder": emb.get("id"),
            "pretrained": emb.get("pretrained"),
            "dim": self.dim,
            "metric": self.manifest.get("metric", "cosine"),
            "index": {
                "kind": "hnsw",  # manifests that name no kind predate hnsw-pca
                **self.manifest.get("index", {}),
                "bytes": sum(f.stat().st_size for f in files if f.exists()),
            },
            "vectors_bytes": self.rows * self.dim * 2,
            "format_version": self.manifest.get("version"),
        }

    def set_meta(self, ids: Iterable[int], **values: Any) -> None:
        """Merge ``values`` into the metadata of ``ids`` (one transaction)."""
        patch = json.dumps(values)
        with self._db:
            self._db.executemany(
                "UPDATE items SET meta = json_patch(coalesce(meta, '{}'), ?) WHERE id = ?",
                [(patch, int(i)) for i in ids],
            )

    # --- adding -------------------------------------------------------------------------
    def add(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        batch_size: int = 32,
        workers: int | None = None,
        progress: bool | None = None,
        meta: Callable[[Path], dict[str, Any]] | None = None,
        update_index: bool = True,
    ) -> AddReport:
        """Add the pictures found under ``paths``; files already here and unchanged are skipped.

        Bad files are recorded (see :meth:`errors`) and never stop the run. ``meta(path)``
        may give each new item metadata (e.g. labels from folder names). Safe to interrupt:
        run it again to finish.
        """
        from snoop_nb.embed.pipeline import embed_stream
        from snoop_nb.media import discover_images

        start = time.monotonic()
        report = AddReport()
        with self._writer_lock():
            self._trim_vectors()
            todo, stats, old_ids = self._plan(discover_images(paths), report)
            embedder = self.embedder
            last_save = time.monotonic()
            with open(self.root / "vectors.f16", "ab") as vec_file:
                for batch in embed_stream(
                    embedder, todo, batch_size=batch_size, workers=workers, progress=progress
                ):
                    self._commit_batch(vec_file, todo, stats, batch, old_ids, meta, report)
                    if update_index and time.monotonic() - last_save > INDEX_SAVE_EVERY:
                        self.sync_index(save=True)
                        last_save = time.monotonic()
            if update_index:
                self.sync_index(save=True)
        report.seconds = time.monotonic() - start
        return report

    def remove(self, ids: Iterable[int]) -> int:
        """Mark items deleted (their rows stay; the index forgets them). Returns how many."""
        id_list = [int(i) for i in ids]
        with self._writer_lock():
            with self._db:
                cur = self._db.executemany(
                    "UPDATE items SET status = 'deleted' WHERE id = ? AND status != 'deleted'",
                    [(i,) for i in id_list],
                )
                self._bump_generation()
            self.sync_index(save=True)
        return cur.rowcount

    def _plan(
        self, found: Iterator[Path], report: AddReport
    ) -> tuple[list[Path], list[tuple[int | None, int | None]], dict[bytes, int]]:
        """Which discovered files need embedding, their (size, mtime) before reading, and the
        live item each one replaces. Stats taken before reading mean that a file changed while
        it is being embedded is caught as changed by the next run."""
        known = {
            bytes(p): (i, size, mtime)
            for i, p, size, mtime in self._db.execute(
                "SELECT id, path, size, mtime_ns FROM items WHERE status != 'deleted'"
            )
        }
        todo: list[Path] = []
        stats: list[tuple[int | None, int | None]] = []
        old_ids: dict[bytes, int] = {}
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
                if hit[1] == size and hit[2] == mtime:
                    report.skipped += 1
                    continue
                old_ids[key] = hit[0]
            todo.append(p)
            stats.append((size, mtime))
        return todo, stats, old_ids

    def _commit_batch(self, vec_file, todo, stats, batch, old_ids, meta, report) -> None:
        """Append one batch's vectors durably, then catalogue it in one transaction."""
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
        first = self.rows
        block = np.zeros((len(entries), self.dim), np.float16)
        for row, (_, status, _, vec) in enumerate(entries):
            if status == "ok":
                block[row] = vec
        vec_file.write(block.tobytes())
        vec_file.flush()
        os.fsync(vec_file.fileno())
        now = time.time()
        records = []
        for row, (i, status, what, _) in enumerate(entries):
            path = todo[i]
            size, mtime = stats[i]
            item_meta = meta(path) if (meta is not None and status == "ok") else None
            records.append(
                (
                    first + row,
                    os.fsencode(path),
                    readable(path),
                    size,
                    mtime,
                    what.digest if status == "ok" else None,
                    what.width if status == "ok" else None,
                    what.height if status == "ok" else None,
                    status,
                    what.reason if status == "error" else None,
                    json.dumps(item_meta) if item_meta else None,
                    now,
                )
            )
            if status == "error":
                report.errors.append((readable(path), what.reason))
        replaced = [(old_ids[r[1]],) for r in records if r[1] in old_ids]
        with self._db:
            self._db.executemany("UPDATE items SET status = 'deleted' WHERE id = ?", replaced)
            self._db.executemany(
                "INSERT INTO items (id, path, uri, size, mtime_ns, digest, width, height, "
                "status, error, meta, added) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                records,
            )
            self._db.execute(
                "INSERT OR REPLACE INTO state (key, value) VALUES ('rows', ?)",
                (str(first + len(entries)),),
            )
            self._bump_generation()
        report.replaced += len(replaced)
        report.added += sum(1 for e in entries if e[1] == "ok")

    def _trim_vectors(self) -> None:
        """Cut vector rows the catalog does not vouch for (an interrupted batch)."""
        path = self.root / "vectors.f16"
        want = self.rows * self.dim * 2
        have = path.stat().st_size if path.exists() else 0
        if have > want:
            os.truncate(path, want)
        elif have < want:
            raise CollectionError(
                f"{path} is shorter than the catalog says ({have} < {want} bytes): "
                "the collection is damaged; re-index it into a new directory"
            )

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """One writer at a time; a second one gets a clear error instead of a corrupt file."""
        fd = os.open(self.root / ".writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CollectionError(
                    f"{self.root} is being modified by another process; wait for it to finish"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # --- index --------------------------------------------------------------------------
    @property
    def index(self) -> Index:
        """The HNSW index, loaded on first use and brought in line with the catalog."""
        if self._index is None:
            self.sync_index(save=False)
        assert self._index is not None
        return self._index

    def exact_index(self) -> Index:
        """An exact index over the live vectors, kept until the items change (it converts the
        vectors to float32 once, on its first search, when they fit its cache)."""
        from snoop_nb.index import ExactIndex

        gen = self._generation()
        if self._exact is None or self._exact[0] != gen:
            ids = self.ok_ids()
            vecs = self.vectors
            # no gaps: score the memory map in place; else gather the live rows
            rows = vecs if ids.size == len(vecs) else np.asarray(vecs[ids])
            self._exact = (gen, ExactIndex.from_arrays(ids, rows))
        return self._exact[1]

    def sync_index(self, *, save: bool = True) -> Index:
        """Make the index hold exactly the catalog's live items; save it if asked.

        The manifest's ``index`` entry chooses the kind and its parameters (see the module
        docstring); saved files are loaded, and rebuilt when they cannot be read.
        """
        path = self.root / "index.hnsw"
        params = {"kind": "hnsw", **self.manifest.get("index", {})}
        kind = params["kind"]
        if kind not in INDEX_KINDS:
            raise CollectionError(
                f"{self.root}: unknown index kind {kind!r} in manifest.json (this snoop-nb "
                f"knows {', '.join(INDEX_KINDS)}); upgrade snoop-nb or fix the manifest"
            )
        # the file every save of this kind writes
        saved = path.with_name(path.name + ".npz") if kind == "hnsw-pca" else path
        index = self._index
        if index is None and saved.exists():
            try:
                index = self._load_index(kind, path)
            except (OSError, RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as e:
                import warnings

                warnings.warn(f"rebuilding unreadable index {path}: {e}", stacklevel=2)
                index = None
        if index is None or index.dim != self.dim or index.kind != kind:
            index = self._new_index(params)
        live = self.ok_ids()
        have = index.ids()
        missing = np.setdiff1d(live, have, assume_unique=True)
        extra = np.setdiff1d(have, live, assume_unique=True)
        changed = bool(missing.size or extra.size)
        if extra.size:
            index.remove(extra)
        if missing.size:
            vecs = self.vectors
            for start in range(0, missing.size, 65536):
                chunk = missing[start : start + 65536]
                index.add(chunk, np.asarray(vecs[chunk], dtype=np.float32))
        if save and (changed or not saved.exists() or index.repaired_on_load):
            index.save(path)
        self._index = index
        return index

    def _new_index(self, params: dict[str, Any]) -> Index:
        from snoop_nb.index import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M, HNSWIndex
        from snoop_nb.index.projected import (
            DEFAULT_FIT_SAMPLE,
            DEFAULT_MIN_FIT,
            DEFAULT_PROJECT_DIM,
            ProjectedIndex,
        )

        graph = {
            "M": params.get("M", DEFAULT_M),
            "ef_construction": params.get("ef_construction", DEFAULT_EF_CONSTRUCTION),
            "ef": params.get("ef", DEFAULT_EF),
        }
        if params["kind"] == "hnsw":
            return HNSWIndex(self.dim, **graph)
        return ProjectedIndex(
            self.dim,
            project_dim=params.get("project_dim", DEFAULT_PROJECT_DIM),
            min_fit=params.get("min_fit", DEFAULT_MIN_FIT),
            fit_sample=params.get("fit_sample", DEFAULT_FIT_SAMPLE),
            vectors=self._vector_rows,
            **graph,
        )

    def _load_index(self, kind: str, path: Path) -> Index:
        from snoop_nb.index import HNSWIndex, ProjectedIndex

        if kind == "hnsw":
            return HNSWIndex.load(path)
        return ProjectedIndex.load(path, vectors=self._vector_rows)

    # --- search -------------------------------------------------------------------------
    def search(
        self,
        *,
        item: int | None = None,
        image: Any = None,
        text: str | None = None,
        vector: Any = None,
        k: int = 10,
        exact: bool | None = None,
    ) -> pd.DataFrame:
        """Nearest items to one query: an item id, an image, a text or a vector.

        Returns a DataFrame with columns rank, id, uri, score, kind, width, height, ...,
        and the items' metadata. ``exact=None`` searches exactly below
        :data:`EXACT_SEARCH_BELOW` items and through HNSW above.

        >>> col.search(text="a bird", k=5)   # doctest: +SKIP
        """
        from snoop_nb import search

        return search.search(
            self, item=item, image=image, text=text, vector=vector, k=k, exact=exact
        )


# --- opening and creating -------------------------------------------------------------------
def open_collection(
    path: str | os.PathLike,
    *,
    create: bool = False,
    model: str | None = None,
    pretrained: str | None = None,
    device: str = "auto",
    embedder: Embedder | None = None,
    index_params: dict[str, Any] | None = None,
) -> Collection:
    """Open the collection in ``path``; with ``create=True`` make it if it does not exist.

    ``model``/``pretrained`` (or a ready ``embedder``) choose the embedder of a new collection;
    for an existing one they must name the embedder it was built with, or
    :class:`~snoop_nb.errors.EmbedderMismatchError` is raised. ``index_params`` override the
    new collection's index entry in its manifest: ``kind`` (``"hnsw-pca"`` above
    :data:`PROJECT_ABOVE_DIM` dimensions, else ``"hnsw"``), ``M``, ``ef_construction``, ``ef``,
    and for ``hnsw-pca`` ``project_dim`` (256) and ``min_fit`` (1024 items).

    >>> open_collection("small.snoop", create=True, index_params={"min_fit": 100})  # doctest: +SKIP
    """
    root = Path(path).expanduser().absolute()
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        manifest = _read_manifest(manifest_path)
        spec = manifest["embedder"]
        if embedder is not None:
            _check_same_embedder(root, manifest, embedder)
        elif model is not None or pretrained is not None:
            from snoop_nb.embed import DEFAULT_MODEL

            want, have = model or DEFAULT_MODEL, spec.get("name") or DEFAULT_MODEL
            if want != have:
                raise EmbedderMismatchError(
                    f"{root} was built with model {have} ({spec.get('id')}), not {want}: "
                    "vectors of two models cannot be mixed; use another collection directory"
                )
            # same model: the weights decide (a copy of the same file elsewhere is fine)
            from snoop_nb.embed import load_embedder

            embedder = load_embedder(model, pretrained, device=device)
            _check_same_embedder(root, manifest, embedder)
        elif device != "auto":
            from snoop_nb.embed import load_embedder

            embedder = load_embedder(spec.get("name"), spec.get("pretrained"), device=device)
            _check_same_embedder(root, manifest, embedder)
        return Collection(root, manifest, embedder)
    if not create:
        if root.exists() and any(root.iterdir()):
            raise CollectionError(f"{root} is not a snoop-nb collection (no manifest.json)")
        raise CollectionError(
            f"no collection at {root}: create one with `snoop index PATH --collection {root}`"
        )
    if root.exists() and not root.is_dir():
        raise CollectionError(f"{root} exists and is not a directory")
    if root.exists() and any(p.name not in _OWN_FILES for p in root.iterdir()):
        raise CollectionError(f"{root} is not empty and not a snoop-nb collection")
    if embedder is None:
        from snoop_nb.embed import load_embedder

        embedder = load_embedder(model, pretrained, device=device)
    index = _index_entry(embedder.dim, index_params or {})
    root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "embedder": embedder.describe(),
        "dim": embedder.dim,
        "metric": "cosine",
        "dtype": "float16",
        "index": index,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # A half-made collection (killed before the manifest was written) holds no committed
    # batch: start its catalog and vectors afresh, then write the manifest last.
    for leftover in _OWN_FILES - {".writer.lock"}:
        (root / leftover).unlink(missing_ok=True)
    _connect(root / "catalog.sqlite").close()
    (root / "vectors.f16").touch()
    atomic_write(manifest_path, lambda t: Path(t).write_text(json.dumps(manifest, indent=2)))
    return Collection(root, manifest, embedder)


def _index_entry(dim: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """A new collection's manifest ``index`` entry: the defaults for ``dim``, then ``overrides``."""
    from snoop_nb.index import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M
    from snoop_nb.index.projected import DEFAULT_MIN_FIT, DEFAULT_PROJECT_DIM

    kind = overrides.get("kind", "hnsw-pca" if dim > PROJECT_ABOVE_DIM else "hnsw")
    if kind not in INDEX_KINDS:
        raise UsageError(f"unknown index kind {kind!r}: use one of {', '.join(INDEX_KINDS)}")
    entry: dict[str, Any] = {"kind": kind}
    if kind == "hnsw-pca":
        entry.update(project_dim=DEFAULT_PROJECT_DIM, min_fit=DEFAULT_MIN_FIT)
    entry.update(M=DEFAULT_M, ef_construction=DEFAULT_EF_CONSTRUCTION, ef=DEFAULT_EF)
    entry.update(overrides)
    if kind == "hnsw-pca" and not 0 < int(entry["project_dim"]) < dim:
        raise UsageError(
            f"project_dim must be between 1 and {dim - 1} for {dim}-d vectors, "
            f"not {entry['project_dim']}; or use index kind 'hnsw'"
        )
    return entry


#: What a half-made collection (killed before its manifest was written) may hold.
_OWN_FILES = frozenset(
    {"catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm", ".writer.lock", "vectors.f16"}
)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CollectionError(f"cannot read {path}: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CollectionError(f"{path} is not a snoop-nb collection manifest")
    if int(manifest.get("version", 0)) > FORMAT_VERSION:
        raise CollectionError(
            f"{path.parent} was written by a newer snoop-nb (format {manifest['version']}); "
            "upgrade snoop-nb to open it"
        )
    return manifest


def _check_same_embedder(root: Path, manifest: dict[str, Any], embedder: Embedder) -> None:
    have = manifest["embedder"]["id"]
    if embedder.id != have or embedder.dim != int(manifest["dim"]):
        raise EmbedderMismatchError(
            f"{root} was built with embedder {have} (dim {manifest['dim']}), not "
            f"{embedder.id} (dim {embedder.dim}): vectors of two models cannot be mixed; "
            "use another collection directory"
        )


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30.0, isolation_level="DEFERRED", check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(SCHEMA)
    return db


def _expand_meta(df: pd.DataFrame) -> pd.DataFrame:
    """Turn the JSON ``meta`` column into one column per key (absent keys are missing)."""
    import pandas as pd

    metas = [json.loads(m) if isinstance(m, str) and m else {} for m in df.pop("meta")]
    if any(metas):
        extra = pd.DataFrame(metas, index=df.index)
        extra = extra[[c for c in extra.columns if c not in df.columns]]
        df = pd.concat([df, extra], axis=1)
    return df
