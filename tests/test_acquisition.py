"""The acquisition engine: DataManager lifecycle, lossless recording, datasets, saving, events."""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any, get_args, get_type_hints

import numpy as np
import pytest
from numpy.typing import NDArray

import daqlab as dl
from daqlab.events import (
    AcquisitionFailed,
    BufferOverflow,
    DatasetCreated,
    DatasetSaved,
    Event,
    NewData,
    Recorded,
)
from daqlab.sources import Push, Samples, Simulated
from tests.helpers import daqlab_threads, read_all_values, wait_for

T0 = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)
T0_NS = np.datetime64("2024-01-01T12:00:00", "ns")


def wall_clock() -> dt.datetime:
    return T0


def manager(sources: Any, tmp_path: Path, **kw: Any) -> dl.DataManager:
    """A manager for tests: no recording, no auto-save, no Ctrl-C handler unless asked."""
    kw.setdefault("record", False)
    kw.setdefault("autosave_interval", None)
    kw.setdefault("handle_sigint", False)
    kw.setdefault("output_dir", tmp_path)
    return dl.DataManager(sources, **kw)


def running(dm: dl.DataManager) -> bool:
    """``dm.running``, read through a call so that mypy does not narrow it."""
    return dm.running


def fed_values(channels: int, start: int, n: int) -> NDArray[np.float64]:
    """Values unique per sample and channel: ``k + 1e6 * c`` for write index ``k``."""
    k = np.arange(start, start + n, dtype=np.float64)
    return np.stack([k + 1e6 * c for c in range(channels)])


def feed_and_wait(dm: dl.DataManager, src: Push, n: int, *, recorded: bool = False) -> None:
    """Feed ``n`` samples as one block and wait until they are in the buffer (and on disk)."""
    buf = dm.buffers["src"]
    start = buf.written
    src.feed(fed_values(len(src.channels), start, n))
    wait_for(lambda: buf.written == start + n, timeout=10.0, what=f"{n} samples in the buffer")
    if recorded:
        wait_for(lambda: dm.status()["src"]["recorded"] == start + n, timeout=10.0,
                 what="the recorder to make the samples durable")


def files_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


class ScriptedSource:
    """A user's own source: delivers ``blocks`` then behaves as ``then`` says."""

    def __init__(self, channels: tuple[str, ...] = ("x",), rate: float = 100.0, *,
                 blocks: int = 0, then: str = "idle", release: threading.Event | None = None,
                 error: BaseException | None = None) -> None:
        self._channels = tuple(dl.Channel(c) for c in channels)
        self._rate = rate
        self._blocks = blocks
        self._then = then
        self.release = release or threading.Event()
        self.error = error or ValueError("driver exploded")
        self._k = 0
        self.stopped = threading.Event()
        self.reading = threading.Event()

    @property
    def channels(self) -> tuple[dl.Channel, ...]:
        return self._channels

    @property
    def sample_rate(self) -> float:
        return self._rate

    @property
    def finished(self) -> bool:
        return False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped.set()

    def describe(self) -> dict[str, Any]:
        return {"type": "tests.ScriptedSource", "then": self._then}

    def read(self, timeout: float) -> Samples | None:
        self.reading.set()
        if self._blocks > 0:
            self._blocks -= 1
            n = 10
            times = T0_NS + (self._k + np.arange(n)) * np.timedelta64(10, "ms")
            values = fed_values(len(self._channels), self._k, n)
            self._k += n
            return Samples(values, times)
        if self._then == "raise":
            raise self.error
        if self._then == "hang":  # ignores stop(): only the test can release it
            self.release.wait(60.0)
            return None
        self.stopped.wait(timeout)
        return None


# =========================================================================== real-time acquisition


def test_paced_simulated_at_100ks_keeps_every_sample_while_the_caller_computes(tmp_path: Path) -> None:
    rate = 100_000.0
    block = 1000  # block_duration * rate: a paced read waits until this many samples are due
    readings: list[float] = []

    def clock() -> float:  # the source's monotonic clock, remembering what it told the source
        now = time.monotonic()
        readings.append(now)
        return now

    src = Simulated(8, rate, seed=7, block_duration=0.01, clock=clock)  # paced, real time
    dm = manager(src, tmp_path)
    t_a = time.monotonic()
    dm.start()
    t_b = time.monotonic()
    # keep the calling thread busy with numpy work meanwhile
    rng = np.random.default_rng(0)
    acc = 0.0
    while time.monotonic() - t_b < 2.0:
        x = rng.standard_normal(8192)
        acc += float(np.abs(np.fft.rfft(x)).sum())
        assert running(dm)
    t_c = time.monotonic()
    dm.stop()
    t_d = time.monotonic()
    assert acc > 0

    snap = dm.snapshot()
    n = snap.sizes["time"]
    assert n == dm.buffers["src"].written == src.emitted
    # against the source's own clock: every sample due at its last look is there, within a block
    due = (readings[-1] - readings[0]) * rate
    assert due - block <= n <= due + 1, (n, due)
    # against the caller's clock: real time, no more, and not fallen behind
    assert n <= (t_d - t_a) * rate, "more samples than real time allows"
    assert n >= (t_c - t_b) * rate - 5 * block, (
        f"{n} samples after {t_c - t_b:.3f} s: acquisition fell behind real time")
    t = snap.time.values.astype(np.int64)
    steps = np.diff(t)
    assert (steps == 10_000).all(), f"uneven steps: {np.unique(steps)}"
    v = snap.value.values
    assert v.shape == (8, n)
    assert not np.isnan(v).any()
    assert (snap.quality.values == dl.Quality.GOOD).all()
    assert dm.buffers["src"].overflow_count == 0
    assert dm.status()["src"]["lost"] == 0


# =========================================================================== lapped readers


