"""Indexing on a Dask cluster: the sources split into shards, embedded on the workers, committed
by the client shard by shard as they finish.

The client plans with the :class:`~snoop_nb.store.adding.Adder`'s own rules (unchanged files
skipped, changed ones replaced, failed ones tried again) under the collection's writer lock,
then submits one task per shard of pictures and one per video. A worker loads the collection's
embedder once per process (checked to be the one the manifest names), decodes and embeds its
shard with the same kernel as :meth:`Collection.add <snoop_nb.collection.Collection.add>`
(:func:`~snoop_nb.embed.pipeline.embed_stream`; a video is analysed by
:func:`~snoop_nb.store.adding.analyse_video`) and sends back vectors, file facts and bad
files, never touching the collection. The client commits each result as it completes, through
the Adder's commit path: vectors fsync'ed, then the catalog rows in one transaction (a video
with its ``videos`` row, shots and keyframe thumbnails), so the collection is the one a
single-process run makes, up to item ids (the order in which shards finish).

Failures: a task that raises is retried (``retries``); a worker that dies has its tasks
rescheduled by Dask on the others (and a LocalCluster's nanny restarts it), while every shard
already committed stays; a client killed at any moment leaves whole shards only, and the same
run again skips them. The workers must see the files at the same paths as the client (one
machine, or a shared file system).

>>> add_distributed(col, ["photos/"], scheduler="local:2")             # doctest: +SKIP
>>> add_distributed(col, ["photos/"], scheduler="tcp://10.0.0.5:8786")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import SnoopError, UsageError
from snoop_nb.store.adding import INDEX_SAVE_EVERY, THUMB_SIDE, AddReport, Analysed
from snoop_nb.store.lock import writer_lock

if TYPE_CHECKING:
    from distributed import Client

    from snoop_nb.collection import Collection
    from snoop_nb.embed.base import Embedder
    from snoop_nb.embed.pipeline import Batch

#: Pictures per task: small enough that a lost worker costs little, big enough to batch.
SHARD_SIZE = 64
#: How often a task that raised is tried again (a worker's death is Dask's own business).
RETRIES = 2
#: Seconds to wait for a scheduler at an address before giving up.
CONNECT_TIMEOUT = 10.0
_LOCAL = re.compile(r"^local(?::(\d+))?$")
_HOST = r"(?:\[[0-9a-fA-F:.]+\]|[\w.-]+)"
#: ``scheme://host[:port]`` (Dask's default port without one), or ``host:port`` for TCP.
_ADDRESS = re.compile(rf"^(?:(?:tcp|tls|ws|wss|ucx)://{_HOST}(?::\d+)?|({_HOST}:\d+))$")


class ClusterError(SnoopError):
    """The Dask cluster could not be reached, or a task failed on it for good."""


# --- the scheduler -------------------------------------------------------------------------
def parse_scheduler(text: str) -> str | int:
    """``local`` or ``local:N`` as a worker count (``local``: one per usable core), an address
    (``tcp://host:port``, or ``host:port`` for TCP) as a URL; anything else is a
    :class:`UsageError`.

    >>> parse_scheduler("local:2"), parse_scheduler("10.0.0.5:8786")
    (2, 'tcp://10.0.0.5:8786')
    """
    text = text.strip()
    m = _LOCAL.match(text)
    if m:
        n = int(m.group(1)) if m.group(1) is not None else _usable_cores()
        if n < 1:
            raise UsageError(f"{text}: a local cluster needs at least 1 worker")
        return n
    m = _ADDRESS.match(text)
    if m:
        return f"tcp://{text}" if m.group(1) else text
    raise UsageError(
        f"{text!r} is not a Dask scheduler: give its address (tcp://host:port) or local[:N] "
        "for a cluster of N worker processes on this machine"
    )


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _distributed():
    try:
        import distributed
    except ImportError:
        raise UsageError(
            "indexing on Dask needs dask.distributed: pip install 'snoop-nb[dask]'"
        ) from None
    return distributed


@contextlib.contextmanager
def connect(scheduler: str | int | Client, *, timeout: float = CONNECT_TIMEOUT) -> Iterator[Client]:
    """A client of ``scheduler``: a :class:`distributed.Client` (used as it is, left open), an
    address, or a worker count for a LocalCluster made here (N processes of one thread each,
    the usable cores shared out between them, memory split evenly; closed afterwards)."""
    distributed = _distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if isinstance(scheduler, str):
        scheduler = parse_scheduler(scheduler)
    if isinstance(scheduler, int):
        cluster = distributed.LocalCluster(
            n_workers=scheduler,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit="auto",
        )
        try:
            with distributed.Client(cluster) as client:
                if hasattr(os, "sched_setaffinity"):
                    client.register_plugin(ShareCores(sorted(os.sched_getaffinity(0)), scheduler))
                yield client
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as e:
        raise ClusterError(
            f"cannot reach the Dask scheduler at {scheduler} ({e}): is it running, and is the "
            "address right? (local[:N] starts a cluster on this machine)"
        ) from None
    with client:
        yield client


def dashboard_note(client: Client) -> str:
    """One line saying where the Dask dashboard is, or why there is none."""
    try:
        link = client.dashboard_link
    except Exception:  # a client of an old or unusual scheduler: no dashboard to name
        link = None
    if not link:
        return "Dask dashboard: none (the scheduler serves no dashboard)"
    local = type(client.cluster).__name__ == "LocalCluster"
    if local and not _has_bokeh():
        return f"Dask dashboard: none (pip install 'bokeh>=3.1' to have one at {link})"
    return f"Dask dashboard: {link}"


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _in_notebook() -> bool:
    """Running in a Jupyter kernel (IPython is never imported here for that)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")


try:  # a real WorkerPlugin when Dask is installed (register_plugin refuses duck types)
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - only without the dask extra
    _WorkerPlugin = object  # type: ignore[assignment,misc]


class ShareCores(_WorkerPlugin):
    """Pins each worker of a LocalCluster to its share of the machine's cores, so that the
    model's threads (sized by the usable cores) and the decoding threads of N workers add up to
    the cores there are, instead of N times as many."""

    idempotent = True
    name = "snoop-share-cores"

    def __init__(self, cpus: list[int], workers: int):
        self.cpus = list(cpus)
        self.workers = int(workers)

    def share(self, index: int) -> set[int]:
        """The cores of worker ``index`` (contiguous blocks; round robin past one each)."""
        n, cpus = self.workers, self.cpus
        if n <= len(cpus):
            i = index % n
            return set(cpus[i * len(cpus) // n : (i + 1) * len(cpus) // n])
        return {cpus[index % len(cpus)]}

    def setup(self, worker) -> None:
        try:
            index = int(worker.name)
        except (TypeError, ValueError):
            return
        cpus = self.share(index)
        # every thread there is now; the executor's and the model's threads, made later,
        # inherit the mask from the thread that makes them
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), cpus)


# --- on the workers ------------------------------------------------------------------------
_EMBEDDERS: dict[str, Embedder] = {}  # this worker process's models, by embedder spec
_EMBEDDERS_LOCK = threading.Lock()


def worker_embedder(spec: dict[str, Any]) -> Embedder:
    """The collection's embedder in this process, loaded once per spec and checked to be the
    one its manifest names (a worker with other weights would mix two vector spaces)."""
    key = json.dumps([spec["embedder"], spec["dim"], spec["device"]], sort_keys=True)
    with _EMBEDDERS_LOCK:
        emb = _EMBEDDERS.get(key)
        if emb is None:
            from snoop_nb.embed import load_embedder
            from snoop_nb.store.layout import check_same_embedder

            want = spec["embedder"]
            emb = load_embedder(want.get("name"), want.get("pretrained"), device=spec["device"])
            check_same_embedder(Path(spec["root"]), {"embedder": want, "dim": spec["dim"]}, emb)
            _share_torch_threads()
            _EMBEDDERS[key] = emb
    return emb


def _loaded(spec: dict[str, Any]) -> str:
    """A Dask task: load the collection's embedder in this worker; its id."""
    return worker_embedder(spec).id


def embedder_spec(col: Collection, device: str = "auto") -> dict[str, Any]:
    """What a worker needs to load ``col``'s embedder and check it (see :func:`worker_embedder`)."""
    return {
        "root": str(col.root),
        "embedder": dict(col.manifest["embedder"]),
        "dim": col.dim,
        "device": device,
    }


def warm_up(client: Client, col: Collection, *, device: str = "auto") -> dict[str, str]:
    """Load ``col``'s embedder on every worker of ``client`` now (a run would on its first
    task): the load is paid, and a worker that cannot load it said so, before a run starts.
    Returns each worker's embedder id by address."""
    spec = embedder_spec(col, device)
    token = uuid.uuid4().hex[:12]
    futures = {
        address: client.submit(
            _loaded, spec, key=f"snoop-warm-up-{token}-{address}", workers=[address], pure=False
        )
        for address in client.scheduler_info()["workers"]
    }
    return {address: fut.result() for address, fut in futures.items()}


def _share_torch_threads() -> None:
    """PyTorch's threads: this worker's usable cores over its task threads (Dask's nanny
    starts workers with OMP_NUM_THREADS=1, too few for a worker that has a machine to itself)."""
    if "torch" not in sys.modules:
        return
    import torch

    try:
        from distributed import get_worker

        threads = max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        threads = 1
    torch.set_num_threads(max(1, _usable_cores() // threads))


def embed_pictures(
    spec: dict[str, Any],
    start: int,
    keys: list[bytes],
    *,
    batch_size: int,
    decode_threads: int | None,
    max_pixels: int | None,
) -> Batch:
    """A Dask task: embed one shard of pictures (``keys``: their paths' bytes). Returns one
    :class:`~snoop_nb.embed.pipeline.Batch` whose indices count from ``start``, the shard's
    place in the run's plan."""
    from snoop_nb.embed.pipeline import Batch, embed_stream

    emb = worker_embedder(spec)
    extra = {} if max_pixels is None else {"max_pixels": int(max_pixels)}
    sources = [Path(os.fsdecode(k)) for k in keys]
    out = Batch(vectors=np.zeros((0, emb.dim), np.float16))
    blocks = [out.vectors]
    for batch in embed_stream(
        emb, sources, batch_size=batch_size, workers=decode_threads, progress=False, **extra
    ):
        out.indices += [start + i for i in batch.indices]
        out.infos += batch.infos
        out.errors += [(start + i, e) for i, e in batch.errors]
        blocks.append(batch.vectors)
    out.vectors = np.concatenate(blocks)
    return out


def analyse_and_embed_video(
    spec: dict[str, Any],
    key: bytes,
    *,
    detector: str,
    keyframe_every: float,
    batch_size: int,
    decode_threads: int | None,
) -> tuple[Analysed, np.ndarray | None]:
    """A Dask task: find one video's shots, decode and embed its keyframes. Its frames come
    back shrunk to thumbnails (what the client keeps of them), with their vectors."""
    from snoop_nb.embed.pipeline import decode_size
    from snoop_nb.store.adding import analyse_video

    emb = worker_embedder(spec)
    max_side = max(decode_size(emb)[0], THUMB_SIDE)
    got = analyse_video(
        Path(os.fsdecode(key)),
        None,
        detector=detector,
        keyframe_every=keyframe_every,
        max_side=max_side,
    )
    if got.error is not None:
        return got, None
    vectors = emb.encode_images(
        got.frames, batch_size=batch_size, workers=decode_threads, progress=False
    )
    for frame in got.frames:
        frame.thumbnail((THUMB_SIDE, THUMB_SIDE))  # as the client's would: it then keeps them
    return got, vectors


# --- on the client -------------------------------------------------------------------------
def add_distributed(
    col: Collection,
    paths: Iterable[str | os.PathLike],
    *,
    scheduler: str | int | Client = "local",
    shard_size: int = SHARD_SIZE,
    retries: int = RETRIES,
    batch_size: int = 32,
    workers: int | None = None,
    device: str = "auto",
    progress: bool | None = None,
    meta: Callable[[Path], dict[str, Any]] | None = None,
    update_index: bool = True,
    max_pixels: int | None = None,
    metadata: str | os.PathLike | None = None,
    keyframe_every: float = 10.0,
    detector: str = "transnetv2",
    connect_timeout: float = CONNECT_TIMEOUT,
) -> AddReport:
    """:meth:`Collection.add <snoop_nb.collection.Collection.add>` with the embedding done on a
    Dask cluster: the same items, vectors and report, committed shard by shard.

    ``scheduler`` is ``"local"`` / ``"local:N"`` (a LocalCluster of N worker processes on this
    machine, made and closed here), a scheduler's address (``"tcp://host:port"``), or a
    :class:`distributed.Client` (left open). Pictures go ``shard_size`` to a task, each video
    to its own; a task that raises is tried ``retries`` more times, then the run stops with a
    :class:`ClusterError`, keeping what was committed. ``workers`` are each worker's decoding
    threads; ``device`` the workers' (``"auto"``, ``"cpu"``, ``"cuda"``). The cluster is only
    reached when there is something to embed. Progress: a bar over the files, and the Dask
    dashboard's address (on stderr; printed in a notebook).

    >>> add_distributed(col, ["photos/"], scheduler="local:2", shard_size=128)  # doctest: +SKIP
    """
    from snoop_nb.media.discover import discover_media, is_video_name, outside
    from snoop_nb.media.video import DETECTORS
    from snoop_nb.store.videos import read_sidecar

    start_time = time.monotonic()
    if not isinstance(scheduler, (str, int)):
        _distributed()  # a Client: Dask is there
    elif isinstance(scheduler, str):
        scheduler = parse_scheduler(scheduler)
    if shard_size < 1:
        raise UsageError(f"shard_size must be at least 1, not {shard_size}")
    if retries < 0:
        raise UsageError(f"retries must be 0 or more, not {retries}")
    if not keyframe_every > 0:
        raise UsageError(
            f"keyframe_every must be a positive number of seconds, not {keyframe_every}"
        )
    if detector not in DETECTORS:
        raise UsageError(f"unknown shot detector {detector!r}: use one of {', '.join(DETECTORS)}")
    report = AddReport()
    sidecar: dict[bytes, dict[str, str]] | None = None
    if metadata is not None:
        sidecar, notes = read_sidecar(metadata)
        report.warnings += [(str(metadata), n) for n in notes]
    found, own = outside(discover_media(paths), col.root)
    if own:
        report.warnings.append(
            (str(col.root), f"{own} files inside the collection itself left out")
        )
    adder = col._adder  # the collection's own writer: its plan and commit paths
    spec = embedder_spec(col, device)
    with writer_lock(col.root):
        adder.store.trim(adder.catalog.rows())
        todo, stats, old = adder._plan(
            iter([p for p in found if not is_video_name(p.name)]), report
        )
        video_todo, known = adder._plan_videos([p for p in found if is_video_name(p.name)], report)
        if todo or video_todo:
            with connect(scheduler, timeout=connect_timeout) as client:
                run = _Run(adder, client, spec, report, retries=retries, progress=progress)
                run.submit_videos(
                    video_todo,
                    detector=detector,
                    keyframe_every=float(keyframe_every),
                    batch_size=batch_size,
                    decode_threads=workers,
                )
                run.submit_pictures(
                    todo,
                    shard_size=shard_size,
                    batch_size=batch_size,
                    decode_threads=workers,
                    max_pixels=max_pixels,
                )
                run.commit_all(
                    todo,
                    stats,
                    old,
                    meta,
                    video_todo,
                    known,
                    sidecar,
                    batch_size=batch_size,
                    update_index=update_index,
                )
        if sidecar is not None:
            adder._apply_sidecar(sidecar, str(metadata), report)
        if update_index:
            adder.keeper.sync(save=True)
    report.seconds = time.monotonic() - start_time
    return report


class _Run:
    """One run's tasks on the cluster, and their commits as they complete."""

    def __init__(self, adder, client: Client, spec, report: AddReport, *, retries, progress):
        self.adder = adder
        self.client = client
        self.spec = spec
        self.report = report
        self.retries = retries
        self.progress = progress
        self.tasks: dict[Any, tuple[str, int, int]] = {}  # future -> (kind, first, count)
        self.token = uuid.uuid4().hex[:12]

    # the tasks' options never take the name of one of Client.submit's own (workers, key, ...)
    def submit_videos(self, video_todo, **options: Any) -> None:
        # videos first: the longest tasks, so that none is left running alone at the end
        for i, (_, key, _, _) in enumerate(video_todo):
            fut = self.client.submit(
                analyse_and_embed_video,
                self.spec,
                key,
                key=f"snoop-video-{self.token}-{i}",
                retries=self.retries,
                pure=False,
                **options,
            )
            self.tasks[fut] = ("video", i, 1)

    def submit_pictures(self, todo: list[Path], *, shard_size: int, **options: Any) -> None:
        for first in range(0, len(todo), shard_size):
            keys = [os.fsencode(p) for p in todo[first : first + shard_size]]
            fut = self.client.submit(
                embed_pictures,
                self.spec,
                first,
                keys,
                key=f"snoop-pictures-{self.token}-{first}",
                retries=self.retries,
                pure=False,
                **options,
            )
            self.tasks[fut] = ("pictures", first, len(keys))

    def commit_all(
        self, todo, stats, old, meta, video_todo, known, sidecar, *, batch_size, update_index
    ) -> None:
        """Commit each task's result as it completes; on a task's final failure, cancel the
        rest and raise (what was committed stays)."""
        distributed = _distributed()
        files = len(todo) + len(video_todo)
        show = self.progress if self.progress is not None else len(self.tasks) > 1
        bar = None
        if show:
            from tqdm.auto import tqdm

            note = dashboard_note(self.client)
            print(note, file=sys.stdout if _in_notebook() else sys.stderr, flush=True)
            bar = tqdm(total=files, desc="indexing on dask", unit="file", smoothing=0.1)
        adder, report = self.adder, self.report
        last_save = time.monotonic()
        done = 0
        try:
            with adder.store.open_for_append() as vec_file:
                for fut in distributed.as_completed(list(self.tasks)):
                    kind, first, count = self.tasks.pop(fut)
                    try:
                        result = fut.result()
                    except SnoopError:  # said on purpose by a worker (a model it cannot load)
                        self.client.cancel(list(self.tasks))
                        raise
                    except Exception as e:
                        self.client.cancel(list(self.tasks))
                        raise self._failure(e, kind, done) from e
                    if kind == "pictures":
                        adder._commit_batch(vec_file, todo, stats, result, old, meta, report)
                    else:
                        got, vectors = result
                        _, key, file_stats, prior = video_todo[first]
                        fields = sidecar.get(key) if sidecar is not None else None
                        if fields is None and prior is not None:
                            fields = known[key][4] or None  # keep what an earlier sidecar gave
                        adder._commit_video(
                            vec_file,
                            None,
                            got,
                            key,
                            file_stats,
                            prior,
                            fields,
                            report,
                            batch_size,
                            None,
                            vectors=vectors,
                        )
                    fut.release()
                    done += 1
                    if bar is not None:
                        bar.update(count)
                    if update_index and time.monotonic() - last_save > INDEX_SAVE_EVERY:
                        adder.keeper.sync(save=True)
                        last_save = time.monotonic()
        finally:
            if bar is not None:
                bar.close()

    def _failure(self, e: BaseException, kind: str, done: int) -> ClusterError:
        what = "a video" if kind == "video" else "a shard of pictures"
        return ClusterError(
            f"{what} failed on the Dask cluster after {self.retries} retries "
            f"({type(e).__name__}: {e}); the {done} tasks committed before are kept: run the "
            "same command again to finish"
        )
