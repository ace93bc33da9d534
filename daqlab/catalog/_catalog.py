"""``dl.Catalog(root)``: every run under a folder, one row each, in a pandas DataFrame."""

from __future__ import annotations

import difflib
import json
import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr

from daqlab.catalog._index import Index
from daqlab.catalog._join import join_rows
from daqlab.catalog._walk import Entry, shown, walk
from daqlab.errors import ConfigurationError, DaqlabError, NotFoundError, StorageError
from daqlab.io import as_path, describe, from_json, open_run, open_tree

if TYPE_CHECKING:
    from daqlab.view import RunBrowser

__all__ = ["COLUMNS", "Catalog"]

COLUMNS = ("path", "format", "state", "error", "warning", "name", "id", "description", "created",
           "start", "end", "duration", "sample_rate", "rates", "groups", "channels", "units",
           "n_channels", "samples", "good", "suspect", "bad", "interpolated", "calibrated", "bytes",
           "modified", "metadata_keys")
"""The columns of :attr:`Catalog.df`, in order (then one per chosen metadata key)."""

_FLAGS = ("good", "suspect", "bad", "interpolated")


def _error_record(fmt: str, exc: BaseException, root: Path) -> dict[str, Any]:
    message = str(exc) if isinstance(exc, DaqlabError) else f"{type(exc).__name__}: {exc}"
    message = shown(message.replace(f"{root}{os.sep}", ""))  # paths as the catalog shows them
    return {"format": fmt, "state": "error", "error": message, "name": "", "id": "", "description": "",
            "created": None, "metadata": {}, "nodes": []}


