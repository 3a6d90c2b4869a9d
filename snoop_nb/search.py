"""Queries over a collection, answered as pandas DataFrames.

Every query returns the same core columns, best first:

``rank`` (1-based), ``id``, ``uri``, ``score`` (higher is closer), ``similarity`` (the
cosine similarity to the query; searches only), ``kind``, ``width``, ``height``, ``size``,
``video``, ``t_start``, ``t_end``, then one column per metadata key the items carry.

A search's ``score`` is, by default, its expanded score (``expand=True``): the query's nearest
:data:`~snoop_nb.index.diffusion.CANDIDATES` items re-ranked by diffusion over their own
neighbourhood graph (:mod:`snoop_nb.index.diffusion`), below 0.95, except copies of the query
(similarity 0.95 or more), which keep their similarity and come first; with ``expand=False``
it is the similarity. Beyond those candidates, results follow by similarity, scored below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from snoop_nb.errors import UsageError

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.collection import Collection

#: Below this many items, search is exact by default (it is fast and it is the truth).
EXACT_SEARCH_BELOW = 20_000

CORE_COLUMNS = [
    "rank",
    "id",
    "uri",
    "score",
    "similarity",
    "kind",
    "width",
    "height",
    "size",
    "video",
    "t_start",
    "t_end",
]


#: A search grouped per video looks this many times deeper than ``k`` moments, so that ``k``
#: videos come back even when the best moments crowd into a few videos.
GROUP_DEPTH = 10
#: Frames a clip query samples over its time range (evenly), then pools.
CLIP_FRAMES = 8


def query_vector(
    col: Collection,
    *,
    item: int | None = None,
    image: Any = None,
    text: str | None = None,
    vector: Any = None,
    clip: Any = None,
) -> np.ndarray:
    """The (dim,) float32 query vector of exactly one of item, image, text, vector or clip."""
    given = [
        name
        for name, v in (
            ("item", item),
            ("image", image),
            ("text", text),
            ("vector", vector),
            ("clip", clip),
        )
        if v is not None
    ]
    if len(given) != 1:
        raise UsageError("give exactly one query: item, image, text, vector or clip")
    if clip is not None:
        return clip_vector(col, clip)
    if item is not None:
        info = col.item(int(item))
        if info["status"] != "ok":
            raise UsageError(f"item {item} has no vector ({info['status']}: {info.get('error')})")
        return col.vectors_of([int(item)])[0]
    if image is not None:
        return col.embedder.encode_image(image).astype(np.float32)
    if text is not None:
        if not str(text).strip():
            raise UsageError("the text query is empty")
        return col.embedder.encode_texts([str(text)])[0].astype(np.float32)
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if v.size != col.dim:
        raise UsageError(f"the query vector has {v.size} values; this collection's have {col.dim}")
    return v


def search(
    col: Collection,
    *,
    item: int | None = None,
    image: Any = None,
    text: str | None = None,
    vector: Any = None,
    clip: Any = None,
    k: int = 10,
    exact: bool | None = None,
    group: str | None = None,
    expand: bool = True,
    box: Any = None,
    regions: bool | None = None,
) -> pd.DataFrame:
    """The ``k`` items nearest to one query (see :meth:`Collection.search`).

    A query by item leaves that item out of its own results. ``group="video"`` returns up to
    ``k`` videos instead (see :func:`group_by_video`), from the ``k * GROUP_DEPTH`` nearest
    moments. ``expand`` re-ranks the nearest candidates by diffusion (module docstring).
    """
    from snoop_nb.index import diffusion

    if k < 1:
        raise UsageError("k must be at least 1")
    if group not in (None, "video"):
        raise UsageError(f"group must be 'video' or None, not {group!r}")
    if box is not None:
        from snoop_nb.regions import region_query

        if (
            (item is None and image is None)
            or text is not None
            or vector is not None
            or clip is not None
        ):
            raise UsageError("a box is a region of a picture: give it with item= or image=")
        q = region_query(col, box, item=item, image=image)
    else:
        q = query_vector(col, item=item, image=image, text=text, vector=vector, clip=clip)
    if regions is None:
        from snoop_nb.regions import has_regions

        regions = has_regions(col)
    elif regions:
        from snoop_nb.regions import has_regions

        if not has_regions(col):
            raise UsageError(
                f"{col.root} has no regions made by its model: index them first "
                "(col.index_regions(), snoop index --regions)"
            )
    n = len(col)
    if exact is None:
        exact = n < EXACT_SEARCH_BELOW
    index = col.exact_index() if exact else col.index
    depth = k * GROUP_DEPTH if group else k
    fetch = max(depth, diffusion.CANDIDATES) if expand else depth
    want = min(max(n, 1), fetch + (1 if item is not None else 0))
    ids, sims = index.search(q[None, :], want)
    ids, sims = ids[0], sims[0]
    keep = ids >= 0
    if item is not None:
        keep &= ids != int(item)
    ids, sims = ids[keep], sims[keep].astype(np.float32)
    region_sims = region_boxes = None
    if regions:
        ids, sims, region_sims, region_boxes = _with_regions(col, q, ids, sims, want, item)
    scores = sims
    # The diffusion graph is made of whole pictures' vectors: it would pull an object's
    # matches back towards pictures that merely look like its backgrounds. With regions the
    # score is the similarity.
    if expand and not regions and len(ids) > 2:
        m = min(len(ids), diffusion.CANDIDATES)
        head = diffusion.diffuse(sims[:m], col.vectors_of(ids[:m]))
        # beyond the candidates, by similarity, below them all
        tail = diffusion.MIX * sims[m:] / max(float(np.abs(sims).max()), 1e-6) - 1.0
        order = np.argsort(-head, kind="stable")
        ids = np.concatenate([ids[:m][order], ids[m:]])
        sims = np.concatenate([sims[:m][order], sims[m:]])
        scores = np.concatenate([head[order], tail]).astype(np.float32)
    hits = results_frame(col, ids[:depth], scores[:depth], similarity=sims[:depth])
    if regions:
        hits["region_similarity"] = region_sims[:depth]
        hits["box"] = [
            None if np.isnan(b[0]) else tuple(round(float(v), 4) for v in b)
            for b in region_boxes[:depth]
        ]
    return group_by_video(hits, k=k) if group else hits


def _with_regions(col, q, ids, sims, want: int, item):
    """Global candidates merged with the items whose best region is nearest: each item's
    similarity is the better of its global one and its best region's; best first. Returns
    (ids, similarities, best region similarities, best boxes), the last two NaN where the
    whole picture matched better than any of its regions."""
    from snoop_nb.regions import best_regions

    q = q / max(float(np.linalg.norm(q)), 1e-12)
    r_ids, r_sims, r_boxes = best_regions(col, q, want + 1)
    if item is not None:
        keep = r_ids != int(item)
        r_ids, r_sims, r_boxes = r_ids[keep], r_sims[keep], r_boxes[keep]
    union = np.union1d(ids, r_ids)
    glob = np.full(union.size, -np.inf, np.float32)
    glob[np.searchsorted(union, ids)] = sims
    missing = ~np.isin(union, ids)
    if missing.any():  # region hits outside the global candidates: their global similarity
        glob[missing] = col.vectors_of(union[missing]).astype(np.float32) @ q
    reg = np.full(union.size, -np.inf, np.float32)
    boxes = np.full((union.size, 4), np.nan, np.float32)
    at = np.searchsorted(union, r_ids)
    reg[at], boxes[at] = r_sims, r_boxes
    best = np.maximum(glob, reg)
    whole = reg <= glob  # the whole picture matched better: no region to show
    reg[whole], boxes[whole] = np.nan, np.nan
    order = np.argsort(-best, kind="stable")[:want]
    return union[order], best[order], reg[order], boxes[order]


def clip_vector(col: Collection, clip: Any) -> np.ndarray:
    """One query vector for a stretch of video: ``path`` (the whole file) or ``(path, t0, t1)``
    seconds. :data:`CLIP_FRAMES` frames spread evenly over the range are embedded, and their
    unit vectors averaged and scaled back to unit length (the clip's mean direction)."""
    from snoop_nb.media.video import probe, read_frames

    if isinstance(clip, (tuple, list)):
        if len(clip) != 3:
            raise UsageError("a clip is a path, or (path, start, end) in seconds")
        path, t0, t1 = clip[0], float(clip[1]), float(clip[2])
    else:
        path, t0, t1 = clip, 0.0, None
    info = probe(path)
    end = info.duration if t1 is None else min(float(t1), info.duration)
    if not end > t0 >= 0:
        raise UsageError(
            f"the clip's range {t0:g}-{end:g} s is empty (the video lasts {info.duration:.2f} s)"
        )
    times = [t0 + (end - t0) * (i + 0.5) / CLIP_FRAMES for i in range(CLIP_FRAMES)]
    frames = read_frames(path, times, info=info, max_side=512)
    vecs = col.embedder.encode_images(frames).astype(np.float32)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    mean = vecs.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


#: Columns of a results frame that describe one moment, not its video.
_MOMENT_COLUMNS = {
    "rank",
    "id",
    "uri",
    "score",
    "similarity",
    "kind",
    "width",
    "height",
    "size",
    "t_start",
    "t_end",
    "t",
    "shot",
    "video_id",
}


def group_by_video(results: pd.DataFrame, *, k: int | None = None) -> pd.DataFrame:
    """Search results (best first) as one row per video, best video first.

    A video's ``score`` is its best moment's; ``moments`` lists its hits, best first, as
    ``{id, t_start, t_end, t, score}`` (``t`` the keyframe's time, ``t_start``/``t_end`` its
    shot); ``hits`` counts them; the video's own fields (``channel``, ``date``, ``title``...)
    follow. A picture in the results is a group of its own (``kind`` "image", ``video`` its
    uri, one moment without times). At most ``k`` groups are returned.
    """
    import pandas as pd

    groups: dict[str, dict[str, Any]] = {}
    extra = [c for c in results.columns if c not in _MOMENT_COLUMNS and c != "video"]
    for row in results.itertuples(index=False):
        r = row._asdict()
        is_frame = r.get("kind") == "keyframe" and isinstance(r.get("video"), str)
        key = r["video"] if is_frame else r["uri"]
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "video": key,
                "kind": "video" if is_frame else "image",
                "score": float(r["score"]),
                "hits": 0,
                "best_id": int(r["id"]),
                "moments": [],
                **{c: r.get(c) for c in extra},
            }
        g["hits"] += 1
        g["moments"].append(
            {
                "id": int(r["id"]),
                "t_start": _num(r.get("t_start")),
                "t_end": _num(r.get("t_end")),
                "t": _num(r.get("t")),
                "score": float(r["score"]),
            }
        )
    rows = sorted(groups.values(), key=lambda g: -g["score"])
    if k is not None:
        rows = rows[:k]
    cols = ["rank", "video", "kind", "score", "hits", "best_id", "moments", *extra]
    df = pd.DataFrame(rows, columns=cols[1:])
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df[cols]


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) else f


def results_frame(
    col: Collection, ids: np.ndarray, scores: np.ndarray, *, similarity: np.ndarray | None = None
) -> pd.DataFrame:
    """Ranked ids and scores joined with their catalog rows, in the documented columns."""
    import pandas as pd

    ids = np.asarray(ids, dtype=np.int64)
    cat = col.items(ids.tolist(), status=None).set_index("id")
    df = pd.DataFrame(
        {"rank": np.arange(1, len(ids) + 1), "id": ids, "score": np.asarray(scores, np.float32)}
    )
    if similarity is not None:
        df["similarity"] = np.asarray(similarity, np.float32)
    df = df.join(cat.drop(columns=["status", "error", "digest"], errors="ignore"), on="id")
    extra = [c for c in df.columns if c not in CORE_COLUMNS]
    return df[[c for c in CORE_COLUMNS if c in df.columns] + extra].reset_index(drop=True)
