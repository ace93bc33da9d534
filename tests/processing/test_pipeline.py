"""Pipelines: composed steps, users' own steps (the Processor protocol), lazy apply, and streaming a
saved run file to file out of core; several files opened as one feeding a pipeline."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from numpy.typing import NDArray
from scipy import signal

import daqlab as dl
from daqlab.processing import (
    BandPass,
    Calibrate,
    Decimate,
    HighPass,
    LowPass,
    MovingAverage,
    Pipeline,
    Processor,
    Resample,
)
from tests.processing.helpers import FS, amplitude, assert_within, butter_sos, make, signals

P = dl.processing
GOOD, SUSPECT, BAD, INTERP = (int(q) for q in dl.Quality)
X = signals(3000, seed=5)


class Offset:
    """A user's step: adds a constant to every value; recorded with its ``params``."""

    name = "offset"

    def __init__(self, by: float) -> None:
        self.params = {"by": by}

    def process(self, run: xr.Dataset) -> xr.Dataset:
        return run.assign(value=run["value"] + self.params["by"])


class Explode:
    """A user's step that fails inside dask, when its blocks are computed, not when applied."""

    name = "explode"

    def process(self, run: xr.Dataset) -> xr.Dataset:
        def boom(block: NDArray[np.float64]) -> NDArray[np.float64]:
            if block.size:
                raise RuntimeError("explode: this block cannot be processed")
            return block

        data = da.map_blocks(boom, run["value"].data, dtype=np.float64)  # type: ignore[no-untyped-call]
        return run.assign(value=run["value"].copy(data=data))


def double(run: xr.Dataset) -> xr.Dataset:
    return run.assign(value=run["value"] * 2.0)


def scale(run: xr.Dataset, factor: float) -> xr.Dataset:
    return run.assign(value=run["value"] * factor)


def values(run: xr.Dataset) -> NDArray[np.float64]:
    out: NDArray[np.float64] = run["value"].values
    return out


def steps_and_params(run: xr.Dataset) -> list[tuple[str, dict[str, Any]]]:
    return [(s["step"], s["params"]) for s in P.history(run)]


# --------------------------------------------------------------------------- composing steps


def test_user_steps_functions_and_partials_compose_and_are_recorded() -> None:
    run = make(X)
    pipe = Pipeline([Offset(2.5), double, functools.partial(scale, factor=3.0),
                     functools.partial(P.lowpass, cutoff=50.0), MovingAverage(4)])
    out = pipe.apply(run)
    y = signal.sosfiltfilt(butter_sos("lowpass", {"cutoff": 50.0, "order": 4}), (X + 2.5) * 6.0, axis=-1)
    expected = pd.DataFrame(y.T).rolling(4, min_periods=1).mean().to_numpy().T
    assert_within(values(out), expected, 1e-12, amplitude(expected))
    assert steps_and_params(out) == [
        ("offset", {"by": 2.5}),
        ("double", {}),
        ("scale", {"factor": 3.0}),
        ("lowpass", {"cutoff": 50.0, "order": 4, "zero_phase": True}),  # recorded by lowpass itself
        ("moving_average", {"window": 4, "center": False}),
    ]
    ids = [run.attrs["id"], *[s["input_id"] for s in P.history(out)][1:]]
    assert len(set(ids)) == 5  # each step's input is the run the step before made
    assert pipe.describe() == [
        {"step": "offset", "params": {"by": 2.5}},
        {"step": "double", "params": {}},
        {"step": "scale", "params": {"factor": 3.0}},
        {"step": "lowpass", "params": {"cutoff": 50.0}},
        {"step": "moving_average", "params": {"window": 4, "center": False}},
    ]


def test_the_processor_protocol() -> None:
    assert isinstance(Offset(1.0), Processor)
    assert isinstance(LowPass(5.0), Processor)
    assert isinstance(dl.Processor, type)
    assert dl.Processor is Processor
    assert not isinstance(double, Processor)
    assert not isinstance(object(), Processor)


