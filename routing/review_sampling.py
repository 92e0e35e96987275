"""Which finished tasks a reviewer sees, and which submissions the LLM audits: pure sampling rules (no I/O).

Review (:func:`select_for_review`), in this order:

1. every task of a newly qualified annotator (their first ``new_annotator_tasks`` tasks after the exam) and
   every task on which the LLM audit disagreed with a human label: always reviewed, outside the budget;
2. a random share of the budget (``random_share``), drawn uniformly from the rest, so the error rate of the
   whole project can be estimated without bias from those reviews alone (:func:`error_rate_estimate`);
3. the rest of the budget by lowest agreement first, as Label Studio Enterprise orders its review queue
   (ties broken at random): disagreement is where errors are.

LLM audit (:func:`select_for_audit`): low-agreement tasks, flagged annotators and new annotators first, each
always audited; every other submission with probability ``rate``, decided by a hash of its id so the same
submission gets the same answer in every process and on every replay.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binomtest

__all__ = [
    "AuditCandidate",
    "ReviewCandidate",
    "ReviewPick",
    "error_rate_estimate",
    "review_budget",
    "select_for_audit",
    "select_for_review",
    "stable_fraction",
]

LOW_AGREEMENT = "low_agreement"
RANDOM = "random"
LLM_DISAGREES = "llm_disagrees"
NEW_ANNOTATOR = "new_annotator"


@dataclass(frozen=True)
class ReviewCandidate:
    """A finished task that could be reviewed. ``agreement`` in [0, 1] (None: unknown, ordered last among the
    low-agreement picks); ``llm_reason`` set when the LLM audit disagreed with one of its labels;
    ``new_annotators`` lists its annotators still inside their first reviewed tasks."""

    item: str
    agreement: float | None = None
    llm_reason: str | None = None
    new_annotators: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReviewPick:
    """A task chosen for review, the rule that chose it and why (shown to the reviewer)."""

    item: str
    rule: str  # new_annotator | llm_disagrees | random | low_agreement
    reason: str
    evidence: dict[str, object] = field(default_factory=dict)


def review_budget(rate: float, considered: int, picked_by_budget: int) -> int:
    """Budget picks due now: ``rate`` of every task ever considered, less what the budget already took."""
    return max(0, math.floor(rate * considered + 1e-9) - picked_by_budget)


def select_for_review(candidates: Sequence[ReviewCandidate], budget: int, *, random_share: float,
                      rng: np.random.Generator) -> list[ReviewPick]:
    """The tasks to review now (see the module docstring); mandatory picks first, then the budget's."""
    if not 0.0 <= random_share <= 1.0:
        raise ValueError(f"random_share must be in [0, 1], got {random_share}")
    picks: list[ReviewPick] = []
    rest: list[ReviewCandidate] = []
    for c in candidates:
        if c.new_annotators:
            picks.append(ReviewPick(c.item, NEW_ANNOTATOR,
                                    f"task of newly qualified annotator(s) {', '.join(c.new_annotators)}",
                                    {"annotators": list(c.new_annotators), "agreement": c.agreement}))
        elif c.llm_reason:
            picks.append(ReviewPick(c.item, LLM_DISAGREES, f"the LLM audit disagrees: {c.llm_reason}",
                                    {"agreement": c.agreement}))
        else:
            rest.append(c)
    budget = min(max(int(budget), 0), len(rest))
    n_random = min(round(budget * random_share), budget)
    order = rng.permutation(len(rest))
    shuffled = [rest[i] for i in order]
    chosen_random = shuffled[:n_random]
    picks += [ReviewPick(c.item, RANDOM, "random sample (unbiased estimate of the error rate)",
                         {"agreement": c.agreement, "random_share": random_share}) for c in chosen_random]
    remaining = shuffled[n_random:]
    # Stable sort of the shuffled list: ties in agreement come out in random order.
    remaining.sort(key=lambda c: math.inf if c.agreement is None else c.agreement)
    picks += [ReviewPick(c.item, LOW_AGREEMENT,
                         "low agreement first" + (f" ({c.agreement:.2f})" if c.agreement is not None else ""),
                         {"agreement": c.agreement}) for c in remaining[:budget - n_random]]
    return picks


def error_rate_estimate(random_outcomes: Iterable[bool], confidence: float = 0.9) -> dict[str, float | int | None]:
    """Share of reviewed random picks found wrong, with its Wilson interval: the project's error rate
    (only random picks are unbiased; low-agreement picks overstate it by design)."""
    outcomes = [bool(x) for x in random_outcomes]
    n, errors = len(outcomes), sum(outcomes)
    if n == 0:
        return {"reviewed": 0, "errors": 0, "error_rate": None, "low": None, "high": None}
    ci = binomtest(errors, n).proportion_ci(confidence_level=confidence, method="wilson")
    return {"reviewed": n, "errors": errors, "error_rate": errors / n, "low": float(ci.low), "high": float(ci.high)}


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key``: the same draw for the same submission everywhere."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class AuditCandidate:
    """A submitted human annotation the LLM could judge."""

    unique_id: str
    agreement: float | None = None
    flagged: bool = False
    new_annotator: bool = False


def select_for_audit(candidates: Sequence[AuditCandidate], rate: float, *, low_agreement_below: float,
                     salt: str = "") -> list[tuple[AuditCandidate, str]]:
    """Submissions to audit with the reason: low agreement, flagged or new annotators always (in that order
    of priority), the others with probability ``rate`` (see :func:`stable_fraction`)."""
    chosen: list[tuple[AuditCandidate, str]] = []
    for c in candidates:
        if c.agreement is not None and c.agreement < low_agreement_below:
            chosen.append((c, LOW_AGREEMENT))
        elif c.flagged:
            chosen.append((c, "flagged_annotator"))
        elif c.new_annotator:
            chosen.append((c, NEW_ANNOTATOR))
        elif rate > 0 and stable_fraction(f"{salt}:{c.unique_id}") < rate:
            chosen.append((c, RANDOM))
    return chosen
