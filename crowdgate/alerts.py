"""crowdgate's own alerts, posted to a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat).

    send_alerts(prefix)          # the crowdgate-cron job, every $CROWDGATE_ALERT_INTERVAL_S s when
                                 # $CROWDGATE_ALERT_WEBHOOK_URL is set
    report_llm_outages(settings) # crowdgate-web and -worker: an LLM outage becomes an audit alert

What is worth a person's attention is already in the audit log (:mod:`routing.audit`); the job reads the entries
written since its cursor, keeps those of :data:`ALERT_ACTIONS`, and posts them as one message ``{"text": ...}``:
a line each (project, annotator or task, what, the entry's reason), at most ``max_lines``, then counts of the rest.

- **Delivery.** The cursor moves only once the receiver has accepted the message (any 2xx), so alerts that could
  not be posted are sent with the next run's; a failure is logged at WARNING and returned, never raised (it
  would only fill RQ's failed registry once a minute).
- **One sender.** A run holds a Redis lock (``SET NX`` with a token and an expiry) from reading the cursor to
  saving it, and saves it only while the lock is still its own (one Lua call), so two runs at once never send an
  entry twice: the second one finds the lock taken and leaves.
- **No flood.** A message lists at most ``max_lines`` alerts and sums up the rest by kind; a run reads at most
  ``scan_max`` entries (a long backlog drains over several runs); an alert repeating one already sent within
  the hour (reconciliation audits a broken webhook at every pass) is left out; a first run starts an hour back,
  not at the beginning of the log.
- **No secret.** The URL holds the receiver's token: it is never logged, and errors name its host only.
  Configured secrets that appear in a reason are masked.

Two signals are recorded here as audit ``alert`` entries, then sent like the others:

- ``agreement_drop`` (:func:`check_agreement`, at each run): the mean pairwise agreement of the comparisons a
  project's scoring made since its last judged window (at least ``AGREEMENT_MIN_PAIRS`` of them) against its
  mean before, from the annotators' running sums (``pair_n``, ``pair_sum``, the pairs each task's agreement is
  the mean of); a drop of ``AGREEMENT_DROP`` or more is an alert.
- ``llm_failing`` (:func:`report_llm_outages`): the LLM client's breaker opened (tasks in a row failed on an
  outage), once per outage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import redis
import requests

from core.keys import Keys
from core.settings import Settings, current
from ml_backend.llm import Outage, on_outage
from qa_hooks.jobs import current_connection
from routing.audit import AuditEntry, AuditLog

__all__ = ["AGREEMENT_DROP", "AGREEMENT_MIN_PAIRS", "ALERT_ACTIONS", "Alert", "check_agreement", "format_message",
           "report_llm_outages", "send_alerts"]

log = logging.getLogger(__name__)

# Audit actions worth an alert -> what happened, in words. Others (decisions, routine actions, per-submission
# flags such as off_tier_work) stay in the audit log and the dashboard.
ALERT_ACTIONS: dict[str, str] = {
    "fraud_review": "flagged for review",
    "fraud_pause": "paused",
    "pause": "paused by the routing policy",
    "flag_annotator": "flagged by hand",
    "sla_breach": "escalated task past its deadline",
    **{f"webhook_{status}": f"crowdgate's webhook is {status}" for status in ("missing", "inactive", "misconfigured")},
    **{f"webhook_{status}_repaired": f"crowdgate's webhook was {status}, now repaired"
       for status in ("missing", "inactive", "misconfigured")},
    "webhook_error": "crowdgate's webhook could not be checked",
    "no_webhook": "a project crowdgate created has no webhook",
    "reconcile_failed": "reconciliation with Label Studio failed",
    "llm_failing": "the LLM endpoint is failing",
    "agreement_drop": "agreement dropped",
}
_ABOUT_ANNOTATORS = frozenset({"fraud_review", "fraud_pause", "pause", "flag_annotator"})  # "annotator 7 paused"

AGREEMENT_MIN_PAIRS = 50  # comparisons (pairs of labels on one task) a window needs before it is judged
AGREEMENT_DROP = 0.15  # on a mean of similarities in [0, 1]; with 50 pairs its standard error is at most 0.07
REPEAT_S = 3600.0  # an alert repeating one sent this recently is left out
FIRST_LOOKBACK_S = 3600.0  # where a run without a cursor starts
REASON_CHARS = 300
TIMEOUT_S = 10.0

# Save the cursor and the lines sent, then let the lock go, only if the lock is still this run's.
# KEYS: lock, cursor, sent; ARGV: token, cursor, now, repeat window, digests of the lines sent.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
local now, window = tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 5, #ARGV do redis.call('HSET', KEYS[3], ARGV[i], ARGV[3]) end
local sent = redis.call('HGETALL', KEYS[3])
for i = 1, #sent, 2 do
  if tonumber(sent[i + 1]) < now - window then redis.call('HDEL', KEYS[3], sent[i]) end
end
redis.call('DEL', KEYS[1])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Alert:
    """One line of a message, from one audit entry (or several identical ones: ``times``)."""

    entry: AuditEntry
    times: int = 1

    @property
    def digest(self) -> str:
        """What makes two alerts the same one (the time and the evidence aside)."""
        e = self.entry
        text = json.dumps([e.action, e.project, e.task, list(e.annotators), e.reason])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def line(self, secrets: Iterable[str] = ()) -> str:
        e = self.entry
        where = "" if e.project is None else f"project {e.project}"
        if e.task is not None:
            where += f", task {e.task}"
        who = ", ".join(str(a) for a in e.annotators)
        what = ALERT_ACTIONS.get(e.action, e.action)
        if who and e.action in _ABOUT_ANNOTATORS:
            what = f"annotator{'s' if len(e.annotators) > 1 else ''} {who} {what}"
        elif who:  # e.g. whom an overdue task was assigned to
            what += f" (annotator{'s' if len(e.annotators) > 1 else ''} {who})"
        text = f"{where}: {what}" if where else what
        reason = _mask(" ".join(e.reason.split()), secrets)
        if len(reason) > REASON_CHARS:
            reason = reason[: REASON_CHARS - 1] + "…"
        if reason:
            text += f": {reason}"
        if self.times > 1:
            text += f" ({self.times} times)"
        return "• " + _escape(text)


def _escape(text: str) -> str:
    """Slack reads ``<...>`` as links and mentions (``<!channel>``): its three control characters, escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _secrets(settings: Settings) -> list[str]:
    """Values that must never reach a message; the alert URL and its path (the token) first."""
    url = settings.alert_webhook_url
    path = urlparse(url).path
    found = [url, path if len(path) > 1 else "", settings.webhook_secret,
             settings.webhook_secret_previous, settings.admin_token, settings.label_studio_api_key,
             settings.openai_api_key, settings.ml_basic_auth_password, settings.ls_password]
    return [s for s in found if s and len(s) >= 4]  # a very short value would mask ordinary words


