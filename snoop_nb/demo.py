"""Build the demo collections from the labelled Tux Paint stamps and show searches.

``make demo`` fetches the images (scripts/fetch_demo.sh) and runs
``python -m snoop_nb.demo --images data/demo/stamps --collection data/demo/collection
--videos data/demo/videos``.
Folder names become the items' labels in the catalog: ``category`` (animals, food, ...)
and ``subcategory`` (birds, mammals, ...) where there is one. ``--videos`` also makes the demo
video corpus from the same pictures (six made-up programmes, see
:func:`snoop_nb.media.synthvideo.make_corpus`) and its collection, ``<videos>/collection``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from snoop_nb.collection import Collection, open_collection
from snoop_nb.errors import SnoopError


def folder_labels(root: Path):
    """``meta`` callback: a picture's category and subcategory from its folders under root."""
    root = root.absolute()

    def meta(path: Path) -> dict[str, str]:
        try:
            parts = path.relative_to(root).parts[:-1]
        except ValueError:
            return {}
        labels = {}
        if parts:
            labels["category"] = parts[0]
        if len(parts) > 1:
            labels["subcategory"] = parts[1]
        return labels

    return meta


def build(images: Path, collection: Path, *, device: str = "auto") -> Collection:
    """Create or update the demo collection (unchanged files are skipped)."""
    col = open_collection(collection, create=True, device=device)
    report = col.add([images], meta=folder_labels(images))
    print(f"{col.root}: {report}")
    from snoop_nb.vmap import visual_map

    # the dashboard's Map tab reads this layout; it is built once here, never per visitor
    m = visual_map(col)
    print(f"{col.root}: visual map of {len(m)} items" + (" (stale)" if m.stale else ""))
    # and the copies the "collapse copies" switch and the Copies tab read (new items only)
    found = col.update_duplicates(progress=True)
    print(f"{col.root}: {len(found.groups)} groups of copies")
    return col


def build_videos(images: Path, folder: Path, *, device: str = "auto") -> Collection:
    """Make the demo videos (once) and create or update their collection, with the sidecar."""
    from snoop_nb.media.synthvideo import make_corpus

    truths = make_corpus(images, folder)
    hours = sum(t.duration for t in truths) / 3600
    print(f"{folder}: {len(truths)} made-up videos, {hours * 60:.1f} minutes")
    col = open_collection(folder / "collection", create=True, device=device)
    report = col.add([folder], metadata=folder / "videos.csv")
    print(f"{col.root}: {report}")
    return col


def show_videos(col: Collection) -> None:
    """A search grouped per video, as a researcher would start."""
    from snoop_nb.cli import timecode

    info = col.info()
    print(f"\n{info['videos']} videos, {info['keyframes']} keyframes, {info['hours'] * 60:.1f} min")
    for text in ("a bird", "a car"):
        print(f"\nsearch --text {text!r} --group video")
        for g in col.search(text=text, k=3, group="video").itertuples():
            best = g.moments[0]
            title = getattr(g, "title", "")
            print(
                f"{g.rank}  {g.score:.3f}  {Path(g.video).name:14s} {title!s:32.32s} "
                f"{g.hits:2d} moments, best at {timecode(best['t'])}"
            )


def show(col: Collection) -> None:
    """Print what the collection holds and three searches a visitor would try."""
    import pandas as pd

    items = col.items()
    print(f"\n{len(items)} images, {len(col.errors())} bad files, model {col.embedder_id}")
    if "category" in items:
        print(items["category"].value_counts().to_string())
    pd.set_option("display.width", 160)
    for text in ("a bird", "a red car", "an apple"):
        hits = col.search(text=text, k=5)
        print(f"\nsearch --text {text!r}")
        print(_short(hits).to_string(index=False))
    first = int(items["id"].iloc[0])
    hits = col.search(item=first, k=5)
    print(f"\nsearch --item {first} ({col.item(first)['uri']})")
    print(_short(hits).to_string(index=False))


def _short(df):
    df = df.copy()
    df["uri"] = df["uri"].map(lambda u: "/".join(Path(u).parts[-3:]))
    cols = [c for c in ("rank", "id", "score", "category", "uri") if c in df]
    return df[cols]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m snoop_nb.demo", description=__doc__)
    p.add_argument("--images", type=Path, default=Path("data/demo/stamps"))
    p.add_argument("--collection", type=Path, default=Path("data/demo/collection"))
    p.add_argument(
        "--videos",
        type=Path,
        default=None,
        help="also make the demo videos and their collection here",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--no-show", action="store_true", help="build the collection, show nothing")
    args = p.parse_args(argv)
    if not args.images.is_dir():
        print(
            f"demo: {args.images} not found: run `make demo` to fetch the demo images",
            file=sys.stderr,
        )
        return 2
    try:
        with build(args.images, args.collection, device=args.device) as col:
            if not args.no_show:
                show(col)
        if args.videos is not None:
            with build_videos(args.images, args.videos, device=args.device) as vcol:
                if not args.no_show:
                    show_videos(vcol)
        if args.no_show:
            return 0
    except SnoopError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    print(f"\nTry: .venv/bin/snoop search --collection {args.collection} --text 'a fish'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
