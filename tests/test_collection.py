"""A collection on disk: incremental adds, bad files, consistency, embedder checks, search."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mediafiles import BAD_IMAGE_REASONS, HIDDEN_IMAGES, make_bad_images, make_good_images

from snoop_nb import CollectionError, EmbedderMismatchError, UsageError, open_collection


@pytest.fixture
def col(tmp_path, tiny_embedder):
    with open_collection(tmp_path / "col", create=True, embedder=tiny_embedder) as c:
        yield c


def live_uris(col) -> list[str]:
    return col.items()["uri"].tolist()


def test_new_collection_writes_a_self_describing_manifest(col, tiny_embedder):
    manifest = json.loads((col.root / "manifest.json").read_text())
    assert manifest["embedder"]["id"] == tiny_embedder.id
    assert manifest["dim"] == tiny_embedder.dim == 32
    assert manifest["metric"] == "cosine"
    assert (col.root / "catalog.sqlite").exists()
    mode = sqlite3.connect(col.root / "catalog.sqlite").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"


def test_add_indexes_every_good_file_and_records_bad_ones(col, tmp_path):
    good = make_good_images(tmp_path / "in" / "good")
    bad = make_bad_images(tmp_path / "in" / "bad")
    report = col.add([tmp_path / "in"], batch_size=4, progress=False)
    expected = {os.fsencode(p) for n, p in good.items() if n not in HIDDEN_IMAGES}
    stored = {bytes(r[0]) for r in col._db.execute("SELECT path FROM items WHERE status = 'ok'")}
    assert stored == expected
    assert len(col) == len(expected) == report.added
    reasons = {e["uri"]: e["reason"] for e in col.errors()}
    for name, reason in BAD_IMAGE_REASONS.items():
        assert reasons[str(bad[name])].startswith(reason), name
    assert len(reasons) == len(BAD_IMAGE_REASONS)
    # the vectors are unit rows for good items, and the index holds exactly the good items
    vecs = col.vectors_of(col.ok_ids())
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-2)
    assert col.index.ids().tolist() == col.ok_ids().tolist()


def test_non_utf8_file_name_is_kept_exactly(col, tmp_path):
    good = make_good_images(tmp_path / "in")
    col.add([good["non_utf8_name"], good["jpeg"]], progress=False)
    rows = dict(col._db.execute("SELECT uri, path FROM items").fetchall())
    (odd,) = [u for u in rows if u.endswith("caf\\xe9.jpg")]
    assert bytes(rows[odd]) == os.fsencode(good["non_utf8_name"])
    odd_id = int(col.items().set_index("uri").loc[odd, "id"])
    other_id = int(col.items().set_index("uri").loc[str(good["jpeg"]), "id"])
    # searching by the other item finds it, and reports its readable name; its path is exact
    for exact in (True, False):
        hit = col.search(item=other_id, k=1, exact=exact)
        assert hit["id"].tolist() == [odd_id] and hit["uri"].tolist() == [odd]
        assert col.search(item=odd_id, k=1, exact=exact)["id"].tolist() == [other_id]
    assert col.paths([odd_id]) == {odd_id: good["non_utf8_name"]}


def test_second_add_skips_unchanged_files_and_replaces_changed_ones(col, photo_set):
    folder = photo_set["coffee"][0].parent.parent
    first = col.add([folder], progress=False)
    assert first.added == 30 and first.skipped == 0
    again = col.add([folder], progress=False)
    assert (again.added, again.skipped) == (0, 30)
    changed = photo_set["coffee"][0]
    old_id = int(col.items().set_index("uri").loc[str(changed), "id"])
    shutil.copy(photo_set["rocket"][0], changed)
    os.utime(changed, ns=(1, 1))
    third = col.add([folder], progress=False)
    assert (third.added, third.replaced, third.skipped) == (1, 1, 29)
    assert len(col) == 30
    assert col.item(old_id)["status"] == "deleted"
    new_id = int(col.items().set_index("uri").loc[str(changed), "id"])
    assert old_id not in col.index and new_id in col.index
    # the new vector is the rocket's, not the coffee's
    rocket_id = int(col.items().set_index("uri").loc[str(photo_set["rocket"][0]), "id"])
    assert np.allclose(col.vectors_of([new_id]), col.vectors_of([rocket_id]), atol=2e-3)


def test_remove_then_add_again_brings_the_file_back(col, photo_set):
    col.add([photo_set["chelsea"][0].parent], progress=False)
    ids = col.ok_ids()
    assert col.remove(ids[:2]) == 2
    assert len(col) == 3 and not set(ids[:2]) & set(col.index.ids())
    report = col.add([photo_set["chelsea"][0].parent], progress=False)
    assert (report.added, report.skipped) == (2, 3)
    assert len(col) == 5 and len(set(live_uris(col))) == 5
    assert col.index.ids().tolist() == col.ok_ids().tolist()


def test_reopened_collection_loads_the_saved_index(tmp_path, tiny_embedder, photo_set):
    with open_collection(tmp_path / "c", create=True, embedder=tiny_embedder) as col:
        col.add([tmp_path / "photos"], progress=False)
        before = col.search(item=3, k=5, exact=False)
    assert (tmp_path / "c" / "index.hnsw").exists()
    with open_collection(tmp_path / "c", embedder=tiny_embedder) as col:
        after = col.search(item=3, k=5, exact=False)
    assert before["id"].tolist() == after["id"].tolist()


def test_uncommitted_vector_rows_are_cut_and_a_stale_index_is_repaired(
    tmp_path, tiny_embedder, photo_set
):
    root = tmp_path / "c"
    with open_collection(root, create=True, embedder=tiny_embedder) as col:
        col.add([photo_set["rocket"][0].parent], progress=False)
        rows = col.rows
        index_copy = (root / "index.hnsw").read_bytes(), (root / "index.hnsw.json").read_bytes()
        col.add([photo_set["camera"][0].parent], progress=False)
    # a run killed after writing vectors but before committing them, and before saving the index
    with open(root / "vectors.f16", "ab") as f:
        f.write(b"\x01" * 32 * 2 * 3)
    (root / "index.hnsw").write_bytes(index_copy[0])
    (root / "index.hnsw.json").write_bytes(index_copy[1])
    with open_collection(root, embedder=tiny_embedder) as col:
        assert col.rows == rows + 5
        assert len(col.index) == 10  # brought up to date from the vectors
        report = col.add([tmp_path / "photos"], progress=False)
        assert report.added == 20 and report.skipped == 10
        assert (root / "vectors.f16").stat().st_size == col.rows * 32 * 2
        assert col.index.ids().tolist() == col.ok_ids().tolist()


def test_unreadable_index_file_is_rebuilt_from_the_vectors(tmp_path, tiny_embedder, photo_set):
    root = tmp_path / "c"
    with open_collection(root, create=True, embedder=tiny_embedder) as col:
        col.add([tmp_path / "photos"], progress=False)
        expected = col.search(item=0, k=5, exact=True)["id"].tolist()
    (root / "index.hnsw").write_bytes(b"garbage")
    with (
        open_collection(root, embedder=tiny_embedder) as col,
        pytest.warns(UserWarning, match="rebuilding"),
    ):
        assert col.search(item=0, k=5, exact=False)["id"].tolist() == expected


def test_opening_with_another_embedder_is_a_clear_error(col, tiny_clip, tmp_path):
    with pytest.raises(EmbedderMismatchError, match="built with model"):
        open_collection(col.root, model="ViT-S-32")
    other = tmp_path / "other.pt"
    import torch

    state = torch.load(tiny_clip["pretrained"])
    state["logit_scale"] = state["logit_scale"] + 1
    torch.save(state, other)
    with pytest.raises(EmbedderMismatchError, match="cannot be mixed"):
        open_collection(col.root, model=tiny_clip["model"], pretrained=str(other))
    same = tmp_path / "copy-of-the-same-weights.pt"
    shutil.copy(tiny_clip["pretrained"], same)
    with open_collection(col.root, model=tiny_clip["model"], pretrained=str(same)) as again:
        assert again.embedder_id == col.embedder_id


def test_missing_or_foreign_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CollectionError, match="no collection"):
        open_collection(tmp_path / "nowhere")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "holiday.txt").write_text("x")
    with pytest.raises(CollectionError, match="not a snoop-nb collection"):
        open_collection(tmp_path / "stuff")
    with pytest.raises(CollectionError, match="not empty"):
        open_collection(tmp_path / "stuff", create=True)


def test_second_writer_gets_a_clear_error_not_a_corrupt_collection(col, photo_set, tiny_clip):
    held = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, os, sys, time
                fd = os.open({str(col.root / ".writer.lock")!r}, os.O_RDWR | os.O_CREAT)
                fcntl.flock(fd, fcntl.LOCK_EX)
                print("locked", flush=True)
                time.sleep(30)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert held.stdout.readline().strip() == "locked"
        with pytest.raises(CollectionError, match="another process"):
            col.add([photo_set["coffee"][0].parent], progress=False)
    finally:
        held.kill()
        held.wait()
    assert col.add([photo_set["coffee"][0].parent], progress=False).added == 5


def test_hnsw_search_matches_exact_search(col, photo_set):
    col.add([photo_set["coffee"][0].parent.parent], progress=False)
    uris = col.items().set_index("id")["uri"]
    for item in col.ok_ids()[:10]:
        # expand=False: the index's own nearest neighbours (expansion re-ranks them)
        approx = col.search(item=int(item), k=8, exact=False, expand=False)
        exact = col.search(item=int(item), k=8, exact=True, expand=False)
        # same scores rank for rank (ids may swap only where scores tie to float16 precision)
        assert np.allclose(approx["score"], exact["score"], atol=2e-3)
        assert len(set(approx["id"]) & set(exact["id"])) >= 7
        assert int(item) not in exact["id"].tolist()
        # scores are cosine similarities of the stored vectors
        q = col.vectors_of([int(item)])[0]
        assert np.allclose(exact["score"], col.vectors_of(exact["id"]) @ q, atol=1e-3)
        assert list(exact["rank"]) == list(range(1, 9))
        assert exact["score"].is_monotonic_decreasing
    df = col.search(item=0, k=3)
    assert list(df.columns[:4]) == ["rank", "id", "uri", "score"]
    assert set(df["uri"]) <= set(uris)


def test_search_by_image_path_pil_and_array_agree(col, photo_set):
    from PIL import Image

    col.add([photo_set["rocket"][0].parent], progress=False)
    path = photo_set["rocket"][2]
    by_path = col.search(image=path, k=3)
    by_pil = col.search(image=Image.open(path), k=3)
    by_array = col.search(image=np.asarray(Image.open(path).convert("RGB")), k=3)
    assert by_path["id"].tolist() == by_pil["id"].tolist() == by_array["id"].tolist()
    assert by_path["uri"].iloc[0] == str(path)
    assert by_path["score"].iloc[0] > 0.999


def test_search_rejects_bad_queries(col, photo_set):
    col.add([photo_set["rocket"][0].parent], progress=False)
    with pytest.raises(UsageError, match="exactly one"):
        col.search(k=3)
    with pytest.raises(UsageError, match="exactly one"):
        col.search(item=1, text="x")
    with pytest.raises(UsageError, match="no item"):
        col.search(item=999)
    with pytest.raises(UsageError, match="empty"):
        col.search(text="  ")
    with pytest.raises(UsageError, match="values"):
        col.search(vector=[1.0, 2.0])
    col.remove([0])
    with pytest.raises(UsageError, match="no vector"):
        col.search(item=0)


def test_metadata_from_a_callback_becomes_columns(col, photo_set):
    col.add(
        [photo_set["rocket"][0].parent.parent],
        progress=False,
        meta=lambda p: {"category": p.parent.name, "quote": 'it\'s "fine"'},
    )
    items = col.items()
    assert set(items["category"]) == {
        "chelsea",
        "coffee",
        "astronaut",
        "rocket",
        "camera",
        "immunohistochemistry",
    }
    hits = col.search(item=int(items["id"].iloc[0]), k=4)
    assert "category" in hits and hits["quote"].iloc[0] == 'it\'s "fine"'
    col.set_meta([0], category="edited")
    assert col.item(0)["category"] == "edited"


# --- the index kind: hnsw-pca (a graph over a PCA projection, re-scored from vectors.f16) --
#: Fit at 10 items so that 30 photographs go through the graph (the default fits at 1024), on
#: 16 directions and with a narrow search, so that the re-scoring has candidates to choose among.
PCA = {"min_fit": 10, "project_dim": 16, "ef": 12}


class WideEmbedder:
    """Stands in for a 1280-d model where only the manifest matters."""

    id, dim = "wide@0", 1280

    def describe(self) -> dict:
        return {"id": self.id, "name": "wide", "dim": self.dim}


@pytest.fixture
def pca_col(tmp_path, default_embedder, photo_set):
    """30 real photographs embedded by the default model (1280-d), indexed by hnsw-pca."""
    root = tmp_path / "pca"
    with open_collection(root, create=True, embedder=default_embedder, index_params=PCA) as c:
        c.add([tmp_path / "photos"], progress=False, meta=lambda p: {"photo": p.parent.name})
        yield c


def recall_against_exact(col, k: int = 8) -> float:
    """Mean recall@k of the collection's index against exact search, every item a query."""
    q = col.vectors_of(col.ok_ids())
    found, _ = col.index.search(q, k)
    truth, _ = col.exact_index().search(q, k)
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def test_new_collections_get_a_projected_index_above_256_dimensions(tmp_path, tiny_embedder):
    with open_collection(tmp_path / "wide", create=True, embedder=WideEmbedder()) as col:
        assert col.manifest["index"] == {
            "kind": "hnsw-pca",
            "project_dim": 256,
            "min_fit": 1024,
            "M": 16,
            "ef_construction": 200,
            "ef": 128,
        }
        assert col.info()["index"]["kind"] == "hnsw-pca"
    with open_collection(tmp_path / "narrow", create=True, embedder=tiny_embedder) as col:
        assert (
            col.manifest["index"]["kind"] == "hnsw" and "project_dim" not in col.manifest["index"]
        )
    with pytest.raises(UsageError, match="project_dim"):
        open_collection(
            tmp_path / "bad",
            create=True,
            embedder=tiny_embedder,
            index_params={"kind": "hnsw-pca", "project_dim": 32},
        )
    with pytest.raises(UsageError, match="unknown index kind"):
        open_collection(
            tmp_path / "bad", create=True, embedder=tiny_embedder, index_params={"kind": "annoy"}
        )


