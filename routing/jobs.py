"""Routing as RQ jobs: decide after every scored event, then act on Label Studio through idempotent jobs.

:func:`after_scoring` runs right after :func:`qa_hooks.jobs.process_event` (see :mod:`crowdgate.pipeline`). It
reads what the scoring side recorded (:class:`~qa_hooks.ledger.Ledger`, :class:`~qa_hooks.store.SubmissionStore`)
and the routing state (:class:`~routing.state.RoutingState`), builds the pure decisions' inputs, runs
:func:`~routing.decisions.decide_annotator` for the event's annotators and :func:`~routing.decisions.decide_task`
for its tasks, writes every decision to the audit log, and enqueues one action job per decision on the
``crowdgate-routing`` queue:

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
- ``sync_gold_offer`` (:mod:`routing.exam`): the gold tasks an annotator's exam view offers them, after each of
  their events and tier changes: the qualification exam first, then the ``gold.share``;
- ``check_deadline``: the SLA check at the deadline; ``sweep_deadlines`` (crowdgate-cron) catches lost ones.

A project with no policy bound (``crowdgate-policy set``) is routed in dry-run: its decisions, taken with the
default policy, go to the audit log marked ``dry_run`` and nothing is enqueued, so Label Studio is never changed
behind an admin's back (``CROWDGATE_ROUTE_UNBOUND=1`` acts on unbound projects too).

A decision taken twice acts once: job ids are deterministic (``unique=True``: RQ refuses a second job with the
same id), and every action compare-and-sets the task route's or the annotator's ``version`` before it acts, so
a retried job resumes its own action and a stale one does nothing. Jobs retry with backoff (RQ ``Retry``); every
failure is written to the audit log, and a job that runs out of retries stays in RQ's failed registry.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import redis
import scipy.stats  # noqa: F401  Ledger.reliability imports it lazily (~1.5 s): pay at worker start, not mid-escalation
from rq import Callback, Queue, Retry
from rq.exceptions import DuplicateJobError

from qa_hooks.jobs import current_connection
from qa_hooks.ledger import Ledger, Reliability
from qa_hooks.scoring import CONSENSUS_MATCH, PRIOR_ALPHA, PRIOR_BETA, Categorical, categorical, label_of
from qa_hooks.similarity import compare_results
from qa_hooks.store import SubmissionStore
from routing.assignment import Candidate, choose_annotator
from routing.audit import AuditLog
from routing.decisions import (
    AnnotatorAction,
    AnnotatorState,
    SlaAction,
    TaskAction,
    TaskDecision,
    TaskLabel,
    TaskState,
    check_sla,
    counted_labels,
    decide_annotator,
    decide_task,
)
from routing.labelstudio import ENTERPRISE, LabelStudioAPI, LabelStudioError, user_id
from routing.policy import Policy, StopRule
from routing.state import AnnotatorRecord, RoutingState, TaskRoute
from routing.stopping import WorkerModel, consensus_posterior, matched_threshold, prior_confusion

log = logging.getLogger(__name__)

ROUTING_QUEUE = os.environ.get("CROWDGATE_ROUTING_QUEUE", "crowdgate-routing")
RETRY = Retry(max=5, interval=[1, 5, 30, 120, 600])
RESULT_TTL_S = 24 * 3600  # keeps a finished job's id, so RQ refuses the same action for a day
FAILED_TTL_S = 30 * 24 * 3600
ACTIVE_WITHIN_S = float(os.environ.get("CROWDGATE_ACTIVE_WITHIN_S", "3600"))
# Pseudo-labels per true class pulling a confusion matrix towards the policy's prior accuracy.
CONFUSION_PRIOR_STRENGTH = 3.0
# A gold answer counts as correct in the exam when its similarity to the gold result reaches this.
EXAM_CORRECT_AT = 0.5
SOURCE_FIELD = "crowdgate_source_task"
# How long a project's crowd-matched stop threshold is reused before the annotators' models are read again.
STOP_THRESHOLD_TTL_S = int(os.environ.get("CROWDGATE_STOP_THRESHOLD_TTL_S", "60"))

_api: LabelStudioAPI | None = None
_api_factory: Callable[[], LabelStudioAPI] = LabelStudioAPI.from_env


class RoutingError(RuntimeError):
    """Some decisions of an event could not be taken; they are in the audit log and the job retries."""


def set_labelstudio(api: LabelStudioAPI | None = None, factory: Callable[[], LabelStudioAPI] | None = None) -> None:
    """Use ``api`` (or build one with ``factory``) for the actions run in this process (tests, scripts)."""
    global _api, _api_factory
    _api = api
    if factory is not None:
        _api_factory = factory


def labelstudio() -> LabelStudioAPI:
    global _api
    if _api is None:
        _api = _api_factory()
    return _api


@dataclass
class _Ctx:
    connection: redis.Redis
    prefix: str
    state: RoutingState = field(init=False)
    audit: AuditLog = field(init=False)
    ledger: Ledger = field(init=False)
    store: SubmissionStore = field(init=False)

    dry_run: bool = False  # decide and audit, but enqueue no action (a project without a bound policy)

    def __post_init__(self) -> None:
        self.state = RoutingState(self.connection, self.prefix)
        self.audit = AuditLog(self.connection, self.prefix)
        self.ledger = Ledger(self.connection, self.prefix)
        self.store = SubmissionStore(self.connection, self.prefix)

    def enqueue(self, func: Callable[..., Any], job_id: str, **kwargs: Any) -> str | None:
        """An action for a decision; nothing in dry-run mode."""
        if self.dry_run:
            return None
        return enqueue_action(self.connection, func, job_id, **kwargs)

    @property
    def mode(self) -> dict[str, Any]:
        return {"dry_run": True} if self.dry_run else {}


def _ctx(prefix: str, connection: redis.Redis | None) -> _Ctx:
    return _Ctx(connection or current_connection(), prefix)


# -- enqueueing -------------------------------------------------------------------------------------------


def enqueue_action(connection: redis.Redis, func: Callable[..., Any], job_id: str, *, delay: float | None = None,
                   **kwargs: Any) -> str | None:
    """Enqueue ``func(**kwargs)`` on the routing queue as job ``job_id``; None when that job already exists."""
    queue = Queue(ROUTING_QUEUE, connection=connection)
    options: dict[str, Any] = {
        "job_id": job_id, "unique": True, "retry": RETRY, "result_ttl": RESULT_TTL_S, "failure_ttl": FAILED_TTL_S,
        "on_failure": Callback(on_action_failure), "description": job_id,
    }
    try:
        if delay is not None:
            queue.enqueue_in(timedelta(seconds=max(delay, 0.0)), func, kwargs=kwargs, **options)
        else:
            queue.enqueue(func, kwargs=kwargs, **options)
    except DuplicateJobError:
        return None
    return job_id


def on_action_failure(job: Any, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """RQ failure callback: every failed attempt of an action goes into the audit log."""
    kwargs = job.kwargs or {}
    retries = job.retries_left or 0
    try:
        AuditLog(connection, kwargs.get("prefix", "cg")).record(
            "error", job.func_name.rsplit(".", 1)[-1], kwargs.get("project") or kwargs.get("tier_project"),
            kwargs.get("task") or kwargs.get("tier_task"), [a for a in (kwargs.get("annotator"),) if a is not None],
            f"{exc_type.__name__}: {exc_value}",
            {"job": job.id, "retries_left": retries, "will_retry": retries > 0}, job=job.id)
    except redis.RedisError:  # the failure itself stays in RQ's registry
        log.exception("could not audit the failure of %s", job.id)


def _job_id(prefix: str, *parts: object) -> str:
    """Deterministic job id (RQ allows letters, digits, ``_`` and ``-``): same decision, same id."""
    return "_".join(re.sub(r"[^A-Za-z0-9-]", "-", str(p)) for p in ("cgroute", prefix, *parts))


# -- building the decisions' inputs (pure) ----------------------------------------------------------------


def live_submissions(subs: Iterable[Any]) -> list[Any]:
    """Each annotator's latest answer (not skipped, not a ground-truth annotation), oldest first."""
    latest: dict[int, Any] = {}
    for sub in subs:
        if sub.was_cancelled or sub.ground_truth:
            continue
        kept = latest.get(sub.annotator)
        if kept is None or sub.updated_at >= kept.updated_at:
            latest[sub.annotator] = sub
    return sorted(latest.values(), key=lambda s: (s.created_at, s.annotator))


