"""Who gets an escalated task: pure ranking of candidate annotators (no I/O, no clock).

Eligible: at or above the required tier, not flagged, never having touched the task (no earlier answer, skip or
assignment on it), and under ``max_load`` open assignments. Among them, available annotators (active within
``active_within`` seconds of ``now``) come first; then the highest score

    skill - load_weight * load

where ``skill`` is the annotator's accuracy on the answers in dispute — the mean, over the classes the earlier
labels gave, of their confusion-matrix accuracy on that true class, shrunk towards their overall reliability
(so a few gold items on one class do not dominate) — or their overall reliability when the task has no
categorical labels. Ties go to the lower load, then the lower user id, so the choice is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from routing.policy import Policy

__all__ = ["Assignment", "Candidate", "choose_annotator", "class_accuracy"]

# Pseudo-counts pulling a per-class accuracy towards the annotator's overall reliability.
SHRINK = 2.0


@dataclass(frozen=True)
class Candidate:
    annotator_id: int
    tier: str
    reliability: float  # posterior mean accuracy (qa_hooks.ledger.Reliability.mean)
    confusion: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # true -> given -> count
    load: int = 0  # open assignments
    last_seen: float | None = None  # last scored submission, seconds
    flagged: bool = False
    email: str | None = None


@dataclass(frozen=True)
class Assignment:
    """``annotator_id`` None: nobody eligible (``reason`` says why)."""

    annotator_id: int | None
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def class_accuracy(candidate: Candidate, true_class: str) -> float:
    """Accuracy on items whose true answer is ``true_class``, shrunk towards overall reliability."""
    row = candidate.confusion.get(true_class) or {}
    total = float(sum(row.values()))
    hits = float(row.get(true_class, 0.0))
    return (hits + SHRINK * candidate.reliability) / (total + SHRINK)


def _skill(candidate: Candidate, disputed: Sequence[str]) -> float:
    if not disputed:
        return candidate.reliability
    return sum(class_accuracy(candidate, c) for c in disputed) / len(disputed)


def choose_annotator(
    candidates: Iterable[Candidate],
    policy: Policy,
    required_tier: str,
    *,
    exclude: Iterable[int] = (),
    disputed: Sequence[str] = (),
    now: float,
    active_within: float,
    max_load: int = 50,
    load_weight: float = 0.02,
) -> Assignment:
    """Pick the annotator for a task that needs ``required_tier`` (see the module docstring)."""
    required = policy.tier_index(required_tier)
    excluded = {int(a) for a in exclude}
    disputed = tuple(dict.fromkeys(str(c) for c in disputed))
    rejected: dict[str, list[int]] = {"below_tier": [], "touched_task": [], "flagged": [], "overloaded": [],
                                      "unknown_tier": []}
    ranked: list[tuple[tuple[Any, ...], Candidate, dict[str, Any]]] = []
    for c in candidates:
        if c.tier not in policy.tier_names:
            rejected["unknown_tier"].append(c.annotator_id)
            continue
        if policy.tier_index(c.tier) < required:
            rejected["below_tier"].append(c.annotator_id)
            continue
        if c.annotator_id in excluded:
            rejected["touched_task"].append(c.annotator_id)
            continue
        if c.flagged:
            rejected["flagged"].append(c.annotator_id)
            continue
        if c.load >= max_load:
            rejected["overloaded"].append(c.annotator_id)
            continue
        available = c.last_seen is not None and now - c.last_seen <= active_within
        skill = _skill(c, disputed)
        score = skill - load_weight * c.load
        row = {"annotator": c.annotator_id, "tier": c.tier, "skill": round(skill, 4), "load": c.load,
               "available": available, "score": round(score, 4),
               "idle_s": None if c.last_seen is None else round(now - c.last_seen, 1)}
        ranked.append(((not available, -score, c.load, c.annotator_id), c, row))
    ranked.sort(key=lambda item: item[0])
    evidence: dict[str, Any] = {
        "required_tier": required_tier,
        "disputed": list(disputed),
        "ranking": [row for _, _, row in ranked[:10]],
        "eligible": len(ranked),
        "rejected": {k: sorted(v) for k, v in rejected.items() if v},
    }
    if not ranked:
        why = ", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in rejected.items() if v) or "no candidates"
        return Assignment(None, f"nobody eligible at {required_tier} or above ({why})", evidence)
    _, best, row = ranked[0]
    on = "/".join(disputed) if disputed else "this kind of task"
    state = "available" if row["available"] else "not seen recently (nobody available is eligible)"
    reason = (f"{best.annotator_id} ({best.tier}): skill {row['skill']:.2f} on {on}, load {best.load}, {state}; "
              f"best of {len(ranked)} eligible")
    return Assignment(best.annotator_id, reason, evidence)
