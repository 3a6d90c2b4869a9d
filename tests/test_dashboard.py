"""The Voila dashboard in Debian's headless Chromium, driven by Playwright: the whole loop a
visitor goes through, two visitors at once, and what the server refuses to serve."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from dashboard import (
    chromium,
    click_tile,
    copy_demo_collection,
    dashboard,
    kernel_id_in,
    kernel_pid,
    maps_library,
    memory_mb,
    new_page,
    open_app,
    search_text,
    settled_text,
    tile_ids,
    tile_labels,
)

from snoop_nb import open_collection

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = Path(__file__).parent / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One dashboard on a throwaway copy of the demo collection, for the whole module."""
    col_dir = copy_demo_collection(tmp_path_factory.mktemp("dash") / "collection")
    with dashboard(col_dir) as url:
        yield url, col_dir


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def choose_class(page, name: str) -> None:
    page.fill(".snoop-new-class input", name)
    page.press(".snoop-new-class input", "Enter")
    page.wait_for_function(
        "() => /relevant/.test(document.querySelector('.snoop-counts').textContent)"
    )


def upload(page, path) -> None:
    with page.expect_file_chooser() as chooser:
        page.click(".snoop-search-upload")
    chooser.value.set_files(str(path))


def labels_in_kb(col_dir: Path, user: str, name: str) -> dict[int, int]:
    with open_collection(col_dir) as col:
        lab = col.kb.labels(col.kb.get_class(user, name))
    return {int(i): int(v) for i, v in zip(lab["item_id"], lab["value"], strict=True) if v}


def test_search_label_train_rank_and_reload_keeps_labels(browser, served):
    url, col_dir = served
    page = new_page(browser)
    open_app(page, url + "?user=ana")
    search_text(page, "a bird")
    choose_class(page, "birds")
    shown = tile_ids(page)
    relevant, not_relevant = shown[:3], shown[3:6]
    for i in relevant:
        assert click_tile(page, i)["label"] == "1"
    for i in not_relevant:
        assert click_tile(page, i)["label"] == "1"  # relevant -> not relevant takes two clicks
        assert click_tile(page, i)["label"] == "-1"
    assert (
        settled_text(page, ".snoop-counts", "3 relevant · 3 not relevant")
        == "3 relevant · 3 not relevant"
    )
    shot(page, "1-labelled")
    # every click reached the knowledge base, as the other process sees it
    expected = {**dict.fromkeys(relevant, 1), **dict.fromkeys(not_relevant, -1)}
    assert labels_in_kb(col_dir, "ana", "birds") == expected

    page.click(".snoop-train")
    page.wait_for_function(
        "() => document.querySelector('.snoop-grid__count').textContent.includes('ranking of')",
        timeout=120_000,
    )
    ranked = tile_ids(page)
    assert ranked != shown, "training did not change the ranking"
    assert "version 1" in page.inner_text(".snoop-quality")
    # the ranking shows the labels it was trained on
    labels_now = tile_labels(page)
    assert all(labels_now[i] == 1 for i in relevant if i in labels_now)
    shot(page, "2-trained")

    page.reload()
    open_app(page, url + "?user=ana")
    choose_class(page, "birds")
    assert (
        settled_text(page, ".snoop-counts", "3 relevant · 3 not relevant")
        == "3 relevant · 3 not relevant"
    )
    search_text(page, "a bird")
    labels_after = tile_labels(page)
    assert {i: labels_after[i] for i in expected} == expected
    shot(page, "3-reloaded")
    page.context.close()


def test_two_visitors_label_at_once_and_lose_nothing(browser, served):
    url, col_dir = served
    pages = {user: new_page(browser) for user in ("bea", "cyril")}
    for user, page in pages.items():
        open_app(page, f"{url}?user={user}")
        search_text(page, "a car")
        choose_class(page, "cars")
    ids = {user: tile_ids(page)[:10] for user, page in pages.items()}
    # fire every click of both pages without waiting: the two kernels write at once
    fire = (
        '(ids) => ids.forEach(i => document.querySelector(`.snoop-tile[data-id="${i}"]`).click())'
    )
    for user, page in pages.items():
        page.evaluate(fire, ids[user])
    for user, page in pages.items():
        page.wait_for_function(
            '(ids) => ids.every(i => document.querySelector(`.snoop-tile[data-id="${i}"]`)'
            ".dataset.label === '1')",
            arg=ids[user],
            timeout=60_000,
        )
        shot(page, f"two-visitors-{user}")
    for user in pages:
        assert labels_in_kb(col_dir, user, "cars") == dict.fromkeys(ids[user], 1)
    for page in pages.values():
        page.context.close()


def test_visitor_names_themself_and_sees_shared_classes(browser, served):
    url, col_dir = served
    with open_collection(col_dir) as col:
        s = col.session("dora", "lighthouses")
        s.label([1, 2], +1)
        col.kb.share("dora", "lighthouses")
    page = new_page(browser)
    page.goto(url)
    page.wait_for_selector(".snoop-login", timeout=120_000)
    page.fill(".snoop-user-name input", "Zoé L'Hôte")
    page.click(".snoop-user-start")
    page.wait_for_selector(".snoop-tile img", timeout=120_000)
    assert page.inner_text(".snoop-user") == "Zoé L'Hôte"
    page.click(".snoop-class-select")
    # the menu's items render a moment after it opens: wait for them to hold text
    page.wait_for_function(
        "() => [...document.querySelectorAll('.v-overlay .v-list-item')]"
        ".some(e => e.textContent.trim())",
        timeout=30_000,
    )
    options = [t.strip() for t in page.locator(".v-overlay .v-list-item").all_inner_texts()]
    assert "dora/lighthouses (shared)" in options
    shot(page, "named-visitor")
    page.context.close()


