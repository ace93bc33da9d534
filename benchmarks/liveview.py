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

Target: a warm frame <= 10 ms for 8 x 1 M.

    python benchmarks/liveview.py --browser  # also: a LiveView of 8 x 1 MS/s in headless Chromium

``--browser`` opens a notebook with a LiveView of a simulated 8-channel 1 MS/s
source (1 s window: 1 M samples per channel) in JupyterLab, driven by Debian
Chromium through Playwright (the test harness in tests/view/browser.py), and
reports the data updates per second the page shows and the latency from
acquisition to screen (now minus the newest plotted sample time). Targets:
>= 10 fps, median latency <= 200 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

import daqlab as dl
from daqlab.view import LiveView
from daqlab.view._live import frame_points


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


BROWSER_CELLS = [
    "import daqlab as dl\n"
    "source = dl.sources.Simulated({channels}, sample_rate={rate}, seed=1)\n"
    "manager = dl.DataManager(source, record=False, buffer_seconds=3.0)\n"
    "manager.start()",
    "view = dl.LiveView(manager, window=1.0)\nview",
]


def browser(seconds: float, channels: int, rate: float, app: str) -> None:
    """A LiveView in headless Chromium: data updates per second and latency as the page sees them."""
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    import nbformat

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.view.browser import (
        browser_page,
        chromium,
        jupyter_server,
        measure_updates,
        open_notebook,
        wait_for_bokeh_model,
    )
    from tests.view.test_live_browser import FIGURE, SOURCE, measure_latency

    exe = shutil.which("chromium")
    if exe is None:
        raise SystemExit("--browser needs Debian's chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(c.format(channels=channels, rate=rate))  # type: ignore[no-untyped-call]
                    for c in BROWSER_CELLS]
        nbformat.write(nb, Path(tmp) / "bench.ipynb")  # type: ignore[no-untyped-call]
        with jupyter_server(Path(tmp), app) as server, chromium(exe) as b, browser_page(b) as page:  # type: ignore[arg-type]
            open_notebook(page.page, server, "bench.ipynb", timeout=120)
            wait_for_bokeh_model(page.page, FIGURE, rendered=True, timeout=120)
            page.page.wait_for_function(
                "(n) => Bokeh.documents.some((d) => { const m = d.get_model_by_name(n);"
                " return m && m.data.x.length > 10; })", arg=SOURCE, timeout=120_000, polling=100)
            measure_updates(page.page, source=SOURCE, figure=FIGURE, seconds=2.0)  # warm-up
            stats = measure_updates(page.page, source=SOURCE, figure=FIGURE, seconds=seconds)
            latency = measure_latency(page.page, seconds=seconds)
            status = page.page.locator("code", has_text="fps").first.inner_text()
    print(f"\nbrowser ({app}, headless Chromium): {channels} channels x {rate:,.0f} S/s, 1 s window, "
          f"{seconds:g} s measured")
    print(f"  data updates shown: {stats.data_fps:.1f} /s (target >= 10); "
          f"repaints {stats.repaint_fps:.1f} /s")
    print(f"  latency acquisition -> screen: median {statistics.median(latency):.0f} ms, "
          f"max {max(latency):.0f} ms (target median <= 200 ms)")
    print(f"  view's status line: {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--browser", action="store_true", help="also measure fps and latency in Chromium")
    parser.add_argument("--browser-rate", type=float, default=1e6, help="sample rate per channel (--browser)")
    parser.add_argument("--browser-channels", type=int, default=8)
    parser.add_argument("--app", default="lab", choices=["lab", "voila", "notebook"])
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
    if args.browser:
        browser(10.0, args.browser_channels, args.browser_rate, args.app)


if __name__ == "__main__":
    main()
