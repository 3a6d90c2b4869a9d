"""Indexes for large collections: compressed codes (``pca-sq8``) and sharded indexes.

Both must give what exact search gives: the compressed index by re-scoring its candidates from
the full vectors, the sharded one by merging each shard's own top k.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dashboard import DEMO_COLLECTION
from test_index import recall_at_10, unit

from snoop_nb.collection import open_collection
from snoop_nb.errors import CollectionError, UsageError
from snoop_nb.index import ExactIndex, HNSWIndex, ProjectedIndex
from snoop_nb.index.compressed import CompressedIndex
from snoop_nb.index.sharded import ShardedIndex, meta_path, shard_path
from snoop_nb.learn.rank import top_exact, top_hnsw
from snoop_nb.store.layout import index_entry

DIM = 64


def embedding_like(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """Unit vectors shaped like image embeddings: 40 clusters, a variance that decays over
    the principal directions (the j-th as 1/j) and a common mean direction (ReLU features all
    lean one way), in a random basis."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    scale = 1 / np.sqrt(np.arange(1, dim + 1))
    centres = 2 * rng.standard_normal((40, dim)) * scale
    x = centres[rng.integers(0, 40, n)] + rng.standard_normal((n, dim)) * scale
    return unit(x @ basis.T + 3 * basis[:, 0])


@pytest.fixture(scope="module")
def generated() -> np.ndarray:
    return embedding_like(6050, seed=3)


@pytest.fixture(scope="module")
def rows(generated) -> np.ndarray:
    """Unit rows as a collection's vectors.f16 holds them: row i is id i."""
    return generated[:6000].astype(np.float16)


@pytest.fixture(scope="module")
def queries(generated) -> np.ndarray:
    return generated[6000:]  # held out


def exact_top(rows: np.ndarray, q: np.ndarray, k: int, live: np.ndarray | None = None):
    idx = ExactIndex(rows.shape[1])
    ids = np.arange(len(rows)) if live is None else live
    idx.add(ids, rows[ids])
    return idx.search(q, k)


def compressed(rows: np.ndarray, **kw) -> CompressedIndex:
    kw.setdefault("project_dim", 16)
    kw.setdefault("min_fit", 500)
    kw.setdefault("candidates", 300)
    return CompressedIndex(rows.shape[1], vectors=rows, **kw)


# --- the compressed index -------------------------------------------------------------------
def test_compressed_search_finds_the_exact_neighbours_with_exact_scores(rows, queries):
    idx = compressed(rows)
    idx.add(np.arange(len(rows)), rows)
    assert idx._codes is not None  # past min_fit: searches go through the codes
    ids, scores = idx.search(queries, 10)
    ex_ids, _ = exact_top(rows, queries, 10)
    assert recall_at_10(ids, ex_ids) >= 0.97
    # a re-scored candidate carries its exact cosine, not its code's estimate
    full = rows.astype(np.float32)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    np.testing.assert_allclose(scores[:, 0], np.sum(full[ids[:, 0]] * q, axis=1), atol=1e-5)


