"""The router run after scoring: decide for one scored event's annotators and tasks, and enqueue the actions.

:func:`after_scoring` runs right after :func:`qa_hooks.jobs.process_event` (see :mod:`crowdgate.pipeline`). It
reads what the scoring side recorded (:class:`~qa_hooks.ledger.Ledger`, :class:`~qa_hooks.store.SubmissionStore`)
and the routing state (:class:`~routing.state.RoutingState`), builds the pure decisions' inputs
(:mod:`routing.inputs`), runs :func:`~routing.decisions.decide_annotator` for the event's annotators and
:func:`~routing.decisions.decide_task` for its tasks, writes every decision to the audit log, and enqueues one
action job (:mod:`routing.actions`) per decision on the ``crowdgate-routing`` queue, plus the gold offers'
sync (:mod:`routing.exam`) after each annotator's event.

A project with no policy bound (``crowdgate-policy set``) is routed in dry-run: its decisions, taken with the
default policy, go to the audit log marked ``dry_run`` and nothing is enqueued, so Label Studio is never changed
behind an admin's back (``CROWDGATE_ROUTE_UNBOUND=1`` acts on unbound projects too).

Each label counts at the tier its author had when routing first saw it (``RoutingState.tiers_at_submission``):
work given below a task's required tier never counts, even after its author is promoted.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import redis
import scipy.stats  # noqa: F401  Ledger.reliability imports it lazily (~1.5 s): pay at worker start, not mid-escalation

from qa_hooks.events import epoch_seconds
from qa_hooks.fit import ProjectFit, load_fit
from qa_hooks.llm_annotator import is_llm_worker, task_answers, trusted_llms
from qa_hooks.scoring import categorical
from routing import exam, review
from routing.actions import (
    SOURCE_FIELD,
    apply_tier_change,
    escalate,
    finalize,
    flag_submission,
    prepare_project,
    reassign,
    set_overlap,
    write_back,
)
from routing.decisions import (
    AnnotatorAction,
    AnnotatorDecision,
    TaskAction,
    TaskDecision,
    TaskState,
    counted_labels,
    decide_annotator,
    decide_task,
)
from routing.inputs import (
    annotator_state,
    label_values,
    live_submissions,
    predicted_difficulty,
    stored_difficulty,
    task_state,
    worker_model,
)
from routing.policy import Policy, StopRule
from routing.runtime import Context, job_id
from routing.snapshot import (
    AnnotatorSnapshot,
    CallReads,
    ProjectSnapshot,
    read_annotators,
    read_tasks,
    touch_and_read_call,
)
from routing.state import AnnotatorRecord, TaskRoute
from routing.stopping import WorkerModel, matched_threshold, models_from_fit

__all__ = ["RoutingError", "after_scoring", "crowd_stop_threshold"]

log = logging.getLogger(__name__)

# How long a project's crowd-matched stop threshold is reused before the annotators' models are read again.


class RoutingError(RuntimeError):
    """Some decisions of an event could not be taken; they are in the audit log and the job retries."""


def crowd_stop_threshold(ctx: Context, policy: Policy, project: int, classes: tuple[str, ...]) -> float | None:
    """The posterior threshold matched to the project's crowd (``overlap.stop.match_overlap``), or None for
    the policy's own threshold (matching off, or fewer than ``match_min_labels`` labels behind the models).

    Computed from the project's Dawid–Skene refit (every annotator's confusion matrix and the class prior; before
    the first refit, from every annotator's ledger record) and cached for ``CROWDGATE_STOP_THRESHOLD_TTL_S``
    seconds, and afresh for each new fit: the crowd's quality moves slowly, and recomputing on every event would not.
    """
    stop = policy.overlap.stop
    if stop.rule != "posterior" or stop.match_overlap is None:
        return None
    overlap = policy.overlap
    fit = project_fit(ctx, project, classes)
    # Paused or hand-flagged annotators are not part of the crowd a stop is matched to (routing.pausing).
    left_out = {str(a) for a in ctx.state.flagged(project)}
    # Nor the LLM's pseudo-annotators: the threshold is matched to the human crowd (qa_hooks.llm_annotator).
    left_out |= {str(w) for w in (fit.workers if fit is not None else ()) if is_llm_worker(w)}
    key = (f"{stop.match_overlap}:{stop.match_lead}:{overlap.min}:{overlap.max}:{stop.min_agreeing}:"
           f"{stop.worker_model}:{stop.prior_accuracy}:{','.join(classes)}:fit{fit.version if fit else '-'}"
           + (f":without{hashlib.sha1(','.join(sorted(left_out)).encode()).hexdigest()[:12]}" if left_out else ""))
    found, cached = ctx.state.stop_threshold(project, key)
    if found:
        return cached
    prior = None
    if fit is not None:  # the refit's worker models and class prior, as the task posteriors use them
        models = list(fit_models(fit, [w for w in fit.workers if str(w) not in left_out], stop).values())
        prior = list(fit.prior)
    else:  # before the first refit: the ledger's records, uniform class prior
        annotators = [a for a in ctx.store.annotators(project) if str(a) not in left_out]
        rels = ctx.ledger.reliabilities(project, annotators) if annotators else {}
        models = [worker_model(rel, None, classes, stop) for rel in rels.values()]
    labels = float(sum(m.n_labels for m in models))
    threshold = None
    if models and labels >= stop.match_min_labels:
        # The class prior the task posteriors this threshold is compared with use; past overlap.max a task
        # leaves this tier, so the simulated rule stops there with its best answer.
        matched = matched_threshold(models, prior, overlap=stop.match_overlap, lead=stop.match_lead,
                                    min_labels=overlap.min, min_agreeing=stop.min_agreeing, max_labels=overlap.max)
        threshold = matched.threshold
        ctx.audit.record("decision", "stop_threshold", project, reason=(
            f"threshold {threshold}: simulated accuracy {matched.accuracy:.3f} with {matched.labels_per_task:.2f} "
            f"labels per task against {matched.fixed_overlap_accuracy:.3f} for a fixed overlap of "
            f"{stop.match_overlap}"), evidence={**asdict(matched), "labels": labels, "annotators": len(models)})
    ctx.state.set_stop_threshold(project, key, threshold, labels, ctx.settings.stop_threshold_ttl_s)
    return threshold


def project_fit(ctx: Context, project: int, classes: tuple[str, ...]) -> ProjectFit | None:
    """The project's stored Dawid–Skene refit (``qa_hooks.refit``) when it is over these classes."""
    fit = load_fit(ctx.store.redis, ctx.prefix, project)
    return fit if fit is not None and fit.classes == tuple(classes) else None


