"""Benchmark labels weighted by reliability: simulated users of known reliability label a class.

    python benchmarks/reliability.py                    # demo and emoji, 5 seeds
    python benchmarks/reliability.py --sets demo --seeds 2      # a quick run

For each class of a set and each seed, a pool of ``--pool`` items (half the class, ``--positives``
at most, the rest drawn from the others) is labelled by six simulated users, each of whom sees
a random ``--coverage`` share of the pool (so the users overlap: about 3 votes an item):

======== =========== =========== ==============================================
user     sensitivity specificity who
======== =========== =========== ==============================================
expert1  0.95        0.95        experts
expert2  0.95        0.95
good1    0.80        0.80        careful amateurs
good2    0.75        0.75
random   0.55        0.55        near random
yes-man  0.95        0.55        says "relevant" too often (45% of the others)
======== =========== =========== ==============================================

Each user's mistakes are drawn independently (numpy ``default_rng([seed, class])``). The labels
are then aggregated by ``dawid-skene`` and ``majority`` (:mod:`snoop_nb.learn.aggregate`),
or taken from one user: the *median* user (the 3rd of 6 by true balanced accuracy, good1) or a
user drawn at random per run; ``truth`` (every pool item labelled right) is the ceiling.
Measured: (a) the accuracy of the labels each gives on the items it labels (and how many), and
(b) the AP over the whole corpus (and outside the pool) of the feedback classifier trained on them
(:func:`snoop_nb.learn.classifier.train`, with pseudo-negatives drawn as a session draws them;
``dawid-skene`` rows weighted by the posterior's confidence, as ``FeedbackSession.train`` does,
and ``ds-unweighted`` without), mean over seeds then over classes.

Sets: ``demo``: the demo collection's embeddings (``data/demo/collection``, default model),
categories = top-level folders of 30 pictures or more except ``symbols`` (7 classes; every
picture stays in the corpus); ``emoji``: the emoji set of ``benchmarks/datasets.py`` (1,644
Noto emoji, categories = Unicode subgroups of 20-60, the rest distractors), indexed once with the
default model into ``data/bench/emoji-collection``. Writes ``benchmarks/results/reliability.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import format_table, machine_info, write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "reliability.json"
#: (name, sensitivity, specificity)
USERS = (
    ("expert1", 0.95, 0.95),
    ("expert2", 0.95, 0.95),
    ("good1", 0.80, 0.80),
    ("good2", 0.75, 0.75),
    ("random", 0.55, 0.55),
    ("yes-man", 0.95, 0.55),
)
MEDIAN_USER = "good1"
METHODS = ("truth", "dawid-skene", "ds-unweighted", "majority", "median user", "random user")


def load_set(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Vectors (float32), category per item ('' for none) and the classes measured."""
    from snoop_nb import open_collection

    if name == "demo":
        root = ROOT / "data" / "demo" / "collection"
        if not (root / "manifest.json").exists():
            sys.exit(f"no collection at {root}: build the demo with `python -m snoop_nb.demo`")
        col = open_collection(root)
        items = col.items()
        cats = items["category"].fillna("").to_numpy(str)
        min_class, drop = 30, {"symbols", ""}
    else:
        from datasets import emoji_set

        root = ROOT / "data" / "bench" / "emoji-collection"
        listed = emoji_set()
        if not (root / "manifest.json").exists():
            col = open_collection(root, create=True, device="cpu")
            col.add([it.path for it in listed], progress=False)
        else:
            col = open_collection(root)
        items = col.items()
        by_path = {str(it.path): it.category or "" for it in listed}
        cats = np.asarray([by_path.get(str(col.paths([i])[i]), "") for i in items["id"]], str)
        min_class, drop = 20, {""}
    x = col.vectors_of(items["id"].to_numpy(np.int64)).astype(np.float32)
    col.close()
    names, counts = np.unique(cats, return_counts=True)
    classes = [c for c, n in zip(names, counts, strict=True) if n >= min_class and c not in drop]
    return x, cats, classes


def simulate(y: np.ndarray, pool: np.ndarray, coverage: float, rng) -> list[tuple[int, str, int]]:
    """Votes (item, user, +1/-1) of the simulated users on ``pool`` (positions into ``y``)."""
    votes = []
    for name, sens, spec in USERS:
        seen = pool[rng.random(len(pool)) < coverage]
        right = rng.random(len(seen)) < np.where(y[seen], sens, spec)
        said = np.where(right == y[seen], 1, -1)
        votes += [(int(i), name, int(v)) for i, v in zip(seen, said, strict=True)]
    return votes


def train_ap(x, y, pos, neg, conf, rng, rest, pseudo_n: int = 500) -> tuple[float, float]:
    """AP over the corpus, and over the ``rest`` (a mask: the items outside the pool), of the
    feedback classifier trained on ``pos``/``neg`` (positions)."""
    from sklearn.metrics import average_precision_score

    from snoop_nb.learn import classifier

    if len(pos) == 0 or len(pos) + len(neg) < classifier.MIN_LABELS:
        return float("nan"), float("nan")
    want = pseudo_n if len(neg) < len(pos) else pseudo_n // 4
    free = np.setdiff1d(np.arange(len(x)), np.concatenate([pos, neg]))
    pseudo = rng.choice(free, size=min(want, len(free)), replace=False)
    m = classifier.train(x[pos], x[neg], x[pseudo], seed=0, confidence=conf)
    s = x @ m.weights + m.bias
    return float(average_precision_score(y, s)), float(average_precision_score(y[rest], s[rest]))


