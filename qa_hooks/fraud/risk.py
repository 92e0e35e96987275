"""One risk score per annotator, with its reasons, from every fraud signal (pure).

Each signal (``qa_hooks.fraud.*``) is fitted on the whole project, then judges one annotator's answers and
returns :class:`~qa_hooks.fraud.evidence.Evidence` with a p-value: the chance an honest annotator of this
project looks at least that bad on that signal. The risk is the *surprise* of the smallest p-value after a
Bonferroni correction over the signals that could judge: ``-log10(min(1, m · min p))``. A risk of 4 means that
fewer than one honest annotator in 10,000 would show the strongest of those signals that strongly; the policy
(``fraud:``, :mod:`routing.policy`) maps it to actions. Every signal below ``report_p`` is a reason.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qa_hooks.fraud.anchoring import PrelabelAnchoring
from qa_hooks.fraud.answers import AnswerDistribution
from qa_hooks.fraud.collusion import Collusion
from qa_hooks.fraud.copying import TextCopying
from qa_hooks.fraud.evidence import Answer, Evidence, surprise
from qa_hooks.fraud.gold import GoldAccuracy
from qa_hooks.fraud.peers import PeerAgreement
from qa_hooks.fraud.skips import Skips
from qa_hooks.fraud.timing import TimeOnTask

__all__ = ["FraudRisk", "Risk", "Signal", "default_signals"]


class Signal(Protocol):
    name: str

    def fit(self, answers_by_annotator: Mapping[Any, Sequence[Answer]]) -> Any: ...

    def assess(self, answers: Sequence[Answer]) -> Evidence | None: ...


def default_signals(options: Sequence[str] = ()) -> list[Any]:
    """Every signal with its default settings; ``options``: the label config's options in order."""
    return [TimeOnTask(), AnswerDistribution(options), GoldAccuracy(), PeerAgreement(), PrelabelAnchoring(),
            Skips(), TextCopying(), Collusion()]


@dataclass(frozen=True)
class Risk:
    """An annotator's risk (surprise, see the module doc), the answers it rests on, and its reasons (strongest
    first); ``tested``: the signals that had enough answers to judge."""

    annotator: Any
    risk: float
    answers: int
    reasons: tuple[Evidence, ...] = ()
    tested: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        return "; ".join(e.reason for e in self.reasons) or "no signal stands out"

    def to_dict(self) -> dict[str, Any]:
        return {"annotator": self.annotator, "risk": round(self.risk, 2), "answers": self.answers,
                "reasons": [e.to_dict() for e in self.reasons], "tested": list(self.tested)}


class FraudRisk:
    """Fit every signal on a project's answers, then score annotators.

    >>> model = FraudRisk(options=("yes", "no")).fit(answers_by_annotator)   # doctest: +SKIP
    >>> model.assess(7, answers_by_annotator[7]).risk                         # doctest: +SKIP

    Fitted attribute: ``signals_``.
    """

    def __init__(self, signals: Sequence[Any] | None = None, options: Sequence[str] = (),
                 report_p: float = 0.01) -> None:
        self.signals = signals
        self.options = tuple(options)
        self.report_p = report_p

    def fit(self, answers_by_annotator: Mapping[Any, Sequence[Answer]]) -> FraudRisk:
        self.signals_ = list(self.signals) if self.signals is not None else default_signals(self.options)
        self._wants_id = {}
        for signal in self.signals_:
            signal.fit(answers_by_annotator)
            self._wants_id[signal.name] = "annotator" in inspect.signature(signal.assess).parameters
        return self

    def assess(self, annotator: Any, answers: Sequence[Answer]) -> Risk:
        found: list[Evidence] = []
        for signal in self.signals_:
            evidence = signal.assess(answers, annotator=annotator) if self._wants_id[signal.name] \
                else signal.assess(answers)
            if evidence is not None:
                found.append(evidence)
        if not found:
            return Risk(annotator, 0.0, len(answers))
        strongest = min(e.p_value for e in found)
        reasons = tuple(sorted((e for e in found if e.p_value < self.report_p), key=lambda e: e.p_value))
        return Risk(annotator, surprise(min(1.0, strongest * len(found))), len(answers), reasons,
                    tuple(e.signal for e in found))

    def predict(self, answers_by_annotator: Mapping[Any, Sequence[Answer]]) -> dict[Any, Risk]:
        """Every annotator's risk."""
        return {a: self.assess(a, answers) for a, answers in answers_by_annotator.items()}