def test_projected_index_search_matches_exact_search_on_real_embeddings(pca_col):
    from snoop_nb.index import ProjectedIndex

    index = pca_col.index
    assert isinstance(index, ProjectedIndex) and index.external
    assert index.projection_ is not None and index.projection_.shape == (1280, 16)
    assert index.ids().tolist() == pca_col.ok_ids().tolist()
    assert recall_against_exact(pca_col) >= 0.95
    for item in pca_col.ok_ids()[::3]:
        approx = pca_col.search(item=int(item), k=5, exact=False)
        exact = pca_col.search(item=int(item), k=5, exact=True)
        assert np.allclose(approx["score"], exact["score"], atol=2e-3)
    # the vectors are stored once: the index files hold the projection, the ids and the graph
    root = pca_col.root
    with np.load(root / "index.hnsw.npz") as z:
        assert sorted(z.files) == ["meta", "projection", "row_id"]
    info = pca_col.info()["index"]
    assert (info["kind"], info["project_dim"], info["min_fit"], info["ef"]) == (
        "hnsw-pca",
        16,
        10,
        12,
    )
    files = ("index.hnsw", "index.hnsw.json", "index.hnsw.npz")  # every index file counts
    assert info["bytes"] == sum((root / f).stat().st_size for f in files)


def test_projected_collection_forgets_removed_items_and_takes_them_back(pca_col, photo_set):
    gone = pca_col.ok_ids()[:5]
    assert pca_col.remove(gone) == 5
    assert pca_col.index.ids().tolist() == pca_col.ok_ids().tolist()
    found, _ = pca_col.index.search(pca_col.vectors_of(gone), 10)
    assert not np.isin(found, gone).any()
    assert recall_against_exact(pca_col) >= 0.95
    report = pca_col.add([photo_set["chelsea"][0].parent.parent], progress=False)
    assert (report.added, report.skipped) == (5, 25)
    assert len(pca_col) == 30
    assert pca_col.index.ids().tolist() == pca_col.ok_ids().tolist()
    assert recall_against_exact(pca_col) >= 0.95
    with open_collection(pca_col.root) as again:  # the saved index agrees
        assert again.index.ids().tolist() == pca_col.ok_ids().tolist()


