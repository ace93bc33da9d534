"""The benchmark scripts run to completion (their numbers are not checked here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ring_buffer_benchmark_quick_run_prints_the_table() -> None:
    script = ROOT / "benchmarks" / "ring_buffer.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    header = re.search(r"^\s*block\s+times\s+pushes\s*\|.*ring/bare\s*$", out, re.MULTILINE)
    assert header, out
    for block in (1, 100, 1000, 10000):
        for mode in ("given", "auto"):
            row = rf"^\s*{block}\s+{mode}\s+\d+\s*\|.*\|\s*\d+\.\d{{3}}\s*$"
            assert re.search(row, out, re.MULTILINE), f"no row for {block} {mode}:\n{out}"
    assert "ring/bare = ring throughput / bare throughput" in out
