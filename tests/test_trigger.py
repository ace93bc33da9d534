"""Triggers and triggered capture: detection against a per-sample reference, captures equal to
the ring's samples (at block edges and at arm time), re-arming at 1,000 triggers per second,
hold-off, single and auto modes (injected clock), NaN and BAD samples, gaps, a manager."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import xarray as xr

import daqlab as dl
from daqlab.events import Triggered
from daqlab.sources import Push
from daqlab.trigger import Detector
from tests.helpers import wait_for


def reference(values: np.ndarray, quality: np.ndarray, t: dl.Trigger) -> list[int]:
    """Trigger samples found one sample at a time, as a scope's comparator would (slow, plain)."""
    out: list[int] = []
    armed: dict[str, bool] = {}
    next_allowed = 0
    for i, v in enumerate(values):
        if not np.isfinite(v) or quality[i] == dl.Quality.BAD:
            continue
        fired = False
        if t.band is not None:
            low, high = t.band
            inside = low <= v <= high
            for kind in (["enter", "leave"] if t.edge == "either" else [t.edge]):
                hit = inside if kind == "enter" else not inside
                if hit and armed.get(kind):
                    fired = True
                armed[kind] = not hit
        else:
            level, h = float(t.level), t.hysteresis  # type: ignore[arg-type]
            for kind in (["rising", "falling"] if t.edge == "either" else [t.edge]):
                hit = v >= level if kind == "rising" else v <= level
                if hit:
                    fired |= armed.get(kind, False)
                    armed[kind] = False
                elif (v < level - h) if kind == "rising" else (v > level + h):
                    armed[kind] = True
        if fired and i >= next_allowed:
            out.append(i)
            next_allowed = i + max(round(t.post * 1000.0), round(t.holdoff * 1000.0), 1)
    return out


TRIGGERS = [
    dl.Trigger("a", 0.0, post=0.001),
    dl.Trigger("a", 0.3, edge="falling", post=0.001),
    dl.Trigger("a", -0.2, edge="either", post=0.001),
    dl.Trigger("a", 0.0, hysteresis=0.5, post=0.001),
    dl.Trigger("a", 0.1, edge="either", hysteresis=0.3, post=0.005, holdoff=0.02),
    dl.Trigger("a", (-0.5, 0.5), edge="enter", post=0.001),
    dl.Trigger("a", (-0.5, 0.5), edge="leave", post=0.003),
    dl.Trigger("a", (-0.2, 0.7), edge="either", post=0.001),
]


