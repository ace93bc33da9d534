"""The event bus: bounded queues that drop the oldest, kinds filters, callback threads."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import daqlab as dl
from daqlab.events import (
    AcquisitionFailed,
    DatasetCreated,
    DatasetSaved,
    Event,
    EventBus,
    NewData,
    Subscription,
)
from tests.helpers import daqlab_threads, wait_for

T = np.datetime64("2024-01-01T00:00:00", "ns")


def new_data(i: int) -> NewData:
    return NewData("src", i, 1, T, T)


def created(i: int) -> DatasetCreated:
    return DatasetCreated("src", str(uuid.UUID(int=i)), f"ds{i}", ("a",))


def starts(events: list[Event]) -> list[int]:
    out = []
    for ev in events:
        assert isinstance(ev, NewData)
        out.append(ev.start)
    return out


# --------------------------------------------------------------------------- queues


def test_events_reach_every_subscription_in_order() -> None:
    bus = EventBus("t")
    a, b = bus.subscribe(), bus.subscribe()
    for i in range(5):
        bus.publish(new_data(i))
    assert starts(a.drain()) == [0, 1, 2, 3, 4]
    assert starts(b.drain()) == [0, 1, 2, 3, 4]
    assert a.missed == b.missed == 0
    bus.close()


def test_a_full_queue_drops_the_oldest_and_counts_what_it_missed() -> None:
    bus = EventBus("t")
    sub = bus.subscribe(maxsize=3)
    for i in range(10):
        bus.publish(new_data(i))
    assert sub.missed == 7
    assert starts(sub.drain()) == [7, 8, 9]
    bus.publish(new_data(10))
    assert starts(sub.drain()) == [10]
    assert sub.missed == 7
    bus.close()


def test_a_slow_queue_does_not_affect_another() -> None:
    bus = EventBus("t")
    small, big = bus.subscribe(maxsize=1), bus.subscribe(maxsize=100)
    for i in range(50):
        bus.publish(new_data(i))
    assert small.missed == 49
    assert big.missed == 0
    assert len(big.drain()) == 50
    bus.close()


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (NewData, [NewData]),
        ([DatasetCreated, DatasetSaved], [DatasetCreated, DatasetSaved]),
        ((AcquisitionFailed,), [AcquisitionFailed]),
        (None, [NewData, DatasetCreated, DatasetSaved, AcquisitionFailed]),
        (Event, [NewData, DatasetCreated, DatasetSaved, AcquisitionFailed]),
    ],
    ids=["one-class", "list", "tuple", "none-is-all", "base-class-is-all"],
)
def test_kinds_filter_what_a_subscription_receives(kinds: object, expected: list[type[Event]]) -> None:
    bus = EventBus("t")
    sub = bus.subscribe(kinds=kinds, maxsize=2)  # type: ignore[arg-type]
    events: list[Event] = [
        new_data(0),
        created(1),
        DatasetSaved("src", str(uuid.UUID(int=1)), Path("x.nc"), 3),
        AcquisitionFailed("src", RuntimeError("boom")),
    ]
    for ev in events:
        bus.publish(ev)
    got = [type(ev) for ev in sub.drain()]
    # a filtered-out event takes no room in the queue and is not counted as missed
    assert got == expected[-2:]
    assert sub.missed == max(0, len(expected) - 2)
    bus.close()


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"maxsize": 0}, "maxsize"),
        ({"maxsize": -3}, "maxsize"),
        ({"maxsize": 1.5}, "maxsize"),
        ({"maxsize": True}, "maxsize"),
        ({"kinds": [int]}, "kinds"),
        ({"kinds": ["NewData"]}, "kinds"),
        ({"callback": 42}, "callback"),
    ],
    ids=["maxsize-0", "maxsize-negative", "maxsize-float", "maxsize-bool", "kinds-int",
         "kinds-str", "callback-not-callable"],
)
def test_bad_subscribe_arguments_are_refused(kwargs: dict[str, object], word: str) -> None:
    bus = EventBus("t")
    before = set(daqlab_threads())
    with pytest.raises(dl.ConfigurationError, match=word):
        bus.subscribe(**kwargs)  # type: ignore[arg-type]
    assert set(daqlab_threads()) == before, "a refused subscription must not start a thread"
    assert bus._subs == []
    bus.close()


# --------------------------------------------------------------------------- get / iterate / close


def test_get_returns_none_on_timeout_and_the_event_when_there_is_one() -> None:
    bus = EventBus("t")
    sub = bus.subscribe()
    assert sub.get(timeout=0.01) is None
    assert sub.get(timeout=0.0) is None
    bus.publish(new_data(3))
    ev = sub.get(timeout=0.0)
    assert isinstance(ev, NewData)
    assert ev.start == 3
    bus.close()


def test_get_wakes_when_an_event_is_published_from_another_thread() -> None:
    bus = EventBus("t")
    sub = bus.subscribe()
    got: list[Event | None] = []
    waiting = threading.Event()

    def consumer() -> None:
        waiting.set()
        got.append(sub.get(timeout=10.0))

    t = threading.Thread(target=consumer, name="daqlab-test-consumer")
    t.start()
    assert waiting.wait(5.0)
    bus.publish(new_data(7))
    t.join(5.0)
    assert not t.is_alive()
    assert len(got) == 1
    assert isinstance(got[0], NewData)
    assert got[0].start == 7
    bus.close()


def test_close_wakes_a_waiting_get_and_ends_iteration() -> None:
    bus = EventBus("t")
    sub = bus.subscribe()
    bus.publish(new_data(0))
    bus.publish(new_data(1))
    seen: list[int] = []
    first = threading.Event()

    def consumer() -> None:
        for ev in sub:
            assert isinstance(ev, NewData)
            seen.append(ev.start)
            first.set()

    t = threading.Thread(target=consumer, name="daqlab-test-iter")
    t.start()
    wait_for(lambda: len(seen) == 2, timeout=5.0, what="queued events to be iterated")
    sub.close()
    t.join(5.0)
    assert not t.is_alive(), "iteration did not end after close()"
    assert seen == [0, 1]
    assert sub.closed
    # closed: nothing more arrives, get() returns at once
    bus.publish(new_data(2))
    assert sub.get(timeout=5.0) is None
    assert sub.drain() == []
    bus.close()


def test_a_subscription_is_a_context_manager() -> None:
    bus = EventBus("t")
    with bus.subscribe() as sub:
        bus.publish(new_data(0))
        assert len(sub.drain()) == 1
    assert sub.closed
    bus.publish(new_data(1))
    assert sub.drain() == []
    bus.close()


def test_bus_close_closes_every_subscription() -> None:
    bus = EventBus("t")
    subs = [bus.subscribe() for _ in range(3)]
    bus.publish(new_data(0))
    bus.close()
    for s in subs:
        assert s.closed
        # what was queued before the close can still be taken, then it ends
        assert starts(list(s)) == [0]


# --------------------------------------------------------------------------- callbacks


def test_callbacks_run_on_a_daqlab_events_thread_that_close_joins() -> None:
    bus = EventBus("mybus")
    names: list[str] = []
    got: list[int] = []

    def cb(ev: Event) -> None:
        names.append(threading.current_thread().name)
        assert isinstance(ev, NewData)
        got.append(ev.start)

    sub = bus.subscribe(cb)
    thread = sub._thread
    assert thread is not None
    assert thread.is_alive()
    assert thread.name.startswith("daqlab-events")
    assert thread in daqlab_threads()
    for i in range(20):
        bus.publish(new_data(i))
    wait_for(lambda: len(got) == 20, timeout=5.0, what="callback to see every event")
    assert got == list(range(20))
    assert set(names) == {thread.name}
    sub.close()
    assert not thread.is_alive(), "close() must join the callback thread"
    bus.close()


def test_a_callback_that_raises_is_counted_and_the_next_events_still_arrive() -> None:
    bus = EventBus("t")
    got: list[int] = []

    def cb(ev: Event) -> None:
        assert isinstance(ev, NewData)
        if ev.start % 2:
            raise ValueError("odd")
        got.append(ev.start)

    sub = bus.subscribe(cb)
    for i in range(10):
        bus.publish(new_data(i))
    wait_for(lambda: sub.callback_errors == 5 and len(got) == 5, timeout=5.0,
             what="callback to process every event")
    assert got == [0, 2, 4, 6, 8]
    bus.close()
    assert sub._thread is not None
    assert not sub._thread.is_alive()


def test_publish_never_blocks_even_with_a_stuck_callback() -> None:
    bus = EventBus("t")
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def stuck(ev: Event) -> None:
        assert isinstance(ev, NewData)
        calls.append(ev.start)
        entered.set()
        release.wait(30.0)

    sub = bus.subscribe(stuck, maxsize=4)
    bus.publish(new_data(0))
    assert entered.wait(5.0), "callback was never called"

    done = threading.Event()

    def publisher() -> None:
        for i in range(1, 20_001):
            bus.publish(new_data(i))
        done.set()

    t = threading.Thread(target=publisher, name="daqlab-test-publisher")
    t.start()
    finished = done.wait(10.0)
    release.set()
    t.join(5.0)
    assert finished, "publish() blocked behind a stuck callback"
    # The callback holds event 0; the queue keeps the newest 4 of the 20000 others.
    assert sub.missed == 20_000 - 4
    wait_for(lambda: len(calls) == 5, timeout=5.0, what="the queued events to be delivered")
    assert calls == [0, 19_997, 19_998, 19_999, 20_000]
    bus.close()
    assert sub._thread is not None
    assert not sub._thread.is_alive()


def test_bus_close_is_bounded_with_a_stuck_callback() -> None:
    bus = EventBus("t")
    entered, release = threading.Event(), threading.Event()

    def stuck(ev: Event) -> None:
        entered.set()
        release.wait(30.0)

    sub = bus.subscribe(stuck)
    bus.publish(new_data(0))
    assert entered.wait(5.0)
    t0 = time.monotonic()
    bus.close(timeout=0.2)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0
    assert sub.closed
    release.set()
    assert sub._thread is not None
    sub._thread.join(5.0)
    assert not sub._thread.is_alive()


def test_a_closed_subscription_is_removed_from_the_bus() -> None:
    bus = EventBus("t")
    sub = bus.subscribe()
    sub.close()
    assert sub not in bus._subs
    bus.publish(new_data(0))
    assert sub.missed == 0
    bus.close()


def test_subscription_defaults() -> None:
    sub = Subscription(maxsize=2)
    assert sub.missed == 0
    assert sub.callback_errors == 0
    assert not sub.closed
    sub.close()
    assert sub.get(timeout=0.0) is None
