"""The acquisition engine: sources read by background threads into ring buffers.

:class:`DataManager` owns sources, their buffers and recorders, the event bus,
named datasets and saving: auto-save on an interval, and everything flushed
and saved on :meth:`~DataManager.stop`, on leaving a ``with`` block, on Ctrl-C
and at interpreter (or Jupyter kernel) exit.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import functools
import logging
import math
import signal
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import xarray as xr

from daqlab.buffer import RingBuffer
from daqlab.checks import real, whole
from daqlab.errors import (
    AcquisitionError,
    ChannelNotFoundError,
    ConfigurationError,
    DataRangeError,
    DatasetNotFoundError,
    SaveErrors,
    SourceNotFoundError,
    StorageError,
)
from daqlab.events import (
    AcquisitionFailed,
    DatasetCreated,
    DatasetSaved,
    Event,
    EventBus,
    NewData,
    Subscription,
)
from daqlab.io import Recorder, save, storage_errors
from daqlab.run import check_metadata, run_attrs
from daqlab.sources import Source

__all__ = ["AcquisitionConfig", "DataManager", "Dataset"]

log = logging.getLogger(__name__)
"""Failures daqlab survives but must not hide (auto-save, checkpoints) go here ("daqlab.*")."""


@dataclass(frozen=True)
class AcquisitionConfig:
    """Settings of a :class:`DataManager`; validated when made.

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
    :meth:`DataManager.create_dataset`; the ring buffers stay in memory
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


@dataclass
class Dataset:
    """A named selection of one source's channels, from its creation until export."""

    id: uuid.UUID
    name: str
    source: str
    channels: tuple[str, ...]
    start_index: int
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    path: Path | None = None
    """The last file this dataset was saved to."""


def _source_names(sources: Any) -> dict[str, Source]:
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


def _stop_at_exit(ref: weakref.ref[DataManager]) -> None:
    dm = ref()
    if dm is not None and dm.running:
        try:
            dm.stop()
        except Exception as exc:  # at exit nobody can catch it: say it, do not hide it
            print(f"daqlab: saving {dm.name!r} at interpreter exit failed: {type(exc).__name__}: "
                  f"{exc}. What was recorded stays in {dm.config.output_dir} (daqlab.open_run "
                  "opens a recording folder).", file=sys.stderr)


