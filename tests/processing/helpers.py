"""Shared by the processing tests: test signals, chunkings, and the scipy references they are held to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray
from scipy import signal

import daqlab as dl

__all__ = [
    "FS",
    "START",
    "Chunking",
    "amplitude",
    "assert_within",
    "butter_sos",
    "hold",
    "make",
    "signals",
]

FS = 1000.0
START = "2024-01-01T00:00:00Z"


@dataclass(frozen=True)
class Chunking:
    """How a test run is backed: numpy (``time`` None) or dask with these chunk sizes."""

    time: int | tuple[int, ...] | None
    channel: int | None = None

    def __str__(self) -> str:
        if self.time is None:
            return "numpy"
        return f"t{self.time}" + ("" if self.channel is None else f"-c{self.channel}")

    def apply(self, run: xr.Dataset) -> xr.Dataset:
        if self.time is None:
            return run
        chunks: dict[str, Any] = {"time": self.time}
        if self.channel is not None:
            chunks["channel"] = self.channel
        return run.chunk(chunks)


def signals(n: int = 3000, seed: int = 1) -> NDArray[np.float64]:
    """Three channels: a 3 Hz sine in noise, noise on a large offset, a random walk."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    return np.vstack([
        3.0 * np.sin(2 * np.pi * 3.0 * t) + rng.normal(size=n),
        100.0 + 5.0 * rng.normal(size=n),
        np.cumsum(rng.normal(size=n)),
    ])


def make(values: NDArray[np.float64], quality: NDArray[np.int8] | None = None,
         **kwargs: Any) -> xr.Dataset:
    """A run of ``values`` (channels x samples) at :data:`FS`, channels named c0, c1, ..."""
    names = [f"c{i}" for i in range(values.shape[0])]
    return dl.make_run(values, names, sample_rate=FS, start=START, quality=quality, **kwargs)


def amplitude(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each channel's largest finite magnitude, shaped to broadcast along time."""
    out: NDArray[np.float64] = np.nanmax(np.abs(np.where(np.isfinite(x), x, np.nan)), axis=-1,
                                         keepdims=True)
    return out


def butter_sos(btype: str, params: dict[str, Any], fs: float = FS) -> NDArray[np.float64]:
    """The reference Butterworth design for a step's parameters (cutoff or low/high, order)."""
    wn = params["cutoff"] if "cutoff" in params else [params["low"], params["high"]]
    sos: NDArray[np.float64] = signal.butter(params["order"], wn, btype=btype, fs=fs, output="sos")
    return sos


def hold(x: NDArray[np.float64], unusable: NDArray[np.bool_]) -> NDArray[np.float64]:
    """The bridging rule written plainly: an unusable sample takes the last usable value before it
    (NaN while there has been none)."""
    out = x.copy()
    for c in range(x.shape[0]):
        last = np.nan
        for i in range(x.shape[1]):
            if unusable[c, i]:
                out[c, i] = last
            else:
                last = x[c, i]
    return out


def assert_within(actual: NDArray[np.float64], expected: NDArray[np.float64], tol: float,
                  scale: NDArray[np.float64]) -> None:
    """``|actual - expected| <= tol * scale`` everywhere (``scale`` per channel), NaN where expected."""
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    err = np.nan_to_num(np.abs(actual - expected) / scale)
    worst = float(err.max()) if err.size else 0.0
    assert worst <= tol, f"largest error {worst:.3g} of the amplitude, allowed {tol:.1g}"
