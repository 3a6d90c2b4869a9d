"""Videos in a collection: the ``videos`` table, its keyframe items, and the CSV sidecar.

A video is one row of ``videos`` (its file's stats, what :func:`~snoop_nb.media.video.probe`
found, its shots as JSON, a status and the sidecar's fields) and one item per keyframe:
``kind = 'keyframe'``, path ``<absolute video path>#t=<t:.3f>`` (a W3C media fragment),
``video`` = the video's uri, ``t_start``/``t_end`` = its shot's bounds, and ``meta`` = ``{"t",
"shot", "video_id"}`` plus the sidecar's fields, so results carry them with no join.

A video and all its keyframes are written in one transaction (:meth:`Videos.commit`), after
the keyframes' vectors are fsync'ed: a run killed mid-video leaves nothing of it, and a
changed video's old keyframes are marked deleted in the same transaction as its new ones
come in.
"""

from __future__ import annotations

import csv
import json
import numbers
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snoop_nb.errors import UsageError
from snoop_nb.store.catalog import ITEM_COLUMNS, readable

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.store.catalog import Catalog

KEYFRAME_KIND = "keyframe"
#: Keys of a keyframe's ``meta`` that the catalog sets (a sidecar column of these names is ignored).
KEYFRAME_KEYS = ("t", "shot", "video_id")
#: Columns of ``videos`` filled from a probe and a shot report (see :meth:`Videos.commit`).
VIDEO_COLUMNS = (
    "size",
    "mtime_ns",
    "duration",
    "fps",
    "width",
    "height",
    "codec",
    "audio",
    "rotation",
    "detector",
    "shots",
    "status",
    "error",
    "warning",
    "meta",
    "added",
)
#: Columns of :meth:`Videos.frame` besides the sidecar fields.
FRAME_COLUMNS = (
    "id",
    "uri",
    "duration",
    "fps",
    "width",
    "height",
    "codec",
    "audio",
    "rotation",
    "detector",
    "shots",
    "keyframes",
    "size",
    "status",
    "error",
    "warning",
    "added",
)


def keyframe_key(video_key: bytes, t: float) -> bytes:
    """The catalog path of the keyframe at ``t`` seconds of the video at ``video_key``."""
    return video_key + b"#t=%.3f" % t


def _moments(video_key: bytes) -> tuple[bytes, bytes]:
    """A range of path bytes holding exactly the keyframes of ``video_key`` ('>' follows '=')."""
    return video_key + b"#t=", video_key + b"#t>"


def keyframe_meta(t: float, shot: int, video_id: int, sidecar: dict[str, Any] | None) -> dict:
    """A keyframe's ``meta``: the sidecar's fields, then its own (which win)."""
    meta = dict(sidecar or {})
    meta.update(t=float(t), shot=int(shot), video_id=int(video_id))
    return meta


