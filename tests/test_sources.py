"""Sources beyond folders: lists of paths and URLs, IIIF manifests (Presentation 2 and 3) whose
pictures come through the Image API, fetched with retries, a rate limit and a disk cache.

Everything is served by a real HTTP server on 127.0.0.1 (no network): static level-0 image
trees (Image API 3 with ``w,h`` sizes, 2 with ``w,`` sizes), a Gallica-like Image API 1.1 level
2 service that resizes on request, paths that fail transiently (503, 429 with Retry-After), a
404, a body that is no picture, and a slow path.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from mediafiles import photo
from PIL import Image

from snoop_nb import open_collection
from snoop_nb.sources import Fetcher, FetchError, IIIFImage, fetch_side, image_request, prepare
from snoop_nb.sources.fetch import Job, cache_file

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
FULL = (480, 320)  # every served photograph's full size
SIZES = [(60, 40), (120, 80), (240, 160), (480, 320)]  # what the level-0 trees list


class IIIFServer:
    """A threading HTTP server over a folder, with scripted failures and a request log."""

    def __init__(self, root: Path):
        self.root = root
        self.log: list[str] = []
        self.times: list[tuple[float, str]] = []  # (when, path) of every request
        self.agents: set[str] = set()
        self.script: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                path = unquote(urlsplit(self.path).path)
                with server.lock:
                    server.log.append(path)
                    server.times.append((time.time(), path))
                    server.agents.add(self.headers.get("User-Agent", ""))
                    queued = server.script.get(path)
                    scripted = queued.pop(0) if queued else None
                if scripted is not None:
                    status, headers = scripted
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path.startswith("/slow/"):
                    time.sleep(1.0)
                body = server.gallica(path)
                if body is None:
                    file = server.root / path.lstrip("/")
                    if not file.is_file():
                        self.send_error(404, "Not Found")
                        return
                    body = file.read_bytes()
                self.send_response(200)
                kind = "application/json" if path.endswith(".json") else "image/jpeg"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)  # (a client that timed out has gone)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    _GALLICA = re.compile(r"^/gallica/iiif/ark:/12148/(\w+)/f(\d+)/full/([^/]+)/0/native\.jpg$")

    def gallica(self, path: str) -> bytes | None:
        """An Image API 1.1 level 2 service (as Gallica's): sizes ``full``, ``w,``, ``!w,h``."""
        m = self._GALLICA.match(path)
        if m is None:
            return None
        src = self.root / "gallica" / m.group(1) / f"f{m.group(2)}.jpg"
        if not src.is_file():
            return None
        im = Image.open(src).convert("RGB")
        size = m.group(3)
        if size.endswith(",") and size[:-1].isdigit():
            w = int(size[:-1])
            im = im.resize((w, round(im.height * w / im.width)))
        elif size.startswith("!"):
            w, h = map(int, size[1:].split(","))
            im.thumbnail((w, h))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        return buf.getvalue()

    def requests(self, pattern: str = "") -> list[str]:
        with self.lock:
            return [p for p in self.log if pattern in p]

    def clear(self) -> None:
        with self.lock:
            self.log.clear()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _save(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=85)


def build_site(root: Path) -> None:
    """Static level-0 trees for Image API 3 (``img3/<name>``) and 2 (``img2/<name>``), a
    Gallica-like book, and a static picture folder."""
    for name in PHOTOS:
        full = photo(name, FULL)
        for version in (3, 2):
            ident = f"img{version}/{name}"
            base = root / ident
            sizes = [{"width": w, "height": h} for w, h in SIZES]
            if version == 3:
                info = {
                    "@context": "http://iiif.io/api/image/3/context.json",
                    "id": "{base}/" + ident,
                    "type": "ImageService3",
                    "protocol": "http://iiif.io/api/image",
                    "profile": "level0",
                    "width": FULL[0],
                    "height": FULL[1],
                    "sizes": sizes,
                }
                for w, h in SIZES:
                    _save(base / "full" / f"{w},{h}" / "0" / "default.jpg", full.resize((w, h)))
                _save(base / "full" / "max" / "0" / "default.jpg", full)
            else:
                info = {
                    "@context": "http://iiif.io/api/image/2/context.json",
                    "@id": "{base}/" + ident,
                    "protocol": "http://iiif.io/api/image",
                    "profile": ["http://iiif.io/api/image/2/level0.json"],
                    "width": FULL[0],
                    "height": FULL[1],
                    "sizes": sizes,
                }
                for w, h in SIZES:
                    _save(base / "full" / f"{w}," / "0" / "default.jpg", full.resize((w, h)))
                _save(base / "full" / "full" / "0" / "default.jpg", full)
            (base / "info.json").write_text(json.dumps(info))
        _save(root / "gallica" / "btest" / f"f{PHOTOS.index(name) + 1}.jpg", full)
        _save(root / "static" / f"{name}.jpg", photo(name, (160, 120)))
    (root / "static" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG at all")


def manifest_v3(base: str, names=PHOTOS, *, label: str = "Photographs, v3", extra=()) -> dict:
    """A Presentation 3 manifest over the Image API 3 tree; ``extra`` bodies add canvases."""
    canvases = []
    bodies = [
        {
            "id": f"{base}/img3/{name}/full/max/0/default.jpg",
            "type": "Image",
            "format": "image/jpeg",
            "width": FULL[0],
            "height": FULL[1],
            "service": [
                {"id": f"{base}/img3/{name}", "type": "ImageService3", "profile": "level0"}
            ],
        }
        for name in names
    ] + list(extra)
    for i, body in enumerate(bodies, start=1):
        canvas = f"{base}/m3/canvas/{i}"
        canvases.append(
            {
                "id": canvas,
                "type": "Canvas",
                "label": {"none": [f"p. {i}"]},
                "width": FULL[0],
                "height": FULL[1],
                "items": [
                    {
                        "id": f"{canvas}/page",
                        "type": "AnnotationPage",
                        "items": [
                            {
                                "id": f"{canvas}/page/a",
                                "type": "Annotation",
                                "motivation": "painting",
                                "target": canvas,
                                "body": body,
                            }
                        ],
                    }
                ],
            }
        )
    return {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": f"{base}/m3/manifest.json",
        "type": "Manifest",
        "label": {"en": [label]},
        "items": canvases,
    }


def manifest_v2(base: str, *, gallica: bool = False) -> dict:
    """A Presentation 2 manifest over the Image API 2 level-0 tree, or (``gallica``) over the
    Image API 1.1 level 2 service, as Gallica publishes them."""
    canvases = []
    for i, name in enumerate(PHOTOS, start=1):
        if gallica:
            svc = f"{base}/gallica/iiif/ark:/12148/btest/f{i}"
            service = {
                "@context": "http://iiif.io/api/image/1/context.json",
                "@id": svc,
                "profile": "http://library.stanford.edu/iiif/image-api/1.1/compliance.html#level2",
            }
            image_url = f"{svc}/full/full/0/native.jpg"
        else:
            svc = f"{base}/img2/{name}"
            service = {
                "@context": "http://iiif.io/api/image/2/context.json",
                "@id": svc,
                "profile": "http://iiif.io/api/image/2/level0.json",
            }
            image_url = f"{svc}/full/full/0/default.jpg"
        canvas = f"{base}/m2/canvas/f{i}"
        canvases.append(
            {
                "@id": canvas,
                "@type": "sc:Canvas",
                "label": f"f. {i}",
                "width": FULL[0],
                "height": FULL[1],
                "images": [
                    {
                        "@type": "oa:Annotation",
                        "motivation": "sc:painting",
                        "on": canvas,
                        "resource": {
                            "@id": image_url,
                            "@type": "dctypes:Image",
                            "format": "image/jpeg",
                            "width": FULL[0],
                            "height": FULL[1],
                            "service": service,
                        },
                    }
                ],
            }
        )
    return {
        "@context": "http://iiif.io/api/presentation/2/context.json",
        "@id": f"{base}/m2/manifest.json",
        "@type": "sc:Manifest",
        "label": "Photographs, v2",
        "sequences": [{"@type": "sc:Sequence", "canvases": canvases}],
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("iiif-site")
    build_site(root)
    server = IIIFServer(root)
    for info in root.glob("img*/*/info.json"):  # the services know their address now
        info.write_text(info.read_text().replace("{base}", server.base))
    (root / "m3").mkdir()
    (root / "m3" / "manifest.json").write_text(json.dumps(manifest_v3(server.base)))
    (root / "m2").mkdir()
    (root / "m2" / "manifest.json").write_text(json.dumps(manifest_v2(server.base)))
    (root / "gallica" / "iiif" / "ark:" / "12148" / "btest").mkdir(parents=True)
    gallica = manifest_v2(server.base, gallica=True)
    (root / "gallica" / "iiif" / "ark:" / "12148" / "btest" / "manifest.json").write_text(
        json.dumps(gallica)
    )
    yield server
    server.close()


@pytest.fixture
def col(tmp_path, tiny_embedder):
    with open_collection(tmp_path / "col", create=True, embedder=tiny_embedder) as c:
        yield c


def _expected_level0(side: int) -> tuple[int, int]:
    """The smallest listed size whose short side is at least ``side`` (else the full size)."""
    big = [s for s in SIZES if min(s) >= side]
    return min(big, key=lambda s: s[0] * s[1]) if big else FULL


# --- IIIF ------------------------------------------------------------------------------------
def test_v3_manifest_url_indexed_at_the_smallest_listed_size_big_enough(site, col, tiny_embedder):
    from snoop_nb.ui.thumbs import Thumbnails

    site.clear()
    url = f"{site.base}/m3/manifest.json"
    report = col.add([url], progress=False)
    assert report.added == len(PHOTOS) and not report.errors, report
    side = fetch_side(tiny_embedder)
    w, h = _expected_level0(side)
    for name in PHOTOS:  # info.json read once, then the chosen size only
        assert site.requests(f"/img3/{name}/") == [
            f"/img3/{name}/info.json",
            f"/img3/{name}/full/{w},{h}/0/default.jpg",
        ]
    assert any("snoop-nb" in a for a in site.agents)
    items = col.items()
    assert list(items["uri"]) == [f"{site.base}/img3/{n}/full/max/0/default.jpg" for n in PHOTOS]
    assert list(items["page"]) == [1, 2, 3, 4]
    assert set(items["manifest"]) == {url}
    assert set(items["manifest_label"]) == {"Photographs, v3"}
    assert list(items["canvas_label"]) == ["p. 1", "p. 2", "p. 3", "p. 4"]
    assert list(items["canvas"]) == [f"{site.base}/m3/canvas/{i}" for i in (1, 2, 3, 4)]
    # the cached files are the items' files: thumbnails and search work as for local ones
    paths = col.paths(items["id"])
    for p in paths.values():
        assert p.is_file() and col.root / "remote" in p.parents
        assert Image.open(p).size == (w, h)
    assert not list((col.root / "remote").rglob("*.tmp"))
    thumbs = Thumbnails(col, workers=1).get(items["id"])
    assert all(len(b) > 100 for b in thumbs.values())
    first = int(items["id"].iloc[0])
    hits = col.search(item=first, k=len(PHOTOS), expand=False)  # the others, in any order
    assert set(hits["id"]) == set(items["id"]) - {first}
    assert set(hits["uri"]) == set(items["uri"]) - {items["uri"].iloc[0]}


def test_second_index_and_a_resumed_run_fetch_nothing_twice(site, tmp_path, tiny_embedder):
    url = f"{site.base}/m3/manifest.json"
    root = tmp_path / "col"
    with open_collection(root, create=True, embedder=tiny_embedder) as c:
        # a run killed after fetching, before committing: its fetches are in the cache
        got = prepare(
            [url], cache=root / "remote", known={}, side=lambda: fetch_side(tiny_embedder)
        )
        assert got.requests == 1 + 2 * len(PHOTOS) and len(got.remote) == len(PHOTOS)
        site.clear()
        first = c.add([url], progress=False)
        assert first.added == len(PHOTOS)
        assert site.requests() == []  # manifest, info.json and pictures all from the cache
    with open_collection(root, embedder=tiny_embedder) as c:  # a new kernel
        again = c.add([url], progress=False)
        assert (again.added, again.skipped, again.discovered) == (0, len(PHOTOS), len(PHOTOS))
        assert site.requests() == []
        assert len(c) == len(PHOTOS)


def test_v2_manifest_file_with_level0_services_asks_for_the_w_comma_form(
    site, col, tiny_embedder, tmp_path
):
    local = tmp_path / "book.json"
    local.write_text(json.dumps(manifest_v2(site.base)))
    site.clear()
    report = col.add([local], progress=False)
    assert report.added == len(PHOTOS) and not report.errors, report
    w, _ = _expected_level0(fetch_side(tiny_embedder))
    assert sorted(site.requests("/full/")) == sorted(
        f"/img2/{n}/full/{w},/0/default.jpg" for n in PHOTOS
    )
    items = col.items()
    assert list(items["uri"]) == [f"{site.base}/img2/{n}/full/full/0/default.jpg" for n in PHOTOS]
    assert list(items["canvas_label"]) == ["f. 1", "f. 2", "f. 3", "f. 4"]
    assert set(items["manifest_label"]) == {"Photographs, v2"}


def test_gallica_like_manifest_with_image_api_1_1_service(site, col, tiny_embedder):
    url = f"{site.base}/gallica/iiif/ark:/12148/btest/manifest.json"
    site.clear()
    report = col.add([url], progress=False)
    assert report.added == len(PHOTOS) and not report.errors, report
    side = fetch_side(tiny_embedder)
    w = math.ceil(FULL[0] * side / min(FULL))  # the short side at the model's side
    assert sorted(site.requests("native.jpg")) == [  # fetched in threads: in any order
        f"/gallica/iiif/ark:/12148/btest/f{i}/full/{w},/0/native.jpg" for i in (1, 2, 3, 4)
    ]
    sizes = {Image.open(p).size for p in col.paths(col.items()["id"]).values()}
    assert sizes == {(w, round(FULL[1] * w / FULL[0]))}
    assert min(next(iter(sizes))) >= side


def test_remote_sources_are_refused_with_dask_before_any_cluster(site, col):
    from snoop_nb.errors import UsageError

    with pytest.raises(UsageError, match="dask takes folders and files"):
        col.add([f"{site.base}/m3/manifest.json"], dask="local:1")


def test_image_requests_per_api_version_and_level():
    full = IIIFImage("k", service="https://h/i", width=4000, height=3000)
    assert image_request(IIIFImage("https://h/a.jpg"), 256) == "https://h/a.jpg"
    full.version, full.level = 2, 2
    assert image_request(full, 300) == "https://h/i/full/400,/0/default.jpg"
    full.version, full.level = 3, 1
    assert image_request(full, 300) == "https://h/i/full/400,/0/default.jpg"
    full.version = 1
    assert image_request(full, 300) == "https://h/i/full/400,/0/native.jpg"
    small = IIIFImage("k", service="https://h/s", version=3, level=2, width=200, height=100)
    assert image_request(small, 300) == "https://h/s/full/max/0/default.jpg"  # never upscaled
    small.version = 2
    assert image_request(small, 300) == "https://h/s/full/full/0/default.jpg"


def test_collection_of_manifests_is_followed(site, col, tmp_path):
    other = manifest_v3(site.base, PHOTOS[:2], label="Two")
    other["id"] = f"{site.base}/m3b/manifest.json"
    for c in other["items"]:  # the same pictures under other canvases: one item each
        c["id"] = c["id"].replace("/m3/", "/m3b/")
    (site.root / "m3b").mkdir(exist_ok=True)
    (site.root / "m3b" / "manifest.json").write_text(json.dumps(other))
    coll = {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": f"{site.base}/coll.json",
        "type": "Collection",
        "label": {"en": ["All"]},
        "items": [
            {"id": f"{site.base}/m2/manifest.json", "type": "Manifest"},
            {"id": f"{site.base}/m3b/manifest.json", "type": "Manifest"},
            {"id": f"{site.base}/missing/manifest.json", "type": "Manifest"},
        ],
    }
    path = tmp_path / "coll.json"
    path.write_text(json.dumps(coll))
    report = col.add([path], progress=False)
    assert report.added == len(PHOTOS) + 2, report
    assert any("missing/manifest.json" in m and "404" in m for _, m in report.warnings)
    assert set(col.items()["manifest_label"]) == {"Photographs, v2", "Two"}


# --- failures --------------------------------------------------------------------------------
def test_transient_failures_are_retried_and_honour_retry_after(site, col, tiny_embedder):
    w, h = _expected_level0(fetch_side(tiny_embedder))
    flaky = f"/img3/coffee/full/{w},{h}/0/default.jpg"
    limited = f"/img3/rocket/full/{w},{h}/0/default.jpg"
    site.script[flaky] = [(503, {})]
    site.script[limited] = [(429, {"Retry-After": "1"})]
    site.clear()
    start = time.monotonic()
    report = col.add(
        [f"{site.base}/m3/manifest.json"], progress=False, fetch={"backoff": 0.05, "refresh": True}
    )
    took = time.monotonic() - start
    assert report.added == len(PHOTOS) and not report.errors, report
    assert site.requests(flaky) == [flaky, flaky]  # 503, then 200
    assert site.requests(limited) == [limited, limited]  # 429, then 200 a second later
    assert took >= 1.0


def test_404_corrupt_and_timeout_are_reported_skips_and_retried_next_run(site, col):
    broken = [
        {"id": f"{site.base}/static/gone.jpg", "type": "Image", "format": "image/jpeg"},
        {"id": f"{site.base}/static/corrupt.jpg", "type": "Image", "format": "image/jpeg"},
        {"id": f"{site.base}/slow/static/chelsea.jpg", "type": "Image", "format": "image/jpeg"},
    ]
    doc = manifest_v3(site.base, PHOTOS[:2], extra=broken)
    (site.root / "mbad").mkdir(exist_ok=True)
    (site.root / "mbad" / "manifest.json").write_text(json.dumps(doc))
    url = f"{site.base}/mbad/manifest.json"
    options = {"timeout": 0.3, "retries": 1, "backoff": 0.05}
    report = col.add([url], progress=False, fetch=options)
    assert report.added == 2
    errors = dict(report.errors)
    assert "HTTP 404" in errors[f"{site.base}/static/gone.jpg"]
    assert "not a picture" in errors[f"{site.base}/static/corrupt.jpg"]
    assert "timed out" in errors[f"{site.base}/slow/static/chelsea.jpg"]
    every = col.items(status=None)
    assert len(every) == 5 and Counter(every["status"]) == {"ok": 2, "error": 3}
    assert {e["uri"] for e in col.errors()} == set(errors)
    site.clear()
    again = col.add([url], progress=False, fetch=options)
    assert (again.added, again.skipped, again.retried, len(again.errors)) == (0, 2, 3, 3)
    assert sorted(set(site.requests())) == sorted(
        ["/static/gone.jpg", "/static/corrupt.jpg", "/slow/static/chelsea.jpg"]
    )
    assert len(col.items(status=None)) == 5  # failed again: the same rows, no new ones


def test_fetcher_rate_limit_per_host_and_cache(site, tmp_path):
    fetcher = Fetcher(tmp_path / "cache", rate=10.0, workers=4)
    site.clear()
    jobs = [Job(f"{site.base}/static/{n}.jpg?copy={i}") for i in range(3) for n in PHOTOS]
    start = time.monotonic()
    got = list(fetcher.fetch_many(jobs))
    took = time.monotonic() - start
    assert [j for j, _, _ in got] == jobs and all(p is not None for _, p, _ in got)
    assert took >= (len(jobs) - 1) / 10.0 * 0.95  # 12 requests at 10/s: 1.1 s at least
    assert fetcher.requests == len(jobs)
    again = list(fetcher.fetch_many(jobs))
    assert fetcher.requests == len(jobs) and [p for _, p, _ in again] == [p for _, p, _ in got]
    assert got[0][1] == cache_file(tmp_path / "cache", jobs[0].url)
    with pytest.raises(FetchError, match="HTTP 404"):
        fetcher.fetch(f"{site.base}/nothing.jpg")


# --- lists -----------------------------------------------------------------------------------
def test_csv_list_of_local_paths_and_urls_with_metadata(site, col, tmp_path):
    folder = tmp_path / "lists"
    (folder / "pics").mkdir(parents=True)
    photo("chelsea", (90, 60)).save(folder / "pics" / "cat.jpg")
    photo("coffee", (90, 60)).save(folder / "pics" / "cup.png")
    listing = folder / "list.csv"
    listing.write_text(
        "image,shelf,year,width\n"
        "pics/cat.jpg,A1,1901,12\n"
        f"{site.base}/static/astronaut.jpg,B2,1969,\n"
        "pics/none.jpg,C3,1950,\n"
        f"{site.base}/static/none.jpg,D4,,\n"
        f"{tmp_path}/lists/pics/cup.png,E5,2001,\n"
    )
    report = col.add([listing], progress=False)
    assert report.added == 3, report
    items = col.items().set_index("uri")
    cat = str(folder / "pics" / "cat.jpg")
    assert items.loc[cat, "shelf"] == "A1" and items.loc[cat, "year"] == "1901"
    assert items.loc[cat, "width"] == 90  # a reserved column is not metadata
    assert items.loc[f"{site.base}/static/astronaut.jpg", "year"] == "1969"
    assert items.loc[str(folder / "pics" / "cup.png"), "shelf"] == "E5"
    errors = dict(report.errors)
    assert (
        errors[str(folder / "pics" / "none.jpg")] == "file not found (listed in list.csv, line 4)"
    )
    assert "HTTP 404" in errors[f"{site.base}/static/none.jpg"]
    assert any("width" in m for _, m in report.warnings)
    # the list edited: items already here get its columns, without being embedded again
    listing.write_text(
        f"image,shelf,year\npics/cat.jpg,A9,1901\n{site.base}/static/astronaut.jpg,B2,1969\n"
    )
    site.clear()
    edited = col.add([listing], progress=False)
    assert (edited.added, edited.skipped, edited.meta_updated) == (0, 2, 1)
    assert "metadata of 1 items updated" in str(edited) and site.requests() == []
    assert col.items().set_index("uri").loc[cat, "shelf"] == "A9"
    # the text list: comments, blank lines, a URL already indexed
    text = folder / "more.txt"
    text.write_text(f"# pictures\n\npics/cat.jpg\n{site.base}/static/astronaut.jpg\n")
    site.clear()
    again = col.add([text], progress=False)
    assert (again.added, again.skipped) == (0, 2) and site.requests() == []


def test_cli_index_on_a_manifest_url(site, tmp_path, tiny_clip, capsys):
    from snoop_nb.cli import main

    url = f"{site.base}/m2/manifest.json"
    args = [
        "index",
        "--collection",
        str(tmp_path / "cli"),
        "--model",
        tiny_clip["model"],
        "--pretrained",
        tiny_clip["pretrained"],
        "--device",
        "cpu",
        "--rate",
        "20",
        "--quiet",
        "--json",
        url,
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["added"], out["items"], out["errors"]) == (len(PHOTOS), len(PHOTOS), [])
    site.clear()
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["added"], out["skipped"]) == (0, len(PHOTOS)) and site.requests() == []
    assert main([*args[:-1], f"{site.base}/m9/manifest.json"]) == 0  # a manifest not there
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == 0 and "404" in out["warnings"][0]["message"]


def test_services_named_by_context_profile_or_nothing():
    from snoop_nb.sources.iiif import _service

    gallica = {
        "@id": "https://gallica.bnf.fr/iiif/ark:/12148/b1/f3/full/full/0/native.jpg",
        "service": {
            "@context": "http://iiif.io/api/image/1/context.json",
            "@id": "https://gallica.bnf.fr/iiif/ark:/12148/b1/f3",
            "profile": "http://library.stanford.edu/iiif/image-api/1.1/compliance.html#level2",
        },
    }
    assert _service(gallica) == ("https://gallica.bnf.fr/iiif/ark:/12148/b1/f3", 1, 2)
    bare = {"@id": gallica["@id"], "service": {"@id": "https://h/i/"}}
    assert _service(bare) == ("https://h/i", 1, None)  # told by native.jpg
    v3 = {"id": "https://h/j/full/max/0/default.jpg", "service": [{"id": "https://h/j"}]}
    assert _service(v3) == ("https://h/j", 3, None)
    auth = {
        "id": "https://h/k.jpg",
        "service": [{"id": "https://h/login", "type": "AuthCookieService1"}],
    }
    assert _service(auth) is None


# --- publishing a folder as a static IIIF tree ---------------------------------------------------
def test_published_level0_tree_is_indexed_back_through_its_manifest(tmp_path, col, tiny_embedder):
    from snoop_nb.errors import UsageError
    from snoop_nb.sources.publish import StaticServer, publish_level0

    pictures = []
    for name in PHOTOS:
        pictures.append(tmp_path / f"{name}.png")
        photo(name).save(pictures[-1])
    site = tmp_path / "site"
    with StaticServer(site) as server:
        url = publish_level0(pictures, site, server.base, label="Published")
        info = json.loads((site / "img" / "1" / "info.json").read_text())
        assert info["profile"] == "level0" and info["id"] == f"{server.base}/img/1"
        sizes = [(s["width"], s["height"]) for s in info["sizes"]]
        assert sizes == sorted(sizes) and min(sizes[0]) >= 32
        assert sizes[-1] == photo(PHOTOS[0]).size  # halvings up to the full size
        for w, h in sizes:  # every listed size is there, at that size
            assert Image.open(site / "img/1/full" / f"{w},{h}" / "0/default.jpg").size == (w, h)
        report = col.add([url], progress=False)
        assert report.added == len(PHOTOS) and not report.errors, report
        items = col.items()
        assert list(items["canvas_label"]) == [p.name for p in pictures]
        assert set(items["manifest_label"]) == {"Published"}
        # fetched at the smallest listed size whose short side is at least the model's
        side = fetch_side(tiny_embedder)
        files = col.paths(items["id"])
        for page, item in zip(items["page"], items["id"], strict=True):
            listed = json.loads((site / "img" / str(page) / "info.json").read_text())["sizes"]
            big = [(s["width"], s["height"]) for s in listed if min(s.values()) >= side]
            assert Image.open(files[item]).size == min(big, key=lambda s: s[0] * s[1])
        before = server.requests
        assert col.add([url], progress=False).added == 0
        assert server.requests == before  # the manifest and the pictures come from the cache
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a picture")
    with pytest.raises(UsageError, match=r"broken\.jpg"):
        publish_level0([tmp_path / "broken.jpg"], tmp_path / "site2", "http://127.0.0.1:1")


def test_a_long_manifest_is_embedded_part_by_part_while_the_rest_is_fetched(tmp_path, col):
    """Pictures of a manifest are embedded and committed a part at a time while the next part
    is fetched: the first ones are in the collection before the last are requested."""
    from snoop_nb.errors import UsageError
    from snoop_nb.sources.publish import publish_level0

    pictures = []
    for n, name in enumerate(PHOTOS * 3):  # 12 distinct pictures: photographs, turned
        pictures.append(tmp_path / f"p{n:02d}.png")
        photo(name).rotate(30 * (n // len(PHOTOS)), expand=True).save(pictures[-1])
    site = tmp_path / "site"
    site.mkdir()
    server = IIIFServer(site)
    try:
        url = publish_level0(pictures, site, server.base, label="Long")
        report = col.add([url], progress=False, fetch={"part": 3, "rate": 5})
        assert report.added == len(pictures) and not report.errors, report
        items = col.items()
        assert sorted(items["canvas_label"]) == sorted(p.name for p in pictures)
        with server.lock:
            fetched = [t for t, p in server.times if "/full/" in p]
        assert len(fetched) == len(pictures)
        # the first part was committed before the last picture was asked for
        import sqlite3

        with contextlib.closing(sqlite3.connect(col.root / "catalog.sqlite")) as db:
            (first,) = db.execute("SELECT min(added) FROM items WHERE status = 'ok'").fetchone()
        assert first < max(fetched), (first, sorted(fetched))
        again = col.add([url], progress=False, fetch={"part": 3})
        assert again.added == 0 and again.skipped == len(pictures)
    finally:
        server.close()
    with pytest.raises(UsageError, match="at least one"):
        col.add([url], progress=False, fetch={"part": 0})
