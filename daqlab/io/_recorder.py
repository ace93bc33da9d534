"""The streaming recorder: every sample of a buffer to disk, crash-safe.

A :class:`Recorder` writes a folder ``NAME.daqrec/``: ``run.json`` (channels and attributes)
and numbered HDF5 segments, each renamed into place only once durable, with samples the ring
buffer lapped written as a gap (NaN, flagged BAD). :func:`open_recording` turns the folder
into a run, also after a crash; :meth:`Recorder.close` consolidates it into ``NAME.nc``.

The folder, its manifest, segments, gaps and consolidation: docs/formats/recording.md.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr
from numpy.typing import NDArray

from daqlab._version import __version__
from daqlab.buffer import Block, RingBuffer
from daqlab.checks import whole
from daqlab.errors import DataRangeError, FormatError, StorageError
from daqlab.events import BufferOverflow, Event, Recorded, RecordingFailed
from daqlab.io._atomic import as_path, ensure_space, fsync_dir, probe, temp_name, write_durably
from daqlab.io._codec import JSON, decode_attrs, dumps, encode_attrs, to_json
from daqlab.io._netcdf import open_netcdf, save_netcdf
from daqlab.io._records import channel_from_record, channel_record, check_schema_version
from daqlab.io._writerlock import WriterLock
from daqlab.model import Channel, Quality
from daqlab.run import SCHEMA_VERSION, assemble_run, check_chunks, flag_quality, validate

__all__ = ["RECORDING_SUFFIX", "Recorder", "is_recording", "open_recording", "open_recording_or_final"]

RECORDING_SUFFIX = ".daqrec"
_MANIFEST = "run.json"
_LIBVER = ("earliest", "v110")  # readable by netCDF-C 4.9 and older HDF5 (FACTS.md)


def is_recording(path: Path) -> bool:
    """True for a recording folder (finished or not)."""
    return path.is_dir() and (path / _MANIFEST).is_file()


def _manifest(buffer: RingBuffer, attrs: dict[str, Any], final_name: str) -> str:
    """The text of ``run.json``: strict JSON, attributes through the one codec."""
    values, types = encode_attrs(attrs, JSON, "the recording's")
    return dumps({
        "format": "daqlab-recording",
        "final_name": final_name,  # the run file beside the folder that close() writes
        "schema_version": SCHEMA_VERSION,
        "daqlab_version": __version__,
        "attrs": values,
        "attr_types": types,
        "channels": [to_json(channel_record(c)) for c in buffer.channels],
    })


class Recorder:
    """Writes every sample pushed to ``buffer`` into a recording folder, from a thread.

    Parameters
    ----------
    buffer
        The ring buffer to follow (through a lossless reader of its own).
    path
        The final run file (``.nc``); the recording folder sits beside it as
        ``<path without suffix>.daqrec``. Neither may exist yet.
    flush_interval
        At most this many seconds of data wait in memory before a segment is
        written; a crash loses at most about this much.
    publish
        Called with :class:`Recorded`, :class:`BufferOverflow` and
        :class:`RecordingFailed` events.
    attrs
        Run attributes (id, name, description, metadata...) for the recording.
    """

    def __init__(
        self,
        buffer: RingBuffer,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = 0.25,
        max_segment_samples: int = 4_000_000,
        publish: Callable[[Event], None] | None = None,
        attrs: dict[str, Any] | None = None,
        source_name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.buffer = buffer
        self.path = as_path(path, "the recorder's path")
        self.folder = self.path.with_suffix(RECORDING_SUFFIX)
        for p in (self.path, self.folder):
            if probe(p, "exists", "record into"):
                raise StorageError(
                    errno.EEXIST, f"{p} exists already; a recorder never writes over a run. "
                    "Choose another name or output folder."
                )
        # Consolidation may run at interpreter exit, when importing dask (which registers
        # an atexit hook) is no longer possible: load it now.
        import dask.array  # noqa: F401

        self.flush_interval = float(flush_interval)
        self.max_segment_samples = int(max_segment_samples)
        self.source_name = source_name
        self._publish = publish or (lambda ev: None)
        self._clock = clock
        self._attrs = dict(attrs if attrs is not None else buffer._attrs)
        self._reader = buffer.reader()
        self._pending: list[Block] = []
        self._pending_n = 0
        self._last_time: int | None = None
        self._segments = 0
        self.saved_upto = self._reader.position
        """Write index before which every sample is durable on disk."""
        self.start_index = self._reader.position
        self._next_index = self.start_index
        self.samples_written = 0
        self.gap_samples = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._saved = threading.Condition()
        self._flush_requested = False
        text = _manifest(buffer, self._attrs, self.path.name)  # before the folder: may raise
        self._writer: WriterLock | None = None
        try:
            self.folder.mkdir(parents=True)
            self._writer = WriterLock(self.folder)  # "still recording", to readers
            write_durably(self.folder / _MANIFEST, lambda p: p.write_text(text))
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"cannot start recording into {self.folder}: {exc}"
                               ) from exc

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, daemon=True, name=f"daqlab-rec-{self.source_name or self.path.stem}"
        )
        self._thread.start()

    def _run(self) -> None:
        next_flush = self._clock() + self.flush_interval
        while not self._stop.is_set() and self.error is None:
            # nothing pending: wait for data (a due flush must not turn the wait into a spin)
            due = next_flush - self._clock() if self._pending_n else 0.1
            self._reader.wait(timeout=max(0.0, min(0.1, due)))
            self._take()
            if self._pending_n and (
                self._flush_requested or self._clock() >= next_flush
                or self._pending_n >= self.max_segment_samples
            ):
                self._flush_requested = False
                self.flush()
                next_flush = self._clock() + self.flush_interval

    def _take(self) -> None:
        block = self._reader.read(self.max_segment_samples)
        missing = block.start - self._next_index  # lapped (block.lost) or dropped by clear()
        if len(block) == 0 and missing == 0:
            return
        with self._lock:
            if missing:
                gap = self._gap(block, missing)
                self._pending.append(gap)
                self._pending_n += len(gap)
                self.gap_samples += len(gap)
            if len(block):
                self._pending.append(block)
                self._pending_n += len(block)
                self._last_time = int(block.times[-1].view(np.int64))
            self._next_index = block.stop

    def _gap(self, block: Block, n: int) -> Block:
        c = len(self.buffer.channels)
        first_lost = block.start - n
        after = int(block.times[0].view(np.int64)) if len(block) else None
        before = self._last_time
        step = 1e9 / self.buffer.sample_rate
        if before is not None and after is not None:
            times = before + np.rint((after - before) * np.arange(1, n + 1) / (n + 1))
        elif after is not None:
            times = after - np.rint(step * np.arange(n, 0, -1))
        else:
            times = (before or 0) + np.rint(step * np.arange(1, n + 1))
        t = times.astype(np.int64).view("datetime64[ns]")
        span = (
            np.int64(before if before is not None else t[0].view(np.int64)).view("datetime64[ns]"),
            np.int64(after if after is not None else t[-1].view(np.int64)).view("datetime64[ns]"),
        )
        self._publish(BufferOverflow(self.source_name, f"recorder:{self._reader.id}", n,
                                     first_lost, span))
        return Block(np.full((c, n), np.nan), np.full((c, n), Quality.BAD, np.int8), t,
                     first_lost, 0)

    def flush_through(self, index: int, timeout: float = 10.0) -> None:
        """Make every sample before write index ``index`` durable, waiting up to ``timeout`` s."""
        deadline = self._clock() + timeout
        self._flush_requested = True  # the thread looks at least every 0.1 s
        with self._saved:
            while self.saved_upto < index and self.error is None:
                alive = self._thread is not None and self._thread.is_alive()
                if not alive:
                    break
                left = deadline - self._clock()
                if left <= 0:
                    raise StorageError(
                        errno.ETIME, f"recorder {self.folder} did not save samples up to {index} within "
                        f"{timeout} s (saved up to {self.saved_upto})."
                    )
                self._saved.wait(min(left, 0.1))
        if self.saved_upto < index and self.error is None and not (
            self._thread is not None and self._thread.is_alive()
        ):
            while self._reader.available > 0:
                self._take()
            self.flush()

    def flush(self) -> None:
        """Write what is pending as one durable segment (no-op when nothing is)."""
        with self._lock:
            blocks, self._pending, self._pending_n = self._pending, [], 0
        if not blocks or self.error is not None:
            return
        values = np.concatenate([b.values for b in blocks], axis=1)
        quality = flag_quality(values, self.buffer.channels, calibrated=False,
                               quality=np.concatenate([b.quality for b in blocks], axis=1))
        times = np.concatenate([b.times for b in blocks]).view(np.int64)
        upto = blocks[-1].stop
        seg = self.folder / f"seg-{self._segments + 1:08d}.h5"

        def write(p: Path) -> None:
            with h5py.File(p, "w", libver=_LIBVER) as f:
                f.create_dataset("value", data=values)
                f.create_dataset("quality", data=quality)
                f.create_dataset("time", data=times)
                f.attrs["start"] = blocks[0].start
                f.attrs["stop"] = upto

        try:
            ensure_space(seg, values.nbytes + quality.nbytes + times.nbytes, f"segment {seg.name}")
            write_durably(seg, write)
        except (OSError, ValueError) as exc:  # h5py reports a full disk as OSError or ValueError
            self.error = exc
            self._reader.close()
            self._publish(RecordingFailed(self.source_name, self.folder, exc))
            return
        self._segments += 1
        self.samples_written += values.shape[1]
        with self._saved:
            self.saved_upto = upto
            self._saved.notify_all()
        self._publish(Recorded(self.source_name, self.folder, upto))

    def stop(self, timeout: float = 30.0) -> None:
        """Write every sample pushed so far, then end the thread."""
        if self._stop.is_set() and (self._thread is None or not self._thread.is_alive()) \
                and self._reader.available <= 0:
            return  # stopped already
        self._stop.set()
        t = self._thread
        if t is not None:
            t.join(timeout)
            if t.is_alive():
                raise StorageError(errno.ETIME,
                                   f"recorder thread for {self.folder} did not stop in {timeout} s")
        if self.error is None:
            while True:
                self._take()  # also picks up a lost count with no samples after it
                if self._pending_n >= self.max_segment_samples:
                    self.flush()
                if self._reader.available <= 0:
                    break
            self.flush()
        self._reader.close()
        self._mark_closed()

    def _mark_closed(self) -> None:
        """Note in the folder that the recorder closed it (not crashed), then let its lock go."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        with contextlib.suppress(OSError):  # e.g. a full disk: readers then see a crash, as after one
            writer.finish(self.folder, {"samples": self.samples_written, "gap_samples": self.gap_samples,
                                        "error": None if self.error is None else str(self.error)})

    def recorded(self, chunks: Any = None) -> xr.Dataset:
        """What is durable so far, as a run: the folder while recording, the file after."""
        chunks = check_chunks(chunks)
        if is_recording(self.folder):
            return open_recording_or_final(self.folder, self.path, chunks, open_netcdf)
        return open_netcdf(self.path, chunks)

    def samples(self, start: int, stop: int, *, timeout: float = 10.0) -> xr.Dataset:
        """Samples ``start .. stop - 1`` (write-counter indices) as a lazy run, from disk.

        Flushes through ``stop`` first (waiting up to ``timeout`` s, else a
        :class:`~daqlab.StorageError`), then returns what is recorded from
        ``start`` up to ``stop`` or the end of the recording, whichever comes
        first. Samples the ring buffer lapped the recorder for are there as a
        gap (NaN, flagged BAD). Raises :class:`~daqlab.DataRangeError` when the
        recorder does not have ``start``: from before it started, past what it
        recorded, or after the recording failed.
        """
        start = whole(start, "samples() start")
        stop = whole(stop, "samples() stop", minimum=start, note=f"(start is {start})")
        if self.error is not None:
            raise DataRangeError(
                f"the recording into {self.folder} failed ({self.error}), so it serves no samples; "
                f"those before {self.saved_upto} are in the folder: daqlab.open_run opens it."
            )
        if start < self.start_index:
            raise DataRangeError(
                f"sample {start} is not recorded: this recorder started at sample {self.start_index}."
            )
        self.flush_through(stop, timeout=timeout)
        recorded = self.recorded(chunks={})
        end = self.start_index + recorded.sizes["time"]
        if start > end:
            raise DataRangeError(f"sample {start} is not recorded: the recording ends at sample {end}.")
        return recorded.isel(time=slice(start - self.start_index, min(stop, end) - self.start_index))

    def discard(self) -> bool:
        """Stop; remove the recording folder if it holds no sample (a start that failed before
        any sample came). True if it was removed; a folder with samples is kept."""
        self.stop()
        if _segments(self.folder) or self.saved_upto > self.start_index:
            return False
        shutil.rmtree(self.folder, ignore_errors=True)
        fsync_dir(self.folder.parent)
        return not self.folder.exists()

    def add_metadata(self, extra: Mapping[str, Any]) -> None:
        """Merge ``extra`` into the recording's run metadata: its manifest is rewritten durably
        (a crash leaves the old one or the new one), and the final run carries it."""
        with self._lock:
            attrs = {**self._attrs, "metadata": {**self._attrs.get("metadata", {}), **dict(extra)}}
            text = _manifest(self.buffer, attrs, self.path.name)  # refuses what it cannot store
            try:
                write_durably(self.folder / _MANIFEST, lambda p: p.write_text(text))
            except OSError as exc:
                raise StorageError(exc.errno or errno.EIO,
                                   f"cannot update the manifest of {self.folder}: {exc}") from exc
            self._attrs = attrs

    def close(self, *, consolidate: bool = True, compression: bool = False) -> Path:
        """Stop, then turn the folder into the final run file (unless ``consolidate=False``)."""
        self.stop()
        if not consolidate or self.error is not None:
            return self.folder
        return consolidate_recording(self.folder, self.path, compression=compression)


