"""``crowdgate policy`` and ``crowdgate audit``: routing policies, hand-set tiers and flags, and the audit log.

    crowdgate policy set PROJECT FILE      # validate FILE and bind it to PROJECT (stored in Redis)
    crowdgate policy show PROJECT          # the policy in force (the default file when none is bound)
    crowdgate policy unset PROJECT         # back to the default policy
    crowdgate policy check FILE            # validate only
    crowdgate policy tier PROJECT USER TIER [--reason R]   # set an annotator's tier by hand (audited)
    crowdgate policy tiers PROJECT         # annotators and their tiers
    crowdgate policy flag PROJECT USER --reason R   # an annotator's labels stop counting (audited)
    crowdgate policy unflag PROJECT USER [--reason R]   # they count again (audited)
    crowdgate audit [--project P] [--task T] [--annotator U] [--kind K] [--action A] [--since ISO]
                    [--format jsonl|csv] [--output FILE]

Both read ``REDIS_URL`` and ``CROWDGATE_KEY_PREFIX`` like the other crowdgate services (``--redis-url`` and
``--prefix`` override them; for ``policy`` they come before the subcommand). ``crowdgate-policy`` and
``crowdgate-audit`` (:func:`policy_main`, :func:`audit_main`) are their old names, kept for one release.
Exit codes: 0 ok, 1 refused or failed (the message says why), 2 usage error.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import click
import redis

from core.console_scripts import run_alias
from core.settings import Settings, use
from routing.audit import KINDS, AuditLog, to_csv, to_jsonl
from routing.exam import offer_gold
from routing.policy import PolicyError, parse_policy
from routing.state import RoutingState

__all__ = ["audit_main", "policy", "policy_main", "query_audit_log"]

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
FILE = click.Path(dir_okay=False, path_type=Path)  # read by the command: a missing file is its error (exit 1)


def _connect(redis_url: str | None, prefix: str | None) -> tuple[redis.Redis, str]:
    settings = use(Settings.from_env())
    connection = redis.Redis.from_url(redis_url or settings.redis_url)
    try:
        connection.ping()  # fail here, naming the Redis actually used (--redis-url or REDIS_URL), not halfway
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        _fail(f"cannot reach Redis ({exc}). Start Redis, or point --redis-url or REDIS_URL at a running one.")
    return connection, prefix or settings.key_prefix


def _fail(message: object) -> NoReturn:
    """The command's refusal: ``message`` on stderr, exit code 1."""
    click.echo(str(message), err=True)
    raise click.exceptions.Exit(1)


def _redis_options(command: click.Command) -> click.Command:
    command = click.option("--prefix", default=None, metavar="PREFIX",
                           help="Key prefix (default: $CROWDGATE_KEY_PREFIX, or cg).")(command)
    return click.option("--redis-url", default=None, metavar="URL", help="Redis to use (default: $REDIS_URL).")(command)


class _Routing:
    """What every ``policy`` subcommand needs: the Redis connection, the routing state and the audit log."""

    def __init__(self, redis_url: str | None, prefix: str | None) -> None:
        self.connection, self.prefix = _connect(redis_url, prefix)
        self.state = RoutingState(self.connection, self.prefix)
        self.audit = AuditLog(self.connection, self.prefix)


def _routing(ctx: click.Context) -> _Routing:
    return _Routing(*ctx.obj)


# -- crowdgate policy -----------------------------------------------------------------------------------------


@click.group(context_settings=HELP_OPTIONS)
@_redis_options
@click.pass_context
def policy(ctx: click.Context, redis_url: str | None, prefix: str | None) -> None:
    """Bind routing policies to projects; set annotators' tiers and flags by hand.

    A policy file (YAML, see label_configs/default.policy.yaml) names the tiers, the overlap, the gold share and
    the fraud thresholds; a project without one is routed in dry-run with the default policy. Every change is
    recorded in the audit log (`crowdgate audit --project P`).

    --redis-url and --prefix come before the subcommand: `crowdgate policy --prefix cg show 3`.
    """
    ctx.obj = (redis_url, prefix)


@policy.command("check", short_help="Validate a policy file (no Redis needed).")
@click.argument("file", type=FILE)
def check_command(file: Path) -> None:
    """Validate the policy FILE only (no Redis needed): prints its tiers, or every problem with its key."""
    try:
        parsed = parse_policy(file.read_text(encoding="utf-8"), origin=str(file))
    except (OSError, PolicyError) as exc:
        _fail(exc)
    click.echo(f"{file}: valid ({' -> '.join(parsed.tier_names)})")


