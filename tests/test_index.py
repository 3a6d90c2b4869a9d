"""The vector indexes: HNSW agrees with exact search, and both keep the Index contract."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from snoop_nb.index import ExactIndex, HNSWIndex, ProjectedIndex
from snoop_nb.index.base import atomic_write
from snoop_nb.index.sharded import ShardedIndex

DIM = 64


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clustered(n: int, *, dim: int = DIM, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres, each spread in its own 8-d subspace."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, dim)))
    bases = rng.standard_normal((clusters, 8, dim)) / np.sqrt(dim)
    which = rng.integers(0, clusters, n)
    spread = np.einsum("nr,nrd->nd", rng.standard_normal((n, 8)), bases[which])
    noise = 0.05 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return unit(centres[which] + 0.7 * spread + noise)


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    vecs = clustered(4200, seed=1)
    return vecs[:4000], vecs[4000:]  # the queries are held out


def projected(dim: int = DIM, **kw) -> ProjectedIndex:
    """A ProjectedIndex that fits its projection early, so the tests go through the graph."""
    return ProjectedIndex(dim, project_dim=dim // 2, min_fit=200, threads=2, **kw)


@pytest.fixture(params=["exact", "hnsw", "projected", "sharded"])
def make_index(request):
    def make(dim: int = DIM, **kw):
        if request.param == "exact":
            return ExactIndex(dim)
        if request.param == "projected":
            return projected(dim, **kw)
        if request.param == "sharded":  # three graphs behind one index keep the same contract
            return ShardedIndex([HNSWIndex(dim, threads=1, **kw) for _ in range(3)])
        return HNSWIndex(dim, threads=2, **kw)

    return make


@pytest.mark.parametrize("kind", ["hnsw", "projected"])
def test_hnsw_recall_against_exact_on_clustered_vectors(data, kind):
    base, queries = data
    ids = np.arange(len(base)) * 3 + 7  # ids need not be row numbers
    exact = ExactIndex(DIM)
    exact.add(ids, base)
    hnsw = HNSWIndex(DIM, threads=2) if kind == "hnsw" else projected()
    for start in range(0, len(base), 1000):  # the projected one fits on its first 1000
        hnsw.add(ids[start : start + 1000], base[start : start + 1000])
    truth, _ = exact.search(queries, 10)
    found, _ = hnsw.search(queries, 10)
    assert recall_at_10(found, truth) >= 0.95
    assert set(found.ravel()) <= set(ids)


def test_scores_are_cosine_similarities(make_index, data):
    base, queries = data
    idx = make_index()
    raw = base[:500] * np.random.default_rng(2).uniform(0.5, 3, (500, 1))  # not unit length
    idx.add(np.arange(500), raw)
    q = queries[:20] * 4.0
    ids, scores = idx.search(q, 10)
    expected = unit(q) @ unit(raw).T
    np.testing.assert_allclose(scores, np.take_along_axis(expected, ids, axis=1), atol=2e-3)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    exact_top = np.sort(expected, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(scores[:, 0], exact_top[:, 0], atol=2e-3)


def test_removed_ids_are_never_returned(make_index, data):
    base, queries = data
    idx = make_index()
    idx.add(np.arange(1000), base[:1000])
    first, _ = idx.search(queries[:50], 10)
    gone = np.unique(first[:, :5])  # the best answers, so a search would want them
    idx.remove(gone)
    idx.remove([999_999])  # unknown ids are ignored
    again, _ = idx.search(queries[:50], 10)
    assert not np.isin(again, gone).any()
    assert (again >= 0).all()
    assert len(idx) == 1000 - len(gone)
    assert gone[0] not in idx
    np.testing.assert_array_equal(idx.ids(), np.setdiff1d(np.arange(1000), gone))


def test_search_returns_the_survivors_when_most_items_are_removed(make_index, data):
    base, queries = data
    idx = make_index()
    idx.add(np.arange(400), base[:400])
    idx.remove(np.arange(388))
    ids, scores = idx.search(queries[:5], 10)
    assert set(ids.ravel()) <= set(range(388, 400))
    assert all(len(set(row)) == 10 for row in ids)
    assert (ids >= 0).all() and np.isfinite(scores).all()


def test_readding_a_removed_id_uses_its_new_vector(make_index, data):
    base, _ = data
    idx = make_index()
    idx.add(np.arange(1000), base[:1000])
    idx.remove([17])
    new = base[3000]
    idx.add([17], [new])
    assert 17 in idx and len(idx) == 1000
    ids, scores = idx.search(new, 1)
    assert ids[0, 0] == 17
    assert scores[0, 0] == pytest.approx(1.0, abs=2e-3)
    ids, _ = idx.search(base[17], 10)  # the old vector no longer finds it first
    assert ids[0, 0] != 17


def test_replacing_a_live_id_moves_it(make_index, data):
    base, _ = data
    idx = make_index()
    idx.add(np.arange(1000), base[:1000])
    idx.add([5], [base[3001]])
    assert len(idx) == 1000
    assert idx.search(base[3001], 1)[0][0, 0] == 5


def test_k_beyond_the_live_count_pads_with_minus_one_and_minus_inf(make_index, data):
    base, queries = data
    idx = make_index()
    ids, scores = idx.search(queries[:2], 4)  # empty
    assert (ids == -1).all() and np.isneginf(scores).all()
    idx.add([10, 11, 12], base[:3])
    idx.remove([11])
    ids, scores = idx.search(queries[:2], 5)
    assert ids.shape == scores.shape == (2, 5)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert sorted(ids[0, :2].tolist()) == [10, 12]
    assert (ids[:, 2:] == -1).all() and np.isneginf(scores[:, 2:]).all()
    assert np.isfinite(scores[:, :2]).all()


@pytest.mark.parametrize("cls", [HNSWIndex, ProjectedIndex])
def test_save_then_load_gives_identical_results_and_keeps_deletions(tmp_path: Path, data, cls):
    base, queries = data
    idx = HNSWIndex(DIM, threads=2, ef=48) if cls is HNSWIndex else projected(ef=48)
    idx.add(np.arange(2000), base[:2000])
    idx.remove(np.arange(0, 2000, 7))
    before = idx.search(queries, 10)
    path = tmp_path / "index.hnsw"
    idx.save(path)
    extra = [] if cls is HNSWIndex else ["index.hnsw.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.hnsw", "index.hnsw.json", *extra]

    back = cls.load(path, threads=2)
    assert back.ef == 48 and back.dim == DIM
    after = back.search(queries, 10)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(back.ids(), idx.ids())
    assert not np.isin(after[0], np.arange(0, 2000, 7)).any()
    back.add([0], [base[3002]])  # a deleted id comes back after the reload too
    assert back.search(base[3002], 1)[0][0, 0] == 0


def test_adding_beyond_the_initial_capacity_grows(data):
    base, _ = data
    idx = HNSWIndex(DIM, threads=2, capacity=10)
    for start in range(0, 1000, 300):
        stop = min(start + 300, 1000)
        idx.add(np.arange(start, stop), base[start:stop])
    assert len(idx) == 1000
    ids, _ = idx.search(base[:1000:50], 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(0, 1000, 50))


def test_duplicate_ids_in_one_add_keep_the_last_vector(make_index, data):
    base, _ = data
    idx = make_index()
    ids = np.repeat(np.arange(200), 2)  # side by side, so two threads take a pair together
    vecs = np.empty((400, DIM), np.float32)
    vecs[0::2], vecs[1::2] = base[:200], base[200:400]
    idx.add(ids, vecs)
    assert len(idx) == 200
    found, scores = idx.search(base[200:400], 1)
    np.testing.assert_array_equal(found[:, 0], np.arange(200))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=2e-3)


def test_dimension_mismatch_raises_value_error(make_index):
    idx = make_index(dim=8)
    with pytest.raises(ValueError):
        idx.add([1, 2], np.ones((2, 5)))
    with pytest.raises(ValueError):
        idx.add([1, 2], np.ones((1, 16)))  # as many numbers, wrong shape
    idx.add([1], np.ones((1, 8)))
    with pytest.raises(ValueError):
        idx.search(np.ones((3, 7)), 1)
    with pytest.raises(ValueError):
        idx.add([-1], np.ones((1, 8)))


def test_exact_index_from_arrays_uses_the_rows_given(data):
    base, queries = data
    vecs = base[:500].astype(np.float16)
    idx = ExactIndex.from_arrays(np.arange(500) + 100, vecs)
    ids, _ = idx.search(queries[:3], 5)
    expected = np.argsort(-(queries[:3] @ vecs.astype(np.float32).T), axis=1)[:, :5] + 100
    np.testing.assert_array_equal(ids, expected)
    with pytest.raises(ValueError):
        ExactIndex.from_arrays([1, 1], vecs[:2])


def test_atomic_write_leaves_the_old_file_when_the_writer_raises(tmp_path: Path):
    path = tmp_path / "index.hnsw"
    path.write_bytes(b"old contents")

    def failing(tmp: str) -> None:
        Path(tmp).write_bytes(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["index.hnsw"]  # no temporary file left

    atomic_write(path, lambda tmp: Path(tmp).write_bytes(b"new"))
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["index.hnsw"]


def test_projected_index_searches_exactly_until_it_can_fit(data):
    base, queries = data
    idx = ProjectedIndex(DIM, project_dim=8, min_fit=300)
    idx.add(np.arange(299), base[:299])
    assert idx.projection_ is None
    truth = ExactIndex.from_arrays(np.arange(299), base[:299].astype(np.float16))
    np.testing.assert_array_equal(idx.search(queries, 10)[0], truth.search(queries, 10)[0])
    idx.add([299], base[299:300])
    assert idx.projection_ is not None and idx.projection_.shape == (DIM, 8)


def test_projected_index_rebuilds_a_graph_left_behind_by_a_crash(tmp_path: Path, data):
    base, queries = data
    path = tmp_path / "index.hnsw"
    idx = projected()
    idx.add(np.arange(1000), base[:1000])
    idx.save(path)
    graph = path.read_bytes(), path.with_name("index.hnsw.json").read_bytes()
    idx.add(np.arange(1000, 2000), base[1000:2000])
    idx.remove(np.arange(0, 2000, 5))
    idx.save(path)
    path.write_bytes(graph[0])  # as if killed after the vectors were written, before the graph
    path.with_name("index.hnsw.json").write_bytes(graph[1])
    back = ProjectedIndex.load(path)
    np.testing.assert_array_equal(back.ids(), idx.ids())
    found, _ = back.search(queries, 10)
    assert not np.isin(found, np.arange(0, 2000, 5)).any()
    truth, _ = ExactIndex.from_arrays(idx.ids(), base[idx.ids()]).search(queries, 10)
    assert recall_at_10(found, truth) >= 0.95


def test_exact_index_forgets_its_float32_copy_when_vectors_change(data):
    base, _ = data
    idx = ExactIndex(DIM)
    idx.add(np.arange(100), base[:100])
    assert idx.search(base[5], 1)[0][0, 0] == 5  # the float32 copy is made here
    idx.add([5], [base[200]])
    assert idx.search(base[200], 1)[0][0, 0] == 5
    idx.remove([5])
    assert idx.search(base[200], 1)[0][0, 0] != 5
    small = ExactIndex(DIM, cache_bytes=0)  # never copies: same answers
    small.add(idx.ids(), base[idx.ids()])
    np.testing.assert_array_equal(small.search(base[:20], 5)[0], idx.search(base[:20], 5)[0])


# --- ProjectedIndex over an external row store (as a collection uses it) -------------------
def external(store, **kw) -> ProjectedIndex:
    """A ProjectedIndex that reads its vectors from ``store`` (row i = id i) and fits early."""
    return ProjectedIndex(DIM, project_dim=DIM // 2, min_fit=200, threads=2, vectors=store, **kw)


@pytest.fixture(scope="module")
def store(data) -> np.ndarray:
    base, _ = data
    return base.astype(np.float16)  # unit rows, as a collection's vectors.f16


@pytest.mark.parametrize("provider", ["array", "callable"])
def test_projected_index_on_an_external_store_keeps_no_copy(tmp_path: Path, data, store, provider):
    _, queries = data
    source = store if provider == "array" else (lambda rows: store[rows])
    idx = external(source, ef=48)
    for start in range(0, 3000, 1000):
        idx.add(np.arange(start, start + 1000), store[start : start + 1000])
    assert idx.external and idx._vecs is None
    idx.remove(np.arange(0, 3000, 9))
    truth, _ = ExactIndex.from_arrays(idx.ids(), store[idx.ids()]).search(queries, 10)
    found, scores = idx.search(queries, 10)
    assert recall_at_10(found, truth) >= 0.95
    assert not np.isin(found, np.arange(0, 3000, 9)).any()
    # the scores are the store's rows re-scored exactly
    expected = np.einsum("qkd,qd->qk", store[found].astype(np.float32), unit(queries))
    np.testing.assert_allclose(scores, expected, atol=1e-5)

    path = tmp_path / "index.hnsw"
    idx.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "index.hnsw",
        "index.hnsw.json",
        "index.hnsw.npz",
    ]
    with np.load(tmp_path / "index.hnsw.npz") as z:
        assert "vectors" not in z.files and z["projection"].shape == (DIM, DIM // 2)
    with pytest.raises(ValueError, match="vectors="):
        ProjectedIndex.load(path)
    back = ProjectedIndex.load(path, vectors=source, threads=2)
    assert back.external and not back.repaired_on_load and back.ef == 48
    np.testing.assert_array_equal(back.ids(), idx.ids())
    after = back.search(queries, 10)
    np.testing.assert_array_equal(after[0], found)
    np.testing.assert_array_equal(after[1], scores)


def test_projected_index_with_its_own_copy_refuses_an_external_store_on_load(tmp_path, data):
    base, _ = data
    idx = projected()
    idx.add(np.arange(300), base[:300])
    idx.save(tmp_path / "index.hnsw")
    with pytest.raises(ValueError, match="own vectors"):
        ProjectedIndex.load(tmp_path / "index.hnsw", vectors=base.astype(np.float16))


def test_projected_index_fits_again_as_it_grows(store):
    idx = external(store)
    idx.add(np.arange(200), store[:200])
    first = idx.projection_
    assert idx.fit_size_ == 200
    idx.add(np.arange(200, 799), store[200:799])
    assert idx.projection_ is first  # below 4x the fitted vectors: the same projection
    idx.add([799], store[799:800])
    assert idx.projection_ is not first and idx.fit_size_ == 800
    np.testing.assert_array_equal(idx.ids(), np.arange(800))
    assert idx.search(store[123], 1)[0][0, 0] == 123


def test_projected_index_brings_a_graph_that_lags_its_keys_up_to_date(tmp_path, data, store):
    _, queries = data
    path = tmp_path / "index.hnsw"
    idx = external(store)
    idx.add(np.arange(1000), store[:1000])
    idx.save(path)
    graph = path.read_bytes(), path.with_name("index.hnsw.json").read_bytes()
    idx.add(np.arange(1000, 2000), store[1000:2000])
    idx.remove(np.arange(0, 2000, 5))
    idx.save(path)
    # as if killed after the keys were written, before the graph: same projection, older graph
    path.write_bytes(graph[0])
    path.with_name("index.hnsw.json").write_bytes(graph[1])
    back = ProjectedIndex.load(path, vectors=store)
    assert back.repaired_on_load
    # the old graph's 1000 (200 of them now removed) and the 800 new live ones: not rebuilt
    assert back._graph._index.get_current_count() == 1800
    np.testing.assert_array_equal(back.ids(), idx.ids())
    found, _ = back.search(queries, 10)
    assert not np.isin(found, np.arange(0, 2000, 5)).any()
    truth, _ = ExactIndex.from_arrays(idx.ids(), store[idx.ids()]).search(queries, 10)
    assert recall_at_10(found, truth) >= 0.95
    back.save(path)
    assert not ProjectedIndex.load(path, vectors=store).repaired_on_load


def test_projected_index_never_pairs_a_graph_with_another_projection(
    tmp_path, data, store, monkeypatch
):
    _, queries = data
    path = tmp_path / "index.hnsw"
    idx = external(store)
    idx.add(np.arange(250), store[:250])
    idx.save(path)
    stale = path.read_bytes(), path.with_name("index.hnsw.json").read_bytes()
    idx.add(np.arange(250, 1500), store[250:1500])  # 6x: a new projection and a new graph
    new_projection = idx.projection_

    class Killed(BaseException):
        pass

    def killed(*args, **kwargs):
        raise Killed

    # killed after the new projection was written, before its graph: the old graph is gone
    with monkeypatch.context() as m:
        m.setattr(HNSWIndex, "save", killed)
        with pytest.raises(Killed):
            idx.save(path)
    assert not path.exists()
    back = ProjectedIndex.load(path, vectors=store)
    assert back.repaired_on_load
    np.testing.assert_array_equal(back.projection_, new_projection)
    np.testing.assert_array_equal(back.ids(), np.arange(1500))
    truth, _ = ExactIndex.from_arrays(np.arange(1500), store[:1500]).search(queries, 10)
    assert recall_at_10(back.search(queries, 10)[0], truth) >= 0.95
    # an old graph put back beside the new projection is not used either
    path.write_bytes(stale[0])
    path.with_name("index.hnsw.json").write_bytes(stale[1])
    again = ProjectedIndex.load(path, vectors=store)
    assert again.repaired_on_load and len(again._graph) == 1500
    assert recall_at_10(again.search(queries, 10)[0], truth) >= 0.95


@pytest.mark.parametrize("change", ["same projection", "new projection"])
def test_projected_index_killed_at_any_write_of_a_save_loads_consistent(
    tmp_path, data, store, monkeypatch, change
):
    """Kill a save before each of its file operations in turn; every load then pairs the graph
    only with the projection it was built with, and holds the old or the new ids."""
    _, queries = data

    class Killed(BaseException):
        pass

    real = {"replace": os.replace, "unlink": os.unlink}
    for kill_at in range(10):
        folder = tmp_path / str(kill_at)
        folder.mkdir()
        path = folder / "index.hnsw"
        idx = external(store)
        idx.add(np.arange(300), store[:300])
        idx.save(path)
        old_ids = idx.ids()
        if change == "same projection":
            idx.add(np.arange(300, 500), store[300:500])
            idx.remove(np.arange(0, 500, 7))
        else:  # 4x the fitted vectors: a new projection and a new graph
            idx.add(np.arange(300, 1200), store[300:1200])
        ops = []

        def op(name, kill_at=kill_at, ops=ops):
            def call(*args, **kwargs):
                ops.append(name)
                if len(ops) == kill_at + 1:
                    raise Killed
                return real[name](*args, **kwargs)

            return call

        with monkeypatch.context() as m:
            m.setattr(os, "replace", op("replace"))
            m.setattr(os, "unlink", op("unlink"))
            try:
                idx.save(path)
                finished = True
            except Killed:
                finished = False
        back = ProjectedIndex.load(path, vectors=store)
        live = back.ids()
        assert live.tolist() in (old_ids.tolist(), idx.ids().tolist())
        graph = back._graph.get_vectors(live)
        expected = unit(store[live].astype(np.float32) @ back.projection_)
        np.testing.assert_allclose(graph, expected, atol=1e-4)
        truth, _ = ExactIndex.from_arrays(live, store[live]).search(queries, 10)
        assert recall_at_10(back.search(queries, 10)[0], truth) >= 0.95
        if finished:
            assert not back.repaired_on_load and live.tolist() == idx.ids().tolist()
            break
    else:
        pytest.fail("the save never finished")
    assert kill_at == (3 if change == "same projection" else 5)


# --- many threads, per-call breadth, scores held to [-1, 1] ----------------------------------
@pytest.mark.parametrize("kind", ["hnsw", "projected"])
def test_concurrent_searches_with_different_ef_each_get_their_own_breadth(data, kind):
    base, queries = data
    if kind == "hnsw":
        idx = HNSWIndex(DIM, M=4, ef_construction=16, ef=50, threads=1)
    else:
        idx = projected(M=4, ef_construction=16, ef=50)
    idx.add(np.arange(len(base)), base)
    efs = (10, 40, 400)
    reference = {ef: idx.search(queries, 10, ef=ef) for ef in efs}
    # the breadths really give different answers (else this test could not fail)
    assert not np.array_equal(reference[10][0], reference[400][0])
    wrong: list[int] = []
    start = threading.Barrier(len(efs))

    def search(ef: int) -> None:
        start.wait()
        for _ in range(40):
            ids, _ = idx.search(queries, 10, ef=ef)
            if not np.array_equal(ids, reference[ef][0]):
                wrong.append(ef)

    threads = [threading.Thread(target=search, args=(ef,)) for ef in efs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert idx.ef == 50  # the default breadth is untouched
    assert np.array_equal(idx.search(queries, 10)[0], idx.search(queries, 10, ef=50)[0])


def test_searches_while_another_thread_adds_and_removes_stay_consistent(data):
    base, queries = data
    idx = HNSWIndex(DIM, threads=1, capacity=16)  # adding resizes the graph, under the lock
    idx.add(np.arange(500), base[:500])
    errors: list[BaseException] = []
    done = threading.Event()

    def search() -> None:
        try:
            while not done.is_set():
                ids, _ = idx.search(queries[:20], 10, ef=64)
                assert (ids >= 0).all() and (ids < len(base)).all()
        except BaseException as e:
            errors.append(e)

    readers = [threading.Thread(target=search) for _ in range(2)]
    for t in readers:
        t.start()
    for a in range(500, 4000, 500):
        idx.add(np.arange(a, a + 500), base[a : a + 500])
        idx.remove(np.arange(a - 500, a - 400))
    done.set()
    for t in readers:
        t.join()
    assert not errors, errors
    assert len(idx) == 4000 - 7 * 100


def test_scores_of_a_vector_with_itself_are_at_most_one(make_index):
    # float16 rows are unit length only to about 1e-3: the raw dot product of a row with
    # itself exceeds 1 for about half of them
    rows = unit(np.random.default_rng(3).standard_normal((300, DIM))).astype(np.float16)
    assert (np.linalg.norm(rows.astype(np.float64), axis=1) > 1).mean() > 0.2
    idx = make_index()
    idx.add(np.arange(300), rows.astype(np.float32))
    ids, scores = idx.search(rows.astype(np.float32), 3)
    assert (ids[:, 0] == np.arange(300)).all()
    assert scores.max() <= 1.0 and scores[:, 0].min() > 0.999
    ids, scores = idx.search(rows[:2].astype(np.float32), 400)  # padded: -inf kept
    assert np.isneginf(scores[:, 300:]).all() and scores[:, :300].max() <= 1.0
