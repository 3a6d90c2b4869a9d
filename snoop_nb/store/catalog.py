"""The catalog: one SQLite file (WAL mode) holding a row per item and a little state.

``items`` has one row per file ever seen (ids are vector rows, so a replaced or removed item keeps
its row, marked ``deleted``); a video's keyframes are items too (``kind = 'keyframe'``), and
``videos`` has a row per video file (see :mod:`snoop_nb.store.videos`). ``state`` holds ``rows``
(the vector rows the catalog vouches for) and ``generation`` (bumped by every change to the
items, by any process: readers compare it to know whether what they hold is current). The knowledge base keeps its tables in the same file.

Each thread gets its own connection: a UI's thumbnail and warm-up threads read the catalog
while the kernel's thread searches or adds, and one SQLite connection must not be shared.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import CollectionError, UsageError

if TYPE_CHECKING:
    import pandas as pd

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
CREATE TABLE IF NOT EXISTS videos (
    id       INTEGER PRIMARY KEY,
    path     BLOB NOT NULL,           -- the video file's exact path bytes
    uri      TEXT NOT NULL,           -- the same path, readable
    size     INTEGER,
    mtime_ns INTEGER,
    duration REAL,                    -- seconds
    fps      REAL,
    width    INTEGER,                 -- as displayed (rotation applied)
    height   INTEGER,
    codec    TEXT,
    audio    INTEGER,
    rotation INTEGER,
    detector TEXT,                    -- the shot detector that ran
    shots    TEXT,                    -- JSON list of {start, end, keyframes}
    status   TEXT NOT NULL CHECK (status IN ('ok', 'error', 'deleted')),
    error    TEXT,
    warning  TEXT,                    -- e.g. a truncated file's "decoded up to ..."
    meta     TEXT,                    -- JSON object: sidecar fields (channel, date, title, ...)
    added    REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS videos_live_path ON videos(path) WHERE status != 'deleted';
"""

#: The columns an item row is inserted with, in order (see :meth:`Catalog.commit`).
ITEM_COLUMNS = (
    "id",
    "path",
    "uri",
    "kind",
    "video",
    "t_start",
    "t_end",
    "size",
    "mtime_ns",
    "digest",
    "width",
    "height",
    "status",
    "error",
    "meta",
    "added",
)


#: A catalog key that is a URL (``scheme://...``), not a file path.
_URL_KEY = re.compile(rb"^[A-Za-z][A-Za-z0-9+.-]*://")


