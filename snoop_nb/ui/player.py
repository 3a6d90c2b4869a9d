"""VideoPlayer: a video opened at a moment, its shot played from bytes, and its timeline.

The browser never gets a file or an address: the shot being watched is cut here into a short
WebM excerpt (:func:`snoop_nb.media.excerpt.excerpt`, at most 30 s) and sent through the
widget channel, like thumbnails. "Previous shot" and "next shot" cut the neighbouring ones;
recent excerpts are cached. Under the picture, the video's timeline: one band per shot, as
wide as it lasts, coloured by how well it scores (a class's probability, or a search's
scores; a shot scores its best keyframe), the shot on screen outlined; a click plays a shot.

>>> player = VideoPlayer(collection)          # doctest: +SKIP
>>> player.open_moment(item_id)              # a keyframe: its video, at its moment
>>> player.set_scores(session.probabilities())
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import ipyvuetify as v
import numpy as np
import traitlets as t

from snoop_nb.errors import MediaError, SnoopError, UsageError
from snoop_nb.ui.assets import asset

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.collection import Collection

#: The longest excerpt sent at once (seconds): a longer shot plays its part around the moment.
EXCERPT_SECONDS = 20.0
#: Longest side of the excerpts' pictures (pixels).
EXCERPT_SIDE = 480
#: Excerpts kept in memory (each ~0.1-1 MB).
CACHE_EXCERPTS = 12


class VideoPlayer(v.VuetifyTemplate):
    """Plays one shot of a collection's video at a time, from excerpt bytes.

    ``open_moment(item_id)`` opens a keyframe's video at its moment; ``open_video(video, t)`` a video
    (id, uri or path) at ``t`` seconds. ``set_scores(scores)`` colours the timeline (a Series
    indexed by item id, a results frame, or a dict; ``None`` clears it).
    """

    template_file = asset("video_player.vue")

    clip = t.Bytes(b"").tag(sync=True)  # the excerpt on screen: WebM bytes, a binary buffer
    clip_start = t.Float(0.0).tag(sync=True)  # where the excerpt starts in the video (s)
    offset = t.Float(0.0).tag(sync=True)  # where to start playing, in the excerpt (s)
    title = t.Unicode("").tag(sync=True)
    details = t.Unicode("").tag(sync=True)  # the video's fields: channel, date, title
    shots = t.List().tag(sync=True)  # [{index, start, end, score, level, label}]: the timeline
    current = t.Int(-1).tag(sync=True)  # the shot on screen
    scored = t.Unicode("").tag(sync=True)  # what the timeline's colours are
    message = t.Unicode("").tag(sync=True)
    loading = t.Bool(False).tag(sync=True)
    played = t.Int(0).tag(sync=True)  # counts excerpts sent (tests and the page wait on it)

    def __init__(self, col: Collection, **kwargs: Any):
        super().__init__(**kwargs)
        self.col = col
        self.video: str | None = None
        #: The open video's id in the collection's videos table (None when none is open).
        self.video_id: int | None = None
        self._path = None
        self._rotation = 0
        self._audio = True
        self._shots: list[dict[str, Any]] = []
        self._scores: pd.Series | None = None
        self._span = (0.0, 1.0)  # the scores taken as grey and as green
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    # --- public API -----------------------------------------------------------------------
    def open_moment(self, item_id: int) -> None:
        """Open keyframe ``item_id``'s video at its moment (a picture: says it is no video)."""
        try:
            item = self.col.item(int(item_id))
        except SnoopError as e:
            self.message = str(e)
            return
        if item.get("kind") != "keyframe" or not isinstance(item.get("video"), str):
            self.message = f"item #{item_id} is a picture, not a moment of a video"
            return
        t0 = item.get("t")
        if t0 is None or t0 != t0:
            t0 = item.get("t_start") or 0.0
        self.open_video(item["video"], float(t0))

    def open_video(self, video: int | str | os.PathLike, t: float = 0.0) -> None:
        """Open ``video`` (its id, uri or path) at ``t`` seconds and play the shot there."""
        try:
            shots = self.col.shots(video)
            path = self.col.video_path(video)
        except SnoopError as e:
            self.message = str(e)
            return
        if not shots:
            self.message = f"{video} has no shots in this collection"
            return
        row = self._video_row(path)
        self.video = str(row.get("uri") or path)
        self.video_id = int(row["id"]) if "id" in row else None
        self._path = path
        self._rotation = int(row.get("rotation") or 0)
        self._audio = bool(row.get("audio", True))
        self._shots = shots
        fields = [
            f"{key}: {row[key]}"
            for key in ("title", "channel", "date")
            if key in row and isinstance(row[key], str) and row[key]
        ]
        with self.hold_sync():
            self.title = os.path.basename(self.video)
            self.details = " · ".join(fields)
            self.shots = self._timeline()
        self.play_shot(_shot_at(shots, t), at=t)

    def play_shot(self, index: int, *, at: float | None = None) -> None:
        """Play shot ``index`` of the open video (from ``at`` seconds when it is in it)."""
        if not self._shots:
            self.message = "no video open: play a moment from the results"
            return
        index = max(0, min(int(index), len(self._shots) - 1))
        shot = self._shots[index]
        start, end = float(shot["start"]), float(shot["end"])
        at = start if at is None else min(max(float(at), start), end)
        if end - start > EXCERPT_SECONDS:  # a long shot: the part around the moment
            start = max(start, min(at - EXCERPT_SECONDS / 4, end - EXCERPT_SECONDS))
            end = start + EXCERPT_SECONDS
        self.loading = True
        try:
            data = self._excerpt(start, end)
        except (MediaError, UsageError) as e:
            with self.hold_sync():
                self.current = index
                self.clip = b""
                self.message = f"cannot play {self.title}: {e}"
            return
        finally:
            self.loading = False
        with self.hold_sync():
            self.current = index
            self.clip_start = start
            self.offset = max(0.0, at - start)
            self.clip = data
            self.message = ""
            self.played += 1

    @property
    def shot_list(self) -> list[dict[str, Any]]:
        """The open video's shots (see :meth:`Collection.shots`), [] when none is open."""
        return list(self._shots)

    def next_shot(self) -> None:
        self.play_shot(self.current + 1) if self.current + 1 < len(self._shots) else None

    def previous_shot(self) -> None:
        self.play_shot(self.current - 1) if self.current > 0 else None

    def set_scores(self, scores: Any, *, what: str = "", relative: bool = False) -> None:
        """Colour the timeline by ``scores`` (see :func:`snoop_nb.analysis.scores_of`):
        probabilities as they are, or, ``relative``, from the lowest score given (grey) to the
        highest (green), as for a search's similarities."""
        from snoop_nb.analysis import scores_of

        self._scores = None if scores is None else scores_of(scores)
        self._span = (0.0, 1.0)
        if relative and self._scores is not None and len(self._scores):
            finite = self._scores[np.isfinite(self._scores)]
            if len(finite):
                self._span = (float(finite.min()), float(finite.max()))
        self.scored = what if scores is not None else ""
        if self._shots:
            self.shots = self._timeline()

    # --- front-end events -------------------------------------------------------------------
    def vue_next(self, data: Any) -> None:
        self.next_shot()

    def vue_previous(self, data: Any) -> None:
        self.previous_shot()

    def vue_goto_shot(self, data: dict) -> None:
        self.play_shot(int(data["index"]))

    # --- internals ----------------------------------------------------------------------------
    def _video_row(self, path) -> dict[str, Any]:
        from snoop_nb.store.catalog import readable

        videos = self.col.videos()
        mine = videos[videos["uri"] == readable(path)]
        return {} if mine.empty else mine.iloc[0].to_dict()

    def _timeline(self) -> list[dict[str, Any]]:
        from snoop_nb.cli import timecode

        out = []
        for shot in self._shots:
            score = level = None
            if self._scores is not None:
                got = [self._scores.get(i) for i in shot["ids"]]
                got = [float(s) for s in got if s is not None and math.isfinite(s)]
                score = max(got) if got else None
            if score is not None:
                lo, hi = self._span
                level = min(1.0, max(0.0, (score - lo) / (hi - lo))) if hi > lo else 1.0
            out.append(
                {
                    "index": int(shot["index"]),
                    "start": float(shot["start"]),
                    "end": float(shot["end"]),
                    "score": score,
                    "level": level,
                    "label": f"shot {shot['index'] + 1}: {timecode(shot['start'])[:-4]}"
                    f" - {timecode(shot['end'])[:-4]}"
                    + ("" if score is None else f" · score {score:.3f}"),
                }
            )
        return out

    def _excerpt(self, start: float, end: float) -> bytes:
        from snoop_nb.media.excerpt import excerpt

        key = (str(self._path), round(start, 3), round(end, 3))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        data = excerpt(
            self._path,
            start,
            end,
            max_side=EXCERPT_SIDE,
            rotation=self._rotation,
            audio=self._audio,
            max_seconds=EXCERPT_SECONDS,
        )
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > CACHE_EXCERPTS:
                self._cache.popitem(last=False)
        return data


def _shot_at(shots: list[dict[str, Any]], t: float) -> int:
    """The index of the shot shown at ``t`` seconds (the last one starting at or before it)."""
    index = 0
    for k, shot in enumerate(shots):
        if float(shot["start"]) <= t:
            index = k
    return index
