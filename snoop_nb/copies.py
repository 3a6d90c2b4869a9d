"""Copies and near-duplicates: items that show the same picture, and video segments shown twice.

A copy is a picture cropped, resized, re-encoded, colour-shifted, overlaid with text or a logo,
or mirrored. Finding them takes three steps, the classic pipeline of copy detection (Ina's,
then DISC21's):

1. **Candidates** from the global vectors: each item's ``k`` nearest neighbours whose cosine is
   at least ``threshold`` (exact block products below :data:`EXACT_BELOW` items, the
   collection's index above), each pair once.
2. **Verification** with local features: SIFT keypoints of both pictures (decoded by
   :func:`~snoop_nb.media.decode.load_image` at a bounded size, small ones enlarged to it),
   described as RootSIFT (Arandjelović and Zisserman, CVPR 2012: the square root of the
   L1-normalised descriptor, so that L2 distances compare them by Hellinger's kernel),
   matched with Lowe's ratio test and checked by RANSAC for one similarity transform
   (``cv2.estimateAffinePartial2D``: scale, rotation, shift, which crops and resizes are). The
   score is the number of matches that agree with it (inliers); a pair is a copy at
   ``min_inliers`` or more. A mirrored copy is matched against the other picture flipped
   left to right as well. A file that cannot be read is reported in ``skipped``, never raised.
3. **Groups**: the connected components of the verified pairs (union-find).

A video's keyframes are items too: keyframes of two videos that are copies, whose times differ
by one offset and follow each other, are a repeated segment (a rebroadcast), reported as
``(video A, t A, video B, t B, duration)`` by :func:`repeated_segments`.

>>> found = col.duplicates()                        # doctest: +SKIP
>>> [g.uris for g in found.groups]                   # doctest: +SKIP
>>> found.pairs[["id_a", "id_b", "similarity", "inliers", "mirrored"]]   # doctest: +SKIP
>>> found.segments                                   # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from snoop_nb.errors import SnoopError, UsageError

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.collection import Collection

#: Below this many items the candidates come from exact block products, above from the index.
EXACT_BELOW = 50_000
#: Neighbours looked at per item.
DEFAULT_K = 10
#: Cosine a candidate needs when it is verified: low, since the local features decide.
CANDIDATE_SIMILARITY = 0.5
#: Cosine a pair needs to count as a copy without verification (global vectors alone).
GLOBAL_SIMILARITY = 0.9
#: Inliers of one similarity transform that make a pair a copy. Matches that survive the ratio
#: test between unrelated pictures are scattered: RANSAC rarely finds more than a handful that
#: agree, while a copy keeps tens to hundreds.
MIN_INLIERS = 15
#: The share of the ratio test's matches that must agree with the transform.
MIN_INLIER_RATIO = 0.5
#: The share of each picture the inliers must span (their convex hull's area).
MIN_COVERAGE = 0.1
#: Fewer keypoints than this in one picture of a pair and the pair cannot be verified.
MIN_KEYPOINTS = 30
#: Pictures are verified at this longest side (larger ones shrunk, smaller ones enlarged).
SIDE = 512
#: Keypoints kept per picture.
FEATURES = 1000
#: SIFT's contrast threshold: half OpenCV's default, so flat clip-art keeps keypoints.
CONTRAST = 0.02
#: Lowe's ratio: a match is kept when its nearest descriptor is this much nearer than the next.
RATIO = 0.8
#: RANSAC's reprojection error, as a fraction of :data:`SIDE`.
REPROJECTION = 0.02
#: Scales a similarity transform may have between a copy and its original.
SCALE_RANGE = (1 / 6, 6.0)

PAIR_COLUMNS = [
    "id_a",
    "id_b",
    "uri_a",
    "uri_b",
    "similarity",
    "inliers",
    "matches",
    "inlier_ratio",
    "coverage",
    "keypoints",
    "mirrored",
    "verified",
    "score",
]
SEGMENT_COLUMNS = [
    "video_a",
    "t_a",
    "video_b",
    "t_b",
    "duration",
    "offset",
    "keyframes",
    "inliers",
    "video_id_a",
    "video_id_b",
]


# --- results ---------------------------------------------------------------------------------
@dataclass
class CopyGroup:
    """Items that are copies of each other: ``ids`` and their ``uris`` (same order), and
    ``score``, the best pair score inside the group."""

    ids: list[int]
    uris: list[str]
    score: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"uris": list(self.uris), "ids": list(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Duplicates:
    """What :func:`find_duplicates` found.

    - ``groups``: :class:`CopyGroup` list, largest first (each group's ids sorted);
    - ``pairs``: a DataFrame of every candidate pair, best first (:data:`PAIR_COLUMNS`):
      ``similarity`` (cosine of the global vectors), ``inliers`` and ``matches`` (RANSAC
      inliers among ratio-test matches, -1 when not verified), ``inlier_ratio``, ``mirrored``
      (matched against the flipped picture), ``verified`` (a copy), ``score`` (the ranking:
      the cosine alone without verification, else ``inliers / (inliers + min_inliers)``, with
      the cosine breaking ties);
    - ``segments``: repeated video segments (:data:`SEGMENT_COLUMNS`), one row per segment;
    - ``skipped``: ``[{"id", "uri", "reason"}]``, the items that could not be verified;
    - ``params``: the parameters used;
    - ``saved``: when what was kept in the collection was found (UTC, ISO 8601; None: found
      now), and ``unchecked``, the live items it has not looked at yet (added since).
    """

    groups: list[CopyGroup]
    pairs: pd.DataFrame
    segments: pd.DataFrame
    skipped: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    saved: str | None = None
    unchecked: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self):
        return iter(self.groups)

    def group_of(self) -> dict[int, int]:
        """Item id -> index of its group in :attr:`groups`."""
        return {i: g for g, group in enumerate(self.groups) for i in group.ids}

    def to_json(self) -> list[dict[str, Any]]:
        """The groups as ``[{"uris": [...], "ids": [...]}]`` (what ``snoop duplicates --json``
        prints)."""
        return [g.as_dict() for g in self.groups]

    def __repr__(self) -> str:
        n = sum(len(g) for g in self.groups)
        return (
            f"<Duplicates groups={len(self.groups)} items={n} pairs={int(self.pairs['verified'].sum())}"
            f" segments={len(self.segments)} skipped={len(self.skipped)}>"
        )


# --- candidates ------------------------------------------------------------------------------
def candidate_pairs(
    col: Collection,
    ids: np.ndarray,
    *,
    k: int = DEFAULT_K,
    threshold: float = CANDIDATE_SIMILARITY,
    mutual: bool = False,
    block: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(a, b, cosine)`` (``a < b``, each pair once) where ``b`` is among ``a``'s ``k``
    nearest in ``ids`` or the reverse (``mutual``: both), with a cosine of ``threshold`` or
    more. Exact products in blocks below :data:`EXACT_BELOW` items, the index above (then
    neighbours outside ``ids`` are dropped)."""
    ids = np.asarray(ids, dtype=np.int64)
    n = ids.size
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    kk = min(int(k), n - 1)
    rows_a, rows_b, sims = [], [], []
    if n < EXACT_BELOW:
        vecs = col.vectors_of(ids)
        step = block or max(64, min(2048, 2**25 // max(n, 1)))
        for s in range(0, n, step):
            q = vecs[s : s + step]
            m = q @ vecs.T
            m[np.arange(q.shape[0]), np.arange(s, s + q.shape[0])] = -np.inf
            top = np.argpartition(-m, kk - 1, axis=1)[:, :kk]
            val = np.take_along_axis(m, top, axis=1)
            keep = val >= threshold
            rows_a.append(np.repeat(np.arange(s, s + q.shape[0]), kk)[keep.ravel()])
            rows_b.append(top[keep])
            sims.append(val[keep])
        a_pos = np.concatenate(rows_a)
        b_pos = np.concatenate(rows_b)
        sim = np.concatenate(sims).astype(np.float32)
        a, b = ids[a_pos], ids[b_pos]
    else:
        index = col.index
        step = block or 1024
        wanted = set(ids.tolist()) if n < col.rows else None
        for s in range(0, n, step):
            q_ids = ids[s : s + step]
            found, score = index.search(col.vectors_of(q_ids), k=kk + 1)
            qa = np.repeat(q_ids, found.shape[1])
            fb, sc = found.ravel(), score.ravel()
            keep = (fb >= 0) & (fb != qa) & (sc >= threshold)
            if wanted is not None:
                keep &= np.fromiter((int(x) in wanted for x in fb), bool, fb.size)
            rows_a.append(qa[keep])
            rows_b.append(fb[keep])
            sims.append(sc[keep])
        a, b = np.concatenate(rows_a), np.concatenate(rows_b)
        sim = np.concatenate(sims).astype(np.float32)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * (int(hi.max(initial=0)) + 1) + hi
    order = np.argsort(key, kind="stable")
    key, lo, hi, sim = key[order], lo[order], hi[order], sim[order]
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    if mutual:
        first = first[counts >= 2]
    return lo[first], hi[first], sim[first]


# --- local features --------------------------------------------------------------------------
@dataclass
class _Features:
    xy: np.ndarray  # (n, 2) float32
    desc: np.ndarray | None  # (n, 128) float32
    shape: tuple[int, int]  # (height, width) of the picture they come from


class LocalVerifier:
    """Verifies candidate pairs by SIFT keypoints and RANSAC, caching each item's features for
    the run (``load(item_id) -> PIL image`` decodes an item; a :class:`SnoopError` it raises
    marks the item skipped)."""

    def __init__(
        self,
        load,
        *,
        side: int = SIDE,
        features: int = FEATURES,
        ratio: float = RATIO,
        flip: bool = True,
    ):
        import cv2

        self._cv2 = cv2
        self.load = load
        self.side = int(side)
        self.ratio = float(ratio)
        self.flip = bool(flip)
        self._sift = cv2.SIFT_create(nfeatures=int(features), contrastThreshold=CONTRAST)
        self._fine = cv2.SIFT_create(nfeatures=int(features), contrastThreshold=CONTRAST / 8)
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)
        self._cache: dict[tuple[int, bool], _Features] = {}
        self._grey: dict[int, np.ndarray] = {}
        self.skipped: dict[int, str] = {}

    def _image(self, item_id: int) -> np.ndarray | None:
        if item_id in self.skipped:
            return None
        grey = self._grey.get(item_id)
        if grey is None:
            try:
                image = self.load(item_id)
            except SnoopError as e:
                self.skipped[item_id] = getattr(e, "reason", None) or str(e)
                return None
            grey = _normalised_grey(image, self.side)
            self._grey[item_id] = grey
        return grey

    def features(self, item_id: int, *, flipped: bool = False) -> _Features | None:
        key = (int(item_id), bool(flipped))
        got = self._cache.get(key)
        if got is None:
            grey = self._image(int(item_id))
            if grey is None:
                return None
            if flipped:
                grey = np.ascontiguousarray(grey[:, ::-1])
            kps, desc = self._sift.detectAndCompute(grey, None)
            if len(kps) < MIN_KEYPOINTS:  # a plain or low-contrast picture: a finer look
                kps, desc = self._fine.detectAndCompute(grey, None)
            if desc is not None and len(desc):
                desc = root_sift(desc)
            xy = np.array([kp.pt for kp in kps], np.float32).reshape(-1, 2)
            got = _Features(xy, desc, grey.shape[:2])
            self._cache[key] = got
        return got

    def forget(self, item_id: int) -> None:
        """Drop an item's features (when no pair left needs them)."""
        for f in (False, True):
            self._cache.pop((int(item_id), f), None)
        self._grey.pop(int(item_id), None)

    def verify(self, a: int, b: int) -> Match:
        """How ``a`` and ``b`` match (:class:`Match`); ``None`` fields if one of them could not
        be read."""
        fa, fb = self.features(a), self.features(b)
        if fa is None or fb is None:
            return Match(-1, -1, 0.0, False, -1)
        best = self._match(fa, fb)
        if self.flip and best.inliers < MIN_INLIERS * 2:
            fm = self.features(b, flipped=True)
            if fm is not None:
                mirrored = self._match(fa, fm)
                if mirrored.inliers > best.inliers:
                    best = mirrored._replace(mirrored=True)
        return best._replace(keypoints=min(len(fa.xy), len(fb.xy)))

    def _match(self, fa: _Features, fb: _Features) -> Match:
        cv2 = self._cv2
        none = Match(0, 0, 0.0, False, 0)
        if fa.desc is None or fb.desc is None or len(fa.xy) < 3 or len(fb.xy) < 3:
            return none
        knn = self._matcher.knnMatch(fa.desc, fb.desc, k=2)
        good = [m[0] for m in knn if len(m) == 2 and m[0].distance < self.ratio * m[1].distance]
        src = fa.xy[[m.queryIdx for m in good]].reshape(-1, 2)
        dst = fb.xy[[m.trainIdx for m in good]].reshape(-1, 2)
        if len(src):  # one keypoint matched by several at one place (or the reverse) counts once
            _, uniq = np.unique(np.round(np.hstack([src, dst])), axis=0, return_index=True)
            src, dst = src[np.sort(uniq)], dst[np.sort(uniq)]
        if len(src) < 3:
            return none._replace(matches=len(src))
        model, mask = cv2.estimateAffinePartial2D(
            src,
            dst,
            method=cv2.RANSAC,
            ransacReprojThreshold=REPROJECTION * self.side,
            maxIters=2000,
            confidence=0.995,
        )
        if model is None or mask is None:
            return none._replace(matches=len(src))
        scale = math.hypot(model[0, 0], model[1, 0])
        if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
            return none._replace(matches=len(src))
        keep = mask.ravel().astype(bool)
        coverage = min(_hull_share(src[keep], fa.shape), _hull_share(dst[keep], fb.shape))
        return Match(int(keep.sum()), len(src), coverage, False, 0)


class Match(NamedTuple):
    """One pair's local match: RANSAC ``inliers`` among the ratio test's ``matches``, the share
    of the smaller picture the inliers span (``coverage``: their convex hull's area over the
    picture's), whether the flipped picture matched (``mirrored``), and the fewer ``keypoints``
    of the two pictures. ``inliers == -1``: a picture could not be read."""

    inliers: int
    matches: int
    coverage: float
    mirrored: bool
    keypoints: int


def root_sift(desc: np.ndarray) -> np.ndarray:
    """SIFT descriptors as RootSIFT: each L1-normalised, then its square root (unit L2)."""
    desc = np.asarray(desc, np.float32)
    return np.sqrt(desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-7))


def _hull_share(points: np.ndarray, shape: tuple[int, int]) -> float:
    import cv2

    if len(points) < 3:
        return 0.0
    hull = cv2.convexHull(points.astype(np.float32))
    return float(cv2.contourArea(hull)) / float(shape[0] * shape[1])


def _normalised_grey(image, side: int) -> np.ndarray:
    """``image`` as uint8 grey whose longest side is ``side`` (enlarged when smaller: a 64 px
    stamp has too few keypoints at its own size)."""
    from PIL import Image

    w, h = image.size
    s = side / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    if size != (w, h):
        resample = Image.Resampling.BICUBIC if s > 1 else Image.Resampling.BILINEAR
        image = image.resize(size, resample, reducing_gap=None if s > 1 else 2.0)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def item_loader(col: Collection, ids: Sequence[int], side: int = SIDE):
    """``load(item_id)``: an item's picture, decoded safely at about ``side`` (a keyframe's
    from its saved thumbnail, else from its video)."""
    from snoop_nb.media.decode import load_image

    paths = col.paths(ids)
    items = col.items(ids, status=None)
    moments: dict[int, float] = {}
    if not items.empty and "kind" in items and "t" in items:
        frames = items[items["kind"] == "keyframe"]
        moments = {int(i): float(t) for i, t in zip(frames["id"], frames["t"], strict=True)}
    box = (side, side)

    def load(item_id: int):
        path = paths.get(int(item_id))
        if path is None:
            raise UsageError(f"no item with id {item_id}")
        if int(item_id) not in moments:
            return load_image(path, min_size=box, draft=box)
        saved = col.root / "keyframes" / f"{int(item_id)}.jpg"
        if saved.is_file():
            try:
                return load_image(saved)
            except SnoopError:
                pass  # a cache, best effort: read the frame from the video
        from snoop_nb.media.video import read_frames

        video = col.video_path(str(path))
        return read_frames(video, [moments[int(item_id)]], max_side=side)[0]

    return load


def decide(
    sim: np.ndarray,
    inliers: np.ndarray,
    matches: np.ndarray,
    coverage: np.ndarray,
    keypoints: np.ndarray,
    *,
    min_inliers: int = MIN_INLIERS,
) -> tuple[np.ndarray, np.ndarray]:
    """Which verified pairs are copies, and every pair's score in [0, 1].

    A copy: ``min_inliers`` inliers or more, that are most of the ratio test's matches
    (:data:`MIN_INLIER_RATIO`) and span :data:`MIN_COVERAGE` of both pictures (a shared logo or
    caption spans a corner, not the picture). Pictures too plain to have
    :data:`MIN_KEYPOINTS` keypoints cannot be verified: for them the global vectors decide, at
    :data:`GLOBAL_SIMILARITY`. The score averages the cosine and the local evidence
    ``e / (e + min_inliers)`` (``e``: inliers x their ratio, 0 when they span too little; one
    half when there is nothing to verify)."""
    good = np.maximum(inliers, 0).astype(np.float64)
    ratio = np.where(matches > 0, good / np.maximum(matches, 1), 0.0)
    spread = coverage >= MIN_COVERAGE
    plain = (keypoints >= 0) & (keypoints < MIN_KEYPOINTS)
    local = (good >= min_inliers) & (ratio >= MIN_INLIER_RATIO) & spread
    verified = local | (plain & (sim >= GLOBAL_SIMILARITY))
    evidence = np.where(spread, good * ratio, 0.0)
    term = np.where(plain, 0.5, evidence / (evidence + min_inliers))
    return verified, (term + np.clip(sim, 0, 1)) / 2


# --- grouping --------------------------------------------------------------------------------
def connected_groups(pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the ``(a, b)`` pairs (union-find), each sorted, largest first."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps: dict[int, list[int]] = {}
    for x in parent:
        comps.setdefault(root(x), []).append(x)
    return sorted((sorted(c) for c in comps.values()), key=lambda c: (-len(c), c[0]))


# --- the whole run ---------------------------------------------------------------------------
def find_duplicates(
    col: Collection,
    *,
    threshold: float | None = None,
    k: int = DEFAULT_K,
    verify: bool = True,
    min_inliers: int = MIN_INLIERS,
    ids: Iterable[int] | None = None,
    mutual: bool = False,
    flip: bool = True,
    side: int = SIDE,
    segments: bool = True,
    min_keyframes: int = 2,
    touching: Iterable[int] | None = None,
    progress: bool | Callable[[int, int], None] = False,
) -> Duplicates:
    """Copies among the live items of ``col`` (or ``ids``): see the module's docstring.

    ``threshold`` is the cosine a candidate needs (:data:`CANDIDATE_SIMILARITY` with
    verification, :data:`GLOBAL_SIMILARITY` without, where it alone decides); ``k`` the
    neighbours looked at per item; ``min_inliers`` the verification's bar; ``flip`` matches
    mirrored copies too; ``side`` the longest side pictures are verified at. ``segments`` chains
    copied keyframes of two videos into repeated segments (at least ``min_keyframes`` each).
    ``touching`` keeps only the candidate pairs with an item among those ids (the others were
    checked before: :func:`update_duplicates`). ``progress``: a bar over the pairs verified
    (True), or ``progress(done, total)`` called as they are.
    """

    if threshold is None:
        threshold = CANDIDATE_SIMILARITY if verify else GLOBAL_SIMILARITY
    if not -1.0 <= float(threshold) <= 1.0:
        raise UsageError(f"threshold must be a cosine in [-1, 1], not {threshold}")
    if int(k) < 1 or int(min_inliers) < 1:
        raise UsageError("k and min_inliers must be positive")
    live = col.ok_ids()
    chosen = live if ids is None else np.intersect1d(np.asarray(list(ids), np.int64), live)
    a, b, sim = candidate_pairs(col, chosen, k=k, threshold=float(threshold), mutual=mutual)
    if touching is not None:
        near = np.asarray(list(touching), np.int64)
        keep = np.isin(a, near) | np.isin(b, near)
        a, b, sim = a[keep], b[keep], sim[keep]
    params = {
        "threshold": float(threshold),
        "k": int(k),
        "verify": bool(verify),
        "min_inliers": int(min_inliers),
        "mutual": bool(mutual),
        "flip": bool(flip),
        "side": int(side),
    }
    inliers = np.full(a.size, -1, np.int64)
    matches = np.full(a.size, -1, np.int64)
    mirrored = np.zeros(a.size, bool)
    keypoints = np.full(a.size, -1, np.int64)
    coverage = np.zeros(a.size)
    skipped: list[dict[str, Any]] = []
    if verify and a.size:
        touched = np.unique(np.concatenate([a, b]))
        verifier = LocalVerifier(item_loader(col, touched.tolist(), side), side=side, flip=flip)
        # pairs in id order, so each item's features are dropped once its last pair is done
        order = np.lexsort((b, a))
        last = {}
        for n, p in enumerate(order):
            last[int(a[p])] = n
            last[int(b[p])] = n
        bar = _progress(len(order), progress)
        for n, p in enumerate(order):
            m = verifier.verify(int(a[p]), int(b[p]))
            inliers[p], matches[p], coverage[p] = m.inliers, m.matches, m.coverage
            mirrored[p], keypoints[p] = m.mirrored, m.keypoints
            for x in (int(a[p]), int(b[p])):
                if last[x] == n:
                    verifier.forget(x)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        known = col.paths(list(verifier.skipped))
        skipped = [
            {"id": i, "uri": _uri(known.get(i)), "reason": r}
            for i, r in sorted(verifier.skipped.items())
        ]
        verified, score = decide(
            sim, inliers, matches, coverage, keypoints, min_inliers=int(min_inliers)
        )
    else:
        verified = sim >= float(threshold)
        score = sim.astype(np.float64)
    pairs = _pairs_frame(
        col,
        {
            "id_a": a,
            "id_b": b,
            "similarity": sim.astype(np.float64),
            "inliers": inliers,
            "matches": matches,
            "coverage": coverage,
            "keypoints": keypoints,
            "mirrored": mirrored,
            "verified": verified,
            "score": score,
        },
    )
    return _assemble(col, pairs, skipped, params, segments=segments, min_keyframes=min_keyframes)


def _pairs_frame(col: Collection, columns: dict[str, Any]) -> pd.DataFrame:
    """The pairs table (:data:`PAIR_COLUMNS`, best first) from its columns, uris looked up."""
    import pandas as pd

    a = np.asarray(columns["id_a"], np.int64)
    b = np.asarray(columns["id_b"], np.int64)
    inliers = np.asarray(columns["inliers"], np.int64)
    matches = np.asarray(columns["matches"], np.int64)
    uris = _uris(col, np.concatenate([a, b]))
    pairs = pd.DataFrame(
        {
            **columns,
            "id_a": a,
            "id_b": b,
            "uri_a": [uris.get(int(i), "") for i in a],
            "uri_b": [uris.get(int(i), "") for i in b],
            "inlier_ratio": np.where(matches > 0, inliers.clip(0) / np.maximum(matches, 1), 0.0),
        },
        columns=PAIR_COLUMNS,
    )
    pairs = pairs.astype({"mirrored": bool, "verified": bool})
    return pairs.sort_values(["score", "similarity"], ascending=False, ignore_index=True)


def _assemble(
    col: Collection,
    pairs: pd.DataFrame,
    skipped: list[dict[str, Any]],
    params: dict[str, Any],
    *,
    segments: bool = True,
    min_keyframes: int = 2,
) -> Duplicates:
    """:class:`Duplicates` from a pairs table: the verified pairs' groups and segments."""
    import pandas as pd

    good = pairs[pairs["verified"]]
    best: dict[int, float] = {}
    for x, y, s in zip(good["id_a"], good["id_b"], good["score"], strict=True):
        for i in (int(x), int(y)):
            best[i] = max(best.get(i, 0.0), float(s))
    uri_of = dict(zip(good["id_a"], good["uri_a"], strict=True))
    uri_of.update(zip(good["id_b"], good["uri_b"], strict=True))
    groups = [
        CopyGroup(g, [uri_of.get(i, "") for i in g], max(best.get(i, 0.0) for i in g))
        for g in connected_groups(zip(good["id_a"], good["id_b"], strict=True))
    ]
    segs = (
        repeated_segments(col, good, min_keyframes=min_keyframes)
        if segments
        else pd.DataFrame(columns=SEGMENT_COLUMNS)
    )
    return Duplicates(groups, pairs, segs, skipped, params)


def _uri(path: Path | None) -> str:
    import os

    return "" if path is None else os.fsdecode(path)


def _uris(col: Collection, ids: np.ndarray) -> dict[int, str]:
    if not ids.size:
        return {}
    items = col.items(np.unique(ids).tolist(), status=None)
    return {int(i): str(u) for i, u in zip(items["id"], items["uri"], strict=True)}


def _progress(total: int, progress: bool | Callable[[int, int], None]):
    """A bar over the pairs verified: tqdm's (``progress=True``), or ``progress(done, total)``
    called as they are (a widget's status)."""
    if not progress or total == 0:
        return None
    if callable(progress):
        return _Counter(total, progress)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="verifying", unit="pair")


class _Counter:
    def __init__(self, total: int, report: Callable[[int, int], None]):
        self.total, self.done, self.report = total, 0, report
        self._last = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= 0.5 or self.done >= self.total:  # at most twice a second
            self._last = now
            self.report(self.done, self.total)

    def close(self) -> None:
        pass


def collapse(frame: pd.DataFrame, found: Duplicates) -> pd.DataFrame:
    """``frame`` (a result table) with the items of one copy group shown once, at the rank of
    the best of them: ``copies`` counts the rows folded into it (0: none), ``copy_ids`` lists
    their ids. Ranks are renumbered.

    >>> res = col.search(text="a bird", k=100)                               # doctest: +SKIP
    >>> collapse(res, col.duplicates(ids=res["id"]))[["id", "copies"]]     # doctest: +SKIP
    """
    group_of = found.group_of()
    out = frame.reset_index(drop=True)
    groups = [group_of.get(int(i), -1 - n) for n, i in enumerate(out["id"])]
    first: dict[int, int] = {}
    folded: dict[int, list[int]] = {}
    for n, g in enumerate(groups):
        if g in first:
            folded[first[g]].append(int(out.at[n, "id"]))
        else:
            first[g] = n
            folded[n] = []
    keep = sorted(first.values())
    out = out.iloc[keep].reset_index(drop=True)
    out["copies"] = [len(folded[n]) for n in keep]
    out["copy_ids"] = [folded[n] for n in keep]
    if "rank" in out:
        out["rank"] = np.arange(1, len(out) + 1)
    return out


# --- kept in the collection ------------------------------------------------------------------
#: The copies found in the whole collection, kept in its directory (JSON, written atomically)
#: by :func:`update_duplicates` and read by the "collapse copies" switch and the Copies tab.
COPIES_FILE = "copies.json"
_COPIES_LOCK = ".copies.lock"
_FORMAT = "snoop-copies/1"
#: The verification's version: copies kept by another one are found again.
METHOD = "rootsift-ransac-similarity/1"
#: The options that decide which pairs are copies: kept copies are updated under the same only.
KEPT_OPTIONS = ("threshold", "k", "verify", "min_inliers", "mutual", "flip", "side")
_SAVED_COLUMNS = [
    "id_a",
    "id_b",
    "similarity",
    "inliers",
    "matches",
    "coverage",
    "keypoints",
    "mirrored",
    "score",
]


class CopiesBusyError(SnoopError):
    """Another process is finding the copies of this collection."""


@dataclass
class _Saved:
    params: dict[str, Any]
    covered: np.ndarray  # the ids looked at (sorted)
    pairs: pd.DataFrame  # the verified pairs, _SAVED_COLUMNS
    skipped: list[dict[str, Any]]
    time: str


def copies_options(**options: Any) -> dict[str, Any]:
    """The :data:`KEPT_OPTIONS` of a run with ``options``, defaults filled in."""
    unknown = set(options) - set(KEPT_OPTIONS)
    if unknown:
        raise UsageError(
            f"unknown option(s) {', '.join(sorted(unknown))}: use {', '.join(KEPT_OPTIONS)}"
        )
    verify = True if options.get("verify") is None else bool(options["verify"])
    threshold = options.get("threshold")
    if threshold is None:
        threshold = CANDIDATE_SIMILARITY if verify else GLOBAL_SIMILARITY
    defaults = {"k": DEFAULT_K, "min_inliers": MIN_INLIERS, "mutual": False, "flip": True}
    out = {
        "threshold": float(threshold),
        "verify": verify,
        "side": int(options.get("side") or SIDE),
    }
    for key, value in defaults.items():
        got = options.get(key)
        out[key] = type(value)(value if got is None else got)
    return {key: out[key] for key in KEPT_OPTIONS}


def _ranges(ids: np.ndarray) -> list[list[int]]:
    """Sorted unique ids as ``[[first, last], ...]`` runs (ids are mostly consecutive)."""
    ids = np.unique(np.asarray(ids, np.int64))
    if not ids.size:
        return []
    breaks = np.flatnonzero(np.diff(ids) != 1)
    starts = np.concatenate([ids[:1], ids[breaks + 1]])
    ends = np.concatenate([ids[breaks], ids[-1:]])
    return [[int(x), int(y)] for x, y in zip(starts, ends, strict=True)]


def _from_ranges(runs) -> np.ndarray:
    parts = [np.arange(int(x), int(y) + 1, dtype=np.int64) for x, y in runs]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _read_saved(col: Collection) -> _Saved | None:
    """The copies kept in ``col``, or None: never found, found with another model or method,
    or unreadable (then they are found again, with a warning)."""
    import json
    import logging

    import pandas as pd

    path = Path(col.root) / COPIES_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("format") != _FORMAT:
            raise ValueError(f"format {raw.get('format')!r}")
        if raw.get("embedder") != col.embedder_id or raw.get("method") != METHOD:
            return None
        pairs = pd.DataFrame(raw["pairs"], columns=_SAVED_COLUMNS)
        return _Saved(
            params=dict(raw["params"]),
            covered=_from_ranges(raw["covered"]),
            pairs=pairs.astype({"id_a": np.int64, "id_b": np.int64, "mirrored": bool}),
            skipped=list(raw.get("skipped", [])),
            time=str(raw.get("time", "")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        logging.getLogger(__name__).warning(
            "%s is unreadable (%s): copies are found again", path, e
        )
        return None


def _write_saved(col: Collection, pairs: pd.DataFrame, covered: np.ndarray, found: Duplicates):
    import json

    from snoop_nb.index.base import atomic_write

    good = pairs[pairs["verified"]]
    data = {
        "format": _FORMAT,
        "method": METHOD,
        "embedder": col.embedder_id,
        "params": {k: found.params[k] for k in KEPT_OPTIONS},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "covered": _ranges(covered),
        "pairs": [
            [c.item() if hasattr(c, "item") else c for c in row]
            for row in good[_SAVED_COLUMNS].itertuples(index=False)
        ],
        "skipped": [{**s, "id": int(s["id"])} for s in found.skipped],
    }
    atomic_write(
        Path(col.root) / COPIES_FILE,
        lambda tmp: Path(tmp).write_text(json.dumps(data), encoding="utf-8"),
    )


def _checked(saved: _Saved) -> np.ndarray:
    """The ids whose pairs were all verified: skipped (unreadable) ones are tried again."""
    return np.setdiff1d(saved.covered, [int(s["id"]) for s in saved.skipped])


def _kept_pairs(col: Collection, saved: _Saved, live: np.ndarray) -> pd.DataFrame:
    """The kept verified pairs whose two items are both ``live``, as a pairs table."""
    p = saved.pairs
    alive = np.isin(p["id_a"].to_numpy(), live) & np.isin(p["id_b"].to_numpy(), live)
    columns = {c: p[c].to_numpy()[alive] for c in _SAVED_COLUMNS}
    columns["verified"] = np.ones(int(alive.sum()), bool)
    return _pairs_frame(col, columns)


def saved_duplicates(
    col: Collection, ids: Iterable[int] | None = None, *, segments: bool = True
) -> Duplicates | None:
    """The copies kept in ``col`` by :func:`update_duplicates` (None if none are), among its
    live items (or those of ``ids``): removed items dropped, the ones added since in
    ``unchecked``. Groups are the whole collection's, cut to ``ids``; ``pairs`` holds the
    verified pairs only. Reading them costs a file read, whatever the collection's size."""
    saved = _read_saved(col)
    if saved is None:
        return None
    live = col.ok_ids()
    found = _assemble(col, _kept_pairs(col, saved, live), [], dict(saved.params), segments=segments)
    scope = live if ids is None else np.intersect1d(np.asarray(list(ids), np.int64), live)
    inside = set(scope.tolist())
    if ids is not None:
        cut = [(g, [n for n, i in enumerate(g.ids) if i in inside]) for g in found.groups]
        found.groups = [
            CopyGroup([g.ids[n] for n in keep], [g.uris[n] for n in keep], g.score)
            for g, keep in cut
            if len(keep) >= 2
        ]
        found.groups.sort(key=lambda g: -len(g))
        pa, pb = found.pairs["id_a"].to_numpy(), found.pairs["id_b"].to_numpy()
        found.pairs = found.pairs[np.isin(pa, scope) & np.isin(pb, scope)].reset_index(drop=True)
    found.skipped = [s for s in saved.skipped if int(s["id"]) in inside]
    found.saved = saved.time
    found.unchecked = np.setdiff1d(scope, _checked(saved)).tolist()
    return found


def update_duplicates(
    col: Collection,
    *,
    rebuild: bool = False,
    wait: float = 3600.0,
    progress: bool | Callable[[int, int], None] = False,
    **options: Any,
) -> Duplicates:
    """Find the copies of the whole collection and keep them in it (:data:`COPIES_FILE`), so
    that the "collapse copies" switch and the Copies tab read them rather than verify pictures
    for each visitor. Incremental: with copies kept under the same options, only the candidate
    pairs of the items added since (and of those that could not be read) are verified, and
    removed items are dropped; ``rebuild=True`` (or other ``options``, see
    :func:`find_duplicates`) verifies everything again. One process at a time: another one
    waits up to ``wait`` seconds (then :class:`CopiesBusyError`) and reuses what this one kept.
    Returns :func:`saved_duplicates` of the result (its ``pairs`` also hold the candidates
    checked now and found no copies)."""
    from snoop_nb.store.lock import file_lock

    wanted = copies_options(**options)

    def busy() -> CopiesBusyError:
        return CopiesBusyError(
            f"the copies of {col.root} are being found by another process; try again later"
        )

    with file_lock(Path(col.root) / _COPIES_LOCK, wait=wait, busy=busy):
        live = col.ok_ids()
        saved = None if rebuild else _read_saved(col)
        if saved is not None and saved.params == wanted:
            new = np.setdiff1d(live, _checked(saved))
            fresh = (
                find_duplicates(col, touching=new, segments=False, progress=progress, **wanted)
                if new.size
                else None
            )
            kept = _kept_pairs(col, saved, live)
            if fresh is None:
                found = _assemble(col, kept, [], dict(saved.params), segments=False)
                alive_ids = set(live.tolist())
                found.skipped = [s for s in saved.skipped if int(s["id"]) in alive_ids]
            else:
                import pandas as pd

                both = pd.concat([kept, fresh.pairs], ignore_index=True)
                both = both.sort_values(["score", "similarity"], ascending=False, ignore_index=True)
                found = _assemble(col, both, fresh.skipped, fresh.params, segments=False)
        else:
            found = find_duplicates(col, segments=False, progress=progress, **wanted)
        _write_saved(col, found.pairs, live, found)
        checked_now = found.pairs
    result = saved_duplicates(col)
    assert result is not None
    unverified = checked_now[~checked_now["verified"]]
    if len(unverified):
        import pandas as pd

        result.pairs = pd.concat([result.pairs, unverified], ignore_index=True)
    return result


def copies_among(col: Collection, ids: Iterable[int]) -> Duplicates:
    """The copy groups among ``ids`` (a page of results, for "collapse copies"): those kept in
    the collection, plus the ones of items it has not checked yet, verified now among ``ids``;
    all verified now among ``ids`` when none are kept."""
    ids = np.asarray(list(ids), np.int64)
    saved = saved_duplicates(col, ids=ids, segments=False)
    if saved is None:
        return find_duplicates(col, ids=ids, segments=False)
    if not saved.unchecked:
        return saved
    import pandas as pd

    options = {k: saved.params[k] for k in KEPT_OPTIONS if k in saved.params}
    fresh = find_duplicates(col, ids=ids, touching=saved.unchecked, segments=False, **options)
    both = pd.concat([saved.pairs, fresh.pairs], ignore_index=True)
    found = _assemble(col, both, fresh.skipped, fresh.params, segments=False)
    # the kept groups join items through others outside ``ids``: link them as groups, not pairs
    links = [(g.ids[0], i) for g in saved.groups for i in g.ids[1:]]
    good = fresh.pairs[fresh.pairs["verified"]]
    links += list(zip(good["id_a"].astype(int), good["id_b"].astype(int), strict=True))
    uri_of = {
        i: u for g in (*saved.groups, *found.groups) for i, u in zip(g.ids, g.uris, strict=True)
    }
    score_of = {i: g.score for g in (*saved.groups, *found.groups) for i in g.ids}
    found.groups = [
        CopyGroup(g, [uri_of.get(i, "") for i in g], max(score_of.get(i, 0.0) for i in g))
        for g in connected_groups(links)
    ]
    found.saved = saved.saved
    return found


# --- video -----------------------------------------------------------------------------------
def repeated_segments(
    col: Collection,
    pairs: pd.DataFrame,
    *,
    min_keyframes: int = 2,
    tolerance: float = 1.0,
    max_gap: float = 25.0,
) -> pd.DataFrame:
    """Segments of one video shown in another: the copied keyframe pairs (``pairs``' verified
    rows) of two videos, grouped by their time offset (``t_b - t_a`` within ``tolerance``
    seconds) and chained in time (at most ``max_gap`` seconds between two in a row), at least
    ``min_keyframes`` a segment. A segment spans the shots of its keyframes in both videos
    (their intersection once mapped by the offset): ``t_a``, ``t_b`` are its starts,
    ``duration`` its length (s). Columns :data:`SEGMENT_COLUMNS`, longest first."""
    import pandas as pd

    empty = pd.DataFrame(columns=SEGMENT_COLUMNS)
    if pairs.empty:
        return empty
    ids = np.unique(np.concatenate([pairs["id_a"].to_numpy(), pairs["id_b"].to_numpy()]))
    items = col.items(ids.tolist(), status=None)
    if items.empty or "kind" not in items or "t" not in items:
        return empty
    frames = items[items["kind"] == "keyframe"].set_index("id")
    if frames.empty:
        return empty
    video_of = frames["video_id"].astype(int).to_dict()
    info = {int(i): (float(r.t), float(r.t_start), float(r.t_end)) for i, r in frames.iterrows()}
    videos = col.videos(status=None).set_index("id")["uri"].to_dict()
    by_videos: dict[tuple[int, int], list[tuple[float, float, int, int, int]]] = {}
    for x, y, n in zip(pairs["id_a"], pairs["id_b"], pairs["inliers"], strict=True):
        x, y = int(x), int(y)
        if x not in info or y not in info or video_of[x] == video_of[y]:
            continue
        if video_of[x] > video_of[y]:
            x, y = y, x
        by_videos.setdefault((video_of[x], video_of[y]), []).append(
            (info[x][0], info[y][0], x, y, int(n))
        )
    rows = []
    for (va, vb), hits in by_videos.items():
        hits.sort(key=lambda h: h[1] - h[0])
        clusters: list[list] = []
        for h in hits:  # offsets sorted: split where two in a row differ by more than tolerance
            if (
                clusters
                and (h[1] - h[0]) - (clusters[-1][-1][1] - clusters[-1][-1][0]) <= tolerance
            ):
                clusters[-1].append(h)
            else:
                clusters.append([h])
        for cluster in clusters:
            cluster.sort()
            run = [cluster[0]]
            for h in [*cluster[1:], None]:
                if h is not None and h[0] - run[-1][0] <= max_gap:
                    run.append(h)
                    continue
                if len({r[2] for r in run}) >= min_keyframes:
                    rows.append(_segment(run, info, videos, va, vb))
                if h is not None:
                    run = [h]
    if not rows:
        return empty
    out = pd.DataFrame(rows, columns=SEGMENT_COLUMNS)
    return out.sort_values(["duration", "t_a"], ascending=[False, True], ignore_index=True)


def _segment(run, info, videos, va: int, vb: int) -> dict[str, Any]:
    offset = float(np.median([h[1] - h[0] for h in run]))
    start_a = min(info[h[2]][1] for h in run)
    end_a = max(info[h[2]][2] for h in run)
    start_b = min(info[h[3]][1] for h in run)
    end_b = max(info[h[3]][2] for h in run)
    start = max(start_a, start_b - offset)
    end = min(end_a, end_b - offset)
    if end <= start:  # shots that disagree: the keyframes' own span
        start, end = min(h[0] for h in run), max(h[0] for h in run)
    return {
        "video_a": str(videos.get(va, va)),
        "t_a": round(start, 3),
        "video_b": str(videos.get(vb, vb)),
        "t_b": round(start + offset, 3),
        "duration": round(end - start, 3),
        "offset": round(offset, 3),
        "keyframes": len({h[2] for h in run}),
        "inliers": int(sum(h[4] for h in run)),
        "video_id_a": int(va),
        "video_id_b": int(vb),
    }


__all__ = [
    "CANDIDATE_SIMILARITY",
    "GLOBAL_SIMILARITY",
    "MIN_INLIERS",
    "CopyGroup",
    "Duplicates",
    "LocalVerifier",
    "candidate_pairs",
    "collapse",
    "connected_groups",
    "find_duplicates",
    "repeated_segments",
]