class Videos:
    """The ``videos`` table of a catalog, and the keyframe items that belong to each row."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    # --- reading ------------------------------------------------------------------------
    def known(self) -> dict[bytes, tuple[int, int | None, int | None, str, dict[str, Any]]]:
        """Every video not deleted, by exact path: ``(id, size, mtime_ns, status, meta)``."""
        return {
            bytes(p): (i, size, mtime, status, json.loads(meta) if meta else {})
            for i, p, size, mtime, status, meta in self.catalog.db.execute(
                "SELECT id, path, size, mtime_ns, status, meta FROM videos "
                "WHERE status != 'deleted'"
            )
        }

    def frame(self, *, status: str | None = "ok") -> pd.DataFrame:
        """One row per video (``status=None``: every row), sidecar fields as extra columns;
        ``shots`` and ``keyframes`` are counts (see :meth:`shots` for the shots)."""
        import pandas as pd

        from snoop_nb.store.catalog import expand_meta

        where, args = "", []
        if status is not None:
            where, args = " WHERE v.status = ?", [status]
        sql = (
            "SELECT v.id, v.uri, v.duration, v.fps, v.width, v.height, v.codec, v.audio, "
            "v.rotation, v.detector, coalesce(json_array_length(v.shots), 0) AS shots, "
            "coalesce(k.n, 0) AS keyframes, "
            "v.size, v.status, v.error, v.warning, v.added, v.meta "
            "FROM videos v LEFT JOIN (SELECT video, count(*) AS n FROM items "
            "  WHERE status = 'ok' AND kind = 'keyframe' GROUP BY video) k ON k.video = v.uri"
            f"{where} ORDER BY v.id"
        )
        df = pd.read_sql_query(sql, self.catalog.db, params=args)
        df["audio"] = df["audio"].astype("boolean")
        return expand_meta(df)

    def row(self, video: int | str | os.PathLike) -> dict[str, Any]:
        """The live row of ``video`` (an id, a uri, a path, or a keyframe's uri); a
        :class:`UsageError` if there is none."""
        db = self.catalog.db
        cols = "id, path, uri, duration, shots, status, error, meta"
        hit = None
        if isinstance(video, numbers.Integral):
            hit = db.execute(
                f"SELECT {cols} FROM videos WHERE id = ? AND status != 'deleted'", (int(video),)
            ).fetchone()
        else:
            text = os.fspath(video)
            keys = [text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text]
            if isinstance(text, str) and "#t=" in text:
                keys.append(keys[0].rsplit(b"#t=", 1)[0])
            keys.append(os.fsencode(os.path.abspath(text)))
            for key in keys:
                hit = db.execute(
                    f"SELECT {cols} FROM videos WHERE (path = ? OR uri = ?) "
                    "AND status != 'deleted'",
                    (key, key.decode("utf-8", "backslashreplace")),
                ).fetchone()
                if hit:
                    break
        if hit is None:
            raise UsageError(f"no video {video!s} in this collection: see Collection.videos()")
        names = [c.strip() for c in cols.split(",")]
        out = dict(zip(names, hit, strict=True))
        out["path"] = bytes(out["path"])
        return out

    def path(self, video: int | str | os.PathLike) -> Path:
        """The video's file (the exact path, undecodable bytes kept)."""
        return Path(os.fsdecode(self.row(video)["path"]))

    def shots(self, video: int | str | os.PathLike) -> list[dict[str, Any]]:
        """The video's shots in time order: ``{"index", "start", "end", "keyframes": [t, ...],
        "ids": [item id of each keyframe, same order]}`` (ids of removed keyframes are left
        out)."""
        row = self.row(video)
        shots = json.loads(row["shots"]) if row["shots"] else []
        ids = {
            round(float(json.loads(m)["t"]), 3): i
            for i, m in self.catalog.db.execute(
                "SELECT id, meta FROM items WHERE status = 'ok' AND path >= ? AND path < ?",
                _moments(row["path"]),
            )
        }
        out = []
        for n, s in enumerate(shots):
            times = [float(t) for t in s.get("keyframes", [])]
            found = [ids.get(round(t, 3)) for t in times]
            out.append(
                {
                    "index": int(s.get("index", n)),
                    "start": float(s["start"]),
                    "end": float(s["end"]),
                    "keyframes": times,
                    "ids": [int(i) for i in found if i is not None],
                }
            )
        return out

    def totals(self) -> tuple[int, float]:
        """``(videos, hours)`` of the live videos."""
        n, seconds = self.catalog.db.execute(
            "SELECT count(*), coalesce(sum(duration), 0) FROM videos WHERE status = 'ok'"
        ).fetchone()
        return int(n), float(seconds) / 3600.0

    def keyframe_ids(self, video_key: bytes) -> list[int]:
        """Ids of the video's keyframe items not deleted."""
        return [
            r[0]
            for r in self.catalog.db.execute(
                "SELECT id FROM items WHERE status != 'deleted' AND path >= ? AND path < ?",
                _moments(video_key),
            )
        ]

    # --- writing ------------------------------------------------------------------------
    def commit(
        self,
        key: bytes,
        values: dict[str, Any],
        keyframes: Sequence[dict[str, Any]],
        *,
        rows: int,
        prior: int | None,
    ) -> tuple[int, list[int], list[int]]:
        """In one transaction: the video's row (``prior``'s, updated, or a new one), its
        keyframe items (dicts of item columns whose ``meta`` is a dict; their ``meta`` gets
        ``video_id`` here), the prior keyframes marked deleted, the vouched-for row count set
        to ``rows``. Returns ``(video id, new item ids, deleted item ids)``."""
        db = self.catalog.db
        now = time.time()
        values = dict(values, added=now)
        cols = [c for c in VIDEO_COLUMNS if c in values]
        marks = ",".join("?" * len(ITEM_COLUMNS))
        with db:
            deleted = self.keyframe_ids(key)
            db.executemany(
                "UPDATE items SET status = 'deleted' WHERE id = ?", [(i,) for i in deleted]
            )
            if prior is not None:
                sets = ", ".join(f"{c} = ?" for c in cols)
                db.execute(
                    f"UPDATE videos SET {sets} WHERE id = ?", [values[c] for c in cols] + [prior]
                )
                video_id = prior
            else:
                cur = db.execute(
                    f"INSERT INTO videos (path, uri, {', '.join(cols)}) "
                    f"VALUES (?, ?, {','.join('?' * len(cols))})",
                    [key, readable(key)] + [values[c] for c in cols],
                )
                video_id = int(cur.lastrowid)
            records = []
            for k in keyframes:
                k = dict(k, added=now, kind=KEYFRAME_KIND, status="ok")
                k["meta"] = json.dumps(dict(k.get("meta") or {}, video_id=video_id))
                records.append(tuple(k.get(c) for c in ITEM_COLUMNS))
            db.executemany(
                f"INSERT INTO items ({', '.join(ITEM_COLUMNS)}) VALUES ({marks})", records
            )
            db.execute(
                "INSERT OR REPLACE INTO state (key, value) VALUES ('rows', ?)", (str(int(rows)),)
            )
            self.catalog._bump_generation(db)
        return video_id, [int(r[0]) for r in records], deleted

    def update_meta(
        self, changes: Iterable[tuple[int, bytes, dict[str, Any], dict[str, Any]]]
    ) -> int:
        """Apply new sidecar fields: ``(video id, path, old fields, new fields)`` each. The
        video's ``meta`` becomes the new fields; each live keyframe loses the old fields and
        gains the new ones (keys set otherwise, such as labels or its own, are kept). One
        transaction; returns how many videos changed."""
        db = self.catalog.db
        n = 0
        with db:
            for video_id, key, old, new in changes:
                db.execute(
                    "UPDATE videos SET meta = ? WHERE id = ?",
                    (json.dumps(new) if new else None, video_id),
                )
                rows = db.execute(
                    "SELECT id, meta FROM items WHERE status != 'deleted' "
                    "AND path >= ? AND path < ?",
                    _moments(key),
                ).fetchall()
                updates = []
                for item_id, meta in rows:
                    was = json.loads(meta) if meta else {}
                    kept = {k: v for k, v in was.items() if k not in old or k in KEYFRAME_KEYS}
                    fresh = {k: v for k, v in new.items() if k not in KEYFRAME_KEYS}
                    updates.append((json.dumps({**kept, **fresh}), item_id))
                db.executemany("UPDATE items SET meta = ? WHERE id = ?", updates)
                n += 1
            if n:
                self.catalog._bump_generation(db)
        return n

    def remove(self, video: int | str | os.PathLike) -> list[int]:
        """Mark the video and its keyframes deleted (one transaction); returns the keyframe ids
        that were live. The next add of its file analyses it again."""
        row = self.row(video)
        db = self.catalog.db
        with db:
            ids = self.keyframe_ids(row["path"])
            db.executemany("UPDATE items SET status = 'deleted' WHERE id = ?", [(i,) for i in ids])
            db.execute("UPDATE videos SET status = 'deleted' WHERE id = ?", (row["id"],))
            self.catalog._bump_generation(db)
        return ids


# --- the CSV sidecar ---------------------------------------------------------------------------
def read_sidecar(path: str | os.PathLike) -> tuple[dict[bytes, dict[str, str]], list[str]]:
    """The fields of each video a CSV sidecar names, by exact path bytes, and its warnings.

    Its ``file`` column names the video, relative to the CSV's folder or absolute; every other
    column (``channel``, ``date``, ``title``, ...) is a field, kept as text; empty cells are left
    out. A file named twice keeps its last row (with a warning).

    >>> fields, warnings = read_sidecar("archive/videos.csv")   # doctest: +SKIP
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if "file" not in header:
                raise UsageError(
                    f"{path}: a metadata CSV needs a 'file' column naming each video (relative "
                    f"to the CSV's folder or absolute); its columns are {header or 'none'}"
                )
            rows = list(reader)
    except OSError as e:
        raise UsageError(f"{path}: cannot read the metadata CSV ({e.strerror or e})") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not a readable CSV file ({e})") from None
    folder = path.parent.absolute()
    out: dict[bytes, dict[str, str]] = {}
    warnings: list[str] = []
    for n, row in enumerate(rows, start=2):
        row = {(k or "").strip(): v for k, v in row.items() if k is not None}
        name = (row.pop("file", None) or "").strip()
        if not name:
            warnings.append(f"{path}, line {n}: no file named; row ignored")
            continue
        target = os.fsencode(os.path.abspath(folder / name))
        fields = {k: v.strip() for k, v in row.items() if k and isinstance(v, str) and v.strip()}
        ignored = sorted(set(fields) & set(KEYFRAME_KEYS))
        if ignored and not warnings_for(warnings, path, "reserved"):
            warnings.append(
                f"{path}: column(s) {', '.join(ignored)} are a keyframe's own (reserved) and "
                "are not copied onto keyframes"
            )
        if target in out:
            warnings.append(f"{path}, line {n}: {name} is named again; this row wins")
        out[target] = fields
    return out, warnings


def warnings_for(warnings: list[str], path: Path, word: str) -> bool:
    """True if a warning about ``path`` mentioning ``word`` is already there (say it once)."""
    return any(w.startswith(f"{path}:") and word in w for w in warnings)
