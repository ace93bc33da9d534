"""Live view frame preparation, against a plain numpy min/max of the same window.

- cold: the whole window decimated at once (a new view, or a new window length):
  daqlab's MinMaxColumns fed from the ring against ``x.reshape(...).min/max`` on
  an array already in memory;
- warm: one frame of a running view: read what arrived since the last frame
  (8 channels at 1 MS/s, 20 frames a second: 50 000 samples per channel), add it
  to the columns, build the bokeh columns for the whole window; against the
  same plain numpy reduction over the window (what redrawing from scratch costs).

    python benchmarks/liveview.py            # 8 channels x 1 M-sample window
    python benchmarks/liveview.py --quick    # small, for a smoke test

Target: a warm frame <= 10 ms for 8 x 1 M. Frames per second and latency in a
real browser are measured by tests/view/test_live_browser.py (``--fps``) and printed there.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import daqlab as dl
from daqlab.view import LiveView
from daqlab.view._live import frame_points


def median_ms(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    channels, window, rate, fps, width = (8, 1_000_000, 1_000_000.0, 20, 1000)
    if args.quick:
        channels, window, rate = 4, 100_000, 100_000.0
    per_frame = int(rate / fps)
    repeat = 5 if args.quick else 15
    rng = np.random.default_rng(0)
    buf = dl.RingBuffer([f"c{i}" for i in range(channels)], 2 * window, rate)
    view = LiveView(buf, window=window / rate, width=width)
    view.stop()  # frames are driven here, not by the refresher thread
    block = rng.normal(size=(channels, per_frame))
    for _ in range(window // per_frame):
        buf.push(block)
    window_array = rng.normal(size=(channels, window))
    per = -(-window // width)

    def plain() -> None:
        x = window_array[:, : (window // per) * per].reshape(channels, -1, per)
        x.min(axis=2)
        x.max(axis=2)

    def cold() -> None:
        view.reader.close()
        view.reader = buf.reader(from_oldest=True)  # a new view: everything held is unread
        view._cols = view._new_columns(window / rate)
        view._read_new()
        assert len(view._cols) >= width
        frame_points(view._cols, range(channels))

    frame = [0]

    def warm() -> None:
        buf.push(block)
        frame[0] += 1
        t = time.perf_counter()
        view._read_new()
        frame_points(view._cols, range(channels))
        warm_times.append(time.perf_counter() - t)

    def full_draw() -> None:
        buf.push(block)
        frame[0] += 1
        view._draw()

    warm_times: list[float] = []
    t_plain = median_ms(plain, repeat)
    t_cold = median_ms(cold, repeat)
    for _ in range(repeat):
        warm()
    t_warm = statistics.median(warm_times) * 1e3
    t_draw = median_ms(full_draw, repeat)
    view.close()
    print(f"window {channels} channels x {window:,} samples, {width} columns, "
          f"{per_frame:,} new samples per channel per frame")
    print(f"{'case':>28} | {'daqlab ms':>10} | {'plain numpy ms':>14} | {'plain/daqlab':>12}")
    for name, ms in (("cold (whole window)", t_cold), ("warm frame (prep only)", t_warm),
                     ("warm frame (+ bokeh update)", t_draw)):
        print(f"{name:>28} | {ms:10.2f} | {t_plain:14.2f} | {t_plain / ms:12.3f}")
    print("plain = numpy min/max of the whole window already in memory; target: warm frame <= 10 ms")


if __name__ == "__main__":
    main()
