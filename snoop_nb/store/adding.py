"""Adding to a collection: files embedded here, or vectors computed anywhere else.

Each batch is made durable in two steps, under the writer lock: its vectors are appended and
fsync'ed, then its catalog rows (with the new row count) are committed in one transaction. The
catalog is the truth: vector rows past its count are the trace of a run killed in between and
are cut off by the next writer. So a run killed at any moment and run again ends with every file
catalogued exactly once.

A video is analysed (shots, then its keyframes decoded) in worker threads a little ahead of the
embedder, and committed whole: its keyframes' vectors are fsync'ed, then its ``videos`` row and
all its keyframe items go in one transaction (see :mod:`snoop_nb.store.videos`), so a run killed
mid-video leaves nothing of that video and the next run redoes it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import MediaError, UsageError
from snoop_nb.store.catalog import ITEM_COLUMNS, readable
from snoop_nb.store.lock import writer_lock
from snoop_nb.store.vectors import unit_rows
from snoop_nb.store.videos import Videos, keyframe_key, keyframe_meta, read_sidecar

if TYPE_CHECKING:
    from PIL import Image

    from snoop_nb.embed.base import Embedder
    from snoop_nb.media.video import ShotReport, VideoInfo
    from snoop_nb.store.catalog import Catalog
    from snoop_nb.store.upkeep import IndexKeeper
    from snoop_nb.store.vectors import VectorStore

#: Save the HNSW index at least this often (seconds) during a long run.
INDEX_SAVE_EVERY = 300.0
#: Keys of :meth:`Adder.add_vectors` metadata that fill catalog columns, not ``meta``.
COLUMN_KEYS = ("kind", "video", "t_start", "t_end", "size", "digest", "width", "height")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: Keyframe thumbnails: ``<root>/keyframes/<item id>.jpg``, this long on their longest side.
THUMBS_DIR = "keyframes"
THUMB_SIDE = 320


@dataclass
class AddReport:
    """What one :meth:`Collection.add` run did. ``retried`` counts the files that had failed
    before and were tried again (those that failed again are among ``errors`` too).

    Counts of files (``discovered``, ``skipped``, ``replaced``, ``retried``, ``errors``) hold
    pictures and videos; ``added`` counts items (pictures and keyframes). ``videos`` are the
    videos analysed and committed by this run (new or replaced), holding ``keyframes`` of the
    items added and ``hours`` of video; ``metadata_updated`` the videos whose sidecar fields
    changed without being analysed again; ``meta_updated`` the items whose metadata a list's
    columns changed (see :mod:`snoop_nb.sources`) without being embedded again; ``warnings``
    are ``(uri or CSV, message)`` pairs (a truncated video's, a sidecar row naming no video of
    the collection, ...).
    """

    discovered: int = 0
    skipped: int = 0
    added: int = 0
    replaced: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    retried: int = 0
    videos: int = 0
    keyframes: int = 0
    hours: float = 0.0
    metadata_updated: int = 0
    warnings: list[tuple[str, str]] = field(default_factory=list)
    meta_updated: int = 0

    def merge(self, other: AddReport) -> AddReport:
        """This report with ``other``'s counts, files and warnings added (one run in parts)."""
        for name in ("discovered", "skipped", "added", "replaced", "retried", "videos"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("keyframes", "metadata_updated", "meta_updated"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.hours += other.hours
        self.errors += other.errors
        self.warnings += other.warnings
        return self

    def __str__(self) -> str:
        videos = ""
        if self.videos or self.keyframes:
            videos = f" ({self.keyframes} keyframes of {self.videos} videos, {self.hours:.2f} h)"
        meta = (
            f", metadata of {self.metadata_updated} videos updated" if self.metadata_updated else ""
        )
        if self.meta_updated:
            meta += f", metadata of {self.meta_updated} items updated"
        return (
            f"{self.added} added{videos}, {self.replaced} replaced, {self.skipped} unchanged, "
            f"{self.retried} retried, {len(self.errors)} bad files{meta}, "
            f"in {self.seconds:.1f} s"
        )


@dataclass
class Analysed:
    """One video read by a worker: its probe, its shots, and its keyframes' frames (or why it
    could not be read)."""

    path: Path
    info: VideoInfo | None = None
    shots: ShotReport | None = None
    times: list[float] = field(default_factory=list)
    shot_of: list[int] = field(default_factory=list)
    frames: list[Image.Image] = field(default_factory=list)
    error: str | None = None


def _reason(e: BaseException, path: Path) -> str:
    """A media error's reason without the path in front (the report names the file)."""
    reason = getattr(e, "reason", None) or str(e)
    for prefix in (f"{path}: ", f"{readable(path)}: "):
        if reason.startswith(prefix):
            return reason[len(prefix) :]
    return reason


def _file_fault() -> tuple[type[BaseException], ...]:
    """Exceptions that are a video file's fault (recorded as its error, never a crash)."""
    faults: tuple[type[BaseException], ...] = (MediaError, OSError, EOFError)
    try:
        import av

        faults += (av.error.FFmpegError,)
    except (ImportError, AttributeError):
        pass
    return faults


def analyse_video(
    path: Path,
    info: VideoInfo | None,
    *,
    detector: str,
    keyframe_every: float,
    max_side: int | None,
) -> Analysed:
    """Probe (unless ``info``), find the shots of and decode the keyframes of one video; a file
    that cannot be read comes back with its ``error``. Runs in a worker thread."""
    from snoop_nb.media.video import detect_shots, probe, read_frames

    out = Analysed(path, info)
    try:
        if out.info is None:
            out.info = probe(path)
        out.shots = detect_shots(
            path, detector=detector, keyframe_every=keyframe_every, info=out.info
        )
        out.info = out.shots.info
        seen: set[str] = set()
        for shot in out.shots.shots:
            for t in shot.keyframes:
                mark = f"{t:.3f}"
                if mark not in seen:  # two keyframes within a millisecond are one moment
                    seen.add(mark)
                    out.times.append(round(float(t), 3))
                    out.shot_of.append(int(shot.index))
        if not out.times:
            raise MediaError("no keyframe could be found", path)
        out.frames = read_frames(path, out.times, max_side=max_side, info=out.info)
        if len(out.frames) != len(out.times):
            raise MediaError(
                f"{len(out.frames)} frames decoded for {len(out.times)} keyframes", path
            )
    except _file_fault() as e:
        out.error = _reason(e, path) or type(e).__name__
        out.frames = []
    return out


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
        metadata: str | os.PathLike | None = None,
        keyframe_every: float = 10.0,
        detector: str = "transnetv2",
        remote: Sequence[Any] = (),
    ) -> AddReport:
        """See :meth:`snoop_nb.collection.Collection.add`. ``remote`` are items keyed apart
        from their file (:class:`snoop_nb.sources.Remote`: a URL and its cached copy, or a
        listed file and why it is missing), embedded with the discovered pictures."""
        from snoop_nb.embed.pipeline import embed_stream
        from snoop_nb.media.discover import discover_media, is_video_name, outside

        start = time.monotonic()
        report = AddReport()
        extra = {} if max_pixels is None else {"max_pixels": int(max_pixels)}
        if not keyframe_every > 0:
            raise UsageError(
                f"keyframe_every must be a positive number of seconds, not {keyframe_every}"
            )
        sidecar: dict[bytes, dict[str, str]] | None = None
        if metadata is not None:
            sidecar, notes = read_sidecar(metadata)
            report.warnings += [(str(metadata), n) for n in notes]
        found, own = outside(discover_media(paths), self.root)
        if own:
            report.warnings.append(
                (str(self.root), f"{own} files inside the collection itself left out")
            )
        videos = [p for p in found if is_video_name(p.name)]
        images = [p for p in found if not is_video_name(p.name)]
        with writer_lock(self.root):
            self.store.trim(self.catalog.rows())
            todo, stats, old = self._plan(iter(images), report)
            keys = failed = None
            if remote:
                keys, failed = self._plan_remote(remote, todo, stats, old, report)
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
                if failed:
                    self._commit_batch(vec_file, *failed, old, meta, report, keys=failed[0])
                for batch in batches:
                    self._commit_batch(vec_file, todo, stats, batch, old, meta, report, keys)
                    if update_index and time.monotonic() - last_save > INDEX_SAVE_EVERY:
                        self.keeper.sync(save=True)
                        last_save = time.monotonic()
            if videos or sidecar:
                self._add_videos(
                    videos,
                    embedder,
                    report,
                    sidecar=sidecar,
                    batch_size=batch_size,
                    workers=workers,
                    progress=progress,
                    keyframe_every=float(keyframe_every),
                    detector=detector,
                    update_index=update_index,
                )
            if sidecar is not None:
                self._apply_sidecar(sidecar, str(metadata), report)
            if update_index:
                self.keeper.sync(save=True)
        report.seconds = time.monotonic() - start
        return report

    # --- videos --------------------------------------------------------------------------
    def _add_videos(
        self,
        found: list[Path],
        embedder: Callable[[], Embedder],
        report: AddReport,
        *,
        sidecar: dict[bytes, dict[str, str]] | None,
        batch_size: int,
        workers: int | None,
        progress: bool | None,
        keyframe_every: float,
        detector: str,
        update_index: bool,
    ) -> None:
        """Analyse the new, changed and failed videos among ``found`` in worker threads, a few
        ahead of the embedder, and commit each one whole, in discovery order."""
        from snoop_nb.embed.pipeline import decode_size, default_workers

        todo, known = self._plan_videos(found, report)
        if not todo:
            return
        emb = embedder()
        max_side = max(decode_size(emb)[0], THUMB_SIDE)  # the thumbnails come from these frames
        infos = self._probe_all([p for p, *_ in todo])
        hours = sum(i.duration for i in infos if i is not None) / 3600.0
        show = progress if progress is not None else len(todo) > 1
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=round(hours, 4), desc="videos", unit="h", smoothing=0.1)
            bar.bar_format = "{l_bar}{bar}| {n:.2f}/{total:.2f} h [{elapsed}<{remaining}]"
        n_workers = max(1, workers or default_workers())
        pool = ThreadPoolExecutor(n_workers, thread_name_prefix="snoop-video")
        pending: deque[tuple[int, Future[Analysed]]] = deque()
        next_i = 0

        def fill() -> None:
            nonlocal next_i
            while next_i < len(todo) and len(pending) < n_workers:
                fut = pool.submit(
                    analyse_video,
                    todo[next_i][0],
                    infos[next_i],
                    detector=detector,
                    keyframe_every=keyframe_every,
                    max_side=max_side,
                )
                pending.append((next_i, fut))
                next_i += 1

        last_save = time.monotonic()
        try:
            with self.store.open_for_append() as vec_file:
                fill()
                while pending:
                    i, fut = pending.popleft()
                    fill()  # the next videos are read while this one is embedded
                    got = fut.result()
                    _, key, stats, prior = todo[i]
                    fields = sidecar.get(key) if sidecar is not None else None
                    if fields is None and prior is not None:
                        fields = known[key][4] or None  # keep what an earlier sidecar gave
                    self._commit_video(
                        vec_file, emb, got, key, stats, prior, fields, report, batch_size, workers
                    )
                    if bar is not None and got.info is not None:
                        bar.update(round(got.info.duration / 3600.0, 4))
                    if update_index and time.monotonic() - last_save > INDEX_SAVE_EVERY:
                        self.keeper.sync(save=True)
                        last_save = time.monotonic()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()

    def _plan_videos(
        self, found: Iterable[Path], report: AddReport
    ) -> tuple[
        list[tuple[Path, bytes, tuple[int | None, int | None], int | None]],
        dict[bytes, tuple[int, int | None, int | None, str, dict[str, Any]]],
    ]:
        """Which discovered videos need analysing: ``(path, key, (size, mtime), prior video
        id)`` each, with what the catalog knows of its videos. The rules of :meth:`_plan`:
        unchanged ones are skipped, changed ones replaced, failed ones tried again."""
        known = Videos(self.catalog).known()
        todo = [
            (p, key, stats, None if hit is None else hit[0])
            for p, key, stats, hit in _needing_work(found, known, report)
        ]
        return todo, known

    @staticmethod
    def _probe_all(paths: list[Path]) -> list[VideoInfo | None]:
        """Each video's probe (None where it fails: its analysis records why)."""
        from snoop_nb.media.video import probe

        faults = _file_fault()
        out: list[VideoInfo | None] = []
        for p in paths:
            try:
                out.append(probe(p))
            except faults:
                out.append(None)
        return out

    def _commit_video(
        self,
        vec_file,
        emb: Embedder | None,
        got: Analysed,
        key: bytes,
        stats: tuple[int | None, int | None],
        prior: int | None,
        fields: dict[str, Any] | None,
        report: AddReport,
        batch_size: int,
        workers: int | None,
        vectors: np.ndarray | None = None,
    ) -> None:
        """Embed one analysed video's keyframes (unless their ``vectors`` were computed
        elsewhere, e.g. on a Dask worker), append their vectors durably, then write the video
        and its keyframes in one transaction; its thumbnails follow, best effort."""
        videos = Videos(self.catalog)
        uri = readable(key)
        size, mtime = stats
        values: dict[str, Any] = {"size": size, "mtime_ns": mtime, "meta": None}
        if fields:
            values["meta"] = json.dumps(fields)
        info = got.info
        values.update(
            duration=float(info.duration) if info else None,
            fps=float(info.fps) if info else None,
            width=int(info.width) if info else None,
            height=int(info.height) if info else None,
            codec=info.codec if info else None,
            audio=int(bool(info.audio)) if info else None,
            rotation=int(info.rotation) if info else None,
        )
        first = self.catalog.rows()
        if got.error is not None:
            values.update(status="error", error=got.error, warning=None, shots=None)
            report.errors.append((uri, got.error))
            videos.commit(key, values, [], rows=first, prior=prior)
            return
        assert got.shots is not None and info is not None
        if vectors is None:
            assert emb is not None
            vectors = emb.encode_images(
                got.frames, batch_size=batch_size, workers=workers, progress=False
            )
        shots = got.shots.shots
        values.update(
            status="ok",
            error=None,
            warning=got.shots.warning,
            detector=got.shots.detector,
            shots=json.dumps([s.as_dict() for s in shots]),
        )
        by_index = {s.index: s for s in shots}
        keyframes = []
        for row, (t, shot) in enumerate(zip(got.times, got.shot_of, strict=True)):
            bounds = by_index[shot]
            keyframes.append(
                {
                    "id": first + row,
                    "path": keyframe_key(key, t),
                    "uri": readable(keyframe_key(key, t)),
                    "video": uri,
                    "t_start": float(bounds.start),
                    "t_end": float(bounds.end),
                    "width": int(info.width),
                    "height": int(info.height),
                    "meta": keyframe_meta(t, shot, 0, fields),  # video_id set by the commit
                }
            )
        self.store.append(vec_file, vectors)
        _, ids, deleted = videos.commit(
            key, values, keyframes, rows=first + len(keyframes), prior=prior
        )
        report.videos += 1
        report.keyframes += len(ids)
        report.added += len(ids)
        report.hours += float(info.duration) / 3600.0
        if prior is not None and deleted:
            report.replaced += 1
        if got.shots.warning:
            report.warnings.append((uri, got.shots.warning))
        self._write_thumbs(ids, got.frames, deleted)
        got.frames = []

    def _write_thumbs(self, ids: list[int], frames: list, deleted: list[int]) -> None:
        """``keyframes/<id>.jpg`` for each new keyframe (a cache: best effort, never an error);
        the replaced keyframes' thumbnails are removed."""
        from snoop_nb.index.base import atomic_write

        folder = self.root / THUMBS_DIR
        try:
            folder.mkdir(exist_ok=True)
            for i in deleted:
                (folder / f"{i}.jpg").unlink(missing_ok=True)
            for i, frame in zip(ids, frames, strict=True):
                thumb = frame.copy()
                thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
                atomic_write(
                    folder / f"{i}.jpg", lambda t, im=thumb: im.save(t, "JPEG", quality=85)
                )
        except OSError:
            pass

    def _apply_sidecar(
        self, sidecar: dict[bytes, dict[str, str]], name: str, report: AddReport
    ) -> None:
        """Bring each catalogued video's sidecar fields up to date; warn of rows naming no
        video of the collection."""
        videos = Videos(self.catalog)
        known = videos.known()
        changes = []
        for key, fields in sidecar.items():
            hit = known.get(key)
            if hit is None:
                report.warnings.append(
                    (name, f"{readable(key)} is not a video of this collection; its row is ignored")
                )
                continue
            video_id, _, _, status, was = hit
            if status == "ok" and was != fields:
                changes.append((video_id, key, was, fields))
        report.metadata_updated = videos.update_meta(changes)

    def _plan(
        self, found: Iterator[Path], report: AddReport
    ) -> tuple[list[Path], list[tuple[int | None, int | None]], dict[bytes, tuple[int, str]]]:
        """Which discovered files need embedding, their (size, mtime) before reading, and the
        item (id, status) each one replaces. Stats taken before reading mean that a file changed
        while it is being embedded is caught as changed by the next run. A file that failed
        before is tried again whatever its stats (a decoder or a limit may have changed)."""
        todo: list[Path] = []
        stats: list[tuple[int | None, int | None]] = []
        old: dict[bytes, tuple[int, str]] = {}
        for p, key, st, hit in _needing_work(found, self.catalog.known(), report):
            if hit is not None:
                old[key] = (hit[0], hit[3])
            todo.append(p)
            stats.append(st)
        return todo, stats, old

    def _plan_remote(self, remote, todo, stats, old, report):
        """Add the ``remote`` items that have a file to ``todo`` (and their stats, and the
        item each replaces to ``old``); returns the catalog keys of all of ``todo``, and the
        failed ones as ``(keys, stats, batch of errors)`` for :meth:`_commit_batch`. A URL
        catalogued ok that cannot be fetched again is kept as it is, with a warning."""
        from snoop_nb.embed.pipeline import Batch

        known = self.catalog.known()
        keys = [os.fsencode(p) for p in todo]
        seen = set(keys)
        f_keys: list[bytes] = []
        f_stats: list[tuple[int | None, int | None]] = []
        f_batch = Batch(vectors=np.zeros((0, self.store.dim), np.float16))
        for r in remote:
            if r.key in seen:
                continue
            seen.add(r.key)
            report.discovered += 1
            hit = known.get(r.key)
            if hit is not None and hit[3] == "error":
                report.retried += 1
            if r.path is None:
                if hit is not None and hit[3] == "ok":
                    report.skipped += 1
                    report.warnings.append((readable(r.key), f"kept as it was: {r.error}"))
                    continue
                if hit is not None:
                    old[r.key] = (hit[0], hit[3])
                f_batch.errors.append((len(f_keys), MediaError(r.error or "not fetched")))
                f_keys.append(r.key)
                f_stats.append((None, None))
                continue
            if hit is not None:
                old[r.key] = (hit[0], hit[3])
            try:
                st = os.stat(r.path)
                stats.append((st.st_size, st.st_mtime_ns))
            except OSError:
                stats.append((None, None))
            todo.append(Path(r.path))
            keys.append(r.key)
        return keys, ((f_keys, f_stats, f_batch) if f_keys else None)

    def _commit_batch(self, vec_file, todo, stats, batch, old, meta, report, keys=None) -> None:
        """Append one batch's vectors durably, then catalogue it in one transaction. A file
        that fails again keeps its row (its error is updated): a new row would only add a
        zero vector per run. ``keys[i]`` is ``todo[i]``'s catalog key where it is not the
        file's path (a URL)."""
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
            key = keys[i] if keys is not None else os.fsencode(todo[i])
            prior = old.get(key)
            if status == "error":
                report.errors.append((readable(key), what.reason))
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
            key = keys[i] if keys is not None else os.fsencode(path)
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
            records.append(_record(first + row, key, readable(key), now, **values))
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


def _needing_work(
    found: Iterable[Path], known: dict[bytes, tuple], report: AddReport
) -> Iterator[tuple[Path, bytes, tuple[int | None, int | None], tuple | None]]:
    """The planning rules of pictures and videos alike: each discovered file once (absolute
    path), with its (size, mtime) taken before reading and what the catalog knows of it
    (``known[key]``: id, size, mtime, status, ...; None when new), unless it is unchanged.
    A file that failed before is tried again whatever its stats. Counts ``discovered``,
    ``skipped`` and ``retried`` in ``report``."""
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
            _, was_size, was_mtime, status = hit[:4]
            if status == "error":
                report.retried += 1
            elif was_size == size and was_mtime == mtime:
                report.skipped += 1
                continue
        yield p, key, (size, mtime), hit


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