def test_a_lapped_reader_is_told_exactly_what_it_missed() -> None:
    rb = dl.RingBuffer(["a", "b"], capacity=100, sample_rate=1000.0, start="2024-01-01")
    r = rb.reader()
    rb.push(fed_values(2, 0, 30))
    first = r.read()
    assert len(first) == 30
    assert first.lost == 0
    for k in range(5):
        rb.push(fed_values(2, 30 + 50 * k, 50))  # 280 written, 100 held: 180..279
    block = r.read()
    assert block.lost == 150
    assert block.start == 180
    assert len(block) == 100
    np.testing.assert_array_equal(block.values, fed_values(2, 180, 100))
    assert r.lost == 150
    assert rb.overflow_count == 150
    assert r.read().lost == 0  # told once
    assert r.lost == 150


def test_a_slow_reader_of_a_manager_buffer_is_told_exactly_what_it_missed(tmp_path: Path) -> None:
    src = Push(["a", "b"], 1000.0)
    dm = manager(src, tmp_path, buffer_samples=100)
    r = dm.buffers["src"].reader()
    with dm:
        feed_and_wait(dm, src, 30)
        first = r.read()
        assert len(first) == 30
        assert first.lost == 0
        for _ in range(5):
            feed_and_wait(dm, src, 50)
        block = r.read()
    assert block.lost == 150
    assert block.start == 180
    assert len(block) == 100
    np.testing.assert_array_equal(block.values, fed_values(2, 180, 100))
    assert r.lost == 150
    assert dm.buffers["src"].overflow_count == 150
    assert dm.status()["src"]["lost"] == 150


@pytest.mark.parametrize("started", [False, True], ids=["thread-not-started", "thread-running"])
def test_a_lapped_recorder_writes_exactly_the_gap_as_nan_flagged_bad(
    tmp_path: Path, started: bool
) -> None:
    rb = dl.RingBuffer(["a", "b"], capacity=100, sample_rate=1000.0, start="2024-01-01")
    events: list[Event] = []
    lock = threading.Lock()

    def publish(ev: Event) -> None:
        with lock:
            events.append(ev)

    rec = dl.Recorder(rb, tmp_path / "rec.nc", flush_interval=0.01, publish=publish,
                      source_name="src")
    if started:
        rec.start()
        rb.push(fed_values(2, 0, 50))
        wait_for(lambda: rec.saved_upto == 50, timeout=10.0, what="the recorder to save 50 samples")
        rb.push(fed_values(2, 50, 350))  # one push: the recorder's cursor (50) is lapped by 250
        wait_for(lambda: rec.saved_upto == 400, timeout=10.0, what="the recorder to pass the gap")
        rb.push(fed_values(2, 400, 30))
        gap = (50, 300)
    else:
        for k in range(7):  # recorder paused: 350 pushed into 100 places
            rb.push(fed_values(2, 50 * k, 50))
        rb.push(fed_values(2, 350, 30))
        gap = (0, 280)  # 380 written, the ring holds the last 100
    written = rb.written
    path = rec.close()
    assert path == tmp_path / "rec.nc"
    assert path.is_file()
    assert not rec.folder.exists()

    overflows = [e for e in events if isinstance(e, BufferOverflow)]
    assert len(overflows) == 1
    ov = overflows[0]
    assert ov.lost == gap[1] - gap[0]
    assert ov.first_lost == gap[0]
    assert ov.source == "src"
    assert ov.reader.startswith("recorder:")
    assert rec.gap_samples == gap[1] - gap[0]
    assert rb.overflow_count == gap[1] - gap[0]
    assert any(isinstance(e, Recorded) for e in events)

    run = dl.open_run(path)
    assert run.sizes["time"] == written
    v, q = run.value.values, run.quality.values
    lo, hi = gap
    assert np.isnan(v[:, lo:hi]).all()
    assert (q[:, lo:hi] == dl.Quality.BAD).all()
    kept = np.r_[0:lo, hi:written]
    np.testing.assert_array_equal(v[:, kept], fed_values(2, 0, written)[:, kept])
    assert (q[:, kept] == dl.Quality.GOOD).all()
    t = run.time.values.astype(np.int64)
    assert (np.diff(t) > 0).all(), "gap timestamps must lie strictly inside the lost span"
    if lo > 0:
        assert ov.span == (run.time.values[lo - 1], run.time.values[hi])


def test_a_recorder_lapped_inside_a_manager_reports_and_records_the_gap(tmp_path: Path) -> None:
    src = Push(["a", "b", "c"], 1000.0)
    dm = manager(src, tmp_path, buffer_samples=100, record=True, flush_interval=0.02)
    sub = dm.subscribe(kinds=BufferOverflow)
    with dm:
        feed_and_wait(dm, src, 50, recorded=True)
        feed_and_wait(dm, src, 350, recorded=True)  # one block larger than the ring: 250 lost
        feed_and_wait(dm, src, 30)
    written = dm.buffers["src"].written
    assert written == 430
    overflows = sub.drain()
    assert len(overflows) == 1
    ov = overflows[0]
    assert isinstance(ov, BufferOverflow)
    assert (ov.lost, ov.first_lost, ov.source) == (250, 50, "src")
    assert dm.buffers["src"].overflow_count == 250
    assert dm.status()["src"]["lost"] == 250

    [path] = [p for p in dm.saved if p.suffix == ".nc"]
    run = dl.open_run(path)
    assert run.sizes["time"] == written
    v, q = run.value.values, run.quality.values
    assert np.isnan(v[:, 50:300]).all()
    assert (q[:, 50:300] == dl.Quality.BAD).all()
    assert int(np.isnan(v).sum()) == 250 * 3
    kept = np.r_[0:50, 300:430]
    np.testing.assert_array_equal(v[:, kept], fed_values(3, 0, 430)[:, kept])
    assert (q[:, kept] == dl.Quality.GOOD).all()
    assert ov.span == (run.time.values[49], run.time.values[300])