@pytest.mark.parametrize("trigger", TRIGGERS, ids=lambda t: f"{t.edge}-{t.level}-h{t.hysteresis}")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_detection_matches_a_sample_by_sample_reference_for_any_blocks(trigger: dl.Trigger,
                                                                       seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 5000
    values = np.sin(np.arange(n) * 2 * np.pi / 137) + rng.normal(0, 0.25, n)  # noisy crossings
    values[rng.integers(0, n, 40)] = np.nan
    quality = np.zeros(n, np.int8)
    quality[rng.integers(0, n, 40)] = dl.Quality.BAD
    quality[rng.integers(0, n, 40)] = dl.Quality.SUSPECT  # suspect samples do trigger
    expected = reference(values, quality, trigger)
    assert len(expected) > 5
    for sizes in ([n], [1] * 50 + [n - 50], list(rng.integers(1, 400, 60))):
        det = Detector(trigger, dl.Channel("a"), 1000.0)
        found: list[int] = []
        start = 0
        for size in [*sizes, n]:
            stop = min(n, start + int(size))
            found += det.find(values[start:stop], quality[start:stop], start)
            start = stop
            if start >= n:
                break
        assert found == expected


def test_nan_and_bad_samples_never_trigger() -> None:
    values = np.array([-1.0, np.nan, -1.0, 1.0, -1.0, 2.0, -1.0, np.inf, -1.0])
    quality = np.array([0, 0, 0, 2, 0, 0, 0, 0, 0], np.int8)  # the crossing at 3 is BAD
    det = Detector(dl.Trigger("a", 0.5), dl.Channel("a"), 1000.0)
    assert det.find(values, quality, 0) == [5]  # only the good sample at 2.0 (inf is no value)


def test_calibrated_triggers_compare_physical_values() -> None:
    ch = dl.Channel("a", "degC", calibration=dl.Calibration(slope=10.0, offset=-5.0))
    raw = np.array([0.0, 0.4, 0.6, 0.0, 0.6])  # physical -5, -1, 1, -5, 1
    det = Detector(dl.Trigger("a", 0.0, calibrated=True, post=0.001), ch, 1000.0)
    assert det.find(raw, np.zeros(5, np.int8), 100) == [102, 104]
    det = Detector(dl.Trigger("a", 0.5, post=0.001), ch, 1000.0)  # raw
    assert det.find(raw, np.zeros(5, np.int8), 0) == [2, 4]


def square(n: int, half: int, start: int = 0) -> np.ndarray:
    """-1/+1 square wave, rising edges at start + half, start + 3 half..."""
    return np.where(((np.arange(n) + start) // half) % 2 == 0, -1.0, 1.0)


def test_captures_are_exactly_the_rings_samples_at_block_edges() -> None:
    rate = 1000.0
    buf = dl.RingBuffer(["a", "b"], 10_000, rate, start="2024-01-01")
    trig = dl.Trigger("a", 0.0, pre=0.007, post=0.005)  # 7 before, 5 from the trigger sample
    with dl.Captures(buf, trig) as caps:
        sig = np.full(300, -1.0)
        sig[[100, 200]] = 1.0  # triggers at 100 (first of block 2) and 199/200
        sig[199] = 1.0
        ramp = np.arange(300.0)
        # blocks end right before / at each trigger sample
        for a, b in [(0, 100), (100, 199), (199, 200), (200, 205), (205, 300)]:
            buf.push(np.vstack([sig[a:b], ramp[a:b]]))
        first, second = caps.get(timeout=10), caps.get(timeout=10)
    for cap, k in ((first, 100), (second, 199)):
        want = buf.range(k - 7, 12)
        for name in ("value", "quality", "time"):
            np.testing.assert_array_equal(cap[name].values, want[name].values)
        xr.testing.assert_equal(cap.coords.to_dataset(), want.coords.to_dataset())
        assert cap.attrs["trigger_index"] == 7
        assert cap.attrs["trigger_sample"] == k
        assert cap["value"].values[1, 7] == k  # the trigger sample is the first of post
        assert cap.attrs["trigger_time"] == f"{np.datetime_as_string(want['time'].values[7], 'ns')}Z"
        assert (cap.attrs["trigger_channel"], cap.attrs["trigger_level"], cap.attrs["triggered"]) == (
            "a", 0.0, True)
        assert cap.attrs["id"] != buf.id
        dl.validate(cap)
    assert (first.attrs["capture"], second.attrs["capture"]) == (0, 1)


def test_a_trigger_at_arm_time_takes_its_pre_samples_from_before_arming() -> None:
    buf = dl.RingBuffer(["a"], 1000, 1000.0, start="2024-01-01")
    buf.push(np.linspace(-1, -0.5, 50)[None, :])  # history before arming
    caps = dl.Captures(buf, dl.Trigger("a", 0.0, pre=0.02, post=0.01))
    assert caps.armed_at == 50
    buf.push(np.full((1, 30), 1.0))  # the first sample after arming fires
    cap = caps.get(timeout=10)
    caps.close()
    assert cap.attrs["trigger_sample"] == 50
    np.testing.assert_array_equal(cap["value"].values, buf.range(30, 30)["value"].values)


def test_a_trigger_waits_for_its_pre_samples_and_ignores_edges_before_arming() -> None:
    buf = dl.RingBuffer(["a"], 1000, 1000.0, start="2024-01-01")
    buf.push(np.array([[-1.0, 1.0, -1.0]]))  # an edge before arming: never a capture
    caps = dl.Captures(buf, dl.Trigger("a", 0.0, pre=0.010, post=0.002))
    buf.push(np.array([[1.0, -1.0] * 10]))  # edges at 3, 5, ... but only 3..22 exist
    buf.push(np.full((1, 5), -1.0))
    wait_for(lambda: caps.describe()["count"] >= 1)
    caps.close()
    samples = [c.attrs["trigger_sample"] for c in caps]
    # edges at 3, 5, 7, 9 (arming at 3) have fewer than 10 samples before them; 11 has 1..10
    assert samples[0] == 11


def test_rearming_keeps_up_with_1000_triggers_per_second_at_1_ms_per_s() -> None:
    rate = 1_000_000.0
    buf = dl.RingBuffer(["a", "b"], 2_000_000, rate, start="2024-01-01")
    caps = dl.Captures(buf, dl.Trigger("a", 0.0, pre=100e-6, post=200e-6), keep=5000)
    n, block = 1_000_000, 10_000
    sig = square(n + 500, 500)[: n]  # a 1 kHz square wave: rising edges every 1000 samples
    index = np.arange(n, dtype=float)
    for a in range(0, n, block):
        buf.push(np.vstack([sig[a:a + block], index[a:a + block]]))
    wait_for(lambda: caps.describe()["count"] >= 999, timeout=60, what="1000 captures")
    caps.close()
    got = list(caps)
    edges = [k for k in range(500, n, 1000) if k + 200 <= n]
    assert [c.attrs["trigger_sample"] for c in got] == edges
    assert (caps.missed, caps.dropped) == (0, 0)
    for c in got[::97]:
        k = c.attrs["trigger_sample"]
        np.testing.assert_array_equal(c["value"].values[1], np.arange(k - 100, k + 200, dtype=float))


def test_holdoff_counts_from_the_trigger_sample() -> None:
    buf = dl.RingBuffer(["a"], 10_000, 1000.0, start="2024-01-01")
    caps = dl.Captures(buf, dl.Trigger("a", 0.0, post=0.001, holdoff=0.25))
    buf.push(square(2000, 50)[None, :])  # rising edges at 50, 150, 250...
    wait_for(lambda: caps.describe()["count"] >= 7)
    caps.close()
    # after 50, the next edge at or after 50 + 250 is 350; then 650...
    assert [c.attrs["trigger_sample"] for c in caps] == [50, 350, 650, 950, 1250, 1550, 1850]


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def advance(self, s: float) -> None:
        with self.lock:
            self.now += s


def test_auto_mode_captures_the_latest_samples_when_no_trigger_comes() -> None:
    clock = ManualClock()
    buf = dl.RingBuffer(["a"], 10_000, 1000.0, start="2024-01-01")
    caps = dl.Captures(buf, dl.Trigger("a", 5.0, pre=0.004, post=0.006, mode="auto", auto_after=1.0),
                       clock=clock)
    buf.push(np.arange(100.0)[None, :] / 1000)  # never reaches 5.0
    wait_for(lambda: caps._reader.position == 100)
    clock.advance(0.5)
    with pytest.raises(dl.CaptureTimeout, match=r"no capture within 0\.3 s"):
        caps.get(timeout=0.3)  # not yet: only 0.5 s on the clock
    clock.advance(0.6)
    cap = caps.get(timeout=10)
    assert cap.attrs["triggered"] is False
    assert cap.attrs["trigger_sample"] == 94  # the latest 10 samples: 90..99, 4 before
    np.testing.assert_array_equal(cap["value"].values[0], np.arange(90.0, 100.0) / 1000)
    buf.push(np.array([[6.0] * 20]))  # a real trigger resets the clock
    real = caps.get(timeout=10)
    assert (real.attrs["triggered"], real.attrs["trigger_sample"]) == (True, 100)
    caps.close()


def test_single_mode_makes_one_capture_then_says_so() -> None:
    buf = dl.RingBuffer(["a"], 10_000, 1000.0, start="2024-01-01")
    caps = dl.Captures(buf, dl.Trigger("a", 0.0, post=0.002, mode="single"))
    buf.push(square(1000, 50)[None, :])
    cap = caps.get(timeout=10)
    assert cap.attrs["trigger_sample"] == 50
    with pytest.raises(dl.CaptureTimeout, match="a single capture was asked for"):
        caps.get(timeout=10)
    assert caps.done
    caps.close()


def test_samples_lost_to_the_writer_drop_the_capture_that_needed_them() -> None:
    buf = dl.RingBuffer(["a"], 1000, 1000.0, start="2024-01-01")
    caps = dl.Captures(buf, dl.Trigger("a", 0.0, pre=0.005, post=0.100))
    first = np.full(100, -1.0)
    first[95:] = 1.0  # a trigger at 95 whose 100 post samples are not there yet
    buf.push(first[None, :])
    wait_for(lambda: caps._reader.position == 100, what="the block read")
    buf.push(np.full((1, 5000), -1.0))  # laps the reader: samples 100..4099 are gone
    tail = np.full(300, -1.0)
    tail[100:] = 1.0  # a trigger at 5200 after the gap
    buf.push(tail[None, :])
    cap = caps.get(timeout=10)
    caps.close()
    assert caps.missed == 1
    assert cap.attrs["trigger_sample"] == 5200
    assert caps.count == 1


def test_bad_arguments_are_configuration_errors() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "", "level": 0.0}, "channel must be a channel name"),
        ({"channel": "a", "level": float("nan")}, "level must be a finite number"),
        ({"channel": "a", "level": True}, "level must be a finite number"),
        ({"channel": "a", "level": 0.0, "edge": "up"}, "edge is 'rising', 'falling' or 'either'"),
        ({"channel": "a", "level": (1.0, 0.0), "edge": "enter"}, "needs low < high"),
        ({"channel": "a", "level": (0.0, 1.0)}, "window trigger's edge is 'enter'"),
        ({"channel": "a", "level": (0.0,), "edge": "enter"}, r"level is \(low, high\)"),
        ({"channel": "a", "level": 0.0, "mode": "often"}, "mode is one of"),
        ({"channel": "a", "level": 0.0, "pre": -1}, "pre must be a finite number of seconds >= 0"),
        ({"channel": "a", "level": 0.0, "post": "1"}, "post must be"),
        ({"channel": "a", "level": 0.0, "auto_after": 0}, "auto_after must be .* > 0"),
        ({"channel": "a", "level": 0.0, "hysteresis": -0.1}, "hysteresis must be >= 0"),
        ({"channel": "a", "level": 0.0, "calibrated": "yes"}, "calibrated is True or False"),
    ]
    for kwargs, match in cases:
        with pytest.raises(dl.ConfigurationError, match=match):
            dl.Trigger(**kwargs)
    buf = dl.RingBuffer(["a"], 100, 10.0)
    with pytest.raises(dl.ChannelNotFoundError, match=r"'x' is not in this buffer; its channels are \['a'\]"):
        dl.Captures(buf, dl.Trigger("x", 0.0))
    with pytest.raises(dl.ConfigurationError, match="hold no sample at 10 Hz"):
        dl.Captures(buf, dl.Trigger("a", 0.0, pre=0.0, post=0.01))
    with pytest.raises(dl.ConfigurationError, match=r"arm\(\) takes a daqlab\.Trigger"):
        dl.Captures(buf, "a > 0")  # type: ignore[arg-type]


