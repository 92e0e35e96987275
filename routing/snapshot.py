"""What routing reads for a batch of tasks, in a few pipelined round trips instead of ~15 reads per task.

:func:`read_tasks` queues the reads of every task of one ``after_scoring`` call on one pipeline (redis-py,
``transaction=False``), then the submission records they name, then the shared results and the authors'
records: four round trips whatever the number of tasks. The replies are kept raw where the router decodes them
(so a bad value raises where it always did), and a task whose submissions cannot be decoded here is left out:
the router reads that one directly, as before. Nothing routing writes during the call is read here, so the
decisions are those of reading one task at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qa_hooks.events import Submission
from qa_hooks.ledger import Reliability
from qa_hooks.store import decode
from routing.exam import exam_answers
from routing.policy import Policy
from routing.runtime import Context
from routing.state import AnnotatorRecord, TaskRoute

__all__ = ["AnnotatorSnapshot", "CallReads", "ProjectSnapshot", "TaskSnapshot", "read_annotators", "read_tasks",
           "touch_and_read_call"]


@dataclass(frozen=True)
class TaskSnapshot:
    """One task's reads; ``*_raw`` are replies the router decodes where it used to read them."""

    gold_raw: tuple[bytes | None, bytes | None]
    route: TaskRoute
    submissions: list[Submission]
    info_raw: dict[bytes, bytes]
    difficulty_raw: bytes | None
    score_raw: dict[bytes, bytes]
    contributions_raw: dict[bytes, bytes]


@dataclass
class ProjectSnapshot:
    """The project-level reads shared by every task of the call, and each task's own."""

    project: int
    info: dict[str, str]
    tiers: dict[int, str]
    manual_flags: dict[int, str]
    signal_flags_raw: dict[bytes, bytes]
    tasks: dict[int, TaskSnapshot] = field(default_factory=dict)
    reliabilities: dict[int, Reliability] = field(default_factory=dict)
    stop_thresholds: dict[tuple[str, ...], float | None] = field(default_factory=dict)  # memo per call

    def flagged(self, ctx: Context, annotators: list[int]) -> dict[int, str]:
        """:meth:`routing.runtime.Context.flagged` from the snapshot's two hashes."""
        signals = ctx.ledger.flags_from(self.signal_flags_raw)
        out: dict[int, str] = {}
        for a in annotators:
            if a in self.manual_flags:
                out[a] = self.manual_flags[a]
            elif signals.get(a):
                out[a] = ", ".join(f.name for f in signals[a])
        return out

    def reliabilities_of(self, ctx: Context, annotators: list[int]) -> dict[int, Reliability]:
        missing = [a for a in annotators if a not in self.reliabilities]
        if missing:  # not expected (every live author was read), but never decide on a guess
            self.reliabilities.update(ctx.ledger.reliabilities(self.project, missing))
        return {a: self.reliabilities[a] for a in annotators}


