"""A token bucket: at most ``rate`` events per second on average, bursts of at most ``burst`` (thread-safe).

The classic traffic-shaping rule (Turner 1986): tokens drip in at ``rate`` per second up to ``burst``; each event
takes one, waiting for it when the bucket is empty. The clock and the sleep are injectable, so tests run it on a
fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """``acquire()`` blocks until a token is free and returns the seconds it waited; ``rate=None`` never waits."""

    def __init__(self, rate: float | None, burst: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for no limit)")
        self.rate = rate
        self.burst = float(burst if burst is not None else max(1.0, rate or 1.0))
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def _reserve(self) -> float:
        """Take a token now (the balance may go negative); the seconds until it is really there."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self, stop: threading.Event | None = None) -> float:
        """Wait for a token (``stop`` set: return at once; the token is spent either way)."""
        if self.rate is None:
            return 0.0
        wait = self._reserve()
        if wait > 0:
            if stop is not None:
                stop.wait(wait)
            else:
                self._sleep(wait)
        return wait