def test_search_by_uploaded_picture(browser, served, tmp_path):
    url, col_dir = served
    with open_collection(col_dir) as col:
        duck = next(u for u in col.items()["uri"] if u.endswith("/duck.png"))
    page = new_page(browser)
    open_app(page, url + "?user=eve")
    upload(page, duck)
    page.wait_for_function(
        "() => document.querySelector('.snoop-grid__count').textContent.includes('duck.png')",
        timeout=120_000,
    )
    first = page.locator(".snoop-tile__name").first.inner_text()
    assert first == "duck.png"  # the picture itself is its own nearest neighbour
    bad = tmp_path / "not-a-picture.jpg"
    bad.write_text("hello")
    upload(page, bad)
    page.wait_for_selector(".snoop-grid__message", timeout=60_000)
    assert "cannot search with not-a-picture.jpg" in page.inner_text(".snoop-grid__message")
    page.context.close()


@pytest.mark.parametrize(
    "path",
    [
        "voila/files/catalog.sqlite",
        "voila/files/snoop.ipynb",
        "voila/files/voila.json",
        "voila/files/{col}/catalog.sqlite",
        "voila/files/..%2Fcatalog.sqlite",
        "voila/files/{image}",
        "files/{col}/vectors.f16",
        "api/contents",
        "tree",
        "voila/static/../../{col}/manifest.json",
    ],
)
def test_dashboard_serves_no_file_of_the_collection(served, path):
    url, col_dir = served
    with open_collection(col_dir) as col:
        image = col.items()["uri"].iloc[0]
    path = path.format(col=str(col_dir).lstrip("/"), image=image.lstrip("/"))
    try:
        with urllib.request.urlopen(url + path, timeout=30) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, b""
    assert status in (403, 404), f"{path} answered {status}"
    assert b"SQLite format" not in body


def notebook_source_lines() -> list[str]:
    """Every non-empty line of the dashboard notebook's code cells, as the server has them."""
    import json

    from snoop_nb.ui.dashboard import dashboard_notebook

    cells = json.loads(dashboard_notebook().read_text())["cells"]
    lines = [
        line.strip()
        for cell in cells
        if cell["cell_type"] == "code"
        for line in "".join(cell["source"]).splitlines()
        if len(line.strip()) > 8
    ]
    assert lines, "the dashboard notebook has no code?"
    return lines


def test_dashboard_page_carries_no_source_code(served):
    import html as html_lib

    url, _ = served
    with urllib.request.urlopen(url + "?user=fred", timeout=120) as r:
        html = r.read().decode()
    assert "snoop-app" in html or "jupyter-widgets" in html  # the page itself was served
    lines = notebook_source_lines()
    assert "dashboard_app()" in lines  # the check looks for what the notebook really says
    for line in lines:
        assert line not in html and html_lib.escape(line) not in html, line


def test_kernel_after_first_render_is_small_and_never_imported_torch(browser, served):
    url, _ = served
    page = new_page(browser)
    open_app(page, url + "?user=ivy")
    choose_class(page, "small")
    for i in tile_ids(page)[:3]:
        assert click_tile(page, i)["label"] == "1"
    pid = kernel_pid(kernel_id_in(page.content()))
    assert pid is not None
    mem = memory_mb(pid)
    print(f"kernel after first render and 3 labels: {mem}")
    assert mem["pss"] < 500, mem
    # the default path (browse, label) loads no model: no PyTorch, no scikit-learn there
    for library in ("libtorch_cpu", "/sklearn/", "/onnxruntime/"):
        assert not maps_library(pid, library), f"{library} is loaded in the kernel"
    page.context.close()


def kernels_of(col_dir: Path) -> list[int]:
    """Pids of the kernels serving ``col_dir`` (found by the environment `snoop dashboard`
    gives them)."""
    mark = f"SNOOP_COLLECTION={col_dir}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and mark in (proc / "environ").read_bytes().split(b"\0")
                and b"ipykernel" in (proc / "cmdline").read_bytes()
            ):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_stopping_the_dashboard_stops_its_kernels(tmp_path):
    col_dir = copy_demo_collection(tmp_path / "collection")
    with dashboard(col_dir, preheat=1) as url:
        with urllib.request.urlopen(url + "?user=gil", timeout=120) as r:
            assert r.status == 200
        assert kernels_of(col_dir), "no kernel found for the page"
    deadline = time.monotonic() + 30
    while kernels_of(col_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert kernels_of(col_dir) == []


def test_keyboard_labels_tiles_and_asks_for_more_like_this(browser, served):
    url, col_dir = served
    page = new_page(browser)
    open_app(page, url + "?user=hugo")
    choose_class(page, "keys")
    first = tile_ids(page)[0]
    tile = page.locator(f'.snoop-tile[data-id="{first}"]')
    for key, label in (("n", "-1"), ("r", "1"), ("u", "0"), ("2", "-1")):
        tile.focus()
        page.keyboard.press(key)
        page.wait_for_function(
            '([i, v]) => document.querySelector(`.snoop-tile[data-id="${i}"]`).dataset.label === v',
            arg=[first, label],
        )
    assert labels_in_kb(col_dir, "hugo", "keys") == {first: -1}
    tile.focus()
    page.keyboard.press("m")
    page.wait_for_function(
        "(i) => document.querySelector('.snoop-grid__count').textContent.includes(`item #${i}`)",
        arg=first,
    )
    assert first not in tile_ids(page)  # an item is left out of its own results
    page.context.close()
