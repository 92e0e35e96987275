"""Pausing annotators on Label Studio Community, with evidence, and undoing it cleanly.

Community cannot block a user, so a pause is what crowdgate stops doing for them and counting from them:

- their labels leave every consensus, truth-inference model and stopping rule (the annotator is put in the
  routing flag hash, ``Keys.flagged``, which every one of those reads), and the tasks they touched are routed
  again (:func:`requeue`), so routing asks others for the labels that no longer count;
- no routed tasks (assignment skips flagged annotators), no exam or gold offers (``sync_gold_offer`` offers a
  paused annotator nothing and takes back what they were offered, which empties their exam view), and the
  escalation tasks assigned to them are reassigned (their queue views empty);
- on Enterprise, Label Studio's own pause API is called too (reason ``CUSTOM_SCRIPT``, the ``verbose_reason``
  the annotator sees), and lifted on :func:`unpause`.

:func:`unpause` and :func:`clear_flag` undo it: the hand flag they had before (if any) comes back, their labels
count again, their tasks are routed again, and the routing decisions return to what they would have been had
the pause never happened (``tests/test_fraud_pausing.py`` checks it).

Each annotator has at most one fraud status per project (``Keys.fraud_status``): ``review`` (flagged for a
person to look at; their labels still count), ``paused``, or ``cleared`` (an admin's verdict: the automatic
evaluation leaves them alone until ``fraud.recheck_after`` more submissions). Every change is an audit entry
with its evidence. Admin actions (``crowdgate fraud ...``, the dashboard) and the automatic evaluation
(:func:`evaluate_project`, run by ``crowdgate-cron`` beside the signals refresh) go through the same functions.
Each needs only Redis: the Label Studio side effects are routing jobs (RQ retries them).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from core.keys import Keys
from core.labelstudio import ENTERPRISE
from qa_hooks.fraud import FraudRisk, Risk
from qa_hooks.fraud.records import choice_control, project_answers
from qa_hooks.scoring import label_of
from routing.actions import reassign
from routing.audit import AuditLog
from routing.exam import sync_gold_offer
from routing.router import after_scoring
from routing.runtime import Context, enqueue_action, job_id, labelstudio
from routing.state import RoutingState

__all__ = [
    "PAUSED_FLAG",
    "STATUSES",
    "FraudStatus",
    "clear_flag",
    "evaluate_all",
    "evaluate_project",
    "flag_for_review",
    "list_flagged",
    "pause",
    "paused_annotators",
    "requeue",
    "status_of",
    "statuses",
    "sync_labelstudio_pause",
    "touched_tasks",
    "unpause",
]

log = logging.getLogger(__name__)

STATUSES = ("review", "paused", "cleared")
# The routing flag a pause writes (its reason follows): what every consensus and assignment already honours.
PAUSED_FLAG = "paused"


@dataclass(frozen=True)
class FraudStatus:
    """An annotator's standing in one project's fraud review.

    ``submissions``: how many live submissions they had when the status was set (a cleared annotator is judged
    again only on what came after). ``held_flag``: the hand flag they had before a pause, restored on undo.
    """

    annotator: int
    status: str
    reason: str
    by: str
    at: float
    risk: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    submissions: int = 0
    held_flag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, annotator: int, raw: bytes | str) -> FraudStatus:
        data = json.loads(raw)
        data["annotator"] = annotator
        return cls(**data)


def _encode(status: FraudStatus) -> str:
    data = status.to_dict()
    data.pop("annotator")
    return json.dumps(data, separators=(",", ":"), default=str)


def statuses(connection: redis.Redis, project: int, prefix: str = "cg") -> dict[int, FraudStatus]:
    """Every annotator's fraud status in ``project``."""
    raw = connection.hgetall(Keys(prefix).fraud_status(project))
    return {int(a): FraudStatus.from_json(int(a), v) for a, v in raw.items()}


def status_of(connection: redis.Redis, project: int, annotator: int, prefix: str = "cg") -> FraudStatus | None:
    raw = connection.hget(Keys(prefix).fraud_status(project), annotator)
    return FraudStatus.from_json(annotator, raw) if raw else None


