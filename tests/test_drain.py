"""The stream inbox's batch drain scores every event exactly once (real Redis, real RQ workers, real processes)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from rq import Queue, Retry, SimpleWorker
from rq.registry import FailedJobRegistry

import qa_hooks.inbox
from crowdgate.pipeline import handle_event
from qa_hooks.events import parse_body
from qa_hooks.inbox import Inbox, InboxDrain
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore
from scripts.services import start_web, start_worker
from tests.conftest import fixture_json
from tests.state_isolation import use_settings

PROJECT, QUEUE = 2, "t-events"
BAD_TASK = 13


def _events(n: int, tasks: int = 12, annotators: int = 5) -> list[dict[str, Any]]:
    template = fixture_json("webhook_annotation_created.json")
    events = []
    for i in range(n):
        body = json.loads(json.dumps(template))
        body["annotation"].update(id=100 + i, unique_id=str(uuid.uuid4()), task=1 + i % tasks,
                                  completed_by=1 + i % annotators,
                                  result=[{**body["annotation"]["result"][0],
                                           "value": {"choices": [("Positive", "Negative")[i % 3 == 0]]}}])
        body["task"]["id"] = 1 + i % tasks
        events.append(body)
    return events


# A duplicate in the same batch as a later write of its task rescores that task once more, with the newer
# reliabilities: a refresh, not a second count, so the posterior and the version may move; the rest must not.
REFRESHED = ("confidence", "posterior", "version")


def _state(connection, prefix: str, tasks: list[int], annotators: list[int]) -> dict[str, Any]:
    ledger = Ledger(connection, prefix)
    rels = ledger.reliabilities(PROJECT, annotators)
    return {"tasks": {t: {k: v for k, v in ledger.task_score(PROJECT, t).items() if k not in REFRESHED}
                      for t in tasks},
            # counted evidence is exact (a second count would show here); the mean moves with a refresh only
            "annotators": {a: (r.evidence, r.gold_n, r.peer_n, r.peer_agreement) for a, r in rels.items()},
            "means": {a: r.mean for a, r in rels.items()},
            "summary": SubmissionStore(connection, prefix).summary(PROJECT)}


@pytest.fixture
def stream_settings(monkeypatch, redis_service):
    return use_settings(monkeypatch, redis_url=redis_service.url, inbox="stream", events_queue=QUEUE)


def test_batch_drain_scores_every_event_once_with_a_failing_one_and_a_duplicate(redis_conn, stream_settings,
                                                                                  monkeypatch):
    events = _events(40)
    bad = _events(1)[0]
    bad["annotation"].update(task=BAD_TASK, unique_id=str(uuid.uuid4()), id=999)
    bad["task"]["id"] = BAD_TASK
    real = Ledger.rescore

    def fails_on_the_bad_task(self, project, task, *args, **kwargs):
        if task == BAD_TASK:
            raise ValueError("a region this version cannot score")
        return real(self, project, task, *args, **kwargs)

    monkeypatch.setattr(Ledger, "rescore", fails_on_the_bad_task)
    monkeypatch.setattr(qa_hooks.inbox, "RETRY", Retry(max=1))  # no backoff in a test: fail twice, then park
    inbox = Inbox(redis_conn, QUEUE, "t", 3600, job=handle_event)
    assert inbox.mode == "stream"
    bodies = [*events[:20], bad, *events[20:]]
    assert all(inbox.put(parse_body(json.dumps(b).encode()))[0] == "queued" for b in bodies)
    assert inbox.put(parse_body(json.dumps(events[3]).encode())) == ("duplicate", None)  # a redelivery
    # The same event twice in the stream (a claimed batch its slow owner finished too) still counts once.
    parsed = parse_body(json.dumps(events[7]).encode()).to_dict()
    redis_conn.xadd("t:inbox:" + QUEUE, qa_hooks.inbox.entry(parsed, "t", handle_event, "again"))

    drain = InboxDrain(redis_conn, QUEUE, "t", batch=16)
    drain.ensure_group()
    assert drain.run(threading.Event(), burst=True) == len(bodies) + 1
    assert drain.pending() == 0
    # the failing event is an RQ job now; RQ retries it, then keeps it in the failed registry
    queue = Queue(QUEUE, connection=redis_conn)
    [handed] = queue.get_jobs()
    assert handed.meta["inbox_reason"].startswith("ValueError")
    SimpleWorker([queue], connection=redis_conn).work(burst=True)
    assert FailedJobRegistry(queue=queue).get_job_ids() == [handed.id]
    store = SubmissionStore(redis_conn, "t")
    assert list(store.unscored(PROJECT)) == [BAD_TASK]  # recorded, not scored: the mark says so

    # Everything else equals the one-event-at-a-time path on a fresh prefix.
    for body in events:
        handle_event(parse_body(json.dumps(body).encode()).to_dict(), "u", redis_conn)
    tasks, annotators = list(range(1, 13)), list(range(1, 6))
    drained, alone = _state(redis_conn, "t", tasks, annotators), _state(redis_conn, "u", tasks, annotators)
    assert drained["tasks"] == alone["tasks"] and all(drained["tasks"].values())
    assert drained["annotators"] == alone["annotators"]
    assert drained["means"] == pytest.approx(alone["means"], abs=0.01)
    assert drained["summary"]["submissions"] == len(events) + 1  # the bad one is recorded, never twice

    # After the fix an admin requeues the parked job: the retry scores what its first runs left marked.
    monkeypatch.setattr(Ledger, "rescore", real)
    FailedJobRegistry(queue=queue).requeue(handed.id)
    SimpleWorker([queue], connection=redis_conn).work(burst=True)
    assert store.unscored(PROJECT) == {}
    assert Ledger(redis_conn, "t").task_score(PROJECT, BAD_TASK)


def test_routing_failure_in_a_batch_fails_only_its_event(redis_conn, stream_settings, monkeypatch):
    import crowdgate.pipeline

    real = crowdgate.pipeline.after_scoring

    def fails_for_task_5(result, prefix, connection):
        if 5 in (result.get("tasks") or []):
            raise RuntimeError("Label Studio down for task 5")
        return real(result, prefix, connection)

    monkeypatch.setattr(crowdgate.pipeline, "after_scoring", fails_for_task_5)
    events = [parse_body(json.dumps(b).encode()).to_dict() for b in _events(12)]
    outcomes = crowdgate.pipeline.handle_events(events, "t", redis_conn)
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, Exception)]
    assert failed == [4]  # task 5 is the fifth event's
    assert list(SubmissionStore(redis_conn, "t").unscored(PROJECT)) == [5]
    assert all("routing" in o for i, o in enumerate(outcomes) if i != 4)  # the others were routed, alone


def test_an_abandoned_batch_is_handed_to_rq_and_scored_once(redis_conn, stream_settings):
    inbox = Inbox(redis_conn, QUEUE, "t", 3600, job=handle_event)
    for body in _events(6):
        inbox.put(parse_body(json.dumps(body).encode()))
    dead = InboxDrain(redis_conn, QUEUE, "t", batch=4, consumer="died-mid-batch")
    dead.ensure_group()
    assert len(dead._read(None)) == 4  # read, never acknowledged: the worker was killed
    alive = InboxDrain(redis_conn, QUEUE, "t", batch=4, claim_idle_s=0)
    assert alive.maintain() == 4
    assert Queue(QUEUE, connection=redis_conn).count == 4
    alive.run(threading.Event(), burst=True)
    SimpleWorker([Queue(QUEUE, connection=redis_conn)], connection=redis_conn).work(burst=True)
    store = SubmissionStore(redis_conn, "t")
    assert store.summary(PROJECT)["submissions"] == 6 and store.unscored(PROJECT) == {}
    assert alive.pending() == 0


def test_a_batch_broken_off_by_redis_is_settled_by_its_own_consumer_at_once(redis_conn, stream_settings,
                                                                             monkeypatch):
    inbox = Inbox(redis_conn, QUEUE, "t", 3600, job=handle_event)
    for body in _events(6):
        inbox.put(parse_body(json.dumps(body).encode()))
    drain = InboxDrain(redis_conn, QUEUE, "t", batch=4, claim_idle_s=3600)  # no claim can be what saves it
    settle, calls = drain.settle, []

    def settle_once_broken(entries):
        calls.append(len(entries))
        if len(calls) == 1:
            raise redis.ConnectionError("Redis went away mid-batch")
        settle(entries)

    monkeypatch.setattr(drain, "settle", settle_once_broken)
    monkeypatch.setattr(qa_hooks.inbox.InboxDrain, "MAINTENANCE_S", 3600.0)
    stop = threading.Event()
    runner = threading.Thread(target=drain.run, args=(stop,), kwargs={"block_ms": 100})
    runner.start()
    store = SubmissionStore(redis_conn, "t")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (store.summary(PROJECT)["submissions"] < 6 or drain.pending()):
            time.sleep(0.1)
    finally:
        stop.set()
        runner.join(10)
    assert calls[:2] == [4, 4]  # the broken batch itself, resumed from this consumer's pending entries
    assert store.summary(PROJECT)["submissions"] == 6 and store.unscored(PROJECT) == {}
    assert drain.pending() == 0 and Queue(QUEUE, connection=redis_conn).count == 0  # nothing left for RQ


def test_receiver_and_worker_processes_drain_the_stream(redis_service, redis_conn, log_dir: Path):
    secret = "drain-secret"
    env = {**os.environ, "REDIS_URL": redis_service.url, "CROWDGATE_WEBHOOK_SECRET": secret,
           "CROWDGATE_KEY_PREFIX": "t", "CROWDGATE_INBOX": "stream", "CROWDGATE_DRAIN_BATCH": "8"}
    web = start_web(env, log_dir)
    worker = start_worker(env, log_dir)
    try:
        events = _events(60, tasks=20, annotators=6)
        with requests.Session() as session:
            for body in [*events, events[0]]:
                reply = session.post(f"{web.url}/hooks/labelstudio", json=body, timeout=5,
                                     headers={"X-Crowdgate-Secret": secret})
                assert reply.status_code == 200, reply.text
        store = SubmissionStore(redis_conn, "t")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (redis_conn.xlen("t:inbox:crowdgate-events")
                                               or store.unscored(PROJECT)
                                               or store.summary(PROJECT)["submissions"] < 60):
            time.sleep(0.2)
        assert store.summary(PROJECT)["submissions"] == 60, worker.log_tail()
        assert store.unscored(PROJECT) == {} and redis_conn.xlen("t:inbox:crowdgate-events") == 0
        assert all(Ledger(redis_conn, "t").task_score(PROJECT, t) for t in range(1, 21))
    finally:
        worker.stop()
        web.stop()
