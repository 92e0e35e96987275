"""Prediction latency of the embedded models through the ML backend's real /predict path.

Trains the project's EmbeddingClassifier on the gold of the RTE items outside the timed batch and saves it as
a versioned artifact, exactly as ``ml_backend.training`` does; the backend (``ml_backend.app.create_app`` with
its own ``Prelabeler``, Flask test client, no network) then picks it up like any project's trained model.
After a warm-up on other items it times POST /predict for ``--tasks`` random RTE tasks, ``--runs`` times, with
the embedding cache emptied before each timed request (every text is embedded inside the timing). The baseline,
in the same run on the same tasks, is a project without a trained model (zero-shot: embeddings only).

Prints one JSON line: ``tasks``, ``seconds`` (median), every run, CPU seconds, and the ratio to the baseline.
Target on this 2-core machine: <= 2 s for 100 tasks.

    python bench/predict.py [--tasks 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.settings import Settings
from ml_backend import artifacts, features
from ml_backend.app import create_app
from ml_backend.classifier import EmbeddingClassifier
from ml_backend.prelabeler import Prelabeler
from scripts.crowd_sets import load_items

CONFIG = (Path(__file__).resolve().parents[1] / "label_configs" / "rte" / "config.xml").read_text()
TRAINED, UNTRAINED = 1, 2  # project ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    items = load_items("rte")
    tasks = [{"id": i, "data": {"text": r.text, "hypothesis": r.hypothesis}} for i, r in enumerate(items.itertuples())]
    # A random batch: the RTE file is sorted by gold (75 % "1" in the first 100 items, 3 % in the last 100).
    order = np.random.default_rng(0).permutation(len(tasks))
    batch = [tasks[i] for i in order[: args.tasks]]
    train = [tasks[i] for i in order[args.tasks:]]
    gold = list(items["gold"].iloc[order[: args.tasks]])

    root = Path(tempfile.mkdtemp(prefix="crowdgate-bench-models-"))
    started = time.perf_counter()
    classifier = EmbeddingClassifier(CONFIG)
    assert classifier.fit(train, list(items["gold"].iloc[order[args.tasks:]])), classifier.skip_reason
    artifacts.save(TRAINED, "classifier", classifier, version=classifier.model_version, root=root)
    train_seconds = time.perf_counter() - started
    os.environ.pop("CROWDGATE_LLM_MODEL", None)  # the embedded path: no LLM
    client = create_app(Settings(redis_url=""), model=Prelabeler(model_root=root)).test_client()

    def post(project: int, tasks: list[dict[str, Any]]) -> tuple[float, float, list[dict[str, Any]]]:
        features.DEFAULT_CACHE.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        response = client.post("/predict", json={"tasks": tasks, "project": f"{project}.0", "label_config": CONFIG})
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        body = response.get_json()
        assert response.status_code == 200 and len(body["results"]) == len(tasks), body
        return wall, cpu, body["results"]

    post(TRAINED, train[:20])
    post(UNTRAINED, train[:20])
    runs = [post(TRAINED, batch) for _ in range(args.runs)]
    baseline = [post(UNTRAINED, batch) for _ in range(args.runs)]
    results = runs[-1][2]
    assert {r["model_version"] for r in results} == {classifier.model_version}
    accuracy = sum(r["result"][0]["value"]["choices"][0] == g for r, g in zip(results, gold, strict=True))
    seconds = statistics.median(r[0] for r in runs)
    base_seconds = statistics.median(r[0] for r in baseline)
    print(json.dumps({
        "bench": "predict",
        "tasks": args.tasks,
        "seconds": round(seconds, 3),
        "runs": [round(r[0], 3) for r in runs],
        "cpu_seconds": [round(r[1], 3) for r in runs],
        "baseline": "zero-shot /predict on the same tasks (no trained model: embeddings only)",
        "baseline_seconds": round(base_seconds, 3),
        "ratio_vs_baseline": round(seconds / base_seconds, 3),
        "path": "POST /predict, Flask test client, Prelabeler with the project's classifier artifact",
        "model_version": classifier.model_version,
        "classifier_calibrated": classifier.calibrated,
        "classifier_accuracy_vs_gold": round(accuracy / args.tasks, 3),
        "train_items": len(train),
        "train_seconds": round(train_seconds, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }), flush=True)


if __name__ == "__main__":
    main()