def test_reopened_projected_collection_loads_its_graph_without_rebuilding(pca_col, monkeypatch):
    from snoop_nb.index import HNSWIndex, ProjectedIndex

    items = pca_col.ok_ids()[::4]
    before = [pca_col.search(item=int(i), k=5, exact=False)["id"].tolist() for i in items]
    files = {f: (pca_col.root / f).stat().st_mtime_ns for f in ("index.hnsw", "index.hnsw.npz")}

    def rebuilt(*args, **kwargs):
        raise AssertionError("the index was rebuilt")

    monkeypatch.setattr(HNSWIndex, "add", rebuilt)
    monkeypatch.setattr(ProjectedIndex, "refit", rebuilt)
    with open_collection(pca_col.root) as col:
        assert isinstance(col.index, ProjectedIndex) and not col.index.repaired_on_load
        after = [col.search(item=int(i), k=5, exact=False)["id"].tolist() for i in items]
        col.sync_index(save=True)  # nothing changed: nothing written
    assert before == after
    assert files == {f: (pca_col.root / f).stat().st_mtime_ns for f in files}


def test_crash_between_the_projection_and_the_graph_is_recovered(
    tmp_path, default_embedder, photo_set, monkeypatch
):
    from snoop_nb.index import HNSWIndex

    root = tmp_path / "c"
    params = {**PCA, "min_fit": 5}
    with open_collection(root, create=True, embedder=default_embedder, index_params=params) as c:
        c.add([photo_set["rocket"][0].parent], progress=False)  # 5 items: fitted on 5
        first = c.index.projection_

        class Killed(BaseException):
            pass

        def killed(*args, **kwargs):
            raise Killed

        # 30 items are 6x those of the fit: a new projection, whose save is killed between
        # the projection's file and the graph's
        with monkeypatch.context() as m:
            m.setattr(HNSWIndex, "save", killed)
            with pytest.raises(Killed):
                c.add([tmp_path / "photos"], progress=False)
    assert not (root / "index.hnsw").exists()  # the old graph went before the new projection
    with np.load(root / "index.hnsw.npz") as z:
        saved = z["projection"]
    assert not np.array_equal(saved, first)
    with open_collection(root) as col:
        index = col.index
        assert index.repaired_on_load and np.array_equal(index.projection_, saved)
        assert index.ids().tolist() == col.ok_ids().tolist() and len(col) == 30
        assert recall_against_exact(col) >= 0.95
        col.sync_index(save=True)  # the repair is written
        assert (root / "index.hnsw").exists() and not index.repaired_on_load
    with open_collection(root) as col:
        assert not col.index.repaired_on_load
        assert col.index.ids().tolist() == col.ok_ids().tolist()


