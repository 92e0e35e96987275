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
from routing.jobs import ROUTING_QUEUE, sweep_deadlines


def scheduler(connection: redis.Redis, prefix: str | None = None) -> CronScheduler:
    cron = CronScheduler(connection=connection, name=f"crowdgate-cron:{os.getpid()}")
    cron.register(
        reconcile_and_route,
        queue_name=os.environ.get("CROWDGATE_EVENTS_QUEUE", EVENTS_QUEUE),
        kwargs={"prefix": prefix or os.environ.get("CROWDGATE_KEY_PREFIX", "cg")},
        interval=int(os.environ.get("CROWDGATE_RECONCILE_INTERVAL_S", "300")),
        job_timeout=1800,
        name="reconcile_all",  # the name operators know it by
    )
    cron.register(
        refresh_flags,
        queue_name=os.environ.get("CROWDGATE_EVENTS_QUEUE", EVENTS_QUEUE),
        kwargs={"prefix": prefix or os.environ.get("CROWDGATE_KEY_PREFIX", "cg")},
        interval=int(os.environ.get("CROWDGATE_FLAGS_INTERVAL_S", "60")),
        job_timeout=600,
        name="refresh_flags",
    )
    # Each escalation also schedules its own deadline check (enqueue_in); this sweep is a backstop for checks
    # lost with an old Redis snapshot. Off unless CROWDGATE_SLA_SWEEP_S is set (seconds between sweeps).
    sweep_every = int(os.environ.get("CROWDGATE_SLA_SWEEP_S", "0"))
    if sweep_every > 0:
        cron.register(
            sweep_deadlines,
            queue_name=ROUTING_QUEUE,
            kwargs={"prefix": prefix or os.environ.get("CROWDGATE_KEY_PREFIX", "cg")},
            interval=sweep_every,
            job_timeout=600,
            name="sweep_deadlines",
        )
    return cron


def main() -> int:
    logging.basicConfig(level=os.environ.get("CROWDGATE_LOG_LEVEL", "INFO"))
    scheduler(redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
