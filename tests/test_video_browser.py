"""The dashboard's Videos tab in Debian's headless Chromium (Playwright), served by the real
`snoop dashboard --videos`: keyframe tiles grouped per video, a moment played from bytes the
kernel sends (the page asks the server for no video file), previous/next shot, the timeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dashboard import chromium, copy_demo_collection, dashboard, new_page, open_app

from snoop_nb import open_collection

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
DEMO_VIDEOS = ROOT / "data" / "demo" / "videos" / "collection"
SHOTS = Path(__file__).parent / "artifacts" / "screenshots"

# The <video> has a picture to show and knows its length (HAVE_CURRENT_DATA or more).
PLAYING = """() => {
  const v = document.querySelector('.snoop-player__video');
  return v && v.readyState >= 2 && v.duration > 0 && v.videoWidth > 0;
}"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if not (DEMO_VIDEOS / "manifest.json").exists():
        raise RuntimeError(f"no demo video collection at {DEMO_VIDEOS}: run `make demo-collection`")
    root = tmp_path_factory.mktemp("vdash")
    pictures = copy_demo_collection(root / "collection")
    videos = root / "videos"
    shutil.copytree(DEMO_VIDEOS, videos, ignore=shutil.ignore_patterns("*.lock"))
    with dashboard(pictures, args=("--videos", str(videos))) as url:
        yield url, videos


def test_videos_tab_plays_a_moment_steps_shots_and_shows_the_timeline(served):
    url, videos = served
    with chromium() as browser:
        page = new_page(browser)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        open_app(page, url + "?user=vera")
        page.click(".snoop-tab-videos")
        page.wait_for_selector(".snoop-videos .snoop-tile img", timeout=60_000)
        heads = page.locator(".snoop-videos .snoop-group__title").all_inner_texts()
        with open_collection(videos) as col:
            names = {Path(u).name for u in col.videos()["uri"]}
            first = int(page.locator(".snoop-videos .snoop-tile").first.get_attribute("data-id"))
            item = col.item(first)
            shots = col.shots(item["video"])
        assert heads and set(heads) <= names and len(heads) == len(set(heads))
        timecode = page.locator(".snoop-videos .snoop-tile__timecode").first.inner_text()
        h, m, s = (int(x) for x in timecode.split(":"))
        assert h * 3600 + m * 60 + s == int(item["t"])

        page.locator(".snoop-videos .snoop-tile__play").first.click()
        page.wait_for_function(PLAYING, timeout=60_000)
        assert page.inner_text(".snoop-player__title") == Path(item["video"]).name
        bands = page.locator(".snoop-timeline__shot")
        assert bands.count() == len(shots)
        current = int(page.locator(".snoop-timeline__shot--current").get_attribute("data-index"))
        assert shots[current]["start"] <= item["t"] <= shots[current]["end"]
        length = page.evaluate("() => document.querySelector('.snoop-player__video').duration")
        assert abs(length - (shots[current]["end"] - shots[current]["start"])) < 0.3
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "video-player.png"))

        played = int(page.get_attribute(".snoop-player", "data-played"))
        page.click(".snoop-player-next")
        page.wait_for_function(
            f"() => Number(document.querySelector('.snoop-player').dataset.played) > {played}",
            timeout=60_000,
        )
        page.wait_for_function(PLAYING, timeout=60_000)
        now = int(page.locator(".snoop-timeline__shot--current").get_attribute("data-index"))
        assert now == current + 1
        # a click on a band of the timeline plays that shot
        page.locator(".snoop-timeline__shot").nth(0).click()
        page.wait_for_function(
            "() => document.querySelector('.snoop-timeline__shot--current').dataset.index === '0'",
            timeout=60_000,
        )
        page.wait_for_function(PLAYING, timeout=60_000)
        # the pictures came as bytes through the widget channel: no file was asked for
        media = [r for r in requests if r.split("?")[0].lower().endswith((".mp4", ".webm", ".jpg"))]
        assert media == []
        page.context.close()
