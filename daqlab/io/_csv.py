"""Runs as CSV text: the seed's long form and a wide form, written and read with pyarrow.

:func:`save_csv` writes the CSV and, beside it, a JSON sidecar (``run.csv.daqlab.json``:
channels, attributes, exact times, the CSV's size and checksum); :func:`open_csv` reads the
pair, a CSV of older daqlab (a ``# daqlab-csv`` first line), or a plain CSV with defaults;
:func:`sniff_csv` tells the layout from a file's first bytes.

The layouts, cells, the sidecar, formula injection and old files: docs/formats/csv.md.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import errno
import hashlib
import json
import os
import re
import shutil
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import xarray as xr
from numpy.typing import NDArray

from daqlab._version import __version__
from daqlab.errors import ConfigurationError, FormatError, SchemaError, StorageError
from daqlab.io._atomic import atomic_path, fsync_dir, fsync_path, probe, temp_name
from daqlab.io._codec import JSON, decode_attrs, dumps, encode_attrs, to_json
from daqlab.io._foreign import foreign_defaults
from daqlab.io._records import channel_from_record, channel_record, check_schema_version, record_cal_date
from daqlab.model import Channel, Quality
from daqlab.run import (
    CHANNEL_COORDS,
    SCHEMA_VERSION,
    assemble_run,
    channels_of,
    chunk_samples,
    sample_times,
    validate,
)

__all__ = ["SIDECAR_SUFFIX", "open_csv", "save_csv", "sidecar_path", "sniff_csv"]

TIME_COLUMN = "timestamp_ms"
LONG_COLUMNS = (TIME_COLUMN, "value", "channel", "quality")
QUALITY_NAMES = tuple(q.name.capitalize() for q in Quality)
SIDECAR_SUFFIX = ".daqlab.json"
"""Appended to a CSV's file name to name its sidecar (``run.csv.daqlab.json``)."""
_MAGIC = b"# daqlab-csv "
_BOM = b"\xef\xbb\xbf"
_MAX_LINE = 1 << 26
_QUALITY_LOOKUP = {
    **{name.lower(): int(q) for name, q in zip(QUALITY_NAMES, Quality, strict=True)},
    **{str(int(q)): int(q) for q in Quality},
}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
_NS_PER_MS = 1_000_000
_MAX_MS = np.iinfo(np.int64).max // _NS_PER_MS
_NAME_MAX = 255  # bytes in one file name on common file systems


def sidecar_path(path: Path) -> Path:
    """The sidecar holding the metadata of the CSV ``path`` (see docs/formats/csv.md).

    A CSV name too long to take the suffix within 255 bytes is cut in the sidecar's
    name and kept unique by a hash of the whole name.
    """
    name = path.name + SIDECAR_SUFFIX
    if len(os.fsencode(name)) > _NAME_MAX:
        digest = hashlib.blake2b(os.fsencode(path.name), digest_size=4).hexdigest()
        stem = path.name
        while len(os.fsencode(stem)) > _NAME_MAX - len(SIDECAR_SUFFIX) - len(digest) - 1:
            stem = stem[:-1]
        name = f"{stem}~{digest}{SIDECAR_SUFFIX}"
    return path.with_name(name)


# --------------------------------------------------------------------------- text escaping


def _protect(text: str) -> str:
    """OWASP: a leading ``'`` keeps a spreadsheet from executing the cell."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _unprotect(text: str) -> str:
    return text[1:] if text.startswith("'") else text


def _unprotect_tree(obj: Any) -> Any:
    """Undo the protection of every string in a ``# daqlab-csv`` line (files before the sidecar)."""
    if isinstance(obj, str):
        return _unprotect(obj)
    if isinstance(obj, dict):
        return {_unprotect(k): _unprotect_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unprotect_tree(v) for v in obj]
    return obj


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\r\n') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


# --------------------------------------------------------------------------- attributes


def _encode_attrs(attrs: Mapping[Any, Any], where: str) -> dict[str, Any]:
    """The attributes as the sidecar holds them: strict JSON values and their types."""
    try:
        values, types = encode_attrs(attrs, JSON, where)
    except ConfigurationError as exc:
        raise FormatError(f"CSV {exc}") from None
    return {"attrs": values, "types": types}


# --------------------------------------------------------------------------- exact times


