"""``Catalog.open_runs``: join the compatible rows, say which were left out and why."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from daqlab.errors import RunsLeftOutWarning, SchemaError
from daqlab.io import join_problems, join_runs, open_run, overlap_problem
from daqlab.run import channels_of

if TYPE_CHECKING:
    from daqlab.catalog._catalog import Catalog

__all__ = ["join_rows"]


def _kind(run: xr.Dataset) -> tuple[Any, ...]:
    """What runs must share to be joined (see daqlab.io.join_problems)."""
    variables = tuple(sorted((str(k), v.dims, str(v.dtype)) for k, v in run.data_vars.items()))
    return channels_of(run), float(run.attrs["sample_rate"]), bool(run.attrs["calibrated"]), variables


def _start(run: xr.Dataset) -> np.datetime64:
    t = run["time"].values
    return t[0] if t.size else np.datetime64("NaT")


def join_rows(cat: Catalog, labels: list[int], chunks: Any) -> xr.Dataset:
    """See :meth:`Catalog.open_runs`."""
    left_out: list[dict[str, Any]] = []
    opened: list[tuple[int, Path, xr.Dataset]] = []
    for label in labels:
        row = cat.df.loc[label]
        path = cat.path_of(label)
        if row["state"] == "error":
            left_out.append({"row": label, "path": row["path"], "reason": f"unreadable: {row['error']}"})
            continue
        if len(row["groups"]) > 1:
            left_out.append({"row": label, "path": row["path"], "reason": (
                f"holds {len(row['groups'])} runs ({row['groups']}); open one with "
                "cat.open(key, group=...)")})
            continue
        try:
            run = open_run(path, chunks={} if chunks is None else chunks)
        except Exception as exc:  # changed since the scan: left out, like an unreadable row
            left_out.append({"row": label, "path": row["path"], "reason": f"unreadable: {exc}"})
            continue
        if not run.sizes["time"]:
            left_out.append({"row": label, "path": row["path"], "reason": "holds no samples"})
            continue
        opened.append((label, path, run))
    # the largest set of alike runs is joined (ties: the one that starts first)
    groups: dict[tuple[Any, ...], list[tuple[int, Path, xr.Dataset]]] = {}
    for item in sorted(opened, key=lambda it: _start(it[2])):
        groups.setdefault(_kind(item[2]), []).append(item)
    chosen = max(groups.values(), key=len, default=[])  # dicts keep order: ties go to the earliest
    joined: list[tuple[int, Path, xr.Dataset]] = []
    for item in sorted(opened, key=lambda it: _start(it[2])):
        label, path, run = item
        rel = str(cat.df.at[label, "path"])
        if item not in chosen:
            ref = chosen[0]
            reasons = join_problems(ref[1], ref[2], path, run)
            left_out.append({"row": label, "path": rel, "reason": "; ".join(reasons)})
            continue
        if joined and (problem := overlap_problem(joined[-1][1], joined[-1][2], path, run)):
            left_out.append({"row": label, "path": rel, "reason": problem})
            continue
        joined.append(item)
    if not joined:
        raise SchemaError([f"row {x['row']} ({x['path']}): {x['reason']}" for x in left_out]
                          or ["no rows were given"], what="set of rows",
                          hint="give open_runs rows of runs with samples that it can read.")
    result = join_runs([r for _, _, r in joined], [p for _, p, _ in joined])
    result.attrs["left_out"] = left_out
    if left_out:
        shown = "; ".join(f"row {x['row']} ({x['path']}): {x['reason']}" for x in left_out[:5])
        more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
        warnings.warn(f"open_runs joined {len(joined)} of {len(labels)} rows and left out {len(left_out)}: "
                      f"{shown}{more}. They are listed in the result's attrs['left_out'].",
                      RunsLeftOutWarning, stacklevel=3)
    return result
