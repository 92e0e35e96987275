"""The admin actions: one function each, called by the dashboard's buttons, the admin HTTP API and the CLI.

    actions = AdminActions(connection, prefix)
    actions.set_tier(project, annotator, "expert", by="web:ana", reason="passed the interview")
    actions.clear_flag(project, annotator, by="cli:root")
    actions.unpause(project, annotator, by="web:ana")          # through routing.pausing
    actions.rerun_task(project, task, by="web:ana")            # re-score and re-route one task

Every action is audited (``routing.audit``, kind ``action``, action ``admin_<name>``) with who did it in the
entry's ``job`` (``admin:<who>``) and ``evidence["by"]``; a refused action raises :class:`AdminError` with the
HTTP status it maps to and changes nothing.

    python -m crowdgate.admin set-tier PROJECT USER TIER [--reason R]
    python -m crowdgate.admin clear-flag PROJECT USER [--reason R]
    python -m crowdgate.admin unpause PROJECT USER [--reason R]
    python -m crowdgate.admin rerun-task PROJECT TASK [--reason R]
"""

from __future__ import annotations

import getpass
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import click
import redis

from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore
from routing import pausing
from routing.audit import AuditLog
from routing.exam import offer_gold
from routing.router import after_scoring
from routing.state import RoutingState

__all__ = ["ACTIONS", "AdminActions", "AdminError", "admin"]

ACTIONS = ("set_tier", "clear_flag", "unpause", "rerun_task")
_CAS_ATTEMPTS = 10


class AdminError(Exception):
    """An admin action that cannot be done as asked; ``status`` is the HTTP answer it maps to."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class AdminActions:
    """The admin actions on one deployment's Redis (``prefix``); see the module docstring."""

    connection: redis.Redis
    prefix: str = "cg"
    state: RoutingState = field(init=False)
    audit: AuditLog = field(init=False)
    store: SubmissionStore = field(init=False)

    def __post_init__(self) -> None:
        self.state = RoutingState(self.connection, self.prefix)
        self.audit = AuditLog(self.connection, self.prefix)
        self.store = SubmissionStore(self.connection, self.prefix)

    def _known_annotator(self, project: int, annotator: int) -> None:
        if not self.connection.sismember(self.store.keys.annotators(project), annotator) and \
                not self.connection.hexists(self.state.keys.tiers(project), annotator):
            raise AdminError(f"project {project} has no annotator {annotator}", 404)

    def _record(self, action: str, project: int, by: str, reason: str, *, task: int | None = None,
                annotators: tuple[int, ...] = (), evidence: dict[str, Any] | None = None) -> str:
        return self.audit.record("action", f"admin_{action}", project, task, annotators, reason,
                                 {"by": by, **(evidence or {})}, job=f"admin:{by}")

    def set_tier(self, project: int, annotator: int, tier: str, *, by: str, reason: str = "") -> dict[str, Any]:
        """Move an annotator to ``tier`` (compare-and-set on their record, so a concurrent routing change is
        never overwritten blindly), then offer them the gold their new tier asks for."""
        policy = self.state.policy(project)
        if tier not in policy.tier_names:
            raise AdminError(f"unknown tier {tier!r}; project {project}'s policy has {list(policy.tier_names)}")
        self._known_annotator(project, annotator)
        for _ in range(_CAS_ATTEMPTS):
            record = self.state.annotator(project, annotator, policy)
            if record.tier == tier:
                return {"project": project, "annotator": annotator, "tier": tier, "changed": False}
            if self.state.change_tier(project, annotator, record.version, tier, reset_exam=False):
                break
        else:
            raise AdminError(f"annotator {annotator}'s tier kept changing; try again", 409)
        entry = self._record("set_tier", project, by, reason or "tier set by an admin", annotators=(annotator,),
                             evidence={"from": record.tier, "to": tier, "version": record.version + 1})
        offer_gold(project, annotator, self.prefix, self.connection, reason="tier set by an admin")
        return {"project": project, "annotator": annotator, "from": record.tier, "tier": tier, "changed": True,
                "audit": entry}

    def clear_flag(self, project: int, annotator: int, *, by: str, reason: str = "") -> dict[str, Any]:
        """Let an annotator's labels count again: a fraud review flag or a pause is lifted through
        ``routing.pausing.clear_flag`` (which audits it); a flag set by hand is removed (audited here)."""
        reason = reason or "flag cleared by an admin"
        status = pausing.status_of(self.connection, project, annotator, self.prefix)
        if status is not None and status.status in ("review", "paused"):
            done = pausing.clear_flag(self.connection, project, annotator, reason, by=by, prefix=self.prefix)
            return {"project": project, "annotator": annotator, "cleared": bool(done["changed"]),
                    "was": f"{status.status}: {status.reason}", "enqueued": done["enqueued"]}
        was = self.state.flagged(project).get(annotator)
        if was is None:
            raise AdminError(f"annotator {annotator} of project {project} is not flagged", 404)
        self.state.unflag_annotator(project, annotator)
        entry = self._record("clear_flag", project, by, reason, annotators=(annotator,), evidence={"was": was})
        return {"project": project, "annotator": annotator, "cleared": True, "was": was, "audit": entry}

    def unpause(self, project: int, annotator: int, *, by: str, reason: str = "") -> dict[str, Any]:
        """Give a paused annotator their work back (``routing.pausing.unpause``, which audits it)."""
        status = pausing.status_of(self.connection, project, annotator, self.prefix)
        if status is None or status.status != "paused":
            raise AdminError(f"annotator {annotator} of project {project} is not paused", 404)
        done = pausing.unpause(self.connection, project, annotator, reason or "unpaused by an admin", by=by,
                               prefix=self.prefix)
        return {"project": project, "annotator": annotator, "unpaused": bool(done["changed"]),
                "enqueued": done["enqueued"]}

    def rerun_task(self, project: int, task: int, *, by: str, reason: str = "") -> dict[str, Any]:
        """Re-score one task from its stored submissions and re-route it, as the event job does after a
        submission (``Ledger.rescore`` then ``routing.router.after_scoring``); both are idempotent."""
        if not self.connection.sismember(self.store.keys.tasks(project), task):
            raise AdminError(f"project {project} has no task {task}", 404)
        score = Ledger(self.connection, self.prefix).rescore(project, task)
        if score is None:
            raise AdminError(f"project {project} has no label config yet: nothing to score", 409)
        try:
            routed = after_scoring({"project": project, "tasks": [task], "annotators": []}, self.prefix,
                                   self.connection)
        except Exception as exc:  # routing audits its own failures; the admin sees why
            self._record("rerun_task", project, by, reason or "task re-run by an admin", task=task,
                         evidence={"agreement": score.agreement, "routing_error": f"{type(exc).__name__}: {exc}"})
            raise AdminError(f"task {task} was re-scored, but routing failed: {type(exc).__name__}: {exc}",
                             502) from exc
        evidence = {"agreement": score.agreement, "consensus": score.consensus, "decisions": len(routed["decisions"]),
                    "enqueued": list(routed["enqueued"]), "dry_run": routed.get("dry_run", False)}
        entry = self._record("rerun_task", project, by, reason or "task re-run by an admin", task=task,
                             evidence=evidence)
        return {"project": project, "task": task, **evidence, "audit": entry}

    def run(self, action: str, project: int, target: int, *, by: str, reason: str = "",
            tier: str | None = None) -> dict[str, Any]:
        """Dispatch by name (the dashboard's forms and the HTTP API)."""
        if action == "set_tier":
            if not tier:
                raise AdminError("set_tier needs a tier")
            return self.set_tier(project, target, tier, by=by, reason=reason)
        if action == "clear_flag":
            return self.clear_flag(project, target, by=by, reason=reason)
        if action == "unpause":
            return self.unpause(project, target, by=by, reason=reason)
        if action == "rerun_task":
            return self.rerun_task(project, target, by=by, reason=reason)
        raise AdminError(f"unknown admin action {action!r}; one of {list(ACTIONS)}", 404)