def _time_spec(ns: NDArray[np.int64], sample_rate: float) -> dict[str, Any]:
    """How to rebuild the exact times from the CSV's whole milliseconds (the sidecar's ``time``:
    docs/formats/csv.md)."""
    if not (ns % _NS_PER_MS).any():
        return {"encoding": "ms"}
    if np.array_equal(sample_times(int(ns[0]), 0, len(ns), sample_rate).view(np.int64), ns):
        return {"encoding": "grid", "start_ns": int(ns[0]), "sample_rate": sample_rate}
    below = (ns % _NS_PER_MS).astype("<u4")  # numpy's % floors, as the CSV's ms do
    return {"encoding": "sub-ms",
            "ns_below_ms": base64.b64encode(zlib.compress(below.tobytes())).decode("ascii")}


def _exact_times(ms_ns: NDArray[np.int64], spec: Any, where: str) -> NDArray[np.int64]:
    """The exact times (ns) from the CSV's whole-millisecond times (as ns) and ``spec``."""
    enc = spec.get("encoding") if isinstance(spec, dict) else None
    try:
        if enc == "ms":
            return ms_ns
        if enc == "grid":
            rate = spec["sample_rate"]
            if isinstance(rate, bool) or not isinstance(rate, int | float) \
                    or not 0 < rate < float("inf"):
                raise ValueError(f"sample_rate {rate!r} is not a positive finite number")
            ns = sample_times(int(spec["start_ns"]), 0, len(ms_ns), float(rate))
            exact: NDArray[np.int64] = ns.view(np.int64)
        elif enc == "sub-ms":
            below = np.frombuffer(zlib.decompress(base64.b64decode(spec["ns_below_ms"],
                                                                   validate=True)), "<u4")
            if len(below) != len(ms_ns) or (below >= _NS_PER_MS).any():
                raise ValueError(f"{len(below)} sub-millisecond parts for {len(ms_ns)} times")
            exact = ms_ns + below.astype(np.int64)
        else:
            raise ValueError(f"unknown time encoding {enc!r}")
    except (KeyError, TypeError, ValueError, OverflowError, zlib.error, binascii.Error) as exc:
        raise FormatError(f"{where} is damaged: its 'time' entry cannot be used ({exc}).") from None
    if not np.array_equal(exact - exact % _NS_PER_MS, ms_ns):
        raise FormatError(f"{where} is damaged: its exact times do not round down to the CSV's "
                          f"{TIME_COLUMN} values.")
    return exact


# --------------------------------------------------------------------------- writing


def _float_text(x: NDArray[np.float64]) -> pa.Array:
    """Shortest round-trip text, always with ``.`` or an exponent; ``NaN``, ``inf``, ``-inf``."""
    arr = pa.array(x)
    text = pc.cast(arr, pa.string())
    if (np.isfinite(x) & (x == np.trunc(x))).any():  # "2" would read as an integer column
        plain = pc.utf8_is_decimal(pc.utf8_ltrim(text, "-"))
        text = pc.if_else(plain, pc.binary_join_element_wise(text, ".0", ""), text)
    if np.isnan(x).any():  # Arrow writes "nan", which polars reads as text
        text = pc.if_else(pc.is_nan(arr), "NaN", text)
    return text


def _quality(codes: NDArray[np.int8]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), pa.array(QUALITY_NAMES))


def _header(run: xr.Dataset, wide: bool, variables: list[str], ns: NDArray[np.int64]
            ) -> dict[str, Any]:
    encoded = _encode_attrs(dict(run.attrs), "run")
    return {
        "format": "csv-wide" if wide else "csv",
        "schema_version": SCHEMA_VERSION,
        "daqlab_version": __version__,
        "csv": {},  # the CSV's size and checksum, known once it is written
        "samples": run.sizes["time"],
        "time": _time_spec(ns, float(run.attrs["sample_rate"])),
        # the exact dates of the coordinate (a Calibration keeps microseconds)
        "channels": [to_json(channel_record(ch, date)) for ch, date in
                     zip(channels_of(run), run["cal_date"].values, strict=True)],
        "variables": variables,
        "attrs": encoded["attrs"],
        "attr_types": encoded["types"],
        "var_attrs": {str(k): _encode_attrs(dict(v.attrs), f"variable {k!r}")
                      for k, v in run.variables.items()},
    }


def _placeholder(i: int) -> str:
    # control characters never occur in a channel name (check_channel_name) nor in other cells
    return f"\x01{i}\x01"


