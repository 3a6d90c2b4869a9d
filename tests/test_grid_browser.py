"""The image grid in Debian's headless Chromium against a real `snoop dashboard`: a click with
no class chosen offers to create one and keeps the click; a shift-clicked range of tiles is
labelled in one action. The knowledge base is read from this process, as another reader."""

from __future__ import annotations

from pathlib import Path

import pytest
from dashboard import (
    chromium,
    copy_demo_collection,
    dashboard,
    new_page,
    open_app,
    search_text,
    settled_text,
    tile_ids,
    tile_labels,
    tiles_look_whole,
)

from snoop_nb import open_collection

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = Path(__file__).parent / "artifacts" / "screenshots"


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def tile(item_id: int) -> str:
    return f'.snoop-tile[data-id="{item_id}"]'


def wait_labels(page, ids: list[int], value: str, timeout: float = 30_000) -> None:
    """Wait until every tile of ``ids`` shows label ``value`` (sent back by the kernel)."""
    page.wait_for_function(
        "([ids, v]) => ids.every(i => "
        'document.querySelector(`.snoop-tile[data-id="${i}"]`).dataset.label === v)',
        arg=[ids, value],
        timeout=timeout,
    )


def selected_ids(page) -> list[int]:
    return [
        int(x)
        for x in page.eval_on_selector_all(
            ".snoop-tile[data-selected='1']", "ts => ts.map(t => t.dataset.id)"
        )
    ]


def kb_state(col_dir: Path, user: str, name: str) -> tuple[list[str], dict[int, int], list]:
    """The user's class names, the current labels of class ``name`` (if it exists) and its
    label rows, read from the catalog by this test process."""
    with open_collection(col_dir) as col:
        names = [ref.name for ref in col.kb.classes(user, shared=False)]
        if name not in names:
            return names, {}, []
        ref = col.kb.get_class(user, name)
        lab = col.kb.labels(ref)
        history = col.kb.label_history(ref)
    labels = {int(i): int(v) for i, v in zip(lab["item_id"], lab["value"], strict=True)}
    rows = list(history[["item_id", "value", "time"]].itertuples(index=False, name=None))
    return names, labels, rows


def test_click_without_a_class_creates_one_and_a_shift_range_is_labelled_at_once(tmp_path):
    col_dir = copy_demo_collection(tmp_path / "collection")
    with dashboard(col_dir) as url, chromium() as browser:
        page = new_page(browser)
        open_app(page, url + "?user=lia")
        search_text(page, "a bird")
        shown = tile_ids(page)
        first = shown[0]
        # each tile shows its picture and, inside the tile, its caption (no stand-in beside)
        looks = tiles_look_whole(page)
        assert len(looks) == len(shown)
        assert all(t["name"] and t["inside"] and t["drawn"] and not t["missing"] for t in looks), (
            looks
        )

        # a click with no class chosen: the grid offers one named after the query
        page.click(tile(first))
        page.wait_for_selector(".snoop-grid__offer")
        assert page.input_value(".snoop-offer-name input") == "a bird"
        assert page.inner_text(".snoop-offer-text") == (
            "No class yet: create one and label this tile relevant?"
        )
        assert kb_state(col_dir, "lia", "a bird")[0] == []  # offering created nothing
        shot(page, "grid-1-offer")
        page.click(".snoop-offer-accept")
        wait_labels(page, [first], "1")
        page.wait_for_selector(".snoop-grid__offer", state="detached")
        assert (
            settled_text(page, ".snoop-counts", "1 relevant · 0 not relevant")
            == "1 relevant · 0 not relevant"
        )
        names, labels, _ = kb_state(col_dir, "lia", "a bird")
        assert names == ["a bird"] and labels == {first: 1}

        # shift-click the first and the last of a range: four tiles selected, none labelled
        rng = shown[2:6]
        page.click(tile(rng[0]), modifiers=["Shift"])
        page.click(tile(rng[-1]), modifiers=["Shift"])
        page.wait_for_selector(".snoop-grid__selection")
        assert page.inner_text(".snoop-selection-count") == "4 selected"
        assert selected_ids(page) == rng
        assert tile_labels(page)[rng[0]] == 0
        shot(page, "grid-2-selected")
        page.click(".snoop-sel-not-relevant")
        wait_labels(page, rng, "-1")
        page.wait_for_selector(".snoop-grid__selection", state="detached")
        assert (
            settled_text(page, ".snoop-counts", "1 relevant · 4 not relevant")
            == "1 relevant · 4 not relevant"
        )
        _, labels, rows = kb_state(col_dir, "lia", "a bird")
        assert labels == {first: 1, **dict.fromkeys(rng, -1)}
        written = [r for r in rows if r[0] in rng]
        # one write: four rows of one transaction share its time
        assert len(written) == 4 and len({r[2] for r in written}) == 1

        # ctrl-click toggles tiles into a selection, and a key labels all of it
        pair = shown[6:8]
        for i in pair:
            page.click(tile(i), modifiers=["Control"])
        assert selected_ids(page) == pair
        page.focus(tile(pair[1]))
        page.keyboard.press("r")
        wait_labels(page, pair, "1")
        assert selected_ids(page) == []
        # Esc drops a selection without labelling it
        page.click(tile(shown[8]), modifiers=["Control"])
        assert selected_ids(page) == [shown[8]]
        page.focus(tile(shown[8]))
        page.keyboard.press("Escape")
        page.wait_for_selector(".snoop-grid__selection", state="detached")
        assert tile_labels(page)[shown[8]] == 0
        shot(page, "grid-3-labelled")
        _, labels, _ = kb_state(col_dir, "lia", "a bird")
        assert labels == {first: 1, **dict.fromkeys(rng, -1), **dict.fromkeys(pair, 1)}
        page.context.close()
