"""``cat.browse()`` in a real browser, in JupyterLab and in Voila: the table, clicks that plot one run or
overlay two, aligned at their starts, a query, and the button that hands a run to the kernel."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.view.browser import (
    VOILA_KNOWN_OFFSITE,
    App,
    artifacts_dir,
    bokeh_patch_errors,
    browser_page,
    jupyter_server,
    open_notebook,
    run_in_kernel,
    wait_for_bokeh_model,
    watch_bokeh_patches,
)

# four files: three runs a day apart (amplitude 1, 2, 3; the third with 100 NaN samples, flagged
# BAD) and one that is no run at all
_CELLS = [
    "import numpy as np, pathlib, daqlab as dl\n"
    "folder = pathlib.Path('runs')\n"
    "folder.mkdir()\n"
    "k = np.arange(2000)\n"
    "for i in range(3):\n"
    "    v = np.stack([(i + 1) * np.sin(k / 50.0), (i + 1) / 2 * np.cos(k / 50.0)])\n"
    "    if i == 2:\n"
    "        v[0, 100:200] = np.nan\n"
    "    run = dl.make_run(v, [dl.Channel('a', 'V'), dl.Channel('b', 'mV')], sample_rate=1000.0,\n"
    "                      start=f'2024-01-0{i + 1}', name=f'run{i}')\n"
    "    dl.save(run, folder / f'r{i}.nc')\n"
    "(folder / 'broken.nc').write_bytes(b'not a netcdf file')",
    # r0.nc selected before the page shows the widget: the page must get the plot all the same
    "cat = dl.Catalog(folder)\nbrowser = cat.browse(width=800, height=260)\nbrowser.select([1])\nbrowser",
]
DAY0_MS = 1704067200000.0  # 2024-01-01T00:00:00Z
DAY_MS = 86_400_000.0

# What the plot shows now: the figure in the plot area and its sources' columns. (Found from the plot
# area, not by name: BokehJS keeps models a patch replaced for 30 s before it forgets them.)
_PLOT_JS = """() => {
  for (const d of (window.Bokeh && Bokeh.documents) || []) {
    let area = null;
    try { area = d.get_model_by_name("daqlab-browser-plot-area"); } catch (e) { area = null; }
    if (area == null) continue;
    const fig = area.children[0];
    const sources = {};
    for (const r of (fig && fig.renderers) || []) {
      const s = r.data_source;
      if (s == null || s.name == null || s.name.endsWith("flags")) continue;
      const data = s.data instanceof Map ? Object.fromEntries(s.data) : s.data;
      sources[s.name] = Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Array.from(v, Number)]));
    }
    return {figure: fig == null ? null : fig.name, sources};
  }
  return null;
}"""


def _write_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in _CELLS]  # type: ignore[no-untyped-call]
    nbformat.write(nb, path)  # type: ignore[no-untyped-call]


def _wait_for_plot(page: Page, condition: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until the plot ``condition(plot)`` (JS) holds; return the plot."""
    page.wait_for_function(f"() => {{ const p = ({_PLOT_JS})(); return p != null && ({condition})(p); }}",
                           timeout=timeout * 1000, polling=100)
    plot: dict[str, Any] = page.evaluate(_PLOT_JS)
    return plot


