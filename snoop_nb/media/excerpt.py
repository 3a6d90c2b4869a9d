"""Excerpts of a video as small WebM files in memory, for a player fed through the widget channel.

The dashboard serves no file: to play a moment, the kernel cuts the excerpt here (decoding from
the nearest keyframe before ``start``), shrinks it, re-times it at a constant frame rate (which
also evens out variable frame rate sources), and encodes VP8 video with Opus sound in WebM, which
every browser plays. Encoding runs in libvpx's real-time mode, so a 10 s excerpt at 480 px costs
a fraction of a second, and both its length and its size are bounded: a class of thirty visitors
clicking moments cannot make the server encode hours.
"""

from __future__ import annotations

import io
import math
import os
from fractions import Fraction

import numpy as np

from snoop_nb.errors import MediaError, UsageError

#: The longest excerpt cut at once, in seconds (longer requests are cut to this).
MAX_SECONDS = 30.0
#: The excerpt's frame rate at most (a 50 fps source is halved).
MAX_FPS = 25.0
#: Video bit rate of an excerpt, bits per second (about 60 KB per second at 480 px).
BIT_RATE = 500_000


def excerpt(
    path: str | os.PathLike,
    start: float,
    end: float,
    *,
    max_side: int = 480,
    rotation: int = 0,
    audio: bool = True,
    max_seconds: float = MAX_SECONDS,
) -> bytes:
    """The video from ``start`` to ``end`` (seconds) as WebM bytes (VP8 + Opus).

    ``end`` is cut to ``start + max_seconds``; frames are shrunk so that the longest side is at
    most ``max_side`` and turned by ``rotation`` degrees (the stream's display rotation, as the
    catalog records it), and the sound is kept when the file has some and ``audio``. Raises
    :class:`MediaError` when the file cannot be read or holds no picture in that range, and
    :class:`UsageError` for an empty range.
    """
    import av

    start = max(0.0, float(start))
    end = min(float(end), start + float(max_seconds))
    if not end > start:
        raise UsageError(f"an excerpt needs end > start (got {start:.3f} to {end:.3f} s)")
    name = os.fspath(path)
    try:
        container = av.open(name)
    except (OSError, av.FFmpegError) as e:
        raise MediaError(f"{name}: cannot be opened as a video ({_reason(e)})") from None
    try:
        if not container.streams.video:
            raise MediaError(f"{name}: has no video stream")
        frames, fps = _pictures(container, start, end, name)
        sound = _sound(container, start, end) if audio and container.streams.audio else None
    except av.FFmpegError as e:
        raise MediaError(f"{name}: cannot be decoded ({_reason(e)})") from None
    finally:
        container.close()
    return _encode(frames, fps, sound, start, end, max_side=max_side, rotation=rotation)


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _seek(container, stream, start: float) -> None:
    """Seek to the keyframe at or before ``start`` (decoding goes forward from there)."""
    if start <= 0 or stream.time_base is None:
        return
    try:
        container.seek(int(start / stream.time_base), stream=stream, backward=True)
    except Exception:  # an unseekable stream: decode from the beginning
        container.seek(0)