def _mean_without(rel: Reliability, contribution: dict[str, Any] | None) -> float:
    """Reliability mean without one task's own contribution, so a task never vouches for itself."""
    n = rel.evidence
    alpha = rel.mean * (PRIOR_ALPHA + PRIOR_BETA + n)
    if contribution:
        for key in ("gold", "peer"):
            if contribution.get(key) is not None:
                alpha -= float(contribution[key])
                n -= 1.0
    n = max(n, 0.0)
    alpha = min(max(alpha, 0.0), PRIOR_ALPHA + PRIOR_BETA + n)
    return alpha / (PRIOR_ALPHA + PRIOR_BETA + n)


def worker_model(rel: Reliability, contribution: dict[str, Any] | None, classes: tuple[str, ...],
                 stop: StopRule) -> WorkerModel:
    """One annotator's model for the stop rule, from their ledger record minus this task's contribution."""
    k = len(classes)
    if stop.worker_model == "one_coin":
        accuracy = min(max(_mean_without(rel, contribution), 1.0 / k + 1e-3), 0.999)
        return WorkerModel.one_coin(accuracy, k, rel.evidence)
    own = (contribution or {}).get("confusion") or {}
    counts = np.zeros((k, k))
    for i, true_class in enumerate(classes):
        for j, given in enumerate(classes):
            value = rel.confusion.get(true_class, {}).get(given, 0.0) - float(own.get(f"{true_class}\t{given}", 0.0))
            counts[i, j] = max(value, 0.0)
    matrix = counts + CONFUSION_PRIOR_STRENGTH * prior_confusion(k, stop.prior_accuracy)
    return WorkerModel(matrix / matrix.sum(axis=1, keepdims=True), float(counts.sum()))


