"""IIR filters (Butterworth low/high/band-pass) and anti-aliased decimation, exact across chunks.

Reference semantics, per channel, for finite input (tested against scipy on
the whole series for many chunk sizes):

- ``zero_phase=True``: ``scipy.signal.sosfiltfilt(sos, x)``. The forward pass
  carries the filter state from chunk to chunk (exact); the backward pass of a
  chunk starts ``memory`` samples after it, where the filter's impulse
  response has decayed below 1e-13 of its peak, from the steady state of the
  value there (near the end of the series it starts from the end, exactly as
  sosfiltfilt does). The difference is far below 1e-9 of the signal's size.
- ``zero_phase=False``: ``scipy.signal.sosfilt(sos, x)``, the state carried
  across chunks: equal to round-off (in fact bit for bit).
- ``decimate(run, q)``: ``scipy.signal.decimate(x, q)`` (Chebyshev I of order 8,
  zero phase, every q-th sample).

Unusable samples (NaN/inf or BAD) are bridged first; see
:mod:`daqlab.processing._quality` for the rules.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from numpy.typing import NDArray
from scipy import signal

from daqlab.errors import ProcessingError
from daqlab.model import Quality
from daqlab.processing._blocks import Span, is_lazy, sweep
from daqlab.processing._quality import bridge, near, worst
from daqlab.processing._runs import check_number, rebuild, source_arrays

__all__ = ["Design", "bandpass", "decimate", "filter_run", "highpass", "lowpass"]

MEMORY_LEVEL = 1e-13
"""The backward pass of a zero-phase filter looks ahead until the impulse response is below this."""
SETTLE_LEVEL = 1e-3
"""Outputs within the span where the impulse response is above this (relative to its peak) of an
unusable input are flagged SUSPECT."""
MAX_MEMORY = 50_000_000
MAX_ORDER = 40


@dataclass(frozen=True)
class Design:
    """A filter in second-order sections and the lengths the chunked algorithms need."""

    sos: NDArray[np.float64]
    zi: NDArray[np.float64]  # steady-state initial conditions for a unit step (sosfilt_zi)
    memory: int
    settle: int
    padlen: int  # sosfiltfilt's default odd-extension length


def _design(sos: NDArray[np.float64], what: str) -> Design:
    # the poles are the roots of each section's denominator; sos2zpk would also factor the
    # numerators and warn (BadCoefficients) on the tiny gains of a low cut-off's first section
    poles = np.concatenate([np.roots(section[3:]) for section in sos])
    radius = float(np.max(np.abs(poles))) if poles.size else 0.0
    if radius >= 1.0:
        raise ProcessingError(f"{what} is unstable (a pole at radius {radius:.6f}); choose a lower order.")
    guess = 8 * sos.shape[0] + 16
    if radius > 0:
        guess += math.ceil(math.log(MEMORY_LEVEL * 1e-3) / math.log(radius))
    if guess > MAX_MEMORY:
        raise ProcessingError(
            f"{what} would remember about {guess:,} samples (its cut-off is very low against the "
            "sample rate), more than daqlab lets a chunked filter look ahead. Decimate the run first "
            "(daqlab.processing.decimate) and filter the slower series."
        )
    impulse = np.zeros(guess)
    impulse[0] = 1.0
    env = np.abs(signal.sosfilt(sos, impulse))
    peak = env.max()
    memory = int(np.flatnonzero(env > MEMORY_LEVEL * peak)[-1]) + 1
    settle = int(np.flatnonzero(env > SETTLE_LEVEL * peak)[-1]) + 1
    ntaps = 2 * sos.shape[0] + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return Design(sos, signal.sosfilt_zi(sos), memory, settle, 3 * ntaps)


@functools.lru_cache(maxsize=128)
def butterworth(btype: str, cutoff: tuple[float, ...], order: int, fs: float) -> Design:
    wn = cutoff[0] if len(cutoff) == 1 else list(cutoff)
    sos = signal.butter(order, wn, btype=btype, fs=fs, output="sos")
    return _design(sos, f"a {btype} Butterworth filter of order {order} at {cutoff} Hz (fs {fs:g} Hz)")


@functools.lru_cache(maxsize=64)
def antialias(q: int) -> Design:
    """scipy.signal.decimate's default anti-aliasing filter for factor ``q``."""
    return _design(signal.cheby1(8, 0.05, 0.8 / q, output="sos"), f"the anti-aliasing filter for factor {q}")


