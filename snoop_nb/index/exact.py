"""Exact (brute-force) search: the reference, and the right tool for small collections.

Two engines give the same answers. Small matrices are scored by numpy on the CPU, float32 dot
products over a float32 copy of the float16 rows, without importing PyTorch. A matrix whose
float32 copy would not fit ``cache_bytes`` is scored by PyTorch's float16 kernel straight from
its rows (numpy would convert every block on every query, 13x slower), and so is one of more
than :data:`NUMPY_MAX_VALUES` values on a CUDA GPU when it fits there (:func:`vector_device`).
The float16 pass picks each query's candidates; they are re-scored in float32, widening the
pass until no row left out can reach the top ``k`` (:data:`FLOAT16_ERROR`), so the ids are
numpy's and the scores equal it to float32 rounding. On a GPU the float16 matrix stays on the
device between calls (:data:`RESIDENT`): a growing collection sends only its new rows.
"""

from __future__ import annotations

import mmap
import os
import threading
import warnings
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.index.base import Index, as_ids, as_queries, as_vectors, clip_scores, last_of_each

if TYPE_CHECKING:
    import torch

#: Matrices of at most this many values (16 MB of float16) stay on numpy, whatever the device
#: (``device="auto"``): moving them costs more than scoring them, and PyTorch is not imported.
NUMPY_MAX_VALUES = 1 << 23
#: Free device memory left after a matrix is uploaded: a tenth of the device, at least 1 GiB
#: (the model, the decoder's buffers and the score rows need room too).
DEVICE_MARGIN_FRACTION = 0.1
DEVICE_MARGIN_MIN = 1 << 30
#: Candidates per query taken from the float16 pass beyond ``k`` and re-scored in float32.
RESCORE = 64
#: A bound on |float16-pass score - float32 score| for unit rows and queries: the query
#: rounded to float16 moves a score by at most 2^-11 (Cauchy-Schwarz), a float16 result by
#: 2^-11 more; doubled for rows a little off unit length and the accumulation order.
FLOAT16_ERROR = 2.0**-9
#: Scores held on the device at once (queries are taken in groups that fit).
_SCORE_BYTES = 256 << 20
#: Rows sent to the device per copy when a matrix is uploaded.
_UPLOAD_ROWS = 1 << 18


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions and values of the ``k`` largest entries of each row, best first."""
    n = scores.shape[1]
    k = min(k, n)
    if k == 0:
        return np.zeros((scores.shape[0], 0), np.int64), np.zeros((scores.shape[0], 0), np.float32)
    part = (
        np.argpartition(-scores, k - 1, axis=1)[:, :k]
        if k < n
        else np.tile(np.arange(n), (scores.shape[0], 1))
    )
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


# --- devices ----------------------------------------------------------------------------------
def fits_on_device(nbytes: int, device: str) -> bool:
    """True if ``nbytes`` more fit in ``device``'s free memory with the margin (or are there)."""
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(device))
    margin = max(DEVICE_MARGIN_MIN, int(DEVICE_MARGIN_FRACTION * total))
    return nbytes + margin <= free


def vector_device(device: str, nbytes: int) -> str:
    """Where float16 vectors of ``nbytes`` are scored: ``"cpu"`` or a CUDA device.

    ``"auto"`` is CUDA when a GPU is usable and the vectors fit in its free memory with a margin
    (:data:`DEVICE_MARGIN_FRACTION`), else the CPU; ``"cuda"`` without a GPU is a
    :class:`~snoop_nb.errors.UsageError`, as for the embedder.
    """
    from snoop_nb.embed import resolve_device

    resolved = resolve_device(device)
    if device != "auto" or not resolved.startswith("cuda") or RESIDENT.holds(nbytes, resolved):
        return resolved
    return resolved if fits_on_device(nbytes, resolved) else "cpu"


