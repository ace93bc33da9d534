"""Trees of runs in NetCDF: netCDF-4 groups, each CF-clean, read back identical, by daqlab and
by other tools (ncdump, NCO, xarray's own DataTree reader)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import daqlab as dl
from daqlab.tree import make_events, make_tree, node_names, run_nodes
from tests.helpers import require_tool


def _tree() -> xr.DataTree:
    rng = np.random.default_rng(7)
    fast = dl.make_run(rng.normal(size=(2, 5000)), [
        dl.Channel("acc x", "m/s^2", range=(-3, 3), calibration=dl.Calibration(2.0, 0.5)),
        dl.Channel("acc é", "m/s^2")], sample_rate=1000.0, start="2024-03-01T12:00:00.000001",
        name="fast", metadata={"sensor": "ADXL", "gain": [1, 2]})
    slow_values = np.array([[20.5, np.nan, 21.0, 22.5, np.inf]])
    slow = dl.make_run(slow_values, [dl.Channel("temp", "degC")], sample_rate=1.0,
                       start="2024-03-01T12:00:00", name="slow")
    events = make_events(np.array(["2024-03-01T12:00:00.5", "2024-03-01T12:00:01.25"],
                                  dtype="datetime64[ns]"), ["start", "stop ü"], [0.25, np.nan],
                         name="markers", metadata={"stream": "Markers"})
    return make_tree({"fast": fast, "slow": slow, "markers": events}, name="bench rig",
                     description="two rates", metadata={"operator": "ana"})


@pytest.fixture(scope="module")
def tree_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[xr.DataTree, Path]:
    tree = _tree()
    return tree, dl.save(tree, tmp_path_factory.mktemp("tree") / "rig.nc")


def test_a_tree_round_trips_identically(tree_file: tuple[xr.DataTree, Path]) -> None:
    tree, path = tree_file
    back = dl.open_tree(path)
    assert back.attrs == tree.attrs
    assert sorted(n.path for n in back.subtree) == ["/", "/fast", "/markers", "/slow"]
    for key in ("fast", "slow", "markers"):
        a, b = tree[key].to_dataset(), back[key].to_dataset()
        xr.testing.assert_identical(a, b)
        assert a.attrs == b.attrs
    assert back["slow"].to_dataset()["quality"].values.tolist() == [[0, 2, 0, 0, 2]]


def test_open_run_needs_a_group_where_the_file_holds_several(tree_file: tuple[xr.DataTree, Path]) -> None:
    tree, path = tree_file
    with pytest.raises(dl.NotFoundError,
                       match=r"holds 2 runs \(groups \['/fast', '/slow'\]\).*group='/fast'"):
        dl.open_run(path)
    for group in ("slow", "/slow", "slow/"):
        xr.testing.assert_identical(dl.open_run(path, group=group), tree["slow"].to_dataset())
    with pytest.raises(dl.NotFoundError,
                       match=r"no run at group 'nope'; its runs are at \['/fast', '/slow'\]"):
        dl.open_run(path, group="nope")
    with pytest.raises(dl.NotFoundError, match="no run at group 'markers'"):
        dl.open_run(path, group="markers")  # an events node is not a run
    with pytest.raises(dl.ConfigurationError, match="group must be a node path"):
        dl.open_run(path, group=3)  # type: ignore[arg-type]


def test_a_single_run_file_is_a_tree_of_one_node(tmp_path: Path) -> None:
    run = dl.make_run([[1.0, 2.0]], ["a"], sample_rate=2.0, start="2024-01-01")
    for suffix in (".nc", ".csv", ".h5"):
        path = dl.save(run, tmp_path / f"one{suffix}", "seed-hdf5" if suffix == ".h5" else None)
        tree = dl.open_tree(path)
        assert [n.path for n in tree.subtree] == ["/"]
        xr.testing.assert_identical(tree.to_dataset(), dl.open_run(path))
        xr.testing.assert_identical(dl.open_run(path, group="/"), dl.open_run(path))


def test_a_tree_of_one_run_saves_in_every_format_and_more_runs_only_to_netcdf(tmp_path: Path) -> None:
    run = dl.make_run([[1.0, 2.0]], ["a"], sample_rate=2.0, start="2024-01-01")
    one = xr.DataTree(dataset=run)
    xr.testing.assert_identical(dl.open_run(dl.save(one, tmp_path / "one.csv")), dl.open_run(
        dl.save(run, tmp_path / "same.csv")).assign_attrs(id=run.attrs["id"]))
    with pytest.raises(dl.FormatError, match=r"csv holds one run, and this tree has 2 .*save it as NetCDF"):
        dl.save(_tree(), tmp_path / "many.csv")
    assert not list(tmp_path.glob("many*"))


def test_a_tree_opens_lazily_and_computes_to_the_same_values(tree_file: tuple[xr.DataTree, Path]) -> None:
    tree, path = tree_file
    lazy = dl.open_tree(path, chunks={"time": 1000})
    fast = lazy["fast"].to_dataset()
    assert fast["value"].chunks == ((1, 1), (1000,) * 5)  # one channel per chunk, as stored
    xr.testing.assert_identical(fast.compute(), tree["fast"].to_dataset())
    xr.testing.assert_identical(dl.open_run(path, group="fast", chunks={}).compute(),
                                tree["fast"].to_dataset())


def test_bad_trees_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    run = dl.make_run([[1.0, 2.0]], ["a"], sample_rate=2.0, start="2024-01-01")
    broken = run.drop_vars("quality")
    bad = xr.DataTree.from_dict({"/": xr.Dataset(), "/a": run, "/b": broken})
    with pytest.raises(dl.SchemaError, match=r"node /b: .*quality"):
        dl.save(bad, tmp_path / "bad.nc")
    with pytest.raises(dl.SchemaError, match="no node holds a run or events"):
        dl.save(xr.DataTree(), tmp_path / "empty.nc")
    with pytest.raises(dl.ConfigurationError, match=r"node names \['a/b'\] are not valid"):
        make_tree({"a/b": run})
    with pytest.raises(dl.ConfigurationError, match="a tree needs at least one run"):
        make_tree({})
    assert not list(tmp_path.iterdir())


def test_node_names_are_valid_unique_and_keep_the_order() -> None:
    assert node_names(["a/b", "a_b", " ", "x", "x", "x"]) == ["a_b", "a_b_2", "node", "x", "x_2", "x_3"]


def test_users_own_datatree_saves_with_default_root_attributes(tmp_path: Path) -> None:
    a = dl.make_run([[1.0]], ["a"], sample_rate=1.0, start="2024-01-01T00:00:05",
                    created_at="2024-01-01T00:00:05")
    b = dl.make_run([[1.0, 2.0]], ["b"], sample_rate=2.0, start="2024-01-01T00:00:01",
                    created_at="2024-01-01T00:00:01")
    plain = xr.DataTree.from_dict({"/rack/a": a, "/b": b})
    back = dl.open_tree(dl.save(plain, tmp_path / "plain.nc"))
    assert sorted(run_nodes(back)) == ["/b", "/rack/a"]
    assert back.attrs["created_at"] == b.attrs["created_at"]  # the earliest run's
    assert back.attrs["name"] == "" and back.attrs["metadata"] == {}  # noqa: PT018


# ----------------------------------------------------------------- other tools read every group


def test_ncdump_reads_every_group(tree_file: tuple[xr.DataTree, Path]) -> None:
    ncdump = require_tool("ncdump")
    _, path = tree_file
    full = subprocess.run([ncdump, str(path)], capture_output=True, text=True, timeout=120)
    assert full.returncode == 0, full.stderr
    for group in ("fast", "slow", "markers"):
        assert f"group: {group} {{" in full.stdout
    assert '"stop \\303\\274"' in full.stdout  # ncdump escapes the UTF-8 bytes of "ü"
    assert "time = 500000, 1250000 ;" in full.stdout  # microseconds since the events' reference
    assert ':name = "bench rig"' in full.stdout


def test_xarray_reads_the_tree_and_each_group_on_its_own(tree_file: tuple[xr.DataTree, Path]) -> None:
    tree, path = tree_file
    theirs = xr.open_datatree(path, engine="h5netcdf")
    assert sorted(theirs.children) == ["fast", "markers", "slow"]
    np.testing.assert_array_equal(theirs["fast"]["value"].values, tree["fast"]["value"].values)
    np.testing.assert_array_equal(theirs["slow"]["time"].values, tree["slow"]["time"].values)
    nc4 = xr.open_dataset(path, group="markers", engine="netcdf4")
    assert nc4["label"].values.tolist() == ["start", "stop ü"]
    np.testing.assert_array_equal(nc4["time"].values, tree["markers"]["time"].values)


def _flatten(path: Path, group: str, out: Path) -> Path:
    """The group as its own file, by NCO (with the root's attributes under the group's)."""
    ncks = require_tool("ncks")
    proc = subprocess.run([ncks, "-O", "-G", ":", "-g", group, str(path), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


def test_every_group_is_cf_clean_on_its_own(tree_file: tuple[xr.DataTree, Path], tmp_path: Path) -> None:
    """Checked group by group, as NCO extracts each: cfchecks 4.1 does not look into groups
    (it checks 0 variables of a tree file), and compliance-checker 6.1 flags every file with
    groups (see the next test); so each group is checked as the file a user of that group gets."""
    cc = require_tool("compliance-checker")
    _, path = tree_file
    for group in ("fast", "slow", "markers"):
        flat = _flatten(path, group, tmp_path / f"{group}.nc")
        out = tmp_path / f"{group}.json"
        proc = subprocess.run([cc, "-t", "cf:1.8", "-f", "json_new", "-o", str(out), str(flat)],
                              capture_output=True, text=True, timeout=120)
        result = next(iter(json.loads(out.read_text()).values()))["cf:1.8"]
        assert proc.returncode == 0, (group, proc.stdout[-2000:])
        assert (result["high_count"], result["medium_count"], result["low_count"]) == (0, 0, 0), group
    from tests.io.test_netcdf_cf import cfchecks_problems

    flats = [tmp_path / f"{g}.nc" for g in ("fast", "slow", "markers")]
    assert cfchecks_problems(flats, tmp_path) == {str(f): ([], set()) for f in flats}


# compliance-checker 6.1's faults with groups (worked around by the test above):
# - check_invalid_same_named_dimension_across_groups compares dimensions with `is`, so any two
#   groups with a `time` dimension fail (FACTS.md);
# - check_groups (§2.7.1) reports every `coordinates` reference it resolves, even those "found
#   in same group", as a HIGH failure.
_CC_GROUP_BUGS = ("Dimensions with the same name must be the same object",
                  "found in same group")


def test_compliance_checker_on_the_whole_tree_fails_only_on_its_group_bugs(
        tree_file: tuple[xr.DataTree, Path], tmp_path: Path) -> None:
    cc = require_tool("compliance-checker")
    _, path = tree_file
    out = tmp_path / "tree.json"
    subprocess.run([cc, "-t", "cf:1.8", "-f", "json_new", "-o", str(out), str(path)],
                   capture_output=True, text=True, timeout=120)
    result = next(iter(json.loads(out.read_text()).values()))["cf:1.8"]
    failures = [m for key in ("high_priorities", "medium_priorities", "low_priorities")
                for group in result.get(key, []) for m in group.get("msgs", [])]
    assert failures, "compliance-checker no longer flags groups: check the whole tree file plainly"
    assert all(any(bug in m for bug in _CC_GROUP_BUGS) for m in failures), failures
