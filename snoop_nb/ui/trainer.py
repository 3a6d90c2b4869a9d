"""ClassTrainer: pick or create a personal class, label, train, rank, suggest, apply.

Every button calls one method of :class:`~snoop_nb.learn.FeedbackSession`; labels come from
clicks in the :class:`~snoop_nb.ui.grid.ImageGrid` and are written as they are clicked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipyvuetify as v

from snoop_nb.errors import SnoopError
from snoop_nb.learn.session import STRATEGIES

if TYPE_CHECKING:
    from snoop_nb.collection import Collection
    from snoop_nb.kb import ClassRef
    from snoop_nb.learn import FeedbackSession
    from snoop_nb.ui.grid import ImageGrid


class ClassTrainer(v.Card):
    """The controls of one user's relevance-feedback loop, driving ``grid``."""

    def __init__(self, col: Collection, grid: ImageGrid, user: str, *, k: int = 100, **kwargs: Any):
        self.col = col
        self.grid = grid
        self.user = user
        self.k = k
        self.session: FeedbackSession | None = None
        self.shared_ref: ClassRef | None = None  # a class someone else shares, read-only
        self._start: dict | None = None
        self._handlers: list[Callable[[], None]] = []

        self.classes = v.Select(
            v_model=None,
            label="Class",
            items=[],
            density="compact",
            variant="outlined",
            hide_details=True,
            class_="snoop-class-select",
        )
        self.classes.observe(lambda c: self.select(c["new"]), names="v_model")
        self.new_name = v.TextField(
            v_model="",
            label="New class",
            density="compact",
            variant="outlined",
            hide_details=True,
            class_="snoop-new-class",
        )
        self.new_name.on_event("keydown.enter", lambda *_: self.create(self.new_name.v_model))
        create = v.Btn(children=["Create"], size="small", class_="snoop-create-class")
        create.on_event("click", lambda *_: self.create(self.new_name.v_model))
        self.counts = v.Html(tag="div", class_="snoop-counts my-2", children=["no class chosen"])
        self.strategy = v.Select(
            label="Suggest",
            items=list(STRATEGIES),
            v_model="mixed",
            density="compact",
            hide_details=True,
            class_="snoop-strategy",
        )
        self.suggest_btn = v.Btn(children=["Suggest"], size="small", class_="snoop-suggest")
        self.suggest_btn.on_event("click", lambda *_: self.suggest())
        self.train_btn = v.Btn(
            children=["Train and rank"], color="primary", block=True, class_="snoop-train"
        )
        self.train_btn.on_event("click", lambda *_: self.train_and_rank())
        self.progress = v.ProgressLinear(indeterminate=True, active=False, class_="snoop-progress")
        self.quality = v.Html(tag="div", class_="snoop-quality my-2", children=[""])
        self.history = v.Html(tag="div", class_="snoop-history", children=[])
        self.threshold = v.Slider(
            label="Apply at",
            min=0.05,
            max=0.95,
            step=0.05,
            v_model=0.5,
            thumb_label=True,
            hide_details=True,
            class_="snoop-threshold",
        )
        self.apply_btn = v.Btn(children=["Apply to corpus"], size="small", class_="snoop-apply")
        self.apply_btn.on_event("click", lambda *_: self.apply())
        self.share = v.Switch(
            label="Share read-only", density="compact", hide_details=True, class_="snoop-share"
        )
        self._syncing = False  # the switches being set to show a class, not by the user
        self.share.observe(self._on_share, names="v_model")
        #: Share open to every user's labels: their votes are kept apart and weighted by
        #: how reliable each user proves (snoop_nb.learn.aggregate).
        self.collab = v.Switch(
            label="Open to others' labels",
            density="compact",
            hide_details=True,
            class_="snoop-collaborative",
        )
        self.collab.observe(self._on_collab, names="v_model")
        self.copy_btn = v.Btn(
            children=["Copy to my classes"],
            size="small",
            class_="snoop-copy",
            style_="display:none",
        )
        self.copy_btn.on_event("click", lambda *_: self.copy_shared())
        self.status = v.Html(tag="div", class_="snoop-trainer-status caption", children=[""])
        super().__init__(
            variant="outlined",
            class_="pa-3 snoop-trainer",
            children=[
                v.Html(tag="div", class_="subtitle-1 mb-2", children=[f"Classes of {user}"]),
                self.classes,
                v.Row(
                    no_gutters=True,
                    align="center",
                    class_="mt-2",
                    children=[v.Col(children=[self.new_name], class_="pr-2"), create],
                ),
                self.counts,
                v.Row(
                    no_gutters=True,
                    align="center",
                    children=[v.Col(children=[self.strategy], class_="pr-2"), self.suggest_btn],
                ),
                v.Html(tag="div", class_="my-3", children=[self.train_btn, self.progress]),
                self.quality,
                self.history,
                self.threshold,
                v.Row(no_gutters=True, children=[self.apply_btn], class_="mt-1"),
                self.share,
                self.collab,
                self.copy_btn,
                self.status,
            ],
            **kwargs,
        )
        grid.on_label(lambda ids, value: self._show_counts())
        self.refresh_classes()

    # --- classes ----------------------------------------------------------------------------
    def refresh_classes(self) -> None:
        """Re-list the user's classes and the ones others share."""
        items = []
        for ref in self.col.kb.classes(self.user):
            mine = ref.owner == self.user
            shared = "shared, open to your labels" if ref.collaborative else "shared"
            text = ref.name if mine else f"{ref.owner}/{ref.name} ({shared})"
            items.append({"title": text, "value": ref.name if mine else str(ref)})
        self.classes.items = items

    def on_change(self, handler: Callable[[], None]) -> None:
        """Call ``handler()`` when the class or its model changes."""
        self._handlers.append(handler)

    def create(self, name: str | None) -> None:
        """Create a class of this user (or open it if it exists) and select it."""
        name = (name or "").strip()
        if not name:
            self._say("give the new class a name")
            return
        try:
            self.col.session(self.user, name)
        except SnoopError as e:
            self._say(str(e))
            return
        self.new_name.v_model = ""
        self.refresh_classes()
        self.classes.v_model = name  # selects it (observer)
        if self.session is None or self.session.ref.name != name:
            self.select(name)

    def select(self, value: str | None) -> None:
        """Make ``value`` (a class of the user, or ``owner/name`` of a shared one) current."""
        self.session, self.shared_ref = None, None
        if value:
            try:
                ref = self.col.kb.get_class(self.user, value)
                if ref.owner == self.user:
                    self.session = self.col.session(self.user, ref.name)
                    if self._start is not None and self.session.model() is None:
                        self.session.set_start(self._start_vector())
                elif ref.collaborative:  # open to contributions: clicks are this user's votes
                    self.session = self.col.session(self.user, str(ref), create=False)
                else:
                    self.shared_ref = ref
            except SnoopError as e:
                self._say(str(e))
        self.grid.session = self.session
        owner = self.session is not None and self.session.ref.owner == self.user
        self._show_sharing()
        self.share.disabled = self.collab.disabled = not owner
        self.copy_btn.style_ = "" if self.shared_ref is not None else "display:none"
        for btn in (self.train_btn, self.suggest_btn, self.apply_btn):
            btn.disabled = self.session is None
        self.apply_btn.disabled = not owner  # applying a class stays its owner's
        self._show_counts()
        self._show_model()
        if self.shared_ref is not None:
            self._rank_shared()
        for handler in self._handlers:
            handler()

    def copy_shared(self) -> None:
        """Copy the shared class shown into the user's own classes, labels included."""
        if self.shared_ref is None:
            return
        try:
            ref = self.col.kb.copy_class(self.user, str(self.shared_ref))
        except SnoopError as e:
            self._say(str(e))
            return
        self.refresh_classes()
        self.classes.v_model = ref.name

    def _show_sharing(self) -> None:
        """The two switches as the current class is shared (no writes)."""
        ref = self.session.ref if self.session is not None else None
        self._syncing = True
        try:
            self.share.v_model = bool(ref and ref.shared)
            self.collab.v_model = bool(ref and ref.shared and ref.collaborative)
        finally:
            self._syncing = False

    def _set_sharing(self, shared: bool, collaborative: bool) -> None:
        session = self.session
        if session is None or session.ref.owner != self.user:
            return
        try:
            self.col.kb.share(self.user, session.ref.name, shared, collaborative=collaborative)
            session.ref = self.col.kb.get_class(self.user, session.ref.name)
        except SnoopError as e:
            self._say(str(e))
        self._show_sharing()
        if session.ref.collaborative:
            self._say("shared: every user's labels are votes, weighted by their reliability")

    def _on_share(self, change: dict) -> None:
        if self._syncing or self.session is None:
            return
        if bool(change["new"]) != self.session.ref.shared:
            # no longer shared: no longer open to others' labels either (their votes are kept)
            self._set_sharing(bool(change["new"]), self.session.ref.collaborative and change["new"])

    def _on_collab(self, change: dict) -> None:
        if self._syncing or self.session is None:
            return
        ref = self.session.ref
        if bool(change["new"]) != (ref.shared and ref.collaborative):
            # open to others: shared too; closed again: stays shared read-only
            self._set_sharing(ref.shared or bool(change["new"]), bool(change["new"]))

    # --- the loop ---------------------------------------------------------------------------
    def start_from(self, query: dict) -> None:
        """Take a search as the starting point of a class that has no model yet."""
        self._start = query
        if self.session is not None and self.session.model() is None:
            self.session.set_start(self._start_vector())

    def _start_vector(self):
        from snoop_nb.search import query_vector

        if not self._start:
            return None
        if self._start.get("box") is not None:  # a region of a picture or of an item
            from snoop_nb.regions import region_query

            query = {k: v for k, v in self._start.items() if k in ("item", "image")}
            return region_query(self.col, self._start["box"], **query)
        return query_vector(self.col, **self._start)

    def suggest(self) -> None:
        """Show what to label next, by the chosen strategy."""
        if self.session is None:
            return self._say("choose or create a class first")
        try:
            frame = self.session.suggest(24, self.strategy.v_model or "mixed")
        except SnoopError as e:
            return self._say(str(e))
        self.grid.show(frame, text=f"suggestions ({self.strategy.v_model})")
        self._say(f"{len(frame)} suggestions: click the relevant ones, then train")

    def train_and_rank(self) -> None:
        """Train a new version of the class on its labels and rank the corpus with it."""
        if self.session is None:
            return self._say("choose or create a class first")
        self.train_btn.loading = True
        self.progress.active = True
        try:
            t0 = time.perf_counter()
            self.session.train()
            frame = self.session.rank(self.k)
            took = time.perf_counter() - t0
        except SnoopError as e:
            return self._say(str(e))
        finally:
            self.train_btn.loading = False
            self.progress.active = False
        self.grid.show(frame, text=f"ranking of {self.session.ref.name}")
        self._show_model()
        self._say(f"trained and ranked in {took * 1000:.0f} ms")
        for handler in self._handlers:
            handler()

    def apply(self) -> None:
        """Write the class onto the corpus at the chosen probability threshold."""
        if self.session is None:
            return
        try:
            n = self.session.apply(float(self.threshold.v_model))
        except SnoopError as e:
            return self._say(str(e))
        self._say(f"{self.session.ref.name} applied to {n} items")
        for handler in self._handlers:
            handler()

    # --- display ----------------------------------------------------------------------------
    def _rank_shared(self) -> None:
        try:
            shared = self.col.session(self.user, str(self.shared_ref), create=False)
            if shared.model() is None:
                self._say(f"{self.shared_ref} has no trained model yet")
                return
            frame = shared.rank(self.k, exact=True)
        except SnoopError as e:
            self._say(str(e))
            return
        self.grid.show(frame, text=str(self.shared_ref))
        self._say(f"{self.shared_ref} is shared read-only: copy it to change it")

    def _show_counts(self) -> None:
        if self.session is None:
            text = "shared class (read-only)" if self.shared_ref else "no class chosen"
        else:
            n = self.session.counts()
            text = f"{n['pos']} relevant · {n['neg']} not relevant"
        self.counts.children = [text]

    def _show_model(self) -> None:
        ref = self.session.ref if self.session is not None else self.shared_ref
        if ref is None:
            self.quality.children, self.history.children = [""], []
            return
        hist = self.col.kb.models(ref)
        if hist.empty:
            self.quality.children, self.history.children = ["not trained yet"], []
            return
        self.quality.children = [f"version {len(hist)}: " + quality_text(hist.iloc[-1])]
        rows = [
            v.Html(
                tag="tr",
                children=[
                    v.Html(tag="td", children=[str(i + 1)]),
                    v.Html(tag="td", children=[str(int(r["n_pos"]))]),
                    v.Html(tag="td", children=[str(int(r["n_neg"]))]),
                    v.Html(tag="td", children=[_fmt(r.get("average_precision"))]),
                ],
            )
            for i, (_, r) in enumerate(hist.tail(8).iterrows())
        ]
        head = v.Html(
            tag="tr",
            children=[v.Html(tag="th", children=[h]) for h in ("version", "+", "−", "CV AP")],
        )
        self.history.children = [
            v.Table(density="compact", children=[v.Html(tag="tbody", children=[head, *rows])])
        ]

    def _say(self, text: str) -> None:
        self.status.children = [text]


def quality_text(row) -> str:
    """A model's cross-validated quality in words."""
    ap = row.get("average_precision")
    if ap is None or ap != ap:  # None or NaN
        reason = row.get("reason") or "too few labels for a quality estimate"
        return str(reason)
    return (
        f"CV average precision {float(ap):.2f}, balanced accuracy "
        f"{float(row.get('balanced_accuracy', float('nan'))):.2f} "
        f"({int(row.get('cv_folds', 0))} folds)"
    )


def _fmt(value) -> str:
    return "–" if value is None or value != value else f"{float(value):.2f}"