def run(x, cats, cls: str, seed: int, args) -> list[dict]:
    import pandas as pd

    from snoop_nb.learn.aggregate import aggregate

    rng = np.random.default_rng([seed, sum(map(ord, cls))])
    y = cats == cls
    pos_all, neg_all = np.flatnonzero(y), np.flatnonzero(~y)
    n_pos = min(args.positives, len(pos_all) // 2)  # the rest to find
    pool = np.concatenate(
        [
            rng.choice(pos_all, n_pos, replace=False),
            rng.choice(neg_all, args.pool - n_pos, replace=False),
        ]
    )
    votes = pd.DataFrame(
        simulate(y, pool, args.coverage, rng), columns=["item_id", "user", "value"]
    )
    rest = np.ones(len(y), bool)
    rest[pool] = False
    random_user = USERS[int(rng.integers(len(USERS)))][0]
    rows = []
    for method in METHODS:
        conf = None
        if method == "truth":
            ids, lab = pool, np.where(y[pool], 1, -1)
        else:
            if method in ("dawid-skene", "ds-unweighted", "majority"):
                agg = aggregate(votes, "majority" if method == "majority" else "dawid-skene")
            else:
                who = MEDIAN_USER if method == "median user" else random_user
                agg = aggregate(votes[votes["user"] == who])
            items = agg.items[agg.items["label"] != 0]
            ids, lab = items["item_id"].to_numpy(np.int64), items["label"].to_numpy()
            if method == "dawid-skene":
                p = items["probability"].to_numpy()
                c = np.maximum(p, 1 - p)
                conf = (c[lab > 0], c[lab < 0])
        acc = float(np.mean((lab > 0) == y[ids])) if len(ids) else float("nan")
        ap, ap_rest = train_ap(
            x, y, ids[lab > 0], ids[lab < 0], conf, np.random.default_rng(seed), rest
        )
        rows.append(
            {
                "class": cls,
                "seed": seed,
                "method": method,
                "labels": len(ids),
                "label_accuracy": acc,
                "ap": ap,
                "ap_rest": ap_rest,
                "user": random_user if method == "random user" else None,
            }
        )
    if args.reliability:  # how well Dawid-Skene ranks the users (Spearman with the truth)
        from scipy.stats import spearmanr

        est = aggregate(votes).users.set_index("user")["reliability"]
        true = {n: (se + sp) / 2 for n, se, sp in USERS}
        rho = spearmanr([true[u] for u in est.index], est.to_numpy()).statistic
        rows[1]["user_rank_spearman"] = float(rho)
        rows[1]["estimated"] = {u: round(float(r), 3) for u, r in est.items()}
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    import pandas as pd

    df = pd.DataFrame(rows)
    per_class = df.groupby(["method", "class"])[
        ["label_accuracy", "ap", "ap_rest", "labels"]
    ].mean()
    out = []
    for method in METHODS:
        sub = per_class.loc[method]
        r = {
            "method": method,
            "label accuracy": float(sub["label_accuracy"].mean()),
            "labels": float(sub["labels"].mean()),
            "AP": float(sub["ap"].mean()),
            "AP outside pool": float(sub["ap_rest"].mean()),
        }
        if method == "dawid-skene" and "user_rank_spearman" in df:
            r["users' rank rho"] = float(df["user_rank_spearman"].dropna().mean())
        out.append(r)
    ds = per_class.loc["dawid-skene"]["ap"]
    for r in out:
        if r["method"] != "dawid-skene":
            other = per_class.loc[r["method"]]["ap"]
            r["DS better on"] = f"{int((ds > other + 1e-9).sum())}/{len(ds)}"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="demo,emoji")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--pool", type=int, default=200, help="items labelled per class and seed")
    p.add_argument("--positives", type=int, default=50, help="of the class in the pool, at most")
    p.add_argument("--coverage", type=float, default=0.5, help="share of the pool each user sees")
    p.add_argument("--no-reliability", dest="reliability", action="store_false")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    result = {
        "machine": machine_info(("numpy", "scikit-learn")),
        "users": [{"user": n, "sensitivity": se, "specificity": sp} for n, se, sp in USERS],
        "args": vars(args),
        "sets": {},
    }
    for name in args.sets.split(","):
        x, cats, classes = load_set(name)
        rows = [r for cls in classes for s in range(args.seeds) for r in run(x, cats, cls, s, args)]
        summary = summarise(rows)
        result["sets"][name] = {
            "items": len(x),
            "classes": {c: int((cats == c).sum()) for c in classes},
            "summary": summary,
            "runs": rows,
        }
        print(
            f"\n{name}: {len(x)} items, {len(classes)} classes, {args.seeds} seeds, "
            f"pool {args.pool} (<= {args.positives} positives), coverage {args.coverage}"
        )
        cols = ["method", "label accuracy", "labels", "AP", "AP outside pool", "DS better on"]
        if summary[1].get("users' rank rho") is not None:
            cols.append("users' rank rho")
        print(format_table(summary, cols))
    result["seconds"] = time.perf_counter() - t0
    print(f"\nwrote {write_json(args.out, result)} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
