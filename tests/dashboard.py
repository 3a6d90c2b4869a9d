"""Serving the real dashboard (`snoop dashboard`, Voila) and driving Debian's Chromium with
Playwright, for the browser tests and benchmarks/ui.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_COLLECTION = ROOT / "data" / "demo" / "collection"
CHROMIUM = os.environ.get("SNOOP_CHROMIUM", "/usr/bin/chromium")
# ../shared/INSTALL.md: Debian's Chromium, headless, with no background network traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The browser must not reach out: fonts and other CDN resources are blocked, as offline.
LOCAL_ONLY = ("127.0.0.1", "localhost")


def copy_demo_collection(dest: Path) -> Path:
    """A throwaway copy of the demo collection (built by `make demo` / `make test`)."""
    if not (DEMO_COLLECTION / "manifest.json").exists():
        raise RuntimeError(
            f"the demo collection is missing at {DEMO_COLLECTION}: run `make demo-collection`"
        )
    shutil.copytree(DEMO_COLLECTION, dest, ignore=shutil.ignore_patterns("*.lock"))
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dashboard(
    collection: Path,
    *,
    user: str | None = None,
    preheat: int = 0,
    timeout: float = 90,
    args: tuple[str, ...] = (),
):
    """Run `snoop dashboard` on ``collection`` (with extra CLI ``args``); yields its base URL
    (on 127.0.0.1); stops it afterwards. Its output goes to ``dashboard-PORT.log`` beside the
    collection."""
    port = free_port()
    cmd = [sys.executable, "-m", "snoop_nb.cli", "dashboard", "--collection", str(collection)]
    cmd += ["--port", str(port), "--preheat", str(preheat)] + (["--user", user] if user else [])
    cmd += list(args)
    log_path = collection.parent / f"dashboard-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"snoop dashboard exited with {proc.returncode}: see {log_path}")
            try:
                with urllib.request.urlopen(url + "voila/static/", timeout=2):
                    pass
                break
            except urllib.error.HTTPError:
                break  # the server answers
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"snoop dashboard did not start in {timeout} s") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def processes_of(collection: Path, kind: str = "kernel") -> list[int]:
    """Pids of the dashboard's kernels (``kind="kernel"``) or of its server (``"server"``)
    serving ``collection``, found by the environment `snoop dashboard` gives them."""
    mark = f"SNOOP_COLLECTION={collection}".encode()
    what = {"kernel": b"ipykernel", "server": b"snoop_nb.ui.server"}[kind]
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and what in (proc / "cmdline").read_bytes()
                and mark in (proc / "environ").read_bytes().split(b"\0")
            ):
                pids.append(int(proc.name))
        except OSError:
            continue
    return sorted(pids)


def kernel_pid(kernel_id: str) -> int | None:
    """The pid of the kernel process with this Jupyter kernel id (its connection file's name)."""
    name = f"kernel-{kernel_id}.json".encode()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and name in (proc / "cmdline").read_bytes():
                return int(proc.name)
        except OSError:
            continue
    return None


def memory_mb(pid: int) -> dict[str, float]:
    """A process's resident memory in MB: ``rss``, ``pss`` (shared pages divided among the
    processes sharing them) and ``uss`` (its private pages), from /proc/PID/smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) / 1024
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def maps_library(pid: int, name: str) -> bool:
    """Whether process ``pid`` has a shared library whose file name contains ``name`` mapped
    (``libtorch_cpu`` tells that PyTorch was imported there)."""
    return name in Path(f"/proc/{pid}/maps").read_text()


def kernel_id_in(html: str) -> str:
    """The kernel id in a dashboard page Voila rendered."""
    import re

    found = re.search(r'"kernelId":\s*"([0-9a-f-]{36})"', html)
    if not found:
        raise AssertionError("no kernel id in the page")
    return found.group(1)


# --- a kernel websocket client, as a script or another front-end would write one ---------------
V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"


def kernel_message(msg_type: str, content: dict, *, session: str, metadata=None) -> dict:
    """A Jupyter message for the shell channel."""
    import uuid

    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "username": "probe",
        "session": session,
        "date": "2026-01-01T00:00:00.000000Z",
        "version": "5.3",
    }
    return {
        "header": header,
        "parent_header": {},
        "metadata": metadata or {},
        "content": content,
        "channel": "shell",
        "buffers": [],
    }


def to_v1(msg: dict) -> bytes:
    """``msg`` in the v1 websocket framing (jupyter_server's serialize_msg_to_ws_v1): a
    little-endian uint64 count of offsets, the offsets, the channel, then the JSON parts."""
    import json

    parts = [
        json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata", "content")
    ]
    channel = msg["channel"].encode()
    offsets = [8 * (1 + 1 + len(parts) + 1)]
    offsets.append(offsets[-1] + len(channel))
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets)
    return head + channel + b"".join(parts)


def from_v1(data: bytes) -> tuple[str, dict, dict, list[bytes]]:
    """(channel, header, content, buffers) of a v1-framed message."""
    import json

    n = int.from_bytes(data[:8], "little")
    offsets = [int.from_bytes(data[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(n)]
    parts = [data[offsets[i] : offsets[i + 1]] for i in range(n - 1)]  # the last: the end
    return parts[0].decode(), json.loads(parts[1]), json.loads(parts[4]), parts[5:]


async def request_widget_states(url: str, kernel_id: str, *, v1: bool, timeout: float = 30):
    """Open a kernel websocket (asking for the v1 subprotocol or not), open the widget control
    comm and ask for every widget's state, as ipywidgets' front-end does; returns the
    ``update_states`` reply's (content, buffers). Raises what the server's refusal raises
    (tornado's HTTPClientError)."""
    import asyncio
    import json
    import uuid

    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    session = uuid.uuid4().hex
    ws_url = url.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    ws = await websocket_connect(
        HTTPRequest(f"{ws_url}?session_id={session}", request_timeout=timeout),
        subprotocols=[V1_PROTOCOL] if v1 else None,
    )
    try:
        comm = uuid.uuid4().hex
        messages = [
            kernel_message(
                "comm_open",
                {"comm_id": comm, "target_name": "jupyter.widget.control", "data": {}},
                session=session,
                metadata={"version": "1.0.0"},
            ),
            kernel_message(
                "comm_msg", {"comm_id": comm, "data": {"method": "request_states"}}, session=session
            ),
        ]
        for msg in messages:
            if v1:
                await ws.write_message(to_v1(msg), binary=True)
            else:  # the legacy framing: JSON text with the channel inside
                await ws.write_message(json.dumps(msg))
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            reply = await asyncio.wait_for(ws.read_message(), max(left, 0.01))
            if reply is None:
                raise ConnectionError("the server closed the kernel websocket")
            if isinstance(reply, bytes) and v1:
                _, header, content, buffers = from_v1(reply)
                if (
                    header["msg_type"] == "comm_msg"
                    and content.get("data", {}).get("method") == "update_states"
                ):
                    return content, buffers
    finally:
        ws.close()


@contextmanager
def chromium():
    """A headless Debian Chromium driven by Playwright; yields the Browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, *, width: int = 1400, height: int = 1000):
    """A page in a fresh context that may only talk to this machine."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()

    def only_local(route):
        host = route.request.url.split("/")[2].split(":")[0]
        if host in LOCAL_ONLY or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", only_local)
    return page


def open_app(page, url: str, *, timeout: float = 120_000) -> float:
    """Open the dashboard and wait until its first tiles are shown; returns the seconds."""
    t0 = time.perf_counter()
    page.goto(url, timeout=timeout)
    page.wait_for_selector(".snoop-tile img", timeout=timeout)
    page.wait_for_selector(".snoop-search-text input", timeout=timeout)
    return time.perf_counter() - t0


# Click a tile and resolve, in the page's own clock, when its label attribute changes: the
# label has then been written to the knowledge base and sent back by the kernel.
CLICK_AND_WAIT = """async (id) => {
  const sel = `.snoop-tile[data-id="${id}"]`;
  const before = document.querySelector(sel).getAttribute('data-label');
  return await new Promise((resolve) => {
    const t0 = performance.now();
    const obs = new MutationObserver(() => {
      const tile = document.querySelector(sel);
      if (tile && tile.getAttribute('data-label') !== before) {
        obs.disconnect();
        resolve({ms: performance.now() - t0, label: tile.getAttribute('data-label')});
      }
    });
    obs.observe(document.querySelector('.snoop-grid__tiles'),
                {attributes: true, subtree: true, attributeFilter: ['data-label']});
    document.querySelector(sel).click();
  });
}"""


def click_tile(page, item_id: int, timeout: float = 30_000) -> dict:
    """Click tile ``item_id``; returns ``{"ms": latency, "label": new label}``."""
    page.set_default_timeout(timeout)
    return page.evaluate(CLICK_AND_WAIT, item_id)


def tile_ids(page) -> list[int]:
    return [
        int(x) for x in page.eval_on_selector_all(".snoop-tile", "ts => ts.map(t => t.dataset.id)")
    ]


def tile_labels(page) -> dict[int, int]:
    pairs = page.eval_on_selector_all(
        ".snoop-tile", "ts => ts.map(t => [t.dataset.id, t.dataset.label])"
    )
    return {int(i): int(v) for i, v in pairs}


def search_text(page, text: str, timeout: float = 120_000) -> None:
    """Type a text query, press Enter, and wait for its results."""
    page.fill(".snoop-search-text input", text)
    page.press(".snoop-search-text input", "Enter")
    page.wait_for_function(
        "(t) => document.querySelector('.snoop-grid__count').textContent.includes(t)",
        arg=text,
        timeout=timeout,
    )


def settled_text(page, selector: str, expected: str, timeout: float = 30_000) -> str:
    """The text of ``selector`` once it reads ``expected`` (or whatever it reads after
    ``timeout`` ms): the kernel sends a widget's new text a moment after the change that
    caused it, so a test compares it after waiting, and fails with what was there."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with suppress(PlaywrightTimeout):
        page.wait_for_function(
            "([s, t]) => { const e = document.querySelector(s);"
            " return e !== null && e.innerText.trim() === t; }",
            arg=[selector, expected],
            timeout=timeout,
        )
    return page.inner_text(selector).strip()


def tiles_look_whole(page, timeout: float = 60_000) -> list[dict]:
    """Wait until every tile's picture has loaded, then each tile's geometry: its caption's
    name, whether the caption lies inside the tile (its line box may pass the padding by a few
    pixels) and is the element drawn there (not covered or pushed out of it), and whether a
    "no preview" stand-in is shown too."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.snoop-tile')].every(t => {"
        "  const img = t.querySelector('img'); return img && img.complete && img.naturalWidth;"
        "})",
        timeout=timeout,
    )
    return page.eval_on_selector_all(
        ".snoop-tile",
        """ts => ts.map(t => {
            const r = t.getBoundingClientRect();
            const name = t.querySelector('.snoop-tile__name');
            const c = name.getBoundingClientRect();
            t.scrollIntoView({block: 'center'});
            const c2 = name.getBoundingClientRect();
            const hit = document.elementFromPoint(c2.left + 2, c2.top + c2.height / 2);
            return {
                name: name.innerText,
                inside: c.height > 0 && c.top >= r.top && (c.top + c.bottom) / 2 <= r.bottom,
                drawn: !!hit && (hit === name || name.contains(hit) || hit.contains(name)),
                missing: !!t.querySelector('.snoop-tile__missing'),
            };
        })""",
    )
