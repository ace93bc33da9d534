"""Real-browser test harness: Jupyter servers and headless Chromium, offline.

Start JupyterLab 4, Notebook 7 or Voilà on a free port with a clean, private
configuration, open a notebook in a Playwright-driven Chromium, and inspect
the BokehJS documents that ``jupyter_bokeh`` renders::

    with jupyter_server(root, "lab") as server, chromium_page() as browser:
        open_notebook(browser.page, server, "live.ipynb")
        wait_for_bokeh_model(browser.page, "source")
        state = read_source(browser.page, "source")
        ...
        assert browser.errors == []

Everything waits on conditions with timeouts; nothing sleeps on luck.
Chromium comes from the system (``apt-get install chromium``), never from
``playwright install``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from playwright.sync_api import Browser, ConsoleMessage, Page, Route, sync_playwright

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "NOTEBOOK7_KNOWN_ERRORS",
    "VOILA_KNOWN_OFFSITE",
    "App",
    "BrowserPage",
    "JupyterServer",
    "SourceState",
    "UpdateStats",
    "artifacts_dir",
    "bokeh_patch_errors",
    "browser_page",
    "canvas_signature",
    "chromium",
    "chromium_page",
    "clean_env",
    "free_port",
    "jupyter_server",
    "measure_updates",
    "open_in_voila",
    "open_notebook",
    "read_column",
    "read_source",
    "run_all_cells",
    "run_in_kernel",
    "start_session",
    "wait_for_bokeh_model",
    "wait_for_canvas_change",
    "wait_for_last_x",
    "watch_bokeh_patches",
]

App = Literal["lab", "notebook", "voila"]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
# inherited variables that would let the user's setup leak into the server or its kernels
_LEAKY_ENV_PREFIXES = ("JUPYTER", "JPY_", "IPYTHON", "VOILA", "BOKEH_", "XDG_", "PYTHONSTARTUP")
# JupyterLab / Notebook plugins that ask questions or reach out to the network
_DISABLED_PLUGINS = (
    "@jupyterlab/apputils-extension:announcements",
    "@jupyterlab/extensionmanager-extension",
)
# What Voilà's lab template fetches from a CDN whatever the notebook does (Font Awesome CSS)
VOILA_KNOWN_OFFSITE = (r"^https://cdn\.jsdelivr\.net/npm/@fortawesome/fontawesome-free@",)
# Errors Notebook 7.6 itself logs on every page here, with or without a user config (its bundled
# @jupyterlab/docmanager-extension:plugin settings are emitted as changed but never registered).
NOTEBOOK7_KNOWN_ERRORS = (
    r"^pageerror: TypeError: Cannot read properties of undefined \(reading 'schema'\)\n"
    r"\s+at \S+/static/notebook/notebook_core\.",
    r"^console\.error: Cannot convert undefined or null to object \(\S+/static/notebook/notebook_core\.",
)


# ----------------------------------------------------------------------------- servers


@dataclass
class JupyterServer:
    """A running Jupyter server; ``url`` is its base URL, ending in ``/``."""

    app: App
    url: str
    port: int
    root_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    startup_s: float = 0.0
    leftover_pids: list[int] = field(default_factory=list)
    """Processes still alive after the server exited, which the harness had to kill."""

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(state: Path) -> dict[str, str]:
    """``os.environ`` without user Jupyter/IPython/Bokeh settings; every config dir under ``state``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_ENV_PREFIXES)}
    dirs = {
        "HOME": "home",
        "JUPYTER_CONFIG_DIR": "config",
        "JUPYTER_DATA_DIR": "data",
        "JUPYTER_RUNTIME_DIR": "runtime",
        "IPYTHONDIR": "ipython",
        "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
        "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
        "XDG_CONFIG_HOME": "xdg-config",
        "XDG_DATA_HOME": "xdg-data",
        "XDG_CACHE_HOME": "xdg-cache",
        "XDG_RUNTIME_DIR": "xdg-runtime",
    }
    for var, sub in dirs.items():
        path = state / sub
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        env[var] = str(path)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _server_command(app: App, root_dir: Path, port: int, kernel_shutdown_wait: float) -> list[str]:
    if app == "voila":  # standalone Voilà serving a directory: /voila/render/<name>.ipynb
        return [sys.executable, "-m", "voila", str(root_dir), "--no-browser",
                f"--Voila.port={port}", "--Voila.port_retries=0", "--Voila.ip=127.0.0.1",
                "--show_tracebacks=True",
                # Notebook 7's JupyterLab plugin breaks Voilà's module federation (RUNTIME-012)
                '--VoilaConfiguration.extension_denylist=["@jupyter-notebook/lab-extension"]']
    common = [
        "--no-browser",
        "--allow-root",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",  # a taken port must fail, not silently move elsewhere
        "--ServerApp.ip=127.0.0.1",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={root_dir}",
        f"--KernelManager.shutdown_wait_time={kernel_shutdown_wait}",
        # no PyPI queries, news feed or update checks: the tests run offline
        "--LabApp.extension_manager=readonly",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        # server extensions a notebook test does not use (jupyter_lsp must stay: the frontend polls it)
        "--ServerApp.jpserver_extensions=voila.server_extension=False",
        "--ServerApp.jpserver_extensions=jupyter_server_terminals=False",
    ]
    if app == "lab":
        return [sys.executable, "-m", "jupyterlab", *common, "--LabApp.expose_app_in_browser=True"]
    return [sys.executable, "-m", "notebook", *common, "--JupyterNotebookApp.expose_app_in_browser=True"]


