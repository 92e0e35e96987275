"""Settings of the webhook receiver, read from the environment (documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass

EVENTS_QUEUE = "crowdgate-events"


@dataclass(frozen=True)
class HookSettings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    webhook_secret: str = ""
    max_body_bytes: int = 10 * 1024 * 1024
    key_prefix: str = "cg"
    queue: str = EVENTS_QUEUE
    # Label Studio waits 1 s for the webhook: a Redis that does not answer fast must not hold the submit.
    redis_timeout_s: float = 0.3
    dedup_ttl_s: int = 30 * 24 * 3600

    @classmethod
    def from_env(cls) -> HookSettings:
        env = os.environ
        return cls(
            redis_url=env.get("REDIS_URL", cls.redis_url),
            webhook_secret=env.get("CROWDGATE_WEBHOOK_SECRET", ""),
            max_body_bytes=int(env.get("CROWDGATE_MAX_WEBHOOK_BYTES", cls.max_body_bytes)),
            key_prefix=env.get("CROWDGATE_KEY_PREFIX", cls.key_prefix),
            queue=env.get("CROWDGATE_EVENTS_QUEUE", cls.queue),
            redis_timeout_s=float(env.get("CROWDGATE_REDIS_TIMEOUT_S", cls.redis_timeout_s)),
            dedup_ttl_s=int(env.get("CROWDGATE_DEDUP_TTL_S", cls.dedup_ttl_s)),
        )