def fit_models(fit: ProjectFit, workers: list[str], stop: StopRule) -> dict[str, WorkerModel]:
    """The stop rule's worker models from the refit: confusion matrices, or one accuracy each with ``one_coin``."""
    models = models_from_fit(fit, workers)
    if stop.worker_model != "one_coin":
        return models
    k = len(fit.classes)
    return {w: WorkerModel.one_coin(min(max(m.accuracy, 1.0 / k + 1e-3), 0.999), k, m.n_labels)
            for w, m in models.items()}


def llm_stop_labels(ctx: Context, policy: Policy, project: int, task: int, fit: ProjectFit
                    ) -> tuple[tuple[tuple[str, str], ...], dict[str, WorkerModel]]:
    """The task's LLM answers that may count toward its stop (``llm.counts_toward_stop``): those of the fit's LLM
    pseudo-annotators whose learnt accuracy reaches ``llm.min_accuracy``, with their models; none when Redis
    cannot say (the stop then rests on the humans alone)."""
    names = [str(w) for w in fit.workers if is_llm_worker(w)]
    models = fit_models(fit, names, policy.overlap.stop) if names else {}
    trusted = sorted(trusted_llms({w: m.accuracy for w, m in models.items()}, policy.llm.min_accuracy))
    try:
        answers = task_answers(ctx.store.redis, ctx.prefix, project, task, trusted)
    except redis.RedisError:
        log.warning("could not read the LLM answers of task %s of project %s", task, project, exc_info=True)
        return (), {}
    return tuple((a.worker, a.label) for a in answers), {a.worker: models[a.worker] for a in answers}


