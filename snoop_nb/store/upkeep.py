"""Index upkeep: keep a collection's in-memory index equal to its catalog's live items.

The catalog's generation (bumped by every change, by any process) is checked on each use of
the index, which costs one small SQLite read. When it has moved, the index is brought up to
date from ``vectors.f16``: missing items are added, removed ones forgotten. So a dashboard
kernel sees what a ``snoop index`` run in another process adds or removes, on its next search.
When very many items are missing and another process has saved a newer index file meanwhile,
that file is loaded instead (reading a saved graph is far cheaper than building it again).
"""

from __future__ import annotations

import json
import os
import threading
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import CollectionError
from snoop_nb.store.layout import INDEX_KINDS

if TYPE_CHECKING:
    from snoop_nb.index import Index
    from snoop_nb.store.catalog import Catalog
    from snoop_nb.store.vectors import VectorStore

INDEX_NAME = "index.hnsw"
#: A newer saved index file is loaded, rather than the missing items added, when more than
#: this many are missing and more than a 1/RELOAD_FRACTION of the live ones. Measured on 2 busy
#: cores at 1280-d (hnsw-pca): adding costs about 0.34 ms an item, loading 3 us an item.
RELOAD_ABOVE = 256
RELOAD_FRACTION = 64
_ADD_CHUNK = 65536


