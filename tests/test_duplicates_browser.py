"""Copies in Debian's headless Chromium against a real `snoop dashboard` on the demo collection:
with "collapse copies" on, the dreidel stamps (one template, mirrored and relettered: the
demo's own near-duplicates) show once, with a "+N copies" badge, read from the copies the demo
build kept; the Copies tab opens on them and its button finds them again in the background."""

from __future__ import annotations

from pathlib import Path

import pytest
from dashboard import chromium, copy_demo_collection, dashboard, new_page, open_app, search_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = Path(__file__).parent / "artifacts" / "screenshots"


def test_collapse_copies_shows_one_tile_with_a_badge(tmp_path):
    col_dir = copy_demo_collection(tmp_path / "collection")
    with dashboard(col_dir) as url, chromium() as browser:
        page = new_page(browser)
        open_app(page, url + "?user=cody")
        search_text(page, "a spinning top")
        plain = page.eval_on_selector_all(".snoop-tile", "ts => ts.map(t => t.innerText)")
        assert sum("dreydl" in t for t in plain) >= 2
        assert page.query_selector(".snoop-tile__copies") is None
        page.click(".snoop-search-collapse input")
        page.fill(".snoop-search-text input", "a spinning top ")  # a new query: results again
        page.press(".snoop-search-text input", "Enter")
        badge = page.wait_for_selector(".snoop-tile__copies", timeout=180_000)
        assert badge.inner_text().startswith("+") and badge.inner_text().endswith("copies")
        folded = page.eval_on_selector_all(".snoop-tile", "ts => ts.map(t => t.innerText)")
        assert sum("dreydl" in t for t in folded) == 1
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "copies-collapsed.png"), full_page=True)

        # the Copies tab: the kept groups at once, then found again without freezing the page
        page.click(".snoop-tab-copies")
        page.wait_for_selector(".snoop-copies-group", timeout=60_000)
        status = page.inner_text(".snoop-copies-status")
        assert "groups of copies" in status and "(found 20" in status, status
        page.click(".snoop-copies-find")
        page.click(".snoop-tab-search")  # the page answers while the copies are checked
        page.wait_for_selector(".snoop-search-text", state="visible", timeout=30_000)
        page.click(".snoop-tab-copies")
        page.wait_for_function(
            "() => (document.querySelector('.snoop-copies-status') || {}).textContent"
            "?.includes('groups of copies')",
            timeout=180_000,
        )
        assert len(page.query_selector_all(".snoop-copies-group")) >= 2
        page.screenshot(path=str(SHOTS / "copies-tab.png"), full_page=True)