def _wait_for_port(process: subprocess.Popen[bytes], port: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"server did not listen on {port} in {timeout} s:\n"
                               f"{log.read_text(errors='replace')}")
        time.sleep(0.05)


def _start_time(pid: int) -> str | None:
    """Start time of process ``pid`` (tells it apart from a reused pid), or None when gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _descendants(pid: int) -> dict[int, str]:
    """Living descendants of ``pid`` -> their start times (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with suppress(OSError, IndexError, ValueError):
            ppid = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        start = _start_time(child)
        if start is not None and child not in found:
            found[child] = start
            todo.extend(children.get(child, []))
    return found


def _stop(server: JupyterServer, timeout: float) -> None:
    """SIGTERM the server (it shuts its kernels down); SIGKILL whatever outlives it."""
    process = server.process
    tree = _descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
    # kernels run in their own sessions, so look them up by pid and start time
    deadline = time.monotonic() + timeout
    alive = {pid for pid, start in tree.items() if _start_time(pid) == start}
    server.leftover_pids = sorted(alive)
    for pid in alive:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while any(_start_time(pid) == tree[pid] for pid in alive):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {sorted(alive)} survived SIGKILL")
        time.sleep(0.02)


@contextmanager
def jupyter_server(root_dir: Path, app: App = "lab", *, timeout: float = 60.0,
                   kernel_shutdown_wait: float = 1.0, log_dir: Path | None = None) -> Iterator[JupyterServer]:
    """Run JupyterLab (``"lab"``), Notebook 7 (``"notebook"``) or Voilà serving ``root_dir``.

    No token, no XSRF check, listening on 127.0.0.1 only, with a private config,
    data, runtime and IPython dir. Waits until the port accepts connections (Voilà
    must not be probed with ``GET /``, which starts a kernel). On exit, stops the
    server and its kernels (JupyterLab and Notebook kill a kernel that has not exited
    ``kernel_shutdown_wait`` s after being asked to; their default, 5 s, costs ~1 s a
    test); ``leftover_pids`` lists any process the harness itself had to kill. The
    server log is copied to ``log_dir`` (default: the artifacts dir) as ``<app>-server.log``.
    """
    state = Path(tempfile.mkdtemp(prefix=f"daqlab-{app}-"))
    try:
        env = clean_env(state)
        if app == "lab":
            labconfig = Path(env["JUPYTER_CONFIG_DIR"], "labconfig")
            labconfig.mkdir()
            (labconfig / "page_config.json").write_text(
                json.dumps({"disabledExtensions": dict.fromkeys(_DISABLED_PLUGINS, True)}))
        port = free_port()
        log_path = state / "server.log"
        t0 = time.monotonic()
        with log_path.open("wb") as log:
            process = subprocess.Popen(_server_command(app, root_dir, port, kernel_shutdown_wait),
                                       cwd=root_dir, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        server = JupyterServer(app=app, url=f"http://127.0.0.1:{port}/", port=port, root_dir=root_dir,
                               process=process, log_path=log_path)
        try:
            _wait_for_port(process, port, timeout, log_path)
            server.startup_s = time.monotonic() - t0
            yield server
        finally:
            _stop(server, timeout=20.0)
            out = log_dir if log_dir is not None else artifacts_dir()
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log_path, out / f"{app}-server.log")
    finally:
        shutil.rmtree(state, ignore_errors=True)


# ----------------------------------------------------------------------------- browser


def artifacts_dir() -> Path:
    """``$DAQLAB_TEST_ARTIFACTS`` or ``<repo>/test-artifacts`` (gitignored), created."""
    path = Path(os.environ.get("DAQLAB_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class BrowserPage:
    """A Chromium page plus what went wrong in it."""

    page: Page
    errors: list[str] = field(default_factory=list)
    """Uncaught exceptions and console errors, in order."""
    offsite_requests: list[str] = field(default_factory=list)
    """Requests to anywhere but this machine (the tests run offline)."""

    def unexpected_errors(self, known: Iterable[str] = ()) -> list[str]:
        """``errors`` not matching any of the ``known`` regular expressions (``re.search``)."""
        return _unmatched(self.errors, known)

    def unexpected_offsite(self, known: Iterable[str] = ()) -> list[str]:
        """``offsite_requests`` not matching any of the ``known`` regular expressions."""
        return _unmatched(self.offsite_requests, known)

    def screenshot(self, name: str) -> Path:
        """Save a PNG of the viewport as ``<artifacts>/<name>.png``."""
        path = artifacts_dir() / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path


def _unmatched(items: list[str], known: Iterable[str]) -> list[str]:
    patterns = [re.compile(k) for k in known]
    return [item for item in items if not any(p.search(item) for p in patterns)]


def _on_console(errors: list[str], msg: ConsoleMessage) -> None:
    if msg.type == "error":
        errors.append(f"console.error: {msg.text} ({msg.location.get('url', '')})")


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme not in ("http", "https", "ws", "wss") or parts.hostname in ("127.0.0.1", "localhost")


_STUB_TYPES = {"stylesheet": "text/css", "script": "text/javascript", "font": "font/woff2",
               "image": "image/svg+xml"}


def _stub_offsite(offsite: list[str], route: Route) -> None:
    """Record a request that would leave the machine and answer it with an empty body instead."""
    request = route.request
    if _is_local(request.url):
        route.fallback()
        return
    offsite.append(request.url)
    route.fulfill(status=200, body=b"",
                  content_type=_STUB_TYPES.get(request.resource_type, "application/octet-stream"))


@contextmanager
def chromium(executable: str = CHROMIUM) -> Iterator[Browser]:
    """The system's headless Chromium under Playwright (share one across tests: launching takes ~1 s)."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browser_page(browser: Browser, *, width: int = 1280, height: int = 900,
                 timeout_s: float = 30.0) -> Iterator[BrowserPage]:
    """A page in a fresh context of ``browser``, collecting page errors and off-machine requests.

    Requests for anything but 127.0.0.1/localhost never reach the network: each is
    listed in ``offsite_requests`` and answered with an empty body of the right type
    (so a template's CDN stylesheet is recorded rather than logged as a console error).
    """
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        result = BrowserPage(context.new_page())
        page = result.page
        page.set_default_timeout(timeout_s * 1000)
        page.on("pageerror", lambda exc: result.errors.append(f"pageerror: {exc.stack or exc}"))
        page.on("console", lambda msg: _on_console(result.errors, msg))
        context.route(lambda url: not _is_local(url),
                      lambda route: _stub_offsite(result.offsite_requests, route))
        yield result
    finally:
        context.close()


@contextmanager
def chromium_page(*, executable: str = CHROMIUM, width: int = 1280, height: int = 900,
                  timeout_s: float = 30.0) -> Iterator[BrowserPage]:
    """``browser_page`` in a Chromium of its own."""
    with (chromium(executable) as browser,
          browser_page(browser, width=width, height=height, timeout_s=timeout_s) as page):
        yield page


# ----------------------------------------------------------------------------- notebooks

_NOTEBOOK_READY = """(name) => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  if (!w || !w.context || w.context.path !== name || !w.sessionContext) return false;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  return w.context.isReady && kernel != null && kernel.status === "idle";
}"""


def start_session(server: JupyterServer, notebook: str, kernel: str = "python3") -> str:
    """Start a kernel session for ``notebook`` through the REST API; return the kernel id.

    A notebook opened afterwards joins this session, so the kernel starts while the
    frontend loads instead of after it (saves ~1-2 s per test).
    """
    body = json.dumps({"path": notebook, "name": notebook, "type": "notebook", "kernel": {"name": kernel}})
    request = urllib.request.Request(server.url + "api/sessions", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        session: dict[str, Any] = json.load(response)
    kernel_id: str = session["kernel"]["id"]
    return kernel_id


def run_all_cells(page: Page, server: JupyterServer, notebook: str, *, timeout: float = 60.0,
                  prestart_kernel: bool = True) -> None:
    """Open ``notebook`` (relative to the server root) in JupyterLab or Notebook 7 and run all cells.

    Waits until the notebook is loaded and its kernel is idle, then starts
    ``notebook:run-all-cells`` without waiting for the cells to finish. With
    ``prestart_kernel``, the kernel is started (``start_session``) before the page loads.
    """
    if server.app == "voila":
        raise ValueError("Voilà runs notebooks itself: use open_in_voila")
    if prestart_kernel:
        start_session(server, notebook)
    prefix = "lab/tree/" if server.app == "lab" else "notebooks/"
    page.goto(server.url + prefix + quote(notebook), wait_until="domcontentloaded")
    page.wait_for_function(_NOTEBOOK_READY, arg=notebook, timeout=timeout * 1000, polling=100)
    page.evaluate("""() => { window.jupyterapp.commands.execute("notebook:run-all-cells")
                               .catch((e) => console.error("run-all-cells failed", e)); }""")


def open_in_voila(page: Page, server: JupyterServer, notebook: str) -> None:
    """Render ``notebook`` with Voilà (``/voila/render/<notebook>``); its cells run as the page loads."""
    if server.app != "voila":
        raise ValueError("open_in_voila needs a Voilà server")
    page.goto(server.url + "voila/render/" + quote(notebook), wait_until="commit")


def open_notebook(page: Page, server: JupyterServer, notebook: str, *, timeout: float = 60.0) -> None:
    """Show ``notebook`` running in whichever app ``server`` is."""
    if server.app == "voila":
        open_in_voila(page, server, notebook)
    else:
        run_all_cells(page, server, notebook, timeout=timeout)


# ----------------------------------------------------------------------------- bokeh

# in-page helpers, prepended to the snippets below
_JS = """
const findModel = (name) => {
  const docs = (window.Bokeh && window.Bokeh.documents) || [];
  for (let i = docs.length - 1; i >= 0; i--) {
    let m = null;
    try { m = docs[i].get_model_by_name(name); } catch (e) { m = null; }
    if (m != null) return m;
  }
  return null;
};
const column = (src, c) => { const d = src.data; return d instanceof Map ? d.get(c) : d[c]; };
const sourceState = (name, c) => {
  const src = findModel(name);
  if (src == null) return null;
  const col = column(src, c);
  const n = col == null ? 0 : col.length;
  return {length: n, last_x: n > 0 ? Number(col[n - 1]) : null};
};
const findView = (name) => {
  const m = findModel(name);
  return m == null || !window.Bokeh.index ? null : window.Bokeh.index.find_one(m);
};
const canvases = (name) => {
  const view = findView(name);
  if (view != null && view.canvas_view != null) {
    return [view.canvas_view.primary, view.canvas_view.overlays]
      .map((layer) => layer && layer.canvas).filter((c) => c != null);
  }
  const found = [];  // fall back to every canvas on the page, through shadow roots
  const walk = (root) => {
    for (const el of root.querySelectorAll("*")) {
      if (el instanceof HTMLCanvasElement) found.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return found;
};
const signature = (name) => {
  let h = 0x811c9dc5;  // FNV-1a over the PNG data URLs
  const cs = canvases(name);
  for (const c of cs) {
    const s = c.toDataURL();
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193); }
  }
  return cs.length + ":" + (h >>> 0).toString(16);
};
"""


@dataclass(frozen=True)
class SourceState:
    """What the browser holds in a ColumnDataSource: rows, and the last value of the x column."""

    length: int
    last_x: float | None


@dataclass(frozen=True)
class UpdateStats:
    """Updates seen by the page over ``seconds`` (sampled once per animation frame)."""

    seconds: float
    animation_frames: int
    data_updates: int
    """Frames at which the source differed from the previous frame."""
    repaints: int
    """Times the plot view repainted (BokehJS ``PlotView.repainted``)."""
    rows_added: float
    """Increase of the last x value."""
    patch_errors: int = 0
    """Document patches BokehJS failed to apply (see ``watch_bokeh_patches``)."""

    @property
    def data_fps(self) -> float:
        return self.data_updates / self.seconds

    @property
    def repaint_fps(self) -> float:
        return self.repaints / self.seconds

    @property
    def animation_fps(self) -> float:
        return self.animation_frames / self.seconds


_EXECUTE_JS = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, store_history: false});
  let out = "";
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === "stream") out += msg.content.text;
    if (msg.header.msg_type === "error") out += msg.content.ename + ": " + msg.content.evalue;
  };
  await future.done;
  return out;
}"""


def run_in_kernel(page: Page, code: str) -> str:
    """Run ``code`` in the kernel of the notebook open in JupyterLab (through the page's own
    connection, so it queues behind the page's messages); what it printed, or its error."""
    out: str = page.evaluate(_EXECUTE_JS, code)
    return out


def wait_for_bokeh_model(page: Page, name: str, *, rendered: bool = False, timeout: float = 60.0) -> None:
    """Wait until some ``Bokeh.documents[i]`` holds a model named ``name``.

    With ``rendered``, also wait until BokehJS has built a view for it (a plot on screen).
    """
    page.wait_for_function(
        "([name, rendered]) => {" + _JS
        + "return findModel(name) != null && (!rendered || findView(name) != null); }",
        arg=[name, rendered], timeout=timeout * 1000, polling=100)


def read_source(page: Page, name: str, *, x_column: str = "x") -> SourceState:
    """Length and last ``x_column`` value of the ColumnDataSource named ``name``, as the browser sees it."""
    state: dict[str, Any] | None = page.evaluate(
        "([name, c]) => {" + _JS + "return sourceState(name, c); }", [name, x_column])
    if state is None:
        raise AssertionError(f"no Bokeh model named {name!r} in the page")
    last = state["last_x"]
    return SourceState(int(state["length"]), None if last is None else float(last))


def read_column(page: Page, name: str, column: str) -> list[float]:
    """Column ``column`` of the ColumnDataSource named ``name``, as the browser holds it."""
    values: list[float] | None = page.evaluate(
        """([name, c]) => {""" + _JS + """
             const src = findModel(name);
             const col = src == null ? null : column(src, c);
             return col == null ? null : Array.from(col, Number);
           }""", [name, column])
    if values is None:
        raise AssertionError(f"no column {column!r} in a Bokeh model named {name!r}")
    return values


def wait_for_last_x(page: Page, name: str, at_least: float, *, x_column: str = "x",
                    timeout: float = 10.0) -> SourceState:
    """Wait until the last ``x_column`` value of source ``name`` reaches ``at_least``; return the state."""
    page.wait_for_function(
        "([name, c, x]) => {" + _JS + """
           const s = sourceState(name, c);
           return s != null && s.last_x != null && s.last_x >= x;
         }""",
        arg=[name, x_column, at_least], timeout=timeout * 1000, polling="raf")
    return read_source(page, name, x_column=x_column)


def canvas_signature(page: Page, figure: str) -> str:
    """``"<canvases>:<hash>"`` of the pixels of the plot named ``figure`` (every canvas if not found)."""
    sig: str = page.evaluate("(name) => {" + _JS + "return signature(name); }", figure)
    return sig


def wait_for_canvas_change(page: Page, figure: str, since: str, *, timeout: float = 10.0) -> str:
    """Wait until the pixels of plot ``figure`` differ from signature ``since``; return the new one."""
    page.wait_for_function(
        "([name, since]) => {" + _JS + "return signature(name) !== since; }",
        arg=[figure, since], timeout=timeout * 1000, polling=50)
    return canvas_signature(page, figure)


_WATCH_PATCHES = """() => {
  if (window.__harnessPatches) return;
  const errors = window.__harnessPatches = [];
  const Document = window.Bokeh.require("document").Document;
  const apply = Document.prototype.apply_json_patch;
  Document.prototype.apply_json_patch = function(patch, buffers) {
    try {
      return apply.call(this, patch, buffers);
    } catch (e) {
      errors.push(String(e) + " applying " + JSON.stringify(patch).slice(0, 200));
      throw e;
    }
  };
}"""


def watch_bokeh_patches(page: Page) -> None:
    """Start recording BokehJS document patches that fail to apply (idempotent; needs BokehJS loaded).

    jupyter_bokeh swallows these errors: without this, a plot that stopped updating shows nothing.
    """
    page.evaluate(_WATCH_PATCHES)


def bokeh_patch_errors(page: Page) -> list[str]:
    """Patches that failed since ``watch_bokeh_patches``."""
    errors: list[str] = page.evaluate("() => [...(window.__harnessPatches || [])]")
    return errors


def measure_updates(page: Page, *, source: str, figure: str, x_column: str = "x",
                    seconds: float = 2.0) -> UpdateStats:
    """Watch the page for ``seconds``: data changes per animation frame and plot repaints.

    The wait is on the page's own clock reaching the end of the window. Also starts
    ``watch_bokeh_patches``, so ``patch_errors`` counts patches that failed in the window.
    """
    watch_bokeh_patches(page)
    errors_before = len(bokeh_patch_errors(page))
    page.evaluate(
        "([name, fig, c]) => {" + _JS + """
           const mon = {frames: 0, updates: 0, repaints: 0, start: performance.now(), stop: false,
                        first: sourceState(name, c), last: null};
           mon.last = mon.first;
           const view = findView(fig);
           mon.slot = () => { mon.repaints++; };
           if (view != null && view.repainted) view.repainted.connect(mon.slot);
           mon.view = view;
           const tick = () => {
             if (mon.stop) return;
             mon.frames++;
             const s = sourceState(name, c);
             const last = mon.last;
             if (s != null && (last == null || s.length !== last.length || s.last_x !== last.last_x)) {
               mon.updates++;
             }
             mon.last = s;
             requestAnimationFrame(tick);
           };
           requestAnimationFrame(tick);
           window.__harnessMonitor = mon;
         }""",
        [source, figure, x_column])
    page.wait_for_function(
        "(ms) => performance.now() - window.__harnessMonitor.start >= ms",
        arg=seconds * 1000, timeout=(seconds + 30) * 1000, polling="raf")
    result: dict[str, Any] = page.evaluate(
        """() => {
             const mon = window.__harnessMonitor;
             mon.stop = true;
             if (mon.view != null && mon.view.repainted) mon.view.repainted.disconnect(mon.slot);
             const x0 = mon.first && mon.first.last_x, x1 = mon.last && mon.last.last_x;
             return {seconds: (performance.now() - mon.start) / 1000, frames: mon.frames,
                     updates: mon.updates, repaints: mon.repaints,
                     rows: x0 != null && x1 != null ? x1 - x0 : 0};
           }""")
    return UpdateStats(seconds=float(result["seconds"]), animation_frames=int(result["frames"]),
                       data_updates=int(result["updates"]), repaints=int(result["repaints"]),
                       rows_added=float(result["rows"]),
                       patch_errors=len(bokeh_patch_errors(page)) - errors_before)
