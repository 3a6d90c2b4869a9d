"""Labels weighted by who gave them: several users' votes on a class aggregated into one label.

``dawid-skene`` (the default) is the EM of Dawid and Skene (1979, *Maximum likelihood
estimation of observer error-rates using the EM algorithm*, Applied Statistics 28:20-28) for
two classes: each user has a 2x2 confusion, their sensitivity (how often they say relevant of
a relevant item) and specificity (not relevant of an irrelevant one), estimated together with
each item's probability of being relevant. It starts from the majority vote, alternates the
items' posteriors (E) and the users' confusions and the class prior (M), and stops when no
posterior moves by more than ``tol``. The confusions are smoothed by a Beta prior of
:data:`PRIOR_STRENGTH` pseudo-labels at accuracy :data:`PRIOR_ACCURACY` (a user of few labels is
taken as fairly reliable, not as perfect or adversarial). ``majority`` counts one vote each;
``one user`` (:func:`one_user`) takes one user's labels, for comparison.

Written here rather than taken from crowd-kit, which would pull nltk and transformers.

>>> agg = aggregate(votes)          # votes: item_id, user, value (+1/-1)   # doctest: +SKIP
>>> agg.items                       # item_id, label, probability, votes, positive, agreement
>>> agg.users                       # user, labels, sensitivity, specificity, reliability
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from snoop_nb.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

METHODS = ("dawid-skene", "majority")
#: The confusions' prior: this many pseudo-labels per user and class side, at this accuracy.
PRIOR_STRENGTH = 4.0
PRIOR_ACCURACY = 0.7
MAX_ITER = 50
TOL = 1e-6


@dataclass
class Aggregate:
    """The aggregate of a class's votes.

    ``items``: item_id, label (+1, -1; 0 for an even tie), probability (that the item is
    relevant), votes (how many users voted), positive (how many said relevant), agreement
    (the share of its votes that agree with the label). ``users``: user, labels (the number
    of votes the estimate rests on), positive, sensitivity, specificity, reliability (their
    mean: 0.5 is chance, 1 always right), most reliable first. ``by_user``: the votes as an
    items x users matrix of +1/-1/0 (rows in ``items``' order, columns in ``user_names``').
    """

    method: str
    items: pd.DataFrame
    users: pd.DataFrame
    by_user: np.ndarray
    user_names: list[str]
    prior: float
    iterations: int
    converged: bool

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids of the items the aggregate calls relevant, and not relevant (ties left out)."""
        lab = self.items["label"].to_numpy()
        ids = self.items["item_id"].to_numpy(np.int64)
        return ids[lab > 0], ids[lab < 0]

    def confidence(self, ids: np.ndarray) -> np.ndarray:
        """How sure the aggregate is of the labels of ``ids``: the posterior of the label it
        gave (0.5 to 1)."""
        p = self.items.set_index("item_id")["probability"].reindex(ids).to_numpy(np.float64)
        return np.maximum(p, 1.0 - p)

    def disagreements(self) -> pd.DataFrame:
        """Items whose voters disagree, least agreed first: item_id, label, probability,
        votes, agreement and by_user (``{user: +1 or -1}``)."""
        split = (self.by_user > 0).any(axis=1) & (self.by_user < 0).any(axis=1)
        out = self.items[split].copy()
        out["by_user"] = [
            {u: int(v) for u, v in zip(self.user_names, row, strict=True) if v}
            for row in self.by_user[split]
        ]
        return out.sort_values(["agreement", "item_id"], kind="stable").reset_index(drop=True)

    def summary(self) -> dict:
        """What a model records of the labels it was trained from."""
        return {
            "method": self.method,
            "users": list(self.user_names),
            "items": len(self.items),
            "disagreements": int(
                ((self.by_user > 0).any(axis=1) & (self.by_user < 0).any(axis=1)).sum()
            ),
            "iterations": self.iterations,
        }


