"""Benchmark remote sources: IIIF pictures fetched at the model's size versus the same files read
locally, and the fetcher's throughput under its per-host rate limit.

    python benchmarks/sources.py                       # demo, emoji and photographs
    python benchmarks/sources.py --quick               # a smoke run, < 1 min

For each set, the pictures are served by a local ``ThreadingHTTPServer`` (no network) as a
static level-0 IIIF Image API 3 tree (``info.json`` listing the full size and its halvings,
files at ``full/{w},{h}/0/default.jpg``; transparent pictures flattened on white as the
decoder does) under one Presentation 3 manifest. The same files are indexed twice with the
default model, from their folder and from the manifest's URL (``rate 0``: no limit, 4 fetch
threads), then the manifest once more (all cached: requests must be 0). Reported:

- ``local s`` / ``iiif s``: indexing time from the folder / from the manifest (fetch + embed);
- ``requests``, ``MB fetched`` against ``MB files``: what the fetcher asked for and received
  (the smallest listed size whose short side is at least the model's 256 px);
- ``again s`` / ``again req``: the second run over the manifest;
- ``cos mean`` / ``cos min``: cosine similarity of each picture's two vectors (local, fetched);
- ``P@10 local`` / ``P@10 iiif``: leave-one-out nearest-neighbour precision at 10 by category
  (sets with categories), whether fetching at the model's size costs retrieval quality.

Parts: the manifest indexed at ``--parts-rate`` requests per second (a polite rate for a
real server), fetched whole before embedding (one part) and in parts of ``--part`` pictures
(each embedded while the next is fetched): when the first picture is searchable (committed)
and when the last is, seconds from the start.

Throughput: ``--throughput N`` pictures fetched (no cache) from the server at each of
``--rates`` requests per second (0: no limit) with 4 threads: pictures per second, against the
limit.

Sets: ``demo`` (``data/demo/stamps``, at most ``--per-class`` per category), ``emoji``
(``data/bench/emoji`` if built: its labelled categories, at most ``--per-class`` each) and
``photos`` (scikit-image's colour photographs at their own size, 300-1,400 px: no categories).
"""

from __future__ import annotations

import argparse
import contextlib
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
from datasets import DEMO_STAMPS, EMOJI_DIR, demo_set

from snoop_nb.sources.publish import StaticServer, _flat, publish_level0

RESULTS = Path(__file__).resolve().parent / "results" / "sources.json"
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
)


def precision_at(vectors: np.ndarray, cats: list[str | None], k: int = 10) -> float:
    """Leave-one-out nearest-neighbour precision at ``k``, over the items with a category."""
    v = vectors.astype(np.float32)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    labels = np.array([c or "" for c in cats])
    scores = []
    for i, c in enumerate(cats):
        if not c:
            continue
        top = np.argpartition(-sims[i], k)[:k]
        scores.append(float(np.mean(labels[top] == c)))
    return float(np.mean(scores)) if scores else float("nan")


def the_sets(args: argparse.Namespace, work: Path) -> dict[str, list[tuple[str, Path, str | None]]]:
    rng = np.random.default_rng(0)
    out: dict[str, list[tuple[str, Path, str | None]]] = {}

    def capped(items):
        by: dict[str, list] = {}
        for it in items:
            by.setdefault(it.category, []).append(it)
        chosen = []
        for cat in sorted(by):
            group = by[cat]
            pick = rng.permutation(len(group))[: args.per_class]
            chosen += [group[j] for j in sorted(pick)]
        return chosen

    if DEMO_STAMPS.is_dir():
        out["demo"] = [
            (str(it.path.relative_to(DEMO_STAMPS)), it.path, it.category)
            for it in capped(demo_set())
        ]
    if EMOJI_DIR.is_dir():
        files = sorted(p for p in EMOJI_DIR.rglob("*.png") if p.parent.name != "_distractors")
        from datasets import Item

        items = [Item(p, p.parent.name) for p in files]
        out["emoji"] = [
            (str(it.path.relative_to(EMOJI_DIR)), it.path, it.category) for it in capped(items)
        ]
    from PIL import Image
    from skimage import data as sk

    folder = work / "photos-src"
    folder.mkdir()
    photos = []
    for name in PHOTOS:
        try:
            arr = getattr(sk, name)()
        except (AttributeError, ImportError, OSError):  # not shipped with this scikit-image
            continue
        arr = arr[0] if isinstance(arr, tuple) else arr  # stereo_motorcycle: (left, right, d)
        if arr.ndim != 3:
            continue
        path = folder / f"{name}.png"
        Image.fromarray(arr).convert("RGB").save(path)
        photos.append((path.name, path, None))
    out["photos"] = photos
    return out


