"""Benchmark the vector indexes: build rate, queries/s, recall@10 against exact search, bytes/vector.

    python benchmarks/index.py --real /tmp/idx_demo/real.npy              # 100k and 1M
    python benchmarks/index.py --collection DIR --sizes 100000 --json out.json
    python benchmarks/index.py --real real.npy --quick                     # a smoke run, < 1 min
    python benchmarks/index.py --sizes 100000 --collection-kinds hnsw-pca,hnsw  # + collections

Without ``--real``/``--collection`` it uses the demo collection (``make demo``) if there is one.

Rows
----
``real``: the embeddings given with ``--collection DIR`` (``DIR/manifest.json`` names ``dim``;
``DIR/vectors.f16`` holds raw float16 rows; all-zero rows are failed items and are dropped) or
``--real FILE.npy``, indexed as they are. The queries are the items themselves (query by example,
as a user clicks an image); an item counts among its own 10 nearest.

``synthetic``: ``n`` vectors drawn from a Gaussian kernel density estimate of the real
embeddings: pick a real embedding ``c`` uniformly, add ``h * z @ L`` where ``z ~ N(0, I)`` and
``L`` is the real set's covariance factor (``Sigma = L.T @ L``, from the SVD of the centred real
rows), clip negative entries to 0 when the real embeddings have none (pooled ReLU features are
non-negative and about half zeros; clipping keeps them so), renormalise, store as float16. The
bandwidth ``h`` is fitted (bisection) so that a sample of the real set's size has the real set's
mean 1-NN cosine similarity: the synthetic set looks like more draws from the distribution the
real set came from. The noise spans all of the real set's principal directions, so neighbourhoods
are high-dimensional: a harder case for a graph index than a real corpus with its near-duplicates,
and far easier than uniform random vectors, which have no neighbours at all. The queries are
further draws, held out of the index. Without real embeddings the seed is itself synthetic
(``synthetic-seed`` rows: 64 clusters, each a random centre plus Gaussian noise in a random 32-d
subspace).

Method
------
- build: ``HNSWIndex(dim, M, ef_construction, threads=2)``, ``add`` in chunks of 50,000 float16
  rows (the float32 conversion is part of the cost), timed; exact search needs no build.
- search: one core for all (hnswlib ``num_threads=1``; BLAS limited to one thread with
  threadpoolctl). ``qps 1q``: one query per call, as an interactive user makes them; ``qps
  batch``: all queries in one call. Exact single-query speed at large ``n`` is timed on a sample
  (``--exact-budget`` seconds).
- ``cpu`` columns: the same rates from process CPU time rather than the wall clock (a build's
  CPU seconds divided by its 2 threads): what an idle machine gives when others share this one.
- baselines: ``exact`` is ``ExactIndex`` (float32 dot products over float16 rows, converted per
  query); ``exact-f32`` is numpy over a float32 copy of the matrix (twice the memory, no
  conversion), the stronger baseline. ``x exact`` / ``x f32``: single-query speed-up over each.
- recall@10: the share of the exact top 10 (``ExactIndex``) that the index returns, averaged
  over the queries.
- bytes/vec: the saved index files' size / n; ``+f16 store`` adds the ``2 * dim`` bytes of the
  float16 vectors a collection keeps anyway.
- ``hnsw+pcaP``: ``snoop_nb.index.ProjectedIndex``: HNSW (cosine) over a P-d PCA projection
  (uncentred, fitted on up to 20,000 rows), then an exact re-score of the ``ef`` candidates with
  the full float16 vectors, read from the benchmark's own float16 matrix as from an external
  store (``vectors=``: no copy, row i = id i), the way a collection reads its ``vectors.f16``.
  Its bytes/vec are the graph, the projection and the id table (``index.hnsw.npz``).
- ``collection:KIND`` (``--collection-kinds``, synthetic sets only): the whole collection path.
  The vectors are written as a collection on disk (``manifest.json`` whose ``index`` entry has
  that kind and ``--M``/``--ef-construction``/``--project-dim``; ``catalog.sqlite`` with one
  ``ok`` item per row; ``vectors.f16``) in a temporary folder, then ``Collection.sync_index``
  builds the index from the memory-mapped vectors (timed: ``build``) and saves it (``save s``);
  a fresh ``open_collection`` then loads it (``load s``), and the queries go to ``col.index``.
  The build uses the collection's own threads (hnswlib on every usable core: 2 here); its cpu
  rate, like the others', divides the CPU seconds by 2, which flatters the parts that run on one
  thread (reading the vectors, converting them, the projection's fit): trust the wall rate on an
  idle machine and read the load average that is printed with it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, write_json

from snoop_nb.index import ExactIndex, HNSWIndex, ProjectedIndex

ROOT = Path(__file__).resolve().parent.parent
DEMO_COLLECTION = ROOT / "data" / "demo" / "collection"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "index.json"
K = 10
BUILD_THREADS = 2
ADD_CHUNK = 50_000
COLUMNS = [
    "data",
    "n",
    "dim",
    "index",
    "ef",
    "recall@10",
    "qps 1q",
    "cpu qps 1q",
    "x exact",
    "x f32",
    "cpu qps batch",
    "build /s",
    "cpu build /s",
    "bytes/vec",
    "+f16 store",
]

COLLECTION_COLUMNS = ["data", "n", "index", "build /s", "cpu build /s", "save s", "load s"]


# --- data ----------------------------------------------------------------------------------
def load_real(collection: str | None, real: str | None) -> np.ndarray | None:
    """The real embeddings as float16 rows (zero rows dropped), or None when none were given."""
    if collection:
        folder = Path(collection)
        dim = int(json.loads((folder / "manifest.json").read_text())["dim"])
        vecs = np.fromfile(folder / "vectors.f16", dtype=np.float16).reshape(-1, dim)
    elif real:
        vecs = np.load(real)
    else:
        return None
    vecs = np.asarray(vecs, dtype=np.float32)
    vecs = vecs[np.any(vecs != 0, axis=1)]
    return normalise(vecs).astype(np.float16)


def normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def synthetic_seed(dim: int, rng: np.random.Generator, n: int = 2000) -> np.ndarray:
    """A stand-in for real embeddings: 64 clusters, each noise in a random 32-d subspace."""
    centres = normalise(rng.standard_normal((64, dim), dtype=np.float32))
    which = rng.integers(0, 64, n)
    bases = rng.standard_normal((64, 32, dim), dtype=np.float32) / np.sqrt(dim)
    noise = np.einsum("nr,nrd->nd", rng.standard_normal((n, 32), dtype=np.float32), bases[which])
    return normalise(centres[which] + 0.8 * noise).astype(np.float16)


def mean_nn_similarity(x: np.ndarray) -> float:
    """Mean cosine similarity of each row to its nearest other row."""
    x = np.asarray(x, np.float32)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return float(sims.max(axis=1).mean())


class KDEGenerator:
    """Draws from a Gaussian kernel density estimate of ``seed`` (see the module docstring)."""

    def __init__(self, seed: np.ndarray, bandwidth: float | None = None):
        self.centres = np.asarray(seed, np.float32)
        n = len(self.centres)
        _, s, vt = np.linalg.svd(self.centres - self.centres.mean(0), full_matrices=False)
        self.factor = ((s / np.sqrt(max(n - 1, 1)))[:, None] * vt).astype(np.float32)
        self.rectify = bool(self.centres.min() >= 0)
        self.target_nn = mean_nn_similarity(self.centres)
        self.bandwidth = self.fit_bandwidth() if bandwidth is None else bandwidth

    def sample(self, n: int, rng: np.random.Generator, h: float | None = None) -> np.ndarray:
        h = self.bandwidth if h is None else h
        out = np.empty((n, self.centres.shape[1]), np.float16)
        for start in range(0, n, 65536):
            m = min(65536, n - start)
            z = rng.standard_normal((m, len(self.factor)), dtype=np.float32)
            x = self.centres[rng.integers(0, len(self.centres), m)] + h * (z @ self.factor)
            if self.rectify:
                np.maximum(x, 0, out=x)
            out[start : start + m] = normalise(x)
        return out

    def fit_bandwidth(self, draws: int = 3, steps: int = 14) -> float:
        """Bisect ``h`` so that a real-sized sample's mean 1-NN similarity is the real one's."""
        lo, hi = 0.0, 4.0
        for _ in range(steps):
            h = (lo + hi) / 2
            nn = np.mean(
                [
                    mean_nn_similarity(self.sample(len(self.centres), np.random.default_rng(i), h))
                    for i in range(draws)
                ]
            )
            lo, hi = (h, hi) if nn > self.target_nn else (lo, h)
        return (lo + hi) / 2

    def describe(self, sample: np.ndarray) -> dict:
        """How a sample compares with the seed: zero share and pairwise similarity quantiles."""

        def stats(x: np.ndarray) -> dict:
            x = np.asarray(x[:2000], np.float32)
            pairs = (x @ x.T)[np.triu_indices(len(x), 1)]
            q = np.quantile(pairs, [0.01, 0.5, 0.99])
            return {
                "zero_share": float((x == 0).mean()),
                "pair_cos_q01_q50_q99": q.round(3).tolist(),
            }

        return {"seed": stats(self.centres), "synthetic": stats(sample)}


# --- measuring -----------------------------------------------------------------------------
@contextmanager
def one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # then BLAS uses its own default; set OPENBLAS_NUM_THREADS=1 instead
        yield
        return
    with threadpool_limits(1):
        yield


def top_k_f32(matrix: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Row numbers of the ``k`` best rows of a float32 matrix for each query (brute force)."""
    sims = normalise(np.asarray(queries, np.float32)) @ matrix.T
    part = (
        np.argpartition(-sims, k - 1, axis=1)[:, :k] if sims.shape[1] > k else np.argsort(-sims, 1)
    )
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1)[:, :k]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = (found[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)
    return float(hits.any(axis=2).sum(axis=1).mean() / truth.shape[1])


class Clock:
    """Wall-clock and process CPU seconds of a block (CPU time is what a free machine would take
    on a busy one; for a multi-threaded block divide it by the threads)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = -time.perf_counter(), -time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter()
        self.cpu += time.process_time()


def time_single(
    search, queries: np.ndarray, budget_s: float, at_least: int = 3
) -> tuple[int, Clock]:
    """One-query calls over all queries, or as many as ``budget_s`` allows: (count, clock)."""
    done = 0
    with Clock() as clock:
        t0 = time.perf_counter()
        for i in range(len(queries)):
            search(queries[i : i + 1])
            done += 1
            if done >= at_least and time.perf_counter() - t0 > budget_s:
                break
    return done, clock


def one_search_thread(idx) -> None:
    """Search on one thread from here on (a projected index before its fit has no graph)."""
    graph = getattr(idx, "_graph", idx)
    if isinstance(graph, HNSWIndex):
        graph.threads = 1
        graph._index.set_num_threads(1)


def file_size(save) -> int:
    with tempfile.TemporaryDirectory(
        prefix="idx_bench_", dir=os.environ.get("TMPDIR", "/tmp")
    ) as d:
        save(Path(d) / "index.bin")
        return sum(f.stat().st_size for f in Path(d).iterdir())  # the file and its sidecars


# --- collections ---------------------------------------------------------------------------
class _Described:
    """Stands in for the embedder that made ``base``: a new collection needs only its
    description (add_vectors never loads an embedder)."""

    def __init__(self, spec: dict, dim: int):
        self.spec, self.id, self.dim = spec, spec["id"], dim

    def describe(self) -> dict:
        return dict(self.spec)


def write_collection(root: Path, base: np.ndarray, index: dict, embedder: dict) -> None:
    """``base`` as a collection on disk: one ``ok`` item per row, the given manifest entries,
    written through ``Collection.add_vectors`` (the index is left to the benchmark to build)."""
    from snoop_nb.collection import open_collection

    with open_collection(
        root, create=True, embedder=_Described(embedder, base.shape[1]), index_params=index
    ) as col:
        for start in range(0, len(base), 65536):
            rows = range(start, min(start + 65536, len(base)))
            col.add_vectors(
                [f"/synthetic/{i:08d}.png" for i in rows],
                base[rows.start : rows.stop],
                update_index=False,
            )


def bench_collection(
    kind, base, queries, truth, args, common, baselines
) -> tuple[list[dict], dict]:
    """Rows for one collection of ``base`` with a ``kind`` index (see ``collection:KIND``)."""
    from snoop_nb.collection import open_collection

    n = len(base)
    index = {"kind": kind, "M": args.M, "ef_construction": args.ef_construction}
    if kind == "hnsw-pca":
        index["project_dim"] = args.project_dim
    name = f"collection:{kind}"
    facts: dict = {"index": name, "manifest_index": index}
    with tempfile.TemporaryDirectory(
        prefix="idx_bench_col_", dir=os.environ.get("TMPDIR", "/tmp")
    ) as d:
        root = Path(d) / "col"
        write_collection(root, base, index, args.embedder)
        gc.collect()
        facts["load_before"] = list(os.getloadavg())
        col = open_collection(root)
        with Clock() as build:
            col.sync_index(save=False)
        with Clock() as save:
            col.sync_index(save=True)
        facts["load_after"] = list(os.getloadavg())
        col.close()
        del col
        gc.collect()
        col = open_collection(root)
        with Clock() as load:
            idx = col.index
        files = ("index.hnsw", "index.hnsw.json", "index.hnsw.npz")
        size = sum((root / f).stat().st_size for f in files if (root / f).exists())
        one_search_thread(idx)
        facts.update(
            build_seconds=build.wall,
            build_cpu_seconds=build.cpu,
            save_seconds=save.wall,
            load_seconds=load.wall,
            index_bytes=size,
            repaired_on_load=bool(idx.repaired_on_load),
        )
        print(
            f"  {name}: sync_index built at {n / build.wall:,.0f}/s wall, "
            f"{n / build.cpu * BUILD_THREADS:,.0f}/s cpu-based; saved in {save.wall:.1f} s, "
            f"loaded in {load.wall:.1f} s; load average {facts['load_before']} -> "
            f"{facts['load_after']}",
            flush=True,
        )
        rows = search_rows(name, idx, n, queries, truth, args, common, baselines, build, size)
        for r in rows:
            r.update({"save s": save.wall, "load s": load.wall})
        col.close()
    return rows, facts


def search_rows(name, idx, n, queries, truth, args, common, baselines, build, size) -> list[dict]:
    """One row per ``ef``: recall and query rates of a built index."""
    exact_1q_cpu, f32_1q_cpu = baselines
    dim = common["dim"]
    rows = []
    for ef in args.ef_list:
        idx.ef = ef
        with one_blas_thread():
            with Clock() as batch:
                found, _ = idx.search(queries, K)
            done, single = time_single(lambda q, idx=idx: idx.search(q, K), queries, args.budget)
        rows.append(
            {
                **common,
                "index": name,
                "impl": type(idx).__name__,
                "ef": ef,
                "recall@10": recall_at_k(found, truth),
                "qps 1q": done / single.wall,
                "cpu qps 1q": done / single.cpu,
                "x exact": done / single.cpu / exact_1q_cpu,
                "x f32": done / single.cpu / f32_1q_cpu,
                "qps batch": len(queries) / batch.wall,
                "cpu qps batch": len(queries) / batch.cpu,
                "build /s": n / build.wall,
                "cpu build /s": n / build.cpu * BUILD_THREADS,
                "bytes/vec": size / n,
                "+f16 store": size / n + 2 * dim,
            }
        )
        r = rows[-1]
        print(
            f"  {name} ef={ef}: recall {r['recall@10']:.4f}, {r['cpu qps 1q']:,.0f} q/s cpu-based",
            flush=True,
        )
    return rows


def bench_one(
    label: str,
    base: np.ndarray,
    queries: np.ndarray,
    args: argparse.Namespace,
    exclude_self: bool = False,
) -> tuple[list[dict], dict]:
    """All rows for one data set: exact, HNSW at each ef, and the projected variant."""
    n, dim = base.shape
    ids = np.arange(n, dtype=np.int64)
    rows: list[dict] = []
    common = {"data": label, "n": n, "dim": dim}
    exact = ExactIndex.from_arrays(ids, base)

    # Exact: the ground truth (batched, one thread) and its single-query rate.
    with one_blas_thread():
        with Clock() as batch:
            truth, truth_scores = exact.search(queries, K)
        done, single = time_single(lambda q: exact.search(q, K), queries, args.exact_budget)
    exact_1q, exact_1q_cpu = done / single.wall, done / single.cpu
    nn_col = 1 if exclude_self else 0  # a query by example is its own nearest item
    stats = {
        "nn1_mean": float(truth_scores[:, nn_col].mean()),
        "exact_single_queries_timed": done,
    }
    rows.append(
        {
            **common,
            "index": "exact",
            "recall@10": 1.0,
            "qps 1q": exact_1q,
            "cpu qps 1q": exact_1q_cpu,
            "x exact": 1.0,
            "cpu qps batch": len(queries) / batch.cpu,
            "qps batch": len(queries) / batch.wall,
            "bytes/vec": 2.0 * dim,
            "+f16 store": 2.0 * dim,
        }
    )
    print(f"  exact: {exact_1q_cpu:,.3g} q/s single ({done} timed), cpu-based", flush=True)

    # A stronger exact baseline: a float32 copy of the matrix in memory (twice the bytes), so
    # that no query pays for the float16 -> float32 conversion that ExactIndex does per query.
    matrix = np.asarray(base, np.float32)
    with one_blas_thread():
        some = queries[: min(len(queries), 100)]
        with Clock() as batch:
            f32_top = top_k_f32(matrix, some)
        done, single = time_single(lambda q: top_k_f32(matrix, q), queries, args.exact_budget)
    matrix = None  # free it before the graphs are built
    f32_1q_cpu = done / single.cpu
    stats["exact_f32_agrees_at_10"] = recall_at_k(f32_top, truth[: len(some)])
    rows.append(
        {
            **common,
            "index": "exact-f32",
            "recall@10": stats["exact_f32_agrees_at_10"],
            "qps 1q": done / single.wall,
            "cpu qps 1q": f32_1q_cpu,
            "x exact": f32_1q_cpu / exact_1q_cpu,
            "x f32": 1.0,
            "cpu qps batch": len(some) / batch.cpu,
            "qps batch": len(some) / batch.wall,
            "bytes/vec": 4.0 * dim,
            "+f16 store": 6.0 * dim,
        }
    )
    print(f"  exact-f32: {f32_1q_cpu:,.3g} q/s single ({done} timed), cpu-based", flush=True)

    variants = ["hnsw"]
    if args.project_dim and args.project_dim < dim:
        variants.append(f"hnsw+pca{args.project_dim}")
    for name in variants:  # one at a time: at 1M each holds gigabytes
        gc.collect()
        with Clock() as build:
            if name == "hnsw":
                idx = HNSWIndex(
                    dim,
                    M=args.M,
                    ef_construction=args.ef_construction,
                    threads=BUILD_THREADS,
                    capacity=n,
                )
                for start in range(0, n, ADD_CHUNK):
                    idx.add(ids[start : start + ADD_CHUNK], base[start : start + ADD_CHUNK])
            else:  # reading the benchmark's matrix as a collection reads its vectors.f16
                idx = ProjectedIndex(
                    dim,
                    project_dim=args.project_dim,
                    M=args.M,
                    ef_construction=args.ef_construction,
                    threads=BUILD_THREADS,
                    capacity=n,
                    vectors=base,
                )
                for start in range(0, n, ADD_CHUNK):
                    idx.add(ids[start : start + ADD_CHUNK], base[start : start + ADD_CHUNK])
        one_search_thread(idx)
        size = file_size(idx.save)
        print(
            f"  {name}: built at {n / build.wall:,.0f}/s wall, "
            f"{n / build.cpu * BUILD_THREADS:,.0f}/s cpu-based",
            flush=True,
        )
        rows += search_rows(
            name, idx, n, queries, truth, args, common, (exact_1q_cpu, f32_1q_cpu), build, size
        )
        del idx
    if label != "real":
        for kind in args.collection_kinds:
            if kind == "hnsw-pca" and not 0 < args.project_dim < dim:
                continue
            gc.collect()
            r, facts = bench_collection(
                kind, base, queries, truth, args, common, (exact_1q_cpu, f32_1q_cpu)
            )
            rows += r
            stats.setdefault("collections", []).append(facts)
    return rows, stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100000,1000000", help="synthetic set sizes, comma-separated")
    p.add_argument("--dim", type=int, help="dimension of a synthetic seed (no real embeddings)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--real", help="real embeddings, a (n, dim) .npy array")
    src.add_argument(
        "--collection",
        help="a collection folder (manifest.json + vectors.f16); default: the demo's, if built",
    )
    p.add_argument("--queries", type=int, default=1000, help="held-out synthetic queries")
    p.add_argument("--M", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef-list", default="16,32,64,128,256")
    p.add_argument("--project-dim", type=int, default=256, help="0 skips the hnsw+pca rows")
    p.add_argument(
        "--collection-kinds",
        default="hnsw-pca",
        help="index kinds to build through Collection.sync_index on the synthetic sets "
        "(comma-separated: hnsw-pca, hnsw; empty skips)",
    )
    p.add_argument("--budget", type=float, default=10.0, help="seconds per single-query timing")
    p.add_argument("--exact-budget", type=float, default=30.0, help="same, for exact search")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help=f"write rows and machine facts here (default: {DEFAULT_JSON})")
    p.add_argument("--quick", action="store_true", help="10k vectors, 100 queries: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.ef_list = "10000", 100, "16,64"
        args.budget, args.exact_budget = 1.0, 1.0
    elif args.json is None:
        args.json = str(DEFAULT_JSON)
    if not (args.real or args.collection) and (DEMO_COLLECTION / "manifest.json").exists():
        args.collection = str(DEMO_COLLECTION)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.ef_list = [int(s) for s in args.ef_list.split(",") if s]
    args.collection_kinds = [s for s in args.collection_kinds.split(",") if s]
    started = time.time()
    info = machine_info(("numpy", "hnswlib", "threadpoolctl", "snoop-nb"))

    rng = np.random.default_rng(args.seed)
    real = load_real(args.collection, args.real)
    if real is not None and args.dim and args.dim != real.shape[1]:
        p.error(f"--dim {args.dim} differs from the real embeddings' {real.shape[1]}")
    seed_kind = "real" if real is not None else "synthetic-seed"
    if real is None:
        print("no real embeddings (--real, --collection, or make demo): the seed is synthetic")
    seed = real if real is not None else synthetic_seed(args.dim or 1280, rng)
    args.embedder = {"id": f"synthetic-{seed_kind}", "name": None, "dim": seed.shape[1]}
    if args.collection:
        args.embedder = json.loads((Path(args.collection) / "manifest.json").read_text())[
            "embedder"
        ]
    rows: list[dict] = []
    datasets: list[dict] = []

    if real is not None:
        print(f"real: {len(real)} x {real.shape[1]} (queries: every item, by example)", flush=True)
        r, stats = bench_one("real", real, real, args, exclude_self=True)
        rows += r
        datasets.append({"data": "real", "n": len(real), "queries": len(real), **stats})

    gen = KDEGenerator(seed)
    print(
        f"generator: {'rectified ' if gen.rectify else ''}KDE around {len(seed)} {seed_kind} vectors, bandwidth h={gen.bandwidth:.3f}; "
        f"1-NN cosine mean at n={len(seed)}: seed {gen.target_nn:.3f}, synthetic "
        f"{mean_nn_similarity(gen.sample(len(seed), np.random.default_rng(99))):.3f}",
        flush=True,
    )
    gen_stats = gen.describe(gen.sample(2000, np.random.default_rng(98)))
    print(f"  seed vs synthetic: {gen_stats}", flush=True)
    label = "synthetic" if real is not None else "synthetic-seed"
    for n in args.sizes:
        t0 = time.perf_counter()
        data = gen.sample(n + args.queries, np.random.default_rng([args.seed, n]))
        base, queries = data[:n], np.asarray(data[n:], np.float32)
        print(
            f"{label}: {n:,} x {base.shape[1]} generated in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        r, stats = bench_one(label, base, queries, args)
        rows += r
        datasets.append({"data": label, "n": n, "queries": args.queries, **stats})
        print(f"  1-NN cosine mean of the queries at n={n:,}: {stats['nn1_mean']:.3f}", flush=True)
        del data, base, queries
        gc.collect()

    print()
    print(format_table(rows, COLUMNS))
    built = {(r["data"], r["n"], r["index"]): r for r in rows if r["index"].startswith("coll")}
    if built:
        print(
            "\nCollection.sync_index from vectors.f16 (build: without the save; save, load: wall s)"
        )
        print(format_table(list(built.values()), COLLECTION_COLUMNS))
    print(
        "qps: one core (hnswlib num_threads=1, BLAS 1 thread), wall clock; cpu qps: the same "
        "from process CPU time (what an idle core gives; trust it on a busy machine).\n"
        "x exact, x f32: single-query cpu qps over exact's / exact-f32's (numpy, a float32 copy) on the same data. build: 2 threads; "
        "cpu build: n / (CPU seconds / 2).\nbytes/vec: index file / n; +f16 store: plus the "
        "float16 vectors a collection keeps (hnsw+pca needs them to re-score)."
    )
    if args.json:
        info["load_average_end"] = list(os.getloadavg())
        info["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        info["seconds"] = time.time() - started
        payload = {
            "benchmark": "index",
            "machine": info,
            "params": {k: v for k, v in vars(args).items() if k not in ("json",)},
            "generator": {
                "kind": "rectified-gaussian-kde" if gen.rectify else "gaussian-kde",
                "compare": gen_stats,
                "seed_vectors": seed_kind,
                "seed_n": len(seed),
                "bandwidth": gen.bandwidth,
                "seed_nn1_mean": gen.target_nn,
                "doc": __doc__.split("``synthetic``:")[1].split("\n\n")[0].strip(),
            },
            "datasets": datasets,
            "rows": rows,
        }
        print(f"wrote {write_json(args.json, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
