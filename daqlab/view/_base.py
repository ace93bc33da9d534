"""What live views share: finding the ring buffer, the refresher thread, the frame acknowledgement."""

from __future__ import annotations

import contextlib
import html
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ipywidgets as widgets
from bokeh.core.serialization import Serializer
from bokeh.document.events import DocumentPatchedEvent
from bokeh.document.json import PatchJson
from bokeh.models import ColumnDataSource, CustomJS
from bokeh.palettes import Category10_10
from bokeh.protocol.messages.patch_doc import patch_doc
from jupyter_bokeh.widgets import BokehModel

from daqlab.acquisition import DataManager
from daqlab.buffer import RingBuffer
from daqlab.errors import ChannelNotFoundError, ConfigurationError
from daqlab.view._pacer import FramePacer

__all__ = ["BokehWidget", "LiveBase", "channel_color", "in_kernel", "legend_html", "load_bokehjs",
           "resolve_buffer", "resolve_channels", "route_by_frontend"]

_numbers = itertools.count(1)
_bokehjs_loaded = False


def in_kernel() -> bool:
    """True in a Jupyter kernel (where a browser may show the widget)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def load_bokehjs() -> None:
    """Put BokehJS into the notebook page, inline (jupyter_bokeh does not bundle it, and the
    default resources come from a CDN that may be unreachable). Once per kernel."""
    global _bokehjs_loaded
    if _bokehjs_loaded or not in_kernel():
        return
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(INLINE, hide_banner=True)
    from IPython.display import Javascript, display

    display(Javascript(RESYNC_JS))  # type: ignore[no-untyped-call]
    _bokehjs_loaded = True


# BokehJS's protocol Receiver takes a message's parts (header, metadata, content) by counting. A
# view that starts listening in the middle of a patch (a page reloaded while a view streams: the
# view renders between two of its parts) takes every later part for the one before it and never
# applies a patch again. Every header daqlab sends starts with '{"msgid"', and no metadata or
# content does: a header arriving out of place restarts the message, so such a view misses one
# patch instead of all. Patched once per page, on the Receiver class jupyter_bokeh's views use.
RESYNC_JS = """
(function resync(tries) {
  const Bokeh = window.Bokeh;
  if (Bokeh == null || Bokeh.require == null) {
    if (tries > 0) setTimeout(() => resync(tries - 1), 100);
    return;
  }
  const Receiver = Bokeh.require("protocol/receiver").Receiver;
  if (Receiver.prototype._daqlab_resync) return;
  const consume = Receiver.prototype.consume;
  Receiver.prototype.consume = function (fragment) {
    if (typeof fragment === "string" && fragment.startsWith('{"msgid"') &&
        this._current_consumer !== this._HEADER) {
      this._current_consumer = this._HEADER;
    }
    return consume.call(this, fragment);
  };
  Receiver.prototype._daqlab_resync = true;
})(600);
"""


def route_by_frontend(widget: object) -> None:
    """Let the messages the page sends on ``widget``'s comm go where the page sends them.

    ipykernel 7 with kernel subshells (JupyterLab 4.4+ sends widget messages on a subshell of its
    own) reroutes every message arriving on a comm to the subshell of the request that was current
    when the kernel last sent on that comm. A live view sends from its refresher thread, where
    that request is whichever the kernel handled last; after a page reload it is one from the old
    page, whose subshell is gone: the kernel then drops everything the new page sends on the comm
    ("Cannot handle comm_msg ...: Unknown subshell_id" in its log), the frame acknowledgements
    included, and keeps re-pinning the dead subshell with every frame. No code here waits on a
    reply from these comms, so the routing the page asked for (the message's own header) is right.
    A no-op for a kernel without that routing, or a closed widget.
    """
    comm = getattr(widget, "comm", None)
    route = getattr(comm, "_reply_subshell_for", None)
    if comm is None or route is None or getattr(comm, "_daqlab_routed", False):
        return

    def by_header(data: Any, default: Any) -> Any:
        route(data, default)  # its bookkeeping (replies awaited by request id); not its answer
        return default

    comm._reply_subshell_for = by_header
    comm._daqlab_routed = True


def _widget_tree(widget: object) -> Iterator[object]:
    yield widget
    for child in getattr(widget, "children", ()) or ():
        yield from _widget_tree(child)


class BokehWidget(BokehModel):  # type: ignore[misc]
    """jupyter_bokeh's widget, sending each change of the plot as three comm messages.

    jupyter_bokeh sends a change as bokeh's protocol does, three messages and then two per
    array (a live view's frame: 21). Every message costs the kernel, the Jupyter server and the
    page; here arrays travel inline in the third message, base64-encoded (bokeh's own
    non-deferred encoding, which BokehJS decodes as it does buffers). Its ``close()`` may run
    twice (ipywidgets calls it again from ``__del__``; jupyter_bokeh 4 then raises KeyError
    unregistering from the document). The page's messages go to the subshell it sends them on
    (see :func:`route_by_frontend`).
    """

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        route_by_frontend(self)

    def _document_patched(self, event: DocumentPatchedEvent) -> None:
        if event.setter is self:  # the change came from this page
            return
        doc = event.document
        serializer = Serializer(references=doc.models.synced_references, deferred=False)
        content = PatchJson(events=serializer.encode([event]))
        doc.models.flush_synced(lambda model: not serializer.has_ref(model))
        msg = patch_doc(patch_doc.create_header(), {}, content)
        for part in (msg.header_json, msg.metadata_json, msg.content_json):
            self.send({"msg": "patch", "payload": part})

    def close(self) -> None:
        if getattr(self, "_daqlab_closed", False):
            return
        self._daqlab_closed = True
        with contextlib.suppress(KeyError):
            super().close()


def channel_color(i: int) -> str:
    """The line color of the ``i``-th channel (bokeh's Category10)."""
    return str(Category10_10[i % len(Category10_10)])


def legend_html(names: Sequence[str], shown: Sequence[str] | None = None) -> str:
    """A legend of channel names in their line colors, as HTML beside the plot.

    Live views keep their legend out of the canvas: bokeh measures and paints a legend on every
    frame, and that cost a live view at 8 x 1 MS/s a third of its frame rate in JupyterLab.
    """
    items = [
        f'<span style="white-space:nowrap;margin-right:1em"><span style="color:{channel_color(i)};'
        f'font-weight:bold">&#9473;&#9473;</span> {html.escape(name)}</span>'
        for i, name in enumerate(names) if shown is None or name in shown
    ]
    return "<div>" + " ".join(items) + "</div>"


def resolve_buffer(target: object, source: str | None) -> tuple[RingBuffer, DataManager | None]:
    """The ring buffer to show: ``target`` itself, or one of a DataManager's (``source`` names it)."""
    if isinstance(target, RingBuffer):
        return target, None
    if isinstance(target, DataManager):
        names = list(target.buffers)
        if source is None:
            return target.buffers[names[0]], target
        if source not in target.buffers:
            raise ConfigurationError(f"source {source!r} is not one of this manager's sources {names}.")
        return target.buffers[source], target
    raise ConfigurationError(
        f"a live view shows a DataManager or a RingBuffer; got {type(target).__name__}. "
        "For a saved run use run.daq.plot()."
    )


def resolve_channels(buffer: RingBuffer, channels: Sequence[str] | str | None) -> list[str]:
    names = [c.name for c in buffer.channels]
    if channels is None:
        return names
    wanted = [channels] if isinstance(channels, str) else list(channels)
    missing = [c for c in wanted if c not in names]
    if missing or not wanted:
        raise ChannelNotFoundError(
            f"channels {missing or wanted} are not in this buffer; its channels are {names}."
        )
    return wanted


class LiveBase(widgets.VBox):  # type: ignore[misc]
    """An ipywidget whose bokeh plot one refresher thread redraws, paced by the browser's acks.

    Subclasses build ``self.layout_model`` (the bokeh layout), call
    :meth:`_start_refresher`, and implement :meth:`_draw` (called on the
    refresher thread, the only one that touches the bokeh models).
    """

    kind = "view"
    source: ColumnDataSource  # the data whose every change is one frame, acknowledged by the page

    def __init__(self, *, max_fps: float, clock: Callable[[], float] = time.monotonic,
                 children: Sequence[Any] = ()) -> None:
        super().__init__(children=list(children))
        self.pacer = FramePacer(max_fps, min_fps=min(1.0, max_fps), blind_fps=min(5.0, max_fps), clock=clock)
        self.number = next(_numbers)
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # not in the layout: a change of a layout's child relays out the whole plot (~10 ms a frame)
        self.ack = ColumnDataSource(name=f"daqlab-{self.kind}-ack")
        self.ack.on_change("tags", self._on_ack)
        # jupyter_bokeh sends a patch as several comm messages; a browser view rendered between two of
        # them misreads every later patch and freezes. So in a kernel the first frame waits until a
        # browser has rendered the plot (its document_ready event). That event reaches the kernel
        # when it is idle: after "run all", a view starts once the last cell is done.
        self.shown = threading.Event()
        if not in_kernel():
            self.shown.set()

    def _on_ack(self, attr: str, old: Any, new: Any) -> None:
        # runs on the thread handling the page's messages (the main one, or a subshell's): reads the
        # value only, never touches bokeh models
        if new and isinstance(new[0], (int, float)):
            self.pacer.frame_acked(int(new[0]), new[1] if len(new) > 1 else None)

    def _ack_callback(self, source: Any) -> CustomJS:
        """JS: after the browser paints new data of ``source``, acknowledge it: the k-th data update
        a page receives is its frame k (each frame is one patch of the data, applied in order),
        sent with an id of the page (a reloaded page counts from 1 again)."""
        return CustomJS(args={"source": source, "ack": self.ack}, code="""
            source._daqlab_frames = (source._daqlab_frames || 0) + 1;
            source._daqlab_page = source._daqlab_page || Math.random().toString(36).slice(2);
            const frame = source._daqlab_frames, page = source._daqlab_page;
            requestAnimationFrame(() => { ack.tags = [frame, page]; });
        """)

    def _wrap(self, layout: Any) -> BokehModel:
        load_bokehjs()
        self.bokeh_widget = BokehWidget(layout)
        layout.document.on_event("document_ready", lambda event: self.shown.set())
        return self.bokeh_widget

    def _start_refresher(self) -> None:
        for widget in _widget_tree(self):  # the controls too: a reloaded page must reach them
            route_by_frontend(widget)
        self._thread = threading.Thread(target=self._run, name=f"daqlab-{self.kind}-{self.number}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.shown.wait()  # stop() sets it too, to wake this
            if self._stop.is_set():
                return
            while not self._stop.is_set():
                delay = self.pacer.delay()
                if delay > 0:
                    self._stop.wait(delay)
                    continue
                if self.pacer.should_draw():
                    self._draw()
        except BaseException as exc:  # shown in the status line; the kernel goes on
            self.error = exc
            self._show_error(exc)

    def _draw(self) -> bool:
        """Draw one frame; True if it sent new data (one patch, through :meth:`_send_frame`)."""
        raise NotImplementedError

    def _send_frame(self, data: dict[str, Any]) -> None:
        """Send new data to the browser as one frame. The pacer counts it first: the page's ack
        (on another thread) may then never arrive before the frame is counted, which would be
        taken for a page that has painted more than was sent."""
        self.pacer.frame_sent()
        self.source.data = data

    def _show_error(self, exc: BaseException) -> None:
        pass

    @property
    def refreshing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop redrawing (the plot stays as it is)."""
        if not hasattr(self, "_stop"):  # __init__ failed before the refresher existed
            return
        self._stop.set()
        self.shown.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop the refresher and close the widgets (also what closing the kernel amounts to)."""
        self.stop()
        if getattr(self, "_closed", False):
            return
        self._closed = True
        for child in self.children:  # the bokeh widget is one of them
            child.close()
        super().close()
