"""The consensus export's content, built from what was read (pure: no I/O, no clock).

:func:`export_rows` turns a project's read state into one row per exported task, :func:`consensus_json` and
:func:`consensus_csv` render them as Label Studio's import JSON and the ``task,label,confidence,status,labels``
CSV, :func:`build_manifest` describes a snapshot, :func:`snapshot_name` names its folder and :func:`diff_rows`
compares two snapshots' CSV rows. ``crowdgate.export.data`` reads, ``crowdgate.export.files`` writes.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ml_backend.labeling import choice_region
from qa_hooks.scoring import categorical, label_of
from routing.data_manager import task_status

__all__ = ["AS_CHOICES", "CSV_COLUMNS", "FORMAT", "FORMAT_VERSION", "STATUSES", "CsvRow", "ExportRow",
           "ProjectState", "SnapshotDiff", "TaskState", "build_manifest", "consensus_csv", "consensus_json",
           "diff_rows", "export_rows", "manifest_notes", "parse_csv", "parse_statuses", "sha256", "snapshot_name"]

FORMAT, FORMAT_VERSION = "crowdgate-consensus-export", 1
CSV_COLUMNS = ("task", "label", "confidence", "status", "labels")
STATUSES = ("final", "consensus", "escalated", "needs more")  # the dashboard's words (routing.data_manager)
AS_CHOICES = ("predictions", "annotations")
# crowdgate's own fields in task data (Data Manager columns, exam offers): not the task's content.
OWN_DATA_PREFIX = "crowdgate_"


@dataclass(frozen=True)
class TaskState:
    """One task as crowdgate's Redis holds it."""

    task: int
    data: dict[str, Any] | None  # as the last webhook carried it; None: crowdgate stored none
    labels: int = 0
    agreement: float | None = None
    consensus: str | None = None  # categorical: the label; otherwise the medoid submission's unique id
    confidence: float | None = None  # the ledger's
    consensus_reached: bool = False
    route_status: str | None = None
    final_label: str | None = None
    refit_posterior: Sequence[float] | None = None  # the last refit's, in the order of ``ProjectState.classes``
    consensus_result: list[dict[str, Any]] | None = None  # non-categorical: the medoid's stored result
    gold: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class ProjectState:
    project: int
    title: str | None
    label_config: str | None
    expert_instruction: str | None  # None: no webhook carried it
    policy_text: str
    policy_origin: str
    fit_version: int | None = None
    classes: tuple[str, ...] = ()  # the refit's classes (the posteriors' order)
    tasks: list[TaskState] = field(default_factory=list)


@dataclass(frozen=True)
class ExportRow:
    task: int
    label: str
    confidence: float | None
    confidence_source: str  # "refit" or "ledger"
    status: str
    labels: int
    agreement: float | None
    result: list[dict[str, Any]]
    data: dict[str, Any]
    gold_label: str | None = None


@dataclass(frozen=True)
class CsvRow:
    task: int
    label: str
    confidence: float | None
    status: str
    labels: int


@dataclass(frozen=True)
class SnapshotDiff:
    changed: list[dict[str, Any]]
    added: list[dict[str, Any]]
    removed: list[dict[str, Any]]
    unchanged: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"summary": {"changed": len(self.changed), "added": len(self.added), "removed": len(self.removed),
                            "unchanged": self.unchanged},
                "notes": self.notes, "changed": self.changed, "added": self.added, "removed": self.removed}


def sha256(content: bytes | str) -> str:
    return hashlib.sha256(content.encode() if isinstance(content, str) else content).hexdigest()


def parse_statuses(text: str) -> tuple[str, ...]:
    """``final,consensus`` -> the statuses; ``needs-more`` and ``needs_more`` mean ``needs more``."""
    words = [w.strip().lower().replace("-", " ").replace("_", " ") for w in text.split(",") if w.strip()]
    unknown = [w for w in words if w not in STATUSES]
    if unknown or not words:
        raise ValueError(f"unknown status {', '.join(unknown) or '(none given)'}; choose from {', '.join(STATUSES)}")
    return tuple(dict.fromkeys(words))


def _plain_result(result: Sequence[Mapping[str, Any]]) -> str:
    """A non-categorical consensus as one comparable string: its regions' content, without Label Studio's ids."""
    regions = [{k: r[k] for k in ("from_name", "to_name", "type", "value") if k in r} for r in result]
    return json.dumps(sorted(regions, key=lambda r: json.dumps(r, sort_keys=True)), sort_keys=True,
                      separators=(",", ":"))