def _long_table(names: list[str], ms: NDArray[np.int64], arrays: dict[str, NDArray[Any]]
                ) -> pa.Table:
    c, n = len(names), len(ms)
    cells = [_protect(name) for name in names]
    columns = {
        TIME_COLUMN: pa.array(np.repeat(ms, c)),
        "value": _float_text(arrays["value"].T.ravel()),
        "channel": pa.DictionaryArray.from_arrays(
            pa.array(np.tile(np.arange(c, dtype=np.int32), n)),
            pa.array([_placeholder(i) if _csv_field(x) != x else x for i, x in enumerate(cells)],
                     pa.string())),
        "quality": _quality(arrays["quality"].T.ravel()),
    }
    if "raw" in arrays:
        columns["raw"] = _float_text(arrays["raw"].T.ravel())
    return pa.table(columns)


def _wide_table(names: list[str], ms: NDArray[np.int64], arrays: dict[str, NDArray[Any]]
                ) -> pa.Table:
    columns = {TIME_COLUMN: pa.array(ms)}
    for i, name in enumerate(names):
        for v, data in arrays.items():
            columns[f"{v}:{name}"] = _quality(data[i]) if v == "quality" else _float_text(data[i])
    return pa.table(columns)


def _write_rows(table: pa.Table, sink: pa.NativeFile, quoted: dict[bytes, bytes]) -> None:
    """The rows, unquoted as the seed writes them; channel names that need quotes get them.

    Arrow quotes either every text cell (the values too, which polars then reads as
    text) or none, so such names are written as placeholders and replaced, block by block.
    """
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    if not quoted:
        pacsv.write_csv(table, sink, options)
        return
    for batch in table.to_batches(max_chunksize=1 << 18):
        buf = pa.BufferOutputStream()
        pacsv.write_csv(pa.Table.from_batches([batch]), buf, options)
        data = buf.getvalue().to_pybytes()
        for placeholder, field in quoted.items():
            data = data.replace(placeholder, field)
        sink.write(data)


def _fingerprint(path: Path) -> dict[str, int]:
    """Byte size and CRC-32 of a file: cheap (GB/s), and enough to tell two CSVs apart."""
    crc = size = 0
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return {"bytes": size, "crc32": crc}


