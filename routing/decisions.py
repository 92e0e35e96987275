"""What to do after each scored submission: move the annotator between tiers, and finish, extend or escalate
the task. Pure functions of plain dataclasses and a :class:`~routing.policy.Policy`; every decision carries a
human-readable ``reason`` and an ``evidence`` dict with the numbers it rests on.

Annotator rules (:func:`decide_annotator`), first match wins:

1. exam tier: locked out after ``1 + max_retries`` failed attempts; otherwise wait for ``exam_tasks`` gold
   answers, then QUALIFY (share correct >= ``pass_mark``) or FAIL_EXAM;
2. DEMOTE one tier when the current tier's ``demote`` rule fires (reliability upper bound < ``max_upper``);
3. PROMOTE one tier when the next tier's ``promote`` rule holds (enough gold, lower bound >= ``min_lower``),
   unless the annotator is flagged;
4. NONE.

Because the policy enforces ``promote.min_lower - demote.max_upper >= hysteresis_margin`` and the bounds come
from one credible interval (lower <= upper), an annotator promoted on some evidence is not demoted until the
interval has moved down by at least the margin: no flapping.

Task rules (:func:`decide_task`), first match wins, on the *counted* labels (labels from annotators who are
flagged or below the task's required tier are left out and listed in the evidence):

1. a counted label from a ``final_say`` tier (reviewer) → FINAL with that label;
2. predicted difficulty > ``difficulty_above`` while the required tier is below ``difficult_start_tier`` →
   ESCALATE there (routing at the start; not counted against ``max_escalations``);
3. the newest submission is from a flagged annotator → ESCALATE one tier;
4. the stop rule is met (at least ``overlap.min`` labels) → FINAL;
5. at least ``overlap.min`` labels and agreement < ``agreement_below`` → ESCALATE one tier;
6. fewer than ``overlap.max`` labels → NEED_MORE;
7. ``overlap.max`` reached unsettled → ESCALATE one tier, or FINAL (``confident: False``) when escalation is
   impossible (top tier or ``max_escalations`` used).

Rules 3, 5 and 7 fall through when escalation is impossible. :func:`check_sla` handles escalated tasks
that miss their deadline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from routing.policy import Policy
from routing.stopping import decide_stop

__all__ = [
    "AnnotatorAction",
    "AnnotatorDecision",
    "AnnotatorState",
    "SlaAction",
    "SlaDecision",
    "TaskAction",
    "TaskDecision",
    "TaskLabel",
    "TaskState",
    "check_sla",
    "counted_labels",
    "decide_annotator",
    "decide_task",
]


# -- annotators ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotatorState:
    """What the scoring side knows about one annotator.

    While the annotator is in the exam tier, ``gold_answered``/``gold_correct`` count the current exam
    attempt only, and ``exam_attempts`` is the number of attempts already failed.
    """

    annotator_id: str
    tier: str
    gold_answered: int = 0
    gold_correct: int = 0
    reliability: float | None = None
    reliability_lower: float = 0.0
    reliability_upper: float = 1.0
    exam_attempts: int = 0
    flagged: bool = False


class AnnotatorAction(StrEnum):
    PROMOTE = "promote"
    DEMOTE = "demote"
    QUALIFY = "qualify"
    FAIL_EXAM = "fail_exam"
    NONE = "none"


@dataclass(frozen=True)
class AnnotatorDecision:
    """``tier`` is the annotator's tier after the decision (unchanged for NONE and FAIL_EXAM)."""

    action: AnnotatorAction
    tier: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _annotator_evidence(a: AnnotatorState) -> dict[str, Any]:
    return {
        "tier": a.tier,
        "gold_answered": a.gold_answered,
        "gold_correct": a.gold_correct,
        "reliability": a.reliability,
        "reliability_lower": a.reliability_lower,
        "reliability_upper": a.reliability_upper,
        "exam_attempts": a.exam_attempts,
        "flagged": a.flagged,
    }


def _decide_exam(a: AnnotatorState, policy: Policy) -> AnnotatorDecision:
    exam = policy.qualification
    assert exam is not None  # only called for the exam tier
    evidence = _annotator_evidence(a)
    allowed = 1 + exam.max_retries
    evidence.update(exam_tasks=exam.exam_tasks, pass_mark=exam.pass_mark, attempts_allowed=allowed)
    if a.exam_attempts >= allowed:
        return AnnotatorDecision(
            AnnotatorAction.NONE, a.tier, f"locked out: {a.exam_attempts} of {allowed} exam attempts failed", evidence
        )
    if a.gold_answered < exam.exam_tasks:
        return AnnotatorDecision(
            AnnotatorAction.NONE, a.tier, f"exam in progress: {a.gold_answered}/{exam.exam_tasks} answered", evidence
        )
    score = a.gold_correct / a.gold_answered
    evidence["exam_score"] = score
    if score >= exam.pass_mark:
        new_tier = policy.tiers[1].name
        return AnnotatorDecision(
            AnnotatorAction.QUALIFY, new_tier, f"passed the exam: {score:.0%} >= {exam.pass_mark:.0%}", evidence
        )
    used = a.exam_attempts + 1
    retry = used < allowed
    evidence.update(attempts_used=used, retry_allowed=retry)
    tail = "may retry" if retry else "no attempts left"
    return AnnotatorDecision(
        AnnotatorAction.FAIL_EXAM,
        a.tier,
        f"failed the exam: {score:.0%} < {exam.pass_mark:.0%} (attempt {used} of {allowed}, {tail})",
        evidence,
    )


