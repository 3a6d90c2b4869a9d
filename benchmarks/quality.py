"""Benchmark retrieval and feedback quality of the offline models, on two labelled image sets.

    python benchmarks/quality.py                         # both sets, both model variants
    python benchmarks/quality.py --sets emoji --models efficientnet_lite0-gem --seeds 5
    python benchmarks/quality.py --quick                 # a smoke run (~2 min)
    python benchmarks/quality.py --latency --latency-sizes 100000,1000000   # search latency

Sets (benchmarks/datasets.py): ``demo``, the demo's stamps, categories = top-level folders (of
at least ``--min-class`` 30 pictures; the smaller folders stay in the corpus as distractors);
``emoji``, Noto Color Emoji rendered one picture each, categories = Unicode emoji subgroups of
20 or more (at most 60 drawn), the smaller subgroups' emoji as distractors. Each is indexed
into a fresh collection per model (``--models``: ``efficientnet_lite0``, the first default,
centre crop and average pooling; ``efficientnet_lite0-gem``, the default, whole picture and GeM
pooling), through ``Collection.add``, and measured through the Python API the CLI calls:

- ``nn``: ``search(item=seed)`` over the whole corpus, the seed left out: mean AP over
  ``--seeds`` seeds per category, then over categories; ``nn_plain`` the same with
  ``expand=False`` (plain nearest neighbours, no diffusion);
- ``text`` / ``text_plain``: ``search(text=name)``, the category's name (``animals``;
  ``animal mammal``), expanded or not;
- feedback: a session started from the seed example (``start(items=[seed])``), then ``R``
  rounds of ``k`` clicks: the ``k`` items the strategy shows (``suggest(k, strategy)``; ``top``
  is the issue's protocol, the best unlabelled items) are labelled from the truth, ``train``,
  and the session's ranking of the whole corpus is scored (AP, labelled items included). Rounds
  1-3 of 10 and of 20 clicks, for ``top``, ``uncertain``, ``diverse`` and ``mixed``.

A category is *worse after feedback* when its mean AP after 3 rounds of 20 ``top`` clicks is
below its NN AP. Results: a table per set and model, the per-category table, and JSON
(``benchmarks/results/quality.json``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, write_json
from datasets import demo_set, emoji_set

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("top", "uncertain", "diverse", "mixed")
MODELS = ("efficientnet_lite0", "efficientnet_lite0-gem")
USER = "bench"


def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, scores)) if y.any() else float("nan")


def ranking_scores(frame, ids: np.ndarray) -> np.ndarray:
    """A result frame's ranking as scores over ``ids`` (items it left out score -inf)."""
    s = np.full(len(ids), -np.inf)
    pos = {int(i): n for n, i in enumerate(ids)}
    for rank, i in enumerate(frame["id"].to_numpy()):
        s[pos[int(i)]] = -rank
    return s


class Corpus:
    """A labelled set indexed into a collection: item ids, categories, texts."""

    def __init__(self, col, items, min_class: int):
        by_path = {str(p): int(i) for i, p in col.paths(col.ok_ids()).items()}
        self.ids = np.array([by_path[str(it.path)] for it in items if str(it.path) in by_path])
        kept = [it for it in items if str(it.path) in by_path]
        self.cats = np.array([it.category or "" for it in kept])
        names, counts = np.unique(self.cats[self.cats != ""], return_counts=True)
        self.classes = [c for c, n in zip(names, counts, strict=True) if n >= min_class]
        self.text = {it.category: it.text for it in kept if it.category}
        self.missing = len(items) - len(kept)


def build(items, model: str, root: Path):
    from snoop_nb import open_collection

    col = open_collection(root, create=True, model=model, device="cpu")
    t0 = time.perf_counter()
    col.add([it.path for it in items], progress=False)
    return col, time.perf_counter() - t0


