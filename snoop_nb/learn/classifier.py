"""The feedback classifier: a linear model on normalised vectors, trained from a few labels.

A linear score ``w.x + b`` on L2-normalised vectors ranks like the cosine similarity with
``w``, so a trained class can be searched with the HNSW index (query ``w/|w|``) as well as
scored exactly. Any scikit-learn classifier with ``coef_`` and ``intercept_`` fits the contract.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from snoop_nb.errors import UsageError

#: Fewest labels a class needs before training (one positive at least).
MIN_LABELS = 2

#: The regularisation grid, as multiples of ``C``: strongest first (see :func:`train`).
C_STEPS = (1.0, 10.0, 100.0, 1000.0)


@dataclass
class TrainedModel:
    """What training produced: weights, bias, the counts it saw and its quality estimate."""

    weights: np.ndarray
    bias: float
    n_pos: int
    n_neg: int
    n_pseudo: int
    params: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)

    def decision(self, x: np.ndarray) -> np.ndarray:
        """Scores of rows ``x`` (higher means more likely relevant; 0 is the boundary)."""
        return np.asarray(x, np.float32) @ self.weights + self.bias


def probability(scores: np.ndarray) -> np.ndarray:
    """The logistic of linear scores: the model's probability that items are relevant."""
    return 1.0 / (1.0 + np.exp(-np.asarray(scores, np.float64)))


def logit(p: float) -> float:
    """The score whose :func:`probability` is ``p`` (infinite at 0 and 1)."""
    if p <= 0:
        return -np.inf
    if p >= 1:
        return np.inf
    return float(np.log(p / (1.0 - p)))


def make_estimator(C: float = 1.0, seed: int = 0):
    """The default estimator: L2-regularised logistic regression.

    Classes are balanced by :func:`sample_weights`, not by ``class_weight``, so that
    pseudo-negatives weigh less than the labels a user gave.
    """
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=200, random_state=seed)


def sample_weights(n_pos: int, n_neg: int, n_pseudo: int) -> np.ndarray:
    """Weights of the rows ``[pos, neg, pseudo]``: relevant and not relevant balanced, and
    pseudo-negatives never outvoting the user's labels.

    The relevant side and the not-relevant side each weigh half the rows. On the not-relevant
    side a pseudo-negative weighs ``min(1, n_neg / n_pseudo)`` of a labelled one, so together
    they never weigh more than the labelled negatives (with none labelled, they carry the side
    alone). The total is the number of rows, as scikit-learn's ``class_weight="balanced"``, so
    ``C`` keeps its usual scale.
    """
    wp, wn, wq = _row_weights(n_pos, n_neg, n_pseudo)
    return np.concatenate([np.full(n_pos, wp), np.full(n_neg, wn), np.full(n_pseudo, wq)])


def _row_weights(n_pos: int, n_neg: int, n_pseudo: int) -> tuple[float, float, float]:
    """The weight of one positive, one labelled negative and one pseudo-negative."""
    n = n_pos + n_neg + n_pseudo
    pseudo_each = 1.0 if n_neg == 0 else min(1.0, n_neg / max(n_pseudo, 1))
    neg_side = n_neg + pseudo_each * n_pseudo
    wp = n / 2 / n_pos if n_pos else 0.0
    wn = n / 2 / neg_side if neg_side else 0.0
    return wp, wn, pseudo_each * wn


def label_mistakes(pos_scores: np.ndarray, neg_scores: np.ndarray) -> dict[str, int]:
    """How many of the user's labels linear scores get wrong.

    ``count``: labelled items on the wrong side of the decision threshold (score 0, i.e.
    probability 0.5, where ``apply`` puts the class by default): relevant ones below it
    (``relevant_below_threshold``), not-relevant ones at or above it
    (``not_relevant_above_threshold``). The ranking's mistakes: relevant items scoring below
    the best not-relevant one (``relevant_below_not_relevant``) and not-relevant items
    scoring above the worst relevant one (``not_relevant_above_relevant``). With no mistake
    on the threshold there is none in the ranking.
    """
    p = np.asarray(pos_scores, np.float64).reshape(-1)
    q = np.asarray(neg_scores, np.float64).reshape(-1)
    below, above = int((p < 0).sum()), int((q >= 0).sum())
    return {
        "count": below + above,
        "relevant_below_threshold": below,
        "not_relevant_above_threshold": above,
        "relevant_below_not_relevant": int((p <= q.max()).sum()) if len(q) and len(p) else 0,
        "not_relevant_above_relevant": int((q >= p.min()).sum()) if len(q) and len(p) else 0,
    }


