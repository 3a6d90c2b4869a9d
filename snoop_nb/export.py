"""Exploitation: a user's classes over the corpus as a table, and its export to CSV/Parquet.

>>> res = class_results(col, "alice", "lighthouses")       # doctest: +SKIP
>>> res.table.head()                                        # doctest: +SKIP
>>> export_classes(col, "alice", None, "classes.parquet")   # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.collection import Collection
    from snoop_nb.kb import ClassRef, ModelRecord

#: Best-ranked items :func:`class_results` lists for a class not applied yet.
TOP_ROWS = 200

COLUMNS = [
    "class",
    "owner",
    "item_id",
    "uri",
    "label",
    "label_source",
    "label_time",
    "label_user",
    "applied",
    "score",
    "model_id",
]


def class_table(col: Collection, user: str, class_name: str | None = None) -> pd.DataFrame:
    """One row per item and class of ``user`` (or only ``class_name``): its label, and whether
    and with what probability the class was applied to it.

    Columns: class, owner, item_id, uri, label (+1, -1 or empty), label_source, label_time,
    label_user, applied (bool), score (the applied probability), model_id, then the item's
    catalog metadata.
    """
    import pandas as pd

    kb = col.kb
    refs = [kb.get_class(user, class_name)] if class_name else kb.classes(user, shared=False)
    frames = []
    for ref in refs:
        lab = kb.labels(ref).rename(
            columns={
                "value": "label",
                "source": "label_source",
                "time": "label_time",
                "user": "label_user",
            }
        )
        app = kb.applied(ref).drop(columns=["time"]).assign(applied=True)
        both = lab.merge(app, on="item_id", how="outer")
        both.insert(0, "class", ref.name)
        both.insert(1, "owner", ref.owner)
        frames.append(both)
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    table["applied"] = table["applied"].astype("boolean").fillna(False).astype(bool)
    table["label"] = table["label"].astype("Int64")
    table["model_id"] = table["model_id"].astype("Int64")
    items = col.items(table["item_id"].astype(int).unique().tolist(), status=None)
    items = items.rename(columns={"id": "item_id"}).drop(
        columns=["error", "digest"], errors="ignore"
    )
    table = table.merge(items, on="item_id", how="left")
    rest = [c for c in table.columns if c not in COLUMNS]
    return table[COLUMNS + rest].sort_values(["class", "item_id"]).reset_index(drop=True)


def export_classes(col: Collection, user: str, class_name: str | None, out: str | Path) -> int:
    """Write :func:`class_table` to ``out`` (.csv or .parquet); returns the number of rows."""
    out = Path(out)
    table = class_table(col, user, class_name)
    if out.suffix.lower() == ".parquet":
        table.to_parquet(out, index=False)
    else:
        table.to_csv(out, index=False)
    return len(table)


@dataclass
class ClassResults:
    """Where a class stands on the corpus, by its latest model (see :func:`class_results`).

    ``table``: the items it was applied to, else its ``TOP_ROWS`` best-ranked items, most
    probable first, with columns rank, id, uri, name, folder, probability, label (+1, -1, 0)
    and the catalog's metadata. ``probabilities``: every live item's probability (index: item
    id). ``labels``: the class's labels (index: item id, values +1/-1). ``applied``: how many
    live items the class was applied to; ``applied_model_id``: the model version that applied
    it (None: not applied yet, and the table holds the best-ranked items).
    """

    ref: ClassRef
    model: ModelRecord
    table: pd.DataFrame
    probabilities: pd.Series
    labels: pd.Series
    applied: int
    applied_model_id: int | None

    @property
    def total(self) -> int:
        """Live items scored."""
        return len(self.probabilities)


def class_results(
    col: Collection, user: str, class_name: str, *, top: int = TOP_ROWS
) -> ClassResults:
    """The results of ``user``'s class ``class_name`` (or of one shared as ``owner/name``).

    Never creates anything: an unknown class or user, or a class with no model yet, is a
    :class:`~snoop_nb.errors.UsageError` that says what to do.
    """
    import numpy as np

    from snoop_nb.search import results_frame

    s = col.session(user, class_name, create=False)
    prob_s = s.probabilities()
    ids, prob = prob_s.index.to_numpy(np.int64), prob_s.to_numpy()
    applied = col.kb.applied(s.ref)
    if len(applied):
        keep = np.isin(ids, applied["item_id"].to_numpy())
    else:
        keep = np.zeros(len(ids), bool)
        keep[np.argsort(-prob, kind="stable")[:top]] = True
    order = np.argsort(-prob[keep], kind="stable")
    frame = results_frame(col, ids[keep][order], prob[keep][order])
    frame = frame.rename(columns={"score": "probability"})
    lab = s.labels().set_index("item_id")["value"]
    frame.insert(4, "label", frame["id"].map(lab).fillna(0).astype(int))
    frame.insert(3, "folder", [os.path.basename(os.path.dirname(u)) for u in frame["uri"]])
    frame.insert(3, "name", [os.path.basename(u) for u in frame["uri"]])
    return ClassResults(
        ref=s.ref,
        model=s.model(),
        table=frame,
        probabilities=prob_s,
        labels=lab,
        applied=int(keep.sum()) if len(applied) else 0,
        applied_model_id=int(applied["model_id"].iloc[0]) if len(applied) else None,
    )
