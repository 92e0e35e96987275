"""RQ jobs of the scoring side. Each is idempotent: running it twice leaves the same state."""

from __future__ import annotations

from typing import Any

import redis
from rq import get_current_job

from qa_hooks.events import Event
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore


def _connection() -> redis.Redis:
    job = get_current_job()
    if job is None:
        raise RuntimeError("no connection given and not running inside an RQ job")
    return job.connection


def process_event(event: dict[str, Any], prefix: str = "cg", connection: redis.Redis | None = None) -> dict:
    """Record a checked webhook event, then rescore every task whose submissions or gold changed."""
    connection = connection or _connection()
    parsed = Event.from_dict(event)
    applied = SubmissionStore(connection, prefix).apply(parsed)
    ledger = Ledger(connection, prefix)
    tasks = set(applied.tasks)
    if parsed.project is not None:
        for task in parsed.tasks:
            if "gold" in task.meta:
                ledger.set_meta_gold(parsed.project, task.id, task.meta["gold"])
                tasks.add(task.id)
        for task in sorted(tasks):
            ledger.rescore(parsed.project, task)
    return {"action": parsed.action, "project": parsed.project, "rescored": len(tasks), **applied.counts}
