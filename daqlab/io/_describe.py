"""What a catalog lists of one saved run (a file of any format, or a recording folder), cheaply.

:func:`describe` returns a JSON-able record: the format, state, attributes and, per run (a
file of several rates holds several), the rate, channels, units, sample count, time span and
quality counts. daqlab's own NetCDF and CSV files carry those counts in a stored summary
(:mod:`daqlab.io._summary`), so they are read from attributes; every other file is opened
lazily and its quality flags counted chunk by chunk, once (the catalog keeps the record).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from daqlab.errors import DaqlabError, FormatError
from daqlab.io._capfile import is_captures
from daqlab.io._codec import decode_attrs, to_json
from daqlab.io._csv import sidecar_path
from daqlab.io._csv_read import read_sidecar
from daqlab.io._formats import HDF5_MAGIC, TABLE, sniff
from daqlab.io._h5read import _attr_value
from daqlab.io._nctree import _groups
from daqlab.io._netcdf import ENCODING_ATTR, decode_disk_attrs
from daqlab.io._open import _detect, open_tree
from daqlab.io._recorder import RECORDING_SUFFIX, is_recording
from daqlab.io._records import SCHEMA_ATTR
from daqlab.io._session import SESSION_SUFFIX
from daqlab.io._session import _read as read_session
from daqlab.io._summary import run_summary, stored_summary, valid_summary
from daqlab.io._writerlock import recording_state
from daqlab.tree import run_nodes

__all__ = ["RUN_SUFFIXES", "describe", "disk_bytes", "is_run_name"]


def disk_bytes(path: Path) -> int:
    """Bytes a run takes on disk: a file (with a CSV's sidecar), or every file of a folder."""
    if path.is_dir():
        return sum(e.stat().st_size for e in os.scandir(path) if e.is_file(follow_symlinks=False))
    size = path.stat().st_size
    side = sidecar_path(path)
    if path.suffix.lower() == ".csv" and side.is_file():
        size += side.stat().st_size
    return size


def _ns(value: Any) -> int | None:
    """A time attribute (ISO text or datetime64) as ns since 1970, or None."""
    if value is None or value == "":
        return None
    try:
        t = np.datetime64(str(value).rstrip("Z").replace("+00:00", ""), "ns")
    except ValueError:
        return None
    return None if np.isnat(t) else int(t.view(np.int64))


def _node(group: str, attrs: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    rate = attrs.get("sample_rate")
    return {
        "group": group, "name": str(attrs.get("name", "")), "id": str(attrs.get("id", "")),
        "sample_rate": float(rate) if isinstance(rate, (int, float, np.number)) else None,
        "calibrated": bool(attrs.get("calibrated", False)),
        **{k: summary[k] for k in ("samples", "start", "end", "quality", "channels", "units")},
    }


def _record(fmt: str, state: str, attrs: Mapping[str, Any], nodes: list[dict[str, Any]]) -> dict[str, Any]:
    metadata = attrs.get("metadata", {})
    return {
        "format": fmt, "state": state, "error": "",
        "name": str(attrs.get("name", "")), "id": str(attrs.get("id", "")),
        "description": str(attrs.get("description", "")), "created": _ns(attrs.get("created_at")),
        "metadata": to_json(metadata) if isinstance(metadata, dict) else {}, "nodes": nodes,
    }


def _from_tree(path: Path, chunks: Any, fmt: str, state: str) -> dict[str, Any]:
    """The record of the tree at ``path``, opened with ``chunks`` (lazily: quality counted
    chunk by chunk), then closed (a lazy tree holds its files open until collected)."""
    tree = open_tree(path, chunks=chunks)
    try:
        nodes = [_node(key, run.attrs, run_summary(run)) for key, run in run_nodes(tree).items()]
        return _record(fmt, state, {str(k): v for k, v in tree.attrs.items()}, nodes)
    finally:
        tree.close()


_LISTED = ("name", "id", "description", "created_at", "sample_rate", "calibrated", "metadata",
           SCHEMA_ATTR, ENCODING_ATTR)
"""The attributes a catalog lists, and the two that say how to decode them: read alone, as
h5py reads each attribute for ~0.2 ms (a run's file holds twice as many)."""


def _listed_attrs(obj: h5py.Group, path: Path) -> dict[str, Any]:
    stored = obj.attrs
    raw = {}
    for key in _LISTED:
        value = stored.get(key)
        if value is not None:
            raw[key] = _attr_value(value)
    return decode_disk_attrs(raw, path)


def _netcdf(path: Path) -> dict[str, Any] | None:
    """The record of a daqlab NetCDF file from its attributes and the summary stored with each
    run (its counts), or None where a run has no valid one."""
    # no HDF5 file locking: nothing is written, and daqlab writes under temporary names
    with h5py.File(path, "r", locking=False) as f:
        root = _listed_attrs(f, path)  # a FormatError if not ours or newer: the reader says why
        groups = ["/"] if "value" in f else _groups(f)[0]
        nodes = []
        for key in groups:
            group = f if key == "/" else f[key]
            summary = stored_summary(group)
            if summary is None:
                return None
            nodes.append(_node(key, root if key == "/" else _listed_attrs(group, path), summary))
    return _record("netcdf", "complete", root, nodes)


def _csv(path: Path, fmt: str) -> dict[str, Any] | None:
    """The record of a CSV from its sidecar's summary (checked to describe the CSV), or None."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    header = read_sidecar(side, path)
    summary = valid_summary(header.get("summary"), header["samples"], len(header["channels"]))
    if summary is None:
        return None
    try:
        attrs = decode_attrs(header["attrs"], header["attr_types"])
    except ValueError as exc:
        raise FormatError(f"{side} is damaged: {exc}.") from None
    return _record(fmt, "complete", attrs, [_node("/", attrs, summary)])


RUN_SUFFIXES = frozenset(s for f in TABLE for s in f.suffixes) | {SESSION_SUFFIX}
"""Names a run file ends with: such a file that cannot be read is a damaged run, not another
kind of file."""


def is_run_name(path: Path) -> bool:
    """True if ``path``'s name is one a run file has (see :data:`RUN_SUFFIXES`)."""
    name = path.name.lower()
    return path.suffix.lower() in RUN_SUFFIXES or name.endswith(SESSION_SUFFIX)


def describe(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A record of the run(s) at ``path`` for a catalog (see the module's docstring), or
    ``None`` for a file that is no run (a picture, a notebook: no format knows it, and its name
    is not a run file's).

    Raises a :class:`~daqlab.DaqlabError` for a run daqlab cannot read (its message is the
    catalog's ``error``).
    """
    p = Path(path)
    if not p.is_dir() and not is_run_name(p) and sniff(p) is None:
        return None
    if is_recording(p) or is_captures(p):  # folders a writer fills: it may still be at it
        return _from_tree(p, _chunks_for(p), "recording" if is_recording(p) else "captures",
                          recording_state(p))
    record = None
    with p.open("rb") as f:
        head = f.read(8)
    if head == HDF5_MAGIC:  # daqlab's NetCDF: the summary alone, without detecting the format
        try:
            record = _netcdf(p)
        except (OSError, KeyError, ValueError, TypeError, DaqlabError):
            record = None  # the full reader below says what is wrong
        if record is not None:
            return record
    fmt = _detect(p)
    if fmt in ("csv", "csv-wide"):
        record = _csv(p, fmt)
    if record is None:
        # a session manifest is small, its recordings need not be
        record = _from_tree(p, {} if fmt == "session" else _chunks_for(p), fmt,
                            _session_state(p) if fmt == "session" else "complete")
    return record


_STATES = ("recording", "crashed", "complete")
_EAGER_BYTES = 64 << 20


def _chunks_for(path: Path) -> dict[str, Any] | None:
    """Read small runs whole (dask's bookkeeping costs more than their samples), big ones lazily
    (their quality counted chunk by chunk, never all in memory)."""
    return None if disk_bytes(path) < _EAGER_BYTES else {}


def _session_state(path: Path) -> str:
    """A session's state: ``recording`` while any of its recordings is, else ``crashed`` if any
    recorder died, else ``complete``."""
    states = []
    for _, run in read_session(path)[1]:
        folder = run if is_recording(run) else run.with_suffix(RECORDING_SUFFIX)
        states.append(recording_state(folder) if is_recording(folder) else "complete")
    return min(states, key=_STATES.index, default="complete")
