"""Pipelines over trees of runs: each run node at its own rate, lazily and out of core."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import xarray as xr

import daqlab as dl
from daqlab.processing import Decimate, LowPass, MovingAverage
from daqlab.tree import make_events, make_tree
from tests.helpers import node


def _tree() -> xr.DataTree:
    rng = np.random.default_rng(3)
    fast = dl.make_run(rng.normal(size=(2, 4000)), ["a", "b"], sample_rate=1000.0,
                       start="2024-01-01", name="fast")
    slow = dl.make_run(rng.normal(size=(1, 400)), ["t"], sample_rate=100.0, start="2024-01-01",
                       name="slow")
    events = make_events(np.array(["2024-01-01T00:00:01"], "datetime64[ns]"), ["go"], name="ev")
    return make_tree({"fast": fast, "slow": slow, "ev": events}, name="rig", metadata={"k": 1})


def test_apply_maps_over_every_run_node_at_its_own_rate() -> None:
    tree = _tree()
    out = _lowpass(10.0).apply(tree)
    assert isinstance(out, xr.DataTree)
    assert out.attrs == tree.attrs
    for key in ("fast", "slow"):
        run = tree[key].to_dataset()
        sos = scipy.signal.butter(4, 10.0, fs=run.attrs["sample_rate"], output="sos")
        want = scipy.signal.sosfiltfilt(sos, run["value"].values, axis=-1)
        np.testing.assert_allclose(node(out, key)["value"].values, want, rtol=1e-9, atol=1e-12)
        assert out[key].attrs["metadata"]["processing"][0]["step"] == "lowpass"
    xr.testing.assert_identical(out["ev"].to_dataset(), tree["ev"].to_dataset())


def _lowpass(cutoff: float) -> dl.Pipeline:
    return dl.Pipeline([LowPass(cutoff)])


def test_apply_on_a_tree_is_lazy_where_its_runs_are() -> None:
    tree = _tree()
    lazy = xr.DataTree.from_dict({n.path: n.to_dataset(inherit=False) for n in tree.subtree} | {
        "/fast": tree["fast"].to_dataset().chunk({"time": 500})})
    out = dl.Pipeline([MovingAverage(4)]).apply(lazy)
    assert out["fast"]["value"].chunks is not None
    np.testing.assert_allclose(node(out, "fast")["value"].values,
                               dl.Pipeline([MovingAverage(4)]).apply(tree["fast"].to_dataset())["value"].values)


def test_groups_chooses_the_nodes_and_errors_name_the_node() -> None:
    tree = _tree()
    out = dl.Pipeline([Decimate(4)]).apply(tree, groups=["fast"])
    assert out["fast"].sizes["time"] == 1000 and out["slow"].sizes["time"] == 400  # noqa: PT018
    xr.testing.assert_identical(out["slow"].to_dataset(), tree["slow"].to_dataset())
    with pytest.raises(dl.ProcessingError, match=r"in node /slow of the tree: .*cutoff"):
        dl.Pipeline([LowPass(80.0)]).apply(tree)  # above the slow group's Nyquist frequency
    with pytest.raises(dl.ProcessingError, match=r"\['/nope'\] are not run nodes"):
        dl.Pipeline([Decimate(2)]).apply(tree, groups=["nope"])
    with pytest.raises(dl.ProcessingError, match="groups must be a list"):
        dl.Pipeline([Decimate(2)]).apply(tree, groups="fast")
    with pytest.raises(dl.ProcessingError, match="groups= chooses nodes of a tree"):
        dl.Pipeline([Decimate(2)]).apply(tree["fast"].to_dataset(), groups=["fast"])


def test_run_streams_a_tree_file_into_a_tree_file(tmp_path: Path) -> None:
    tree = _tree()
    src = dl.save(tree, tmp_path / "rig.nc")
    dst = dl.Pipeline([Decimate(2)]).run(src, tmp_path / "out.nc", chunk_size=1000, progress=False)
    back = dl.open_tree(dst)
    want = dl.Pipeline([Decimate(2)]).apply(tree)
    for key in ("fast", "slow"):
        np.testing.assert_allclose(node(back, key)["value"].values, node(want, key)["value"].values,
                                   atol=1e-12)
        np.testing.assert_array_equal(node(back, key)["time"].values, node(want, key)["time"].values)
    xr.testing.assert_identical(back["ev"].to_dataset(), tree["ev"].to_dataset())
    assert back.attrs["name"] == "rig"