def _quiet_tensor(rows: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` of rows that may be a read-only memory map (only ever read)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(rows)


def _file_key(rows: np.ndarray) -> tuple | None:
    """What names a memory-mapped float16 matrix by its file and first row, or None."""
    mapping = getattr(rows, "_mmap", None)
    name = getattr(rows, "filename", None)
    if mapping is None or name is None or rows.ndim != 2 or not rows.flags.c_contiguous:
        return None
    try:
        start = np.frombuffer(mapping, np.uint8).ctypes.data
        st = os.stat(name)
    except (ValueError, TypeError, OSError):
        return None
    offset = int(getattr(rows, "offset", 0))
    first = offset - offset % mmap.ALLOCATIONGRANULARITY + (rows.ctypes.data - start)
    return ("file", os.path.realpath(name), st.st_ino, st.st_dev, first, rows.shape[1])


class _Entry:
    __slots__ = ("buffer", "n", "ref")

    def __init__(self, buffer: torch.Tensor, n: int, ref: Any):
        self.buffer, self.n, self.ref = buffer, n, ref


class ResidentMatrices:
    """Float16 matrices kept on devices between calls, so each is sent there once.

    A matrix is known by its identity (the same array object, alive, of the same shape) or, for
    a memory-mapped file, by the file and its first row: such a file is taken to be append-only,
    as a collection's ``vectors.f16`` is, so a longer map of it sends only the new rows (into a
    buffer grown by a quarter at a time). At most ``entries`` matrices are held per process,
    the least recently used dropped first. On the CPU nothing is copied unless ``copy`` (a
    tensor over the array's own memory is returned), which the tests use to run this on a CPU.

    Attributes:
        uploaded_rows: rows sent to a device so far (what the tests and benchmarks count).
    """

    def __init__(self, entries: int = 4, *, copy: bool | None = None):
        self.entries = entries
        self.copy = copy
        self.uploaded_rows = 0
        self._held: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def holds(self, nbytes: int, device: str) -> bool:
        """True if a matrix of at least ``nbytes`` is already held on ``device``."""
        with self._lock:
            return any(
                k[0] == device and e.n * e.buffer.shape[1] * 2 >= nbytes
                for k, e in self._held.items()
            )

    def get(self, rows: np.ndarray, device: str) -> torch.Tensor:
        """``rows`` (float16, 2-d) as a tensor on ``device``, sent there only if needed."""
        import torch

        if rows.dtype != np.float16 or rows.ndim != 2:
            raise ValueError("resident matrices are 2-d float16 arrays")
        dev = torch.device(device)
        if not (self.copy if self.copy is not None else dev.type != "cpu"):
            return _quiet_tensor(rows)
        name = _file_key(rows)
        key = (str(dev), *(name or ("array", id(rows), rows.shape)))
        n = len(rows)
        with self._lock:
            entry = self._held.get(key)
            if entry is not None and name is None and entry.ref() is not rows:
                entry = None  # another array now has the dead one's id
            if entry is None or (entry.n > n and name is None):
                self._held.pop(key, None)
                entry = None
            if entry is not None and entry.n >= n:
                self._held.move_to_end(key)
                return entry.buffer[:n]
            have = 0 if entry is None else entry.n
            capacity = n if name is None else max(n, int(have * 1.25))
            if entry is None or capacity > len(entry.buffer):
                self._evict(str(dev), keep=key)
                buffer = torch.empty((capacity, rows.shape[1]), dtype=torch.float16, device=dev)
                if have:
                    buffer[:have] = entry.buffer[:have]
            else:
                buffer = entry.buffer
            for start in range(have, n, _UPLOAD_ROWS):
                part = np.ascontiguousarray(rows[start : start + _UPLOAD_ROWS])
                buffer[start : start + len(part)].copy_(_quiet_tensor(part))
            self.uploaded_rows += n - have
            ref = None if name is not None else weakref.ref(rows)
            self._held[key] = _Entry(buffer, n, ref)
            self._held.move_to_end(key)
            return buffer[:n]

    def _evict(self, device: str, keep: tuple) -> None:
        while len(self._held) >= self.entries:
            victim = next((k for k in self._held if k != keep), None)
            if victim is None:
                return
            del self._held[victim]
        for k in [k for k, e in self._held.items() if e.ref is not None and e.ref() is None]:
            del self._held[k]

    def clear(self) -> None:
        """Forget every matrix (the device memory is freed when no result still uses it)."""
        with self._lock:
            self._held.clear()


#: The process's matrices on devices, shared by exact search and classifier scoring.
RESIDENT = ResidentMatrices()


def _float16_scores(q16: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``q16 @ m.T`` as float32: float32 accumulation and result on CUDA (``out_dtype``),
    PyTorch's CPU kernel accumulating in float32 and rounding to float16 elsewhere."""
    import torch

    if m.is_cuda:
        try:
            return torch.mm(q16, m.T, out_dtype=torch.float32)
        except (TypeError, RuntimeError):  # a PyTorch without out_dtype for this device
            pass
    return (q16 @ m.T).float()


def device_top_k(
    m: torch.Tensor, queries: np.ndarray, k: int, live: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best rows of ``m`` (float16, on its device) for unit float32 ``queries``.

    ``live`` (row numbers on ``m``'s device) restricts the search to those rows, and positions
    are then into ``live``. Returns (positions int64, float32 scores), best first, ties by
    position, as numpy arrays; the scores are float32 dot products of the candidates.
    """
    import torch

    n = m.shape[0] if live is None else int(live.numel())
    nq = queries.shape[0]
    k = min(k, n)
    if k == 0 or nq == 0:
        return np.zeros((nq, k), np.int64), np.zeros((nq, k), np.float32)
    q = torch.from_numpy(np.ascontiguousarray(queries, np.float32)).to(m.device)
    per = max(1, _SCORE_BYTES // (4 * max(1, m.shape[0])))
    out_pos, out_val = [], []
    with torch.inference_mode():
        for s in range(0, nq, per):
            qs = q[s : s + per]
            scores = _float16_scores(qs.half(), m)
            if live is not None:
                scores = scores.index_select(1, live)
            want = min(n, k + RESCORE)
            while True:
                vals, pos = torch.topk(scores, want, dim=1)
                # a row left out scores at most vals[:, -1] + e; the k-th's true score is at
                # least vals[:, k - 1] - e: done when no left-out row can pass it
                if want == n or bool((vals[:, -1] < vals[:, k - 1] - 2 * FLOAT16_ERROR).all()):
                    break
                want = min(n, 4 * want)
            pos, _ = torch.sort(pos, dim=1)  # ties go to the first position, as in numpy
            rows = pos if live is None else live[pos]
            exact = torch.bmm(m[rows].float(), qs.unsqueeze(2)).squeeze(2)
            best = torch.argsort(exact, dim=1, descending=True, stable=True)[:, :k]
            out_pos.append(torch.gather(pos, 1, best).cpu())
            out_val.append(torch.gather(exact, 1, best).cpu())
    return torch.cat(out_pos).numpy().astype(np.int64), torch.cat(out_val).numpy()


def device_scores(
    m: torch.Tensor, queries: np.ndarray, live: torch.Tensor | None = None
) -> np.ndarray:
    """Float32 dot products of unit float32 ``queries`` with every (live) row of ``m``."""
    import torch

    q = torch.from_numpy(np.ascontiguousarray(queries, np.float32)).to(m.device)
    rows = m.shape[0] if live is None else int(live.numel())
    out = np.empty((q.shape[0], rows), np.float32)
    step = max(1, _SCORE_BYTES // (4 * m.shape[1]))
    with torch.inference_mode():
        for start in range(0, rows, step):
            block = m[start : start + step] if live is None else m[live[start : start + step]]
            out[:, start : start + len(block)] = (q @ block.float().T).cpu().numpy()
    return out


# --- the index ------------------------------------------------------------------------------
class ExactIndex(Index):
    """Scores every live vector: float32 dot products over float16 rows, on a device.

    ``device``: ``"auto"`` (numpy on the CPU up to :data:`NUMPY_MAX_VALUES` values; above, a
    CUDA GPU when the rows fit there, else the CPU), ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
    On the CPU numpy scores a float32 copy of up to ``cache_bytes``; PyTorch's float16 kernel
    scores larger matrices from their rows.

    >>> idx = ExactIndex(dim=4)
    >>> idx.add([7], [[1, 0, 0, 0]])
    >>> idx.search([[1, 0, 0, 0]], k=1)[0].tolist()
    [[7]]
    """

    kind = "exact"

    def __init__(
        self,
        dim: int,
        *,
        chunk: int = 65536,
        cache_bytes: int = 512 << 20,
        device: str = "auto",
    ):
        self.dim = dim
        self.chunk = chunk
        self.cache_bytes = cache_bytes
        self.device = device
        self._ids = np.zeros(0, np.int64)
        # the rows: _source[_rows] (or all of _source), gathered into _vecs when numpy needs them
        self._source: np.ndarray = np.zeros((0, dim), np.float16)
        self._rows: np.ndarray | None = None
        self._gathered: np.ndarray | None = None
        self._f32: np.ndarray | None = None  # float32 copy of _vecs, made on the first search
        self._live: dict[str, Any] = {}  # device -> _rows as a tensor there
        self._lock = threading.RLock()

    @classmethod
    def from_arrays(
        cls, ids, vectors, *, rows: np.ndarray | None = None, device: str = "auto"
    ) -> ExactIndex:
        """An index over existing arrays (a memory-mapped matrix is used in place, not copied).

        ``rows`` (row numbers in ``vectors``, one per id) indexes those rows only: a
        collection with removed items passes its whole memory map and its live rows, which
        a GPU then holds once for every search and classifier.
        """
        idx = cls(np.asarray(vectors).shape[1], device=device)
        idx._ids = as_ids(ids)
        idx._source = (
            vectors
            if isinstance(vectors, np.memmap) and vectors.dtype == np.float16
            else np.ascontiguousarray(vectors, np.float16)
        )
        if rows is not None:
            idx._rows = np.asarray(rows, np.int64).reshape(-1)
            if idx._rows.size and (idx._rows.min() < 0 or idx._rows.max() >= len(vectors)):
                raise ValueError("rows out of range of the vectors")
        if len(idx._ids) != (len(idx._source) if rows is None else len(idx._rows)):
            raise ValueError("ids and vectors differ in length")
        if len(np.unique(idx._ids)) != len(idx._ids):
            raise ValueError("duplicate ids")
        return idx

    @property
    def _vecs(self) -> np.ndarray:
        """The live rows in id order (gathered once, when the index has ``rows``)."""
        if self._rows is None:
            return self._source
        if self._gathered is None:
            self._gathered = np.asarray(self._source[self._rows])
        return self._gathered

    def _set_rows(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        self._ids, self._source, self._rows = ids, vecs, None
        self._gathered = self._f32 = None
        self._live = {}

    def engine(self) -> str:
        """Where the next search runs: ``"numpy"``, ``"cpu"`` (PyTorch) or a CUDA device."""
        values = len(self._ids) * self.dim
        if self.device == "auto" and values <= NUMPY_MAX_VALUES:
            return "numpy"
        where = vector_device(self.device, 2 * self._source.size)
        if where != "cpu":
            return where
        return "numpy" if 4 * values <= self.cache_bytes else "cpu"

    def _blocks(self):
        """(start, float32 block) over the live vectors. Converting float16 costs 10x the dot
        products, so a matrix up to ``cache_bytes`` as float32 is converted once and kept."""
        n = len(self._ids)
        vecs = self._vecs
        if self._f32 is None and n * self.dim * 4 <= self.cache_bytes:
            self._f32 = np.asarray(vecs, dtype=np.float32)
        for start in range(0, n, self.chunk):
            if self._f32 is not None:
                yield start, self._f32[start : start + self.chunk]
            else:
                yield start, np.asarray(vecs[start : start + self.chunk], dtype=np.float32)

    def _on_device(self, device: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The matrix on ``device`` and the live rows there (None: all of them)."""
        import torch

        m = RESIDENT.get(self._source, device)
        if self._rows is None:
            return m, None
        live = self._live.get(device)
        if live is None:
            live = self._live[device] = torch.from_numpy(self._rows).to(device)
        return m, live

    def add(self, ids, vectors) -> None:
        ids = as_ids(ids)
        vecs = as_vectors(vectors, len(ids), self.dim)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        vecs = (vecs / np.where(norms == 0, 1, norms)).astype(np.float16)
        with self._lock:
            keep = ~np.isin(self._ids, ids)
            pick = last_of_each(ids)
            self._set_rows(
                np.concatenate([self._ids[keep], ids[pick]]),
                np.concatenate([np.asarray(self._vecs[keep]), vecs[pick]]),
            )

    def remove(self, ids) -> None:
        with self._lock:
            keep = ~np.isin(self._ids, as_ids(ids))
            self._set_rows(self._ids[keep], np.asarray(self._vecs[keep]))

    def ids(self) -> np.ndarray:
        return np.sort(self._ids)

    def __len__(self) -> int:
        return int(self._ids.size)

    def scores(self, queries) -> np.ndarray:
        """Cosine similarity of each query with every live vector, (Q, N) float32."""
        q = as_queries(queries, self.dim)
        with self._lock:
            where = self.engine() if len(self._ids) else "numpy"
            if where != "numpy":
                m, live = self._on_device(where)
                return clip_scores(device_scores(m, q, live))
            out = np.empty((q.shape[0], len(self._ids)), np.float32)
            for start, block in self._blocks():
                out[:, start : start + len(block)] = q @ block.T
        return clip_scores(out)

    def search(
        self, queries, k: int = 10, *, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self._search(queries, k)

    def _search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_queries(queries, self.dim)
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        q = q / np.where(norms == 0, 1, norms)
        nq = q.shape[0]
        where = self.engine() if len(self._ids) else "numpy"
        if where != "numpy":
            m, live = self._on_device(where)
            best_pos, best_val = device_top_k(m, q, k, live)
        else:
            best_pos = np.zeros((nq, 0), np.int64)
            best_val = np.zeros((nq, 0), np.float32)
            for start, block in self._blocks():
                pos, vals = top_k(q @ block.T, k)
                merged_pos = np.concatenate([best_pos, pos + start], axis=1)
                merged_val = np.concatenate([best_val, vals], axis=1)
                keep, best_val = top_k(merged_val, k)
                best_pos = np.take_along_axis(merged_pos, keep, axis=1)
        ids = self._ids[best_pos]
        if best_pos.shape[1] < k:
            pad = k - best_pos.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            best_val = np.pad(best_val, ((0, 0), (0, pad)), constant_values=-np.inf)
        return ids.astype(np.int64), clip_scores(best_val)
