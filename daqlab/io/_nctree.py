"""Trees of runs as netCDF-4 groups (DESIGN.md, "Several rates").

The root group holds the recording's attributes (id, name, description, created_at,
metadata, through the one attribute codec) and no variables; each node of the tree is a group
at its path, written exactly as a single run's file is (:mod:`daqlab.io._netcdf`: CF-1.8,
fixed-length text, time as float64 microseconds), so each group is CF-clean and readable by
netCDF-C (``ncdump -g``), and ``xr.open_dataset(path, group="fast")`` reads one. An events
node is a group with an ``event`` dimension: ``time`` (CF time), ``label`` (text) and
``duration`` (seconds). A file of one run at the root is a tree of one node.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr
from h5netcdf.utils import CompatibilityError

from daqlab.errors import DaqlabError, FormatError, SchemaError
from daqlab.io._atomic import atomic_path
from daqlab.io._cftime import decode_time, encode_time
from daqlab.io._h5read import _attrs, refuse_non_netcdf4
from daqlab.io._netcdf import (
    _cf_dataset,
    _char_attributes,
    _disk_bytes,
    _verify,
    from_disk,
    open_netcdf,
    to_disk,
)
from daqlab.io._records import SCHEMA_ATTR
from daqlab.io._summary import write_summaries
from daqlab.tree import (
    EVENTS,
    as_tree,
    check_tree,
    events_nodes,
    make_events,
    root_attrs,
    run_nodes,
    single_run,
)

__all__ = ["is_tree_file", "open_netcdf_run", "open_netcdf_tree", "save_netcdf_tree"]

_EVENT_TIME_ATTRS = {"standard_name": "time", "long_name": "time of event (UTC)", "axis": "T"}


def _events_dataset(events: xr.Dataset) -> tuple[xr.Dataset, dict[str, dict[str, Any]]]:
    """An events node as written, with the encoding of each variable."""
    ds = to_disk(events)
    counts, units = encode_time(events["time"].values)
    ds = ds.assign_coords(time=("event", counts, {**_EVENT_TIME_ATTRS, "units": units,
                                                  "calendar": "proleptic_gregorian"}))
    enc: dict[str, dict[str, Any]] = {
        "time": {"dtype": "float64", "_FillValue": None}, "label": {"dtype": "S1"},
           "duration": {"_FillValue": None}}
    return ds, enc


def save_netcdf_tree(tree: xr.DataTree, path: Path, *, overwrite: bool = False,
                     compression: bool = False) -> Path:
    """Write ``tree`` as netCDF-4 groups, atomically; a tree whose only node is the root is
    written as a single run's file."""
    check_tree(tree, check_data=False)
    runs, events = run_nodes(tree), events_nodes(tree)
    nodes: list[tuple[str, xr.Dataset, xr.Dataset, dict[str, dict[str, Any]]]] = []
    try:
        root = xr.Dataset(attrs=root_attrs(tree)) if "/" not in runs else runs["/"]
        if "/" in runs:
            ds, enc = _cf_dataset(runs.pop("/"), compression)
        else:
            ds, enc = to_disk(root), {}
        nodes.append(("/", root, ds, enc))
        for key, run in runs.items():
            nodes.append((key, run, *_cf_dataset(run, compression)))
        for key, ev in events.items():
            nodes.append((key, ev, *_events_dataset(ev)))
    except DaqlabError:
        raise
    except ValueError as exc:
        raise FormatError(f"cannot write {path.name} as NetCDF: {exc}.") from None
    with atomic_path(path, overwrite=overwrite,
                     expected_bytes=sum(_disk_bytes(ds) for _, _, ds, _ in nodes)) as tmp:
        for key, _, ds, enc in nodes:
            try:
                ds.to_netcdf(tmp, mode="w" if key == "/" else "a", engine="h5netcdf",
                             group=None if key == "/" else key, encoding=enc)
            except (TypeError, ValueError, CompatibilityError) as exc:
                raise FormatError(
                    f"cannot write node {key!r} of {path.name} as NetCDF: {exc}. Variable "
                    "attributes go to NetCDF as they are: give numbers or text.") from exc
        _char_attributes(tmp)
        write_summaries(tmp, {key: run for key, run, _, _ in nodes if "value" in run.data_vars})
        for key, run, _, _ in nodes:
            if "value" in run.data_vars:
                _verify(tmp, run, key)
    return path


