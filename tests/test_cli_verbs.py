"""`snoop classes / suggest / apply / remove`, `index --max-pixels`, reading verbs that create
nothing, and file or class names that cannot take over the terminal.

The collections are real: photographs made by conftest.make_photo_set, embedded by the offline
default embedder, and the CLI runs as the installed console script in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_photo_set
from mediafiles import photo

from snoop_nb import open_collection
from snoop_nb.cli import escaped, json_text

SNOOP = Path(sys.executable).parent / "snoop"
KB_TABLES = ("users", "classes", "labels", "models", "applied")


def snoop(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SNOOP), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def kb_rows(col_dir: Path) -> dict[str, list[tuple]]:
    """Every row of the knowledge base tables, read without the engine."""
    db = sqlite3.connect(f"file:{col_dir / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        there = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {
            t: db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() if t in there else []
            for t in KB_TABLES
        }
    finally:
        db.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory, default_embedder):
    """30 photos (5 variants of 6 photographs) in a collection, built once per module."""
    root = tmp_path_factory.mktemp("built")
    photos = make_photo_set(root / "photos")
    with open_collection(root / "col", create=True, embedder=default_embedder) as c:
        c.add([root / "photos"], progress=False)
        by_uri = dict(zip(c.items()["uri"], c.items()["id"], strict=True))
    ids = {name: [int(by_uri[str(p)]) for p in paths] for name, paths in photos.items()}
    return root, ids


@pytest.fixture
def col(built, tmp_path):
    """A fresh copy of the module's collection for one test: (its folder, the photos' ids by
    photograph, the photos' folder, shared by the copies and never changed)."""
    root, ids = built
    shutil.copytree(root / "col", tmp_path / "col")
    return tmp_path / "col", ids, root / "photos"


@pytest.fixture
def classes(col):
    """alice's trained, shared 'cats' (chelsea vs coffee), bob's own 'mugs', carol's private."""
    col_dir, ids, _ = col
    with open_collection(col_dir) as c:
        s = c.session("alice", "cats")
        s.label(ids["chelsea"][:2], +1)
        s.label(ids["coffee"][:2], -1)
        s.train()
        s.train()
        c.kb.share("alice", "cats")
        c.kb.create_class("bob", "mugs")
        c.kb.label("bob", "mugs", ids["coffee"][:3], +1)
        c.kb.create_class("carol", "secret")
    return col


# --- classes -------------------------------------------------------------------------------
@pytest.mark.slow
def test_classes_lists_own_and_shared_with_counts_and_models(classes):
    col_dir, _, _ = classes
    r = snoop("classes", "--collection", col_dir, "--user", "bob", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["class"]: row for row in json.loads(r.stdout)}
    assert set(rows) == {"mugs", "alice/cats"}  # not carol's private class
    mugs, cats = rows["mugs"], rows["alice/cats"]
    assert (mugs["owner"], mugs["name"], mugs["shared"]) == ("bob", "mugs", False)
    assert (mugs["relevant"], mugs["not_relevant"], mugs["models"]) == (3, 0, 0)
    assert mugs["latest_model"] is None and mugs["applied"] == 0
    assert (cats["owner"], cats["shared"], cats["relevant"], cats["not_relevant"]) == (
        "alice",
        True,
        2,
        2,
    )
    assert cats["models"] == 2
    with open_collection(col_dir) as c:
        latest = c.kb.latest_model(c.kb.get_class("alice", "cats"))
    assert cats["latest_model"]["id"] == latest.id
    assert cats["latest_model"]["quality"] == latest.quality

    r = snoop("classes", "--collection", col_dir, "--user", "alice")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["class", "owner", "shared"]
    assert lines[1].split()[:6] == ["cats", "alice", "yes", "2", "2", "2"]
    assert len(lines) == 2  # bob's and carol's classes are not shared

    r = snoop("classes", "--collection", col_dir, "--json")
    assert r.returncode == 0, r.stderr
    assert {row["class"] for row in json.loads(r.stdout)} == {
        "alice/cats",
        "bob/mugs",
        "carol/secret",
    }


