#!/usr/bin/env python3
"""Set up and run daqlab from a fresh clone with nothing but Python 3.11+.

    python3 dev.py demo [daqlab demo options]   # the main job
    python3 dev.py test [pytest options]        # every check and test

Each command creates ``.venv`` beside this file on first use, installs what it
needs (again only when pyproject.toml changes), and then runs. ``test`` also
installs the system tools the suite drives (netCDF and HDF5 command-line tools,
Chromium) with apt-get when they are missing and this user may install them.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")

# command the tests run -> Debian package that provides it
SYSTEM_TOOLS = {"ncdump": "netcdf-bin", "h5dump": "hdf5-tools", "h5clear": "hdf5-tools",
                "chromium": "chromium", "ncks": "nco", "gdalinfo": "gdal-bin", "cdo": "cdo",
                "Rscript": "r-cran-ncdf4"}
# shared library the tests load (cfchecker reads units through UDUNITS-2) -> Debian package
SYSTEM_LIBS = {"udunits2": "libudunits2-0"}


def say(msg: str) -> None:
    print(f"[dev] {msg}", flush=True)


def run(*cmd: str | Path, check: bool = True, env: dict[str, str] | None = None) -> int:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, check=check, env=env).returncode


def ensure_venv(extra: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may run under any python3
        sys.exit(f"daqlab needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if not PY.exists():
        say(f"creating virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    spec = f".[{extra}]" if extra else "."
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + spec.encode()).hexdigest()
    stamp = VENV / f".daqlab-installed-{extra or 'base'}"
    if not stamp.exists() or stamp.read_text() != digest:
        say(f"installing daqlab{'[' + extra + ']' if extra else ''} into .venv (first run takes a while)")
        run(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", spec)
        stamp.write_text(digest)


def ensure_system_tools() -> None:
    missing = {tool: pkg for tool, pkg in SYSTEM_TOOLS.items() if shutil.which(tool) is None}
    missing |= {f"lib{lib}": pkg for lib, pkg in SYSTEM_LIBS.items() if ctypes.util.find_library(lib) is None}
    if not missing:
        return
    pkgs = sorted(set(missing.values()))
    can_apt = shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0
    if not can_apt:
        say(f"missing system tools {sorted(missing)} (Debian packages {pkgs}); tests that need "
            "them fail under CI=true and skip otherwise. Install them to run everything.")
        return
    say(f"installing Debian packages {pkgs}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", check=False, env=env)
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs, check=False, env=env)


def cmd_demo(args: list[str]) -> int:
    ensure_venv("")
    code = run(BIN / "daqlab", "demo", *args, check=False)
    if code == 0 and "-h" not in args and "--help" not in args:
        say(f"daqlab is installed in {VENV}: run `source {VENV.relative_to(ROOT)}/bin/activate` to put "
            f"the daqlab command on your PATH (or call {BIN.relative_to(ROOT) / 'daqlab'} directly)")
    return code


def cmd_test(args: list[str]) -> int:
    ensure_venv("dev")
    ensure_system_tools()
    checks: list[tuple[str, list[str | Path]]] = [
        ("ruff", [BIN / "ruff", "check", "daqlab", "tests", "benchmarks", "dev.py"]),
        ("mypy", [BIN / "mypy"]),
        ("import-linter", [BIN / "lint-imports"]),
    ]
    failed = []
    for name, cmd in checks:
        say(f"{name}: {' '.join(str(c) for c in cmd[1:])}")
        if run(*cmd, check=False) != 0:
            failed.append(name)
    say("pytest")
    code = run(PY, "-m", "pytest", *args, check=False)
    if failed:
        say(f"FAILED static checks: {', '.join(failed)}")
        return 1
    return code


def main() -> int:
    commands = {"demo": cmd_demo, "test": cmd_test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