def readable(path: str | bytes | os.PathLike) -> str:
    """A path as text that SQLite, JSON and terminals accept (undecodable bytes as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def connect(path: Path, *, schema: bool = True) -> sqlite3.Connection:
    """A connection in WAL mode with full syncs; ``schema`` creates the tables if missing."""
    db = sqlite3.connect(path, timeout=30.0, isolation_level="DEFERRED", check_same_thread=False)
    if schema:
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    if schema:
        db.executescript(SCHEMA)
    return db


def work_in(path: Path) -> dict[str, int]:
    """Rows of people's work in a catalog file, by table (items and knowledge-base tables; the
    bookkeeping ``state`` table is not work).

    The file is left exactly as it is: even a read-only SQLite connection makes ``-wal`` and
    ``-shm`` files beside a WAL database, so a copy (with its write-ahead log, which may hold
    committed labels) is read instead. Raises :class:`CollectionError` when it is not a
    readable SQLite database.
    """
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="snoop-check-") as tmp:
        copy = Path(tmp) / path.name
        try:
            shutil.copyfile(path, copy)
            wal = path.with_name(path.name + "-wal")
            if wal.exists():
                shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
            db = sqlite3.connect(copy, timeout=30.0)
            try:
                tables = [
                    r[0]
                    for r in db.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%' AND name != 'state'"
                    )
                ]
                counts = {
                    t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables
                }
            finally:
                db.close()
        except (OSError, sqlite3.Error) as e:
            raise CollectionError(f"{path} cannot be read as a catalog ({e})") from e
    return {t: n for t, n in counts.items() if n}


class Catalog:
    """The items and state tables of one collection, with a connection per thread.

    >>> cat = Catalog(Path("photos.snoop/catalog.sqlite"))   # doctest: +SKIP
    >>> cat.ok_ids()                                          # doctest: +SKIP
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self._all: dict[int, tuple[threading.Thread, sqlite3.Connection]] = {}
        self._all_lock = threading.Lock()
        self._closed = False
        self._ok: tuple[str, np.ndarray] | None = None
        self._local.db = self._open()  # the opening thread's connection also makes the schema

    # --- connections --------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        first = not self._all
        db = connect(self.path, schema=first)
        with self._all_lock:
            # forget (and close) the connections of threads that have ended
            for ident, (thread, old) in list(self._all.items()):
                if not thread.is_alive():
                    del self._all[ident]
                    old.close()
            self._all[id(db)] = (threading.current_thread(), db)
        return db

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection (opened on its first use)."""
        db = getattr(self._local, "db", None)
        if db is None:
            if self._closed:
                raise CollectionError(f"{self.path.parent} is closed; open it again")
            db = self._local.db = self._open()
        return db

    def close(self) -> None:
        """Close every thread's connection."""
        self._closed = True
        with self._all_lock:
            for _, db in self._all.values():
                db.close()
            self._all.clear()
        self._local = threading.local()

    # --- state --------------------------------------------------------------------------
    def _state(self, key: str, default: str) -> str:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def rows(self) -> int:
        """Vector rows the catalog vouches for (rows past it are an interrupted run's)."""
        return int(self._state("rows", "0"))

    def generation(self) -> str:
        """Changes whenever items are added, replaced or removed (by any process)."""
        return self._state("generation", "0")

    @staticmethod
    def _bump_generation(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO state (key, value) VALUES ('generation', '1') ON CONFLICT(key) "
            "DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
        )

    # --- reading ------------------------------------------------------------------------
    def live(self) -> tuple[str, np.ndarray]:
        """``(generation, ids)``: the sorted ids of the items that have a vector, and the
        generation they are at least as new as (it is read first, so a reader that keys a cache
        on it refreshes too often at worst, never too rarely)."""
        gen = self.generation()
        held = self._ok
        if held is None or held[0] != gen:
            rows = self.db.execute(
                "SELECT id FROM items WHERE status = 'ok' ORDER BY id"
            ).fetchall()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            ids.flags.writeable = False
            held = self._ok = (gen, ids)
        return held

    def ok_ids(self) -> np.ndarray:
        """Ids of the items that have a vector, sorted (cached until the items change)."""
        return self.live()[1]

    def items(self, ids: Iterable[int] | None = None, *, status: str | None = "ok") -> pd.DataFrame:
        """The items as a DataFrame: one row per item, metadata keys as extra columns."""
        import pandas as pd

        cols = (
            "id, uri, kind, video, t_start, t_end, size, width, height, digest, status, error, meta"
        )
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if ids is not None:
            where.append("id IN (SELECT value FROM json_each(?))")
            args.append(json.dumps([int(i) for i in ids]))
        sql = f"SELECT {cols} FROM items" + (" WHERE " + " AND ".join(where) if where else "")
        df = pd.read_sql_query(sql + " ORDER BY id", self.db, params=args)
        return expand_meta(df)

    def paths(self, ids: Iterable[int]) -> dict[int, Path]:
        """The source file of each known item, by id (the exact path, undecodable bytes kept;
        for an item keyed by a URL, its copy in the collection's cache)."""
        from snoop_nb.sources.fetch import CACHE_DIR, cache_file

        rows = self.db.execute(
            "SELECT id, path FROM items WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps([int(i) for i in ids]),),
        ).fetchall()
        cache = self.path.parent / CACHE_DIR
        out = {}
        for i, p in rows:
            key = bytes(p)
            if _URL_KEY.match(key):
                out[int(i)] = cache_file(cache, key.decode("utf-8", "surrogateescape"))
            else:
                out[int(i)] = Path(os.fsdecode(key))
        return out

    def errors(self) -> list[dict[str, str]]:
        """The files that could not be read: ``[{"uri": ..., "reason": ...}]`` (pictures, then
        videos)."""
        rows = self.db.execute(
            "SELECT uri, error FROM items WHERE status = 'error' ORDER BY id"
        ).fetchall()
        rows += self.db.execute(
            "SELECT uri, error FROM videos WHERE status = 'error' ORDER BY id"
        ).fetchall()
        return [{"uri": u, "reason": e} for u, e in rows]

    def known(self) -> dict[bytes, tuple[int, int | None, int | None, str]]:
        """Every item not deleted, by exact path: ``(id, size, mtime_ns, status)``."""
        return {
            bytes(p): (i, size, mtime, status)
            for i, p, size, mtime, status in self.db.execute(
                "SELECT id, path, size, mtime_ns, status FROM items WHERE status != 'deleted'"
            )
        }

    def ids_under(self, paths: Iterable[str | bytes | os.PathLike]) -> np.ndarray:
        """Sorted ids of the live items whose file is one of ``paths`` or lies under one of them
        (compared as exact path bytes, as the catalog holds them: give absolute paths); a
        video's path gives its keyframes."""
        found: set[int] = set()
        for p in paths:
            key = os.fsencode(p)
            if len(key) > 1:
                key = key.rstrip(b"/") or b"/"
            prefix = key if key.endswith(b"/") else key + b"/"
            moment = key + b"#t="  # a video's keyframes (snoop_nb.store.videos.keyframe_key)
            rows = self.db.execute(
                "SELECT id FROM items WHERE status = 'ok' AND (path = ? OR substr(path, 1, ?) = ? "
                "OR substr(path, 1, ?) = ?)",
                (key, len(prefix), prefix, len(moment), moment),
            )
            found.update(r[0] for r in rows)
        return np.array(sorted(found), dtype=np.int64)

    # --- writing ------------------------------------------------------------------------
    def set_meta(self, ids: Iterable[int], values: dict[str, Any]) -> None:
        """Merge ``values`` into the metadata of ``ids`` (one transaction)."""
        patch = json.dumps(values)
        db = self.db
        with db:
            db.executemany(
                "UPDATE items SET meta = json_patch(coalesce(meta, '{}'), ?) WHERE id = ?",
                [(patch, int(i)) for i in ids],
            )

    def patch_meta(self, changes: Iterable[tuple[bytes, dict[str, Any]]]) -> int:
        """Merge each ``(path key, values)`` into the metadata of that live item, in one
        transaction; returns how many items it changed (an unchanged one is not counted)."""
        db = self.db
        before = db.total_changes
        with db:
            db.executemany(
                "UPDATE items SET meta = json_patch(coalesce(meta, '{}'), ?1) "
                "WHERE path = ?2 AND status = 'ok' "
                "AND json(coalesce(meta, '{}')) != json_patch(coalesce(meta, '{}'), ?1)",
                [(json.dumps(values), bytes(key)) for key, values in changes if values],
            )
        return db.total_changes - before

    def commit(
        self,
        records: Sequence[tuple],
        *,
        rows: int,
        deleted: Sequence[int] = (),
        updated: Sequence[tuple] = (),
    ) -> None:
        """In one transaction: mark ``deleted`` ids deleted, insert ``records`` (tuples in the
        order of :data:`ITEM_COLUMNS`), apply ``updated`` ``(error, size, mtime_ns, added, id)``
        to rows that failed again, and set the vouched-for row count to ``rows``."""
        db = self.db
        marks = ",".join("?" * len(ITEM_COLUMNS))
        with db:
            db.executemany(
                "UPDATE items SET status = 'deleted' WHERE id = ?", [(int(i),) for i in deleted]
            )
            db.executemany(
                f"INSERT INTO items ({', '.join(ITEM_COLUMNS)}) VALUES ({marks})", records
            )
            db.executemany(
                "UPDATE items SET error = ?, size = ?, mtime_ns = ?, added = ? WHERE id = ?",
                updated,
            )
            db.execute(
                "INSERT OR REPLACE INTO state (key, value) VALUES ('rows', ?)", (str(int(rows)),)
            )
            self._bump_generation(db)

    def mark_deleted(self, ids: Iterable[int]) -> int:
        """Mark items deleted (their rows stay). Returns how many were live before."""
        db = self.db
        with db:
            cur = db.executemany(
                "UPDATE items SET status = 'deleted' WHERE id = ? AND status != 'deleted'",
                [(int(i),) for i in ids],
            )
            self._bump_generation(db)
        return cur.rowcount


def check_ids(ids: Iterable[int], rows: int) -> np.ndarray:
    """``ids`` as int64, each a row below ``rows`` (else a :class:`UsageError` naming one)."""
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
    arr = arr.reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= rows):
        bad = int(arr.max() if arr.max() >= rows else arr.min())
        raise UsageError(f"no item with id {bad}")
    return arr


def expand_meta(df: pd.DataFrame) -> pd.DataFrame:
    """Turn the JSON ``meta`` column into one column per key (absent keys are missing)."""
    import pandas as pd

    metas = [json.loads(m) if isinstance(m, str) and m else {} for m in df.pop("meta")]
    if any(metas):
        extra = pd.DataFrame(metas, index=df.index)
        extra = extra[[c for c in extra.columns if c not in df.columns]]
        df = pd.concat([df, extra], axis=1)
    return df
