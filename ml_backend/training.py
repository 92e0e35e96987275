"""Train a project's embedded models from what its annotators did, as an RQ job.

Runs on ``START_TRAINING`` (Label Studio's "Start training" button) and after every
``CROWDGATE_RETRAIN_EVERY`` new annotations. From the project's export it takes
- training labels: the gold answer of gold tasks (ground-truth annotation, else ``meta["gold"]``), and the
  majority label of tasks with at least ``MIN_VOTES`` annotations where at least ``MIN_SHARE`` agree;
- observed difficulty: the disagreement among each finished task's annotations.
It trains :class:`~ml_backend.classifier.EmbeddingClassifier` (Choices configs) and
:class:`~ml_backend.difficulty.DifficultyModel`, saves both as new versions, and writes each task's predicted
difficulty into its data as ``crowdgate_difficulty`` (a column admins can sort by in the Data Manager) and into
Redis for routing.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from core.keys import Keys
from core.labelstudio import LabelStudioClient, LabelStudioError
from core.settings import current
from core.task_lock import TaskDataLock
from ml_backend import artifacts
from ml_backend.classifier import EmbeddingClassifier
from ml_backend.difficulty import DifficultyModel, disagreement
from ml_backend.features import task_schema
from qa_hooks.jobs import current_connection
from qa_hooks.scoring import label_of

log = logging.getLogger(__name__)
MIN_VOTES = 3
MIN_SHARE = 0.75
DIFFICULTY_FIELD = "crowdgate_difficulty"


def training_set(tasks: list[dict[str, Any]], control: str) -> tuple[list[dict], list[str], list[dict], list[float]]:
    """(tasks, labels) to train the classifier on and (tasks, difficulty) to train the difficulty model on."""
    label_tasks, labels, finished, difficulty = [], [], [], []
    for task in tasks:
        live = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        truth = [a for a in live if a.get("ground_truth")]
        votes = [v for a in live if not a.get("ground_truth") and (v := label_of(a.get("result") or [], control))]
        gold = label_of(truth[-1].get("result") or [], control) if truth else None
        meta_gold = (task.get("meta") or {}).get("gold")
        if gold is None and isinstance(meta_gold, str):
            gold = meta_gold
        if gold is not None:
            label_tasks.append(task)
            labels.append(gold)
        elif len(votes) >= MIN_VOTES:
            top, count = Counter(votes).most_common(1)[0]
            if count / len(votes) >= MIN_SHARE:
                label_tasks.append(task)
                labels.append(top)
        if len(votes) >= 2:
            finished.append(task)
            difficulty.append(disagreement(votes))
    return label_tasks, labels, finished, difficulty


def train_project(project: int, prefix: str = "cg", connection: redis.Redis | None = None,
                  client: LabelStudioClient | None = None, model_root: Path | None = None) -> dict[str, Any]:
    client = client or LabelStudioClient.from_settings(current())
    info = client.project(project)
    config = info.get("label_config", "")
    # Both models answer only for this Label Studio's project (its uid) and this config (artifacts.mismatch).
    provenance = artifacts.Provenance.of(config, info, client.url)
    tasks = client.export(project)
    schema = task_schema(config)
    report: dict[str, Any] = {"project": project, "tasks": len(tasks)}
    if schema.control is None:
        report["skipped"] = "no Choices control: nothing for the embedded classifier to learn"
        return report
    label_tasks, labels, finished, difficulty = training_set(tasks, schema.control.name)
    report.update(training_labels=len(labels), finished_tasks=len(finished))

    classifier = EmbeddingClassifier(config, provenance=provenance)
    if classifier.fit(label_tasks, labels):
        artifacts.save(project, "classifier", classifier, version=classifier.model_version, root=model_root)
        report["classifier"] = classifier.model_version
    else:
        report["classifier_skipped"] = classifier.skip_reason

    model = DifficultyModel(config, provenance=provenance)
    if model.fit(finished, difficulty):
        artifacts.save(project, "difficulty", model, version=model.model_version, root=model_root)
        report["difficulty"] = model.model_version
        predicted = model.predict(tasks)
        report["difficulty_written"] = write_difficulty(client, tasks, predicted, project, prefix, connection)
    else:
        report["difficulty_skipped"] = model.skip_reason
    log.info("trained project %s: %s", project, report)
    return report


def write_difficulty(client: LabelStudioClient, tasks: list[dict[str, Any]], predicted: Any, project: int,
                     prefix: str, connection: redis.Redis | None) -> int:
    """Put each task's predicted difficulty in its data (Data Manager column) and in Redis (for routing).

    ``tasks`` may be an export taken minutes ago: each task's data is read again and written back under the
    task-data lock routing's exam offers take (:class:`core.task_lock.TaskDataLock`), so what was offered or
    assigned meanwhile survives. Returns how many tasks were written."""
    connection = connection or current_connection()
    lock = TaskDataLock(connection, prefix)
    written = 0
    values = {}
    for task, value in zip(tasks, predicted, strict=True):
        value = round(float(value), 4)
        values[task["id"]] = value
        if (task.get("data") or {}).get(DIFFICULTY_FIELD) == value:
            continue  # already there as of ``tasks``: spare the round trips

        def with_difficulty(data: dict[str, Any], value: float = value) -> dict[str, Any] | None:
            return None if data.get(DIFFICULTY_FIELD) == value else {**data, DIFFICULTY_FIELD: value}

        try:
            written += lock.update(client, project, int(task["id"]), with_difficulty)
        except LabelStudioError as exc:  # one task must not stop the others
            log.warning("could not write difficulty of task %s: %s", task["id"], exc)
    if values:
        connection.hset(Keys(prefix).difficulty(project), mapping={str(k): json.dumps(v) for k, v in values.items()})
    return written


def train_job(project: int, prefix: str = "cg") -> dict[str, Any]:
    """The RQ job: the worker's connection is where routing reads difficulty from."""
    from rq import get_current_job

    job = get_current_job()
    return train_project(project, prefix, job.connection if job else None)
