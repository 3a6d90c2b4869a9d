"""Real videos with known shots, made from real images: the demo corpus and the tests' videos.

A made video is encoded for real (H.264 with libx264 or VP9 with libvpx, through PyAV) from
pictures composed on textured backgrounds, and every event in it is recorded in a :class:`Truth`:
hard cuts, dissolves, fades through black, camera flashes (a frame or two of light, not cuts)
and spans of fast camera motion (not cuts either). Shot detectors are measured against it
(benchmarks/video.py) and tested on it; nothing here is a recording of anyone's.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from snoop_nb.errors import UsageError

CODECS = {"h264": "libx264", "vp9": "libvpx-vp9"}


@dataclass
class Truth:
    """What a made video holds, in seconds of presentation time."""

    path: Path
    duration: float
    fps: float
    width: int
    height: int
    codec: str
    audio: bool
    shots: list[tuple[float, float]] = field(default_factory=list)
    cuts: list[float] = field(default_factory=list)
    gradual: list[tuple[float, float, str]] = field(default_factory=list)
    flashes: list[float] = field(default_factory=list)
    motion: list[tuple[float, float]] = field(default_factory=list)
    images: list[list[str]] = field(default_factory=list)  # the pictures of each shot

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = os.fsdecode(self.path)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Truth:
        d = dict(d)
        d["path"] = Path(d["path"])
        d["shots"] = [tuple(s) for s in d.get("shots", [])]
        d["gradual"] = [(float(a), float(b), str(k)) for a, b, k in d.get("gradual", [])]
        d["motion"] = [tuple(m) for m in d.get("motion", [])]
        return cls(**d)

    @property
    def boundaries(self) -> list[float]:
        """Every shot's start but the first."""
        return [s for s, _ in self.shots[1:]]


