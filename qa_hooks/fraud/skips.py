"""Skips: a skip rate far above the project's, or many skips in a row (pure).

Toloka's "skipped assignments in a row" rule, made relative: the honest rate is the project's pooled skip rate
(at least ``floor``) plus ``slack``; the test is one-sided binomial, and a trailing run of ``s`` skips has
chance about ``rate^s`` per position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qa_hooks.fraud.evidence import Answer, Evidence, binomial_excess

__all__ = ["Skips"]


class Skips:
    """Skipping far more than peers. Fitted attributes: ``project_rate_`` and ``rate_`` (the honest bound)."""

    name = "skips"

    def __init__(self, min_answers: int = 10, floor: float = 0.02, slack: float = 0.05) -> None:
        self.min_answers = min_answers
        self.floor = floor
        self.slack = slack

    def fit(self, answers_by_annotator: Mapping[Any, Sequence[Answer]]) -> Skips:
        n = sum(len(a) for a in answers_by_annotator.values())
        skipped = sum(x.skipped for a in answers_by_annotator.values() for x in a)
        self.project_rate_ = skipped / n if n else 0.0
        self.rate_ = min(max(self.project_rate_, self.floor) + self.slack, 0.9)
        return self

    def assess(self, answers: Sequence[Answer]) -> Evidence | None:
        if not hasattr(self, "rate_") or len(answers) < self.min_answers:
            return None
        skipped = sum(a.skipped for a in answers)
        run = 0
        for a in reversed(answers):
            if not a.skipped:
                break
            run += 1
        p_rate = binomial_excess(skipped, len(answers), self.rate_)
        p_run = min(1.0, self.rate_ ** run * len(answers)) if run >= 3 else 1.0
        reason = (f"skipped {skipped} of {len(answers)} tasks ({skipped / len(answers):.0%}); the project skips "
                  f"{self.project_rate_:.0%}")
        if run >= 3:
            reason += f"; the last {run} in a row"
        return Evidence(self.name, min(p_rate, p_run), reason,
                        {"skipped": skipped, "answers": len(answers), "in_a_row": run,
                         "project_rate": round(self.project_rate_, 4)})