def test_compressed_search_on_real_embeddings_recalls_the_exact_neighbours():
    """The demo's own vectors (1280-d, EfficientNet-Lite0): 128 bytes an item, and 5% of the
    corpus as candidates, find the exact ten nearest."""
    if not (DEMO_COLLECTION / "manifest.json").exists():
        pytest.fail(f"the demo collection is missing at {DEMO_COLLECTION}: make demo-collection")
    col = open_collection(DEMO_COLLECTION)
    ids = col.ok_ids()
    real = np.asarray(col.vectors[ids])
    col.close()
    store = np.zeros((int(ids.max()) + 1, real.shape[1]), np.float16)
    store[ids] = real
    idx = CompressedIndex(real.shape[1], vectors=store, min_fit=100, candidates=len(ids) // 20)
    idx.add(ids, real)
    q = real[::10].astype(np.float32)
    got, _ = idx.search(q, 11)
    exact = ExactIndex(real.shape[1])
    exact.add(ids, real)
    want, _ = exact.search(q, 11)
    assert recall_at_10(got[:, 1:], want[:, 1:]) >= 0.95  # the query itself first, left out
    assert (got[:, 0] == want[:, 0]).mean() >= 0.95


def test_compressed_codes_hold_one_byte_per_projected_dimension(rows):
    idx = compressed(rows, project_dim=16)
    idx.add(np.arange(len(rows)), rows)
    assert idx._code_view().shape == (len(rows), 16)
    assert idx._code_view().dtype == np.uint8


def test_fewer_candidates_lose_recall_and_more_win_it_back(rows, queries):
    """The candidates really come from the codes: one per query is the codes' own guess."""
    idx = compressed(rows, project_dim=8)
    idx.add(np.arange(len(rows)), rows)
    ex_ids, _ = exact_top(rows, queries, 10)
    narrow = recall_at_10(idx.search(queries, 10, ef=10)[0], ex_ids)
    wide = recall_at_10(idx.search(queries, 10, ef=600)[0], ex_ids)
    assert wide > narrow
    assert wide >= 0.95


def test_ranking_by_a_classifier_direction_recalls_the_exact_top_100(rows):
    """The issue's measure on a generated set: a linear class's top 100 through the codes."""
    from sklearn.linear_model import LogisticRegression

    idx = compressed(rows, project_dim=16, candidates=1000)
    idx.add(np.arange(len(rows)), rows)
    full = rows.astype(np.float32)
    rng = np.random.default_rng(0)
    recalls = []
    for _ in range(5):
        centre = full[rng.integers(len(full))]
        near = np.argsort(-(full @ centre))[:300]
        pos = rng.choice(near, 20, replace=False)
        neg = rng.choice(len(full), 200, replace=False)
        lr = LogisticRegression(C=10, max_iter=1000).fit(
            full[np.r_[pos, neg]], np.r_[np.ones(20), np.zeros(200)]
        )
        w = lr.coef_[0].astype(np.float32)
        found, _ = idx.search(w / np.linalg.norm(w), 100)
        truth = np.argsort(-(full @ w))[:100]
        recalls.append(len(np.intersect1d(found[0], truth)) / 100)
    assert np.mean(recalls) >= 0.9, recalls


def test_approximate_scores_follow_the_exact_ones(rows):
    idx = compressed(rows, project_dim=32)
    idx.add(np.arange(len(rows)), rows)
    w = np.random.default_rng(1).standard_normal(DIM).astype(np.float32)
    ids, approx = idx.approximate_scores(w)
    assert ids.tolist() == list(range(len(rows)))
    exact = rows.astype(np.float32) @ w
    assert np.corrcoef(approx, exact)[0, 1] > 0.95
    # the decoding rule used here is faiss's own
    codes = idx._code_view()
    vmin, vdiff = idx._ranges()
    np.testing.assert_allclose(
        idx._codes.sa_decode(np.ascontiguousarray(codes[:50])),
        vmin + (codes[:50].astype(np.float32) + 0.5) / 255 * vdiff,
        atol=1e-6,
    )


def test_compressed_search_is_exact_until_it_can_fit(rows, queries):
    idx = compressed(rows, min_fit=1000)
    idx.add(np.arange(400), rows[:400])
    assert idx._codes is None
    ids, _ = idx.search(queries, 5)
    ex_ids, _ = exact_top(rows, queries, 5, np.arange(400))
    assert (ids == ex_ids).all()
    idx.add(np.arange(400, 2000), rows[400:2000])
    assert idx._codes is not None and idx.fit_size_ == 2000


def test_compressed_fits_again_as_it_grows(rows):
    idx = compressed(rows, min_fit=500, fit_sample=5000)
    idx.add(np.arange(500), rows[:500])
    first = idx.projection_.copy()
    idx.add(np.arange(500, 2500), rows[500:2500])  # 5x the fit: fitted again
    assert idx.fit_size_ == 2500
    assert not np.allclose(first, idx.projection_)


def test_removed_and_replaced_items_never_come_back(rows, queries):
    idx = compressed(rows)
    idx.add(np.arange(len(rows)), rows)
    gone = exact_top(rows, queries, 3)[0][:, 0]
    idx.remove(gone)
    ids, _ = idx.search(queries, 10)
    assert not np.isin(ids, gone).any()
    live = np.setdiff1d(np.arange(len(rows)), gone)
    assert idx.ids().tolist() == live.tolist()
    # re-adding an id (its row unchanged: an external store) makes it live again, once
    idx.add(gone[:1], rows[gone[:1]])
    assert gone[0] in idx and len(idx) == live.size + 1
    assert (idx.ids() == np.union1d(live, gone[:1])).all()


def test_compaction_drops_removed_codes_and_keeps_results(rows, queries):
    idx = compressed(rows)
    idx.add(np.arange(len(rows)), rows)
    live = np.arange(0, len(rows), 3)  # two thirds removed: compacted
    idx.remove(np.setdiff1d(np.arange(len(rows)), live))
    assert len(idx._pos_id) == live.size and idx._code_view().shape[0] == live.size
    ids, _ = idx.search(queries, 10)
    ex_ids, _ = exact_top(rows, queries, 10, live)
    assert recall_at_10(ids, ex_ids) >= 0.97
    assert np.isin(ids[ids >= 0], live).all()


def test_compressed_save_and_load_give_the_same_results(tmp_path: Path, rows, queries):
    idx = compressed(rows)
    idx.add(np.arange(len(rows)), rows)
    idx.remove([1, 2, 3])
    idx.save(tmp_path / "index.hnsw")
    assert (tmp_path / "index.hnsw.sq8").exists()
    back = CompressedIndex.load(tmp_path / "index.hnsw", vectors=rows)
    assert back.ids().tolist() == idx.ids().tolist()
    a, sa = idx.search(queries, 10)
    b, sb = back.search(queries, 10)
    assert (a == b).all()
    np.testing.assert_array_equal(sa, sb)


def test_a_truncated_compressed_file_is_refused(tmp_path: Path, rows):
    idx = compressed(rows)
    idx.add(np.arange(len(rows)), rows)
    idx.save(tmp_path / "index.hnsw")
    f = tmp_path / "index.hnsw.sq8"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(Exception):  # noqa: B017 - zipfile's or numpy's error: any, not a crash
        CompressedIndex.load(tmp_path / "index.hnsw", vectors=rows)


# --- the sharded index ----------------------------------------------------------------------
@pytest.mark.parametrize("n_shards", [1, 2, 5])
def test_merged_shards_equal_exact_search(rows, queries, n_shards):
    shards = ShardedIndex([ExactIndex(DIM) for _ in range(n_shards)])
    shards.add(np.arange(len(rows)), rows)
    ids, scores = shards.search(queries, 10)
    ex_ids, ex_scores = exact_top(rows, queries, 10)
    assert (ids == ex_ids).all()
    np.testing.assert_allclose(scores, ex_scores, atol=1e-6)
    assert shards.ids().tolist() == list(range(len(rows)))
    # item i lives in shard i % n
    for s, shard in enumerate(shards.shards):
        assert (shard.ids() % n_shards == s).all()


def test_sharded_graphs_merge_to_the_exact_top_k(rows, queries):
    """HNSW shards, each searched wide enough to be exact on its own share, merge to exact."""
    shards = ShardedIndex([HNSWIndex(DIM, threads=1, ef=400) for _ in range(3)])
    shards.add(np.arange(len(rows)), rows)
    ids, _ = shards.search(queries, 10)
    ex_ids, _ = exact_top(rows, queries, 10)
    assert recall_at_10(ids, ex_ids) >= 0.99


def test_sharded_index_pads_when_few_items_are_live():
    shards = ShardedIndex([ExactIndex(2) for _ in range(3)])
    shards.add([0, 1], [[1, 0], [0, 1]])
    ids, scores = shards.search([[1, 0]], k=4)
    assert ids.tolist() == [[0, 1, -1, -1]]
    assert np.isneginf(scores[0, 2:]).all()
    shards.remove([0])
    assert shards.ids().tolist() == [1] and 0 not in shards and 1 in shards


def test_shards_of_mixed_kinds_are_refused():
    with pytest.raises(ValueError, match="one kind"):
        ShardedIndex([ExactIndex(4), HNSWIndex(4)])


# --- through a collection ---------------------------------------------------------------------
class VectorOnly:
    """An embedder stand-in for collections filled by add_vectors: never asked to embed."""

    id = "test-vectors@0"
    dim = DIM
    name = "test-vectors"

    def describe(self):
        return {"id": self.id, "name": self.name, "dim": self.dim}


def make_collection(root: Path, rows: np.ndarray, **index_params):
    col = open_collection(root, create=True, embedder=VectorOnly(), index_params=index_params)
    uris = [f"mem://{i}" for i in range(len(rows))]
    half = len(rows) // 2
    col.add_vectors(uris[:half], rows[:half])
    col.add_vectors(uris[half:], rows[half:])
    return col


@pytest.mark.parametrize(
    "params",
    [
        {"kind": "pca-sq8", "project_dim": 16, "min_fit": 500},
        {"kind": "pca-sq8", "project_dim": 16, "min_fit": 500, "shards": 3},
        {"kind": "hnsw", "shards": 2, "ef": 400},
        {"kind": "hnsw-pca", "project_dim": 32, "min_fit": 500, "shards": 2, "ef": 400},
    ],
    ids=["sq8", "sq8-3-shards", "hnsw-2-shards", "hnsw-pca-2-shards"],
)
def test_a_collection_of_each_large_kind_searches_and_ranks_like_exact(tmp_path, rows, params):
    col = make_collection(tmp_path / "c", rows, **params)
    col.remove([5, 6])
    q = rows[[10, 2000, 4000]].astype(np.float32)
    ids, _ = col.index.search(q, 10)
    ex_ids, _ = col.exact_index().search(q, 10)
    assert recall_at_10(ids, ex_ids) >= 0.97
    assert not np.isin(ids, [5, 6]).any()
    # ranking by a linear class: through the index, as at scale, against the exact ranking
    w = rows[100].astype(np.float32) - rows.astype(np.float32).mean(0)
    got, _ = top_hnsw(col, w, 0.1, 50)
    want, _ = top_exact(col, w, 0.1, 50)
    assert len(np.intersect1d(got, want)) >= 48
    files = sorted(p.name for p in col.root.iterdir() if p.name.startswith("index.hnsw"))
    info = col.info()["index"]
    assert info["kind"] == params["kind"] and info["bytes"] > 0
    col.close()
    # reopened, it loads what was saved and answers the same
    col = open_collection(tmp_path / "c")
    again, _ = col.index.search(q, 10)
    assert (again == ids).all()
    if params.get("shards", 1) > 1:
        assert col.index.n_shards == params["shards"]
        assert meta_path(tmp_path / "c" / "index.hnsw").name in files
    col.close()


def test_a_lost_shard_is_rebuilt_from_the_vectors(tmp_path, rows):
    col = make_collection(tmp_path / "c", rows, kind="pca-sq8", project_dim=16, min_fit=500,
                          shards=3)  # fmt: skip
    col.close()
    lost = shard_path(tmp_path / "c" / "index.hnsw", 1)
    lost.with_name(lost.name + ".sq8").unlink()
    col = open_collection(tmp_path / "c")
    index = col.sync_index(save=True)
    assert index.ids().tolist() == col.ok_ids().tolist()
    assert (index.shards[1].ids() % 3 == 1).all() and len(index.shards[1]) > 0
    assert lost.with_name(lost.name + ".sq8").exists()  # saved again
    col.close()


def test_a_feedback_round_on_a_compressed_collection(tmp_path, rows):
    """label, train, rank: the session's path at scale goes through the codes."""
    col = make_collection(tmp_path / "c", rows, kind="pca-sq8", project_dim=16, min_fit=500)
    full = rows.astype(np.float32)
    centre = full[7]
    truth = set(np.argsort(-(full @ centre))[:200].tolist())
    s = col.session("ann", "cluster")
    s.label([7], +1)
    shown = s.rank(20, exact=False)["id"].to_numpy()
    s.label([i for i in shown if i in truth], +1)
    s.label([i for i in shown if i not in truth], -1)
    s.train()
    fast = s.rank(100, exact=False)["id"].to_numpy()
    slow = s.rank(100, exact=True)["id"].to_numpy()
    assert len(np.intersect1d(fast, slow)) >= 95
    col.close()


def test_the_manifest_entry_checks_kind_shards_and_projection():
    assert index_entry(1280, {"kind": "pca-sq8"})["project_dim"] == 128
    assert "shards" not in index_entry(1280, {"kind": "pca-sq8", "shards": 1})
    assert index_entry(1280, {"shards": 4})["shards"] == 4
    with pytest.raises(UsageError, match="shards"):
        index_entry(1280, {"shards": 0})
    with pytest.raises(UsageError, match="project_dim"):
        index_entry(64, {"kind": "pca-sq8", "project_dim": 65})
    with pytest.raises(UsageError, match="unknown index kind"):
        index_entry(64, {"kind": "ivf"})


def test_a_directory_holding_only_compressed_or_shard_files_is_no_fresh_collection(tmp_path):
    for name in ("index.hnsw.sq8", "index.hnsw.2.npz", "index.hnsw.shards.json"):
        d = tmp_path / name
        d.mkdir()
        (d / name).write_bytes(b"x")
        with pytest.raises(CollectionError, match="index files but no manifest"):
            open_collection(d, create=True, embedder=VectorOnly())


def test_the_projected_kind_still_loads_as_before(tmp_path, rows):
    """Collections made before shards existed: one hnsw-pca index, same files, same reads."""
    col = make_collection(tmp_path / "c", rows, kind="hnsw-pca", project_dim=32, min_fit=500)
    col.close()
    names = sorted(p.name for p in (tmp_path / "c").iterdir() if p.name.startswith("index"))
    assert names == ["index.hnsw", "index.hnsw.json", "index.hnsw.npz"]
    col = open_collection(tmp_path / "c")
    assert isinstance(col.index, ProjectedIndex)
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["index"]["kind"] == "hnsw-pca"
    col.close()


def test_reindex_changes_the_kind_and_keeps_items_and_labels(tmp_path, rows):
    col = make_collection(tmp_path / "c", rows, kind="hnsw")
    s = col.session("ann", "some")
    s.label([1, 2], +1)
    s.label([3], -1)
    before = col.ok_ids()
    assert not col.index_differs(kind="hnsw", shards=1)
    assert col.index_differs(kind="pca-sq8")
    index = col.reindex(kind="pca-sq8", shards=2, project_dim=16, min_fit=500)
    assert index.kind == "pca-sq8" and index.n_shards == 2
    assert col.describe_index() == "pca-sq8 (2 shards)"
    names = {p.name for p in col.root.iterdir() if p.name.startswith("index.hnsw")}
    assert "index.hnsw" not in names and "index.hnsw.shards.json" in names  # the graph is gone
    assert (col.ok_ids() == before).all()
    assert s.counts() == {"pos": 2, "neg": 1}
    q = rows[[10, 4000]].astype(np.float32)
    ex_ids, _ = col.exact_index().search(q, 10)
    assert recall_at_10(col.index.search(q, 10)[0], ex_ids) >= 0.97
    col.close()
    col = open_collection(tmp_path / "c")
    assert col.manifest["index"]["kind"] == "pca-sq8" and col.manifest["index"]["shards"] == 2
    assert col.index.n_shards == 2
    # back to one shard of the same kind: the kind's parameters are kept
    col.reindex(shards=1)
    assert "shards" not in col.manifest["index"] and col.manifest["index"]["project_dim"] == 16
    assert isinstance(col.index, CompressedIndex)
    col.close()


def test_the_cli_makes_and_rebuilds_a_compressed_sharded_index(tmp_path, tiny_clip, photo_set):
    import subprocess
    import sys

    def snoop(*args):
        return subprocess.run(
            [sys.executable, "-m", "snoop_nb.cli", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=300,
        )

    root = tmp_path / "c"
    model = ("--model", tiny_clip["model"], "--pretrained", tiny_clip["pretrained"])
    made = snoop("index", tmp_path / "photos", "--collection", root, *model, "--index",
                 "pca-sq8", "--shards", "2", "--quiet")  # fmt: skip
    assert made.returncode == 0, made.stderr
    entry = json.loads((root / "manifest.json").read_text())["index"]
    assert (entry["kind"], entry["shards"]) == ("pca-sq8", 2)
    info = snoop("info", "--collection", root)
    assert "pca-sq8 (2 shards)" in info.stdout
    again = snoop("index", tmp_path / "photos", "--collection", root, "--shards", "3", "--quiet")
    assert again.returncode == 0, again.stderr
    assert "index: rebuilt as pca-sq8 (3 shards)" in again.stdout
    assert json.loads((root / "manifest.json").read_text())["index"]["shards"] == 3
    found = snoop("search", "--collection", root, "--item", "0", "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)) == 3
    bad = snoop("index", tmp_path / "photos", "--collection", root, "--index", "ivf")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def _trained_session(col, rows, name):
    full = rows.astype(np.float32)
    near = np.argsort(-(full @ full[7]))
    s = col.session("ann", name, seed=1)
    s.label(near[:15], +1)
    s.label(near[-40:], -1)
    s.train()
    return s


def test_codes_stand_in_for_the_vectors_in_whole_corpus_passes(tmp_path, rows, monkeypatch):
    """Above CODES_ABOVE items, `uncertain` and `apply` read the codes, not every vector, and
    give what the exact passes give."""
    from snoop_nb.learn import session as session_mod

    col = make_collection(tmp_path / "c", rows, kind="pca-sq8", project_dim=16, min_fit=500)
    s = _trained_session(col, rows, "near-seven")
    exact_uncertain = s.suggest(20, "uncertain")["id"].tolist()
    exact_applied = s.apply(0.5)
    exact_set = set(s.applied()["item_id"])
    monkeypatch.setattr(session_mod, "CODES_ABOVE", 1000)
    calls = []
    real = CompressedIndex.approximate_scores
    monkeypatch.setattr(
        CompressedIndex,
        "approximate_scores",
        lambda self, *a, **kw: calls.append(kw) or real(self, *a, **kw),
    )
    assert s._codes() is col.index
    by_codes = s.suggest(20, "uncertain")["id"].tolist()
    assert calls and calls[0].get("sample") == session_mod.UNCERTAIN_POOL
    assert len(set(by_codes) & set(exact_uncertain)) >= 18
    assert s.apply(0.5) == exact_applied
    assert set(s.applied()["item_id"]) == exact_set
    # a pool smaller than the corpus: still the nearest of what it drew, re-scored exactly
    monkeypatch.setattr(session_mod, "UNCERTAIN_POOL", 1500)
    pooled = s.suggest(20, "uncertain")["id"].to_numpy()
    w, b = s._direction()
    exact = np.abs(rows[pooled].astype(np.float32) @ w + b)
    assert np.all(np.diff(exact) >= -1e-6)  # in order of exact distance to the boundary
    col.close()


def test_the_error_bound_covers_the_codes_error(rows):
    idx = compressed(rows, project_dim=16)
    idx.add(np.arange(len(rows)), rows)
    w = rows[7].astype(np.float32) * 5 - rows.astype(np.float32).mean(0)
    _, approx = idx.approximate_scores(w)
    exact = rows.astype(np.float32) @ w
    assert np.abs(approx - exact).max() <= idx.error_bound(w)
    ids, part = idx.approximate_scores(w, sample=500, seed=3)
    assert len(ids) == 500 and (np.diff(ids) > 0).all()
    np.testing.assert_allclose(part, approx[ids], rtol=1e-5, atol=1e-5)


def test_a_large_corpus_draws_pseudo_negatives_from_one_reservoir(tmp_path, rows, monkeypatch):
    """Above RESERVOIR_ABOVE items, pseudo-negatives come from a fixed random reservoir whose
    vectors are read once: the same vectors as the store's, a new draw each round."""
    from snoop_nb.learn import session as session_mod

    monkeypatch.setattr(session_mod, "RESERVOIR_ABOVE", 1000)
    monkeypatch.setattr(session_mod, "RESERVOIR", 800)
    col = make_collection(tmp_path / "c", rows, kind="pca-sq8", project_dim=16, min_fit=500)
    s = col.session("ann", "res")
    s.label([1, 2, 3], +1)
    first = s._pseudo_negative_ids(*s._labelled())
    size, pool, vecs = col._pseudo_reservoir
    assert size == len(col) and len(pool) == 800 and np.isin(first, pool).all()
    assert not np.isin([1, 2, 3], first).any()  # never a labelled item
    np.testing.assert_array_equal(vecs, rows[pool])
    np.testing.assert_array_equal(s._pseudo_vectors(first), rows[first].astype(np.float32))
    s.label([4], -1)
    again = s._pseudo_negative_ids(*s._labelled())
    assert np.isin(again, pool).all() and set(again) != set(first)  # another draw, same pool
    assert s.train().n_pos == 3
    # ids outside the reservoir are read from the store
    np.testing.assert_array_equal(s._pseudo_vectors(np.array([0])), rows[[0]].astype(np.float32))
    col.close()


def test_the_random_access_map_serves_the_rows_of_the_file(tmp_path, rows):
    col = make_collection(tmp_path / "c", rows[:3000], kind="hnsw")
    store = col._store
    ids = np.array([2999, 5, 1234])
    np.testing.assert_array_equal(store.rows(ids), rows[ids])
    assert store._random is not None and len(store._random[1]) == 3000
    col.add_vectors([f"mem://{i}" for i in range(3000, 3100)], rows[3000:3100])
    np.testing.assert_array_equal(store.rows(np.array([3050])), rows[[3050]])  # past the map
    assert len(store._random[1]) == 3100
    np.testing.assert_array_equal(col.vectors_of([3099]), rows[[3099]].astype(np.float32))
    col.close()
