"""Copy detection: copies of a few pictures hidden among others, found by `col.duplicates`.

Each set takes ``--originals`` pictures and ``--others`` more (seeded, disjoint), and makes
``--copies`` copies of each original by real transformations, two at random per copy from:
crop (60-90 % of each side), resize (0.4-1.6x), JPEG re-encoding (quality 15-45), colour shift
(hue, saturation, brightness, contrast), a text caption, a logo pasted in a corner, a mirror;
every copy is then saved as JPEG (quality 50-90) or PNG. The copies of one original and the
original are one family: every pair inside a family is a true pair.

Measured, with the default model's global vectors, for (a) the global vectors alone and (b)
global candidates verified by local features (SIFT + RANSAC):

- pair precision / recall at the operating point (the pairs inside the groups returned, what a
  user sees): (a) cosine >= GLOBAL_SIMILARITY, (b) inliers >= MIN_INLIERS;
- µAP (DISC21's micro average precision): every candidate pair ranked by its score, precision
  summed at each true pair and divided by all true pairs (pairs never proposed count as missed);
- R@P90: the highest recall of the ranking at precision >= 0.9;
- kept copies (``copies.json``): collapsing one page of ``--page`` results by verifying it
  (what the search panel did on each search) against reading the kept copies, keeping the
  whole collection's copies once, and both again with 1 % of the items added since.

Sets: ``demo`` (the demo stamps: 40 among 300) and ``photos`` (scikit-image's photographs cut
into 3 x 3 non-overlapping tiles: neighbouring tiles of one photograph are alike but no copies).

    python benchmarks/duplicates.py            # both sets, writes benchmarks/results/duplicates.json
    python benchmarks/duplicates.py --sets demo --originals 10 --others 50   # quick
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from common import format_table, machine_info, write_json  # noqa: E402
from datasets import demo_set  # noqa: E402

TRANSFORMS = ("crop", "resize", "jpeg", "colour", "text", "logo", "mirror")
PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "moon",
    "coins",
    "clock",
    "page",
    "colorwheel",
)


# --- making copies ---------------------------------------------------------------------------
def flatten(path: Path) -> Image.Image:
    """A picture as RGB, transparency on white (as the decoder composites it)."""
    from snoop_nb.media.decode import load_image

    return load_image(path)


def transform(image: Image.Image, kind: str, rng: np.random.Generator, logo: Image.Image):
    w, h = image.size
    if kind == "crop":
        cw, ch = int(w * rng.uniform(0.6, 0.9)), int(h * rng.uniform(0.6, 0.9))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return image.crop((x, y, x + cw, y + ch))
    if kind == "resize":
        s = rng.uniform(0.4, 1.6)
        return image.resize((max(16, int(w * s)), max(16, int(h * s))), Image.Resampling.BICUBIC)
    if kind == "jpeg":
        import io

        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=int(rng.integers(15, 46)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "colour":
        hsv = np.asarray(image.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(20, 236))) % 256
        image = Image.fromarray(hsv, "HSV").convert("RGB")
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))
        return ImageEnhance.Contrast(image).enhance(rng.uniform(0.75, 1.25))
    if kind == "text":
        image = image.copy()
        draw = ImageDraw.Draw(image)
        size = max(8, int(h * rng.uniform(0.08, 0.14)))
        font = ImageFont.load_default(size=size)
        words = ["COPY", "breaking news", "© 2024", "LIVE", "sample", "archive"]
        text = str(rng.choice(words))
        y = int(rng.choice([0.03, 0.85]) * h)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.text((int(w * 0.05), y), text, fill=colour, font=font, stroke_width=1)
        return image
    if kind == "logo":
        image = image.copy()
        side = max(8, int(min(w, h) * rng.uniform(0.15, 0.25)))
        mark = logo.copy()
        mark.thumbnail((side, side))
        x = int(rng.choice([0.03 * w, w - mark.width - 0.03 * w]))
        y = int(rng.choice([0.03 * h, h - mark.height - 0.03 * h]))
        image.paste(mark, (max(0, x), max(0, y)))
        return image
    if kind == "mirror":
        return ImageOps.mirror(image)
    raise ValueError(kind)


def make_copies(originals, out: Path, copies: int, seed: int, logo: Image.Image):
    """``copies`` copies of each original under ``out``; returns ``[[original, copy...]]``
    paths and the transformations of each copy."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    families, kinds = [], []
    for n, path in enumerate(originals):
        base = flatten(path)
        fam = [path]
        for c in range(copies):
            picks = [str(x) for x in rng.choice(TRANSFORMS, size=2, replace=False)]
            image = base
            for kind in picks:
                image = transform(image, kind, rng, logo)
            if rng.random() < 0.7:
                dest = out / f"copy{n:03d}_{c}.jpg"
                image.save(dest, "JPEG", quality=int(rng.integers(50, 91)))
            else:
                dest = out / f"copy{n:03d}_{c}.png"
                image.save(dest)
            fam.append(dest)
            kinds.append(picks)
        families.append(fam)
    return families, kinds


