"""The video UI's Python side, without a browser: keyframe tiles (video, timecode, thumbnail),
results grouped per video, the player (a moment's shot as WebM bytes, previous/next shot, a
bad video), the timeline's scores, and the App's Videos tab (test_video_browser.py checks the
front end in Chromium)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from mediafiles import photo
from PIL import Image

from snoop_nb import open_collection
from snoop_nb.media.excerpt import duration_of
from snoop_nb.media.synthvideo import make_video
from snoop_nb.search import group_by_video
from snoop_nb.ui import App, ImageGrid
from snoop_nb.ui.player import EXCERPT_SECONDS, VideoPlayer
from snoop_nb.ui.videos import VideoPanel

ROOT = Path(__file__).resolve().parents[1]
DEMO_VIDEOS = ROOT / "data" / "demo" / "videos" / "collection"
WEBM_MAGIC = b"\x1a\x45\xdf\xa3"  # EBML: a Matroska / WebM file


@pytest.fixture(scope="module")
def vcol(tmp_path_factory):
    """A throwaway copy of the demo video collection (`make demo-collection` builds it)."""
    if not (DEMO_VIDEOS / "manifest.json").exists():
        raise RuntimeError(f"no demo video collection at {DEMO_VIDEOS}: run `make demo-collection`")
    dest = tmp_path_factory.mktemp("vui") / "videos"
    shutil.copytree(DEMO_VIDEOS, dest, ignore=shutil.ignore_patterns("*.lock"))
    with open_collection(dest) as c:
        yield c


@pytest.fixture(scope="module")
def own(tmp_path_factory, default_embedder):
    """A small collection of two made videos and a photograph (its videos can be spoiled)."""
    root = tmp_path_factory.mktemp("vui-own")
    media = root / "media"
    for name, pictures, seed in (("a.mp4", ("chelsea", "coffee"), 1), ("b.mp4", ("rocket",), 2)):
        make_video(
            media / name,
            [photo(p, (320, 240)) for p in pictures],
            seconds=6,
            size=(320, 240),
            seed=seed,
            pictures_per_shot=1,
            flashes=0,
            gradual=0,
        )
    photo("astronaut", (256, 192)).save(media / "astronaut.jpg")
    with open_collection(root / "col", create=True, embedder=default_embedder) as c:
        c.add([media], detector="adaptive", keyframe_every=2.0, progress=False)
        yield c


def keyframe_ids(col) -> list[int]:
    items = col.items()
    return [int(i) for i in items[items["kind"] == "keyframe"]["id"]]


def test_keyframe_tiles_show_video_timecode_and_shot(vcol):
    grid = ImageGrid(vcol)
    grid.on_play(lambda i: None)
    frame = vcol.search(text="a bird", k=20)
    grid.show(frame)
    assert grid.has_video and grid.playable
    items = vcol.items(frame["id"].tolist()).set_index("id")
    for tile in grid.tiles:
        row = items.loc[tile["id"]]
        assert tile["caption"] == Path(row["video"]).name
        h, m, s = (int(x) for x in tile["timecode"].split(":"))
        assert h * 3600 + m * 60 + s == int(row["t"])
        assert any(line.startswith("shot ") for line in tile["meta"])
    # thumbnails are the keyframes' saved pictures, sent as JPEG
    for jpeg in grid.thumbs:
        with Image.open(io.BytesIO(jpeg)) as im:
            assert im.format == "JPEG" and max(im.size) <= 256


def test_a_keyframe_thumbnail_is_read_from_the_video_when_its_picture_is_gone(own):
    from snoop_nb.ui.thumbs import Thumbnails

    kf = keyframe_ids(own)[0]
    saved = own.root / "keyframes" / f"{kf}.jpg"
    original = Image.open(saved).convert("RGB")
    saved.unlink()
    got = Thumbnails(own).get([kf])[kf]
    with Image.open(io.BytesIO(got)) as im:
        again = im.convert("RGB").resize(original.size)
    # the same picture, read from the video (JPEG twice over: close, not equal)
    diff = np.abs(np.asarray(again, float) - np.asarray(original, float)).mean()
    assert diff < 12, diff


def test_results_grouped_per_video_best_video_first(vcol):
    grid = ImageGrid(vcol, page_size=200, group_video=True)
    frame = vcol.search(text="a boat", k=60)
    grid.show(frame)
    heads = [tile["group"] for tile in grid.tiles if tile["group"]]
    expected = group_by_video(frame)
    assert [h["title"] for h in heads] == [Path(v).name for v in expected["video"]]
    assert [h["hits"] for h in heads] == expected["hits"].tolist()
    assert [h["rank"] for h in heads] == list(range(1, len(heads) + 1))
    # each video's moments follow its header, best first
    items = vcol.items().set_index("id")
    current, scores = None, {}
    for tile in grid.tiles:
        if tile["group"]:
            current = tile["group"]["title"]
        assert Path(items.loc[tile["id"], "video"]).name == current
        scores.setdefault(current, []).append(float(tile["score"]))
    assert all(s == sorted(s, reverse=True) for s in scores.values())
    # grouping off: the plain ranking again
    grid.group_video = False
    assert [t["id"] for t in grid.tiles] == frame["id"].tolist()[: len(grid.tiles)]
    assert not any(t["group"] for t in grid.tiles)


def test_a_group_cut_by_a_page_says_it_continues(vcol):
    grid = ImageGrid(vcol, page_size=5, group_video=True)
    frame = vcol.search(text="a boat", k=46)
    grid.show(frame)
    first = grid.tiles[0]["group"]
    grid.vue_goto(2)
    head = grid.tiles[0]["group"]
    assert head is not None
    sizes = group_by_video(frame)["hits"].tolist()
    assert head["continued"] == (sizes[0] > 5)
    assert first["continued"] is False


def test_player_plays_the_shot_of_a_moment_and_steps_through_shots(vcol):
    player = VideoPlayer(vcol)
    items = vcol.items()
    frames = items[items["kind"] == "keyframe"]
    # a moment with a shot before and after its own
    row = next(
        r for _, r in frames.iterrows() if 0 < int(r["shot"]) < len(vcol.shots(r["video"])) - 1
    )
    player.open_moment(int(row["id"]))
    assert player.message == ""
    shots = vcol.shots(row["video"])
    shot = shots[player.current]
    assert shot["start"] <= row["t"] <= shot["end"]
    assert int(row["id"]) in shot["ids"]
    assert player.clip[:4] == WEBM_MAGIC
    length = min(shot["end"] - shot["start"], EXCERPT_SECONDS)
    assert abs(duration_of(player.clip) - length) < 0.25
    assert player.clip_start == pytest.approx(shot["start"], abs=1e-6)
    assert player.offset == pytest.approx(row["t"] - shot["start"], abs=1e-6)
    assert player.title == Path(row["video"]).name and "channel:" in player.details
    assert len(player.shots) == len(shots)
    here, played = player.current, player.played
    player.vue_next({})
    assert player.current == here + 1 and player.played == played + 1
    assert player.clip_start == pytest.approx(shots[here + 1]["start"])
    player.vue_previous({})
    player.vue_previous({})
    assert player.current == here - 1
    # the first shot has no previous one: nothing happens
    player.vue_goto_shot({"index": 0})
    played = player.played
    player.vue_previous({})
    assert player.current == 0 and player.played == played


def test_player_on_a_picture_or_a_broken_video_says_so(own, tmp_path):
    player = VideoPlayer(own)
    picture = own.items()
    picture = int(picture[picture["kind"] != "keyframe"]["id"].iloc[0])
    player.open_moment(picture)
    assert "is a picture" in player.message and player.clip == b""
    # a video spoiled after indexing: its shots are known, its excerpt cannot be cut
    kf = next(i for i in keyframe_ids(own) if own.item(i)["video"].endswith("b.mp4"))
    path = own.video_path(own.item(kf)["video"])
    data = path.read_bytes()
    try:
        path.write_bytes(b"\0" * 4096)
        player.open_moment(kf)
        assert player.message.startswith("cannot play b.mp4") and player.clip == b""
    finally:
        path.write_bytes(data)
    player.open_moment(kf)
    assert player.message == "" and player.clip[:4] == WEBM_MAGIC


def test_timeline_colours_each_shot_by_its_best_keyframe(own):
    player = VideoPlayer(own)
    kf = keyframe_ids(own)[0]
    player.open_moment(kf)
    ids = [i for shot in player.shot_list for i in shot["ids"]]
    scores = {i: 0.1 * (n + 1) for n, i in enumerate(ids)}
    player.set_scores(scores, what="test")
    for band, shot in zip(player.shots, player.shot_list, strict=True):
        assert band["score"] == pytest.approx(max(scores[i] for i in shot["ids"]))
        assert band["level"] == pytest.approx(min(1.0, band["score"]))
    player.set_scores({ids[0]: -1.0, ids[-1]: 1.0}, relative=True)
    levels = [b["level"] for b in player.shots]
    assert levels[0] == 0.0 and levels[-1] == 1.0
    player.set_scores(None)
    assert all(b["score"] is None for b in player.shots) and player.scored == ""


def test_video_panel_plays_from_the_grid_and_colours_by_the_class(own):
    panel = VideoPanel(own, "vic")
    panel.show_start()
    assert panel.grid.group_video and panel.grid.playable
    tile = panel.grid.tiles[0]
    panel.grid.vue_play({"id": tile["id"]})
    assert panel.player.clip[:4] == WEBM_MAGIC
    assert panel.chooser.v_model == int(
        own.videos().set_index("uri").loc[own.item(tile["id"])["video"], "id"]
    )
    # a class trained on the keyframes of a.mp4: the timeline shows its probabilities
    items = own.items()
    frames = items[items["kind"] == "keyframe"]
    pos = frames[frames["video"].str.endswith("a.mp4")]["id"].tolist()
    neg = frames[frames["video"].str.endswith("b.mp4")]["id"].tolist()
    panel.trainer.create("cats")
    panel.grid.label_many(pos, 1)
    panel.grid.label_many(neg, -1)
    panel.trainer.train_and_rank()
    assert panel.player.scored.startswith("class ")
    probs = panel.trainer.session.probabilities()
    for band, shot in zip(panel.player.shots, panel.player.shot_list, strict=True):
        assert band["score"] == pytest.approx(max(probs[i] for i in shot["ids"]), abs=1e-5)
    # choosing another video opens it at its start
    other = own.videos()
    other = int(other[other["uri"].str.endswith("b.mp4")]["id"].iloc[0])
    panel.chooser.v_model = other
    assert panel.player.title == "b.mp4" and panel.player.current == 0


def test_app_has_a_videos_tab_for_videos_only(vcol, own, tmp_path):
    from dashboard import copy_demo_collection

    pictures = copy_demo_collection(tmp_path / "pictures")
    plain = App(pictures, user="pia", warm_up=False)
    assert plain.videos is None
    common = ["search", "explore", "map", "copies"]
    assert [t.value for t in plain.tabs.children] == common
    both = App(pictures, user="pia", warm_up=False, videos=vcol)
    assert [t.value for t in both.tabs.children] == [*common, "videos"]
    assert both.videos.grid.tiles and all(t.get("timecode") for t in both.videos.grid.tiles)
    # a collection holding videos has the tab itself, and its grid plays in it
    mixed = App(own, user="pia", warm_up=False)
    assert mixed.videos is not None and mixed.grid.playable
    kf = keyframe_ids(own)[0]
    mixed.grid.vue_play({"id": kf})
    assert mixed.tabs.v_model == "videos" and mixed.videos.player.clip[:4] == WEBM_MAGIC
