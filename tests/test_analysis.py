"""Corpus analysis: a class per keyframe aggregated per shot and video, counted over time and
channel, and plotted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mediafiles import photo

from snoop_nb import UsageError, analysis, open_collection
from snoop_nb.media.synthvideo import make_video

# (video, shot, t_start, t_end, keyframe t, score, channel, date)
MOMENTS = [
    ("/v/a.mp4", 0, 0.0, 4.0, 1.0, 0.9, "TF1", "2024-01-03T20:00"),
    ("/v/a.mp4", 0, 0.0, 4.0, 3.0, 0.2, "TF1", "2024-01-03T20:00"),
    ("/v/a.mp4", 1, 4.0, 10.0, 6.0, 0.4, "TF1", "2024-01-03T20:00"),
    ("/v/a.mp4", 2, 10.0, 12.0, 11.0, 0.7, "TF1", "2024-01-03T20:00"),
    ("/v/b.mp4", 0, 0.0, 5.0, 2.5, 0.8, "France 2", "2024-02-14T13:00"),
    ("/v/b.mp4", 1, 5.0, 6.0, 5.5, 0.1, "France 2", "2024-02-14T13:00"),
    ("/v/c.mp4", 0, 0.0, 3.0, 1.5, 0.95, "TF1", "2025-02-20T08:00"),
    ("/v/d.mp4", 0, 0.0, 2.0, 1.0, 0.99, "France 2", "not a date"),
]


@pytest.fixture
def col(tmp_path):
    rng = np.random.default_rng(0)
    with open_collection(tmp_path / "col", create=True, device="cpu") as c:
        dim = c.dim
        meta = [
            {
                "kind": "keyframe",
                "video": v,
                "shot": s,
                "t_start": a,
                "t_end": b,
                "t": t,
                "channel": ch,
                "date": d,
            }
            for v, s, a, b, t, _, ch, d in MOMENTS
        ]
        uris = [f"{v}#t={t:.3f}" for v, _, _, _, t, *_ in MOMENTS]
        ids = c.add_vectors(uris, rng.normal(size=(len(uris), dim)), meta)
        c.test_scores = pd.Series([m[5] for m in MOMENTS], index=ids)
        yield c


def test_shots_score_their_best_keyframe_and_videos_their_best_shot(col):
    shots = analysis.aggregate(col, col.test_scores, level="shot", threshold=0.5)
    assert len(shots) == 7
    a0 = shots[(shots.video == "/v/a.mp4") & (shots.shot == 0)].iloc[0]
    assert a0.score == pytest.approx(0.9) and a0.positive and a0.seconds == 4.0
    videos = analysis.aggregate(col, col.test_scores, level="video", threshold=0.5).set_index(
        "video"
    )
    a = videos.loc["/v/a.mp4"]
    assert a.score == pytest.approx(0.9)
    assert (a.shots, a.positive_shots) == (3, 2)
    assert a.seconds == pytest.approx(4.0 + 2.0) and a.share == pytest.approx(6.0 / 12.0)
    assert videos.loc["/v/b.mp4"].positive_shots == 1
    assert next(iter(videos.index)) == "/v/d.mp4"  # best first


def test_occurrences_per_video_channel_and_period(col):
    per_video = analysis.occurrences(col, col.test_scores, by="video").set_index("video")
    assert per_video.loc["/v/a.mp4", "occurrences"] == 2
    assert per_video.loc["/v/b.mp4", "occurrences"] == 1
    per_channel = analysis.occurrences(col, col.test_scores, by="channel").set_index("channel")
    assert per_channel.loc["TF1", "occurrences"] == 3 and per_channel.loc["TF1", "videos"] == 2
    assert per_channel.loc["France 2", "occurrences"] == 2
    with pytest.warns(UserWarning, match="without a readable date"):
        months = analysis.occurrences(col, col.test_scores, by="month")
    assert months.attrs["undated"] == 1
    got = dict(zip(months["month"].dt.strftime("%Y-%m"), months["occurrences"], strict=True))
    assert got == {"2024-01": 2, "2024-02": 1, "2025-02": 1}
    with pytest.warns(UserWarning):
        years = analysis.occurrences(col, col.test_scores, by="year")
    assert dict(zip(years["year"].dt.year, years["occurrences"], strict=True)) == {2024: 3, 2025: 1}
    with pytest.warns(UserWarning):
        weeks = analysis.occurrences(col, col.test_scores, by="week")
    assert weeks["week"].dt.day_of_week.eq(0).all() and weeks["occurrences"].sum() == 4
    with pytest.raises(UsageError):
        analysis.occurrences(col, col.test_scores, by="colour")


def test_channel_by_month_and_plots(col):
    table = analysis.channel_by_month(col, col.test_scores)
    assert table.loc["TF1", pd.Period("2024-01", "M")] == 2
    assert table.loc["France 2", pd.Period("2024-02", "M")] == 1
    assert table.attrs["undated"] == 1
    fig = analysis.plot_heatmap(table)
    assert fig.axes and fig.axes[0].get_title()
    per_channel = analysis.occurrences(col, col.test_scores, by="channel")
    assert len(analysis.plot_channels(per_channel).axes[0].patches) == len(per_channel)
    with pytest.warns(UserWarning):
        months = analysis.occurrences(col, col.test_scores, by="month")
    assert len(analysis.plot_timeline(months).axes[0].patches) == len(months)


def test_search_hits_are_scores_too(col):
    hits = col.search(vector=col.vectors_of([int(col.test_scores.index[0])])[0].astype(float), k=3)
    shots = analysis.aggregate(col, hits, level="shot", threshold=-1.0)
    assert shots["positive"].sum() >= 1  # what was not found scores -inf: never positive
    assert (shots.loc[~shots["positive"], "score"] == -np.inf).all()


def test_a_timeline_of_a_real_video(tmp_path, tiny_embedder):
    make_video(
        tmp_path / "m" / "a.mp4",
        [photo("chelsea", (160, 120)), photo("rocket", (160, 120))],
        seconds=6,
        size=(160, 120),
        seed=4,
        flashes=0,
        gradual=0,
        pictures_per_shot=1,
    )
    with open_collection(tmp_path / "c", create=True, embedder=tiny_embedder) as c:
        c.add([tmp_path / "m"], detector="adaptive", keyframe_every=1.0)
        items = c.items()
        scores = pd.Series(np.linspace(0, 1, len(items)), index=items["id"])
        line = analysis.video_timeline(c, str(tmp_path / "m" / "a.mp4"), scores)
        assert len(line) == len(items) and line["t"].is_monotonic_increasing
        assert ((line["t_start"] <= line["t"]) & (line["t"] < line["t_end"])).all()
        fig = analysis.plot_video_timeline(line)
        assert len(fig.axes[0].lines) >= 1
