"""Search down to the moment and per video, on a collection of made videos and a picture."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from mediafiles import photo

from snoop_nb import UsageError, open_collection
from snoop_nb.media.synthvideo import make_video
from snoop_nb.search import group_by_video, results_frame

CAT, COFFEE, ROCKET, ASTRONAUT = "chelsea", "coffee", "rocket", "astronaut"


@pytest.fixture(scope="module")
def videos(tmp_path_factory, default_embedder):
    """Three videos with known pictures, a photograph beside them, a sidecar; indexed."""
    root = tmp_path_factory.mktemp("vsearch")
    media = root / "media"
    make_video(
        media / "cats.mp4",
        [photo(CAT, (320, 240))] * 2 + [photo(COFFEE, (320, 240))],
        seconds=9,
        size=(320, 240),
        seed=1,
        pictures_per_shot=1,
        flashes=0,
        gradual=0,
    )
    make_video(
        media / "space.webm",
        [photo(ROCKET, (320, 240)), photo(ASTRONAUT, (320, 240))],
        seconds=9,
        size=(320, 240),
        codec="vp9",
        seed=2,
        pictures_per_shot=1,
        flashes=0,
        gradual=0,
    )
    make_video(
        media / "coffee.mkv",
        [photo(COFFEE, (320, 240))],
        seconds=6,
        size=(320, 240),
        seed=3,
        pictures_per_shot=1,
        flashes=0,
        gradual=0,
    )
    photo(ROCKET, (256, 192)).save(media / "rocket.jpg")
    sidecar = root / "videos.csv"
    with open(sidecar, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "channel", "date", "title"])
        w.writerow(["media/cats.mp4", "Canal 1", "2024-03-01T20:00", "Cats"])
        w.writerow(["media/space.webm", "Canal 2", "2024-04-02T21:00", "Space"])
        w.writerow(["media/coffee.mkv", "Canal 1", "2025-01-05T08:00", "Coffee"])
    col = open_collection(root / "col", create=True, embedder=default_embedder)
    report = col.add([media], metadata=sidecar, detector="adaptive", keyframe_every=2.0)
    assert report.videos == 3 and not report.errors
    yield col, media
    col.close()


def test_keyframe_results_carry_video_times_and_sidecar_fields(videos):
    col, _media = videos
    hits = col.search(image=photo(ROCKET), k=5)
    frames = hits[hits["kind"] == "keyframe"]
    assert len(frames)
    row = frames.iloc[0]
    assert row["video"].endswith("space.webm")
    assert row["t_start"] <= row["t"] < row["t_end"]
    assert row["channel"] == "Canal 2" and row["title"] == "Space"


def test_grouped_search_gives_one_row_per_video_best_first(videos):
    col, _media = videos
    groups = col.search(image=photo(CAT), k=3, group="video")
    assert list(groups["rank"]) == list(range(1, len(groups) + 1))
    assert groups["video"].is_unique
    assert groups.iloc[0]["video"].endswith("cats.mp4")
    assert list(groups["score"]) == sorted(groups["score"], reverse=True)
    for g in groups.itertuples():
        scores = [m["score"] for m in g.moments]
        assert scores == sorted(scores, reverse=True) and g.hits == len(g.moments)
        assert g.score == pytest.approx(scores[0])
        if g.kind == "video":
            assert all(m["t_start"] <= m["t"] < m["t_end"] for m in g.moments)
    # the picture beside the videos is a group of its own
    everything = col.search(image=photo(ROCKET), k=10, group="video")
    kinds = dict(
        zip(
            everything["video"].map(lambda v: v.rsplit("/", 1)[-1]), everything["kind"], strict=True
        )
    )
    assert kinds["rocket.jpg"] == "image" and kinds["space.webm"] == "video"


def test_grouping_keeps_every_moment_of_a_video_in_its_group():
    import pandas as pd

    hits = pd.DataFrame(
        {
            "rank": [1, 2, 3, 4],
            "id": [7, 3, 9, 4],
            "uri": ["a.mp4#t=1.000", "b.jpg", "a.mp4#t=5.000", "c.mp4#t=0.500"],
            "score": [0.9, 0.8, 0.7, 0.6],
            "kind": ["keyframe", "image", "keyframe", "keyframe"],
            "video": ["a.mp4", None, "a.mp4", "c.mp4"],
            "t_start": [0.0, np.nan, 4.0, 0.0],
            "t_end": [4.0, np.nan, 8.0, 1.0],
            "t": [1.0, np.nan, 5.0, 0.5],
            "channel": ["X", None, "X", "Y"],
        }
    )
    g = group_by_video(hits)
    assert list(g["video"]) == ["a.mp4", "b.jpg", "c.mp4"]
    assert [m["id"] for m in g.iloc[0]["moments"]] == [7, 9]
    assert g.iloc[1]["moments"] == [
        {"id": 3, "t_start": None, "t_end": None, "t": None, "score": 0.8}
    ]
    assert g["channel"][0] == "X" and g["channel"][2] == "Y" and g["channel"].isna()[1]
    assert len(group_by_video(hits, k=2)) == 2


def test_query_by_clip_and_by_keyframe_find_their_video(videos):
    col, media = videos
    groups = col.search(clip=str(media / "space.webm"), k=2, group="video")
    assert groups.iloc[0]["video"].endswith("space.webm")
    cats = col.shots(str(media / "cats.mp4"))
    first = cats[0]
    groups = col.search(
        clip=(str(media / "cats.mp4"), first["start"], first["end"]), k=3, group="video"
    )
    assert groups.iloc[0]["video"].endswith("cats.mp4")
    key = first["ids"][0]
    hits = col.search(item=key, k=3)
    assert key not in set(hits["id"])
    with pytest.raises(UsageError, match="empty"):
        col.search(clip=(str(media / "cats.mp4"), 50, 60))


def test_results_frame_keeps_order_for_keyframes(videos):
    col, _ = videos
    ids = col.items()["id"].to_numpy()[:3][::-1]
    df = results_frame(col, ids, np.array([0.9, 0.5, 0.1]))
    assert list(df["id"]) == list(ids)


@pytest.mark.slow
def test_cli_search_group_video_json_and_clip(videos):
    col, media = videos
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "snoop_nb.cli",
            "search",
            "--collection",
            str(col.root),
            "--clip",
            f"{media / 'space.webm'}@0-4",
            "--group",
            "video",
            "-k",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert rows[0]["video"].endswith("space.webm") and rows[0]["kind"] == "video"
    assert set(rows[0]["moments"][0]) == {"id", "t_start", "t_end", "t", "score"}
    assert rows[0]["channel"] == "Canal 2"


def test_cli_export_rows_of_keyframes_carry_video_times_and_sidecar_fields(videos, tmp_path):
    import pandas as pd

    col, _media = videos
    items = col.items()
    frames = items[items["kind"] == "keyframe"]
    space = frames[frames["video"].str.endswith("space.webm")]["id"].tolist()
    cats = frames[frames["video"].str.endswith("cats.mp4")]["id"].tolist()

    def snoop(*args):
        done = subprocess.run(
            [sys.executable, "-m", "snoop_nb.cli", *args, "--collection", str(col.root)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    who = ("--user", "ines", "--class", "space")
    snoop("label", *who, "--pos", *map(str, space), "--neg", *map(str, cats))
    snoop("train", *who)
    snoop("apply", *who, "--threshold", "0.5")
    for name in ("space.csv", "space.parquet"):
        out = tmp_path / name
        snoop("export", "--user", "ines", "--class", "space", "--out", str(out))
        table = pd.read_csv(out) if name.endswith(".csv") else pd.read_parquet(out)
        labelled = table[table["label"].notna()].set_index("item_id")
        assert set(labelled.index) == set(space) | set(cats)
        for item_id, row in labelled.iterrows():
            truth = items.set_index("id").loc[item_id]
            assert row["video"] == truth["video"]
            assert row["t_start"] == pytest.approx(truth["t_start"], abs=1e-3)
            assert row["t_end"] == pytest.approx(truth["t_end"], abs=1e-3)
            assert row["t_start"] <= row["t"] <= row["t_end"]
        # the sidecar's fields, per video
        assert set(labelled.loc[space, "channel"]) == {"Canal 2"}
        assert set(labelled.loc[space, "title"]) == {"Space"}
        assert set(labelled.loc[cats, "date"]) == {"2024-03-01T20:00"}
        assert labelled.loc[space, "applied"].all()