# =========================================================================== lifecycle


def test_start_stop_and_the_running_state(tmp_path: Path) -> None:
    src = Simulated(2, 1000.0, paced=False, duration=0.2, seed=1)
    dm = manager(src, tmp_path)
    assert not running(dm)
    with pytest.raises(dl.AcquisitionError, match="before start"):
        dm.stop()
    assert dm.start() is dm
    assert running(dm)
    assert "running" in repr(dm)
    with pytest.raises(dl.AcquisitionError, match="runs once"):
        dm.start()
    assert dm.wait(timeout=10.0)
    dm.stop()
    assert not running(dm)
    dm.stop()  # a second stop is harmless
    with pytest.raises(dl.AcquisitionError):
        dm.start()  # a manager runs once
    assert dm.snapshot().sizes["time"] == 200  # buffers survive stop


def test_a_manager_is_a_context_manager_and_leaves_no_thread(tmp_path: Path) -> None:
    before = set(daqlab_threads())
    src = Simulated(["x", "y"], 1000.0, seed=2)
    with manager(src, tmp_path, record=True, autosave_interval=5.0) as dm:
        assert running(dm)
        names = {t.name for t in set(daqlab_threads()) - before}
        assert any(n.startswith("daqlab-acq-") for n in names)
        assert any(n.startswith("daqlab-rec-") for n in names)
        assert any(n.startswith("daqlab-autosave-") for n in names)
        wait_for(lambda: dm.buffers["src"].written >= 50, timeout=10.0, what="samples")
    assert not running(dm)
    assert set(daqlab_threads()) - before == set(), "stop() must end every daqlab thread"
    assert dm.snapshot().sizes["time"] == dm.buffers["src"].written


def test_stop_is_bounded_when_a_source_read_blocks_forever(tmp_path: Path) -> None:
    src = ScriptedSource(blocks=2, then="hang")
    dm = manager(src, tmp_path, stop_timeout=0.3, record=True)
    dm.start()
    try:
        wait_for(lambda: dm.buffers["src"].written == 20, timeout=10.0, what="two blocks")
        wait_for(src.reading.is_set, timeout=5.0)
        t0 = time.monotonic()
        with pytest.raises(dl.AcquisitionError, match=r"did not stop within 0\.3 s") as info:
            dm.stop()
        elapsed = time.monotonic() - t0
        assert elapsed < 0.3 + 3.0, f"stop() took {elapsed:.2f} s with stop_timeout=0.3"
        assert "src" in str(info.value)
        assert src.stopped.is_set(), "stop() must ask the source to stop"
        # what came before was saved
        [path] = [p for p in dm.saved if p.suffix == ".nc"]
        assert dl.open_run(path).sizes["time"] == 20
    finally:
        src.release.set()
    wait_for(lambda: not [t for t in daqlab_threads() if t.name.startswith("daqlab-acq")],
             timeout=5.0, what="the released source thread to end")


@pytest.mark.parametrize("error", [ValueError("driver exploded"), KeyboardInterrupt()],
                         ids=["exception", "keyboard-interrupt"])
def test_a_failing_source_is_reported_and_stop_reraises(tmp_path: Path, error: BaseException) -> None:
    src = ScriptedSource(("x", "y"), blocks=3, then="raise", error=error)
    dm = manager(src, tmp_path, record=True)
    sub = dm.subscribe(kinds=AcquisitionFailed)
    dm.start()
    ev = sub.get(timeout=10.0)
    assert isinstance(ev, AcquisitionFailed)
    assert ev.error is error
    assert ev.source == "src"
    assert dm.wait(timeout=5.0)
    with pytest.raises(dl.AcquisitionError, match="'src' failed") as info:
        dm.stop()
    assert info.value.__cause__ is error
    assert dm.errors["src"] is error
    assert not running(dm)
    # everything acquired before the failure is kept and saved
    assert dm.snapshot().sizes["time"] == 30
    [path] = [p for p in dm.saved if p.suffix == ".nc"]
    run = dl.open_run(path)
    np.testing.assert_array_equal(run.value.values, fed_values(2, 0, 30))


def test_sigint_handler_is_installed_and_restored(tmp_path: Path) -> None:
    prev = signal.getsignal(signal.SIGINT)
    src = Simulated(1, 100.0, seed=0)
    dm = manager(src, tmp_path, handle_sigint=True)
    with dm:
        assert signal.getsignal(signal.SIGINT) is not prev
    assert signal.getsignal(signal.SIGINT) is prev


# =========================================================================== configuration

BAD_SETTINGS: list[tuple[str, Any]] = [
    ("buffer_seconds", 0),
    ("buffer_seconds", -1.0),
    ("buffer_seconds", float("nan")),
    ("buffer_seconds", float("inf")),
    ("buffer_seconds", "10"),
    ("buffer_seconds", True),
    ("buffer_samples", 0),
    ("buffer_samples", 1.5),
    ("buffer_samples", True),
    ("autosave_interval", 0.0),
    ("autosave_interval", -5),
    ("max_memory_usage_mb", 0),
    ("max_memory_usage_mb", float("nan")),
    ("flush_interval", 0),
    ("flush_interval", "fast"),
    ("stop_timeout", -1.0),
    ("stop_timeout", float("inf")),
    ("event_queue_size", 0),
    ("event_queue_size", 2.5),
    ("event_queue_size", True),
    ("output_dir", 5),
    ("record", "no"),  # truthy: it recorded
    ("compression", 1),
    ("handle_sigint", None),
]


@pytest.mark.parametrize(("field", "value"), BAD_SETTINGS,
                         ids=[f"{f}={v!r}" for f, v in BAD_SETTINGS])
