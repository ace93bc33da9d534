"""notebooks/02_live_view.ipynb in a real browser: the live view moves in JupyterLab and in Voila."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.view.browser import (
    NOTEBOOK7_KNOWN_ERRORS,
    VOILA_KNOWN_OFFSITE,
    App,
    artifacts_dir,
    bokeh_patch_errors,
    browser_page,
    canvas_signature,
    jupyter_server,
    measure_updates,
    open_notebook,
    read_source,
    wait_for_bokeh_model,
    wait_for_canvas_change,
    wait_for_last_x,
)

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "02_live_view.ipynb"
SOURCE, FIGURE = "daqlab-live-data", "daqlab-live-figure"

# (Date.now() - newest plotted time) each time the plotted data change, for `ms` milliseconds:
# how far behind the acquisition the screen is (the x axis is the samples' UTC time in ms).
_LATENCY_JS = """([name, ms]) => new Promise((resolve) => {
  const find = () => { for (const d of Bokeh.documents) { const m = d.get_model_by_name(name);
                       if (m) return m; } return null; };
  const src = find(); const out = []; let last = null; const start = performance.now();
  const tick = () => {
    const x = src.data.x; const n = x.length;
    let newest = null;
    for (let i = n - 1; i >= 0; i--) { if (Number.isFinite(x[i])) { newest = x[i]; break; } }
    if (newest !== null && newest !== last) { out.push(Date.now() - newest); last = newest; }
    if (performance.now() - start < ms) requestAnimationFrame(tick); else resolve(out);
  };
  requestAnimationFrame(tick);
})"""


def measure_latency(page: Page, seconds: float = 2.0) -> list[float]:
    values: list[float] = page.evaluate(_LATENCY_JS, [SOURCE, seconds * 1000])
    return values


@pytest.mark.timeout(180)
# Notebook 7 costs as much as JupyterLab: it runs with -m slow
@pytest.mark.parametrize("app", ["lab", pytest.param("notebook", marks=pytest.mark.slow), "voila"])
def test_live_view_moves_in_the_browser(app: App, chromium_browser: Browser, tmp_path: Path) -> None:
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    t0 = time.monotonic()
    with jupyter_server(tmp_path, app) as server, browser_page(chromium_browser) as browser:
        page = browser.page
        open_notebook(page, server, NOTEBOOK.name, timeout=90)
        wait_for_bokeh_model(page, FIGURE, rendered=True, timeout=90)
        # the first frame goes out once the browser has drawn the plot (document_ready)
        page.wait_for_function(
            "(n) => Bokeh.documents.some((d) => { const m = d.get_model_by_name(n);"
            " return m && m.data.x.length > 10; })", arg=SOURCE, timeout=60_000, polling=100)
        shown_after = time.monotonic() - t0
        first = read_source(page, SOURCE)
        assert first.last_x is not None
        pixels = canvas_signature(page, FIGURE)
        assert not pixels.startswith("0:"), "no canvas found for the live plot"
        # the plotted time advances (x is in ms since the epoch) and the canvas repaints
        later = wait_for_last_x(page, SOURCE, first.last_x + 500.0, timeout=30)
        wait_for_canvas_change(page, FIGURE, pixels, timeout=30)
        stats = measure_updates(page, source=SOURCE, figure=FIGURE, seconds=3.0)
        latency = measure_latency(page, seconds=2.0)
        status = page.locator("code", has_text="fps").first.inner_text(timeout=30_000)
        # the view at the top of the screenshot (JupyterLab has scrolled to the last cell)
        page.get_by_role("button", name="Stop").first.evaluate("e => e.scrollIntoView({block: 'start'})")
        browser.screenshot(f"live-view-{app}")

        assert stats.patch_errors == 0, bokeh_patch_errors(page)
        assert stats.data_updates >= 3, (stats, status)
        assert stats.repaints >= 3, stats
        assert later.last_x is not None
        assert latency, "the plotted data never changed while measuring latency"
        assert "lost 0" in status, status
        assert browser.unexpected_errors(NOTEBOOK7_KNOWN_ERRORS if app == "notebook" else ()) == []
        assert browser.unexpected_offsite(VOILA_KNOWN_OFFSITE if app == "voila" else ()) == []
    assert server.leftover_pids == [], "the server left processes behind"

    report: dict[str, Any] = {
        "app": app, "plot_live_after_s": round(shown_after, 1),
        "data_fps": round(stats.data_fps, 1), "repaint_fps": round(stats.repaint_fps, 1),
        "latency_ms_median": round(statistics.median(latency)), "latency_ms_max": round(max(latency)),
        "status_line": status,
    }
    (artifacts_dir() / f"live-view-{app}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