def test_builtin_steps_equal_their_functions() -> None:
    run = make(X[:, :1000]).chunk({"time": 300})
    pairs: list[tuple[Any, Callable[[xr.Dataset], xr.Dataset]]] = [
        (LowPass(20.0, 2, zero_phase=False), lambda r: P.lowpass(r, 20.0, 2, zero_phase=False)),
        (HighPass(5.0), lambda r: P.highpass(r, 5.0)),
        (BandPass(10.0, 20.0, order=3), lambda r: P.bandpass(r, 10.0, 20.0, 3)),
        (MovingAverage(7, center=True), lambda r: P.moving_average(r, 7, center=True)),
        (Decimate(3), lambda r: P.decimate(r, 3)),
        (Resample(800.0), lambda r: P.resample(r, 800.0)),
        (Calibrate(), P.calibrate),
    ]
    for step, function in pairs:
        a, b = step.process(run), function(run)
        np.testing.assert_array_equal(values(a), values(b))
        np.testing.assert_array_equal(a["quality"].values, b["quality"].values)
        assert steps_and_params(a) == steps_and_params(b)
        assert steps_and_params(a)[0][0] == step.name


def test_repr_describe_and_equality_of_steps() -> None:
    pipe = Pipeline([LowPass(cutoff=50.0), HighPass(0.5, order=2), BandPass(1.0, 2.0),
                     MovingAverage(window=5), Decimate(2), Resample(250.0), Calibrate()])
    assert repr(pipe) == (
        "Pipeline([LowPass(cutoff=50.0, order=4, zero_phase=True), HighPass(cutoff=0.5, order=2, "
        "zero_phase=True), BandPass(low=1.0, high=2.0, order=4, zero_phase=True), "
        "MovingAverage(window=5, center=False), Decimate(factor=2), Resample(rate=250.0), Calibrate()])"
    )
    assert pipe.describe() == [
        {"step": "lowpass", "params": {"cutoff": 50.0, "order": 4, "zero_phase": True}},
        {"step": "highpass", "params": {"cutoff": 0.5, "order": 2, "zero_phase": True}},
        {"step": "bandpass", "params": {"low": 1.0, "high": 2.0, "order": 4, "zero_phase": True}},
        {"step": "moving_average", "params": {"window": 5, "center": False}},
        {"step": "decimate", "params": {"factor": 2}},
        {"step": "resample", "params": {"rate": 250.0}},
        {"step": "calibrate", "params": {}},
    ]
    assert LowPass(5.0) == LowPass(cutoff=5.0, order=4) == LowPass(5.0, zero_phase=True)
    assert LowPass(5.0) != LowPass(5.0, zero_phase=False)
    assert LowPass(5.0) != HighPass(5.0)
    assert LowPass(5.0) != "LowPass(cutoff=5.0, order=4, zero_phase=True)"
    assert Calibrate() == Calibrate()
    assert len({LowPass(5.0), LowPass(cutoff=5.0), MovingAverage(3), MovingAverage(3, center=False)}) == 2
    assert Pipeline([]).apply(make(X[:, :10])).equals(make(X[:, :10]))


def test_apply_with_chunks_is_lazy_and_equals_apply_in_memory() -> None:
    run = make(X)
    pipe = Pipeline([LowPass(30.0), Decimate(2), MovingAverage(5, center=True)])
    lazy = pipe.apply(run, chunks=400)
    assert isinstance(lazy["value"].data, da.Array)
    assert lazy["value"].chunks is not None
    assert lazy["value"].chunks[1] == (200,) * 7 + (100,)
    eager = pipe.apply(run)
    assert isinstance(eager["value"].data, np.ndarray)
    assert_within(values(lazy), values(eager), 1e-9, amplitude(X))
    np.testing.assert_array_equal(lazy["quality"].values, eager["quality"].values)
    assert lazy.attrs["sample_rate"] == eager.attrs["sample_rate"] == FS / 2