def _describe(entry: Entry, root: Path) -> dict[str, Any] | None:
    """The record of one entry; a run that cannot be read is a record with its error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            record = describe(entry.path)
        except Exception as exc:  # never stops a scan: any failure is that row's error
            fmt = "recording" if entry.recording else _guess_format(entry.path)
            return _error_record(fmt, exc, root)
    if record is not None and caught:
        record["warning"] = shown(" ".join(dict.fromkeys(str(w.message) for w in caught)).replace(
            f"{root}{os.sep}", ""))
    return record


def _guess_format(path: Path) -> str:
    from daqlab.io import TABLE

    suffix = path.suffix.lower()
    return next((f.name for f in TABLE if suffix in f.suffixes), "")


def _row(rel: str, entry_bytes: int, modified_ns: int, record: dict[str, Any]) -> dict[str, Any]:
    nodes = record["nodes"]
    starts = [n["start"] for n in nodes if n["start"] is not None]
    ends = [n["end"] for n in nodes if n["end"] is not None]
    start, end = (min(starts), max(ends)) if starts and ends else (None, None)
    counts = np.sum([n["quality"] for n in nodes], axis=0) if nodes else np.zeros(4)
    total = float(np.sum(counts))
    rates = [n["sample_rate"] for n in nodes]
    metadata = record.get("metadata") or {}
    row = {
        "path": rel, "format": record["format"], "state": record["state"], "error": record["error"],
        "warning": record.get("warning", ""), "name": shown(record["name"]), "id": shown(record["id"]),
        "description": shown(record["description"]), "created": record["created"],
        "start": start, "end": end,
        "duration": (end - start) / 1e9 if start is not None and end is not None else np.nan,
        "sample_rate": max((r for r in rates if r is not None), default=np.nan),
        "rates": rates, "groups": [n["group"] for n in nodes],
        "channels": [shown(c) for n in nodes for c in n["channels"]],
        "units": [shown(u) for n in nodes for u in n["units"]],
        "n_channels": sum(len(n["channels"]) for n in nodes),
        "samples": sum(n["samples"] for n in nodes),
        **{flag: (float(c) / total if total else np.nan) for flag, c in zip(_FLAGS, counts, strict=True)},
        "calibrated": bool(nodes) and all(n["calibrated"] for n in nodes),
        "bytes": entry_bytes, "modified": modified_ns,
        "metadata_keys": sorted(metadata) if isinstance(metadata, dict) else [],
    }
    return row


def _frame(rows: list[dict[str, Any]], metadata_columns: Sequence[str],
           metadata: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    nat = np.iinfo(np.int64).min
    for col in ("created", "start", "end", "modified"):  # from the rows: ints in a frame may turn float
        ns = np.array([nat if r[col] is None else r[col] for r in rows], dtype=np.int64)
        df[col] = ns.view("datetime64[ns]")
    for col, kind in (("duration", float), ("sample_rate", float), ("n_channels", int), ("samples", int),
                      ("bytes", int), ("calibrated", bool), *((f, float) for f in _FLAGS)):
        df[col] = df[col].astype(kind)
    for key in metadata_columns:
        df[key] = [m.get(key) if isinstance(m, dict) else None for m in metadata]
    return df


class Catalog:
    """Every run under a folder, listed (see DESIGN.md, "Exploring many runs: the catalog").

    Parameters
    ----------
    root
        The folder; every file of a format daqlab reads and every recording folder under it
        (at any depth) is a row. Files that are no run (pictures, notebooks) are not listed;
        a run that cannot be read is a row whose ``error`` says why.
    metadata
        Keys of the runs' ``metadata`` to show as columns of :attr:`df`.
    index
        Where the index is kept: ``None`` (default) in the folder as ``.daqlab-catalog.sqlite``,
        or in the user's cache folder where the folder cannot be written, or in memory as the
        last resort; ``":memory:"`` to keep nothing; or a file path.
    progress
        Show a progress bar (tqdm) while files are read.

    Attributes
    ----------
    df
        One row per run (see :data:`COLUMNS`), sorted by path; filter with pandas
        (``cat.df.query("bad > 0")``). ``start``/``end`` are UTC, ``duration`` in seconds,
        ``good``...``interpolated`` the share of channel x time samples of each flag.
    """

    def __init__(self, root: str | os.PathLike[str], *, metadata: Iterable[str] = (),
                 index: str | os.PathLike[str] | None = None, progress: bool = False) -> None:
        path = as_path(root, "Catalog's root")
        if not path.is_dir():
            raise StorageError(2, f"Catalog's root {str(path)!r} is not a folder (cwd is {Path.cwd()}); "
                               "give the folder that holds the runs.")
        self.root = path.resolve()
        if isinstance(metadata, (str, bytes)) or not all(isinstance(k, str) for k in metadata):
            raise ConfigurationError(
                f"Catalog's metadata must be a list of metadata keys (str); got {metadata!r:.80}. "
                "Pass e.g. metadata=['operator', 'sample'].")
        self.metadata_columns = list(dict.fromkeys(metadata))
        clash = sorted(set(self.metadata_columns) & set(COLUMNS))
        if clash:
            raise ConfigurationError(
                f"metadata keys {clash} have the names of the catalog's own columns; they are in "
                "each row's metadata anyway (cat.open(key).attrs['metadata']). Leave them out.")
        try:
            self._index = Index(self.root, index)
        except Exception as exc:
            raise StorageError(5, f"cannot keep the catalog index at {index!r}: {exc}. Give a "
                               "writable file path, or index=':memory:'.") from exc
        self.progress = bool(progress)
        self._scanning = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._paths: dict[str, Path] = {}
        self.df: pd.DataFrame = _frame([], self.metadata_columns, [])
        self.scan()

    # ------------------------------------------------------------------ scanning
    @property
    def index_path(self) -> Path | None:
        """The SQLite index file, or None when it is kept in memory."""
        return self._index.path

    def scan(self) -> Catalog:
        """Look at the folder again: new, changed and removed runs; unchanged ones are not read.
        Returns the catalog (``cat.scan().df``). Safe to call from several threads (one scans
        at a time)."""
        with self._scanning:
            return self._scan()

    def _scan(self) -> Catalog:
        entries = walk(self.root)
        known = self._index.load()
        todo = [rel for rel, e in entries.items() if known.get(rel, ("",))[0] != e.signature]
        changed: dict[str, tuple[str, dict[str, Any] | None]] = {}
        items: Iterable[str] = todo
        if self.progress and todo:
            from tqdm.auto import tqdm

            items = tqdm(todo, desc=f"cataloguing {self.root.name}", unit="run")
        for rel in items:
            changed[rel] = (entries[rel].signature, _describe(entries[rel], self.root))
        removed = [rel for rel in known if rel not in entries]
        try:
            self._index.update(changed, removed)
        except Exception as exc:  # the listing is right; only the cache of it failed
            warnings.warn(f"the catalog index {self._index.path} could not be updated ({exc}); "
                          "the listing is complete, the next scan reads these files again.",
                          RuntimeWarning, stacklevel=2)
        records = {rel: (changed[rel] if rel in changed else known[rel])[1] for rel in entries}
        self._records = {rel: rec for rel, rec in sorted(records.items()) if rec is not None}
        self._paths = {rel: entries[rel].path for rel in self._records}
        rows = [_row(rel, entries[rel].bytes, entries[rel].modified_ns, rec)
                for rel, rec in self._records.items()]
        self.df = _frame(rows, self.metadata_columns,
                         [from_json(rec.get("metadata") or {}) for rec in self._records.values()]
                         if self.metadata_columns else [])
        return self

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        return f"<daqlab.Catalog of {len(self)} runs in {self.root}>"

    def close(self) -> None:
        """Close the index (the catalog cannot scan again)."""
        self._index.close()

    # ------------------------------------------------------------------ finding
    def search(self, text: str) -> pd.DataFrame:
        """Rows whose path, name, description, format, channels, units or metadata contain
        ``text`` (case does not matter); their labels are those of :attr:`df`."""
        if not isinstance(text, str):
            raise ConfigurationError(f"search takes text (str); got {type(text).__name__} ({text!r:.60}).")
        needle = text.casefold()
        haystack = [
            "\n".join([rel, rec["name"], rec["description"], rec["format"],
                       *(c for n in rec["nodes"] for c in (*n["channels"], *n["units"])),
                       json.dumps(rec.get("metadata") or {}, ensure_ascii=False)]).casefold()
            for rel, rec in self._records.items()]
        return self.df[[needle in h for h in haystack]]

    def path_of(self, key: Any) -> Path:
        """The file or folder of the row ``key``: a row label of :attr:`df` (int), a run id, a
        path (relative to the root or absolute), or a row of :attr:`df` (a Series)."""
        rel = self._rel(key)
        return self._paths.get(rel, self.root / rel)

    def _rel(self, key: Any) -> str:
        if isinstance(key, pd.Series) and "path" in key.index:
            key = key["path"]
        if isinstance(key, (bool, np.bool_)):
            raise ConfigurationError(f"a catalog key is a row label, run id or path; got {key!r}.")
        if isinstance(key, (int, np.integer)):
            if int(key) not in self.df.index:
                raise NotFoundError(f"row {key} is not in this catalog of {len(self)} rows "
                                    f"(labels 0-{len(self) - 1}); cat.df lists them.")
            return str(self.df.at[int(key), "path"])
        if not isinstance(key, (str, os.PathLike)):
            raise ConfigurationError(
                f"a catalog key is a row label (int), a run id or a path (str), or a row of cat.df; "
                f"got {type(key).__name__} ({key!r:.60}).")
        text = os.fspath(key)
        if isinstance(key, str):
            hits = self.df.index[self.df["id"] == text]
            if len(hits) == 1:
                return str(self.df.at[hits[0], "path"])
            if len(hits) > 1:
                raise ConfigurationError(
                    f"run id {text} belongs to {len(hits)} rows ({list(self.df.loc[hits, 'path'])}: the "
                    "same run saved in several files); give the path or row label instead.")
        p = Path(text)
        if p.is_absolute():
            try:
                p = p.resolve().relative_to(self.root)
            except ValueError:
                raise NotFoundError(f"{text} is not under this catalog's folder {self.root}.") from None
        rel = shown(p.as_posix())
        if rel not in self._records:
            close = difflib.get_close_matches(rel, list(self._records), n=3)
            hint = f"Did you mean {close}? " if close else ""
            raise NotFoundError(f"no run {text!r} in the catalog of {self.root} (a row label, run id "
                                f"or path relative to it). {hint}cat.scan() finds runs added since.")
        return rel

    # ------------------------------------------------------------------ opening
    def open(self, key: Any, chunks: Any = None, *, group: str | None = None) -> xr.Dataset:
        """The run of row ``key`` (see :meth:`path_of`), as :func:`daqlab.open_run` opens it
        (``chunks`` for a lazy run, ``group`` for one run of a file of several)."""
        return open_run(self.path_of(key), chunks, group=group)

    def open_tree(self, key: Any, chunks: Any = None) -> xr.DataTree:
        """The runs of row ``key`` as a tree, as :func:`daqlab.open_tree` opens it."""
        return open_tree(self.path_of(key), chunks)

    def open_runs(self, rows: Any, chunks: Any = None) -> xr.Dataset:
        """The compatible runs among ``rows`` joined along time, lazily.

        ``rows``: a part of :attr:`df` (e.g. ``cat.df.query(...)``) or a list of keys. The runs
        joined are the largest set with the same channels (names, units, calibration), rate,
        calibration state and variables, in time order, without overlaps; every other row is
        left out: listed in ``attrs["left_out"]`` (row, path, reason) and in a warning.
        """
        labels = self._labels(rows)
        return join_rows(self, labels, chunks)

    def _labels(self, rows: Any) -> list[int]:
        if isinstance(rows, pd.DataFrame):
            keys: list[Any] = list(rows.index)
        elif isinstance(rows, (str, os.PathLike, int, np.integer, pd.Series)):
            keys = [rows]
        elif isinstance(rows, Iterable):
            keys = list(rows)
        else:
            raise ConfigurationError(f"open_runs takes rows of cat.df or a list of keys; got "
                                     f"{type(rows).__name__}.")
        positions = {rel: i for i, rel in enumerate(self.df["path"])}
        return list(dict.fromkeys(positions[self._rel(k)] for k in keys))

    def record(self, key: Any) -> dict[str, Any]:
        """What the index knows of row ``key``: format, state, attributes, metadata and one entry
        per run it holds (group, rate, channels, units, samples, span, quality counts)."""
        record = dict(self._records[self._rel(key)])
        record["metadata"] = from_json(record.get("metadata") or {})  # NaN etc. as values again
        return record

    # ------------------------------------------------------------------ showing
    def browse(self, **kwargs: Any) -> RunBrowser:
        """A notebook widget to browse, plot and pick the runs (see :class:`daqlab.view.RunBrowser`)."""
        from daqlab.view import RunBrowser

        return RunBrowser(self, **kwargs)

    def summary(self) -> str:
        """A few lines about the catalog: runs by format and state, errors, size, time span."""
        df = self.df
        where = self.index_path if self.index_path is not None else "in memory"
        lines = [f"{len(df)} runs in {self.root} (index: {where})"]
        if len(df):
            formats = ", ".join(f"{n} {f}" for f, n in df["format"].value_counts().items())
            states = ", ".join(f"{n} {s}" for s, n in df["state"].value_counts().items())
            lines.append(f"  formats: {formats}")
            lines.append(f"  states:  {states}")
            lines.append(f"  size:    {df['bytes'].sum() / 1e6:.1f} MB, {int(df['samples'].sum()):,} samples "
                         f"x channels {int((df['samples'] * df['n_channels']).sum()):,}")
            if df["start"].notna().any():
                lines.append(f"  time:    {df['start'].min()} .. {df['end'].max()} UTC")
            bad = df[df["bad"] > 0]
            if len(bad):
                lines.append(f"  {len(bad)} runs have BAD samples")
            for _, r in df[df["state"] == "error"].head(10).iterrows():
                lines.append(f"  error: {r['path']}: {r['error'][:160]}")
        return "\n".join(lines)
