"""The feedback classifier respects what the user said: labels a linear model can separate are
all right after training, the ones it cannot are counted, and pseudo-negatives never outvote."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from skimage import data as photos

from snoop_nb import open_collection
from snoop_nb.learn import train
from snoop_nb.learn.classifier import label_mistakes, sample_weights

#: scikit-image photographs shipped with the package (no download): 20 x 15 crops = 300.
BASES = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
    "cell",
)


def make_distinct_photos(folder: Path, per_photo: int = 15, size: int = 96, seed: int = 0):
    """``len(BASES) * per_photo`` distinct pictures: crops of each photograph at random
    positions and scales, some mirrored, with their colour and brightness changed."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in BASES:
        base = Image.fromarray(getattr(photos, name)()).convert("RGB")
        w, h = base.size
        for i in range(per_photo):
            s = rng.uniform(0.35, 0.9)
            cw, ch = int(w * s), int(h * s)
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = base.crop((x, y, x + cw, y + ch)).resize((size, size), Image.Resampling.BILINEAR)
            if rng.random() < 0.5:
                img = ImageOps.mirror(img)
            img = ImageEnhance.Color(img).enhance(rng.uniform(0.5, 1.5))
            img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
            img.save(folder / f"{name}_{i:02d}.png")


@pytest.fixture(scope="module")
def photo_col(tmp_path_factory, default_embedder):
    root = tmp_path_factory.mktemp("distinct")
    make_distinct_photos(root / "photos")
    # one picture twice under two names: the same vector, to be labelled both ways
    shutil.copy(root / "photos" / "coffee_00.png", root / "photos" / "coffee_00_copy.png")
    with open_collection(root / "col", create=True, embedder=default_embedder) as c:
        report = c.add([root / "photos"], progress=False)
        assert len(c) == 301, report
        yield c


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("query", [0, 100, 250])
def test_near_neighbours_labelled_both_ways_rank_as_labelled(photo_col, query):
    """The issue's scenario: the 6 nearest neighbours of one picture relevant, the next 6 not;
    the ranking puts every relevant item above every not-relevant one, and says 0 mistakes."""
    col = photo_col
    items = col.items()
    ids = items.loc[~items["uri"].str.endswith("_copy.png"), "id"].to_numpy(np.int64)
    x = col.vectors_of(ids)
    order = ids[np.argsort(-(x @ x[query]), kind="stable")]
    assert order[0] == ids[query]
    relevant, not_relevant = order[1:7], order[7:13]
    s = col.session("alice", f"near {query}")
    s.label(relevant, +1)
    s.label(not_relevant, -1)
    m = s.train()
    ranking = s.rank(60, exact=True)
    rank_of = dict(zip(ranking["id"], ranking["rank"], strict=True))
    assert set(relevant) <= set(rank_of), "a relevant item fell out of the top 60"
    worst_relevant = max(rank_of[i] for i in relevant)
    best_not_relevant = min((rank_of[i] for i in not_relevant if i in rank_of), default=10**9)
    assert worst_relevant < best_not_relevant
    assert m.quality["mistakes"]["count"] == 0
    assert m.quality["mistakes"]["relevant_below_not_relevant"] == 0
    assert m.quality["mistakes"]["not_relevant_above_relevant"] == 0
    prob = s.probabilities()
    assert (prob.loc[relevant] >= 0.5).all() and (prob.loc[not_relevant] < 0.5).all()
    assert m.quality["C"] >= s.C  # chosen from the grid, reported


@pytest.mark.slow
def test_one_picture_labelled_both_ways_is_reported_as_a_mistake(photo_col):
    col = photo_col
    items = col.items()
    uri = items.set_index("id")["uri"]
    original = int(items.loc[items["uri"].str.endswith("coffee_00.png"), "id"].iloc[0])
    copy = int(items.loc[items["uri"].str.endswith("coffee_00_copy.png"), "id"].iloc[0])
    assert np.array_equal(col.vectors_of([original]), col.vectors_of([copy]))
    others = [int(i) for i in items["id"] if "coffee_0" in uri[i] and i not in (original, copy)]
    far = [int(i) for i in items["id"] if "rocket_" in uri[i]][:4]
    s = col.session("alice", "coffee, contradicted")
    s.label([original, *others[:4]], +1)
    s.label([copy, *far], -1)
    m = s.train()
    mistakes = m.quality["mistakes"]
    assert mistakes["count"] >= 1  # one of the two copies is on the wrong side, said so
    assert mistakes["relevant_below_not_relevant"] + mistakes["not_relevant_above_relevant"] >= 1
    # the grid ran to its end and kept the fewest mistakes: the other labels are right
    assert mistakes["count"] == 1
    assert s.model().quality["mistakes"] == mistakes  # stored with the model in the KB


