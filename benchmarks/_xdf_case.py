"""XDF reading: ``daqlab.open_tree`` against ``pyxdf.load_xdf`` on the same file.

The file is what LabRecorder makes of a 32-channel EEG amplifier: float32 samples at 1 kHz for
12 minutes, in Samples chunks of 32 stamped samples (about 99 MB), a ClockOffset chunk every
5 s, a marker stream with one marker a second, and footers. ``bench_xdf(tmpdir)`` returns
``[(label, daqlab_seconds, pyxdf_seconds)]`` (medians, one warm-up each, runs alternated).

Target: daqlab <= 1.25x pyxdf's time (daqlab decodes each chunk with numpy where pyxdf loops
over samples in Python; both read the whole file: XDF has no index).

    python benchmarks/_xdf_case.py            # the 99 MB file
    python benchmarks/_xdf_case.py --quick    # 1 minute of data, for a smoke test
"""

from __future__ import annotations

import argparse
import importlib
import logging
import struct
import tempfile
from pathlib import Path

import numpy as np
from _timing import compare

import daqlab as dl

__all__ = ["bench_xdf", "write_xdf"]

_T0 = 81234.5  # LSL seconds (since the recording machine's boot)


def _chunk(tag: int, content: bytes) -> bytes:
    return b"\x04" + struct.pack("<IH", len(content) + 2, tag) + content


def write_xdf(path: Path, *, channels: int = 32, rate: float = 1000.0, seconds: int = 720,
              per_chunk: int = 32) -> int:
    """Write the benchmark's XDF file (see the module docstring); its size in bytes.

    The EEG chunks are laid down as one numpy record array (the layout is fixed: every
    sample stamped), so that writing ~100 MB takes a moment."""
    rng = np.random.default_rng(14)
    n_chunks = int(seconds * rate) // per_chunk
    sample = np.dtype([("flag", "u1"), ("t", "<f8"), ("v", "<f4", (channels,))])
    chunk = np.dtype([("nb", "u1"), ("length", "<u4"), ("tag", "<u2"), ("sid", "<u4"),
                      ("cnb", "u1"), ("count", "<u4"), ("s", sample, (per_chunk,))])
    eeg = np.zeros(n_chunks, chunk)
    eeg["nb"], eeg["length"], eeg["tag"], eeg["sid"] = 4, chunk.itemsize - 5, 3, 1
    eeg["cnb"], eeg["count"] = 4, per_chunk
    eeg["s"]["flag"] = 8
    eeg["s"]["t"] = (_T0 + np.arange(n_chunks * per_chunk) / rate).reshape(n_chunks, per_chunk)
    eeg["s"]["v"] = rng.normal(0.0, 25.0, size=(n_chunks, per_chunk, channels)).astype(np.float32)
    desc = "".join(f"<channel><label>EEG{i:02d}</label><unit>microvolts</unit><type>EEG</type>"
                   "</channel>" for i in range(channels))
    info = ('<?xml version="1.0"?><info><name>{}</name><type>{}</type><channel_count>{}'
            "</channel_count><nominal_srate>{}</nominal_srate><channel_format>{}</channel_format>"
            "<desc>{}</desc></info>")
    per_second = int(rate) // per_chunk
    offsets: list[tuple[float, float]] = []
    with path.open("wb") as f:
        f.write(b"XDF:" + _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version>'
                                    b"<datetime>2026-11-24T09:00:00+0100</datetime></info>"))
        f.write(_chunk(2, struct.pack("<I", 1) + info.format(
            "EEG", "EEG", channels, rate, "float32", f"<channels>{desc}</channels>").encode()))
        f.write(_chunk(2, struct.pack("<I", 2) + info.format(
            "Markers", "Markers", 1, 0, "string", "").encode()))
        for second, lo in enumerate(range(0, n_chunks, per_second)):
            f.write(eeg[lo:lo + per_second].tobytes())
            label = f"block {second}".encode()
            stamp = struct.pack("<d", _T0 + lo * per_chunk / rate)
            f.write(_chunk(3, struct.pack("<IBBB", 2, 1, 1, 8) + stamp + bytes([1, len(label)]) + label))
            if second % 5 == 0:
                offsets.append((_T0 + second, -0.0312 + 1e-6 * second))
                f.write(_chunk(4, struct.pack("<Idd", 1, *offsets[-1])))
        n = n_chunks * per_chunk
        footer = (f'<?xml version="1.0"?><info><first_timestamp>{_T0}</first_timestamp>'
                  f"<last_timestamp>{_T0 + (n - 1) / rate}</last_timestamp><sample_count>{n}"
                  "</sample_count><clock_offsets>" + "".join(
                      f"<offset><time>{t}</time><value>{v}</value></offset>" for t, v in offsets)
                  + "</clock_offsets></info>")
        f.write(_chunk(6, struct.pack("<I", 1) + footer.encode()))
        f.write(_chunk(6, struct.pack("<I", 2) + b'<?xml version="1.0"?><info><sample_count>'
                       + str(len(range(0, n_chunks, per_second))).encode() + b"</sample_count></info>"))
    return path.stat().st_size


def bench_xdf(tmpdir: Path, *, seconds: int = 720, repeat: int = 3) -> list[tuple[str, float, float]]:
    """``[(label, daqlab_seconds, pyxdf_seconds)]``: medians of ``dl.open_tree(p)`` and
    ``pyxdf.load_xdf(p)`` on the same file (``seconds`` of 32 channels at 1 kHz)."""
    pyxdf = importlib.import_module("pyxdf")
    logging.getLogger("pyxdf").setLevel(logging.ERROR)  # its notes on segments are not the point here
    path = Path(tmpdir) / "bench.xdf"
    size = write_xdf(path, seconds=seconds)
    ours, base = compare(lambda: dl.open_tree(path), lambda: pyxdf.load_xdf(str(path)), repeat)
    label = f"XDF open_tree vs pyxdf.load_xdf ({size / 1e6:.0f} MB, 32 ch x 1 kHz float32, {seconds} s)"
    return [(label, ours, base)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 minute of data, one run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_xdf(Path(tmp), seconds=60 if args.quick else 720, repeat=1 if args.quick else 3)
    for label, ours, base in rows:
        print(f"{label}: daqlab {ours:.2f} s, pyxdf {base:.2f} s, ratio {ours / base:.2f}x "
              f"(target <= 1.25x)")


if __name__ == "__main__":
    main()
