"""Append-only audit log of every routing decision and action, in Redis.

Every entry says what was decided or done (``kind`` + ``action``), about which project, task and annotators, why
(``reason``) and on what numbers (``evidence``), when (``ts``, Unix seconds) and by which job. Entries go to one
Redis stream whose ids order them in time; lists of stream ids index them by project, task and
annotator, written in the same Lua call as the entry, so an index never points at nothing and nothing is
indexed twice. Nothing here ever edits or deletes an entry.

The keys (the stream and its per-project, per-task and per-annotator indexes) are listed in :mod:`core.keys`,
which builds every one of them.

``crowdgate-audit`` (:func:`routing.cli.audit_main`) queries and exports it as JSON lines or CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import redis

from core.keys import Keys

__all__ = ["KINDS", "AuditEntry", "AuditLog", "to_csv", "to_jsonl"]

# decision: what the policy decided; action: what a job did in Label Studio or Redis; flag: work left out;
# alert: needs a human; error: a job failed (it is retried or kept in RQ's failed registry).
KINDS = ("decision", "action", "flag", "alert", "error")

_APPEND = """
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV))
for i = 2, #KEYS do redis.call('RPUSH', KEYS[i], id) end
return id
"""

_FIELDS = ("ts", "kind", "action", "project", "task", "annotators", "reason", "evidence", "job")
CSV_COLUMNS = ("id", *_FIELDS)


def _jsonable(value: Any) -> Any:
    """Evidence may hold numpy numbers, enums, tuples, NaN: make it plain, strict JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy scalar
        return _jsonable(value.item())
    return str(value)


@dataclass(frozen=True)
class AuditEntry:
    kind: str
    action: str
    project: int | None
    task: int | None = None
    annotators: tuple[int, ...] = ()
    reason: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    job: str = ""
    ts: float = 0.0
    id: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["annotators"] = list(self.annotators)
        return data


