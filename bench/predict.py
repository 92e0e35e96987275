"""Prediction latency of the embedded models through the ML backend's /predict endpoint.

Trains the EmbeddingClassifier on the gold of the RTE items outside the timed batch and the DifficultyModel
on their crowd disagreement, mounts both behind ``ml_backend.app.create_app`` (Flask test client, no network),
warms everything up on other items, then times POST /predict for ``--tasks`` random RTE tasks, ``--runs``
times. The embedding cache is emptied before each timed request, so every text of the batch is embedded inside
the timing (once, shared by both models).

Prints one JSON line: ``{"tasks": 100, "seconds": <median>, ...}`` with every run's wall and CPU seconds and
a per-stage split of the fastest run. On shared cores the wall time depends on the neighbours' load: CPU
seconds over the two torch threads tell what the request itself costs.

    python bench/predict.py [--tasks 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_backend import features
from ml_backend.app import create_app
from ml_backend.classifier import EmbeddingClassifier
from ml_backend.difficulty import DifficultyModel, disagreement
from ml_backend.labeling import choice_region
from scripts.crowd_sets import load_items, load_labels

CONFIG = (Path(__file__).resolve().parents[1] / "label_configs" / "rte.xml").read_text()


class EmbeddedModels:
    """The shape the backend expects: ``predict(tasks, label_config)`` and ``model_version``."""

    def __init__(self, classifier: EmbeddingClassifier, difficulty: DifficultyModel) -> None:
        self.classifier = classifier
        self.difficulty = difficulty
        self.model_version = classifier.model_version
        self.stages: dict[str, float] = {}

    def predict(
        self, tasks: list[dict[str, Any]], label_config: str, project: int | None = None
    ) -> list[dict[str, Any]]:
        started = time.perf_counter()
        # Embed every text once up front; both models then read the shared cache.
        texts = [features.task_texts(task, self.classifier.fields) for task in tasks]
        features.embed_texts([part for t in texts for part in t])
        embedded = time.perf_counter()
        picks = self.classifier.predict(tasks)
        classified = time.perf_counter()
        hardness = self.difficulty.predict(tasks)
        done = time.perf_counter()
        self.stages = {
            "embed": round(embedded - started, 3),
            "classifier": round(classified - embedded, 3),
            "difficulty": round(done - classified, 3),
        }
        control = self.classifier.control.name
        return [
            {
                "result": [choice_region(label_config, control, list(pick.choices))],
                "score": pick.score,
                "model_version": self.model_version,
                "difficulty": round(float(h), 4),
            }
            for pick, h in zip(picks, hardness, strict=True)
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    items = load_items("rte")
    crowd = load_labels("rte").groupby("task")["label"].apply(list)
    tasks = [
        {"id": i, "data": {"text": row.text, "hypothesis": row.hypothesis}} for i, row in enumerate(items.itertuples())
    ]
    # A random batch: the RTE file is sorted by gold (75 % "1" in the first 100 items, 3 % in the last 100).
    order = np.random.default_rng(0).permutation(len(tasks))
    batch = [tasks[i] for i in order[: args.tasks]]
    train = [tasks[i] for i in order[args.tasks :]]
    train_ids = list(items.index[order[args.tasks :]])
    gold = list(items["gold"].iloc[order[: args.tasks]])

    started = time.perf_counter()
    classifier = EmbeddingClassifier(CONFIG)
    assert classifier.fit(train, list(items.loc[train_ids, "gold"])), classifier.skip_reason
    difficulty = DifficultyModel(CONFIG)
    assert difficulty.fit(train, [disagreement(crowd[t]) for t in train_ids]), difficulty.skip_reason
    train_seconds = time.perf_counter() - started

    models = EmbeddedModels(classifier, difficulty)
    client = create_app(model=models).test_client()

    def post(tasks: list[dict[str, Any]]) -> tuple[float, float, dict[str, float]]:
        features.DEFAULT_CACHE.clear()  # nothing of the batch is pre-embedded
        wall, cpu = time.perf_counter(), time.process_time()
        response = client.post("/predict", json={"tasks": tasks, "project": "1.0", "label_config": CONFIG})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        body = response.get_json()
        assert response.status_code == 200 and len(body["results"]) == len(tasks), body
        answers.extend(r["result"][0]["value"]["choices"][0] for r in body["results"])
        return wall, cpu, models.stages

    answers: list[str] = []

    post(train[:20])
    answers.clear()
    runs = [post(batch) for _ in range(args.runs)]
    accuracy = sum(a == g for a, g in zip(answers[: args.tasks], gold, strict=True)) / args.tasks
    fastest = min(runs, key=lambda run: run[0])
    print(
        json.dumps(
            {
                "bench": "predict",
                "tasks": args.tasks,
                "seconds": round(statistics.median(r[0] for r in runs), 3),
                "min_seconds": round(fastest[0], 3),
                "runs": [round(r[0], 3) for r in runs],
                "cpu_seconds": [round(r[1], 3) for r in runs],
                "fastest_run_stages": fastest[2],
                "path": "POST /predict via Flask test client (ml_backend.app.create_app)",
                "texts_per_task": 2,
                "train_items": len(train),
                "classifier_calibrated": classifier.calibrated,
                "classifier_accuracy_vs_gold": round(accuracy, 3),
                "train_seconds": round(train_seconds, 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
