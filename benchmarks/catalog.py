"""The catalog of saved runs (``dl.Catalog``) on a folder of many small runs, against the
floors and the work it saves, measured in the same run.

Two generated folders (``_catalog_corpus.py``): N runs in mixed formats (daqlab NetCDF single
runs and trees, long and wide CSV, seed-hdf5, recording folders closed and crashed, TDMS,
EDF+, WAV, a few damaged files, nested in project/day/operator folders), and N runs of daqlab
NetCDF and CSV only. Timed (medians; the files were just written, so they are in the page
cache, as in a session that saves runs and then lists them):

- first index (no index file yet), in runs/s; baseline: ``dl.open_run`` of every file once
  (what a user does without a catalog: ``dl.open_tree`` where a file holds several runs);
- ``cat.scan()`` with nothing changed, and a new ``Catalog`` on the index already on disk
  (a new session); baseline: ``os.walk`` + ``os.stat`` of the folder, the floor of a rescan;
- ``cat.scan()`` after ``os.utime`` of 10 files, and after rewriting 10 files (same bytes);
  baseline: the walk + stat floor plus ``dl.open_run`` of those 10 files;
- ``cat.open(row)`` of one NetCDF row against ``dl.open_run`` of its path;
- ``cat.search(text)`` and ``cat.df.query(...)`` (no baseline).

Targets (issue 15, 2,000 runs): rescan with nothing changed <= 1 s; first index >= 200 runs/s
for daqlab files. Printed next to the figures as PASS/MISS (with --quick, on ~100 runs, the
verdicts are indicative only).

    python benchmarks/catalog.py            # 2,000 runs per folder
    python benchmarks/catalog.py --quick    # 100 runs, for a smoke test
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the modules beside this script

from _catalog_corpus import DAQLAB_MIX, make_corpus
from _timing import compare

import daqlab as dl

RESCAN_TARGET_S = 1.0
FIRST_INDEX_TARGET = 200.0  # runs/s, daqlab files
TOUCHED = 10


def timed(fn: Callable[[], object], repeat: int, setup: Callable[[int], object] | None = None) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs, ``setup(i)`` untimed before each."""
    times = []
    for i in range(repeat):
        if setup is not None:
            setup(i)
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def walk_stat(root: Path) -> int:
    """``os.walk`` + ``os.stat`` of every file under ``root``: the floor of any rescan."""
    n = 0
    for folder, _, files in os.walk(root):
        for name in files:
            os.stat(os.path.join(folder, name))
            n += 1
    return n


def open_each(root: Path, paths: Sequence[str]) -> int:
    """``dl.open_run`` of each path (``dl.open_tree`` where it holds several runs): what a user
    does without a catalog. Returns how many could not be opened (damaged files)."""
    failed = 0
    for rel in paths:
        try:
            dl.open_run(root / rel)
        except dl.DaqlabError:
            try:
                dl.open_tree(root / rel)
            except dl.DaqlabError:
                failed += 1
    return failed


def forget_index(cat: dl.Catalog) -> None:
    """Close ``cat`` and delete its index file, so the next ``Catalog`` indexes from scratch."""
    path = cat.index_path
    cat.close()
    if path is not None:
        for p in (path, Path(f"{path}-journal"), Path(f"{path}-wal"), Path(f"{path}-shm")):
            p.unlink(missing_ok=True)


class Table:
    """The printed table: one row per case."""

    HEAD = (f"{'case':<44} {'runs':>5} {'seconds':>9} {'runs/s':>8}  {'baseline':<34} {'base s':>8} "
            f"{'ratio':>6}  target")

    def __init__(self) -> None:
        self.lines = [self.HEAD]

    def row(self, case: str, runs: int, seconds: float, baseline: str = "-", base_s: float | None = None,
            target: str = "-") -> None:
        rate = f"{runs / seconds:>8,.0f}" if runs else f"{'-':>8}"
        base = f"{base_s:>8.3f} {seconds / base_s:>6.2f}" if base_s else f"{'-':>8} {'-':>6}"
        self.lines.append(f"{case:<44} {runs:>5} {seconds:>9.3f} {rate}  {baseline:<34} {base}  {target}")

    def __str__(self) -> str:
        return "\n".join(self.lines)


def verdict(ok: bool, text: str) -> str:
    return f"{text} {'PASS' if ok else 'MISS'}"


def bench_first_index(root: Path, repeat: int) -> tuple[float, dl.Catalog]:
    """Median time of ``dl.Catalog(root)`` with no index yet; the last catalog made (kept)."""
    cats: list[dl.Catalog] = []

    def setup(i: int) -> None:
        if cats:
            forget_index(cats.pop())

    seconds = timed(lambda: cats.append(dl.Catalog(root)), repeat, setup)
    return seconds, cats[0]


