"""What every fraud signal hands back: one answer record in, one piece of evidence out (pure).

An :class:`Answer` is one submission as the signals see it (what was asked, what was given, how fast, against
which gold, consensus and pre-label); an :class:`Evidence` is a signal's finding about one annotator: a p-value
(how likely an honest worker of this project would look at least this bad) and a sentence a manager can act on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scipy.stats import binom

__all__ = ["Answer", "Evidence", "binomial_excess", "binomial_shortfall", "surprise"]


@dataclass(frozen=True)
class Answer:
    """One submission of one annotator.

    ``option``: the single choice given (None for skips and non-categorical answers); ``text``: free text
    (TextArea); ``length``: characters of the task's text (for the time it should take); ``at``: submission time
    in seconds; ``gold``: the task's gold answer when it is a gold task; ``consensus``: what the other annotators
    of the task answered (their majority), if any; ``prelabel``: the ML pre-label shown, if any; ``difficulty``:
    the task's predicted difficulty in [0, 1], if any.
    """

    task: int | str
    at: float | None = None
    lead_time: float | None = None
    option: str | None = None
    text: str | None = None
    length: float | None = None
    skipped: bool = False
    gold: str | None = None
    consensus: str | None = None
    prelabel: str | None = None
    difficulty: float | None = None

    @property
    def correct(self) -> bool | None:
        """Right against gold (None: not a gold task, or no categorical answer)."""
        if self.gold is None or self.option is None:
            return None
        return self.option == self.gold

    @property
    def reference(self) -> str | None:
        """The best answer known for the task: gold, else the peers' consensus."""
        return self.gold if self.gold is not None else self.consensus


@dataclass(frozen=True)
class Evidence:
    """A signal's finding about one annotator. ``p_value``: chance that an honest annotator of the project shows
    at least this much of it; ``reason``: the finding in words; ``details``: the numbers behind it."""

    signal: str
    p_value: float
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def surprise(self) -> float:
        return surprise(self.p_value)

    def to_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "p_value": self.p_value, "surprise": round(self.surprise, 2),
                "reason": self.reason, "details": self.details}


def surprise(p_value: float) -> float:
    """-log10 of a p-value: 3 means one honest worker in a thousand would look like this."""
    return -math.log10(max(p_value, 1e-300))


def binomial_excess(k: int, n: int, p0: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p0): seeing at least ``k`` events in ``n`` at the honest rate ``p0``."""
    if n <= 0 or k <= 0:
        return 1.0
    return float(binom.sf(k - 1, n, min(max(p0, 1e-9), 1.0)))


def binomial_shortfall(k: int, n: int, p0: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p0): at most ``k`` successes in ``n`` at the honest rate ``p0``."""
    if n <= 0:
        return 1.0
    return float(binom.cdf(k, n, min(max(p0, 1e-9), 1.0)))