def _host(url: str) -> str:
    """The receiver as logs may name it: scheme, host and port, none of the path that holds its token."""
    parts = urlparse(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or '?'}{port}"


def format_message(alerts: list[Alert], prefix: str, max_lines: int = 20, more: bool = False,
                   secrets: Iterable[str] = ()) -> str:
    """The message's text: a header with the count and time span, a line per alert (the first ``max_lines``),
    then the rest counted by action; ``more``: the run stopped before the end of a backlog."""
    secrets = list(secrets)
    total = sum(a.times for a in alerts)
    stamps = [a.entry.ts for a in alerts]

    def at(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")

    span = at(min(stamps)) if at(min(stamps)) == at(max(stamps)) else f"{at(min(stamps))} to {at(max(stamps))}"
    lines = [f"crowdgate [{_escape(prefix)}]: {total} alert{'s' if total != 1 else ''}, {span} UTC"]
    lines += [a.line(secrets) for a in alerts[:max_lines]]
    rest: Counter[str] = Counter()
    for a in alerts[max_lines:]:
        rest[a.entry.action] += a.times
    if rest:
        counts = ", ".join(f"{n} {action}" for action, n in rest.most_common())
        lines.append(f"… and {sum(rest.values())} more: {counts}")
    if more:
        lines.append("(more to come: older audit entries are still being read)")
    return "\n".join(lines)


# -- the agreement check --------------------------------------------------------------------------------------


def _pair_sums(connection: redis.Redis, keys: Keys, project: int) -> tuple[float, float]:
    """The project's pairwise comparisons and the sum of their similarities, over its annotators' records
    (each comparison is in both annotators' sums, which the ratio does not mind)."""
    annotators = [a.decode() for a in connection.smembers(keys.annotators(project))]
    pipe = connection.pipeline(transaction=False)
    for a in annotators:
        pipe.hmget(keys.annotator_stats(project, a), "pair_n", "pair_sum")
    n = total = 0.0
    for pair_n, pair_sum in pipe.execute() if annotators else []:
        n += float(pair_n or 0)
        total += float(pair_sum or 0)
    return n, total


def check_agreement(connection: redis.Redis, prefix: str = "cg", min_pairs: int = AGREEMENT_MIN_PAIRS,
                    drop: float = AGREEMENT_DROP) -> list[int]:
    """Audit an ``agreement_drop`` alert for each project whose comparisons since its last judged window (at
    least ``min_pairs``) agree ``drop`` or more below its mean before; returns those projects. A window is
    judged once, then becomes part of the "before"; a project seen for the first time only gets its baseline."""
    keys = Keys(prefix)
    audit = AuditLog(connection, prefix)
    baselines = {int(p): json.loads(v) for p, v in connection.hgetall(keys.alerts_agreement()).items()}
    dropped = []
    for project in sorted(int(p) for p in connection.smembers(keys.projects())):
        n, total = _pair_sums(connection, keys, project)
        before = baselines.get(project)
        if before is not None and n >= before[0]:
            new_n = n - before[0]
            if new_n < 2 * min_pairs:  # each comparison counted twice: keep gathering this window
                continue
            if before[0] >= 2 * min_pairs:
                earlier = before[1] / before[0]
                recent = min(1.0, max(0.0, (total - before[1]) / new_n))
                if earlier - recent >= drop:
                    dropped.append(project)
                    audit.record("alert", "agreement_drop", project, reason=(
                        f"the {new_n / 2:.0f} comparisons since the last check agree {recent:.2f} on average, "
                        f"against {earlier:.2f} over the {before[0] / 2:.0f} before"),
                        evidence={"recent": recent, "earlier": earlier, "recent_pairs": new_n / 2,
                                  "earlier_pairs": before[0] / 2}, job="crowdgate.alerts")
        # first sight, a window just judged, or fewer comparisons than before (deletions, a rebuild): start over
        connection.hset(keys.alerts_agreement(), str(project), json.dumps([n, total]))
    return dropped


# -- the LLM's outages ------------------------------------------------------------------------------------------


def report_llm_outages(settings: Settings) -> None:
    """When alerts are on, have each LLM outage of this process (``ml_backend.llm``'s breaker opening, once per
    outage) recorded as an audit alert ``llm_failing``; when they are off, recorded by nobody."""
    if not settings.alert_webhook_url or not settings.redis_url:
        on_outage(None)
        return
    connection = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    audit = AuditLog(connection, settings.key_prefix)

    def record(outage: Outage) -> None:
        audit.record("alert", "llm_failing", None, reason=(
            f"{outage.endpoint} (model {outage.model}) failed {outage.failures} tasks in a row: no LLM calls for "
            f"{outage.cooldown_s:.0f} s at a time until it answers again, the other models pre-label meanwhile"),
            evidence=asdict(outage), job="ml_backend.llm")

    on_outage(record)


# -- the job --------------------------------------------------------------------------------------------------


def _start(cursor: bytes | None) -> str:
    if cursor is not None:
        return cursor.decode()
    return f"{int((time.time() - FIRST_LOOKBACK_S) * 1000)}-0"


def _post(url: str, text: str, timeout_s: float, secrets: list[str]) -> str | None:
    """None when the receiver accepted the message, else what went wrong (no URL path in it)."""
    try:
        reply = requests.post(url, json={"text": text}, timeout=timeout_s)
    except requests.RequestException as exc:  # its text names the URL: the type and the host only
        return f"{type(exc).__name__} posting to {_host(url)}"
    if 200 <= reply.status_code < 300:
        return None
    return _mask(f"HTTP {reply.status_code} from {_host(url)}: {reply.text[:200]}", secrets)


def send_alerts(prefix: str = "cg", connection: redis.Redis | None = None, settings: Settings | None = None,
                max_lines: int = 20, scan_max: int = 50_000, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """The cron job: check agreement, then post the alerts audited since the cursor (see the module docstring).

    Returns ``scanned`` (entries read), ``alerts`` (worth sending), ``repeats`` (left out), ``sent`` (posted),
    ``cursor``, ``more`` (a backlog is left), and ``error`` when the receiver failed (they go next run) or
    ``skipped`` when nothing was tried."""
    connection = connection or current_connection()
    settings = settings or current()
    url = settings.alert_webhook_url
    if not url:
        return {"skipped": "CROWDGATE_ALERT_WEBHOOK_URL is not set"}
    keys = Keys(prefix)
    token = uuid.uuid4().hex
    # Longer than a run can take (the POST is the slow part), short enough that a killed run frees it soon.
    if not connection.set(keys.alerts_lock(), token, nx=True, ex=int(3 * timeout_s) + 60):
        return {"skipped": "another alert run holds the lock"}
    try:
        return _run(connection, keys, prefix, token, settings, max_lines, scan_max, timeout_s)
    finally:  # no-op after a commit, which has let it go already
        connection.register_script(_RELEASE)(keys=[keys.alerts_lock()], args=[token])


def _run(connection: redis.Redis, keys: Keys, prefix: str, token: str, settings: Settings, max_lines: int,
         scan_max: int, timeout_s: float) -> dict[str, Any]:
    check_agreement(connection, prefix)
    audit = AuditLog(connection, prefix)
    cursor = _start(connection.get(keys.alerts_cursor()))
    scanned = 0
    grouped: dict[str, Alert] = {}
    position = cursor
    while scanned < scan_max:
        chunk = audit.after(position, min(1000, scan_max - scanned))
        if not chunk:
            break
        scanned += len(chunk)
        position = chunk[-1].id
        for entry in chunk:
            if entry.action in ALERT_ACTIONS:
                alert = Alert(entry)
                seen = grouped.get(alert.digest)
                grouped[alert.digest] = Alert(seen.entry, seen.times + 1) if seen else alert
    more = scanned >= scan_max and bool(audit.after(position, 1))
    result: dict[str, Any] = {"scanned": scanned, "alerts": sum(a.times for a in grouped.values()), "repeats": 0,
                              "sent": 0, "cursor": cursor, "more": more}
    if not scanned:
        return result
    now = time.time()
    recent = {d.decode(): float(t) for d, t in connection.hgetall(keys.alerts_sent()).items()}
    fresh = [a for d, a in grouped.items() if now - recent.get(d, -REPEAT_S) >= REPEAT_S]
    result["repeats"] = result["alerts"] - sum(a.times for a in fresh)
    if fresh:
        secrets = _secrets(settings)
        error = _post(settings.alert_webhook_url, format_message(fresh, prefix, max_lines, more, secrets),
                      timeout_s, secrets)
        if error is not None:
            log.warning("alerts not sent (%s); the %d of them go with the next run", error, len(fresh))
            return {**result, "error": error}
        result["sent"] = sum(a.times for a in fresh)
    committed = connection.register_script(_COMMIT)(
        keys=[keys.alerts_lock(), keys.alerts_cursor(), keys.alerts_sent()],
        args=[token, position, repr(now), repr(REPEAT_S), *(a.digest for a in fresh)])
    if not committed:
        log.warning("the alert run outlived its lock: its cursor was not saved, some alerts may be sent again")
        return {**result, "error": "lock expired before the cursor was saved"}
    return {**result, "cursor": position}
