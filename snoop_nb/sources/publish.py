"""Publish pictures as a static IIIF tree (Image API 3 level 0 + a Presentation 3 manifest).

A level-0 image service is plain files: ``{id}/info.json`` lists the sizes on offer and each
size is a JPEG at ``{id}/full/{w},{h}/0/default.jpg`` (plus ``full/max``). Any static web
server can serve the tree, and IIIF viewers (Mirador, Universal Viewer) and snoop-nb's own
fetcher (:mod:`snoop_nb.sources.iiif`) read it. Offered sizes are the full size and its
halvings down to ``smallest`` pixels on the short side, so a client takes the smallest one
that is big enough (snoop-nb asks for the embedder's side, not the full scan).

The notebooks use it to show IIIF sources with no network; a team can use it to publish a
folder of scans for its viewers.

>>> url = publish_level0(["a.jpg", "b.png"], "site", "http://127.0.0.1:8000")  # doctest: +SKIP
>>> with StaticServer("site") as server:                                        # doctest: +SKIP
...     col.add([f"{server.base}/manifest.json"])
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Iterable, Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from snoop_nb.errors import UsageError

#: Halvings of the full size are offered down to this short side (pixels).
SMALLEST = 32


def _flat(image):
    """RGB; a transparent picture is laid on white (as snoop-nb's decoder shows it)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return image.convert("RGB")


def _sizes(width: int, height: int, smallest: int) -> list[tuple[int, int]]:
    sizes = []
    w, h = width, height
    while min(w, h) >= smallest:
        sizes.append((w, h))
        w, h = w // 2, h // 2
    return sizes[::-1] or [(width, height)]


def publish_level0(
    pictures: Iterable[str | os.PathLike],
    site: str | os.PathLike,
    base_url: str,
    *,
    label: str = "Pictures",
    canvas_labels: Sequence[str] | None = None,
    quality: int = 90,
    smallest: int = SMALLEST,
) -> str:
    """Write ``pictures`` under ``site`` as level-0 image services and a manifest; its URL.

    ``base_url`` is where ``site`` will be served (``http://host:port/path``, no trailing
    slash needed). Picture *i* (from 1) is the service ``{base_url}/img/{i}``; its canvas is
    labelled ``canvas_labels[i - 1]``, by default the file's name. The manifest is ``site/manifest.json``. A file that cannot
    be read as a picture raises :class:`~snoop_nb.errors.UsageError` naming it: nothing is
    published half-way silently.
    """
    from PIL import Image, UnidentifiedImageError

    base = base_url.rstrip("/")
    root = Path(site)
    canvases = []
    for i, picture in enumerate(pictures, start=1):
        path = Path(picture)
        try:
            with Image.open(path) as opened:
                im = _flat(opened)
        except (OSError, UnidentifiedImageError) as e:
            raise UsageError(f"cannot publish {path}: {e}") from e
        ident = f"img/{i}"
        folder = root / ident
        sizes = _sizes(im.width, im.height, smallest)
        for sw, sh in sizes:
            out = folder / "full" / f"{sw},{sh}" / "0"
            out.mkdir(parents=True, exist_ok=True)
            im.resize((sw, sh), Image.Resampling.LANCZOS).save(out / "default.jpg", quality=quality)
        (folder / "full" / "max" / "0").mkdir(parents=True, exist_ok=True)
        im.save(folder / "full" / "max" / "0" / "default.jpg", quality=quality)
        service = {"id": f"{base}/{ident}", "type": "ImageService3", "profile": "level0"}
        info = {
            "@context": "http://iiif.io/api/image/3/context.json",
            **service,
            "protocol": "http://iiif.io/api/image",
            "width": im.width,
            "height": im.height,
            "sizes": [{"width": a, "height": b} for a, b in sizes],
        }
        (folder / "info.json").write_text(json.dumps(info))
        canvas = f"{base}/canvas/{i}"
        body = {
            "id": f"{base}/{ident}/full/max/0/default.jpg",
            "type": "Image",
            "format": "image/jpeg",
            "width": im.width,
            "height": im.height,
            "service": [service],
        }
        annotation = {
            "id": f"{canvas}/annotation",
            "type": "Annotation",
            "motivation": "painting",
            "target": canvas,
            "body": body,
        }
        canvases.append(
            {
                "id": canvas,
                "type": "Canvas",
                "label": {"none": [canvas_labels[i - 1] if canvas_labels else path.name]},
                "width": im.width,
                "height": im.height,
                "items": [
                    {"id": f"{canvas}/page", "type": "AnnotationPage", "items": [annotation]}
                ],
            }
        )
    if not canvases:
        raise UsageError("nothing to publish: no pictures given")
    manifest = {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": f"{base}/manifest.json",
        "type": "Manifest",
        "label": {"none": [label]},
        "items": canvases,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False))
    return f"{base}/manifest.json"


class StaticServer:
    """A quiet static HTTP server over ``root`` on 127.0.0.1 (a free port), in a thread.

    ``base`` is its URL; ``requests`` counts the GET requests it answered. For notebooks,
    tests and benchmarks; a real deployment serves the tree with its own web server.
    """

    def __init__(self, root: str | os.PathLike, port: int = 0):
        self.requests = 0
        lock = threading.Lock()
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                with lock:
                    server.requests += 1
                super().do_GET()

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> StaticServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
