"""The ``snoop`` command line: index folders, search them, describe a collection, and build
personal visual classes (label, train, rank, export).

Exit codes: 0 on success (also when some files were bad and reported), 2 on usage errors,
1 on any other failure, always with a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
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

    ix = sub.add_parser("index", help="add the images under PATH... to a collection")
    ix.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
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
    ix.add_argument("--quiet", action="store_true", help="no progress bar")
    ix.add_argument("--json", action="store_true", help="print the run's report as JSON")

    se = sub.add_parser("search", help="search a collection by image, text or item")
    se.add_argument("--collection", required=True, metavar="DIR")
    q = se.add_mutually_exclusive_group(required=True)
    q.add_argument("--image", metavar="FILE")
    q.add_argument("--text")
    q.add_argument("--item", type=int, metavar="ID")
    se.add_argument("-k", type=_positive, default=10, metavar="K")
    se.add_argument("--exact", action="store_true", help="exact search, whatever the size")
    se.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    se.add_argument("--json", action="store_true")

    inf = sub.add_parser("info", help="describe a collection")
    inf.add_argument("--collection", required=True, metavar="DIR")
    inf.add_argument("--json", action="store_true")

    def class_parser(
        name: str, help: str, *, class_required: bool = True
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--collection", required=True, metavar="DIR")
        sp.add_argument("--user", required=True, metavar="U")
        sp.add_argument("--class", dest="class_name", required=class_required, metavar="NAME")
        return sp

    lb = class_parser("label", "label items relevant (--pos) or not (--neg) for a class")
    lb.add_argument("--pos", type=int, nargs="+", default=[], metavar="ID")
    lb.add_argument("--neg", type=int, nargs="+", default=[], metavar="ID")
    lb.add_argument("--clear", type=int, nargs="+", default=[], metavar="ID")
    tr = class_parser("train", "train the class's classifier on its labels")
    tr.add_argument("--json", action="store_true")
    rk = class_parser("rank", "rank the collection with the class's latest classifier")
    rk.add_argument("-k", type=_positive, default=20, metavar="K")
    rk.add_argument("--json", action="store_true")
    ex = class_parser(
        "export", "export labels and applied classes to CSV or Parquet", class_required=False
    )
    ex.add_argument("--out", required=True, metavar="FILE")

    db = sub.add_parser("dashboard", help="serve the dashboard on 127.0.0.1 (Voila)")
    db.add_argument("--collection", required=True, metavar="DIR")
    db.add_argument("--port", type=_positive, default=8866, metavar="P")
    db.add_argument("--user", metavar="U", help="label as U (default: each visitor names themself)")
    db.add_argument(
        "--preheat",
        type=int,
        default=1,
        metavar="N",
        help="kernels kept ready, model loaded, for the next visitors (0: none; default 1)",
    )
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _version() -> str:
    from snoop_nb import __version__

    return f"snoop-nb {__version__}"


def cmd_index(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    missing = [p for p in args.paths if not os.path.lexists(p)]
    if missing:
        raise UsageError(f"{missing[0]}: no such file or directory")
    col = open_collection(
        args.collection,
        create=True,
        model=args.model,
        pretrained=args.pretrained,
        device=args.device,
    )
    with col:
        report = col.add(
            args.paths,
            batch_size=args.batch_size,
            workers=args.workers,
            progress=False if args.quiet else None,
        )
        if args.json:
            print(
                json.dumps(
                    {
                        "collection": str(col.root),
                        "discovered": report.discovered,
                        "added": report.added,
                        "replaced": report.replaced,
                        "skipped": report.skipped,
                        "errors": [{"uri": u, "reason": r} for u, r in report.errors],
                        "items": len(col),
                        "seconds": round(report.seconds, 3),
                    }
                )
            )
        else:
            print(f"{col.root}: {report}; {len(col)} items in all")
            for uri, reason in report.errors:
                print(f"  skipped {uri}: {reason}", file=sys.stderr)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    if args.image is not None and not Path(args.image).is_file():
        raise UsageError(f"--image {args.image}: no such file")
    col = open_collection(args.collection, device=args.device)
    with col:
        df = col.search(
            item=args.item,
            image=args.image,
            text=args.text,
            k=args.k,
            exact=True if args.exact else None,
        )
    if args.json:
        print(json.dumps([_jsonable(r) for r in df.to_dict(orient="records")], ensure_ascii=False))
    else:
        import pandas as pd

        with pd.option_context("display.max_colwidth", 80, "display.width", 200):
            print(
                df[["rank", "id", "score", "uri"]].to_string(index=False)
                if len(df)
                else "no results"
            )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    with open_collection(args.collection) as col:
        info = col.info()
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
    else:
        print(f"collection  {info['path']}")
        print(f"items       {info['items']}")
        print(f"bad files   {len(info['errors'])}")
        print(f"model       {info['model']}  ({info['embedder']}, dim {info['dim']})")
        print(
            f"index       {info['index'].get('kind')}  {info['index'].get('bytes', 0) / 1e6:.1f} MB"
        )
        for err in info["errors"][:20]:
            print(f"  {err['uri']}: {err['reason']}")
        if len(info["errors"]) > 20:
            print(f"  ... and {len(info['errors']) - 20} more (see --json)")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    if not (args.pos or args.neg or args.clear):
        raise UsageError("nothing to label: give --pos, --neg or --clear item ids")
    both = set(args.pos) & set(args.neg)
    if both:
        raise UsageError(f"item {min(both)} is given both --pos and --neg")
    with open_collection(args.collection) as col:
        s = col.session(args.user, args.class_name)
        for ids, value in ((args.pos, 1), (args.neg, -1), (args.clear, 0)):
            if ids:
                s.label(ids, value)
        n = s.counts()
        print(f"{s.ref}: {n['pos']} relevant, {n['neg']} not relevant")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    with open_collection(args.collection) as col:
        s = col.session(args.user, args.class_name)
        m = s.train()
    out = {
        "class": str(s.ref),
        "model_id": m.id,
        "positives": m.n_pos,
        "negatives": m.n_neg,
        "pseudo_negatives": m.params.get("pseudo_negatives", 0),
        "quality": m.quality,
    }
    if args.json:
        print(json.dumps(out))
    else:
        q = m.quality
        est = (
            f"average precision {q['average_precision']:.3f}, balanced accuracy "
            f"{q['balanced_accuracy']:.3f} ({q['cv_folds']}-fold, {q['negatives']} negatives)"
            if q.get("cv_folds")
            else q.get("reason", "")
        )
        print(f"{s.ref}: model {m.id} from {m.n_pos} relevant, {m.n_neg} not relevant; {est}")
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection

    with open_collection(args.collection) as col:
        s = col.session(args.user, args.class_name)
        if s.model() is None:
            raise UsageError(f"{s.ref} has no trained model: run `snoop train` first")
        df = s.rank(args.k)
    _print_results(df, args.json, ["rank", "id", "score", "label", "uri"])
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from snoop_nb.collection import open_collection
    from snoop_nb.export import export_classes

    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise UsageError(f"--out {out}: the file name must end in .csv or .parquet")
    with open_collection(args.collection) as col:
        n = export_classes(col, args.user, args.class_name, out)
    print(f"wrote {n} rows to {out}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from snoop_nb.ui.dashboard import serve

    if args.preheat < 0:
        raise UsageError("--preheat must be 0 or more")
    return serve(args.collection, port=args.port, user=args.user, preheat=args.preheat)


def _print_results(df, as_json: bool, columns: list[str]) -> None:
    if as_json:
        print(json.dumps([_jsonable(r) for r in df.to_dict(orient="records")], ensure_ascii=False))
        return
    import pandas as pd

    with pd.option_context("display.max_colwidth", 80, "display.width", 200):
        cols = [c for c in columns if c in df]
        print(df[cols].to_string(index=False) if len(df) else "no results")


def _jsonable(row: dict) -> dict:
    """A result row with NaN as null and numpy scalars as Python numbers."""
    out = {}
    for key, value in row.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            value = None
        out[key] = value
    return out


COMMANDS = {
    "index": cmd_index,
    "search": cmd_search,
    "info": cmd_info,
    "label": cmd_label,
    "train": cmd_train,
    "rank": cmd_rank,
    "export": cmd_export,
    "dashboard": cmd_dashboard,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as e:
        print(f"snoop: error: {e}", file=sys.stderr)
        return 2
    except SnoopError as e:
        print(f"snoop: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("snoop: interrupted (run the same command again to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
