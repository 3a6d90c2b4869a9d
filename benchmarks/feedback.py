"""Benchmark relevance feedback: a simulated user on the labelled demo, and one round's latency.

    python benchmarks/feedback.py                              # quality + latency at 10k/100k/1M
    python benchmarks/feedback.py --skip-latency --seeds 5     # quality only, more seeds
    python benchmarks/feedback.py --skip-quality --sizes 100000
    python benchmarks/feedback.py --quick                      # a smoke run, < 2 min

Quality: a simulated user
-------------------------
The corpus is a copy of the demo collection (``--collection``, copied into a temporary folder, so
the demo's knowledge base is never touched). With ``--symbols drop`` (the default) the 247
``symbols`` stamps are removed from the copy (marked deleted), leaving the 549 pictures and 15
top-level folders of the reference figures in the issue; ``--symbols keep`` keeps them in the
corpus and as a class. The classes are the ``category`` values; those with at least
``--min-class`` (30) pictures are the *main* classes, the target's scope; smaller ones are run
and reported too, marked ``small``.

Each class is run from ``--seeds`` single examples picked at random (``example`` seeds) and from
a text query, the folder's name (``text`` seed, through the default embedder's text bridge;
skipped, with the reason in the JSON, when the text encoder cannot load).
Every (class, seed, method) run is a fresh class of user ``bench`` in the copy's knowledge base,
driven through the real :class:`~snoop_nb.learn.FeedbackSession`: ``start(items=[seed])`` or
``start(text=name)``, then ``--rounds`` rounds of: the ``-k`` items the method shows are labelled
from the ground truth (+1 for the same category, else -1) with ``label``, and ``train`` is
called. Methods are the session's strategies (``suggest(k, strategy)``: top, uncertain, diverse,
mixed) and ``random``: ``k`` unlabelled items drawn at random. A text-seeded run whose labels
hold no positive yet cannot train; it keeps ranking by the text until one is found.

After each round the whole corpus is ranked by the session's current linear scorer (the latest
model, else the starting query), scored in float32 from the vectors:

- ``AP``: average precision of that ranking over the whole corpus, labelled items included (the
  usual relevance-feedback measure; labelled positives help it, which is why the next exists);
- ``AP resid`` / ``NN resid``: AP over the *residual* corpus, the items the run has not labelled
  yet (the seed counts as labelled), for the session's ranking and for the nearest-neighbour
  ranking on exactly the same items; their difference is what feedback adds on pictures the user
  has not seen;
- ``P@k``: precision of the ranking's top ``k`` (whole corpus); ``found``: positives labelled;
- ``C`` and ``mistakes``: the regularisation training chose and how many labels its model still
  gets wrong (``quality["mistakes"]["count"]``), summed up per C after the tables.

Round 0 is the starting ranking, i.e. the plain nearest-neighbour baseline: cosine similarity to
the seed example (which ranks itself first) or to the text vector. Tables give means over the
example seeds (the text seed apart) at ``--report-round`` (3); a method *beats* the baseline on
a class when its mean AP there is above the baseline's mean AP. The leave-one-out table
reproduces the issue's reference figures: every picture queries the rest of the corpus.

Latency: one round at scale
---------------------------
Synthetic collections of 10k, 100k and 1M vectors are written straight in the collection format
(``manifest.json`` of the demo's embedder, ``catalog.sqlite`` items with status ``ok`` and the
``rows``/``generation`` state, ``vectors.f16``) under ``--cache-dir`` and reused by later runs,
HNSW index included (its build time is recorded when it is built). The vectors are draws from a
Gaussian kernel density estimate of the demo's real embeddings (``KDEGenerator`` of
benchmarks/index.py: a real embedding plus correlated noise in the real set's principal
directions, ReLU-clipped and renormalised; bandwidth fitted so that 1-NN similarities match the
real set). A synthetic class is the 1% of vectors closest to the mean of the demo's ``vehicles``.

One round, through the real session API: ``label`` the 10 items shown (the best unlabelled ones
of the previous ranking, labelled from the synthetic truth; two KB writes, relevant and not
relevant), ``train()`` (fit + cross-validation, the solver starting from the previous version;
model saved in the KB), ``rank(100)`` (ranking joined with the catalog and the labels). ``exact``
scores every vector; ``hnsw`` queries the index with the class direction and re-scores the
candidates. Each path runs ``--sessions`` fresh classes of ``--latency-rounds`` rounds after one
untimed warm-up round (which pays the first-use costs: the catalog's id list, loading the index,
importing torch; its time is reported as ``cold``). ``median`` and ``p90`` are over all timed
rounds; ``cpu`` is the process CPU time of a round: close to the wall time for one-thread work on
an idle machine, above it where two threads work (or spin, waiting for each other). A breakdown
then times the pieces of a round one by one (private methods of the session, called directly) so
that the bottleneck is visible. The load average is recorded with every size: other benchmarks
may share the 2 cores. The latency part runs before the quality part, in a process that holds
only what a round loads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, write_json

ROOT = Path(__file__).resolve().parent.parent
DEMO_COLLECTION = ROOT / "data" / "demo" / "collection"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "feedback.json"
METHODS = ("top", "uncertain", "diverse", "mixed", "random")
USER = "bench"
#: Round-latency targets from the issue (seconds), by (size, path).
TARGETS = {(100_000, "exact"): 0.1, (1_000_000, "exact"): 1.0, (1_000_000, "hnsw"): 0.1}


# --- small helpers ----------------------------------------------------------------------------
def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """AP of ``scores`` for binary ``y`` (NaN without positives); ties as scikit-learn treats them."""
    from sklearn.metrics import average_precision_score

    if not y.any():
        return float("nan")
    return float(average_precision_score(y, scores))


def precision_at(y: np.ndarray, scores: np.ndarray, k: int) -> float:
    order = np.argsort(-scores, kind="stable")[:k]
    return float(y[order].mean()) if len(order) else float("nan")


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def nanmean(values) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return float(np.nanmean(arr)) if arr.size and not np.isnan(arr).all() else float("nan")


def copy_collection(src: Path, dst: Path) -> Path:
    """A private copy of a collection (the catalog through SQLite's backup, safe while in use)."""
    dst.mkdir(parents=True)
    for name in ("manifest.json", "vectors.f16", "index.hnsw", "index.hnsw.json", "index.hnsw.npz"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    with (
        closing(sqlite3.connect(src / "catalog.sqlite")) as a,
        closing(sqlite3.connect(dst / "catalog.sqlite")) as b,
    ):
        a.backup(b)
    return dst


# --- quality ----------------------------------------------------------------------------------
def leave_one_out(x: np.ndarray, cats: np.ndarray, k: int) -> list[dict]:
    """Every item queries all the others by cosine: 1-NN accuracy and P@k, per class and overall."""
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    same = cats[top] == cats[:, None]
    rows = []
    for c in [*sorted(set(cats), key=lambda c: (-np.sum(cats == c), c)), None]:
        m = np.ones(len(cats), bool) if c is None else cats == c
        rows.append(
            {
                "class": c or "all",
                "n": int(m.sum()),
                "nn1_acc": float(same[m, 0].mean()),
                f"p@{k}": float(same[m].mean()),
            }
        )
    return rows


class Corpus:
    """The evaluation copy: live ids, float32 vectors and the ground-truth category of each."""

    def __init__(self, col, symbols: str):
        items = col.items()
        if "category" not in items:
            sys.exit(
                f"{col.root} has no 'category' metadata: build it with python -m snoop_nb.demo"
            )
        items["category"] = items["category"].fillna("(none)")
        if symbols == "drop":
            drop = items.loc[items["category"] == "symbols", "id"].to_numpy()
            if len(drop):
                col.remove(drop)
                items = items[items["category"] != "symbols"]
        self.ids = items["id"].to_numpy(np.int64)
        assert np.array_equal(self.ids, col.ok_ids())
        self.cats = items["category"].to_numpy(str)
        self.x = col.vectors_of(self.ids)
        self.pos_of = {int(i): p for p, i in enumerate(self.ids)}

    def truth(self, ids, cat: str) -> np.ndarray:
        return np.asarray([self.cats[self.pos_of[int(i)]] == cat for i in ids], bool)


def run_once(col, corpus: Corpus, cat: str, seed_kind: str, seed, method: str, args, run_seed):
    """One simulated user: start, then ``rounds`` rounds of show k / label / train; per-round rows."""
    from snoop_nb.errors import UsageError

    name = f"{cat}-{seed_kind}-{seed}-{method}"
    s = col.session(USER, name, seed=run_seed)
    if seed_kind == "example":
        s.start(items=[int(seed)])
    else:
        s.start(text=str(seed))
    y = corpus.cats == cat
    rng = np.random.default_rng(run_seed)
    labelled: set[int] = {int(seed)} if seed_kind == "example" else set()
    nn_scores = None
    rows = []
    for r in range(args.rounds + 1):
        if r > 0:
            if method == "random":
                pool = np.setdiff1d(corpus.ids, np.fromiter(labelled, np.int64, len(labelled)))
                shown = rng.choice(pool, size=min(args.k, len(pool)), replace=False)
            else:
                shown = s.suggest(args.k, method)["id"].to_numpy(np.int64)
            truth = corpus.truth(shown, cat)
            if truth.any():
                s.label(shown[truth], +1)
            if (~truth).any():
                s.label(shown[~truth], -1)
            labelled.update(int(i) for i in shown)
            with contextlib.suppress(UsageError):  # no positive yet (a text seed): keep
                s.train()  # ranking by the query
        # The session's current scorer (latest model, else the query) in float32 on the copy's
        # vectors: exact, unlike the float16 pass of the session's own ranking.
        w, b = s._direction()
        scores = corpus.x @ np.asarray(w, np.float32) + np.float32(b)
        if nn_scores is None:
            nn_scores = scores
        rest = ~np.isin(corpus.ids, np.fromiter(labelled, np.int64, len(labelled)))
        found = int(sum(corpus.cats[corpus.pos_of[i]] == cat for i in labelled))
        model = s.model()
        q = model.quality if model is not None else {}
        rows.append(
            {
                "class": cat,
                "seed_kind": seed_kind,
                "seed": seed if seed_kind == "text" else int(seed),
                "method": method,
                "round": r,
                "labelled": len(labelled),
                "found": found,
                "ap": average_precision(y, scores),
                "p_at_k": precision_at(y, scores, args.k),
                "ap_resid": average_precision(y[rest], scores[rest]),
                "nn_ap_resid": average_precision(y[rest], nn_scores[rest]),
                "nn_ap": average_precision(y, nn_scores),
                "nn_p_at_k": precision_at(y, nn_scores, args.k),
                "C": q.get("C"),
                "mistakes": (q.get("mistakes") or {}).get("count"),
            }
        )
    return rows


def quality(args) -> dict[str, Any]:
    from snoop_nb.collection import open_collection

    src = Path(args.collection)
    if not (src / "manifest.json").exists():
        sys.exit(f"no collection at {src}: build the demo with `python -m snoop_nb.demo` first")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fb_quality_") as tmp:
        col = open_collection(copy_collection(src, Path(tmp) / "collection"))
        corpus = Corpus(col, args.symbols)
        counts = {c: int(np.sum(corpus.cats == c)) for c in set(corpus.cats)}
        classes = sorted(counts, key=lambda c: (-counts[c], c))
        if args.quick:
            classes = [c for c in classes if counts[c] >= args.min_class]
        loo = leave_one_out(corpus.x, corpus.cats, args.k)
        text_error = None
        if args.text:
            try:  # load the text bridge once, up front, so that a broken one is said clearly
                col.embedder.encode_texts(classes)
            except Exception as e:  # any failure: run the example seeds, report why not text
                text_error = f"{type(e).__name__}: {e}"
                print(f"text seeds skipped, the text encoder failed: {text_error}")
                args.text = False
        print(
            f"\ncorpus: {len(corpus.ids)} pictures, {len(classes)} classes "
            f"(symbols {args.symbols}), {args.rounds} rounds of k={args.k}, "
            f"{args.seeds} example seed(s) + {'a text seed' if args.text else 'no text seed'}"
        )
        print("\nnearest neighbours, leave one out (every picture queries the rest)")
        print(format_table(loo, ["class", "n", "nn1_acc", f"p@{args.k}"]))
        rows: list[dict] = []
        for ci, cat in enumerate(classes):
            rng = np.random.default_rng([args.seed, ci])
            members = corpus.ids[corpus.cats == cat]
            seeds = [("example", int(i)) for i in rng.permutation(members)[: args.seeds]]
            if args.text:
                seeds.append(("text", cat))
            t0 = time.perf_counter()
            for si, (kind, seed) in enumerate(seeds):
                for method in METHODS:
                    rows += run_once(col, corpus, cat, kind, seed, method, args, args.seed + si)
            print(
                f"  {cat}: {len(seeds)} seeds x {len(METHODS)} methods in "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
        col.close()
    for r in rows:
        r["n_class"] = counts[r["class"]]
        r["main"] = counts[r["class"]] >= args.min_class
    summary = summarise(rows, classes, counts, args)
    return {
        "corpus": {
            "items": len(corpus.ids),
            "symbols": args.symbols,
            "classes": {c: counts[c] for c in classes},
        },
        "text_seeds_error": text_error,
        "leave_one_out": loo,
        "summary": summary,
        "rounds": rows,
        "seconds": round(time.perf_counter() - t_start, 1),
    }


def summarise(rows, classes, counts, args) -> dict[str, Any]:
    """Per-class tables at the report round, per-round curves, and the target's verdict."""
    at = min(args.report_round, args.rounds)

    def pick(cat, kind, method, rnd):
        return [
            r
            for r in rows
            if r["class"] == cat
            and r["seed_kind"] == kind
            and r["method"] == method
            and r["round"] == rnd
        ]

    kinds = ["example"] + (["text"] if args.text else [])
    out: dict[str, Any] = {"round": at, "per_class": {}, "verdict": {}}
    trained = [r for r in rows if r["round"] > 0 and r.get("C") is not None]
    out["regularisation"] = {
        "models": len(trained),
        "C_chosen": {
            str(c): sum(r["C"] == c for r in trained) for c in sorted({r["C"] for r in trained})
        },
        "models_with_mistakes": sum(bool(r["mistakes"]) for r in trained),
    }
    for kind in kinds:
        table, gains, precs = [], [], []
        for cat in classes:
            base = pick(cat, kind, "top", 0)
            row = {
                "class": cat + ("" if counts[cat] >= args.min_class else " (small)"),
                "n": counts[cat],
                "NN": nanmean(r["nn_ap"] for r in base),
            }
            gain = {"class": row["class"], "n": counts[cat]}
            prec = {
                "class": row["class"],
                "n": counts[cat],
                "NN": nanmean(r["nn_p_at_k"] for r in base),
            }
            for m in METHODS:
                got = pick(cat, kind, m, at)
                row[m] = nanmean(r["ap"] for r in got)
                gain[m] = nanmean(r["ap_resid"] - r["nn_ap_resid"] for r in got)
                prec[m] = nanmean(r["p_at_k"] for r in got)
            table.append(row)
            gains.append(gain)
            precs.append(prec)
        out["per_class"][kind] = {"ap": table, "ap_resid_gain": gains, f"p@{args.k}": precs}
        main = [r for r in table if counts[r["class"].split(" ")[0]] >= args.min_class]
        out["verdict"][kind] = {
            m: {
                "beats_nn_on_every_main_class": all(r[m] > r["NN"] for r in main),
                "losing_classes": [r["class"] for r in main if not r[m] > r["NN"]],
                "resid_gain_positive_on_every_main_class": all(
                    g[m] > 0 for g in gains if counts[g["class"].split(" ")[0]] >= args.min_class
                ),
                "main_runs_beating_nn": _wins(rows, kind, m, at, args.min_class),
            }
            for m in METHODS
        }
        curve = []
        for m in METHODS:
            for metric in ("ap", "p_at_k", "ap_resid"):
                row = {"method": m, "metric": metric}
                for rnd in range(args.rounds + 1):
                    vals = [
                        r[metric]
                        for r in rows
                        if r["main"]
                        and r["seed_kind"] == kind
                        and r["method"] == m
                        and r["round"] == rnd
                    ]
                    row[f"r{rnd}"] = nanmean(vals)
                curve.append(row)
        out.setdefault("curves_main_classes", {})[kind] = curve
    return out


def _wins(rows, kind: str, method: str, at: int, min_class: int) -> str:
    """How many single runs (class x seed) of the main classes beat their own NN AP at ``at``."""
    runs = [
        r
        for r in rows
        if r["seed_kind"] == kind
        and r["method"] == method
        and r["round"] == at
        and r["n_class"] >= min_class
    ]
    return f"{sum(r['ap'] > r['nn_ap'] for r in runs)}/{len(runs)}"


def print_quality(q: dict, args) -> None:
    s = q["summary"]
    at = s["round"]
    reg = s.get("regularisation", {})
    if reg.get("models"):
        chosen = ", ".join(f"C={c}: {n}" for c, n in reg["C_chosen"].items())
        print(
            f"\nregularisation chosen over {reg['models']} trained rounds: {chosen}; "
            f"models still getting labels wrong: {reg['models_with_mistakes']}"
        )
    cols = ["class", "n", "NN", *METHODS]
    for kind, tables in s["per_class"].items():
        what = f"{args.seeds} example seed(s), mean" if kind == "example" else "text seed"
        print(f"\nAP over the corpus after {at} rounds of {args.k} ({what}); NN = round 0")
        print(format_table(tables["ap"], cols))
        print(f"\nP@{args.k} after {at} rounds ({what})")
        print(format_table(tables[f"p@{args.k}"], cols))
        print(
            f"\nresidual AP gain over NN on the same unlabelled items, after {at} rounds ({what})"
        )
        print(format_table(tables["ap_resid_gain"], ["class", "n", *METHODS]))
        print(f"\nper round, mean over the main classes ({what})")
        curve = s["curves_main_classes"][kind]
        print(format_table(curve, ["method", "metric"] + [f"r{i}" for i in range(args.rounds + 1)]))
        for m, v in s["verdict"][kind].items():
            ok = (
                "beats NN on every main class"
                if v["beats_nn_on_every_main_class"]
                else ("loses on " + ", ".join(v["losing_classes"]))
            )
            print(f"  {kind:7s} {m:9s}: {ok}; single runs beating NN: {v['main_runs_beating_nn']}")


# --- synthetic collections ------------------------------------------------------------------
def real_vectors(collection: Path) -> tuple[np.ndarray, dict, dict[str, np.ndarray]]:
    """The demo's embeddings (float32, zero rows dropped), manifest, and vectors per category."""
    from snoop_nb.collection import open_collection

    col = open_collection(collection)
    items = col.items()
    x = col.vectors_of(items["id"])
    keep = np.any(x != 0, axis=1)
    groups = {}
    if "category" in items:
        cats = items["category"].fillna("").to_numpy(str)
        groups = {c: x[(cats == c) & keep] for c in set(cats)}
    manifest = dict(col.manifest)
    col.close()
    return x[keep], manifest, groups


def build_synthetic(root: Path, n: int, gen, manifest: dict, seed: int) -> dict:
    """Write a collection of ``n`` synthetic vectors in the on-disk format; returns its facts."""
    from snoop_nb.collection import open_collection

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    dim = int(manifest["dim"])
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    with open(root / "vectors.f16", "wb") as f:
        for start in range(0, n, 65536):
            block = gen.sample(min(65536, n - start), rng)
            assert block.dtype == np.float16 and block.shape[1] == dim
            f.write(block.tobytes())
    t_vec = time.perf_counter() - t0
    man = {k: v for k, v in manifest.items() if k != "created"}
    man["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (root / "manifest.json").write_text(json.dumps(man, indent=2))
    open_collection(root).close()  # creates the catalog's tables
    t1 = time.perf_counter()
    now = time.time()
    with closing(sqlite3.connect(root / "catalog.sqlite")) as db, db:
        db.executemany(
            "INSERT INTO items (id, path, uri, status, added) VALUES (?, ?, ?, 'ok', ?)",
            (
                (i, f"/synthetic/{i:08d}.png".encode(), f"/synthetic/{i:08d}.png", now)
                for i in range(n)
            ),
        )
        db.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('rows', ?)", (str(n),))
        db.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('generation', '1')")
    facts = {
        "n": n,
        "seed": seed,
        "bandwidth": gen.bandwidth,
        "vectors_seconds": round(t_vec, 1),
        "catalog_seconds": round(time.perf_counter() - t1, 1),
    }
    (root / "fb_synthetic.json").write_text(json.dumps(facts))
    return facts


def synthetic_collection(cache: Path, n: int, gen_factory, manifest: dict, seed: int):
    """The cached synthetic collection of ``n`` vectors (built when missing or different)."""
    root = cache / f"fb_syn_{n}"
    marker = root / "fb_synthetic.json"
    if marker.exists():
        facts = json.loads(marker.read_text())
        if facts.get("n") == n and facts.get("seed") == seed:
            facts["cached"] = True
            return root, facts
    print(f"  writing {n:,} synthetic vectors to {root} ...", flush=True)
    facts = build_synthetic(root, n, gen_factory(), manifest, seed)
    facts["cached"] = False
    return root, facts


def ensure_index(col, allow_build: bool) -> dict:
    """Load the collection's HNSW index, building it first when missing (timed)."""
    path = col.root / "index.hnsw"
    info_path = col.root / "fb_index.json"
    if not path.exists():
        if not allow_build:
            return {"available": False}
        print(f"  building the HNSW index of {col.rows:,} vectors (2 threads) ...", flush=True)
        t0, c0 = time.perf_counter(), time.process_time()
        la0 = load_avg()
        col.sync_index(save=True)
        info = {
            "build_seconds": round(time.perf_counter() - t0, 1),
            "build_cpu_seconds": round(time.process_time() - c0, 1),
            "load_before": la0,
            "load_after": load_avg(),
        }
        info_path.write_text(json.dumps(info))
        col._index = None  # measure the load a fresh process pays, below
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    t0 = time.perf_counter()
    _ = col.index
    info["load_seconds"] = round(time.perf_counter() - t0, 2)
    info["available"] = True
    info["bytes"] = path.stat().st_size
    return info


# --- latency ----------------------------------------------------------------------------------
class Truth:
    """Synthetic ground truth: the items closest to a class direction (top ``share``)."""

    def __init__(self, col, direction: np.ndarray, share: float = 0.01):
        self.col = col
        self.d = direction / np.linalg.norm(direction)
        sample = col.vectors_of(np.arange(0, col.rows, max(1, col.rows // 20000)))
        sims = sample @ self.d
        self.threshold = float(np.quantile(sims, 1 - share))
        self.seed = int(np.arange(0, col.rows, max(1, col.rows // 20000))[np.argmax(sims)])

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.col.vectors_of(ids) @ self.d >= self.threshold


def timed_round(s, shown: np.ndarray, truth: Truth, exact: bool):
    t = [time.perf_counter()]
    c0 = time.process_time()
    y = truth(shown)
    if y.any():
        s.label(shown[y], +1)
    if (~y).any():
        s.label(shown[~y], -1)
    t.append(time.perf_counter())
    s.train()
    t.append(time.perf_counter())
    df = s.rank(100, exact=exact)
    t.append(time.perf_counter())
    cpu = time.process_time() - c0
    nxt = df.loc[df["label"] == 0, "id"].to_numpy(np.int64)[:10]
    return {
        "label": t[1] - t[0],
        "train": t[2] - t[1],
        "rank": t[3] - t[2],
        "round": t[3] - t[0],
        "cpu": cpu,
    }, nxt


def run_path(col, truth: Truth, exact: bool, sessions: int, rounds: int, tag: str) -> dict:
    """``sessions`` fresh classes, each a warm-up round then ``rounds`` timed rounds."""
    samples, colds = [], []
    for si in range(sessions):
        s = col.session(USER, f"latency-{tag}-{si}-{time.time_ns()}", seed=si)
        s.label([truth.seed], +1)
        df = s.rank(100, exact=exact)  # the first page, from the seed alone (untimed)
        shown = df.loc[df["label"] == 0, "id"].to_numpy(np.int64)[:10]
        for r in range(rounds + 1):
            times, shown = timed_round(s, shown, truth, exact)
            (colds if r == 0 else samples).append(times)
    out = {"rounds_timed": len(samples), "cold_round": colds[0]["round"]}
    for key in ("label", "train", "rank", "round", "cpu"):
        vals = np.asarray([x[key] for x in samples])
        out[f"{key}_median"] = float(np.median(vals))
        out[f"{key}_p90"] = float(np.quantile(vals, 0.9))
    out["last_session"] = s
    return out


#: The pieces of a round timed by :func:`breakdown`, in order; ``None`` marks the path they need.
PIECES = (
    ("label: session.label of 10 (id check + KB write)", None),
    ("label: KB write alone, 10 labels", None),
    ("train: current labels (KB + live ids)", None),
    ("train: draw pseudo-negatives", None),
    ("train: vectors_of labels + pseudo", None),
    ("train: classifier fit only, cold start (cv_folds=0)", None),
    ("train: classifier fit + CV, cold start", None),
    ("train: classifier fit + CV from the previous version", None),
    ("train: KB save_model", None),
    ("rank: current model from KB", None),
    ("rank: len(col), rank(exact=None)'s choice", None),
    ("rank: col.vectors (a new memmap)", "exact"),
    ("rank: score_matrix, memmap reused", "exact"),
    ("rank: exact_scores (new memmap)", "exact"),
    ("rank: top_exact 100 (+ re-score)", "exact"),
    ("rank: top_hnsw 100 (query + re-score)", "hnsw"),
    ("rank: results_frame (catalog join)", None),
    ("rank: labels column (KB read)", None),
)

LABEL_COUNTS = "(labels: pos/neg/pseudo-negatives)"


def breakdown(s, exact: bool, reps: int) -> list[dict]:
    """The pieces of one round, timed one by one on the session's current state (median ms).

    Calls the session's private steps directly; writes go to a scratch class of the same user.
    """
    from snoop_nb.learn import classifier
    from snoop_nb.learn.rank import exact_scores, score_matrix, top_exact, top_hnsw
    from snoop_nb.search import results_frame

    col = s.col
    pos, neg = s._labelled()
    pseudo = s._pseudo_negative_ids(pos, neg)
    P, N, Q = col.vectors_of(pos), col.vectors_of(neg), col.vectors_of(pseudo)
    w, b = s._direction()
    models = s.history()["model_id"]  # a round starts from the version before these labels
    prev = col.kb.model(int(models.iloc[-2])) if len(models) > 1 else None
    init = None if prev is None else (prev.weights, prev.bias)
    ids10 = np.concatenate([pos, neg])[:10]
    scratch = col.session(USER, f"breakdown-{time.time_ns()}")
    top = top_exact if exact else top_hnsw
    found_ids, found_scores = top(col, w, b, 100)
    df = results_frame(col, found_ids, found_scores)
    vecs = col.vectors
    run = {
        PIECES[0][0]: lambda: scratch.label(ids10, -1),
        PIECES[1][0]: lambda: col.kb.label(USER, scratch.ref.name, ids10, -1),
        PIECES[2][0]: s._labelled,
        PIECES[3][0]: lambda: s._pseudo_negative_ids(pos, neg),
        PIECES[4][0]: lambda: (col.vectors_of(pos), col.vectors_of(neg), col.vectors_of(pseudo)),
        PIECES[5][0]: lambda: classifier.train(P, N, Q, cv_folds=0),
        PIECES[6][0]: lambda: classifier.train(P, N, Q),
        PIECES[7][0]: lambda: classifier.train(P, N, Q, init=init),
        PIECES[8][0]: lambda: col.kb.save_model(
            scratch.ref, weights=w, bias=b, n_pos=len(pos), n_neg=len(neg), params={}, quality={}
        ),
        PIECES[9][0]: s._direction,
        PIECES[10][0]: lambda: len(col),
        PIECES[11][0]: lambda: col.vectors,
        PIECES[12][0]: lambda: score_matrix(vecs, w, b),
        PIECES[13][0]: lambda: exact_scores(col, w, b),
        PIECES[14][0]: lambda: top_exact(col, w, b, 100),
        PIECES[15][0]: lambda: top_hnsw(col, w, b, 100),
        PIECES[16][0]: lambda: results_frame(col, found_ids, found_scores),
        PIECES[17][0]: lambda: s._with_labels(df.copy()),
    }
    rows = []
    for name, needs in PIECES:
        if needs is not None and needs != ("exact" if exact else "hnsw"):
            continue
        fn = run[name]
        fn()  # warm
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        rows.append({"piece": name, "ms": 1e3 * float(np.median(ts))})
    rows.append({"piece": LABEL_COUNTS, "ms": f"{len(pos)}/{len(neg)}/{len(pseudo)}"})
    return rows


def latency(args) -> dict[str, Any]:
    from index import KDEGenerator  # benchmarks/index.py: the same synthetic vectors

    from snoop_nb.collection import open_collection

    real, manifest, groups = real_vectors(Path(args.collection))
    direction = groups.get("vehicles", real).mean(axis=0)
    gen_cache: list = []

    def gen_factory():
        if not gen_cache:
            t0 = time.perf_counter()
            gen_cache.append(KDEGenerator(real.astype(np.float16)))
            print(
                f"  KDE bandwidth {gen_cache[0].bandwidth:.3f} fitted in "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
        return gen_cache[0]

    cache = Path(args.cache_dir)
    results, breakdowns = [], []
    for n in args.sizes:
        print(f"\nlatency at {n:,} vectors (load {load_avg()})", flush=True)
        root, facts = synthetic_collection(cache, n, gen_factory, manifest, args.seed)
        col = open_collection(root)
        truth = Truth(col, direction)
        paths = [("exact", True)]
        hnsw_info: dict = {"available": False}
        if not args.no_hnsw:
            hnsw_info = ensure_index(col, allow_build=not args.no_build_hnsw)
            if hnsw_info["available"]:
                paths.append(("hnsw", False))
        for path, exact in paths:
            la0 = load_avg()
            res = run_path(col, truth, exact, args.sessions, args.latency_rounds, f"{n}-{path}")
            s = res.pop("last_session")
            target = TARGETS.get((n, path))
            row = {
                "n": n,
                "path": path,
                **res,
                "target": target,
                "met": None if target is None else bool(res["round_median"] < target),
                "load_before": la0,
                "load_after": load_avg(),
                "synthetic": facts,
                "index": hnsw_info if path == "hnsw" else None,
            }
            results.append(row)
            print(
                f"  {path}: round median {1e3 * res['round_median']:.0f} ms "
                f"(label {1e3 * res['label_median']:.0f}, train {1e3 * res['train_median']:.0f}, "
                f"rank {1e3 * res['rank_median']:.0f}), p90 {1e3 * res['round_p90']:.0f} ms, "
                f"load {la0} -> {row['load_after']}",
                flush=True,
            )
            for b in breakdown(s, exact, args.breakdown_reps):
                breakdowns.append({"n": n, "path": path, **b})
        col.close()
    return {"rounds": results, "breakdown": breakdowns}


def print_latency(lat: dict) -> None:
    rows = []
    for r in lat["rounds"]:
        rows.append(
            {
                "n": r["n"],
                "path": r["path"],
                "rounds": r["rounds_timed"],
                "label": 1e3 * r["label_median"],
                "train": 1e3 * r["train_median"],
                "rank": 1e3 * r["rank_median"],
                "round": 1e3 * r["round_median"],
                "p90": 1e3 * r["round_p90"],
                "cpu": 1e3 * r["cpu_median"],
                "cold": 1e3 * r["cold_round"],
                "target": None if r["target"] is None else 1e3 * r["target"],
                "met": {None: "-", True: "yes", False: "NO"}[r["met"]],
                "load": "/".join(f"{x:.1f}" for x in r["load_before"][:1] + r["load_after"][:1]),
            }
        )
    print("\none round = label 10 + train + rank top 100 (ms, medians; load = 1-min before/after)")
    print(format_table(rows, list(rows[0]) if rows else []))
    for r in lat["rounds"]:
        if r["index"] and r["index"].get("available"):
            i = r["index"]
            print(
                f"  HNSW at {r['n']:,}: build {i.get('build_seconds', '?')} s wall "
                f"({i.get('build_cpu_seconds', '?')} s CPU, load {i.get('load_before')}), "
                f"load from disk {i['load_seconds']} s, {i['bytes'] / 2**30:.2f} GiB"
            )
    keys = sorted({(b["n"], b["path"]) for b in lat["breakdown"]})
    pieces = [p for p, _ in PIECES] + [LABEL_COUNTS]
    table = []
    for p in pieces:
        row = {"piece": p}
        for n, path in keys:
            hit = [
                b for b in lat["breakdown"] if b["n"] == n and b["path"] == path and b["piece"] == p
            ]
            row[f"{n // 1000}k {path}"] = hit[0].get("ms") if hit else None
        table.append(row)
    print("\nbreakdown of a round (median ms of each piece, timed alone)")
    print(format_table(table, ["piece"] + [f"{n // 1000}k {path}" for n, path in keys]))


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--collection", default=str(DEMO_COLLECTION), help="the labelled demo")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("-k", type=int, default=10, help="items shown and labelled per round")
    p.add_argument("--seeds", type=int, default=3, help="single-example seeds per class")
    p.add_argument("--no-text", dest="text", action="store_false", help="no text-query seed")
    p.add_argument("--report-round", type=int, default=3)
    p.add_argument("--min-class", type=int, default=30, help="main classes have this many")
    p.add_argument("--symbols", choices=("drop", "keep"), default="drop")
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--sessions", type=int, default=3, help="fresh classes per latency path")
    p.add_argument("--latency-rounds", type=int, default=5, help="timed rounds per class")
    p.add_argument("--breakdown-reps", type=int, default=5)
    p.add_argument("--cache-dir", default="/tmp", help="synthetic collections: DIR/fb_syn_N")
    p.add_argument("--no-hnsw", action="store_true", help="exact path only")
    p.add_argument("--no-build-hnsw", action="store_true", help="HNSW only where cached")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help=f"write results and machine facts here (default {DEFAULT_JSON})")
    p.add_argument("--quick", action="store_true", help="main classes, 1 seed, 3 rounds, 10k")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.sessions, args.latency_rounds = 1, 3, 1, 3
        args.breakdown_reps = 3
        if args.sizes == p.get_default("sizes"):
            args.sizes = "10000"
    args.sizes = [int(x) for x in str(args.sizes).split(",") if x]
    out: dict[str, Any] = {
        "machine": machine_info(("numpy", "scikit-learn", "torch", "hnswlib", "threadpoolctl")),
        "args": {k: v for k, v in vars(args).items()},
    }
    # Latency first: its process then holds what a round loads, not the text bridge's models
    # too (with them loaded, threadpoolctl's per-call scan of the libraries costs more).
    if not args.skip_latency:
        out["latency"] = latency(args)
        print_latency(out["latency"])
    if not args.skip_quality:
        out["quality"] = quality(args)
        print_quality(out["quality"], args)
    out["machine"]["load_average_end"] = load_avg()
    path = write_json(args.json or DEFAULT_JSON, out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
