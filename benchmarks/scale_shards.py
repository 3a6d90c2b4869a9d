"""Sharded against single indexes: build time, query throughput and recall, per index kind.

    python benchmarks/scale_shards.py                   # 200k vectors, shards 1/2/4
    python benchmarks/scale_shards.py --n 1000000       # slower: HNSW builds take minutes
    python benchmarks/scale_shards.py --quick           # 50k vectors

The vectors are a synthetic collection (benchmarks/feedback.py's writer, draws around the
demo's real embeddings) cached under ``--cache-dir``; each configuration rebuilds its index
with ``Collection.reindex`` (timed: wall and CPU), then answers ``--queries`` held-out queries
one at a time (the interactive case: queries/s) and as one batch, and its top 10 is compared
with exact search (recall@10). Every shard's scores are exact (a graph's distances, or a
re-score of candidates), so the merge loses nothing: recall moves only with each shard's own
search breadth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import format_table, machine_info, write_json  # noqa: E402

CONFIGS = (
    ("hnsw-pca", 1),
    ("hnsw-pca", 2),
    ("hnsw-pca", 4),
    ("pca-sq8", 1),
    ("pca-sq8", 2),
    ("pca-sq8", 4),
)


def collection(cache: Path, n: int, source: Path):
    from feedback import build_synthetic, real_vectors
    from index import KDEGenerator

    root = cache / f"scale_shards_{n}"
    real, manifest, _ = real_vectors(source)
    gen = KDEGenerator(real)
    marker = root / "fb_synthetic.json"
    if not (marker.exists() and json.loads(marker.read_text()).get("n") == n):
        print(f"  writing {n:,} synthetic vectors to {root} ...", flush=True)
        build_synthetic(root, n, gen, manifest, seed=0)
    queries = gen.sample(1000, np.random.default_rng(99)).astype(np.float32)
    return root, queries


def measure(root: Path, queries: np.ndarray, kind: str, shards: int, k: int = 10) -> dict:
    from snoop_nb.collection import open_collection

    col = open_collection(root)
    t0, c0 = time.perf_counter(), time.process_time()
    index = col.reindex(kind=kind, shards=shards)
    build, cpu = time.perf_counter() - t0, time.process_time() - c0
    exact = col.exact_index()
    truth, _ = exact.search(queries, k)
    index.search(queries[:5], k)  # warm
    t0 = time.perf_counter()
    found = np.stack([index.search(q, k)[0][0] for q in queries])
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch, _ = index.search(queries, k)
    many = time.perf_counter() - t0
    recall = float(
        np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth, strict=True)])
    )
    out = {
        "kind": kind,
        "shards": shards,
        "items": len(col),
        "build_seconds": round(build, 1),
        "build_cpu_seconds": round(cpu, 1),
        "queries_per_second_one_at_a_time": round(len(queries) / one, 1),
        "queries_per_second_batch": round(len(queries) / many, 1),
        "recall_at_10": round(recall, 4),
        "same_as_batch": bool((batch == found).all()),
        "index_bytes": sum(p.stat().st_size for p in root.glob("index.hnsw*")),
    }
    col.close()
    return out


def run(args) -> dict[str, Any]:
    root, queries = collection(Path(args.cache_dir), args.n, Path(args.collection))
    queries = queries[: args.queries]
    rows = []
    for kind, shards in CONFIGS:
        if shards > args.max_shards:
            continue
        print(f"  {kind}, {shards} shard(s) ...", flush=True)
        rows.append(measure(root, queries, kind, shards))
    return {"machine": machine_info(("numpy", "hnswlib", "faiss-cpu")), "n": args.n,
            "queries": len(queries), "rows": rows}  # fmt: skip


def print_table(result: dict) -> None:
    cols = ["kind", "shards", "build s (cpu)", "q/s one", "q/s batch", "recall@10", "index MB"]
    table = [
        {
            "kind": r["kind"],
            "shards": r["shards"],
            "build s (cpu)": f"{r['build_seconds']} ({r['build_cpu_seconds']})",
            "q/s one": r["queries_per_second_one_at_a_time"],
            "q/s batch": r["queries_per_second_batch"],
            "recall@10": r["recall_at_10"],
            "index MB": round(r["index_bytes"] / 1e6, 1),
        }
        for r in result["rows"]
    ]
    print(f"\n{result['n']:,} vectors, {result['queries']} held-out queries")
    print(format_table(table, cols))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--max-shards", type=int, default=4)
    p.add_argument("--cache-dir", default="/tmp")
    p.add_argument("--collection", default=str(HERE.parent / "data/demo/collection"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(HERE / "results/scale_shards.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.queries, args.max_shards = 50_000, 100, 2
    result = run(args)
    print_table(result)
    write_json(Path(args.out), result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
