"""crowdgate's workforce state in Redis: who submitted what on which task.

Keys (``{p}`` is the key prefix, ``cg`` by default; ``{pid}`` a Label Studio project id):

- ``{p}:projects`` (set): project ids seen.
- ``{p}:p:{pid}:project`` (hash): label_config, control_weights (JSON), title, ...
- ``{p}:p:{pid}:sub:{unique_id}`` (hash): ``json`` (the :class:`Submission`), ``updated_at``, ``task``,
  ``annotator``, ``deleted``.
- ``{p}:p:{pid}:task:{tid}:subs`` (zset): the per-task index, unique ids of live submissions by time.
- ``{p}:p:{pid}:annotator:{uid}:subs`` (zset): the per-annotator submission log, by time.
- ``{p}:p:{pid}:annid:{annotation_id}`` (string): the unique id now behind a Label Studio annotation id.
- ``{p}:p:{pid}:annotators``, ``{p}:p:{pid}:tasks`` (sets): annotators and tasks seen.
- ``{p}:p:{pid}:task:{tid}`` (hash): the task's ``data`` and ``meta`` (JSON).

Writes are idempotent: a submission version older than the stored one, or one already deleted, changes
nothing, so a job that runs twice or out of order leaves the same state.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from qa_hooks.events import Event, Submission, TaskInfo

# Compare-and-set on updated_at, then index; one round trip and atomic against concurrent workers.
_UPSERT = """
local cur = redis.call('HMGET', KEYS[1], 'updated_at', 'deleted')
if cur[2] == '1' then return 0 end
if cur[1] and cur[1] >= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'updated_at', ARGV[2], 'task', ARGV[6], 'annotator', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('SET', KEYS[4], ARGV[3])
redis.call('SADD', KEYS[5], ARGV[5])
redis.call('SADD', KEYS[6], ARGV[6])
redis.call('SADD', KEYS[7], ARGV[7])
if cur[1] then return 2 end
return 1
"""

_DELETE = """
local uid = redis.call('GET', KEYS[1])
if not uid then return false end
local key = ARGV[1] .. uid
local owner = redis.call('HMGET', key, 'task', 'annotator')
if not owner[1] then return false end
redis.call('HSET', key, 'deleted', '1')
redis.call('ZREM', ARGV[2] .. owner[1] .. ':subs', uid)
redis.call('ZREM', ARGV[3] .. owner[2] .. ':subs', uid)
redis.call('DEL', KEYS[1])
return owner[1]
"""

CREATED, UPDATED, STALE = 1, 2, 0


@dataclass(frozen=True)
class Applied:
    counts: dict[str, int]
    tasks: set[int]  # tasks whose live submissions changed


def _epoch(timestamp: str) -> float:
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class SubmissionStore:
    """Adapter between checked events and Redis."""

    def __init__(self, connection: redis.Redis, prefix: str = "cg") -> None:
        self.redis = connection
        self.prefix = prefix
        self._upsert = connection.register_script(_UPSERT)
        self._delete = connection.register_script(_DELETE)

    def _p(self, project: int) -> str:
        return f"{self.prefix}:p:{project}"

    # -- writes -----------------------------------------------------------------------------------------

    def apply(self, event: Event) -> Applied:
        """Apply one event; returns counts of what changed and the tasks whose submissions changed."""
        counts: Counter[str] = Counter()
        touched: set[int] = set()
        if event.project is not None:
            self.redis.sadd(f"{self.prefix}:projects", event.project)
            if event.project_info:
                self.save_project(event.project, event.project_info)
            for task in event.tasks:
                self.save_task(event.project, task)
            for task_id in event.deleted_tasks:
                self.redis.delete(f"{self._p(event.project)}:task:{task_id}")
                counts["tasks_deleted"] += 1
            for annotation_id in event.deleted_annotations:
                task = self.delete(event.project, annotation_id)
                if task is not None:
                    counts["deleted"] += 1
                    touched.add(task)
        for submission in event.submissions:
            outcome = self.record(submission)
            counts[{CREATED: "created", UPDATED: "updated", STALE: "stale"}[outcome]] += 1
            if outcome != STALE:
                touched.add(submission.task)
        return Applied(dict(counts), touched)

    def record(self, sub: Submission) -> int:
        """Store one submission version; returns CREATED, UPDATED or STALE."""
        p = self._p(sub.project)
        keys = [
            f"{p}:sub:{sub.unique_id}",
            f"{p}:task:{sub.task}:subs",
            f"{p}:annotator:{sub.annotator}:subs",
            f"{p}:annid:{sub.annotation_id}",
            f"{p}:annotators",
            f"{p}:tasks",
            f"{self.prefix}:projects",
        ]
        args = [
            json.dumps(sub.to_dict(), separators=(",", ":")),
            sub.updated_at,
            sub.unique_id,
            _epoch(sub.created_at),
            sub.annotator,
            sub.task,
            sub.project,
        ]
        return int(self._upsert(keys=keys, args=args))

    def delete(self, project: int, annotation_id: int) -> int | None:
        """Remove a Label Studio annotation from the indexes; returns its task, or None if unknown."""
        p = self._p(project)
        task = self._delete(keys=[f"{p}:annid:{annotation_id}"], args=[f"{p}:sub:", f"{p}:task:", f"{p}:annotator:"])
        return int(task) if task is not None else None

    def save_project(self, project: int, info: dict[str, Any]) -> None:
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in info.items() if v is not None}
        if fields:
            self.redis.hset(f"{self._p(project)}:project", mapping=fields)

    def save_task(self, project: int, task: TaskInfo) -> None:
        self.redis.hset(
            f"{self._p(project)}:task:{task.id}",
            mapping={"data": json.dumps(task.data), "meta": json.dumps(task.meta)},
        )
        self.redis.sadd(f"{self._p(project)}:tasks", task.id)

    # -- reads ------------------------------------------------------------------------------------------

    def _load(self, project: int, unique_ids: list[str]) -> list[Submission]:
        if not unique_ids:
            return []
        p = self._p(project)
        pipe = self.redis.pipeline(transaction=False)
        for uid in unique_ids:
            pipe.hget(f"{p}:sub:{uid}", "json")
        return [Submission.from_dict(json.loads(raw)) for raw in pipe.execute() if raw]

    def submission(self, project: int, unique_id: str) -> Submission | None:
        found = self._load(project, [unique_id])
        return found[0] if found else None

    def task_submissions(self, project: int, task: int) -> list[Submission]:
        """Live submissions on a task, oldest first (the per-task index)."""
        uids = [u.decode() for u in self.redis.zrange(f"{self._p(project)}:task:{task}:subs", 0, -1)]
        return self._load(project, uids)

    def annotator_log(self, project: int, annotator: int) -> list[Submission]:
        """An annotator's live submissions in the project, oldest first."""
        uids = [u.decode() for u in self.redis.zrange(f"{self._p(project)}:annotator:{annotator}:subs", 0, -1)]
        return self._load(project, uids)

    def annotators(self, project: int) -> list[int]:
        return sorted(int(a) for a in self.redis.smembers(f"{self._p(project)}:annotators"))

    def tasks(self, project: int) -> list[int]:
        return sorted(int(t) for t in self.redis.smembers(f"{self._p(project)}:tasks"))

    def projects(self) -> list[int]:
        return sorted(int(p) for p in self.redis.smembers(f"{self.prefix}:projects"))

    def project_info(self, project: int) -> dict[str, str]:
        raw = self.redis.hgetall(f"{self._p(project)}:project")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def task_info(self, project: int, task: int) -> TaskInfo | None:
        raw = self.redis.hgetall(f"{self._p(project)}:task:{task}")
        if not raw:
            return None
        return TaskInfo(id=task, data=json.loads(raw[b"data"]), meta=json.loads(raw[b"meta"]))

    def summary(self, project: int) -> dict[str, Any]:
        """What crowdgate recorded for a project, per annotator."""
        per_annotator = {}
        for annotator in self.annotators(project):
            log = self.annotator_log(project, annotator)
            skips = sum(s.was_cancelled for s in log)
            times = [s.lead_time for s in log if s.lead_time is not None]
            per_annotator[annotator] = {
                "submissions": len(log) - skips,
                "skips": skips,
                "median_lead_time_s": sorted(times)[len(times) // 2] if times else None,
            }
        tasks = self.tasks(project)
        pipe = self.redis.pipeline(transaction=False)
        for task in tasks:
            pipe.zcard(f"{self._p(project)}:task:{task}:subs")
        counts = pipe.execute()
        return {
            "project": project,
            "annotators": per_annotator,
            "tasks_seen": len(tasks),
            "tasks_with_submissions": sum(1 for c in counts if c),
            "tasks_with_2_or_more": sum(1 for c in counts if c >= 2),
            "submissions": sum(counts),
        }
