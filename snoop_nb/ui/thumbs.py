"""Thumbnails of a collection's items, as JPEG bytes for the widget channel.

The browser never gets a file path: each thumbnail is decoded here (safely, with the same
limits as indexing), shrunk, encoded and sent as bytes. Files are shrunk while they are
decoded (``load_image``'s ``min_size`` and ``draft``): a 170-megapixel scan's tile costs
~100 MB and a second, a pyramidal TIFF's only a small level, not gigabytes. A small LRU cache
keeps the recent ones, so paging back and forth and re-ranking cost nothing.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from snoop_nb.errors import MediaError

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
            made = self._pool.map(lambda i: (i, self._make(i, paths.get(i))), todo)
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

    def _make(self, item_id: int, path) -> bytes:
        from PIL import Image

        from snoop_nb.media.decode import load_image

        if path is None:
            self._errors[item_id] = "unknown item"
            return b""
        try:
            box = (self.size, self.size)
            image = load_image(path, min_size=box, draft=box)
        except MediaError as e:
            self._errors[item_id] = e.reason
            return b""
        image.thumbnail((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=self.quality)
        self._errors.pop(item_id, None)
        return buf.getvalue()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
