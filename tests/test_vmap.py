"""The visual map: its UMAP layout of the real demo collection (categories stay together), the
cache (reopened without umap, items added later placed without refit, stale past a quarter),
the MapView widget (colourings, selection labelled in the knowledge base, selection as a
query), and the map in Debian's Chromium against a real `snoop dashboard`: a box drawn on
the canvas, labelled, read back from the knowledge base."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dashboard import (
    chromium,
    copy_demo_collection,
    dashboard,
    maps_library,
    new_page,
    open_app,
    processes_of,
    tile_ids,
)

from snoop_nb import open_collection
from snoop_nb.vmap import STALE_FRACTION, inside_polygon, load_map, map_path, visual_map

SHOTS = Path(__file__).parent / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A copy of the demo collection (796 stamps, 16 categories) with its map built."""
    col_dir = copy_demo_collection(tmp_path_factory.mktemp("vmap") / "collection")
    with open_collection(col_dir) as col:
        visual_map(col)
    return col_dir


def copy_of(col_dir: Path, dest: Path) -> Path:
    shutil.copytree(col_dir, dest, ignore=shutil.ignore_patterns("*.lock"))
    return dest


def neighbour_agreement(xy: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """The share of each point's ``k`` nearest points on the map with its own label."""
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1)[:, :k]
    return float((labels[near] == labels[:, None]).mean())


def categories(col, ids) -> np.ndarray:
    return col.items(ids.tolist()).set_index("id").loc[ids, "category"].to_numpy()


# --- layout --------------------------------------------------------------------------------
def test_items_of_a_category_are_nearer_each_other_on_the_map_than_to_others(built):
    with open_collection(built) as col:
        m = load_map(col)
        cat = categories(col, m.ids)
    assert len(m) == 796 and m.fitted.size == 796
    assert m.xy.dtype == np.float32 and m.xy.min() >= 0 and m.xy.max() <= 1
    d = np.sqrt(((m.xy[:, None, :] - m.xy[None, :, :]) ** 2).sum(-1))
    same = cat[:, None] == cat[None, :]
    np.fill_diagonal(same, False)
    within = np.array([d[i, same[i]].mean() for i in range(len(cat))])
    across = np.array([d[i, ~same[i] & (np.arange(len(cat)) != i)].mean() for i in range(len(cat))])
    assert np.median(within / across) < 0.8
    # chance is about 1/16 for 16 categories: a map that kept nothing would score ~0.08
    assert neighbour_agreement(m.xy, cat) > 0.5


def test_a_fit_on_a_sample_places_the_others_among_their_neighbours(built, tmp_path):
    with open_collection(built) as col:
        m = visual_map(col, sample=300)
        cat = categories(col, m.ids)
    assert m.fitted.size == 300 and len(m) == 796
    assert np.array_equal(m.ids, np.arange(796))
    placed = ~np.isin(m.ids, m.fitted)
    # the placed items' map neighbours share their category about as often as the fitted ones'
    assert neighbour_agreement(m.xy, cat) > 0.45
    assert neighbour_agreement(m.xy[placed], cat[placed]) > 0.4
    assert map_path(col, sample=300) != map_path(col)  # another parameter, another file


def test_reopening_reads_the_cache_without_importing_umap(built):
    path = next(built.glob("map-*.npz"))
    before = path.stat().st_mtime_ns
    code = (
        "import sys, time, json; from snoop_nb import open_collection; "
        "from snoop_nb.vmap import load_map; t = time.perf_counter(); "
        f"m = load_map(open_collection({str(built)!r})); "
        "print(json.dumps({'n': len(m), 's': time.perf_counter() - t, "
        "'umap': 'umap' in sys.modules, 'numba': 'numba' in sys.modules}))"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                    check=True, text=True).stdout)  # fmt: skip
    assert out["n"] == 796 and not out["umap"] and not out["numba"]
    assert out["s"] < 2.0
    assert path.stat().st_mtime_ns == before  # unchanged items: nothing written


