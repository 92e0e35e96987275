"""Replay a crowd label set through crowdgate's scoring path, without Label Studio.

Each ``item,worker,label`` row becomes the ANNOTATION_CREATED event Label Studio would send, and goes through
the same job function webhook events take (``qa_hooks.jobs.process_event``: record, then rescore the task)
against a Redis. A fraction of the items can be revealed as gold first (``meta["gold"]``, as an importer would
set it). Prints the per-worker reliabilities and a summary line of JSON.

    crowdgate replay rte --gold-fraction 0.1 [--seed 0] [--redis-url URL]

``crowdgate-replay`` (:func:`main`) is its old name, kept for one release.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import quoteattr

import click
import numpy as np
import pandas as pd
import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from scipy.stats import spearmanr
from tqdm import tqdm

from core.console_scripts import run_alias
from core.keys import Keys
from qa_hooks.events import Event, Submission, TaskInfo
from qa_hooks.fit import clear_fit_cache
from qa_hooks.jobs import process_event
from qa_hooks.ledger import Ledger, Reliability
from qa_hooks.refit import refit_job_id, refit_project
from scripts.crowd_sets import load_gold, load_labels
from scripts.services import start_redis

PROJECT = 1
CONTROL = "label"
REPLAY_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def label_config_for(classes: list[str]) -> str:
    """A single-choice config over the set's classes (what a project admin would set up)."""
    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
    return (f'<View><Text name="text" value="$text"/>'
            f'<Choices name="{CONTROL}" toName="text" choice="single">{choices}</Choices></View>')


@dataclass
class ReplayResult:
    dataset: str
    submissions: int
    seconds: float
    reliabilities: dict[str, Reliability]  # worker -> record
    true_accuracy: pd.Series  # worker -> accuracy against gold over all their labels
    labels_per_worker: pd.Series
    consensus_accuracy: float | None

    @property
    def submissions_per_s(self) -> float:
        return self.submissions / self.seconds

    def spearman(self, min_labels: int = 20) -> float:
        workers = [w for w, n in self.labels_per_worker.items() if n >= min_labels and w in self.reliabilities]
        ours = [self.reliabilities[w].mean for w in workers]
        truth = [self.true_accuracy[w] for w in workers]
        return float(spearmanr(ours, truth).statistic)


