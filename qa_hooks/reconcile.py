"""Find what the webhooks missed: read annotations back from Label Studio and record them the same way.

Label Studio delivers each webhook once, inside the annotator's request, with a 1 s timeout and no retry: an
event that met a 503 (Redis down) or a network fault is gone. ``reconcile_project`` reads the project's export
(the one API listing that carries each annotation's ``unique_id``) and feeds every annotation through
:func:`qa_hooks.jobs.process_event`. Recording is idempotent and ordered by ``updated_at``, so what was already
recorded is left as it is, and only what was missed is added and scored. ``crowdgate-cron`` schedules it for
every known project. Annotations deleted in Label Studio while no webhook arrived are not detected here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from core.labelstudio import LabelStudioClient
from core.settings import current
from qa_hooks.events import PROJECT_FIELDS, Event, PayloadError, parse_event
from qa_hooks.jobs import current_connection, process_event
from qa_hooks.store import SubmissionStore

BATCH_TASKS = 200


def events_from_export(project: int, project_info: dict[str, Any], tasks: list[dict[str, Any]]) -> list[Event]:
    """ANNOTATIONS_CREATED events, one per batch of exported tasks (tasks carry their data and meta)."""
    events = []
    for start in range(0, len(tasks), BATCH_TASKS):
        batch = tasks[start:start + BATCH_TASKS]
        annotations = [{**a, "task": task["id"], "project": project} for task in batch
                       for a in task.get("annotations") or []]
        body = {"action": "ANNOTATIONS_CREATED", "project": {"id": project, **project_info},
                "annotation": annotations}
        event = parse_event(body)
        # every task of the batch, so gold in meta arrives even for tasks nobody has annotated
        tasks_info = [parse_event({"action": "TASKS_CREATED", "tasks": [t]}).tasks[0] for t in batch]
        events.append(Event(event.action, project, event.project_info, submissions=event.submissions,
                            tasks=tasks_info))
    return events


def reconcile_project(project: int, prefix: str = "cg", connection: redis.Redis | None = None,
                      client: LabelStudioClient | None = None,
                      handle: Callable[..., dict[str, Any]] = process_event) -> dict[str, int]:
    """Record every annotation of ``project`` that crowdgate does not have yet; returns counts.

    ``handle`` is what a webhook event goes through (``process_event``, or the assembled service's
    record-score-route job), so a recovered annotation is treated exactly like a delivered one."""
    connection = connection or current_connection()
    client = client or LabelStudioClient.from_settings(current())
    settings = client.project(project)
    info = {k: settings[k] for k in PROJECT_FIELDS if k in settings}
    totals = {"tasks": 0, "created": 0, "updated": 0, "stale": 0, "skipped_invalid": 0}
    tasks = client.export(project)
    totals["tasks"] = len(tasks)
    try:
        events = events_from_export(project, info, tasks)
    except PayloadError:
        # one odd annotation must not stop the others: fall back to one task at a time
        events = []
        for task in tasks:
            try:
                events.extend(events_from_export(project, info, [task]))
            except PayloadError:
                totals["skipped_invalid"] += 1
    for event in events:
        outcome = handle(event.to_dict(), prefix, connection)
        for key in ("created", "updated", "stale"):
            totals[key] += outcome.get(key, 0)
    return totals


def reconcile_all(prefix: str = "cg", connection: redis.Redis | None = None,
                  handle: Callable[..., dict[str, Any]] = process_event) -> dict[int, dict[str, int]]:
    """Reconcile every project crowdgate has seen."""
    connection = connection or current_connection()
    client = LabelStudioClient.from_settings(current())
    return {project: reconcile_project(project, prefix, connection, client, handle)
            for project in SubmissionStore(connection, prefix).projects()}
