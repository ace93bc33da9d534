"""LiveView: the newest seconds of a ring buffer as a bokeh time series with controls, kept up to date."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
from bokeh.models import ColumnDataSource, DataRange1d, Range1d
from bokeh.plotting import figure
from numpy.typing import NDArray

from daqlab.acquisition import DataManager
from daqlab.buffer import RingBuffer
from daqlab.checks import real
from daqlab.view._base import LiveBase, channel_color, legend_html, resolve_buffer, resolve_channels
from daqlab.view._decimate import MinMaxColumns

__all__ = ["LiveView", "flag_spans", "frame_points"]

_READ_PIECE = 1 << 16  # samples per read from the ring: small copies, no page-fault storms


def _column_ms(t_ms: NDArray[np.float64]) -> float:
    """Width of a column: the smallest step between column starts (gaps only make steps longer)."""
    return float(np.diff(t_ms).min()) if t_ms.size > 1 else 0.0


def frame_points(cols: MinMaxColumns, rows: Sequence[int], slope: NDArray[np.float64] | None = None,
                 offset: NDArray[np.float64] | None = None) -> dict[str, NDArray[np.float64]]:
    """Bokeh columns for a min/max envelope: x (ms since the epoch) and y0.. per row, two points per
    column (min then max), NaN across gaps so that lines break there."""
    n = len(cols)
    if n == 0:
        return {"x": np.empty(0), **{f"y{i}": np.empty(0) for i in range(len(rows))}}
    t_ms = cols.t0 / 1e6
    half_ms = _column_ms(t_ms) / 2.0
    x = np.repeat(t_ms, 2)
    x[1::2] += half_ms
    gaps = np.flatnonzero(np.diff(cols.index) > 1) + 1
    out = {"x": x}
    for i, r in enumerate(rows):
        lo, hi = cols.lo[r], cols.hi[r]
        if slope is not None and offset is not None:
            a, b = lo * slope[r] + offset[r], hi * slope[r] + offset[r]
            lo, hi = np.fmin(a, b), np.fmax(a, b)
        y = np.empty(2 * n)
        y[0::2], y[1::2] = lo, hi
        out[f"y{i}"] = y
    if gaps.size:  # a NaN point before each gap
        at = 2 * gaps
        out = {k: np.insert(v, at, np.nan) for k, v in out.items()}
    return out


def flag_spans(cols: MinMaxColumns, rows: Sequence[int]) -> dict[str, Any]:
    """Time spans (ms) where any shown channel had BAD (red) or SUSPECT/INTERPOLATED (amber) samples."""
    if len(cols) == 0 or not rows:
        return {"left": [], "right": [], "color": []}
    bad = cols.bad[list(rows)].any(axis=0)
    suspect = cols.suspect[list(rows)].any(axis=0) & ~bad
    t_ms = cols.t0 / 1e6
    width = _column_ms(t_ms)
    left: list[float] = []
    right: list[float] = []
    color: list[str] = []
    for mask, c in ((bad, "#d62728"), (suspect, "#ff9f1c")):
        edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        left += t_ms[starts].tolist()
        right += (t_ms[stops - 1] + width).tolist()
        color += [c] * len(starts)
    return {"left": left, "right": right, "color": color}


class LiveView(LiveBase):
    """The newest ``window`` seconds of a DataManager's (or a RingBuffer's) channels, live.

    An ipywidget: display it (the last expression of a cell, or ``display(view)``).
    Controls: start/stop the acquisition (for a DataManager), the channels
    shown, the window length, y autoscale or a fixed range, calibrated or raw
    values. The status line gives the acquired rate, buffer fill, samples lost
    and frames per second. The legend above the plot names the channels shown, in
    their colors. Spans with BAD samples are shaded red, SUSPECT or INTERPOLATED amber.

    One refresher thread (``daqlab-view-<n>``) redraws at most ``max_fps`` times
    a second and backs off when the browser falls behind; it reads the ring
    through its own lossy reader and decimates to min/max per pixel column, so
    8 channels at 1 MS/s cost about what one at 1 kS/s does. It keeps going
    while other cells run. :meth:`close` (or closing the kernel) stops it.

    Parameters
    ----------
    target : DataManager or RingBuffer
    channels : list of str, optional
        Channels shown at first (all by default); the picker changes them.
    window : float
        Seconds shown, at most what the buffer holds.
    source : str, optional
        Which of a DataManager's sources (the first by default).
    """

    kind = "view"

    def __init__(
        self,
        target: DataManager | RingBuffer,
        channels: Sequence[str] | str | None = None,
        window: float = 5.0,
        *,
        source: str | None = None,
        width: int = 900,
        height: int = 320,
        max_fps: float = 20.0,
        calibrated: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        buffer, manager = resolve_buffer(target, source)
        shown = resolve_channels(buffer, channels)
        self.buffer, self.manager = buffer, manager
        self.names = [c.name for c in buffer.channels]
        self.width = int(width)
        seconds = self._check_window(window)
        super().__init__(max_fps=max_fps, clock=clock)
        self.reader = buffer.reader(from_oldest=True)  # what the buffer holds already shows too
        self._window_s = seconds
        self._cols = self._new_columns(seconds)
        self._slope = np.array([c.calibration.slope for c in buffer.channels])
        self._offset = np.array([c.calibration.offset for c in buffer.channels])
        self._rate_mark: tuple[float, int] | None = None
        self._rate = 0.0
        self._last_status = -math.inf
        self.frames_drawn = 0

        # not syncable: jupyter_bokeh 4.1 sends every change the page applies back to the kernel (each
        # frame: the whole data, gzipped and base64-encoded by the page, decoded again by the kernel)
        self.source = ColumnDataSource(data=frame_points(self._cols, range(len(self.names))),
                                       name="daqlab-live-data", syncable=False)
        self.flags = ColumnDataSource(data=flag_spans(self._cols, []), name="daqlab-live-flags",
                                      syncable=False)
        # the browser follows the newest samples and autoscales y itself: a frame is one patch (the data)
        # (not syncable: the browser recomputes them every frame; sending that back is wasted traffic)
        self.x_range = DataRange1d(follow="end", follow_interval=seconds * 1e3, range_padding=0,
                                   only_visible=True, syncable=False)
        self.y_auto = DataRange1d(only_visible=True, range_padding=0.05, syncable=False)
        self.y_fixed = Range1d(-1.0, 1.0)
        fig = figure(width=self.width, height=int(height), x_axis_type="datetime", x_range=self.x_range,
                     y_range=self.y_auto, tools="pan,box_zoom,wheel_zoom,reset,save",
                     name="daqlab-live-figure", output_backend="canvas")
        fig.vstrip(x0="left", x1="right", fill_color="color", fill_alpha=0.18, line_alpha=0,
                   source=self.flags)
        self.lines = []
        for i, name in enumerate(self.names):
            line = fig.line("x", f"y{i}", source=self.source, color=channel_color(i), line_width=1.2,
                            visible=name in shown)
            self.lines.append(line)
        fig.toolbar.logo = None
        self.figure = fig
        self.source.js_on_change("data", self._ack_callback(self.source))

        plot = self._wrap(fig)
        self._build_controls(shown, seconds, calibrated)
        self.legend = widgets.HTML(legend_html(self.names, shown))
        self.picker.observe(self._on_pick, "value")
        self.children = [self.controls, self.legend, plot, self.status]
        self._start_refresher()

    # --- settings -------------------------------------------------------------------------------------

    def _check_window(self, window: object) -> float:
        held = self.buffer.capacity / self.buffer.sample_rate
        return real(window, "window", lower=0, lower_open=True, upper=held, note="s (what the buffer holds)",
                    hint="Pass a shorter window, or give the manager a longer buffer.")

    def _new_columns(self, seconds: float) -> MinMaxColumns:
        samples = max(1, round(seconds * self.buffer.sample_rate))
        per = max(1, -(-samples // self.width))
        return MinMaxColumns(len(self.names), per, -(-samples // per) + 1)

    def _build_controls(self, shown: list[str], seconds: float, calibrated: bool) -> None:
        held = self.buffer.capacity / self.buffer.sample_rate
        self.run_button = widgets.Button(description="Start", layout=widgets.Layout(width="90px"))
        self.run_button.on_click(self._on_run_button)
        self.picker = widgets.SelectMultiple(options=self.names, value=tuple(shown),
                                             rows=min(6, len(self.names)), description="channels")
        self.window_box = widgets.BoundedFloatText(value=seconds, min=1.0 / self.buffer.sample_rate,
                                                   max=held, description="window s",
                                                   layout=widgets.Layout(width="170px"))
        self.y_mode = widgets.ToggleButtons(options=["auto", "fixed"], value="auto", description="y")
        self.y_min = widgets.FloatText(value=-1.0, description="min", layout=widgets.Layout(width="150px"))
        self.y_max = widgets.FloatText(value=1.0, description="max", layout=widgets.Layout(width="150px"))
        self.calibrated = widgets.Checkbox(value=calibrated, description="calibrated")
        self.status = widgets.HTML(value="waiting for the browser to show the plot (it starts when the "
                                         "kernel is idle)")
        self._update_run_button()
        self.controls = widgets.HBox([
            widgets.VBox([self.run_button, self.calibrated]), self.picker,
            widgets.VBox([self.window_box, self.y_mode, widgets.HBox([self.y_min, self.y_max])]),
        ])

    def _on_pick(self, change: dict[str, Any]) -> None:
        self.legend.value = legend_html(self.names, change["new"])

    def _update_run_button(self) -> None:
        m = self.manager
        if m is None:
            self.run_button.layout.display = "none"
            return
        state = m.state
        self.run_button.description = {"new": "Start", "running": "Stop"}.get(state, "Stopped")
        self.run_button.disabled = state not in ("new", "running")

    def _on_run_button(self, _button: Any) -> None:
        m = self.manager
        if m is None:
            return
        if m.running:
            m.stop()
        else:
            m.start()
        self._update_run_button()

    # --- the refresher ------------------------------------------------------------------------------

    def _read_new(self) -> None:
        window_samples = max(1, round(self._window_s * self.buffer.sample_rate))
        if self.reader.available > window_samples:  # behind by more than a window: jump, start afresh
            self.reader.skip_to_latest(window_samples)
            self._cols = self._new_columns(self._window_s)
        while True:
            block = self.reader.read(_READ_PIECE)
            if len(block) == 0:
                break
            self._cols.add(block.start, block.values, block.quality, block.times.view(np.int64))

    def _draw(self) -> bool:
        """One frame (on the refresher thread): read, decimate, and patch the plot's data."""
        seconds = float(self.window_box.value)
        if seconds != self._window_s and 0 < seconds <= self.buffer.capacity / self.buffer.sample_rate:
            self._window_s = seconds
            self._cols = self._new_columns(seconds)
            # a new reader, so that a longer window shows at once what the buffer already holds
            self.reader.close()
            self.reader = self.buffer.reader(from_oldest=True)
            self.reader.skip_to_latest(max(1, round(seconds * self.buffer.sample_rate)))
        self._read_new()
        shown = set(self.picker.value)
        rows = [i for i, n in enumerate(self.names) if n in shown]
        cols = self._cols
        if len(cols):
            cols = cols.since(int(cols.t0[-1]) + int(cols.per * 1e9 / self.buffer.sample_rate)
                              - int(self._window_s * 1e9))
        cal = bool(self.calibrated.value)
        data = frame_points(cols, range(len(self.names)), self._slope if cal else None,
                            self._offset if cal else None)
        for i, line in enumerate(self.lines):
            if line.visible != (i in rows):
                line.visible = i in rows
        # y as float32 halves what goes to the browser; x stays float64 (ms since the epoch)
        self._send_frame({k: v if k == "x" else v.astype(np.float32) for k, v in data.items()})
        spans = flag_spans(cols, rows)
        if spans != self.flags.data:
            self.flags.data = spans
        if self.x_range.follow_interval != self._window_s * 1e3:
            self.x_range.follow_interval = self._window_s * 1e3
        self._scale_y()
        self.frames_drawn += 1
        self._update_status()
        return True

    def _scale_y(self) -> None:
        fig = self.figure
        if self.y_mode.value == "fixed":
            lo, hi = float(self.y_min.value), float(self.y_max.value)
            if hi > lo and (self.y_fixed.start, self.y_fixed.end) != (lo, hi):
                self.y_fixed.start, self.y_fixed.end = lo, hi
            if fig.y_range is not self.y_fixed:
                fig.y_range = self.y_fixed
        elif fig.y_range is not self.y_auto:
            fig.y_range = self.y_auto

    def _update_status(self) -> None:
        now = self.pacer.clock()
        written = self.buffer.written
        if self._rate_mark is not None and now - self._rate_mark[0] >= 0.5:
            self._rate = (written - self._rate_mark[1]) / (now - self._rate_mark[0])
            self._rate_mark = (now, written)
        elif self._rate_mark is None:
            self._rate_mark = (now, written)
        if now - self._last_status < 0.5:
            return
        self._last_status = now
        self.status.value = self.status_text()
        self._update_run_button()

    def status_text(self) -> str:
        """The status line: acquired rate, buffer fill, samples lost, frames per second."""
        buf = self.buffer
        fill = len(buf) / buf.capacity if buf.capacity else 0.0
        latency = self.pacer.latency()
        parts = [
            f"{self._rate:,.0f} S/s per channel",
            f"buffer {fill:.0%}",
            f"lost {buf.overflow_count:,}",
            f"{self.pacer.fps():.1f} fps",
        ]
        if latency is not None:
            parts.append(f"latency {latency * 1e3:.0f} ms")
        if self.pacer.blind:
            parts.append("(no browser acks: drawing at a low rate)")
        return "<code>" + html.escape(" · ".join(parts)) + "</code>"

    def _show_error(self, exc: BaseException) -> None:
        self.status.value = f"<b>live view stopped</b>: <code>{html.escape(repr(exc))}</code>"

    def close(self) -> None:
        super().close()
        if hasattr(self, "reader"):  # not when __init__ failed early
            self.reader.close()
