"""Compressed vectors at 1M and 10M items: build rate, one feedback round, memory, recall.

    python benchmarks/scale_codes.py                          # 1M and 10M (10M: ~26 GB of disk)
    python benchmarks/scale_codes.py --sizes 1000000          # 1M only
    python benchmarks/scale_codes.py --quick                  # 100k, a smoke run

Each size is a synthetic collection written straight in the collection format under
``--cache-dir`` (benchmarks/feedback.py's writer: vectors drawn from a kernel density estimate
of the demo's real embeddings, see benchmarks/index.py's ``KDEGenerator``), with a ``pca-sq8``
index (``--shards`` shards; 8-bit codes of a 128-d PCA projection, see
snoop_nb/index/compressed.py). Reported:

- **build**: vectors/s of building the index from ``vectors.f16`` (``col.sync_index``: fit the
  projection and the 8-bit ranges, encode every vector, save), wall and CPU seconds;
- **round**: one feedback round through the real session API: label the 20 best unlabelled
  items of the previous ranking (from a synthetic truth: the 1% of items closest to a class
  direction), train, rank the top 100; median and 90th percentile over ``--sessions`` classes
  of ``--rounds`` rounds each (after one warm-up round each);
- **memory**: the process's resident set (VmRSS) and its peak (VmHWM) after the rounds, in a
  process that opened the collection and loaded the index; the memory map of ``vectors.f16``
  counts for the pages the rounds read (the re-scored candidates and the labels);
- **recall@100**: each session's last ranking (the classifier's top 100 through the codes)
  against the exact top 100 of the same model over every float16 vector.

Also a check that the projection suits real embeddings and not only these synthetic ones:
the rank correlation of codes' scores with exact scores, for classifier-like directions, on
the demo's real embeddings and on a synthetic sample of the same size (``--real``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import format_table, machine_info, write_json  # noqa: E402

USER = "bench"


def rss() -> dict[str, float]:
    """This process's resident set and its peak, in GB (Linux /proc)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1e6
    return out


def load_avg() -> list[float]:
    return [round(x, 2) for x in __import__("os").getloadavg()]


def synthetic(cache: Path, n: int, shards: int, collection: Path, seed: int = 0):
    """The cached synthetic ``pca-sq8`` collection of ``n`` items (vectors written if missing)."""
    from feedback import build_synthetic, real_vectors
    from index import KDEGenerator

    root = cache / f"scale_syn_{n}"
    marker = root / "fb_synthetic.json"
    real, manifest, groups = real_vectors(collection)
    direction = groups.get("vehicles", real).mean(axis=0)
    if not (marker.exists() and json.loads(marker.read_text()).get("n") == n):
        print(f"  writing {n:,} synthetic vectors to {root} ...", flush=True)
        man = dict(manifest)
        man["index"] = {"kind": "pca-sq8", "project_dim": 128, "candidates": 1000}
        build_synthetic(root, n, KDEGenerator(real), man, seed)
    # the shard count may change between runs: it lives in the manifest only
    man_path = root / "manifest.json"
    man = json.loads(man_path.read_text())
    want = {"kind": "pca-sq8", "project_dim": 128, "candidates": 1000}
    if shards > 1:
        want["shards"] = shards
    if man["index"] != want:
        man["index"] = want
        man_path.write_text(json.dumps(man, indent=2))
        for p in root.glob("index.hnsw*"):
            p.unlink()
    return root, direction