def test_each_bad_setting_is_refused_naming_the_field(tmp_path: Path, field: str, value: Any) -> None:
    with pytest.raises(dl.ConfigurationError, match=field):
        dl.AcquisitionConfig(**{field: value})
    kw: dict[str, Any] = {"output_dir": tmp_path, field: value}
    with pytest.raises(dl.ConfigurationError, match=field):
        dl.DataManager(Simulated(1, 100.0), **kw)


def test_settings_override_a_config(tmp_path: Path) -> None:
    cfg = dl.AcquisitionConfig(buffer_seconds=2.0, autosave_interval=None, output_dir=tmp_path)
    dm = dl.DataManager(Simulated(1, 100.0), cfg, buffer_samples=77)
    assert dm.config.buffer_samples == 77
    assert dm.config.buffer_seconds == 2.0
    assert dm.buffers["src"].capacity == 77
    dm2 = dl.DataManager(Simulated(1, 100.0), cfg)
    assert dm2.buffers["src"].capacity == 200
    assert isinstance(dm2.config.output_dir, Path)


@pytest.mark.parametrize("config", ["x", {"record": False}], ids=["text", "dict"])
def test_a_config_that_is_not_an_acquisition_config_is_refused(tmp_path: Path, config: Any) -> None:
    with pytest.raises(dl.ConfigurationError, match=r"config must be an AcquisitionConfig or None"):
        dl.DataManager(Simulated(1, 100.0), config, output_dir=tmp_path)


def test_an_unknown_setting_is_refused_listing_the_settings(tmp_path: Path) -> None:
    with pytest.raises(dl.ConfigurationError, match="bufer_seconds") as info:
        # mypy refuses the misspelling too (settings are typed keywords): this checks run time
        dl.DataManager(Simulated(1, 100.0), output_dir=tmp_path, bufer_seconds=3.0)  # type: ignore[arg-type]
    msg = str(info.value)
    for name in dl.AcquisitionConfig.__dataclass_fields__:
        assert name in msg
    assert "did you mean ['buffer_seconds']" in msg


def test_every_setting_is_a_typed_keyword_of_the_manager(tmp_path: Path) -> None:
    params = inspect.signature(dl.DataManager).parameters
    hints = get_type_hints(dl.DataManager.__init__)
    for name, field_type in get_type_hints(dl.AcquisitionConfig).items():
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert repr(params[name].default) == "FROM_CONFIG", name
        # the field's type, or more (output_dir takes a str too), or FROM_CONFIG
        assert set(get_args(field_type) or [field_type]) < set(get_args(hints[name])), name
    # None is a value, not "left out": it turns auto-save off and ring lengths back to seconds
    cfg = dl.AcquisitionConfig(autosave_interval=5.0, buffer_samples=7, output_dir=tmp_path)
    dm = dl.DataManager(Simulated(1, 100.0), cfg, autosave_interval=None, buffer_samples=None)
    assert (dm.config.autosave_interval, dm.config.buffer_samples) == (None, None)
    assert dm.buffers["src"].capacity == 1000
    assert dl.DataManager(Simulated(1, 100.0), cfg).config == cfg


def test_max_memory_usage_is_enforced_saying_how_much_is_needed(tmp_path: Path) -> None:
    src = Simulated(8, 100_000.0)
    # 10 s at 100 kHz: 1e6 samples x (8 x (8 + 1) + 8) bytes = 76.3 MiB
    with pytest.raises(dl.ConfigurationError, match=r"76\.3 MiB") as info:
        manager(src, tmp_path, max_memory_usage_mb=10.0)
    assert "max_memory_usage_mb=10" in str(info.value)
    dm = manager(Simulated(8, 100_000.0), tmp_path, max_memory_usage_mb=100.0)
    assert dm.buffers["src"].capacity == 1_000_000
    # several sources add up
    two = {"a": Simulated(["a0"], 100_000.0), "b": Simulated(["b0"], 100_000.0)}
    with pytest.raises(dl.ConfigurationError, match=r"MiB"):
        manager(two, tmp_path, max_memory_usage_mb=30.0)


def test_sources_sharing_a_channel_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(dl.ConfigurationError, match="'b'"):
        manager([Simulated(["a", "b"], 100.0), Simulated(["b", "c"], 100.0)], tmp_path)
    with pytest.raises(dl.ConfigurationError, match="'x'"):
        manager({"one": Simulated(["x"], 100.0), "two": Simulated(["x"], 50.0)}, tmp_path)


@pytest.mark.parametrize("sources", [[], {}, object(), [Simulated(1, 10.0), "nope"]],
                         ids=["empty-list", "empty-dict", "not-a-source", "one-not-a-source"])
def test_what_is_not_a_source_is_refused(tmp_path: Path, sources: Any) -> None:
    with pytest.raises(dl.ConfigurationError):
        manager(sources, tmp_path)


# =========================================================================== datasets


def test_create_dataset_announces_it(tmp_path: Path) -> None:
    src = Push(["a", "b", "c"], 1000.0)
    dm = manager(src, tmp_path)
    sub = dm.subscribe(kinds=DatasetCreated)
    with dm:
        did = dm.create_dataset("sel", ["c", "a"], description="two", metadata={"k": 1})
        ev = sub.get(timeout=5.0)
        feed_and_wait(dm, src, 5)  # (an empty dataset is tested on its own below)
    assert isinstance(did, uuid.UUID)
    assert isinstance(ev, DatasetCreated)
    assert ev.dataset_id == str(did)
    assert ev.name == "sel"
    assert ev.channels == ("c", "a")
    assert ev.source == "src"


