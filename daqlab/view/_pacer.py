"""When to draw the next frame: a bounded frame rate that backs off when the browser falls behind.

The browser acknowledges each frame after painting it (a small JS callback
sets a property that syncs back to the kernel). With acknowledgements coming
in, the pacer keeps at most ``max_in_flight`` frames unpainted: beyond that
it skips frames and lengthens the interval (x1.5 each time, down to
``min_fps``); once the browser has caught up it shortens it again (/1.25 per
frame, up to ``max_fps``). Without acknowledgements (no browser attached, or
the kernel busy with a cell so they wait in its queue) the pacer cannot tell,
and draws at ``blind_fps``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from daqlab.errors import ConfigurationError

__all__ = ["FramePacer"]


class FramePacer:
    """Frame scheduling, with an injectable clock (seconds, monotonic)."""

    def __init__(
        self,
        max_fps: float = 20.0,
        *,
        min_fps: float = 1.0,
        blind_fps: float = 5.0,
        max_in_flight: int = 2,
        ack_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < min_fps <= blind_fps <= max_fps <= 120:
            raise ConfigurationError(
                f"frame rates must satisfy 0 < min_fps <= blind_fps <= max_fps <= 120; got "
                f"min_fps={min_fps}, blind_fps={blind_fps}, max_fps={max_fps}."
            )
        self.max_fps, self.min_fps, self.blind_fps = float(max_fps), float(min_fps), float(blind_fps)
        self.max_in_flight = int(max_in_flight)
        self.ack_timeout = float(ack_timeout)
        self.clock = clock
        self.interval = 1.0 / self.max_fps
        self.sent = 0
        self.acked = 0
        self.skipped = 0
        self._last_ack_at: float | None = None
        self._last_sent_at: float | None = None
        self._sent_times: deque[float] = deque(maxlen=64)
        self._latencies: deque[float] = deque(maxlen=64)
        self._sent_at: dict[int, float] = {}
        self._page: object = None  # which page acknowledges (a reloaded page counts from 1 again)
        self._offset = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked

    @property
    def blind(self) -> bool:
        """No acknowledgement lately although frames went out."""
        now = self.clock()
        if self._last_ack_at is None:
            return self.sent > 0
        return self.in_flight > 0 and now - self._last_ack_at > self.ack_timeout

    def delay(self) -> float:
        """Seconds to wait before the next frame may be drawn."""
        interval = 1.0 / self.blind_fps if self.blind else self.interval
        if self._last_sent_at is None:
            return 0.0
        return max(0.0, self._last_sent_at + interval - self.clock())

    def should_draw(self) -> bool:
        """Called when :meth:`delay` has passed: draw now, or skip this frame (and back off)?"""
        with self._lock:
            if not self.blind and self.in_flight > self.max_in_flight:
                self.interval = min(1.0 / self.min_fps, self.interval * 1.5)
                self.skipped += 1
                self._last_sent_at = self.clock()  # wait a whole (longer) interval again
                return False
            return True

    def frame_sent(self) -> int:
        """Record a frame going out; returns its number (for the browser to acknowledge)."""
        with self._lock:
            now = self.clock()
            self.sent += 1
            self._last_sent_at = now
            self._sent_times.append(now)
            self._sent_at[self.sent] = now
            return self.sent

    def frame_acked(self, frame: int, page: object = None) -> None:
        """The browser painted ``frame`` (and every frame before it). Any thread may call this.

        ``page`` identifies the page: a page that appears later (a reload, a second tab) counts
        its frames from 1, so its ``frame`` is mapped to the newest frame sent when it first
        acknowledges. That guess can be too new: a reloaded page first paints the frames that
        were on their way while it loaded, so its later acks would map past the newest frame
        sent (and be ignored for good, leaving the pacer blind). Such an ack lowers the mapping
        instead: it means the page has painted everything sent.
        """
        with self._lock:
            if page is not None and page != self._page:
                if self._page is not None:
                    self._offset = self.sent - frame
                self._page = page
            frame += self._offset
            if frame > self.sent and page is not None:
                self._offset -= frame - self.sent
                frame = self.sent
            if frame <= self.acked or frame > self.sent:
                return
            now = self.clock()
            sent_at = self._sent_at.get(frame)
            if sent_at is not None:
                self._latencies.append(now - sent_at)
            for k in [k for k in self._sent_at if k <= frame]:
                del self._sent_at[k]
            self.acked = frame
            self._last_ack_at = now
            if self.in_flight <= 1:
                self.interval = max(1.0 / self.max_fps, self.interval / 1.25)

    def fps(self) -> float:
        """Frames sent per second over the last few seconds."""
        now = self.clock()
        recent = [t for t in self._sent_times if now - t <= 2.0]
        if len(recent) < 2:
            return 0.0
        span = now - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def latency(self) -> float | None:
        """Median seconds from sending a frame to the browser painting it (None before any)."""
        if not self._latencies:
            return None
        ordered = sorted(self._latencies)
        return ordered[len(ordered) // 2]
