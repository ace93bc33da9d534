"""The parts of ``cat.browse()`` that are plain functions: the table's columns and the detail pane."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["COLUMNS", "esc", "group_of", "red", "row_html", "row_of", "table_data"]

# field, title, format ("" for text), width in pixels
COLUMNS = (
    ("path", "path", "", 180), ("format", "format", "", 60), ("state", "state", "", 75),
    ("name", "name", "", 110), ("start", "start (UTC)", "", 140), ("duration", "duration s", "0,0.000", 75),
    ("sample_rate", "rate Hz", "0,0.[000]", 70), ("n_channels", "ch", "0", 30),
    ("samples", "samples", "0,0", 80), ("good", "good", "0.0%", 55), ("bad", "bad", "0.0%", 50),
    ("bytes", "bytes", "0.0 b", 70), ("error", "error", "", 300),
)


def esc(value: object) -> str:
    """``value`` as text, escaped for HTML."""
    return html.escape(str(value))


def red(text: str, markup: str = "") -> str:
    """``markup`` (HTML) and ``text`` (escaped), in red."""
    return f"<span style='color:#d62728'>{markup}{esc(text)}</span>"


def _range(bounds: Any) -> str:
    ends = ["" if b is None or np.isnan(b) else f"{b:g}" for b in bounds or (None, None)]
    return "" if ends == ["", ""] else " .. ".join(ends)


def row_of(df: pd.DataFrame, label: int) -> pd.Series:
    """The row of ``df`` labelled ``label``."""
    row = df.loc[label]
    assert isinstance(row, pd.Series)  # a label of a RangeIndex picks one row
    return row


def group_of(row: pd.Series) -> str | None:
    """The group of a file of several runs that the browser plots (the fastest); None for one run."""
    groups, rates = list(row.get("groups") or ()), list(row.get("rates") or ())
    if len(groups) < 2:
        return None
    return str(groups[int(np.nanargmax(rates))] if len(rates) == len(groups) else groups[0])


def table_data(df: pd.DataFrame, extra: Sequence[str]) -> dict[str, Any]:
    """The table's columns: text for words and times, float64 for numbers (NaN shows empty)."""
    data: dict[str, Any] = {"row": np.asarray(df.index, dtype=np.int64)}
    for field, _title, fmt, _w in COLUMNS:
        if field not in df.columns:
            continue
        col = df[field]
        if field == "start":
            data[field] = pd.to_datetime(col).dt.strftime("%Y-%m-%d %H:%M:%S").fillna("").tolist()
        elif fmt:
            data[field] = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        else:
            data[field] = col.fillna("").astype(str).tolist()
    for field in extra:
        data[field] = df[field].map(lambda v: "" if v is None or v is pd.NaT else str(v)).tolist()
    return data


def row_html(row: pd.Series, run: xr.Dataset | None, short: bool) -> str:
    """The detail pane for one row: summary, quality shares, channels (units, calibration), metadata."""
    title = f"<b>{esc(row.get('name') or Path(str(row['path'])).name)}</b> <code>{esc(row['path'])}</code>"
    parts = [title, f"{esc(row.get('format', ''))} &middot; {esc(row.get('state', ''))}"]
    if row.get("error"):
        return "<br>".join([*parts, red(f"error: {row['error']}")])
    if row.get("warning"):
        parts.append(f"<span style='color:#b35900'>warning: {esc(row['warning'])}</span>")
    start, end = row.get("start"), row.get("end")
    if start is not None and not pd.isna(start):
        parts.append(f"{esc(start)} &ndash; {esc(end)} UTC, {float(row.get('duration', np.nan)):.6g} s")
    rates = ", ".join(f"{float(r):g}" for r in row.get("rates", None) or [row.get("sample_rate", np.nan)])
    parts.append(f"{int(row.get('samples', 0)):,} samples at {rates} Hz, {int(row.get('bytes', 0)):,} bytes"
                 f"{', calibrated' if row.get('calibrated') else ''}")
    shares = [f"{k} {float(row[k]):.2%}" for k in ("good", "suspect", "bad", "interpolated")
              if k in row and not pd.isna(row[k])]
    if shares:
        parts.append("quality: " + ", ".join(shares))
    if short:
        return "<br>".join(parts)
    if run is not None:
        if group_of(row) is not None:
            parts.append(f"plotted: group <code>{esc(group_of(row))}</code>, the fastest of "
                         f"{esc(', '.join(row['groups']))}")
        rows = "".join(
            f"<tr><td>{esc(c.name)}</td><td>{esc(c.unit)}</td><td>{c.calibration.slope:g} &times; raw "
            f"+ {c.calibration.offset:g}</td><td>{_range(c.range)}</td></tr>" for c in run.daq.channels)
        parts.append("<table><tr><th>channel</th><th>unit</th><th>calibration</th><th>range</th></tr>"
                     f"{rows}</table>")
        meta = run.attrs.get("metadata") or {}
        if meta:
            parts.append("metadata: " + ", ".join(f"{esc(k)}=<code>{esc(v)}</code>"
                                                  for k, v in meta.items()))
        if row.get("description"):
            parts.append(esc(row["description"]))
    return "<br>".join(parts)
