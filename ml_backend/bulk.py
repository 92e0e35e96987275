"""Pre-label a large import in the background, as an RQ job on the ``crowdgate-ml`` queue.

Label Studio asks ``/predict`` for a task only when someone opens it or runs the Data Manager action; after a
large import (``TASKS_CREATED`` with at least ``CROWDGATE_PRELABEL_MIN_TASKS`` tasks) crowdgate pre-labels the
new tasks with the LLM at once and writes the predictions through label-studio-sdk. Progress is kept in the
job's ``meta["progress"]`` (``done``, ``total``), readable with RQ's own tools (``rq info``, ``Job.fetch``).
"""

from __future__ import annotations

import os
from typing import Any

from label_studio_sdk import LabelStudio
from rq import get_current_job

from ml_backend.llm import prelabel_project
from ml_backend.prelabeler import Prelabeler


def prelabel_import(project: int, task_ids: list[int]) -> dict[str, Any]:
    prelabeler = Prelabeler.from_env()
    if prelabeler.llm is None:
        return {"project": project, "skipped": "no LLM configured (CROWDGATE_LLM_MODEL)"}
    client = LabelStudio(base_url=os.environ["LABEL_STUDIO_URL"], api_key=os.environ["LABEL_STUDIO_API_KEY"])
    job = get_current_job()
    config = client.projects.get(id=project).label_config
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
