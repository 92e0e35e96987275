"""Persist checked webhook events as RQ jobs, once each, before Label Studio gets its answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from rq import Queue, Retry

from core.keys import Keys
from qa_hooks.events import Event
from qa_hooks.jobs import process_event

# Backoff for a job that fails (a Redis hiccup, a bug fixed later): the event is kept, not dropped.
RETRY = Retry(max=5, interval=[1, 5, 30, 120, 600])
FAILED_JOB_TTL_S = 30 * 24 * 3600
# Scoring one event takes milliseconds; the timeout also bounds how long a job abandoned by a killed worker
# waits before RQ's maintenance retries it (see crowdgate.worker).
EVENT_JOB_TIMEOUT_S = 30


class Inbox:
    """``job`` is what the worker runs for each event: ``process_event`` (record and score) by default; the
    assembled service (``crowdgate.web``) passes one that also routes."""

    def __init__(self, connection: redis.Redis, queue: str, prefix: str, dedup_ttl_s: int,
                 job: Callable[..., Any] = process_event, deadline_s: float = 0.6) -> None:
        self.redis = connection
        self.deadline_s = deadline_s  # Label Studio waits 1 s for the whole webhook
        self.queue = Queue(queue, connection=connection)
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.dedup_ttl_s = dedup_ttl_s
        self.job = job

    def put(self, event: Event) -> tuple[str, str | None]:
        """Enqueue the event's unseen items; returns ("queued", job id) or ("duplicate", None).

        The dedup marks and the job are written in one MULTI/EXEC transaction (optimistic, WATCHing the marks),
        so they land together or not at all: a Redis that stalls past the socket timeout may still apply the
        transaction after the 503, but then the job is there too, and a mark never exists without its job.
        Raises ``redis.RedisError`` when the outcome is unknown or nothing was written; either way a redelivery
        or the reconciliation pass records the event exactly once.
        """
        marks = {self.keys.dedup(event.project, k): k for k in event.dedup_keys()}
        keys = list(marks)
        deadline = time.monotonic() + self.deadline_s
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*keys)
                    fresh = [key for key, mark in zip(keys, pipe.mget(keys), strict=True) if mark is None]
                    if not fresh:
                        pipe.unwatch()
                        return "duplicate", None
                    todo = event.only({marks[key] for key in fresh})
                    pipe.multi()
                    # RQ writes the job into the transaction: one EXEC persists the job and its marks.
                    job = self.queue.enqueue(
                        self.job,
                        todo.to_dict(),
                        self.prefix,
                        retry=RETRY,
                        failure_ttl=FAILED_JOB_TTL_S,
                        result_ttl=3600,
                        job_timeout=EVENT_JOB_TIMEOUT_S,
                        description=f"{event.action} project={event.project}",
                        pipeline=pipe,
                    )
                    for key in fresh:
                        pipe.set(key, job.id, ex=self.dedup_ttl_s)
                    pipe.execute()
                    return "queued", job.id
                except redis.WatchError:
                    # A concurrent delivery of the same annotation got there first, or the connection failed while
                    # watching (redis-py says WatchError for both): look again, within Label Studio's patience.
                    if time.monotonic() > deadline:
                        raise redis.TimeoutError("Redis did not settle the event in time") from None
