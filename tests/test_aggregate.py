"""Labels weighted by reliability: several users' votes on a collaborative class, aggregated by
Dawid-Skene (or majority), kept in the knowledge base, trained from, shown and printed."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest

from snoop_nb import UsageError, open_collection
from snoop_nb.kb import KnowledgeBase
from snoop_nb.learn.aggregate import aggregate, one_user

#: (name, sensitivity, specificity): the benchmark's mix.
CROWD = (
    ("expert1", 0.95, 0.95),
    ("expert2", 0.95, 0.95),
    ("good1", 0.80, 0.80),
    ("good2", 0.75, 0.75),
    ("spammer", 0.55, 0.55),
    ("yes-man", 0.95, 0.55),
)


def simulated_votes(users, n=400, share=0.3, coverage=0.6, seed=0):
    """Votes of ``users`` on ``n`` items whose truth is known (each sees ``coverage``)."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < share
    rows = []
    for name, sens, spec in users:
        seen = np.flatnonzero(rng.random(n) < coverage)
        right = rng.random(len(seen)) < np.where(truth[seen], sens, spec)
        rows += [
            (int(i), name, 1 if t == r else -1)
            for i, t, r in zip(seen, truth[seen], right, strict=False)
        ]
    return pd.DataFrame(rows, columns=["item_id", "user", "value"]), truth


def accuracy(agg, truth) -> float:
    items = agg.items
    return float(np.mean((items["label"] > 0).to_numpy() == truth[items["item_id"].to_numpy()]))


# --- the aggregation ------------------------------------------------------------------------
def test_dawid_skene_recovers_the_truth_and_ranks_the_users_by_reliability():
    votes, truth = simulated_votes(CROWD)
    agg = aggregate(votes)
    assert agg.method == "dawid-skene" and agg.converged and agg.iterations < 50
    assert accuracy(agg, truth) > 0.93  # about 3.6 votes an item; majority: 0.91
    assert accuracy(agg, truth) > accuracy(aggregate(votes, "majority"), truth) + 0.02
    assert 0.2 < agg.prior < 0.4  # the share of relevant items, 0.3
    order = agg.users["user"].tolist()
    assert set(order[:2]) == {"expert1", "expert2"} and order[-1] == "spammer"
    rel = agg.users.set_index("user")
    assert rel.loc["expert1", "reliability"] > 0.9 and rel.loc["spammer", "reliability"] < 0.65
    # the yes-man is sensitive but not specific, and the estimate says so
    assert rel.loc["yes-man", "sensitivity"] > 0.85 and rel.loc["yes-man", "specificity"] < 0.7
    assert rel["labels"].to_dict() == votes.groupby("user").size().to_dict()
    # posteriors are calibrated enough: the items it is sure of are nearly all right
    sure = agg.items[(agg.items["probability"] > 0.95) | (agg.items["probability"] < 0.05)]
    assert len(sure) > 0.7 * len(agg.items)
    assert accuracy(type(agg)(**{**agg.__dict__, "items": sure}), truth) > 0.98


def test_dawid_skene_beats_majority_when_yes_men_outvote_an_expert():
    users = (("expert", 0.95, 0.95), ("yes-a", 0.95, 0.4), ("yes-b", 0.95, 0.4))
    ds, mv = [], []
    for seed in range(5):
        votes, truth = simulated_votes(users, coverage=1.0, seed=seed)
        ds.append(accuracy(aggregate(votes), truth))
        mv.append(accuracy(aggregate(votes, "majority"), truth))
    assert np.mean(ds) > np.mean(mv) + 0.1, (ds, mv)
    # EM can stop in the majority's local optimum (one seed of five here: 0.69), not below it
    assert np.median(ds) > 0.9 and all(d >= m for d, m in zip(ds, mv, strict=True))
    # and with the benchmark's crowd (a spammer and a yes-man among six) it is no worse
    votes, truth = simulated_votes(CROWD, seed=1)
    assert accuracy(aggregate(votes), truth) >= accuracy(aggregate(votes, "majority"), truth)