def _write(connection: redis.Redis, project: int, status: FraudStatus, prefix: str) -> None:
    connection.hset(Keys(prefix).fraud_status(project), status.annotator, _encode(status))


def _submissions(ctx: Context, project: int, annotator: int) -> int:
    return ctx.store.annotator_submission_count(project, annotator)


def flag_for_review(connection: redis.Redis, project: int, annotator: int, reason: str, *,
                    evidence: Mapping[str, Any] | None = None, risk: float | None = None, by: str = "admin",
                    prefix: str = "cg") -> dict[str, Any]:
    """Flag ``annotator`` for a person to review (listed with its evidence; their labels still count).

    A paused annotator stays paused. Returns ``{"status", "changed"}``.
    """
    ctx = Context.of(prefix, connection)
    before = status_of(connection, project, annotator, prefix)
    if before is not None and before.status in ("review", "paused"):
        return {"status": before.status, "changed": False}
    status = FraudStatus(annotator, "review", reason, by, time.time(), risk, dict(evidence or {}),
                         _submissions(ctx, project, annotator))
    _write(connection, project, status, prefix)
    ctx.audit.record("flag", "fraud_review", project, None, [annotator], reason,
                     {"by": by, "risk": risk, **dict(evidence or {})})
    return {"status": "review", "changed": True}


def pause(connection: redis.Redis, project: int, annotator: int, reason: str, *,
          evidence: Mapping[str, Any] | None = None, risk: float | None = None, by: str = "admin",
          requeue_tasks: bool = True, prefix: str = "cg") -> dict[str, Any]:
    """Pause ``annotator`` in ``project`` (see the module doc for what that does on Community and Enterprise).

    Idempotent: pausing a paused annotator changes nothing. ``requeue_tasks``: route the tasks they touched
    again now (their labels no longer count there). Returns ``{"status", "changed", "enqueued"}``.
    """
    ctx = Context.of(prefix, connection)
    before = status_of(connection, project, annotator, prefix)
    if before is not None and before.status == "paused":
        return {"status": "paused", "changed": False, "enqueued": []}
    held = ctx.state.flagged(project).get(annotator)
    status = FraudStatus(annotator, "paused", reason, by, time.time(), risk, dict(evidence or {}),
                         _submissions(ctx, project, annotator), held)
    pipe = connection.pipeline()
    pipe.hset(ctx.keys.fraud_status(project), annotator, _encode(status))
    pipe.hset(ctx.keys.flagged(project), annotator, f"{PAUSED_FLAG}: {reason}")
    pipe.execute()
    enqueued = _follow_up(ctx, project, annotator, True, reason, requeue_tasks)
    ctx.audit.record("action", "fraud_pause", project, None, [annotator], reason,
                     {"by": by, "risk": risk, "held_flag": held, "enqueued": enqueued, **dict(evidence or {})})
    return {"status": "paused", "changed": True, "enqueued": enqueued}


def unpause(connection: redis.Redis, project: int, annotator: int, reason: str, *, by: str = "admin",
            prefix: str = "cg") -> dict[str, Any]:
    """Lift a pause: their labels count again (the hand flag they had before comes back), their tasks are
    routed again and gold is offered again; the status becomes ``cleared``. Returns ``{"status", "changed",
    "enqueued"}``; ``changed`` False when they were not paused."""
    return _clear(connection, project, annotator, reason, by, prefix, only_paused=True)


def clear_flag(connection: redis.Redis, project: int, annotator: int, reason: str, *, by: str = "admin",
               prefix: str = "cg") -> dict[str, Any]:
    """An admin's verdict that ``annotator`` is fine: a review flag or a pause is lifted (as :func:`unpause`)
    and the automatic evaluation leaves them alone until ``fraud.recheck_after`` more submissions."""
    return _clear(connection, project, annotator, reason, by, prefix, only_paused=False)


