"""crowdgate's figures as Label Studio Data Manager columns, written into task data in batches by a cron job.

The Data Manager shows every key of a task's ``data`` as a column admins can show, sort and filter, so each task
of a source project carries:

- ``crowdgate_agreement``: its agreement (mean pairwise similarity of its labels), 2 decimals; absent below two
  labels;
- ``crowdgate_status``: ``needs more``, ``consensus``, ``escalated`` or ``final``, the dashboard's words;
- ``crowdgate_dashboard``: ``<CROWDGATE_PUBLIC_URL>/dashboard/<project>?task=<task>`` (behind the admin token);
  absent while ``CROWDGATE_PUBLIC_URL`` is unset, since a bare path would resolve against Label Studio's host;
- beside them ``crowdgate_difficulty``, which training writes (``ml_backend.training``) and this job only keeps.

On Community every member opens the Data Manager and reads every column, so nothing an annotator could steer by
goes there: no consensus label, no gold answer, nobody's score or tier. A gold task ("scored, never routed") would
stay ``consensus`` or ``needs more`` for ever while routed tasks turn ``final``, which would point the gold out;
it shows ``needs more`` while Label Studio still serves it and ``final`` once it does not, as a routed task would.

:func:`sync_data_manager` (a ``crowdgate-cron`` job every ``CROWDGATE_DATA_MANAGER_INTERVAL_S``) reads the
columns of every task crowdgate scored from Redis in batched round trips, compares them with what it last wrote
(``Keys.data_manager_written``) and writes only the tasks whose columns changed, at most ``MAX_TASKS`` a run:
the rest, and whatever Label Studio refused, are written by the next run. Each write is a read-modify-write of the
task's *current* data under the task-data lock (``core.task_lock``), so the exam offers, the assignment and the
difficulty written meanwhile are kept. Escalation and review projects are left alone: their tasks are one-person
copies whose figures are their source task's. A PATCH of ``data`` in Label Studio 1.23.2 sends no webhook (there
is no task-updated action) and leaves ``is_labeled``, the overlap and ``/next/`` as they were
(``tests/test_data_manager_integration.py`` checks it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import redis

from core.keys import Keys
from core.labelstudio import LabelStudioClient, LabelStudioError
from core.settings import current
from core.task_lock import BatchUpdate, TaskDataLock
from qa_hooks.jobs import current_connection
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore
from routing.audit import AuditLog
from routing.runtime import labelstudio

__all__ = ["AGREEMENT_FIELD", "FIELDS", "LINK_FIELD", "MAX_TASKS", "STATUS_FIELD", "columns", "dashboard_link",
           "source_projects", "sync_data_manager", "sync_project", "task_status", "with_columns"]

log = logging.getLogger(__name__)

AGREEMENT_FIELD = "crowdgate_agreement"
STATUS_FIELD = "crowdgate_status"
LINK_FIELD = "crowdgate_dashboard"
FIELDS = (AGREEMENT_FIELD, STATUS_FIELD, LINK_FIELD)  # what this job owns in task data
MAX_TASKS = 500  # tasks written per run at most: a backlog drains over a few runs, Label Studio stays responsive
READ_CHUNK = 1000  # tasks whose figures one pipeline reads
WRITE_CHUNK = 50  # tasks read back in one listing (one page) and written under their locks
LOCK_WAIT_S = 5.0  # a task whose lock another writer holds longer is written next run
# No answer, or a proxy saying Label Studio is away: stop the run. Any other refusal is that one task's, so a task
# Label Studio keeps refusing never holds up the others.
DOWN = frozenset({0, 502, 503, 504})


def task_status(route_status: str | None, consensus_reached: bool) -> str:
    """A task's status as the dashboard and the Data Manager show it: routing's ``escalated``/``final``, else
    ``consensus`` once its labels reach it, else ``needs more``."""
    if route_status in ("escalated", "final"):
        return route_status
    return "consensus" if consensus_reached else "needs more"


def dashboard_link(public_url: str, project: int, task: int) -> str | None:
    """The task's page on crowdgate's dashboard, or None without a public URL."""
    base = public_url.strip().rstrip("/")
    return f"{base}/dashboard/{int(project)}?task={int(task)}" if base else None


def columns(project: int, task: int, labels: int, agreement: float | None, status: str,
            public_url: str) -> dict[str, Any]:
    """The columns of one task (pure); a field left out is one the task should not carry."""
    out: dict[str, Any] = {STATUS_FIELD: status}
    if agreement is not None and labels >= 2:
        out[AGREEMENT_FIELD] = round(float(agreement), 2)  # small drifts are not worth a write
    link = dashboard_link(public_url, project, task)
    if link:
        out[LINK_FIELD] = link
    return out


def with_columns(data: Mapping[str, Any], cols: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with this job's fields set to ``cols`` (those absent from it removed), every other field kept."""
    kept = {k: v for k, v in data.items() if k not in FIELDS}
    return {**kept, **{k: cols[k] for k in FIELDS if k in cols}}