# --- suggest -------------------------------------------------------------------------------
@pytest.mark.slow
def test_suggest_every_strategy_gives_unlabelled_items(classes):
    col_dir, ids, _ = classes
    labelled = set(ids["chelsea"][:2] + ids["coffee"][:2])
    common = ["--collection", col_dir, "--user", "alice", "--class", "cats"]
    for strategy in ("top", "uncertain", "diverse", "mixed"):
        r = snoop("suggest", *common, "--strategy", strategy, "-k", 6, "--json")
        assert r.returncode == 0, (strategy, r.stderr)
        hits = json.loads(r.stdout)
        assert len(hits) == 6, strategy
        assert all({"rank", "id", "score", "label", "uri"} <= h.keys() for h in hits)
        got = [h["id"] for h in hits]
        assert len(set(got)) == 6 and not set(got) & labelled, strategy
        assert {h["label"] for h in hits} == {0}
        if strategy == "top":
            # the three other variants of the cat come first
            assert set(got[:3]) == set(ids["chelsea"][2:]), hits
        if strategy == "uncertain":
            # closest to the boundary first: |score| grows down the list
            scores = [abs(h["score"]) for h in hits]
            assert scores == sorted(scores), hits
    r = snoop("suggest", *common, "-k", 3)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 4, r.stdout
    r = snoop("suggest", *common, "--strategy", "random")
    assert r.returncode == 2 and "invalid choice" in r.stderr


