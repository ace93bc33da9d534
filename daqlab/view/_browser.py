"""``cat.browse()``: a catalog's runs as a sortable, filterable table; the selected runs' summaries and
plots below it, one run as a :class:`RunPlot` or several overlaid; a button hands a run to the notebook."""

from __future__ import annotations

import keyword
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import ipywidgets as widgets
import numpy as np
import pandas as pd
import xarray as xr
from bokeh.events import RangesUpdate
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, DataTable, Div, NumberFormatter, StringFormatter, TableColumn
from bokeh.plotting import figure

from daqlab.checks import whole
from daqlab.errors import ConfigurationError
from daqlab.view._base import BokehWidget, channel_color, load_bokehjs
from daqlab.view._browser_parts import COLUMNS, esc, group_of, red, row_html, row_of, table_data
from daqlab.view._live import frame_points
from daqlab.view._static import RunPlot, columns_of

__all__ = ["RunBrowser"]

_HINT = "select a run in the table (ctrl- or shift-click for several)"

MAX_LINES = 40
"""Lines an overlay draws at most (runs x channels); the rest are left out, and the status says so."""


class CatalogLike(Protocol):
    """What the browser uses of a :class:`daqlab.Catalog`."""

    @property
    def df(self) -> pd.DataFrame: ...

    def search(self, text: str) -> pd.DataFrame: ...

    def scan(self) -> Any: ...

    def open_tree(self, key: Any, chunks: Any = None) -> xr.DataTree: ...

    def open(self, key: Any, chunks: Any = None, *, group: str | None = None) -> xr.Dataset: ...


class _Pane(BokehWidget):
    """A bokeh widget that a page finds up to date however late it shows it (or again, reloaded).

    The page draws the document as it was when the widget was made, then applies the changes sent
    since; those sent before it listened are lost. A page that has drawn the document says so
    (``document_ready``): if anything changed since, it gets the document again, whole.
    """

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self.stale = False
        model.document.on_event("document_ready", self._on_ready)

    def _document_patched(self, event: Any) -> None:
        if event.setter is not self:
            self.stale = True
        super()._document_patched(event)

    def _on_ready(self, event: Any) -> None:
        if self.stale:
            self.stale = False
            self.update_from_model(self._model)