# ---------------------------------------------------------------------- reading


def _channels_from(manifest: dict[str, Any]) -> tuple[Channel, ...]:
    return tuple(channel_from_record(c) for c in manifest["channels"])


def _segments(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("seg-*.h5") if not p.name.startswith("."))


def final_path_of(folder: Path, manifest: dict[str, Any] | None = None) -> Path:
    """The run file that consolidating the recording ``folder`` writes (beside it)."""
    name = manifest.get("final_name") if manifest is not None else None
    if isinstance(name, str) and name and Path(name).name == name:
        return folder.with_name(name)
    return folder.with_suffix(".nc")  # recordings from before "final_name" was kept


class _Consolidated(StorageError):
    """The recording was consolidated into ``final`` while it was read (a StorageError)."""

    def __init__(self, folder: Path, final: Path) -> None:
        super().__init__(
            errno.ENOENT,
            f"recording {folder} was finished and consolidated into {final} while it was being "
            f"read, so its segments are gone; nothing is lost: open the complete run with "
            f"daqlab.open_run({str(final)!r}).",
        )
        self.folder, self.final = folder, final

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, for dask.distributed workers
        return (_Consolidated, (self.folder, self.final))


def _raise_if_consolidated(folder: Path, final: Path, cause: BaseException | None = None) -> None:
    """Raise :class:`_Consolidated` if ``folder`` is gone because :meth:`Recorder.close` turned
    it into ``final`` (a read of it failed, or may have missed segments, for that reason)."""
    try:
        done = not is_recording(folder) and final.is_file()
    except OSError:
        done = False
    if done:
        raise _Consolidated(folder, final) from cause