def annotator_state(record: AnnotatorRecord, rel: Reliability, policy: Policy,
                    exam: tuple[int, int] | None = None) -> AnnotatorState:
    """Inputs of :func:`decide_annotator`: the current exam attempt's counts in the exam tier, else the
    annotator's whole gold record; the reliability interval from the ledger."""
    if exam is not None:
        answered, correct = exam
    else:
        answered = rel.gold_n
        correct = min(answered, round(rel.gold_n * (rel.gold_accuracy or 0.0)))
    low = min(max(rel.low, 0.0), 1.0) if rel.low == rel.low else 0.0  # NaN when no interval was computed
    high = min(max(rel.high, low), 1.0) if rel.high == rel.high else 1.0
    return AnnotatorState(
        annotator_id=str(record.annotator), tier=record.tier, gold_answered=answered, gold_correct=correct,
        reliability=rel.mean, reliability_lower=low, reliability_upper=high,
        exam_attempts=record.exam_attempts, flagged=record.flagged is not None)


def label_values(live: list[Any], label_config: str, cat: Categorical | None,
                 consensus_uid: str | None) -> dict[int, str]:
    """annotator -> the answer ``decide_task`` compares: the single choice for categorical configs; otherwise
    ``"consensus"`` for answers close to the scorer's medoid and a distinct value for each other answer."""
    if cat is not None:
        values = {}
        for sub in live:
            label = label_of(sub.result, cat.control)
            if label is not None:
                values[sub.annotator] = label
        return values
    medoid = next((s for s in live if s.unique_id == consensus_uid), None)
    values = {}
    for sub in live:
        if medoid is None:
            values[sub.annotator] = f"answer:{sub.annotator}"
        elif sub is medoid or (compare_results(sub.result, medoid.result, label_config) or 0.0) >= CONSENSUS_MATCH:
            values[sub.annotator] = "consensus"
        else:
            values[sub.annotator] = f"other:{sub.annotator}"
    return values


def task_state(task: int, live: list[Any], values: dict[int, str], tiers: dict[int, str], flagged: set[int],
               route: TaskRoute, policy: Policy, *, classes: tuple[str, ...] | None,
               models: dict[str, WorkerModel], reliability: dict[int, float],
               difficulty: float | None, stop_threshold: float | None = None) -> TaskState:
    """Inputs of :func:`decide_task`; the posterior is computed over the labels that count only."""
    default_tier = policy.tiers[0].name
    labels = tuple(
        TaskLabel(str(s.annotator), values[s.annotator], tiers.get(s.annotator, default_tier), s.annotator in flagged)
        for s in live if s.annotator in values)
    draft = TaskState(str(task), labels, required_tier=route.required_tier, escalations=route.escalations,
                      escalated_at=route.escalated_at, difficulty=difficulty)
    counted = counted_labels(draft, policy)
    posterior = None
    if counted and classes is not None:
        posterior = consensus_posterior([(lb.annotator_id, lb.value) for lb in counted], models, classes,
                                        default=WorkerModel.one_coin(policy.overlap.stop.prior_accuracy, len(classes)))
    elif counted:
        # Not categorical: reliability-weighted share of each answer among the counted labels.
        weights: dict[str, float] = {}
        for lb in counted:
            weights[lb.value] = weights.get(lb.value, 0.0) + reliability.get(int(lb.annotator_id), 0.7)
        total = sum(weights.values()) or 1.0
        posterior = {v: w / total for v, w in weights.items()}
    return TaskState(str(task), labels, posterior=posterior, difficulty=difficulty,
                     required_tier=route.required_tier, escalations=route.escalations, escalated_at=route.escalated_at,
                     stop_threshold=stop_threshold)


def crowd_stop_threshold(ctx: _Ctx, policy: Policy, project: int, classes: tuple[str, ...]) -> float | None:
    """The posterior threshold matched to the project's crowd (``overlap.stop.match_overlap``), or None for
    the policy's own threshold (matching off, or fewer than ``match_min_labels`` labels behind the models).

    Computed from every annotator's ledger record and cached for ``STOP_THRESHOLD_TTL_S`` seconds: the
    crowd's quality moves slowly, and reading hundreds of records on every event would not.
    """
    stop = policy.overlap.stop
    if stop.rule != "posterior" or stop.match_overlap is None:
        return None
    overlap = policy.overlap
    key = (f"{stop.match_overlap}:{stop.match_lead}:{overlap.min}:{overlap.max}:{stop.min_agreeing}:"
           f"{stop.worker_model}:{stop.prior_accuracy}:{','.join(classes)}")
    found, cached = ctx.state.stop_threshold(project, key)
    if found:
        return cached
    annotators = ctx.store.annotators(project)
    rels = ctx.ledger.reliabilities(project, annotators) if annotators else {}
    models = [worker_model(rel, None, classes, stop) for rel in rels.values()]
    labels = float(sum(m.n_labels for m in models))
    threshold = None
    if models and labels >= stop.match_min_labels:
        # Uniform class prior, as in the task posteriors this threshold is compared with; past overlap.max a
        # task leaves this tier, so the simulated rule stops there with its best answer.
        matched = matched_threshold(models, None, overlap=stop.match_overlap, lead=stop.match_lead,
                                    min_labels=overlap.min, min_agreeing=stop.min_agreeing, max_labels=overlap.max)
        threshold = matched.threshold
        ctx.audit.record("decision", "stop_threshold", project, reason=(
            f"threshold {threshold}: simulated accuracy {matched.accuracy:.3f} with {matched.labels_per_task:.2f} "
            f"labels per task against {matched.fixed_overlap_accuracy:.3f} for a fixed overlap of "
            f"{stop.match_overlap}"), evidence={**asdict(matched), "labels": labels, "annotators": len(models)})
    ctx.state.set_stop_threshold(project, key, threshold, labels, STOP_THRESHOLD_TTL_S)
    return threshold


