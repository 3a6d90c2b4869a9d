"""The visual map: layout time and quality, and frame time in the browser at 100k points.

Layout (``snoop_nb.vmap``: UMAP, cosine, fitted on at most ``--sample`` items after PCA to 50
dims, the rest placed among them) on the demo collection (796 stamps, 16 categories), on a
second set (``--second``: the emoji set, 1,644 pictures embedded with the default model, or
``skimage``: none), and on ``--points`` synthetic items drawn around the demo's vectors (each a
demo vector plus Gaussian noise, renormalised, so they keep the demo's neighbourhoods).
Quality: sklearn's trustworthiness (Venna & Kaski; 1 = no false neighbours on the map) with
10 neighbours, on at most 2,000 items, the share of each item's 10 nearest neighbours in the
vector space that are among its 10 nearest on the map (kNN preservation), and the share of its
10 nearest on the map of its own category; each beside a 2D PCA of the same vectors.

Browser: `snoop dashboard` on the synthetic collection, the Map tab opened in headless Debian
Chromium (no GPU); time to first draw (tab click to the canvas's first frame with every
point), then ``--seconds`` of zoom (wheel) and pan (drags) driven through Playwright while the
page records requestAnimationFrame intervals and the draw time of each frame.

    python benchmarks/vmap.py                    # the full run (about 5 min on 2 cores)
    python benchmarks/vmap.py --quick            # 20k points, no second set
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import format_table, machine_info, write_json

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo" / "collection"
K = 10


def quality(col, m, seed: int = 0, most: int = 2000) -> dict:
    """Trustworthiness, kNN preservation and category agreement of map ``m`` (and of PCA 2D)."""
    from sklearn.manifold import trustworthiness

    rng = np.random.default_rng(seed)
    ids = m.ids if len(m) <= most else np.sort(rng.choice(m.ids, most, replace=False))
    x = col.vectors_of(ids)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    layouts = {"map": m.positions(ids), "pca2d": centred @ vt[:2].T}
    items = col.items(ids.tolist()).set_index("id")
    cat = items["category"].reindex(ids).to_numpy() if "category" in items else None
    near_x = _knn(-(x @ x.T))
    out = {"n": int(ids.size)}
    for name, y in layouts.items():
        near_y = _knn(((y[:, None, :] - y[None, :, :]) ** 2).sum(-1))
        out[f"trust_{name}"] = float(trustworthiness(x, y, n_neighbors=K, metric="cosine"))
        out[f"knn_{name}"] = float(np.mean([len(set(a) & set(b)) / K for a, b in
                                            zip(near_x, near_y, strict=True)]))  # fmt: skip
        if cat is not None:
            known = np.array([c is not None and c == c for c in cat])
            agree = cat[near_y] == cat[:, None]
            out[f"cat_{name}"] = float(agree[known].mean())
    if cat is not None:
        known = np.array([c is not None and c == c for c in cat])
        out["cat_vectors"] = float((cat[near_x] == cat[:, None])[known].mean())
    return out


def _knn(d: np.ndarray) -> np.ndarray:
    d = d.astype(np.float64, copy=True)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1)[:, :K]


def layout_row(name: str, col, sample: int) -> dict:
    from snoop_nb.vmap import load_map, map_path, visual_map

    t0 = time.perf_counter()
    m = visual_map(col, sample=sample, rebuild=True)  # built and saved
    build_s = time.perf_counter() - t0
    path = map_path(col, sample=sample)
    t0 = time.perf_counter()
    again = load_map(col, sample=sample)
    reopen_ms = (time.perf_counter() - t0) * 1000
    assert again is not None and len(again) == len(m)
    row = {
        "set": name,
        "items": len(m),
        "fitted": int(m.fitted.size),
        "layout_s": round(build_s, 2),
        "reopen_ms": round(reopen_ms, 1),
        "cache_mb": round(path.stat().st_size / 1e6, 2),
    }
    row.update(quality(col, m))
    return row


def synthetic(dest: Path, n: int, seed: int = 0):
    """``n`` items drawn around the demo's vectors, with their source's category."""
    from snoop_nb import open_collection

    col = open_collection(dest, create=True, embedder=_DemoEmbedder())
    with open_collection(DEMO) as demo:
        ids = demo.ok_ids()
        base = demo.vectors_of(ids)
        cats = demo.items(ids.tolist()).set_index("id").loc[ids, "category"].to_numpy()
    rng = np.random.default_rng(seed)
    for start in range(0, n, 20_000):
        m = min(20_000, n - start)
        src = rng.integers(0, len(ids), m)
        v = base[src] + rng.normal(0, 0.02, (m, base.shape[1])).astype(np.float32)
        uris = [f"/synthetic/{start + i}.png" for i in range(m)]
        meta = [{"category": str(cats[s])} for s in src]
        col.add_vectors(uris, v, meta, update_index=False)
    return col


class _DemoEmbedder:
    """Stands in for the demo's embedder when making a collection of its vectors: the same id
    and dimension (nothing is ever embedded)."""

    def __init__(self):
        import json

        spec = json.loads((DEMO / "manifest.json").read_text())["embedder"]
        self.id, self.dim, self._spec = spec["id"], int(spec["dim"]), spec

    def describe(self):
        return dict(self._spec)


# Started and left running (not awaited): records each animation frame's time, the canvas's
# frame count and, when a frame was drawn, its draw time, until window.__snoopStop is set.
FRAMES_JS = """() => {
  const c = document.querySelector('.snoop-map__canvas');
  const ticks = (window.__snoopTicks = []);
  window.__snoopStop = false;
  let last = Number(c.dataset.frames);
  const tick = (t) => {
    const f = Number(c.dataset.frames);
    ticks.push([t, f, f !== last ? Number(c.dataset.drawMs) : null]);
    last = f;
    if (!window.__snoopStop) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


def browser_row(col_dir: Path, n: int, seconds: float) -> dict:
    from dashboard import chromium, dashboard, new_page

    with dashboard(col_dir, timeout=180) as url, chromium() as browser:
        page = new_page(browser)
        page.goto(url + "?user=bench", timeout=300_000)  # synthetic items: tiles without images
        page.wait_for_selector(".snoop-tab-map", timeout=300_000)
        t0 = page.evaluate("performance.now()")
        page.click(".snoop-tab-map")
        page.wait_for_selector(f".snoop-map__canvas[data-count='{n}']", timeout=300_000)
        first = float(page.get_attribute(".snoop-map__canvas", "data-first-draw-ms")) - t0
        page.wait_for_timeout(1500)  # the tab's transition
        rect = page.query_selector(".snoop-map__canvas").bounding_box()
        cx, cy = rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2
        page.mouse.move(cx, cy)
        # started, not awaited: the page counts frames while this process drives the input
        page.evaluate(f"([s]) => {{ window.__snoopTicks = ({FRAMES_JS})([s]); }}", [seconds])
        t_end = time.monotonic() + seconds
        step = 0
        while time.monotonic() < t_end:
            phase = step % 40
            if phase < 20:  # zoom in, then out, at the pointer
                page.mouse.wheel(0, -80 if phase < 10 else 80)
            else:  # pan: drag a little each way
                page.mouse.down()
                page.mouse.move(cx + (40 if phase < 30 else -40), cy + 20, steps=4)
                page.mouse.up()
                page.mouse.move(cx, cy)
            step += 1
        ticks = page.evaluate("() => window.__snoopTicks")  # awaits the count's end
        page.context.close()
    t = np.array([x[0] for x in ticks])
    intervals = np.diff(t)
    draws = np.array([x[2] for x in ticks if x[2] is not None])
    span = (t[-1] - t[0]) / 1000
    frames = int(ticks[-1][1] - ticks[0][1])
    return {
        "points": n,
        "first_draw_ms": round(first, 0),
        "frame_median_ms": round(float(np.median(intervals)), 2),
        "frame_p95_ms": round(float(np.percentile(intervals, 95)), 2),
        "draw_median_ms": round(float(np.median(draws)), 2) if draws.size else None,
        "draw_p95_ms": round(float(np.percentile(draws, 95)), 2) if draws.size else None,
        "drawn_fps": round(float(frames / span), 1),
        "raf_fps": round(float(len(intervals) / span), 1),
        "input_events": step,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=100_000, help="synthetic items")
    p.add_argument("--sample", type=int, default=20_000, help="UMAP fit sample")
    p.add_argument("--second", default="emoji", choices=["emoji", "none"])
    p.add_argument("--seconds", type=float, default=6.0, help="zoom/pan time in the browser")
    p.add_argument("--quick", action="store_true", help="20k points, no second set, 3 s")
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/vmap.json")
    args = p.parse_args(argv)
    if args.quick:
        args.points, args.second, args.seconds = 20_000, "none", 3.0
    os.environ.setdefault("TQDM_DISABLE", "1")
    from snoop_nb import open_collection

    t0 = time.perf_counter()
    import umap  # noqa: F401  (numba's start-up, counted apart from the layouts)

    import_s = time.perf_counter() - t0
    layouts, browser = [], []
    with tempfile.TemporaryDirectory(prefix="snoop-vmap-") as tmp:
        tmp = Path(tmp)
        demo_dir = tmp / "demo"
        shutil.copytree(DEMO, demo_dir, ignore=shutil.ignore_patterns("*.lock", "map-*"))
        with open_collection(demo_dir) as col:
            layouts.append(layout_row("demo", col, args.sample))
        print(f"demo: {layouts[-1]}", flush=True)
        if args.second == "emoji":
            from datasets import emoji_set

            items = emoji_set()
            col = open_collection(tmp / "emoji", create=True, device="cpu")
            t1 = time.perf_counter()
            col.add([it.path for it in items], progress=False)
            by_path = {str(it.path): it.category for it in items}
            frame = col.items()
            for cat in {c for c in by_path.values() if c}:
                ids = frame["id"][frame["uri"].map(by_path.get) == cat].tolist()
                col.set_meta(ids, category=cat)
            print(f"emoji: embedded {len(col)} in {time.perf_counter() - t1:.0f} s", flush=True)
            layouts.append(layout_row("emoji", col, args.sample))
            col.close()
            print(f"emoji: {layouts[-1]}", flush=True)
        syn_dir = tmp / f"synthetic-{args.points}"
        t1 = time.perf_counter()
        col = synthetic(syn_dir, args.points)
        print(f"synthetic: {len(col)} items made in {time.perf_counter() - t1:.0f} s", flush=True)
        layouts.append(layout_row(f"synthetic {args.points // 1000}k", col, args.sample))
        col.close()
        print(f"synthetic: {layouts[-1]}", flush=True)
        if not args.no_browser:
            browser.append(browser_row(syn_dir, args.points, args.seconds))
            print(f"browser: {browser[-1]}", flush=True)
    print(f"\nimport umap (numba start-up): {import_s:.1f} s\n")
    print(format_table(layouts, ["set", "items", "fitted", "layout_s", "reopen_ms", "cache_mb",
                                 "trust_map", "trust_pca2d", "knn_map", "knn_pca2d", "cat_map",
                                 "cat_pca2d", "cat_vectors"]))  # fmt: skip
    if browser:
        print()
        print(format_table(browser, ["points", "first_draw_ms", "frame_median_ms",
                                     "frame_p95_ms", "draw_median_ms", "draw_p95_ms",
                                     "drawn_fps", "raf_fps"]))  # fmt: skip
    write_json(
        args.json,
        {
            "machine": machine_info(["numpy", "umap-learn", "scikit-learn", "playwright"]),
            "args": vars(args),
            "umap_import_s": round(import_s, 2),
            "layouts": layouts,
            "browser": browser,
        },
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
