"""Routing's batched reads (routing.snapshot) decide exactly what its per-task reads decide (real Redis)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from rq.job import Job

import routing.router
from core.keys import Keys
from qa_hooks.events import parse_body
from qa_hooks.jobs import process_event
from routing.audit import AuditLog
from routing.pausing import pause
from routing.router import after_scoring
from routing.state import RoutingState
from tests.conftest import fixture_json
from tests.state_isolation import use_settings
from tests.test_routing_jobs import POLICY

PROJECT = 2


def _events() -> list[dict[str, Any]]:
    """Twelve tasks with one to four labels each, agreeing and not, two of them gold, from five annotators."""
    template = fixture_json("webhook_annotation_created.json")
    events = []
    for i in range(30):
        body = json.loads(json.dumps(template))
        task = 1 + i % 12
        body["annotation"].update(id=100 + i, unique_id=str(uuid.UUID(int=i)), task=task, completed_by=1 + i % 5,
                                  result=[{**body["annotation"]["result"][0],
                                           "value": {"choices": [("Positive", "Negative", "Neutral")[i % 7 % 3]]}}])
        body["task"] = {**body["task"], "id": task, "meta": {"gold": "Positive"} if task in (3, 7) else {}}
        events.append(parse_body(json.dumps(body).encode()).to_dict())
    return events


def _decisions(summary: dict[str, Any], prefix: str) -> list[str]:
    return sorted(json.dumps(d, sort_keys=True, default=str).replace(prefix, "P") for d in summary["decisions"])


def test_batched_reads_decide_as_the_per_task_reads_do(redis_conn, monkeypatch):
    use_settings(monkeypatch, route_unbound=True)  # act on the default policy: every decision is taken
    results = {}
    for prefix in ("batched", "single"):
        RoutingState(redis_conn, prefix).flag_annotator(PROJECT, 4, "flagged by hand")
        for event in _events():
            process_event(event, prefix, redis_conn)
    tasks, annotators = list(range(1, 13)), list(range(1, 6))
    scored = {"project": PROJECT, "tasks": tasks, "annotators": annotators}
    snapshots = []

    def read_tasks(*args):
        snapshots.append(real_read_tasks(*args))
        return snapshots[-1]

    real_read_tasks = routing.router.read_tasks
    monkeypatch.setattr(routing.router, "read_tasks", read_tasks)
    results["batched"] = after_scoring(scored, "batched", redis_conn)
    assert len(snapshots) == 1 and sorted(snapshots[0].tasks) == tasks  # every task came from the snapshot
    monkeypatch.setattr(routing.router, "_snapshot", lambda *args: None)  # the per-task read path
    results["single"] = after_scoring(scored, "single", redis_conn)
    assert len(results["batched"]["decisions"]) >= len(tasks)
    assert _decisions(results["batched"], "batched") == _decisions(results["single"], "single")
    assert [j.replace("batched", "P") for j in results["batched"]["enqueued"]] == \
        [j.replace("single", "P") for j in results["single"]["enqueued"]]


GOLD = {3: "Negative", 5: "Positive", 7: "Positive", 8: "Positive", 11: "Neutral"}


def _exam_events() -> list[dict[str, Any]]:
    """Eight annotators over twelve tasks, five of them gold, so the exam tier has gold answers to count."""
    template = fixture_json("webhook_annotation_created.json")
    events = []
    for i in range(48):
        body = json.loads(json.dumps(template))
        task, annotator = 1 + i % 12, 1 + (i + i // 12) % 8  # nobody twice on a task
        body["annotation"].update(id=500 + i, unique_id=str(uuid.UUID(int=1000 + i)), task=task,
                                  completed_by=annotator, was_cancelled=i == 13,
                                  result=[{**body["annotation"]["result"][0],
                                           "value": {"choices": [("Positive", "Negative", "Neutral")[i % 5 % 3]]}}])
        body["task"] = {**body["task"], "id": task, "meta": {"gold": GOLD[task]} if task in GOLD else {}}
        events.append(parse_body(json.dumps(body).encode()).to_dict())
    return events


def _audit(connection, prefix: str) -> list[tuple]:
    return [(e.kind, e.action, e.task, e.annotators, e.reason, json.dumps(e.evidence, sort_keys=True))
            for e in AuditLog(connection, prefix).query(project=PROJECT)]


def _jobs(connection, summary: dict[str, Any], prefix: str) -> list[str]:
    """The enqueued jobs with their arguments, the prefix written out of both."""
    return [json.dumps([j, Job.fetch(j, connection=connection).kwargs], sort_keys=True, default=str)
            .replace(prefix, "P") for j in summary["enqueued"]]


def test_batched_annotator_reads_decide_audit_and_enqueue_as_one_at_a_time(redis_conn, monkeypatch):
    """An exam policy (qualification, tier1, tier2), annotators in every tier, one flagged by hand, one paused,
    one flagged by the scoring signals, one who spent a failed attempt: the batched reads (the call's prelude,
    routing.snapshot.read_annotators, read_tasks) decide, audit and enqueue exactly as the one-at-a-time reads."""
    annotators = list(range(1, 10))  # 9 has no submission at all
    for prefix in ("batched", "single"):
        state = RoutingState(redis_conn, prefix)
        state.set_policy(PROJECT, POLICY)
        for user, tier in {1: "tier1", 2: "tier1", 3: "tier2", 4: "tier1"}.items():
            state.set_tier(PROJECT, user, tier)
        state.flag_annotator(PROJECT, 4, "flagged by hand")
        pause(redis_conn, PROJECT, 5, "copying answers", requeue_tasks=False, prefix=prefix)
        redis_conn.hset(Keys(prefix).annotator_flags(PROJECT), 6,
                        json.dumps([{"name": "too_fast", "reason": "median lead time 0.4 s", "evidence": {}}]))
        for event in _exam_events():
            process_event(event, prefix, redis_conn)
        state.change_tier(PROJECT, 7, 0, "qualification", failed_exam=True, exam_tasks=[7])  # gold 7 spent
    scored = {"project": PROJECT, "tasks": list(range(1, 13)), "annotators": annotators}
    snapshots = []

    def read_annotators(*args):
        snapshots.append(real_read_annotators(*args))
        return snapshots[-1]

    real_read_annotators = routing.router.read_annotators
    monkeypatch.setattr(routing.router, "read_annotators", read_annotators)
    audit_before = {p: len(_audit(redis_conn, p)) for p in ("batched", "single")}
    results = {"batched": after_scoring(scored, "batched", redis_conn)}
    assert len(snapshots) == 1 and sorted(snapshots[0]) == annotators  # every annotator came from the snapshot
    pre = snapshots[0]
    assert pre[4].record.flagged == "flagged by hand" and pre[5].record.paused and pre[6].record.flagged
    assert pre[8].exam is not None and pre[8].exam[0] > 0 and pre[1].exam is None  # the exam tier's counts
    # The one-at-a-time path: the prelude, every annotator and every task read on their own.
    monkeypatch.setattr(routing.router, "_call_reads", lambda *args: None)
    monkeypatch.setattr(routing.router, "_annotator_snapshot", lambda *args: {})
    monkeypatch.setattr(routing.router, "_snapshot", lambda *args: None)
    results["single"] = after_scoring(scored, "single", redis_conn)
    assert not results["batched"]["errors"] and not results["single"]["errors"]
    assert len([d for d in results["batched"]["decisions"] if "annotator" in d]) == len(annotators)
    assert {d["action"] for d in results["batched"]["decisions"] if "annotator" in d} - {"none"}  # some act
    assert _decisions(results["batched"], "batched") == _decisions(results["single"], "single")
    assert _audit(redis_conn, "batched")[audit_before["batched"]:] == \
        _audit(redis_conn, "single")[audit_before["single"]:]
    assert _jobs(redis_conn, results["batched"], "batched") == _jobs(redis_conn, results["single"], "single")


def test_a_failed_annotator_snapshot_falls_back_to_one_at_a_time(redis_conn, monkeypatch):
    """Failing batched reads (prelude, annotators) leave each read to itself: decisions taken, no error."""
    use_settings(monkeypatch, route_unbound=True)
    for event in _exam_events():
        process_event(event, "fallback", redis_conn)

    def broken(*args):
        raise ConnectionError("pipeline lost")

    monkeypatch.setattr(routing.router, "read_annotators", broken)
    monkeypatch.setattr(routing.router, "touch_and_read_call", broken)
    summary = after_scoring({"project": PROJECT, "tasks": [], "annotators": [1, 2, 3]}, "fallback", redis_conn)
    assert not summary["errors"]
    assert [d["annotator"] for d in summary["decisions"]] == [1, 2, 3]
    assert redis_conn.zmscore(Keys("fallback").last_seen(), ["1", "2", "3"]) == [pytest.approx(time.time(), abs=60)] * 3