def test_collections_with_an_hnsw_manifest_keep_their_plain_index(
    tmp_path, default_embedder, photo_set, monkeypatch
):
    from snoop_nb.index import HNSWIndex

    root = tmp_path / "old"
    with open_collection(
        root, create=True, embedder=default_embedder, index_params={"kind": "hnsw"}
    ) as col:
        col.add([tmp_path / "photos"], progress=False)
        assert type(col.index) is HNSWIndex
        expected = col.search(item=3, k=5, exact=True)["id"].tolist()
    assert not (root / "index.hnsw.npz").exists()
    # manifests written before hnsw-pca existed may name no kind at all
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["index"]["kind"]
    (root / "manifest.json").write_text(json.dumps(manifest))

    def rebuilt(*args, **kwargs):
        raise AssertionError("the index was rebuilt")

    monkeypatch.setattr(HNSWIndex, "add", rebuilt)
    with open_collection(root) as col:
        assert type(col.index) is HNSWIndex
        assert col.index.ids().tolist() == col.ok_ids().tolist()
        assert col.search(item=3, k=5, exact=False)["id"].tolist() == expected
        assert col.info()["index"]["kind"] == "hnsw"


def test_feedback_ranking_through_the_projected_index_agrees_with_exact(pca_col):
    from snoop_nb.learn.rank import top_exact, top_hnsw

    items = pca_col.items()
    cats = items["photo"] == "chelsea"
    x = pca_col.vectors_of(items["id"])
    w = x[cats.to_numpy()].mean(0) - x[~cats.to_numpy()].mean(0)
    exact_ids, exact_scores = top_exact(pca_col, w, 0.25, 6)
    ids, scores = top_hnsw(pca_col, w, 0.25, 6)
    assert ids.tolist() == exact_ids.tolist()
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    assert set(ids[:5]) == set(items.loc[cats, "id"])
    skip = ids[:2]
    ids, _ = top_hnsw(pca_col, w, 0.25, 4, exclude=skip)
    assert ids.tolist() == top_exact(pca_col, w, 0.25, 4, exclude=skip)[0].tolist()
    assert pca_col.index.ef == 12  # the search breadth is given back


