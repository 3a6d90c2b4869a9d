"""App: search, label, train and explore a collection in one notebook cell or dashboard.

>>> from snoop_nb.ui import App
>>> App("data/demo/collection", user="alice")     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import ipyvuetify as v
import ipywidgets as w

from snoop_nb.errors import SnoopError
from snoop_nb.ui.explore import ClassExplorer
from snoop_nb.ui.grid import ImageGrid
from snoop_nb.ui.search import SearchPanel
from snoop_nb.ui.trainer import ClassTrainer

if TYPE_CHECKING:
    from snoop_nb.ui.videos import VideoPanel
    from snoop_nb.ui.vmap import MapView


def visitor_user() -> str | None:
    """The user a dashboard was opened for: ``?user=NAME`` in its address (Voila passes the
    query string to the kernel), else ``$SNOOP_USER`` set by the deployment, else None."""
    query = parse_qs(os.environ.get("QUERY_STRING", ""))
    name = (query.get("user") or [""])[0].strip() or os.environ.get("SNOOP_USER", "").strip()
    return name or None


class App(v.Sheet):
    """The whole snoop-nb UI over one collection: a search bar, the image grid, the class
    trainer, and the exploration tab. Without ``user`` it asks the visitor's name first.

    ``collection`` is an open :class:`~snoop_nb.collection.Collection` or its path. A "Videos"
    tab (:class:`~snoop_nb.ui.videos.VideoPanel`) shows ``videos`` (a collection or its path;
    by default ``$SNOOP_VIDEO_COLLECTION``, else ``collection`` itself when it holds videos):
    its moments grouped per video, a player, the video's timeline.
    """

    def __init__(
        self,
        collection: Any,
        user: str | None = None,
        *,
        page_size: int = 24,
        k: int = 100,
        warm_up: bool | None = None,
        videos: Any = None,
        **kwargs: Any,
    ):
        from snoop_nb.collection import Collection, open_collection

        col = collection if isinstance(collection, Collection) else open_collection(collection)
        self.col = col
        if videos is None and os.environ.get("SNOOP_VIDEO_COLLECTION"):
            videos = os.environ["SNOOP_VIDEO_COLLECTION"]
        if videos is not None and not isinstance(videos, Collection):
            videos = open_collection(videos)
        if videos is None and not col.videos().empty:
            videos = col
        #: The collection of the "Videos" tab (None: no such tab).
        self.video_col: Collection | None = videos
        self.videos: VideoPanel | None = None
        self.k = k
        self.page_size = page_size
        self.user: str | None = None
        self.grid: ImageGrid | None = None
        self.search: SearchPanel | None = None
        self.trainer: ClassTrainer | None = None
        self.explorer: ClassExplorer | None = None
        self.tabs: v.Tabs | None = None
        self.map_view: MapView | None = None
        self.copies = None  # the "Copies" tab's CopiesView (snoop_nb.ui.copies), made by start
        self.user_chip = v.Chip(children=["no user"], size="small", class_="snoop-user")
        self.body = v.Container(fluid=True, children=[], class_="snoop-body")
        title = v.Html(
            tag="div",
            class_="text-h6 snoop-title",
            children=[f"snoop · {Path(col.root).name} ({len(col)} items)"],
        )
        bar = v.Sheet(
            color="primary",
            class_="d-flex align-center pa-2 snoop-bar",
            children=[
                v.Icon(children=["mdi-image-search"], class_="mr-2"),
                title,
                v.Spacer(),
                self.user_chip,
            ],
        )
        super().__init__(children=[bar, self.body], class_="snoop-app", **kwargs)
        if warm_up is None:
            warm_up = os.environ.get("SNOOP_WARM_UP", "1") != "0"
        self._warm_up = warm_up
        user = user or visitor_user()
        if user:
            self.start(user)
        else:
            self._ask_user()

    # --- the visitor ------------------------------------------------------------------------
    def _ask_user(self) -> None:
        name = v.TextField(
            v_model="",
            label="Your name",
            variant="outlined",
            autofocus=True,
            class_="snoop-user-name",
            hint="your classes are kept under this name",
            persistent_hint=True,
        )
        error = v.Html(tag="div", class_="error--text snoop-user-error", children=[""])
        go = v.Btn(children=["Start"], color="primary", class_="snoop-user-start")

        def submit(*_):
            try:
                self.start(name.v_model or "")
            except SnoopError as e:
                error.children = [str(e)]

        go.on_event("click", submit)
        name.on_event("keydown.enter", submit)
        self.body.children = [
            v.Card(
                max_width=420,
                class_="mx-auto mt-8 pa-4 snoop-login",
                children=[
                    v.CardTitle(children=["Who is labelling?"]),
                    name,
                    error,
                    v.CardActions(children=[v.Spacer(), go]),
                ],
            )
        ]

    def start(self, user: str) -> None:
        """Show the collection to ``user`` (their classes, and the classes others share)."""
        from snoop_nb.kb import check_name

        user = check_name("user", user.strip())
        self.col.kb.user_id(user)
        self.user = user
        self.user_chip.children = [user]
        grid = ImageGrid(self.col, page_size=self.page_size)
        search = SearchPanel(self.col, grid, k=self.k)
        trainer = ClassTrainer(self.col, grid, user, k=self.k)
        explorer = ClassExplorer(self.col, user)
        search.on_search(trainer.start_from)
        grid.on_need_class(lambda name: _create_class(trainer, name))
        trainer.on_change(lambda: explorer.refresh_classes())
        self.grid, self.search, self.trainer, self.explorer = grid, search, trainer, explorer
        if self._warm_up:  # load the model while the visitor looks at the first page
            grid.on_ready(
                lambda: threading.Thread(target=_warm_up, args=(self.col,), daemon=True).start()
            )
        tab_list = [
            v.Tab(value="search", children=["Search and label"], class_="snoop-tab-search"),
            v.Tab(value="explore", children=["Explore a class"], class_="snoop-tab-explore"),
            v.Tab(value="map", children=["Map"], class_="snoop-tab-map"),
            v.Tab(value="copies", children=["Copies"], class_="snoop-tab-copies"),
        ]
        from snoop_nb.ui.copies import CopiesView

        self.copies = CopiesView(self.col, thumbnails=grid.thumbnails)
        # the map is made when its tab is first opened, from the cached layout (snoop.vmap)
        self.map_page = v.WindowItem(value="map", children=[], class_="snoop-map-page")
        video_pages = []
        if self.video_col is not None:
            from snoop_nb.ui.videos import VideoPanel

            self.videos = VideoPanel(self.video_col, user, k=self.k, page_size=self.page_size)
            tab_list.append(v.Tab(value="videos", children=["Videos"], class_="snoop-tab-videos"))
            video_pages.append(v.WindowItem(value="videos", children=[self.videos]))
            if self.video_col is self.col:  # the pictures' grid plays its moments in the tab
                grid.on_play(self.play)
        tabs = v.Tabs(v_model="search", class_="snoop-tabs", children=tab_list)
        pages = v.Window(
            v_model="search",
            children=[
                v.WindowItem(
                    value="search",
                    children=[
                        v.Row(
                            class_="mt-2",
                            children=[
                                v.Col(cols=12, md=9, children=[search, grid]),
                                v.Col(cols=12, md=3, children=[trainer]),
                            ],
                        )
                    ],
                ),
                v.WindowItem(value="explore", children=[explorer]),
                self.map_page,
                v.WindowItem(value="copies", children=[self.copies], class_="snoop-copies-page"),
                *video_pages,
            ],
        )
        w.jslink((tabs, "v_model"), (pages, "v_model"))
        tabs.observe(self._on_tab, names="v_model")
        self.tabs = tabs
        self.body.children = [tabs, pages]
        # the first items of the catalog, read alone: a large catalog is not loaded at start
        first = self.col.ok_ids()[: self.k * 5]
        grid.show(self.col.items(first.tolist()).assign(score=None), text="the collection")
        if self.videos is not None:
            self.videos.show_start()

    def play(self, item_id: int) -> None:
        """Open the Videos tab at keyframe ``item_id``'s moment."""
        if self.videos is None or self.tabs is None:
            return
        self.tabs.v_model = "videos"
        self.videos.play(item_id)

    def _on_tab(self, change: dict) -> None:
        if change["new"] == "explore" and self.explorer is not None and self.trainer is not None:
            session = self.trainer.session
            if session is not None:
                self.explorer.show_class(str(session.ref))
        if change["new"] == "map":
            self.show_map()

    def show_map(self) -> MapView:
        """The "Map" tab's :class:`~snoop_nb.ui.vmap.MapView`, made on first use, coloured
        for the class chosen in the trainer; its results go to the grid's tab."""
        from snoop_nb.ui.vmap import MapView

        session = self.trainer.session if self.trainer is not None else None
        if self.map_view is None:
            view = MapView(self.col, session=session, grid=self.grid, k=self.k)

            def show(frame, text: str) -> None:
                self.grid.show(frame, text=text)
                self.tabs.v_model = "search"

            view.on_results(show)
            view.on_label(lambda ids, value: self.grid.refresh_labels())
            self.map_view = view
            self.map_page.children = [view]
        elif session is not self.map_view.session:
            self.map_view.session = session
        else:
            self.map_view.recolour()  # labels given in the grid since
        return self.map_view


def _create_class(trainer: ClassTrainer, name: str) -> str | None:
    """Create class ``name`` through the trainer (which selects it for the grid); None, or
    the trainer's own words for why not."""
    trainer.create(name)
    if trainer.session is None:
        said = "".join(str(c) for c in trainer.status.children).strip()
        return said or f"class {name!r} could not be created"
    return None


def _warm_up(col) -> None:
    """Load the embedder and encode one text, so the first real search is quick."""
    # best effort: a search made later reports any error itself
    with contextlib.suppress(Exception):
        col.embedder.encode_texts(["a picture"])
