"""The real-browser harness works: a live jupyter_bokeh plot updates in JupyterLab, Notebook 7 and Voilà."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Browser

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
    read_column,
    read_source,
    wait_for_bokeh_model,
    wait_for_canvas_change,
    wait_for_last_x,
)

SOURCE = "harness-source"
FIGURE = "harness-figure"

# BokehJS must be in the page before the BokehModel widget renders: jupyter_bokeh does not bundle it.
# output_notebook(INLINE) publishes it inline (the default, CDN, is unreachable offline).
CELLS = [
    """\
import math
import threading
import time

from bokeh.io import output_notebook
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure
from bokeh.resources import INLINE
from jupyter_bokeh.widgets import BokehModel

output_notebook(INLINE, hide_banner=True)""",
    f"""\
source = ColumnDataSource({{"x": [0.0], "y": [0.0]}}, name={SOURCE!r})
fig = figure(width=600, height=300, name={FIGURE!r}, output_backend="canvas")
fig.line("x", "y", source=source)
BokehModel(fig)""",
    """\
stop = threading.Event()
shown = threading.Event()
# BokehJS reports document_ready once the view has drawn. Stream only after that: jupyter_bokeh
# sends each patch as several comm messages, and a view built between two of them misreads every
# later patch (the plot freezes, silently); one not built yet drops the patches (points go missing).
fig.document.on_event("document_ready", lambda event: shown.set())

def feed(period=0.05, duration=30.0):
    if not shown.wait(60):
        return
    end = time.monotonic() + duration
    i = 1
    while time.monotonic() < end and not stop.wait(period):
        source.stream({"x": [float(i)], "y": [math.sin(i / 5)]}, rollover=1000)
        i += 1

feeder = threading.Thread(target=feed, name="harness-feeder", daemon=True)
feeder.start()""",
]


def write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]  # type: ignore[no-untyped-call]
    nbformat.write(nb, path)  # type: ignore[no-untyped-call]


# Notebook 7 works but costs as much as JupyterLab (~20 s); it runs with -m slow
@pytest.mark.parametrize("app", ["lab", pytest.param("notebook", marks=pytest.mark.slow), "voila"])
def test_live_bokeh_plot_updates_in_browser(app: App, chromium_browser: Browser, tmp_path: Path) -> None:
    write_notebook(tmp_path / "live.ipynb")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with jupyter_server(tmp_path, app) as server, browser_page(chromium_browser) as browser:
        timings["server_listening"] = server.startup_s
        page = browser.page
        open_notebook(page, server, "live.ipynb")
        timings["notebook_open"] = time.monotonic() - t0
        wait_for_bokeh_model(page, SOURCE)
        wait_for_bokeh_model(page, FIGURE, rendered=True)
        timings["plot_shown"] = time.monotonic() - t0

        first = read_source(page, SOURCE)
        assert first.last_x is not None
        pixels = canvas_signature(page, FIGURE)
        assert not pixels.startswith("0:"), "no canvas found for the plot"
        stats = measure_updates(page, source=SOURCE, figure=FIGURE, seconds=2.0)
        # the feeder adds one x per 50 ms: 20 more is about a second (already there after 2 s)
        later = wait_for_last_x(page, SOURCE, first.last_x + 20, timeout=10)
        assert later.length > first.length or later.length == 1000
        wait_for_canvas_change(page, FIGURE, pixels, timeout=10)
        timings["updates_seen"] = time.monotonic() - t0
        browser.screenshot(f"browser-harness-{app}")

        # No streamed point went missing: jupyter_bokeh sends deltas, which a view drops (if not yet
        # built) or misreads (if built mid-patch); the feeder waits for the view to be ready.
        xs = read_column(page, SOURCE, "x")
        assert xs[0] == 0.0, xs
        assert [b - a for a, b in itertools.pairwise(xs)] == [1.0] * (len(xs) - 1), f"gaps in {xs}"

        assert stats.patch_errors == 0, bokeh_patch_errors(page)
        assert stats.data_updates >= 4, stats
        assert stats.repaints >= 4, stats
        # Notebook 7 logs errors of its own on every page; anything else fails the test
        assert browser.unexpected_errors(NOTEBOOK7_KNOWN_ERRORS if app == "notebook" else ()) == []
        # nothing but Voilà's template's Font Awesome CSS asks for the network (BokehJS is inline)
        assert browser.unexpected_offsite(VOILA_KNOWN_OFFSITE if app == "voila" else ()) == []
    timings["total"] = time.monotonic() - t0
    assert server.process.returncode is not None
    assert server.leftover_pids == [], "the server left processes behind"

    report = {"app": app, "timings_s": {k: round(v, 2) for k, v in timings.items()},
              "data_fps": round(stats.data_fps, 1), "repaint_fps": round(stats.repaint_fps, 1),
              "animation_fps": round(stats.animation_fps, 1),
              "rows_per_s": round(stats.rows_added / stats.seconds, 1)}
    (artifacts_dir() / f"browser-harness-{app}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
