"""A collection on disk: incremental adds, bad files, consistency, embedder checks, search."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap

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
    col.add([good["non_utf8_name"]], progress=False)
    (row,) = col._db.execute("SELECT path, uri FROM items").fetchall()
    assert bytes(row[0]) == os.fsencode(good["non_utf8_name"])
    assert row[1].endswith("caf\\xe9.jpg")
    # searching by that item works and reports the readable name
    assert col.search(item=col.ok_ids()[0], k=1).empty


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
        approx = col.search(item=int(item), k=8, exact=False)
        exact = col.search(item=int(item), k=8, exact=True)
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