def stored_difficulty(connection: redis.Redis, prefix: str, project: int, task: int) -> float | None:
    """The difficulty crowdgate's model predicted for a task (``{prefix}:p:{pid}:difficulty``), if any."""
    raw = connection.hget(f"{prefix}:p:{project}:difficulty", task)
    return float(raw) if raw is not None else None


def predicted_difficulty(meta: dict[str, Any] | None) -> float | None:
    """Predicted difficulty in [0, 1] from the task's ``meta.difficulty`` or ``meta.crowdgate.difficulty``."""
    meta = meta or {}
    value = meta.get("difficulty", (meta.get("crowdgate") or {}).get("difficulty"))
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return None


def _epoch(timestamp: str) -> float:
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# -- after scoring ----------------------------------------------------------------------------------------


def after_scoring(result: dict[str, Any], prefix: str = "cg", connection: redis.Redis | None = None) -> dict:
    """Decide for the annotators and tasks of one scored event and enqueue the actions (see module doc).

    ``result`` is what :func:`qa_hooks.jobs.process_event` returned. Raises :class:`RoutingError` after trying
    every decision when some failed, so the event job is retried; everything here is idempotent.
    """
    ctx = _ctx(prefix, connection)
    project = result.get("project")
    summary: dict[str, Any] = {"project": project, "decisions": [], "enqueued": [], "errors": []}
    if project is None:
        return summary
    now = time.time()
    annotators = [int(a) for a in result.get("annotators") or []]
    ctx.state.touch(annotators, now)
    link = ctx.state.tier_project_link(project)
    # Until a policy is bound to a project, routing only shows what it would do (CROWDGATE_ROUTE_UNBOUND=1
    # acts on the default policy too): nothing in Label Studio changes behind an admin's back.
    ctx.dry_run = link is None and not ctx.state.policy_bound(project) and \
        os.environ.get("CROWDGATE_ROUTE_UNBOUND") != "1"
    summary["dry_run"] = ctx.dry_run
    try:
        policy = ctx.state.policy(project)
    except Exception as exc:
        ctx.audit.record("error", "load_policy", project, reason=f"{type(exc).__name__}: {exc}")
        raise
    if link is not None:
        for tier_task in result.get("tasks") or []:
            _guard(ctx, summary, project, tier_task,
                   lambda t=tier_task: _after_tier_task(ctx, policy, project, link, int(t), summary))
    else:
        if not ctx.state.prepared(project):
            job = ctx.enqueue(prepare_project, _job_id(ctx.prefix, "prepare", project), project=project,
                              prefix=ctx.prefix)
            if job:
                summary["enqueued"].append(job)
        for annotator in annotators:
            _guard(ctx, summary, project, None,
                   lambda a=annotator: _route_annotator(ctx, policy, project, a, summary), annotator)
        for task in result.get("tasks") or []:
            _guard(ctx, summary, project, task, lambda t=task: _route_task(ctx, policy, project, int(t), now, summary))
    if summary["errors"]:
        raise RoutingError(f"{len(summary['errors'])} routing decision(s) failed for project {project}: "
                           + "; ".join(summary["errors"][:3]))
    return summary


def _guard(ctx: _Ctx, summary: dict, project: int, task: int | None, step: Callable[[], None],
           annotator: int | None = None) -> None:
    try:
        step()
    except Exception as exc:
        log.exception("routing failed for project %s task %s annotator %s", project, task, annotator)
        message = f"{type(exc).__name__}: {exc}"
        summary["errors"].append(message)
        try:
            ctx.audit.record("error", "decide", project, task, [annotator] if annotator is not None else [], message)
        except redis.RedisError:
            log.exception("could not audit a routing failure")


def _flagged(ctx: _Ctx, project: int, annotators: Iterable[int]) -> dict[int, str]:
    """Annotators whose labels never count: flagged by hand (routing state) or by the scoring side's
    low-effort and fraud signals (``Ledger.flags``)."""
    manual = ctx.state.flagged(project)
    out: dict[int, str] = {}
    for a in annotators:
        if a in manual:
            out[a] = manual[a]
        else:
            signals = ctx.ledger.flags(project, a)
            if signals:
                out[a] = ", ".join(f.name for f in signals)
    return out


def _exam_counts(ctx: _Ctx, project: int, annotator: int, exam_tasks: int) -> tuple[int, int, list[int]]:
    """(answered, correct, gold tasks) of the current exam attempt: the first ``exam_tasks`` gold answers that
    no failed attempt has spent."""
    used = ctx.state.exam_used(project, annotator)
    tasks = [s.task for s in ctx.store.annotator_log(project, annotator)
             if not s.was_cancelled and s.task not in used]
    tasks = list(dict.fromkeys(tasks))
    pipe = ctx.connection.pipeline(transaction=False)
    for t in tasks:
        pipe.hget(f"{ctx.prefix}:p:{project}:task:{t}:contrib", annotator)
    answered, correct, spent = 0, 0, []
    for t, raw in zip(tasks, pipe.execute(), strict=True):
        gold = json.loads(raw).get("gold") if raw else None
        if gold is None:
            continue
        answered += 1
        correct += int(gold >= EXAM_CORRECT_AT)
        spent.append(t)
        if answered == exam_tasks:
            break
    return answered, correct, spent


