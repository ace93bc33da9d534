"""SpectrumView: a live Welch power spectral density of the newest samples, on log axes."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure
from numpy.typing import NDArray
from scipy import signal

from daqlab.acquisition import DataManager
from daqlab.buffer import RingBuffer
from daqlab.checks import real, whole
from daqlab.view._base import LiveBase, channel_color, legend_html, resolve_buffer, resolve_channels

__all__ = ["SpectrumView", "welch_psd"]


def welch_psd(values: NDArray[np.float64], sample_rate: float, nperseg: int) -> tuple[Any, Any]:
    """Welch PSD per channel (NaN samples set to the channel's mean); zero frequency left out."""
    x = np.array(values, dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        means = np.nanmean(np.where(bad, np.nan, x), axis=-1, keepdims=True)
        x = np.where(bad, np.nan_to_num(means), x)
    f, p = signal.welch(x, fs=sample_rate, nperseg=min(nperseg, x.shape[-1]), axis=-1)
    return f[1:], p[..., 1:]


class SpectrumView(LiveBase):
    """A live power spectral density (Welch) of the newest ``seconds`` of chosen channels.

    Log frequency and power axes; redrawn by its own refresher thread
    (``daqlab-spectrum-<n>``), a few times a second. Several views, of either
    kind, may watch one manager at once.
    """

    kind = "spectrum"

    def __init__(
        self,
        target: DataManager | RingBuffer,
        channels: Sequence[str] | str | None = None,
        seconds: float = 1.0,
        *,
        source: str | None = None,
        nperseg: int = 4096,
        width: int = 900,
        height: int = 320,
        max_fps: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        buffer, manager = resolve_buffer(target, source)
        self.names = resolve_channels(buffer, channels)
        held = buffer.capacity / buffer.sample_rate
        seconds = real(seconds, "seconds", lower=0, lower_open=True, upper=held,
                       note="s (what the buffer holds)")
        nperseg = whole(nperseg, "nperseg", minimum=8, unit="samples")
        self.buffer, self.manager = buffer, manager
        self.samples = max(8, round(seconds * buffer.sample_rate))
        self.nperseg = nperseg
        super().__init__(max_fps=max_fps, clock=clock)
        self.reader = buffer.reader(from_oldest=True)  # what the buffer holds already shows too
        self.rows = [[c.name for c in buffer.channels].index(n) for n in self.names]
        self.source = ColumnDataSource(
            data={"f": np.empty(0), **{f"p{i}": np.empty(0) for i in range(len(self.names))}},
            name="daqlab-spectrum-data", syncable=False)  # not sent back by the page (see LiveView)
        fig = figure(width=width, height=height, x_axis_type="log", y_axis_type="log",
                     x_axis_label="frequency (Hz)", y_axis_label="power spectral density (unit²/Hz)",
                     tools="pan,box_zoom,wheel_zoom,reset,save", name="daqlab-spectrum-figure")
        for i, row in enumerate(self.rows):  # colored as in LiveView; the legend is HTML (see legend_html)
            fig.line("f", f"p{i}", source=self.source, color=channel_color(row))
        fig.toolbar.logo = None
        self.figure = fig
        self.source.js_on_change("data", self._ack_callback(self.source))
        plot = self._wrap(fig)
        self.status = widgets.HTML(value="waiting for samples...")
        self.legend = widgets.HTML(legend_html([c.name for c in buffer.channels], self.names))
        self.children = [self.legend, plot, self.status]
        self.frames_drawn = 0
        self._start_refresher()

    def _draw(self) -> bool:
        self.reader.skip_to_latest(self.samples)
        block = self.reader.read(self.samples)
        if len(block) < 8:
            return False
        f, p = welch_psd(block.values[self.rows], self.buffer.sample_rate, self.nperseg)
        p = np.where(p > 0, p, np.nan)  # log axis: no zeros
        self._send_frame({"f": f, **{f"p{i}": p[i] for i in range(len(self.names))}})
        self.frames_drawn += 1
        self.status.value = html.escape(
            f"{len(block):,} samples, {len(f)} frequencies, {self.pacer.fps():.1f} fps")
        return True

    def _show_error(self, exc: BaseException) -> None:
        self.status.value = f"<b>spectrum stopped</b>: <code>{html.escape(repr(exc))}</code>"

    def close(self) -> None:
        super().close()
        if hasattr(self, "reader"):  # not when __init__ failed early
            self.reader.close()
