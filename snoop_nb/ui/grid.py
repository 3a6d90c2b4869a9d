"""ImageGrid: a page of result thumbnails to look at, label with a click, and search from.

Video keyframes show their video's name and timecode, a play button (``on_play``), and, with
"group per video" on (``group_video``), come grouped under one header per video, best video
first, each video's moments best first.

>>> grid = ImageGrid(collection, session=collection.session("alice", "boats"))  # doctest: +SKIP
>>> grid.show(collection.search(text="a boat", k=200))                          # doctest: +SKIP
>>> grid.select_page(); grid.label_selection(-1)   # the whole page not relevant, at once
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipyvuetify as v
import traitlets as t

from snoop_nb.ui.assets import asset
from snoop_nb.ui.thumbs import Thumbnails

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.collection import Collection
    from snoop_nb.learn import FeedbackSession

#: What a click does to a tile's label: relevant -> not relevant -> unlabelled -> relevant.
NEXT_LABEL = {0: 1, 1: -1, -1: 0}

_HIDDEN_META = {
    "rank",
    "id",
    "uri",
    "score",
    "similarity",
    "label",
    "kind",
    "video",
    "t_start",
    "t_end",
    "copies",
    "copy_ids",
    "box",
    "region_similarity",
}

_LABEL_WORDS = {1: "relevant", -1: "not relevant", 0: "unlabelled"}

#: What a grid with no class and no way to create one says to a click.
NO_CLASS_MESSAGE = (
    "no class chosen, so this click labels nothing: choose or create a class first "
    "(in a notebook: grid.session = collection.session(user, class_name))"
)


class ImageGrid(v.VuetifyTemplate):
    """Thumbnails of a result table, one page at a time, sent as JPEG bytes.

    ``show(df)`` takes any result DataFrame (an ``id`` column, optionally ``score``, ``uri`` and
    metadata columns). With a ``session``, a click cycles a tile's label and writes it to the
    knowledge base at once. ``on_more_like_this(fn)`` replaces the default "more like this"
    (a search by that item, shown in this grid).

    Several tiles can be selected (``selected``: shift-click a range, ctrl/cmd-click one, or
    "select page") and labelled in one action, one knowledge-base transaction. A label asked
    for with no class chosen is kept while the grid offers to create a class (``offer``, named
    after ``class_hint``, the last text searched); ``on_need_class(fn)`` says how to create
    one, and accepting the offer creates it and applies the kept label.
    """

    template_file = asset("image_grid.vue")

    tiles = t.List().tag(sync=True)
    thumbs = t.List().tag(sync=True)  # JPEG bytes, one per tile: binary buffers on the wire
    labels = t.Dict().tag(sync=True)  # str(item id) -> +1 / -1 for the tiles shown
    labelling = t.Bool(False).tag(sync=True)
    page = t.Int(1).tag(sync=True)
    page_count = t.Int(0).tag(sync=True)
    page_size = t.Int(24).tag(sync=True)
    total = t.Int(0).tag(sync=True)
    tile_size = t.Int(160).tag(sync=True)
    status_text = t.Unicode("").tag(sync=True)
    message = t.Unicode("").tag(sync=True)
    selected = t.List(t.Int()).tag(sync=True)  # ids of the selected tiles, in page order
    # an offer to create a class for a label asked with none: name, text, count, value, error
    offer = t.Dict().tag(sync=True)
    stored = t.Int(0).tag(sync=True)  # counts label writes: the front end then drops "pending"
    has_video = t.Bool(False).tag(sync=True)  # the results hold video keyframes
    group_video = t.Bool(False).tag(sync=True)  # keyframes grouped per video
    playable = t.Bool(False).tag(sync=True)  # a player listens (on_play): tiles offer "play"

    def __init__(
        self,
        col: Collection,
        *,
        session: FeedbackSession | None = None,
        page_size: int = 24,
        thumbnails: Thumbnails | None = None,
        **kwargs: Any,
    ):
        super().__init__(page_size=page_size, **kwargs)
        self.col = col
        self.thumbnails = thumbnails or Thumbnails(col)
        self._frame: pd.DataFrame | None = None
        self._shown: pd.DataFrame | None = None  # the frame in display order (grouped or not)
        self._play_handlers: list[Callable[[int], None]] = []
        self._what = ""
        self._session: FeedbackSession | None = None
        self._more_handlers: list[Callable[[int], None]] = []
        self._label_handlers: list[Callable[[list[int], int], None]] = []
        self._ready_handlers: list[Callable[[], None]] = []
        self._class_maker: Callable[[str], str | None] | None = None
        self._pending: tuple[list[int], int] | None = None  # the label kept during an offer
        #: The name offered for a new class: the last text searched ("" when none).
        self.class_hint = ""
        self.session = session
        self.observe(lambda _: self._render(), names=["page", "page_size"])
        self.observe(self._on_group, names="group_video")

    # --- public API -----------------------------------------------------------------------
    @property
    def session(self) -> FeedbackSession | None:
        """The feedback session clicks label for (None: clicks do not label)."""
        return self._session

    @session.setter
    def session(self, session: FeedbackSession | None) -> None:
        self._session = session
        self.labelling = session is not None
        self._render()

    @property
    def frame(self) -> pd.DataFrame | None:
        """The result table shown (all pages)."""
        return self._frame

    def show(self, frame: pd.DataFrame, *, text: str = "") -> None:
        """Show a result table from its first page."""
        self._frame = frame.reset_index(drop=True)
        self._shown = None
        self.has_video = bool("kind" in frame and (frame["kind"] == "keyframe").any())
        self.message = ""
        self.cancel_offer()  # it was about tiles of the previous results
        self._what = text
        if self.page != 1:
            self.page = 1  # renders
        else:
            self._render()

    def set_message(self, text: str) -> None:
        self.message = text

    def on_more_like_this(self, handler: Callable[[int], None]) -> None:
        """Call ``handler(item_id)`` on "more like this" instead of searching in this grid."""
        self._more_handlers.append(handler)

    def on_label(self, handler: Callable[[list[int], int], None]) -> None:
        """Call ``handler(ids, value)`` after each label written from this grid."""
        self._label_handlers.append(handler)

    def on_play(self, handler: Callable[[int], None]) -> None:
        """Call ``handler(item_id)`` when a keyframe tile's "play" is clicked (key p)."""
        self._play_handlers.append(handler)
        self.playable = True

    def on_ready(self, handler: Callable[[], None]) -> None:
        """Call ``handler()`` once the grid is on screen in a browser."""
        self._ready_handlers.append(handler)

    def on_need_class(self, handler: Callable[[str], str | None]) -> None:
        """Let the grid offer to create a class when a tile is labelled with none chosen:
        ``handler(name)`` creates class ``name``, makes it this grid's session, and returns
        None, or a message saying why it could not."""
        self._class_maker = handler

    def label(self, item_id: int, value: int) -> None:
        """Label one item as if clicked: write it to the knowledge base, then update its tile."""
        self.label_many([item_id], value)

    def label_many(self, ids: list[int], value: int) -> None:
        """Label items at once, in one knowledge-base transaction; the tiles then show the
        labels as stored. With no class chosen, offer to create one (see ``on_need_class``)."""
        ids = list(dict.fromkeys(int(i) for i in ids))
        value = int(value)
        if not ids:
            return
        if self._session is None:
            self._need_class(ids, value)
            return
        self._session.label(ids, value)
        self.refresh_labels()
        if set(ids) == set(self.selected):
            self.selected = []  # done with them: the next key labels the focused tile
        self.stored += 1
        for handler in self._label_handlers:
            handler(ids, value)

    def refresh_labels(self) -> None:
        """Re-read the labels of the tiles shown from the knowledge base."""
        self.labels = self._page_labels([tile["id"] for tile in self.tiles])

    # --- selection ------------------------------------------------------------------------
    def select(self, ids: list[int]) -> None:
        """Select these tiles of the page (ids not shown are left out)."""
        wanted = {int(i) for i in ids}
        self.selected = [tile["id"] for tile in self.tiles if tile["id"] in wanted]

    def select_page(self) -> None:
        """Select every tile of the page."""
        self.selected = [tile["id"] for tile in self.tiles]

    def clear_selection(self) -> None:
        self.selected = []

    def label_selection(self, value: int) -> None:
        """Label the selected tiles in one action (see ``label_many``)."""
        if not self.selected:
            self.message = "select tiles first: shift-click a range or use 'select page'"
            return
        self.label_many(list(self.selected), value)

    # --- creating a class for a label asked with none ---------------------------------------
    def _need_class(self, ids: list[int], value: int) -> None:
        if value == 0:
            self.message = "no class chosen, so there is no label to clear"
            return
        if self._class_maker is None:
            self.message = NO_CLASS_MESSAGE
            return
        self._pending = (ids, value)
        what = "this tile" if len(ids) == 1 else f"these {len(ids)} tiles"
        self.message = ""
        self.offer = {
            "name": self.class_hint,
            "text": f"No class yet: create one and label {what} {_LABEL_WORDS[value]}?",
            "count": len(ids),
            "value": value,
            "error": "",
        }

    def accept_offer(self, name: str | None) -> None:
        """Create class ``name`` as offered, then apply the label that was asked for."""
        pending, offer = self._pending, dict(self.offer)
        if pending is None or self._class_maker is None:
            self.offer = {}
            return
        name = (name or "").strip()
        error = "give the new class a name" if not name else self._class_maker(name)
        if error is None and self._session is None:
            error = f"class {name!r} was not opened: choose it in the class list"
        if error is not None:
            self._pending = pending
            self.offer = {**offer, "name": name, "error": error}
            return
        self._pending, self.offer = None, {}
        self.label_many(*pending)

    def cancel_offer(self) -> None:
        """Drop the offer and the label kept with it."""
        self._pending = None
        self.offer = {}

    # --- front-end events -------------------------------------------------------------------
    def vue_cycle(self, data: dict) -> None:
        """A click (or space) on tile ``id``: its next label, for ``ids`` when given (the
        selection) or for that tile alone."""
        item_id = int(data["id"])
        ids = data.get("ids") or [item_id]
        self.label_many(ids, NEXT_LABEL[int(self.labels.get(str(item_id), 0))])

    def vue_set_label(self, data: dict) -> None:
        """A key (r/n/u, 1/2/0) or a selection button: ``value`` for ``ids`` or ``id``."""
        ids = data.get("ids") or [data["id"]]
        self.label_many(ids, max(-1, min(1, int(data["value"]))))

    def vue_select_page(self, data: dict) -> None:
        self.select_page()

    def vue_accept_offer(self, data: dict) -> None:
        self.accept_offer(data.get("name"))

    def vue_cancel_offer(self, data: dict) -> None:
        self.cancel_offer()

    def vue_more(self, data: dict) -> None:
        item_id = int(data["id"])
        if self._more_handlers:
            for handler in self._more_handlers:
                handler(item_id)
        else:
            self.show(self.col.search(item=item_id, k=max(self.page_size * 4, 100)))

    def vue_region(self, data: dict) -> None:
        """A box drawn on a tile's picture: search by that part of it (snoop_nb.regions)."""
        item_id = int(data["id"])
        box = [float(v) for v in data["box"]]
        self.search_region(item_id, box)

    def search_region(self, item_id: int, box) -> None:
        """Show the items nearest to the ``box`` (fractions of its picture) of ``item_id``."""
        from snoop_nb.errors import SnoopError

        try:
            found = self.col.search(item=item_id, box=box, k=max(self.page_size * 4, 100))
        except SnoopError as e:
            self.message = str(e)
            return
        self.show(found)
        self.message = (
            f"search by a region of #{item_id}: "
            f"({', '.join(f'{v:.2f}' for v in box)}) of its picture"
        )

    def vue_play(self, data: dict) -> None:
        item_id = int(data["id"])
        for handler in self._play_handlers:
            handler(item_id)

    def vue_ready(self, data: dict) -> None:
        handlers, self._ready_handlers = self._ready_handlers, []
        for handler in handlers:
            handler()

    def vue_goto(self, page: int) -> None:
        self.page = max(1, min(int(page), max(self.page_count, 1)))

    # --- rendering ----------------------------------------------------------------------------
    def _page_labels(self, ids: list[int]) -> dict[str, int]:
        if self._session is None or not ids:
            return {}
        lab = self._session.labels()
        lab = lab[lab["item_id"].isin(ids)]
        return {
            str(int(i)): int(val)
            for i, val in zip(lab["item_id"], lab["value"], strict=True)
            if val
        }

    def _on_group(self, change: dict) -> None:
        self._shown = None
        if self.page != 1:
            self.page = 1  # renders
        else:
            self._render()

    def _display(self) -> pd.DataFrame | None:
        """The frame in the order shown: as given, or grouped per video (best video first)."""
        if self._shown is None and self._frame is not None:
            self._shown = (
                grouped_by_video(self._frame)
                if self.group_video and self.has_video
                else self._frame
            )
        return self._shown

    def _render(self) -> None:
        frame = self._display()
        if frame is None:
            return
        n = len(frame)
        pages = max(1, math.ceil(n / self.page_size))
        page = min(max(self.page, 1), pages)
        part = frame.iloc[(page - 1) * self.page_size : page * self.page_size]
        ids = [int(i) for i in part["id"]]
        thumbs = self.thumbnails.get(ids)
        tiles = [self._tile(row, thumbs[int(row["id"])]) for _, row in part.iterrows()]
        if self.group_video and self.has_video:
            self._add_headers(tiles, part)
        with self.hold_sync():
            self.tiles = tiles
            self.thumbs = [thumbs[i] for i in ids]
            self.labels = self._page_labels(ids)
            shown = set(ids)
            self.selected = [i for i in self.selected if i in shown]
            self.total = n
            self.page_count = pages
            self.status_text = self._status(n, page, len(ids))
        following = frame["id"].iloc[page * self.page_size : (page + 1) * self.page_size]
        if len(following):
            self.thumbnails.prefetch(int(i) for i in following)

    def _status(self, n: int, page: int, shown: int) -> str:
        if n == 0:
            return f"no results · {self._what}" if self._what else "no results"
        first = (page - 1) * self.page_size + 1
        what = f" · {self._what}" if self._what else ""
        return f"{first}-{first + shown - 1} of {n}{what}"

    def _add_headers(self, tiles: list[dict], part: pd.DataFrame) -> None:
        """A header on the first tile of each video on the page: its name, rank, best score
        and how many of its moments the results hold."""
        before = None
        for tile, (_, row) in zip(tiles, part.iterrows(), strict=True):
            key = row["_group"]
            if key == before:
                continue
            before = key
            if row.get("kind") != "keyframe":
                continue
            best = row.get("_best")
            tile["group"] = {
                "title": os.path.basename(str(row["video"])),
                "rank": int(row["_rank"]) + 1,
                "hits": int(row["_hits"]),
                "score": None if best is None or best != best else f"{float(best):.3f}",
                "continued": bool(row["_nth"] > 0),
            }

    def _tile(self, row: pd.Series, thumb: bytes) -> dict:
        import pandas as pd

        from snoop_nb.cli import timecode

        item_id = int(row["id"])
        uri = str(row.get("uri") or "")
        score = row.get("score")
        meta = [
            f"{key}: {value}"
            for key, value in row.items()
            if key not in _HIDDEN_META
            and not str(key).startswith("_")
            and isinstance(value, (str, int, float))
            and pd.notna(value)
        ]
        tile = {
            "id": item_id,
            "caption": os.path.basename(uri) or f"#{item_id}",
            "score": None if score is None or pd.isna(score) else f"{float(score):.3f}",
            "meta": [f"#{item_id}", *meta][:8],
            "error": None if thumb else (self.thumbnails.error(item_id) or "no preview"),
            "group": None,
        }
        copies = row.get("copies")  # rows folded into this one (snoop_nb.copies.collapse)
        if copies is not None and pd.notna(copies) and int(copies) > 0:
            tile["copies"] = int(copies)
        box, w, h = row.get("box"), row.get("width"), row.get("height")
        if isinstance(box, (tuple, list)) and len(box) == 4 and pd.notna(w) and pd.notna(h):
            # the window that matched (snoop_nb.regions), drawn over the picture's thumbnail
            tile["box"] = [round(float(b), 4) for b in box]
            tile["aspect"] = round(float(w) / max(float(h), 1.0), 4)
        video, t = row.get("video"), row.get("t")
        if row.get("kind") == "keyframe" and isinstance(video, str):
            t = float(t) if t is not None and pd.notna(t) else float(row.get("t_start") or 0.0)
            tile["caption"] = os.path.basename(video)
            tile["timecode"] = timecode(t)[:-4]  # HH:MM:SS on the tile, to the ms in its meta
            start, end = row.get("t_start"), row.get("t_end")
            if start is not None and pd.notna(start) and end is not None and pd.notna(end):
                tile["meta"].insert(1, f"shot {timecode(start)} - {timecode(end)}")
                tile["meta"] = tile["meta"][:8]
        return tile


def grouped_by_video(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``'s rows grouped per video, groups in the order of their first (best) row,
    rows within a group in their order; a picture is a group of its own. Adds ``_group``,
    ``_rank`` (the group's rank), ``_nth`` (the row's place in its group), ``_hits`` (the
    group's rows) and ``_best`` (its first row's score)."""
    import numpy as np
    import pandas as pd

    is_frame = (frame["kind"] == "keyframe") & frame["video"].map(lambda v: isinstance(v, str))
    key = np.where(is_frame, "v:" + frame["video"].astype(str), "i:" + frame["id"].astype(str))
    rank, _ = pd.factorize(key)
    out = frame.assign(_group=key, _rank=rank)
    out = out.iloc[np.argsort(rank, kind="stable")].reset_index(drop=True)
    by = out.groupby("_group", sort=False)
    out["_nth"] = by.cumcount()
    out["_hits"] = by["id"].transform("size")
    score = out["score"] if "score" in out else pd.Series(np.nan, index=out.index)
    out["_best"] = score.groupby(out["_group"], sort=False).transform("first")
    return out
