"""A run's summary, stored in the files daqlab writes so a catalog reads attributes, not samples.

The summary (:func:`run_summary`) holds what a list of runs shows and cannot get from a file's
attributes alone: the number of samples, the first and last time, the count of samples of each
quality flag, the channels and their units. NetCDF keeps it as the text attribute
``daqlab_summary`` of each run's group (written after the samples, from the samples written);
CSV in its sidecar's ``summary``. It is a cache: :func:`stored_summary` takes it only where the
file's own dimensions still agree with it (a tool that cut the file and copied the attributes
does not fool it), and opening a run drops it (a run changed and saved again gets a new one).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from daqlab.io._codec import dumps, loads
from daqlab.model import Quality

__all__ = ["SUMMARY_ATTR", "quality_counts", "run_summary", "stored_summary", "write_summaries"]

SUMMARY_ATTR = "daqlab_summary"
_VERSION = 1
_FLAGS = len(Quality)
_SLAB = 1 << 22  # samples of one channel's quality read at a time from a file


def _counts_of(q: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """How many samples of each flag (0-3) ``q`` holds; mostly zeros is the quick case."""
    flat = np.ascontiguousarray(q).reshape(-1).view(np.uint8)
    nonzero = int(np.count_nonzero(flat))
    if nonzero == 0:
        out = np.zeros(_FLAGS, np.int64)
        out[0] = flat.size
        return out
    return np.bincount(flat, minlength=_FLAGS)[:_FLAGS].astype(np.int64)


def quality_counts(quality: Any) -> list[int]:
    """Samples of each :class:`~daqlab.Quality` flag in ``quality``: a numpy or dask array, or an
    HDF5 dataset (read a slab at a time)."""
    if isinstance(quality, h5py.Dataset):
        total = np.zeros(_FLAGS, np.int64)
        if quality.ndim != 2:
            return [int(x) for x in _counts_of(quality[()])]
        rows, n = quality.shape
        for i in range(rows):
            for a in range(0, n, _SLAB):
                total += _counts_of(quality[i, a:a + _SLAB])
        return [int(x) for x in total]
    if hasattr(quality, "to_delayed"):  # dask: counted chunk by chunk, in one compute
        import dask
        from dask.delayed import delayed

        tasks = [delayed(_counts_of)(b) for b in quality.to_delayed().ravel()]
        parts = dask.compute(*tasks)  # type: ignore[attr-defined,no-untyped-call]
        total = np.sum(parts, axis=0) if parts else np.zeros(_FLAGS, np.int64)
        return [int(x) for x in total]
    return [int(x) for x in _counts_of(np.asarray(quality))]


def _time_ns(run: xr.Dataset, i: int) -> int | None:
    t = run["time"].values
    return int(t[i].astype("datetime64[ns]").view(np.int64)) if t.size else None


def run_summary(run: xr.Dataset, counts: list[int] | None = None) -> dict[str, Any]:
    """The summary of ``run``: samples, first/last time (ns since 1970, UTC), quality counts
    (computed here unless given), channels and units. Not the run's attributes: the file holds
    those, and a tool may edit them."""
    if counts is None:
        counts = quality_counts(run["quality"].data)
    return {
        "version": _VERSION,
        "samples": int(run.sizes["time"]),
        "start": _time_ns(run, 0),
        "end": _time_ns(run, -1),
        "quality": [int(c) for c in counts],
        "channels": [str(c) for c in run["channel"].values],
        "units": [str(u) for u in run["unit"].values] if "unit" in run.coords else
        [""] * run.sizes["channel"],
    }


def write_summaries(path: Path, runs: Mapping[str, xr.Dataset]) -> None:
    """Store the summary of each run (key: its group, ``"/"`` the root) in the NetCDF file
    ``path``, counting quality from memory where the run holds it, else from the file."""
    with h5py.File(path, "r+") as f:
        for key, run in runs.items():
            group = f[key] if key.strip("/") else f
            lazy = run["quality"].chunks is not None
            counts = quality_counts(group["quality"]) if lazy else None
            text = dumps(run_summary(run, counts)).encode("utf-8")
            kind = h5py.string_dtype("utf-8", max(len(text), 1))  # NC_CHAR, as CF wants text
            group.attrs.create(SUMMARY_ATTR, np.array(text, dtype=kind))


def valid_summary(summary: Any, samples: int, channels: int) -> dict[str, Any] | None:
    """``summary`` if it is one of ours and agrees with the run's ``samples`` and ``channels``."""
    if not isinstance(summary, dict) or summary.get("version") != _VERSION:
        return None
    try:
        ok = (summary["samples"] == samples
              and len(summary["channels"]) == channels
              and len(summary["units"]) == channels and len(summary["quality"]) == _FLAGS
              and sum(summary["quality"]) == samples * channels)
    except (KeyError, TypeError):
        return None
    return summary if ok else None


def stored_summary(group: h5py.Group) -> dict[str, Any] | None:
    """The summary stored in a NetCDF run's group, if there and still true of its dimensions."""
    raw = group.attrs.get(SUMMARY_ATTR)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        summary = loads(text)
        samples, channels = group["time"].shape[0], group["channel"].shape[0]
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError):
        return None
    return valid_summary(summary, samples, channels)
