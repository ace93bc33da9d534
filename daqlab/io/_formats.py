"""The one table of run formats: what ``save``, ``open_run``, detection, the CLI and
the xarray engines loop over.

A format is one :class:`Format` entry: its name, the suffixes that choose it, a
sniff of the file's contents, ``open_tree`` (path, chunks -> a tree of runs) and,
for formats that hold one run, ``open`` (path, chunks -> run), an optional ``save``
and the xarray engine that opens it. Other tools' formats are read-only entries
whose modules (and libraries, the ``daqlab[formats]`` extra) load when first used. Adding a format is one
module with those functions, one entry in :data:`TABLE`, and a row in the
shared format contract tests (``tests/io/test_formats.py``).

Detection peeks at a file once (:class:`Peek`: its first bytes, and an HDF5
file opened at most once for every format that asks) and takes the entry whose
sniff says yes; sniffs of formats sharing a container exclude each other (the
netCDF-4 sniff says no to the seed's HDF5 layout), so the table's order is only
the order formats are listed in.
"""

from __future__ import annotations

import functools
import importlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import xarray as xr

from daqlab.errors import FormatError
from daqlab.io._csv import open_csv, save_csv, sniff_csv
from daqlab.io._nctree import open_netcdf_run, open_netcdf_tree, save_netcdf_tree
from daqlab.io._netcdf import refuse_non_netcdf4, save_netcdf
from daqlab.io._seed import is_seed_hdf5, open_seed, save_seed
from daqlab.io._session import open_session, sniff_session
from daqlab.tree import as_tree

