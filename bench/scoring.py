"""Replay real crowds through crowdgate's scoring path and measure speed and how well reliability ranks workers.

For each dataset (rte, temp, dog, product; sets that may not be shipped come from $CROWDGATE_CROWD_DATA), the
labels are replayed in random order through ``qa_hooks.jobs.process_event`` (record + rescore) against a private
redis-server, in this one process. Printed per dataset (JSON lines):

- ``submissions_per_s`` (target >= 1,000 per worker process) beside ``record_only_per_s``, the same events
  through the recording step alone (no scoring), and their ratio;
- ``reliability_spearman``: Spearman correlation between each worker's final reliability and their true accuracy
  against gold, workers with >= 20 labels (target >= 0.8 on rte, temp and dog), beside two batch references
  computed on all labels at once: agreement with the majority vote and Dawid–Skene's estimated accuracy;
- ``consensus_accuracy`` of the live consensus against gold, beside batch majority vote and Dawid–Skene.

    python bench/scoring.py [--datasets rte,temp,dog,product] [--gold-fraction 0.0] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import redis
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qa_hooks.events import Event, Submission
from qa_hooks.store import SubmissionStore
from qa_hooks.truth import DawidSkene, majority_vote
from scripts.crowd_sets import available, external_dir, load_gold, load_labels
from scripts.replay import replay, replay_stamp
from scripts.services import start_redis


def record_only_rate(dataset: str, connection: redis.Redis, limit: int = 3000) -> float:
    """The same ANNOTATION_CREATED events through the recording step alone."""
    labels = load_labels(dataset).head(limit)
    store = SubmissionStore(connection, "baseline")
    started = time.perf_counter()
    for i, row in enumerate(labels.itertuples(index=False)):
        stamp = replay_stamp(i)
        sub = Submission(project=1, task=hash(row.task) % 100_000, annotation_id=i + 1, unique_id=f"b{i}",
                         annotator=hash(row.worker) % 100_000,
                         result=[{"from_name": "label", "to_name": "text", "type": "choices",
                                  "value": {"choices": [row.label]}}],
                         updated_at=stamp, created_at=stamp)
        store.apply(Event.from_dict(Event("ANNOTATION_CREATED", 1, submissions=[sub]).to_dict()))
    return len(labels) / (time.perf_counter() - started)


def batch_references(dataset: str, min_labels: int) -> dict[str, float]:
    labels = load_labels(dataset)
    gold = load_gold(dataset)
    with_gold = labels[labels["task"].isin(gold.index)]
    truth = (with_gold["label"].to_numpy() == gold.loc[with_gold["task"]].to_numpy())
    true_accuracy = with_gold.assign(ok=truth).groupby("worker")["ok"].mean()
    counts = labels["worker"].value_counts()
    workers = [w for w in counts.index if counts[w] >= min_labels and w in true_accuracy.index]
    mv = majority_vote(labels)
    agree = (labels["label"].to_numpy() == mv.loc[labels["task"], "label"].to_numpy())
    mv_agreement = labels.assign(ok=agree).groupby("worker")["ok"].mean()
    ds = DawidSkene().fit(labels)
    ds_labels = ds.predict()
    judged = gold.index.intersection(mv.index)
    return {
        "mv_agreement_spearman": round(float(spearmanr(mv_agreement[workers], true_accuracy[workers]).statistic), 4),
        "dawid_skene_spearman": round(
            float(spearmanr(ds.worker_accuracy_[workers], true_accuracy[workers]).statistic), 4),
        "mv_accuracy": round(float((mv.loc[judged, "label"] == gold[judged]).mean()), 4),
        "dawid_skene_accuracy": round(float((ds_labels.loc[judged, "label"] == gold[judged]).mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="rte,temp,dog,product")
    parser.add_argument("--gold-fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-labels", type=int, default=20)
    args = parser.parse_args()

    service = start_redis(Path(tempfile.mkdtemp(prefix="crowdgate-bench-")))
    try:
        connection = redis.Redis.from_url(service.url)
        for dataset in args.datasets.split(","):
            if not available(dataset):
                print(json.dumps({"dataset": dataset, "skipped": f"not shipped and not found in {external_dir()}"}))
                continue
            connection.flushdb()  # our private server
            baseline = record_only_rate(dataset, connection)
            connection.flushdb()
            result = replay(dataset, connection, gold_fraction=args.gold_fraction, seed=args.seed, prefix="bench")
            line = {
                "dataset": dataset,
                "gold_fraction": args.gold_fraction,
                "submissions": result.submissions,
                "workers": len(result.reliabilities),
                "seconds": round(result.seconds, 2),
                "submissions_per_s": round(result.submissions_per_s, 1),
                "record_only_per_s": round(baseline, 1),
                "scoring_cost_ratio": round(baseline / result.submissions_per_s, 2),
                "reliability_spearman": round(result.spearman(args.min_labels), 4),
                "consensus_accuracy": round(result.consensus_accuracy, 4),
                **batch_references(dataset, args.min_labels),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
            print(json.dumps(line), flush=True)
    finally:
        service.stop()


if __name__ == "__main__":
    main()
