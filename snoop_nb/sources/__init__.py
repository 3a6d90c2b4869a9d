"""Where items come from beyond folders: lists of paths or URLs, IIIF manifests, single URLs.

:meth:`Collection.add <snoop_nb.collection.Collection.add>` (and ``snoop index``) take these
alongside folders and files:

- a ``.txt`` or ``.csv`` list (:mod:`snoop_nb.sources.lists`): local paths join the folders;
  URLs are fetched; a CSV's other columns become the items' metadata; an entry ending in
  ``.json`` is a manifest;
- a IIIF Presentation 2 or 3 manifest or collection, as a local ``.json`` file or an
  ``http(s)`` URL (:mod:`snoop_nb.sources.iiif`): its pictures are fetched through their Image
  API service at the size the embedder needs;
- an ``http(s)`` URL of a picture (its path ends in an image extension), fetched as it is.

Design: a remote picture's item is keyed by its URL (the catalog's ``path`` and ``uri`` are
the URL, as :meth:`Collection.add_vectors` stores URLs), and its bytes live in the
collection's cache, ``<collection>/remote/`` (:func:`snoop_nb.sources.fetch.cache_file` of the
URL), which :meth:`Collection.paths` returns for it, so thumbnails, search, labels and export
read the cached file like any other. A URL already catalogued (status ok) is not fetched
again: a remote picture is taken to be immutable, and a manifest read once is read from the
cache after (``refresh`` fetches both again: a manifest's new pages, a changed picture).
A picture that cannot be fetched (an HTTP error, a timeout after the retries, a body that is
no picture) or a listed file that does not exist is recorded as a bad file with its reason,
and tried again by the next run, like a file that failed to decode.

>>> col.add(["scans.csv", "https://gallica.bnf.fr/iiif/ark:/12148/btv1b8449691v/manifest.json"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from snoop_nb.errors import UsageError
from snoop_nb.sources.fetch import (
    CACHE_DIR,
    DEFAULT_RATE,
    Fetcher,
    FetchError,
    Job,
    cache_file,
    is_url,
)
from snoop_nb.sources.iiif import IIIFImage, image_request, is_iiif, read_manifest
from snoop_nb.sources.lists import read_list

if TYPE_CHECKING:
    from snoop_nb.embed.base import Embedder

__all__ = [
    "CACHE_DIR",
    "DEFAULT_RATE",
    "LIST_SUFFIXES",
    "FetchError",
    "Fetcher",
    "IIIFImage",
    "Prepared",
    "Remote",
    "cache_file",
    "fetch_side",
    "has_sources",
    "image_request",
    "is_source",
    "prepare",
    "read_list",
    "read_manifest",
]

#: Local files read as sources, not pictures: lists and manifests.
LIST_SUFFIXES = (".txt", ".csv")
#: Remote pictures fetched per part (:func:`prepare_parts`): each part is embedded while the
#: next one is fetched, so a manifest of thousands of pages is searchable as it comes.
FETCH_PART = 256
MANIFEST_SUFFIX = ".json"


def is_source(path: str | os.PathLike) -> bool:
    """True for what :func:`prepare` reads (a URL, a ``.txt``/``.csv`` list, a ``.json``
    manifest), False for a folder or a picture or video file."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        return False
    if is_url(text):
        return True
    return os.path.splitext(text)[1].lower() in (*LIST_SUFFIXES, MANIFEST_SUFFIX)


def has_sources(paths: Iterable[str | os.PathLike]) -> bool:
    """True if any of ``paths`` :func:`is_source`."""
    return any(is_source(p) for p in paths)


