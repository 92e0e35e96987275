"""Collusion: a pair of annotators agreeing far more often than chance predicts from their accuracies (pure).

Two independent annotators of accuracies ``p_a`` and ``p_b`` on ``K`` classes agree with probability about
``p_a·p_b + (1 - p_a)(1 - p_b)/(K - 1)`` (Dawid & Skene, 1979: errors independent given the truth). Honest
pairs agree a little more than that, since hard items trip both: the project's median excess over the
prediction (over pairs with at least ``min_shared`` tasks) is added, plus ``slack``. A pair copying each other
agrees on nearly everything whatever their accuracy; the test is one-sided binomial per partner,
Bonferroni-corrected over the partners tested.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from qa_hooks.fraud.evidence import Answer, Evidence, binomial_excess

__all__ = ["Collusion", "smoothed_accuracy"]


def smoothed_accuracy(answers: Sequence[Answer], prior: float = 0.7, weight: float = 4.0) -> float:
    """Accuracy against the best answer known (gold, else the peers' consensus), shrunk towards ``prior``
    (``weight`` pseudo-answers)."""
    judged = [a.option == a.reference for a in answers if a.option is not None and a.reference is not None]
    return (sum(judged) + prior * weight) / (len(judged) + weight)


class Collusion:
    """Pairs agreeing beyond chance. Fitted attributes: ``classes_``, ``excess_`` (honest pairs' median excess
    agreement over independence), ``accuracy_`` (annotator -> smoothed gold accuracy)."""

    name = "colludes"

    def __init__(self, min_shared: int = 10, slack: float = 0.02) -> None:
        self.min_shared = min_shared
        self.slack = slack

    def chance(self, p_a: float, p_b: float) -> float:
        k = max(self.classes_, 2)
        return p_a * p_b + (1 - p_a) * (1 - p_b) / (k - 1)

    def fit(self, answers_by_annotator: Mapping[Any, Sequence[Answer]]) -> Collusion:
        self.given_: dict[Any, dict[Any, str]] = {}
        options: set[str] = set()
        for annotator, answers in answers_by_annotator.items():
            for a in answers:
                if a.option is not None:
                    self.given_.setdefault(a.task, {})[annotator] = a.option
                    options.add(a.option)
        self.classes_ = len(options)
        self.accuracy_ = {a: smoothed_accuracy(answers) for a, answers in answers_by_annotator.items()}
        pairs: dict[tuple[Any, Any], list[int]] = {}
        for labels in self.given_.values():
            people = sorted(labels, key=str)
            for i, a in enumerate(people):
                for b in people[i + 1:]:
                    counts = pairs.setdefault((a, b), [0, 0])
                    counts[0] += labels[a] == labels[b]
                    counts[1] += 1
        excess = [agree / n - self.chance(self.accuracy_[a], self.accuracy_[b])
                  for (a, b), (agree, n) in pairs.items() if n >= self.min_shared]
        self.excess_ = max(statistics.median(excess), 0.0) if excess else 0.0
        return self

    def assess(self, answers: Sequence[Answer], annotator: Any = None) -> Evidence | None:
        if not hasattr(self, "given_"):
            return None
        mine = {a.task: a.option for a in answers if a.option is not None}
        shared: dict[Any, list[int]] = {}
        for task, option in mine.items():
            for other, theirs in self.given_.get(task, {}).items():
                if other != annotator:
                    counts = shared.setdefault(other, [0, 0])
                    counts[0] += option == theirs
                    counts[1] += 1
        tested = {b: c for b, c in shared.items() if c[1] >= self.min_shared}
        if not tested:
            return None
        p_me = smoothed_accuracy(answers)
        best: tuple[float, Any, int, int, float] | None = None
        for other, (agree, n) in tested.items():
            p0 = min(self.chance(p_me, self.accuracy_.get(other, 0.7)) + self.excess_ + self.slack, 0.99)
            p = binomial_excess(agree, n, p0)
            if best is None or p < best[0]:
                best = (p, other, agree, n, p0)
        assert best is not None
        p, other, agree, n, p0 = best
        reason = (f"agreed with annotator {other} on {agree} of {n} shared tasks ({agree / n:.0%}); their accuracies "
                  f"predict about {p0 - self.slack:.0%}")
        return Evidence(self.name, min(1.0, p * len(tested)), reason,
                        {"partner": other, "agree": agree, "shared": n, "expected": round(p0 - self.slack, 4),
                         "partners_tested": len(tested)})
