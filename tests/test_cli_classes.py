"""`snoop label / train / rank / export`: personal classes from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from snoop_nb import open_collection

pytestmark = pytest.mark.slow  # CLI subprocesses: seconds each


def snoop(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snoop_nb.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def col(tmp_path, tiny_embedder, photo_set):
    with open_collection(tmp_path / "col", create=True, embedder=tiny_embedder) as c:
        c.add([tmp_path / "photos"], progress=False)
    return tmp_path / "col"


def test_label_train_rank_export_round_trip(col, tmp_path):
    user, cls = "Zoé", "my 'red' things 🚗"
    common = ["--collection", col, "--user", user, "--class", cls]
    r = snoop("label", *common, "--pos", 1, 2, 3, "--neg", 10, 11)
    assert r.returncode == 0, r.stderr
    assert "3 relevant, 2 not relevant" in r.stdout

    r = snoop("train", *common, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["positives"], out["negatives"]) == (3, 2)
    assert out["quality"]["cv_folds"] == 2 and "average_precision" in out["quality"]

    r = snoop("rank", *common, "-k", 7, "--json")
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert len(hits) == 7 and all({"id", "uri", "score", "label"} <= h.keys() for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    with open_collection(col) as c:
        c.session(user, cls).apply(0.5)
    for suffix in ("csv", "parquet"):
        out_file = tmp_path / f"export.{suffix}"
        r = snoop("export", "--collection", col, "--user", user, "--out", out_file)
        assert r.returncode == 0, r.stderr
        df = pd.read_csv(out_file) if suffix == "csv" else pd.read_parquet(out_file)
        assert set(df["class"]) == {cls} and set(df["owner"]) == {user}
        labelled = df.dropna(subset=["label"]).set_index("item_id")["label"].astype(int).to_dict()
        assert labelled == {1: 1, 2: 1, 3: 1, 10: -1, 11: -1}
        assert df["item_id"].is_unique and df["uri"].notna().all()
        assert {"applied", "score", "model_id"} <= set(df.columns)


def test_class_verbs_exit_codes(col, tmp_path):
    common = ["--collection", col, "--user", "u", "--class", "c"]
    cases = [
        (2, ["label", *common], "nothing to label"),
        (2, ["label", *common, "--pos", 1, "--neg", 1], "both --pos and --neg"),
        (2, ["label", *common, "--pos", 999], "no item with id 999"),
        (
            2,
            ["label", "--collection", col, "--user", "", "--class", "c", "--pos", 1],
            "user name is empty",
        ),
        (2, ["train", *common], "no user named 'u'"),
        (2, ["rank", *common], "no user named 'u'"),
        (
            2,
            ["export", "--collection", col, "--user", "u", "--out", tmp_path / "x.xlsx"],
            ".csv or .parquet",
        ),
        (
            1,
            ["train", "--collection", tmp_path / "nope", "--user", "u", "--class", "c"],
            "no collection",
        ),
    ]
    for code, args, message in cases:
        r = snoop(*args)
        assert r.returncode == code, (args, r.stdout, r.stderr)
        assert message in r.stderr, (args, r.stderr)
    # every one of them was refused before anything was written: no user, no class
    with open_collection(col) as c:
        assert c.kb.users() == [] and c.kb.classes() == []
    assert snoop("label", *common, "--pos", 1).returncode == 0  # label alone creates
    for args, message in (
        (["train", *common], "at least 2 labelled items"),
        (["rank", *common], "no trained model"),
        (["apply", *common], "no trained model"),
        (["suggest", *common, "--strategy", "uncertain", "-k", 3], None),
    ):
        r = snoop(*args)
        if message is None:  # before a model: the relevant item's nearest neighbours
            assert r.returncode == 0 and len(r.stdout.splitlines()) == 4, (r.stdout, r.stderr)
        else:
            assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
