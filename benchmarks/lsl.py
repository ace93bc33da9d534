"""Sustained Lab Streaming Layer rates into daqlab, beside a bare pylsl pull loop.

For each configuration (channels x rate) an outlet in a process of its own pushes a counter
(sample ``k`` of channel ``c`` holds ``k * C + c``) paced by its clock, in 10 ms chunks, for
``--seconds``. It is read twice, in the same run, by a fresh outlet each time:

- ``bare pylsl``: a StreamInlet pulled in a loop into a preallocated numpy buffer (5 ms poll,
  as daqlab's source), every value checked against the counter;
- ``daqlab LSL``: ``dl.sources.LSL`` in a :class:`daqlab.DataManager` (``--record`` also
  records to disk), every sample checked as it lands in the ring buffer.

Per row: samples/s received (per channel), samples lost (pushed but not received, or received
with a wrong value), the lag (ms: arrival time minus the newest sample's timestamp), the CPU
used by this process (% of one core), and the daqlab/bare ratio of samples/s (1.00 = all kept).
Lag is the median over the blocks and the worst one (a busy machine shows in the worst).

    python benchmarks/lsl.py                  # 10 s per configuration and reader
    python benchmarks/lsl.py --seconds 60
    python benchmarks/lsl.py --quick          # 2 s, two configurations (smoke test)
"""

from __future__ import annotations

import argparse
import importlib
import math
import multiprocessing as mp
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
from numpy.typing import NDArray

import daqlab as dl

FULL = [(8, 100_000.0), (64, 1_000.0), (32, 10_000.0), (64, 10_000.0), (8, 250_000.0)]
QUICK = [(8, 100_000.0), (64, 1_000.0)]
POLL = 0.005
PATIENCE = 30.0


def counter(k0: int, n: int, channels: int) -> NDArray[np.float64]:
    """``(n, channels)`` values of samples ``k0 ..``."""
    k = np.arange(k0, k0 + n, dtype=np.float64)[:, np.newaxis] * channels
    out: NDArray[np.float64] = k + np.arange(channels, dtype=np.float64)
    return out


def push(source_id: str, channels: int, rate: float, total: int, ready: Any) -> None:
    """The outlet process: announce, wait for a reader, push ``total`` samples paced by the clock."""
    pylsl: Any = importlib.import_module("pylsl")
    info = pylsl.StreamInfo(f"bench-{source_id[:8]}", "Bench", channels, rate, "double64", source_id)
    outlet = pylsl.StreamOutlet(info, 0, 30)
    ready.set()
    if not outlet.wait_for_consumers(PATIENCE):
        raise SystemExit("no reader came")
    block = max(1, round(rate * 0.01))
    t0, k = time.monotonic(), 0
    while k < total:
        due = min(total, math.floor((time.monotonic() - t0) * rate))
        if due - k >= min(block, total - k):
            outlet.push_chunk(counter(k, due - k, channels))  # stamped now by liblsl
            k = due
        else:
            time.sleep(0.002)
    deadline = time.monotonic() + PATIENCE
    while outlet.have_consumers() and time.monotonic() < deadline:  # the reader has all: it leaves
        time.sleep(0.01)


@dataclass
class Row:
    reader: str
    received: int
    lost: int
    lags_s: list[float]
    cpu_s: float
    seconds: float


def start_outlet(channels: int, rate: float, total: int) -> tuple[str, Any]:
    source_id = f"daqlab-bench-{uuid.uuid4().hex}"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=push, args=(source_id, channels, rate, total, ready), daemon=True)
    proc.start()
    if not ready.wait(PATIENCE):
        proc.kill()
        raise RuntimeError("the outlet process did not start")
    return source_id, proc