def _route_annotator(ctx: _Ctx, policy: Policy, project: int, annotator: int, summary: dict) -> None:
    record = ctx.state.annotator(project, annotator, policy)
    if record.flagged is None:
        record = AnnotatorRecord(**{**record.__dict__, "flagged": _flagged(ctx, project, [annotator]).get(annotator)})
    rel = ctx.ledger.reliability(project, annotator)
    exam = None
    spent: list[int] = []
    if policy.qualification is not None and record.tier == policy.tiers[0].name:
        answered, correct, spent = _exam_counts(ctx, project, annotator, policy.qualification.exam_tasks)
        exam = (answered, correct)
    decision = decide_annotator(annotator_state(record, rel, policy, exam), policy)
    evidence = {**decision.evidence, "tier_after": decision.tier, "version": record.version, **ctx.mode}
    ctx.audit.record("decision", f"annotator:{decision.action}", project, None, [annotator], decision.reason, evidence)
    summary["decisions"].append({"annotator": annotator, "action": str(decision.action), "tier": decision.tier})
    _sync_gold(ctx, project, annotator, record.version, summary)
    if decision.action == AnnotatorAction.NONE:
        return
    job = ctx.enqueue(apply_tier_change, _job_id(ctx.prefix, "tier", project, annotator, f"v{record.version}"),
                      project=project, annotator=annotator, action=str(decision.action), from_tier=record.tier,
                      to_tier=decision.tier, version=record.version, exam_tasks=spent, reason=decision.reason,
                      prefix=ctx.prefix)
    summary["enqueued"].append(job)


def _sync_gold(ctx: _Ctx, project: int, annotator: int, version: int, summary: dict | None = None) -> None:
    """Enqueue the reconciliation of the gold tasks offered to ``annotator`` (see :mod:`routing.exam`): their
    exam while in the exam tier, the gold share once qualified. Nothing when the project has no gold."""
    from routing import exam  # routing.exam builds on this module

    if not ctx.ledger.gold_tasks(project) and not ctx.state.offered(project, annotator):
        return
    job = ctx.enqueue(exam.sync_gold_offer,
                      exam.sync_job_id(ctx.prefix, project, annotator, version,
                                       exam.answers_count(ctx, project, annotator)),
                      project=project, annotator=annotator, prefix=ctx.prefix)
    if job and summary is not None:
        summary["enqueued"].append(job)


def _route_task(ctx: _Ctx, policy: Policy, project: int, task: int, now: float, summary: dict) -> None:
    label_config = ctx.store.project_info(project).get("label_config")
    if not label_config:
        return  # nothing can be compared before the project's config is known (its first event carries it)
    if ctx.ledger.gold(project, task, label_config) is not None:
        return  # gold items test annotators; they are scored, never routed
    route = ctx.state.route(project, task)
    if route.status == "final":
        return
    subs = ctx.store.task_submissions(project, task)
    live = live_submissions(subs)
    info = ctx.store.task_info(project, task)
    difficulty = predicted_difficulty(info.meta if info else None)
    if difficulty is None:
        # what crowdgate's own difficulty model predicted (ml_backend.training writes it there)
        difficulty = predicted_difficulty({"difficulty": stored_difficulty(ctx.store.redis, ctx.store.prefix,
                                                                           project, task)})
    if not live and difficulty is None:
        return  # a new task: Label Studio already serves it
    cat = categorical(label_config)
    score = ctx.ledger.task_score(project, task) if cat is None else {}
    values = label_values(live, label_config, cat, score.get("consensus"))
    tiers = ctx.state.tiers(project)
    people = [s.annotator for s in live]
    flagged = set(_flagged(ctx, project, people))
    rels = ctx.ledger.reliabilities(project, people) if people else {}
    models: dict[str, WorkerModel] = {}
    if cat is not None and people:
        raw = ctx.connection.hgetall(f"{ctx.prefix}:p:{project}:task:{task}:contrib")
        contrib = {int(k): json.loads(v) for k, v in raw.items()}
        models = {str(a): worker_model(rels[a], contrib.get(a), cat.classes, policy.overlap.stop) for a in people}
    threshold = crowd_stop_threshold(ctx, policy, project, cat.classes) if cat is not None else None
    state = task_state(task, live, values, tiers, flagged, route, policy,
                       classes=cat.classes if cat else None, models=models,
                       reliability={a: r.mean for a, r in rels.items()}, difficulty=difficulty,
                       stop_threshold=threshold)
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
        slots = max(int(ctx.store.project_info(project).get("maximum_annotations") or 0), route.overlap or 0)
    except ValueError:
        slots = 0
    _act_on_task(ctx, policy, project, task, decision, route, [s for s in live if s.annotator in counted], values,
                 summary, in_label_studio, slots)


