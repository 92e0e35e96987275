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
from routing.runtime import Context
from routing.state import TaskRoute

__all__ = ["ProjectSnapshot", "TaskSnapshot", "read_tasks"]


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
        snap.reliabilities = ledger.reliabilities_from(people, pipe.execute())
    return snap
