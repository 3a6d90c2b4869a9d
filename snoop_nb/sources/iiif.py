"""IIIF: the pictures of Presentation manifests, fetched through the Image API at the size needed.

A Presentation 2 manifest lists ``sequences`` of ``canvases``, each with ``images`` whose
``resource`` may carry an Image API ``service``; a Presentation 3 manifest lists ``items``
(canvases) of annotation pages of painting annotations whose ``body`` is the image (and its
``service``). Collections of manifests (2: ``manifests``/``collections``/``members``; 3:
``items`` of type ``Manifest``/``Collection``) are followed, each manifest fetched once.

Each picture is one item: its key (uri) is the image's URL as the manifest gives it, stable
whatever size is fetched; its metadata say where it comes from (``manifest``,
``manifest_label``, ``canvas``, ``canvas_label``, ``page`` counted from 1).

:func:`image_request` asks the image service for the smallest picture whose short side is at
least ``side`` pixels (the embedder's input side), never upscaled: ``{w},`` to a level 1 or 2
service (Image API 1.1, 2 and 3 alike), and at level 0, where only the sizes its ``info.json``
lists exist, the smallest of those big enough, else the whole picture (``full``, ``max`` in
Image API 3). Quality and format are ``default.jpg`` (``native.jpg`` in Image API 1.1, as
Gallica's services are: ``https://gallica.bnf.fr/iiif/ark:/12148/<id>/f<n>/full/<size>/0/
native.jpg``). A picture without a service is fetched as the manifest gives it.

>>> images, warnings = read_manifest(doc, fetcher)        # doctest: +SKIP
>>> image_request(images[0], 256, fetcher)                 # doctest: +SKIP
'https://iiif.example.org/img/p1/full/384,/0/default.jpg'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from snoop_nb.sources.fetch import FetchError

if TYPE_CHECKING:
    from snoop_nb.sources.fetch import Fetcher

__all__ = ["IIIFImage", "image_request", "is_iiif", "read_manifest"]

#: How deep collections of collections are followed.
MAX_DEPTH = 4
_LEVEL = re.compile(r"level\s*([0-2])", re.IGNORECASE)


@dataclass
class IIIFImage:
    """One picture of a manifest: its URL (the item's key), its Image API service (base URI,
    API version 1, 2 or 3, compliance level), its size when the manifest says it, and its
    metadata."""

    key: str
    service: str | None = None
    version: int = 2
    level: int | None = None
    width: int | None = None
    height: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def is_iiif(doc: Any) -> bool:
    """True for a Presentation 2 or 3 manifest or collection."""
    if not isinstance(doc, dict):
        return False
    kind = str(doc.get("type") or doc.get("@type") or "")
    return kind.split(":")[-1] in ("Manifest", "Collection") or "sequences" in doc


def read_manifest(
    doc: Any, fetcher: Fetcher | None = None, *, where: str = ""
) -> tuple[list[IIIFImage], list[str]]:
    """The pictures of a manifest (or of every manifest of a collection, fetched through
    ``fetcher``), in order, and warnings (a manifest that could not be fetched, a canvas with
    no image)."""
    images: list[IIIFImage] = []
    warnings: list[str] = []
    _walk(doc, fetcher, where, images, warnings, set(), 0)
    return images, warnings


def _walk(
    doc: Any,
    fetcher: Fetcher | None,
    where: str,
    images: list[IIIFImage],
    warnings: list[str],
    seen: set[str],
    depth: int,
) -> None:
    if not is_iiif(doc):
        warnings.append(f"{where or 'document'}: not a IIIF manifest or collection")
        return
    ident = _id(doc)
    if ident:
        if ident in seen:
            return
        seen.add(ident)
    kind = str(doc.get("type") or doc.get("@type") or "").split(":")[-1]
    if kind != "Collection":
        images.extend(_manifest_images(doc, warnings))
        return
    if depth >= MAX_DEPTH:
        warnings.append(f"{ident or where}: collections nested deeper than {MAX_DEPTH}; not read")
        return
    refs = []
    for key in ("manifests", "collections", "members", "items"):
        refs.extend(r for r in _list(doc.get(key)) if isinstance(r, dict))
    for ref in refs:
        if "sequences" in ref or any(
            isinstance(c, dict) and _is_canvas(c) for c in _list(ref.get("items"))
        ):
            _walk(ref, fetcher, where, images, warnings, seen, depth + 1)
            continue
        url = _id(ref)
        if not url or url in seen:
            continue
        if fetcher is None:
            warnings.append(f"{url}: a manifest of a collection, not fetched (no fetcher)")
            continue
        try:
            sub = fetcher.get_json(url)
        except FetchError as e:
            warnings.append(f"{url}: {e.reason}")
            continue
        _walk(sub, fetcher, url, images, warnings, seen, depth + 1)


def _is_canvas(doc: dict) -> bool:
    return str(doc.get("type") or doc.get("@type") or "").split(":")[-1] == "Canvas"


def _manifest_images(doc: dict, warnings: list[str]) -> list[IIIFImage]:
    base = {"manifest": _id(doc), "manifest_label": _text(doc.get("label"))}
    base = {k: v for k, v in base.items() if v}
    if "sequences" in doc:  # Presentation 2
        seqs = [s for s in _list(doc.get("sequences")) if isinstance(s, dict)]
        canvases = (
            [c for c in _list(seqs[0].get("canvases")) if isinstance(c, dict)] if seqs else []
        )
        bodies = [[_v2_resource(a) for a in _list(c.get("images"))] for c in canvases]
    else:  # Presentation 3
        canvases = [c for c in _list(doc.get("items")) if isinstance(c, dict) and _is_canvas(c)]
        bodies = [_v3_bodies(c) for c in canvases]
    out = []
    for page, (canvas, found) in enumerate(zip(canvases, bodies, strict=True), start=1):
        found = [b for b in found if isinstance(b, dict)]
        meta = dict(base)
        meta.update(canvas=_id(canvas), canvas_label=_text(canvas.get("label")), page=page)
        meta = {k: v for k, v in meta.items() if v not in (None, "")}
        if not found:
            warnings.append(f"{_id(canvas) or f'canvas {page}'}: no image")
            continue
        body = found[0]
        service = _service(body)
        key = _id(body)
        if not key and service is not None:
            key = f"{service[0]}/full/{'max' if service[1] == 3 else 'full'}/0/default.jpg"
        if not key:
            warnings.append(f"{_id(canvas) or f'canvas {page}'}: an image with no URL")
            continue
        width = _int(body.get("width")) or _int(canvas.get("width"))
        height = _int(body.get("height")) or _int(canvas.get("height"))
        image = IIIFImage(key, width=width, height=height, meta=meta)
        if service is not None:
            image.service, image.version, image.level = service
        out.append(image)
    return out


def _v2_resource(anno: Any) -> Any:
    if not isinstance(anno, dict):
        return None
    res = anno.get("resource")
    if isinstance(res, dict) and str(res.get("@type", "")).endswith("Choice"):
        res = res.get("default") or next(iter(_list(res.get("item"))), None)
    return res


def _v3_bodies(canvas: dict) -> list[Any]:
    out = []
    for page in _list(canvas.get("items")):
        for anno in _list(page.get("items") if isinstance(page, dict) else None):
            if not isinstance(anno, dict) or anno.get("motivation", "painting") != "painting":
                continue
            for body in _list(anno.get("body")):
                if isinstance(body, dict) and body.get("type") == "Choice":
                    body = next(iter(_list(body.get("items"))), None)
                if isinstance(body, dict) and (
                    body.get("type") == "Image" or str(body.get("format", "")).startswith("image/")
                ):
                    out.append(body)
    return out


def _service(body: dict) -> tuple[str, int, int | None] | None:
    """``(base URI, Image API version, level)`` of a body's first image service. A service
    that says neither its type, context nor profile is taken for an image service whose
    version the image's URL tells (``native.jpg``: 1.1, ``/max/``: 3, else 2)."""
    unnamed = None
    for svc in _list(body.get("service")):
        if not isinstance(svc, dict):
            continue
        base = _id(svc)
        kind = str(svc.get("type") or svc.get("@type") or "")
        context = " ".join(str(c) for c in _list(svc.get("@context")))
        profile = " ".join(p for p in _list(svc.get("profile")) if isinstance(p, str))
        if kind == "ImageService3" or "/image/3" in context:
            version = 3
        elif kind == "ImageService2" or "/image/2" in context or "/image/2/" in profile:
            version = 2
        elif "/image/1" in context or "image-api/1" in profile:
            version = 1
        elif "level" in profile.lower() or kind.startswith("ImageService"):
            version = 2
        else:
            if not (kind or context or profile) and base and unnamed is None:
                unnamed = base
            continue  # another kind of service (auth, search)
        if not base:
            continue
        match = _LEVEL.search(profile)
        return base.rstrip("/"), version, int(match.group(1)) if match else None
    if unnamed is not None:
        url = _id(body)
        version = 1 if url.endswith("/native.jpg") else 3 if "/full/max/" in url else 2
        return unnamed.rstrip("/"), version, None
    return None


