"""The one in-memory fake of :class:`core.labelstudio.LabelStudioClient` for unit tests.

It keeps projects, tasks (with their annotations), webhooks and views in dicts, answers the adapter's calls with
the shapes Label Studio 1.23.2 sends, and logs every write in ``writes`` (``written(name)`` filters it) and
every task listing in ``tasks.listings``.
``fail_next[name] = n`` makes the next ``n`` calls of a write fail with a 500. The integration tests check the
real server.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from core.labelstudio import COMMUNITY, LabelStudioError

TASK_IDS = itertools.count(1000)  # ids of everything the fake creates
URL = "http://labelstudio.test"  # the fake's base URL, as the adapter's ``url``


class TaskTable(dict[int, dict[str, Any]]):
    """The fake's tasks by id, which tests read and change directly; calling it is the adapter's
    ``tasks(project, ids)`` listing (copies, as a listing is a snapshot). ``listings`` logs each call's
    ``(project, ids)``, to check how a job reads (one listing, not a fetch per task)."""

    def __init__(self) -> None:
        super().__init__()
        self.listings: list[tuple[int, list[int] | None]] = []

    def __call__(self, project: int, ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        asked = None if ids is None else list(ids)
        self.listings.append((project, asked))
        return self.snapshot(project, asked)

    def snapshot(self, project: int, ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """Copies of the project's tasks (those of ``ids`` when given), not logged as a listing."""
        wanted = set(ids) if ids is not None else None
        return [copy.deepcopy(t) for t in self.values()
                if t["project"] == project and (wanted is None or t["id"] in wanted)]


