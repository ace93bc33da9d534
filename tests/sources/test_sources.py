"""The simulated source: protocol, seeding, waveforms, pacing with an injected clock."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, cast

import numpy as np
import pytest
import scipy.signal
from numpy.typing import NDArray

import daqlab as dl
from daqlab.sources import Chirp, Noise, Samples, Simulated, Sine, Source, Square
from tests.helpers import FakeClock, read_to_end

T0 = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)
T0_NS = np.datetime64("2024-01-01T12:00:00", "ns")


def wall_clock() -> dt.datetime:
    return T0




def read_all(src: Simulated, max_reads: int = 100_000) -> tuple[NDArray[np.float64],
                                                                 NDArray[np.datetime64],
                                                                 list[int]]:
    """Start an unpaced, finite source and read it to the end."""
    src.start()
    blocks = read_to_end(src, max_reads)
    values = [b.values for b in blocks]
    times = [b.times for b in blocks]
    sizes = [len(b) for b in blocks]
    return np.concatenate(values, axis=1), np.concatenate(times), sizes


def unpaced(channels: Any = ("a",), rate: float = 1000.0, **kw: Any) -> Simulated:
    kw.setdefault("wall_clock", wall_clock)
    kw.setdefault("duration", 1.0)
    return Simulated(channels, rate, paced=False, **kw)


def series(signal: Any, rate: float = 1000.0, duration: float = 1.0, seed: int = 0,
           ) -> NDArray[np.float64]:
    values, _, _ = read_all(unpaced(["a"], rate, seed=seed, duration=duration,
                                    signals={"a": signal}, block_size=97))
    return np.asarray(values[0], dtype=np.float64)


# --------------------------------------------------------------------------- protocol


def test_simulated_is_a_source() -> None:
    src = Simulated(["a", "b"], 100.0)
    assert isinstance(src, Source)
    assert [c.name for c in src.channels] == ["a", "b"]
    assert all(isinstance(c, dl.Channel) for c in src.channels)
    assert src.sample_rate == 100.0
    assert src.finished is False


def test_channels_may_be_a_count_or_channel_objects() -> None:
    assert [c.name for c in Simulated(3).channels] == ["ch0", "ch1", "ch2"]
    ch = dl.Channel("t", "degC", range=(0, 100))
    assert Simulated([ch]).channels == (ch,)


def test_describe_is_json() -> None:
    src = Simulated(["a", "b"], 500.0, seed=7, duration=2.0,
                    signals={"a": Sine(5.0, amplitude=2.0), "b": [Square(3.0), Noise(0.5)]})
    desc = src.describe()
    assert json.loads(json.dumps(desc)) == desc
    assert desc["type"] == "daqlab.sources.Simulated"
    assert desc["sample_rate"] == 500.0
    assert desc["seed"] == 7
    assert desc["paced"] is True
    assert desc["channels"] == ["a", "b"]
    assert desc["duration"] == 2.0
    assert desc["signals"]["a"] == [
        {"kind": "Sine", "frequency": 5.0, "amplitude": 2.0, "phase": 0.0, "offset": 0.0}
    ]
    assert [s["kind"] for s in desc["signals"]["b"]] == ["Square", "Noise"]
    assert desc["signals"]["b"][1]["std"] == 0.5
    assert Simulated(1).describe()["duration"] is None


def test_read_before_start_is_an_error() -> None:
    src = unpaced()
    with pytest.raises(dl.SourceError, match=r"read\(\) before start\(\).*source\.start\(\)") as info:
        src.read(timeout=0.0)
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, dl.DaqlabError)


def test_start_twice_is_an_error() -> None:
    src = unpaced()
    src.start()
    with pytest.raises(dl.SourceError, match="started already"):
        src.start()


def test_blocks_are_samples() -> None:
    src = unpaced(["a", "b"], block_size=16)
    src.start()
    block = src.read(timeout=0.0)
    assert isinstance(block, Samples)
    assert block.values.shape == (2, 16)
    assert block.values.dtype == np.float64
    assert block.times.dtype == np.dtype("datetime64[ns]")
    assert block.quality is None
    assert len(block) == 16
    assert src.emitted == 16


# --------------------------------------------------------------------------- seeding


def test_same_seed_same_samples_whatever_the_block_size() -> None:
    signals = {"a": [Sine(13.0), Noise(1.0)], "b": Noise(2.0), "c": [Chirp(1.0, 90.0, 0.3),
                                                                     Noise(0.1)]}
    small, t_small, sizes_small = read_all(
        unpaced(["a", "b", "c"], seed=1234, signals=signals, block_size=7))
    big, t_big, sizes_big = read_all(
        unpaced(["a", "b", "c"], seed=1234, signals=signals, block_size=1000))
    assert set(sizes_small[:-1]) == {7}
    assert sizes_big == [1000]
    np.testing.assert_array_equal(small, big)
    np.testing.assert_array_equal(t_small, t_big)
    # the default signal (sine plus noise) is seeded the same way
    d7, _, _ = read_all(unpaced(["x", "y"], seed=5, block_size=7))
    d1000, _, _ = read_all(unpaced(["x", "y"], seed=5, block_size=1000))
    np.testing.assert_array_equal(d7, d1000)


def test_different_seeds_differ() -> None:
    a, _, _ = read_all(unpaced(["x", "y"], seed=1, duration=0.1))
    b, _, _ = read_all(unpaced(["x", "y"], seed=2, duration=0.1))
    assert a.shape == b.shape == (2, 100)
    assert not np.any(a == b)


def test_channels_get_independent_noise() -> None:
    values, _, _ = read_all(unpaced(["x", "y"], seed=3, signals={"x": Noise(), "y": Noise()}))
    assert not np.any(values[0] == values[1])
    corr = np.asarray(np.corrcoef(values))
    assert abs(corr[0, 1]) < 0.1


def test_seed_must_be_a_whole_number() -> None:
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(dl.ConfigurationError, match=r"seed must be a whole number >= 0"):
            Simulated(1, seed=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- waveforms


def test_sine_matches_the_formula() -> None:
    rate = 1000.0
    got = series(Sine(frequency=12.5, amplitude=3.0, phase=0.7, offset=-1.0), rate)
    t = np.arange(1000) / rate
    np.testing.assert_allclose(got, 3.0 * np.sin(2 * np.pi * 12.5 * t + 0.7) - 1.0,
                               rtol=0, atol=1e-12)


def test_square_is_plus_minus_amplitude() -> None:
    got = series(Square(frequency=10.0, amplitude=2.5), 1000.0)
    assert set(np.unique(got).tolist()) == {-2.5, 2.5}
    # 10 Hz at 1 kHz: 50 samples high, then 50 low
    np.testing.assert_array_equal(got[:50], 2.5)
    np.testing.assert_array_equal(got[50:100], -2.5)
    # samples falling exactly on an edge may go either way in floating point
    assert np.mean(got == 2.5) == pytest.approx(0.5, abs=0.005)


def test_square_duty_and_offset() -> None:
    got = series(Square(frequency=4.0, amplitude=1.0, duty=0.25, offset=10.0), 1000.0)
    assert set(np.unique(got).tolist()) == {9.0, 11.0}
    assert np.mean(got == 11.0) == pytest.approx(0.25, abs=0.005)


def test_noise_has_the_given_std() -> None:
    got = series(Noise(std=2.5), 1000.0, duration=50.0, seed=42)
    assert got.shape == (50_000,)
    assert np.std(got) == pytest.approx(2.5, rel=0.02)
    assert abs(np.mean(got)) < 0.05
    assert np.all(series(Noise(std=0.0), 100.0) == 0.0)


def _crossing_rate(x: NDArray[np.float64], rate: float) -> float:
    """Frequency estimated from sign changes (two per period)."""
    crossings = np.count_nonzero(np.signbit(x[1:]) != np.signbit(x[:-1]))
    return crossings / 2 / (len(x) / rate)


def test_chirp_sweeps_its_frequency() -> None:
    rate, f0, f1, period = 4000.0, 20.0, 200.0, 2.0
    got = series(Chirp(f0=f0, f1=f1, period=period, amplitude=0.5), rate, duration=4.0)
    t = np.arange(got.size) / rate
    expected = 0.5 * scipy.signal.chirp(np.mod(t, period), f0=f0, t1=period, f1=f1)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert np.max(np.abs(got)) == pytest.approx(0.5, rel=1e-3)
    # instantaneous frequency f0 + (f1 - f0) t / period, in 0.25 s windows
    win = int(0.25 * rate)
    for start in (0.0, 0.5, 1.0, 1.5):
        i = int(start * rate)
        mid = start + 0.125
        want = f0 + (f1 - f0) * mid / period
        assert _crossing_rate(got[i:i + win], rate) == pytest.approx(want, rel=0.1), start
    # it repeats every period
    n = int(period * rate)
    np.testing.assert_allclose(got[n:2 * n], got[:n], atol=1e-9)


def test_mixing_sums_the_components() -> None:
    parts = [Sine(5.0, amplitude=2.0), Square(3.0, amplitude=0.5), Chirp(1.0, 40.0), Noise(0.3)]
    mixed, _, _ = read_all(unpaced(["a", "b"], seed=9, signals={"a": parts, "b": Noise(1.0)}))
    total = np.zeros(1000)
    for p in parts:
        one, _, _ = read_all(unpaced(["a", "b"], seed=9, signals={"a": p, "b": Noise(1.0)}))
        total += one[0]
        np.testing.assert_array_equal(one[1], mixed[1])
    np.testing.assert_allclose(mixed[0], total, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("signal", "pattern"),
    [
        (Sine(500.0), r"Sine\(frequency=500\.0.* on channel 'a' reaches 500\.0 Hz, at or above "
                      r"the Nyquist frequency 500\.0 Hz of a 1000\.0 Hz source.*raise sample_rate"),
        (Square(750.0), r"Square.*reaches 750\.0 Hz.*Nyquist"),
        (Chirp(10.0, 600.0), r"Chirp.*reaches 600\.0 Hz.*Nyquist"),
        ([Sine(10.0), Sine(499.0), Sine(501.0)], r"Sine\(frequency=501\.0.*Nyquist"),
    ],
    ids=["sine-at-nyquist", "square-above", "chirp-end-above", "one-of-a-mix"],
)
def test_nyquist_violation_is_refused(signal: Any, pattern: str) -> None:
    with pytest.raises(dl.ConfigurationError, match=pattern) as info:
        Simulated(["a"], 1000.0, signals={"a": signal})
    assert isinstance(info.value, ValueError)


def test_unknown_channel_in_signals_is_refused() -> None:
    with pytest.raises(dl.ConfigurationError,
                       match=r"signals name channel\(s\) \['ai9', 'x'\] that this source does "
                             r"not have; its channels are \['a', 'b'\]"):
        Simulated(["a", "b"], 100.0, signals={"a": Sine(1.0), "x": Noise(), "ai9": Noise()})


def test_signal_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(dl.ConfigurationError, match=r"must be Sine, Square, Chirp or Noise"):
        Simulated(["a"], 100.0, signals={"a": [Sine(1.0), "noise"]})  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: Sine(-1.0), r"Sine frequency must be finite and >= 0; got -1\.0"),
        (lambda: Sine(1.0, amplitude=float("nan")), r"Sine amplitude must be finite"),
        (lambda: Square(1.0, duty=1.5), r"duty must be in \[0, 1\]; got 1\.5"),
        (lambda: Chirp(1.0, 2.0, period=0.0), r"Chirp period must be finite and > 0; got 0\.0"),
        (lambda: Noise(-0.1), r"Noise std must be finite and >= 0; got -0\.1"),
        (lambda: Noise(cast(Any, "1")), r"Noise std must be a number; got '1'"),
    ],
    ids=["sine-negative-frequency", "sine-nan-amplitude", "square-duty", "chirp-period",
         "noise-negative", "noise-str"],
)
def test_bad_waveform_parameters(make: Any, pattern: str) -> None:
    with pytest.raises(dl.ConfigurationError, match=pattern):
        make()


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"sample_rate": 0.0}, r"sample_rate must be finite and > 0 Hz"),
        ({"block_duration": 0.0}, r"block_duration must be finite and > 0; got 0\.0"),
        ({"block_size": 0}, r"block_size must be a whole number >= 1; got 0"),
        ({"block_size": 2.5}, r"block_size must be a whole number >= 1; got 2\.5"),
        ({"duration": -1.0}, r"duration must be finite and >= 0; got -1\.0"),
    ],
    ids=["rate", "block-duration", "block-size-zero", "block-size-float", "duration"],
)
def test_bad_source_settings(kwargs: dict[str, Any], pattern: str) -> None:
    kwargs.setdefault("sample_rate", 100.0)
    with pytest.raises(dl.ConfigurationError, match=pattern):
        Simulated(["a"], **kwargs)


# --------------------------------------------------------------------------- duration and time


@pytest.mark.parametrize(
    ("rate", "duration", "block_size", "expected"),
    [(1000.0, 0.25, 7, 250), (1000.0, 0.25, 1000, 250), (48_000.0, 0.1, 4096, 4800),
     (10.0, 0.0, 3, 0), (3.0, 2.0, 4, 6)],
    ids=["small-blocks", "one-block", "audio-rate", "zero-duration", "slow"],
)
def test_duration_gives_exactly_that_many_samples(
    rate: float, duration: float, block_size: int, expected: int
) -> None:
    src = unpaced(["a", "b"], rate, duration=duration, block_size=block_size)
    src.start()
    total = 0
    while not src.finished:
        block = src.read(timeout=0.0)
        assert block is not None
        assert len(block) <= block_size
        total += len(block)
    assert total == expected
    assert src.emitted == expected
    assert src.read(timeout=0.0) is None
    assert src.finished


def test_timestamps_are_t0_plus_k_over_rate() -> None:
    rate = 3.0  # 1/3 s does not divide a nanosecond: rounding must not drift across blocks
    _, times, _ = read_all(unpaced(["a"], rate, duration=100.0, block_size=7))
    k = np.arange(300)
    expected = T0_NS + np.rint(k * 1e9 / rate).astype(np.int64).astype("timedelta64[ns]")
    np.testing.assert_array_equal(times, expected)
    assert times[0] == T0_NS
    assert times[-1] == np.datetime64("2024-01-01T12:01:39.666666667", "ns")


def test_timestamps_with_exact_step() -> None:
    _, times, _ = read_all(unpaced(["a"], 1000.0, duration=0.5, block_size=64))
    steps = np.diff(times.astype(np.int64))
    assert set(steps.tolist()) == {1_000_000}
    assert times[0] == T0_NS


def test_naive_wall_clock_is_taken_as_utc_and_aware_converted() -> None:
    tz = dt.timezone(dt.timedelta(hours=9))
    src = Simulated(["a"], 10.0, paced=False, duration=0.1,
                    wall_clock=lambda: dt.datetime(2024, 1, 1, 21, 0, tzinfo=tz))
    src.start()
    block = src.read(timeout=0.0)
    assert block is not None
    assert block.times[0] == T0_NS


def test_stop_ends_an_unpaced_source() -> None:
    src = unpaced(duration=None, block_size=10)
    src.start()
    assert src.read(timeout=0.0) is not None
    src.stop()
    assert src.read(timeout=0.0) is None


# --------------------------------------------------------------------------- paced, fake clock


RATE = 1024.0          # powers of two keep the fake clock's arithmetic exact
MIN_BLOCK = 16         # block_duration 1/64 s at 1024 Hz
BLOCK_DURATION = MIN_BLOCK / RATE


def paced(clock: FakeClock, **kw: Any) -> Simulated:
    return Simulated(["a", "b"], RATE, seed=1, block_duration=BLOCK_DURATION, clock=clock,
                     sleep=clock.sleep, wall_clock=wall_clock, **kw)


def test_paced_returns_nothing_before_a_min_block_is_due() -> None:
    clock = FakeClock()
    src = paced(clock)
    src.start()
    assert src.read(timeout=0.0) is None
    clock.advance((MIN_BLOCK - 1) / RATE)
    assert src.read(timeout=0.0) is None
    assert src.emitted == 0
    # a short timeout sleeps only that long, and still nothing is due
    clock.sleeps.clear()
    assert src.read(timeout=0.25 / RATE) is None
    assert clock.sleeps == [0.25 / RATE]
    assert src.emitted == 0


def test_paced_read_waits_until_the_block_is_due() -> None:
    clock = FakeClock()
    src = paced(clock)
    src.start()
    clock.advance(4 / RATE)
    block = src.read(timeout=1.0)
    assert block is not None
    assert len(block) == MIN_BLOCK
    # it slept exactly the time left until the 16th sample was due, no more
    assert clock.sleeps == [(MIN_BLOCK - 4) / RATE]
    assert block.times[0] == T0_NS
    assert src.emitted == MIN_BLOCK


def test_paced_blocks_follow_the_clock() -> None:
    clock = FakeClock()
    src = paced(clock)
    src.start()
    got: list[int] = []
    for step in (16, 20, 40, 3, 13, 64):
        clock.advance(step / RATE)
        block = src.read(timeout=0.0)
        got.append(0 if block is None else len(block))
    # due counts: 16, 36, 76, 79, 92, 156 samples; a block needs 16 new ones
    assert got == [16, 20, 40, 0, 16, 64]
    assert src.emitted == 156
    assert sum(clock.sleeps) == 0.0  # timeout=0: never waited


def test_paced_catch_up_is_capped_at_ten_min_blocks() -> None:
    clock = FakeClock()
    src = paced(clock)
    src.start()
    clock.advance(1000 / RATE)
    sizes = []
    while True:
        block = src.read(timeout=0.0)
        if block is None:
            break
        sizes.append(len(block))
    assert sizes == [160] * 6 + [40]
    assert src.emitted == 1000
    assert clock.now == 100.0 + 1000 / RATE  # no sleeping while catching up


def test_paced_timestamps_are_exact_across_blocks() -> None:
    clock = FakeClock()
    src = paced(clock)
    src.start()
    times: list[NDArray[np.datetime64]] = []
    values: list[NDArray[np.float64]] = []
    for step in (17, 250, 33, 500, 200):
        clock.advance(step / RATE)
        block = src.read(timeout=0.0)
        while block is not None:
            times.append(block.times)
            values.append(block.values)
            block = src.read(timeout=0.0)
    t = np.concatenate(times)
    assert t.size == 1000
    expected = T0_NS + np.rint(np.arange(1000) * 1e9 / RATE).astype("timedelta64[ns]")
    np.testing.assert_array_equal(t, expected)
    # and the samples equal an unpaced source with the same seed
    ref, _, _ = read_all(Simulated(["a", "b"], RATE, seed=1, paced=False, block_size=1000,
                                   duration=1000 / RATE, wall_clock=wall_clock))
    np.testing.assert_array_equal(np.concatenate(values, axis=1), ref)


def test_paced_duration_finishes_with_exactly_duration_times_rate() -> None:
    clock = FakeClock()
    src = paced(clock, duration=100 / RATE)
    src.start()
    total = 0
    for _ in range(50):
        block = src.read(timeout=1.0)
        if block is not None:
            total += len(block)
        if src.finished:
            break
    assert src.finished
    assert total == 100
    # the last, partial block (100 = 6 * 16 + 4) was delivered without waiting for 16
    assert src.read(timeout=1.0) is None


def test_paced_stop_wakes_and_ends() -> None:
    clock = FakeClock()
    src = paced(clock)
    src.start()
    src.stop()
    clock.advance(1.0)
    assert src.read(timeout=1.0) is None
    assert src.emitted == 0


# --------------------------------------------------------------------------- settings refused (issue 12)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"paced": "no"}, r"paced must be True or False; got 'no' \(str\)"),
        ({"paced": 0}, r"paced must be True or False; got 0 \(int\)"),
        ({"signals": [Sine(1.0)]}, r"signals must map channel names to waveforms; got list"),
        ({"signals": Sine(1.0)}, r"signals must map channel names to waveforms; got Sine"),
        ({"signals": {"a": 5}}, r"signal for channel 'a' must be Sine.*; got 5"),
        ({"signals": {"a": "noise"}}, r"signal for channel 'a' must be Sine.*; got 'noise'"),
        ({"signals": {1: Sine(1.0), "zz": Noise()}}, r"signals name channel\(s\) \['zz', 1\]"),
        ({"block_duration": 1e307, "sample_rate": 1e3},
         r"block_duration \* sample_rate must be finite"),
        ({"duration": 1e307, "sample_rate": 1e3}, r"duration \* sample_rate must be finite"),
        ({"name": 5}, r"name must be a str; got 5"),
        ({"sleep": "zzz"}, r"sleep must be a callable.*got 'zzz'"),
    ],
    ids=["paced-str", "paced-int", "signals-list", "signals-waveform", "signal-int", "signal-str",
         "signals-mixed-keys", "block-duration-overflow", "duration-overflow", "name-int",
         "sleep-str"],
)
def test_bad_settings_are_configuration_errors_not_builtin_ones(kwargs: dict[str, Any], pattern: str) -> None:
    """These gave raw TypeError/OverflowError or were silently taken (bool('no') is True)."""
    kwargs.setdefault("sample_rate", 100.0)
    with pytest.raises(dl.ConfigurationError, match=pattern):
        Simulated(["a"], **kwargs)
