"""VideoPanel: search, watch and label the moments of a collection's videos.

The App's "Videos" tab: a chooser of the collection's videos, the player (a moment's shot,
previous/next shot, the video's timeline coloured by the class or the last search), a search
bar, the grid of keyframes grouped per video, and the class trainer, as on the pictures' tab.

>>> VideoPanel(collection, "alice")        # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import ipyvuetify as v
import numpy as np

from snoop_nb.errors import SnoopError
from snoop_nb.ui.grid import ImageGrid
from snoop_nb.ui.player import VideoPlayer
from snoop_nb.ui.search import SearchPanel
from snoop_nb.ui.trainer import ClassTrainer

if TYPE_CHECKING:
    from snoop_nb.collection import Collection


class VideoPanel(v.Sheet):
    """The videos of ``col`` for ``user``: ``player``, ``search``, ``grid`` and ``trainer``."""

    def __init__(
        self, col: Collection, user: str, *, k: int = 100, page_size: int = 24, **kwargs: Any
    ):
        self.col = col
        self.user = user
        self.grid = ImageGrid(col, page_size=page_size, group_video=True)
        self.player = VideoPlayer(col)
        self.search = SearchPanel(col, self.grid, k=k)
        self.trainer = ClassTrainer(col, self.grid, user, k=k)
        self.search.on_search(self.trainer.start_from)
        self.search.on_search(lambda _query: self._colour())
        self.grid.on_play(self.play)
        self.trainer.on_change(self._colour)
        self.trainer.classes.observe(lambda _: self._colour(), names="v_model")
        videos = col.videos()
        self.chooser = v.Select(
            v_model=None,
            label=f"Videos ({len(videos)})",
            items=[
                {"title": _video_title(row), "value": int(row["id"])}
                for row in videos.to_dict("records")
            ],
            density="compact",
            variant="outlined",
            hide_details=True,
            class_="snoop-video-select",
        )
        self._choosing = False  # the chooser follows a played moment: not a choice to act on
        self.chooser.observe(self._on_choose, names="v_model")
        summary = v.Html(
            tag="div",
            class_="snoop-video-summary caption mb-2",
            children=[_summary(videos)],
        )
        super().__init__(
            class_="snoop-videos",
            children=[
                v.Row(
                    class_="mt-2",
                    children=[
                        v.Col(cols=12, md=9, children=[self.player, self.search, self.grid]),
                        v.Col(cols=12, md=3, children=[summary, self.chooser, self.trainer]),
                    ],
                )
            ],
            **kwargs,
        )

    def show_start(self) -> None:
        """Show the collection's keyframes, grouped per video, in time order."""
        items = self.col.items()
        if "kind" in items:
            items = items[items["kind"] == "keyframe"]
        order = [c for c in ("video", "t") if c in items]
        items = items.sort_values(order, kind="stable") if order else items
        first = items.head(self.search_k * 5)
        self.grid.show(first.assign(score=None), text="the videos")

    @property
    def search_k(self) -> int:
        return int(self.search.k.v_model or 100)

    def play(self, item_id: int) -> None:
        """Open keyframe ``item_id``'s video at its moment."""
        self.player.open_moment(item_id)
        video_id = self.player.video_id
        if video_id is not None and self.chooser.v_model != video_id:
            self._choosing = True
            try:
                self.chooser.v_model = video_id
            finally:
                self._choosing = False
        self._colour()

    def _on_choose(self, change: dict) -> None:
        if self._choosing or change["new"] is None:
            return
        self.player.open_video(int(change["new"]), 0.0)
        self._colour()

    def _colour(self) -> None:
        """The timeline's colours: the class's probabilities once it is trained, else the
        grid's last search scores."""
        session = self.trainer.session
        try:
            if session is not None and session.model() is not None:
                self.player.set_scores(
                    _class_scores(self.col, session, self.player), what=f"class {session.ref}"
                )
                return
        except SnoopError:
            pass  # an untrained or foreign model: fall back on the search's scores
        frame = self.grid.frame
        if frame is not None and "score" in frame and frame["score"].notna().any():
            self.player.set_scores(
                frame[["id", "score"]].dropna(), what="the last search", relative=True
            )
        else:
            self.player.set_scores(None)


def _class_scores(col: Collection, session, player: VideoPlayer):
    """The class's probability for the open video's keyframes only (not the whole corpus)."""
    import pandas as pd

    from snoop_nb.learn.classifier import probability
    from snoop_nb.learn.rank import rescore

    model = session.model()
    ids = [int(i) for shot in player.shot_list for i in shot["ids"]]
    if not ids or model is None:
        return pd.Series(dtype=float)
    scores = rescore(col, np.asarray(ids, np.int64), model.weights, model.bias)
    return pd.Series(probability(scores), index=ids)


def _video_title(row: dict[str, Any]) -> str:
    name = os.path.basename(str(row["uri"]))
    extra = [str(row[k]) for k in ("channel", "date") if isinstance(row.get(k), str) and row[k]]
    return f"{name} ({', '.join(extra)})" if extra else name


def _summary(videos) -> str:
    if videos.empty:
        return "no videos in this collection"
    hours = float(videos["duration"].fillna(0).sum()) / 3600
    shots = int(videos["shots"].fillna(0).sum()) if "shots" in videos else 0
    frames = int(videos["keyframes"].fillna(0).sum()) if "keyframes" in videos else 0
    return f"{len(videos)} videos, {hours:.2f} h, {shots} shots, {frames} keyframes"