def _pictures(container, start: float, end: float, name: str) -> tuple[list, float]:
    """``[(t, frame)]`` of the frames in ``[start, end)`` (and the last one before start, so the
    excerpt opens on the right picture), and the output frame rate."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    fps = min(MAX_FPS, rate) if rate > 0 else MAX_FPS
    _seek(container, stream, start)
    kept: list = []
    before = None
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * frame.time_base)
            if t < start:
                before = (t, frame)
                continue
            if t >= end:
                break
            kept.append((t, frame))
    except av_errors() as e:
        if not kept:  # a damaged stream: keep what came before the damage
            raise MediaError(
                f"{name}: cannot be decoded near {start:.2f} s ({_reason(e)})"
            ) from None
    on_screen = before is not None and (kept or start - before[0] <= 2.0 / fps)
    if on_screen and (not kept or kept[0][0] > start):
        kept.insert(0, before)  # the picture on screen at ``start``
    if not kept:
        raise MediaError(f"{name}: no picture between {start:.2f} and {end:.2f} s")
    return kept, fps


def av_errors() -> tuple[type[BaseException], ...]:
    import av

    return (av.FFmpegError, OSError)


def _sound(container, start: float, end: float):
    """The sound of ``[start, end)`` as one float32 (channels, samples) array at 48 kHz stereo,
    or None when it cannot be read (the excerpt then plays silent: sound is a bonus here)."""
    import av

    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48_000)
    chunks = []
    try:
        container.seek(int(start * av.time_base) if start > 0 else 0)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * frame.time_base)
            if t + frame.samples / max(frame.sample_rate, 1) < start:
                continue
            if t >= end:
                break
            for out in resampler.resample(frame):
                chunks.append((t, out.to_ndarray()))
    except av.FFmpegError:
        return None
    if not chunks:
        return None
    first_t = chunks[0][0]
    samples = np.concatenate([c for _, c in chunks], axis=1).astype(np.float32)
    skip = max(0, round((start - first_t) * 48_000))
    want = round((end - start) * 48_000)
    return samples[:, skip : skip + want]


def _encode(
    frames: list, fps: float, sound, start: float, end: float, *, max_side: int, rotation: int
) -> bytes:
    import av

    first = frames[0][1]
    width, height = first.width, first.height
    if rotation % 180 == 90:
        width, height = height, width
    scale = min(1.0, max_side / max(width, height))
    out_w = max(2, round(width * scale / 2) * 2)
    out_h = max(2, round(height * scale / 2) * 2)
    rate = Fraction(fps).limit_denominator(1001)
    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as out:
        vs = out.add_stream("libvpx", rate=rate)
        vs.width, vs.height, vs.pix_fmt = out_w, out_h, "yuv420p"
        vs.bit_rate = BIT_RATE
        vs.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        vs.codec_context.thread_count = 2
        as_ = None
        if sound is not None and sound.shape[1]:
            as_ = out.add_stream("libopus", rate=48_000)
            as_.layout = "stereo"
        count = max(1, math.ceil((end - start) * fps - 1e-6))
        j = 0
        for i in range(count):
            t = start + i / fps
            while j + 1 < len(frames) and frames[j + 1][0] <= t + 1e-6:
                j += 1
            picture = _oriented(frames[j][1], rotation, out_w, out_h)
            picture.pts = i
            picture.time_base = Fraction(1) / rate
            for packet in vs.encode(picture):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
        if as_ is not None:
            _encode_sound(out, as_, sound)
    return buf.getvalue()


def _oriented(frame, rotation: int, out_w: int, out_h: int):
    """A frame scaled to the output size (after turning it by ``rotation`` degrees)."""
    import av

    turn = rotation % 360
    if turn == 0:
        return frame.reformat(width=out_w, height=out_h, format="yuv420p")
    w, h = (out_h, out_w) if turn % 180 == 90 else (out_w, out_h)
    rgb = frame.to_ndarray(format="rgb24", width=w, height=h)
    rgb = np.ascontiguousarray(np.rot90(rgb, k=-(turn // 90)))  # clockwise, as players show it
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def _encode_sound(out, stream, sound) -> None:
    import av

    fifo = av.AudioFifo()
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(sound), format="fltp", layout="stereo")
    frame.sample_rate = 48_000
    frame.pts = 0
    frame.time_base = Fraction(1, 48_000)
    fifo.write(frame)
    size = stream.codec_context.frame_size or 960
    while fifo.samples >= size:
        for packet in stream.encode(fifo.read(size)):
            out.mux(packet)
    rest = fifo.read()
    if rest is not None:
        for packet in stream.encode(rest):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def duration_of(data: bytes) -> float:
    """The duration of an encoded excerpt, in seconds (read back by PyAV: for checks and tests)."""
    import av

    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.video[0]
        last = 0.0
        count = 0
        for frame in c.decode(stream):
            count += 1
            last = float(frame.pts * frame.time_base)
        rate = float(stream.average_rate or MAX_FPS)
    return last + 1.0 / rate if count else 0.0


__all__ = ["BIT_RATE", "MAX_FPS", "MAX_SECONDS", "duration_of", "excerpt"]