def test_export_holds_exactly_the_samples_from_creation_to_export(tmp_path: Path) -> None:
    src = Push(["a", "b", "c"], 1000.0, wall_clock=wall_clock)
    dm = manager(src, tmp_path)
    saved = dm.subscribe(kinds=DatasetSaved)
    with dm:
        feed_and_wait(dm, src, 100)
        did = dm.create_dataset("sel", ["c", "a"], metadata={"operator": "ada"})
        feed_and_wait(dm, src, 120)
        feed_and_wait(dm, src, 80)
        path = dm.export_dataset(did)
        buf = dm.buffers["src"]
        expected = buf.range(100, 200).sel(channel=["c", "a"])
        feed_and_wait(dm, src, 10)  # after the export: not in that file
        run = dl.open_run(path)
        ev = saved.get(timeout=5.0)
    assert path.is_file()
    assert path.parent == tmp_path
    assert list(run.channel.values) == ["c", "a"]
    assert run.sizes["time"] == 200
    np.testing.assert_array_equal(run.value.values, fed_values(3, 100, 200)[[2, 0]])
    np.testing.assert_array_equal(run.value.values, expected.value.values)
    np.testing.assert_array_equal(run.quality.values, expected.quality.values)
    np.testing.assert_array_equal(run.time.values, expected.time.values)
    assert run.time.values[0] == T0_NS + np.timedelta64(100, "ms")
    assert run.attrs["id"] == str(did)
    assert run.attrs["name"] == "sel"
    assert run.attrs["sample_rate"] == 1000.0
    assert run.attrs["metadata"]["operator"] == "ada"
    assert run.attrs["metadata"]["source"] == src.describe()
    assert isinstance(ev, DatasetSaved)
    assert ev.path == path
    assert ev.n_samples == 200
    assert ev.dataset_id == str(did)
    # stop() saves the dataset again, now up to the end
    final = dl.open_run(dm.datasets[did].path or path)
    assert final.sizes["time"] == 210


def test_dataset_saved_is_published_only_after_the_file_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = Push(["a"], 1000.0)
    dm = manager(src, tmp_path)
    checked: list[tuple[Path, bool, int]] = []
    publish = dm.bus.publish

    def checking_publish(ev: Event) -> None:
        if isinstance(ev, DatasetSaved):
            # at the very moment of announcing: complete, under its final name, readable
            n = dl.open_run(ev.path).sizes["time"] if ev.path.is_file() else -1
            checked.append((ev.path, ev.path.is_file(), n))
        publish(ev)

    monkeypatch.setattr(dm.bus, "publish", checking_publish)
    with dm:
        did = dm.create_dataset("d")
        feed_and_wait(dm, src, 40)
        path = dm.export_dataset(did)
    assert checked, "no DatasetSaved was published"
    assert checked[0] == (path, True, 40)
    assert all(ok and n >= 0 for _, ok, n in checked)
    assert not [p for p in files_under(tmp_path) if p.name.startswith(".")]


def test_a_dataset_whose_start_left_the_ring_exports_completely_from_the_recording(
    tmp_path: Path,
) -> None:
    src = Push(["a", "b"], 1000.0)
    dm = manager(src, tmp_path, record=True, buffer_samples=150, flush_interval=0.02)
    dm.start()
    feed_and_wait(dm, src, 20, recorded=True)
    did = dm.create_dataset("long", ["b"])
    for _ in range(10):
        feed_and_wait(dm, src, 100, recorded=True)  # the recorder keeps up: no gap
    buf = dm.buffers["src"]
    assert buf.first_index > 20, "the dataset's start must have left the ring"
    path = dm.export_dataset(did)
    run = dl.open_run(path)
    assert run.sizes["time"] == 1000
    np.testing.assert_array_equal(run.value.values, fed_values(2, 20, 1000)[[1]])
    assert (run.quality.values == dl.Quality.GOOD).all()
    assert (np.diff(run.time.values.astype(np.int64)) == 1_000_000).all()
    feed_and_wait(dm, src, 60)  # not yet durable when stop() comes
    dm.stop()  # saves the dataset once more, now up to the end
    final = dl.open_run(dm.datasets[did].path or path)
    assert final.sizes["time"] == 1060
    np.testing.assert_array_equal(final.value.values, fed_values(2, 20, 1060)[[1]])
    # and the user can still export it after stop
    again = dl.open_run(dm.export_dataset(did, path=tmp_path / "again.nc"))
    np.testing.assert_array_equal(again.value.values, final.value.values)


def test_a_fast_finite_source_with_a_tiny_ring_exports_every_sample_index(tmp_path: Path) -> None:
    def source() -> Simulated:
        return Simulated(["a", "b"], 1000.0, paced=False, duration=2.0, block_size=50, seed=11,
                         wall_clock=wall_clock)

    reference = read_all_values(source())
    dm = manager(source(), tmp_path, record=True, buffer_samples=200, flush_interval=0.02)
    did = dm.create_dataset("all", ["a", "b"])  # before start: from sample 0
    dm.start()
    assert dm.wait(timeout=20.0)
    wait_for(lambda: dm.status()["src"]["recorded"] == 2000, timeout=10.0, what="the recording")
    rec = dm.recorders["src"]
    run = dl.open_run(dm.export_dataset(did))
    assert run.sizes["time"] == 2000
    v, q = run.value.values, run.quality.values
    lost = np.isnan(v)
    # whatever the recorder lost to the (tiny) ring is a visible gap, the rest is exact
    assert int(lost[0].sum()) == rec.gap_samples == dm.buffers["src"].overflow_count
    assert (lost[0] == lost[1]).all()
    assert (q[lost] == dl.Quality.BAD).all()
    assert (q[~lost] == dl.Quality.GOOD).all()
    np.testing.assert_array_equal(v[~lost], reference[~lost])
    assert (np.diff(run.time.values.astype(np.int64)) > 0).all()
    dm.stop()
    [rec_path] = [p for p in dm.saved if p != dm.datasets[did].path]
    recorded = dl.open_run(rec_path)
    final = dl.open_run(dm.datasets[did].path or tmp_path)
    np.testing.assert_array_equal(final.value.values, recorded.value.values)


