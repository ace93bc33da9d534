"""Shutdown hooks (daqlab._shutdown): installed by start(), removed by stop(), nothing leaked.

What they do at a real interpreter exit, Ctrl-C in a script and a kernel
interrupt is checked end to end in test_interrupts.py; here real managers show
the hooks come and go with them, and the handlers do their part when called.
"""

from __future__ import annotations

import atexit
import gc
import signal
import threading
import types
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

import daqlab as dl
from daqlab._shutdown import ShutdownHooks
from daqlab.sources import Push, Simulated
from tests.helpers import wait_for


def manager(tmp_path: Path, **kw: Any) -> dl.DataManager:
    kw.setdefault("handle_sigint", True)
    return dl.DataManager(kw.pop("source", None) or Simulated(["a", "b"], 200.0, seed=0), record=False,
                          autosave_interval=None, output_dir=tmp_path, **kw)


def checkpoint_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("daqlab-sigint")]


@pytest.fixture
def exit_callbacks(monkeypatch: pytest.MonkeyPatch) -> list[Callable[[], object]]:
    """daqlab's atexit callbacks registered during the test and not unregistered (still real ones)."""
    live: list[Callable[[], object]] = []
    register, unregister = atexit.register, atexit.unregister

    def tracked_register(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        if getattr(func, "__module__", "").startswith("daqlab"):  # not dask's, on its first import
            live.append(func)
        return register(func, *args, **kwargs)

    def tracked_unregister(func: Callable[..., Any]) -> None:
        live[:] = [f for f in live if f != func]  # atexit removes by equality too
        unregister(func)

    monkeypatch.setattr(atexit, "register", tracked_register)
    monkeypatch.setattr(atexit, "unregister", tracked_unregister)
    return live


@pytest.fixture
def sigint_calls() -> Iterator[list[int]]:
    """A known SIGINT handler for the test (recording its calls), the real one back after."""
    calls: list[int] = []

    def handler(signum: int, frame: types.FrameType | None) -> None:
        calls.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield calls
    finally:
        signal.signal(signal.SIGINT, previous)


class FakeShell:
    """An IPython shell as far as the hooks see it: a real event manager, nothing else."""

    def __init__(self) -> None:
        from IPython.core.events import EventManager, available_events

        self.events = EventManager(cast(Any, self), available_events)

    def run_cell(self, error: BaseException | None) -> None:
        self.events.trigger("post_run_cell", types.SimpleNamespace(error_in_exec=error))


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch) -> FakeShell:
    import IPython

    fake = FakeShell()
    monkeypatch.setattr(IPython, "get_ipython", lambda: fake)
    return fake


def test_start_installs_the_hooks_and_stop_removes_them(
    tmp_path: Path, exit_callbacks: list[Callable[[], object]], sigint_calls: list[int], shell: FakeShell
) -> None:
    ours = signal.getsignal(signal.SIGINT)
    dm = manager(tmp_path)
    # a manager not started yet has installed nothing
    assert (exit_callbacks, signal.getsignal(signal.SIGINT)) == ([], ours)
    assert shell.events.callbacks["post_run_cell"] == []
    with dm:
        assert len(exit_callbacks) == 1
        assert signal.getsignal(signal.SIGINT) is not ours
        assert len(shell.events.callbacks["post_run_cell"]) == 1
    assert exit_callbacks == []
    assert signal.getsignal(signal.SIGINT) is ours
    assert shell.events.callbacks["post_run_cell"] == []


def test_without_handle_sigint_the_sigint_handler_is_left_alone(
    tmp_path: Path, exit_callbacks: list[Callable[[], object]], sigint_calls: list[int]
) -> None:
    ours = signal.getsignal(signal.SIGINT)
    with manager(tmp_path, handle_sigint=False):
        assert signal.getsignal(signal.SIGINT) is ours
        assert len(exit_callbacks) == 1  # interpreter exit still saves
    assert exit_callbacks == []


def test_the_exit_callback_stops_and_saves_a_running_manager(
    tmp_path: Path, exit_callbacks: list[Callable[[], object]], sigint_calls: list[int]
) -> None:
    dm = manager(tmp_path)
    dm.start()
    did = dm.create_dataset("d")
    wait_for(lambda: dm.buffers["src"].written > 0, 10, "samples")
    [at_exit] = exit_callbacks
    at_exit()  # as the interpreter does on its way out
    assert dm.state == "stopped"
    path = dm.datasets[did].path
    assert path is not None
    assert dl.open_run(path).sizes["time"] > 0
    assert exit_callbacks == []
    at_exit()  # a stopped manager is left alone


