"""A collection on disk: catalog, vectors and index of a set of pictures and videos.

One directory, self-describing and safe to copy::

    manifest.json    format version, embedder (id, name, weights digest), dimension, metric,
                     index kind and parameters
    catalog.sqlite   items (id, uri, kind, size, digest, status, error, metadata...), WAL mode;
                     videos (uri, duration, fps, size, codec, shots, sidecar fields...)
    vectors.f16      L2-normalised float16 rows; row i is item id i
    index.hnsw       hnswlib graph (+ index.hnsw.json: deleted ids, projection id)
    index.hnsw.npz   "hnsw-pca" only: the PCA projection and the indexed ids (no vectors)
    index.hnsw.sq8   "pca-sq8" only: 8-bit codes of a PCA projection, for 10M+ items
    index.hnsw.<i>…  shard i of a sharded index (+ index.hnsw.shards.json, written last)
    keyframes/       <item id>.jpg: a thumbnail of each video keyframe (a cache, best effort)

A video's keyframes are items of ``kind`` ``'keyframe'`` (uri ``<video>#t=<seconds>``, with
``video``, ``t_start``/``t_end`` (its shot's bounds) and ``t``, ``shot``, ``video_id`` and the
sidecar's fields in their metadata): they are searched, labelled and exported like pictures.

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
catalog. A process that keeps a collection open (a dashboard) sees what others add or remove:
each search checks the catalog's generation and brings its index up to date.

:class:`Collection` is a facade over the parts in :mod:`snoop_nb.store` (catalog, vector
store, writer lock, index upkeep, adding); it is the one object users hold.

>>> col = open_collection("photos.snoop", create=True)   # doctest: +SKIP
>>> col.add(["~/Pictures"])                                # doctest: +SKIP
>>> col.search(text="a red car", k=5)                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import CollectionError, EmbedderMismatchError, UsageError
from snoop_nb.search import EXACT_SEARCH_BELOW
from snoop_nb.store import layout
from snoop_nb.store.adding import INDEX_SAVE_EVERY, Adder, AddReport
from snoop_nb.store.catalog import SCHEMA, Catalog, check_ids, connect, expand_meta, readable
from snoop_nb.store.layout import (
    FORMAT,
    FORMAT_VERSION,
    INDEX_KINDS,
    PROJECT_ABOVE_DIM,
    check_same_embedder,
    index_entry,
    read_manifest,
)
from snoop_nb.store.lock import writer_lock
from snoop_nb.store.upkeep import IndexKeeper
from snoop_nb.store.vectors import VectorStore
from snoop_nb.store.videos import Videos

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.embed.base import Embedder
    from snoop_nb.index import Index

__all__ = [
    "EXACT_SEARCH_BELOW",
    "FORMAT",
    "FORMAT_VERSION",
    "INDEX_KINDS",
    "INDEX_SAVE_EVERY",
    "PROJECT_ABOVE_DIM",
    "SCHEMA",
    "AddReport",
    "Collection",
    "open_collection",
    "readable",
]

# Names this module had before its parts moved to snoop_nb.store (kept for old imports).
_index_entry = index_entry
_read_manifest = read_manifest
_check_same_embedder = check_same_embedder
_expand_meta = expand_meta
_OWN_FILES = layout.OWN_FILES


def _connect(path: Path) -> sqlite3.Connection:
    return connect(path)


class Collection:
    """A searchable set of pictures stored in one directory.

    Open one with :func:`open_collection`. The embedder is loaded on first use (adding,
    searching by image or text), so opening a collection to read its catalog is instant.
    A collection may be used from several threads (a UI's thumbnail and warm-up threads).
    """

    def __init__(self, root: Path, manifest: dict[str, Any], embedder: Embedder | None = None):
        self.root = root
        self.manifest = manifest
        self._embedder = embedder
        self._embedder_lock = threading.Lock()
        self._kb = None
        self._kb_lock = threading.Lock()
        self._regions = None  # the RegionStore, opened on first use (snoop_nb.regions)
        #: (corpus size, ids, their float16 vectors): the random reservoir feedback sessions
        #: draw pseudo-negatives from in a large corpus (see FeedbackSession._reservoir)
        self._pseudo_reservoir: tuple[int, np.ndarray, np.ndarray] | None = None
        self._catalog = Catalog(root / layout.CATALOG_NAME)
        self._store = VectorStore(root / "vectors.f16", int(manifest["dim"]), self._catalog.rows)
        self._keeper = IndexKeeper(root, manifest, self._catalog, self._store)
        self._adder = Adder(root, self._catalog, self._store, self._keeper)
        self._videos = Videos(self._catalog)

    # --- basic facts --------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def embedder_id(self) -> str:
        return str(self.manifest["embedder"]["id"])

    @property
    def embedder(self) -> Embedder:
        """The collection's embedder, loaded once on first use from the manifest (threads that
        ask for it at once wait for that one load)."""
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    from snoop_nb.embed import load_embedder

                    spec = self.manifest["embedder"]
                    emb = load_embedder(spec.get("name"), spec.get("pretrained"), device="auto")
                    check_same_embedder(self.root, self.manifest, emb)
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
        if self._regions is not None:
            self._regions.close()
            self._regions = None
        self._catalog.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- vectors ------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Vector rows the catalog vouches for (rows past it are an interrupted run's)."""
        return self._catalog.rows()

    @property
    def vectors(self) -> np.ndarray:
        """All vector rows as a read-only float16 memory map (row i = item id i)."""
        return self._store.view()

    def vectors_of(self, ids: Iterable[int]) -> np.ndarray:
        """The vectors of ``ids`` as float32 rows."""
        ids = check_ids(ids, self.rows)
        return np.asarray(self._store.rows(ids), dtype=np.float32)  # the random-access map

    def _vector_rows(self, rows: np.ndarray) -> np.ndarray:
        return self._store.rows(rows)

    # --- catalog queries ----------------------------------------------------------------
    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's catalog connection."""
        return self._catalog.db

    def _generation(self) -> str:
        return self._catalog.generation()

    def ok_ids(self) -> np.ndarray:
        """Ids of the items that have a vector, sorted (cached until the items change)."""
        return self._catalog.ok_ids()

    def ids_under(self, paths: Iterable[str | bytes | os.PathLike]) -> np.ndarray:
        """Sorted ids of the live items whose file is one of ``paths`` or lies under one of
        those folders, compared as exact path bytes (the catalog holds absolute paths, not
        resolved ones: give ``os.path.abspath(p)``). A file gone from the disk is found too.

        >>> col.remove(col.ids_under(["/photos/2019"]))   # doctest: +SKIP
        """
        return self._catalog.ids_under(paths)

    @property
    def kb(self):
        """The knowledge base (users, classes, labels, models) kept in this catalog."""
        if self._kb is None:
            with self._kb_lock:
                if self._kb is None:
                    from snoop_nb.kb import KnowledgeBase

                    self._kb = KnowledgeBase(self.root / layout.CATALOG_NAME)
        return self._kb

    def session(self, user: str, class_name: str, **options: Any):
        """A relevance-feedback session on ``user``'s class ``class_name``, created if new;
        with ``create=False`` only an existing class opens (``"owner/name"``: someone's shared
        class, read-only), else :class:`~snoop_nb.errors.UsageError` lists the names there are.

        >>> s = col.session("alice", "lighthouses")   # doctest: +SKIP
        >>> col.session("bob", "alice/lighthouses", create=False).rank(20)  # doctest: +SKIP
        """
        from snoop_nb.learn import FeedbackSession

        return FeedbackSession(self, user, class_name, **options)

    def items(self, ids: Iterable[int] | None = None, *, status: str | None = "ok") -> pd.DataFrame:
        """The catalog as a DataFrame: one row per item, metadata keys as extra columns."""
        return self._catalog.items(ids, status=status)

    def item(self, item_id: int) -> dict[str, Any]:
        """One item's catalog row as a dict (raises UsageError for an unknown id)."""
        df = self.items([item_id], status=None)
        if df.empty:
            raise UsageError(f"no item with id {item_id}")
        return df.iloc[0].to_dict()

    def paths(self, ids: Iterable[int]) -> dict[int, Path]:
        """The source file of each known item, by id (the exact path, undecodable bytes kept)."""
        return self._catalog.paths(ids)

    def errors(self) -> list[dict[str, str]]:
        """The files that could not be read: ``[{"uri": ..., "reason": ...}]``."""
        return self._catalog.errors()

    def videos(self, *, status: str | None = "ok") -> pd.DataFrame:
        """One row per video (``status=None``: failed and removed ones too): id, uri, duration
        (s), fps, width, height, codec, audio, rotation, detector, shots and keyframes (counts),
        size, status, error, warning, added, and the sidecar's fields as extra columns.

        >>> col.videos()[["uri", "duration", "channel", "date"]]   # doctest: +SKIP
        """
        return self._videos.frame(status=status)

    def shots(self, video: int | str | os.PathLike) -> list[dict[str, Any]]:
        """The shots of ``video`` (its id, uri or path, or one of its keyframes' uri), in time
        order: ``{"index", "start", "end", "keyframes": [t, ...], "ids": [item ids]}``."""
        return self._videos.shots(video)

    def video_path(self, video: int | str | os.PathLike) -> Path:
        """The file of ``video`` (its id, uri or path, or one of its keyframes' uri)."""
        return self._videos.path(video)

    def remove_video(self, video: int | str | os.PathLike) -> int:
        """Remove a video and all its keyframes (the next add of its file analyses it again).
        Returns how many keyframes were removed."""
        with writer_lock(self.root):
            ids = self._videos.remove(video)
            self._keeper.sync(save=True)
        return len(ids)

    def info(self) -> dict[str, Any]:
        """A summary: counts, errors, model, dimension, index (what ``snoop info`` prints)."""
        emb = self.manifest["embedder"]
        files = [p for p in self.root.iterdir() if layout.is_index_file(p.name)]
        videos, hours = self._videos.totals()
        return {
            "path": str(self.root),
            "items": len(self),
            "videos": videos,
            "hours": round(hours, 4),
            "keyframes": int(
                self._db.execute(
                    "SELECT count(*) FROM items WHERE status = 'ok' AND kind = 'keyframe'"
                ).fetchone()[0]
            ),
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
        self._catalog.set_meta(ids, values)

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
        max_pixels: int | None = None,
        metadata: str | os.PathLike | None = None,
        keyframe_every: float = 10.0,
        detector: str = "transnetv2",
        dask: Any = None,
        fetch: dict[str, Any] | None = None,
    ) -> AddReport:
        """Add the pictures and videos found under ``paths``; files already here and unchanged
        are skipped.

        ``paths`` may also hold lists and remote sources (see :mod:`snoop_nb.sources`): a
        ``.txt`` or ``.csv`` list of paths or URLs (a CSV's other columns become metadata), a
        IIIF manifest or collection (a ``.json`` file or an ``http(s)`` URL) whose pictures
        are fetched through the Image API at the size the embedder needs, or a picture's URL.
        Remote pictures are keyed by their URL and cached in ``<collection>/remote/``; those
        already here are not fetched again. ``fetch`` sets how (:class:`snoop_nb.sources.
        Fetcher`'s options: ``rate`` requests per second per host, default 5; ``timeout``;
        ``retries``; ``workers``; ``refresh=True`` fetches everything again; and ``part``, the
        pictures fetched at a time, 256 by default: each part is embedded and committed while
        the next one is fetched).

        Bad files are recorded (see :meth:`errors`) and never stop the run; a file that failed
        before is tried again (``report.retried``). ``meta(path)`` may give each new picture
        metadata (e.g. labels from folder names). ``max_pixels`` refuses larger pictures (the
        decoder's default otherwise). Safe to interrupt: run it again to finish.

        A video is cut into shots by ``detector`` (``"transnetv2"``, ``"adaptive"`` or
        ``"interval"``), with a keyframe per shot and one more per ``keyframe_every`` seconds
        of a long shot, each an item; a changed video replaces all its keyframes. ``metadata``
        is a CSV sidecar: its ``file`` column names each video (relative to the CSV's folder,
        or absolute), its other columns (``channel``, ``date``, ``title``, ...) become the
        video's and its keyframes' metadata, kept up to date on each run that gives it.

        ``dask`` embeds on a Dask cluster instead, with the same result: ``"local:N"``, a
        scheduler's address or a ``distributed.Client`` (see
        :func:`snoop_nb.scale.add_distributed`).

        >>> col.add(["archive/"], metadata="archive/videos.csv")  # doctest: +SKIP
        >>> col.add(["archive/"], dask="local:4")                 # doctest: +SKIP
        """
        options = {
            "batch_size": batch_size,
            "workers": workers,
            "progress": progress,
            "meta": meta,
            "update_index": update_index,
            "max_pixels": max_pixels,
            "metadata": metadata,
            "keyframe_every": keyframe_every,
            "detector": detector,
        }
        from snoop_nb.sources import has_sources

        paths = list(paths)
        if has_sources(paths):
            if dask is not None:
                raise UsageError("dask takes folders and files: add lists and manifests without it")
            from snoop_nb.sources import CACHE_DIR, FETCH_PART, fetch_side, prepare_parts

            fetch = dict(fetch or {})
            parts = prepare_parts(
                paths,
                cache=self.root / CACHE_DIR,
                known=self._catalog.known(),
                side=lambda: fetch_side(self.embedder),
                part=fetch.pop("part", FETCH_PART),
                fetch=fetch,
                progress=progress,
            )
            return self._add_parts(parts, meta, options)
        if dask is not None:
            from snoop_nb.scale import add_distributed

            return add_distributed(self, paths, scheduler=dask, **options)
        return self._adder.add_files(paths, lambda: self.embedder, **options)

    def _add_parts(self, parts, meta, options: dict[str, Any]) -> AddReport:
        """Embed each part of a run over lists and manifests while the next part is fetched
        (one thread ahead), so the first pictures are searchable long before the last are
        fetched; a run killed between parts keeps what it committed, and the cache what it
        fetched."""
        import time as _time
        from concurrent.futures import ThreadPoolExecutor

        start = _time.monotonic()
        report: AddReport | None = None
        edited: dict[bytes, dict[str, Any]] = {}
        with ThreadPoolExecutor(1, thread_name_prefix="snoop-fetch-ahead") as ahead:
            try:
                nxt = ahead.submit(next, parts, None)
                while (part := nxt.result()) is not None:
                    nxt = ahead.submit(next, parts, None)  # fetched while this part embeds
                    got = self._adder.add_files(
                        part.paths,
                        lambda: self.embedder,
                        remote=part.remote,
                        **{**options, "meta": part.meta_for(meta)},
                    )
                    part.settle(got)
                    edited.update(part.meta)
                    report = got if report is None else report.merge(got)
            finally:
                nxt.cancel()
                with contextlib.suppress(Exception):
                    nxt.result()  # let a part being fetched finish before closing the fetcher
                parts.close()
        assert report is not None
        if edited:  # a list's columns edited since: items already here get them too
            with writer_lock(self.root):
                report.meta_updated = self._catalog.patch_meta(edited.items())
        report.seconds = _time.monotonic() - start
        return report

    def add_vectors(
        self,
        uris: Sequence[str | bytes | os.PathLike],
        vectors: Any,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        *,
        update_index: bool = True,
    ) -> np.ndarray:
        """Add items whose vectors were computed elsewhere (a benchmark, video keyframes, Dask
        workers); returns their new ids. The embedder is not loaded.

        ``vectors`` is ``(len(uris), dim)``: checked to be finite and non-zero, scaled to unit
        length and stored as float16, with the durability of :meth:`add` (vectors fsync'ed,
        then the catalog rows in one transaction, under the writer lock). A uri already here
        is replaced. ``metadata[i]`` (a dict, or None) becomes item i's metadata columns; its
        keys ``kind``, ``video``, ``t_start``, ``t_end``, ``width``, ``height``, ``size``
        and ``digest`` fill those catalog columns instead. File paths are stored absolute;
        URLs (``scheme://...``) as given.

        >>> col.add_vectors(["clip.mp4#t=3.0"], vecs, [{"kind": "keyframe", "t_start": 3.0}])  # doctest: +SKIP
        """
        return self._adder.add_vectors(uris, vectors, metadata, update_index=update_index)

    def remove(self, ids: Iterable[int]) -> int:
        """Mark items deleted (their rows stay; the index forgets them). Returns how many."""
        id_list = [int(i) for i in ids]
        with writer_lock(self.root):
            n = self._catalog.mark_deleted(id_list)
            self._keeper.sync(save=True)
        return n

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        with writer_lock(self.root):
            yield

    def _trim_vectors(self) -> None:
        self._store.trim(self.rows)

    # --- index --------------------------------------------------------------------------
    @property
    def index(self) -> Index:
        """The approximate index, loaded on first use and brought up to date with the catalog
        on every use (what other processes added or removed included)."""
        return self._keeper.current()

    @property
    def _index(self) -> Index | None:
        return self._keeper._index

    @_index.setter
    def _index(self, value: None) -> None:
        if value is not None:
            raise ValueError("only None may be set: it makes the next use load the index again")
        self._keeper.forget()

    def exact_index(self) -> Index:
        """An exact index over the live vectors, kept until the items change (it converts the
        vectors to float32 once, on its first search, when they fit its cache)."""
        return self._keeper.exact()

    def describe_index(self) -> str:
        """The index's kind and shards in words, e.g. ``pca-sq8 (4 shards)``."""
        entry = {"kind": "hnsw", **self.manifest.get("index", {})}
        shards = int(entry.get("shards", 1))
        return entry["kind"] + (f" ({shards} shards)" if shards > 1 else "")

    def index_differs(self, *, kind: str | None = None, shards: int | None = None) -> bool:
        """Whether ``kind`` or ``shards`` (None: any) differ from the manifest's index."""
        entry = {"kind": "hnsw", **self.manifest.get("index", {})}
        return (kind is not None and kind != entry["kind"]) or (
            shards is not None and int(shards) != int(entry.get("shards", 1))
        )

    def reindex(self, **params: Any) -> Index:
        """Rebuild the index as another kind or shard count (``kind``, ``shards``, and the
        kind's parameters, as ``index_params`` of :func:`open_collection`), from the vectors.

        Under the writer lock: the manifest's index entry is rewritten (atomically), the old
        index files deleted, and the new index built and saved. Items, vectors and labels are
        untouched. Other processes that hold the collection open keep their index in memory
        until they open it again.

        >>> col.reindex(kind="pca-sq8", shards=4)   # doctest: +SKIP
        """
        from snoop_nb.index.base import atomic_write

        old = self.manifest.get("index", {})
        given = {k: v for k, v in params.items() if v is not None}
        # the kind's own parameters carry over when the kind stays
        keep = old if given.get("kind", old.get("kind")) == old.get("kind") else {}
        with writer_lock(self.root):
            manifest = read_manifest(self.root / layout.MANIFEST_NAME)
            manifest["index"] = index_entry(self.dim, {**keep, **given})
            text = json.dumps(manifest, indent=2)
            atomic_write(self.root / layout.MANIFEST_NAME, lambda t: Path(t).write_text(text))
            self.manifest.clear()
            self.manifest.update(manifest)  # the keeper holds the same dict
            self._keeper.forget()
            for p in self.root.iterdir():
                if layout.is_index_file(p.name):
                    p.unlink(missing_ok=True)
            return self._keeper.sync(save=True)

    def sync_index(self, *, save: bool = True) -> Index:
        """Make the index hold exactly the catalog's live items; save it if asked.

        The manifest's ``index`` entry chooses the kind and its parameters (see the module
        docstring); saved files are loaded, and rebuilt when they cannot be read.
        """
        return self._keeper.sync(save=save)

    # --- copies -------------------------------------------------------------------------
    def duplicates(self, **options: Any):
        """Groups of items that are copies of each other (cropped, resized, re-encoded,
        colour-shifted, overlaid, mirrored), and video segments shown in two videos: global
        candidates verified by local features. Options (``threshold``, ``k``, ``verify``,
        ``min_inliers``, ``ids``, ``flip``, ``mutual``, ``min_keyframes``, ``progress``) and the
        result (:class:`~snoop_nb.copies.Duplicates`: ``groups``, ``pairs``, ``segments``,
        ``skipped``) are described in :func:`snoop_nb.copies.find_duplicates`.

        >>> [g.uris for g in col.duplicates().groups]   # doctest: +SKIP
        >>> col.duplicates(verify=False, threshold=0.95).pairs   # doctest: +SKIP
        """
        from snoop_nb.copies import find_duplicates

        return find_duplicates(self, **options)

    def update_duplicates(self, *, rebuild: bool = False, **options: Any):
        """Find the copies of the whole collection and keep them in it (``copies.json``), so
        that collapsing copies and the Copies tab read them: only the items added since the
        last time are verified (``rebuild=True``: all). See
        :func:`snoop_nb.copies.update_duplicates`.

        >>> col.update_duplicates(progress=True).groups   # doctest: +SKIP
        """
        from snoop_nb.copies import update_duplicates

        return update_duplicates(self, rebuild=rebuild, **options)

    def saved_duplicates(self, ids: Iterable[int] | None = None):
        """The copies kept by :meth:`update_duplicates` (None if never), among the live items
        (or ``ids``); ``unchecked`` lists the items added since. A file read, no verification.
        """
        from snoop_nb.copies import saved_duplicates

        return saved_duplicates(self, ids)

    def repeated_segments(self, **options: Any) -> pd.DataFrame:
        """Segments of a video shown again in another (a rebroadcast): one row per segment,
        ``video_a, t_a, video_b, t_b, duration`` (s), the offset and the keyframes matched
        (the ``segments`` of :meth:`duplicates` among keyframes only)."""
        from snoop_nb.copies import find_duplicates

        frames = self.items()
        ids = frames["id"][frames["kind"] == "keyframe"] if "kind" in frames else []
        return find_duplicates(self, ids=ids, **options).segments

    # --- regions ------------------------------------------------------------------------
    def region_store(self, *, create: bool = False):
        """The collection's :class:`~snoop_nb.regions.RegionStore`, or None when it has no
        regions (``create=True``: an empty one is made)."""
        from snoop_nb import regions

        if self._regions is None:
            if not create and not (self.root / regions.REGIONS_FILE).is_file():
                return None
            self._regions = regions.RegionStore(self, create=True)
        return self._regions

    def index_regions(self, **options: Any) -> dict[str, Any]:
        """Embed a few windows of every picture not done yet, so that searches find small
        objects (see :mod:`snoop_nb.regions`; ``scales``, ``stride``, ``batch``,
        ``progress``). Incremental and resumable; holds the writer lock while it runs."""
        from snoop_nb.regions import index_regions

        with self._writer_lock():
            return index_regions(self, **options)

    # --- search -------------------------------------------------------------------------
    def search(
        self,
        *,
        item: int | None = None,
        image: Any = None,
        text: str | None = None,
        vector: Any = None,
        clip: Any = None,
        k: int = 10,
        exact: bool | None = None,
        group: str | None = None,
        expand: bool = True,
        box: Any = None,
        regions: bool | None = None,
    ) -> pd.DataFrame:
        """Nearest items to one query: an item id (a keyframe's too), an image, a text, a
        vector, or a clip of video (``"file.mp4"`` or ``("file.mp4", t0, t1)`` seconds:
        several frames pooled). ``box=(x0, y0, x1, y1)`` with ``item`` or ``image``: the query
        is that region of the picture (fractions of its width and height, or pixels).
        ``regions``: also match the indexed regions of the items (default: when the
        collection has them, :meth:`index_regions`); rows then carry the matching region's
        ``box`` (None: the whole picture matched better) and ``region_similarity``, and the
        score is the similarity (no diffusion: its graph is of whole pictures).

        Returns a DataFrame with columns rank, id, uri, score, kind, width, height, video,
        t_start, t_end, ..., and the items' metadata (a keyframe's ``t``, ``shot`` and its
        video's fields). ``group="video"`` returns one row per video instead, best first, with
        its ``moments`` (see :func:`snoop_nb.search.group_by_video`). ``exact=None`` searches
        exactly below :data:`EXACT_SEARCH_BELOW` items and through HNSW above. ``score`` is
        the expanded score (diffusion over the nearest candidates' own graph, see
        :mod:`snoop_nb.search`), ``similarity`` the cosine; ``expand=False``: plain
        nearest neighbours, ``score`` the cosine.

        >>> col.search(text="a bird", k=5)   # doctest: +SKIP
        >>> col.search(text="a bird", k=5, group="video")   # doctest: +SKIP
        """
        from snoop_nb import search

        return search.search(
            self,
            item=item,
            image=image,
            text=text,
            vector=vector,
            clip=clip,
            k=k,
            exact=exact,
            group=group,
            expand=expand,
            box=box,
            regions=regions,
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

    Creating is safe when several processes do it at once (one collection results), and a
    directory holding anything but an empty half-made collection is refused, never wiped.

    >>> open_collection("small.snoop", create=True, index_params={"min_fit": 100})  # doctest: +SKIP
    """
    root = Path(path).expanduser().absolute()
    manifest_path = root / layout.MANIFEST_NAME
    if manifest_path.exists():
        manifest = read_manifest(manifest_path)
        return Collection(
            root, manifest, _embedder_for(root, manifest, model, pretrained, device, embedder)
        )
    if not create:
        if root.exists() and any(root.iterdir()):
            raise CollectionError(f"{root} is not a snoop-nb collection (no manifest.json)")
        raise CollectionError(
            f"no collection at {root}: create one with `snoop index PATH --collection {root}`"
        )
    if root.exists() and not root.is_dir():
        raise CollectionError(f"{root} exists and is not a directory")
    if root.exists():
        layout.refuse_unless_fresh(root)  # before loading a model for nothing
    if embedder is None:
        from snoop_nb.embed import load_embedder

        embedder = load_embedder(model, pretrained, device=device)
    manifest = layout.create(root, embedder, index_params)
    # another process may have made it meanwhile: then it must be by the same embedder
    check_same_embedder(root, manifest, embedder)
    return Collection(root, manifest, embedder)


def _embedder_for(
    root: Path,
    manifest: dict[str, Any],
    model: str | None,
    pretrained: str | None,
    device: str,
    embedder: Embedder | None,
) -> Embedder | None:
    """The embedder an existing collection is opened with (None: loaded on first use)."""
    spec = manifest["embedder"]
    if embedder is not None:
        check_same_embedder(root, manifest, embedder)
        return embedder
    if model is not None or pretrained is not None:
        from snoop_nb.embed import canonical_model, load_embedder

        # a manifest always names its model (the first default's is "efficientnet_lite0")
        want, have = canonical_model(model), spec.get("name") or "efficientnet_lite0"
        if want != have:
            raise EmbedderMismatchError(
                f"{root} was built with model {have} ({spec.get('id')}), not {want}: "
                "vectors of two models cannot be mixed; use another collection directory"
            )
        # same model: the weights decide (a copy of the same file elsewhere is fine)
        embedder = load_embedder(model, pretrained, device=device)
        check_same_embedder(root, manifest, embedder)
        return embedder
    if device != "auto":
        from snoop_nb.embed import load_embedder

        embedder = load_embedder(spec.get("name"), spec.get("pretrained"), device=device)
        check_same_embedder(root, manifest, embedder)
        return embedder
    return None