def decide_annotator(annotator: AnnotatorState, policy: Policy) -> AnnotatorDecision:
    """Tier decision for ``annotator`` after a scored submission (see the module docstring for the rules)."""
    a = annotator
    if a.gold_correct > a.gold_answered or min(a.gold_answered, a.gold_correct, a.exam_attempts) < 0:
        raise ValueError(f"inconsistent counts for annotator {a.annotator_id!r}: {_annotator_evidence(a)}")
    if not 0.0 <= a.reliability_lower <= a.reliability_upper <= 1.0:
        raise ValueError(
            f"reliability interval of {a.annotator_id!r} must satisfy 0 <= lower <= upper <= 1, "
            f"got [{a.reliability_lower}, {a.reliability_upper}]"
        )
    index = policy.tier_index(a.tier)
    if policy.qualification is not None and index == 0:
        return _decide_exam(a, policy)

    evidence = _annotator_evidence(a)
    tier = policy.tiers[index]
    if tier.demote is not None and index > 0 and a.reliability_upper < tier.demote.max_upper:
        below = policy.tiers[index - 1].name
        evidence.update(max_upper=tier.demote.max_upper, requalify=policy.qualification is not None and index == 1)
        return AnnotatorDecision(
            AnnotatorAction.DEMOTE,
            below,
            f"reliability upper bound {a.reliability_upper:.3f} < {tier.demote.max_upper} for {tier.name}",
            evidence,
        )

    if index + 1 < len(policy.tiers) and policy.tiers[index + 1].promote is not None:
        above = policy.tiers[index + 1]
        rule = above.promote
        assert rule is not None
        evidence.update(min_gold=rule.min_gold, min_lower=rule.min_lower)
        if a.flagged:
            return AnnotatorDecision(AnnotatorAction.NONE, a.tier, f"promotion to {above.name} held: flagged", evidence)
        missing = []
        if a.gold_answered < rule.min_gold:
            missing.append(f"{a.gold_answered}/{rule.min_gold} gold answers")
        if a.reliability_lower < rule.min_lower:
            missing.append(f"lower bound {a.reliability_lower:.3f} < {rule.min_lower}")
        if not missing:
            return AnnotatorDecision(
                AnnotatorAction.PROMOTE,
                above.name,
                f"{a.gold_answered} gold answers and lower bound {a.reliability_lower:.3f} >= {rule.min_lower}",
                evidence,
            )
        return AnnotatorDecision(AnnotatorAction.NONE, a.tier, f"not yet {above.name}: " + ", ".join(missing), evidence)
    return AnnotatorDecision(AnnotatorAction.NONE, a.tier, f"no automatic promotion above {a.tier}", evidence)


# -- tasks -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskLabel:
    """One submission: who gave which answer, and that annotator's tier and flag when they submitted."""

    annotator_id: str
    value: str
    tier: str
    flagged: bool = False


@dataclass(frozen=True)
class TaskState:
    """A task after its newest submission (the last of ``labels``).

    ``posterior``: consensus posterior over answers computed from :func:`counted_labels` (needed by the
    ``posterior`` stop rule; used to pick the final answer when given). ``agreement``: share of counted
    labels giving the leading answer; computed when None. ``required_tier``: lowest tier whose labels count
    (None: the first labeling tier). ``escalations``: escalations so far (difficulty routing excluded).
    ``escalated_at``: time of the last escalation, seconds (for :func:`check_sla`). ``stop_threshold``: the
    posterior threshold matched to the project's crowd (``overlap.stop.match_overlap``); None: the policy's.
    ``llm_labels``: ``(pseudo-worker, answer)`` of the LLM pre-labels that may count toward a stop (policy
    ``llm.counts_toward_stop``, trusted at ``llm.min_accuracy``; already in ``posterior``): never human labels,
    they count only in the stop rule, as one agreeing voice each, and a stop that needs them needs the posterior
    at ``llm.stop_threshold``.
    """

    task_id: str
    labels: tuple[TaskLabel, ...] = ()
    posterior: Mapping[str, float] | None = None
    agreement: float | None = None
    difficulty: float | None = None
    required_tier: str | None = None
    escalations: int = 0
    escalated_at: float | None = None
    stop_threshold: float | None = None
    llm_labels: tuple[tuple[str, str], ...] = ()


