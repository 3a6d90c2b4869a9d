"""The knowledge base: labels kept through kills and concurrent writers, odd names, sharing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from snoop_nb import UsageError, open_collection

ODD_NAMES = [
    "Zoé O'Brien",
    'class "quoted"',
    "  spaced  out  ",
    "🦉 owls 🦉",
    "x'; DROP TABLE labels; --",
    "50% _wild_ [chars]",
]


@pytest.fixture
def col(tmp_path, tiny_embedder, photo_set):
    with open_collection(tmp_path / "col", create=True, embedder=tiny_embedder) as c:
        c.add([tmp_path / "photos"], progress=False)
        yield c


def child(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_label_survives_a_sigkill_right_after_it_returns(col):
    proc = child(
        f"""
        import sys, time
        from snoop_nb import open_collection
        col = open_collection({str(col.root)!r})
        col.kb.create_class("alice", "cats")
        col.kb.label("alice", "cats", [1, 2, 3], 1)
        col.kb.label("alice", "cats", [4], -1)
        print("labelled", flush=True)
        time.sleep(60)
        """
    )
    assert proc.stdout.readline().strip() == "labelled", proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    labels = col.kb.labels(col.kb.get_class("alice", "cats"))
    assert dict(zip(labels["item_id"], labels["value"], strict=True)) == {1: 1, 2: 1, 3: 1, 4: -1}


def test_two_processes_labelling_at_once_lose_nothing(col):
    code = f"""
        import sys
        from snoop_nb import open_collection
        user, value = sys.argv[1], int(sys.argv[2])
        col = open_collection({str(col.root)!r})
        col.kb.create_class(user, "shared work")
        for i in range(30):
            for n in range(5):  # many small transactions, interleaved with the other process
                col.kb.label(user, "shared work", [i], value if n % 2 == 0 else -value)
        print("done", flush=True)
        """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), u, v],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for u, v in (("alice", "1"), ("bob", "-1"))
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "done", err
    for user, value in (("alice", 1), ("bob", -1)):
        ref = col.kb.get_class(user, "shared work")
        assert len(col.kb.label_history(ref)) == 150
        labels = col.kb.labels(ref)
        assert len(labels) == 30 and set(labels["value"]) == {value}


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_user_and_class_names_round_trip(col, name):
    ref = col.kb.create_class(name, name, description=name)
    col.kb.label(name, name, [0, 5], 1)
    again = col.kb.get_class(name.strip(), name.strip())
    assert again.id == ref.id and again.name == name.strip() and again.description == name
    assert set(col.kb.labels(again)["item_id"]) == {0, 5}
    assert col.kb.users() == [name.strip()]
    # the catalog is intact
    assert len(col) == 30


@pytest.mark.parametrize("bad", ["", "   ", "tab\there", "x" * 201])
def test_empty_or_control_names_are_refused(col, bad):
    with pytest.raises(UsageError):
        col.kb.create_class("alice", bad)


def test_clearing_a_label_keeps_its_history(col):
    col.kb.create_class("alice", "c")
    col.kb.label("alice", "c", [1, 2], 1)
    col.kb.label("alice", "c", [2], 0)
    col.kb.label("alice", "c", [1], -1)
    ref = col.kb.get_class("alice", "c")
    assert col.kb.labels(ref)[["item_id", "value"]].values.tolist() == [[1, -1]]
    assert col.kb.label_history(ref)["value"].tolist() == [1, 1, 0, -1]
    with pytest.raises(UsageError, match=r"\+1, -1 or 0"):
        col.kb.label("alice", "c", [1], 2)


def test_sharing_is_read_only_and_copying_takes_the_labels(col):
    kb = col.kb
    kb.create_class("alice", "boats", "things that float")
    kb.label("alice", "boats", [1, 2], 1)
    kb.label("alice", "boats", [3], -1)
    assert [str(c) for c in kb.classes("bob")] == []
    kb.share("alice", "boats")
    assert [str(c) for c in kb.classes("bob")] == ["alice/boats"]
    with pytest.raises(UsageError, match="belongs to alice"):
        kb.label("bob", "alice/boats", [4], 1)
    copy = kb.copy_class("bob", "alice/boats")
    assert (copy.owner, copy.name, copy.copied_from) == (
        "bob",
        "boats",
        kb.get_class("alice", "boats").id,
    )
    labels = kb.labels(copy)
    assert dict(zip(labels["item_id"], labels["value"], strict=True)) == {1: 1, 2: 1, 3: -1}
    assert set(labels["source"]) == {"import"} and set(labels["user"]) == {"bob"}
    kb.label("bob", "boats", [4], 1)  # bob's copy is his own
    assert 4 not in set(kb.labels(kb.get_class("alice", "boats"))["item_id"])
    kb.share("alice", "boats", False)
    with pytest.raises(UsageError, match="no class"):
        kb.get_class("bob", "alice/boats")
    with pytest.raises(UsageError, match="already has"):
        kb.copy_class("bob", "boats")


def test_labels_of_deleted_items_are_kept_but_not_trained_on(col):
    s = col.session("alice", "gone")
    s.label([0, 1, 2], 1)
    s.label([20, 21], -1)
    col.remove([0, 1])
    m = s.train()
    assert (m.n_pos, m.n_neg) == (1, 2)
    assert len(s.labels()) == 5


def test_a_shared_class_is_copied_not_shadowed_by_a_new_class_named_owner_slash_name(col):
    kb = col.kb
    kb.create_class("ada", "vehicles")
    kb.label("ada", "vehicles", [1, 2], +1)
    kb.share("ada", "vehicles")
    with pytest.raises(UsageError, match="ada's shared class: copy it"):
        kb.create_class("ben", "ada/vehicles")
    with pytest.raises(UsageError, match="contains '/'"):
        kb.create_class("ben", "cars/boats")
    with pytest.raises(UsageError, match="contains '/'"):
        kb.user_id("a/b")
    copy = kb.copy_class("ben", "ada/vehicles")
    assert (copy.owner, copy.name) == ("ben", "vehicles")


@pytest.mark.parametrize(
    "char, code",
    [
        ("\u200b", "U+200B"),  # zero-width space
        ("\u202e", "U+202E"),  # right-to-left override
        ("\u2066", "U+2066"),  # left-to-right isolate
        ("\u00ad", "U+00AD"),  # soft hyphen
        ("\ufeff", "U+FEFF"),  # zero-width no-break space
        ("\u200d", "U+200D"),  # a zero-width joiner between letters
        ("\x1b", "U+001B"),  # escape
        ("\u2028", "U+2028"),  # line separator
    ],
)
def test_invisible_and_direction_changing_names_are_refused_naming_the_code_point(col, char, code):
    for user, name, kind in (("alice", f"ca{char}ts", "class"), (f"al{char}ice", "cats", "user")):
        with pytest.raises(UsageError, match=f"{kind} name .*{re.escape(code)}"):
            col.kb.create_class(user, name)
    with pytest.raises(UsageError, match=re.escape(code)):
        col.kb.user_id(f"bo{char}b")
    assert col.kb.users() == [] and col.kb.classes() == []


def test_emoji_sequences_and_accents_are_names_like_any_other(col):
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467 family"  # joined by U+200D
    for name in (
        family,
        "Zoé",
        "\u0645\u0631\u062d\u0628\u0627",
        "\U0001f9d1\U0001f3fd\u200d\U0001f680",
    ):
        assert col.kb.create_class("alice", name).name == name


def test_a_name_stored_before_the_rule_can_still_be_read(col):
    col.kb.create_class("alice", "cats")
    # written as an older version did, before invisible characters were refused
    col.kb._db.execute("UPDATE classes SET name = 'ca\u200bts'")
    ref = col.kb.get_class("alice", "ca\u200bts")
    col.kb.label("alice", "ca\u200bts", [1], 1)
    assert len(col.kb.labels(ref)) == 1
    assert col.session("alice", "ca\u200bts").ref.id == ref.id


def test_an_unknown_class_or_user_lists_the_names_there_are_and_creates_nothing(col):
    kb = col.kb
    kb.create_class("alice", "cats")
    kb.create_class("alice", "dogs")
    kb.create_class("bob", "boats")
    kb.create_class("bob", "private")
    kb.share("bob", "boats")
    users, classes = kb.users(), kb.classes()
    with pytest.raises(UsageError) as e:
        kb.get_class("alice", "birds")
    assert str(e.value) == (
        "alice has no class named 'birds' (use one of 'cats', 'dogs', 'bob/boats')"
    )
    with pytest.raises(UsageError) as e:
        kb.get_class("zed", "cats")
    assert str(e.value) == (
        "no user named 'zed' in this collection (users: 'alice', 'bob'; "
        "shared classes: 'bob/boats')"
    )
    with pytest.raises(UsageError, match="no user named 'zed'"):
        kb.user_id("zed", create=False)
    with pytest.raises(UsageError, match="no user named 'zed'"):
        kb.summaries("zed")
    assert kb.get_class("zed", "bob/boats").owner == "bob"  # shared: readable by anyone
    assert (kb.users(), kb.classes()) == (users, classes)


def test_summaries_count_current_labels_models_and_applied_items(col):
    s = col.session("alice", "cats")
    s.label([1, 2, 3], 1)
    s.label([3], -1)  # changed its mind: the latest label counts
    s.label([4, 5], -1)
    s.label([5], 0)  # cleared
    assert [r["class"] for r in col.kb.summaries("alice")] == ["cats"]
    (row,) = col.kb.summaries("alice")
    assert (row["relevant"], row["not_relevant"], row["models"], row["latest_model"]) == (
        2,
        2,
        0,
        None,
    )
    m1 = s.train()
    m2 = s.train()
    s.apply(0.0)
    (row,) = col.kb.summaries()
    assert row["models"] == 2 and row["latest_model"]["id"] == m2.id != m1.id
    assert row["latest_model"]["quality"] == m2.quality and row["applied"] == len(col)
    assert row["class"] == "alice/cats" and row["copied_from"] is None
    col.kb.share("alice", "cats")
    col.kb.copy_class("bob", "alice/cats", "my cats")
    rows = {r["class"]: r for r in col.kb.summaries("bob")}
    assert set(rows) == {"my cats", "alice/cats"}
    assert rows["my cats"]["copied_from"] == "alice/cats"
    assert (rows["my cats"]["relevant"], rows["my cats"]["not_relevant"]) == (2, 2)
