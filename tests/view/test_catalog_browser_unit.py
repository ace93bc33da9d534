"""``cat.browse()`` without a browser: what selecting, filtering and the button do to the widget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from bokeh.events import DocumentReady, RangesUpdate

import daqlab as dl
from daqlab.view import RunBrowser, RunPlot

START = ["2024-01-01T00:00:00", "2024-01-02T00:00:00", "2024-01-03T00:00:00"]
N, RATE = 2000, 1000.0


def _ms(when: str) -> float:
    return float(np.datetime64(when, "ms").astype(np.int64))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three runs (amplitudes 1, 2, 3; the third with 100 NaN samples, flagged BAD) and a broken file."""
    k = np.arange(N)
    for i, start in enumerate(START):
        amp = i + 1.0
        values = np.stack([amp * np.sin(k / 50.0), amp / 2 * np.cos(k / 50.0)])
        if i == 2:
            values[0, 100:200] = np.nan
        channels = [dl.Channel("a", "V", calibration=dl.Calibration(2.0, 0.5)), dl.Channel("b", "mV")]
        run = dl.make_run(values, channels, sample_rate=RATE, start=start, name=f"run{i}",
                          metadata={"operator": f"op{i}"})
        dl.save(run, tmp_path / f"r{i}.nc")
    (tmp_path / "broken.nc").write_bytes(b"not a netcdf file")
    return tmp_path


@pytest.fixture
def browser(folder: Path) -> Iterator[RunBrowser]:
    b = dl.Catalog(folder).browse(width=400, height=200)
    try:
        yield b
    finally:
        b.close()


def _label(browser: RunBrowser, path: str) -> int:
    df = browser.catalog.df
    return int(df.index[df["path"] == path][0])


def test_the_table_lists_every_row(browser: RunBrowser) -> None:
    assert isinstance(browser, RunBrowser)
    data = browser.table_source.data
    assert list(data["path"]) == ["broken.nc", "r0.nc", "r1.nc", "r2.nc"]
    assert list(data["state"]) == ["error", "complete", "complete", "complete"]
    assert list(data["samples"]) == [0, N, N, N]
    assert data["start"][1] == "2024-01-01 00:00:00"
    assert data["bad"][3] == pytest.approx(100 / (2 * N))
    assert "broken.nc" in data["error"][0]
    assert "4 of 4 runs" in browser.status.value
    assert browser.plot is None
    assert browser.overlay is None


def test_selecting_a_row_shows_its_summary_and_plots_it_lazily(browser: RunBrowser) -> None:
    browser.select([_label(browser, "r1.nc")])
    plot = browser.plot
    assert isinstance(plot, RunPlot)
    assert plot.run["value"].chunks is not None  # opened lazily: big files are not loaded whole
    assert browser.plot_area.children == [plot.figure]
    x = plot.source.data["x"]
    assert x[0] == _ms(START[1])
    assert _ms(START[1]) + 1990 <= np.nanmax(x) <= _ms(START[1]) + 2000  # the last of 400 columns
    assert np.nanmax(plot.source.data["y0"]) == pytest.approx(2.0, abs=1e-3)
    assert np.nanmax(plot.source.data["y1"]) == pytest.approx(1.0, abs=1e-3)
    detail = browser.detail.value
    for text in ("run1", "r1.nc", "2,000 samples at 1000 Hz", "good 100.00%", "<td>a</td><td>V</td>",
                 "2 &times; raw + 0.5", "<td>b</td><td>mV</td>", "operator=<code>op1</code>"):
        assert text in detail, (text, detail)

    # zooming re-reads the span from the file: 200 samples in 400 columns, every one drawn
    t = plot.run["time"].values
    plot.show_span(t[1000], t[1199])
    np.testing.assert_allclose(plot.source.data["y0"][0::2][:200], 2.0 * np.sin(np.arange(1000, 1200) / 50.0))


def test_several_rows_overlay_on_one_time_axis_or_aligned_at_their_starts(browser: RunBrowser) -> None:
    labels = [_label(browser, "r0.nc"), _label(browser, "r2.nc")]
    browser.select(labels)
    assert browser.plot is None
    overlay = browser.overlay
    assert overlay is not None
    assert not overlay["aligned"]
    fig = overlay["figure"]
    assert browser.plot_area.children == [fig]
    assert [item.label.value for item in fig.legend.items] == ["run0: a", "run0: b", "run2: a", "run2: b"]
    colors = [r.glyph.line_color for r in fig.renderers]
    assert len(set(colors)) == 4
    for source, start, amp in zip(overlay["sources"], (START[0], START[2]), (1.0, 3.0), strict=True):
        assert source.data["x"][0] == _ms(start)
        assert np.nanmax(source.data["y0"]) == pytest.approx(amp, abs=1e-3)
    assert "run0" in browser.detail.value
    assert "run2" in browser.detail.value
    assert "bad 2.50%" in browser.detail.value

    browser.aligned.value = True  # the checkbox: both runs from 0 s
    overlay = browser.overlay
    assert overlay is not None
    assert overlay["aligned"]
    assert overlay["figure"].xaxis[0].axis_label == "seconds from start"
    for source in overlay["sources"]:
        assert source.data["x"][0] == 0.0
        assert 1.990 <= np.nanmax(source.data["x"]) <= 2.0
    # zoomed to 0.5 .. 0.6 s: each run re-read over that span at full resolution
    fig = overlay["figure"]
    browser._reread(RangesUpdate(fig, x0=0.5, x1=0.6), [int(np.datetime64(START[0], "ns").astype(np.int64)),
                                                         int(np.datetime64(START[2], "ns").astype(np.int64))])
    lows = overlay["sources"][0].data["y0"][0::2]
    np.testing.assert_allclose(lows[:101], np.sin(np.arange(500, 601) / 50.0))

    browser.select([labels[0]])  # one run, aligned: the overlay still, on seconds
    assert browser.overlay is not None
    assert len(browser.overlay["sources"]) == 1
    browser.aligned.value = False
    assert isinstance(browser.plot, RunPlot)


