"""Several processes and threads on one collection: readers that stay current, creation by two
`snoop index` runs at once, one embedder load, a catalog connection per thread."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo_set

from snoop_nb import open_collection

DIM = 32


class Described:
    """A new collection needs only its embedder's description when vectors come from outside."""

    id, dim = "outside@0", DIM

    def describe(self) -> dict:
        return {"id": self.id, "name": "outside", "dim": self.dim}


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def uris(ids) -> list[str]:
    return [f"/outside/{int(i):05d}.png" for i in ids]


#: A second process: opens the collection, then adds rows [a, b) of vectors.npy or removes ids.
WRITER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from snoop_nb import open_collection

    root, vectors, op, arg = sys.argv[1:]
    with open_collection(root) as col:
        if op == "add":
            a, b = json.loads(arg)
            col.add_vectors([f"/outside/{i:05d}.png" for i in range(a, b)], np.load(vectors)[a:b])
        else:
            col.remove(json.loads(arg))
        assert col._embedder is None  # never loaded
    """
)


def other_process(root: Path, vectors: Path, op: str, arg) -> None:
    r = subprocess.run(
        [sys.executable, "-c", WRITER, str(root), str(vectors), op, json.dumps(arg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr


def assert_current(reader, vecs: np.ndarray, added: range, removed: list[int], exact) -> None:
    """Every item added elsewhere is found (as its own nearest neighbour), no removed one is
    returned, and every id returned is live."""
    live = reader.ok_ids()
    assert set(added) <= set(live.tolist()) and not set(removed) & set(live.tolist())
    for i in added:
        hit = reader.search(vector=vecs[i], k=1, exact=exact)
        assert hit["id"].tolist() == [i] and hit["uri"].tolist() == uris([i])
    for i in removed:
        hits = reader.search(vector=vecs[i], k=len(live), exact=exact)["id"]
        assert len(hits) == len(live) and set(hits) == set(live.tolist())


KINDS = {
    # name: (index_params, exact)
    "exact": ({"kind": "hnsw"}, True),
    "default": ({"kind": "hnsw"}, None),  # exact below EXACT_SEARCH_BELOW items
    "hnsw": ({"kind": "hnsw"}, False),
    # fitted once 60 items are in: the second process's adds take it past min_fit
    "hnsw-pca": ({"kind": "hnsw-pca", "project_dim": 8, "min_fit": 60, "ef": 40}, False),
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, how",
    [(kind, "catch-up") for kind in KINDS]
    + [(kind, "reload") for kind, (_, exact) in KINDS.items() if exact is False],
)
def test_an_open_collection_sees_what_another_process_adds_and_removes(tmp_path, kind, how):
    params, exact = KINDS[kind]
    vecs = unit(np.random.default_rng(0).standard_normal((200, DIM))).astype(np.float32)
    np.save(tmp_path / "vectors.npy", vecs)
    root = tmp_path / "col"
    with open_collection(root, create=True, embedder=Described(), index_params=params) as col:
        col.add_vectors(uris(range(40)), vecs[:40])
    with open_collection(root) as reader:  # the dashboard kernel
        # "reload": a newer saved file is always loaded; "catch-up": never (items are added)
        reader._keeper.reload_above = 0 if how == "reload" else 10**9
        assert_current(reader, vecs, range(40), [], exact)
        before = reader.index
        other_process(root, tmp_path / "vectors.npy", "add", [40, 120])
        assert_current(reader, vecs, range(40, 120), [], exact)
        if exact is False:
            assert reader.index.ids().tolist() == reader.ok_ids().tolist()
            assert (reader.index is before) == (how == "catch-up")
            if kind == "hnsw-pca":
                assert reader.index.projection_ is not None  # past min_fit: through the graph
        gone = [3, 17, 50, 99]
        other_process(root, tmp_path / "vectors.npy", "remove", gone)
        assert_current(reader, vecs, range(0), gone, exact)
        other_process(root, tmp_path / "vectors.npy", "add", [120, 200])
        assert_current(reader, vecs, range(120, 200), gone, exact)
        assert len(reader) == 196
        if exact is False:
            assert reader.index.ids().tolist() == reader.ok_ids().tolist()


@pytest.mark.slow
def test_two_snoop_index_runs_on_a_new_collection_end_with_every_file_once(tmp_path, tiny_clip):
    photos = make_photo_set(tmp_path / "photos")
    files = {str(p) for ps in photos.values() for p in ps}
    col = tmp_path / "col"
    cmd = [
        sys.executable,
        "-m",
        "snoop_nb.cli",
        "index",
        str(tmp_path / "photos"),
        "--collection",
        str(col),
        "--model",
        tiny_clip["model"],
        "--pretrained",
        tiny_clip["pretrained"],
        "--batch-size",
        "4",
        "--quiet",
    ]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    runs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [r.communicate(timeout=300) for r in runs]
    codes = [r.returncode for r in runs]
    assert 0 in codes, outs
    for code, (_, err) in zip(codes, outs, strict=True):
        # the one that finds the other at work says so, with a non-zero exit code
        assert code == 0 or "being modified by another process" in err, (code, err)
    with open_collection(col) as c:
        items = c.items()
        assert sorted(items["uri"]) == sorted(files)  # every file, exactly once
        assert c.index.ids().tolist() == c.ok_ids().tolist()
        assert c.rows == len(files)


def test_threads_that_ask_for_the_embedder_at_once_load_it_once(tmp_path, tiny_clip):
    root = tmp_path / "col"
    open_collection(
        root, create=True, model=tiny_clip["model"], pretrained=tiny_clip["pretrained"]
    ).close()
    with open_collection(root) as col:
        assert col._embedder is None
        start = threading.Barrier(4)
        got = []

        def ask():
            start.wait()
            got.append(col.embedder)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 4 and all(e is got[0] for e in got)


def test_threads_read_the_catalog_on_their_own_connections_while_it_grows(tmp_path):
    vecs = unit(np.random.default_rng(1).standard_normal((400, DIM)))
    with open_collection(tmp_path / "col", create=True, embedder=Described()) as col:
        col.add_vectors(uris(range(100)), vecs[:100])
        stop = threading.Event()
        errors: list[BaseException] = []
        connections = set()

        def read():  # what a UI's thumbnail threads do
            connections.add(id(col._db))
            try:
                while not stop.is_set():
                    ids = col.ok_ids()
                    paths = col.paths(ids[:20].tolist())
                    assert [str(paths[int(i)]) for i in ids[:20]] == uris(ids[:20])
                    assert len(col.items(ids[-5:].tolist())) == min(5, len(ids))
            except BaseException as e:
                errors.append(e)

        readers = [threading.Thread(target=read) for _ in range(3)]
        for t in readers:
            t.start()
        for a in range(100, 400, 50):
            col.add_vectors(uris(range(a, a + 50)), vecs[a : a + 50], update_index=False)
        stop.set()
        for t in readers:
            t.join()
        assert not errors, errors
        connections.add(id(col._db))
        assert len(connections) == 4  # one per thread
        assert len(col) == 400


def test_catalog_connections_of_ended_threads_are_closed(tmp_path):
    with open_collection(tmp_path / "col", create=True, embedder=Described()) as col:
        col.add_vectors(uris(range(3)), unit(np.ones((3, DIM)) + np.eye(3, DIM)))
        for _ in range(5):
            t = threading.Thread(target=lambda: len(col))
            t.start()
            t.join()
        # each new thread's connection closed those of the threads that had ended
        assert len(col._catalog._all) == 2  # this thread's and the last thread's
