"""Min/max decimation per pixel column: what a line plot of millions of samples needs to look right.

A column keeps the smallest and largest value of its samples (NaN ignored),
so a peak one sample wide is never lost, and whether any of its samples was
bad or suspect. :class:`MinMaxColumns` keeps the columns of a moving window
and adds new samples incrementally, so a frame costs in proportion to the
samples that arrived since the last one, not to the window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from daqlab.model import Quality

__all__ = ["MinMaxColumns", "minmax"]


def _reduce(values: NDArray[np.float64], quality: NDArray[np.int8], offset: int, per: int) -> tuple[Any, ...]:
    """Columns of ``per`` samples; the first sample sits ``offset`` into its column."""
    channels, n = values.shape
    ncols = -(-(offset + n) // per)
    pad_tail = ncols * per - offset - n
    if offset or pad_tail:
        v = np.full((channels, ncols * per), np.nan)
        v[:, offset : offset + n] = values
        q = np.zeros((channels, ncols * per), dtype=np.int8)
        q[:, offset : offset + n] = quality
    else:
        v, q = values, quality
    v3 = v.reshape(channels, ncols, per)
    q3 = q.reshape(channels, ncols, per)
    lo = np.fmin.reduce(v3, axis=2)
    hi = np.fmax.reduce(v3, axis=2)
    bad = (q3 == Quality.BAD).any(axis=2) | np.isnan(lo)  # an all-NaN column is a gap
    suspect = ((q3 == Quality.SUSPECT) | (q3 == Quality.INTERPOLATED)).any(axis=2)
    return lo, hi, bad, suspect


def minmax(
    values: NDArray[np.float64], columns: int, quality: NDArray[np.int8] | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """Decimate ``values`` (channels x n) into at most ``columns`` columns.

    Returns the index of each column's first sample, and per channel and
    column the min, the max, and whether a sample was BAD (or not finite) or
    SUSPECT/INTERPOLATED.

    >>> first, lo, hi, bad, suspect = minmax(np.array([[0.0, 5.0, 1.0, -2.0, 3.0]]), 3)
    >>> first.tolist(), lo.tolist(), hi.tolist()
    ([0, 2, 4], [[0.0, -2.0, 3.0]], [[5.0, 1.0, 3.0]])
    """
    n = values.shape[-1]
    per = max(1, -(-n // max(1, columns)))
    q = np.zeros(values.shape, dtype=np.int8) if quality is None else quality
    lo, hi, bad, suspect = _reduce(values, q, 0, per)
    return np.arange(lo.shape[-1], dtype=np.int64) * per, lo, hi, bad, suspect


class MinMaxColumns:
    """The min/max columns of the newest ``keep`` columns of a stream, ``per`` samples each.

    Columns line up with the stream's sample index (column ``k`` holds samples
    ``k*per .. (k+1)*per - 1``), so blocks can arrive in any sizes and a column
    split across two blocks is merged.
    """

    def __init__(self, channels: int, per: int, keep: int) -> None:
        self.per = max(1, int(per))
        self.keep = max(1, int(keep))
        self.index = np.empty(0, dtype=np.int64)
        """Column numbers (sample index // per), oldest first."""
        self.t0 = np.empty(0, dtype=np.int64)
        """Time (ns since the epoch) of each column's first sample."""
        self.lo = np.empty((channels, 0))
        self.hi = np.empty((channels, 0))
        self.bad = np.empty((channels, 0), dtype=bool)
        self.suspect = np.empty((channels, 0), dtype=bool)
        self.next_index: int | None = None
        """Sample index expected next (None before the first block or after a reset)."""

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def add(self, start: int, values: NDArray[np.float64], quality: NDArray[np.int8],
            times_ns: NDArray[np.int64]) -> None:
        """Add samples ``start .. start + n - 1``; a jump in ``start`` leaves a gap (no columns)."""
        n = values.shape[-1]
        if n == 0:
            return
        first_col = start // self.per
        offset = start - first_col * self.per
        lo, hi, bad, suspect = _reduce(values, quality, offset, self.per)
        cols = first_col + np.arange(lo.shape[-1], dtype=np.int64)
        # time of each new column's first sample present in this block
        firsts = np.maximum(cols * self.per, start) - start
        t0 = times_ns[firsts]
        if len(self) and self.index[-1] == cols[0]:  # the block continues the last column
            lo[:, 0] = np.fmin(lo[:, 0], self.lo[:, -1])
            hi[:, 0] = np.fmax(hi[:, 0], self.hi[:, -1])
            bad[:, 0] |= self.bad[:, -1]
            suspect[:, 0] |= self.suspect[:, -1]
            t0[0] = self.t0[-1]
            drop = 1
        else:
            drop = 0
        keep_from = max(0, len(self) - drop + len(cols) - self.keep)
        end = len(self) - drop
        self.index = np.concatenate([self.index[keep_from:end], cols])[-self.keep :]
        self.t0 = np.concatenate([self.t0[keep_from:end], t0])[-self.keep :]
        self.lo = np.concatenate([self.lo[:, keep_from:end], lo], axis=1)[:, -self.keep :]
        self.hi = np.concatenate([self.hi[:, keep_from:end], hi], axis=1)[:, -self.keep :]
        self.bad = np.concatenate([self.bad[:, keep_from:end], bad], axis=1)[:, -self.keep :]
        self.suspect = np.concatenate([self.suspect[:, keep_from:end], suspect], axis=1)[:, -self.keep :]
        self.next_index = start + n

    def since(self, t_ns: int) -> MinMaxColumns:
        """A view of the columns that start at or after ``t_ns`` (no copies of the arrays' data)."""
        i = int(np.searchsorted(self.t0, t_ns))
        out = MinMaxColumns(self.lo.shape[0], self.per, self.keep)
        out.index, out.t0 = self.index[i:], self.t0[i:]
        out.lo, out.hi = self.lo[:, i:], self.hi[:, i:]
        out.bad, out.suspect = self.bad[:, i:], self.suspect[:, i:]
        out.next_index = self.next_index
        return out
