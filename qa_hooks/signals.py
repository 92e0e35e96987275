"""Low-effort and fraud signals for one annotator (pure: no I/O).

Each rule compares the annotator with their own project, never with a fixed absolute, because tasks differ:

- ``too_fast``: the median of their recent lead times is under ``FAST_RATIO`` of the project's median
  (at least ``MIN_TIMED`` timed submissions). Clicking through without reading shows up here first.
- ``one_option``: they give one option in at least ``ONE_OPTION_SHARE`` of their labels (at least
  ``MIN_LABELS``) while that option's estimated share of the truth is far lower. "Always the same option" is only
  suspicious against the class prior: on a crowd set where 88 % of gold is one class, workers giving one label
  90 % of the time were as accurate as the rest.
- ``fails_gold``: at least ``MIN_GOLD`` gold answers and the upper end of their gold-accuracy interval is
  below ``GOLD_UPPER``.
- ``disagrees_with_peers``: at least ``MIN_EVIDENCE`` tasks of evidence and the upper end of their reliability
  interval is below ``RELIABILITY_UPPER``: their answers are mostly not what reliable peers give.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FAST_RATIO = 0.25
MIN_TIMED = 10
ONE_OPTION_SHARE = 0.9
MIN_LABELS = 20
PRIOR_MARGIN = 0.3
MIN_GOLD = 5
GOLD_UPPER = 0.5
MIN_EVIDENCE = 20
RELIABILITY_UPPER = 0.55


@dataclass(frozen=True)
class Flag:
    name: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _too_fast(lead_times: Sequence[float], project_lead_times: Sequence[float]) -> Flag | None:
    if len(lead_times) < MIN_TIMED or len(project_lead_times) < MIN_TIMED:
        return None
    mine, typical = statistics.median(lead_times), statistics.median(project_lead_times)
    if typical > 0 and mine < FAST_RATIO * typical:
        return Flag("too_fast", f"median lead time {mine:.1f} s against the project's {typical:.1f} s",
                    {"median_s": mine, "project_median_s": typical, "timed": len(lead_times)})
    return None


def _one_option(given: Mapping[str, float], class_prior: Mapping[str, float]) -> Flag | None:
    total = sum(given.values())
    if total < MIN_LABELS or not given:
        return None
    option, count = max(given.items(), key=lambda kv: kv[1])
    share = count / total
    expected = class_prior.get(option, 0.0)
    if share >= ONE_OPTION_SHARE and share - expected >= PRIOR_MARGIN:
        return Flag("one_option", f"{share:.0%} of labels are {option!r}, which is about {expected:.0%} of the truth",
                    {"option": option, "share": share, "prior": expected, "labels": total})
    return None


def annotator_flags(
    *,
    lead_times: Sequence[float],
    project_lead_times: Sequence[float],
    given: Mapping[str, float],
    class_prior: Mapping[str, float],
    gold_n: int,
    gold_high: float | None,
    evidence: float,
    reliability_high: float,
) -> list[Flag]:
    """Every signal that fires for one annotator, each with its reason and evidence."""
    flags = [f for f in (_too_fast(lead_times, project_lead_times), _one_option(given, class_prior)) if f]
    if gold_n >= MIN_GOLD and gold_high is not None and gold_high < GOLD_UPPER:
        flags.append(Flag("fails_gold", f"gold accuracy at most {gold_high:.2f} after {gold_n} gold answers",
                          {"gold_n": gold_n, "gold_high": gold_high}))
    if evidence >= MIN_EVIDENCE and reliability_high < RELIABILITY_UPPER:
        flags.append(Flag("disagrees_with_peers", f"reliability at most {reliability_high:.2f} on {evidence:.0f} tasks",
                          {"evidence": evidence, "reliability_high": reliability_high}))
    return flags


def class_prior(confusions: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    """The truth's class shares, estimated from every annotator's confusion counts (true class -> given)."""
    totals: dict[str, float] = {}
    for matrix in confusions:
        for true_class, row in matrix.items():
            totals[true_class] = totals.get(true_class, 0.0) + sum(row.values())
    grand = sum(totals.values())
    return {c: v / grand for c, v in totals.items()} if grand else {}


def given_counts(confusion: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """How often the annotator gave each option (columns of their confusion counts)."""
    given: dict[str, float] = {}
    for row in confusion.values():
        for option, count in row.items():
            given[option] = given.get(option, 0.0) + count
    return given
