"""A seeded simulated source: sums of sine, square, chirp and noise per channel."""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

from daqlab.checks import real, whole
from daqlab.errors import ConfigurationError
from daqlab.model import ChannelLike, to_channels
from daqlab.run import check_sample_rate, sample_times
from daqlab.sources._base import SourceBase, check_flag
from daqlab.sources._protocol import Samples

__all__ = ["Chirp", "Noise", "Simulated", "Sine", "Square", "Waveform"]


def _check_real(label: str, value: float, *, positive: bool = False, nonneg: bool = False) -> float:
    return real(value, label, lower=0 if positive or nonneg else None, lower_open=positive)


@dataclass(frozen=True)
class Sine:
    """``amplitude * sin(2 pi frequency t + phase) + offset``."""

    frequency: float
    """Hz, below the Nyquist frequency of the source."""
    amplitude: float = 1.0
    phase: float = 0.0
    """Radians."""
    offset: float = 0.0

    def __post_init__(self) -> None:
        _check_real("Sine frequency", self.frequency, nonneg=True)
        for k in ("amplitude", "phase", "offset"):
            _check_real(f"Sine {k}", getattr(self, k))

    @property
    def max_frequency(self) -> float:
        return float(self.frequency)

    def generate(self, t: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
        return self.amplitude * np.sin(2 * np.pi * self.frequency * t + self.phase) + self.offset


@dataclass(frozen=True)
class Square:
    """A square wave between ``offset - amplitude`` and ``offset + amplitude``."""

    frequency: float
    amplitude: float = 1.0
    duty: float = 0.5
    """Fraction of the period spent high, in [0, 1]."""
    offset: float = 0.0

    def __post_init__(self) -> None:
        _check_real("Square frequency", self.frequency, nonneg=True)
        _check_real("Square amplitude", self.amplitude)
        _check_real("Square offset", self.offset)
        d = _check_real("Square duty", self.duty)
        if not 0.0 <= d <= 1.0:
            raise ConfigurationError(f"Square duty must be in [0, 1]; got {self.duty!r}.")

    @property
    def max_frequency(self) -> float:
        return float(self.frequency)

    def generate(self, t: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
        import scipy.signal  # here, not at import: it costs ~1 s and daqlab imports light

        wave = scipy.signal.square(2 * np.pi * self.frequency * t, duty=self.duty)
        return self.amplitude * np.asarray(wave, dtype=np.float64) + self.offset


@dataclass(frozen=True)
class Chirp:
    """A linear sweep from ``f0`` to ``f1`` over ``period`` seconds, repeated."""

    f0: float
    f1: float
    period: float = 1.0
    amplitude: float = 1.0

    def __post_init__(self) -> None:
        _check_real("Chirp f0", self.f0, nonneg=True)
        _check_real("Chirp f1", self.f1, nonneg=True)
        _check_real("Chirp period", self.period, positive=True)
        _check_real("Chirp amplitude", self.amplitude)

    @property
    def max_frequency(self) -> float:
        return float(max(self.f0, self.f1))

    def generate(self, t: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
        import scipy.signal

        tm = np.mod(t, self.period)
        wave = scipy.signal.chirp(tm, f0=self.f0, t1=self.period, f1=self.f1, method="linear")
        return self.amplitude * np.asarray(wave, dtype=np.float64)


@dataclass(frozen=True)
class Noise:
    """Gaussian white noise with standard deviation ``std``, from the channel's seeded stream."""

    std: float = 1.0

    def __post_init__(self) -> None:
        _check_real("Noise std", self.std, nonneg=True)

    @property
    def max_frequency(self) -> float:
        return 0.0

    def generate(self, t: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
        noise: NDArray[np.float64] = rng.standard_normal(size=t.shape)
        noise *= self.std
        return noise


Waveform: TypeAlias = Sine | Square | Chirp | Noise
SignalSpec: TypeAlias = Waveform | Sequence[Waveform]


def _default_signal(i: int, rate: float) -> tuple[Waveform, ...]:
    # A distinct, slowly varying sine per channel plus a little noise: readable in a live view.
    f = min(1.0 + i, rate / 10.0)
    return (Sine(frequency=f, amplitude=1.0 + 0.25 * (i % 4)), Noise(0.05))


class Simulated(SourceBase):
    """A seeded source of synthetic signals, paced to real time or as fast as possible.

    Parameters
    ----------
    channels
        Names, :class:`~daqlab.Channel` objects, or a count (``ch0``...).
    sample_rate
        Hz, > 0.
    seed
        Seeds every channel's noise stream; equal seeds give equal samples
        whatever the block sizes.
    signals
        Per channel name, a waveform or a list of waveforms to add up
        (:class:`Sine`, :class:`Square`, :class:`Chirp`, :class:`Noise`). Channels
        not named get a default sine plus noise.
    paced
        True: deliver samples as real time passes (sample ``k`` stamped
        ``t0 + k / sample_rate``, ``t0`` the UTC time at ``start()``). False:
        as fast as the reader asks, in blocks of ``block_size``.
    block_duration
        Paced blocks are at least this long (s); a late reader catches up in
        blocks of up to ten times that.
    block_size
        Samples per block when not paced (default: ``block_duration`` worth).
    duration
        Stop after this many seconds of samples (``None``: run until stopped).
    clock, sleep, wall_clock
        Injectable time: a monotonic clock in seconds, a sleep function, and
        the UTC wall clock that stamps ``t0``.

    Examples
    --------
    >>> src = Simulated(["a", "b"], 1000.0, seed=1, paced=False, duration=0.01,
    ...                 signals={"a": Sine(50.0), "b": [Square(10.0), Noise(0.1)]},
    ...                 wall_clock=lambda: datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    >>> src.start()
    >>> block = src.read(timeout=1.0)
    >>> block.values.shape, str(block.times[1])
    ((2, 10), '2024-01-01T00:00:00.001000000')
    >>> src.finished
    True
    """

    def __init__(
        self,
        channels: Iterable[ChannelLike] | int = 1,
        sample_rate: float = 1000.0,
        *,
        seed: int = 0,
        signals: Mapping[str, SignalSpec] | None = None,
        paced: bool = True,
        block_duration: float = 0.01,
        block_size: int | None = None,
        duration: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        wall_clock: Callable[[], _dt.datetime] | None = None,
        name: str = "",
    ) -> None:
        super().__init__(to_channels(channels), check_sample_rate(sample_rate), name=name,
                         clock=clock, sleep=sleep, wall_clock=wall_clock)
        self.seed = whole(seed, "seed")
        self.paced = check_flag("paced", paced)
        bd = _check_real("block_duration", block_duration, positive=True)
        self._min_block = max(1, round(_check_real("block_duration * sample_rate", self._rate * bd)))
        self._max_block = 10 * self._min_block
        self._block_size = (self._min_block if block_size is None
                            else whole(block_size, "block_size", minimum=1))
        self._total: int | None = None
        if duration is not None:
            d = _check_real("duration", duration, nonneg=True)
            self._total = round(_check_real("duration * sample_rate", d * self._rate))
        if signals is not None and not isinstance(signals, Mapping):
            raise ConfigurationError(
                f"signals must map channel names to waveforms; got {type(signals).__name__} "
                f"{signals!r}. Pass e.g. signals={{'ch0': Sine(5.0)}}."
            )
        self._signals = self._resolve_signals(signals or {})
        self._emitted = 0
        self._rngs: list[np.random.Generator] = []

    def _resolve_signals(self, signals: Mapping[str, SignalSpec]) -> tuple[tuple[Waveform, ...], ...]:
        names = [c.name for c in self._channels]
        unknown = sorted(set(signals) - set(names), key=repr)  # keys may be of mixed types
        if unknown:
            raise ConfigurationError(
                f"signals name channel(s) {unknown} that this source does not have; "
                f"its channels are {names}."
            )
        out = []
        nyquist = self._rate / 2
        for i, name in enumerate(names):
            spec = signals.get(name)
            parts: tuple[Waveform, ...]
            if spec is None:
                parts = _default_signal(i, self._rate)
            elif isinstance(spec, (Sine, Square, Chirp, Noise)):
                parts = (spec,)
            elif isinstance(spec, (list, tuple)):
                parts = tuple(spec)
            else:  # a str or a number: tuple() would split it or fail
                raise ConfigurationError(
                    f"signal for channel {name!r} must be Sine, Square, Chirp or Noise "
                    f"(or a list of them); got {spec!r}."
                )
            for p in parts:
                if not isinstance(p, (Sine, Square, Chirp, Noise)):
                    raise ConfigurationError(
                        f"signal for channel {name!r} must be Sine, Square, Chirp or Noise "
                        f"(or a list of them); got {p!r}."
                    )
                if p.max_frequency >= nyquist:
                    raise ConfigurationError(
                        f"{p!r} on channel {name!r} reaches {p.max_frequency} Hz, at or above "
                        f"the Nyquist frequency {nyquist} Hz of a {self._rate} Hz source; it "
                        "would alias. Lower the frequency or raise sample_rate."
                    )
            out.append(parts)
        return tuple(out)

    # ------------------------------------------------------------------ protocol
    @property
    def finished(self) -> bool:
        return self._total is not None and self._emitted >= self._total

    @property
    def emitted(self) -> int:
        """Samples delivered since ``start()``."""
        return self._emitted

    def start(self) -> None:
        super().start()
        seqs = np.random.SeedSequence(self.seed).spawn(len(self._channels))
        self._rngs = [np.random.default_rng(s) for s in seqs]

    def read(self, timeout: float) -> Samples | None:
        self._check_started()
        if self._stop_event.is_set() or self.finished:
            return None
        n = self._due(timeout) if self.paced else self._block_size
        if self._total is not None:
            n = min(n, self._total - self._emitted)
        if n <= 0:
            return None
        return self._generate(n)

    def _due(self, timeout: float) -> int:
        def due() -> int:
            d = math.floor((self._clock() - self._t0_mono) * self._rate) - self._emitted
            if self._total is not None:
                d = min(d, self._total - self._emitted)
            return d

        needed = self._min_block
        if self._total is not None:
            needed = min(needed, self._total - self._emitted)
        d = due()
        if d < needed:
            wait = (self._emitted + needed) / self._rate - (self._clock() - self._t0_mono)
            self._sleep(max(0.0, min(wait, timeout)))
            if self._stop_event.is_set():
                return 0
            d = due()
            if d < needed:
                return 0
        return min(d, self._max_block)

    def _generate(self, n: int) -> Samples:
        k0 = self._emitted
        t = np.arange(k0, k0 + n, dtype=np.float64) / self._rate
        values = np.empty((len(self._channels), n), dtype=np.float64)
        for i, (parts, rng) in enumerate(zip(self._signals, self._rngs, strict=True)):
            row = values[i]
            row[:] = 0.0
            for p in parts:
                row += p.generate(t, rng)
        times = sample_times(self._t0_ns, k0, n, self._rate)
        self._emitted += n
        return Samples(values, times)

    def describe(self) -> dict[str, Any]:
        return {
            "type": "daqlab.sources.Simulated",
            "sample_rate": self._rate,
            "seed": self.seed,
            "paced": self.paced,
            "channels": [c.name for c in self._channels],
            "signals": {
                c.name: [{"kind": type(p).__name__, **asdict(p)} for p in parts]
                for c, parts in zip(self._channels, self._signals, strict=True)
            },
            "duration": None if self._total is None else self._total / self._rate,
        }