class TaskAction(StrEnum):
    FINAL = "final"
    NEED_MORE = "need_more"
    ESCALATE = "escalate"


@dataclass(frozen=True)
class TaskDecision:
    """``tier``: the tier the task's next annotation must come from (the new one for ESCALATE; the current
    required tier otherwise). ``label``: the consensus answer for FINAL (None otherwise)."""

    action: TaskAction
    tier: str
    reason: str
    label: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


def _required_index(task: TaskState, policy: Policy) -> int:
    if task.required_tier is None:
        return policy.first_labeling_index
    return max(policy.tier_index(task.required_tier), policy.first_labeling_index)


def _split_labels(task: TaskState, policy: Policy) -> tuple[list[TaskLabel], list[dict[str, str]]]:
    required = _required_index(task, policy)
    counted: list[TaskLabel] = []
    excluded: list[dict[str, str]] = []
    for label in task.labels:
        if label.flagged:
            excluded.append({"annotator_id": label.annotator_id, "why": "flagged annotator"})
        elif policy.tier_index(label.tier) < required:
            why = f"tier {label.tier} below required {policy.tiers[required].name}"
            excluded.append({"annotator_id": label.annotator_id, "why": why})
        else:
            counted.append(label)
    return counted, excluded


def counted_labels(task: TaskState, policy: Policy) -> list[TaskLabel]:
    """The labels that count towards the task's consensus: not flagged, at or above the required tier.

    Compute :attr:`TaskState.posterior` from these.
    """
    return _split_labels(task, policy)[0]


def _stop_met(
    votes: Counter[str], leader: str, n: int, posterior: Mapping[str, float] | None, policy: Policy,
    threshold: float | None = None, llm_votes: Counter[str] | None = None,
) -> tuple[bool, str]:
    overlap = policy.overlap
    stop = overlap.stop
    ranked = votes.most_common()
    lead_votes = votes[leader]
    runner_up = max((c for v, c in ((v, c) for v, c in ranked if v != leader)), default=0)
    if stop.rule == "fixed":
        if lead_votes == runner_up:
            return False, f"{n} labels but no single leading answer"
        return True, f"fixed overlap of {overlap.min} reached"
    if stop.rule == "margin":
        gap = lead_votes - runner_up
        if gap >= stop.k:
            return True, f"leading answer {gap} votes ahead (>= {stop.k})"
        return False, f"leading answer {gap} votes ahead (< {stop.k})"
    assert posterior is not None
    decision = decide_stop(
        posterior, votes + (llm_votes or Counter()), threshold=stop.threshold if threshold is None else threshold,
        min_labels=overlap.min, min_agreeing=stop.min_agreeing,
    )
    if decision.stop and llm_votes and votes[decision.label] < stop.min_agreeing \
            and decision.confidence < policy.llm.stop_threshold:
        return False, f"posterior {decision.confidence:.3f} < {policy.llm.stop_threshold} needed with the LLM's voice"
    return decision.stop, decision.reason