def after_scoring(result: dict[str, Any], prefix: str = "cg", connection: redis.Redis | None = None) -> dict:
    """Decide for the annotators and tasks of one scored event and enqueue the actions (see module doc).

    ``result`` is what :func:`qa_hooks.jobs.process_event` returned. Raises :class:`RoutingError` after trying
    every decision when some failed, so the event job is retried; everything here is idempotent.
    """
    ctx = Context.of(prefix, connection)
    project = result.get("project")
    summary: dict[str, Any] = {"project": project, "decisions": [], "enqueued": [], "errors": []}
    if project is None:
        return summary
    now = time.time()
    annotators = [int(a) for a in result.get("annotators") or []]
    call = _call_reads(ctx, project, annotators, now)
    if call is None:
        ctx.state.touch(annotators, now)
    review_of = call.review_of if call is not None else review.review_source(ctx, project)
    if review_of is not None:  # a reviewer's verdict in a review project (routing.review)
        for review_task in result.get("tasks") or []:
            _guard(ctx, summary, project, review_task, lambda t=review_task: review.after_review_task(
                ctx, project, review_of, int(t), summary))
        if summary["errors"]:
            raise RoutingError(f"{len(summary['errors'])} review step(s) failed for project {project}: "
                               + "; ".join(summary["errors"][:3]))
        return summary
    link = call.link if call is not None else ctx.state.tier_project_link(project)
    # Until a policy is bound to a project, routing only shows what it would do (CROWDGATE_ROUTE_UNBOUND=1
    # acts on the default policy too): nothing in Label Studio changes behind an admin's back.
    bound = call.policy_bound if call is not None else link is None and ctx.state.policy_bound(project)
    ctx.dry_run = link is None and not bound and not ctx.settings.route_unbound
    summary["dry_run"] = ctx.dry_run
    try:
        if call is not None and link is None:
            policy = ctx.state.policy_from(*ctx.state.policy_source_from(project, call.policy_raw))
        else:  # an escalation project follows its source project's policy
            policy = ctx.state.policy(project)
    except Exception as exc:
        ctx.audit.record("error", "load_policy", project, reason=f"{type(exc).__name__}: {exc}")
        raise
    if link is not None:
        for tier_task in result.get("tasks") or []:
            _guard(ctx, summary, project, tier_task,
                   lambda t=tier_task: _after_tier_task(ctx, policy, project, link, int(t), summary))
    else:
        if not (call.prepared if call is not None else ctx.state.prepared(project)):
            job = ctx.enqueue(prepare_project, job_id(ctx.prefix, "prepare", project), project=project,
                              prefix=ctx.prefix)
            if job:
                summary["enqueued"].append(job)
        _route_annotators(ctx, policy, project, annotators, summary)
        tasks = [int(t) for t in result.get("tasks") or []]
        snap = _snapshot(ctx, project, tasks)
        for task in tasks:
            _guard(ctx, summary, project, task, lambda t=task: _route_task(ctx, policy, project, t, summary, snap))
        # The review feed once a task is final, the LLM audit of new human work (routing.review).
        _guard(ctx, summary, project, None, lambda: review.after_routing(ctx, policy, project, tasks, summary))
    if summary["errors"]:
        raise RoutingError(f"{len(summary['errors'])} routing decision(s) failed for project {project}: "
                           + "; ".join(summary["errors"][:3]))
    return summary


def _call_reads(ctx: Context, project: int, annotators: list[int], now: float) -> CallReads | None:
    """The touch and the prelude's reads in one round trip; None (each then done on its own) when that failed."""
    try:
        return touch_and_read_call(ctx, project, annotators, now)
    except Exception:  # the direct reads fail (or not) where they always did
        log.exception("batched prelude reads failed for project %s; reading them one by one", project)
        return None


def _snapshot(ctx: Context, project: int, tasks: list[int]) -> ProjectSnapshot | None:
    """Every task's reads in a few round trips; None (each task then reads its own) when that failed."""
    if not tasks:
        return None
    try:
        return read_tasks(ctx, project, tasks)
    except Exception:  # the per-task reads fail (or not) task by task, each into the audit log
        log.exception("batched routing reads failed for project %s; reading task by task", project)
        return None


