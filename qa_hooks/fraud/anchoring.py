"""Pre-label anchoring: accepting the ML pre-label unchanged where gold or the other annotators show it wrong
(pure).

Accepting a correct pre-label is what a careful annotator does too, so only the tasks where the pre-label
disagrees with the best answer known (gold, else the peers' consensus) are evidence. Honest annotators of the
project give the wrong pre-label's answer on such tasks at some rate (they make mistakes, sometimes the same
one): the median of their shares plus ``slack`` is the honest bound; the test is one-sided binomial.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from qa_hooks.fraud.evidence import Answer, Evidence, binomial_excess

__all__ = ["PrelabelAnchoring"]


def _wrong_prelabels(answers: Sequence[Answer]) -> list[bool]:
    """For each answer whose pre-label was wrong: whether they gave it anyway."""
    return [a.option == a.prelabel for a in answers
            if a.option is not None and a.prelabel is not None and a.reference is not None
            and a.prelabel != a.reference]


class PrelabelAnchoring:
    """Accepting wrong pre-labels. Fitted attributes: ``project_rate_``, ``rate_``."""

    name = "accepts_prelabels"

    def __init__(self, min_wrong: int = 3, slack: float = 0.05, floor: float = 0.05) -> None:
        self.min_wrong = min_wrong
        self.slack = slack
        self.floor = floor

    def fit(self, answers_by_annotator: Mapping[Any, Sequence[Answer]]) -> PrelabelAnchoring:
        shares = []
        for answers in answers_by_annotator.values():
            judged = _wrong_prelabels(answers)
            if len(judged) >= self.min_wrong:
                shares.append(sum(judged) / len(judged))
        self.project_rate_ = statistics.median(shares) if shares else 0.2
        self.rate_ = min(max(self.project_rate_, self.floor) + self.slack, 0.9)
        return self

    def assess(self, answers: Sequence[Answer]) -> Evidence | None:
        if not hasattr(self, "rate_"):
            return None
        judged = _wrong_prelabels(answers)
        if len(judged) < self.min_wrong:
            return None
        accepted = sum(judged)
        p = binomial_excess(accepted, len(judged), self.rate_)
        reason = (f"gave the ML pre-label's answer on {accepted} of {len(judged)} tasks where gold or the other "
                  f"annotators show it was wrong; annotators here do that {self.project_rate_:.0%} of the time")
        return Evidence(self.name, p, reason, {"accepted_wrong": accepted, "wrong_prelabels": len(judged),
                                              "project_rate": round(self.project_rate_, 4)})
