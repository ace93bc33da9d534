"""``align``: every channel of a tree of runs on one time base, only when asked (DESIGN.md,
"Several rates")."""

from __future__ import annotations

import math

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab.checks import real
from daqlab.errors import ProcessingError
from daqlab.model import Channel, Quality
from daqlab.processing._runs import processed_attrs
from daqlab.run import assemble_run, calibrate, channels_of, iso_utc, sample_times
from daqlab.tree import check_tree, run_nodes

__all__ = ["align"]

_NS = np.int64(1_000_000_000)


def align(tree: xr.DataTree | xr.Dataset, rate: float | None = None) -> xr.Dataset:
    """One run with every channel of ``tree`` on one time base at ``rate`` Hz (default: the
    fastest run's rate).

    The time base is that of the run at ``rate`` (the fastest one by default): its samples
    are kept exactly, as are every other sample that falls on the base. All others are
    linearly interpolated between their two neighbours and flagged INTERPOLATED (BAD where a
    neighbour is BAD or not finite); before a run's first sample and after its last, the
    values are NaN flagged BAD (nothing is extrapolated). The base runs from the earliest
    first sample to the latest last one. Raw values
    are interpolated with their calibration kept (linear calibration commutes with it); a
    tree that mixes calibrated and raw runs is calibrated first. Channel names that repeat
    across runs are prefixed with the node's name (``"slow.temp"``). The result is computed
    in memory; ``metadata["aligned"]`` says which node each channel came from.

    >>> import daqlab as dl
    >>> from daqlab.tree import make_tree
    >>> fast = dl.make_run([[0.0, 1, 2, 3, 4]], ["a"], sample_rate=4.0, start="2024-01-01")
    >>> slow = dl.make_run([[10.0, 20.0]], ["b"], sample_rate=1.0, start="2024-01-01")
    >>> run = align(make_tree({"fast": fast, "slow": slow}))
    >>> run["value"].values.tolist()
    [[0.0, 1.0, 2.0, 3.0, 4.0], [10.0, 12.5, 15.0, 17.5, 20.0]]
    >>> run["quality"].values.tolist()
    [[0, 0, 0, 0, 0], [0, 3, 3, 3, 0]]
    """
    if isinstance(tree, xr.Dataset):
        tree = xr.DataTree(dataset=tree)
    if not isinstance(tree, xr.DataTree):
        raise ProcessingError(f"align takes a tree of runs (xarray.DataTree, e.g. from "
                              f"daqlab.open_tree); got {type(tree).__name__}.")
    runs = {key: run.load() for key, run in run_nodes(check_tree(tree, check_data=False)).items()}
    runs = {key: run for key, run in runs.items() if run.sizes["time"]}
    if not runs:
        raise ProcessingError("align: the tree's runs hold no samples.")
    mixed = len({bool(r.attrs["calibrated"]) for r in runs.values()}) > 1
    if mixed:
        runs = {k: r if r.attrs["calibrated"] else calibrate(r) for k, r in runs.items()}
    rates = {k: float(r.attrs["sample_rate"]) for k, r in runs.items()}
    target = max(rates.values()) if rate is None else real(rate, "rate", lower=0.0)
    if not (target > 0 and math.isfinite(target)):
        raise ProcessingError(f"align: rate must be a positive number of Hz; got {rate!r}.")
    # the reference: the first sample of a run at the target rate (its samples stay on the base)
    at_rate = [k for k, r in rates.items() if r == target]
    firsts = {k: int(r["time"].values[0].astype(np.int64)) for k, r in runs.items()}
    lasts = {k: int(r["time"].values[-1].astype(np.int64)) for k, r in runs.items()}
    ref = firsts[at_rate[0]] if at_rate else min(firsts.values())
    base = _base(ref, min(firsts.values()), max(lasts.values()), target)
    values, quality, channels, origin = [], [], [], {}
    taken = {c.name for r in runs.values() for c in channels_of(r)}
    counts: dict[str, int] = {}
    for r in runs.values():
        for c in channels_of(r):
            counts[c.name] = counts.get(c.name, 0) + 1
    for key, run in runs.items():
        v, q = _onto(run, base)
        values.append(v)
        quality.append(q)
        for c in channels_of(run):
            name = c.name
            if counts[name] > 1:
                name = f"{key.strip('/').replace('/', '.') or 'root'}.{c.name}"
                if name in taken:
                    raise ProcessingError(f"align: channel {c.name!r} of node {key} would be renamed "
                                          f"{name!r}, which another channel has; rename one.")
            channels.append(Channel(name, c.unit, (c.range_min, c.range_max), c.calibration))
            origin[name] = {"node": key, "channel": c.name, "sample_rate": rates[key]}
    first = next(iter(runs.values()))
    attrs = processed_attrs(first, step="align", params={"rate": target}, sample_rate=target)
    attrs.update(name=str(tree.attrs.get("name") or first.attrs.get("name", "")),
                 description=str(tree.attrs.get("description", "")),
                 created_at=iso_utc(), calibrated=bool(first.attrs["calibrated"]))
    attrs["metadata"] = {**dict(tree.attrs.get("metadata", {})), "processing":
                         attrs["metadata"]["processing"], "aligned": origin,
                         **({"calibrated_by_align": True} if mixed else {})}
    return assemble_run(np.concatenate(values), np.concatenate(quality), base.view("datetime64[ns]"),
                        tuple(channels), attrs)


