"""A saved run as a bokeh plot: decimated to min/max per pixel column, with quality shading;
zooming in a notebook re-reads the detail from the run."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from bokeh.events import RangesUpdate
from bokeh.models import ColumnDataSource, Range1d
from bokeh.plotting import figure
from bokeh.resources import INLINE

from daqlab.checks import whole
from daqlab.errors import ChannelNotFoundError
from daqlab.io import atomic_path
from daqlab.run import validate
from daqlab.view._base import channel_color
from daqlab.view._decimate import MinMaxColumns, minmax
from daqlab.view._live import flag_spans, frame_points

__all__ = ["RunPlot", "columns_of"]


def columns_of(run: xr.Dataset, width: int, start: Any = None, stop: Any = None) -> MinMaxColumns:
    """Min/max columns of ``run`` between two times (all of it by default), about ``width`` of them.

    Reads only that span; on a lazy run the reduction is done by dask, chunk by chunk.
    """
    part = run.sel(time=slice(start, stop)) if start is not None or stop is not None else run
    n = part.sizes["time"]
    per = max(1, -(-n // max(1, width)))
    channels = part.sizes["channel"]
    cols = MinMaxColumns(channels, per, -(-n // per) + 1)
    if n == 0:
        return cols
    if part["value"].chunks is None:
        first, lo, hi, bad, suspect = minmax(part["value"].values, width, part["quality"].values)
    else:  # dask: xarray's coarsen reduces chunk by chunk, out of core
        value = part["value"].coarsen(time=per, boundary="pad")
        q = part["quality"]
        # one compute for the four reductions: the run is read once, not four times
        with warnings.catch_warnings():  # a column of NaN samples is a gap (drawn BAD), not news
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            reduced = xr.Dataset({
                "lo": value.min(), "hi": value.max(),
                "bad": (q == 2).coarsen(time=per, boundary="pad").max(),
                "suspect": ((q == 1) | (q == 3)).coarsen(time=per, boundary="pad").max(),
            }).compute()
        lo, hi = reduced["lo"].values, reduced["hi"].values
        bad = reduced["bad"].values.astype(bool) | np.isnan(lo)
        suspect = reduced["suspect"].values.astype(bool) & ~bad
        first = np.arange(lo.shape[-1], dtype=np.int64) * per
    times = part["time"].values.astype("datetime64[ns]").view(np.int64)
    cols.index = np.arange(lo.shape[-1], dtype=np.int64)
    cols.t0 = times[first]
    cols.lo, cols.hi, cols.bad, cols.suspect = lo, hi, bad, suspect
    return cols


class RunPlot:
    """A bokeh figure of a run (``run.daq.plot()``): displays as a widget in a notebook, where
    zooming re-reads detail from the run; :meth:`save_html` writes a standalone file (BokehJS inline)."""

    def __init__(self, run: xr.Dataset, channels: Sequence[str] | None = None, *, width: int = 900,
                 height: int = 320, calibrated: bool | None = None, title: str | None = None) -> None:
        validate(run, check_data=False)
        names = [str(c) for c in run["channel"].values]
        shown = names if channels is None else list(channels)
        missing = [c for c in shown if c not in names]
        if missing or not shown:
            raise ChannelNotFoundError(f"channels {missing or shown} are not in this run; it has {names}.")
        width = whole(width, "width", minimum=10, unit="pixels")
        self.run = run.sel(channel=shown)
        if calibrated and not run.attrs.get("calibrated"):
            from daqlab.run import calibrate

            self.run = calibrate(self.run)
        self.names, self.width = shown, width
        cols = columns_of(self.run, width)
        # not syncable: the page would send every re-read back (see LiveView)
        self.source = ColumnDataSource(frame_points(cols, range(len(shown))), name="daqlab-run-data",
                                       syncable=False)
        self.flags = ColumnDataSource(flag_spans(cols, list(range(len(shown)))), name="daqlab-run-flags",
                                      syncable=False)
        x = self.source.data["x"]
        span = (float(np.nanmin(x)), float(np.nanmax(x))) if len(x) else (0.0, 1.0)
        fig = figure(width=width, height=height, x_axis_type="datetime", tools="xpan,xwheel_zoom,box_zoom,"
                     "reset,save", title=title or run.attrs.get("name") or "daqlab run",
                     x_range=Range1d(*span) if span[1] > span[0] else None, name="daqlab-run-figure")
        fig.vstrip(x0="left", x1="right", fill_color="color", fill_alpha=0.18, line_alpha=0,
                   source=self.flags)
        for i, name in enumerate(shown):
            fig.line("x", f"y{i}", source=self.source, legend_label=name, color=channel_color(i))
        fig.legend.click_policy = "hide"
        fig.toolbar.logo = None
        fig.on_event(RangesUpdate, self._on_range)
        self.figure = fig
        self._widget: Any = None

    def _on_range(self, event: RangesUpdate) -> None:
        """Zoomed or panned (in a notebook): redraw the visible span at full column resolution."""
        if event.x0 is None or event.x1 is None:
            return
        start = np.datetime64(int(event.x0 * 1e6), "ns")
        stop = np.datetime64(int(event.x1 * 1e6), "ns")
        self.show_span(start, stop)

    def show_span(self, start: Any, stop: Any) -> None:
        """Re-read ``start .. stop`` from the run and draw it decimated to the plot's width."""
        cols = columns_of(self.run, self.width, start, stop)
        self.source.data = frame_points(cols, range(len(self.names)))
        self.flags.data = flag_spans(cols, list(range(len(self.names))))

    @property
    def widget(self) -> Any:
        """The plot as an ipywidget (jupyter_bokeh), made on first use."""
        if self._widget is None:
            from daqlab.view._base import BokehWidget, load_bokehjs

            load_bokehjs()
            self._widget = BokehWidget(self.figure)
        return self._widget

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self.widget._repr_mimebundle_(include=include, exclude=exclude)

    def save_html(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """A standalone HTML file of the plot (BokehJS inline: it opens without a network)."""
        from bokeh.embed import file_html

        page = file_html(self.figure, INLINE, title=str(self.figure.title.text))
        p = Path(path)
        with atomic_path(p, overwrite=overwrite, expected_bytes=len(page.encode())) as tmp:
            tmp.write_text(page, encoding="utf-8")
        return p
