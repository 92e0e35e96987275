"""Review sampling benchmark: errors found per 100 reviewed tasks, low agreement first against random.

For each real crowd (rte, temp, dog; ``$CROWDGATE_CROWD_DATA`` for the sets that may not be shipped) and seed:
every gold item with at least 3 labels gets a fixed overlap of 3 (3 of its real labels, drawn at random), its
label is their majority (ties broken at random) and its agreement the share of the 3 labels giving it. Then
100 tasks are sampled for review by the product's rule (:func:`routing.review_sampling.select_for_review`):

- ``low_agreement_first``: ``random_share`` 0 (as Label Studio Enterprise orders its review queue);
- ``random``: ``random_share`` 1 (the baseline, in the same run: it finds errors at the crowd's error rate);
- ``crowdgate_default``: the default policy's ``random_share`` (0.2), the rest lowest agreement first.

A review finds an error when the task's majority label differs from gold. One JSON line per dataset and rule
with ``errors_per_100_reviewed`` (mean over seeds, with its standard deviation), plus, per dataset, the error
rate over all its tasks and how well the random share estimates it.

    python bench/review.py [--seeds 10] [--datasets rte,temp,dog] [--reviews 100] [--overlap 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from routing.policy import DEFAULT_POLICY
from routing.review_sampling import ReviewCandidate, error_rate_estimate, select_for_review
from scripts.crowd_sets import available, load_gold, load_labels

RULES = {"low_agreement_first": 0.0, "random": 1.0, "crowdgate_default": DEFAULT_POLICY.review.random_share}


def fixed_overlap(labels: pd.DataFrame, gold: pd.Series, overlap: int,
                  rng: np.random.Generator) -> tuple[list[ReviewCandidate], dict[str, bool]]:
    """Candidates (task, agreement of its ``overlap`` labels) and whether each task's majority is wrong."""
    candidates: list[ReviewCandidate] = []
    wrong: dict[str, bool] = {}
    for task, group in labels.groupby("task", sort=True):
        if task not in gold.index or len(group) < overlap:
            continue
        drawn = group["label"].to_numpy()[rng.permutation(len(group))[:overlap]]
        values, counts = np.unique(drawn, return_counts=True)
        leaders = values[counts == counts.max()]
        label = leaders[rng.integers(len(leaders))]
        candidates.append(ReviewCandidate(str(task), float(counts.max() / overlap)))
        wrong[str(task)] = str(label) != str(gold[task])
    return candidates, wrong


def run(name: str, seeds: int, reviews: int, overlap: int) -> list[dict]:
    labels = load_labels(name)
    gold = load_gold(name)
    found: dict[str, list[float]] = {rule: [] for rule in RULES}
    base: list[float] = []
    estimates: list[float] = []
    n_items = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        candidates, wrong = fixed_overlap(labels, gold, overlap, rng)
        n_items = len(candidates)
        base.append(100.0 * sum(wrong.values()) / len(wrong))
        for rule, share in RULES.items():
            picks = select_for_review(candidates, reviews, random_share=share,
                                      rng=np.random.default_rng(1000 + seed))
            found[rule].append(100.0 * sum(wrong[p.item] for p in picks) / len(picks))
            if rule == "crowdgate_default":
                est = error_rate_estimate(wrong[p.item] for p in picks if p.rule == "random")
                if est["error_rate"] is not None:
                    estimates.append(100.0 * float(est["error_rate"]))
    lines = []
    for rule, values in found.items():
        lines.append({"dataset": name, "rule": rule, "overlap": overlap, "reviewed": reviews, "seeds": seeds,
                      "errors_per_100_reviewed": round(float(np.mean(values)), 2),
                      "sd": round(float(np.std(values)), 2), "tasks": n_items,
                      "errors_per_100_tasks_overall": round(float(np.mean(base)), 2)})
    lines.append({"dataset": name, "rule": "crowdgate_default", "estimate": "error rate from its random share",
                  "random_reviews": round(reviews * RULES["crowdgate_default"]),
                  "estimated_errors_per_100": round(float(np.mean(estimates)), 2) if estimates else None,
                  "estimate_sd": round(float(np.std(estimates)), 2) if estimates else None,
                  "true_errors_per_100": round(float(np.mean(base)), 2)})
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--datasets", default="rte,temp,dog")
    parser.add_argument("--reviews", type=int, default=100)
    parser.add_argument("--overlap", type=int, default=3)
    args = parser.parse_args(argv)
    for name in args.datasets.split(","):
        if not available(name):
            print(json.dumps({"dataset": name, "skipped": "crowd set not found (set CROWDGATE_CROWD_DATA)"}))
            continue
        for line in run(name, args.seeds, args.reviews, args.overlap):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