def fetch_side(embedder: Embedder) -> int:
    """The short side, in pixels, at which remote pictures are fetched for ``embedder``: the
    side its preprocess resizes to (256 for the default model, 224 for ViT-B-32)."""
    from snoop_nb.embed import pipeline

    return max(1, pipeline.decode_size(embedder)[0] // pipeline._MARGIN)


@dataclass
class Remote:
    """One listed or remote item for the adder: its catalog key, its file (the cached copy,
    or a listed local file) or None with the ``error`` that says why there is none."""

    key: bytes
    path: Path | None
    error: str | None = None


@dataclass
class Prepared:
    """What :func:`prepare` made of the sources: ``paths`` for discovery (folders, files, the
    lists' local entries), ``remote`` items that need work (fetched, or failed), their
    metadata by key, how many remote items were already catalogued, and warnings."""

    paths: list[str | os.PathLike] = field(default_factory=list)
    remote: list[Remote] = field(default_factory=list)
    meta: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    known: int = 0
    warnings: list[tuple[str, str]] = field(default_factory=list)
    requests: int = 0
    _files: dict[str, bytes] = field(default_factory=dict)

    def meta_for(
        self, user: Callable[[Path], dict[str, Any]] | None
    ) -> Callable[[Path], dict[str, Any]] | None:
        """The adder's ``meta(path)``: the sources' metadata of a file, then ``user``'s."""
        if not self.meta and user is None:
            return None

        def meta(path: Path) -> dict[str, Any]:
            key = self._files.get(os.fspath(path)) or os.fsencode(os.path.abspath(path))
            out = dict(self.meta.get(key, {}))
            if user is not None:
                out.update(user(path) or {})
            return out

        return meta

    def settle(self, report: Any) -> None:
        """Count the remote items already here, and the warnings, in an add's report."""
        report.discovered += self.known
        report.skipped += self.known
        report.warnings[:0] = self.warnings


@dataclass
class _Want:
    key: str
    meta: dict[str, Any]
    image: IIIFImage | None = None


def prepare(
    paths: Iterable[str | os.PathLike],
    *,
    cache: Path,
    known: dict[bytes, tuple],
    side: Callable[[], int],
    fetch: Fetcher | dict[str, Any] | None = None,
    progress: bool | None = None,
) -> Prepared:
    """Everything :func:`prepare_parts` makes, in one :class:`Prepared` (all pictures fetched
    before it returns)."""
    out = Prepared()
    for part in prepare_parts(
        paths, cache=cache, known=known, side=side, fetch=fetch, progress=progress, part=None
    ):
        out.paths += part.paths
        out.remote += part.remote
        out.meta.update(part.meta)
        out.known += part.known
        out.warnings += part.warnings
        out.requests += part.requests
        out._files.update(part._files)
    return out


def prepare_parts(
    paths: Iterable[str | os.PathLike],
    *,
    cache: Path,
    known: dict[bytes, tuple],
    side: Callable[[], int],
    fetch: Fetcher | dict[str, Any] | None = None,
    progress: bool | None = None,
    part: int | None = FETCH_PART,
) -> Iterator[Prepared]:
    """Read the lists and manifests among ``paths``, and fetch the remote pictures that the
    catalog (``known``: key -> (id, size, mtime, status, ...)) does not hold yet into
    ``cache``, ``part`` pictures at a time (None: all at once): one :class:`Prepared` per part,
    the first also holding the folders and files (which pass through to ``paths``), the lists'
    local entries, the remote items already catalogued and the warnings. ``side()`` (called
    only if a IIIF picture is to be fetched) is the short side wanted. ``fetch`` is a
    :class:`Fetcher` or its options (``rate``, ``timeout``, ``retries``, ``workers``,
    ``refresh``, ...). ``progress`` shows a bar over the pictures fetched (default: when there
    are several).

    Raises :class:`UsageError` for a local list or manifest that cannot be read (before
    anything is fetched).
    """
    if part is not None and int(part) < 1:
        raise UsageError(f"a part holds at least one picture, not {part}")
    fetcher = fetch if isinstance(fetch, Fetcher) else Fetcher(cache, **(fetch or {}))
    try:
        yield from _parts(paths, fetcher, known, side, progress, part)
    finally:
        if not isinstance(fetch, Fetcher):
            fetcher.close()


def _parts(paths, fetcher: Fetcher, known, side, progress, part) -> Iterator[Prepared]:
    before = fetcher.requests
    out = Prepared()
    wants: dict[str, _Want] = {}

    def want(key: str, meta: dict[str, Any], image: IIIFImage | None = None) -> None:
        if key not in wants:
            wants[key] = _Want(key, meta, image)

    def manifest(doc: Any, where: str, extra: dict[str, Any]) -> None:
        images, notes = read_manifest(doc, fetcher, where=where)
        out.warnings.extend((where, n) for n in notes)
        for img in images:
            want(img.key, {**extra, **img.meta}, img)

    def remote_json(url: str, extra: dict[str, Any]) -> None:
        try:
            doc = fetcher.get_json(url)
        except FetchError as e:
            out.warnings.append((url, f"manifest not read: {e.reason}"))
            return
        if not is_iiif(doc):
            out.warnings.append((url, "not a IIIF manifest or collection; ignored"))
            return
        manifest(doc, url, extra)

    def local_json(path: str, extra: dict[str, Any]) -> None:
        try:
            doc = json.loads(Path(path).read_bytes())
        except OSError as e:
            raise UsageError(f"{path}: cannot read the manifest ({e.strerror or e})") from None
        except ValueError as e:
            raise UsageError(f"{path}: not a JSON file ({e})") from None
        if not is_iiif(doc):
            raise UsageError(f"{path}: not a IIIF Presentation manifest or collection")
        manifest(doc, path, extra)

    def url_entry(url: str, extra: dict[str, Any], listed: bool) -> None:
        # a manifest ends in .json; a list's other URLs are pictures, and so is a URL given
        # alone whose path ends in an image extension
        suffix = os.path.splitext(urlsplit(url).path)[1].lower()
        if suffix == MANIFEST_SUFFIX or not (listed or _is_media_suffix(suffix)):
            remote_json(url, extra)
        else:
            want(url, extra)

    for p in paths:
        text = os.fspath(p)
        if not is_source(text):
            out.paths.append(p)
        elif is_url(text):
            url_entry(str(text), {}, False)
        elif not os.path.lexists(text):
            raise UsageError(f"{text}: no such file or directory")
        elif os.path.isdir(text):
            out.paths.append(p)
        elif str(text).lower().endswith(MANIFEST_SUFFIX):
            local_json(str(text), {})
        else:
            entries, notes = read_list(text)
            out.warnings.extend((str(text), n) for n in notes)
            for e in entries:
                if is_url(e.target):
                    url_entry(e.target, e.meta, True)
                elif e.target.lower().endswith(MANIFEST_SUFFIX) and os.path.isfile(e.target):
                    local_json(e.target, e.meta)
                elif os.path.lexists(e.target):
                    out.paths.append(e.target)
                    if e.meta:
                        out.meta[os.fsencode(e.target)] = e.meta
                else:
                    key = os.fsencode(e.target)
                    out.remote.append(Remote(key, None, f"file not found (listed in {e.where})"))

    todo = []
    for w in wants.values():
        key = w.key.encode("utf-8", "surrogateescape")
        hit = known.get(key)
        if hit is not None and hit[3] == "ok" and not fetcher.refresh:
            out.known += 1
            continue
        todo.append(w)
    served = any(w.image is not None and w.image.service is not None for w in todo)
    wanted_side = int(side()) if served else 0
    bar = None
    if progress if progress is not None else len(todo) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="fetching", unit="img")
    try:
        step = len(todo) if part is None else int(part)
        for start in range(0, max(len(todo), 1), max(step, 1)):
            if start:
                out, before = Prepared(), fetcher.requests
            chunk = todo[start : start + step]
            for w in chunk:
                if w.meta:
                    out.meta[w.key.encode("utf-8", "surrogateescape")] = w.meta
            _fetch_part(out, chunk, fetcher, wanted_side, bar)
            out.requests = fetcher.requests - before
            yield out
    finally:
        if bar is not None:
            bar.close()


