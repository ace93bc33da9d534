"""The same pipelines on a dask.distributed cluster give the answer of the local threaded scheduler.

One real ``LocalCluster`` (2 worker processes, 1 thread each, no dashboard, so no
port is bound and no "port in use" warning can fire) serves the whole module:
starting one takes seconds. Every computation meant for the cluster is recorded
with ``distributed.get_task_stream`` and must show daqlab's tasks running on
the workers; every reference is computed with ``scheduler="threads"``.
Identical means bit for bit: values (NaN where NaN), quality flags, times.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dask
import numpy as np
import pytest
import xarray as xr
from distributed import Client, LocalCluster, get_task_stream

import daqlab as dl
from daqlab.processing import (
    BandPass,
    Calibrate,
    Decimate,
    HighPass,
    LowPass,
    MovingAverage,
    Resample,
)
from tests.helpers import wait_for

T = TypeVar("T")

RATE = 1000.0
N = 150_000
CHUNK = 40_000  # samples per block along time: four blocks, the last one shorter
SPLITS = (0, 50_000, 90_001, N)  # open_runs: one run saved as three files, consecutive in time


def _make_run() -> xr.Dataset:
    rng = np.random.default_rng(7)
    t = np.arange(N) / RATE
    values = np.stack([
        np.sin(2 * np.pi * 3.0 * t) + 0.3 * rng.normal(size=N),
        rng.normal(size=N).cumsum() / 100,
        np.round(rng.normal(0, 3000, size=N)) * (10 / 32768),
    ])
    # unusable samples: spans across a block's and a file's boundary, and at the start of a channel,
    # bridged and flagged the same way wherever the blocks run
    values[0, CHUNK - 5 : CHUNK + 5] = np.nan
    values[0, SPLITS[1] - 2 : SPLITS[1] + 2] = np.nan
    values[1, :3] = np.nan
    values[2, 123_456] = np.inf
    channels = [
        dl.Channel("ai0", "V"),
        dl.Channel("ai1", "V"),
        dl.Channel("temp", "degC", calibration=dl.Calibration(slope=2.0, offset=-1.0)),
    ]
    return dl.make_run(values, channels, sample_rate=RATE, start="2026-11-24T08:00:00", name="dist")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("distributed")
    run = _make_run()
    whole = dl.save(run, folder / "whole.nc")
    parts = [dl.save(run.isel(time=slice(a, b)), folder / f"part{i}.nc")
             for i, (a, b) in enumerate(itertools.pairwise(SPLITS))]
    return {"folder": folder, "run": run, "whole": whole, "parts": parts}


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A 2-process LocalCluster and its client, the default scheduler while the module runs; the
    worker processes are gone when it ends."""
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    try:
        with Client(cluster) as c:  # type: ignore[no-untyped-call]
            pids = list(c.run(os.getpid).values())
            assert len(pids) == 2
            assert os.getpid() not in pids
            yield c
    finally:
        cluster.close()
    wait_for(lambda: not any(_alive(p) for p in pids), timeout=30.0, what="worker processes to exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def on_cluster(client: Any, compute: Callable[[], T]) -> T:
    """``compute()`` with the client as the default scheduler; checks that daqlab's tasks ran on the
    cluster's workers (and so not on threads of this process)."""
    assert dask.config.get("scheduler") == "dask.distributed"
    with get_task_stream(client) as stream:
        result = compute()
    workers = set(client.scheduler_info()["workers"])
    ours = [t for t in stream.data if "daqlab-" in str(t["key"])]
    assert ours, "no daqlab task ran on the cluster"
    assert {t["worker"] for t in ours} <= workers
    return result


def local(obj: xr.Dataset) -> xr.Dataset:
    result: xr.Dataset = obj.compute(scheduler="threads")
    return result


def assert_identical_runs(got: xr.Dataset, want: xr.Dataset) -> None:
    """Same values (bit for bit, NaN where NaN), flags, times, channels and processing steps."""
    assert got["value"].chunks is None
    assert want["value"].chunks is None
    np.testing.assert_array_equal(got["value"].values, want["value"].values, strict=True)
    np.testing.assert_array_equal(got["quality"].values, want["quality"].values, strict=True)
    np.testing.assert_array_equal(got["time"].values, want["time"].values, strict=True)
    assert list(got["channel"].values) == list(want["channel"].values)
    assert got.attrs["sample_rate"] == want.attrs["sample_rate"]
    steps = [(s["step"], s["params"]) for s in got.attrs["metadata"]["processing"]]
    assert steps == [(s["step"], s["params"]) for s in want.attrs["metadata"]["processing"]]


PIPELINES = {
    "lowpass+average": lambda: dl.Pipeline([LowPass(40.0, order=4), MovingAverage(25)]),
    "calibrate+causal-highpass+bandpass+centred-average": lambda: dl.Pipeline(
        [Calibrate(), HighPass(0.5, order=2, zero_phase=False), BandPass(1.0, 60.0),
         MovingAverage(9, center=True)]),
    "lowpass+decimate": lambda: dl.Pipeline([LowPass(100.0), Decimate(7)]),
    "resample": lambda: dl.Pipeline([Resample(750.0)]),
}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_pipeline_on_an_opened_file_equals_the_threaded_result(
    client: Any, files: dict[str, Any], name: str
) -> None:
    run = dl.open_run(files["whole"], chunks={})  # lazy, in the file's chunks
    out = PIPELINES[name]().apply(run, chunks=CHUNK)
    assert out["value"].data.numblocks == (3, 4)
    assert out["value"].chunks is not None  # lazy: nothing computed yet
    want = local(out)
    got = on_cluster(client, out.compute)
    assert_identical_runs(got, want)
    flags = got["quality"].values
    assert (flags != dl.Quality.GOOD).any()
    assert (flags == dl.Quality.GOOD).any()


@pytest.mark.parametrize("name", ["lowpass+average", "resample"])
def test_pipeline_on_a_run_split_over_files_equals_the_threaded_result(
    client: Any, files: dict[str, Any], name: str
) -> None:
    run = dl.open_runs(files["parts"], chunks={})
    assert run["value"].data.numblocks[-1] == 3  # a block per file: the blocks meet at the files' ends
    np.testing.assert_array_equal(run["time"].values, files["run"]["time"].values)
    out = PIPELINES[name]().apply(run)
    want = local(out)
    got = on_cluster(client, out.compute)
    assert_identical_runs(got, want)
    # and the files' boundaries change nothing beyond round-off: the one-file run in memory
    whole = PIPELINES[name]().apply(files["run"])
    np.testing.assert_array_equal(got["quality"].values, whole["quality"].values)
    np.testing.assert_allclose(got["value"].values, whole["value"].values, rtol=0, atol=1e-9)


def test_pipeline_run_file_to_file_with_the_client_active(client: Any, files: dict[str, Any]) -> None:
    """The workers write the file (xarray's to_netcdf under a distributed lock); they share our disk."""
    folder: Path = files["folder"]
    name = "lowpass+average"
    pipe = PIPELINES[name]()
    chunk = CHUNK
    dst = folder / f"cluster-{name}.nc"
    written = on_cluster(client, lambda: pipe.run(files["whole"], dst, chunk_size=chunk, progress=False))
    assert written == dst
    with dask.config.set(scheduler="threads"):
        ref = pipe.run(files["whole"], folder / f"threads-{name}.nc", chunk_size=chunk, progress=False)
    got, want = dl.open_run(dst), dl.open_run(ref)
    assert_identical_runs(got, want)
    # the same as the pipeline applied lazily in those chunks, in this process
    lazy = pipe.apply(dl.open_run(files["whole"], chunks={}).chunk({"time": chunk}))
    assert_identical_runs(got, local(lazy))
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary left
