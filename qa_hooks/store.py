"""crowdgate's workforce state in Redis: who submitted what on which task.

The keys (submissions, the per-task index, the per-annotator log, projects' label configs, tasks' data and
meta, lead times, unscored marks) are listed in :mod:`core.keys`, which builds every one of them.

Writes are idempotent: a submission version older than the stored one, or one already deleted, changes
nothing, so a job that runs twice or out of order leaves the same state.

A submission is a small hash of short fields (:func:`encode`): what its key, the event and the other fields
already say is not repeated. Records written before hold the whole submission as ``json`` and still load. The
retention sweep (:meth:`SubmissionStore.retain`) trims the result of submissions whose task saw no new version
for a while to the region keys scoring reads, shared per project, so a rescoring gives the same scores and the
hash fits Redis' compact encoding; the whole annotation stays in Label Studio (``crowdgate rebuild-state``).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from core.keys import Keys
from qa_hooks.events import Event, Submission, TaskInfo, epoch_seconds

# Compare-and-set on updated_at, then index; one round trip and atomic against concurrent workers. A newer
# version replaces the whole record (an old-format one, or a trimmed one, leaves nothing behind). ARGV[9]: the
# version's time, for the retention queue; ARGV[10..]: the record's other (field, value) pairs.
_UPSERT = """
local cur = redis.call('HMGET', KEYS[1], 'updated_at', 'deleted')
if cur[2] == '1' then return 0 end
if cur[1] and cur[1] >= ARGV[2] then return 0 end
if cur[1] then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2], 'task', ARGV[6], 'annotator', ARGV[5], unpack(ARGV, 10))
redis.call('ZADD', KEYS[12], 'GT', ARGV[9], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('SET', KEYS[4], ARGV[3])
redis.call('SADD', KEYS[5], ARGV[5])
redis.call('SADD', KEYS[6], ARGV[6])
redis.call('SADD', KEYS[7], ARGV[7])
redis.call('ZADD', KEYS[11], redis.call('INCR', KEYS[10]), ARGV[6])
if cur[1] then return 2 end
if ARGV[8] ~= '' then
  redis.call('LPUSH', KEYS[8], ARGV[8])
  redis.call('LTRIM', KEYS[8], 0, 99)
  redis.call('LPUSH', KEYS[9], ARGV[8])
  redis.call('LTRIM', KEYS[9], 0, 1999)
end
return 1
"""

# ARGV: (head, tail) pairs of the submission, task index and annotator log keys (Keys.*_parts).
_DELETE = """
local uid = redis.call('GET', KEYS[1])
if not uid then return false end
local key = ARGV[1] .. uid .. ARGV[2]
local owner = redis.call('HMGET', key, 'task', 'annotator')
if not owner[1] then return false end
redis.call('HSET', key, 'deleted', '1')
redis.call('ZREM', ARGV[3] .. owner[1] .. ARGV[4], uid)
redis.call('ZREM', ARGV[5] .. owner[2] .. ARGV[6], uid)
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[2]), owner[1])
return owner[1]
"""

# A deleted task takes its submissions with it. ARGV: (head, tail) pairs of the submission, annotator log and
# annotation-id keys, then the task id.
_DELETE_TASK = """
local uids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, uid in ipairs(uids) do
  local key = ARGV[1] .. uid .. ARGV[2]
  local row = redis.call('HMGET', key, 'annotator', 'i', 'json')
  redis.call('HSET', key, 'deleted', '1')
  if row[1] then redis.call('ZREM', ARGV[3] .. row[1] .. ARGV[4], uid) end
  local annotation = row[2]
  if not annotation and row[3] then annotation = string.format('%d', cjson.decode(row[3])['annotation_id']) end
  if annotation then
    local id_key = ARGV[5] .. annotation .. ARGV[6]
    if redis.call('GET', id_key) == uid then redis.call('DEL', id_key) end
  end