# -- CLI -----------------------------------------------------------------------------------------------------


def _actions() -> AdminActions:
    from core.settings import Settings, use

    settings = use(Settings.from_env())
    return AdminActions(redis.Redis.from_url(settings.redis_url), settings.key_prefix)


def _cli_run(action: str, project: int, target: int, reason: str, tier: str | None = None) -> None:
    try:
        result = _actions().run(action, project, target, by=f"cli:{getpass.getuser()}", reason=reason, tier=tier)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, default=str))


@click.group(help="Admin actions (audited with the operating-system user who ran them).")
def admin() -> None:
    pass


@admin.command("set-tier")
@click.argument("project", type=int)
@click.argument("user", type=int)
@click.argument("tier")
@click.option("--reason", default="", help="kept in the audit log")
def set_tier_command(project: int, user: int, tier: str, reason: str) -> None:
    """Move USER to TIER in PROJECT."""
    _cli_run("set_tier", project, user, reason, tier)


@admin.command("clear-flag")
@click.argument("project", type=int)
@click.argument("user", type=int)
@click.option("--reason", default="")
def clear_flag_command(project: int, user: int, reason: str) -> None:
    """Let USER's labels count again."""
    _cli_run("clear_flag", project, user, reason)


@admin.command("unpause")
@click.argument("project", type=int)
@click.argument("user", type=int)
@click.option("--reason", default="")
def unpause_command(project: int, user: int, reason: str) -> None:
    """Give paused USER their work back."""
    _cli_run("unpause", project, user, reason)


@admin.command("rerun-task")
@click.argument("project", type=int)
@click.argument("task", type=int)
@click.option("--reason", default="")
def rerun_task_command(project: int, task: int, reason: str) -> None:
    """Re-score and re-route TASK."""
    _cli_run("rerun_task", project, task, reason)


if __name__ == "__main__":
    sys.exit(admin())
