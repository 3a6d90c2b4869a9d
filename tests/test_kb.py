"""The knowledge base: labels kept through kills and concurrent writers, odd names, sharing."""

from __future__ import annotations

import os
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