def _rgb(image: Any, box: int):
    """A picture as an RGBA PIL image fitting in ``box`` pixels."""
    from PIL import Image

    from snoop_nb.media import load_image

    if isinstance(image, Image.Image):
        im = image.convert("RGBA")
    else:
        try:
            im = Image.open(image)
            im.load()
            im = im.convert("RGBA")
        except Exception:  # SVG and the like: the project's decoder knows them
            im = load_image(image).convert("RGBA")
    im.thumbnail((box, box))
    return im


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A gradient between two random colours with a fixed grain texture (so motion shows)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.random() * 2 * np.pi
    a = x / w * np.cos(angle) + y / h * np.sin(angle)
    a = (a - a.min()) / (np.ptp(a) + 1e-6)
    c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    img = c1[None, None] * (1 - a[..., None]) + c2[None, None] * a[..., None]
    img += rng.normal(0, 14, (h, w, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def _scene(rng, pictures, w: int, h: int, margin: int):
    """A shot's canvas, larger than the frame by ``margin`` (the camera moves within it)."""
    from PIL import Image

    canvas = Image.fromarray(_background(rng, w + 2 * margin, h + 2 * margin))
    box = max(48, min(w, h) // 2)
    for pic in pictures:
        im = _rgb(pic, box)
        x = int(rng.integers(0, max(1, canvas.width - im.width)))
        y = int(rng.integers(0, max(1, canvas.height - im.height)))
        canvas.paste(im, (x, y), im)
    return np.asarray(canvas.convert("RGB"))


def _even(n: int) -> int:
    return max(2, n - n % 2)


def make_video(
    path: str | os.PathLike,
    images: Sequence[Any],
    *,
    seconds: float = 30.0,
    size: tuple[int, int] = (720, 576),
    fps: float = 25.0,
    codec: str = "h264",
    audio: bool = False,
    seed: int = 0,
    gradual: float = 0.4,
    flashes: int = 2,
    motion: bool = True,
    shot_seconds: tuple[float, float] = (2.0, 6.0),
    vfr: bool = False,
    rotation: int = 0,
    interlaced: bool = False,
    pictures_per_shot: int = 2,
) -> Truth:
    """Encode a video of ``seconds`` made of shots of ``images`` and return what it holds.

    Shots last ``shot_seconds`` (a random range); each starts with a hard cut, or with a
    dissolve or a fade through black (``gradual`` of them, 0.5 to 1.2 s long); the camera pans
    slowly in every shot and, if ``motion``, fast in one; ``flashes`` single bright frames fall
    inside shots. ``size`` is rounded down to even numbers (4:2:0 video needs them). ``vfr``
    jitters the frame times (variable frame rate, in a container that keeps them: mp4/mkv);
    ``rotation`` writes display-rotation metadata (players turn the picture clockwise);
    ``interlaced`` weaves the fields of two instants and flags the stream interlaced (H.264).
    """

    if codec not in CODECS:
        raise UsageError(f"codec must be one of {', '.join(CODECS)}")
    if not images:
        raise UsageError("make_video needs at least one image")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = _even(int(size[0])), _even(int(size[1]))
    total = max(1, round(seconds * fps))
    margin = max(16, min(w, h) // 5)
    truth = Truth(path, total / fps, float(fps), w, h, codec, bool(audio))
    frames: list[np.ndarray] = []
    previous: np.ndarray | None = None
    fast_done = not motion
    order = list(range(len(images)))
    rng.shuffle(order)
    cursor = 0
    while len(frames) < total:
        n = round(rng.uniform(*shot_seconds) * fps)
        picks = []
        for _ in range(pictures_per_shot):
            picks.append(images[order[cursor % len(order)]])
            cursor += 1
        canvas = _scene(rng, picks, w, h, margin)
        speed = rng.uniform(-1.5, 1.5, 2)
        fast = not fast_done and n >= 2 * fps and rng.random() < 0.5
        if fast:
            speed = np.sign(speed + 1e-3) * rng.uniform(6, 9, 2)
            fast_done = True
        shot = []
        for i in range(n):
            x = int(np.clip(margin + speed[0] * i, 0, 2 * margin))
            y = int(np.clip(margin + speed[1] * i, 0, 2 * margin))
            shot.append(canvas[y : y + h, x : x + w])
        start = len(frames)
        if previous is not None:
            kind = "cut" if rng.random() >= gradual else str(rng.choice(["dissolve", "fade"]))
            if kind == "cut":
                truth.cuts.append(start / fps)
            else:
                length = round(rng.uniform(0.5, 1.2) * fps)
                for j in range(length):
                    a = (j + 1) / (length + 1)
                    if kind == "dissolve":
                        f = previous * (1 - a) + shot[0] * a
                    else:
                        f = previous * max(0.0, 1 - 2 * a) if a < 0.5 else shot[0] * (2 * a - 1)
                    frames.append(f.astype(np.uint8))
                truth.gradual.append((start / fps, len(frames) / fps, kind))
            # the shot begins where its transition ends; a shot boundary is the transition's
            # middle for a gradual one
            middle = (start + len(frames)) / 2 / fps
            truth.shots[-1] = (truth.shots[-1][0], middle)
            truth.shots.append((middle, 0.0))
        else:
            truth.shots.append((0.0, 0.0))
        if fast:
            truth.motion.append((len(frames) / fps, (len(frames) + n) / fps))
        frames.extend(shot)
        truth.images.append(
            [os.fsdecode(p) if not hasattr(p, "size") else "<image>" for p in picks]
        )
        previous = shot[-1].astype(np.float32)
    frames = frames[:total]
    truth.shots[-1] = (truth.shots[-1][0], total / fps)
    truth.shots = [(float(a), float(b)) for a, b in truth.shots if a < total / fps]
    truth.cuts = [c for c in truth.cuts if c < total / fps]
    truth.gradual = [g for g in truth.gradual if g[0] < total / fps]
    _add_flashes(frames, truth, rng, flashes, fps)
    times = np.arange(len(frames)) / fps
    if vfr:  # irregular frame durations (0.6 to 1.4 of the nominal one), in milliseconds
        steps = rng.uniform(0.6, 1.4, len(frames)) / fps
        times = np.round(np.concatenate([[0.0], np.cumsum(steps)[:-1]]) * 1000) / 1000
        _retime(truth, times, fps)
    _encode(path, frames, times, truth, codec, fps, audio, vfr, rotation, interlaced)
    return truth


def _retime(truth: Truth, times: np.ndarray, fps: float) -> None:
    """Move the truth from nominal times (frame / fps) to the frames' real times."""

    def at(x: float) -> float:
        i = x * fps
        lo = int(np.clip(np.floor(i), 0, len(times) - 1))
        hi = min(lo + 1, len(times) - 1)
        end = times[-1] + 1 / fps
        nxt = times[hi] if hi > lo else end
        return float(times[lo] + (nxt - times[lo]) * (i - lo)) if i < len(times) else float(end)

    truth.shots = [(at(a), at(b)) for a, b in truth.shots]
    truth.cuts = [at(c) for c in truth.cuts]
    truth.gradual = [(at(a), at(b), k) for a, b, k in truth.gradual]
    truth.flashes = [at(f) for f in truth.flashes]
    truth.motion = [(at(a), at(b)) for a, b in truth.motion]
    truth.duration = at(len(times) / fps)


def _add_flashes(frames, truth: Truth, rng, count: int, fps: float) -> None:
    """Brighten single frames well inside shots (away from transitions)."""
    busy = [(c - 1.0, c + 1.0) for c in truth.cuts] + [
        (a - 1.0, b + 1.0) for a, b, _ in truth.gradual
    ]
    tries = 0
    while len(truth.flashes) < count and tries < 200:
        tries += 1
        i = int(rng.integers(int(fps), max(int(fps) + 1, len(frames) - int(fps))))
        t = i / fps
        if any(a <= t <= b for a, b in busy):
            continue
        frames[i] = np.clip(frames[i].astype(np.int16) + 170, 0, 255).astype(np.uint8)
        truth.flashes.append(t)
        busy.append((t - 1.0, t + 1.0))
    truth.flashes.sort()


def _encode(path, frames, times, truth, codec, fps, audio, vfr, rotation, interlaced) -> None:
    import av

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(os.fspath(path), "w") as out:
        vs = out.add_stream(CODECS[codec], rate=rate)
        vs.width, vs.height, vs.pix_fmt = truth.width, truth.height, "yuv420p"
        if codec == "h264":
            opts = {"preset": "veryfast", "crf": "23"}
            if interlaced:
                opts["x264-params"] = "interlaced=1:tff=1"
            vs.options = opts
        else:
            vs.options = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
            vs.bit_rate = 2_000_000
        if vfr:
            vs.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            vs.set_display_rotation(-float(rotation))  # ffmpeg's matrix turns counter-clockwise
        a_stream = None
        if audio:
            a_stream = out.add_stream("aac" if codec == "h264" else "libopus", rate=48_000)
            a_stream.layout = "stereo"
        for i, f in enumerate(frames):
            if interlaced and i + 1 < len(frames):
                f = f.copy()
                f[1::2] = frames[i + 1][1::2]  # the bottom field is half a frame later
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            if vfr:
                vf.pts = round(float(times[i]) * 1000)
                vf.time_base = Fraction(1, 1000)
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if a_stream is not None:
            _tone(out, a_stream, truth.duration)


def _tone(out, stream, seconds: float) -> None:
    """A quiet two-tone sound track."""
    import av

    n = int(48_000 * seconds)
    t = np.arange(n) / 48_000
    wave = (0.1 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 660 * t)).astype(
        np.float32
    )
    frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
    frame.sample_rate, frame.pts = 48_000, 0
    fifo = av.AudioFifo()
    fifo.write(frame)
    size = stream.codec_context.frame_size or 1024
    while fifo.samples >= size:
        for p in stream.encode(fifo.read(size)):
            out.mux(p)
    for p in stream.encode():
        out.mux(p)


#: The demo corpus: file, codec, size, sound, topic folders, channel, broadcast date, title.
DEMO_PROGRAMMES = (
    (
        "birds.mp4",
        "h264",
        (720, 576),
        True,
        ("animals/birds",),
        "Canal Démo 1",
        "2024-03-04T20:30:00",
        "Birds of the garden",
    ),
    (
        "vehicles.webm",
        "vp9",
        (1280, 720),
        False,
        ("vehicles",),
        "Canal Démo 2",
        "2024-05-17T19:00:00",
        "Cars, trains and boats",
    ),
    (
        "food.mp4",
        "h264",
        (720, 576),
        False,
        ("food",),
        "Canal Démo 1",
        "2024-09-02T12:15:00",
        "What's for lunch",
    ),
    (
        "sea.webm",
        "vp9",
        (720, 576),
        True,
        ("animals/fish", "animals/shellfish"),
        "Canal Démo 3",
        "2025-01-20T18:45:00",
        "Under the sea",
    ),
    (
        "mammals.mp4",
        "h264",
        (1280, 720),
        True,
        ("animals/mammals",),
        "Canal Démo 2",
        "2025-04-11T21:00:00",
        "Mammals",
    ),
    (
        "mixed.mp4",
        "h264",
        (720, 576),
        False,
        ("animals/birds", "vehicles", "food"),
        "Canal Démo 3",
        "2025-06-30T20:00:00",
        "Magazine: birds, cars and food",
    ),
)


def _images_under(root: Path, folder: str) -> list[Path]:
    found = sorted(
        p for p in (root / folder).rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"}
    )
    return found or sorted(p for p in root.rglob("*") if p.suffix.lower() in {".png", ".jpg"})


def make_corpus(
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    n: int = 6,
    seconds: float = 30.0,
    seed: int = 0,
) -> list[Truth]:
    """The demo video corpus made from the pictures under ``images_dir`` (see
    :data:`DEMO_PROGRAMMES`): videos, ``videos.csv`` (file, channel, date, title: made up) and
    ``truth.json``. Idempotent: returns the recorded truth when every file is already there."""
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    programmes = DEMO_PROGRAMMES[: max(1, min(n, len(DEMO_PROGRAMMES)))]
    truth_file = out_dir / "truth.json"
    if truth_file.is_file() and all((out_dir / p[0]).is_file() for p in programmes):
        recorded = [Truth.from_dict(d) for d in json.loads(truth_file.read_text())]
        if len(recorded) == len(programmes):
            return recorded
    out_dir.mkdir(parents=True, exist_ok=True)
    truths = []
    rows = []
    for k, (name, codec, size, sound, folders, channel, date, title) in enumerate(programmes):
        pictures: list[Path] = []
        for folder in folders:
            pictures += _images_under(images_dir, folder)
        if not pictures:
            raise UsageError(f"no pictures under {images_dir} to make the demo videos from")
        tmp = out_dir / f".{name}.part{Path(name).suffix}"
        truth = make_video(
            tmp,
            pictures,
            seconds=seconds,
            size=size,
            codec=codec,
            audio=sound,
            seed=seed + k,
        )
        os.replace(tmp, out_dir / name)
        truth.path = out_dir / name
        truths.append(truth)
        rows.append({"file": name, "channel": channel, "date": date, "title": title})
    with open(out_dir / "videos.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "channel", "date", "title"])
        writer.writeheader()
        writer.writerows(rows)
    tmp = truth_file.with_suffix(".part")
    tmp.write_text(json.dumps([t.to_dict() for t in truths], indent=1))
    os.replace(tmp, truth_file)
    return truths


__all__ = ["CODECS", "DEMO_PROGRAMMES", "Truth", "make_corpus", "make_video"]
