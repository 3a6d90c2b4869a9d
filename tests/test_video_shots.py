"""Shots, keyframes and frames of real videos made here with known transitions."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mediafiles import photo

from snoop_nb.errors import MediaError, UsageError
from snoop_nb.media.synthvideo import make_video
from snoop_nb.media.video import detect_shots, keyframe_times, probe, read_frames

PICTURES = ["chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry"]
FPS = 25.0


@pytest.fixture(scope="module")
def pictures():
    return [photo(name, (320, 240)) for name in PICTURES]


@pytest.fixture(scope="module")
def sd_video(tmp_path_factory, pictures):
    """24 s of SD H.264 with cuts, dissolves, fades, two flashes and a fast pan."""
    folder = tmp_path_factory.mktemp("shots")
    return make_video(folder / "sd.mp4", pictures, seconds=24, seed=3, flashes=2, gradual=0.5)


def _matches(truth, found: list[float]) -> tuple[int, int, list[float]]:
    """(hard cuts found within 2 frames, gradual transitions found within their span +- 3
    frames, boundaries matching nothing)."""
    used: set[float] = set()
    cuts = 0
    for c in truth.cuts:
        hit = [b for b in found if abs(b - c) <= 2 / FPS + 1e-6 and b not in used]
        if hit:
            used.add(hit[0])
            cuts += 1
    gradual = 0
    for a, e, _ in truth.gradual:
        hit = [b for b in found if a - 3 / FPS <= b <= e + 3 / FPS and b not in used]
        if hit:
            used.add(hit[0])
            gradual += 1
    return cuts, gradual, [b for b in found if b not in used]


@pytest.mark.slow
def test_transnetv2_finds_cuts_and_gradual_transitions_not_flashes(sd_video):
    assert sd_video.cuts and sd_video.gradual and len(sd_video.flashes) == 2
    report = detect_shots(sd_video.path)
    assert report.detector == "transnetv2" and report.warning is None
    found = [s.start for s in report.shots[1:]]
    cuts, gradual, extra = _matches(sd_video, found)
    assert cuts == len(sd_video.cuts)
    assert gradual == len(sd_video.gradual)
    assert extra == [], f"false boundaries at {extra} (flashes at {sd_video.flashes})"


def test_adaptive_finds_the_hard_cuts_and_no_flash(sd_video):
    report = detect_shots(sd_video.path, detector="adaptive")
    assert report.detector == "adaptive"
    found = [s.start for s in report.shots[1:]]
    cuts, _, extra = _matches(sd_video, found)
    assert cuts == len(sd_video.cuts)
    for f in sd_video.flashes:
        assert not any(abs(b - f) <= 2 / FPS for b in extra), f"flash at {f} cut: {extra}"


def test_shots_tile_the_video_and_keyframes_lie_inside_them(sd_video):
    report = detect_shots(sd_video.path, detector="adaptive", keyframe_every=2.0)
    shots = report.shots
    assert shots[0].start == 0.0
    assert shots[-1].end == pytest.approx(sd_video.duration, abs=0.05)
    for a, b in itertools.pairwise(shots):
        assert a.end == b.start and a.index + 1 == b.index
    for s in shots:
        assert s.keyframes and all(s.start <= t < s.end for t in s.keyframes)
        # a keyframe at least every 2 s: as many as ceil(duration / 2)
        assert len(s.keyframes) == max(1, int(np.ceil((s.end - s.start) / 2.0 - 1e-9)))


def test_keyframe_times_rule():
    assert keyframe_times(10.0, 14.0, 10.0) == (12.0,)
    assert keyframe_times(0.0, 25.0, 10.0) == pytest.approx((25 / 6, 12.5, 125 / 6))


def test_interval_detector_needs_no_decoding_of_the_stream(sd_video):
    report = detect_shots(sd_video.path, detector="interval", keyframe_every=5.0)
    assert report.detector == "interval"
    assert [s.start for s in report.shots] == pytest.approx([0, 5, 10, 15, 20])


def test_unknown_detector_and_bad_keyframe_every_are_usage_errors(sd_video):
    with pytest.raises(UsageError, match="detector"):
        detect_shots(sd_video.path, detector="magic")
    with pytest.raises(UsageError):
        detect_shots(sd_video.path, keyframe_every=0)


def test_read_frames_gives_the_frame_shown_at_each_time(sd_video):
    flash = sd_video.flashes[0]
    info = probe(sd_video.path)
    times = [flash + 0.2, flash, 0.0, flash - 0.2]  # unsorted on purpose
    frames = read_frames(sd_video.path, times, info=info, max_side=200)
    assert [max(f.size) for f in frames] == [200] * 4
    bright = [float(np.asarray(f, np.float32).mean()) for f in frames]
    assert bright[1] > bright[0] + 40 and bright[1] > bright[3] + 40


def test_probe_reads_size_rate_codec_and_sound(tmp_path, pictures):
    t = make_video(
        tmp_path / "a.webm", pictures, seconds=3, size=(640, 360), codec="vp9", audio=True
    )
    info = probe(t.path)
    assert (info.width, info.height, info.codec) == (640, 360, "vp9")
    assert info.audio and info.fps == pytest.approx(25) and info.rotation == 0
    assert info.duration == pytest.approx(3.0, abs=0.1)
    assert not probe(make_video(tmp_path / "b.mp4", pictures, seconds=2).path).audio


def test_rotation_metadata_turns_size_and_frames(tmp_path, pictures):
    t = make_video(tmp_path / "phone.mp4", pictures, seconds=2, size=(320, 240), rotation=90)
    info = probe(t.path)
    assert info.rotation == 90 and (info.width, info.height) == (240, 320)
    (frame,) = read_frames(t.path, [1.0], info=info)
    assert frame.size == (240, 320)


def test_interlaced_streams_are_seen_and_deinterlaced(tmp_path, pictures):
    t = make_video(tmp_path / "tv.mp4", pictures, seconds=2, interlaced=True)
    info = probe(t.path)
    assert info.interlaced
    (frame,) = read_frames(t.path, [1.0], info=info)
    rows = np.asarray(frame, np.float32)
    # no combing: neighbouring rows differ no more than rows two apart
    assert np.abs(np.diff(rows[::2], axis=0)).mean() >= np.abs(np.diff(rows, axis=0)).mean() * 0.8


def test_variable_frame_rate_keeps_true_timecodes(tmp_path, pictures):
    t = make_video(tmp_path / "vfr.mkv", pictures, seconds=10, vfr=True, seed=5, gradual=0.0)
    assert t.cuts
    report = detect_shots(t.path, detector="adaptive")
    found = [s.start for s in report.shots[1:]]
    for c in t.cuts:  # the cut's true time, not frame_number / 25
        assert any(abs(b - c) <= 0.06 for b in found), (c, found)


def test_truncated_and_corrupt_videos_give_a_warning_or_a_clear_error(tmp_path, pictures):
    t = make_video(tmp_path / "full.mkv", pictures, seconds=8)
    data = t.path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.5)])
    report = detect_shots(cut, detector="adaptive")
    assert report.warning and "truncated" in report.warning
    assert 1.0 < report.shots[-1].end < 7.5
    broken = tmp_path / "broken.mkv"
    middle = len(data) // 2
    broken.write_bytes(
        data[:middle]
        + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8))
        + data[middle + 4000 :]
    )
    report = detect_shots(broken, detector="adaptive")  # decodes around the damage, no crash
    assert report.shots
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(MediaError, match="not a readable video"):
        probe(text)
    with pytest.raises(MediaError, match="no such file"):
        detect_shots(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    with pytest.raises(MediaError):
        detect_shots(empty)


def snoop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snoop_nb.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_snoop_shots_prints_json_without_a_collection(sd_video, tmp_path):
    done = snoop("shots", str(sd_video.path), "--detector", "adaptive", "--json")
    assert done.returncode == 0, done.stderr
    shots = json.loads(done.stdout)
    assert shots[0]["start"] == 0 and all(set(s) == {"start", "end", "keyframes"} for s in shots)
    direct = detect_shots(sd_video.path, detector="adaptive").as_dicts()
    assert shots == direct
    bad = tmp_path / "x.mp4"
    bad.write_text("no")
    done = snoop("shots", str(bad))
    assert done.returncode == 1 and "not a readable video" in done.stderr
    assert Path(bad).exists()
