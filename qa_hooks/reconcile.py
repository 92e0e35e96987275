"""Find what the webhooks missed: read each project back from Label Studio and put it right through the event job.

Label Studio delivers each webhook once, inside the annotator's request, with a 1 s timeout and no retry: an
event that met a 503 (Redis down) or a network fault is gone. ``reconcile_project`` reads the project's export
(the one API listing that carries each annotation's ``unique_id``) and compares it with crowdgate's live
submissions:

- annotations crowdgate never saw, or saw in an older version, are fed as ``ANNOTATIONS_CREATED`` events;
- live submissions whose ``unique_id`` is no longer in the export (deleted in Label Studio while no webhook got
  through) are fed as ``ANNOTATIONS_DELETED`` events, and tasks gone from Label Studio as ``TASKS_DELETED``.
  Skips, ground-truth annotations and the answers crowdgate wrote itself (write-backs, escalation projects)
  are annotations of the export like any other, so they are never taken for deleted. A candidate is confirmed
  with a second read of its task (an annotation made after the export was read is still there) before it goes.

Every event goes through ``handle`` (:func:`qa_hooks.jobs.process_event`, or the assembled service's
record-score-route job), so a recovered change is scored and routed exactly like a delivered one; the event
job's writes are idempotent, so a second pass changes nothing.

Each pass also checks that the project has crowdgate's webhook, active and sending payloads with the secret
header. A broken one is logged at ERROR and counted in the result (``webhook_alerts``); with
``CROWDGATE_PUBLIC_URL`` set it is re-created (or re-activated) with the secret, like
``scripts.seed.Seeder.connect_webhook``. The assembled service writes each alert into the audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import redis

from core.labelstudio import LabelStudioClient, LabelStudioError
from core.settings import Settings, current
from qa_hooks.events import ANNOTATION_ACTIONS, PROJECT_FIELDS, Event, PayloadError, epoch_seconds, parse_event
from qa_hooks.jobs import current_connection, process_event
from qa_hooks.receiver import SECRET_HEADER
from qa_hooks.store import SubmissionStore

__all__ = [
    "HOOK_PATH",
    "WebhookCheck",
    "check_webhook",
    "events_from_export",
    "missed_deletions",
    "reconcile_all",
    "reconcile_project",
]

log = logging.getLogger(__name__)

BATCH_TASKS = 200
READ_CHUNK = 5000  # tasks per Redis pipeline when reading the live submissions
CHECK_CHUNK = 100  # task ids per Label Studio listing when confirming deletions (they travel in the URL)
HOOK_PATH = "/hooks/labelstudio"  # qa_hooks.receiver's route
NEEDED_ACTIONS = ANNOTATION_ACTIONS | {"ANNOTATIONS_DELETED"}  # what a webhook limited to some actions must send

Handle = Callable[..., dict[str, Any]]


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


def _export_events(project: int, info: dict[str, Any], tasks: list[dict[str, Any]],
                   totals: dict[str, int]) -> list[Event]:
    try:
        return events_from_export(project, info, tasks)
    except PayloadError:
        # one odd annotation must not stop the others: fall back to one task at a time
        events = []
        for task in tasks:
            try:
                events.extend(events_from_export(project, info, [task]))
            except PayloadError:
                totals["skipped_invalid"] += 1
        return events


# -- deletions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deletions:
    """What Label Studio no longer has but crowdgate still counts."""

    annotations: list[int]  # Label Studio annotation ids, each now naming the live submission to drop
    tasks: list[int]  # tasks deleted in Label Studio that crowdgate still holds
    unresolved: list[str]  # unique ids gone from Label Studio whose annotation id now names a newer submission


def _same_time(a: Any, b: Any) -> bool:
    try:
        return abs(epoch_seconds(a) - epoch_seconds(b)) < 1e-3
    except ValueError:
        return False


def missed_deletions(project: int, store: SubmissionStore, export: list[dict[str, Any]],
                     client: LabelStudioClient) -> Deletions:
    """Compare crowdgate's live submissions of every task with the export's annotations (by ``unique_id``)."""
    exported: dict[int, set[str]] = {int(t["id"]): {str(a.get("unique_id")) for a in t.get("annotations") or []}
                                     for t in export}
    known = store.tasks(project)
    replies: list[Any] = []
    for start in range(0, len(known), READ_CHUNK):
        pipe = store.redis.pipeline(transaction=False)
        for task in known[start:start + READ_CHUNK]:
            pipe.zrange(store.keys.task_submissions(project, task), 0, -1)
            pipe.exists(store.keys.task_info(project, task))
        replies.extend(pipe.execute())
    candidates: dict[int, list[str]] = {}
    gone_tasks: set[int] = set()
    for i, task in enumerate(known):
        live, has_info = [u.decode() for u in replies[2 * i]], bool(replies[2 * i + 1])
        missing = [u for u in live if u not in exported.get(task, set())]
        if missing:
            candidates[task] = missing
        if task not in exported and (live or has_info):
            gone_tasks.add(task)
    if not candidates and not gone_tasks:
        return Deletions([], [], [])

    # Confirm with a second read: what was made after the export was read is still in Label Studio.
    check = sorted(set(candidates) | gone_tasks)
    still_there = {int(t["id"]) for start in range(0, len(check), CHECK_CHUNK)
                   for t in client.tasks(project, ids=check[start:start + CHECK_CHUNK])}
    gone_tasks = {t for t in gone_tasks if t not in still_there}
    annotation_ids, unresolved = [], []
    for task, uids in sorted(candidates.items()):
        present: list[dict[str, Any]] = []
        if task in still_there:
            try:
                present = client.annotations(task)
            except LabelStudioError as exc:
                if exc.status != 404:
                    raise
        for uid in uids:
            sub = store.submission(project, uid)
            if sub is None:
                continue
            # The listing has no unique_id; an id reused on SQLite has another creation time.
            if any(int(a.get("id", -1)) == sub.annotation_id and _same_time(a.get("created_at"), sub.created_at)
                   for a in present):
                continue
            owner = store.redis.get(store.keys.annotation_submission(project, sub.annotation_id))
            if owner is not None and owner.decode() == uid:
                annotation_ids.append(sub.annotation_id)
            else:
                unresolved.append(uid)
    return Deletions(sorted(set(annotation_ids)), sorted(gone_tasks), unresolved)


# -- the webhook ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookCheck:
    """``status``: ``ok``, or what was wrong (``missing``, ``inactive``, ``misconfigured``); ``repaired`` when
    it was re-created or re-activated; ``error`` when Label Studio would not say."""

    status: str
    hook: int | None = None
    repaired: bool = False
    detail: str = ""

    @property
    def alert(self) -> bool:
        return self.status != "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hook_url(public_url: str) -> str:
    return public_url.rstrip("/") + HOOK_PATH


def _is_ours(hook: dict[str, Any], project: int, public_url: str) -> bool:
    if hook.get("project") not in (project, None):  # None: an organisation-wide webhook
        return False
    url = str(hook.get("url") or "").rstrip("/")
    return url == _hook_url(public_url) if public_url else url.endswith(HOOK_PATH)


def _problem(hook: dict[str, Any]) -> str:
    """Why ``hook`` would not deliver annotation events crowdgate accepts ('' when it would)."""
    if not hook.get("is_active", True):
        return "inactive"
    if not hook.get("send_payload", True):
        return "sends no payload"
    if not hook.get("send_for_all_actions", True) and not set(hook.get("actions") or []) >= NEEDED_ACTIONS:
        return "not sent for annotation events"
    if SECRET_HEADER not in (hook.get("headers") or {}):
        return f"no {SECRET_HEADER} header"
    return ""


def check_webhook(client: LabelStudioClient, project: int, settings: Settings) -> WebhookCheck:
    """Is crowdgate's webhook on ``project`` present and delivering? Re-create it when ``public_url`` is set."""
    try:
        hooks = [h for h in client.webhooks(project) if _is_ours(h, project, settings.public_url)]
    except LabelStudioError as exc:
        return WebhookCheck("error", detail=f"cannot list webhooks: {exc}")
    problems = {int(h["id"]): _problem(h) for h in hooks}
    working = [h for h, why in problems.items() if not why]
    if working:
        return WebhookCheck("ok", working[0])
    status = "missing" if not hooks else ("inactive" if "inactive" in problems.values() else "misconfigured")
    detail = "no webhook to " + (_hook_url(settings.public_url) if settings.public_url else f"…{HOOK_PATH}") \
        if not hooks else "; ".join(f"webhook {h}: {why}" for h, why in problems.items())
    if not settings.public_url:
        return WebhookCheck(status, next(iter(problems), None), detail=detail + " (set CROWDGATE_PUBLIC_URL to "
                                                                              "have it re-created)")
    if not settings.webhook_secret:
        return WebhookCheck(status, next(iter(problems), None),
                            detail=detail + " (not re-created: CROWDGATE_WEBHOOK_SECRET is empty)")
    headers = {SECRET_HEADER: settings.webhook_secret}
    try:
        if hooks:
            hook = int(hooks[0]["id"])
            client.enable_webhook(hook, {**(hooks[0].get("headers") or {}), **headers})
        else:
            hook = client.create_webhook(project, _hook_url(settings.public_url), headers)
    except LabelStudioError as exc:
        return WebhookCheck(status, detail=f"{detail}; repair failed: {exc}")
    return WebhookCheck(status, hook, repaired=True, detail=detail)