def replay_stamp(i: int) -> str:
    """The ``i``-th replayed label's timestamp: one millisecond apart, fixed width, so string order is time
    order (the store compares ``updated_at`` as strings), as Label Studio's are."""
    return (REPLAY_EPOCH + timedelta(milliseconds=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_queued_refit(connection: redis.Redis, prefix: str, project: int) -> bool:
    """Run the refit job the event path queued for ``project``, if any, here and now, and take it off the queue."""
    queued = connection.get(Keys(prefix).refit_queued(project))
    if queued is None:
        return False
    refit_project(project, prefix, connection)
    with contextlib.suppress(NoSuchJobError):  # gone already: nothing to take off
        Job.fetch(refit_job_id(prefix, project, queued.decode()), connection=connection).delete()
    return True


def replay(
    dataset: str,
    connection: redis.Redis,
    *,
    gold_fraction: float = 0.0,
    seed: int = 0,
    prefix: str = "replay",
    limit: int | None = None,
    refits: bool = True,
    progress: bool = False,
) -> ReplayResult:
    """Replay a crowd set; with ``refits``, each Dawid–Skene refit the event path queues runs at once, in this
    process (what a worker does beside the events), so the figures and the time include them. With
    ``progress``, a progress bar of the labels on stderr."""
    labels = load_labels(dataset)
    gold = load_gold(dataset)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    labels = labels.iloc[order[:limit] if limit else order].reset_index(drop=True)
    classes = sorted(set(labels["label"]) | set(gold.dropna()))
    config = label_config_for(classes)
    task_ids = {task: i + 1 for i, task in enumerate(sorted(labels["task"].unique()))}
    worker_ids = {worker: i + 1 for i, worker in enumerate(sorted(labels["worker"].unique()))}
    revealed = set(rng.choice(sorted(task_ids), size=round(gold_fraction * len(task_ids)), replace=False)) \
        if gold_fraction > 0 else set()

    project_info = {"title": f"replay {dataset}", "label_config": config,
                    "control_weights": {CONTROL: {"overall": 1.0, "type": "Choices"}}}
    tasks = [TaskInfo(tid, {"text": task}, {"gold": gold[task]} if task in revealed else {})
             for task, tid in task_ids.items()]
    for start in range(0, len(tasks), 500):
        event = Event("TASKS_CREATED", PROJECT, project_info, tasks=tasks[start:start + 500])
        process_event(event.to_dict(), prefix, connection)

    started = time.perf_counter()
    rows = tqdm(labels.itertuples(index=False), total=len(labels), desc=f"replaying {dataset}", unit="label",
                file=sys.stderr, disable=not progress)
    for i, row in enumerate(rows):
        stamp = replay_stamp(i)
        sub = Submission(
            project=PROJECT, task=task_ids[row.task], annotation_id=i + 1, unique_id=f"r{i}",
            annotator=worker_ids[row.worker],
            result=[{"from_name": CONTROL, "to_name": "text", "type": "choices", "value": {"choices": [row.label]}}],
            updated_at=stamp, created_at=stamp,
        )
        process_event(Event("ANNOTATION_CREATED", PROJECT, submissions=[sub]).to_dict(), prefix, connection)
        if refits:
            run_queued_refit(connection, prefix, PROJECT)
    seconds = time.perf_counter() - started

    clear_fit_cache()  # read the last refit, as any process does within qa_hooks.fit.CACHE_S
    ledger = Ledger(connection, prefix)
    by_id = ledger.reliabilities(PROJECT, sorted(worker_ids.values()))
    reliabilities = {worker: by_id[wid] for worker, wid in worker_ids.items()}
    with_gold = labels[labels["task"].isin(gold.index)]
    correct = with_gold["label"].to_numpy() == gold.loc[with_gold["task"]].to_numpy()
    true_accuracy = pd.Series(correct, index=with_gold["worker"].to_numpy()).groupby(level=0).mean()
    consensus = {task: ledger.task_score(PROJECT, tid).get("consensus") for task, tid in task_ids.items()}
    judged = [t for t in consensus if t in gold.index and consensus[t] is not None]
    consensus_accuracy = float(np.mean([consensus[t] == gold[t] for t in judged])) if judged else None
    return ReplayResult(dataset, len(labels), seconds, reliabilities, true_accuracy,
                        labels["worker"].value_counts(), consensus_accuracy)


@click.command("replay", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("dataset")
@click.option("--gold-fraction", type=float, default=0.0, show_default=True,
              help="Share of the items revealed as gold before the labels come.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the label order and the gold draw.")
@click.option("--limit", type=int, default=None, help="Replay only this many labels (default: all).")
@click.option("--redis-url", default=None, metavar="URL",
              help="Redis to use (default: a private redis-server, stopped at the end).")
@click.option("--top", type=int, default=10, show_default=True, help="Workers to list at each end of the ranking.")
def replay_command(dataset: str, gold_fraction: float, seed: int, limit: int | None, redis_url: str | None,
                   top: int) -> None:
    """Replay the crowd label set DATASET through crowdgate's scoring, without Label Studio.

    DATASET: rte, temp or wsd (shipped in data/crowd/) or a set under $CROWDGATE_CROWD_DATA. Each label goes
    through the job webhook events take; prints each worker's reliability beside their true accuracy (the
    best and worst --top), then one line of JSON: throughput, the rank correlation with the true accuracy and
    the consensus accuracy. A progress bar runs on stderr.
    """
    service = None if redis_url else start_redis(Path(tempfile.mkdtemp(prefix="crowdgate-replay-")))
    try:
        connection = redis.Redis.from_url(redis_url or service.url)
        result = replay(dataset, connection, gold_fraction=gold_fraction, seed=seed, limit=limit, progress=True)
    except FileNotFoundError as exc:  # an unknown set: the message names where it looked and the setting
        raise click.ClickException(str(exc)) from exc
    finally:
        if service:
            service.stop()
    ranked = sorted(result.reliabilities.items(), key=lambda kv: kv[1].mean, reverse=True)
    click.echo(f"{'worker':24s} {'labels':>6s} {'reliability':>11s} {'90% interval':>15s} {'gold n':>6s} "
               f"{'true acc':>8s}")
    shown = ranked if len(ranked) <= 2 * top else ranked[:top] + ranked[-top:]
    for worker, rel in shown:
        true = result.true_accuracy.get(worker, float("nan"))
        click.echo(f"{worker:24s} {result.labels_per_worker[worker]:6d} {rel.mean:11.3f} "
                   f"[{rel.low:.3f}, {rel.high:.3f}] {rel.gold_n:6d} {true:8.3f}")
    click.echo(json.dumps({
        "dataset": result.dataset, "submissions": result.submissions, "gold_fraction": gold_fraction,
        "seconds": round(result.seconds, 2), "submissions_per_s": round(result.submissions_per_s, 1),
        "reliability_spearman": round(result.spearman(), 4), "consensus_accuracy": result.consensus_accuracy,
        "workers": len(result.reliabilities),
    }))


def main(argv: list[str] | None = None) -> int:
    """``crowdgate-replay``: an alias of ``crowdgate replay`` kept for one release; returns the exit code."""
    return run_alias(replay_command, argv, alias="crowdgate-replay", name="replay")


if __name__ == "__main__":
    sys.exit(main())
