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
from snoop_nb.export import class_table
from snoop_nb.ui import App, ImageGrid, visitor_user
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


def test_grid_without_a_class_does_not_label(col):
    grid = ImageGrid(col)
    grid.show(col.items().head(5))
    grid.vue_cycle({"id": grid.tiles[0]["id"]})
    assert grid.labels == {} and "class" in grid.message


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
    with pytest.raises(Exception, match="user"):
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
    assert [t["id"] for t in app.grid.tiles[:6]] == searched
    app.trainer.create("ada/birds")  # not a class name: "/" separates owner and class
    assert "'/'" in app.trainer.status.children[0]
