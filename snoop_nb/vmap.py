"""A visual map of a collection: every item as a point in 2D, neighbours near each other.

The layout is UMAP's (McInnes et al. 2018, ``umap-learn``) over cosine distances, seeded, fitted
on at most ``sample`` items (all of a small collection) after a PCA to ``pca_dim`` dimensions;
the other items are placed among the fitted ones (the similarity-weighted mean of their
``k`` nearest fitted items' positions, in the PCA space), in blocks. Fitting 20k items takes
about a minute on 2 cores, so the layout is built once and cached in the collection directory
(``map-<key>.npz``, written atomically), keyed by the embedder and the parameters, and holding
the item ids it covers: opening it again costs a file read and never imports ``umap``.

Items added after the map was built are placed among its fitted items the same way, without
refitting: the points already there never move, so a map people have learned stays the same.
Removed items are dropped. When the items placed since the build exceed
:data:`STALE_FRACTION` of those it was built with, the map says it is ``stale``: rebuild it
(``snoop map --collection DIR --rebuild``, or ``build_map``) to fit the newcomers too.

>>> from snoop_nb.vmap import visual_map
>>> m = visual_map(col)                  # built (and cached) if missing   # doctest: +SKIP
>>> m.ids[:3], m.xy[:3]                  # positions in [0, 1]             # doctest: +SKIP
>>> m.in_box(0.1, 0.1, 0.3, 0.4)         # the ids of the items in a box   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import SnoopError, UsageError
from snoop_nb.index.base import atomic_write

if TYPE_CHECKING:
    from snoop_nb.collection import Collection

#: Items placed since the build, as a fraction of those the map was built with, above which
#: the map is ``stale`` (it still shows every item).
STALE_FRACTION = 0.25
#: The default parameters: UMAP's own defaults for neighbours and spread, cosine distances.
DEFAULTS: dict[str, Any] = {
    "n_neighbors": 15,
    "min_dist": 0.1,
    "metric": "cosine",
    "sample": 20_000,
    "pca_dim": 50,
    "seed": 0,
}
#: Neighbours among the fitted items that place an item not fitted.
PLACE_K = 10
_BLOCK = 1024
_MAP_PREFIX = "map-"
_LOCK_NAME = "map.lock"

Progress = Callable[[str, float], None]


class MapBusyError(SnoopError):
    """Another process is building this collection's map."""


