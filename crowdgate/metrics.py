"""``/metrics`` in Prometheus' text format, through ``prometheus_client``.

Two sources, no per-annotator label anywhere (per-annotator figures belong in ``crowdgate report``):

- **This web process's requests** (prometheus_client metrics; under gunicorn set ``PROMETHEUS_MULTIPROC_DIR`` and
  every worker process writes its own file, which ``/metrics`` adds up — `prometheus_client`'s multiprocess
  mode): webhook requests by answer and their latency, the LLM's calls, errors, tokens and cost.
- **crowdgate's shared state in Redis, read at scrape time** (a collector): queue depths, failed jobs, unscored
  tasks, stored submissions, flagged and paused annotators, escalated tasks waiting, and counters of what the
  audit log recorded (escalations, flags, pauses, SLA breaches, admin actions, by kind). Those counters are kept
  in Redis, advanced by one Lua call per scrape from where the last one stopped, so every web process and every
  machine serves the same totals.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from flask import Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from rq import Queue

from core.keys import Keys
from core.settings import Settings
from routing import pausing

__all__ = ["RedisCollector", "advance_audit_counts", "init_metrics"]

WEBHOOK_PATH = "/hooks/labelstudio"

# In multiprocess mode prometheus_client writes a file per process as soon as a metric is made (below).
_MULTIPROC_DIR = Settings.from_env().prometheus_multiproc_dir  # read as prometheus_client reads it: at import
if _MULTIPROC_DIR:
    Path(_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)

WEBHOOK_REQUESTS = Counter("crowdgate_webhook_requests_total", "Webhook requests answered, by HTTP status", ["code"])
SUBMISSIONS_RECEIVED = Counter("crowdgate_webhook_events_received_total",
                               "Webhook events accepted (200), by outcome: queued or duplicate", ["outcome"])
WEBHOOK_SECONDS = Histogram("crowdgate_webhook_duration_seconds", "Time to answer a webhook request",
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
LLM_CALLS = Counter("crowdgate_llm_calls_total", "Requests sent to the LLM endpoint")
LLM_ERRORS = Counter("crowdgate_llm_errors_total", "LLM requests that failed")
LLM_TOKENS = Counter("crowdgate_llm_tokens_total", "LLM tokens used, by kind", ["kind"])
LLM_COST = Counter("crowdgate_llm_cost_usd_total", "Estimated LLM spending in USD")
for _label in ("queued", "duplicate"):  # served as 0 before the first event, so dashboards and alerts find them
    SUBMISSIONS_RECEIVED.labels(_label)
for _label in ("prompt", "completion"):
    LLM_TOKENS.labels(_label)
_LLM_COUNTERS = {"calls": (LLM_CALLS, None), "errors": (LLM_ERRORS, None),
                 "prompt_tokens": (LLM_TOKENS, "prompt"), "completion_tokens": (LLM_TOKENS, "completion"),
                 "cost_usd": (LLM_COST, None)}

# Counters of audit entries: (metric, help, which (kind, action) pairs count).
AUDIT_COUNTERS = (
    ("crowdgate_escalations_total", "Tasks escalated to a higher tier", lambda k, a: a == "escalate"),
    ("crowdgate_flags_total", "Annotators or work flagged (by hand, by the fraud signals, off-tier work)",
     lambda k, a: k == "flag"),
    ("crowdgate_pauses_total", "Annotators paused", lambda k, a: a in ("pause", "fraud_pause")),
    ("crowdgate_sla_breaches_total", "Escalated tasks past their deadline", lambda k, a: a == "sla_breach"),
    ("crowdgate_admin_actions_total", "Admin actions (dashboard, admin API, CLI)", lambda k, a: a.startswith("admin_")),
)

# Count audit entries after the cursor into the counts hash, at most ARGV[1] of them, atomically: two scrapes at
# once never count an entry twice. KEYS: the audit stream, the cursor, the counts.
_ADVANCE = """
local cursor = redis.call('GET', KEYS[2]) or '0-0'
local entries = redis.call('XRANGE', KEYS[1], '(' .. cursor, '+', 'COUNT', tonumber(ARGV[1]))
for _, entry in ipairs(entries) do
  local fields, kind, action = entry[2], '', ''
  for i = 1, #fields, 2 do
    if fields[i] == 'kind' then kind = fields[i + 1] elseif fields[i] == 'action' then action = fields[i + 1] end
  end
  redis.call('HINCRBY', KEYS[3], kind .. '\\t' .. action, 1)
