"""What a :class:`~daqlab.DataManager` is given: its sources and its settings, checked.

Sources get names (:func:`named_sources`) and each channel belongs to one of
them (:func:`channel_sources`, :func:`source_of`). :class:`AcquisitionConfig`
holds the settings, checked when made; a manager's keyword settings override
its fields (:func:`configure`), and its ring buffers must fit the memory budget
(:meth:`AcquisitionConfig.check_memory`).
"""

from __future__ import annotations

import difflib
import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

from daqlab.checks import flag, real, shown, whole
from daqlab.errors import ChannelNotFoundError, ConfigurationError
from daqlab.sources import Source

__all__ = ["FROM_CONFIG", "AcquisitionConfig", "FromConfig", "channel_sources", "configure", "named_sources",
           "source_of"]


@dataclass(frozen=True)
class AcquisitionConfig:
    """Settings of a :class:`~daqlab.DataManager`; validated when made.

    Examples
    --------
    >>> AcquisitionConfig(buffer_seconds=30.0, autosave_interval=None).buffer_seconds
    30.0
    >>> AcquisitionConfig(buffer_seconds=-1)
    Traceback (most recent call last):
    ...
    daqlab.errors.ConfigurationError: buffer_seconds must be finite and > 0; got -1. Pass e.g. 10.0 (the default).
    """  # noqa: E501

    buffer_seconds: float = 10.0
    """Length of each source's ring buffer in seconds (ignored if ``buffer_samples`` is set)."""
    buffer_samples: int | None = None
    """Length of each ring buffer in samples, overriding ``buffer_seconds``."""
    autosave_interval: float | None = 60.0
    """Seconds between automatic saves of the datasets; ``None`` turns it off."""
    output_dir: Path = Path("daqlab-runs")
    """Where recordings, datasets and auto-saves go (created when needed)."""
    record: bool = True
    """Attach a recorder to every source, writing every sample to disk.

    With ``record=False`` nothing is written unless asked for: ``stop()``, Ctrl-C,
    interpreter exit and kernel shutdown save only the datasets made with
    :meth:`~daqlab.DataManager.create_dataset`; the ring buffers stay in memory
    (``snapshot()`` still works after ``stop()``) and are saved only by an explicit
    ``daqlab.save(manager.snapshot(), path)``."""
    compression: bool = False
    """Compress saved files (zlib with shuffle: 2-4x smaller, much slower)."""
    max_memory_usage_mb: float = 1024.0
    """Ring buffers together may use at most this many MiB; bigger configurations are refused."""
    flush_interval: float = 0.25
    """Recorders make data durable at least this often (s): what a crash may lose."""
    stop_timeout: float = 10.0
    """Seconds ``stop()`` waits for each thread before it reports a hang."""
    event_queue_size: int = 1000
    """Default length of a subscription's queue."""
    handle_sigint: bool = True
    """On Ctrl-C, checkpoint (flush recorders, save datasets) before the interrupt goes on."""

    def __post_init__(self) -> None:
        def positive(name: str, value: Any, hint: str) -> None:
            real(value, name, lower=0, lower_open=True, hint=hint)

        positive("buffer_seconds", self.buffer_seconds, "Pass e.g. 10.0 (the default).")
        if self.buffer_samples is not None:
            samples = whole(self.buffer_samples, "buffer_samples", minimum=1, note="or None")
            object.__setattr__(self, "buffer_samples", samples)
        if self.autosave_interval is not None:
            positive("autosave_interval", self.autosave_interval, "Use None to turn auto-save off.")
        positive("max_memory_usage_mb", self.max_memory_usage_mb, "Pass e.g. 1024.0.")
        positive("flush_interval", self.flush_interval, "Pass e.g. 0.5.")
        positive("stop_timeout", self.stop_timeout, "Pass e.g. 10.0.")
        for name in ("record", "compression", "handle_sigint"):
            object.__setattr__(self, name, flag(getattr(self, name), name))
        queue_size = whole(self.event_queue_size, "event_queue_size", minimum=1)
        object.__setattr__(self, "event_queue_size", queue_size)
        if not isinstance(self.output_dir, (str, Path)):
            raise ConfigurationError(f"output_dir must be a path; got {self.output_dir!r}.")
        object.__setattr__(self, "output_dir", Path(self.output_dir))

    def capacity_for(self, sample_rate: float) -> int:
        """Ring buffer length in samples for a source at ``sample_rate``."""
        if self.buffer_samples is not None:
            return self.buffer_samples
        return max(1, math.ceil(self.buffer_seconds * sample_rate))

    def check_memory(self, sources: Mapping[str, Source]) -> None:
        """Refuse ring buffers for ``sources`` that together need more than ``max_memory_usage_mb``."""
        need = sum(
            self.capacity_for(s.sample_rate) * (len(s.channels) * 9 + 8) for s in sources.values()
        ) / 2**20
        if need > self.max_memory_usage_mb:
            detail = ", ".join(
                f"{n}: {self.capacity_for(s.sample_rate)} samples x {len(s.channels)} ch"
                for n, s in sources.items()
            )
            raise ConfigurationError(
                f"ring buffers would need {need:.1f} MiB ({detail}), more than "
                f"max_memory_usage_mb={self.max_memory_usage_mb:g}. Raise "
                "max_memory_usage_mb, or shorten buffer_seconds/buffer_samples (the recorder "
                "keeps every sample on disk either way)."
            )


