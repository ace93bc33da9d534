"""Moving average, exact across chunks: ``pandas.Series(x).rolling(window, min_periods=1).mean()``."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray
from scipy.ndimage import uniform_filter1d

from daqlab.model import Quality
from daqlab.processing._blocks import Span, sweep
from daqlab.processing._quality import unusable, worst
from daqlab.processing._runs import check_number, rebuild, source_arrays

__all__ = ["moving_average"]


def _window_sums(x: NDArray[np.float64], window: int, origin: int) -> NDArray[np.float64]:
    """Sum over each window (scipy's running sum, zeros beyond the arrays' ends)."""
    out: NDArray[np.float64] = uniform_filter1d(x, window, axis=-1, mode="constant", cval=0.0, origin=origin)
    return out


def _mean(
    arrays: list[NDArray[Any]], span: Span, state: Any, *, window: int, before: int, after: int
) -> tuple[tuple[NDArray[Any], NDArray[np.int8]], None]:
    x, q = arrays
    origin = before - window // 2
    core = span.core
    bad = unusable(x, q)
    # samples in each core sample's window: fewer than `window` only at the ends of the series
    pos = np.arange(span.lead, span.lead + span.size)
    full = np.minimum(pos + after, x.shape[-1] - 1) - np.maximum(pos - before, 0) + 1
    if not bad.any():
        mean = _window_sums(x, window, origin)[:, core]
        short = full < window
        if short.any():  # uniform_filter1d divided by `window`; the ends have fewer samples
            mean[:, short] = mean[:, short] * window / full[short]
        return (mean, q[:, core]), None
    clean = np.where(bad, 0.0, x)
    sums = _window_sums(clean, window, origin)[:, core] * window
    counts = np.rint(_window_sums((~bad).astype(np.float64), window, origin)[:, core] * window)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / counts, np.nan)
    # an unusable sample (flagged BAD on input) gets its value from its window: INTERPOLATED, as a
    # bridged sample; `worst` could not lower its BAD flag
    flags = np.where(bad[:, core], np.int8(Quality.INTERPOLATED), q[:, core])
    flags = worst(flags, np.where(counts < full, np.int8(Quality.SUSPECT), np.int8(Quality.GOOD)))
    flags = worst(flags, np.where(counts == 0, np.int8(Quality.BAD), np.int8(Quality.GOOD)))
    return (mean, flags), None


def moving_average(run: xr.Dataset, window: int, *, center: bool = False) -> xr.Dataset:
    """Mean over a sliding window of ``window`` samples; lazy on dask-backed runs.

    Equals ``pandas.Series(x).rolling(window, min_periods=1, center=center).mean()``
    per channel: trailing (the sample and the ``window - 1`` before it) or
    centred, with shorter windows at the ends of the series. Unusable samples
    (NaN/inf or BAD) are left out of the mean, as pandas leaves out NaN; an
    output whose window held one is flagged SUSPECT, one at an unusable sample
    INTERPOLATED, and one whose window held no usable sample is NaN and BAD.

    >>> import daqlab as dl
    >>> run = dl.make_run([[1.0, 2.0, 3.0, 4.0]], ["a"], sample_rate=1.0)
    >>> dl.processing.moving_average(run, 2).value.values.tolist()
    [[1.0, 1.5, 2.5, 3.5]]
    >>> dl.processing.moving_average(run, 3, center=True).value.values.tolist()
    [[1.5, 2.0, 3.0, 3.5]]
    """
    step = "moving_average"
    checked, x, q = source_arrays(run, step)
    w: int = check_number(step, "window", window, integer=True, minimum=1,
                          hint="The window is a number of samples.")
    before, after = (w // 2, (w - 1) // 2) if center else (w - 1, 0)
    params = {"window": w, "center": bool(center)}
    value, quality = sweep([x, q], functools.partial(_mean, window=w, before=before, after=after),
                           label="moving-average", token=(w, before, after), n_out=2,
                           dtypes=(np.float64, np.int8), before=before, after=after)
    return rebuild(checked, value, quality, step=step, params=params)