# --- the same picture twice: scores never exceed 1 --------------------------------------------
def test_the_same_picture_added_twice_scores_at_most_one(col, photo_set, tmp_path):
    twin = tmp_path / "twins"
    twin.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(photo_set["camera"][1], twin / name)
    col.add([twin, photo_set["chelsea"][0].parent], progress=False)
    ids = col.items().set_index("uri")["id"]
    a, b = int(ids[str(twin / "a.png")]), int(ids[str(twin / "b.png")])
    assert np.array_equal(col.vectors_of([a]), col.vectors_of([b]))
    for exact in (True, False):
        hits = col.search(item=a, k=3, exact=exact)
        assert hits["id"].iloc[0] == b and 0.999 < hits["score"].iloc[0] <= 1.0
        by_vector = col.search(vector=col.vectors_of([a])[0], k=2, exact=exact)
        assert set(by_vector["id"]) == {a, b} and by_vector["score"].max() <= 1.0


# --- vectors computed elsewhere ---------------------------------------------------------------
class Outside:
    """A collection of vectors made elsewhere needs only its embedder's description."""

    id, dim = "outside@0", 32

    def describe(self) -> dict:
        return {"id": self.id, "name": "outside", "dim": self.dim}


@pytest.fixture
def outside(tmp_path):
    root = tmp_path / "outside"
    open_collection(root, create=True, embedder=Outside()).close()
    with open_collection(root) as c:  # no embedder given: loading "outside" would fail
        yield c