def test_without_a_recorder_a_lost_start_raises_naming_the_missing_span(tmp_path: Path) -> None:
    src = Push(["a"], 1000.0)
    dm = manager(src, tmp_path, record=False, buffer_samples=100)
    dm.start()
    old = dm.create_dataset("old")
    feed_and_wait(dm, src, 250)
    new = dm.create_dataset("new")
    feed_and_wait(dm, src, 30)
    with pytest.raises(dl.DataRangeError, match=r"samples 0\.\.179") as info:
        dm.export_dataset(old)
    assert "old" in str(info.value)
    # a dataset still in the ring exports fine
    assert dl.open_run(dm.export_dataset(new)).sizes["time"] == 30
    # stop() must still save everything it can: the other dataset (record=False: not the buffer)
    with pytest.raises(dl.DataRangeError):
        dm.stop()
    assert not running(dm)
    assert dl.open_run(dm.datasets[new].path or tmp_path).sizes["time"] == 30
    assert dm.saved == [dm.datasets[new].path], dm.saved


@pytest.mark.parametrize("record", [False, True], ids=["buffer-only", "recorded"])
def test_a_dataset_without_samples_exports_as_an_empty_run(tmp_path: Path, record: bool) -> None:
    src = Push(["a", "b"], 1000.0)
    dm = manager(src, tmp_path, record=record)
    with dm:
        feed_and_wait(dm, src, 10)
        did = dm.create_dataset("empty", ["b"])
        path = dm.export_dataset(did)  # nothing since creation
        run = dl.open_run(path)
        assert run.sizes["time"] == 0
        assert list(run.channel.values) == ["b"]
    # stop() saves it again without failing
    assert dl.open_run(dm.datasets[did].path or path).sizes["time"] == 0


@pytest.mark.parametrize("bad_id", [uuid.UUID(int=5), "not-a-uuid", str(uuid.UUID(int=9))],
                         ids=["unknown-uuid", "garbage", "unknown-str"])
def test_an_unknown_dataset_id_raises_a_daqlab_error(tmp_path: Path, bad_id: Any) -> None:
    dm = manager(Simulated(1, 100.0), tmp_path)
    dm.create_dataset("known")
    with pytest.raises(dl.DatasetNotFoundError, match="no dataset"):
        dm.export_dataset(bad_id)
    with pytest.raises(KeyError, match="known"):  # also a KeyError, like every NotFoundError
        dm.dataset_run(bad_id)


def test_dataset_channels_must_exist_and_come_from_one_source(tmp_path: Path) -> None:
    dm = manager({"x": Simulated(["a", "b"], 100.0), "y": Simulated(["c"], 50.0)}, tmp_path)
    with pytest.raises(dl.ConfigurationError, match="one source"):
        dm.create_dataset("mixed", ["a", "c"])
    with pytest.raises(dl.ChannelNotFoundError, match="'zz'"):
        dm.create_dataset("missing", ["a", "zz"])
    with pytest.raises(dl.ConfigurationError, match="several sources"):
        dm.create_dataset("all")  # which source?
    with pytest.raises(dl.ConfigurationError, match="name"):
        dm.create_dataset("  ", ["a"])
    with pytest.raises(dl.ConfigurationError, match="at least one channel"):
        dm.create_dataset("none", [])
    did = dm.create_dataset("ok", "c")
    assert dm.datasets[did].source == "y"
    assert dm.datasets[did].channels == ("c",)


# =========================================================================== saving


def test_stop_consolidates_the_recording_into_one_complete_file(tmp_path: Path) -> None:
    src = Simulated(["a", "b", "c"], 1000.0, paced=False, duration=1.5, block_size=100, seed=4)
    dm = manager(src, tmp_path, record=True, name="bench", metadata={"operator": "ada"},
                 flush_interval=0.05)
    with dm:
        assert dm.wait(timeout=20.0)
        folders = [p for p in tmp_path.iterdir() if p.suffix == ".daqrec"]
        assert len(folders) == 1, "recording into a .daqrec folder while running"
    buf = dm.buffers["src"]
    assert buf.written == 1500
    assert [p.suffix for p in dm.saved] == [".nc"]
    path = dm.saved[0]
    assert path.parent == tmp_path
    assert path.is_file()
    assert not [p for p in files_under(tmp_path) if p.suffix == ".daqrec" or p.is_dir()]
    assert not [p for p in files_under(tmp_path) if p.name.startswith(".")], "temporary files left"
    assert files_under(tmp_path) == [path]
    run = dl.open_run(path)
    assert run.sizes["time"] == buf.written
    snap = dm.snapshot()
    np.testing.assert_array_equal(run.value.values, snap.value.values)
    np.testing.assert_array_equal(run.quality.values, snap.quality.values)
    np.testing.assert_array_equal(run.time.values, snap.time.values)
    assert run.attrs["name"] == "bench"
    assert run.attrs["metadata"]["source"] == src.describe()
    assert run.attrs["metadata"]["operator"] == "ada"
    assert snap.attrs["metadata"]["source"] == src.describe()


def test_several_sources_each_get_a_buffer_and_a_recording(tmp_path: Path) -> None:
    fast = Simulated(["a", "b"], 1000.0, paced=False, duration=0.5, seed=1)
    slow = Simulated(["c"], 100.0, paced=False, duration=0.5, seed=2)
    dm = manager({"fast": fast, "slow": slow}, tmp_path, record=True)
    with dm:
        assert dm.wait(timeout=10.0)
    assert dm.snapshot(source="fast").sizes["time"] == 500
    assert dm.snapshot(source="slow").sizes["time"] == 50
    with pytest.raises(dl.ConfigurationError, match="source="):
        dm.snapshot()
    with pytest.raises(dl.SourceNotFoundError, match="nope") as info:
        dm.snapshot(source="nope")
    assert isinstance(info.value, KeyError)
    assert not isinstance(info.value, dl.ChannelNotFoundError)  # a source is not a channel
    runs = {str(r.attrs["metadata"]["source_name"]): r for r in map(dl.open_run, dm.saved)}
    assert set(runs) == {"fast", "slow"}
    assert runs["fast"].sizes["time"] == 500
    assert list(runs["fast"].channel.values) == ["a", "b"]
    assert runs["slow"].sizes["time"] == 50
    assert runs["slow"].attrs["sample_rate"] == 100.0
    assert runs["slow"].attrs["metadata"]["source"] == slow.describe()
    assert not [p for p in files_under(tmp_path) if p.name.startswith(".") or p.is_dir()]