def test_each_step_sees_the_run_the_step_before_made() -> None:
    # after decimating by 4 the Nyquist frequency is 125 Hz: a 200 Hz cut-off is refused then
    pipe = Pipeline([Decimate(4), LowPass(200.0)])
    with pytest.raises(dl.ProcessingError, match=r"lowpass: cutoff 200 Hz is at or above the Nyquist "
                       r"frequency of this run \(sample_rate 250 Hz, Nyquist 125 Hz\)"):
        pipe.apply(make(X))
    assert Pipeline([LowPass(200.0), Decimate(4)]).apply(make(X)).attrs["sample_rate"] == 250.0


def test_a_users_step_keeps_everything_it_returned() -> None:
    # a step that only flags samples leaves the calibrated run's raw values valid: they stay, and so
    # do the attributes it set; only the run's id and history are the pipeline's
    def flag_spikes(run: xr.Dataset) -> xr.Dataset:
        spike = np.abs(run["value"]) > 1.0
        out = run.assign(quality=run["quality"].where(~spike, np.int8(SUSPECT)).astype(np.int8))
        out["quality"].attrs = dict(run["quality"].attrs, comment="|value| > 1 is SUSPECT")
        out["value"].attrs["units_note"] = "volts"
        out.attrs["operator"] = "ada"
        return out

    run = dl.calibrate(make(X))
    out = Pipeline([flag_spikes]).apply(run)
    np.testing.assert_array_equal(out["raw"].values, run["raw"].values)
    np.testing.assert_array_equal(out["quality"].values == SUSPECT, np.abs(X) > 1.0)
    assert out["quality"].attrs["comment"] == "|value| > 1 is SUSPECT"
    assert out["value"].attrs["units_note"] == "volts"
    assert out.attrs["operator"] == "ada"
    assert out.attrs["calibrated"] is True
    assert steps_and_params(out) == [("flag_spikes", {})]
    assert out.attrs["id"] != run.attrs["id"]
    assert "operator" not in run.attrs
    assert "units_note" not in run["value"].attrs
    np.testing.assert_array_equal(dl.uncalibrate(out)["value"].values, X)
    dl.validate(out)


@pytest.mark.parametrize(("steps", "pattern"), [
    ([1], r"step 0 of the pipeline is 1 \(int\), which is neither a Processor \(an object with \.name "
     r"and \.process\(run\)\) nor a function run -> run\."),
    ([LowPass(5.0), "lowpass"], r"step 1 of the pipeline is 'lowpass' \(str\), which is neither"),
    ([None], r"step 0 of the pipeline is None \(NoneType\)"),
    ("lowpass", r"Pipeline takes a list of steps; got str\. Example: Pipeline\(\[LowPass\(100\.0\), "
     r"MovingAverage\(10\)\]\)\."),
    (LowPass(5.0), r"Pipeline takes a list of steps; got LowPass\."),
], ids=["int", "text-step", "none", "text", "one-step"])
def test_a_pipeline_of_non_steps_is_refused(steps: Any, pattern: str) -> None:
    with pytest.raises(dl.ProcessingError, match=pattern):
        Pipeline(steps)


@pytest.mark.parametrize(("step", "pattern"), [
    (lambda r: 42, r"step 1 \(<lambda>\) returned int, not a run; a step must return an xarray\.Dataset "
     r"with the daqlab run schema\."),
    (lambda r: r["value"], r"step 1 \(<lambda>\) returned DataArray, not a run"),
    (lambda r: r.drop_vars("quality"), r"(?s)step 1 \(<lambda>\) returned a dataset that is not a run: "
     r".*data variable 'quality' is missing"),
], ids=["int", "dataarray", "no-quality"])
def test_a_step_returning_a_non_run_is_refused(step: Callable[[xr.Dataset], Any], pattern: str) -> None:
    with pytest.raises(dl.ProcessingError, match=pattern):
        Pipeline([MovingAverage(2), step]).apply(make(X[:, :50]))