def decide_task(task: TaskState, policy: Policy) -> TaskDecision:
    """Decision for ``task`` after its newest submission (see the module docstring for the rules)."""
    esc = policy.escalation
    overlap = policy.overlap
    required = _required_index(task, policy)
    required_name = policy.tiers[required].name
    counted, excluded = _split_labels(task, policy)
    votes: Counter[str] = Counter(label.value for label in counted)
    n = len(counted)
    if policy.overlap.stop.rule == "posterior" and n and task.posterior is None:
        raise ValueError(f"task {task.task_id!r}: the posterior stop rule needs TaskState.posterior")
    if task.posterior:
        leader: str | None = max(task.posterior.items(), key=lambda kv: kv[1])[0]
    else:
        # Most votes; ties go to the answer that reached that count first, which is deterministic.
        leader = max(votes, key=lambda v: votes[v]) if votes else None
    agreement = task.agreement
    if agreement is None:
        agreement = votes[leader] / n if n and leader is not None else None
    can_escalate = task.escalations < esc.max_escalations and required + 1 < len(policy.tiers)
    evidence: dict[str, Any] = {
        "required_tier": required_name,
        "counted": n,
        "excluded": excluded,
        "votes": dict(votes),
        "leader": leader,
        "agreement": agreement,
        "posterior": dict(task.posterior) if task.posterior else None,
        "difficulty": task.difficulty,
        "escalations": task.escalations,
        "can_escalate": can_escalate,
    }
    if task.stop_threshold is not None:
        evidence["stop_threshold"] = task.stop_threshold

    def escalate(reason: str, target: int | None = None, counts: bool = True) -> TaskDecision:
        index = required + 1 if target is None else target
        return TaskDecision(
            TaskAction.ESCALATE,
            policy.tiers[index].name,
            reason,
            evidence={**evidence, "counts_toward_limit": counts},
        )

    def final(reason: str, label: str | None, confident: bool = True) -> TaskDecision:
        return TaskDecision(TaskAction.FINAL, required_name, reason, label, {**evidence, "confident": confident})

    # 1. A reviewer's (final_say) label settles the task; the newest one wins.
    for label in reversed(counted):
        if policy.tier(label.tier).final_say:
            evidence["decided_by"] = label.annotator_id
            return final(f"{label.tier} {label.annotator_id} has the final say", label.value)

    # 2. Predicted-hard tasks start at a higher tier.
    if (
        esc.difficulty_above is not None
        and esc.difficult_start_tier is not None
        and task.difficulty is not None
        and task.difficulty > esc.difficulty_above
        and required < policy.tier_index(esc.difficult_start_tier)
    ):
        return escalate(
            f"predicted difficulty {task.difficulty:.2f} > {esc.difficulty_above}: start at {esc.difficult_start_tier}",
            target=policy.tier_index(esc.difficult_start_tier),
            counts=False,
        )

    # 3. A flagged annotator just submitted: get a trustworthy label from higher up.
    newest = task.labels[-1] if task.labels else None
    if esc.on_flagged_annotator and newest is not None and newest.flagged and can_escalate:
        return escalate(f"submission by flagged annotator {newest.annotator_id}")

    # 4. Confident enough.
    llm_votes: Counter[str] = Counter(answer for _, answer in task.llm_labels)
    if n + sum(llm_votes.values()) >= overlap.min and n and leader is not None:
        met, why = _stop_met(votes, leader, n, task.posterior, policy, task.stop_threshold, llm_votes)
        evidence["stop"] = why
        if met:
            return final(why, leader)

    # 5. Annotators disagree too much for this tier.
    if (
        n >= overlap.min
        and esc.agreement_below is not None
        and agreement is not None
        and agreement < esc.agreement_below
        and can_escalate
    ):
        return escalate(f"agreement {agreement:.2f} < {esc.agreement_below} after {n} labels")

    # 6. Room for another label.
    if n < overlap.max:
        return TaskDecision(
            TaskAction.NEED_MORE,
            required_name,
            f"{n} of at most {overlap.max} labels" + (f"; {evidence['stop']}" if "stop" in evidence else ""),
            evidence={**evidence, "needed_at_least": max(overlap.min - n, 1)},
        )

    # 7. Out of overlap without a settled answer.
    if can_escalate:
        return escalate(f"maximum overlap {overlap.max} reached unsettled")
    return final(f"maximum overlap {overlap.max} reached, cannot escalate: best available answer", leader, False)


# -- SLA -------------------------------------------------------------------------------------------------


class SlaAction(StrEnum):
    NONE = "none"
    ESCALATE = "escalate"
    ALERT = "alert"


@dataclass(frozen=True)
class SlaDecision:
    action: SlaAction
    tier: str | None
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def check_sla(task: TaskState, now: float, policy: Policy) -> SlaDecision:
    """Whether an escalated, unfinished ``task`` has missed its deadline at time ``now`` (seconds, same clock
    as ``escalated_at``), and what to do: escalate one more tier, or alert when that is impossible or the
    policy says so."""
    sla = policy.sla
    required = _required_index(task, policy)
    evidence: dict[str, Any] = {
        "escalated_at": task.escalated_at,
        "now": now,
        "deadline_seconds": sla.deadline_seconds,
        "required_tier": policy.tiers[required].name,
    }
    if sla.deadline_seconds is None or task.escalated_at is None:
        return SlaDecision(SlaAction.NONE, None, "no deadline applies", evidence)
    waited = now - task.escalated_at
    evidence["waited_seconds"] = waited
    if waited <= sla.deadline_seconds:
        within = f"within deadline ({waited:.0f}s of {sla.deadline_seconds:.0f}s)"
        return SlaDecision(SlaAction.NONE, None, within, evidence)
    breach = f"deadline missed ({waited:.0f}s > {sla.deadline_seconds:.0f}s)"
    can_escalate = task.escalations < policy.escalation.max_escalations and required + 1 < len(policy.tiers)
    if sla.on_breach == "escalate" and can_escalate:
        return SlaDecision(SlaAction.ESCALATE, policy.tiers[required + 1].name, f"{breach}: escalate", evidence)
    why = "policy says alert" if sla.on_breach == "alert" else "cannot escalate further"
    return SlaDecision(SlaAction.ALERT, None, f"{breach}: alert ({why})", evidence)
