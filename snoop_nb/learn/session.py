"""A relevance-feedback session: one user shaping one personal visual class.

>>> s = collection.session("alice", "lighthouses")          # doctest: +SKIP
>>> s.start(text="a lighthouse")                            # doctest: +SKIP
>>> s.suggest(20, "mixed")                                  # doctest: +SKIP
>>> s.label([3, 17], +1); s.label([8], -1)                  # doctest: +SKIP
>>> s.train(); s.rank(100)                                  # doctest: +SKIP
>>> s.apply(threshold=0.5)                                  # doctest: +SKIP

Before the first training, ranking and suggestions follow the starting query (a text, an
image or the mean of the relevant items); afterwards they follow the latest classifier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import UsageError
from snoop_nb.learn import classifier
from snoop_nb.learn.rank import exact_scores, rescore, top_exact, top_hnsw

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.collection import Collection
    from snoop_nb.kb import ModelRecord

STRATEGIES = ("top", "uncertain", "diverse", "mixed")


class FeedbackSession:
    """Label, train, rank, suggest and apply one class of one user (see module docstring).

    Every label is written to the knowledge base as it is given; the session itself holds
    only the starting query and caches, so it can be dropped and re-opened at any time.

    ``create=False`` opens an existing class only: an unknown user or class raises
    :class:`UsageError` listing the names there are, and nothing is written. It also opens a
    class another user shares (``"owner/name"``) read-only: it ranks, scores and suggests
    with the owner's model and labels; labelling, training and applying it are refused.
    ``C`` is the strongest regularisation training tries (see :func:`classifier.train`).

    A collaborative class (shared by its owner with ``collaborative=True``) is labelled by
    every user who opens it: :meth:`label` writes this user's votes, :meth:`labels` shows
    them, and once several users have voted :meth:`train` learns from their aggregate
    (``aggregation``: ``"dawid-skene"``, votes weighted by each user's estimated reliability,
    or ``"majority"``), each label weighted by the aggregate's confidence in it; the model's
    ``params["labels"]`` records the method and the users. Applying it stays the owner's.
    """

    def __init__(
        self,
        col: Collection,
        user: str,
        class_name: str,
        *,
        description: str = "",
        pseudo_negatives: int = 500,
        C: float = 1.0,
        seed: int = 0,
        create: bool = True,
        aggregation: str = "dawid-skene",
    ):
        from snoop_nb.learn.aggregate import METHODS

        if aggregation not in METHODS:
            raise UsageError(
                f"unknown aggregation {aggregation!r}: use one of {', '.join(METHODS)}"
            )
        self.aggregation = aggregation
        self.col = col
        self.kb = col.kb
        self.user = user
        if create:
            self.ref = self.kb.create_class(user, class_name, description)
        else:  # never writes: an unknown user or class is a UsageError listing the names
            self.ref = self.kb.get_class(user, class_name)
        self.pseudo_negatives = pseudo_negatives
        self.C = C
        self.seed = seed
        self._query: np.ndarray | None = None

    def __repr__(self) -> str:
        n = self.counts()
        return f"<FeedbackSession {self.ref} +{n['pos']} -{n['neg']}>"

    # --- starting point -----------------------------------------------------------------
    def start(
        self, *, text: str | None = None, image: Any = None, items: list[int] | None = None
    ) -> pd.DataFrame:
        """Start from a text, an image, or items taken as relevant, or several of them
        together; returns the first ranking.

        Given together, each part counts the same: the starting vector is the mean of the
        unit vectors of the text's query, the image's and the items' mean (measured on the
        demo and the emoji set, a text and one example together beat either alone: mean AP
        0.40 and 0.30 against 0.34 and 0.28 for the example; README, *Quality*). Items are
        labelled relevant.
        """
        from snoop_nb.search import query_vector

        parts = []
        if items:
            self.label(items, +1)
            parts.append(self.col.vectors_of(items).mean(axis=0))
        if text is not None:
            parts.append(query_vector(self.col, text=text))
        if image is not None:
            parts.append(query_vector(self.col, image=image))
        if not parts:
            raise UsageError("start from a text, an image or items (or several of them)")
        units = [np.asarray(p, np.float32) / max(float(np.linalg.norm(p)), 1e-12) for p in parts]
        self.set_start(np.mean(units, axis=0))
        return self.rank(50)

    def set_start(self, vector: Any) -> None:
        """Take ``vector`` (a query vector of this collection) as the starting point that
        ranks and suggests until the first model, without ranking anything now."""
        v = np.asarray(vector, np.float32).reshape(-1)
        if v.size != self.col.dim:
            raise UsageError(f"the starting vector has {v.size} values, not {self.col.dim}")
        self._query = v

    @property
    def read_only(self) -> bool:
        """Whether the class is another user's (shared) and not open to contributions: it can
        be used, not changed."""
        return not self._owned() and not self.ref.collaborative

    def _owned(self) -> bool:
        from snoop_nb.kb import check_name

        return self.ref.owner == check_name("user", self.user, new=False)

    def _check_writable(self, to: str, *, owner_only: bool = False) -> None:
        if not self._owned():
            self.ref = self.kb.class_by_id(self.ref.id)  # its owner may have opened it since
        if self.read_only or (owner_only and not self._owned()):
            raise UsageError(
                f"{self.ref} belongs to {self.ref.owner}: copy it into your own classes to "
                f"{to} (kb.copy_class({self.user!r}, {str(self.ref)!r}))"
            )

    # --- labels -------------------------------------------------------------------------
    def label(self, ids, value: int, *, source: str = "click") -> int:
        """Mark items relevant (+1), not relevant (-1) or unlabelled (0); committed at once."""
        self._check_writable("label it")
        ids = [int(ids)] if np.isscalar(ids) else [int(i) for i in ids]
        if ids:
            unknown = np.asarray(ids)[~self.col.is_live(ids)]
            if unknown.size:
                raise UsageError(f"no item with id {int(unknown[0])} in this collection")
        name = self.ref.name if self._owned() else str(self.ref)
        return self.kb.label(self.user, name, ids, value, source=source)

    def labels(self) -> pd.DataFrame:
        """Current labels: item_id, value, time, source, user (this user's own votes; a
        read-only class's labels are its owner's)."""
        if self.read_only:
            return self.kb.labels(self.ref)
        return self.kb.labels(self.ref, user=self.user)

    def counts(self) -> dict[str, int]:
        lab = self.labels()
        return {"pos": int((lab["value"] > 0).sum()), "neg": int((lab["value"] < 0).sum())}

    def _labelled(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids of live positives and negatives (labels of deleted items are kept, not used)."""
        lab = self.labels()
        lab = lab[self.col.is_live(lab["item_id"].to_numpy())]
        pos = lab.loc[lab["value"] > 0, "item_id"].to_numpy(np.int64)
        neg = lab.loc[lab["value"] < 0, "item_id"].to_numpy(np.int64)
        return pos, neg

    # --- training -----------------------------------------------------------------------
    def train(self) -> ModelRecord:
        """Train a classifier on the current labels, store it as a new version, return it.

        With positives only, pseudo-negatives are drawn at random from the unlabelled corpus.
        The solver starts from the previous version, which a round's new labels move little.
        The model's ``quality`` holds the cross-validated estimates, the regularisation
        chosen (``C``) and the labels it still gets wrong (``mistakes``, see
        :func:`classifier.label_mistakes`).
        """
        self._check_writable("train it")
        pos, neg, confidence, summary = self._training_labels()
        if len(pos) + len(neg) < classifier.MIN_LABELS:
            raise UsageError(
                f"{self.ref}: training needs at least {classifier.MIN_LABELS} labelled items, "
                f"{len(pos) + len(neg)} so far: mark a few relevant or not relevant first"
            )
        pseudo_ids = self._pseudo_negative_ids(pos, neg)
        previous = self.model()
        model = classifier.train(
            self.col.vectors_of(pos),
            self.col.vectors_of(neg),
            self._pseudo_vectors(pseudo_ids) if len(pseudo_ids) else None,
            C=self.C,
            seed=self.seed,
            init=None if previous is None else (previous.weights, previous.bias),
            confidence=confidence,
        )
        params = {**model.params, "embedder": self.col.embedder_id}
        if summary is not None:
            params["labels"] = summary
        return self.kb.save_model(
            self.ref,
            weights=model.weights,
            bias=model.bias,
            n_pos=model.n_pos,
            n_neg=model.n_neg,
            params=params,
            quality=model.quality,
        )

    def _training_labels(self):
        """Live positives and negatives to train on, their confidence and what the model
        records of them: one voter's labels as they are (confidence and record None), several
        voters' aggregate (:meth:`KnowledgeBase.aggregate`)."""
        votes = self.kb.votes(self.ref)
        if votes["user"].nunique() <= 1:
            lab = self.kb.labels(self.ref)
            lab = lab[self.col.is_live(lab["item_id"].to_numpy())]
            pos = lab.loc[lab["value"] > 0, "item_id"].to_numpy(np.int64)
            neg = lab.loc[lab["value"] < 0, "item_id"].to_numpy(np.int64)
            return pos, neg, None, None
        from snoop_nb.learn.aggregate import aggregate

        agg = aggregate(votes, self.aggregation)
        pos, neg = agg.labels()
        pos = pos[self.col.is_live(pos)] if len(pos) else pos
        neg = neg[self.col.is_live(neg)] if len(neg) else neg
        summary = {**agg.summary(), "weighted": True}
        return pos, neg, (agg.confidence(pos), agg.confidence(neg)), summary

    def _pseudo_negative_ids(self, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
        """Unlabelled items drawn at random: as many as needed to balance what is missing."""
        want = self.pseudo_negatives if len(neg) < len(pos) else self.pseudo_negatives // 4
        if want <= 0:
            return np.zeros(0, np.int64)
        live = self.col.ok_ids()
        labelled = np.concatenate([pos, neg])
        want = min(want, live.size - labelled.size)
        if want <= 0:
            return np.zeros(0, np.int64)
        rng = np.random.default_rng(self.seed + len(pos) + len(neg))
        if live.size > RESERVOIR_ABOVE:
            # Draws from a fixed random reservoir of the corpus: its vectors, read once, stay
            # in the page cache, where fresh draws from 10M items would each read the disk.
            pool = self._reservoir(live)
            pool = pool[~np.isin(pool, labelled)]
            if pool.size >= want:
                return np.sort(rng.choice(pool, size=want, replace=False))
        # draw positions at random and drop labelled items: no pass over the whole corpus
        drawn = np.zeros(0, np.int64)
        while drawn.size < want:
            extra = rng.choice(
                live.size, size=min(live.size, 2 * want + labelled.size), replace=False
            )
            cand = np.setdiff1d(live[extra], labelled)
            drawn = np.union1d(drawn, cand)
        return np.sort(rng.choice(drawn, size=want, replace=False))

    def _reservoir(self, live: np.ndarray) -> np.ndarray:
        """:data:`RESERVOIR` live ids drawn at random once per corpus size (sorted), their
        vectors read once, in one ordered pass, and kept (float16: 10 MB at 1280-d)."""
        held = self.col._pseudo_reservoir
        if held is None or held[0] != live.size:
            rng = np.random.default_rng(self.seed)
            ids = np.sort(live[rng.choice(live.size, RESERVOIR, replace=False)])
            held = (live.size, ids, np.asarray(self.col.vectors[ids]))
            self.col._pseudo_reservoir = held  # shared by the collection's sessions
        return held[1]

    def _pseudo_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The vectors of pseudo-negatives ``ids``: from the reservoir when they are its."""
        held = self.col._pseudo_reservoir
        if held is not None:
            pos = np.searchsorted(held[1], ids)
            if (pos < len(held[1])).all() and (
                held[1][np.minimum(pos, len(held[1]) - 1)] == ids
            ).all():
                return held[2][pos].astype(np.float32)
        return self.col.vectors_of(ids)

    def model(self) -> ModelRecord | None:
        """The latest trained version of this class, if any."""
        return self.kb.latest_model(self.ref)

    def history(self) -> pd.DataFrame:
        """Every trained version: counts and quality estimates."""
        return self.kb.models(self.ref)

    # --- scoring ------------------------------------------------------------------------
    def _direction(self) -> tuple[np.ndarray, float]:
        """The current linear scorer: the latest model, else the starting query."""
        m = self.model()
        if m is not None:
            if len(m.weights) != self.col.dim:
                raise UsageError(f"{self.ref}'s model was trained on another embedder")
            return m.weights, m.bias
        if self._query is None:
            pos, _ = self._labelled()
            if len(pos) == 0:
                raise UsageError(
                    f"{self.ref} has no model and no starting point: call start(...) or label items"
                )
            self._query = self.col.vectors_of(pos).mean(axis=0)
        q = np.asarray(self._query, np.float32)
        return q / (np.linalg.norm(q) or 1.0), 0.0

    def scores(self) -> pd.Series:
        """The current score of every live item (index: item id), exact."""
        import pandas as pd

        w, b = self._direction()
        ids, s = exact_scores(self.col, w, b)
        return pd.Series(s, index=pd.Index(ids, name="id"), name="score")

    def probabilities(self) -> pd.Series:
        """The latest model's probability for every live item (index: item id): the logistic
        of its score, what :meth:`apply` compares with its threshold."""
        import pandas as pd

        m = self._trained()
        ids, s = exact_scores(self.col, m.weights, m.bias)
        return pd.Series(
            classifier.probability(s), index=pd.Index(ids, name="id"), name="probability"
        )

    def _trained(self) -> ModelRecord:
        m = self.model()
        if m is None:
            raise UsageError(f"{self.ref} is not trained yet: train it first")
        if len(m.weights) != self.col.dim:
            raise UsageError(f"{self.ref}'s model was trained on another embedder")
        return m

    def rank(
        self, k: int = 100, *, exact: bool | None = None, unlabelled_only: bool = False
    ) -> pd.DataFrame:
        """The ``k`` best items by the current scorer, with their label (+1/-1/0) as a column.

        ``exact=None`` scores exactly below ``EXACT_SEARCH_BELOW`` items, through HNSW above.
        """
        from snoop_nb.search import EXACT_SEARCH_BELOW, results_frame

        w, b = self._direction()
        exclude = np.concatenate(self._labelled()) if unlabelled_only else None
        if exact is None:
            exact = len(self.col) < EXACT_SEARCH_BELOW
        ids, scores = (top_exact if exact else top_hnsw)(self.col, w, b, k, exclude)
        return self._with_labels(results_frame(self.col, ids, scores))

    def _with_labels(self, df: pd.DataFrame) -> pd.DataFrame:
        lab = self.labels().set_index("item_id")["value"]
        df.insert(4, "label", df["id"].map(lab).fillna(0).astype(int))
        return df

    # --- suggestions --------------------------------------------------------------------
    def suggest(self, k: int = 20, strategy: str = "mixed") -> pd.DataFrame:
        """Unlabelled items worth labelling next.

        ``top``: the most likely positives. ``uncertain``: closest to the decision boundary.
        ``diverse``: spread over the positives' neighbourhoods (round robin over each relevant
        item's nearest unlabelled neighbours). ``mixed``: a third of each, then ``top``.

        Before the first model there is no boundary: ``uncertain`` (alone or in ``mixed``) then
        shows ``top``, the starting query's nearest items, and so does ``diverse`` until an item
        is marked relevant. The middle of a text query's ranking holds almost no positive, and a
        class cannot be trained before one is found.
        """
        from snoop_nb.search import results_frame

        if strategy not in STRATEGIES:
            raise UsageError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
        labelled = np.concatenate(self._labelled())
        if strategy == "mixed":
            picked: list[int] = []
            for part, n in (("top", k - 2 * (k // 3)), ("uncertain", k // 3), ("diverse", k // 3)):
                for i in self._suggest_ids(part, n, np.concatenate([labelled, picked])):
                    picked.append(int(i))
            if len(picked) < k:
                more = self._suggest_ids("top", k - len(picked), np.concatenate([labelled, picked]))
                picked.extend(int(i) for i in more)
            ids = np.asarray(picked[:k], np.int64)
        else:
            ids = self._suggest_ids(strategy, k, labelled)
        w, b = self._direction()
        scores = self.col.vectors_of(ids) @ w + b if len(ids) else np.zeros(0, np.float32)
        df = results_frame(self.col, ids, scores)
        return self._with_labels(df)

    def _suggest_ids(self, strategy: str, k: int, exclude: np.ndarray) -> np.ndarray:
        if k <= 0:
            return np.zeros(0, np.int64)
        exclude = np.asarray(exclude, np.int64)
        if strategy == "uncertain" and self.model() is None:
            strategy = "top"  # no boundary yet: see suggest()
        w, b = self._direction()
        if strategy == "top":
            top = top_exact if len(self.col) < _big() else top_hnsw
            return top(self.col, w, b, k, exclude)[0]
        if strategy == "uncertain":
            codes = self._codes()
            if codes is not None:  # a pool drawn at random, scored by the codes: see CODES_ABOVE
                ids, s = codes.approximate_scores(w, sample=UNCERTAIN_POOL, seed=self._draws())
                s += np.float32(b)
            else:
                ids, s = exact_scores(self.col, w, b)
            keep = ~np.isin(ids, exclude)
            ids, s = ids[keep], s[keep]
            if codes is not None and len(ids) > RESCORE_NEAR * k:  # the nearest, re-scored
                near = ids[np.argpartition(np.abs(s), RESCORE_NEAR * k - 1)[: RESCORE_NEAR * k]]
                ids, s = near, rescore(self.col, near, w, b)
            order = np.argsort(np.abs(s), kind="stable")[:k]
            return ids[order]
        # diverse: round robin over the neighbourhoods of the relevant items
        pos, _ = self._labelled()
        if len(pos) == 0:
            return self._suggest_ids("top", k, exclude)
        rng = np.random.default_rng(self.seed)
        seeds = rng.permutation(pos)[: max(1, min(len(pos), k))]
        per_seed = max(2, -(-k // len(seeds)) * 2) + len(exclude)
        index = self.col.index if len(self.col) >= _big() else self.col.exact_index()
        neigh, _ = index.search(self.col.vectors_of(seeds), min(per_seed, len(self.col)))
        chosen: list[int] = []
        taken = set(exclude.tolist())
        for col_ in range(neigh.shape[1]):
            for row in neigh[:, col_]:
                if row >= 0 and int(row) not in taken:
                    taken.add(int(row))
                    chosen.append(int(row))
                    if len(chosen) == k:
                        return np.asarray(chosen, np.int64)
        return np.asarray(chosen, np.int64)

    # --- applying -----------------------------------------------------------------------
    def apply(self, threshold: float = 0.5) -> int:
        """Write the class onto the corpus: every item whose probability >= ``threshold``.

        The probability is the logistic of the latest model's score. Replaces any earlier
        application of this class; returns how many items carry it now.
        """
        self._check_writable("apply it", owner_only=True)
        m = self.model()
        if m is None:
            raise UsageError(f"{self.ref} has no trained model yet: train() first")
        codes = self._codes()
        if codes is None:
            ids, s = exact_scores(self.col, m.weights, m.bias)
        else:
            # every item scored by its codes; those that may pass, and only they, exactly
            ids, approx = codes.approximate_scores(m.weights)
            approx += np.float32(m.bias)
            bar = classifier.logit(threshold) - codes.error_bound(m.weights)
            ids = ids[approx >= bar]
            s = np.concatenate(
                [rescore(self.col, ids[i : i + 65536], m.weights, m.bias)
                 for i in range(0, len(ids), 65536)]
                or [np.zeros(0, np.float32)]
            )  # fmt: skip
        prob = classifier.probability(s)
        keep = prob >= threshold
        return self.kb.set_applied(self.ref, ids[keep], prob[keep], m.id)

    def _codes(self):
        """The collection's compressed index when it is big enough for its codes to stand in
        for the full vectors in whole-corpus passes (:data:`CODES_ABOVE`), else None."""
        if len(self.col) <= CODES_ABOVE:
            return None
        index = self.col.index
        if getattr(index, "fitted", False) and hasattr(index, "approximate_scores"):
            return index
        return None

    def _draws(self) -> int:
        """A seed that changes with every label: each round draws another pool."""
        pos, neg = self._labelled()
        return self.seed + len(pos) + len(neg)

    def applied(self) -> pd.DataFrame:
        """The items this class was applied to, with their probability."""
        return self.kb.applied(self.ref)


#: Above this many items, a collection with compressed codes (``pca-sq8``) lets its codes
#: stand in for the full vectors where a pass over the whole corpus would read them all
#: (10M items: 25.6 GB): ``uncertain`` then looks in a random pool of :data:`UNCERTAIN_POOL`
#: items scored by their codes and re-scores the :data:`RESCORE_NEAR` x k nearest the boundary
#: exactly; ``apply`` scores every item by its codes and re-scores exactly those within the
#: codes' error bound of the threshold or above it.
CODES_ABOVE = 1_000_000
#: Above this many items, pseudo-negatives are drawn from a fixed random reservoir of
#: :data:`RESERVOIR` items (see ``_pseudo_negative_ids``).
RESERVOIR_ABOVE = 100_000
RESERVOIR = 4096
UNCERTAIN_POOL = 200_000
RESCORE_NEAR = 20


def _big() -> int:
    from snoop_nb.search import EXACT_SEARCH_BELOW

    return EXACT_SEARCH_BELOW
