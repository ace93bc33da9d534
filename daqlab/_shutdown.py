"""Saving a running :class:`~daqlab.DataManager` on the way out: interpreter exit and Ctrl-C.

:class:`ShutdownHooks` installs, while its manager runs:

- an :mod:`atexit` callback that stops the manager, which saves everything;
- a SIGINT handler (main thread only) that checkpoints the manager in a thread of
  its own, then hands the signal on to the handler it replaced, so Ctrl-C still
  interrupts;
- an IPython ``post_run_cell`` hook: ipykernel swaps the SIGINT handler around
  every cell, so a cell interrupted by Ctrl-C is seen there, after the cell.

The hooks hold the manager weakly: they never keep a forgotten manager alive.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

__all__ = ["Manager", "ShutdownHooks"]

log = logging.getLogger(__name__)


class Manager(Protocol):
    """What the hooks need of a manager (:class:`~daqlab.DataManager` sits above this module)."""

    @property
    def name(self) -> str: ...

    @property
    def running(self) -> bool: ...

    def checkpoint(self) -> None: ...

    def stop(self) -> None: ...


class ShutdownHooks:
    """Stop ``manager`` at interpreter exit and checkpoint it on Ctrl-C while it runs.

    Parameters
    ----------
    manager
        The manager to save (held weakly).
    handle_sigint
        Install the SIGINT handler (it is installed only from the main thread, and
        only over a Python-level handler).
    output_dir
        Where the manager writes; named if saving at exit fails.

    Examples
    --------
    >>> import daqlab as dl
    >>> dm = dl.DataManager(dl.sources.Simulated(1, 100.0), record=False, autosave_interval=None)
    >>> hooks = ShutdownHooks(dm, handle_sigint=True, output_dir=dm.config.output_dir)
    >>> hooks.install()
    >>> hooks.installed
    True
    >>> hooks.remove()
    >>> hooks.installed
    False
    """

    def __init__(self, manager: Manager, *, handle_sigint: bool, output_dir: Path) -> None:
        self._manager = weakref.ref(manager)
        self._handle_sigint = handle_sigint
        self._output_dir = output_dir
        self._at_exit_registered = False
        self._prev_sigint: Callable[[int, FrameType | None], Any] | None = None
        self._ipython_hook: tuple[Any, Callable[[Any], None]] | None = None

    @property
    def installed(self) -> bool:
        """True between :meth:`install` and :meth:`remove`."""
        return self._at_exit_registered

    def install(self) -> None:
        """Register the exit callback, the SIGINT handler and the IPython hook."""
        atexit.register(self._stop_at_exit)  # a bound method: unregister finds this one by equality
        self._at_exit_registered = True
        self._install_sigint()
        self._install_ipython_hook()

    def remove(self) -> None:
        """Undo :meth:`install`: afterwards nothing of this manager is left registered.

        The previous SIGINT handler comes back only when called from the main thread
        (Python's rule); elsewhere ours stays, inert once the manager is stopped, and
        still hands the signal on.
        """
        if self._at_exit_registered:
            atexit.unregister(self._stop_at_exit)
            self._at_exit_registered = False
        if self._prev_sigint is not None and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGINT, self._prev_sigint)
            self._prev_sigint = None
        if self._ipython_hook is not None:
            shell, hook = self._ipython_hook
            with contextlib.suppress(ValueError):
                shell.events.unregister("post_run_cell", hook)
            self._ipython_hook = None

    def _stop_at_exit(self) -> None:
        dm = self._manager()
        if dm is not None and dm.running:
            try:
                dm.stop()
            except Exception as exc:  # at exit nobody can catch it: say it, do not hide it
                print(f"daqlab: saving {dm.name!r} at interpreter exit failed: {type(exc).__name__}: "
                      f"{exc}. What was recorded stays in {self._output_dir} (daqlab.open_run "
                      "opens a recording folder).", file=sys.stderr)

    def _install_sigint(self) -> None:
        if not self._handle_sigint or threading.current_thread() is not threading.main_thread():
            return
        prev = signal.getsignal(signal.SIGINT)
        if not callable(prev):  # SIG_IGN or SIG_DFL: nothing to hand the signal on to
            return
        ref = self._manager

        def on_sigint(signum: int, frame: FrameType | None) -> Any:
            dm = ref()
            if dm is not None and dm.running:
                threading.Thread(target=_checkpoint_quietly, args=(dm,), daemon=True,
                                 name=f"daqlab-sigint-{dm.name}").start()
            return prev(signum, frame)

        self._prev_sigint = prev
        signal.signal(signal.SIGINT, on_sigint)

    def _install_ipython_hook(self) -> None:
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
        if shell is None:
            return
        ref = self._manager

        def post_run_cell(result: Any) -> None:
            dm = ref()
            if dm is not None and dm.running and isinstance(
                getattr(result, "error_in_exec", None), KeyboardInterrupt
            ):
                _checkpoint_quietly(dm)

        shell.events.register("post_run_cell", post_run_cell)
        self._ipython_hook = (shell, post_run_cell)


def _checkpoint_quietly(dm: Manager) -> None:
    try:
        dm.checkpoint()
    except Exception:  # the interrupt goes on; stop() saves again and raises what fails then
        log.warning("checkpoint of %s failed", dm.name, exc_info=True)