def _fetch_part(out: Prepared, todo: list[_Want], fetcher: Fetcher, wanted_side: int, bar) -> None:
    """Fetch ``todo`` into ``out.remote`` (a cached file, or the reason there is none)."""

    def request(w: _Want) -> str | FetchError:
        if w.image is None or w.image.service is None:
            return w.key
        try:  # may read the service's info.json (level 0): in threads, as the pictures are
            return image_request(w.image, wanted_side, fetcher)
        except FetchError as e:
            return e

    jobs: list[Job] = []
    with ThreadPoolExecutor(fetcher.workers, thread_name_prefix="snoop-iiif") as pool:
        for w, url in zip(todo, pool.map(request, todo), strict=True):
            if isinstance(url, FetchError):
                key = w.key.encode("utf-8", "surrogateescape")
                out.remote.append(Remote(key, None, f"image service: {url.reason}"))
                if bar is not None:
                    bar.update(1)
            else:
                jobs.append(Job(url, w.key))
    for job, path, error in fetcher.fetch_many(jobs):
        key = job.cache_key.encode("utf-8", "surrogateescape")
        if path is None:
            reason = error.reason if error is not None else "not fetched"
            if job.url != job.cache_key:
                reason += f" ({job.url})"
            out.remote.append(Remote(key, None, reason))
        else:
            out.remote.append(Remote(key, path, None))
            out._files[os.fspath(path)] = key
        if bar is not None:
            bar.update(1)


def _is_media_suffix(suffix: str) -> bool:
    from snoop_nb.media.discover import IMAGE_EXTENSIONS

    return suffix in IMAGE_EXTENSIONS
