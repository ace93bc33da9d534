"""The acquisition engine: sources read by background threads into ring buffers.

:class:`DataManager` owns sources, their buffers and recorders, the event bus,
named datasets and saving: auto-save on an interval, and everything flushed
and saved on :meth:`~DataManager.stop`, on leaving a ``with`` block, on Ctrl-C
and at interpreter (or Jupyter kernel) exit.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Never

import xarray as xr

from daqlab._config import (
    FROM_CONFIG,
    AcquisitionConfig,
    FromConfig,
    channel_sources,
    configure,
    named_sources,
    source_of,
)
from daqlab._shutdown import ShutdownHooks
from daqlab.buffer import RingBuffer
from daqlab.captures import Captures
from daqlab.checks import real
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
from daqlab.io import CAPTURES_SUFFIX, SESSION_SUFFIX, Recorder, open_run, save, storage_errors, write_session
from daqlab.run import check_metadata, iso_utc, run_attrs
from daqlab.sources import Source
from daqlab.tree import make_tree, node_names
from daqlab.trigger import Trigger

__all__ = ["AcquisitionConfig", "DataManager", "DatasetRecord"]

log = logging.getLogger(__name__)
"""Failures daqlab survives but must not hide (auto-save, a source's stop) go here ("daqlab.*")."""


@dataclass
class DatasetRecord:
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


class DataManager:
    """Acquire from sources in the background, keep datasets, record and save.

    Parameters
    ----------
    sources
        One source, a list, or a ``{name: source}`` dict.
    config
        An :class:`AcquisitionConfig` (default: its defaults).
    name, metadata
        Name of the acquisition and metadata carried into every run it saves.
    buffer_seconds, buffer_samples, ..., handle_sigint
        Every field of :class:`AcquisitionConfig`, by keyword: each given overrides
        that field of ``config``; left out (``FROM_CONFIG``), the config's value
        holds. Any other keyword is a :class:`~daqlab.ConfigurationError`.

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
        buffer_seconds: float | FromConfig = FROM_CONFIG,
        buffer_samples: int | FromConfig | None = FROM_CONFIG,
        autosave_interval: float | FromConfig | None = FROM_CONFIG,
        output_dir: str | Path | FromConfig = FROM_CONFIG,
        record: bool | FromConfig = FROM_CONFIG,
        compression: bool | FromConfig = FROM_CONFIG,
        max_memory_usage_mb: float | FromConfig = FROM_CONFIG,
        flush_interval: float | FromConfig = FROM_CONFIG,
        stop_timeout: float | FromConfig = FROM_CONFIG,
        event_queue_size: int | FromConfig = FROM_CONFIG,
        handle_sigint: bool | FromConfig = FROM_CONFIG,
        **unknown: Never,  # mypy flags a misspelt setting; at run time it is a ConfigurationError
    ) -> None:
        self.config = configure(
            config, unknown, buffer_seconds=buffer_seconds, buffer_samples=buffer_samples,
            autosave_interval=autosave_interval, output_dir=output_dir, record=record,
            compression=compression, max_memory_usage_mb=max_memory_usage_mb,
            flush_interval=flush_interval, stop_timeout=stop_timeout,
            event_queue_size=event_queue_size, handle_sigint=handle_sigint,
        )
        self.name = name or "run"
        self._metadata = check_metadata(metadata)
        self.sources = named_sources(sources)
        self._clock = clock
        self._channel_source = channel_sources(self.sources)
        self.config.check_memory(self.sources)
        self.bus = EventBus(self.name)
        self.buffers: dict[str, RingBuffer] = {
            n: RingBuffer(s.channels, self.config.capacity_for(s.sample_rate), s.sample_rate,
                          name=self.name if len(self.sources) == 1 else f"{self.name}-{n}",
                          metadata={**self._metadata, "source_name": n, "source": s.describe()})
            for n, s in self.sources.items()
        }
        self.recorders: dict[str, Recorder] = {}
        self.datasets: dict[uuid.UUID, DatasetRecord] = {}
        self.saved: list[Path] = []
        """Every file this manager has written, in order."""
        self.errors: dict[str, BaseException] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._finished: dict[str, threading.Event] = {n: threading.Event() for n in self.sources}
        self._stop_event = threading.Event()
        self._autosave_thread: threading.Thread | None = None
        self._save_lock = threading.RLock()
        self._state = "new"
        self._shutdown = ShutdownHooks(self, handle_sigint=self.config.handle_sigint,
                                       output_dir=self.config.output_dir)
        self._started_at = ""
        self.id = str(uuid.uuid4())
        """The session's id: the id of :meth:`snapshot_tree`'s and :meth:`export_session`'s tree."""
        self._armed: list[Captures] = []
        self.session_path: Path | None = None
        """The session manifest (recording several sources): ``daqlab.open_tree`` opens it as a
        tree of their recordings, also after a crash."""

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
        started: list[Source] = []
        try:
            if self.config.record:
                self._make_output_dir()
                for n, buf in self.buffers.items():
                    stem = f"{self._started_at}-{self.name}" + (f"-{n}" if len(self.buffers) > 1 else "")
                    self.recorders[n] = Recorder(
                        buf, self.config.output_dir / f"{stem}-{buf.id[:8]}.nc",
                        flush_interval=self.config.flush_interval, publish=self.bus.publish,
                        source_name=n, clock=self._clock,
                    )
                if len(self.recorders) > 1:
                    self.session_path = write_session(
                        self.config.output_dir / f"{self._started_at}-{self.name}{SESSION_SUFFIX}",
                        {n: rec.path for n, rec in self.recorders.items()}, **self._tree_attrs())
            for rec in self.recorders.values():
                rec.start()
            for n, src in self.sources.items():
                src.start()
                started.append(src)
                t = threading.Thread(target=self._acquire, args=(n,), daemon=True,
                                     name=f"daqlab-acq-{n}")
                self._threads[n] = t
        except BaseException:
            self._undo_start(started)  # a source that would not start: nothing is left running
            raise
        self._state = "running"
        for t in self._threads.values():
            t.start()
        if self.config.autosave_interval is not None:
            self._autosave_thread = threading.Thread(target=self._autosave, daemon=True,
                                                     name=f"daqlab-autosave-{self.name}")
            self._autosave_thread.start()
        self._shutdown.install()  # at interpreter exit stop() saves; Ctrl-C checkpoints
        return self

    def _undo_start(self, started: list[Source]) -> None:
        """Stop what a failed start() started; remove its empty recordings. start() may be
        called again (the manager is still new)."""
        for src in started:
            with contextlib.suppress(Exception):
                src.stop()
        if self.session_path is not None:
            with contextlib.suppress(OSError):
                self.session_path.unlink()
            self.session_path = None
        for rec in self.recorders.values():
            try:
                rec.discard()
            except Exception:  # the original error is the one raised
                log.warning("could not remove the empty recording %s", rec.folder, exc_info=True)
        self.recorders.clear()
        self._threads.clear()

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
        self._shutdown.remove()
        try:
            self._final_save()
        finally:
            for buf in self.buffers.values():
                buf.close()
            for captures in self._armed:  # they drain what the buffers hold, then end
                captures.finish(timeout=self.config.stop_timeout)
            self.bus.close(timeout=self.config.stop_timeout)
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
            for n, src in self.sources.items():  # what a source measured while running
                try:
                    self._keep_run_metadata(n, src)
                except Exception as exc:
                    failures.append(exc)
            for n, rec in self.recorders.items():
                if rec.error is not None:
                    rec.stop()
                    failures.append(StorageError(
                        getattr(rec.error, "errno", None) or errno.EIO,
                        f"recording of source {n!r} failed ({rec.error}); samples before "
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

    def _keep_run_metadata(self, name: str, src: Source) -> None:
        """A source's ``run_metadata()`` (e.g. LSL's clock offsets), if it has one, into the
        metadata of its runs from now on: snapshots, datasets and the recording."""
        measure = getattr(src, "run_metadata", None)
        if not callable(measure):
            return
        extra = {"source_run": measure()}
        self.buffers[name].add_metadata(extra)
        rec = self.recorders.get(name)
        if rec is not None and rec.error is None:
            rec.add_metadata(extra)

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

    def _tree_attrs(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "metadata": self._metadata,
                "created_at": iso_utc(_dt.datetime.strptime(self._started_at, "%Y%m%dT%H%M%SZ")
                                      .replace(tzinfo=_dt.UTC)) if self._started_at else None}

    def snapshot_tree(self, seconds: float | None = None) -> xr.DataTree:
        """The latest ``seconds`` of every source (everything buffered when ``None``), each at
        its own rate, as one tree of runs: a node per source, named after it (a copy), and an
        events node ``<source>_markers`` for each source that reads markers (LSL's
        ``markers=``)."""
        names = node_names(self.sources)
        runs = {key: self.snapshot(seconds, source=n) for key, n in zip(names, self.sources, strict=True)}
        return make_tree({**runs, **self._marker_nodes(runs)}, **self._tree_attrs())

    def _marker_nodes(self, taken: Mapping[str, Any]) -> dict[str, xr.Dataset]:
        """The events nodes of sources that read markers (``markers``: an events node), named
        ``<source>_markers``."""
        found: dict[str, xr.Dataset] = {}
        for n, src in self.sources.items():
            ev = getattr(src, "markers", None)
            if isinstance(ev, xr.Dataset) and ev.sizes.get("event"):
                found[n] = ev
        names = node_names([*taken, *(f"{n}_markers" for n in found)])[len(taken):]
        return dict(zip(names, found.values(), strict=True))

    def session_tree(self) -> xr.DataTree:
        """The whole session as one tree, a node per source: every sample recorded (read
        lazily from the recordings) where the manager records, else what the ring buffers
        hold. While running, the recorders are flushed first."""
        if not self.recorders:
            return self.snapshot_tree()
        runs = {}
        with self._save_lock:
            for key, (n, rec) in zip(node_names(self.recorders), self.recorders.items(), strict=True):
                if self._state == "running" and rec.error is None:
                    rec.flush_through(self.buffers[n].written, timeout=self.config.stop_timeout)
                runs[key] = open_run(rec.path, chunks={})
        return make_tree({**runs, **self._marker_nodes(runs)}, **self._tree_attrs())

    def export_session(self, path: str | Path | None = None, *, overwrite: bool = False) -> Path:
        """Save :meth:`session_tree` as one NetCDF file of groups (default: ``<output_dir>/
        <start>-<name>-session.nc``) and return its path."""
        tree = self.session_tree()
        if path is None:
            self._make_output_dir()
            stamp = self._started_at or _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            path = self.config.output_dir / f"{stamp}-{self.name}-session.nc"
        out = save(tree, path, "netcdf", overwrite=overwrite, compression=self.config.compression)
        if out not in self.saved:
            self.saved.append(out)
        return out

    def subscribe(
        self,
        callback: Callable[[Event], Any] | None = None,
        *,
        kinds: Iterable[type[Event]] | type[Event] | None = None,
        maxsize: int | None = None,
    ) -> Subscription:
        """Events through a bounded queue (iterate, ``get(timeout)``) or a callback thread."""
        return self.bus.subscribe(callback, kinds=kinds, maxsize=maxsize or self.config.event_queue_size)

    def arm(self, trigger: Trigger, *, keep: int = 1000, record: bool | None = None) -> Captures:
        """Arm ``trigger`` on the buffer of its channel's source: the captures it makes, as they
        come (iterate, ``get(timeout)``, ``close()``); each is announced by a
        :class:`~daqlab.events.Triggered` event. Captures stop with the manager. ``record``
        (default: as the manager records) writes them, crash-safely, into a folder
        ``<output_dir>/<time>-<name>-<channel>.daqcap`` (``captures.folder``), which
        ``daqlab.open_tree`` and ``daqlab.io.open_captures`` read. See
        :class:`daqlab.captures.Captures`."""
        if not isinstance(trigger, Trigger):
            raise ConfigurationError(f"arm() takes a daqlab.Trigger, e.g. dl.Trigger('ai0', 0.5); got "
                                     f"{type(trigger).__name__} ({trigger!r:.60}).")
        source = self._channel_source.get(trigger.channel)
        if source is None:
            raise ChannelNotFoundError(f"trigger channel {trigger.channel!r} is in none of the sources; "
                                       f"channels: {sorted(self._channel_source)}.")
        folder = None
        if self.config.record if record is None else record:
            self._make_output_dir()
            stamp = self._started_at or _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            folder = self.config.output_dir / (f"{stamp}-{self.name}-{trigger.channel}-"
                                               f"{uuid.uuid4().hex[:8]}{CAPTURES_SUFFIX}")
        captures = Captures(self.buffers[source], trigger, keep=keep, source_name=source,
                            publish=self.bus.publish, clock=self._clock, record=folder,
                            flush_interval=self.config.flush_interval)
        self._armed.append(captures)
        return captures

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
        source = source_of(names, self._channel_source)
        ds = DatasetRecord(
            id=uuid.uuid4(), name=name, source=source, channels=tuple(dict.fromkeys(names)),
            start_index=self.buffers[source].written, description=description,
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
        end, lo, start = buf.written, buf.first_index, ds.start_index
        parts: list[xr.Dataset] = []
        if start < lo:  # the ring lost the start: the recorder has it
            parts.append(self._from_recorder(ds, end, lo))
            start += parts[0].sizes["time"]
        if start < end or not parts:
            parts.append(buf.range(start, end - start))
        run = parts[0] if len(parts) == 1 else xr.concat(
            parts, dim="time", data_vars="all", coords="minimal", compat="override",
            combine_attrs="override", join="outer")
        run = run.sel(channel=list(ds.channels))
        run.attrs = run_attrs(
            id=ds.id, name=ds.name, description=ds.description, created_at=ds.created_at,
            sample_rate=buf.sample_rate,
            metadata={**buf.metadata, **ds.metadata}, calibrated=False,
        )
        return run

    def _from_recorder(self, ds: DatasetRecord, end: int, lo: int) -> xr.Dataset:
        """The dataset's samples from its start up to ``end`` (at most), from the recorder."""
        rec = self.recorders.get(ds.source)
        cause = None
        if rec is not None:
            try:  # through `end`, not `lo`: the writer may lap the ring again while we read it
                return rec.samples(ds.start_index, end, timeout=self.config.stop_timeout)
            except DataRangeError as exc:
                cause = exc
        raise DataRangeError(
            f"dataset {ds.name!r} needs samples {ds.start_index}..{lo - 1} of source "
            f"{ds.source!r} (older than the {self.buffers[ds.source].capacity} samples the ring "
            f"buffer holds), which the ring buffer no longer holds and "
            f"{'no recorder has' if rec is None else 'the recorder does not have'}. "
            "Use record=True or a longer buffer_seconds to keep them."
        ) from cause

    def export_dataset(
        self, dataset_id: uuid.UUID | str, format: str = "netcdf",
        path: str | Path | None = None,
    ) -> Path:
        """Save the dataset (creation until now) and return the path; announces DatasetSaved."""
        return self._export(self._dataset(dataset_id), format, path)

    def _export(self, ds: DatasetRecord, format: str = "netcdf", path: str | Path | None = None) -> Path:
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

    def _dataset(self, dataset_id: uuid.UUID | str) -> DatasetRecord:
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
