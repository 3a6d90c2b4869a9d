"""Excerpts for the player: real videos made here, cut, shrunk, re-timed and read back."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from snoop_nb.errors import MediaError, UsageError
from snoop_nb.media.excerpt import MAX_FPS, duration_of, excerpt


def _video(path: Path, *, seconds: float = 6.0, size=(320, 240), fps=25, audio=True) -> Path:
    """An H.264 video whose red channel encodes the frame's time (t * 20), with a tone."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        a = None
        if audio:
            a = c.add_stream("aac", rate=48_000)
            a.layout = "stereo"
        for i in range(int(seconds * fps)):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            img[..., 0] = min(255, int(i / fps * 20))
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if a is not None:
            t = np.arange(int(48_000 * seconds)) / 48_000
            s = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([s, s]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 48_000, 0
            fifo = av.AudioFifo()
            fifo.write(frame)
            while fifo.samples >= 1024:
                for p in a.encode(fifo.read(1024)):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


def _first_red(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as c:
        frame = next(c.decode(video=0))
        return float(frame.to_ndarray(format="rgb24")[..., 0].mean())


def test_excerpt_is_the_asked_range_shrunk_with_sound(tmp_path):
    src = _video(tmp_path / "v.mp4", size=(640, 360))
    data = excerpt(src, 2.0, 4.5, max_side=320)
    with av.open(io.BytesIO(data)) as c:
        assert c.format.name.startswith("matroska") or "webm" in c.format.name
        v = c.streams.video[0]
        assert v.codec_context.name in ("vp8", "libvpx")
        assert max(v.width, v.height) == 320 and v.width % 2 == 0 and v.height % 2 == 0
        assert c.streams.audio, "the source's sound is kept"
    assert duration_of(data) == pytest.approx(2.5, abs=0.05)
    # it opens on the picture at 2.0 s (red = t * 20 = 40), not on the file's first frame
    assert _first_red(data) == pytest.approx(40, abs=6)


def test_excerpt_length_is_bounded_and_rotation_turns_the_picture(tmp_path):
    src = _video(tmp_path / "v.mp4", seconds=4.0, size=(320, 240), audio=False)
    data = excerpt(src, 0.0, 100.0, max_seconds=1.0, rotation=90)
    assert duration_of(data) == pytest.approx(1.0, abs=0.05)
    with av.open(io.BytesIO(data)) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (240, 320)
        assert not c.streams.audio
        assert float(v.average_rate) <= MAX_FPS


def test_bad_inputs_are_clear_errors(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(MediaError, match=r"notes\.mp4"):
        excerpt(text, 0, 1)
    with pytest.raises(MediaError):
        excerpt(tmp_path / "missing.mp4", 0, 1)
    src = _video(tmp_path / "v.mp4", seconds=2.0, audio=False)
    with pytest.raises(UsageError):
        excerpt(src, 1.5, 1.0)
    with pytest.raises(MediaError, match="no picture"):
        excerpt(src, 50.0, 55.0)