def test_apply_refuses_a_non_run() -> None:
    with pytest.raises(dl.ProcessingError, match=r"Pipeline\.apply takes a run .*got list\."):
        Pipeline([MovingAverage(2)]).apply([[1.0, 2.0]])  # type: ignore[call-overload]


# --------------------------------------------------------------------------- Pipeline.run, file to file


PIPE = Pipeline([LowPass(40.0), MovingAverage(8), Decimate(2), HighPass(1.0, order=2, zero_phase=False)])


@pytest.fixture
def source(tmp_path: Path) -> Path:
    x, q = X.copy(), np.zeros(X.shape, dtype=np.int8)
    x[1, 1000:1010] = np.nan
    q[2, 2000] = SUSPECT
    return dl.save(make(x, q, name="bench"), tmp_path / "src.nc")


@pytest.mark.parametrize("progress", [False, True], ids=["quiet", "progress-bar"])
def test_run_streams_a_saved_run_into_a_netcdf_file(source: Path, progress: bool,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    dst = source.parent / "out.nc"
    written = PIPE.run(source, dst, chunk_size=700, progress=progress)
    assert written == dst
    err = capsys.readouterr().err
    assert ("daqlab: src.nc -> out.nc" in err) is progress
    assert sorted(p.name for p in source.parent.iterdir()) == ["out.nc", "src.nc"]
    back = dl.open_run(dst)
    expected = PIPE.apply(dl.open_run(source))
    dl.validate(back)
    assert_within(values(back), values(expected), 1e-9, amplitude(X))
    np.testing.assert_array_equal(back["quality"].values, expected["quality"].values)
    assert (back["quality"].values[1] != GOOD).any()
    assert (back["quality"].values[0] == GOOD).all()
    np.testing.assert_array_equal(back["time"].values, expected["time"].values)
    assert back.attrs["sample_rate"] == FS / 2
    assert back.attrs["name"] == "bench"
    assert steps_and_params(back) == steps_and_params(expected) == [
        (d["step"], d["params"]) for d in PIPE.describe()]


def test_run_with_a_lazy_source_in_many_chunks_equals_scipy(tmp_path: Path) -> None:
    src = dl.save(make(X), tmp_path / "clean.h5")
    out = dl.open_run(Pipeline([LowPass(5.0, order=4)]).run(src, tmp_path / "slow.nc", chunk_size=256,
                                                               progress=False))
    expected = signal.sosfiltfilt(butter_sos("lowpass", {"cutoff": 5.0, "order": 4}), X, axis=-1)
    assert_within(values(out), expected, 1e-9, amplitude(X))


def test_run_refuses_to_overwrite(source: Path) -> None:
    dst = source.parent / "out.nc"
    PIPE.run(source, dst, progress=False)
    before = dst.read_bytes()
    with pytest.raises(dl.StorageError, match=r"out\.nc exists already; daqlab does not write over a run "
                       r"by default\. Choose another name, or pass overwrite=True"):
        Pipeline([MovingAverage(3)]).run(source, dst, progress=False)
    assert dst.read_bytes() == before
    Pipeline([MovingAverage(3)]).run(source, dst, overwrite=True, progress=False)
    assert steps_and_params(dl.open_run(dst)) == [("moving_average", {"window": 3, "center": False})]


@pytest.mark.parametrize("progress", [False, True], ids=["quiet", "progress-bar"])
def test_run_writes_nothing_when_a_step_fails_during_compute(source: Path, progress: bool) -> None:
    dst = source.parent / "out.nc"
    pipe = Pipeline([LowPass(40.0), Explode()])
    pipe.apply(dl.open_run(source, chunks={}))  # applying is fine: the failure is in the blocks
    with pytest.raises(RuntimeError, match="explode: this block cannot be processed"):
        pipe.run(source, dst, chunk_size=500, progress=progress)
    assert not dst.exists()
    assert sorted(p.name for p in source.parent.iterdir()) == ["src.nc"]  # no temporary file left


def test_run_keeps_an_existing_file_when_a_step_fails(source: Path) -> None:
    dst = source.parent / "out.nc"
    PIPE.run(source, dst, progress=False)
    before = dst.read_bytes()
    with pytest.raises(RuntimeError, match="explode"):
        Pipeline([Explode()]).run(source, dst, overwrite=True, progress=False)
    assert dst.read_bytes() == before
    assert sorted(p.name for p in source.parent.iterdir()) == ["out.nc", "src.nc"]


@pytest.mark.parametrize(("kwargs", "error", "pattern"), [
    ({"dst": "out.csv"}, dl.ProcessingError, r"Pipeline\.run writes NetCDF \(\.nc or \.h5\) out of core; "
     r"out\.csv asks for csv\. Write \.nc, then `daqlab convert` it"),
    ({"dst": "out.txt"}, dl.FormatError, r"cannot tell the format of 'out\.txt' from its suffix"),
    ({"chunk_size": 0}, dl.ProcessingError, r"chunk_size must be a positive number of samples; got 0\."),
    ({"chunk_size": -5}, dl.ProcessingError, r"chunk_size must be a positive number of samples; got -5\."),
    ({"chunk_size": 2.5}, dl.ProcessingError, r"chunk_size must be .*; got 2\.5\."),
    ({"chunk_size": True}, dl.ProcessingError, r"chunk_size must be .*; got True\."),
    ({"src": "missing.nc"}, dl.StorageError, r"missing\.nc does not exist"),
], ids=["csv", "unknown-suffix", "chunk-zero", "chunk-negative", "chunk-float", "chunk-bool", "no-source"])
def test_run_refuses_bad_arguments(source: Path, kwargs: dict[str, Any], error: type[Exception],
                                   pattern: str) -> None:
    args: dict[str, Any] = {"src": source, "dst": "out.nc", "progress": False, **kwargs}
    args["src"], args["dst"] = source.parent / args["src"], source.parent / args["dst"]
    with pytest.raises(error, match=pattern):
        PIPE.run(**args)
    assert sorted(p.name for p in source.parent.iterdir()) == ["src.nc"]


# --------------------------------------------------------------------------- several files as one


@pytest.mark.parametrize(("pipe", "tol"), [
    (Pipeline([LowPass(5.0, zero_phase=False), MovingAverage(50)]), 1e-12),
    (Pipeline([BandPass(95.0, 105.0, 2, zero_phase=False), Resample(1500.0)]), 1e-12),
    (Pipeline([LowPass(5.0, order=8), Decimate(3), HighPass(2.0, 2)]), 1e-9),
], ids=["causal-moving-average", "causal-resample", "zero-phase-decimate"])
def test_open_runs_over_several_files_equals_the_whole_run(
    tmp_path: Path, pipe: Pipeline, tol: float
) -> None:
    x = X.copy()
    x[0, 995:1010] = np.nan  # a gap across the first file boundary
    whole = make(x)
    for i, (a, b) in enumerate([(0, 1000), (1000, 1700), (1700, 3000)]):
        dl.save(whole.isel(time=slice(a, b)), tmp_path / f"part{i}.nc")
    joined = dl.open_runs(tmp_path / "part*.nc")
    assert isinstance(joined["value"].data, da.Array)
    out, expected = pipe.apply(joined), pipe.apply(whole)
    assert_within(values(out), values(expected), tol, amplitude(X))
    np.testing.assert_array_equal(out["quality"].values, expected["quality"].values)
    np.testing.assert_array_equal(out["time"].values, expected["time"].values)
    assert steps_and_params(out) == steps_and_params(expected)
    assert [s["path"] for s in out.attrs["metadata"]["sources"]] == [
        str(tmp_path / f"part{i}.nc") for i in range(3)]
