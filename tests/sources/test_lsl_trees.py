"""Several LSL streams at different rates, with markers, recorded by one DataManager into one
tree: every sample exact in its own node, the clock offsets kept with each recording, the
markers an events node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import daqlab as dl
from daqlab.sources import LSL
from daqlab.tree import events_nodes, run_nodes
from tests.helpers import node, wait_for
from tests.sources.test_lsl import PATIENCE, Outlet, make, outlets, pylsl, unique

__all__ = ["outlets"]  # the fixture, used by name below


def test_several_lsl_streams_at_different_rates_record_into_one_tree(
        tmp_path: Path, outlets: list[Outlet]) -> None:
    eeg = make(outlets, 4, 500.0, labels=["Fz", "Cz", "Pz", "Oz"], units=["uV"] * 4)
    temp = make(outlets, 1, 10.0, labels=["skin"], units=["degC"])
    mname = unique("markers")
    moutlet: Any = pylsl.StreamOutlet(pylsl.StreamInfo(mname, "Markers", 1, 0.0, "string",
                                                       unique("sid")))
    sources = {"eeg": LSL(source_id=eeg.source_id, markers={"name": mname}, timeout=PATIENCE),
               "temp": LSL(source_id=temp.source_id, timeout=PATIENCE)}
    n_eeg, n_temp = 1000, 20  # two seconds of each
    dm = dl.DataManager(sources, name="lab", output_dir=tmp_path, autosave_interval=None,
                        handle_sigint=False)
    with dm:
        assert moutlet.wait_for_consumers(PATIENCE)
        eeg.run(n_eeg)
        temp.run(n_temp)
        wait_for(lambda: eeg.pushed > 0, PATIENCE, "the first EEG samples")
        moutlet.push_sample(["stimulus on"], eeg.base + 0.5)
        moutlet.push_sample(["stimulus off"], eeg.base + 1.5)
        wait_for(lambda: (dm.buffers["eeg"].written >= n_eeg and dm.buffers["temp"].written >= n_temp)
                 or bool(dm.errors), 2 * PATIENCE, "every sample of both streams")
        wait_for(lambda: sources["eeg"].markers.sizes["event"] >= 2, PATIENCE, "the two markers")
        eeg.finish()
        temp.finish()
        live = dm.snapshot_tree()
    assert dm.errors == {}
    assert sorted(live.children) == ["eeg", "eeg_markers", "temp"]
    assert live["eeg_markers"].to_dataset()["label"].values.tolist() == ["stimulus on", "stimulus off"]
    assert dm.session_path is not None
    tree = dl.open_tree(dm.session_path)
    for key, out, n in (("eeg", eeg, n_eeg), ("temp", temp, n_temp)):
        run = node(tree, key)
        assert run.sizes["time"] == n and run.attrs["sample_rate"] == out.rate  # noqa: PT018
        np.testing.assert_array_equal(run["value"].values, out.values(0, n))
        offsets = run.attrs["metadata"]["source_run"]["clock_offsets"]
        assert offsets and run.attrs["metadata"]["source_run"]["samples"] == n  # noqa: PT018
    assert node(tree, "eeg")["unit"].values.tolist() == ["uV"] * 4
    assert node(tree, "eeg").attrs["metadata"]["source_run"]["markers"] == 2
    whole = dl.open_tree(dm.export_session())
    assert sorted(run_nodes(whole)) == ["/eeg", "/temp"]
    (markers,) = events_nodes(whole).values()
    assert markers["label"].values.tolist() == ["stimulus on", "stimulus off"]
    one = dl.align(whole)  # the EEG's base: the temperature interpolated onto it
    assert one.daq.channel_names == ["Fz", "Cz", "Pz", "Oz", "skin"]
    del moutlet


@pytest.mark.parametrize("rate", [250.0])
def test_run_metadata_reaches_snapshots_after_stop(rate: float, tmp_path: Path,
                                                   outlets: list[Outlet]) -> None:
    out = make(outlets, 2, rate)
    src = LSL(source_id=out.source_id, timeout=PATIENCE)
    with dl.DataManager(src, record=False, output_dir=tmp_path, autosave_interval=None,
                        handle_sigint=False) as dm:
        out.run(50)
        wait_for(lambda: dm.buffers[src.name].written >= 50, PATIENCE, "50 samples")
        out.finish()
    meta = dm.snapshot().attrs["metadata"]
    assert meta["source_run"]["samples"] == 50
    assert meta["source_run"]["clock_reference"]["utc"].endswith("Z")
