"""``crowdgate fraud``: list the flagged and paused annotators of a project with their evidence, pause, unpause,
clear a flag, or evaluate a project now.

    crowdgate fraud list PROJECT [--json]
    crowdgate fraud pause PROJECT USER --reason "copies answers from user 12"
    crowdgate fraud unpause PROJECT USER --reason "checked: a fast typist"
    crowdgate fraud clear PROJECT USER --reason "reviewed, fine"
    crowdgate fraud evaluate PROJECT [--json]

Every command goes through :mod:`routing.pausing`, the same path as the automatic evaluation, so each action is
in the audit log (``crowdgate audit --project P --annotator U``) with who did it and why.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
import redis

from core.settings import Settings, use
from routing import pausing

__all__ = ["fraud"]


def _connection() -> tuple[Settings, redis.Redis]:
    settings = use(Settings.from_env())
    connection = redis.Redis.from_url(settings.redis_url)
    connection.ping()  # fail here, with the URL in crowdgate's message, rather than halfway through
    return settings, connection


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _reasons(row: dict[str, Any]) -> list[str]:
    found = (row.get("evidence") or {}).get("reasons")
    if isinstance(found, list) and found:
        return [f"{r.get('signal')}: {r.get('reason')}" for r in found if isinstance(r, dict)]
    return [row.get("reason") or ""]


@click.group()
def fraud() -> None:
    """Fraud detection: find and review suspicious annotators (pause, unpause, clear)."""


@fraud.command("list")
@click.argument("project", type=int)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per annotator, evidence included")
def list_command(project: int, as_json: bool) -> None:
    """Flagged and paused annotators of PROJECT, with their evidence (paused first, riskiest first)."""
    settings, connection = _connection()
    rows = pausing.list_flagged(connection, project, settings.key_prefix)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    if not rows:
        click.echo(f"project {project}: nobody is flagged or paused")
        return
    for row in rows:
        risk = "-" if row.get("risk") is None else f"{row['risk']:.1f}"
        click.echo(f"user {row['annotator']}  {row['status']:<7}  risk {risk:<5}  by {row.get('by') or '-'}  "
                   f"{_when(row.get('at'))}  ({row.get('submissions', 0)} submissions)")
        for reason in _reasons(row):
            click.echo(f"    - {reason}")


def _report(outcome: dict[str, Any], project: int, user: int, done: str, not_done: str) -> None:
    if outcome["changed"]:
        jobs = outcome.get("enqueued") or []
        click.echo(f"project {project}: user {user} {done}" + (f" ({len(jobs)} routing job(s) queued)" if jobs else ""))
    else:
        raise click.ClickException(f"project {project}: user {user} {not_done} (status: {outcome['status']})")


@fraud.command()
@click.argument("project", type=int)
@click.argument("user", type=int)
@click.option("--reason", required=True, help="why, as the audit log and the annotator list will show it")
@click.option("--by", default="admin", show_default=True, help="who decided")
@click.option("--no-requeue", is_flag=True, help="do not route the tasks they touched again now")
def pause(project: int, user: int, reason: str, by: str, no_requeue: bool) -> None:
    """Pause USER in PROJECT: no work offered, their labels out of every consensus, their tasks routed again."""
    settings, connection = _connection()
    outcome = pausing.pause(connection, project, user, reason, by=by, requeue_tasks=not no_requeue,
                            evidence={"manual": True}, prefix=settings.key_prefix)
    _report(outcome, project, user, "paused", "is already paused")


@fraud.command()
@click.argument("project", type=int)
@click.argument("user", type=int)
@click.option("--reason", required=True, help="why, for the audit log")
@click.option("--by", default="admin", show_default=True, help="who decided")
def unpause(project: int, user: int, reason: str, by: str) -> None:
    """Lift USER's pause in PROJECT: their labels count again and their tasks are routed again."""
    settings, connection = _connection()
    _report(pausing.unpause(connection, project, user, reason, by=by, prefix=settings.key_prefix), project, user,
            "unpaused", "is not paused")


@fraud.command()
@click.argument("project", type=int)
@click.argument("user", type=int)
@click.option("--reason", required=True, help="why, for the audit log")
@click.option("--by", default="admin", show_default=True, help="who decided")
def clear(project: int, user: int, reason: str, by: str) -> None:
    """Clear USER's review flag or pause in PROJECT; the automatic evaluation leaves them alone for a while
    (``fraud.recheck_after`` submissions)."""
    settings, connection = _connection()
    _report(pausing.clear_flag(connection, project, user, reason, by=by, prefix=settings.key_prefix), project, user,
            "cleared", "has no flag to clear")


@fraud.command()
@click.argument("project", type=int)
@click.option("--json", "as_json", is_flag=True, help="the evaluation's summary as JSON")
def evaluate(project: int, as_json: bool) -> None:
    """Evaluate PROJECT's annotators now and act as its policy says (the cron job does it every minute)."""
    settings, connection = _connection()
    summary = pausing.evaluate_project(connection, project, settings.key_prefix)
    if as_json:
        click.echo(json.dumps(summary, default=str))
        return
    if summary.get("dry_run"):
        click.echo(f"project {project}: {len(summary['risks'])} annotator(s) judged in dry-run (no policy bound): "
                   f"would pause {summary.get('would_pause') or 'none'}; would flag for review "
                   f"{summary.get('would_review') or 'none'}")
        return
    click.echo(f"project {project}: {len(summary['risks'])} annotator(s) judged; paused {summary['paused'] or 'none'}; "
               f"for review {summary['review'] or 'none'}")
