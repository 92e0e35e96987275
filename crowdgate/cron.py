"""Periodic jobs, scheduled with RQ's own CronScheduler.

    crowdgate-cron           # reconcile_and_route every $CROWDGATE_RECONCILE_INTERVAL_S s (300),
                             # refresh_flags every $CROWDGATE_FLAGS_INTERVAL_S s (60),
                             # evaluate_fraud (routing.pausing.evaluate_all) at the same interval,
                             # sweep_deadlines every $CROWDGATE_SLA_SWEEP_S s (off unless set)
                             # apply_retention every $CROWDGATE_RETENTION_SWEEP_S s (3600)
                             # refit_all every $CROWDGATE_REFIT_INTERVAL_S s (600)
                             # send_alerts (crowdgate.alerts) every $CROWDGATE_ALERT_INTERVAL_S s (60),
                             #   only when $CROWDGATE_ALERT_WEBHOOK_URL is set
                             # sync_data_manager every $CROWDGATE_DATA_MANAGER_INTERVAL_S s (120)
"""

from __future__ import annotations

import logging
import os
import sys

import redis
from rq.cron import CronScheduler

from core.settings import Settings, use
from crowdgate.alerts import send_alerts
from crowdgate.pipeline import reconcile_and_route
from qa_hooks.jobs import refresh_flags
from qa_hooks.refit import refit_all
from qa_hooks.retention import apply_retention
from routing.actions import sweep_deadlines
from routing.data_manager import sync_data_manager
from routing.pausing import evaluate_all


def scheduler(connection: redis.Redis, settings: Settings) -> CronScheduler:
    cron = CronScheduler(connection=connection, name=f"crowdgate-cron:{os.getpid()}")
    events = settings.events_queue
    # (job, queue, seconds between runs, timeout, name operators know it by); 0 seconds: not scheduled.
    # Each escalation also schedules its own deadline check (enqueue_in): the deadline sweep is only a backstop
    # for checks lost with an old Redis snapshot, off unless CROWDGATE_SLA_SWEEP_S is set.
    jobs = [
        (reconcile_and_route, events, settings.reconcile_interval_s, 1800, "reconcile_all"),
        (refresh_flags, events, settings.flags_interval_s, 600, "refresh_flags"),
        (evaluate_all, events, settings.flags_interval_s, 600, "evaluate_fraud"),
        (sweep_deadlines, settings.routing_queue, settings.sla_sweep_s, 600, "sweep_deadlines"),
        (apply_retention, events, settings.retention_sweep_s, 1800, "apply_retention"),
        (refit_all, events, settings.refit_interval_s, 1800, "refit_all"),
        # The job reads the URL from the worker's settings: the token it holds stays out of RQ's job data.
        (send_alerts, events, settings.alert_interval_s if settings.alert_webhook_url else 0, 120, "send_alerts"),
        (sync_data_manager, settings.routing_queue, settings.data_manager_interval_s, 900, "sync_data_manager"),
    ]
    kwargs = {"prefix": settings.key_prefix}
    for func, queue, interval, timeout, name in jobs:
        if interval > 0:
            cron.register(func, queue_name=queue, kwargs=kwargs, interval=interval, job_timeout=timeout, name=name)
    return cron


def main() -> int:
    settings = use(Settings.from_env())
    logging.basicConfig(level=settings.log_level)
    scheduler(redis.Redis.from_url(settings.redis_url), settings).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
