"""Quality rules shared by the processing steps.

A sample is *unusable* when its value is NaN/inf or its flag is BAD. The steps
treat unusable samples so that they never poison a whole series and never
pass silently:

- IIR filters (and decimation, resampling) *bridge* them first: an unusable
  sample takes the value of the last usable one before it (a hold, as a
  sample-and-hold would), carried across chunks. Bridged samples come out
  flagged INTERPOLATED. Samples before a channel's first usable sample cannot
  be bridged: they come out NaN and BAD, and the filter starts at the first
  usable sample.
- Outputs whose input window held an unusable sample are flagged SUSPECT
  (unless already worse). For an IIR filter that window is its *settling
  length*: where its impulse response is above 1e-3 of its peak.
- Flags already set are kept unless a rule asks for a worse one. "Worse"
  ranks GOOD < SUSPECT < INTERPOLATED < BAD: an interpolated value near a bad
  sample is reported as interpolated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import maximum_filter1d

from daqlab.model import Quality
from daqlab.processing._blocks import Span, sweep

__all__ = ["bridge", "bridge_block", "near", "unusable", "worst"]

_RANK = np.array([0, 1, 3, 2], dtype=np.int8)  # severity of GOOD, SUSPECT, BAD, INTERPOLATED
_BY_RANK = np.array([Quality.GOOD, Quality.SUSPECT, Quality.INTERPOLATED, Quality.BAD], dtype=np.int8)


def worst(a: NDArray[np.int8], b: NDArray[np.int8] | int) -> NDArray[np.int8]:
    """Element-wise worse of two quality arrays (GOOD < SUSPECT < INTERPOLATED < BAD)."""
    rank_b = _RANK[np.asarray(b, dtype=np.int8)]
    out: NDArray[np.int8] = _BY_RANK[np.maximum(_RANK[a], rank_b)]
    return out


def unusable(values: NDArray[np.float64], quality: NDArray[np.int8]) -> NDArray[np.bool_]:
    """True where a sample may not be used as a value: NaN/inf or flagged BAD."""
    out: NDArray[np.bool_] = ~np.isfinite(values) | (quality == Quality.BAD)
    return out


def bridge_block(
    arrays: Sequence[NDArray[Any]], span: Span, last: NDArray[np.float64] | None
) -> tuple[tuple[NDArray[Any], ...], NDArray[np.float64]]:
    """Block function (a scan) holding the last usable value over unusable samples.

    Returns (bridged values, their flags, unusable mask) and, as the state, the
    last usable value of each channel (NaN while there has been none).
    """
    values, quality = arrays[0], arrays[1]
    bad = unusable(values, quality)
    if last is None:
        last = np.full(values.shape[0], np.nan)
    if not bad.any():
        new_last = values[:, -1].copy() if values.shape[-1] else last
        return (values, quality, bad), new_last
    n = values.shape[-1]
    idx = np.where(bad, -1, np.arange(n))
    np.maximum.accumulate(idx, axis=-1, out=idx)
    bridged = np.take_along_axis(values, np.maximum(idx, 0), axis=-1)
    none_yet = idx < 0
    bridged = np.where(none_yet, last[:, None], bridged)
    flags = quality.copy()
    flags[bad] = Quality.INTERPOLATED
    flags[np.isnan(bridged)] = Quality.BAD  # before a channel's first usable sample
    return (bridged, flags, bad), bridged[:, -1].copy()


def bridge(values: Any, quality: Any) -> tuple[Any, Any, Any]:
    """Bridged values, their flags and the unusable mask of whole series (numpy or dask, lazily)."""
    xb, qb, bad = sweep([values, quality], bridge_block, label="bridge", token=None, n_out=3,
                        dtypes=(np.float64, np.int8, bool), carry=True)
    return xb, qb, bad


def near(bad: NDArray[np.bool_], before: int, after: int, span: Span) -> NDArray[np.bool_]:
    """For each core sample of ``span``: does ``bad`` hold a True within ``before`` samples
    before it or ``after`` samples after it (itself included)? ``bad`` is the window."""
    if not bad.any():
        return np.zeros((bad.shape[0], span.size), dtype=bool)
    size = before + after + 1
    # scipy.ndimage's window for output i covers i - size//2 - origin .. + size - 1
    origin = before - size // 2
    hit = maximum_filter1d(bad.view(np.uint8), size, axis=-1, mode="constant", cval=0, origin=origin)
    out: NDArray[np.bool_] = hit[:, span.core].astype(bool)
    return out
