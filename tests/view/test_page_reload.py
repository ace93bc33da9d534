"""What a page reload needs from the kernel side, without a browser (the browser test is
test_live_browser.py::test_live_view_is_paced_by_a_reloaded_page)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from daqlab.view import FramePacer
from daqlab.view._base import route_by_frontend
from tests.helpers import FakeClock


def test_pacer_follows_a_reloaded_page_whose_first_frames_were_on_their_way() -> None:
    clock = FakeClock()
    pacer = FramePacer(20.0, clock=clock)
    for _ in range(50):
        clock.advance(0.05)
        pacer.frame_acked(pacer.frame_sent(), "page-1")
    for _ in range(5):  # the page reloads; the kernel goes on, blind: frames 51..55
        clock.advance(0.2)
        pacer.frame_sent()
    clock.advance(3.0)
    assert [pacer.blind] == [True]  # (a list: mypy would narrow the property and skip the rest)
    # the new page first paints 53, 54 and 55, which were on their way (its frames 1, 2, 3): its
    # first ack is taken for the newest frame, so the next two map past it
    for k in (1, 2, 3):
        pacer.frame_acked(k, "page-2")
        assert pacer.acked == 55
    # from then on its frame k is the kernel's 52 + k: counted, not ignored as "not sent yet"
    for k in range(4, 14):
        clock.advance(0.05)
        sent = pacer.frame_sent()
        pacer.frame_acked(k, "page-2")
        assert pacer.acked == sent
    clock.advance(3.0)
    assert not pacer.blind
    assert pacer.in_flight == 0


def test_pacer_still_ignores_acks_of_frames_not_sent_without_a_page_id() -> None:
    pacer = FramePacer(20.0, clock=FakeClock())
    pacer.frame_sent()
    pacer.frame_acked(5)
    assert pacer.acked == 0


def test_route_by_frontend_routes_a_comms_messages_by_their_own_subshell() -> None:
    from ipykernel.comm.comm import BaseComm

    comm: Any = BaseComm(target_name="daqlab-test")  # type: ignore[no-untyped-call]
    assert hasattr(comm, "_reply_subshell_for"), "the ipykernel installed does not reroute comm messages"
    # what ipykernel records when the kernel last sent on the comm under a request of a subshell
    # that is gone since (the old page's, after a reload)
    comm._reply_subshell_id = "subshell-of-the-old-page"
    assert comm._reply_subshell_for({}, "subshell-of-the-new-page") == "subshell-of-the-old-page"
    widget = SimpleNamespace(comm=comm)
    route_by_frontend(widget)
    route_by_frontend(widget)  # idempotent
    assert comm._reply_subshell_for({}, "subshell-of-the-new-page") == "subshell-of-the-new-page"
    assert comm._reply_subshell_for({}, None) is None
    comm._reply_subshell_ids["r1"] = "waiting"  # ipykernel's bookkeeping still runs
    assert comm._reply_subshell_for({"content": {"id": "r1"}}, None) is None
    assert comm._reply_subshell_ids == {}


def test_route_by_frontend_leaves_widgets_without_a_rerouting_comm_alone() -> None:
    route_by_frontend(SimpleNamespace(comm=None))
    route_by_frontend(SimpleNamespace())
    plain = SimpleNamespace(comm=SimpleNamespace())
    route_by_frontend(plain)
    assert not hasattr(plain.comm, "_reply_subshell_for")


def test_a_patch_is_three_parts_and_only_its_header_starts_as_the_page_resync_expects() -> None:
    # RESYNC_JS restarts a page's receiver on a part starting with '{"msgid"': only headers may
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure

    from daqlab.view._base import RESYNC_JS, BokehWidget

    source = ColumnDataSource({"x": [0.0, 1.0], "y": [1.0, 2.0]})
    fig = figure()
    fig.line("x", "y", source=source)
    widget = BokehWidget(fig)
    sent: list[dict[str, Any]] = []
    widget.send = sent.append
    try:
        for k in range(3):
            source.data = {"x": [0.0, 1.0], "y": [float(k), 2.0]}
    finally:
        widget.close()
    parts = [m["payload"] for m in sent]
    assert [m["msg"] for m in sent] == ["patch"] * 9
    assert all(isinstance(p, str) for p in parts)
    assert [p.startswith('{"msgid"') for p in parts] == [True, False, False] * 3
    assert """fragment.startsWith('{"msgid"')""" in RESYNC_JS