@policy.command("set", short_help="Validate a policy file and bind it to a project.")
@click.argument("project", type=int)
@click.argument("file", type=FILE)
@click.pass_context
def set_command(ctx: click.Context, project: int, file: Path) -> None:
    """Validate the policy FILE and bind it to PROJECT (stored in Redis, audited).

    A file with an error is refused (exit 1) and the policy in force stays as it was.
    """
    routing = _routing(ctx)
    try:
        text = file.read_text(encoding="utf-8")
        bound = routing.state.set_policy(project, text, origin=str(file.resolve()))
    except (OSError, PolicyError) as exc:
        _fail(exc)
    routing.audit.record("action", "set_policy", project, reason=f"policy {file} bound",
                         evidence={"origin": str(file.resolve()), "tiers": list(bound.tier_names)})
    click.echo(f"project {project}: policy {file} ({' -> '.join(bound.tier_names)})")


@policy.command("show", short_help="The policy in force for a project.")
@click.argument("project", type=int)
@click.pass_context
def show_command(ctx: click.Context, project: int) -> None:
    """The policy in force for PROJECT: its source, after a comment line naming where it came from (the
    default file when none is bound)."""
    text, origin = _routing(ctx).state.policy_source(project)
    click.echo(f"# project {project}: {origin}")
    click.echo(text, nl=not text.endswith("\n"))


@policy.command("unset", short_help="Back to the default policy.")
@click.argument("project", type=int)
@click.pass_context
def unset_command(ctx: click.Context, project: int) -> None:
    """Unbind PROJECT's policy: it is routed with the default policy again (audited)."""
    routing = _routing(ctx)
    routing.state.unset_policy(project)
    routing.audit.record("action", "unset_policy", project, reason="back to the default policy")
    click.echo(f"project {project}: default policy")


@policy.command("tiers", short_help="Annotators and their tiers.")
@click.argument("project", type=int)
@click.pass_context
def tiers_command(ctx: click.Context, project: int) -> None:
    """The annotators of PROJECT with a tier, one `USER<tab>TIER` line each; stderr names the tier of all
    others (the policy's first)."""
    routing = _routing(ctx)
    bound = routing.state.policy(project)
    for user, tier in sorted(routing.state.tiers(project).items()):
        click.echo(f"{user}\t{tier}")
    click.echo(f"# others: {bound.tiers[0].name}", err=True)


@policy.command("tier", short_help="Set an annotator's tier by hand (audited).")
@click.argument("project", type=int)
@click.argument("user", type=int)
@click.argument("tier")
@click.option("--reason", default="set by hand", show_default=True, help="Why, kept in the audit log.")
@click.pass_context
def tier_command(ctx: click.Context, project: int, user: int, tier: str, reason: str) -> None:
    """Set the tier of USER (a Label Studio user id) in PROJECT by hand to TIER, one of the policy's tiers
    (audited). Their exam gold, or their gold share, is offered at once."""
    routing = _routing(ctx)
    bound = routing.state.policy(project)
    if tier not in bound.tier_names:
        _fail(f"unknown tier {tier!r}; the policy has {list(bound.tier_names)}")
    before = routing.state.annotator(project, user, bound).tier
    version = routing.state.set_tier(project, user, tier)
    routing.audit.record("action", "set_tier", project, None, [user], reason,
                         {"from": before, "to": tier, "version": version})
    # A newcomer set by hand gets their exam gold (or a qualified annotator their gold share) offered now,
    # not only after their first submission.
    offer_gold(project, user, routing.prefix, routing.connection, reason="tier set by hand")
    click.echo(f"project {project}: user {user} {before} -> {tier}")


def _refuse_if_paused(routing: _Routing, project: int, user: int) -> None:
    if routing.state.annotator(project, user, routing.state.policy(project)).paused:
        # a pause holds the routing flag and restores the hand flag on undo: changing it here would be lost
        _fail(f"project {project}: user {user} is paused for fraud review; use `crowdgate fraud unpause` "
              "or `crowdgate fraud clear` first")


