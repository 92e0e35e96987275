"""Persist checked webhook events as RQ jobs, once each, before Label Studio gets its answer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import redis
from rq import Queue, Retry

from qa_hooks.events import Event
from qa_hooks.jobs import process_event

# Backoff for a job that fails (a Redis hiccup, a bug fixed later): the event is kept, not dropped.
RETRY = Retry(max=5, interval=[1, 5, 30, 120, 600])
FAILED_JOB_TTL_S = 30 * 24 * 3600


class Inbox:
    """``job`` is what the worker runs for each event: ``process_event`` (record and score) by default; the
    assembled service (``crowdgate.web``) passes one that also routes."""

    def __init__(self, connection: redis.Redis, queue: str, prefix: str, dedup_ttl_s: int,
                 job: Callable[..., Any] = process_event) -> None:
        self.redis = connection
        self.queue = Queue(queue, connection=connection)
        self.prefix = prefix
        self.dedup_ttl_s = dedup_ttl_s
        self.job = job

    def put(self, event: Event) -> tuple[str, str | None]:
        """Enqueue the event's unseen items; returns ("queued", job id) or ("duplicate", None).

        Raises ``redis.RedisError`` when the event could not be persisted; then no dedup mark is left
        behind, so a redelivery (or the reconciliation pass) still records it.
        """
        keys = [f"{self.prefix}:seen:{event.project}:{k}" for k in event.dedup_keys()]
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, 1, nx=True, ex=self.dedup_ttl_s)
        fresh = [key for key, was_set in zip(keys, pipe.execute(), strict=True) if was_set]
        if not fresh:
            return "duplicate", None
        try:
            prefix_len = len(f"{self.prefix}:seen:{event.project}:")
            todo = event.only({key[prefix_len:] for key in fresh})
            # RQ writes the job into our pipeline: one round trip persists it.
            pipe = self.redis.pipeline()
            job = self.queue.enqueue(
                self.job,
                todo.to_dict(),
                self.prefix,
                retry=RETRY,
                failure_ttl=FAILED_JOB_TTL_S,
                result_ttl=3600,
                description=f"{event.action} project={event.project}",
                pipeline=pipe,
            )
            pipe.execute()
        except Exception:
            with contextlib.suppress(redis.RedisError):
                self.redis.delete(*fresh)
            raise
        return "queued", job.id
