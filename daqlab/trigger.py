"""Triggers: where a channel crosses a level (or enters or leaves a band), found block by block.

:class:`Trigger` says what to look for; :class:`Detector` finds it in the blocks a lossless
reader gives, with numpy over each block (no Python per sample) and the state that spans
blocks (whether the signal was below the arming threshold, where the hold-off ends) carried
from one block to the next, so a trigger at a block's first sample is found exactly as one in
its middle. Capturing the samples around a trigger: :mod:`daqlab.captures`.

Edges use hysteresis as an oscilloscope does: a rising trigger is armed once the value is
below ``level - hysteresis`` and fires at the first sample at or above ``level`` after that
(falling: above ``level + hysteresis``, then at or below ``level``); noise around the level
cannot fire it again until it is armed again. A window trigger (``level=(low, high)``) fires
where the value enters the band (``edge="enter"``), leaves it (``"leave"``) or either.
NaN, infinite and BAD samples never fire a trigger, nor arm it: they are skipped, as if absent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from daqlab.checks import as_float
from daqlab.errors import ConfigurationError
from daqlab.model import Channel, Quality

__all__ = ["EDGES", "MODES", "Detector", "Trigger"]

EDGES = ("rising", "falling", "either", "enter", "leave")
MODES = ("normal", "single", "auto")

Edge = Literal["rising", "falling", "either", "enter", "leave"]
Mode = Literal["normal", "single", "auto"]


def _seconds(value: Any, what: str, *, positive: bool = False) -> float:
    number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    v = as_float(value) if number else None
    if v is None or not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ConfigurationError(
            f"Trigger's {what} must be a finite number of seconds {'> 0' if positive else '>= 0'}; "
            f"got {value!r:.60}.")
    return v


@dataclass(frozen=True)
class Trigger:
    """What to trigger on, and what to capture around it.

    Parameters
    ----------
    channel
        The channel name whose values are watched.
    level
        The level (in the channel's raw units, or physical ones with ``calibrated=True``), or a
        band ``(low, high)`` for a window trigger.
    edge
        ``"rising"``, ``"falling"`` or ``"either"`` for a level; ``"enter"``, ``"leave"`` or
        ``"either"`` for a band.
    pre, post
        Seconds captured before the trigger sample and from it (the trigger sample is the first
        of ``post``); at least one sample in all.
    mode
        ``"normal"``: a capture at every trigger; ``"single"``: the first one only; ``"auto"``:
        as normal, and a capture of the latest samples whenever ``auto_after`` seconds pass
        without a trigger (``triggered=False``), so a scope never stands still.
    holdoff
        Seconds after a trigger sample during which no trigger fires (a capture's ``post`` holds
        it off anyway: captures never overlap).
    hysteresis
        How far past the level the value must go to arm an edge trigger again (>= 0).
    calibrated
        Compare the channel's physical values (``cal_slope * raw + cal_offset``), not the raw ones.
    auto_after
        Seconds without a trigger before ``mode="auto"`` captures anyway.
    """

    channel: str
    level: float | tuple[float, float]
    edge: Edge = "rising"
    pre: float = 0.0
    post: float = 0.01
    mode: Mode = "normal"
    holdoff: float = 0.0
    hysteresis: float = 0.0
    calibrated: bool = False
    auto_after: float = 0.1
    band: tuple[float, float] | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.channel, str) or not self.channel:
            raise ConfigurationError(
                f"Trigger's channel must be a channel name (str); got {self.channel!r:.60}.")
        if isinstance(self.level, (tuple, list)):
            if len(self.level) != 2:
                raise ConfigurationError(f"a window trigger's level is (low, high); got {self.level!r:.60}.")
            low, high = (self._number(x, "level") for x in self.level)
            if not low < high:
                raise ConfigurationError(f"a window trigger's band needs low < high; got {self.level!r}.")
            if self.edge not in ("enter", "leave", "either"):
                raise ConfigurationError(f"a window trigger's edge is 'enter', 'leave' or 'either'; "
                                         f"got {self.edge!r}.")
            object.__setattr__(self, "band", (low, high))
            object.__setattr__(self, "level", (low, high))
        else:
            object.__setattr__(self, "level", self._number(self.level, "level"))
            if self.edge not in ("rising", "falling", "either"):
                raise ConfigurationError(
                    f"Trigger's edge is 'rising', 'falling' or 'either' for a level (or 'enter', "
                    f"'leave', 'either' with level=(low, high)); got {self.edge!r:.60}.")
        if self.mode not in MODES:
            raise ConfigurationError(f"Trigger's mode is one of {list(MODES)}; got {self.mode!r:.60}.")
        for name in ("pre", "post", "holdoff"):
            object.__setattr__(self, name, _seconds(getattr(self, name), name))
        object.__setattr__(self, "auto_after", _seconds(self.auto_after, "auto_after", positive=True))
        h = self._number(self.hysteresis, "hysteresis")
        if h < 0:
            raise ConfigurationError(f"Trigger's hysteresis must be >= 0; got {self.hysteresis!r}.")
        object.__setattr__(self, "hysteresis", h)
        if not isinstance(self.calibrated, (bool, np.bool_)):
            raise ConfigurationError(f"Trigger's calibrated is True or False; got {self.calibrated!r:.60}.")

    @staticmethod
    def _number(value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not math.isfinite(float(value)):
            raise ConfigurationError(f"Trigger's {what} must be a finite number; got {value!r:.60}.")
        return float(value)

    def samples(self, sample_rate: float) -> tuple[int, int, int, int]:
        """``pre``, ``post``, ``holdoff`` in samples at ``sample_rate``, and the hold-off that
        applies (the longer of ``post`` and ``holdoff``: captures never overlap)."""
        pre, post = round(self.pre * sample_rate), round(self.post * sample_rate)
        if pre + post < 1:
            raise ConfigurationError(
                f"pre={self.pre:g} s and post={self.post:g} s hold no sample at {sample_rate:g} Hz; "
                f"capture at least 1 / {sample_rate:g} s.")
        holdoff = round(self.holdoff * sample_rate)
        return pre, post, holdoff, max(post, holdoff, 1)

    def describe(self) -> dict[str, Any]:
        """The trigger as JSON values (what a capture's metadata records)."""
        return {"channel": self.channel, "level": list(self.band) if self.band else self.level,
                "edge": self.edge, "pre": self.pre, "post": self.post, "mode": self.mode,
                "holdoff": self.holdoff, "hysteresis": self.hysteresis, "calibrated": bool(self.calibrated),
                "auto_after": self.auto_after}


class Detector:
    """Finds a :class:`Trigger`'s trigger samples in consecutive blocks of one channel.

    ``find(values, quality, start)`` takes the next block (its samples' write-counter indices
    from ``start``) and returns the indices where the trigger fires, hold-off applied. The
    state between blocks is kept here; :meth:`reset` forgets it (after a gap).
    """

    def __init__(self, trigger: Trigger, channel: Channel, sample_rate: float) -> None:
        self.trigger = trigger
        self.pre, self.post, self.holdoff, self.spacing = trigger.samples(sample_rate)
        cal = channel.calibration
        self._scale = (cal.slope, cal.offset) if trigger.calibrated else None
        self.next_allowed = 0
        """The first write-counter index at which a trigger may fire (hold-off, arm time)."""
        self._state: dict[str, int] = {}

    def reset(self) -> None:
        """Forget whether the trigger was armed (after samples were lost)."""
        self._state.clear()

    def _fires(self, key: str, events: NDArray[np.int8]) -> NDArray[np.bool_]:
        """Where the state machine of ``events`` (1: arm, 2: fire, 0: nothing) goes from armed
        to fired; the state after the block is kept under ``key``."""
        n = events.shape[0]
        idx = np.where(events > 0, np.arange(n), -1)
        last = np.maximum.accumulate(idx) if n else idx
        carry = self._state.get(key, 0)
        state = np.where(last >= 0, events[np.maximum(last, 0)], carry).astype(np.int8)
        before = np.empty(n, np.int8)
        if n:
            before[0] = carry
            before[1:] = state[:-1]
            self._state[key] = int(state[-1])
        fires: NDArray[np.bool_] = (events == 2) & (before == 1)
        return fires

    def candidates(self, values: NDArray[np.float64], quality: NDArray[np.int8]) -> NDArray[np.bool_]:
        """Where the trigger condition fires in this block, before hold-off (state carried on)."""
        v = values if self._scale is None else values * self._scale[0] + self._scale[1]
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(v) & (quality != Quality.BAD)
            t = self.trigger
            if t.band is not None:
                low, high = t.band
                inside = (v >= low) & (v <= high)
                enter = np.where(valid, np.where(inside, 2, 1), 0).astype(np.int8)
                leave = np.where(valid, np.where(inside, 1, 2), 0).astype(np.int8)
                kinds = {"enter": [("enter", enter)], "leave": [("leave", leave)],
                         "either": [("enter", enter), ("leave", leave)]}[t.edge]
            else:
                level, h = float(t.level), t.hysteresis  # type: ignore[arg-type]
                rising = np.where(valid & (v >= level), 2, np.where(valid & (v < level - h), 1, 0))
                falling = np.where(valid & (v <= level), 2, np.where(valid & (v > level + h), 1, 0))
                kinds = {"rising": [("rising", rising.astype(np.int8))],
                         "falling": [("falling", falling.astype(np.int8))],
                         "either": [("rising", rising.astype(np.int8)),
                                    ("falling", falling.astype(np.int8))]}[t.edge]
        out = np.zeros(values.shape[0], bool)
        for key, events in kinds:
            out |= self._fires(key, events)
        return out

    def find(self, values: NDArray[np.float64], quality: NDArray[np.int8], start: int) -> list[int]:
        """Write-counter indices of the triggers in this block, each at least ``spacing``
        samples after the one before (hold-off), none before :attr:`next_allowed`."""
        fired = np.flatnonzero(self.candidates(values, quality)) + start
        found: list[int] = []
        i = int(np.searchsorted(fired, self.next_allowed))
        while i < fired.shape[0]:  # one turn per trigger kept, not per sample
            k = int(fired[i])
            found.append(k)
            self.next_allowed = k + self.spacing
            i = int(np.searchsorted(fired, self.next_allowed, side="left"))
        return found
