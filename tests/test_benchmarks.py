"""The benchmark scripts run to completion (their numbers are not checked here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[1]


def run_quick(script: str, *args: str, timeout: float = 120) -> str:
    """Run ``benchmarks/<script> --quick`` to completion; its standard output."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ring_buffer_benchmark_quick_run_prints_the_table() -> None:
    out = run_quick("ring_buffer.py")
    header = re.search(r"^\s*block\s+times\s+pushes\s*\|.*ring/bare\s*$", out, re.MULTILINE)
    assert header, out
    for block in (1, 100, 1000, 10000):
        for mode in ("given", "auto"):
            row = rf"^\s*{block}\s+{mode}\s+\d+\s*\|.*\|\s*\d+\.\d{{3}}\s*$"
            assert re.search(row, out, re.MULTILINE), f"no row for {block} {mode}:\n{out}"
    assert "ring/bare = ring throughput / bare throughput" in out


def test_processing_benchmark_quick_run_prints_both_tables(tmp_path: Path) -> None:
    out = run_quick("processing.py", "--dir", str(tmp_path), timeout=300)
    num = r"[\d,]+\.\d"
    assert re.search(r"^case\s+M samples/s\s+ratio\s*$", out, re.MULTILINE), out
    for case in (r"plain scipy sosfiltfilt \+ uniform_filter1d", r"daqlab Pipeline\.apply, numpy-backed run",
                 r"daqlab Pipeline\.apply, dask chunks of [\d,]+, threads"):
        assert re.search(rf"^{case}\s+{num}\s+\d+\.\d\d\s*$", out, re.MULTILINE), f"no row {case}:\n{out}"
    assert re.search(r"^check: daqlab vs plain .*: OK$", out, re.MULTILINE), out
    header = r"^case\s+seconds\s+M samples/s\s+peak MiB\s+\+MiB\s+limit\s*$"
    assert re.search(header, out, re.MULTILINE), out
    for case, limit in ((r"copy: Pipeline\(\[\]\)\.run, threads", "-"), (r"Pipeline\.run, threads", "-"),
                        (r"Pipeline\.run, LocalCluster: client process", "-"),
                        (r"Pipeline\.run, LocalCluster: worker \(of 1\)", "400")):
        row = rf"^{case}\s+{num}\s+{num}\s+[\d,]+\s+-?[\d,]+\s+{limit}\s*$"
        assert re.search(row, out, re.MULTILINE), f"no row {case}:\n{out}"
    # the outputs are right whatever the numbers: cluster == threads, and both == the in-memory pipeline
    assert re.search(r"^worker: peak .* failed: None$", out, re.MULTILINE), out
    checked = r"^check: threaded and cluster outputs identical: True; .*\(OK\)$"
    assert re.search(checked, out, re.MULTILINE), out


def test_liveview_benchmark_quick_run_prints_the_table() -> None:
    out = run_quick("liveview.py")
    for case in ("cold (whole window)", "warm frame (prep only)", "warm frame (+ bokeh update)"):
        assert re.search(rf"^\s*{re.escape(case)} \|\s+\d+\.\d\d \|\s+\d+\.\d\d \|\s+\d+\.\d{{3}}$",
                         out, re.MULTILINE), out


def test_storage_benchmark_quick_run_prints_every_ratio(tmp_path: Path) -> None:
    out = run_quick("storage.py", "--dir", str(tmp_path))
    assert re.search(r"^case\s+daqlab MB/s\s+baseline MB/s\s+ratio\s*$", out, re.MULTILINE), out
    rows = r"CSV read [\d,]+ rows vs pandas"
    for case in (r"NetCDF save vs h5py write", r"NetCDF open\+load vs h5py read",
                 r"NetCDF open lazy\+compute vs h5py read", r"CSV write [\d,]+ rows vs pandas",
                 rf"{rows} parse only", rf"{rows} parse\+pivot", rf"{rows} parse\+unstack"):
        row = rf"^{case}\s+[\d,]+\s+[\d,]+\s+\d+\.\d\d\s*$"
        assert re.search(row, out, re.MULTILINE), f"no row {case}:\n{out}"
    assert list(tmp_path.iterdir()) == []  # its files are removed


def test_acquisition_benchmark_quick_run_prints_the_table() -> None:
    out = run_quick("acquisition.py")
    baseline = r"^baseline: plain h5py write\+fsync of float64 blocks: [\d,]+ MB/s$"
    assert re.search(baseline, out, re.MULTILINE), out
    for channels, rate in (("2", "10,000"), ("8", "100,000")):
        row = rf"^\s+{channels}\s+{rate}\s+\d+\.\d\d\s+[\d,]+\s+[\d,]+\s+.*\b(yes|no)$"
        assert re.search(row, out, re.MULTILINE), f"no row for {channels} x {rate}:\n{out}"
    assert re.search(r"^highest sustained with zero loss: ", out, re.MULTILINE), out


