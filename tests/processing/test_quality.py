"""The quality rules of the processing steps (see daqlab.processing._quality): unusable samples
(NaN/inf or BAD) are bridged, never poison a series, are flagged wherever they reach, and the
answer does not depend on the chunking."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import signal

import daqlab as dl
from daqlab.processing._filters import Design, antialias, butterworth
from tests.processing.helpers import Chunking, amplitude, assert_within, butter_sos, hold, make, signals

P = dl.processing
GOOD, SUSPECT, BAD, INTERP = (int(q) for q in dl.Quality)
RANK = {GOOD: 0, SUSPECT: 1, INTERP: 2, BAD: 3}
N = 1200
X = signals(N, seed=3)

FILTERS = [
    pytest.param("lowpass", {"cutoff": 50.0, "order": 4}, id="lowpass"),
    pytest.param("highpass", {"cutoff": 30.0, "order": 2}, id="highpass"),
    pytest.param("bandpass", {"low": 40.0, "high": 80.0, "order": 2}, id="bandpass"),
]
CHUNKINGS = [Chunking(None), Chunking(64, 1), Chunking(300, 2)]


def chunk_ids(c: Chunking) -> str:
    return str(c)


def design_of(btype: str, params: dict[str, Any]) -> Design:
    cutoffs = (params["cutoff"],) if "cutoff" in params else (params["low"], params["high"])
    return butterworth(btype, cutoffs, params["order"], 1000.0)


def reference(btype: str, params: dict[str, Any], zero_phase: bool,
              x: NDArray[np.float64]) -> NDArray[np.float64]:
    sos = butter_sos(btype, params)
    out: NDArray[np.float64] = (signal.sosfiltfilt if zero_phase else signal.sosfilt)(sos, x, axis=-1)
    return out


def run_filter(btype: str, params: dict[str, Any], zero_phase: bool, run: xr.Dataset) -> xr.Dataset:
    out: xr.Dataset = getattr(P, btype)(run, **params, zero_phase=zero_phase).compute()
    return out


def flags(run: xr.Dataset) -> NDArray[np.int8]:
    out: NDArray[np.int8] = run["quality"].values
    return out


def values(run: xr.Dataset) -> NDArray[np.float64]:
    out: NDArray[np.float64] = run["value"].values
    return out


def runs_of(flag_row: NDArray[np.int8], flag: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` runs of ``flag`` in one channel's flags."""
    hit = np.r_[False, flag_row == flag, False].astype(np.int8)
    edges = np.flatnonzero(np.diff(hit))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


# --------------------------------------------------------------------------- IIR filters


@pytest.mark.parametrize("chunking", CHUNKINGS, ids=chunk_ids)
@pytest.mark.parametrize("zero_phase", [True, False], ids=["zero-phase", "causal"])
@pytest.mark.parametrize(("btype", "params"), FILTERS)
def test_a_gap_is_bridged_and_its_neighbourhood_flagged(
    btype: str, params: dict[str, Any], zero_phase: bool, chunking: Chunking
) -> None:
    x = X.copy()
    x[0, 500:520] = np.nan
    out = run_filter(btype, params, zero_phase, chunking.apply(make(x)))
    settle = design_of(btype, params).settle
    assert 10 < settle < 300
    # the gap holds the last value before it, and the filter runs on through it
    held = hold(x, np.isnan(x))
    assert np.all(held[0, 500:520] == x[0, 499])
    tol = 1e-9 if zero_phase else 1e-12
    assert_within(values(out), reference(btype, params, zero_phase, held), tol, amplitude(X))
    f = flags(out)
    assert runs_of(f[0], INTERP) == [(500, 520)]
    # causal: only what comes after the gap heard it; zero-phase: both sides
    suspect = [(500 - settle, 500), (520, 520 + settle)] if zero_phase else [(520, 520 + settle)]
    assert runs_of(f[0], SUSPECT) == suspect
    assert not (f[0] == BAD).any()
    assert (f[1:] == GOOD).all()  # other channels untouched
    assert_within(values(out)[1:], reference(btype, params, zero_phase, X[1:]), tol, amplitude(X[1:]))