def save_csv(run: xr.Dataset, path: Path, *, wide: bool = False, overwrite: bool = False) -> Path:
    """Write ``run`` as CSV (long form, or wide with ``wide=True``) and its sidecar; return ``path``.

    Both files are written under temporary names and renamed into place when
    complete (the sidecar first); an existing CSV or sidecar is kept unless
    ``overwrite=True``. The layouts and the sidecar: docs/formats/csv.md.

    >>> import tempfile, xarray as xr, daqlab as dl
    >>> run = dl.make_run([[0.5, 2.0]], ["ai0"], sample_rate=1000.0, start="2024-01-01")
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = save_csv(run, Path(d) / "run.csv")
    ...     print(path.read_text().splitlines())
    ...     print(sorted(p.name for p in Path(d).iterdir()))
    ...     xr.testing.assert_identical(open_csv(path), run)
    ['timestamp_ms,value,channel,quality', '1704067200000,0.5,ai0,Good', '1704067200001,2.0,ai0,Good']
    ['run.csv', 'run.csv.daqlab.json']
    """
    path = Path(path)
    validate(run, check_data=False)
    extra = sorted(map(str, set(run.coords) - {"channel", "time", *CHANNEL_COORDS}))
    if extra:
        raise FormatError(
            f"CSV holds only the run schema's coordinates; this run also has {extra}. "
            "Drop them first (run.drop_vars(...)) or save as NetCDF."
        )
    names = [c.name for c in channels_of(run)]
    if not names and run.sizes["time"] and not wide:
        raise FormatError(
            f"the long CSV form has one row per sample and channel, so a run with no channels "
            f"cannot keep its {run.sizes['time']} timestamp(s). Save it as format='csv-wide' "
            "or as NetCDF, or add a channel."
        )
    variables = ["value", "quality"] + (["raw"] if "raw" in run.data_vars else [])
    arrays = {v: np.asarray(run[v].transpose("channel", "time").values) for v in variables}
    q = arrays["quality"]
    if q.size and (int(q.min()) < 0 or int(q.max()) > len(QUALITY_NAMES) - 1):
        raise SchemaError([f"quality holds values outside 0-3 (daqlab.Quality): "
                           f"{sorted(set(np.unique(q).tolist()) - {0, 1, 2, 3})[:5]}."])
    ns = run["time"].values.astype("datetime64[ns]").view(np.int64)
    if ns.size and int(ns.min()) < -_MAX_MS * _NS_PER_MS:
        raise FormatError(
            f"cannot write {path.name} as CSV: its first time, {ns.min().view('datetime64[ns]')}, "
            f"is before 1677-09-21T00:12:43.146. The {TIME_COLUMN} column holds whole "
            "milliseconds (rounded down), and datetime64[ns] starts at 00:12:43.145224193, so the "
            "millisecond before 00:12:43.146 cannot be read back. Save this run as NetCDF, or "
            "shift its times."
        )
    header = _header(run, wide, variables, ns)
    table = (_wide_table if wide else _long_table)(names, ns // _NS_PER_MS, arrays)
    quoted = {} if wide else {  # see _write_rows
        _placeholder(i).encode(): _csv_field(_protect(nm)).encode("utf-8")
        for i, nm in enumerate(names) if _csv_field(_protect(nm)) != _protect(nm)}
    columns_line = ",".join(_csv_field(k) for k in table.column_names) + "\n"
    # a CSV cell takes at most ~25 bytes (value, time, name, quality per sample)
    estimate = len(columns_line) + table.num_rows * (25 * table.num_columns + 40)
    side = sidecar_path(path)
    undo: _SidecarUndo | None = None
    try:
        with atomic_path(path, overwrite=overwrite, expected_bytes=estimate) as tmp:
            if not overwrite and probe(side, "exists", "write"):
                raise StorageError(
                    errno.EEXIST,
                    f"{side} exists already: it holds the metadata of a CSV run named "
                    f"{path.name} (that CSV is missing: an interrupted save?). daqlab does not "
                    "write over it by default; remove it, choose another name, or pass "
                    "overwrite=True.",
                )
            with pa.OSFile(str(tmp), "wb") as sink:
                sink.write(columns_line.encode("utf-8"))
                if table.num_rows:
                    _write_rows(table, sink, quoted)
            fsync_path(tmp)  # the CSV's bytes are durable before its sidecar is renamed
            header["csv"] = _fingerprint(tmp)  # read back: the bytes that will be renamed
            text = (dumps(header, indent=1) + "\n").encode("utf-8")
            # the sidecar is renamed first, so a CSV never appears without its metadata;
            # if the CSV's own rename then fails, the old sidecar is put back
            undo = _SidecarUndo(side)
            with atomic_path(side, overwrite=True, expected_bytes=len(text)) as tmp_side:
                tmp_side.write_bytes(text)
    except BaseException:
        if undo is not None:
            undo.restore()
        raise
    if undo is not None:
        undo.discard()
    return path


class _SidecarUndo:
    """Keeps the sidecar a save is about to replace, to put it back if the CSV's rename fails.

    Without it, a failed overwrite would leave the new sidecar beside the old CSV (the old
    run then no longer opens) or, on a first save, an orphan sidecar blocking the retry.
    """

    def __init__(self, side: Path) -> None:
        self.side = side
        self.backup: Path | None = None
        if probe(side, "exists", "write"):
            backup = temp_name(side)
            try:
                os.link(side, backup)  # same file system, same folder: no copy
            except OSError:
                shutil.copy2(side, backup)  # file systems without hard links
            self.backup = backup

    def restore(self) -> None:
        with contextlib.suppress(OSError):  # best effort: the original error is the one raised
            if self.backup is not None:
                os.replace(self.backup, self.side)
            else:
                self.side.unlink()
            fsync_dir(self.side.parent)

    def discard(self) -> None:
        if self.backup is not None:
            with contextlib.suppress(OSError):
                self.backup.unlink()


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Prelude:
    header: dict[str, Any] | None
    columns: list[str]
    data_offset: int
    size: int
    ends_with_newline: bool


def _parse_header(line: bytes, path: Path) -> dict[str, Any]:
    """The object of a ``# daqlab-csv`` first line (files written before the sidecar)."""
    where = f"{path}: the '# daqlab-csv' header line"
    try:
        header = _unprotect_tree(json.loads(line[len(_MAGIC):].decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{where} is not valid JSON ({exc}); the file was truncated or "
                          "edited.") from None
    return _check_header(header, path, where, "timestamp_decimals")


def _check_header(header: Any, path: Path, where: str, time_key: str) -> dict[str, Any]:
    """``header`` (a line's or a sidecar's object) checked for what :func:`open_csv` uses."""
    if not isinstance(header, dict) or "schema_version" not in header:
        raise FormatError(f"{where} has no schema_version.")
    check_schema_version(header["schema_version"], source=path, where=where,
                         written_by=header.get("daqlab_version"))
    missing = [k for k in ("format", "samples", time_key, "channels", "variables",
                           "attrs", "attr_types", "var_attrs") if k not in header]
    if missing:
        raise FormatError(f"{where} lacks {missing}.")
    problems = []
    if header["format"] not in ("csv", "csv-wide"):
        problems.append(f"unknown format {header['format']!r}")
    if header["variables"] not in (["value", "quality"], ["value", "quality", "raw"]):
        problems.append(f"unknown variables {header['variables']!r}")
    for key in ("attrs", "attr_types"):
        if not isinstance(header[key], dict):
            problems.append(f"{key} is {header[key]!r}, not an object")
    va = header["var_attrs"]
    if not isinstance(va, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("attrs"), dict)
            and isinstance(e.get("types"), dict) for e in va.values()):
        problems.append("var_attrs is not an object of {'attrs': {...}, 'types': {...}}")
    if not isinstance(header["channels"], list):
        problems.append("no list of channels")
    elif not header["channels"] and header["format"] == "csv" and header["samples"] != 0:
        problems.append(f"no channels but {header['samples']!r} sample(s)")
    if problems:
        raise FormatError(f"{where} is damaged: {'; '.join(problems)}.")
    return header


def _read_sidecar(side: Path, path: Path) -> dict[str, Any]:
    """The sidecar's object, checked, and checked to describe the CSV ``path`` byte for byte."""
    where = f"{side} (the metadata of {path.name})"
    plain = f"move {side.name} away to open {path.name} as a plain CSV with default metadata"
    try:
        header = json.loads(side.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{where} is not valid JSON ({exc}); it was truncated or edited. "
                          f"Restore it, or {plain}.") from None
    header = _check_header(header, path, where, "time")
    expected, actual = header.get("csv"), _fingerprint(path)
    if expected != actual:
        raise FormatError(
            f"{where} does not belong to this CSV: it describes a CSV of {expected} "
            f"(bytes, CRC-32) but {path.name} has {actual}. The CSV was changed after daqlab "
            f"wrote it, or a save was interrupted between writing the two files. Restore the "
            f"CSV the sidecar describes (or save the run again), or {plain}."
        )
    return header


def _read_prelude(path: Path) -> _Prelude:
    header = None
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(3) != _BOM:
            f.seek(0)
        lineno = 0
        while True:
            line = f.readline(_MAX_LINE)
            lineno += 1
            if not line:
                what = "is empty" if size == 0 else "ends before its column names (truncated?)"
                raise FormatError(f"{path} {what}; a CSV run needs a line of column names.")
            if not line.endswith(b"\n") and len(line) >= _MAX_LINE:
                raise FormatError(f"{path}: line {lineno} is longer than {_MAX_LINE} bytes; "
                                  "this is not a CSV file daqlab reads.")
            if lineno == 1 and line.startswith(_MAGIC):
                header = _parse_header(line, path)
            elif not line.startswith(b"#") and line.strip():
                break
        try:
            text = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise FormatError(f"{path}: line {lineno} is not UTF-8 text; not a CSV file.") from None
        try:
            columns = next(csv.reader([text]))
        except csv.Error as exc:
            raise FormatError(f"{path}: line {lineno} is not a line of column names ({exc}).") from None
        offset = f.tell()
        f.seek(max(size - 1, 0))
        last = f.read(1)
    return _Prelude(header, columns, offset, size, last == b"\n")


def _layout(columns: list[str]) -> str | None:
    if "channel" in columns and TIME_COLUMN in columns:
        return "csv"
    if TIME_COLUMN in columns and any(c.startswith("value:") for c in columns):
        return "csv-wide"
    if columns == [TIME_COLUMN]:  # the wide form of a run of 0 channels
        return "csv-wide"
    return None


def _check_columns(path: Path, columns: list[str], expected: list[str]) -> None:
    dups = sorted({c for c in columns if columns.count(c) > 1})
    missing = [c for c in expected if c not in columns]
    extra = [c for c in columns if c not in expected]
    problems = ([f"missing column(s) {missing}"] if missing else []) + (
        [f"unexpected column(s) {extra}"] if extra else []) + (
        [f"duplicated column(s) {dups}"] if dups else [])
    if problems:
        raise FormatError(f"{path}: {'; '.join(problems)}; expected the columns {expected}.")


def _read_table(path: Path, prelude: _Prelude, types: dict[str, pa.DataType]) -> pa.Table:
    empty = pa.table({k: pa.array([], t) for k, t in types.items()})
    if prelude.data_offset >= prelude.size:
        return empty
    try:
        with pa.OSFile(str(path)) as f:
            f.seek(prelude.data_offset)
            return pacsv.read_csv(
                f,
                read_options=pacsv.ReadOptions(column_names=prelude.columns),
                convert_options=pacsv.ConvertOptions(column_types=types, null_values=[""],
                                                     strings_can_be_null=False,
                                                     include_columns=list(types)),
            )
    except pa.ArrowException as exc:
        if "Empty CSV file" in str(exc):
            return empty
        numbered = ", ".join(f"#{i} {c}" for i, c in enumerate(prelude.columns[:10]))
        raise FormatError(
            f"{path}: the data rows could not be read: {exc} (columns: {numbered}; rows count "
            f"from the first line after the column names). {TIME_COLUMN} must be milliseconds "
            "since 1970-01-01 UTC with at most 6 decimals, values numbers (or nan/inf/empty)."
        ) from None


def _times_ns(col: pa.ChunkedArray, path: Path) -> NDArray[np.int64]:
    if col.null_count:
        raise FormatError(f"{path}: {col.null_count} row(s) have an empty {TIME_COLUMN} cell.")
    if pa.types.is_integer(col.type):
        ms: NDArray[np.int64] = col.to_numpy()
        if ms.size and (int(ms.max()) > _MAX_MS or int(ms.min()) < -_MAX_MS):
            raise FormatError(f"{path}: {TIME_COLUMN} holds values beyond the datetime64[ns] range "
                              "(years 1677-2262).")
        return ms.astype(np.int64) * _NS_PER_MS
    parts = []
    for chunk in col.chunks:  # decimal128 with scale 6: the unscaled integer is the time in ns
        n, off = len(chunk), chunk.offset
        words = np.frombuffer(chunk.buffers()[1], dtype=np.int64, count=2 * (off + n))
        words = words[2 * off:].reshape(n, 2)
        if (words[:, 1] != words[:, 0] >> 63).any():
            raise FormatError(f"{path}: {TIME_COLUMN} holds values beyond the datetime64[ns] range "
                              "(years 1677-2262).")
        parts.append(words[:, 0])
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _codes(col: pa.ChunkedArray) -> tuple[NDArray[np.int32], list[str]]:
    """Per-row indices into one dictionary (in order of first appearance), and its values."""
    if col.num_chunks == 0:
        return np.empty(0, np.int32), []
    col = col.unify_dictionaries()
    labels: list[str] = col.chunk(0).dictionary.to_pylist()
    idx = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in col.chunks])
    return idx.astype(np.int32, copy=False), labels


