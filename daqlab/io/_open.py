"""``save``, ``open_run`` and ``open_runs``: the format from the suffix, or from the contents."""

from __future__ import annotations

import errno
import glob
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from daqlab.errors import ConfigurationError, FormatError, SchemaError, StorageError
from daqlab.io._atomic import as_path, probe, storage_errors
from daqlab.io._capfile import is_captures, open_captures_tree
from daqlab.io._csv import sidecar_path
from daqlab.io._formats import FORMATS, READ_ONLY, by_name, by_suffix, sniff, unknown
from daqlab.io._recorder import RECORDING_SUFFIX, is_recording, open_recording_or_final
from daqlab.run import channels_of, check_chunks, coords_in_memory
from daqlab.tree import as_tree, check_tree, run_nodes, single_run

__all__ = ["FORMATS", "READ_ONLY", "detect_format", "open_run", "open_runs", "open_tree", "save"]


def format_for(path: Path, format: str | None) -> str:
    """The name of the format to save ``path`` in: ``format`` checked, or from the suffix."""
    return (by_suffix(path) if format is None else by_name(format)).name


def save(
    run: xr.Dataset | xr.DataTree, path: str | os.PathLike[str], format: str | None = None,
    *, overwrite: bool = False, compression: bool = False,
) -> Path:
    """Save ``run`` (or a tree of runs, ``xarray.DataTree``) to ``path``; returns the path written.

    A tree of several runs is written to NetCDF as netCDF-4 groups, one per node (other
    formats hold one run: save each node, ``tree["fast"].to_dataset()``).

    ``format`` is one of :data:`FORMATS`, or taken from the suffix (``.nc``,
    ``.h5`` -> NetCDF4; ``.csv`` -> long CSV). Every format is written under a
    hidden temporary name, checked and renamed into place, so a failure never
    leaves a half-written file under ``path``; an existing file is kept unless
    ``overwrite=True``. ``compression`` applies to NetCDF (zlib + shuffle).
    """
    p = as_path(path, "save's path")
    fmt = by_suffix(p) if format is None else by_name(format)
    if fmt.save is None:
        raise FormatError(f"daqlab reads {fmt.name} files but does not write them; save as one "
                          f"of {list(FORMATS)}.")
    if isinstance(run, xr.DataTree):
        if fmt.save_tree is not None:
            return fmt.save_tree(run, p, overwrite, compression)
        runs = run_nodes(check_tree(run, check_data=False))
        if list(runs) != ["/"]:
            raise FormatError(
                f"{fmt.name} holds one run, and this tree has {len(runs)} (at {list(runs)}); save "
                "it as NetCDF (format='netcdf', a .nc path), which keeps each run as a group, or save "
                "each run on its own (tree['<node>'].to_dataset()).")
        run = runs["/"]
    return fmt.save(run, p, overwrite, compression)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a saved run by its contents: one of :data:`FORMATS`, of
    :data:`READ_ONLY` (other tools' files) or ``"recording"``."""
    p = as_path(path, "detect_format's path")
    with storage_errors(p, "read"):
        return _detect(p)


def _detect(p: Path) -> str:
    if is_recording(p):
        return "recording"
    if is_captures(p):
        return "captures"
    if not p.exists():
        raise StorageError(errno.ENOENT, f"{p} does not exist; check the path (cwd is {Path.cwd()}).")
    if p.is_dir():
        raise FormatError(f"{p} is a folder but not a daqlab recording (no run.json in it).")
    try:
        fmt = sniff(p)
    except OSError as exc:
        raise StorageError(exc.errno or errno.EIO, f"cannot read {p}: {exc}") from exc
    if fmt is None:
        with p.open("rb") as f:
            raise unknown(p, f.read(16))
    return fmt.name


def open_run(path: str | os.PathLike[str], chunks: Any = None, *, group: str | None = None
             ) -> xr.Dataset:
    """Open a saved run of any supported format, detected from its contents.

    A file that holds several runs (a tree: rate groups, streams, channel groups) needs
    ``group=``, the node's path (e.g. ``"fast"``); without it the error names the groups.
    :func:`open_tree` opens them all.

    ``chunks`` (as in xarray: ``{}`` for the file's own chunks, ``"auto"``, a number of
    samples, or e.g. ``{"time": 1_000_000}``) gives a lazy dask-backed run. A recording
    folder, or the final name of a recording whose process died before it finished, opens
    as the run recorded so far; one that its recorder consolidates while it is being
    opened opens as the final file.
    """
    p = as_path(path, "open_run's path")
    chunks = check_chunks(chunks)
    with storage_errors(p, "open"):  # a path the OS refuses (too long, no permission...)
        return coords_in_memory(_open(p, chunks, group))


def open_tree(path: str | os.PathLike[str], chunks: Any = None) -> xr.DataTree:
    """Open a file of any supported format as a tree of runs (``xarray.DataTree``): one node
    per rate group, stream or channel group, each a run; a file of one run gives a tree of
    one node (the root). ``chunks`` as in :func:`open_run`."""
    p = as_path(path, "open_tree's path")
    chunks = check_chunks(chunks)
    with storage_errors(p, "open"):
        tree = _open(p, chunks, None, whole=True)
    return tree if isinstance(tree, xr.DataTree) else as_tree(coords_in_memory(tree))


def _open(p: Path, chunks: Any, group: str | None, whole: bool = False) -> Any:
    """A run (or, with ``whole``, a tree where the file holds one) of the file or recording ``p``."""
    if not probe(p, "exists", "open"):
        recording = p.with_suffix(RECORDING_SUFFIX) if p.name not in ("", ".", "..") else p
        if recording != p and is_recording(recording):
            # the recorder has not written the final file (yet: it may be consolidating now,
            # or it was killed before); should the folder vanish while it is read, the
            # final file is complete and is opened instead
            return _in_group(open_recording_or_final(recording, p, chunks, _open_file), group, p)
    fmt = _detect(p)
    if fmt == "recording":
        return _in_group(open_recording_or_final(p, None, chunks, _open_file), group, p)
    if fmt == "captures":
        captures = open_captures_tree(p, chunks)
        return captures if whole else coords_in_memory(single_run(captures, group, str(p)))
    entry = by_name(fmt)
    if entry.open is not None and group is None and not whole:
        return entry.open(p, chunks)
    tree = entry.open_tree(p, chunks)
    if whole:
        return tree
    return coords_in_memory(single_run(tree, group, str(p)))


def _in_group(run: xr.Dataset, group: str | None, p: Path) -> xr.Dataset:
    return run if group is None else single_run(as_tree(run), group, str(p))


def _open_file(p: Path, chunks: Any, fmt: str | None = None) -> xr.Dataset:
    """A run file (not a recording folder) of format ``fmt``, detected when ``None``."""
    fmt = _detect(p) if fmt is None else fmt
    if fmt in ("recording", "captures"):
        raise FormatError(f"{p} is a {fmt} folder where a run file was expected.")
    entry = by_name(fmt)
    if entry.open is not None:
        return entry.open(p, chunks)
    return single_run(entry.open_tree(p, chunks), None, str(p))


def _expand(paths_or_glob: object) -> list[Path]:
    what = "open_runs' paths_or_glob"
    if isinstance(paths_or_glob, (str, os.PathLike, bytes, bytearray)):
        p = as_path(paths_or_glob, what)
        text = str(p)
        if any(ch in text for ch in "*?["):
            found = [Path(q) for q in sorted(glob.glob(text))]
            # a CSV's sidecar is part of that run, not a run; other files named so are kept (and
            # open_run says what they are)
            sidecars = {sidecar_path(q) for q in found}
            return [q for q in found if q not in sidecars]
        return [p]
    if not isinstance(paths_or_glob, Iterable):
        raise ConfigurationError(
            f"{what} must be a path, a glob pattern (str) or an iterable of paths; got "
            f"{type(paths_or_glob).__name__} ({paths_or_glob!r:.80}). Pass e.g. 'runs/*.nc' or "
            "['a.nc', 'b.nc']."
        )
    return [as_path(q, f"open_runs' path #{i}") for i, q in enumerate(paths_or_glob)]


def open_runs(
    paths_or_glob: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], chunks: Any = None
) -> xr.Dataset:
    """Several runs of the same channels as one lazy run along time.

    Files are ordered by their first timestamp; they must have the same
    channels (names, units, calibration), sample rate and calibration state, and
    must not overlap in time. The result has a new id, the first run's other
    attributes, and ``metadata["sources"]`` listing each file and its run id.
    """
    paths = _expand(paths_or_glob)
    chunks = check_chunks(chunks)
    if not paths:
        raise StorageError(errno.ENOENT, f"no files match {paths_or_glob!r}.")
    runs = [open_run(p, chunks={} if chunks is None else chunks) for p in paths]
    def first_time(i: int) -> np.datetime64:
        t = runs[i]["time"].values
        return t[0] if t.size else np.datetime64(0, "ns")

    order = sorted(range(len(runs)), key=first_time)
    runs, paths = [runs[i] for i in order], [paths[i] for i in order]
    problems = [q for p, r in zip(paths[1:], runs[1:], strict=True)
                for q in join_problems(paths[0], runs[0], p, r)]
    for (pa, a), (pb, b) in zip(zip(paths, runs, strict=True), zip(paths[1:], runs[1:], strict=True),
                                strict=False):
        if overlap := overlap_problem(pa, a, pb, b):
            problems.append(overlap)
    if problems:
        raise SchemaError(problems, what="set of runs", hint=(
            "open_runs joins runs of the same channels that follow one another in time: give it "
            "only such files (a narrower glob, e.g. one recording's files), or open each with open_run."))
    return join_runs(runs, paths)


