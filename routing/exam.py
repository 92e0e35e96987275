"""Serving gold on Community: the qualification exam and the continuous gold share, through Data Manager views.

Community cannot assign a task to one person, but a Data Manager view filtered on a task data field serves
one person their own queue (``/next/?view=V``). Every gold task offered to someone carries
``data.crowdgate_exam``, the annotators it is offered to (``|alice@x|bob@x|``), and each of them has a view
"crowdgate crowdgate_exam: EMAIL" filtering ``contains |EMAIL|`` (the delimiters make the substring exact).

:func:`sync_gold_offer` reconciles one annotator's offers with what the policy wants now:

- in the exam tier, not locked out: as many gold tasks as their current attempt still needs
  (``qualification.exam_tasks`` minus the gold answered in it), never one they answered or a failed attempt spent;
- qualified: one gold task they have not answered while their share of gold answers is below ``gold.share``;
- otherwise (locked out): nothing;
- paused for fraud (:mod:`routing.pausing`): nothing, and what they were offered is taken back.

It runs on the routing queue after every event of theirs and every tier change (deterministic job ids, RQ
``Retry``), and by hand through :func:`offer_gold`. Only gold tasks Label Studio still serves (fewer
annotations than their overlap) are offered: reopening a closed one would put it back in everyone's plain
``/next/`` ("Label All Tasks") too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from core.labelstudio import LabelStudioClient, offer_token
from core.task_lock import TaskDataLock
from routing.policy import Policy
from routing.runtime import Context, enqueue_action, job_id, labelstudio, unless_gone
from routing.state import AnnotatorRecord

__all__ = [
    "EXAM_CORRECT_AT",
    "EXAM_FIELD",
    "answers_count",
    "exam_answers",
    "exam_counts",
    "offer_gold",
    "request_sync",
    "set_offer",
    "sync_gold_offer",
    "sync_job_id",
    "wanted_gold",
]

EXAM_FIELD = "crowdgate_exam"
# A gold answer counts as correct in the exam when its similarity to the gold result reaches this.
EXAM_CORRECT_AT = 0.5


def sync_job_id(prefix: str, project: int, annotator: int, version: int, answers: int) -> str:
    """Same annotator version and number of answers, same job: a redelivered event syncs once."""
    return job_id(prefix, "gold", project, annotator, f"v{version}", f"n{answers}")


def answers_count(ctx: Context, project: int, annotator: int) -> int:
    """How many submissions of ``annotator`` the store holds (part of the sync job's id)."""
    return ctx.store.annotator_submission_count(project, annotator)


def exam_counts(ctx: Context, project: int, annotator: int, exam_tasks: int) -> tuple[int, int, list[int]]:
    """(answered, correct, gold tasks) of the current exam attempt: the first ``exam_tasks`` gold answers that
    no failed attempt has spent."""
    used = ctx.state.exam_used(project, annotator)
    tasks = [s.task for s in ctx.store.annotator_log(project, annotator)
             if not s.was_cancelled and s.task not in used]
    tasks = list(dict.fromkeys(tasks))
    return exam_answers(tasks, ctx.ledger.annotator_contributions(project, annotator, tasks), exam_tasks)


def exam_answers(tasks: list[int], contributions: dict[int, dict[str, Any]],
                 exam_tasks: int) -> tuple[int, int, list[int]]:
    """:func:`exam_counts` from its reads (pure): the annotator's unspent answered ``tasks`` in order and their
    contributions to them."""
    answered, correct, spent = 0, 0, []
    for t in tasks:
        gold = contributions.get(t, {}).get("gold")
        if gold is None:
            continue
        answered += 1
        correct += int(gold >= EXAM_CORRECT_AT)
        spent.append(t)
        if answered == exam_tasks:
            break
    return answered, correct, spent


def offer_gold(project: int, annotator: int, prefix: str = "cg", connection: redis.Redis | None = None,
               reason: str = "requested") -> str | None:
    """Enqueue the sync of one annotator's gold offers (a newcomer set by hand, before their first event)."""
    ctx = Context.of(prefix, connection)
    record = ctx.state.annotator(project, annotator, ctx.state.policy(project))
    job = sync_job_id(prefix, project, annotator, record.version, answers_count(ctx, project, annotator))
    return enqueue_action(ctx.connection, sync_gold_offer, job,
                          project=project, annotator=annotator, reason=reason, prefix=prefix)


def request_sync(ctx: Context, project: int, annotator: int, version: int, summary: dict | None = None) -> None:
    """Enqueue the reconciliation of the gold tasks offered to ``annotator`` after one of their events or tier
    changes: their exam while in the exam tier, the gold share once qualified. Nothing when the project has
    no gold."""
    if not ctx.ledger.gold_tasks(project) and not ctx.state.offered(project, annotator):
        return
    job = ctx.enqueue(sync_gold_offer,
                      sync_job_id(ctx.prefix, project, annotator, version, answers_count(ctx, project, annotator)),
                      project=project, annotator=annotator, prefix=ctx.prefix)
    if job and summary is not None:
        summary["enqueued"].append(job)


def wanted_gold(policy: Policy, record: AnnotatorRecord, answered: list[int], gold: set[int], candidates: list[int],
                offered: set[int], exam_answered: int) -> tuple[list[int], str]:
    """The gold tasks an annotator should be offered now, and why (pure).

    ``candidates``: gold tasks they may still get (open, not answered, not spent by a failed attempt), in the
    order to offer them; ``exam_answered``: gold answered in the current exam attempt.
    """
    if record.paused:
        return [], "paused for review of their work"
    keep = [t for t in candidates if t in offered]  # stable: what they were offered stays in their queue
    order = keep + [t for t in candidates if t not in offered]
    qual = policy.qualification
    if qual is not None and policy.tier_index(record.tier) < policy.first_labeling_index:
        if record.exam_attempts >= 1 + qual.max_retries:
            return [], "locked out of the exam"
        needed = max(qual.exam_tasks - exam_answered, 0)
        return order[:needed], f"exam: {exam_answered}/{qual.exam_tasks} answered in attempt {record.exam_attempts + 1}"
    answered_gold = sum(1 for t in answered if t in gold)
    if policy.gold_share > 0 and answered_gold < policy.gold_share * len(answered):
        return order[:1], f"gold share {answered_gold}/{len(answered)} below {policy.gold_share}"
    return [], f"gold share {answered_gold}/{len(answered)} at or above {policy.gold_share}"


def _still_served(ctx: Context, project: int, tasks: Iterable[int]) -> list[int]:
    """Gold tasks with fewer annotations (skips included) than their overlap, as far as crowdgate saw."""
    try:
        slots = int(ctx.store.project_info(project).get("maximum_annotations") or 0)
    except ValueError:
        slots = 0
    ids = list(tasks)
    routes = ctx.state.routes(project, ids)
    out = []
    for t in ids:
        limit = max(slots, routes[t].overlap or 0)
        if not limit or len(ctx.store.task_submissions(project, t)) < limit:
            out.append(t)
    return out


def set_offer(api: LabelStudioClient, task: int, email: str, on: bool) -> bool:
    """Add ``email`` to (or remove it from) a task's ``data.crowdgate_exam``; True when the task changed.

    PATCH replaces the whole ``data``, so the caller holds the task's lock across the read and the write.
    """
    current = unless_gone(api.task, task)
    if current is None:
        return False
    data = dict(current.get("data") or {})
    people = {p for p in str(data.get(EXAM_FIELD) or "").split("|") if p}
    me = offer_token(email).strip("|")
    people = people | {me} if on else people - {me}
    value = "|" + "|".join(sorted(people)) + "|" if people else ""
    if str(data.get(EXAM_FIELD) or "") == value:
        return False
    api.replace_task_data(task, {**data, EXAM_FIELD: value})
    return True


def sync_gold_offer(project: int, annotator: int, reason: str = "", prefix: str = "cg",
                    connection: redis.Redis | None = None) -> dict[str, Any]:
    """Make Label Studio offer ``annotator`` exactly the gold tasks :func:`wanted_gold` says (module doc)."""
    ctx = Context.of(prefix, connection)
    policy = ctx.state.policy(project)
    # One sync per annotator at a time: two workers must not compute offers from the same stale set.
    with ctx.connection.lock(ctx.keys.gold_offer_lock(project, annotator), timeout=120, blocking_timeout=60):
        record = ctx.state.annotator(project, annotator, policy)
        answered = list(dict.fromkeys(s.task for s in ctx.store.annotator_log(project, annotator)
                                      if not s.was_cancelled))
        gold = ctx.ledger.gold_tasks(project)
        offered = ctx.state.offered(project, annotator)
        used = ctx.state.exam_used(project, annotator)
        exam_answered = 0
        if policy.qualification is not None:
            exam_answered = exam_counts(ctx, project, annotator, policy.qualification.exam_tasks)[0]
        seen = {s.task for s in ctx.store.annotator_log(project, annotator)}  # a skipped gold is not offered again
        candidates = _still_served(ctx, project, [t for t in gold if t not in seen and t not in used])
        want, why = wanted_gold(policy, record, answered, set(gold), candidates, offered, exam_answered)
        added, removed = sorted(set(want) - offered), sorted(offered - set(want))
        qual = policy.qualification
        if qual is not None and why.startswith("exam:") and len(want) < qual.exam_tasks - exam_answered:
            ctx.audit.record("alert", "no_gold", project, None, [annotator],
                             f"only {len(want)} gold task(s) left to offer for the exam ({why})",
                             {"offered": want})
        if not added and not removed:
            return {"offered": want, "changed": False, "why": why}
        api = labelstudio()
        email = ctx.emails(api, [annotator]).get(annotator)
        if not email:
            ctx.audit.record("alert", "no_email", project, None, [annotator],
                             "no e-mail known: a Community queue is a view on the e-mail", {"why": why})
            return {"offered": sorted(offered), "changed": False, "why": why}
        view = ctx.state.exam_view(project, email)
        if want and view is None:
            view = api.offer_view(project, email, EXAM_FIELD)
            ctx.state.set_exam_view(project, email, view)
        task_lock = TaskDataLock(ctx.connection, prefix)
        for task in removed + added:  # withdrawn first: never two offers in the queue at once
            # Every offer of a gold task lives in one data field, beside training's difficulty: one writer at a time.
            with task_lock.hold(task):
                set_offer(api, task, email, task in added)
        ctx.state.set_offered(project, annotator, want)
        ctx.audit.record("action", "offer_gold", project, None, [annotator], reason or why,
                         {"why": why, "offered": want, "added": added, "removed": removed, "view": view,
                          "tier": record.tier})
        return {"offered": want, "added": added, "removed": removed, "view": view, "changed": True, "why": why}
