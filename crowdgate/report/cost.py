"""Cost per accepted label and the payroll figures: a pure model of a policy's ``cost:`` section and the counts.

    model = CostModel(policy).fit(work, counts)
    model.per_accepted_, model.baseline_per_accepted_, model.saved_, model.annotators_

Definitions (the report, the dashboard and the payroll CSV all use these):

* A **label** is a submitted annotation that is not a skip. An annotator's **paid hours** are the sum of the
  Label Studio lead times crowdgate stored for their submissions (an annotation's first version; a skip stores
  none), in hours: the report's total lead time.
* **Wage**: with ``cost.wage_per: label``, the annotator's tier's ``wage`` times their labels; with ``hour``, the
  tier's ``wage`` times their paid hours. The tier is the annotator's current tier (an annotator in a tier the
  policy does not name is paid 0 and listed in ``unpriced_``). **Fee**: ``fee_share`` of the wage plus
  ``fee_per_label`` per label. **Total** = wage + fee.
* An **accepted label** is one task whose final label exists: the task's status is ``final`` or ``consensus``
  and it has a consensus label. Tasks still needing labels or escalated now are not accepted.
* **QA overhead** splits the project's labels: ``gold`` (labels scored against a gold answer, the exam
  included), ``escalation`` (labels written back from the escalation projects), ``review`` (verdicts given in
  the review project), ``overlap`` (labels beyond the first per task, less the escalation and review ones). Each
  is priced at the project's mean cost per label (total / labels).
* **Baseline**: the same accepted tasks labelled at a fixed overlap (``cost.baseline_overlap``, else
  ``overlap.max``) by the first labeling tier, with the same gold labels, at the same wages and fee (per hour:
  at the project's mean lead time per label). ``saved_`` = baseline total - total: what dynamic overlap saved.

Cost of a label as wage plus platform fee follows the crowdsourcing cost accounting of Ipeirotis, Provost and
Wang, "Quality management on Amazon Mechanical Turk" (HCOMP 2010); overlap as the main QA cost, Sheng, Provost
and Ipeirotis, "Get another label?" (KDD 2008).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from routing.policy import Policy

__all__ = ["AnnotatorCost", "AnnotatorWork", "CostModel", "QaCounts", "accepted", "qa_counts"]

ACCEPTED_STATUSES = ("final", "consensus")


@dataclass(frozen=True)
class AnnotatorWork:
    """What one annotator did in the period: labels (not skips) and the sum of their lead times."""

    annotator: int
    tier: str
    labels: int
    lead_time_s: float
    email: str | None = None


@dataclass(frozen=True)
class QaCounts:
    """The project's task and label counts the overhead split and the baseline need (see the module docstring)."""

    tasks: int
    accepted: int
    labels: int
    gold_labels: int = 0
    overlap_labels: int = 0
    escalation_labels: int = 0
    review_labels: int = 0


@dataclass(frozen=True)
class AnnotatorCost:
    """One payroll row."""

    annotator: int
    email: str | None
    tier: str
    labels: int
    paid_hours: float
    wage: float
    fee: float
    total: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def accepted(status: str, consensus: str | None) -> bool:
    """Whether a task counts as an accepted label (module docstring)."""
    return status in ACCEPTED_STATUSES and consensus is not None


def qa_counts(tasks: Iterable[tuple[int, str, str | None]], *, labels: int, gold_labels: int = 0,
              escalation_labels: int = 0, review_labels: int = 0) -> QaCounts:
    """Counts from each task's (labels, status, consensus) and the project's label counts."""
    n = n_accepted = beyond_first = 0
    for task_labels, status, consensus in tasks:
        n += 1
        n_accepted += accepted(status, consensus)
        beyond_first += max(0, int(task_labels) - 1)
    overlap = max(0, beyond_first - escalation_labels - review_labels)
    return QaCounts(tasks=n, accepted=n_accepted, labels=labels, gold_labels=gold_labels, overlap_labels=overlap,
                    escalation_labels=escalation_labels, review_labels=review_labels)


