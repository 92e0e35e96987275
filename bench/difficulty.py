"""Difficulty benchmark: does crowdgate's DifficultyModel rank RTE items by how much the crowd struggled?

5-fold cross-validation (repeated over ``--repeats`` shuffles; the same folds for every model), Spearman
correlation between out-of-fold predicted difficulty and the observed one, for two targets:

- ``disagreement``: share of the item's 10 workers who disagree with the item's majority label;
- ``missed_gold``: share of the item's workers whose label differs from gold.

Baseline in the same run, same folds: a ridge regression on text-length features only; also the in-sample
Spearman of the best single length feature (no fitting, so an optimistic figure for length). A third line
shows the signal hook: the disagreement of the first 3 labels of each item (file order) as a signal, with the
target computed on the other 7 labels so the signal does not overlap the target; the same model without the
signal and the signal alone are reported beside it.

Observed disagreement is itself noisy with 10 workers: the first 3 labels' disagreement and the other 7's
correlate at Spearman ≈ 0.11 on RTE, so no text model can reach high figures here.

Prints one JSON line per target. Embedding 1,600 texts takes most of the time.

    python bench/difficulty.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_backend.difficulty import ALPHAS, DifficultyModel, disagreement, missed_gold
from ml_backend.features import length_features, task_texts
from scripts.crowd_sets import load_items, load_labels

CONFIG = (Path(__file__).resolve().parents[1] / "label_configs" / "rte" / "config.xml").read_text()
EARLY = 3


def cross_validated(
    tasks: list[dict], y: np.ndarray, repeats: int, signals: list[dict] | None = None
) -> dict[str, list[float]]:
    lengths = np.vstack([length_features(task_texts(t, ("text", "hypothesis"))) for t in tasks])
    scores: dict[str, list[float]] = {"crowdgate": [], "baseline": []}
    for seed in range(repeats):
        ours, base = np.zeros(len(y)), np.zeros(len(y))
        for train, test in KFold(5, shuffle=True, random_state=seed).split(tasks):
            model = DifficultyModel(CONFIG)
            fitted = model.fit([tasks[i] for i in train], y[train], [signals[i] for i in train] if signals else None)
            assert fitted, model.skip_reason
            ours[test] = model.predict([tasks[i] for i in test], [signals[i] for i in test] if signals else None)
            baseline = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)).fit(lengths[train], y[train])
            base[test] = baseline.predict(lengths[test])
        scores["crowdgate"].append(float(spearmanr(ours, y)[0]))
        scores["baseline"].append(float(spearmanr(base, y)[0]))
    return scores


def best_length_feature(tasks: list[dict], y: np.ndarray) -> float:
    lengths = np.vstack([length_features(task_texts(t, ("text", "hypothesis"))) for t in tasks])
    return max(float(spearmanr(column, y)[0]) for column in lengths.T)


def report(
    target: str, scores: dict[str, list[float]], tasks: list[dict], y: np.ndarray, started: float, **extra: object
) -> None:
    ours, base = np.mean(scores["crowdgate"]), np.mean(scores["baseline"])
    line = {
        "bench": "difficulty",
        "dataset": "rte",
        "target": target,
        "items": len(y),
        "folds": 5,
        "repeats": len(scores["crowdgate"]),
        "spearman": round(float(ours), 3),
        "spearman_sd": round(float(np.std(scores["crowdgate"])), 3),
        "baseline": "ridge on text length",
        "baseline_spearman": round(float(base), 3),
        "baseline_spearman_sd": round(float(np.std(scores["baseline"])), 3),
        "best_length_feature_in_sample_spearman": round(best_length_feature(tasks, y), 3),
        "beats_baseline": bool(ours > base),
        **extra,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="shuffles of the 5-fold split")
    args = parser.parse_args()

    items = load_items("rte")
    labels = load_labels("rte")
    by_task = labels.groupby("task", sort=False)["label"].apply(list)
    order = list(items.index)
    tasks = [{"data": {"text": items.at[t, "text"], "hypothesis": items.at[t, "hypothesis"]}} for t in order]
    crowd = [by_task[t] for t in order]
    gold = [items.at[t, "gold"] for t in order]

    targets = {
        "disagreement": np.array([disagreement(c) for c in crowd]),
        "missed_gold": np.array([missed_gold(c, g) for c, g in zip(crowd, gold, strict=True)]),
    }
    for target, y in targets.items():
        started = time.perf_counter()
        report(target, cross_validated(tasks, y, args.repeats), tasks, y, started)

    # Signal hook: early labels as a signal, the target from the later labels only.
    started = time.perf_counter()
    early = [{"early_disagreement": disagreement(c[:EARLY])} for c in crowd]
    late = np.array([disagreement(c[EARLY:]) for c in crowd])
    scores = cross_validated(tasks, late, args.repeats, early)
    text_only = float(np.mean(cross_validated(tasks, late, args.repeats)["crowdgate"]))
    signal_only = float(spearmanr([e["early_disagreement"] for e in early], late)[0])
    report(
        f"disagreement_of_labels_{EARLY + 1}_on",
        scores,
        tasks,
        late,
        started,
        signals=["early_disagreement"],
        text_only_spearman=round(text_only, 3),
        signal_only_spearman=round(signal_only, 3),
    )


if __name__ == "__main__":
    main()