def _confidence(state: TaskState, label: str, classes: Sequence[str]) -> tuple[float | None, str]:
    if state.refit_posterior is not None and label in classes and len(state.refit_posterior) == len(classes):
        return float(state.refit_posterior[list(classes).index(label)]), "refit"
    return state.confidence, "ledger"


def _own_data(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not k.startswith(OWN_DATA_PREFIX)}


def export_rows(state: ProjectState, statuses: Iterable[str]) -> list[ExportRow]:
    """One row per task with a consensus whose status is one of ``statuses``, by task id.

    The label of a task routing made final with a label (an escalation's answer) is that label; otherwise the
    task's consensus. Categorical configs get the label as the control's choice region; other configs the stored
    result of the consensus (medoid) submission, as retention left it (the region keys scoring reads).
    """
    wanted = set(statuses)
    cat = categorical(state.label_config) if state.label_config else None
    classes = state.classes or (cat.classes if cat else ())
    rows = []
    for t in sorted(state.tasks, key=lambda s: s.task):
        status = task_status(t.route_status, t.consensus_reached)
        if status not in wanted or t.data is None:
            continue
        if cat is not None:
            final = t.final_label if t.route_status == "final" and t.final_label in cat.classes else None
            label = final or t.consensus
            if label not in cat.classes:
                continue
            # a stable region id (the SDK draws a random one), so the same consensus gives the same file bytes
            region = {**choice_region(state.label_config or "", cat.control, [label]), "id": f"cg{t.task}"}
            result = [region]
            gold_label = label_of(t.gold, cat.control) if t.gold else None
        else:
            if not t.consensus_result:
                continue
            result, label, gold_label = t.consensus_result, _plain_result(t.consensus_result), None
        confidence, source = _confidence(t, label, classes)
        rows.append(ExportRow(t.task, label, confidence, source, status, t.labels, t.agreement, result,
                              _own_data(t.data), gold_label))
    return rows


def consensus_json(rows: Sequence[ExportRow], as_: str, model_version: str) -> list[dict[str, Any]]:
    """Label Studio's import shape: ``[{"id", "data", "predictions" | "annotations": [{"result": ...}]}]``.

    As predictions (the default) the consensus stays apart from human annotations: Label Studio shows it as a
    pre-annotation and crowdgate never scores predictions. As annotations it becomes a submitted answer (never
    marked ``ground_truth``: that would make every task a gold task for crowdgate's scoring).
    """
    if as_ not in AS_CHOICES:
        raise ValueError(f"--as must be one of {', '.join(AS_CHOICES)}, got {as_!r}")
    out = []
    for row in rows:
        item: dict[str, Any] = {"result": row.result}
        if as_ == "predictions":
            item.update(model_version=model_version, score=row.confidence)
        else:
            item.update(ground_truth=False, was_cancelled=False)
        out.append({"id": row.task, "data": row.data, as_: [item]})
    return out


def _number(value: float | None) -> str:
    return "" if value is None else repr(round(value, 6))


