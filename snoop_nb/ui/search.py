"""SearchPanel: query the collection by text, by an uploaded picture, or by any tile."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipyvuetify as v
import ipywidgets as w

from snoop_nb.errors import SnoopError, UsageError
from snoop_nb.ui.boxpick import BoxPicker

if TYPE_CHECKING:
    from snoop_nb.collection import Collection
    from snoop_nb.ui.grid import ImageGrid

#: Largest picture a visitor may upload (bytes); bigger ones are refused before decoding.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024

K_CHOICES = [50, 100, 200, 500, 1000]


class SearchPanel(v.Card):
    """A text field, an image upload and a result count; results go into ``grid``.

    ``on_search(fn)`` calls ``fn(query)`` after each search, with ``query`` one of
    ``{"text": ...}``, ``{"image": PIL image}`` (with ``"box"`` when a box was drawn on it)
    or ``{"item": id}`` (the class trainer takes it as the starting point of a class that has
    no model yet). An uploaded picture stays shown (``picker``): a box drawn on it searches by
    that part of it.
    """

    def __init__(self, col: Collection, grid: ImageGrid, *, k: int = 100, **kwargs: Any):
        self.col = col
        self.grid = grid
        self._handlers: list[Callable[[dict], None]] = []
        self.text_field = v.TextField(
            v_model="",
            label="Search by text",
            placeholder="e.g. a bird, a red car, a lighthouse",
            prepend_inner_icon="mdi-magnify",
            clearable=True,
            hide_details=True,
            density="compact",
            variant="outlined",
            class_="snoop-search-text",
        )
        self.text_field.on_event(
            "keydown.enter", lambda *_: self.search_text(self.text_field.v_model)
        )
        self.button = v.Btn(children=["Search"], color="primary", class_="snoop-search-btn")
        self.button.on_event("click", lambda *_: self.search_text(self.text_field.v_model))
        self.k = v.Select(
            items=K_CHOICES,
            v_model=k if k in K_CHOICES else 100,
            label="results",
            density="compact",
            hide_details=True,
            style_="max-width: 110px",
            class_="snoop-search-k",
        )
        #: Show the items of one copy group once, with a "+N copies" badge (snoop_nb.copies).
        self.collapse = v.Switch(
            v_model=False,
            label="collapse copies",
            density="compact",
            hide_details=True,
            class_="snoop-search-collapse",
        )
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Search by image")
        self.upload.add_class("snoop-search-upload")
        self.upload.observe(self._on_upload, names="value")
        #: The uploaded picture, shown to draw a box on and search by that part of it.
        self.picker = BoxPicker()
        self.picker.on_region(self.search_upload_region)
        self.picker.on_whole(lambda: self.search_upload_region(None))
        self._uploaded: tuple[Any, str] | None = None
        grid.on_more_like_this(self.search_item)
        super().__init__(
            class_="pa-2 snoop-search",
            variant="outlined",
            children=[
                v.Row(
                    no_gutters=True,
                    align="center",
                    children=[
                        v.Col(children=[self.text_field], cols=12, md=6, class_="pr-2"),
                        v.Col(children=[self.button], cols="auto", class_="pr-2"),
                        v.Col(children=[self.k], cols="auto", class_="pr-2"),
                        v.Col(children=[self.upload], cols="auto"),
                        v.Col(children=[self.collapse], cols="auto", class_="pl-2"),
                    ],
                ),
                self.picker,
            ],
            **kwargs,
        )

    def on_search(self, handler: Callable[[dict], None]) -> None:
        self._handlers.append(handler)

    # --- the three kinds of query ---------------------------------------------------------
    def search_text(self, text: str | None) -> None:
        """Show the items nearest to ``text``."""
        text = (text or "").strip()
        if not text:
            self.grid.set_message("type something to search for")
            return
        self._run({"text": text}, f"“{text}”")

    def search_image(self, data: bytes, name: str = "upload") -> None:
        """Show the items nearest to an uploaded picture (checked and decoded safely)."""
        from snoop_nb.embed.pipeline import decode_size
        from snoop_nb.media.decode import load_image

        try:
            if len(data) > MAX_UPLOAD_BYTES:
                raise UsageError(
                    f"{name} is {len(data) / 2**20:.1f} MiB; pictures up to "
                    f"{MAX_UPLOAD_BYTES // 2**20} MiB can be searched"
                )
            # shrunk while decoded, as when indexing: a 20 MiB PNG can hold a gigapixel
            image = load_image(bytes(data), name=name, min_size=decode_size(self.col.embedder))
        except SnoopError as e:
            self.grid.set_message(f"cannot search with {name}: {e}")
            return
        self._uploaded = (image, name)
        self.picker.show(image, name)
        self._run({"image": image}, name)

    def search_upload_region(self, box: Any) -> None:
        """Show the items nearest to the ``box`` (fractions ``[x0, y0, x1, y1]``) of the
        uploaded picture (``None``: the whole picture)."""
        if self._uploaded is None:
            self.grid.set_message("upload a picture first")
            return
        image, name = self._uploaded
        if box is None:
            self._run({"image": image}, name)
        else:
            self._run({"image": image, "box": list(box)}, f"a part of {name}")

    def search_item(self, item_id: int) -> None:
        """Show the items nearest to item ``item_id`` ("more like this")."""
        self._run({"item": int(item_id)}, f"item #{item_id}")

    def _run(self, query: dict, what: str) -> None:
        self.button.loading = True
        try:
            frame = self.col.search(k=int(self.k.v_model or 100), **query)
            if self.collapse.v_model:
                from snoop_nb.copies import collapse, copies_among

                # the copies kept in the collection (a file read); items added since, verified now
                frame = collapse(frame, copies_among(self.col, frame["id"]))
        except SnoopError as e:
            self.grid.set_message(str(e))
            return
        finally:
            self.button.loading = False
        self.grid.show(frame, text=what)
        # a class made from these results is offered the query's name (none for a picture)
        self.grid.class_hint = query.get("text", "")
        for handler in self._handlers:
            handler(query)

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return
        upload = files[0]
        self.search_image(bytes(upload["content"]), upload.get("name") or "upload")
        self.upload.value = ()
