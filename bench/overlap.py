"""Dynamic-overlap benchmark: how many labels per item does each stopping policy need, at what accuracy?

Replays the real crowds (rte, temp, dog): each item's real labels arrive in a random order, and items are
worked on interleaved — ``--window`` items are open at once, each step gives the next label to a random open
item, and a finished item makes room for the next one — so crowdgate's online worker models evolve from a
cold start exactly as they would in production (no gold is revealed unless ``--gold-share`` says so).

Policies: ``fixed-3``, ``fixed-5``, ``all`` (majority vote of the first 3, 5, all labels), ``margin-2`` (start
with 2, stop when the leading answer is 2 votes ahead, at most 10) and ``crowdgate`` (reliability-weighted
posterior of :mod:`routing.stopping`, at least 2 labels, at most all available). Majority ties break at
random. Prints one JSON line per dataset and policy, means over seeds.

    python bench/overlap.py [--seeds 20] [--datasets rte,temp,dog]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing.stopping import OnlineWorkerEstimator
from scripts.crowd_sets import available, load_gold, load_labels

# Tuned once (on all three sets together, same values everywhere): see the module docstring of the report.
THRESHOLD = 0.99
MIN_LABELS = 2
WINDOW = 50
ESTIMATOR = {"model": "confusion", "prior_accuracy": 0.7, "base_strength": 10.0, "worker_strength": 2.0}


def _majority(labels: np.ndarray, n_classes: int, rng: np.random.Generator) -> int:
    counts = np.bincount(labels, minlength=n_classes)
    leaders = np.flatnonzero(counts == counts.max())
    return int(leaders[0] if len(leaders) == 1 else rng.choice(leaders))


def _margin_stop(labels: np.ndarray, n_classes: int, start: int = 2, margin: int = 2, cap: int = 10) -> int:
    """Number of labels the margin rule uses on one item."""
    limit = min(cap, len(labels))
    for n in range(min(start, limit), limit + 1):
        top = np.sort(np.bincount(labels[:n], minlength=n_classes))[::-1]
        if top[0] - top[1] >= margin:
            return n
    return limit


def _replay_crowdgate(
    items: list[str],
    workers: list[np.ndarray],
    labels: list[np.ndarray],
    classes: list[str],
    gold: np.ndarray,
    rng: np.random.Generator,
    args: argparse.Namespace,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels used per item, the consensus at stop time, and the consensus re-read after the whole replay."""
    est = OnlineWorkerEstimator(
        classes,
        model=args.model,
        prior_accuracy=args.prior_accuracy,
        base_strength=args.base_strength,
        worker_strength=args.worker_strength,
        **json.loads(args.est),
    )
    n_items = len(items)
    used = np.zeros(n_items, dtype=int)
    at_stop = np.full(n_items, -1)
    queue = list(rng.permutation(n_items))
    open_items: list[int] = []
    gold_items = set(rng.choice(n_items, int(args.gold_share * n_items), replace=False).tolist())

    def confident(i: int) -> bool:
        if used[i] < MIN_LABELS:
            return False
        post = est.task_posterior_array(items[i])
        lead = int(np.argmax(post))
        votes = np.bincount(labels[i][: used[i]], minlength=len(classes))
        if votes[lead] < args.min_agree:
            return False
        if args.plurality and votes[lead] < np.max(np.delete(votes, lead)) + 1:
            return False
        return bool(post[lead] >= args.threshold)

    def close(i: int) -> None:
        at_stop[i] = int(np.argmax(est.task_posterior_array(items[i])))
        if i in gold_items:
            est.reveal_gold(items[i], classes[gold[i]])

    while queue or open_items:
        while queue and len(open_items) < args.window:
            open_items.append(queue.pop())
        slot = int(rng.integers(len(open_items)))
        i = open_items[slot]
        # Re-check before serving: a refit since the last label may already have made the item confident.
        if confident(i):
            close(i)
            open_items[slot] = open_items[-1]
            open_items.pop()
            continue
        est.observe(items[i], str(workers[i][used[i]]), classes[labels[i][used[i]]])
        used[i] += 1
        if used[i] == len(labels[i]) or confident(i):
            close(i)
            open_items[slot] = open_items[-1]
            open_items.pop()
    est.refit(iterations=20)
    final = np.array([int(np.argmax(est.task_posterior_array(t))) for t in items])
    return used, at_stop, final