def test_one_user_is_that_users_labels():
    votes, _ = simulated_votes(CROWD[3:4], seed=2)
    for agg in (aggregate(votes), one_user(pd.concat([votes, votes.assign(user="x")]), "good2")):
        got = dict(zip(agg.items["item_id"], agg.items["label"], strict=True))
        assert got == dict(zip(votes["item_id"], votes["value"], strict=True))
        assert agg.method == "one user" and set(agg.items["probability"]) <= {0.0, 1.0}
        assert agg.users["user"].tolist() == ["good2"] and agg.disagreements().empty


def test_majority_counts_one_vote_each_and_leaves_ties_out():
    votes = pd.DataFrame(
        [(1, "a", 1), (1, "b", 1), (1, "c", -1), (2, "a", 1), (2, "b", -1), (3, "c", -1)],
        columns=["item_id", "user", "value"],
    )
    agg = aggregate(votes, "majority")
    assert agg.items["label"].tolist() == [1, 0, -1]
    assert agg.items["votes"].tolist() == [3, 2, 1]
    assert agg.items["probability"].round(3).tolist() == [0.667, 0.5, 0.0]
    pos, neg = agg.labels()
    assert (pos.tolist(), neg.tolist()) == ([1], [3])
    dis = agg.disagreements()
    assert dis["item_id"].tolist() == [2, 1]  # least agreed first
    assert dis["by_user"].tolist()[1] == {"a": 1, "b": 1, "c": -1}
    with pytest.raises(UsageError, match="unknown aggregation"):
        aggregate(votes, "vote")


# --- the knowledge base ---------------------------------------------------------------------
@pytest.fixture
def tiny_col(tmp_path, tiny_embedder, photo_set):
    with open_collection(tmp_path / "col", create=True, embedder=tiny_embedder) as c:
        c.add([tmp_path / "photos"], progress=False)
        yield c


def test_contributors_votes_are_kept_apart_and_survive_reopening(tiny_col, tmp_path):
    kb = tiny_col.kb
    kb.create_class("alice", "boats")
    kb.label("alice", "boats", [1, 2, 3], 1)
    kb.share("alice", "boats")  # read-only: as before
    with pytest.raises(UsageError, match="belongs to alice"):
        kb.label("bob", "alice/boats", [1], -1)
    ref = kb.share("alice", "boats", collaborative=True)
    assert ref.shared and ref.collaborative
    assert kb.create_class("bob", "alice/boats") == ref  # an open class is joined, not copied
    kb.label("bob", "alice/boats", [1, 4], -1)
    kb.label("bob", "alice/boats", [4], 1)  # bob changes his mind: his latest row counts
    kb.label("carol", "alice/boats", [1, 2], 1)
    kb.label("carol", "alice/boats", [2], 0)  # carol clears her vote; alice's stays
    with pytest.raises(UsageError, match="belongs to alice"):
        kb.share("bob", "alice/boats")  # sharing stays the owner's

    def state(kb):
        votes = kb.votes(ref)
        return sorted(zip(votes["item_id"], votes["user"], votes["value"], strict=True))

    expected = [
        (1, "alice", 1), (1, "bob", -1), (1, "carol", 1),
        (2, "alice", 1), (3, "alice", 1), (4, "bob", 1),
    ]  # fmt: skip
    assert state(kb) == expected
    assert kb.voters(ref) == ["alice", "bob", "carol"]
    assert kb.labels(ref, user="bob")[["item_id", "value"]].values.tolist() == [[1, -1], [4, 1]]
    assert len(kb.label_history(ref)) == 9  # never a row lost
    dis = kb.disagreements(ref)
    assert dis["item_id"].tolist() == [1]
    assert dis["by_user"][0] == {"alice": 1, "bob": -1, "carol": 1}
    assert set(kb.reliability(ref)["user"]) == {"alice", "bob", "carol"}

    tiny_col.close()
    with open_collection(tmp_path / "col") as again:
        assert again.kb.get_class("bob", "alice/boats").collaborative
        assert state(again.kb) == expected
        again.kb.share("alice", "boats", collaborative=False)  # read-only again, votes kept
        with pytest.raises(UsageError, match="belongs to alice"):
            again.kb.label("bob", "alice/boats", [5], 1)
        assert state(again.kb) == expected


