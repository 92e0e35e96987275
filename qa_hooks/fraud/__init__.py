"""Low-effort and fraud signals, one per module, and the risk score that combines them (pure: no I/O).

``evidence`` (the answer record and the evidence every signal returns), ``timing`` (too fast, bursts),
``answers`` (one option / position bias against the class prior), ``gold`` (accuracy below the tier's, failure
streaks), ``peers`` (disagreeing with the consensus), ``anchoring`` (accepting wrong pre-labels), ``skips``,
``copying`` (near-identical free text, MinHash), ``collusion`` (pairs agreeing beyond chance), ``risk`` (the
combined score with its reasons). ``records`` is the adapter that builds answers from crowdgate's Redis.
"""

from __future__ import annotations

from qa_hooks.fraud.anchoring import PrelabelAnchoring
from qa_hooks.fraud.answers import AnswerDistribution
from qa_hooks.fraud.collusion import Collusion
from qa_hooks.fraud.copying import TextCopying
from qa_hooks.fraud.evidence import Answer, Evidence
from qa_hooks.fraud.gold import GoldAccuracy
from qa_hooks.fraud.peers import PeerAgreement
from qa_hooks.fraud.risk import FraudRisk, Risk, default_signals
from qa_hooks.fraud.skips import Skips
from qa_hooks.fraud.timing import TimeOnTask

__all__ = [
    "Answer",
    "AnswerDistribution",
    "Collusion",
    "Evidence",
    "FraudRisk",
    "GoldAccuracy",
    "PeerAgreement",
    "PrelabelAnchoring",
    "Risk",
    "Skips",
    "TextCopying",
    "TimeOnTask",
    "default_signals",
]
