"""CopiesView: the collection's copy groups, each a row of thumbnails, and its repeated video
segments. It opens on the copies kept in the collection (a file read), and its button finds
them again: :meth:`snoop_nb.collection.Collection.update_duplicates` verifies the items added
since and keeps the result, so the next visitor reads it (one process verifies at a time; the
others wait for it). A collection that cannot be written to is searched without keeping.

>>> view = CopiesView(collection)   # doctest: +SKIP
>>> view.find()                     # the groups, largest first
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

import ipyvuetify as v
import ipywidgets as w

from snoop_nb.errors import SnoopError
from snoop_nb.ui.thumbs import Thumbnails

if TYPE_CHECKING:
    from snoop_nb.collection import Collection
    from snoop_nb.copies import Duplicates

#: Thumbnails shown per group (the rest are counted).
SHOWN_PER_GROUP = 8


class CopiesView(v.Card):
    """A "Find copies" button, the copy groups found (thumbnails, names, the best pair's
    score), the repeated segments of videos, and the files that could not be verified.
    ``found`` holds the last :class:`~snoop_nb.copies.Duplicates`; ``options`` are passed to
    :meth:`~snoop_nb.collection.Collection.duplicates`."""

    def __init__(
        self,
        col: Collection,
        *,
        thumbnails: Thumbnails | None = None,
        max_groups: int = 50,
        **options: Any,
    ):
        self.col = col
        self.thumbnails = thumbnails or Thumbnails(col, size=128)
        self.max_groups = int(max_groups)
        self.options = options
        self.found: Duplicates | None = None
        self.button = v.Btn(children=["Find copies"], color="primary", class_="snoop-copies-find")
        self.button.on_event("click", lambda *_: self.find_in_background())
        self._thread: threading.Thread | None = None
        self.status = v.Html(tag="span", children=[""], class_="ml-3 snoop-copies-status")
        self.groups_box = w.VBox()
        self.groups_box.add_class("snoop-copies-groups")
        self._show_saved()
        super().__init__(
            class_="pa-2 snoop-copies",
            variant="outlined",
            children=[
                v.Row(no_gutters=True, align="center", children=[self.button, self.status]),
                self.groups_box,
            ],
        )

    def _show_saved(self) -> None:
        try:
            saved = self.col.saved_duplicates()
        except SnoopError:
            saved = None
        if saved is not None:
            self.found = saved
            self.button.children = ["Find copies again"]
            self._render()
        else:
            self.status.children = ["copies not looked for yet"]

    def find_in_background(self) -> threading.Thread | None:
        """What the button does: :meth:`find` in a thread, so the page stays live while
        pictures are verified (the status counts them); None if a search is under way."""
        if self._thread is not None and self._thread.is_alive():
            return None
        self._thread = threading.Thread(target=self.find, name="snoop-copies", daemon=True)
        self._thread.start()
        return self._thread

    def find(self) -> Duplicates | None:
        """Look for copies now (the items not checked yet, when copies are kept) and show
        them. Another process finding them meanwhile is waited for, and its result shown."""
        from snoop_nb.copies import CopiesBusyError

        self.button.loading = True
        self.status.children = ["looking for copies..."]

        def counted(done: int, total: int) -> None:
            self.status.children = [f"looking for copies: {done} of {total} pairs verified"]

        options = {"progress": counted, **self.options}
        try:
            try:
                self.found = self.col.update_duplicates(wait=0, **options)
            except CopiesBusyError:  # another visitor's kernel: wait for it, then read
                self.status.children = ["another visitor is finding copies: waiting for them"]
                self.found = self.col.update_duplicates(**options)
            except OSError:  # a read-only collection (or disk): found, not kept
                self.found = self.col.duplicates(**options)
        except SnoopError as e:
            self.status.children = [str(e)]
            return None
        finally:
            self.button.loading = False
        self.button.children = ["Find copies again"]
        self._render()
        return self.found

    def _render(self) -> None:
        found = self.found
        assert found is not None
        n_items = sum(len(g) for g in found.groups)
        words = f"{len(found.groups)} groups of copies ({n_items} items)"
        if len(found.segments):
            words += f", {len(found.segments)} repeated video segments"
        if found.skipped:
            words += f", {len(found.skipped)} files skipped"
        if not found.groups and not len(found.segments):
            words = "no copies"
        if found.saved:
            words += f" (found {found.saved.replace('T', ' ').replace('Z', ' UTC')}"
            if found.unchecked:
                words += f"; {len(found.unchecked)} items added since, not checked yet"
            words += ")"
        self.status.children = [words]
        rows: list[w.Widget] = []
        shown = found.groups[: self.max_groups]
        thumbs = self.thumbnails.get([i for g in shown for i in g.ids[:SHOWN_PER_GROUP]])
        for n, group in enumerate(shown, 1):
            tiles = []
            for i, uri in list(zip(group.ids, group.uris, strict=True))[:SHOWN_PER_GROUP]:
                image = w.Image(value=thumbs.get(i, b""), format="jpeg", width=96, height=96)
                image.add_class("snoop-copies-thumb")
                label = w.HTML(f"<small>{_html(os.path.basename(uri) or f'#{i}')}</small>")
                tiles.append(w.VBox([image, label], layout=w.Layout(width="104px")))
            more = len(group) - SHOWN_PER_GROUP
            if more > 0:
                tiles.append(w.HTML(f"+{more} more"))
            head = w.HTML(f"<b>{n}.</b> {len(group)} copies, best score {group.score:.3f}")
            box = w.VBox([head, w.HBox(tiles, layout=w.Layout(flex_flow="row wrap"))])
            box.add_class("snoop-copies-group")
            rows.append(box)
        if len(found.groups) > self.max_groups:
            rows.append(w.HTML(f"... and {len(found.groups) - self.max_groups} more groups"))
        for r in found.segments.itertuples(index=False):
            from snoop_nb.cli import timecode

            text = (
                f"repeated {timecode(r.duration)}: {os.path.basename(r.video_a)} at "
                f"{timecode(r.t_a)} = {os.path.basename(r.video_b)} at {timecode(r.t_b)}"
            )
            seg = w.HTML(_html(text))
            seg.add_class("snoop-copies-segment")
            rows.append(seg)
        for s in found.skipped:
            rows.append(w.HTML(f"<small>skipped {_html(s['uri'])}: {_html(s['reason'])}</small>"))
        self.groups_box.children = rows


def _html(text: str) -> str:
    import html

    return html.escape(str(text))