def bare(channels: int, rate: float, seconds: float) -> Row:
    pylsl: Any = importlib.import_module("pylsl")
    total = round(seconds * rate)
    source_id, proc = start_outlet(channels, rate, total)
    (info,) = pylsl.resolve_byprop("source_id", source_id, 1, PATIENCE)
    inlet = pylsl.StreamInlet(info, max_buflen=10)
    inlet.open_stream(PATIENCE)
    buf = np.empty((max(256, math.ceil(0.1 * rate)), channels))
    got = wrong = 0
    lags: list[float] = []
    cpu, t0 = time.process_time(), time.monotonic()
    deadline = t0 + seconds + PATIENCE
    while got < total and time.monotonic() < deadline:
        view, ts = inlet.pull_chunk(0.0, buf.shape[0], dest_obj=buf, as_numpy=True)
        n = len(ts)
        if n:
            lags.append(float(pylsl.local_clock()) - float(ts[-1]))
            wrong += int(np.count_nonzero((view != counter(got, n, channels)).any(axis=1)))
            got += n
        else:
            time.sleep(POLL)
    row = Row("bare pylsl", got, total - got + wrong, lags, time.process_time() - cpu, seconds)
    inlet.close_stream()
    proc.join(PATIENCE)
    return row


def daqlab(channels: int, rate: float, seconds: float, record: Path | None) -> Row:
    total = round(seconds * rate)
    source_id, proc = start_outlet(channels, rate, total)
    src = dl.sources.LSL(source_id=source_id, timeout=PATIENCE)
    dm = dl.DataManager(src, record=record is not None, output_dir=record or Path("unused"),
                        autosave_interval=None, handle_sigint=False, buffer_seconds=10.0)
    buf = dm.buffers[src.name]
    reader = buf.reader()
    wrong = 0
    lags: list[float] = []
    with dm:
        cpu, t0 = time.process_time(), time.monotonic()
        deadline = t0 + seconds + PATIENCE
        while reader.position < total and time.monotonic() < deadline and not dm.errors:
            if reader.wait(timeout=0.5):
                block = reader.read()
                lags.append((time.time_ns() - int(block.times[-1].astype(np.int64))) / 1e9)
                want = counter(block.start, len(block), channels).T
                wrong += int(np.count_nonzero((block.values != want).any(axis=0)))
        cpu = time.process_time() - cpu
    proc.join(PATIENCE)
    if dm.errors:
        raise RuntimeError(f"the acquisition failed: {dm.errors}")
    lost = total - buf.written + reader.lost + wrong
    return Row("daqlab LSL", buf.written, lost, lags, cpu, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds per configuration and reader")
    ap.add_argument("--quick", action="store_true", help="2 s runs of two configurations")
    ap.add_argument("--record", action="store_true", help="the DataManager also records to disk")
    ap.add_argument("--config", default=None, help="one configuration CHANNELSxRATE, e.g. 8x100000")
    args = ap.parse_args(argv)
    configs = QUICK if args.quick else FULL
    if args.config:
        c, r = args.config.lower().split("x")
        configs = [(int(c), float(r))]
    seconds = 2.0 if args.quick else args.seconds
    folder = Path(tempfile.mkdtemp(prefix="daqlab-bench-lsl-")) if args.record else None
    print(f"{seconds:g} s per row; outlet in its own process; "
          f"{'recording to disk' if folder else 'not recording'}")
    print(f"{'channels':>8} {'rate/ch':>10}  {'reader':<11} {'S/s':>10} {'lost':>6} {'lag ms':>7} "
          f"{'max ms':>7} {'CPU %':>6} {'vs bare':>8}", flush=True)
    try:
        for c, r in configs:
            base = bare(c, r, seconds)
            ours = daqlab(c, r, seconds, folder)
            for row in (base, ours):
                lag, worst = (1e3 * median(row.lags_s), 1e3 * max(row.lags_s)) if row.lags_s else (0, 0)
                print(f"{c:>8} {r:>10,.0f}  {row.reader:<11} {row.received / row.seconds:>10,.0f} "
                      f"{row.lost:>6} {lag:>7.1f} {worst:>7.1f} {100 * row.cpu_s / row.seconds:>6.1f} "
                      f"{row.received / max(1, base.received):>8.2f}", flush=True)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    print("S/s: samples per second per channel received; lost: pushed but not received, or wrong; "
          "vs bare = S/s of the row / S/s of the bare pylsl loop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