def test_add_vectors_stores_unit_float16_rows_and_indexes_them_without_an_embedder(
    outside, tmp_path
):
    vecs = 3 * np.random.default_rng(0).standard_normal((50, 32))
    meta = [
        {"kind": "keyframe", "video": "v.mp4", "t_start": i / 2, "shot": i % 3} for i in range(50)
    ]
    ids = outside.add_vectors([tmp_path / f"f{i}.png" for i in range(50)], vecs, meta)
    assert ids.tolist() == list(range(50)) and outside._embedder is None
    stored = np.fromfile(outside.root / "vectors.f16", np.float16).reshape(-1, 32)
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    assert np.allclose(stored, unit, atol=1e-3)
    items = outside.items()
    assert items["uri"].tolist() == [str(tmp_path / f"f{i}.png") for i in range(50)]
    assert set(items["kind"]) == {"keyframe"} and set(items["video"]) == {"v.mp4"}
    assert items["t_start"].tolist() == [i / 2 for i in range(50)]
    assert items["shot"].tolist() == [i % 3 for i in range(50)]
    assert outside.index.ids().tolist() == list(range(50))
    assert (outside.root / "index.hnsw").exists()  # saved, as after add
    for exact in (True, False):
        assert outside.search(vector=vecs[7], k=1, exact=exact)["id"].tolist() == [7]
    # a uri given again is replaced; URLs are kept as given
    new = outside.add_vectors([tmp_path / "f7.png", "https://example.org/a.jpg"], vecs[[1, 2]])
    assert new.tolist() == [50, 51] and outside.item(7)["status"] == "deleted"
    assert outside.item(51)["uri"] == "https://example.org/a.jpg" and len(outside) == 51
    assert outside.search(vector=vecs[7], k=51, exact=False)["id"].isin([7]).sum() == 0