def _clear(connection: redis.Redis, project: int, annotator: int, reason: str, by: str, prefix: str,
           only_paused: bool) -> dict[str, Any]:
    ctx = Context.of(prefix, connection)
    before = status_of(connection, project, annotator, prefix)
    if before is None or before.status == "cleared" or (only_paused and before.status != "paused"):
        return {"status": before.status if before else None, "changed": False, "enqueued": []}
    status = FraudStatus(annotator, "cleared", reason, by, time.time(), None,
                         {"was": before.status, "was_reason": before.reason}, _submissions(ctx, project, annotator))
    pipe = connection.pipeline()
    pipe.hset(ctx.keys.fraud_status(project), annotator, _encode(status))
    if before.status == "paused":
        if before.held_flag is not None:
            pipe.hset(ctx.keys.flagged(project), annotator, before.held_flag)
        else:
            pipe.hdel(ctx.keys.flagged(project), annotator)
    pipe.execute()
    enqueued = _follow_up(ctx, project, annotator, False, reason, True) if before.status == "paused" else []
    action = "fraud_unpause" if before.status == "paused" else "fraud_clear"
    ctx.audit.record("action", action, project, None, [annotator], reason,
                     {"by": by, "was": before.status, "was_reason": before.reason,
                      "restored_flag": before.held_flag, "enqueued": enqueued})
    return {"status": "cleared", "changed": True, "enqueued": enqueued}


def list_flagged(connection: redis.Redis, project: int, prefix: str = "cg") -> list[dict[str, Any]]:
    """Annotators under review or paused in ``project`` with their evidence, then those flagged by hand or by
    the scoring side's signals, riskiest first; each ``{"annotator", "status", "reason", "risk", "evidence",
    "by", "at", "submissions"}``."""
    ctx = Context.of(prefix, connection)
    out: list[dict[str, Any]] = []
    known = statuses(connection, project, prefix)
    for status in known.values():
        if status.status in ("review", "paused"):
            row = status.to_dict()
            row.pop("held_flag")
            out.append(row)
    for annotator, why in ctx.state.flagged(project).items():
        if annotator not in known or known[annotator].status == "cleared":
            out.append({"annotator": annotator, "status": "flagged", "reason": why, "risk": None, "evidence": {},
                        "by": "hand", "at": None, "submissions": _submissions(ctx, project, annotator)})
    for annotator, flags in ctx.ledger.flags_from(connection.hgetall(ctx.keys.annotator_flags(project))).items():
        if not any(r["annotator"] == annotator for r in out):
            out.append({"annotator": annotator, "status": "signals", "reason": "; ".join(f.reason for f in flags),
                        "risk": None, "evidence": {f.name: f.evidence for f in flags}, "by": "signals", "at": None,
                        "submissions": _submissions(ctx, project, annotator)})
    order = {"paused": 0, "review": 1, "flagged": 2, "signals": 3}
    return sorted(out, key=lambda r: (order[r["status"]], -(r["risk"] or 0.0), r["annotator"]))


def touched_tasks(ctx: Context, project: int, annotator: int) -> list[int]:
    """The tasks ``annotator`` has a live submission (or skip) on."""
    return sorted({s.task for s in ctx.store.annotator_log(project, annotator)})


def requeue(connection: redis.Redis, project: int, annotator: int, reason: str, prefix: str = "cg") -> list[str]:
    """Put the tasks ``annotator`` touched back through routing (one routing job), so that where their label
    no longer counts others are asked for it; returns the enqueued job ids."""
    ctx = Context.of(prefix, connection)
    return _requeue(ctx, project, annotator, reason)


def _requeue(ctx: Context, project: int, annotator: int, reason: str) -> list[str]:
    tasks = touched_tasks(ctx, project, annotator)
    if not tasks:
        return []
    seq = ctx.connection.hincrby(ctx.keys.annotator_record(project, annotator), "fraud_seq", 1)
    job = enqueue_action(ctx.connection, after_scoring, job_id(ctx.prefix, "requeue", project, annotator, seq),
                         result={"project": project, "tasks": tasks, "annotators": [], "action": "FRAUD_REQUEUE",
                                 "reason": reason},
                         prefix=ctx.prefix)
    return [job] if job else []


