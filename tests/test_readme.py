"""Every code block in the README runs verbatim, in order, in a fresh folder.

Python blocks share one namespace (as cells of one notebook do); shell blocks run
in the same folder with the test environment's ``bin`` first on ``PATH`` (where
``daqlab`` lives). A block may be left out only with a comment right above it,
``<!-- readme-test: skip REASON -->``, and only where something else runs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SKIP = re.compile(r"<!-- readme-test: skip (.+?) -->\s*$")

# where the blocks the README may leave out are run instead
SKIPPABLE = {
    "python3 dev.py demo": "tests/test_cli.py runs daqlab demo",
    "python3 dev.py test": "this is the suite itself",
    "benchmarks/": "tests/test_benchmarks.py runs every benchmark with --quick",
}

# guarded: dask.distributed's worker processes start by re-importing the main module
DRIVER = r"""
import json, subprocess, sys
if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        blocks = json.load(f)
    ns = {"__name__": "__main__"}
    for lang, line, code in blocks:
        print(f"--- README.md:{line} ({lang})", flush=True)
        if lang == "python":
            exec(compile(code, f"README.md:{line}", "exec"), ns)
        else:
            subprocess.run(["bash", "-euo", "pipefail", "-c", code], check=True)
"""


def readme_blocks() -> list[tuple[str, int, str, str | None]]:
    """``(language, line, code, skip reason)`` of each fenced block of the README."""
    text = README.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        blocks.append((m.group(1), line, m.group(2), skip.group(1) if skip else None))
    return blocks


def test_readme_blocks_are_python_or_shell_and_skips_are_run_elsewhere() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 5
    for lang, line, code, skip in blocks:
        if lang in ("", "text"):  # a layout drawing, not code
            assert skip is None, f"README.md:{line}: a text block needs no skip"
            continue
        assert lang in ("python", "bash"), f"README.md:{line}: unknown block language {lang!r}"
        if skip is not None:
            commands = [c for c in code.splitlines() if c.strip() and not c.startswith("#")]
            for c in commands:
                assert any(k in c for k in SKIPPABLE), (
                    f"README.md:{line}: {c!r} is skipped but nothing else runs it; run it here")


# distributed's own shutdown race (dask/distributed#7105, #9032): on a busy machine a worker's
# heartbeat can meet the scheduler's closed stream while LocalCluster closes; it logs this one
# error with its traceback, after every result was computed and written. Only that block is
# dropped, ending at the CommClosedError of the heartbeat's own connection.
_HEARTBEAT_NOISE = re.compile(
    r"^[^\n]*distributed\.worker - ERROR - Failed to communicate with scheduler during heartbeat\."
    r".*?^distributed\.comm\.core\.CommClosedError: in <TCP \(closed\) "
    r"ConnectionPool\.heartbeat_worker [^\n]*: Stream is closed$\n?",
    re.MULTILINE | re.DOTALL)


def _without_heartbeat_noise(text: str) -> str:
    """``text`` without distributed's heartbeat-at-shutdown error blocks.

    >>> block = ("2026-01-01 - distributed.worker - ERROR - Failed to communicate with scheduler "
    ...          "during heartbeat.\\nTraceback (most recent call last):\\n  ...\\n"
    ...          "distributed.comm.core.CommClosedError: in <TCP (closed) "
    ...          "ConnectionPool.heartbeat_worker local=tcp://a remote=tcp://b>: Stream is closed\\n")
    >>> _without_heartbeat_noise("ok\\n" + block + "Traceback: real\\n")
    'ok\\nTraceback: real\\n'
    """
    return _HEARTBEAT_NOISE.sub("", text)


@pytest.mark.timeout(600)
def test_readme_code_runs_verbatim(tmp_path: Path) -> None:
    runnable = [(lang, line, code) for lang, line, code, skip in readme_blocks()
                if lang in ("python", "bash") and skip is None]
    assert [lang for lang, _, _ in runnable].count("python") >= 4
    (tmp_path / "blocks.json").write_text(json.dumps(runnable))
    (tmp_path / "driver.py").write_text(DRIVER)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MPLBACKEND": "Agg"}
    env.pop("PYTHONPATH", None)  # the installed package, as a reader of the README has it
    proc = subprocess.run([sys.executable, "-W", "error", str(tmp_path / "driver.py"),
                           str(tmp_path / "blocks.json")], cwd=work, env=env,
                          capture_output=True, text=True, timeout=560)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    noise = [line for line in _without_heartbeat_noise(proc.stdout + proc.stderr).splitlines()
             if re.search(r"warn|error|traceback", line, re.IGNORECASE)]
    assert not noise, f"the README's code printed warnings or errors: {noise}"
    made = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
    # "A taste" must record something: a recording and a dataset, both non-empty runs
    assert any(re.fullmatch(r"runs/.*-run-[0-9a-f]{8}\.nc", p) for p in made), made
    assert any(re.fullmatch(r"runs/warm-up-[0-9a-f]{8}\.nc", p) for p in made), made
    # hidden files are temporary ones left behind, except the catalog's index
    assert not [p for p in made if Path(p).name.startswith(".") and p != ".daqlab-catalog.sqlite"], (
        f"temporary files left: {made}")
    import daqlab as dl
    from daqlab.tree import run_nodes

    for name in made:
        if name.endswith(".nc"):
            for key, run in run_nodes(dl.open_tree(work / name)).items():
                assert run.sizes["time"] > 0, f"{name} ({key}) holds no samples"
