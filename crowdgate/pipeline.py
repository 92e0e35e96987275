"""The job the worker runs for every webhook event: record and score it, then route.

    handle_event(event_dict, prefix)   # what crowdgate.web's receiver queues per event
    handle_events(event_dicts, prefix) # its batch form, what crowdgate-worker's inbox drain runs

Scoring (:func:`qa_hooks.jobs.process_event`) and routing (:func:`routing.router.after_scoring`) run in one job
so a decision always sees the submission that triggered it. Both are idempotent, so a retried event (RQ
``Retry``) records nothing twice and acts once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from qa_hooks.jobs import current_connection, process_event, process_events
from qa_hooks.reconcile import reconcile_all
from routing.audit import AuditLog
from routing.inputs import predicted_difficulty
from routing.router import after_scoring


def _hard_tasks(event: dict[str, Any]) -> list[int]:
    """New tasks with a predicted difficulty: they may start at a higher tier before anyone labels them."""
    if event.get("action") != "TASKS_CREATED":
        return []
    return [t["id"] for t in event.get("tasks") or [] if predicted_difficulty(t.get("meta")) is not None]


def _router(prefix: str, connection: redis.Redis,
            hard: dict[Any, set[int]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def route(result: dict[str, Any]) -> dict[str, Any]:
        extra = hard.get(result.get("project"))
        if extra:
            result = {**result, "tasks": sorted(set(result.get("tasks") or []) | extra)}
        routed = after_scoring(result, prefix, connection)
        return {**result, "routing": {"decisions": len(routed["decisions"]), "enqueued": routed["enqueued"]}}

    return route


def handle_event(event: dict[str, Any], prefix: str = "cg", connection: redis.Redis | None = None) -> dict[str, Any]:
    """``process_event`` with ``after_scoring`` as its routing step; returns the scoring result with a routing
    summary. The tasks stay marked unscored until routing finished, so a retry completes both."""
    connection = connection or current_connection()
    hard = {event.get("project"): set(_hard_tasks(event))}
    return process_event(event, prefix, connection, route=_router(prefix, connection, hard))


def handle_events(events: list[dict[str, Any]], prefix: str = "cg",
                  connection: redis.Redis | None = None) -> list[dict[str, Any] | Exception]:
    """:func:`handle_event` for a batch (the inbox's drain): every event is scored, then each project is routed
    once for all of its events' tasks and annotators; one outcome per event (see ``process_events``)."""
    connection = connection or current_connection()
    hard: dict[Any, set[int]] = {}
    for event in events:
        hard.setdefault(event.get("project"), set()).update(_hard_tasks(event))
    return process_events(events, prefix, connection, route=_router(prefix, connection, hard))


handle_event.batch = handle_events  # type: ignore[attr-defined]


def reconcile_and_route(prefix: str = "cg", connection: redis.Redis | None = None,
                        projects: list[int] | None = None) -> dict[int, dict[str, Any]]:
    """The periodic reconciliation (of ``projects``, default every known one), with recovered annotations and
    deletions scored and routed like delivered ones; a project whose webhook is missing or broken, or that could
    not be reconciled, gets an audit alert."""
    connection = connection or current_connection()
    results = reconcile_all(prefix, connection, handle=handle_event, projects=projects)
    audit = AuditLog(connection, prefix)
    for project, result in results.items():
        hook = result.get("webhook") or {}
        if hook.get("status", "ok") != "ok":
            action = f"webhook_{hook['status']}" + ("_repaired" if hook.get("repaired") else "")
            audit.record("alert", action, project, reason=hook.get("detail", ""), evidence=hook)
        if "error" in result:
            audit.record("alert", "reconcile_failed", project, reason=result["error"], evidence=result)
        if result.get("deletions_unresolved"):
            audit.record("alert", "deletions_unresolved", project,
                         reason="submissions deleted in Label Studio whose annotation ids were reused",
                         evidence={"count": result["deletions_unresolved"]})
    return results
