"""Region search for many visitors at once: the memory each searching process holds, with the
region vectors memory-mapped from their export (``regions.vectors.npy``, shared pages) and
read from the store into each process (the export removed), and the search latency.

    python benchmarks/regions_memory.py                     # 20k pictures (180k windows), 4 processes
    python benchmarks/regions_memory.py --pictures 5000 --processes 2    # quick

A synthetic collection: ``--pictures`` items with random unit vectors (the default model's
dimension, no files, ``Collection.add_vectors``) and 9 random region vectors each written to
the region store, then exported as ``index_regions`` does. ``--processes`` Python processes
then open it at the same time (the dashboard's kernels, one per visitor), each searching by
``--queries`` random region queries, and report from ``/proc/self/smaps_rollup``: Rss, Pss
(each shared page counted once across the processes that map it) and private memory
(Private_Clean + Private_Dirty, what each process alone holds), after the searches, and the
first search's time (loading) and the median of the others. Writes
``benchmarks/results/regions_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from common import format_table, machine_info, write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "regions_memory.json"
DIM = 512
WINDOWS = 9

# One visitor's kernel: open the collection, search, report memory and times as JSON.
CHILD = r"""
import json, sys, time
import numpy as np
from snoop_nb import open_collection
from snoop_nb.regions import best_regions

root, queries, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
col = open_collection(root)
rng = np.random.default_rng(seed)
times = []
for _ in range(queries):
    q = rng.standard_normal(col.dim).astype(np.float32)
    q /= np.linalg.norm(q)
    t = time.perf_counter()
    ids, sims, boxes = best_regions(col, q, 100)
    times.append(time.perf_counter() - t)
    assert len(ids) == 100
sys.stdout.flush()
print("ready", flush=True)
sys.stdin.readline()  # every process holds its memory while the others measure theirs
mem = {}
for line in open("/proc/self/smaps_rollup"):
    parts = line.split()
    if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
        mem[parts[0][:-1]] = int(parts[1]) / 1024
print(json.dumps({"first_s": times[0], "search_ms": 1000 * float(np.median(times[1:])),
                  "rss_mb": mem["Rss"], "pss_mb": mem["Pss"],
                  "private_mb": mem["Private_Clean"] + mem["Private_Dirty"]}), flush=True)
"""


def build(root: Path, pictures: int, seed: int) -> None:
    from snoop_nb import open_collection
    from snoop_nb.regions import region_boxes

    class Described:  # the collection's model, never loaded: the vectors come from here
        id, dim = "bench-random-512", DIM

        def describe(self) -> dict:
            return {"id": self.id, "name": "bench-random"}

    rng = np.random.default_rng(seed)
    col = open_collection(root, create=True, embedder=Described())
    for s in range(0, pictures, 10_000):
        n = min(10_000, pictures - s)
        col.add_vectors(
            [f"https://example.org/p/{i}.jpg" for i in range(s, s + n)],
            rng.standard_normal((n, DIM)).astype(np.float32),
            update_index=False,
        )
    store = col.region_store(create=True)
    boxes = region_boxes()[:WINDOWS]
    store.reset(boxes)
    ids = col.ok_ids()
    for s in range(0, len(ids), 2_000):
        rows = []
        for i in ids[s : s + 2_000]:
            v = rng.standard_normal((WINDOWS, DIM)).astype(np.float32)
            rows.append((int(i), boxes, v / np.linalg.norm(v, axis=1, keepdims=True), None))
        store.put(rows)
    store.export()
    col.close()


def measure(root: Path, processes: int, queries: int) -> list[dict]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), str(queries), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for n in range(processes)
    ]
    for p in procs:  # all have searched (and hold their memory) before any measures
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    out = []
    for p in procs:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write("\n")
        p.stdin.flush()
        out.append(json.loads(p.stdout.readline()))
        p.wait(timeout=120)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pictures", type=int, default=20_000)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--queries", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    from snoop_nb.regions import EXPORT_ROWS, EXPORT_VECTORS

    rows = []
    with tempfile.TemporaryDirectory(prefix="snoop-regions-mem-") as tmp:
        root = Path(tmp) / "col"
        t0 = time.perf_counter()
        build(root, args.pictures, args.seed)
        built = time.perf_counter() - t0
        windows = args.pictures * WINDOWS
        mb = (root / EXPORT_VECTORS).stat().st_size / 2**20
        for how in ("memory-mapped export", "read from the store"):
            if how == "read from the store":
                (root / EXPORT_ROWS).unlink()
            got = measure(root, args.processes, args.queries)
            rows.append(
                {
                    "vectors": how,
                    "pictures": args.pictures,
                    "windows": windows,
                    "vectors MB": round(mb, 1),
                    "processes": args.processes,
                    "private MB each": float(np.median([g["private_mb"] for g in got])),
                    "PSS MB each": float(np.median([g["pss_mb"] for g in got])),
                    "PSS MB all": float(sum(g["pss_mb"] for g in got)),
                    "first search s": float(np.median([g["first_s"] for g in got])),
                    "search ms": float(np.median([g["search_ms"] for g in got])),
                }
            )
    cols = ["vectors", "pictures", "windows", "vectors MB", "processes", "private MB each"]
    cols += ["PSS MB each", "PSS MB all", "first search s", "search ms"]
    print(format_table(rows, cols))
    write_json(
        args.json,
        {"machine": machine_info(["numpy"]), "args": vars(args), "build_s": built, "rows": rows},
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
