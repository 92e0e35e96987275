"""Token buckets for an endpoint's requests-per-minute and tokens-per-minute limits.

A bucket holds up to ``capacity`` units and refills continuously at ``rate_per_minute``. ``acquire`` blocks
(sleeping, outside the lock) until the units are there; a request bigger than the whole capacity is let
through once the bucket is full, so an oversized prompt cannot deadlock. Token use is only known after a
call, so :meth:`TokenBucket.adjust` settles the difference between the estimate taken and the real usage
(the balance may go negative: later callers then wait for the debt).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """Thread-safe token bucket; ``rate_per_minute <= 0`` means unlimited."""

    def __init__(
        self,
        rate_per_minute: float,
        capacity: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate_per_minute / 60.0
        # One minute's worth by default: the provider's limit is per minute, bursts up to it are allowed.
        self.capacity = float(capacity if capacity is not None else rate_per_minute)
        self._level = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._lock = threading.Lock()

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self, amount: float = 1.0) -> float:
        """Take ``amount`` if available and return 0, else return the seconds to wait before retrying."""
        if self.unlimited:
            return 0.0
        with self._lock:
            self._refill()
            need = min(amount, self.capacity)
            # A small tolerance: float refills can land a hair below a whole unit and never quite reach it.
            if self._level + 1e-9 >= need:
                self._level -= amount
                return 0.0
            return max((need - self._level) / self.rate, 0.001)

    def acquire(self, amount: float = 1.0, timeout: float | None = None) -> bool:
        """Block until ``amount`` is taken; False if that would take longer than ``timeout`` seconds."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            wait = self.try_acquire(amount)
            if wait <= 0:
                return True
            if deadline is not None and self._clock() + wait > deadline:
                return False
            self._sleep(min(wait, 1.0))

    def adjust(self, delta: float) -> None:
        """Charge (positive) or refund (negative) units after the fact."""
        if self.unlimited:
            return
        with self._lock:
            self._refill()
            self._level = min(self.capacity, self._level - delta)

    @property
    def level(self) -> float:
        with self._lock:
            self._refill()
            return self._level


class RateLimiter:
    """Requests-per-minute and tokens-per-minute buckets for one endpoint."""

    def __init__(
        self,
        rpm: float = 0,
        tpm: float = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.requests = TokenBucket(rpm, clock=clock, sleep=sleep)
        self.tokens = TokenBucket(tpm, clock=clock, sleep=sleep)

    def acquire(self, estimated_tokens: int, timeout: float | None = None) -> bool:
        """Wait for one request slot and ``estimated_tokens`` tokens."""
        if not self.requests.acquire(1, timeout):
            return False
        if not self.tokens.acquire(estimated_tokens, timeout):
            self.requests.adjust(-1)  # give the request slot back
            return False
        return True

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the token bucket once the real usage of a call is known."""
        self.tokens.adjust(actual_tokens - estimated_tokens)
