"""RQ jobs of the scoring side. Each is idempotent: running it twice leaves the same state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import get_current_job

from qa_hooks import refit
from qa_hooks.events import Event
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore


def current_connection() -> redis.Redis:
    job = get_current_job()
    if job is None:
        raise RuntimeError("no connection given and not running inside an RQ job")
    return job.connection


# A Redis that is gone fails every event alike: a batch stops and is retried whole instead of dead-lettering each.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


@dataclass(frozen=True)
class Scored:
    """One event recorded and rescored; ``unscored`` holds the marks to clear once it was routed."""

    result: dict[str, Any]
    unscored: dict[int, float] = field(default_factory=dict)

    @property
    def project(self) -> int | None:
        return self.result.get("project")


def score_event(event: dict[str, Any], prefix: str, connection: redis.Redis) -> Scored:
    """Record a checked webhook event and rescore every task whose submissions or gold changed (no routing, and
    the tasks' unscored marks stay until :func:`finish` clears them)."""
    parsed = Event.from_dict(event)
    store, ledger = SubmissionStore(connection, prefix), Ledger(connection, prefix)
    project = parsed.project
    gold_tasks = {t.id: t.meta["gold"] for t in parsed.tasks if "gold" in t.meta} if project is not None else {}
    # The tasks of the event's own submissions are read in the same round trip as the writes.
    own = sorted({s.task for s in parsed.submissions}) if project is not None else []
    early = sorted(set(own) | set(gold_tasks))
    # A deletion names annotations, not tasks: after a failed first run only the marks know its tasks.
    marked = None if parsed.deleted_annotations else sorted(set(own) | set(parsed.deleted_tasks or ()))

    def then(pipe) -> None:
        for task, gold in gold_tasks.items():
            ledger.set_meta_gold(project, task, gold, pipe)
        for task in early:
            ledger.queue_read(pipe, project, task)
        if project is not None:
            store.queue_unscored(pipe, project, marked)
            refit.queue_due_check(pipe, prefix, project)

    applied = store.apply(parsed, then, (ledger.read_script,))
    replies = applied.then_replies[len(gold_tasks):]
    states = dict(zip(early, replies[:len(early)], strict=True))
    unscored = store.unscored_from(replies[len(early)], marked) if project is not None else {}
    tasks = set(applied.tasks) | set(gold_tasks) | set(unscored)
    if project is not None:
        for task in sorted(tasks):
            ledger.rescore(project, task, states.get(task))
        # Every N new labels one Dawid–Skene refit is queued (deduplicated); the event never waits for it.
        refit.maybe_enqueue_refit(connection, prefix, project, *replies[len(early) + 1:len(early) + 4])
    annotators = sorted({s.annotator for s in parsed.submissions})
    result = {"action": parsed.action, "project": project, "rescored": len(tasks), "tasks": sorted(tasks),
              "annotators": annotators, **applied.counts}
    return Scored(result, unscored)


def finish(scored: Scored, prefix: str, connection: redis.Redis,
           route: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Route a scored event (or merged batch), then clear its unscored marks (a mark written since stays);
    returns the routed result. A failure in ``route`` leaves the marks for the retry."""
    result = route(scored.result) if route is not None else scored.result
    if scored.unscored and scored.project is not None:
        SubmissionStore(connection, prefix).mark_scored(scored.project, scored.unscored)
    return result


def process_event(event: dict[str, Any], prefix: str = "cg", connection: redis.Redis | None = None,
                  route: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict:
    """Record a checked webhook event, then rescore every task whose submissions or gold changed.

    ``route`` (the assembled service's routing step) runs on the result before the tasks' unscored marks are
    cleared, so a run that fails anywhere after its writes is finished by its retry: the retry's writes are
    no-ops, but the marks say which tasks still need scoring and routing.
    """
    connection = connection or current_connection()
    return finish(score_event(event, prefix, connection), prefix, connection, route)


def merge(scored: list[Scored]) -> Scored:
    """Several scored events of one project as one: routing decides once on the union of their tasks and
    annotators, after all of them were recorded (the latest state, which a per-event decision would reach last)."""
    first = scored[0].result
    unscored: dict[int, float] = {}
    for one in scored:
        for task, seq in one.unscored.items():
            # the highest write sequence any event saw: its scoring came after every write up to it
            unscored[task] = max(seq, unscored.get(task, seq))
    result = {"action": first["action"] if len(scored) == 1 else "BATCH", "project": first.get("project"),
              "events": len(scored), "rescored": sum(s.result.get("rescored", 0) for s in scored),
              "tasks": sorted({t for s in scored for t in s.result.get("tasks") or []}),
              "annotators": sorted({a for s in scored for a in s.result.get("annotators") or []})}
    return Scored(result, unscored)


def process_events(events: list[dict[str, Any]], prefix: str = "cg", connection: redis.Redis | None = None,
                   route: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[dict | Exception]:
    """:func:`process_event` for a batch: every event is recorded and rescored, then ``route`` runs once per
    project on the merged result; returns one outcome per event, its result or the exception it raised.

    A bad event does not hold up the others: its exception is its outcome (the caller hands it to RQ, which
    retries it and keeps it in the failed registry), and if routing a project's merged result fails, each of
    its events is routed alone so that only the culprit fails. A Redis that is gone (``REDIS_DOWN``) raises:
    nothing of the batch is settled, and all of it runs again.
    """
    connection = connection or current_connection()
    outcomes: list[dict | Exception | None] = [None] * len(events)
    by_project: dict[int | None, list[tuple[int, Scored]]] = {}
    for i, event in enumerate(events):
        try:
            scored = score_event(event, prefix, connection)
        except REDIS_DOWN:
            raise
        except Exception as exc:
            outcomes[i] = exc
            continue
        by_project.setdefault(scored.project, []).append((i, scored))
    for members in by_project.values():
        merged = merge([s for _, s in members])
        try:
            routed = finish(merged, prefix, connection, route)
        except REDIS_DOWN:
            raise
        except Exception as exc:
            if len(members) == 1:
                outcomes[members[0][0]] = exc
                continue
            for i, scored in members:  # find the culprit: the others are routed and settled
                outcomes[i] = _settle_alone(scored, prefix, connection, route)
            continue
        extra = {"batch": {k: v for k, v in routed.items() if k in ("events", "routing")}} if len(members) > 1 \
            else {k: v for k, v in routed.items() if k == "routing"}
        for i, scored in members:
            outcomes[i] = {**scored.result, **extra}
    return [o if o is not None else RuntimeError("event not processed") for o in outcomes]


def _settle_alone(scored: Scored, prefix: str, connection: redis.Redis,
                  route: Callable[[dict[str, Any]], dict[str, Any]] | None) -> dict | Exception:
    try:
        return finish(scored, prefix, connection, route)
    except REDIS_DOWN:
        raise
    except Exception as exc:
        return exc


def refresh_flags(prefix: str = "cg", connection: redis.Redis | None = None) -> dict[int, dict[int, list[str]]]:
    """Re-evaluate the low-effort and fraud signals of every annotator of every project."""
    connection = connection or current_connection()
    store, ledger = SubmissionStore(connection, prefix), Ledger(connection, prefix)
    return {project: {a: [f.name for f in flags] for a, flags in ledger.refresh_flags(project, store).items()}
            for project in store.projects()}


def batch_form(job: Callable[..., Any]) -> Callable[..., list[dict | Exception]] | None:
    """The batch form of an event job (``job.batch``: events, prefix, connection -> one outcome each), if any;
    the inbox's drain runs a batch through it and an event alone through ``job``."""
    return getattr(job, "batch", None)


process_event.batch = process_events  # type: ignore[attr-defined]
