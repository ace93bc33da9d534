"""Data is saved when acquisition ends abruptly: Ctrl-C, interpreter exit, kernel shutdown.

Each case runs the acquisition in a real subprocess (or a real Jupyter kernel),
interrupts it, and opens what it left on disk.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import daqlab as dl
from tests.helpers import wait_for

START_TEMPLATE = """
import sys, time
import daqlab as dl
src = dl.sources.Simulated(2, 1000.0, seed=0)
dm = dl.DataManager(src, name="crash", output_dir=sys.argv[1], autosave_interval=None, record={record})
dm.start()
sub = dm.subscribe(kinds=dl.events.{ready_when})
assert sub.get(timeout=30) is not None, "no {ready_when} event"
print("ready", flush=True)
"""
START = START_TEMPLATE.format(record=True, ready_when="Recorded")


def _spawn(code: str, out: Path) -> subprocess.Popen[str]:
    script = out.parent / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen(
        [sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=out.parent,
        # a runner started in the background may ignore SIGINT; the child must not inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"child did not start: {line!r}\n{err}")


def _saved_run(out: Path) -> None:
    files = sorted(out.glob("*.nc"))
    assert len(files) == 1, f"expected one saved run in {out}: {list(out.iterdir())}"
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".daqrec"]
    assert not leftovers, f"temporary files or recording folders left: {leftovers}"
    run = dl.open_run(files[0])
    assert run.sizes["time"] >= 100, "the saved run lacks the samples recorded before the interrupt"
    assert int(np.isnan(run.value.values).sum()) == 0
    d = np.diff(run.time.values.view(np.int64))
    assert (d == 1_000_000).all(), "samples missing or duplicated in the saved run"


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param("while True:\n    time.sleep(0.01)\n", id="bare-script"),
        pytest.param("with dm:\n    while True:\n        time.sleep(0.01)\n", id="with-block"),
    ],
)
def test_ctrl_c_in_a_script_saves_the_run(tmp_path: Path, tail: str) -> None:
    out = tmp_path / "out"
    proc = _spawn(START + tail, out)
    try:
        _wait_ready(proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in err
    _saved_run(out)


def _exit_normally(start: str, out: Path) -> None:
    """Run ``start`` and let the script end without calling stop(); it must exit cleanly."""
    proc = _spawn(start + "time.sleep(0.2)\n", out)
    try:
        _wait_ready(proc)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err


def test_interpreter_exit_saves_the_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _exit_normally(START, out)
    _saved_run(out)


def test_interpreter_exit_without_recording_writes_nothing(tmp_path: Path) -> None:
    """record=False: exit saves no ring buffer (notebook kernels wrote 19-52 MB each time)."""
    out = tmp_path / "out"
    _exit_normally(START_TEMPLATE.format(record=False, ready_when="NewData"), out)
    assert not out.exists() or not list(out.iterdir()), list(out.iterdir())


@pytest.mark.timeout(180)
def test_kernel_interrupt_checkpoints_and_shutdown_saves(tmp_path: Path) -> None:
    """In a real ipykernel: Ctrl-C in a running cell saves the datasets, acquisition goes on,
    and shutting the kernel down saves everything."""
    jupyter_client = pytest.importorskip("jupyter_client")
    out = tmp_path / "out"
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)

        def run(code: str, timeout: float = 60) -> dict[str, object]:
            return _shell_reply(kc, kc.execute(code), timeout)

        reply = run(textwrap.dedent(f"""
            import daqlab as dl
            dm = dl.DataManager(dl.sources.Simulated(2, 1000.0, seed=0), name="nb",
                                output_dir={str(out)!r}, autosave_interval=None)
            dm.start()
            ds = dm.create_dataset("cell", ["ch0"])
        """))
        assert reply["status"] == "ok", reply
        msg_id = kc.execute("import time\nwhile True:\n    time.sleep(0.01)\n")
        # let the cell get going, then Ctrl-C it (the kernel's interrupt is a SIGINT)
        wait_for(lambda: _busy(kc, msg_id), 30, "the long cell to start")
        km.interrupt_kernel()
        reply = _shell_reply(kc, msg_id, 60)
        assert reply["status"] == "error"
        assert reply["ename"] == "KeyboardInterrupt"
        wait_for(lambda: any(out.glob("cell-*.nc")), 30, "the dataset checkpoint after Ctrl-C")
        first = dl.open_run(next(out.glob("cell-*.nc")))
        assert first.sizes["time"] > 0
        reply = run(textwrap.dedent("""
            assert dm.running
            w, deadline = dm.buffers['src'].written, time.monotonic() + 10
            while dm.buffers['src'].written <= w:
                assert time.monotonic() < deadline, "acquisition stalled"
                time.sleep(0.01)
        """))
        assert reply["status"] == "ok", reply  # acquisition went on after the interrupt
        km.shutdown_kernel(now=False)
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)
    recorded = list(out.glob("*-nb-*.nc"))
    assert len(recorded) == 1, list(out.iterdir())
    run_ = dl.open_run(recorded[0])
    assert run_.sizes["time"] > first.sizes["time"]
    final = dl.open_run(next(out.glob("cell-*.nc")))
    assert final.sizes["time"] >= first.sizes["time"]
    assert not list(out.glob("*.daqrec"))


def _shell_reply(kc: Any, msg_id: str, timeout: float) -> dict[str, object]:
    """The shell reply to our own request ``msg_id``: under load an earlier reply may still be queued."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = kc.get_shell_msg(timeout=left)
        except queue.Empty:
            break
        if msg["parent_header"].get("msg_id") == msg_id:
            content: dict[str, object] = msg["content"]
            return content
    pytest.fail(f"no shell reply to request {msg_id} within {timeout} s")


def _busy(kc: object, msg_id: str) -> bool:
    try:
        msg = kc.get_iopub_msg(timeout=0.05)  # type: ignore[attr-defined]
    except queue.Empty:
        return False
    return bool(
        msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input"
    )
