"""Live views without a browser: decimation, frame pacing, the refresher and its reader, plots."""

from __future__ import annotations

import itertools
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import daqlab as dl
from daqlab.view import FramePacer, LiveView, MinMaxColumns, RunPlot, SpectrumView, minmax
from daqlab.view._base import channel_color
from daqlab.view._live import flag_spans, frame_points
from tests.helpers import FakeClock, daqlab_threads, wait_for

# --- decimation -------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3000),
    per=st.integers(1, 64),
    cuts=st.lists(st.integers(0, 3000), max_size=8),
    seed=st.integers(0, 2**16),
)
def test_incremental_columns_equal_one_pass_over_everything(n: int, per: int, cuts: list[int],
                                                             seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(2, n))
    values[rng.random((2, n)) < 0.01] = np.nan
    quality = rng.choice(np.array([0, 0, 0, 0, 1, 2, 3], dtype=np.int8), size=(2, n))
    times = np.arange(n, dtype=np.int64) * 1000
    cols = MinMaxColumns(2, per, keep=10**6)
    edges = sorted({0, n, *(c for c in cuts if c < n)})
    for a, b in itertools.pairwise(edges):
        cols.add(a, values[:, a:b], quality[:, a:b], times[a:b])
    ncols = -(-n // per)
    padded = np.full((2, ncols * per), np.nan)
    padded[:, :n] = values
    with warnings.catch_warnings():  # all-NaN columns: nanmin warns and gives NaN, as wanted
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = np.nanmin(padded.reshape(2, ncols, per), axis=2)
        hi = np.nanmax(padded.reshape(2, ncols, per), axis=2)
    np.testing.assert_array_equal(cols.lo, lo)
    np.testing.assert_array_equal(cols.hi, hi)
    np.testing.assert_array_equal(cols.index, np.arange(ncols))
    np.testing.assert_array_equal(cols.t0, times[::per])
    qpad = np.zeros((2, ncols * per), dtype=np.int8)
    qpad[:, :n] = quality
    q3 = qpad.reshape(2, ncols, per)
    np.testing.assert_array_equal(cols.bad, (q3 == 2).any(axis=2) | np.isnan(lo))
    np.testing.assert_array_equal(cols.suspect, ((q3 == 1) | (q3 == 3)).any(axis=2))


def test_a_one_sample_peak_survives_decimation_of_a_million_samples() -> None:
    values = np.zeros((8, 1_000_000))
    values[3, 777_777] = 5.0
    values[5, 123_456] = -7.0
    first, lo, hi, bad, suspect = minmax(values, 1000)
    assert lo.shape == (8, 1000)
    assert hi[3].max() == 5.0
    assert hi[3].argmax() == 777
    assert lo[5].min() == -7.0
    assert lo[5].argmin() == 123
    assert not bad.any()
    assert not suspect.any()
    assert first[1] == 1000


def test_columns_keep_only_the_newest_window() -> None:
    cols = MinMaxColumns(1, per=10, keep=5)
    for k in range(20):
        block = np.arange(k * 7, k * 7 + 7, dtype=float)[None]
        cols.add(k * 7, block, np.zeros((1, 7), np.int8), np.arange(k * 7, k * 7 + 7, dtype=np.int64))
    assert len(cols) == 5
    assert cols.index.tolist() == [9, 10, 11, 12, 13]
    assert cols.hi[0].tolist() == [99, 109, 119, 129, 139]
    assert cols.lo[0].tolist() == [90, 100, 110, 120, 130]


def test_frame_points_interleave_min_max_and_break_at_gaps() -> None:
    cols = MinMaxColumns(1, per=2, keep=100)
    t = np.arange(10, dtype=np.int64) * 1_000_000  # 1 ms apart
    cols.add(0, np.array([[1.0, 3.0, 2.0, 0.0]]), np.zeros((1, 4), np.int8), t[:4])
    cols.add(8, np.array([[5.0, 4.0]]), np.array([[2, 0]], np.int8), t[8:])  # samples 4..7 never came
    data = frame_points(cols, [0])
    assert data["y0"][:4].tolist() == [1.0, 3.0, 0.0, 2.0]
    assert np.isnan(data["y0"][4])
    assert np.isnan(data["x"][4])
    assert data["y0"][5:].tolist() == [4.0, 5.0]
    assert data["x"][:2].tolist() == [0.0, 1.0]
    spans = flag_spans(cols, [0])
    assert spans["color"] == ["#d62728"]
    assert spans["left"] == [8.0]
    calibrated = frame_points(cols, [0], np.array([-2.0]), np.array([1.0]))
    assert calibrated["y0"][:2].tolist() == [-5.0, -1.0]  # min/max swap under a negative slope


# --- pacing -----------------------------------------------------------------------------------------


def test_pacer_draws_at_the_bounded_rate_while_the_browser_keeps_up() -> None:
    clock = FakeClock()
    pacer = FramePacer(20.0, clock=clock)
    times = []
    for _ in range(10):
        clock.advance(pacer.delay())
        assert pacer.should_draw()
        times.append(clock.now)
        frame = pacer.frame_sent()
        clock.advance(0.01)
        pacer.frame_acked(frame)
    steps = np.diff(times)
    assert np.allclose(steps[1:], 0.05)
    assert pacer.latency() == pytest.approx(0.01)
    assert pacer.skipped == 0


def test_pacer_backs_off_when_acks_lag_and_recovers_when_they_return() -> None:
    clock = FakeClock()
    pacer = FramePacer(20.0, min_fps=1.0, max_in_flight=2, clock=clock)
    pacer.frame_acked(pacer.frame_sent())  # the browser is there
    intervals = []
    for _ in range(12):  # the browser stops painting: frames pile up unacknowledged
        clock.advance(pacer.delay())
        if pacer.should_draw():
            pacer.frame_sent()
        intervals.append(pacer.interval)
    assert pacer.skipped > 0
    assert intervals[-1] > 5 * intervals[0]
    assert pacer.interval <= 1.0  # never below min_fps
    pacer.frame_acked(pacer.sent)  # it catches up
    for _ in range(30):
        clock.advance(pacer.delay())
        assert pacer.should_draw()
        pacer.frame_acked(pacer.frame_sent())
    assert pacer.interval == pytest.approx(0.05)


def test_pacer_follows_a_reloaded_page_that_counts_its_frames_from_one() -> None:
    clock = FakeClock()
    pacer = FramePacer(20.0, clock=clock)
    for _ in range(50):
        clock.advance(0.05)
        pacer.frame_acked(pacer.frame_sent(), "page-1")
    assert pacer.acked == 50
    for _ in range(3):  # the page reloads: these frames go nowhere
        clock.advance(0.05)
        pacer.frame_sent()
    clock.advance(3.0)
    assert [pacer.blind] == [True]  # (a list: mypy would narrow the property and skip the rest)
    for k in range(1, 11):  # the new page's frames 1, 2, ... are the kernel's 54, 55, ...
        clock.advance(0.05)
        sent = pacer.frame_sent()
        pacer.frame_acked(k, "page-2")
        assert pacer.acked == sent
    assert not pacer.blind
    assert pacer.in_flight == 0
    pacer.frame_acked(3, "page-2")  # late and repeated acks change nothing
    assert pacer.acked == 63


def test_pacer_without_acks_draws_at_the_blind_rate() -> None:
    clock = FakeClock()
    pacer = FramePacer(30.0, blind_fps=5.0, clock=clock)
    pacer.frame_sent()
    assert pacer.blind
    assert pacer.delay() == pytest.approx(0.2)
    for _ in range(10):
        clock.advance(pacer.delay())
        assert pacer.should_draw()  # never skips: it cannot know
        pacer.frame_sent()
    assert pacer.fps() == pytest.approx(5.0)
    with pytest.raises(dl.ConfigurationError, match="min_fps <= blind_fps <= max_fps"):
        FramePacer(5.0, min_fps=10.0)


# --- the live view's refresher -----------------------------------------------------------------------


def _buffer(seconds: float = 10.0, rate: float = 1000.0, channels: int = 3) -> dl.RingBuffer:
    chans = [dl.Channel(f"c{i}", "V", calibration=dl.Calibration(slope=2.0, offset=1.0))
             for i in range(channels)]
    return dl.RingBuffer(chans, int(seconds * rate), rate)


def test_live_view_draws_new_data_from_its_own_thread_and_stops_on_close() -> None:
    buf = _buffer()
    view = LiveView(buf, window=2.0, width=200)
    try:
        assert [t.name for t in daqlab_threads()] == [f"daqlab-view-{view.number}"]
        buf.push(np.tile(np.arange(1000.0), (3, 1)))
        wait_for(lambda: view.source.data["x"].size > 0, what="a frame with data")
        y = view.source.data["y0"]
        assert np.nanmax(y) == 2 * 999.0 + 1  # calibrated by default
        assert view.x_range.follow_interval == pytest.approx(2000.0)  # the browser follows the newest
        view.calibrated.value = False
        wait_for(lambda: np.nanmax(view.source.data["y0"]) == 999.0, what="raw values drawn")
        view.picker.value = ("c1",)
        wait_for(lambda: [line.visible for line in view.lines] == [False, True, False], what="picker")
        view.y_mode.value = "fixed"
        view.y_min.value, view.y_max.value = -3.0, 3.0
        wait_for(lambda: view.figure.y_range is view.y_fixed, what="fixed y range")
        assert (view.y_fixed.start, view.y_fixed.end) == (-3.0, 3.0)
        view.y_mode.value = "auto"
        wait_for(lambda: view.figure.y_range is view.y_auto, what="autoscale again")
        assert "lost 0" in view.status_text()
        assert "buffer 10%" in view.status_text()
    finally:
        view.close()
    assert not daqlab_threads()
    assert view.error is None


def test_a_view_that_falls_behind_jumps_to_the_newest_window() -> None:
    buf = _buffer(seconds=10.0)
    view = LiveView(buf, window=1.0, width=100)
    try:
        view.stop()  # hold the refresher: the writer runs ahead meanwhile
        for k in range(9):
            buf.push(np.full((3, 1000), float(k)))
        view._draw()  # what the refresher does on its next frame
        assert view.reader.skipped >= 7000  # skipped, not drawn and not counted as lost
        assert view.reader.lost == 0
        y = view.source.data["y0"]
        assert set(np.unique(y[np.isfinite(y)])) == {2 * 8.0 + 1}  # only the newest second is shown
    finally:
        view.close()


def test_an_ack_arriving_as_the_frame_goes_out_counts() -> None:
    # the page's ack runs on another thread (its subshell): it may come before _draw returns; the
    # frame is counted before its data goes out, so such an ack is never "past the newest frame"
    buf = _buffer(seconds=10.0, channels=1)
    view = LiveView(buf, window=1.0, width=100)
    try:
        view.stop()
        first = view.pacer.frame_sent()
        view.pacer.frame_acked(first, "page-1")
        acks: list[int] = []

        def page_paints(attr: str, old: object, new: object) -> None:
            view.pacer.frame_acked(first + 1 + len(acks), "page-1")  # the page's next frame, at once
            acks.append(view.pacer.acked)

        view.source.on_change("data", page_paints)
        for k in range(3):
            buf.push(np.full((1, 100), float(k)))
            assert view._draw()
        assert acks == [first + 1, first + 2, first + 3]
        assert view.pacer.in_flight == 0
    finally:
        view.close()


def test_a_longer_window_shows_at_once_what_the_buffer_holds() -> None:
    buf = _buffer(seconds=10.0, channels=1)
    view = LiveView(buf, window=1.0, width=100)
    try:
        view.stop()
        for k in range(5):
            buf.push(np.full((1, 1000), float(k)))
        view._draw()
        assert set(np.unique(view.source.data["y0"])) == {2 * 4.0 + 1}
        view.window_box.value = 4.0
        view._draw()
        assert set(np.unique(view.source.data["y0"])) == {2 * k + 1.0 for k in (1, 2, 3, 4)}
    finally:
        view.close()


def test_bad_samples_are_shaded_in_the_live_view() -> None:
    buf = _buffer(channels=1)
    view = LiveView(buf, window=1.0, width=100)
    try:
        view.stop()
        values = np.zeros((1, 1000))
        values[0, 500:510] = np.nan
        buf.push(values)
        view._draw()
        spans = view.flags.data
        assert spans["color"] == ["#d62728"]
        assert spans["right"][0] - spans["left"][0] < 30  # ms: about the 10 bad samples, not the window
    finally:
        view.close()


def test_live_view_rejects_bad_arguments_with_clear_messages() -> None:
    buf = _buffer(seconds=2.0)
    with pytest.raises(dl.ConfigurationError, match=r"window must be .* at most 2 .* got 5"):
        LiveView(buf, window=5.0)
    with pytest.raises(dl.ChannelNotFoundError, match=r"\['nope'\] are not in this buffer"):
        LiveView(buf, ["nope"])
    with pytest.raises(dl.ConfigurationError, match="DataManager or a RingBuffer; got Dataset"):
        LiveView(dl.make_run([[1.0]], ["a"], sample_rate=1.0))  # type: ignore[arg-type]
    assert not daqlab_threads()


def test_the_legend_is_html_beside_the_plot_in_the_line_colors() -> None:
    # bokeh measured and painted an in-canvas legend every frame: a third of the frame rate at 8 x 1 MS/s
    buf = dl.RingBuffer(["a", "<b>&c", "=d"], 1000, 100.0)
    view = LiveView(buf, ["a", "=d"], window=1.0)
    try:
        assert not view.figure.legend
        assert [line.glyph.line_color for line in view.lines] == [channel_color(i) for i in range(3)]
        text = view.legend.value
        assert channel_color(0) in text
        assert channel_color(2) in text
        assert channel_color(1) not in text
        assert "&lt;b&gt;&amp;c" not in text
        assert "=d" in text
        view.picker.value = ("<b>&c",)  # picking channels changes the legend
        assert "&lt;b&gt;&amp;c" in view.legend.value
        assert "=d" not in view.legend.value
        assert view.legend in view.children
        spectrum = SpectrumView(buf, ["<b>&c"], seconds=1.0)
        try:
            assert not spectrum.figure.legend
            assert "&lt;b&gt;&amp;c" in spectrum.legend.value
            assert "<b>" not in spectrum.legend.value
            # a channel has the same color in every view
            assert [r.glyph.line_color for r in spectrum.figure.renderers] == [channel_color(1)]
            assert channel_color(1) in spectrum.legend.value
        finally:
            spectrum.close()
    finally:
        view.close()
    assert not daqlab_threads()


def test_several_views_of_one_running_manager() -> None:
    source = dl.sources.Simulated(["a", "b"], 20_000.0, seed=1)
    with dl.DataManager(source, record=False, buffer_seconds=5.0) as manager:
        views = [LiveView(manager, window=1.0, width=300), LiveView(manager, ["b"], window=0.5, width=300),
                 SpectrumView(manager, ["a"], seconds=0.5)]
        try:
            wait_for(lambda: all(v.frames_drawn >= 2 for v in views), timeout=20, what="frames")
            wait_for(lambda: views[0].source.data["x"].size > 100, timeout=20, what="data drawn")
            assert views[0].run_button.description == "Stop"
            views[0].run_button.click()  # stops the acquisition
            assert not manager.running
        finally:
            for v in views:
                v.close()
    assert not daqlab_threads()
    assert all(v.error is None for v in views)


def test_spectrum_finds_the_tone() -> None:
    buf = _buffer(rate=10_000.0, channels=1)
    t = np.arange(10_000) / 10_000.0
    buf.push(np.sin(2 * np.pi * 1234.0 * t)[None])
    view = SpectrumView(buf, seconds=1.0, nperseg=2048)
    try:
        wait_for(lambda: view.frames_drawn >= 1, what="a spectrum")
        f, p = view.source.data["f"], view.source.data["p0"]
        assert f[0] > 0
        assert abs(f[np.nanargmax(p)] - 1234.0) < 10
    finally:
        view.close()


# --- plots of saved runs -----------------------------------------------------------------------------


def test_run_plot_decimates_shades_and_rereads_detail_on_zoom(tmp_path: Path) -> None:
    values = np.random.default_rng(0).normal(size=(2, 200_000))
    values[1, 150_000] = 50.0
    values[0, 1000:1010] = np.nan
    run = dl.make_run(values, ["a", "b"], sample_rate=10_000.0)
    path = dl.save(run, tmp_path / "r.nc")
    for r in (run, dl.open_run(path, chunks={"time": 30_000})):
        plot = r.daq.plot(width=400)
        assert isinstance(plot, RunPlot)
        assert plot.source.data["x"].size <= 2 * 400 + 2
        assert np.nanmax(plot.source.data["y1"]) == 50.0
        assert "#d62728" in plot.flags.data["color"]
        t = r["time"].values
        plot.show_span(t[1000], t[1399])  # zoomed in: 400 samples in 400 columns, every one drawn
        np.testing.assert_array_equal(plot.source.data["y0"][1::2][10:], values[0, 1010:1400])
    page = plot.save_html(tmp_path / "r.html")
    text = page.read_text()
    assert "cdn.bokeh.org" not in text
    assert "Bokeh.embed" in text
    with pytest.raises(dl.StorageError, match="exists already"):
        plot.save_html(page)
    with pytest.raises(dl.ChannelNotFoundError, match="not in this run"):
        run.daq.plot(["zz"])


def test_demo_writes_an_html_plot_beside_the_run(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "daqlab", "demo", "--seconds", "0.5", "--channels", "2",
                           "--rate", "2000", "--out", str(tmp_path), "--quiet"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    html = next(tmp_path.glob("*.html"))
    assert f"plot: {html}" in done.stdout
    assert html.with_suffix(".nc").exists()
    assert "cdn.bokeh.org" not in html.read_text()


def test_lab_refuses_a_missing_folder(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "daqlab", "lab", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "no notebooks folder" in done.stderr


def test_import_daqlab_does_not_load_bokeh_or_scipy() -> None:
    code = ("import sys, daqlab; print(sorted(m for m in ('bokeh', 'ipywidgets', 'scipy.signal') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.strip() == "[]"
