"""Videos in a collection: keyframe items beside pictures, the CSV sidecar, incremental and
resumable adds, bad videos recorded, and `snoop index` over a mixed folder. The videos are real
H.264 files made here with PyAV (a few seconds of photographs cut together), so each shot's
content is known."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mediafiles import photo
from PIL import Image

from snoop_nb import UsageError, open_collection

SIZE = (96, 64)
FPS = 25  # 25 frames a shot: more than the adaptive detector's shortest scene (15)
# Each test video: one shot per photograph, a second each (hard cuts between them).
VIDEO_A = ("chelsea", "coffee", "rocket")
VIDEO_B = ("astronaut", "camera")
FAST = {"detector": "adaptive", "progress": False}


def write_video(
    path: Path,
    photos: tuple[str, ...],
    *,
    seconds: float = 1.0,
    codec: str = "libx264",
    size: tuple[int, int] = SIZE,
) -> Path:
    """A real video: each photograph held for ``seconds`` (panning slowly back and forth, so
    the frames are not all alike), hard cuts between them."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for name in photos:
            base = photo(name).resize((size[0] + 20, size[1] + 20))
            for i in range(int(seconds * FPS)):
                x = min(i % 40, 40 - i % 40) // 2  # back and forth: no jump within a shot
                frame = base.crop((x, 0, x + size[0], size[1]))
                for packet in stream.encode(av.VideoFrame.from_image(frame)):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def mixed_folder(folder: Path) -> dict[str, Path]:
    """Two pictures and two videos, one video in a subfolder with an upper-case extension."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in ("coffee", "camera"):
        files[name] = folder / f"{name}.png"
        photo(name).resize(SIZE).save(files[name])
    files["a"] = write_video(folder / "a.mp4", VIDEO_A)
    files["b"] = write_video(folder / "news" / "B.MKV", VIDEO_B)
    return files


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)
    return path


def keyframes(col):
    items = col.items()
    return items[items["kind"] == "keyframe"]


def assert_consistent(col) -> None:
    """Every live keyframe once, vectors and index matching the catalog."""
    frames = keyframes(col)
    assert frames["uri"].is_unique
    assert (col.root / "vectors.f16").stat().st_size == col.rows * col.dim * 2
    assert col.index.ids().tolist() == col.ok_ids().tolist()
    for _, v in col.videos().iterrows():
        mine = frames[frames["video"] == v["uri"]]
        assert len(mine) == v["keyframes"] == sum(len(s["keyframes"]) for s in col.shots(v["id"]))


@pytest.fixture
def col(tmp_path, tiny_embedder):
    with open_collection(tmp_path / "col", create=True, embedder=tiny_embedder) as c:
        yield c


def test_a_mixed_folder_gives_pictures_and_keyframe_items_of_each_shot(col, tmp_path):
    files = mixed_folder(tmp_path / "in")
    report = col.add([tmp_path / "in"], keyframe_every=10.0, **FAST)
    assert report.discovered == 4 and not report.errors, report
    assert report.videos == 2 and report.hours == pytest.approx(5 / 3600, rel=0.1)
    items = col.items()
    assert sorted(items[items["kind"] == "image"]["uri"]) == sorted(
        str(files[n]) for n in ("coffee", "camera")
    )
    videos = col.videos().set_index("uri")
    assert sorted(videos.index) == sorted([str(files["a"]), str(files["b"])])
    assert videos.loc[str(files["a"]), "duration"] == pytest.approx(3.0, abs=0.2)
    assert (videos["width"] == SIZE[0]).all() and (videos["height"] == SIZE[1]).all()
    assert report.keyframes == len(keyframes(col)) == report.added - 2
    for name, photos in (("a", VIDEO_A), ("b", VIDEO_B)):
        shots = col.shots(str(files[name]))
        # hard cuts between the photographs: one shot each, a keyframe at least in each
        assert len(shots) == len(photos), shots
        for n, (shot, start) in enumerate(zip(shots, range(len(photos)), strict=True)):
            assert shot["index"] == n and shot["start"] == pytest.approx(start, abs=0.15)
            assert shot["keyframes"] and len(shot["ids"]) == len(shot["keyframes"])
            for item_id, t in zip(shot["ids"], shot["keyframes"], strict=True):
                row = col.item(item_id)
                assert row["kind"] == "keyframe"
                assert row["uri"] == f"{files[name]}#t={t:.3f}"
                assert row["video"] == str(files[name])
                assert (row["t_start"], row["t_end"]) == (shot["start"], shot["end"])
                assert row["t_start"] <= row["t"] < row["t_end"] and row["t"] == t
                assert row["shot"] == n and row["video_id"] == videos.loc[str(files[name]), "id"]
                assert (row["width"], row["height"]) == SIZE
                thumb = Image.open(col.root / "keyframes" / f"{item_id}.jpg")
                assert max(thumb.size) <= 320 and thumb.size[0] > thumb.size[1]
        assert col.video_path(str(files[name])) == files[name]
        assert col.video_path(int(videos.loc[str(files[name]), "id"])) == files[name]
    # the picture of the coffee finds the keyframe of the coffee shot first among keyframes
    coffee = int(items[items["uri"] == str(files["coffee"])]["id"].iloc[0])
    hits = col.search(item=coffee, k=len(col), exact=True)
    best = hits[(hits["kind"] == "keyframe")].iloc[0]
    assert best["video"] == str(files["a"]) and best["shot"] == VIDEO_A.index("coffee")
    info = col.info()
    assert info["videos"] == 2 and info["keyframes"] == report.keyframes
    assert info["hours"] == pytest.approx(5 / 3600, rel=0.1)
    assert_consistent(col)
    # a keyframe's uri and a video id name the video too; removing keyframes keeps working
    first = col.shots(str(files["b"]))[0]["ids"][0]
    assert col.video_path(col.item(first)["uri"]) == files["b"]
    assert col.remove([first]) == 1 and first not in col.ok_ids()
    assert col.ids_under([files["b"]]).tolist() == sorted(
        i for s in col.shots(str(files["b"])) for i in s["ids"]
    )
    left = len(col.ids_under([files["b"]]))
    assert left and col.remove_video(files["b"]) == left
    assert col.ids_under([files["b"]]).size == 0 and len(col.videos()) == 1
    again = col.add([tmp_path / "in"], **FAST)
    assert again.videos == 1 and again.skipped == 3  # a removed video is analysed again


def test_keyframe_thumbnails_are_320_on_their_longest_side(col, tmp_path):
    video = write_video(tmp_path / "wide.mp4", ("rocket",), size=(640, 360))
    col.add([video], **FAST)
    (shot,) = col.shots(video)
    for i in shot["ids"]:
        assert Image.open(col.root / "keyframes" / f"{i}.jpg").size == (320, 180)
        assert (col.item(i)["width"], col.item(i)["height"]) == (640, 360)


def test_long_shots_get_a_keyframe_every_so_many_seconds(col, tmp_path, capsys):
    video = write_video(tmp_path / "long.mp4", ("coffee",), seconds=6.0)
    col.add([video], keyframe_every=2.0, detector="adaptive", progress=True)
    assert "0.00/0.00 h" in capsys.readouterr().err  # progress in hours of video
    (shot,) = col.shots(video)
    assert len(shot["keyframes"]) >= 3
    assert all(shot["start"] <= t < shot["end"] for t in shot["keyframes"])
    assert keyframes(col)["t"].tolist() == sorted(shot["keyframes"])


def test_sidecar_fields_reach_videos_and_keyframes_and_follow_the_csv(col, tmp_path):
    files = mixed_folder(tmp_path / "in")
    sidecar = write_csv(
        tmp_path / "in" / "videos.csv",
        [
            {"file": "a.mp4", "channel": "TF1", "date": "1984-05-01 20:00", "title": "News"},
            {"file": str(files["b"]), "channel": "Antenne 2", "date": "1984-05-02 13:00"},
            {"file": "gone.mp4", "channel": "FR3"},
        ],
    )
    report = col.add([tmp_path / "in"], metadata=sidecar, **FAST)
    assert any("gone.mp4" in msg and "not a video" in msg for _, msg in report.warnings)
    videos = col.videos().set_index("uri")
    assert videos.loc[str(files["a"]), "channel"] == "TF1"
    assert videos.loc[str(files["b"]), "date"] == "1984-05-02 13:00"
    assert videos.loc[str(files["a"]), "date"] == "1984-05-01 20:00"  # text, as written
    frames = keyframes(col).set_index("uri")
    a = frames[frames["video"] == str(files["a"])]
    assert (a["channel"] == "TF1").all() and (a["title"] == "News").all()
    b = frames[frames["video"] == str(files["b"])]
    assert (b["channel"] == "Antenne 2").all() and b["title"].isna().all()
    # labels on a keyframe survive a sidecar change; the CSV changes without re-analysis
    col.set_meta([int(a["id"].iloc[0])], label="anchor")
    rows = col.rows
    write_csv(
        sidecar,
        [
            {"file": "a.mp4", "channel": "TF1", "date": "1984-05-01 20:00"},
            {"file": "news/B.MKV", "channel": "La Cinq", "date": "1986-02-20", "title": "Jeu"},
        ],
    )
    again = col.add([tmp_path / "in"], metadata=sidecar, **FAST)
    assert again.videos == 0 and again.metadata_updated == 2 and col.rows == rows
    frames = keyframes(col)
    a = frames[frames["video"] == str(files["a"])]
    assert a["title"].isna().all() and (a["channel"] == "TF1").all()
    assert a["label"].tolist()[0] == "anchor" and a["t"].notna().all()
    b = frames[frames["video"] == str(files["b"])]
    assert (b["channel"] == "La Cinq").all() and (b["title"] == "Jeu").all()
    assert col.videos().set_index("uri").loc[str(files["b"]), "date"] == "1986-02-20"
    # a run without the sidecar keeps the fields; a changed video keeps them too
    col.add([tmp_path / "in"], **FAST)
    write_video(files["b"], VIDEO_B[::-1])
    col.add([tmp_path / "in"], **FAST)
    b = keyframes(col)[lambda d: d["video"] == str(files["b"])]
    assert len(b) and (b["channel"] == "La Cinq").all()


def test_a_collection_made_before_videos_takes_videos(tmp_path, tiny_embedder):
    files = mixed_folder(tmp_path / "in")
    root = tmp_path / "old"
    with open_collection(root, create=True, embedder=tiny_embedder) as col:
        col.add([files["coffee"]], progress=False)
    import sqlite3

    db = sqlite3.connect(root / "catalog.sqlite")
    db.executescript("DROP INDEX videos_live_path; DROP TABLE videos;")  # as it was made then
    db.close()
    with open_collection(root, embedder=tiny_embedder) as col:
        assert col.info()["videos"] == 0 and len(col) == 1
        report = col.add([tmp_path / "in"], **FAST)
        assert report.videos == 2 and report.skipped == 1
        assert len(col.videos()) == 2
        assert_consistent(col)


def test_a_sidecar_without_a_file_column_is_a_usage_error(col, tmp_path):
    files = mixed_folder(tmp_path / "in")
    bad = write_csv(tmp_path / "bad.csv", [{"path": "a.mp4", "channel": "TF1"}])
    with pytest.raises(UsageError, match="'file' column"):
        col.add([files["a"]], metadata=bad, **FAST)
    with pytest.raises(UsageError, match="cannot read"):
        col.add([files["a"]], metadata=tmp_path / "missing.csv", **FAST)
    assert len(col) == 0


def test_a_rerun_redoes_nothing_and_a_changed_video_replaces_its_keyframes(col, tmp_path):
    files = mixed_folder(tmp_path / "in")
    col.add([tmp_path / "in"], **FAST)
    rows, before = col.rows, keyframes(col)
    again = col.add([tmp_path / "in"], **FAST)
    assert (again.added, again.videos, again.skipped) == (0, 0, 4) and col.rows == rows
    old_b = before[before["video"] == str(files["b"])]
    video_id = int(old_b["video_id"].iloc[0])
    write_video(files["b"], ("immunohistochemistry", "chelsea", "coffee"))
    changed = col.add([tmp_path / "in"], **FAST)
    assert (changed.videos, changed.replaced, changed.skipped) == (1, 1, 3)
    now = keyframes(col)
    new_b = now[now["video"] == str(files["b"])]
    assert set(new_b["shot"]) == {0, 1, 2} and (new_b["video_id"] == video_id).all()
    assert not set(old_b["id"]) & set(now["id"])  # every old keyframe gone, the new ones in
    gone = col.items(old_b["id"], status=None)
    assert (gone["status"] == "deleted").all()
    assert not any((col.root / "keyframes" / f"{i}.jpg").exists() for i in old_b["id"])
    a_before = before[before["video"] == str(files["a"])]["id"].tolist()
    assert now[now["video"] == str(files["a"])]["id"].tolist() == a_before
    assert len(col.videos()) == 2
    assert_consistent(col)


def test_unreadable_videos_are_recorded_with_a_reason_and_retried(col, tmp_path):
    folder = tmp_path / "in"
    good = write_video(folder / "good.mp4", VIDEO_A)
    text = folder / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    empty = folder / "empty.mkv"
    empty.write_bytes(b"")
    head = write_video(tmp_path / "whole.mkv", VIDEO_A + VIDEO_B)
    truncated = folder / "truncated.mkv"
    truncated.write_bytes(head.read_bytes()[: head.stat().st_size // 2])
    corrupt = folder / "corrupt.mp4"
    data = bytearray(write_video(tmp_path / "whole.mp4", VIDEO_A + VIDEO_B).read_bytes())
    rng = np.random.default_rng(0)
    mid = len(data) // 2
    data[mid : mid + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    corrupt.write_bytes(bytes(data))
    report = col.add([folder], **FAST)
    failed = dict(report.errors)
    assert set(failed) >= {str(text), str(empty)}, report.errors
    assert all(isinstance(r, str) and r for r in failed.values())
    assert str(good) not in failed
    recorded = {e["uri"]: e["reason"] for e in col.errors()}
    assert recorded == failed
    videos = col.videos(status=None).set_index("uri")
    assert videos.loc[str(text), "status"] == "error" and videos.loc[str(text), "error"]
    # what could be read of the truncated and corrupt files is kept, or they are errors
    for damaged in (truncated, corrupt):
        row = videos.loc[str(damaged)]
        assert row["status"] == "error" or row["keyframes"] >= 1, row
    # the first half of a Matroska file is its first 2.5 s: kept, with a warning saying so
    row = videos.loc[str(truncated)]
    assert row["status"] == "ok" and 1 <= row["shots"] <= 3, row
    assert "truncated" in row["warning"] and (str(truncated), row["warning"]) in report.warnings
    ok = col.videos()
    assert str(good) in set(ok["uri"])
    assert_consistent(col)
    # failed videos are tried again, keeping one row each
    again = col.add([folder], **FAST)
    assert again.retried == len(failed) and dict(again.errors) == failed
    assert len(col.videos(status=None)) == 5
    write_video(text, VIDEO_B)  # the file is a video now
    fixed = col.add([folder], **FAST)
    assert fixed.videos == 1 and str(text) not in {e["uri"] for e in col.errors()}
    assert_consistent(col)


#: A run in another process, made to stop (and be killed) at a chosen moment: "analysing" while
#: its third video is being read, or "appended" once the second video's vectors are fsync'ed
#: but before its catalog rows are committed.
KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    import snoop_nb.store.adding as adding
    from snoop_nb import open_collection
    from snoop_nb.store.vectors import VectorStore

    root, folder, model, pretrained, where = sys.argv[1:]
    analyse, append = adding.analyse_video, VectorStore.append
    seen = []

    def slow_analyse(path, *args, **kwargs):
        seen.append(path)
        if where == "analysing" and len(seen) == 3:
            print("analysing", path, flush=True)
            time.sleep(120)
        return analyse(path, *args, **kwargs)

    appended = []

    def slow_append(self, f, block):
        append(self, f, block)
        appended.append(len(block))
        print("appended", len(block), flush=True)
        if where == "appended" and len(appended) == 2:
            print("stop", flush=True)
            time.sleep(120)

    adding.analyse_video = slow_analyse
    VectorStore.append = slow_append
    with open_collection(root, create=True, model=model, pretrained=pretrained) as col:
        col.add([folder], workers=1, batch_size=4, detector="adaptive", progress=False)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["analysing", "appended"])
def test_a_run_killed_mid_video_resumes_with_each_video_once(tmp_path, tiny_clip, where):
    folder = tmp_path / "in"
    names = [VIDEO_A, VIDEO_B, ("camera", "rocket"), ("coffee",)]
    videos = [write_video(folder / f"v{i}.mp4", p) for i, p in enumerate(names)]
    root = tmp_path / "col"
    run = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(root), str(folder), *tiny_clip.values(), where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in run.stdout:
            if line.startswith("analysing" if where == "analysing" else "stop"):
                break
        else:
            pytest.fail(f"the run ended before the kill: {run.stderr.read()}")
        run.send_signal(signal.SIGKILL)
    finally:
        run.kill()
        run.wait()
    with open_collection(root) as col:
        done = set(col.videos()["uri"])
        assert done < {str(v) for v in videos} and str(videos[0]) in done
        # whatever was committed is whole: each committed video has all its keyframes
        for _, v in col.videos().iterrows():
            assert v["keyframes"] == sum(len(s["keyframes"]) for s in col.shots(v["id"])) > 0
        if where == "appended":  # the second video's vectors were written, not vouched for
            assert (root / "vectors.f16").stat().st_size > col.rows * col.dim * 2
        report = col.add([folder], detector="adaptive", progress=False)
        assert report.skipped == len(done) and report.videos == len(videos) - len(done)
        assert sorted(col.videos()["uri"]) == sorted(str(v) for v in videos)
        items = col.items(status=None)
        assert (items["status"] == "ok").all()  # nothing of the killed video was left over
        assert col.rows == len(items)
        assert_consistent(col)


def snoop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snoop_nb.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_snoop_index_takes_a_mixed_folder_with_a_sidecar(tmp_path, tiny_clip):
    files = mixed_folder(tmp_path / "in")
    (tmp_path / "in" / "notes.webm").write_text("not a video")
    sidecar = write_csv(
        tmp_path / "meta.csv",
        [
            {"file": "in/a.mp4", "channel": "TF1", "date": "1984-05-01"},
            {"file": "in/missing.mp4", "channel": "FR3"},
        ],
    )
    model = ["--model", tiny_clip["model"], "--pretrained", tiny_clip["pretrained"]]
    common = ["index", tmp_path / "in", "--collection", tmp_path / "col", *model, "--quiet"]
    r = snoop(*common, "--metadata", sidecar, "--detector", "adaptive", "--keyframe-every", "5")
    assert r.returncode == 0, r.stderr
    assert "2 videos" in r.stdout and " h)" in r.stdout
    assert "notes.webm" in r.stderr and "missing.mp4" in r.stderr
    r = snoop(*common, "--metadata", sidecar, "--detector", "adaptive", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["videos"] == 0 and out["skipped"] == 4 and out["retried"] == 1
    assert out["collection_videos"] == 2 and out["hours"] == 0
    assert [e["uri"] for e in out["errors"]] == [str(tmp_path / "in" / "notes.webm")]
    assert any("missing.mp4" in w["message"] for w in out["warnings"])
    with open_collection(tmp_path / "col") as col:
        a = keyframes(col)[lambda d: d["video"] == str(files["a"])]
        assert len(a) >= 3 and (a["channel"] == "TF1").all()
        n_frames = len(keyframes(col))
    r = snoop("info", "--collection", tmp_path / "col")
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("videos"))
    assert line.split()[1] == "2" and f"{n_frames} keyframes" in line
    bad = write_csv(tmp_path / "bad.csv", [{"name": "in/a.mp4"}])
    r = snoop(*common, "--metadata", bad)
    assert r.returncode == 2 and "'file' column" in r.stderr
