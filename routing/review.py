"""Review on Label Studio Community: the reviewer tier's review project, fed by the sampling rules.

Community has no reviews, so crowdgate builds them from what it has, as it builds escalations:

- **The review project** (:func:`ensure_review_project`), made on demand per source project: the source's label
  config plus a ``crowdgate_review`` Choices control (``accept`` / ``fix`` / ``reject``) on a Text object that
  shows why the task is reviewed and what each annotator answered. A review task carries the source task's data
  and its final label as a prediction the reviewer sees preloaded (``show_collab_predictions``, the project's
  ``model_version``). It is served to one reviewer by their own Data Manager view (``data.assigned_to``), as
  escalation projects are; crowdgate's webhook is copied, so answers come back as events.
- **Feeding** (:func:`feed_review`, an RQ job on the routing queue, enqueued by the router after a task is
  finalised): every finished task is looked at once and picked by :func:`routing.review_sampling.select_for_review`
  with the policy's ``review:`` rates; :func:`send_to_review` imports each pick.
- **Verdicts** (:func:`apply_review`, from the review project's webhook through :func:`after_review_task`):
  ``accept``: the label stands; ``fix`` (or an accept whose label was changed): the reviewer's version becomes the
  final label, is written back to the source task on the reviewer's behalf, and becomes the task's gold answer
  (``Ledger.set_meta_gold`` + rescore), so every original annotation is scored against it: that is what a review
  changes in reliability; ``reject``: the task goes back to the source queue for one more annotator (overlap
  raised, ``is_labeled`` off, its route open again); Label Studio never serves a task to someone who annotated it,
  so the rejected annotators are excluded from it.
- **Acceptance** per annotator (:func:`acceptance`): of their reviewed annotations, the share the reviewer's
  final version matches, with a Wilson interval; for the report, and as evidence beside reliability.

Every step is written to the audit log, like escalations.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
from redis.exceptions import WatchError
from scipy.stats import binomtest

from core.labelstudio import LabelStudioClient, user_id
from qa_hooks.scoring import categorical, label_of
from qa_hooks.similarity import compare_results
from routing.actions import SOURCE_FIELD, candidates
from routing.assignment import Candidate, choose_annotator
from routing.data_manager import FIELDS as DATA_MANAGER_FIELDS
from routing.inputs import live_submissions
from routing.policy import Policy
from routing.review_sampling import (
    AuditCandidate,
    ReviewCandidate,
    review_budget,
    select_for_audit,
    select_for_review,
)
from routing.runtime import FAILED_TTL_S, RESULT_TTL_S, RETRY, Context, enqueue_action, job_id, labelstudio, unless_gone

__all__ = [
    "ACCEPT",
    "FIX",
    "REJECT",
    "REVIEW_CONTROL",
    "REVIEW_MODEL_VERSION",
    "REVIEW_REASON",
    "Acceptance",
    "acceptance",
    "after_review_task",
    "after_routing",
    "apply_review",
    "ensure_review_project",
    "feed_review",
    "llm_disagreement",
    "record_verdict",
    "review_config",
    "review_source",
    "review_status",
    "send_to_review",
    "verdict_of",
]

REVIEW_CONTROL = "crowdgate_review"
REVIEW_REASON = "crowdgate_review_reason"
REVIEW_MODEL_VERSION = "crowdgate-review"
ACCEPT, FIX, REJECT = "accept", "fix", "reject"
# The ML queue's audit job, named rather than imported: routing and ml_backend never import each other.
AUDIT_JOB = "ml_backend.audit.audit_submissions"
FEED_EVERY_S = 10.0  # at most one feed job per project in this window (the next finished task enqueues another)


def review_config(source_config: str) -> str:
    """The review project's label config: the source config, a Text object with the review's context and the
    ``accept`` / ``fix`` / ``reject`` choice."""
    root = ET.fromstring(source_config)
    if root.tag != "View":
        raise ValueError(f"the label config's root must be <View>, got <{root.tag}>")
    header = ET.SubElement(root, "Header")
    header.set("value", "crowdgate review: accept the label, fix it (change it above, then choose fix) or reject "
                        "it (another annotator labels the task)")
    text = ET.SubElement(root, "Text")
    text.set("name", REVIEW_REASON)
    text.set("value", f"${REVIEW_REASON}")
    choices = ET.SubElement(root, "Choices")
    for key, value in (("name", REVIEW_CONTROL), ("toName", REVIEW_REASON), ("choice", "single"),
                       ("required", "true"), ("showInline", "true")):
        choices.set(key, value)
    for option in (ACCEPT, FIX, REJECT):
        ET.SubElement(choices, "Choice").set("value", option)
    return ET.tostring(root, encoding="unicode")


def verdict_of(result: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """(the reviewer's choice, the rest of their result: the label as they left it)."""
    choice = label_of(result, REVIEW_CONTROL)
    label = [r for r in result if r.get("from_name") != REVIEW_CONTROL and r.get("to_name") != REVIEW_REASON]
    return (choice if choice in (ACCEPT, FIX, REJECT) else None), label


# -- state ----------------------------------------------------------------------------------------------------


def review_source(ctx: Context, project: int) -> int | None:
    """The source project when ``project`` is a review project crowdgate made."""
    raw = ctx.connection.hget(ctx.keys.review_projects(), project)
    return int(raw) if raw else None


def _review_project(ctx: Context, project: int) -> int | None:
    raw = ctx.connection.hget(ctx.keys.review(project), "project")
    return int(raw) if raw else None


def _item(ctx: Context, project: int, task: int) -> dict[str, Any] | None:
    raw = ctx.connection.hget(ctx.keys.review_items(project), task)
    return json.loads(raw) if raw else None


def _set_item(ctx: Context, project: int, task: int, item: dict[str, Any]) -> None:
    ctx.connection.hset(ctx.keys.review_items(project), task, json.dumps(item))


@dataclass(frozen=True)
class Acceptance:
    """An annotator's review record: ``accepted`` of ``reviewed``, the share and its 90 % Wilson interval."""

    annotator: int
    reviewed: int
    accepted: int
    score: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def acceptance(connection: redis.Redis, project: int, prefix: str = "cg") -> dict[int, Acceptance]:
    """Per-annotator acceptance in ``project`` (accepted / reviewed, with its interval)."""
    ctx = Context(connection, prefix)
    raw = {k.decode(): int(v) for k, v in connection.hgetall(ctx.keys.review_acceptance(project)).items()}
    people = sorted({int(k.split(":")[0]) for k in raw})
    out: dict[int, Acceptance] = {}
    for a in people:
        n, k = raw.get(f"{a}:reviewed", 0), raw.get(f"{a}:accepted", 0)
        if n:
            ci = binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson")
            out[a] = Acceptance(a, n, k, k / n, float(ci.low), float(ci.high))
        else:
            out[a] = Acceptance(a, 0, 0, None, None, None)
    return out


def review_status(connection: redis.Redis, project: int, prefix: str = "cg") -> dict[str, Any]:
    """The review queue of ``project``: its review project, tasks looked at, items by rule and by verdict."""
    ctx = Context(connection, prefix)
    head = {k.decode(): v.decode() for k, v in connection.hgetall(ctx.keys.review(project)).items()}
    items = [json.loads(v) for v in connection.hvals(ctx.keys.review_items(project))]
    by_rule: dict[str, int] = {}
    by_verdict: dict[str, int] = {}
    for item in items:
        by_rule[item["rule"]] = by_rule.get(item["rule"], 0) + 1
        verdict = item.get("verdict") or "waiting"
        by_verdict[verdict] = by_verdict.get(verdict, 0) + 1
    random_done = [i for i in items if i["rule"] == "random" and i.get("verdict")]
    wrong = sum(1 for i in random_done if i["verdict"] in (FIX, REJECT))
    estimate = None
    if random_done:
        ci = binomtest(wrong, len(random_done)).proportion_ci(confidence_level=0.9, method="wilson")
        estimate = {"reviewed": len(random_done), "errors": wrong, "error_rate": wrong / len(random_done),
                    "low": float(ci.low), "high": float(ci.high)}
    return {"project": project, "review_project": int(head["project"]) if head.get("project") else None,
            "considered": int(head.get("considered", 0)), "budget_picked": int(head.get("budget_picked", 0)),
            "items": len(items), "by_rule": by_rule, "by_verdict": by_verdict, "error_rate_estimate": estimate}


# -- the review project ------------------------------------------------------------------------------------------


def ensure_review_project(ctx: Context, api: LabelStudioClient, project: int) -> int:
    """The review project of ``project``, created once (see the module docstring)."""
    found = _review_project(ctx, project)
    if found is not None:
        return found
    with ctx.connection.lock(ctx.keys.review_lock(project), timeout=120, blocking_timeout=60):
        found = _review_project(ctx, project)
        if found is not None:
            return found
        source = api.project(project)
        title = f"{source.get('title', project)}"[:33] + " · review"
        review_project = api.create_project(
            title, review_config(source["label_config"]), maximum_annotations=1, show_collab_predictions=True,
            model_version=REVIEW_MODEL_VERSION,
            description=f"crowdgate: review of project {project}'s finished tasks (accept, fix or reject)")
        hooks = [h for h in api.webhooks(project) if h.get("project", project) == project
                 and str(h.get("url", "")).rstrip("/").endswith("/hooks/labelstudio")]
        for hook in hooks[:1]:
            api.create_webhook(review_project, hook["url"], hook.get("headers") or {})
        pipe = ctx.connection.pipeline()
        pipe.hset(ctx.keys.review(project), "project", review_project)
        pipe.hset(ctx.keys.review_projects(), review_project, project)
        pipe.execute()
        ctx.audit.record("action", "create_review_project", project, None, [],
                         f"review project {review_project}", {"review_project": review_project,
                                                              "webhook": bool(hooks)})
        if not hooks:
            ctx.audit.record("alert", "no_webhook", project, None, [],
                             f"project {project} has no crowdgate webhook to copy: verdicts in review project "
                             f"{review_project} will not come back until one is added")
        return review_project


def _reviewers(ctx: Context, policy: Policy, project: int) -> list[Candidate]:
    """The reviewer tier and above, as escalation picks its people (a flagged reviewer is not chosen)."""
    tier = policy.review.tier
    return [] if tier is None else candidates(ctx, policy, project, tier)


def _new_annotators(ctx: Context, policy: Policy, project: int, annotators: list[int]) -> set[int]:
    """Annotators still inside their first ``new_annotator_tasks`` finished tasks since qualifying (counted as
    the feed looks at their tasks)."""
    n = policy.review.new_annotator_tasks
    if n <= 0 or not annotators:
        return set()
    tiers = ctx.state.tiers(project)
    first = policy.first_labeling_tier
    counts = ctx.connection.hmget(ctx.keys.review_newcomers(project), annotators)
    return {a for a, c in zip(annotators, counts, strict=True)
            if tiers.get(a, policy.tiers[0].name) == first and int(c or 0) < n}


def _llm_disagreements(ctx: Context, project: int, unique_ids: list[str]) -> list[str]:
    if not unique_ids:
        return []
    reasons = []
    for raw in ctx.connection.hmget(ctx.keys.llm_audit(project), unique_ids):
        verdict = json.loads(raw) if raw else None
        if verdict and verdict.get("follows_guideline") is False:
            reasons.append(str(verdict.get("reason") or "no reason given"))
    return reasons


def feed_review(project: int, prefix: str = "cg", connection: redis.Redis | None = None,
                seed: int | None = None, scan_all: bool = False) -> dict[str, Any]:
    """Look at the tasks finalised since the last feed (``scan_all``: every task of the project, e.g. those
    finished before review was turned on) that were not looked at yet, and send the sampled ones to review."""
    ctx = Context.of(prefix, connection)
    policy = ctx.state.policy(project)
    rules = policy.review
    if rules.tier is None:
        return {"skipped": "review is off (review.tier is null)"}
    if not _reviewers(ctx, policy, project):
        return {"skipped": f"nobody is in the {rules.tier} tier or above"}
    pending_key = ctx.keys.review_pending(project)
    pending = sorted(int(t) for t in ctx.connection.smembers(pending_key))
    tasks = sorted(set(ctx.store.tasks(project)) | set(pending)) if scan_all else pending
    routes = ctx.state.routes(project, tasks)
    finals = [t for t in tasks if routes[t].status == "final"]
    if finals:  # the others (their finalize job still queued, or escalated meanwhile) wait for the next feed
        ctx.connection.srem(pending_key, *finals)
    if not finals:
        return {"considered": 0, "budget": 0, "picked": []}
    gold = set(ctx.ledger.gold_tasks(project))
    finals = [t for t in finals if t not in gold]  # gold items test annotators; a review adds nothing there
    # Marked as looked at before the LLM verdicts are read, each task by exactly one feed: a verdict landing
    # after the read finds the task marked, and llm_disagreement sends it (routing.review's one send job id).
    marking = ctx.connection.pipeline(transaction=False)
    for t in finals:
        marking.sadd(ctx.keys.review_considered(project), t)
    fresh = [t for t, added in zip(finals, marking.execute() if finals else [], strict=True) if added]
    candidates: list[ReviewCandidate] = []
    newcomer_counts: dict[int, int] = {}
    for task in fresh:
        live = live_submissions(ctx.store.task_submissions(project, task))
        score = ctx.ledger.task_score(project, task)
        agreement = score.get("agreement")
        people = [s.annotator for s in live]
        new = _new_annotators(ctx, policy, project, people)
        for a in people:
            if a in new:
                newcomer_counts[a] = newcomer_counts.get(a, 0) + 1
        reasons = _llm_disagreements(ctx, project, [s.unique_id for s in live]) if rules.llm_disagreements else []
        candidates.append(ReviewCandidate(str(task), agreement if isinstance(agreement, float) else None,
                                          "; ".join(reasons) or None, tuple(str(a) for a in sorted(new))))
    head = ctx.connection.hgetall(ctx.keys.review(project))
    considered = int(head.get(b"considered", 0)) + len(fresh)
    budget = review_budget(rules.rate, considered, int(head.get(b"budget_picked", 0)))
    rng = np.random.default_rng(seed if seed is not None else [project, considered])
    picks = select_for_review(candidates, budget, random_share=rules.random_share, rng=rng)
    by_budget = sum(1 for p in picks if p.rule in ("random", "low_agreement"))
    pipe = ctx.connection.pipeline()
    pipe.hincrby(ctx.keys.review(project), "considered", len(fresh))
    pipe.hincrby(ctx.keys.review(project), "budget_picked", by_budget)
    for a, n in newcomer_counts.items():
        pipe.hincrby(ctx.keys.review_newcomers(project), a, n)
    pipe.execute()
    for pick in picks:
        ctx.audit.record("decision", f"review:{pick.rule}", project, int(pick.item), [], pick.reason, pick.evidence)
        enqueue_action(ctx.connection, send_to_review, job_id(ctx.prefix, "review", project, pick.item),
                       project=project, task=int(pick.item), rule=pick.rule, reason=pick.reason, prefix=ctx.prefix)
    return {"considered": len(fresh), "budget": budget, "picked": [(p.item, p.rule) for p in picks]}


def _context_text(ctx: Context, rule: str, reason: str, final_label: str | None, live: list[Any]) -> str:
    emails = ctx.state.emails([s.annotator for s in live])
    lines = [f"Why: {reason} ({rule}).", f"Final label under review: {final_label or '(see the preloaded answer)'}."]
    for s in live:
        shown = json.dumps([r.get("value") for r in s.result], ensure_ascii=False)[:200]
        lines.append(f"{emails.get(s.annotator) or s.annotator}: {shown}")
    return "\n".join(lines)


def send_to_review(project: int, task: int, rule: str, reason: str, prefix: str = "cg",
                   connection: redis.Redis | None = None) -> dict[str, Any]:
    """Import a finished task into the review project, assigned to a reviewer (their own view)."""
    ctx = Context.of(prefix, connection)
    existing = _item(ctx, project, task)
    if existing is not None and not existing.get("verdict"):
        return {"skipped": True, "review_task": existing.get("review_task")}
    policy = ctx.state.policy(project)
    api = labelstudio()
    route = ctx.state.route(project, task)
    live = live_submissions(ctx.store.task_submissions(project, task))
    ctx.emails(api, [s.annotator for s in live] + list(ctx.state.tiers(project)))
    candidates = [c for c in _reviewers(ctx, policy, project) if c.email]
    choice = choose_annotator(candidates, policy, policy.review.tier or policy.tiers[-1].name,
                              exclude={s.annotator for s in live}, now=time.time(),
                              active_within=ctx.settings.active_within_s)
    reviewer = choice.annotator_id
    email = ctx.state.emails([reviewer])[reviewer] if reviewer is not None else None
    ctx.audit.record("decision", "assign_reviewer", project, task, [reviewer] if reviewer else [], choice.reason,
                     choice.evidence)
    if reviewer is None:
        ctx.audit.record("alert", "no_reviewer", project, task, [], choice.reason, {"rule": rule})
    review_project = ensure_review_project(ctx, api, project)
    current = api.task(task)
    final = ((current.get("meta") or {}).get("crowdgate") or {}).get("final") or {}
    result = final.get("result") or (live[-1].result if live else [])
    # the source's Data Manager figures would go stale in the copy, which the job never updates
    data = {k: v for k, v in (current.get("data") or {}).items() if k not in DATA_MANAGER_FIELDS}
    tagged = {**data, "assigned_to": email or "", SOURCE_FIELD: task, "crowdgate_source_project": project,
              REVIEW_REASON: _context_text(ctx, rule, reason, route.final_label, live)}
    found = api.find_tasks(review_project, SOURCE_FIELD, task)  # a retry after an import that went through
    open_ones = [t for t in found if not t.get("is_labeled")]
    if open_ones:
        review_task = int(open_ones[0]["id"])
    else:
        review_task = api.import_tasks(review_project, [{
            "data": tagged, "meta": {"crowdgate": {"source_project": project, "source_task": task, "rule": rule}},
            "predictions": [{"model_version": REVIEW_MODEL_VERSION, "score": 1.0, "result": result}]}])[0]
    ctx.state.link_tier_task(review_project, review_task, task)
    if email and ctx.state.view(review_project, email) is None:
        ctx.state.set_view(review_project, email, api.annotator_view(review_project, email))
    if reviewer is not None:
        ctx.state.assign(reviewer, review_project, review_task)
    item = {"review_task": review_task, "review_project": review_project, "rule": rule, "reason": reason,
            "reviewer": reviewer, "reviewed_result": result, "reviewed_label": route.final_label,
            "at": time.time(), "verdict": None}
    _set_item(ctx, project, task, item)
    ctx.audit.record("action", "send_to_review", project, task, [reviewer] if reviewer else [], reason,
                     {"review_project": review_project, "review_task": review_task, "rule": rule})
    return item



def llm_disagreement(project: int, task: int, reason: str, prefix: str = "cg",
                     connection: redis.Redis | None = None) -> dict[str, Any]:
    """The LLM audit disagreed with a human label on ``task`` (``ml_backend.audit`` enqueues this by name): a
    task the feed has already passed over goes to review now; one not finished yet waits for the feed, which
    reads the verdict."""
    ctx = Context.of(prefix, connection)
    policy = ctx.state.policy(project)
    if policy.review.tier is None or not policy.review.llm_disagreements:
        return {"skipped": "review of LLM disagreements is off"}
    considered = bool(ctx.connection.sismember(ctx.keys.review_considered(project), task))
    if not considered or _item(ctx, project, task) is not None:
        return {"skipped": "the feed will see it" if not considered else "already reviewed or waiting"}
    why = f"the LLM audit disagrees: {reason}"
    ctx.audit.record("decision", "review:llm_disagrees", project, task, [], why, {})
    job = enqueue_action(ctx.connection, send_to_review, job_id(ctx.prefix, "review", project, task),
                         project=project, task=task, rule="llm_disagrees", reason=why, prefix=ctx.prefix)
    return {"enqueued": job}

# -- verdicts -----------------------------------------------------------------------------------------------------


def after_review_task(ctx: Context, review_project: int, source: int, review_task: int, summary: dict) -> None:
    """An answer (or a skip) in a review project: enqueue applying each new verdict once."""
    verdicts = ctx.keys.review_verdicts(review_project)
    for sub in ctx.store.task_submissions(review_project, review_task):
        if sub.ground_truth or ctx.connection.hexists(verdicts, sub.unique_id):
            continue
        if sub.was_cancelled:
            ctx.audit.record("alert", "review_skipped", source, ctx.state.source_task(review_project, review_task),
                             [sub.annotator], f"reviewer {sub.annotator} skipped review task {review_task}")
            continue
        job = ctx.enqueue(apply_review, job_id(ctx.prefix, "verdict", review_project, sub.unique_id),
                          review_project=review_project, review_task=review_task, unique_id=sub.unique_id,
                          prefix=ctx.prefix)
        if job:
            summary["enqueued"].append(job)


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]], label_config: str) -> bool:
    score = compare_results(a, b, label_config)
    return score is not None and score >= 0.999


