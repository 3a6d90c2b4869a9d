"""Regions: search by a part of a picture, and find small objects inside pictures.

**Query by region.** ``col.search(item=ID, box=(x0, y0, x1, y1))`` or ``col.search(image=...,
box=...)`` crops the box out of the picture (decoded as for indexing) and searches with the
crop's vector. A box is given in fractions of the picture's width and height (0..1, left, top,
right, bottom), which survive thumbnails and resizes; a box with a value above 1 is read as
pixels of the upright picture.

**Region indexing.** A global vector describes a picture as a whole: an object that fills a
sixth of it barely moves it. :func:`index_regions` (``snoop index --regions``,
``col.index_regions()``) embeds a few crops of every picture, the windows of
:func:`region_boxes` (by default half the picture's width and height, at strides of a
quarter: 9 overlapping windows, so that any object up to a quarter of the picture lies whole
inside one of them at twice its share), and keeps them in ``regions.sqlite`` in the collection
(one row per region: its item, its box, its float16 vector). It is incremental and resumable:
items are done in batches, each batch's regions written in one transaction with the items it
covers, so a killed run resumes with the items not yet done; a picture that cannot be read is
recorded with its reason and tried again next run; items removed from the collection are
never returned; a collection re-embedded with another model gets its regions anew. Region
search is exact (float32 blocks over every region), which suits up to a few hundred thousand
pictures (a million regions: about 2.5 GB of float16 vectors at 1280 dimensions).

When a collection has regions, a search looks at them too (``regions=True``, the default when
they exist): an item's similarity is the better of its global vector's and its best region's,
and the result row says which (``box``: the matching region, None when the whole picture
matched better; ``region_similarity``).

>>> col.index_regions()                                        # doctest: +SKIP
>>> col.search(item=12, box=(0.1, 0.2, 0.4, 0.6), k=10)        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import MediaError, UsageError

if TYPE_CHECKING:
    from PIL import Image

    from snoop_nb.collection import Collection

#: The region store's file in a collection.
REGIONS_FILE = "regions.sqlite"
#: The regions as one memory-mapped array beside the store (float16, ``np.save`` format) and
#: their rows (item ids, boxes, and the store's state they were written from): every process
#: searching the collection (30 dashboard visitors, 30 kernels) maps the same pages rather
#: than holding its own copy of the vectors.
EXPORT_VECTORS = "regions.vectors.npy"
EXPORT_ROWS = "regions.rows.npz"
#: Window sizes (fractions of the picture's sides) indexed by default, and the stride between
#: windows as a fraction of the window.
SCALES: tuple[float, ...] = (0.5,)
STRIDE = 0.5
#: Pictures per batch (one transaction each).
BATCH = 32
#: A picture's short side is not shrunk below this many pixels when it is decoded for regions.
DECODE_SIDE = 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS done (
    item_id INTEGER PRIMARY KEY,
    regions INTEGER NOT NULL,
    error   TEXT
);
CREATE TABLE IF NOT EXISTS regions (
    id      INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL,
    x0 REAL NOT NULL, y0 REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL,
    vector  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS regions_item ON regions(item_id);
"""

Box = tuple[float, float, float, float]


# --- boxes ----------------------------------------------------------------------------------
def region_boxes(scales: Sequence[float] = SCALES, stride: float = STRIDE) -> list[Box]:
    """The windows indexed per picture, as fractional boxes: for each scale ``s``, windows of
    ``s`` x ``s`` of the picture, ``stride * s`` apart, the last one flush with the far edge."""
    boxes: list[Box] = []
    for s in scales:
        if not 0 < s < 1:
            raise UsageError(f"a region scale is a fraction of the picture in (0, 1), not {s}")
        step = max(stride * s, 1e-6)
        starts = list(np.arange(0.0, 1.0 - s + 1e-9, step))
        if starts[-1] < 1.0 - s - 1e-6:  # the last window flush with the far edge
            if (1.0 - s) - starts[-1] < step / 2:
                starts[-1] = 1.0 - s  # (moved there, rather than a near-copy beside it)
            else:
                starts.append(1.0 - s)
        for y in starts:
            for x in starts:
                boxes.append(
                    (round(float(x), 6), round(float(y), 6), round(x + s, 6), round(y + s, 6))
                )
    return boxes


