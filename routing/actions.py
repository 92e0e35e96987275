"""The routing action jobs: each acts on Label Studio for one decision, once (RQ jobs on ``crowdgate-routing``).

- ``prepare_project``: once per project, the edition probe, the user cache and the next tier's escalation project;
- ``set_overlap``: dynamic overlap, PATCH the task's ``overlap`` and ``is_labeled`` so ``/next/`` serves it again;
- ``escalate``: the task goes to a higher tier. An annotator is chosen (:mod:`routing.assignment`); on Community
  the task is imported into that tier's escalation project, assigned to them (``data.assigned_to`` + their Data
  Manager view) and closed in the source project; on Enterprise the assignment API assigns it in place. A
  deadline check is scheduled (``enqueue_in``);
- ``reassign``: the same tier, another annotator (more labels needed at that tier, or a skip);
- ``write_back``: an answer given in an escalation project goes to the source task on behalf of its annotator;
- ``finalize``: the task is final, its label in ``meta.crowdgate.final``, closed in every queue;
- ``flag_submission``: work by someone below the task's required tier is recorded as left out of counting;
- ``apply_tier_change``: promotion, demotion, qualification, failed exam (Enterprise: the pause API on lock-out);
- ``check_deadline``: the SLA check at the deadline; ``sweep_deadlines`` (crowdgate-cron) catches lost ones.

A decision taken twice acts once: job ids are deterministic (:func:`routing.runtime.job_id`), and every action
compare-and-sets the task route's or the annotator's ``version`` before it acts, so a retried job resumes its
own action and a stale one does nothing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import redis

from core.labelstudio import ENTERPRISE, LabelStudioClient, LabelStudioError, user_id
from qa_hooks.scoring import categorical, label_of
from routing import exam
from routing.assignment import Candidate, choose_annotator
from routing.data_manager import FIELDS as DATA_MANAGER_FIELDS
from routing.decisions import AnnotatorAction, SlaAction, TaskState, check_sla
from routing.inputs import live_submissions
from routing.policy import Policy
from routing.runtime import Context, enqueue_action, job_id, labelstudio, unless_gone
from routing.state import TaskRoute

__all__ = [
    "SOURCE_FIELD",
    "apply_tier_change",
    "candidates",
    "check_deadline",
    "escalate",
    "finalize",
    "flag_submission",
    "prepare_project",
    "reassign",
    "set_overlap",
    "sweep_deadlines",
    "write_back",
]

SOURCE_FIELD = "crowdgate_source_task"


def prepare_project(project: int, prefix: str = "cg", connection: redis.Redis | None = None) -> dict[str, Any]:
    """Ready a project for escalations before the first one, so it costs no setup then: probe the edition,
    cache the users' e-mails and, on Community, create the escalation project of the tier above the first
    labeling tier (higher tiers' projects are made when first needed)."""
    ctx = Context.of(prefix, connection)
    policy = ctx.state.policy(project)
    api = labelstudio()
    found = ctx.edition(api, project)
    ctx.state.cache_users({int(u["id"]): u["email"] for u in api.users() if u.get("email")})
    tier_project = None
    above = policy.first_labeling_index + 1
    if found != ENTERPRISE and above < len(policy.tiers):
        tier_project = _ensure_tier_project(ctx, api, project, policy.tiers[above].name)
    ctx.state.set_prepared(project)
    return {"edition": found, "tier_project": tier_project}


def set_overlap(project: int, task: int, version: int, annotations: int, needed: int, reason: str = "",
                prefix: str = "cg", connection: redis.Redis | None = None) -> dict[str, Any]:
    """Dynamic overlap: ask Label Studio for ``needed`` more annotations on ``task``.

    Decided when the task had ``annotations`` at route ``version``; a newer submission or routing change
    supersedes it (its own decision follows), so a late job never reopens an escalated or final task.
    """
    ctx = Context.of(prefix, connection)
    route = ctx.state.route(project, task)
    now_in = sum(1 for s in ctx.store.task_submissions(project, task) if not s.was_cancelled)
    if route.version != version or route.status != "open" or now_in != annotations:
        ctx.audit.record("action", "set_overlap_skipped", project, task, [],
                         f"superseded (route v{route.version} {route.status}, {now_in} annotations)",
                         {"decided_at_version": version, "decided_with": annotations})
        return {"skipped": True}
    api = labelstudio()
    current = api.task(task)
    done = int(current.get("total_annotations") or 0)
    target = done + max(int(needed), 1)
    if not current.get("is_labeled") and int(current.get("overlap") or 0) >= target:
        outcome = {"overlap": current.get("overlap"), "changed": False}
    else:
        if int(current.get("overlap") or 0) >= target:  # labeled anyway (skips counted): one more than now
            target = int(current["overlap"]) + 1
        api.set_overlap(task, target)
        ctx.state.update_route(project, task, overlap=target)
        outcome = {"overlap": target, "changed": True}
    ctx.audit.record("action", "set_overlap", project, task, [], reason or "more labels needed",
                     {**outcome, "annotations": done, "needed": needed})
    return outcome


def _claim(ctx: Context, project: int, task: int, version: int, key: str, action: str) -> TaskRoute | None:
    """The task's route if this job is the one to act on ``version`` (once); else audited as skipped."""
    route = ctx.state.claim(project, task, version, key)
    if route is None:
        ctx.audit.record("action", f"{action}_skipped", project, task, [], f"superseded: route moved past v{version}")
    return route


def escalate(project: int, task: int, tier: str, version: int, escalations: int, reason: str = "",
             prefix: str = "cg", connection: redis.Redis | None = None) -> dict[str, Any]:
    """Send ``task`` to an annotator of ``tier`` (or above) and to nobody below (see the module docstring)."""
    ctx = Context.of(prefix, connection)
    route = _claim(ctx, project, task, version, f"escalate:{tier}:v{version}", "escalate")
    if route is None:
        return {"skipped": True}
    return _route_to(ctx, project, task, tier, route, escalations, "escalate", reason)


def reassign(project: int, task: int, version: int, reason: str = "", prefix: str = "cg",
             connection: redis.Redis | None = None) -> dict[str, Any]:
    """Another annotator of the task's required tier (a skip, or more labels needed at that tier)."""
    ctx = Context.of(prefix, connection)
    route = _claim(ctx, project, task, version, f"reassign:v{version}", "reassign")
    if route is None:
        return {"skipped": True}
    tier = route.required_tier or ctx.state.policy(project).first_labeling_tier
    return _route_to(ctx, project, task, tier, route, route.escalations, "reassign", reason)


def candidates(ctx: Context, policy: Policy, project: int, tier: str) -> list[Candidate]:
    """Everyone at ``tier`` or above in ``project``, with what choosing one of them weighs (flagged included)."""
    tiers = ctx.state.tiers(project)
    floor = policy.tier_index(tier)
    people = [a for a, t in tiers.items() if t in policy.tier_names and policy.tier_index(t) >= floor]
    if not people:
        return []
    rels = ctx.ledger.reliabilities(project, people)
    loads = ctx.state.loads(people)
    seen = ctx.state.last_seen(people)
    flagged = ctx.flagged(project, people)
    emails = ctx.state.emails(people)
    return [Candidate(a, tiers[a], rels[a].mean, rels[a].confusion, loads[a], seen[a], a in flagged, emails[a])
            for a in people]


def _route_to(ctx: Context, project: int, task: int, tier: str, route: TaskRoute, escalations: int, kind: str,
              reason: str) -> dict[str, Any]:
    policy = ctx.state.policy(project)
    api = labelstudio()
    now = time.time()
    subs = ctx.store.task_submissions(project, task)
    touched = {s.annotator for s in subs}
    if route.tier_project and route.tier_task:
        touched |= {s.annotator for s in ctx.store.task_submissions(route.tier_project, route.tier_task)}
    if route.assigned is not None:
        touched.add(route.assigned)  # who had it and did not finish (skip, deadline) does not get it back
    people = candidates(ctx, policy, project, tier)
    ctx.emails(api, [c.annotator_id for c in people] + sorted(touched))
    emails = ctx.state.emails([c.annotator_id for c in people])
    people = [Candidate(**{**c.__dict__, "email": emails[c.annotator_id]}) for c in people]
    kind_of_server = ctx.edition(api, project)
    if kind_of_server != ENTERPRISE:  # a Community queue is a Data Manager view on the e-mail
        people = [c for c in people if c.email]
    live = live_submissions(subs)
    cat = categorical(ctx.store.project_info(project).get("label_config") or "<View/>") if live else None
    disputed = [v for v in (label_of(s.result, cat.control) for s in live) if v] if cat else []
    choice = choose_annotator(people, policy, tier, exclude=touched, disputed=disputed, now=now,
                              active_within=ctx.settings.active_within_s)
    chosen = choice.annotator_id
    ctx.audit.record("decision", "assign", project, task, [chosen] if chosen else [], choice.reason,
                     {**choice.evidence, "kind": kind, "edition": kind_of_server})
    if chosen is None:
        ctx.audit.record("alert", "no_annotator", project, task, [], choice.reason, {"tier": tier, "kind": kind})
    if kind_of_server == ENTERPRISE:
        tier_project = tier_task = None
        api.unassign(project, task)
        if chosen is not None:
            api.assign(project, task, [chosen])
        current = api.task(task)
        api.set_overlap(task, int(current.get("total_annotations") or 0) + 1)
    else:
        tier_project, tier_task = _community_route(ctx, api, project, task, tier, route,
                                                   ctx.state.emails([chosen])[chosen] if chosen else None)
    if route.assigned is not None and route.assigned != chosen:
        ctx.state.release(route.assigned, project, task)
    if chosen is not None:
        ctx.state.assign(chosen, project, task)
    deadline = now + policy.sla.deadline_seconds if policy.sla.deadline_seconds else None
    after = ctx.state.update_route(
        project, task, status="escalated", required_tier=tier, escalations=escalations, escalated_at=now,
        deadline=deadline, assigned=chosen, tier_project=tier_project, tier_task=tier_task)
    if deadline is not None:
        enqueue_action(ctx.connection, check_deadline, job_id(ctx.prefix, "sla", project, task, f"v{after.version}"),
                       delay=deadline - now + 0.5, project=project, task=task, version=after.version,
                       prefix=ctx.prefix)
    outcome = {"tier": tier, "assigned": chosen, "edition": kind_of_server, "tier_project": tier_project,
               "tier_task": tier_task, "deadline": deadline, "escalations": escalations, "version": after.version}
    ctx.audit.record("action", kind, project, task, [chosen] if chosen else [], reason or choice.reason, outcome)
    return outcome


def _ensure_tier_project(ctx: Context, api: LabelStudioClient, project: int, tier: str) -> int:
    """The escalation project of ``tier`` for ``project``, created once (same label config, one annotation
    per task, earlier answers attached as predictions but not shown, crowdgate's webhook copied)."""
    found = ctx.state.tier_project(project, tier)
    if found is not None:
        return found
    lock = ctx.connection.lock(ctx.keys.tier_project_lock(project, tier), timeout=120, blocking_timeout=60)
    with lock:
        found = ctx.state.tier_project(project, tier)
        if found is not None:
            return found
        source = api.project(project)
        title = f"{source.get('title', project)}"[:30] + f" · {tier}"[:19]
        tier_project = api.create_project(
            title, source["label_config"], maximum_annotations=1, show_collab_predictions=False,
            description=f"crowdgate: tasks escalated to {tier} from project {project}; answers are written back there")
        hooks = [h for h in api.webhooks(project) if h.get("project", project) == project
                 and str(h.get("url", "")).rstrip("/").endswith("/hooks/labelstudio")]
        for hook in hooks[:1]:
            api.create_webhook(tier_project, hook["url"], hook.get("headers") or {})
        ctx.state.link_tier_project(project, tier, tier_project)
        ctx.audit.record("action", "create_escalation_project", project, None, [],
                         f"escalation project {tier_project} for {tier}",
                         {"tier_project": tier_project, "tier": tier, "webhook": bool(hooks)})
        if not hooks:
            ctx.audit.record("alert", "no_webhook", project, None, [],
                             f"project {project} has no crowdgate webhook to copy: answers in escalation project "
                             f"{tier_project} will not be written back until one is added")
        return tier_project



def _community_route(ctx: Context, api: LabelStudioClient, project: int, task: int, tier: str, route: TaskRoute,
                     email: str | None) -> tuple[int, int]:
    tier_project = _ensure_tier_project(ctx, api, project, tier)
    if route.tier_project and route.tier_task and route.tier_project != tier_project:
        unless_gone(api.close_task, route.tier_task)  # escalated further: the lower escalation queue loses it
    tier_task = route.tier_task if route.tier_project == tier_project else None
    current = unless_gone(api.task, tier_task) if tier_task is not None else None
    if current is None:
        existing = api.find_tasks(tier_project, SOURCE_FIELD, task)  # a retry after an import that went through
        current = existing[0] if existing else None
    if current is not None:
        tier_task = int(current["id"])
        data = {**(current.get("data") or {}), "assigned_to": email or ""}
        if current.get("data") != data:
            api.replace_task_data(tier_task, data)
        if current.get("is_labeled"):  # its annotator answered: open it for the next one
            api.set_overlap(tier_task, int(current.get("total_annotations") or 0) + 1)
    else:
        info = ctx.store.task_info(project, task)
        data = dict(info.data) if info else dict(api.task(task).get("data") or {})
        data = {k: v for k, v in data.items() if k not in DATA_MANAGER_FIELDS}  # the source's figures, not the copy's
        live = live_submissions(ctx.store.task_submissions(project, task))
        emails = ctx.state.emails([s.annotator for s in live])
        predictions = [{"model_version": f"annotator:{emails.get(s.annotator) or s.annotator}", "score": 1.0,
                        "result": s.result} for s in live]
        tagged = {**data, "assigned_to": email or "", SOURCE_FIELD: task, "crowdgate_source_project": project}
        payload = {"data": tagged,
                   "meta": {"crowdgate": {"source_project": project, "source_task": task, "tier": tier}},
                   "predictions": predictions}
        try:
            tier_task = api.import_tasks(tier_project, [payload])[0]
        except LabelStudioError as exc:
            if exc.status == 404:  # someone deleted the escalation project: the retry makes a new one
                ctx.state.unlink_tier_project(project, tier, tier_project)
                ctx.audit.record("alert", "escalation_project_gone", project, task, [],
                                 f"escalation project {tier_project} for {tier} is gone; a new one will be made")
            raise
    ctx.state.link_tier_task(tier_project, tier_task, task)
    if email and ctx.state.view(tier_project, email) is None:
        ctx.state.set_view(tier_project, email, api.annotator_view(tier_project, email))
    api.close_task(task)  # out of every lower-tier queue of the source project
    return tier_project, tier_task


def write_back(tier_project: int, tier_task: int, unique_id: str, prefix: str = "cg",
               connection: redis.Redis | None = None) -> dict[str, Any]:
    """Copy an escalation project's answer to the source task, on behalf of the annotator who gave it."""
    ctx = Context.of(prefix, connection)
    link = ctx.state.tier_project_link(tier_project)
    sub = ctx.store.submission(tier_project, unique_id)
    source_task = ctx.state.source_task(tier_project, tier_task)
    if link is None or sub is None or source_task is None or sub.was_cancelled:
        ctx.audit.record("action", "write_back_skipped", tier_project, tier_task, [],
                         "nothing to write back (unknown escalation task or answer, or a skip)",
                         {"unique_id": unique_id})
        return {"skipped": True}
    source, _tier = link
    api = labelstudio()
    route = ctx.state.route(source, source_task)
    if route.assigned == sub.annotator:
        # Cleared before writing, so the decision the written answer triggers may reassign at once.
        ctx.state.update_route(source, source_task, assigned=None)
    ctx.state.release(sub.annotator, source, source_task)
    annotation = ctx.state.written_back(tier_project, unique_id)
    extra = {"lead_time": sub.lead_time} if sub.lead_time is not None else {}
    if annotation is not None:
        api.update_annotation(annotation, result=sub.result)
        what = "updated"
    else:
        # An earlier attempt may have written it and died before remembering: look before writing again.
        annotation = next((int(a["id"]) for a in api.annotations(source_task)
                           if user_id(a.get("completed_by")) == sub.annotator and a.get("result") == sub.result), None)
        if annotation is None:
            annotation = int(api.create_annotation(source_task, sub.result, completed_by=sub.annotator, **extra)["id"])
        ctx.state.set_written_back(tier_project, unique_id, annotation)
        what = "created"
    ctx.audit.record("action", "write_back", source, source_task, [sub.annotator],
                     f"answer from escalation project {tier_project} {what} on behalf of {sub.annotator}",
                     {"tier_project": tier_project, "tier_task": tier_task, "annotation": annotation,
                      "unique_id": unique_id})
    return {"annotation": annotation, "source_task": source_task, "what": what}


def finalize(project: int, task: int, version: int, label: str | None, result: list[dict[str, Any]] | None = None,
             reason: str = "", confident: bool = True, decided_by: list[int] | None = None, prefix: str = "cg",
             connection: redis.Redis | None = None) -> dict[str, Any]:
    """Mark ``task`` final: its label in ``meta.crowdgate.final``, closed in the source and escalation queues."""
    ctx = Context.of(prefix, connection)
    route = _claim(ctx, project, task, version, f"final:v{version}", "finalize")
    if route is None:
        return {"skipped": True}
    api = labelstudio()
    current = api.task(task)
    meta = dict(current.get("meta") or {})
    final = {"label": label, "result": result, "reason": reason, "confident": confident,
             "decided_by": decided_by or [], "required_tier": route.required_tier,
             "at": datetime.now(UTC).isoformat()}
    meta["crowdgate"] = {**(meta.get("crowdgate") or {}), "final": final}
    api.patch_task(task, meta=meta, is_labeled=True)
    if route.tier_task is not None:
        api.close_task(route.tier_task)
    if ctx.edition(api, project) == ENTERPRISE:
        api.unassign(project, task)
    if route.assigned is not None:
        ctx.state.release(route.assigned, project, task)
    ctx.state.update_route(project, task, status="final", final_label=label, assigned=None, deadline=None)
    ctx.audit.record("action", "finalize", project, task, decided_by or [], reason, final)
    return {"label": label, "version": version + 1}


def flag_submission(project: int, task: int, annotator: int, unique_id: str, reason: str, prefix: str = "cg",
                    connection: redis.Redis | None = None) -> dict[str, Any]:
    """Record that a submission is left out of counting, and why."""
    ctx = Context.of(prefix, connection)
    fresh = ctx.state.flag_submission(project, unique_id, {"task": task, "annotator": annotator, "reason": reason,
                                                           "at": time.time()})
    if fresh:
        ctx.audit.record("flag", "off_tier_work", project, task, [annotator], reason, {"unique_id": unique_id})
    return {"flagged": fresh}


def apply_tier_change(project: int, annotator: int, action: str, from_tier: str, to_tier: str, version: int,
                      exam_tasks: list[int] | None = None, reason: str = "", prefix: str = "cg",
                      connection: redis.Redis | None = None) -> dict[str, Any]:
    """Apply a promotion, demotion, qualification or failed exam decided at annotator ``version``."""
    ctx = Context.of(prefix, connection)
    policy = ctx.state.policy(project)
    exam_tier = policy.tiers[0].name if policy.qualification is not None else None
    failed = action == AnnotatorAction.FAIL_EXAM
    changed = ctx.state.change_tier(project, annotator, version, to_tier, failed_exam=failed,
                                    exam_tasks=exam_tasks or [], reset_exam=to_tier == exam_tier)
    if not changed:
        ctx.audit.record("action", "tier_change_skipped", project, None, [annotator],
                         f"superseded: annotator moved past v{version}")
        return {"changed": False}
    record = ctx.state.annotator(project, annotator, policy)
    ctx.audit.record("action", action, project, None, [annotator], reason,
                     {"from": from_tier, "to": to_tier, "version": record.version,
                      "exam_attempts": record.exam_attempts, "exam_tasks": exam_tasks or []})
    locked_out = failed and policy.qualification is not None and \
        record.exam_attempts >= 1 + policy.qualification.max_retries
    if locked_out or (action == AnnotatorAction.DEMOTE and to_tier == exam_tier):
        _pause(ctx, project, annotator, reason)
    # A new exam attempt, a pass or a lock-out changes which gold tasks they should be offered.
    exam.request_sync(ctx, project, annotator, record.version)
    return {"changed": True, "tier": to_tier, "version": record.version}


def _pause(ctx: Context, project: int, annotator: int, reason: str) -> None:
    api = labelstudio()
    if ctx.edition(api, project) == ENTERPRISE:
        api.pause(project, annotator, f"crowdgate: {reason}")
        ctx.audit.record("action", "pause", project, None, [annotator], reason, {"edition": ENTERPRISE})
    else:
        ctx.audit.record("action", "pause", project, None, [annotator],
                         f"{reason} (Community has no pause: their labels are left out while in the exam tier)",
                         {"edition": "community"})


def check_deadline(project: int, task: int, version: int, prefix: str = "cg", connection: redis.Redis | None = None,
                   now: float | None = None) -> dict[str, Any]:
    """SLA check of an escalated task (scheduled at its deadline): escalate one tier up, or alert.

    ``now`` (Unix seconds) is the time to check at; the clock's when None.
    """
    ctx = Context.of(prefix, connection)
    route = ctx.state.route(project, task)
    if route.status != "escalated" or route.version != version:
        return {"superseded": True}
    policy = ctx.state.policy(project)
    now = time.time() if now is None else now
    decision = check_sla(TaskState(str(task), required_tier=route.required_tier, escalations=route.escalations,
                                   escalated_at=route.escalated_at), now, policy)
    if decision.action == SlaAction.NONE:
        if route.deadline is not None and route.deadline > now:  # woke early: look again at the deadline
            enqueue_action(ctx.connection, check_deadline, job_id(ctx.prefix, "sla", project, task, f"v{version}",
                                                                  int(route.deadline)),
                           delay=route.deadline - now + 0.5, project=project, task=task, version=version,
                           prefix=ctx.prefix)
        return {"action": "none"}
    assigned = [route.assigned] if route.assigned is not None else []
    ctx.audit.record("decision", f"sla:{decision.action}", project, task, assigned, decision.reason,
                     {**decision.evidence, "tier": decision.tier, "version": version})
    if decision.action == SlaAction.ESCALATE:
        enqueue_action(ctx.connection, escalate, job_id(ctx.prefix, "escalate", project, task, f"v{version}"),
                       project=project, task=task, tier=decision.tier, version=version,
                       escalations=route.escalations + 1, reason=decision.reason, prefix=ctx.prefix)
    elif route.alerted_version != version:
        ctx.audit.record("alert", "sla_breach", project, task, assigned, decision.reason, decision.evidence)
        ctx.state.update_route(project, task, alerted_version=version)
        ctx.state.not_due(project, task)  # alerted once; a human takes it from here
    return {"action": str(decision.action), "tier": decision.tier}


def sweep_deadlines(prefix: str = "cg", connection: redis.Redis | None = None,
                    now: float | None = None) -> dict[str, int]:
    """Check every escalated task past its deadline at ``now`` (the clock's when None): crowdgate-cron's
    backstop for lost scheduled checks."""
    ctx = Context.of(prefix, connection)
    now = time.time() if now is None else now
    checked = 0
    for project, task in ctx.state.due(now):
        route = ctx.state.route(project, task)
        if route.status == "escalated" and route.alerted_version != route.version:
            check_deadline(project, task, route.version, prefix, ctx.connection, now)
            checked += 1
    return {"checked": checked}
