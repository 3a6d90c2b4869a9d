"""Indexing on Dask: images/s embedding the demo stamps with the single-process kernel and on
LocalClusters of 1, 2 and 4 worker processes, each into a fresh temporary collection.

    python benchmarks/scale_dask.py                          # data/demo/stamps, every picture
    python benchmarks/scale_dask.py --limit 200 --quick      # 200 pictures, 1 and 2 workers
    python benchmarks/scale_dask.py --workers 1 2 4 8 --json out.json

Rows: ``single process`` is :meth:`Collection.add` (the decoding threads and the model in one
process); ``dask local:N`` is :func:`snoop_nb.scale.add_distributed` on a LocalCluster of N
processes of one thread each, the usable cores shared out between them (what ``snoop index
--dask local:N`` makes).

Columns: ``start-up s`` is what comes before the first picture: loading the model in the
single process; starting the cluster and loading the model on every worker for Dask
(``cluster s`` is the cluster's part alone). ``index s`` is the run itself, from the list of
folders to the committed, indexed collection; ``img/s`` = pictures / ``index s``, ``img/s
end to end`` = pictures / (``start-up s`` + ``index s``). ``max |dv|`` is the largest
difference of a vector from the single-process collection's (same uri), ``top10`` the share
of the 10 nearest neighbours of 100 pictures that are the same in both.

The machine's other load slows every row alike; the JSON records the load average.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, write_json

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = [
    "run",
    "workers",
    "images",
    "cluster s",
    "start-up s",
    "index s",
    "img/s",
    "img/s end to end",
    "max |dv|",
    "top10",
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", type=Path, default=ROOT / "data/demo/stamps")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="use the first N pictures")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], metavar="N")
    p.add_argument("--shard-size", type=int, default=64, metavar="N")
    p.add_argument("--batch-size", type=int, default=32, metavar="N")
    p.add_argument(
        "--quick", action="store_true", help="at most 200 pictures, and 1 and 2 workers only"
    )
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/scale_dask.json")
    return p


def pictures(folder: Path, limit: int | None) -> list[Path]:
    from snoop_nb.media import discover_images

    found = sorted(discover_images([folder]))
    if not found:
        raise SystemExit(f"no pictures under {folder}: run `make demo` (or pass --images DIR)")
    return found[:limit] if limit else found


def link_all(paths: list[Path], folder: Path) -> Path:
    """The chosen pictures as symlinks in one folder (a --limit of a tree, indexed as given)."""
    folder.mkdir(parents=True)
    for i, p in enumerate(paths):
        (folder / f"{i:05d}{p.suffix}").symlink_to(p)
    return folder


def vectors_by_uri(col) -> tuple[list[str], np.ndarray]:
    items = col.items().sort_values("uri")
    return items["uri"].tolist(), col.vectors_of(items["id"])


def top10(v: np.ndarray, rows: np.ndarray) -> np.ndarray:
    sims = v[rows] @ v.T
    sims[np.arange(len(rows)), rows] = -np.inf
    return np.argsort(-sims, axis=1, kind="stable")[:, :10]


def compare(reference: tuple[list[str], np.ndarray], col) -> dict[str, float]:
    uris, want = reference
    got_uris, got = vectors_by_uri(col)
    if got_uris != uris:
        raise RuntimeError(f"{col.root} does not hold the single-process collection's items")
    rows = np.random.default_rng(0).choice(len(uris), min(100, len(uris)), replace=False)
    a, b = top10(want, rows), top10(got, rows)
    same = np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)])
    return {"max |dv|": float(np.abs(got - want).max()), "top10": float(same)}


def speeds(
    name: str, workers: int, images: int, cluster_s: float | None, start_up: float, index_s: float
) -> dict[str, Any]:
    return {
        "run": name,
        "workers": workers,
        "images": images,
        "cluster s": cluster_s,
        "start-up s": start_up,
        "index s": index_s,
        "img/s": images / index_s,
        "img/s end to end": images / (start_up + index_s),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every row of the table (see the module docstring), with the machine's facts."""
    from snoop_nb import open_collection
    from snoop_nb.scale import add_distributed, connect, warm_up

    limit = min(args.limit or 200, 200) if args.quick else args.limit
    workers = [n for n in args.workers if n <= 2] if args.quick else list(args.workers)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="snoop-bench-dask-") as tmp:
        tmp = Path(tmp)
        paths = pictures(args.images, limit)
        source = link_all(paths, tmp / "images")
        n = len(paths)
        print(f"{n} pictures from {args.images}", flush=True)

        t = time.perf_counter()
        col = open_collection(tmp / "single", create=True, device="cpu")
        start_up = time.perf_counter() - t
        t = time.perf_counter()
        report = col.add([source], batch_size=args.batch_size, progress=False)
        index_s = time.perf_counter() - t
        reference = vectors_by_uri(col)
        col.close()
        rows.append(speeds("single process", 1, report.added, None, start_up, index_s))
        print(format_table(rows, COLUMNS[:8]), flush=True)

        for count in workers:
            with open_collection(tmp / f"dask-{count}", create=True, device="cpu") as col:
                t = time.perf_counter()
                with connect(count) as client:
                    cluster_s = time.perf_counter() - t
                    warm_up(client, col, device="cpu")
                    start_up = time.perf_counter() - t
                    t = time.perf_counter()
                    report = add_distributed(
                        col,
                        [source],
                        scheduler=client,
                        shard_size=args.shard_size,
                        batch_size=args.batch_size,
                        device="cpu",
                        progress=False,
                    )
                    index_s = time.perf_counter() - t
                row = speeds(
                    f"dask local:{count}", count, report.added, cluster_s, start_up, index_s
                )
                rows.append({**row, **compare(reference, col)})
            print(format_table(rows[-1:], COLUMNS), flush=True)
    return {
        "benchmark": "scale_dask",
        "images": str(args.images),
        "count": n,
        "shard_size": args.shard_size,
        "batch_size": args.batch_size,
        "rows": rows,
        "machine": machine_info(("numpy", "torch", "onnxruntime", "dask", "distributed")),
    }


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    payload = run(args)
    print(f"\nIndexing {payload['count']} pictures of {args.images} (default embedder, CPU)")
    print(format_table(payload["rows"], COLUMNS))
    print(f"wrote {write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