def read_tasks(ctx: Context, project: int, tasks: list[int]) -> ProjectSnapshot:
    """Read what :func:`routing.router._route_task` needs for ``tasks`` of ``project`` (module doc)."""
    store, ledger, state = ctx.store, ctx.ledger, ctx.state
    pipe = ctx.connection.pipeline(transaction=False)
    store.queue_project_info(pipe, project)
    state.queue_tiers(pipe, project)
    state.queue_flagged(pipe, project)
    ledger.queue_all_flags(pipe, project)
    for task in tasks:
        ledger.queue_gold(pipe, project, task)
        state.queue_route(pipe, project, task)
        store.queue_task_uids(pipe, project, task)
        store.queue_task_info(pipe, project, task)
        pipe.hget(ctx.keys.difficulty(project), task)
        ledger.queue_task_score(pipe, project, task)
        ledger.queue_contributions(pipe, project, task)
    replies = pipe.execute()
    info_raw, tiers_raw, manual_raw, signals_raw = replies[:4]
    snap = ProjectSnapshot(project, store.project_info_from(info_raw), state.tiers_from(tiers_raw),
                           state.flagged_from(manual_raw), signals_raw)
    per_task = {task: replies[4 + 8 * i:4 + 8 * (i + 1)] for i, task in enumerate(tasks)}

    uids = {task: store.uids_from(reply[3]) for task, reply in per_task.items()}
    pipe = ctx.connection.pipeline(transaction=False)
    for task in tasks:
        store.queue_rows(pipe, project, uids[task])
    rows_replies = pipe.execute()
    rows: dict[int, list[tuple[str, dict[bytes, bytes]]]] = {}
    at = 0
    for task in tasks:
        n = len(uids[task])
        rows[task] = store.rows_from(uids[task], rows_replies[at:at + n])
        at += n

    # The shared trimmed results the records name, as SubmissionStore.decode_rows reads them, for all tasks at once.
    digests = sorted({row[b"rk"] for found in rows.values() for _, row in found if b"rk" in row and b"json" not in row})
    results = dict(zip(digests, ctx.connection.hmget(ctx.keys.results(project), digests), strict=True)) \
        if digests else {}
    for task in tasks:
        try:
            subs = [decode(project, uid, row, results) for uid, row in rows[task]]
            gold_a, gold_m, route_raw, _, task_info, difficulty, score, contrib = per_task[task]
            route = TaskRoute.from_redis(project, task, route_raw)
        except Exception:  # left to the direct read, which raises where it always did
            continue
        snap.tasks[task] = TaskSnapshot((gold_a, gold_m), route, subs, task_info, difficulty, score, contrib)

    people = sorted({s.annotator for t in snap.tasks.values() for s in t.submissions})
    if people:
        pipe = ctx.connection.pipeline(transaction=False)
        ledger.queue_reliabilities(pipe, project, people)
        snap.reliabilities = ledger.with_fit(project, ledger.reliabilities_from(people, pipe.execute()))
    return snap


@dataclass(frozen=True)
class AnnotatorSnapshot:
    """What :func:`routing.router._decide_annotator` and its actions read for one annotator, as read one at a time.

    ``record.flagged`` is already :meth:`routing.runtime.Context.flagged`'s answer; ``exam`` is
    :func:`routing.exam.exam_counts`' (None outside the exam tier); ``sync_wanted`` and ``answers`` are what
    :func:`routing.exam.request_sync` reads (the project has gold or the annotator has offers; their live count).
    """

    record: AnnotatorRecord
    reliability: Reliability
    exam: tuple[int, int, list[int]] | None
    sync_wanted: bool
    answers: int


