"""End to end with the offline default model: real photographs find their own variants, and text
queries find what they name, from Python and from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from snoop_nb import open_collection


@pytest.fixture
def default_col(tmp_path, default_embedder, photo_set):
    with open_collection(tmp_path / "col", create=True, embedder=default_embedder) as col:
        col.add([tmp_path / "photos"], progress=False, meta=lambda p: {"photo": p.parent.name})
        yield col


def test_variants_of_a_photograph_are_its_nearest_neighbours(default_col):
    items = default_col.items()
    hits_in_top4 = []
    for item_id, source in zip(items["id"], items["photo"], strict=True):
        hits = default_col.search(item=int(item_id), k=4)
        hits_in_top4.append((hits["photo"] == source).sum())
    # 30 items, 4 true neighbours each: the real model finds nearly all of them
    assert sum(hits_in_top4) / (4 * len(items)) >= 0.9, hits_in_top4


@pytest.mark.parametrize(
    "text, photo",
    [("a cat", "chelsea"), ("a cup of coffee", "coffee"), ("a rocket", "rocket")],
)
def test_text_query_finds_the_photographs_it_names(default_col, text, photo):
    hits = default_col.search(text=text, k=5)
    assert (hits["photo"] == photo).sum() >= 4, hits[["photo", "score"]]


@pytest.mark.slow  # two subprocesses load the model: 15 s
def test_cli_with_the_default_model_indexes_and_searches_by_text(tmp_path, photo_set):
    col = tmp_path / "c"
    run = [sys.executable, "-m", "snoop_nb.cli"]
    r = subprocess.run(
        [*run, "index", str(tmp_path / "photos"), "--collection", str(col), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["added"] == 30
    info = json.loads(
        subprocess.run(
            [*run, "info", "--collection", str(col), "--json"], capture_output=True, text=True
        ).stdout
    )
    assert info["model"] == "efficientnet_lite0-gem" and info["dim"] == 1280 and info["items"] == 30
    # 1280-d: the index is HNSW over a PCA projection (fitted from 1024 items; exact until then)
    assert {k: info["index"][k] for k in ("kind", "project_dim", "min_fit")} == {
        "kind": "hnsw-pca",
        "project_dim": 256,
        "min_fit": 1024,
    }
    assert info["index"]["bytes"] > 0
    r = subprocess.run(
        [*run, "search", "--collection", str(col), "--text", "espresso", "-k", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert [Path(h["uri"]).parent.name for h in json.loads(r.stdout)] == ["coffee"] * 3


def test_a_collection_of_the_first_default_keeps_its_vector_space(tmp_path, photo_set):
    """Made with the first default (centre crop, average pooling): reopened, searched and
    grown with that model, never mixed with the new default's vectors."""
    from snoop_nb.embed import load_embedder
    from snoop_nb.errors import EmbedderMismatchError

    first = load_embedder("efficientnet_lite0", device="cpu")
    photos = sorted(p for paths in photo_set.values() for p in paths)
    old = tmp_path / "old"
    with open_collection(old, create=True, embedder=first) as col:
        col.add(photos[:20], progress=False)
    with open_collection(old) as col:  # as a later snoop-nb opens it: no model given
        assert col.embedder.id == first.id and col.embedder.name == "efficientnet_lite0"
        col.add(photos[20:], progress=False)  # grown with the same model
        assert len(col) == 30
        vectors = col.vectors_of(col.ok_ids())
        assert np.allclose(
            vectors, first.encode_images(col.paths(col.ok_ids()).values()), atol=2e-3
        )
        source = Path(col.item(0)["uri"]).parent.name
        hits = col.search(item=0, k=3)  # its variants, found in the old space
        assert (hits["uri"].map(lambda u: Path(u).parent.name) == source).sum() >= 2
    with pytest.raises(EmbedderMismatchError):
        open_collection(old, model="default")
    with open_collection(old, model="efficientnet_lite0") as col:
        assert col.embedder.id == first.id