class Truth:
    """The items closest to a direction (top ``share``): the synthetic class."""

    def __init__(self, col, direction: np.ndarray, share: float = 0.01):
        self.col = col
        self.d = (direction / np.linalg.norm(direction)).astype(np.float32)
        step = max(1, col.rows // 20000)
        sample = np.arange(0, col.rows, step)
        sims = col.vectors_of(sample) @ self.d
        self.threshold = float(np.quantile(sims, 1 - share))
        self.seeds = sample[np.argsort(-sims)[:8]]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.col.vectors_of(ids) @ self.d >= self.threshold


def build(root: Path) -> dict[str, Any]:
    from snoop_nb.collection import open_collection

    info_path = root / "scale_index.json"
    col = open_collection(root)
    if not any(root.glob("index.hnsw*")):
        print(f"  building the index of {col.rows:,} vectors ...", flush=True)
        la = load_avg()
        t0, c0 = time.perf_counter(), time.process_time()
        col.sync_index(save=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        info = {
            "build_seconds": round(wall, 1),
            "build_cpu_seconds": round(cpu, 1),
            "vectors_per_second": round(col.rows / wall),
            "load_before": la,
            "load_after": load_avg(),
        }
        info_path.write_text(json.dumps(info))
    col.close()
    return json.loads(info_path.read_text())


def rounds(root: Path, direction: np.ndarray, sessions: int, n_rounds: int, k: int) -> dict:
    """Feedback rounds in this process (which opens the collection fresh), then recall."""
    from snoop_nb.collection import open_collection
    from snoop_nb.learn.rank import top_exact

    before = rss()
    col = open_collection(root)
    t0 = time.perf_counter()
    _ = col.index
    load_s = time.perf_counter() - t0
    truth = Truth(col, direction)
    times: list[dict[str, float]] = []
    finals = []
    la = load_avg()
    for si in range(sessions):
        s = col.session(USER, f"scale-{si}-{time.time_ns()}", seed=si)
        s.label([int(truth.seeds[si % len(truth.seeds)])], +1)
        shown = s.rank(100, exact=False)
        shown = shown.loc[shown["label"] == 0, "id"].to_numpy(np.int64)[:k]
        for r in range(n_rounds + 1):
            t = [time.perf_counter()]
            y = truth(shown)
            if y.any():
                s.label(shown[y], +1)
            if (~y).any():
                s.label(shown[~y], -1)
            t.append(time.perf_counter())
            s.train()
            t.append(time.perf_counter())
            df = s.rank(100, exact=False)
            t.append(time.perf_counter())
            if r > 0:  # round 0 warms the session up
                times.append(
                    {
                        "label": t[1] - t[0],
                        "train": t[2] - t[1],
                        "rank": t[3] - t[2],
                        "round": t[3] - t[0],
                    }
                )
            shown = df.loc[df["label"] == 0, "id"].to_numpy(np.int64)[:k]
        finals.append((s, df["id"].to_numpy(np.int64)))
    mem = rss()
    la_after = load_avg()
    recalls = []
    t0 = time.perf_counter()
    for s, got in finals:
        w, b = s._direction()
        exact_ids, _ = top_exact(col, w, b, 100)
        recalls.append(len(np.intersect1d(exact_ids, got)) / 100)
    exact_s = (time.perf_counter() - t0) / len(finals)
    out: dict[str, Any] = {
        "items": len(col),
        "index_load_seconds": round(load_s, 2),
        "rounds_timed": len(times),
        "rss_gb_before_open": round(before.get("VmRSS", 0), 2),
        "rss_gb": round(mem.get("VmRSS", 0), 2),
        "peak_rss_gb": round(mem.get("VmHWM", 0), 2),
        "recall_at_100": [round(r, 3) for r in recalls],
        "recall_at_100_mean": round(float(np.mean(recalls)), 3),
        "exact_top100_seconds": round(exact_s, 1),
        "load_during_rounds": [la, la_after],
        "index_bytes": sum(p.stat().st_size for p in root.glob("index.hnsw*")),
    }
    for key in ("label", "train", "rank", "round"):
        vals = np.asarray([x[key] for x in times]) * 1e3
        out[f"{key}_ms_median"] = round(float(np.median(vals)), 1)
        out[f"{key}_ms_p90"] = round(float(np.quantile(vals, 0.9)), 1)
    col.close()
    return out


def real_check(collection: Path, seed: int = 0) -> dict[str, Any]:
    """Spearman correlation of codes' scores with exact ones, real against synthetic vectors."""
    from feedback import real_vectors
    from index import KDEGenerator

    from snoop_nb.index.compressed import CompressedIndex

    real, _, groups = real_vectors(collection)
    rng = np.random.default_rng(seed)
    synth = KDEGenerator(real).sample(len(real), rng).astype(np.float32)
    out = {}
    for name, x in (("real (demo)", real), ("synthetic", synth)):
        rows = x.astype(np.float16)
        idx = CompressedIndex(x.shape[1], vectors=rows, project_dim=128, min_fit=1)
        idx.add(np.arange(len(rows)), rows)
        cors = []
        for g in groups.values():
            if len(g) < 10:
                continue
            w = g.mean(0) - real.mean(0)  # a class-vs-rest direction
            _, approx = idx.approximate_scores(w)
            exact = rows.astype(np.float32) @ w
            ra, re = np.argsort(np.argsort(approx)), np.argsort(np.argsort(exact))
            cors.append(float(np.corrcoef(ra, re)[0, 1]))
        out[name] = {
            "items": len(x),
            "directions": len(cors),
            "spearman": round(float(np.mean(cors)), 4),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="1000000,10000000")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--sessions", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("-k", type=int, default=20, help="labels per round")
    p.add_argument("--cache-dir", default="/tmp")
    p.add_argument("--collection", default=str(HERE.parent / "data/demo/collection"))
    p.add_argument("--quick", action="store_true", help="100k items, 2 sessions of 2 rounds")
    p.add_argument("--out", default=str(HERE / "results/scale_codes.json"))
    p.add_argument("--rounds-in", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds_in:  # the child process of main(): the rounds alone
        root = Path(args.rounds_in)
        direction = np.load(root / "scale_direction.npy")
        print("RESULT", json.dumps(rounds(root, direction, args.sessions, args.rounds, args.k)))
        return 0
    if args.quick:
        args.sizes, args.sessions, args.rounds = "100000", 2, 2
    result: dict[str, Any] = {
        "machine": machine_info(("numpy", "faiss-cpu")),
        "args": vars(args),
        "sizes": {},
    }
    result["real_check"] = real_check(Path(args.collection))
    for n in [int(x) for x in args.sizes.split(",")]:
        root, direction = synthetic(Path(args.cache_dir), n, args.shards, Path(args.collection))
        b = build(root)
        # the rounds run in a fresh process, so that its memory is the round's alone
        np.save(root / "scale_direction.npy", direction)
        cmd = [
            sys.executable,
            __file__,
            "--rounds-in",
            str(root),
            "--sessions",
            str(args.sessions),
            "--rounds",
            str(args.rounds),
            "-k",
            str(args.k),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            raise SystemExit(f"the rounds at {n:,} failed")
        result["sizes"][str(n)] = {"build": b, **json.loads(line[0][7:])}
    rows = []
    for n, r in result["sizes"].items():
        rows.append(
            {
                "items": f"{int(n):,}",
                "build vec/s": r["build"]["vectors_per_second"],
                "round ms (p90)": f"{r['round_ms_median']} ({r['round_ms_p90']})",
                "label / train / rank ms": f"{r['label_ms_median']} / {r['train_ms_median']} / "
                f"{r['rank_ms_median']}",
                "RSS GB (peak)": f"{r['rss_gb']} ({r['peak_rss_gb']})",
                "recall@100": r["recall_at_100_mean"],
                "index MB": round(r["index_bytes"] / 1e6),
            }
        )
    print(format_table(rows, list(rows[0])))
    print("\ncodes' scores against exact, rank correlation over class directions:")
    for name, r in result["real_check"].items():
        print(f"  {name:12s} {r['items']} items, {r['directions']} directions: {r['spearman']}")
    write_json(Path(args.out), result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
