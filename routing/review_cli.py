"""``crowdgate review``: the review queue of a project and each annotator's acceptance score.

    crowdgate review status PROJECT [--json]       # review project, tasks looked at, items by rule and verdict,
                                                   # the error rate estimated from the random share
    crowdgate review acceptance PROJECT [--json]   # per annotator: accepted / reviewed, with a 90 % interval
    crowdgate review feed PROJECT                  # look at the finished tasks now (an RQ job on the routing queue)

What reviewers do and how the queue is fed: :mod:`routing.review`.
"""

from __future__ import annotations

import json

import click
import redis

from core.settings import Settings, use
from routing import review as review_queue
from routing.runtime import enqueue_action, job_id
from routing.state import RoutingState

__all__ = ["review"]


def _connection() -> tuple[Settings, redis.Redis]:
    settings = use(Settings.from_env())
    connection = redis.Redis.from_url(settings.redis_url)
    connection.ping()  # fail here, with the URL in crowdgate's message, rather than halfway through
    return settings, connection


@click.group("review")
def review() -> None:
    """Review on Community: the review queue and per-annotator acceptance."""


@review.command("status")
@click.argument("project", type=int)
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
def status_command(project: int, as_json: bool) -> None:
    """The review queue of PROJECT."""
    settings, connection = _connection()
    status = review_queue.review_status(connection, project, settings.key_prefix)
    policy = RoutingState(connection, settings.key_prefix).policy(project).review
    status["policy"] = policy.__dict__.copy()
    if as_json:
        click.echo(json.dumps(status))
        return
    if policy.tier is None:
        click.echo(f"project {project}: review is off (review.tier is null in its policy)")
    where = status["review_project"] if status["review_project"] is not None else "not created yet"
    click.echo(f"project {project}: review project {where}; tier {policy.tier}, rate {policy.rate}, "
               f"random share {policy.random_share}, LLM audit rate {policy.llm_audit_rate}")
    click.echo(f"  finished tasks looked at: {status['considered']}; sent to review: {status['items']} "
               f"({status['budget_picked']} by the rate)")
    for name, counts in (("by rule", status["by_rule"]), ("by verdict", status["by_verdict"])):
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"
        click.echo(f"  {name}: {shown}")
    est = status["error_rate_estimate"]
    if est:
        click.echo(f"  error rate from the random share: {est['error_rate']:.1%} "
                   f"(90% interval {est['low']:.1%}–{est['high']:.1%}, {est['reviewed']} reviewed)")
    else:
        click.echo("  error rate from the random share: no random review answered yet")


@review.command("acceptance")
@click.argument("project", type=int)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per annotator")
def acceptance_command(project: int, as_json: bool) -> None:
    """Per-annotator acceptance in PROJECT (accepted / reviewed), lowest first."""
    settings, connection = _connection()
    scores = review_queue.acceptance(connection, project, settings.key_prefix)
    emails = RoutingState(connection, settings.key_prefix).emails(list(scores))
    rows = sorted(scores.values(), key=lambda s: (s.score if s.score is not None else 2.0, s.annotator))
    if as_json:
        for s in rows:
            click.echo(json.dumps({**s.to_dict(), "email": emails.get(s.annotator)}))
        return
    if not rows:
        click.echo(f"project {project}: no reviewed annotations yet")
        return
    for s in rows:
        who = emails.get(s.annotator) or str(s.annotator)
        if s.score is None:
            click.echo(f"{who:<32} not reviewed")
            continue
        click.echo(f"{who:<32} {s.accepted}/{s.reviewed} accepted  {s.score:.0%}  "
                   f"(90% interval {s.low:.0%}–{s.high:.0%})")


@review.command("feed")
@click.argument("project", type=int)
def feed_command(project: int) -> None:
    """Look at all of PROJECT's finished tasks now (those finished before review was on too) and send the sampled
    ones to review (queued for the worker)."""
    settings, connection = _connection()
    job = enqueue_action(connection, review_queue.feed_review,
                         job_id(settings.key_prefix, "reviewfeed", project, "cli"), project=project,
                         prefix=settings.key_prefix, scan_all=True)
    click.echo(f"project {project}: review feed queued ({job})" if job else
               f"project {project}: a review feed from the command line is already queued")