class CostModel:
    """Prices a project's work by its policy (module docstring has every definition).

    Fitted attributes: ``annotators_`` (:class:`AnnotatorCost` per annotator), ``wage_``, ``fee_``, ``total_``,
    ``labels_``, ``per_label_``, ``per_accepted_`` (None with no accepted task), ``overhead_`` (cost of the gold,
    overlap, escalation and review labels), ``baseline_overlap_``, ``baseline_labels_``, ``baseline_total_``,
    ``baseline_per_accepted_``, ``saved_``, ``unpriced_`` (annotators whose tier the policy does not name).
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def _wage_rate(self, tier: str) -> float | None:
        return self.policy.tier(tier).wage if tier in self.policy.tier_names else None

    def _fee(self, wage: float, labels: int) -> float:
        cost = self.policy.cost
        return wage * cost.fee_share + cost.fee_per_label * labels

    def fit(self, work: Sequence[AnnotatorWork], counts: QaCounts) -> CostModel:
        cost = self.policy.cost
        rows, unpriced = [], []
        for w in work:
            rate = self._wage_rate(w.tier)
            if rate is None:
                unpriced.append(w.annotator)
                rate = 0.0
            hours = w.lead_time_s / 3600.0
            wage = rate * (w.labels if cost.wage_per == "label" else hours)
            fee = self._fee(wage, w.labels)
            rows.append(AnnotatorCost(annotator=w.annotator, email=w.email, tier=w.tier, labels=w.labels,
                                      paid_hours=hours, wage=wage, fee=fee, total=wage + fee))
        self.annotators_ = rows
        self.unpriced_ = unpriced
        self.wage_ = sum(r.wage for r in rows)
        self.fee_ = sum(r.fee for r in rows)
        self.total_ = self.wage_ + self.fee_
        self.labels_ = counts.labels
        self.per_label_ = self.total_ / counts.labels if counts.labels else None
        self.per_accepted_ = self.total_ / counts.accepted if counts.accepted else None
        mean = self.per_label_ or 0.0
        self.overhead_ = {"gold": counts.gold_labels * mean, "overlap": counts.overlap_labels * mean,
                          "escalation": counts.escalation_labels * mean, "review": counts.review_labels * mean}

        # the baseline: every accepted task at a fixed overlap, by the first labeling tier, same gold
        self.baseline_overlap_ = cost.baseline_overlap or self.policy.overlap.max
        self.baseline_labels_ = counts.accepted * self.baseline_overlap_ + counts.gold_labels
        rate = self.policy.tiers[self.policy.first_labeling_index].wage
        if cost.wage_per == "label":
            wage_per_label = rate
        else:
            lead_s = sum(w.lead_time_s for w in work)
            labels = sum(w.labels for w in work)
            wage_per_label = rate * (lead_s / labels / 3600.0) if labels else 0.0
        price = wage_per_label + self._fee(wage_per_label, 1)
        self.baseline_total_ = self.baseline_labels_ * price
        self.baseline_per_accepted_ = self.baseline_total_ / counts.accepted if counts.accepted else None
        self.saved_ = self.baseline_total_ - self.total_
        return self

    def summary(self) -> dict[str, Any]:
        """The project's figures as plain values (the report's JSON, HTML and the dashboard)."""
        return {"currency": self.policy.cost.currency, "wage_per": self.policy.cost.wage_per,
                "labels": self.labels_, "wage": self.wage_, "fee": self.fee_, "total": self.total_,
                "per_label": self.per_label_, "per_accepted": self.per_accepted_, "overhead": dict(self.overhead_),
                "baseline_overlap": self.baseline_overlap_, "baseline_labels": self.baseline_labels_,
                "baseline_total": self.baseline_total_, "baseline_per_accepted": self.baseline_per_accepted_,
                "saved": self.saved_, "unpriced": list(self.unpriced_)}
