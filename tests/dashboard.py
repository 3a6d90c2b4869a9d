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
from contextlib import contextmanager
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
def dashboard(collection: Path, *, user: str | None = None, preheat: int = 0, timeout: float = 90):
    """Run `snoop dashboard` on ``collection``; yields its base URL; stops it afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "snoop_nb.cli", "dashboard", "--collection", str(collection)]
    cmd += ["--port", str(port), "--preheat", str(preheat)] + (["--user", user] if user else [])
    log = open(collection.parent / f"dashboard-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"snoop dashboard exited with {proc.returncode}: see {log.name}")
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
