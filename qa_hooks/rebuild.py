"""Rebuild a project's scoring state from Label Studio alone (``crowdgate rebuild-state PROJECT``).

Everything scoring knows is derived from what Label Studio holds: the project's label config, its tasks' data
and meta (gold answers included) and its annotations. ``rebuild_project`` wipes the project's scoring keys
(:meth:`core.keys.Keys.scoring_patterns`), then replays the export through the same event job a webhook goes
through, one annotation per event in the order they were created, as the webhooks arrived, and re-evaluates
the annotators' flags. A peer's judgement weighs the other annotators by their reliability at the time, so the
result equals the live state when the live events were processed in creation order; edits made later in
Label Studio are replayed at the time of the annotation's creation (its export holds only the last version).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import redis

from core.keys import Keys
from core.labelstudio import LabelStudioClient
from qa_hooks.events import PROJECT_FIELDS, Event, PayloadError, epoch_seconds, parse_event
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore

__all__ = ["rebuild_project", "replay_events", "wipe_scoring_state"]

Handle = Callable[..., dict[str, Any]]
TASK_BATCH = 200


def wipe_scoring_state(connection: redis.Redis, prefix: str, project: int) -> int:
    """Delete every scoring key of ``project`` (nothing of routing, other projects or the dedup marks)."""
    deleted = 0
    for pattern in Keys(prefix).scoring_patterns(project):
        batch: list[bytes] = []
        for key in connection.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += connection.delete(*batch)
                batch = []
        if batch:
            deleted += connection.delete(*batch)
    return deleted


def replay_events(project: int, project_info: dict[str, Any], tasks: list[dict[str, Any]],
                  skipped: list[str] | None = None) -> Iterator[Event]:
    """The events that rebuild ``project`` from its export: its tasks (data, meta, gold) first, then each
    annotation as the ANNOTATION_CREATED Label Studio sent, oldest first. Unreadable items are named in
    ``skipped``."""
    skipped = skipped if skipped is not None else []
    readable = []
    for task in tasks:
        try:
            readable.append(parse_event({"action": "TASKS_CREATED", "tasks": [task]}).tasks[0])
        except PayloadError as exc:
            skipped.append(f"task {task.get('id')}: {exc.reason}")
    for start in range(0, len(readable), TASK_BATCH):
        info = project_info if start == 0 else {}
        yield Event("TASKS_CREATED", project, info, tasks=readable[start:start + TASK_BATCH])
    if not readable:
        yield Event("PROJECT_UPDATED", project, project_info)
    by_id = {t.id: t for t in readable}
    annotations = [(a, task) for task in tasks if task.get("id") in by_id for a in task.get("annotations") or []]

    def created(pair: tuple[dict[str, Any], dict[str, Any]]) -> tuple[float, int]:
        annotation = pair[0]
        try:
            return epoch_seconds(annotation.get("created_at") or annotation.get("updated_at")), annotation["id"]
        except (ValueError, KeyError, TypeError):
            return float("inf"), 0  # parse_event names what is wrong below

    for annotation, task in sorted(annotations, key=created):
        body = {"action": "ANNOTATION_CREATED", "project": {"id": project},
                "annotation": {**annotation, "task": task["id"], "project": project}}
        try:
            event = parse_event(body)
        except PayloadError as exc:
            skipped.append(f"annotation {annotation.get('id')} of task {task.get('id')}: {exc.reason}")
            continue
        yield Event(event.action, project, submissions=event.submissions, tasks=[by_id[task["id"]]])


def rebuild_project(project: int, prefix: str, connection: redis.Redis, client: LabelStudioClient,
                    handle: Handle, tasks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Wipe ``project``'s scoring state and replay its export (``tasks``, read when not given) through
    ``handle`` (the event job); returns counts. Label Studio is read before anything is wiped, so a Label
    Studio that cannot answer costs nothing."""
    settings = client.project(project)
    info = {k: settings[k] for k in PROJECT_FIELDS if k in settings}
    tasks = client.export(project) if tasks is None else tasks
    skipped: list[str] = []
    events = list(replay_events(project, info, tasks, skipped))
    wiped = wipe_scoring_state(connection, prefix, project)
    totals = {"tasks": len(tasks), "keys_wiped": wiped, "events": len(events), "created": 0, "updated": 0,
              "stale": 0}
    for event in events:
        outcome = handle(event.to_dict(), prefix, connection)
        for key in ("created", "updated", "stale"):
            totals[key] += int(outcome.get(key, 0) or 0)
    store, ledger = SubmissionStore(connection, prefix), Ledger(connection, prefix)
    totals["flagged"] = len(ledger.refresh_flags(project, store))
    totals["skipped_invalid"] = len(skipped)
    totals["skipped"] = skipped[:20]
    return totals
