"""Exploitation: a user's classes over the corpus as a table, and its export to CSV/Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.collection import Collection

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
