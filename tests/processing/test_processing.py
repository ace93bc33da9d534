"""Processing steps against their scipy/pandas references on the whole series, for any chunking;
laziness; the output run; parameter errors; the seed's moving-average bug."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import signal

import daqlab as dl
from daqlab.processing._filters import butterworth
from tests.processing.helpers import FS, Chunking, amplitude, assert_within, butter_sos, make, signals

P = dl.processing
ZERO_PHASE_TOL = 1e-9
EXACT_TOL = 1e-12

IIR_CASES = [
    pytest.param("lowpass", {"cutoff": 5.0, "order": 4}, id="lowpass-0.5%fs-order4"),
    pytest.param("lowpass", {"cutoff": 5.0, "order": 8}, id="lowpass-0.5%fs-order8"),
    pytest.param("lowpass", {"cutoff": 100.0, "order": 1}, id="lowpass-order1"),
    pytest.param("highpass", {"cutoff": 20.0, "order": 2}, id="highpass-order2"),
    pytest.param("bandpass", {"low": 95.0, "high": 105.0, "order": 2}, id="bandpass-narrow"),
]
CHUNKINGS = [Chunking(None), Chunking(150, 1), Chunking(600, 2)]
X = signals(2000)
RUN = make(X)
SHORT_X = signals(400, seed=2)
SHORT_RUN = make(SHORT_X)


def chunk_ids(c: Chunking) -> str:
    return str(c)


def iir_reference(btype: str, params: dict[str, Any], zero_phase: bool,
                  x: NDArray[np.float64]) -> NDArray[np.float64]:
    sos = butter_sos(btype, params)
    out: NDArray[np.float64] = (signal.sosfiltfilt if zero_phase else signal.sosfilt)(sos, x, axis=-1)
    return out


def rolling_reference(x: NDArray[np.float64], window: int, center: bool) -> NDArray[np.float64]:
    frame = pd.DataFrame(x.T).rolling(window, min_periods=1, center=center).mean()
    out: NDArray[np.float64] = frame.to_numpy().T
    return out


def values(run: xr.Dataset) -> NDArray[np.float64]:
    out: NDArray[np.float64] = run["value"].values
    return out


# --------------------------------------------------------------------------- references, any chunking


@pytest.mark.parametrize("chunking", CHUNKINGS, ids=chunk_ids)
@pytest.mark.parametrize("zero_phase", [True, False], ids=["zero-phase", "causal"])
@pytest.mark.parametrize(("btype", "params"), IIR_CASES)
def test_iir_filters_equal_scipy_on_the_whole_series(
    btype: str, params: dict[str, Any], zero_phase: bool, chunking: Chunking
) -> None:
    out = getattr(P, btype)(chunking.apply(RUN), **params, zero_phase=zero_phase).compute()
    expected = iir_reference(btype, params, zero_phase, X)
    assert_within(values(out), expected, ZERO_PHASE_TOL if zero_phase else EXACT_TOL, amplitude(X))
    assert (out["quality"].values == dl.Quality.GOOD).all()


@pytest.mark.parametrize("zero_phase", [True, False], ids=["zero-phase", "causal"])
@pytest.mark.parametrize(("btype", "params"), [
    pytest.param("lowpass", {"cutoff": 100.0, "order": 1}, id="lowpass-order1"),
    pytest.param("lowpass", {"cutoff": 200.0, "order": 2}, id="lowpass-order2"),
    pytest.param("highpass", {"cutoff": 150.0, "order": 2}, id="highpass-order2"),
])
def test_iir_filters_exact_in_chunks_of_seven_samples(btype: str, params: dict[str, Any],
                                                       zero_phase: bool) -> None:
    design = butterworth(btype, (params["cutoff"],), params["order"], FS)
    assert design.memory > 5 * 7  # the backward pass reaches over several chunks
    x = SHORT_X[:, :250]
    out = getattr(P, btype)(Chunking(7, 1).apply(make(x)), **params, zero_phase=zero_phase)
    expected = iir_reference(btype, params, zero_phase, x)
    assert_within(values(out), expected, ZERO_PHASE_TOL if zero_phase else EXACT_TOL, amplitude(x))


def test_the_chunks_tested_are_shorter_than_the_filters_memory() -> None:
    # what "exact across chunks" has to survive: a block's answer depends on far more than the block
    assert butterworth("lowpass", (5.0,), 4, FS).memory > 2000 > 600
    assert butterworth("lowpass", (5.0,), 8, FS).memory > X.shape[1]  # longer than the series
    assert butterworth("bandpass", (95.0, 105.0), 2, FS).memory > 1000 > 600
    assert butterworth("highpass", (20.0,), 2, FS).memory > 150


@pytest.mark.parametrize("chunking", [*CHUNKINGS, Chunking((1, 2, 997, 3, 997), 1)], ids=chunk_ids)
@pytest.mark.parametrize("center", [False, True], ids=["trailing", "centred"])
@pytest.mark.parametrize("window", [1, 2, 5, 64, 700])
def test_moving_average_equals_pandas_rolling_mean(window: int, center: bool,
                                                   chunking: Chunking) -> None:
    out = P.moving_average(chunking.apply(RUN), window, center=center)
    assert_within(values(out), rolling_reference(X, window, center), EXACT_TOL, amplitude(X))


@pytest.mark.parametrize("center", [False, True], ids=["trailing", "centred"])
@pytest.mark.parametrize("window", [3, 20])
def test_moving_average_in_chunks_of_seven_samples(window: int, center: bool) -> None:
    out = P.moving_average(Chunking(7, 2).apply(SHORT_RUN), window, center=center)
    assert_within(values(out), rolling_reference(SHORT_X, window, center), EXACT_TOL,
                  amplitude(SHORT_X))


@pytest.mark.parametrize("chunking", CHUNKINGS, ids=chunk_ids)
@pytest.mark.parametrize("factor", [2, 3, 10])
def test_decimate_equals_scipy_decimate(factor: int, chunking: Chunking) -> None:
    out = P.decimate(chunking.apply(RUN), factor)
    assert_within(values(out), signal.decimate(X, factor, axis=-1), EXACT_TOL, amplitude(X))


@pytest.mark.parametrize("chunking", CHUNKINGS, ids=chunk_ids)
@pytest.mark.parametrize(("up", "down"), [(3, 2), (2, 3), (1, 4), (7, 1), (10, 7)])
def test_resample_equals_scipy_resample_poly(up: int, down: int, chunking: Chunking) -> None:
    out = P.resample(chunking.apply(RUN), FS * up / down)
    assert_within(values(out), signal.resample_poly(X, up, down, axis=-1), EXACT_TOL, amplitude(X))


def test_decimate_and_resample_in_chunks_of_seven_samples() -> None:
    x = SHORT_X[:, :200]
    run = Chunking(7, 1).apply(make(x))
    assert_within(values(P.decimate(run, 3)), signal.decimate(x, 3, axis=-1), EXACT_TOL, amplitude(x))
    assert_within(values(P.resample(run, FS * 3 / 2)), signal.resample_poly(x, 3, 2, axis=-1),
                  EXACT_TOL, amplitude(x))


def test_calibrate_step_gives_physical_values() -> None:
    chans = [dl.Channel("a", "V", calibration=dl.Calibration(slope=2.0, offset=-1.0)),
             dl.Channel("b", "degC", calibration=dl.Calibration(slope=0.5, offset=10.0))]
    raw = X[:2, :100]
    run = dl.make_run(raw, chans, sample_rate=FS)
    out = P.calibrate(run.chunk({"time": 30}))
    np.testing.assert_array_equal(values(out), raw * np.array([[2.0], [0.5]]) + np.array([[-1.0], [10.0]]))
    assert out.attrs["calibrated"] is True
    assert [(s["step"], s["params"], s["input_id"]) for s in P.history(out)] == [
        ("calibrate", {}, run.attrs["id"])]


@st.composite
def chunk_sizes(draw: st.DrawFn, n: int) -> tuple[int, ...]:
    """Random chunk boundaries: sizes from 1 to 60 summing to ``n``."""
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(min(draw(st.integers(1, 60)), n - sum(sizes)))
    return tuple(sizes)


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(chunks=chunk_sizes(240), window=st.integers(1, 90), center=st.booleans(),
       by_channel=st.booleans())
def test_moving_average_any_chunk_boundaries(chunks: tuple[int, ...], window: int, center: bool,
                                             by_channel: bool) -> None:
    x = SHORT_X[:, :240]
    out = P.moving_average(Chunking(chunks, 1 if by_channel else None).apply(make(x)), window,
                           center=center)
    assert_within(values(out), rolling_reference(x, window, center), EXACT_TOL, amplitude(x))


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(chunks=chunk_sizes(240), order=st.integers(1, 6), cutoff=st.sampled_from([5.0, 50.0, 300.0]))
def test_causal_lowpass_any_chunk_boundaries(chunks: tuple[int, ...], order: int, cutoff: float) -> None:
    x = SHORT_X[:, :240]
    out = P.lowpass(Chunking(chunks).apply(make(x)), cutoff, order, zero_phase=False)
    expected = iir_reference("lowpass", {"cutoff": cutoff, "order": order}, False, x)
    assert_within(values(out), expected, EXACT_TOL, amplitude(x))


# --------------------------------------------------------------------------- laziness


STEPS: list[Any] = [
    pytest.param(lambda r: P.lowpass(r, 5.0), id="lowpass"),
    pytest.param(lambda r: P.lowpass(r, 5.0, zero_phase=False), id="lowpass-causal"),
    pytest.param(lambda r: P.highpass(r, 20.0, 2), id="highpass"),
    pytest.param(lambda r: P.bandpass(r, 95.0, 105.0), id="bandpass"),
    pytest.param(lambda r: P.moving_average(r, 10, center=True), id="moving_average"),
    pytest.param(lambda r: P.decimate(r, 3), id="decimate"),
    pytest.param(lambda r: P.resample(r, 1500.0), id="resample"),
    pytest.param(P.calibrate, id="calibrate"),
    pytest.param(P.Pipeline([P.LowPass(50.0), P.MovingAverage(5), P.Decimate(2), P.Resample(250.0)]).apply,
                 id="pipeline"),
]


def leaves(obj: Any) -> Iterator[Any]:
    if isinstance(obj, (list, tuple)):
        for item in obj:
            yield from leaves(item)
    else:
        yield obj


def refuse(dsk: Mapping[Hashable, Any], keys: Sequence[Hashable], **kwargs: Any) -> Any:
    raise AssertionError(f"something was computed: {keys}")


@pytest.mark.parametrize("step", STEPS)
def test_steps_on_an_opened_lazy_run_compute_nothing(step: Callable[[xr.Dataset], xr.Dataset],
                                                     tmp_path: Path) -> None:
    path = dl.save(make(X[:, :400]), tmp_path / "run.nc")
    run = dl.open_run(path, chunks={})
    with dask.config.set(scheduler=refuse):
        with pytest.raises(AssertionError, match="something was computed"):
            run["value"].values  # noqa: B018 (the check checks)
        out = step(run)
    assert isinstance(out["value"].data, da.Array)
    assert isinstance(out["quality"].data, da.Array)
    assert out["value"].chunks is not None


@pytest.mark.parametrize("step", STEPS)
def test_steps_on_a_chunked_run_never_compute_its_samples(step: Callable[[xr.Dataset], xr.Dataset]) -> None:
    # run.chunk() chunks the small per-channel coordinates too: a step may load those (one value
    # per channel), never a sample. dask hands a scheduler an expression, not a dict of keys, so
    # what was computed is judged by what comes back.
    run = make(X[:, :1000]).chunk({"time": 128, "channel": 2})
    channels = run.sizes["channel"]

    def no_samples(dsk: Any, keys: Sequence[Hashable], **kwargs: Any) -> Any:
        results = dask.local.get_sync(dsk, cast(Any, keys), **kwargs)
        sizes = [np.size(r) for r in leaves(results)]
        assert max(sizes, default=0) <= channels, f"samples were computed: arrays of {sizes} values"
        return results

    with dask.config.set(scheduler=no_samples):
        with pytest.raises(AssertionError, match="samples were computed"):
            run["value"].values  # noqa: B018 (the check checks: computing samples is caught)
        out = step(run)
    assert isinstance(out["value"].data, da.Array)
    assert out["value"].chunks is not None


@pytest.mark.parametrize("step", STEPS)
def test_numpy_backed_runs_give_numpy_backed_results(step: Callable[[xr.Dataset], xr.Dataset]) -> None:
    with dask.config.set(scheduler=refuse):
        out = step(make(X[:, :1000]))
    assert isinstance(out["value"].data, np.ndarray)
    assert isinstance(out["quality"].data, np.ndarray)


# --------------------------------------------------------------------------- the output run


def cal_run(n: int = 1000) -> xr.Dataset:
    chans = [dl.Channel("a", "V", range=(-50.0, 50.0), calibration=dl.Calibration(slope=2.0, offset=1.0)),
             dl.Channel("b", "degC"), dl.Channel("c", "Pa", calibration=dl.Calibration(slope=10.0))]
    return dl.make_run(X[:, :n], chans, sample_rate=FS, start="2024-03-01T12:00:00Z", name="bench",
                       metadata={"operator": "Ada"})


@pytest.mark.parametrize("step", STEPS)
def test_output_is_a_valid_run_with_the_same_channels(step: Callable[[xr.Dataset], xr.Dataset]) -> None:
    run = cal_run()
    out = step(run)
    assert dl.validate(out) is out
    assert out.daq.channel_names == ["a", "b", "c"]
    for name in ("unit", "range_min", "range_max", "cal_slope", "cal_offset", "cal_date"):
        xr.testing.assert_identical(out[name], run[name])
    assert out.attrs["id"] != run.attrs["id"]
    assert out.attrs["name"] == "bench"
    assert out.attrs["metadata"]["operator"] == "Ada"
    assert P.history(out)[0]["input_id"] == run.attrs["id"]
    assert "processing" not in run.attrs["metadata"]  # the input is left alone


@pytest.mark.parametrize(("step", "rate"), [
    (lambda r: P.lowpass(r, 50.0), FS), (lambda r: P.moving_average(r, 4), FS),
    (lambda r: P.decimate(r, 4), FS / 4), (lambda r: P.resample(r, 1500.0), 1500.0),
    (lambda r: P.resample(r, 250.0), 250.0), (lambda r: P.resample(r, FS), FS),
], ids=["lowpass", "moving_average", "decimate", "resample-up", "resample-down", "resample-same"])
def test_output_sample_rate_and_times(step: Callable[[xr.Dataset], xr.Dataset], rate: float) -> None:
    run = cal_run(999)
    out = step(run)
    assert out.attrs["sample_rate"] == rate
    t = out["time"].values
    assert t.dtype == np.dtype("datetime64[ns]")
    assert t.size == math.ceil(999 * rate / FS)
    t0 = run["time"].values[0]
    expected = t0 + np.rint(np.arange(t.size) * 1e9 / rate).astype(np.int64).astype("timedelta64[ns]")
    np.testing.assert_array_equal(t, expected)


@pytest.mark.parametrize("factor", [3, 7])
def test_decimate_keeps_every_qth_time(factor: int) -> None:
    times = np.datetime64("2024-01-01", "ns") + np.cumsum(np.r_[0, np.full(499, 1_000_000)
                                                                + np.tile([0, 3], 250)[:499]]).astype(
        "timedelta64[ns]")  # slightly irregular: decimate keeps them, it does not re-stamp
    run = dl.make_run(X[:, :500], 3, sample_rate=FS, times=times)
    out = P.decimate(run.chunk({"time": 64}), factor)
    np.testing.assert_array_equal(out["time"].values, times[::factor])
    assert out.attrs["sample_rate"] == FS / factor


def test_a_filter_on_a_calibrated_run_filters_physical_values_and_drops_raw() -> None:
    run = dl.calibrate(cal_run())
    assert "raw" in run.data_vars
    out = P.lowpass(run, 50.0)
    assert "raw" not in out.data_vars
    assert out.attrs["calibrated"] is True
    phys = values(run)
    assert_within(values(out), iir_reference("lowpass", {"cutoff": 50.0, "order": 4}, True, phys),
                  EXACT_TOL, amplitude(phys))
    with pytest.raises(dl.AlreadyCalibratedError, match="calibrated already"):
        P.calibrate(run)


def test_history_lists_every_step_with_its_parameters() -> None:
    run = cal_run()
    a = P.calibrate(run)
    b = P.bandpass(a, 10.0, 100.0, order=3, zero_phase=False)
    c = P.moving_average(b, 8, center=True)
    d = P.decimate(c, 2)
    e = P.resample(d, 200.0)
    f = P.highpass(e, 1, 2)
    steps = P.history(f)
    assert [(s["step"], s["params"]) for s in steps] == [
        ("calibrate", {}),
        ("bandpass", {"low": 10.0, "high": 100.0, "order": 3, "zero_phase": False}),
        ("moving_average", {"window": 8, "center": True}),
        ("decimate", {"factor": 2}),
        ("resample", {"rate": 200.0, "up": 2, "down": 5}),
        ("highpass", {"cutoff": 1.0, "order": 2, "zero_phase": True}),
    ]
    assert [s["input_id"] for s in steps] == [r.attrs["id"] for r in (run, a, b, c, d, e)]
    assert isinstance(steps[1]["params"]["low"], float)  # given as a number, recorded as float
    for s in steps:
        assert s["daqlab_version"] == dl.__version__
        assert pd.Timestamp(s["at"][:-1]) <= pd.Timestamp(f.attrs["created_at"][:-1])
    assert f.attrs["metadata"][P.HISTORY_KEY] == steps


@pytest.mark.parametrize("suffix", [".nc", ".csv"])
def test_history_survives_save_and_open(tmp_path: Path, suffix: str) -> None:
    out = P.decimate(P.lowpass(cal_run().chunk({"time": 200}), 20.0, zero_phase=False), 2)
    back = dl.open_run(dl.save(out, tmp_path / f"processed{suffix}"))
    assert P.history(back) == P.history(out)
    assert back.attrs["sample_rate"] == FS / 2
    np.testing.assert_allclose(values(back), values(out), rtol=1e-15 if suffix == ".nc" else 1e-12)


# --------------------------------------------------------------------------- bad parameters


def short(n: int) -> xr.Dataset:
    return make(X[:1, :n])


ERRORS = [
    (lambda r: P.lowpass(r, 500.0), r"lowpass: cutoff 500 Hz is at or above the Nyquist frequency of "
     r"this run \(sample_rate 1000 Hz, Nyquist 500 Hz\)\. Allowed: 0 < cutoff < 500 Hz", "at-nyquist"),
    (lambda r: P.lowpass(r, 2000.0), r"cutoff 2000 Hz is at or above the Nyquist", "above-nyquist"),
    (lambda r: P.highpass(r, 0.0), r"highpass: cutoff 0 Hz is not above 0 Hz .*Allowed: 0 < cutoff "
     r"< 500 Hz", "cutoff-zero"),
    (lambda r: P.lowpass(r, -5), r"cutoff -5 Hz is not above 0 Hz", "cutoff-negative"),
    (lambda r: P.lowpass(r, math.nan), r"lowpass: cutoff must be a number; got nan\. Cut-offs are in Hz\.",
     "cutoff-nan"),
    (lambda r: P.lowpass(r, "5"),  # type: ignore[arg-type]
     r"cutoff must be a number; got '5'", "cutoff-text"),
    (lambda r: P.lowpass(r, 1e-4, order=2), r"would remember about [\d,]+ samples .*Decimate the run first",
     "cutoff-too-low"),
    (lambda r: P.lowpass(r, 5.0, order=True), r"lowpass: order must be an integer; got True\. "
     r"The filter order is the number of poles", "order-bool"),
    (lambda r: P.lowpass(r, 5.0, order=0), r"lowpass: order must be at least 1; got 0\.", "order-zero"),
    (lambda r: P.highpass(r, 5.0, order=2.0),  # type: ignore[arg-type]
     r"highpass: order must be an integer; got 2\.0\.",
     "order-float"),
    (lambda r: P.lowpass(r, 5.0, order=41), r"lowpass: order 41 is above 40; .*Use order 2 to 10\.",
     "order-too-high"),
    (lambda r: P.bandpass(r, 30.0, 10.0), r"bandpass: low 30 Hz must be below high 10 Hz; swap them",
     "low-above-high"),
    (lambda r: P.bandpass(r, 10.0, 10.0), r"bandpass: low 10 Hz must be below high 10 Hz", "low-equals-high"),
    (lambda r: P.bandpass(r, 10.0, 500.0), r"bandpass: high 500 Hz is at or above the Nyquist .*"
     r"Allowed: 0 < high < 500 Hz", "high-at-nyquist"),
    (lambda r: P.bandpass(r, 0.0, 50.0), r"bandpass: low 0 Hz is not above 0 Hz", "low-zero"),
    (lambda r: P.moving_average(r, 0), r"moving_average: window must be at least 1; got 0\. "
     r"The window is a number of samples\.", "window-zero"),
    (lambda r: P.moving_average(r, 2.5),  # type: ignore[arg-type]
     r"moving_average: window must be an integer; got 2\.5\.",
     "window-float"),
    (lambda r: P.decimate(r, 0), r"decimate: factor must be at least 1; got 0\. It is the integer ratio",
     "factor-zero"),
    (lambda r: P.decimate(r, 2.5),  # type: ignore[arg-type]
     r"decimate: factor must be an integer; got 2\.5\.", "factor-float"),
    (lambda r: P.resample(r, 1000 * math.pi), r"resample: 3141\.59 Hz / 1000 Hz is not a ratio of integers "
     r"with a denominator up to 1000 \(closest: 355/113\)\. Choose a rate such as", "rate-irrational"),
    (lambda r: P.resample(r, 1000.0 / 1001), r"resample: 0\.999001 Hz / 1000 Hz is not a ratio of integers",
     "rate-large-denominator"),
    (lambda r: P.resample(r, -5.0), r"resample: rate must be above 0 Hz; got -5\.0\.", "rate-negative"),
    (lambda r: P.resample(r, 0), r"resample: rate must be above 0 Hz; got 0\.", "rate-zero"),
    (lambda r: P.resample(r, math.inf), r"resample: rate must be a number; got inf\.", "rate-inf"),
]


@pytest.mark.parametrize(("call", "pattern"), [pytest.param(c, p, id=i) for c, p, i in ERRORS])
def test_bad_parameters_are_refused(call: Callable[[xr.Dataset], Any], pattern: str) -> None:
    run = short(200)
    with pytest.raises(dl.ProcessingError, match=pattern):
        call(run)
    with pytest.raises(dl.ProcessingError, match=pattern):  # the same from a lazy run
        call(run.chunk({"time": 50}))


def test_processing_error_is_a_daqlab_error_and_a_value_error() -> None:
    assert issubclass(dl.ProcessingError, dl.DaqlabError)
    assert issubclass(dl.ProcessingError, ValueError)
    with pytest.raises(ValueError, match="window must be at least 1"):
        P.moving_average(short(5), -1)


@pytest.mark.parametrize(("call", "pattern"), [
    (lambda r: P.lowpass(r, 50.0), r"lowpass: this run has 15 samples per channel; a zero-phase filter of "
     r"this order needs more than 15 \(it extends the series at both ends\)\. Use a longer run, a lower "
     r"order, or zero_phase=False\."),
    (lambda r: P.bandpass(r, 50.0, 60.0, order=8), r"bandpass: this run has 15 samples .*needs more than 51"),
    (lambda r: P.decimate(r, 2), r"decimate: this run has 15 samples per channel; its zero-phase "
     r"anti-aliasing filter needs more than 27 .*Use a longer run\."),
], ids=["lowpass", "bandpass", "decimate"])
def test_zero_phase_on_a_series_too_short(call: Callable[[xr.Dataset], Any], pattern: str) -> None:
    with pytest.raises(dl.ProcessingError, match=pattern):
        call(short(15))
    P.lowpass(short(15), 50.0, zero_phase=False)  # a causal filter needs no padding
    assert P.lowpass(short(16), 50.0).sizes["time"] == 16


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize(("given", "pattern"), [
    (np.zeros((1, 100)), r"takes a run \(an xarray\.Dataset from daqlab\.make_run or daqlab\.open_run\); "
     r"got ndarray\."),
    (None, r"takes a run .*got NoneType\."),
    (xr.Dataset({"value": ("t", np.zeros(5))}), r"(?s)cannot process this dataset: it is not a valid run\..*"
     r"dimensions must be exactly \('channel', 'time'\)"),
], ids=["ndarray", "none", "dataset"])
def test_a_non_run_is_refused(step: Callable[[Any], Any], given: object, pattern: str) -> None:
    with pytest.raises(dl.ProcessingError, match=pattern):
        step(given)


# --------------------------------------------------------------------------- the seed's moving average


def seed_moving_average(data: Sequence[float], window: int) -> list[float]:
    """The seed app's MovingAverage, transcribed: in place, so it averages values it already
    overwrote, and its window ``data[i - window .. i)`` leaves out the current sample."""
    out = list(data)
    for i in range(window, len(out)):
        out[i] = sum(out[i - window : i]) / window
    return out


def test_the_seed_moving_average_bug_is_not_reproduced() -> None:
    ramp = np.arange(1.0, 11.0)
    pandas_mean = pd.Series(ramp).rolling(3, min_periods=1).mean().to_numpy()
    np.testing.assert_allclose(pandas_mean, [1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9])
    seed = seed_moving_average(ramp.tolist(), 3)
    # the seed lags (current sample left out) and then decays toward its own stale outputs
    assert seed[:4] == [1.0, 2.0, 3.0, 2.0]
    assert seed[4] == pytest.approx(7 / 3)
    assert abs(seed[-1] - pandas_mean[-1]) > 6
    for run in (make(ramp[None, :]), make(ramp[None, :]).chunk({"time": 2})):
        ours = values(P.moving_average(run, 3))[0]
        np.testing.assert_allclose(ours, pandas_mean, rtol=1e-15)
        assert not np.allclose(ours, seed)
    # the window holds the current sample: a step shows in the very sample where it happens
    stepped = values(P.moving_average(make(np.r_[np.zeros(5), np.ones(5)][None, :]), 3))[0]
    np.testing.assert_allclose(stepped[4:8], [0.0, 1 / 3, 2 / 3, 1.0], rtol=1e-15)
    assert seed_moving_average([0.0] * 5 + [1.0] * 5, 3)[5] == 0.0  # the seed saw it one sample late
