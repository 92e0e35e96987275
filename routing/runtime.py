"""What every routing job runs with: the :class:`Context` on one Redis, the routing queue, and Label Studio.

Jobs are enqueued with :func:`enqueue_action` on ``crowdgate-routing``: a deterministic job id (:func:`job_id`,
``unique=True``, so RQ refuses the same decision twice), RQ ``Retry`` with backoff, and every failed attempt
written to the audit log by :func:`on_action_failure`. :func:`labelstudio` is the Label Studio client the jobs of
this process use (:func:`set_labelstudio` swaps it in tests and scripts).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis
from rq import Callback, Queue, Retry
from rq.exceptions import DuplicateJobError

from core.keys import Keys
from core.labelstudio import LabelStudioClient, LabelStudioError
from core.settings import Settings, current
from qa_hooks.jobs import current_connection
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore
from routing.audit import AuditLog
from routing.state import RoutingState

__all__ = [
    "FAILED_TTL_S",
    "RESULT_TTL_S",
    "RETRY",
    "Context",
    "enqueue_action",
    "job_id",
    "labelstudio",
    "on_action_failure",
    "set_labelstudio",
    "unless_gone",
]

log = logging.getLogger(__name__)

RETRY = Retry(max=5, interval=[1, 5, 30, 120, 600])
RESULT_TTL_S = 24 * 3600  # keeps a finished job's id, so RQ refuses the same action for a day
FAILED_TTL_S = 30 * 24 * 3600

_api: LabelStudioClient | None = None


def _client_from_settings() -> LabelStudioClient:
    return LabelStudioClient.from_settings(current())


_api_factory: Callable[[], LabelStudioClient] = _client_from_settings


def set_labelstudio(api: LabelStudioClient | None = None,
                    factory: Callable[[], LabelStudioClient] | None = None) -> None:
    """Use ``api`` (or build one with ``factory``) for the actions run in this process (tests, scripts)."""
    global _api, _api_factory
    _api = api
    if factory is not None:
        _api_factory = factory


def labelstudio() -> LabelStudioClient:
    """The Label Studio client of this process, built from its settings on first use."""
    global _api
    if _api is None:
        _api = _api_factory()
    return _api


def unless_gone(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, or None when Label Studio says the object no longer exists (404)."""
    try:
        return call(*args)
    except LabelStudioError as exc:
        if exc.status == 404:
            return None
        raise


@dataclass
class Context:
    """One routing step's view of Redis: crowdgate's routing state, audit log, ledger and submission store."""

    connection: redis.Redis
    prefix: str = "cg"
    settings: Settings = field(default_factory=current)
    dry_run: bool = False  # decide and audit, but enqueue no action (a project without a bound policy)
    state: RoutingState = field(init=False)
    audit: AuditLog = field(init=False)
    ledger: Ledger = field(init=False)
    store: SubmissionStore = field(init=False)
    keys: Keys = field(init=False)  # routing's own keys (locks); the stores above hold theirs

    def __post_init__(self) -> None:
        self.keys = Keys(self.prefix)
        self.state = RoutingState(self.connection, self.prefix)
        self.audit = AuditLog(self.connection, self.prefix)
        self.ledger = Ledger(self.connection, self.prefix)
        self.store = SubmissionStore(self.connection, self.prefix)

    @classmethod
    def of(cls, prefix: str, connection: redis.Redis | None = None) -> Context:
        """The context of a job: ``connection``, or the one of the RQ job running now."""
        return cls(connection or current_connection(), prefix)

    def enqueue(self, func: Callable[..., Any], job: str, **kwargs: Any) -> str | None:
        """An action for a decision; nothing in dry-run mode."""
        if self.dry_run:
            return None
        return enqueue_action(self.connection, func, job, **kwargs)

    @property
    def mode(self) -> dict[str, Any]:
        """Evidence every decision carries: marked ``dry_run`` when nothing will act on it."""
        return {"dry_run": True} if self.dry_run else {}

    def flagged(self, project: int, annotators: Iterable[int]) -> dict[int, str]:
        """Annotators whose labels never count, and why: flagged by hand (routing state) or by the scoring
        side's low-effort and fraud signals (``Ledger.flags``)."""
        manual = self.state.flagged(project)
        out: dict[int, str] = {}
        for a in annotators:
            if a in manual:
                out[a] = manual[a]
            else:
                signals = self.ledger.flags(project, a)
                if signals:
                    out[a] = ", ".join(f.name for f in signals)
        return out

    def edition(self, api: LabelStudioClient, project: int) -> str:
        """Community or Enterprise behind ``project``: probed once, then shared by every worker for an hour."""
        found = self.state.edition(project)
        if found is None:
            found = api.edition(project)
            self.state.set_edition(project, found)
        return found

    def emails(self, api: LabelStudioClient, users: Iterable[int]) -> dict[int, str | None]:
        """Users' e-mails from the cache, which is refreshed from Label Studio when one is missing."""
        people = list(users)
        known = self.state.emails(people)
        if any(v is None for v in known.values()):
            self.state.cache_users({int(u["id"]): u["email"] for u in api.users() if u.get("email")})
            known = self.state.emails(people)
        return known


def enqueue_action(connection: redis.Redis, func: Callable[..., Any], job: str, *, delay: float | None = None,
                   **kwargs: Any) -> str | None:
    """Enqueue ``func(**kwargs)`` on the routing queue as job ``job``; None when that job already exists."""
    queue = Queue(current().routing_queue, connection=connection)
    options: dict[str, Any] = {
        "job_id": job, "unique": True, "retry": RETRY, "result_ttl": RESULT_TTL_S, "failure_ttl": FAILED_TTL_S,
        "on_failure": Callback(on_action_failure), "description": job,
    }
    try:
        if delay is not None:
            queue.enqueue_in(timedelta(seconds=max(delay, 0.0)), func, kwargs=kwargs, **options)
        else:
            queue.enqueue(func, kwargs=kwargs, **options)
    except DuplicateJobError:
        return None
    return job


def on_action_failure(job: Any, connection: redis.Redis, exc_type: type, exc_value: BaseException, tb: Any) -> None:
    """RQ failure callback (RQ's signature, traceback unused): every failed attempt goes into the audit log."""
    kwargs = job.kwargs or {}
    retries = job.retries_left or 0
    try:
        AuditLog(connection, kwargs.get("prefix", "cg")).record(
            "error", job.func_name.rsplit(".", 1)[-1], kwargs.get("project") or kwargs.get("tier_project"),
            kwargs.get("task") or kwargs.get("tier_task"), [a for a in (kwargs.get("annotator"),) if a is not None],
            f"{exc_type.__name__}: {exc_value}",
            {"job": job.id, "retries_left": retries, "will_retry": retries > 0}, job=job.id)
    except redis.RedisError:  # the failure itself stays in RQ's registry
        log.exception("could not audit the failure of %s", job.id)


def job_id(prefix: str, *parts: object) -> str:
    """Deterministic job id (RQ allows letters, digits, ``_`` and ``-``): same decision, same id."""
    return "_".join(re.sub(r"[^A-Za-z0-9-]", "-", str(p)) for p in ("cgroute", prefix, *parts))