class FakeLabelStudio:
    """Just enough of Label Studio for crowdgate's jobs, with a log of every write."""

    def __init__(self, edition: str = COMMUNITY, users: dict[int, str] | None = None, url: str = URL) -> None:
        self.url = url
        self._edition = edition
        self.emails: dict[int, str] = dict(users or {})
        self.projects: dict[int, dict[str, Any]] = {}
        self.hooks: dict[int, list[dict[str, Any]]] = {}
        self.tasks = TaskTable()
        self.views: dict[tuple[int, str], int] = {}
        self.writes: list[tuple[Any, ...]] = []
        self.fail_next: dict[str, int] = {}

    # -- building the fake's state (not part of the adapter) -------------------------------------------

    def add_project(self, project: int, label_config: str, title: str = "", hooks: list[dict[str, Any]] | None = None,
                    **settings: Any) -> int:
        self.projects[project] = {"id": project, "title": title or f"project {project}", "label_config": label_config,
                                  **settings}
        self.hooks[project] = list(hooks or [])
        return project

    def add_task(self, project: int, data: dict, meta: dict | None = None, task: int | None = None,
                 overlap: int = 2) -> int:
        task = task or next(TASK_IDS)
        self.tasks[task] = {"id": task, "project": project, "data": data, "meta": meta or {}, "overlap": overlap,
                            "is_labeled": False, "total_annotations": 0, "annotations": [], "predictions": []}
        return task

    def add_annotation(self, task: int, user: int | None, result: list) -> dict:
        t = self.tasks[task]
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        ann = {"id": next(TASK_IDS), "task": task, "project": t["project"], "completed_by": user, "result": result,
               "created_at": stamp, "updated_at": stamp, "unique_id": f"uid-{next(TASK_IDS)}", "was_cancelled": False,
               "ground_truth": False, "lead_time": 1.0}
        t["annotations"].append(ann)
        t["total_annotations"] += 1
        t["is_labeled"] = t["total_annotations"] >= t["overlap"]
        return ann

    def written(self, name: str) -> list[tuple]:
        return [w for w in self.writes if w[0] == name]

    def _maybe_fail(self, name: str) -> None:
        if self.fail_next.get(name):
            self.fail_next[name] -= 1
            raise LabelStudioError("POST", name, 500, "injected failure")

    def _task(self, task: int) -> dict[str, Any]:
        if task not in self.tasks:
            raise LabelStudioError("GET", f"/api/tasks/{task}/", 404, '{"detail": "Not found."}')
        return self.tasks[task]

    # -- the adapter's interface ----------------------------------------------------------------------

    def edition(self, project: int | None = None) -> str:
        return self._edition

    def users(self) -> list[dict]:
        return [{"id": i, "email": e} for i, e in self.emails.items()]

    def project(self, project: int) -> dict:
        return self.projects[project]

    def create_project(self, title: str, label_config: str, **settings: Any) -> int:
        pid = next(TASK_IDS)
        self.projects[pid] = {"id": pid, "title": title, "label_config": label_config, **settings}
        self.writes.append(("create_project", pid))
        return pid

    def export(self, project: int) -> list[dict]:
        """A snapshot: later changes to the fake do not reach what it returned."""
        return self.tasks.snapshot(project)

    def webhooks(self, project: int) -> list[dict]:
        return self.hooks.get(project, [])

    def create_webhook(self, project: int, url: str, headers: dict | None = None) -> int:
        self.hooks.setdefault(project, []).append({"url": url, "headers": headers})
        self.writes.append(("create_webhook", project))
        return 1

    def task(self, task: int) -> dict:
        return self._task(task)

    def patch_task(self, task: int, **fields: Any) -> dict:
        self.writes.append(("patch_task", task, fields))
        self._task(task).update(fields)
        return self.tasks[task]

    def set_overlap(self, task: int, overlap: int) -> dict:
        return self.patch_task(task, overlap=overlap, is_labeled=False)

    def close_task(self, task: int) -> dict:
        return self.patch_task(task, is_labeled=True)

    def replace_task_data(self, task: int, data: dict) -> dict:
        self._maybe_fail("replace_task_data")
        return self.patch_task(task, data=data)

    def replace_task_meta(self, task: int, meta: dict) -> dict:
        return self.patch_task(task, meta=meta)

    def import_tasks(self, project: int, tasks: list[dict]) -> list[int]:
        self._maybe_fail("import_tasks")
        new = []
        for t in tasks:
            tid = self.add_task(project, t["data"], t.get("meta"), overlap=1)
            self.tasks[tid]["predictions"] = t.get("predictions", [])
            new.append(tid)
        self.writes.append(("import_tasks", project, new))
        return new

    def find_tasks(self, project: int, field: str, value: Any) -> list[dict]:
        return [t for t in self.tasks.values() if t["project"] == project and t["data"].get(field) == value]

    def annotations(self, task: int) -> list[dict]:
        return self._task(task)["annotations"]

    def create_annotation(self, task: int, result: list, completed_by: int | None = None, **extra: Any) -> dict:
        self._maybe_fail("create_annotation")
        self.writes.append(("create_annotation", task, completed_by))
        return self.add_annotation(task, completed_by, result)

    def update_annotation(self, annotation: int, **fields: Any) -> dict:
        self.writes.append(("update_annotation", annotation, fields))
        for t in self.tasks.values():
            for a in t["annotations"]:
                if a["id"] == annotation:
                    a.update(fields)
                    return a
        raise LabelStudioError("PATCH", "/api/annotations/", 404, "")

    def predictions(self, project: int) -> list[dict]:
        return [p for t in self.tasks.values() if t["project"] == project for p in t["predictions"]]

    def create_prediction(self, task: int, result: list, score: float | None = None,
                          model_version: str | None = None) -> int:
        self._maybe_fail("create_prediction")
        prediction = {"id": next(TASK_IDS), "task": task, "result": result, "score": score,
                      "model_version": model_version}
        self._task(task)["predictions"].append(prediction)
        self.writes.append(("create_prediction", task, model_version))
        return prediction["id"]

    def annotator_view(self, project: int, email: str) -> int:
        if (project, email) not in self.views:
            self.views[(project, email)] = next(TASK_IDS)
            self.writes.append(("create_view", project, email))
        return self.views[(project, email)]

    def offer_view(self, project: int, email: str, field: str) -> int:
        return self.annotator_view(project, f"{field}:{email}")

    def assign(self, project: int, task: int, users: list[int], kind: str = "AN") -> None:
        self.writes.append(("assign", task, users))

    def unassign(self, project: int, task: int, kind: str = "AN") -> None:
        self.writes.append(("unassign", task))

    def pause(self, project: int, user: int, verbose_reason: str, reason: str = "ANNOTATOR_EVALUATION") -> None:
        self.writes.append(("pause", project, user))