def test_a_save_failing_at_exit_is_reported_not_raised(
    tmp_path: Path, exit_callbacks: list[Callable[[], object]], sigint_calls: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = Push(["a"], 1000.0)
    dm = manager(tmp_path, source=src, buffer_samples=100)
    dm.start()
    dm.create_dataset("lost")
    src.feed(np.zeros((1, 250)))  # the ring no longer holds the dataset's start; nothing recorded it
    wait_for(lambda: dm.buffers["src"].written == 250, 10, "the samples fed")
    [at_exit] = exit_callbacks
    at_exit()
    assert dm.state == "stopped"
    err = capsys.readouterr().err
    assert "daqlab: saving 'run' at interpreter exit failed: DataRangeError" in err
    assert str(tmp_path) in err


def test_several_managers_each_remove_only_their_own_hooks(
    tmp_path: Path, exit_callbacks: list[Callable[[], object]], sigint_calls: list[int]
) -> None:
    with manager(tmp_path / "1") as first, manager(tmp_path / "2") as second:
        assert len(exit_callbacks) == 2
        first.stop()
        assert len(exit_callbacks) == 1
        assert second.running
        second.stop()
        assert exit_callbacks == []
    # stopped out of order, a handler of a stopped manager may stay: inert, it still hands on
    handler = signal.getsignal(signal.SIGINT)
    assert callable(handler)
    handler(signal.SIGINT, None)
    assert sigint_calls == [signal.SIGINT]


def test_managers_stopped_in_reverse_order_put_the_first_handler_back(
    tmp_path: Path, sigint_calls: list[int]
) -> None:
    ours = signal.getsignal(signal.SIGINT)
    with manager(tmp_path / "1"), manager(tmp_path / "2"):
        pass
    assert signal.getsignal(signal.SIGINT) is ours


def test_ctrl_c_checkpoints_and_hands_the_signal_on(tmp_path: Path, sigint_calls: list[int]) -> None:
    dm = manager(tmp_path)
    with dm:
        did = dm.create_dataset("d")
        handler = signal.getsignal(signal.SIGINT)
        assert callable(handler)
        handler(signal.SIGINT, None)  # as Python calls it on Ctrl-C
        assert sigint_calls == [signal.SIGINT], "the signal must reach the handler it replaced"
        wait_for(lambda: dm.datasets[did].path is not None, 10, "the checkpoint after Ctrl-C")
        assert dm.running  # a checkpoint, not a stop
    path = dm.datasets[did].path
    assert path is not None
    assert dl.open_run(path).sizes["time"] > 0


def test_an_interrupted_ipython_cell_checkpoints_and_a_normal_one_does_not(
    tmp_path: Path, sigint_calls: list[int], shell: FakeShell
) -> None:
    dm = manager(tmp_path)
    with dm:
        did = dm.create_dataset("d")
        shell.run_cell(None)
        shell.run_cell(ValueError("a failed cell is not an interrupt"))
        assert dm.datasets[did].path is None
        shell.run_cell(KeyboardInterrupt())
        assert dm.datasets[did].path is not None  # saved before the next cell runs
        assert dm.running
    assert shell.events.callbacks["post_run_cell"] == []


def test_a_stopped_manager_is_not_kept_alive_by_its_hooks(tmp_path: Path, sigint_calls: list[int]) -> None:
    dm = manager(tmp_path)
    ref = weakref.ref(dm)
    with dm:
        pass
    del dm
    gc.collect()
    assert ref() is None


def test_hooks_hold_their_manager_weakly_and_do_nothing_once_it_is_gone(
    tmp_path: Path, sigint_calls: list[int], shell: FakeShell
) -> None:
    dm = manager(tmp_path)
    hooks = ShutdownHooks(dm, handle_sigint=True, output_dir=tmp_path)
    hooks.install()
    try:
        ref = weakref.ref(dm)
        del dm
        gc.collect()
        assert ref() is None, "installed hooks must not keep their manager alive"
        handler = signal.getsignal(signal.SIGINT)
        assert callable(handler)
        handler(signal.SIGINT, None)
        shell.run_cell(KeyboardInterrupt())
        assert sigint_calls == [signal.SIGINT]
        assert checkpoint_threads() == [], "no checkpoint for a manager that is gone"
    finally:
        hooks.remove()
    assert not hooks.installed
    hooks.remove()  # twice is harmless


def test_stop_from_another_thread_leaves_an_inert_handler_that_still_hands_on(
    tmp_path: Path, sigint_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the main thread may set signal handlers: ours stays, doing nothing but passing on."""
    dm = manager(tmp_path)
    dm.start()
    stopper = threading.Thread(target=dm.stop)
    stopper.start()
    stopper.join(30)
    assert not stopper.is_alive()
    assert dm.state == "stopped"
    handler = signal.getsignal(signal.SIGINT)
    assert callable(handler)
    release = threading.Event()
    monkeypatch.setattr(dm, "checkpoint", lambda: release.wait(10))  # a checkpoint thread would stay
    try:
        handler(signal.SIGINT, None)
        assert checkpoint_threads() == []
    finally:
        release.set()
    assert sigint_calls == [signal.SIGINT]
