"""Check and normalise Label Studio webhook payloads (pure: no I/O).

Label Studio 1.23.2 sends these actions (captured payloads in ``tests/fixtures/labelstudio-1.23.2``):
``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` (one ``annotation``), ``ANNOTATIONS_CREATED`` (a list under
``annotation``), ``ANNOTATIONS_DELETED`` (only ids), ``TASKS_CREATED`` / ``TASKS_DELETED``,
``PROJECT_CREATED`` / ``PROJECT_UPDATED`` / ``PROJECT_DELETED`` and ``LABEL_LINK_CREATED`` /
``LABEL_LINK_UPDATED`` / ``LABEL_LINK_DELETED``. A skip is an ``ANNOTATION_CREATED`` with
``was_cancelled: true``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

ANNOTATION_ACTIONS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"})
KNOWN_ACTIONS = ANNOTATION_ACTIONS | {
    "ANNOTATIONS_DELETED",
    "TASKS_CREATED",
    "TASKS_DELETED",
    "PROJECT_CREATED",
    "PROJECT_UPDATED",
    "PROJECT_DELETED",
    "LABEL_LINK_CREATED",
    "LABEL_LINK_UPDATED",
    "LABEL_LINK_DELETED",
}
# Project fields crowdgate keeps; the rest of Label Studio's project snapshot is counters and UI settings.
PROJECT_FIELDS = ("title", "label_config", "control_weights", "expert_instruction", "maximum_annotations")


class PayloadError(ValueError):
    """A webhook body crowdgate cannot accept; ``status`` is the HTTP code to answer with."""

    def __init__(self, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Submission:
    """One annotation as crowdgate records it: who labelled which task, with what, how fast."""

    project: int
    task: int
    annotation_id: int
    unique_id: str
    annotator: int
    result: list[dict[str, Any]]
    updated_at: str
    created_at: str
    lead_time: float | None = None
    was_cancelled: bool = False
    ground_truth: bool = False
    parent_prediction: int | None = None

    @property
    def dedup_key(self) -> str:
        # Annotation ids are reused after deletion on SQLite; unique_id + updated_at names one version.
        return f"{self.unique_id}:{self.updated_at}"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Submission:
        return cls(**data)


@dataclass(frozen=True)
class TaskInfo:
    """A task's data and meta (gold answers may live in ``meta``, which annotators do not see)."""

    id: int
    data: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """A checked webhook: the parts crowdgate acts on, in plain data a queue can carry."""

    action: str
    project: int | None
    project_info: dict[str, Any] = field(default_factory=dict)
    submissions: list[Submission] = field(default_factory=list)
    tasks: list[TaskInfo] = field(default_factory=list)
    deleted_annotations: list[int] = field(default_factory=list)
    deleted_tasks: list[int] = field(default_factory=list)
    body_digest: str = ""

    def dedup_keys(self) -> list[str]:
        """One key per independent item: annotation versions, or the whole body for other actions."""
        if self.action in ANNOTATION_ACTIONS:
            return [s.dedup_key for s in self.submissions]
        return [f"{self.action}:{self.body_digest}"]

    def only(self, keys: set[str]) -> Event:
        """This event restricted to the items whose dedup key is in ``keys``."""
        if self.action not in ANNOTATION_ACTIONS:
            return self
        kept = [s for s in self.submissions if s.dedup_key in keys]
        return Event(**{**self.__dict__, "submissions": kept})

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the queue; shallow, since ``dataclasses.asdict`` deep-copies every region."""
        return {
            "action": self.action,
            "project": self.project,
            "project_info": self.project_info,
            "submissions": [s.to_dict() for s in self.submissions],
            "tasks": [{"id": t.id, "data": t.data, "meta": t.meta} for t in self.tasks],
            "deleted_annotations": self.deleted_annotations,
            "deleted_tasks": self.deleted_tasks,
            "body_digest": self.body_digest,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        return cls(
            action=data["action"],
            project=data["project"],
            project_info=data.get("project_info", {}),
            submissions=[Submission.from_dict(s) for s in data.get("submissions", [])],
            tasks=[TaskInfo(**t) for t in data.get("tasks", [])],
            deleted_annotations=list(data.get("deleted_annotations", [])),
            deleted_tasks=list(data.get("deleted_tasks", [])),
            body_digest=data.get("body_digest", ""),
        )


def parse_body(raw: bytes) -> Event:
    """Decode and check a webhook body; raises :class:`PayloadError` with a reason."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}", 400) from exc
    return parse_event(body, digest=hashlib.sha256(raw).hexdigest())


