"""A job that fails anywhere after its writes is finished by its retry (real Redis, a real RQ worker)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rq import Queue, Retry, SimpleWorker

from qa_hooks.events import parse_body
from qa_hooks.jobs import process_event
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore
from tests.conftest import fixture_json

PROJECT, TASK = 2, 6


def _event() -> dict[str, Any]:
    return parse_body(json.dumps(fixture_json("webhook_annotation_created.json")).encode()).to_dict()


def test_scoring_that_failed_after_the_writes_is_done_by_the_retry(redis_conn, monkeypatch):
    calls = {"n": 0}
    real = Ledger.rescore

    def fails_once(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("Redis went away mid-job")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, "rescore", fails_once)
    with pytest.raises(ConnectionError):
        process_event(_event(), "t", redis_conn)
    store = SubmissionStore(redis_conn, "t")
    assert list(store.unscored(PROJECT)) == [TASK]  # recorded, not scored: the mark says so
    again = process_event(_event(), "t", redis_conn)
    assert again.get("stale") == 1  # the write is a no-op now ...
    assert again["tasks"] == [TASK]  # ... yet the task is scored
    assert Ledger(redis_conn, "t").task_score(PROJECT, TASK)
    assert store.unscored(PROJECT) == {}


def test_routing_failure_keeps_the_mark_until_routing_succeeds(redis_conn):
    routed: list[list[int]] = []

    def route(result: dict[str, Any]) -> dict[str, Any]:
        routed.append(result["tasks"])
        if len(routed) == 1:
            raise RuntimeError("Label Studio down")
        return result

    with pytest.raises(RuntimeError):
        process_event(_event(), "t", redis_conn, route=route)
    process_event(_event(), "t", redis_conn, route=route)
    assert routed == [[TASK], [TASK]]
    assert SubmissionStore(redis_conn, "t").unscored(PROJECT) == {}
    process_event(_event(), "t", redis_conn, route=route)  # a plain duplicate now: nothing left to do
    assert routed[-1] == []


def test_a_later_write_keeps_its_mark(redis_conn):
    store = SubmissionStore(redis_conn, "t")
    process_event(_event(), "t", redis_conn, route=lambda r: r)
    seen = {TASK: 1.0}
    redis_conn.zadd(f"t:p:{PROJECT}:unscored", {TASK: 5})  # a write after the one this scoring saw
    assert store.mark_scored(PROJECT, seen) == 0
    assert list(store.unscored(PROJECT)) == [TASK]


FAILURES_KEY = "t:test:route-failures"


def flaky_job(event: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The event job with a routing step that fails on its first run."""
    from rq import get_current_job

    connection = get_current_job().connection

    def route(result: dict[str, Any]) -> dict[str, Any]:
        if connection.incr(FAILURES_KEY) == 1:
            raise RuntimeError("routing failed once")
        return result

    return process_event(event, prefix, connection, route=route)


def test_rq_retry_finishes_a_job_that_failed_after_writing(redis_conn):
    queue = Queue("t-events", connection=redis_conn)
    job = queue.enqueue(flaky_job, _event(), "t", retry=Retry(max=2))
    SimpleWorker([queue], connection=redis_conn).work(burst=True)
    job.refresh()
    assert job.get_status() == "finished"
    assert job.return_value()["tasks"] == [TASK]
    assert Ledger(redis_conn, "t").task_score(PROJECT, TASK)
    assert SubmissionStore(redis_conn, "t").unscored(PROJECT) == {}