def _guard(ctx: Context, summary: dict, project: int, task: int | None, step: Callable[[], None],
           annotator: int | None = None) -> None:
    try:
        step()
    except Exception as exc:
        _failed(ctx, summary, project, task, annotator, exc)


def _failed(ctx: Context, summary: dict, project: int, task: int | None, annotator: int | None,
            exc: Exception) -> None:
    log.error("routing failed for project %s task %s annotator %s", project, task, annotator, exc_info=exc)
    message = f"{type(exc).__name__}: {exc}"
    summary["errors"].append(message)
    try:
        ctx.audit.record("error", "decide", project, task, [annotator] if annotator is not None else [], message)
    except redis.RedisError:
        log.exception("could not audit a routing failure")


def _annotator_snapshot(ctx: Context, policy: Policy, project: int,
                        annotators: list[int]) -> dict[int, AnnotatorSnapshot]:
    """Every annotator's reads in a few round trips; empty (each annotator then reads its own) when that failed."""
    try:
        return read_annotators(ctx, project, annotators, policy)
    except Exception:  # the one-at-a-time reads fail (or not) annotator by annotator, each into the audit log
        log.exception("batched annotator reads failed for project %s; reading annotator by annotator", project)
        return {}


# An annotator's decision waiting for its audit entry: (annotator, record, decision, exam tasks spent, snapshot).
_Decided = tuple[int, AnnotatorRecord, AnnotatorDecision, list[int], AnnotatorSnapshot | None]


def _route_annotators(ctx: Context, policy: Policy, project: int, annotators: list[int], summary: dict) -> None:
    """Decide for each annotator (from the call's annotator snapshot where it has them), append the decisions
    to the audit log in one pipeline, in order, then enqueue each one's gold sync and tier change.

    An annotator whose decision fails has the decisions before it appended first, then its error, as one at a
    time; if the audit pipeline fails, each of its annotators gets an error and nothing of theirs is enqueued.
    """
    snap = _annotator_snapshot(ctx, policy, project, annotators)
    pipe = ctx.connection.pipeline(transaction=False)
    queued: list[_Decided] = []
    decided: list[_Decided] = []

    def append_audits() -> None:
        if not queued:
            return
        batch = list(queued)
        queued.clear()
        try:
            pipe.execute()
        except Exception as exc:
            pipe.reset()
            for annotator, *_ in batch:
                _failed(ctx, summary, project, None, annotator, exc)
            return
        decided.extend(batch)

    for annotator in annotators:
        pre = snap.get(annotator)
        try:
            record, decision, spent = _decide_annotator(ctx, policy, project, annotator, pre)
            evidence = {**decision.evidence, "tier_after": decision.tier, "version": record.version, **ctx.mode}
            ctx.audit.queue_record(pipe, "decision", f"annotator:{decision.action}", project, None, [annotator],
                                   decision.reason, evidence)
        except Exception as exc:
            append_audits()
            _failed(ctx, summary, project, None, annotator, exc)
            continue
        queued.append((annotator, record, decision, spent, pre))
    append_audits()
    for annotator, record, decision, spent, pre in decided:
        summary["decisions"].append({"annotator": annotator, "action": str(decision.action), "tier": decision.tier})
        _guard(ctx, summary, project, None,
               lambda a=annotator, r=record, d=decision, s=spent, p=pre: _act_on_annotator(
                   ctx, project, a, r, d, s, p, summary), annotator)


def _decide_annotator(ctx: Context, policy: Policy, project: int, annotator: int,
                      pre: AnnotatorSnapshot | None) -> tuple[AnnotatorRecord, AnnotatorDecision, list[int]]:
    """(record, decision, exam tasks spent) of one annotator, from ``pre`` or read one at a time."""
    if pre is not None:
        record, rel, counts = pre.record, pre.reliability, pre.exam
    else:
        record = ctx.state.annotator(project, annotator, policy)
        if record.flagged is None:
            record = AnnotatorRecord(**{**record.__dict__,
                                        "flagged": ctx.flagged(project, [annotator]).get(annotator)})
        rel = ctx.ledger.reliability(project, annotator)
        counts = None
        if policy.qualification is not None and record.tier == policy.tiers[0].name:
            counts = exam.exam_counts(ctx, project, annotator, policy.qualification.exam_tasks)
    attempt = (counts[0], counts[1]) if counts is not None else None
    spent = counts[2] if counts is not None else []
    return record, decide_annotator(annotator_state(record, rel, attempt), policy), spent