end
redis.call('DEL', KEYS[1])
if #uids > 0 then redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[2]), ARGV[7]) end
return #uids
"""

# Clear a task's unscored mark only if no write came after the one its scoring saw (ARGV: task, seq pairs).
_MARK_SCORED = """
local cleared = 0
for i = 1, #ARGV, 2 do
  local seq = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if seq and tonumber(seq) <= tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    cleared = cleared + 1
  end
end
return cleared
"""

# Trim one submission's result to its shared scoring form, unless a newer version came meanwhile (ARGV: the
# version trimmed, the digest, the trimmed result). KEYS: the submission, the project's shared results.
_TRIM = """
if redis.call('HGET', KEYS[1], 'updated_at') ~= ARGV[1] or redis.call('HEXISTS', KEYS[1], 'r') == 0 then
  return 0
end
redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])
-- rewritten, not HDEL'd: Redis never gives a shrunken hash its compact encoding back
local row, kept = redis.call('HGETALL', KEYS[1]), {'rk', ARGV[2]}
for i = 1, #row, 2 do
  if row[i] ~= 'r' then table.insert(kept, row[i]); table.insert(kept, row[i + 1]) end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(kept))
return 1
"""

# Leave the retention queue only if no version was written since the sweep read the task (ARGV: task, time).
_RETAINED = """
local at = redis.call('ZSCORE', KEYS[1], ARGV[1])
if at and tonumber(at) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""

CREATED, UPDATED, STALE = 1, 2, 0

# The region keys scoring reads (qa_hooks.scoring, qa_hooks.similarity); a trimmed result keeps only these.
SCORED_REGION_KEYS = ("from_name", "to_name", "type", "value")


def encode(sub: Submission) -> list[str]:
    """The (field, value) pairs of a submission's record besides ``updated_at``, ``task`` and ``annotator``: its
    key names the project and unique id, and a field at its usual value is left out (``c``: a ``created_at``
    other than ``updated_at``; ``x``: ``c`` cancelled, ``g`` ground truth)."""
    pairs = ["i", str(sub.annotation_id), "r", json.dumps(sub.result, separators=(",", ":"))]
    if sub.created_at != sub.updated_at:
        pairs += ["c", sub.created_at]
    if sub.lead_time is not None:
        pairs += ["l", repr(sub.lead_time)]
    flags = ("c" if sub.was_cancelled else "") + ("g" if sub.ground_truth else "")
    if flags:
        pairs += ["x", flags]
    if sub.parent_prediction is not None:
        pairs += ["pp", str(sub.parent_prediction)]
    return pairs


def decode(project: int, unique_id: str, row: dict[bytes, bytes], results: dict[bytes, bytes]) -> Submission:
    """A submission from its record (either format); ``results`` holds the shared trimmed results it names."""
    if b"json" in row:  # written before the compact format
        return Submission.from_dict(json.loads(row[b"json"]))
    updated = row[b"updated_at"].decode()
    flags = row.get(b"x", b"")
    result = row[b"r"] if b"r" in row else results[row[b"rk"]]
    return Submission(
        project=project, task=int(row[b"task"]), annotation_id=int(row[b"i"]), unique_id=unique_id,
        annotator=int(row[b"annotator"]), result=json.loads(result), updated_at=updated,
        created_at=row[b"c"].decode() if b"c" in row else updated,
        lead_time=float(row[b"l"]) if b"l" in row else None, was_cancelled=b"c" in flags, ground_truth=b"g" in flags,
        parent_prediction=int(row[b"pp"]) if b"pp" in row else None,
    )


def pairs_to_row(flat: list[bytes]) -> dict[bytes, bytes]:
    """A hash from HGETALL's flat reply inside a Lua script."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def trimmed(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A result as scoring reads it: each region's ``SCORED_REGION_KEYS`` (region ids, origin and the rest go)."""
    return [{k: region[k] for k in SCORED_REGION_KEYS if k in region} if isinstance(region, dict) else region
            for region in result]


def _write_time(sub: Submission, created: float) -> float:
    try:
        return max(epoch_seconds(sub.updated_at, "updated_at"), created)
    except ValueError:
        return created


