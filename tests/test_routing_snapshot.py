"""Routing's batched reads (routing.snapshot) decide exactly what its per-task reads decide (real Redis)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import routing.router
from qa_hooks.events import parse_body
from qa_hooks.jobs import process_event
from routing.router import after_scoring
from routing.state import RoutingState
from tests.conftest import fixture_json
from tests.state_isolation import use_settings

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
