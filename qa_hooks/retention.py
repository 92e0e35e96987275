"""The retention sweep, a periodic job: settled tasks keep only what scoring reads of their submissions' results.

A task whose newest submission version is older than ``CROWDGATE_RESULT_RETENTION_S`` has its submissions' results
trimmed to the region keys scoring reads, shared per project (:meth:`qa_hooks.store.SubmissionStore.retain`), so a
later rescoring gives the same scores from a record a fraction of the size. Label Studio keeps every annotation
whole, and ``crowdgate rebuild-state`` reads them back.
"""

from __future__ import annotations

import time

import redis

from core.settings import current
from qa_hooks.jobs import current_connection
from qa_hooks.store import SubmissionStore

__all__ = ["apply_retention"]


def apply_retention(prefix: str = "cg", connection: redis.Redis | None = None, retention_s: float | None = None,
                    now: float | None = None) -> dict[int, dict[str, int]]:
    """Trim every project's settled tasks; ``retention_s`` defaults to the settings' (0: nothing is trimmed).
    Returns, per project, how many tasks were settled and submissions trimmed."""
    connection = connection or current_connection()
    retention_s = current().result_retention_s if retention_s is None else retention_s
    if retention_s <= 0:
        return {}
    store = SubmissionStore(connection, prefix)
    cutoff = (time.time() if now is None else now) - retention_s
    return {project: store.retain(project, cutoff) for project in store.projects()}