def source_projects(connection: redis.Redis, prefix: str) -> list[int]:
    """Projects crowdgate has seen, less the escalation and review projects it made."""
    keys = Keys(prefix)
    pipe = connection.pipeline(transaction=False)
    pipe.hkeys(keys.tier_project_links())
    pipe.hkeys(keys.review_projects())
    escalation, review = pipe.execute()
    made = {int(p) for p in escalation} | {int(p) for p in review}
    return [p for p in SubmissionStore(connection, prefix).projects() if p not in made]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _num(value: bytes | None) -> float | None:
    return float(value) if value not in (None, b"") else None


def _wanted(connection: redis.Redis, prefix: str, project: int,
            public_url: str) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any] | None]]:
    """(the columns every scored task should carry now, what was last written for it), read in batches."""
    keys = Keys(prefix)
    pipe = connection.pipeline(transaction=False)
    pipe.smembers(keys.tasks(project))
    Ledger(connection, prefix).queue_gold_tasks(pipe, project)
    pipe.hget(keys.project_info(project), "maximum_annotations")
    raw_tasks, marked, meta, slots = pipe.execute()
    tasks = sorted(int(t) for t in raw_tasks)
    gold = set(Ledger.gold_tasks_from(marked, meta))
    try:
        slots = int(slots or 0)
    except ValueError:
        slots = 0
    wanted: dict[int, dict[str, Any]] = {}
    written: dict[int, dict[str, Any] | None] = {}
    for chunk in _chunks(tasks, READ_CHUNK):
        pipe = connection.pipeline(transaction=False)
        for t in chunk:
            pipe.hmget(keys.task_score(project, t), "n", "agreement", "consensus_reached")
            pipe.hmget(keys.task_route(project, t), "status", "overlap")
            pipe.zcard(keys.task_submissions(project, t))
        pipe.hmget(keys.data_manager_written(project), chunk)
        replies = pipe.execute()
        last = replies.pop()
        for i, t in enumerate(chunk):
            (n, agreement, reached), (status, overlap), submissions = replies[3 * i:3 * i + 3]
            if t in gold:  # as a routed task would show: open while Label Studio serves it, then final
                limit = max(slots, int(overlap or 0))
                shown = "final" if limit and submissions >= limit else "needs more"
            else:
                shown = task_status(status.decode() if status else None, reached == b"1")
            wanted[t] = columns(project, t, int(n or 0), _num(agreement), shown, public_url)
            written[t] = json.loads(last[i]) if last[i] else None
    return wanted, written