def test_concurrent_contributors_each_keep_every_vote(tiny_col):
    kb = tiny_col.kb
    kb.create_class("alice", "crowd")
    kb.share("alice", "crowd", collaborative=True)
    users = [f"user{i}" for i in range(4)]
    for u in users:
        kb.user_id(u)

    def work(user: str) -> None:
        own = KnowledgeBase(kb.path)  # a connection of its own, as another process has
        try:
            for i in range(40):
                own.label(user, "alice/crowd", [i], 1 if (i + len(user)) % 2 else -1)
        finally:
            own.close()

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    votes = kb.votes(kb.get_class("alice", "crowd"))
    assert len(votes) == 4 * 40 and votes.groupby("user").size().tolist() == [40] * 4


# --- training from the aggregate, the explorer and the CLI ------------------------------------
@pytest.fixture
def col(tmp_path, default_embedder, photo_set):
    with open_collection(tmp_path / "col", create=True, embedder=default_embedder) as c:
        c.add([tmp_path / "photos"], progress=False, meta=lambda p: {"photo": p.parent.name})
        yield c


def ids_of(col, photo):
    items = col.items()
    return items.loc[items["photo"] == photo, "id"].tolist()


def crowd_labels_cats(col):
    """alice's collaborative 'cats': alice and bob label right, mallory the opposite of the
    truth on the items she sees; returns the ids of the cats and of the rest."""
    cats = ids_of(col, "chelsea")
    rest = [i for i in col.ok_ids().tolist() if i not in cats]
    alice = col.session("alice", "cats")
    col.kb.share("alice", "cats", collaborative=True)
    bob = col.session("bob", "alice/cats", create=False)
    mallory = col.session("mallory", "alice/cats", create=False)
    assert not bob.read_only and not mallory.read_only
    for s in (alice, bob):
        s.label(cats[:4], +1)
        s.label(rest[:8], -1)
    mallory.label(cats[:4], -1)
    mallory.label(rest[:4], +1)
    return alice, bob, cats, rest


def test_a_collaborative_class_trains_from_the_weighted_aggregate(col):
    alice, bob, cats, _rest = crowd_labels_cats(col)
    assert bob.counts() == {"pos": 4, "neg": 8}  # bob's own votes
    assert bob.rank(5, exact=True)["label"].isin([1, -1, 0]).all()
    m = bob.train()  # a contributor trains too; the model is the class's
    assert m.params["labels"]["method"] == "dawid-skene" and m.params["labels"]["weighted"]
    assert m.params["labels"]["users"] == ["alice", "bob", "mallory"]
    assert m.params["labels"]["disagreements"] == 8
    assert (m.n_pos, m.n_neg) == (4, 8)  # the aggregate sides with alice and bob
    assert set(alice.rank(5, exact=True)["id"]) == set(cats)
    rel = col.kb.reliability(alice.ref).set_index("user")["reliability"]
    assert rel["mallory"] < 0.5 < min(rel["alice"], rel["bob"])
    with pytest.raises(UsageError, match="belongs to alice"):
        bob.apply()  # applying stays the owner's
    assert alice.apply() > 0
    maj = col.session("alice", "cats", aggregation="majority").train()
    assert maj.params["labels"]["method"] == "majority"
    # a class with one voter trains as before, with nothing recorded about voters
    solo = col.session("carol", "rockets")
    solo.label(ids_of(col, "rocket")[:3], 1)
    assert "labels" not in solo.train().params