def aggregate(
    votes: pd.DataFrame,
    method: str = "dawid-skene",
    *,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
    prior_strength: float = PRIOR_STRENGTH,
    prior_accuracy: float = PRIOR_ACCURACY,
) -> Aggregate:
    """Aggregate ``votes`` (columns item_id, user, value: +1/-1; one row per user and item)
    by ``method`` (:data:`METHODS`). With one user the aggregate is that user's labels."""
    if method not in METHODS:
        raise UsageError(f"unknown aggregation {method!r}: use one of {', '.join(METHODS)}")
    item_ids, users, L = _matrix(votes)
    if len(users) <= 1:
        T = (L.sum(axis=1) > 0).astype(np.float64)  # one voice: taken as said
        return _result("one user" if users else method, item_ids, users, L, T, 0, True)
    T = _majority(L)
    if method == "majority":
        return _result(method, item_ids, users, L, T, 0, True)
    a = prior_strength * prior_accuracy  # pseudo-labels right
    b = prior_strength * (1 - prior_accuracy)  # and wrong
    said_pos, said_neg = (L > 0).astype(np.float64), (L < 0).astype(np.float64)
    converged, it = False, 0
    while it < max_iter:
        it += 1
        # M: the class prior and each user's confusion, from the current posteriors
        prior = (T.sum() + 1.0) / (len(T) + 2.0)
        sens = (said_pos.T @ T + a) / ((said_pos + said_neg).T @ T + a + b)
        spec = (said_neg.T @ (1 - T) + a) / ((said_pos + said_neg).T @ (1 - T) + a + b)
        # E: each item's posterior given its votes
        log_pos = np.log(prior) + said_pos @ np.log(sens) + said_neg @ np.log(1 - sens)
        log_neg = np.log(1 - prior) + said_neg @ np.log(spec) + said_pos @ np.log(1 - spec)
        new = 1.0 / (1.0 + np.exp(np.clip(log_neg - log_pos, -500, 500)))
        delta = float(np.abs(new - T).max()) if len(T) else 0.0
        T = new
        if delta < tol:
            converged = True
            break
    return _result(method, item_ids, users, L, T, it, converged, prior_strength, prior_accuracy)


def one_user(votes: pd.DataFrame, user: str) -> Aggregate:
    """``user``'s own labels as an aggregate (the baseline a weighted aggregate is measured
    against)."""
    return aggregate(votes[votes["user"] == user])


def _matrix(votes: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Item ids (sorted), user names (sorted) and the items x users matrix of +1/-1/0."""
    v = votes[votes["value"] != 0]
    item_ids = np.unique(v["item_id"].to_numpy(np.int64))
    users = sorted(set(v["user"]))
    L = np.zeros((len(item_ids), len(users)), np.int8)
    if len(v):
        rows = np.searchsorted(item_ids, v["item_id"].to_numpy(np.int64))
        where = {u: j for j, u in enumerate(users)}
        cols = np.fromiter((where[u] for u in v["user"]), np.int64, len(v))
        L[rows, cols] = np.sign(v["value"].to_numpy()).astype(np.int8)
    return item_ids, users, L


def _majority(L: np.ndarray) -> np.ndarray:
    """The share of each item's votes that say relevant (0.5 for an even tie)."""
    n = (L != 0).sum(axis=1)
    return np.where(n > 0, (L > 0).sum(axis=1) / np.maximum(n, 1), 0.5).astype(np.float64)


def _result(
    method: str,
    item_ids: np.ndarray,
    users: list[str],
    L: np.ndarray,
    T: np.ndarray,
    iterations: int,
    converged: bool,
    prior_strength: float = 0.0,
    prior_accuracy: float = 0.5,
) -> Aggregate:
    import pandas as pd

    label = np.where(T > 0.5, 1, np.where(T < 0.5, -1, 0)).astype(np.int64)
    n_votes = (L != 0).sum(axis=1)
    agree = (L * label[:, None] > 0).sum(axis=1)
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "label": label,
            "probability": T,
            "votes": n_votes,
            "positive": (L > 0).sum(axis=1),
            "agreement": np.where(label != 0, agree / np.maximum(n_votes, 1), 0.5),
        }
    )
    # each user's confusion against the posteriors (Dawid-Skene's own estimate; for
    # majority, agreement with the majority), smoothed as in the EM
    a, b = prior_strength * prior_accuracy, prior_strength * (1 - prior_accuracy)
    said_pos, said_neg = (L > 0).astype(np.float64), (L < 0).astype(np.float64)
    sens = (said_pos.T @ T + a) / np.maximum((said_pos + said_neg).T @ T + a + b, 1e-12)
    spec = (said_neg.T @ (1 - T) + a) / np.maximum((said_pos + said_neg).T @ (1 - T) + a + b, 1e-12)
    table = pd.DataFrame(
        {
            "user": users,
            "labels": (L != 0).sum(axis=0),
            "positive": (L > 0).sum(axis=0),
            "sensitivity": sens,
            "specificity": spec,
            "reliability": (sens + spec) / 2,
        }
    )
    table = table.sort_values(["reliability", "user"], ascending=[False, True], kind="stable")
    prior = float((T.sum() + 1.0) / (len(T) + 2.0))
    return Aggregate(
        method=method,
        items=items,
        users=table.reset_index(drop=True),
        by_user=L,
        user_names=list(users),
        prior=prior,
        iterations=iterations,
        converged=converged,
    )