def _follow_up(ctx: Context, project: int, annotator: int, paused: bool, reason: str, requeue_tasks: bool) -> list[str]:
    """The Label Studio side of a pause or its undo, as routing jobs: gold offers synced (none while paused),
    the escalation tasks assigned to them reassigned, the tasks they touched routed again, Enterprise's pause."""
    seq = ctx.connection.hincrby(ctx.keys.annotator_record(project, annotator), "fraud_seq", 1)
    tag = f"{'pause' if paused else 'unpause'}{seq}"
    jobs = [enqueue_action(ctx.connection, sync_gold_offer, job_id(ctx.prefix, "fraudgold", project, annotator, tag),
                           project=project, annotator=annotator, reason=f"{tag}: {reason}", prefix=ctx.prefix),
            enqueue_action(ctx.connection, sync_labelstudio_pause,
                           job_id(ctx.prefix, "lspause", project, annotator, tag), project=project,
                           annotator=annotator, paused=paused, reason=reason, prefix=ctx.prefix)]
    if paused:
        for member in ctx.connection.smembers(ctx.keys.open_tasks(annotator)):
            p, t = (int(x) for x in member.decode().split(":"))
            route = ctx.state.route(p, t)
            if route.assigned == annotator and route.status == "escalated":
                jobs.append(enqueue_action(ctx.connection, reassign,
                                           job_id(ctx.prefix, "fraudreassign", p, t, f"v{route.version}"),
                                           project=p, task=t, version=route.version,
                                           reason=f"annotator {annotator} paused: {reason}", prefix=ctx.prefix))
    if requeue_tasks:
        jobs += _requeue(ctx, project, annotator, reason)
    return [j for j in jobs if j]


def sync_labelstudio_pause(project: int, annotator: int, paused: bool, reason: str = "", prefix: str = "cg",
                           connection: redis.Redis | None = None) -> dict[str, Any]:
    """Routing job: on Enterprise, pause (reason ``CUSTOM_SCRIPT``) or lift the pause of ``annotator``; on
    Community nothing (crowdgate's own pause is all there is)."""
    ctx = Context.of(prefix, connection)
    api = labelstudio()
    edition = ctx.edition(api, project)
    if edition != ENTERPRISE:
        return {"edition": edition, "changed": False}
    if paused:
        api.pause(project, annotator, f"crowdgate: {reason}", reason="CUSTOM_SCRIPT")
    else:
        for existing in api.pauses(project, annotator):
            if not existing.get("deleted_at") and existing.get("id") is not None:
                api.request("DELETE", f"/api/projects/{project}/members/{annotator}/pauses/{existing['id']}/")
    AuditLog(ctx.connection, prefix).record("action", "enterprise_pause" if paused else "enterprise_unpause",
                                            project, None, [annotator], reason, {"edition": edition})
    return {"edition": edition, "changed": True}


def paused_annotators(state: RoutingState, project: int) -> set[int]:
    """Annotators paused in ``project`` now."""
    return {a for a, s in statuses(state.redis, project, state.prefix).items() if s.status == "paused"}


# -- automatic evaluation ---------------------------------------------------------------------------------


def prelabels(project: int, label_config: str) -> dict[int, str] | None:
    """task -> the ML pre-label's choice, from Label Studio's predictions; None when Label Studio cannot be read
    (the anchoring signal then waits, the others go on)."""
    control, _ = choice_control(label_config)
    if control is None:
        return {}
    try:
        predictions = labelstudio().predictions(project)
    except Exception:  # Label Studio down or not configured: a degraded evaluation, not a failed one
        log.warning("could not read the predictions of project %s; pre-label anchoring skipped", project)
        return None
    out: dict[int, str] = {}
    for p in sorted(predictions, key=lambda p: str(p.get("created_at", ""))):
        label = label_of(p.get("result") or [], control)
        if label is not None and p.get("task") is not None:
            out.setdefault(int(p["task"]), label)  # the first pre-label is the one annotators were shown
    return out