def join_problems(pa: Path, a: xr.Dataset, pb: Path, b: xr.Dataset) -> list[str]:
    """Why run ``b`` (from ``pb``) cannot be joined along time to run ``a`` (from ``pa``): channels
    (names, units, calibration), sample rate, calibration state, data variables; empty if it can."""
    problems = []
    if channels_of(b) != channels_of(a):
        problems.append(f"{pb.name}: channels {b.daq.channel_names} differ from "
                        f"{pa.name}'s {a.daq.channel_names} (names, units or calibration)")
    if b.attrs["sample_rate"] != a.attrs["sample_rate"]:
        problems.append(f"{pb.name}: sample_rate {b.attrs['sample_rate']} != {a.attrs['sample_rate']}")
    if b.attrs["calibrated"] != a.attrs["calibrated"]:
        problems.append(f"{pb.name}: calibrated={b.attrs['calibrated']} unlike {pa.name}")
    problems.extend(_variable_problems(pa, a, pb, b))
    return problems


def overlap_problem(pa: Path, a: xr.Dataset, pb: Path, b: xr.Dataset) -> str | None:
    """Why ``b`` cannot follow ``a`` in time (it starts before ``a`` ends), or None."""
    if a.sizes["time"] and b.sizes["time"] and b["time"].values[0] < a["time"].values[-1]:
        return (f"{pb.name} starts ({b['time'].values[0]}) before {pa.name} ends "
                f"({a['time'].values[-1]}): the runs overlap in time")
    return None


