"""The XDF streams' timestamps as pyxdf gives them (for :mod:`daqlab.io._xdf`).

As :func:`pyxdf.load_xdf` with ``synchronize_clocks=True`` and ``dejitter_timestamps=False``:
a sample written without a timestamp is stamped the previous one + 1/nominal_srate; the
ClockOffset measurements of a stream are split into clock segments at clock resets (detected as
pyxdf does), a robust (Huber) line is fitted to each segment with pyxdf's ADMM fit, step for
step, and that line is added to the timestamps of the segment's samples. A last ClockOffset
garbled by the pylsl#67 / liblsl#246 bug is dropped with the extra samples it came with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from daqlab.io._xdf_chunks import _Stream

_WINSOR = 1e-4  # pyxdf's clock-sync defaults
_RESET_STDS, _RESET_SECS, _RESET_OFFSET_STDS, _RESET_OFFSET_SECS = 5.0, 5.0, 10.0, 1.0
_SYNC_METHOD = ("pyxdf's clock sync (synchronize_clocks=True, handle_clock_resets=True): a robust "
                "(Huber) line fitted to the ClockOffset values over their collection times, per "
                "clock segment; t = t_lsl + intercept + slope * t_lsl; no dejitter")


def _deduce(stamps: NDArray[np.float64], known: NDArray[np.bool_], tdiff: float) -> NDArray[np.float64]:
    """pyxdf's rule: a sample without a timestamp gets the previous one + ``tdiff`` (the first
    of a stream: 0 + tdiff), added one sample after the other, as pyxdf rounds them."""
    if known.all():
        return stamps
    ext = np.concatenate(([0.0], stamps))
    kn = np.concatenate(([True], known))
    pos = np.arange(ext.size)
    depth = pos - np.maximum.accumulate(np.where(kn, pos, 0))  # place in a run of unstamped
    run_ends = np.flatnonzero((depth > 0) & np.append(depth[1:] == 0, True))
    for e in run_ends[depth[run_ends] > 32]:  # long runs: one sequential sum each
        s = e - depth[e] + 1
        ext[s:e + 1] = np.add.accumulate(np.concatenate(([ext[s - 1]], np.full(e + 1 - s, tdiff))))[1:]
        depth[s:e + 1] = 0
    for j in range(1, int(depth.max()) + 1):  # short runs: all runs' j-th samples at once
        sel = np.flatnonzero(depth == j)
        ext[sel] = ext[sel - 1] + tdiff
    return ext[1:]


def _breaks(diff: NDArray[np.float64], stds: float, secs: float) -> NDArray[np.bool_]:
    median = np.median(diff)
    shift = diff - median
    mad = np.median(np.abs(shift)) + np.finfo(float).eps
    result: NDArray[np.bool_] = (np.abs(shift / mad) > stds) & (np.abs(shift) > secs)
    return result


def _clock_ranges(times: list[float], values: list[float]) -> list[tuple[int, int]]:
    """Clock segments between detected clock resets, as pyxdf finds them (inclusive indices)."""
    t_diff, v_diff = np.diff(times), np.diff(values)
    resets = (t_diff < 0) | (_breaks(t_diff, _RESET_STDS, _RESET_SECS)
                             & _breaks(v_diff, _RESET_OFFSET_STDS, _RESET_OFFSET_SECS))
    at = np.flatnonzero(resets)
    return list(zip(np.hstack(([0], at + 1)).tolist(), np.hstack((at, resets.size)).tolist(),
                    strict=True))


def _robust_fit(a_in: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Huber-loss line fit by ADMM (rho 1, 1000 iterations), step for step as pyxdf's
    ``_robust_fit`` (BSD-2, after Boyd's ADMM codes), so that the results are identical; it
    stops early only once the iteration has reached a fixed point (z and u the same as in the
    step before: every further step would repeat it), mostly after some 50 steps."""
    a = np.copy(a_in)
    offset = np.min(a[:, 1])
    a[:, 1] -= offset
    aty = np.dot(a.T, y)
    lower = np.linalg.cholesky(np.dot(a.T, a))
    upper = lower.T
    z: NDArray[Any] = np.zeros_like(y)
    u, x = z, z
    for _ in range(1000):
        x = np.linalg.solve(upper, np.linalg.solve(lower, aty + np.dot(a.T, z - u)))
        d = np.dot(a, x) - y + u
        d_inv = np.zeros_like(d)
        np.divide(1, d, out=d_inv, where=d != 0)
        tmp = np.maximum(0, (1 - (1 + 1 / 1) * np.abs(d_inv)))
        z_next = 1 / (1 + 1) * d + 1 / (1 + 1) * tmp * d
        u_next = d - z_next
        if np.array_equal(z_next, z) and np.array_equal(u_next, u):
            break
        z, u = z_next, u_next
    x[0] -= x[1] * offset
    return x