@pytest.mark.parametrize(
    "uris, vectors, metadata, message",
    [
        (["a.png"], np.ones((1, 31)), None, "32 columns"),
        (["a.png"], np.full((1, 32), np.nan), None, "NaN"),
        (["a.png", "b.png"], np.array([np.ones(32), np.zeros(32)]), None, "all zeros"),
        (["a.png", "a.png"], np.ones((2, 32)), None, "given twice"),
        (["a.png", "b.png"], np.ones((1, 32)), None, "2 uris but 1 vectors"),
        (["a.png"], np.ones((1, 32)), [{}, {}], "metadata"),
    ],
)
def test_add_vectors_refuses_bad_input_and_writes_nothing(
    outside, uris, vectors, metadata, message
):
    with pytest.raises(UsageError, match=message):
        outside.add_vectors(uris, vectors, metadata)
    assert outside.rows == 0 and (outside.root / "vectors.f16").stat().st_size == 0


def test_add_vectors_while_another_writer_works_is_a_clear_error(outside):
    from snoop_nb.store.lock import writer_lock

    with writer_lock(outside.root), pytest.raises(CollectionError, match="another process"):
        outside.add_vectors(["a.png"], np.ones((1, 32)))
    assert outside.rows == 0
    assert outside.add_vectors(["a.png"], np.ones((1, 32))).tolist() == [0]


def test_ids_under_finds_files_and_folders_by_exact_path(outside):
    paths = ["/p/a/x.png", "/p/a/sub/y.png", "/p/ab/z.png", b"/p/caf\xe9.png", "/q/w.png"]
    outside.add_vectors(paths, np.eye(5, 32) + 0.1)
    assert outside.ids_under(["/p/a"]).tolist() == [0, 1]
    assert outside.ids_under(["/p/a/"]).tolist() == [0, 1]
    assert outside.ids_under(["/p/ab/z.png", "/q"]).tolist() == [2, 4]
    assert outside.ids_under([b"/p/caf\xe9.png"]).tolist() == [3]
    assert outside.ids_under([os.fsdecode(b"/p/caf\xe9.png")]).tolist() == [3]
    assert outside.ids_under(["/p"]).tolist() == [0, 1, 2, 3]
    assert outside.ids_under(["/p/a/x", "/p/ca", "/nowhere"]).size == 0
    outside.remove([0])
    assert outside.ids_under(["/p/a"]).tolist() == [1]


# --- files that failed are tried again --------------------------------------------------------
def test_a_file_that_failed_is_tried_again_on_the_next_run(col, photo_set):
    folder = photo_set["rocket"][0].parent  # five 96x96 pictures
    first = col.add([folder], progress=False, max_pixels=5000)
    assert (first.added, first.retried, len(first.errors)) == (0, 0, 5)
    assert len(col.errors()) == 5 and len(col) == 0
    again = col.add([folder], progress=False)  # the default limit lets them in
    assert (again.added, again.retried, again.replaced, again.skipped) == (5, 5, 0, 0)
    assert again.errors == [] and col.errors() == [] and len(col) == 5
    assert "5 retried" in str(again)
    assert col.index.ids().tolist() == col.ok_ids().tolist()
    assert col.add([folder], progress=False).retried == 0  # now unchanged: skipped


def test_a_file_that_fails_again_keeps_one_catalog_row(col, tmp_path):
    bad = make_bad_images(tmp_path / "bad")
    col.add([tmp_path / "bad"], progress=False)
    errors, rows = col.errors(), col.rows
    assert len(errors) == len(BAD_IMAGE_REASONS)
    again = col.add([tmp_path / "bad"], progress=False)
    assert again.retried == len(errors) and len(again.errors) == len(errors)
    assert col.errors() == errors and col.rows == rows  # no new rows, no duplicates
    assert str(bad[next(iter(BAD_IMAGE_REASONS))]) in {e["uri"] for e in col.errors()}


# --- creating a collection never wipes people's work ------------------------------------------
def snapshot(root) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


