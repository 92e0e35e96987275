"""``crowdgate``: one command for the services, the operator tools and the admin's seeding.

    crowdgate --help                  # every subcommand, one line each
    crowdgate web | worker | cron     # the three services
    crowdgate seed FOLDER TASKS       # create or update a project from a label config folder (idempotent)
    crowdgate rebuild-state PROJECT   # wipe PROJECT's scoring state and rebuild it from Label Studio alone
    crowdgate reconcile [PROJECT]     # one reconciliation pass now (every known project without PROJECT)
    crowdgate export PROJECT --out DIR  # the consensus as a versioned snapshot folder; `export diff A B`
    crowdgate policy ... | audit ... | replay | demo | labelstudio ...

Every subcommand reads ``REDIS_URL``, ``CROWDGATE_KEY_PREFIX``, ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``
like the services. Subcommands are imported only when they run (click's lazy group), so ``crowdgate --help``
stays fast and a subcommand whose module is not installed is simply not listed. Exit codes: 0 ok, 1 failure
(with a message that says what to do), 2 usage error.

``rebuild-state`` rebuilds scoring (:func:`qa_hooks.rebuild.rebuild_project`) and, of routing, what Label Studio
holds: a task marked final in ``meta.crowdgate.final`` gets its final route back. Policies, tiers, exam
attempts, flags set by hand, escalation links and the audit log live only in Redis and are left as they are
(see the README). It replays through scoring only: routing acts again on the next event of each task, not on
history it already acted on.

The old console scripts (``crowdgate-web``, ``crowdgate-policy``, ...) still work for one release; they run the
same code as ``crowdgate web``, ``crowdgate policy``, ... (``crowdgate-policy``, ``crowdgate-audit``,
``crowdgate-replay``, ``crowdgate-demo`` and ``crowdgate-labelstudio`` run the very click command, through
:func:`core.console_scripts.run_alias`, and say on stderr that they are aliases).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import click

from core.settings import Settings, use

if TYPE_CHECKING:  # imported where used, so that `crowdgate --help` loads neither Redis nor the SDK
    import redis

    from core.labelstudio import LabelStudioClient
    from routing.state import RoutingState

__all__ = ["LAZY_COMMANDS", "cli", "main", "rebuild_state", "restore_final_routes"]

# name -> ("module:attribute" of a click command, its one-line help). Imported only when the command runs, so
# `crowdgate --help` imports none of them; a command whose module is absent is left out of the listing.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "seed": ("crowdgate.seed:seed", "Create or update a project from a label config folder and a tasks file."),
    "simulate": ("crowdgate.simulate:simulate", "Drive Label Studio with simulated or replayed annotators."),
    "fraud": ("routing.fraud_cli:fraud", "Fraud detection: find and review suspicious annotators."),
    "report": ("crowdgate.report.cli:report", "Quality and cost report of a project."),
    "export": ("crowdgate.export.cli:export", "Consensus export: versioned snapshots (LS JSON, CSV, manifest); diff."),
    "review": ("routing.review_cli:review", "The review queue of a project and each annotator's acceptance."),
    "admin": ("crowdgate.admin:admin", "Admin actions: set-tier, clear-flag, unpause, rerun-task (audited)."),
    "policy": ("routing.cli:policy", "Bind, show and check routing policies; set tiers and flags by hand."),
    "audit": ("routing.cli:query_audit_log", "Query and export the audit log (JSONL or CSV)."),
    "replay": ("scripts.replay:replay_command", "Replay a crowd label set through scoring, without Label Studio."),
    "demo": ("scripts.demo:demo", "The demo: Label Studio, crowdgate and a real crowd, end to end."),
    "labelstudio": ("scripts.labelstudio:labelstudio", "Install or start a headless Label Studio."),
}

def _target(spec: str) -> Any:
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _available(spec: str) -> bool:
    """Whether the module of ``spec`` exists, looked up on disk without importing it or its packages (a
    package's ``__init__`` can be slow to import)."""
    top, *rest = spec.partition(":")[0].split(".")
    found = importlib.util.find_spec(top)
    if found is None:
        return False
    places = [Path(p) for p in (found.submodule_search_locations or [])]
    for i, part in enumerate(rest):
        last = i == len(rest) - 1
        hits = [p / part for p in places if (p / part / "__init__.py").is_file()]
        if last and any((p / f"{part}.py").is_file() for p in places):
            return True
        if not hits:
            return False
        places = hits
    return True


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def explain(exc: BaseException, settings: Settings) -> str | None:
    """What to do about a dependency that failed; None when ``exc`` is not one of those."""
    import redis

    from core.labelstudio import LabelStudioError

    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return (f"cannot reach Redis at {_without_password(settings.redis_url)} ({exc}). "
                "Start Redis, or point REDIS_URL at a running one.")
    if isinstance(exc, LabelStudioError) and exc.status in (0, 401, 403):
        what = "cannot reach Label Studio" if exc.status == 0 else f"Label Studio refused the API key ({exc.status})"
        return (f"{what} at {settings.label_studio_url or '(LABEL_STUDIO_URL not set)'}: {exc}. "
                "Check LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (an admin's access token).")
    if isinstance(exc, RuntimeError) and "LABEL_STUDIO_URL" in str(exc):
        return f"{exc}."
    return None


class CrowdgateGroup(click.Group):
    """A group that imports its lazy subcommands on use and turns unreachable dependencies into one clear line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [name for name, (spec, _) in LAZY_COMMANDS.items() if _available(spec)]
        return sorted({*super().list_commands(ctx), *lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name in LAZY_COMMANDS and _available(LAZY_COMMANDS[cmd_name][0]):
            command = _target(LAZY_COMMANDS[cmd_name][0])
            if not isinstance(command, click.Command):
                raise click.ClickException(f"{LAZY_COMMANDS[cmd_name][0]} is not a click command")
            return command
        return None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Lazy commands are listed with their help from the table, so the listing imports none of them.
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(formatter.width - 6 - len(name))))
            else:
                rows.append((name, LAZY_COMMANDS[name][1]))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise  # click's own: exit codes and messages that already say what to do
        except Exception as exc:
            message = explain(exc, Settings.from_env())
            if message is None:
                raise
            raise click.ClickException(message) from exc


@click.group(cls=CrowdgateGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """crowdgate: quality control, routing and seeding for a crowd working in Label Studio Community.

    Settings come from the environment (`python -m core.settings` lists them all): REDIS_URL,
    LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (an admin's token) are the ones most commands need.

    An admin's first steps: `crowdgate seed label_configs/<type> tasks.jsonl --annotators people.csv`, then
    `crowdgate web`, `crowdgate worker` and `crowdgate cron`, then real annotators (or `crowdgate simulate`).
    """


# -- services -------------------------------------------------------------------------------------------------


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("gunicorn_args", nargs=-1, type=click.UNPROCESSED)
def web(gunicorn_args: tuple[str, ...]) -> None:
    """The web app (ML backend + webhook receiver) under gunicorn on $CROWDGATE_BIND.

    Extra arguments go to gunicorn, e.g. `crowdgate web --log-level debug`.
    """
    from crowdgate import web as web_app

    web_app.main(list(gunicorn_args))


@cli.command()
@click.argument("queues", nargs=-1)
def worker(queues: tuple[str, ...]) -> None:
    """The RQ worker (with RQ's scheduler) and the webhook inbox drain.

    QUEUES: the RQ queues to listen on (default: all of crowdgate's, e.g. crowdgate-events crowdgate-routing
    crowdgate-ml); name one to size the pools apart.
    """
    from crowdgate import worker as rq_worker

    sys.exit(rq_worker.main(list(queues)))


@cli.command()
def cron() -> None:
    """The RQ cron scheduler: reconciliation, annotator signals, deadline and retention sweeps."""
    from crowdgate import cron as scheduler

    sys.exit(scheduler.main())


# -- operator commands ----------------------------------------------------------------------------------------


def restore_final_routes(project: int, tasks: list[dict[str, Any]], state: RoutingState) -> int:
    """Give every task whose meta carries crowdgate's final mark its final route, where Redis lost it."""
    marked = {int(t["id"]): ((t.get("meta") or {}).get("crowdgate") or {}).get("final") for t in tasks}
    marked = {task: final for task, final in marked.items() if isinstance(final, dict)}
    restored = 0
    for task, route in state.routes(project, marked).items():
        if route.status != "final":
            final = marked[task]
            state.update_route(project, task, status="final", final_label=final.get("label"),
                               required_tier=final.get("required_tier"))
            restored += 1
    return restored


def rebuild_state(project: int, prefix: str, connection: redis.Redis, client: LabelStudioClient) -> dict[str, Any]:
    """Scoring state from Label Studio's export, then routing's final marks; audited."""
    from qa_hooks.jobs import process_event
    from qa_hooks.rebuild import rebuild_project
    from routing.audit import AuditLog
    from routing.state import RoutingState

    tasks = client.export(project)
    totals = rebuild_project(project, prefix, connection, client, process_event, tasks=tasks)
    totals["final_routes_restored"] = restore_final_routes(project, tasks, RoutingState(connection, prefix))
    AuditLog(connection, prefix).record("action", "rebuild_state", project,
                                        reason="scoring state rebuilt from Label Studio's export",
                                        evidence={k: v for k, v in totals.items() if k != "skipped"})
    return totals


def _connections() -> tuple[Settings, redis.Redis, LabelStudioClient]:
    import redis

    from core.labelstudio import LabelStudioClient

    settings = use(Settings.from_env())
    connection = redis.Redis.from_url(settings.redis_url)
    connection.ping()  # fail here, with the URL in the message, rather than halfway through
    return settings, connection, LabelStudioClient.from_settings(settings)


@cli.command("rebuild-state")
@click.argument("project", type=int)
def rebuild_state_command(project: int) -> None:
    """Wipe PROJECT's scoring state and rebuild it from Label Studio's export alone (prints counts as JSON).

    Policies, tiers, flags set by hand, escalation links and the audit log live only in Redis and are kept.
    """
    settings, connection, client = _connections()
    click.echo(json.dumps(rebuild_state(project, settings.key_prefix, connection, client), indent=2, default=str))


@cli.command()
@click.argument("project", type=int, required=False)
def reconcile(project: int | None) -> None:
    """One reconciliation pass now: what Label Studio holds and crowdgate missed is scored and routed like a
    webhook (PROJECT, or every known project). Prints counts as JSON."""
    from crowdgate.pipeline import reconcile_and_route

    settings, connection, _ = _connections()
    result = reconcile_and_route(settings.key_prefix, connection, None if project is None else [project])
    click.echo(json.dumps(result, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    """``crowdgate``'s entry point: the exit code (0 ok, 1 failure, 2 usage error)."""
    try:
        cli.main(args=argv, prog_name="crowdgate", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