class RunBrowser(widgets.VBox):  # type: ignore[misc]
    """A notebook widget over a catalog's runs (what ``cat.browse()`` returns).

    A table of the runs (sortable by any column; ctrl- or shift-click selects several) that a search
    text (:meth:`Catalog.search`) and a query (a :meth:`pandas.DataFrame.query` expression on
    ``cat.df``, such as ``duration > 10 and format == "netcdf"``) narrow; a bad query shows its error
    in the status line. Selecting a run shows its summary, channels (units, calibration), quality
    shares and metadata, and plots it decimated (zooming re-reads the detail from the file); several
    selected runs are overlaid on one time axis, or on "seconds from start" with *aligned at start*.
    Runs are opened lazily (``catalog.open(row, chunks={})``). *to variable* puts
    ``catalog.open(row)`` (a list of them for several rows) into the notebook variable named beside it,
    and into :attr:`value`.

    Parameters
    ----------
    catalog : daqlab.Catalog
    width, height : int
        Size of the plot in pixels (the table is as wide).
    variable : str
        The variable name the button fills at first.
    """

    def __init__(self, catalog: CatalogLike, *, width: int = 900, height: int = 320,
                 variable: str = "run") -> None:
        super().__init__()
        self.catalog = catalog
        self.width = whole(width, "width", minimum=200, unit="pixels")
        self.height = whole(height, "height", minimum=80, unit="pixels")
        self.value: Any = None  # what *to variable* handed over last
        self.plot: RunPlot | None = None  # the one run's plot (not aligned)
        self.overlay: dict[str, Any] | None = None  # figure, sources and runs (one each), aligned
        self._runs: dict[tuple[str, str], xr.Dataset] = {}
        self._shown: tuple[Any, ...] | None = None
        self._labels: list[int] = []
        fields = [f for f, *_ in COLUMNS if f in catalog.df.columns]
        cols = list(catalog.df.columns)
        self._extra = cols[cols.index("metadata_keys") + 1:] if "metadata_keys" in cols else []

        self.search = widgets.Text(placeholder="search path, name, channels, metadata", description="search")
        self.query = widgets.Text(placeholder='e.g. duration > 10 and format == "netcdf"',
                                  description="query", continuous_update=False)
        self.rescan = widgets.Button(description="rescan", layout=widgets.Layout(width="80px"))
        self.status = widgets.HTML()
        self.detail = widgets.HTML(_HINT, layout=widgets.Layout(max_height="300px", overflow="auto"))
        self.aligned = widgets.Checkbox(value=False, description="aligned at start")
        self.variable = widgets.Text(value=variable, description="variable",
                                     layout=widgets.Layout(width="220px"))
        self.to_variable = widgets.Button(description="to variable", layout=widgets.Layout(width="120px"))
        self.handed = widgets.HTML()

        # not syncable: the page would send the rows back; its selection (a model of its own) still comes
        self.table_source = ColumnDataSource(table_data(catalog.df.iloc[:0], self._extra),
                                             name="daqlab-browser-table-data", syncable=False)
        columns = [TableColumn(field=f, title=t, width=w, formatter=NumberFormatter(
                       format=fmt, nan_format="", null_format="") if fmt else StringFormatter())
                   for f, t, fmt, w in COLUMNS if f in fields]
        columns += [TableColumn(field=f, title=f, width=90) for f in self._extra]
        self.table = DataTable(source=self.table_source, columns=columns, width=self.width, height=80,
                               sortable=True, selectable=True, index_position=None, fit_columns=False,
                               name="daqlab-browser-table")
        self.plot_area = column(Div(text="", width=self.width), name="daqlab-browser-plot-area")
        self.table_source.selected.on_change("indices", self._on_indices)
        self.refresh()
        load_bokehjs()
        self.table_widget = _Pane(self.table)
        self.plot_widget = _Pane(self.plot_area)

        self.search.observe(self._guard(lambda _: self.refresh()), "value")
        self.query.observe(self._guard(lambda _: self.refresh()), "value")
        self.rescan.on_click(self._guard(lambda _: self.refresh(rescan=True)))
        self.aligned.observe(self._guard(lambda _: self._update()), "value")
        self.to_variable.on_click(self._guard(lambda _: self.hand_over()))
        self.children = [
            widgets.HBox([self.search, self.query, self.rescan]), self.status, self.table_widget,
            self.detail, self.aligned, self.plot_widget,
            widgets.HBox([self.variable, self.to_variable, self.handed]),
        ]

    def _guard(self, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        """A widget callback that shows its error in the status line instead of the kernel's log."""
        def guarded(arg: Any) -> None:
            try:
                handler(arg)
            except Exception as exc:  # a callback's error has nowhere else to go
                self.status.value = red(f"{type(exc).__name__}: {exc}")
        return guarded

    def _on_indices(self, attr: str, old: Any, new: Any) -> None:  # rows selected in the page
        self._guard(lambda _: self._update())(None)

    # --- the table --------------------------------------------------------------------------------------

    @property
    def rows(self) -> pd.DataFrame:
        """The rows the table shows now (the catalog's labels), after search and query."""
        return self.catalog.df.loc[self._labels]

    @property
    def selected(self) -> list[int]:
        """Labels (in ``catalog.df``) of the selected rows."""
        return [self._labels[i] for i in self.table_source.selected.indices if i < len(self._labels)]

    def refresh(self, *, rescan: bool = False) -> None:
        """Filter the table again (after :meth:`Catalog.scan` with ``rescan``); keeps the selection."""
        keep = self.selected
        if rescan:
            self.catalog.scan()
            self._shown = None
        df = self.catalog.df
        text, expr = self.search.value.strip(), self.query.value.strip()
        if text:
            df = df.loc[df.index.intersection(self.catalog.search(text).index, sort=False)]
        message = ""
        if expr:
            try:
                df = df.query(expr)
            except Exception as exc:  # any error of the user's expression: shown, the table unfiltered by it
                message = red(f" failed: {type(exc).__name__}: {exc}", f"query <code>{esc(expr)}</code>")
        self._labels = [int(i) for i in df.index]
        self.table_source.data = table_data(df, self._extra)
        self.table.height = min(320, 45 + 25 * max(1, len(df)))  # header, rows, a scroll bar
        self.table_source.selected.indices = [self._labels.index(k) for k in keep if k in self._labels]
        self.status.value = message or f"{len(df)} of {len(self.catalog.df)} runs" + (
            f" (query: <code>{esc(expr)}</code>)" if expr else "")
        self._update()

    def select(self, rows: Sequence[Any] | pd.DataFrame | int) -> None:
        """Select rows by their labels in ``catalog.df`` (a DataFrame selects its index), as clicks do."""
        labels = list(rows.index) if isinstance(rows, pd.DataFrame) else [rows] if isinstance(rows, int) \
            else list(rows)
        missing = [k for k in labels if k not in self._labels]
        if missing:
            raise ConfigurationError(f"rows {missing} are not in the table (it shows {self._labels[:20]}); "
                                     "clear the search and query, or pass labels of catalog.df.")
        self.table_source.selected.indices = [self._labels.index(k) for k in labels]
        self._update()

    # --- the selection ------------------------------------------------------------------------------------

    def _open(self, row: pd.Series, opened: dict[tuple[str, str], xr.Dataset]) -> xr.Dataset:
        """The row's run, lazily (a tree: its fastest group); the one shown already while its file is
        unchanged. Kept in ``opened``."""
        key = (str(row["path"]), str(row.get("modified", "")))
        if key not in self._runs:
            self._runs[key] = self.catalog.open(row["path"], chunks={}, group=group_of(row))
        opened[key] = self._runs[key]
        return opened[key]

    def _update(self) -> None:
        labels, aligned = self.selected, bool(self.aligned.value)
        if (tuple(labels), aligned) == self._shown:
            return
        self._shown = (tuple(labels), aligned)
        df = self.catalog.df
        runs: list[tuple[pd.Series, xr.Dataset]] = []
        texts: list[str] = []
        notes: list[str] = []
        opened: dict[tuple[str, str], xr.Dataset] = {}
        for label in labels:
            row, run = row_of(df, label), None
            if not row.get("error") and int(row.get("samples", 0) or 0) > 0:
                try:
                    run = self._open(row, opened)
                    runs.append((row, run))
                except Exception as exc:  # a file that changed or broke since the scan
                    row = row.copy()
                    row["error"] = f"{type(exc).__name__}: {exc}"
            texts.append(row_html(row, run, short=len(labels) > 1))
        for key in self._runs.keys() - opened.keys():  # no longer shown: let their files go
            self._runs.pop(key).close()
        self.detail.value = "<div style='line-height:1.4'>" + ("<hr>".join(texts) or _HINT) + "</div>"
        self.plot, self.overlay = None, None
        if not runs:
            self.plot_area.children = [Div(text="", width=self.width)]
        elif len(runs) == 1 and not aligned:
            row, run = runs[0]
            self.plot = RunPlot(run, width=self.width, height=self.height, title=self._label(row))
            self.plot_area.children = [self.plot.figure]
        else:
            self.plot_area.children = [self._overlay(runs, aligned, notes)]
        if len(labels) > len(runs):
            notes.append(f"{len(labels) - len(runs)} of the selected rows have no samples to plot")
        if notes:
            self.status.value = " &middot; ".join(esc(n) for n in notes)

    @staticmethod
    def _label(row: pd.Series) -> str:
        return str(row.get("name") or Path(str(row["path"])).name)

    def _overlay(self, runs: list[tuple[pd.Series, xr.Dataset]], aligned: bool, notes: list[str]) -> Any:
        """Several runs' decimated lines on one datetime axis, or on seconds from each run's start."""
        fig = figure(width=self.width, height=self.height, x_axis_type="linear" if aligned else "datetime",
                     tools="xpan,xwheel_zoom,box_zoom,reset,save", name="daqlab-browser-overlay",
                     x_axis_label="seconds from start" if aligned else "time (UTC)")
        sources, starts, line = [], [], 0
        for r, (row, run) in enumerate(runs):
            names = [str(c) for c in run["channel"].values]
            start_ns = int(run["time"].values[0].astype("datetime64[ns]").astype(np.int64))
            source = ColumnDataSource(self._points(run, start_ns if aligned else None),
                                      name=f"daqlab-browser-run-{r}", syncable=False)
            for c, name in enumerate(names[:max(0, MAX_LINES - line)]):
                fig.line("x", f"y{c}", source=source, color=channel_color(line),
                         legend_label=f"{self._label(row)}: {name}")
                line += 1
            sources.append(source)
            starts.append(start_ns)
        if line == MAX_LINES and sum(run.sizes["channel"] for _, run in runs) > MAX_LINES:
            notes.append(f"the overlay shows {MAX_LINES} lines; the rest are left out")
        fig.legend.click_policy = "hide"
        fig.toolbar.logo = None
        self.overlay = {"figure": fig, "sources": sources, "runs": [run for _, run in runs],
                        "aligned": aligned}
        fig.on_event(RangesUpdate, self._guard(lambda event: self._reread(event, starts)))
        return fig

    def _points(self, run: xr.Dataset, start_ns: int | None, span: tuple[Any, Any] = (None, None)) -> Any:
        cols = columns_of(run, self.width, *span)
        data = frame_points(cols, range(run.sizes["channel"]))
        if start_ns is not None:  # ms since the epoch -> seconds from the run's start
            data["x"] = (data["x"] - start_ns / 1e6) / 1e3
        return data

    def _reread(self, event: RangesUpdate, starts: list[int]) -> None:
        """Zoomed or panned: each run's visible span again, at full column resolution."""
        overlay = self.overlay
        if overlay is None or event.x0 is None or event.x1 is None:
            return
        for run, source, start_ns in zip(overlay["runs"], overlay["sources"], starts, strict=True):
            if overlay["aligned"]:
                lo, hi = start_ns + int(event.x0 * 1e9), start_ns + int(event.x1 * 1e9)
                source.data = self._points(run, start_ns, (np.datetime64(lo, "ns"), np.datetime64(hi, "ns")))
            else:
                lo, hi = int(event.x0 * 1e6), int(event.x1 * 1e6)
                source.data = self._points(run, None, (np.datetime64(lo, "ns"), np.datetime64(hi, "ns")))

    # --- handing a run to the notebook --------------------------------------------------------------------

    def hand_over(self) -> Any:
        """Open the selected run (``catalog.open(row)``; a list for several) into the variable named in the
        text box, in the notebook's namespace when there is one, and into :attr:`value`; returns it."""
        name, labels = self.variable.value.strip(), self.selected
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ConfigurationError(f"variable name {name!r} is not a Python identifier; "
                                     "type a name such as run or run2.")
        if not labels:
            raise ConfigurationError("no run is selected; click a row of the table first.")
        df = self.catalog.df
        opened = [self.catalog.open(k) if group_of(row_of(df, k)) is None else self.catalog.open_tree(k)
                  for k in labels]
        self.value = opened[0] if len(opened) == 1 else opened
        try:
            from IPython import get_ipython
            shell = get_ipython()
        except ImportError:
            shell = None
        if shell is not None:
            shell.user_ns[name] = self.value
        what = ", ".join(f"{self._label(row_of(df, k))} ({row_of(df, k).get('id', '')})" for k in labels)
        self.handed.value = f"<code>{esc(name)}</code> = {esc(what)}"
        return self.value

    def close(self) -> None:
        """Close the widget and its plots."""
        for child in (self.table_widget, self.plot_widget):
            child.close()
        for run in self._runs.values():
            run.close()
        self._runs.clear()
        super().close()
