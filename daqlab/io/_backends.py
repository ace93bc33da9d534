"""xarray backend entry points: ``xr.open_dataset(path, engine="daqlab")`` and friends.

- ``engine="daqlab"``: any run daqlab reads (NetCDF, CSV, seed HDF5, recording folders).
- ``engine="daqlab-csv"``: daqlab's long or wide CSV (and the seed's plain CSV).
- ``engine="daqlab-seed"``: the seed's ``/data/<channel>/timestamps|values`` HDF5 layout.

The CSV and seed engines also answer xarray's ``guess_can_open``, so
``xr.open_dataset("run.csv")`` finds them without naming an engine. Every engine
registers a close (``Dataset.set_close``), so ``xr.open_mfdataset(paths, engine=...)``
closes, as a ``with`` block too.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import xarray as xr
from xarray.backends import BackendEntrypoint

from daqlab.errors import ConfigurationError, FormatError, StorageError
from daqlab.io._atomic import probe, storage_errors
from daqlab.io._formats import by_engine, sniff
from daqlab.io._open import open_run
from daqlab.tree import single_run

__all__ = [
    "DaqlabAudioBackendEntrypoint",
    "DaqlabBackendEntrypoint",
    "DaqlabCsvBackendEntrypoint",
    "DaqlabEdfBackendEntrypoint",
    "DaqlabMdf4BackendEntrypoint",
    "DaqlabSeedBackendEntrypoint",
    "DaqlabTdmsBackendEntrypoint",
    "DaqlabXdfBackendEntrypoint",
]


def _path(filename_or_obj: Any) -> Path | None:
    if isinstance(filename_or_obj, (str, os.PathLike)):
        return Path(filename_or_obj)
    return None


class _DaqlabEntrypoint(BackendEntrypoint):
    """Opens a path with ``opener`` (a daqlab reader) and drops the variables asked for."""

    open_dataset_parameters: ClassVar[tuple[str, ...]] = ("filename_or_obj", "drop_variables")

    def opener(self, path: Path) -> xr.Dataset:
        raise NotImplementedError

    def open_dataset(self, filename_or_obj: Any, *, drop_variables: str | Iterable[str] | None = None,
                     **kwargs: Any) -> xr.Dataset:
        path = _path(filename_or_obj)
        if path is None:
            raise ConfigurationError(
                f"daqlab's xarray engines open paths (str or pathlib.Path); got "
                f"{type(filename_or_obj).__name__}. Pass the file's path, not an open file or bytes."
            )
        opened = self.opener(path)
        # a new object, so that closing it closes what the opener left open (xarray calls the
        # close of every dataset open_mfdataset combined, and a missing one raises TypeError)
        ds = (opened.copy(deep=False) if drop_variables is None
              else opened.drop_vars(drop_variables, errors="ignore"))
        ds.set_close(opened.close)
        return ds


class DaqlabBackendEntrypoint(_DaqlabEntrypoint):
    """Every run daqlab reads, detected from its contents (as ``daqlab.open_run``)."""

    description = "daqlab runs: NetCDF4, CSV (long/wide), the seed's HDF5 layout, recordings"

    def opener(self, path: Path) -> xr.Dataset:
        return open_run(path)

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return False  # only when asked for by name: NetCDF belongs to xarray's own engines


class _FormatEngine(_DaqlabEntrypoint):
    """The engine of some rows of the format table (those whose ``engine`` is ``name``)."""

    name = ""
    what = ""  # "a CSV file": for the error on a folder

    suffixes: tuple[str, ...] = ()
    """Only files with these suffixes are guessed (none: any)."""

    def opener(self, path: Path) -> xr.Dataset:
        if not probe(path, "exists", "open"):
            raise StorageError(errno.ENOENT, f"{path} does not exist; check the path (cwd is "
                               f"{Path.cwd()}).")
        if probe(path, "is_dir", "open"):
            raise StorageError(
                errno.EISDIR, f"{path} is a folder, not {self.what}; engine={self.name!r} opens "
                "one file (a recording folder opens with engine='daqlab' or daqlab.open_run)."
            )
        with storage_errors(path, "read"):
            formats = by_engine(self.name)
            try:
                fmt = sniff(path, formats)
            except FormatError:  # another format's container (a plain HDF5 file...)
                fmt = None
            # a file none of them recognises: the first one's reader says what is wrong
            entry = fmt or formats[0]
            if entry.open is not None:
                return entry.open(path, None)
            return single_run(entry.open_tree(path, None), None, str(path))

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        path = _path(filename_or_obj)
        if path is None or not path.is_file():
            return False
        formats = by_engine(self.name)
        if self.suffixes and path.suffix.lower() not in self.suffixes:
            return False
        try:
            return sniff(path, formats) is not None
        except (OSError, FormatError):
            return False


class DaqlabCsvBackendEntrypoint(_FormatEngine):
    """daqlab's CSV layouts."""

    description = "daqlab CSV runs (long form timestamp_ms,value,channel,quality and wide form)"
    name = "daqlab-csv"
    what = "a CSV file"
    suffixes = (".csv",)