def _flag_off_tier(ctx: _Ctx, policy: Policy, project: int, task: int, live: list[Any], state: TaskState,
                   route: TaskRoute, summary: dict) -> None:
    """Work nobody should have done: by the exam tier on a real task, or below the required tier after the
    task was escalated (Community cannot stop anyone from opening any task)."""
    required = max(policy.tier_index(route.required_tier) if route.required_tier else 0, policy.first_labeling_index)
    by_id = {s.annotator: s for s in live}
    for label in state.labels:
        index = policy.tier_index(label.tier)
        sub = by_id[int(label.annotator_id)]
        after_escalation = route.escalated_at is not None and _epoch(sub.created_at) >= route.escalated_at
        if index >= required or not (index < policy.first_labeling_index or after_escalation):
            continue
        why = (f"{label.tier} annotator below the required tier {policy.tiers[required].name}"
               + (" after escalation" if after_escalation else " (exam tier, real task)"))
        job = ctx.enqueue(flag_submission, _job_id(ctx.prefix, "flag", project, sub.unique_id), project=project,
                          task=task, annotator=sub.annotator, unique_id=sub.unique_id, reason=why, prefix=ctx.prefix)
        if job:
            summary["enqueued"].append(job)


def _act_on_task(ctx: _Ctx, policy: Policy, project: int, task: int, decision: TaskDecision, route: TaskRoute,
                 counted: list[Any], values: dict[int, str], summary: dict, in_label_studio: int,
                 slots: int) -> None:
    version = route.version
    job: str | None = None
    if decision.action == TaskAction.FINAL:
        giving = [s for s in counted if values.get(s.annotator) == decision.label]
        if "decided_by" in decision.evidence:  # a final-say tier: that one label settles it
            giving = [s for s in giving if str(s.annotator) == str(decision.evidence["decided_by"])]
        job = ctx.enqueue(
            finalize, _job_id(ctx.prefix, "final", project, task, f"v{version}"),
            project=project, task=task, version=version, label=decision.label,
            result=giving[-1].result if giving else None, reason=decision.reason,
            confident=bool(decision.evidence.get("confident", True)),
            decided_by=sorted({s.annotator for s in giving}), prefix=ctx.prefix)
    elif decision.action == TaskAction.ESCALATE:
        counts = bool(decision.evidence.get("counts_toward_limit", True))
        job = ctx.enqueue(
            escalate, _job_id(ctx.prefix, "escalate", project, task, f"v{version}"),
            project=project, task=task, tier=decision.tier, version=version,
            escalations=route.escalations + int(counts), reason=decision.reason, prefix=ctx.prefix)
    elif route.status == "escalated":
        if route.assigned is None:  # the assigned annotator answered: another one at the same tier
            job = ctx.enqueue(reassign, _job_id(ctx.prefix, "reassign", project, task, f"v{version}"),
                              project=project, task=task, version=version, reason=decision.reason, prefix=ctx.prefix)
    elif in_label_studio:
        needed = int(decision.evidence.get("needed_at_least", 1))
        if in_label_studio + needed > slots:
            job = ctx.enqueue(set_overlap,
                              _job_id(ctx.prefix, "overlap", project, task, f"v{version}", f"n{in_label_studio}"),
                              project=project, task=task, version=version, annotations=in_label_studio,
                              needed=needed, reason=decision.reason, prefix=ctx.prefix)
    if job:
        summary["enqueued"].append(job)