def decide(risk: Risk, status: FraudStatus | None, submissions: int, policy_fraud: Any) -> str | None:
    """``pause``, ``review`` or None for one annotator's risk under the policy's ``fraud:`` section (pure).

    A paused annotator stays paused, one under review is only escalated to a pause, and one an admin cleared is
    judged again only after ``recheck_after`` more submissions.
    """
    if not policy_fraud.enabled or submissions < policy_fraud.min_submissions:
        return None
    if status is not None and status.status == "paused":
        return None
    if status is not None and status.status == "cleared" and submissions - status.submissions < \
            policy_fraud.recheck_after:
        return None
    if policy_fraud.pause_at is not None and risk.risk >= policy_fraud.pause_at:
        return "pause"
    if policy_fraud.review_at is not None and risk.risk >= policy_fraud.review_at and \
            (status is None or status.status == "cleared"):
        return "review"
    return None


def evaluate_project(connection: redis.Redis, project: int, prefix: str = "cg",
                     predictions: Mapping[int, str] | None = None) -> dict[str, Any]:
    """Score every annotator of ``project`` (``qa_hooks.fraud``) and act as its policy's ``fraud:`` section says.

    ``predictions`` (task -> pre-label choice) default to Label Studio's. Returns ``{"project", "risks",
    "paused", "review", "dry_run"}``; every action goes through :func:`pause` / :func:`flag_for_review` with its
    evidence. A project without a bound policy is judged in dry-run, as routing is: the decisions are audited
    (``would_pause``, ``would_review`` in the summary) and nobody is paused.
    """
    ctx = Context.of(prefix, connection)
    policy = ctx.state.policy(project)
    # As routing: until a policy is bound, only the decisions are audited (CROWDGATE_ROUTE_UNBOUND=1 acts anyway).
    ctx.dry_run = not ctx.state.policy_bound(project) and not ctx.settings.route_unbound
    summary: dict[str, Any] = {"project": project, "risks": {}, "paused": [], "review": [], "dry_run": ctx.dry_run}
    if not policy.fraud.enabled:
        return summary
    known = statuses(connection, project, prefix)
    paused = {a for a, st in known.items() if st.status == "paused"}
    if predictions is None:
        predictions = prelabels(project, ctx.store.project_info(project).get("label_config") or "<View/>")
    answers, options = project_answers(ctx.store, ctx.ledger, project, prelabels=predictions, excluded=paused)
    if not answers:
        return summary
    model = FraudRisk(options=options).fit(answers)
    for annotator, theirs in answers.items():
        risk = model.assess(annotator, theirs)
        summary["risks"][annotator] = round(risk.risk, 2)
        action = decide(risk, known.get(annotator), len(theirs), policy.fraud)
        if action is None:
            continue
        evidence = risk.to_dict()
        reason = f"risk {risk.risk:.1f}: {risk.summary}"
        ctx.audit.record("decision", f"fraud:{action}", project, None, [annotator], reason, {**evidence, **ctx.mode})
        if ctx.dry_run:
            summary.setdefault(f"would_{action}", []).append(annotator)
            continue
        if action == "pause":
            pause(connection, project, annotator, reason, evidence=evidence, risk=risk.risk, by="crowdgate",
                  requeue_tasks=policy.fraud.requeue, prefix=prefix)
            summary["paused"].append(annotator)
        else:
            flag_for_review(connection, project, annotator, reason, evidence=evidence, risk=risk.risk,
                            by="crowdgate", prefix=prefix)
            summary["review"].append(annotator)
    return summary


def evaluate_all(prefix: str = "cg", connection: redis.Redis | None = None) -> dict[int, dict[str, Any]]:
    """The cron job (beside the signals refresh): :func:`evaluate_project` for every source project. A project
    that fails is logged and audited; the others go on."""
    ctx = Context.of(prefix, connection)
    out: dict[int, dict[str, Any]] = {}
    for project in ctx.store.projects():
        if ctx.state.tier_project_link(project) is not None:
            continue  # escalation projects follow their source project's annotators
        try:
            out[project] = evaluate_project(ctx.connection, project, prefix)
        except redis.RedisError:
            raise
        except Exception as exc:  # one project's bad data must not stop the others' evaluation
            log.exception("fraud evaluation failed for project %s", project)
            ctx.audit.record("error", "fraud_evaluate", project, reason=f"{type(exc).__name__}: {exc}")
            out[project] = {"project": project, "error": f"{type(exc).__name__}: {exc}"}
    return out