def changed_files(cat: dl.Catalog, rep: int) -> list[Path]:
    """``TOUCHED`` readable run files (no recordings), spread over the catalog, others each rep."""
    df = cat.df[(cat.df["format"] != "recording") & (cat.df["state"] != "error")]
    step = max(1, len(df) // TOUCHED)
    picks = df["path"].iloc[(rep * 7) % step::step].iloc[:TOUCHED]
    return [cat.root / p for p in picks]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 runs, for a smoke test")
    ap.add_argument("--runs", type=int, default=None,
                    help="runs per folder (default 2,000; 100 with --quick)")
    ap.add_argument("--dir", type=Path, default=None, help="folder for the files (default: a temporary one)")
    args = ap.parse_args(argv)
    n = args.runs or (100 if args.quick else 2000)
    repeat_index, repeat = (1, 3) if args.quick else (3, 7)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    folder = Path(tempfile.mkdtemp(prefix="daqlab-catalog-", dir=args.dir))
    table = Table()
    try:
        mixed, only = folder / "mixed", folder / "daqlab"
        t = time.perf_counter()
        kinds = make_corpus(mixed, n, seed=1)
        t_mixed = time.perf_counter() - t
        t = time.perf_counter()
        make_corpus(only, n, seed=2, mix=DAQLAB_MIX)
        t_only = time.perf_counter() - t
        made = ", ".join(f"{c} {k}" for k, c in sorted(kinds.items(), key=lambda kv: -kv[1]))
        print(f"corpus: {n:,} runs each; mixed ({t_mixed:.1f} s to write): {made}")
        print(f"        daqlab NetCDF + CSV only ({t_only:.1f} s to write)")

        # ---------------------------------------------------------------- first index
        # imports and readers warmed up, off the clock: the catalog's, and open_run of each format
        warm = dl.Catalog(mixed, index=":memory:")
        open_each(mixed, list(warm.df.drop_duplicates("format")["path"]))
        warm.close()
        s_only, cat_only = bench_first_index(only, repeat_index)
        paths_only = list(cat_only.df["path"])
        b_only = timed(lambda: open_each(only, paths_only), 1)
        fast = len(cat_only.df) / s_only >= FIRST_INDEX_TARGET
        table.row("first index, daqlab NetCDF + CSV only", len(cat_only.df), s_only,
                  "dl.open_run of every file", b_only, verdict(fast, f">= {FIRST_INDEX_TARGET:.0f}/s"))
        forget_index(cat_only)

        s_mixed, cat = bench_first_index(mixed, repeat_index)
        rows = len(cat.df)
        paths = list(cat.df["path"])
        b_mixed = timed(lambda: open_each(mixed, paths), 1)
        table.row("first index, mixed formats", rows, s_mixed, "dl.open_run of every file", b_mixed)

        # ---------------------------------------------------------------- rescans
        s_scan, b_walk = compare(cat.scan, lambda: walk_stat(mixed), repeat)
        table.row("rescan, nothing changed", rows, s_scan, "os.walk + os.stat", b_walk,
                  verdict(s_scan <= RESCAN_TARGET_S, f"<= {RESCAN_TARGET_S:g} s"))

        def reopen() -> None:
            dl.Catalog(mixed).close()

        s_reopen, _ = compare(reopen, lambda: walk_stat(mixed), repeat)
        table.row("new Catalog on its index, nothing changed", rows, s_reopen, "os.walk + os.stat", b_walk,
                  verdict(s_reopen <= RESCAN_TARGET_S, f"<= {RESCAN_TARGET_S:g} s"))

        touched: list[Path] = []

        def touch(i: int) -> None:
            touched[:] = changed_files(cat, i)
            for k, p in enumerate(touched):
                st = p.stat()
                os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1000 * (i + 1) + k))

        def rewrite(i: int) -> None:
            touched[:] = changed_files(cat, i + repeat)
            for p in touched:
                p.write_bytes(p.read_bytes())

        def floor_and_open() -> None:
            walk_stat(mixed)
            open_each(mixed, [p.relative_to(mixed).as_posix() for p in touched])

        for label, setup in ((f"touching {TOUCHED} files (os.utime)", touch),
                             (f"rewriting {TOUCHED} files", rewrite)):
            s_changed = timed(cat.scan, repeat, setup)
            b_changed = timed(floor_and_open, repeat)
            table.row(f"rescan after {label}", rows, s_changed, f"walk+stat + open_run of the {TOUCHED}",
                      b_changed, verdict(s_changed <= RESCAN_TARGET_S, f"<= {RESCAN_TARGET_S:g} s"))

        # ---------------------------------------------------------------- using it
        nc = cat.df.index[(cat.df["format"] == "netcdf") & (cat.df["groups"].map(len) == 1)]
        key = int(nc[len(nc) // 2])
        path = cat.path_of(key)
        s_open, b_open = compare(lambda: cat.open(key), lambda: dl.open_run(path), max(repeat, 11))
        table.row("cat.open(row) of one NetCDF run", 1, s_open, "dl.open_run(path)", b_open)
        run_id = str(cat.df.at[key, "id"])
        s_id, _ = compare(lambda: cat.open(run_id), lambda: dl.open_run(path), max(repeat, 11))
        table.row("cat.open(run id) of the same run", 1, s_id, "dl.open_run(path)", b_open)

        sample = str(cat.record(key)["metadata"]["sample"])  # a sample id: one or a few rows
        for text in ("dana", sample, "degC"):
            hits = len(cat.search(text))
            s_search = timed(partial(cat.search, text), max(repeat, 11))
            table.row(f"cat.search({text!r}): {hits} rows", rows, s_search)
        query = "n_channels >= 4 and sample_rate > 100 and bad > 0"
        hits = len(cat.df.query(query))
        s_query = timed(lambda: cat.df.query(query), max(repeat, 11))
        table.row(f"cat.df.query(...): {hits} rows", rows, s_query)

        print(table)
        print(f"cat.df.query(...): {query!r}")
        print("ratio = catalog time / baseline time, measured in this run; runs/s = rows / seconds")
        size = cat.index_path.stat().st_size if cat.index_path is not None else 0
        print(f"index: {cat.index_path.name if cat.index_path else 'in memory'} {size / 1e6:.2f} MB for "
              f"{rows:,} rows ({size / max(rows, 1):,.0f} bytes per run)")
        states = ", ".join(f"{c} {s}" for s, c in cat.df["state"].value_counts().items())
        formats = ", ".join(f"{c} {f}" for f, c in cat.df["format"].value_counts().items())
        print(f"rows: {rows:,} of {n:,} runs made; states: {states}")
        print(f"formats: {formats}")
        cat.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