@pytest.mark.parametrize("chunking", [Chunking(None), Chunking(32, 1), Chunking(500, 2)], ids=chunk_ids)
@pytest.mark.parametrize("zero_phase", [True, False], ids=["zero-phase", "causal"])
def test_samples_before_the_first_usable_one_are_nan_and_bad(zero_phase: bool, chunking: Chunking) -> None:
    params = {"cutoff": 50.0, "order": 4}
    design = design_of("lowpass", params)
    x = X.copy()
    x[0, :40] = np.nan  # longer than the first chunks of 32: a channel starts in a later chunk
    x[1] = np.nan       # a channel with no usable sample at all
    out = run_filter("lowpass", params, zero_phase, chunking.apply(make(x)))
    y, f = values(out), flags(out)
    assert np.isnan(y[0, :40]).all()
    assert np.isfinite(y[0, 40:]).all()  # not poisoned
    assert runs_of(f[0], BAD) == [(0, 40)]
    assert runs_of(f[0], SUSPECT) == [(40, 40 + design.settle)]
    assert (f[0, 40 + design.settle:] == GOOD).all()
    amp = amplitude(X[:1])
    if zero_phase:
        # starts at the first usable sample; the start-up is gone after the filter's memory
        m = 40 + design.memory
        assert_within(y[:1, m:], reference("lowpass", params, True, X[:1, 40:])[:, design.memory:],
                      1e-9, amp)
    else:  # starts at rest at the first usable sample, exactly as sosfilt on what follows
        assert_within(y[:1, 40:], reference("lowpass", params, False, X[:1, 40:]), 1e-12, amp)
    assert np.isnan(y[1]).all()
    assert (f[1] == BAD).all()
    assert (f[2] == GOOD).all()
    assert_within(y[2:], reference("lowpass", params, zero_phase, X[2:]), 1e-9, amplitude(X[2:]))


@pytest.mark.parametrize("zero_phase", [True, False], ids=["zero-phase", "causal"])
def test_bad_flagged_and_infinite_values_are_unusable(zero_phase: bool) -> None:
    x, q = X.copy(), np.zeros(X.shape, dtype=np.int8)
    x[0, 300:303] = 1e6
    q[0, 300:303] = BAD      # finite but flagged BAD: must not reach the output
    x[1, 600] = np.inf
    as_nan = X.copy()
    as_nan[0, 300:303] = np.nan
    as_nan[1, 600] = np.nan
    for chunking in (Chunking(None), Chunking(100, 1)):
        out = P.lowpass(chunking.apply(make(x, q)), 50.0, zero_phase=zero_phase).compute()
        same = P.lowpass(make(as_nan), 50.0, zero_phase=zero_phase)
        np.testing.assert_array_equal(flags(out), flags(same))
        assert_within(values(out), values(same), 1e-9, amplitude(X))
        assert np.abs(values(out)).max() < 2 * np.abs(X).max()  # no trace of 1e6
        assert runs_of(flags(out)[0], INTERP) == [(300, 303)]
        assert runs_of(flags(out)[1], INTERP) == [(600, 601)]


@pytest.mark.parametrize("chunking", [Chunking(None), Chunking(50, 1)], ids=chunk_ids)
@pytest.mark.parametrize("zero_phase", [True, False], ids=["zero-phase", "causal"])
def test_suspect_and_interpolated_input_flags_are_kept(zero_phase: bool, chunking: Chunking) -> None:
    x, q = X.copy(), np.zeros(X.shape, dtype=np.int8)
    q[0, 100], q[0, 200], q[1, 300:305] = SUSPECT, INTERP, SUSPECT
    out = P.lowpass(chunking.apply(make(x, q)), 50.0, zero_phase=zero_phase).compute()
    # usable samples are used as they are and their flags pass through, spreading nowhere
    np.testing.assert_array_equal(flags(out), q)
    assert_within(values(out), reference("lowpass", {"cutoff": 50.0, "order": 4}, zero_phase, X),
                  1e-9, amplitude(X))
    # near a gap: an interpolated input inside the suspect neighbourhood stays interpolated,
    # the worse flag; a suspect input in it stays suspect
    x[2, 600:610] = np.nan
    q[2, 612], q[2, 620] = INTERP, SUSPECT
    f = flags(P.lowpass(chunking.apply(make(x, q)), 50.0, zero_phase=zero_phase))
    assert f[2, 612] == INTERP
    assert f[2, 620] == SUSPECT
    assert (f[2, 600:610] == INTERP).all()
    assert f[2, 611] == SUSPECT
    assert f[2, 613] == SUSPECT