@dataclass
class VisualMap:
    """A 2D layout of a collection's items.

    ``ids`` (sorted int64) and ``xy`` (float32, ``(n, 2)``, in [0, 1]) row for row;
    ``fitted``: the ids UMAP was fitted on (the others were placed among them); ``added``: how
    many items were placed after the build; ``params``: how it was made.
    """

    ids: np.ndarray
    xy: np.ndarray
    fitted: np.ndarray
    params: dict[str, Any]
    built_with: int  # items the build covered
    added: int = 0
    seconds: float = 0.0  # the build's time
    path: Path | None = None
    # the placement space: PCA mean and components, the fitted items' unit PCA rows, their xy
    _mean: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _components: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _anchors: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _anchor_xy: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def stale(self) -> bool:
        """More items were placed since the build than :data:`STALE_FRACTION` of its size."""
        return self.added > STALE_FRACTION * max(self.built_with, 1)

    def positions(self, ids) -> np.ndarray:
        """The ``(len(ids), 2)`` positions of ``ids`` (NaN for an id not on the map)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        out = np.full((ids.size, 2), np.nan, np.float32)
        if self.ids.size:
            pos = np.minimum(np.searchsorted(self.ids, ids), self.ids.size - 1)
            hit = self.ids[pos] == ids
            out[hit] = self.xy[pos[hit]]
        return out

    def in_box(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        """The ids of the items inside the box (corners in map coordinates, any order)."""
        (x0, x1), (y0, y1) = sorted((x0, x1)), sorted((y0, y1))
        x, y = self.xy[:, 0], self.xy[:, 1]
        return self.ids[(x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)]

    def in_polygon(self, points: Sequence[Sequence[float]]) -> np.ndarray:
        """The ids of the items inside the polygon ``points`` (a lasso: ``[(x, y), ...]``)."""
        return self.ids[inside_polygon(self.xy, points)]

    def nearest(self, x: float, y: float) -> int | None:
        """The id of the item nearest to a point of the map (None on an empty map)."""
        if not self.ids.size:
            return None
        d = (self.xy[:, 0] - x) ** 2 + (self.xy[:, 1] - y) ** 2
        return int(self.ids[int(np.argmin(d))])


def inside_polygon(xy: np.ndarray, points: Sequence[Sequence[float]]) -> np.ndarray:
    """A mask of the rows of ``xy`` inside the polygon (even-odd rule, as the widget draws)."""
    poly = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    inside = np.zeros(len(xy), bool)
    if len(poly) < 3:
        return inside
    x, y = xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)
    xj, yj = poly[-1]
    for xi, yi in poly:
        crosses = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = (xj - xi) * (y - yi) / (yj - yi) + xi
        inside ^= crosses & (x < at)
        xj, yj = xi, yi
    return inside


# --- the cache ----------------------------------------------------------------------------
def _params(col: Collection, overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise UsageError(
            f"unknown map parameter(s) {', '.join(sorted(unknown))}: use {', '.join(DEFAULTS)}"
        )
    params = {**DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    if params["metric"] not in ("cosine", "euclidean"):
        raise UsageError(f"metric must be 'cosine' or 'euclidean', not {params['metric']!r}")
    if int(params["sample"]) < 2 or int(params["n_neighbors"]) < 2:
        raise UsageError("sample and n_neighbors must be at least 2")
    params["embedder"] = col.embedder_id
    return params


def map_path(col: Collection, **params: Any) -> Path:
    """Where the map of ``col`` made with ``params`` is cached."""
    p = _params(col, params)
    key = hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:12]
    return Path(col.root) / f"{_MAP_PREFIX}{key}.npz"


def _save(m: VisualMap, path: Path) -> None:
    meta = {
        "params": m.params,
        "built_with": m.built_with,
        "added": m.added,
        "seconds": m.seconds,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                ids=m.ids,
                xy=m.xy,
                fitted=m.fitted,
                mean=m._mean,
                components=m._components,
                anchors=m._anchors.astype(np.float16),
                anchor_xy=m._anchor_xy,
                meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
            )

    atomic_write(path, write)
    m.path = path


def _read(path: Path) -> VisualMap | None:
    try:
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            return VisualMap(
                ids=z["ids"].astype(np.int64),
                xy=z["xy"].astype(np.float32),
                fitted=z["fitted"].astype(np.int64),
                params=meta["params"],
                built_with=int(meta["built_with"]),
                added=int(meta["added"]),
                seconds=float(meta.get("seconds", 0.0)),
                path=path,
                _mean=z["mean"].astype(np.float32),
                _components=z["components"].astype(np.float32),
                _anchors=z["anchors"].astype(np.float32),
                _anchor_xy=z["anchor_xy"].astype(np.float32),
            )
    except (OSError, ValueError, KeyError):
        return None  # missing or unreadable: built again by whoever builds


def load_map(col: Collection, *, save: bool = True, **params: Any) -> VisualMap | None:
    """The cached map of ``col`` (None if it was never built), brought up to date with the
    collection's items: removed ones dropped, new ones placed among the fitted items (no
    refit, no ``umap`` import). The updated map is saved (atomically) so the next opening is
    a plain read; ``save=False`` keeps it in memory only."""
    path = map_path(col, **params)
    m = _read(path)
    if m is None:
        return None
    live = col.ok_ids()
    if live.size == m.ids.size and np.array_equal(live, m.ids):
        return m
    keep = np.isin(m.ids, live)
    new = np.setdiff1d(live, m.ids, assume_unique=True)
    xy = np.concatenate([m.xy[keep], _place(col, m, new)])
    ids = np.concatenate([m.ids[keep], new])
    order = np.argsort(ids, kind="stable")
    m.ids, m.xy = ids[order], xy[order].astype(np.float32)
    m.added += int(new.size)
    if save:
        with contextlib.suppress(OSError):  # a read-only collection still shows its map
            _save(m, path)
    return m


def visual_map(
    col: Collection, *, rebuild: bool = False, progress: Progress | None = None, **params: Any
) -> VisualMap:
    """The map of ``col``: the cached one (updated, see :func:`load_map`), else built now and
    cached (``rebuild=True``: built again). Only one process builds a collection's map at a
    time; another asking meanwhile waits for it and reads its result."""
    if not rebuild:
        m = load_map(col, **params)
        if m is not None:
            return m
    with _build_lock(col, wait=3600.0):
        if not rebuild:  # built by another process while this one waited
            m = load_map(col, **params)
            if m is not None:
                return m
        m = build_map(col, progress=progress, **params)
        _save(m, map_path(col, **params))
        return m


def _build_lock(col: Collection, *, wait: float):
    from snoop_nb.store.lock import file_lock

    def busy() -> MapBusyError:
        return MapBusyError(
            f"the map of {col.root} is being built by another process; "
            "open it again when that is done"
        )

    return file_lock(Path(col.root) / _LOCK_NAME, wait=wait, busy=busy)


def is_building(col: Collection) -> bool:
    """Whether another process holds the map's build lock now."""
    try:
        with _build_lock(col, wait=0.0):
            return False
    except MapBusyError:
        return True


