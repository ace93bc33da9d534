"""RingBuffer.push throughput beside a bare numpy copy of the same blocks.

For blocks of 1, 100, 1000 and 10000 samples x 8 channels this pushes the same
pre-built blocks into

* a :class:`daqlab.RingBuffer`, and
* a bare ring: ``np.copyto`` into a preallocated ``(8, capacity)`` array, with
  wrap-around handled the same way (blocks larger than the ring keep their
  newest ``capacity`` samples; a block that straddles the end is split in two),

in the same run, interleaved, and prints samples/s (per channel and in total)
and the ratio ring/bare (1.0 = as fast as the bare copy; smaller is slower).

Two modes are measured:

``given``
    The source supplies timestamps (the realistic case): ``push(values, times)``.
    The bare ring copies values and times.
``auto``
    No timestamps: the ring stamps ``start + k / sample_rate`` itself.
    The bare ring copies values only.

Each measurement is the median of several repetitions, timed with
:func:`time.perf_counter`. Run::

    python benchmarks/ring_buffer.py           # full run, well under a minute
    python benchmarks/ring_buffer.py --quick   # a tiny run (smoke test)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from daqlab import RingBuffer

CHANNELS = 8
BLOCK_SIZES = (1, 100, 1000, 10_000)
CAPACITY = 65_536  # not a multiple of the block sizes: blocks straddle the end of the ring
SAMPLE_RATE = 10_000.0
T0_NS = 1_700_000_000_000_000_000
MODES = ("given", "auto")


@dataclass(frozen=True)
class Config:
    """How much work each measurement does."""

    target_samples: int
    """Samples per channel pushed in one repetition (before the push-count limits)."""
    min_pushes: int
    max_pushes: int
    repeats: int


FULL = Config(target_samples=2_000_000, min_pushes=50, max_pushes=20_000, repeats=7)
QUICK = Config(target_samples=2_000, min_pushes=3, max_pushes=200, repeats=3)


class BareRing:
    """The floor: preallocated arrays and ``np.copyto``, wrap-around as RingBuffer does it."""

    def __init__(self, channels: int, capacity: int) -> None:
        self.capacity = capacity
        self.values = np.zeros((channels, capacity), dtype=np.float64)
        self.times = np.zeros(capacity, dtype=np.int64)
        self.written = 0

    def _put(self, dst: NDArray[np.float64] | NDArray[np.int64],
             src: NDArray[np.float64] | NDArray[np.int64], pos: int) -> None:
        n = src.shape[-1]
        first = min(n, self.capacity - pos)
        np.copyto(dst[..., pos : pos + first], src[..., :first])
        if first < n:
            np.copyto(dst[..., : n - first], src[..., first:])

    def push(self, values: NDArray[np.float64], times: NDArray[np.int64] | None = None) -> int:
        n = values.shape[1]
        w = self.written
        keep = min(n, self.capacity)
        pos = (w + n - keep) % self.capacity
        self._put(self.values, values[:, n - keep :], pos)
        if times is not None:
            self._put(self.times, times[n - keep :], pos)
        self.written = w + n
        return w


@dataclass(frozen=True)
class Row:
    block: int
    mode: str
    pushes: int
    ring_s: float
    bare_s: float

    @property
    def samples(self) -> int:
        return self.block * self.pushes

    @property
    def ring_rate(self) -> float:
        return self.samples / self.ring_s

    @property
    def bare_rate(self) -> float:
        return self.samples / self.bare_s

    @property
    def ratio(self) -> float:
        return self.ring_rate / self.bare_rate


def _pushes(block: int, config: Config) -> int:
    return max(config.min_pushes, min(config.max_pushes, config.target_samples // block))


def _time_once(push: Callable[[NDArray[np.float64], NDArray[np.int64] | None], object],
               block: NDArray[np.float64], times: Sequence[NDArray[np.int64] | None]) -> float:
    t0 = time.perf_counter()
    for t in times:
        push(block, t)
    return time.perf_counter() - t0


def measure(block_size: int, mode: str, config: Config) -> Row:
    """Median time of pushing the same blocks into a RingBuffer and into a BareRing."""
    pushes = _pushes(block_size, config)
    rng = np.random.default_rng(block_size)
    block = rng.standard_normal((CHANNELS, block_size))
    warm = np.zeros((CHANNELS, CAPACITY))
    if mode == "given":
        all_times = T0_NS + np.arange(pushes * block_size, dtype=np.int64) * 100_000
        times: list[NDArray[np.int64] | None] = [
            all_times[i * block_size : (i + 1) * block_size] for i in range(pushes)
        ]
        warm_times: NDArray[np.int64] | None = np.full(CAPACITY, T0_NS - 1, dtype=np.int64)
    else:
        times = [None] * pushes
        warm_times = None
    ring_s: list[float] = []
    bare_s: list[float] = []
    for _ in range(config.repeats):
        # Fresh rings each time (times must keep increasing); one warm-up push
        # of a whole ring so that page faults are not timed.
        bare = BareRing(CHANNELS, CAPACITY)
        bare.push(warm, warm_times)
        ring = RingBuffer(CHANNELS, CAPACITY, SAMPLE_RATE, start=np.datetime64(T0_NS, "ns"))
        ring.push(warm, warm_times)
        bare_s.append(_time_once(bare.push, block, times))
        ring_s.append(_time_once(ring.push, block, times))
        assert ring.written == bare.written == CAPACITY + pushes * block_size
    return Row(block_size, mode, pushes, statistics.median(ring_s), statistics.median(bare_s))


def _rate(x: float) -> str:
    return f"{x / 1e6:,.3f} M"


HEADER = (
    f"{'block':>6} {'times':>6} {'pushes':>7} | {'ring S/s/ch':>12} {'ring S/s':>12} | "
    f"{'bare S/s/ch':>12} {'bare S/s':>12} | {'ring/bare':>9}"
)


def format_row(row: Row) -> str:
    return (
        f"{row.block:>6} {row.mode:>6} {row.pushes:>7} | {_rate(row.ring_rate):>12} "
        f"{_rate(row.ring_rate * CHANNELS):>12} | {_rate(row.bare_rate):>12} "
        f"{_rate(row.bare_rate * CHANNELS):>12} | {row.ratio:>9.3f}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a tiny run, for smoke tests")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    started = time.perf_counter()
    print(
        f"RingBuffer.push vs bare np.copyto: {CHANNELS} channels, capacity {CAPACITY}, "
        f"median of {config.repeats} repeats{' (--quick)' if args.quick else ''}"
    )
    print("S/s = samples per second (M = 1e6); 'given': push(values, times), "
          "'auto': push(values) stamped by the ring")
    print(HEADER)
    print("-" * len(HEADER))
    for block_size in BLOCK_SIZES:
        for mode in MODES:
            print(format_row(measure(block_size, mode, config)), flush=True)
    print(f"ring/bare = ring throughput / bare throughput (1.0 = as fast as a bare copy). "
          f"Took {time.perf_counter() - started:.1f} s.")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