def test_search_and_query_narrow_the_table_and_a_bad_query_only_says_so(browser: RunBrowser) -> None:
    keep = _label(browser, "r1.nc")
    browser.select([keep])
    browser.search.value = "RUN1"
    assert list(browser.table_source.data["path"]) == ["r1.nc"]
    assert list(browser.rows["path"]) == ["r1.nc"]
    assert browser.selected == [keep]  # the selection stays while its row is shown
    assert "1 of 4 runs" in browser.status.value
    browser.search.value = "op2"  # metadata are searched too
    assert list(browser.table_source.data["path"]) == ["r2.nc"]
    assert browser.selected == []
    browser.search.value = ""
    browser.query.value = "bad > 0 and duration > 1"
    assert list(browser.table_source.data["path"]) == ["r2.nc"]
    assert "query" in browser.status.value
    browser.query.value = "bad >"  # an error of the expression: shown, never raised
    assert "failed" in browser.status.value
    assert "SyntaxError" in browser.status.value
    assert len(browser.table_source.data["path"]) == 4
    browser.query.value = "nonsense_column > 1"
    assert "failed" in browser.status.value
    assert "nonsense_column" in browser.status.value
    browser.query.value = ""
    browser.search.value = "r0"
    with pytest.raises(dl.ConfigurationError, match="not in the table"):
        browser.select([keep])


def test_a_row_with_an_error_shows_the_error_and_no_plot(browser: RunBrowser) -> None:
    broken = _label(browser, "broken.nc")
    browser.select([broken])
    assert [browser.plot, browser.overlay] == [None, None]  # (a list: mypy would narrow them for good)
    assert [type(m).__name__ for m in browser.plot_area.children] == ["Div"]
    assert "error" in browser.detail.value
    assert "not a run daqlab can read" in browser.detail.value
    browser.select([broken, _label(browser, "r0.nc")])  # the good one is plotted alone
    assert isinstance(browser.plot, RunPlot)
    assert "1 of the selected rows have no samples to plot" in browser.status.value


def test_the_button_puts_the_run_in_a_variable(browser: RunBrowser) -> None:
    browser.to_variable.click()  # nothing selected: said in the status line
    assert "no run is selected" in browser.status.value
    label = _label(browser, "r0.nc")
    browser.select([label])
    browser.variable.value = "not a name"
    browser.to_variable.click()
    assert "not a Python identifier" in browser.status.value
    assert [browser.value] == [None]
    browser.variable.value = "picked"
    browser.to_variable.click()  # outside IPython: into browser.value
    assert isinstance(browser.value, xr.Dataset)
    xr.testing.assert_identical(browser.value, browser.catalog.open(label))
    assert browser.handed.value.startswith("<code>picked</code> = run0 (")

    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        browser.select([label, _label(browser, "r1.nc")])
        browser.to_variable.click()  # in IPython: into the user's namespace; several: a list
        picked = shell.user_ns["picked"]
        assert [r.attrs["name"] for r in picked] == ["run0", "run1"]
        assert picked is browser.value
    finally:
        InteractiveShell.clear_instance()


def test_rescan_lists_new_runs(browser: RunBrowser, folder: Path) -> None:
    run = dl.make_run(np.zeros((1, 10)), ["a"], sample_rate=10.0, start="2024-02-01", name="late")
    dl.save(run, folder / "r9.nc")
    browser.rescan.click()
    assert list(browser.table_source.data["path"])[-1] == "r9.nc"
    assert "5 of 5 runs" in browser.status.value


def test_a_page_showing_the_plot_late_gets_it_whole(browser: RunBrowser) -> None:
    """Changes sent before a page listened are lost: a page that has drawn the document (its
    document_ready event) gets the document again when it changed since the widget was made."""
    pane = browser.plot_widget
    before = pane.render_bundle
    browser.select([_label(browser, "r0.nc")])
    assert [pane.stale] == [True]
    assert pane.render_bundle == before
    doc = browser.plot_area.document
    doc.callbacks.trigger_event(DocumentReady())
    assert not pane.stale
    assert "daqlab-run-data" in str(pane.render_bundle)
    again = pane.render_bundle
    doc.callbacks.trigger_event(DocumentReady())  # nothing changed: the page keeps what it has
    assert pane.render_bundle is again


def test_a_file_of_several_rate_groups_plots_its_fastest_and_hands_over_the_tree(tmp_path: Path) -> None:
    fast = dl.make_run(np.sin(np.arange(4000) / 40.0)[None], ["f"], sample_rate=1000.0, start=START[0])
    slow = dl.make_run(np.arange(40.0)[None], ["s"], sample_rate=10.0, start=START[0])
    dl.save(xr.DataTree.from_dict({"/slow": slow, "/fast": fast}), tmp_path / "tree.nc")
    browser = dl.Catalog(tmp_path).browse(width=400)
    try:
        browser.select([0])
        assert browser.plot is not None
        assert browser.plot.names == ["f"]
        assert browser.plot.source.data["x"][0] == _ms(START[0])
        assert "plotted: group <code>/fast</code>, the fastest of /" in browser.detail.value
        browser.to_variable.click()
        assert isinstance(browser.value, xr.DataTree)
        assert sorted(browser.value.children) == ["fast", "slow"]
    finally:
        browser.close()