def _corrupt_last_offset(times: list[float], values: list[float]) -> bool:
    """pyxdf's test for the pylsl#67 / liblsl#246 bug's garbage last ClockOffset."""
    if len(times) < 3:
        return False
    t, v = np.asarray(times), np.asarray(values)
    intervals = np.diff(t)
    median_interval = np.median(intervals[:-1])
    last = np.abs(intervals[-1])
    ratio = last / median_interval if median_interval > 0 else (np.inf if last > 0 else 1.0)
    median_val = np.median(v[:-1])
    mad = np.median(np.abs(v[:-1] - median_val))
    z = np.abs(v[-1] - median_val) / (1.4826 * mad) if mad > np.finfo(float).eps else 0.0
    return bool(ratio > 10.0 or z > 10.0)


def _sync(s: _Stream, ts: NDArray[np.float64], count: int) -> tuple[NDArray[np.float64], int, dict[str, Any]]:
    """Clock-corrected timestamps, the number of samples kept (pyxdf drops the extra samples of
    the pylsl#67 bug), and what was done."""
    times, values = list(s.clock_times), list(s.clock_values)
    done: dict[str, Any] = {"applied": False, "method": _SYNC_METHOD, "segments": []}
    footer_count = s.footer.findtext("sample_count") if s.footer is not None else None
    try:
        expected = int(footer_count) if footer_count is not None else None
    except ValueError:
        expected = None
    if expected is not None and count > expected and _corrupt_last_offset(times, values):
        done["dropped_last_offset"] = {"time": times[-1], "value": values[-1]}
        done["dropped_samples"] = count - expected
        times, values, count = times[:-1], values[:-1], expected
        ts = ts[:count]
    if ts.size == 0 or not times:
        return ts, count, done
    ranges = _clock_ranges(times, values) if len(times) > 1 else [(0, len(times) - 1)]
    coefs: list[tuple[float, float]] = []
    for lo, hi in ranges:
        if lo == hi:
            coefs.append((values[lo], 0.0))
            continue
        design = np.column_stack([np.ones(hi + 1 - lo), np.array(times[lo:hi + 1]) / _WINSOR])
        try:
            c = _robust_fit(design, np.array(values[lo:hi + 1]) / _WINSOR)
            c[0] *= _WINSOR
            coefs.append((float(c[0]), float(c[1])))
        except np.linalg.LinAlgError:
            coefs.append((0.0, 0.0))
    ts = ts.copy()
    start = 0
    for (c0, c1), (lo, hi) in zip(coefs, ranges, strict=True):
        if hi + 1 < len(times):  # up to the first sample nearer the next segment's first offset
            near = np.abs(ts[start:] - times[hi]) < np.abs(ts[start:] - times[hi + 1])
            stop = start + (near.size if near.all() else int(np.argmin(near)))
        else:
            stop = ts.size
        if stop > start:
            ts[start:stop] += c0 + c1 * ts[start:stop]
            done["segments"].append({"first_sample": start, "last_sample": stop - 1,
                                     "offsets": [lo, hi], "intercept": c0, "slope": c1})
            start = stop
    done["applied"] = True
    return ts, count, done


def _timestamps(s: _Stream) -> tuple[NDArray[np.float64], int, dict[str, Any]]:
    """``s``'s timestamps as pyxdf gives them (:func:`_deduce`, then :func:`_sync`): corrected
    LSL seconds, the number of samples kept, and what was done."""
    stamps = np.concatenate(s.stamps) if s.stamps else np.zeros(0)
    known = s.all_known()
    with np.errstate(invalid="ignore", over="ignore"):
        return _sync(s, _deduce(stamps, known, 1.0 / s.srate if s.srate > 0 else 0.0), stamps.size)
