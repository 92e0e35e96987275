"""Answer distribution: one option, the first or the last, given far more often than the project's truth has it
(pure).

The class prior is learnt from the project (the gold answers when there are enough, else the peers' consensus
of every task) and narrowed to the annotator's own tasks: ``π_c`` is the share of their tasks whose gold (else
consensus, else the project's prior) is ``c``, since crowds are not served tasks at random. An honest annotator
of accuracy ``q`` gives option ``c`` with probability about ``q·π_c + (1 - q)·(1 - π_c)/(K - 1)``; over the
plausible accuracies (``min_accuracy`` … 1) that is at most :meth:`honest_share`, plus ``slack``. The test is a
one-sided binomial on the option they give most, Bonferroni-corrected over the ``K`` options, so "90 % one
label" is only evidence where that label is rare in the truth (on a crowd set where 88 % of the gold was one
label, workers giving it 90 % of the time were as accurate as the rest). Straight-lining on a Rating scale is
the same test on the rating given. Position bias is named when that option is the first or the last in the
label config's order.

Raykar & Yu, "Eliminating spammers and ranking annotators for crowdsourced labeling tasks" (JMLR 2012) show
that fixed-answer spammers are the ones a label distribution gives away, unlike uniform random ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from qa_hooks.fraud.evidence import Answer, Evidence, binomial_excess

__all__ = ["AnswerDistribution"]


class AnswerDistribution:
    """One option over-given against the project's class prior.

    Fitted attributes: ``prior_`` (option -> share of the truth), ``options_`` (in the config's order).
    """

    name = "one_option"

    def __init__(self, options: Sequence[str] = (), min_answers: int = 8, min_accuracy: float = 0.5,
                 slack: float = 0.05, min_gold: int = 30) -> None:
        self.options = tuple(options)
        self.min_answers = min_answers
        self.min_accuracy = min_accuracy
        self.slack = slack
        self.min_gold = min_gold

    def fit(self, answers_by_annotator: Mapping[Any, Sequence[Answer]]) -> AnswerDistribution:
        gold: dict[Any, str] = {}
        consensus: dict[Any, str] = {}
        given: Counter[str] = Counter()
        for answers in answers_by_annotator.values():
            for a in answers:
                if a.gold is not None:
                    gold[a.task] = a.gold
                elif a.consensus is not None:
                    consensus[a.task] = a.consensus
                if a.option is not None:
                    given[a.option] += 1
        truth = Counter(gold.values()) if len(gold) >= self.min_gold else Counter({**consensus, **gold}.values())
        if not truth:
            truth = given
        options = list(self.options) or sorted(set(truth) | set(given))
        options += sorted((set(truth) | set(given)) - set(options))
        total = sum(truth.values()) or 1
        self.options_ = tuple(options)
        self.prior_ = {c: truth.get(c, 0) / total for c in options}
        return self

    def honest_share(self, option: str, prior: float | None = None) -> float:
        """The largest share of ``option`` an honest annotator of accuracy >= ``min_accuracy`` gives on tasks
        whose truth is ``option`` with share ``prior`` (default: the project's)."""
        k = max(len(self.options_), 2)
        prior = self.prior_.get(option, 0.0) if prior is None else prior
        low = self.min_accuracy * prior + (1 - self.min_accuracy) * (1 - prior) / (k - 1)
        return min(max(prior, low) + self.slack, 0.995)

    def assess(self, answers: Sequence[Answer]) -> Evidence | None:
        if not getattr(self, "options_", None):
            return None
        judged = [a for a in answers if a.option is not None]
        given = [a.option for a in judged]
        if len(given) < self.min_answers:
            return None
        counts = Counter(given)
        option, count = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        # the truth's share of this option on their own tasks (gold, else consensus, else the project's prior)
        prior = sum((a.reference == option) if a.reference is not None else self.prior_.get(option, 0.0)
                    for a in judged) / len(judged)
        p0 = self.honest_share(option, prior)
        p = min(1.0, binomial_excess(count, len(given), p0) * len(self.options_))
        position = ""
        if option in self.options_ and len(self.options_) > 1:
            index = self.options_.index(option)
            position = " (the first option)" if index == 0 else " (the last option)" \
                if index == len(self.options_) - 1 else ""
        reason = (f"{count} of the last {len(given)} answers were {option!r}{position}; the truth of those tasks "
                  f"is {option!r} for {prior:.0%} (the project's prior for it is {self.prior_.get(option, 0.0):.0%})")
        return Evidence(self.name, p, reason, {"option": option, "count": count, "answers": len(given),
                                              "prior": round(self.prior_.get(option, 0.0), 4),
                                              "prior_on_their_tasks": round(prior, 4),
                                              "honest_share": round(p0, 4), "position": position.strip(" ()")})