def apply_review(review_project: int, review_task: int, unique_id: str, prefix: str = "cg",
                 connection: redis.Redis | None = None) -> dict[str, Any]:
    """Apply a reviewer's verdict to the source task (see the module docstring), once."""
    ctx = Context.of(prefix, connection)
    source = review_source(ctx, review_project)
    sub = ctx.store.submission(review_project, unique_id)
    task = ctx.state.source_task(review_project, review_task)
    if source is None or sub is None or task is None or sub.was_cancelled:
        ctx.audit.record("action", "review_skipped", review_project, review_task, [],
                         "nothing to apply (unknown review task or answer, or a skip)", {"unique_id": unique_id})
        return {"skipped": True}
    item = _item(ctx, source, task) or {}
    config = ctx.store.project_info(source).get("label_config") or "<View/>"
    choice, fixed = verdict_of(sub.result)
    reviewed = item.get("reviewed_result") or []
    changed = bool(fixed) and not _same(fixed, reviewed, config)
    verdict = choice or (FIX if changed else ACCEPT)
    note = ""
    if verdict == ACCEPT and changed:
        verdict, note = FIX, "accepted with a changed label: applied as a fix"
    elif verdict == FIX and not changed:
        verdict, note = ACCEPT, "fix without a changed label: applied as an accept"
    api = labelstudio()
    reviewer = sub.annotator
    live = live_submissions(ctx.store.task_submissions(source, task))
    truth = fixed if verdict == FIX else reviewed
    cat = categorical(config)
    label = label_of(truth, cat.control) if cat else None
    outcome: dict[str, Any] = {"verdict": verdict, "reviewer": reviewer, "source_task": task, "note": note}
    current = api.task(task)
    meta = dict(current.get("meta") or {})
    crowd = dict(meta.get("crowdgate") or {})
    crowd["review"] = {"verdict": verdict, "reviewer": reviewer, "rule": item.get("rule"),
                       "at": datetime.now(UTC).isoformat(), "review_task": review_task}
    if verdict == FIX:
        # The fix is the task's answer from now on: gold for scoring the original annotations against it.
        ctx.ledger.set_meta_gold(source, task, fixed)
        written = ctx.state.written_back(review_project, unique_id)
        if written is None:
            # An earlier attempt may have written it and died before remembering: look before writing again.
            mine = next((int(a["id"]) for a in api.annotations(task)
                         if user_id(a.get("completed_by")) == reviewer and a.get("result") == fixed), None)
            written = mine if mine is not None else int(api.create_annotation(task, fixed, completed_by=reviewer)["id"])
            ctx.state.set_written_back(review_project, unique_id, written)
        final = {**(crowd.get("final") or {}), "label": label, "result": fixed, "confident": True,
                 "reason": f"fixed in review by {reviewer}", "decided_by": [reviewer],
                 "at": datetime.now(UTC).isoformat()}
        crowd["final"] = final
        meta["crowdgate"] = crowd
        api.patch_task(task, meta=meta, is_labeled=True)
        ctx.state.update_route(source, task, final_label=label)
        ctx.ledger.rescore(source, task)
        outcome["annotation"] = written
    elif verdict == REJECT:
        route = ctx.state.route(source, task)
        if route.status == "final":
            claimed = ctx.state.claim(source, task, route.version, f"review-reject:{unique_id}")
            if claimed is not None:
                ctx.state.update_route(source, task, status="open", final_label=None)
        crowd["rejected"] = {**(crowd.get("final") or {}), "by": reviewer}
        crowd.pop("final", None)
        meta["crowdgate"] = crowd
        api.patch_task(task, meta=meta)
        done = int(current.get("total_annotations") or 0)
        api.set_overlap(task, done + 1)
        ctx.state.update_route(source, task, overlap=done + 1)
        outcome["overlap"] = done + 1
    else:
        meta["crowdgate"] = crowd
        api.patch_task(task, meta=meta)
    unless_gone(api.close_task, review_task)
    ctx.state.release(reviewer, review_project, review_task)
    # Acceptance: an annotation is accepted when it matches the label the review settled on; on a reject,
    # the annotations giving the rejected label are counted as reviewed and not accepted.
    judged: dict[int, bool] = {}
    for s in live:
        if s.annotator == reviewer:
            continue
        matches = _same(s.result, truth, config)
        if verdict == REJECT:
            if matches:
                judged[s.annotator] = False
        else:
            judged[s.annotator] = matches
    record_verdict(ctx, review_project, unique_id, source, judged, {**outcome, "judged": judged})
    _set_item(ctx, source, task, {**item, "verdict": verdict, "reviewer": reviewer, "verdict_at": time.time()})
    ctx.audit.record("action", f"review:{verdict}", source, task, [reviewer, *judged],
                     note or f"{verdict} by reviewer {reviewer}",
                     {**outcome, "judged": {str(a): ok for a, ok in judged.items()}, "label": label})
    return {**outcome, "judged": judged, "label": label}


