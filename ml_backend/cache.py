"""Prediction cache and per-project spend ledger for the LLM pre-labeller.

A cached entry is keyed by :func:`cache_key` over everything that decides the model's answer (model, prompt
version, label config, task data, instructions, examples), so a repeated request makes no model call and a
changed prompt template or config misses cleanly. The same store keeps each project's spend so the budget
cap holds across worker processes when Redis backs it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any, Protocol

from core.keys import Keys


def cache_key(*parts: Any) -> str:
    """Stable SHA-256 over JSON-serialisable parts (dict keys sorted, so key order in task data is moot)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class PredictionCache(Protocol):
    """What the predictor needs from a store."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def set(self, key: str, value: dict[str, Any], ttl_s: float | None = None) -> None: ...

    def add_spend(self, project: str, usd: float) -> float:
        """Add to a project's spend and return the new total."""
        ...

    def spend(self, project: str) -> float: ...


class MemoryCache:
    """In-process store (tests, single-process runs); entries expire lazily."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._data: dict[str, tuple[float | None, dict[str, Any]]] = {}
        self._spend: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            expires, value = item
            if expires is not None and self._clock() >= expires:
                del self._data[key]
                return None
            return json.loads(json.dumps(value))  # a copy, as Redis would give

    def set(self, key: str, value: dict[str, Any], ttl_s: float | None = None) -> None:
        expires = None if not ttl_s else self._clock() + ttl_s
        with self._lock:
            self._data[key] = (expires, json.loads(json.dumps(value)))

    def add_spend(self, project: str, usd: float) -> float:
        with self._lock:
            self._spend[project] = self._spend.get(project, 0.0) + usd
            return self._spend[project]

    def spend(self, project: str) -> float:
        with self._lock:
            return self._spend.get(project, 0.0)

    def __len__(self) -> int:
        return len(self._data)


class RedisCache:
    """Redis-backed store (redis-py); answers and spend live under crowdgate's common key prefix
    (``Keys.llm_answer``, ``Keys.llm_spend``), values as JSON strings."""

    def __init__(self, client: Any, prefix: str = "cg") -> None:
        self.client = client
        self.prefix = prefix
        self.keys = Keys(prefix)

    @classmethod
    def from_url(cls, url: str, prefix: str = "cg") -> RedisCache:
        import redis

        return cls(redis.Redis.from_url(url), prefix=prefix)

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.client.get(self.keys.llm_answer(key))
        return None if raw is None else json.loads(raw)

    def set(self, key: str, value: dict[str, Any], ttl_s: float | None = None) -> None:
        raw = json.dumps(value, ensure_ascii=False)
        # Redis wants whole seconds; round up so a short TTL never becomes "no expiry".
        ex = None if not ttl_s else max(1, int(ttl_s + 0.999))
        self.client.set(self.keys.llm_answer(key), raw, ex=ex)

    def add_spend(self, project: str, usd: float) -> float:
        return float(self.client.incrbyfloat(self.keys.llm_spend(project), usd))

    def spend(self, project: str) -> float:
        raw = self.client.get(self.keys.llm_spend(project))
        return float(raw) if raw is not None else 0.0


def cache_from_env(url: str | None, prefix: str = "cg") -> PredictionCache:
    """Redis when a URL is given (keys under ``prefix``, ``CROWDGATE_KEY_PREFIX``), else an in-process cache."""
    return RedisCache.from_url(url, prefix) if url else MemoryCache()
