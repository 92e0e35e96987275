"""Start an RQ worker with crowdgate's queues and settings, RQ's scheduler included (retries, periodic jobs).

    crowdgate-worker         # listens on REDIS_URL to crowdgate's queues and drains the webhook inbox

With ``CROWDGATE_INBOX=stream`` (the default) a thread beside RQ's worker drains the inbox stream in batches
(:class:`qa_hooks.inbox.InboxDrain`): RQ's bookkeeping per job cost more than scoring an event.

The worker outlives Redis: RQ's own loop quits on a Redis timeout (and its teardown then raises), so
:func:`supervise` waits for Redis to answer again and starts a fresh worker, until it is asked to stop.
A job abandoned by a worker that was killed is retried by RQ's maintenance once its execution entry expires:
the job's timeout plus :data:`ABANDONED_AFTER_S`, checked every :data:`MAINTENANCE_INTERVAL_S` (an event job,
with its 30 s timeout, is picked up again within about a minute).

Two windows in RQ 3.0 lose a job to a worker killed at the wrong instant, and both are closed here:

- listening on several queues, RQ pops with BLPOP, so a job popped and not yet registered is held nowhere;
  :class:`ReliableQueue` moves it into the queue's intermediate list (LMOVE), which RQ's maintenance sweeps;
- RQ registers the execution and marks the job started in two round trips, and its cleanup of expired
  executions retries only started jobs: :meth:`_Supervised.prepare_execution` does registration, the started
  mark and the removal from the intermediate list in one transaction, so a job is always in one of the two.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from rq import Queue, SimpleWorker, Worker
from rq.defaults import DEFAULT_WORKER_TTL
from rq.exceptions import DequeueTimeout
from rq.executions import Execution
from rq.job import Job
from rq.utils import as_text
from rq.worker import WorkerStatus

from core.settings import Settings, use
from crowdgate.alerts import report_llm_outages
from qa_hooks.inbox import EVENT_JOB_TIMEOUT_S, InboxDrain

MAINTENANCE_INTERVAL_S = 15
ABANDONED_AFTER_S = 10
MAX_BACKOFF_S = 30.0
IDLE_BLOCK_S = 1
log = logging.getLogger(__name__)


class ReliableQueue(Queue):
    """Every pop lands in the queue's intermediate list, also when a worker listens on several queues.

    RQ uses LMOVE only for a single queue and BLPOP otherwise (Redis has no blocking move from several lists).
    Here each queue is tried in order with a non-blocking LMOVE; when all are empty, the worker blocks on the
    first (the events queue) for :data:`IDLE_BLOCK_S` and tries again, so a job on a later queue of an idle
    worker waits at most that long.
    """

    @classmethod
    def dequeue_any(cls, queues: Iterable[Queue], timeout: int | None, connection: redis.Redis,
                    job_class: type[Job] | None = None, serializer: Any = None,
                    death_penalty_class: Any = None) -> tuple[Job, Queue] | None:
        ordered = list(queues)
        keys = [queue.key for queue in ordered]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            popped = next((found for key in keys if (found := cls.lmove(connection, key, None)) is not None), None)
            if popped is None and deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DequeueTimeout(timeout, keys)
                try:
                    popped = cls.lmove(connection, keys[0], max(1, min(IDLE_BLOCK_S, math.ceil(left))))
                except DequeueTimeout:
                    continue
            if popped is None:
                return None
            queue_key, job_id = (as_text(part) for part in popped)
            fetched = cls._fetch_dequeued_job(connection, queue_key, job_id, job_class=job_class,
                                              serializer=serializer, death_penalty_class=death_penalty_class)
            if fetched is not None:  # None: the job's hash is gone; RQ's sweep drops its id from the list
                return fetched


class _Supervised:
    """Remembers whether the worker was asked to stop (SIGTERM, SIGINT), as against losing Redis."""

    stop_asked = False

    def prepare_execution(self, job: Job) -> Execution:
        # One transaction: registered, started and out of the intermediate list, or none of them (see above).
        worker: Any = self
        with worker.connection.pipeline() as pipeline:
            execution = Execution.create(job, worker.get_heartbeat_ttl(job), pipeline=pipeline,
                                         worker_name=worker.name)
            worker.executions[execution.id] = execution
            worker.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            job.prepare_for_execution(worker.name, pipeline=pipeline)
            pipeline.persist(job.key)
            pipeline.lrem(Queue(job.origin, connection=worker.connection).intermediate_queue_key, 1, job.id)
            pipeline.execute()
        return execution

    def request_stop(self, signum: int, frame: Any) -> None:
        self.stop_asked = True
        super().request_stop(signum, frame)  # type: ignore[misc]

    @property
    def dequeue_timeout(self) -> int:
        # RQ checks for maintenance only between blocking pops of up to worker_ttl - 15 s (405 s): wait no
        # longer than the maintenance interval, so abandoned jobs are looked for on time.
        return min(super().dequeue_timeout, MAINTENANCE_INTERVAL_S)  # type: ignore[misc]

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        # An in-process job sends no heartbeat while it runs, so its entry must outlive its timeout; RQ adds
        # 60 s on top, which with its 10-minute maintenance left an abandoned job waiting up to 14 minutes.
        if job.timeout == -1:
            return DEFAULT_WORKER_TTL
        return int(job.timeout or DEFAULT_WORKER_TTL) + ABANDONED_AFTER_S


class CrowdgateWorker(_Supervised, SimpleWorker):
    """Runs jobs in-process (crowdgate's jobs are short and idempotent)."""


class ForkingCrowdgateWorker(_Supervised, Worker):
    """Forks a process per job (isolation, about 5x slower)."""


def _wait_for_redis(connection: redis.Redis, stop: threading.Event) -> None:
    delay = 1.0
    while not stop.wait(delay):
        try:
            connection.ping()
            return
        except redis.RedisError as exc:
            log.warning("Redis still unreachable (%s): next try in %.0f s", exc, delay)
            delay = min(delay * 2, MAX_BACKOFF_S)


def supervise(make_worker: Callable[[], CrowdgateWorker | ForkingCrowdgateWorker], connection: redis.Redis,
              burst: bool = False) -> int:
    """Run workers one after another until one is asked to stop (or, with ``burst``, runs out of work)."""
    stop = threading.Event()
    while True:
        worker = make_worker()
        try:
            worker.work(with_scheduler=True, burst=burst)
        except redis.RedisError as exc:  # RQ's teardown talks to the Redis that just went away
            log.error("worker %s lost Redis: %s", worker.name, exc)
        if burst or worker.stop_asked:
            return 0
        # RQ's handlers stay installed and would stop a worker that is gone: ours end the wait instead.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        log.error("worker %s stopped without being asked to: waiting for Redis, then starting a new one",
                  worker.name)
        _wait_for_redis(connection, stop)
        if stop.is_set():
            return 0


