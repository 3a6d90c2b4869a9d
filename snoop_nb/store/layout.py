"""A collection directory's manifest, and making a new collection safely.

``manifest.json`` is written last, atomically, under the writer lock: a directory without one
is at most a half-made collection (killed before its manifest), whose catalog holds nothing.
Such a directory may be made afresh; a catalog without a manifest that holds items or labels
is refused, never wiped, since labels are people's work.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snoop_nb.errors import CollectionError, EmbedderMismatchError, UsageError
from snoop_nb.index.base import atomic_write
from snoop_nb.store.catalog import connect, work_in
from snoop_nb.store.lock import LOCK_NAME, BusyError, writer_lock
from snoop_nb.store.vectors import VECTORS_NAME

if TYPE_CHECKING:
    from snoop_nb.embed.base import Embedder

FORMAT = "snoop-nb collection"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CATALOG_NAME = "catalog.sqlite"
#: New collections of more dimensions than this get an ``hnsw-pca`` index (``hnsw`` otherwise).
PROJECT_ABOVE_DIM = 256
INDEX_KINDS = ("hnsw", "hnsw-pca", "pca-sq8")
#: How long a new collection's creation waits for another process creating the same one.
CREATE_WAIT = 60.0

#: What a half-made collection (killed before its manifest was written) may hold.
OWN_FILES = frozenset(
    {CATALOG_NAME, f"{CATALOG_NAME}-wal", f"{CATALOG_NAME}-shm", LOCK_NAME, VECTORS_NAME}
)
#: Index files: a directory holding them has had a manifest (they are written after it).
INDEX_STEM = "index.hnsw"


def is_index_file(name: str) -> bool:
    """``index.hnsw`` and its companions: ``.json``, ``.npz``, ``.sq8``, shards ``.<i>...``."""
    return name == INDEX_STEM or name.startswith(INDEX_STEM + ".")


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest at ``path``, checked to be a snoop-nb collection's of a known format."""
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


def check_same_embedder(root: Path, manifest: dict[str, Any], embedder: Embedder) -> None:
    """Raise :class:`EmbedderMismatchError` unless ``embedder`` built this collection."""
    have = manifest["embedder"]["id"]
    if embedder.id != have or embedder.dim != int(manifest["dim"]):
        raise EmbedderMismatchError(
            f"{root} was built with embedder {have} (dim {manifest['dim']}), not "
            f"{embedder.id} (dim {embedder.dim}): vectors of two models cannot be mixed; "
            "use another collection directory"
        )