def _act_on_annotator(ctx: Context, project: int, annotator: int, record: AnnotatorRecord, decision: AnnotatorDecision,
                      spent: list[int], pre: AnnotatorSnapshot | None, summary: dict) -> None:
    if pre is None:
        exam.request_sync(ctx, project, annotator, record.version, summary)
    elif pre.sync_wanted:  # exam.request_sync from the snapshot's reads
        job = ctx.enqueue(exam.sync_gold_offer,
                          exam.sync_job_id(ctx.prefix, project, annotator, record.version, pre.answers),
                          project=project, annotator=annotator, prefix=ctx.prefix)
        if job:
            summary["enqueued"].append(job)
    if decision.action == AnnotatorAction.NONE:
        return
    job = ctx.enqueue(apply_tier_change, job_id(ctx.prefix, "tier", project, annotator, f"v{record.version}"),
                      project=project, annotator=annotator, action=str(decision.action), from_tier=record.tier,
                      to_tier=decision.tier, version=record.version, exam_tasks=spent, reason=decision.reason,
                      prefix=ctx.prefix)
    summary["enqueued"].append(job)


def _route_task(ctx: Context, policy: Policy, project: int, task: int, summary: dict,
                snap: ProjectSnapshot | None = None) -> None:
    # Each read below comes from the call's snapshot (routing.snapshot) when it has the task, else from Redis.
    pre = snap.tasks.get(task) if snap is not None else None
    project_info = snap.info if snap is not None else ctx.store.project_info(project)
    label_config = project_info.get("label_config")
    if not label_config:
        return  # nothing can be compared before the project's config is known (its first event carries it)
    gold = ctx.ledger.gold_from(*pre.gold_raw, label_config) if pre else ctx.ledger.gold(project, task, label_config)
    if gold is not None:
        return  # gold items test annotators; they are scored, never routed
    route = pre.route if pre else ctx.state.route(project, task)
    if route.status == "final":
        return
    subs = pre.submissions if pre else ctx.store.task_submissions(project, task)
    live = live_submissions(subs)
    info = ctx.store.task_info_from(task, pre.info_raw) if pre else ctx.store.task_info(project, task)
    difficulty = predicted_difficulty(info.meta if info else None)
    if difficulty is None:
        # what crowdgate's own difficulty model predicted (ml_backend.training writes it there)
        stored = (float(pre.difficulty_raw) if pre.difficulty_raw is not None else None) if pre else \
            stored_difficulty(ctx.store.redis, ctx.store.prefix, project, task)
        difficulty = predicted_difficulty({"difficulty": stored})
    if not live and difficulty is None:
        return  # a new task: Label Studio already serves it
    cat = categorical(label_config)
    score = {}
    if cat is None:
        score = ctx.ledger.task_score_from(pre.score_raw) if pre else ctx.ledger.task_score(project, task)
    values = label_values(live, label_config, cat, score.get("consensus"))
    at_submission = ctx.state.tiers_at_submission(project, [(s.unique_id, s.annotator) for s in live],
                                                  snap.tiers if pre else ctx.state.tiers(project),
                                                  policy.tiers[0].name)
    tiers = {s.annotator: at_submission[s.unique_id] for s in live}
    people = [s.annotator for s in live]
    flagged = set(snap.flagged(ctx, people) if pre else ctx.flagged(project, people))
    rels = (snap.reliabilities_of(ctx, people) if pre else ctx.ledger.reliabilities(project, people)) \
        if people else {}
    models: dict[str, WorkerModel] = {}
    fit = project_fit(ctx, project, cat.classes) if cat is not None else None
    if fit is not None and people:
        models = fit_models(fit, [str(a) for a in people], policy.overlap.stop)  # the stored refit's
    elif cat is not None and people:
        contrib = ctx.ledger.contributions_from(pre.contributions_raw) if pre else \
            ctx.ledger.contributions(project, task)
        models = {str(a): worker_model(rels[a], contrib.get(a), cat.classes, policy.overlap.stop) for a in people}
    threshold = None
    if cat is not None:
        if snap is not None and cat.classes in snap.stop_thresholds:
            threshold = snap.stop_thresholds[cat.classes]  # read (or computed and cached) by a task before
        else:
            threshold = crowd_stop_threshold(ctx, policy, project, cat.classes)
            if snap is not None:
                snap.stop_thresholds[cat.classes] = threshold
    llm_labels: tuple[tuple[str, str], ...] = ()
    if fit is not None and policy.llm.counts_toward_stop and people:
        llm_labels, llm_models = llm_stop_labels(ctx, policy, project, task, fit)
        models = {**models, **llm_models}
    state = task_state(task, live, values, tiers, flagged, route, policy,
                       classes=cat.classes if cat else None, models=models,
                       reliability={a: r.mean for a, r in rels.items()}, difficulty=difficulty,
                       stop_threshold=threshold,
                       class_prior=list(fit.prior) if fit is not None else None,
                       default=WorkerModel(fit.pooled) if fit is not None else None, llm_labels=llm_labels)
    decision = decide_task(state, policy)
    ctx.audit.record("decision", f"task:{decision.action}", project, task, people, decision.reason,
                     {**decision.evidence, "tier": decision.tier, "label": decision.label, "version": route.version,
                      **ctx.mode})
    summary["decisions"].append({"task": task, "action": str(decision.action), "tier": decision.tier})
    _flag_off_tier(ctx, policy, project, task, live, state, route, summary)
    counted = {int(label.annotator_id) for label in counted_labels(state, policy)}
    # Label Studio still serves the task while it has fewer annotations than its overlap (the project's
    # maximum_annotations, or what crowdgate last set): then more labels need no call at all.
    in_label_studio = sum(1 for s in subs if not s.was_cancelled)
    try:
        slots = max(int(project_info.get("maximum_annotations") or 0), route.overlap or 0)
    except ValueError:
        slots = 0
    _act_on_task(ctx, project, task, decision, route, [s for s in live if s.annotator in counted], values,
                 summary, in_label_studio, slots)


