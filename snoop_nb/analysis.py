"""Corpus analysis: where, when, on which channels and how often a class (or a query) occurs.

The input is a score per item: a class's probabilities (``session.probabilities()``), a
search's hits (their ``score``), or any Series indexed by item id. Keyframes are judged one by
one, then aggregated:

- a **shot** scores its best keyframe's score, and is an occurrence when that score reaches
  the threshold (a shot is where the class appears, one keyframe is enough);
- a **video** scores its best shot's score; it counts its positive ``shots``, the ``seconds``
  they cover (the sum of their durations) and the ``share`` of the video's duration that is.

Occurrences (positive shots) are then counted per video, per day/week/month/year of the
video's ``date`` field (the broadcast date of a CSV sidecar) and per ``channel``. Shots whose
video has no readable date are not dropped: they are counted in ``frame.attrs["undated"]`` and
in a warning. Each plot function takes such a frame and returns a matplotlib Figure.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from snoop_nb.collection import Collection

PERIODS = {"day": "D", "week": "W-SUN", "month": "M", "year": "Y"}  # weeks start on Monday
BY = ("video", "channel", *PERIODS)


def scores_of(scores: Any) -> pd.Series:
    """Scores as a float Series indexed by item id, from a Series (index: id), a DataFrame
    with ``id`` and ``score`` or ``probability`` (search results, class results), or a dict."""
    import pandas as pd

    if isinstance(scores, pd.Series):
        s = scores
    elif isinstance(scores, pd.DataFrame):
        if "id" not in scores:
            raise UsageError("the scores frame needs an 'id' column")
        col = next((c for c in ("probability", "score") if c in scores), None)
        if col is None:
            raise UsageError("the scores frame needs a 'score' or 'probability' column")
        s = pd.Series(scores[col].to_numpy(), index=scores["id"].to_numpy())
    elif isinstance(scores, dict):
        s = pd.Series(scores)
    else:
        raise UsageError("scores: give a Series indexed by item id, a results frame or a dict")
    s = s.astype(float)
    s.index = pd.Index(s.index.astype(np.int64), name="id")
    return s[~s.index.duplicated(keep="first")]


def keyframes(col: Collection, scores: Any) -> pd.DataFrame:
    """The collection's keyframes with their ``score`` (missing scores count as -inf: a search's
    hits score only what they found), sorted by video and time."""
    s = scores_of(scores)
    items = col.items()
    frames = items[items["kind"] == "keyframe"].copy()
    if frames.empty:
        raise UsageError(f"{col.root} holds no video keyframes")
    frames["score"] = frames["id"].map(s).astype(float).fillna(-np.inf)
    sort = [c for c in ("video", "t") if c in frames]
    return frames.sort_values(sort, kind="stable").reset_index(drop=True)


def aggregate(
    col: Collection, scores: Any, *, level: str = "shot", threshold: float = 0.5
) -> pd.DataFrame:
    """A class (or query) per ``level``: ``"keyframe"``, ``"shot"`` or ``"video"`` (rules in the
    module's docstring). Shots: video, shot, t_start, t_end, seconds, score, best_id, positive
    and the video's fields; videos: video, score, shots, positive_shots, seconds, duration,
    share and the video's fields. Best first."""
    if level not in ("keyframe", "shot", "video"):
        raise UsageError("level must be 'keyframe', 'shot' or 'video'")
    frames = keyframes(col, scores)
    frames["positive"] = frames["score"] >= threshold
    if level == "keyframe":
        return frames.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    fields = _video_fields(frames)
    best = frames.loc[frames.groupby(["video", "shot"], sort=False)["score"].idxmax()]
    shots = best[["video", "shot", "t_start", "t_end", "score", "id", *fields]].rename(
        columns={"id": "best_id"}
    )
    shots["seconds"] = (shots["t_end"] - shots["t_start"]).clip(lower=0)
    shots["positive"] = shots["score"] >= threshold
    shots = shots.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    if level == "shot":
        return shots
    import pandas as pd

    durations = _durations(col)
    rows = []
    for video, g in shots.groupby("video", sort=False):
        pos = g[g["positive"]]
        duration = durations.get(video, float(g["t_end"].max()))
        rows.append(
            {
                "video": video,
                "score": float(g["score"].max()),
                "shots": len(g),
                "positive_shots": len(pos),
                "seconds": float(pos["seconds"].sum()),
                "duration": duration,
                "share": float(pos["seconds"].sum()) / duration if duration else 0.0,
                **{f: g[f].iloc[0] for f in fields},
            }
        )
    out = pd.DataFrame(rows)
    return out.sort_values(["score"], ascending=False, kind="stable").reset_index(drop=True)


def _video_fields(frames: pd.DataFrame) -> list[str]:
    return [c for c in ("channel", "date", "title") if c in frames]


def _durations(col: Collection) -> dict[str, float]:
    videos = col.videos()
    if videos.empty or "duration" not in videos:
        return {}
    return dict(zip(videos["uri"], videos["duration"].astype(float), strict=True))


def occurrences(
    col: Collection, scores: Any, *, by: str = "video", threshold: float = 0.5
) -> pd.DataFrame:
    """Occurrences of a class (positive shots) counted ``by`` video, channel, day, week, month
    or year: columns ``by``, ``occurrences``, ``seconds``, ``videos`` (how many distinct
    videos); every group with videos is listed, zeros included. Dates come from the videos'
    ``date`` field; undated ones are counted in ``attrs["undated"]`` (and warned about)."""
    import pandas as pd

    if by not in BY:
        raise UsageError(f"by must be one of {', '.join(BY)}")
    shots = aggregate(col, scores, level="shot", threshold=threshold)
    if by == "video":
        key = shots["video"]
    elif by == "channel":
        if "channel" not in shots:
            raise UsageError("the videos have no 'channel' field (give a CSV sidecar)")
        key = shots["channel"].fillna("(no channel)")
    else:
        if "date" not in shots:
            raise UsageError("the videos have no 'date' field (give a CSV sidecar)")
        when = pd.to_datetime(shots["date"], errors="coerce", format="mixed")
        undated = when.isna()
        shots = shots[~undated]
        key = when[~undated].dt.to_period(PERIODS[by]).dt.start_time
        n_undated = int(undated.sum())
    pos = shots["positive"]
    table = (
        pd.DataFrame(
            {
                by: key,
                "hit": pos,
                "seconds": shots["seconds"].where(pos, 0.0),
                "video": shots["video"],
            }
        )
        .groupby(by, sort=True)
        .agg(
            occurrences=("hit", "sum"),
            seconds=("seconds", "sum"),
            videos=("video", lambda v: v[pos.loc[v.index]].nunique()),
        )
        .reset_index()
    )
    table["occurrences"] = table["occurrences"].astype(int)
    if by in PERIODS:
        table.attrs["undated"] = n_undated
        if n_undated:
            warnings.warn(
                f"{n_undated} shots belong to videos without a readable date; they are not in "
                "the counts per period",
                stacklevel=2,
            )
    if by == "video":
        table = table.sort_values(["occurrences", "seconds"], ascending=False, kind="stable")
    return table.reset_index(drop=True)


def channel_by_month(col: Collection, scores: Any, *, threshold: float = 0.5) -> pd.DataFrame:
    """Occurrences (positive shots) as a table: one row per channel, one column per month."""
    import pandas as pd

    shots = aggregate(col, scores, level="shot", threshold=threshold)
    for field in ("channel", "date"):
        if field not in shots:
            raise UsageError(f"the videos have no {field!r} field (give a CSV sidecar)")
    when = pd.to_datetime(shots["date"], errors="coerce", format="mixed")
    shots = shots.assign(
        month=when.dt.to_period("M"), channel=shots["channel"].fillna("(no channel)")
    )
    table = shots[shots["month"].notna()].pivot_table(
        index="channel", columns="month", values="positive", aggfunc="sum", fill_value=0
    )
    table.attrs["undated"] = int(when.isna().sum())
    return table.astype(int)


def video_timeline(col: Collection, video: Any, scores: Any) -> pd.DataFrame:
    """One video's keyframes along time: ``t``, ``score``, ``shot``, ``t_start``, ``t_end``,
    ``id`` (what a timeline plot draws)."""
    from snoop_nb.store.catalog import readable

    uri = readable(col.video_path(video))
    frames = keyframes(col, scores)
    mine = frames[frames["video"] == uri]
    return mine[["id", "t", "score", "shot", "t_start", "t_end"]].reset_index(drop=True)


# --- plots -----------------------------------------------------------------------------------
def _figure(width: float = 7.0, height: float = 3.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_timeline(table: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Occurrences per period (a frame from :func:`occurrences` by day/week/month/year)."""
    by = next((c for c in PERIODS if c in table), None)
    if by is None:
        raise UsageError("plot_timeline needs occurrences by day, week, month or year")
    fig = _figure()
    ax = fig.subplots()
    ax.bar(table[by], table["occurrences"], width=_bar_width(by), color="#3b6ea5")
    ax.set_ylabel("occurrences (shots)")
    ax.set_title(title or f"Occurrences per {by}")
    fig.autofmt_xdate()
    return fig


def _bar_width(by: str) -> float:
    return {"day": 0.8, "week": 5, "month": 25, "year": 300}[by]


def plot_channels(table: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Bars of occurrences per channel (a frame from :func:`occurrences` by channel)."""
    if "channel" not in table:
        raise UsageError("plot_channels needs occurrences by channel")
    fig = _figure(6.0, 0.5 + 0.4 * max(1, len(table)))
    ax = fig.subplots()
    ax.barh(table["channel"].astype(str), table["occurrences"], color="#a5553b")
    ax.invert_yaxis()
    ax.set_xlabel("occurrences (shots)")
    ax.set_title(title or "Occurrences per channel")
    return fig


def plot_heatmap(table: pd.DataFrame, *, title: str | None = None) -> Figure:
    """A channel x month heat map (a frame from :func:`channel_by_month`)."""
    fig = _figure(max(4.0, 0.6 * table.shape[1] + 2), 0.8 + 0.45 * max(1, table.shape[0]))
    ax = fig.subplots()
    im = ax.imshow(table.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=45, ha="right")
    ax.set_yticks(range(table.shape[0]), [str(r) for r in table.index])
    for (i, j), v in np.ndenumerate(table.to_numpy()):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            color="white" if v < table.to_numpy().max() / 2 else "black",
        )
    fig.colorbar(im, ax=ax, label="occurrences")
    ax.set_title(title or "Occurrences per channel and month")
    return fig


def plot_video_timeline(
    frame: pd.DataFrame, *, threshold: float | None = 0.5, title: str | None = None
) -> Figure:
    """Scores along one video (a frame from :func:`video_timeline`): each shot a band, its
    keyframes dots, the threshold a line."""
    fig = _figure(7.0, 2.4)
    ax = fig.subplots()
    finite = frame["score"].replace(-np.inf, np.nan)
    for k, shot in enumerate(frame.drop_duplicates("shot").itertuples()):
        ax.axvspan(shot.t_start, shot.t_end, color="#ececec" if k % 2 else "#dcdcdc", lw=0)
    ax.plot(frame["t"], finite, "o-", color="#3b6ea5", ms=4)
    if threshold is not None:
        ax.axhline(threshold, color="#a5553b", ls="--", lw=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    ax.set_title(title or "Scores along the video")
    return fig


__all__ = [
    "BY",
    "aggregate",
    "channel_by_month",
    "keyframes",
    "occurrences",
    "plot_channels",
    "plot_heatmap",
    "plot_timeline",
    "plot_video_timeline",
    "scores_of",
    "video_timeline",
]