__all__ = ["FORMATS", "TABLE", "Format", "Peek", "by_engine", "by_name", "by_suffix", "sniff"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_HEAD = 4096  # bytes read for a sniff


class Peek:
    """What detection looks at in one file, each read at most once: the first bytes, and
    (for HDF5 files) the file opened with h5py. Use as a context manager: it closes the
    HDF5 file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as f:
            self.head = f.read(_HEAD)

    @property
    def is_hdf5(self) -> bool:
        return self.head.startswith(HDF5_MAGIC)

    @functools.cached_property
    def h5(self) -> h5py.File | None:
        """The file opened read-only with h5py, or None if it is not HDF5 or too damaged to open."""
        if not self.is_hdf5:
            return None
        try:
            return h5py.File(self.path, "r")
        except (OSError, RuntimeError, KeyError, TypeError, ValueError):
            return None

    def __enter__(self) -> Peek:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if "h5" in self.__dict__ and self.h5 is not None:
            self.h5.close()


Opener = Callable[[Path, Any], xr.Dataset]
TreeOpener = Callable[[Path, Any], xr.DataTree]
Saver = Callable[[xr.Dataset, Path, bool, bool], Path]  # run, path, overwrite, compression
TreeSaver = Callable[[xr.DataTree, Path, bool, bool], Path]


@dataclass(frozen=True)
class Format:
    """One row of the table of formats."""

    name: str
    """What ``save(format=...)``, ``detect_format`` and the CLI call it."""
    description: str
    sniff: Callable[[Peek], bool]
    """True if the peeked file is in this format (may raise a FormatError saying why a file
    of this container is not a run, e.g. a plain HDF5 file)."""
    open_tree: TreeOpener
    """The file as a tree of runs (one node per rate group, stream...; a single run: one node)."""
    open: Opener | None = None
    """The file's single run, for formats that hold one (faster than through a tree)."""
    save: Saver | None = None
    """None for formats daqlab reads but does not write."""
    save_tree: TreeSaver | None = None
    """For formats that store a tree of several runs (NetCDF's groups)."""
    suffixes: tuple[str, ...] = ()
    """Lower-case suffixes that choose this format when saving without ``format=`` (a read-only
    format's are refused by ``save`` with a message naming the formats it writes)."""
    engine: str | None = None
    """The xarray engine (besides ``"daqlab"``) that opens it."""


def _sniff_seed(peek: Peek) -> bool:
    return peek.h5 is not None and is_seed_hdf5(peek.h5)


def _sniff_netcdf(peek: Peek) -> bool:
    if not peek.is_hdf5 or _sniff_seed(peek):
        return False
    if peek.h5 is not None:
        refuse_non_netcdf4(peek.h5, peek.path)  # any other HDF5 file: an error saying what it is
    return True  # (a file too damaged to open: the NetCDF reader says what is wrong)


def _lazy(module: str, function: str) -> TreeOpener:
    """An opener that imports ``daqlab.io.<module>`` (and so its library) when first called."""
    def opener(path: Path, chunks: Any) -> xr.DataTree:
        fn: TreeOpener = getattr(importlib.import_module(f"daqlab.io.{module}"), function)
        return fn(path, chunks)

    return opener


def _open_session(path: Path, chunks: Any) -> xr.DataTree:
    from daqlab.io._open import open_run  # (it loops over this table)

    return open_session(path, chunks, lambda p, c: open_run(p, c))


def _sniff_xdf(peek: Peek) -> bool:
    """XDF, or (named ``.xdfz``) XDF compressed with gzip or zlib, as pyxdf and LabRecorder
    write it."""
    if peek.head.startswith(b"XDF:"):
        return True
    if peek.path.suffix.lower() != ".xdfz":
        return False
    try:
        return zlib.decompressobj(47).decompress(peek.head, 4) == b"XDF:"  # 47: gzip or zlib
    except zlib.error:
        return False


def _sniff_wav(peek: Peek) -> bool:
    h = peek.head
    return (h[:4] in (b"RIFF", b"RF64", b"BW64") and h[8:12] == b"WAVE") or h.startswith(b"fLaC")


TABLE: tuple[Format, ...] = (
    Format(
        "netcdf", "NetCDF4/HDF5, CF-1.8 (h5netcdf)",
        sniff=_sniff_netcdf,
        open_tree=open_netcdf_tree,
        open=open_netcdf_run,
        save=lambda run, path, overwrite, compression: save_netcdf(
            run, path, overwrite=overwrite, compression=compression),
        save_tree=lambda tree, path, overwrite, compression: save_netcdf_tree(
            tree, path, overwrite=overwrite, compression=compression),
        suffixes=(".nc", ".nc4", ".h5", ".hdf5"),
    ),
    Format(
        "csv", "CSV, long form (timestamp_ms,value,channel,quality) with a JSON sidecar",
        sniff=lambda p: sniff_csv(p.head) == "csv",
        open_tree=lambda p, c: as_tree(open_csv(p, c)),
        open=open_csv,
        save=lambda run, path, overwrite, compression: save_csv(run, path, overwrite=overwrite),
        suffixes=(".csv",),
        engine="daqlab-csv",
    ),
    Format(
        "csv-wide", "CSV, wide form (timestamp_ms,value:<channel>,quality:<channel>,...)",
        sniff=lambda p: sniff_csv(p.head) == "csv-wide",
        open_tree=lambda p, c: as_tree(open_csv(p, c)),
        open=open_csv,
        save=lambda run, path, overwrite, compression: save_csv(
            run, path, wide=True, overwrite=overwrite),
        engine="daqlab-csv",
    ),
    Format(
        "seed-hdf5", "HDF5 in the seed app's /data/<channel>/timestamps|values layout",
        sniff=_sniff_seed,
        open_tree=lambda p, c: as_tree(open_seed(p, c)),
        open=open_seed,
        save=lambda run, path, overwrite, compression: save_seed(run, path, overwrite=overwrite),
        engine="daqlab-seed",
    ),
    Format(
        "tdms", "NI TDMS (LabVIEW, NI-DAQmx), read with npTDMS; one node per group",
        sniff=lambda p: p.head.startswith(b"TDSm"),
        open_tree=_lazy("_tdms", "open_tdms"),
        suffixes=(".tdms",),
        engine="daqlab-tdms",
    ),
    Format(
        "mdf4", "ASAM MDF4 (vehicle and bus loggers), read with asammdf; one node per channel group",
        sniff=lambda p: p.head[:8] in (b"MDF     ", b"UnFinMF ") and p.head[8:9] == b"4",
        open_tree=_lazy("_mdf", "open_mdf"),
        suffixes=(".mf4", ".mdf"),
        engine="daqlab-mdf4",
    ),
    Format(
        "edf", "EDF, EDF+ and BDF (biosignals), read with pyEDFlib; one node per sample rate",
        sniff=lambda p: p.head[:8] in (b"0       ", b"\xffBIOSEMI"),
        open_tree=_lazy("_edf", "open_edf"),
        suffixes=(".edf", ".bdf"),
        engine="daqlab-edf",
    ),
    Format(
        "xdf", "XDF (Lab Streaming Layer recordings, e.g. LabRecorder); one node per stream",
        sniff=_sniff_xdf,
        open_tree=_lazy("_xdf", "open_xdf"),
        suffixes=(".xdf", ".xdfz"),
        engine="daqlab-xdf",
    ),
    Format(
        "wav", "WAV and FLAC audio, read with soundfile; integer PCM kept raw with its scaling",
        sniff=_sniff_wav,
        open_tree=_lazy("_audio", "open_audio"),
        suffixes=(".wav", ".flac"),
        engine="daqlab-audio",
    ),
    Format(
        "session", "a DataManager's session of several sources: a JSON manifest of their recordings",
        sniff=lambda p: sniff_session(p.head),
        open_tree=_open_session,
    ),
)

_BY_NAME = {f.name: f for f in TABLE}
_BY_SUFFIX = {s: f for f in TABLE for s in f.suffixes}

FORMATS: tuple[str, ...] = tuple(f.name for f in TABLE if f.save is not None)
"""Formats ``save`` writes (``open_run`` reads these, and recording folders)."""

READ_ONLY: tuple[str, ...] = tuple(f.name for f in TABLE if f.save is None)
"""Other tools' formats ``open_run`` and ``open_tree`` read (the ``daqlab[formats]`` extra)."""


def by_name(name: str) -> Format:
    """The entry called ``name``, or a FormatError listing the names."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise FormatError(f"format {name!r} is not supported; choose one of {list(FORMATS)} (or, "
                          f"to read, {list(READ_ONLY)}).") from None


def by_suffix(path: Path) -> Format:
    """The entry chosen by ``path``'s suffix when saving, or a FormatError."""
    fmt = _BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise FormatError(
            f"cannot tell the format of {path.name!r} from its suffix; use one of "
            f"{sorted(_BY_SUFFIX)} or pass format= (one of {list(FORMATS)})."
        )
    return fmt


def by_engine(engine: str) -> tuple[Format, ...]:
    """The entries an xarray engine opens."""
    return tuple(f for f in TABLE if f.engine == engine)


def sniff(path: Path, among: tuple[Format, ...] = TABLE) -> Format | None:
    """The first entry of ``among`` whose sniff recognises the file ``path``, or None.

    Raises OSError when the file cannot be read, and a format's FormatError when a file of
    its container is not a run (e.g. a plain HDF5 file)."""
    with Peek(path) as peek:
        for fmt in among:
            if fmt.sniff(peek):
                return fmt
    return None


def unknown(path: Path, head: bytes) -> FormatError:
    """The error for a file no entry recognises."""
    return FormatError(
        f"{path} is not a run daqlab can read: it is none of {list(FORMATS) + list(READ_ONLY)} "
        f"(first bytes {head[:16]!r}); recording folders open too."
    )


def _check() -> None:
    """Each name and suffix once; only known engines (pyproject.toml's entry points name them)."""
    if len(_BY_NAME) != len(TABLE) or len(_BY_SUFFIX) != sum(len(f.suffixes) for f in TABLE):
        raise RuntimeError("two formats share a name or a suffix")
    engines = {f.engine for f in TABLE} - {None}
    if not engines <= {"daqlab-csv", "daqlab-seed", "daqlab-tdms", "daqlab-mdf4", "daqlab-edf",
                       "daqlab-xdf", "daqlab-audio"}:
        raise RuntimeError(f"engines {engines} need entry points in pyproject.toml")


_check()