def _after_tier_task(ctx: _Ctx, policy: Policy, tier_project: int, link: tuple[int, str], tier_task: int,
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
    tiers = ctx.state.tiers(source)
    for sub in ctx.store.task_submissions(tier_project, tier_task):
        if sub.ground_truth:
            continue
        tier_of = tiers.get(sub.annotator, policy.tiers[0].name)
        if policy.tier_index(tier_of) < policy.tier_index(tier):
            why = f"{tier_of} annotator answered in the {tier} escalation project"
            job = ctx.enqueue(flag_submission, _job_id(ctx.prefix, "flag", tier_project, sub.unique_id),
                              project=tier_project, task=tier_task, annotator=sub.annotator,
                              unique_id=sub.unique_id, reason=why, prefix=ctx.prefix)
        elif sub.was_cancelled:
            if sub.annotator != route.assigned or route.status != "escalated":
                continue
            ctx.audit.record("decision", "task:reassign", source, source_task, [sub.annotator],
                             f"{sub.annotator} skipped the escalated task", {"tier_project": tier_project})
            job = ctx.enqueue(reassign, _job_id(ctx.prefix, "reassign", source, source_task, f"v{route.version}"),
                              project=source, task=source_task, version=route.version,
                              reason=f"{sub.annotator} skipped it", prefix=ctx.prefix)
        else:
            ctx.audit.record("decision", "task:write_back", source, source_task, [sub.annotator],
                             f"answer of {tier_of} {sub.annotator} in escalation project {tier_project}",
                             {"tier_project": tier_project, "tier_task": tier_task, "unique_id": sub.unique_id})
            job = ctx.enqueue(write_back, _job_id(ctx.prefix, "writeback", tier_project, sub.unique_id,
                                                  sub.updated_at),
                              tier_project=tier_project, tier_task=tier_task, unique_id=sub.unique_id,
                              prefix=ctx.prefix)
        if job:
            summary["enqueued"].append(job)


# -- action jobs ------------------------------------------------------------------------------------------


def prepare_project(project: int, prefix: str = "cg", connection: redis.Redis | None = None) -> dict[str, Any]:
    """Ready a project for escalations before the first one, so it costs no setup then: probe the edition,
    cache the users' e-mails and, on Community, create the escalation project of the tier above the first
    labeling tier (higher tiers' projects are made when first needed)."""
    ctx = _ctx(prefix, connection)
    policy = ctx.state.policy(project)
    api = labelstudio()
    found = edition(ctx, api, project)
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
    ctx = _ctx(prefix, connection)
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


def _claim(ctx: _Ctx, project: int, task: int, version: int, key: str, action: str) -> TaskRoute | None:
    """The task's route if this job is the one to act on ``version`` (once); else audited as skipped."""
    route = ctx.state.claim(project, task, version, key)
    if route is None:
        ctx.audit.record("action", f"{action}_skipped", project, task, [], f"superseded: route moved past v{version}")
    return route


def escalate(project: int, task: int, tier: str, version: int, escalations: int, reason: str = "",
             prefix: str = "cg", connection: redis.Redis | None = None) -> dict[str, Any]:
    """Send ``task`` to an annotator of ``tier`` (or above) and to nobody below (see the module docstring)."""
    ctx = _ctx(prefix, connection)
    route = _claim(ctx, project, task, version, f"escalate:{tier}:v{version}", "escalate")
    if route is None:
        return {"skipped": True}
    return _route_to(ctx, project, task, tier, route, escalations, "escalate", reason)


def reassign(project: int, task: int, version: int, reason: str = "", prefix: str = "cg",
             connection: redis.Redis | None = None) -> dict[str, Any]:
    """Another annotator of the task's required tier (a skip, or more labels needed at that tier)."""
    ctx = _ctx(prefix, connection)
    route = _claim(ctx, project, task, version, f"reassign:v{version}", "reassign")
    if route is None:
        return {"skipped": True}
    tier = route.required_tier or ctx.state.policy(project).first_labeling_tier
    return _route_to(ctx, project, task, tier, route, route.escalations, "reassign", reason)


def _candidates(ctx: _Ctx, policy: Policy, project: int, tier: str) -> list[Candidate]:
    tiers = ctx.state.tiers(project)
    floor = policy.tier_index(tier)
    people = [a for a, t in tiers.items() if t in policy.tier_names and policy.tier_index(t) >= floor]
    if not people:
        return []
    rels = ctx.ledger.reliabilities(project, people)
    loads = ctx.state.loads(people)
    seen = ctx.state.last_seen(people)
    flagged = _flagged(ctx, project, people)
    emails = ctx.state.emails(people)
    return [Candidate(a, tiers[a], rels[a].mean, rels[a].confusion, loads[a], seen[a], a in flagged, emails[a])
            for a in people]


def edition(ctx: _Ctx, api: LabelStudioAPI, project: int) -> str:
    """Community or Enterprise behind ``project``: probed once, then shared by every worker for an hour."""
    found = ctx.state.edition(project)
    if found is None:
        found = api.edition(project)
        ctx.state.set_edition(project, found)
    return found


def _emails(ctx: _Ctx, api: LabelStudioAPI, users: Iterable[int]) -> dict[int, str | None]:
    known = ctx.state.emails(users)
    if any(v is None for v in known.values()):
        ctx.state.cache_users({int(u["id"]): u["email"] for u in api.users() if u.get("email")})
        known = ctx.state.emails(users)
    return known


def _route_to(ctx: _Ctx, project: int, task: int, tier: str, route: TaskRoute, escalations: int, kind: str,
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
    candidates = _candidates(ctx, policy, project, tier)
    _emails(ctx, api, [c.annotator_id for c in candidates] + sorted(touched))
    emails = ctx.state.emails([c.annotator_id for c in candidates])
    candidates = [Candidate(**{**c.__dict__, "email": emails[c.annotator_id]}) for c in candidates]
    kind_of_server = edition(ctx, api, project)
    if kind_of_server != ENTERPRISE:  # a Community queue is a Data Manager view on the e-mail
        candidates = [c for c in candidates if c.email]
    live = live_submissions(subs)
    cat = categorical(ctx.store.project_info(project).get("label_config") or "<View/>") if live else None
    disputed = [v for v in (label_of(s.result, cat.control) for s in live) if v] if cat else []
    choice = choose_annotator(candidates, policy, tier, exclude=touched, disputed=disputed, now=now,
                              active_within=ACTIVE_WITHIN_S)
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
        tier_project, tier_task = _community_route(ctx, api, project, task, tier, route, chosen,
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
        enqueue_action(ctx.connection, check_deadline, _job_id(ctx.prefix, "sla", project, task, f"v{after.version}"),
                       delay=deadline - now + 0.5, project=project, task=task, version=after.version,
                       prefix=ctx.prefix)
    outcome = {"tier": tier, "assigned": chosen, "edition": kind_of_server, "tier_project": tier_project,
               "tier_task": tier_task, "deadline": deadline, "escalations": escalations, "version": after.version}
    ctx.audit.record("action", kind, project, task, [chosen] if chosen else [], reason or choice.reason, outcome)
    return outcome


def _ensure_tier_project(ctx: _Ctx, api: LabelStudioAPI, project: int, tier: str) -> int:
    """The escalation project of ``tier`` for ``project``, created once (same label config, one annotation
    per task, earlier answers attached as predictions but not shown, crowdgate's webhook copied)."""
    found = ctx.state.tier_project(project, tier)
    if found is not None:
        return found
    lock = ctx.connection.lock(f"{ctx.prefix}:r:lock:tierproject:{project}:{tier}", timeout=120, blocking_timeout=60)
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


def _unless_gone(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, or None when Label Studio says the object no longer exists (404)."""
    try:
        return call(*args)
    except LabelStudioError as exc:
        if exc.status == 404:
            return None
        raise


def _community_route(ctx: _Ctx, api: LabelStudioAPI, project: int, task: int, tier: str, route: TaskRoute,
                     chosen: int | None, email: str | None) -> tuple[int, int]:
    tier_project = _ensure_tier_project(ctx, api, project, tier)
    if route.tier_project and route.tier_task and route.tier_project != tier_project:
        _unless_gone(api.close_task, route.tier_task)  # escalated further: the lower escalation queue loses it
    tier_task = route.tier_task if route.tier_project == tier_project else None
    current = _unless_gone(api.task, tier_task) if tier_task is not None else None
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
    ctx = _ctx(prefix, connection)
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
    ctx = _ctx(prefix, connection)
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
    if edition(ctx, api, project) == ENTERPRISE:
        api.unassign(project, task)
    if route.assigned is not None:
        ctx.state.release(route.assigned, project, task)
    ctx.state.update_route(project, task, status="final", final_label=label, assigned=None, deadline=None)
    ctx.audit.record("action", "finalize", project, task, decided_by or [], reason, final)
    return {"label": label, "version": version + 1}


def flag_submission(project: int, task: int, annotator: int, unique_id: str, reason: str, prefix: str = "cg",
                    connection: redis.Redis | None = None) -> dict[str, Any]:
    """Record that a submission is left out of counting, and why."""
    ctx = _ctx(prefix, connection)
    fresh = ctx.state.flag_submission(project, unique_id, {"task": task, "annotator": annotator, "reason": reason,
                                                           "at": time.time()})
    if fresh:
        ctx.audit.record("flag", "off_tier_work", project, task, [annotator], reason, {"unique_id": unique_id})
    return {"flagged": fresh}


def apply_tier_change(project: int, annotator: int, action: str, from_tier: str, to_tier: str, version: int,
                      exam_tasks: list[int] | None = None, reason: str = "", prefix: str = "cg",
                      connection: redis.Redis | None = None) -> dict[str, Any]:
    """Apply a promotion, demotion, qualification or failed exam decided at annotator ``version``."""
    ctx = _ctx(prefix, connection)
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
    _sync_gold(ctx, project, annotator, record.version)
    return {"changed": True, "tier": to_tier, "version": record.version}


def _pause(ctx: _Ctx, project: int, annotator: int, reason: str) -> None:
    api = labelstudio()
    if edition(ctx, api, project) == ENTERPRISE:
        api.pause(project, annotator, f"crowdgate: {reason}")
        ctx.audit.record("action", "pause", project, None, [annotator], reason, {"edition": ENTERPRISE})
    else:
        ctx.audit.record("action", "pause", project, None, [annotator],
                         f"{reason} (Community has no pause: their labels are left out while in the exam tier)",
                         {"edition": "community"})


def check_deadline(project: int, task: int, version: int, prefix: str = "cg",
                   connection: redis.Redis | None = None) -> dict[str, Any]:
    """SLA check of an escalated task (scheduled at its deadline): escalate one tier up, or alert."""
    ctx = _ctx(prefix, connection)
    route = ctx.state.route(project, task)
    if route.status != "escalated" or route.version != version:
        return {"superseded": True}
    policy = ctx.state.policy(project)
    now = time.time()
    decision = check_sla(TaskState(str(task), required_tier=route.required_tier, escalations=route.escalations,
                                   escalated_at=route.escalated_at), now, policy)
    if decision.action == SlaAction.NONE:
        if route.deadline is not None and route.deadline > now:  # woke early: look again at the deadline
            enqueue_action(ctx.connection, check_deadline, _job_id(ctx.prefix, "sla", project, task, f"v{version}",
                                                                   int(route.deadline)),
                           delay=route.deadline - now + 0.5, project=project, task=task, version=version,
                           prefix=ctx.prefix)
        return {"action": "none"}
    assigned = [route.assigned] if route.assigned is not None else []
    ctx.audit.record("decision", f"sla:{decision.action}", project, task, assigned, decision.reason,
                     {**decision.evidence, "tier": decision.tier, "version": version})
    if decision.action == SlaAction.ESCALATE:
        enqueue_action(ctx.connection, escalate, _job_id(ctx.prefix, "escalate", project, task, f"v{version}"),
                       project=project, task=task, tier=decision.tier, version=version,
                       escalations=route.escalations + 1, reason=decision.reason, prefix=ctx.prefix)
    elif route.alerted_version != version:
        ctx.audit.record("alert", "sla_breach", project, task, assigned, decision.reason, decision.evidence)
        ctx.state.update_route(project, task, alerted_version=version)
        ctx.state.not_due(project, task)  # alerted once; a human takes it from here
    return {"action": str(decision.action), "tier": decision.tier}


def sweep_deadlines(prefix: str = "cg", connection: redis.Redis | None = None) -> dict[str, int]:
    """Check every escalated task past its deadline (crowdgate-cron; catches lost scheduled checks)."""
    ctx = _ctx(prefix, connection)
    checked = 0
    for project, task in ctx.state.due():
        route = ctx.state.route(project, task)
        if route.status == "escalated" and route.alerted_version != route.version:
            check_deadline(project, task, route.version, prefix, ctx.connection)
            checked += 1
    return {"checked": checked}
