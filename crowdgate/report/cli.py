"""``crowdgate report PROJECT [--html PATH] [--csv DIR] [--json [PATH]]``: a project's annotators and tasks.

Prints the annotators as a table in the terminal (rich) with the project's summary; ``--html`` writes the
self-contained HTML report (inline CSS and SVG charts: it opens with no network), ``--csv`` writes
``annotators.csv`` and ``tasks.csv`` into DIR, ``--json`` prints the whole report as JSON instead of the table
(or writes it to ``--json-file``). ``--payroll PATH`` writes what payroll needs per annotator (labels, paid hours,
wage, fee, total; :mod:`crowdgate.report.cost` defines each) for the labels submitted between ``--since`` and
``--until`` (UTC; Label Studio's submission time). Reads ``REDIS_URL`` and ``CROWDGATE_KEY_PREFIX`` like the services.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click
import redis
from rich.console import Console
from rich.table import Table

from core.settings import Settings, use
from crowdgate.report.cost import CostModel, QaCounts
from crowdgate.report.data import ProjectReport, list_projects, read_project, read_work
from crowdgate.report.files import write_csv, write_json, write_payroll
from crowdgate.report.html import write_html
from routing.state import RoutingState

__all__ = ["print_table", "report"]


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _interval(value: float | None, low: float | None, high: float | None) -> str:
    return "–" if value is None else f"{value:.3f} [{_num(low)}, {_num(high)}]"


def print_table(report: ProjectReport, console: Console) -> None:
    s = report.summary
    agreement = "–" if s["agreement"] is None else f"{100 * s['agreement']:.1f} %"
    console.print(f"[bold]{report.title}[/bold] (project {report.project}): {s['submissions']} submissions, "
                  f"{s['skipped']} skipped, {s['annotators']} annotators, {s['tasks']} tasks, agreement {agreement}, "
                  f"{s['flagged']} flagged, {s['paused']} paused, {s['escalated_now']} escalated now "
                  f"({s['escalations']} escalations)")
    if report.cost:
        console.print(cost_line(report.cost), highlight=False)
    table = Table(show_lines=False)
    for column in ("annotator", "tier", "submitted", "skipped", "peer agreement", "gold [90 %]",
                   "reliability [90 %]", "median lead s", "total lead s", "cost", "flags", "paused", "last active"):
        table.add_column(column, overflow="fold")
    for a in report.annotators:
        table.add_row(str(a.annotator), a.tier, str(a.submitted), str(a.skipped), _num(a.peer_agreement),
                      _interval(a.gold_score, a.gold_low, a.gold_high),
                      _interval(a.reliability, a.reliability_low, a.reliability_high),
                      _num(a.median_lead_time_s), f"{a.total_lead_time_s:.1f}", _num(a.cost), "; ".join(a.flags),
                      a.paused or "",
                      "–" if a.last_active is None else f"{a.last_active:.0f}")
    console.print(table)


def _money(value: float | None, currency: str) -> str:
    return "–" if value is None else f"{value:.4f} {currency}"


def cost_line(cost: dict) -> str:
    """One line: the project's cost per accepted label against the fixed-overlap baseline."""
    c, o = cost["currency"], cost["overhead"]
    return (f"cost {_money(cost['total'], c)} ({cost['labels']} labels), per accepted label "
            f"{_money(cost['per_accepted'], c)}; fixed overlap {cost['baseline_overlap']}: "
            f"{_money(cost['baseline_per_accepted'], c)} per accepted label, saved {_money(cost['saved'], c)}; "
            f"QA overhead: gold {o['gold']:.4f}, overlap {o['overlap']:.4f}, escalation {o['escalation']:.4f}, "
            f"review {o['review']:.4f}")


def _utc(value: dt.datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=dt.UTC).timestamp()


_WHEN = click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"])


@click.command("report")
@click.argument("project", type=int)
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="write the self-contained HTML report here")
@click.option("--csv", "csv_dir", type=click.Path(file_okay=False, path_type=Path),
              help="write annotators.csv and tasks.csv into this folder")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON instead of the table")
@click.option("--json-file", type=click.Path(dir_okay=False, path_type=Path), help="write the JSON report here")
@click.option("--payroll", "payroll_path", type=click.Path(dir_okay=False, path_type=Path),
              help="write the payroll CSV (per annotator: labels, paid hours, wage, fee, total) here")
@click.option("--since", type=_WHEN, help="payroll: labels submitted at or after this UTC date/time")
@click.option("--until", type=_WHEN, help="payroll: labels submitted at or before this UTC date/time")
def report(project: int, html_path: Path | None, csv_dir: Path | None, as_json: bool, json_file: Path | None,
           payroll_path: Path | None, since: dt.datetime | None, until: dt.datetime | None) -> None:
    """The annotators and tasks of PROJECT: a table, and the HTML, CSV, JSON and payroll files asked for."""
    if (since or until) and payroll_path is None:
        raise click.UsageError("--since and --until select the payroll's period: give --payroll PATH too")
    if since and until and since > until:
        raise click.UsageError(f"--since {since:%Y-%m-%d %H:%M:%S} is after --until {until:%Y-%m-%d %H:%M:%S}")
    settings = use(Settings.from_env())
    connection = redis.Redis.from_url(settings.redis_url)
    try:
        known = list_projects(connection, settings.key_prefix)
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis at {settings.redis_url.split('@')[-1]} is not answering: "
                                   f"{type(exc).__name__}") from None
    if project not in known:
        raise click.ClickException(f"crowdgate has seen no project {project} (known: {known or 'none'})")
    found = read_project(connection, settings.key_prefix, project)
    console = Console(stderr=as_json)
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2, allow_nan=False))
    else:
        print_table(found, console)
    # plain lines (never wrapped), on stderr when stdout carries the JSON
    if html_path:
        click.echo(f"html: {write_html(found, html_path)}", err=as_json)
    if csv_dir:
        click.echo("csv: " + ", ".join(str(p) for p in write_csv(found, csv_dir)), err=as_json)
    if json_file:
        click.echo(f"json: {write_json(found, json_file)}", err=as_json)
    if payroll_path:
        work = read_work(connection, settings.key_prefix, project, _utc(since), _utc(until))
        policy = RoutingState(connection, settings.key_prefix).policy(project)
        model = CostModel(policy).fit(work, QaCounts(tasks=0, accepted=0, labels=sum(w.labels for w in work)))
        written = write_payroll(model.annotators_, payroll_path, policy.cost.currency, _utc(since), _utc(until))
        click.echo(f"payroll: {written} ({model.total_:.4f} {policy.cost.currency} for "
                   f"{model.labels_} labels)", err=as_json)
