"""Periodic jobs, scheduled with RQ's own CronScheduler.

    crowdgate-cron           # reconcile_and_route every $CROWDGATE_RECONCILE_INTERVAL_S s (300),
                             # refresh_flags every $CROWDGATE_FLAGS_INTERVAL_S s (60),
                             # sweep_deadlines every $CROWDGATE_SLA_SWEEP_S s (off unless set)
"""

from __future__ import annotations

import logging
import os
import sys

import redis
from rq.cron import CronScheduler

from crowdgate.pipeline import reconcile_and_route
from qa_hooks.config import EVENTS_QUEUE
from qa_hooks.jobs import refresh_flags
from routing.actions import sweep_deadlines
from routing.runtime import ROUTING_QUEUE


def scheduler(connection: redis.Redis, prefix: str | None = None) -> CronScheduler:
    cron = CronScheduler(connection=connection, name=f"crowdgate-cron:{os.getpid()}")
    events = os.environ.get("CROWDGATE_EVENTS_QUEUE", EVENTS_QUEUE)
    # (job, queue, seconds between runs, timeout, name operators know it by); 0 seconds: not scheduled.
    # Each escalation also schedules its own deadline check (enqueue_in): the deadline sweep is only a backstop
    # for checks lost with an old Redis snapshot, off unless CROWDGATE_SLA_SWEEP_S is set.
    jobs = [
        (reconcile_and_route, events, int(os.environ.get("CROWDGATE_RECONCILE_INTERVAL_S", "300")), 1800,
         "reconcile_all"),
        (refresh_flags, events, int(os.environ.get("CROWDGATE_FLAGS_INTERVAL_S", "60")), 600, "refresh_flags"),
        (sweep_deadlines, ROUTING_QUEUE, int(os.environ.get("CROWDGATE_SLA_SWEEP_S", "0")), 600, "sweep_deadlines"),
    ]
    kwargs = {"prefix": prefix or os.environ.get("CROWDGATE_KEY_PREFIX", "cg")}
    for func, queue, interval, timeout, name in jobs:
        if interval > 0:
            cron.register(func, queue_name=queue, kwargs=kwargs, interval=interval, job_timeout=timeout, name=name)
    return cron


def main() -> int:
    logging.basicConfig(level=os.environ.get("CROWDGATE_LOG_LEVEL", "INFO"))
    scheduler(redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
