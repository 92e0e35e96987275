"""The inputs of the pure decisions (:mod:`routing.decisions`), built from what scoring recorded.

Everything here is a function of its arguments except :func:`stored_difficulty`, which reads the one value
crowdgate's difficulty model left in Redis.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import redis

from core.keys import Keys
from qa_hooks.ledger import Reliability
from qa_hooks.scoring import CONSENSUS_MATCH, PRIOR_ALPHA, PRIOR_BETA, Categorical, label_of
from qa_hooks.similarity import compare_results
from routing.decisions import AnnotatorState, TaskLabel, TaskState, counted_labels
from routing.policy import Policy, StopRule
from routing.state import AnnotatorRecord, TaskRoute
from routing.stopping import WorkerModel, consensus_posterior, prior_confusion

__all__ = [
    "CONFUSION_PRIOR_STRENGTH",
    "annotator_state",
    "label_values",
    "live_submissions",
    "predicted_difficulty",
    "stored_difficulty",
    "task_state",
    "worker_model",
]

# Pseudo-labels per true class pulling a confusion matrix towards the policy's prior accuracy.
CONFUSION_PRIOR_STRENGTH = 3.0


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


def annotator_state(record: AnnotatorRecord, rel: Reliability, exam: tuple[int, int] | None = None) -> AnnotatorState:
    """Inputs of :func:`~routing.decisions.decide_annotator`: the current exam attempt's counts in the exam tier,
    else the annotator's whole gold record; the reliability interval from the ledger."""
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
               difficulty: float | None, stop_threshold: float | None = None,
               class_prior: list[float] | None = None, default: WorkerModel | None = None,
               llm_labels: tuple[tuple[str, str], ...] = ()) -> TaskState:
    """Inputs of :func:`~routing.decisions.decide_task`; the posterior is computed over the labels that count,
    with ``class_prior`` (uniform when None) and ``default`` as the model of an annotator without one (the
    policy's prior accuracy when None). ``llm_labels``: the LLM answers that may count toward a stop (their
    models in ``models``); they join the posterior of a categorical task, never the labels.

    ``tiers`` maps each author to the tier they had when they gave that label (not their tier now): a label
    given below the required tier never counts, whatever its author becomes later.
    """
    default_tier = policy.tiers[0].name
    labels = tuple(
        TaskLabel(str(s.annotator), values[s.annotator], tiers.get(s.annotator, default_tier), s.annotator in flagged)
        for s in live if s.annotator in values)
    draft = TaskState(str(task), labels, required_tier=route.required_tier, escalations=route.escalations,
                      escalated_at=route.escalated_at, difficulty=difficulty)
    counted = counted_labels(draft, policy)
    posterior = None
    if counted and classes is not None:
        fallback = default or WorkerModel.one_coin(policy.overlap.stop.prior_accuracy, len(classes))
        llm = [(w, a) for w, a in llm_labels if a in classes]
        posterior = consensus_posterior([(lb.annotator_id, lb.value) for lb in counted] + llm, models, classes,
                                        default=fallback, class_prior=class_prior)
    elif counted:
        # Not categorical: reliability-weighted share of each answer among the counted labels.
        weights: dict[str, float] = {}
        for lb in counted:
            weights[lb.value] = weights.get(lb.value, 0.0) + reliability.get(int(lb.annotator_id), 0.7)
        total = sum(weights.values()) or 1.0
        posterior = {v: w / total for v, w in weights.items()}
    return TaskState(str(task), labels, posterior=posterior, difficulty=difficulty,
                     required_tier=route.required_tier, escalations=route.escalations, escalated_at=route.escalated_at,
                     stop_threshold=stop_threshold,
                     llm_labels=tuple((w, a) for w, a in llm_labels if classes is not None and a in classes))


def stored_difficulty(connection: redis.Redis, prefix: str, project: int, task: int) -> float | None:
    """The difficulty crowdgate's model predicted for a task (``Keys.difficulty``, written by the ML backend), if
    any."""
    raw = connection.hget(Keys(prefix).difficulty(project), task)
    return float(raw) if raw is not None else None


def predicted_difficulty(meta: dict[str, Any] | None) -> float | None:
    """Predicted difficulty in [0, 1] from the task's ``meta.difficulty`` or ``meta.crowdgate.difficulty``."""
    meta = meta or {}
    value = meta.get("difficulty", (meta.get("crowdgate") or {}).get("difficulty"))
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return None