@policy.command("flag", short_help="Flag an annotator by hand: their labels stop counting.")
@click.argument("project", type=int)
@click.argument("user", type=int)
@click.option("--reason", required=True, help="Why (required): kept with the flag and in the audit log.")
@click.pass_context
def flag_command(ctx: click.Context, project: int, user: int, reason: str) -> None:
    """Flag USER (a Label Studio user id) in PROJECT by hand: their labels stop counting (audited).

    Refused for an annotator paused for fraud review (see `crowdgate fraud`).
    """
    routing = _routing(ctx)
    _refuse_if_paused(routing, project, user)
    reason = reason.strip()
    if not reason:
        _fail("--reason must not be empty")
    routing.state.flag_annotator(project, user, reason)
    routing.audit.record("flag", "flag_annotator", project, None, [user], reason, {"by": "hand"})
    click.echo(f"project {project}: user {user} flagged ({reason})")


@policy.command("unflag", short_help="Remove a flag set by hand.")
@click.argument("project", type=int)
@click.argument("user", type=int)
@click.option("--reason", default="unflagged by hand", show_default=True, help="Why, kept in the audit log.")
@click.pass_context
def unflag_command(ctx: click.Context, project: int, user: int, reason: str) -> None:
    """Remove the flag set by hand on USER in PROJECT: their labels count again (audited).

    Exit 1 when USER has no flag set by hand, or is paused for fraud review.
    """
    routing = _routing(ctx)
    _refuse_if_paused(routing, project, user)
    was = routing.state.flagged(project).get(user)
    if was is None:
        _fail(f"project {project}: user {user} is not flagged by hand")
    routing.state.unflag_annotator(project, user)
    routing.audit.record("action", "unflag_annotator", project, None, [user], reason, {"was": was})
    click.echo(f"project {project}: user {user} unflagged")


# -- crowdgate audit ------------------------------------------------------------------------------------------


def _timestamp(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _timestamp_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return _timestamp(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an ISO time (2026-01-31T12:00:00Z) nor Unix seconds") \
            from None


@click.command("audit", context_settings=HELP_OPTIONS)
@_redis_options
@click.option("--project", type=int, help="Only this project's entries.")
@click.option("--task", type=int, help="Only this task's entries (needs --project).")
@click.option("--annotator", type=int, help="Only entries about this Label Studio user id.")
@click.option("--kind", type=click.Choice(KINDS), help="Only entries of this kind.")
@click.option("--action", help="Only this action, e.g. escalate, task:escalate, write_back.")
@click.option("--since", callback=_timestamp_option, metavar="TIME", help="From this ISO time or Unix seconds.")
@click.option("--until", callback=_timestamp_option, metavar="TIME", help="Up to this ISO time or Unix seconds.")
@click.option("--format", "output_format", type=click.Choice(("jsonl", "csv")), default="jsonl", show_default=True,
              help="JSON lines or CSV (annotators joined with ';', evidence as JSON).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="File to write (default: stdout); the count goes to stderr.")
def query_audit_log(redis_url: str | None, prefix: str | None, project: int | None, task: int | None,
                    annotator: int | None, kind: str | None, action: str | None, since: float | None,
                    until: float | None, output_format: str, output: Path | None) -> None:
    """Query and export crowdgate's audit log: every routing decision, flag, pause and hand action, with its
    reason and evidence, oldest first.

    Filters combine: `crowdgate audit --project 3 --annotator 12 --since 2026-01-01 --format csv --output a.csv`.
    """
    if task is not None and project is None:
        raise click.UsageError("--task needs --project")
    connection, key_prefix = _connect(redis_url, prefix)
    entries = AuditLog(connection, key_prefix).query(
        project=project, task=task, annotator=annotator, kind=kind, action=action, since=since, until=until)
    try:
        out = open(output, "w", newline="", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror}; choose another --output")
    try:
        if output_format == "csv":
            to_csv(entries, out)
        else:
            to_jsonl(entries, out)
    finally:
        if output:
            out.close()
    if output:
        click.echo(f"{len(entries)} entries -> {output}", err=True)


# -- the old console scripts ----------------------------------------------------------------------------------


def policy_main(argv: list[str] | None = None) -> int:
    """``crowdgate-policy``: an alias of ``crowdgate policy`` kept for one release; returns the exit code."""
    return run_alias(policy, argv, alias="crowdgate-policy", name="policy")


def audit_main(argv: list[str] | None = None) -> int:
    """``crowdgate-audit``: an alias of ``crowdgate audit`` kept for one release; returns the exit code."""
    return run_alias(query_audit_log, argv, alias="crowdgate-audit", name="audit")


if __name__ == "__main__":
    sys.exit(policy_main())
