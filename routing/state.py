"""Routing state in Redis: policies, tiers, exam attempts, task routes, assignments, escalation projects.

The keys (policies, tiers, annotator records and exam state, flags, task routes, tiers at submission, escalation
projects and their links, loads, availability, deadlines, the user cache, the probed edition, routing's locks) are
listed in :mod:`core.keys`, which builds every one of them.

Routing changes are compare-and-set on the route's ``version``, so a decision taken twice, or by two workers,
acts once: see :meth:`RoutingState.claim`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import WatchError

from core.keys import Keys
from core.settings import current
from routing.policy import Policy, parse_policy

__all__ = [
    "DEFAULT_POLICY_FILE",
    "AnnotatorRecord",
    "RoutingState",
    "TaskRoute",
]

DEFAULT_POLICY_FILE = Path(__file__).resolve().parents[1] / "label_configs" / "default.policy.yaml"
_POLICY_CACHE: dict[str, Policy] = {}


def _s(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class TaskRoute:
    """Where a task stands in routing. ``version`` counts routing changes (escalations, reassignments,
    finalisation); ``claim`` names the action that made the last one. ``status``: ``open`` (served by the
    source project), ``escalated`` (waiting for a higher tier), ``final``."""

    project: int
    task: int
    version: int = 0
    claim: str = ""
    status: str = "open"
    required_tier: str | None = None
    escalations: int = 0
    escalated_at: float | None = None
    deadline: float | None = None
    assigned: int | None = None
    tier_project: int | None = None
    tier_task: int | None = None
    final_label: str | None = None
    alerted_version: int | None = None
    overlap: int | None = None  # the per-task overlap crowdgate last asked Label Studio for

    @classmethod
    def from_redis(cls, project: int, task: int, raw: Mapping[bytes, bytes]) -> TaskRoute:
        get = {k.decode(): v.decode() for k, v in raw.items()}
        num = lambda k, f=float: f(get[k]) if get.get(k) not in (None, "") else None  # noqa: E731
        return cls(
            project=project,
            task=task,
            version=int(get.get("version", 0)),
            claim=get.get("claim", ""),
            status=get.get("status", "open"),
            required_tier=get.get("required_tier") or None,
            escalations=int(get.get("escalations", 0)),
            escalated_at=num("escalated_at"),
            deadline=num("deadline"),
            assigned=num("assigned", int),
            tier_project=num("tier_project", int),
            tier_task=num("tier_task", int),
            final_label=get.get("final_label") or None,
            alerted_version=num("alerted_version", int),
            overlap=num("overlap", int),
        )


_ROUTE_FIELDS = {f.name for f in fields(TaskRoute)} - {"project", "task", "version", "claim"}


@dataclass(frozen=True)
class AnnotatorRecord:
    annotator: int
    tier: str
    version: int = 0
    exam_attempts: int = 0
    flagged: str | None = None
    paused: bool = False  # paused for fraud (routing.pausing): no gold or exam offers


class RoutingState:
    def __init__(self, connection: redis.Redis, prefix: str = "cg") -> None:
        self.redis = connection
        self.prefix = prefix
        self.keys = Keys(prefix)

    # -- policies ---------------------------------------------------------------------------------------

    def set_policy(self, project: int, text: str, origin: str = "") -> Policy:
        """Validate ``text`` (raises PolicyError) and bind it to ``project``."""
        policy = parse_policy(text, origin=origin or None)
        self.redis.hset(self.keys.policy(project), mapping={"yaml": text, "origin": origin,
                                                               "set_at": repr(time.time())})
        return policy

    def stop_threshold(self, project: int, key: str) -> tuple[bool, float | None]:
        """The cached crowd-matched stop threshold for ``key`` (the rule's settings): (found, threshold)."""
        raw = self.redis.get(self.keys.stop_threshold(project, key))
        if raw is None:
            return False, None
        return True, json.loads(raw)["threshold"]

    def set_stop_threshold(self, project: int, key: str, threshold: float | None, labels: float,
                           ttl: int) -> None:
        """Cache a crowd-matched threshold (None: not enough labels yet) for ``ttl`` seconds."""
        self.redis.set(self.keys.stop_threshold(project, key),
                       json.dumps({"threshold": threshold, "labels": labels, "at": time.time()}), ex=ttl)

    def policy_bound(self, project: int) -> bool:
        return bool(self.redis.exists(self.keys.policy(project)))

    def unset_policy(self, project: int) -> None:
        self.redis.delete(self.keys.policy(project))

    def policy_source(self, project: int) -> tuple[str, str]:
        """(YAML text, origin) of the project's policy; the default file when none is bound."""
        return self.policy_source_from(project, self.redis.hmget(self.keys.policy(project), "yaml", "origin"))

    def queue_policy_source(self, pipe: redis.client.Pipeline, project: int) -> None:
        """Queue :meth:`policy_source`'s read; decode the reply with :meth:`policy_source_from`."""
        pipe.hmget(self.keys.policy(project), "yaml", "origin")

    @staticmethod
    def policy_source_from(project: int, raw: list[bytes | None]) -> tuple[str, str]:
        if raw[0] is not None:
            return raw[0].decode(), (_s(raw[1]) or f"redis:{project}")
        path = Path(current().default_policy or DEFAULT_POLICY_FILE)
        return path.read_text(encoding="utf-8"), str(path)

    def policy(self, project: int) -> Policy:
        """The project's policy (an escalation project follows its source project's)."""
        link = self.tier_project_link(project)
        return self.policy_from(*self.policy_source(link[0] if link else project))

    @staticmethod
    def policy_from(text: str, origin: str) -> Policy:
        """A policy source parsed (each distinct text once per process)."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        cached = _POLICY_CACHE.get(digest)
        if cached is None:
            cached = _POLICY_CACHE[digest] = parse_policy(text, origin=origin)
        return cached

    # -- annotators -------------------------------------------------------------------------------------

    def tiers(self, project: int) -> dict[int, str]:
        return {int(k): v.decode() for k, v in self.redis.hgetall(self.keys.tiers(project)).items()}

    def cohorts(self, project: int) -> dict[int, str]:
        """Annotator -> cohort, as ``crowdgate seed`` set them from the people CSV."""
        return {int(k): v.decode() for k, v in self.redis.hgetall(self.keys.cohorts(project)).items()}

    def set_cohorts(self, project: int, cohorts: Mapping[int, str]) -> None:
        if cohorts:
            self.redis.hset(self.keys.cohorts(project), mapping={int(k): v for k, v in cohorts.items()})

    def annotator(self, project: int, annotator: int, policy: Policy) -> AnnotatorRecord:
        pipe = self.redis.pipeline(transaction=False)
        self.queue_annotator(pipe, project, annotator)
        return self.annotator_from(annotator, pipe.execute(), policy)

    def queue_annotator(self, pipe: redis.client.Pipeline, project: int, annotator: int) -> None:
        """Queue the reads of an annotator's record (four replies); decode them with :meth:`annotator_from`."""
        pipe.hget(self.keys.tiers(project), annotator)
        pipe.hmget(self.keys.annotator_record(project, annotator), "version", "exam_attempts")
        pipe.hget(self.keys.flagged(project), annotator)
        pipe.hget(self.keys.fraud_status(project), annotator)

    @staticmethod
    def annotator_from(annotator: int, replies: list[Any], policy: Policy) -> AnnotatorRecord:
        tier, (version, attempts), flagged, fraud = replies
        return AnnotatorRecord(
            annotator=annotator,
            tier=_s(tier) or policy.tiers[0].name,
            version=int(version or 0),
            exam_attempts=int(attempts or 0),
            flagged=_s(flagged),
            paused=bool(fraud) and json.loads(fraud).get("status") == "paused",
        )

    def set_tier(self, project: int, annotator: int, tier: str) -> int:
        """Set a tier by hand (no version check); returns the new version."""
        pipe = self.redis.pipeline()
        pipe.hset(self.keys.tiers(project), annotator, tier)
        pipe.hincrby(self.keys.annotator_record(project, annotator), "version", 1)
        return int(pipe.execute()[1])

    def change_tier(
        self, project: int, annotator: int, expected_version: int, tier: str, *, failed_exam: bool = False,
        exam_tasks: Iterable[int] = (), reset_exam: bool = False,
    ) -> bool:
        """Compare-and-set an annotator's tier at ``expected_version``; False if something changed it first.

        ``failed_exam`` counts a failed attempt and spends ``exam_tasks``; ``reset_exam`` (a demotion back to
        the exam tier) starts a fresh exam: the gold answered so far no longer counts.
        """
        ann_key = self.keys.annotator_record(project, annotator)
        used_key = self.keys.exam_used(project, annotator)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(ann_key)
                    if int(pipe.hget(ann_key, "version") or 0) != expected_version:
                        pipe.reset()
                        return False
                    pipe.multi()
                    pipe.hset(self.keys.tiers(project), annotator, tier)
                    pipe.hincrby(ann_key, "version", 1)
                    if failed_exam:
                        pipe.hincrby(ann_key, "exam_attempts", 1)
                    spent = [int(t) for t in exam_tasks]
                    if spent and (failed_exam or reset_exam):
                        pipe.sadd(used_key, *spent)
                    pipe.execute()
                    return True
                except WatchError:
                    continue

    def exam_used(self, project: int, annotator: int) -> set[int]:
        return {int(t) for t in self.redis.smembers(self.keys.exam_used(project, annotator))}

    def offered(self, project: int, annotator: int) -> set[int]:
        """Gold tasks currently offered to an annotator in their exam view (exam or gold share)."""
        return {int(t) for t in self.redis.smembers(self.keys.exam_offered(project, annotator))}

    def queue_offered(self, pipe: redis.client.Pipeline, project: int, annotator: int) -> None:
        """Queue the read of :meth:`offered` (a set of bytes; ``int`` each)."""
        pipe.smembers(self.keys.exam_offered(project, annotator))

    def queue_exam_used(self, pipe: redis.client.Pipeline, project: int, annotator: int) -> None:
        """Queue the read of :meth:`exam_used` (a set of bytes; ``int`` each)."""
        pipe.smembers(self.keys.exam_used(project, annotator))

    def set_offered(self, project: int, annotator: int, tasks: Iterable[int]) -> None:
        key = self.keys.exam_offered(project, annotator)
        pipe = self.redis.pipeline()
        pipe.delete(key)
        ids = [int(t) for t in tasks]
        if ids:
            pipe.sadd(key, *ids)
        pipe.execute()

    def exam_view(self, project: int, email: str) -> int | None:
        value = self.redis.hget(self.keys.exam_views(project), email)
        return int(value) if value else None

    def set_exam_view(self, project: int, email: str, view: int) -> None:
        self.redis.hset(self.keys.exam_views(project), email, view)

    def flag_annotator(self, project: int, annotator: int, reason: str) -> None:
        self.redis.hset(self.keys.flagged(project), annotator, reason)

    def unflag_annotator(self, project: int, annotator: int) -> None:
        self.redis.hdel(self.keys.flagged(project), annotator)

    def flagged(self, project: int) -> dict[int, str]:
        return {int(k): v.decode() for k, v in self.redis.hgetall(self.keys.flagged(project)).items()}

    def touch(self, annotators: Iterable[int], now: float | None = None) -> None:
        """Note that these annotators were active just now (availability)."""
        people = {str(int(a)): time.time() if now is None else now for a in annotators}
        if people:
            self.redis.zadd(self.keys.last_seen(), people)

    def last_seen(self, annotators: Iterable[int]) -> dict[int, float | None]:
        people = [int(a) for a in annotators]
        if not people:
            return {}
        scores = self.redis.zmscore(self.keys.last_seen(), [str(a) for a in people])
        return dict(zip(people, scores, strict=True))

    # -- load -------------------------------------------------------------------------------------------

    def assign(self, annotator: int, project: int, task: int) -> None:
        self.redis.sadd(self.keys.open_tasks(annotator), f"{project}:{task}")

    def release(self, annotator: int, project: int, task: int) -> None:
        self.redis.srem(self.keys.open_tasks(annotator), f"{project}:{task}")

    def loads(self, annotators: Iterable[int]) -> dict[int, int]:
        people = [int(a) for a in annotators]
        pipe = self.redis.pipeline(transaction=False)
        for a in people:
            pipe.scard(self.keys.open_tasks(a))
        return dict(zip(people, (int(n) for n in pipe.execute()), strict=True))

    # -- task routes ------------------------------------------------------------------------------------

    def queue_route(self, pipe: redis.client.Pipeline, project: int, task: int) -> None:
        """Queue the read of a task's route; decode the reply with :meth:`TaskRoute.from_redis`."""
        pipe.hgetall(self.keys.task_route(project, task))

    def queue_tiers(self, pipe: redis.client.Pipeline, project: int) -> None:
        """Queue the read of the project's tiers; decode the reply with :meth:`tiers_from`."""
        pipe.hgetall(self.keys.tiers(project))

    @staticmethod
    def tiers_from(raw: dict[bytes, bytes]) -> dict[int, str]:
        return {int(k): v.decode() for k, v in raw.items()}

    def queue_flagged(self, pipe: redis.client.Pipeline, project: int) -> None:
        """Queue the read of the annotators flagged by hand; decode the reply with :meth:`flagged_from`."""
        pipe.hgetall(self.keys.flagged(project))

    @staticmethod
    def flagged_from(raw: dict[bytes, bytes]) -> dict[int, str]:
        return {int(k): v.decode() for k, v in raw.items()}

    def route(self, project: int, task: int) -> TaskRoute:
        return TaskRoute.from_redis(project, task, self.redis.hgetall(self.keys.task_route(project, task)))

    def routes(self, project: int, tasks: Iterable[int]) -> dict[int, TaskRoute]:
        ids = [int(t) for t in tasks]
        pipe = self.redis.pipeline(transaction=False)
        for t in ids:
            pipe.hgetall(self.keys.task_route(project, t))
        return {t: TaskRoute.from_redis(project, t, raw) for t, raw in zip(ids, pipe.execute(), strict=True)}

    def claim(self, project: int, task: int, expected_version: int, key: str) -> TaskRoute | None:
        """Take the next routing change of a task for the action named ``key``.

        Succeeds when the route is still at ``expected_version`` (it moves to ``expected_version + 1`` with
        ``claim = key``) or when ``key`` already holds it (a retry of the same action, which then redoes its
        idempotent steps). Returns the route after the claim, or None when another change came first.
        """
        route_key = self.keys.task_route(project, task)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(route_key)
                    version, claim = pipe.hmget(route_key, "version", "claim")
                    version = int(version or 0)
                    if _s(claim) == key and version == expected_version + 1:
                        pipe.reset()
                        return self.route(project, task)
                    if version != expected_version:
                        pipe.reset()
                        return None
                    pipe.multi()
                    pipe.hset(route_key, mapping={"version": version + 1, "claim": key})
                    pipe.execute()
                    return self.route(project, task)
                except WatchError:
                    continue

    def update_route(self, project: int, task: int, **values: Any) -> TaskRoute:
        """Write route fields (after a successful :meth:`claim`); None clears a field."""
        unknown = set(values) - _ROUTE_FIELDS
        if unknown:
            raise ValueError(f"unknown route fields {sorted(unknown)}")
        route_key = self.keys.task_route(project, task)
        pipe = self.redis.pipeline()
        setting = {k: str(v) for k, v in values.items() if v is not None}
        clearing = [k for k, v in values.items() if v is None]
        if setting:
            pipe.hset(route_key, mapping=setting)
        if clearing:
            pipe.hdel(route_key, *clearing)
        member = f"{project}:{task}"
        if "deadline" in values:
            if values["deadline"] is None:
                pipe.zrem(self.keys.deadlines(), member)
            else:
                pipe.zadd(self.keys.deadlines(), {member: float(values["deadline"])})
        if values.get("status") == "final":
            pipe.zrem(self.keys.deadlines(), member)
        pipe.execute()
        return self.route(project, task)

    def due(self, now: float | None = None) -> list[tuple[int, int]]:
        """Escalated tasks whose deadline has passed: ``(project, task)``."""
        members = self.redis.zrangebyscore(self.keys.deadlines(), "-inf", time.time() if now is None else now)
        return [tuple(int(x) for x in m.decode().split(":")) for m in members]  # type: ignore[misc]

    def not_due(self, project: int, task: int) -> None:
        """Stop watching a task's deadline (it was alerted; the route keeps the deadline)."""
        self.redis.zrem(self.keys.deadlines(), f"{project}:{task}")

    # -- flags on submissions ---------------------------------------------------------------------------

    def flag_submission(self, project: int, unique_id: str, record: dict[str, Any]) -> bool:
        """Remember a submission left out of counting; False if it was already flagged."""
        return bool(self.redis.hsetnx(self.keys.off_tier(project), unique_id, json.dumps(record)))

    def tiers_at_submission(self, project: int, submissions: Iterable[tuple[str, int]], current: Mapping[int, str],
                            default: str) -> dict[str, str]:
        """unique_id -> the tier its author had when routing first saw the submission.

        ``submissions`` are ``(unique_id, annotator)``; one seen for the first time is recorded with its
        author's ``current`` tier (``default`` when they have none), so a later tier change never moves it.
        """
        subs = [(str(uid), int(a)) for uid, a in submissions]
        if not subs:
            return {}
        key = self.keys.submission_tiers(project)
        pipe = self.redis.pipeline(transaction=False)
        for uid, a in subs:
            pipe.hsetnx(key, uid, current.get(a, default))
        pipe.hmget(key, [uid for uid, _ in subs])
        recorded = pipe.execute()[-1]
        return {uid: _s(tier) or current.get(a, default) for (uid, a), tier in zip(subs, recorded, strict=True)}

    def flagged_submissions(self, project: int) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(self.keys.off_tier(project))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    # -- escalation projects ----------------------------------------------------------------------------

    def tier_project(self, project: int, tier: str) -> int | None:
        value = self.redis.hget(self.keys.tier_projects(project), tier)
        return int(value) if value else None

    def link_tier_project(self, project: int, tier: str, tier_project: int) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(self.keys.tier_projects(project), tier, tier_project)
        pipe.hset(self.keys.tier_project_links(), tier_project, json.dumps({"source": project, "tier": tier}))
        pipe.execute()

    def unlink_tier_project(self, project: int, tier: str, tier_project: int) -> None:
        pipe = self.redis.pipeline()
        pipe.hdel(self.keys.tier_projects(project), tier)
        pipe.hdel(self.keys.tier_project_links(), tier_project)
        pipe.execute()

    def tier_project_link(self, tier_project: int) -> tuple[int, str] | None:
        """(source project, tier) when ``tier_project`` is an escalation project crowdgate made."""
        return self.tier_project_link_from(self.redis.hget(self.keys.tier_project_links(), tier_project))

    def queue_tier_project_link(self, pipe: redis.client.Pipeline, tier_project: int) -> None:
        """Queue :meth:`tier_project_link`'s read; decode the reply with :meth:`tier_project_link_from`."""
        pipe.hget(self.keys.tier_project_links(), tier_project)

    @staticmethod
    def tier_project_link_from(raw: bytes | None) -> tuple[int, str] | None:
        if not raw:
            return None
        link = json.loads(raw)
        return int(link["source"]), str(link["tier"])

    def link_tier_task(self, tier_project: int, tier_task: int, source_task: int) -> None:
        self.redis.hset(self.keys.tier_sources(tier_project), tier_task, source_task)

    def source_task(self, tier_project: int, tier_task: int) -> int | None:
        value = self.redis.hget(self.keys.tier_sources(tier_project), tier_task)
        return int(value) if value else None

    def view(self, tier_project: int, email: str) -> int | None:
        value = self.redis.hget(self.keys.queue_views(tier_project), email)
        return int(value) if value else None

    def set_view(self, tier_project: int, email: str, view: int) -> None:
        self.redis.hset(self.keys.queue_views(tier_project), email, view)

    def written_back(self, tier_project: int, unique_id: str) -> int | None:
        value = self.redis.hget(self.keys.written_back(tier_project), unique_id)
        return int(value) if value else None

    def set_written_back(self, tier_project: int, unique_id: str, annotation: int) -> None:
        self.redis.hset(self.keys.written_back(tier_project), unique_id, annotation)

    def prepared(self, project: int) -> bool:
        return bool(self.redis.exists(self.keys.prepared(project)))

    def queue_prepared(self, pipe: redis.client.Pipeline, project: int) -> None:
        """Queue :meth:`prepared`'s read (a count; ``bool`` it)."""
        pipe.exists(self.keys.prepared(project))

    def queue_policy_bound(self, pipe: redis.client.Pipeline, project: int) -> None:
        """Queue :meth:`policy_bound`'s read (a count; ``bool`` it)."""
        pipe.exists(self.keys.policy(project))

    def queue_touch(self, pipe: redis.client.Pipeline, annotators: Iterable[int], now: float | None = None) -> None:
        """:meth:`touch` queued on ``pipe``."""
        people = {str(int(a)): time.time() if now is None else now for a in annotators}
        if people:
            pipe.zadd(self.keys.last_seen(), people)

    def set_prepared(self, project: int) -> None:
        self.redis.set(self.keys.prepared(project), repr(time.time()))

    # -- edition ----------------------------------------------------------------------------------------

    def edition(self, project: int) -> str | None:
        return _s(self.redis.get(self.keys.edition(project)))

    def set_edition(self, project: int, edition: str, ttl_s: int = 3600) -> None:
        """Remember the probed edition for an hour (a server upgraded to Enterprise is picked up)."""
        self.redis.set(self.keys.edition(project), edition, ex=ttl_s)

    # -- users ------------------------------------------------------------------------------------------

    def emails(self, users: Iterable[int]) -> dict[int, str | None]:
        people = [int(u) for u in users]
        if not people:
            return {}
        values = self.redis.hmget(self.keys.user_emails(), people)
        return {u: _s(v) for u, v in zip(people, values, strict=True)}

    def cache_users(self, users: Mapping[int, str]) -> None:
        if users:
            self.redis.hset(self.keys.user_emails(), mapping={str(k): v for k, v in users.items()})
