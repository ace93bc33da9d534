"""``save`` and ``open_run``: the format from the suffix, or from the file's contents."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import xarray as xr

from daqlab.errors import FormatError, StorageError
from daqlab.io._netcdf import open_netcdf, save_netcdf
from daqlab.io._recorder import RECORDING_SUFFIX, is_recording, open_recording

__all__ = ["FORMATS", "open_run", "save"]

FORMATS = ("netcdf",)
"""Formats ``save`` writes; the storage work adds csv, csv-wide and seed-hdf5."""

_SUFFIXES = {".nc": "netcdf", ".nc4": "netcdf", ".h5": "netcdf", ".hdf5": "netcdf"}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _format_for(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in FORMATS:
            raise FormatError(f"format {format!r} is not supported; choose one of {list(FORMATS)}.")
        return format
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise FormatError(
            f"cannot tell the format of {path.name!r} from its suffix; use one of "
            f"{sorted(_SUFFIXES)} or pass format= (one of {list(FORMATS)})."
        )
    return fmt


def save(
    run: xr.Dataset, path: str | os.PathLike[str], format: str | None = None,
    *, overwrite: bool = False, compression: bool = False,
) -> Path:
    """Save ``run`` to ``path``, written under a temporary name and renamed when complete.

    Returns the path written. An existing file is kept unless ``overwrite=True``.
    """
    p = Path(path)
    _format_for(p, format)
    return save_netcdf(run, p, overwrite=overwrite, compression=compression)


def open_run(path: str | os.PathLike[str], chunks: Any = None) -> xr.Dataset:
    """Open a saved run; ``chunks`` (as in xarray) gives a lazy dask-backed run."""
    p = Path(path)
    if not p.exists():
        recording = p.with_suffix(RECORDING_SUFFIX)
        if is_recording(recording):  # the recorder was killed before it wrote the final file
            return open_recording(recording, chunks)
        raise StorageError(2, f"{p} does not exist; check the path (cwd is {Path.cwd()}).")
    if is_recording(p):
        return open_recording(p, chunks)
    if p.is_dir():
        raise FormatError(f"{p} is a folder but not a daqlab recording (no run.json in it).")
    with p.open("rb") as f:
        head = f.read(8)
    if head == _HDF5_MAGIC:
        return open_netcdf(p, chunks)
    raise FormatError(
        f"{p} is not a format daqlab reads (it does not start like an HDF5/NetCDF4 file); "
        f"supported: {list(FORMATS)}."
    )
