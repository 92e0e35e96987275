"""crowdgate-worker under faults, with real processes: Redis restarted under it, the worker killed mid-job."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from rq import Queue, Retry, SimpleWorker
from rq.job import Job, JobStatus

from crowdgate.worker import CrowdgateWorker, ReliableQueue
from scripts.services import Service, start_redis, start_worker
from tests.conftest import wait_for

ATTEMPTS_KEY = "t:test:attempts"


def record_attempt(hang_first: bool = False) -> int:
    """A job that counts its runs; with ``hang_first`` its first run hangs until the worker is killed."""
    from rq import get_current_job

    attempt = int(get_current_job().connection.incr(ATTEMPTS_KEY))
    if hang_first and attempt == 1:
        time.sleep(120)
    return attempt


def _env(redis_url: str) -> dict[str, str]:
    # the worker imports this module's jobs by name
    return {**os.environ, "REDIS_URL": redis_url, "CROWDGATE_EVENTS_QUEUE": "t-events",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def test_worker_survives_a_redis_restart(log_dir: Path):
    service = start_redis(log_dir)
    port = int(service.url.rsplit(":", 1)[1].split("/")[0])
    worker = start_worker(_env(service.url), log_dir)
    try:
        busy = Queue("t-events", connection=redis.Redis.from_url(service.url))
        for _ in range(2000):
            busy.enqueue(record_attempt)
        time.sleep(0.5)  # Redis goes away in the middle of the burst
        service.stop()
        time.sleep(3)  # the worker's Redis is gone for a while
        assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
        service = start_redis(log_dir, port=port)
        connection = redis.Redis.from_url(service.url)
        job = Queue("t-events", connection=connection).enqueue(record_attempt)
        wait_for(lambda: job.get_status(refresh=True) == "finished", 60, what="the job after the restart")
        assert worker.process.poll() is None, worker.log_tail()
    finally:
        worker.stop()
        service.stop()


def test_job_abandoned_by_a_killed_worker_is_retried_within_a_minute(log_dir: Path):
    service = start_redis(log_dir)
    connection = redis.Redis.from_url(service.url)
    first = start_worker(_env(service.url), log_dir)
    second: Service | None = None
    try:
        job = Queue("t-events", connection=connection).enqueue(record_attempt, True, job_timeout=30,
                                                              retry=Retry(max=3))
        wait_for(lambda: connection.get(ATTEMPTS_KEY) == b"1", 30, what="the first attempt")
        assert first.process is not None
        os.killpg(first.process.pid, signal.SIGKILL)  # the worker and its scheduler, mid-job
        first.process.wait(5)
        killed_at = time.monotonic()
        second = start_worker(_env(service.url), log_dir)
        wait_for(lambda: Job.fetch(job.id, connection=connection).get_status() == "finished", 90,
                 what="the abandoned job's retry")
        assert time.monotonic() - killed_at < 75
        assert Job.fetch(job.id, connection=connection).return_value() == 2
    finally:
        first.stop()
        if second is not None:
            second.stop()
        service.stop()


# -- the two instants at which RQ 3.0 loses a job to a killed worker, and how ReliableQueue and the worker's
# -- one-transaction prepare_execution close them. Each "kill" is the worker process stopping right there.

def _where(job: Job, queues: list[Queue]) -> set[str]:
    """Every place RQ (and its maintenance) could find the job again."""
    connection = job.connection
    places = set()
    for queue in queues:
        if job.id in queue.get_job_ids():
            places.add(f"queued:{queue.name}")
        if job.id in queue.intermediate_queue.get_job_ids():
            places.add(f"intermediate:{queue.name}")
        if job.id in queue.started_job_registry.get_job_ids():
            status = Job.fetch(job.id, connection=connection).get_status()
            places.add(f"started-registry:{queue.name}:{JobStatus(status).value}")
    return places


def _two_queues(connection: redis.Redis, queue_class: type[Queue]) -> tuple[list[Queue], Job]:
    queues = [queue_class(name, connection=connection) for name in ("t-events", "t-routing")]
    job = queues[1].enqueue(record_attempt, retry=Retry(max=3), job_timeout=30)
    return queues, job


def test_stock_rq_holds_a_job_popped_from_several_queues_nowhere(redis_conn):
    """The defect: BLPOP from several queues leaves a popped job in no list and no registry."""
    queues, job = _two_queues(redis_conn, Queue)
    popped, _ = Queue.dequeue_any(queues, 1, connection=redis_conn)
    assert popped.id == job.id
    assert _where(job, queues) == set()  # killed now: nothing will ever run it again


def test_a_job_popped_from_several_queues_waits_in_the_intermediate_list_and_is_retried(redis_conn):
    queues, job = _two_queues(redis_conn, ReliableQueue)
    popped, queue = ReliableQueue.dequeue_any(queues, 1, connection=redis_conn)
    assert (popped.id, queue.name) == (job.id, "t-routing")
    assert _where(job, queues) == {"intermediate:t-routing"}
    # killed now. RQ's maintenance sweeps the list: it notes the job, and a minute later retries it.
    sweeper = CrowdgateWorker(queues, connection=redis_conn, queue_class=ReliableQueue)
    intermediate = queues[1].intermediate_queue
    intermediate.cleanup(sweeper, queues[1])
    redis_conn.set(intermediate.get_first_seen_key(job.id),
                   (datetime.now(UTC) - timedelta(minutes=2)).timestamp())
    intermediate.cleanup(sweeper, queues[1])
    assert _where(job, queues) == {"queued:t-routing"}  # the first retry has no delay (no scheduler needed)
    assert Job.fetch(job.id, connection=redis_conn).retries_left == 2


def test_reliable_queue_blocks_while_idle_and_times_out(redis_conn):
    queues = [ReliableQueue(name, connection=redis_conn) for name in ("t-events", "t-routing")]
    started = time.monotonic()
    try:
        ReliableQueue.dequeue_any(queues, 2, connection=redis_conn)
    except Exception as exc:
        assert type(exc).__name__ == "DequeueTimeout"
    else:
        raise AssertionError("an empty dequeue with a timeout must raise DequeueTimeout")
    assert 1.5 < time.monotonic() - started < 5
    assert ReliableQueue.dequeue_any(queues, None, connection=redis_conn) is None


def test_stock_rq_registers_a_job_it_has_not_marked_started(redis_conn):
    """The defect: killed between registering the execution and marking the job started, the job's entry
    expires and RQ's cleanup skips it, since it retries only started jobs."""
    queue = Queue("t-events", connection=redis_conn)
    job = queue.enqueue(record_attempt, retry=Retry(max=3), job_timeout=30)
    worker = SimpleWorker([queue], connection=redis_conn)
    popped, _ = Queue.dequeue_any([queue], 1, connection=redis_conn)
    worker.prepare_execution(popped)
    assert Job.fetch(job.id, connection=redis_conn).get_status() == JobStatus.QUEUED
    queue.started_job_registry.cleanup(timestamp=time.time() + 3600)  # long after the entry expired
    refreshed = Job.fetch(job.id, connection=redis_conn)
    assert refreshed.get_status() == JobStatus.QUEUED and refreshed.retries_left == 3  # not retried
    assert job.id not in queue.get_job_ids() and job.id not in queue.started_job_registry.get_job_ids()


