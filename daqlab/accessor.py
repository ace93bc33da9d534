"""The ``run.daq`` accessor: daqlab's view of a run, through xarray's front door."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from daqlab.errors import ChannelNotFoundError
from daqlab.io import save
from daqlab.model import Channel, Quality
from daqlab.run import calibrate, channels_of, uncalibrate, validate

__all__ = ["DaqAccessor"]


@xr.register_dataset_accessor("daq")  # type: ignore[no-untyped-call]
class DaqAccessor:
    """``run.daq``: channels, calibration, validation and saving of a run.

    >>> import daqlab as dl
    >>> run = dl.make_run([[1.0, 2.0]], [dl.Channel("ai0", "V")], sample_rate=100.0)
    >>> run.daq.channels[0].unit, run.daq.sample_rate, run.daq.n_samples
    ('V', 100.0, 2)
    """

    def __init__(self, run: xr.Dataset) -> None:
        self._run = run

    @property
    def channels(self) -> tuple[Channel, ...]:
        """The channels as :class:`~daqlab.Channel` objects."""
        return channels_of(self._run)

    @property
    def channel_names(self) -> list[str]:
        return [str(n) for n in self._run["channel"].values.tolist()]

    def channel(self, name: str) -> Channel:
        """One channel by name; :class:`~daqlab.ChannelNotFoundError` lists the others."""
        for ch in self.channels:
            if ch.name == name:
                return ch
        raise ChannelNotFoundError(
            f"no channel {name!r} in this run; it has {self.channel_names}."
        )

    @property
    def sample_rate(self) -> float:
        return float(self._run.attrs["sample_rate"])

    @property
    def calibrated(self) -> bool:
        return bool(self._run.attrs["calibrated"])

    @property
    def n_samples(self) -> int:
        return int(self._run.sizes["time"])

    @property
    def duration(self) -> float:
        """Seconds from the first to the last timestamp (0 for fewer than two samples)."""
        t = self._run["time"].values
        return float((t[-1] - t[0]) / np.timedelta64(1, "s")) if t.size > 1 else 0.0

    def quality_counts(self) -> dict[str, dict[str, int]]:
        """Per channel, how many samples carry each quality flag."""
        q = np.asarray(self._run["quality"].values)
        return {
            name: {f.name: int((q[i] == f).sum()) for f in Quality}
            for i, name in enumerate(self.channel_names)
        }

    def validate(self, *, check_data: bool = True) -> xr.Dataset:
        return validate(self._run, check_data=check_data)

    def calibrate(self) -> xr.Dataset:
        return calibrate(self._run)

    def uncalibrate(self) -> xr.Dataset:
        return uncalibrate(self._run)

    def save(self, path: str | os.PathLike[str], format: str | None = None, **kw: Any) -> Path:
        return save(self._run, path, format, **kw)

    def plot(self, channels: list[str] | None = None, **kw: Any) -> Any:
        """A decimated bokeh plot of the run with quality shading (a :class:`daqlab.view.RunPlot`).

        In a notebook it displays as a widget, and zooming re-reads detail from
        the run; ``.save_html(path)`` writes a standalone page. bokeh loads here,
        not at ``import daqlab``.
        """
        from daqlab.view import RunPlot

        return RunPlot(self._run, channels, **kw)
