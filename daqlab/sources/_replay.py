"""Play a saved run back as a live source."""

from __future__ import annotations

import datetime as _dt
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.checks import real, whole
from daqlab.errors import ConfigurationError
from daqlab.io import open_run
from daqlab.run import channels_of, uncalibrate, validate
from daqlab.sources._base import SourceBase, check_flag
from daqlab.sources._protocol import Samples

__all__ = ["Replay"]


class Replay(SourceBase):
    """Replays a saved run (a path or a run) at ``speed`` times real time.

    Samples keep their original spacing, re-stamped from the replay's own
    start: sample ``k`` is stamped ``t0 + (time[k] - time[0])``, ``t0`` the UTC
    time at ``start()``. ``speed=None`` replays as fast as the reader asks.
    Calibrated runs are replayed raw (calibration stays with the channels), and
    quality flags are kept.

    Examples
    --------
    >>> import daqlab as dl
    >>> run = dl.make_run([[0.0, 1.0, 2.0, 3.0]], ["a"], sample_rate=2.0, start="2024-01-01")
    >>> src = Replay(run, speed=None, block_size=3)
    >>> src.start()
    >>> [len(src.read(timeout=1.0)) for _ in range(2)], src.finished
    ([3, 1], True)
    """

    def __init__(
        self,
        path_or_run: str | os.PathLike[str] | xr.Dataset,
        speed: float | None = 1.0,
        *,
        loop: bool = False,
        block_duration: float = 0.01,
        block_size: int | None = None,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        wall_clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        # the cheap settings first: a typo should not cost opening a large file
        if speed is not None:
            real(speed, "speed", lower=0, lower_open=True, note="or None for as fast as possible",
                 hint="1.0 is real time.")
        real(block_duration, "block_duration", lower=0, lower_open=True, note="(seconds)",
             hint="Pass e.g. block_duration=0.01 (the default).")
        if block_size is not None:
            whole(block_size, "block_size", minimum=1, unit="samples",
                  note="or None for block_duration's worth")
        self.loop = check_flag("loop", loop)
        if isinstance(path_or_run, xr.Dataset):
            run = validate(path_or_run, check_data=False)
            self._origin = str(run.attrs.get("name") or run.attrs.get("id"))
        else:
            run = open_run(path_or_run, chunks={})
            self._origin = os.fspath(path_or_run)
        if run.attrs["calibrated"]:
            run = uncalibrate(run)
        if run.sizes["time"] == 0:
            raise ConfigurationError(f"run {self._origin!r} holds no samples; there is nothing to replay.")
        super().__init__(channels_of(run), float(run.attrs["sample_rate"]), name=name,
                         clock=clock, sleep=sleep, wall_clock=wall_clock)
        self.speed = None if speed is None else float(speed)
        self._run = run
        self._n = int(run.sizes["time"])
        t = run["time"].values.view(np.int64)
        self._rel = t - t[0]
        self._period = int(self._rel[-1] + round(1e9 / self._rate))  # one loop's length in ns
        per_block = self._rate * float(block_duration)
        if not math.isfinite(per_block):
            raise ConfigurationError(
                f"block_duration={block_duration!r} s at {self._rate} Hz is not a finite number "
                "of samples; pass a shorter block_duration."
            )
        self._min_block = max(1, round(per_block))
        self._block_size = int(block_size) if block_size is not None else self._min_block
        self._emitted = 0
        # read-ahead: about a second of samples (at least 64 k) per read of the run
        self._cache_len = max(65_536, round(self._rate))
        self._cache_span = (0, 0)
        self._cache: tuple[NDArray[np.float64], NDArray[np.int8]] = (
            np.empty((len(self._channels), 0)), np.empty((len(self._channels), 0), np.int8))

    @property
    def finished(self) -> bool:
        return not self.loop and self._emitted >= self._n

    def _rel_time(self, k: int) -> int:
        """Offset (ns) of emitted sample ``k`` from the replay's start, across loops."""
        loops, i = divmod(k, self._n)
        return int(loops * self._period + self._rel[i])

    def _due(self, timeout: float) -> int:
        assert self.speed is not None
        def due() -> int:
            elapsed_ns = (self._clock() - self._t0_mono) * self.speed * 1e9  # type: ignore[operator]
            loops, rem = divmod(elapsed_ns, self._period)
            idx = int(loops) * self._n + int(np.searchsorted(self._rel, rem, side="right"))
            return idx - self._emitted

        d = due()
        if d < self._min_block:
            target = self._rel_time(self._emitted + self._min_block - 1) / 1e9 / self.speed
            self._sleep(max(0.0, min(target - (self._clock() - self._t0_mono), timeout)))
            if self._stop_event.is_set():
                return 0
            d = due()
        return min(d, 10 * self._min_block)

    def read(self, timeout: float) -> Samples | None:
        self._check_started()
        if self._stop_event.is_set() or self.finished:
            return None
        n = self._block_size if self.speed is None else self._due(timeout)
        if not self.loop:
            n = min(n, self._n - self._emitted)
        if n <= 0:
            return None
        ks = np.arange(self._emitted, self._emitted + n)
        idx = ks % self._n
        values, quality = self._samples(idx)
        loops = ks // self._n
        times = (self._t0_ns + loops * self._period + self._rel[idx]).view("datetime64[ns]")
        self._emitted += n
        return Samples(values, times, quality)

    def _samples(self, idx: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
        """Values and quality at run positions ``idx`` (ascending, wrapping to 0 at most once
        when looping)."""
        wrap = np.flatnonzero(np.diff(idx) < 0)
        if wrap.size:  # a loop boundary inside the block: two contiguous reads
            k = int(wrap[0]) + 1
            (v0, q0), (v1, q1) = self._span(int(idx[0]), int(idx[k - 1]) + 1), self._span(
                int(idx[k]), int(idx[-1]) + 1)
            return np.concatenate([v0, v1], axis=1), np.concatenate([q0, q1], axis=1)
        return self._span(int(idx[0]), int(idx[-1]) + 1)

    def _span(self, lo: int, hi: int) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
        """Samples ``lo:hi`` of the run, through a read-ahead cache: reading a lazily opened
        file block by block costs ~30 ms a read, a second's worth at once hardly more."""
        c0, c1 = self._cache_span
        if lo < c0 or hi > c1:
            c0, c1 = lo, min(self._n, max(hi, lo + self._cache_len))
            # dask's default scheduler gives each calling thread (the acquisition thread) a
            # pool of its own that outlives it: its threads stayed after stop(). Read here.
            part = self._run[["value", "quality"]].isel(time=slice(c0, c1)).compute(
                scheduler="synchronous")
            self._cache = (np.asarray(part["value"].values, dtype=np.float64),
                           np.asarray(part["quality"].values, dtype=np.int8))
            self._cache_span = (c0, c1)
        return self._cache[0][:, lo - c0 : hi - c0].copy(), self._cache[1][:, lo - c0 : hi - c0].copy()

    def describe(self) -> dict[str, Any]:
        return {
            "type": "daqlab.sources.Replay",
            "origin": self._origin,
            "original_id": str(self._run.attrs.get("id", "")),
            "speed": self.speed,
            "loop": self.loop,
            "sample_rate": self._rate,
            "channels": [c.name for c in self._channels],
        }