def _quality_codes(col: pa.ChunkedArray, path: Path, column: str) -> NDArray[np.int8]:
    idx, labels = _codes(col)
    lut = np.array([_QUALITY_LOOKUP.get(x.strip().lower(), -1) for x in labels], dtype=np.int8)
    unknown = [x for x, q in zip(labels, lut, strict=True) if q < 0]
    if unknown:
        row = int(np.argmax(np.isin(idx, np.flatnonzero(lut < 0))))
        raise FormatError(
            f"{path}: column {column!r} holds unknown quality name(s) {unknown[:5]} (first in data "
            f"row {row + 1}); allowed: {', '.join(QUALITY_NAMES)} (any case) or 0-3."
        )
    return lut[idx] if lut.size else np.empty(0, np.int8)


def _floats(col: pa.ChunkedArray, out: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
    """The column as float64 (empty cells NaN), copied once, into ``out`` if given."""
    if out is None:
        out = np.empty(len(col), np.float64)
    pos = 0
    for chunk in col.chunks:
        n = len(chunk)
        out[pos:pos + n] = (pc.fill_null(chunk, np.nan) if chunk.null_count else chunk).to_numpy(
            zero_copy_only=False)
        pos += n
    return out


def _long_arrays(
    table: pa.Table, path: Path, names: list[str] | None, variables: list[str], escaped: bool
) -> tuple[list[str], NDArray[np.int64], dict[str, Any]]:
    idx, labels = _codes(table.column("channel"))
    labels = [_unprotect(x) for x in labels] if escaped else labels
    if names is None:
        names = labels
    else:
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise FormatError(f"{path}: rows name channel(s) {unknown[:5]} that the header does "
                              f"not list ({names[:10]}).")
        lut = np.array([names.index(x) for x in labels], dtype=np.int32)
        idx = lut[idx] if lut.size else idx
    c = len(names)
    if c == 0:
        if not escaped:  # a plain file: its rows are all that names channels
            raise FormatError(f"{path} holds no rows, so no channels; a run needs at least one "
                              "channel.")
        # the daqlab line lists no channels (a run of 0 channels): rows would name unknown ones
        empty = np.empty((0, 0))
        return names, np.empty(0, np.int64), {
            v: empty.astype(np.int8) if v == "quality" else empty for v in variables}
    counts = np.bincount(idx, minlength=c)
    if (counts != counts[0]).any():
        listed = ", ".join(f"{nm!r}: {k}" for nm, k in zip(names, counts.tolist(), strict=True))
        raise FormatError(
            f"{path}: channels have different numbers of samples ({listed}); the long form "
            "needs one row per sample for every channel, at the same timestamps."
        )
    n = int(counts[0])
    t = _times_ns(table.column(TIME_COLUMN), path)
    cols = {v: table.column(v) for v in variables}
    if (idx.reshape(n, c) == np.arange(c)).all() and not (np.diff(t[::c]) < 0).any():
        t2 = t.reshape(n, c).T  # the layout save_csv writes: time-major, channels in order
        order = None
    else:
        order = np.lexsort((t, idx))  # stable: ties keep the file's order
        t2 = t[order].reshape(c, n)
    differ = t2 != t2[:1]
    if differ.any():
        ch, k = np.argwhere(differ)[0]
        raise FormatError(
            f"{path}: channel {names[ch]!r} has timestamps that differ from channel {names[0]!r} "
            f"(sample {k}: {t2[ch, k]} ns vs {t2[0, k]} ns); the long form needs every channel "
            "sampled at the same times."
        )

    def arrange(a: NDArray[Any]) -> NDArray[Any]:
        return np.ascontiguousarray(a.reshape(n, c).T if order is None else a[order].reshape(c, n))

    arrays: dict[str, Any] = {
        v: arrange(_quality_codes(cols[v], path, v) if v == "quality" else _floats(cols[v]))
        for v in variables
    }
    return names, t2[0].copy(), arrays


def _wide_arrays(
    table: pa.Table, path: Path, names: list[str], variables: list[str]
) -> tuple[NDArray[np.int64], dict[str, Any]]:
    t = _times_ns(table.column(TIME_COLUMN), path)
    arrays: dict[str, Any] = {}
    for v in variables:
        out = np.empty((len(names), len(t)), np.int8 if v == "quality" else np.float64)
        for i, nm in enumerate(names):
            col = table.column(f"{v}:{nm}")
            if v == "quality":
                out[i] = _quality_codes(col, path, f"{v}:{nm}")
            else:
                _floats(col, out[i])
        arrays[v] = out
    return t, arrays


def _read_arrays(
    path: Path, prelude: _Prelude, layout: str, names: list[str] | None, variables: list[str],
    time_type: pa.DataType, escaped: bool,
) -> tuple[list[str], NDArray[np.int64], dict[str, Any]]:
    """Check the columns, parse the rows; channel names, times (ns) and (channel, time) arrays.

    ``escaped``: the file is daqlab's, so its channel names carry formula protection.
    """
    columns = prelude.columns
    float_t, dict_t = pa.float64(), pa.dictionary(pa.int32(), pa.string())
    # a plain file may be daqlab's calibrated CSV without its sidecar: its raw values are
    # allowed but not read (without the calibration they describe, they are not a run's)
    raw = ["raw"] if names is None and "raw" not in variables else []
    if layout == "csv":
        raw = [c for c in raw if c in columns]
        _check_columns(path, columns, [*LONG_COLUMNS, *variables[2:], *raw])
        types = {TIME_COLUMN: time_type, "value": float_t, "channel": dict_t, "quality": dict_t,
                 "raw": float_t}
        table = _read_table(path, prelude, {k: types[k] for k in columns if k not in raw})
        return _long_arrays(table, path, names, variables, escaped)
    if names is None:
        names = list(dict.fromkeys(c[6:] for c in columns if c.startswith("value:")))
    raw = [f"raw:{nm}" for nm in names if raw and f"raw:{nm}" in columns]
    _check_columns(path, columns,
                   [TIME_COLUMN] + [f"{v}:{nm}" for nm in names for v in variables] + raw)
    table = _read_table(path, prelude, {
        k: time_type if k == TIME_COLUMN else dict_t if k.startswith("quality:") else float_t
        for k in columns if k not in raw})
    return names, *_wide_arrays(table, path, names, variables)


def open_csv(path: Path, chunks: Any = None) -> xr.Dataset:
    """Read a CSV run written by :func:`save_csv` or by the seed (long or wide, detected).

    The metadata come from the CSV's sidecar (``<name>.daqlab.json``) if it has
    one, else from a ``# daqlab-csv`` first line (older daqlab files), else the
    seed's defaults apply. ``chunks`` (as in xarray) returns the run dask-backed;
    the file is read eagerly. Corrupt, truncated or foreign files, and a sidecar
    that does not belong to the CSV, raise :class:`~daqlab.FormatError`. The reading
    rules: docs/formats/csv.md.
    """
    path = Path(path)
    side = sidecar_path(path)
    # the sidecar first: a CSV that is not the one it describes is refused as such
    own = _read_sidecar(side, path) if probe(side, "is_file", "open") else None
    prelude = _read_prelude(path)
    header, where = prelude.header, f"{path}: the '# daqlab-csv' header line"
    if own is not None:
        header, where = own, f"{side} (the metadata of {path.name})"
    var_attrs: dict[str, dict[str, Any]] = {}
    if header is None:
        layout = _layout(prelude.columns)
        if layout is None:
            raise FormatError(
                f"{path} is not a daqlab CSV: its columns are {prelude.columns[:8]}; expected the "
                f"long layout {','.join(LONG_COLUMNS)} or the wide one {TIME_COLUMN},"
                "value:<channel>,quality:<channel>,..."
            )
        names, t, arrays = _read_arrays(path, prelude, layout, None, ["value", "quality"],
                                        pa.decimal128(20, 6), escaped=False)
        try:
            channels = tuple(Channel(nm) for nm in names)
        except ValueError as exc:
            raise FormatError(f"{path} does not hold a valid run: {exc}") from None
        attrs = foreign_defaults(path, [t])
    else:
        if not prelude.ends_with_newline:
            raise FormatError(f"{path} does not end with a line break: it was truncated.")
        try:
            channels = tuple(channel_from_record(c) for c in header["channels"])
            attrs = decode_attrs(header["attrs"], header["attr_types"])
            var_attrs = {k: decode_attrs(enc["attrs"], enc["types"])
                         for k, enc in header["var_attrs"].items()}
            cal_dates = np.array([record_cal_date(c) for c in header["channels"]],
                                 dtype="datetime64[ns]")
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
            # hand-edited entries of the wrong kind; ChannelError etc. are ValueErrors
            raise FormatError(f"{where} is damaged ({exc}).") from None
        exact = header is not prelude.header  # a sidecar: whole ms in the CSV, exact times in it
        time_type = (pa.int64() if exact or header["timestamp_decimals"] == 0
                     else pa.decimal128(20, 6))
        names, t, arrays = _read_arrays(path, prelude, header["format"],
                                        [c.name for c in channels], header["variables"], time_type,
                                        escaped=True)
        if len(t) != header["samples"]:
            raise FormatError(f"{path}: {where.removeprefix(f'{path}: ')} promises "
                              f"{header['samples']} sample(s) per channel but the file holds "
                              f"{len(t)}; it was truncated or edited.")
        if exact:
            t = _exact_times(t, header["time"], where)
    value, quality = arrays["value"], arrays["quality"]
    quality[~np.isfinite(value) & (quality == Quality.GOOD)] = Quality.BAD  # as make_run does
    run = assemble_run(value, quality, t.view("datetime64[ns]"), channels, attrs)
    if "raw" in arrays:
        run["raw"] = (("channel", "time"), arrays["raw"])
    if header is not None:  # exactly as saved (Calibration keeps only microseconds)
        run["cal_date"] = ("channel", cal_dates)
    for k, decoded in var_attrs.items():
        if k in run.variables:
            run.variables[k].attrs = decoded
    try:
        validate(run, check_data=False)  # the data checks hold by construction
    except SchemaError as exc:
        raise FormatError(f"{path} does not hold a valid run: {exc}") from None
    return chunk_samples(run, chunks)


def sniff_csv(head: bytes) -> str | None:
    """``"csv"`` or ``"csv-wide"`` if ``head`` (a file's first bytes) starts a CSV run, else None.

    >>> sniff_csv(b"timestamp_ms,value,channel,quality\\n1,0.5,ai0,Good\\n")
    'csv'
    >>> sniff_csv(b'# daqlab-csv {"format": "csv-wide", "schema_version": 1')
    'csv-wide'
    >>> sniff_csv(b"\\x89HDF\\r\\n\\x1a\\n") is None
    True
    """
    head = head.removeprefix(_BOM)
    m = re.match(rb'# daqlab-csv \{"format": "(csv|csv-wide)"', head)
    if m:
        return m.group(1).decode()
    for raw in head.split(b"\n"):
        if raw.startswith(b"#") or not raw.strip():
            continue
        try:
            columns = next(csv.reader([raw.decode("utf-8").rstrip("\r")]))
        except (UnicodeDecodeError, csv.Error):
            return None
        if sorted(columns) in (sorted(LONG_COLUMNS), sorted([*LONG_COLUMNS, "raw"])):
            return "csv"  # with "raw": a calibrated run
        return "csv-wide" if _layout(columns) == "csv-wide" else None
    return None
