"""Compressed vectors for 10M+ items: 8-bit codes of a PCA projection, scanned, then re-scored.

A collection of ten million 1280-d float16 vectors holds 25.6 GB: more than a 24 GB machine
keeps in memory, and an HNSW graph over it takes hours to build on two cores. This index keeps,
for each item, one byte per principal direction (``project_dim``, 128 by default: 128 bytes an
item, 1.28 GB for 10M) and answers a query by scanning every code (faiss's SIMD scalar
quantiser scan, inner product) for its ``candidates`` best, which are then re-scored exactly
from the full float16 vectors in the collection's ``vectors.f16`` (a memory map: only the rows
read are touched). A linear classifier ranks the corpus the same way: its weights are the
query (see :func:`snoop_nb.learn.rank.top_hnsw`).

Chosen by measurement (``benchmarks/scale.py``, 1M vectors drawn around real embeddings, two
cores; recall@100 of a classifier's top 100 against exact scoring, after the re-score):

============================  ==========  =======  ===========  ============
codes                         bytes/item  scan ms  recall R=500 recall R=2000
============================  ==========  =======  ===========  ============
PCA-128, float16 (torch)      256         22       0.98         1.00
PCA-128, 8-bit (this)         128         9.5      0.98         1.00
PCA-256, 8-bit                256         12       1.00         1.00
PCA-128, PQ 64x4 fast-scan    32          1.1      0.69         0.94
============================  ==========  =======  ===========  ============

Product quantisation is 4-8x smaller and 10x faster to scan but needs far more candidates for
the same recall; 8-bit codes of 128 directions keep the recall target with 1,000 candidates.
The projection is an uncentred PCA (dot products kept as well as they can be), fitted like
:class:`~snoop_nb.index.projected.ProjectedIndex`'s: once ``min_fit`` vectors are in, on up to
``fit_sample`` of them, and again as the index grows 4x, until then search is exact; the 8-bit
ranges (per direction) are fitted on the same sample. Ids are rows of the external store.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import numpy as np

from snoop_nb.index.base import (
    Index,
    as_ids,
    as_queries,
    as_vectors,
    atomic_write,
    clip_scores,
    last_of_each,
)
from snoop_nb.index.exact import top_k
from snoop_nb.index.projected import REFIT_GROWTH, RowStore, _f32

KIND = "pca-sq8"
DEFAULT_CODE_DIM = 128
#: Candidates re-scored exactly per query (at least; ``k`` more when ``k`` is larger).
DEFAULT_CANDIDATES = 1000
DEFAULT_MIN_FIT = 1024
DEFAULT_FIT_SAMPLE = 20_000
#: Positions of removed items are dropped (the codes rewritten) once they are this share.
COMPACT_ABOVE = 0.25
_CHUNK = 65536
SUFFIX = ".sq8"


def _dot(rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """float16 ``rows`` dotted with float32 ``q``, in float32: PyTorch's vectorised float16
    conversion, 3-5x faster than numpy's on a thousand 1280-d candidates (a big collection's
    process has PyTorch loaded anyway: it embeds with it)."""
    import torch

    m = torch.from_numpy(np.ascontiguousarray(rows, np.float16))
    return (m.float() @ torch.from_numpy(np.ascontiguousarray(q, np.float32))).numpy()


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("the 'pca-sq8' index needs faiss (pip install faiss-cpu)") from e
    return faiss


class CompressedIndex(Index):
    """8-bit codes of a ``project_dim``-d PCA projection; exact re-score from ``vectors``.

    ``vectors`` is the row store of the full vectors (id ``i`` is row ``i``: an array, or a
    callable taking an array of rows), L2-normalised rows that never change once added.

    >>> rows = np.eye(8, dtype=np.float16)
    >>> idx = CompressedIndex(8, vectors=rows, project_dim=4, min_fit=1)
    >>> idx.add([2, 5], rows[[2, 5]])
    >>> idx.search([[0, 0, 0.1, 0, 0, 0.9, 0, 0]], k=1)[0].tolist()
    [[5]]
    """

    kind = KIND

    def __init__(
        self,
        dim: int,
        *,
        vectors: RowStore,
        project_dim: int = DEFAULT_CODE_DIM,
        candidates: int = DEFAULT_CANDIDATES,
        min_fit: int = DEFAULT_MIN_FIT,
        fit_sample: int = DEFAULT_FIT_SAMPLE,
        threads: int = -1,
    ):
        if not 0 < project_dim <= dim:
            raise ValueError(f"project_dim must be between 1 and {dim}, got {project_dim}")
        self.dim = dim
        self.project_dim = project_dim
        self.candidates = max(int(candidates), 1)
        self.min_fit = max(int(min_fit), 1)
        self.fit_sample = int(fit_sample)
        self.threads = threads
        self._store = vectors
        self.projection_: np.ndarray | None = None  # (dim, project_dim) float32
        self.fit_size_ = 0
        self._fit_id: str | None = None
        self._codes = None  # faiss IndexScalarQuantizer over the projections
        self._pos_id = np.zeros(0, np.int64)  # code position -> id, or -1 once removed
        self._id_pos = np.zeros(0, np.int64)  # id -> code position, or -1
        self._live = 0
        self._exact: tuple[np.ndarray, np.ndarray] | None = None
        self._lock = threading.RLock()

    # --- Index interface ----------------------------------------------------------------
    @property
    def ef(self) -> int:
        """Candidates re-scored per query (what ``ef`` is to an HNSW index)."""
        return self.candidates

    @ef.setter
    def ef(self, value: int) -> None:
        self.candidates = max(int(value), 1)

    def add(self, ids, vectors) -> None:
        with self._lock:
            ids = as_ids(ids)
            vecs = as_vectors(vectors, len(ids), self.dim)
            if ids.size == 0:
                return
            pick = last_of_each(ids)
            ids, vecs = ids[pick], vecs[pick]
            self._forget(ids)
            self._grow_ids(int(ids.max()) + 1)
            start = len(self._pos_id)
            self._pos_id = np.concatenate([self._pos_id, ids])
            self._id_pos[ids] = start + np.arange(ids.size)
            self._live += ids.size
            self._exact = None
            if self._codes is None:
                if self._live >= self.min_fit:
                    self._refit(0)
            elif self.fit_size_ < self.fit_sample and self._live >= REFIT_GROWTH * self.fit_size_:
                self._refit(0)
            else:
                self._encode(vecs)
            self._maybe_compact()

    def remove(self, ids) -> None:
        with self._lock:
            self._forget(as_ids(ids))
            self._maybe_compact()

    def ids(self) -> np.ndarray:
        with self._lock:
            live = self._pos_id[self._pos_id >= 0]
            return np.sort(live)

    def __len__(self) -> int:
        return self._live

    def __contains__(self, item_id: object) -> bool:
        try:
            i = int(item_id)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False
        return 0 <= i < len(self._id_pos) and self._id_pos[i] >= 0

    def search(
        self, queries, k: int = 10, *, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best live items of each query by exact cosine, found among the
        ``max(ef, k)`` best by their codes (``ef`` defaults to :attr:`candidates`)."""
        q = as_queries(queries, self.dim)
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        q = q / np.where(norms == 0, 1, norms)
        ids = np.full((len(q), k), -1, np.int64)
        scores = np.full((len(q), k), -np.inf, np.float32)
        with self._lock:
            if self._live == 0 or len(q) == 0 or k == 0:
                return ids, scores
            if self._codes is None:
                return self._search_exact(q, k, ids, scores)
            width = min(max(self.candidates if ef is None else int(ef), k), self._live)
            cand = self._scan(q, width)
            # positions to ids under the lock (a compaction renumbers positions)
            found_ids = [self._pos_id[c[c >= 0]] for c in cand]
        # the rows of an id never change: the exact re-score needs no lock
        for s, found in enumerate(found_ids):
            if found.size == 0:
                continue
            sims = _dot(self._rows(found), q[s])
            pos, vals = top_k(sims[None, :], k)
            ids[s, : pos.shape[1]] = found[pos[0]]
            scores[s, : pos.shape[1]] = clip_scores(vals[0])
        return ids, scores

    def _search_exact(self, q, k, ids, scores):
        if self._exact is None:
            live = np.sort(self._pos_id[self._pos_id >= 0])
            self._exact = live, _f32(self._rows(live))
        live, matrix = self._exact
        pos, vals = top_k(q @ matrix.T, k)
        ids[:, : pos.shape[1]] = live[pos]
        scores[:, : pos.shape[1]] = clip_scores(vals)
        return ids, scores

    def _scan(self, q: np.ndarray, width: int) -> np.ndarray:
        """Code positions of each query's ``width`` best by their codes (-1 padded)."""
        faiss = _faiss()
        if self.threads > 0:
            faiss.omp_set_num_threads(self.threads)
        proj = np.ascontiguousarray(q @ self.projection_, np.float32)
        dead = len(self._pos_id) - self._live
        if dead == 0:
            _, pos = self._codes.search(proj, width)
            return pos
        bitmap = np.packbits(self._pos_id >= 0, bitorder="little")
        params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(bitmap))  # n = bytes
        _, pos = self._codes.search(proj, width, params=params)
        return pos

    # --- scoring the whole corpus -------------------------------------------------------
    def approximate_scores(
        self, weights, *, sample: int | None = None, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids of the live items (all, or ``sample`` drawn at random) and ``weights . x`` from
        their codes, by id. Estimates (the 8-bit projection's error, see :meth:`error_bound`):
        for choosing what to re-score exactly. About 0.3 s per million codes on two cores."""
        w = np.asarray(weights, np.float32).reshape(-1)
        with self._lock:
            if self._codes is None:
                live = np.sort(self._pos_id[self._pos_id >= 0])
                if sample is not None and sample < live.size:
                    rng = np.random.default_rng(seed)
                    live = np.sort(rng.choice(live, sample, replace=False))
                return live, _f32(self._rows(live)) @ w
            codes = self._code_view()
            pos = np.flatnonzero(self._pos_id >= 0)
            if sample is not None and sample < pos.size:
                rng = np.random.default_rng(seed)
                pos = np.sort(rng.choice(pos, sample, replace=False))
            a, const = self._linear(w)
            out = np.empty(pos.size, np.float32)
            block = np.empty((min(_CHUNK, pos.size), self.project_dim), np.float32)
            whole = pos.size == len(codes)
            for i in range(0, pos.size, _CHUNK):
                rows = codes[i : i + _CHUNK] if whole else codes[pos[i : i + _CHUNK]]
                part = block[: len(rows)]
                np.copyto(part, rows)
                np.dot(part, a, out=out[i : i + len(part)])
            out += np.float32(const)
            ids = self._pos_id[pos]
        order = np.argsort(ids)
        return ids[order], out[order]

    def _linear(self, w: np.ndarray) -> tuple[np.ndarray, float]:
        """``(a, c)`` such that ``codes @ a + c`` is ``w`` dotted with the decoded projections:
        faiss's 8-bit rule decodes ``x_j = vmin_j + (c_j + 0.5) / 255 * vdiff_j``."""
        vmin, vdiff = self._ranges()
        wp = w @ self.projection_
        a = (wp * vdiff / 255.0).astype(np.float32)
        return a, float(wp @ vmin + 0.5 * a.sum())

    @property
    def fitted(self) -> bool:
        """Whether the codes exist (else searches are exact)."""
        return self._codes is not None

    def error_bound(self, weights, *, sample: int = 4096, seed: int = 0) -> float:
        """A bound on ``|codes' score - exact score|`` for ``weights``: 1.5x the largest error
        on a random sample of live items (0 while searches are exact)."""
        w = np.asarray(weights, np.float32).reshape(-1)
        with self._lock:
            if self._codes is None:
                return 0.0
            live_pos = np.flatnonzero(self._pos_id >= 0)
            rng = np.random.default_rng(seed)
            pos = np.sort(rng.choice(live_pos, min(sample, live_pos.size), replace=False))
            a, const = self._linear(w)
            approx = self._code_view()[pos].astype(np.float32) @ a + const
            ids = self._pos_id[pos]
        exact = _f32(self._rows(ids)) @ w
        return float(1.5 * np.abs(approx - exact).max()) + 1e-4

    def _code_view(self) -> np.ndarray:
        """The codes as a (positions, project_dim) uint8 array, a view (no copy)."""
        faiss = _faiss()
        n = len(self._pos_id) * self.project_dim
        if n == 0:
            return np.zeros((0, self.project_dim), np.uint8)
        flat = faiss.rev_swig_ptr(self._codes.codes.data(), n)
        return np.asarray(flat).reshape(-1, self.project_dim)

    def _ranges(self) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        trained = faiss.vector_to_array(self._codes.sq.trained).astype(np.float32)
        d = self.project_dim
        return trained[:d], trained[d : 2 * d]

    # --- fitting and encoding -----------------------------------------------------------
    def refit(self, *, seed: int = 0) -> None:
        """Fit the projection and the 8-bit ranges again on (a sample of) the live vectors,
        and encode every live vector again."""
        with self._lock:
            self._refit(seed)

    def _refit(self, seed: int) -> None:
        live_pos = np.flatnonzero(self._pos_id >= 0)
        if live_pos.size == 0:
            return
        live = self._pos_id[live_pos]
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(live, min(live.size, self.fit_sample), replace=False))
        x = _f32(self._rows(sample))
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # see ProjectedIndex._refit: threaded eigh spins
            _, eigvecs = np.linalg.eigh(x.T @ x)
        self.projection_ = np.ascontiguousarray(eigvecs[:, ::-1][:, : self.project_dim])
        faiss = _faiss()
        codes = faiss.IndexScalarQuantizer(
            self.project_dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        codes.train(np.ascontiguousarray(x @ self.projection_))
        self.fit_size_ = int(sample.size)
        self._fit_id = uuid.uuid4().hex
        self._codes = codes
        # positions are rewritten (removed ones go), in the order they had
        self._pos_id = live
        self._id_pos[:] = -1
        self._id_pos[live] = np.arange(live.size)
        self._exact = None
        for start in range(0, live.size, _CHUNK):
            self._encode(_f32(self._rows(live[start : start + _CHUNK])))

    def _encode(self, vecs: np.ndarray) -> None:
        proj = np.ascontiguousarray(np.asarray(vecs, np.float32) @ self.projection_)
        self._codes.add(proj)

    def _forget(self, ids: np.ndarray) -> None:
        ids = np.unique(ids[ids < len(self._id_pos)])
        pos = self._id_pos[ids]
        pos = pos[pos >= 0]
        if pos.size:
            self._pos_id[pos] = -1
            self._id_pos[ids] = -1
            self._live -= pos.size
            self._exact = None

    def _maybe_compact(self) -> None:
        dead = len(self._pos_id) - self._live
        if self._codes is not None and dead > COMPACT_ABOVE * len(self._pos_id):
            self._compact()
        elif self._codes is None and dead:
            keep = self._pos_id >= 0
            self._pos_id = self._pos_id[keep]
            self._id_pos[:] = -1
            self._id_pos[self._pos_id] = np.arange(self._pos_id.size)

    def _compact(self) -> None:
        """Drop removed positions, keeping the fit (the codes of live items are copied)."""
        faiss = _faiss()
        keep = np.flatnonzero(self._pos_id >= 0)
        old = self._code_view()
        new = faiss.IndexScalarQuantizer(
            self.project_dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        new.sq.trained = self._codes.sq.trained
        new.is_trained = True
        kept = np.ascontiguousarray(old[keep]).reshape(-1)
        faiss.copy_array_to_vector(kept, new.codes)
        new.ntotal = keep.size
        self._codes = new
        self._pos_id = self._pos_id[keep]
        self._id_pos[:] = -1
        self._id_pos[self._pos_id] = np.arange(self._pos_id.size)

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        store = self._store
        return np.asarray(store(ids) if callable(store) else store[ids])

    def _grow_ids(self, need: int) -> None:
        if need > len(self._id_pos):
            size = max(need, 2 * len(self._id_pos), 1024)
            grown = np.full(size, -1, np.int64)
            grown[: len(self._id_pos)] = self._id_pos
            self._id_pos = grown

    # --- persistence --------------------------------------------------------------------
    @staticmethod
    def file_for(path: str | Path) -> Path:
        """The one file an index saved at ``path`` is written to (``path`` + ``.sq8``)."""
        path = Path(path)
        return path.with_name(path.name + SUFFIX)

    def save(self, path: str | Path) -> None:
        """Write everything (projection, 8-bit ranges, codes, positions) to one file,
        atomically: a crash leaves the previous save or this one."""
        with self._lock:
            meta = {
                "kind": self.kind,
                "dim": self.dim,
                "project_dim": self.project_dim,
                "candidates": self.candidates,
                "min_fit": self.min_fit,
                "fit_sample": self.fit_sample,
                "fit_size": self.fit_size_,
                "fit_id": self._fit_id,
            }
            arrays = {"pos_id": self._pos_id}
            if self._codes is not None:
                faiss = _faiss()
                arrays["projection"] = self.projection_
                arrays["trained"] = faiss.vector_to_array(self._codes.sq.trained)
                arrays["codes"] = self._code_view()

            def write(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    np.savez(f, meta=np.array(json.dumps(meta)), **arrays)

            atomic_write(self.file_for(path), write)
            self.repaired_on_load = False

    @classmethod
    def load(cls, path: str | Path, *, vectors: RowStore, threads: int = -1) -> CompressedIndex:
        """Read an index saved by :meth:`save`, over the same row store (``vectors=``)."""
        with np.load(cls.file_for(path)) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("kind") != KIND:
                raise ValueError(f"{cls.file_for(path)} is not a {KIND} index")
            pos_id = z["pos_id"].astype(np.int64)
            arrays = {n: z[n] for n in ("projection", "trained", "codes") if n in z.files}
        self = cls(
            meta["dim"],
            vectors=vectors,
            project_dim=meta["project_dim"],
            candidates=meta["candidates"],
            min_fit=meta["min_fit"],
            fit_sample=meta["fit_sample"],
            threads=threads,
        )
        live = pos_id >= 0
        self._pos_id = pos_id
        self._live = int(live.sum())
        self._grow_ids(int(pos_id.max()) + 1 if pos_id.size else 0)
        self._id_pos[pos_id[live]] = np.flatnonzero(live)
        if "codes" in arrays:
            codes = arrays["codes"]
            if codes.size != len(pos_id) * self.project_dim:
                raise ValueError(f"{cls.file_for(path)}: codes and positions differ in length")
            faiss = _faiss()
            index = faiss.IndexScalarQuantizer(
                self.project_dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
            faiss.copy_array_to_vector(arrays["trained"].astype(np.float32), index.sq.trained)
            index.is_trained = True
            faiss.copy_array_to_vector(
                np.ascontiguousarray(codes, np.uint8).reshape(-1), index.codes
            )
            index.ntotal = len(pos_id)
            self._codes = index
            self.projection_ = np.asarray(arrays["projection"], np.float32)
            self.fit_size_ = int(meta.get("fit_size", 0))
            self._fit_id = meta.get("fit_id")
        return self
