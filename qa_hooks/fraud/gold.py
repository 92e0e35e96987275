"""Gold: accuracy on gold tasks significantly below the tier's, and failure streaks (pure).

The reference is the accuracy of the annotators it is fitted on (the project's; pass one tier's answers to judge
against a tier): the median of their gold accuracies less ``margin``, because half of honest annotators are
below the median.
The test is one-sided binomial (at most ``k`` right of ``n`` at the reference accuracy), not a threshold on a
mean, so five gold answers prove less than fifty. A streak of ``s`` failed gold answers in a row, at the end of
the record, has chance ``(1 - reference)^s`` for an honest annotator.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from qa_hooks.fraud.evidence import Answer, Evidence, binomial_shortfall

__all__ = ["GoldAccuracy", "reference_accuracy"]


def reference_accuracy(answers_by_annotator: Mapping[Any, Sequence[Answer]], key: str, min_n: int,
                       default: float) -> float:
    """Median over annotators (with at least ``min_n`` judged answers) of their accuracy against ``key``
    (``"gold"`` or ``"consensus"``); ``default`` when nobody qualifies."""
    shares = []
    for answers in answers_by_annotator.values():
        judged = [a.option == getattr(a, key) for a in answers
                  if a.option is not None and getattr(a, key) is not None and (key == "gold" or a.gold is None)]
        if len(judged) >= min_n:
            shares.append(sum(judged) / len(judged))
    return statistics.median(shares) if shares else default


class GoldAccuracy:
    """Gold accuracy below the tier's. Fitted attribute: ``reference_`` (the accuracy an honest annotator of
    the tier is assumed to reach at least)."""

    name = "fails_gold"

    def __init__(self, margin: float = 0.15, min_gold: int = 5, default_accuracy: float = 0.8,
                 floor: float = 0.55) -> None:
        self.margin = margin
        self.min_gold = min_gold
        self.default_accuracy = default_accuracy
        self.floor = floor

    def fit(self, answers_by_annotator: Mapping[Any, Sequence[Answer]]) -> GoldAccuracy:
        median = reference_accuracy(answers_by_annotator, "gold", self.min_gold, self.default_accuracy)
        self.tier_accuracy_ = median
        self.reference_ = min(max(median - self.margin, self.floor), 0.99)
        return self

    def assess(self, answers: Sequence[Answer]) -> Evidence | None:
        if not hasattr(self, "reference_"):
            return None
        judged = [a.correct for a in answers if a.correct is not None]
        if len(judged) < self.min_gold:
            return None
        right = sum(judged)
        p_test = binomial_shortfall(right, len(judged), self.reference_)
        streak = 0
        for ok in reversed(judged):
            if ok:
                break
            streak += 1
        p_streak = min(1.0, (1 - self.reference_) ** streak * len(judged)) if streak else 1.0
        p = min(p_test, p_streak)
        reason = (f"{right} of {len(judged)} gold answers right ({right / len(judged):.0%}); the tier gets "
                  f"{self.tier_accuracy_:.0%}")
        if streak >= 3:
            reason += f"; the last {streak} gold answers were all wrong"
        return Evidence(self.name, p, reason, {"right": right, "gold": len(judged), "streak": streak,
                                              "tier_accuracy": round(self.tier_accuracy_, 4),
                                              "reference": round(self.reference_, 4)})