def _check_order(step: str, order: object) -> int:
    o: int = check_number(step, "order", order, integer=True, minimum=1,
                          hint="The filter order is the number of poles: 1 or more, 4 is usual.")
    if o > MAX_ORDER:
        raise ProcessingError(f"{step}: order {o} is above {MAX_ORDER}; such filters are numerically "
                              "fragile even in second-order sections. Use order 2 to 10.")
    return o


def check_cutoff(step: str, name: str, value: object, fs: float) -> float:
    """A cut-off strictly between 0 and the Nyquist frequency of a run sampled at ``fs``."""
    f: float = check_number(step, name, value, hint="Cut-offs are in Hz.")
    nyquist = fs / 2
    if not 0 < f < nyquist:
        where = "at or above the Nyquist frequency" if f >= nyquist else "not above 0 Hz"
        raise ProcessingError(
            f"{step}: {name} {f:g} Hz is {where} of this run (sample_rate {fs:g} Hz, Nyquist "
            f"{nyquist:g} Hz). Allowed: 0 < {name} < {nyquist:g} Hz; choose a cut-off in that range."
        )
    return f


def _forward(
    arrays: list[NDArray[Any]], span: Span, state: Any, *, design: Design, steady: bool
) -> tuple[tuple[NDArray[np.float64]], Any]:
    """sosfilt with the state carried (a scan). A channel starts at its first finite sample, from rest
    (``steady=False``, as sosfilt) or from the steady state of that value (sosfiltfilt's forward pass)."""
    x = arrays[0]
    channels, n = x.shape
    if state is None:
        state = (np.zeros((design.sos.shape[0], channels, 2)), np.zeros(channels, dtype=bool))
    z, started = state[0].copy(), state[1].copy()
    begin = np.zeros(channels, dtype=np.int64)
    new = np.flatnonzero(~started)
    if new.size:
        finite = np.isfinite(x[new])
        has = finite.any(axis=-1)
        first = np.where(has, finite.argmax(axis=-1), n)
        begin[new] = first
        for c, b in zip(new[has], first[has], strict=True):
            z[:, c, :] = design.zi * x[c, b] if steady else 0.0
        started[new[has]] = True
    if not begin.any():
        y, z = signal.sosfilt(design.sos, x, zi=z)
        return (y,), (z, started)
    y = np.full(x.shape, np.nan)
    whole = np.flatnonzero(begin == 0)
    if whole.size:
        y[whole], z[:, whole] = signal.sosfilt(design.sos, x[whole], zi=z[:, whole])
    for c in np.flatnonzero((begin > 0) & (begin < n)):
        b = begin[c]
        y[c, b:], z[:, c] = signal.sosfilt(design.sos, x[c, b:], zi=z[:, c])
    return (y,), (z, started)


def _backward(
    arrays: list[NDArray[Any]], span: Span, state: Any, *, design: Design
) -> tuple[tuple[NDArray[np.float64]], None]:
    """The reverse pass of sosfiltfilt over a block and the ``memory`` samples after it, started from
    the steady state of the last value it sees (the true end of the series, or far enough ahead)."""
    rev = arrays[0][:, ::-1]
    z = design.zi[:, None, :] * rev[:, 0][None, :, None]
    out, _ = signal.sosfilt(design.sos, rev, zi=z)
    return (out[:, ::-1][:, : span.size],), None


def _flag(
    arrays: list[NDArray[Any]], span: Span, state: Any, *, before: int, after: int
) -> tuple[tuple[NDArray[np.int8]], None]:
    """Bridged flags of the core, made SUSPECT where an unusable input lies within reach."""
    flags, bad = arrays
    core = flags[:, span.core]
    hit = near(bad, before, after, span)
    if not hit.any():
        return (core,), None
    return (worst(core, np.where(hit, np.int8(Quality.SUSPECT), np.int8(Quality.GOOD))),), None