def run_dataset(name: str, args: argparse.Namespace) -> list[dict[str, object]]:
    frame = load_labels(name)
    gold_series = load_gold(name)
    classes = sorted(set(frame["label"]) | set(gold_series))
    cls_index = {c: i for i, c in enumerate(classes)}
    items = sorted(frame["task"].unique())
    grouped = frame.groupby("task")
    worker_lists = [grouped.get_group(t)["worker"].to_numpy() for t in items]
    label_lists = [grouped.get_group(t)["label"].map(cls_index).to_numpy() for t in items]
    gold = np.array([cls_index[gold_series[t]] for t in items])
    k = len(classes)

    results: dict[str, list[tuple[float, float]]] = {p: [] for p in ("fixed-3", "fixed-5", "all", "margin-2")}
    crowd: list[tuple[float, float, float]] = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        perms = [rng.permutation(len(lab)) for lab in label_lists]
        workers = [w[p] for w, p in zip(worker_lists, perms, strict=True)]
        labels = [lab[p] for lab, p in zip(label_lists, perms, strict=True)]
        for policy, n in (("fixed-3", 3), ("fixed-5", 5), ("all", None)):
            answers = np.array([_majority(lab[:n], k, rng) for lab in labels])
            used = np.mean([len(lab[:n]) for lab in labels])
            results[policy].append((float(used), float(np.mean(answers == gold))))
        stops = [_margin_stop(lab, k) for lab in labels]
        answers = np.array([_majority(lab[:s], k, rng) for lab, s in zip(labels, stops, strict=True)])
        results["margin-2"].append((float(np.mean(stops)), float(np.mean(answers == gold))))
        if not args.skip_crowdgate:
            used_cg, at_stop, final = _replay_crowdgate(items, workers, labels, classes, gold, rng, args)
            crowd.append((float(used_cg.mean()), float(np.mean(at_stop == gold)), float(np.mean(final == gold))))

    lines: list[dict[str, object]] = []
    for policy, runs in results.items():
        arr = np.array(runs)
        lines.append(
            {
                "dataset": name,
                "policy": policy,
                "labels_per_item": round(float(arr[:, 0].mean()), 3),
                "accuracy": round(float(arr[:, 1].mean()), 4),
            }
        )
    if crowd:
        arr = np.array(crowd)
        fixed5 = np.array(results["fixed-5"])
        per_item, accuracy = float(arr[:, 0].mean()), float(arr[:, 1].mean())
        lines.append(
            {
                "dataset": name,
                "policy": "crowdgate",
                "labels_per_item": round(per_item, 3),
                "accuracy": round(accuracy, 4),
                "accuracy_after_replay": round(float(arr[:, 2].mean()), 4),
                "labels_saved_vs_fixed5": round(1.0 - per_item / float(fixed5[:, 0].mean()), 4),
                "accuracy_ge_fixed5": bool(accuracy >= float(fixed5[:, 1].mean())),
                "threshold": args.threshold,
                "window": args.window,
                "gold_share": args.gold_share,
            }
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--datasets", default="rte,temp,dog")
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    parser.add_argument("--window", type=int, default=WINDOW)
    parser.add_argument("--gold-share", type=float, default=0.0)
    parser.add_argument("--model", default=ESTIMATOR["model"])
    parser.add_argument("--prior-accuracy", type=float, default=ESTIMATOR["prior_accuracy"])
    parser.add_argument("--base-strength", type=float, default=ESTIMATOR["base_strength"])
    parser.add_argument("--worker-strength", type=float, default=ESTIMATOR["worker_strength"])
    parser.add_argument("--est", default="{}")
    parser.add_argument("--min-agree", type=int, default=1)
    parser.add_argument("--plurality", type=int, default=0)
    parser.add_argument("--skip-crowdgate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in args.datasets.split(","):
        if not available(name):
            print(json.dumps({"dataset": name, "skipped": "crowd set not found (set CROWDGATE_CROWD_DATA)"}))
            continue
        start = time.perf_counter()
        for line in run_dataset(name, args):
            print(json.dumps(line), flush=True)
        print(f"# {name}: {time.perf_counter() - start:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
