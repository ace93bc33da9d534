"""Reading a CSV run: the prelude (``# daqlab-csv`` line, column names), the sidecar and the
checks that it belongs to the CSV, the rows as arrays from the long or wide layout, and the
exact times. :func:`daqlab.io._csv.open_csv` drives them; the reading rules:
docs/formats/csv.md.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from numpy.typing import NDArray

from daqlab.errors import FormatError
from daqlab.io._csv_common import (
    BOM,
    LONG_COLUMNS,
    MAX_MS,
    NS_PER_MS,
    QUALITY_NAMES,
    TIME_COLUMN,
    fingerprint,
    unprotect,
)
from daqlab.io._records import check_schema_version
from daqlab.model import Quality
from daqlab.run import sample_times

__all__ = ["exact_times", "layout_of", "read_arrays", "read_prelude", "read_sidecar"]

_MAGIC = b"# daqlab-csv "
_MAX_LINE = 1 << 26
_QUALITY_LOOKUP = {
    **{name.lower(): int(q) for name, q in zip(QUALITY_NAMES, Quality, strict=True)},
    **{str(int(q)): int(q) for q in Quality},
}


def _unprotect_tree(obj: Any) -> Any:
    """Undo the protection of every string in a ``# daqlab-csv`` line (files before the sidecar)."""
    if isinstance(obj, str):
        return unprotect(obj)
    if isinstance(obj, dict):
        return {unprotect(k): _unprotect_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unprotect_tree(v) for v in obj]
    return obj


def exact_times(ms_ns: NDArray[np.int64], spec: Any, where: str) -> NDArray[np.int64]:
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
            if len(below) != len(ms_ns) or (below >= NS_PER_MS).any():
                raise ValueError(f"{len(below)} sub-millisecond parts for {len(ms_ns)} times")
            exact = ms_ns + below.astype(np.int64)
        else:
            raise ValueError(f"unknown time encoding {enc!r}")
    except (KeyError, TypeError, ValueError, OverflowError, zlib.error, binascii.Error) as exc:
        raise FormatError(f"{where} is damaged: its 'time' entry cannot be used ({exc}).") from None
    if not np.array_equal(exact - exact % NS_PER_MS, ms_ns):
        raise FormatError(f"{where} is damaged: its exact times do not round down to the CSV's "
                          f"{TIME_COLUMN} values.")
    return exact


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


def read_sidecar(side: Path, path: Path) -> dict[str, Any]:
    """The sidecar's object, checked, and checked to describe the CSV ``path`` byte for byte."""
    where = f"{side} (the metadata of {path.name})"
    plain = f"move {side.name} away to open {path.name} as a plain CSV with default metadata"
    try:
        header = json.loads(side.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{where} is not valid JSON ({exc}); it was truncated or edited. "
                          f"Restore it, or {plain}.") from None
    header = _check_header(header, path, where, "time")
    expected, actual = header.get("csv"), fingerprint(path)
    if expected != actual:
        raise FormatError(
            f"{where} does not belong to this CSV: it describes a CSV of {expected} "
            f"(bytes, CRC-32) but {path.name} has {actual}. The CSV was changed after daqlab "
            f"wrote it, or a save was interrupted between writing the two files. Restore the "
            f"CSV the sidecar describes (or save the run again), or {plain}."
        )
    return header


def read_prelude(path: Path) -> _Prelude:
    header = None
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(3) != BOM:
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


def layout_of(columns: list[str]) -> str | None:
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
        if ms.size and (int(ms.max()) > MAX_MS or int(ms.min()) < -MAX_MS):
            raise FormatError(f"{path}: {TIME_COLUMN} holds values beyond the datetime64[ns] range "
                              "(years 1677-2262).")
        return ms.astype(np.int64) * NS_PER_MS
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
    labels = [unprotect(x) for x in labels] if escaped else labels
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


def read_arrays(
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
