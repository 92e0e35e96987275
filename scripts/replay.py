"""Replay a crowd label set through crowdgate's scoring path, without Label Studio.

Each ``item,worker,label`` row becomes the ANNOTATION_CREATED event Label Studio would send, and goes through
the same job function webhook events take (``qa_hooks.jobs.process_event``: record, then rescore the task)
against a Redis. A fraction of the items can be revealed as gold first (``meta["gold"]``, as an importer would
set it). Prints the per-worker reliabilities and a summary line of JSON.

    crowdgate-replay rte --gold-fraction 0.1 [--seed 0] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
import redis
from scipy.stats import spearmanr

from qa_hooks.events import Event, Submission, TaskInfo
from qa_hooks.jobs import process_event
from qa_hooks.ledger import Ledger, Reliability
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


def replay(
    dataset: str,
    connection: redis.Redis,
    *,
    gold_fraction: float = 0.0,
    seed: int = 0,
    prefix: str = "replay",
    limit: int | None = None,
) -> ReplayResult:
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
    for i, row in enumerate(labels.itertuples(index=False)):
        stamp = replay_stamp(i)
        sub = Submission(
            project=PROJECT, task=task_ids[row.task], annotation_id=i + 1, unique_id=f"r{i}",
            annotator=worker_ids[row.worker],
            result=[{"from_name": CONTROL, "to_name": "text", "type": "choices", "value": {"choices": [row.label]}}],
            updated_at=stamp, created_at=stamp,
        )
        process_event(Event("ANNOTATION_CREATED", PROJECT, submissions=[sub]).to_dict(), prefix, connection)
    seconds = time.perf_counter() - started

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crowdgate-replay", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="rte, temp, wsd (shipped) or a set under $CROWDGATE_CROWD_DATA")
    parser.add_argument("--gold-fraction", type=float, default=0.0, help="share of items revealed as gold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="replay only this many labels")
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server, stopped at the end")
    parser.add_argument("--top", type=int, default=10, help="workers to list at each end")
    args = parser.parse_args(argv)

    service = None if args.redis_url else start_redis(Path(tempfile.mkdtemp(prefix="crowdgate-replay-")))
    try:
        connection = redis.Redis.from_url(args.redis_url or service.url)
        result = replay(args.dataset, connection, gold_fraction=args.gold_fraction, seed=args.seed,
                        limit=args.limit)
    finally:
        if service:
            service.stop()
    ranked = sorted(result.reliabilities.items(), key=lambda kv: kv[1].mean, reverse=True)
    print(f"{'worker':24s} {'labels':>6s} {'reliability':>11s} {'90% interval':>15s} {'gold n':>6s} "
          f"{'true acc':>8s}")
    shown = ranked if len(ranked) <= 2 * args.top else ranked[: args.top] + ranked[-args.top:]
    for worker, rel in shown:
        true = result.true_accuracy.get(worker, float("nan"))
        print(f"{worker:24s} {result.labels_per_worker[worker]:6d} {rel.mean:11.3f} "
              f"[{rel.low:.3f}, {rel.high:.3f}] {rel.gold_n:6d} {true:8.3f}")
    print(json.dumps({
        "dataset": result.dataset, "submissions": result.submissions, "gold_fraction": args.gold_fraction,
        "seconds": round(result.seconds, 2), "submissions_per_s": round(result.submissions_per_s, 1),
        "reliability_spearman": round(result.spearman(), 4), "consensus_accuracy": result.consensus_accuracy,
        "workers": len(result.reliabilities),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