def image_request(image: IIIFImage, side: int, fetcher: Fetcher | None = None) -> str:
    """The URL to fetch ``image`` at: short side at least ``side`` pixels, never upscaled (see
    the module's text). Reads the service's ``info.json`` through ``fetcher`` (cached) at
    level 0, or when the manifest gives no size; raises :class:`FetchError` if it cannot."""
    if image.service is None:
        return image.key
    v, base = image.version, image.service
    quality = "native" if v == 1 else "default"
    whole = "max" if v == 3 else "full"
    width, height, level = image.width, image.height, image.level
    sizes: list[tuple[int, int]] = []
    if level == 0 or not (width and height):
        if fetcher is None:
            raise FetchError("the image service's info.json is needed but there is no fetcher")
        info = fetcher.get_json(f"{base}/info.json")
        if not isinstance(info, dict):
            raise FetchError("info.json is not a JSON object", f"{base}/info.json")
        width, height = _int(info.get("width")) or width, _int(info.get("height")) or height
        profile = " ".join(p for p in _list(info.get("profile")) if isinstance(p, str))
        if level is None and (match := _LEVEL.search(profile)):
            level = int(match.group(1))
        for s in _list(info.get("sizes")):
            if isinstance(s, dict) and _int(s.get("width")) and _int(s.get("height")):
                sizes.append((_int(s["width"]), _int(s["height"])))
    if level == 0:
        big = [s for s in sizes if min(s) >= side]
        if big:
            w, h = min(big, key=lambda s: s[0] * s[1])
            size = f"{w},{h}" if v == 3 else f"{w},"
        else:
            size = whole
    elif not (width and height) or min(width, height) <= side:
        size = whole
    else:
        size = f"{math.ceil(width * side / min(width, height))},"
    return f"{base}/full/{size}/0/{quality}.jpg"


# --- JSON-LD helpers ---------------------------------------------------------------------------
def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _id(doc: Any) -> str:
    if isinstance(doc, str):
        return doc
    if isinstance(doc, dict):
        return str(doc.get("id") or doc.get("@id") or "")
    return ""


def _int(value: Any) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def _text(value: Any) -> str:
    """A label as text: a string, a ``{"@value"}``, a language map (``none``, ``en`` first)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return next((t for t in (_text(v) for v in value) if t), "")
    if isinstance(value, dict):
        if "@value" in value:
            return str(value["@value"])
        for lang in ("none", "en", *value.keys()):
            if lang in value:
                text = _text(value[lang])
                if text:
                    return text
    return ""