def record_verdict(ctx: Context, review_project: int, unique_id: str, source: int, judged: dict[int, bool],
                record: dict[str, Any]) -> bool:
    """Record the verdict and move the acceptance counts in one transaction, unless it was recorded before."""
    verdicts = ctx.keys.review_verdicts(review_project)
    counts = ctx.keys.review_acceptance(source)
    with ctx.connection.pipeline() as pipe:
        while True:
            try:
                pipe.watch(verdicts)
                if pipe.hexists(verdicts, unique_id):
                    pipe.reset()
                    return False
                pipe.multi()
                pipe.hset(verdicts, unique_id, json.dumps(record, default=str))
                for a, ok in judged.items():
                    pipe.hincrby(counts, f"{a}:reviewed", 1)
                    pipe.hincrby(counts, f"{a}:accepted", int(ok))
                pipe.execute()
                return True
            except WatchError:
                continue


# -- from the routing path -------------------------------------------------------------------------------------


def after_routing(ctx: Context, policy: Policy, project: int, tasks: list[int], summary: dict) -> None:
    """After a source project's event was routed: the review feed when a task was finalised, and the LLM
    audit of the tasks' new human submissions (``review.llm_audit_rate``)."""
    rules = policy.review
    if rules.tier is None:
        return
    finals = [int(d["task"]) for d in summary.get("decisions", []) if d.get("action") == "final" and "task" in d]
    if finals and not ctx.dry_run:
        ctx.connection.sadd(ctx.keys.review_pending(project), *finals)
        window = int(time.time() // FEED_EVERY_S)
        job = ctx.enqueue(feed_review, job_id(ctx.prefix, "reviewfeed", project, window), project=project,
                          prefix=ctx.prefix, delay=FEED_EVERY_S)
        if job:
            summary["enqueued"].append(job)
    _enqueue_audit(ctx, policy, project, tasks, summary)


def _enqueue_audit(ctx: Context, policy: Policy, project: int, tasks: list[int], summary: dict) -> None:
    rules = policy.review
    if rules.llm_audit_rate <= 0 or not tasks or ctx.dry_run:
        return  # in dry-run nothing is marked either: once a policy is bound, these submissions can be sampled
    considered = ctx.keys.llm_audit_considered(project)
    candidates: list[AuditCandidate] = []
    for task in tasks:
        score = ctx.ledger.task_score(project, task)
        agreement = score.get("agreement") if isinstance(score.get("agreement"), float) else None
        live = live_submissions(ctx.store.task_submissions(project, task))
        if not live:
            continue
        fresh = [s for s, seen in zip(live, ctx.connection.smismember(considered, [s.unique_id for s in live]),
                                      strict=True) if not seen]
        if not fresh:
            continue
        new = _new_annotators(ctx, policy, project, [s.annotator for s in fresh])
        flagged = ctx.flagged(project, [s.annotator for s in fresh])
        candidates += [AuditCandidate(s.unique_id, agreement, s.annotator in flagged, s.annotator in new)
                       for s in fresh]
    if not candidates:
        return
    ctx.connection.sadd(considered, *[c.unique_id for c in candidates])
    chosen = select_for_audit(candidates, rules.llm_audit_rate, low_agreement_below=rules.low_agreement_below,
                              salt=str(project))
    if not chosen:
        return
    from rq import Queue  # the ML queue takes the audit job by name (ml_backend is not imported here)

    ids = [c.unique_id for c, _ in chosen]
    why = {c.unique_id: r for c, r in chosen}
    jid = job_id(ctx.prefix, "llmaudit", project, ids[0], len(ids))
    Queue(ctx.settings.ml_queue, connection=ctx.connection).enqueue(
        AUDIT_JOB, kwargs={"project": project, "unique_ids": ids, "reasons": why, "prefix": ctx.prefix},
        job_id=jid, retry=RETRY, result_ttl=RESULT_TTL_S, failure_ttl=FAILED_TTL_S, description=jid)
    summary["enqueued"].append(jid)