end
if #entries > 0 then redis.call('SET', KEYS[2], entries[#entries][1]) end
return #entries
"""


def advance_audit_counts(connection: redis.Redis, prefix: str, step: int = 20000,
                         max_steps: int = 50) -> dict[tuple[str, str], int]:
    """Count the audit entries written since the last call into Redis; returns every (kind, action) count."""
    keys = Keys(prefix)
    script = connection.register_script(_ADVANCE)
    for _ in range(max_steps):
        if script(keys=[keys.audit_stream(), keys.metrics_audit_cursor(), keys.metrics_audit_counts()],
                  args=[step]) < step:
            break
    counts = {}
    for field, value in connection.hgetall(keys.metrics_audit_counts()).items():
        kind, _, action = field.decode().partition("\t")
        counts[(kind, action)] = int(value)
    return counts


class RedisCollector(Collector):
    """crowdgate's shared figures, read from Redis at each scrape (see the module docstring)."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
        self.keys = Keys(settings.key_prefix)

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("crowdgate_redis_up", "1 when Redis answered this scrape")
        try:
            families = list(self._families())
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Any]:
        c, k, s = self.connection, self.keys, self.settings
        depth = GaugeMetricFamily("crowdgate_queue_depth", "Jobs or events waiting, by queue", labels=["queue"])
        failed = GaugeMetricFamily("crowdgate_failed_jobs", "Jobs in RQ's failed registry, by queue",
                                   labels=["queue"])
        for name in (s.events_queue, s.routing_queue, s.ml_queue):
            queue = Queue(name, connection=c)
            depth.add_metric([name], queue.count)
            failed.add_metric([name], queue.failed_job_registry.count)
        depth.add_metric(["inbox"], c.xlen(k.inbox(s.events_queue)) if c.exists(k.inbox(s.events_queue)) else 0)
        yield depth
        yield failed

        projects = sorted(int(p) for p in c.smembers(k.projects()))
        pipe = c.pipeline(transaction=False)
        for p in projects:
            pipe.zcard(k.unscored(p))
            pipe.hlen(k.flagged(p))
            pipe.hlen(k.annotator_flags(p))
            pipe.smembers(k.annotators(p))
        replies = pipe.execute()
        unscored = hand = signals = 0
        people: list[tuple[int, list[int]]] = []
        for i, p in enumerate(projects):
            unscored += replies[4 * i]
            hand += replies[4 * i + 1]
            signals += replies[4 * i + 2]
            people.append((p, [int(a) for a in replies[4 * i + 3]]))
        pipe = c.pipeline(transaction=False)
        for p, annotators in people:
            for a in annotators:
                pipe.zcard(k.annotator_submissions(p, a))
        stored = sum(pipe.execute()) if any(a for _, a in people) else 0
        yield GaugeMetricFamily("crowdgate_projects", "Projects crowdgate has seen", value=len(projects))
        yield GaugeMetricFamily("crowdgate_submissions_stored",
                                "Live submissions recorded (crowdgate_unscored_tasks: tasks not scored yet)",
                                value=stored)
        yield GaugeMetricFamily("crowdgate_unscored_tasks", "Tasks written but not yet scored and routed",
                                value=unscored)
        flagged = GaugeMetricFamily("crowdgate_flagged_annotators", "Annotators flagged now, by source",
                                    labels=["source"])
        flagged.add_metric(["hand"], hand)
        flagged.add_metric(["signals"], signals)
        yield flagged
        paused = sum(st.status == "paused" for p in projects for st in pausing.statuses(c, p, s.key_prefix).values())
        yield GaugeMetricFamily("crowdgate_paused_annotators", "Annotators paused now", value=paused)
        yield GaugeMetricFamily("crowdgate_escalated_tasks", "Escalated tasks waiting for a higher tier",
                                value=c.zcard(k.deadlines()))

        counts = advance_audit_counts(c, s.key_prefix)
        by_kind = CounterMetricFamily("crowdgate_audit_entries", "Audit log entries written, by kind",
                                      labels=["kind"])
        kinds: dict[str, int] = {}
        for (kind, _), n in counts.items():
            kinds[kind] = kinds.get(kind, 0) + n
        for kind, n in sorted(kinds.items()):
            by_kind.add_metric([kind], n)
        yield by_kind
        for name, doc, matches in AUDIT_COUNTERS:
            yield CounterMetricFamily(name.removesuffix("_total"), doc,
                                      value=sum(n for (kind, action), n in counts.items() if matches(kind, action)))


def _sync_llm() -> None:
    """Move this process's LLM counters (``LLMPredictor.counters``) into the Prometheus counters by difference."""
    model = (current_app.extensions.get("crowdgate.ml") or {}).get("model")
    llm = getattr(model, "llm", None)
    if llm is None:
        return
    now = llm.counters()
    seen = current_app.extensions["crowdgate.metrics"]["llm_seen"]
    for name, (metric, label) in _LLM_COUNTERS.items():
        delta = float(now.get(name, 0)) - seen.get(name, 0.0)
        if delta > 0:
            (metric.labels(label) if label else metric).inc(delta)
            seen[name] = float(now.get(name, 0))


def _started() -> None:
    if request.path == WEBHOOK_PATH:
        g.crowdgate_started = time.perf_counter()


def _answered(response: Response) -> Response:
    started = g.pop("crowdgate_started", None)
    if started is not None:
        WEBHOOK_SECONDS.observe(time.perf_counter() - started)
        WEBHOOK_REQUESTS.labels(str(response.status_code)).inc()
        if response.status_code == 200 and response.is_json:
            outcome = (response.get_json(silent=True) or {}).get("status")
            if outcome in ("queued", "duplicate"):
                SUBMISSIONS_RECEIVED.labels(outcome).inc()
    with contextlib.suppress(Exception):  # counting never breaks an answer
        _sync_llm()
    return response


class _ThisProcess(Collector):
    """The default registry's metrics (this process's requests, LLM counters, and the process itself)."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


def _scrape() -> Response:
    ext = current_app.extensions["crowdgate.metrics"]
    registry = CollectorRegistry()
    if ext["settings"].prometheus_multiproc_dir:  # every gunicorn process's files, added up
        MultiProcessCollector(registry, path=ext["settings"].prometheus_multiproc_dir)
    else:
        registry.register(_ThisProcess())
    registry.register(ext["collector"])
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_metrics(app: Flask, settings: Settings) -> None:
    """Serve ``/metrics`` and count the webhook requests and LLM calls of this app."""
    connection = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    app.extensions["crowdgate.metrics"] = {"settings": settings, "collector": RedisCollector(connection, settings),
                                           "llm_seen": {}}
    app.before_request(_started)
    app.after_request(_answered)
    app.add_url_rule("/metrics", "crowdgate_metrics", _scrape)