class LuaScript:
    """A Lua script run by its SHA1 alone.

    redis-py's ``Script`` asks ``SCRIPT EXISTS`` before every pipeline that holds one, an extra round trip per
    event; the SHA1 is computed here instead and the script loaded only when Redis answers NOSCRIPT (a
    restarted or flushed Redis). Everything run through these scripts is idempotent, so a retry is safe.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def queue(self, pipe: Pipeline, keys: list[str], args: list[Any]) -> None:
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def __call__(self, connection: redis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return connection.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            connection.script_load(self.source)
            return connection.evalsha(self.sha, len(keys), *keys, *args)


def execute_with_scripts(connection: redis.Redis, build: Callable[[Pipeline], None], *scripts: LuaScript) -> list:
    """Build and run a pipeline that calls ``scripts``, loading them once if Redis lost them."""
    for attempt in (1, 2):
        pipe = connection.pipeline(transaction=False)
        build(pipe)
        try:
            return pipe.execute()
        except NoScriptError:
            if attempt == 2:
                raise
            for script in scripts:
                connection.script_load(script.source)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Applied:
    counts: dict[str, int]
    tasks: set[int]  # tasks whose live submissions changed
    then_replies: list[Any] = field(default_factory=list)


class SubmissionStore:
    """Adapter between checked events and Redis."""

    def __init__(self, connection: redis.Redis, prefix: str = "cg") -> None:
        self.redis = connection
        self.prefix = prefix
        self.keys = Keys(prefix)
        self._upsert = LuaScript(_UPSERT)
        self._delete = LuaScript(_DELETE)
        self._delete_task = LuaScript(_DELETE_TASK)
        self._mark_scored = LuaScript(_MARK_SCORED)
        self._trim = LuaScript(_TRIM)
        self._retained = LuaScript(_RETAINED)

    # -- writes -----------------------------------------------------------------------------------------

    def apply(
        self, event: Event, then: Callable[[Pipeline], None] | None = None, extra_scripts: tuple[LuaScript, ...] = ()
    ) -> Applied:
        """Apply one event in one round trip; returns what changed and the tasks whose submissions changed.

        ``then`` may queue more commands on the same pipeline (after the writes); their replies come back
        in ``Applied.then_replies``.
        """
        marks: dict[str, int] = {}

        def build(pipe: Pipeline) -> None:
            if event.project is not None:
                pipe.sadd(self.keys.projects(), event.project)
                if event.project_info:
                    self.save_project(event.project, event.project_info, pipe)
                for task in event.tasks:
                    self.save_task(event.project, task, pipe)
            marks["tasks"] = len(pipe)
            if event.project is not None:
                for task_id in event.deleted_tasks:
                    pipe.delete(self.keys.task_info(event.project, task_id))
                    self.delete_task(event.project, task_id, pipe)
            marks["deletes"] = len(pipe)
            if event.project is not None:
                for annotation_id in event.deleted_annotations:
                    self.delete(event.project, annotation_id, pipe)
            marks["records"] = len(pipe)
            for submission in event.submissions:
                self.record(submission, pipe)
            marks["then"] = len(pipe)
            if then is not None:
                then(pipe)

        replies = execute_with_scripts(self.redis, build, self._upsert, self._delete, self._delete_task,
                                       *extra_scripts)
        tasks_at, deletes_at, records_at, then_at = marks["tasks"], marks["deletes"], marks["records"], marks["then"]
        deleted, outcomes = replies[deletes_at:records_at], replies[records_at:then_at]
        counts: Counter[str] = Counter()
        touched: set[int] = set()
        if event.deleted_tasks:
            counts["tasks_deleted"] = len(event.deleted_tasks)
            # every other reply of the task deletions is the submissions the task took with it
            for task_id, gone in zip(event.deleted_tasks, replies[tasks_at + 1:deletes_at:2], strict=True):
                if int(gone):
                    counts["deleted"] += int(gone)
                    touched.add(int(task_id))
        for task in deleted:
            if task is not None:
                counts["deleted"] += 1
                touched.add(int(task))
        for submission, outcome in zip(event.submissions, outcomes, strict=True):
            counts[{CREATED: "created", UPDATED: "updated", STALE: "stale"}[int(outcome)]] += 1
            if int(outcome) != STALE:
                touched.add(submission.task)
        return Applied(dict(counts), touched, replies[then_at:])

    def record(self, sub: Submission, pipe: Pipeline | None = None) -> int:
        """Store one submission version; returns CREATED, UPDATED or STALE (queued only, given a pipeline)."""
        k, project = self.keys, sub.project
        keys = [
            k.submission(project, sub.unique_id),
            k.task_submissions(project, sub.task),
            k.annotator_submissions(project, sub.annotator),
            k.annotation_submission(project, sub.annotation_id),
            k.annotators(project),
            k.tasks(project),
            k.projects(),
            k.annotator_lead_times(project, sub.annotator),
            k.lead_times(project),
            k.write_seq(project),
            k.unscored(project),
            k.retention_queue(project),
        ]
        created = epoch_seconds(sub.created_at, "created_at")  # ValueError, never epoch 0, for a bad timestamp
        args = [
            "",  # unused (the record's pairs come last)
            sub.updated_at,
            sub.unique_id,
            created,
            sub.annotator,
            sub.task,
            sub.project,
            # lead times of first versions only, for the low-effort signal (skips say nothing about effort)
            "" if sub.lead_time is None or sub.was_cancelled else repr(sub.lead_time),
            repr(_write_time(sub, created)),
            *encode(sub),
        ]
        if pipe is not None:
            self._upsert.queue(pipe, keys, args)
            return -1
        return int(self._upsert(self.redis, keys, args))

    def delete_task(self, project: int, task: int, pipe: Pipeline | None = None) -> int:
        """Tombstone every live submission of a task Label Studio deleted; returns how many (queued only, given
        a pipeline)."""
        k = self.keys
        keys = [k.task_submissions(project, task), k.write_seq(project), k.unscored(project)]
        args = [*k.submission_parts(project), *k.annotator_submissions_parts(project),
                *k.annotation_submission_parts(project), task]
        if pipe is not None:
            self._delete_task.queue(pipe, keys, args)
            return -1
        return int(self._delete_task(self.redis, keys, args))

    def delete(self, project: int, annotation_id: int, pipe: Pipeline | None = None) -> int | None:
        """Remove a Label Studio annotation from the indexes; returns its task, or None if unknown."""
        k = self.keys
        keys = [k.annotation_submission(project, annotation_id), k.write_seq(project), k.unscored(project)]
        args = [*k.submission_parts(project), *k.task_submissions_parts(project),
                *k.annotator_submissions_parts(project)]
        if pipe is not None:
            self._delete.queue(pipe, keys, args)
            return None
        task = self._delete(self.redis, keys, args)
        return int(task) if task is not None else None

    # -- unscored marks --------------------------------------------------------------------------------------
    # Every write that changes a task's live submissions marks the task unscored in the same Lua call, with a
    # per-project sequence number. The job clears the mark only after scoring and routing finished, so a job
    # that fails after its writes leaves the mark, and its retry (or any later event or reconciliation of the
    # task) scores the task although the write itself is now a no-op.

    def queue_unscored(self, pipe: Pipeline, project: int, tasks: list[int] | None = None) -> None:
        """Queue the read of unscored marks (all of the project's, or those of ``tasks``) on ``pipe``;
        hand its reply to :meth:`unscored_from`."""
        key = self.keys.unscored(project)
        if tasks is None:
            pipe.zrange(key, 0, -1, withscores=True)
        elif tasks:
            pipe.zmscore(key, tasks)
        else:
            pipe.echo("")

    @staticmethod
    def unscored_from(reply: Any, tasks: list[int] | None = None) -> dict[int, float]:
        """``{task: write sequence}`` from the reply of :meth:`queue_unscored` with the same ``tasks``."""
        if tasks is None:
            return {int(task): float(seq) for task, seq in reply}
        if not tasks:
            return {}
        return {task: float(seq) for task, seq in zip(tasks, reply, strict=True) if seq is not None}

    def unscored(self, project: int) -> dict[int, float]:
        pipe = self.redis.pipeline(transaction=False)
        self.queue_unscored(pipe, project)
        return self.unscored_from(pipe.execute()[0])

    def mark_scored(self, project: int, seen: dict[int, float]) -> int:
        """Clear the marks of tasks scored after write ``seen[task]``; a later write keeps its mark."""
        if not seen:
            return 0
        args = [x for task, seq in seen.items() for x in (task, repr(seq))]
        return int(self._mark_scored(self.redis, [self.keys.unscored(project)], args))

    # -- retention --------------------------------------------------------------------------------------------
    # A task whose newest submission version is older than the cutoff is settled: its submissions keep what
    # scoring reads (trimmed results, shared) and Label Studio keeps the rest. A later version of a submission
    # is stored whole again and queues its task for the next sweep.

    def retain(self, project: int, before: float, chunk: int = 1000) -> dict[str, int]:
        """Trim the results of every submission on tasks whose newest version is older than ``before`` (epoch
        seconds); returns how many tasks and submissions were trimmed."""
        queue, done = self.keys.retention_queue(project), {"tasks": 0, "trimmed": 0}
        while True:
            due = self.redis.zrangebyscore(queue, "-inf", before, start=0, num=chunk, withscores=True)
            if not due:
                return done
            tasks = [(int(task), at) for task, at in due]
            pipe = self.redis.pipeline(transaction=False)
            for task, _ in tasks:
                pipe.zrange(self.keys.task_submissions(project, task), 0, -1)
            uids = [u.decode() for reply in pipe.execute() for u in reply]
            pipe = self.redis.pipeline(transaction=False)
            for uid in uids:
                pipe.hmget(self.keys.submission(project, uid), "updated_at", "r")
            trims = []
            for uid, (updated, result) in zip(uids, pipe.execute(), strict=True):
                if updated is None or result is None:
                    continue  # gone, old format, or trimmed already
                short = json.dumps(trimmed(json.loads(result)), separators=(",", ":"))
                digest = hashlib.sha1(short.encode()).hexdigest()[:16]  # 64 bits: no collision within a project
                trims.append(([self.keys.submission(project, uid), self.keys.results(project)],
                              [updated, digest, short]))

            def build(pipe: Pipeline, trims: list = trims, tasks: list = tasks) -> None:
                for keys, args in trims:
                    self._trim.queue(pipe, keys, args)
                for task, at in tasks:
                    self._retained.queue(pipe, [queue], [task, repr(at)])

            replies = execute_with_scripts(self.redis, build, self._trim, self._retained)
            done["tasks"] += len(tasks)
            done["trimmed"] += sum(int(r) for r in replies[:len(trims)])

    def save_project(self, project: int, info: dict[str, Any], pipe: Pipeline | None = None) -> None:
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in info.items() if v is not None}
        if fields:
            (pipe or self.redis).hset(self.keys.project_info(project), mapping=fields)

    def save_task(self, project: int, task: TaskInfo, pipe: Pipeline | None = None) -> None:
        client = pipe or self.redis
        client.hset(
            self.keys.task_info(project, task.id),
            mapping={"data": json.dumps(task.data), "meta": json.dumps(task.meta)},
        )
        client.sadd(self.keys.tasks(project), task.id)

    # -- reads ------------------------------------------------------------------------------------------

    # Queue/decode pairs: routing queues the reads of many tasks on one pipeline, then decodes the replies.

    def queue_task_uids(self, pipe: Pipeline, project: int, task: int) -> None:
        """Queue the read of a task's submission ids; decode the reply with :meth:`uids_from`."""
        pipe.zrange(self.keys.task_submissions(project, task), 0, -1)

    @staticmethod
    def uids_from(reply: list[bytes]) -> list[str]:
        return [u.decode() for u in reply]

    def queue_rows(self, pipe: Pipeline, project: int, unique_ids: list[str]) -> None:
        """Queue the reads of submission records (one reply each); decode them with :meth:`rows_from`."""
        for uid in unique_ids:
            pipe.hgetall(self.keys.submission(project, uid))

    @staticmethod
    def rows_from(unique_ids: list[str], replies: list[dict[bytes, bytes]]) -> list[tuple[str, dict[bytes, bytes]]]:
        """The (unique id, record) pairs of :meth:`queue_rows`'s replies, records gone meanwhile left out; hand
        them to :meth:`decode_rows`."""
        return [(uid, row) for uid, row in zip(unique_ids, replies, strict=True) if row]

    def queue_project_info(self, pipe: Pipeline, project: int) -> None:
        pipe.hgetall(self.keys.project_info(project))

    @staticmethod
    def project_info_from(raw: dict[bytes, bytes]) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in raw.items()}

    def queue_task_info(self, pipe: Pipeline, project: int, task: int) -> None:
        pipe.hgetall(self.keys.task_info(project, task))

    @staticmethod
    def task_info_from(task: int, raw: dict[bytes, bytes]) -> TaskInfo | None:
        if not raw:
            return None
        return TaskInfo(id=task, data=json.loads(raw[b"data"]), meta=json.loads(raw[b"meta"]))

    def _load(self, project: int, unique_ids: list[str]) -> list[Submission]:
        if not unique_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for uid in unique_ids:
            pipe.hgetall(self.keys.submission(project, uid))
        rows = [(uid, row) for uid, row in zip(unique_ids, pipe.execute(), strict=True) if row]
        return self.decode_rows(project, rows)

    def decode_rows(self, project: int, rows: list[tuple[str, dict[bytes, bytes]]]) -> list[Submission]:
        """Submissions from their records, reading the shared trimmed results they name in one call."""
        digests = sorted({row[b"rk"] for _, row in rows if b"rk" in row and b"json" not in row})
        results = dict(zip(digests, self.redis.hmget(self.keys.results(project), digests), strict=True)) \
            if digests else {}
        return [decode(project, uid, row, results) for uid, row in rows]

    def submission(self, project: int, unique_id: str) -> Submission | None:
        found = self._load(project, [unique_id])
        return found[0] if found else None

    def task_submissions(self, project: int, task: int) -> list[Submission]:
        """Live submissions on a task, oldest first (the per-task index)."""
        uids = [u.decode() for u in self.redis.zrange(self.keys.task_submissions(project, task), 0, -1)]
        return self._load(project, uids)

    def annotator_log(self, project: int, annotator: int) -> list[Submission]:
        """An annotator's live submissions in the project, oldest first."""
        uids = [u.decode() for u in self.redis.zrange(self.keys.annotator_submissions(project, annotator), 0, -1)]
        return self._load(project, uids)

    def annotator_submission_count(self, project: int, annotator: int) -> int:
        """How many live submissions of ``annotator`` the project's log holds (one Redis call, nothing loaded)."""
        return int(self.redis.zcard(self.keys.annotator_submissions(project, annotator)))

    def annotators(self, project: int) -> list[int]:
        return sorted(int(a) for a in self.redis.smembers(self.keys.annotators(project)))

    def tasks(self, project: int) -> list[int]:
        return sorted(int(t) for t in self.redis.smembers(self.keys.tasks(project)))

    def projects(self) -> list[int]:
        return sorted(int(p) for p in self.redis.smembers(self.keys.projects()))

    def lead_times(self, project: int, annotator: int | None = None) -> list[float]:
        """Recent lead times of an annotator, or of the whole project."""
        key = self.keys.annotator_lead_times(project, annotator) if annotator is not None else \
            self.keys.lead_times(project)
        return [float(v) for v in self.redis.lrange(key, 0, -1)]

    def project_info(self, project: int) -> dict[str, str]:
        raw = self.redis.hgetall(self.keys.project_info(project))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def task_info(self, project: int, task: int) -> TaskInfo | None:
        raw = self.redis.hgetall(self.keys.task_info(project, task))
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
            pipe.zcard(self.keys.task_submissions(project, task))
        counts = pipe.execute()
        return {
            "project": project,
            "annotators": per_annotator,
            "tasks_seen": len(tasks),
            "tasks_with_submissions": sum(1 for c in counts if c),
            "tasks_with_2_or_more": sum(1 for c in counts if c >= 2),
            "submissions": sum(counts),
        }
