"""Thumbnails of a collection's items, as JPEG bytes for the widget channel.

The browser never gets a file path: each thumbnail is decoded here (safely, with the same
limits as indexing), shrunk, encoded and sent as bytes. Files are shrunk while they are
decoded (``load_image``'s ``min_size`` and ``draft``): a 170-megapixel scan's tile costs
~100 MB and a second, a pyramidal TIFF's only a small level, not gigabytes. A small LRU cache
keeps the recent ones, so paging back and forth and re-ranking cost nothing. A video keyframe's
thumbnail is the one saved when it was indexed (``keyframes/<id>.jpg``), or its frame read
again from the video.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from snoop_nb.errors import SnoopError

if TYPE_CHECKING:
    from snoop_nb.collection import Collection

#: Longest side of a thumbnail, in pixels (tiles are shown at up to this size).
THUMB_SIZE = 256


class Thumbnails:
    """JPEG thumbnails by item id, made on demand and cached (``get`` is thread-safe).

    >>> thumbs = Thumbnails(collection)            # doctest: +SKIP
    >>> jpeg = thumbs.get([3, 17])[3]              # doctest: +SKIP
    """

    def __init__(
        self,
        col: Collection,
        *,
        size: int = THUMB_SIZE,
        quality: int = 82,
        cache_items: int = 2048,
        workers: int = 4,
    ):
        self.col = col
        self.size = int(size)
        self.quality = int(quality)
        self.cache_items = int(cache_items)
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._errors: dict[int, str] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snoop-thumb")

    def get(self, ids) -> dict[int, bytes]:
        """Thumbnails of ``ids``; an item whose file cannot be read maps to ``b""``
        (:meth:`error` says why)."""
        ids = [int(i) for i in ids]
        with self._lock:
            out = {i: self._cache[i] for i in ids if i in self._cache}
            for i in out:
                self._cache.move_to_end(i)
        todo = [i for i in dict.fromkeys(ids) if i not in out]
        if todo:
            paths = self.col.paths(todo)
            moments = self._moments(todo)
            made = self._pool.map(lambda i: (i, self._make(i, paths.get(i), moments.get(i))), todo)
            with self._lock:
                for i, data in made:
                    out[i] = data
                    if data:
                        self._cache[i] = data
                while len(self._cache) > self.cache_items:
                    self._cache.popitem(last=False)
        return out

    def prefetch(self, ids) -> None:
        """Make the thumbnails of ``ids`` in the background (the next page, say)."""
        self._pool.submit(self.get, list(ids))

    def error(self, item_id: int) -> str | None:
        """Why the thumbnail of ``item_id`` could not be made, if it could not."""
        return self._errors.get(int(item_id))

    def _moments(self, ids: list[int]) -> dict[int, float]:
        """The time (s) of each video keyframe among ``ids``."""
        items = self.col.items(ids, status=None)
        if items.empty or "kind" not in items or "t" not in items:
            return {}
        frames = items[items["kind"] == "keyframe"]
        return {int(i): float(t) for i, t in zip(frames["id"], frames["t"], strict=True)}

    def _make(self, item_id: int, path, moment: float | None = None) -> bytes:
        from PIL import Image

        from snoop_nb.media.decode import load_image

        if path is None:
            self._errors[item_id] = "unknown item"
            return b""
        try:
            box = (self.size, self.size)
            if moment is None:
                image = load_image(path, min_size=box, draft=box)
            else:
                image = self._keyframe(item_id, path, moment)
        except SnoopError as e:  # a bad file (MediaError), or a keyframe's video gone
            self._errors[item_id] = getattr(e, "reason", str(e))
            return b""
        image.thumbnail((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=self.quality)
        self._errors.pop(item_id, None)
        return buf.getvalue()

    def _keyframe(self, item_id: int, path, moment: float):
        """A keyframe's picture: the thumbnail saved when it was indexed
        (``keyframes/<id>.jpg``), else the frame read again from the video at its time."""
        from PIL import Image, UnidentifiedImageError

        from snoop_nb.media.video import read_frames

        saved = self.col.root / "keyframes" / f"{item_id}.jpg"
        try:
            with Image.open(saved) as im:
                return im.convert("RGB")
        except (OSError, UnidentifiedImageError):
            pass  # a cache, best effort: read the frame from the video
        video = self.col.video_path(str(path))  # a keyframe's path is "<video>#t=<time>"
        return read_frames(video, [moment], max_side=self.size)[0]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