def _flag_off_tier(ctx: Context, policy: Policy, project: int, task: int, live: list[Any], state: TaskState,
                   route: TaskRoute, summary: dict) -> None:
    """Work nobody should have done: by the exam tier on a real task, or below the required tier after the
    task was escalated (Community cannot stop anyone from opening any task)."""
    required = max(policy.tier_index(route.required_tier) if route.required_tier else 0, policy.first_labeling_index)
    by_id = {s.annotator: s for s in live}
    for label in state.labels:
        index = policy.tier_index(label.tier)
        sub = by_id[int(label.annotator_id)]
        # A bad created_at raises (a clear error, the event retried) rather than passing as the oldest work.
        given_at = epoch_seconds(sub.created_at, f"created_at of submission {sub.unique_id}")
        after_escalation = route.escalated_at is not None and given_at >= route.escalated_at
        if index >= required or not (index < policy.first_labeling_index or after_escalation):
            continue
        why = (f"{label.tier} annotator below the required tier {policy.tiers[required].name}"
               + (" after escalation" if after_escalation else " (exam tier, real task)"))
        job = ctx.enqueue(flag_submission, job_id(ctx.prefix, "flag", project, sub.unique_id), project=project,
                          task=task, annotator=sub.annotator, unique_id=sub.unique_id, reason=why, prefix=ctx.prefix)
        if job:
            summary["enqueued"].append(job)


