"""A bandwidth limit shared by an operation's worker threads (``SHARDKEEPER_MAX_BYTES_PER_SECOND``).

Backups run next to a live database; some clusters prefer a slower backup to a saturated disk or
network. The limit applies per node, to the bytes read from staging (or written on restore).
"""

from __future__ import annotations

import threading
import time


class Throttle:
    def __init__(self, bytes_per_second: int | None, cancelled: threading.Event) -> None:
        self._rate = bytes_per_second
        self._cancelled = cancelled
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def take(self, n: int) -> None:
        """Accounts ``n`` bytes; sleeps (interruptibly) until the rate allows them."""
        if not self._rate or n <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._next, now)
            self._next = start + n / self._rate
            delay = start - now
        if delay > 0:
            self._cancelled.wait(delay)