def _click_row(page: Page, path: str, modifiers: list[Any] | None = None) -> None:
    page.locator(".slick-row", has_text=path).locator(".slick-cell").first.click(modifiers=modifiers or [])


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v == v]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("app", ["lab", "voila"])
def test_catalog_browser_in_the_browser(app: App, chromium_browser: Browser, tmp_path: Path) -> None:
    _write_notebook(tmp_path / "browse.ipynb")
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    with jupyter_server(tmp_path, app) as server, browser_page(chromium_browser, height=1000) as browser:
        page = browser.page
        open_notebook(page, server, "browse.ipynb", timeout=90)
        wait_for_bokeh_model(page, "daqlab-browser-table", rendered=True, timeout=90)
        rows = page.locator(".slick-row")
        rows.filter(has_text="r2.nc").wait_for()
        timings["table_shown_s"] = time.monotonic() - t0
        watch_bokeh_patches(page)
        texts = rows.all_inner_texts()
        assert [t.split("\n")[0] for t in texts] == ["broken.nc", "r0.nc", "r1.nc", "r2.nc"], texts
        assert "error" in texts[0]
        assert "not a run daqlab can read" in texts[0]
        assert "2024-01-02 00:00:00" in texts[2]
        assert "2,000" in texts[2]

        # selected in the notebook before the page showed it: r0.nc's plot
        plot = _wait_for_plot(page, "(p) => p.figure === 'daqlab-run-figure'")
        assert _finite(plot["sources"]["daqlab-run-data"]["x"])[0] == DAY0_MS

        # a click on another row: its decimated points, over its two seconds, at its amplitude
        t = time.monotonic()
        _click_row(page, "r1.nc")
        plot = _wait_for_plot(page, "(p) => p.figure === 'daqlab-run-figure' && "
                                    f"p.sources['daqlab-run-data'].x[0] === {DAY0_MS + DAY_MS}")
        timings["one_run_plotted_s"] = time.monotonic() - t
        data = plot["sources"]["daqlab-run-data"]
        x = _finite(data["x"])
        assert x[0] == DAY0_MS + DAY_MS
        assert DAY0_MS + DAY_MS + 1990 <= x[-1] <= DAY0_MS + DAY_MS + 2000
        assert max(_finite(data["y0"])) == pytest.approx(2.0, abs=1e-3)
        assert max(_finite(data["y1"])) == pytest.approx(1.0, abs=1e-3)
        page.get_by_text("2,000 samples at 1000 Hz").first.wait_for()

        # ctrl-click a second row: both overlaid on one time axis
        t = time.monotonic()
        _click_row(page, "r2.nc", ["Control"])
        plot = _wait_for_plot(page, "(p) => p.figure === 'daqlab-browser-overlay'")
        timings["overlay_plotted_s"] = time.monotonic() - t
        runs = plot["sources"]
        assert sorted(runs) == ["daqlab-browser-run-0", "daqlab-browser-run-1"]
        for name, day, amp in (("daqlab-browser-run-0", 1, 2.0), ("daqlab-browser-run-1", 2, 3.0)):
            assert _finite(runs[name]["x"])[0] == DAY0_MS + day * DAY_MS
            assert max(_finite(runs[name]["y0"])) == pytest.approx(amp, abs=1e-3)
        page.get_by_text("bad 2.50%").first.wait_for()

        # aligned at their starts: seconds from 0
        page.get_by_text("aligned at start").click()
        plot = _wait_for_plot(page, "(p) => p.figure === 'daqlab-browser-overlay' && "
                                    "Object.values(p.sources).every((s) => s.x[0] === 0)")
        for source in plot["sources"].values():
            assert 1.99 <= _finite(source["x"])[-1] <= 2.0
        search = page.locator(".widget-text", has_text="search").locator("input")
        search.evaluate("(e) => e.scrollIntoView({block: 'start'})")
        shot = browser.screenshot(f"catalog-browser-{app}")

        # the button: the selected run into the variable named beside it
        page.get_by_text("aligned at start").click()
        _click_row(page, "r0.nc")
        _wait_for_plot(page, "(p) => p.figure === 'daqlab-run-figure' && "
                             f"p.sources['daqlab-run-data'].x[0] === {DAY0_MS}")
        name_box = page.locator(".widget-text", has_text="variable").locator("input")
        name_box.fill("picked")
        name_box.press("Tab")
        page.get_by_role("button", name="to variable").click()
        page.get_by_text("picked = run0 (").wait_for()
        if app == "lab":  # the kernel has it
            out = run_in_kernel(page, "print(picked.attrs['name'], picked.sizes['time'])")
            assert out.strip() == "run0 2000", out

        # a query narrows the table; a bad one says so in the status line
        query = page.locator(".widget-text", has_text="query").locator("input")
        query.fill("bad > 0")
        query.press("Enter")
        expect(rows).to_have_count(1)  # (the table's rows are in a shadow root: a locator finds them)
        assert rows.all_inner_texts()[0].startswith("r2.nc")
        query.fill("bad >")
        query.press("Enter")
        page.get_by_text("failed: SyntaxError").wait_for()

        assert bokeh_patch_errors(page) == []
        assert "Traceback" not in server.log_text()  # nothing raised into the kernel's log
        assert browser.unexpected_errors() == []
        assert browser.unexpected_offsite(VOILA_KNOWN_OFFSITE if app == "voila" else ()) == []
    assert server.leftover_pids == [], "the server left processes behind"
    timings["total_s"] = time.monotonic() - t0
    report = {"app": app, **{k: round(v, 2) for k, v in timings.items()}, "screenshot": shot.name}
    (artifacts_dir() / f"catalog-browser-{app}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