def run_set(name: str, items, work: Path, embedder) -> dict[str, Any]:
    from snoop_nb import open_collection

    src = work / f"{name}-files"
    for rel, path, _ in items:  # a folder of exactly these files
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    site = work / f"{name}-site"
    site.mkdir()
    server = StaticServer(site)
    try:
        rels = [rel for rel, _, _ in items]
        url = publish_level0(
            [src / r for r in rels], site, server.base, label=name, canvas_labels=rels
        )
        row: dict[str, Any] = {"set": name, "items": len(items)}
        with open_collection(work / f"{name}-local", create=True, embedder=embedder) as col:
            t = time.perf_counter()
            rep = col.add([src], progress=False)
            row["local s"] = time.perf_counter() - t
            local = col.items()
            local_vec = col.vectors_of(local["id"])
            by_rel = {str(Path(u).relative_to(src)): i for i, u in enumerate(local["uri"])}
            assert not rep.errors, rep.errors
        with open_collection(work / f"{name}-iiif", create=True, embedder=embedder) as col:
            server.requests = 0
            t = time.perf_counter()
            rep = col.add([url], progress=False, fetch={"rate": 0})
            row["iiif s"] = time.perf_counter() - t
            assert not rep.errors, rep.errors
            row["requests"] = server.requests
            cache = col.root / "remote"
            row["MB fetched"] = sum(p.stat().st_size for p in cache.rglob("*.jpg")) / 1e6
            row["MB files"] = sum((src / rel).stat().st_size for rel, _, _ in items) / 1e6
            remote = col.items()
            remote_vec = col.vectors_of(remote["id"])
            server.requests = 0
            t = time.perf_counter()
            again = col.add([url], progress=False)
            row["again s"] = time.perf_counter() - t
            row["again req"] = server.requests
            assert again.added == 0 and again.skipped == len(items)
        order = [by_rel[r] for r in remote["canvas_label"]]
        a = local_vec[order].astype(np.float32)
        b = remote_vec.astype(np.float32)
        cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        row["cos mean"] = float(cos.mean())
        row["cos min"] = float(cos.min())
        cats = {rel: c for rel, _, c in items}
        if any(cats.values()):
            labels = [cats[r] for r in remote["canvas_label"]]
            row["P@10 local"] = precision_at(a, labels)
            row["P@10 iiif"] = precision_at(b, labels)
        return row
    finally:
        server.close()


def parts_timing(name: str, items, work: Path, embedder, rate: float, part: int) -> list[dict]:
    import sqlite3

    from snoop_nb import open_collection

    src = work / f"{name}-files"  # made by run_set
    site = work / f"{name}-parts-site"
    site.mkdir()
    server = StaticServer(site)
    rows = []
    try:
        rels = [rel for rel, _, _ in items]
        url = publish_level0([src / r for r in rels], site, server.base, canvas_labels=rels)
        for size in (len(items), part):
            root = work / f"{name}-parts-{size}"
            with open_collection(root, create=True, embedder=embedder) as col:
                t0 = time.time()
                rep = col.add([url], progress=False, fetch={"rate": rate, "part": size})
                took = time.time() - t0
                assert not rep.errors and rep.added == len(items), rep
            with contextlib.closing(sqlite3.connect(root / "catalog.sqlite")) as db:
                (first,) = db.execute("SELECT min(added) FROM items").fetchone()
            rows.append(
                {
                    "set": name,
                    "items": len(items),
                    "rate/s": rate,
                    "part": "all at once" if size == len(items) else size,
                    "first searchable s": first - t0,
                    "all searchable s": took,
                }
            )
    finally:
        server.close()
    return rows


