"""Timing one thing against its baseline in the same run (shared by the benchmark scripts)."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

__all__ = ["compare"]


def compare(ours: Callable[[], object], base: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall times of ``ours`` and ``base``: one warm-up each, then alternated runs, so
    that imports, page cache and disk write-back weigh on both alike; the garbage of each is
    collected before the next (a tree's nodes refer to each other: without it, the memory of
    earlier runs stays until Python's collector runs, in the middle of a timing)."""
    ours()
    base()
    t_ours: list[float] = []
    t_base: list[float] = []
    for _ in range(repeat):
        for fn, acc in ((base, t_base), (ours, t_ours)):
            gc.collect()
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
    return statistics.median(t_ours), statistics.median(t_base)