# --------------------------------------------------------------------------- chunking never matters


def messy(n: int, seed: int = 7) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
    """Every kind of bad input at once: a late start, gaps, BAD-flagged and infinite values, an
    all-NaN channel, suspect and interpolated flags."""
    x = signals(n, seed)
    x = np.vstack([x, x[0] * 2.0])
    q = np.zeros(x.shape, dtype=np.int8)
    x[0, :25] = np.nan
    x[0, 90:130] = np.nan
    x[0, n - 10 :] = np.nan  # a gap up to the end
    x[1, 40], x[1, 41], q[1, 150] = np.inf, -np.inf, BAD
    x[2] = np.nan
    rng = np.random.default_rng(seed)
    x[3, rng.choice(n, n // 20, replace=False)] = np.nan
    q[3, rng.choice(n, n // 20, replace=False)] = SUSPECT
    q[3, rng.choice(n, n // 20, replace=False)] = INTERP
    return x, q


MESSY_STEPS = [
    pytest.param(lambda r: P.lowpass(r, 50.0), 1e-9, id="lowpass"),
    pytest.param(lambda r: P.lowpass(r, 50.0, zero_phase=False), 1e-12, id="lowpass-causal"),
    pytest.param(lambda r: P.highpass(r, 30.0, 2), 1e-9, id="highpass"),
    pytest.param(lambda r: P.bandpass(r, 40.0, 80.0, 2, zero_phase=False), 1e-12, id="bandpass-causal"),
    pytest.param(lambda r: P.moving_average(r, 9), 1e-12, id="moving_average"),
    pytest.param(lambda r: P.moving_average(r, 40, center=True), 1e-12, id="moving_average-centred"),
    pytest.param(lambda r: P.decimate(r, 3), 1e-9, id="decimate"),
    pytest.param(lambda r: P.resample(r, 1500.0), 1e-12, id="resample-up"),
    pytest.param(lambda r: P.resample(r, 400.0), 1e-12, id="resample-down"),
]


@pytest.mark.parametrize(("step", "tol"), MESSY_STEPS)
def test_bad_input_gives_the_same_values_and_flags_whatever_the_chunks(
    step: Callable[[xr.Dataset], xr.Dataset], tol: float
) -> None:
    x, q = messy(240)
    whole = step(make(x, q))
    m = whole.sizes["time"]
    assert np.isfinite(values(whole)[0, 180 * m // 240 : 220 * m // 240]).all()  # never poisoned
    assert np.isfinite(values(whole)[[1, 3]]).all()
    assert np.isnan(values(whole)[2]).all()
    assert (flags(whole)[2] == BAD).all()
    assert (np.isnan(values(whole)) <= (flags(whole) == BAD)).all()  # NaN only ever BAD
    scale = np.full((x.shape[0], 1), np.abs(x[np.isfinite(x)]).max())
    for chunking in (Chunking(9, 2), Chunking((1, 24, 2, 100, 73, 40), 1)):
        out = step(chunking.apply(make(x, q))).compute()
        np.testing.assert_array_equal(flags(out), flags(whole), err_msg=str(chunking))
        assert_within(values(out), values(whole), tol, scale)


@st.composite
def chunked_with_holes(draw: st.DrawFn) -> tuple[tuple[int, ...], NDArray[np.float64], NDArray[np.int8]]:
    n = 160
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(min(draw(st.integers(1, 50)), n - sum(sizes)))
    x = signals(n, seed=draw(st.integers(0, 3)))[:2]
    q = np.zeros(x.shape, dtype=np.int8)
    for _ in range(draw(st.integers(0, 6))):
        c, i, length = draw(st.integers(0, 1)), draw(st.integers(0, n - 1)), draw(st.integers(1, 30))
        if draw(st.booleans()):
            x[c, i : i + length] = np.nan
        else:
            q[c, i : i + length] = draw(st.sampled_from([SUSPECT, BAD, INTERP]))
    return tuple(sizes), x, q


@settings(max_examples=12, deadline=None, derandomize=True, database=None)
@given(case=chunked_with_holes(), window=st.integers(1, 60), center=st.booleans())
def test_moving_average_with_holes_any_chunk_boundaries(
    case: tuple[tuple[int, ...], NDArray[np.float64], NDArray[np.int8]], window: int, center: bool
) -> None:
    chunks, x, q = case
    whole = P.moving_average(make(x, q), window, center=center)
    out = P.moving_average(Chunking(chunks, 1).apply(make(x, q)), window, center=center).compute()
    np.testing.assert_array_equal(flags(out), flags(whole))
    np.testing.assert_allclose(values(out), values(whole), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(flags(whole), moving_average_flags(make(x, q), window, center))


@settings(max_examples=12, deadline=None, derandomize=True, database=None)
@given(case=chunked_with_holes(), zero_phase=st.booleans())
def test_lowpass_with_holes_any_chunk_boundaries(
    case: tuple[tuple[int, ...], NDArray[np.float64], NDArray[np.int8]], zero_phase: bool
) -> None:
    chunks, x, q = case
    whole = P.lowpass(make(x, q), 150.0, 2, zero_phase=zero_phase)
    out = P.lowpass(Chunking(chunks).apply(make(x, q)), 150.0, 2, zero_phase=zero_phase).compute()
    np.testing.assert_array_equal(flags(out), flags(whole))
    np.testing.assert_allclose(values(out), values(whole), rtol=0, atol=1e-9 * 4)


# --------------------------------------------------------------------------- moving average


def moving_average_flags(run: xr.Dataset, window: int, center: bool) -> NDArray[np.int8]:
    """moving_average's flag rules written out sample by sample."""
    x, q = values(run), flags(run)
    unusable = ~np.isfinite(x) | (q == BAD)
    before, after = (window // 2, (window - 1) // 2) if center else (window - 1, 0)
    out = q.copy()
    for c in range(x.shape[0]):
        for i in range(x.shape[1]):
            lo, hi = max(0, i - before), min(x.shape[1], i + after + 1)
            usable = int((~unusable[c, lo:hi]).sum())
            f = INTERP if unusable[c, i] else int(q[c, i])
            if usable < hi - lo and RANK[f] < RANK[SUSPECT]:
                f = SUSPECT
            out[c, i] = BAD if usable == 0 else f
    return out


@pytest.mark.parametrize("chunking", [Chunking(None), Chunking(13, 1)], ids=chunk_ids)
@pytest.mark.parametrize("center", [False, True], ids=["trailing", "centred"])
@pytest.mark.parametrize("window", [1, 4, 25])
def test_moving_average_leaves_out_unusable_samples_as_pandas_leaves_out_nan(
    window: int, center: bool, chunking: Chunking
) -> None:
    x, q = messy(300)
    run = make(x, q)
    out = P.moving_average(chunking.apply(run), window, center=center).compute()
    as_nan = np.where(~np.isfinite(x) | (q == BAD), np.nan, x)
    expected = pd.DataFrame(as_nan.T).rolling(window, min_periods=1, center=center).mean().to_numpy().T
    assert_within(values(out), expected, 1e-12, np.nanmax(np.abs(as_nan)) * np.ones((4, 1)))
    np.testing.assert_array_equal(flags(out), moving_average_flags(run, window, center))


def test_moving_average_flags_on_a_small_example() -> None:
    x = np.array([[1.0, 2.0, np.nan, 4.0, 5.0, 6.0, np.nan, np.nan, np.nan, 7.0]])
    q = np.array([[0, SUSPECT, 0, 0, 0, 0, 0, 0, 0, INTERP]], dtype=np.int8)
    out = P.moving_average(make(x, q), 2)
    np.testing.assert_array_equal(values(out), [[1.0, 1.5, 2.0, 4.0, 4.5, 5.5, 6.0, np.nan, np.nan, 7.0]])
    # at a NaN with a usable neighbour: INTERPOLATED; next to one: SUSPECT; nothing usable: BAD;
    # flags given on input kept unless worse
    assert flags(out).tolist() == [[GOOD, SUSPECT, INTERP, SUSPECT, GOOD, GOOD, INTERP, BAD, BAD, INTERP]]


# --------------------------------------------------------------------------- decimate and resample


@pytest.mark.parametrize("chunking", [Chunking(None), Chunking(64, 1)], ids=chunk_ids)
def test_decimate_bridges_and_flags_as_its_filter_does(chunking: Chunking) -> None:
    x = X.copy()
    x[0, 500:520] = np.nan
    x[1, :30] = np.nan
    out = P.decimate(chunking.apply(make(x)), 4).compute()
    held = hold(x, np.isnan(x))
    y, f = values(out), flags(out)
    assert_within(y[[0, 2]], signal.decimate(held[[0, 2]], 4, axis=-1), 1e-12, amplitude(X[[0, 2]]))
    settle = antialias(4).settle
    kept = np.arange(0, N, 4)  # the input sample behind each output
    expected0 = np.where((kept >= 500) & (kept < 520), INTERP,
                         np.where((kept >= 500 - settle) & (kept < 520 + settle), SUSPECT, GOOD))
    np.testing.assert_array_equal(f[0], expected0)
    assert np.isnan(y[1, kept < 30]).all()
    assert (f[1, kept < 30] == BAD).all()
    assert np.isfinite(y[1, kept >= 30]).all()
    np.testing.assert_array_equal(f[1, kept >= 30], np.where(kept[kept >= 30] < 30 + settle, SUSPECT, GOOD))
    assert (f[2] == GOOD).all()


@pytest.mark.parametrize("chunking", [Chunking(None), Chunking(64, 1)], ids=chunk_ids)
@pytest.mark.parametrize(("up", "down"), [(3, 2), (1, 4)])
def test_resample_bridges_and_flags_every_output_a_bad_sample_reaches(
    up: int, down: int, chunking: Chunking
) -> None:
    x = X.copy()
    x[0, 500:520] = np.nan
    out = P.resample(chunking.apply(make(x)), 1000.0 * up / down).compute()
    held = hold(x, np.isnan(x))
    y, f = values(out), flags(out)
    assert_within(y, signal.resample_poly(held, up, down, axis=-1), 1e-12, amplitude(X))
    anchor = np.arange(y.shape[1]) * down // up  # the input sample at or before each output
    np.testing.assert_array_equal(f[0] == INTERP, (anchor >= 500) & (anchor < 520))
    # every output the gap can reach is flagged: fill the gap otherwise, see what moves
    other = held.copy()
    other[0, 500:520] = 1e3
    moved = np.abs(signal.resample_poly(other[0], up, down) - y[0]) > 1e-12 * 1e3
    assert moved.sum() > 20
    assert (f[0][moved] != GOOD).all()
    suspect = runs_of(f[0], SUSPECT)
    assert len(suspect) == 2
    assert suspect[0][1] == runs_of(f[0], INTERP)[0][0]
    assert (f[1:] == GOOD).all()


@pytest.mark.parametrize("chunking", [Chunking(None), Chunking(7, 1), Chunking(64, 2)], ids=chunk_ids)
def test_resample_after_a_late_start(chunking: Chunking) -> None:
    # before the first usable sample: NaN and BAD; from it on: finite, as resample_poly of a
    # series that starts there (zero-padded before it, as resample_poly pads any series)
    x = X[:, :300].copy()
    x[0, :10] = np.nan
    out = P.resample(chunking.apply(make(x)), 1500.0).compute()
    y, f = values(out), flags(out)
    assert np.isnan(y[0, :15]).all()
    assert (f[0, :15] == BAD).all()
    assert np.isfinite(y[0, 15:]).all()
    assert f[0, 15] == SUSPECT
    assert f[0, -1] == GOOD
    expected = signal.resample_poly(np.where(np.isnan(x), 0.0, x), 3, 2, axis=-1)
    expected[0, :15] = np.nan
    assert_within(y, expected, 1e-12, amplitude(X))
