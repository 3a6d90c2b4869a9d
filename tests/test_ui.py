"""The widgets' Python side, without a browser: every control calls the engine and shows
what it got back (the browser tests in test_dashboard.py check the front end)."""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pandas as pd
import pytest
from dashboard import copy_demo_collection
from PIL import Image

from snoop_nb import open_collection
from snoop_nb.errors import UsageError
from snoop_nb.export import class_table
from snoop_nb.ui import App, ImageGrid, visitor_user
from snoop_nb.ui.grid import NO_CLASS_MESSAGE
from snoop_nb.ui.search import MAX_UPLOAD_BYTES


@pytest.fixture(scope="module")
def col(tmp_path_factory):
    path = copy_demo_collection(tmp_path_factory.mktemp("ui") / "collection")
    with open_collection(path) as c:
        yield c


def kb_label(col, user, name, item):
    lab = col.kb.labels(col.kb.get_class(user, name)).set_index("item_id")["value"]
    return int(lab.get(item, 0))


def test_click_cycles_relevant_not_relevant_unlabelled_and_writes_each(col):
    grid = ImageGrid(col, session=col.session("ui-ann", "boats"))
    grid.show(col.items().head(30))
    item = grid.tiles[0]["id"]
    for expected in (1, -1, 0, 1):
        grid.vue_cycle({"id": item})
        assert kb_label(col, "ui-ann", "boats", item) == expected
        assert grid.labels.get(str(item), 0) == expected
    grid.vue_set_label({"id": item, "value": -1})  # the "n" key
    assert kb_label(col, "ui-ann", "boats", item) == -1


def test_grid_without_a_class_does_not_label_and_says_what_to_do(col):
    grid = ImageGrid(col)
    grid.show(col.items().head(5))
    grid.vue_cycle({"id": grid.tiles[0]["id"]})
    # nobody told this grid how to create a class: it says how, and offers nothing
    assert grid.labels == {} and grid.offer == {} and grid.message == NO_CLASS_MESSAGE
    assert "grid.session = collection.session(" in grid.message


def kb_classes(col, user):
    return [ref.name for ref in col.kb.classes(user, shared=False)]


def test_a_click_with_no_class_offers_one_named_after_the_search_then_labels(col):
    app = App(col, user="ui-gus", warm_up=False)
    app.search.search_text("a bird")
    item = app.grid.tiles[0]["id"]
    app.grid.vue_cycle({"id": item})
    assert app.grid.offer["name"] == "a bird" and app.grid.offer["value"] == 1
    assert app.grid.offer["text"] == "No class yet: create one and label this tile relevant?"
    assert kb_classes(col, "ui-gus") == []  # offering creates nothing
    app.grid.vue_accept_offer({"name": "a/bird"})  # refused by the trainer: the offer stays
    assert "'/'" in app.grid.offer["error"] and kb_classes(col, "ui-gus") == []
    app.grid.vue_accept_offer({"name": " a bird "})
    assert kb_classes(col, "ui-gus") == ["a bird"]
    assert kb_label(col, "ui-gus", "a bird", item) == 1  # the click was not lost
    assert app.grid.offer == {} and app.grid.labels == {str(item): 1}
    assert app.trainer.session.ref.name == "a bird" and app.grid.session is app.trainer.session
    assert app.trainer.counts.children == ["1 relevant · 0 not relevant"]
    app.grid.vue_cycle({"id": item})  # from now on clicks label at once
    assert kb_label(col, "ui-gus", "a bird", item) == -1 and app.grid.offer == {}


