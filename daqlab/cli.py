"""The ``daqlab`` command line: ``demo``, ``info``, ``convert``, ``ls``, ``lab``."""

from __future__ import annotations

import argparse
import errno
import importlib.util
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from tqdm import tqdm

from daqlab._version import __version__
from daqlab.acquisition import DataManager
from daqlab.catalog import Catalog
from daqlab.errors import ConfigurationError, DaqlabError, StorageError
from daqlab.io import FORMATS, TABLE, detect_format, is_recording, open_run, open_tree, path_error, save
from daqlab.model import Quality
from daqlab.sources import Simulated
from daqlab.tree import events_nodes, run_nodes

__all__ = ["ls_table", "main", "summary", "tree_summary"]


MAX_DEMO_CHANNELS = 10_000  # beyond, building the simulated channels takes minutes and GBs


def _positive(kind: type[int] | type[float], most: float = math.inf) -> argparse._ActionType:
    def parse(text: str) -> float:
        what = "a whole number" if kind is int else "a finite number"
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (v > 0 and math.isfinite(v)):  # nan fails v > 0
            raise argparse.ArgumentTypeError(f"must be {what} > 0, got {text}")
        if v > most:
            raise argparse.ArgumentTypeError(f"must be at most {most:g}, got {text}")
        return v

    return parse


def summary(run: xr.Dataset, path: Path | None = None) -> str:
    """A few human lines about a run: channels, samples, rate, span, quality."""
    names = run.daq.channel_names
    n = run.sizes["time"]
    q = np.asarray(run["quality"].values)
    lines = [
        f"run        {run.attrs.get('name') or '(unnamed)'}  id {run.attrs['id']}",
        f"channels   {len(names)}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}",
        f"samples    {n} per channel at {run.attrs['sample_rate']:g} Hz "
        f"({run.daq.duration:.3f} s)",
    ]
    if n:
        lines.append(f"time       {run.time.values[0]} .. {run.time.values[-1]} UTC")
    tally = {f.name.lower(): int((q == f).sum()) for f in Quality}
    counts = ", ".join(f"{name} {k}" for name, k in tally.items())
    other = q.size - sum(tally.values())
    # flags outside daqlab.Quality (a damaged file opened lazily) are counted, not dropped
    lines.append(f"quality    {counts}" + (f", not a Quality flag {other}" if other else ""))
    lines.append(f"calibrated {bool(run.attrs['calibrated'])}")
    if path is not None:
        lines.append(f"file       {path}")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    seconds, channels, rate = float(args.seconds), int(args.channels), float(args.rate)
    if not math.isfinite(seconds * rate):
        raise ConfigurationError(
            f"--seconds {seconds:g} at --rate {rate:g} gives more samples than a float counts; "
            "ask for fewer seconds or a lower rate."
        )
    total = round(seconds * rate)
    if total < 1:
        raise ConfigurationError(
            f"--seconds {seconds} at --rate {rate} gives no samples; ask for at least one."
        )
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise StorageError(
            exc.errno or errno.EIO,
            f"--out {out}: cannot make the run folder there (it, or a folder on the way, is a "
            "file); give a folder that exists or can be created.",
        ) from None
    except OSError as exc:  # too long, no permission, ...
        raise path_error(out, exc, "make the run folder") from None
    source = Simulated(channels, rate, seed=args.seed, duration=seconds)
    manager = DataManager(source, name="demo", output_dir=out, autosave_interval=None,
                          buffer_seconds=min(seconds, 10.0))
    buffer = manager.buffers["src"]
    with tqdm(total=total, unit="sample", unit_scale=True, desc="acquiring",
              disable=args.quiet) as bar, manager:
        while not manager.wait(timeout=0.1):
            bar.update(buffer.written - bar.n)
        bar.update(buffer.written - bar.n)
    path = manager.recorders["src"].path
    run = open_run(path, chunks={})
    print(summary(run, path))
    if not args.no_plot:
        from daqlab.view import RunPlot

        page = RunPlot(run, title=f"daqlab demo: {path.name}").save_html(
            path.with_suffix(".html"), overwrite=True)
        print(f"plot: {page}")
    return 0