def fraction_box(box: Sequence[float], size: tuple[int, int]) -> Box:
    """``box`` as fractions of a ``size`` (w, h) picture, checked: pixels (any value above 1)
    are divided by the size; the box is clipped to the picture and must keep an area."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError) as e:
        raise UsageError(f"a box is (x0, y0, x1, y1), not {box!r}") from e
    if not all(np.isfinite((x0, y0, x1, y1))):
        raise UsageError(f"a box's corners are finite numbers, not {box!r}")
    if max(x0, y0, x1, y1) > 1.0:
        w, h = size
        x0, x1, y0, y1 = x0 / w, x1 / w, y0 / h, y1 / h
    x0, x1 = sorted((min(max(x0, 0.0), 1.0), min(max(x1, 0.0), 1.0)))
    y0, y1 = sorted((min(max(y0, 0.0), 1.0), min(max(y1, 0.0), 1.0)))
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        raise UsageError(f"the box {tuple(box)} has no area inside the picture")
    return (x0, y0, x1, y1)


def crop(image: Image.Image, box: Box) -> Image.Image:
    """The fractional ``box`` of ``image`` (at least one pixel each way)."""
    w, h = image.size
    x0, y0 = int(np.floor(box[0] * w)), int(np.floor(box[1] * h))
    x1, y1 = max(int(np.ceil(box[2] * w)), x0 + 1), max(int(np.ceil(box[3] * h)), y0 + 1)
    return image.crop((x0, y0, min(x1, w), min(y1, h)))


def load_picture(col: Collection, item: int) -> Image.Image:
    """Item ``item``'s picture, decoded as for indexing (large ones shrunk while decoded)."""
    from snoop_nb.media.decode import load_image

    info = col.item(int(item))
    if info["status"] != "ok":
        raise UsageError(f"item {item} is not a readable picture ({info['status']})")
    path = col.paths([int(item)]).get(int(item))
    if path is None:
        raise UsageError(f"item {item} has no file to crop a region from")
    return load_image(path, min_size=(DECODE_SIDE, DECODE_SIDE), name=str(path))


def region_query(col: Collection, box: Sequence[float], *, item=None, image=None) -> np.ndarray:
    """The (dim,) float32 vector of ``box`` cropped from item ``item`` or from ``image``."""
    from snoop_nb.media.decode import load_image

    if (item is None) == (image is None):
        raise UsageError("a region query needs exactly one picture: item= or image=")
    picture = load_picture(col, item) if item is not None else load_image(image)
    part = crop(picture, fraction_box(box, picture.size))
    return col.embedder.encode_image(part).astype(np.float32)