def train(
    pos: np.ndarray,
    neg: np.ndarray,
    pseudo: np.ndarray | None = None,
    *,
    C: float = 1.0,
    seed: int = 0,
    estimator=None,
    cv_folds: int = 3,
    init: tuple[np.ndarray, float] | None = None,
    c_steps: tuple[float, ...] = C_STEPS,
    confidence: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainedModel:
    """Fit a classifier on positives, negatives and optional pseudo-negatives.

    Pseudo-negatives (items drawn at random from the corpus, mostly irrelevant for a rare
    class) let a class be trained from positives alone; they count as negatives, weighted so
    that they never outvote the labelled ones (:func:`sample_weights`).

    The regularisation: the strongest in the grid ``C * c_steps`` (``C`` first, each step ten
    times weaker) whose model gets every label right (:func:`label_mistakes`): the smoothest
    model that agrees with what the user said. So relevant items score above not-relevant ones
    whenever a linear model can separate them (within the grid), and a user is not ignored
    because the labels disagree with a smooth model. The grid stops at the first such step;
    each step's solver starts from the previous step's model. When no step gets them all
    right (the labels contradict each other, e.g. one picture marked both ways), the step with
    the fewest mistakes (the strongest of equals) is kept. The mistakes left are reported in
    ``quality["mistakes"]``, and ``quality["C"]`` is the chosen value. A given ``estimator``'s
    own ``C`` starts its grid; one without a ``C`` parameter is fitted once, and one whose
    ``fit`` takes no ``sample_weight`` is fitted unweighted.

    The quality estimate is a stratified cross-validation over the real labels only, at the
    chosen ``C`` (pseudo-negatives always stay in training).

    ``init`` (weights, bias), typically the class's previous version, is where the solver
    starts when the estimator has ``warm_start``: ten labels more move the optimum little, so
    it gets there in fewer iterations, to the same model within the solver's tolerance.
    ``estimator`` is cloned, never fitted in place.

    ``confidence`` (one weight per positive, one per negative; e.g. the posterior of labels
    aggregated from several users, :mod:`snoop_nb.learn.aggregate`) scales each label's row
    within its side, the side's total kept, so a doubtful label counts less than a sure one
    (the cross-validation folds stay unweighted by it).

    >>> m = train(pos_vectors, neg_vectors)                     # doctest: +SKIP
    >>> m.quality["mistakes"]["count"]                          # doctest: +SKIP
    0
    >>> m2 = train(more_pos, more_neg, init=(m.weights, m.bias))  # doctest: +SKIP
    """
    import warnings

    import sklearn
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils.validation import has_fit_parameter

    n_pos, n_neg = len(pos), len(neg)
    if n_pos + n_neg < MIN_LABELS:
        raise UsageError(
            f"training needs at least {MIN_LABELS} labels, {n_pos + n_neg} given: "
            "mark a few more items relevant (or not relevant) first"
        )
    if n_pos == 0:
        raise UsageError("training needs at least one relevant (+1) item")
    pos = np.asarray(pos, np.float32)
    dim = pos.shape[1]
    neg = np.asarray(neg, np.float32).reshape(-1, dim)
    pseudo = np.asarray(pseudo if pseudo is not None else [], np.float32).reshape(-1, dim)
    if n_neg == 0 and len(pseudo) == 0:
        raise UsageError("training needs not-relevant (-1) items or pseudo-negatives")
    X = np.concatenate([pos, neg, pseudo])
    y = np.concatenate([np.ones(n_pos), np.zeros(n_neg + len(pseudo))])
    weights = sample_weights(n_pos, n_neg, len(pseudo))
    if confidence is not None:
        for side, (lo, hi) in zip(confidence, ((0, n_pos), (n_pos, n_pos + n_neg)), strict=True):
            c = np.asarray(side, np.float64).reshape(-1)
            if len(c) != hi - lo:
                raise UsageError(f"confidence has {len(c)} values for {hi - lo} labels")
            if len(c) and c.sum() > 0:
                weights[lo:hi] *= c * len(c) / c.sum()

    base = clone(estimator) if estimator is not None else make_estimator(C, seed)
    fit_kw = {"sample_weight": weights} if has_fit_parameter(base, "sample_weight") else {}
    grid = [None]
    if "C" in base.get_params():
        c0 = float(base.get_params()["C"])
        grid = [c0 * float(step) for step in c_steps] or [c0]
    start = init if init is not None and np.size(init[0]) == dim else None
    best = None
    # A few hundred rows: one BLAS thread is faster than two fighting over them. Vectors are
    # finite (normalised embeddings), so scikit-learn's per-call scan for NaN is skipped.
    # A weak step may stop at max_iter on separable labels: its model is judged by its
    # mistakes, not by the solver's tolerance.
    with (
        _blas_controller().limit(limits=1, user_api="blas"),
        sklearn.config_context(assume_finite=True),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i, c in enumerate(grid):
            est = clone(base)
            if c is not None:
                est.set_params(C=c)
            if start is not None:
                est = _start_from(est, start[0], start[1])
            with sklearn.config_context(skip_parameter_validation=i > 0):
                est.fit(X, y, **fit_kw)
            w = np.asarray(est.coef_, np.float32).reshape(-1)
            b = float(np.asarray(est.intercept_).reshape(-1)[0])
            mistakes = label_mistakes(pos @ w + b, neg @ w + b)
            if best is None or mistakes["count"] < best[3]["count"]:
                best = (est, c, (w, b), mistakes)
            if mistakes["count"] == 0:
                break
            start = (est.coef_, est.intercept_)
        est, c, (w, b), mistakes = best
        quality = cross_validate(
            pos, neg, pseudo, est, folds=cv_folds, seed=seed, sample_weight=bool(fit_kw)
        )
    chosen = clone(base) if c is None else clone(base).set_params(C=c)
    params = {
        "estimator": type(chosen).__name__,
        **{
            k: v
            for k, v in chosen.get_params().items()
            if isinstance(v, (int, float, str, bool)) or v is None
        },
        "pseudo_negatives": len(pseudo),
    }
    if c is not None:
        quality["C"] = c
    quality["mistakes"] = mistakes
    return TrainedModel(w, b, n_pos, n_neg, len(pseudo), params, quality)


def cross_validate(
    pos, neg, pseudo, estimator, *, folds: int = 3, seed: int = 0, sample_weight: bool = False
) -> dict[str, Any]:
    """Stratified k-fold estimates (average precision, balanced accuracy) on the real labels.

    With only positives, the held-out negatives are held-out pseudo-negatives, said so in
    ``negatives``. Returns ``{"cv_folds": 0, ...}`` with a reason when there are too few labels.
    ``sample_weight``: each fold is fitted with :func:`sample_weights` of its own rows.

    ``estimator`` is the model fitted on all the labels: each fold refits a clone of it that
    starts from its coefficients (where it has ``warm_start``), since holding a third of the
    labels out moves the optimum little. The solver still runs to the fold's own optimum:
    on the demo classes the estimated AP stays within 0.01 of a fit to tolerance 1e-8.
    """
    import sklearn
    from sklearn.base import clone
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import StratifiedKFold

    use_pseudo_as_test = len(neg) == 0
    neg_eval = pseudo if use_pseudo_as_test else neg
    k = min(folds, len(pos), len(neg_eval))
    if k < 2:
        return {"cv_folds": 0, "reason": "too few labels for cross-validation (2 of each needed)"}
    X = np.concatenate([pos, neg_eval])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg_eval))])
    extra = np.zeros((0, X.shape[1]), np.float32) if use_pseudo_as_test else pseudo
    scores = np.zeros(len(y))
    # Refits of clones of a fitted estimator: its parameters were validated by that fit.
    with sklearn.config_context(skip_parameter_validation=True):
        for train_idx, test_idx in StratifiedKFold(k, shuffle=True, random_state=seed).split(X, y):
            est = clone(estimator)
            if hasattr(estimator, "coef_"):
                est = _start_from(est, estimator.coef_, estimator.intercept_)
            Xt = np.concatenate([X[train_idx], extra])
            yt = np.concatenate([y[train_idx], np.zeros(len(extra))])
            kw = {}
            if sample_weight:
                n_p = int(yt[: len(train_idx)].sum())
                wp, wn, wq = _row_weights(n_p, len(train_idx) - n_p, len(extra))
                kw["sample_weight"] = np.concatenate(
                    [np.where(y[train_idx] > 0, wp, wn), np.full(len(extra), wq)]
                )
            est.fit(Xt, yt, **kw)
            scores[test_idx] = est.decision_function(X[test_idx])
        ap = float(average_precision_score(y, scores))
    # balanced accuracy: the mean of the recalls of both classes (as scikit-learn's, at 0)
    hit = (scores > 0) == (y > 0)
    return {
        "cv_folds": int(k),
        "average_precision": ap,
        "balanced_accuracy": float((hit[y > 0].mean() + hit[y == 0].mean()) / 2),
        "negatives": "pseudo" if use_pseudo_as_test else "labelled",
    }


def _start_from(est, coef, intercept):
    """``est`` (unfitted) set to start its next fit from ``coef``, ``intercept``, if it can."""
    if "warm_start" not in est.get_params():
        return est
    est.set_params(warm_start=True)
    est.coef_ = np.asarray(coef, np.float64).reshape(1, -1)
    est.intercept_ = np.asarray(intercept, np.float64).reshape(1)
    return est


@functools.cache
def _blas_controller():
    """The BLAS libraries loaded, found once: a fresh search costs 1-5 ms a call.

    numpy's and scipy's BLAS are loaded by then (scikit-learn imports them), and those are
    the ones a fit uses.
    """
    import sklearn.linear_model  # noqa: F401  (loads the BLAS the fit will use)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
