"""RQ jobs of the scoring side. Each is idempotent: running it twice leaves the same state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from rq import get_current_job

from qa_hooks.events import Event
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore


def current_connection() -> redis.Redis:
    job = get_current_job()
    if job is None:
        raise RuntimeError("no connection given and not running inside an RQ job")
    return job.connection


def process_event(event: dict[str, Any], prefix: str = "cg", connection: redis.Redis | None = None,
                  route: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict:
    """Record a checked webhook event, then rescore every task whose submissions or gold changed.

    ``route`` (the assembled service's routing step) runs on the result before the tasks' unscored marks are
    cleared, so a run that fails anywhere after its writes is finished by its retry: the retry's writes are
    no-ops, but the marks say which tasks still need scoring and routing.
    """
    connection = connection or current_connection()
    parsed = Event.from_dict(event)
    store, ledger = SubmissionStore(connection, prefix), Ledger(connection, prefix)
    project = parsed.project
    gold_tasks = {t.id: t.meta["gold"] for t in parsed.tasks if "gold" in t.meta} if project is not None else {}
    # The tasks of the event's own submissions are read in the same round trip as the writes.
    own = sorted({s.task for s in parsed.submissions}) if project is not None else []
    early = sorted(set(own) | set(gold_tasks))
    # A deletion names annotations, not tasks: after a failed first run only the marks know its tasks.
    marked = None if parsed.deleted_annotations else own

    def then(pipe) -> None:
        for task, gold in gold_tasks.items():
            ledger.set_meta_gold(project, task, gold, pipe)
        for task in early:
            ledger.queue_read(pipe, project, task)
        if project is not None:
            store.queue_unscored(pipe, project, marked)

    applied = store.apply(parsed, then, (ledger.read_script,))
    replies = applied.then_replies[len(gold_tasks):]
    states = dict(zip(early, replies[:len(early)], strict=True))
    unscored = store.unscored_from(replies[len(early)], marked) if project is not None else {}
    tasks = set(applied.tasks) | set(gold_tasks) | set(unscored)
    if project is not None:
        for task in sorted(tasks):
            ledger.rescore(project, task, states.get(task))
    annotators = sorted({s.annotator for s in parsed.submissions})
    result = {"action": parsed.action, "project": project, "rescored": len(tasks), "tasks": sorted(tasks),
              "annotators": annotators, **applied.counts}
    if route is not None:
        result = route(result)
    if unscored:
        store.mark_scored(project, unscored)
    return result


def refresh_flags(prefix: str = "cg", connection: redis.Redis | None = None) -> dict[int, dict[int, list[str]]]:
    """Re-evaluate the low-effort and fraud signals of every annotator of every project."""
    connection = connection or current_connection()
    store, ledger = SubmissionStore(connection, prefix), Ledger(connection, prefix)
    return {project: {a: [f.name for f in flags] for a, flags in ledger.refresh_flags(project, store).items()}
            for project in store.projects()}
