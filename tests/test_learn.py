"""Relevance feedback sessions: training, ranking (exact and HNSW), suggestions, applying."""

from __future__ import annotations

import numpy as np
import pytest

from snoop_nb import UsageError, open_collection
from snoop_nb.learn import STRATEGIES, train


@pytest.fixture
def col(tmp_path, default_embedder, photo_set):
    with open_collection(tmp_path / "col", create=True, embedder=default_embedder) as c:
        c.add([tmp_path / "photos"], progress=False, meta=lambda p: {"photo": p.parent.name})
        yield c


def ids_of(col, photo):
    items = col.items()
    return items.loc[items["photo"] == photo, "id"].tolist()


def test_feedback_from_one_example_ranks_the_class_first(col):
    cats = ids_of(col, "chelsea")
    s = col.session("alice", "cats")
    first = s.start(items=cats[:1])
    assert first["id"].iloc[0] == cats[0] and first["label"].iloc[0] == 1
    s.label(ids_of(col, "coffee")[:1], -1)
    m = s.train()
    assert (m.n_pos, m.n_neg) == (1, 1) and m.params["pseudo_negatives"] > 0
    top = s.rank(5)
    assert set(top["id"]) == set(cats)
    assert list(top.columns[:5]) == ["rank", "id", "uri", "score", "label"]


def test_positives_only_train_with_pseudo_negatives_and_report_quality(col):
    s = col.session("alice", "rockets")
    s.label(ids_of(col, "rocket")[:3], 1)
    m = s.train()
    assert m.n_neg == 0 and m.params["pseudo_negatives"] == 27
    assert m.quality["negatives"] == "pseudo" and m.quality["cv_folds"] >= 2
    # held-out rockets against held-out pseudo-negatives: a random ranking scores 3/30 (0.1);
    # the two rockets left unlabelled are among the pseudo-negatives, so 1.0 is out of reach
    assert m.quality["average_precision"] > 0.5 and m.quality["balanced_accuracy"] > 0.9
    assert m.quality["mistakes"]["count"] == 0
    assert set(s.rank(5)["id"]) == set(ids_of(col, "rocket"))
    assert len(s.history()) == 1


def test_one_label_gives_a_clear_message(col):
    s = col.session("alice", "lonely")
    s.label([3], 1)
    with pytest.raises(UsageError, match="at least 2 labelled items, 1 so far"):
        s.train()
    t = col.session("alice", "only no")
    t.label([1, 2], -1)
    with pytest.raises(UsageError, match="relevant"):
        t.train()


def test_cross_validated_quality_on_real_labels(col):
    s = col.session("alice", "coffee")
    s.label(ids_of(col, "coffee"), 1)
    s.label(ids_of(col, "astronaut") + ids_of(col, "camera"), -1)
    m = s.train()
    assert m.quality["negatives"] == "labelled" and m.quality["cv_folds"] == 3
    assert m.quality["average_precision"] > 0.9


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_suggestions_are_distinct_unlabelled_items(col, strategy):
    s = col.session("alice", "astronauts")
    astro = ids_of(col, "astronaut")
    s.label(astro[:2], 1)
    s.label(ids_of(col, "camera")[:2], -1)
    s.train()
    sug = s.suggest(9, strategy)
    assert len(sug) == 9 and sug["id"].is_unique
    assert not set(sug["id"]) & set(s.labels()["item_id"])
    assert (sug["label"] == 0).all()
    if strategy == "top":
        assert set(astro[2:]) <= set(sug["id"].iloc[:4])
    if strategy == "uncertain":
        scores = s.scores().loc[sug["id"]]
        assert (
            np.abs(scores).max()
            <= np.abs(s.scores().drop(s.labels()["item_id"])).sort_values().iloc[8] + 1e-6
        )


def test_uncertain_before_any_model_suggests_the_starting_querys_nearest_items(col):
    s = col.session("alice", "coffee")
    s.start(text="a cup of coffee")
    top = s.suggest(6, "top")
    assert (top["photo"].iloc[:4] == "coffee").all()
    uncertain = s.suggest(4, "uncertain")
    assert uncertain["id"].tolist() == top["id"].tolist()[:4]
    assert set(s.suggest(6, "mixed")["id"]) == set(top["id"])
    s.label(uncertain["id"], 1)  # still no model: the next page goes on down the ranking
    assert s.suggest(2, "uncertain")["id"].tolist() == top["id"].tolist()[4:]