def run_set(name: str, items, model: str, args, tmp: Path) -> dict:
    col, took = build(items, model, tmp / f"{name}-{model}")
    corpus = Corpus(col, items, args.min_class)
    n = len(corpus.ids)
    rng = np.random.default_rng(args.seed)
    per_class = {}
    for cat in corpus.classes:
        y_all = corpus.cats == cat
        members = corpus.ids[y_all]
        seeds = rng.choice(members, size=min(args.seeds, len(members)), replace=False)
        row: dict = {"class": cat, "n": int(y_all.sum())}
        text = corpus.text[cat]
        for expand, tag in ((False, "_plain"), (True, "")):
            nn = []
            for seed in seeds:
                hits = col.search(item=int(seed), k=n, expand=expand)
                keep = corpus.ids != seed
                nn.append(average_precision(y_all[keep], ranking_scores(hits, corpus.ids)[keep]))
            row["nn" + tag] = float(np.mean(nn))
            hits = col.search(text=text, k=n, expand=expand)
            row["text" + tag] = average_precision(y_all, ranking_scores(hits, corpus.ids))
        for strategy in args.strategies:
            for k in args.clicks:
                curves = []
                for seed in seeds:
                    curves.append(feedback_run(col, corpus, cat, int(seed), strategy, k, args))
                mean = np.mean(curves, axis=0)
                for r in range(args.rounds):
                    row[f"{strategy}{k}_r{r + 1}"] = float(mean[r])
        per_class[cat] = row
    col.close()
    rows = list(per_class.values())
    summary = {
        "set": name,
        "model": model,
        "items": n,
        "classes": len(rows),
        "distractors": int((~np.isin(corpus.cats, corpus.classes)).sum()),
        "index_s": round(took, 1),
        **{
            key: float(np.mean([r[key] for r in rows]))
            for key in ("nn_plain", "nn", "text_plain", "text")
        },
    }
    for key in rows[0]:
        if "_r" in key:
            summary[key] = float(np.mean([r[key] for r in rows]))
    top = f"top20_r{args.rounds}"
    if top in rows[0]:
        summary["worse_after_feedback"] = [r["class"] for r in rows if r[top] < r["nn"]]
        summary["fb_beats_nn"] = sum(r[top] > r["nn"] for r in rows)
    return {"summary": summary, "per_class": rows}


def feedback_run(col, corpus: Corpus, cat: str, seed: int, strategy: str, k: int, args):
    """AP of the session's ranking after each of ``args.rounds`` rounds of ``k`` clicks."""
    s = col.session(USER, f"{cat}-{seed}-{strategy}-{k}", seed=seed)
    s.start(items=[seed])
    s.label([seed], +1)
    pos_of = {int(i): n for n, i in enumerate(corpus.ids)}
    y = corpus.cats == cat
    out = []
    for _ in range(args.rounds):
        shown = s.suggest(k, strategy)["id"].to_numpy(np.int64)
        truth = np.array([corpus.cats[pos_of[int(i)]] == cat for i in shown], bool)
        if truth.any():
            s.label(shown[truth], +1)
        if (~truth).any():
            s.label(shown[~truth], -1)
        s.train()
        scores = s.scores()
        out.append(average_precision(y, scores.reindex(corpus.ids).to_numpy()))
    return out