@pytest.mark.parametrize(
    "lost",
    [
        ("manifest.json",),
        ("manifest.json", "index.hnsw", "index.hnsw.json"),
        ("manifest.json", "index.hnsw", "index.hnsw.json", "vectors.f16"),
    ],
)
def test_a_catalog_with_labels_but_no_manifest_is_refused_and_left_as_it_is(
    tmp_path, tiny_embedder, photo_set, lost
):
    root = tmp_path / "c"
    with open_collection(root, create=True, embedder=tiny_embedder) as col:
        col.add([photo_set["rocket"][0].parent], progress=False)
        col.kb.user_id("alice")
        col.kb.create_class("alice", "rockets")
        col.kb.label("alice", "rockets", [0, 1], 1)
    for name in lost:
        (root / name).unlink()
    before = snapshot(root)
    with pytest.raises(CollectionError, match=r"no manifest\.json") as refused:
        open_collection(root, create=True, embedder=tiny_embedder)
    assert "left as it is" in str(refused.value)
    with pytest.raises(CollectionError, match=r"no manifest\.json"):
        open_collection(root)
    assert snapshot(root) == before


def test_a_half_made_collection_is_made_afresh(tmp_path, tiny_embedder):
    from snoop_nb.store.catalog import connect

    root = tmp_path / "c"
    root.mkdir()
    connect(root / "catalog.sqlite").close()  # killed before its manifest was written
    (root / "vectors.f16").write_bytes(b"\x01" * 64 * 3)  # and an uncommitted batch
    (root / ".manifest.json.x1y2.tmp").write_text("{")
    with open_collection(root, create=True, embedder=tiny_embedder) as col:
        assert len(col) == 0 and col.rows == 0
    assert (root / "vectors.f16").stat().st_size == 0
    assert not (root / ".manifest.json.x1y2.tmp").exists()
    assert json.loads((root / "manifest.json").read_text())["embedder"]["id"] == tiny_embedder.id


# --- imports go one way -----------------------------------------------------------------------
def run_time_imports(path) -> set[str]:
    """The snoop_nb modules a file imports when it runs (``if TYPE_CHECKING:`` blocks left out)."""
    import ast

    found: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m.startswith("snoop_nb")}


def test_search_learn_and_the_store_never_import_the_collection_facade():
    import snoop_nb

    pkg = Path(snoop_nb.__file__).parent
    callers = [pkg / "search.py", *sorted((pkg / "learn").glob("*.py"))]
    store = sorted((pkg / "store").glob("*.py"))
    assert len(store) >= 6
    for path in callers + store:
        assert not {m for m in run_time_imports(path) if m.startswith("snoop_nb.collection")}, path
    for path in store:
        above = ("snoop_nb.search", "snoop_nb.learn", "snoop_nb.ui", "snoop_nb.kb")
        assert not {m for m in run_time_imports(path) if m.startswith(above)}, path


def test_adding_nothing_new_loads_no_model(tmp_path, tiny_clip, photo_set):
    root = tmp_path / "c"
    model = {"model": tiny_clip["model"], "pretrained": tiny_clip["pretrained"]}
    with open_collection(root, create=True, **model) as col:
        col.add([photo_set["rocket"][0].parent], progress=False)
    with open_collection(root) as col:
        report = col.add([photo_set["rocket"][0].parent], progress=False)
        assert (report.skipped, report.added) == (5, 0) and col._embedder is None


def test_a_collection_inside_the_folder_it_indexes_never_indexes_its_own_files(
    tmp_path, tiny_embedder
):
    """Its keyframes and cached remote pictures are pictures under the indexed folder too."""
    pics = tmp_path / "pics"
    make_good_images(pics)
    with open_collection(pics / "col.snoop", create=True, embedder=tiny_embedder) as c:
        first = c.add([pics], progress=False)
        n = len(c)
        own = pics / "col.snoop" / "keyframes"
        own.mkdir()
        shutil.copy(next(p for p in pics.iterdir() if p.suffix == ".png"), own / "0.png")
        again = c.add([pics], progress=False)
        assert again.added == 0 and len(c) == n
        assert any("inside the collection" in m for _, m in again.warnings)
        assert not any(str(pics / "col.snoop") in u for u in c.items()["uri"])
        assert first.added == n
