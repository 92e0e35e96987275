"""The scoring side: the webhook receiver and everything that scores a submission against gold and peers.

Modules, each named for what it holds: :mod:`qa_hooks.receiver` (the webhook blueprint) and :mod:`qa_hooks.events`
(event checks), :mod:`qa_hooks.inbox` (dedup and queueing, the batch drain), :mod:`qa_hooks.jobs` (the event job),
:mod:`qa_hooks.store` (submissions in Redis), :mod:`qa_hooks.ledger` (scores and annotators' records),
:mod:`qa_hooks.signals` (low-effort and fraud signals), :mod:`qa_hooks.reconcile` and :mod:`qa_hooks.rebuild`
(Label Studio as the source of truth), :mod:`qa_hooks.retention`; pure: :mod:`qa_hooks.scoring`,
:mod:`qa_hooks.similarity`, :mod:`qa_hooks.agreement`, :mod:`qa_hooks.truth`.
"""

from qa_hooks.agreement import (
    agreement_matrix,
    by_group,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_kappa,
    percent_agreement,
)
from qa_hooks.app import create_app
from qa_hooks.events import Event, PayloadError, Submission, TaskInfo, parse_body, parse_event
from qa_hooks.inbox import Inbox
from qa_hooks.jobs import process_event, refresh_flags
from qa_hooks.ledger import Ledger, Reliability
from qa_hooks.rebuild import rebuild_project
from qa_hooks.reconcile import reconcile_all, reconcile_project
from qa_hooks.scoring import TaskScore, score_task
from qa_hooks.similarity import compare_results, per_control
from qa_hooks.store import SubmissionStore
from qa_hooks.truth import DawidSkene, MajorityVote, WeightedVote, dawid_skene, majority_vote, weighted_vote

__all__ = [
    "DawidSkene",
    "Event",
    "Inbox",
    "Ledger",
    "MajorityVote",
    "PayloadError",
    "Reliability",
    "Submission",
    "SubmissionStore",
    "TaskInfo",
    "TaskScore",
    "WeightedVote",
    "agreement_matrix",
    "by_group",
    "cohen_kappa",
    "compare_results",
    "create_app",
    "dawid_skene",
    "fleiss_kappa",
    "krippendorff_alpha",
    "majority_vote",
    "pairwise_kappa",
    "parse_body",
    "parse_event",
    "per_control",
    "percent_agreement",
    "process_event",
    "rebuild_project",
    "reconcile_all",
    "reconcile_project",
    "refresh_flags",
    "score_task",
    "weighted_vote",
]