def test_items_added_later_are_placed_without_refit_and_make_the_map_stale(built, tmp_path):
    col_dir = copy_of(built, tmp_path / "collection")
    with open_collection(col_dir) as col:
        first = load_map(col)
        rng = np.random.default_rng(1)
        sources = rng.choice(first.ids, 100, replace=False)
        vecs = col.vectors_of(sources) + rng.normal(0, 0.01, (100, col.dim)).astype(np.float32)
        new = col.add_vectors([str(tmp_path / f"new{i}.png") for i in range(100)], vecs)
        m = load_map(col)
        assert len(m) == 896 and m.added == 100 and not m.stale  # 100 < 25% of 796
        # the points already there did not move; each new one lies by the item it copies
        assert np.array_equal(m.positions(first.ids), first.xy)
        gap = np.linalg.norm(m.positions(new) - m.positions(sources), axis=1)
        assert np.median(gap) < 0.01
        # more than a quarter placed since the build: stale, and saved as such
        more = int(STALE_FRACTION * 796) + 1 - 100
        col.add_vectors(
            [str(tmp_path / f"more{i}.png") for i in range(more)], col.vectors_of(first.ids[:more])
        )
        col.remove(first.ids[:5])
    with open_collection(col_dir) as col:  # another opening reads what was saved
        m = load_map(col, save=False)
        assert m.stale and m.added == 100 + more
        assert len(m) == 896 + more - 5 and not np.isin(first.ids[:5], m.ids).any()
        assert np.array_equal(m.ids, col.ok_ids())
        rebuilt = visual_map(col, rebuild=True)
        assert not rebuilt.stale and rebuilt.added == 0 and rebuilt.fitted.size == len(m)


def test_snoop_map_builds_once_then_reports_the_cache(built, tmp_path):
    from snoop_nb.cli import main

    col_dir = copy_of(built, tmp_path / "collection")
    for p in col_dir.glob("map-*.npz"):
        p.unlink()
    assert main(["map", "--collection", str(col_dir), "--sample", "200", "--json"]) == 0
    assert len(list(col_dir.glob("map-*.npz"))) == 1
    with open_collection(col_dir) as col:
        assert load_map(col, sample=200).fitted.size == 200
        assert load_map(col) is None  # the default parameters were never built


# --- widget ----------------------------------------------------------------------------------
def test_map_colours_by_metadata_labels_and_scores(built):
    from snoop_nb.ui.vmap import GREY, LABEL_COLOURS, MapView

    with open_collection(built) as col:
        view = MapView(col)
        n = len(col)
        assert view.count == n and len(view.coords[0]) == 4 * n and len(view.colours[0]) == n
        assert view.color_by == "meta:category"  # no class yet: the first metadata column
        assert len(view.legend) == 16 and view.message == ""
        view.color_by = "labels"
        assert "no class chosen" in view.message and view.palette == [GREY]

        session = col.session("ana", "birds")
        birds = col.items().query("subcategory == 'birds'")["id"].to_numpy()
        session.label(birds[:6], 1)
        others = col.items().query("category != 'animals'")["id"].to_numpy()[:3].tolist()
        session.label(others, -1)
        view.session = session
        idx = np.frombuffer(view.colours[0], np.uint8)
        drawn = dict(zip(view._order.tolist(), idx.tolist(), strict=True))
        colour = {i: view.palette[drawn[i]] for i in [*birds[:6], *others, int(birds[10])]}
        assert {colour[int(i)] for i in birds[:6]} == {LABEL_COLOURS[1]}
        assert {colour[i] for i in others} == {LABEL_COLOURS[-1]}
        assert colour[int(birds[10])] == GREY
        assert view.legend[0]["label"] == "relevant (6)"
        assert set(view._order[-9:].tolist()) == {*birds[:6].tolist(), *others}  # on top

        view.color_by = "score"
        scores = session.scores().reindex(view._order).to_numpy()
        step = np.frombuffer(view.colours[0], np.uint8).astype(int)
        assert np.all(np.diff(step) >= 0)  # drawn low to high: the best on top
        assert np.corrcoef(step, scores)[0, 1] > 0.98
        assert view.legend[0]["label"].startswith("score ")

        view.color_by = "applied"
        assert "not applied" in view.message
        session.train()
        session.apply(0.5)
        view.recolour()
        applied = session.applied()
        step = dict(zip(view._order.tolist(), np.frombuffer(view.colours[0], np.uint8).tolist(),
                        strict=True))  # fmt: skip
        assert all(step[int(i)] > 0 for i in applied["item_id"])
        assert sum(s > 0 for s in step.values()) == len(applied)