def index_entry(dim: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """A new collection's manifest ``index`` entry: the defaults for ``dim``, then ``overrides``.

    ``kind`` ``hnsw`` / ``hnsw-pca`` (graphs) or ``pca-sq8`` (compressed codes, for 10M+
    items: see :mod:`snoop_nb.index.compressed`); ``shards`` (1): how many index shards.
    """
    from snoop_nb.index import DEFAULT_EF, DEFAULT_EF_CONSTRUCTION, DEFAULT_M, compressed
    from snoop_nb.index.projected import DEFAULT_MIN_FIT, DEFAULT_PROJECT_DIM

    kind = overrides.get("kind", "hnsw-pca" if dim > PROJECT_ABOVE_DIM else "hnsw")
    if kind not in INDEX_KINDS:
        raise UsageError(f"unknown index kind {kind!r}: use one of {', '.join(INDEX_KINDS)}")
    entry: dict[str, Any] = {"kind": kind}
    if kind == "hnsw-pca":
        entry.update(project_dim=DEFAULT_PROJECT_DIM, min_fit=DEFAULT_MIN_FIT)
    if kind == "pca-sq8":
        entry.update(
            project_dim=min(compressed.DEFAULT_CODE_DIM, dim),
            candidates=compressed.DEFAULT_CANDIDATES,
            min_fit=compressed.DEFAULT_MIN_FIT,
        )
    else:
        entry.update(M=DEFAULT_M, ef_construction=DEFAULT_EF_CONSTRUCTION, ef=DEFAULT_EF)
    entry.update({k: v for k, v in overrides.items() if v is not None})
    top = dim if kind == "pca-sq8" else dim - 1
    if kind != "hnsw" and not 0 < int(entry["project_dim"]) <= top:
        raise UsageError(
            f"project_dim must be between 1 and {top} for {dim}-d vectors, "
            f"not {entry['project_dim']}"
            + ("; or use index kind 'hnsw'" if kind == "hnsw-pca" else "")
        )
    shards = int(entry.get("shards", 1))
    if not 1 <= shards <= 256:
        raise UsageError(f"shards must be between 1 and 256, not {entry.get('shards')}")
    if shards == 1:
        entry.pop("shards", None)
    return entry


def _leftover_temp(name: str) -> bool:
    """A temp file of an interrupted atomic manifest write."""
    return name.startswith(f".{MANIFEST_NAME}.") and name.endswith(".tmp")


def refuse_unless_fresh(root: Path) -> None:
    """Raise unless ``root`` is empty or holds only an empty, label-free half-made collection."""
    names = {p.name for p in root.iterdir()}
    foreign = {
        n for n in names if n not in OWN_FILES and not is_index_file(n) and not _leftover_temp(n)
    }
    if foreign:
        raise CollectionError(f"{root} is not empty and not a snoop-nb collection")
    kept = "it is left as it is"
    todo = (
        "put its manifest.json back (from a backup or a copy of the collection), "
        "or give another directory"
    )
    if any(is_index_file(n) for n in names):
        raise CollectionError(
            f"{root} holds a collection's index files but no {MANIFEST_NAME}: {kept}; {todo}"
        )
    if CATALOG_NAME in names:
        work = work_in(root / CATALOG_NAME)
        if work:
            what = ", ".join(f"{n} {t} rows" for t, n in sorted(work.items()))
            raise CollectionError(
                f"{root} holds a catalog ({what}) but no {MANIFEST_NAME}: {kept}, to keep "
                f"that work; {todo}"
            )


def create(
    root: Path, embedder: Embedder, index_params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Make a new collection in ``root`` and return its manifest.

    Under the writer lock, the manifest last: two processes creating the same collection at
    once end with one collection (the second one finds the first one's manifest and returns
    it; the caller checks the embedder). A directory that is not empty nor an empty
    half-made collection is refused, and left untouched.
    """
    if root.exists() and not root.is_dir():
        raise CollectionError(f"{root} exists and is not a directory")
    index = index_entry(embedder.dim, index_params or {})
    manifest_path = root / MANIFEST_NAME
    root.mkdir(parents=True, exist_ok=True)
    if not manifest_path.exists():
        try:  # before the lock file is made in a foreign directory
            refuse_unless_fresh(root)
        except CollectionError:
            # Another process may have made the collection since the check above: its
            # manifest, then its first files, are there now, and that is no foreign directory.
            if not manifest_path.exists():
                raise
    deadline = time.monotonic() + CREATE_WAIT
    while True:
        if manifest_path.exists():
            return read_manifest(manifest_path)
        try:
            with writer_lock(root):
                if manifest_path.exists():  # made while this process waited
                    return read_manifest(manifest_path)
                refuse_unless_fresh(root)
                return _make(root, embedder, index)
        except BusyError:
            if time.monotonic() > deadline:
                raise BusyError(
                    f"{root} is being created by another process, which has not finished in "
                    f"{CREATE_WAIT:.0f} s; try again when it has"
                ) from None
            time.sleep(0.05)


def _make(root: Path, embedder: Embedder, index: dict[str, Any]) -> dict[str, Any]:
    """Under the writer lock, in a fresh directory: catalog, vectors, then the manifest."""
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
    # A half-made collection holds no committed batch: start its catalog and vectors afresh.
    for p in root.iterdir():
        if (p.name in OWN_FILES and p.name != LOCK_NAME) or _leftover_temp(p.name):
            p.unlink(missing_ok=True)
    connect(root / CATALOG_NAME).close()
    (root / VECTORS_NAME).touch()
    text = json.dumps(manifest, indent=2)
    atomic_write(root / MANIFEST_NAME, lambda t: Path(t).write_text(text))
    return manifest