def demo_pictures(n_orig: int, n_other: int, seed: int):
    paths = [it.path for it in demo_set()]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(paths), size=n_orig + n_other, replace=False)
    chosen = [paths[i] for i in picked]
    return chosen[:n_orig], chosen[n_orig:]


def photo_tiles(work: Path, n_orig: int, n_other: int, seed: int):
    """scikit-image's photographs cut into 3 x 3 tiles, written under ``work``."""
    import skimage.data as data

    work.mkdir(parents=True, exist_ok=True)
    tiles = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        w, h = image.size
        for r in range(3):
            for c in range(3):
                box = (c * w // 3, r * h // 3, (c + 1) * w // 3, (r + 1) * h // 3)
                p = work / f"{name}_{r}{c}.png"
                image.crop(box).save(p)
                tiles.append(p)
    rng = np.random.default_rng(seed)
    n_orig = min(n_orig, len(tiles) // 4)
    picked = rng.permutation(len(tiles))
    chosen = [tiles[i] for i in picked]
    return chosen[:n_orig], chosen[n_orig : n_orig + n_other]


# --- measuring -------------------------------------------------------------------------------
def micro_ap(is_true: np.ndarray, total_true: int) -> float:
    """DISC21's µAP: ``is_true`` in ranked order; true pairs never ranked count as missed."""
    if total_true == 0:
        return float("nan")
    hits = np.cumsum(is_true)
    prec = hits / np.arange(1, is_true.size + 1)
    return float((prec * is_true).sum() / total_true)


def recall_at_precision(is_true: np.ndarray, total_true: int, p: float = 0.9) -> float:
    if not is_true.size:
        return 0.0
    hits = np.cumsum(is_true)
    prec = hits / np.arange(1, is_true.size + 1)
    ok = prec >= p
    return float(hits[ok].max() / total_true) if ok.any() else 0.0


def group_pairs(groups) -> set[tuple[int, int]]:
    out = set()
    for g in groups:
        ids = sorted(g.ids)
        out |= {(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]}
    return out


def evaluate(found, truth: set[tuple[int, int]]) -> dict:
    pairs = found.pairs
    key = list(zip(pairs["id_a"].astype(int), pairs["id_b"].astype(int), strict=True))
    is_true = np.array([k in truth for k in key], bool)
    predicted = group_pairs(found.groups)
    tp = len(predicted & truth)
    return {
        "precision": tp / len(predicted) if predicted else float("nan"),
        "recall": tp / len(truth),
        "groups": len(found.groups),
        "uAP": micro_ap(is_true, len(truth)),
        "R@P90": recall_at_precision(is_true, len(truth)),
        "candidates": len(pairs),
        "cand_recall": float(is_true.sum() / len(truth)),
        "skipped": len(found.skipped),
    }


def run_set(name: str, args, tmp: Path) -> list[dict]:
    from snoop_nb import open_collection
    from snoop_nb.copies import CANDIDATE_SIMILARITY

    if name == "demo":
        originals, others = demo_pictures(args.originals, args.others, args.seed)
    elif name == "photos":
        originals, others = photo_tiles(tmp / "tiles", args.originals, args.others, args.seed)
    else:
        raise SystemExit(f"unknown set {name}")
    logo = flatten(demo_set()[7].path).convert("RGB")  # one stamp as the pasted logo
    families, kinds = make_copies(originals, tmp / f"{name}-copies", args.copies, args.seed, logo)
    files = [p for fam in families for p in fam] + list(others)
    col = open_collection(tmp / f"{name}-col", create=True, device="cpu")
    t0 = time.perf_counter()
    col.add(files, progress=False)
    index_s = time.perf_counter() - t0
    by_path = {os.fsdecode(p): int(i) for i, p in col.paths(col.ok_ids()).items()}
    truth = set()
    for fam in families:
        ids = sorted(by_path[os.fsdecode(Path(p).absolute())] for p in fam)
        truth |= {(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]}
    rows = []
    base = {"set": name, "items": len(col), "true_pairs": len(truth)}
    # (a) global vectors alone: the ranking over all candidates, the groups at the operating point
    t0 = time.perf_counter()
    ranked = col.duplicates(verify=False, threshold=CANDIDATE_SIMILARITY, k=args.k)
    chosen = col.duplicates(verify=False, k=args.k)
    a = evaluate(chosen, truth)
    r = evaluate(ranked, truth)
    a.update({"uAP": r["uAP"], "R@P90": r["R@P90"], "candidates": r["candidates"]})
    a.update({"cand_recall": r["cand_recall"], "seconds": round(time.perf_counter() - t0, 2)})
    rows.append({**base, "method": "global", **a})
    # (b) global candidates verified by local features
    t0 = time.perf_counter()
    found = col.duplicates(verify=True, k=args.k)
    b = evaluate(found, truth)
    b["seconds"] = round(time.perf_counter() - t0, 2)
    rows.append({**base, "method": "global+local", **b})
    for row in rows:
        row["index_s"] = round(index_s, 1)
    for m in (8, 10, 12, 15, 20, 25):  # the same verified pairs decided at other bars
        rows.append({**base, "method": f"min_inliers={m}", **_at(found, truth, m)})
    args.kept_rows.append({**base, **_kept_timings(col, args.page)})
    if args.dump:
        d = found.pairs.copy()
        d["true"] = [(x, y) in truth for x, y in zip(d["id_a"], d["id_b"], strict=True)]
        d.to_csv(Path(args.dump) / f"{name}_pairs.csv", index=False)
    if args.misses:
        _print_misses(found, truth, families, kinds, by_path)
    col.close()
    return rows


def _kept_timings(col, page: int) -> dict:
    """What keeping the copies costs and saves: verifying the whole collection once, reading
    the kept copies, and collapsing one page of ``page`` results (the search panel's switch)
    with and without kept copies, and with 1 % of the items added since."""
    from snoop_nb.copies import copies_among, find_duplicates

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0

    ids = col.ok_ids()
    query = int(ids[len(ids) // 2])
    res = col.search(item=query, k=page)
    _, live = timed(lambda: find_duplicates(col, ids=res["id"], segments=False))
    _, keep = timed(col.update_duplicates)
    _, read = timed(col.saved_duplicates)
    _, kept = timed(lambda: copies_among(col, res["id"]))
    # 1 % of the items treated as added since (their pairs verified again when met)
    kept_file = col.root / "copies.json"
    import json

    raw = json.loads(kept_file.read_text())
    n_new = max(1, len(ids) // 100)
    new = set(res["id"].astype(int).tolist()[:n_new])
    raw["covered"] = [[i, i] for i in ids.tolist() if int(i) not in new]
    kept_file.write_text(json.dumps(raw))
    _, partly = timed(lambda: copies_among(col, res["id"]))
    _, update = timed(col.update_duplicates)
    return {
        "page": page,
        "collapse_live_s": round(live, 2),
        "keep_all_s": round(keep, 1),
        "read_kept_ms": round(read * 1000, 1),
        "collapse_kept_ms": round(kept * 1000, 1),
        "collapse_1pct_new_s": round(partly, 2),
        "update_1pct_new_s": round(update, 1),
    }


def _at(found, truth, min_inliers: int) -> dict:
    """``found``'s groups and precision / recall had ``min_inliers`` been the bar."""
    from snoop_nb.copies import connected_groups, decide

    p = found.pairs
    verified, _ = decide(
        p["similarity"].to_numpy(),
        p["inliers"].to_numpy(),
        p["matches"].to_numpy(),
        p["coverage"].to_numpy(),
        p["keypoints"].to_numpy(),
        min_inliers=min_inliers,
    )
    good = p[verified]
    groups = connected_groups(zip(good["id_a"], good["id_b"], strict=True))
    predicted = set()
    for g in groups:
        predicted |= {(a, b) for i, a in enumerate(g) for b in g[i + 1 :]}
    tp = len(predicted & truth)
    return {
        "precision": tp / len(predicted) if predicted else float("nan"),
        "recall": tp / len(truth),
        "groups": len(groups),
    }


def _print_misses(found, truth, families, kinds, by_path) -> None:
    predicted = group_pairs(found.groups)
    pairs = found.pairs.set_index(["id_a", "id_b"])
    kind_of = {}
    for fam, n in zip(families, range(len(families)), strict=True):
        for c, p in enumerate(fam[1:]):
            kind_of[by_path[os.fsdecode(Path(p).absolute())]] = "+".join(
                kinds[n * (len(fam) - 1) + c]
            )
    print("missed true pairs (kinds, similarity, inliers):")
    for a, b in sorted(truth - predicted)[:40]:
        row = pairs.loc[(a, b)] if (a, b) in pairs.index else None
        print(
            f"  {a:4d} {b:4d}  {kind_of.get(a, 'orig'):>14} {kind_of.get(b, 'orig'):>14}  "
            + (
                "not proposed"
                if row is None
                else f"{row.similarity:.3f} {row.inliers}/{row.matches}/{row.keypoints}"
            )
        )
    print("false pairs (similarity, inliers):")
    wrong = found.pairs[found.pairs["verified"]]
    for r in wrong.itertuples():
        if (r.id_a, r.id_b) not in truth:
            print(
                f"  {r.uri_a}  {r.uri_b}  {r.similarity:.3f} {r.inliers}/{r.matches}/{r.keypoints}"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="demo,photos")
    p.add_argument("--originals", type=int, default=40)
    p.add_argument("--others", type=int, default=300)
    p.add_argument("--copies", type=int, default=4, help="copies of each original")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dump", default=None, metavar="DIR", help="write each set's pairs as CSV")
    p.add_argument("--misses", action="store_true", help="print missed and false pairs")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/duplicates.json")
    p.add_argument("--page", type=int, default=100, help="results per page collapsed")
    args = p.parse_args(argv)
    args.kept_rows = []
    os.environ.setdefault("TQDM_DISABLE", "1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="snoop-dups-") as tmp:
        for name in args.sets.split(","):
            rows += run_set(name, args, Path(tmp))
    cols = ["set", "method", "items", "true_pairs", "candidates", "cand_recall", "precision"]
    cols += ["recall", "uAP", "R@P90", "groups", "skipped", "seconds"]
    print(format_table(rows, cols))
    kept_cols = ["set", "items", "page", "collapse_live_s", "keep_all_s", "read_kept_ms"]
    kept_cols += ["collapse_kept_ms", "collapse_1pct_new_s", "update_1pct_new_s"]
    print("\ncopies kept in the collection (copies.json):")
    print(format_table(args.kept_rows, kept_cols))
    from snoop_nb import copies

    thresholds = {
        "candidate_similarity": copies.CANDIDATE_SIMILARITY,
        "global_similarity": copies.GLOBAL_SIMILARITY,
        "min_inliers": copies.MIN_INLIERS,
        "side": copies.SIDE,
        "ratio": copies.RATIO,
    }
    write_json(
        args.json,
        {
            "machine": machine_info(["numpy", "opencv-python-headless", "torch"]),
            "args": {k: v for k, v in vars(args).items() if k != "kept_rows"},
            "thresholds": thresholds,
            "rows": rows,
            "kept": args.kept_rows,
        },
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