def _odd_ext(x: Any, n: int) -> Any:
    """scipy.signal's odd extension by ``n`` samples at both ends (numpy or dask)."""
    lib: Any = da if is_lazy(x) else np
    left = 2 * x[:, :1] - x[:, n:0:-1]
    right = 2 * x[:, -1:] - x[:, -2 : -(n + 2) : -1]
    return lib.concatenate([left, x, right], axis=-1)


def filter_run(
    x: Any, q: Any, design: Design, *, zero_phase: bool, step: str, params: dict[str, Any]
) -> tuple[Any, Any]:
    """Filter every channel of a checked run's ``value`` and ``quality`` arrays (numpy or dask);
    returns the filtered values and their flags."""
    n = x.shape[-1]
    token = (design.sos.tobytes(), zero_phase)
    if n == 0:
        return x, q
    xb, qb, bad = bridge(x, q)
    if zero_phase:
        if n <= design.padlen:
            # decimate has no order or zero_phase to change: only a longer run helps
            what, fix = (("a zero-phase filter of this order",
                          "a longer run, a lower order, or zero_phase=False") if "order" in params
                         else ("its zero-phase anti-aliasing filter", "a longer run"))
            raise ProcessingError(
                f"{step}: this run has {n} samples per channel; {what} needs more than "
                f"{design.padlen} (it extends the series at both ends). Use {fix}."
            )
        ext = _odd_ext(xb, design.padlen)
        (yf,) = sweep([ext], functools.partial(_forward, design=design, steady=True), label="sosfilt",
                      token=token, n_out=1, dtypes=(np.float64,), carry=True)
        (yb,) = sweep([yf], functools.partial(_backward, design=design), label="sosfilt-back",
                      token=token, n_out=1, dtypes=(np.float64,), after=design.memory)
        y = yb[:, design.padlen : design.padlen + n]
        reach = (design.settle, design.settle)
    else:
        (y,) = sweep([xb], functools.partial(_forward, design=design, steady=False), label="sosfilt",
                     token=token, n_out=1, dtypes=(np.float64,), carry=True)
        reach = (design.settle, 0)
    (flags,) = sweep([qb, bad], functools.partial(_flag, before=reach[0], after=reach[1]),
                     label="flag-near", token=reach, n_out=1, dtypes=(np.int8,),
                     before=reach[0], after=reach[1])
    return y, flags


def _iir(run: xr.Dataset, btype: str, cutoffs: dict[str, object], order: object,
         zero_phase: bool) -> xr.Dataset:
    step = btype
    checked, x, q = source_arrays(run, step)
    fs = float(checked.attrs["sample_rate"])
    o = _check_order(step, order)
    values = tuple(check_cutoff(step, k, v, fs) for k, v in cutoffs.items())
    if len(values) == 2 and values[0] >= values[1]:
        raise ProcessingError(
            f"{step}: low {values[0]:g} Hz must be below high {values[1]:g} Hz; swap them, or use "
            "lowpass/highpass for a one-sided filter."
        )
    design = butterworth(btype, values, o, fs)
    params = {**dict(zip(cutoffs, values, strict=True)), "order": o, "zero_phase": bool(zero_phase)}
    y, flags = filter_run(x, q, design, zero_phase=zero_phase, step=step, params=params)
    return rebuild(checked, y, flags, step=step, params=params)