class DataManager:
    """Acquire from sources in the background, keep datasets, record and save.

    Parameters
    ----------
    sources
        One source, a list, or a ``{name: source}`` dict.
    config
        An :class:`AcquisitionConfig`; keyword ``settings`` override its fields.
    name, metadata
        Name of the acquisition and metadata carried into every run it saves.

    Examples
    --------
    >>> import daqlab as dl
    >>> src = dl.sources.Simulated(2, 1000.0, paced=False, duration=0.5, seed=3)
    >>> with dl.DataManager(src, record=False, autosave_interval=None,
    ...                     output_dir=getfixture("tmp_path")) as dm:
    ...     dm.wait(timeout=10)
    True
    >>> dm.snapshot().sizes["time"]
    500
    """

    def __init__(
        self,
        sources: Source | Sequence[Source] | Mapping[str, Source],
        config: AcquisitionConfig | None = None,
        *,
        name: str = "",
        metadata: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        **settings: Any,
    ) -> None:
        try:
            self.config = replace(config or AcquisitionConfig(), **settings)
        except TypeError as exc:
            fields = sorted(AcquisitionConfig.__dataclass_fields__)
            raise ConfigurationError(f"{exc}; DataManager settings are {fields}.") from None
        self.name = name or "run"
        self._metadata = check_metadata(metadata)
        self.sources = _source_names(sources)
        self._clock = clock
        all_names: dict[str, str] = {}
        for sname, src in self.sources.items():
            for ch in src.channels:
                if ch.name in all_names:
                    raise ConfigurationError(
                        f"channel {ch.name!r} is in sources {all_names[ch.name]!r} and {sname!r}; "
                        "channel names must be unique across a manager's sources. Rename one."
                    )
                all_names[ch.name] = sname
        self._channel_source = all_names
        need = sum(
            self.config.capacity_for(s.sample_rate) * (len(s.channels) * 9 + 8)
            for s in self.sources.values()
        ) / 2**20
        if need > self.config.max_memory_usage_mb:
            detail = ", ".join(
                f"{n}: {self.config.capacity_for(s.sample_rate)} samples x {len(s.channels)} ch"
                for n, s in self.sources.items()
            )
            raise ConfigurationError(
                f"ring buffers would need {need:.1f} MiB ({detail}), more than "
                f"max_memory_usage_mb={self.config.max_memory_usage_mb:g}. Raise "
                "max_memory_usage_mb, or shorten buffer_seconds/buffer_samples (the recorder "
                "keeps every sample on disk either way)."
            )
        self.bus = EventBus(self.name)
        self.buffers: dict[str, RingBuffer] = {
            n: RingBuffer(s.channels, self.config.capacity_for(s.sample_rate), s.sample_rate,
                          name=self.name if len(self.sources) == 1 else f"{self.name}-{n}",
                          metadata={**self._metadata, "source_name": n, "source": s.describe()})
            for n, s in self.sources.items()
        }
        self.recorders: dict[str, Recorder] = {}
        self.datasets: dict[uuid.UUID, Dataset] = {}
        self.saved: list[Path] = []
        """Every file this manager has written, in order."""
        self.errors: dict[str, BaseException] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._finished: dict[str, threading.Event] = {n: threading.Event() for n in self.sources}
        self._stop_event = threading.Event()
        self._autosave_thread: threading.Thread | None = None
        self._save_lock = threading.RLock()
        self._state = "new"
        self._prev_sigint: Any = None
        self._atexit_cb: Callable[[], None] | None = None
        self._ipython_hook: tuple[Any, Callable[[Any], None]] | None = None
        self._started_at = ""

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def state(self) -> str:
        """``"new"`` (not started), ``"running"``, or where :meth:`stop` left it."""
        return self._state

    def __repr__(self) -> str:
        return f"DataManager(name={self.name!r}, sources={list(self.sources)}, state={self._state!r})"

    def start(self) -> DataManager:
        """Start one acquisition thread per source (and recorders, auto-save)."""
        if self._state != "new":
            raise AcquisitionError(
                f"this DataManager is {self._state}; a manager runs once. Make a new one "
                "(its buffers and files stay available on this one)."
            )
        now = _dt.datetime.now(_dt.UTC)
        self._started_at = now.strftime("%Y%m%dT%H%M%SZ")
        if self.config.record:
            self._make_output_dir()
            for n, buf in self.buffers.items():
                stem = f"{self._started_at}-{self.name}" + (f"-{n}" if len(self.buffers) > 1 else "")
                self.recorders[n] = Recorder(
                    buf, self.config.output_dir / f"{stem}-{buf.id[:8]}.nc",
                    flush_interval=self.config.flush_interval, publish=self.bus.publish,
                    source_name=n, clock=self._clock,
                )
        for rec in self.recorders.values():
            rec.start()
        for n, src in self.sources.items():
            src.start()
            t = threading.Thread(target=self._acquire, args=(n,), daemon=True, name=f"daqlab-acq-{n}")
            self._threads[n] = t
        self._state = "running"
        for t in self._threads.values():
            t.start()
        if self.config.autosave_interval is not None:
            self._autosave_thread = threading.Thread(target=self._autosave, daemon=True,
                                                     name=f"daqlab-autosave-{self.name}")
            self._autosave_thread.start()
        # one callable per manager: atexit.unregister removes by equality
        self._atexit_cb = functools.partial(_stop_at_exit, weakref.ref(self))
        atexit.register(self._atexit_cb)
        self._install_sigint()
        self._install_ipython_hook()
        return self

    def _acquire(self, name: str) -> None:
        src, buf = self.sources[name], self.buffers[name]
        try:
            while not self._stop_event.is_set():
                block = src.read(timeout=0.05)
                if block is not None and len(block):
                    start = buf.push(block.values, block.times, block.quality)
                    self.bus.publish(NewData(name, start, len(block), block.times[0], block.times[-1]))
                if src.finished:
                    break
            # stop() was asked for: keep what the source still holds (a Push queue), but no
            # more than a buffer's worth, in case a source ignores stop() and never runs dry
            drained = 0
            while drained < buf.capacity and (block := src.read(timeout=0.0)) is not None \
                    and len(block):
                start = buf.push(block.values, block.times, block.quality)
                drained += len(block)
                self.bus.publish(NewData(name, start, len(block), block.times[0], block.times[-1]))
        except BaseException as exc:  # report every failure, even KeyboardInterrupt in a driver
            self.errors[name] = exc
            self.bus.publish(AcquisitionFailed(name, exc))
        finally:
            try:
                src.stop()
            except Exception:
                log.warning("source %r of %s failed to stop", name, self.name, exc_info=True)
            self._finished[name].set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every source has finished (finite sources) or failed; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for ev in self._finished.values():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not ev.wait(left):
                return False
        return True

    def stop(self) -> None:
        """Stop acquiring, write every sample, save the datasets; bounded in time.

        Raises :class:`~daqlab.AcquisitionError` (after saving) if a source failed.
        """
        if self._state != "running":
            if self._state == "new":
                raise AcquisitionError("stop() before start(): nothing is running.")
            return
        self._state = "stopping"
        self._stop_event.set()
        for src in self.sources.values():
            with contextlib.suppress(Exception):
                src.stop()
        hung = []
        for n, t in self._threads.items():
            t.join(self.config.stop_timeout)
            if t.is_alive():
                hung.append(n)
        if self._autosave_thread is not None:
            self._autosave_thread.join(self.config.stop_timeout)
        self._restore_sigint()
        self._remove_ipython_hook()
        try:
            self._final_save()
        finally:
            for buf in self.buffers.values():
                buf.close()
            self.bus.close(timeout=self.config.stop_timeout)
            if self._atexit_cb is not None:
                atexit.unregister(self._atexit_cb)
            self._state = "stopped"
        if hung:
            raise AcquisitionError(
                f"source thread(s) {hung} did not stop within {self.config.stop_timeout} s: their "
                "read() blocks and ignores stop(). Data pushed before was saved."
            )
        if self.errors:
            name, exc = next(iter(self.errors.items()))
            raise AcquisitionError(
                f"source {name!r} failed during acquisition: {type(exc).__name__}: {exc}. "
                "Everything acquired before the failure was saved."
            ) from exc

    def _final_save(self) -> None:
        """Write everything; every step is tried, and what failed is raised after (several
        failures together, as a SaveErrors group)."""
        failures: list[Exception] = []

        def attempt(step: Callable[[], Path]) -> None:
            try:
                out = step()
                if out not in self.saved:
                    self.saved.append(out)
            except Exception as exc:  # keep saving the rest; report below
                failures.append(exc)

        with self._save_lock:
            for n, rec in self.recorders.items():
                if rec.error is not None:
                    rec.stop()
                    failures.append(StorageError(
                        28, f"recording of source {n!r} failed ({rec.error}); samples before "
                        f"{rec.saved_upto} are in {rec.folder} (daqlab.open_run opens it), later "
                        "ones only in memory: use snapshot() or export_dataset() elsewhere."))
                    continue
                try:
                    rec.stop()  # every sample durable in the folder, which datasets may read
                except Exception as exc:
                    failures.append(exc)
            for ds in self.datasets.values():
                attempt(functools.partial(self._export, ds))
            for rec in self.recorders.values():
                if rec.error is None:
                    attempt(functools.partial(rec.close, compression=self.config.compression))
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise SaveErrors(f"stop() could not save {len(failures)} things; everything else was "
                             "saved", failures)

    def __enter__(self) -> DataManager:
        """Start (unless running already); leaving the block stops and saves, also on errors."""
        return self if self.running else self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ saving
    def checkpoint(self) -> None:
        """Make everything acquired so far durable now: flush recorders, save every dataset."""
        with self._save_lock:
            for n, rec in self.recorders.items():
                rec.flush_through(self.buffers[n].written, timeout=self.config.stop_timeout)
            for ds in list(self.datasets.values()):
                self._export(ds)

    def _make_output_dir(self) -> None:
        with storage_errors(self.config.output_dir, "make the output folder"):
            self.config.output_dir.mkdir(parents=True, exist_ok=True)

    def _autosave(self) -> None:
        interval = self.config.autosave_interval
        assert interval is not None
        while not self._stop_event.wait(interval):
            try:
                self.checkpoint()
            except Exception:  # acquisition goes on; stop() saves again and raises what fails then
                log.warning("auto-save of %s failed; trying again in %g s", self.name, interval,
                            exc_info=True)

    def _install_sigint(self) -> None:
        if not self.config.handle_sigint or threading.current_thread() is not threading.main_thread():
            return
        prev = signal.getsignal(signal.SIGINT)
        if not callable(prev):
            return
        ref = weakref.ref(self)

        def on_sigint(signum: int, frame: FrameType | None) -> Any:
            dm = ref()
            if dm is not None and dm.running:
                threading.Thread(target=dm._checkpoint_quietly, daemon=True,
                                 name=f"daqlab-sigint-{dm.name}").start()
            return prev(signum, frame)

        self._prev_sigint = prev
        signal.signal(signal.SIGINT, on_sigint)

    def _install_ipython_hook(self) -> None:
        # ipykernel swaps the SIGINT handler around every cell, so a cell interrupted by
        # Ctrl-C is seen here, after the cell, through IPython's own event.
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
        if shell is None:
            return
        ref = weakref.ref(self)

        def post_run_cell(result: Any) -> None:
            dm = ref()
            if dm is not None and dm.running and isinstance(
                getattr(result, "error_in_exec", None), KeyboardInterrupt
            ):
                dm._checkpoint_quietly()

        shell.events.register("post_run_cell", post_run_cell)
        self._ipython_hook = (shell, post_run_cell)

    def _remove_ipython_hook(self) -> None:
        if self._ipython_hook is not None:
            shell, hook = self._ipython_hook
            with contextlib.suppress(ValueError):
                shell.events.unregister("post_run_cell", hook)
            self._ipython_hook = None

    def _checkpoint_quietly(self) -> None:
        try:
            self.checkpoint()
        except Exception:
            log.warning("checkpoint of %s failed", self.name, exc_info=True)

    def _restore_sigint(self) -> None:
        if self._prev_sigint is not None and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGINT, self._prev_sigint)
            self._prev_sigint = None

    # ------------------------------------------------------------------ data
    def _source_for(self, source: str | None) -> str:
        if source is None:
            if len(self.sources) == 1:
                return next(iter(self.sources))
            raise ConfigurationError(
                f"this manager has several sources {list(self.sources)}; say which with source=..."
            )
        if source not in self.sources:
            raise SourceNotFoundError(f"no source {source!r}; sources are {list(self.sources)}.")
        return source

    def snapshot(self, seconds: float | None = None, *, source: str | None = None) -> xr.Dataset:
        """The latest ``seconds`` of data (everything buffered when ``None``) as a run (a copy)."""
        name = self._source_for(source)
        buf = self.buffers[name]
        if seconds is None:
            return buf.latest()
        wanted = real(seconds, "seconds", lower=0, note="or None")
        return buf.latest(math.ceil(wanted * buf.sample_rate))

    def subscribe(
        self,
        callback: Callable[[Event], Any] | None = None,
        *,
        kinds: Iterable[type[Event]] | type[Event] | None = None,
        maxsize: int | None = None,
    ) -> Subscription:
        """Events through a bounded queue (iterate, ``get(timeout)``) or a callback thread."""
        return self.bus.subscribe(callback, kinds=kinds, maxsize=maxsize or self.config.event_queue_size)

    def create_dataset(
        self,
        name: str,
        channels: Iterable[str] | None = None,
        *,
        description: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> uuid.UUID:
        """A named selection of channels (all of one source), starting now."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"dataset name must be non-empty text; got {name!r}.")
        if channels is None:
            names = [c.name for c in self.sources[self._source_for(None)].channels]
        elif isinstance(channels, str):
            names = [channels]
        else:
            names = list(channels)
        if not names:
            raise ConfigurationError("a dataset needs at least one channel.")
        unknown = [c for c in names if c not in self._channel_source]
        if unknown:
            raise ChannelNotFoundError(
                f"no channel(s) {unknown} in this manager; channels are {sorted(self._channel_source)}."
            )
        srcs = sorted({self._channel_source[c] for c in names})
        if len(srcs) > 1:
            raise ConfigurationError(
                f"channels {names} come from several sources {srcs}; a dataset holds channels of "
                "one source (one time axis). Make one dataset per source."
            )
        ds = Dataset(
            id=uuid.uuid4(), name=name, source=srcs[0], channels=tuple(dict.fromkeys(names)),
            start_index=self.buffers[srcs[0]].written, description=description,
            metadata=check_metadata(metadata),
            created_at=_dt.datetime.now(_dt.UTC).isoformat().replace("+00:00", "Z"),
        )
        self.datasets[ds.id] = ds
        self.bus.publish(DatasetCreated(ds.source, str(ds.id), name, ds.channels))
        return ds.id

    def dataset_run(self, dataset_id: uuid.UUID | str) -> xr.Dataset:
        """The dataset's samples from its creation until now, as a run."""
        ds = self._dataset(dataset_id)
        buf = self.buffers[ds.source]
        end = buf.written
        lo = buf.first_index
        parts: list[xr.Dataset] = []
        start = ds.start_index
        if start < lo:
            rec = self.recorders.get(ds.source)
            if rec is None or rec.error is not None or rec.start_index > start:
                raise DataRangeError(
                    f"dataset {ds.name!r} needs samples {start}..{lo - 1} of source "
                    f"{ds.source!r} (older than the {buf.capacity} samples the ring buffer holds), "
                    "which the ring buffer no longer holds and "
                    f"{'no recorder has' if rec is None else 'the recorder does not have'}. "
                    "Use record=True or a longer buffer_seconds to keep them."
                )
            # through `end`, not `lo`: the writer may lap the ring again while we read it
            rec.flush_through(end, timeout=self.config.stop_timeout)
            recorded = rec.recorded(chunks={})
            upto = min(end, rec.start_index + recorded.sizes["time"])
            parts.append(recorded.isel(time=slice(start - rec.start_index, upto - rec.start_index)))
            start = upto
        if start < end or not parts:
            parts.append(buf.range(start, end - start))
        run = parts[0] if len(parts) == 1 else xr.concat(
            parts, dim="time", data_vars="all", coords="minimal", compat="override",
            combine_attrs="override", join="outer")
        run = run.sel(channel=list(ds.channels))
        run.attrs = run_attrs(
            id=ds.id, name=ds.name, description=ds.description, created_at=ds.created_at,
            sample_rate=buf.sample_rate,
            metadata={**buf._attrs["metadata"], **ds.metadata}, calibrated=False,
        )
        return run

    def export_dataset(
        self, dataset_id: uuid.UUID | str, format: str = "netcdf",
        path: str | Path | None = None,
    ) -> Path:
        """Save the dataset (creation until now) and return the path; announces DatasetSaved."""
        return self._export(self._dataset(dataset_id), format, path)

    def _export(self, ds: Dataset, format: str = "netcdf", path: str | Path | None = None) -> Path:
        with self._save_lock:
            run = self.dataset_run(ds.id)
            if path is None:
                self._make_output_dir()
                path = self.config.output_dir / f"{ds.name}-{str(ds.id)[:8]}.nc"
            out = save(run, path, format, overwrite=True, compression=self.config.compression)
            ds.path = out
            if out not in self.saved:
                self.saved.append(out)
        self.bus.publish(DatasetSaved(ds.source, str(ds.id), out, int(run.sizes["time"])))
        return out

    def _dataset(self, dataset_id: uuid.UUID | str) -> Dataset:
        try:
            key = dataset_id if isinstance(dataset_id, uuid.UUID) else uuid.UUID(str(dataset_id))
        except ValueError:
            key = None
        if key is None or key not in self.datasets:
            known = {str(k): d.name for k, d in self.datasets.items()}
            raise DatasetNotFoundError(f"no dataset {dataset_id!r}; datasets are {known}.")
        return self.datasets[key]

    def status(self) -> dict[str, dict[str, Any]]:
        """Per source: samples acquired, buffer fill, samples lost, recorder progress."""
        out = {}
        for n, buf in self.buffers.items():
            rec = self.recorders.get(n)
            out[n] = {
                "written": buf.written,
                "buffered": len(buf),
                "capacity": buf.capacity,
                "lost": buf.overflow_count,
                "recorded": None if rec is None else rec.saved_upto - rec.start_index,
                "recorder_error": None if rec is None or rec.error is None else str(rec.error),
                "error": None if n not in self.errors else repr(self.errors[n]),
            }
        return out