class IndexKeeper:
    """The approximate index (``hnsw`` or ``hnsw-pca``) and the exact one of a collection,
    each kept current with the catalog; safe to use from several threads."""

    def __init__(
        self, root: Path, manifest: dict[str, Any], catalog: Catalog, vectors: VectorStore
    ):
        self.root = root
        self.manifest = manifest
        self.catalog = catalog
        self.store = vectors
        self.dim = int(manifest["dim"])
        #: None: the rule above; a number: reload past that many missing items (tests).
        self.reload_above: int | None = None
        self._lock = threading.RLock()
        self._index: Index | None = None
        self._gen: str | None = None  # the generation the index was last brought to
        self._file: tuple | None = None  # identity of the saved file the index came from
        self._exact: tuple[str, Index] | None = None

    # --- the approximate index ----------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        params = {"kind": "hnsw", **self.manifest.get("index", {})}
        if params["kind"] not in INDEX_KINDS:
            raise CollectionError(
                f"{self.root}: unknown index kind {params['kind']!r} in manifest.json (this "
                f"snoop-nb knows {', '.join(INDEX_KINDS)}); upgrade snoop-nb or fix the manifest"
            )
        return params

    @property
    def path(self) -> Path:
        return self.root / INDEX_NAME

    def saved_file(self, kind: str, shards: int = 1) -> Path:
        """The file every save of this kind writes (last, for ``hnsw``, ``pca-sq8`` and a
        sharded index's sidecar; first, for ``hnsw-pca``)."""
        from snoop_nb.index.sharded import meta_path

        if shards > 1:
            return meta_path(self.path)
        return _saved_file(self.path, kind)

    def current(self) -> Index:
        """The index, brought up to date if the catalog changed since it was last synced."""
        index = self._index
        if index is not None and self._gen == self.catalog.generation():
            return index
        return self.sync(save=False)

    def forget(self) -> None:
        """Drop the in-memory index: the next use loads it from its files again."""
        with self._lock:
            self._index = None
            self._gen = None
            self._file = None

    def sync(self, *, save: bool = True) -> Index:
        """Make the index hold exactly the catalog's live items; save it if asked.

        The manifest's ``index`` entry chooses the kind and its parameters; saved files are
        loaded, and rebuilt when they cannot be read.
        """
        with self._lock:
            params = self.params
            kind = params["kind"]
            shards = int(params.get("shards", 1))
            saved = self.saved_file(kind, shards)
            gen, live = self.catalog.live()
            index = self._index
            if index is not None and (
                index.dim != self.dim
                or index.kind != kind
                or getattr(index, "n_shards", 1) != shards
            ):
                index = None
            if index is None:
                index = self._load(params, saved)
            elif self._file != _identity(saved):
                index = self._maybe_reload(index, params, saved, live)
            if index is None:
                index = self._new_index(params)
                self._file = None
            have = index.ids()
            missing = np.setdiff1d(live, have, assume_unique=True)
            extra = np.setdiff1d(have, live, assume_unique=True)
            changed = bool(missing.size or extra.size)
            if extra.size:
                index.remove(extra)
            if missing.size:
                vecs = self.store.view()
                for start in range(0, missing.size, _ADD_CHUNK):
                    chunk = missing[start : start + _ADD_CHUNK]
                    index.add(chunk, np.asarray(vecs[chunk], dtype=np.float32))
            if save and (changed or not saved.exists() or index.repaired_on_load):
                index.save(self.path)
                self._file = _identity(saved)
            self._index = index
            self._gen = gen
            return index

    def _maybe_reload(
        self, index: Index, params: dict[str, Any], saved: Path, live: np.ndarray
    ) -> Index:
        """``index``, or the newer saved file when far more of ``live`` is in that one."""
        missing = np.setdiff1d(live, index.ids(), assume_unique=True).size
        above = self.reload_above
        if above is None:
            above = max(RELOAD_ABOVE, live.size // RELOAD_FRACTION)
        if missing <= above:
            return index
        fresh = self._load(params, saved)
        if fresh is None:
            return index
        if np.setdiff1d(live, fresh.ids(), assume_unique=True).size < missing:
            return fresh
        return index

    def _load(self, params: dict[str, Any], saved: Path) -> Index | None:
        """The saved index, or None when there is none or it cannot be read (with a warning)."""
        from snoop_nb.index.sharded import ShardedIndex

        kind = params["kind"]
        shards = int(params.get("shards", 1))
        ident = _identity(saved)
        if ident is None:
            return None
        if shards > 1:
            try:
                meta = json.loads(saved.read_text())
            except (OSError, ValueError) as e:
                warnings.warn(f"rebuilding the index of unreadable {saved}: {e}", stacklevel=4)
                return None
            if meta.get("kind") != kind or meta.get("shards") != shards:
                return None
            index: Index | None = ShardedIndex.load(
                self.path,
                shards,
                lambda p: self._load_one(kind, p),
                lambda i: self._new_one(params, shards),
            )
        else:
            index = self._load_one(kind, self.path)
        if index is None or index.dim != self.dim or index.kind != kind:
            return None
        self._file = ident
        return index

    def _load_one(self, kind: str, path: Path) -> Index | None:
        """One index saved at ``path`` (a shard's path too), or None (warned when unreadable)."""
        from snoop_nb.index import HNSWIndex, ProjectedIndex
        from snoop_nb.index.compressed import CompressedIndex

        if _identity(_saved_file(path, kind)) is None:
            return None
        try:
            if kind == "hnsw":
                index: Index = HNSWIndex.load(path)
            elif kind == "pca-sq8":
                index = CompressedIndex.load(path, vectors=self.store.rows)
            else:
                index = ProjectedIndex.load(path, vectors=self.store.rows)
        except (OSError, RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as e:
            warnings.warn(f"rebuilding unreadable index {path}: {e}", stacklevel=5)
            return None
        if index.dim != self.dim or index.kind != kind:
            return None
        return index

    def _new_index(self, params: dict[str, Any]) -> Index:
        from snoop_nb.index.sharded import ShardedIndex

        shards = int(params.get("shards", 1))
        if shards == 1:
            return self._new_one(params, 1)
        return ShardedIndex([self._new_one(params, shards) for _ in range(shards)])

    def _new_one(self, params: dict[str, Any], shards: int) -> Index:
        """A new empty index (one shard of ``shards``) of the manifest's kind."""
        from snoop_nb.index import (
            DEFAULT_EF,
            DEFAULT_EF_CONSTRUCTION,
            DEFAULT_M,
            HNSWIndex,
            compressed,
        )
        from snoop_nb.index.projected import (
            DEFAULT_FIT_SAMPLE,
            DEFAULT_MIN_FIT,
            DEFAULT_PROJECT_DIM,
            ProjectedIndex,
        )

        # shards build at once, one thread each: each shard's own threads share the cores
        threads = -1 if shards == 1 else max(1, (os.cpu_count() or 1) // shards)
        if params["kind"] == "pca-sq8":
            return compressed.CompressedIndex(
                self.dim,
                vectors=self.store.rows,
                project_dim=params.get("project_dim", compressed.DEFAULT_CODE_DIM),
                candidates=params.get("candidates", compressed.DEFAULT_CANDIDATES),
                min_fit=params.get("min_fit", compressed.DEFAULT_MIN_FIT),
                fit_sample=params.get("fit_sample", compressed.DEFAULT_FIT_SAMPLE),
                threads=threads,
            )
        graph = {
            "M": params.get("M", DEFAULT_M),
            "ef_construction": params.get("ef_construction", DEFAULT_EF_CONSTRUCTION),
            "ef": params.get("ef", DEFAULT_EF),
            "threads": threads,
        }
        if params["kind"] == "hnsw":
            return HNSWIndex(self.dim, **graph)
        return ProjectedIndex(
            self.dim,
            project_dim=params.get("project_dim", DEFAULT_PROJECT_DIM),
            min_fit=params.get("min_fit", DEFAULT_MIN_FIT),
            fit_sample=params.get("fit_sample", DEFAULT_FIT_SAMPLE),
            vectors=self.store.rows,
            **graph,
        )

    # --- the exact index ----------------------------------------------------------------
    def exact(self, device: str = "auto") -> Index:
        """An exact index over the live vectors on ``device``, kept until the items change or
        another device is asked for. It scores the memory map in place: numpy converts the
        live rows to float32 once, on its first search, when they fit its cache; a GPU holds
        the whole map once, shared with classifier scoring, and is sent only new rows."""
        from snoop_nb.index import ExactIndex

        held = self._exact
        gen = self.catalog.generation()
        if held is not None and held[0] == gen and getattr(held[1], "device", None) == device:
            return held[1]
        with self._lock:
            held = self._exact
            gen, ids = self.catalog.live()
            if held is None or held[0] != gen or getattr(held[1], "device", None) != device:
                vecs = self.store.view()
                live = None if ids.size == len(vecs) else ids  # row i is item id i
                index = ExactIndex.from_arrays(ids, vecs, rows=live, device=device)
                held = self._exact = (gen, index)
            return held[1]


def _saved_file(path: Path, kind: str) -> Path:
    """The file every save of one index of ``kind`` at ``path`` writes (see saved_file)."""
    if kind == "hnsw-pca":
        return path.with_name(path.name + ".npz")
    if kind == "pca-sq8":
        return path.with_name(path.name + ".sq8")
    return path


def _identity(path: Path) -> tuple | None:
    """What tells one saved file from the next (a save renames a new file over the old)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)