def test_an_offer_for_a_selection_takes_an_edited_name_or_is_cancelled(col):
    app = App(col, user="ui-hal", warm_up=False)
    app.search.search_item(int(col.items()["id"].iloc[0]))
    assert app.grid.class_hint == ""  # no text searched: the visitor names the class
    ids = [t["id"] for t in app.grid.tiles[:3]]
    app.grid.select(ids)
    app.grid.vue_set_label({"ids": ids, "value": -1})  # "n" on a selection
    assert app.grid.offer["name"] == ""
    assert app.grid.offer["text"] == (
        "No class yet: create one and label these 3 tiles not relevant?"
    )
    app.grid.vue_cancel_offer({})
    assert app.grid.offer == {} and kb_classes(col, "ui-hal") == []
    app.grid.vue_accept_offer({"name": "late"})  # nothing is pending any more
    assert kb_classes(col, "ui-hal") == []
    app.grid.vue_set_label({"id": ids[0], "value": 0})  # clearing with no class: nothing to do
    assert app.grid.offer == {} and "no label to clear" in app.grid.message
    app.grid.vue_set_label({"ids": ids, "value": -1})
    app.grid.vue_accept_offer({"name": "not this"})
    assert kb_classes(col, "ui-hal") == ["not this"]
    lab = col.kb.labels(col.kb.get_class("ui-hal", "not this"))
    assert dict(zip(lab["item_id"], lab["value"], strict=True)) == dict.fromkeys(ids, -1)
    assert app.grid.selected == []  # labelled, the selection is done with


def test_a_selection_is_labelled_in_one_transaction_and_tiles_show_what_is_stored(col):
    session = col.session("ui-ivy", "sel")
    grid = ImageGrid(col, session=session)
    grid.show(col.items().head(30))
    page = [t["id"] for t in grid.tiles]
    outside = page[0]
    session.label([outside], 1)  # written by another hand: the grid has not seen it yet
    assert grid.labels == {}
    chosen = page[3:7]
    grid.select([*chosen, 10_000_000])  # an id not shown is not selected
    assert grid.selected == chosen
    statements: list[str] = []
    db = col.kb._db  # the knowledge base's own connection: every statement it runs
    db.set_trace_callback(statements.append)
    before = db.total_changes
    try:
        grid.label_selection(-1)
    finally:
        db.set_trace_callback(None)
    assert [s for s in statements if s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]
    assert db.total_changes - before == 4
    rows = col.kb.label_history(session.ref)
    rows = rows[rows["item_id"].isin(chosen)]
    assert len(rows) == 4 and rows["time"].nunique() == 1 and set(rows["value"]) == {-1}
    # the tiles show the labels as stored, the one written elsewhere included
    assert grid.labels == {str(outside): 1, **{str(i): -1 for i in chosen}}
    assert grid.selected == [] and grid.stored == 1


def test_select_page_space_and_paging_act_on_the_selection(col):
    session = col.session("ui-jon", "pages")
    grid = ImageGrid(col, session=session, page_size=10)
    grid.show(col.items().head(25))
    grid.label_selection(1)
    assert "select tiles first" in grid.message
    grid.select_page()
    page = [t["id"] for t in grid.tiles]
    assert grid.selected == page and len(page) == 10
    grid.vue_cycle({"id": page[2], "ids": grid.selected})  # space: the focused tile's next label
    assert {int(k): v for k, v in grid.labels.items()} == dict.fromkeys(page, 1)
    grid.select(page[:2])
    grid.vue_cycle({"id": page[0], "ids": grid.selected})
    assert [grid.labels.get(str(i)) for i in page[:3]] == [-1, -1, 1]
    grid.select(page[5:8])
    grid.vue_goto(2)  # other tiles: the selection does not follow to them
    assert grid.selected == []
    grid.select([t["id"] for t in grid.tiles[:2]])
    grid.vue_set_label({"ids": grid.selected, "value": 0})
    assert grid.labels == {} and grid.selected == []
    lab = session.labels()
    assert dict(zip(lab["item_id"], lab["value"], strict=True)) == {
        **dict.fromkeys(page, 1),
        page[0]: -1,
        page[1]: -1,
    }


def test_grid_pages_and_sends_jpeg_bytes_not_paths(col):
    grid = ImageGrid(col, page_size=24)
    grid.show(col.items().head(100))
    assert (grid.total, grid.page_count, len(grid.tiles)) == (100, 5, 24)
    for data in grid.thumbs:
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and max(image.size) <= 256
    assert not any("/" in str(tile) for tile in grid.tiles[0].values())  # no path leaks
    grid.vue_goto(5)
    assert len(grid.tiles) == 4 and grid.status_text.startswith("97-100 of 100")


