"""The ``snoop`` command line: index folders, search them, describe a collection, remove
files from it, and build personal visual classes (label, train, rank, suggest, apply, export).

Exit codes: 0 on success (also when some files were bad and reported), 2 on usage errors,
1 on any other failure, always with a one-line message on stderr.

Only ``label`` creates users and classes; every other verb reads them and answers an unknown
one with exit 2 and the names there are. File names, class names and messages are printed
with control, invisible and direction-changing characters escaped (``\\x1b``, ``\\u202e``): a
file name cannot move the cursor, retitle the terminal or reorder what is printed around it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from snoop_nb.errors import SnoopError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"snoop: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="snoop", description="Visual search over image collections.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ix = sub.add_parser("index", help="add the images and videos under PATH... to a collection")
    ix.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="image or video files, folders, .txt/.csv lists of paths or URLs, IIIF manifests "
        "(.json files or http(s) URLs)",
    )
    ix.add_argument("--collection", required=True, metavar="DIR")
    ix.add_argument(
        "--model",
        default=None,
        help="open_clip model name (default: the offline EfficientNet-Lite0)",
    )
    ix.add_argument(
        "--pretrained",
        default=None,
        metavar="TAG_OR_PATH",
        help="open_clip weights: a local checkpoint or a tag in the local Hugging Face cache",
    )
    ix.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ix.add_argument("--batch-size", type=_positive, default=32, metavar="N")
    ix.add_argument("--workers", type=_positive, default=None, metavar="N", help="decoding threads")
    ix.add_argument(
        "--max-pixels",
        type=_pixels,
        default=MAX_PIXELS,
        metavar="N",
        help="refuse images of more pixels than this (default 1,000,000,000: one gigapixel)",
    )
    ix.add_argument(
        "--metadata",
        default=None,
        metavar="FILE.csv",
        help="a CSV sidecar: its 'file' column names each video (relative to the CSV's folder, "
        "or absolute); its other columns (channel, date, title, ...) become metadata",
    )
    ix.add_argument(
        "--keyframe-every",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="one keyframe per shot, and one more per S seconds of a long shot (default 10)",
    )
    ix.add_argument(
        "--detector",
        default="transnetv2",
        choices=["transnetv2", "adaptive", "interval"],
        help="video shot detector (default transnetv2; adaptive is faster)",
    )
    ix.add_argument(
        "--dask",
        type=_dask_scheduler,
        default=None,
        metavar="ADDRESS|local[:N]",
        help="embed on a Dask cluster: a scheduler's address (tcp://host:port), or local:N "
        "for N worker processes on this machine (needs snoop-nb[dask])",
    )
    ix.add_argument(
        "--index",
        dest="index_kind",
        default=None,
        choices=["hnsw", "hnsw-pca", "pca-sq8"],
        help="the index: hnsw-pca (the default above 256 dimensions), hnsw, or pca-sq8 "
        "(compressed codes, for millions of items); on an existing collection, a different "
        "choice rebuilds its index",
    )
    ix.add_argument(
        "--shards",
        type=_positive,
        default=None,
        metavar="N",
        help="split the index into N shards, built and searched in parallel (default 1)",
    )
    ix.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="R",
        help="remote pictures: at most R requests per second per host (default 5)",
    )
    ix.add_argument(
        "--refresh",
        action="store_true",
        help="fetch manifests and remote pictures again, even those cached or indexed",
    )
    ix.add_argument("--quiet", action="store_true", help="no progress bar")
    ix.add_argument(
        "--regions",
        action="store_true",
        help="also embed a few windows of every picture (9 by default), so that searches find "
        "small objects inside pictures and show where (resumable, incremental)",
    )
    ix.add_argument(
        "--region-scales",
        type=lambda t: tuple(float(x) for x in t.split(",")),
        default=None,
        metavar="S[,S...]",
        help="with --regions: window sizes as fractions of the picture (default 0.5: 9 windows; "
        "0.5,0.333: 34 windows, better for smaller objects, about 4x the time and space)",
    )
    ix.add_argument("--json", action="store_true", help="print the run's report as JSON")

    sh = sub.add_parser("shots", help="print the shots and keyframes of one video (no collection)")
    sh.add_argument("video", metavar="VIDEO")
    sh.add_argument(
        "--detector", default="transnetv2", choices=["transnetv2", "adaptive", "interval"]
    )
    sh.add_argument(
        "--keyframe-every",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="a keyframe at least every S seconds in long shots (default 10)",
    )
    sh.add_argument(
        "--json",
        action="store_true",
        help='print [{"start": s, "end": s, "keyframes": [s, ...]}, ...]',
    )

    se = sub.add_parser("search", help="search a collection by image, text or item")
    se.add_argument("--collection", required=True, metavar="DIR")
    q = se.add_mutually_exclusive_group(required=True)
    q.add_argument("--image", metavar="FILE")
    q.add_argument("--text")
    q.add_argument("--item", type=int, metavar="ID")
    q.add_argument(
        "--clip",
        metavar="VIDEO[@T0-T1]",
        help="a stretch of video as the query: a file, or file@12.5-20 (seconds)",
    )
    se.add_argument("-k", type=_positive, default=10, metavar="K")
    se.add_argument(
        "--group",
        choices=["video"],
        default=None,
        help="one result per video, best first, with its moments",
    )
    se.add_argument(
        "--box",
        metavar="X0,Y0,X1,Y1",
        help="with --image or --item: search by that region of the picture (fractions of its "
        "width and height, or pixels)",
    )
    se.add_argument(
        "--no-regions",
        dest="regions",
        action="store_false",
        default=None,
        help="ignore the indexed regions (default: used when the collection has them)",
    )
    se.add_argument("--exact", action="store_true", help="exact search, whatever the size")
    se.add_argument(
        "--no-expand",
        dest="expand",
        action="store_false",
        help="plain nearest neighbours (default: re-ranked by diffusion over the nearest "
        "candidates' own neighbourhood graph; 'score' is then that, 'similarity' the cosine)",
    )
    se.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    se.add_argument("--json", action="store_true")

    inf = sub.add_parser("info", help="describe a collection")
    inf.add_argument("--collection", required=True, metavar="DIR")
    inf.add_argument("--json", action="store_true")

    du = sub.add_parser(
        "duplicates",
        help="group the items that are copies of each other, and video segments shown twice",
    )
    du.add_argument("--collection", required=True, metavar="DIR")
    du.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="COS",
        help="cosine a candidate pair needs (default 0.5 verified, 0.9 with --no-verify)",
    )
    du.add_argument("-k", type=_positive, default=10, metavar="K", help="neighbours per item")
    du.add_argument(
        "--min-inliers",
        type=_positive,
        default=15,
        metavar="N",
        help="local matches agreeing on one transform that make a copy (default 15)",
    )
    du.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="global vectors alone (no local features): faster, less precise",
    )
    du.add_argument(
        "--json",
        action="store_true",
        help='print a list of groups, each {"uris": [...], "ids": [...]}',
    )
    kept = du.add_mutually_exclusive_group()
    kept.add_argument(
        "--save",
        action="store_true",
        help="keep the copies in the collection (collapsing copies and the Copies tab read "
        "them); when kept before, verify only the items added since",
    )
    kept.add_argument(
        "--rebuild",
        action="store_true",
        help="like --save, but verify every item again",
    )
    kept.add_argument(
        "--saved",
        action="store_true",
        help="print the copies kept in the collection, verifying nothing",
    )

    mp = sub.add_parser(
        "map", help="build the collection's visual map (UMAP), cached for the UI and dashboard"
    )
    mp.add_argument("--collection", required=True, metavar="DIR")
    mp.add_argument("--rebuild", action="store_true", help="fit again, even if one is cached")
    mp.add_argument(
        "--sample", type=_positive, metavar="N", help="fit UMAP on at most N items (20000)"
    )
    mp.add_argument("--neighbors", type=_positive, metavar="K", help="UMAP's n_neighbors (15)")
    mp.add_argument("--seed", type=int, metavar="S", help="random seed (0)")
    mp.add_argument("--json", action="store_true")

    def class_parser(
        name: str, help: str, *, class_required: bool = True
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--collection", required=True, metavar="DIR")
        sp.add_argument("--user", required=True, metavar="U")
        sp.add_argument("--class", dest="class_name", required=class_required, metavar="NAME")
        return sp

    cl = sub.add_parser("classes", help="list a user's classes and the shared ones")
    cl.add_argument("--collection", required=True, metavar="DIR")
    cl.add_argument("--user", metavar="U", help="whose classes (default: every class)")
    cl.add_argument("--json", action="store_true")

    lb = class_parser(
        "label", "label items relevant (--pos) or not (--neg) for a class (creates it if new)"
    )
    lb.add_argument("--pos", type=int, nargs="+", default=[], metavar="ID")
    lb.add_argument("--neg", type=int, nargs="+", default=[], metavar="ID")
    lb.add_argument("--clear", type=int, nargs="+", default=[], metavar="ID")
    tr = class_parser("train", "train the class's classifier on its labels")
    tr.add_argument("--json", action="store_true")
    rk = class_parser("rank", "rank the collection with the class's latest classifier")
    rk.add_argument("-k", type=_positive, default=20, metavar="K")
    rk.add_argument("--json", action="store_true")
    sg = class_parser("suggest", "unlabelled items worth labelling next")
    sg.add_argument("--strategy", default="mixed", choices=list(STRATEGIES))
    sg.add_argument("-k", type=_positive, default=20, metavar="K")
    sg.add_argument("--json", action="store_true")
    ap = class_parser("apply", "apply the class's latest classifier to the whole collection")
    ap.add_argument(
        "--threshold",
        type=_probability,
        default=0.5,
        metavar="T",
        help="keep items whose probability is at least T (0 to 1, default 0.5)",
    )
    ap.add_argument("--json", action="store_true")
    vt = class_parser("votes", "each voter's estimated reliability and the items they disagree on")
    vt.add_argument("--method", default="dawid-skene", choices=["dawid-skene", "majority"])
    vt.add_argument("-k", type=_positive, default=20, metavar="K", help="disagreements shown")
    vt.add_argument("--json", action="store_true")
    ex = class_parser(
        "export", "export labels and applied classes to CSV or Parquet", class_required=False
    )
    ex.add_argument("--out", required=True, metavar="FILE")

    rm = sub.add_parser(
        "remove", help="remove the items of PATH... (files, or folders) from a collection"
    )
    rm.add_argument("paths", nargs="+", metavar="PATH", help="files or folders, present or not")
    rm.add_argument("--collection", required=True, metavar="DIR")
    rm.add_argument("--json", action="store_true")

    db = sub.add_parser("dashboard", help="serve the dashboard on 127.0.0.1 (Voila)")
    db.add_argument("--collection", required=True, metavar="DIR")
    db.add_argument(
        "--videos",
        metavar="DIR",
        help="a collection of videos for the dashboard's Videos tab (default: the collection "
        "itself, when it holds videos)",
    )
    db.add_argument("--port", type=_positive, default=8866, metavar="P")
    db.add_argument("--user", metavar="U", help="label as U (default: each visitor names themself)")
    db.add_argument(
        "--preheat",
        type=int,
        default=1,
        metavar="N",
        help="kernels kept ready, collection open, for the next visitors (0: none; default 1)",
    )
    db.add_argument(
        "--ip",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; any other, e.g. "
        "0.0.0.0 for a class, requires a token)",
    )
    db.add_argument(
        "--token",
        metavar="TOKEN",
        help="visitors must open the address with ?token=TOKEN (or type it in); generated "
        "and printed when --ip is not 127.0.0.1 and none is given",
    )
    db.add_argument(
        "--cull-after",
        type=int,
        default=120,
        metavar="SECONDS",
        help="shut a visitor's kernel down this long after they left (0: never; default 120)",
    )
    db.add_argument(
        "--max-kernels",
        type=int,
        default=40,
        metavar="N",
        help="most visitors at once, one kernel each; others get a 'full' page (0: no "
        "limit; default 40)",
    )
    return p


MAX_PIXELS = 1_000_000_000
STRATEGIES = ("top", "uncertain", "diverse", "mixed")  # FeedbackSession.suggest's strategies


def _pixels(text: str) -> int:
    """A pixel count: ``250000000``, ``250_000_000`` or ``2.5e8``."""
    try:
        value = float(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of pixels: {text!r}") from None
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 pixel: {text}")
    return int(value)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability is between 0 and 1, not {text}")
    return value


def _seconds(text: str) -> float:
    """A positive number of seconds (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _dask_scheduler(text: str) -> str | int:
    """A Dask scheduler's address, or local[:N] as a worker count (an argparse type)."""
    from snoop_nb.scale.cluster import parse_scheduler

    try:
        return parse_scheduler(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _version() -> str:
    from snoop_nb import __version__

    return f"snoop-nb {__version__}"


def cmd_index(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection
    from snoop_nb.sources import has_sources, is_url

    missing = [p for p in args.paths if not is_url(p) and not os.path.lexists(p)]
    if missing:
        raise UsageError(f"{missing[0]}: no such file or directory")
    if args.metadata is not None and not Path(args.metadata).is_file():
        raise UsageError(f"--metadata {args.metadata}: no such file")
    wanted = {"kind": args.index_kind, "shards": args.shards}
    col = open_collection(
        args.collection,
        create=True,
        model=args.model,
        pretrained=args.pretrained,
        device="auto" if args.dask is not None else args.device,  # --dask: the workers' device
        index_params={k: v for k, v in wanted.items() if v is not None},
    )
    with col:
        if col.index_differs(**wanted):
            col.reindex(**wanted)
            if not args.json:
                _print(f"index: rebuilt as {col.describe_index()}")
        options = {
            "batch_size": args.batch_size,
            "workers": args.workers,
            "progress": False if args.quiet else None,
            "max_pixels": args.max_pixels,
            "metadata": args.metadata,
            "keyframe_every": args.keyframe_every,
            "detector": args.detector,
        }
        if has_sources(args.paths):
            fetch = {"refresh": args.refresh}
            if args.rate is not None:
                fetch["rate"] = args.rate
            options["fetch"] = fetch
        if args.dask is not None:
            from snoop_nb.scale import add_distributed

            report = add_distributed(
                col, args.paths, scheduler=args.dask, device=args.device, **options
            )
        else:
            report = col.add(args.paths, **options)
        regions = None
        if args.regions:
            scales = {"scales": args.region_scales} if args.region_scales else {}
            regions = col.index_regions(progress=not args.json, **scales)
        summary = col.info()
        if args.json:
            out = {
                "collection": str(col.root),
                "discovered": report.discovered,
                "added": report.added,
                "replaced": report.replaced,
                "skipped": report.skipped,
                "errors": [{"uri": u, "reason": r} for u, r in report.errors],
                "items": len(col),
                "retried": report.retried,  # files that had failed before, tried again
                "videos": report.videos,  # videos analysed by this run (new or replaced)
                "keyframes": report.keyframes,
                "hours": round(report.hours, 4),  # of video analysed by this run
                "metadata_updated": report.metadata_updated,
                "warnings": [{"uri": u, "message": m} for u, m in report.warnings],
                "collection_videos": summary["videos"],
                "collection_hours": summary["hours"],
                "seconds": round(report.seconds, 3),
            }
            if regions is not None:
                out["regions"] = regions  # {added, regions, failed, items, seconds}
            _print_json(out)
        else:
            held = ""
            if summary["videos"]:
                held = f" ({summary['videos']} videos, {summary['hours']:.2f} h)"
            _print(f"{col.root}: {report}; {len(col)} items in all{held}")
            if regions is not None:
                _print(
                    f"regions: {regions['regions']} windows of {regions['added']} pictures "
                    f"embedded ({regions['failed']} unreadable), {regions['items']} pictures "
                    f"with regions in all, in {regions['seconds']:.1f} s"
                )
            for uri, reason in report.errors:
                _print(f"  skipped {uri}: {reason}", file=sys.stderr)
            for uri, message in report.warnings:
                _print(f"  warning: {uri}: {message}", file=sys.stderr)
    return 0


def cmd_shots(args: argparse.Namespace) -> int:
    from snoop_nb.media.video import detect_shots

    report = detect_shots(args.video, detector=args.detector, keyframe_every=args.keyframe_every)
    if report.warning:
        _print(f"snoop: warning: {escaped(report.warning)}", file=sys.stderr)
    if args.json:
        _print_json(report.as_dicts())
        return 0
    info = report.info
    _print(
        f"{escaped(str(args.video))}: {info.duration:.2f} s, {info.fps:.3g} fps, "
        f"{info.width}x{info.height} {escaped(info.codec)}, {len(report.shots)} shots "
        f"({report.detector}, {report.seconds:.1f} s)"
    )
    for shot in report.shots:
        keys = ", ".join(timecode(t) for t in shot.keyframes)
        _print(f"{shot.index:4d}  {timecode(shot.start)} - {timecode(shot.end)}  keyframes {keys}")
    return 0


def timecode(seconds: float) -> str:
    """``HH:MM:SS.mmm``."""
    ms = round(max(0.0, float(seconds)) * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    return f"{h:02d}:{m:02d}:{rest / 1000:06.3f}"


def cmd_search(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    if args.image is not None and not Path(args.image).is_file():
        raise UsageError(f"--image {args.image}: no such file")
    clip = _clip(args.clip) if args.clip is not None else None
    box = _box(args.box) if args.box is not None else None
    col = open_collection(args.collection, device=args.device)
    with col:
        df = col.search(
            item=args.item,
            image=args.image,
            text=args.text,
            clip=clip,
            k=args.k,
            exact=True if args.exact else None,
            group=args.group,
            expand=args.expand,
            box=box,
            regions=args.regions,
        )
    if args.group is None:
        shown = ["rank", "id", "score", "uri"] + (["box"] if "box" in df else [])
        _print_results(df, args.json, shown)
        return 0
    if args.json:
        _print_json(_plain(df.to_dict(orient="records")))
        return 0
    for r in df.itertuples(index=False):
        best = r.moments[0]
        at = f" at {timecode(best['t'])}" if best.get("t") is not None else ""
        _print(f"{r.rank:3d}  {r.score:.3f}  {r.hits:3d} hits{at}  {escaped(str(r.video))}")
    return 0


def _box(text: str) -> tuple[float, ...]:
    """``X0,Y0,X1,Y1`` as a box."""
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise UsageError(f"--box {text}: give four numbers, X0,Y0,X1,Y1")
    return box


def _clip(text: str):
    """``FILE`` or ``FILE@T0-T1`` (seconds) as a clip query."""
    import re

    m = re.match(r"^(.*)@(\d+(?:\.\d*)?)-(\d+(?:\.\d*)?)$", text)
    path, rng = (m.group(1), (float(m.group(2)), float(m.group(3)))) if m else (text, None)
    if not Path(path).is_file():
        raise UsageError(f"--clip {path}: no such file")
    return (path, *rng) if rng else path


def cmd_duplicates(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    if args.threshold is not None and not -1.0 <= args.threshold <= 1.0:
        raise UsageError(f"--threshold {args.threshold}: a cosine, between -1 and 1")
    options = {
        "threshold": args.threshold,
        "k": args.k,
        "verify": args.verify,
        "min_inliers": args.min_inliers,
    }
    with open_collection(args.collection) as col:
        if args.saved:
            found = col.saved_duplicates()
            if found is None:
                raise UsageError(
                    f"no copies kept in {args.collection}: run snoop duplicates --save first"
                )
            if found.unchecked:
                _print(
                    f"snoop: {len(found.unchecked)} items added since {found.saved} are not "
                    "checked (snoop duplicates --save checks them)",
                    file=sys.stderr,
                )
        elif args.save or args.rebuild:
            found = col.update_duplicates(rebuild=args.rebuild, progress=not args.json, **options)
        else:
            found = col.duplicates(**options)
    for s in found.skipped:
        _print(f"snoop: skipped {s['uri']}: {s['reason']}", file=sys.stderr)
    if args.json:
        _print_json(found.to_json())
        return 0
    if not found.groups and found.segments.empty:
        _print("no copies found")
    for n, g in enumerate(found.groups, 1):
        _print(f"group {n}: {len(g)} copies (best score {g.score:.3f})")
        for i, uri in zip(g.ids, g.uris, strict=True):
            _print(f"  {i:6d}  {escaped(uri)}")
    for r in found.segments.itertuples(index=False):
        _print(
            f"repeated {timecode(r.duration)}: {escaped(r.video_a)} at {timecode(r.t_a)}"
            f" = {escaped(r.video_b)} at {timecode(r.t_b)} ({r.keyframes} keyframes)"
        )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    with open_collection(args.collection) as col:
        info = col.info()
    if args.json:
        _print_json(info)
    else:
        _print(f"collection  {info['path']}")
        _print(f"items       {info['items']}")
        if info.get("videos"):
            _print(
                f"videos      {info['videos']} ({info['hours']:.2f} h, "
                f"{info['keyframes']} keyframes)"
            )
        _print(f"bad files   {len(info['errors'])}")
        _print(f"model       {info['model']}  ({info['embedder']}, dim {info['dim']})")
        _print(f"index       {col.describe_index()}  {info['index'].get('bytes', 0) / 1e6:.1f} MB")
        for err in info["errors"][:20]:
            _print(f"  {err['uri']}: {err['reason']}")
        if len(info["errors"]) > 20:
            _print(f"  ... and {len(info['errors']) - 20} more (see --json)")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    import time

    from snoop_nb.collection import open_collection
    from snoop_nb.vmap import load_map, visual_map

    params = {"sample": args.sample, "n_neighbors": args.neighbors, "seed": args.seed}
    t0 = time.perf_counter()
    with open_collection(args.collection) as col:
        cached = None if args.rebuild else load_map(col, **params)
        if cached is not None and not cached.stale:
            m, built = cached, False
        else:
            m = visual_map(col, rebuild=True, **params)
            built = True
    out = {
        "path": str(m.path),
        "items": len(m),
        "fitted": int(m.fitted.size),
        "added_since_build": m.added,
        "built": built,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json:
        _print_json(out)
    else:
        how = f"built in {out['seconds']:.1f} s" if built else "up to date (cached)"
        _print(f"map  {out['path']}: {out['items']} items, {how}")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    if not (args.pos or args.neg or args.clear):
        raise UsageError("nothing to label: give --pos, --neg or --clear item ids")
    both = set(args.pos) & set(args.neg)
    if both:
        raise UsageError(f"item {min(both)} is given both --pos and --neg")
    with open_collection(args.collection) as col:
        given = [*args.pos, *args.neg, *args.clear]
        unknown = [i for i, live in zip(given, col.is_live(given), strict=True) if not live]
        if unknown:  # checked before the class is created: a refused label creates nothing
            raise UsageError(f"no item with id {unknown[0]} in this collection")
        s = col.session(args.user, args.class_name)
        for ids, value in ((args.pos, 1), (args.neg, -1), (args.clear, 0)):
            if ids:
                s.label(ids, value)
        n = s.counts()
        _print(f"{s.ref}: {n['pos']} relevant, {n['neg']} not relevant")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    with open_collection(args.collection) as col:
        s = _session(col, args.user, args.class_name, own=True, to="train it")
        m = s.train()
    mistakes = _mistakes(m.quality)
    out = {
        "class": str(s.ref),
        "model_id": m.id,
        "positives": m.n_pos,
        "negatives": m.n_neg,
        "pseudo_negatives": m.params.get("pseudo_negatives", 0),
        "quality": m.quality,  # the model's whole metrics, whatever keys training adds
        "params": m.params,
    }
    if mistakes is not None:
        out["mistakes"] = mistakes[1]
    if args.json:
        _print_json(out)
    else:
        q = m.quality
        est = (
            f"average precision {q['average_precision']:.3f}, balanced accuracy "
            f"{q['balanced_accuracy']:.3f} ({q['cv_folds']}-fold, {q['negatives']} negatives)"
            if q.get("cv_folds")
            else q.get("reason", "")
        )
        if mistakes is not None:
            n = mistakes[1]
            est += (
                f"; it still gets {n} of its labels wrong" if n else "; it gets every label right"
            )
        _print(f"{s.ref}: model {m.id} from {m.n_pos} relevant, {m.n_neg} not relevant; {est}")
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    with open_collection(args.collection) as col:
        s = _session(col, args.user, args.class_name)
        if s.model() is None:
            raise UsageError(f"{s.ref} has no trained model: run `snoop train` first")
        df = s.rank(args.k)
    _print_results(df, args.json, ["rank", "id", "score", "label", "uri"])
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    with open_collection(args.collection) as col:
        s = _session(col, args.user, args.class_name)
        df = s.suggest(args.k, args.strategy)
    _print_results(df, args.json, ["rank", "id", "score", "label", "uri"])
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    with open_collection(args.collection) as col:
        s = _session(col, args.user, args.class_name, own=True, to="apply it")
        n = s.apply(args.threshold)
        model, items = s.model(), len(col)
    out = {
        "class": str(s.ref),
        "owner": s.ref.owner,
        "name": s.ref.name,
        "model_id": model.id,
        "threshold": args.threshold,
        "applied": n,
        "items": items,
    }
    if args.json:
        _print_json(out)
    else:
        _print(
            f"{s.ref}: applied to {n} of {items} items "
            f"(probability at least {args.threshold:g}, model {model.id})"
        )
    return 0


def cmd_classes(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    with open_collection(args.collection) as col:
        rows = col.kb.summaries(args.user)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        whose = f"{args.user} has" if args.user else "this collection has"
        _print(f"{whose} no classes yet (`snoop label` creates one)")
        return 0
    import pandas as pd

    def quality(row: dict) -> str:
        q = (row["latest_model"] or {}).get("quality", {})
        ap = q.get("average_precision")
        return "-" if ap is None else f"AP {ap:.3f}"

    table = pd.DataFrame(
        {
            "class": [r["class"] for r in rows],
            "owner": [r["owner"] for r in rows],
            "shared": ["yes" if r["shared"] else "no" for r in rows],
            "relevant": [r["relevant"] for r in rows],
            "not relevant": [r["not_relevant"] for r in rows],
            "models": [r["models"] for r in rows],
            "latest": [quality(r) for r in rows],
            "applied": [r["applied"] for r in rows],
        }
    )
    _print_table(table)
    return 0


def cmd_votes(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    with open_collection(args.collection) as col:
        ref = col.kb.get_class(args.user, args.class_name)
        agg = col.kb.aggregate(ref, args.method)
        dis = agg.disagreements()
    users = agg.users.to_dict("records")
    shown = dis.head(args.k).to_dict("records")
    if args.json:
        _print_json(
            {"class": str(ref), "method": agg.method, "items": len(agg.items),
             "users": users, "disagreements": shown, "n_disagreements": len(dis)}
        )  # fmt: skip
        return 0
    import pandas as pd

    _print(f"{ref}: {len(agg.items)} items voted by {len(users)} users ({agg.method})")
    if users:
        _print_table(agg.users.round(3))
    _print(f"{len(dis)} items with disagreeing votes" + (":" if len(dis) else ""))
    if len(dis):
        by_user = [", ".join(f"{u} {v:+d}" for u, v in r["by_user"].items()) for r in shown]
        table = pd.DataFrame(shown).round(3).assign(by_user=by_user)
        _print_table(table)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    import numpy as np

    from snoop_nb.collection import open_collection

    with open_collection(args.collection) as col:
        # paths as the catalog holds them (absolute, not resolved): a file gone from the disk
        # can still be removed
        found = [(path, col.ids_under([os.path.abspath(path)])) for path in args.paths]
        missing = [path for path, ids in found if len(ids) == 0]
        if missing:
            raise UsageError(
                f"{missing[0]}: no item of {col.root} is this file or under this folder "
                "(nothing was removed)"
            )
        ids = np.unique(np.concatenate([ids for _, ids in found]))
        n = col.remove(ids)
        left = len(col)
    if args.json:
        _print_json(
            {
                "removed": n,
                "items": left,
                "paths": [{"path": str(p), "items": len(ids)} for p, ids in found],
            }
        )
    else:
        _print(
            f"{args.collection}: removed {n} items, {left} left "
            "(their labels stay in the knowledge base)"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection
    from snoop_nb.export import export_classes

    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise UsageError(f"--out {out}: the file name must end in .csv or .parquet")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: give a file name ending in .csv or .parquet")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: there is no folder {out.parent}: create it first")
    with open_collection(args.collection) as col:
        # never creates: an unknown user or class is exit 2 with the names there are
        if args.class_name is None:
            col.kb.user_id(args.user, create=False)
        else:
            col.kb.get_class(args.user, args.class_name)
        n = export_classes(col, args.user, args.class_name, out)
    _print(f"wrote {n} rows to {out}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from snoop_nb.ui.dashboard import serve

    for name in ("preheat", "cull_after", "max_kernels"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more")
    return serve(
        args.collection,
        port=args.port,
        user=args.user,
        preheat=args.preheat,
        ip=args.ip,
        token=args.token,
        cull_after=args.cull_after,
        max_kernels=args.max_kernels,
        videos=args.videos,
    )


def _session(col, user: str, class_name: str, *, own: bool = False, to: str = "change it"):
    """A feedback session on ``user``'s existing class (or a class shared as ``owner/name``).

    Creates nothing: an unknown user or class is a UsageError (exit 2) listing the names there
    are. ``own``: the class must be the user's own, for verbs that write to it.
    """
    s = col.session(user, class_name, create=False)
    if own and s.read_only:  # refused before anything is computed
        raise UsageError(
            f"{s.ref} belongs to {s.ref.owner}: copy it into your own classes to {to} "
            f"(kb.copy_class({s.user!r}, {str(s.ref)!r}))"
        )
    return s


# keys under which training reports how many labelled items the model still gets wrong
_MISTAKE_KEYS = ("mistakes", "misclassified", "training_mistakes", "wrong")


def _mistakes(quality: dict) -> tuple[str, int] | None:
    """(key, count) of the labels the model still gets wrong, when training reports it."""
    for key in _MISTAKE_KEYS:
        value = quality.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            return key, int(value)
        if isinstance(value, dict) and isinstance(value.get("count"), int):
            return key, int(value["count"])
        if isinstance(value, list):
            return key, len(value)
    return None


def _print_results(df, as_json: bool, columns: list[str]) -> None:
    if as_json:
        _print_json(df.to_dict(orient="records"))
        return
    cols = [c for c in columns if c in df]
    if len(df):
        _print_table(df[cols])
    else:
        _print("no results")


# Characters never printed as they are: controls (ESC starts terminal escape codes), invisible
# and direction-changing characters (Cf), line and paragraph separators, lone surrogates.
_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def escaped(text: str, keep: str = "") -> str:
    """``text`` with unsafe characters written as Python-style escapes (``\\x1b``,
    ``\\u202e``, ``\\U000e0001``), except those in ``keep``.

    >>> escaped("a\\x1b]0;pwned\\x07b.png")
    'a\\\\x1b]0;pwned\\\\x07b.png'
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c in keep or not _unsafe(c) else _escape(c) for c in text)


def _unsafe(c: str) -> bool:
    return unicodedata.category(c) in _UNSAFE


def _escape(c: str) -> str:
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def _print(text: str, file=None) -> None:
    """Print ``text`` with unsafe characters escaped (line breaks kept)."""
    print(escaped(str(text), keep="\n"), file=file or sys.stdout)


def _print_table(df) -> None:
    """A DataFrame as an aligned text table, its text cells escaped before aligning."""
    import pandas as pd

    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object or pd.api.types.is_string_dtype(df[c]):
            df[c] = df[c].map(lambda v: escaped(v) if isinstance(v, str) else v)
    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        _print(df.to_string(index=False))


def json_text(obj) -> str:
    """``obj`` as one line of JSON: NaN as null, numpy values as numbers, and the characters
    json.dumps leaves raw (DEL, C1 controls, Cf, U+2028/9) escaped as ``\\uXXXX``."""
    text = json.dumps(_plain(obj), ensure_ascii=False)
    if text.isascii() and text.isprintable():
        return text
    return "".join(_json_escape(c) if _unsafe(c) else c for c in text)


def _json_escape(c: str) -> str:
    o = ord(c)
    if o < 0x10000:
        return f"\\u{o:04x}"
    o -= 0x10000
    return f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}"


def _print_json(obj) -> None:
    print(json_text(obj))


def _plain(value):
    """``value`` with numpy scalars as Python numbers, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is not None and not isinstance(value, (str, int, float, bool)):
        if value.__class__.__name__ in ("NAType", "NaTType"):
            return None
        return str(value)
    return value


COMMANDS = {
    "index": cmd_index,
    "search": cmd_search,
    "shots": cmd_shots,
    "info": cmd_info,
    "duplicates": cmd_duplicates,
    "map": cmd_map,
    "label": cmd_label,
    "train": cmd_train,
    "rank": cmd_rank,
    "suggest": cmd_suggest,
    "apply": cmd_apply,
    "classes": cmd_classes,
    "votes": cmd_votes,
    "export": cmd_export,
    "remove": cmd_remove,
    "dashboard": cmd_dashboard,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"snoop: error: {escaped(str(e))}", file=sys.stderr)
        return 2
    except SnoopError as e:
        print(f"snoop: error: {escaped(str(e))}", file=sys.stderr)
        return 1
    except OSError as e:  # a file the run could not read or write: say which, no traceback
        where = f": {e.filename}" if e.filename else ""
        print(
            f"snoop: error: {escaped(e.strerror or str(e))}{escaped(str(where))}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        print("snoop: interrupted (run the same command again to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
