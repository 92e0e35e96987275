"""The append-only audit log (routing/audit.py) and its console script."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from routing.audit import AuditLog, to_csv, to_jsonl
from routing.cli import audit_main


@pytest.fixture
def audit(redis_conn) -> AuditLog:
    log = AuditLog(redis_conn, "t")
    log.record("decision", "task:escalate", 1, 10, [3, 2], "agreement 0.50 < 0.6", {"agreement": 0.5}, ts=100.0)
    log.record("action", "escalate", 1, 10, [4], "to tier2", {"tier_project": 7}, job="j1", ts=101.0)
    log.record("decision", "annotator:qualify", 1, None, [5], "passed", {"exam_score": np.float64(1.0)}, ts=102.0)
    log.record("action", "escalate", 2, 10, [4], "other project", ts=103.0)
    log.record("error", "write_back", 1, 11, [], "LabelStudioError: 500", {"nan": float("nan")}, ts=104.0)
    return log


def test_query_by_project_task_annotator_kind_and_time(audit) -> None:
    assert len(audit) == 5
    assert [e.action for e in audit.query(project=1, task=10)] == ["task:escalate", "escalate"]
    assert [e.project for e in audit.query(annotator=4)] == [1, 2]
    assert [e.action for e in audit.query(project=1, annotator=4)] == ["escalate"]
    assert [e.ts for e in audit.query(project=1, kind="decision")] == [100.0, 102.0]
    assert [e.ts for e in audit.query(since=101.5, until=103.5)] == [102.0, 103.0]
    assert [e.ts for e in audit.query(action="escalate")] == [101.0, 103.0]
    assert audit.query(project=3) == []
    with pytest.raises(ValueError, match="needs its project"):
        audit.query(task=10)


def test_entries_keep_everything_and_in_order(audit) -> None:
    first, second = audit.query(project=1, task=10)
    assert first.annotators == (2, 3) and first.evidence == {"agreement": 0.5} and first.reason.startswith("agree")
    assert second.job == "j1" and second.id > first.id
    assert audit.query(annotator=5)[0].evidence == {"exam_score": 1.0}  # numpy made plain
    assert audit.query(kind="error")[0].evidence == {"nan": None}  # strict JSON
    assert audit.query(project=1)[0].to_dict()["annotators"] == [2, 3]


def test_an_unknown_kind_is_refused(audit) -> None:
    with pytest.raises(ValueError, match="audit kind"):
        audit.record("whatever", "x", 1)


def test_the_scan_pages_through_a_long_log(redis_conn) -> None:
    log = AuditLog(redis_conn, "t")
    for i in range(25):
        log.record("action", "x", None, ts=float(i))
    assert [e.ts for e in log._scan(batch=10)] == [float(i) for i in range(25)]


def test_export_as_json_lines_and_csv(audit) -> None:
    out = io.StringIO()
    assert to_jsonl(audit.query(project=1, task=10), out) == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [x["action"] for x in lines] == ["task:escalate", "escalate"] and lines[0]["annotators"] == [2, 3]
    rows = list(csv.DictReader(io.StringIO(to_csv(audit.query(project=1)))))
    assert [r["action"] for r in rows] == ["task:escalate", "escalate", "annotator:qualify", "write_back"]
    assert rows[0]["annotators"] == "2;3" and json.loads(rows[0]["evidence"]) == {"agreement": 0.5}


def test_console_script(audit, redis_service, tmp_path, capsys) -> None:
    common = ["--redis-url", redis_service.url, "--prefix", "t"]
    assert audit_main([*common, "--project", "1", "--task", "10"]) == 0
    assert [json.loads(x)["action"] for x in capsys.readouterr().out.splitlines()] == ["task:escalate", "escalate"]
    target = tmp_path / "audit.csv"
    assert audit_main([*common, "--annotator", "4", "--format", "csv", "--output", str(target)]) == 0
    assert [r["project"] for r in csv.DictReader(target.open())] == ["1", "2"]
    assert audit_main([*common, "--since", "1970-01-01T00:01:42+00:00", "--kind", "action"]) == 0
    assert [json.loads(x)["ts"] for x in capsys.readouterr().out.splitlines()] == [103.0]
    with pytest.raises(SystemExit):
        audit_main([*common, "--task", "10"])