def test_a_vanished_file_gets_a_reasoned_empty_tile(col, tmp_path):
    grid = ImageGrid(col)
    item = int(col.items()["id"].iloc[3])
    path = col.paths([item])[item]
    moved = tmp_path / "moved.png"
    path.rename(moved)
    try:
        grid.show(col.items([item]))
    finally:
        moved.rename(path)
    assert grid.thumbs == [b""] and grid.tiles[0]["error"]


def test_more_like_this_searches_by_the_tile(col):
    grid = ImageGrid(col)
    grid.show(col.items().head(3))
    item = grid.tiles[0]["id"]
    grid.vue_more({"id": item})
    expected = col.search(item=item, k=5)["id"].tolist()
    assert [t["id"] for t in grid.tiles[:5]] == expected


def test_upload_is_size_limited_and_decoded_safely(col):
    app = App(col, user="ui-ben", warm_up=False)
    app.search.search_image(b"\0" * (MAX_UPLOAD_BYTES + 1), "huge.jpg")
    assert "MiB" in app.grid.message
    app.search.search_image(b"this is no picture", "fake.jpg")
    assert "cannot search with fake.jpg" in app.grid.message
    uri = col.items()["uri"].iloc[10]
    with open(uri, "rb") as f:
        app.search.search_image(f.read(), "same.png")
    assert app.grid.message == "" and app.grid.tiles[0]["id"] == int(col.items()["id"].iloc[10])


def test_a_large_upload_is_shrunk_while_decoded_and_finds_its_item(col):
    """A 25-megapixel upload (above the size decoded whole) goes through the same shrink-on-load
    as indexing and still finds the item it was made from."""
    row = col.items().iloc[20]
    with Image.open(row["uri"]) as small:
        big = small.convert("RGBA").resize((5000, 5000), Image.Resampling.NEAREST)
    out = io.BytesIO()
    big.save(out, format="PNG")
    assert len(out.getvalue()) <= MAX_UPLOAD_BYTES
    app = App(col, user="ui-bea", warm_up=False)
    queried, run = [], app.search._run
    app.search._run = lambda query, what: (queried.append(query["image"].size), run(query, what))
    app.search.search_image(out.getvalue(), "big.png")
    assert app.grid.message == "" and app.grid.tiles[0]["id"] == int(row["id"])
    assert queried and max(queried[0]) < 5000 and min(queried[0]) >= 512


def test_train_rank_apply_share_and_copy_through_the_trainer(col):
    app = App(col, user="ui-cleo", warm_up=False)
    app.search.search_text("a bird")
    app.trainer.create("birds")
    birds = col.items()
    birds = birds[birds["subcategory"] == "birds"]["id"].tolist()
    others = col.items()
    others = others[others["category"] == "vehicles"]["id"].tolist()
    for i in birds[:4]:
        app.grid.label(i, 1)
    for i in others[:4]:
        app.grid.label(i, -1)
    assert app.trainer.counts.children == ["4 relevant · 4 not relevant"]
    app.trainer.train_and_rank()
    assert "version 1" in app.trainer.quality.children[0]
    assert app.grid.status_text.endswith("ranking of birds")
    top = [t["id"] for t in app.grid.tiles[:10]]
    assert len(set(top) & set(birds)) >= 5
    app.trainer.threshold.v_model = 0.5
    app.trainer.apply()
    n = len(col.kb.applied(col.kb.get_class("ui-cleo", "birds")))
    assert app.trainer.status.children == [f"birds applied to {n} items"] and n > 0
    app.trainer.share.v_model = True
    assert col.kb.get_class("ui-cleo", "birds").shared

    other = App(col, user="ui-dan", warm_up=False)
    values = [i["value"] for i in other.trainer.classes.items]
    assert "ui-cleo/birds" in values
    other.trainer.classes.v_model = "ui-cleo/birds"
    assert other.grid.session is None  # read-only: clicks do not label someone else's class
    assert other.grid.status_text.endswith("ui-cleo/birds")
    other.trainer.copy_shared()
    assert other.trainer.session is not None and other.trainer.session.counts()["pos"] == 4