def lowpass(run: xr.Dataset, cutoff: float, order: int = 4, *, zero_phase: bool = True) -> xr.Dataset:
    """Butterworth low-pass filter of every channel; lazy on dask-backed runs.

    Parameters
    ----------
    run : xarray.Dataset
        A run (raw or calibrated; the values are filtered as they are).
    cutoff : float
        -3 dB frequency in Hz, between 0 and the Nyquist frequency.
    order : int
        Filter order (applied twice when ``zero_phase``).
    zero_phase : bool
        True: forward and backward (``scipy.signal.sosfiltfilt``), no delay.
        False: causal (``scipy.signal.sosfilt``), as a live filter would be.

    Examples
    --------
    >>> import daqlab as dl
    >>> t = np.arange(1000) / 1000.0
    >>> run = dl.make_run([np.sin(2 * np.pi * 5 * t) + np.sin(2 * np.pi * 200 * t)], ["ai0"],
    ...                   sample_rate=1000.0)
    >>> slow = dl.processing.lowpass(run, cutoff=20.0)
    >>> bool(abs(slow.value[0, 500:600] - np.sin(2 * np.pi * 5 * t[500:600])).max() < 0.01)
    True
    >>> slow.attrs["metadata"]["processing"][-1]["params"]
    {'cutoff': 20.0, 'order': 4, 'zero_phase': True}
    """
    return _iir(run, "lowpass", {"cutoff": cutoff}, order, zero_phase)


def highpass(run: xr.Dataset, cutoff: float, order: int = 4, *, zero_phase: bool = True) -> xr.Dataset:
    """Butterworth high-pass filter of every channel; see :func:`lowpass` for the parameters.

    >>> import daqlab as dl
    >>> run = dl.make_run([np.full(500, 3.0)], ["dc"], sample_rate=100.0)
    >>> float(abs(dl.processing.highpass(run, 1.0).value).max()) < 1e-9
    True
    """
    return _iir(run, "highpass", {"cutoff": cutoff}, order, zero_phase)


def bandpass(run: xr.Dataset, low: float, high: float, order: int = 4, *,
             zero_phase: bool = True) -> xr.Dataset:
    """Butterworth band-pass filter between ``low`` and ``high`` Hz; see :func:`lowpass`.

    >>> import daqlab as dl
    >>> run = dl.make_run([np.zeros(200)], ["a"], sample_rate=100.0)
    >>> dl.processing.bandpass(run, 30.0, 10.0)
    Traceback (most recent call last):
    ...
    daqlab.errors.ProcessingError: bandpass: low 30 Hz must be below high 10 Hz; swap them, ...
    """
    return _iir(run, "bandpass", {"low": low, "high": high}, order, zero_phase)


def _pick(arrays: list[NDArray[Any]], span: Span, state: Any, *, q: int) -> tuple[tuple[Any, ...], None]:
    """Every q-th sample counted from the start of the series."""
    offset = (-span.start) % q
    return tuple(a[:, offset::q] for a in arrays), None


def decimate(run: xr.Dataset, factor: int) -> xr.Dataset:
    """Anti-aliased down-sampling by an integer ``factor``; lazy on dask-backed runs.

    Equals ``scipy.signal.decimate(x, factor)`` per channel: a Chebyshev type I
    filter of order 8 at 0.8 of the new Nyquist frequency, run forward and
    backward, then every ``factor``-th sample (the first one included). The
    sample rate is divided by ``factor`` and the times are those of the kept
    samples.

    >>> import daqlab as dl
    >>> run = dl.make_run([np.arange(100.0)], ["a"], sample_rate=100.0)
    >>> slow = dl.processing.decimate(run, 4)
    >>> slow.sizes["time"], slow.attrs["sample_rate"]
    (25, 25.0)
    """
    step = "decimate"
    checked, x, q_in = source_arrays(run, step)
    q: int = check_number(step, "factor", factor, integer=True, minimum=1,
                          hint="It is the integer ratio of the old to the new sample rate.")
    fs = float(checked.attrs["sample_rate"])
    params = {"factor": q}
    if q == 1:
        return rebuild(checked, x, q_in, step=step, params=params)
    y, flags = filter_run(x, q_in, antialias(q), zero_phase=True, step=step, params=params)
    value, quality = sweep([y, flags], functools.partial(_pick, q=q), label="decimate", token=q, n_out=2,
                           dtypes=(np.float64, np.int8),
                           out_len=lambda start, stop: -(-stop // q) - -(-start // q))
    return rebuild(checked, value, quality, step=step, params=params,
                   times=checked["time"].values[::q], sample_rate=fs / q)