def test_unknown_strategy_and_unknown_items_are_usage_errors(col):
    s = col.session("alice", "x")
    with pytest.raises(UsageError, match="unknown strategy"):
        s.suggest(3, "best")
    with pytest.raises(UsageError, match="no item with id 999"):
        s.label([1, 999], 1)
    with pytest.raises(UsageError, match="no model and no starting point"):
        s.rank(3)


def test_hnsw_ranking_agrees_with_exact_ranking(col):
    s = col.session("alice", "cameras")
    s.label(ids_of(col, "camera")[:2], 1)
    s.label(ids_of(col, "chelsea")[:2], -1)
    s.train()
    exact = s.rank(10, exact=True)
    approx = s.rank(10, exact=False)
    assert exact["id"].tolist()[:5] == approx["id"].tolist()[:5]
    assert np.allclose(exact["score"], approx["score"], atol=1e-3)
    scores = s.scores()
    assert len(scores) == len(col) and np.isclose(scores.max(), exact["score"].iloc[0], atol=1e-4)


def test_text_start_then_apply_writes_the_class_onto_the_corpus(col):
    s = col.session("alice", "coffee cups")
    first = s.start(text="a cup of coffee")
    assert (first["photo"].iloc[:5] == "coffee").all()
    s.label(ids_of(col, "coffee")[:2], 1)
    s.label(ids_of(col, "rocket")[:2], -1)
    m = s.train()
    # the model's probabilities computed here, from the vectors, in float64
    ids = col.ok_ids()
    x = col.vectors_of(ids).astype(np.float64)
    prob = 1 / (1 + np.exp(-(x @ m.weights.astype(np.float64) + m.bias)))
    n = s.apply(threshold=0.5)
    applied = s.applied()
    assert n == len(applied) == int((prob >= 0.5).sum())
    assert set(applied["item_id"]) == set(ids[prob >= 0.5])
    assert np.allclose(
        applied.set_index("item_id")["score"].loc[ids[prob >= 0.5]], prob[prob >= 0.5], atol=1e-3
    )  # the corpus is scored from float16 rows
    assert set(ids_of(col, "coffee")) <= set(applied["item_id"])
    assert not set(ids_of(col, "rocket")) & set(applied["item_id"])
    # a second application, at a threshold between two items' probabilities, replaces the first
    p = np.sort(prob)[::-1][:n]  # the applied ones, most probable first
    gaps = np.flatnonzero(p[:-1] - p[1:] > 1e-3)
    cut = gaps[len(gaps) // 2]
    threshold = float(p[cut] + p[cut + 1]) / 2
    assert 0 < s.apply(threshold=threshold) == cut + 1 < n
    assert set(s.applied()["item_id"]) == set(ids[prob >= threshold])


def test_train_function_follows_the_estimator_contract():
    rng = np.random.default_rng(0)
    pos = rng.normal(1, 0.3, (10, 8)).astype(np.float32)
    neg = rng.normal(-1, 0.3, (10, 8)).astype(np.float32)
    m = train(pos, neg)
    assert m.weights.shape == (8,) and (m.decision(pos) > 0).all() and (m.decision(neg) < 0).all()
    assert m.quality["cv_folds"] == 3 and m.quality["balanced_accuracy"] == 1.0
    with pytest.raises(UsageError, match="pseudo-negatives"):
        train(pos, neg[:0])


def test_training_from_the_previous_version_reaches_the_same_model():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (300, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = x[:, 0] + 0.3 * rng.normal(size=300) > 0.2
    first = train(x[:40][y[:40]], x[:40][~y[:40]], x[200:])
    cold = train(x[:80][y[:80]], x[:80][~y[:80]], x[200:])
    warm = train(x[:80][y[:80]], x[:80][~y[:80]], x[200:], init=(first.weights, first.bias))
    cos = warm.weights @ cold.weights / np.linalg.norm(warm.weights) / np.linalg.norm(cold.weights)
    assert cos > 0.999 and abs(warm.bias - cold.bias) < 0.01
    assert warm.params == cold.params and warm.params["warm_start"] is False
    assert abs(warm.quality["average_precision"] - cold.quality["average_precision"]) < 0.02
    mine = LogisticRegression(C=0.5)
    train(x[:80][y[:80]], x[:80][~y[:80]], estimator=mine, init=(first.weights, first.bias))
    assert not hasattr(mine, "coef_") and mine.get_params()["warm_start"] is False


def kb_rows(col) -> dict[str, int]:
    """How many users, classes, labels and models the knowledge base holds."""
    db = col.kb._db
    return {
        t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        for t in ("users", "classes", "labels", "models")
    }


def test_create_false_opens_existing_classes_only_and_writes_nothing(col):
    s = col.session("alice", "cats")
    s.label(ids_of(col, "chelsea")[:2], 1)
    col.session("bob", "rockets")
    before = kb_rows(col)
    with pytest.raises(UsageError, match=r"no user named 'carol'.*'alice', 'bob'"):
        col.session("carol", "cats", create=False)
    with pytest.raises(UsageError, match=r"alice has no class named 'dogs'.*'cats'"):
        col.session("alice", "dogs", create=False)
    assert kb_rows(col) == before
    again = col.session("alice", "cats", create=False)
    assert again.ref == s.ref and again.counts() == {"pos": 2, "neg": 0}
    assert not again.read_only
    assert kb_rows(col) == before


def test_a_shared_class_opens_read_only_with_its_owners_model(col):
    bob = col.session("bob", "cameras")
    bob.label(ids_of(col, "camera")[:2], 1)
    bob.label(ids_of(col, "chelsea")[:2], -1)
    bob.train()
    col.session("alice", "cats")
    with pytest.raises(UsageError, match="no class named 'bob/cameras'"):
        col.session("alice", "bob/cameras", create=False)  # not shared yet
    col.kb.share("bob", "cameras")
    before = kb_rows(col)
    seen = col.session("alice", "bob/cameras", create=False)
    assert seen.read_only and seen.ref.owner == "bob"
    mine = bob.rank(10, exact=True)
    theirs = seen.rank(10, exact=True)
    assert (
        theirs["id"].tolist() == mine["id"].tolist()
        and theirs["label"].tolist() == mine["label"].tolist()
    )
    assert seen.probabilities().equals(bob.probabilities())
    for write in (lambda: seen.label([0], 1), seen.train, seen.apply):
        with pytest.raises(UsageError, match="belongs to bob: copy it"):
            write()
    assert kb_rows(col) == before


def test_class_results_lists_the_best_items_then_the_applied_ones(col):
    from snoop_nb.export import class_results

    s = col.session("alice", "coffee")
    s.label(ids_of(col, "coffee")[:2], 1)
    s.label(ids_of(col, "rocket")[:2], -1)
    with pytest.raises(UsageError, match="not trained yet"):
        class_results(col, "alice", "coffee")
    s.train()
    prob = s.probabilities()
    res = class_results(col, "alice", "coffee", top=7)
    assert res.applied == 0 and res.applied_model_id is None
    assert res.total == len(col) and res.probabilities.equals(prob)
    assert (
        res.table["id"].tolist()
        == prob.sort_values(ascending=False, kind="stable").index[:7].tolist()
    )
    assert list(res.table.columns[:7]) == [
        "rank",
        "id",
        "uri",
        "name",
        "folder",
        "probability",
        "label",
    ]
    assert (res.table["folder"] == res.table["photo"]).all()
    labelled = {
        **dict.fromkeys(ids_of(col, "coffee")[:2], 1),
        **dict.fromkeys(ids_of(col, "rocket")[:2], -1),
    }
    assert res.table["label"].tolist() == [labelled.get(i, 0) for i in res.table["id"]]
    assert res.labels.to_dict() == labelled
    n = s.apply(0.5)
    res = class_results(col, "alice", "coffee")
    assert res.applied == n == len(res.table) and res.applied_model_id == s.model().id
    assert set(res.table["id"]) == set(prob.index[prob >= 0.5])
    assert np.allclose(res.table["probability"], prob.loc[res.table["id"]])


def test_a_class_starts_from_a_text_and_examples_together(col):
    from snoop_nb.search import query_vector

    s = col.session("alice", "cats and coffee")
    example = ids_of(col, "chelsea")[0]
    first = s.start(text="a cup of coffee", items=[example])
    # each part counts the same: the start is the mean of the two unit vectors
    t = query_vector(col, text="a cup of coffee")
    e = col.vectors_of([example])[0]
    want = t / np.linalg.norm(t) + e / np.linalg.norm(e)
    got = s._query
    assert np.allclose(got / np.linalg.norm(got), want / np.linalg.norm(want), atol=1e-5)
    assert s.labels().set_index("item_id")["value"].to_dict() == {example: 1}
    # both halves show in the first ranking: cat photographs and coffee cups
    top = set(first["photo"].iloc[:10])
    assert {"chelsea", "coffee"} <= top
    with pytest.raises(UsageError, match="start from a text"):
        col.session("alice", "nothing").start()
