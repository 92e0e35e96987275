"""What the report and the dashboard show, read from crowdgate's Redis in batched round trips.

    report = read_project(connection, prefix, project)    # everything, read now
    report = ReportCache(ttl_s=5).get(connection, prefix, project)   # the dashboard's: reused for a few seconds

Per annotator: submitted, skipped, agreement with peers, gold score with its 90 % interval, reliability with its
interval (``qa_hooks.ledger.Reliability``), tier, median lead time (of the last 100) and total lead time, flags
with their reasons (by hand and the fraud signals), pauses, last active. Per task: labels, agreement, status,
escalations, predicted difficulty. Nothing here writes.

Reads are sized for a project of 100,000 submissions and 1,000 annotators: the per-annotator counts are summed
inside Redis by one Lua call per batch of annotators, the tasks' fields come from one Lua call per 1,000 tasks,
and the annotators' records are read in pipelines of at most ``BATCH`` commands (``bench/dashboard.py`` measures it).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis

from core.keys import Keys
from crowdgate.report.cost import AnnotatorWork, CostModel, QaCounts, qa_counts
from qa_hooks.ledger import Ledger
from qa_hooks.store import LuaScript
from routing import pausing
from routing.data_manager import task_status
from routing.policy import Policy
from routing.state import RoutingState

__all__ = ["BATCH", "AnnotatorRow", "ProjectReport", "ReportCache", "TaskRow", "list_projects", "read_cost",
           "read_project", "read_work"]

BATCH = 2000
ANNOTATORS_PER_SCRIPT = 50
TASKS_PER_SCRIPT = 1000

# Per annotator (ARGV: the (head, tail) parts of a submission key, then the annotators; KEYS: their logs):
# live submissions, skips, the sum and count of lead times (as strings: Lua numbers come back as integers), and
# the newest write time. Old records keep the whole submission as ``json``.
_COUNTS = """
local out = {}
for i, log in ipairs(KEYS) do
  local uids = redis.call('ZRANGE', log, 0, -1)
  local skipped, lead_sum, lead_n = 0, 0, 0
  for _, uid in ipairs(uids) do
    local row = redis.call('HMGET', ARGV[1] .. uid .. ARGV[2], 'x', 'l', 'json')
    local cancelled, lead = row[1] and string.find(row[1], 'c', 1, true), row[2]
    if row[3] then
      local sub = cjson.decode(row[3])
      cancelled = sub['was_cancelled'] == true
      if type(sub['lead_time']) == 'number' then lead = sub['lead_time'] end
    end
    if cancelled then skipped = skipped + 1 end
    if lead then lead_sum = lead_sum + tonumber(lead); lead_n = lead_n + 1 end
  end
  local last = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  out[i] = {#uids, skipped, tostring(lead_sum), lead_n, last[2] or false}
end
return out
"""

# Per annotator in a period (ARGV: the submission key's parts, then the lowest and highest submission time, as
# ZRANGEBYSCORE takes them; KEYS: their logs, scored by Label Studio's created_at): labels that are not skips and
# the sum of the stored lead times (as the report's total lead time: first versions; skips store none).
_WORK = """
local out = {}
for i, log in ipairs(KEYS) do
  local uids = redis.call('ZRANGEBYSCORE', log, ARGV[3], ARGV[4])
  local labels, lead_sum = 0, 0
  for _, uid in ipairs(uids) do
    local row = redis.call('HMGET', ARGV[1] .. uid .. ARGV[2], 'x', 'l', 'json')
    local cancelled, lead = row[1] and string.find(row[1], 'c', 1, true), row[2]
    if row[3] then
      local sub = cjson.decode(row[3])
      cancelled = sub['was_cancelled'] == true
      if type(sub['lead_time']) == 'number' then lead = sub['lead_time'] end
    end
    if not cancelled then labels = labels + 1 end
    if lead then lead_sum = lead_sum + tonumber(lead) end
  end
  out[i] = {labels, tostring(lead_sum)}
end
return out
"""

# Per task (KEYS: the tasks' score hashes, then their route hashes, in the same order): the fields the tables show,
# one call per chunk instead of two commands per task.
_TASKS = """
local n, out = #KEYS / 2, {}
for i = 1, n do
  local score = redis.call('HMGET', KEYS[i], 'n', 'agreement', 'consensus', 'consensus_reached')
  local route = redis.call('HMGET', KEYS[n + i], 'status', 'escalations', 'required_tier')
  out[i] = {score[1], score[2], score[3], score[4], route[1], route[2], route[3]}
end
return out
"""


@dataclass(frozen=True)
class AnnotatorRow:
    annotator: int
    submitted: int  # live submissions that are not skips
    skipped: int
    peer_agreement: float | None  # mean similarity with the other annotators of the same tasks
    peer_n: int
    gold_score: float | None
    gold_low: float | None
    gold_high: float | None
    gold_n: int
    reliability: float
    reliability_low: float
    reliability_high: float
    tier: str
    median_lead_time_s: float | None
    total_lead_time_s: float
    flags: tuple[str, ...]  # "name: reason", by hand and by the fraud signals
    paused: str | None
    last_active: float | None  # Unix seconds of their newest submission
    email: str | None = None
    cost: float | None = None  # wage + platform fee of all their labels (crowdgate.report.cost)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["flags"] = list(self.flags)
        return data


@dataclass(frozen=True)
class TaskRow:
    task: int
    labels: int
    agreement: float | None
    consensus: str | None
    status: str  # needs more / consensus / escalated / final
    escalations: int
    required_tier: str | None
    difficulty: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProjectReport:
    project: int
    title: str
    generated_at: float
    read_seconds: float
    tiers: tuple[str, ...]
    annotators: list[AnnotatorRow] = field(default_factory=list)
    tasks: list[TaskRow] = field(default_factory=list)
    cost: dict[str, Any] = field(default_factory=dict)  # CostModel.summary() of all the project's work

    @property
    def summary(self) -> dict[str, Any]:
        agreements = [t.agreement for t in self.tasks if t.agreement is not None and t.labels >= 2]
        statuses: dict[str, int] = {}
        for t in self.tasks:
            statuses[t.status] = statuses.get(t.status, 0) + 1
        return {
            "project": self.project, "title": self.title,
            "annotators": len(self.annotators),
            "submissions": sum(a.submitted for a in self.annotators),
            "skipped": sum(a.skipped for a in self.annotators),
            "tasks": len(self.tasks),
            "agreement": statistics.fmean(agreements) if agreements else None,
            "flagged": sum(1 for a in self.annotators if a.flags),
            "paused": sum(1 for a in self.annotators if a.paused),
            "escalated_now": statuses.get("escalated", 0),
            "escalations": sum(t.escalations for t in self.tasks),
            "statuses": statuses,
            "cost_per_accepted": self.cost.get("per_accepted"),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "generated_at": self.generated_at, "tiers": list(self.tiers),
                "cost": self.cost, "annotators": [a.to_dict() for a in self.annotators],
                "tasks": [t.to_dict() for t in self.tasks]}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _s(value: bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _num(value: bytes | None) -> float | None:
    return float(value) if value not in (None, b"") else None


def list_projects(connection: redis.Redis, prefix: str) -> list[int]:
    """Source projects crowdgate has seen (escalation projects it made are shown with their source)."""
    keys = Keys(prefix)
    pipe = connection.pipeline(transaction=False)
    pipe.smembers(keys.projects())
    pipe.hkeys(keys.tier_project_links())
    seen, escalation = pipe.execute()
    return sorted({int(p) for p in seen} - {int(p) for p in escalation})


def _fraud(connection: redis.Redis, prefix: str, project: int) -> tuple[dict[int, str], dict[int, str]]:
    """(paused, under review): annotator -> why, from ``routing.pausing``."""
    paused, review = {}, {}
    for annotator, status in pausing.statuses(connection, project, prefix).items():
        if status.status == "paused":
            paused[annotator] = status.reason
        elif status.status == "review":
            review[annotator] = status.reason
    return paused, review


_COUNTS_SCRIPT, _TASKS_SCRIPT, _WORK_SCRIPT = LuaScript(_COUNTS), LuaScript(_TASKS), LuaScript(_WORK)


def _extra_labels(connection: redis.Redis, prefix: str, project: int) -> tuple[int, int]:
    """(escalation labels written back from the project's escalation projects, review verdicts given)."""
    keys = Keys(prefix)
    pipe = connection.pipeline(transaction=False)
    pipe.hvals(keys.tier_projects(project))
    pipe.hget(keys.review(project), "project")
    tier_projects, review_project = pipe.execute()
    pipe = connection.pipeline(transaction=False)
    for tier_project in tier_projects:
        pipe.hlen(keys.written_back(int(tier_project)))
    if review_project:
        pipe.hlen(keys.review_verdicts(int(review_project)))
    replies = pipe.execute()
    escalation = sum(replies[:len(tier_projects)])
    return int(escalation), int(replies[-1]) if review_project else 0


def read_cost(connection: redis.Redis, prefix: str, policy: Policy, project: int, annotators: list[AnnotatorRow],
              tasks: list[TaskRow]) -> CostModel:
    """The project's cost model fitted on all its work (``crowdgate.report.cost`` defines every figure)."""
    escalation, review = _extra_labels(connection, prefix, project)
    counts: QaCounts = qa_counts(((t.labels, t.status, t.consensus) for t in tasks),
                                 labels=sum(a.submitted for a in annotators),
                                 gold_labels=sum(a.gold_n for a in annotators),
                                 escalation_labels=escalation, review_labels=review)
    work = [AnnotatorWork(a.annotator, a.tier, a.submitted, a.total_lead_time_s, a.email) for a in annotators]
    return CostModel(policy).fit(work, counts)


def read_work(connection: redis.Redis, prefix: str, project: int, since: float | None = None,
              until: float | None = None) -> list[AnnotatorWork]:
    """Each annotator's labels and lead time submitted between ``since`` and ``until`` (Unix seconds of Label
    Studio's ``created_at``, both included; None: open), with their current tier and email: the payroll's input."""
    keys, state = Keys(prefix), RoutingState(connection, prefix)
    default_tier = state.policy(project).tiers[0].name
    annotators = sorted(int(a) for a in connection.smembers(keys.annotators(project)))
    tiers, emails = state.tiers(project), state.emails(annotators)
    low = "-inf" if since is None else repr(float(since))
    high = "+inf" if until is None else repr(float(until))
    head, tail = keys.submission_parts(project)
    work = []
    for chunk in _chunks(annotators, ANNOTATORS_PER_SCRIPT):
        replies = _WORK_SCRIPT(connection, [keys.annotator_submissions(project, a) for a in chunk],
                               [head, tail, low, high])
        for a, (labels, lead_sum) in zip(chunk, replies, strict=True):
            work.append(AnnotatorWork(a, tiers.get(a, default_tier), int(labels), float(_s(lead_sum) or 0),
                                      emails.get(a)))
    return work


def read_project(connection: redis.Redis, prefix: str, project: int,
                 memo: dict[Any, tuple[Any, Any]] | None = None) -> ProjectReport:
    """Every figure of one project, read now (see the module docstring). ``memo`` (kept between calls by
    :class:`ReportCache`) reuses an annotator's computed reliability while their stored record is unchanged, and
    their submission counts while their log keeps its size and newest write (a new version is always newest)."""
    started = time.perf_counter()
    keys, state = Keys(prefix), RoutingState(connection, prefix)
    policy = state.policy(project)
    default_tier = policy.tiers[0].name

    pipe = connection.pipeline(transaction=False)
    pipe.smembers(keys.annotators(project))
    pipe.smembers(keys.tasks(project))
    pipe.hgetall(keys.tiers(project))
    pipe.hgetall(keys.flagged(project))
    pipe.hgetall(keys.annotator_flags(project))
    pipe.hgetall(keys.difficulty(project))
    pipe.hget(keys.project_info(project), "title")
    raw_annotators, raw_tasks, raw_tiers, raw_hand, raw_signals, raw_difficulty, raw_title = pipe.execute()
    annotators = sorted(int(a) for a in raw_annotators)
    tasks = sorted(int(t) for t in raw_tasks)
    tiers = RoutingState.tiers_from(raw_tiers)
    hand = RoutingState.flagged_from(raw_hand)
    signals = Ledger.flags_from(raw_signals)
    paused, review = _fraud(connection, prefix, project)
    emails = state.emails(annotators)

    # per annotator: counts summed inside Redis, then records and lead times in pipelines
    counts: dict[int, list[Any]] = {}
    changed = annotators
    if memo is not None:  # an annotator's log with the same size and newest write has the same counts
        marks = {}
        for chunk in _chunks(annotators, BATCH // 2):
            pipe = connection.pipeline(transaction=False)
            for a in chunk:
                pipe.zcard(keys.annotator_submissions(project, a))
                pipe.zrange(keys.annotator_submissions(project, a), -1, -1, withscores=True)
            replies = pipe.execute()
            marks.update((a, (replies[2 * i], tuple(replies[2 * i + 1]))) for i, a in enumerate(chunk))
        changed = []
        for a in annotators:
            known = memo.get(("counts", a))
            if known is not None and known[0] == marks[a]:
                counts[a] = known[1]
            else:
                changed.append(a)
    head, tail = keys.submission_parts(project)
    for chunk in _chunks(changed, ANNOTATORS_PER_SCRIPT):
        replies = _COUNTS_SCRIPT(connection, [keys.annotator_submissions(project, a) for a in chunk], [head, tail])
        counts.update(zip(chunk, replies, strict=True))
        if memo is not None:
            memo.update((("counts", a), (marks[a], reply)) for a, reply in zip(chunk, replies, strict=True))
    records, lead_times = {}, {}
    for chunk in _chunks(annotators, BATCH // 3):
        pipe = connection.pipeline(transaction=False)
        Ledger(connection, prefix).queue_reliabilities(pipe, project, chunk)
        for a in chunk:
            pipe.lrange(keys.annotator_lead_times(project, a), 0, -1)
        replies = pipe.execute()
        for i, a in enumerate(chunk):
            raw = replies[2 * i], replies[2 * i + 1]
            key = tuple(sorted(raw[0].items())), tuple(sorted(raw[1].items()))
            known = memo.get(a) if memo is not None else None
            if known is None or known[0] != key:
                known = key, Ledger.reliabilities_from([a], list(raw))[a]
                if memo is not None:
                    memo[a] = known
            records[a] = known[1]
        lead_times.update(zip(chunk, replies[2 * len(chunk):], strict=True))
    # the accuracy of the project's refit where it has one, as routing and scoring use it
    records = Ledger(connection, prefix).with_fit(project, records)

    rows = []
    for a in annotators:
        n, skipped, lead_sum, lead_n, last = counts[a]
        rel = records[a]
        times = [float(v) for v in lead_times[a]]
        flags = ([f"review: {review[a]}"] if a in review else []) \
            + ([f"by hand: {hand[a]}"] if a in hand and a not in paused else []) \
            + [f"{f.name}: {f.reason}" for f in signals.get(a, [])]
        rows.append(AnnotatorRow(
            annotator=a, submitted=int(n) - int(skipped), skipped=int(skipped),
            peer_agreement=rel.peer_agreement, peer_n=rel.peer_n,
            gold_score=rel.gold_accuracy, gold_low=rel.gold_low, gold_high=rel.gold_high, gold_n=rel.gold_n,
            reliability=rel.mean, reliability_low=rel.low, reliability_high=rel.high,
            tier=tiers.get(a, default_tier), median_lead_time_s=statistics.median(times) if times else None,
            total_lead_time_s=float(_s(lead_sum) or 0) if int(lead_n) else 0.0, flags=tuple(flags),
            paused=paused.get(a), last_active=_num(last), email=emails.get(a)))

    # per task: score and route fields only
    difficulty = {int(t): json.loads(v) for t, v in raw_difficulty.items()}
    task_rows = []
    for chunk in _chunks(tasks, TASKS_PER_SCRIPT):
        names = [keys.task_score(project, t) for t in chunk] + [keys.task_route(project, t) for t in chunk]
        replies = _TASKS_SCRIPT(connection, names, [])
        for t, (n, agreement, consensus, reached, status, escalations, required) in zip(chunk, replies, strict=True):
            shown = task_status(_s(status), reached == b"1")  # the Data Manager's column says the same
            d = difficulty.get(t)
            task_rows.append(TaskRow(
                task=t, labels=int(n or 0), agreement=_num(agreement), consensus=_s(consensus) or None,
                status=shown, escalations=int(escalations or 0), required_tier=_s(required) or None,
                difficulty=float(d) if isinstance(d, int | float) else None))
    model = read_cost(connection, prefix, policy, project, rows, task_rows)
    rows = [replace(row, cost=priced.total) for row, priced in zip(rows, model.annotators_, strict=True)]
    return ProjectReport(project=project, title=_s(raw_title) or f"project {project}", generated_at=time.time(),
                         read_seconds=time.perf_counter() - started, tiers=tuple(policy.tier_names),
                         annotators=rows, tasks=task_rows, cost=model.summary())


class ReportCache:
    """Reports reused for ``ttl_s`` seconds (the dashboard is reloaded often; figures move slowly).

    Past that, the last report is still served at once while one background thread reads a fresh one (stale
    while revalidating: a page never waits for a large project's read, except the first one); an admin action
    drops its project's report, so the next page shows its effect. Annotators' reliabilities are recomputed only
    where their stored record changed, their submission counts only where their log changed.
    """

    def __init__(self, ttl_s: float = 5.0) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[tuple[str, int], ProjectReport] = {}
        self._memos: dict[tuple[str, int], dict[Any, tuple[Any, Any]]] = {}
        self._refreshing: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._reading: dict[tuple[str, int], threading.Lock] = {}

    def _read(self, connection: redis.Redis, prefix: str, project: int) -> ProjectReport:
        key = (prefix, project)
        with self._lock:
            reading = self._reading.setdefault(key, threading.Lock())
            memo = self._memos.setdefault(key, {})
        with reading:  # one read per project at a time
            report = read_project(connection, prefix, project, memo)
        with self._lock:
            self._entries[key] = report
        return report

    def _refresh(self, connection: redis.Redis, prefix: str, project: int) -> None:
        try:
            self._read(connection, prefix, project)
        except redis.RedisError:
            pass  # the stale report stays; the next page tries again
        finally:
            with self._lock:
                self._refreshing.discard((prefix, project))

    def get(self, connection: redis.Redis, prefix: str, project: int) -> ProjectReport:
        key = (prefix, project)
        with self._lock:
            found = self._entries.get(key)
            if found is not None and time.time() - found.generated_at >= self.ttl_s and self.ttl_s > 0 \
                    and key not in self._refreshing:
                self._refreshing.add(key)
                threading.Thread(target=self._refresh, args=(connection, prefix, project), daemon=True,
                                 name=f"crowdgate-report-{project}").start()
        if found is not None and self.ttl_s > 0:
            return found
        return self._read(connection, prefix, project)

    def drop(self, prefix: str, project: int) -> None:
        with self._lock:
            self._entries.pop((prefix, project), None)