def tree_summary(tree: xr.DataTree, path: Path | None = None) -> str:
    """:func:`summary` of each run of a tree (one group after the other), and its events nodes;
    a tree of one run is that run's summary."""
    runs, events = run_nodes(tree), events_nodes(tree)
    if list(runs) == ["/"] and not events:
        return summary(runs["/"], path)
    lines = [f"tree       {tree.attrs.get('name') or '(unnamed)'}  id {tree.attrs.get('id', '?')}",
             f"groups     {len(runs)} run(s): {', '.join(runs)}"
             + (f"; {len(events)} events node(s): {', '.join(events)}" if events else "")]
    if path is not None:
        lines.append(f"file       {path}")
    for key, run in runs.items():
        lines += ["", f"group {key}", *(f"  {line}" for line in summary(run).splitlines())]
    for key, ev in events.items():
        n = ev.sizes.get("event", 0)
        span = f", {ev['time'].values[0]} .. {ev['time'].values[-1]} UTC" if n else ""
        labels = sorted({str(x) for x in ev["label"].values.tolist()})
        lines += ["", f"events {key}", f"  {n} event(s){span}",
                  f"  labels {', '.join(labels[:8])}{' ...' if len(labels) > 8 else ''}"]
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.is_dir() and not is_recording(path):
        print(Catalog(path).summary())
        return 0
    tree = open_tree(path, chunks={})
    fmt = detect_format(path)
    described = {f.name: f.description for f in TABLE}
    print(tree_summary(tree, path))
    print(f"format     {fmt}" + (f" ({described[fmt]})" if fmt in described else ""))
    return 0


def _convert(args: argparse.Namespace) -> int:
    src, dst = Path(args.src), Path(args.dst)
    tree = open_tree(src, chunks={})
    runs = run_nodes(tree)
    out = save(runs["/"] if list(runs) == ["/"] else tree, dst, args.format,
               overwrite=args.overwrite, compression=args.compress)
    what = ", ".join(("" if key == "/" else f"{key}: ")
                     + f"{run.sizes['channel']} channels x {run.sizes['time']} samples"
                     for key, run in runs.items())
    print(f"{detect_format(src)} {src} -> {detect_format(out)} {out} ({what})")
    return 0


LS_COLUMNS = ("path", "format", "state", "name", "start", "duration", "sample_rate", "n_channels",
              "samples", "bad", "bytes", "error")


def _cell(column: str, value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return ""
    if column in ("good", "suspect", "bad", "interpolated"):
        return f"{100 * float(value):.3g}%"  # type: ignore[arg-type]
    if column == "bytes":
        n = float(value)  # type: ignore[arg-type]
        unit = next(u for u, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3), ("B", 0)) if n >= k)
        return f"{n / {'GB': 1e9, 'MB': 1e6, 'kB': 1e3, 'B': 1}[unit]:.3g} {unit}"
    if column in ("duration", "sample_rate"):
        return f"{float(value):g}"  # type: ignore[arg-type]
    if isinstance(value, pd.Timestamp):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, list):
        return ",".join(map(str, value))
    return " ".join(str(value).split())[:60]


def ls_table(df: pd.DataFrame, columns: Sequence[str] = LS_COLUMNS) -> str:
    """The rows of a catalog as a text table (one line per run, columns padded)."""
    header = [{"n_channels": "ch", "sample_rate": "rate_hz", "duration": "seconds"}.get(c, c)
              for c in columns]
    cells = [[_cell(c, v) for c, v in zip(columns, row, strict=True)]
             for row in df[list(columns)].itertuples(index=False)]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    right = {"duration", "sample_rate", "n_channels", "samples", "bad", "bytes"}
    def line(items: Sequence[str]) -> str:
        return "  ".join(x.rjust(w) if c in right else x.ljust(w)
                         for x, w, c in zip(items, widths, columns, strict=True)).rstrip()
    return "\n".join([line(header), *(line(r) for r in cells)])