def test_prepare_execution_registers_starts_and_unlists_the_job_at_once(redis_conn):
    queues, job = _two_queues(redis_conn, ReliableQueue)
    worker = CrowdgateWorker(queues, connection=redis_conn, queue_class=ReliableQueue)
    popped, _ = ReliableQueue.dequeue_any(queues, 1, connection=redis_conn)
    worker.prepare_execution(popped)
    assert _where(job, queues) == {"started-registry:t-routing:started"}
    # killed now: once the entry expires, RQ's cleanup retries the job
    queues[1].started_job_registry.cleanup(timestamp=time.time() + 3600)
    assert _where(job, queues) == {"queued:t-routing"}
    assert Job.fetch(job.id, connection=redis_conn).retries_left == 2


def test_a_worker_on_reliable_queues_runs_jobs_from_every_queue_in_order(redis_conn):
    queues = [ReliableQueue(name, connection=redis_conn) for name in ("t-events", "t-routing")]
    later = queues[1].enqueue(record_attempt)
    first = queues[0].enqueue(record_attempt)
    worker = CrowdgateWorker(queues, connection=redis_conn, queue_class=ReliableQueue)
    worker.work(burst=True)
    assert first.get_status(refresh=True) == later.get_status(refresh=True) == "finished"
    assert (first.return_value(), later.return_value()) == (1, 2)  # the events queue first
    assert not any(queue.intermediate_queue.get_job_ids() for queue in queues)