def test_explorer_table_downloads_and_plots(col):
    app = App(col, user="ui-eva", warm_up=False)
    session = col.session("ui-eva", "vehicles")
    items = col.items()
    session.label(items[items["category"] == "vehicles"]["id"].head(5).tolist(), +1)
    session.label(items[items["category"] == "animals"]["id"].head(5).tolist(), -1)
    session.train()
    session.apply(0.5)
    app.explorer.show_class("ui-eva/vehicles")
    assert "applied to" in app.explorer.summary.children[0]
    assert "<table" in app.explorer.table.value
    header, data = app.explorer.csv.href.split(",", 1)
    assert header == "data:text/csv;base64"
    got = pd.read_csv(io.BytesIO(base64.b64decode(data)))
    want = class_table(col, "ui-eva", "vehicles")
    assert len(got) == len(want) and set(got["item_id"]) == set(want["item_id"])
    assert app.explorer.parquet.attributes == {"download": "ui-eva-vehicles.parquet"}
    parquet = base64.b64decode(app.explorer.parquet.href.split(",", 1)[1])
    assert len(pd.read_parquet(io.BytesIO(parquet))) == len(want)
    for plot in (app.explorer.score_plot, app.explorer.count_plot):
        assert Image.open(io.BytesIO(plot.value)).format == "PNG"
    assert "category" in app.explorer.field.items
    app.explorer.field.v_model = "category"
    assert Image.open(io.BytesIO(app.explorer.count_plot.value)).format == "PNG"


def test_visitor_is_named_by_the_address_or_the_deployment(monkeypatch):
    monkeypatch.setenv("QUERY_STRING", "user=Ana%20Lu&x=1")
    assert visitor_user() == "Ana Lu"
    monkeypatch.setenv("QUERY_STRING", "")
    monkeypatch.setenv("SNOOP_USER", "archivist")
    assert visitor_user() == "archivist"
    monkeypatch.delenv("SNOOP_USER")
    assert visitor_user() is None


def test_app_asks_a_visitor_without_a_name(col, monkeypatch):
    monkeypatch.delenv("SNOOP_USER", raising=False)
    monkeypatch.setenv("QUERY_STRING", "")
    app = App(col, warm_up=False)
    assert app.user is None and app.grid is None
    with pytest.raises(UsageError, match=r"^user name is empty$"):
        app.start("   ")
    app.start("Zoé")
    assert app.user == "Zoé" and app.grid is not None and len(app.grid.tiles) > 0


def test_scores_in_tiles_are_rounded_text(col):
    grid = ImageGrid(col)
    frame = col.items().head(2).assign(score=np.float32(0.123456))
    grid.show(frame)
    assert grid.tiles[0]["score"] == "0.123"
    assert os.path.basename(frame["uri"].iloc[0]) == grid.tiles[0]["caption"]


def test_a_new_class_starts_from_the_last_search(col):
    app = App(col, user="ui-fay", warm_up=False)
    app.search.search_text("a bird")
    searched = [t["id"] for t in app.grid.tiles[:6]]
    app.trainer.create("first-birds")
    app.trainer.strategy.v_model = "top"
    app.trainer.suggest()
    # the class starts from the query itself: its plain nearest items (the search showed them
    # re-ranked by expansion, the same items near the top)
    start = col.search(text="a bird", k=6, expand=False)["id"].tolist()
    assert [t["id"] for t in app.grid.tiles[:6]] == start
    assert len(set(start) & set(searched)) >= 4
    app.trainer.create("ada/birds")  # not a class name: "/" separates owner and class
    assert "'/'" in app.trainer.status.children[0]
