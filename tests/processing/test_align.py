"""dl.align: one time base, only when asked; samples on the base kept exactly, the rest
interpolated and flagged."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import daqlab as dl
from daqlab.tree import make_events, make_tree

G, S, B, INTERP = (int(q) for q in (dl.Quality.GOOD, dl.Quality.SUSPECT, dl.Quality.BAD,
                                     dl.Quality.INTERPOLATED))


def _tree() -> xr.DataTree:
    rng = np.random.default_rng(5)
    fast = dl.make_run(rng.normal(size=(2, 900)), [
        dl.Channel("x", "V", calibration=dl.Calibration(2.0, 1.0)), "y"], sample_rate=100.0,
        start="2024-01-01T00:00:00.005", name="fast")
    slow = dl.make_run(rng.normal(size=(1, 11)), [dl.Channel("t", "degC")], sample_rate=1.0,
                       start="2024-01-01", name="slow")
    ev = make_events(np.array(["2024-01-01T00:00:01"], "datetime64[ns]"), ["go"])
    return make_tree({"fast": fast, "slow": slow, "ev": ev}, name="rig", metadata={"m": 1})


def test_the_fastest_runs_samples_are_kept_exactly_and_the_rest_interpolated() -> None:
    tree = _tree()
    run = dl.align(tree)
    dl.validate(run)
    fast, slow = tree["fast"].to_dataset(), tree["slow"].to_dataset()
    assert run.daq.channel_names == ["x", "y", "t"]
    assert run.attrs["sample_rate"] == 100.0
    t = run["time"].values
    # the base is the fast run's own, extended to the slow run's last sample
    np.testing.assert_array_equal(t[:900], fast["time"].values)
    assert t.size == 1000 and t[-1] == np.datetime64("2024-01-01T00:00:09.995")  # noqa: PT018
    on_fast = np.isin(t, fast["time"].values)
    assert on_fast.sum() == 900
    np.testing.assert_array_equal(run["value"].values[:2, on_fast], fast["value"].values)
    np.testing.assert_array_equal(run["quality"].values[:2, on_fast], G)
    # outside the fast run's span: NaN, BAD (never extrapolated)
    assert np.isnan(run["value"].values[:2, ~on_fast]).all()
    assert (run["quality"].values[:2, ~on_fast] == B).all()
    # the slow run: exact at its own times, linear between, flagged INTERPOLATED
    on_slow = np.isin(t, slow["time"].values)
    assert not on_slow.any()  # (the slow run's seconds are not on the fast base)
    t0 = slow["time"].values[0].astype(np.int64)  # (ns since the epoch do not fit a float64 exactly)
    tn = (t.astype(np.int64) - t0).astype(np.float64)
    ts = (slow["time"].values.astype(np.int64) - t0).astype(np.float64)
    np.testing.assert_allclose(run["value"].values[2], np.interp(tn, ts, slow["value"].values[0]),
                               rtol=1e-12, atol=1e-12)
    on_both = dl.align(tree, rate=1.0)  # the slow run's base, where its samples are kept
    np.testing.assert_array_equal(on_both.sel(channel="t")["value"].values, slow["value"].values[0])
    assert (on_both.sel(channel="t")["quality"].values == G).all()
    assert (run["quality"].values[2, ~on_slow] == INTERP).all()
    # calibration, units and provenance kept
    assert run.daq.channels[0].calibration == dl.Calibration(2.0, 1.0)
    assert run["unit"].values.tolist() == ["V", "", "degC"]
    assert run.attrs["metadata"]["aligned"]["t"] == {"node": "/slow", "channel": "t", "sample_rate": 1.0}
    assert run.attrs["metadata"]["m"] == 1 and run.attrs["name"] == "rig"  # noqa: PT018
    assert run.attrs["metadata"]["processing"][-1]["step"] == "align"


def test_a_chosen_rate_and_bad_neighbours() -> None:
    vals = np.array([[0.0, 10.0, np.nan, 30.0, 40.0]])
    q = np.array([[G, S, B, G, B]])
    run = dl.make_run(vals, ["a"], sample_rate=1.0, start="2024-01-01", quality=q)
    other = dl.make_run([[1.0]], ["b"], sample_rate=0.5, start="2024-01-01")
    out = dl.align(make_tree({"r": run, "o": other}), rate=2.0)
    assert out.attrs["sample_rate"] == 2.0 and out.sizes["time"] == 9  # noqa: PT018
    a = out.sel(channel="a")
    np.testing.assert_array_equal(a["value"].values[::2], vals[0])
    assert a["quality"].values.tolist() == [G, INTERP, S, B, B, B, G, B, B]
    assert a["value"].values[1] == 5.0


def test_repeated_channel_names_get_their_nodes_name() -> None:
    a = dl.make_run([[1.0, 2.0]], ["v"], sample_rate=1.0, start="2024-01-01")
    b = dl.make_run([[3.0, 4.0]], ["v"], sample_rate=1.0, start="2024-01-01")
    out = dl.align(make_tree({"left": a, "right": b}))
    assert out.daq.channel_names == ["left.v", "right.v"]
    np.testing.assert_array_equal(out["value"].values, [[1.0, 2.0], [3.0, 4.0]])


def test_mixed_calibration_is_calibrated_first() -> None:
    raw = dl.make_run([[1.0, 2.0]], [dl.Channel("r", "V", calibration=dl.Calibration(10.0, 0.0))],
                      sample_rate=1.0, start="2024-01-01")
    phys = dl.calibrate(dl.make_run([[5.0, 6.0]], ["p"], sample_rate=1.0, start="2024-01-01"))
    out = dl.align(make_tree({"raw": raw, "phys": phys}))
    assert out.attrs["calibrated"] is True and out.attrs["metadata"]["calibrated_by_align"]  # noqa: PT018
    np.testing.assert_array_equal(out["value"].values, [[10.0, 20.0], [5.0, 6.0]])


def test_wrong_input_is_refused() -> None:
    with pytest.raises(dl.ProcessingError, match="align takes a tree of runs"):
        dl.align([1, 2])  # type: ignore[arg-type]
    with pytest.raises(dl.DaqlabError, match="rate"):
        dl.align(_tree(), rate=-1.0)
    empty = dl.empty_run(["a"], sample_rate=1.0)
    with pytest.raises(dl.ProcessingError, match="hold no samples"):
        dl.align(make_tree({"e": empty}))
    # a single run aligns to itself
    one = dl.make_run([[1.0, 2.0]], ["a"], sample_rate=1.0, start="2024-01-01")
    np.testing.assert_array_equal(dl.align(one)["value"].values, one["value"].values)
