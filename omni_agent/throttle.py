"""Slowing down guessing: failed authentications counted per client address.

Used by the HTTP/websocket authenticator (:mod:`omni_agent.server.auth`) and the Android device
bridge (:mod:`tools.android.bridge`). No dependencies, so any part can use it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

FREE_FAILURES = 10  # a user mistyping a key a few times is never slowed
FAILURE_WINDOW_S = 60.0
MAX_TRACKED_CLIENTS = 10_000  # bounded memory under a spray from many addresses (oldest forgotten)


class FailureThrottle:
    """Counts failed authentications per client address within a sliding window. Thread-safe."""

    def __init__(self, free: int = FREE_FAILURES, window_s: float = FAILURE_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic):
        self.free, self.window_s, self.clock = free, window_s, clock
        self._fails: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds ``client`` must wait before its next attempt counts (0: go ahead)."""
        with self._lock:
            if client not in self._fails:
                return 0.0
            times = self._recent(client)
            if len(times) < self.free:
                return 0.0
            return max(0.0, times[-self.free] + self.window_s - self.clock())

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(self.clock())
            self._fails.move_to_end(client)
            while len(self._fails) > MAX_TRACKED_CLIENTS:
                self._fails.popitem(last=False)

    def _recent(self, client: str) -> list[float]:
        """This client's failures inside the window (a client that never failed is not stored)."""
        if client not in self._fails:
            times: list[float] = []
            self._fails[client] = times
            return times
        now = self.clock()
        times = [t for t in self._fails[client] if now - t < self.window_s]
        self._fails[client] = times
        return times