class _ForeignEngine(_FormatEngine):
    """The engine of one of other tools' formats: ``xr.open_dataset(path, engine=..., group=...)``
    gives one run (``group`` names it where the file holds several), ``xr.open_datatree``
    the whole file as a tree."""

    open_dataset_parameters = ("filename_or_obj", "drop_variables", "group")

    def open_dataset(self, filename_or_obj: Any, *, drop_variables: str | Iterable[str] | None = None,
                     group: str | None = None, **kwargs: Any) -> xr.Dataset:
        self._group = group
        return super().open_dataset(filename_or_obj, drop_variables=drop_variables, **kwargs)

    def opener(self, path: Path) -> xr.Dataset:
        return single_run(self.open_datatree(path), getattr(self, "_group", None), str(path))

    def open_datatree(self, filename_or_obj: Any, **kwargs: Any) -> xr.DataTree:
        path = _path(filename_or_obj)
        if path is None:
            raise ConfigurationError(f"engine={self.name!r} opens paths (str or pathlib.Path); got "
                                     f"{type(filename_or_obj).__name__}.")
        with storage_errors(path, "read"):
            (entry,) = by_engine(self.name)
            return entry.open_tree(path, None)


def _foreign(name: str, what: str, suffixes: tuple[str, ...], text: str) -> type[_ForeignEngine]:
    return type(f"Daqlab{name.split('-')[1].title()}BackendEntrypoint", (_ForeignEngine,), {
        "name": name, "what": what, "suffixes": suffixes, "description": text,
        "__doc__": text, "__module__": __name__})


DaqlabTdmsBackendEntrypoint = _foreign("daqlab-tdms", "a TDMS file", (".tdms",),
                                       "NI TDMS files (npTDMS): one run per group")
DaqlabMdf4BackendEntrypoint = _foreign("daqlab-mdf4", "an MDF4 file", (".mf4", ".mdf"),
                                       "ASAM MDF4 files (asammdf): one run per channel group")
DaqlabEdfBackendEntrypoint = _foreign("daqlab-edf", "an EDF/BDF file", (".edf", ".bdf"),
                                      "EDF, EDF+ and BDF files (pyEDFlib): one run per sample rate")
DaqlabXdfBackendEntrypoint = _foreign("daqlab-xdf", "an XDF file", (".xdf", ".xdfz"),
                                      "XDF files (Lab Streaming Layer): one run per stream")
DaqlabAudioBackendEntrypoint = _foreign("daqlab-audio", "a WAV or FLAC file", (".wav", ".flac"),
                                        "WAV and FLAC files (soundfile): one run")


class DaqlabSeedBackendEntrypoint(_FormatEngine):
    """The seed's HDF5 layout (``/data/<channel>/timestamps|values``, ``/metadata``)."""

    description = "HDF5 files in the seed's /data/<channel>/timestamps|values layout"
    name = "daqlab-seed"
    what = "an HDF5 file"
