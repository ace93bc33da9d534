"""dl.Catalog: the rows, finding and opening runs, open_runs' left-out rows, the stored summaries
and the ``daqlab ls`` / ``daqlab info DIR`` commands."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import daqlab as dl
from daqlab.catalog import COLUMNS, INDEX_NAME
from daqlab.cli import main as cli
from daqlab.tree import make_tree


def _run(i: int, *, channels: tuple[str, ...] = ("a", "b"), rate: float = 100.0, n: int = 200,
         start: str | None = None, bad: int = 0, **attrs: object) -> xr.Dataset:
    values = np.arange(len(channels) * n, dtype=float).reshape(len(channels), n) + 1000 * i
    if bad:
        values[0, :bad] = np.nan
    return dl.make_run(values, [dl.Channel(c, "V") for c in channels], sample_rate=rate,
                       start=start or f"2024-05-01T10:{i:02d}:00", name=f"run {i}", **attrs)  # type: ignore[arg-type]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three runs that follow one another, one with BAD samples, one in a subfolder, a CSV copy,
    a run of other channels, a tree of two rates, a damaged file and a file that is no run."""
    root = tmp_path / "runs"
    (root / "day2").mkdir(parents=True)
    dl.save(_run(0, metadata={"operator": "ada", "sample": "S-1"}), root / "r0.nc")
    dl.save(_run(1, bad=20, metadata={"operator": "bob"}), root / "r1.nc")
    r2 = _run(2, metadata={"operator": "ada", "note": "cold"})
    dl.save(r2, root / "day2" / "r2.nc")
    dl.save(r2, root / "day2" / "r2.csv")  # the same run (and id) in two files
    dl.save(_run(5, channels=("x", "y", "z"), description="three axes"), root / "xyz.nc")
    fast, slow = _run(7, rate=1000.0), _run(7, channels=("t",), rate=10.0, n=20)
    dl.save(make_tree({"fast": fast, "slow": slow}, name="two rates"), root / "tree.nc")
    (root / "broken.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    (root / "notes.txt").write_text("not a run")
    return root


def test_rows_hold_what_the_files_hold(folder: Path) -> None:
    cat = dl.Catalog(folder, metadata=["operator", "note"])
    df = cat.df
    assert list(df.columns) == [*COLUMNS, "operator", "note"]
    assert list(df["path"]) == ["broken.nc", "day2/r2.csv", "day2/r2.nc", "r0.nc", "r1.nc", "tree.nc",
                                "xyz.nc"]
    assert list(df.index) == list(range(7))
    assert str(df["start"].dtype) == "datetime64[ns]"
    assert str(df["modified"].dtype) == "datetime64[ns]"
    for _, row in df[df["state"] == "complete"].iterrows():
        tree = dl.open_tree(folder / row["path"])
        runs = [node.to_dataset() for node in tree.subtree if "value" in node.dataset.data_vars]
        assert row["groups"] == [("/" + node.relative_to(tree)) if node is not tree else "/"
                                 for node in tree.subtree if "value" in node.dataset.data_vars]
        assert row["samples"] == sum(r.sizes["time"] for r in runs)
        assert row["channels"] == [c for r in runs for c in r.daq.channel_names]
        assert row["units"] == [str(u) for r in runs for u in r["unit"].values]
        assert row["rates"] == [r.attrs["sample_rate"] for r in runs]
        assert row["start"] == min(r["time"].values[0] for r in runs)
        assert row["end"] == max(r["time"].values[-1] for r in runs)
        assert row["duration"] == pytest.approx((row["end"] - row["start"]).total_seconds())
        q = np.concatenate([r["quality"].values.ravel() for r in runs])
        for flag in dl.Quality:
            assert row[flag.name.lower()] == pytest.approx(np.mean(q == flag))
        assert row["bytes"] == (folder / row["path"]).stat().st_size + (
            (folder / (row["path"] + ".daqlab.json")).stat().st_size if row["format"] == "csv" else 0)
        assert row["error"] == ""
    r1 = df.set_index("path").loc["r1.nc"]
    assert r1["bad"] == pytest.approx(20 / 400)
    assert r1["good"] == pytest.approx(380 / 400)
    assert (r1["name"], r1["operator"], r1["format"], r1["sample_rate"]) == ("run 1", "bob", "netcdf", 100.0)
    assert r1["metadata_keys"] == ["operator"]
    two = df.set_index("path").loc["tree.nc"]
    assert (two["name"], two["groups"], two["rates"], two["sample_rate"]) == (
        "two rates", ["/fast", "/slow"], [1000.0, 10.0], 1000.0)
    assert df.set_index("path").loc["day2/r2.nc", "note"] == "cold"
    assert df.set_index("path")["note"].isna().to_dict()["r1.nc"]  # no such key in r1's metadata
    broken = df.set_index("path").loc["broken.nc"]
    assert broken["state"] == "error"
    assert broken["format"] == "netcdf"
    assert "broken.nc" in broken["error"]
    assert str(folder) not in broken["error"]
    assert broken["samples"] == 0
    assert np.isnan(broken["good"])
    assert broken["start"] is pd.NaT
    index = cat.index_path
    assert index == folder / INDEX_NAME
    assert index is not None
    assert index.is_file()
    assert len(cat) == 7
    assert "7 runs" in repr(cat)


def test_filtering_is_pandas_and_search_looks_everywhere(folder: Path) -> None:
    cat = dl.Catalog(folder, metadata=["operator"])
    assert list(cat.df.query("bad > 0")["path"]) == ["r1.nc"]
    assert list(cat.df.query("operator == 'ada' and format == 'netcdf'")["path"]) == ["day2/r2.nc", "r0.nc"]
    assert list(cat.search("COLD")["path"]) == ["day2/r2.csv", "day2/r2.nc"]  # metadata value
    assert list(cat.search("three axes")["path"]) == ["xyz.nc"]  # description
    assert list(cat.search("two rates")["path"]) == ["tree.nc"]  # name
    assert list(cat.search("s-1")["path"]) == ["r0.nc"]
    assert set(cat.search("z")["path"]) >= {"xyz.nc"}  # a channel name
    hits = cat.search("day2")
    assert list(hits.index) == [1, 2]  # the labels of cat.df: keys for open
    with pytest.raises(dl.ConfigurationError, match="search takes text"):
        cat.search(3)  # type: ignore[arg-type]


def test_keys_open_runs_by_row_id_path_or_row(folder: Path) -> None:
    cat = dl.Catalog(folder)
    expected = dl.open_run(folder / "r0.nc")
    row = int(cat.df.index[cat.df["path"] == "r0.nc"][0])
    for key in (row, np.int64(row), "r0.nc", folder / "r0.nc", str(folder / "r0.nc"), expected.attrs["id"],
                cat.df.loc[row]):
        xr.testing.assert_identical(cat.open(key), expected)
    lazy = cat.open("r0.nc", chunks={})
    assert lazy["value"].chunks is not None
    xr.testing.assert_identical(lazy.compute(), expected)
    xr.testing.assert_identical(cat.open("tree.nc", group="slow"),
                                dl.open_run(folder / "tree.nc", group="slow"))
    assert cat.open_tree("tree.nc").children.keys() == {"fast", "slow"}
    shared = dl.open_run(folder / "day2" / "r2.nc").attrs["id"]  # the CSV copy has the same id
    with pytest.raises(dl.ConfigurationError, match=r"belongs to 2 rows .*give the path or row label"):
        cat.open(shared)
    with pytest.raises(dl.NotFoundError, match=r"row 99 is not in this catalog of 7 rows"):
        cat.open(99)
    with pytest.raises(dl.NotFoundError, match=r"no run 'r9.nc'.*Did you mean \['r1.nc', 'r0.nc'"):
        cat.open("r9.nc")
    with pytest.raises(dl.NotFoundError, match="is not under this catalog's folder"):
        cat.open(folder.parent / "elsewhere.nc")
    with pytest.raises(dl.ConfigurationError, match="a catalog key is a row label"):
        cat.open(1.5)
    with pytest.raises(dl.ConfigurationError):
        cat.open(True)
    with pytest.raises(dl.FormatError, match=r"broken\.nc"):
        cat.open("broken.nc")  # the reader's own error
    with pytest.raises(dl.NotFoundError, match=r"holds 2 runs|groups"):
        cat.open("tree.nc")


def test_open_runs_joins_the_alike_rows_and_says_what_it_left_out(folder: Path) -> None:
    cat = dl.Catalog(folder)
    with pytest.warns(dl.RunsLeftOutWarning, match=r"joined 3 of 7 rows and left out 4") as caught:
        joined = cat.open_runs(cat.df)
    assert len(caught) == 1
    reasons = {x["path"]: x["reason"] for x in joined.attrs["left_out"]}
    # the CSV and the NetCDF file of run 2 overlap: the first by start, then path, is joined
    assert set(reasons) == {"broken.nc", "tree.nc", "xyz.nc", "day2/r2.nc"}
    assert reasons["broken.nc"].startswith("unreadable: ")
    assert "holds 2 runs" in reasons["tree.nc"]
    assert "channels ['x', 'y', 'z'] differ" in reasons["xyz.nc"]
    assert "overlap in time" in reasons["day2/r2.nc"]
    rows = {x["path"]: x["row"] for x in joined.attrs["left_out"]}
    assert all(cat.df.at[label, "path"] == path for path, label in rows.items())
    assert joined["value"].chunks is not None  # lazy
    parts = [dl.open_run(folder / p) for p in ("r0.nc", "r1.nc", "day2/r2.csv")]
    np.testing.assert_array_equal(joined["value"].values,
                                  np.concatenate([p["value"].values for p in parts], 1))
    np.testing.assert_array_equal(joined["time"].values, np.concatenate([p["time"].values for p in parts]))
    assert [s["id"] for s in joined.attrs["metadata"]["sources"]] == [p.attrs["id"] for p in parts]
    dl.validate(joined)
    # what was left out is saved with the run
    saved = dl.open_run(dl.save(joined, folder.parent / "joined.nc"))
    assert saved.attrs["left_out"] == joined.attrs["left_out"]
    # rows given as keys; nothing left out: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two = cat.open_runs(["r1.nc", "r0.nc"])
    assert two.attrs["left_out"] == []
    assert two.sizes["time"] == 400
    with pytest.raises(dl.SchemaError, match=r"row 0 \(broken.nc\): unreadable"):
        cat.open_runs(cat.df.query("state == 'error'"))


def test_the_largest_alike_set_wins_over_the_first_row(tmp_path: Path) -> None:
    for i in range(3):
        dl.save(_run(i + 1), tmp_path / f"b{i}.nc")
    dl.save(_run(0, channels=("q",)), tmp_path / "a_first.nc")
    cat = dl.Catalog(tmp_path)
    with pytest.warns(dl.RunsLeftOutWarning):
        joined = cat.open_runs(cat.df)
    assert joined.daq.channel_names == ["a", "b"]
    assert joined.sizes["time"] == 600
    assert [x["path"] for x in joined.attrs["left_out"]] == ["a_first.nc"]


def test_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(dl.StorageError, match="is not a folder"):
        dl.Catalog(tmp_path / "missing")
    (tmp_path / "f.nc").write_text("x")
    with pytest.raises(dl.StorageError, match="is not a folder"):
        dl.Catalog(tmp_path / "f.nc")
    with pytest.raises(dl.ConfigurationError, match="list of metadata keys"):
        dl.Catalog(tmp_path, metadata="operator")
    with pytest.raises(dl.ConfigurationError, match=r"names of the catalog's own columns"):
        dl.Catalog(tmp_path, metadata=["name"])
    with pytest.raises(dl.StorageError, match="cannot keep the catalog index"):
        dl.Catalog(tmp_path, index=tmp_path / "f.nc" / "sub.sqlite")


def test_index_in_memory_writes_nothing(folder: Path) -> None:
    before = sorted(p.name for p in folder.iterdir())
    cat = dl.Catalog(folder, index=":memory:")
    assert cat.index_path is None
    assert len(cat) == 7
    assert sorted(p.name for p in folder.iterdir()) == before
    assert "(index: in memory)" in cat.summary()


def test_summary_text(folder: Path) -> None:
    text = dl.Catalog(folder).summary()
    assert text.splitlines()[0] == f"7 runs in {folder.resolve()} (index: {folder.resolve() / INDEX_NAME})"
    assert "formats: 5 netcdf, 1 csv" in text.replace("  ", " ") or "formats:" in text
    assert "states:  6 complete, 1 error" in text
    assert "1 runs have BAD samples" in text
    assert "error: broken.nc: " in text


def test_stored_summaries_are_read_instead_of_samples(tmp_path: Path) -> None:
    run = _run(0, bad=5)
    p = dl.save(run, tmp_path / "r.nc")
    with h5py.File(p) as f:
        stored = json.loads(f.attrs["daqlab_summary"])
    assert stored["samples"] == 200
    assert stored["quality"] == [395, 0, 5, 0]
    assert stored["channels"] == ["a", "b"]
    assert stored["units"] == ["V", "V"]
    assert set(stored) == {"version", "samples", "start", "end", "quality", "channels", "units"}
    assert "daqlab_summary" not in dl.open_run(p).attrs  # a cache of the file, not the run's
    # a lazy run's summary is counted from the file written
    lazy = dl.open_run(p, chunks={"time": 64})
    with h5py.File(dl.save(lazy.isel(time=slice(3, None)), tmp_path / "cut.nc")) as f:
        assert json.loads(f.attrs["daqlab_summary"])["quality"] == [392, 0, 2, 0]  # 2 x 197 samples
    side = json.loads((dl.save(run, tmp_path / "r.csv").parent / "r.csv.daqlab.json").read_text())
    assert side["summary"]["quality"] == [395, 0, 5, 0]
    # a summary that no longer fits the file (a tool cut it and kept the attributes) is not used
    edited = dl.save(run, tmp_path / "edited.nc")
    with h5py.File(edited, "a") as f:
        f.attrs["daqlab_summary"] = json.dumps({**stored, "samples": 999})
    # attributes come from the file, not the summary: a tool's edit shows
    with h5py.File(dl.save(run, tmp_path / "renamed.nc"), "a") as f:
        f.attrs["name"] = "renamed by ncatted"
    df = dl.Catalog(tmp_path, index=":memory:").df.set_index("path")
    assert df.loc["renamed.nc", "name"] == "renamed by ncatted"
    assert df.loc["renamed.nc", "samples"] == 200
    row = df.loc["edited.nc"]
    assert row["samples"] == 200
    assert row["bad"] == pytest.approx(5 / 400)


def test_rescan_sees_new_changed_and_removed_runs(folder: Path) -> None:
    cat = dl.Catalog(folder)
    dl.save(_run(9), folder / "new.nc")
    (folder / "xyz.nc").unlink()
    dl.save(_run(1, bad=50), folder / "r1.nc", overwrite=True)
    df = cat.scan().df.set_index("path")
    assert "new.nc" in df.index
    assert "xyz.nc" not in df.index
    assert df.loc["r1.nc", "bad"] == pytest.approx(50 / 400)
    again = dl.Catalog(folder).df  # from the index
    pd.testing.assert_frame_equal(again.drop(columns=["modified"]), cat.df.drop(columns=["modified"]))


def _ls(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli(args)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_daqlab_ls_and_info_of_a_folder(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _ls(["ls", str(folder)], capsys)
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["path", "format", "state", "name", "start", "seconds", "rate_hz", "ch",
                                "samples", "bad", "bytes", "error"]
    assert [line.split()[0] for line in lines[1:8]] == list(dl.Catalog(folder).df["path"])
    r1 = next(line for line in lines if line.startswith("r1.nc"))
    assert r1.split()[1:9] == ["netcdf", "complete", "run", "1", "2024-05-01", "10:01:00", "1.99", "100"]
    assert r1.split()[9:13] == ["2", "200", "5%", "31.4"] or r1.split()[11] == "5%"
    assert lines[-1] == f"7 runs in {folder.resolve()}; 1 unreadable (their error is in the last column)"
    code, out, _ = _ls(["ls", str(folder), "--sort", "start", "--reverse"], capsys)
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["tree.nc", "xyz.nc", "day2/r2.csv"]
    code, out, _ = _ls(["ls", str(folder), "--json"], capsys)
    records = json.loads(out)
    assert len(records) == 7
    assert records[3]["path"] == "r0.nc"
    assert records[3]["channels"] == ["a", "b"]
    assert records[3]["start"].startswith("2024-05-01T10:00:00")
    assert records[0]["start"] is None
    code, out, err = _ls(["ls", str(folder), "--sort", "nope"], capsys)
    assert code == 2
    assert "--sort 'nope' is not a column" in err
    code, out, err = _ls(["ls", str(folder / "r0.nc")], capsys)
    assert code == 2
    assert "is not a folder. For one run use: daqlab info PATH" in err
    code, out, _ = _ls(["info", str(folder)], capsys)
    assert code == 0
    assert out.startswith(f"7 runs in {folder.resolve()}")
    assert "states:" in out
    (folder / "broken.nc").unlink()  # nothing unreadable: no error column, no count of errors
    code, out, _ = _ls(["ls", str(folder)], capsys)
    assert out.splitlines()[0].split()[-1] == "bytes"
    assert out.splitlines()[-1] == f"6 runs in {folder.resolve()}"
    empty = folder.parent / "empty"
    empty.mkdir()
    code, out, _ = _ls(["ls", str(empty)], capsys)
    assert code == 0
    assert out.strip() == f"no runs in {empty.resolve()}"


def test_a_session_row_follows_its_recordings(tmp_path: Path) -> None:
    from daqlab.io import write_session

    fast = dl.save(_run(0, rate=1000.0), tmp_path / "fast.nc")
    slow = dl.save(_run(0, n=20), tmp_path / "slow.nc")
    write_session(tmp_path / "rig.session.json", {"fast": fast, "slow": slow},
                  id="9b2f6a3e-1c4d-4e5f-8a7b-0c1d2e3f4a5b", name="rig",
                  created_at="2024-05-01T10:00:00Z", metadata={})
    cat = dl.Catalog(tmp_path)
    row = cat.df.set_index("path").loc["rig.session.json"]
    assert (row["format"], row["groups"], row["samples"], row["name"]) == (
        "session", ["/fast", "/slow"], 220, "rig")
    dl.save(_run(0, n=50), slow, overwrite=True)  # the manifest itself does not change
    assert cat.scan().df.set_index("path").loc["rig.session.json", "samples"] == 250
