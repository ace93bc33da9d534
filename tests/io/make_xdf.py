"""An XDF writer for tests, built from the published chunk layout
(https://github.com/sccn/xdf/wiki/Specifications), and :func:`make_xdf_file`, a small
representative recording for the cross-format contract tests.

pyxdf only reads XDF; LabRecorder (the usual writer) is a C++ application. This writer puts
down exactly the bytes the specification describes, so a test can choose every detail that
real writers vary: the byte count of each length (1, 4 or 8), samples with or without their
own timestamp (LabRecorder omits the timestamps it can deduce), clock offsets, boundary
chunks and footers.

A file: ``XDF:`` then chunks ``[NumLengthBytes][Length][Tag uint16][Content]``; tags
1 FileHeader (XML), 2 StreamHeader (StreamID uint32 + XML), 3 Samples (StreamID, [varlen
NumSamples], then per sample [TimestampBytes 0|8][Timestamp double][values]), 4 ClockOffset
(StreamID, CollectionTime double, OffsetValue double), 5 Boundary (16-byte UUID),
6 StreamFooter (StreamID + XML).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["BOUNDARY", "DTYPES", "XdfWriter", "channel_names", "make_xdf_file", "varlen"]

BOUNDARY = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")
DTYPES = {"int8": "i1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "float32": "<f4",
          "double64": "<f8"}


def varlen(n: int, nbytes: int | None = None) -> bytes:
    """``n`` as an XDF variable-length integer: [1, 4 or 8][n in that many bytes, little-endian];
    the smallest that fits unless ``nbytes`` is given."""
    if nbytes is None:
        nbytes = 1 if n < 256 else 4 if n < 2**32 else 8
    return bytes([nbytes]) + n.to_bytes(nbytes, "little")


class XdfWriter:
    """Writes an XDF file chunk by chunk (use as a context manager).

    ``datetime`` goes into the file header (LabRecorder's wall-clock at file start);
    ``length_bytes`` forces the byte count of every chunk length (default: smallest)."""

    def __init__(self, path: Path, *, datetime: str | None = None, length_bytes: int | None = None,
                 header_xml: str | None = None) -> None:
        self._f = path.open("wb")
        self._length_bytes = length_bytes
        self._formats: dict[int, tuple[str, int]] = {}
        self._f.write(b"XDF:")
        if header_xml is None:
            when = f"<datetime>{escape(datetime)}</datetime>" if datetime is not None else ""
            header_xml = f'<?xml version="1.0"?><info><version>1.0</version>{when}</info>'
        self.chunk(1, header_xml.encode())

    def __enter__(self) -> XdfWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def chunk(self, tag: int, content: bytes, length_bytes: int | None = None) -> None:
        """One chunk: its length (content + the 2-byte tag), tag and content."""
        nb = length_bytes or self._length_bytes
        self._f.write(varlen(len(content) + 2, nb) + struct.pack("<H", tag) + content)

    def stream_header(self, sid: int, *, name: str, channel_format: str, nominal_srate: float,
                      channels: Sequence[tuple[str, str, str]] | int, type: str = "",
                      source_id: str = "", hostname: str = "testhost", extra_xml: str = "",
                      minimal: bool = False) -> None:
        """A StreamHeader; ``channels`` as (label, unit, type) tuples, or a count (no desc);
        ``minimal``: only the four fields a reader needs (name, count, rate, format)."""
        count = channels if isinstance(channels, int) else len(channels)
        self._formats[sid] = (channel_format, count)
        if minimal:
            xml = (f"<info><name>{escape(name)}</name><channel_count>{count}</channel_count>"
                   f"<nominal_srate>{nominal_srate!r}</nominal_srate><channel_format>"
                   f"{channel_format}</channel_format></info>")
            self.chunk(2, struct.pack("<I", sid) + xml.encode())
            return
        desc = "" if isinstance(channels, int) else "<channels>" + "".join(
            f"<channel><label>{escape(lab)}</label><unit>{escape(unit)}</unit>"
            f"<type>{escape(kind)}</type></channel>" for lab, unit, kind in channels) + "</channels>"
        xml = (f'<?xml version="1.0"?><info><name>{escape(name)}</name><type>{escape(type)}</type>'
               f"<channel_count>{count}</channel_count><nominal_srate>{nominal_srate!r}</nominal_srate>"
               f"<channel_format>{channel_format}</channel_format><source_id>{escape(source_id)}"
               f"</source_id><version>1.1</version><created_at>1000.5</created_at>"
               f"<uid>uid-{sid}</uid><session_id>default</session_id><hostname>{hostname}</hostname>"
               f"<desc>{desc}{extra_xml}</desc></info>")
        self.chunk(2, struct.pack("<I", sid) + xml.encode())

    def samples(self, sid: int, values: ArrayLike | Sequence[Sequence[str]],
                stamps: Sequence[float | None], *, count_bytes: int | None = None) -> None:
        """A Samples chunk: ``values`` (samples x channels; strings for a string stream) and one
        timestamp per sample (None: written without one, [TimestampBytes] 0)."""
        fmt, nchan = self._formats[sid]
        parts = [struct.pack("<I", sid), varlen(len(stamps), count_bytes)]
        rows: Any = values if fmt == "string" else np.asarray(values, dtype=DTYPES[fmt])
        assert len(rows) == len(stamps)
        for row, stamp in zip(rows, stamps, strict=True):
            parts.append(b"\x00" if stamp is None else b"\x08" + struct.pack("<d", stamp))
            if fmt == "string":
                assert len(row) == nchan
                for text in row:
                    data = text.encode()
                    parts.append(varlen(len(data)) + data)
            else:
                assert row.shape == (nchan,)
                parts.append(row.tobytes())
        self.chunk(3, b"".join(parts))

    def clock_offset(self, sid: int, collection_time: float, value: float) -> None:
        """A ClockOffset chunk."""
        self.chunk(4, struct.pack("<Idd", sid, collection_time, value))

    def boundary(self) -> None:
        """A Boundary chunk (its UUID lets a reader find its way after damage)."""
        self.chunk(5, BOUNDARY)

    def stream_footer(self, sid: int, *, first: float, last: float, count: int,
                      offsets: Sequence[tuple[float, float]] = ()) -> None:
        """A StreamFooter as LabRecorder writes it."""
        offs = "".join(f"<offset><time>{t!r}</time><value>{v!r}</value></offset>" for t, v in offsets)
        xml = (f'<?xml version="1.0"?><info><first_timestamp>{first!r}</first_timestamp>'
               f"<last_timestamp>{last!r}</last_timestamp><sample_count>{count}</sample_count>"
               f"<clock_offsets>{offs}</clock_offsets></info>")
        self.chunk(6, struct.pack("<I", sid) + xml.encode())


def channel_names(labels: Sequence[str]) -> list[str]:
    """The channel names daqlab gives ``labels`` ('/' -> '_', repeats '_2', '_3'...)."""
    out: list[str] = []
    for label in labels:
        name = label.replace("/", "_").strip()
        base, k = name, 1
        while name in out:
            k += 1
            name = f"{base}_{k}"
        out.append(name)
    return out


def _pattern(n: int, kind: str) -> Iterator[bool]:
    """Which samples of a chunk carry their own timestamp."""
    for i in range(n):
        yield {"all": True, "first": i == 0, "alternate": i % 2 == 0, "none": False}[kind]


def make_xdf_file(path: Path) -> dict[str, Any]:
    """Write a small representative XDF recording to ``path`` and return what it holds.

    Streams: ``EEG`` (float32, 4 channels at 100 Hz: a '/' in a label, a unicode label, a
    repeated label, µV and mV units, a NaN; samples with and without their own timestamps,
    clock offsets with a drift), ``Accel/IMU`` (int16, 3 channels at 25 Hz), ``Temperature``
    (double64, irregular: nominal rate 0) and ``Markers`` (strings). The file header has a
    ``datetime``; every stream has a footer.

    Returns ``{"nodes": {node: {...}}, "events": {node: {...}}, "datetime": str}``; a node's
    entry has ``name``, ``channels`` (daqlab's names), ``labels``, ``units``, ``values``
    (channels x samples, float64, as written), ``lsl_times`` (as written, before clock
    correction), ``rate`` (the nominal rate; None for an irregular stream), ``slopes`` and
    ``offsets`` (XDF has no scaling: 1 and 0), ``clock_offsets`` ((time, value) pairs); an
    events entry has ``labels`` and ``lsl_times``.
    """
    rng = np.random.default_rng(14)
    t0 = 5000.25
    eeg_labels = ["Fz", "C3/ref", "Ω µ-Kanal", "Fz"]
    eeg_units = ["microvolts", "microvolts", "mV", "microvolts"]
    eeg = rng.normal(0, 20, size=(4, 250)).astype(np.float32)
    eeg[1, 17] = np.nan
    eeg_t = t0 + np.arange(250) / 100.0
    acc = rng.integers(-2000, 2000, size=(3, 60)).astype(np.int16)
    acc_t = t0 + 0.013 + np.arange(60) / 25.0  # in 8 chunks of 8 (the last one 4)
    temp = np.round(rng.normal(21.5, 0.3, size=(1, 12)), 3)
    temp_t = t0 + np.sort(rng.uniform(0, 2.4, 12))
    markers = ["start", "Stimulus ✓", "resp/left", "", "pause, then go", "end"]
    mark_t = t0 + np.array([0.0, 0.4, 0.95, 1.2, 1.9, 2.45])
    offsets = [(t0 + 0.5 * k, -0.0123 + 2e-5 * k + 1e-7 * (-1) ** k) for k in range(6)]
    acc_offsets = [(t0 + 0.3, 0.002), (t0 + 1.8, 0.0021)]

    def stamps(t: NDArray[np.float64], kind: str) -> list[float | None]:
        return [float(x) if own else None for x, own in zip(t, _pattern(len(t), kind), strict=True)]

    with XdfWriter(path, datetime="2024-03-05T14:30:00+0100") as w:
        w.stream_header(1, name="EEG", type="EEG", channel_format="float32", nominal_srate=100.0,
                        channels=list(zip(eeg_labels, eeg_units, ["EEG"] * 4, strict=True)),
                        source_id="amp-001")
        w.stream_header(2, name="Accel/IMU", type="Accel", channel_format="int16", nominal_srate=25.0,
                        channels=[("x", "raw", "ACC"), ("y", "raw", "ACC"), ("z", "raw", "ACC")])
        w.stream_header(3, name="Temperature", type="Temp", channel_format="double64",
                        nominal_srate=0.0, channels=[("T sensor (°C)", "degC", "misc")])
        w.stream_header(4, name="Markers", type="Markers", channel_format="string",
                        nominal_srate=0.0, channels=1)
        kinds = ["all", "first", "alternate", "none", "all", "first", "alternate", "all"]
        for c in range(8):  # EEG in chunks of 32 (the last one shorter), the rest interleaved
            lo, hi = 32 * c, min(32 * c + 32, 250)
            w.samples(1, eeg[:, lo:hi].T, stamps(eeg_t[lo:hi], kinds[c]),
                      count_bytes=4 if c % 2 else None)
            w.samples(2, acc[:, 8 * c:8 * c + 8].T, stamps(acc_t[8 * c:8 * c + 8], "all"))
            if c < 6:
                w.clock_offset(1, *offsets[c])
                w.samples(3, temp[:, 2 * c:2 * c + 2].T, stamps(temp_t[2 * c:2 * c + 2], "all"))
                w.samples(4, [[markers[c]]], [float(mark_t[c])])
            if c in (1, 5):
                w.clock_offset(2, *acc_offsets[c // 5])
            if c == 3:
                w.boundary()
        for sid, t, offs in ((1, eeg_t, offsets), (2, acc_t, acc_offsets), (3, temp_t, []),
                             (4, mark_t, [])):
            w.stream_footer(sid, first=float(t[0]), last=float(t[-1]), count=len(t), offsets=offs)

    def node(name: str, labels: list[str], units: list[str], values: NDArray[Any],
             t: NDArray[np.float64], rate: float | None, offs: list[tuple[float, float]]) -> dict[str, Any]:
        return {"name": name, "channels": channel_names(labels), "labels": labels, "units": units,
                "values": values.astype(np.float64), "lsl_times": t, "rate": rate,
                "slopes": [1.0] * len(labels), "offsets": [0.0] * len(labels), "clock_offsets": offs}

    return {
        "datetime": "2024-03-05T14:30:00+0100",
        "nodes": {
            "EEG": node("EEG", eeg_labels, eeg_units, eeg, eeg_t, 100.0, offsets),
            "Accel_IMU": node("Accel/IMU", ["x", "y", "z"], ["raw"] * 3, acc, acc_t, 25.0, acc_offsets),
            "Temperature": node("Temperature", ["T sensor (°C)"], ["degC"], temp, temp_t, None, []),
        },
        "events": {"Markers": {"name": "Markers", "labels": markers, "lsl_times": mark_t}},
    }