def test_without_recording_stop_writes_nothing_unasked(tmp_path: Path) -> None:
    """record=False: stop() saves no buffer (the word says so); the ring stays in memory."""
    src = Simulated(["a"], 1000.0, paced=False, duration=0.3, seed=4)
    with manager(src, tmp_path, record=False) as dm:
        assert dm.wait(timeout=10.0)
    assert dm.saved == []
    assert files_under(tmp_path) == []
    run = dm.snapshot()  # still there after stop(), for an explicit save
    assert run.sizes["time"] == 300
    assert run.attrs["metadata"]["source"]["type"] == "daqlab.sources.Simulated"
    path = dl.save(run, tmp_path / "kept.nc")
    assert dl.open_run(path).sizes["time"] == 300


def test_without_recording_stop_saves_the_datasets_asked_for(tmp_path: Path) -> None:
    src = Push(["a", "b"], 1000.0)
    with manager(src, tmp_path, record=False) as dm:
        did = dm.create_dataset("kept", ["b"])
        feed_and_wait(dm, src, 40)
    path = dm.datasets[did].path
    assert path is not None
    assert dm.saved == [path]
    assert files_under(tmp_path) == [path]
    assert dl.open_run(path).sizes["time"] == 40


def test_autosave_writes_datasets_before_stop(tmp_path: Path) -> None:
    src = Simulated(["a", "b"], 1000.0, seed=3)
    dm = manager(src, tmp_path, autosave_interval=0.2)
    sub = dm.subscribe(kinds=DatasetSaved)
    with dm:
        did = dm.create_dataset("auto", ["b"])
        ev = sub.get(timeout=5.0)
        assert isinstance(ev, DatasetSaved), "no auto-save within 5 s at a 0.2 s interval"
        assert running(dm)
        assert ev.dataset_id == str(did)
        assert ev.path.is_file()
        run = dl.open_run(ev.path)
        assert run.sizes["time"] == ev.n_samples
        assert list(run.channel.values) == ["b"]
        assert run.attrs["metadata"]["source"] == src.describe()
        ev2 = sub.get(timeout=5.0)  # and again at the next interval
        assert isinstance(ev2, DatasetSaved)
        assert ev2.n_samples >= ev.n_samples
    assert dm.datasets[did].path == ev.path


# =========================================================================== subscriptions


def test_a_slow_callback_never_blocks_acquisition(tmp_path: Path) -> None:
    src = Simulated(["a"], 2000.0, seed=1)  # paced: ~100 NewData events a second
    dm = manager(src, tmp_path)
    release = threading.Event()
    calls: list[Event] = []

    def slow(ev: Event) -> None:
        calls.append(ev)
        release.wait(30.0)

    sub = dm.subscribe(slow, kinds=NewData, maxsize=2)
    buf = dm.buffers["src"]
    dm.start()
    try:
        wait_for(lambda: len(calls) == 1, timeout=5.0, what="the callback to be entered")
        w = buf.written
        wait_for(lambda: buf.written >= w + 400, timeout=5.0, what="samples despite a stuck callback")
        wait_for(lambda: sub.missed >= 5, timeout=5.0, what="missed events to be counted")
        assert len(calls) == 1
    finally:
        release.set()
        dm.stop()
    assert sub.closed
    assert sub._thread is not None
    assert not sub._thread.is_alive()


def test_stop_is_bounded_with_a_stuck_callback(tmp_path: Path) -> None:
    src = Simulated(["a"], 1000.0, seed=1)
    dm = manager(src, tmp_path, stop_timeout=0.3)
    release = threading.Event()
    entered = threading.Event()

    def stuck(ev: Event) -> None:
        entered.set()
        release.wait(30.0)

    sub = dm.subscribe(stuck)
    dm.start()
    try:
        assert entered.wait(5.0)
        t0 = time.monotonic()
        dm.stop()
        assert time.monotonic() - t0 < 3.0
    finally:
        release.set()
    assert sub._thread is not None
    sub._thread.join(5.0)
    assert not sub._thread.is_alive()


def test_a_callback_that_raises_is_counted_and_acquisition_goes_on(tmp_path: Path) -> None:
    src = Simulated(["a"], 2000.0, seed=1)
    dm = manager(src, tmp_path)

    def bad(ev: Event) -> None:
        raise RuntimeError("subscriber bug")

    sub = dm.subscribe(bad, kinds=NewData)
    buf = dm.buffers["src"]
    with dm:
        wait_for(lambda: sub.callback_errors >= 3, timeout=5.0, what="callback errors")
        w = buf.written
        wait_for(lambda: buf.written > w + 100, timeout=5.0, what="acquisition to go on")
        assert dm.errors == {}
    assert sub.callback_errors >= 3
    assert dm.errors == {}


def test_iteration_ends_after_stop_and_new_data_covers_every_sample(tmp_path: Path) -> None:
    src = Simulated(["a", "b"], 1000.0, paced=False, duration=0.5, block_size=50, seed=2)
    dm = manager(src, tmp_path)
    sub = dm.subscribe(kinds=NewData)
    got: list[NewData] = []

    def consume() -> None:
        for ev in sub:
            assert isinstance(ev, NewData)
            got.append(ev)

    t = threading.Thread(target=consume, name="daqlab-test-consume")
    t.start()
    with dm:
        assert dm.wait(timeout=10.0)
    t.join(5.0)
    assert not t.is_alive(), "iterating a subscription must end when the manager stops"
    assert sub.missed == 0
    assert [e.start for e in got] == list(range(0, 500, 50))
    assert all(e.n == 50 and e.source == "src" for e in got)
    snap = dm.snapshot()
    assert got[0].first_time == snap.time.values[0]
    assert got[-1].last_time == snap.time.values[-1]


