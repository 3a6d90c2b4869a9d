"""ClassExplorer: where a class occurs in the corpus: its table, exports and plots; for a class
labelled by several users, each user's estimated reliability and the items they disagree on."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

import ipyvuetify as v
import ipywidgets as w

from snoop_nb.errors import SnoopError

if TYPE_CHECKING:
    import pandas as pd

    from snoop_nb.collection import Collection

#: Rows of the class table shown in the page (the exports hold them all).
TABLE_ROWS = 200  # also the best-ranked items listed for a class not applied yet
#: Items listed under "Disagreements" (least agreed first).
DISAGREEMENT_ROWS = 50

_TABLE_STYLE = (
    "<style>.snoop-table{border-collapse:collapse;font-size:13px}"
    ".snoop-table th,.snoop-table td{padding:2px 10px;text-align:left}"
    ".snoop-table tbody tr:nth-child(odd){background:#f5f5f5}</style>"
)


class ClassExplorer(v.Card):
    """A class's results as a table, CSV/Parquet downloads, and matplotlib plots of its score
    distribution and of its counts per folder or per metadata field."""

    def __init__(self, col: Collection, user: str, **kwargs: Any):
        self.col = col
        self.user = user
        self.classes = v.Select(
            v_model=None,
            label="Class",
            items=[],
            density="compact",
            variant="outlined",
            hide_details=True,
            class_="snoop-explore-class",
            style_="max-width: 320px",
        )
        self.field = v.Select(
            label="Count per",
            items=["folder"],
            v_model="folder",
            density="compact",
            variant="outlined",
            hide_details=True,
            class_="snoop-explore-field",
            style_="max-width: 220px",
        )
        self.classes.observe(lambda _: self.refresh(), names="v_model")
        self.field.observe(lambda _: self._plot_counts(), names="v_model")
        self.csv = v.Btn(children=["CSV"], size="small", disabled=True, class_="snoop-export-csv")
        self.parquet = v.Btn(
            children=["Parquet"], size="small", disabled=True, class_="snoop-export-parquet"
        )
        self.summary = v.Html(tag="div", class_="snoop-explore-summary my-2", children=[""])
        self.table = w.HTML(layout=w.Layout(max_height="360px", overflow="auto"))
        self.table.add_class("snoop-explore-table")
        self.votes = w.HTML(layout=w.Layout(max_height="360px", overflow="auto"))
        self.votes.add_class("snoop-explore-votes")
        self.score_plot = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.count_plot = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.score_plot.add_class("snoop-plot-scores")
        self.count_plot.add_class("snoop-plot-counts")
        self._frame: pd.DataFrame | None = None
        super().__init__(
            variant="outlined",
            class_="pa-3 snoop-explore",
            children=[
                v.Row(
                    no_gutters=True,
                    align="center",
                    children=[
                        self.classes,
                        v.Spacer(),
                        self.field,
                        v.Spacer(),
                        v.Html(tag="span", class_="mr-2", children=["Download"]),
                        self.csv,
                        self.parquet,
                    ],
                ),
                self.summary,
                self.table,
                self.votes,
                v.Row(
                    children=[
                        v.Col(children=[self.score_plot], cols=12, md=6),
                        v.Col(children=[self.count_plot], cols=12, md=6),
                    ]
                ),
            ],
            **kwargs,
        )
        self.refresh_classes()

    def refresh_classes(self) -> None:
        refs = self.col.kb.classes(self.user)
        self.classes.items = [
            {"title": r.name if r.owner == self.user else f"{r} (shared)", "value": str(r)}
            for r in refs
        ]

    def show_class(self, value: str) -> None:
        """Show the class ``value`` (a class name of the user, or ``owner/name``)."""
        self.refresh_classes()
        if self.classes.v_model == value:
            self.refresh()
        else:
            self.classes.v_model = value

    def results(self) -> pd.DataFrame:
        """The class's results: every item it was applied to, else its best-ranked items,
        with each one's score, label and metadata (the table shown; see
        :func:`snoop_nb.export.class_results`)."""
        import pandas as pd

        from snoop_nb.export import class_results

        res = class_results(self.col, self.user, self.classes.v_model, top=TABLE_ROWS)
        if res.applied_model_id is not None:
            self._note = f"applied to {res.applied} of {res.total} items"
        else:
            self._note = "not applied yet: its best-ranked items"
        self._all = pd.DataFrame(
            {"id": res.probabilities.index.to_numpy(), "probability": res.probabilities.to_numpy()}
        )
        self._labels = res.labels
        return res.table

    def refresh(self) -> None:
        """Recompute the table, downloads and plots of the chosen class."""
        if not self.classes.v_model:
            return
        try:
            frame = self.results()
        except SnoopError as e:
            self.summary.children = [str(e)]
            self._frame = None
            self.table.value, self.csv.disabled, self.parquet.disabled = "", True, True
            self.score_plot.value = self.count_plot.value = b""
            return
        self._frame = frame
        self.summary.children = [f"{self.classes.v_model}: {self._note}"]
        cols = [c for c in frame.columns if c not in ("kind", "video", "t_start", "t_end", "uri")]
        self.table.value = _TABLE_STYLE + (
            frame[cols]
            .head(TABLE_ROWS)
            .to_html(
                index=False,
                escape=True,
                float_format="{:.4f}".format,
                na_rep="",
                classes="snoop-table",
                border=0,
            )
        )
        fields = ["folder"] + [
            c
            for c in frame.columns
            if c
            not in {
                "rank",
                "id",
                "uri",
                "name",
                "probability",
                "label",
                "kind",
                "video",
                "t_start",
                "t_end",
                "width",
                "height",
                "size",
                "folder",
            }
        ]
        self.field.items = fields
        if self.field.v_model not in fields:
            self.field.v_model = "folder"
        self._set_downloads()
        self._show_votes()
        self._plot_scores()
        self._plot_counts()

    # --- several users' votes ---------------------------------------------------------------
    def _show_votes(self) -> None:
        """Each voter's reliability and the items they disagree on (Dawid-Skene), for a class
        labelled by several users; nothing for one."""
        import html

        kb = self.col.kb
        ref = kb.get_class(self.user, self.classes.v_model)
        votes = kb.votes(ref)
        if votes["user"].nunique() < 2:
            self.votes.value = ""
            return
        agg = kb.aggregate(ref)
        users = agg.users.rename(columns={"labels": "votes"})
        dis = agg.disagreements().head(DISAGREEMENT_ROWS)
        uris = self.col.items(dis["item_id"].tolist()).set_index("id")["uri"] if len(dis) else {}
        rows = "".join(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2f}</td><td>{}</td></tr>".format(
                int(r.item_id),
                html.escape(str(uris.get(r.item_id, "")).rsplit("/", 1)[-1]),
                "relevant" if r.label > 0 else "not relevant" if r.label < 0 else "tie",
                r.probability,
                html.escape(
                    ", ".join(f"{u} {'+1' if v > 0 else '-1'}" for u, v in r.by_user.items())
                ),
            )
            for r in dis.itertuples()
        )
        self.votes.value = (
            _TABLE_STYLE
            + f"<h4>Users' reliability ({len(users)} voters, Dawid-Skene)</h4>"
            + users.to_html(
                index=False,
                escape=True,
                float_format="{:.2f}".format,
                classes="snoop-table",
                border=0,
            )
            + f"<h4>Disagreements ({len(agg.disagreements())} items)</h4>"
            + '<table class="snoop-table snoop-disagreements"><thead><tr><th>id</th>'
            "<th>name</th><th>aggregate</th><th>probability</th><th>votes</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )

    # --- downloads --------------------------------------------------------------------------
    def _set_downloads(self) -> None:
        from snoop_nb.export import class_table

        ref = self.col.kb.get_class(self.user, self.classes.v_model)
        table = class_table(self.col, ref.owner, ref.name)
        stem = f"{ref.owner}-{ref.name}".replace("/", "_")
        csv = table.to_csv(index=False).encode()
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        for btn, data, mime, ext in (
            (self.csv, csv, "text/csv", "csv"),
            (self.parquet, buf.getvalue(), "application/vnd.apache.parquet", "parquet"),
        ):
            btn.href = f"data:{mime};base64,{base64.b64encode(data).decode()}"
            btn.attributes = {"download": f"{stem}.{ext}"}
            btn.disabled = False

    # --- plots ------------------------------------------------------------------------------
    def _plot_scores(self) -> None:
        import numpy as np

        fig, ax = _figure()
        prob = self._all["probability"].to_numpy()
        ax.hist(prob, bins=40, range=(0, 1), color="#90a4ae", label="all items")
        ids = self._all["id"].to_numpy()
        for value, color, name in ((1, "#2e7d32", "relevant"), (-1, "#c62828", "not relevant")):
            marked = self._labels[self._labels == value].index.to_numpy()
            sel = prob[np.isin(ids, marked)]
            if len(sel):  # a rug under the histogram (in axes height, as the scale is log)
                ax.vlines(sel, 0, 0.1, color=color, transform=ax.get_xaxis_transform(), label=name)
        ax.set_yscale("log")
        ax.set_xlabel("probability of the class")
        ax.set_ylabel("items")
        ax.set_title("Score distribution")
        ax.legend(loc="upper center", fontsize=8)
        self.score_plot.value = _png(fig)

    def _plot_counts(self) -> None:
        if self._frame is None:
            return
        field = self.field.v_model or "folder"
        counts = self._frame[field].astype(str).value_counts().head(15)[::-1]
        fig, ax = _figure()
        ax.barh(counts.index, counts.to_numpy(), color="#1976d2")
        ax.set_xlabel("items of the class")
        ax.set_title(f"Where the class occurs, per {field}")
        ax.tick_params(axis="y", labelsize=8)
        fig.tight_layout()
        self.count_plot.value = _png(fig)


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.4), dpi=100)
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