def read_annotators(ctx: Context, project: int, annotators: list[int], policy: Policy) -> dict[int, AnnotatorSnapshot]:
    """Every annotator's routing reads for one call: one pipelined round trip, plus three for the exam tier's
    gold answers (their log's records, the trimmed results they name, their contributions) and the refit's.

    An annotator whose replies cannot be decoded is left out (the router reads that one directly, raising
    where it always did). Nothing the router writes while routing annotators is read here.
    """
    people = list(dict.fromkeys(annotators))
    if not people:
        return {}
    state, ledger, store, keys = ctx.state, ctx.ledger, ctx.store, ctx.keys
    exam_rule = policy.qualification
    pipe = ctx.connection.pipeline(transaction=False)
    ledger.queue_all_flags(pipe, project)
    ledger.queue_gold_tasks(pipe, project)
    ledger.queue_reliabilities(pipe, project, people)
    for a in people:
        state.queue_annotator(pipe, project, a)
        state.queue_offered(pipe, project, a)
        pipe.zcard(keys.annotator_submissions(project, a))
        if exam_rule is not None:
            state.queue_exam_used(pipe, project, a)
            pipe.zrange(keys.annotator_submissions(project, a), 0, -1)
    replies = pipe.execute()
    signals = ledger.flags_from(replies[0])
    has_gold = bool(ledger.gold_tasks_from(replies[1], replies[2]))
    at = 3 + 2 * len(people)
    rels = ledger.with_fit(project, ledger.reliabilities_from(people, replies[3:at]))
    width = 6 + (2 if exam_rule is not None else 0)  # queue_annotator 4, offered, zcard (+ exam used, log)
    records: dict[int, tuple[AnnotatorRecord, set[bytes], int]] = {}
    logs: dict[int, tuple[set[int], list[str]]] = {}
    for i, a in enumerate(people):
        own = replies[at + width * i:at + width * (i + 1)]
        try:
            record = state.annotator_from(a, own[:4], policy)
            if record.flagged is None and signals.get(a):
                record = AnnotatorRecord(**{**record.__dict__, "flagged": ", ".join(f.name for f in signals[a])})
            records[a] = (record, own[4], int(own[5]))
            if exam_rule is not None and record.tier == policy.tiers[0].name:
                logs[a] = ({int(t) for t in own[6]}, [u.decode() for u in own[7]])
        except Exception:  # left to the direct read
            continue

    # The exam tier's gold answers, as exam.exam_counts reads them, for every such annotator at once.
    exams: dict[int, tuple[int, int, list[int]]] = {}
    if logs:
        pipe = ctx.connection.pipeline(transaction=False)
        for _, uids in logs.values():
            store.queue_rows(pipe, project, uids)
        rows_replies = pipe.execute()
        rows: dict[int, list[tuple[str, dict[bytes, bytes]]]] = {}
        n = 0
        for a, (_, uids) in logs.items():
            rows[a] = store.rows_from(uids, rows_replies[n:n + len(uids)])
            n += len(uids)
        digests = sorted({row[b"rk"] for found in rows.values() for _, row in found
                          if b"rk" in row and b"json" not in row})
        results = dict(zip(digests, ctx.connection.hmget(keys.results(project), digests), strict=True)) \
            if digests else {}
        tasks: dict[int, list[int]] = {}
        for a, found in rows.items():
            try:
                used = logs[a][0]
                subs = [decode(project, uid, row, results) for uid, row in found]
                tasks[a] = list(dict.fromkeys(s.task for s in subs if not s.was_cancelled and s.task not in used))
            except Exception:
                records.pop(a, None)
        pipe = ctx.connection.pipeline(transaction=False)
        for a, own_tasks in tasks.items():
            ledger.queue_annotator_contributions(pipe, project, a, own_tasks)
        contrib_replies = pipe.execute() if tasks else []
        n = 0
        for a, own_tasks in tasks.items():
            contributions = ledger.annotator_contributions_from(own_tasks, contrib_replies[n:n + len(own_tasks)])
            n += len(own_tasks)
            exams[a] = exam_answers(own_tasks, contributions, exam_rule.exam_tasks)  # type: ignore[union-attr]

    out: dict[int, AnnotatorSnapshot] = {}
    for a, (record, offered, answers) in records.items():
        if a in logs and a not in exams:
            continue
        out[a] = AnnotatorSnapshot(record, rels[a], exams.get(a), has_gold or bool(offered), answers)
    return out



@dataclass(frozen=True)
class CallReads:
    """The reads :func:`routing.router.after_scoring` starts with, before it routes anything.

    ``policy_raw`` is the project's own policy source (the router decodes it where it loaded the policy, and
    only for a project that is not an escalation project: those follow their source project's policy).
    """

    review_of: int | None
    link: tuple[int, str] | None
    policy_bound: bool
    policy_raw: list[bytes | None]
    prepared: bool


def touch_and_read_call(ctx: Context, project: int, annotators: list[int], now: float) -> CallReads:
    """Note the annotators active (``RoutingState.touch``) and read the call's prelude in one round trip."""
    state = ctx.state
    pipe = ctx.connection.pipeline(transaction=False)
    state.queue_touch(pipe, annotators, now)
    pipe.hget(ctx.keys.review_projects(), project)  # routing.review.review_source's read
    state.queue_tier_project_link(pipe, project)
    state.queue_policy_bound(pipe, project)
    state.queue_policy_source(pipe, project)
    state.queue_prepared(pipe, project)
    replies = pipe.execute()
    review_raw, link_raw, bound, policy_raw, prepared = replies[-5:]
    return CallReads(int(review_raw) if review_raw else None, state.tier_project_link_from(link_raw), bool(bound),
                     policy_raw, bool(prepared))