def _act_on_task(ctx: Context, project: int, task: int, decision: TaskDecision, route: TaskRoute,
                 counted: list[Any], values: dict[int, str], summary: dict, in_label_studio: int,
                 slots: int) -> None:
    version = route.version
    job: str | None = None
    if decision.action == TaskAction.FINAL:
        giving = [s for s in counted if values.get(s.annotator) == decision.label]
        if "decided_by" in decision.evidence:  # a final-say tier: that one label settles it
            giving = [s for s in giving if str(s.annotator) == str(decision.evidence["decided_by"])]
        job = ctx.enqueue(
            finalize, job_id(ctx.prefix, "final", project, task, f"v{version}"),
            project=project, task=task, version=version, label=decision.label,
            result=giving[-1].result if giving else None, reason=decision.reason,
            confident=bool(decision.evidence.get("confident", True)),
            decided_by=sorted({s.annotator for s in giving}), prefix=ctx.prefix)
    elif decision.action == TaskAction.ESCALATE:
        counts = bool(decision.evidence.get("counts_toward_limit", True))
        job = ctx.enqueue(
            escalate, job_id(ctx.prefix, "escalate", project, task, f"v{version}"),
            project=project, task=task, tier=decision.tier, version=version,
            escalations=route.escalations + int(counts), reason=decision.reason, prefix=ctx.prefix)
    elif route.status == "escalated":
        if route.assigned is None:  # the assigned annotator answered: another one at the same tier
            job = ctx.enqueue(reassign, job_id(ctx.prefix, "reassign", project, task, f"v{version}"),
                              project=project, task=task, version=version, reason=decision.reason, prefix=ctx.prefix)
    elif in_label_studio:
        needed = int(decision.evidence.get("needed_at_least", 1))
        if in_label_studio + needed > slots:
            job = ctx.enqueue(set_overlap,
                              job_id(ctx.prefix, "overlap", project, task, f"v{version}", f"n{in_label_studio}"),
                              project=project, task=task, version=version, annotations=in_label_studio,
                              needed=needed, reason=decision.reason, prefix=ctx.prefix)
    if job:
        summary["enqueued"].append(job)


def _after_tier_task(ctx: Context, policy: Policy, tier_project: int, link: tuple[int, str], tier_task: int,
                     summary: dict) -> None:
    """An answer (or a skip) in an escalation project: write it back, or flag it, or find someone else."""
    source, tier = link
    source_task = ctx.state.source_task(tier_project, tier_task)
    if source_task is None:
        info = ctx.store.task_info(tier_project, tier_task)
        value = (info.data if info else {}).get(SOURCE_FIELD)
        if not isinstance(value, int):
            ctx.audit.record("alert", "unknown_escalation_task", tier_project, tier_task,
                             reason=f"task {tier_task} of escalation project {tier_project} has no source task")
            return
        source_task = value
        ctx.state.link_tier_task(tier_project, tier_task, source_task)
    route = ctx.state.route(source, source_task)
    subs = [s for s in ctx.store.task_submissions(tier_project, tier_task) if not s.ground_truth]
    tiers = ctx.state.tiers_at_submission(tier_project, [(s.unique_id, s.annotator) for s in subs],
                                          ctx.state.tiers(source), policy.tiers[0].name)
    for sub in subs:
        tier_of = tiers[sub.unique_id]
        if policy.tier_index(tier_of) < policy.tier_index(tier):
            why = f"{tier_of} annotator answered in the {tier} escalation project"
            job = ctx.enqueue(flag_submission, job_id(ctx.prefix, "flag", tier_project, sub.unique_id),
                              project=tier_project, task=tier_task, annotator=sub.annotator,
                              unique_id=sub.unique_id, reason=why, prefix=ctx.prefix)
        elif sub.was_cancelled:
            if sub.annotator != route.assigned or route.status != "escalated":
                continue
            ctx.audit.record("decision", "task:reassign", source, source_task, [sub.annotator],
                             f"{sub.annotator} skipped the escalated task", {"tier_project": tier_project})
            job = ctx.enqueue(reassign, job_id(ctx.prefix, "reassign", source, source_task, f"v{route.version}"),
                              project=source, task=source_task, version=route.version,
                              reason=f"{sub.annotator} skipped it", prefix=ctx.prefix)
        else:
            ctx.audit.record("decision", "task:write_back", source, source_task, [sub.annotator],
                             f"answer of {tier_of} {sub.annotator} in escalation project {tier_project}",
                             {"tier_project": tier_project, "tier_task": tier_task, "unique_id": sub.unique_id})
            job = ctx.enqueue(write_back, job_id(ctx.prefix, "writeback", tier_project, sub.unique_id,
                                                 sub.updated_at),
                              tier_project=tier_project, tier_task=tier_task, unique_id=sub.unique_id,
                              prefix=ctx.prefix)
        if job:
            summary["enqueued"].append(job)