def _load(path: Path, name: str, final: Path) -> NDArray[Any]:
    """One variable of one segment; a vanished or damaged segment is a DaqlabError."""
    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f[name][...])
    except (OSError, KeyError) as exc:
        folder = path.parent
        _raise_if_consolidated(folder, final, exc)
        if isinstance(exc, FileNotFoundError) or not path.exists():
            raise StorageError(
                errno.ENOENT, f"segment {path.name} of recording {folder} vanished while it was "
                f"being read ({exc}); the folder was moved or deleted. Open the run again."
            ) from exc
        raise FormatError(f"segment {path} of recording {folder} is unreadable: {exc}") from exc


def open_recording(path: str | os.PathLike[str], chunks: Any = None) -> xr.Dataset:
    """Read a recording folder (finished or left by a crash) as a run.

    Only complete segments count; hidden temporary files are ignored. With
    ``chunks`` not ``None`` the values stay on disk (one dask chunk per segment).
    A recording that :meth:`Recorder.close` consolidates while it is read (or,
    lazily, before it is loaded) raises :class:`~daqlab.StorageError` naming the
    final file to open instead; :func:`daqlab.open_run` opens that file itself.
    """
    return _open_recording(Path(path), chunks, None)


def open_recording_or_final(
    folder: Path, final: Path | None, chunks: Any, open_final: Callable[[Path, Any], xr.Dataset],
) -> xr.Dataset:
    """The recording in ``folder``; if it is consolidated meanwhile, ``open_final(final, chunks)``.

    The recorder writes the final file completely before it removes the folder, so a
    read that failed because the folder vanished finds the whole run in ``final``
    (``None``: the file the recording's manifest names).
    """
    try:
        return _open_recording(folder, chunks, final)
    except _Consolidated as exc:
        return open_final(exc.final, chunks)