def join_runs(runs: list[xr.Dataset], paths: list[Path]) -> xr.Dataset:
    """Runs already checked to follow one another (:func:`join_problems`, :func:`overlap_problem`)
    as one run along time: a new id, the first run's other attributes, and
    ``metadata["sources"]`` listing each file and its run id."""
    first = runs[0]
    combined = xr.concat(runs, dim="time", data_vars="all", coords="minimal", compat="override",
                         combine_attrs="override", join="exact")
    attrs = dict(first.attrs)
    attrs["id"] = str(uuid.uuid4())
    attrs["metadata"] = {**first.attrs.get("metadata", {}),
                         "sources": [{"path": str(p), "id": r.attrs["id"]} for p, r in
                                     zip(paths, runs, strict=True)]}
    combined.attrs = attrs
    return combined


def _variable_problems(pa: Path, a: xr.Dataset, pb: Path, b: xr.Dataset) -> list[str]:
    """How the data variables of ``b`` differ from ``a``'s (names, dims, dtypes).

    Joining runs whose variables differ would fill the missing ones with NaN (or cast
    them) without a word: samples silently lost.
    """
    problems = []
    only_a = sorted(set(a.data_vars) - set(b.data_vars), key=str)
    only_b = sorted(set(b.data_vars) - set(a.data_vars), key=str)
    if only_a or only_b:
        have = " and ".join(
            f"only {name} has {vs}" for name, vs in ((pa.name, only_a), (pb.name, only_b)) if vs)
        problems.append(
            f"{pb.name}: data variables {sorted(map(str, b.data_vars))} differ from {pa.name}'s "
            f"{sorted(map(str, a.data_vars))} ({have}); joining them would fill the missing "
            "ones with NaN. Open the files with the same variables, or drop the extra ones "
            "before saving (e.g. run.drop_vars('raw'))."
        )
    for name in sorted(set(a.data_vars) & set(b.data_vars), key=str):
        va, vb = a[name], b[name]
        if va.dims != vb.dims or va.dtype != vb.dtype:
            problems.append(
                f"{pb.name}: data variable {name!r} has dims {vb.dims} and dtype {vb.dtype}, "
                f"but in {pa.name} dims {va.dims} and dtype {va.dtype}."
            )
    return problems
