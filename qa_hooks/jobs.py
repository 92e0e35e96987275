"""RQ jobs of the scoring side. Each is idempotent: running it twice leaves the same state."""

from __future__ import annotations

from typing import Any

import redis
from rq import get_current_job

from qa_hooks.events import Event
from qa_hooks.store import SubmissionStore


def _connection() -> redis.Redis:
    job = get_current_job()
    if job is None:
        raise RuntimeError("no connection given and not running inside an RQ job")
    return job.connection


def process_event(event: dict[str, Any], prefix: str = "cg", connection: redis.Redis | None = None) -> dict:
    """Record a checked webhook event in crowdgate's state; returns what changed."""
    store = SubmissionStore(connection or _connection(), prefix)
    parsed = Event.from_dict(event)
    return {"action": parsed.action, "project": parsed.project, **store.apply(parsed)}