# --- the store ------------------------------------------------------------------------------
class RegionStore:
    """The region vectors of a collection (``regions.sqlite``), read and written."""

    def __init__(self, col: Collection, *, create: bool = False):
        self.col = col
        self.path = Path(col.root) / REGIONS_FILE
        if not create and not self.path.is_file():
            raise UsageError(f"{col.root} has no regions: index them first (snoop index --regions)")
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self._cache: tuple[Any, ...] | None = None

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta"))

    def matches(self) -> bool:
        """True when the stored regions were made by this collection's embedder."""
        return self.meta().get("embedder") == self.col.embedder_id

    def reset(self, boxes: list[Box]) -> None:
        """Forget every region (another embedder, other windows) and record the new set-up."""
        import json

        with self._write() as db:
            db.execute("DELETE FROM regions")
            db.execute("DELETE FROM done")
            db.execute("DELETE FROM meta")
            db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [("embedder", self.col.embedder_id), ("boxes", json.dumps(boxes))],
            )
        self._cache = None

    def done_ids(self) -> np.ndarray:
        """Items whose regions are stored (an unreadable one is tried again next run)."""
        rows = self.db.execute("SELECT item_id FROM done WHERE error IS NULL")
        return np.array([r[0] for r in rows], np.int64)

    def put(self, rows: list[tuple[int, list[Box], np.ndarray | None, str | None]]) -> None:
        """One transaction: for each item, its boxes and their (n, dim) vectors (or an error)."""
        with self._write() as db:
            for item, boxes, vecs, error in rows:
                db.execute("DELETE FROM regions WHERE item_id = ?", (item,))
                n = 0
                if vecs is not None:
                    db.executemany(
                        "INSERT INTO regions (item_id, x0, y0, x1, y1, vector) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [
                            (item, *b, np.asarray(v, np.float16).tobytes())
                            for b, v in zip(boxes, vecs, strict=True)
                        ],
                    )
                    n = len(boxes)
                db.execute("INSERT OR REPLACE INTO done VALUES (?, ?, ?)", (item, n, error))
        self._cache = None

    def _state(self) -> list:
        """What the stored regions are: their count, last row id, item ids' sum, embedder and
        windows (a reset that starts the ids again from 1 changes the sum or the set-up)."""
        n, top, total = self.db.execute(
            "SELECT count(*), coalesce(max(id), 0), coalesce(total(item_id), 0) FROM regions"
        ).fetchone()
        meta = self.meta()
        return [int(n), int(top), float(total), meta.get("embedder", ""), meta.get("boxes", "")]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item ids, boxes (n, 4) float32, vectors (n, dim) float16) of every region stored:
        the vectors memory-mapped from the export when it is current (:meth:`export`), else
        read from the store."""
        version = self._state()
        mapped = self._mapped_file()
        # (a mapped file changed in place, not replaced, would fault when read: map it again)
        if (
            self._cache is not None
            and self._cache[0] == version
            and self._cache[2] in (None, mapped)
        ):
            return self._cache[1]
        got = self._exported(version)
        if got is None:
            rows = self.db.execute(
                "SELECT item_id, x0, y0, x1, y1, vector FROM regions ORDER BY id"
            ).fetchall()
            dim = self.col.dim
            items = np.array([r[0] for r in rows], np.int64)
            boxes = np.array([r[1:5] for r in rows], np.float32).reshape(-1, 4)
            vecs = np.frombuffer(b"".join(r[5] for r in rows), np.float16).reshape(-1, dim)
            got = (items, boxes, vecs)
        self._cache = (version, got, mapped if isinstance(got[2], np.memmap) else None)
        return got

    def _mapped_file(self) -> tuple[int, int, int] | None:
        """The export's (inode, size, mtime): an atomic replacement is a new inode, which
        mappings of the old one survive; anything else is checked again before it is read."""
        try:
            st = os.stat(Path(self.col.root) / EXPORT_VECTORS)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _exported(self, version: list) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The export's arrays if it was written from the store as it is now, else None
        (missing, stale, cut short or unreadable: the store is read instead)."""
        import json

        root = Path(self.col.root)
        try:
            with np.load(root / EXPORT_ROWS) as z:
                if json.loads(bytes(z["state"]).decode()) != version:
                    return None
                items, boxes = z["items"].astype(np.int64), z["boxes"].astype(np.float32)
            vecs = np.load(root / EXPORT_VECTORS, mmap_mode="r")
        except (OSError, ValueError, KeyError, EOFError):
            return None
        if vecs.dtype != np.float16 or vecs.shape != (len(items), self.col.dim):
            return None
        if boxes.shape != (len(items), 4):
            return None
        return items, boxes, vecs

    def export(self) -> bool:
        """Write the regions as a memory-mappable array beside the store, unless the export is
        current; returns whether it wrote. Read in one snapshot of the store, written in
        blocks (never the whole store in memory) and atomically: the vectors first, then the
        rows naming the state they hold, so a reader never takes a half-written export."""
        import json

        from snoop_nb.index.base import atomic_write

        root = Path(self.col.root)
        self.db.execute("BEGIN")  # one snapshot for the state and the rows (WAL)
        try:
            version = self._state()
            if self._exported(version) is not None:
                return False
            n, dim = version[0], self.col.dim
            if n == 0:  # nothing to map (a stale export is refused by its state)
                return False
            items = np.empty(n, np.int64)
            boxes = np.empty((n, 4), np.float32)

            def vectors(tmp: str) -> None:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, dim))
                cur = self.db.execute(
                    "SELECT item_id, x0, y0, x1, y1, vector FROM regions ORDER BY id"
                )
                at = 0
                while rows := cur.fetchmany(16384):
                    m = len(rows)
                    items[at : at + m] = [r[0] for r in rows]
                    boxes[at : at + m] = [r[1:5] for r in rows]
                    out[at : at + m] = np.frombuffer(
                        b"".join(r[5] for r in rows), np.float16
                    ).reshape(m, dim)
                    at += m
                out.flush()
                del out

            def rows(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    state = np.frombuffer(json.dumps(version).encode(), np.uint8)
                    np.savez(f, items=items, boxes=boxes, state=state)

            atomic_write(root / EXPORT_VECTORS, vectors)
            atomic_write(root / EXPORT_ROWS, rows)
        finally:
            self.db.execute("COMMIT")
        self._cache = None
        return True

    def stats(self) -> dict[str, Any]:
        """Live items with regions, their regions, and live items that could not be read."""
        done = self.db.execute("SELECT item_id, regions, error FROM done").fetchall()
        ids = np.array([r[0] for r in done], np.int64)
        live = self.col.is_live(ids) if len(ids) else np.zeros(0, bool)
        ok = [r for r, keep in zip(done, live, strict=True) if keep and r[2] is None]
        failed = sum(1 for r, keep in zip(done, live, strict=True) if keep and r[2] is not None)
        return {"regions": int(sum(r[1] for r in ok)), "items": len(ok), "failed": int(failed)}


def has_regions(col: Collection) -> bool:
    """True when ``col`` has a region store made by its embedder."""
    if not (Path(col.root) / REGIONS_FILE).is_file():
        return False
    store = col.region_store()
    return store is not None and store.matches()


def index_regions(
    col: Collection,
    *,
    scales: Sequence[float] | None = None,
    stride: float = STRIDE,
    batch: int = BATCH,
    progress: bool | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Embed the region windows of every picture not done yet (see the module docstring).

    Keyframes of videos are pictures too. Returns ``{"added", "regions", "failed", "items",
    "seconds"}``: pictures done by this run, their regions, pictures that could not be read
    (recorded, not raised: a bad file never stops the run), items with regions in all.

    ``scales`` (window sizes, fractions of the picture): by default those the store was made
    with, else :data:`SCALES`; other scales than the store's start it anew, as does another
    embedder.
    """
    import json

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    store = col.region_store(create=True)
    assert store is not None
    meta = store.meta()
    stored = json.loads(meta.get("boxes", "null"))
    if scales is None and stored and meta.get("embedder") == col.embedder_id:
        boxes = [tuple(b) for b in stored]
    else:
        boxes = region_boxes(SCALES if scales is None else scales, stride)
    if meta.get("embedder") != col.embedder_id or stored != [list(b) for b in boxes]:
        store.reset(boxes)
    todo = np.setdiff1d(col.ok_ids(), store.done_ids())
    added = regions = failed = 0
    bar = tqdm(total=len(todo), unit="img", desc="regions", disable=progress is False)
    try:
        for start in range(0, len(todo), batch):
            ids = [int(i) for i in todo[start : start + batch]]
            crops: list[Image.Image] = []
            owners: list[tuple[int, str | None]] = []
            for i in ids:
                try:
                    picture = load_picture(col, i)
                except (MediaError, UsageError, OSError) as e:
                    owners.append((i, str(e) or type(e).__name__))
                    continue
                crops.extend(crop(picture, b) for b in boxes)
                owners.append((i, None))
            vecs = (
                col.embedder.encode_images(crops, progress=False)
                if crops
                else np.zeros((0, col.dim), np.float16)
            )
            rows, at = [], 0
            for i, error in owners:
                if error is None:
                    rows.append((i, boxes, vecs[at : at + len(boxes)], None))
                    at += len(boxes)
                    regions += len(boxes)
                else:
                    rows.append((i, boxes, None, error))
                    failed += 1
            store.put(rows)
            added += len(ids)
            bar.update(len(ids))
            if on_batch is not None:
                on_batch(added, len(todo))
    finally:
        bar.close()
    store.export()  # the vectors every searching process maps (shared pages)
    stats = store.stats()
    return {
        "added": added,
        "regions": regions,
        "failed": failed,
        "items": stats["items"],
        "seconds": round(time.perf_counter() - t0, 3),
    }


def best_regions(
    col: Collection, q: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` live items whose best region is nearest to unit query ``q``: (ids, best region
    similarity, its box), best first."""
    store = col.region_store()
    if store is None:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
    items, boxes, vecs = store.arrays()
    if not len(items):
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
    sims = np.zeros(len(items), np.float32)
    q32 = np.asarray(q, np.float32)
    for s in range(0, len(items), 65536):  # float32 blocks: bounded memory, numpy's speed
        sims[s : s + 65536] = vecs[s : s + 65536].astype(np.float32) @ q32
    sims[~col.is_live(items)] = -np.inf
    order = np.argsort(-sims, kind="stable")  # best region first: the first of each item wins
    first = np.unique(items[order], return_index=True)[1]
    best = order[np.sort(first)]
    best = best[np.isfinite(sims[best])][:k]
    return items[best], sims[best], boxes[best]