def parse_event(body: Any, digest: str = "") -> Event:
    if not isinstance(body, dict):
        raise PayloadError("body must be a JSON object", 400)
    action = body.get("action")
    if not isinstance(action, str):
        raise PayloadError("missing field 'action' (a string)")
    if action not in KNOWN_ACTIONS:
        raise PayloadError(f"unknown action {action!r}; expected one of {', '.join(sorted(KNOWN_ACTIONS))}")
    project_obj = body.get("project")
    project_info = _project_info(project_obj)
    project = _project_id(project_obj)

    if action in ANNOTATION_ACTIONS:
        raw_annotations = body.get("annotation", body.get("annotations"))
        if action == "ANNOTATIONS_CREATED":
            if not isinstance(raw_annotations, list):
                raise PayloadError("ANNOTATIONS_CREATED needs 'annotation' as a list of annotations")
        elif isinstance(raw_annotations, dict):
            raw_annotations = [raw_annotations]
        else:
            raise PayloadError(f"{action} needs 'annotation' as an object")
        task_obj = body.get("task")
        submissions = [_submission(a, i, project, action) for i, a in enumerate(raw_annotations)]
        if project is None and submissions:
            project = submissions[0].project
        tasks = [_task(task_obj, "task")] if isinstance(task_obj, dict) else []
        return Event(action, project, project_info, submissions=submissions, tasks=tasks, body_digest=digest)

    if action == "ANNOTATIONS_DELETED":
        ids = [_int(_require_dict(a, f"annotations[{i}]").get("id"), f"annotations[{i}].id")
               for i, a in enumerate(_require_list(body.get("annotations"), "annotations"))]
        return Event(action, project, project_info, deleted_annotations=ids, body_digest=digest)

    if action in {"TASKS_CREATED", "TASKS_DELETED"}:
        raw_tasks = _require_list(body.get("tasks"), "tasks")
        tasks = [_task(t, f"tasks[{i}]") for i, t in enumerate(raw_tasks)]
        if project is None:
            project = next((t.get("project") for t in raw_tasks if isinstance(t.get("project"), int)), None)
        if action == "TASKS_DELETED":
            return Event(action, project, project_info, deleted_tasks=[t.id for t in tasks], body_digest=digest)
        return Event(action, project, project_info, tasks=tasks, body_digest=digest)

    if action.startswith("PROJECT_") and project is None:
        raise PayloadError(f"{action} needs 'project' with an integer 'id'")
    return Event(action, project, project_info, body_digest=digest)


def epoch_seconds(timestamp: str, name: str = "timestamp") -> float:
    """Unix seconds of an ISO 8601 timestamp (``Z`` allowed); ValueError naming ``name`` when it is not one.

    Never a default: an unreadable time taken as 0 would make that work look older than anything else.
    """
    try:
        return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"{name} must be an ISO 8601 timestamp, got {timestamp!r}") from None


def _timestamp(value: Any, where: str) -> str:
    """``value`` when it is an ISO 8601 timestamp string; else a 422 naming the field."""
    if not isinstance(value, str):
        raise PayloadError(f"{where} must be a timestamp string")
    try:
        epoch_seconds(value, where)
    except ValueError as exc:
        raise PayloadError(str(exc)) from None
    return value


def _submission(raw: Any, index: int, project: int | None, action: str) -> Submission:
    where = "annotation" if action != "ANNOTATIONS_CREATED" else f"annotation[{index}]"
    ann = _require_dict(raw, where)
    annotation_id = _int(ann.get("id"), f"{where}.id")
    task = ann.get("task")
    if isinstance(task, dict):  # some senders nest the task object
        task = task.get("id")
    task = _int(task, f"{where}.task")
    annotator = ann.get("completed_by")
    if isinstance(annotator, dict):
        annotator = annotator.get("id")
    annotator = _int(annotator, f"{where}.completed_by")
    result = ann.get("result")
    if result is None:
        result = []
    if not isinstance(result, list) or not all(isinstance(r, dict) for r in result):
        raise PayloadError(f"{where}.result must be a list of region objects")
    created_at = ann.get("created_at")
    if created_at is not None:
        created_at = _timestamp(created_at, f"{where}.created_at")
    updated_at = _timestamp(ann.get("updated_at") or created_at, f"{where}.updated_at")
    unique_id = ann.get("unique_id")
    if not isinstance(unique_id, str) or not unique_id:
        # Older senders have no unique_id: the id plus creation time still names one annotation.
        unique_id = f"id{annotation_id}@{ann.get('created_at', updated_at)}"
    ann_project = ann.get("project")
    owner = project if project is not None else ann_project
    owner = _int(owner, f"{where}.project")
    lead_time = ann.get("lead_time")
    if lead_time is not None and not isinstance(lead_time, int | float):
        raise PayloadError(f"{where}.lead_time must be a number or null")
    parent = ann.get("parent_prediction")
    return Submission(
        project=owner,
        task=task,
        annotation_id=annotation_id,
        unique_id=unique_id,
        annotator=annotator,
        result=result,
        updated_at=updated_at,
        created_at=created_at or updated_at,
        lead_time=float(lead_time) if lead_time is not None else None,
        was_cancelled=bool(ann.get("was_cancelled", False)),
        ground_truth=bool(ann.get("ground_truth", False)),
        parent_prediction=parent if isinstance(parent, int) else None,
    )


def _task(raw: Any, where: str) -> TaskInfo:
    task = _require_dict(raw, where)
    data = task.get("data") or {}
    meta = task.get("meta") or {}
    if not isinstance(data, dict) or not isinstance(meta, dict):
        raise PayloadError(f"{where}.data and {where}.meta must be objects")
    return TaskInfo(id=_int(task.get("id"), f"{where}.id"), data=data, meta=meta)


def _project_id(project: Any) -> int | None:
    if isinstance(project, dict):
        value = project.get("id")
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(project, int) and not isinstance(project, bool):
        return project
    return None


def _project_info(project: Any) -> dict[str, Any]:
    if not isinstance(project, dict):
        return {}
    return {k: project[k] for k in PROJECT_FIELDS if k in project}


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{where} must be an integer, got {type(value).__name__}")
    return value


def _require_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be an object")
    return value


def _require_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise PayloadError(f"missing field {where!r} (a list)")
    return value