class AuditLog:
    def __init__(self, connection: redis.Redis, prefix: str = "cg") -> None:
        self.redis = connection
        self.prefix = prefix
        self.keys = Keys(prefix)
        self._append = connection.register_script(_APPEND)

    @property
    def stream(self) -> str:
        return self.keys.audit_stream()

    def record(
        self,
        kind: str,
        action: str,
        project: int | None,
        task: int | None = None,
        annotators: Iterable[int] = (),
        reason: str = "",
        evidence: dict[str, Any] | None = None,
        job: str = "",
        ts: float | None = None,
    ) -> str:
        """Append one entry; returns its stream id."""
        keys, args = self._entry(kind, action, project, task, annotators, reason, evidence, job, ts)
        return self._append(keys=keys, args=args).decode()

    def queue_record(self, pipe: redis.client.Pipeline, kind: str, action: str, project: int | None,
                     task: int | None = None, annotators: Iterable[int] = (), reason: str = "",
                     evidence: dict[str, Any] | None = None, job: str = "", ts: float | None = None) -> None:
        """:meth:`record` queued on ``pipe`` (its reply is the entry's stream id): entries of one pipeline are
        appended in the order queued, each in its own Lua call, as :meth:`record` appends them."""
        keys, args = self._entry(kind, action, project, task, annotators, reason, evidence, job, ts)
        self._append(keys=keys, args=args, client=pipe)

    def _entry(self, kind: str, action: str, project: int | None, task: int | None, annotators: Iterable[int],
               reason: str, evidence: dict[str, Any] | None, job: str,
               ts: float | None) -> tuple[list[str], list[str]]:
        if kind not in KINDS:
            raise ValueError(f"audit kind must be one of {KINDS}, got {kind!r}")
        people = sorted({int(a) for a in annotators})
        values = {
            "ts": repr(time.time() if ts is None else float(ts)),
            "kind": kind,
            "action": str(action),
            "project": "" if project is None else str(int(project)),
            "task": "" if task is None else str(int(task)),
            "annotators": json.dumps(people),
            "reason": reason,
            "evidence": json.dumps(_jsonable(evidence or {}), separators=(",", ":"), allow_nan=False),
            "job": job,
        }
        keys = [self.stream]
        if project is not None:
            keys.append(self.keys.audit_project(project))
            if task is not None:
                keys.append(self.keys.audit_task(project, task))
        keys += [self.keys.audit_annotator(a) for a in people]
        return keys, [item for pair in values.items() for item in pair]

    # -- reads ------------------------------------------------------------------------------------------

    @staticmethod
    def _parse(entry_id: bytes | str, raw: dict[bytes, bytes]) -> AuditEntry:
        get = {k.decode(): v.decode() for k, v in raw.items()}
        return AuditEntry(
            id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
            ts=float(get["ts"]),
            kind=get["kind"],
            action=get["action"],
            project=int(get["project"]) if get.get("project") else None,
            task=int(get["task"]) if get.get("task") else None,
            annotators=tuple(json.loads(get.get("annotators") or "[]")),
            reason=get.get("reason", ""),
            evidence=json.loads(get.get("evidence") or "{}"),
            job=get.get("job", ""),
        )

    def _by_ids(self, ids: Sequence[bytes]) -> list[AuditEntry]:
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(self.stream, entry_id, entry_id)
        return [self._parse(*found[0]) for found in pipe.execute() if found]

    def _scan(self, batch: int = 1000) -> Iterator[AuditEntry]:
        start = "-"
        while True:
            chunk = self.redis.xrange(self.stream, start, "+", count=batch)
            for entry_id, raw in chunk:
                yield self._parse(entry_id, raw)
            if len(chunk) < batch:
                return
            start = "(" + chunk[-1][0].decode()

    def after(self, entry_id: str, count: int = 1000) -> list[AuditEntry]:
        """Up to ``count`` entries written after the one with stream id ``entry_id`` (``"0-0"``: from the first),
        oldest first: how a reader keeping its own cursor (:mod:`crowdgate.alerts`) walks the log."""
        return [self._parse(i, raw) for i, raw in self.redis.xrange(self.stream, "(" + entry_id, "+", count=count)]

    def query(
        self,
        project: int | None = None,
        task: int | None = None,
        annotator: int | None = None,
        kind: str | None = None,
        action: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[AuditEntry]:
        """Entries matching every given filter, oldest first. ``task`` needs ``project``."""
        if task is not None and project is None:
            raise ValueError("a task filter needs its project (task ids are per project)")
        # Walk the narrowest index; check the other filters on the entries themselves.
        if task is not None:
            entries = self._by_ids(self.redis.lrange(self.keys.audit_task(project, task), 0, -1))  # type: ignore[arg-type]
        elif annotator is not None:
            entries = self._by_ids(self.redis.lrange(self.keys.audit_annotator(annotator), 0, -1))
        elif project is not None:
            entries = self._by_ids(self.redis.lrange(self.keys.audit_project(project), 0, -1))
        else:
            entries = list(self._scan())
        out = []
        for e in entries:
            if project is not None and e.project != project:
                continue
            if annotator is not None and annotator not in e.annotators:
                continue
            if kind is not None and e.kind != kind:
                continue
            if action is not None and e.action != action:
                continue
            if since is not None and e.ts < since:
                continue
            if until is not None and e.ts > until:
                continue
            out.append(e)
        return out

    def __len__(self) -> int:
        return int(self.redis.xlen(self.stream))


def to_jsonl(entries: Iterable[AuditEntry], out: TextIO) -> int:
    n = 0
    for e in entries:
        out.write(json.dumps(e.to_dict(), separators=(",", ":")) + "\n")
        n += 1
    return n


def to_csv(entries: Iterable[AuditEntry], out: TextIO | None = None) -> str:
    """CSV with one row per entry; ``annotators`` is ``;``-joined and ``evidence`` a JSON cell."""
    buffer = out or io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        writer.writerow([
            e.id, repr(e.ts), e.kind, e.action, "" if e.project is None else e.project,
            "" if e.task is None else e.task, ";".join(str(a) for a in e.annotators), e.reason,
            json.dumps(e.evidence, separators=(",", ":")), e.job,
        ])
    return buffer.getvalue() if out is None else ""
