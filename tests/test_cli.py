"""The `snoop` command line: JSON output, exit codes, and a killed run that resumes."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo_set
from mediafiles import make_bad_images

from snoop_nb import open_collection

# every test runs the CLI in subprocesses that load a model: seconds each
pytestmark = pytest.mark.slow


def snoop(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snoop_nb.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_clip):
    """A collection of 30 photos (+ bad files) indexed once through the CLI with the tiny
    model; the tests only read it (or fail to change it)."""
    root = tmp_path_factory.mktemp("cli")
    photos = make_photo_set(root / "photos")
    make_bad_images(root / "photos" / "bad")
    col = root / "col"
    r = snoop(
        "index",
        root / "photos",
        "--collection",
        col,
        "--model",
        tiny_clip["model"],
        "--pretrained",
        tiny_clip["pretrained"],
        "--batch-size",
        "8",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    return col, json.loads(r.stdout), photos


@pytest.fixture
def indexed(built):
    col, report, _ = built
    return col, report


@pytest.fixture
def photo_set(built):
    """The photos of the module's collection (not a fresh set: these are the ones indexed)."""
    return built[2]


def test_index_reports_added_items_and_bad_files(indexed):
    _, report = indexed
    assert report["added"] == report["items"] == 30
    assert {Path(e["uri"]).name for e in report["errors"]} == {
        "empty.jpg",
        "truncated.jpg",
        "truncated.png",
        "notes.jpg",
        "huge.png",
        "broken.png",
    }


def test_info_json_has_counts_errors_model_and_dim(indexed, tiny_clip):
    col, _ = indexed
    r = snoop("info", "--collection", col, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["items"] == 30 and info["dim"] == 32
    assert info["model"] == tiny_clip["model"]
    reasons = {Path(e["uri"]).name: e["reason"] for e in info["errors"]}
    assert reasons["huge.png"].startswith("image too large: 40000x40000")
    assert reasons["broken.png"] == "broken symlink"
    plain = snoop("info", "--collection", col)
    assert plain.returncode == 0 and "items       30" in plain.stdout


def test_search_json_by_item_image_and_text(indexed, photo_set):
    col, _ = indexed
    r = snoop("search", "--collection", col, "--item", "3", "-k", "4", "--json")
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert len(hits) == 4 and all({"id", "uri", "score", "rank"} <= h.keys() for h in hits)
    assert 3 not in [h["id"] for h in hits]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    query = photo_set["astronaut"][1]
    r = snoop("search", "--collection", col, "--image", query, "-k", "2", "--json")
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert hits[0]["uri"] == str(query) and hits[0]["score"] > 0.999

    r = snoop("search", "--collection", col, "--text", "an astronaut", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 10

    r = snoop("search", "--collection", col, "--text", "an astronaut")
    assert r.returncode == 0 and "rank" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["search", "--collection", "{col}"], "one of the arguments"),
        (["search", "--collection", "{col}", "--item", "1", "--text", "x"], "not allowed with"),
        (["search", "--collection", "{col}", "--item", "1", "-k", "0"], "at least 1"),
        (["search", "--collection", "{col}", "--item", "99999"], "no item"),
        (["search", "--collection", "{col}", "--image", "/no/such.jpg"], "no such file"),
        (["index", "/no/such/folder", "--collection", "{tmp}/new"], "no such file"),
        (["index", "{tmp}", "--collection", "{col}", "--batch-size", "zero"], "not an integer"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(indexed, tmp_path, args, message):
    col, _ = indexed
    r = snoop(*[a.format(col=col, tmp=tmp_path) for a in args])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 or "usage:" in r.stderr
    if args[0] == "index":
        assert not (tmp_path / "new").exists()


def test_failures_exit_1_with_one_line(indexed, tmp_path, photo_set):
    col, _ = indexed
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    cases = [
        ("search", "--collection", tmp_path / "missing", "--item", "1"),
        ("search", "--collection", col, "--image", bad),
        ("index", photo_set["coffee"][0], "--collection", col, "--model", "ViT-S-32"),
        (
            "index",
            photo_set["coffee"][0],
            "--collection",
            tmp_path / "c2",
            "--model",
            "ViT-S-32",
            "--pretrained",
            tmp_path / "no-such-checkpoint.pt",
        ),
        ("info", "--collection", photo_set["coffee"][0].parent.parent),  # photos, no catalog
    ]
    for args in cases:
        r = snoop(*args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("snoop: error: ") and len(r.stderr.strip().splitlines()) == 1, (
            r.stderr
        )


def test_killed_run_resumes_without_duplicates(tmp_path, tiny_clip, tiny_embedder):
    """SIGKILL at random moments (during start-up, embedding, commits, index saves), then finish."""
    rng = random.Random(1234)
    images = tmp_path / "images"
    images.mkdir()
    from mediafiles import photo

    sources = [photo(n, (64, 48)) for n in ("chelsea", "coffee", "astronaut", "rocket")]
    for i in range(160):
        img = sources[i % 4].rotate(rng.uniform(-30, 30))
        (images / f"d{i % 7}").mkdir(exist_ok=True)
        img.save(images / f"d{i % 7}" / f"img_{i:03d}.png")
    bad = make_bad_images(tmp_path / "images" / "bad")
    col = tmp_path / "col"
    cmd = [
        sys.executable,
        "-m",
        "snoop_nb.cli",
        "index",
        str(images),
        "--collection",
        str(col),
        "--model",
        tiny_clip["model"],
        "--pretrained",
        tiny_clip["pretrained"],
        "--batch-size",
        "2",
        "--workers",
        "2",
        "--quiet",
    ]

    def catalogued() -> int:
        try:
            db = sqlite3.connect(f"file:{col / 'catalog.sqlite'}?mode=ro", uri=True, timeout=5)
            try:
                return db.execute("SELECT count(*) FROM items").fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error:
            return 0

    kills, partial = 0, []
    for round_ in range(6):
        before = catalogued()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        # half the rounds kill at a random moment, half once a random number of rows landed
        target_rows = before + rng.randint(2, 30)
        kill_at = time.monotonic() + rng.uniform(0.2, 4.0)
        while proc.poll() is None and time.monotonic() < deadline:
            if (round_ % 2 == 0 and time.monotonic() >= kill_at) or (
                round_ % 2 == 1 and catalogued() >= target_rows
            ):
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.01)
        proc.wait()
        partial.append(catalogued())
    assert kills >= 3
    assert any(0 < n < 160 for n in partial), partial  # some kill did land mid-run

    final = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr

    with open_collection(col) as c:
        items = c.items(status=None)
        live = items[items["status"] != "deleted"]
        assert live["uri"].is_unique
        ok = live[live["status"] == "ok"]
        assert len(ok) == 160 and len(c) == 160
        assert set(live[live["status"] == "error"]["uri"]) == {
            str(p) for n, p in bad.items() if n != "symlink_loop"
        }
        # the vector file holds exactly the committed rows, and each row is its own file's
        assert (col / "vectors.f16").stat().st_size == c.rows * c.dim * 2
        assert c.rows == len(items)
        sample = ok.sample(12, random_state=0)
        fresh = tiny_embedder.encode_images(list(sample["uri"]), progress=False)
        stored = c.vectors_of(sample["id"])
        assert np.allclose(fresh.astype(np.float32), stored, atol=2e-3)
        # the saved index matches the catalog
        from snoop_nb.index import HNSWIndex

        saved = HNSWIndex.load(col / "index.hnsw")
        assert saved.ids().tolist() == c.ok_ids().tolist()
