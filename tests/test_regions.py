"""Query by region and region indexing (snoop_nb.regions), with the default model on real
photographs: a small object pasted into other photographs is found from a picture of the
object alone far better with the regions indexed, the matching region is the one it was pasted
in, a box cut from a picture searches by that part, and the region store resumes after a
killed run, follows removals and records unreadable files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from mediafiles import photo

from snoop_nb import open_collection
from snoop_nb.errors import UsageError
from snoop_nb.regions import REGIONS_FILE, fraction_box, region_boxes

pytestmark = pytest.mark.slow  # the default model

SCENES = ("coffee", "astronaut", "rocket", "camera", "immunohistochemistry")
SIZE = (320, 240)
#: Where the object is pasted in each scene (pixels of a SIZE scene), and its size.
SPOT = (200, 150)
OBJECT = (56, 42)  # a sixth of the scene's width


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, default_embedder):
    """Five photographs, the same five with a small cat pasted in, and the cat alone."""
    root = tmp_path_factory.mktemp("regions")
    pics = root / "pics"
    pics.mkdir()
    cat = photo("chelsea").resize(OBJECT)
    for name in SCENES:
        bg = photo(name).convert("RGB").resize(SIZE)
        bg.save(pics / f"{name}.png")
        bg.paste(cat, SPOT)
        bg.save(pics / f"cat_in_{name}.jpg", quality=90)
    query = root / "cat.png"
    photo("chelsea").save(query)
    col = open_collection(root / "col", create=True, embedder=default_embedder)
    col.add([pics], progress=False)
    yield col, pics, query
    col.close()


def _ranks(df, names) -> list[int]:
    uris = list(df["uri"])
    return [next(i for i, u in enumerate(uris, 1) if u.endswith(n)) for n in names]


def test_region_boxes_cover_the_picture():
    boxes = region_boxes()
    assert len(boxes) == 9 and len(set(boxes)) == 9
    assert all(
        abs((x1 - x0) - 0.5) < 1e-6 and abs((y1 - y0) - 0.5) < 1e-6 for x0, y0, x1, y1 in boxes
    )
    # any object up to a quarter of the picture lies whole inside one window
    rng = np.random.default_rng(0)
    for _ in range(200):
        x, y = rng.uniform(0, 0.75, 2)
        assert any(b[0] <= x and x + 0.25 <= b[2] and b[1] <= y and y + 0.25 <= b[3] for b in boxes)
    assert len(region_boxes((0.5, 1 / 3))) == len(region_boxes((0.5, 0.3333))) == 9 + 25
    with pytest.raises(UsageError):
        region_boxes((1.5,))


def test_fraction_box_reads_fractions_and_pixels():
    assert fraction_box((0.1, 0.2, 0.5, 0.6), (320, 240)) == (0.1, 0.2, 0.5, 0.6)
    assert fraction_box((160, 120, 320, 240), (320, 240)) == (0.5, 0.5, 1.0, 1.0)
    assert fraction_box((0.5, 0.6, 0.1, 0.2), (10, 10)) == (0.1, 0.2, 0.5, 0.6)  # any corner order
    for bad in [(0.2, 0.2, 0.2, 0.5), (2, 2), ("a", 0, 1, 1), (0, 0, float("nan"), 1)]:
        with pytest.raises(UsageError):
            fraction_box(bad, (100, 100))


def test_a_small_object_is_found_with_regions_and_boxed_where_it_was_pasted(scenes):
    col, _, query = scenes
    with_cat = [f"cat_in_{n}.jpg" for n in SCENES]
    assert not (col.root / REGIONS_FILE).exists()
    before = col.search(image=str(query), k=len(col), expand=False)
    assert "box" not in before  # no regions: the plain search, unchanged
    report = col.index_regions(progress=False)
    assert report["added"] == len(col) and report["regions"] == 9 * len(col)
    assert report["failed"] == 0
    after = col.search(image=str(query), k=len(col), expand=False)
    assert sorted(_ranks(after, with_cat)) == [1, 2, 3, 4, 5]  # every scene with the cat first

    def margin(df):  # the worst scene with the cat against the best picture without it
        cat = df["uri"].map(lambda u: u.split("/")[-1] in with_cat)
        return df["similarity"][cat].min() - df["similarity"][~cat].max()

    assert margin(after) > margin(before) + 0.1
    hits = after.iloc[:5]
    assert (hits["similarity"] >= hits["region_similarity"] - 1e-6).all()
    cx = (SPOT[0] + OBJECT[0] / 2) / SIZE[0]
    cy = (SPOT[1] + OBJECT[1] / 2) / SIZE[1]
    for box in hits["box"]:  # the matching window holds the pasted cat
        assert box is not None and box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
    plain = col.search(image=str(query), k=len(col), expand=False, regions=False)
    assert list(plain["id"]) == list(before["id"]) and "box" not in plain
    default = col.search(image=str(query), k=5)  # expand=True: no diffusion over regions
    assert list(default["id"]) == list(after["id"][:5])
    assert np.allclose(default["score"], default["similarity"])


def test_a_box_cut_from_a_picture_searches_by_that_part(scenes):
    col, pics, _ = scenes
    items = col.items()
    scene = int(items[items["uri"] == str(pics / "cat_in_coffee.jpg")]["id"].iloc[0])
    box = (SPOT[0], SPOT[1], SPOT[0] + OBJECT[0], SPOT[1] + OBJECT[1])  # pixels: the cat
    col.index_regions(progress=False)  # (done already when the test above ran first)
    hits = col.search(item=scene, box=box, k=4)
    assert scene not in set(hits["id"])
    # the other scenes with the cat come before every scene without it
    others = [f"cat_in_{n}.jpg" for n in SCENES if n != "coffee"]
    assert sorted(_ranks(hits, others)) == [1, 2, 3, 4]
    whole = col.search(item=scene, k=4, expand=False, regions=False)
    assert whole.iloc[0]["uri"].endswith("/coffee.png")  # the whole picture: its own background
    frac = col.search(image=str(pics / "cat_in_coffee.jpg"), box=(0.625, 0.625, 0.875, 0.875), k=4)
    assert len(frac) == 4
    with pytest.raises(UsageError, match="region of a picture"):
        col.search(text="a cat", box=(0, 0, 0.5, 0.5))
    with pytest.raises(UsageError, match="no area"):
        col.search(item=scene, box=(0.5, 0.5, 0.5, 0.9))


def test_regions_resume_follow_removals_and_record_bad_files(tmp_path, default_embedder):
    pics = tmp_path / "pics"
    pics.mkdir()
    for name in SCENES:
        photo(name).convert("RGB").resize(SIZE).save(pics / f"{name}.png")
    col = open_collection(tmp_path / "col", create=True, embedder=default_embedder)
    with col:
        col.add([pics], progress=False)
        with pytest.raises(UsageError, match="no regions"):
            col.search(item=int(col.ok_ids()[0]), regions=True)

        def killed(done, total):
            if done >= 2:
                raise KeyboardInterrupt  # the kernel dies after the first batch

        with pytest.raises(KeyboardInterrupt):
            col.index_regions(batch=2, progress=False, on_batch=killed)
        assert col.region_store().stats()["items"] == 2  # that batch was kept whole
        again = col.index_regions(progress=False)
        assert again["added"] == len(SCENES) - 2 and again["items"] == len(SCENES)
        assert col.index_regions(progress=False)["added"] == 0  # nothing left to do
        finer = col.index_regions(progress=False, scales=(0.5, 1 / 3))  # other windows: anew
        assert finer["added"] == len(SCENES) and finer["regions"] == 34 * len(SCENES)
        assert col.index_regions(progress=False)["added"] == 0  # the store's windows kept
        # a removed item's regions are never returned
        gone = int(col.items()[col.items()["uri"].str.endswith("rocket.png")]["id"].iloc[0])
        col.remove([gone])
        query = pics / "rocket.png"
        hits = col.search(image=str(query), k=len(SCENES), expand=False)
        assert gone not in set(hits["id"]) and len(hits) == len(SCENES) - 1
        # a new picture is done alone; one unreadable by then is recorded, then retried
        (pics / "rocket.png").unlink()  # (else adding the folder again brings it back)
        photo("chelsea").resize(SIZE).save(pics / "chelsea.png")
        photo("coffee").resize(SIZE).save(pics / "coffee2.png")
        col.add([pics], progress=False)
        kept = (pics / "coffee2.png").read_bytes()
        (pics / "coffee2.png").write_bytes(kept[:100])  # truncated after it was indexed
        n = col.index_regions(progress=False)
        assert n["added"] == 2 and n["failed"] == 1 and n["items"] == len(SCENES)
        (pics / "coffee2.png").write_bytes(kept)
        n = col.index_regions(progress=False)
        assert n["added"] == 1 and n["failed"] == 0 and n["items"] == len(SCENES) + 1
    # reopened: the store is read back; another model's collection would start anew
    with open_collection(tmp_path / "col", embedder=default_embedder) as col:
        assert col.region_store().stats()["items"] == len(SCENES) + 1  # 5 - rocket + 2 new
        assert col.region_store().matches()


def test_cli_index_regions_and_search_by_box(scenes, tmp_path):
    col, pics, query = scenes
    run = [sys.executable, "-m", "snoop_nb.cli"]
    r = subprocess.run(
        [*run, "index", str(pics), "--collection", str(col.root), "--regions", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["regions"]["items"] == len(col) and out["regions"]["added"] == 0  # all done before
    r = subprocess.run(
        [*run, "search", "--collection", str(col.root), "--image", str(query), "-k", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert all("cat_in_" in row["uri"] and len(row["box"]) == 4 for row in rows)
    bad = subprocess.run(
        [*run, "search", "--collection", str(col.root), "--image", str(query), "--box", "1,2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2 and "four numbers" in bad.stderr


@pytest.mark.browser
def test_the_matching_region_is_boxed_on_its_tile_in_chromium(scenes):
    """A text search in a real `snoop dashboard` over the scenes: the tiles of pictures whose
    window matched best show that window, drawn inside the thumbnail where it lies."""
    from dashboard import chromium, dashboard, new_page, open_app, search_text, tile_ids

    col, _, _ = scenes
    col.index_regions(progress=False)
    with dashboard(col.root) as url, chromium() as browser:
        page = new_page(browser)
        open_app(page, url + "?user=rhea")
        search_text(page, "a cat")
        shown = tile_ids(page)
        hits = col.search(text="a cat", k=len(shown))  # what the kernel showed
        boxed = {int(i): b for i, b in zip(hits["id"], hits["box"], strict=True) if b is not None}
        assert boxed, "no window matched better than a whole picture"
        page.wait_for_selector(".snoop-tile__region", timeout=30_000)
        for item, box in boxed.items():
            if item not in shown:
                continue
            geo = page.eval_on_selector(
                f'.snoop-tile[data-id="{item}"]',
                """t => { const i = t.querySelector('img').getBoundingClientRect();
                          const r = t.querySelector('.snoop-tile__region').getBoundingClientRect();
                          const s = t.querySelector('img');
                          const k = Math.min(i.width / s.naturalWidth, i.height / s.naturalHeight);
                          const w = s.naturalWidth * k, h = s.naturalHeight * k;
                          const x = i.left + (i.width - w) / 2, y = i.top + (i.height - h) / 2;
                          return [(r.left - x) / w, (r.top - y) / h,
                                  (r.right - x) / w, (r.bottom - y) / h]; }""",
            )
            # drawn where it lies in the picture, to a pixel or two of the thumbnail
            assert np.allclose(geo, box, atol=0.03), (item, geo, box)
        plain = [i for i in shown if i not in boxed]
        for item in plain:
            assert not page.query_selector(f'.snoop-tile[data-id="{item}"] .snoop-tile__region')
        from test_grid_browser import shot

        shot(page, "regions-boxed")
        # a box drawn with the mouse on a scene's picture, around the cat: search by it
        items = col.items()
        scene = int(items[items["uri"].str.endswith("/cat_in_coffee.jpg")]["id"].iloc[0])
        others = {
            int(i)
            for i, u in zip(items["id"], items["uri"], strict=True)
            if "cat_in_" in u and int(i) != scene
        }
        img = page.eval_on_selector(
            f'.snoop-tile[data-id="{scene}"] img',
            """s => { const i = s.getBoundingClientRect();
                      const k = Math.min(i.width / s.naturalWidth, i.height / s.naturalHeight);
                      const w = s.naturalWidth * k, h = s.naturalHeight * k;
                      return [i.left + (i.width - w) / 2, i.top + (i.height - h) / 2, w, h]; }""",
        )
        x, y, w, h = img
        fx0, fy0 = SPOT[0] / SIZE[0], SPOT[1] / SIZE[1]
        fx1, fy1 = (SPOT[0] + OBJECT[0]) / SIZE[0], (SPOT[1] + OBJECT[1]) / SIZE[1]
        labels_before = col.kb.users()
        page.mouse.move(x + fx0 * w, y + fy0 * h)
        page.mouse.down()
        page.mouse.move(x + (fx0 + fx1) / 2 * w, y + (fy0 + fy1) / 2 * h, steps=4)
        page.wait_for_selector(".snoop-tile__drawing", timeout=10_000)  # the box as it is drawn
        page.mouse.move(x + fx1 * w, y + fy1 * h, steps=4)
        page.mouse.up()
        page.wait_for_function(
            "() => (document.querySelector('.snoop-grid__message') || {}).textContent"
            "?.includes('search by a region')",
            timeout=60_000,
        )
        page.wait_for_function(
            f"() => !document.querySelector('.snoop-tile[data-id=\"{scene}\"]')", timeout=30_000
        )
        top = tile_ids(page)[:4]
        assert set(top) == others, (top, others)  # the other scenes with the cat, first
        assert col.kb.users() == labels_before  # the drag labelled nothing
        names = page.eval_on_selector_all(".snoop-tile__name", "ns => ns.map(n => n.textContent)")
        assert all(n.startswith("cat_in_") for n in names[:4]), names
        shot(page, "regions-drawn")


def test_a_box_drawn_on_an_uploaded_picture_searches_by_that_part(scenes):
    """The search panel keeps an uploaded picture on show; a box drawn on it searches by that
    part of it (the panel's API, as the front end calls it)."""
    from snoop_nb.ui import App
    from snoop_nb.ui.boxpick import _fractions

    col, pics, _ = scenes
    col.index_regions(progress=False)  # (done already when a test above ran first)
    app = App(col, user="uma", warm_up=False)
    upload = pics / "cat_in_coffee.jpg"
    app.search.search_image(upload.read_bytes(), upload.name)
    picker = app.search.picker
    assert picker.showing and picker.name == upload.name and picker.box == []
    assert picker.picture[:2] == b"\xff\xd8"  # a JPEG preview, sent as bytes
    whole = app.grid.frame
    assert whole.iloc[0]["uri"].endswith("/cat_in_coffee.jpg")
    fx0, fy0 = SPOT[0] / SIZE[0], SPOT[1] / SIZE[1]
    fx1, fy1 = (SPOT[0] + OBJECT[0]) / SIZE[0], (SPOT[1] + OBJECT[1]) / SIZE[1]
    picker.vue_region({"box": [fx0, fy0, fx1, fy1]})
    part = app.grid.frame
    cats = [f"cat_in_{n}.jpg" for n in SCENES]
    assert sorted(_ranks(part, cats)) == [1, 2, 3, 4, 5]  # every scene with the cat, first
    assert picker.box == pytest.approx([fx0, fy0, fx1, fy1])
    # the trainer starts a new class from that part, not from the whole picture
    from snoop_nb.regions import region_query
    from snoop_nb.search import query_vector

    start = app.trainer._start_vector()
    image = app.search._uploaded[0]
    assert np.allclose(start, region_query(col, [fx0, fy0, fx1, fy1], image=image), atol=1e-5)
    assert not np.allclose(start, query_vector(col, image=image), atol=1e-2)
    app.trainer.create("cat")
    assert app.trainer.session is not None
    # the whole picture again, then the picture closed
    picker.vue_whole()
    assert picker.box == [] and app.grid.frame["id"].tolist() == whole["id"].tolist()
    picker.vue_close()
    assert not picker.showing
    with pytest.raises(UsageError, match="empty"):
        _fractions([0.5, 0.2, 0.5, 0.6])
    with pytest.raises(UsageError, match="four"):
        _fractions("0,0,1")
    assert _fractions([0.9, -0.2, 0.1, 1.4]) == [0.1, 0.0, 0.9, 1.0]  # clamped and ordered


def test_a_box_drawn_on_an_uploaded_picture_in_chromium(scenes, tmp_path):
    """In a real `snoop dashboard`: upload a picture, drag a box around the cat on it with the
    mouse, and the scenes with the cat come first; the whole picture again on a click."""
    from dashboard import chromium, dashboard, new_page, open_app, tile_ids
    from test_grid_browser import shot

    col, pics, _ = scenes
    col.index_regions(progress=False)
    items = col.items()
    cats = {int(i) for i, u in zip(items["id"], items["uri"], strict=True) if "cat_in_" in u}
    with dashboard(col.root) as url, chromium() as browser:
        page = new_page(browser)
        open_app(page, url + "?user=una")
        with page.expect_file_chooser() as chooser:  # ipywidgets' input is never in the DOM
            page.click(".snoop-search-upload")
        chooser.value.set_files(str(pics / "cat_in_coffee.jpg"))
        page.wait_for_function(
            "() => { const i = document.querySelector('.snoop-boxpick__pic img');"
            " return i && i.complete && i.naturalWidth > 0; }",
            timeout=60_000,
        )
        page.wait_for_function(
            "() => document.querySelectorAll('.snoop-tile').length > 0", timeout=60_000
        )
        x, y, w, h = page.eval_on_selector(
            ".snoop-boxpick__pic img",
            "i => { const r = i.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }",
        )
        fx0, fy0 = SPOT[0] / SIZE[0], SPOT[1] / SIZE[1]
        fx1, fy1 = (SPOT[0] + OBJECT[0]) / SIZE[0], (SPOT[1] + OBJECT[1]) / SIZE[1]
        page.mouse.move(x + fx0 * w, y + fy0 * h)
        page.mouse.down()
        page.mouse.move(x + (fx0 + fx1) / 2 * w, y + (fy0 + fy1) / 2 * h, steps=4)
        page.wait_for_selector(".snoop-boxpick__drawing", timeout=10_000)
        page.mouse.move(x + fx1 * w, y + fy1 * h, steps=4)
        page.mouse.up()
        page.wait_for_selector(".snoop-boxpick__chosen", timeout=30_000)
        page.wait_for_function(
            "() => (document.querySelector('.snoop-grid') || document.body).textContent"
            ".includes('a part of cat_in_coffee.jpg')",
            timeout=60_000,
        )
        top = tile_ids(page)[:5]
        assert set(top) == cats, (top, cats)
        chosen = page.eval_on_selector(
            ".snoop-boxpick__chosen",
            "b => { const r = b.getBoundingClientRect();"
            " const i = document.querySelector('.snoop-boxpick__pic img').getBoundingClientRect();"
            " return [(r.left - i.left) / i.width, (r.top - i.top) / i.height,"
            " (r.right - i.left) / i.width, (r.bottom - i.top) / i.height]; }",
        )
        assert np.allclose(chosen, [fx0, fy0, fx1, fy1], atol=0.03), chosen
        shot(page, "regions-upload-boxed")
        page.click(".snoop-boxpick__whole")
        page.wait_for_selector(".snoop-boxpick__chosen", state="detached", timeout=30_000)
        page.click(".snoop-boxpick__close")
        page.wait_for_selector(".snoop-boxpick", state="detached", timeout=30_000)


def test_regions_are_searched_from_a_shared_memory_map_kept_current(scenes, tmp_path):
    """index_regions writes the region vectors as one memory-mapped array that every searching
    process maps; a stale, missing or cut-short export is never used (the store is read)."""
    import shutil
    import sqlite3

    from snoop_nb.regions import EXPORT_ROWS, EXPORT_VECTORS, RegionStore

    src = scenes[0]
    src.index_regions(progress=False)
    shutil.copytree(src.root, tmp_path / "col")
    col = open_collection(tmp_path / "col")
    with sqlite3.connect(col.root / REGIONS_FILE) as db:
        rows = db.execute("SELECT item_id, vector FROM regions ORDER BY id").fetchall()
    stored = np.frombuffer(b"".join(r[1] for r in rows), np.float16).reshape(len(rows), -1)
    items, _, vecs = RegionStore(col).arrays()
    assert isinstance(vecs, np.memmap) and (col.root / EXPORT_VECTORS).is_file()
    assert np.array_equal(vecs, stored) and items.tolist() == [r[0] for r in rows]
    q = col.search(item=int(items[0]), box=(0.5, 0.5, 1.0, 1.0), k=5)
    # a picture added: its regions are in the store at once, and in the export after the run
    extra = tmp_path / "cat_in_moon.jpg"
    bg = photo("moon").convert("RGB").resize(SIZE)
    bg.paste(photo("chelsea").resize(OBJECT), SPOT)
    bg.save(extra)
    col.add([extra], progress=False)
    col.index_regions(progress=False)
    items2, _, vecs2 = RegionStore(col).arrays()
    assert isinstance(vecs2, np.memmap) and len(items2) == len(items) + 9
    # a stale export (the store changed behind it) is not used: the store is read
    store = RegionStore(col)
    new = int(col.ids_under([extra])[0])
    store.put([(new, [(0.0, 0.0, 0.5, 0.5)], stored[:1], None)])  # its 9 windows become 1
    items3, _, vecs3 = store.arrays()
    assert not isinstance(vecs3, np.memmap) and len(items3) == len(items) + 1
    # cut short, or missing: read from the store, with the same results
    col.index_regions(progress=False)  # (nothing to do) writes the export again
    assert isinstance(RegionStore(col).arrays()[2], np.memmap)
    mapped = col.search(item=int(items[0]), box=(0.5, 0.5, 1.0, 1.0), k=5)
    path = col.root / EXPORT_VECTORS
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    again = RegionStore(col).arrays()
    assert not isinstance(again[2], np.memmap) and len(again[0]) == len(items) + 1
    (col.root / EXPORT_ROWS).unlink()
    assert len(RegionStore(col).arrays()[0]) == len(items) + 1
    read = col.search(item=int(items[0]), box=(0.5, 0.5, 1.0, 1.0), k=5)
    assert read["id"].tolist() == mapped["id"].tolist() and len(q) == 5
    col.close()
