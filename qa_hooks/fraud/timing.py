"""Time on task: answers given far faster than the project's own submissions take on items that long (pure).

What an item should take is learnt from the project itself: a robust (Huber) regression of log lead time on
log item length and the task's predicted difficulty (when crowdgate's model gave one), so long passages and hard
items are allowed to take longer; each answer's residual is a robust z-score (the
residuals' median absolute deviation as the scale). An answer is *too fast* when its z-score is below ``-z``.
Bursts count too: the time credited to an answer is the smaller of its ``lead_time`` and the gap since the
annotator's previous submission, so a script that posts answers every second with a made-up ``lead_time`` is
timed by its gaps. The test: the number of too-fast answers against the share of the project's answers that
fast (binomial, one-sided), so a fast but careful worker is judged against how fast careful workers go here:
the honest rate is the ``quantile`` (0.9) of the *other* annotators' own shares of too-fast answers, since some
honest people are simply quick (and a bot must not set its own bar).

Robust z-scores follow Iglewicz & Hoaglin, *How to Detect and Handle Outliers* (1993); Toloka's "fast
responses" and Prolific's "exceptionally fast" rules are fixed-threshold versions of the same idea.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import HuberRegressor

from qa_hooks.fraud.evidence import Answer, Evidence, binomial_excess

__all__ = ["TimeOnTask", "effective_times"]

MAD_TO_SD = 1.4826


def effective_times(answers: Sequence[Answer]) -> list[tuple[float, Answer]]:
    """(seconds credited, answer) per timed, non-skipped answer: ``lead_time`` capped by the gap since the
    previous submission (bursts)."""
    out: list[tuple[float, Answer]] = []
    previous: float | None = None
    for a in answers:
        seconds = a.lead_time
        if a.at is not None and previous is not None and a.at >= previous:
            gap = a.at - previous
            seconds = gap if seconds is None else min(seconds, gap)
        if a.at is not None:
            previous = a.at
        if seconds is not None and not a.skipped:
            out.append((max(float(seconds), 0.05), a))
    return out


class TimeOnTask:
    """Too fast against what the project's submissions take on items of that length and difficulty.

    Fitted attributes: ``coef_`` and ``intercept_`` (log seconds on log(1 + characters) and predicted difficulty;
    a feature nobody has is filled with its mean), ``scale_`` (robust sd of the residuals), ``shares_``
    (annotator -> their share of answers below ``-z``), ``fast_rate_`` (the honest rate on everyone, see
    :meth:`rate_without`).
    """

    name = "too_fast"

    def __init__(self, z: float = 2.5, min_answers: int = 5, floor: float = 0.03, quantile: float = 0.9) -> None:
        self.z = z
        self.quantile = quantile
        self.min_answers = min_answers
        self.floor = floor

    def _features(self, a: Answer) -> list[float]:
        return [math.log1p(a.length) if a.length is not None else self.means_[0],
                a.difficulty if a.difficulty is not None else self.means_[1]]

    def fit(self, answers_by_annotator: Mapping[Any, Sequence[Answer]]) -> TimeOnTask:
        per_annotator = [effective_times(answers) for answers in answers_by_annotator.values()]
        pairs = [p for timed in per_annotator for p in timed]
        self.fitted_ = len(pairs) >= 2 * self.min_answers
        if not self.fitted_:
            return self
        lengths = [math.log1p(a.length) for _, a in pairs if a.length is not None]
        difficulties = [a.difficulty for _, a in pairs if a.difficulty is not None]
        self.means_ = (statistics.fmean(lengths) if lengths else 0.0,
                       statistics.fmean(difficulties) if difficulties else 0.0)
        x = np.array([self._features(a) for _, a in pairs])
        y = np.log(np.array([s for s, _ in pairs]))
        varying = np.ptp(x, axis=0) > 1e-9
        self.coef_ = np.zeros(2)
        if varying.any():
            model = HuberRegressor().fit(x[:, varying], y)
            self.coef_[varying] = model.coef_
            self.intercept_ = float(model.intercept_)
        else:
            self.intercept_ = float(np.median(y))
        residuals = y - (self.intercept_ + x @ self.coef_)
        center = float(np.median(residuals))
        self.intercept_ += center
        residuals -= center
        self.scale_ = max(float(np.median(np.abs(residuals))) * MAD_TO_SD, 0.05)
        self.shares_ = {a: float(np.mean([self._z(s, x) < -self.z for s, x in timed]))
                        for a, timed in zip(answers_by_annotator, per_annotator, strict=True)
                        if len(timed) >= 2 * self.min_answers}
        self.pooled_rate_ = float(np.mean(residuals / self.scale_ < -self.z))
        self.fast_rate_ = self.rate_without(None)
        return self

    def rate_without(self, annotator: Any) -> float:
        """The honest rate of too-fast answers, judged on everyone but ``annotator``."""
        shares = [v for a, v in self.shares_.items() if a != annotator]
        rate = float(np.quantile(shares, self.quantile)) if len(shares) >= 3 else self.pooled_rate_
        return min(max(rate, self.floor), 0.5)

    def expected_seconds(self, answer: Answer) -> float:
        """What the project's submissions take on this answer's item."""
        return math.exp(self.intercept_ + float(np.dot(self.coef_, self._features(answer))))

    def _z(self, seconds: float, answer: Answer) -> float:
        return (math.log(seconds) - math.log(self.expected_seconds(answer))) / self.scale_

    def assess(self, answers: Sequence[Answer], annotator: Any = None) -> Evidence | None:
        if not getattr(self, "fitted_", False):
            return None
        rate = self.rate_without(annotator)
        timed = effective_times(answers)
        if len(timed) < self.min_answers:
            return None
        zs = [self._z(s, a) for s, a in timed]
        fast = sum(z < -self.z for z in zs)
        p = binomial_excess(fast, len(timed), rate)
        mine = statistics.median(s for s, _ in timed)
        typical = statistics.median(self.expected_seconds(a) for _, a in timed)
        reason = (f"{fast} of {len(timed)} answers came far faster than this project's submissions take on items "
                  f"like these (median {mine:.1f} s against {typical:.1f} s); even quick annotators here give "
                  f"{rate:.0%} of their answers that fast")
        return Evidence(self.name, p, reason, {"fast": fast, "timed": len(timed), "median_s": round(mine, 2),
                                              "expected_median_s": round(typical, 2),
                                              "honest_fast_rate": round(rate, 4),
                                              "median_z": round(statistics.median(zs), 2)})