def test_a_box_selection_is_labelled_in_the_kb_and_searched_from(built, tmp_path):
    from snoop_nb.ui.grid import ImageGrid
    from snoop_nb.ui.vmap import MapView

    col_dir = copy_of(built, tmp_path / "collection")
    with open_collection(col_dir) as col:
        m = load_map(col)
        session = col.session("ben", "round things")
        grid = ImageGrid(col, session=session)
        view = MapView(col, session=session, grid=grid)
        # a box around the first item and its neighbours
        x, y = m.xy[0]
        view.vue_select({"kind": "box", "points": [[x - 0.05, y - 0.05], [x + 0.05, y + 0.05]]})
        expect = m.in_box(x - 0.05, y - 0.05, x + 0.05, y + 0.05)
        assert 0 in view.selected and set(view.selected) == set(expect.tolist())
        assert view.selected_count == expect.size
        assert np.frombuffer(view.mask[0], np.uint8).sum() == expect.size
        view.vue_label({"value": -1})
        lab = col.kb.labels(session.ref)
        assert dict(zip(lab["item_id"], lab["value"], strict=True)) == dict.fromkeys(
            expect.tolist(), -1
        )
        assert view.stored == 1

        # a lasso (a triangle) adds to the selection with shift; searched from, the results
        # are the collection's nearest to the selection's mean vector, shown in the grid
        tri = [[0.4, 0.4], [0.6, 0.4], [0.5, 0.6]]
        view.vue_select({"kind": "lasso", "points": tri, "add": True})
        lasso = m.ids[inside_polygon(m.xy, tri)]
        assert set(view.selected) == set(expect.tolist()) | set(lasso.tolist())
        frame = view.search_selection(k=30)
        mean = col.vectors_of(view.selected).mean(axis=0)
        assert frame["id"].tolist() == col.search(vector=mean, k=30)["id"].tolist()
        assert grid.frame["id"].tolist() == frame["id"].tolist()
        assert "selected on the map" in grid.status_text
        view.show_selection()
        assert sorted(grid.frame["id"]) == sorted(view.selected.tolist())

        # hovering a point sends its thumbnail; deselecting clears the mask
        view.vue_hover_point({"index": int(np.flatnonzero(view._order == 0)[0])})
        assert view.hover["id"] == 0 and view.hover_thumb[0][:2] == b"\xff\xd8"  # a JPEG
        view.vue_clear({})
        assert view.mask == [] and view.selected_count == 0


def test_without_a_map_the_view_offers_to_build_one(built, tmp_path):
    from snoop_nb.ui.vmap import MapView

    col_dir = copy_of(built, tmp_path / "collection")
    for p in col_dir.glob("map-*.npz"):
        p.unlink()
    with open_collection(col_dir) as col:
        view = MapView(col)
        assert not view.has_map and "snoop map --collection" in view.message
        view.vue_build({})
        assert view.has_map and view.count == 796 and not view.building
        assert load_map(col) is not None


# --- browser ---------------------------------------------------------------------------------
def screen_box(view: tuple[float, float, float], rect: dict, a, b) -> tuple:
    """Map coordinates of two points given on the page, as the canvas computes them."""
    scale, ox, oy = view
    return tuple(((p[0] - rect["x"] - ox) / scale, (p[1] - rect["y"] - oy) / scale) for p in (a, b))


def steady_rect(page) -> dict:
    """The canvas's box on the page once it stops moving."""
    rect = None
    for _ in range(50):
        page.wait_for_timeout(100)
        now = page.query_selector(".snoop-map__canvas").bounding_box()
        if now == rect:
            return rect
        rect = now
    raise AssertionError("the map's canvas kept moving")


def canvas_view(page) -> tuple[float, float, float]:
    return tuple(float(x) for x in page.get_attribute(".snoop-map__canvas", "data-view").split(","))


