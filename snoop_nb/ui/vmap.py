"""MapView: the collection as points on a map (:mod:`snoop_nb.vmap`), to look at, select,
label and search from.

Points are drawn on a 2D canvas in the browser (one ``ImageData`` per frame, so 100k points
pan and zoom smoothly with no GPU); they travel as bytes: two uint16 coordinates and one uint8
colour index per point, plus a palette. Wheel zooms, drag pans; the box and lasso tools select
(shift adds to the selection). Points are coloured by the current class's labels, its scores
(the session's scorer), the class as applied to the corpus, or a metadata column, with a
legend. Hovering a point shows its thumbnail. The selection can be labelled (+1 / -1 in the
current class, one knowledge-base transaction), searched from (the mean of its vectors), or
shown in the grid.

>>> view = MapView(col, session=col.session("alice", "boats"), grid=grid)  # doctest: +SKIP
>>> view.color_by = "score"
>>> view.select_box(0.2, 0.2, 0.4, 0.5); view.label_selection(1)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipyvuetify as v
import numpy as np
import traitlets as t

from snoop_nb.errors import SnoopError
from snoop_nb.ui.assets import asset
from snoop_nb.ui.thumbs import Thumbnails

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.collection import Collection
    from snoop_nb.learn import FeedbackSession
    from snoop_nb.ui.grid import ImageGrid
    from snoop_nb.vmap import VisualMap

GREY = "#b0b0b0"
LABEL_COLOURS = {1: "#2e7d32", -1: "#c62828", 0: GREY}
# matplotlib's tab20, without its greys (grey means "none")
CATEGORY_COLOURS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#dbdb8d", "#9edae5",
]  # fmt: skip
#: A metadata column with at most this many values may colour the map.
MAX_CATEGORIES = len(CATEGORY_COLOURS)
SCORE_STEPS = 64
NO_MAP_MESSAGE = (
    "This collection has no map yet. Build it once with `snoop map --collection DIR` "
    "(every visitor then opens it at once), or with the button below."
)


def _viridis(steps: int) -> list[str]:
    """``steps`` colours of viridis, dark (low) to yellow (high), from its 5 anchors."""
    anchors = np.array(
        [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], float
    )
    at = np.linspace(0, len(anchors) - 1, steps)
    lo = np.floor(at).astype(int).clip(0, len(anchors) - 2)
    f = (at - lo)[:, None]
    rgb = anchors[lo] * (1 - f) + anchors[lo + 1] * f
    return ["#" + "".join(f"{round(c):02x}" for c in row) for row in rgb]


class MapView(v.VuetifyTemplate):
    """An interactive map of a collection (see the module docstring).

    ``vmap``: a :class:`~snoop_nb.vmap.VisualMap` (by default the collection's cached map;
    with none cached, the view offers to build it, unless ``build=False``). ``session``: the
    class that labels and colours. ``grid``: where "show" and "search" put their results
    (``on_results(fn)`` replaces that: ``fn(frame, text)``).
    """

    template_file = asset("visual_map.vue")

    coords = t.List().tag(sync=True)  # [bytes]: uint16 x, y per point, in drawing order
    colours = t.List().tag(sync=True)  # [bytes]: uint8 palette index per point
    mask = t.List().tag(sync=True)  # [bytes]: uint8 1 = selected, per point ([]: none)
    palette = t.List(t.Unicode()).tag(sync=True)
    legend = t.List().tag(sync=True)  # [{label, color}]
    count = t.Int(0).tag(sync=True)
    color_by = t.Unicode("labels").tag(sync=True)
    color_choices = t.List().tag(sync=True)  # [{value, title}]
    selected_count = t.Int(0).tag(sync=True)
    hover = t.Dict().tag(sync=True)  # {index, id, caption, label, value}
    hover_thumb = t.List().tag(sync=True)  # [bytes]: the hovered item's JPEG
    status_text = t.Unicode("").tag(sync=True)
    message = t.Unicode("").tag(sync=True)
    labelling = t.Bool(False).tag(sync=True)
    has_map = t.Bool(False).tag(sync=True)
    can_build = t.Bool(True).tag(sync=True)
    building = t.Bool(False).tag(sync=True)
    progress = t.Float(0.0).tag(sync=True)
    stored = t.Int(0).tag(sync=True)  # counts label writes

    def __init__(
        self,
        col: Collection,
        vmap: VisualMap | None = None,
        *,
        session: FeedbackSession | None = None,
        grid: ImageGrid | None = None,
        thumbnails: Thumbnails | None = None,
        build: bool = True,
        k: int = 100,
        **kwargs: Any,
    ):
        super().__init__(can_build=build, **kwargs)
        self.col = col
        self.grid = grid
        self.k = k
        self.thumbnails = thumbnails or (grid.thumbnails if grid is not None else Thumbnails(col))
        self._session = session
        self._order = np.zeros(0, np.int64)  # item ids in drawing order
        self._q = np.zeros((0, 2), np.float32)  # their positions as drawn (quantised)
        self._selected = np.zeros(0, bool)  # over drawing order
        self._values: dict[str, Any] = {}  # per colour mode: what the hover says
        self._result_handlers: list[Callable[[pd.DataFrame, str], None]] = []
        self._label_handlers: list[Callable[[list[int], int], None]] = []
        self._meta: pd.DataFrame | None = None
        self.vmap: VisualMap | None = None
        self.labelling = session is not None
        self.observe(lambda _: self.recolour(), names="color_by")
        if vmap is None:
            from snoop_nb.vmap import load_map

            vmap = load_map(col)
        if vmap is None:
            self.message = NO_MAP_MESSAGE if build else NO_MAP_MESSAGE.split(" Build")[0]
        else:
            self.set_map(vmap)

    # --- public API -----------------------------------------------------------------------
    @property
    def session(self) -> FeedbackSession | None:
        return self._session

    @session.setter
    def session(self, session: FeedbackSession | None) -> None:
        self._session = session
        self.labelling = session is not None
        self.recolour()

    @property
    def selected(self) -> np.ndarray:
        """The ids of the selected items, sorted."""
        return np.sort(self._order[self._selected])

    def on_results(self, handler: Callable[[pd.DataFrame, str], None]) -> None:
        """Call ``handler(frame, text)`` with the results of "show" and "search" instead of
        showing them in ``grid``."""
        self._result_handlers.append(handler)

    def on_label(self, handler: Callable[[list[int], int], None]) -> None:
        """Call ``handler(ids, value)`` after each label written from the map."""
        self._label_handlers.append(handler)

    def set_map(self, vmap: VisualMap) -> None:
        """Show ``vmap`` (its points coloured as ``color_by`` says)."""
        self.vmap = vmap
        self._meta = None
        self._selected = np.zeros(len(vmap), bool)
        self.has_map = True
        self.color_choices = self._choices()
        values = [c["value"] for c in self.color_choices]
        if self._session is None and self.color_by == "labels" and len(values) > 3:
            self.color_by = values[3]  # no class to colour by yet: a metadata column; recolours
        elif self.color_by not in values and not self.color_by.startswith("meta:"):
            self.color_by = "labels"  # recolours
        else:
            self.recolour()

    def build(self) -> None:
        """Build (or rebuild) the collection's map now and show it, reporting progress."""
        from snoop_nb.vmap import MapBusyError, is_building, visual_map

        if is_building(self.col):
            self.message = "the map is being built by another process: open it again soon"
            return
        self.building, self.progress = True, 0.0
        self.message = "building the map (UMAP): about a minute per 20k items"

        def progress(stage: str, done: float) -> None:
            self.progress = float(done)

        try:
            m = visual_map(self.col, rebuild=self.vmap is not None, progress=progress)
        except (SnoopError, MapBusyError) as e:
            self.message = str(e)
            return
        finally:
            self.building = False
        self.message = ""
        self.set_map(m)

    def recolour(self) -> None:
        """Colour the points as ``color_by`` says (``"labels"``, ``"score"``, ``"applied"``,
        ``"meta:<column>"``), drawing the most telling points last (on top)."""
        if self.vmap is None:
            return
        ids = self.vmap.ids
        try:
            idx, palette, legend, values, order = self._colouring(ids)
        except SnoopError as e:  # e.g. a class with no model and no labels to score by
            self.message = str(e)
            idx, palette, legend, values, order = self._flat(ids, "no colour")
        else:
            self.message = "" if not self.vmap.stale else self._stale_text()
        was = set(self._order[self._selected].tolist()) if self._selected.any() else set()
        self._order = ids[order]
        q = np.clip(np.round(self.vmap.xy[order] * 65535), 0, 65535).astype("<u2")
        self._q = q.astype(np.float32) / 65535
        self._selected = np.isin(self._order, list(was)) if was else np.zeros(len(ids), bool)
        self._values = {"order": values[order] if values is not None else None}
        with self.hold_sync():
            self.coords = [q.tobytes()]
            self.colours = [idx[order].astype(np.uint8).tobytes()]
            self.palette = palette
            self.legend = legend
            self.count = int(ids.size)
            self._sync_mask()
            self.status_text = self._status()

    # --- selection ------------------------------------------------------------------------
    def select(self, ids, *, add: bool = False) -> None:
        """Select the items ``ids`` (with ``add``, keep those already selected)."""
        hit = np.isin(self._order, np.asarray(list(ids), dtype=np.int64))
        self._selected = (self._selected | hit) if add else hit
        self._sync_mask()

    def select_box(self, x0: float, y0: float, x1: float, y1: float, *, add: bool = False):
        """Select the points inside a box of map coordinates ([0, 1] both ways, y down)."""
        (x0, x1), (y0, y1) = sorted((x0, x1)), sorted((y0, y1))
        x, y = self._q[:, 0], self._q[:, 1]
        hit = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        self._selected = (self._selected | hit) if add else hit
        self._sync_mask()

    def select_lasso(self, points, *, add: bool = False) -> None:
        """Select the points inside the polygon ``points`` (``[(x, y), ...]``, map coords)."""
        from snoop_nb.vmap import inside_polygon

        hit = inside_polygon(self._q, points)
        self._selected = (self._selected | hit) if add else hit
        self._sync_mask()

    def clear_selection(self) -> None:
        self._selected = np.zeros(len(self._order), bool)
        self._sync_mask()

    def label_selection(self, value: int) -> None:
        """Label the selected items ``value`` (+1, -1, 0 clears) in the current class, in one
        knowledge-base transaction."""
        ids = [int(i) for i in self.selected]
        if not ids:
            self.message = "select points first: drag a box or a lasso around them"
            return
        if self._session is None:
            self.message = "no class chosen: choose or create a class to label the selection"
            return
        try:
            self._session.label(ids, max(-1, min(1, int(value))))
        except SnoopError as e:
            self.message = str(e)
            return
        self.stored += 1
        self.message = f"{len(ids)} items labelled {'+1' if value > 0 else value or 'none'}"
        if self.color_by in ("labels", "score"):
            self.recolour()
        for handler in self._label_handlers:
            handler(ids, int(value))

    def search_selection(self, k: int | None = None) -> pd.DataFrame | None:
        """Search by the selection (the mean of its vectors) and show the results."""
        ids = self.selected
        if not ids.size:
            self.message = "select points first: drag a box or a lasso around them"
            return None
        mean = self.col.vectors_of(ids).mean(axis=0)
        frame = self.col.search(vector=mean, k=k or max(self.k, int(ids.size)))
        self._results(frame, f"like the {ids.size} items selected on the map")
        return frame

    def show_selection(self) -> pd.DataFrame | None:
        """Show the selected items (in map order, top-left first) in the grid."""
        ids = self.selected
        if not ids.size:
            self.message = "select points first: drag a box or a lasso around them"
            return None
        frame = self.col.items(ids.tolist()).assign(score=None)
        self._results(frame, f"the {ids.size} items selected on the map")
        return frame

    # --- front-end events -------------------------------------------------------------------
    def vue_select(self, data: dict) -> None:
        pts = data.get("points") or []
        add = bool(data.get("add"))
        if data.get("kind") == "box" and len(pts) == 2:
            (x0, y0), (x1, y1) = pts
            self.select_box(x0, y0, x1, y1, add=add)
        else:
            self.select_lasso(pts, add=add)

    def vue_clear(self, data: dict) -> None:
        self.clear_selection()

    def vue_label(self, data: dict) -> None:
        self.label_selection(int(data["value"]))

    def vue_query(self, data: dict) -> None:
        self.search_selection()

    def vue_show(self, data: dict) -> None:
        self.show_selection()

    def vue_build(self, data: dict) -> None:
        self.build()

    def vue_hover_point(self, data: dict) -> None:
        i = int(data.get("index", -1))
        if not 0 <= i < len(self._order):
            self.hover, self.hover_thumb = {}, []
            return
        item_id = int(self._order[i])
        thumb = self.thumbnails.get([item_id]).get(item_id, b"")
        uri = str(self.col.paths([item_id]).get(item_id, ""))
        values = self._values.get("order")
        value = None if values is None else values[i]
        if self.color_by == "labels" and value is not None:
            value = {1: "relevant", -1: "not relevant"}.get(int(value), "unlabelled")
        with self.hold_sync():
            self.hover_thumb = [thumb] if thumb else []
            self.hover = {
                "index": i,
                "id": item_id,
                "caption": os.path.basename(uri) or f"#{item_id}",
                "value": None if value is None else _fmt(value),
            }

    # --- colours ------------------------------------------------------------------------------
    def _choices(self) -> list[dict]:
        choices = [
            {"value": "labels", "title": "labels of the class"},
            {"value": "score", "title": "score of the class"},
            {"value": "applied", "title": "class applied to the corpus"},
        ]
        for name in self._meta_columns():
            choices.append({"value": f"meta:{name}", "title": f"metadata: {name}"})
        return choices

    def _meta_frame(self) -> pd.DataFrame:
        if self._meta is None:
            self._meta = self.col.items(self.vmap.ids.tolist()).set_index("id")
        return self._meta

    def _meta_columns(self) -> list[str]:
        if self.vmap is None or len(self.vmap) > 200_000:  # not worth reading the catalog
            return []
        frame = self._meta_frame()
        skip = {"uri", "kind", "status", "error", "digest", "video", "t_start", "t_end"}
        out = []
        for name in frame.columns:
            if name in skip or frame[name].dtype.kind not in "OUSb":
                continue
            n = frame[name].nunique(dropna=True)
            if 2 <= n <= MAX_CATEGORIES:
                out.append(str(name))
        return out

    def _flat(self, ids: np.ndarray, what: str):
        n = ids.size
        return (np.zeros(n, np.uint8), [GREY], [{"label": what, "color": GREY}], None,
                np.arange(n))  # fmt: skip

    def _colouring(self, ids: np.ndarray):
        """(palette index per id, palette, legend, value per id or None, drawing order)."""
        mode = self.color_by
        n = ids.size
        if mode.startswith("meta:"):
            col = self._meta_frame()[mode[5:]].reindex(ids)
            known = col.notna().to_numpy()
            codes, names = np.unique(col[known].astype(str), return_inverse=True)
            idx = np.zeros(n, np.uint8)
            idx[known] = np.minimum(names + 1, 255)  # past 254 values the last colour repeats
            hues = [CATEGORY_COLOURS[i % MAX_CATEGORIES] for i in range(min(len(codes), 254))]
            palette = [GREY, *hues]
            legend = [{"label": str(c), "color": h} for c, h in zip(codes, hues, strict=False)]
            legend = legend[:MAX_CATEGORIES]
            if not known.all():
                legend.append({"label": "none", "color": GREY})
            values = np.where(known, col.astype(str).to_numpy(), None)
            return idx, palette, legend, values, np.argsort(known, kind="stable")
        if self._session is None:
            raise SnoopError(
                "no class chosen: choose one to colour the map by its labels or scores"
            )
        if mode == "labels":
            lab = self._session.labels()
            value = dict(zip(lab["item_id"].astype(int), lab["value"].astype(int), strict=True))
            v_arr = np.array([value.get(int(i), 0) for i in ids], np.int8)
            idx = np.select([v_arr > 0, v_arr < 0], [1, 2], 0).astype(np.uint8)
            palette = [LABEL_COLOURS[0], LABEL_COLOURS[1], LABEL_COLOURS[-1]]
            legend = [
                {"label": f"relevant ({int((v_arr > 0).sum())})", "color": LABEL_COLOURS[1]},
                {"label": f"not relevant ({int((v_arr < 0).sum())})", "color": LABEL_COLOURS[-1]},
                {"label": "unlabelled", "color": GREY},
            ]
            return idx, palette, legend, v_arr, np.argsort(np.abs(v_arr), kind="stable")
        if mode == "score":
            s = self._session.scores().reindex(ids).to_numpy(np.float32)
            what = "score"
        elif mode == "applied":
            ap = self._session.applied()
            if ap.empty:
                raise SnoopError(
                    f"{self._session.ref} was not applied to the corpus yet: train and apply it"
                )
            s = ap.set_index("item_id")["score"].reindex(ids).to_numpy(np.float32)
            what = "probability"
        else:
            raise SnoopError(f"unknown colouring {mode!r}")
        ok = np.isfinite(s)
        lo, hi = (float(np.min(s[ok])), float(np.max(s[ok]))) if ok.any() else (0.0, 1.0)
        if mode == "applied":
            lo, hi = min(lo, 0.5), 1.0
        span = hi - lo or 1.0
        step = np.zeros(n, np.int64)
        step[ok] = 1 + np.clip(
            ((s[ok] - lo) / span * (SCORE_STEPS - 1)).round(), 0, SCORE_STEPS - 1
        )
        palette = [GREY, *_viridis(SCORE_STEPS)]
        legend = [
            {"label": f"{what} {lo + span * f:.3g}", "color": palette[1 + round(f * (SCORE_STEPS - 1))]}
            for f in (1.0, 0.75, 0.5, 0.25, 0.0)
        ]  # fmt: skip
        if not ok.all():
            legend.append({"label": "not applied" if mode == "applied" else "none", "color": GREY})
        values = np.where(ok, np.round(s, 4), None)
        return step.astype(np.uint8), palette, legend, values, np.argsort(step, kind="stable")

    # --- helpers ------------------------------------------------------------------------------
    def _sync_mask(self) -> None:
        with self.hold_sync():
            self.mask = [self._selected.astype(np.uint8).tobytes()] if self._selected.any() else []
            self.selected_count = int(self._selected.sum())

    def _results(self, frame: pd.DataFrame, text: str) -> None:
        if self._result_handlers:
            for handler in self._result_handlers:
                handler(frame, text)
        elif self.grid is not None:
            self.grid.show(frame, text=text)

    def _status(self) -> str:
        m = self.vmap
        if m is None:
            return ""
        fitted = "" if m.fitted.size == len(m) else f", UMAP fitted on {m.fitted.size}"
        return f"{len(m)} items{fitted}"

    def _stale_text(self) -> str:
        m = self.vmap
        return (
            f"{m.added} items were placed on this map since it was built for {m.built_with}: "
            "rebuild it to lay them out afresh (`snoop map --collection DIR --rebuild`)"
        )


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.3f}"
    return str(value)
