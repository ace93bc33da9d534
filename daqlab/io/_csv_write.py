"""Writing a CSV run: the sidecar's object (attributes, exact times), the rows as text with
pyarrow (channel names protected from formula injection), and :class:`SidecarUndo`, which
puts a replaced sidecar back when the CSV's rename fails. :func:`daqlab.io._csv.save_csv`
drives them; the layouts and the sidecar: docs/formats/csv.md.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import xarray as xr
from numpy.typing import NDArray

from daqlab._version import __version__
from daqlab.errors import ConfigurationError, FormatError
from daqlab.io._atomic import fsync_dir, probe, temp_name
from daqlab.io._codec import JSON, encode_attrs, to_json
from daqlab.io._csv_common import NS_PER_MS, QUALITY_NAMES, TIME_COLUMN, csv_field, protect
from daqlab.io._records import channel_record
from daqlab.run import SCHEMA_VERSION, channels_of, sample_times

__all__ = ["SidecarUndo", "long_table", "placeholder", "sidecar_header", "wide_table", "write_rows"]


def _encode_attrs(attrs: Mapping[Any, Any], where: str) -> dict[str, Any]:
    """The attributes as the sidecar holds them: strict JSON values and their types."""
    try:
        values, types = encode_attrs(attrs, JSON, where)
    except ConfigurationError as exc:
        raise FormatError(f"CSV {exc}") from None
    return {"attrs": values, "types": types}


def _time_spec(ns: NDArray[np.int64], sample_rate: float) -> dict[str, Any]:
    """How to rebuild the exact times from the CSV's whole milliseconds (the sidecar's ``time``:
    docs/formats/csv.md)."""
    if not (ns % NS_PER_MS).any():
        return {"encoding": "ms"}
    if np.array_equal(sample_times(int(ns[0]), 0, len(ns), sample_rate).view(np.int64), ns):
        return {"encoding": "grid", "start_ns": int(ns[0]), "sample_rate": sample_rate}
    below = (ns % NS_PER_MS).astype("<u4")  # numpy's % floors, as the CSV's ms do
    return {"encoding": "sub-ms",
            "ns_below_ms": base64.b64encode(zlib.compress(below.tobytes())).decode("ascii")}


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


def sidecar_header(run: xr.Dataset, wide: bool, variables: list[str], ns: NDArray[np.int64]
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


def placeholder(i: int) -> str:
    # control characters never occur in a channel name (check_channel_name) nor in other cells
    return f"\x01{i}\x01"


def long_table(names: list[str], ms: NDArray[np.int64], arrays: dict[str, NDArray[Any]]
                ) -> pa.Table:
    c, n = len(names), len(ms)
    cells = [protect(name) for name in names]
    columns = {
        TIME_COLUMN: pa.array(np.repeat(ms, c)),
        "value": _float_text(arrays["value"].T.ravel()),
        "channel": pa.DictionaryArray.from_arrays(
            pa.array(np.tile(np.arange(c, dtype=np.int32), n)),
            pa.array([placeholder(i) if csv_field(x) != x else x for i, x in enumerate(cells)],
                     pa.string())),
        "quality": _quality(arrays["quality"].T.ravel()),
    }
    if "raw" in arrays:
        columns["raw"] = _float_text(arrays["raw"].T.ravel())
    return pa.table(columns)


def wide_table(names: list[str], ms: NDArray[np.int64], arrays: dict[str, NDArray[Any]]
                ) -> pa.Table:
    columns = {TIME_COLUMN: pa.array(ms)}
    for i, name in enumerate(names):
        for v, data in arrays.items():
            columns[f"{v}:{name}"] = _quality(data[i]) if v == "quality" else _float_text(data[i])
    return pa.table(columns)


def write_rows(table: pa.Table, sink: pa.NativeFile, quoted: dict[bytes, bytes]) -> None:
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


class SidecarUndo:
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
