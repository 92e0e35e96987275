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
import math
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from core.label_config import LabelConfig, LabelConfigError
from core.web_requests import BodyError, parse_json

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
MAX_ID = 2**63 - 1  # Label Studio's ids are 64-bit database keys; a larger one cannot name anything
MAX_LEAD_TIME_S = 10.0**9  # about 31 years: anything longer is not a time an annotator spent
# Region keys scoring reads, and the type each must have when present (relations carry no from_name).
REGION_TYPES: dict[str, tuple[type, ...]] = {"from_name": (str,), "to_name": (str,), "type": (str,),
                                             "value": (dict,)}


class PayloadError(ValueError):
    """A webhook body crowdgate cannot accept; ``status`` is the HTTP code to answer with."""

    def __init__(self, reason: str, status: int = 422) -> None:
        reason = _short(reason, 500)  # reasons quote field names from the body, which may be huge
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
    """Decode and check a webhook body; raises :class:`PayloadError` with a reason: 400 for a body that is not
    strict JSON (:func:`core.web_requests.parse_json`), 422 for one the job could not process."""
    try:
        body = parse_json(raw)
    except BodyError as exc:
        raise PayloadError(exc.reason, exc.status) from None
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
            project = next((t["project"] for t in raw_tasks if _is_id(t.get("project"))), None)
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
    for i, region in enumerate(result):
        for key, types in REGION_TYPES.items():
            if region.get(key) is not None and not isinstance(region[key], types):
                raise PayloadError(f"{where}.result[{i}].{key} must be {_kind(types)}, got {_kind_of(region[key])}")
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
    lead_time = _lead_time(ann.get("lead_time"), f"{where}.lead_time")
    for flag in ("was_cancelled", "ground_truth"):
        if ann.get(flag) is not None and not isinstance(ann[flag], bool):
            raise PayloadError(f"{where}.{flag} must be true, false or null, got {_kind_of(ann[flag])}")
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
        lead_time=lead_time,
        was_cancelled=bool(ann.get("was_cancelled", False)),
        ground_truth=bool(ann.get("ground_truth", False)),
        parent_prediction=parent if _is_id(parent) else None,
    )


def _task(raw: Any, where: str) -> TaskInfo:
    task = _require_dict(raw, where)
    data = task.get("data") or {}
    meta = task.get("meta") or {}
    if not isinstance(data, dict) or not isinstance(meta, dict):
        raise PayloadError(f"{where}.data and {where}.meta must be objects")
    return TaskInfo(id=_int(task.get("id"), f"{where}.id"), data=data, meta=meta)


def _project_id(project: Any) -> int | None:
    """The project's id, or None when the body names none; an integer id out of range is a 422."""
    value, where = (project.get("id"), "project.id") if isinstance(project, dict) else (project, "project")
    if isinstance(value, int) and not isinstance(value, bool):
        return _int(value, where)
    return None


def _project_info(project: Any) -> dict[str, Any]:
    """The project fields crowdgate keeps, each checked so every later rescore of the project can read it."""
    if not isinstance(project, dict):
        return {}
    info = {k: project[k] for k in PROJECT_FIELDS if k in project}
    for name in ("title", "expert_instruction"):
        if info.get(name) is not None and not isinstance(info[name], str):
            raise PayloadError(f"project.{name} must be a string, got {_kind_of(info[name])}")
    config = info.get("label_config")
    if config is not None:
        if not isinstance(config, str):
            raise PayloadError(f"project.label_config must be an XML string, got {_kind_of(config)}")
        try:
            LabelConfig.parse(config)
        except LabelConfigError as exc:
            raise PayloadError(f"project.label_config: {_short(str(exc))}") from None
    if info.get("control_weights") is not None:
        _check_control_weights(info["control_weights"])
    maximum = info.get("maximum_annotations")
    if maximum is not None:
        _int(maximum, "project.maximum_annotations")
    return info


def _check_control_weights(weights: Any) -> None:
    """Label Studio's shape: ``{control: {"overall": w, "type": "Choices", "labels": {label: w}}}``, or a bare
    number per control; every weight a finite number >= 0 (scoring multiplies by it)."""
    if not isinstance(weights, dict):
        raise PayloadError(f"project.control_weights must be an object, got {_kind_of(weights)}")
    for control, entry in weights.items():
        where = f"project.control_weights[{control!r}]"
        if not isinstance(entry, dict):
            _weight(entry, where)
            continue
        if entry.get("overall") is not None:
            _weight(entry["overall"], f"{where}.overall")
        if entry.get("type") is not None and not isinstance(entry["type"], str):
            raise PayloadError(f"{where}.type must be a string, got {_kind_of(entry['type'])}")
        labels = entry.get("labels")
        if labels is not None:
            if not isinstance(labels, dict):
                raise PayloadError(f"{where}.labels must be an object, got {_kind_of(labels)}")
            for label, weight in labels.items():
                _weight(weight, f"{where}.labels[{label!r}]")


def _weight(value: Any, where: str) -> None:
    if not _is_number(value) or not 0 <= value <= 1e12:
        raise PayloadError(f"{where} must be a finite number >= 0, got {_kind_of(value)}")


def _lead_time(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or abs(value) > MAX_LEAD_TIME_S:
        raise PayloadError(f"{where} must be a number of seconds (at most {MAX_LEAD_TIME_S:.0e}) or null, "
                           f"got {_kind_of(value)}")
    return float(value)


def _is_number(value: Any) -> bool:
    """A JSON number that converts to a finite float (a 400-digit integer does not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{where} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_ID:
        raise PayloadError(f"{where} must be an integer between 0 and {MAX_ID}")
    return value


def _kind(types: tuple[type, ...]) -> str:
    return " or ".join({"str": "a string", "dict": "an object"}.get(t.__name__, t.__name__) for t in types)


def _kind_of(value: Any) -> str:
    """The JSON type of ``value`` for a message (never the value: it may be huge or hostile)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number" if _is_number(value) else "a number out of range"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _require_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{where} must be an object")
    return value


def _require_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise PayloadError(f"missing field {where!r} (a list)")
    return value
