"""Captures recorded into a folder: reopened stacked and as a tree equal to what was captured,
after a clean stop and after a SIGKILL, and listed by the catalog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import daqlab as dl
from daqlab.io import open_captures
from tests.helpers import wait_for


def square_with_index(n: int, half: int, start: int = 0) -> np.ndarray:
    """Channel a: a square wave (rising edges at half, 3 half... of the write counter); b: the
    write counter itself, so every capture's samples say where they came from."""
    index = np.arange(start, start + n, dtype=float)
    return np.vstack([np.where((index // half) % 2 == 0, -1.0, 1.0), index])


def test_recorded_captures_reopen_stacked_and_as_a_tree(tmp_path: Path) -> None:
    buf = dl.RingBuffer(["a", dl.Channel("b", "V")], 100_000, 1000.0, start="2024-01-01")
    trig = dl.Trigger("a", 0.0, pre=0.004, post=0.006)
    caps = dl.Captures(buf, trig, record=tmp_path / "scope", flush_interval=0.0)
    assert caps.folder == tmp_path / "scope.daqcap"
    for a in range(0, 20_000, 1000):
        buf.push(square_with_index(1000, 50, a))
    wait_for(lambda: caps.count == 200, what="200 captures")
    caps.close()
    got = list(caps)
    assert caps.recorded == 200
    stacked = open_captures(caps.folder)
    assert dict(stacked.sizes) == {"capture": 200, "channel": 2, "sample": 10}
    np.testing.assert_array_equal(stacked["value"].values, np.stack([c["value"].values for c in got]))
    np.testing.assert_array_equal(stacked["quality"].values, np.stack([c["quality"].values for c in got]))
    np.testing.assert_array_equal(stacked["time"].values, np.stack([c["time"].values for c in got]))
    np.testing.assert_array_equal(stacked["trigger_sample"].values, np.arange(50, 20_000, 100))
    np.testing.assert_allclose(stacked["offset"].values, (np.arange(10) - 4) / 1000.0)
    assert list(stacked["unit"].values) == ["", "V"]
    assert stacked.attrs["trigger_index"] == 4
    mean = stacked["value"].sel(channel="a").mean("capture").values  # what averaging gives
    np.testing.assert_array_equal(mean, [-1.0] * 4 + [1.0] * 6)
    tree = dl.open_tree(caps.folder)
    assert len(tree.children) == 200
    for cap in got[::37]:
        node = tree[f"capture_{cap.attrs['capture']:06d}"].to_dataset()
        xr.testing.assert_identical(node, cap)
    xr.testing.assert_identical(dl.open_run(caps.folder, group="capture_000007"), got[7])
    with pytest.raises(dl.NotFoundError):
        dl.open_run(caps.folder)  # 200 runs: which one?
    row = dl.Catalog(tmp_path, index=":memory:").df.iloc[0]
    assert (row["path"], row["format"], row["state"], row["samples"]) == ("scope.daqcap", "captures",
                                                                          "complete", 2000)


CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import daqlab as dl
    from pathlib import Path

    buf = dl.RingBuffer(["a", "b"], 1_000_000, 1000.0, start="2024-01-01")
    caps = dl.Captures(buf, dl.Trigger("a", 0.0, pre=0.002, post=0.003), record=Path(sys.argv[1]),
                       flush_interval=0.05)
    a = 0
    while True:  # until killed: 1,000 samples (10 captures) per block
        index = np.arange(a, a + 1000, dtype=float)
        buf.push(np.vstack([np.where((index // 50) % 2 == 0, -1.0, 1.0), index]))
        a += 1000
        time.sleep(0.01)
""")


def test_captures_survive_a_sigkill_whole(tmp_path: Path) -> None:
    folder = tmp_path / "killed.daqcap"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(folder)])
    try:
        wait_for(lambda: len(list(folder.glob("seg-*.h5"))) >= 3, timeout=60, what="3 segments on disk")
        row = dl.Catalog(tmp_path, index=":memory:").df.iloc[0]
        assert row["state"] == "recording"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    stacked = open_captures(folder)
    k = stacked.sizes["capture"]
    assert k >= 3
    samples = stacked["trigger_sample"].values
    np.testing.assert_array_equal(samples, np.arange(50, 50 + 100 * k, 100))  # none lost between
    np.testing.assert_array_equal(stacked["value"].sel(channel="b").values,
                                  samples[:, None] + np.arange(-2, 3)[None, :])  # every sample exact
    row = dl.Catalog(tmp_path, index=":memory:").df.iloc[0]
    assert (row["state"], row["samples"]) == ("crashed", 5 * k)


def test_a_recording_manager_records_its_captures(tmp_path: Path) -> None:
    src = dl.sources.Push(["a", "b"], 1000.0)
    with dl.DataManager(src, autosave_interval=None, output_dir=tmp_path, name="bench") as dm:
        caps = dm.arm(dl.Trigger("a", 0.0, pre=0.002, post=0.002))
        src.feed(square_with_index(400, 50))
        wait_for(lambda: caps.count == 4)
    assert caps.folder is not None
    assert caps.folder.parent == tmp_path
    assert caps.folder.name.endswith(".daqcap")
    assert "-bench-a-" in caps.folder.name
    assert caps.recorded == 4
    assert open_captures(caps.folder)["trigger_sample"].values.tolist() == [50, 150, 250, 350]
    with dl.DataManager(dl.sources.Push(["a"], 10.0), autosave_interval=None, output_dir=tmp_path,
                        record=False) as quiet:
        assert quiet.arm(dl.Trigger("a", 0.0, post=0.1)).folder is None
