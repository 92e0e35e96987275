"""Routing: tier policy, decisions and stopping rule (pure), and the RQ jobs that act on them in Label Studio.

Modules, each named for what it holds:

- :mod:`routing.policy`, :mod:`routing.decisions`, :mod:`routing.stopping`, :mod:`routing.assignment`: pure;
- :mod:`routing.state` (routing state in Redis), :mod:`routing.audit` (the audit log);
- :mod:`routing.runtime`: the job :class:`Context`, the routing queue and enqueueing, the Label Studio client;
- :mod:`routing.inputs`: the decisions' inputs built from what scoring recorded;
- :mod:`routing.router`: :func:`after_scoring`, run after every scored event;
- :mod:`routing.actions`: the action jobs; :mod:`routing.exam`: the gold offers (qualification exam, gold share);
- :mod:`routing.cli`: ``crowdgate-policy`` and ``crowdgate-audit``.
"""

from routing.actions import (
    apply_tier_change,
    check_deadline,
    escalate,
    finalize,
    flag_submission,
    prepare_project,
    reassign,
    set_overlap,
    sweep_deadlines,
    write_back,
)
from routing.audit import AuditLog
from routing.decisions import check_sla, decide_annotator, decide_task
from routing.exam import offer_gold, sync_gold_offer
from routing.inputs import predicted_difficulty
from routing.policy import DEFAULT_POLICY, Policy, PolicyError, load_policy, parse_policy
from routing.router import RoutingError, after_scoring
from routing.runtime import Context, enqueue_action, labelstudio, set_labelstudio
from routing.state import AnnotatorRecord, RoutingState, TaskRoute

__all__ = [
    "DEFAULT_POLICY",
    "AnnotatorRecord",
    "AuditLog",
    "Context",
    "Policy",
    "PolicyError",
    "RoutingError",
    "RoutingState",
    "TaskRoute",
    "after_scoring",
    "apply_tier_change",
    "check_deadline",
    "check_sla",
    "decide_annotator",
    "decide_task",
    "enqueue_action",
    "escalate",
    "finalize",
    "flag_submission",
    "labelstudio",
    "load_policy",
    "offer_gold",
    "parse_policy",
    "predicted_difficulty",
    "prepare_project",
    "reassign",
    "set_labelstudio",
    "set_overlap",
    "sweep_deadlines",
    "sync_gold_offer",
    "write_back",
]
