"""Runs as CSV text: the seed's long form and a wide form, written and read with pyarrow.

:func:`save_csv` writes the CSV and, beside it, a JSON sidecar (``run.csv.daqlab.json``:
channels, attributes, exact times, the CSV's size and checksum); :func:`open_csv` reads the
pair, a CSV of older daqlab (a ``# daqlab-csv`` first line), or a plain CSV with defaults;
:func:`sniff_csv` tells the layout from a file's first bytes.

The layouts, cells, the sidecar, formula injection and old files: docs/formats/csv.md.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import xarray as xr

from daqlab.errors import FormatError, SchemaError, StorageError
from daqlab.io._atomic import atomic_path, fsync_path, probe
from daqlab.io._codec import decode_attrs, dumps
from daqlab.io._csv_common import (
    BOM,
    LONG_COLUMNS,
    MAX_MS,
    NS_PER_MS,
    QUALITY_NAMES,
    TIME_COLUMN,
    csv_field,
    fingerprint,
    protect,
)
from daqlab.io._csv_read import exact_times, layout_of, read_arrays, read_prelude, read_sidecar
from daqlab.io._csv_write import (
    SidecarUndo,
    long_table,
    placeholder,
    sidecar_header,
    wide_table,
    write_rows,
)
from daqlab.io._foreign import foreign_defaults
from daqlab.io._records import channel_from_record, record_cal_date
from daqlab.io._summary import quality_counts, run_summary
from daqlab.model import Channel, Quality
from daqlab.run import CHANNEL_COORDS, assemble_run, channels_of, chunk_samples, validate

__all__ = ["SIDECAR_SUFFIX", "open_csv", "save_csv", "sidecar_path", "sniff_csv"]

SIDECAR_SUFFIX = ".daqlab.json"
"""Appended to a CSV's file name to name its sidecar (``run.csv.daqlab.json``)."""
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
    if ns.size and int(ns.min()) < -MAX_MS * NS_PER_MS:
        raise FormatError(
            f"cannot write {path.name} as CSV: its first time, {ns.min().view('datetime64[ns]')}, "
            f"is before 1677-09-21T00:12:43.146. The {TIME_COLUMN} column holds whole "
            "milliseconds (rounded down), and datetime64[ns] starts at 00:12:43.145224193, so the "
            "millisecond before 00:12:43.146 cannot be read back. Save this run as NetCDF, or "
            "shift its times."
        )
    header = sidecar_header(run, wide, variables, ns)
    header["summary"] = run_summary(run, quality_counts(q))  # for catalogs (see _summary)
    table = (wide_table if wide else long_table)(names, ns // NS_PER_MS, arrays)
    quoted = {} if wide else {  # see write_rows
        placeholder(i).encode(): csv_field(protect(nm)).encode("utf-8")
        for i, nm in enumerate(names) if csv_field(protect(nm)) != protect(nm)}
    columns_line = ",".join(csv_field(k) for k in table.column_names) + "\n"
    # a CSV cell takes at most ~25 bytes (value, time, name, quality per sample)
    estimate = len(columns_line) + table.num_rows * (25 * table.num_columns + 40)
    side = sidecar_path(path)
    undo: SidecarUndo | None = None
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
                    write_rows(table, sink, quoted)
            fsync_path(tmp)  # the CSV's bytes are durable before its sidecar is renamed
            header["csv"] = fingerprint(tmp)  # read back: the bytes that will be renamed
            text = (dumps(header, indent=1) + "\n").encode("utf-8")
            # the sidecar is renamed first, so a CSV never appears without its metadata;
            # if the CSV's own rename then fails, the old sidecar is put back
            undo = SidecarUndo(side)
            with atomic_path(side, overwrite=True, expected_bytes=len(text)) as tmp_side:
                tmp_side.write_bytes(text)
    except BaseException:
        if undo is not None:
            undo.restore()
        raise
    if undo is not None:
        undo.discard()
    return path


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
    own = read_sidecar(side, path) if probe(side, "is_file", "open") else None
    prelude = read_prelude(path)
    header, where = prelude.header, f"{path}: the '# daqlab-csv' header line"
    if own is not None:
        header, where = own, f"{side} (the metadata of {path.name})"
    var_attrs: dict[str, dict[str, Any]] = {}
    if header is None:
        layout = layout_of(prelude.columns)
        if layout is None:
            raise FormatError(
                f"{path} is not a daqlab CSV: its columns are {prelude.columns[:8]}; expected the "
                f"long layout {','.join(LONG_COLUMNS)} or the wide one {TIME_COLUMN},"
                "value:<channel>,quality:<channel>,..."
            )
        names, t, arrays = read_arrays(path, prelude, layout, None, ["value", "quality"],
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
        names, t, arrays = read_arrays(path, prelude, header["format"],
                                        [c.name for c in channels], header["variables"], time_type,
                                        escaped=True)
        if len(t) != header["samples"]:
            raise FormatError(f"{path}: {where.removeprefix(f'{path}: ')} promises "
                              f"{header['samples']} sample(s) per channel but the file holds "
                              f"{len(t)}; it was truncated or edited.")
        if exact:
            t = exact_times(t, header["time"], where)
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
    head = head.removeprefix(BOM)
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
        return "csv-wide" if layout_of(columns) == "csv-wide" else None
    return None
