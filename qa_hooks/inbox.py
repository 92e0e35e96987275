"""Persist checked webhook events, once each, before Label Studio gets its answer; and drain them in batches.

Two ways to queue an event (``CROWDGATE_INBOX``):

- ``stream`` (default): the event is appended to a Redis stream (``Keys.inbox``) in the same transaction as its
  dedup marks; ``crowdgate-worker`` reads it with a consumer group (:class:`InboxDrain`), scores a batch of up
  to ``CROWDGATE_DRAIN_BATCH`` events and routes each project once for the batch, then acknowledges and deletes
  the entries. RQ stays the retry and dead-letter path: an event that fails, or whose batch was abandoned by a
  worker that died, becomes an ordinary RQ job (retry with backoff, then RQ's failed registry).
- ``rq``: one RQ job per event (the old path: RQ's per-job bookkeeping costs more than scoring the event).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from rq import Queue, Retry

from core.keys import Keys
from core.settings import current
from qa_hooks.events import Event
from qa_hooks.jobs import REDIS_DOWN, batch_form, process_event

log = logging.getLogger(__name__)

# Backoff for a job that fails (a Redis hiccup, a bug fixed later): the event is kept, not dropped. The first
# retry goes straight back to the queue: a retry with a delay waits for RQ's scheduler, whose lock a killed
# worker holds for another minute and which a new worker tries to take only every 10 minutes, so a job
# abandoned by a killed worker would wait that long.
RETRY = Retry(max=5, interval=[0, 5, 30, 120, 600])
FAILED_JOB_TTL_S = 30 * 24 * 3600
# Scoring one event takes milliseconds; the timeout also bounds how long a job abandoned by a killed worker
# waits before RQ's maintenance retries it (see crowdgate.worker).
EVENT_JOB_TIMEOUT_S = 30


class Inbox:
    """``job`` is what the worker runs for each event: ``process_event`` (record and score) by default; the
    assembled service (``crowdgate.web``) passes one that also routes."""

    def __init__(self, connection: redis.Redis, queue: str, prefix: str, dedup_ttl_s: int,
                 job: Callable[..., Any] = process_event, deadline_s: float = 0.6, mode: str | None = None) -> None:
        self.mode = mode or current().inbox  # "stream" or "rq", see the module doc
        if self.mode not in ("stream", "rq"):
            raise ValueError(f"CROWDGATE_INBOX must be 'stream' or 'rq', got {self.mode!r}")
        self.redis = connection
        self.deadline_s = deadline_s  # Label Studio waits 1 s for the whole webhook
        self.queue = Queue(queue, connection=connection)
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.dedup_ttl_s = dedup_ttl_s
        self.job = job

    def put(self, event: Event) -> tuple[str, str | None]:
        """Queue the event's unseen items; returns ("queued", job or inbox event id) or ("duplicate", None).

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
                    # The entry (or RQ's job, which RQ writes into the pipeline) and the marks go in one MULTI/EXEC.
                    if self.mode == "stream":
                        queued = uuid.uuid4().hex
                        pipe.xadd(self.keys.inbox(self.queue.name), entry(todo.to_dict(), self.prefix, self.job,
                                                                          queued))
                    else:
                        queued = enqueue_event(self.queue, self.job, todo.to_dict(), self.prefix, pipeline=pipe).id
                    for key in fresh:
                        pipe.set(key, queued, ex=self.dedup_ttl_s)
                    pipe.execute()
                    return "queued", queued
                except redis.WatchError:
                    # A concurrent delivery of the same annotation got there first, or the connection failed while
                    # watching (redis-py says WatchError for both): look again, within Label Studio's patience.
                    if time.monotonic() > deadline:
                        raise redis.TimeoutError("Redis did not settle the event in time") from None


def job_name(job: Callable[..., Any] | str) -> str:
    return job if isinstance(job, str) else f"{job.__module__}.{job.__qualname__}"


def entry(event: dict[str, Any], prefix: str, job: Callable[..., Any] | str, event_id: str) -> dict[str, str]:
    """A stream entry: the event, the key prefix and the job (by its dotted name, as RQ stores it)."""
    return {"id": event_id, "job": job_name(job), "prefix": prefix,
            "event": json.dumps(event, separators=(",", ":"))}


