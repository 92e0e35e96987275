"""Pre-label a large import in the background, as an RQ job on the ``crowdgate-ml`` queue.

Label Studio asks ``/predict`` for a task only when someone opens it or runs the Data Manager action; after a
large import (``TASKS_CREATED`` with at least ``CROWDGATE_PRELABEL_MIN_TASKS`` tasks) crowdgate pre-labels the
new tasks with the LLM at once and writes the predictions through the Label Studio adapter
(:class:`core.labelstudio.LabelStudioClient`). Progress is kept in the job's ``meta["progress"]`` (``done``,
``total``), readable with RQ's own tools (``rq info``, ``Job.fetch``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rq import get_current_job

from core.labelstudio import LabelStudioClient
from core.settings import current
from ml_backend.llm import LLMPredictor
from ml_backend.prelabeler import Prelabeler

log = logging.getLogger(__name__)


def iter_batches(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def prelabel_project(
    client: LabelStudioClient,
    project_id: int,
    predictor: LLMPredictor,
    *,
    label_config: str | None = None,
    instructions: str | None = None,
    examples: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]] = (),
    task_ids: Sequence[int] | None = None,
    batch_size: int = 50,
    skip_existing: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Pre-label a whole project (meant to run as an RQ job).

    Tasks are read with ``client.tasks`` (all of them, or those in ``task_ids``), predicted in batches without a
    deadline, and written with ``client.create_prediction``. Tasks that already hold a prediction of this model
    version are skipped, so a re-run after a crash resumes. ``progress(done, total)`` is called after every batch.
    Returns counts: tasks, predicted, written, skipped, failed.
    """
    if label_config is None or instructions is None:
        project = client.project(project_id)
        label_config = label_config if label_config is not None else project.get("label_config", "")
        instructions = instructions if instructions is not None else (project.get("expert_instruction") or "")
    # Read through the list API: fetching one task (GET /api/tasks/ID) makes Label Studio call the backend's
    # /predict for it, one task at a time, whenever the project shows collaborators' predictions.
    tasks = client.tasks(project_id, ids=task_ids)
    if task_ids is not None:  # the list API's selection, checked again
        wanted = set(task_ids)
        tasks = [t for t in tasks if t.get("id") in wanted]
    version = predictor.model_version

    def has_current(task: dict[str, Any]) -> bool:
        return any(isinstance(p, dict) and p.get("model_version") == version for p in task.get("predictions") or [])

    todo = [t for t in tasks if not (skip_existing and has_current(t))]
    counts = {"tasks": len(tasks), "predicted": 0, "written": 0, "skipped": len(tasks) - len(todo), "failed": 0}
    done = 0
    if progress:
        progress(0, len(todo))
    for batch in iter_batches(todo, batch_size):
        predictions = predictor.predict(
            batch, label_config, project=str(project_id), instructions=instructions, examples=examples, deadline_s=0
        )
        for task, pred in zip(batch, predictions, strict=True):
            if pred is None:
                counts["failed"] += 1
                continue
            counts["predicted"] += 1
            try:
                client.create_prediction(task["id"], pred["result"], score=pred["score"],
                                         model_version=pred["model_version"])
                counts["written"] += 1
            except Exception as exc:  # keep going: the next run picks the task up again
                counts["failed"] += 1
                log.warning("writing the prediction for task %s failed: %s", task.get("id"), exc)
        done += len(batch)
        if progress:
            progress(done, len(todo))
    return counts


def prelabel_import(project: int, task_ids: list[int]) -> dict[str, Any]:
    prelabeler = Prelabeler.from_settings(current())
    if prelabeler.llm is None:
        return {"project": project, "skipped": "no LLM configured (CROWDGATE_LLM_MODEL)"}
    client = LabelStudioClient.from_settings(current())
    job = get_current_job()
    config = client.project(project).get("label_config", "")
    instructions, examples = ("", [])
    if prelabeler.knowledge is not None:
        instructions, examples = prelabeler.knowledge.context(project, config)

    def progress(done: int, total: int) -> None:
        if job is not None:
            job.meta["progress"] = {"done": done, "total": total}
            job.save_meta()

    outcome = prelabel_project(client, project, prelabeler.llm, label_config=config, instructions=instructions,
                               examples=examples, task_ids=task_ids, progress=progress)
    return {"project": project, **outcome}