def _base(ref: int, lo: int, hi: int, rate: float) -> NDArray[np.int64]:
    """The times (int64 ns) ``ref + k / rate`` from ``lo`` to ``hi`` (inclusive)."""
    period = 1e9 / rate
    k0 = math.ceil((lo - ref) / period)
    while ref + round((k0 - 1) * period) >= lo:
        k0 -= 1
    while ref + round(k0 * period) < lo:
        k0 += 1
    k1 = math.floor((hi - ref) / period)
    while ref + round((k1 + 1) * period) <= hi:
        k1 += 1
    while ref + round(k1 * period) > hi:
        k1 -= 1
    n = k1 - k0 + 1
    if n > 2_000_000_000:
        raise ProcessingError(f"align: {n} samples per channel at {rate:g} Hz; choose a lower rate.")
    times: NDArray[np.int64] = sample_times(ref, k0, n, rate).view(np.int64)
    return times


def _onto(run: xr.Dataset, base: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.int8]]:
    """``run``'s values and flags at the times ``base`` (see :func:`align`)."""
    t = run["time"].values.view(np.int64)
    v = np.asarray(run["value"].values, dtype=np.float64)
    q = np.asarray(run["quality"].values, dtype=np.int8)
    n = t.size
    idx = np.searchsorted(t, base, side="left")
    exact = (idx < n) & (t[np.minimum(idx, n - 1)] == base)
    inside = (base >= t[0]) & (base <= t[-1])
    between = inside & ~exact
    out = np.full((v.shape[0], base.size), np.nan)
    flags = np.full(out.shape, int(Quality.BAD), dtype=np.int8)
    out[:, exact] = v[:, idx[exact]]
    flags[:, exact] = q[:, idx[exact]]
    if between.any():
        hi = idx[between]
        lo = hi - 1
        # relative to the first sample: float64 holds the nanoseconds exactly for 104 days
        x = (base[between] - t[0]).astype(np.float64)
        x0, x1 = (t[lo] - t[0]).astype(np.float64), (t[hi] - t[0]).astype(np.float64)
        w = (x - x0) / (x1 - x0)
        y = v[:, lo] + w * (v[:, hi] - v[:, lo])
        usable = np.isfinite(y) & (q[:, lo] != Quality.BAD) & (q[:, hi] != Quality.BAD)
        out[:, between] = y
        flags[:, between] = np.where(usable, int(Quality.INTERPOLATED), int(Quality.BAD))
    return out, flags