def test_explorer_and_snoop_votes_show_the_disagreements(col, capsys):
    from snoop_nb.cli import main
    from snoop_nb.ui.explore import ClassExplorer

    alice, _, cats, _ = crowd_labels_cats(col)
    alice.train()
    explorer = ClassExplorer(col, "bob")
    explorer.show_class("alice/cats")
    shown = explorer.votes.value
    assert "Users&#x27; reliability" in shown or "Users' reliability" in shown
    assert "Disagreements (8 items)" in shown and "mallory -1" in shown
    assert f"<td>{cats[0]}</td>" in shown and "mallory" in shown
    solo = col.session("bob", "mugs")
    solo.label(ids_of(col, "coffee")[:3], 1)
    solo.train()
    explorer.show_class("mugs")
    assert explorer.votes.value == ""  # one voter: nothing to weigh

    # in the app, a contributor's clicks on an open class are their own votes
    from snoop_nb.ui import App

    app = App(col, user="dan", warm_up=False)
    titles = {i["value"]: i["title"] for i in app.trainer.classes.items}
    assert titles["alice/cats"] == "alice/cats (shared, open to your labels)"
    app.trainer.classes.v_model = "alice/cats"
    assert app.grid.session is not None and app.trainer.apply_btn.disabled
    assert app.trainer.share.disabled  # sharing stays the owner's
    app.grid.label(cats[4], +1)
    votes = col.kb.votes(alice.ref)
    assert votes[votes["user"] == "dan"][["item_id", "value"]].values.tolist() == [[cats[4], 1]]
    row = next(r for r in col.kb.summaries("dan") if r["class"] == "alice/cats")
    assert (row["collaborative"], row["voters"], row["relevant"]) == (True, 4, 5)

    root = str(col.root)
    col.close()
    assert main(["votes", "--collection", root, "--user", "bob", "--class", "alice/cats",
                 "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "dawid-skene" and out["n_disagreements"] == 8
    assert [u["user"] for u in out["users"]][-1] == "mallory"
    assert out["disagreements"][0]["by_user"]["mallory"] in (1, -1)
    assert main(["votes", "--collection", root, "--user", "bob", "--class", "alice/cats"]) == 0
    text = capsys.readouterr().out
    assert "voted by 4 users" in text and "8 items with disagreeing votes" in text


def test_the_trainer_opens_a_class_to_others_labels_and_closes_it(tiny_col):
    """The dashboard's switch: the owner opens a class to every user's labels; another user's
    clicks on it are then his votes, kept apart; closed again, it is shared read-only."""
    from snoop_nb.ui import App

    col = tiny_col
    ids = col.ok_ids().tolist()
    owner = App(col, user="olga", warm_up=False)
    owner.trainer.create("boats")
    owner.grid.label(ids[0], 1)
    trainer = owner.trainer
    assert not trainer.collab.disabled and not trainer.collab.v_model
    trainer.collab.v_model = True  # open to others: shared too
    ref = col.kb.get_class("olga", "boats")
    assert ref.shared and ref.collaborative and trainer.share.v_model
    assert "every user's labels are votes" in trainer.status.children[0]

    guest = App(col, user="gus", warm_up=False)
    titles = {i["value"]: i["title"] for i in guest.trainer.classes.items}
    assert titles["olga/boats"] == "olga/boats (shared, open to your labels)"
    guest.trainer.classes.v_model = "olga/boats"
    assert guest.grid.session is not None  # his clicks label: they are his votes
    assert guest.trainer.collab.disabled and guest.trainer.share.disabled  # the owner's switches
    guest.grid.label(ids[1], 1)
    guest.grid.label(ids[0], -1)
    votes = col.kb.votes(ref)
    mine = votes[votes["user"] == "gus"].set_index("item_id")["value"].to_dict()
    assert mine == {ids[1]: 1, ids[0]: -1}
    assert votes[votes["user"] == "olga"].set_index("item_id")["value"].to_dict() == {ids[0]: 1}

    trainer.collab.v_model = False  # closed: shared read-only, every vote kept
    ref = col.kb.get_class("olga", "boats")
    assert ref.shared and not ref.collaborative and trainer.share.v_model
    assert len(col.kb.votes(ref)) == 3
    trainer.collab.v_model = True
    trainer.share.v_model = False  # not shared at all: not open to others either
    ref = col.kb.get_class("olga", "boats")
    assert not ref.shared and not ref.collaborative and not trainer.collab.v_model