def test_formats_benchmark_quick_run_prints_a_row_per_case() -> None:
    out = run_quick("formats.py", timeout=300)
    assert re.search(r"^format\s+case\s+daqlab s\s+native s\s+ratio\s+target$", out, re.MULTILINE), out
    for fmt, rows in (("TDMS", 3), ("MDF4", 1), ("EDF/BDF", 2), ("WAV/FLAC", 3), ("XDF", 1)):
        row = rf"^{re.escape(fmt)} \(.*\s+\d+\.\d{{3}}\s+\d+\.\d{{3}}\s+\d+\.\d\d\s+(ok|SLOWER)$"
        found = re.findall(row, out, re.MULTILINE)
        assert len(found) == rows, f"{fmt}: {len(found)} rows of {rows}\n{out}"
    assert re.search(r"^ratio = daqlab time / the library's time; target <= 1\.25 .* worst \d+\.\d\d$",
                     out, re.MULTILINE), out


def test_lsl_benchmark_quick_run_prints_the_table() -> None:
    out = run_quick("lsl.py", timeout=300)
    header = r"^\s*channels\s+rate/ch\s+reader\s+S/s\s+lost\s+lag ms\s+max ms\s+CPU %\s+vs bare\s*$"
    assert re.search(header, out, re.MULTILINE), out
    for channels, rate in (("8", "100,000"), ("64", "1,000")):
        for reader in ("bare pylsl", "daqlab LSL"):
            row = (rf"^\s*{channels}\s+{rate}\s+{reader}\s+[\d,]+\s+0\s+-?[\d.]+\s+-?[\d.]+\s+[\d.]+"
                   r"\s+\d+\.\d\d\s*$")
            assert re.search(row, out, re.MULTILINE), f"no row {channels} x {rate} {reader}:\n{out}"


def test_catalog_benchmark_quick_run_prints_every_case(tmp_path: Path) -> None:
    out = run_quick("catalog.py", "--dir", str(tmp_path), timeout=300)
    head = r"^case\s+runs\s+seconds\s+runs/s\s+baseline\s+base s\s+ratio\s+target$"
    assert re.search(head, out, re.MULTILINE), out
    num, n = r"\d+\.\d{3}", r"[\d,]+"
    timed = rf"\s+\d+\s+{num}\s+{n}\s+"
    every, walk, ten = "dl.open_run of every file", "os.walk + os.stat", "walk+stat + open_run of the 10"
    index, rescan = r">= 200/s (PASS|MISS)", r"<= 1 s (PASS|MISS)"
    for case, baseline, target in (
            ("first index, daqlab NetCDF + CSV only", every, index),
            ("first index, mixed formats", every, "-"),
            ("rescan, nothing changed", walk, rescan),
            ("new Catalog on its index, nothing changed", walk, rescan),
            ("rescan after touching 10 files (os.utime)", ten, rescan),
            ("rescan after rewriting 10 files", ten, rescan),
            ("cat.open(row) of one NetCDF run", "dl.open_run(path)", "-"),
            ("cat.open(run id) of the same run", "dl.open_run(path)", "-")):
        row = rf"^{re.escape(case)}{timed}{re.escape(baseline)}\s+{num}\s+\d+\.\d\d\s+{target}$"
        assert re.search(row, out, re.MULTILINE), f"no row {case}:\n{out}"
    for case in (r"cat\.search\('dana'\): [1-9]\d* rows", r"cat\.search\('S-\d{4}'\): [1-9]\d* rows",
                 r"cat\.search\('degC'\): [1-9]\d* rows", r"cat\.df\.query\(\.\.\.\): \d+ rows"):
        assert re.search(rf"^{case}{timed}-\s+-\s+-\s+-$", out, re.MULTILINE), f"no row {case}:\n{out}"
    # every run made is a row: the damaged one as an error, the crashed recording as crashed
    assert re.search(r"^rows: 100 of 100 runs made; states: .*\b1 error\b", out, re.MULTILINE), out
    assert re.search(r"^rows: .*\b1 crashed\b", out, re.MULTILINE), out
    assert re.search(r"^index: \.daqlab-catalog\.sqlite \d+\.\d\d MB for 100 rows", out, re.MULTILINE), out
    assert list(tmp_path.iterdir()) == []  # its files are removed