# --- apply ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_apply_writes_exactly_the_items_above_the_threshold(classes):
    from snoop_nb.learn.classifier import probability

    col_dir, _, _ = classes
    common = ["--collection", col_dir, "--user", "alice", "--class", "cats"]
    counts = {}
    for threshold in (0.5, 0.2):
        r = snoop("apply", *common, "--threshold", threshold, "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        with open_collection(col_dir) as c:
            ref = c.kb.get_class("alice", "cats")
            model = c.kb.latest_model(ref)
            applied = c.kb.applied(ref)
            ok = c.ok_ids()
            prob = probability(c.vectors_of(ok) @ model.weights + model.bias)
        expected = set(ok[prob >= threshold].tolist())
        assert set(applied["item_id"]) == expected and len(expected) >= 3
        assert (out["applied"], out["items"], out["model_id"], out["threshold"]) == (
            len(expected),
            30,
            model.id,
            threshold,
        )
        assert (out["owner"], out["name"]) == ("alice", "cats")
        counts[threshold] = len(expected)
    assert counts[0.2] >= counts[0.5]
    r = snoop("apply", *common)
    assert r.returncode == 0 and f"applied to {counts[0.5]} of 30 items" in r.stdout, r.stdout

    cases = [
        (["apply", *common, "--threshold", "1.5"], "between 0 and 1"),
        (
            ["apply", "--collection", col_dir, "--user", "bob", "--class", "alice/cats"],
            "belongs to alice",
        ),
        (["apply", "--collection", col_dir, "--user", "bob", "--class", "mugs"], "no trained"),
    ]
    before = kb_rows(col_dir)
    for args, message in cases:
        r = snoop(*args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
    assert kb_rows(col_dir) == before


# --- reading verbs create nothing ------------------------------------------------------------
@pytest.mark.slow
def test_reading_verbs_never_create_a_user_or_a_class(classes, tmp_path):
    col_dir, _, _ = classes
    before = kb_rows(col_dir)
    out = tmp_path / "x.csv"
    verbs = [
        ["rank"],
        ["suggest"],
        ["apply"],
        ["train"],
        ["export", "--out", out],
    ]
    for verb in verbs:
        for user, cls, listed in (
            ("bob", "cars", ["'mugs'", "'alice/cats'"]),
            ("zed", "cats", ["'alice'", "'bob'", "'carol'"]),
        ):
            args = [*verb, "--collection", col_dir, "--user", user, "--class", cls]
            r = snoop(*args)
            assert r.returncode == 2, (args, r.stdout, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert all(name in r.stderr for name in listed), (args, r.stderr)
            assert "'carol/secret'" not in r.stderr  # a private class is not listed
    for args in (["classes", "--user", "zed"], ["export", "--user", "zed", "--out", out]):
        r = snoop(*args, "--collection", col_dir)
        assert r.returncode == 2 and "no user named 'zed'" in r.stderr, r.stderr
    assert not out.exists()
    assert kb_rows(col_dir) == before

    # a shared class is read as owner/name, and reading it writes nothing either
    r = snoop("rank", "--collection", col_dir, "--user", "bob", "--class", "alice/cats", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 20
    assert kb_rows(col_dir) == before


# --- remove --------------------------------------------------------------------------------
@pytest.mark.slow
def test_remove_forgets_the_items_of_files_and_folders_and_keeps_labels(classes):
    col_dir, ids, photos = classes
    before = kb_rows(col_dir)
    coffee = photos / "coffee"
    one_cat = sorted((photos / "chelsea").iterdir())[0]
    r = snoop("remove", coffee, one_cat, "--collection", col_dir, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["removed"], out["items"]) == (6, 24)
    assert [p["items"] for p in out["paths"]] == [5, 1]
    with open_collection(col_dir) as c:
        assert len(c) == 24
        live = set(c.ok_ids().tolist())
        assert not live & set(ids["coffee"])
        hits = c.search(item=ids["chelsea"][1], k=30, exact=True)
        assert not set(hits["id"]) & set(ids["coffee"])
        assert str(one_cat) not in set(hits["uri"])
    assert kb_rows(col_dir)["labels"] == before["labels"]  # labels stay

    # a relative path, from the folder that holds it
    r = snoop("remove", "rocket", "--collection", col_dir, cwd=photos)
    assert r.returncode == 0 and "removed 5 items, 19 left" in r.stdout, (r.stdout, r.stderr)

    # nothing under a path: exit 2, and nothing is removed from the other paths either
    r = snoop("remove", coffee, photos / "astronaut", "--collection", col_dir)
    assert r.returncode == 2 and "nothing was removed" in r.stderr, r.stderr
    with open_collection(col_dir) as c:
        assert len(c) == 19


# --- names that cannot take over the terminal ---------------------------------------------
HOSTILE = ["title\x1b]0;pwned\x07.png", "clear\x1b[2J.png", "rtl\u202egnp.jpg"]


@pytest.mark.slow
def test_file_names_with_escape_codes_are_indexed_and_printed_escaped(tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    for i, name in enumerate(HOSTILE):
        photo(("chelsea", "coffee", "rocket")[i], (64, 48)).save(
            folder / name, format="PNG" if name.endswith(".png") else "JPEG"
        )
    (folder / "bad\x1b[31m.png").write_bytes(b"not a picture")
    col_dir = tmp_path / "col"
    r = snoop("index", folder, "--collection", col_dir, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout + r.stderr
    assert "bad\\x1b[31m.png" in r.stderr  # the bad file's line, escaped

    with open_collection(col_dir) as c:
        ok = c.ok_ids().tolist()
    assert len(ok) == 3
    shown = ""
    for item in ok[:2]:  # a search by item leaves the item out: two searches show all three
        r = snoop("search", "--collection", col_dir, "--item", item, "-k", 2)
        assert r.returncode == 0, r.stderr
        shown += r.stdout
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    for name in ("title\\x1b]0;pwned\\x07.png", "clear\\x1b[2J.png", "rtl\\u202egnp.jpg"):
        assert name in shown, shown

    r = snoop("search", "--collection", col_dir, "--item", ok[0], "-k", 2, "--json")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout
    assert {Path(h["uri"]).name for h in json.loads(r.stdout)} <= set(HOSTILE)

    r = snoop("info", "--collection", col_dir)
    assert r.returncode == 0 and "bad\\x1b[31m.png" in r.stdout and "\x1b" not in r.stdout

    r = snoop("label", "--collection", col_dir, "--user", "u", "--class", "c", "--pos", *ok[:2])
    assert r.returncode == 0, r.stderr
    assert snoop("train", "--collection", col_dir, "--user", "u", "--class", "c").returncode == 0
    r = snoop("rank", "--collection", col_dir, "--user", "u", "--class", "c", "-k", 3)
    assert r.returncode == 0 and "\x1b" not in r.stdout and "\\x1b" in r.stdout, r.stdout

    r = snoop("search", "--collection", col_dir, "--image", folder / "no\x1b[2Jsuch.png")
    assert r.returncode == 2 and "no\\x1b[2Jsuch.png" in r.stderr and "\x1b" not in r.stderr

    # a file deleted from the disk is removed from the collection all the same
    gone = folder / HOSTILE[0]
    gone.unlink()
    r = snoop("remove", gone, "--collection", col_dir, "--json")
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    out = json.loads(r.stdout)
    assert (out["removed"], out["items"], out["paths"]) == (1, 2, [{"path": str(gone), "items": 1}])


def test_escaped_and_json_text_leave_no_terminal_control_characters():
    name = "a\x1b]0;pwned\x07\x9b2J\u202e\u2066\u200b\u2028\U000e0001z.png"
    shown = escaped(name)
    assert shown == "a\\x1b]0;pwned\\x07\\x9b2J\\u202e\\u2066\\u200b\\u2028\\U000e0001z.png"
    assert escaped("été 🦉 Zoé.png") == "été 🦉 Zoé.png"
    assert escaped("two\nlines", keep="\n") == "two\nlines" and escaped("a\nb") == "a\\x0ab"
    text = json_text({"uri": name, "score": np.float32(0.5), "gap": float("nan")})
    assert all(c.isprintable() and c not in "\u202e\u2066\u200b\u2028" for c in text)
    assert json.loads(text) == {"uri": name, "score": 0.5, "gap": None}
    assert json_text({"name": "été 🦉"}) == '{"name": "été 🦉"}'  # readable, not \\u-escaped


@pytest.mark.slow
def test_invisible_or_direction_changing_names_are_refused_by_the_cli(col):
    col_dir, _, _ = col
    before = kb_rows(col_dir)
    for kind, user, cls, code in (
        ("class", "alice", "cats\u202e", "U+202E"),
        ("user", "ali\u200bce", "cats", "U+200B"),
    ):
        r = snoop("label", "--collection", col_dir, "--user", user, "--class", cls, "--pos", 1)
        assert r.returncode == 2, r.stderr
        assert f"{kind} name" in r.stderr and code in r.stderr and "\u202e" not in r.stderr
    assert kb_rows(col_dir) == before


# --- export --------------------------------------------------------------------------------
@pytest.mark.slow
def test_export_into_a_missing_folder_is_one_line_exit_2(classes, tmp_path):
    col_dir, _, _ = classes
    for out, message in (
        (tmp_path / "no" / "such" / "folder" / "labels.csv", "create it first"),
        (tmp_path / "afolder.csv", "is a folder"),
    ):
        if message == "is a folder":
            out.mkdir()
        r = snoop("export", "--collection", col_dir, "--user", "alice", "--out", out)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "no").exists()
    r = snoop("export", "--collection", col_dir, "--user", "bob", "--out", tmp_path / "b.csv")
    assert r.returncode == 0, r.stderr
    assert set(pd.read_csv(tmp_path / "b.csv")["class"]) == {"mugs"}


# --- train and index options ---------------------------------------------------------------
@pytest.mark.slow
def test_train_json_prints_the_models_whole_metrics_and_the_labels_it_gets_wrong(col, tmp_path):
    col_dir, ids, photos = col
    common = ["--collection", col_dir, "--user", "alice", "--class", "cats"]
    pos, neg = ids["chelsea"][:3], ids["coffee"][:3] + ids["rocket"][:2]
    assert snoop("label", *common, "--pos", *pos, "--neg", *neg).returncode == 0
    r = snoop("train", *common, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    with open_collection(col_dir) as c:
        model = c.kb.latest_model(c.kb.get_class("alice", "cats"))
    assert out["model_id"] == model.id and out["quality"] == model.quality
    assert out["params"] == model.params
    assert (out["positives"], out["negatives"]) == (3, 5)
    # how many labels the model still gets wrong: none, these labels are separable
    assert out["quality"]["mistakes"]["count"] == out["mistakes"] == 0
    r = snoop("train", *common)
    assert r.returncode == 0 and "it gets every label right" in r.stdout, r.stdout

    # one picture marked both ways (the file and a copy of it): a label stays wrong
    copy = tmp_path / "copy" / "cat.png"
    copy.parent.mkdir()
    shutil.copy(photos / "chelsea" / "chelsea_0.png", copy)
    assert snoop("index", copy, "--collection", col_dir, "--quiet").returncode == 0
    with open_collection(col_dir) as c:
        (twin,) = c.items().loc[lambda d: d["uri"] == str(copy), "id"].tolist()
    assert ids["chelsea"][0] in pos
    assert snoop("label", *common, "--neg", twin).returncode == 0
    r = snoop("train", *common, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["mistakes"] == out["quality"]["mistakes"]["count"] >= 1
    r = snoop("train", *common)
    assert r.returncode == 0, r.stderr
    assert f"it still gets {out['mistakes']} of its labels wrong" in r.stdout, r.stdout


@pytest.mark.slow
def test_index_max_pixels_refuses_larger_images_naming_the_option(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    photo("chelsea", (400, 300)).save(folder / "big.png")  # 120,000 pixels
    photo("coffee", (200, 100)).save(folder / "small.png")  # 20,000 pixels
    r = snoop("index", folder, "--collection", tmp_path / "col", "--max-pixels", "1e5", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["added"] == 1
    (err,) = report["errors"]
    assert Path(err["uri"]).name == "big.png"
    assert "max-pixels" in err["reason"] or "max_pixels" in err["reason"], err
    # the next run, with the default cap, tries the refused file again and adds it
    r = snoop("index", folder, "--collection", tmp_path / "col", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["retried"], report["added"], report["items"], report["errors"]) == (1, 1, 2, [])
    r = snoop("index", folder, "--collection", tmp_path / "col")
    assert r.returncode == 0 and "0 retried" in r.stdout and "2 items in all" in r.stdout
    for bad in ("0", "many"):
        r = snoop("index", folder, "--collection", tmp_path / "c2", "--max-pixels", bad)
        assert r.returncode == 2 and "--max-pixels" in r.stderr, r.stderr
    assert not (tmp_path / "c2").exists()


def test_cli_strategies_are_the_sessions():
    from snoop_nb.cli import STRATEGIES
    from snoop_nb.learn.session import STRATEGIES as SESSION_STRATEGIES

    assert STRATEGIES == SESSION_STRATEGIES