@pytest.mark.browser
@pytest.mark.slow
def test_a_box_drawn_on_the_map_in_chromium_is_labelled_in_the_kb(built, tmp_path):
    col_dir = copy_of(built, tmp_path / "collection")
    with open_collection(col_dir) as col:
        m = load_map(col)
        q = np.round(m.xy * 65535) / 65535  # positions as the browser has them
    with dashboard(col_dir) as url, chromium() as browser:
        page = new_page(browser)
        open_app(page, url + "?user=lia")
        page.fill(".snoop-new-class input", "from the map")
        page.press(".snoop-new-class input", "Enter")
        page.wait_for_function("() => /relevant/.test(document.querySelector('.snoop-counts')"
                               ".textContent)")  # fmt: skip
        page.click(".snoop-tab-map")
        page.wait_for_selector(".snoop-map__canvas[data-count='796']", timeout=60_000)
        assert "relevant (0)" in page.inner_text(".snoop-map__legend")
        rect = steady_rect(page)  # once the tab's slide-in transition is over
        view = canvas_view(page)

        # a box around the densest part of the map, drawn with the box tool
        page.click(".snoop-map-tool--box")
        cx, cy = (float(c) for c in np.median(q, axis=0))
        a = (
            rect["x"] + view[1] + (cx - 0.12) * view[0],
            rect["y"] + view[2] + (cy - 0.12) * view[0],
        )
        b = (
            rect["x"] + view[1] + (cx + 0.12) * view[0],
            rect["y"] + view[2] + (cy + 0.12) * view[0],
        )
        page.mouse.move(*a)
        page.mouse.down()
        page.mouse.move(*b, steps=8)
        page.mouse.up()
        page.wait_for_selector(".snoop-map-selection-count")
        (x0, y0), (x1, y1) = screen_box(view, rect, a, b)
        tol = 1.0 / view[0]  # a pixel: the page may round the pointer's coordinates

        def in_box(pad: float) -> set[int]:
            x, y = q[:, 0], q[:, 1]
            hit = (x >= x0 - pad) & (x <= x1 + pad) & (y >= y0 - pad) & (y <= y1 + pad)
            return set(m.ids[hit].tolist())

        assert len(in_box(-tol)) > 10
        count = int(page.inner_text(".snoop-map-selection-count").split()[0])
        assert len(in_box(-tol)) <= count <= len(in_box(tol))
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "map-1-box.png"))
        page.click(".snoop-map-relevant")
        page.wait_for_function(
            "(n) => document.querySelector('.snoop-map__legend').innerText"
            ".includes(`relevant (${n})`)",
            arg=count,
            timeout=30_000,
        )
        with open_collection(col_dir) as col:
            ref = col.kb.get_class("lia", "from the map")
            lab = col.kb.labels(ref)
        labelled = dict(zip(lab["item_id"].tolist(), lab["value"].tolist(), strict=True))
        assert len(labelled) == count and set(labelled.values()) == {1}
        assert in_box(-tol) <= set(labelled) <= in_box(tol)

        # wheel zoom at the pointer and a drag with the pan tool move the view
        frames = int(page.get_attribute(".snoop-map__canvas", "data-frames"))
        page.mouse.move(rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2)
        for _ in range(5):
            page.mouse.wheel(0, -120)
        page.wait_for_function(
            "(s) => Number(document.querySelector('.snoop-map__canvas').dataset.view"
            ".split(',')[0]) > s * 1.5",
            arg=view[0],
        )
        page.click(".snoop-map-tool--pan")
        zoomed = canvas_view(page)
        page.mouse.move(rect["x"] + 300, rect["y"] + 300)
        page.mouse.down()
        page.mouse.move(rect["x"] + 380, rect["y"] + 340, steps=6)
        page.mouse.up()
        page.wait_for_timeout(200)
        panned = canvas_view(page)
        assert panned[0] == zoomed[0]
        assert abs(panned[1] - zoomed[1] - 80) < 1 and abs(panned[2] - zoomed[2] - 40) < 1
        assert int(page.get_attribute(".snoop-map__canvas", "data-frames")) > frames + 2

        # hovering a point shows its thumbnail
        i = int(np.argmin(np.abs(q - q.mean(axis=0)).sum(axis=1)))
        sx, sy = float(panned[1] + q[i, 0] * panned[0]), float(panned[2] + q[i, 1] * panned[0])
        rect = steady_rect(page)  # below the selection's bar now
        page.mouse.move(rect["x"] + sx + 1, rect["y"] + sy + 1)
        d = np.hypot(
            panned[1] + q[:, 0] * panned[0] - sx - 1, panned[2] + q[:, 1] * panned[0] - sy - 1
        )
        nearest = int(m.ids[int(np.argmin(d))])
        page.wait_for_selector(f".snoop-map__hover[data-id='{nearest}'] img", timeout=20_000)
        page.screenshot(path=str(SHOTS / "map-2-zoomed-hover.png"))

        # "show in grid" puts the selection in the first tab's grid
        page.click(".snoop-map-tool--box")
        page.mouse.move(rect["x"] + sx - 60, rect["y"] + sy - 60)
        page.mouse.down()
        page.mouse.move(rect["x"] + sx + 60, rect["y"] + sy + 60, steps=5)
        page.mouse.up()
        page.wait_for_function(
            "(n) => { const e = document.querySelector('.snoop-map-selection-count');"
            " return e && e.innerText.trim() !== `${n} selected`; }",
            arg=count,
        )
        page.click(".snoop-map-show")
        page.wait_for_function(
            "() => document.querySelector('.snoop-grid__count').textContent"
            ".includes('selected on the map')"
        )
        assert len(tile_ids(page)) > 0
        # the visitor's kernel read the cached map: no umap, numba or llvmlite loaded there
        for pid in processes_of(col_dir):
            assert not maps_library(pid, "llvmlite")
        page.context.close()
