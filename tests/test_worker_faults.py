"""crowdgate-worker under faults, with real processes: Redis restarted under it, the worker killed mid-job."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import redis
from rq import Queue, Retry
from rq.job import Job

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
