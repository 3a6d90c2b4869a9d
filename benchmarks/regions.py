"""Benchmark region queries: small objects pasted into scenes, found from the object alone.

    python benchmarks/regions.py                 # demo stamps and emoji, into photographs
    python benchmarks/regions.py --quick         # a smoke run

Each set: ``--objects`` pictures with transparency (demo stamps, or Noto emoji when
``data/bench/emoji`` is built) are pasted, each into ``--per-object`` scenes, at a random place
and a random width of 15-30 % of the scene's (the issue's "small"); the scenes are random
crops, 480 x 360, of scikit-image's colour photographs. The corpus is those scenes, as many
scenes with nothing pasted, and ``--distractors`` other pictures of the set (on white). The
query is the object alone (on white); the relevant items are the scenes it was pasted into.
Measured with the offline default model: recall@10, recall@50 and mean average precision over
the queries, (a) global vectors only (``regions=False``), (b) with the regions indexed
(:mod:`snoop_nb.regions`: 9 windows per picture), and what the regions cost (windows per
picture, build time, the store's size). Writes ``benchmarks/results/regions.json``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import format_table, machine_info, write_json
from datasets import DEMO_STAMPS, EMOJI_DIR

RESULTS = Path(__file__).resolve().parent / "results" / "regions.json"
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "stereo_motorcycle",
    "colorwheel",
    "logo",
    "cat",
    "motorcycle_left",
    "motorcycle_right",
)
SCENE = (480, 360)
SMALL = (0.15, 0.30)


def _photos():
    from PIL import Image
    from skimage import data

    out = []
    for name in PHOTOS:
        fn = getattr(data, name, None)
        if fn is None:
            continue
        a = fn()
        if isinstance(a, tuple):
            a = a[0]
        if a.ndim != 3:
            continue
        im = Image.fromarray(a[..., :3]).convert("RGB")
        if min(im.size) >= 200:
            out.append(im)
    return out


def _scene(rng, photos):
    from PIL import Image

    im = photos[int(rng.integers(len(photos)))]
    scale = rng.uniform(0.5, 1.0)
    w = int(min(im.width, im.height * SCENE[0] / SCENE[1]) * scale)
    h = int(w * SCENE[1] / SCENE[0])
    x, y = int(rng.integers(0, im.width - w + 1)), int(rng.integers(0, im.height - h + 1))
    return im.crop((x, y, x + w, y + h)).resize(SCENE, Image.Resampling.BILINEAR)


def _on_white(im):
    from PIL import Image

    rgba = im.convert("RGBA")
    out = Image.new("RGB", rgba.size, "white")
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _objects(name: str):
    if name == "demo":
        return sorted(DEMO_STAMPS.rglob("*.png"))
    return sorted(p for p in EMOJI_DIR.rglob("*.png") if "_distractors" not in p.parts)


def build_set(name: str, args, work: Path, rng) -> tuple[Path, dict[str, list[str]], list[Path]]:
    """The corpus folder, {query file: [relevant scene files]}, the query files."""
    from PIL import Image

    files = _objects(name)
    pick = rng.permutation(len(files))
    objects = [files[i] for i in pick[: args.objects]]
    others = [files[i] for i in pick[args.objects : args.objects + args.distractors]]
    photos = _photos()
    corpus = work / name / "corpus"
    queries = work / name / "queries"
    corpus.mkdir(parents=True)
    queries.mkdir(parents=True)
    relevant: dict[str, list[str]] = {}
    for qi, path in enumerate(objects):
        obj = Image.open(path).convert("RGBA")
        bbox = obj.getchannel("A").getbbox() or (0, 0, obj.width, obj.height)
        obj = obj.crop(bbox)
        q = queries / f"q{qi:03d}.png"
        _on_white(obj).save(q)
        relevant[str(q)] = []
        for j in range(args.per_object):
            scene = _scene(rng, photos)
            w = int(SCENE[0] * rng.uniform(*SMALL))
            h = max(1, int(w * obj.height / obj.width))
            if h > SCENE[1] * 0.6:
                h = int(SCENE[1] * 0.6)
                w = max(1, int(h * obj.width / obj.height))
            small = obj.resize((w, h), Image.Resampling.LANCZOS)
            x = int(rng.integers(0, SCENE[0] - w + 1))
            y = int(rng.integers(0, SCENE[1] - h + 1))
            scene.paste(small, (x, y), small)
            f = corpus / f"scene_{qi:03d}_{j}.jpg"
            scene.save(f, quality=90)
            relevant[str(q)].append(str(f))
    for j in range(args.objects * args.per_object):  # as many scenes with nothing pasted
        _scene(rng, photos).save(corpus / f"plain_{j:03d}.jpg", quality=90)
    for j, path in enumerate(others):
        _on_white(Image.open(path)).save(corpus / f"other_{j:03d}.png")
    return corpus, relevant, sorted(Path(q) for q in relevant)


def _metrics(col, relevant, queries, regions: bool, k: int) -> dict[str, float]:
    r10, r50, aps = [], [], []
    for q in queries:
        rel = set(relevant[str(q)])
        df = col.search(image=str(q), k=k, expand=False, regions=regions)
        hit = np.array([u in rel for u in df["uri"]])
        r10.append(hit[:10].sum() / len(rel))
        r50.append(hit[:50].sum() / len(rel))
        ranks = np.flatnonzero(hit) + 1
        # average precision over the relevant items (those not in the first k count 0)
        aps.append(float(np.sum(np.arange(1, len(ranks) + 1) / ranks)) / len(rel))
    return {"recall@10": np.mean(r10), "recall@50": np.mean(r50), "mAP": np.mean(aps)}


def run_set(name: str, args, work: Path, embedder) -> list[dict[str, Any]]:
    from snoop_nb import open_collection
    from snoop_nb.regions import REGIONS_FILE

    rng = np.random.default_rng([args.seed, len(name)])
    corpus, relevant, queries = build_set(name, args, work, rng)
    col = open_collection(work / name / "col", create=True, embedder=embedder)
    with col:
        t0 = time.perf_counter()
        col.add([corpus], progress=False)
        add_s = time.perf_counter() - t0
        k = min(len(col), max(args.k, 50))
        rows = []
        glob = _metrics(col, relevant, queries, False, k)
        rows.append({"set": name, "method": "global vectors", **glob, "items": len(col)})
        t0 = time.perf_counter()
        report = col.index_regions(progress=False, scales=args.scales)
        reg_s = time.perf_counter() - t0
        reg = _metrics(col, relevant, queries, True, k)
        size = sum(f.stat().st_size for f in col.root.glob(REGIONS_FILE + "*"))  # with its WAL
        rows.append(
            {
                "set": name,
                "method": "global + regions",
                **reg,
                "items": len(col),
                "windows/picture": report["regions"] / max(report["items"], 1),
                "index s": add_s,
                "regions s": reg_s,
                "regions MB": size / 1e6,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", default="demo,emoji")
    p.add_argument("--objects", type=int, default=30)
    p.add_argument("--per-object", type=int, default=3)
    p.add_argument("--distractors", type=int, default=200)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--scales",
        type=lambda t: tuple(float(x) for x in t.split(",")),
        default=(0.5,),
        help="window sizes, fractions of the picture (default 0.5: 9 windows)",
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.objects, args.distractors = 8, 30
    from snoop_nb.embed import load_embedder

    embedder = load_embedder()
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="snoop-bench-regions-"))
    try:
        for name in args.sets.split(","):
            if name == "emoji" and not EMOJI_DIR.is_dir():
                print("emoji: skipped (data/bench/emoji not built: benchmarks/datasets.py)")
                continue
            if name == "demo" and not DEMO_STAMPS.is_dir():
                raise SystemExit("no demo corpus: run `make demo-collection` first")
            rows.extend(run_set(name, args, work, embedder))
            print(f"{name}: done", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cols = ["set", "method", "items", "recall@10", "recall@50", "mAP", "windows/picture"]
    cols += ["index s", "regions s", "regions MB"]
    print(format_table(rows, cols))
    payload = {"machine": machine_info(("numpy", "torch", "onnxruntime")), "args": vars(args)}
    payload["rows"] = rows
    print(f"wrote {write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