def _change(cols: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(data: dict[str, Any]) -> dict[str, Any]:
        return with_columns(data, cols)
    return change


def sync_project(project: int, prefix: str, connection: redis.Redis, client: LabelStudioClient,
                 public_url: str = "", limit: int = MAX_TASKS) -> dict[str, Any]:
    """Write the changed columns of up to ``limit`` tasks of ``project`` (module docstring); what was done."""
    keys = Keys(prefix)
    wanted, written = _wanted(connection, prefix, project, public_url)
    changed = [t for t in wanted if wanted[t] != written[t]]
    # a new status (or a task never written) matters more to an admin than an agreement that moved
    changed.sort(key=lambda t: (written[t] is not None and written[t].get(STATUS_FIELD) == wanted[t][STATUS_FIELD], t))
    todo = changed[:max(limit, 0)]
    report: dict[str, Any] = {"project": project, "tasks": len(wanted), "changed": len(changed), "written": 0,
                              "unchanged": 0, "gone": 0, "failed": 0, "left": len(changed) - len(todo)}
    lock = TaskDataLock(connection, prefix, blocking_timeout=LOCK_WAIT_S)
    failed: dict[int, str] = {}
    for n, chunk in enumerate(_chunks(todo, WRITE_CHUNK)):
        try:
            done = lock.update_many(client, project, {t: _change(wanted[t]) for t in chunk})
        except LabelStudioError as exc:  # the listing: the whole chunk waits for the next run
            done = BatchUpdate(failed={t: str(exc) for t in chunk}, errors=[exc])
        # recorded as written: what Label Studio now holds (or a task it no longer has, not worth a retry)
        settled = done.written + done.unchanged + done.gone
        if settled:
            connection.hset(keys.data_manager_written(project),
                            mapping={str(t): json.dumps(wanted[t], sort_keys=True, separators=(",", ":"))
                                     for t in settled})
        for name in ("written", "unchanged", "gone"):
            report[name] += len(getattr(done, name))
        failed.update(done.failed)
        if any(e.status in DOWN for e in done.errors):  # Label Studio is down: the next run tries again
            rest = todo[(n + 1) * WRITE_CHUNK:]
            failed.update({t: "not tried: Label Studio did not answer" for t in rest})
            report["down"] = True
            break
    report["failed"] = len(failed)
    if failed:
        first = next(iter(failed.values()))
        log.warning("project %s: %d task(s) not written to the Data Manager, retried next run: %s",
                    project, len(failed), first)
        AuditLog(connection, prefix).record(
            "alert", "data_manager_failed", project,
            reason=f"{len(failed)} task(s) not written into Label Studio's Data Manager (retried next run): {first}",
            evidence={"tasks": sorted(failed)[:20], "failed": len(failed), "error": first[:500]},
            job="sync_data_manager")
    return report


def sync_data_manager(prefix: str = "cg", project: int | None = None, connection: redis.Redis | None = None,
                      client: LabelStudioClient | None = None, limit: int = MAX_TASKS) -> dict[int, dict[str, Any]]:
    """The cron job: every source project (or ``project``), at most ``limit`` task writes in all."""
    connection = connection or current_connection()
    public_url = current().public_url
    projects = source_projects(connection, prefix)
    if project is not None:
        if int(project) not in projects:
            return {int(project): {"project": int(project),
                                   "skipped": "not a source project crowdgate has seen (escalation and review "
                                              "projects carry no Data Manager columns)"}}
        projects = [int(project)]
    api = client or labelstudio()
    done: dict[int, dict[str, Any]] = {}
    left = limit
    for p in projects:
        try:
            done[p] = report = sync_project(p, prefix, connection, api, public_url, left)
        except redis.ConnectionError:
            raise  # Redis is gone: the next run starts over
        except Exception as exc:  # one project's failure must not stop the others
            log.exception("Data Manager sync of project %s failed", p)
            done[p] = {"project": p, "error": f"{type(exc).__name__}: {exc}"}
            continue
        left -= report["changed"] - report["left"]  # every task tried counts, written or not
        if report.get("down"):
            break  # the other projects would only wait on the same server
    return done