class FromConfig(enum.Enum):
    """The type of :data:`FROM_CONFIG`."""

    FROM_CONFIG = "FROM_CONFIG"

    def __repr__(self) -> str:
        return self.value


FROM_CONFIG: Final = FromConfig.FROM_CONFIG
"""The default of each DataManager setting: not given, so the config's value holds."""


def configure(
    config: AcquisitionConfig | None, unknown: Mapping[str, object], **given: Any
) -> AcquisitionConfig:
    """``config`` (default: the defaults) with the settings ``given`` that are not FROM_CONFIG.

    Keywords in ``unknown`` are refused, naming every setting there is.

    >>> configure(None, {}, buffer_seconds=2.0, record=FROM_CONFIG).buffer_seconds
    2.0
    >>> configure(None, {"bufer_seconds": 2.0})
    Traceback (most recent call last):
    ...
    daqlab.errors.ConfigurationError: DataManager got unknown setting(s) ['bufer_seconds'] (did you mean ['buffer_seconds']?); its settings are ['buffer_seconds', 'buffer_samples', 'autosave_interval', 'output_dir', 'record', 'compression', 'max_memory_usage_mb', 'flush_interval', 'stop_timeout', 'event_queue_size', 'handle_sigint'].
    """  # noqa: E501
    if unknown:
        known = [f.name for f in fields(AcquisitionConfig)]
        near = [m for k in unknown for m in difflib.get_close_matches(k, known, n=1)]
        raise ConfigurationError(
            f"DataManager got unknown setting(s) {sorted(unknown)}"
            + (f" (did you mean {near}?)" if near else "") + f"; its settings are {known}."
        )
    if config is not None and not isinstance(config, AcquisitionConfig):
        raise ConfigurationError(
            f"config must be an AcquisitionConfig or None; got {type(config).__name__} "
            f"({shown(config)}). Pass settings as keywords, e.g. DataManager(src, record=False), "
            "or config=daqlab.AcquisitionConfig(...)."
        )
    return replace(config or AcquisitionConfig(), **{k: v for k, v in given.items() if v is not FROM_CONFIG})


def named_sources(sources: Any) -> dict[str, Source]:
    """``sources`` (one, a list or a ``{name: source}`` dict) by name; named ``src`` when alone."""
    if isinstance(sources, Mapping):
        items = list(sources.items())
    else:
        if isinstance(sources, Source):
            seq = [sources]
        elif isinstance(sources, Iterable) and not isinstance(sources, (str, bytes)):
            seq = list(sources)
        else:
            raise ConfigurationError(
                f"sources must be a source, a list of sources or a {{name: source}} dict; got "
                f"{type(sources).__name__}, which does not follow the daqlab.sources.Source protocol "
                "(channels, sample_rate, finished, start, read, stop, describe)."
            )
        items = [(str(getattr(s, "name", "") or f"src{i}"), s) for i, s in enumerate(seq)]
        if len(items) == 1 and not getattr(items[0][1], "name", ""):
            items = [("src", items[0][1])]
    if not items:
        raise ConfigurationError("DataManager needs at least one source, e.g. sources.Simulated(4, 1000).")
    out: dict[str, Source] = {}
    for name, s in items:
        if not isinstance(s, Source):
            raise ConfigurationError(
                f"source {name!r} ({type(s).__name__}) does not follow the daqlab.sources.Source "
                "protocol (channels, sample_rate, finished, start, read, stop, describe)."
            )
        if name in out:
            raise ConfigurationError(f"two sources are named {name!r}; give them distinct names.")
        out[name] = s
    return out


def channel_sources(sources: Mapping[str, Source]) -> dict[str, str]:
    """The name of the source of each channel; a channel name in two sources is refused."""
    out: dict[str, str] = {}
    for sname, src in sources.items():
        for ch in src.channels:
            if ch.name in out:
                raise ConfigurationError(
                    f"channel {ch.name!r} is in sources {out[ch.name]!r} and {sname!r}; "
                    "channel names must be unique across a manager's sources. Rename one."
                )
            out[ch.name] = sname
    return out


def source_of(channels: list[str], channel_source: Mapping[str, str]) -> str:
    """The one source that ``channels`` come from (``channel_source``: as :func:`channel_sources`)."""
    if not channels:
        raise ConfigurationError("a dataset needs at least one channel.")
    unknown = [c for c in channels if c not in channel_source]
    if unknown:
        raise ChannelNotFoundError(
            f"no channel(s) {unknown} in this manager; channels are {sorted(channel_source)}."
        )
    sources = sorted({channel_source[c] for c in channels})
    if len(sources) > 1:
        raise ConfigurationError(
            f"channels {channels} come from several sources {sources}; a dataset holds channels of "
            "one source (one time axis). Make one dataset per source."
        )
    return sources[0]