def consensus_csv(rows: Sequence[ExportRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([row.task, row.label, _number(row.confidence), row.status, row.labels])
    return out.getvalue()


def parse_csv(text: str) -> dict[int, CsvRow]:
    """A snapshot's ``consensus.csv`` back as rows by task; ValueError naming the line when it is not one."""
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
        raise ValueError(f"header is {','.join(reader.fieldnames or [])!r}, expected {','.join(CSV_COLUMNS)!r}")
    rows = {}
    for line, raw in enumerate(reader, start=2):
        try:
            rows[int(raw["task"])] = CsvRow(int(raw["task"]), raw["label"],
                                            float(raw["confidence"]) if raw["confidence"] else None,
                                            raw["status"], int(raw["labels"]))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"line {line}: {exc}") from None
    return rows


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "none"


def snapshot_name(created_at: dt.datetime, config_sha: str, guideline: str | None, policy_sha: str) -> str:
    """``<UTC time>-c<config sha256[:12]>-g<guideline version>-p<policy sha256[:8]>``; the fixed-width time
    first, so names sort by creation (``20261207T155301.123456Z-c1a2b3c4d5e6f-g3-p9f8e7d6c``)."""
    when = created_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{when}-c{config_sha[:12]}-g{_slug(guideline) if guideline else 'none'}-p{policy_sha[:8]}"


def _metrics(state: ProjectState, rows: Sequence[ExportRow], categorical_config: bool) -> dict[str, Any]:
    agreements = [r.agreement for r in rows if r.agreement is not None and r.labels >= 2]
    accepted = sum(1 for t in state.tasks if task_status(t.route_status, t.consensus_reached) in ("final", "consensus"))
    gold = [r for r in rows if r.gold_label is not None]
    return {
        "mean_agreement": statistics.fmean(agreements) if agreements else None,
        "mean_agreement_tasks": len(agreements),
        "consensus_share": accepted / len(state.tasks) if state.tasks else None,
        "gold_tasks": len(gold),
        "gold_accuracy": sum(r.label == r.gold_label for r in gold) / len(gold) if gold else None,
        "gold_accuracy_reason": None if gold else (
            "no exported task has a gold answer" if categorical_config
            else "gold is compared by label, which only a single-choice config has"),
    }


def build_manifest(state: ProjectState, rows: Sequence[ExportRow], *, created_at: dt.datetime, version: str,
                   statuses: Sequence[str], as_: str, files: Mapping[str, bytes],
                   guideline: str | None) -> dict[str, Any]:
    """What a snapshot holds and where it came from (README, *Consensus export*, lists every field)."""
    cat = categorical(state.label_config) if state.label_config else None
    by_status = Counter(r.status for r in rows)
    sources = [r.confidence_source for r in rows]
    if state.expert_instruction is None:
        guideline_reason = "no webhook crowdgate received carried the project's expert_instruction"
    elif guideline is None:
        guideline_reason = "the project's expert_instruction has no class=\"guideline-version\" element"
    else:
        guideline_reason = None
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "project": state.project, "title": state.title,
        "created_at": created_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "crowdgate_version": version,
        "label_config": {"sha256": sha256(state.label_config or ""), "categorical": cat is not None,
                         "control": cat.control if cat else None, "classes": list(cat.classes) if cat else None},
        "guideline": {"version": guideline,
                      "sha256": None if state.expert_instruction is None else sha256(state.expert_instruction),
                      "reason": guideline_reason},
        "policy": {"sha256": sha256(state.policy_text), "version": _policy_version(state.policy_text),
                   "origin": state.policy_origin},
        "fit_version": state.fit_version,
        "exported_as": as_, "statuses": list(statuses),
        "confidence": {"refit": sources.count("refit"), "ledger": sources.count("ledger")},
        "counts": {"tasks_known": len(state.tasks), "tasks_exported": len(rows),
                   "by_status": dict(sorted(by_status.items())),
                   "labels": dict(sorted(Counter(r.label for r in rows).items())),
                   "without_data": sum(1 for t in state.tasks if t.data is None)},
        "metrics": _metrics(state, rows, cat is not None),
        "read_from": {"redis": True, "label_studio": False,
                      "notes": ["task data is as the last webhook carried it, without crowdgate_* fields; tasks no "
                                "annotation event named are unknown to crowdgate and not exported",
                                *([] if cat else ["not a single-choice config: each task's result is its consensus "
                                                  "(medoid) submission's, trimmed to the keys scoring reads once "
                                                  "retention ran"])]},
        "files": {name: {"sha256": sha256(content), "bytes": len(content)} for name, content in sorted(files.items())},
    }


def _policy_version(text: str) -> int | None:
    """The policy file's own ``version:`` (the schema version, 1 today); None when it states none."""
    found = re.search(r"^version:\s*([0-9]+)\s*$", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def diff_rows(a: Mapping[int, CsvRow], b: Mapping[int, CsvRow]) -> SnapshotDiff:
    """Tasks whose label changed from ``a`` to ``b``, tasks only ``b`` has (added) and only ``a`` has (removed)."""
    changed = [{"task": t, "from": a[t].label, "to": b[t].label, "from_status": a[t].status,
                "to_status": b[t].status, "from_confidence": a[t].confidence, "to_confidence": b[t].confidence}
               for t in sorted(a.keys() & b.keys()) if a[t].label != b[t].label]
    added = [{"task": t, "label": b[t].label, "status": b[t].status} for t in sorted(b.keys() - a.keys())]
    removed = [{"task": t, "label": a[t].label, "status": a[t].status} for t in sorted(a.keys() - b.keys())]
    return SnapshotDiff(changed, added, removed, len(a.keys() & b.keys()) - len(changed))


def manifest_notes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What differs between two snapshots' sources, beside their labels (a diff across projects says so)."""
    notes = []
    if a.get("project") != b.get("project"):
        notes.append(f"different projects: {a.get('project')} and {b.get('project')}")
    for what in ("label_config", "guideline", "policy"):
        key = "version" if what == "guideline" else "sha256"
        if (a.get(what) or {}).get(key) != (b.get(what) or {}).get(key):
            notes.append(f"{what.replace('_', ' ')} changed: {(a.get(what) or {}).get(key)} -> "
                         f"{(b.get(what) or {}).get(key)}")
    if a.get("statuses") != b.get("statuses"):
        notes.append(f"exported statuses differ: {a.get('statuses')} and {b.get('statuses')}")
    return notes