def test_labels_a_linear_model_separates_are_all_right_despite_pseudo_negatives():
    """Relevant and not relevant items all close together among 125 pseudo-negatives: the
    regularisation grid goes on until the labels are right, pseudo-negatives do not outvote."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        corpus = unit(np.abs(rng.normal(size=(300, 256))))
        near = unit(corpus[0] + 0.04 * np.abs(rng.normal(size=(12, 256))))
        pos, neg, pseudo = near[:6], near[6:], corpus[1:126]
        assert (near @ near.T).min() > 0.9  # hard: the labels are near duplicates
        m = train(pos, neg, pseudo)
        sp, sn = m.decision(pos), m.decision(neg)
        assert (sp >= 0).all() and (sn < 0).all() and sp.min() > sn.max()
        assert m.quality["mistakes"] == {
            "count": 0,
            "relevant_below_threshold": 0,
            "not_relevant_above_threshold": 0,
            "relevant_below_not_relevant": 0,
            "not_relevant_above_relevant": 0,
        }
        assert m.quality["C"] > 1.0 and m.params["C"] == m.quality["C"]


def test_easy_labels_keep_the_strongest_regularisation():
    rng = np.random.default_rng(0)
    pos = unit(rng.normal(1, 0.3, (10, 8)))
    neg = unit(rng.normal(-1, 0.3, (10, 8)))
    m = train(pos, neg, C=0.5)
    assert m.quality["C"] == 0.5 and m.quality["mistakes"]["count"] == 0


def test_contradicting_labels_are_counted():
    rng = np.random.default_rng(0)
    x = unit(rng.normal(size=(6, 16)))
    pos, neg = np.stack([x[0], x[1], x[2]]), np.stack([x[0], x[3], x[4]])
    m = train(pos, neg, x[5:])
    assert m.quality["mistakes"]["count"] == 1  # x[0] is on one side only
    # no step does better: the weakest one alone makes the same one mistake
    assert train(pos, neg, x[5:], c_steps=(1000.0,)).quality["mistakes"]["count"] == 1
    assert m.quality["C"] in (1.0, 10.0, 100.0, 1000.0)


def test_label_mistakes_counts_both_sides_and_the_ranking():
    got = label_mistakes(np.array([2.0, 0.5, -0.1]), np.array([0.7, -1.0, 0.0]))
    assert got == {
        "count": 3,  # -0.1 relevant below 0; 0.7 and 0.0 not relevant at or above 0
        "relevant_below_threshold": 1,
        "not_relevant_above_threshold": 2,
        "relevant_below_not_relevant": 2,  # 0.5 and -0.1 are below 0.7
        "not_relevant_above_relevant": 2,  # 0.7 and 0.0 are above -0.1
    }
    assert label_mistakes(np.array([1.0]), np.zeros(0))["count"] == 0


@pytest.mark.parametrize(("n_pos", "n_neg", "n_pseudo"), [(6, 6, 125), (3, 0, 27), (5, 40, 10)])
def test_pseudo_negatives_never_outweigh_the_labelled_negatives(n_pos, n_neg, n_pseudo):
    w = sample_weights(n_pos, n_neg, n_pseudo)
    wp, wn, wq = w[:n_pos], w[n_pos : n_pos + n_neg], w[n_pos + n_neg :]
    assert len(w) == n_pos + n_neg + n_pseudo and np.isclose(w.sum(), len(w))
    assert np.isclose(wp.sum(), wn.sum() + wq.sum())  # relevant and not relevant balanced
    if n_neg:
        assert wq.sum() <= wn.sum() + 1e-9 and wq.max() <= wn.min() + 1e-9
    else:
        assert np.isclose(wq.sum(), wp.sum())