def enqueue_event(queue: Queue, job: Callable[..., Any] | str, event: Any, prefix: str, pipeline: Any = None,
                  meta: dict[str, Any] | None = None) -> Any:
    """One RQ job for one event, with the inbox's retry, timeout and failed-job retention."""
    return queue.enqueue(job, event, prefix, retry=RETRY, failure_ttl=FAILED_JOB_TTL_S, result_ttl=3600,
                         job_timeout=EVENT_JOB_TIMEOUT_S, meta=meta, pipeline=pipeline,
                         description=f"{event.get('action') if isinstance(event, dict) else 'event'} "
                                     f"project={event.get('project') if isinstance(event, dict) else '?'}")


class InboxDrain:
    """The reading end of the stream inbox: one consumer of the group ``crowdgate`` (one per worker process).

    Exactly once, as with one RQ job per event: an entry is acknowledged and deleted only after its event was
    scored and routed, or, in the same transaction, handed to RQ as its own job. A worker that dies mid-batch
    leaves its entries pending; after ``claim_idle_s`` another consumer claims them (``XAUTOCLAIM``) and hands
    each to RQ, since one of them may be what killed it. Every step is idempotent, so an event run twice (a
    claimed batch that its slow owner still finished) records nothing twice.
    """

    GROUP = "crowdgate"
    MAINTENANCE_S = 15.0
    MAX_BACKOFF_S = 30.0

    def __init__(self, connection: redis.Redis, queue: str, prefix: str, batch: int = 1000,
                 claim_idle_s: float = 30.0, consumer: str | None = None) -> None:
        self.redis = connection
        self.queue = Queue(queue, connection=connection)  # where failed and abandoned events go, one job each
        self.stream = Keys(prefix).inbox(queue)
        self.batch = max(1, batch)
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._jobs: dict[str, Callable[..., Any]] = {}
        self._maintained_at = 0.0

    def ensure_group(self) -> None:
        try:
            # From the stream's start: events queued before any worker existed are drained too.
            self.redis.xgroup_create(self.stream, self.GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def pending(self) -> int:
        """Entries not yet settled: waiting plus being processed."""
        return int(self.redis.xlen(self.stream))

    # -- the loop ------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, burst: bool = False, block_ms: int = 1000) -> int:
        """Drain until ``stop`` is set (or, with ``burst``, until the stream is empty); returns events settled.
        Redis going away is waited out with backoff, as the RQ worker's supervisor does."""
        done, delay, interrupted = 0, 1.0, False
        while not stop.is_set():
            try:
                if interrupted:
                    # The batch Redis broke off is still pending on this consumer: settle it now rather than
                    # leave it for another consumer's claim once idle past claim_idle_s.
                    done += self.resume_own()
                    interrupted = False
                if time.monotonic() - self._maintained_at > self.MAINTENANCE_S:
                    self.maintain()
                settled = self.drain_once(None if burst else block_ms)
                delay = 1.0
            except redis.RedisError as exc:
                if burst:
                    raise
                log.warning("inbox drain: Redis unavailable (%s): next try in %.0f s", exc, delay)
                interrupted = True
                stop.wait(delay)
                delay = min(delay * 2, self.MAX_BACKOFF_S)
                continue
            done += settled
            if burst and settled == 0:
                break
        return done

    def drain_once(self, block_ms: int | None = None) -> int:
        """Read up to one batch (waiting up to ``block_ms`` for the first entry) and settle it."""
        entries = self._read(block_ms)
        if entries:
            self.settle(entries)
        return len(entries)

    def _read(self, block_ms: int | None) -> list[tuple[bytes, dict[bytes, bytes]]]:
        for attempt in (1, 2):
            try:
                reply = self.redis.xreadgroup(self.GROUP, self.consumer, {self.stream: ">"}, count=self.batch,
                                              block=block_ms)
                return reply[0][1] if reply else []
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc) or attempt == 2:
                    raise
                self.ensure_group()  # a new or flushed Redis
        return []

    def resume_own(self) -> int:
        """Settle the entries this consumer read and never acknowledged (a batch that Redis broke off); returns
        how many. Safe to repeat: every step of an event is idempotent."""
        resumed = 0
        while True:
            reply = self.redis.xreadgroup(self.GROUP, self.consumer, {self.stream: "0"}, count=self.batch)
            entries = reply[0][1] if reply else []
            if not entries:
                return resumed
            gone = [entry_id for entry_id, fields in entries if not fields]  # deleted while pending
            if gone:
                self.redis.xack(self.stream, self.GROUP, *gone)
            live = [(entry_id, fields) for entry_id, fields in entries if fields]
            if live:
                self.settle(live)
                resumed += len(live)
                log.warning("inbox drain: %d event(s) of a batch interrupted by Redis settled", len(live))

    def settle(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Run the entries' events (a batch per job) and acknowledge each: done, or handed to RQ."""
        groups: dict[tuple[str, str], list[tuple[bytes, dict[str, Any] | str]]] = {}
        for entry_id, fields in entries:
            job, prefix = fields.get(b"job", b"").decode(), fields.get(b"prefix", b"cg").decode()
            raw = fields.get(b"event", b"").decode(errors="replace")
            try:
                event: dict[str, Any] | str = json.loads(raw)
            except ValueError:
                event = raw  # RQ's job will fail on it and keep it in the failed registry, where admins look
            groups.setdefault((job, prefix), []).append((entry_id, event))
        done: list[bytes] = []
        for (job, prefix), members in groups.items():
            for (entry_id, event), outcome in zip(members, self._run(job, prefix, [e for _, e in members]),
                                                  strict=True):
                if isinstance(outcome, Exception):
                    log.warning("inbox: event %s failed in a batch (%s: %s): handed to RQ for retries",
                                entry_id.decode(), type(outcome).__name__, outcome)
                    self.hand_to_rq(entry_id, job, event, prefix, f"{type(outcome).__name__}: {outcome}")
                else:
                    done.append(entry_id)
        if done:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.xack(self.stream, self.GROUP, *done)
                pipe.xdel(self.stream, *done)
                pipe.execute()

    def _run(self, job: str, prefix: str, events: list[dict[str, Any] | str]) -> list[Any]:
        try:
            func = self._jobs.get(job) or self._resolve(job)
        except Exception as exc:  # an entry naming no importable job: each goes to RQ, which fails it visibly
            return [exc] * len(events)
        batch = batch_form(func)
        good = [i for i, e in enumerate(events) if isinstance(e, dict)]
        outcomes: list[Any] = [ValueError("the entry's event is not JSON")] * len(events)
        if batch is not None and good:
            for i, outcome in zip(good, batch([events[i] for i in good], prefix, self.redis), strict=True):
                outcomes[i] = outcome
            return outcomes
        for i in good:
            try:
                outcomes[i] = func(events[i], prefix, self.redis)
            except REDIS_DOWN:
                raise
            except Exception as exc:
                outcomes[i] = exc
        return outcomes

    def _resolve(self, job: str) -> Callable[..., Any]:
        module, _, name = job.rpartition(".")
        func = getattr(importlib.import_module(module), name)
        self._jobs[job] = func
        return func

    def hand_to_rq(self, entry_id: bytes, job: str, event: dict[str, Any] | str, prefix: str, why: str) -> str:
        """Replace the entry by an RQ job of its event, in one transaction: never both gone, never both there."""
        with self.redis.pipeline(transaction=True) as pipe:
            rq_job = enqueue_event(self.queue, job, event, prefix, pipeline=pipe,
                                   meta={"inbox_entry": entry_id.decode(), "inbox_reason": why[:500]})
            pipe.xack(self.stream, self.GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            pipe.execute()
        return rq_job.id

    # -- abandoned batches ----------------------------------------------------------------------------------

    def maintain(self) -> int:
        """Hand the entries of consumers idle past ``claim_idle_s`` (a worker that died mid-batch) to RQ, and
        forget consumers that hold nothing and were idle an hour; returns the entries handed over."""
        self._maintained_at = time.monotonic()
        self.ensure_group()
        handed, start = 0, "0-0"
        while True:
            reply = self.redis.xautoclaim(self.stream, self.GROUP, self.consumer, self.claim_idle_ms,
                                          start_id=start, count=self.batch)
            start, claimed = reply[0], reply[1]
            gone = reply[2] if len(reply) > 2 else []
            if gone:  # deleted while pending: nothing left to run
                self.redis.xack(self.stream, self.GROUP, *gone)
            for entry_id, fields in claimed:
                if not fields:
                    continue
                event_text = fields.get(b"event", b"").decode(errors="replace")
                try:
                    event: dict[str, Any] | str = json.loads(event_text)
                except ValueError:
                    event = event_text
                self.hand_to_rq(entry_id, fields.get(b"job", b"").decode(), event,
                                fields.get(b"prefix", b"cg").decode(), "its batch was abandoned by a worker")
                handed += 1
            if start in (b"0-0", "0-0"):
                break
        for consumer in self.redis.xinfo_consumers(self.stream, self.GROUP):
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
            if name != self.consumer and consumer["pending"] == 0 and consumer["idle"] > 3_600_000:
                self.redis.xgroup_delconsumer(self.stream, self.GROUP, name)
        if handed:
            log.warning("inbox: %d event(s) of an abandoned batch handed to RQ", handed)
        return handed