def test_get_times_out_with_none_and_kinds_filter(tmp_path: Path) -> None:
    src = Simulated(["a"], 1000.0, seed=2)
    dm = manager(src, tmp_path)
    nothing = dm.subscribe(kinds=DatasetSaved)
    created = dm.subscribe(kinds=[DatasetCreated])
    everything = dm.subscribe(maxsize=100_000)
    with dm:
        t0 = time.monotonic()
        assert nothing.get(timeout=0.1) is None
        assert time.monotonic() - t0 >= 0.09
        dm.create_dataset("one")
        wait_for(lambda: dm.buffers["src"].written >= 100, timeout=5.0)
        dm.create_dataset("two")
        w = dm.buffers["src"].written
        wait_for(lambda: dm.buffers["src"].written > w, timeout=5.0)  # "two" is not empty
    assert nothing.drain() == [] or all(isinstance(e, DatasetSaved) for e in nothing.drain())
    evs = created.drain()
    assert [type(e) for e in evs] == [DatasetCreated, DatasetCreated]
    assert [e.name for e in evs if isinstance(e, DatasetCreated)] == ["one", "two"]
    kinds = {type(e) for e in everything.drain()}
    assert {NewData, DatasetCreated, DatasetSaved} <= kinds


def test_subscribe_uses_the_configured_queue_size(tmp_path: Path) -> None:
    dm = manager(Simulated(1, 100.0), tmp_path, event_queue_size=7)
    assert dm.subscribe().maxsize == 7
    assert dm.subscribe(maxsize=3).maxsize == 3
    dm.bus.close()


def test_snapshot_seconds(tmp_path: Path) -> None:
    src = Simulated(["a"], 1000.0, paced=False, duration=1.0, seed=2)
    with manager(src, tmp_path) as dm:
        assert dm.wait(timeout=10.0)
    assert dm.snapshot(0.25).sizes["time"] == 250
    assert dm.snapshot(0).sizes["time"] == 0
    assert dm.snapshot(100.0).sizes["time"] == 1000
    with pytest.raises(dl.ConfigurationError, match="seconds"):
        dm.snapshot(-1.0)


def test_a_failing_autosave_is_logged_and_acquisition_goes_on(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Auto-save errors were swallowed without a word; now they go to the 'daqlab' logger."""
    out = tmp_path / "out"
    src = Push(["a"], 1000.0)
    dm = manager(src, tmp_path, output_dir=out, autosave_interval=0.05)
    with caplog.at_level(logging.WARNING, logger="daqlab"):
        dm.start()
        try:
            dm.create_dataset("kept")
            out.write_text("a file where the output folder should be")  # every save now fails
            wait_for(lambda: any("auto-save" in r.getMessage() for r in caplog.records), timeout=20,
                     what="the auto-save failure to be logged")
            assert running(dm)
            feed_and_wait(dm, src, 10)  # acquisition goes on
        finally:
            with pytest.raises(dl.StorageError):  # stop() tries again and says what failed
                dm.stop()
    record = next(r for r in caplog.records if "auto-save" in r.getMessage())
    assert record.name.startswith("daqlab")
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], dl.StorageError)


def test_an_output_dir_that_is_a_file_is_a_storage_error_at_start(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("not a folder")
    dm = manager(Simulated(["a"], 100.0), tmp_path, output_dir=tmp_path / "out", record=True)
    with pytest.raises(dl.StorageError, match=r"cannot make the output folder .*out"):
        dm.start()  # was a raw FileExistsError
    assert not running(dm)


def test_several_failures_at_stop_are_raised_together(tmp_path: Path) -> None:
    """Only the first failure was kept; a SaveErrors group now holds each (a DaqlabError too)."""
    src = Push(["a"], 1000.0)
    dm = manager(src, tmp_path, buffer_samples=100)
    dm.start()
    lost = [dm.create_dataset("old-1"), dm.create_dataset("old-2")]
    feed_and_wait(dm, src, 250)  # the ring no longer holds their start, and nothing recorded it
    kept = dm.create_dataset("new")
    feed_and_wait(dm, src, 30)
    with pytest.raises(dl.SaveErrors) as info:
        dm.stop()
    assert isinstance(info.value, dl.DaqlabError)
    assert [type(e) for e in info.value.exceptions] == [dl.DataRangeError, dl.DataRangeError]
    messages = " ".join(str(e) for e in info.value.exceptions)
    assert all(dm.datasets[d].name in messages for d in lost)
    assert dm.saved == [dm.datasets[kept].path]  # everything else was saved
    picked, rest = info.value.split(dl.DataRangeError)  # what except* does keeps the group's type
    assert isinstance(picked, dl.SaveErrors)
    assert rest is None


class _Unplugged(Simulated):
    def start(self) -> None:
        raise dl.SourceError("device unplugged")


def test_a_start_that_fails_leaves_nothing_running_and_no_empty_recordings(tmp_path: Path) -> None:
    before = set(daqlab_threads())
    good = Simulated(["g0"], 100.0, paced=False)
    dm = dl.DataManager({"good": good, "bad": _Unplugged(["b0"], 100.0)}, output_dir=tmp_path,
                        autosave_interval=None, handle_sigint=False)
    with pytest.raises(dl.SourceError, match="device unplugged"):
        dm.start()
    assert not dm.running
    wait_for(lambda: set(daqlab_threads()) <= before, timeout=20.0)
    assert list(tmp_path.iterdir()) == []  # the recordings it had begun held no sample
    assert dm.recorders == {}