# --- building -----------------------------------------------------------------------------
def build_map(col: Collection, *, progress: Progress | None = None, **params: Any) -> VisualMap:
    """Lay out ``col`` now (not cached: see :func:`visual_map`). ``progress(stage, fraction)``
    is called as it goes (stages ``"sample"``, ``"umap"``, ``"place"``)."""
    p = _params(col, params)
    say = progress or (lambda stage, done: None)
    t0 = time.perf_counter()
    ids = col.ok_ids()
    n = int(ids.size)
    rng = np.random.default_rng(int(p["seed"]))
    fit_ids = ids if n <= int(p["sample"]) else np.sort(rng.choice(ids, int(p["sample"]), False))
    say("sample", 0.0)
    sample = _unit(col.vectors_of(fit_ids))
    mean = sample.mean(axis=0)
    dim = max(1, min(int(p["pca_dim"]), sample.shape[1], max(len(fit_ids) - 1, 1)))
    centred = sample - mean
    cov = centred.T @ centred
    _, vecs = np.linalg.eigh(cov)
    components = np.ascontiguousarray(vecs[:, ::-1][:, :dim].T, dtype=np.float32)
    anchors = _unit(centred @ components.T)
    say("umap", 0.05)
    raw = _layout(anchors, p)
    anchor_xy = _unit_square(raw)
    m = VisualMap(
        ids=fit_ids.astype(np.int64),
        xy=anchor_xy,
        fitted=fit_ids.astype(np.int64),
        params=p,
        built_with=n,
        _mean=mean.astype(np.float32),
        _components=components,
        _anchors=anchors,
        _anchor_xy=anchor_xy,
    )
    rest = np.setdiff1d(ids, fit_ids, assume_unique=True)
    if rest.size:
        say("place", 0.8)
        xy = np.concatenate([anchor_xy, _place(col, m, rest, progress=say)])
        every = np.concatenate([fit_ids, rest])
        order = np.argsort(every, kind="stable")
        m.ids, m.xy = every[order].astype(np.int64), xy[order]
    m.seconds = time.perf_counter() - t0
    say("done", 1.0)
    return m


def _layout(x: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """UMAP's 2D embedding of the unit rows ``x`` (a tiny set: its first two PCA axes)."""
    n = len(x)
    if n < 4 or x.shape[1] < 2:
        out = np.zeros((n, 2), np.float32)
        out[:, : min(2, x.shape[1])] = x[:, :2]
        return out
    import warnings

    import umap  # ~14 s the first time in a process (numba): only where a map is built

    reducer = umap.UMAP(
        n_neighbors=min(int(p["n_neighbors"]), n - 1),
        min_dist=float(p["min_dist"]),
        metric=p["metric"],  # on unit rows euclidean ranks like cosine
        n_components=2,
        random_state=int(p["seed"]),
        init="spectral" if n > 10 else "random",
    )
    with warnings.catch_warnings():  # "n_jobs overridden by random_state": seeded is 1 thread
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        return np.asarray(reducer.fit_transform(x), np.float32)


def _unit_square(raw: np.ndarray) -> np.ndarray:
    """``raw`` scaled into [0, 1]^2, one scale for both axes (distances keep their ratio),
    centred; the few far outliers UMAP leaves past the 0.2-99.8 percentiles are pinned to the
    border rather than squeezing everything else into a corner."""
    lo, hi = np.percentile(raw, [0.2, 99.8], axis=0) if len(raw) > 50 else (raw.min(0), raw.max(0))
    span = float(np.max(hi - lo)) or 1.0
    xy = (raw - (lo + hi) / 2) / (span * 1.04) + 0.5
    return np.clip(xy, 0.0, 1.0).astype(np.float32)


def _place(
    col: Collection, m: VisualMap, ids: np.ndarray, progress: Progress | None = None
) -> np.ndarray:
    """Positions for ``ids`` among the fitted items: the similarity-weighted mean of their
    :data:`PLACE_K` nearest fitted items' positions (cosine in the PCA space), in blocks."""
    out = np.empty((ids.size, 2), np.float32)
    if not ids.size:
        return out
    k = min(PLACE_K, len(m._anchors))
    for start in range(0, ids.size, _BLOCK):
        part = ids[start : start + _BLOCK]
        q = _unit((_unit(col.vectors_of(part)) - m._mean) @ m._components.T)
        sim = q @ m._anchors.T
        near = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else None
        if near is None:
            near = np.broadcast_to(np.arange(sim.shape[1]), sim.shape)
        s = np.take_along_axis(sim, near, axis=1)
        w = np.exp((s - s.max(axis=1, keepdims=True)) / 0.05)  # the nearest dominate
        w /= w.sum(axis=1, keepdims=True)
        out[start : start + len(part)] = np.einsum("nk,nkd->nd", w, m._anchor_xy[near])
        if progress is not None:
            progress("place", 0.8 + 0.2 * (start + len(part)) / ids.size)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)