def throughput(n: int, rates: list[float], work: Path) -> list[dict[str, Any]]:
    from PIL import Image

    from snoop_nb.sources import Fetcher
    from snoop_nb.sources.fetch import Job

    site = work / "throughput"
    site.mkdir()
    files = sorted(DEMO_STAMPS.rglob("*.png"))[:n] if DEMO_STAMPS.is_dir() else []
    if not files:
        arr = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
        Image.fromarray(arr).save(site / "x.jpg")
    else:
        for i, f in enumerate(files):
            _flat(Image.open(f)).save(site / f"{i}.jpg", quality=90)
    names = sorted(p.name for p in site.iterdir())
    server = StaticServer(site)
    rows = []
    try:
        for rate in rates:
            fetcher = Fetcher(work / f"cache-{rate:g}", rate=rate, workers=4)
            jobs = [Job(f"{server.base}/{names[i % len(names)]}?n={i}") for i in range(n)]
            t = time.perf_counter()
            got = list(fetcher.fetch_many(jobs))
            took = time.perf_counter() - t
            fetcher.close()
            ok = sum(1 for _, p, _ in got if p is not None)
            rows.append(
                {
                    "rate": rate or "none",
                    "pictures": n,
                    "ok": ok,
                    "seconds": took,
                    "pictures/s": ok / took,
                    "limit/s": rate or None,
                }
            )
    finally:
        server.close()
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--per-class", type=int, default=20, help="pictures per category (20)")
    p.add_argument("--sets", default="demo,emoji,photos")
    p.add_argument("--throughput", type=int, default=100, help="pictures per rate (100)")
    p.add_argument("--rates", default="5,20,0", help="requests/s to measure (0: no limit)")
    p.add_argument("--quick", action="store_true", help="5 per class, 20 pictures per rate")
    p.add_argument("--parts-rate", type=float, default=20.0, help="requests/s for parts (20)")
    p.add_argument("--part", type=int, default=64, help="pictures per part (64)")
    p.add_argument("--json", default=str(RESULTS))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        args.per_class, args.throughput = 5, 20
    from snoop_nb.embed import load_embedder

    embedder = load_embedder(device="cpu")
    rows, parts = [], []
    with tempfile.TemporaryDirectory(prefix="snoop-bench-sources-") as tmp:
        work = Path(tmp)
        sets = the_sets(args, work)
        for name in args.sets.split(","):
            if name in sets:
                rows.append(run_set(name, sets[name], work, embedder))
                parts += parts_timing(name, sets[name], work, embedder, args.parts_rate, args.part)
                print(f"{name}: done", file=sys.stderr)
        rates = [float(r) for r in args.rates.split(",")]
        speed = throughput(args.throughput, rates, work)
    cols = ["set", "items", "local s", "iiif s", "requests", "MB fetched", "MB files"]
    cols += ["again s", "again req", "cos mean", "cos min", "P@10 local", "P@10 iiif"]
    print(format_table(rows, cols))
    print()
    print(
        format_table(
            parts, ["set", "items", "rate/s", "part", "first searchable s", "all searchable s"]
        )
    )
    print()
    print(format_table(speed, ["rate", "pictures", "ok", "seconds", "pictures/s", "limit/s"]))
    payload = {
        "sets": rows,
        "parts": parts,
        "throughput": speed,
        "options": vars(args),
        "machine": machine_info(("numpy", "torch", "requests", "urllib3", "Pillow")),
    }
    with contextlib.suppress(OSError):
        print(f"wrote {write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