def _open_recording(folder: Path, chunks: Any, final: Path | None) -> xr.Dataset:
    """Read ``folder``; ``final`` is its run file (``None``: as its manifest says)."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        guess = final or final_path_of(folder)
        _raise_if_consolidated(folder, guess, exc)
        if isinstance(exc, FileNotFoundError) and not folder.exists():
            raise StorageError(
                errno.ENOENT, f"recording folder {folder} does not exist; check the path. A "
                "recording that was closed lives on in the run file its Recorder was given "
                f"(by default {guess.name} beside it): open that with daqlab.open_run."
            ) from exc
        raise FormatError(f"{folder} is not a readable daqlab recording: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != "daqlab-recording":
        raise FormatError(f"{folder}/{_MANIFEST} does not describe a daqlab recording.")
    check_schema_version(manifest.get("schema_version", 0), source=folder, where=f"{folder}/{_MANIFEST}",
                         written_by=manifest.get("daqlab_version"))
    final = final or final_path_of(folder, manifest)
    try:
        channels = _channels_from(manifest)
    except (KeyError, TypeError, ValueError) as exc:  # ChannelError etc. are ValueErrors
        raise FormatError(f"{folder}/{_MANIFEST} is damaged: its channels cannot be read ({exc!r}).") from exc
    c = len(channels)
    try:
        listed = _segments(folder)
    except OSError as exc:  # the folder vanished while it was listed
        _raise_if_consolidated(folder, final, exc)
        raise StorageError(exc.errno or errno.EIO, f"cannot list the segments of recording "
                           f"{folder}: {exc}. Check that the folder is there and readable.") from exc
    segs = []
    for seg in listed:
        try:
            with h5py.File(seg, "r") as f:
                n = f["time"].shape[0]
                times = np.asarray(f["time"][...])
        except (OSError, KeyError) as exc:
            _raise_if_consolidated(folder, final, exc)
            raise FormatError(f"segment {seg} of recording {folder} is unreadable: {exc}") from exc
        segs.append((seg, n, times))
    times = (np.concatenate([s[2] for s in segs]) if segs else np.empty(0, np.int64)).view(
        "datetime64[ns]")
    if chunks is None:
        value: Any = (np.concatenate([_load(s[0], "value", final) for s in segs], axis=1)
                      if segs else np.empty((c, 0)))
        quality: Any = (np.concatenate([_load(s[0], "quality", final) for s in segs], axis=1)
                        if segs else np.empty((c, 0), np.int8))
    else:
        import dask.array as da  # lazily: dask.array costs ~0.5 s to import
        from dask.delayed import delayed

        def lazy(name: str, dtype: type) -> Any:
            parts = [
                da.from_delayed(delayed(_load)(s[0], name, final), (c, s[1]), dtype=dtype)  # type: ignore[no-untyped-call]
                for s in segs
            ]
            if not parts:
                return da.empty((c, 0), dtype=dtype)
            return da.concatenate(parts, axis=1)  # type: ignore[no-untyped-call]

        value, quality = lazy("value", np.float64), lazy("quality", np.int8)
    # Listing a folder that is being renamed away and deleted can miss segments without
    # any read failing; every segment was read by its path, so if the folder is still in
    # place now, it was in place for the listing too, and the listing was complete.
    if not is_recording(folder):
        _raise_if_consolidated(folder, final)
        raise StorageError(
            errno.ENOENT, f"recording {folder} vanished while it was being read (moved or "
            "deleted); nothing was returned from it. Check where it went and open that."
        )
    attrs, types = manifest.get("attrs"), manifest.get("attr_types", {})  # none in daqlab 0.1.0
    if not isinstance(attrs, dict) or not isinstance(types, dict):
        raise FormatError(f"{folder}/{_MANIFEST} is damaged: it has no 'attrs' object.")
    try:
        attrs = decode_attrs(attrs, types)
    except ValueError as exc:
        raise FormatError(f"{folder}/{_MANIFEST} is damaged: {exc}.") from None
    attrs.setdefault("metadata", {})
    run = assemble_run(value, quality, times, channels, attrs)
    return validate(run, check_data=False)


def consolidate_recording(folder: Path, path: Path, *, compression: bool = False) -> Path:
    """Write the recording in ``folder`` as the run file ``path``, then remove the folder."""
    import dask

    run = open_recording(folder, chunks={})
    # synchronous: this also runs at interpreter exit, when dask's thread pool is gone
    try:
        with dask.config.set(scheduler="synchronous"):
            save_netcdf(run, path, compression=compression)
    except FormatError as exc:  # a run NetCDF cannot hold exactly (see _encode_time)
        raise FormatError(
            f"{exc} The recording is kept, whole, in {folder}: daqlab.open_run({str(path)!r}) opens "
            "it; save it from there in another format or in parts."
        ) from exc
    # hide the folder first (one atomic rename), so a crash while deleting it never
    # leaves a visible, partly deleted recording beside the complete file
    trash = temp_name(folder)
    os.replace(folder, trash)
    fsync_dir(folder.parent)
    shutil.rmtree(trash)
    return path
