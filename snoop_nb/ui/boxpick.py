"""BoxPicker: a picture on which a box is drawn to search by that part of it.

The search panel shows an uploaded picture in one (a JPEG preview sent as bytes, like the
grid's thumbnails); a drag on it, with a mouse, a pen or a finger, draws a box, and letting go
calls the ``on_region`` handlers with the box as fractions of the picture,
``[x0, y0, x1, y1]`` (what :meth:`snoop_nb.collection.Collection.search` takes as ``box``).

>>> picker = BoxPicker()                            # doctest: +SKIP
>>> picker.on_region(lambda box: print(box))        # doctest: +SKIP
>>> picker.show(pil_image, "harbour.jpg")           # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipyvuetify as v
import traitlets as t

from snoop_nb.errors import UsageError
from snoop_nb.ui.assets import asset

if TYPE_CHECKING:
    from PIL import Image

#: Longest side of the preview sent to the browser (pixels).
PREVIEW_SIDE = 640


class BoxPicker(v.VuetifyTemplate):
    """A picture (``show``) to draw a box on; ``box`` is the last one drawn (``[]``: none).
    ``on_region(fn)`` calls ``fn(box)`` for each box drawn, ``on_whole(fn)`` ``fn()`` when the
    whole picture is asked for again; ``clear()`` (or its "close" button) takes it away."""

    template_file = asset("box_picker.vue")

    picture = t.Bytes(b"").tag(sync=True)  # the JPEG preview: a binary buffer on the wire
    name = t.Unicode("").tag(sync=True)
    box = t.List(t.Float()).tag(sync=True)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._region_handlers: list[Callable[[list[float]], None]] = []
        self._whole_handlers: list[Callable[[], None]] = []

    def on_region(self, handler: Callable[[list[float]], None]) -> None:
        self._region_handlers.append(handler)

    def on_whole(self, handler: Callable[[], None]) -> None:
        self._whole_handlers.append(handler)

    def show(self, image: Image.Image, name: str = "") -> None:
        """Show ``image`` (any size: a preview of at most :data:`PREVIEW_SIDE` px is sent)."""
        preview = image.convert("RGB")
        preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        buf = io.BytesIO()
        preview.save(buf, "JPEG", quality=85)
        self.box = []
        self.name = str(name)
        self.picture = buf.getvalue()

    def clear(self) -> None:
        self.box = []
        self.name = ""
        self.picture = b""

    @property
    def showing(self) -> bool:
        return bool(self.picture)

    # --- from the front end ------------------------------------------------------------
    def vue_region(self, data: dict | None = None) -> None:
        box = _fractions((data or {}).get("box"))
        self.box = box
        for handler in self._region_handlers:
            handler(box)

    def vue_whole(self, _data: Any = None) -> None:
        self.box = []
        for handler in self._whole_handlers:
            handler()

    def vue_close(self, _data: Any = None) -> None:
        self.clear()


def _fractions(box: Any) -> list[float]:
    """``box`` as four fractions ``x0 < x1``, ``y0 < y1`` in [0, 1] (the front end's, clamped),
    or :class:`UsageError`."""
    try:
        x0, y0, x1, y1 = (float(x) for x in box)
    except (TypeError, ValueError):
        raise UsageError(f"a box is four numbers, not {box!r}") from None
    if not all(math.isfinite(x) for x in (x0, y0, x1, y1)):
        raise UsageError(f"a box is four finite numbers, not {box!r}")
    x0, x1 = sorted(min(1.0, max(0.0, x)) for x in (x0, x1))
    y0, y1 = sorted(min(1.0, max(0.0, y)) for y in (y0, y1))
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        raise UsageError(f"the box {box!r} is empty")
    return [x0, y0, x1, y1]
