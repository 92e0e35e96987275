"""Dynamic-overlap benchmark: how many labels per item does each stopping policy need, at what accuracy?

Replays the real crowds (rte, temp, dog) in two scenarios (``--scenarios cold,warm``):

- ``cold``: every item is new; the project starts with no labels;
- ``warm``: the project already has a labelled history (half the items, drawn per seed, with all their labels,
  recorded and refitted first); the other half arrives in random order, and every figure is over that half.

Each item's real labels arrive in a random order, and items are worked on interleaved: ``--window`` items are
open at once, each step gives the next label to a random open item, and a finished item makes room for the
next, so crowdgate's worker models evolve as they would in production. No gold is revealed (``--gold-share``
reveals it for a share of items after they finish; their accuracy is still scored at stop time, before the
reveal).

crowdgate's worker models are the product's: :class:`routing.stopping.OnlineWorkerEstimator` runs the worker's
refit (``qa_hooks.fit.SemiSupervisedDawidSkene``) on the worker's schedule (every ``CROWDGATE_REFIT_EVERY`` labels,
later every ``CROWDGATE_REFIT_FRACTION``), with the services' incremental posterior between refits.

Policies: ``fixed-3``, ``fixed-5``, ``all`` (majority vote of the first 3, 5, all labels); ``fixed-5-ds`` (the
first 5 labels aggregated with crowdgate's Dawid–Skene, the comparison a careful user makes); ``margin-2`` (start
with 2, stop when the leading answer is 2 votes ahead, at most 10); ``crowdgate`` (routing.stopping, the
default policy's rule: online Dawid–Skene worker models; stop when the leading answer's posterior reaches the
threshold matched to the crowd and at least 2 labels give it; at least 2 labels, at most ``--max-labels``
(default all there are: past the policy's ``overlap.max`` production sends a task to a higher tier, which
the replay has not got); accuracy of the answer at stop time). The matched threshold is the lowest at
which the rule, replayed on a crowd simulated from the current worker models, is as accurate as a fixed
overlap of 5 plus ``--lead`` (``matched_threshold``), refreshed every 50 labels; the fixed ``--threshold``
applies until the models rest on 200 labels.
Majority-vote ties break at random. One JSON line per scenario, dataset and policy, means over seeds.

Besides: per dataset, the Spearman correlation of crowdgate's reliability (the refit's, over all the set's labels,
no gold: what the ledger serves after a refit) with each worker's true accuracy (workers with 20 labels or more),
beside the plain agreement-with-majority rate; and the time of one refit of 25,000 labels (cold and warm-started)
beside the batch Dawid–Skene of ``qa_hooks.truth`` on the same labels, in the same run.

``crowdgate-fixed``: the same rule with the fixed ``--threshold`` throughout. ``crowdgate-tuned`` (with
``--tune``): per dataset, the lowest fixed threshold on a grid whose accuracy reaches fixed-5's on these same
seeds, i.e. a threshold tuned against that dataset's gold (not a single setting).

    python bench/overlap.py [--seeds 20] [--datasets rte,temp,dog] [--scenarios cold,warm] [--lead L]
                            [--threshold T] [--tune]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
from scipy.stats import spearmanr

from qa_hooks.fit import ProjectFit, SemiSupervisedDawidSkene
from qa_hooks.scoring import PRIOR_ALPHA, PRIOR_BETA
from qa_hooks.truth import DawidSkene
from routing.policy import DEFAULT_POLICY
from routing.stopping import OnlineWorkerEstimator, decide_stop, matched_threshold
from scripts.crowd_sets import available, load_gold, load_labels

# The default policy's settings, one for every dataset (label_configs/default.policy.yaml says how the lead
# was chosen).
STOP = DEFAULT_POLICY.overlap.stop
THRESHOLD = STOP.threshold
LEAD = STOP.match_lead
MATCH_OVERLAP = STOP.match_overlap or 5
MATCH_MIN_LABELS = STOP.match_min_labels
MATCH_REFRESH = 50  # labels between two computations of the matched threshold
MIN_LABELS = DEFAULT_POLICY.overlap.min
# The policy's overlap.max is 5, after which production sends the task to a higher tier. The replay has no
# higher tier; letting the same crowd go on (up to all 10 labels) stands in for it. Capping at 5 instead cut
# dog's accuracy below fixed-5's (0.788 against 0.792, 20 seeds).
MAX_LABELS = 10
MIN_AGREEING = STOP.min_agreeing
WINDOW = 50
PRIOR_ACCURACY = 0.7
TUNE_GRID = (0.5, 0.6, 0.7, 0.75, 0.8, 0.83, 0.86, 0.88, 0.9, 0.92, 0.94, 0.96)


@dataclass
class Crowd:
    """One dataset as arrays: per item, its workers and class indices; gold class per item."""

    name: str
    items: list[str]
    classes: list[str]
    workers: list[np.ndarray]
    labels: list[np.ndarray]
    gold: np.ndarray


def load_crowd(name: str) -> Crowd:
    frame = load_labels(name)
    gold = load_gold(name)
    classes = sorted(set(frame["label"]) | set(gold))
    index = {c: i for i, c in enumerate(classes)}
    items = sorted(frame["task"].unique())
    grouped = frame.groupby("task")
    return Crowd(
        name,
        items,
        classes,
        [grouped.get_group(t)["worker"].to_numpy() for t in items],
        [grouped.get_group(t)["label"].map(index).to_numpy() for t in items],
        np.array([index[gold[t]] for t in items]),
    )


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


def replay_crowdgate(
    crowd: Crowd,
    workers: list[np.ndarray],
    labels: list[np.ndarray],
    rng: np.random.Generator,
    threshold: float,
    window: int,
    gold_share: float,
    lead: float | None = None,
    max_labels: int = 10,
    history: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, OnlineWorkerEstimator]:
    """Labels used per item and the answer at stop time, for one random arrival order; and the estimator.

    ``lead`` None: the fixed ``threshold`` throughout; else the crowd-matched threshold with that lead.
    An item stops, unconfident, at ``max_labels`` labels or when its labels run out. ``history`` (warm
    scenario): items whose labels are all recorded, and refitted, before the others arrive; they are not
    replayed (their ``used`` stays 0 and their ``answer`` -1).
    """
    est = OnlineWorkerEstimator(crowd.classes, prior_accuracy=PRIOR_ACCURACY)
    n_items = len(crowd.items)
    used = np.zeros(n_items, dtype=int)
    answer = np.full(n_items, -1)
    if history is not None and len(history):
        for i in history:
            for worker, label in zip(workers[i], labels[i], strict=True):
                est.observe(crowd.items[i], str(worker), crowd.classes[label])
        est.refit()
        replayed = np.setdiff1d(np.arange(n_items), history)
        queue = [int(replayed[j]) for j in rng.permutation(len(replayed))]
    else:
        queue = list(rng.permutation(n_items))
    gold_items = set(rng.choice(n_items, int(gold_share * n_items), replace=False).tolist())
    open_items: list[int] = []
    current = {"labels": -MATCH_REFRESH, "threshold": threshold}

    def stop_threshold() -> float:
        if lead is None or est.n_labels < MATCH_MIN_LABELS:
            return threshold
        if est.n_labels - current["labels"] >= MATCH_REFRESH:
            matched = matched_threshold(
                list(est.models().values()),
                list(est.class_prior.values()),
                overlap=MATCH_OVERLAP,
                lead=lead,
                min_labels=MIN_LABELS,
                min_agreeing=MIN_AGREEING,
                max_labels=max_labels,
            )
            current["threshold"], current["labels"] = matched.threshold, est.n_labels
        return current["threshold"]

    def stop(i: int) -> bool:
        votes = np.bincount(labels[i][: used[i]], minlength=len(crowd.classes))
        decision = decide_stop(
            est.task_posterior(crowd.items[i]),
            {c: int(v) for c, v in zip(crowd.classes, votes, strict=True)},
            threshold=stop_threshold(),
            min_labels=MIN_LABELS,
            min_agreeing=MIN_AGREEING,
            max_labels=min(len(labels[i]), max_labels),
        )
        if decision.stop:
            answer[i] = crowd.classes.index(decision.label)
            if i in gold_items:
                est.reveal_gold(crowd.items[i], crowd.classes[crowd.gold[i]])
        return decision.stop

    while queue or open_items:
        while queue and len(open_items) < window:
            open_items.append(queue.pop())
        slot = int(rng.integers(len(open_items)))
        i = open_items[slot]
        # Check before serving too: a refit since this item's last label may already have settled it.
        if used[i] < MIN_LABELS or not stop(i):
            est.observe(crowd.items[i], str(workers[i][used[i]]), crowd.classes[labels[i][used[i]]])
            used[i] += 1
            if not stop(i):
                continue
        open_items[slot] = open_items[-1]
        open_items.pop()
    return used, answer, est


def dawid_skene_answers(crowd: Crowd, workers: list[np.ndarray], labels: list[np.ndarray],
                        counts: list[int]) -> np.ndarray:
    """Each item's answer from crowdgate's Dawid–Skene fit over the first ``counts[i]`` labels of every item."""
    names = {w: j for j, w in enumerate(sorted({str(w) for ws in workers for w in ws}))}
    t = np.concatenate([np.full(n, i) for i, n in enumerate(counts)])
    w = np.concatenate([[names[str(x)] for x in ws[:n]] for ws, n in zip(workers, counts, strict=True)]).astype(int)
    y = np.concatenate([lab[:n] for lab, n in zip(labels, counts, strict=True)])
    model = SemiSupervisedDawidSkene(len(crowd.classes)).fit(t, w, y, n_tasks=len(counts), n_workers=len(names))
    return model.posteriors_.argmax(axis=1)


def run_dataset(crowd: Crowd, args: argparse.Namespace, scenario: str = "cold") -> list[dict[str, object]]:
    k = len(crowd.classes)
    n_items = len(crowd.items)
    orders = []
    policies = ("fixed-3", "fixed-5", "all", "margin-2", "fixed-5-ds")
    baseline: dict[str, list[tuple[float, float]]] = {p: [] for p in policies}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        perms = [rng.permutation(len(lab)) for lab in crowd.labels]
        workers = [w[p] for w, p in zip(crowd.workers, perms, strict=True)]
        labels = [lab[p] for lab, p in zip(crowd.labels, perms, strict=True)]
        # The warm scenario's history: half the items, drawn apart from the arrival order's random stream.
        history = np.sort(np.random.default_rng(10_000 + seed).permutation(n_items)[: n_items // 2]) \
            if scenario == "warm" else np.zeros(0, dtype=int)
        scored = np.setdiff1d(np.arange(n_items), history)
        gold = crowd.gold[scored]
        for policy, n in (("fixed-3", 3), ("fixed-5", 5), ("all", None)):
            answers = np.array([_majority(labels[i][:n], k, rng) for i in scored])
            per_item = float(np.mean([len(labels[i][:n]) for i in scored]))
            baseline[policy].append((per_item, float(np.mean(answers == gold))))
        stops = [_margin_stop(labels[i], k) for i in scored]
        answers = np.array([_majority(labels[i][:s], k, rng) for i, s in zip(scored, stops, strict=True)])
        baseline["margin-2"].append((float(np.mean(stops)), float(np.mean(answers == gold))))
        counts = [len(lab) if i in set(history.tolist()) else min(5, len(lab)) for i, lab in enumerate(labels)]
        ds = dawid_skene_answers(crowd, workers, labels, counts)[scored]
        baseline["fixed-5-ds"].append((float(np.mean([counts[i] for i in scored])), float(np.mean(ds == gold))))
        orders.append((workers, labels, rng.bit_generator.state, history, scored))

    fit_seconds: list[float] = []

    def crowdgate(threshold: float, lead: float | None = None) -> tuple[float, float]:
        runs = []
        for workers, labels, state, history, scored in orders:
            rng = np.random.default_rng()
            rng.bit_generator.state = state  # same arrival order for every threshold
            used, answer, est = replay_crowdgate(crowd, workers, labels, rng, threshold, args.window,
                                                 args.gold_share, lead, args.max_labels, history)
            fit_seconds.append(est.fit_seconds)
            runs.append((float(used[scored].mean()), float(np.mean(answer[scored] == crowd.gold[scored]))))
        arr = np.array(runs)
        return float(arr[:, 0].mean()), float(arr[:, 1].mean())

    lines: list[dict[str, object]] = []
    means = {p: np.array(r).mean(axis=0) for p, r in baseline.items()}
    for policy, (per_item, accuracy) in means.items():
        lines.append(
            {
                "scenario": scenario,
                "dataset": crowd.name,
                "policy": policy,
                "labels_per_item": round(per_item, 3),
                "accuracy": round(accuracy, 4),
            }
        )
    f5_labels, f5_accuracy = means["fixed-5"]
    ds_accuracy = means["fixed-5-ds"][1]

    def line(policy: str, settings: dict[str, object], per_item: float, accuracy: float) -> dict[str, object]:
        return {
            "scenario": scenario,
            "dataset": crowd.name,
            "policy": policy,
            "labels_per_item": round(per_item, 3),
            "accuracy": round(accuracy, 4),
            "labels_saved_vs_fixed5": round(1.0 - per_item / f5_labels, 4),
            "accuracy_ge_fixed5": bool(accuracy >= f5_accuracy),
            "accuracy_ge_fixed5_ds": bool(accuracy >= ds_accuracy),
            **settings,
        }

    matched = {"match_overlap": MATCH_OVERLAP, "lead": args.lead, "threshold_until_matched": args.threshold}
    lines.append(line("crowdgate", {**matched, "fit_seconds_per_replay": 0.0}, *crowdgate(args.threshold, args.lead)))
    lines[-1]["fit_seconds_per_replay"] = round(float(np.mean(fit_seconds)), 3)
    if not args.quick:
        lines.append(line("crowdgate-fixed", {"threshold": args.threshold}, *crowdgate(args.threshold)))
    if args.tune:
        for threshold in TUNE_GRID:
            per_item, accuracy = crowdgate(threshold)
            if accuracy >= f5_accuracy or threshold == TUNE_GRID[-1]:
                lines.append(line("crowdgate-tuned", {"threshold": threshold}, per_item, accuracy))
                break
    return lines


def reliability_line(crowd: Crowd, min_labels: int = 20) -> dict[str, object]:
    """Spearman of crowdgate's reliability (the refit over all labels, no gold; and with 10 % of the items' gold
    clamped) with true worker accuracy."""
    names = sorted({str(w) for ws in crowd.workers for w in ws})
    index = {w: j for j, w in enumerate(names)}
    t = np.concatenate([np.full(len(ws), i) for i, ws in enumerate(crowd.workers)])
    w = np.concatenate([[index[str(x)] for x in ws] for ws in crowd.workers]).astype(int)
    y = np.concatenate(crowd.labels)
    model = SemiSupervisedDawidSkene(len(crowd.classes)).fit(t, w, y, n_tasks=len(crowd.items), n_workers=len(names))
    fit = ProjectFit.from_model(model, crowd.classes, names)
    right = y == crowd.gold[t]
    given = np.bincount(w, minlength=len(names))
    true_accuracy = np.bincount(w, weights=right, minlength=len(names)) / np.maximum(given, 1)
    votes = np.zeros((len(crowd.items), len(crowd.classes)))
    np.add.at(votes, (t, y), 1.0)
    agrees = votes[t, y] >= votes[t].max(axis=1)
    agreement = np.bincount(w, weights=agrees, minlength=len(names)) / np.maximum(given, 1)
    keep = given >= min_labels

    def reliability(fit: ProjectFit) -> list[float]:
        beliefs = [fit.accuracy(name, PRIOR_ALPHA, PRIOR_BETA) for name in np.asarray(names)[keep]]
        return [alpha / (alpha + beta) for alpha, beta in beliefs]

    # With a tenth of the items' gold known (clamped in the fit), as a project with gold items has it.
    gold_items = np.random.default_rng(0).permutation(len(crowd.items))[: len(crowd.items) // 10]
    with_gold = SemiSupervisedDawidSkene(len(crowd.classes)).fit(
        t, w, y, n_tasks=len(crowd.items), n_workers=len(names), gold={int(i): int(crowd.gold[i]) for i in gold_items})
    return {
        "dataset": crowd.name,
        "metric": "reliability_spearman",
        "crowdgate": round(float(spearmanr(reliability(fit), true_accuracy[keep]).statistic), 4),
        "crowdgate_gold_10pct": round(float(spearmanr(reliability(ProjectFit.from_model(with_gold, crowd.classes,
                                                                                        names)),
                                                      true_accuracy[keep]).statistic), 4),
        "baseline_majority_agreement": round(float(spearmanr(agreement[keep], true_accuracy[keep]).statistic), 4),
        "workers": int(keep.sum()),
        "min_labels": min_labels,
    }


def refit_time_line(n_labels: int = 25_000, repeats: int = 3) -> dict[str, object]:
    """One refit of ``n_labels`` labels (5 per task, 3 classes, 200 workers), cold and warm-started, against the
    batch Dawid–Skene of ``qa_hooks.truth`` on the same labels; best of ``repeats``."""
    rng = np.random.default_rng(0)
    n_tasks, n_workers, k = n_labels // 5, 200, 3
    truth = rng.integers(k, size=n_tasks)
    t = np.repeat(np.arange(n_tasks), 5)
    w = rng.integers(n_workers, size=len(t))
    right = rng.random(len(t)) < rng.uniform(0.5, 0.95, size=n_workers)[w]
    y = np.where(right, truth[t], (truth[t] + rng.integers(1, k, size=len(t))) % k)

    def best(run) -> tuple[float, object]:
        times, result = [], None
        for _ in range(repeats):
            started = time.perf_counter()
            result = run()
            times.append(time.perf_counter() - started)
        return min(times), result

    cold_s, cold = best(lambda: SemiSupervisedDawidSkene(k).fit(t, w, y, n_tasks=n_tasks, n_workers=n_workers))
    init = (cold.log_conf_, cold.pooled_log_conf_, cold.log_prior_)
    warm_s, warm = best(lambda: SemiSupervisedDawidSkene(k).fit(t, w, y, n_tasks=n_tasks, n_workers=n_workers,
                                                                init=init))
    table = pd.DataFrame({"task": t, "worker": w, "label": y})
    batch_s, batch = best(lambda: DawidSkene().fit(table))
    return {
        "metric": "refit_seconds", "labels": len(t), "tasks": n_tasks, "workers": n_workers, "classes": k,
        "crowdgate_cold_s": round(cold_s, 4), "crowdgate_cold_rounds": cold.n_iter_,
        "crowdgate_warm_s": round(warm_s, 4), "crowdgate_warm_rounds": warm.n_iter_,
        "baseline_batch_dawid_skene_s": round(batch_s, 4), "baseline_rounds": batch.n_iter_,
        "crowdgate_accuracy": round(float(np.mean(cold.posteriors_.argmax(axis=1) == truth)), 4),
        "baseline_accuracy": round(float(np.mean(batch.labels_.to_numpy() == truth)), 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20, help="random arrival orders per dataset (default 20)")
    parser.add_argument("--datasets", default="rte,temp,dog")
    parser.add_argument("--lead", type=float, default=LEAD, help=f"matched threshold's required lead ({LEAD})")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"fixed threshold; the matched rule starts from it ({THRESHOLD})")
    parser.add_argument("--window", type=int, default=WINDOW, help=f"items open at once ({WINDOW})")
    parser.add_argument("--gold-share", type=float, default=0.0, help="share of items whose gold is revealed")
    parser.add_argument("--max-labels", type=int, default=MAX_LABELS,
                        help=f"crowdgate's labels per item at most ({MAX_LABELS}: all there are)")
    parser.add_argument("--tune", action="store_true", help="also search the per-dataset fixed threshold")
    parser.add_argument("--scenarios", default="cold,warm", help="cold, warm or both (default)")
    parser.add_argument("--quick", action="store_true", help="leave out crowdgate-fixed")
    args = parser.parse_args(argv)
    print(json.dumps(refit_time_line()), flush=True)
    for name in args.datasets.split(","):
        if not available(name):
            print(json.dumps({"dataset": name, "skipped": "crowd set not found (set CROWDGATE_CROWD_DATA)"}))
            continue
        crowd = load_crowd(name)
        print(json.dumps(reliability_line(crowd)), flush=True)
        for scenario in args.scenarios.split(","):
            start = time.perf_counter()
            for record in run_dataset(crowd, args, scenario):
                print(json.dumps(record), flush=True)
            print(f"# {scenario} {name}: {time.perf_counter() - start:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
