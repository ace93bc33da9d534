"""Resampling to a new rate, exact across chunks: ``scipy.signal.resample_poly`` on the whole series."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray
from scipy import signal

from daqlab.errors import ProcessingError
from daqlab.model import Quality
from daqlab.processing._blocks import Span, sweep
from daqlab.processing._quality import bridge, near, worst
from daqlab.processing._runs import check_number, rebuild, source_arrays
from daqlab.run import sample_times

__all__ = ["resample"]

MAX_DENOMINATOR = 1000


@dataclass(frozen=True)
class _Poly:
    """resample_poly's filter for one (up, down, length) and where its outputs sit."""

    up: int
    down: int
    h: NDArray[np.float64]  # padded as resample_poly pads it
    pre_remove: int
    n_out: int
    reach: int  # input samples an output may depend on, either side

    @classmethod
    def make(cls, up: int, down: int, n_in: int) -> _Poly:
        # the same arithmetic as scipy.signal.resample_poly (window ("kaiser", 5.0))
        max_rate = max(up, down)
        half_len = 10 * max_rate
        h = signal.firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * up
        n_out = -(-n_in * up // down)
        pre_pad = down - half_len % down
        pre_remove = (half_len + pre_pad) // down
        post_pad = 0
        while ((n_in - 1) * up + h.size + pre_pad + post_pad - 1) // down + 1 < n_out + pre_remove:
            post_pad += 1
        h = np.concatenate([np.zeros(pre_pad), h, np.zeros(post_pad)])
        reach = (h.size + down * (pre_remove + 2)) // up + 2
        return cls(up, down, h, pre_remove, n_out, reach)

    def outputs(self, start: int, stop: int) -> tuple[int, int]:
        """The outputs that belong to input samples [start, stop): those whose time lies there."""
        return -(-start * self.up // self.down), min(self.n_out, -(-stop * self.up // self.down))


def _block(
    arrays: list[NDArray[Any]], span: Span, state: Any, *, poly: _Poly
) -> tuple[tuple[Any, ...], None]:
    x, flags, bad = arrays
    # NaN is left only before a channel's first usable sample: the series starts after it,
    # zero-padded as resample_poly pads a series (else the NaN would spread past that start)
    missing = np.isnan(x)
    x = np.where(missing, 0.0, x) if missing.any() else x
    m0, m1 = poly.outputs(span.start, span.stop)
    lo = span.start - span.lead
    k0 = lo - lo % poly.down  # upfirdn's phase lines up when the first input is a multiple of `down`
    padded = np.concatenate([np.zeros((x.shape[0], lo - k0)), x], axis=-1) if lo > k0 else x
    first = m0 + poly.pre_remove - k0 * poly.up // poly.down
    y = signal.upfirdn(poly.h, padded, poly.up, poly.down, axis=-1)[:, first : first + m1 - m0]
    # flags: those of the input sample at or before each output, SUSPECT near an unusable one
    at = np.arange(m0, m1) * poly.down // poly.up - lo
    out_flags = flags[:, at]
    y = np.where(missing[:, at], np.nan, y) if missing.any() else y
    core_near = near(bad, poly.reach, poly.reach, Span(lo, lo + x.shape[-1], 0, 0, span.total))
    hit = core_near[:, at]
    out_flags = worst(out_flags, np.where(hit, np.int8(Quality.SUSPECT), np.int8(Quality.GOOD)))
    return (y, out_flags), None


def resample(run: xr.Dataset, rate: float) -> xr.Dataset:
    """Resample every channel to ``rate`` Hz (polyphase, anti-aliased); lazy on dask-backed runs.

    ``rate / sample_rate`` must be a ratio ``up / down`` of integers with
    ``down`` at most 1000. Equals ``scipy.signal.resample_poly(x, up, down)``
    per channel (which pads the series with zeros at both ends). Output sample
    ``m`` is at ``time[0] + m / rate``. Unusable samples are bridged first (see
    :mod:`daqlab.processing`); outputs near one are flagged SUSPECT.

    >>> import daqlab as dl
    >>> run = dl.make_run([np.ones(300)], ["a"], sample_rate=300.0)
    >>> fast = dl.processing.resample(run, 400.0)
    >>> fast.sizes["time"], fast.attrs["sample_rate"]
    (400, 400.0)
    """
    step = "resample"
    checked, x, q = source_arrays(run, step)
    fs = float(checked.attrs["sample_rate"])
    new: float = check_number(step, "rate", rate, hint="The new sample rate is in Hz.")
    if new <= 0:
        raise ProcessingError(f"{step}: rate must be above 0 Hz; got {rate!r}.")
    ratio = Fraction(new / fs).limit_denominator(MAX_DENOMINATOR)
    if ratio == 0 or abs(float(ratio) - new / fs) > 1e-9 * new / fs:
        raise ProcessingError(
            f"{step}: {new:g} Hz / {fs:g} Hz is not a ratio of integers with a denominator up to "
            f"{MAX_DENOMINATOR} (closest: {ratio}). Choose a rate such as {fs * float(ratio):g} Hz."
        )
    params = {"rate": new, "up": ratio.numerator, "down": ratio.denominator}
    n = x.shape[-1]
    if ratio == 1 or n == 0:
        return rebuild(checked, x, q, step=step, params=params, sample_rate=new)
    poly = _Poly.make(ratio.numerator, ratio.denominator, n)
    xb, qb, bad = bridge(x, q)
    value, quality = sweep(
        [xb, qb, bad], functools.partial(_block, poly=poly), label="resample",
        token=(poly.up, poly.down, n), n_out=2, dtypes=(np.float64, np.int8),
        before=poly.reach, after=poly.reach,
        out_len=lambda start, stop: max(0, poly.outputs(start, stop)[1] - poly.outputs(start, stop)[0]),
    )
    t0 = int(checked["time"].values[0].astype("datetime64[ns]").astype(np.int64))
    return rebuild(checked, value, quality, step=step, params=params,
                   times=sample_times(t0, 0, poly.n_out, new), sample_rate=new)