def _groups(f: h5py.File) -> tuple[list[str], list[str]]:
    """The paths of the groups of ``f`` that hold a run, and of those that hold events."""
    runs: list[str] = []
    events: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group):
            if "value" in obj and isinstance(obj["value"], h5py.Dataset):
                runs.append("/" + name)
            elif _text(obj.attrs.get("daqlab_node", "")) == EVENTS:
                events.append("/" + name)

    f.visititems(visit)
    return runs, events


def _text(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def is_tree_file(path: Path) -> bool:
    """True if the daqlab NetCDF file at ``path`` holds runs in groups (a tree)."""
    try:
        with h5py.File(path, "r") as f:
            return any(isinstance(f.get(k), h5py.Group) for k in f) and SCHEMA_ATTR in f.attrs
    except (OSError, RuntimeError, KeyError, ValueError):
        return False  # the single-run reader says what is wrong


def open_netcdf_run(path: Path, chunks: Any = None) -> xr.Dataset:
    """The one run of a daqlab NetCDF file: the root's, or the only group's of a tree (a tree
    of several is a NotFoundError naming its groups)."""
    if is_tree_file(path):
        return single_run(open_netcdf_tree(path, chunks), None, str(path))
    return open_netcdf(path, chunks)


def _open_events(path: Path, group: str) -> xr.Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ds = xr.open_dataset(path, engine="h5netcdf", group=group, decode_times=False).load()
        ds = from_disk(ds, path)
        t = ds["time"]
        times = decode_time(t.values, _text(t.attrs["units"]), _text(t.attrs.get("calendar", "standard")))
        labels = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)
                  for v in ds["label"].values.tolist()]
        return make_events(times, labels, ds["duration"].values, name=ds.attrs.get("name", ""),
                           metadata=ds.attrs.get("metadata", {}))
    except DaqlabError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise FormatError(f"{path}: events group {group!r} could not be read ({type(exc).__name__}: "
                          f"{exc}); the file was damaged or edited by another tool.") from exc


def open_netcdf_tree(path: Path, chunks: Any = None) -> xr.DataTree:
    """A daqlab NetCDF file as a tree: each group holding a run is a node (lazy with
    ``chunks``), each events group an events node, the root's attributes the tree's."""
    try:
        with h5py.File(path, "r") as f:
            refuse_non_netcdf4(f, path)
            root_has_run = "value" in f
            runs, events = _groups(f)
            attrs = _attrs(f)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise FormatError(f"{path} could not be read as NetCDF4/HDF5 ({type(exc).__name__}: {exc}); "
                          "it is truncated or damaged.") from exc
    if root_has_run or not (runs or events):
        run = open_netcdf(path, chunks)
        if not (runs or events):
            return as_tree(run)
        nodes: dict[str, xr.Dataset] = {"/": run}
    else:
        if SCHEMA_ATTR not in attrs:
            raise FormatError(f"{path} is a NetCDF file with groups but not a daqlab tree of runs (no "
                              f"{SCHEMA_ATTR} attribute on its root); open it with xarray.open_datatree.")
        nodes = {"/": from_disk(xr.Dataset(attrs=attrs), path)}
    for group in runs:
        nodes[group] = open_netcdf(path, chunks, group)
    for group in events:
        nodes[group] = _open_events(path, group)
    try:
        tree = xr.DataTree.from_dict(nodes)
        return check_tree(tree, check_data=False)
    except SchemaError as exc:
        raise FormatError(f"{path} does not hold a valid tree of runs: {exc}") from None
    except ValueError as exc:  # groups that do not fit one tree
        raise FormatError(f"{path}: its groups do not make a tree of runs ({exc}).") from None