def queues(settings: Settings) -> tuple[str, ...]:
    """Events first: a decision needs the scored submission; routing actions follow on their own queue, and model
    training (slow, rare) comes last. Run more workers, or one per queue (``crowdgate-worker QUEUE``), to scale."""
    return settings.events_queue, settings.routing_queue, settings.ml_queue


def drain_inbox(settings: Settings, stop: threading.Event, burst: bool = False) -> int:
    """The stream inbox's drain loop (``CROWDGATE_INBOX=stream``), on its own connection; returns events settled."""
    drain = InboxDrain(redis.Redis.from_url(settings.redis_url), settings.events_queue, settings.key_prefix,
                       batch=settings.drain_batch)
    return drain.run(stop, burst=burst)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = use(Settings.from_env())  # the jobs this worker runs read them with core.settings.current()
    logging.basicConfig(level=settings.log_level)
    report_llm_outages(settings)  # the LLM audit and bulk pre-labels run here: their outages are alerts too
    connection = redis.Redis.from_url(settings.redis_url)
    names = argv or queues(settings)
    if settings.inbox == "stream" and settings.events_queue in names:
        return _with_drain(settings, connection, names)
    return _rq_only(settings, connection, names)


def _with_drain(settings: Settings, connection: redis.Redis, names: tuple[str, ...] | list[str]) -> int:
    """The drain scores webhook events in batches in a thread beside RQ's worker, which runs the events handed to
    it (retries, dead letters), routing actions and training; both stop together."""
    stop = threading.Event()
    if settings.worker_burst:
        drain_inbox(settings, stop, burst=True)
        return _rq_only(settings, connection, names)
    thread = threading.Thread(target=drain_inbox, args=(settings, stop), name="inbox-drain", daemon=True)
    thread.start()
    try:
        return _rq_only(settings, connection, names)
    finally:
        stop.set()
        thread.join(timeout=EVENT_JOB_TIMEOUT_S)  # let the batch in hand finish: unacknowledged, it would wait


def _rq_only(settings: Settings, connection: redis.Redis, names: tuple[str, ...] | list[str]) -> int:
    # RQ forks a process per job by default: ~27 jobs/s here against ~150 in-process (measured on the same
    # queue). crowdgate's jobs are short and idempotent, so they run in-process unless forking is asked for.
    worker_class = ForkingCrowdgateWorker if settings.worker_fork else CrowdgateWorker

    def make_worker() -> CrowdgateWorker | ForkingCrowdgateWorker:
        queues = [ReliableQueue(name, connection=connection) for name in names]
        return worker_class(queues, connection=connection, queue_class=ReliableQueue,
                            maintenance_interval=MAINTENANCE_INTERVAL_S)

    return supervise(make_worker, connection, burst=settings.worker_burst)


if __name__ == "__main__":
    sys.exit(main())