# -- the pass -------------------------------------------------------------------------------------------


def _add(totals: dict[str, int], outcome: dict[str, Any], names: Iterable[str]) -> None:
    for key in names:
        totals[key] += int(outcome.get(key, 0) or 0)


def reconcile_project(project: int, prefix: str = "cg", connection: redis.Redis | None = None,
                      client: LabelStudioClient | None = None, handle: Handle = process_event,
                      settings: Settings | None = None) -> dict[str, Any]:
    """Bring crowdgate's record of ``project`` in line with Label Studio; returns counts and the webhook check.

    ``handle`` is what a webhook event goes through (``process_event``, or the assembled service's
    record-score-route job), so a recovered annotation is treated exactly like a delivered one."""
    connection = connection or current_connection()
    settings = settings or current()
    client = client or LabelStudioClient.from_settings(settings)
    store = SubmissionStore(connection, prefix)
    webhook = check_webhook(client, project, settings)
    if webhook.alert:
        log.error("project %s: crowdgate's webhook is %s%s: %s", project, webhook.status,
                  " (repaired)" if webhook.repaired else "", webhook.detail)
    project_settings = client.project(project)
    info = {k: project_settings[k] for k in PROJECT_FIELDS if k in project_settings}
    totals: dict[str, Any] = {"tasks": 0, "created": 0, "updated": 0, "stale": 0, "skipped_invalid": 0,
                              "deleted": 0, "tasks_deleted": 0, "deletions_unresolved": 0,
                              "webhook_alerts": int(webhook.alert), "webhook_repaired": int(webhook.repaired)}
    tasks = client.export(project)
    totals["tasks"] = len(tasks)

    # Deletions first: on SQLite a deleted annotation's id may already name a new one, which the export
    # pass would record under that id; dropped first, the old submission is still found by its id.
    gone = missed_deletions(project, store, tasks, client)
    if gone.annotations:
        outcome = handle(Event("ANNOTATIONS_DELETED", project, deleted_annotations=gone.annotations).to_dict(),
                         prefix, connection)
        _add(totals, outcome, ("deleted",))
    if gone.tasks:
        outcome = handle(Event("TASKS_DELETED", project, deleted_tasks=gone.tasks).to_dict(), prefix, connection)
        _add(totals, outcome, ("tasks_deleted",))
    if gone.unresolved:
        totals["deletions_unresolved"] = len(gone.unresolved)
        log.error("project %s: %d submissions are gone from Label Studio but their annotation ids now name newer "
                  "ones, so no deletion event can reach them: %s", project, len(gone.unresolved),
                  ", ".join(gone.unresolved[:10]))

    for event in _export_events(project, info, tasks, totals):
        _add(totals, handle(event.to_dict(), prefix, connection), ("created", "updated", "stale"))
    totals["webhook"] = webhook.to_dict()
    return totals


def reconcile_all(prefix: str = "cg", connection: redis.Redis | None = None, handle: Handle = process_event,
                  settings: Settings | None = None, projects: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
    """Reconcile ``projects`` (default: every project crowdgate has seen); a project Label Studio no longer
    has, or that fails, is logged and reported (``error``) and the others still run."""
    connection = connection or current_connection()
    settings = settings or current()
    client = LabelStudioClient.from_settings(settings)
    results: dict[int, dict[str, Any]] = {}
    for project in SubmissionStore(connection, prefix).projects() if projects is None else projects:
        try:
            results[project] = reconcile_project(project, prefix, connection, client, handle, settings)
        except LabelStudioError as exc:
            log.error("project %s: reconciliation failed: %s", project, exc)
            results[project] = {"error": str(exc), "status": exc.status}
    return results
