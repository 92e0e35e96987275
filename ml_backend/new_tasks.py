"""Difficulty for tasks imported after a training, as an RQ job on the ``crowdgate-ml`` queue.

Training predicts the difficulty of the tasks it sees and saves the model (``ml_backend.training``); tasks imported
later would get none until the next training. On ``TASKS_CREATED`` (which Label Studio sends to the ML backend's
``/webhook``) the backend queues :func:`difficulty_job`, which predicts their difficulty with the project's newest
difficulty model and writes it the way training does: into each task's data as ``crowdgate_difficulty`` and into
Redis for routing. A model trained for another Label Studio project or label config is not used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from rq import get_current_job

from core.labelstudio import LabelStudioClient
from core.settings import current
from ml_backend import artifacts
from ml_backend.difficulty import KIND
from ml_backend.training import write_difficulty

log = logging.getLogger(__name__)


def has_difficulty_model(project: int, model_root: Path | None = None) -> bool:
    """Whether a difficulty model was saved for ``project`` (a cheap check: nothing is loaded)."""
    return artifacts.latest_version(project, KIND, root=model_root) is not None


def predict_new_tasks(project: int, task_ids: Sequence[int], client: Any, prefix: str = "cg",
                      connection: redis.Redis | None = None, model_root: Path | None = None) -> dict[str, Any]:
    """Predict and write the difficulty of ``task_ids`` of ``project``; a report of what was done.

    ``client`` is a :class:`core.labelstudio.LabelStudioClient`; tasks are read through the list API, which
    (unlike fetching one task) does not make Label Studio ask the backend for predictions.
    """
    report: dict[str, Any] = {"project": project, "tasks": len(task_ids)}
    model = artifacts.latest(project, KIND, root=model_root)
    if model is None:
        return {**report, "skipped": "no difficulty model for this project"}
    info = client.project(project)
    reason = artifacts.mismatch(model, info.get("label_config", ""), artifacts.project_uid(info))
    if reason is not None:
        log.warning("not predicting difficulty of new tasks of project %s with %s: %s", project,
                    model.model_version, reason)
        return {**report, "skipped": reason}
    wanted = set(task_ids)
    tasks = [t for t in client.tasks(project, ids=list(task_ids)) if t.get("id") in wanted]
    report["difficulty"] = model.model_version
    if tasks:
        report["difficulty_written"] = write_difficulty(client, tasks, model.predict(tasks), project, prefix,
                                                        connection)
    log.info("difficulty of new tasks of project %s: %s", project, report)
    return report


def difficulty_job(project: int, task_ids: list[int], prefix: str = "cg") -> dict[str, Any]:
    """The RQ job: the worker's connection is where routing reads difficulty from."""
    job = get_current_job()
    return predict_new_tasks(project, task_ids, LabelStudioClient.from_settings(current()), prefix,
                             job.connection if job else None)