def latency(args) -> list[dict]:
    """Median time of a search by item (k = 24, a grid page) with and without expansion, on
    the synthetic collections of benchmarks/feedback.py (vectors drawn around the demo's)."""
    import feedback
    from index import KDEGenerator

    from snoop_nb.collection import open_collection

    real, manifest, _ = feedback.real_vectors(ROOT / "data" / "demo" / "collection")
    gen: list = []

    def factory():
        if not gen:
            gen.append(KDEGenerator(real.astype(np.float16)))
        return gen[0]

    rows = []
    for n in args.latency_sizes:
        root, _facts = feedback.synthetic_collection(Path(args.cache_dir), n, factory, manifest, 0)
        col = open_collection(root)
        paths = [("exact", True)]
        if feedback.ensure_index(col, allow_build=True)["available"]:
            paths.append(("hnsw", False))
        queries = np.random.default_rng(0).choice(n, size=args.latency_queries, replace=False)
        for path, exact in paths:
            for expand in (False, True):
                col.search(item=int(queries[0]), k=24, exact=exact, expand=expand)  # warm
                times = []
                for q in queries:
                    t0 = time.perf_counter()
                    col.search(item=int(q), k=24, exact=exact, expand=expand)
                    times.append(time.perf_counter() - t0)
                rows.append(
                    {
                        "n": n,
                        "path": path,
                        "expand": expand,
                        "median_ms": 1e3 * float(np.median(times)),
                        "p90_ms": 1e3 * float(np.quantile(times, 0.9)),
                        "load": [round(x, 2) for x in os.getloadavg()],
                    }
                )
                print(format_table(rows[-1:], list(rows[-1])), flush=True)
        col.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="demo,emoji")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seeds", type=int, default=3, help="seed examples per category")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clicks", default="10,20")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--min-class", type=int, default=None, help="default: 30 demo, 20 emoji")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="1 seed, top only, 20 clicks")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/quality.json")
    p.add_argument(
        "--latency",
        action="store_true",
        help="instead: the time of a search with and without expansion on synthetic collections",
    )
    p.add_argument("--latency-sizes", default="100000")
    p.add_argument("--latency-queries", type=int, default=30)
    p.add_argument("--cache-dir", default="/tmp", help="synthetic collections: DIR/fb_syn_N")
    args = p.parse_args(argv)
    if args.latency:
        args.latency_sizes = [int(x) for x in args.latency_sizes.split(",")]
        rows = latency(args)
        print(format_table(rows, ["n", "path", "expand", "median_ms", "p90_ms", "load"]))
        out = args.json.with_name("quality_latency.json")
        write_json(out, {"machine": machine_info(["numpy"]), "rows": rows})
        print(f"wrote {out}")
        return 0
    args.clicks = [int(c) for c in args.clicks.split(",")]
    args.strategies = args.strategies.split(",")
    if args.quick:
        args.seeds, args.clicks, args.strategies = 1, [20], ["top"]
    os.environ.setdefault("TQDM_DISABLE", "1")
    results = []
    with tempfile.TemporaryDirectory(prefix="snoop-quality-") as tmp:
        for name in args.sets.split(","):
            items = demo_set() if name == "demo" else emoji_set()
            defaults = {"demo": 30, "emoji": 20}
            for model in args.models.split(","):
                a = argparse.Namespace(**vars(args))
                a.min_class = args.min_class or defaults.get(name, 20)
                t0 = time.perf_counter()
                res = run_set(name, items, model, a, Path(tmp))
                res["summary"]["seconds"] = round(time.perf_counter() - t0, 1)
                results.append(res)
                print_one(res, args)
    print_summary(results, args)
    write_json(
        args.json,
        {"machine": machine_info(["numpy", "torch"]), "args": vars(args), "results": results},
    )
    print(f"wrote {args.json}")
    return 0


def print_one(res: dict, args) -> None:
    s = res["summary"]
    print(
        f"\n{s['set']} / {s['model']}: {s['items']} items, {s['classes']} categories, "
        f"{s['distractors']} distractors (indexed in {s['index_s']} s)"
    )
    r = args.rounds
    cols = ["class", "n", "nn_plain", "nn", "text_plain", "text"] + [
        f"{st}{k}_r{r}" for st in args.strategies for k in args.clicks
    ]
    print(format_table(res["per_class"], cols))


def print_summary(results: list[dict], args) -> None:
    cols = ["set", "model", "nn_plain", "nn", "text_plain", "text"]
    for k in args.clicks:
        cols += [f"top{k}_r{r + 1}" for r in range(args.rounds)]
    cols += [
        f"{st}20_r{args.rounds}" for st in args.strategies if st != "top" and 20 in args.clicks
    ]
    cols += ["fb_beats_nn"]
    print("\nMean AP over categories")
    print(format_table([r["summary"] for r in results], cols))


if __name__ == "__main__":
    sys.exit(main())
