"""Peers: agreement with the other annotators' consensus far below what the project's annotators reach (pure).

The same one-sided binomial as gold, on the tasks that are not gold, against the median agreement with the
consensus less ``margin``. The consensus is noisy, so the reference is the agreement honest annotators
actually reach with it, not their accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qa_hooks.fraud.evidence import Answer, Evidence, binomial_shortfall
from qa_hooks.fraud.gold import reference_accuracy

__all__ = ["PeerAgreement"]


class PeerAgreement:
    """Disagreeing with peers. Fitted attribute: ``reference_``."""

    name = "disagrees_with_peers"

    def __init__(self, margin: float = 0.15, min_tasks: int = 8, default_agreement: float = 0.75,
                 floor: float = 0.5) -> None:
        self.margin = margin
        self.min_tasks = min_tasks
        self.default_agreement = default_agreement
        self.floor = floor

    def fit(self, answers_by_annotator: Mapping[Any, Sequence[Answer]]) -> PeerAgreement:
        self.median_ = reference_accuracy(answers_by_annotator, "consensus", self.min_tasks, self.default_agreement)
        self.reference_ = min(max(self.median_ - self.margin, self.floor), 0.99)
        return self

    def assess(self, answers: Sequence[Answer]) -> Evidence | None:
        if not hasattr(self, "reference_"):
            return None
        judged = [a.option == a.consensus for a in answers
                  if a.option is not None and a.consensus is not None and a.gold is None]
        if len(judged) < self.min_tasks:
            return None
        agree = sum(judged)
        p = binomial_shortfall(agree, len(judged), self.reference_)
        reason = (f"agreed with the other annotators on {agree} of {len(judged)} tasks ({agree / len(judged):.0%}); "
                  f"the project's annotators typically agree on {self.median_:.0%}")
        return Evidence(self.name, p, reason, {"agree": agree, "tasks": len(judged), "typical": round(self.median_, 4),
                                              "reference": round(self.reference_, 4)})
