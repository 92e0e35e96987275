"""Growth: compact submission records, records of the old format still read, and the retention sweep (real Redis)."""

from __future__ import annotations

import dataclasses
import json

from core.keys import Keys
from qa_hooks.events import Event, Submission, TaskInfo
from qa_hooks.jobs import process_event
from qa_hooks.ledger import Ledger
from qa_hooks.retention import apply_retention
from qa_hooks.store import SubmissionStore, trimmed
from tests.state_isolation import use_settings

PREFIX, PROJECT = "t", 4
CONFIG = ('<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text" choice="single">'
          '<Choice value="Positive"/><Choice value="Negative"/></Choices></View>')
DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _stamp(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(T0 + seconds, UTC).isoformat().replace("+00:00", "Z")


def _sub(task: int, annotator: int, label: str, at: float, **changes) -> Submission:
    base = Submission(project=PROJECT, task=task, annotation_id=100 * task + annotator,
                      unique_id=f"u-{task}-{annotator}", annotator=annotator,
                      result=[{"id": f"r{task}{annotator}", "origin": "manual", "from_name": "sentiment",
                               "to_name": "text", "type": "choices", "value": {"choices": [label]}}],
                      updated_at=_stamp(at), created_at=_stamp(at), lead_time=4.5)
    return dataclasses.replace(base, **changes)


def _record(connection, *subs: Submission, gold: dict[int, str] | None = None, prefix: str = PREFIX) -> dict:
    tasks = [TaskInfo(t, {"text": f"task {t}"}, {"gold": g}) for t, g in (gold or {}).items()]
    event = Event("ANNOTATIONS_CREATED", PROJECT, {"label_config": CONFIG}, submissions=list(subs), tasks=tasks)
    return process_event(event.to_dict(), prefix, connection)


def _scores(connection, tasks: list[int], annotators: list[int], prefix: str = PREFIX) -> dict:
    ledger = Ledger(connection, prefix)
    return {"tasks": {t: (ledger.task_score(PROJECT, t), ledger.contributions(PROJECT, t)) for t in tasks},
            "annotators": {a: ledger.reliability(PROJECT, a).to_dict() for a in annotators}}


def test_a_record_round_trips_every_field_and_repeats_nothing(redis_conn):
    store = SubmissionStore(redis_conn, PREFIX)
    plain = _sub(1, 1, "Positive", 0)
    odd = _sub(1, 2, "Negative", 5, created_at=_stamp(1), lead_time=None, was_cancelled=True, ground_truth=True,
               parent_prediction=9, result=[])
    _record(redis_conn, plain, odd)
    assert store.task_submissions(PROJECT, 1) == [plain, odd]
    assert store.submission(PROJECT, odd.unique_id) == odd
    row = redis_conn.hgetall(Keys(PREFIX).submission(PROJECT, plain.unique_id))
    # the key names project and unique id; the created time equal to updated_at and the defaults are left out
    assert set(row) == {b"updated_at", b"task", b"annotator", b"i", b"r", b"l"}


def test_records_of_the_old_format_still_load_score_and_update(redis_conn):
    keys, store = Keys(PREFIX), SubmissionStore(redis_conn, PREFIX)
    old, peer = _sub(2, 1, "Positive", 0), _sub(2, 2, "Positive", 1)
    _record(redis_conn, peer)
    # what the store wrote before the compact format: the whole submission as json beside its index fields
    redis_conn.hset(keys.submission(PROJECT, old.unique_id), mapping={
        "json": json.dumps(old.to_dict()), "updated_at": old.updated_at, "task": 2, "annotator": 1})
    redis_conn.zadd(keys.task_submissions(PROJECT, 2), {old.unique_id: T0})
    redis_conn.zadd(keys.annotator_submissions(PROJECT, 1), {old.unique_id: T0})
    redis_conn.set(keys.annotation_submission(PROJECT, old.annotation_id), old.unique_id)
    assert store.task_submissions(PROJECT, 2) == [old, peer]
    Ledger(redis_conn, PREFIX).rescore(PROJECT, 2)
    assert Ledger(redis_conn, PREFIX).task_score(PROJECT, 2)["n"] == 2  # the old record counts
    newer = dataclasses.replace(old, updated_at=_stamp(50), result=peer.result)
    assert _record(redis_conn, newer)["updated"] == 1
    assert b"json" not in redis_conn.hgetall(keys.submission(PROJECT, old.unique_id))  # replaced whole
    assert store.submission(PROJECT, old.unique_id) == newer
    # and a deleted task finds the annotation id of an old record too
    third = _sub(3, 1, "Negative", 0)
    _record(redis_conn, third)
    redis_conn.hset(keys.submission(PROJECT, third.unique_id), "json", json.dumps(third.to_dict()))
    redis_conn.hdel(keys.submission(PROJECT, third.unique_id), "i", "r", "l")
    process_event(Event("TASKS_DELETED", PROJECT, deleted_tasks=[3]).to_dict(), PREFIX, redis_conn)
    assert redis_conn.get(keys.annotation_submission(PROJECT, 301)) is None


def test_retention_trims_settled_tasks_only_and_scores_stay_the_same(redis_conn):
    store, ledger, keys = SubmissionStore(redis_conn, PREFIX), Ledger(redis_conn, PREFIX), Keys(PREFIX)
    settled = [_sub(1, a, label, a) for a, label in ((1, "Positive"), (2, "Positive"), (3, "Negative"))]
    fresh = [_sub(2, a, "Negative", 9 * DAY + a) for a in (1, 2)]
    _record(redis_conn, *settled, *fresh, gold={1: "Positive"})
    _record(redis_conn, *settled, *fresh, gold={1: "Positive"}, prefix="whole")  # the same, never trimmed
    bytes_before = redis_conn.memory_usage(keys.submission(PROJECT, settled[0].unique_id))

    assert store.retain(PROJECT, T0 + 7 * DAY) == {"tasks": 1, "trimmed": 3}
    assert [s.result for s in store.task_submissions(PROJECT, 1)] == [trimmed(s.result) for s in settled]
    assert store.task_submissions(PROJECT, 2) == fresh  # not settled yet: whole
    record = keys.submission(PROJECT, settled[0].unique_id)
    assert redis_conn.object("encoding", record) == b"listpack"  # small enough for Redis' compact encoding
    assert redis_conn.memory_usage(record) < bytes_before / 2
    assert redis_conn.hlen(keys.results(PROJECT)) == 2  # one shared copy per distinct trimmed result

    for task in (1, 2):  # a rescoring of a trimmed task gives the scores of the untrimmed one
        ledger.rescore(PROJECT, task)
        Ledger(redis_conn, "whole").rescore(PROJECT, task)
    assert _scores(redis_conn, [1, 2], [1, 2, 3]) == _scores(redis_conn, [1, 2], [1, 2, 3], "whole")
    assert store.retain(PROJECT, T0 + 7 * DAY) == {"tasks": 0, "trimmed": 0}  # nothing left to do

    # a new version of a trimmed submission is stored whole and queues its task again
    edited = dataclasses.replace(settled[2], updated_at=_stamp(20 * DAY), result=settled[0].result)
    _record(redis_conn, edited)
    assert store.submission(PROJECT, edited.unique_id) == edited
    assert store.retain(PROJECT, T0 + 19 * DAY) == {"tasks": 1, "trimmed": 2}  # task 2 only; task 1 is too new
    assert store.retain(PROJECT, T0 + 21 * DAY) == {"tasks": 1, "trimmed": 1}
    # deletions still reach trimmed submissions, by annotation id and with their task
    assert process_event(Event("ANNOTATIONS_DELETED", PROJECT, deleted_annotations=[101]).to_dict(), PREFIX,
                         redis_conn)["deleted"] == 1
    assert [s.annotator for s in store.task_submissions(PROJECT, 1)] == [2, 3]
    process_event(Event("TASKS_DELETED", PROJECT, deleted_tasks=[1]).to_dict(), PREFIX, redis_conn)
    assert store.task_submissions(PROJECT, 1) == [] and not ledger.contributions(PROJECT, 1)
    assert redis_conn.get(keys.annotation_submission(PROJECT, 103)) is None


def test_the_sweep_follows_the_setting(redis_conn, monkeypatch):
    store = SubmissionStore(redis_conn, PREFIX)
    sub = _sub(1, 1, "Positive", 0)
    _record(redis_conn, sub)
    use_settings(monkeypatch, result_retention_s=0)
    assert apply_retention(PREFIX, redis_conn) == {}
    assert store.task_submissions(PROJECT, 1) == [sub]
    use_settings(monkeypatch, result_retention_s=int(DAY))
    assert apply_retention(PREFIX, redis_conn, now=T0 + 0.5 * DAY) == {PROJECT: {"tasks": 0, "trimmed": 0}}
    assert apply_retention(PREFIX, redis_conn, now=T0 + 2 * DAY) == {PROJECT: {"tasks": 1, "trimmed": 1}}
    assert store.task_submissions(PROJECT, 1)[0].result == trimmed(sub.result)


def test_rebuild_state_wipes_the_retention_keys():
    keys = Keys(PREFIX)
    patterns = keys.scoring_patterns(PROJECT)
    assert keys.results(PROJECT) in patterns and keys.retention_queue(PROJECT) in patterns
