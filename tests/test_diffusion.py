"""Query expansion by diffusion: it follows a manifold that plain similarity cuts across, and
search keeps the exact similarity beside the expanded score."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from snoop_nb import open_collection
from snoop_nb.index.diffusion import diffuse


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def arc_and_clump(seed: int = 0):
    """A chain of points along a quarter circle (class A, the query at its start) and a clump
    of other points (class B) closer to the query than the chain's far half."""
    rng = np.random.default_rng(seed)
    angles = np.radians(np.arange(0, 90, 2.0))
    arc = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
    centre = unit([np.cos(np.radians(20)), np.sin(np.radians(20)), np.sin(np.radians(35))])
    clump = unit(centre + 0.03 * rng.standard_normal((25, 3)))
    x = np.vstack([arc, clump])
    noise = 0.002 * rng.standard_normal((len(x), 61))  # more dimensions, a little noise
    x = unit(np.hstack([x, noise])).astype(np.float32)
    y = np.r_[np.ones(len(arc)), np.zeros(len(clump))].astype(bool)
    return x, y


def average_precision(y, scores):
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(y[order])
    return float((hits[y[order]] / (np.nonzero(y[order])[0] + 1)).mean())


def test_diffusion_follows_the_chain_where_similarity_cuts_across():
    x, y = arc_and_clump()
    query = x[0]
    rest = np.arange(1, len(x))
    sims = x[rest] @ query
    expanded = diffuse(sims, x[rest])
    plain_ap, expanded_ap = average_precision(y[rest], sims), average_precision(y[rest], expanded)
    assert plain_ap < 0.8 < expanded_ap, (plain_ap, expanded_ap)
    # the chain from 40 to 70 degrees: below the clump by similarity, above it expanded
    pos = {int(i): n for n, i in enumerate(rest)}
    far = range(20, 36)
    clump = range(45, len(x))
    assert all(sims[pos[i]] < max(sims[pos[j]] for j in clump) for i in far)
    assert all(expanded[pos[i]] > max(expanded[pos[j]] for j in clump) for i in far)
    assert expanded.max() <= 1.0 + 1e-6 and expanded.dtype == np.float32


def test_diffusion_of_too_few_candidates_is_the_similarity():
    sims = np.array([0.9, 0.2], np.float32)
    assert np.array_equal(diffuse(sims, np.eye(2, 4, dtype=np.float32)), sims)


@pytest.fixture
def small_col(tmp_path, default_embedder, photo_set):
    with open_collection(tmp_path / "col", create=True, embedder=default_embedder) as col:
        col.add([tmp_path / "photos"], progress=False)
        yield col


def test_search_keeps_the_similarity_beside_the_expanded_score(small_col):
    col = small_col
    x = col.vectors_of(col.ok_ids())
    for item in (0, 7):
        plain = col.search(item=item, k=29, expand=False)
        exact = np.argsort(-(x @ x[item]), kind="stable")
        exact = [int(i) for i in exact if i != item]
        assert plain["id"].tolist() == exact  # expand=False: exact nearest neighbours
        assert np.allclose(plain["score"], plain["similarity"])
        got = col.search(item=item, k=29)
        assert item not in set(got["id"]) and sorted(got["id"]) == sorted(plain["id"])
        assert got["score"].is_monotonic_decreasing and got["score"].max() <= 1.0 + 1e-6
        cos = x[got["id"].to_numpy()] @ x[item]
        assert np.allclose(got["similarity"], cos, atol=2e-3)
    text = col.search(text="a cat", k=5)
    assert {"score", "similarity"} <= set(text.columns) and len(text) == 5


def test_cli_search_no_expand(small_col):
    run = [sys.executable, "-m", "snoop_nb.cli", "search", "--collection", str(small_col.root)]
    out = {}
    for flag in ([], ["--no-expand"]):
        r = subprocess.run(
            [*run, "--item", "3", "-k", "5", "--json", *flag],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        out[bool(flag)] = json.loads(r.stdout)
    plain = out[True]
    assert all(abs(row["score"] - row["similarity"]) < 1e-6 for row in plain)
    assert [row["rank"] for row in out[False]] == [1, 2, 3, 4, 5]
    assert {"id", "uri", "score", "similarity"} <= set(out[False][0])


def test_a_copy_of_the_query_stays_first_whatever_the_graph():
    # a dense clump at similarity ~0.7 (which diffusion favours), a copy of the query at ~0.98
    rng = np.random.default_rng(1)
    dim = 64
    e1, e2 = np.eye(dim)[0], np.eye(dim)[1]
    clump = unit(unit(e1 + e2) + 0.05 * rng.standard_normal((30, dim)))
    copy = unit(e1 + 0.03 * rng.standard_normal(dim))
    filler = unit(rng.standard_normal((100, dim)))
    cands = np.vstack([clump, filler, copy]).astype(np.float32)
    sims = (cands @ e1).astype(np.float32)
    assert sims[-1] >= 0.95 > np.sort(sims)[-2]
    expanded = diffuse(sims, cands)
    assert int(np.argmax(expanded)) == len(cands) - 1
    assert expanded[-1] == pytest.approx(sims[-1]) and (expanded[:-1] < 0.95).all()