def _ls(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        raise ConfigurationError(f"daqlab ls lists a folder of runs; {folder} is not a folder. "
                                 "For one run use: daqlab info PATH.")
    cat = Catalog(folder)
    df = cat.df
    if args.sort is not None:
        if args.sort not in df.columns:
            raise ConfigurationError(f"--sort {args.sort!r} is not a column; the columns are "
                                     f"{list(df.columns)}.")
        df = df.sort_values(args.sort, ascending=not args.reverse, kind="stable", na_position="last")
    elif args.reverse:
        df = df.iloc[::-1]
    if args.json:
        print(df.to_json(orient="records", date_format="iso", date_unit="ns", indent=1))
        return 0
    if not len(df):
        print(f"no runs in {cat.root}")
        return 0
    unreadable = int((df["state"] == "error").sum())
    # the error column only when a run has one
    print(ls_table(df, LS_COLUMNS if unreadable else LS_COLUMNS[:-1]))
    print(f"{len(df)} runs in {cat.root}" + (f"; {unreadable} unreadable (their error is in the last "
                                             "column)" if unreadable else ""))
    return 0


def notebooks_folder() -> Path:
    """The repository's notebooks/ (next to the package in a checkout), else ./notebooks."""
    beside = Path(__file__).resolve().parents[1] / "notebooks"
    return beside if beside.is_dir() else Path.cwd() / "notebooks"


def _lab(args: argparse.Namespace) -> int:
    folder = Path(args.folder) if args.folder else notebooks_folder()
    if not folder.is_dir():
        raise ConfigurationError(f"no notebooks folder at {folder}; pass one: daqlab lab FOLDER.")
    if importlib.util.find_spec("jupyterlab") is None:
        raise ConfigurationError(
            "JupyterLab is not installed in this environment; install it with "
            "`pip install 'daqlab[lab]'` (or `pip install jupyterlab`), then run daqlab lab again."
        )
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={folder}", *args.jupyter_args]
    print(f"daqlab lab: {' '.join(cmd)}")
    return subprocess.call(cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="daqlab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"daqlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="record a simulated acquisition to disk and summarise it")
    demo.add_argument("--seconds", type=_positive(float), default=5.0, help="length (default 5)")
    demo.add_argument("--channels", type=_positive(int, MAX_DEMO_CHANNELS), default=4,
                      help=f"channel count (default 4, at most {MAX_DEMO_CHANNELS})")
    demo.add_argument("--rate", type=_positive(float), default=10_000.0,
                      help="sample rate in Hz (default 10000)")
    demo.add_argument("--out", default="daqlab-runs", help="folder for the run (default ./daqlab-runs)")
    demo.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument("--no-plot", action="store_true", help="do not write the HTML plot beside the run")
    demo.set_defaults(func=_demo)
    info = sub.add_parser("info", help="summarise a saved run (or a folder of runs: its catalog)")
    info.add_argument("path")
    info.set_defaults(func=_info)
    conv = sub.add_parser("convert", help="convert a run between formats (any format daqlab reads)")
    conv.add_argument("src", help="a saved run or recording folder")
    conv.add_argument("dst", help="the file to write; the format follows its suffix unless --format")
    conv.add_argument("--format", choices=FORMATS, default=None, help="output format: " + "; ".join(
        f"{f.name}: {f.description}" for f in TABLE if f.save is not None))
    conv.add_argument("--overwrite", action="store_true", help="replace dst if it exists")
    conv.add_argument("--compress", action="store_true", help="zlib-compress NetCDF values")
    conv.set_defaults(func=_convert)
    ls = sub.add_parser("ls", help="list the runs under a folder (daqlab.Catalog), one per line",
                        description="List every run under DIR: files of every format daqlab reads and "
                        "recording folders, with their state (complete, recording, crashed, error). An "
                        "index (.daqlab-catalog.sqlite) in DIR makes the next listing quick. Example: "
                        "daqlab ls runs --sort start")
    ls.add_argument("dir", help="the folder of runs")
    ls.add_argument("--json", action="store_true", help="every column of every row, as JSON records")
    ls.add_argument("--sort", default=None, metavar="COL",
                    help="sort by this column (e.g. start, duration, bytes, bad); default: path")
    ls.add_argument("--reverse", action="store_true", help="largest / latest first")
    ls.set_defaults(func=_ls)
    lab = sub.add_parser("lab", help="open JupyterLab on daqlab's notebooks")
    lab.add_argument("folder", nargs="?", default=None, help="notebook folder (default: notebooks/)")
    lab.add_argument("jupyter_args", nargs=argparse.REMAINDER, help="passed on to jupyter lab")
    lab.set_defaults(func=_lab)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``daqlab`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except DaqlabError as exc:
        print(f"daqlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # what the OS refused and daqlab did not name (disk full, ...)
        print(f"daqlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"daqlab {args.command}: interrupted", file=sys.stderr)
        return 130
    return code
