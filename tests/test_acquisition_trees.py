"""A DataManager of sources at different rates: snapshot_tree, the session as one tree, and a
killed session's recordings reopened as a tree."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import daqlab as dl
from daqlab.tree import run_nodes
from tests.helpers import node, read_all_values


def _sources() -> dict[str, dl.sources.Simulated]:
    return {"fast": dl.sources.Simulated(["acc0", "acc1"], 1000.0, seed=1, paced=False, duration=2.0),
            "slow": dl.sources.Simulated(["temp"], 10.0, seed=2, paced=False, duration=2.0)}


def _expected(name: str) -> np.ndarray:
    return read_all_values(_sources()[name])


def test_snapshot_tree_has_a_node_per_source_at_its_own_rate(tmp_path: Path) -> None:
    with dl.DataManager(_sources(), name="rig", record=False, autosave_interval=None,
                        output_dir=tmp_path, metadata={"op": "x"}) as dm:
        assert dm.wait(timeout=60)
    tree = dm.snapshot_tree()
    assert sorted(tree.children) == ["fast", "slow"]
    assert (tree.attrs["id"], tree.attrs["name"], tree.attrs["metadata"]) == (dm.id, "rig", {"op": "x"})
    for name, rate, n in (("fast", 1000.0, 2000), ("slow", 10.0, 20)):
        run = node(tree, name)
        assert run.attrs["sample_rate"] == rate and run.sizes["time"] == n  # noqa: PT018
        np.testing.assert_array_equal(run["value"].values, _expected(name))
        xr.testing.assert_identical(run, dm.snapshot(source=name))
    assert node(dm.snapshot_tree(0.5), "fast").sizes["time"] == 500


def test_a_recording_session_is_one_tree_and_exports_as_one_file(tmp_path: Path) -> None:
    with dl.DataManager(_sources(), name="rig", autosave_interval=None, output_dir=tmp_path) as dm:
        assert dm.session_path is not None and dm.session_path.name.endswith(".session.json")  # noqa: PT018
        assert dm.wait(timeout=60)
        during = dm.export_session(tmp_path / "during.nc")
    assert dl.io.detect_format(dm.session_path) == "session"
    tree = dl.open_tree(dm.session_path)
    assert sorted(run_nodes(tree)) == ["/fast", "/slow"]
    assert tree.attrs["id"] == dm.id
    for name in ("fast", "slow"):
        xr.testing.assert_identical(node(tree, name), dl.open_run(dm.recorders[name].path))
        np.testing.assert_array_equal(node(tree, name)["value"].values, _expected(name))
    whole = dl.open_tree(dm.export_session())
    for name in ("fast", "slow"):
        xr.testing.assert_identical(node(whole, name), node(tree, name))
        np.testing.assert_array_equal(node(dl.open_tree(during), name)["value"].values, _expected(name))
    with pytest.raises(dl.NotFoundError, match="holds 2 runs"):
        dl.open_run(dm.session_path)
    xr.testing.assert_identical(dl.open_run(dm.session_path, group="slow"), node(tree, "slow"))


def test_one_source_writes_no_session_manifest(tmp_path: Path) -> None:
    src = dl.sources.Simulated(1, 100.0, paced=False, duration=0.1, seed=0)
    with dl.DataManager(src, autosave_interval=None, output_dir=tmp_path) as dm:
        assert dm.wait(timeout=60)
    assert dm.session_path is None
    assert not list(tmp_path.glob("*.session.json"))
    tree = dl.open_tree(dm.export_session(tmp_path / "s.nc"))
    assert list(run_nodes(tree)) == ["/src"]


KILLED = """
import os, signal, sys
import daqlab as dl
out = sys.argv[1]
sources = {"fast": dl.sources.Simulated(["acc0", "acc1"], 20000.0, seed=1),
           "slow": dl.sources.Simulated(["temp"], 50.0, seed=2)}
dm = dl.DataManager(sources, name="k", output_dir=out, autosave_interval=None, flush_interval=0.1,
                    handle_sigint=False)
seen = set()
def announce(ev):
    if isinstance(ev, dl.events.Recorded) and ev.upto > 0:
        seen.add(ev.source)
        if seen == {"fast", "slow"}:
            print("both", flush=True)
dm.subscribe(announce, kinds=dl.events.Recorded)
dm.start()
print(dm.session_path, flush=True)
dm.wait(timeout=120)
"""


def test_a_killed_session_reopens_as_a_tree_of_what_was_recorded(tmp_path: Path) -> None:
    script = tmp_path / "k.py"
    script.write_text(textwrap.dedent(KILLED))
    with subprocess.Popen([sys.executable, str(script), str(tmp_path / "out")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        guard = threading.Timer(300, proc.kill)  # a child that never announces cannot hang the suite
        guard.start()
        try:
            assert proc.stdout is not None and proc.stderr is not None  # noqa: PT018
            session = Path(proc.stdout.readline().strip())
            for line in proc.stdout:  # waits on the child's own announcement, however slow it is
                if line.strip() == "both":
                    break
            proc.send_signal(signal.SIGKILL)
        finally:
            guard.cancel()
            proc.wait(timeout=60)
        err = proc.stderr.read()
    assert proc.returncode == -signal.SIGKILL, err
    tree = dl.open_tree(session)
    assert sorted(run_nodes(tree)) == ["/fast", "/slow"]
    for name, channels in (("fast", ["acc0", "acc1"]), ("slow", ["temp"])):
        run = node(tree, name)
        n = run.sizes["time"]
        assert n > 0 and run.daq.channel_names == channels  # noqa: PT018
        src = dl.sources.Simulated(channels, 20000.0 if name == "fast" else 50.0,
                                   seed=1 if name == "fast" else 2, paced=False,
                                   duration=n / (20000.0 if name == "fast" else 50.0))
        np.testing.assert_array_equal(run["value"].values, read_all_values(src))


def test_a_session_whose_recording_is_gone_opens_with_the_rest(tmp_path: Path) -> None:
    with dl.DataManager(_sources(), name="rig", autosave_interval=None, output_dir=tmp_path) as dm:
        assert dm.wait(timeout=60)
    assert dm.session_path is not None
    dm.recorders["slow"].path.unlink()
    with pytest.warns(dl.IncompleteFileWarning, match=r"source\(s\) \['slow'\]"):
        tree = dl.open_tree(dm.session_path)
    assert list(run_nodes(tree)) == ["/fast"]
    assert tree.attrs["metadata"]["incomplete"]["left_out"][0]["source"] == "slow"
    dm.recorders["fast"].path.unlink()
    with warnings.catch_warnings(), pytest.raises(dl.FormatError, match="none of the session's recordings"):
        dl.open_tree(dm.session_path)
    dm.session_path.write_text('{"format": "daqlab-session", "version": 99}')
    with pytest.raises(dl.FormatError, match="version 99 is not 1"):
        dl.open_tree(dm.session_path)
