"""Lists of pictures: a text file of paths or URLs, or a CSV with a column of them.

A ``.txt`` list has one path or URL a line; blank lines and lines starting with ``#`` are
skipped. A ``.csv`` list names its pictures in a column called ``path``, ``url``, ``uri`` or
``image`` (the first of these it has, in any case); every other column becomes the item's
metadata (kept as text, empty cells left out). Local paths are relative to the list's folder
(or absolute; ``~`` is expanded, ``file://`` URLs are paths too).

>>> entries, warnings = read_list("scans/list.csv")    # doctest: +SKIP
>>> entries[0]
Listed(target='https://example.org/iiif/p1/full/max/0/default.jpg', meta={'shelf': 'A3'}, ...)
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from snoop_nb.errors import UsageError
from snoop_nb.sources.fetch import is_url

__all__ = ["LIST_COLUMNS", "RESERVED", "Listed", "read_list"]

#: The columns that may name a CSV list's pictures, in order of preference.
LIST_COLUMNS = ("path", "url", "uri", "image")
#: Columns an item has already (a metadata column of one of these names would be hidden).
RESERVED = frozenset(
    {"id", "uri", "kind", "video", "t_start", "t_end", "size", "width", "height", "digest"}
    | {"status", "error", "score", "rank"}
)


@dataclass
class Listed:
    """One line of a list: ``target`` is a URL or an absolute path; ``where`` says which line."""

    target: str
    meta: dict[str, str] = field(default_factory=dict)
    where: str = ""


def read_list(path: str | os.PathLike) -> tuple[list[Listed], list[str]]:
    """The entries of a ``.txt`` or ``.csv`` list, in order, and warnings about it.

    Raises :class:`UsageError` when the file cannot be read, or when a CSV has no column that
    names pictures.
    """
    path = Path(path)
    folder = path.parent.absolute()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UsageError(f"{path}: cannot read the list ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not a UTF-8 text file ({e})") from None
    if path.suffix.lower() == ".csv":
        return _read_csv(path, text, folder)
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(Listed(_target(line, folder), {}, f"{path.name}, line {n}"))
    return out, []


def _read_csv(path: Path, text: str, folder: Path) -> tuple[list[Listed], list[str]]:
    import io

    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [(h or "").strip() for h in (reader.fieldnames or [])]
        rows = list(reader)
    except csv.Error as e:
        raise UsageError(f"{path}: not a readable CSV file ({e})") from None
    lower = {h.lower(): h for h in header}
    column = next((lower[c] for c in LIST_COLUMNS if c in lower), None)
    if column is None:
        hint = (
            " (a video sidecar with a 'file' column goes to --metadata)" if "file" in lower else ""
        )
        raise UsageError(
            f"{path}: a list CSV needs a column named {', '.join(LIST_COLUMNS)} giving each "
            f"picture's path or URL; its columns are {header or 'none'}{hint}"
        )
    warnings = []
    hidden = sorted(h for h in header if h.lower() in RESERVED and h != column)
    if hidden:
        warnings.append(
            f"column(s) {', '.join(hidden)} are an item's own and are not kept as metadata"
        )
    out = []
    for n, row in enumerate(rows, start=2):
        row = {(k or "").strip(): v for k, v in row.items() if k is not None}
        name = (row.pop(column, None) or "").strip()
        if not name:
            warnings.append(f"line {n}: no path or URL; row ignored")
            continue
        meta = {
            k: v.strip()
            for k, v in row.items()
            if k and k.lower() not in RESERVED and isinstance(v, str) and v.strip()
        }
        out.append(Listed(_target(name, folder), meta, f"{path.name}, line {n}"))
    return out, warnings


def _target(name: str, folder: Path) -> str:
    """A URL as given; a path made absolute against the list's folder."""
    if name.lower().startswith("file://"):
        return unquote(urlsplit(name).path)
    if is_url(name):
        return name
    return os.path.abspath(folder / os.path.expanduser(name))