def trigger_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("daqlab-trigger-")]


def test_a_manager_arms_announces_and_ends_captures(tmp_path: Any) -> None:
    src = Push(["a", "b"], 1000.0)
    before = set(trigger_threads())
    with dl.DataManager(src, record=False, autosave_interval=None, output_dir=tmp_path) as dm:
        events = dm.subscribe(kinds=Triggered)
        caps = dm.arm(dl.Trigger("b", 0.5, pre=0.002, post=0.003))
        with pytest.raises(dl.ChannelNotFoundError, match="in none of the sources"):
            dm.arm(dl.Trigger("zz", 0.5))
        with pytest.raises(dl.ConfigurationError, match=r"takes a daqlab\.Trigger"):
            dm.arm("b")  # type: ignore[arg-type]
        values = np.zeros((2, 40))
        values[1, [10, 30]] = 1.0
        src.feed(values)
        cap = caps.get(timeout=10)
        ev = events.get(timeout=10)
        assert isinstance(ev, Triggered)
        assert (ev.source, ev.capture, ev.index, ev.triggered) == (
            "src", 0, cap.attrs["trigger_sample"], True)
        assert ev.time == cap["time"].values[2]
    # the manager stopped: the captures drained the buffer, then ended
    assert [c.attrs["trigger_sample"] for c in caps] == [30]
    assert caps.done
    assert set(trigger_threads()) <= before


def test_a_capture_saves_and_reopens_with_its_trigger(tmp_path: Any) -> None:
    buf = dl.RingBuffer(["a"], 1000, 1000.0, start="2024-01-01")
    with dl.Captures(buf, dl.Trigger("a", (-0.5, 0.5), edge="leave", pre=0.003, post=0.004)) as caps:
        buf.push(np.array([[0.0] * 10 + [1.0] * 10]))
        cap = caps.get(timeout=10)
    back = dl.open_run(dl.save(cap, tmp_path / "cap.nc"))
    xr.testing.assert_identical(back, cap)
    assert back.attrs["trigger_level"] == [-0.5, 0.5]
    assert back.attrs["metadata"]["trigger"]["edge"] == "leave"
    assert not trigger_threads()
